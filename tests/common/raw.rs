//! Peers on raw sockets for the integration tests: a 0.6 handshake either way,
//! then frames in and bytes out, with every wait bounded.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use servent::framing::DescriptorCodec;
use servent::wire::{Frame, Guid, Hops, Message, Ttl};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

/// How long any one wait may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// A peer on a raw socket, after its handshake: frames in, bytes out.
pub struct Raw {
    pub frames: FramedRead<Box<dyn AsyncRead + Unpin + Send>, DescriptorCodec>,
    pub w: OwnedWriteHalf,
}

impl Raw {
    pub fn new(s: TcpStream, leftover: Vec<u8>) -> Raw {
        let (r, w) = s.into_split();
        let input: Box<dyn AsyncRead + Unpin + Send> =
            Box::new(std::io::Cursor::new(leftover).chain(r));
        Raw {
            frames: FramedRead::new(input, DescriptorCodec::default()),
            w,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
    }

    pub async fn send_msg(&mut self, guid: Guid, ttl: u8, hops: u8, m: &Message) {
        let mut out = bytes::BytesMut::new();
        m.encode_frame(guid, Ttl(ttl), Hops(hops), &mut out)
            .unwrap();
        self.send(&out).await;
    }

    /// The next frame `want` accepts (others are skipped), within `WAIT`.
    pub async fn until(&mut self, mut want: impl FnMut(&Frame) -> bool) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.next()).await {
                Ok(Some(Ok(f))) if want(&f) => return f,
                Ok(Some(Ok(_))) => {}
                other => panic!(
                    "no such frame came: {:?}",
                    other.map(|o| o.map(|r| r.is_ok()))
                ),
            }
        }
    }

    /// Every frame that arrives within `d`.
    pub async fn frames_for(&mut self, d: Duration) -> Vec<Frame> {
        let deadline = tokio::time::Instant::now() + d;
        let mut v = Vec::new();
        while let Ok(Some(Ok(f))) = tokio::time::timeout_at(deadline, self.frames.next()).await {
            v.push(f);
        }
        v
    }
}

/// Reads one header block (up to its blank line); returns it and what followed.
pub async fn read_block(s: &mut TcpStream, got: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let block = String::from_utf8_lossy(&got[..at + 4]).into_owned();
            got.drain(..at + 4);
            return block;
        }
        let k = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("a handshake block in time")
            .unwrap();
        assert!(
            k > 0,
            "closed during the handshake: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..k]);
    }
}

/// Connects to `addr` as a client saying `headers` (lines ending in CRLF);
/// returns the answer and, when it was 200, the link.
pub async fn dial_raw(addr: SocketAddr, headers: &str) -> (String, Option<Raw>) {
    dial_raw_from(None, addr, headers).await
}

pub async fn dial_raw_from(
    from: Option<&str>,
    addr: SocketAddr,
    headers: &str,
) -> (String, Option<Raw>) {
    let mut s = match from {
        None => TcpStream::connect(addr).await.unwrap(),
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            sock.connect(addr).await.unwrap()
        }
    };
    s.write_all(format!("GNUTELLA CONNECT/0.6\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let answer = read_block(&mut s, &mut got).await;
    if !answer.starts_with("GNUTELLA/0.6 200") {
        return (answer, None);
    }
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").await.unwrap();
    (answer, Some(Raw::new(s, got)))
}

/// Accepts one connection on `l` as a server answering `status` and `headers`;
/// returns the client's request and, when both sides said 200, the link.
pub async fn accept_raw(l: &TcpListener, status: &str, headers: &str) -> (String, Option<Raw>) {
    let (mut s, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    let request = read_block(&mut s, &mut got).await;
    s.write_all(format!("GNUTELLA/0.6 {status}\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    if !status.starts_with("200") {
        return (request, None);
    }
    let last = read_block(&mut s, &mut got).await;
    assert!(last.starts_with("GNUTELLA/0.6 200"), "{last}");
    (request, Some(Raw::new(s, got)))
}

/// A header's value in a block (names compared without case).
pub fn header<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    block.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub fn frame(guid: [u8; 16], function: u8, ttl: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = guid.to_vec();
    f.extend([function, ttl, hops]);
    f.extend((payload.len() as u32).to_le_bytes());
    f.extend(payload);
    f
}

pub fn vendor(v: &[u8; 4], selector: u16, version: u16, body: &[u8]) -> Vec<u8> {
    let mut p = v.to_vec();
    p.extend(selector.to_le_bytes());
    p.extend(version.to_le_bytes());
    p.extend(body);
    p
}
