//! One Gnutella connection's I/O: a reader task that frames descriptors and hands
//! them to the engine, and a writer task that drains a bounded send queue.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use crate::core::ConnId;
use crate::core::flow::{Offer, Priority, SendQueue};
use crate::framing::{DescriptorCodec, FrameError};
use crate::wire::bye::{self, Bye};
use crate::wire::{Guid, Hops, Message, Ttl};

use super::deflate::{Deflate, Inflate};
use super::engine::{EngineRef, Event, Fault};

/// Messages a slow peer may have queued before the cheapest are shed.
const QUEUE_MESSAGES: usize = 1024;
/// Bytes a slow peer may have queued.
const QUEUE_BYTES: usize = 512 * 1024;
/// Room for QRP table updates and library offers beside the bound above (they
/// are never shed; a whole table of ours is at most about 40 KiB, the largest
/// offer we send, 10,000 files with 1 MiB of names, about 1.3 MiB).
const CONTROL_ROOM: usize = 2 * 1024 * 1024;
/// Bytes of queued frames gathered into one write.
const BATCH_BYTES: usize = 64 * 1024;
/// How long the last Bye may take to go out before the socket is dropped.
const FAREWELL: std::time::Duration = std::time::Duration::from_secs(2);
/// The reason of the Bye every peer gets when the node shuts down.
pub const SHUTDOWN_REASON: &str = "Servent shutdown";

struct Shared {
    queue: Mutex<SendQueue<Bytes>>,
    /// A Bye to send before closing (None: close without one).
    closing: Mutex<Option<Option<Bytes>>>,
    wake: Notify,
}

/// The sending side of a connection, held by the engine.
#[derive(Clone)]
pub struct ConnTx {
    shared: Arc<Shared>,
    v04: bool,
}

impl ConnTx {
    /// The sending side of a new connection (0.4 connections get no Bye).
    pub fn new(v04: bool) -> ConnTx {
        ConnTx {
            shared: Arc::new(Shared {
                queue: Mutex::new(SendQueue::with_control_room(
                    QUEUE_MESSAGES,
                    QUEUE_BYTES,
                    CONTROL_ROOM,
                )),
                closing: Mutex::new(None),
                wake: Notify::new(),
            }),
            v04,
        }
    }

    /// Queues a whole frame's bytes.
    pub fn send(&self, priority: Priority, frame: Bytes) -> Offer {
        let (offer, was_empty) = {
            let mut q = self.shared.queue.lock().expect("queue lock");
            let was_empty = q.is_empty();
            (q.offer(priority, frame.len(), frame), was_empty)
        };
        // The writer waits only after finding the queue empty, so only the message
        // that makes it non-empty needs to wake it.
        if was_empty {
            self.shared.wake.notify_one();
        }
        offer
    }

    /// Ends the connection: a Bye with `code` and `reason` goes out first (not on
    /// 0.4 connections, which do not know Bye), then the writer closes.
    pub fn close(&self, code: u16, reason: &str) {
        let bye = (!self.v04).then(|| {
            let mut out = BytesMut::new();
            Message::Bye(Bye::new(code, reason))
                .encode_frame(Guid::new_random(), Ttl(1), Hops(0), &mut out)
                .expect("a Bye with a short reason encodes");
            out.freeze()
        });
        self.end(bye);
    }

    /// Ends the connection without a Bye (the peer closed, or sent its own Bye,
    /// which is never answered).
    pub fn close_silently(&self) {
        self.end(None);
    }

    fn end(&self, bye: Option<Bytes>) {
        let mut closing = self.shared.closing.lock().expect("closing lock");
        if closing.is_none() {
            *closing = Some(bye);
        }
        drop(closing);
        self.shared.wake.notify_one();
    }
}

/// Frames decoded per batch handed to the engine at most.
const BATCH_FRAMES_IN: usize = 128;
/// Bytes of frames per batch handed to the engine (one frame may go past it).
const BATCH_BYTES_IN: usize = 64 * 1024;
/// Time limits on an established link.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Nothing received for this long (we ping every peer every 30 s, and a
    /// live peer answers): the link is closed with Bye 405.
    pub read_idle: std::time::Duration,
    /// One write that cannot finish for this long (the peer reads nothing): the
    /// link is closed without a Bye (it would never be read).
    pub write_stall: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_idle: std::time::Duration::from_secs(120),
            write_stall: std::time::Duration::from_secs(60),
        }
    }
}

/// What the handshake settled for a connection's byte streams.
pub struct Streams {
    /// Bytes read past the handshake: the start of the incoming stream.
    pub leftover: BytesMut,
    /// The incoming stream is deflated.
    pub deflate_in: bool,
    /// We deflate the outgoing stream.
    pub deflate_out: bool,
}

/// Starts the reader and writer of an established connection whose sending side
/// is `tx`. The engine learns of frames and of the end of the connection through
/// `events`; it must have been told of the connection before.
#[allow(clippy::too_many_arguments)]
pub fn start<R, W>(
    tracker: &tokio_util::task::TaskTracker,
    conn: ConnId,
    tx: ConnTx,
    reader: R,
    writer: W,
    streams: Streams,
    engine: EngineRef,
    cancel: CancellationToken,
    limits: Limits,
    hold: Option<Box<dyn Send>>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let done = CancellationToken::new();
    let deflate = streams.deflate_out.then(Deflate::default);
    tracker.spawn(write_loop(
        tx.clone(),
        writer,
        deflate,
        cancel.clone(),
        done.clone(),
        (limits.write_stall, conn, engine.clone()),
    ));
    let reader_tx = tx.clone();
    tracker.spawn(async move {
        // Whatever the link holds (its address's share) goes when it ends.
        let _hold = hold;
        let input = std::io::Cursor::new(streams.leftover.to_vec()).chain(reader);
        let source: Box<dyn AsyncRead + Unpin + Send> = if streams.deflate_in {
            Box::new(Inflate::new(input))
        } else {
            Box::new(input)
        };
        let mut framed = FramedRead::new(source, DescriptorCodec::default());
        // Set when a batch ended on an error or the end of the stream.
        let mut pending = None;
        loop {
            let next = if let Some(p) = pending.take() {
                p
            } else {
                tokio::select! {
                    next = tokio::time::timeout(limits.read_idle, framed.next()) => match next {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::debug!(conn = conn.0, "closing: nothing received for too long");
                            engine.send(Event::Fault { conn, fault: Fault::ReadIdle });
                            reader_tx.close(bye::CODE_TIMEOUT, "Inactivity timeout");
                            // The writer sends the Bye and ends; then this
                            // reader drains and ends too.
                            continue;
                        }
                    },
                _ = cancel.cancelled() => {
                    // Shutdown wakes this reader, the writer and the engine at
                    // once, and the first close wins: ours must carry the Bye too.
                    reader_tx.close(bye::CODE_SHUTDOWN, SHUTDOWN_REASON);
                    break;
                }
                _ = done.cancelled() => {
                    // The writer has said Bye and shut down: keep reading (and
                    // discarding) for a while, so that unread data does not make the
                    // kernel reset the connection and lose the Bye in flight.
                    let drain = async { while let Some(Ok(_)) = framed.next().await {} };
                    let _ = tokio::time::timeout(FAREWELL, drain).await;
                    break;
                }
                }
            };
            match next {
                Some(Ok(frame)) => {
                    // Frames already decoded, or readable without waiting, go to the
                    // engine together: one lock and one publication per batch. What
                    // ended the batch (an error, the end) is handled next.
                    let mut bytes = frame.wire_len();
                    let mut frames = vec![frame];
                    while frames.len() < BATCH_FRAMES_IN && bytes < BATCH_BYTES_IN {
                        match framed.next().now_or_never() {
                            Some(Some(Ok(f))) => {
                                bytes += f.wire_len();
                                frames.push(f);
                            }
                            Some(other) => {
                                pending = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    if !engine.send(Event::Frames { conn, frames }) {
                        break;
                    }
                    // The batch's targets' writers (and every other task) run
                    // before this reader takes more: one socket read can hold
                    // more frames than a send queue.
                    tokio::task::yield_now().await;
                }
                Some(Err(e @ FrameError::TooLarge { .. })) => {
                    tracing::debug!(conn = conn.0, error = %e, "closing: oversized message");
                    reader_tx.close(bye::CODE_TOO_BIG, "Message too big");
                    break;
                }
                Some(Err(FrameError::Io(e))) => {
                    tracing::debug!(conn = conn.0, error = %e, "connection read failed");
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        // A corrupt compressed stream: nothing after it can be followed.
                        reader_tx.close(bye::CODE_DESYNC, "Stream desynchronised");
                    }
                    break;
                }
                None => {
                    tracing::debug!(conn = conn.0, "peer closed the connection");
                    break;
                }
            }
        }
        reader_tx.close_silently();
        engine.send(Event::Closed { conn });
    });
}

async fn write_loop<W: AsyncWrite + Unpin>(
    tx: ConnTx,
    mut w: W,
    mut deflate: Option<Deflate>,
    cancel: CancellationToken,
    done: CancellationToken,
    (stall, conn, engine): (std::time::Duration, ConnId, EngineRef),
) {
    let shared = &tx.shared;
    loop {
        let closing = shared.closing.lock().expect("closing lock").take();
        if let Some(bye) = closing {
            tracing::debug!(bye = bye.is_some(), "closing connection");
            // A peer that does not read cannot hold the connection open.
            let farewell = async {
                if let Some(bye) = bye {
                    match deflate.as_mut() {
                        Some(z) => w.write_all(&z.pack([&bye[..]])).await?,
                        None => w.write_all(&bye).await?,
                    }
                }
                w.shutdown().await
            };
            let _ = tokio::time::timeout(FAREWELL, farewell).await;
            break;
        }
        // Up to BATCH_BYTES of queued frames go out in one write.
        let batch: Vec<Bytes> = {
            let mut q = shared.queue.lock().expect("queue lock");
            let mut bytes = 0;
            std::iter::from_fn(|| {
                (bytes < BATCH_BYTES)
                    .then(|| q.pop())
                    .flatten()
                    .inspect(|f| bytes += f.len())
            })
            .collect()
        };
        if batch.is_empty() {
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = cancel.cancelled() => {
                    tx.close(bye::CODE_SHUTDOWN, SHUTDOWN_REASON);
                }
            }
            continue;
        }
        let packed = match deflate.as_mut() {
            Some(z) => z.pack(batch.iter().map(|f| &f[..])),
            None => batch.concat(),
        };
        let write = async {
            match tokio::time::timeout(stall, async {
                w.write_all(&packed).await?;
                w.flush().await
            })
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!(conn = conn.0, "closing: the peer reads nothing");
                    engine.send(Event::Fault {
                        conn,
                        fault: Fault::WriteStall,
                    });
                    Err(std::io::ErrorKind::TimedOut.into())
                }
            }
        };
        // A write blocked by a peer that stopped reading gives way to shutdown;
        // one that can finish at once does (biased: the write is polled first), so
        // a Bye can follow it.
        let written = tokio::select! {
            biased;
            r = write => r.is_ok(),
            _ = cancel.cancelled() => {
                // A frame may be half written: a Bye after it would be misread.
                tx.close_silently();
                true
            }
        };
        if !written {
            tracing::debug!("connection write failed");
            break;
        }
    }
    done.cancel();
}
