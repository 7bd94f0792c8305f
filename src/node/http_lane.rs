//! The fast lane of the upload server: a TCP connection's plain `GET` and
//! `HEAD` requests for shared files, answered without hyper's dispatch.
//!
//! A request is answered here only when hyper would treat it as exactly what it
//! looks like: HTTP/1.1, `GET` or `HEAD`, a path of ours (`/get/...`,
//! `/uri-res/...`), no body and none of the headers that change how a
//! connection goes on (`Content-Length`, `Transfer-Encoding`, `Connection`,
//! `Expect`, `Upgrade`). The answer is the one `http::answer_file` builds for
//! hyper (a `FileAnswer`, which hyper gets as a `Response`), and its head is
//! written as hyper writes it (`encode_file_head`, or `encode_head` for the
//! refusals, checked byte for byte against hyper in `tests`): status line,
//! header names in title case in the order they were set, hyper's
//! `Content-Length` rules, then `Date`.
//! The head and the first body frame leave in one vectored write, as with hyper's
//! `writev` queue, so `sendfile` placeholders reach the stream the same way.
//!
//! Anything else (another method or version, a browse, a FastTrack path, a
//! malformed or oversized head, a head cut short by the end of the stream)
//! hands the connection, with the bytes read and not answered, to hyper for
//! the rest of its life: hyper then sees the same bytes it would have seen
//! from the start. What the lane saves per request is hyper's dispatch, its
//! request and header maps, the answer's header map (its values are written
//! straight into the head), and the header timer hyper arms anew for each
//! request (the lane's timers are re-armed only when they fire early).
//!
//! gtk-gnutella 1.2.3 offers a TLS upgrade on the first request of each
//! download connection (`Upgrade: TLS/1.0`, `Connection: Upgrade`), so its
//! connections are hyper's from the start. It asks for 0.5-1 MiB per request,
//! where the per-request work the lane saves is small beside the `sendfile`.

use std::borrow::Cow;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut, Bytes};
use hyper::body::Body;
use hyper::header;
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::http::{
    self, ConnState, FileAnswer, FileBody, Guarded, HEADER_TIMEOUT, IDLE_TIMEOUT, MAX_HEAD,
    ReqHeaders, Uploads,
};
use super::sendfile::Spans;
use crate::core::library::SharedFile;
use crate::wire::http as h;

/// Most request headers taken, as hyper (more is hyper's 431).
const MAX_HEADERS: usize = 100;

/// Request headers that make hyper do more than read a head: a request body,
/// an interim answer or a protocol switch. (`Connection` too, unless it only
/// says `keep-alive`, which HTTP/1.1 is anyway: see `for_hyper`.)
const FOR_HYPER: [&str; 4] = ["content-length", "transfer-encoding", "expect", "upgrade"];

/// Whether a request header is one only hyper handles.
fn for_hyper(x: &httparse::Header<'_>) -> bool {
    if x.name.eq_ignore_ascii_case("connection") {
        // hyper keeps a connection alive and answers as to none when every
        // token is `keep-alive`; anything else (`close`, `upgrade`) is its.
        return !x
            .value
            .split(|&b| b == b',')
            .all(|t| t.trim_ascii().eq_ignore_ascii_case(b"keep-alive"));
    }
    FOR_HYPER.iter().any(|n| x.name.eq_ignore_ascii_case(n))
}

/// The request headers as `httparse` found them.
struct Parsed<'a, 'b>(&'a [httparse::Header<'b>]);

impl ReqHeaders for Parsed<'_, '_> {
    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|x| x.name.eq_ignore_ascii_case(name))
            .and_then(|x| visible(x.value))
    }

    fn each<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |x| x.name.eq_ignore_ascii_case(name))
            .filter_map(|x| visible(x.value))
    }
}

/// A header value as text when it is visible ASCII or tabs, which is when
/// `HeaderValue::to_str` gives one.
fn visible(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| (32..127).contains(&b) || b == b'\t') {
        // SAFETY: ASCII only, checked just above, is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(v) })
    } else {
        None
    }
}

/// What became of the connection in the lane.
enum Outcome {
    /// Closed, timed out or failed: nothing more to do.
    Done,
    /// The bytes at the front of the buffer are for hyper.
    Hyper,
}

/// Serves a connection: its requests in the lane while they are plain, then
/// (if one is not) with hyper to the end.
pub(super) async fn serve<S>(
    io: S,
    prefix: Bytes,
    remote: SocketAddr,
    local: Option<SocketAddr>,
    uploads: Arc<Uploads>,
    spans: Option<Arc<Spans>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut io = Guarded::new(io, Bytes::new(), IDLE_TIMEOUT);
    let mut buf = Vec::with_capacity(MAX_HEAD.max(prefix.len()));
    buf.extend_from_slice(&prefix);
    let state = Mutex::new(ConnState {
        open: None,
        spare: Arc::default(),
        spans: spans.clone(),
        local,
    });
    let cancel = uploads.cancel.clone();
    let outcome = tokio::select! {
        o = lane(&mut io, &mut buf, remote, &uploads, &state) => o,
        _ = cancel.cancelled() => Outcome::Done,
    };
    if let Outcome::Hyper = outcome {
        let io = io.into_inner();
        http::serve_with(io, Bytes::from(buf), remote, local, uploads, spans).await;
    }
}

async fn lane<S>(
    io: &mut Guarded<S>,
    buf: &mut Vec<u8>,
    remote: SocketAddr,
    uploads: &Arc<Uploads>,
    state: &Mutex<ConnState>,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = Vec::with_capacity(512);
    // The file of the last answer: the next request is most often for it.
    let mut held = None;
    loop {
        // A whole head, within the header time.
        io.set_deadline_in(HEADER_TIMEOUT);
        // Where the search for the blank line goes on from after a read: a
        // blank line (3 bytes at most) not found before is one that ends in
        // the new bytes, so a head trickled in byte by byte is not searched
        // from its start again at each byte.
        let mut from = 0;
        while !blank_line(&buf[from..]) {
            if buf.len() >= MAX_HEAD {
                return Outcome::Hyper;
            }
            from = buf.len().saturating_sub(2);
            let room = MAX_HEAD - buf.len();
            match io.read_buf(&mut (&mut *buf).limit(room)).await {
                Ok(0) if buf.is_empty() => return Outcome::Done,
                // A head cut short: hyper says what it says of one.
                Ok(0) => return Outcome::Hyper,
                Ok(_) => {}
                Err(_) => return Outcome::Done,
            }
        }
        io.clear_deadline();
        // Left uninitialised, as hyper leaves them: httparse writes those it
        // fills, and the request sees only those.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        // Not complete despite a blank line (blank lines before the request
        // line, which hyper skips), or not a head: hyper's to read on.
        let Ok(httparse::Status::Complete(len)) = req.parse_with_uninit_headers(buf, &mut headers)
        else {
            return Outcome::Hyper;
        };
        let Some(answer) = answer(&req, remote, uploads, state, &mut held).await else {
            return Outcome::Hyper;
        };
        let head = req.method == Some("HEAD");
        out.clear();
        let mut body = match answer {
            Ok(file) => {
                encode_file_head(&file, head, &mut out);
                file.body
            }
            Err(other) => {
                encode_head(&other, head, &mut out);
                other.into_body()
            }
        };
        if send(io, &out, &mut body, head).await.is_err() {
            return Outcome::Done;
        }
        drop(body);
        buf.drain(..len);
    }
}

/// Whether `buf` holds an empty line (`\n\n` or `\n\r\n`, as `httparse` takes
/// either), without which no head in it is complete.
fn blank_line(buf: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = buf[at..].iter().position(|&b| b == b'\n') {
        let rest = &buf[at + i + 1..];
        if rest.starts_with(b"\n") || rest.starts_with(b"\r\n") {
            return true;
        }
        at += i + 1;
    }
    false
}

/// Bytes `http::uri::PathAndQuery` takes unescaped in a path (and so in a
/// query too), `?` aside.
const fn plain_uri_byte(b: u8) -> bool {
    matches!(b, 0x21 | 0x24..=0x3B | 0x3D | 0x40..=0x5F | 0x61..=0x7A | 0x7C | 0x7E)
}

/// [`plain_uri_byte`], and `?`, as a table: a target is checked a byte a look-up.
static PLAIN_OR_QUERY: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = plain_uri_byte(b as u8) || b == b'?' as usize;
        b += 1;
    }
    t
};

/// A request target's path and query as hyper's `Uri` gives them, or `None`
/// for one `Uri` refuses. A target of plain bytes is split at its first `?`,
/// which is what `Uri` does with one; any other is left to `Uri` itself.
fn path_and_query(target: &str) -> Option<(Cow<'_, str>, Option<Cow<'_, str>>)> {
    if target.bytes().all(|b| PLAIN_OR_QUERY[b as usize]) {
        return Some(match target.split_once('?') {
            Some((p, q)) => (Cow::Borrowed(p), Some(Cow::Borrowed(q))),
            None => (Cow::Borrowed(target), None),
        });
    }
    let uri = hyper::Uri::from_maybe_shared(Bytes::copy_from_slice(target.as_bytes())).ok()?;
    Some((
        Cow::Owned(uri.path().to_string()),
        uri.query().map(|q| Cow::Owned(q.to_string())),
    ))
}

/// The answer to a plain request (a file's, or another), or `None` when it
/// is one for hyper.
async fn answer(
    req: &httparse::Request<'_, '_>,
    remote: SocketAddr,
    uploads: &Arc<Uploads>,
    state: &Mutex<ConnState>,
    held: &mut Option<Arc<SharedFile>>,
) -> Option<Result<FileAnswer, Response<FileBody>>> {
    let head = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    if req.version != Some(1) {
        return None;
    }
    let headers = Parsed(req.headers);
    if req.headers.iter().any(for_hyper) {
        return None;
    }
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let (path, query) = path_and_query(target)?;
    if path == "/" || h::is_fasttrack_path(&path) {
        return None;
    }
    tracing::debug!(%remote, method = req.method?, uri = target, "HTTP request");
    let target = match http::target_of(&path, query.as_deref(), head) {
        Ok(t) => t,
        Err(refusal) => return Some(Err(refusal)),
    };
    let file = match http::find_file(uploads, &target, head, held.as_ref()) {
        Ok(file) => {
            *held = Some(file.clone());
            file
        }
        // Perhaps a FastTrack user's, whose files hyper's side passes on.
        Err(_) if uploads.fasttrack_served() => return None,
        Err(refusal) => return Some(Err(refusal)),
    };
    Some(http::answer_file(head, &target, file, &headers, remote, uploads, state).await)
}

/// Writes an answer's head into `out` as hyper 1 writes it for our server
/// (title-case names, keep-alive, `date_header` on): the status line, the
/// headers in order, `Content-Length` by hyper's rules (left out of an answer
/// without a body to a `GET` and written as `0` after the others, as hyper
/// does; as set for a `HEAD`), then `Date`.
pub(super) fn encode_head(r: &Response<FileBody>, head: bool, out: &mut Vec<u8>) {
    let mut w = HeadWriter::start(out, r.status(), head, r.body().is_end_stream());
    for (name, value) in r.headers() {
        w.header(name, |out| out.extend_from_slice(value.as_bytes()));
    }
    w.finish(r.body().size_hint().exact());
}

/// Writes a file answer's head as [`encode_head`] writes the same answer made
/// into a `Response` (`FileAnswer::into_response`), without building one.
pub(super) fn encode_file_head(a: &FileAnswer, head: bool, out: &mut Vec<u8>) {
    let mut w = HeadWriter::start(out, a.status, head, a.body.is_end_stream());
    for (name, value) in &a.headers {
        w.header(name, |out| value.write(out));
    }
    w.finish(a.body.size_hint().exact());
}

/// A head being written by hyper's rules (see [`encode_head`]).
struct HeadWriter<'a> {
    out: &'a mut Vec<u8>,
    head: bool,
    no_body: bool,
    wrote_len: bool,
    wrote_date: bool,
}

impl<'a> HeadWriter<'a> {
    /// Writes the status line.
    fn start(out: &'a mut Vec<u8>, status: StatusCode, head: bool, no_body: bool) -> Self {
        if status == StatusCode::OK {
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        } else {
            out.extend_from_slice(b"HTTP/1.1 ");
            out.extend_from_slice(status.as_str().as_bytes());
            out.push(b' ');
            out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        HeadWriter {
            out,
            head,
            no_body,
            wrote_len: false,
            wrote_date: false,
        }
    }

    /// Writes a header, unless hyper would leave it out; `value` writes its
    /// value.
    fn header(&mut self, name: &header::HeaderName, value: impl FnOnce(&mut Vec<u8>)) {
        debug_assert!(
            ![
                header::CONNECTION,
                header::TRANSFER_ENCODING,
                header::TRAILER
            ]
            .contains(name),
            "hyper writes {name} its own way"
        );
        if *name == header::CONTENT_LENGTH {
            if self.no_body && !self.head {
                return;
            }
            // Our answers set one length; hyper writes the first.
            if self.wrote_len {
                return;
            }
            self.wrote_len = true;
        } else if *name == header::DATE {
            self.wrote_date = true;
        }
        title_case(self.out, name.as_str().as_bytes());
        self.out.extend_from_slice(b": ");
        value(self.out);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The length hyper adds when none was set (`exact`, the body's), the
    /// date, and the blank line.
    fn finish(self, exact: Option<u64>) {
        let out = self.out;
        if !self.wrote_len {
            if self.no_body {
                if !self.head {
                    out.extend_from_slice(b"Content-Length: 0\r\n");
                }
            } else if let Some(n) = exact {
                out.extend_from_slice(b"Content-Length: ");
                out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        if !self.wrote_date {
            out.extend_from_slice(b"Date: ");
            date(out);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A lower-case header name in title case, as hyper writes it.
fn title_case(out: &mut Vec<u8>, name: &[u8]) {
    let at = out.len();
    out.extend_from_slice(name);
    let mut prev = b'-';
    for c in &mut out[at..] {
        if prev == b'-' {
            c.make_ascii_uppercase();
        }
        prev = *c;
    }
}

thread_local! {
    /// The `Date` value of the current second, as hyper caches it.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Appends the current time as an HTTP date (IMF-fixdate).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Sends the head and the body's frames, the head together with the first
/// frame (one vectored write, as hyper's queue hands them over).
async fn send<S>(
    io: &mut Guarded<S>,
    head_bytes: &[u8],
    body: &mut FileBody,
    head: bool,
) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let mut pending = head_bytes;
    if !head {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
        {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            write_both(io, &mut pending, data).await?;
        }
    }
    if !pending.is_empty() {
        io.write_all(pending).await?;
    }
    Ok(())
}

/// Writes what is left of `first`, then all of `data`.
async fn write_both<S>(io: &mut Guarded<S>, first: &mut &[u8], mut data: Bytes) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    while !data.is_empty() {
        let n = if first.is_empty() {
            io.write(&data).await?
        } else {
            io.write_vectored(&[IoSlice::new(first), IoSlice::new(&data)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_first = n.min(first.len());
        *first = &first[from_first..];
        data.advance(n - from_first);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::library::Library;
    use crate::wire::huge::Sha1Urn;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::sync::CancellationToken;

    /// A share of three files: one above the `sendfile` threshold, one small,
    /// one empty; the first two hashed.
    struct Share {
        dir: std::path::PathBuf,
        library: Library,
        urn: Sha1Urn,
    }

    impl Share {
        fn new(tag: &str) -> Share {
            let dir = std::env::temp_dir().join(format!(
                "servent-lane-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).expect("dir");
            let mut library = Library::new();
            let mut urn = None;
            for (name, len) in [("big.bin", 40_000usize), ("small.txt", 300), ("empty", 0)] {
                let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
                let path = dir.join(name);
                std::fs::write(&path, &data).expect("file");
                let meta = std::fs::metadata(&path).expect("meta");
                let index = library.add(
                    name,
                    path,
                    len as u64,
                    meta.modified().expect("mtime"),
                    None,
                );
                if len > 0 {
                    let u = Sha1Urn::digest(&data);
                    library.set_sha1(index, u);
                    urn.get_or_insert(u);
                }
            }
            Share {
                dir,
                library,
                urn: urn.expect("a hashed file"),
            }
        }

        fn uploads(&self, slots: usize) -> Arc<Uploads> {
            Arc::new(Uploads::new(
                self.library.served(),
                slots,
                CancellationToken::new(),
            ))
        }
    }

    impl Drop for Share {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Everything a server sends back for `requests` (written in one go, so
    /// pipelined, the write side closed after them unless they end with a
    /// whole head) on one connection, until it closes; `lane` picks the
    /// TCP server with its fast lane, otherwise hyper alone serves.
    async fn exchange(uploads: Arc<Uploads>, lane: bool, requests: &str) -> Vec<u8> {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (s, remote) = l.accept().await.expect("accept");
            if lane {
                http::serve(s, Bytes::new(), remote, uploads).await;
            } else {
                http::serve_io(s, Bytes::new(), remote, uploads).await;
            }
        });
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(requests.as_bytes()).await.expect("requests");
        if !requests.ends_with("\r\n\r\n") {
            // A head cut short: the client says no more is coming.
            c.shutdown().await.expect("shutdown");
        }
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .expect("answers in time")
            .expect("read");
        server.await.expect("server");
        got
    }

    /// `Date` values blanked: the two runs may straddle a second.
    fn undated(b: &[u8]) -> Vec<u8> {
        let mut out = b.to_vec();
        let mut at = 0;
        while let Some(i) = out[at..]
            .windows(8)
            .position(|w| w == b"\r\nDate: ")
            .map(|i| i + at)
        {
            let v = i + 8;
            out[v..v + 29].fill(b'#');
            at = v;
        }
        out
    }

    async fn same_as_hyper(share: &Share, slots: usize, requests: &str) -> Vec<u8> {
        let ours = exchange(share.uploads(slots), true, requests).await;
        let hypers = exchange(share.uploads(slots), false, requests).await;
        assert!(
            undated(&ours) == undated(&hypers),
            "lane:\n{}\nhyper:\n{}",
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&hypers)
        );
        ours
    }

    fn req(method: &str, target: &str, extra: &str) -> String {
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
    }

    /// A request hyper alone answers, and after which it closes.
    fn closing() -> String {
        req("GET", "/get/2/small.txt", "Connection: close\r\n")
    }

    #[tokio::test]
    async fn answers_byte_for_byte_as_hyper() {
        let share = Share::new("same");
        let urn = share.urn;
        let mut requests = [
            req("GET", "/get/1/big.bin", ""),
            req("GET", "/get/1/big.bin", "Range: bytes=100-35000\r\n"),
            req("GET", "/get/2/small.txt", ""),
            req("GET", "/get/2/small.txt", "Range: bytes=-10\r\n"),
            req(
                "GET",
                "/get/2/small.txt",
                "Range: bytes=5-\r\nRange: bytes=0-0\r\n",
            ),
            req("HEAD", "/get/1/big.bin", ""),
            req("HEAD", "/get/1/big.bin", "Range: bytes=0-9\r\n"),
            req("GET", "/get/1/big.bin", "Range: bytes=50000-\r\n"),
            req("HEAD", "/get/1/big.bin", "Range: bytes=50000-\r\n"),
            req("GET", "/get/1/big.bin", "Range: lines=1-2\r\n"),
            req("GET", "/get/3/empty", ""),
            req("HEAD", "/get/3/empty", ""),
            req("GET", "/get/1/other.bin", ""),
            req("GET", "/get/99/x", ""),
            req("GET", "/get/x/y", ""),
            req("HEAD", "/get/x/y", ""),
            req("GET", "/elsewhere", ""),
            req("GET", "/get/2/small%2Etxt?q=1", ""),
            req("GET", "/get/2/small.txt?", ""),
            req("GET", "/get/2/small.txt??a?b", ""),
            req("GET", "//get/2/small.txt", ""),
            req(
                "GET",
                &format!("/uri-res/N2R?{urn}"),
                &format!(
                    "Range: bytes=0-0\r\nX-Gnutella-Content-URN: {urn}\r\n\
                     X-Alt: 192.0.2.7:6350, 198.51.100.1, [2001:db8::1]:6346\r\n\
                     X-Node: 198.51.100.1:6346\r\nX-Features: IPV6/1.0\r\n"
                ),
            ),
            req(
                "GET",
                &format!("/uri-res/N2R?{urn}"),
                "X-Features: tls/1.0\r\n",
            ),
            req("GET", "/uri-res/N2R?urn:sha1:nonsense", ""),
            req("GET", "/get/2/small.txt", "Connection: Keep-Alive\r\n"),
            req(
                "GET",
                "/get/2/small.txt",
                "Connection: keep-alive, keep-alive\r\n",
            ),
            // From here on, hyper's: another method, then more for the lane.
            req("DELETE", "/get/1/big.bin", ""),
            req("GET", "/get/2/small.txt", ""),
            closing(),
        ]
        .concat();
        let got = same_as_hyper(&share, 8, &requests).await;
        assert_eq!(
            got.windows(9).filter(|w| w == b"HTTP/1.1 ").count(),
            29,
            "an answer to every request"
        );
        // Targets `Uri` (or `httparse`) reads its own way, each on a
        // connection of its own in case it ends it.
        for target in [
            "/get/2/small.txt#frag",
            "/get/2/sm\"all{}.txt",
            "/get/2/small.txt?a#b",
            "/get/2/small.txt?<`>^",
            "/get/2/sma<ll.txt",
        ] {
            requests = [req("GET", target, ""), closing()].concat();
            same_as_hyper(&share, 8, &requests).await;
        }
        // An HTTP/1.0 request, a bad head and a head cut short go to hyper.
        for first in [
            "GET /get/2/small.txt HTTP/1.0\r\n\r\n".to_string(),
            "GET /get/2/small.txt HTTP/1.1\r\nBad Header\r\n\r\n".to_string(),
            req("GET", "/", "Accept: text/html\r\n"),
            req("GET", "/get/2/small.txt", "Content-Length: 0\r\n"),
            req(
                "GET",
                "/get/2/small.txt",
                "Connection: keep-alive, Upgrade\r\n",
            ),
            req("GET", "/get/2/small.txt", "Connection: close\r\n"),
        ] {
            requests = [req("GET", "/get/2/small.txt", ""), first, closing()].concat();
            same_as_hyper(&share, 8, &requests).await;
        }
        same_as_hyper(&share, 8, "GET /get/2/small.txt HTTP/1.1\r\nHost").await;
        same_as_hyper(&share, 8, "").await;
    }

    #[tokio::test]
    async fn busy_slots_answer_as_hyper() {
        let share = Share::new("busy");
        let requests = [
            req("GET", "/get/1/big.bin", ""),
            req("HEAD", "/get/1/big.bin", ""),
            closing(),
        ]
        .concat();
        let got = same_as_hyper(&share, 0, &requests).await;
        assert!(got.starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
    }

    #[test]
    fn targets_split_as_uri_splits_them() {
        for t in [
            "/get/1/a.b",
            "/uri-res/N2R?urn:sha1:ABC",
            "/a?",
            "/a??b",
            "/a?b?c",
            "/a#b",
            "/a?b#c",
            "/a b",
            "/\"{}",
            "/a?<>`^",
            "/a<",
            "//x",
            "/%41%2f?%",
        ] {
            let uri = hyper::Uri::try_from(t).ok();
            let want = uri.as_ref().map(|u| (u.path(), u.query()));
            let got = path_and_query(t);
            let got = got.as_ref().map(|(p, q)| (p.as_ref(), q.as_deref()));
            assert_eq!(got, want, "{t}");
        }
    }

    #[test]
    fn a_blank_line_ends_a_head() {
        assert!(blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(blank_line(b"GET / HTTP/1.1\nHost: x\n\n"));
        assert!(!blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!blank_line(b"GET / HTTP/1.1\r\nHost: x\r\n\r"));
        assert!(!blank_line(b""));
        // Found whichever read its bytes came in, searching on from two
        // bytes before the new ones, as the lane does.
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..head.len() {
            for tail in [&b"\n\n"[..], b"\n\r\n"] {
                let whole = [&head[..head.len() - 4], b"\r", tail].concat();
                let cut = cut.min(whole.len());
                let found_early = blank_line(&whole[..cut]);
                let from = cut.saturating_sub(2);
                assert!(found_early || blank_line(&whole[from..]), "cut at {cut}");
            }
        }
    }

    #[test]
    fn title_case_as_hyper() {
        let mut out = Vec::new();
        title_case(&mut out, b"x-gnutella-content-urn");
        assert_eq!(out, b"X-Gnutella-Content-Urn");
        out.clear();
        title_case(&mut out, b"content-range");
        assert_eq!(out, b"Content-Range");
    }
}
