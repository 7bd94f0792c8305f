//! `servent get`: the async shell around [`crate::core::download::Planner`].
//!
//! One task per source owns that source's HTTP/1.1 connection (hyper client,
//! keep-alive, reconnecting when needed; reached directly, or by a Push sent
//! along a leaf link when it cannot be). The controller owns the planner and the
//! `.part` file: it hands out fetches and checks, applies steals and aborts,
//! hashes the file, and keeps the resume state.
//!
//! On disk, `PATH.part` holds the bytes at their place in the file (created
//! sparse at full size) and `PATH.part.state` says which blocks are written:
//!
//! ```text
//! servent-partial 1
//! urn urn:sha1:<base32>        (or urn:fth:<hex> for a download checked by FTH)
//! size <bytes>
//! block <bytes>
//! have <first>-<last>,...      (block numbers, inclusive runs)
//! ```
//!
//! The state is replaced atomically (written aside, then renamed) at most once a
//! second, and only after the `.part` has been flushed to disk, so it never
//! claims a block that is not there. `PATH` appears, by rename, only once the
//! whole file's SHA-1 matches.
//!
//! A file no source names a SHA-1 for (a FastTrack user's file answered by a
//! bridging supernode) is checked by its FastTrack hash instead, when the hit
//! carried one (GGEP `FTH`): its sources are asked by `/get/<index>/<name>`,
//! no `X-Alt` is traded (alternate sources are asked by SHA-1), and a SHA-1 a
//! source names is not taken as the file's (the FTH decides).

use crate::share::read_exact_at;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest as _, Sha1};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::core::download::{
    Action, Digest, PlanConfig, Planner, SourceId, Verdict, block_size_for,
};
use crate::fasttrack::hash::{Fth, fth_of_reader};
use crate::wire::Guid;
use crate::wire::http::{self as h, HttpUrl};
use crate::wire::huge::Sha1Urn;

use super::USER_AGENT;
use super::http::Guarded;
use super::push::{self, GivWaiters};
use super::search::LeafLink;

/// Sources one download uses at most (from the start and from `X-Alt`).
pub const MAX_SOURCES: usize = 16;

/// Where a source is.
#[derive(Clone, Debug)]
pub enum SourceSpec {
    /// An `http://` URL.
    Url(HttpUrl),
    /// A host from a QueryHit: reached directly unless it asked for a Push, and
    /// pushed (when a leaf link is at hand) if it cannot be reached.
    Hit {
        addr: SocketAddr,
        index: u32,
        name: String,
        servent: Guid,
        push: bool,
    },
}

impl SourceSpec {
    fn label(&self) -> String {
        match self {
            SourceSpec::Url(u) => u.authority.clone(),
            SourceSpec::Hit { addr, push, .. } => {
                format!("{addr}{}", if *push { " (push)" } else { "" })
            }
        }
    }

    /// The address to tell others in `X-Alt`, when it can be reached directly.
    fn alt(&self) -> Option<SocketAddr> {
        match self {
            SourceSpec::Url(u) => u.socket_addr(),
            SourceSpec::Hit {
                addr, push: false, ..
            } => Some(*addr),
            SourceSpec::Hit { .. } => None,
        }
    }

    /// The request target for this source: a URL as given, a hit by URN when
    /// known.
    fn target(&self, urn: Option<Sha1Urn>) -> String {
        match (self, urn) {
            (SourceSpec::Url(u), _) => u.target.clone(),
            (SourceSpec::Hit { .. }, Some(u)) => format!("/uri-res/N2R?{u}"),
            (SourceSpec::Hit { index, name, .. }, None) => {
                format!("/get/{index}/{}", h::percent_encode(name))
            }
        }
    }

    fn authority(&self) -> String {
        match self {
            SourceSpec::Url(u) => u.authority.clone(),
            SourceSpec::Hit { addr, .. } => addr.to_string(),
        }
    }
}

/// What to download.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    pub urn: Option<Sha1Urn>,
    /// The FastTrack hash, checked instead of a SHA-1 when no SHA-1 is known
    /// (here or from the first source to answer).
    pub fth: Option<Fth>,
    pub size: Option<u64>,
    pub name: Option<String>,
    pub sources: Vec<SourceSpec>,
}

/// How to push firewalled sources: the leaf link to send Pushes along, and the
/// address (our listener) they must connect back to.
#[derive(Clone)]
pub struct PushRoute {
    pub link: Arc<LeafLink>,
    pub listen: SocketAddr,
    pub givs: GivWaiters,
}

impl PushRoute {
    /// Binds a listener for GIVs on the link's local address and serves it until
    /// `cancel`.
    pub async fn start(link: Arc<LeafLink>, cancel: CancellationToken) -> io::Result<PushRoute> {
        // On an IPv6 link the Push names an IPv6 address (GGEP `6`).
        let ip = link.local.ip().to_canonical();
        let listener = TcpListener::bind((ip, 0)).await?;
        let listen = SocketAddr::new(ip, listener.local_addr()?.port());
        let givs = GivWaiters::default();
        let g = givs.clone();
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(push::MAX_PUSHED));
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = cancel.cancelled() => return,
                };
                let Ok((mut stream, remote)) = accepted else {
                    continue;
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    continue;
                };
                let g = g.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let read = push::read_giv(&mut stream, BytesMut::new());
                    match tokio::time::timeout(Duration::from_secs(10), read).await {
                        Ok(Ok(giv)) => {
                            if !g.deliver(&giv, stream) {
                                tracing::debug!(%remote, "GIV nobody waits for");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "bad GIV"),
                        Err(_) => tracing::debug!(%remote, "no GIV in time"),
                    }
                });
            }
        });
        Ok(PushRoute { link, listen, givs })
    }
}

/// Tunables of the shell.
#[derive(Clone, Debug)]
pub struct GetConfig {
    pub plan: PlanConfig,
    pub connect_timeout: Duration,
    /// How long to wait for a pushed host's GIV.
    pub push_timeout: Duration,
    /// Largest file downloaded: a size read off the network is never trusted
    /// further than this.
    pub max_size: u64,
}

/// The default `max_size`: 1 TiB.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 40;

impl Default for GetConfig {
    fn default() -> Self {
        GetConfig {
            plan: PlanConfig::default(),
            connect_timeout: Duration::from_secs(10),
            push_timeout: Duration::from_secs(30),
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// Progress, reported about twice a second and at the end.
#[derive(Clone, Debug)]
pub struct Progress {
    pub done: u64,
    pub size: u64,
    /// Sources fetching now, and sources not given up.
    pub active: usize,
    pub sources: usize,
    /// Bytes per second over the last report interval.
    pub rate: f64,
}

/// A finished download.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub path: PathBuf,
    /// The SHA-1 the file was checked by; `None` when it was checked by `fth`.
    pub urn: Option<Sha1Urn>,
    /// The FTH the file was checked by.
    pub fth: Option<Fth>,
    pub size: u64,
    /// Sources and the bytes each supplied.
    pub sources: Vec<(String, u64)>,
}

/// What the finished file is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Sha1(Sha1Urn),
    Fth(Fth),
}

impl Expected {
    /// The SHA-1 sources are asked by, when there is one.
    fn sha1(self) -> Option<Sha1Urn> {
        match self {
            Expected::Sha1(u) => Some(u),
            Expected::Fth(_) => None,
        }
    }

    /// The name of the hash, in messages.
    fn kind(self) -> &'static str {
        match self {
            Expected::Sha1(_) => "SHA-1",
            Expected::Fth(_) => "FastTrack hash (FTH)",
        }
    }
}

impl std::fmt::Display for Expected {
    /// As in the state file: `urn:sha1:<base32>` or `urn:fth:<hex>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Sha1(u) => write!(f, "{u}"),
            Expected::Fth(h) => write!(f, "urn:fth:{}", h.hex()),
        }
    }
}

impl std::str::FromStr for Expected {
    type Err = ();
    fn from_str(s: &str) -> Result<Expected, ()> {
        match s.get(..8) {
            Some(p) if p.eq_ignore_ascii_case("urn:fth:") => Fth::from_hex(&s.as_bytes()[8..])
                .map(Expected::Fth)
                .map_err(|_| ()),
            _ => s.parse().map(Expected::Sha1).map_err(|_| ()),
        }
    }
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("no source could be reached: {0}")]
    NoSource(String),
    #[error(
        "cannot verify the file: no source names its SHA-1 (X-Gnutella-Content-URN) and no FastTrack hash is known"
    )]
    NoUrn,
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("the file is {size} bytes, over the limit of {max} (--max-size)")]
    TooLarge { size: u64, max: u64 },
    #[error("{dir}: {free} bytes free, {need} needed")]
    NoSpace { dir: PathBuf, free: u64, need: u64 },
    #[error("{0}")]
    Part(String),
    #[error("{why}; the bytes fetched so far are kept in {part} and the same command resumes")]
    Incomplete { why: String, part: PathBuf },
    #[error("{0}; nothing was kept")]
    HashMismatch(String),
    #[error("interrupted; the bytes fetched so far are kept in {0} and the same command resumes")]
    Interrupted(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> GetError + '_ {
    move |source| GetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a name offered by a source safe as one file name in one directory.
pub fn safe_file_name(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| if c.is_control() || c == ':' { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').trim().to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

// ---------------------------------------------------------------- connections

/// An HTTP/1.1 client connection to one source.
struct Client {
    send: SendRequest<Empty<Bytes>>,
}

async fn handshake(stream: TcpStream) -> Result<Client, String> {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Guarded::new(
        stream,
        Bytes::new(),
        super::http::IDLE_TIMEOUT,
    ));
    // Header names go out capitalised as every servent writes them: LimeWire
    // matches `Range` case-sensitively and ignores `range`.
    let (send, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(512 * 1024)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Client { send })
}

/// Connects to a source: directly, or by a Push when it asked for one or cannot
/// be reached and a route is at hand.
async fn connect(
    spec: &SourceSpec,
    route: Option<&PushRoute>,
    cfg: &GetConfig,
) -> Result<Client, String> {
    let direct = |addr: String| async move {
        match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("connection timed out".to_string()),
        }
    };
    let stream = match spec {
        SourceSpec::Url(u) => direct(u.dial_target()).await?,
        SourceSpec::Hit {
            addr,
            index,
            servent,
            push,
            ..
        } => {
            let first = if *push && route.is_some() {
                Err("it asked for a push".to_string())
            } else {
                direct(addr.to_string()).await
            };
            match (first, route) {
                (Ok(s), _) => s,
                (Err(e), None) => return Err(e),
                (Err(e), Some(r)) => {
                    tracing::debug!(%addr, why = %e, "pushing");
                    let wait = r.givs.expect(*servent);
                    r.link
                        .push(*servent, *index, r.listen)
                        .await
                        .map_err(|e| format!("cannot send the Push: {e}"))?;
                    match tokio::time::timeout(cfg.push_timeout, wait).await {
                        Ok(Ok(s)) => s,
                        _ => return Err("no GIV came back after a Push".to_string()),
                    }
                }
            }
        }
    };
    handshake(stream).await
}

/// How a request to a source went wrong.
#[derive(Debug)]
enum SrcError {
    /// Try again later (after this long, if the source said).
    Retry(String, Option<Duration>),
    /// Never again.
    Drop(String),
}

/// What a response tells about the file.
struct Answer {
    size: u64,
    urn: Option<Sha1Urn>,
    /// The FastTrack hash, from an `X-KazaaTag: 3==<base64>` line (what giFT
    /// and servent send for files served by FTH).
    fth: Option<Fth>,
    alts: Vec<SocketAddr>,
}

/// The FTH in a source's `X-KazaaTag` lines (`<tag id>=<value>`, tag 3 being the
/// hash in FastTrack's `=`-prefixed base64).
fn fth_of_tags(hd: &HeaderMap) -> Option<Fth> {
    hd.get_all("X-KazaaTag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (id, value) = v.trim().split_once('=')?;
            (id.trim() == "3")
                .then(|| Fth::from_base64(value.trim().as_bytes()).ok())
                .flatten()
        })
}

fn read_headers(status: StatusCode, hd: &HeaderMap) -> Result<Answer, SrcError> {
    let get = |name: &str| hd.get(name).and_then(|v| v.to_str().ok());
    match status {
        StatusCode::OK | StatusCode::PARTIAL_CONTENT => {}
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
            let after = get("Retry-After")
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs);
            return Err(SrcError::Retry(format!("busy ({status})"), after));
        }
        s if s.is_server_error() => return Err(SrcError::Retry(s.to_string(), None)),
        s => return Err(SrcError::Drop(s.to_string())),
    }
    let urn = get("X-Gnutella-Content-URN")
        .or_else(|| get("X-Content-URN"))
        .and_then(|v| v.split(',').find_map(|u| u.trim().parse::<Sha1Urn>().ok()));
    let alts = get("X-Alt")
        .map(|v| h::parse_x_alt(v, MAX_SOURCES))
        .unwrap_or_default();
    // A 206 tells the file's size in its Content-Range, also in answer to a
    // HEAD: gtk-gnutella caps even a HEAD or a request without Range on a new
    // connection, so its Content-Length is that of the first 512 KiB only.
    let size = if status == StatusCode::PARTIAL_CONTENT {
        let (_, _, total) = get(header::CONTENT_RANGE.as_str())
            .and_then(h::parse_content_range)
            .ok_or_else(|| SrcError::Drop("206 without a valid Content-Range".into()))?;
        total
    } else {
        get(header::CONTENT_LENGTH.as_str())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| SrcError::Drop("no Content-Length".into()))?
    };
    let fth = fth_of_tags(hd);
    Ok(Answer {
        size,
        urn,
        fth,
        alts,
    })
}

fn request(
    spec: &SourceSpec,
    urn: Option<Sha1Urn>,
    head: bool,
    range: Option<(u64, u64)>,
    alts: &str,
) -> Request<Empty<Bytes>> {
    let mut b = Request::builder()
        .method(if head { "HEAD" } else { "GET" })
        .uri(spec.target(urn))
        .header(header::HOST, spec.authority())
        .header(header::USER_AGENT, USER_AGENT);
    if let Some((a, e)) = range {
        b = b.header(header::RANGE, format!("bytes={}-{}", a, e - 1));
    }
    if let Some(u) = urn {
        b = b.header("X-Gnutella-Content-URN", u.to_string());
        if !alts.is_empty() {
            b = b.header("X-Alt", alts);
        }
    }
    b.body(Empty::new()).expect("request parts are valid")
}

/// Asks a source about the file (a HEAD), keeping the connection.
async fn probe(
    spec: &SourceSpec,
    urn: Option<Sha1Urn>,
    route: Option<&PushRoute>,
    cfg: &GetConfig,
) -> Result<(Client, Answer), String> {
    let mut c = connect(spec, route, cfg).await?;
    let resp = tokio::time::timeout(
        cfg.plan.stall,
        c.send.send_request(request(spec, urn, true, None, "")),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|e| e.to_string())?;
    let a = read_headers(resp.status(), resp.headers()).map_err(|e| match e {
        SrcError::Retry(w, _) | SrcError::Drop(w) => w,
    })?;
    Ok((c, a))
}

// ---------------------------------------------------------------- workers

/// The part of a fetch the controller may shorten (steal) or cancel (abort).
struct RangeCtl {
    /// Bytes at and after this are not to be written.
    end: u64,
    /// Bytes before this are written.
    written: u64,
}

enum Cmd {
    Fetch {
        seq: u64,
        start: u64,
        end: u64,
        ctl: Arc<Mutex<RangeCtl>>,
        cancel: CancellationToken,
    },
    Check {
        seq: u64,
        block: u64,
        start: u64,
        end: u64,
        cancel: CancellationToken,
    },
}

enum Ev {
    Block {
        src: SourceId,
        seq: u64,
        block: u64,
    },
    Failed {
        src: SourceId,
        seq: u64,
        err: SrcError,
    },
    Checked {
        src: SourceId,
        seq: u64,
        block: u64,
        digest: Digest,
        bytes: Bytes,
    },
    Alts(Vec<SocketAddr>),
}

struct Shared {
    /// The SHA-1 sources are asked by (none for a download checked by FTH).
    urn: Option<Sha1Urn>,
    size: u64,
    block: u64,
    part: Arc<File>,
    cfg: GetConfig,
    route: Option<PushRoute>,
    /// Sources to tell others of in `X-Alt`.
    alts: Mutex<Vec<SocketAddr>>,
}

impl Shared {
    /// The `X-Alt` value for a request to `spec`: the other sources (a source is
    /// never told of itself).
    fn alts_for(&self, spec: &SourceSpec) -> String {
        let me = spec.alt();
        let alts = self.alts.lock().unwrap_or_else(|e| e.into_inner());
        let others: Vec<SocketAddr> = alts.iter().filter(|a| Some(**a) != me).copied().collect();
        // IPv6 entries only to a source we reach over IPv6: it reads them.
        let v6 = me.is_some_and(|a| a.is_ipv6());
        h::format_x_alt(&others, v6)
    }
}

async fn worker(
    id: SourceId,
    spec: SourceSpec,
    mut client: Option<Client>,
    sh: Arc<Shared>,
    mut cmds: mpsc::Receiver<Cmd>,
    events: mpsc::Sender<Ev>,
) {
    while let Some(cmd) = cmds.recv().await {
        let (seq, cancel) = match &cmd {
            Cmd::Fetch { seq, cancel, .. } | Cmd::Check { seq, cancel, .. } => {
                (*seq, cancel.clone())
            }
        };
        let work = run_cmd(id, &spec, &mut client, &sh, cmd, &events);
        let result = tokio::select! {
            r = work => r,
            _ = cancel.cancelled() => Err(None),
        };
        match result {
            Ok(()) => {}
            Err(None) => client = None,
            Err(Some(err)) => {
                client = None;
                if events.send(Ev::Failed { src: id, seq, err }).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs one command. `Err(None)`: stopped (range stolen); the connection must go.
async fn run_cmd(
    id: SourceId,
    spec: &SourceSpec,
    client: &mut Option<Client>,
    sh: &Shared,
    cmd: Cmd,
    events: &mpsc::Sender<Ev>,
) -> Result<(), Option<SrcError>> {
    let (start, end) = match &cmd {
        Cmd::Fetch { start, end, .. } | Cmd::Check { start, end, .. } => (*start, *end),
    };
    // (A kept connection may have been closed by the source meanwhile: each
    // request checks it first.)
    let mut body = Ranged::new(start, end);
    match cmd {
        Cmd::Check { seq, block, .. } => {
            let mut buf = BytesMut::with_capacity((end - start) as usize);
            while let Some(d) = body.next(spec, client, sh, events).await? {
                buf.extend_from_slice(&d);
            }
            let digest: Digest = Sha1::digest(&buf).into();
            let _ = events
                .send(Ev::Checked {
                    src: id,
                    seq,
                    block,
                    digest,
                    bytes: buf.freeze(),
                })
                .await;
            Ok(())
        }
        Cmd::Fetch { seq, ctl, .. } => {
            let mut pos = start;
            let mut buf = BytesMut::with_capacity(sh.block.min(end - start) as usize);
            while pos < end {
                let block_end = ((pos / sh.block + 1) * sh.block).min(end);
                let want = (block_end - pos) as usize;
                if buf.len() < want {
                    match body.next(spec, client, sh, events).await? {
                        Some(d) => buf.extend_from_slice(&d),
                        None => {
                            return Err(Some(SrcError::Retry(
                                "the answer ended early".into(),
                                None,
                            )));
                        }
                    }
                    continue;
                }
                let data = buf.split_to(want).freeze();
                let (part, ctl2) = (sh.part.clone(), ctl.clone());
                let at = pos;
                let wrote = tokio::task::spawn_blocking(move || {
                    // Under the lock, so a steal or abort never races a write.
                    let mut c = ctl2.lock().unwrap_or_else(|e| e.into_inner());
                    if at + data.len() as u64 > c.end {
                        return Ok(false);
                    }
                    write_all_at(&part, &data, at)?;
                    c.written = at + data.len() as u64;
                    Ok::<_, io::Error>(true)
                })
                .await
                .map_err(|e| Some(SrcError::Retry(e.to_string(), None)))?
                .map_err(|e| Some(SrcError::Drop(format!("cannot write the .part file: {e}"))))?;
                if !wrote {
                    return Err(None);
                }
                let block = pos / sh.block;
                pos = block_end;
                if events
                    .send(Ev::Block {
                        src: id,
                        seq,
                        block,
                    })
                    .await
                    .is_err()
                {
                    return Err(None);
                }
            }
            Ok(())
        }
    }
}

/// The bytes `start..end` of the file from one source, over as many requests on
/// its connection as the source needs. Real servents answer less than asked:
/// gtk-gnutella caps the first request on a connection (512 KiB, or 128 KiB for
/// hosts it thinks stall) and answers `206` for a shorter range; the rest is then
/// asked for on the same connection, since a reconnect would again be a "first
/// request" (and gtk drops hosts that disconnect too often). A source that
/// ignores `Range` and sends the whole file (`200`) is read from the right offset;
/// its connection is given up after, unless the body ended where we stop.
struct Ranged {
    /// The next byte to hand out.
    pos: u64,
    end: u64,
    body: Option<hyper::body::Incoming>,
    /// Bytes of the current body before `pos` (to skip), and where it ends.
    skip: u64,
    body_end: u64,
}

impl Ranged {
    fn new(start: u64, end: u64) -> Ranged {
        Ranged {
            pos: start,
            end,
            body: None,
            skip: 0,
            body_end: start,
        }
    }

    /// The next piece of the range, in order; `None` once it is all delivered.
    async fn next(
        &mut self,
        spec: &SourceSpec,
        client: &mut Option<Client>,
        sh: &Shared,
        events: &mpsc::Sender<Ev>,
    ) -> Result<Option<Bytes>, Option<SrcError>> {
        let retry = |e: String| Some(SrcError::Retry(e, None));
        loop {
            if self.pos >= self.end {
                if self.body_end > self.end || self.skip > 0 {
                    // The source sent more than we take: its connection cannot
                    // carry another request until that is read, so it goes.
                    *client = None;
                }
                self.body = None;
                return Ok(None);
            }
            let Some(body) = self.body.as_mut() else {
                self.request(spec, client, sh, events).await?;
                continue;
            };
            let Some(frame) = body.frame().await else {
                // This answer is over. It must have covered what it promised;
                // then the rest is asked for on the same connection.
                if self.pos < self.body_end || self.skip > 0 {
                    return Err(retry("the answer ended early".into()));
                }
                self.body = None;
                continue;
            };
            let frame = frame.map_err(|e| retry(e.to_string()))?;
            let Ok(mut d) = frame.into_data() else {
                continue;
            };
            if self.skip > 0 {
                let k = self.skip.min(d.len() as u64);
                let _ = d.split_to(k as usize);
                self.skip -= k;
            }
            let room = (self.end.min(self.body_end) - self.pos) as usize;
            if d.len() > room {
                if self.body_end <= self.end {
                    return Err(Some(SrcError::Drop("sent more than it said".into())));
                }
                d.truncate(room);
            }
            if d.is_empty() {
                continue;
            }
            self.pos += d.len() as u64;
            return Ok(Some(d));
        }
    }

    /// Asks for `pos..end` and checks the answer: a 206 must start at or before
    /// `pos` and may end before `end`; a 200 must be the whole file.
    async fn request(
        &mut self,
        spec: &SourceSpec,
        client: &mut Option<Client>,
        sh: &Shared,
        events: &mpsc::Sender<Ev>,
    ) -> Result<(), Option<SrcError>> {
        let retry = |e: String| Some(SrcError::Retry(e, None));
        if let Some(c) = client.as_mut() {
            if c.send.ready().await.is_err() {
                *client = None;
            }
        }
        if client.is_none() {
            *client = Some(
                connect(spec, sh.route.as_ref(), &sh.cfg)
                    .await
                    .map_err(retry)?,
            );
        }
        let c = client.as_mut().expect("connected above");
        let alts = sh.alts_for(spec);
        let req = request(spec, sh.urn, false, Some((self.pos, self.end)), &alts);
        let resp = c
            .send
            .send_request(req)
            .await
            .map_err(|e| retry(e.to_string()))?;
        let a = read_headers(resp.status(), resp.headers()).map_err(Some)?;
        if a.size != sh.size {
            return Err(Some(SrcError::Drop(format!(
                "wrong size {} (want {})",
                a.size, sh.size
            ))));
        }
        // (Checked by FTH, a SHA-1 a source names is its word only: the
        // FTH of the finished file decides.)
        if let (Some(want), Some(got)) = (sh.urn, a.urn) {
            if got != want {
                return Err(Some(SrcError::Drop("a different SHA-1".into())));
            }
        }
        if !a.alts.is_empty() {
            let _ = events.try_send(Ev::Alts(a.alts));
        }
        let (first, last) = match resp.status() {
            StatusCode::PARTIAL_CONTENT => resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(h::parse_content_range)
                .map(|(a, b, _)| (a, b + 1))
                .ok_or_else(|| Some(SrcError::Drop("206 without a valid Content-Range".into())))?,
            // The whole file, whatever range was asked.
            _ => (0, sh.size),
        };
        if first > self.pos || last <= self.pos {
            *client = None;
            return Err(retry(format!(
                "answered bytes {first}-{} for {}-{}",
                last - 1,
                self.pos,
                self.end - 1
            )));
        }
        if (first, last) != (self.pos, self.end) {
            tracing::debug!(
                source = %spec.label(),
                asked = ?(self.pos, self.end),
                got = ?(first, last),
                "the source answered another range; taking what it covers"
            );
        }
        self.skip = self.pos - first;
        self.body_end = last;
        self.body = Some(resp.into_body());
        Ok(())
    }
}

#[cfg(unix)]
fn write_all_at(f: &File, buf: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(f, buf, at)
}

#[cfg(windows)]
fn write_all_at(f: &File, mut buf: &[u8], mut at: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        let n = f.seek_write(buf, at)?;
        buf = &buf[n..];
        at += n as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------- resume state

/// The resume state next to a `.part` file.
#[derive(Debug, PartialEq, Eq)]
struct PartState {
    urn: Expected,
    size: u64,
    block: u64,
    have: Vec<bool>,
}

impl PartState {
    fn encode(&self) -> String {
        let mut runs = Vec::new();
        let mut i = 0;
        while i < self.have.len() {
            if self.have[i] {
                let s = i;
                while i + 1 < self.have.len() && self.have[i + 1] {
                    i += 1;
                }
                runs.push(format!("{s}-{i}"));
            }
            i += 1;
        }
        format!(
            "servent-partial 1\nurn {}\nsize {}\nblock {}\nhave {}\n",
            self.urn,
            self.size,
            self.block,
            runs.join(",")
        )
    }

    fn parse(text: &str) -> Option<PartState> {
        let mut lines = text.lines();
        if lines.next()? != "servent-partial 1" {
            return None;
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .map(|l| l.strip_prefix(' ').unwrap_or(l))
                .map(str::to_string)
        };
        let urn = field("urn")?.parse().ok()?;
        let size: u64 = field("size")?.parse().ok()?;
        let block: u64 = field("block")?.parse().ok()?;
        if block == 0 {
            return None;
        }
        let count = usize::try_from(size.div_ceil(block)).ok()?;
        let mut have = vec![false; count];
        for run in field("have")?.split(',').filter(|r| !r.is_empty()) {
            let (a, b) = run.split_once('-')?;
            let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
            if a > b || b >= count {
                return None;
            }
            have[a..=b].iter_mut().for_each(|x| *x = true);
        }
        Some(PartState {
            urn,
            size,
            block,
            have,
        })
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The `.part` of `path` and the blocks it holds: opened to resume when its
/// state matches the file, created otherwise.
fn open_part(
    path: &Path,
    urn: Expected,
    size: u64,
    block: u64,
) -> Result<(File, Vec<bool>), GetError> {
    let part = with_suffix(path, ".part");
    let state = with_suffix(path, ".part.state");
    if path.exists() {
        return Err(GetError::Exists(path.to_path_buf()));
    }
    let saved = match std::fs::read_to_string(&state) {
        Ok(t) => Some(PartState::parse(&t).ok_or_else(|| {
            GetError::Part(format!(
                "{} is not a state file we wrote; remove it to start over",
                state.display()
            ))
        })?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&state)(e)),
    };
    match saved {
        Some(s) if s.urn == urn && s.size == size && part.exists() => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&part)
                .map_err(io_err(&part))?;
            if f.metadata().map_err(io_err(&part))?.len() != size {
                return Err(GetError::Part(format!(
                    "{} does not have the size its state says; remove it and {} to start over",
                    part.display(),
                    state.display()
                )));
            }
            // The block size is the one the bytes were written with.
            let have = if s.block == block {
                s.have
            } else {
                regrid(&s.have, s.block, block, size)
            };
            Ok((f, have))
        }
        Some(s) if part.exists() => Err(GetError::Part(format!(
            "{} belongs to another download ({}); remove it and {} or choose another output",
            part.display(),
            s.urn,
            state.display()
        ))),
        None if part.exists() => Err(GetError::Part(format!(
            "{} exists without {}; remove it or choose another output",
            part.display(),
            state.display()
        ))),
        _ => {
            // The whole file must fit where it goes, before anything is made.
            let dir = part
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if let Some(free) = free_space(dir) {
                if free < size {
                    return Err(GetError::NoSpace {
                        dir: dir.to_path_buf(),
                        free,
                        need: size,
                    });
                }
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&part)
                .map_err(io_err(&part))?;
            // Sparse: no bytes are written until they arrive.
            if let Err(e) = f.set_len(size) {
                drop(f);
                let _ = std::fs::remove_file(&part);
                return Err(io_err(&part)(e));
            }
            Ok((f, Vec::new()))
        }
    }
}

/// Bytes free for an unprivileged user on the file system holding `dir`
/// (`None` where that cannot be told).
#[cfg(unix)]
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is written by statvfs
    // before it is read, only when it returns 0.
    let st = unsafe {
        if libc::statvfs(c.as_ptr(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
fn free_space(_dir: &Path) -> Option<u64> {
    None
}

/// Blocks of size `to` wholly covered by blocks of size `from` marked in `have`.
fn regrid(have: &[bool], from: u64, to: u64, size: u64) -> Vec<bool> {
    (0..size.div_ceil(to))
        .map(|b| {
            let (s, e) = (b * to, ((b + 1) * to).min(size));
            (s / from..e.div_ceil(from)).all(|i| have.get(i as usize).copied().unwrap_or(false))
        })
        .collect()
}

fn save_state(path: &Path, st: &PartState) -> io::Result<()> {
    let state = with_suffix(path, ".part.state");
    let tmp = with_suffix(path, ".part.state.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(st.encode().as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &state)
}

// ---------------------------------------------------------------- controller

/// Downloads `wanted` to `output` (or to a file named after it in `dir`),
/// calling `report` with progress about twice a second. Stops early, keeping
/// what it has, when `cancel` fires.
pub async fn download(
    wanted: Wanted,
    output: Option<PathBuf>,
    dir: &Path,
    route: Option<PushRoute>,
    cfg: GetConfig,
    cancel: CancellationToken,
    mut report: impl FnMut(&Progress),
) -> Result<Outcome, GetError> {
    if wanted.sources.is_empty() {
        return Err(GetError::NoSource("no source given".into()));
    }
    let mut specs: Vec<SourceSpec> = Vec::new();
    for s in wanted.sources.iter().take(MAX_SOURCES) {
        specs.push(s.clone());
    }
    let mut urn = wanted.urn;
    let mut fth = wanted.fth;
    let mut size = wanted.size;
    // Learn what is not known yet from the first source that answers.
    let mut clients: Vec<Option<Client>> = (0..specs.len()).map(|_| None).collect();
    let mut extra_alts = Vec::new();
    if (urn.is_none() && fth.is_none()) || size.is_none() {
        let mut errors = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            // A stop (pause, cancel, Ctrl-C) must not wait out a source that
            // accepted the connection and says nothing.
            let probed = tokio::select! {
                r = probe(spec, urn, route.as_ref(), &cfg) => r,
                _ = cancel.cancelled() => {
                    return Err(GetError::Part("interrupted before any source answered".into()));
                }
            };
            match probed {
                Ok((c, a)) => {
                    if urn.is_none() && fth.is_none() {
                        // The source's own word, as for its SHA-1: a SHA-1 when
                        // it names one, else its FastTrack hash.
                        urn = a.urn;
                        if urn.is_none() {
                            fth = a.fth;
                        }
                    }
                    if urn.is_none() && fth.is_none() {
                        return Err(GetError::NoUrn);
                    }
                    size.get_or_insert(a.size);
                    extra_alts = a.alts;
                    clients[i] = Some(c);
                    break;
                }
                Err(e) => errors.push(format!("{}: {e}", spec.label())),
            }
        }
        if (urn.is_none() && fth.is_none()) || size.is_none() {
            return Err(GetError::NoSource(errors.join("; ")));
        }
    }
    // A SHA-1 when one is known (the SHA-1 path as ever), else the FTH.
    let expected = match (urn, fth) {
        (Some(u), _) => Expected::Sha1(u),
        (None, Some(f)) => Expected::Fth(f),
        (None, None) => return Err(GetError::NoUrn),
    };
    let urn = expected.sha1();
    let size = size.expect("known");
    let name = wanted
        .name
        .as_deref()
        .or_else(|| {
            specs.iter().find_map(|s| match s {
                SourceSpec::Hit { name, .. } => Some(name.as_str()),
                _ => None,
            })
        })
        .and_then(safe_file_name)
        .or_else(|| {
            specs.iter().find_map(|s| match s {
                SourceSpec::Url(u) => u.file_name().and_then(|n| safe_file_name(&n)),
                _ => None,
            })
        })
        .unwrap_or_else(|| match expected {
            Expected::Sha1(u) => u.base32(),
            Expected::Fth(f) => f.hex(),
        });
    let path = output.unwrap_or_else(|| dir.join(name));
    let part_path = with_suffix(&path, ".part");
    if size > cfg.max_size {
        return Err(GetError::TooLarge {
            size,
            max: cfg.max_size,
        });
    }
    let block = block_size_for(size);
    let (part, have) = open_part(&path, expected, size, block)?;
    let present: u64 = (0..have.len() as u64)
        .filter(|b| have[*b as usize])
        .map(|b| ((b + 1) * block).min(size) - b * block)
        .sum();
    if present > 0 {
        tracing::info!(
            part = %part_path.display(),
            bytes = present,
            of = size,
            "resuming: blocks already in the .part are not fetched again"
        );
    }
    let part = Arc::new(part);
    let sh = Arc::new(Shared {
        urn,
        size,
        block,
        part: part.clone(),
        cfg: cfg.clone(),
        route,
        alts: Mutex::new(Vec::new()),
    });
    let mut planner = Planner::new(size, block, &have, cfg.plan.clone());
    let (ev_tx, mut events) = mpsc::channel::<Ev>(256);
    struct Src {
        spec: SourceSpec,
        cmd: mpsc::Sender<Cmd>,
        seq: u64,
        ctl: Option<Arc<Mutex<RangeCtl>>>,
        cancel: CancellationToken,
    }
    let mut srcs: Vec<Src> = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    let add =
        |spec: SourceSpec, client: Option<Client>, planner: &mut Planner, srcs: &mut Vec<Src>| {
            let id = planner.add_source();
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(worker(
                id,
                spec.clone(),
                client,
                sh.clone(),
                rx,
                ev_tx.clone(),
            ));
            srcs.push(Src {
                spec,
                cmd: tx,
                seq: 0,
                ctl: None,
                cancel: CancellationToken::new(),
            });
        };
    for (spec, client) in specs.into_iter().zip(clients) {
        known.insert(spec.label());
        add(spec, client, &mut planner, &mut srcs);
    }
    let mut pending_alts = extra_alts;
    let mut last_save = Instant::now();
    let mut last_report = (Instant::now(), planner.done_bytes());
    let mut dirty = false;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        // Sources named in X-Alt join (by URN), up to the limit; with no
        // SHA-1 to ask them by, they cannot.
        for a in pending_alts.drain(..) {
            let Some(urn) = urn else { continue };
            let url = HttpUrl::for_addr(a, format!("/uri-res/N2R?{urn}"));
            let spec = SourceSpec::Url(url);
            if srcs.len() < MAX_SOURCES && known.insert(spec.label()) {
                tracing::debug!(source = %spec.label(), "source from X-Alt");
                add(spec, None, &mut planner, &mut srcs);
            }
        }
        {
            let alts: Vec<SocketAddr> = srcs
                .iter()
                .enumerate()
                .filter(|(i, _)| planner.dropped(*i).is_none())
                .filter_map(|(_, s)| s.spec.alt())
                .take(11)
                .collect();
            *sh.alts.lock().unwrap_or_else(|e| e.into_inner()) = alts;
        }
        let now = Instant::now();
        let mut actions = planner.poll(now);
        let mut done = None;
        while let Some(action) = actions.pop() {
            match action {
                Action::Fetch { source, start, end } => {
                    let s = &mut srcs[source];
                    s.seq += 1;
                    let ctl = Arc::new(Mutex::new(RangeCtl {
                        end,
                        written: start,
                    }));
                    s.ctl = Some(ctl.clone());
                    s.cancel = CancellationToken::new();
                    let cmd = Cmd::Fetch {
                        seq: s.seq,
                        start,
                        end,
                        ctl,
                        cancel: s.cancel.clone(),
                    };
                    if s.cmd.try_send(cmd).is_err() {
                        planner.failed(source, now, None);
                    }
                }
                Action::Check { source, block } => {
                    let s = &mut srcs[source];
                    s.seq += 1;
                    s.cancel = CancellationToken::new();
                    let (start, end) = planner.block_range(block);
                    let cmd = Cmd::Check {
                        seq: s.seq,
                        block,
                        start,
                        end,
                        cancel: s.cancel.clone(),
                    };
                    if s.cmd.try_send(cmd).is_err() {
                        planner.failed(source, now, None);
                    }
                }
                Action::Abort { source } => {
                    let s = &mut srcs[source];
                    tracing::debug!(source = %s.spec.label(), "source stalled; its range goes elsewhere");
                    s.cancel.cancel();
                    if let Some(ctl) = &s.ctl {
                        ctl.lock().unwrap_or_else(|e| e.into_inner()).end = 0;
                    }
                    s.seq += 1;
                }
                Action::Steal {
                    victim,
                    thief: _,
                    at,
                } => {
                    let cut = srcs[victim].ctl.as_ref().and_then(|ctl| {
                        let mut c = ctl.lock().unwrap_or_else(|e| e.into_inner());
                        let at = at.max(c.written.div_ceil(block) * block);
                        (at < c.end).then(|| {
                            c.end = at;
                            at
                        })
                    });
                    tracing::debug!(source = %srcs[victim].spec.label(), ?cut, "slow source loses part of its range");
                    if let Some(a) = planner.stolen(victim, cut, now) {
                        actions.push(a);
                    }
                }
                Action::Verify => {
                    let part = part.clone();
                    let hashed = tokio::task::spawn_blocking(move || {
                        part.sync_data()?;
                        match expected {
                            Expected::Sha1(u) => Ok::<_, io::Error>(hash_part(&part, size)? == u.0),
                            Expected::Fth(f) => Ok(fth_of_reader(&mut &*part, size)? == f),
                        }
                    })
                    .await;
                    let ok = matches!(hashed, Ok(Ok(true)));
                    if !ok {
                        tracing::warn!(
                            hash = expected.kind(),
                            "the file's hash does not match; checking its blocks against other sources"
                        );
                    }
                    planner.verified(ok);
                    actions.extend(planner.poll(Instant::now()));
                }
                Action::Digests => {
                    let part = part.clone();
                    let count = planner.block_count();
                    let digests = tokio::task::spawn_blocking(move || {
                        (0..count)
                            .map(|b| {
                                let (s, e) = (b * block, ((b + 1) * block).min(size));
                                let mut buf = vec![0u8; (e - s) as usize];
                                read_exact_at(&part, &mut buf, s)?;
                                Ok(Sha1::digest(&buf).into())
                            })
                            .collect::<io::Result<Vec<Digest>>>()
                    })
                    .await;
                    match digests {
                        Ok(Ok(d)) => {
                            planner.audit(d);
                            actions.extend(planner.poll(Instant::now()));
                        }
                        Ok(Err(e)) => {
                            done = Some(Err(format!("cannot read the .part file: {e}")));
                            break;
                        }
                        Err(e) => {
                            done = Some(Err(format!("cannot read the .part file: {e}")));
                            break;
                        }
                    }
                }
                Action::Finish => {
                    done = Some(Ok(()));
                    break;
                }
                Action::Fail(why) => {
                    done = Some(Err(why));
                    break;
                }
            }
        }
        if let Some(d) = done {
            break d;
        }
        if dirty && last_save.elapsed() >= Duration::from_secs(1) {
            dirty = false;
            last_save = Instant::now();
            let st = PartState {
                urn: expected,
                size,
                block,
                have: planner.have(),
            };
            let (part, p) = (part.clone(), path.clone());
            let _ = tokio::task::spawn_blocking(move || {
                part.sync_data()?;
                save_state(&p, &st)
            })
            .await;
        }
        if last_report.0.elapsed() >= Duration::from_millis(500) {
            let d = planner.done_bytes();
            let secs = last_report.0.elapsed().as_secs_f64();
            report(&Progress {
                done: d,
                size,
                active: planner.active_sources(),
                sources: planner.live_sources(),
                rate: d.saturating_sub(last_report.1) as f64 / secs,
            });
            last_report = (Instant::now(), d);
        }
        let ev = tokio::select! {
            e = events.recv() => e,
            _ = tick.tick() => continue,
            _ = cancel.cancelled() => break Err("interrupted".to_string()),
        };
        let Some(ev) = ev else { continue };
        let now = Instant::now();
        match ev {
            Ev::Block { src, seq, block } if srcs[src].seq == seq => {
                planner.block_done(src, block, now);
                dirty = true;
            }
            Ev::Failed { src, seq, err } if srcs[src].seq == seq => match err {
                SrcError::Retry(why, after) => {
                    tracing::debug!(source = %srcs[src].spec.label(), %why, "source failed");
                    planner.failed(src, now, after);
                }
                SrcError::Drop(why) => {
                    tracing::info!(source = %srcs[src].spec.label(), %why, "source dropped");
                    planner.drop_source(src, &why);
                }
            },
            Ev::Checked {
                src,
                seq,
                block,
                digest,
                bytes,
            } if srcs[src].seq == seq => {
                if planner.checked(src, block, digest, now) == Verdict::Write {
                    let part = part.clone();
                    let at = block * sh.block;
                    let w =
                        tokio::task::spawn_blocking(move || write_all_at(&part, &bytes, at)).await;
                    if !matches!(w, Ok(Ok(()))) {
                        break Err("cannot write the .part file".to_string());
                    }
                    dirty = true;
                }
                for (i, s) in srcs.iter().enumerate() {
                    if let Some(why) = planner.dropped(i) {
                        if !s.cancel.is_cancelled() {
                            tracing::warn!(source = %s.spec.label(), %why, "source dropped");
                            s.cancel.cancel();
                        }
                    }
                }
            }
            Ev::Alts(a) => pending_alts.extend(a),
            _ => {}
        }
    };
    for s in &srcs {
        s.cancel.cancel();
    }
    let d = planner.done_bytes();
    report(&Progress {
        done: d,
        size,
        active: 0,
        sources: planner.live_sources(),
        rate: 0.0,
    });
    let state_path = with_suffix(&path, ".part.state");
    match result {
        Ok(()) => {
            part.sync_all().map_err(io_err(&part_path))?;
            std::fs::rename(&part_path, &path).map_err(io_err(&path))?;
            let _ = std::fs::remove_file(&state_path);
            Ok(Outcome {
                path,
                urn,
                fth: match expected {
                    Expected::Fth(f) => Some(f),
                    Expected::Sha1(_) => None,
                },
                size,
                sources: srcs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.spec.label(), planner.supplied(i)))
                    .collect(),
            })
        }
        Err(why) => {
            let st = PartState {
                urn: expected,
                size,
                block,
                have: planner.have(),
            };
            if why.contains("SHA-1 does not match") {
                // Known bad somewhere and not repairable: nothing is kept.
                let _ = std::fs::remove_file(&part_path);
                let _ = std::fs::remove_file(&state_path);
                // (The planner speaks of the SHA-1, the usual check.)
                let why = why.replace("SHA-1", expected.kind());
                return Err(GetError::HashMismatch(format!(
                    "{why} ({expected}); the sources were: {}",
                    srcs.iter()
                        .map(|s| s.spec.label())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let saved = part.sync_data().and_then(|_| save_state(&path, &st));
            if let Err(e) = saved {
                return Err(io_err(&state_path)(e));
            }
            if why == "interrupted" {
                Err(GetError::Interrupted(part_path))
            } else {
                let details: Vec<String> = srcs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        planner
                            .dropped(i)
                            .map(|w| format!("{}: {w}", s.spec.label()))
                    })
                    .collect();
                Err(GetError::Incomplete {
                    why: if details.is_empty() {
                        why
                    } else {
                        format!("{why} ({})", details.join("; "))
                    },
                    part: part_path,
                })
            }
        }
    }
}

fn hash_part(f: &File, size: u64) -> io::Result<[u8; 20]> {
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        read_exact_at(f, &mut buf[..n], at)?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_damage() {
        let st = PartState {
            urn: Expected::Sha1(Sha1Urn::digest(b"x")),
            size: 10 * 64 + 5,
            block: 64,
            have: vec![
                true, true, false, true, false, false, true, true, true, false, true,
            ],
        };
        let text = st.encode();
        assert!(text.contains("have 0-1,3-3,6-8,10-10\n"), "{text}");
        assert_eq!(PartState::parse(&text), Some(st));
        // Checked by FTH: the state names it, and reads back.
        let st = PartState {
            urn: Expected::Fth(Fth([0xab; 20])),
            size: 5,
            block: 64,
            have: vec![true],
        };
        let text = st.encode();
        assert!(
            text.contains(&format!("\nurn urn:fth:{}\n", "ab".repeat(20))),
            "{text}"
        );
        assert_eq!(PartState::parse(&text), Some(st));
        for bad in [
            "",
            "servent-partial 2\n",
            "servent-partial 1\nurn x\nsize 1\nblock 1\nhave \n",
            "servent-partial 1\nurn urn:fth:abcd\nsize 1\nblock 1\nhave \n",
            "servent-partial 1\nurn urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\nsize 10\nblock 0\nhave \n",
            "servent-partial 1\nurn urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\nsize 10\nblock 5\nhave 0-2\n",
            "servent-partial 1\nurn urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\nsize 10\nblock 5\nhave 1-0\n",
        ] {
            assert_eq!(PartState::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn regrid_keeps_only_whole_blocks() {
        // Old blocks of 2 bytes, new of 4, size 10.
        let have = [true, true, true, false, true];
        assert_eq!(regrid(&have, 2, 4, 10), [true, false, true]);
    }

    #[test]
    fn names_offered_by_sources_are_made_safe() {
        assert_eq!(safe_file_name("a.mp3").as_deref(), Some("a.mp3"));
        assert_eq!(
            safe_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(safe_file_name("..\\x\\y.txt").as_deref(), Some("y.txt"));
        assert_eq!(safe_file_name(".hidden").as_deref(), Some("hidden"));
        assert_eq!(safe_file_name("a\nb:c").as_deref(), Some("a_b_c"));
        assert_eq!(safe_file_name(".."), None);
        assert_eq!(safe_file_name("/"), None);
    }
}
