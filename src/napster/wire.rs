//! Napster/OpenNap messages on the wire, no I/O: the frame codec, the field
//! tokenizer and line builder, the decimal IP form, and the search clause grammar.
//!
//! A frame is `len:u16le | type:u16le | data[len]`; the data is 8-bit text whose
//! fields are separated by one space, values with spaces in double quotes, with no
//! escaping. Text is kept as bytes end to end, so a file name in a client's own
//! 8-bit encoding comes back to it byte for byte.

use std::net::Ipv4Addr;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Message type numbers we read or write (decimal, as in the protocol documents).
pub mod types {
    pub const ERROR: u16 = 0;
    pub const LOGIN: u16 = 2;
    pub const LOGIN_ACK: u16 = 3;
    pub const VERSION_CHECK: u16 = 4;
    pub const NEW_USER_LOGIN: u16 = 6;
    pub const NICK_CHECK: u16 = 7;
    pub const NICK_FREE: u16 = 8;
    pub const NICK_REGISTERED: u16 = 9;
    pub const NICK_INVALID: u16 = 10;
    pub const SHARE: u16 = 100;
    pub const UNSHARE: u16 = 102;
    pub const UNSHARE_ALL: u16 = 110;
    pub const SEARCH: u16 = 200;
    pub const SEARCH_RESULT: u16 = 201;
    pub const SEARCH_END: u16 = 202;
    pub const DOWNLOAD: u16 = 203;
    pub const DOWNLOAD_ACK: u16 = 204;
    pub const PRIVATE_MESSAGE: u16 = 205;
    pub const GET_ERROR: u16 = 206;
    pub const SIGNOFF: u16 = 210;
    pub const BROWSE: u16 = 211;
    pub const BROWSE_RESULT: u16 = 212;
    pub const BROWSE_END: u16 = 213;
    pub const STATS: u16 = 214;
    pub const DOWNLOAD_START: u16 = 218;
    pub const DOWNLOAD_END: u16 = 219;
    pub const UPLOAD_START: u16 = 220;
    pub const UPLOAD_END: u16 = 221;
    pub const HOTLIST_ADD: u16 = 207;
    pub const HOTLIST_INIT: u16 = 208;
    pub const USER_SIGNON: u16 = 209;
    pub const RESUME_SEARCH: u16 = 215;
    pub const RESUME_RESULT: u16 = 216;
    pub const RESUME_END: u16 = 217;
    pub const DATA_PORT: u16 = 300;
    pub const HOTLIST_ACK: u16 = 301;
    pub const HOTLIST_ERROR: u16 = 302;
    pub const HOTLIST_REMOVE: u16 = 303;
    pub const JOIN: u16 = 400;
    pub const PART: u16 = 401;
    pub const PUBLIC: u16 = 402;
    pub const PUBLIC_MESSAGE: u16 = 403;
    pub const JOIN_ACK: u16 = 405;
    pub const JOINED: u16 = 406;
    pub const PARTED: u16 = 407;
    pub const CHANNEL_USER: u16 = 408;
    pub const CHANNEL_USER_END: u16 = 409;
    pub const TOPIC: u16 = 410;
    pub const LIST_CHANNELS: u16 = 617;
    pub const CHANNEL_LIST: u16 = 618;
    /// Every channel with its details (TekNap's `/list`): 828 per channel,
    /// then an empty 827.
    pub const FULL_CHANNEL_LIST: u16 = 827;
    pub const FULL_CHANNEL_INFO: u16 = 828;
    /// A channel's members (TekNap's `/names`): 825 per member, then an empty
    /// 830.
    pub const NAMES_LIST: u16 = 830;
    pub const NAMES_ENTRY: u16 = 825;
    pub const DISCONNECTING: u16 = 316;
    pub const NOSUCH: u16 = 404;
    pub const FIREWALL_DOWNLOAD: u16 = 500;
    pub const FIREWALL_UPLOAD: u16 = 501;
    pub const LINK_SPEED: u16 = 600;
    pub const LINK_SPEED_REPLY: u16 = 601;
    pub const WHOIS: u16 = 603;
    pub const WHOIS_REPLY: u16 = 604;
    pub const WHOWAS_REPLY: u16 = 605;
    pub const UPLOAD_REQUEST: u16 = 607;
    pub const UPLOAD_ACCEPT: u16 = 608;
    pub const UPLOAD_FAILED: u16 = 609;
    pub const MOTD: u16 = 621;
    pub const SERVER_PING: u16 = 750;
    pub const PING: u16 = 751;
    pub const BROWSE_DIRECT: u16 = 640;
    pub const BROWSE_DIRECT_OK: u16 = 641;
    pub const BROWSE_DIRECT_ERR: u16 = 642;
    pub const PONG: u16 = 752;
    pub const SHARE_DIR: u16 = 870;
    pub const SHARE_GENERIC: u16 = 10300;
    pub const QUIT: u16 = 10000;
    pub const SERVER_LOGIN: u16 = 10010;
    pub const SERVER_LOGIN_ACK: u16 = 10011;
    pub const SERVER_USER_SHARING: u16 = 10012;
    pub const REMOTE_SEARCH: u16 = 10015;
    pub const REMOTE_SEARCH_RESULT: u16 = 10016;
    pub const REMOTE_SEARCH_END: u16 = 10017;
    pub const ENCAPSULATED: u16 = 10018;
    pub const SET_LEVEL: u16 = 606;
    pub const KILL: u16 = 610;
    pub const BAN: u16 = 612;
    pub const UNBAN: u16 = 614;
    pub const BANLIST: u16 = 615;
    pub const BANLIST_ENTRY: u16 = 616;
    pub const MUZZLE: u16 = 622;
    pub const UNMUZZLE: u16 = 623;
    pub const WALLOP: u16 = 627;
    pub const ANNOUNCE: u16 = 628;
    pub const ALTER_PASSWORD: u16 = 753;
    pub const SERVER_VERSION: u16 = 801;
}

/// The largest frame data we accept unless configured otherwise. Well above the
/// longest real client message (an 870 of a crowded directory, which OpenNap caps
/// at 2048 bytes) and far below the 64 KiB a length field can claim.
pub const DEFAULT_MAX_FRAME: usize = 8192;

/// One message: its type and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub ty: u16,
    pub data: Bytes,
}

impl Frame {
    pub fn new(ty: u16, data: impl Into<Bytes>) -> Frame {
        Frame {
            ty,
            data: data.into(),
        }
    }

    /// A frame with no data.
    pub fn empty(ty: u16) -> Frame {
        Frame::new(ty, Bytes::new())
    }

    /// The data as text for logs and error messages (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Appends the frame's wire form to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        // Callers build data with `Line`, which never exceeds u16; clamp anyway so
        // the header cannot lie about the length.
        let len = self.data.len().min(u16::MAX as usize);
        out.reserve(4 + len);
        out.put_u16_le(len as u16);
        out.put_u16_le(self.ty);
        out.put_slice(&self.data[..len]);
    }
}

/// Why a byte stream could not be cut into frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message of type {ty} is {len} bytes long, more than the {max} allowed")]
    TooLong { ty: u16, len: usize, max: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The `tokio-util` codec for Napster frames, with a hard cap on the data length
/// checked before any of the data is buffered.
#[derive(Clone, Debug)]
pub struct NapCodec {
    max: usize,
}

impl NapCodec {
    pub fn new(max: usize) -> NapCodec {
        NapCodec { max }
    }
}

impl Default for NapCodec {
    fn default() -> NapCodec {
        NapCodec::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for NapCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u16::from_le_bytes([src[0], src[1]]) as usize;
        let ty = u16::from_le_bytes([src[2], src[3]]);
        if len > self.max {
            return Err(FrameError::TooLong {
                ty,
                len,
                max: self.max,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let data = src.split_to(len).freeze();
        Ok(Some(Frame { ty, data }))
    }
}

impl Encoder<Frame> for NapCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst);
        Ok(())
    }
}

/// The decimal form of an IPv4 address in Napster messages: the four
/// network-order bytes read as a little-endian u32.
pub fn ip_to_decimal(ip: Ipv4Addr) -> u32 {
    u32::from_le_bytes(ip.octets())
}

/// The address a Napster decimal IP stands for.
pub fn ip_from_decimal(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(n.to_le_bytes())
}

/// Reads the fields of a message's data: space-separated tokens, a token
/// starting with `"` running to the next `"`.
#[derive(Clone, Debug)]
pub struct Fields<'a> {
    rest: &'a [u8],
    bad: bool,
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a [u8]) -> Fields<'a> {
        Fields {
            rest: data,
            bad: false,
        }
    }

    fn skip_spaces(&mut self) {
        while let [b' ', tail @ ..] = self.rest {
            self.rest = tail;
        }
    }

    /// The next field, or `None` at the end (or after an unterminated quote, which
    /// [`Fields::is_bad`] then reports).
    pub fn next_field(&mut self) -> Option<&'a [u8]> {
        self.skip_spaces();
        if self.rest.is_empty() {
            return None;
        }
        if self.rest[0] == b'"' {
            let body = &self.rest[1..];
            match memchr::memchr(b'"', body) {
                Some(end) => {
                    self.rest = &body[end + 1..];
                    Some(&body[..end])
                }
                None => {
                    self.bad = true;
                    self.rest = &[];
                    None
                }
            }
        } else {
            let end = memchr::memchr(b' ', self.rest).unwrap_or(self.rest.len());
            let field = &self.rest[..end];
            self.rest = &self.rest[end..];
            Some(field)
        }
    }

    /// Everything after the next run of spaces, unparsed (the free text at the end
    /// of a private message).
    pub fn rest(&mut self) -> &'a [u8] {
        self.skip_spaces();
        std::mem::take(&mut self.rest)
    }

    /// Whether a quoted field was never closed.
    pub fn is_bad(&self) -> bool {
        self.bad
    }

    /// Exactly `N` fields and nothing after them.
    pub fn exactly<const N: usize>(data: &'a [u8]) -> Option<[&'a [u8]; N]> {
        let mut f = Fields::new(data);
        let mut out = [&[][..]; N];
        for slot in &mut out {
            *slot = f.next_field()?;
        }
        (f.next_field().is_none() && !f.is_bad()).then_some(out)
    }

    /// At least `N` fields; the ones after them are returned unparsed.
    pub fn at_least<const N: usize>(data: &'a [u8]) -> Option<([&'a [u8]; N], Fields<'a>)> {
        let mut f = Fields::new(data);
        let mut out = [&[][..]; N];
        for slot in &mut out {
            *slot = f.next_field()?;
        }
        Some((out, f))
    }
}

/// Parses a decimal field (ASCII digits only, no sign, no spaces).
pub fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// Whether `value` can be written as one field: no quote, and no space unless it
/// is quoted.
pub fn quotable(value: &[u8]) -> bool {
    !value.contains(&b'"') && !value.is_empty()
}

/// Builds a message's data field by field.
#[derive(Debug, Default)]
pub struct Line {
    buf: BytesMut,
}

impl Line {
    pub fn new() -> Line {
        Line::default()
    }

    fn sep(&mut self) {
        if !self.buf.is_empty() {
            self.buf.put_u8(b' ');
        }
    }

    /// A bare token (must not contain a space).
    pub fn word(mut self, w: impl AsRef<[u8]>) -> Line {
        self.sep();
        self.buf.put_slice(w.as_ref());
        self
    }

    /// A value in double quotes. A `"` inside cannot be written (the protocol has
    /// no escape); it is replaced by `'` so the message stays well-formed.
    pub fn quoted(mut self, w: impl AsRef<[u8]>) -> Line {
        self.sep();
        self.buf.put_u8(b'"');
        for &b in w.as_ref() {
            self.buf.put_u8(if b == b'"' { b'\'' } else { b });
        }
        self.buf.put_u8(b'"');
        self
    }

    /// A decimal number.
    pub fn num(self, n: impl std::fmt::Display) -> Line {
        self.word(n.to_string())
    }

    /// The finished data.
    pub fn build(self) -> Bytes {
        self.buf.freeze()
    }

    /// The finished frame.
    pub fn frame(self, ty: u16) -> Frame {
        Frame::new(ty, self.build())
    }
}

/// The content types of OpenNap's search and 10300 share messages. `Mp3` is what
/// a plain share (100) is and what a search without `TYPE` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Mp3 = 0,
    Audio = 1,
    Video = 2,
    Application = 3,
    Image = 4,
    Text = 5,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Mp3,
        Kind::Audio,
        Kind::Video,
        Kind::Application,
        Kind::Image,
        Kind::Text,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Mp3 => "mp3",
            Kind::Audio => "audio",
            Kind::Video => "video",
            Kind::Application => "application",
            Kind::Image => "image",
            Kind::Text => "text",
        }
    }

    /// Case-insensitive look-up by name.
    pub fn from_name(name: &[u8]) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name().as_bytes().eq_ignore_ascii_case(name))
    }

    pub fn from_u8(n: u8) -> Kind {
        Kind::ALL
            .get(n as usize)
            .copied()
            .unwrap_or(Kind::Application)
    }

    /// The type a file is shared as, from its extension.
    pub fn from_file_name(name: &str) -> Kind {
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "mp3" => Kind::Mp3,
            "wav" | "ogg" | "oga" | "opus" | "flac" | "wma" | "m4a" | "aac" | "aiff" | "mid"
            | "midi" | "mod" | "xm" | "it" | "s3m" => Kind::Audio,
            "avi" | "mpg" | "mpeg" | "mp4" | "m4v" | "mkv" | "mov" | "wmv" | "webm" | "ogv"
            | "flv" | "asf" => Kind::Video,
            "jpg" | "jpeg" | "png" | "gif" | "bmp" | "tif" | "tiff" | "webp" | "svg" => Kind::Image,
            "txt" | "text" | "nfo" | "html" | "htm" | "md" | "rtf" | "csv" | "xml" | "pdf"
            | "doc" | "tex" => Kind::Text,
            _ => Kind::Application,
        }
    }
}

/// An inclusive range a search clause puts on a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u32,
    pub max: u32,
}

impl Range {
    pub const ANY: Range = Range {
        min: 0,
        max: u32::MAX,
    };

    pub fn contains(self, v: u32) -> bool {
        self.min <= v && v <= self.max
    }
}

impl Default for Range {
    fn default() -> Range {
        Range::ANY
    }
}

/// An inclusive range on a file size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeRange {
    pub min: u64,
    pub max: u64,
}

impl SizeRange {
    pub const ANY: SizeRange = SizeRange {
        min: 0,
        max: u64::MAX,
    };

    pub fn contains(self, v: u64) -> bool {
        self.min <= v && v <= self.max
    }
}

impl Default for SizeRange {
    fn default() -> SizeRange {
        SizeRange::ANY
    }
}

/// Which content types a search accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindFilter {
    One(Kind),
    /// Our extension `TYPE any`: every content type.
    Any,
}

/// A search request (type 200), parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchRequest {
    /// The text of every `FILENAME CONTAINS` clause, in order; all are ANDed.
    /// A word written `-word` there is an exclusion (as OpenNap reads it) and
    /// is moved to `excludes`.
    pub contains: Vec<Vec<u8>>,
    /// The text of every `FILENAME EXCLUDES` clause: a file with any of these
    /// keywords is not a result.
    pub excludes: Vec<Vec<u8>>,
    /// `MAX_RESULTS`, before the server's cap.
    pub max_results: Option<u32>,
    pub linespeed: Range,
    pub bitrate: Range,
    pub freq: Range,
    /// `SIZE`, in bytes.
    pub size: SizeRange,
    /// `DURATION`, in seconds.
    pub duration: Range,
    pub kind: KindFilter,
    /// `LOCAL` / `LOCAL_ONLY` was given (meaningless on a single server).
    pub local: bool,
}

impl Default for SearchRequest {
    fn default() -> SearchRequest {
        SearchRequest {
            contains: Vec::new(),
            excludes: Vec::new(),
            max_results: None,
            linespeed: Range::ANY,
            bitrate: Range::ANY,
            freq: Range::ANY,
            size: SizeRange::ANY,
            duration: Range::ANY,
            kind: KindFilter::One(Kind::Mp3),
            local: false,
        }
    }
}

/// Why a search request was refused; the text is what the 404 says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("invalid search request")]
    Invalid,
    #[error("{0}: invalid comparison for search")]
    Comparison(String),
    #[error("{0}: invalid type for search")]
    Type(String),
}

/// Applies `"<cmp>" n` to a (min, max) range.
fn compare<T: Copy>(op: &[u8], n: T, (min, max): (T, T)) -> Result<(T, T), SearchError> {
    if op.eq_ignore_ascii_case(b"AT LEAST") {
        Ok((n, max))
    } else if op.eq_ignore_ascii_case(b"AT BEST") {
        Ok((min, n))
    } else if op.eq_ignore_ascii_case(b"EQUAL TO") {
        Ok((n, n))
    } else {
        Err(SearchError::Comparison(
            String::from_utf8_lossy(op).into_owned(),
        ))
    }
}

impl SearchRequest {
    /// Parses the clause grammar: `FILENAME CONTAINS|EXCLUDES "<words>"`
    /// (repeatable), `MAX_RESULTS <n>`,
    /// `LINESPEED|BITRATE|FREQ|SIZE|DURATION "<cmp>" <n>` with `AT LEAST`,
    /// `AT BEST` or `EQUAL TO`, `TYPE <type>`, `LOCAL`/`LOCAL_ONLY`. Keywords are
    /// case-insensitive; an unknown clause makes the whole search invalid.
    pub fn parse(data: &[u8]) -> Result<SearchRequest, SearchError> {
        let mut req = SearchRequest::default();
        let mut f = Fields::new(data);
        while let Some(word) = f.next_field() {
            let is = |k: &str| word.eq_ignore_ascii_case(k.as_bytes());
            if is("FILENAME") {
                let (Some(op), Some(text)) = (f.next_field(), f.next_field()) else {
                    return Err(SearchError::Invalid);
                };
                if op.eq_ignore_ascii_case(b"CONTAINS") {
                    let mut kept = Vec::new();
                    for w in text.split(|&c| c == b' ').filter(|w| !w.is_empty()) {
                        match w.strip_prefix(b"-") {
                            Some(x) if !x.is_empty() => req.excludes.push(x.to_vec()),
                            _ => {
                                if !kept.is_empty() {
                                    kept.push(b' ');
                                }
                                kept.extend_from_slice(w);
                            }
                        }
                    }
                    if !kept.is_empty() {
                        req.contains.push(kept);
                    }
                } else if op.eq_ignore_ascii_case(b"EXCLUDES") {
                    req.excludes.push(text.to_vec());
                } else {
                    return Err(SearchError::Invalid);
                }
            } else if is("MAX_RESULTS") {
                let n = f.next_field().and_then(number::<u32>);
                req.max_results = Some(n.ok_or(SearchError::Invalid)?);
            } else if is("TYPE") {
                let name = f.next_field().ok_or(SearchError::Invalid)?;
                req.kind = if name.eq_ignore_ascii_case(b"any") {
                    KindFilter::Any
                } else {
                    KindFilter::One(Kind::from_name(name).ok_or_else(|| {
                        SearchError::Type(String::from_utf8_lossy(name).into_owned())
                    })?)
                };
            } else if is("SIZE") {
                let (Some(op), Some(value)) = (f.next_field(), f.next_field()) else {
                    return Err(SearchError::Invalid);
                };
                let n = number::<u64>(value).ok_or(SearchError::Invalid)?;
                let (min, max) = compare(op, n, (req.size.min, req.size.max))?;
                req.size = SizeRange { min, max };
            } else if is("LINESPEED") || is("BITRATE") || is("FREQ") || is("DURATION") {
                let (Some(op), Some(value)) = (f.next_field(), f.next_field()) else {
                    return Err(SearchError::Invalid);
                };
                let n = number::<u32>(value).ok_or(SearchError::Invalid)?;
                let range = if is("LINESPEED") {
                    &mut req.linespeed
                } else if is("BITRATE") {
                    &mut req.bitrate
                } else if is("FREQ") {
                    &mut req.freq
                } else {
                    &mut req.duration
                };
                let (min, max) = compare(op, n, (range.min, range.max))?;
                *range = Range { min, max };
            } else if is("LOCAL") || is("LOCAL_ONLY") {
                req.local = true;
            } else {
                return Err(SearchError::Invalid);
            }
        }
        if f.is_bad() {
            return Err(SearchError::Invalid);
        }
        Ok(req)
    }

    /// The request as a 200 message's data (clauses in a fixed order).
    pub fn encode(&self) -> Bytes {
        let mut line = Line::new();
        for c in &self.contains {
            line = line.word("FILENAME CONTAINS").quoted(c);
        }
        for c in &self.excludes {
            line = line.word("FILENAME EXCLUDES").quoted(c);
        }
        if let Some(n) = self.max_results {
            line = line.word("MAX_RESULTS").num(n);
        }
        for (name, r) in [
            ("LINESPEED", self.linespeed),
            ("BITRATE", self.bitrate),
            ("FREQ", self.freq),
            ("DURATION", self.duration),
        ] {
            if r.min == r.max {
                line = line.word(name).quoted("EQUAL TO").quoted(r.min.to_string());
                continue;
            }
            if r.min > 0 {
                line = line.word(name).quoted("AT LEAST").quoted(r.min.to_string());
            }
            if r.max < u32::MAX {
                line = line.word(name).quoted("AT BEST").quoted(r.max.to_string());
            }
        }
        let s = self.size;
        if s.min == s.max {
            line = line
                .word("SIZE")
                .quoted("EQUAL TO")
                .quoted(s.min.to_string());
        } else {
            if s.min > 0 {
                line = line
                    .word("SIZE")
                    .quoted("AT LEAST")
                    .quoted(s.min.to_string());
            }
            if s.max < u64::MAX {
                line = line
                    .word("SIZE")
                    .quoted("AT BEST")
                    .quoted(s.max.to_string());
            }
        }
        match self.kind {
            KindFilter::One(Kind::Mp3) => {}
            KindFilter::One(k) => line = line.word("TYPE").word(k.name()),
            KindFilter::Any => line = line.word("TYPE").word("any"),
        }
        if self.local {
            line = line.word("LOCAL");
        }
        line.build()
    }
}

/// One search result (201) as a client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchResult {
    pub name: Vec<u8>,
    pub md5: Vec<u8>,
    pub size: u64,
    pub bitrate: u32,
    pub freq: u32,
    pub seconds: u32,
    pub nick: String,
    pub ip: Ipv4Addr,
    pub link: u8,
}

impl SearchResult {
    pub fn parse(data: &[u8]) -> Option<SearchResult> {
        let ([name, md5, size, bitrate, freq, seconds, nick, ip, link], _weight) =
            Fields::at_least::<9>(data)?;
        Some(SearchResult {
            name: name.to_vec(),
            md5: md5.to_vec(),
            size: number(size)?,
            bitrate: number(bitrate)?,
            freq: number(freq)?,
            seconds: number(seconds)?,
            nick: String::from_utf8(nick.to_vec()).ok()?,
            ip: ip_from_decimal(number(ip)?),
            link: number(link)?,
        })
    }

    pub fn encode(&self) -> Bytes {
        Line::new()
            .quoted(&self.name)
            .word(&self.md5)
            .num(self.size)
            .num(self.bitrate)
            .num(self.freq)
            .num(self.seconds)
            .word(&self.nick)
            .num(ip_to_decimal(self.ip))
            .num(self.link)
            .build()
    }
}

/// Where to fetch a file (204 to a downloader, 501 to a firewalled uploader):
/// `<nick> <ip> <port> "<filename>" <md5> <link-type>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFile {
    pub nick: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub name: Vec<u8>,
    pub md5: Vec<u8>,
    pub link: u8,
}

impl PeerFile {
    pub fn parse(data: &[u8]) -> Option<PeerFile> {
        let [nick, ip, port, name, md5, link] = Fields::exactly::<6>(data)?;
        Some(PeerFile {
            nick: String::from_utf8(nick.to_vec()).ok()?,
            ip: ip_from_decimal(number(ip)?),
            port: number(port)?,
            name: name.to_vec(),
            md5: md5.to_vec(),
            link: number(link)?,
        })
    }

    pub fn encode(&self) -> Bytes {
        Line::new()
            .word(&self.nick)
            .num(ip_to_decimal(self.ip))
            .num(self.port)
            .quoted(&self.name)
            .word(&self.md5)
            .num(self.link)
            .build()
    }

    /// OpenNap's answer when both sides are firewalled puts this in the md5 place.
    pub fn is_firewall_error(&self) -> bool {
        self.md5 == b"firewallerror"
    }
}

/// `<nick> "<filename>"` (203, 500, 607, 608, 206, 609).
pub fn nick_and_file(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let ([nick, file], _more) = Fields::at_least::<2>(data)?;
    Some((nick, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Frame>, FrameError> {
        let mut codec = NapCodec::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn framing_vectors() {
        // protocol-facts §8.1: the login example and an empty end-of-search.
        let login = b"foo badpass 6699 \"nap v0.8\" 3";
        assert_eq!(login.len(), 29);
        let mut wire = vec![0x1d, 0x00, 0x02, 0x00];
        wire.extend_from_slice(login);
        wire.extend_from_slice(&[0x00, 0x00, 0xca, 0x00]);
        let frames = decode_all(&wire, 100).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame::new(2, &login[..]));
        assert_eq!(frames[1], Frame::empty(202));
        let mut again = BytesMut::new();
        for f in &frames {
            f.encode(&mut again);
        }
        assert_eq!(&again[..], &wire[..]);
    }

    #[test]
    fn frames_arrive_in_pieces() {
        let mut wire = BytesMut::new();
        Frame::new(205, &b"bob hello there"[..]).encode(&mut wire);
        let mut codec = NapCodec::default();
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            let got = codec.decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == wire.len() - 1);
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        // A 64 KiB claim with only the header sent is refused at once.
        let err = decode_all(&[0xff, 0xff, 0xc8, 0x00], 8192).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLong {
                ty: 200,
                len: 65535,
                max: 8192
            }
        ));
        assert_eq!(decode_all(&[0x00, 0x20, 0x02, 0x00], 8192).unwrap(), vec![]);
    }

    #[test]
    fn ip_decimal_form() {
        // protocol-facts §8.2.
        let ip: Ipv4Addr = "192.0.2.10".parse().unwrap();
        assert_eq!(ip_to_decimal(ip), 167903424);
        assert_eq!(
            ip_from_decimal(3437166285),
            "205.254.222.204".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(ip_from_decimal(ip_to_decimal(ip)), ip);
    }

    #[test]
    fn fields_and_quotes() {
        let mut f = Fields::new(br#"nick  "a file.mp3" 12 "" rest of it"#);
        assert_eq!(f.next_field(), Some(&b"nick"[..]));
        assert_eq!(f.next_field(), Some(&b"a file.mp3"[..]));
        assert_eq!(f.next_field(), Some(&b"12"[..]));
        assert_eq!(f.next_field(), Some(&b""[..]));
        assert_eq!(f.rest(), b"rest of it");
        let mut f = Fields::new(br#"a "unterminated"#);
        assert_eq!(f.next_field(), Some(&b"a"[..]));
        assert_eq!(f.next_field(), None);
        assert!(f.is_bad());
        assert_eq!(Fields::exactly::<2>(b"a b"), Some([&b"a"[..], &b"b"[..]]));
        assert_eq!(Fields::exactly::<2>(b"a b c"), None);
        assert_eq!(Fields::exactly::<2>(b"a"), None);
        assert_eq!(number::<u16>(b"65535"), Some(65535));
        assert_eq!(number::<u16>(b"65536"), None);
        assert_eq!(number::<u32>(b"-1"), None);
        assert_eq!(number::<u32>(b""), None);
    }

    #[test]
    fn search_grammar() {
        let req = SearchRequest::parse(
            br#"FILENAME CONTAINS "Sneaker Pimps" MAX_RESULTS 75 FILENAME CONTAINS "tesko suicide" BITRATE "AT LEAST" "128""#,
        )
        .unwrap();
        assert_eq!(
            req.contains,
            vec![b"Sneaker Pimps".to_vec(), b"tesko suicide".to_vec()]
        );
        assert_eq!(req.max_results, Some(75));
        assert_eq!(
            req.bitrate,
            Range {
                min: 128,
                max: u32::MAX
            }
        );
        assert_eq!(req.kind, KindFilter::One(Kind::Mp3));

        let req = SearchRequest::parse(
            br#"filename contains "x" linespeed "at best" 4 FREQ "EQUAL TO" "44100" TYPE Video LOCAL_ONLY"#,
        )
        .unwrap();
        assert_eq!(req.linespeed, Range { min: 0, max: 4 });
        assert_eq!(
            req.freq,
            Range {
                min: 44100,
                max: 44100
            }
        );
        assert_eq!(req.kind, KindFilter::One(Kind::Video));
        assert!(req.local);
        assert_eq!(
            SearchRequest::parse(b"TYPE any").unwrap().kind,
            KindFilter::Any
        );

        for bad in [
            &b"FILENAME HAS \"x\""[..],
            b"FILENAME CONTAINS",
            b"MAX_RESULTS ten",
            b"BITRATE \"AT LEAST\"",
            b"BITRATE \"AT LEAST\" \"x\"",
            b"SORT BY size",
            b"FILENAME MATCHES \"x\"",
            b"SIZE \"AT LEAST\" \"-1\"",
            b"FILENAME CONTAINS \"open",
        ] {
            assert_eq!(
                SearchRequest::parse(bad),
                Err(SearchError::Invalid),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            SearchRequest::parse(b"BITRATE \"MORE THAN\" 1"),
            Err(SearchError::Comparison("MORE THAN".into()))
        );
        assert_eq!(
            SearchRequest::parse(b"TYPE sound"),
            Err(SearchError::Type("sound".into()))
        );
    }

    #[test]
    fn size_duration_and_excludes() {
        // OpenNap's clauses beyond the first document's.
        let req = SearchRequest::parse(
            br#"FILENAME CONTAINS "beatles -live help" FILENAME EXCLUDES "demo" SIZE "AT LEAST" "1000000" SIZE "AT BEST" "9000000000" DURATION "AT BEST" "240""#,
        )
        .unwrap();
        assert_eq!(req.contains, vec![b"beatles help".to_vec()]);
        assert_eq!(req.excludes, vec![b"live".to_vec(), b"demo".to_vec()]);
        assert_eq!(
            req.size,
            SizeRange {
                min: 1_000_000,
                max: 9_000_000_000
            }
        );
        assert_eq!(req.duration, Range { min: 0, max: 240 });
        assert_eq!(SearchRequest::parse(&req.encode()).unwrap(), req);
        // Only exclusions: no word to look for.
        let req = SearchRequest::parse(br#"FILENAME CONTAINS "-x""#).unwrap();
        assert!(req.contains.is_empty());
        assert_eq!(
            SearchRequest::parse(b"DURATION \"NEAR\" 3"),
            Err(SearchError::Comparison("NEAR".into()))
        );
    }

    #[test]
    fn search_encoding_round_trips() {
        let req = SearchRequest {
            contains: vec![b"a b".to_vec(), b"c".to_vec()],
            excludes: vec![b"live".to_vec()],
            max_results: Some(10),
            linespeed: Range { min: 3, max: 3 },
            bitrate: Range { min: 128, max: 320 },
            freq: Range { min: 0, max: 48000 },
            size: SizeRange {
                min: 1,
                max: 10_000_000_000,
            },
            duration: Range { min: 60, max: 60 },
            kind: KindFilter::Any,
            local: true,
        };
        assert_eq!(SearchRequest::parse(&req.encode()).unwrap(), req);
        let plain = SearchRequest {
            contains: vec![b"x".to_vec()],
            ..SearchRequest::default()
        };
        assert_eq!(&plain.encode()[..], b"FILENAME CONTAINS \"x\"");
    }

    #[test]
    fn result_and_peer_messages_round_trip() {
        let r = SearchResult {
            name: b"C:\\mp3\\a song.mp3".to_vec(),
            md5: b"0123456789abcdef0123456789abcdef".to_vec(),
            size: 5_000_000,
            bitrate: 128,
            freq: 44100,
            seconds: 300,
            nick: "lefty".into(),
            ip: "192.0.2.10".parse().unwrap(),
            link: 7,
        };
        assert_eq!(SearchResult::parse(&r.encode()), Some(r.clone()));
        // A trailing weight field is allowed.
        let mut with_weight = r.encode().to_vec();
        with_weight.extend_from_slice(b" 5");
        assert_eq!(SearchResult::parse(&with_weight), Some(r));
        let p = PeerFile {
            nick: "lefty".into(),
            ip: "10.0.0.1".parse().unwrap(),
            port: 6699,
            name: b"x y.mp3".to_vec(),
            md5: b"firewallerror".to_vec(),
            link: 0,
        };
        assert_eq!(PeerFile::parse(&p.encode()), Some(p.clone()));
        assert!(p.is_firewall_error());
        assert_eq!(
            nick_and_file(br#"bob "some file.txt""#),
            Some((&b"bob"[..], &b"some file.txt"[..]))
        );
        // A quote inside a value cannot be written; it becomes an apostrophe.
        assert_eq!(&Line::new().quoted("a\"b").build()[..], b"\"a'b\"");
    }
}
