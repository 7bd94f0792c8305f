//! The connection handshake: Gnutella 0.6 header blocks and the two 0.4 lines.
//!
//! A Gnutella connection opens with text. In 0.6 each side sends a *block*: a start
//! line, header lines, and an empty line. The client sends `GNUTELLA CONNECT/0.6`, the
//! server answers with a status line (`GNUTELLA/0.6 200 OK`), and the client confirms
//! with a status line of its own; after that both directions switch to binary messages.
//! The obsolete 0.4 handshake is the bare pair `GNUTELLA CONNECT/0.4\n\n` and
//! `GNUTELLA OK\n\n`.
//!
//! This module does no I/O. [`parse_block`] looks at the bytes received so far and
//! either asks for more (`Ok(None)`), returns a complete [`Block`] with the number of
//! bytes it used, or fails. Every input is bounded by [`Limits`]: a peer can never make
//! the parser buffer more than [`Limits::max_block`] bytes, and one call never looks at
//! more than about `max_block + max_line` bytes, whatever the length of the buffer.
//! [`Block::encode`] writes a block and refuses any value it could not read back.
//!
//! Parsing rules, in short (`protocol-spec/handshake.md` has the full description):
//!
//! * Lines end with CRLF or a bare LF. A CR anywhere else in a line is an error, as is
//!   any other control byte except HT. Bytes `>= 0x80` are allowed in the reason phrase
//!   and in header values and are decoded as UTF-8, lossily.
//! * The protocol words `GNUTELLA`, `CONNECT` and `OK` must be upper case, as every
//!   deployed servent sends them. Anything else on the first line is refused as soon
//!   as it is seen, so HTTP requests, `GIV` lines and garbage fail on the first bytes.
//! * A header line is `name ":" value`. The name must be a non-empty HTTP token
//!   (white space between the name and the colon is tolerated); a line without a colon
//!   is an error. Values are trimmed of SP and HT. A line starting with SP or HT
//!   continues the previous header's value (joined with one space); before the first
//!   header it is an error.
//! * Encoding uses CRLF line ends, except that a 0.4 start line without headers is
//!   written exactly in its 0.4 form (`...\n\n`).

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, BytesMut};
use nom::bytes::complete::{tag, take_while_m_n, take_while1};
use nom::character::complete::space1;
use nom::{IResult, Parser};

// ---------------------------------------------------------------------------------
// Header names and other constants
// ---------------------------------------------------------------------------------

/// Vendor and version of the peer's software.
pub const USER_AGENT: &str = "User-Agent";
/// `True`: I am (or want to be) an ultrapeer; `False`: I want to be a leaf.
pub const X_ULTRAPEER: &str = "X-Ultrapeer";
/// From an ultrapeer: whether it wants more ultrapeer connections (`false` = leaf guidance).
pub const X_ULTRAPEER_NEEDED: &str = "X-Ultrapeer-Needed";
/// Version of the leaf-to-ultrapeer query routing protocol supported.
pub const X_QUERY_ROUTING: &str = "X-Query-Routing";
/// Version of the ultrapeer-to-ultrapeer (last hop) query routing supported.
pub const X_UP_QUERY_ROUTING: &str = "X-Ultrapeer-Query-Routing";
/// Other hosts to try (`ip[:port]` list, see [`parse_try_list`]).
pub const X_TRY: &str = "X-Try";
/// Ultrapeers to try (`ip[:port]` list, see [`parse_try_list`]).
pub const X_TRY_ULTRAPEERS: &str = "X-Try-Ultrapeers";
/// The sender's own listening address (see [`parse_listen_ip`]).
pub const LISTEN_IP: &str = "Listen-IP";
/// Old name of [`LISTEN_IP`].
pub const X_MY_ADDRESS: &str = "X-My-Address";
/// gtk-gnutella's name for [`LISTEN_IP`] (IPv6 in brackets).
pub const NODE: &str = "Node";
/// The receiver's IP address as the sender sees it (no port).
pub const REMOTE_IP: &str = "Remote-IP";
/// Stream encodings the sender can receive (`deflate`).
pub const ACCEPT_ENCODING: &str = "Accept-Encoding";
/// Stream encoding the sender will use from the end of the handshake on.
pub const CONTENT_ENCODING: &str = "Content-Encoding";
/// Highest TTL the sender accepts for fresh queries.
pub const X_MAX_TTL: &str = "X-Max-TTL";
/// Number of ultrapeer connections the sender tries to keep.
pub const X_DEGREE: &str = "X-Degree";
/// Version of dynamic querying the sender performs.
pub const X_DYNAMIC_QUERYING: &str = "X-Dynamic-Querying";
/// The sender understands Bye messages.
pub const BYE_PACKET: &str = "Bye-Packet";
/// The sender understands (and forwards) GGEP blocks.
pub const GGEP: &str = "GGEP";
/// The sender uses the pong-caching scheme.
pub const PONG_CACHING: &str = "Pong-Caching";
/// The sender understands vendor messages.
pub const VENDOR_MESSAGE: &str = "Vendor-Message";
/// Features the sender has, as a comma-separated `name/major.minor` list
/// (`browse/1.0`, `HSEP/0.2`).
pub const X_FEATURES: &str = "X-Features";
/// The sender accepts a query re-sent with the same GUID and a higher TTL.
pub const X_EXT_PROBES: &str = "X-Ext-Probes";
/// `false`: the sender does not re-query automatically.
pub const X_REQUERIES: &str = "X-Requeries";
/// Version of GUESS (UDP querying) supported.
pub const X_GUESS: &str = "X-Guess";
/// Preferred language of the sender's user.
pub const X_LOCALE_PREF: &str = "X-Locale-Pref";

/// The only stream encoding in use (a zlib stream, despite the name).
pub const DEFLATE: &str = "deflate";
/// Port assumed when an address in a handshake header has none.
pub const DEFAULT_PORT: u16 = 6346;
/// At most this many addresses are returned by [`parse_try_list`].
pub const MAX_TRY_ENTRIES: usize = 64;

/// Status code: accepted, go on.
pub const STATUS_OK: u16 = 200;
/// Status code: authentication required (never seen in practice).
pub const STATUS_UNAUTHORIZED: u16 = 401;
/// Status code: refused by policy.
pub const STATUS_FORBIDDEN: u16 = 403;
/// Status code: already connected / slot reserved for others.
pub const STATUS_CONFLICT: u16 = 409;
/// Status code: busy, shielded leaf, shutting down.
pub const STATUS_UNAVAILABLE: u16 = 503;

const PROTOCOL: &[u8] = b"GNUTELLA";

// ---------------------------------------------------------------------------------
// Errors and limits
// ---------------------------------------------------------------------------------

/// Why a handshake block could not be parsed or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A line (without its line end) is longer than the limit; raised as soon as
    /// that many bytes have arrived, before the line end.
    #[error("handshake line longer than {limit} bytes")]
    LineTooLong { limit: usize },
    /// The block has more header fields than the limit.
    #[error("more than {limit} handshake headers")]
    TooManyHeaders { limit: usize },
    /// The block (including its terminating empty line) is longer than the limit.
    #[error("handshake block larger than {limit} bytes")]
    BlockTooLarge { limit: usize },
    /// The first line is not a Gnutella start line.
    #[error("bad handshake start line: {why}")]
    BadStartLine { why: &'static str },
    /// The protocol version is not `digits.digits` with each part at most 255.
    #[error("bad protocol version in handshake start line")]
    BadVersion,
    /// The status code is not exactly three digits.
    #[error("bad status code in handshake status line")]
    BadStatusCode,
    /// A header line is malformed (`line` counts from 1 = the start line).
    #[error("bad handshake header on line {line}: {why}")]
    BadHeader { line: usize, why: &'static str },
    /// A value cannot be written in a form that would be parsed back unchanged.
    #[error("cannot encode handshake block: {why}")]
    Unencodable { why: &'static str },
}

/// Bounds applied while parsing a block.
///
/// Deployed servents (LimeWire, gtk-gnutella, Shareaza) send 15 to 30 headers and
/// blocks of 0.5 to 2 KiB; the longest lines are `X-Try-Ultrapeers` lists, a few
/// hundred bytes (up to about 700 with Shareaza's per-entry timestamps). The defaults
/// leave room for several times that and no more:
///
/// | field | default | counts |
/// |---|---|---|
/// | `max_line` | 2048 | bytes of one physical line, without its CRLF / LF |
/// | `max_headers` | 64 | header fields (continuation lines not counted) |
/// | `max_block` | 8192 | bytes of the whole block, start line to final empty line |
///
/// [`parse_block`] re-reads the buffer from the start at each call. With these bounds
/// a peer sending one byte at a time costs at most about 8192 × 8192 / 2 byte steps
/// in total, which is acceptable; raise `max_block` with that in mind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted line, not counting the line end.
    pub max_line: usize,
    /// Most header fields accepted in one block.
    pub max_headers: usize,
    /// Longest accepted block, including every line end and the empty line.
    pub max_block: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: 2048,
            max_headers: 64,
            max_block: 8192,
        }
    }
}

// ---------------------------------------------------------------------------------
// Start line
// ---------------------------------------------------------------------------------

/// The first line of a handshake block.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StartLine {
    /// `GNUTELLA CONNECT/<major>.<minor>` (sent by the client in step 1).
    Connect { major: u8, minor: u8 },
    /// `GNUTELLA/<major>.<minor> <code> <reason>` (steps 2 and 3). `reason` is trimmed
    /// and may be empty.
    Status {
        major: u8,
        minor: u8,
        code: u16,
        reason: String,
    },
    /// `GNUTELLA OK`, the 0.4 server reply.
    Ok04,
}

impl StartLine {
    /// The status code of a status line, `None` for the other forms.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            StartLine::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this line lets the handshake go on: a 200 status or `GNUTELLA OK`.
    pub fn is_success(&self) -> bool {
        matches!(self, StartLine::Ok04) || self.status_code() == Some(STATUS_OK)
    }

    fn is_04_form(&self) -> bool {
        matches!(
            self,
            StartLine::Ok04 | StartLine::Connect { major: 0, minor: 4 }
        )
    }
}

impl fmt::Display for StartLine {
    /// The line as sent, without its line end (the reason phrase is written trimmed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartLine::Connect { major, minor } => write!(f, "GNUTELLA CONNECT/{major}.{minor}"),
            StartLine::Status {
                major,
                minor,
                code,
                reason,
            } => {
                write!(f, "GNUTELLA/{major}.{minor} {code:03}")?;
                let reason = trim_ws_str(reason);
                if !reason.is_empty() {
                    write!(f, " {reason}")?;
                }
                Ok(())
            }
            StartLine::Ok04 => f.write_str("GNUTELLA OK"),
        }
    }
}

/// A start line as found in the buffer, before any allocation.
enum RawStart<'a> {
    Connect(u8, u8),
    Status(u8, u8, u16, &'a [u8]),
    Ok04,
}

impl RawStart<'_> {
    fn into_owned(self) -> StartLine {
        match self {
            RawStart::Connect(major, minor) => StartLine::Connect { major, minor },
            RawStart::Status(major, minor, code, reason) => StartLine::Status {
                major,
                minor,
                code,
                reason: String::from_utf8_lossy(reason).into_owned(),
            },
            RawStart::Ok04 => StartLine::Ok04,
        }
    }
}

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// `digits "." digits`, each part 1 to 3 digits and at most 255.
fn version(i: &[u8]) -> Result<(&[u8], u8, u8), HandshakeError> {
    let parsed: IResult<&[u8], _> =
        (take_while1(is_digit), tag("."), take_while1(is_digit)).parse(i);
    let (rest, (major, _, minor)) = parsed.map_err(|_| HandshakeError::BadVersion)?;
    let major = small_decimal(major).ok_or(HandshakeError::BadVersion)?;
    let minor = small_decimal(minor).ok_or(HandshakeError::BadVersion)?;
    // "0.6x" or "0.6.1" is not a version.
    if rest.first().is_some_and(|&b| !is_ws(b)) {
        return Err(HandshakeError::BadVersion);
    }
    Ok((rest, major, minor))
}

fn small_decimal(digits: &[u8]) -> Option<u8> {
    if digits.is_empty() || digits.len() > 3 {
        return None;
    }
    let v = digits
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    u8::try_from(v).ok()
}

/// Parses a complete first line (line end already removed, control bytes already
/// rejected).
fn parse_start_line(line: &[u8]) -> Result<RawStart<'_>, HandshakeError> {
    let bad = |why| HandshakeError::BadStartLine { why };
    let proto: IResult<&[u8], &[u8]> = tag(PROTOCOL).parse(line);
    let (after, _) = proto.map_err(|_| bad("does not start with GNUTELLA"))?;

    let connect: IResult<&[u8], &[u8]> = tag(" CONNECT/").parse(after);
    if let Ok((rest, _)) = connect {
        let (rest, major, minor) = version(rest)?;
        if !rest.iter().all(|&b| is_ws(b)) {
            return Err(bad("text after the version"));
        }
        return Ok(RawStart::Connect(major, minor));
    }

    let slash: IResult<&[u8], &[u8]> = tag("/").parse(after);
    if let Ok((rest, _)) = slash {
        let (rest, major, minor) = version(rest)?;
        let sep: IResult<&[u8], &[u8]> = space1(rest);
        let (rest, _) = sep.map_err(|_| HandshakeError::BadStatusCode)?;
        let code: IResult<&[u8], &[u8]> = take_while_m_n(3, 3, is_digit).parse(rest);
        let (rest, code) = code.map_err(|_| HandshakeError::BadStatusCode)?;
        if rest.first().is_some_and(|&b| !is_ws(b)) {
            return Err(HandshakeError::BadStatusCode);
        }
        let code = code
            .iter()
            .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
        return Ok(RawStart::Status(major, minor, code, trim_ws(rest)));
    }

    if after.strip_prefix(b" OK").is_some_and(all_ws) {
        return Ok(RawStart::Ok04);
    }
    Err(bad("expected CONNECT/, a status or OK after GNUTELLA"))
}

// ---------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------

/// The header fields of a block, in the order received, names in their original case.
///
/// Look-ups compare names case-insensitively. When a name occurs several times,
/// [`Headers::get`] returns the first value; [`Headers::get_all`] and
/// [`Headers::get_joined`] (values joined with `", "`, as HTTP defines it) see them all.
/// Values are stored trimmed of SP and HT, as parsing would produce them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Number of fields (a repeated name counts each time).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next()
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of `name` joined with `", "` (borrowed when there is only one).
    pub fn get_joined(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut values = self.get_all(name);
        let first = values.next()?;
        let mut joined: Option<String> = None;
        for v in values {
            let s = joined.get_or_insert_with(|| first.to_owned());
            s.push_str(", ");
            s.push_str(v);
        }
        Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
    }

    /// The first value of `name` read as a boolean: `true` / `false` in any case.
    /// `None` if absent or anything else.
    pub fn get_bool(&self, name: &str) -> Option<bool> {
        let v = self.get(name)?;
        if v.eq_ignore_ascii_case("true") {
            Some(true)
        } else if v.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any value of `name`, read as a comma-separated list, holds `token`
    /// (compared case-insensitively), e.g. `list_contains(ACCEPT_ENCODING, DEFLATE)`.
    pub fn list_contains(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|v| {
            v.split(',')
                .any(|t| trim_ws_str(t).eq_ignore_ascii_case(token))
        })
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Appends a field, keeping any earlier field of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.fields.push((name.into(), trimmed(value.into())));
    }

    /// Sets `name` to `value`: replaces the first field of that name (keeping its
    /// position, but taking the new name's case) and removes the others, or appends.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = trimmed(value.into());
        match self
            .fields
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
        {
            Some(i) => {
                let mut seen = 0usize;
                self.fields.retain(|(n, _)| {
                    let same = n.eq_ignore_ascii_case(&name);
                    seen += usize::from(same);
                    !same || seen == 1
                });
                self.fields[i] = (name, value);
            }
            None => self.fields.push((name, value)),
        }
    }

    /// Removes every field named `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - self.fields.len()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        let mut h = Headers::new();
        h.extend(iter);
        h
    }
}

impl<N: Into<String>, V: Into<String>> Extend<(N, V)> for Headers {
    fn extend<T: IntoIterator<Item = (N, V)>>(&mut self, iter: T) {
        for (n, v) in iter {
            self.push(n, v);
        }
    }
}

fn trimmed(s: String) -> String {
    let t = trim_ws_str(&s);
    if t.len() == s.len() { s } else { t.to_owned() }
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn all_ws(s: &[u8]) -> bool {
    s.iter().all(|&b| is_ws(b))
}

/// Control bytes other than HT (CR and LF included) are never allowed inside a line.
fn is_forbidden(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_ws_str(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// One header line as found in the buffer.
enum RawLine<'a> {
    Field(&'a [u8], &'a [u8]),
    Continuation(&'a [u8]),
}

fn parse_header_line(line: &[u8], line_no: usize) -> Result<RawLine<'_>, HandshakeError> {
    let bad = |why| HandshakeError::BadHeader { line: line_no, why };
    if line.first().copied().is_some_and(is_ws) {
        return Ok(RawLine::Continuation(trim_ws(line)));
    }
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or(bad("no colon"))?;
    let name = trim_ws(&line[..colon]);
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if !name.iter().all(|&b| is_token_char(b)) {
        return Err(bad("invalid character in name"));
    }
    Ok(RawLine::Field(name, trim_ws(&line[colon + 1..])))
}

// ---------------------------------------------------------------------------------
// Blocks: incremental parsing
// ---------------------------------------------------------------------------------

/// One handshake step: a start line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The first line.
    pub start: StartLine,
    /// The header fields, in order.
    pub headers: Headers,
}

/// Parses one block from the start of `buf`.
///
/// * `Ok(None)`: no complete block yet, and nothing seen so far breaks a rule or a
///   limit; call again with more bytes (the same prefix plus what was read).
/// * `Ok(Some((block, consumed)))`: the block ended with an empty line at
///   `buf[consumed - 1]`. Bytes from `consumed` on (a compressed stream, the first
///   binary message) belong to the caller.
/// * `Err`: a limit was exceeded (a line longer than `max_line` is reported before
///   its end arrives; a buffer of `max_block` bytes without the end of the block is
///   too large) or the bytes are malformed. A first line that cannot begin with
///   `GNUTELLA` is refused on its first wrong byte.
///
/// Each call is O(min(buf.len(), max_block + max_line)).
pub fn parse_block(buf: &[u8], limits: &Limits) -> Result<Option<(Block, usize)>, HandshakeError> {
    let mut start = None;
    let mut fields: Vec<(&[u8], Vec<&[u8]>)> = Vec::new();
    // First pass validates without allocating; only a complete block is built.
    let Some(end) = walk(buf, limits, &mut |_| {}, &mut |_| {})? else {
        return Ok(None);
    };
    walk(
        &buf[..end],
        limits,
        &mut |s| start = Some(s),
        &mut |line| match line {
            RawLine::Field(n, v) => fields.push((n, vec![v])),
            RawLine::Continuation(c) => {
                if let Some((_, parts)) = fields.last_mut() {
                    parts.push(c);
                }
            }
        },
    )?;
    let start = start
        .ok_or(HandshakeError::BadStartLine { why: "missing" })?
        .into_owned();
    let mut headers = Headers::new();
    for (name, parts) in fields {
        let mut value = String::new();
        for part in parts.into_iter().filter(|p| !p.is_empty()) {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(&String::from_utf8_lossy(part));
        }
        headers
            .fields
            .push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok(Some((Block { start, headers }, end)))
}

/// Walks the lines of a block, checking every rule and limit; reports the start line
/// and header lines to the callbacks. Returns the block's length once its empty line
/// has been seen.
fn walk<'a>(
    buf: &'a [u8],
    limits: &Limits,
    on_start: &mut dyn FnMut(RawStart<'a>),
    on_line: &mut dyn FnMut(RawLine<'a>),
) -> Result<Option<usize>, HandshakeError> {
    // Refuse a foreign protocol on its first wrong byte.
    let n = buf.len().min(PROTOCOL.len());
    if buf[..n] != PROTOCOL[..n] {
        return Err(HandshakeError::BadStartLine {
            why: "does not start with GNUTELLA",
        });
    }
    let mut pos = 0usize;
    let mut line_no = 0usize;
    let mut headers = 0usize;
    loop {
        let rest = &buf[pos..];
        // Never look further than a maximal line, its CR and its LF.
        let window = &rest[..rest.len().min(limits.max_line.saturating_add(2))];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            let pending = window.len();
            let may_be_cr =
                pending == limits.max_line.saturating_add(1) && window.last() == Some(&b'\r');
            if pending > limits.max_line && !may_be_cr {
                return Err(HandshakeError::LineTooLong {
                    limit: limits.max_line,
                });
            }
            // A control byte is an error whatever follows (a final CR may start a CRLF).
            let body = window.strip_suffix(b"\r").unwrap_or(window);
            if body.iter().any(|&b| is_forbidden(b)) {
                return Err(control_char_error(line_no + 1));
            }
            if buf.len() >= limits.max_block {
                return Err(HandshakeError::BlockTooLarge {
                    limit: limits.max_block,
                });
            }
            return Ok(None);
        };
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > limits.max_line {
            return Err(HandshakeError::LineTooLong {
                limit: limits.max_line,
            });
        }
        pos += lf + 1;
        if pos > limits.max_block {
            return Err(HandshakeError::BlockTooLarge {
                limit: limits.max_block,
            });
        }
        line_no += 1;
        if line.iter().any(|&b| is_forbidden(b)) {
            return Err(control_char_error(line_no));
        }
        if line_no == 1 {
            on_start(parse_start_line(line)?);
            continue;
        }
        if line.is_empty() {
            return Ok(Some(pos));
        }
        let raw = parse_header_line(line, line_no)?;
        match raw {
            RawLine::Continuation(_) if headers == 0 => {
                return Err(HandshakeError::BadHeader {
                    line: line_no,
                    why: "continuation line before any header",
                });
            }
            RawLine::Continuation(_) => {}
            RawLine::Field(..) => {
                headers += 1;
                if headers > limits.max_headers {
                    return Err(HandshakeError::TooManyHeaders {
                        limit: limits.max_headers,
                    });
                }
            }
        }
        on_line(raw);
    }
}

fn control_char_error(line_no: usize) -> HandshakeError {
    if line_no == 1 {
        HandshakeError::BadStartLine {
            why: "control character",
        }
    } else {
        HandshakeError::BadHeader {
            line: line_no,
            why: "control character (or a CR not followed by LF)",
        }
    }
}

// ---------------------------------------------------------------------------------
// Blocks: constructors and encoding
// ---------------------------------------------------------------------------------

impl Block {
    /// Step 1 of a 0.6 handshake: `GNUTELLA CONNECT/0.6` with `headers`.
    pub fn connect_06(headers: Headers) -> Block {
        Block {
            start: StartLine::Connect { major: 0, minor: 6 },
            headers,
        }
    }

    /// Step 2 or 3 of a 0.6 handshake: `GNUTELLA/0.6 <code> <reason>` with `headers`.
    /// The reason is stored trimmed.
    pub fn response(code: u16, reason: impl Into<String>, headers: Headers) -> Block {
        Block {
            start: StartLine::Status {
                major: 0,
                minor: 6,
                code,
                reason: trimmed(reason.into()),
            },
            headers,
        }
    }

    /// The 0.4 connect line, `GNUTELLA CONNECT/0.4\n\n`.
    pub fn connect_04() -> Block {
        Block {
            start: StartLine::Connect { major: 0, minor: 4 },
            headers: Headers::new(),
        }
    }

    /// The 0.4 reply, `GNUTELLA OK\n\n`.
    pub fn ok_04() -> Block {
        Block {
            start: StartLine::Ok04,
            headers: Headers::new(),
        }
    }

    /// The block as bytes; see [`Block::encode_into`].
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        let mut out = BytesMut::new();
        self.encode_into(&mut out)?;
        Ok(out.to_vec())
    }

    /// Appends the block to `dst`.
    ///
    /// A 0.4 start line (`CONNECT/0.4` or `OK`) without headers is written in the exact
    /// 0.4 form, ending in LF LF; everything else uses CRLF and ends with CRLF CRLF.
    /// Refuses (writing nothing) a status code above 999, a header name that is not a
    /// non-empty token, and a reason or value holding a control character other than
    /// HT. The reason phrase and values are written trimmed of SP and HT. The block's
    /// length is not checked against any [`Limits`].
    pub fn encode_into(&self, dst: &mut BytesMut) -> Result<(), HandshakeError> {
        self.check_encodable()?;
        let start = self.start.to_string();
        if self.start.is_04_form() && self.headers.is_empty() {
            dst.reserve(start.len() + 2);
            dst.put_slice(start.as_bytes());
            dst.put_slice(b"\n\n");
            return Ok(());
        }
        let len = start.len()
            + 4
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        dst.reserve(len);
        dst.put_slice(start.as_bytes());
        dst.put_slice(b"\r\n");
        for (name, value) in self.headers.iter() {
            let value = trim_ws_str(value);
            dst.put_slice(name.as_bytes());
            dst.put_slice(b":");
            if !value.is_empty() {
                dst.put_slice(b" ");
                dst.put_slice(value.as_bytes());
            }
            dst.put_slice(b"\r\n");
        }
        dst.put_slice(b"\r\n");
        Ok(())
    }

    fn check_encodable(&self) -> Result<(), HandshakeError> {
        let refuse = |why| Err(HandshakeError::Unencodable { why });
        if let StartLine::Status { code, reason, .. } = &self.start {
            if *code > 999 {
                return refuse("status code above 999");
            }
            if reason.bytes().any(is_forbidden) {
                return refuse("control character in reason phrase");
            }
        }
        for (name, value) in self.headers.iter() {
            if name.is_empty() {
                return refuse("empty header name");
            }
            if !name.bytes().all(is_token_char) {
                return refuse("header name is not a token");
            }
            if value.bytes().any(is_forbidden) {
                return refuse("control character in header value");
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Address helpers
// ---------------------------------------------------------------------------------

/// Reads an `X-Try` / `X-Try-Ultrapeers` value: comma-separated `ip[:port]` entries
/// (IPv6 as `[addr]:port`, `[addr]`, or bare without port), port 6346 when omitted.
/// Anything after the address in an entry (Shareaza's ` 2004-12-18T23:47Z`) is
/// ignored. Entries that are not an address, or have port 0 or the unspecified
/// address, are skipped. At most [`MAX_TRY_ENTRIES`] addresses are returned.
pub fn parse_try_list(value: &str) -> Vec<SocketAddr> {
    value
        .split(',')
        .filter_map(|entry| {
            let token = trim_ws_str(entry).split([' ', '\t']).next()?;
            parse_host_port(token)
        })
        .take(MAX_TRY_ENTRIES)
        .collect()
}

/// Reads a `Listen-IP` / `X-My-Address` / `Node` value: `ip:port`, `[ipv6]:port`
/// (port 6346 if missing). Text after the address is ignored. `None` if it is not an
/// address, or is unusable (port 0, unspecified address).
pub fn parse_listen_ip(value: &str) -> Option<SocketAddr> {
    let token = trim_ws_str(value).split([' ', '\t', ',']).next()?;
    parse_host_port(token)
}

/// Reads a `Remote-IP` value: an IPv4 or IPv6 address (brackets and a port are
/// tolerated and ignored).
pub fn parse_remote_ip(value: &str) -> Option<IpAddr> {
    parse_listen_ip(value).map(|a| a.ip())
}

fn parse_host_port(token: &str) -> Option<SocketAddr> {
    let (ip, port): (IpAddr, &str) = if let Some(inner) = token.strip_prefix('[') {
        let (addr, after) = inner.split_once(']')?;
        let ip = addr.parse::<Ipv6Addr>().ok()?;
        match after {
            "" => (IpAddr::V6(ip), ""),
            _ => (IpAddr::V6(ip), after.strip_prefix(':')?),
        }
    } else if let Ok(ip) = token.parse::<Ipv6Addr>() {
        (IpAddr::V6(ip), "")
    } else {
        match token.split_once(':') {
            Some((addr, port)) => (IpAddr::V4(addr.parse::<Ipv4Addr>().ok()?), port),
            None => (IpAddr::V4(token.parse::<Ipv4Addr>().ok()?), ""),
        }
    };
    let port = if port.is_empty() && !token.ends_with(':') {
        DEFAULT_PORT
    } else {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        port.parse::<u16>().ok()?
    };
    if port == 0 || ip.is_unspecified() {
        return None;
    }
    Some(SocketAddr::new(ip, port))
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    fn parse(buf: &[u8]) -> Result<Option<(Block, usize)>, HandshakeError> {
        parse_block(buf, &Limits::default())
    }

    fn parse_done(buf: &[u8]) -> Block {
        let (block, used) = parse(buf).expect("valid").expect("complete");
        assert_eq!(used, buf.len());
        block
    }

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The three blocks of the LimeWire ultrapeer-to-ultrapeer sample (§5.3).
    fn limewire_blocks() -> [Block; 3] {
        let common = [
            (USER_AGENT, "LimeWire/4.10.9"),
            (X_LOCALE_PREF, "en"),
            (X_REQUERIES, "false"),
            (LISTEN_IP, "192.0.2.190:6346"),
            (REMOTE_IP, "192.0.2.99"),
            (ACCEPT_ENCODING, "deflate"),
            (X_ULTRAPEER, "True"),
            (X_DEGREE, "32"),
            (X_QUERY_ROUTING, "0.1"),
            (X_UP_QUERY_ROUTING, "0.1"),
            (X_DYNAMIC_QUERYING, "0.1"),
            (X_EXT_PROBES, "0.1"),
            (VENDOR_MESSAGE, "0.2"),
            (GGEP, "0.5"),
            (PONG_CACHING, "0.1"),
            (X_MAX_TTL, "3"),
            (X_GUESS, "0.1"),
        ];
        let connect = Block::connect_06(common.iter().copied().collect());
        let mut answer: Headers = common.iter().copied().collect();
        answer.insert(LISTEN_IP, "192.0.2.99:6348");
        answer.insert(REMOTE_IP, "192.0.2.190");
        answer.push(
            X_TRY_ULTRAPEERS,
            "198.51.100.1:6346,198.51.100.2:6348, 203.0.113.7",
        );
        answer.push(CONTENT_ENCODING, "deflate");
        answer.push(X_ULTRAPEER_NEEDED, "true");
        let server = Block::response(200, "OK", answer);
        let client = Block::response(
            200,
            "OK",
            [(CONTENT_ENCODING, "deflate")].into_iter().collect(),
        );
        [connect, server, client]
    }

    #[test]
    fn limewire_sample_exchange() {
        let [connect, server, client] = limewire_blocks();
        let c = connect.encode().unwrap();
        assert!(c.starts_with(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: LimeWire/4.10.9\r\n"));
        assert!(c.ends_with(b"X-Guess: 0.1\r\n\r\n"));
        let c = parse_done(&c);
        assert_eq!(c, connect);
        assert_eq!(c.start, StartLine::Connect { major: 0, minor: 6 });
        assert_eq!(c.headers.len(), 17);
        assert_eq!(c.headers.get_bool(X_ULTRAPEER), Some(true));
        assert_eq!(c.headers.get_bool(X_REQUERIES), Some(false));
        assert_eq!(c.headers.get(X_DEGREE), Some("32"));
        assert!(c.headers.list_contains(ACCEPT_ENCODING, DEFLATE));
        assert_eq!(
            parse_listen_ip(c.headers.get(LISTEN_IP).unwrap()),
            Some(sock("192.0.2.190:6346"))
        );

        let s = parse_done(&server.encode().unwrap());
        assert_eq!(s, server);
        assert!(s.start.is_success());
        assert_eq!(s.start.status_code(), Some(200));
        assert_eq!(s.headers.get_bool(X_ULTRAPEER_NEEDED), Some(true));
        assert_eq!(s.headers.get(CONTENT_ENCODING), Some("deflate"));
        assert_eq!(
            parse_try_list(s.headers.get(X_TRY_ULTRAPEERS).unwrap()),
            vec![
                sock("198.51.100.1:6346"),
                sock("198.51.100.2:6348"),
                sock("203.0.113.7:6346")
            ]
        );
        // insert() kept the header's position.
        assert_eq!(
            s.headers.iter().nth(3),
            Some((LISTEN_IP, "192.0.2.99:6348"))
        );

        let bytes = client.encode().unwrap();
        assert_eq!(
            bytes,
            b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n"
        );
        assert_eq!(parse_done(&bytes), client);
    }

    #[test]
    fn gnutella_04_lines_exact() {
        assert_eq!(
            Block::connect_04().encode().unwrap(),
            b"GNUTELLA CONNECT/0.4\n\n"
        );
        assert_eq!(Block::ok_04().encode().unwrap(), b"GNUTELLA OK\n\n");
        assert_eq!(parse_done(b"GNUTELLA CONNECT/0.4\n\n"), Block::connect_04());
        assert_eq!(parse_done(b"GNUTELLA OK\n\n"), Block::ok_04());
        assert_eq!(parse_done(b"GNUTELLA OK\r\n\r\n"), Block::ok_04());
        assert_eq!(
            parse_done(b"GNUTELLA CONNECT/0.4\r\n\r\n"),
            Block::connect_04()
        );
        assert!(Block::ok_04().start.is_success());
        // A 0.4 line with headers is written in the 0.6 style.
        let mut b = Block::connect_04();
        b.headers.push("A", "b");
        assert_eq!(b.encode().unwrap(), b"GNUTELLA CONNECT/0.4\r\nA: b\r\n\r\n");
        // Binary data after the 0.4 reply is left alone.
        let (block, used) = parse(b"GNUTELLA OK\n\n\x01\x02").unwrap().unwrap();
        assert_eq!((block, used), (Block::ok_04(), 13));
    }

    #[test]
    fn crlf_and_lf_line_ends() {
        let crlf =
            parse_done(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: X/1\r\nX-Ultrapeer: False\r\n\r\n");
        let lf = parse_done(b"GNUTELLA CONNECT/0.6\nUser-Agent: X/1\nX-Ultrapeer: False\n\n");
        let mixed =
            parse_done(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: X/1\nX-Ultrapeer: False\r\n\n");
        assert_eq!(crlf, lf);
        assert_eq!(crlf, mixed);
        assert_eq!(crlf.headers.get_bool("x-ultrapeer"), Some(false));
    }

    #[test]
    fn continuation_lines_are_folded() {
        let b = parse_done(
            b"GNUTELLA/0.6 200 OK\r\nX-Try: 1.2.3.4:1,\r\n  5.6.7.8:2\r\n\t \r\nA:\r\n b \r\nZ: z\r\n\r\n",
        );
        assert_eq!(b.headers.get(X_TRY), Some("1.2.3.4:1, 5.6.7.8:2"));
        assert_eq!(b.headers.get("a"), Some("b"));
        assert_eq!(b.headers.len(), 3);
        assert_eq!(
            parse(b"GNUTELLA/0.6 200 OK\r\n continued\r\n\r\n"),
            Err(HandshakeError::BadHeader {
                line: 2,
                why: "continuation line before any header"
            })
        );
    }

    #[test]
    fn names_are_case_insensitive_and_repeats_join() {
        let b = parse_done(
            b"GNUTELLA CONNECT/0.6\r\nuser-agent: a\r\nX-ULTRAPEER: TRUE\r\nx-try: 1.1.1.1\r\nX-Try : 2.2.2.2:7\r\nEmpty:\r\n\r\n",
        );
        assert_eq!(b.headers.get(USER_AGENT), Some("a"));
        assert_eq!(b.headers.iter().next(), Some(("user-agent", "a")));
        assert_eq!(b.headers.get_bool(X_ULTRAPEER), Some(true));
        assert_eq!(b.headers.get(X_TRY), Some("1.1.1.1"));
        assert_eq!(b.headers.get_all(X_TRY).count(), 2);
        assert_eq!(b.headers.get_joined(X_TRY).unwrap(), "1.1.1.1, 2.2.2.2:7");
        assert_eq!(b.headers.get("empty"), Some(""));
        assert_eq!(b.headers.get_bool("empty"), None);
        assert_eq!(b.headers.get("missing"), None);
        let mut h = b.headers.clone();
        h.insert("X-TRY", " 3.3.3.3 ");
        assert_eq!(h.get_all(X_TRY).collect::<Vec<_>>(), ["3.3.3.3"]);
        assert_eq!(h.remove("x-try"), 1);
        assert!(!h.contains(X_TRY));
    }

    #[test]
    fn get_bool_forms() {
        let h: Headers = [("A", "True"), ("B", "false"), ("C", "FALSE"), ("D", "yes")]
            .into_iter()
            .collect();
        assert_eq!(h.get_bool("a"), Some(true));
        assert_eq!(h.get_bool("b"), Some(false));
        assert_eq!(h.get_bool("c"), Some(false));
        assert_eq!(h.get_bool("d"), None);
    }

    #[test]
    fn start_line_forms() {
        let p = |s: &[u8]| parse_done(s).start;
        assert_eq!(
            p(b"GNUTELLA CONNECT/0.7\r\n\r\n"),
            StartLine::Connect { major: 0, minor: 7 }
        );
        assert_eq!(
            p(b"GNUTELLA CONNECT/0.6 \r\n\r\n"),
            StartLine::Connect { major: 0, minor: 6 }
        );
        let status = |code, reason: &str| StartLine::Status {
            major: 0,
            minor: 6,
            code,
            reason: reason.into(),
        };
        assert_eq!(p(b"GNUTELLA/0.6 200\r\n\r\n"), status(200, ""));
        assert_eq!(p(b"GNUTELLA/0.6 200 \r\n\r\n"), status(200, ""));
        assert_eq!(
            p(b"GNUTELLA/0.6  503   Too many  connections \r\n\r\n"),
            status(503, "Too many  connections")
        );
        assert_eq!(
            p(b"GNUTELLA/0.6 409 D\xe9j\xe0 vu\r\n\r\n"),
            status(409, "D\u{fffd}j\u{fffd} vu")
        );
        assert_eq!(
            Block::response(503, "", Headers::new()).encode().unwrap(),
            b"GNUTELLA/0.6 503\r\n\r\n"
        );
        assert_eq!(
            p(b"GNUTELLA/1.0 200 OK\n\n"),
            StartLine::Status {
                major: 1,
                minor: 0,
                code: 200,
                reason: "OK".into()
            }
        );
    }

    #[test]
    fn malformed_start_lines() {
        let bad = |s: &[u8]| parse(s).unwrap_err();
        assert_eq!(
            bad(b"GNUTELLA/x.y 200 OK\r\n\r\n"),
            HandshakeError::BadVersion
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/99999.1\r\n\r\n"),
            HandshakeError::BadVersion
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.256\r\n\r\n"),
            HandshakeError::BadVersion
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.6.1\r\n\r\n"),
            HandshakeError::BadVersion
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/\r\n\r\n"),
            HandshakeError::BadVersion
        );
        assert_eq!(
            bad(b"GNUTELLA/0.6 abc\r\n\r\n"),
            HandshakeError::BadStatusCode
        );
        assert_eq!(
            bad(b"GNUTELLA/0.6 2000 OK\r\n\r\n"),
            HandshakeError::BadStatusCode
        );
        assert_eq!(
            bad(b"GNUTELLA/0.6 20 OK\r\n\r\n"),
            HandshakeError::BadStatusCode
        );
        assert_eq!(
            bad(b"GNUTELLA/0.6 200OK\r\n\r\n"),
            HandshakeError::BadStatusCode
        );
        assert_eq!(bad(b"GNUTELLA/0.6\r\n\r\n"), HandshakeError::BadStatusCode);
        for s in [
            &b"gnutella CONNECT/0.6\r\n\r\n"[..],
            b"GNUTELLA connect/0.6\r\n\r\n",
            b"GNUTELLA  CONNECT/0.6\r\n\r\n",
            b"GNUTELLA CONNECT/0.6 x\r\n\r\n",
            b"GNUTELLA OKAY\r\n\r\n",
            b"GNUTELLA\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GIV 0:0123456789ABCDEF0123456789ABCDEF/file\n\n",
            b"\r\nGNUTELLA OK\r\n\r\n",
            b"GNUTELLA OK\0\r\n\r\n",
            b"GNUTELLA CONNECT/0.6\rX\r\n\r\n",
        ] {
            assert!(
                matches!(bad(s), HandshakeError::BadStartLine { .. }),
                "{:?}",
                String::from_utf8_lossy(s)
            );
        }
        // Foreign protocols fail on their first byte, before any line end.
        assert!(parse(b"G").unwrap().is_none());
        assert!(matches!(
            parse(b"GE"),
            Err(HandshakeError::BadStartLine { .. })
        ));
    }

    #[test]
    fn malformed_headers() {
        let bad = |s: &[u8]| parse(s).unwrap_err();
        let hdr = |line, why| HandshakeError::BadHeader { line, why };
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.6\r\nA: b\r\nno colon here\r\n\r\n"),
            hdr(3, "no colon")
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.6\r\n: v\r\n\r\n"),
            hdr(2, "empty name")
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.6\r\nUser Agent: v\r\n\r\n"),
            hdr(2, "invalid character in name")
        );
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.6\r\nN\xc3\xa4me: v\r\n\r\n"),
            hdr(2, "invalid character in name")
        );
        assert!(matches!(
            bad(b"GNUTELLA CONNECT/0.6\r\nA: b\0c\r\n\r\n"),
            HandshakeError::BadHeader { line: 2, .. }
        ));
        assert!(matches!(
            bad(b"GNUTELLA CONNECT/0.6\r\nA: b\rc\r\n\r\n"),
            HandshakeError::BadHeader { line: 2, .. }
        ));
        // Control bytes are refused before their line ends.
        assert!(matches!(
            bad(b"GNUTELLA CONNECT/0.6\r\nA: \0"),
            HandshakeError::BadHeader { line: 2, .. }
        ));
        assert!(matches!(
            bad(b"GNUTELLA CONNECT/0.6\r\nA: \rb"),
            HandshakeError::BadHeader { line: 2, .. }
        ));
        assert_eq!(parse(b"GNUTELLA CONNECT/0.6\r\nA: b\r"), Ok(None));
        assert!(matches!(
            bad(b"GNUTELLA\x01"),
            HandshakeError::BadStartLine { .. }
        ));
        // Malformed lines are reported before the block is complete.
        assert_eq!(
            bad(b"GNUTELLA CONNECT/0.6\r\nbroken\r\n"),
            hdr(2, "no colon")
        );
        // Non-UTF-8 values are decoded lossily.
        let b = parse_done(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: caf\xe9 \xff\r\n\r\n");
        assert_eq!(b.headers.get(USER_AGENT), Some("caf\u{fffd} \u{fffd}"));
    }

    #[test]
    fn every_prefix_is_incomplete_then_the_same_block() {
        let mut bytes =
            b"GNUTELLA/0.6 200 OK\r\nX-Try: 1.2.3.4,\r\n 5.6.7.8\nA: b\r\n\r\n".to_vec();
        let len = bytes.len();
        let whole = parse_done(&bytes);
        let [connect, server, client] = limewire_blocks();
        for block in [connect, server, client, Block::connect_04(), Block::ok_04()] {
            let enc = block.encode().unwrap();
            for i in 0..enc.len() {
                assert_eq!(parse(&enc[..i]), Ok(None), "prefix {i}");
            }
            assert_eq!(parse_done(&enc), block);
        }
        for i in 0..len {
            assert_eq!(parse(&bytes[..i]), Ok(None));
        }
        bytes.extend_from_slice(b"\x78\x9c\x00binary\r\n\r\n");
        assert_eq!(parse(&bytes), Ok(Some((whole, len))));
    }

    #[test]
    fn line_limit_hits_before_the_line_end() {
        let limits = Limits::default();
        let mut buf = b"GNUTELLA CONNECT/0.6\r\nX: ".to_vec();
        let line_start = 22;
        buf.resize(line_start + limits.max_line, b'a');
        assert_eq!(parse(&buf), Ok(None));
        buf.push(b'\r');
        assert_eq!(parse(&buf), Ok(None));
        buf.extend_from_slice(b"\n\r\n");
        assert!(parse(&buf).unwrap().is_some());
        buf.truncate(line_start + limits.max_line);
        buf.push(b'a');
        assert_eq!(
            parse(&buf),
            Err(HandshakeError::LineTooLong {
                limit: limits.max_line
            })
        );
        // Also for the start line.
        let mut first = b"GNUTELLA/0.6 200 ".to_vec();
        first.resize(limits.max_line + 1, b'x');
        assert_eq!(
            parse(&first),
            Err(HandshakeError::LineTooLong {
                limit: limits.max_line
            })
        );
    }

    #[test]
    fn header_count_limit() {
        let limits = Limits::default();
        let block = |n: usize| {
            let mut b = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
            for i in 0..n {
                b.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
            }
            b
        };
        let mut ok = block(limits.max_headers);
        assert_eq!(parse(&ok), Ok(None));
        ok.extend_from_slice(b" folded\r\n\r\n");
        assert_eq!(parse_done(&ok).headers.len(), limits.max_headers);
        assert_eq!(
            parse(&block(limits.max_headers + 1)),
            Err(HandshakeError::TooManyHeaders {
                limit: limits.max_headers
            })
        );
    }

    #[test]
    fn block_size_limit() {
        let limits = Limits {
            max_line: 100,
            max_headers: 1000,
            max_block: 1000,
        };
        let mut b = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        while b.len() < 1000 {
            b.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        assert_eq!(
            parse_block(&b, &limits),
            Err(HandshakeError::BlockTooLarge { limit: 1000 })
        );
        // Exactly max_block bytes including the empty line is accepted.
        let mut exact = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        while exact.len() + 30 < 1000 {
            exact.extend_from_slice(b"X-Filler: 0123456789\r\n");
        }
        let pad = 1000 - exact.len() - 2 - 5;
        exact.extend_from_slice(b"P: ");
        exact.extend(std::iter::repeat_n(b'p', pad));
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), 1000);
        assert!(parse_block(&exact, &limits).unwrap().is_some());
        assert_eq!(parse_block(&exact[..999], &limits), Ok(None));
        // max_block bytes without the end: the block can only get longer.
        let mut over = exact[..996].to_vec();
        over.extend_from_slice(b"\r\nxy");
        assert_eq!(over.len(), 1000);
        assert_eq!(
            parse_block(&over, &limits),
            Err(HandshakeError::BlockTooLarge { limit: 1000 })
        );
        // One more header line pushes the end past max_block.
        let mut longer = exact[..996].to_vec();
        longer.extend_from_slice(b"\r\nQ: q\r\n\r\n");
        assert_eq!(
            parse_block(&longer, &limits),
            Err(HandshakeError::BlockTooLarge { limit: 1000 })
        );
    }

    #[test]
    fn dribbling_a_maximal_block_stays_cheap() {
        let limits = Limits::default();
        let mut block = Block::connect_06(Headers::new());
        for i in 0..limits.max_headers {
            block.headers.push(format!("X-Header-{i}"), "v".repeat(100));
        }
        let enc = block.encode().unwrap();
        assert!(enc.len() > limits.max_block - 1024 && enc.len() <= limits.max_block);
        let t = Instant::now();
        for i in 0..enc.len() {
            assert_eq!(parse(&enc[..i]), Ok(None));
        }
        assert_eq!(parse_done(&enc), block);
        // Generous bound for an unoptimised build on a shared machine.
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }

    #[test]
    fn a_megabyte_of_garbage_fails_fast() {
        let t = Instant::now();
        let garbage: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert!(parse(&garbage).is_err());
        let mut prefixed = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        prefixed.extend(std::iter::repeat_n(b'a', 1_000_000));
        assert!(matches!(
            parse(&prefixed),
            Err(HandshakeError::LineTooLong { .. })
        ));
        let mut lines = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        for _ in 0..100_000 {
            lines.extend_from_slice(b" x\r\n");
        }
        assert!(parse(&lines).is_err());
        let mut headers = b"GNUTELLA CONNECT/0.6\r\n".to_vec();
        for _ in 0..100_000 {
            headers.extend_from_slice(b"A:\n");
        }
        assert!(parse(&headers).is_err());
        assert!(t.elapsed().as_secs() < 2);
    }

    #[test]
    fn encoding_refuses_what_it_could_not_parse_back() {
        let refused = |name: &str, value: &str| {
            let h: Headers = [(name, value)].into_iter().collect();
            matches!(
                Block::connect_06(h).encode(),
                Err(HandshakeError::Unencodable { .. })
            )
        };
        assert!(refused("A", "b\r\nInjected: yes"));
        assert!(refused("A", "b\nc"));
        assert!(refused("A", "nul\0"));
        assert!(refused("A:B", "v"));
        assert!(refused("A B", "v"));
        assert!(refused("", "v"));
        assert!(refused("A\r\n", "v"));
        assert!(refused("Ä", "v"));
        assert!(!refused("A", "tab\tinside ünïcode"));
        let bad_reason = Block::response(200, "OK\r\nX: y", Headers::new());
        assert!(bad_reason.encode().is_err());
        let bad_code = Block::response(1000, "OK", Headers::new());
        assert!(bad_code.encode().is_err());
        let mut dst = BytesMut::from(&b"keep"[..]);
        assert!(bad_code.encode_into(&mut dst).is_err());
        assert_eq!(&dst[..], b"keep");
    }

    #[test]
    fn try_lists() {
        assert_eq!(
            parse_try_list("1.2.3.4:6347, 5.6.7.8,9.10.11.12:1"),
            vec![
                sock("1.2.3.4:6347"),
                sock("5.6.7.8:6346"),
                sock("9.10.11.12:1")
            ]
        );
        assert_eq!(
            parse_try_list(
                "81.1.2.3:6346 2004-12-18T23:47Z,82.4.5.6:6348 2004-12-18T23:40Z ,  83.7.8.9 2004-12-18T23:41Z"
            ),
            vec![
                sock("81.1.2.3:6346"),
                sock("82.4.5.6:6348"),
                sock("83.7.8.9:6346")
            ]
        );
        assert_eq!(
            parse_try_list(
                "junk, 1.2.3.4:port, 1.2.3.4:0, 0.0.0.0:6346, 300.1.1.1:1, host.example:6346, 1.2.3.4:70000, 1.2.3.4:, 1.2.3.4:+5, ,,, 10.0.0.1:7"
            ),
            vec![sock("10.0.0.1:7")]
        );
        assert_eq!(
            parse_try_list("[2001:db8::1]:6350, [2001:db8::2], 2001:db8::3"),
            vec![
                sock("[2001:db8::1]:6350"),
                sock("[2001:db8::2]:6346"),
                sock("[2001:db8::3]:6346")
            ]
        );
        assert!(parse_try_list("").is_empty());
        let long: String = (0..1000)
            .map(|i| format!("10.0.{}.{}:6346,", i / 250, i % 250 + 1))
            .collect();
        assert_eq!(parse_try_list(&long).len(), MAX_TRY_ENTRIES);
    }

    #[test]
    fn listen_and_remote_ip() {
        assert_eq!(
            parse_listen_ip("192.0.2.190:6347"),
            Some(sock("192.0.2.190:6347"))
        );
        assert_eq!(parse_listen_ip(" [::1]:6346 "), Some(sock("[::1]:6346")));
        assert_eq!(
            parse_listen_ip("[2001:db8::7]:6348"),
            Some(sock("[2001:db8::7]:6348"))
        );
        assert_eq!(
            parse_listen_ip("192.0.2.190"),
            Some(sock("192.0.2.190:6346"))
        );
        assert_eq!(parse_listen_ip("[::1"), None);
        assert_eq!(parse_listen_ip("[::1]6346"), None);
        assert_eq!(parse_listen_ip("0.0.0.0:6346"), None);
        assert_eq!(parse_listen_ip("nonsense"), None);
        assert_eq!(
            parse_remote_ip("192.0.2.99"),
            Some("192.0.2.99".parse().unwrap())
        );
        assert_eq!(
            parse_remote_ip("[2001:db8::9]"),
            Some("2001:db8::9".parse().unwrap())
        );
    }

    // ----- property tests -----

    const TCHARS: &str =
        "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

    fn name_strategy() -> impl Strategy<Value = String> {
        proptest::collection::vec(proptest::sample::select(TCHARS.as_bytes().to_vec()), 1..24)
            .prop_map(|v| String::from_utf8(v).unwrap())
    }

    /// Text without control characters (except HT), trimmed of SP/HT.
    fn text_strategy() -> impl Strategy<Value = String> {
        "[^\\x00-\\x08\\x0a-\\x1f\\x7f]{0,40}".prop_map(|s| trim_ws_str(&s).to_owned())
    }

    fn start_strategy() -> impl Strategy<Value = StartLine> {
        prop_oneof![
            (any::<u8>(), any::<u8>())
                .prop_map(|(major, minor)| StartLine::Connect { major, minor }),
            (any::<u8>(), any::<u8>(), 0u16..=999, text_strategy()).prop_map(
                |(major, minor, code, reason)| StartLine::Status {
                    major,
                    minor,
                    code,
                    reason
                }
            ),
            Just(StartLine::Ok04),
            Just(StartLine::Connect { major: 0, minor: 4 }),
        ]
    }

    fn block_strategy() -> impl Strategy<Value = Block> {
        (
            start_strategy(),
            proptest::collection::vec((name_strategy(), text_strategy()), 0..20),
        )
            .prop_map(|(start, fields)| Block {
                start,
                headers: fields.into_iter().collect(),
            })
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity(block in block_strategy(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut enc = block.encode().unwrap();
            let len = enc.len();
            enc.extend_from_slice(&tail);
            let (parsed, used) = parse(&enc).unwrap().unwrap();
            prop_assert_eq!(used, len);
            prop_assert_eq!(parsed, block);
        }

        #[test]
        fn prefixes_are_incomplete(block in block_strategy()) {
            let enc = block.encode().unwrap();
            for i in 0..enc.len() {
                prop_assert_eq!(parse(&enc[..i]), Ok(None));
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
            let small = Limits { max_line: 16, max_headers: 2, max_block: 64 };
            let _ = parse_block(&bytes, &small);
            let _ = parse_block(&bytes, &Limits { max_line: 0, max_headers: 0, max_block: 0 });
        }

        #[test]
        fn prefixed_random_bytes_never_panic_and_reencode(
            first in prop_oneof![Just(&b"GNUTELLA CONNECT/"[..]), Just(&b"GNUTELLA/0.6 "[..]), Just(&b"GNUTELLA OK\n"[..])],
            bytes in proptest::collection::vec(prop_oneof![
                4 => proptest::sample::select(b"\r\n \t:.,0123456789aZ-".to_vec()),
                1 => any::<u8>(),
            ], 0..300),
        ) {
            let mut buf = first.to_vec();
            buf.extend_from_slice(&bytes);
            if let Ok(Some((block, used))) = parse(&buf) {
                prop_assert!(used <= buf.len());
                // Whatever we accept we can write back, and it reads back the same.
                let enc = block.encode().unwrap();
                let (again, n) = parse(&enc).unwrap().unwrap();
                prop_assert_eq!(n, enc.len());
                prop_assert_eq!(again, block);
            }
        }

        #[test]
        fn try_list_never_panics(s in "\\PC{0,200}") {
            prop_assert!(parse_try_list(&s).len() <= MAX_TRY_ENTRIES);
            let _ = parse_listen_ip(&s);
        }
    }
}
