//! Browse host, both sides. As a server: a `GET /` whose `Accept` asks for
//! `application/x-gnutella-packets` is answered with QueryHits listing every
//! shared file (deflated when the client accepts it), within a per-address
//! frequency limit and a bound on browses sent at once. As a client:
//! [`browse`] fetches and reads another host's list (`servent browse`).
//! The formats are `wire::browse`'s, the decisions `core::browse`'s; the rules
//! are in `protocol-spec/browse.md`.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyStream;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::core::browse::{self as decide, Identity, Limiter, Rate};
use crate::wire::Guid;
use crate::wire::browse::{self as fmt, BrowseError, Limits, Reader, Wanted};

use super::USER_AGENT;
use super::http::FileBody;

/// Browses being sent at once at most; one more is answered 503.
pub const MAX_CONCURRENT: usize = 4;
/// What a busy server asks a client to wait, in seconds.
const RETRY_AFTER: &str = "60";

/// The server's state, shared by every HTTP connection of a node.
pub struct Browse {
    /// Our servent GUID and whether we are firewalled (set when the node
    /// starts).
    who: RwLock<(Guid, bool)>,
    limiter: Mutex<Limiter>,
    running: Arc<Semaphore>,
    /// Browses answered, refused for coming too often, refused for too many
    /// at once.
    pub served: AtomicU64,
    pub too_often: AtomicU64,
    pub busy: AtomicU64,
}

impl Default for Browse {
    fn default() -> Self {
        Browse::new(Rate::default())
    }
}

impl Browse {
    pub fn new(rate: Rate) -> Browse {
        Browse {
            who: RwLock::new((Guid([0; 16]), false)),
            limiter: Mutex::new(Limiter::new(rate)),
            running: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            served: AtomicU64::new(0),
            too_often: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }

    /// Who the hits say we are.
    pub fn set_identity(&self, guid: Guid, firewalled: bool) {
        *self.who.write().unwrap_or_else(|e| e.into_inner()) = (guid, firewalled);
    }

    /// Served, refused too often, refused busy.
    pub fn counts(&self) -> (u64, u64, u64) {
        let r = Ordering::Relaxed;
        (
            self.served.load(r),
            self.too_often.load(r),
            self.busy.load(r),
        )
    }
}

fn refusal(status: StatusCode, msg: &str, retry: Option<&'static str>) -> Response<FileBody> {
    let body = format!("{msg}\r\n");
    let mut b = Response::builder()
        .status(status)
        .header(header::SERVER, USER_AGENT)
        .header("X-Features", fmt::FEATURE)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(r) = retry {
        b = b.header(header::RETRY_AFTER, r);
    }
    let mut r = b
        .body(FileBody::Full(Some(Bytes::from(body))))
        .expect("static headers are valid");
    // The status line says it in words too, as gtk-gnutella's does.
    if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(msg.as_bytes().to_vec()) {
        r.extensions_mut().insert(phrase);
    }
    r
}

/// Answers a `GET /` or `HEAD /` that asks for Gnutella packets; `None` when
/// the request does not (the caller answers it as before). `local`: the
/// address the client reached us at (its IP goes in the hits).
pub async fn answer(
    headers: &HeaderMap,
    head: bool,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    uploads: &super::http::Uploads,
) -> Option<Response<FileBody>> {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    if fmt::wanted(get(header::ACCEPT)) != Wanted::Packets {
        return None;
    }
    let b = &uploads.browse;
    let Ok(permit) = b.running.clone().try_acquire_owned() else {
        b.busy.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, "browse refused: too many at once");
        return Some(refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many browses at once",
            Some(RETRY_AFTER),
        ));
    };
    let allowed = b
        .limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(remote.ip(), Instant::now());
    if allowed.is_err() {
        b.too_often.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%remote, "browse refused: too often");
        return Some(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "Cannot Browse Too Often",
            None,
        ));
    }
    let (guid, push) = *b.who.read().unwrap_or_else(|e| e.into_inner());
    let ip = match local.map(|a| a.ip()) {
        Some(IpAddr::V4(ip)) if !ip.is_unspecified() => ip,
        Some(IpAddr::V6(ip)) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
        _ => match uploads.kazaa_addr().ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        },
    };
    let id = Identity {
        guid,
        ip,
        port: local.map_or(uploads.kazaa_addr().port(), |a| a.port()),
        push,
        busy: uploads.slots.available_permits() == 0,
    };
    let deflate = fmt::accepts_deflate(get(header::ACCEPT_ENCODING));
    let served = uploads.served.clone();
    // Listing, encoding and compressing cost time in proportion to the
    // library: off the connection's thread.
    let body = tokio::task::spawn_blocking(move || -> io::Result<(Bytes, usize)> {
        let files = served.listing(decide::MAX_FILES);
        let count = files.len();
        let (body, _) = fmt::encode_stream(&decide::hits(files, &id));
        if !deflate {
            return Ok((body.freeze(), count));
        }
        let mut z = flate2::write::ZlibEncoder::new(
            Vec::with_capacity(body.len() / 2),
            flate2::Compression::default(),
        );
        z.write_all(&body)?;
        Ok((Bytes::from(z.finish()?), count))
    })
    .await;
    let (body, count) = match body {
        Ok(Ok(b)) => b,
        _ => {
            return Some(refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot list the shared files",
                None,
            ));
        }
    };
    b.served.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%remote, files = count, bytes = body.len(), deflate, "browsed");
    let mut r = Response::builder()
        .status(StatusCode::OK)
        .header(header::SERVER, USER_AGENT)
        .header("X-Features", fmt::FEATURE)
        .header(header::CONTENT_TYPE, fmt::PACKETS)
        .header(header::CONTENT_LENGTH, body.len());
    if let Ok(v) = HeaderValue::from_str(&guid.to_hex()) {
        r = r.header("X-GUID", v);
    }
    if deflate {
        r = r.header(header::CONTENT_ENCODING, "deflate");
    }
    let body = if head {
        FileBody::Empty
    } else {
        FileBody::Held(Box::new(FileBody::Full(Some(body))), permit)
    };
    Some(r.body(body).expect("valid headers"))
}

/// Why a browse of another host failed.
#[derive(Debug, thiserror::Error)]
pub enum BrowseFailure {
    #[error("cannot connect to {peer}: {source}")]
    Connect { peer: String, source: io::Error },
    #[error("{peer} did not answer within {secs} s")]
    Timeout { peer: String, secs: u64 },
    #[error("{peer} refused the browse: {status}")]
    Refused { peer: String, status: String },
    #[error("{peer} did not answer with Gnutella packets (Content-Type: {content_type})")]
    NotBrowse { peer: String, content_type: String },
    #[error("{peer} answered with an encoding we did not ask for: {encoding}")]
    Encoding { peer: String, encoding: String },
    #[error("HTTP error from {peer}: {source}")]
    Http { peer: String, source: hyper::Error },
    #[error("{peer} sent a bad browse answer: {source}")]
    Body { peer: String, source: BrowseError },
}

/// What a browse found: hits come through the callback; this says how the
/// answer ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Browsed {
    /// Results (files) read.
    pub results: usize,
    /// The answer was cut by a limit (results, bytes or time).
    pub cut: bool,
}

/// Browses `peer` (`HOST:PORT`): asks for its shared files as Gnutella
/// packets, deflated if it will, and hands each hit's results to `on_hit`,
/// within `limits` and `timeout` for the whole answer.
pub async fn browse(
    peer: &str,
    timeout: Duration,
    limits: Limits,
    mut on_hit: impl FnMut(super::search::SearchHit),
) -> Result<Browsed, BrowseFailure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let secs = timeout.as_secs();
    let p = || peer.to_string();
    let stream = tokio::time::timeout_at(deadline, TcpStream::connect(peer))
        .await
        .map_err(|_| BrowseFailure::Timeout { peer: p(), secs })?
        .map_err(|source| BrowseFailure::Connect { peer: p(), source })?;
    let remote = stream.peer_addr().ok();
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| BrowseFailure::Http { peer: p(), source })?;
    let conn = tokio::spawn(conn);
    let req = Request::get("/")
        .header(header::HOST, peer)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT, fmt::PACKETS)
        .header(header::ACCEPT_ENCODING, "deflate")
        .header("X-Features", fmt::FEATURE)
        .header(header::CONNECTION, "close")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("valid request");
    let res = tokio::time::timeout_at(deadline, send.send_request(req))
        .await
        .map_err(|_| BrowseFailure::Timeout { peer: p(), secs })?
        .map_err(|source| BrowseFailure::Http { peer: p(), source })?;
    let status = res.status();
    if !status.is_success() {
        conn.abort();
        // The peer's own words ("429 Cannot Browse Too Often", "403 Browse
        // Host Disabled"), else the standard ones.
        let reason = match res.extensions().get::<hyper::ext::ReasonPhrase>() {
            Some(r) => crate::output::escape(&String::from_utf8_lossy(r.as_bytes())).into_owned(),
            None => status.canonical_reason().unwrap_or("").to_string(),
        };
        return Err(BrowseFailure::Refused {
            peer: p(),
            status: format!("{} {reason}", status.as_u16()).trim().to_string(),
        });
    }
    let h = res.headers();
    let text = |n: header::HeaderName| {
        h.get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = text(header::CONTENT_TYPE).unwrap_or_default();
    if fmt::wanted(Some(&content_type)) != Wanted::Packets {
        conn.abort();
        return Err(BrowseFailure::NotBrowse {
            peer: p(),
            content_type: crate::output::escape(&content_type).into_owned(),
        });
    }
    let deflated = match text(header::CONTENT_ENCODING).as_deref().map(str::trim) {
        None | Some("") | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("deflate") => true,
        Some(e) => {
            conn.abort();
            return Err(BrowseFailure::Encoding {
                peer: p(),
                encoding: crate::output::escape(e).into_owned(),
            });
        }
    };
    let mut reader = Reader::new(deflated, limits);
    let mut body = BodyStream::new(res.into_body());
    let mut out = Browsed::default();
    let fallback = remote.and_then(|a| match a.ip() {
        IpAddr::V4(ip) => Some((ip, a.port())),
        IpAddr::V6(ip) => ip.to_ipv4_mapped().map(|ip| (ip, a.port())),
    });
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.next()).await {
            Err(_) => {
                out.cut = true;
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(source))) => {
                conn.abort();
                return Err(BrowseFailure::Http { peer: p(), source });
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let hits = reader
            .feed(&data)
            .map_err(|source| BrowseFailure::Body { peer: p(), source })?;
        for hit in hits {
            for mut h in super::search::hits_of(&hit) {
                // A host that does not know its address says 0.0.0.0: it is
                // the one we reached.
                if let Some((ip, port)) = fallback.filter(|_| h.host.is_unspecified()) {
                    h.host = ip;
                    h.port = port;
                }
                on_hit(h);
            }
        }
        if reader.stopped {
            out.cut = true;
            break;
        }
    }
    conn.abort();
    if !out.cut {
        reader
            .finish()
            .map_err(|source| BrowseFailure::Body { peer: p(), source })?;
    }
    out.results = reader.results();
    Ok(out)
}
