//! The FastTrack supernode, no I/O: who is logged in, what each user shares, the
//! keyword and hash index over those files, searches, push routing and
//! keep-alive.
//!
//! Like [`crate::napster::index`], it is fed events (a session opened, a typed
//! message arrived, a session closed, time passed) with the time passed in, and
//! answers with [`Action`]s that the shell carries out: messages to send to a
//! session, sessions to close, searches to run on the Gnutella network. It never
//! blocks and never touches a socket, a file or a clock.
//!
//! The messages are typed here as the supernode sees them ([`Request`] in,
//! [`Reply`] out); the shell turns them into and out of the wire forms of
//! [`crate::fasttrack::wire`].
//!
//! Cost rules:
//! - a keyword search walks the posting list of its rarest keyword only,
//!   checks each candidate against the other keywords' sets, and stops after
//!   `max_results` matches or `max_scan` candidates;
//! - removing a file removes it from each of its keywords' lists (recomputed
//!   from its name; a short list, or a hash set for a common word, so a user
//!   leaving costs its own files, not the index size);
//! - everything a session can make us hold is capped: files per user and in
//!   total, open searches per user, searches, shares and pushes per second
//!   (token buckets; a user that stays over is closed), and the login must be
//!   complete (a 0x02) before a share or a search counts.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::budget::{Budget, Kind as BudgetKind, Rate, Rates, Verdict};
use crate::napster::index::keywords;

/// A session, numbered by the shell; never reused while the supernode runs.
pub type SessionId = u64;

/// A FastTrack file hash (FTH, "UUHash"): MD5 of the first 300 KiB and a
/// 32-bit smallhash.
pub type Fth = [u8; 20];

/// The tag id of a file name (giFT drops a result without one).
pub const TAG_FILENAME: u32 = 0x02;
/// The tag id of a file hash (a search term for locating a file).
pub const TAG_HASH: u32 = 0x03;
/// The user count giFT needs in the first 0x09 after login, or it hangs up
/// ("split network segment").
pub const MIN_ADVERTISED_USERS: u32 = 100_000;
/// The network name we announce (giFT accepts kazaa, fileshare, grokster).
pub const NETWORK_NAME: &[u8] = b"KaZaA";
/// The protocol version we announce in 0x26 (what giFT answers; KaZaA 2.6 sent
/// 0x22).
pub const PROTOCOL_VERSION: u32 = 0x26;

/// A user's node information (0x02).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub bandwidth: u8,
    pub name: Bytes,
}

/// One metadata tag: an id and its raw value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub id: u32,
    pub value: Bytes,
}

impl Tag {
    /// The file name tag (the one tag giFT needs in a result).
    pub fn filename(name: &str) -> Tag {
        Tag {
            id: TAG_FILENAME,
            value: Bytes::copy_from_slice(name.as_bytes()),
        }
    }
}

/// A shared file (0x22), as a user announced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub media: u8,
    pub hash: Fth,
    pub file_id: u32,
    pub size: u64,
    pub tags: Vec<Tag>,
}

impl Share {
    /// The file name tag's value, if any.
    pub fn filename(&self) -> Option<&[u8]> {
        self.tags
            .iter()
            .find(|t| t.id == TAG_FILENAME)
            .map(|t| &t.value[..])
    }
}

/// One term of a query: a comparison on a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// 0x05 substring (keywords), 0x00 equals (hash), others from KaZaA.
    pub cmp: u8,
    /// 0x00 any field, 0x03 hash, or a tag id.
    pub tag: u32,
    pub value: Bytes,
}

/// A search (0x06).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub max_results: u16,
    /// 0xBF everything, 0xA1..0xA5 one media type (MLDonkey: 0x3F, 0x21..0x25).
    pub realm: u8,
    pub terms: Vec<Term>,
}

impl Query {
    /// The words searched for (every keyword term), space-separated.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for t in &self.terms {
            if t.tag != TAG_HASH && t.tag != 0x21 {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(&String::from_utf8_lossy(&t.value));
            }
        }
        s
    }

    /// The hash searched for, if any.
    pub fn hash(&self) -> Option<Fth> {
        self.terms
            .iter()
            .find(|t| t.tag == TAG_HASH)
            .and_then(|t| <Fth>::try_from(&t.value[..]).ok())
    }

    /// What the search asks, as a number: the same realm and terms give the
    /// same one (the id and the result count left out).
    pub fn signature(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.realm.hash(&mut h);
        for t in &self.terms {
            (t.cmp, t.tag, &t.value[..]).hash(&mut h);
        }
        h.finish()
    }

    /// The media type the realm asks for (1..5), or none for everything.
    pub fn media(&self) -> Option<u8> {
        match self.realm & 0x7F {
            r @ 0x21..=0x25 => Some(r - 0x20),
            _ => None,
        }
    }
}

/// A push request (0x0D from a user): "have this user connect to me".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRequest {
    pub push_id: u32,
    /// The requester's address for the GIVE (its external IP from our 0x2C).
    pub requester: SocketAddrV4,
    /// The target as the result named it.
    pub target: SocketAddrV4,
    /// The supernode the result came from.
    pub target_supernode: SocketAddrV4,
    pub target_user: Bytes,
}

/// What a user sent, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    NodeInfo(NodeInfo),
    Share(Share),
    Unshare(Fth),
    Query(Query),
    Push(PushRequest),
    ProtocolVersion(u32),
    NetworkName(Bytes),
    Ping,
    Pong,
    /// A message we do not act on (giFT ignores unknown ones too).
    Other(u16),
}

/// An entry of a node list (0x00).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub addr: SocketAddrV4,
    /// Minutes since it was seen.
    pub last_seen: u8,
    /// Load in percent.
    pub load: u8,
}

/// One search result (inside a 0x07).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    /// Where the file is fetched (`GET /.hash=<hex>`); port 0: by push.
    pub addr: SocketAddrV4,
    pub bandwidth: u8,
    pub user: Bytes,
    pub hash: Fth,
    pub file_id: u32,
    pub size: u64,
    pub tags: Vec<Tag>,
}

impl Hit {
    /// About what the result takes in a 0x07.
    fn wire_len(&self) -> usize {
        4 + 2
            + 1
            + self.user.len()
            + 2
            + NETWORK_NAME.len()
            + 20
            + 15
            + self.tags.iter().map(|t| t.value.len() + 10).sum::<usize>()
    }
}

/// What the supernode sends, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    NodeList(Vec<NodeEntry>),
    ExternalIp(Ipv4Addr),
    Stats {
        users: u32,
        files: u32,
        /// Total size of the files in GiB.
        gigabytes: u64,
    },
    Results {
        /// The supernode that owns the results (ourselves).
        supernode: SocketAddrV4,
        id: u16,
        hits: Vec<Hit>,
    },
    End(u16),
    /// "Connect to this requester and say `GIVE <push_id>`."
    Push {
        push_id: u32,
        requester: SocketAddrV4,
    },
    ProtocolVersion(u32),
    NetworkName(Bytes),
    Ping,
    Pong,
}

/// Why a session is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Nothing heard for too long, not even a pong.
    Dead,
    /// Over its budget for too long.
    Flood,
    /// The login (0x02) did not come in time.
    NoLogin,
}

impl CloseReason {
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::Dead => "dead",
            CloseReason::Flood => "flood",
            CloseReason::NoLogin => "no-login",
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Send(SessionId, Reply),
    /// Close a session once what was queued before it is written. The
    /// supernode has already forgotten it.
    Close(SessionId, CloseReason),
    /// Run this search on the Gnutella network too; hand its usable hits to
    /// [`Supernode::bridged`] while the search is open.
    Bridge {
        session: SessionId,
        id: u16,
        text: String,
        hash: Option<Fth>,
    },
}

/// Limits and timers.
#[derive(Clone, Debug)]
pub struct Config {
    /// Our own address as users reach us (in 0x07 headers).
    pub me: SocketAddrV4,
    pub max_files_per_user: usize,
    pub max_files_total: usize,
    /// Results one search gets, whatever it asks for.
    pub max_results: usize,
    /// Candidates one keyword search looks at.
    pub max_scan: usize,
    /// Searches one user may have open (waiting for bridged results).
    pub max_open_searches: usize,
    /// How long a search stays open for results from the Gnutella network;
    /// zero: the search ends at once (no bridge).
    pub bridge_wait: Duration,
    /// Searches per second a user may send, and its burst.
    pub search_rate: Rate,
    /// Shares (0x22 and 0x05) per second a user may send, and its burst.
    pub share_rate: Rate,
    /// Push requests per second, and its burst.
    pub push_rate: Rate,
    /// Silence after which we ping a user.
    pub ping_after: Duration,
    /// Silence after which a user is dropped.
    pub dead_after: Duration,
    /// Time from the session start to the first 0x02.
    pub login_timeout: Duration,
    /// The longest user name kept (giFT cuts at 31).
    pub max_name: usize,
    /// Tags kept per file, and bytes of tag values per file.
    pub max_tags: usize,
    pub max_tag_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            me: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
            max_files_per_user: 500,
            max_files_total: 500_000,
            max_results: 200,
            max_scan: 20_000,
            max_open_searches: 8,
            bridge_wait: Duration::ZERO,
            search_rate: Rate::new(1.0, 10.0),
            share_rate: Rate::new(50.0, 600.0),
            push_rate: Rate::new(2.0, 20.0),
            ping_after: Duration::from_secs(90),
            dead_after: Duration::from_secs(180),
            login_timeout: Duration::from_secs(30),
            max_name: 64,
            max_tags: 16,
            max_tag_bytes: 1024,
        }
    }
}

/// Counters; every drop has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: u64,
    pub logins: u64,
    pub shares: u64,
    pub unshares: u64,
    /// A share over the user's cap.
    pub shares_over_user_cap: u64,
    /// A share over the supernode's cap.
    pub shares_over_total_cap: u64,
    /// A share without a file name, or before the login.
    pub shares_refused: u64,
    /// Shares and unshares over the rate.
    pub shares_over_rate: u64,
    /// An unshare of a file the user does not share.
    pub unshares_unknown: u64,
    pub searches: u64,
    pub searches_over_rate: u64,
    /// A search while the user had too many open: answered from our users
    /// alone, not bridged.
    pub searches_over_open: u64,
    /// A search before the login.
    pub searches_refused: u64,
    /// A search sent again just after it ended (giFT's `auto_search_more`
    /// sends each search three times, each after the last one's 0x08):
    /// ended at once, not charged to the rate, nothing sent twice. A search
    /// refused for the rate counts as ended too.
    pub searches_repeated: u64,
    pub results: u64,
    pub bridged_results: u64,
    /// Bridged hits for a search already ended (or a session gone).
    pub bridged_late: u64,
    pub pushes: u64,
    /// A push to a user we do not have.
    pub pushes_unknown: u64,
    pub pushes_over_rate: u64,
    pub pings_sent: u64,
    pub closed_dead: u64,
    pub closed_flood: u64,
    pub closed_no_login: u64,
    pub unknown_messages: u64,
}

/// Charges one request of `kind` to the user's budget; a refusal is counted in
/// `over` (the caller drops the request, or closes the session on `Close`).
fn charge(user: &mut User, kind: BudgetKind, now: Instant, over: &mut u64) -> Verdict {
    let verdict = user.budget.admit(kind, now);
    if verdict != Verdict::Take {
        *over += 1;
    }
    verdict
}

/// A search answered and ended.
struct Ended {
    id: u16,
    signature: u64,
    at: Instant,
    /// Times it came again since.
    repeats: u8,
}

/// Ended searches remembered per user: more than a burst of searches (10)
/// and the searches open at once (8), since giFT may send a whole burst
/// before the first 0x08 comes back, and repeats the searches then.
const ENDED_KEPT: usize = 32;
/// How long after its end a search sent again is a repeat.
const REPEAT_WITHIN: Duration = Duration::from_secs(60);
/// Repeats of one search ended without a charge (giFT's default sends two);
/// beyond, the search counts as new.
const FREE_REPEATS: u8 = 4;

impl User {
    /// Notes that a search ended, answered.
    fn ended(&mut self, id: u16, signature: u64, now: Instant) {
        self.ended.retain(|e| e.id != id);
        if self.ended.len() >= ENDED_KEPT {
            self.ended.remove(0);
        }
        self.ended.push(Ended {
            id,
            signature,
            at: now,
            repeats: 0,
        });
    }

    /// Whether this search repeats one just ended (then counted as a repeat).
    fn repeats(&mut self, q: &Query, now: Instant) -> bool {
        // The id first: the hash of the terms only for a search that may
        // repeat one.
        let Some(e) = self.ended.iter_mut().find(|e| e.id == q.id) else {
            return false;
        };
        if e.signature != q.signature()
            || now.saturating_duration_since(e.at) > REPEAT_WITHIN
            || e.repeats >= FREE_REPEATS
        {
            return false;
        }
        e.repeats += 1;
        true
    }
}

struct User {
    peer: SocketAddrV4,
    info: Option<NodeInfo>,
    files: Vec<u32>,
    budget: Budget,
    started: Instant,
    heard: Instant,
    pinged: bool,
    /// Searches waiting for bridged results, with their deadlines and what
    /// they asked ([`Query::signature`]).
    open: Vec<(u16, Instant, u64)>,
    /// Searches answered and ended lately (the most recent last), so that
    /// the same search sent again is known for a repeat.
    ended: Vec<Ended>,
    /// Results sent per open search (bridged ones count too).
    sent: Vec<(u16, usize)>,
}

impl User {
    /// The address its files are fetched from: the latest 0x02, unless the
    /// address there is unroutable and the socket's is not.
    fn fetch_addr(&self) -> SocketAddrV4 {
        let Some(info) = &self.info else {
            return SocketAddrV4::new(*self.peer.ip(), 0);
        };
        let ip = if routable(info.ip) || !routable(*self.peer.ip()) {
            if info.ip.is_unspecified() {
                *self.peer.ip()
            } else {
                info.ip
            }
        } else {
            *self.peer.ip()
        };
        SocketAddrV4::new(ip, info.port)
    }
}

/// Whether giFT would call this address routable (it refuses the others).
pub fn routable(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_broadcast()
        || ip.octets()[0] >= 224)
}

/// An indexed file, kept compact: a supernode holds hundreds of thousands.
struct FileEntry {
    /// The owning session; [`OWN`] for the node's own files.
    owner: SessionId,
    hash: Fth,
    size: u64,
    file_id: u32,
    media: u8,
    /// The other files with the same hash form a ring in the order they came
    /// (`by_hash` holds the first): the slots before and after this one, its
    /// own slot when it is alone. Removing a file is then the same work however
    /// many users share it.
    prev: u32,
    next: u32,
    /// The tags, the file name first, packed into one buffer (see [`pack`]):
    /// one allocation a file, where a `Vec<Tag>` took one for the list and
    /// one per value.
    tags: Bytes,
}

impl FileEntry {
    fn tags(&self) -> Packed<'_> {
        Packed(&self.tags)
    }

    fn filename(&self) -> &[u8] {
        // `insert_file` puts the name first.
        self.tags().next().map_or(&[][..], |(_, v)| v)
    }

    /// The tags as a result carries them: each value a slice of the buffer.
    fn tag_list(&self) -> Vec<Tag> {
        let base = self.tags.as_ptr() as usize;
        self.tags()
            .map(|(id, v)| {
                let at = v.as_ptr() as usize - base;
                Tag {
                    id,
                    value: self.tags.slice(at..at + v.len()),
                }
            })
            .collect()
    }
}

/// Tags as [`FileEntry`] holds them: for each, its id and its value's length
/// (4 bytes each, little-endian), then the value.
fn pack(tags: &[Tag]) -> Bytes {
    let mut b = Vec::with_capacity(tags.iter().map(|t| 8 + t.value.len()).sum());
    for t in tags {
        b.extend_from_slice(&t.id.to_le_bytes());
        b.extend_from_slice(&(t.value.len() as u32).to_le_bytes());
        b.extend_from_slice(&t.value);
    }
    Bytes::from(b)
}

/// The (id, value) pairs of a buffer made by [`pack`].
struct Packed<'a>(&'a [u8]);

impl<'a> Iterator for Packed<'a> {
    type Item = (u32, &'a [u8]);

    fn next(&mut self) -> Option<(u32, &'a [u8])> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        let id = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let (value, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        Some((id, value))
    }
}

/// A keyword's files: a short list while few have it, a hash set beyond (most
/// words of most names are in a handful of files). The set is boxed so that
/// every word's entry is the size of the short list.
enum Posting {
    Few(Vec<u32>),
    // A set's 48 bytes against a list's 24, in every word's entry: the box
    // costs one allocation a common word, the bare set 24 bytes every word.
    #[allow(clippy::box_collection)]
    Many(Box<HashSet<u32>>),
}

/// Files a [`Posting::Few`] holds before it becomes a set.
const FEW: usize = 16;

impl Posting {
    fn len(&self) -> usize {
        match self {
            Posting::Few(v) => v.len(),
            Posting::Many(s) => s.len(),
        }
    }

    fn contains(&self, slot: u32) -> bool {
        match self {
            Posting::Few(v) => v.contains(&slot),
            Posting::Many(s) => s.contains(&slot),
        }
    }

    fn insert(&mut self, slot: u32) {
        match self {
            Posting::Few(v) if v.len() < FEW => v.push(slot),
            Posting::Few(v) => {
                let mut set: HashSet<u32> = v.drain(..).collect();
                set.insert(slot);
                *self = Posting::Many(Box::new(set));
            }
            Posting::Many(s) => {
                s.insert(slot);
            }
        }
    }

    fn remove(&mut self, slot: u32) {
        match self {
            Posting::Few(v) => {
                if let Some(i) = v.iter().position(|&x| x == slot) {
                    v.swap_remove(i);
                }
            }
            Posting::Many(s) => {
                s.remove(&slot);
            }
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Posting::Few(v) => Box::new(v.iter().copied()),
            Posting::Many(s) => Box::new(s.iter().copied()),
        }
    }
}

/// The keywords a file is indexed under: those of its name and of its text
/// tags (title, artist, album, keywords), each once, into `words`.
fn file_words<'t>(
    tags: impl Iterator<Item = (u32, &'t [u8])>,
    buf: &mut Vec<u8>,
    spans: &mut Vec<(u32, u32)>,
    words: &mut Vec<Vec<u8>>,
) {
    words.clear();
    for (id, value) in tags {
        if matches!(id, 0x02 | 0x04 | 0x06 | 0x08 | 0x0C) {
            keywords(value, buf, spans);
            for &(a, b) in spans.iter() {
                let w = &buf[a as usize..b as usize];
                if !words.iter().any(|x| x[..] == *w) {
                    words.push(w.to_vec());
                }
            }
        }
    }
}

/// The owner of the node's own files.
const OWN: SessionId = 0;

/// Buffers reused to fold keywords: bytes, spans, the words of one file.
type Scratch = (Vec<u8>, Vec<(u32, u32)>, Vec<Vec<u8>>);

/// The supernode.
pub struct Supernode {
    cfg: Config,
    users: HashMap<SessionId, User>,
    by_name: HashMap<Bytes, Vec<SessionId>>,
    files: Vec<Option<FileEntry>>,
    free: Vec<u32>,
    words: HashMap<Box<[u8]>, Posting>,
    /// The first file with each hash; the rest follow it in a ring.
    by_hash: HashMap<Fth, u32>,
    /// The slots of the node's own files, by the key the node gave each
    /// (its library index).
    own: HashMap<u32, u32>,
    /// Where the node's own files are fetched, and its name in results.
    own_addr: SocketAddrV4,
    own_name: Bytes,
    nodes: Vec<NodeEntry>,
    files_total: usize,
    bytes_total: u64,
    stats: Stats,
    scratch: Scratch,
}

impl Supernode {
    pub fn new(cfg: Config) -> Supernode {
        Supernode {
            own_addr: cfg.me,
            cfg,
            users: HashMap::new(),
            by_name: HashMap::new(),
            files: Vec::new(),
            free: Vec::new(),
            words: HashMap::new(),
            by_hash: HashMap::new(),
            own: HashMap::new(),
            own_name: Bytes::from_static(b"servent"),
            nodes: Vec::new(),
            files_total: 0,
            bytes_total: 0,
            stats: Stats::default(),
            scratch: (Vec::new(), Vec::new(), Vec::new()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Users logged in now.
    pub fn users_online(&self) -> usize {
        self.users.len()
    }

    /// Files of users indexed now (the node's own not counted).
    pub fn files_indexed(&self) -> usize {
        self.files_total
    }

    /// How many of the node's own files are in the index.
    pub fn own_files(&self) -> usize {
        self.own.len()
    }

    /// Other supernodes to tell users about at login (0x00).
    pub fn set_nodes(&mut self, nodes: Vec<NodeEntry>) {
        self.nodes = nodes;
        self.nodes.truncate(200);
    }

    /// Drops the node's own files; those to come ([`Supernode::change_own_files`])
    /// are served at `addr` as `name`, and answer searches like a user's.
    pub fn clear_own_files(&mut self, addr: SocketAddrV4, name: &[u8]) {
        for (_, slot) in std::mem::take(&mut self.own) {
            self.remove_file(slot);
        }
        if self.files_total == 0 {
            // Nothing left in the index: its tables are given back, not kept
            // at the size the node's library had made them.
            self.files = Vec::new();
            self.free = Vec::new();
            self.words = Default::default();
            self.by_hash = Default::default();
        }
        self.own_addr = addr;
        self.own_name = Bytes::copy_from_slice(name);
    }

    /// Some of the node's own files gone and others new, each with a key of
    /// the node's (its library index, with its FTH): the index changed by
    /// those alone, not rebuilt. A key given again replaces its file. At most
    /// `max_files_total` own files are kept.
    pub fn change_own_files(&mut self, gone: &[u32], new: Vec<(u32, Share)>) {
        for key in gone {
            if let Some(slot) = self.own.remove(key) {
                self.remove_file(slot);
            }
        }
        for (key, f) in new {
            if let Some(slot) = self.own.remove(&key) {
                self.remove_file(slot);
            }
            if self.own.len() >= self.cfg.max_files_total {
                break;
            }
            if let Some(slot) = self.insert_file(OWN, f) {
                self.own.insert(key, slot);
            }
        }
    }

    /// A session finished its handshake: send what a user needs at login.
    pub fn connect(
        &mut self,
        session: SessionId,
        peer: SocketAddrV4,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.stats.sessions += 1;
        let rates = Rates::unlimited()
            .with(BudgetKind::Query, self.cfg.search_rate)
            .with(BudgetKind::Table, self.cfg.share_rate)
            .with(BudgetKind::Push, self.cfg.push_rate);
        self.users.insert(
            session,
            User {
                peer,
                info: None,
                files: Vec::new(),
                budget: Budget::new(rates, now),
                started: now,
                heard: now,
                pinged: false,
                open: Vec::new(),
                ended: Vec::new(),
                sent: Vec::new(),
            },
        );
        out.push(Action::Send(
            session,
            Reply::ProtocolVersion(PROTOCOL_VERSION),
        ));
        out.push(Action::Send(session, Reply::ExternalIp(*peer.ip())));
        out.push(Action::Send(session, self.network_stats()));
        if !self.nodes.is_empty() {
            out.push(Action::Send(session, Reply::NodeList(self.nodes.clone())));
        }
        out.push(Action::Send(
            session,
            Reply::NetworkName(Bytes::from_static(NETWORK_NAME)),
        ));
    }

    fn network_stats(&self) -> Reply {
        let users = u32::try_from(self.users.len())
            .unwrap_or(u32::MAX)
            .max(MIN_ADVERTISED_USERS);
        Reply::Stats {
            users,
            files: u32::try_from(self.files_total + self.own.len()).unwrap_or(u32::MAX),
            gigabytes: self.bytes_total >> 30,
        }
    }

    /// A session ended (closed by the user, or an I/O error): its files go.
    pub fn disconnect(&mut self, session: SessionId) {
        let Some(user) = self.users.remove(&session) else {
            return;
        };
        if let Some(info) = &user.info {
            self.unname(session, &info.name);
        }
        for slot in user.files {
            self.remove_file(slot);
        }
    }

    fn unname(&mut self, session: SessionId, name: &Bytes) {
        if let Some(v) = self.by_name.get_mut(name) {
            v.retain(|s| *s != session);
            if v.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    fn close(&mut self, session: SessionId, why: CloseReason, out: &mut Vec<Action>) {
        match why {
            CloseReason::Dead => self.stats.closed_dead += 1,
            CloseReason::Flood => self.stats.closed_flood += 1,
            CloseReason::NoLogin => self.stats.closed_no_login += 1,
        }
        self.disconnect(session);
        out.push(Action::Close(session, why));
    }

    /// Time passed: pings to quiet users, the dead and the unlogged closed,
    /// open searches ended.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut closing = Vec::new();
        for (&id, u) in self.users.iter_mut() {
            let quiet = now.saturating_duration_since(u.heard);
            if quiet >= self.cfg.dead_after {
                closing.push((id, CloseReason::Dead));
                continue;
            }
            if u.info.is_none()
                && now.saturating_duration_since(u.started) >= self.cfg.login_timeout
            {
                closing.push((id, CloseReason::NoLogin));
                continue;
            }
            if quiet >= self.cfg.ping_after && !u.pinged {
                u.pinged = true;
                self.stats.pings_sent += 1;
                out.push(Action::Send(id, Reply::Ping));
            }
            let mut i = 0;
            while i < u.open.len() {
                if u.open[i].1 <= now {
                    let (sid, _, signature) = u.open.swap_remove(i);
                    u.sent.retain(|(s, _)| *s != sid);
                    u.ended(sid, signature, now);
                    out.push(Action::Send(id, Reply::End(sid)));
                } else {
                    i += 1;
                }
            }
        }
        for (id, why) in closing {
            self.close(id, why, out);
        }
    }

    /// Ends an open search now (its bridge has nothing more to give).
    pub fn finish(&mut self, session: SessionId, id: u16, now: Instant, out: &mut Vec<Action>) {
        let Some(u) = self.users.get_mut(&session) else {
            return;
        };
        if let Some(i) = u.open.iter().position(|(s, _, _)| *s == id) {
            let (_, _, signature) = u.open.swap_remove(i);
            u.sent.retain(|(s, _)| *s != id);
            u.ended(id, signature, now);
            out.push(Action::Send(session, Reply::End(id)));
        }
    }

    /// The earliest time [`Supernode::tick`] has something to do for an open
    /// search (the shell may sleep until then; keep-alive ticks are coarse).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.users
            .values()
            .flat_map(|u| u.open.iter().map(|(_, t, _)| *t))
            .min()
    }

    /// A message from a user.
    pub fn receive(
        &mut self,
        session: SessionId,
        req: Request,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(user) = self.users.get_mut(&session) else {
            return;
        };
        user.heard = now;
        user.pinged = false;
        match req {
            Request::Ping => out.push(Action::Send(session, Reply::Pong)),
            Request::Pong => {}
            Request::ProtocolVersion(_) | Request::NetworkName(_) => {}
            Request::Other(_) => self.stats.unknown_messages += 1,
            Request::NodeInfo(mut info) => {
                if info.name.len() > self.cfg.max_name {
                    info.name.truncate(self.cfg.max_name);
                }
                match user.info.replace(info.clone()) {
                    None => {
                        self.stats.logins += 1;
                        tracing::debug!(
                            session,
                            user = %String::from_utf8_lossy(&info.name),
                            "FastTrack user logged in"
                        );
                    }
                    Some(old) => self.unname(session, &old.name),
                }
                self.by_name.entry(info.name).or_default().push(session);
            }
            Request::Share(share) => self.share(session, share, now, out),
            Request::Unshare(hash) => {
                match charge(
                    user,
                    BudgetKind::Table,
                    now,
                    &mut self.stats.shares_over_rate,
                ) {
                    Verdict::Take => {}
                    Verdict::Drop => return,
                    Verdict::Close => return self.close(session, CloseReason::Flood, out),
                }
                let found = user.files.iter().position(|&slot| {
                    self.files[slot as usize]
                        .as_ref()
                        .is_some_and(|f| f.hash == hash)
                });
                match found {
                    Some(i) => {
                        let slot = user.files.swap_remove(i);
                        self.stats.unshares += 1;
                        self.remove_file(slot);
                    }
                    None => self.stats.unshares_unknown += 1,
                }
            }
            Request::Query(q) => self.search(session, q, now, out),
            Request::Push(p) => self.push(session, p, now, out),
        }
    }

    fn share(&mut self, session: SessionId, share: Share, now: Instant, out: &mut Vec<Action>) {
        let Some(user) = self.users.get_mut(&session) else {
            return;
        };
        match charge(
            user,
            BudgetKind::Table,
            now,
            &mut self.stats.shares_over_rate,
        ) {
            Verdict::Take => {}
            Verdict::Drop => return,
            Verdict::Close => return self.close(session, CloseReason::Flood, out),
        }
        if user.info.is_none() || share.filename().is_none_or(<[u8]>::is_empty) {
            self.stats.shares_refused += 1;
            return;
        }
        // The same file again replaces the old entry.
        if let Some(i) = user.files.iter().position(|&slot| {
            self.files[slot as usize]
                .as_ref()
                .is_some_and(|f| f.hash == share.hash)
        }) {
            let slot = user.files.swap_remove(i);
            self.remove_file(slot);
        }
        let user = self.users.get(&session).expect("checked above");
        if user.files.len() >= self.cfg.max_files_per_user {
            self.stats.shares_over_user_cap += 1;
            return;
        }
        if self.files_total >= self.cfg.max_files_total {
            self.stats.shares_over_total_cap += 1;
            return;
        }
        let Some(slot) = self.insert_file(session, share) else {
            self.stats.shares_refused += 1;
            return;
        };
        self.stats.shares += 1;
        self.users
            .get_mut(&session)
            .expect("checked above")
            .files
            .push(slot);
    }

    /// The file at a slot known to be taken (a ring's members are).
    fn entry(&self, slot: u32) -> &FileEntry {
        self.files[slot as usize]
            .as_ref()
            .expect("a hash ring holds taken slots")
    }

    fn entry_mut(&mut self, slot: u32) -> &mut FileEntry {
        self.files[slot as usize]
            .as_mut()
            .expect("a hash ring holds taken slots")
    }

    fn insert_file(&mut self, owner: SessionId, mut share: Share) -> Option<u32> {
        // Bounded metadata: the file name first, then other tags while they fit.
        let mut kept = Vec::with_capacity(share.tags.len().min(self.cfg.max_tags));
        let mut bytes = 0;
        if let Some(i) = share.tags.iter().position(|t| t.id == TAG_FILENAME) {
            let t = share.tags.swap_remove(i);
            bytes += t.value.len();
            kept.push(t);
        }
        for t in share.tags {
            if kept.len() >= self.cfg.max_tags || bytes + t.value.len() > self.cfg.max_tag_bytes {
                break;
            }
            bytes += t.value.len();
            kept.push(t);
        }
        if kept.first().is_none_or(|t| t.id != TAG_FILENAME) || bytes > self.cfg.max_tag_bytes {
            return None;
        }
        // Values copied out (packed): a value read off the network is a slice
        // of the whole read buffer, which it would keep alive.
        let tags = pack(&kept);
        let (buf, spans, words) = &mut self.scratch;
        file_words(Packed(&tags), buf, spans, words);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.files.push(None);
                u32::try_from(self.files.len() - 1).ok()?
            }
        };
        for w in words.iter() {
            match self.words.get_mut(&w[..]) {
                Some(p) => p.insert(slot),
                None => {
                    self.words.insert(w[..].into(), Posting::Few(vec![slot]));
                }
            }
        }
        // Last in its hash's ring: before the first, after the one that was last.
        let (prev, next) = match self.by_hash.get(&share.hash) {
            Some(&first) => {
                let last = self.entry(first).prev;
                self.entry_mut(last).next = slot;
                self.entry_mut(first).prev = slot;
                (last, first)
            }
            None => {
                self.by_hash.insert(share.hash, slot);
                (slot, slot)
            }
        };
        if owner != OWN {
            self.files_total += 1;
            self.bytes_total += share.size;
        }
        self.files[slot as usize] = Some(FileEntry {
            owner,
            hash: share.hash,
            size: share.size,
            file_id: share.file_id,
            media: share.media,
            prev,
            next,
            tags,
        });
        Some(slot)
    }

    fn remove_file(&mut self, slot: u32) {
        let Some(f) = self.files.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        let (buf, spans, words) = &mut self.scratch;
        file_words(f.tags(), buf, spans, words);
        for w in words.iter() {
            if let Some(p) = self.words.get_mut(&w[..]) {
                p.remove(slot);
                if p.len() == 0 {
                    self.words.remove(&w[..]);
                }
            }
        }
        if f.next == slot {
            self.by_hash.remove(&f.hash);
        } else {
            self.entry_mut(f.prev).next = f.next;
            self.entry_mut(f.next).prev = f.prev;
            if self.by_hash.get(&f.hash) == Some(&slot) {
                self.by_hash.insert(f.hash, f.next);
            }
        }
        if f.owner != OWN {
            self.files_total -= 1;
            self.bytes_total -= f.size;
        }
        self.free.push(slot);
    }

    fn search(&mut self, session: SessionId, q: Query, now: Instant, out: &mut Vec<Action>) {
        let Some(user) = self.users.get_mut(&session) else {
            return;
        };
        let open = user.open.iter().any(|(id, _, _)| *id == q.id);
        if !open && user.repeats(&q, now) {
            // Answered a moment ago: its results are with the user already.
            self.stats.searches_repeated += 1;
            return out.push(Action::Send(session, Reply::End(q.id)));
        }
        match charge(
            user,
            BudgetKind::Query,
            now,
            &mut self.stats.searches_over_rate,
        ) {
            Verdict::Take => {}
            Verdict::Drop => {
                // Ended as answered: giFT's repeats of it are not charged
                // (each a strike more toward a close) but ended at once too.
                user.ended(q.id, q.signature(), now);
                return out.push(Action::Send(session, Reply::End(q.id)));
            }
            Verdict::Close => return self.close(session, CloseReason::Flood, out),
        }
        if user.info.is_none() {
            self.stats.searches_refused += 1;
            return out.push(Action::Send(session, Reply::End(q.id)));
        }
        self.stats.searches += 1;
        let mut bridge = !self.cfg.bridge_wait.is_zero() && !open;
        if bridge && user.open.len() >= self.cfg.max_open_searches {
            // Answered from our users alone, and ended at once: a burst sent
            // before the first 0x08 returns still gets its results.
            self.stats.searches_over_open += 1;
            bridge = false;
        }
        let max = usize::from(q.max_results).clamp(1, self.cfg.max_results);
        let hits = self.matches(&q, Some(session), max);
        let n = hits.len();
        self.stats.results += n as u64;
        self.send_hits(session, q.id, hits, out);
        let user = self.users.get_mut(&session).expect("checked above");
        if bridge {
            user.open
                .push((q.id, now + self.cfg.bridge_wait, q.signature()));
            user.sent.push((q.id, n));
            out.push(Action::Bridge {
                session,
                id: q.id,
                text: q.text(),
                hash: q.hash(),
            });
        } else if !open {
            user.ended(q.id, q.signature(), now);
            out.push(Action::Send(session, Reply::End(q.id)));
        }
    }

    /// Sends hits in 0x07 messages that stay well under 64 KiB each.
    fn send_hits(&self, session: SessionId, id: u16, hits: Vec<Hit>, out: &mut Vec<Action>) {
        let mut batch = Vec::new();
        let mut len = 10;
        for h in hits {
            let l = h.wire_len();
            if !batch.is_empty() && len + l > 32 * 1024 {
                out.push(Action::Send(
                    session,
                    Reply::Results {
                        supernode: self.cfg.me,
                        id,
                        hits: std::mem::take(&mut batch),
                    },
                ));
                len = 10;
            }
            len += l;
            batch.push(h);
        }
        if !batch.is_empty() {
            out.push(Action::Send(
                session,
                Reply::Results {
                    supernode: self.cfg.me,
                    id,
                    hits: batch,
                },
            ));
        }
    }

    /// The files matching a query, the asker's own left out.
    pub fn matches(&self, q: &Query, asker: Option<SessionId>, max: usize) -> Vec<Hit> {
        self.matching(q, max, |f| Some(f.owner) != asker)
            .into_iter()
            .map(|(_, h)| h)
            .collect()
    }

    /// Users' files (not the node's own) matching a query, with their slots,
    /// for answering the Gnutella network.
    pub fn matches_for_gnutella(&self, q: &Query, max: usize) -> Vec<(u32, Hit)> {
        self.matching(q, max, |f| f.owner != OWN)
    }

    /// Whether any user shares a file (the node's own do not count).
    pub fn has_user_files(&self) -> bool {
        self.files_total > 0
    }

    /// A user's file by slot, with its name checked.
    pub fn file_at(&self, slot: u32, name: &[u8]) -> Option<Hit> {
        let f = self.files.get(slot as usize)?.as_ref()?;
        (f.owner != OWN && f.filename() == name).then(|| self.hit(f))
    }

    /// A user's file by hash (the first one found).
    pub fn file_by_hash(&self, hash: &Fth) -> Option<Hit> {
        self.same_hash(hash)
            .map(|(_, f)| f)
            .find(|f| f.owner != OWN)
            .map(|f| self.hit(f))
    }

    /// The files with this hash, in the order they came, with their slots.
    fn same_hash(&self, hash: &Fth) -> impl Iterator<Item = (u32, &FileEntry)> + '_ {
        let first = self.by_hash.get(hash).copied();
        let mut at = first;
        std::iter::from_fn(move || {
            let slot = at?;
            let f = self.entry(slot);
            at = Some(f.next).filter(|&n| Some(n) != first);
            Some((slot, f))
        })
    }

    fn matching(
        &self,
        q: &Query,
        max: usize,
        keep: impl Fn(&FileEntry) -> bool,
    ) -> Vec<(u32, Hit)> {
        let media = q.media();
        let mut hits = Vec::new();
        let wanted = |f: &FileEntry| keep(f) && media.is_none_or(|m| m == f.media);
        if let Some(hash) = q.hash() {
            for (slot, f) in self.same_hash(&hash) {
                if hits.len() >= max {
                    break;
                }
                if wanted(f) {
                    hits.push((slot, self.hit(f)));
                }
            }
            return hits;
        }
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        keywords(q.text().as_bytes(), &mut buf, &mut spans);
        let mut sets = Vec::with_capacity(spans.len());
        for &(a, b) in &spans {
            match self.words.get(&buf[a as usize..b as usize]) {
                Some(set) => sets.push(set),
                None => return hits,
            }
        }
        sets.sort_by_key(|s| s.len());
        let Some((rarest, rest)) = sets.split_first() else {
            return hits;
        };
        for (scanned, slot) in rarest.iter().enumerate() {
            if hits.len() >= max || scanned >= self.cfg.max_scan {
                break;
            }
            if !rest.iter().all(|s| s.contains(slot)) {
                continue;
            }
            if let Some(f) = &self.files[slot as usize] {
                if wanted(f) {
                    hits.push((slot, self.hit(f)));
                }
            }
        }
        hits
    }

    fn hit(&self, f: &FileEntry) -> Hit {
        let (addr, bandwidth, user) = if f.owner == OWN {
            (self.own_addr, 0xD1, self.own_name.clone())
        } else {
            let u = &self.users[&f.owner];
            let info = u.info.as_ref();
            (
                u.fetch_addr(),
                info.map_or(0, |i| i.bandwidth),
                info.map_or_else(Bytes::new, |i| i.name.clone()),
            )
        };
        Hit {
            addr,
            bandwidth,
            user,
            hash: f.hash,
            file_id: f.file_id,
            size: f.size,
            tags: f.tag_list(),
        }
    }

    /// Hits from the Gnutella network for an open search (the shell has
    /// checked that each carries a true FTH). Late ones are counted and dropped.
    pub fn bridged(&mut self, session: SessionId, id: u16, hits: Vec<Hit>, out: &mut Vec<Action>) {
        let n = hits.len();
        let room = {
            let Some(user) = self.users.get_mut(&session) else {
                self.stats.bridged_late += n as u64;
                return;
            };
            let Some(sent) = user.sent.iter_mut().find(|(s, _)| *s == id) else {
                self.stats.bridged_late += n as u64;
                return;
            };
            let room = self.cfg.max_results.saturating_sub(sent.1).min(n);
            sent.1 += room;
            room
        };
        self.stats.bridged_late += (n - room) as u64;
        if room == 0 {
            return;
        }
        self.stats.bridged_results += room as u64;
        let mut hits = hits;
        hits.truncate(room);
        self.send_hits(session, id, hits, out);
    }

    fn push(&mut self, session: SessionId, p: PushRequest, now: Instant, out: &mut Vec<Action>) {
        let Some(user) = self.users.get_mut(&session) else {
            return;
        };
        match charge(
            user,
            BudgetKind::Push,
            now,
            &mut self.stats.pushes_over_rate,
        ) {
            Verdict::Take => {}
            Verdict::Drop => return,
            Verdict::Close => return self.close(session, CloseReason::Flood, out),
        }
        // The requester's address: what it says, or the socket's when it
        // never learnt its own.
        let requester = if p.requester.ip().is_unspecified() {
            SocketAddrV4::new(*user.peer.ip(), p.requester.port())
        } else {
            p.requester
        };
        let candidates = self.by_name.get(&p.target_user).map_or(&[][..], |v| &v[..]);
        // Several users may share a name: the one at the result's address first.
        let target = candidates
            .iter()
            .copied()
            .find(|s| {
                self.users
                    .get(s)
                    .is_some_and(|u| u.fetch_addr().ip() == p.target.ip())
            })
            .or_else(|| candidates.first().copied());
        match target {
            Some(t) if t != session => {
                self.stats.pushes += 1;
                out.push(Action::Send(
                    t,
                    Reply::Push {
                        push_id: p.push_id,
                        requester,
                    },
                ));
            }
            _ => self.stats.pushes_unknown += 1,
        }
    }

    /// A logged-in user with this name (the first one, when several share it).
    pub fn session_named(&self, name: &[u8]) -> Option<SessionId> {
        self.by_name.get(name)?.first().copied()
    }
}

#[cfg(test)]
mod tests;
