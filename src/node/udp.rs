//! The Gnutella UDP port: one socket bound to the TCP listener's address and
//! port. A reader hands every datagram to the core as it came
//! ([`Event::Datagram`]); the core's datagrams go out through a bounded queue
//! to one writer (a full queue loses the datagram, as the network may).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{EngineRef, Event};
use crate::wire::udp::MAX_DATAGRAM;

/// Datagrams waiting to be sent at most.
pub const SEND_QUEUE: usize = 1024;

/// Where the core's datagrams go.
pub type UdpTx = mpsc::Sender<(SocketAddr, Bytes)>;

/// Binds the UDP port at `addr` (the TCP listener's) and starts its reader
/// and writer; returns the writer's queue. A wildcard address takes both
/// families as the TCP side does (`listen::udp`): datagrams from IPv4 peers on
/// a dual-stack socket are handed on with their IPv4 address, and each
/// datagram goes out by the socket of its destination's family.
pub async fn start(
    addr: SocketAddr,
    engine: EngineRef,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> io::Result<(SocketAddr, UdpTx)> {
    let mut sockets = Vec::new();
    for s in super::listen::udp(addr)? {
        sockets.push(Arc::new(UdpSocket::from_std(s)?));
    }
    let local = sockets[0].local_addr()?;
    let (tx, mut rx) = mpsc::channel::<(SocketAddr, Bytes)>(SEND_QUEUE);
    {
        let (sockets, cancel) = (sockets.clone(), cancel.clone());
        tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    n = rx.recv() => n,
                    _ = cancel.cancelled() => None,
                };
                let Some((to, bytes)) = next else { break };
                let Some((socket, to)) = route(&sockets, to) else {
                    tracing::debug!(%to, "datagram not sent: no socket of its family");
                    continue;
                };
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!(%to, error = %e, "datagram not sent");
                }
            }
        });
    }
    for socket in sockets {
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tracker.spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM + 1];
            loop {
                let got = tokio::select! {
                    r = socket.recv_from(&mut buf) => r,
                    _ = cancel.cancelled() => break,
                };
                match got {
                    Ok((n, from)) => {
                        let bytes = Bytes::copy_from_slice(&buf[..n]);
                        let from = super::listen::canonical(from);
                        if !engine.send(Event::Datagram { from, bytes }) {
                            break;
                        }
                    }
                    // ICMP errors from earlier sends show up here on some
                    // systems; they say nothing about the next datagram.
                    Err(e) => tracing::trace!(error = %e, "datagram not read"),
                }
            }
        });
    }
    Ok((local, tx))
}

/// The socket a datagram to `to` leaves by, and `to` as that socket takes it:
/// one of its own family, else a dual-stack IPv6 socket with an IPv4
/// destination written as IPv4-mapped.
fn route(sockets: &[Arc<UdpSocket>], to: SocketAddr) -> Option<(&UdpSocket, SocketAddr)> {
    let to = super::listen::canonical(to);
    let family = |s: &UdpSocket| s.local_addr().map(|a| a.is_ipv4()).ok();
    if let Some(s) = sockets.iter().find(|s| family(s) == Some(to.is_ipv4())) {
        return Some((s, to));
    }
    match to {
        SocketAddr::V4(v4) => {
            let dual = sockets.iter().find(|s| {
                s.local_addr()
                    .is_ok_and(|a| a.ip().is_unspecified() && a.is_ipv6())
                    && socket2::SockRef::from(&***s)
                        .only_v6()
                        .is_ok_and(|only| !only)
            })?;
            let mapped = SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port());
            Some((dual, mapped))
        }
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn datagrams_leave_by_the_socket_of_their_family() {
        if std::net::UdpSocket::bind("[::1]:0").is_err() {
            eprintln!("skipped: this machine has no IPv6 loopback");
            return;
        }
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v6 = UdpSocket::bind("[::1]:0").await.unwrap();
        for wildcard in ["[::]:0", "0.0.0.0:0"] {
            let sockets: Vec<Arc<UdpSocket>> = super::super::listen::udp(wildcard.parse().unwrap())
                .unwrap()
                .into_iter()
                .map(|s| Arc::new(UdpSocket::from_std(s).unwrap()))
                .collect();
            for (to, peer) in [
                (v4.local_addr().unwrap(), &v4),
                (v6.local_addr().unwrap(), &v6),
            ] {
                let (s, dest) = route(&sockets, to).expect("a socket for it");
                s.send_to(b"hello", dest).await.unwrap();
                let mut buf = [0u8; 16];
                let (n, _) = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    peer.recv_from(&mut buf),
                )
                .await
                .unwrap()
                .unwrap();
                assert_eq!(&buf[..n], b"hello", "{wildcard} to {to}");
            }
        }
        // An IPv4-only socket cannot reach an IPv6 host.
        let only4 = vec![Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap())];
        assert!(route(&only4, v6.local_addr().unwrap()).is_none());
    }
}
