//! The text formats of HTTP file transfer, as values: byte ranges, request targets,
//! `X-Alt` lists, `GIV` lines and `http://` URLs. No I/O.
//!
//! What each form means and which variants we accept is described in
//! `protocol-spec/http-transfer.md`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::fasttrack::hash::Fth;
use crate::wire::guid::Guid;
use crate::wire::huge::{Sha1Urn, UrnError};

/// The port assumed when an `X-Alt` entry has none.
pub const DEFAULT_GNUTELLA_PORT: u16 = 6346;

/// Longest `GIV` line (with its blank line) we read.
pub const MAX_GIV_LEN: usize = 4096;

/// One byte-range spec of a `Range` header, before the file size is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// `a-b`: bytes a to b inclusive.
    FromTo(u64, u64),
    /// `a-`: from a to the end.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

/// Why a `Range` header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed Range header")]
    Malformed,
}

/// What a request for a file of a known size gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range asked: the whole file, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Nothing of the file lies in the range, 416.
    Unsatisfiable,
}

/// A decimal number of up to 20 digits, saturating at `u64::MAX` (a last-byte
/// position past any file means "to the end").
fn number(s: &str) -> Result<u64, RangeError> {
    let s = s.trim_matches(|c| c == ' ' || c == '\t');
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    Ok(decimal(s.as_bytes()))
}

/// ASCII digits as a number, saturating at `u64::MAX`.
fn decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add((d - b'0') as u64)
    })
}

/// Parses a `Range` header value: `bytes=` and one or more specs separated by
/// commas. Every spec must be well formed; empty list elements are skipped.
pub fn parse_range(value: &str) -> Result<Vec<RangeSpec>, RangeError> {
    let mut out = Vec::new();
    each_range(value, |spec| out.push(spec))?;
    Ok(out)
}

/// Reads a `Range` header value as [`parse_range`] does, handing each spec to
/// `each` in order (an error can still come after some were handed over).
fn each_range(value: &str, mut each: impl FnMut(RangeSpec)) -> Result<(), RangeError> {
    let value = value.trim();
    let (unit, specs) = value.split_once('=').ok_or(RangeError::Malformed)?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Err(RangeError::Malformed);
    }
    let mut count = 0;
    for spec in specs.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        // A list longer than any client sends is refused rather than walked.
        if count == 64 {
            return Err(RangeError::Malformed);
        }
        let (a, b) = spec.split_once('-').ok_or(RangeError::Malformed)?;
        let parsed = match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, true) => return Err(RangeError::Malformed),
            (true, false) => RangeSpec::Suffix(number(b)?),
            (false, true) => RangeSpec::From(number(a)?),
            (false, false) => {
                let (a, b) = (number(a)?, number(b)?);
                if b < a {
                    return Err(RangeError::Malformed);
                }
                RangeSpec::FromTo(a, b)
            }
        };
        count += 1;
        each(parsed);
    }
    if count == 0 {
        return Err(RangeError::Malformed);
    }
    Ok(())
}

/// The form downloaders send, `bytes=a-b` or `bytes=a-` and nothing else,
/// read a byte at a time: what [`parse_range`] reads it as, or `None` for any
/// other value (spaces, another case, a list, a suffix, `b` below `a`), which
/// is left to it.
fn simple_range(value: &str) -> Option<RangeSpec> {
    let rest = value.as_bytes().strip_prefix(b"bytes=")?;
    let digits = |b: &[u8]| b.iter().take_while(|c| c.is_ascii_digit()).count();
    let a_len = digits(rest);
    if !(1..=20).contains(&a_len) || rest.get(a_len) != Some(&b'-') {
        return None;
    }
    let tail = &rest[a_len + 1..];
    let b_len = digits(tail);
    if b_len != tail.len() || b_len > 20 {
        return None;
    }
    let a = decimal(&rest[..a_len]);
    if b_len == 0 {
        return Some(RangeSpec::From(a));
    }
    let b = decimal(tail);
    (b >= a).then_some(RangeSpec::FromTo(a, b))
}

impl RangeSpec {
    /// The bytes of a file of `size` bytes this spec selects, if any.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        match self {
            RangeSpec::FromTo(a, b) if a < size => Some((a, b.min(size - 1))),
            RangeSpec::From(a) if a < size => Some((a, size - 1)),
            RangeSpec::Suffix(n) if n > 0 && size > 0 => Some((size - n.min(size), size - 1)),
            _ => None,
        }
    }
}

/// The answer to a request with `range` (the `Range` header, if any) for a file
/// of `size` bytes. Of several ranges only the first is answered.
pub fn answer_range(range: Option<&str>, size: u64) -> RangeAnswer {
    // A Range that cannot be read is ignored, as RFC 9110 (14.2) says: the
    // answer is the whole file.
    if let Some(spec) = range.and_then(simple_range) {
        return match spec.resolve(size) {
            Some((start, end)) => RangeAnswer::Part { start, end },
            None => RangeAnswer::Unsatisfiable,
        };
    }
    // Every spec is read (one malformed spoils the header), the first kept.
    let mut first = None;
    let read = range.is_some_and(|v| {
        each_range(v, |spec| {
            first.get_or_insert(spec);
        })
        .is_ok()
    });
    let (true, Some(first)) = (read, first) else {
        return RangeAnswer::Whole;
    };
    match first.resolve(size) {
        Some((start, end)) => RangeAnswer::Part { start, end },
        None => RangeAnswer::Unsatisfiable,
    }
}

/// A `Content-Range` value as a client reads it: `bytes a-b/size` (size may be
/// `*`, which we do not accept for a 206).
pub fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (number(a).ok()?, number(b).ok()?, number(total).ok()?);
    (a <= b && b < total).then_some((a, b, total))
}

/// What a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/get/<index>/<name>`: the name as decoded, to be checked against the index.
    Index { index: u32, name: String },
    /// `/uri-res/N2R?urn:sha1:<base32>`.
    Urn(Sha1Urn),
    /// `/.hash=<40 hex>`: a FastTrack download by FTH.
    Fth(Fth),
    /// `/<file id>/<name>`: the older FastTrack form, a file id (the FTH's
    /// 14-bit checksum, in decimal) and the exact file name.
    FileId { id: u16, name: String },
}

impl Target {
    /// Whether a FastTrack client asks (the answer carries its headers).
    pub fn is_fasttrack(&self) -> bool {
        matches!(self, Target::Fth(_) | Target::FileId { .. })
    }
}

/// Whether a request path is in one of FastTrack's forms (`/.hash=...` or
/// `/<digits>/...`), whether or not it reads as a valid target: its refusals
/// are worded for a FastTrack client too.
pub fn is_fasttrack_path(path: &str) -> bool {
    path.starts_with("/.hash=")
        || path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

/// Why a request target was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a path we serve (answered 404).
    #[error("no such resource")]
    NotFound,
    /// A path we serve, written wrongly or trying to leave the share (400).
    #[error("bad request: {0}")]
    Bad(&'static str),
}

/// Decodes `%XX` escapes. Anything else is kept as it is; a `%` not followed by
/// two hexadecimal digits, or a result that is not UTF-8, is an error.
pub fn percent_decode(s: &str) -> Option<String> {
    percent_decoded(s).map(Cow::into_owned)
}

/// [`percent_decode`], borrowing `s` when it holds no escape.
fn percent_decoded(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Escapes everything but unreserved characters, for a name in a URL path.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether a decoded file name could name anything but one file in one directory:
/// empty, `.` or `..`, or holding a path separator or a control character.
pub fn is_unsafe_name(name: &str) -> bool {
    name.is_empty()
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control())
}

/// Reads a request target (`path` and `query` as they came, still escaped).
pub fn parse_target(path: &str, query: Option<&str>) -> Result<Target, TargetError> {
    if let Some(rest) = path.strip_prefix("/get/") {
        let (index, name) = rest
            .split_once('/')
            .ok_or(TargetError::Bad("no file name"))?;
        if index.is_empty() || index.len() > 10 || !index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TargetError::Bad("bad file index"));
        }
        let index: u32 = index
            .parse()
            .map_err(|_| TargetError::Bad("bad file index"))?;
        // Some clients add a trailing slash.
        let name = name.strip_suffix('/').unwrap_or(name);
        let name = percent_decode(name).ok_or(TargetError::Bad("bad escape in file name"))?;
        if is_unsafe_name(&name) {
            return Err(TargetError::Bad("file name is not a plain name"));
        }
        if index == 0 {
            return Err(TargetError::NotFound);
        }
        return Ok(Target::Index { index, name });
    }
    if let Some(hex) = path.strip_prefix("/.hash=") {
        return Fth::from_hex(hex.as_bytes())
            .map(Target::Fth)
            .map_err(|_| TargetError::Bad("bad FastTrack hash"));
    }
    if let Some((id, name)) = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .filter(|(id, _)| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    {
        if id.len() > 5 {
            return Err(TargetError::Bad("bad file id"));
        }
        let name = percent_decode(name).ok_or(TargetError::Bad("bad escape in file name"))?;
        if is_unsafe_name(&name) {
            return Err(TargetError::Bad("file name is not a plain name"));
        }
        // A file id is 14 bits: a larger number names nothing we share.
        let id: u16 = match id.parse() {
            Ok(i) if i <= 0x3FFF => i,
            _ => return Err(TargetError::NotFound),
        };
        return Ok(Target::FileId { id, name });
    }
    if path.eq_ignore_ascii_case("/uri-res/N2R") {
        let q = query.ok_or(TargetError::Bad("no URN"))?;
        let q = percent_decoded(q).ok_or(TargetError::Bad("bad escape in URN"))?;
        return Sha1Urn::parse(q.as_bytes())
            .map(Target::Urn)
            .map_err(|e: UrnError| match e {
                UrnError::NotSha1 => TargetError::Bad("not a SHA-1 URN"),
                UrnError::BadBase32 => TargetError::Bad("bad base32 in URN"),
            });
    }
    Err(TargetError::NotFound)
}

/// Reads an `X-Alt` value: comma-separated `a.b.c.d[:port]` and
/// `[ipv6]:port` entries (port 6346 when omitted), as gtk-gnutella writes them
/// (its IPv6-Ready specification brackets IPv6 addresses; a bare IPv6 address
/// is read as one with no port). Entries we cannot read (TLS markers, host
/// names) are skipped; at most `max` are returned. IPv4-mapped IPv6 addresses
/// are read as IPv4.
pub fn parse_x_alt(value: &str, max: usize) -> Vec<SocketAddr> {
    value
        .split(',')
        .filter_map(|e| alt_entry(e.trim()))
        .take(max)
        .collect()
}

fn alt_entry(e: &str) -> Option<SocketAddr> {
    let (ip, port): (IpAddr, &str) = if let Some(inner) = e.strip_prefix('[') {
        let (ip, after) = inner.split_once(']')?;
        let ip: Ipv6Addr = ip.parse().ok()?;
        match after {
            "" => (IpAddr::V6(ip), ""),
            _ => (
                IpAddr::V6(ip),
                after.strip_prefix(':').filter(|p| !p.is_empty())?,
            ),
        }
    } else if let Ok(ip) = e.parse::<Ipv6Addr>() {
        (IpAddr::V6(ip), "")
    } else {
        match e.split_once(':') {
            Some((ip, port)) => (IpAddr::V4(ip.parse::<Ipv4Addr>().ok()?), port),
            None => (IpAddr::V4(e.parse::<Ipv4Addr>().ok()?), ""),
        }
    };
    let port = match port {
        "" => DEFAULT_GNUTELLA_PORT,
        p => p.parse::<u16>().ok()?,
    };
    let ip = ip.to_canonical();
    (port != 0 && !ip.is_unspecified()).then_some(SocketAddr::new(ip, port))
}

/// Writes an `X-Alt` value: IPv4 entries, and IPv6 ones in brackets when
/// `with_v6` (the receiver said `IP/6.x` in `X-Features`; to others only IPv4
/// is given, as the IPv6-Ready specification asks). The port is left out
/// when it is 6346.
pub fn format_x_alt(addrs: &[SocketAddr], with_v6: bool) -> String {
    let mut out = String::new();
    for a in addrs {
        let ip = a.ip().to_canonical();
        if ip.is_ipv6() && !with_v6 {
            continue;
        }
        if !out.is_empty() {
            out.push(',');
        }
        match (ip, a.port()) {
            (IpAddr::V4(v4), DEFAULT_GNUTELLA_PORT) => out.push_str(&v4.to_string()),
            (ip, port) => out.push_str(&SocketAddr::new(ip, port).to_string()),
        }
    }
    out
}

/// Whether an `X-Features` value names the IPv6-Ready feature (`IP/6.0`:
/// IPv4 and IPv6; `IP/6.4`: IPv6 only): the sender reads IPv6 addresses in
/// headers.
pub fn features_ipv6(x_features: &str) -> bool {
    x_features.split(',').any(|f| {
        let f = f.trim();
        f.len() > 3 && f[..3].eq_ignore_ascii_case("IP/") && f[3..].starts_with('6')
    })
}

/// Our `IP` feature for `X-Features`: `IP/6.0` when we have both families,
/// `IP/6.4` with IPv6 alone.
pub fn ip_feature(has_v4: bool) -> &'static str {
    if has_v4 { "IP/6.0" } else { "IP/6.4" }
}

/// A `GIV` line: a pushed host offering file `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Giv {
    pub index: u32,
    pub servent: Guid,
    /// The name as sent; informative only.
    pub name: String,
}

impl Giv {
    /// `GIV <index>:<GUID hex>/<name>\n\n`.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "GIV {}:{}/{}\n\n",
            self.index,
            self.servent.to_hex(),
            percent_encode(&self.name)
        )
        .into_bytes()
    }

    /// Finds a whole GIV in `buf`: `Ok(None)` while the blank line has not come
    /// yet, else the GIV and the bytes it took. CRLF line ends are accepted.
    pub fn parse(buf: &[u8]) -> Result<Option<(Giv, usize)>, &'static str> {
        let end = match (
            memchr::memmem::find(buf, b"\n\n"),
            memchr::memmem::find(buf, b"\r\n\r\n"),
        ) {
            (Some(a), Some(b)) if b + 4 <= a + 2 => b + 4,
            (Some(a), _) => a + 2,
            (None, Some(b)) => b + 4,
            (None, None) if buf.len() >= MAX_GIV_LEN => return Err("GIV line too long"),
            (None, None) => return Ok(None),
        };
        if end > MAX_GIV_LEN {
            return Err("GIV line too long");
        }
        let line = std::str::from_utf8(&buf[..end]).map_err(|_| "GIV line is not UTF-8")?;
        let line = line.trim_end_matches(['\r', '\n']);
        let rest = line.strip_prefix("GIV ").ok_or("not a GIV line")?;
        let (index, rest) = rest.split_once(':').ok_or("GIV without ':'")?;
        let index = index.trim().parse().map_err(|_| "bad GIV index")?;
        let (hex, name) = rest.split_once('/').unwrap_or((rest, ""));
        let servent = Guid::from_hex(hex.trim()).ok_or("bad GIV servent GUID")?;
        Ok(Some((
            Giv {
                index,
                servent,
                name: percent_decode(name).unwrap_or_else(|| name.to_string()),
            },
            end,
        )))
    }
}

/// An `http://host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, as given (host may be a name).
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// The path and query, still escaped, as sent in the request line.
    pub target: String,
}

impl HttpUrl {
    /// Parses an `http://` URL (not `https`). The port defaults to 80.
    pub fn parse(s: &str) -> Option<HttpUrl> {
        let scheme_end = s.find("://")?;
        if !s[..scheme_end].eq_ignore_ascii_case("http") {
            return None;
        }
        let rest = &s[scheme_end + 3..];
        let (authority, target) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty()
            || authority.contains('@')
            || target.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => 80,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || port == 0 {
            return None;
        }
        Some(HttpUrl {
            authority: authority.to_string(),
            host,
            port,
            target: target.to_string(),
        })
    }

    /// The host and port to connect to, as `ToSocketAddrs` reads them: an
    /// IPv6 literal in brackets.
    pub fn dial_target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The address, when the host is an IP literal (not a name).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip.to_canonical(), self.port))
    }

    /// An `http://` URL for `addr` and `target` (an IPv6 address in
    /// brackets).
    pub fn for_addr(addr: SocketAddr, target: String) -> HttpUrl {
        let host = addr.ip().to_canonical();
        HttpUrl {
            authority: SocketAddr::new(host, addr.port()).to_string(),
            host: host.to_string(),
            port: addr.port(),
            target,
        }
    }

    /// The URN the URL names, if it is a `/uri-res/N2R?` URL.
    pub fn urn(&self) -> Option<Sha1Urn> {
        let (path, query) = match self.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (self.target.as_str(), None),
        };
        match parse_target(path, query) {
            Ok(Target::Urn(u)) => Some(u),
            _ => None,
        }
    }

    /// The file name the URL names, if it is a `/get/<index>/<name>` URL.
    pub fn file_name(&self) -> Option<String> {
        match parse_target(self.target.split('?').next().unwrap_or(""), None) {
            Ok(Target::Index { name, .. }) => Some(name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_as_a_table() {
        use RangeAnswer::*;
        let size = 1000;
        for (header, want) in [
            (None, Whole),
            (Some("bytes=0-499"), (Part { start: 0, end: 499 })),
            (
                Some("bytes=500-"),
                (Part {
                    start: 500,
                    end: 999,
                }),
            ),
            (
                Some("bytes=-100"),
                (Part {
                    start: 900,
                    end: 999,
                }),
            ),
            (Some("bytes=-5000"), (Part { start: 0, end: 999 })),
            (
                Some("bytes=990-5000"),
                (Part {
                    start: 990,
                    end: 999,
                }),
            ),
            (
                Some("bytes=999-999"),
                (Part {
                    start: 999,
                    end: 999,
                }),
            ),
            (Some("bytes=1000-"), Unsatisfiable),
            (Some("bytes=1000-2000"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("BYTES = 1-2 , 5-6"), (Part { start: 1, end: 2 })),
            (Some("bytes=0-99999999999999999999999"), Whole),
            (
                Some("bytes=0-18446744073709551616"),
                (Part { start: 0, end: 999 }),
            ),
            (Some("bytes=5-1"), Whole),
            (Some("bytes=-"), Whole),
            (Some("bytes="), Whole),
            (Some("items=0-1"), Whole),
            (Some("bytes=a-b"), Whole),
            (Some("bytes=+1-2"), Whole),
            (Some("0-1"), Whole),
        ] {
            assert_eq!(answer_range(header, size), want, "{header:?}");
        }
        assert_eq!(answer_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(answer_range(None, 0), Whole);
    }

    /// The quick reading of `bytes=a-b` says what the full reader says, for
    /// every value it takes, and takes the common ones.
    #[test]
    fn the_quick_range_reads_as_the_full_reader() {
        for v in [
            "bytes=0-65535",
            "bytes=7-",
            "bytes=0-0",
            "bytes=12345678901234567890-",
        ] {
            assert!(simple_range(v).is_some(), "{v}");
        }
        // Values from a small alphabet, all of them up to a length: every
        // one the quick reader takes, the full reader reads alike.
        let alphabet = b"bytes=09-, ";
        let mut taken = 0;
        let mut v = Vec::new();
        let mut check = |v: &[u8]| {
            let v = std::str::from_utf8(v).expect("ASCII");
            if let Some(spec) = simple_range(v) {
                taken += 1;
                assert_eq!(parse_range(v), Ok(vec![spec]), "{v}");
            }
        };
        for tail_len in 0..=6u32 {
            for n in 0..alphabet.len().pow(tail_len) {
                v.clear();
                v.extend_from_slice(b"bytes=");
                let mut k = n;
                for _ in 0..tail_len {
                    v.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                check(&v);
            }
        }
        for long in [
            "bytes=99999999999999999999-",
            "bytes=0-99999999999999999999",
            "bytes=0-999999999999999999999",
            "bytes=18446744073709551616-18446744073709551617",
        ] {
            check(long.as_bytes());
        }
        assert!(taken > 100, "{taken}");
    }

    #[test]
    fn content_range_for_clients() {
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, 10)));
        assert_eq!(parse_content_range("bytes 5-9/*"), None);
        assert_eq!(parse_content_range("bytes 5-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
    }

    #[test]
    fn targets_and_traversal() {
        let ok = |p: &str, q: Option<&str>| parse_target(p, q);
        assert_eq!(
            ok("/get/12/My%20Song.mp3", None),
            Ok(Target::Index {
                index: 12,
                name: "My Song.mp3".into()
            })
        );
        assert_eq!(
            ok("/get/12/a.txt/", None),
            Ok(Target::Index {
                index: 12,
                name: "a.txt".into()
            })
        );
        let abc = Sha1Urn::digest(b"abc");
        assert_eq!(
            ok(
                "/uri-res/N2R",
                Some("urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5")
            ),
            Ok(Target::Urn(abc))
        );
        assert_eq!(
            ok(
                "/uri-res/n2r",
                Some("urn%3Asha1%3AVGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5")
            ),
            Ok(Target::Urn(abc))
        );
        for (p, q) in [
            ("/get/1/..", None),
            ("/get/1/%2e%2e", None),
            ("/get/1/%2E%2E%2Fetc%2Fpasswd", None),
            ("/get/1/../../etc/passwd", None),
            ("/get/1/a%5cb", None),
            ("/get/1/a%00", None),
            ("/get/1/%zz", None),
            ("/get/1/%ff%fe", None),
            ("/get/x/a", None),
            ("/get/99999999999/a", None),
            ("/get/1", None),
            ("/get/1/", None),
            ("/uri-res/N2R", None),
            ("/uri-res/N2R", Some("urn:md5:AAAA")),
            ("/uri-res/N2R", Some("urn:sha1:AAAA")),
        ] {
            assert!(
                matches!(ok(p, q), Err(TargetError::Bad(_))),
                "{p} {q:?}: {:?}",
                ok(p, q)
            );
        }
        for p in ["/etc/passwd", "/", "/get/0/a", "//get/1/a", "/GET/1/a"] {
            assert_eq!(ok(p, None), Err(TargetError::NotFound), "{p}");
        }
    }

    #[test]
    fn fasttrack_targets() {
        let ok = |p: &str| parse_target(p, None);
        let fth = crate::fasttrack::hash::fth(b"abc");
        assert_eq!(ok(&fth.http_path()), Ok(Target::Fth(fth)));
        let upper = format!("/.hash={}", fth.hex().to_uppercase());
        assert_eq!(ok(&upper), Ok(Target::Fth(fth)));
        assert!(ok(&fth.http_path()).unwrap().is_fasttrack());
        assert_eq!(
            ok("/1418/file%20one.bin"),
            Ok(Target::FileId {
                id: 1418,
                name: "file one.bin".into()
            })
        );
        assert!(!ok("/get/1/a").unwrap().is_fasttrack());
        for p in ["/.hash=", "/.hash=zz", "/1/a", "/123456/..", "/1/"] {
            assert!(is_fasttrack_path(p), "{p}");
        }
        for p in [
            "/get/1/a",
            "/uri-res/N2R",
            "/",
            "/1",
            "//1/a",
            "/a1/b",
            "/.hash",
        ] {
            assert!(!is_fasttrack_path(p), "{p}");
        }
        for p in [
            "/.hash=",
            "/.hash=abc",
            "/.hash=8fc670eaf45c09b7b6783ba20f014efd0342f2f",
            "/.hash=8fc670eaf45c09b7b6783ba20f014efd0342f2f2a",
            "/.hash=zfc670eaf45c09b7b6783ba20f014efd0342f2f2",
            "/123456/a",
            "/1/..",
            "/1/a%2Fb",
            "/1/",
            "/1/%zz",
        ] {
            assert!(
                matches!(ok(p), Err(TargetError::Bad(_))),
                "{p}: {:?}",
                ok(p)
            );
        }
        for p in ["/16384/a", "/99999/a", "/.hash", "/a1/b", "/1"] {
            assert_eq!(ok(p), Err(TargetError::NotFound), "{p}");
        }
    }

    #[test]
    fn x_alt_round_trip() {
        let v = parse_x_alt(
            "1.2.3.4:5, 6.7.8.9 ,tls=F0, host:1, 0.0.0.0:5, 1.1.1.1:0",
            10,
        );
        assert_eq!(
            v,
            [
                "1.2.3.4:5".parse().unwrap(),
                "6.7.8.9:6346".parse().unwrap()
            ]
        );
        assert_eq!(format_x_alt(&v, false), "1.2.3.4:5,6.7.8.9");
        assert_eq!(parse_x_alt("1.2.3.4,1.2.3.5,1.2.3.6", 2).len(), 2);
    }

    #[test]
    fn x_alt_with_ipv6_entries() {
        // As the IPv6-Ready specification writes them, mixed with IPv4.
        let v = parse_x_alt(
            "[2001:3d4:12aa:200::5]:5400, 5.6.7.8:4600,[::1],2001:db8::9, [::ffff:1.2.3.4]:7, [::]:5, [::1]:, [::1]x, [zz::1]:5",
            10,
        );
        let want: Vec<SocketAddr> = [
            "[2001:3d4:12aa:200::5]:5400",
            "5.6.7.8:4600",
            "[::1]:6346",
            "[2001:db8::9]:6346",
            "1.2.3.4:7",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(v, want);
        assert_eq!(
            format_x_alt(&v, true),
            "[2001:3d4:12aa:200::5]:5400,5.6.7.8:4600,[::1]:6346,[2001:db8::9]:6346,1.2.3.4:7"
        );
        assert_eq!(format_x_alt(&v, false), "5.6.7.8:4600,1.2.3.4:7");
        assert_eq!(parse_x_alt(&format_x_alt(&v, true), 10), v);
        assert!(features_ipv6(
            "tls/1.0, browse/1.0, sflag/0.1, HSEP/0.2, IP/6.0"
        ));
        assert!(features_ipv6("ip/6.4"));
        assert!(!features_ipv6("sflag/0.1, HSEP/0.2"));
        assert!(!features_ipv6("IP/4.0, IPX/6.0"));
        assert_eq!(ip_feature(true), "IP/6.0");
        assert_eq!(ip_feature(false), "IP/6.4");
    }

    #[test]
    fn ipv6_urls_dial_in_brackets() {
        let u = HttpUrl::parse("http://[::1]:6346/uri-res/N2R?urn:sha1:X").unwrap();
        assert_eq!(u.dial_target(), "[::1]:6346");
        assert_eq!(u.socket_addr(), Some("[::1]:6346".parse().unwrap()));
        let back = HttpUrl::for_addr("[::1]:6346".parse().unwrap(), u.target.clone());
        assert_eq!(back, u);
        let four = HttpUrl::parse("http://127.0.0.1:80/").unwrap();
        assert_eq!(four.dial_target(), "127.0.0.1:80");
        let named = HttpUrl::parse("http://example.com/").unwrap();
        assert_eq!(named.socket_addr(), None);
        assert_eq!(named.dial_target(), "example.com:80");
        let mapped = HttpUrl::for_addr("[::ffff:1.2.3.4]:5".parse().unwrap(), "/".into());
        assert_eq!(mapped.authority, "1.2.3.4:5");
    }

    #[test]
    fn giv_lines() {
        let g = Giv {
            index: 7,
            servent: Guid([0xab; 16]),
            name: "a b.txt".into(),
        };
        let bytes = g.encode();
        assert_eq!(
            bytes,
            b"GIV 7:ABABABABABABABABABABABABABABABAB/a%20b.txt\n\n".to_vec()
        );
        let mut more = bytes.clone();
        more.extend_from_slice(b"extra");
        assert_eq!(Giv::parse(&more), Ok(Some((g.clone(), bytes.len()))));
        assert_eq!(Giv::parse(&bytes[..10]), Ok(None));
        let crlf = b"GIV 0:abababababababababababababababab/x\r\n\r\n";
        let (p, used) = Giv::parse(crlf).unwrap().unwrap();
        assert_eq!((p.index, p.servent, used), (0, g.servent, crlf.len()));
        assert!(Giv::parse(b"GET / HTTP/1.1\n\n").is_err());
        assert!(Giv::parse(b"GIV 1:zz/x\n\n").is_err());
        assert!(Giv::parse(&vec![b'a'; MAX_GIV_LEN]).is_err());
    }

    #[test]
    fn urls() {
        let u = HttpUrl::parse(
            "http://127.0.0.1:6346/uri-res/N2R?urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
        )
        .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 6346));
        assert_eq!(u.urn(), Some(Sha1Urn::digest(b"abc")));
        let g = HttpUrl::parse("HTTP://example.org/get/3/a%20b.txt").unwrap();
        assert_eq!((g.port, g.file_name()), (80, Some("a b.txt".into())));
        let v6 = HttpUrl::parse("http://[::1]:8080/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
        for bad in [
            "https://a/x",
            "http://",
            "http://a:0/",
            "http://a:x/",
            "ftp://a/",
            "http://u@a/",
        ] {
            assert!(HttpUrl::parse(bad).is_none(), "{bad}");
        }
    }
}
