//! Serving shared files over HTTP/1.1 (hyper) on the Gnutella port and on pushed
//! connections: `GET`/`HEAD` of `/get/<index>/<name>` and
//! `/uri-res/N2R?urn:sha1:...`, and for FastTrack clients `/.hash=<FTH>` and
//! `/<file id>/<name>` with the `X-Kazaa-*` headers; one byte range per request,
//! keep-alive, upload slots. The rules are in `protocol-spec/http-transfer.md`.

use crate::share::read_exact_at;
use std::convert::Infallible;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use crate::core::altloc::AltLocs;
use crate::core::library::{Served, SharedFile};
use crate::wire::http::{self as h, RangeAnswer, Target, TargetError};
use crate::wire::huge::Sha1Urn;

use super::USER_AGENT;
#[cfg(target_os = "linux")]
use super::sendfile::SendfileStream;
use super::sendfile::{self, Spans};

/// A connection on which no byte moves, either way, for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A request's header block must arrive within this time.
pub(super) const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest request header block (hyper's read buffer).
pub(super) const MAX_HEAD: usize = 16 * 1024;
/// Size of one read from a file, and of one body frame.
pub const CHUNK: usize = 256 * 1024;
/// Answers up to this size are read in one go on the connection's own task.
const INLINE: u64 = 1024 * 1024;
/// Inline answers up to this size are read into a connection's reused buffer.
const POOLED: usize = 256 * 1024;
/// Bodies from this size on go out with `sendfile` where the connection can;
/// smaller ones are read into the connection's buffer and leave with their head
/// in one write, which costs less than a `sendfile` of a few pages.
const SENDFILE_MIN: u64 = 16 * 1024;
/// Body frames read ahead of the socket per upload.
const READ_AHEAD: usize = 2;
/// What a busy server asks a client to wait, in seconds.
const RETRY_AFTER: &str = "30";
/// The `Content-Type` of a file's bytes.
const OCTETS: &str = "application/octet-stream";
/// Alternate locations sent with one answer.
const ALT_PER_ANSWER: usize = 10;

/// What every HTTP connection of a node shares.
pub struct Uploads {
    /// The library as the engine last published it.
    pub served: Served,
    /// Upload slots: a `GET` holds one until its body is sent.
    pub slots: Arc<Semaphore>,
    pub altlocs: Mutex<AltLocs>,
    /// Woken when a file is found changed on disk, so the library rescans now.
    pub rescan: Arc<Notify>,
    pub cancel: CancellationToken,
    /// Uploads being sent now (one per slot held), by a number of their own.
    pub active: Mutex<std::collections::HashMap<u64, Arc<ActiveUpload>>>,
    next_upload: std::sync::atomic::AtomicU64,
    /// File bytes handed to hyper to send, since the start.
    pub bytes_sent: Arc<std::sync::atomic::AtomicU64>,
    /// Who we say we are to FastTrack downloaders.
    pub kazaa: std::sync::RwLock<KazaaIdentity>,
    /// The supernode whose users' files are served by proxy.
    fasttrack: std::sync::OnceLock<crate::fasttrack::server::FastTrack>,
    /// Browse host: who we are in the hits, and its limits and counters.
    pub browse: super::browse::Browse,
}

/// What the `X-Kazaa-*` headers of our answers to FastTrack clients say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KazaaIdentity {
    /// `X-Kazaa-Username`.
    pub username: String,
    /// `X-Kazaa-Network` (the network name FastTrack clients accept).
    pub network: String,
    /// `X-Kazaa-IP`: our address and HTTP port; the IP is `0.0.0.0` until
    /// known, as giFT-FastTrack writes it.
    pub addr: SocketAddr,
    /// `X-Kazaa-SupernodeIP`: the FastTrack supernode we are reached through
    /// (our own when we are one); the header is left out when there is none.
    pub supernode: Option<SocketAddr>,
}

impl KazaaIdentity {
    /// An identity for a node whose HTTP port is `port`, address not known.
    pub fn new(port: u16) -> KazaaIdentity {
        KazaaIdentity {
            username: DEFAULT_KAZAA_USERNAME.to_string(),
            network: "KaZaA".to_string(),
            addr: SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port),
            supernode: None,
        }
    }

    /// The identity headers, in the order giFT-FastTrack writes them.
    fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("X-Kazaa-Username", self.username.clone()),
            ("X-Kazaa-Network", self.network.clone()),
            ("X-Kazaa-IP", self.addr.to_string()),
        ];
        if let Some(sn) = self.supernode {
            out.push(("X-Kazaa-SupernodeIP", sn.to_string()));
        }
        out
    }
}

/// The user name FastTrack clients see when none is configured.
pub const DEFAULT_KAZAA_USERNAME: &str = "servent";

/// An upload in progress, for the control API.
#[derive(Debug)]
pub struct ActiveUpload {
    pub remote: SocketAddr,
    /// The file being sent (its name and URN, for the control API).
    pub file: Arc<SharedFile>,
    /// The range asked for: first byte and length.
    pub start: u64,
    pub len: u64,
    pub started: std::time::Instant,
    /// Bytes of the range handed to hyper so far.
    pub sent: std::sync::atomic::AtomicU64,
}

/// Holds an upload in [`Uploads::active`] while its body lives.
pub struct UploadGuard {
    uploads: Arc<Uploads>,
    id: u64,
    upload: Arc<ActiveUpload>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.uploads
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Uploads {
    /// Shared state for `max_uploads` slots.
    pub fn new(served: Served, max_uploads: usize, cancel: CancellationToken) -> Uploads {
        Uploads {
            served,
            slots: Arc::new(Semaphore::new(max_uploads)),
            altlocs: Mutex::new(AltLocs::new(1000, Duration::from_secs(3600))),
            rescan: Arc::new(Notify::new()),
            cancel,
            active: Mutex::default(),
            next_upload: Default::default(),
            bytes_sent: Default::default(),
            kazaa: std::sync::RwLock::new(KazaaIdentity::new(0)),
            fasttrack: std::sync::OnceLock::new(),
            browse: super::browse::Browse::default(),
        }
    }

    /// The supernode whose users' files are served by proxy.
    pub fn set_fasttrack(&self, ft: crate::fasttrack::server::FastTrack) {
        let _ = self.fasttrack.set(ft);
    }

    /// Whether files we do not share may be a FastTrack user's, served by proxy.
    pub(super) fn fasttrack_served(&self) -> bool {
        self.fasttrack.get().is_some()
    }

    /// Sets what the `X-Kazaa-*` headers say.
    pub fn set_kazaa(&self, id: KazaaIdentity) {
        *self.kazaa.write().unwrap_or_else(|e| e.into_inner()) = id;
    }

    /// Our address and HTTP port as the `X-Kazaa-IP` header says them.
    pub fn kazaa_addr(&self) -> SocketAddr {
        self.kazaa.read().unwrap_or_else(|e| e.into_inner()).addr
    }

    fn kazaa_headers(&self) -> Vec<(&'static str, String)> {
        self.kazaa
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .headers()
    }
}

/// Serves HTTP requests on a TCP connection until the client closes, the
/// connection idles out, or the node stops. `prefix` holds bytes already read
/// from `stream`. Where the platform has `sendfile` (Linux), file bodies go
/// from the page cache to the socket without a copy (`sendfile.rs`).
pub async fn serve(stream: TcpStream, prefix: Bytes, remote: SocketAddr, uploads: Arc<Uploads>) {
    let local = stream.local_addr().ok();
    #[cfg(target_os = "linux")]
    {
        let (stream, spans) = SendfileStream::new(stream);
        super::http_lane::serve(stream, prefix, remote, local, uploads, Some(spans)).await
    }
    #[cfg(not(target_os = "linux"))]
    super::http_lane::serve(stream, prefix, remote, local, uploads, None).await
}

/// Serves HTTP requests on any byte stream, file bodies read into buffers.
pub async fn serve_io<S>(io: S, prefix: Bytes, remote: SocketAddr, uploads: Arc<Uploads>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with(io, prefix, remote, None, uploads, None).await
}

/// Serves `io`; `spans` is set when `io` sends placeholder bodies with
/// `sendfile`.
pub(super) async fn serve_with<S>(
    io: S,
    prefix: Bytes,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    uploads: Arc<Uploads>,
    spans: Option<Arc<Spans>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Guarded::new(io, prefix, IDLE_TIMEOUT));
    let state = Arc::new(Mutex::new(ConnState {
        open: None,
        spare: Arc::default(),
        spans,
        local,
    }));
    let cancel = uploads.cancel.clone();
    let service = hyper::service::service_fn(move |req| {
        let uploads = uploads.clone();
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(req, remote, &uploads, &state).await) }
    });
    // Header names in the capitalisation every servent writes. `writev`:
    // body frames reach the stream as they were yielded, never copied into one
    // buffer, which is what lets `SendfileStream` see its placeholders.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .title_case_headers(true)
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(true)
        .writev(true)
        .serve_connection(io, service);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%remote, error = %e, "HTTP connection ended");
        },
        _ = cancel.cancelled() => {}
    }
}

/// What one connection keeps between its requests.
pub(super) struct ConnState {
    /// The file it last read, still open (checked again at every request).
    pub(super) open: Option<OpenFile>,
    /// The buffer of its last inline answer, back once the answer was sent.
    pub(super) spare: Arc<Mutex<Option<Vec<u8>>>>,
    /// Set when the connection sends file bodies with `sendfile`: what the
    /// placeholders of its bodies stand for.
    pub(super) spans: Option<Arc<Spans>>,
    /// The address the client reached us at, when known.
    pub(super) local: Option<SocketAddr>,
}

/// A shared file held open by a connection, and the path it was opened by.
pub(super) struct OpenFile {
    path: PathBuf,
    file: Arc<File>,
}

fn base(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::SERVER, HeaderValue::from_static(USER_AGENT))
}

/// A short plain-text answer (errors, refusals).
pub(super) fn text(status: StatusCode, msg: &str, head: bool) -> Response<FileBody> {
    let body = format!("{msg}\r\n");
    base(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, body.len())
        .body(if head {
            FileBody::Empty
        } else {
            FileBody::Full(Some(Bytes::from(body)))
        })
        .expect("static headers are valid")
}

/// A 416 for a file of `size` bytes, naming the size as RFC 9110 (15.5.17)
/// asks (`Content-Range: bytes */size`) so that the client can ask again.
fn unsatisfiable(size: u64, head: bool) -> Response<FileBody> {
    let mut r = text(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "Range not satisfiable",
        head,
    );
    r.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}")).expect("ASCII"),
    );
    r
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    remote: SocketAddr,
    uploads: &Arc<Uploads>,
    state: &Mutex<ConnState>,
) -> Response<FileBody> {
    tracing::debug!(%remote, method = %req.method(), uri = %req.uri(), "HTTP request");
    let fasttrack = h::is_fasttrack_path(req.uri().path());
    let mut r = answer_request(req, remote, uploads, state).await;
    if fasttrack && r.status() != StatusCode::OK && r.status() != StatusCode::PARTIAL_CONTENT {
        // giFT-FastTrack names itself on its refusals too.
        add_kazaa(r.headers_mut(), uploads.kazaa_headers());
    }
    r
}

/// The file's FTH as FastTrack names it in an answer (tag 3, `=`-prefixed
/// base64): a proxied file has no SHA-1, and this lets a downloader given only
/// its URL check it.
fn add_fth_tag(headers: &mut HeaderMap, fth: &crate::fasttrack::hash::Fth) {
    if let Ok(v) = HeaderValue::from_str(&format!("3={}", fth.kazaa_base64())) {
        headers.append("X-KazaaTag", v);
    }
}

/// Answers with what the FastTrack user sharing `source` sends for the same
/// range.
async fn proxied(
    ft: &crate::fasttrack::server::FastTrack,
    source: &crate::fasttrack::supernode::Hit,
    headers: &HeaderMap,
    head: bool,
    uploads: &Arc<Uploads>,
) -> Response<FileBody> {
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A range past what the user announced is refused here, as a local
    // file's would be, without a push or a connection to the user for it.
    let (status, len, content_range) = match h::answer_range(range, source.size) {
        RangeAnswer::Whole => (StatusCode::OK, source.size, None),
        RangeAnswer::Part { start, end } => (
            StatusCode::PARTIAL_CONTENT,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{}", source.size)),
        ),
        RangeAnswer::Unsatisfiable => return unsatisfiable(source.size, head),
    };
    if head {
        // Answered from what the user announced: a HEAD cannot be passed on
        // (giFT serves only GET), and a GET for it would take one of the
        // user's upload slots for nothing.
        let mut r = base(status)
            .header(header::CONTENT_LENGTH, len)
            .header(header::CONTENT_TYPE, OCTETS)
            .body(FileBody::Empty)
            .expect("valid response");
        if let Some(cr) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
            r.headers_mut().insert(header::CONTENT_RANGE, cr);
        }
        add_kazaa(r.headers_mut(), uploads.kazaa_headers());
        add_fth_tag(r.headers_mut(), &crate::fasttrack::hash::Fth(source.hash));
        return r;
    }
    match super::ft_proxy::fetch(ft, source, range).await {
        Ok(mut f) => {
            // giFT answers 206 even to a request without a range: the whole
            // file asked for is a 200 here.
            let status = if f.status == 206 && range.is_some() {
                StatusCode::PARTIAL_CONTENT
            } else {
                f.content_range = None;
                StatusCode::OK
            };
            let body = FileBody::Stream {
                rx: f.body,
                left: f.len,
            };
            let mut r = base(status)
                .header(header::CONTENT_LENGTH, f.len)
                .header(header::CONTENT_TYPE, OCTETS)
                .body(body)
                .expect("valid response");
            if let Some(cr) = f.content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
                r.headers_mut().insert(header::CONTENT_RANGE, cr);
            }
            add_kazaa(r.headers_mut(), uploads.kazaa_headers());
            add_fth_tag(r.headers_mut(), &crate::fasttrack::hash::Fth(source.hash));
            r
        }
        Err(why) => {
            tracing::debug!(why, "proxied FastTrack download failed");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Source not reachable",
                head,
            )
        }
    }
}

fn add_kazaa(headers: &mut HeaderMap, kazaa: Vec<(&'static str, String)>) {
    for (name, value) in kazaa {
        // A value that cannot be a header (a control character in a
        // configured user name) is left out rather than sent broken.
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

async fn answer_request(
    req: Request<hyper::body::Incoming>,
    remote: SocketAddr,
    uploads: &Arc<Uploads>,
    state: &Mutex<ConnState>,
) -> Response<FileBody> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "Only GET and HEAD", false);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if req.uri().path() == "/" {
        // A browse (`Accept: application/x-gnutella-packets`); anything else
        // at `/` is not found, as before.
        let local = state.lock().unwrap_or_else(|e| e.into_inner()).local;
        let browse = super::browse::answer(req.headers(), head, remote, local, uploads);
        if let Some(r) = browse.await {
            return r;
        }
    }
    let target = match target_of(req.uri().path(), req.uri().query(), head) {
        Ok(t) => t,
        Err(refusal) => return refusal,
    };
    // A FastTrack user's file: fetched from the user and passed through.
    if let Some((ft, source)) = fasttrack_source(uploads, &target) {
        return proxied(ft, &source, req.headers(), head, uploads).await;
    }
    match find_file(uploads, &target, head, None) {
        Ok(file) => answer_file(head, &target, file, req.headers(), remote, uploads, state)
            .await
            .map_or_else(|refusal| refusal, FileAnswer::into_response),
        Err(refusal) => refusal,
    }
}

/// What a request path asks for, or the refusal of a path we do not serve.
#[allow(clippy::result_large_err)]
pub(super) fn target_of(
    path: &str,
    query: Option<&str>,
    head: bool,
) -> Result<Target, Response<FileBody>> {
    match h::parse_target(path, query) {
        Ok(t) => Ok(t),
        Err(TargetError::NotFound) => Err(text(StatusCode::NOT_FOUND, "Not Found", head)),
        Err(TargetError::Bad(why)) => Err(text(StatusCode::BAD_REQUEST, why, head)),
    }
}

/// The FastTrack user whose file `target` names, when it is not one of ours
/// and we serve a supernode's users by proxy.
pub(super) fn fasttrack_source<'a>(
    uploads: &'a Uploads,
    target: &Target,
) -> Option<(
    &'a crate::fasttrack::server::FastTrack,
    crate::fasttrack::supernode::Hit,
)> {
    let ft = uploads.fasttrack.get()?;
    let source = match target {
        Target::Index { index, name } if uploads.served.get(*index).is_none() => {
            ft.source_by_index(*index, name)
        }
        Target::Fth(fth) if uploads.served.by_fth(fth).is_none() => ft.source_by_hash(&fth.0),
        _ => None,
    }?;
    Some((ft, source))
}

/// The request headers the answer to a file request reads, wherever they were
/// parsed: hyper's `HeaderMap`, or the fast lane's `httparse` headers
/// (`http_lane`). Both give the first value of a name, and only values that
/// are visible ASCII, as `HeaderValue::to_str` does.
pub(super) trait ReqHeaders {
    /// The first value of `name`.
    fn first(&self, name: &str) -> Option<&str>;
    /// Every value of `name`, in order.
    fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a;
}

impl ReqHeaders for HeaderMap {
    fn first(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| v.to_str().ok())
    }

    fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name).iter().filter_map(|v| v.to_str().ok())
    }
}

/// The shared file `target` names, or the refusal to send when there is none.
///
/// `held` is the file the connection was given last, if any: given back
/// rather than copied again when the library still says the same of it.
#[allow(clippy::result_large_err)]
pub(super) fn find_file(
    uploads: &Uploads,
    target: &Target,
    head: bool,
    held: Option<&Arc<SharedFile>>,
) -> Result<Arc<SharedFile>, Response<FileBody>> {
    let refuse = |why| Err(text(StatusCode::NOT_FOUND, why, head));
    match target {
        Target::Index { index, name } => match uploads.served.get_reusing(*index, held) {
            Some(f) if f.name == *name => Ok(f),
            Some(_) => refuse("File index/name mismatch"),
            None => refuse("No such file index"),
        },
        Target::Urn(urn) => match uploads.served.by_sha1_reusing(urn, held) {
            Some(f) => Ok(f),
            None => refuse("URN not found"),
        },
        Target::Fth(fth) => match uploads.served.by_fth(fth) {
            Some(f) => Ok(f),
            None => refuse("Hash not found"),
        },
        Target::FileId { id, name } => match uploads.served.by_file_id(*id, name) {
            Some(f) => Ok(f),
            None => refuse("No such file id and name"),
        },
    }
}

/// Answers a `GET` or `HEAD` (`head`) of `file`, which `target` named: the
/// file's answer, or a refusal (a range past its end, no slot free, the file
/// changed or gone).
#[allow(clippy::result_large_err)]
pub(super) async fn answer_file(
    head: bool,
    target: &Target,
    file: Arc<SharedFile>,
    headers: &impl ReqHeaders,
    remote: SocketAddr,
    uploads: &Arc<Uploads>,
    state: &Mutex<ConnState>,
) -> Result<FileAnswer, Response<FileBody>> {
    let fasttrack = target.is_fasttrack();
    // A Range that cannot be read is ignored (RFC 9110, 14.2): the whole file.
    let range = headers.first("range");
    let (start, len, status) = match h::answer_range(range, file.size) {
        RangeAnswer::Whole => (0, file.size, StatusCode::OK),
        RangeAnswer::Part { start, end } => (start, end - start + 1, StatusCode::PARTIAL_CONTENT),
        RangeAnswer::Unsatisfiable => return Err(unsatisfiable(file.size, head)),
    };
    if let Some(urn) = file.sha1.filter(|_| !fasttrack) {
        learn_alt_locs(headers, urn, uploads);
    }
    // A slot per request, held until its body is sent (or the client goes):
    // a keep-alive connection idle between requests holds none.
    let slot = if head {
        None
    } else {
        match uploads.slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let mut r = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "All upload slots are busy",
                    head,
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
                return Err(r);
            }
        }
    };
    // With sendfile, a body of SENDFILE_MIN bytes or more is sent from the
    // page cache as the socket takes it; the file is opened (or its held handle checked) here, or for a large
    // answer on a blocking task, whose reads are advised ahead (`FileBody::File`).
    // Without it, an answer of up to INLINE bytes is read right here, as an
    // event-loop server reads (shared files are local, their pages mostly
    // cached); a larger one is opened and streamed by a blocking task, so a
    // long read never holds up the connections this thread serves.
    let spans = match head || len < SENDFILE_MIN {
        true => None,
        false => state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .spans
            .clone(),
    };
    let opened = if len <= INLINE {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        Ok(open_checked(&file, &mut st.open).and_then(|f| {
            let small = if head || spans.is_some() {
                None
            } else {
                Some(read_pooled(&f, start, len as usize, &st.spare).map_err(OpenError::Io)?)
            };
            Ok((f, small))
        }))
    } else {
        let file = file.clone();
        tokio::task::spawn_blocking(move || Ok((open_checked(&file, &mut None)?, None))).await
    };
    let (handle, small) = match opened {
        Ok(Ok(x)) => x,
        Ok(Err(OpenError::Changed)) => {
            tracing::info!(path = %file.path.display(), "shared file changed on disk; not served");
            uploads.rescan.notify_one();
            return Err(text(
                StatusCode::NOT_FOUND,
                "File changed since it was indexed",
                head,
            ));
        }
        Ok(Err(OpenError::Io(e))) => {
            tracing::warn!(path = %file.path.display(), error = %e, "cannot read shared file");
            uploads.rescan.notify_one();
            return Err(text(
                StatusCode::NOT_FOUND,
                "File no longer available",
                head,
            ));
        }
        Err(_) => {
            return Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                head,
            ));
        }
    };
    // One reading of the clock for the answer's alternate locations and its
    // upload record.
    let now = Instant::now().into_std();
    let mut a = FileAnswer::new(status);
    if fasttrack {
        // giFT-FastTrack's order: identity, then the hash as a metadata tag
        // (tag 3, in the `=`-prefixed base64 FastTrack writes).
        a.header(header::ACCEPT_RANGES, Value::Static("bytes"));
        for (name, value) in uploads.kazaa_headers() {
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::try_from(name),
                HeaderValue::from_str(&value),
            ) {
                a.header(n, Value::Text(v));
            }
        }
        if let Some(fth) = file.fth
            && let Ok(v) = HeaderValue::from_str(&format!("3={}", fth.kazaa_base64()))
        {
            a.header(
                header::HeaderName::from_static("x-kazaatag"),
                Value::Text(v),
            );
        }
        a.header(header::CONTENT_TYPE, Value::Static(OCTETS));
    } else {
        a.header(header::CONTENT_TYPE, Value::Static(OCTETS));
        a.header(header::ACCEPT_RANGES, Value::Static("bytes"));
    }
    if status == StatusCode::PARTIAL_CONTENT {
        a.header(
            header::CONTENT_RANGE,
            Value::Range {
                start,
                end: start + len - 1,
                size: file.size,
            },
        );
    }
    a.header(header::CONTENT_LENGTH, Value::Number(len));
    if let Some(urn) = file.sha1.filter(|_| !fasttrack) {
        a.header(
            header::HeaderName::from_static("x-gnutella-content-urn"),
            Value::Urn(urn),
        );
        // Never the asker itself, where it says where it listens (`X-Node`,
        // as gtk-gnutella and LimeWire send it).
        let asker = headers
            .first("x-node")
            .and_then(|v| h::parse_x_alt(v, 1).pop());
        let alts: Vec<SocketAddr> = uploads
            .altlocs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&urn, None, ALT_PER_ANSWER + 1, now)
            .into_iter()
            .filter(|a| Some(*a) != asker)
            .take(ALT_PER_ANSWER)
            .collect();
        if !alts.is_empty() {
            // IPv6 entries only to a downloader that says it reads them.
            let v6 = headers.each("x-features").any(h::features_ipv6);
            if let Ok(v) = HeaderValue::from_str(&h::format_x_alt(&alts, v6)) {
                a.header(header::HeaderName::from_static("x-alt"), Value::Text(v));
            }
        }
    }
    let body = if head || len == 0 {
        FileBody::Empty
    } else if let Some(bytes) = small {
        FileBody::Full(Some(bytes))
    } else if let Some(spans) = spans {
        FileBody::File {
            file: handle,
            at: start,
            left: len,
            spans,
            advise: len > INLINE,
        }
    } else {
        FileBody::stream(handle, start, len)
    };
    a.body = match slot {
        Some(slot) => {
            let upload = Arc::new(ActiveUpload {
                remote,
                start,
                len,
                started: now,
                sent: Default::default(),
                file,
            });
            let id = uploads
                .next_upload
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            uploads
                .active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, upload.clone());
            let guard = UploadGuard {
                uploads: uploads.clone(),
                id,
                upload,
            };
            FileBody::Slotted(Box::new(body), slot, guard)
        }
        None => body,
    };
    Ok(a)
}

/// A header value of a file answer, kept as what it says until it is written:
/// as a `HeaderValue` into hyper's map, or as bytes straight into the head the
/// upload lane writes (no map, no allocation per value).
pub(super) enum Value {
    Static(&'static str),
    /// A decimal number.
    Number(u64),
    /// A `Content-Range` for a 206: `bytes start-end/size`.
    Range {
        start: u64,
        end: u64,
        size: u64,
    },
    /// `urn:sha1:<base32>`, as `Sha1Urn` displays it.
    Urn(Sha1Urn),
    Text(HeaderValue),
}

impl Value {
    /// Appends the value's bytes.
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        match self {
            Value::Static(s) => out.extend_from_slice(s.as_bytes()),
            Value::Number(v) => out.extend_from_slice(n.format(*v).as_bytes()),
            Value::Range { start, end, size } => {
                out.extend_from_slice(b"bytes ");
                out.extend_from_slice(n.format(*start).as_bytes());
                out.push(b'-');
                out.extend_from_slice(n.format(*end).as_bytes());
                out.push(b'/');
                out.extend_from_slice(n.format(*size).as_bytes());
            }
            Value::Urn(urn) => out.extend_from_slice(&urn_bytes(urn)),
            Value::Text(v) => out.extend_from_slice(v.as_bytes()),
        }
    }

    fn into_header(self) -> HeaderValue {
        match self {
            Value::Static(s) => HeaderValue::from_static(s),
            Value::Number(n) => HeaderValue::from(n),
            Value::Text(v) => v,
            other => {
                let mut out = Vec::with_capacity(64);
                other.write(&mut out);
                HeaderValue::from_bytes(&out).expect("digits, letters and punctuation")
            }
        }
    }
}

/// A file answer before it is a hyper `Response`: its status, its headers in
/// the order they are written, and its body. hyper gets it as a `Response`
/// (`into_response`); the upload lane writes its head without one.
pub(super) struct FileAnswer {
    pub(super) status: StatusCode,
    pub(super) headers: smallvec::SmallVec<[(header::HeaderName, Value); 8]>,
    pub(super) body: FileBody,
}

impl FileAnswer {
    /// An answer with `status`, our `Server` header and no body yet.
    fn new(status: StatusCode) -> FileAnswer {
        let mut a = FileAnswer {
            status,
            headers: smallvec::SmallVec::new(),
            body: FileBody::Empty,
        };
        a.header(header::SERVER, Value::Static(USER_AGENT));
        a
    }

    fn header(&mut self, name: header::HeaderName, value: Value) {
        self.headers.push((name, value));
    }

    /// The same answer as hyper's `Response`: the headers appended in order,
    /// as `response::Builder` would.
    pub(super) fn into_response(self) -> Response<FileBody> {
        let mut r = Response::new(self.body);
        *r.status_mut() = self.status;
        let map = r.headers_mut();
        map.reserve(self.headers.len());
        for (name, value) in self.headers {
            map.append(name, value.into_header());
        }
        r
    }
}

/// `urn:sha1:<base32>`, as `Sha1Urn` displays it, written straight into
/// place rather than through `fmt` (once per answer).
fn urn_bytes(urn: &Sha1Urn) -> [u8; 41] {
    let mut b = [0u8; 41];
    b[..9].copy_from_slice(b"urn:sha1:");
    data_encoding::BASE32_NOPAD.encode_mut(&urn.0, &mut b[9..]);
    b
}

/// Remembers the alternate locations a downloader tells us of (`X-Alt`), and
/// forgets the ones it found bad (`X-NAlt`), for the file it asks for.
fn learn_alt_locs(headers: &impl ReqHeaders, urn: Sha1Urn, uploads: &Uploads) {
    let said = headers
        .first("x-gnutella-content-urn")
        .and_then(|v| v.parse::<Sha1Urn>().ok());
    if said.is_some_and(|u| u != urn) {
        return;
    }
    let good = headers.first("x-alt");
    let bad = headers.first("x-nalt");
    if good.is_none() && bad.is_none() {
        return;
    }
    let now = Instant::now().into_std();
    let mut alt = uploads.altlocs.lock().unwrap_or_else(|e| e.into_inner());
    for a in bad
        .map(|v| h::parse_x_alt(v, ALT_PER_ANSWER))
        .unwrap_or_default()
    {
        alt.remove(&urn, a);
    }
    for a in good
        .map(|v| h::parse_x_alt(v, ALT_PER_ANSWER))
        .unwrap_or_default()
    {
        alt.add(urn, a, now);
    }
}

enum OpenError {
    Changed,
    Io(io::Error),
}

/// Opens a shared file and checks that it is still what was indexed (same size
/// and modification time).
///
/// `cached` is a connection's open file: if it is the same path, the handle is
/// checked again (`fstat`, no path lookup, as nginx's open-file cache does)
/// and used if the file is still linked and has the indexed size and time.
/// A file deleted or renamed over since (no link left) is opened again by its
/// path, which then checks whatever the path names now. Otherwise the file
/// is opened anew and becomes the cached one. A failed check drops the cached
/// handle.
fn open_checked(file: &SharedFile, cached: &mut Option<OpenFile>) -> Result<Arc<File>, OpenError> {
    let held = cached.take().filter(|c| c.path == file.path);
    if let Some(c) = held {
        let meta = c.file.metadata().map_err(OpenError::Io)?;
        if still_linked(&meta) {
            check_meta(&meta, file)?;
            let f = c.file.clone();
            *cached = Some(c);
            return Ok(f);
        }
    }
    let f = File::open(&file.path).map_err(OpenError::Io)?;
    let meta = f.metadata().map_err(OpenError::Io)?;
    check_meta(&meta, file)?;
    let f = Arc::new(f);
    *cached = Some(OpenFile {
        path: file.path.clone(),
        file: f.clone(),
    });
    Ok(f)
}

fn check_meta(meta: &std::fs::Metadata, file: &SharedFile) -> Result<(), OpenError> {
    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_file() || meta.len() != file.size || mtime != file.mtime {
        return Err(OpenError::Changed);
    }
    Ok(())
}

/// Whether an open file still has a name (where the platform says; else it is
/// taken to have lost it, and opened again).
#[cfg(unix)]
fn still_linked(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.nlink() > 0
}

#[cfg(not(unix))]
fn still_linked(_meta: &std::fs::Metadata) -> bool {
    false
}

/// Reads `len` bytes at `at` into the connection's spare buffer (or a new one
/// when it is still out with an earlier answer) and hands them over without a
/// copy; the buffer comes back to `spare` when the answer has been sent, so a
/// connection neither allocates nor zeroes a buffer per answer, and holds at
/// most one idle buffer of at most `POOLED` bytes. Larger answers get a
/// buffer of their own, as before: reusing a 1 MiB buffer measured slower.
fn read_pooled(
    f: &File,
    at: u64,
    len: usize,
    spare: &Arc<Mutex<Option<Vec<u8>>>>,
) -> io::Result<Bytes> {
    if len > POOLED {
        let mut buf = vec![0u8; len];
        read_exact_at(f, &mut buf, at)?;
        return Ok(Bytes::from(buf));
    }
    let mut buf = spare
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    read_exact_at(f, &mut buf[..len], at)?;
    Ok(Bytes::from_owner(Pooled {
        buf,
        len,
        home: Arc::downgrade(spare),
    }))
}

/// An answer's bytes in a connection's buffer, returned to it when dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: Weak<Mutex<Option<Vec<u8>>>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let mut spare = home.lock().unwrap_or_else(|e| e.into_inner());
            if spare.is_none() {
                *spare = Some(std::mem::take(&mut self.buf));
            }
        }
    }
}

/// A response body: nothing, one buffer, a file range read ahead in large
/// chunks by a blocking task and handed over without copying, or a file range
/// sent by the connection's stream with `sendfile`.
pub enum FileBody {
    Empty,
    Full(Option<Bytes>),
    /// Yields placeholder frames of up to `sendfile::FRAME` bytes, each after
    /// pushing the piece of `file` it stands for onto `spans`.
    File {
        file: Arc<File>,
        at: u64,
        left: u64,
        spans: Arc<Spans>,
        /// Ask the kernel to read the next frame ahead (large bodies).
        advise: bool,
    },
    Stream {
        rx: mpsc::Receiver<io::Result<Bytes>>,
        left: u64,
    },
    /// A body that holds an upload slot until it is sent or dropped.
    /// The guard keeps it listed among the uploads and counts what is sent.
    Slotted(Box<FileBody>, OwnedSemaphorePermit, UploadGuard),
    /// A body that holds a permit (a browse's) until it is sent or dropped.
    Held(Box<FileBody>, OwnedSemaphorePermit),
}

impl FileBody {
    fn stream(file: Arc<File>, start: u64, len: u64) -> FileBody {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            let mut at = start;
            let end = start + len;
            let mut buf = BytesMut::new();
            while at < end {
                let n = (end - at).min(CHUNK as u64) as usize;
                // Space freed by chunks already sent is reused.
                buf.reserve(n);
                buf.resize(n, 0);
                let chunk = match read_exact_at(&file, &mut buf[..n], at) {
                    Ok(()) => Ok(buf.split_to(n).freeze()),
                    Err(e) => Err(e),
                };
                let failed = chunk.is_err();
                // The receiver is gone when the client went away.
                if tx.blocking_send(chunk).is_err() || failed {
                    return;
                }
                at += n as u64;
            }
        });
        FileBody::Stream { rx, left: len }
    }
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            FileBody::Empty => Poll::Ready(None),
            FileBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            FileBody::Slotted(inner, _, guard) => {
                let frame = ready!(Pin::new(inner.as_mut()).poll_frame(cx));
                if let Some(Ok(f)) = &frame {
                    if let Some(d) = f.data_ref() {
                        let n = d.len() as u64;
                        let relaxed = std::sync::atomic::Ordering::Relaxed;
                        guard.upload.sent.fetch_add(n, relaxed);
                        guard.uploads.bytes_sent.fetch_add(n, relaxed);
                    }
                }
                Poll::Ready(frame)
            }
            FileBody::Held(inner, _) => Pin::new(inner.as_mut()).poll_frame(cx),
            FileBody::File {
                file,
                at,
                left,
                spans,
                advise,
            } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(sendfile::FRAME as u64);
                spans.push(file.clone(), *at, n);
                *at += n;
                *left -= n;
                if *advise && *left > 0 {
                    sendfile::advise_willneed(file, *at, (*left).min(sendfile::FRAME as u64));
                }
                Poll::Ready(Some(Ok(Frame::data(sendfile::placeholder(n as usize)))))
            }
            FileBody::Stream { rx, left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                match ready!(rx.poll_recv(cx)) {
                    Some(Ok(b)) => {
                        *left = left.saturating_sub(b.len() as u64);
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into()))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FileBody::Empty => true,
            FileBody::Full(b) => b.is_none(),
            FileBody::Stream { left, .. } | FileBody::File { left, .. } => *left == 0,
            FileBody::Slotted(inner, ..) | FileBody::Held(inner, _) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FileBody::Empty => SizeHint::with_exact(0),
            FileBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            FileBody::Stream { left, .. } | FileBody::File { left, .. } => {
                SizeHint::with_exact(*left)
            }
            FileBody::Slotted(inner, ..) | FileBody::Held(inner, _) => inner.size_hint(),
        }
    }
}

/// A byte stream that first replays bytes already read from it, and fails with
/// `TimedOut` when no byte has moved in either direction for `idle`.
pub struct Guarded<S> {
    inner: S,
    prefix: Bytes,
    idle: Duration,
    /// When bytes last moved, as far as known: progress only sets `moved`,
    /// and the clock is read when it is next needed (the stream about to
    /// wait, or a deadline to set), not at every read and write. So `last`
    /// can be later than the last progress by what the task did between that
    /// and its next wait: the idle clock never starts early.
    last: Instant,
    moved: bool,
    /// A time by which the stream fails whatever moves (a head's deadline).
    deadline: Option<Instant>,
    /// Armed at the deadline or before it: activity moves the deadline on
    /// without touching the timer, which, when it fires early, is armed
    /// again at the deadline of then. So a busy connection re-arms it about
    /// once a timeout, not at every read.
    timer: Pin<Box<Sleep>>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, prefix: Bytes, idle: Duration) -> Guarded<S> {
        let last = Instant::now();
        Guarded {
            inner,
            prefix,
            idle,
            last,
            moved: false,
            deadline: None,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
        }
    }

    /// The stream, and nothing of what was replayed or timed.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Clears the deadline [`Guarded::set_deadline_in`] set.
    pub fn clear_deadline(&mut self) {
        self.deadline = None;
    }

    /// Sets a time by which the stream fails even while bytes move: `within`
    /// from now (from the last progress, when the clock was read since: the
    /// same instant, give or take the task's work).
    pub fn set_deadline_in(&mut self, within: Duration) {
        self.deadline = Some(self.last_moved() + within);
    }

    /// When bytes last moved: the clock is read now if they moved since it
    /// was last read.
    fn last_moved(&mut self) -> Instant {
        if self.moved {
            self.moved = false;
            self.last = Instant::now();
        }
        self.last
    }

    /// Called when an operation would wait: an error once the connection has
    /// been idle too long or its deadline passed, else the timer is armed to
    /// wake the task by then.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let idle = self.last_moved() + self.idle;
        let deadline = self.deadline.map_or(idle, |d| d.min(idle));
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    if deadline < idle {
                        "request head not received in time"
                    } else {
                        "connection idle for too long"
                    },
                ));
            }
            // Fired early: the deadline moved on since it was armed.
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }

    /// The outcome of a write: progress resets the idle clock; waiting checks it.
    fn wrote<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.moved = true;
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check_idle(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.moved = true;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                this.check_idle(cx)?;
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one byte at a time until the stream fails or ends: the bytes
    /// read, the time of the last one, and how it ended.
    async fn read_on<S: AsyncRead + Unpin>(
        g: &mut Guarded<S>,
    ) -> (usize, std::time::Instant, io::Result<()>) {
        let (mut n, mut at) = (0, std::time::Instant::now());
        let mut b = [0u8; 1];
        loop {
            match g.read(&mut b).await {
                Ok(0) => return (n, at, Ok(())),
                Ok(_) => (n, at) = (n + 1, std::time::Instant::now()),
                Err(e) => return (n, at, Err(e)),
            }
        }
    }

    /// A head's deadline holds however the bytes trickle in: progress does
    /// not move it.
    #[tokio::test]
    async fn a_trickled_head_meets_its_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut g = Guarded::new(server, Bytes::new(), Duration::from_secs(10));
        let start = std::time::Instant::now();
        g.set_deadline_in(Duration::from_millis(300));
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                if client.write_all(b"G").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
        let (n, _, end) = read_on(&mut g).await;
        let e = end.expect_err("the deadline passes before the bytes end");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "request head not received in time");
        assert!(n >= 2, "bytes came in meanwhile: {n}");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        writer.abort();
    }

    /// Bytes moving keep a connection alive past its idle time; once they
    /// stop, it fails no sooner than the idle time after the last.
    #[tokio::test]
    async fn an_idle_connection_fails_an_idle_time_after_its_last_byte() {
        let (mut client, server) = tokio::io::duplex(64);
        let idle = Duration::from_millis(300);
        let mut g = Guarded::new(server, Bytes::new(), idle);
        let writer = tokio::spawn(async move {
            for _ in 0..10 {
                client.write_all(b"x").await.expect("write");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Open and silent.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(client);
        });
        let start = std::time::Instant::now();
        let (n, last, end) = read_on(&mut g).await;
        let e = end.expect_err("silence past the idle time");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "connection idle for too long");
        assert_eq!(n, 10, "a second of bytes, three idle times long, all read");
        assert!(last.elapsed() >= idle, "{:?}", last.elapsed());
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        writer.abort();
    }

    fn indexed(path: &std::path::Path) -> SharedFile {
        let meta = std::fs::metadata(path).expect("meta");
        SharedFile {
            index: 1,
            name: "f".into(),
            path: path.to_path_buf(),
            size: meta.len(),
            mtime: meta.modified().expect("mtime"),
            sha1: None,
            fth: None,
        }
    }

    #[test]
    fn the_urn_header_is_the_urn_displayed() {
        for seed in [0u8, 1, 0x5a, 0xff] {
            let urn = Sha1Urn::digest(&[seed; 7]);
            assert_eq!(&urn_bytes(&urn)[..], urn.to_string().as_bytes());
        }
    }

    /// A value written into the lane's head and the same value made into a
    /// `HeaderValue` for hyper are the same bytes, those `format!` gives.
    #[test]
    fn header_values_read_the_same_both_ways() {
        let urn = Sha1Urn::digest(b"abc");
        let cases = [
            (Value::Static("bytes"), "bytes".to_string()),
            (Value::Number(0), "0".to_string()),
            (Value::Number(u64::MAX), u64::MAX.to_string()),
            (
                Value::Range {
                    start: 0,
                    end: 65_535,
                    size: 1 << 30,
                },
                format!("bytes 0-65535/{}", 1u64 << 30),
            ),
            (Value::Urn(urn), urn.to_string()),
            (
                Value::Text(HeaderValue::from_static("a, b")),
                "a, b".to_string(),
            ),
        ];
        for (value, want) in cases {
            let mut out = b"x".to_vec();
            value.write(&mut out);
            assert_eq!(&out[1..], want.as_bytes());
            assert_eq!(value.into_header().as_bytes(), want.as_bytes());
        }
    }

    /// A connection's held file is used while it is the indexed one, and
    /// never once it changed in place, was deleted or was renamed over.
    #[test]
    fn a_held_file_is_checked_at_every_request() {
        let dir = std::env::temp_dir().join(format!("servent-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("f");
        std::fs::write(&path, b"first").expect("write");
        let file = indexed(&path);
        let mut cached = None;
        let a = open_checked(&file, &mut cached).ok().expect("opened");
        let b = open_checked(&file, &mut cached).ok().expect("held");
        assert!(Arc::ptr_eq(&a, &b), "the held handle, not a new one");
        // Renamed over by a file of another time: opened again, refused.
        let other = dir.join("g");
        std::fs::write(&other, b"other").expect("write");
        let later = file.mtime + Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&other)
            .and_then(|f| f.set_modified(later))
            .expect("mtime");
        std::fs::rename(&other, &path).expect("rename");
        assert!(matches!(
            open_checked(&file, &mut cached),
            Err(OpenError::Changed)
        ));
        // The new file, indexed again; then deleted.
        let file = indexed(&path);
        open_checked(&file, &mut cached).ok().expect("opened");
        std::fs::remove_file(&path).expect("remove");
        assert!(matches!(
            open_checked(&file, &mut cached),
            Err(OpenError::Io(_))
        ));
        // Changed in place (same inode, same size, a later time).
        std::fs::write(&path, b"third").expect("write");
        let file = indexed(&path);
        open_checked(&file, &mut cached).ok().expect("opened");
        let f = File::options().write(true).open(&path).expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, b"THIRD", 0).expect("write");
        f.set_modified(file.mtime + Duration::from_secs(5))
            .expect("mtime");
        assert!(matches!(
            open_checked(&file, &mut cached),
            Err(OpenError::Changed)
        ));
        assert!(cached.is_none(), "a failed check drops the handle");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
