//! Serving a FastTrack user's file to someone else (a Gnutella downloader, or a
//! FastTrack user of another supernode that found it through the mesh): the
//! node fetches it from the user with giFT's own request (`GET /.hash=<FTH>`,
//! the range passed on) and streams the answer through.
//!
//! A user that takes no connections is pushed (0x0D naming the address its
//! session reached us at); its `GIVE <id>` on that port hands us the
//! connection, on which we send the same request.
//!
//! Bounds: the time to connect (or to be given the connection) and to get the head, the head's size, an idle
//! limit on the body, and the body's length as the user announced it.

use std::net::SocketAddrV4;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::fasttrack::server::FastTrack;
use crate::fasttrack::supernode::Hit;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed user has to connect back and say `GIVE`.
const GIVE_TIMEOUT: Duration = Duration::from_secs(20);
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 8192;

/// What the user answered.
pub struct Fetched {
    /// 200 or 206.
    pub status: u16,
    /// `Content-Range` as the user sent it (for a 206).
    pub content_range: Option<String>,
    pub len: u64,
    /// The body, chunk by chunk.
    pub body: mpsc::Receiver<std::io::Result<Bytes>>,
}

/// Fetches `file` from its user, asking for `range` (a `Range` header value):
/// directly, or, when the user takes no connections, on the connection it
/// opens to us after a push (`GIVE`).
pub async fn fetch(ft: &FastTrack, file: &Hit, range: Option<&str>) -> Result<Fetched, String> {
    let addr: SocketAddrV4 = file.addr;
    let mut s = if addr.port() == 0 {
        let rx = ft
            .push_for(&file.user)
            .ok_or("the user is gone, or too many pushes wait")?;
        tokio::time::timeout(GIVE_TIMEOUT, rx)
            .await
            .map_err(|_| "no GIVE in time".to_string())?
            .map_err(|_| "the push was dropped".to_string())?
    } else {
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?
    };
    let hex: String = file.hash.iter().map(|b| format!("{b:02x}")).collect();
    let mut req = format!(
        "GET /.hash={hex} HTTP/1.1\r\nHost: {addr}\r\nUserAgent: {}\r\nX-Kazaa-Network: KaZaA\r\nX-Kazaa-Username: servent\r\nConnection: close\r\n",
        super::USER_AGENT
    );
    if let Some(r) = range {
        req.push_str(&format!("Range: {r}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(2048);
    let end = tokio::time::timeout(HEAD_TIMEOUT, async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(i + 4);
            }
            if buf.len() > MAX_HEAD {
                return Err("answer head too long".to_string());
            }
            if s.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("closed before the answer head ended".to_string());
            }
        }
    })
    .await
    .map_err(|_| "no answer head in time".to_string())??;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf.split_off(end).freeze();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("no status line")?;
    if status != 200 && status != 206 {
        return Err(format!("the user answered {status}"));
    }
    let mut len = None;
    let mut content_range = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            len = v.parse::<u64>().ok();
        } else if k.eq_ignore_ascii_case("content-range") {
            content_range = Some(v.to_string());
        }
    }
    let len = len.ok_or("no Content-Length")?;
    let (tx, body) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut left = len;
        let first = rest.slice(..rest.len().min(left as usize));
        if !first.is_empty() {
            left -= first.len() as u64;
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
        }
        while left > 0 {
            let mut chunk = BytesMut::with_capacity(64 * 1024);
            match tokio::time::timeout(IDLE_TIMEOUT, s.read_buf(&mut chunk)).await {
                Ok(Ok(0)) | Err(_) => {
                    let _ = tx
                        .send(Err(std::io::Error::other("the user stopped sending")))
                        .await;
                    return;
                }
                Ok(Err(e)) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Ok(Ok(_)) => {
                    chunk.truncate(chunk.len().min(left as usize));
                    left -= chunk.len() as u64;
                    if tx.send(Ok(chunk.freeze())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(Fetched {
        status,
        content_range,
        len,
        body,
    })
}
