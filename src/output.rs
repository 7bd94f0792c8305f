//! What servent prints for scripts and terminals, in one place so every command
//! (and the control API after them) shows the same record the same way.
//!
//! - JSON: one object per line, built by `serde` from the record types here and
//!   wrapped by [`json_line`] in `{"v":1,"type":"<kind>",...}`. `v` is
//!   [`VERSION`]; it is raised when a field is removed or changes meaning, and
//!   fields may be added within a version (readers ignore what they do not know).
//! - Tables and tab-separated lines: every text that came from the network goes
//!   through [`escape`] first, so a name cannot move the cursor, recolour the
//!   terminal or add a column.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The version of the JSON records' shapes, the `v` of every line.
pub const VERSION: u32 = 1;

/// A record printed as JSON: its kind is the `type` of its line.
pub trait Record: Serialize {
    /// The value of `type`.
    const TYPE: &'static str;
}

#[derive(Serialize)]
struct Envelope<'a, T> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    record: &'a T,
}

/// A record as one line of JSON (without the line end), `v` and `type` first.
pub fn json_line<T: Record>(record: &T) -> String {
    serde_json::to_string(&Envelope {
        v: VERSION,
        kind: T::TYPE,
        record,
    })
    .expect("records serialize")
}

/// A line read back: the version, the kind, and the record (for tests and clients).
#[derive(Debug, Deserialize)]
pub struct Versioned<T> {
    pub v: u32,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub record: T,
}

/// The network a hit came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    Gnutella,
    Napster,
}

/// One search result, from either network (`type` "hit"). The fields every hit
/// has come first; what only one network knows is under the key named by
/// `network`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub network: Network,
    /// The file's name as the responder gave it (control characters and all;
    /// JSON escapes them).
    pub name: String,
    pub size: u64,
    /// `urn:sha1:<BASE32>`, when the responder gave one.
    pub urn: Option<String>,
    /// The FastTrack hash (40 hex digits), when the hit carried one (GGEP
    /// `FTH`): `get` checks the file by it when there is no `urn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fth: Option<String>,
    /// The responder's IPv4 address.
    pub host: String,
    /// The responder's port, where the network tells it.
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gnutella: Option<GnutellaHit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub napster: Option<NapsterHit>,
}

impl Record for Hit {
    const TYPE: &'static str = "hit";
}

/// What a Gnutella hit adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GnutellaHit {
    /// The file's index at the responder (for `/get/<index>/<name>`).
    pub index: u32,
    /// The responder's servent GUID, 32 hex digits.
    pub servent_guid: String,
    /// Reached by a Push only.
    pub push: bool,
    /// All its upload slots taken.
    pub busy: bool,
}

/// What a Napster search result adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NapsterHit {
    /// The sharing user (give it to `napster get --from`).
    pub nick: String,
    /// The MD5 field as the index sent it.
    pub md5: String,
    pub bitrate: u32,
    pub freq: u32,
    pub seconds: u32,
    /// The user's link type (0 unknown ... 10 T3).
    pub link: u8,
}

/// Where a download is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DownloadState {
    /// In a node's queue, waiting for a free download slot.
    Queued,
    /// In a node's queue, stopped until resumed.
    Paused,
    Running,
    Done,
    Failed,
    Interrupted,
}

/// A download, while it runs and when it ends (`type` "download").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Download {
    /// The download's number in a node's queue (the control API's downloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub state: DownloadState,
    /// The file's name as wanted (from the URL, magnet or hit), when known.
    pub name: Option<String>,
    /// Where the file is written, once known.
    pub path: Option<String>,
    /// The SHA-1 URN the file is checked by, when known.
    pub urn: Option<String>,
    /// The FastTrack hash (40 hex digits) the file is checked by when it has
    /// no SHA-1 URN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fth: Option<String>,
    /// The file's size, once known.
    pub size: Option<u64>,
    /// Bytes on disk so far.
    pub done: u64,
    /// Over the last report interval.
    pub bytes_per_sec: u64,
    /// Sources fetching now.
    pub sources_active: usize,
    /// Sources not given up.
    pub sources_known: usize,
    /// Each source and the bytes it supplied (when the download ends).
    pub sources: Vec<SourceBytes>,
    /// Why it failed or stopped.
    pub error: Option<String>,
    /// How the content was checked, when it was (`sha1`, `head_md5`), or why
    /// it could not be (`unmatched`, `unchecked`); Napster downloads only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
    /// Other users listing a file of the same size and checksum (Napster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreeing: Option<u32>,
}

impl Record for Download {
    const TYPE: &'static str = "download";
}

impl Download {
    /// A download of `name` that has not started.
    pub fn new(name: Option<String>, urn: Option<String>, size: Option<u64>) -> Download {
        Download {
            id: None,
            state: DownloadState::Running,
            name,
            path: None,
            urn,
            fth: None,
            size,
            done: 0,
            bytes_per_sec: 0,
            sources_active: 0,
            sources_known: 0,
            sources: Vec::new(),
            error: None,
            verified: None,
            agreeing: None,
        }
    }
}

/// One source of a download.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceBytes {
    pub source: String,
    pub bytes: u64,
}

/// A server or node that has started (`type` "listening").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    /// "node", "index" or "napster_share".
    pub role: String,
    /// The address it accepts connections on (none when firewalled).
    pub addr: Option<String>,
    /// Files shared, where the command shares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
}

impl Record for Listening {
    const TYPE: &'static str = "listening";
}

/// A list of records of one kind (`type` "<kind>s"), as the control API
/// answers a listing: `{"v":1,"type":"peers","items":[...]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}

/// A record kind that is also listed.
pub trait Listed {
    /// The `type` of a list of them.
    const LIST: &'static str;
}

impl<T: Listed + Serialize> Record for List<T> {
    const TYPE: &'static str = T::LIST;
}

impl Listed for Hit {
    const LIST: &'static str = "hits";
}

impl Listed for Download {
    const LIST: &'static str = "downloads";
}

/// What a node is doing (`type` "status").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// "leaf" or "ultrapeer".
    pub role: String,
    pub uptime_secs: u64,
    /// Our servent GUID, 32 hex digits.
    pub guid: String,
    /// Where the node accepts Gnutella and HTTP connections (none when
    /// firewalled).
    pub listen: Option<String>,
    pub firewalled: bool,
    pub links: LinkCounts,
    pub library: LibraryCounts,
    pub bandwidth: Bandwidth,
    pub uploads: SlotCounts,
    pub downloads: QueueCounts,
    /// Hosts in the host cache.
    pub hosts: usize,
    /// Whether the world can reach us, as learned from connect-backs.
    #[serde(default)]
    pub reach: Reachability,
    /// What the node reaches (HSEP), itself not counted.
    pub horizon: Horizon,
}

/// What the node learned of its reachability (`protocol-spec/reachability.md`):
/// each is "unknown" (not tested yet), "yes" or "no".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reachability {
    /// Hosts can connect to us (one did lately).
    pub tcp: String,
    /// We receive UDP nobody asked for (a connect-back ping came).
    pub udp: String,
    /// Replies to our own datagrams reach us.
    pub udp_solicited: String,
    /// Our address as several peers see it.
    pub external_ip: Option<String>,
}

/// What a node reaches within HSEP's ten hops, as its HSEP links report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    pub hosts: u64,
    pub files: u64,
    pub kib: u64,
}

impl Record for Status {
    const TYPE: &'static str = "status";
}

/// Open Gnutella links by kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounts {
    /// Ultrapeers we are a leaf of.
    pub to_ultrapeers: usize,
    /// Our leaves.
    pub leaves: usize,
    /// Ultrapeer-to-ultrapeer and flat links.
    pub mesh: usize,
    pub total: usize,
}

/// The library's size and hashing progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryCounts {
    pub files: usize,
    pub bytes: u64,
    /// Files still waiting for their SHA-1 (not offered by URN until then).
    pub hashing_pending: usize,
}

/// Bytes moved since the start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Gnutella messages, whole frames.
    pub gnutella_in: u64,
    pub gnutella_out: u64,
    /// File bytes uploaded, and downloaded by the node's queue.
    pub upload: u64,
    pub download: u64,
}

/// Upload slots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCounts {
    pub active: usize,
    pub slots: usize,
}

/// The download queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    pub running: usize,
    pub queued: usize,
    pub paused: usize,
    /// Downloads at once at most.
    pub max_running: usize,
}

/// One Gnutella link (`type` "peer").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub id: u64,
    /// The address the connection is with.
    pub addr: String,
    /// Where the peer listens, when known.
    pub listen: Option<String>,
    /// Its `User-Agent` (JSON escapes control characters; tables escape them).
    pub user_agent: Option<String>,
    /// "to_ultrapeer" (we are its leaf), "leaf" (ours), "ultrapeer" or "flat".
    pub kind: String,
    pub inbound: bool,
    pub age_secs: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Messages from it dropped, by reason.
    pub drops: std::collections::BTreeMap<String, u64>,
}

impl Record for Peer {
    const TYPE: &'static str = "peer";
}

impl Listed for Peer {
    const LIST: &'static str = "peers";
}

/// A shared file (`type` "file").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFile {
    pub index: u32,
    pub name: String,
    pub path: String,
    pub size: u64,
    /// `urn:sha1:...`, once hashed.
    pub urn: Option<String>,
}

impl Record for SharedFile {
    const TYPE: &'static str = "file";
}

impl Listed for SharedFile {
    const LIST: &'static str = "files";
}

/// A host in the host cache (`type` "host").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub addr: String,
    /// When we last heard of it, in seconds since the Unix epoch.
    pub seen: u64,
    pub ultrapeer: bool,
    pub leaf: bool,
    pub failures: u32,
}

impl Record for Host {
    const TYPE: &'static str = "host";
}

impl Listed for Host {
    const LIST: &'static str = "hosts";
}

/// An upload in progress (`type` "upload").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upload {
    pub addr: String,
    pub name: String,
    pub urn: Option<String>,
    /// The range asked for.
    pub start: u64,
    pub length: u64,
    /// Bytes of it sent so far.
    pub sent: u64,
    pub age_secs: u64,
}

impl Record for Upload {
    const TYPE: &'static str = "upload";
}

impl Listed for Upload {
    const LIST: &'static str = "uploads";
}

/// A shared directory (`type` "share").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub path: String,
}

impl Record for Share {
    const TYPE: &'static str = "share";
}

impl Listed for Share {
    const LIST: &'static str = "shares";
}

/// A search started through the control API (`type` "search").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Search {
    pub id: u64,
    /// The words searched for, or the URN.
    pub query: String,
    /// Still taking hits.
    pub active: bool,
    pub age_secs: u64,
    /// Links the query went to.
    pub sent_to: usize,
    /// Hits kept (at most 1000 per search).
    pub hits: usize,
}

impl Record for Search {
    const TYPE: &'static str = "search";
}

impl Listed for Search {
    const LIST: &'static str = "searches";
}

/// A search and its hits (`type` "search_results").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchResults {
    pub search: Search,
    pub items: Vec<Hit>,
}

impl Record for SearchResults {
    const TYPE: &'static str = "search_results";
}

/// What went wrong with a request to the control API (`type` "error").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    pub error: String,
}

impl Record for ApiError {
    const TYPE: &'static str = "error";
}

/// Where a setting's value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

/// One setting as `config show` prints it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// The command's words (`run`, `napster share`), empty for the options
    /// given before the command.
    pub command: String,
    /// The key in the file, which is the flag's long name.
    pub key: String,
    /// A string, a list of strings (a repeatable flag), true/false (a switch),
    /// a number (a count), or null (not set); a password is shown as "(hidden)".
    pub value: serde_json::Value,
    pub source: Source,
    /// The environment variable it is read from.
    pub env: Option<String>,
    /// Where in the file it was set, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_key: Option<String>,
}

/// The effective settings (`type` "config").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The config file looked for.
    pub file: Option<String>,
    /// Whether it was there.
    pub file_found: bool,
    pub settings: Vec<Setting>,
}

impl Record for Settings {
    const TYPE: &'static str = "config";
}

/// How hits are printed for people and for line-oriented tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    /// Aligned columns under a header line, for a terminal.
    Table,
    /// Tab-separated fields, no header, for a pipe.
    Tsv,
}

impl Text {
    /// A table when `stdout_is_terminal`, else tab-separated.
    pub fn for_stdout(stdout_is_terminal: bool) -> Text {
        if stdout_is_terminal {
            Text::Table
        } else {
            Text::Tsv
        }
    }

    /// The header line of a table of hits from `network` (none for TSV).
    pub fn hit_header(self, network: Network) -> Option<String> {
        match (self, network) {
            (Text::Tsv, _) => None,
            (Text::Table, Network::Gnutella) => Some(format!(
                "{:<48} {:>12}  {:<21}  urn",
                "name", "size", "host"
            )),
            (Text::Table, Network::Napster) => Some(format!(
                "{:<48} {:>12} {:>5} {:>6}  {:<16} {:<15}",
                "name", "size", "kbps", "hz", "nick", "ip"
            )),
        }
    }

    /// One hit as a line (without its end), every text from the network escaped.
    ///
    /// Gnutella: name, size, host:port, urn. Napster: name, size, bit rate,
    /// frequency, nick, ip (and, tab-separated, the MD5).
    pub fn hit(self, hit: &Hit) -> String {
        let name = escape(&hit.name);
        let urn = hit.urn.as_deref().unwrap_or("");
        match (&hit.napster, self) {
            (None, Text::Table) => {
                let host = match hit.port {
                    Some(p) => format!("{}:{p}", hit.host),
                    None => hit.host.clone(),
                };
                format!("{name:<48} {:>12}  {host:<21}  {urn}", hit.size)
            }
            (None, Text::Tsv) => {
                let port = hit.port.map_or(String::new(), |p| format!(":{p}"));
                format!("{name}\t{}\t{}{port}\t{urn}", hit.size, hit.host)
            }
            (Some(n), Text::Table) => format!(
                "{name:<48} {:>12} {:>5} {:>6}  {:<16} {:<15}",
                hit.size,
                n.bitrate,
                n.freq,
                escape(&n.nick),
                hit.host
            ),
            (Some(n), Text::Tsv) => format!(
                "{name}\t{}\t{}\t{}\t{}\t{}\t{}",
                hit.size,
                n.bitrate,
                n.freq,
                escape(&n.nick),
                hit.host,
                escape(&n.md5)
            ),
        }
    }
}

/// `s` with every character that could act on a terminal or break a
/// tab-separated line written as an escape: C0 controls (tab and line ends
/// included), DEL and C1 controls as `\xNN`, and the bidirectional overrides
/// and isolates (which reorder what follows them) as `\u{NNNN}`. Backslashes
/// are left alone (Napster names use them between directories), so the JSON
/// output is the one to read when a name must be exact.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !needs_escape(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_left_alone() {
        assert_eq!(escape("plain \\ name.mp3"), "plain \\ name.mp3");
        assert!(matches!(escape("ok"), Cow::Borrowed(_)));
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape("a\tb\nc\r"), "a\\x09b\\x0ac\\x0d");
        assert_eq!(escape("\u{7f}\u{9b}\u{0}"), "\\x7f\\x9b\\x00");
        assert_eq!(escape("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(escape("café ♫"), "café ♫");
    }

    fn evil(network: Network) -> Hit {
        Hit {
            network,
            name: "\x1b[31mred\x1b[0m\tx\n.mp3".into(),
            size: 5,
            urn: Some("urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5".into()),
            fth: None,
            host: "10.0.0.1".into(),
            port: (network == Network::Gnutella).then_some(6346),
            gnutella: (network == Network::Gnutella).then(|| GnutellaHit {
                index: 1,
                servent_guid: "00".repeat(16),
                push: false,
                busy: false,
            }),
            napster: (network == Network::Napster).then(|| NapsterHit {
                nick: "mallory\x1b]0;owned\x07".into(),
                md5: "abc\t".into(),
                bitrate: 128,
                freq: 44100,
                seconds: 60,
                link: 0,
            }),
        }
    }

    #[test]
    fn hits_in_tables_and_tsv_cannot_drive_the_terminal() {
        let name = "\\x1b[31mred\\x1b[0m\\x09x\\x0a.mp3";
        for network in [Network::Gnutella, Network::Napster] {
            let hit = evil(network);
            for text in [Text::Table, Text::Tsv] {
                let line = text.hit(&hit);
                assert!(
                    !line.chars().any(|c| c.is_control() && c != '\t'),
                    "{line:?}"
                );
                assert!(line.starts_with(name), "{line:?}");
                assert!(!line.contains('\t') || text == Text::Tsv, "{line:?}");
            }
        }
        let g = evil(Network::Gnutella);
        assert_eq!(
            Text::Tsv.hit(&g),
            format!("{name}\t5\t10.0.0.1:6346\turn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5")
        );
        let cols = |l: String| l.split('\t').count();
        assert_eq!(cols(Text::Tsv.hit(&g)), 4);
        let n = evil(Network::Napster);
        assert_eq!(cols(Text::Tsv.hit(&n)), 7);
        assert!(Text::Table.hit(&n).contains("mallory\\x1b]0;owned\\x07"));
        // Columns line up under the header.
        let header = Text::Table.hit_header(Network::Gnutella).unwrap();
        let line = Text::Table.hit(&g);
        assert_eq!(header.find("urn"), line.find("urn:sha1"));
        assert_eq!(Text::Tsv.hit_header(Network::Napster), None);
    }

    #[test]
    fn lines_carry_the_version_and_type_first() {
        let hit = Hit {
            network: Network::Gnutella,
            name: "a \"b\"\n\x1b.mp3".into(),
            size: 3,
            urn: None,
            fth: None,
            host: "127.0.0.1".into(),
            port: Some(6346),
            gnutella: Some(GnutellaHit {
                index: 7,
                servent_guid: "AB".repeat(16),
                push: true,
                busy: false,
            }),
            napster: None,
        };
        let line = json_line(&hit);
        assert!(
            line.starts_with(
                r#"{"v":1,"type":"hit","network":"gnutella","name":"a \"b\"\n\u001b.mp3","#
            ),
            "{line}"
        );
        let back: Versioned<Hit> = serde_json::from_str(&line).unwrap();
        assert_eq!((back.v, back.kind.as_str()), (1, "hit"));
        assert_eq!(back.record, hit);
        assert!(!line.contains("fth"), "absent when unknown: {line}");
        // A hit with an FTH says it, and reads back.
        let hit = Hit {
            fth: Some("ab".repeat(20)),
            ..hit
        };
        let line = json_line(&hit);
        assert!(
            line.contains(&format!(r#""fth":"{}""#, "ab".repeat(20))),
            "{line}"
        );
        let back: Versioned<Hit> = serde_json::from_str(&line).unwrap();
        assert_eq!(back.record, hit);
    }
}
