//! HTTP host caches: the URLs that name them, the requests we send them and the
//! answers they give, as typed values with parsers and encoders (no I/O).
//!
//! Three dialects are spoken in the living network (`protocol-spec/bootstrap.md`):
//!
//! * gtk-gnutella's GHC (`GET /list4`) and LimeWire's configured bootstrap URL:
//!   a plain GET of the URL as it is; the body is `ip:port` lines (LimeWire
//!   takes the text before the first `,` of a line).
//! * GWebCache spec 1: `?hostfile=1`, `?urlfile=1`, `?ip=…&url=…`; bare
//!   `ip:port` or URL lines, `OK`, `ERROR…`, `PONG …`.
//! * GWebCache spec 2: `?get=1&net=gnutella`, `?update=1&ip=…&url=…`; lines
//!   `H|ip:port|age`, `U|url|age`, `I|…` (first letter in either case).
//!
//! One tolerant line parser reads all of them: CRLF or LF, junk lines counted and
//! skipped, at most [`MAX_LINES`] lines of at most [`MAX_LINE_LEN`] bytes.

use std::fmt;
use std::net::SocketAddr;

/// Lines of an answer read at most (gtk-gnutella parses 500).
pub const MAX_LINES: usize = 500;
/// Longest line read (gtk-gnutella's limit); longer ones are junk.
pub const MAX_LINE_LEN: usize = 256;
/// Longest cache URL taken (from the command line, an answer or an update).
pub const MAX_URL_LEN: usize = 200;
/// Longest request query string a cache takes.
pub const MAX_QUERY_LEN: usize = 1024;

/// How a cache is asked for hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A plain GET of the URL as given; the answer is host lines (gtk's GHC
    /// `/list4`, LimeWire's bootstrap URL).
    List,
    /// A GWebCache: parameters are added to the URL (spec 2, understood by
    /// spec-1 caches too).
    Gwc,
}

/// The URL of an HTTP host cache: `http://host[:port][/path][?query]`, given
/// as `list:URL` (or ending in `/list4`) for a [`Kind::List`] one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheUrl {
    pub kind: Kind,
    /// The name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The path and query, starting with `/`.
    pub target: String,
    /// Written with the `list:` prefix.
    explicit_list: bool,
}

/// Why a cache URL was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("only http:// URLs are supported")]
    Scheme,
    #[error("URL longer than {MAX_URL_LEN} bytes")]
    TooLong,
    #[error("no host in the URL")]
    NoHost,
    #[error("bad port in the URL")]
    Port,
    #[error("URL with a character that is not allowed")]
    Character,
}

impl CacheUrl {
    /// Parses `text`, a URL optionally prefixed by `list:`.
    pub fn parse(text: &str) -> Result<CacheUrl, UrlError> {
        let text = text.trim();
        if text.len() > MAX_URL_LEN + 5 {
            return Err(UrlError::TooLong);
        }
        let (explicit_list, url) = match text.strip_prefix("list:") {
            Some(u) => (true, u),
            None => (false, text),
        };
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        // Printable ASCII without space, quotes or angle brackets: the target
        // goes into a request line and an answer line as it is.
        if url
            .bytes()
            .any(|b| !(0x21..0x7f).contains(&b) || matches!(b, b'"' | b'<' | b'>' | b'\\' | b'|'))
        {
            return Err(UrlError::Character);
        }
        let rest = match url.get(..7) {
            Some(s) if s.eq_ignore_ascii_case("http://") => &url[7..],
            _ => return Err(UrlError::Scheme),
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let target = match target.find('#') {
            Some(i) => target[..i].to_string(),
            None => target,
        };
        if authority.contains('@') {
            return Err(UrlError::Character);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or(UrlError::NoHost)?;
            let host = &v6[..end];
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(UrlError::NoHost);
            }
            (host, &v6[end + 1..])
        } else {
            match authority.find(':') {
                Some(i) => (&authority[..i], &authority[i..]),
                None => (authority, ""),
            }
        };
        let port = match port {
            "" => 80,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or(UrlError::Port)?,
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
        {
            return Err(UrlError::NoHost);
        }
        let path = target.split('?').next().unwrap_or("");
        let kind = if explicit_list || path.ends_with("/list4") {
            Kind::List
        } else {
            Kind::Gwc
        };
        let url = CacheUrl {
            kind,
            host: host.to_ascii_lowercase(),
            port,
            target,
            explicit_list,
        };
        // As we write it (a `/` added, a default port dropped) too.
        if url.http().len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        Ok(url)
    }

    /// `host:port` as a socket address would be written (brackets for IPv6).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The value of a `Host` header.
    pub fn host_header(&self) -> String {
        match (self.host.contains(':'), self.port) {
            (true, 80) => format!("[{}]", self.host),
            (false, 80) => self.host.clone(),
            _ => self.authority(),
        }
    }

    /// The URL without the `list:` prefix.
    pub fn http(&self) -> String {
        let host = if self.port == 80 {
            self.host_header()
        } else {
            self.authority()
        };
        let target = if self.target == "/" {
            "/"
        } else {
            &self.target
        };
        format!("http://{host}{target}")
    }

    /// The request target for `query` (none: the URL's own target). A
    /// [`Kind::List`] cache is always asked with its own target.
    pub fn request_target(&self, query: Option<&Query>) -> String {
        match (self.kind, query) {
            (Kind::Gwc, Some(q)) => {
                let sep = if self.target.contains('?') { '&' } else { '?' };
                format!("{}{sep}{}", self.target, q.encode())
            }
            _ => self.target.clone(),
        }
    }
}

impl fmt::Display for CacheUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.explicit_list {
            f.write_str("list:")?;
        }
        f.write_str(&self.http())
    }
}

/// One understood line of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    /// `H|ip:port|age…` (spec 2).
    Host { addr: SocketAddr, age: Option<u32> },
    /// `U|url|age…` (spec 2).
    Url { url: String, age: Option<u32> },
    /// `I|…` (spec 2).
    Info(Info),
    /// A bare `ip:port` (spec 1, gtk's GHC; LimeWire's `ip:port,…`).
    BareHost(SocketAddr),
    /// A bare `http://` URL (spec 1 `urlfile`).
    BareUrl(String),
    /// `OK` (spec 1 update accepted).
    Ok,
    /// `WARNING…` (spec 1, after `OK`).
    Warning(String),
    /// `ERROR…` (either spec): the request failed.
    Error(String),
    /// `PONG …` (spec 1 `ping`).
    Pong(String),
}

/// An `I|` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Info {
    /// `I|pong|name version|networks`.
    Pong { name: String, networks: String },
    /// `I|update|OK`.
    UpdateOk,
    /// `I|update|WARNING|text` (`bad url`: drop the URL we sent).
    UpdateWarning(String),
    /// `I|access|period|seconds`: ask again no sooner.
    AccessPeriod(u32),
    /// `I|update|period|seconds`: update again no sooner.
    UpdatePeriod(u32),
    /// `I|force|remove`: forget this cache.
    ForceRemove,
    /// Any other `I|` line (its text after `I|`).
    Other(String),
}

/// An answer, as far as it was understood.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    pub lines: Vec<Line>,
    /// Lines that were not understood (skipped).
    pub junk: usize,
    /// The answer had more than [`MAX_LINES`] lines; the rest was not read.
    pub truncated: bool,
}

/// Parses one line (without its line end); none when it is junk. What it
/// accepts, [`encode_line`] writes back within [`MAX_LINE_LEN`].
pub fn parse_line(line: &str) -> Option<Line> {
    let parsed = read_line(line)?;
    let mut written = String::new();
    encode_line(&parsed, &mut written);
    (written.len() <= MAX_LINE_LEN + 1).then_some(parsed)
}

fn read_line(line: &str) -> Option<Line> {
    if line.len() > MAX_LINE_LEN {
        return None;
    }
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let b = line.as_bytes();
    if b.len() >= 2 && b[1] == b'|' {
        let mut fields = line[2..].split('|');
        let first = fields.next().unwrap_or("");
        let age = |f: Option<&str>| f.and_then(|a| a.trim().parse::<u32>().ok());
        return match b[0].to_ascii_lowercase() {
            b'h' => Some(Line::Host {
                addr: parse_addr(first)?,
                age: age(fields.next()),
            }),
            b'u' => {
                let url = first.trim();
                CacheUrl::parse(url).ok()?;
                Some(Line::Url {
                    url: url.to_string(),
                    age: age(fields.next()),
                })
            }
            b'i' => Some(Line::Info(parse_info(&line[2..]))),
            _ => None,
        };
    }
    let upper = |n: usize| line.get(..n).map(str::to_ascii_uppercase);
    if upper(5).as_deref() == Some("ERROR") {
        return Some(Line::Error(rest_of(&line[5..])));
    }
    if upper(7).as_deref() == Some("WARNING") {
        return Some(Line::Warning(rest_of(&line[7..])));
    }
    if line.eq_ignore_ascii_case("OK") {
        return Some(Line::Ok);
    }
    if upper(4).as_deref() == Some("PONG")
        && (line.len() == 4 || line[4..].starts_with([' ', '\t']))
    {
        return Some(Line::Pong(line[4..].trim().to_string()));
    }
    if upper(7).as_deref() == Some("HTTP://") {
        CacheUrl::parse(line).ok()?;
        return Some(Line::BareUrl(line.to_string()));
    }
    // LimeWire takes what comes before the first comma.
    let host = line.split(',').next().unwrap_or("");
    parse_addr(host).map(Line::BareHost)
}

/// The text after a keyword: leading colons and white space dropped (so the
/// text written back after `: ` reads the same).
fn rest_of(s: &str) -> String {
    s.trim_start_matches(|c: char| c == ':' || c.is_whitespace())
        .trim_end()
        .to_string()
}

/// `ip:port` (numeric; IPv6 in brackets).
fn parse_addr(s: &str) -> Option<SocketAddr> {
    s.trim().parse::<SocketAddr>().ok()
}

fn parse_info(text: &str) -> Info {
    let f: Vec<&str> = text.split('|').map(str::trim).collect();
    let is = |i: usize, w: &str| f.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    let number = |i: usize| f.get(i).and_then(|s| s.parse::<u32>().ok());
    if is(0, "pong") {
        return Info::Pong {
            name: f.get(1).unwrap_or(&"").to_string(),
            networks: f.get(2).unwrap_or(&"").to_string(),
        };
    }
    if is(0, "update") && is(1, "ok") && f.len() == 2 {
        return Info::UpdateOk;
    }
    if is(0, "update") && is(1, "warning") {
        return Info::UpdateWarning(f[2..].join("|"));
    }
    if is(0, "access") && is(1, "period") && f.len() == 3 {
        if let Some(n) = number(2) {
            return Info::AccessPeriod(n);
        }
    }
    if is(0, "update") && is(1, "period") && f.len() == 3 {
        if let Some(n) = number(2) {
            return Info::UpdatePeriod(n);
        }
    }
    if is(0, "force") && is(1, "remove") && f.len() == 2 {
        return Info::ForceRemove;
    }
    Info::Other(text.trim().to_string())
}

/// Parses an answer body. Lines end in LF or CRLF; at most [`MAX_LINES`] are
/// read.
pub fn parse_answer(body: &[u8]) -> Answer {
    let mut answer = Answer::default();
    for (seen, raw) in body.split(|&b| b == b'\n').enumerate() {
        if seen == MAX_LINES {
            // Only an empty piece after the last line end is no more line.
            answer.truncated = !raw.is_empty();
            break;
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match std::str::from_utf8(raw).ok().and_then(parse_line) {
            Some(l) => answer.lines.push(l),
            None => answer.junk += 1,
        }
    }
    answer
}

impl Answer {
    /// Every host named, with its age when given.
    pub fn hosts(&self) -> impl Iterator<Item = (SocketAddr, Option<u32>)> + '_ {
        self.lines.iter().filter_map(|l| match l {
            Line::Host { addr, age } => Some((*addr, *age)),
            Line::BareHost(a) => Some((*a, None)),
            _ => None,
        })
    }

    /// Every cache URL named.
    pub fn urls(&self) -> impl Iterator<Item = &str> + '_ {
        self.lines.iter().filter_map(|l| match l {
            Line::Url { url, .. } | Line::BareUrl(url) => Some(url.as_str()),
            _ => None,
        })
    }

    /// The first `ERROR` line's text, if any.
    pub fn error(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            Line::Error(e) => Some(e.as_str()),
            _ => None,
        })
    }

    /// The cache took our update (`OK` or `I|update|OK`).
    pub fn update_ok(&self) -> bool {
        self.error().is_none()
            && self
                .lines
                .iter()
                .any(|l| matches!(l, Line::Ok | Line::Info(Info::UpdateOk)))
    }

    /// A warning about our update, if any.
    pub fn warning(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| match l {
            Line::Warning(w) | Line::Info(Info::UpdateWarning(w)) => Some(w.as_str()),
            _ => None,
        })
    }

    /// The least time the cache wants between two of our requests.
    pub fn access_period(&self) -> Option<u32> {
        self.lines.iter().find_map(|l| match l {
            Line::Info(Info::AccessPeriod(s)) => Some(*s),
            _ => None,
        })
    }

    /// The least time the cache wants between two of our updates.
    pub fn update_period(&self) -> Option<u32> {
        self.lines.iter().find_map(|l| match l {
            Line::Info(Info::UpdatePeriod(s)) => Some(*s),
            _ => None,
        })
    }

    /// The cache asks to be forgotten.
    pub fn force_remove(&self) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l, Line::Info(Info::ForceRemove)))
    }

    /// Which dialect the answer is in: spec 2 as soon as one `H|`/`U|`/`I|`
    /// line is in it.
    pub fn spec2(&self) -> bool {
        self.lines
            .iter()
            .any(|l| matches!(l, Line::Host { .. } | Line::Url { .. } | Line::Info(_)))
    }

    /// The answer as text, one line each, LF-terminated.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            encode_line(l, &mut s);
        }
        s
    }
}

/// Appends `line` and its LF to `out`.
pub fn encode_line(line: &Line, out: &mut String) {
    use std::fmt::Write;
    let age = |a: &Option<u32>| a.map(|a| format!("|{a}")).unwrap_or_default();
    let _ = match line {
        Line::Host { addr, age: a } => writeln!(out, "H|{addr}{}", age(a)),
        Line::Url { url, age: a } => writeln!(out, "U|{url}{}", age(a)),
        Line::Info(i) => match i {
            Info::Pong { name, networks } => writeln!(out, "I|pong|{name}|{networks}"),
            Info::UpdateOk => writeln!(out, "I|update|OK"),
            Info::UpdateWarning(w) => writeln!(out, "I|update|WARNING|{w}"),
            Info::AccessPeriod(s) => writeln!(out, "I|access|period|{s}"),
            Info::UpdatePeriod(s) => writeln!(out, "I|update|period|{s}"),
            Info::ForceRemove => writeln!(out, "I|force|remove"),
            Info::Other(t) => writeln!(out, "I|{t}"),
        },
        Line::BareHost(a) => writeln!(out, "{a}"),
        Line::BareUrl(u) => writeln!(out, "{u}"),
        Line::Ok => writeln!(out, "OK"),
        Line::Warning(w) if w.is_empty() => writeln!(out, "WARNING"),
        Line::Warning(w) => writeln!(out, "WARNING: {w}"),
        Line::Error(e) if e.is_empty() => writeln!(out, "ERROR"),
        Line::Error(e) => writeln!(out, "ERROR: {e}"),
        Line::Pong(p) => writeln!(out, "PONG {p}"),
    };
}

/// The parameters of a GWebCache request (both specs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// `get=1` (spec 2: hosts and caches together).
    pub get: bool,
    /// `hostfile=1` (spec 1).
    pub hostfile: bool,
    /// `urlfile=1` (spec 1).
    pub urlfile: bool,
    /// `ping=1`.
    pub ping: bool,
    /// `update=1` (spec 2).
    pub update: bool,
    /// `statfile=1` (spec 1).
    pub statfile: bool,
    /// `ip=` (or the old `ip1=`): the updating host's `ip:port`, as sent.
    pub ip: Option<String>,
    /// `url=` (or `url1=`): a cache the updating host knows, decoded.
    pub url: Option<String>,
    /// `net=` (absent: gnutella).
    pub net: Option<String>,
    pub client: Option<String>,
    pub version: Option<String>,
}

/// Why a request's query string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("query string longer than {MAX_QUERY_LEN} bytes")]
    TooLong,
    #[error("bad percent-encoding in the query string")]
    Encoding,
}

impl Query {
    /// What we send to ask a cache for hosts and caches (spec 2; spec-1 caches
    /// read `hostfile=1` and `urlfile=1`).
    pub fn get(client: &str, version: &str) -> Query {
        Query {
            get: true,
            hostfile: true,
            urlfile: true,
            net: Some("gnutella".into()),
            client: Some(client.into()),
            version: Some(version.into()),
            ..Query::default()
        }
    }

    /// What we send to tell a cache our address (and another working cache).
    pub fn update(ip: SocketAddr, url: Option<&str>, client: &str, version: &str) -> Query {
        Query {
            update: true,
            ip: Some(ip.to_string()),
            url: url.map(str::to_string),
            net: Some("gnutella".into()),
            client: Some(client.into()),
            version: Some(version.into()),
            ..Query::default()
        }
    }

    /// Parses a query string (the part after `?`), ignoring parameters it does
    /// not know.
    pub fn parse(q: &str) -> Result<Query, QueryError> {
        if q.len() > MAX_QUERY_LEN {
            return Err(QueryError::TooLong);
        }
        let mut out = Query::default();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v)?;
            let flag = v == "1";
            match k.to_ascii_lowercase().as_str() {
                "get" => out.get = flag,
                "hostfile" => out.hostfile = flag,
                "urlfile" => out.urlfile = flag,
                "ping" => out.ping = flag,
                "update" => out.update = flag,
                "statfile" => out.statfile = flag,
                "ip" | "ip1" => out.ip = Some(v),
                "url" | "url1" => out.url = Some(v),
                "net" => out.net = Some(v),
                "client" => out.client = Some(v),
                "version" => out.version = Some(v),
                _ => {}
            }
        }
        Ok(out)
    }

    /// The query string, parameters in a fixed order, values encoded.
    pub fn encode(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for (on, name) in [
            (self.get, "get"),
            (self.hostfile, "hostfile"),
            (self.urlfile, "urlfile"),
            (self.ping, "ping"),
            (self.update, "update"),
            (self.statfile, "statfile"),
        ] {
            if on {
                parts.push(format!("{name}=1"));
            }
        }
        for (v, name) in [
            (&self.ip, "ip"),
            (&self.url, "url"),
            (&self.net, "net"),
            (&self.client, "client"),
            (&self.version, "version"),
        ] {
            if let Some(v) = v {
                parts.push(format!("{name}={}", encode(v)));
            }
        }
        parts.join("&")
    }

    /// The network asked for is Gnutella (or none was named).
    pub fn gnutella(&self) -> bool {
        self.net
            .as_deref()
            .is_none_or(|n| n.eq_ignore_ascii_case("gnutella"))
    }
}

/// Percent-decodes `s` (`+` is a space) into UTF-8 text.
fn decode(s: &str) -> Result<String, QueryError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or(QueryError::Encoding)?;
                let hex = std::str::from_utf8(hex).map_err(|_| QueryError::Encoding)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| QueryError::Encoding)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::Encoding)
}

/// Percent-encodes everything but the unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_both_kinds() {
        let u = CacheUrl::parse("http://ghc4.gtkgnutella.com/list4").unwrap();
        assert_eq!(u.kind, Kind::List);
        assert_eq!((u.host.as_str(), u.port), ("ghc4.gtkgnutella.com", 80));
        assert_eq!(u.request_target(Some(&Query::get("SRVT", "1"))), "/list4");
        assert_eq!(u.to_string(), "http://ghc4.gtkgnutella.com/list4");
        let u = CacheUrl::parse("list:http://127.0.0.1:8080/gwc.php").unwrap();
        assert_eq!(u.kind, Kind::List);
        assert_eq!(u.to_string(), "list:http://127.0.0.1:8080/gwc.php");
        assert_eq!(u.authority(), "127.0.0.1:8080");
        let u = CacheUrl::parse("http://cache.example.net:8080/skulls.php?x=1").unwrap();
        assert_eq!(u.kind, Kind::Gwc);
        assert_eq!(
            u.request_target(Some(&Query::get("SRVT", "0.1.0"))),
            "/skulls.php?x=1&get=1&hostfile=1&urlfile=1&net=gnutella&client=SRVT&version=0.1.0"
        );
        let u = CacheUrl::parse("HTTP://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.kind), ("::1", 9, Kind::Gwc));
        assert_eq!(u.to_string(), "http://[::1]:9/");
        assert_eq!(CacheUrl::parse("http://h").unwrap().target, "/");
        for bad in [
            "https://h/",
            "ftp://h/",
            "http:///x",
            "http://h:0/",
            "http://h:99999/",
            "http://u@h/",
            "http://h/a b",
            "http://[zz]/",
            "",
        ] {
            assert!(CacheUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            CacheUrl::parse(&format!("http://h/{}", "a".repeat(MAX_URL_LEN))),
            Err(UrlError::TooLong)
        );
    }

    #[test]
    fn every_dialect_and_junk() {
        let body = b"I|pong|Stub 0.1|gnutella\r\nh|11.0.0.1:19104|60\r\nH|[2001:db8::1]:6346\nU|http://c.example/g.php|3600|x\n\
            i|access|period|600\nI|update|period|3600\nI|update|WARNING|bad url\nI|force|remove\nI|something|else\n\
            11.0.0.3:6346\n11.0.0.5:6350,,1796246030665,,,en,0\nhttp://d.example/\nOK\nWARNING: You came back too early\n\
            PONG GWC 1.3.1\n\n   \nnonsense here\n1.2.3.4:70000\nX|y\n\xff\xfe\nERROR: Network not supported\n";
        let a = parse_answer(body);
        let hosts: Vec<_> = a.hosts().collect();
        assert_eq!(
            hosts,
            [
                ("11.0.0.1:19104".parse().unwrap(), Some(60)),
                ("[2001:db8::1]:6346".parse().unwrap(), None),
                ("11.0.0.3:6346".parse().unwrap(), None),
                ("11.0.0.5:6350".parse().unwrap(), None),
            ]
        );
        assert_eq!(
            a.urls().collect::<Vec<_>>(),
            ["http://c.example/g.php", "http://d.example/"]
        );
        assert_eq!(a.access_period(), Some(600));
        assert_eq!(a.update_period(), Some(3600));
        assert_eq!(a.warning(), Some("bad url"));
        assert!(a.force_remove() && a.spec2());
        assert_eq!(a.error(), Some("Network not supported"));
        assert!(!a.update_ok(), "an ERROR anywhere is a failure");
        assert_eq!(a.junk, 4);
        assert!(!a.truncated);
        assert!(a.lines.contains(&Line::Pong("GWC 1.3.1".into())));
        assert!(
            a.lines
                .contains(&Line::Info(Info::Other("something|else".into())))
        );
    }

    #[test]
    fn answers_are_bounded() {
        let mut body = String::new();
        for i in 0..MAX_LINES + 10 {
            body.push_str(&format!("10.0.{}.{}:6346\n", i / 250, i % 250 + 1));
        }
        let a = parse_answer(body.as_bytes());
        assert_eq!(a.hosts().count(), MAX_LINES);
        assert!(a.truncated);
        let long = format!("1.2.3.4:6346{}\n5.6.7.8:6346\n", " ".repeat(MAX_LINE_LEN));
        let a = parse_answer(long.as_bytes());
        assert_eq!(a.junk, 1);
        assert_eq!(a.hosts().count(), 1);
        // Exactly MAX_LINES lines, the last one LF-terminated: nothing cut.
        let exact: String = (0..MAX_LINES).map(|_| "1.2.3.4:1\n").collect();
        assert!(!parse_answer(exact.as_bytes()).truncated);
    }

    /// What the fuzz target checks, on inputs it found and their kin.
    #[test]
    fn answers_written_back_read_the_same() {
        let found: &[u8] =
            b"`\x1e\n\xd233EERupdateRRR\nERRoR\x0b:\n\n\x10\nERROR:\x0b :x\nWARNING\t::\x0c y\n\
            PONG \x0bx\nI|update|WARNING| a |b\nH| 1.2.3.4:5 |07\n";
        let a = parse_answer(found);
        let text = a.encode();
        let again = parse_answer(text.as_bytes());
        assert_eq!(again.lines, a.lines, "{text:?}");
        assert_eq!(again.junk, 0);
        assert_eq!(again.encode(), text);
        assert!(a.lines.contains(&Line::Error(String::new())));
        assert!(a.lines.contains(&Line::Error("x".into())));
        assert!(a.lines.contains(&Line::Warning("y".into())));
    }

    #[test]
    fn lines_round_trip() {
        let lines = vec![
            Line::Host {
                addr: "1.2.3.4:6346".parse().unwrap(),
                age: Some(5),
            },
            Line::Host {
                addr: "[::1]:1".parse().unwrap(),
                age: None,
            },
            Line::Url {
                url: "http://a.example/x.php".into(),
                age: Some(0),
            },
            Line::Info(Info::Pong {
                name: "servent 0.1.0".into(),
                networks: "gnutella".into(),
            }),
            Line::Info(Info::UpdateOk),
            Line::Info(Info::UpdateWarning("bad url".into())),
            Line::Info(Info::AccessPeriod(60)),
            Line::Info(Info::UpdatePeriod(3600)),
            Line::Info(Info::ForceRemove),
            Line::Info(Info::Other("nets|gnutella".into())),
            Line::BareHost("5.6.7.8:9".parse().unwrap()),
            Line::BareUrl("http://b.example/".into()),
            Line::Ok,
            Line::Warning("too early".into()),
            Line::Error(String::new()),
            Line::Error("no".into()),
            Line::Pong("servent 0.1.0".into()),
        ];
        let a = Answer {
            lines,
            junk: 0,
            truncated: false,
        };
        let text = a.encode();
        assert_eq!(parse_answer(text.as_bytes()), a);
        assert_eq!(parse_answer(text.as_bytes()).encode(), text);
    }

    #[test]
    fn queries_round_trip_and_decode() {
        let q = Query::update(
            "1.2.3.4:6346".parse().unwrap(),
            Some("http://c.example/a b?x=1&y=2"),
            "SRVT",
            "0.1.0",
        );
        let text = q.encode();
        assert_eq!(
            text,
            "update=1&ip=1.2.3.4%3A6346&url=http%3A%2F%2Fc.example%2Fa%20b%3Fx%3D1%26y%3D2&net=gnutella&client=SRVT&version=0.1.0"
        );
        assert_eq!(Query::parse(&text), Ok(q));
        let q =
            Query::parse("ip1=1.2.3.4:1&URL1=http://x/&hostfile=1&junk&client=GTKG1.2.3").unwrap();
        assert_eq!(q.ip.as_deref(), Some("1.2.3.4:1"));
        assert_eq!(q.url.as_deref(), Some("http://x/"));
        assert!(q.hostfile && !q.get && q.gnutella());
        assert!(!Query::parse("net=gnutella2").unwrap().gnutella());
        assert_eq!(Query::parse("url=%zz"), Err(QueryError::Encoding));
        assert_eq!(Query::parse("url=%ff"), Err(QueryError::Encoding));
        assert_eq!(Query::parse("url=%4"), Err(QueryError::Encoding));
        assert_eq!(
            Query::parse(&"a".repeat(MAX_QUERY_LEN + 1)),
            Err(QueryError::TooLong)
        );
    }
}
