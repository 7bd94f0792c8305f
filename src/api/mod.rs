//! The control API: JSON over HTTP/1.1 on a loopback address (by default
//! `127.0.0.1:6347`), described by the OpenAPI document it serves at
//! `/api/v1/openapi.json`, and Prometheus metrics at `/metrics`. The protocol
//! is in `protocol-spec/control-api.md`.
//!
//! - Every body is a record of `crate::output`, built by serde, wrapped as
//!   `{"v":1,"type":...}`; an error is `{"v":1,"type":"error","status":..,"error":..}`.
//! - A request that changes state (POST, PUT, DELETE) must carry
//!   `Authorization: Bearer <token>`, the token being the contents of
//!   `api-token` in the data directory (random, written mode 0600 at each
//!   start); without it: 401. GETs are open when the API listens on a
//!   loopback address, and need the token too otherwise (the index's API,
//!   which only reads, has no token and is open).
//! - On a loopback address every request's `Host` must name this machine (a
//!   loopback IP or `localhost`), else 403: a web site that points its own
//!   name at 127.0.0.1 (DNS rebinding) gets nothing. A change that carries
//!   `Origin` (every browser's does) must come from the API's own origin,
//!   else 403 (cross-site requests; the token is the main guard).
//! - The node also serves its web page at `/` (see [`web`]), without token.
//! - Bounded: 64 connections at once (more wait in the backlog), 16 KiB of
//!   request head read within 10 s, 64 KiB of body, 30 s per answer (event
//!   streams excepted, which end with their search or the node).

pub mod client;
pub mod index;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod web;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::output::{self, ApiError, Record};

/// The API's port when none is given.
pub const DEFAULT_PORT: u16 = 6347;
/// The API's address when none is given.
pub const DEFAULT_ADDR: &str = "127.0.0.1:6347";
/// The token's file in the data directory.
pub const TOKEN_FILE: &str = "api-token";
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Longest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest request head.
const MAX_HEAD: usize = 16 * 1024;
/// Time to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to read a body and answer (event streams excepted).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A response body: whole, or a stream of chunks (server-sent events).
pub enum ApiBody {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ApiBody::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ApiBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ApiBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ApiBody::Stream(_) => SizeHint::default(),
        }
    }
}

/// A request as a handler sees it: the body read whole (at most [`MAX_BODY`]).
pub struct Req {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub body: Bytes,
    /// It carried the right token.
    pub authorized: bool,
}

impl Req {
    /// A query parameter's value (`%XX` and `+` decoded).
    pub fn param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| {
                let v = v.replace('+', " ");
                crate::wire::http::percent_decode(&v).unwrap_or(v)
            })
        })
    }
}

/// What answers requests: the node's API or the index's.
pub trait Handler: Send + Sync + 'static {
    /// The answer to `req`.
    fn handle(&self, req: Req) -> Pin<Box<dyn Future<Output = Response<ApiBody>> + Send + '_>>;

    /// It serves the web page at `/` (the node does, the index does not).
    fn web_page(&self) -> bool {
        false
    }
}

/// A JSON answer holding `record`.
pub fn json<T: Record>(status: StatusCode, record: &T) -> Response<ApiBody> {
    // `v` and `type` first, as on the command line.
    let body = output::json_line(record);
    let mut r = Response::new(ApiBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON answer of any serializable value (the OpenAPI document).
pub fn json_raw<T: Serialize>(value: &T) -> Response<ApiBody> {
    let body = serde_json::to_vec(value).expect("serializes");
    let mut r = Response::new(ApiBody::Full(Some(Bytes::from(body))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A plain-text answer (metrics).
pub fn text(content_type: &'static str, body: String) -> Response<ApiBody> {
    let mut r = Response::new(ApiBody::Full(Some(Bytes::from(body))));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// An error answer.
pub fn error(status: StatusCode, msg: impl Into<String>) -> Response<ApiBody> {
    json(
        status,
        &ApiError {
            status: status.as_u16(),
            error: msg.into(),
        },
    )
}

/// An empty answer.
pub fn no_content() -> Response<ApiBody> {
    let mut r = Response::new(ApiBody::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Writes a new random token to `api-token` in `dir`, readable by its owner
/// only, and returns it.
pub fn create_token(dir: &Path) -> io::Result<String> {
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let file = dir.join(TOKEN_FILE);
    let tmp = dir.join(format!("{TOKEN_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            o.mode(0o600);
        }
        let mut f = o.open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &file)?;
    Ok(token)
}

/// The token in `api-token` in `dir`.
pub fn read_token(dir: &Path) -> io::Result<String> {
    let t = std::fs::read_to_string(dir.join(TOKEN_FILE))?;
    Ok(t.trim().to_string())
}

/// The token file's path in `dir`.
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// `host` (a Host header's value) names this machine: `localhost`, a name
/// under `.localhost`, or a loopback IP, with or without a port.
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A running API server.
pub struct ApiServer {
    pub local_addr: SocketAddr,
}

/// Serves `handler` on `listener` until `cancel`. `token`: what a change
/// (and, off loopback, any request) must carry; none: changes are refused.
pub fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    token: Option<String>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> io::Result<ApiServer> {
    let local_addr = listener.local_addr()?;
    let loopback = local_addr.ip().is_loopback();
    let token: Option<Arc<str>> = token.map(Arc::from);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let t2 = tracker.clone();
    tracker.spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("never closed"),
                _ = cancel.cancelled() => return,
            };
            let (stream, remote) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = cancel.cancelled() => return,
            };
            let _ = stream.set_nodelay(true);
            let (handler, token, cancel) = (handler.clone(), token.clone(), cancel.clone());
            t2.spawn(async move {
                let _permit = permit;
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (handler, token) = (handler.clone(), token.clone());
                        async move {
                            Ok::<_, Infallible>(
                                answer(req, &*handler, token.as_deref(), loopback).await,
                            )
                        }
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .max_buf_size(MAX_HEAD)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(%remote, error = %e, "API connection ended");
                    },
                    _ = cancel.cancelled() => {}
                }
            });
        }
    });
    Ok(ApiServer { local_addr })
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    handler: &dyn Handler,
    token: Option<&str>,
    loopback: bool,
) -> Response<ApiBody> {
    let authorized = match (token, req.headers().get(header::AUTHORIZATION)) {
        (Some(t), Some(v)) => v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|v| same(v.trim().as_bytes(), t.as_bytes())),
        _ => false,
    };
    let changes = !matches!(req.method(), &Method::GET | &Method::HEAD);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if loopback && host.is_some_and(|h| !loopback_host(h)) {
        return error(
            StatusCode::FORBIDDEN,
            "on a loopback address the API answers only requests for a loopback Host (127.0.0.1, [::1] or localhost)",
        );
    }
    if changes {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let same = match (origin.to_str(), host) {
                (Ok(o), Some(h)) => o
                    .strip_prefix("http://")
                    .is_some_and(|o| o.eq_ignore_ascii_case(h)),
                _ => false,
            };
            if !same {
                return error(
                    StatusCode::FORBIDDEN,
                    "a change from a web page must come from the node's own page",
                );
            }
        }
    }
    if handler.web_page() {
        if let Some(r) = web::answer(req.method(), req.uri().path(), req.headers()) {
            return r;
        }
    }
    // Off loopback, reading needs the token too (where there is one: the
    // index's API only reads and has none).
    if (changes || (!loopback && token.is_some())) && !authorized {
        let mut r = error(
            StatusCode::UNAUTHORIZED,
            "this request needs Authorization: Bearer <token> (the token is in api-token in the node's data directory)",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let work = async {
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                return if too_large {
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body is over {MAX_BODY} bytes"),
                    )
                } else {
                    error(StatusCode::BAD_REQUEST, "cannot read the body")
                };
            }
        };
        handler
            .handle(Req {
                method,
                path,
                query,
                body,
                authorized,
            })
            .await
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => error(StatusCode::REQUEST_TIMEOUT, "the request took too long"),
    }
}

/// Parses a JSON body into `T`, or the 400 answer saying why.
#[allow(clippy::result_large_err)]
pub fn parse_body<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, Response<ApiBody>> {
    serde_json::from_slice(&req.body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("bad JSON body: {}", output::escape(&e.to_string())),
        )
    })
}

/// A whole body, for handlers that build their own answers.
pub fn full(bytes: impl Into<Bytes>) -> ApiBody {
    ApiBody::Full(Some(bytes.into()))
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:6347",
            "127.1.2.3:80",
            "localhost",
            "LOCALHOST:6347",
            "localhost.:1",
            "app.localhost:6347",
            "[::1]",
            "[::1]:6347",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "x",
            "evil.example:6347",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "10.0.0.1:6347",
            "0.0.0.0:6347",
            "[::1]x",
            "[::2]:1",
            "127.0.0.1:x",
            "",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}
