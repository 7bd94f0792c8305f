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
/// and writer; returns the writer's queue.
pub async fn start(
    addr: SocketAddr,
    engine: EngineRef,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> io::Result<(SocketAddr, UdpTx)> {
    let socket = Arc::new(UdpSocket::bind(addr).await?);
    let local = socket.local_addr()?;
    let (tx, mut rx) = mpsc::channel::<(SocketAddr, Bytes)>(SEND_QUEUE);
    {
        let (socket, cancel) = (socket.clone(), cancel.clone());
        tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    n = rx.recv() => n,
                    _ = cancel.cancelled() => None,
                };
                let Some((to, bytes)) = next else { break };
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!(%to, error = %e, "datagram not sent");
                }
            }
        });
    }
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
    Ok((local, tx))
}
