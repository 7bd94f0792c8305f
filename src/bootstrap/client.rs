//! Asking HTTP host caches for hosts, and telling them our address: an
//! HTTP/1.1 GET with hyper, bounded in time and size, around the decisions of
//! [`crate::core::webcache::Caches`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{self, HeaderValue};
use hyper_util::rt::TokioIo;

use crate::core::addr::Scope;
use crate::core::webcache::{Caches, ClientStats, RotationConfig};
use crate::wire::webcache::{Answer, CacheUrl, Query, parse_answer};

/// The vendor code and version we give caches (`client=`, `version=`).
pub const CLIENT: &str = "SRVT";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The HTTP host caches a node uses when it is not told otherwise: gtk-gnutella's
/// GHC (its only HTTP bootstrap for Gnutella today) and the GWebCaches
/// gtk-gnutella ships in `extra_files/gwcache.boot` (multi-network caches,
/// asked with `net=gnutella`). LimeWire 5 ships none.
pub const DEFAULT_CACHES: &[&str] = &[
    "http://ghc4.gtkgnutella.com/list4",
    "http://cache.ce3c.be/",
    "http://cache.trillinux.org/g2/bazooka.php",
    "http://dkac.trillinux.org/dkac/dkac.php",
    "http://gwc.dyndns.info:28960/gwc.php",
    "http://htmlhell.com/",
    "http://tenafly5k.com/gwc/skulls.php",
];

/// Time for a whole request: name, connection, answer (gtk-gnutella's GHC
/// timeout).
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read; the rest is not waited for.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Redirects followed at most (GWebCache 1.3.1 asks clients to follow them).
const MAX_REDIRECTS: usize = 2;

/// Why a request to a cache failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot resolve the name: {0}")]
    Resolve(io::Error),
    #[error("the name resolves to no address we may connect to")]
    OutOfScope,
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("answered {0}")]
    Status(u16),
    #[error("too many redirects")]
    Redirects,
    #[error("timed out after {}s", TIMEOUT.as_secs())]
    Timeout,
}

/// A node's HTTP host caches, shared by its tasks.
#[derive(Clone)]
pub struct WebCaches {
    caches: Arc<Mutex<Caches>>,
    /// Times given to the core are offsets from this.
    start: Instant,
    /// Outgoing connections are made from this address when set.
    bind: Option<IpAddr>,
}

impl WebCaches {
    /// The caches at `urls` for a node of `scope`, connecting from `bind`.
    pub fn new(urls: Vec<CacheUrl>, scope: Scope, bind: Option<IpAddr>, seed: u64) -> WebCaches {
        WebCaches {
            caches: Arc::new(Mutex::new(Caches::new(
                urls,
                RotationConfig::for_scope(scope),
                scope,
                seed,
            ))),
            start: Instant::now(),
            bind,
        }
    }

    /// With another rotation (tests and benches with their own timers).
    pub fn with_rotation(self, config: RotationConfig, scope: Scope, seed: u64) -> WebCaches {
        let urls = self.lock().urls();
        *self.lock() = Caches::new(urls, config, scope, seed);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        self.caches.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// What the rotation has done.
    pub fn stats(&self) -> ClientStats {
        self.lock().stats().clone()
    }

    /// No cache is known.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// How long until some cache may be asked again.
    pub fn next_due(&self) -> Option<Duration> {
        self.lock().next_due(self.now())
    }
}

/// One round of HTTP bootstrap: asks the caches that are due (a few at most,
/// each no sooner than it allows) for hosts, and returns the hosts they gave
/// that the node's scope allows. Says on standard error what it does. Empty
/// when no cache is due.
pub async fn http_round(caches: &WebCaches) -> Vec<SocketAddr> {
    let round = caches.lock().round(caches.now());
    let asks = round.into_iter().map(|url| async move {
        tracing::info!(cache = %url, "no hosts to connect to; asking an HTTP host cache");
        let query = Query::get(CLIENT, VERSION);
        let result = fetch(caches, &url, |_| url.request_target(Some(&query))).await;
        let now = caches.now();
        match result {
            Ok(answer) => {
                let hosts = caches.lock().answered(&url, &answer, now);
                match (answer.error(), hosts.len()) {
                    (Some(e), _) => {
                        tracing::warn!(cache = %url, error = e, "the HTTP host cache refused")
                    }
                    (None, 0) => {
                        tracing::warn!(cache = %url, "the HTTP host cache answered no host")
                    }
                    (None, n) => {
                        tracing::info!(cache = %url, hosts = n, "hosts from an HTTP host cache")
                    }
                }
                hosts
            }
            Err(e) => {
                caches.lock().failed(&url, now);
                tracing::warn!(cache = %url, error = %e, "cannot ask the HTTP host cache");
                Vec::new()
            }
        }
    });
    let mut hosts: Vec<SocketAddr> = Vec::new();
    for h in futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
    {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    hosts
}

/// Tells the GWebCaches that are due our address (`me` gives it from the local
/// end of the connection to each cache), with another cache that worked for
/// us. `up_for`: how long the node has been reachable.
pub async fn http_updates(
    caches: &WebCaches,
    up_for: Duration,
    me: impl Fn(SocketAddr) -> SocketAddr + Sync,
) {
    let due = caches.lock().updates(caches.now(), up_for);
    let me = &me;
    let sends = due.into_iter().map(|(url, other)| async move {
        let result = fetch(caches, &url, |local| {
            let q = Query::update(me(local), other.as_deref(), CLIENT, VERSION);
            url.request_target(Some(&q))
        })
        .await;
        match result {
            Ok(answer) => {
                caches
                    .lock()
                    .update_answered(&url, other.as_deref(), &answer, caches.now());
                match answer.warning().or(answer.error()) {
                    Some(w) => {
                        tracing::info!(cache = %url, said = w, "the HTTP host cache did not take our address")
                    }
                    None => tracing::debug!(cache = %url, "the HTTP host cache has our address"),
                }
            }
            Err(e) => tracing::debug!(cache = %url, error = %e, "cannot update the HTTP host cache"),
        }
    });
    futures_util::future::join_all(sends).await;
}

/// GETs `url` (with the request target `target` gives for the connection's
/// local address), following a few redirects, and parses the answer.
async fn fetch(
    caches: &WebCaches,
    url: &CacheUrl,
    target: impl Fn(SocketAddr) -> String + Sync,
) -> Result<Answer, FetchError> {
    let work = async {
        let allow = |a: SocketAddr| caches.lock().allows_address(url, a);
        // None: the cache's own URL, with `target`; then where it sent us.
        let mut at: Option<CacheUrl> = None;
        for _ in 0..=MAX_REDIRECTS {
            let got = match &at {
                None => get_once(url, caches.bind, &allow, &target).await?,
                Some(to) => get_once(to, caches.bind, &allow, &|_| to.target.clone()).await?,
            };
            match got {
                Got::Body(body) => return Ok(parse_answer(&body)),
                Got::Redirect(to) => at = Some(to),
            }
        }
        Err(FetchError::Redirects)
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .unwrap_or(Err(FetchError::Timeout))
}

enum Got {
    Body(Bytes),
    Redirect(CacheUrl),
}

/// One GET, without following redirects.
async fn get_once(
    url: &CacheUrl,
    bind: Option<IpAddr>,
    allow: &(dyn Fn(SocketAddr) -> bool + Sync),
    target: &(dyn Fn(SocketAddr) -> String + Sync),
) -> Result<Got, FetchError> {
    let addrs: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, url.port)],
        Err(_) => tokio::net::lookup_host(url.authority())
            .await
            .map_err(FetchError::Resolve)?
            .collect(),
    };
    let to = addrs
        .into_iter()
        .find(|a| allow(*a))
        .ok_or(FetchError::OutOfScope)?;
    let stream = crate::node::connect_from(bind, to)
        .await
        .map_err(FetchError::Connect)?;
    let local = stream.local_addr().map_err(FetchError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(64 * 1024)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let req = Request::get(target(local))
            .header(
                header::HOST,
                HeaderValue::from_str(&url.host_header())
                    .map_err(|e| FetchError::Http(e.to_string()))?,
            )
            .header(header::USER_AGENT, crate::node::USER_AGENT)
            .header(header::CACHE_CONTROL, "no-cache")
            .header(header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| {
                    if l.starts_with('/') {
                        CacheUrl::parse(&format!("http://{}{l}", url.authority())).ok()
                    } else {
                        CacheUrl::parse(l).ok()
                    }
                })
                .ok_or(FetchError::Status(status.as_u16()))?;
            return Ok(Got::Redirect(to));
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let mut body = resp.into_body();
        let mut got = BytesMut::new();
        while got.len() < MAX_ANSWER {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(FetchError::Http(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let room = MAX_ANSWER - got.len();
                        got.extend_from_slice(&d[..d.len().min(room)]);
                    }
                }
            }
        }
        Ok(Got::Body(got.freeze()))
    }
    .await;
    conn.abort();
    result
}
