//! A Gnutella peer's side of the load benches put on a node: the 0.6
//! handshake as a raw client, and bursts of distinct queries (used by
//! `relay` and `api`).

use std::net::SocketAddr;

use servent::wire::HEADER_LEN;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Completes a 0.6 handshake as a client.
pub async fn peer(addr: SocketAddr) -> TcpStream {
    peer_from(addr, std::net::Ipv4Addr::LOCALHOST).await
}

/// Completes a 0.6 handshake as a client connecting from `from`.
pub async fn peer_from(addr: SocketAddr, from: std::net::Ipv4Addr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(SocketAddr::from((from, 0))).expect("bind");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: bench/1\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = s.read(&mut buf).await.expect("read");
        assert!(k > 0, "handshake answered");
        got.extend_from_slice(&buf[..k]);
    }
    assert!(got.starts_with(b"GNUTELLA/0.6 200"), "accepted");
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n")
        .await
        .expect("write");
    s
}

/// `n` distinct queries with TTL 2, as one buffer.
pub fn queries(n: usize) -> Vec<u8> {
    queries_from(0, n)
}

/// `n` distinct queries with TTL 2 numbered from `first`, as one buffer.
pub fn queries_from(first: u64, n: usize) -> Vec<u8> {
    let payload = b"\x80\x00relay bench words\x00\x00";
    let mut out = Vec::with_capacity(n * (HEADER_LEN + payload.len()));
    for i in first..first + n as u64 {
        let mut guid = [0u8; 16];
        guid[..8].copy_from_slice(&i.to_le_bytes());
        guid[8..].copy_from_slice(&(!i).to_le_bytes());
        out.extend_from_slice(&guid);
        out.extend_from_slice(&[0x80, 2, 0]);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }
    out
}
