//! `servent webcache`: a small HTTP host cache, so that a private network can
//! bootstrap from one of its own. The shell around [`Store`]: a bounded accept
//! loop, hyper's HTTP/1.1 server, one [`Store::handle`] per GET.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::addr::{PerIp, Scope};
use crate::core::webcache::{Store, StoreConfig, StoreStats};

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 128;
/// Connections one address may hold (more on a local network, where every
/// node may come from one address).
const MAX_PER_IP: usize = 4;
const MAX_PER_IP_LOCAL: usize = 64;
/// Time to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request head.
const MAX_HEAD: usize = 8 * 1024;

/// How a cache is set up.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub store: StoreConfig,
    /// Take private and loopback addresses (always so when `listen` is one).
    pub local_network: bool,
    /// Where the list is kept across restarts (`webcache.txt`); none: in
    /// memory only.
    pub data_dir: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            store: StoreConfig::default(),
            local_network: false,
            data_dir: None,
        }
    }
}

/// A running cache.
pub struct WebcacheHandle {
    pub local_addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    file: Option<PathBuf>,
}

impl WebcacheHandle {
    /// What the cache has done.
    pub fn stats(&self) -> StoreStats {
        lock(&self.store).stats().clone()
    }

    /// Hosts listed now.
    pub fn hosts(&self) -> usize {
        lock(&self.store).hosts()
    }

    /// Stops taking connections, waits for those served to end, and saves
    /// the list.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        save(&self.store, self.file.as_deref());
    }
}

/// How often the list is written to the data directory.
const SAVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// The store's clock: seconds since the Unix epoch, so that saved ages hold
/// across restarts.
fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Writes the list to `file` (through a temporary file and a rename).
fn save(store: &Mutex<Store>, file: Option<&Path>) {
    let Some(file) = file else { return };
    let text = lock(store).save();
    let tmp = file.with_extension("txt.tmp");
    let written = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, file));
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot save the webcache's list");
    }
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds `config.listen` and serves until `cancel`.
pub async fn start(config: ServerConfig, cancel: CancellationToken) -> io::Result<WebcacheHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let scope = Scope::of(local_addr.ip(), config.local_network);
    let mut store = Store::new(config.store, scope);
    let file = match &config.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Some(d.join("webcache.txt"))
        }
        None => None,
    };
    if let Some(f) = &file {
        match std::fs::read_to_string(f) {
            Ok(text) => {
                let n = store.load(&text, now());
                tracing::info!(file = %f.display(), entries = n, "webcache list read");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "cannot read the webcache's list")
            }
        }
    }
    let store = Arc::new(Mutex::new(store));
    let tracker = TaskTracker::new();
    if file.is_some() {
        let (store, cancel, file) = (store.clone(), cancel.clone(), file.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(SAVE_EVERY) => save(&store, file.as_deref()),
                    _ = cancel.cancelled() => return,
                }
            }
        });
    }
    let per_ip = Arc::new(Mutex::new(PerIp::new(match scope {
        Scope::Internet => MAX_PER_IP,
        Scope::Local => MAX_PER_IP_LOCAL,
    })));
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let (t2, c2, s2) = (tracker.clone(), cancel.clone(), store.clone());
    tracker.spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("never closed"),
                _ = c2.cancelled() => return,
            };
            let (stream, remote) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = c2.cancelled() => return,
            };
            if !per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(remote.ip())
            {
                tracing::debug!(%remote, "too many connections from one address; closed");
                continue;
            }
            let (store, cancel, per_ip) = (s2.clone(), c2.clone(), per_ip.clone());
            t2.spawn(async move {
                let _permit = permit;
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let store = store.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &store, remote)) }
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD)
                    // Header names as older servents write and expect them.
                    .title_case_headers(true)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match r {
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "connection ended"),
                        Err(_) => tracing::debug!(%remote, "connection timed out"),
                        Ok(Ok(())) => {}
                    },
                    _ = cancel.cancelled() => {}
                }
                per_ip
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .give_back(remote.ip());
            });
        }
    });
    Ok(WebcacheHandle {
        local_addr,
        store,
        cancel,
        tracker,
        file,
    })
}

fn answer<B>(req: &Request<B>, store: &Mutex<Store>, remote: SocketAddr) -> Response<Full<Bytes>> {
    let (status, body) = match *req.method() {
        Method::GET | Method::HEAD => {
            // The client is the connection's address: no header (X-Forwarded-For,
            // X-Remote-IP) speaks for it.
            let reply = lock(store).handle(req.uri().path(), req.uri().query(), remote.ip(), now());
            (
                StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
                reply.body,
            )
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "ERROR: only GET and HEAD\n".to_string(),
        ),
    };
    let len = body.len();
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static(crate::node::USER_AGENT),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}
