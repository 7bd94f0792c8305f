//! Push, both ways. Answering: a Push routed to us makes the node connect to the
//! address it names, send `GIV <index>:<guid>/<name>` and serve HTTP on that
//! connection. Receiving: a downloader waits for the `GIV` of the host it pushed,
//! matched by servent GUID.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::wire::Guid;
use crate::wire::http::{Giv, MAX_GIV_LEN};
use crate::wire::push::Push;

use super::http::{self, Uploads};
use crate::core::addr::Scope;

/// Pushed connections being made or served at once; more Pushes are ignored.
pub const MAX_PUSHED: usize = 16;
/// Time to connect to a pusher's address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers the Pushes the engine delivers to us until the channel closes.
pub async fn answer_pushes(
    me: Guid,
    mut pushes: mpsc::Receiver<Push>,
    uploads: Arc<Uploads>,
    tracker: TaskTracker,
    bind: Option<IpAddr>,
    scope: Scope,
) {
    let permits = Arc::new(Semaphore::new(MAX_PUSHED));
    let mut recent = RecentTargets::default();
    loop {
        let push = tokio::select! {
            p = pushes.recv() => p,
            _ = uploads.cancel.cancelled() => None,
        };
        let Some(push) = push else { break };
        // IPv6-Ready: an IPv6 address in GGEP `6` (127.0.0.0 in the field).
        let to = push.target();
        if push.servent != me || !scope.allows(to) {
            tracing::debug!(%to, "Push refused: not for us, or to an address we do not connect to");
            continue;
        }
        // Only for a file we serve (index 0: "any", as push proxies send it).
        if push.index != 0 && uploads.served.get(push.index).is_none() {
            tracing::debug!(%to, index = push.index, "Push refused: no such file");
            continue;
        }
        // One connection per target a while at most: a flood of Pushes naming
        // a third host cannot make us hammer it.
        if !recent.allow(to, std::time::Instant::now()) {
            tracing::debug!(%to, "Push refused: that host was pushed to just now");
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!("too many pushed connections; Push ignored");
            continue;
        };
        let uploads = uploads.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let name = uploads
                .served
                .get(push.index)
                .map(|f| f.name.clone())
                .unwrap_or_default();
            let giv = Giv {
                index: push.index,
                servent: me,
                name,
            };
            let cancel = uploads.cancel.clone();
            let connect = async {
                let mut s = super::connect_from(bind, to).await?;
                s.set_nodelay(true)?;
                s.write_all(&giv.encode()).await?;
                Ok::<_, std::io::Error>(s)
            };
            let stream = tokio::select! {
                r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => r,
                _ = cancel.cancelled() => return,
            };
            match stream {
                Ok(Ok(s)) => {
                    tracing::debug!(%to, index = push.index, "pushed connection made");
                    http::serve(s, Bytes::new(), to, uploads).await;
                }
                Ok(Err(e)) => tracing::debug!(%to, error = %e, "cannot answer a Push"),
                Err(_) => tracing::debug!(%to, "timed out answering a Push"),
            }
        });
    }
}

/// What a connect-back says before closing.
pub const CONNECT_BACK: &[u8] = b"CONNECT BACK\r\n\r\n";

/// Connect-backs being made at once; more requests wait in the channel (and are
/// dropped when it is full).
const MAX_CONNECT_BACKS: usize = 4;

/// Answers TCP connect-back requests (BEAR/7, LIME/7): connects to the
/// address, writes `CONNECT BACK` and a blank line, as LimeWire does, and
/// closes, so the asker learns that it can be reached. (LimeWire reads that
/// line and ignores a bare `\n\n`; gtk-gnutella counts the connection itself,
/// whatever it says.)
pub async fn answer_connect_backs(
    mut requests: mpsc::Receiver<SocketAddr>,
    bind: Option<IpAddr>,
    scope: Scope,
    tracker: TaskTracker,
    cancel: tokio_util::sync::CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECT_BACKS));
    loop {
        let to = tokio::select! {
            r = requests.recv() => r,
            _ = cancel.cancelled() => None,
        };
        let Some(to) = to else { break };
        if !scope.allows(to) {
            continue;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        tracker.spawn(async move {
            let _permit = permit;
            let work = async {
                let mut s = super::connect_from(bind, to).await?;
                s.write_all(CONNECT_BACK).await?;
                s.shutdown().await
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, work).await {
                Ok(Ok(())) => tracing::debug!(%to, "connected back"),
                Ok(Err(e)) => tracing::debug!(%to, error = %e, "cannot connect back"),
                Err(_) => tracing::debug!(%to, "timed out connecting back"),
            }
        });
    }
}

/// Pushes answered per target address: one per [`PUSH_PAUSE`], for at most
/// [`PUSH_TARGETS`] targets remembered.
const PUSH_PAUSE: Duration = Duration::from_secs(10);
const PUSH_TARGETS: usize = 1024;

/// The targets pushed to lately.
#[derive(Default)]
struct RecentTargets {
    at: HashMap<SocketAddr, std::time::Instant>,
}

impl RecentTargets {
    /// Whether `to` may be connected to now (and remembers it if so).
    fn allow(&mut self, to: SocketAddr, now: std::time::Instant) -> bool {
        if self
            .at
            .get(&to)
            .is_some_and(|t| now.duration_since(*t) < PUSH_PAUSE)
        {
            return false;
        }
        if self.at.len() >= PUSH_TARGETS {
            self.at.retain(|_, t| now.duration_since(*t) < PUSH_PAUSE);
            if self.at.len() >= PUSH_TARGETS {
                return false;
            }
        }
        self.at.insert(to, now);
        true
    }
}

/// Downloads waiting for a `GIV`, by the pushed host's servent GUID.
#[derive(Clone, Default)]
pub struct GivWaiters {
    waiting: Arc<Mutex<HashMap<Guid, oneshot::Sender<TcpStream>>>>,
}

impl GivWaiters {
    /// Waits for a GIV from `servent`; a later wait for the same GUID replaces it.
    pub fn expect(&self, servent: Guid) -> oneshot::Receiver<TcpStream> {
        let (tx, rx) = oneshot::channel();
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|_, s| !s.is_closed());
        w.insert(servent, tx);
        rx
    }

    /// Hands a connection that said `GIV` to the download waiting for it; false
    /// if none is.
    pub fn deliver(&self, giv: &Giv, stream: TcpStream) -> bool {
        let tx = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&giv.servent);
        match tx {
            Some(tx) => tx.send(stream).is_ok(),
            None => false,
        }
    }
}

/// Reads a GIV from a new connection (`buf` holds what was read so far), within
/// the caller's deadline. Nothing may follow the blank line.
pub async fn read_giv(stream: &mut TcpStream, mut buf: BytesMut) -> Result<Giv, String> {
    loop {
        match Giv::parse(&buf)? {
            Some((giv, used)) if used == buf.len() => return Ok(giv),
            Some(_) => return Err("bytes after the GIV line".into()),
            None => {}
        }
        if buf.len() >= MAX_GIV_LEN {
            return Err("GIV line too long".into());
        }
        buf.reserve(256);
        let n = stream.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the GIV ended".into());
        }
    }
}
