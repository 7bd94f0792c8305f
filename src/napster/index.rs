//! The central index, no I/O: who is online, what each user shares, an inverted
//! keyword index over every shared file name, search-clause evaluation, and the
//! brokering of transfers between users.
//!
//! The index is fed events (a connection opened, a message arrived, a connection
//! closed, time passed) with the time passed in, and answers with [`Action`]s
//! that the shell carries out: frames to send to connections, connections to
//! close, the accounts to save. It never blocks and never touches a socket, a
//! file or a clock.
//!
//! Cost rules:
//! - a search walks the posting list of its rarest keyword only, checking each
//!   candidate's name for the other keywords, and stops after `max_results`
//!   matches or `max_scan` candidates; a selective search therefore costs the
//!   same with ten thousand or ten million files indexed;
//! - removing a file tombstones its slot; posting lists are purged of tombstones
//!   in one pass once they make up a quarter of the slots, and a slot is reused
//!   only after that purge, so no posting list ever names a different file than
//!   the one it was made for;
//! - everything a connection can make us hold is capped: files per user,
//!   pending transfer requests per uploader, results per search and per browse,
//!   requests and errors per second (token buckets), time to log in.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hashbrown::HashTable;
use sha1::{Digest, Sha1};

use super::accounts::{Account, Accounts, Checked, Secret, valid_email};
use super::operators::{Ban, Level, Operators, Refused, clean_reason, normalize_ban};
use super::wire::{
    Fields, Frame, Kind, KindFilter, Line, SearchError, SearchRequest, ip_to_decimal,
    nick_and_file, number, types as t,
};

#[path = "link.rs"]
mod link;
pub use link::valid_server_name;

/// A connection, numbered by the shell; never reused while the index runs.
pub type ConnId = u64;

/// The time of an event: a monotonic instant for timeouts and the wall clock in
/// Unix seconds for what is stored (account registration).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

impl Now {
    /// The current time, read from the system clocks (for the shell).
    pub fn system() -> Now {
        Now {
            mono: Instant::now(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Queue a frame for a connection.
    Send(ConnId, Frame),
    /// Close a connection once what was queued before has been written. The index
    /// has already forgotten it.
    Close(ConnId),
    /// The accounts changed; write them out (the shell may batch these).
    SaveAccounts,
    /// Levels, muzzles or bans changed; write them out (batched like accounts).
    SaveOperators,
    /// A server link is up: everything sent on it from here on, and
    /// everything read after the peer's 10011, is one zlib stream (OpenNap's
    /// link compression).
    CompressLink(ConnId),
    /// Hash a new account's password (expensive: off the index task) and hand
    /// the result to [`Index::password_done`].
    HashPassword {
        conn: ConnId,
        password: Vec<u8>,
        salt: [u8; 16],
    },
    /// An admin set a registered nick's password (753): hash it (off the
    /// index task) and hand the result to [`Index::password_set`].
    SetPassword {
        nick: String,
        password: Vec<u8>,
        salt: [u8; 16],
    },
    /// Check a password against a stored secret (expensive: off the index task)
    /// and hand the result to [`Index::password_done`].
    CheckPassword {
        conn: ConnId,
        secret: Secret,
        password: Vec<u8>,
        fresh_salt: [u8; 16],
    },
}

/// What a password job found, handed back to [`Index::password_done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordResult {
    Hashed(Secret),
    Checked(Checked),
}

impl Action {
    /// Runs a password job here and now (tests and tools; the server runs them
    /// on blocking threads). `None` for any other action.
    pub fn run_password_job(&self) -> Option<(ConnId, PasswordResult)> {
        match self {
            Action::HashPassword {
                conn,
                password,
                salt,
            } => Some((
                *conn,
                PasswordResult::Hashed(super::accounts::hash_password(password, *salt)),
            )),
            Action::CheckPassword {
                conn,
                secret,
                password,
                fresh_salt,
            } => Some((
                *conn,
                PasswordResult::Checked(secret.check(password, *fresh_salt)),
            )),
            _ => None,
        }
    }

    /// Runs a 753's hashing here and now (tests; the server runs it on a
    /// blocking thread). `None` for any other action.
    pub fn run_set_password(&self) -> Option<(String, Secret)> {
        match self {
            Action::SetPassword {
                nick,
                password,
                salt,
            } => Some((
                nick.clone(),
                super::accounts::hash_password(password, *salt),
            )),
            _ => None,
        }
    }
}

/// Limits and texts of the index.
#[derive(Clone, Debug)]
pub struct IndexConfig {
    /// Our name in `anon@<name>` login acks.
    pub server_name: String,
    /// Lines of the message of the day (a `VERSION` line is sent before them).
    pub motd: Vec<Vec<u8>>,
    /// Users logged in at once.
    pub max_users: usize,
    /// Connections that have not logged in yet, at once; past it the oldest
    /// one of the address with the most such connections is dropped.
    pub max_unauthenticated: usize,
    /// Connections not logged in yet from one address; past it that address's
    /// oldest is dropped.
    pub max_unauthenticated_per_ip: usize,
    /// Users logged in from one address at once (0: no limit).
    pub max_users_per_ip: usize,
    /// Logins whose password is being hashed or checked at once; past it a
    /// login is refused with `server busy`.
    pub max_pending_logins: usize,
    /// Results per search at most (a client's `MAX_RESULTS` is lowered to it).
    pub max_results: u32,
    /// Entries per browse at most.
    pub max_browse: u32,
    /// Candidates one search may examine before it stops.
    pub max_scan: usize,
    /// Files one user may share.
    pub max_files_per_user: usize,
    /// Longest shared file name, in bytes.
    pub max_name_len: usize,
    /// Registered nicks kept at most.
    pub max_accounts: usize,
    /// Longest nick.
    pub max_nick_len: usize,
    /// Time a connection has to log in.
    pub login_timeout: Duration,
    /// Silence after which a logged-in user is sent a server ping (750).
    pub idle_ping: Duration,
    /// Silence after which a logged-in user is dropped.
    pub idle_timeout: Duration,
    /// Requests (everything but sharing and transfer counters) a user may send in
    /// a burst, and refilled per second.
    pub request_burst: f64,
    pub request_rate: f64,
    /// Bad messages tolerated in a burst, and forgiven per second; past that the
    /// connection is dropped.
    pub error_burst: f64,
    pub error_rate: f64,
    /// Download requests waiting for one uploader's accept, and how long each waits.
    pub max_pending_per_uploader: usize,
    pub transfer_timeout: Duration,
    /// Seed for password salts (fresh random bytes from the shell).
    pub salt_seed: [u8; 16],
    /// Nicks on one user's hotlist at most.
    pub max_hotlist: usize,
    /// Channels one user may be in at once.
    pub max_user_channels: usize,
    /// Channels that may exist at once.
    pub max_channels: usize,
    /// Users in one channel at most.
    pub max_channel_users: usize,
    /// Longest channel topic kept, in bytes.
    pub max_topic_len: usize,
    /// The password linked servers share; `None` refuses every link.
    pub link_password: Option<String>,
    /// Servers linked at once.
    pub max_links: usize,
    /// Users of linked servers tracked at once.
    pub max_remote_users: usize,
    /// Searches waiting for linked servers' answers at once.
    pub max_remote_searches: usize,
    /// How long a search waits for linked servers.
    pub remote_search_timeout: Duration,
}

impl Default for IndexConfig {
    fn default() -> IndexConfig {
        IndexConfig {
            server_name: "servent".into(),
            motd: Vec::new(),
            max_users: 10_000,
            max_unauthenticated: 256,
            max_unauthenticated_per_ip: 32,
            max_users_per_ip: 0,
            max_pending_logins: 32,
            max_results: 100,
            max_browse: 500,
            max_scan: 100_000,
            max_files_per_user: 10_000,
            max_name_len: 1024,
            max_accounts: 100_000,
            max_nick_len: 32,
            login_timeout: Duration::from_secs(30),
            idle_ping: Duration::from_secs(10 * 60),
            idle_timeout: Duration::from_secs(60 * 60),
            request_burst: 64.0,
            request_rate: 16.0,
            error_burst: 32.0,
            error_rate: 1.0,
            max_pending_per_uploader: 64,
            transfer_timeout: Duration::from_secs(60),
            salt_seed: [0; 16],
            max_hotlist: 64,
            max_user_channels: 5,
            max_channels: 1024,
            max_channel_users: 500,
            max_topic_len: 256,
            link_password: None,
            max_links: 8,
            max_remote_users: 100_000,
            max_remote_searches: 1024,
            remote_search_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters, for status output, tests and the bench.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages: u64,
    pub searches: u64,
    pub results: u64,
    /// Files looked at by searches (posting-list entries walked).
    pub candidates: u64,
    pub logins: u64,
    pub login_failures: u64,
    /// 404 / 0 errors sent for bad or unknown messages.
    pub errors: u64,
    /// Requests refused for coming too fast.
    pub throttled: u64,
    /// Connections dropped for errors, floods, timeouts or framing.
    pub dropped: u64,
    pub transfers_brokered: u64,
    pub compactions: u64,
}

/// A token bucket: `burst` tokens, refilled at `rate` per second.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, burst: f64, rate: f64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Conn {
    ip: Ipv4Addr,
    opened: Instant,
    last_heard: Instant,
    pinged: bool,
    user: Option<u32>,
    requests: Bucket,
    errors: Bucket,
    /// A login waiting for its password job.
    login: Option<Box<PendingLogin>>,
    /// For a remote user's pseudo connection: the link it is behind.
    remote: Option<ConnId>,
    /// For a server link: its handshake and state.
    link: Option<Box<link::LinkState>>,
}

/// A login whose password is being hashed (registration) or checked.
struct PendingLogin {
    nick: String,
    /// The nick is registered (its password was checked or just set).
    registered: bool,
    port: u16,
    link: u8,
    client: Box<[u8]>,
    email: String,
    /// What the client sent behind its login, before the password was
    /// checked (TekNap sends its shares at once): answered once it is in.
    held: Vec<Frame>,
    held_bytes: usize,
}

/// Messages a client may send behind its login before the password is
/// checked, and their bytes.
const MAX_HELD: usize = 256;
const MAX_HELD_BYTES: usize = 64 * 1024;

struct PendingRequest {
    downloader: ConnId,
    name: Box<[u8]>,
    deadline: Instant,
}

struct User {
    conn: ConnId,
    nick: Box<str>,
    ip: Ipv4Addr,
    port: u16,
    link: u8,
    client: Box<[u8]>,
    since: Instant,
    /// The user's file slots, found by name: the table holds only the 4-byte
    /// slot numbers, hashed and compared through the names in `arena`.
    files: HashTable<u32>,
    /// `name ++ md5` of each of the user's files, back to back; a slot knows its
    /// offset. Removed files leave dead bytes, squeezed out once they are a quarter.
    arena: Vec<u8>,
    /// Bytes of `arena` that belong to removed files.
    dead: u32,
    bytes: u64,
    downloads: u32,
    uploads: u32,
    total_downloads: u32,
    total_uploads: u32,
    /// Download requests sent to this user (607) that it has not accepted yet.
    pending: Vec<PendingRequest>,
    /// Nicks on this user's hotlist (lower case), at most `max_hotlist`.
    hotlist: Vec<Box<str>>,
    /// Channels joined (lower-case names), at most `max_user_channels`.
    channels: Vec<Box<str>>,
    level: Level,
    muzzled: bool,
    /// A user of a linked server (its files are there, not here).
    remote: bool,
    /// The files a remote user shares, as its server said.
    remote_files: u32,
    /// The file count changed since the links last heard it.
    shares_dirty: bool,
}

impl User {
    /// A user just logged in (or announced by a link): no files, no
    /// transfers, level User.
    fn new(
        conn: ConnId,
        nick: &str,
        ip: Ipv4Addr,
        port: u16,
        link: u8,
        client: Box<[u8]>,
        since: Instant,
    ) -> User {
        User {
            conn,
            nick: nick.into(),
            ip,
            port,
            link,
            client,
            since,
            files: HashTable::new(),
            arena: Vec::new(),
            dead: 0,
            bytes: 0,
            downloads: 0,
            uploads: 0,
            total_downloads: 0,
            total_uploads: 0,
            pending: Vec::new(),
            hotlist: Vec::new(),
            channels: Vec::new(),
            level: Level::User,
            muzzled: false,
            remote: false,
            remote_files: 0,
            shares_dirty: false,
        }
    }
}

/// A chat channel: exists while somebody is in it.
struct Channel {
    name: Box<str>,
    topic: Box<[u8]>,
    /// Members' user slots, in joining order.
    members: Vec<u32>,
}

/// `File::owner` of an empty slot.
const NO_OWNER: u32 = u32::MAX;
/// Largest file size kept (48 bits, 256 TiB); larger ones are stored as this.
const MAX_SIZE: u64 = (1 << 48) - 1;
/// `File::md5`: the bit saying the md5 was lower-case hex, stored as bytes.
const MD5_HEX: u8 = 0x80;

/// One shared file's slot: 28 bytes, no pointer. Its name and md5 field are in
/// the owner's arena.
#[derive(Clone, Copy)]
struct File {
    /// The owner's user slot, or `NO_OWNER` for an empty slot.
    owner: u32,
    /// Where `name ++ md5` starts in the owner's arena.
    at: u32,
    size_lo: u32,
    freq: u32,
    seconds: u32,
    size_hi: u16,
    bitrate: u16,
    name_len: u16,
    kind: u8,
    /// The md5 field's stored length, with `MD5_HEX`.
    md5: u8,
}

impl File {
    const EMPTY: File = File {
        owner: NO_OWNER,
        at: 0,
        size_lo: 0,
        freq: 0,
        seconds: 0,
        size_hi: 0,
        bitrate: 0,
        name_len: 0,
        kind: 0,
        md5: 0,
    };

    fn is_live(&self) -> bool {
        self.owner != NO_OWNER
    }

    fn size(&self) -> u64 {
        (self.size_hi as u64) << 32 | self.size_lo as u64
    }

    /// Bytes it takes in the owner's arena.
    fn stored_len(&self) -> usize {
        self.name_len as usize + (self.md5 & !MD5_HEX) as usize
    }

    /// Its name and stored md5, from the owner's arena.
    fn entry<'a>(&self, arena: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        let at = self.at as usize;
        let mid = at + self.name_len as usize;
        (&arena[at..mid], &arena[mid..at + self.stored_len()])
    }

    fn name<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        self.entry(arena).0
    }

    fn write_md5(&self, arena: &[u8], out: &mut BytesMut) {
        let md5 = self.entry(arena).1;
        if self.md5 & MD5_HEX != 0 {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for &b in md5 {
                out.put_u8(HEX[(b >> 4) as usize]);
                out.put_u8(HEX[(b & 15) as usize]);
            }
        } else {
            out.put_slice(md5);
        }
    }

    fn md5_text(&self, arena: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        self.write_md5(arena, &mut b);
        b.freeze()
    }
}

/// Makes room for `n` more items, growing by an eighth (at least 4 items) rather
/// than doubling, so that at most about an eighth of a long vector is slack. Big
/// vectors are reallocated in place by the allocator (`mremap`), so the smaller
/// steps cost little.
fn reserve_slim<T>(v: &mut Vec<T>, n: usize) {
    if v.capacity() - v.len() < n {
        v.reserve_exact(n.max(v.len() / 8).max(4));
    }
}

/// Shrinks a vector holding less than a quarter of its capacity.
fn shrink_vec<T>(v: &mut Vec<T>) {
    if v.capacity() > 64 && v.len() < v.capacity() / 4 {
        v.shrink_to(v.len() * 2);
    }
}

/// Shrinks a map holding less than a quarter of its capacity.
fn shrink_map<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > 64 && m.len() < m.capacity() / 4 {
        m.shrink_to(m.len() * 2);
    }
}

/// The slot of `user`'s file called `name`.
fn find_file(files: &[File], user: &User, hash: u64, name: &[u8]) -> Option<u32> {
    user.files
        .find(hash, |&id| files[id as usize].name(&user.arena) == name)
        .copied()
}

/// A file's attributes as a share message gives them.
struct NewFile<'a> {
    name: &'a [u8],
    md5: &'a [u8],
    size: u64,
    bitrate: u32,
    freq: u32,
    seconds: u32,
    kind: Kind,
}

/// The OpenNap version whose client protocol we speak, for the MOTD's first line.
pub const OPENNAP_COMPAT: &str = "0.44";

/// Most keywords indexed per file.
const MAX_WORDS_PER_FILE: usize = 32;
/// Longest md5 field kept.
const MAX_MD5_LEN: usize = 64;

/// Splits `text` into folded keywords: runs of ASCII letters and digits and
/// non-ASCII bytes, ASCII-lower-cased (and Unicode-lower-cased when the run is
/// UTF-8), at most [`MAX_WORDS_PER_FILE`] distinct ones. Folded bytes go to
/// `buf`, each keyword's span to `spans`.
pub fn keywords(text: &[u8], buf: &mut Vec<u8>, spans: &mut Vec<(u32, u32)>) {
    buf.clear();
    spans.clear();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b >= 0x80;
    let mut i = 0;
    while i < text.len() && spans.len() < MAX_WORDS_PER_FILE {
        if !is_word(text[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && is_word(text[i]) {
            i += 1;
        }
        let run = &text[start..i];
        let from = buf.len();
        if run.is_ascii() {
            buf.extend(run.iter().map(u8::to_ascii_lowercase));
        } else if let Ok(s) = std::str::from_utf8(run) {
            buf.extend_from_slice(s.to_lowercase().as_bytes());
        } else {
            buf.extend(run.iter().map(u8::to_ascii_lowercase));
        }
        let span = (from as u32, buf.len() as u32);
        let word = &buf[from..];
        if spans
            .iter()
            .any(|&(a, b)| &buf[a as usize..b as usize] == word)
        {
            buf.truncate(from);
        } else {
            spans.push(span);
        }
    }
}

/// Whether the sorted `list` holds `id`, looking from `*pos` on and leaving
/// `*pos` at the first entry not below `id`: ids asked for in rising order
/// walk the list once, in steps that double (galloping), so a short list
/// checked against a long one costs about log(long / short) per check.
fn gallop_to(list: &[u32], pos: &mut usize, id: u32) -> bool {
    let mut lo = *pos;
    match list.get(lo) {
        None => return false,
        Some(&x) if x >= id => return x == id,
        Some(_) => {}
    }
    // Here list[lo] < id; widen until list[hi] >= id or the end.
    let mut step = 1;
    let mut hi = lo + 1;
    while hi < list.len() && list[hi] < id {
        lo = hi;
        step *= 2;
        hi = lo + step;
    }
    let hi = hi.min(list.len());
    let p = lo + 1 + list[lo + 1..hi].partition_point(|&x| x < id);
    *pos = p;
    list.get(p) == Some(&id)
}

/// Appends `n` in decimal.
fn put_decimal(out: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

fn lower_hex_bytes(s: &[u8]) -> Option<Vec<u8>> {
    if s.is_empty() || s.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    s.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// OpenNap's nick rule: printable ASCII without `%$*?.!",`, not starting with a
/// channel sign, not a service name, and not too long.
pub fn valid_nick(nick: &[u8], max_len: usize) -> bool {
    if nick.is_empty() || nick.len() > max_len {
        return false;
    }
    if matches!(nick[0], b'#' | b'&' | b':') {
        return false;
    }
    for reserved in ["operserv", "chanserv", "operator"] {
        if nick.eq_ignore_ascii_case(reserved.as_bytes()) {
            return false;
        }
    }
    nick.iter()
        .all(|&c| (b'!'..=b'~').contains(&c) && !b"%$*?.!\",".contains(&c))
}

/// The first space-separated word of `data` (quotes stripped), as OpenNap reads
/// a nick: `"bob "` and `bob extra` both name `bob`.
fn first_word(data: &[u8]) -> &[u8] {
    Fields::new(data).next_field().unwrap_or_default()
}

fn err_frame(ty: u16, text: impl AsRef<[u8]>) -> Frame {
    Frame::new(ty, Bytes::copy_from_slice(text.as_ref()))
}

/// Strips one pair of surrounding quotes, if present.
fn unquote(s: &[u8]) -> &[u8] {
    match s {
        [b'"', inner @ .., b'"'] => inner,
        _ => s,
    }
}

/// The central index.
pub struct Index {
    cfg: IndexConfig,
    accounts: Accounts,
    ops: Operators,
    salts: u64,
    conns: HashMap<ConnId, Conn>,
    users: Vec<Option<User>>,
    free_users: Vec<u32>,
    nicks: HashMap<String, u32>,
    online: usize,
    unauthenticated: usize,
    /// Connections not logged in yet, by address, oldest (lowest id) first.
    unauth_by_ip: HashMap<Ipv4Addr, BTreeSet<ConnId>>,
    /// Users logged in, by address.
    users_by_ip: HashMap<Ipv4Addr, u32>,
    /// Logins waiting for a password job.
    pending_logins: usize,
    /// Memory was handed back (see [`Index::take_trimmed`]).
    trimmed: bool,
    /// Every file slot, live or emptied, in the order the files were shared;
    /// a slot's number is its file's id in the posting lists.
    files: Vec<File>,
    /// Slots emptied since the last purge (which drops them).
    dead_files: usize,
    live_files: usize,
    total_bytes: u64,
    words: HashMap<Box<[u8]>, Vec<u32>>,
    /// Who has a nick (lower case) on their hotlist: their connections.
    watchers: HashMap<Box<str>, Vec<ConnId>>,
    /// Channels by lower-case name.
    channels: HashMap<Box<str>, Channel>,
    name_hasher: RandomState,
    stats: Stats,
    /// Users of linked servers.
    remote_users: usize,
    /// Established links' connections.
    link_list: Vec<ConnId>,
    /// 753 hashes running.
    pending_set: usize,
    next_pseudo: ConnId,
    remote_searches: HashMap<u64, link::RemoteSearch>,
    next_search: u64,
    /// Local users whose file count the links have not heard yet.
    shares_dirty: Vec<u32>,
    // Scratch buffers, kept to avoid allocating per message.
    buf: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl Index {
    pub fn new(cfg: IndexConfig, accounts: Accounts) -> Index {
        Index {
            cfg,
            accounts,
            ops: Operators::default(),
            salts: 0,
            conns: HashMap::new(),
            users: Vec::new(),
            free_users: Vec::new(),
            nicks: HashMap::new(),
            online: 0,
            unauthenticated: 0,
            unauth_by_ip: HashMap::new(),
            users_by_ip: HashMap::new(),
            pending_logins: 0,
            trimmed: false,
            files: Vec::new(),
            dead_files: 0,
            live_files: 0,
            total_bytes: 0,
            words: HashMap::new(),
            watchers: HashMap::new(),
            channels: HashMap::new(),
            name_hasher: RandomState::new(),
            stats: Stats::default(),
            remote_users: 0,
            link_list: Vec::new(),
            pending_set: 0,
            next_pseudo: link::PSEUDO_BASE,
            remote_searches: HashMap::new(),
            next_search: 0,
            shares_dirty: Vec::new(),
            buf: Vec::new(),
            spans: Vec::new(),
        }
    }

    pub fn config(&self) -> &IndexConfig {
        &self.cfg
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// Levels, muzzles and bans (read from the data directory by the shell).
    pub fn operators(&self) -> &Operators {
        &self.ops
    }

    pub fn set_operators(&mut self, ops: Operators) {
        self.ops = ops;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Users logged in.
    pub fn users_online(&self) -> usize {
        self.online
    }

    /// Files in the index.
    pub fn files_indexed(&self) -> usize {
        self.live_files
    }

    /// Distinct keywords in the index.
    pub fn keyword_count(&self) -> usize {
        self.words.len()
    }

    /// Whether `nick` is online.
    pub fn is_online(&self, nick: &str) -> bool {
        self.nicks.contains_key(&nick.to_ascii_lowercase())
    }

    /// A connection opened from `ip`. Room is made by dropping the oldest
    /// connection that has not logged in, of this address when it has too many,
    /// else of the address with the most, so sockets that never log in cannot
    /// lock anybody else out.
    pub fn connect(&mut self, conn: ConnId, ip: Ipv4Addr, now: Now, out: &mut Vec<Action>) {
        let mine = self.unauth_by_ip.get(&ip).map_or(0, BTreeSet::len);
        let victim = if mine >= self.cfg.max_unauthenticated_per_ip.max(1) {
            Some(ip)
        } else if self.unauthenticated >= self.cfg.max_unauthenticated.max(1) {
            self.unauth_by_ip
                .iter()
                .max_by_key(|(_, set)| set.len())
                .map(|(ip, _)| *ip)
        } else {
            None
        };
        if let Some(vip) = victim {
            let oldest = self
                .unauth_by_ip
                .get(&vip)
                .and_then(|set| set.first().copied());
            if let Some(old) = oldest {
                self.drop_conn(old, "too many connections, try again later", out);
            }
        }
        self.unauthenticated += 1;
        self.unauth_by_ip.entry(ip).or_default().insert(conn);
        self.conns.insert(
            conn,
            Conn {
                ip,
                opened: now.mono,
                last_heard: now.mono,
                pinged: false,
                user: None,
                requests: Bucket::full(self.cfg.request_burst, now.mono),
                errors: Bucket::full(self.cfg.error_burst, now.mono),
                login: None,
                remote: None,
                link: None,
            },
        );
    }

    /// Forgets that `conn` from `ip` is not logged in yet.
    fn forget_unauth(&mut self, conn: ConnId, ip: Ipv4Addr) {
        self.unauthenticated -= 1;
        if let Some(set) = self.unauth_by_ip.get_mut(&ip) {
            set.remove(&conn);
            if set.is_empty() {
                self.unauth_by_ip.remove(&ip);
            }
        }
    }

    /// A connection closed (or the shell gave up on it).
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if c.login.is_some() {
            self.pending_logins -= 1;
        }
        self.remote_searches.retain(|_, s| s.conn != conn);
        if c.link.as_ref().is_some_and(|l| l.established) {
            tracing::info!(conn, "server link closed");
            self.link_closed(conn, out);
            self.shrink_maps();
            return;
        }
        if c.remote.is_some() {
            if let Some(slot) = c.user {
                self.remote_users -= 1;
                self.remove_user(slot, out);
            }
            return;
        }
        match c.user {
            None => self.forget_unauth(conn, c.ip),
            Some(slot) => {
                if let Some(n) = self.users_by_ip.get_mut(&c.ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.users_by_ip.remove(&c.ip);
                    }
                }
                self.remove_user(slot, out);
            }
        }
        self.shrink_maps();
    }

    /// The shell could not frame what the connection sent (too long a message):
    /// it gets an error and is dropped.
    pub fn framing_error(&mut self, conn: ConnId, reason: &str, out: &mut Vec<Action>) {
        self.drop_conn(conn, reason, out);
    }

    /// Sends the error the connection's state calls for (0 before login, 404
    /// after), then closes it.
    fn drop_conn(&mut self, conn: ConnId, reason: &str, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let ty = if c.user.is_some() {
            t::NOSUCH
        } else {
            t::ERROR
        };
        out.push(Action::Send(conn, err_frame(ty, reason)));
        out.push(Action::Close(conn));
        self.stats.dropped += 1;
        self.disconnect(conn, out);
    }

    /// Sends a 404 for a bad message and charges the error budget; a connection
    /// that has spent it is dropped.
    fn bad(&mut self, conn: ConnId, text: &str, now: Now, out: &mut Vec<Action>) {
        self.stats.errors += 1;
        let (burst, rate) = (self.cfg.error_burst, self.cfg.error_rate);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // A remote user's errors are its own server's to count.
        if c.remote.is_none() && !c.errors.take(burst, rate, now.mono) {
            self.drop_conn(conn, "too many errors", out);
            return;
        }
        out.push(Action::Send(conn, err_frame(t::NOSUCH, text)));
    }

    /// Time passed: logins that took too long, silent users, download requests
    /// nobody accepted.
    pub fn tick(&mut self, now: Now, out: &mut Vec<Action>) {
        let mut late = Vec::new();
        let mut ping = Vec::new();
        for (&id, c) in &self.conns {
            if c.remote.is_some() || c.link.as_ref().is_some_and(|l| l.established) {
                continue;
            }
            let silent = now.mono.saturating_duration_since(c.last_heard);
            match c.user {
                None if now.mono.saturating_duration_since(c.opened) >= self.cfg.login_timeout => {
                    late.push((id, "login timed out"))
                }
                Some(_) if silent >= self.cfg.idle_timeout => late.push((id, "idle timeout")),
                Some(_) if silent >= self.cfg.idle_ping && !c.pinged => ping.push(id),
                _ => {}
            }
        }
        for id in ping {
            if let Some(c) = self.conns.get_mut(&id) {
                c.pinged = true;
            }
            out.push(Action::Send(id, Frame::empty(t::SERVER_PING)));
        }
        for (id, why) in late {
            self.drop_conn(id, why, out);
        }
        self.expire_remote_searches(now, out);
        self.send_share_counts(out);
        // Requests that waited too long for their uploader.
        let mut failed = Vec::new();
        for u in self.users.iter_mut().flatten() {
            if u.pending.iter().any(|p| p.deadline <= now.mono) {
                let nick = u.nick.clone();
                u.pending.retain(|p| {
                    if p.deadline <= now.mono {
                        failed.push((p.downloader, nick.clone(), p.name.clone()));
                        false
                    } else {
                        true
                    }
                });
            }
        }
        for (d, nick, name) in failed {
            if self.conns.get(&d).is_some_and(|c| c.user.is_some()) {
                out.push(Action::Send(
                    d,
                    Line::new()
                        .word(&*nick)
                        .quoted(name)
                        .frame(t::UPLOAD_FAILED),
                ));
            }
        }
    }

    /// A message arrived on a connection.
    pub fn receive(&mut self, conn: ConnId, frame: &Frame, now: Now, out: &mut Vec<Action>) {
        self.stats.messages += 1;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_heard = now.mono;
        c.pinged = false;
        if c.link.as_ref().is_some_and(|l| l.established) {
            return self.receive_link(conn, frame, now, out);
        }
        let Some(slot) = c.user else {
            self.receive_unauthenticated(conn, frame, now, out);
            return;
        };
        // Sharing and transfer counters are bounded by other caps; every other
        // request costs a token.
        let free = matches!(
            frame.ty,
            t::SHARE
                | t::SHARE_GENERIC
                | t::SHARE_DIR
                | t::UNSHARE
                | t::UNSHARE_ALL
                | t::DOWNLOAD_START
                | t::DOWNLOAD_END
                | t::UPLOAD_START
                | t::UPLOAD_END
                | t::SERVER_PING
                | t::PONG
        );
        if !free
            && !c
                .requests
                .take(self.cfg.request_burst, self.cfg.request_rate, now.mono)
        {
            self.stats.throttled += 1;
            self.bad(conn, "too many requests, slow down", now, out);
            if frame.ty == t::SEARCH && self.conns.contains_key(&conn) {
                out.push(Action::Send(conn, Frame::empty(t::SEARCH_END)));
            }
            return;
        }
        let data = &frame.data[..];
        // A leech may talk but takes no part in sharing, as in OpenNap.
        let leech = self.user(slot).level == Level::Leech;
        if !leech && self.forward(conn, slot, frame, out) {
            return;
        }
        if matches!(
            frame.ty,
            t::SHARE | t::SHARE_GENERIC | t::SHARE_DIR | t::UNSHARE | t::UNSHARE_ALL
        ) {
            self.mark_shares_dirty(slot);
        }
        match frame.ty {
            t::SHARE | t::SHARE_GENERIC | t::SHARE_DIR if leech => {}
            t::SEARCH if leech => out.push(Action::Send(conn, Frame::empty(t::SEARCH_END))),
            t::DOWNLOAD | t::FIREWALL_DOWNLOAD if leech => {
                self.bad(conn, "permission denied: you are a leech", now, out)
            }
            t::BROWSE if leech => {
                let line = Line::new().word(first_word(data)).num(0);
                out.push(Action::Send(conn, line.frame(t::BROWSE_END)));
            }
            t::SET_LEVEL => self.set_level(conn, slot, data, now, out),
            t::KILL => self.kill(conn, slot, data, now, out),
            t::BAN => self.ban(conn, slot, data, now, out),
            t::UNBAN => self.unban(conn, slot, data, now, out),
            t::BANLIST => self.banlist(conn, slot, now, out),
            t::MUZZLE => self.muzzle(conn, slot, data, true, now, out),
            t::UNMUZZLE => self.muzzle(conn, slot, data, false, now, out),
            t::WALLOP | t::ANNOUNCE => self.broadcast(conn, slot, frame.ty, data, now, out),
            t::ALTER_PASSWORD => self.alter_password(conn, slot, data, now, out),
            t::SERVER_VERSION => {
                if self.user(slot).level < Level::Moderator {
                    return self.bad(conn, "permission denied", now, out);
                }
                let version = format!(
                    "servent {} (opennap {OPENNAP_COMPAT} protocol)",
                    env!("CARGO_PKG_VERSION")
                );
                for text in ["--", &version, "--"] {
                    out.push(Action::Send(conn, err_frame(t::NOSUCH, text)));
                }
            }
            t::LOGIN | t::NEW_USER_LOGIN | t::NICK_CHECK => {
                self.bad(conn, "you are already logged in", now, out)
            }
            t::SHARE => match Self::parse_share(data) {
                Some(f) => self.share(conn, slot, f, now, out),
                None => self.bad(conn, "invalid parameters for share (100)", now, out),
            },
            t::SHARE_GENERIC => self.share_generic(conn, slot, data, now, out),
            t::SHARE_DIR => self.share_dir(conn, slot, data, now, out),
            t::UNSHARE => {
                let name = unquote(data);
                if !self.unshare(slot, name) {
                    self.bad(conn, "not sharing that file", now, out);
                }
            }
            t::UNSHARE_ALL => self.unshare_all(slot),
            t::SEARCH => self.search(conn, data, now, out),
            t::DOWNLOAD => self.download(conn, slot, data, false, now, out),
            t::FIREWALL_DOWNLOAD => self.download(conn, slot, data, true, now, out),
            t::UPLOAD_ACCEPT => self.accept_upload(conn, slot, data, now, out),
            t::PRIVATE_MESSAGE => self.private_message(conn, slot, data, now, out),
            t::BROWSE => self.browse(conn, data, now, out),
            t::WHOIS => self.whois(conn, data, now, out),
            t::LINK_SPEED => {
                // OpenNap reads the first word: a client may send `<nick> `.
                let nick = first_word(data);
                match self.user_by_nick(nick) {
                    Some(u) => {
                        let line = Line::new().word(&*u.nick).num(u.link);
                        out.push(Action::Send(conn, line.frame(t::LINK_SPEED_REPLY)));
                    }
                    None => self.not_online(conn, nick, now, out),
                }
            }
            t::PING | t::PONG => {
                // `751 <nick> [<text>]` goes to <nick> as `751 <sender> [<text>]`;
                // a 752 (its answer) travels the same way back.
                let mut f = Fields::new(data);
                let nick = f.next_field().unwrap_or_default();
                let rest = f.rest();
                match self.user_by_nick(nick) {
                    Some(u) => {
                        let to = u.conn;
                        let mut line = BytesMut::new();
                        line.put_slice(self.user(slot).nick.as_bytes());
                        if !rest.is_empty() {
                            line.put_u8(b' ');
                            line.put_slice(rest);
                        }
                        out.push(Action::Send(to, Frame::new(frame.ty, line.freeze())));
                    }
                    None if frame.ty == t::PING => {
                        let text = format!(
                            "ping failed, {} is not online",
                            String::from_utf8_lossy(nick)
                        );
                        self.bad(conn, &text, now, out);
                    }
                    None => {}
                }
            }
            t::BROWSE_DIRECT => self.browse_direct(conn, slot, data, now, out),
            t::HOTLIST_ADD | t::HOTLIST_INIT => self.hotlist_add(conn, slot, data, now, out),
            t::HOTLIST_REMOVE => self.hotlist_remove(conn, slot, data, now, out),
            t::JOIN => self.join(conn, slot, data, now, out),
            t::PART => self.part(conn, slot, data, now, out),
            t::PUBLIC => self.public(conn, slot, data, now, out),
            t::TOPIC => self.topic(conn, slot, data, now, out),
            t::LIST_CHANNELS => {
                let mut names: Vec<&Channel> = self.channels.values().collect();
                names.sort_by(|a, b| a.name.cmp(&b.name));
                for c in names {
                    let line = Line::new()
                        .word(&*c.name)
                        .num(c.members.len())
                        .word(&c.topic);
                    out.push(Action::Send(conn, line.frame(t::CHANNEL_LIST)));
                }
                out.push(Action::Send(conn, Frame::empty(t::LIST_CHANNELS)));
            }
            t::FULL_CHANNEL_LIST => {
                let mut names: Vec<&Channel> = self.channels.values().collect();
                names.sort_by(|a, b| a.name.cmp(&b.name));
                for c in names {
                    // name, users, unregistered (ours all are), the level a
                    // member needs (User, 1, as opennap-ng's default), limit, topic
                    let line = Line::new()
                        .word(&*c.name)
                        .num(c.members.len())
                        .num(1)
                        .num(1)
                        .num(self.cfg.max_channel_users)
                        .quoted(&c.topic);
                    out.push(Action::Send(conn, line.frame(t::FULL_CHANNEL_INFO)));
                }
                out.push(Action::Send(conn, Frame::empty(t::FULL_CHANNEL_LIST)));
            }
            t::NAMES_LIST => {
                let key = String::from_utf8_lossy(first_word(data)).to_ascii_lowercase();
                let Some(chan) = self.channels.get(key.as_str()) else {
                    let text = format!(
                        "channel {} does not exist",
                        String::from_utf8_lossy(first_word(data))
                    );
                    return self.bad(conn, &text, now, out);
                };
                if !chan.members.contains(&slot) {
                    let text = format!("you're not on channel {}", chan.name);
                    return self.bad(conn, &text, now, out);
                }
                let (name, members) = (chan.name.clone(), chan.members.clone());
                for m in members {
                    out.push(Action::Send(
                        conn,
                        self.member_line(&name, m).frame(t::NAMES_ENTRY),
                    ));
                }
                out.push(Action::Send(conn, Frame::empty(t::NAMES_LIST)));
            }
            t::RESUME_SEARCH => self.resume_search(conn, data, now, out),
            t::BROWSE_DIRECT_OK => self.browse_direct_ok(conn, slot, data, now, out),
            t::SERVER_PING => {
                // A client's ping gets an empty 750 back; a client's answer to
                // ours (its nick) needs nothing.
                if data.is_empty() {
                    out.push(Action::Send(conn, Frame::empty(t::SERVER_PING)));
                }
            }
            t::STATS => out.push(Action::Send(conn, self.stats_frame())),
            t::MOTD => self.send_motd(conn, out),
            t::DOWNLOAD_START | t::DOWNLOAD_END | t::UPLOAD_START | t::UPLOAD_END => {
                let u = self.user_mut(slot);
                match frame.ty {
                    t::DOWNLOAD_START => {
                        u.downloads = u.downloads.saturating_add(1);
                        u.total_downloads = u.total_downloads.saturating_add(1);
                    }
                    t::DOWNLOAD_END => u.downloads = u.downloads.saturating_sub(1),
                    t::UPLOAD_START => {
                        u.uploads = u.uploads.saturating_add(1);
                        u.total_uploads = u.total_uploads.saturating_add(1);
                    }
                    _ => u.uploads = u.uploads.saturating_sub(1),
                }
            }
            t::DATA_PORT => match number::<u16>(data) {
                Some(p) => self.user_mut(slot).port = p,
                None => self.bad(conn, "invalid port", now, out),
            },
            700 => match number::<u8>(data).filter(|&s| s <= 10) {
                Some(s) => self.user_mut(slot).link = s,
                None => self.bad(conn, "invalid speed", now, out),
            },
            t::VERSION_CHECK | t::DISCONNECTING => {}
            other => {
                let text = format!("Unknown command code {other}");
                self.bad(conn, &text, now, out)
            }
        }
    }

    fn user(&self, slot: u32) -> &User {
        self.users[slot as usize]
            .as_ref()
            .expect("a connection's user slot is filled")
    }

    fn user_mut(&mut self, slot: u32) -> &mut User {
        self.users[slot as usize]
            .as_mut()
            .expect("a connection's user slot is filled")
    }

    fn slot_by_nick(&self, nick: &[u8]) -> Option<u32> {
        let nick = std::str::from_utf8(nick).ok()?;
        self.nicks.get(&nick.to_ascii_lowercase()).copied()
    }

    fn user_by_nick(&self, nick: &[u8]) -> Option<&User> {
        self.slot_by_nick(nick).map(|s| self.user(s))
    }

    fn not_online(&mut self, conn: ConnId, nick: &[u8], now: Now, out: &mut Vec<Action>) {
        let text = format!("{} is not currently online", String::from_utf8_lossy(nick));
        self.bad(conn, &text, now, out);
    }

    fn stats_frame(&self) -> Frame {
        Line::new()
            .num(self.online)
            .num(self.live_files)
            .num(self.total_bytes >> 30)
            .frame(t::STATS)
    }

    fn send_motd(&self, conn: ConnId, out: &mut Vec<Action>) {
        // TekNap (and other clients) treat a server as OpenNap only when the
        // first line starts `VERSION opennap`; say what we speak, then who we are.
        let version = format!(
            "VERSION opennap {OPENNAP_COMPAT} (servent {})",
            env!("CARGO_PKG_VERSION")
        );
        out.push(Action::Send(conn, err_frame(t::MOTD, version)));
        for line in &self.cfg.motd {
            out.push(Action::Send(conn, err_frame(t::MOTD, line)));
        }
    }

    // ---- login ----

    fn receive_unauthenticated(
        &mut self,
        conn: ConnId,
        frame: &Frame,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        if self.conns.get(&conn).is_some_and(|c| c.link.is_some()) {
            // A server in its handshake says nothing else.
            return match frame.ty {
                t::SERVER_LOGIN => self.link_login(conn, &frame.data, out),
                t::SERVER_LOGIN_ACK => self.link_login_ack(conn, &frame.data, now, out),
                _ => self.drop_conn(conn, "link failed: unexpected message", out),
            };
        }
        if let Some(pending) = self.conns.get_mut(&conn).and_then(|c| c.login.as_mut()) {
            if !matches!(frame.ty, t::LOGIN | t::NEW_USER_LOGIN) {
                // Sent right behind the login: kept until the password is
                // checked, within bounds.
                if pending.held.len() >= MAX_HELD
                    || pending.held_bytes + frame.data.len() > MAX_HELD_BYTES
                {
                    self.stats.login_failures += 1;
                    return self.drop_conn(
                        conn,
                        "too much sent before the login was accepted",
                        out,
                    );
                }
                pending.held_bytes += frame.data.len();
                pending.held.push(frame.clone());
                return;
            }
        }
        match frame.ty {
            t::SERVER_LOGIN => self.link_login(conn, &frame.data, out),
            t::LOGIN | t::NEW_USER_LOGIN => self.login(conn, frame, now, out),
            t::NICK_CHECK => {
                let nick = &frame.data[..];
                let reply = if !valid_nick(nick, self.cfg.max_nick_len) {
                    t::NICK_INVALID
                } else if std::str::from_utf8(nick).is_ok_and(|n| self.accounts.get(n).is_some()) {
                    t::NICK_REGISTERED
                } else {
                    t::NICK_FREE
                };
                out.push(Action::Send(conn, Frame::empty(reply)));
            }
            // Sent by some clients before they log in; nothing to answer.
            t::VERSION_CHECK | t::DATA_PORT => {}
            _ => {
                self.stats.login_failures += 1;
                self.drop_conn(conn, "invalid command", out);
            }
        }
    }

    fn login(&mut self, conn: ConnId, frame: &Frame, now: Now, out: &mut Vec<Action>) {
        if self.conns.get(&conn).is_some_and(|c| c.login.is_some()) {
            // A second login while the first one's password is being checked.
            return self.drop_conn(conn, "invalid command", out);
        }
        let new_user = frame.ty == t::NEW_USER_LOGIN;
        let parsed = Fields::at_least::<5>(&frame.data).and_then(|(f, mut rest)| {
            let email = rest.next_field();
            if new_user && email.is_none() {
                return None;
            }
            Some((f, email))
        });
        let refuse = |this: &mut Index, out: &mut Vec<Action>, why: String| {
            this.stats.login_failures += 1;
            this.drop_conn(conn, &why, out);
        };
        let Some(([nick, password, port, client, link], email)) = parsed else {
            return refuse(self, out, "invalid login message".into());
        };
        if !valid_nick(nick, self.cfg.max_nick_len) {
            return refuse(self, out, "invalid nick".into());
        }
        let nick = String::from_utf8_lossy(nick).into_owned();
        let Some(port) = number::<u16>(port) else {
            return refuse(self, out, "invalid port".into());
        };
        let Some(link) = number::<u8>(link).filter(|&l| l <= 10) else {
            return refuse(self, out, "invalid speed".into());
        };
        let ip = self
            .conns
            .get(&conn)
            .map_or(Ipv4Addr::UNSPECIFIED, |c| c.ip);
        if let Some(b) = self.ops.banned(&nick, &ip.to_string(), now.unix) {
            let why = if b.reason.is_empty() {
                format!("{} banned", b.target)
            } else {
                format!("{} banned: {}", b.target, b.reason)
            };
            return refuse(self, out, why);
        }
        let mut pending = PendingLogin {
            nick: nick.clone(),
            registered: self.accounts.get(&nick).is_some() || new_user,
            port,
            link,
            client: client.into(),
            email: String::new(),
            held: Vec::new(),
            held_bytes: 0,
        };
        let job = match (self.accounts.get(&nick), new_user) {
            (Some(_), true) => {
                return refuse(self, out, "account registered to another user".into());
            }
            (Some(account), false) => Some(Action::CheckPassword {
                conn,
                secret: account.secret.clone(),
                password: password.to_vec(),
                fresh_salt: [0; 16],
            }),
            (None, false) => None,
            (None, true) => {
                let email = email.unwrap_or_default();
                if !valid_email(email) {
                    return refuse(self, out, "invalid email address".into());
                }
                if self.accounts.len() >= self.cfg.max_accounts {
                    return refuse(self, out, "registration is closed".into());
                }
                pending.email = String::from_utf8_lossy(email).into_owned();
                Some(Action::HashPassword {
                    conn,
                    password: password.to_vec(),
                    salt: [0; 16],
                })
            }
        };
        if let Some(why) = self.login_blocked(conn, &nick) {
            return refuse(self, out, why);
        }
        let Some(mut job) = job else {
            pending.email = format!("anon@{}", self.cfg.server_name);
            return self.finish_login(conn, pending, now, out);
        };
        if self.pending_logins >= self.cfg.max_pending_logins.max(1) {
            return refuse(self, out, "server busy, try again later".into());
        }
        let fresh = self.next_salt();
        match &mut job {
            Action::HashPassword { salt, .. } => *salt = fresh,
            Action::CheckPassword { fresh_salt, .. } => *fresh_salt = fresh,
            _ => {}
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.login = Some(Box::new(pending));
        self.pending_logins += 1;
        out.push(job);
    }

    /// Why `nick` cannot log in on `conn` now, if it cannot.
    fn login_blocked(&self, conn: ConnId, nick: &str) -> Option<String> {
        if self.online >= self.cfg.max_users {
            return Some(format!(
                "This server is full ({} connections)",
                self.cfg.max_users
            ));
        }
        if self.is_online(nick) {
            return Some(format!("{nick} is already active"));
        }
        let ip = self.conns.get(&conn)?.ip;
        let max = self.cfg.max_users_per_ip;
        if max > 0
            && self
                .users_by_ip
                .get(&ip)
                .is_some_and(|&n| n as usize >= max)
        {
            return Some(format!("too many users from your address (at most {max})"));
        }
        None
    }

    /// A password job finished for `conn`'s pending login.
    pub fn password_done(
        &mut self,
        conn: ConnId,
        result: PasswordResult,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(mut pending) = c.login.take() else {
            return;
        };
        self.pending_logins -= 1;
        let refuse = |this: &mut Index, out: &mut Vec<Action>, why: &str| {
            this.stats.login_failures += 1;
            this.drop_conn(conn, why, out);
        };
        match result {
            PasswordResult::Checked(checked) => {
                if !checked.ok {
                    return refuse(self, out, "Invalid Password");
                }
                let Some(account) = self.accounts.get(&pending.nick) else {
                    return refuse(self, out, "Invalid Password");
                };
                pending.email = account.email.clone();
                if let Some(secret) = checked.upgrade {
                    self.accounts.set_secret(&pending.nick, secret);
                    out.push(Action::SaveAccounts);
                }
            }
            PasswordResult::Hashed(secret) => {
                if let Some(why) = self.login_blocked(conn, &pending.nick) {
                    return refuse(self, out, &why);
                }
                if self.accounts.len() >= self.cfg.max_accounts {
                    return refuse(self, out, "registration is closed");
                }
                let account = Account::new(&pending.nick, secret, &pending.email, now.unix);
                if !self.accounts.insert(account) {
                    return refuse(self, out, "account registered to another user");
                }
                out.push(Action::SaveAccounts);
            }
        }
        let held = std::mem::take(&mut pending.held);
        self.finish_login(conn, *pending, now, out);
        for f in &held {
            self.receive(conn, f, now, out);
        }
    }

    fn finish_login(&mut self, conn: ConnId, p: PendingLogin, now: Now, out: &mut Vec<Action>) {
        if let Some(why) = self.login_blocked(conn, &p.nick) {
            self.stats.login_failures += 1;
            return self.drop_conn(conn, &why, out);
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ip = c.ip;
        let nick = p.nick;
        // Restrictions hold for any nick; privileges only for a registered one
        // (anybody may log in with an unregistered nick).
        let record = self.ops.record(&nick);
        let level = if record.level > Level::User && !p.registered {
            Level::User
        } else {
            record.level
        };
        let mut user = User::new(conn, &nick, ip, p.port, p.link, p.client, now.mono);
        user.level = level;
        user.muzzled = record.muzzled;
        let slot = self.place_user(user);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.user = Some(slot);
        self.forget_unauth(conn, ip);
        *self.users_by_ip.entry(ip).or_default() += 1;
        self.online += 1;
        self.nicks.insert(nick.to_ascii_lowercase(), slot);
        self.stats.logins += 1;
        out.push(Action::Send(conn, err_frame(t::LOGIN_ACK, p.email)));
        self.send_motd(conn, out);
        out.push(Action::Send(conn, self.stats_frame()));
        if level != Level::User {
            let text = format!(
                "Server {} set your user level to {} ({}).",
                self.cfg.server_name,
                level.name(),
                level.number()
            );
            out.push(Action::Send(conn, err_frame(t::NOSUCH, text)));
        }
        if record.muzzled {
            let text = format!(
                "You have been muzzled by server {}: quit while muzzled",
                self.cfg.server_name
            );
            out.push(Action::Send(conn, err_frame(t::NOSUCH, text)));
        }
        if let Some(w) = self.watchers.get(nick.to_ascii_lowercase().as_str()) {
            let line = Line::new().word(&nick).num(p.link).frame(t::USER_SIGNON);
            for &c in w {
                out.push(Action::Send(c, line.clone()));
            }
        }
        self.link_user_joined(slot, now, out);
    }

    /// Puts a user in a free slot.
    fn place_user(&mut self, user: User) -> u32 {
        match self.free_users.pop() {
            Some(s) => {
                self.users[s as usize] = Some(user);
                s
            }
            None => {
                self.users.push(Some(user));
                (self.users.len() - 1) as u32
            }
        }
    }

    fn next_salt(&mut self) -> [u8; 16] {
        self.salts += 1;
        let h: [u8; 20] = Sha1::new()
            .chain_update(self.cfg.salt_seed)
            .chain_update(self.salts.to_le_bytes())
            .finalize()
            .into();
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&h[..16]);
        salt
    }

    fn remove_user(&mut self, slot: u32, out: &mut Vec<Action>) {
        self.unshare_all(slot);
        let Some(user) = self.users[slot as usize].take() else {
            return;
        };
        self.free_users.push(slot);
        // Hand back the slots at the end of the table.
        let before = self.users.len();
        while self.users.last().is_some_and(Option::is_none) {
            self.users.pop();
        }
        if self.users.len() < before {
            let n = self.users.len() as u32;
            self.free_users.retain(|&s| s < n);
        }
        if !user.remote {
            self.online -= 1;
            self.link_user_left(&user.nick, out);
        }
        self.nicks.remove(&user.nick.to_ascii_lowercase());
        // Out of every channel, off every hotlist it kept; its watchers learn
        // that it left.
        for name in &user.channels {
            self.leave_channel(slot, &user, name, out);
        }
        for nick in &user.hotlist {
            self.unwatch(nick, user.conn);
        }
        if let Some(w) = self.watchers.get(user.nick.to_ascii_lowercase().as_str()) {
            let line = Line::new().word(&*user.nick).frame(t::SIGNOFF);
            for &c in w {
                out.push(Action::Send(c, line.clone()));
            }
        }
        // Whoever waited for this user to accept learns that it will not.
        for p in user.pending {
            if self
                .conns
                .get(&p.downloader)
                .is_some_and(|c| c.user.is_some())
            {
                let line = Line::new().word(&*user.nick).quoted(&p.name);
                out.push(Action::Send(p.downloader, line.frame(t::UPLOAD_FAILED)));
            }
        }
    }

    // ---- sharing ----

    fn parse_share(data: &[u8]) -> Option<NewFile<'_>> {
        let [name, md5, size, bitrate, freq, seconds] = Fields::exactly::<6>(data)?;
        Some(NewFile {
            name,
            md5,
            size: number(size)?,
            bitrate: number(bitrate)?,
            freq: number(freq)?,
            seconds: number(seconds)?,
            kind: Kind::Mp3,
        })
    }

    fn share_generic(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some([name, size, hash, kind]) = Fields::exactly::<4>(data) else {
            return self.bad(conn, "invalid parameters for share (10300)", now, out);
        };
        // As OpenNap: the generic share is for everything but mp3.
        let Some(kind) = Kind::from_name(kind).filter(|&k| k != Kind::Mp3) else {
            let text = format!("{} is not a valid type", String::from_utf8_lossy(kind));
            return self.bad(conn, &text, now, out);
        };
        let Some(size) = number(size) else {
            return self.bad(conn, "invalid parameters for share (10300)", now, out);
        };
        let f = NewFile {
            name,
            md5: hash,
            size,
            bitrate: 0,
            freq: 0,
            seconds: 0,
            kind,
        };
        self.share(conn, slot, f, now, out);
    }

    fn share_dir(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let Some(dir) = f.next_field() else {
            return self.bad(conn, "invalid parameters for share (870)", now, out);
        };
        let mut any = false;
        loop {
            let fields: Vec<&[u8]> = (0..6).map_while(|_| f.next_field()).collect();
            if fields.is_empty() && any && !f.is_bad() {
                return;
            }
            let parsed = match fields[..] {
                [file, md5, size, bitrate, freq, seconds] => (|| {
                    Some((
                        file,
                        md5,
                        number(size)?,
                        number(bitrate)?,
                        number(freq)?,
                        number(seconds)?,
                    ))
                })(),
                _ => None,
            };
            let Some((file, md5, size, bitrate, freq, seconds)) = parsed else {
                return self.bad(conn, "invalid parameters for share (870)", now, out);
            };
            any = true;
            let mut name = Vec::with_capacity(dir.len() + 1 + file.len());
            name.extend_from_slice(dir);
            if !dir.is_empty() && !dir.ends_with(b"\\") {
                name.push(b'\\');
            }
            name.extend_from_slice(file);
            let nf = NewFile {
                name: &name,
                md5,
                size,
                bitrate,
                freq,
                seconds,
                kind: Kind::Mp3,
            };
            self.share(conn, slot, nf, now, out);
            if !self.conns.contains_key(&conn) {
                return;
            }
        }
    }

    fn share(&mut self, conn: ConnId, slot: u32, f: NewFile<'_>, now: Now, out: &mut Vec<Action>) {
        if f.name.is_empty() || f.name.len() > self.cfg.max_name_len {
            return self.bad(conn, "invalid file name", now, out);
        }
        if f.md5.is_empty() || f.md5.len() > MAX_MD5_LEN {
            return self.bad(conn, "invalid md5", now, out);
        }
        let max_files = self.cfg.max_files_per_user;
        let hash = self.name_hasher.hash_one(f.name);
        let user = self.user(slot);
        if user.files.len() >= max_files {
            let text = format!("You may only share {max_files} files");
            return self.bad(conn, &text, now, out);
        }
        if find_file(&self.files, user, hash, f.name).is_some() {
            return self.bad(conn, "duplicate file", now, out);
        }
        let md5_bin = lower_hex_bytes(f.md5);
        let md5: &[u8] = md5_bin.as_deref().unwrap_or(f.md5);
        let at = user.arena.len();
        let Ok(at32) = u32::try_from(at + f.name.len() + md5.len()).map(|_| at as u32) else {
            return self.bad(conn, "too much shared", now, out);
        };
        let size = f.size.min(MAX_SIZE);
        let file = File {
            owner: slot,
            at: at32,
            size_lo: size as u32,
            freq: f.freq,
            seconds: f.seconds,
            size_hi: (size >> 32) as u16,
            bitrate: f.bitrate.min(u16::MAX as u32) as u16,
            name_len: f.name.len() as u16,
            kind: f.kind as u8,
            md5: md5.len() as u8 | if md5_bin.is_some() { MD5_HEX } else { 0 },
        };
        // Always a new slot at the end: the highest id, so every posting list
        // stays sorted by pushing (a purge renumbers without reordering).
        reserve_slim(&mut self.files, 1);
        self.files.push(file);
        let id = (self.files.len() - 1) as u32;
        keywords(f.name, &mut self.buf, &mut self.spans);
        for &(a, b) in &self.spans {
            let word = &self.buf[a as usize..b as usize];
            match self.words.get_mut(word) {
                Some(list) => {
                    reserve_slim(list, 1);
                    list.push(id);
                }
                None => {
                    self.words.insert(word.into(), vec![id]);
                }
            }
        }
        self.live_files += 1;
        self.total_bytes = self.total_bytes.saturating_add(size);
        let files = &self.files;
        let hasher = &self.name_hasher;
        let user = self.users[slot as usize]
            .as_mut()
            .expect("a connection's user slot is filled");
        reserve_slim(&mut user.arena, f.name.len() + md5.len());
        user.arena.extend_from_slice(f.name);
        user.arena.extend_from_slice(md5);
        let arena = &user.arena;
        user.files.insert_unique(hash, id, |&id| {
            hasher.hash_one(files[id as usize].name(arena))
        });
        user.bytes = user.bytes.saturating_add(size);
    }

    /// Removes one of a user's files; false if it does not share it.
    fn unshare(&mut self, slot: u32, name: &[u8]) -> bool {
        let hash = self.name_hasher.hash_one(name);
        let files = &self.files;
        let user = self.users[slot as usize]
            .as_mut()
            .expect("a connection's user slot is filled");
        let arena = &user.arena;
        let Ok(entry) = user
            .files
            .find_entry(hash, |&id| files[id as usize].name(arena) == name)
        else {
            return false;
        };
        let (id, _) = entry.remove();
        self.remove_file(id);
        self.squeeze_arena(slot);
        self.maybe_compact();
        true
    }

    fn unshare_all(&mut self, slot: u32) {
        let ids: Vec<u32> = self.user_mut(slot).files.drain().collect();
        for id in ids {
            self.remove_file(id);
        }
        let user = self.user_mut(slot);
        user.files = HashTable::new();
        user.arena = Vec::new();
        user.dead = 0;
        user.bytes = 0;
        self.maybe_compact();
    }

    fn remove_file(&mut self, id: u32) {
        let f = std::mem::replace(&mut self.files[id as usize], File::EMPTY);
        if f.is_live() {
            self.live_files -= 1;
            self.total_bytes = self.total_bytes.saturating_sub(f.size());
            if let Some(u) = self.users[f.owner as usize].as_mut() {
                u.bytes = u.bytes.saturating_sub(f.size());
                u.dead += f.stored_len() as u32;
            }
            self.dead_files += 1;
        }
    }

    /// Rewrites a user's arena without the bytes of removed files once they are a
    /// quarter of it, so an arena is never more than a third dead.
    fn squeeze_arena(&mut self, slot: u32) {
        let files = &mut self.files;
        let user = self.users[slot as usize]
            .as_mut()
            .expect("a connection's user slot is filled");
        if (user.dead as usize) * 4 < user.arena.len() {
            return;
        }
        let mut arena = Vec::with_capacity(user.arena.len() - user.dead as usize);
        for &id in user.files.iter() {
            let f = &mut files[id as usize];
            let at = f.at as usize;
            let at_now = arena.len() as u32;
            arena.extend_from_slice(&user.arena[at..at + f.stored_len()]);
            f.at = at_now;
        }
        user.arena = arena;
        user.dead = 0;
    }

    /// Purges emptied slots from every posting list once they are a quarter of
    /// the slots (and at least a few thousand), then drops them.
    fn maybe_compact(&mut self) {
        // A purge walks every posting list: it waits for dead slots worth a
        // quarter of the live ones, or as many as the live ones while the
        // index is small, so its cost is spread over the removals that made it
        // necessary; with no live file left it is nearly free and runs at once.
        let live = self.live_files;
        let threshold = (live / 4).max(live.min(4096)).max(64);
        if self.dead_files == 0 || (self.dead_files < threshold && live > 0) {
            return;
        }
        self.compact();
    }

    /// Purges emptied slots from every posting list now, and hands back the
    /// memory the departed files held: the emptied slots of the file table,
    /// slack in the posting lists and in the keyword map. The live slots are
    /// renumbered in their order, so the posting lists stay sorted.
    pub fn compact(&mut self) {
        // A live slot's new number: how many live slots come before it.
        let mut renumber = Vec::with_capacity(self.files.len());
        let mut next = 0u32;
        for f in &self.files {
            renumber.push(next);
            next += f.is_live() as u32;
        }
        let files = &self.files;
        self.words.retain(|_, list| {
            list.retain_mut(|id| {
                let live = files[*id as usize].is_live();
                *id = renumber[*id as usize];
                live
            });
            if list.capacity() > list.len() + list.len() / 8 + 4 {
                list.shrink_to_fit();
            }
            !list.is_empty()
        });
        shrink_map(&mut self.words);
        for user in self.users.iter_mut().flatten() {
            for id in user.files.iter_mut() {
                *id = renumber[*id as usize];
            }
        }
        self.files.retain(File::is_live);
        self.dead_files = 0;
        shrink_vec(&mut self.files);
        self.stats.compactions += 1;
        self.trimmed = true;
    }

    /// Shrinks the per-connection maps once they are mostly empty.
    fn shrink_maps(&mut self) {
        shrink_map(&mut self.conns);
        shrink_map(&mut self.nicks);
        shrink_map(&mut self.unauth_by_ip);
        shrink_map(&mut self.users_by_ip);
        shrink_vec(&mut self.users);
        shrink_vec(&mut self.free_users);
        if self.online == 0 && self.live_files == 0 && !self.files.is_empty() {
            // Everybody left: every slot is dead; start afresh.
            self.compact();
        }
    }

    /// Whether memory was handed back since the last call (the shell then asks
    /// the allocator to return freed pages to the system).
    pub fn take_trimmed(&mut self) -> bool {
        std::mem::take(&mut self.trimmed)
    }

    /// Bytes the index holds on the heap, roughly (capacities, not lengths).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let mut n = self.files.capacity() * size_of::<File>()
            + self.users.capacity() * size_of::<Option<User>>()
            + self.free_users.capacity() * 4
            + self.conns.capacity() * (size_of::<Conn>() + 8)
            + self.nicks.capacity() * (size_of::<String>() + 4)
            + self.words.capacity() * (size_of::<Box<[u8]>>() + size_of::<Vec<u32>>());
        for (w, list) in &self.words {
            n += w.len() + list.capacity() * 4;
        }
        for u in self.users.iter().flatten() {
            n += u.arena.capacity() + u.files.capacity() * 4 + u.pending.capacity() * 32;
        }
        n
    }

    // ---- search ----

    fn search(&mut self, conn: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        self.stats.searches += 1;
        match SearchRequest::parse(data) {
            Ok(req) => {
                let before = out.len();
                if !self.run_search(conn, &req, out) {
                    self.bad(
                        conn,
                        "search failed: request contained no valid words",
                        now,
                        out,
                    );
                } else {
                    let found = out.len() - before;
                    let limit = req
                        .max_results
                        .unwrap_or(self.cfg.max_results)
                        .min(self.cfg.max_results) as usize;
                    if self.search_links(conn, data, found, limit, now, out) {
                        // The 202 comes once the linked servers have answered.
                        return;
                    }
                }
            }
            Err(e) => {
                let text = match &e {
                    SearchError::Invalid => e.to_string(),
                    other => other.to_string(),
                };
                self.bad(conn, &text, now, out);
            }
        }
        if self.conns.contains_key(&conn) {
            out.push(Action::Send(conn, Frame::empty(t::SEARCH_END)));
        }
    }

    /// Runs a search and queues its 201s (not the 202); false when the request
    /// holds no keyword to look for.
    fn run_search(&mut self, conn: ConnId, req: &SearchRequest, out: &mut Vec<Action>) -> bool {
        let limit = req
            .max_results
            .unwrap_or(self.cfg.max_results)
            .min(self.cfg.max_results) as usize;
        // The query's keywords, folded like the names, each with its posting
        // list; a keyword no file has means no result.
        let words = &self.words;
        let mut lists: Vec<&[u32]> = Vec::new();
        let mut missing = false;
        for clause in &req.contains {
            keywords(clause, &mut self.buf, &mut self.spans);
            for &(a, b) in &self.spans {
                match words.get(&self.buf[a as usize..b as usize]) {
                    Some(list) => {
                        if !lists.iter().any(|l| std::ptr::eq(*l, &list[..])) {
                            lists.push(list);
                        }
                    }
                    None => missing = true,
                }
            }
        }
        if lists.is_empty() && !missing {
            return false;
        }
        if limit == 0 || missing {
            return true;
        }
        let mut excluded: Vec<&[u32]> = Vec::new();
        for clause in &req.excludes {
            keywords(clause, &mut self.buf, &mut self.spans);
            for &(a, b) in &self.spans {
                if let Some(list) = words.get(&self.buf[a as usize..b as usize]) {
                    excluded.push(list);
                }
            }
        }
        // The rarest keyword's list drives the search; the others are sorted
        // lists too, so a candidate is checked against each by galloping from
        // where the previous candidate left off, never by reading its name.
        lists.sort_unstable_by_key(|l| l.len());
        let (driver, others) = lists.split_first().expect("not empty");
        let mut at = vec![0usize; others.len()];
        let mut ex_at = vec![0usize; excluded.len()];
        let mut found = 0;
        let mut examined = 0u64;
        // All the results' lines share one buffer: one allocation for most searches.
        let mut lines = BytesMut::new();
        'candidates: for &id in driver.iter() {
            if found >= limit || examined as usize >= self.cfg.max_scan {
                break;
            }
            examined += 1;
            for (list, pos) in others.iter().zip(at.iter_mut()) {
                if !gallop_to(list, pos, id) {
                    continue 'candidates;
                }
            }
            for (list, pos) in excluded.iter().zip(ex_at.iter_mut()) {
                if gallop_to(list, pos, id) {
                    continue 'candidates;
                }
            }
            let file = &self.files[id as usize];
            if !file.is_live() {
                continue;
            }
            let kind_ok = match req.kind {
                KindFilter::Any => true,
                KindFilter::One(k) => file.kind == k as u8,
            };
            if !kind_ok
                || !req.bitrate.contains(file.bitrate as u32)
                || !req.freq.contains(file.freq)
                || !req.size.contains(file.size())
                || !req.duration.contains(file.seconds)
            {
                continue;
            }
            let Some(owner) = self.users[file.owner as usize].as_ref() else {
                continue;
            };
            if !req.linespeed.contains(owner.link as u32) {
                continue;
            }
            found += 1;
            let need = file.stored_len() * 2 + owner.nick.len() + 80;
            if lines.capacity() < need {
                lines.reserve(need.max(4096));
            }
            lines.put_u8(b'"');
            lines.put_slice(file.name(&owner.arena));
            lines.put_slice(b"\" ");
            file.write_md5(&owner.arena, &mut lines);
            for n in [
                file.size(),
                file.bitrate as u64,
                file.freq as u64,
                file.seconds as u64,
            ] {
                lines.put_u8(b' ');
                put_decimal(&mut lines, n);
            }
            lines.put_u8(b' ');
            lines.put_slice(owner.nick.as_bytes());
            lines.put_u8(b' ');
            put_decimal(&mut lines, ip_to_decimal(owner.ip) as u64);
            lines.put_u8(b' ');
            put_decimal(&mut lines, owner.link as u64);
            out.push(Action::Send(
                conn,
                Frame::new(t::SEARCH_RESULT, lines.split().freeze()),
            ));
        }
        self.stats.candidates += examined;
        self.stats.results += found as u64;
        true
    }

    // ---- transfers ----

    /// A 203 (or 500 when `firewalled`): a user asks for `<nick> "<file>"`.
    fn download(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        firewalled: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some((nick, name)) = nick_and_file(data) else {
            return self.bad(conn, "invalid parameters for download", now, out);
        };
        let get_error = |out: &mut Vec<Action>| {
            let line = Line::new().word(nick).quoted(name);
            out.push(Action::Send(conn, line.frame(t::GET_ERROR)));
        };
        let Some(up_slot) = self.slot_by_nick(nick) else {
            return get_error(out);
        };
        let hash = self.name_hasher.hash_one(name);
        let up = self.user(up_slot);
        let Some(id) = find_file(&self.files, up, hash, name) else {
            return get_error(out);
        };
        let file = &self.files[id as usize];
        let me = self.user(slot);
        let peer_file = |md5: Bytes| {
            Line::new()
                .word(&*up.nick)
                .num(ip_to_decimal(up.ip))
                .num(up.port)
                .quoted(name)
                .word(md5)
                .num(up.link)
                .frame(t::DOWNLOAD_ACK)
        };
        if !firewalled && up.port == 0 {
            // The uploader cannot be reached: tell the downloader, who then
            // asks for a push with 500.
            out.push(Action::Send(conn, peer_file(file.md5_text(&up.arena))));
            return;
        }
        if firewalled && up.port != 0 {
            let text = format!("{} is not firewalled", up.nick);
            return self.bad(conn, &text, now, out);
        }
        if firewalled && me.port == 0 {
            out.push(Action::Send(
                conn,
                peer_file(Bytes::from_static(b"firewallerror")),
            ));
            return;
        }
        let (up_conn, up_nick, my_nick, my_link) =
            (up.conn, up.nick.clone(), me.nick.clone(), me.link);
        let max_pending = self.cfg.max_pending_per_uploader;
        let deadline = now.mono + self.cfg.transfer_timeout;
        let up = self.user_mut(up_slot);
        if up.pending.len() >= max_pending {
            let line = Line::new().word(&*up_nick).quoted(name);
            out.push(Action::Send(conn, line.frame(t::UPLOAD_FAILED)));
            return;
        }
        up.pending.push(PendingRequest {
            downloader: conn,
            name: name.into(),
            deadline,
        });
        let line = Line::new().word(&*my_nick).quoted(name).num(my_link);
        out.push(Action::Send(up_conn, line.frame(t::UPLOAD_REQUEST)));
    }

    /// A 608: the uploader accepts `<nick> "<file>"`.
    fn accept_upload(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some((nick, name)) = nick_and_file(data) else {
            return self.bad(conn, "invalid parameters for accept (608)", now, out);
        };
        let Some(down_slot) = self.slot_by_nick(nick) else {
            return self.not_online(conn, nick, now, out);
        };
        let hash = self.name_hasher.hash_one(name);
        let up = self.user(slot);
        let Some(md5) = find_file(&self.files, up, hash, name)
            .map(|id| self.files[id as usize].md5_text(&up.arena))
        else {
            return self.bad(conn, "not sharing that file", now, out);
        };
        let down = self.user(down_slot);
        let down_conn = down.conn;
        let (frame, to) = if up.port == 0 {
            // A firewalled uploader connects out to the downloader.
            let line = Line::new()
                .word(&*down.nick)
                .num(ip_to_decimal(down.ip))
                .num(down.port)
                .quoted(name)
                .word(&md5)
                .num(down.link);
            (line.frame(t::FIREWALL_UPLOAD), conn)
        } else {
            let line = Line::new()
                .word(&*up.nick)
                .num(ip_to_decimal(up.ip))
                .num(up.port)
                .quoted(name)
                .word(&md5)
                .num(up.link);
            (line.frame(t::DOWNLOAD_ACK), down_conn)
        };
        self.user_mut(slot)
            .pending
            .retain(|p| !(p.downloader == down_conn && &*p.name == name));
        self.stats.transfers_brokered += 1;
        out.push(Action::Send(to, frame));
    }

    // ---- users ----

    fn private_message(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let mut f = Fields::new(data);
        let Some(nick) = f.next_field() else {
            return self.bad(conn, "invalid parameters for private message", now, out);
        };
        let text = f.rest();
        match self.user_by_nick(nick) {
            // A muzzled user may still write to an operator (to ask why).
            Some(to) if self.user(slot).muzzled && to.level < Level::Moderator => {
                self.bad(conn, "You are muzzled.", now, out)
            }
            Some(to) => {
                let mut line = BytesMut::new();
                line.put_slice(self.user(slot).nick.as_bytes());
                line.put_u8(b' ');
                line.put_slice(text);
                out.push(Action::Send(
                    to.conn,
                    Frame::new(t::PRIVATE_MESSAGE, line.freeze()),
                ));
            }
            None => self.not_online(conn, nick, now, out),
        }
    }

    fn browse(&mut self, conn: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let Some(nick) = f.next_field() else {
            return self.bad(conn, "invalid parameters for browse", now, out);
        };
        let max = f
            .next_field()
            .and_then(number::<u32>)
            .unwrap_or(u32::MAX)
            .min(self.cfg.max_browse) as usize;
        let Some(user) = self.user_by_nick(nick) else {
            out.push(Action::Send(conn, Line::new().word(nick).frame(t::SIGNOFF)));
            return;
        };
        let mut ids: Vec<u32> = user.files.iter().copied().collect();
        ids.sort_unstable();
        for id in ids.into_iter().take(max) {
            let file = &self.files[id as usize];
            let line = Line::new()
                .word(&*user.nick)
                .quoted(file.name(&user.arena))
                .word(file.md5_text(&user.arena))
                .num(file.size())
                .num(file.bitrate)
                .num(file.freq)
                .num(file.seconds);
            out.push(Action::Send(conn, line.frame(t::BROWSE_RESULT)));
        }
        out.push(Action::Send(
            conn,
            Line::new().word(&*user.nick).frame(t::BROWSE_END),
        ));
    }

    /// A 640: `<nick>` asks for a direct browse of `<nick>`'s files. The browsee
    /// gets `640 <requester>` (with the requester's address when the browsee is
    /// firewalled and must connect out), or the requester a 642.
    fn browse_direct(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let nick = first_word(data);
        let Some(u) = self.user_by_nick(nick) else {
            return self.not_online(conn, nick, now, out);
        };
        let me = self.user(slot);
        let err = |text: String| {
            let line = Line::new().word(&*u.nick).quoted(text);
            Action::Send(conn, line.frame(t::BROWSE_DIRECT_ERR))
        };
        if me.port == 0 && u.port == 0 {
            let text = format!(
                "Both you and {} are firewalled; you cannot browse or download from them.",
                u.nick
            );
            out.push(err(text));
        } else if u.files.is_empty() {
            out.push(err(format!("{} is not sharing any files.", u.nick)));
        } else {
            let mut line = Line::new().word(&*me.nick);
            if u.port == 0 {
                line = line.num(ip_to_decimal(me.ip)).num(me.port);
            }
            out.push(Action::Send(u.conn, line.frame(t::BROWSE_DIRECT)));
        }
    }

    /// A 641: the browsee accepts `<nick>`'s direct browse; the requester gets
    /// `641 <browsee> <ip> <port>`.
    fn browse_direct_ok(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let nick = first_word(data);
        let Some(u) = self.user_by_nick(nick) else {
            return self.not_online(conn, nick, now, out);
        };
        let me = self.user(slot);
        let line = Line::new()
            .word(&*me.nick)
            .num(ip_to_decimal(me.ip))
            .num(me.port);
        out.push(Action::Send(u.conn, line.frame(t::BROWSE_DIRECT_OK)));
    }

    // ---- hotlists ----

    fn hotlist_add(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let nick = first_word(data);
        if !valid_nick(nick, self.cfg.max_nick_len) {
            return self.bad(conn, "hotlist add failed: invalid nick", now, out);
        }
        let key: Box<str> = String::from_utf8_lossy(nick).to_ascii_lowercase().into();
        let max = self.cfg.max_hotlist;
        let user = self.user_mut(slot);
        if !user.hotlist.contains(&key) {
            if user.hotlist.len() >= max {
                out.push(Action::Send(
                    conn,
                    Line::new().word(nick).frame(t::HOTLIST_ERROR),
                ));
                return;
            }
            user.hotlist.push(key.clone());
            self.watchers.entry(key).or_default().push(conn);
        }
        out.push(Action::Send(
            conn,
            Line::new().word(nick).frame(t::HOTLIST_ACK),
        ));
        if let Some(u) = self.user_by_nick(nick) {
            let line = Line::new().word(&*u.nick).num(u.link);
            out.push(Action::Send(conn, line.frame(t::USER_SIGNON)));
        }
    }

    fn hotlist_remove(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let nick = first_word(data);
        let key = String::from_utf8_lossy(nick).to_ascii_lowercase();
        let user = self.user_mut(slot);
        let Some(i) = user.hotlist.iter().position(|n| **n == *key) else {
            let text = format!(
                "hotlist remove failed: {} is not on your hotlist",
                String::from_utf8_lossy(nick)
            );
            return self.bad(conn, &text, now, out);
        };
        user.hotlist.swap_remove(i);
        self.unwatch(&key, conn);
        out.push(Action::Send(
            conn,
            Line::new().word(nick).frame(t::HOTLIST_REMOVE),
        ));
    }

    fn unwatch(&mut self, nick: &str, conn: ConnId) {
        if let Some(w) = self.watchers.get_mut(nick) {
            w.retain(|&c| c != conn);
            if w.is_empty() {
                self.watchers.remove(nick);
            }
        }
    }

    // ---- channels ----

    fn member_line(&self, chan: &str, slot: u32) -> Line {
        let u = self.user(slot);
        Line::new()
            .word(chan)
            .word(&*u.nick)
            .num(u.files.len())
            .num(u.link)
    }

    fn join(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let name = first_word(data);
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .iter()
                .all(|&c| (b'!'..=b'~').contains(&c) && c != b'"');
        if !valid {
            return self.bad(conn, "channel join failed: invalid channel", now, out);
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let key: Box<str> = name.to_ascii_lowercase().into();
        let user = self.user(slot);
        if user.channels.contains(&key) {
            return self.bad(
                conn,
                "channel join failed: already joined channel",
                now,
                out,
            );
        }
        if user.channels.len() >= self.cfg.max_user_channels {
            let text = format!(
                "channel join failed: you may only join {} channels",
                self.cfg.max_user_channels
            );
            return self.bad(conn, &text, now, out);
        }
        match self.channels.get(&key) {
            Some(c) if c.members.len() >= self.cfg.max_channel_users => {
                return self.bad(conn, "channel join failed: channel full", now, out);
            }
            None if self.channels.len() >= self.cfg.max_channels => {
                return self.bad(conn, "channel join failed: too many channels", now, out);
            }
            _ => {}
        }
        let chan = self.channels.entry(key.clone()).or_insert_with(|| Channel {
            name: name.into(),
            topic: Box::from(&b"Welcome to the channel"[..]),
            members: Vec::new(),
        });
        chan.members.push(slot);
        let (cname, members, topic) = (chan.name.clone(), chan.members.clone(), chan.topic.clone());
        self.user_mut(slot).channels.push(key);
        out.push(Action::Send(
            conn,
            Line::new().word(&*cname).frame(t::JOIN_ACK),
        ));
        for &m in &members {
            out.push(Action::Send(
                conn,
                self.member_line(&cname, m).frame(t::CHANNEL_USER),
            ));
        }
        let joined = self.member_line(&cname, slot).frame(t::JOINED);
        for &m in members.iter().filter(|&&m| m != slot) {
            out.push(Action::Send(self.user(m).conn, joined.clone()));
        }
        out.push(Action::Send(
            conn,
            Line::new().word(&*cname).frame(t::CHANNEL_USER_END),
        ));
        out.push(Action::Send(
            conn,
            Line::new().word(&*cname).word(&topic).frame(t::TOPIC),
        ));
    }

    /// Takes `slot` (whose user is `user`) out of channel `key`, telling the
    /// other members; the channel goes when it empties.
    fn leave_channel(&mut self, slot: u32, user: &User, key: &str, out: &mut Vec<Action>) {
        let Some(chan) = self.channels.get_mut(key) else {
            return;
        };
        chan.members.retain(|&m| m != slot);
        let line = Line::new()
            .word(&*chan.name)
            .word(&*user.nick)
            .num(user.files.len())
            .num(user.link)
            .frame(t::PARTED);
        let others = chan.members.clone();
        if others.is_empty() {
            self.channels.remove(key);
            shrink_map(&mut self.channels);
        }
        for m in others {
            if let Some(u) = self.users[m as usize].as_ref() {
                out.push(Action::Send(u.conn, line.clone()));
            }
        }
    }

    fn part(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let key = String::from_utf8_lossy(first_word(data)).to_ascii_lowercase();
        let Some(i) = self.user(slot).channels.iter().position(|c| **c == *key) else {
            return self.bad(
                conn,
                "part channel failed: you are not in that channel",
                now,
                out,
            );
        };
        let name = self.channels.get(key.as_str()).map(|c| c.name.clone());
        let user = self.users[slot as usize]
            .take()
            .expect("a connection's user slot is filled");
        self.leave_channel(slot, &user, &key, out);
        self.users[slot as usize] = Some(user);
        self.user_mut(slot).channels.swap_remove(i);
        if let Some(name) = name {
            out.push(Action::Send(conn, Line::new().word(&*name).frame(t::PART)));
        }
    }

    fn public(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let key = String::from_utf8_lossy(f.next_field().unwrap_or_default()).to_ascii_lowercase();
        let text = f.rest();
        let user = self.user(slot);
        if user.muzzled {
            return self.bad(conn, "You are muzzled.", now, out);
        }
        if !user.channels.iter().any(|c| **c == *key) {
            return self.bad(conn, "You are not a member of that channel", now, out);
        }
        let Some(chan) = self.channels.get(key.as_str()) else {
            return;
        };
        let mut line = BytesMut::new();
        line.put_slice(chan.name.as_bytes());
        line.put_u8(b' ');
        line.put_slice(user.nick.as_bytes());
        line.put_u8(b' ');
        line.put_slice(text);
        let frame = Frame::new(t::PUBLIC_MESSAGE, line.freeze());
        for &m in &chan.members {
            out.push(Action::Send(self.user(m).conn, frame.clone()));
        }
    }

    fn topic(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let key = String::from_utf8_lossy(f.next_field().unwrap_or_default()).to_ascii_lowercase();
        let topic = f.rest();
        let max = self.cfg.max_topic_len;
        let member = self.user(slot).channels.iter().any(|c| **c == *key);
        let Some(chan) = self.channels.get_mut(key.as_str()) else {
            return self.bad(conn, "topic failed: no such channel", now, out);
        };
        if topic.is_empty() {
            let line = Line::new().word(&*chan.name).word(&chan.topic);
            out.push(Action::Send(conn, line.frame(t::TOPIC)));
            return;
        }
        if !member {
            return self.bad(conn, "topic failed: you are not on that channel", now, out);
        }
        let kept: Vec<u8> = topic[..topic.len().min(max)]
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        chan.topic = kept.into();
        let frame = Line::new()
            .word(&*chan.name)
            .word(&chan.topic)
            .frame(t::TOPIC);
        let members = chan.members.clone();
        for m in members {
            out.push(Action::Send(self.user(m).conn, frame.clone()));
        }
    }

    // ---- resume search ----

    /// A 215 `<checksum> <size>`: every file with that md5 field and size, as
    /// `216 <nick> <ip> <port> "<name>" <checksum> <size> <link>`, then 217.
    /// There is no checksum index: the file table is walked, at most
    /// `max_scan` slots.
    fn resume_search(&mut self, conn: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let Some([sum, size]) = Fields::exactly::<2>(data) else {
            self.bad(conn, "invalid parameters for resume search", now, out);
            out.push(Action::Send(conn, Frame::empty(t::RESUME_END)));
            return;
        };
        let Some(size) = number::<u64>(size) else {
            self.bad(conn, "invalid parameters for resume search", now, out);
            out.push(Action::Send(conn, Frame::empty(t::RESUME_END)));
            return;
        };
        let bin = lower_hex_bytes(sum);
        let stored: &[u8] = bin.as_deref().unwrap_or(sum);
        let mut found = 0;
        for file in self.files.iter().take(self.cfg.max_scan) {
            if found >= self.cfg.max_results as usize {
                break;
            }
            if !file.is_live() || file.size() != size.min(MAX_SIZE) {
                continue;
            }
            let Some(owner) = self.users[file.owner as usize].as_ref() else {
                continue;
            };
            let (name, md5) = file.entry(&owner.arena);
            if md5 != stored || (file.md5 & MD5_HEX != 0) != bin.is_some() {
                continue;
            }
            found += 1;
            let line = Line::new()
                .word(&*owner.nick)
                .num(ip_to_decimal(owner.ip))
                .num(owner.port)
                .quoted(name)
                .word(sum)
                .num(file.size())
                .num(owner.link);
            out.push(Action::Send(conn, line.frame(t::RESUME_RESULT)));
        }
        out.push(Action::Send(conn, Frame::empty(t::RESUME_END)));
    }

    // ---- operators ----

    /// Sends `text` as a 404 to every moderator and above online (OpenNap's
    /// notices to its operators of who did what).
    fn notify_mods(&self, text: &str, out: &mut Vec<Action>) {
        let f = err_frame(t::NOSUCH, text);
        for u in self.users.iter().flatten() {
            if u.level >= Level::Moderator {
                out.push(Action::Send(u.conn, f.clone()));
            }
        }
    }

    /// The level of `nick` (online, else as kept), or `None` when nothing is
    /// known of it.
    fn known_level(&self, nick: &str) -> Option<Level> {
        if let Some(s) = self.slot_by_nick(nick.as_bytes()) {
            return Some(self.user(s).level);
        }
        (self.ops.knows(nick) || self.accounts.get(nick).is_some())
            .then(|| self.ops.record(nick).level)
    }

    /// 606 `<nick> <level>`.
    fn set_level(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let (Some(nick), Some(level)) = (f.next_field(), f.next_field()) else {
            return self.bad(conn, "parameters are unparsable", now, out);
        };
        let Some(level) = Level::parse(level) else {
            let text = format!(
                "set user level failed: {}: invalid level",
                String::from_utf8_lossy(level)
            );
            return self.bad(conn, &text, now, out);
        };
        if !valid_nick(nick, self.cfg.max_nick_len) {
            return self.bad(conn, "set user level failed: invalid nickname", now, out);
        }
        let nick = String::from_utf8_lossy(nick).into_owned();
        let me = self.user(slot);
        let (mine, my_nick) = (me.level, me.nick.clone());
        let target = self.slot_by_nick(nick.as_bytes());
        let current = self.known_level(&nick);
        // OpenNap's rules: nobody gives a level at or above their own, or
        // changes someone at or above their own (but may lower themselves),
        // unless Elite. And only operators change levels at all.
        let denied = mine < Level::Moderator
            || (mine < Level::Elite && level >= mine)
            || current.is_some_and(|cur| {
                mine < Level::Elite
                    && mine <= cur
                    && (target != Some(slot) || cur < Level::Moderator)
            });
        if denied {
            return self.bad(conn, "set user level failed: permission denied", now, out);
        }
        if current.unwrap_or(Level::User) == level && self.ops.record(&nick).level == level {
            return;
        }
        let mut rec = self.ops.record(&nick);
        rec.level = level;
        if level > Level::User {
            rec.muzzled = false;
        }
        if self.ops.set(&nick, rec).is_err() {
            return self.bad(conn, "set user level failed: too many entries", now, out);
        }
        out.push(Action::SaveOperators);
        let (name, n) = (level.name(), level.number());
        if let Some(s) = target {
            let u = self.user_mut(s);
            u.level = level;
            if level > Level::User {
                u.muzzled = false;
            }
            let text = format!("{my_nick} changed your user level to {name} ({n})");
            out.push(Action::Send(u.conn, err_frame(t::NOSUCH, text)));
        }
        let text = format!("{my_nick} changed {nick}'s user level to {name} ({n})");
        self.notify_mods(&text, out);
    }

    /// 753 `<nick> <password> ["<reason>"]`: an admin sets a registered
    /// nick's password.
    fn alter_password(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let me = self.user(slot);
        let (mine, my_nick) = (me.level, me.nick.clone());
        if mine < Level::Admin {
            return self.bad(conn, "permission denied", now, out);
        }
        let mut f = Fields::new(data);
        let (Some(nick), Some(password)) = (f.next_field(), f.next_field()) else {
            return self.bad(conn, "parameters are unparsable", now, out);
        };
        let reason = clean_reason(f.next_field().unwrap_or_default());
        if !valid_nick(nick, self.cfg.max_nick_len) || password.is_empty() || password.len() > 64 {
            return self.bad(conn, "alter password failed: invalid nickname", now, out);
        }
        let nick = String::from_utf8_lossy(nick).into_owned();
        let Some(account) = self.accounts.get(&nick) else {
            let text = format!("alter password failed: {nick} is not registered");
            return self.bad(conn, &text, now, out);
        };
        let nick = account.nick.clone();
        let theirs = self.known_level(&nick).unwrap_or(Level::User);
        if theirs >= mine && mine < Level::Elite && !nick.eq_ignore_ascii_case(&my_nick) {
            return self.bad(conn, "alter password failed: permission denied", now, out);
        }
        if self.pending_set >= 4 {
            let text = "alter password failed: server busy, try again later";
            return self.bad(conn, text, now, out);
        }
        self.pending_set += 1;
        let salt = self.next_salt();
        out.push(Action::SetPassword {
            nick: nick.clone(),
            password: password.to_vec(),
            salt,
        });
        self.notify_mods(
            &format!("{my_nick} changed the password of {nick}: {reason}"),
            out,
        );
    }

    /// A 753's hash is ready: the account takes it.
    pub fn password_set(&mut self, nick: &str, secret: Secret, out: &mut Vec<Action>) {
        self.pending_set = self.pending_set.saturating_sub(1);
        if self.accounts.set_secret(nick, secret) {
            out.push(Action::SaveAccounts);
        }
    }

    /// 610 `<nick> ["<reason>"]`.
    fn kill(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let Some(nick) = f.next_field() else {
            return self.bad(conn, "kill failed: too few parameters", now, out);
        };
        let reason = clean_reason(f.next_field().unwrap_or_default());
        let Some(victim) = self.slot_by_nick(nick) else {
            return self.bad(conn, "kill failed: no such user", now, out);
        };
        if self.user(victim).remote {
            let text = format!(
                "kill failed: {} is on another server",
                String::from_utf8_lossy(nick)
            );
            return self.bad(conn, &text, now, out);
        }
        let me = self.user(slot);
        let (mine, my_nick) = (me.level, me.nick.clone());
        let theirs = self.user(victim).level;
        if mine < Level::Moderator || (theirs >= mine && mine < Level::Elite) {
            return self.bad(conn, "kill failed: permission denied", now, out);
        }
        let u = self.user(victim);
        let (vconn, vnick) = (u.conn, u.nick.clone());
        let text = format!("You have been killed by {my_nick}: {reason}");
        out.push(Action::Send(vconn, err_frame(t::NOSUCH, text)));
        out.push(Action::Send(vconn, err_frame(t::DISCONNECTING, "0")));
        out.push(Action::Close(vconn));
        self.disconnect(vconn, out);
        self.notify_mods(&format!("{my_nick} killed {vnick}: {reason}"), out);
    }

    /// Whether the user may use the moderators' commands; a 404 if not.
    fn operator(&mut self, conn: ConnId, slot: u32, now: Now, out: &mut Vec<Action>) -> bool {
        if self.user(slot).level >= Level::Moderator {
            return true;
        }
        self.bad(conn, "permission denied", now, out);
        false
    }

    /// 612 `<nick | ip | nick!ip> ["<reason>" [<seconds>]]`.
    fn ban(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        if !self.operator(conn, slot, now, out) {
            return;
        }
        let mut f = Fields::new(data);
        let Some(target) = f.next_field() else {
            return self.bad(conn, "parameters are unparsable", now, out);
        };
        let reason = clean_reason(f.next_field().unwrap_or_default());
        let timeout = match f.next_field() {
            None => 0,
            Some(n) => match number::<u64>(n) {
                Some(n) => n,
                None => return self.bad(conn, "invalid ban timeout", now, out),
            },
        };
        let Some(target) = normalize_ban(target) else {
            return self.bad(conn, "ban failed: invalid target", now, out);
        };
        let my_nick = self.user(slot).nick.to_string();
        let ban = Ban {
            target: target.clone(),
            set_by: my_nick.clone(),
            reason: reason.clone(),
            when: now.unix,
            timeout,
        };
        match self.ops.ban(ban, now.unix) {
            Ok(()) => {
                out.push(Action::SaveOperators);
                let during = if timeout > 0 {
                    format!(" for {timeout} seconds")
                } else {
                    String::new()
                };
                self.notify_mods(&format!("{my_nick} banned {target}{during}: {reason}"), out);
            }
            Err(Refused::AlreadyBanned) => self.bad(conn, "already banned", now, out),
            Err(_) => {
                let text = format!("ban failed: the ban list is full ({})", self.ops.max_bans());
                self.bad(conn, &text, now, out)
            }
        }
    }

    /// 614 `<nick | ip | nick!ip> ["<reason>"]`.
    fn unban(&mut self, conn: ConnId, slot: u32, data: &[u8], now: Now, out: &mut Vec<Action>) {
        if !self.operator(conn, slot, now, out) {
            return;
        }
        let mut f = Fields::new(data);
        let Some(target) = f.next_field() else {
            return self.bad(conn, "parameters are unparsable", now, out);
        };
        let reason = clean_reason(f.next_field().unwrap_or_default());
        let removed = normalize_ban(target).map(|t| self.ops.unban(&t));
        match removed {
            Some(Ok(ban)) => {
                out.push(Action::SaveOperators);
                let my_nick = self.user(slot).nick.clone();
                let text = format!("{my_nick} removed ban on {}: {reason}", ban.target);
                self.notify_mods(&text, out);
            }
            _ => self.bad(conn, "no such ban", now, out),
        }
    }

    /// 615: one `616 <target> <set-by> "<reason>" <when> <seconds>` per ban
    /// that holds, then an empty 615.
    fn banlist(&mut self, conn: ConnId, slot: u32, now: Now, out: &mut Vec<Action>) {
        if !self.operator(conn, slot, now, out) {
            return;
        }
        if self.ops.expire(now.unix) {
            out.push(Action::SaveOperators);
        }
        for b in self.ops.bans() {
            let line = Line::new()
                .word(&b.target)
                .word(&b.set_by)
                .quoted(&b.reason)
                .num(b.when)
                .num(b.timeout);
            out.push(Action::Send(conn, line.frame(t::BANLIST_ENTRY)));
        }
        out.push(Action::Send(conn, Frame::empty(t::BANLIST)));
    }

    /// 622 / 623 `<nick> ["<reason>"]`.
    fn muzzle(
        &mut self,
        conn: ConnId,
        slot: u32,
        data: &[u8],
        on: bool,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let un = if on { "" } else { "un" };
        let mut f = Fields::new(data);
        let Some(nick) = f.next_field() else {
            return self.bad(conn, "parameters are unparsable", now, out);
        };
        let reason = clean_reason(f.next_field().unwrap_or_default());
        if !valid_nick(nick, self.cfg.max_nick_len) {
            return self.bad(conn, "invalid nickname", now, out);
        }
        let nick = String::from_utf8_lossy(nick).into_owned();
        let me = self.user(slot);
        let (mine, my_nick) = (me.level, me.nick.clone());
        let denied = mine < Level::Moderator
            || (mine < Level::Elite && self.known_level(&nick).is_some_and(|l| mine <= l));
        if denied {
            let text = format!("{un}muzzle failed: permission denied");
            return self.bad(conn, &text, now, out);
        }
        let target = self.slot_by_nick(nick.as_bytes());
        let mut rec = self.ops.record(&nick);
        let current = target.map_or(rec.muzzled, |s| self.user(s).muzzled);
        if current == on && rec.muzzled == on {
            return;
        }
        rec.muzzled = on;
        if self.ops.set(&nick, rec).is_err() {
            let text = format!("{un}muzzle failed: too many entries");
            return self.bad(conn, &text, now, out);
        }
        out.push(Action::SaveOperators);
        if let Some(s) = target {
            let u = self.user_mut(s);
            u.muzzled = on;
            let text = format!("You have been {un}muzzled by {my_nick}: {reason}");
            out.push(Action::Send(u.conn, err_frame(t::NOSUCH, text)));
        }
        self.notify_mods(&format!("{my_nick} has {un}muzzled {nick}: {reason}"), out);
    }

    /// 627 `<text>` (to every operator, moderators and above may send it) and
    /// 628 `<text>` (to everybody, admins and above may send it), each passed
    /// on as `<nick> <text>`.
    fn broadcast(
        &mut self,
        conn: ConnId,
        slot: u32,
        ty: u16,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let (needed, to) = if ty == t::WALLOP {
            (Level::Moderator, Level::Moderator)
        } else {
            (Level::Admin, Level::Leech)
        };
        let me = self.user(slot);
        if me.level < needed {
            return self.bad(conn, "permission denied", now, out);
        }
        let mut line = BytesMut::new();
        line.put_slice(me.nick.as_bytes());
        line.put_u8(b' ');
        line.put_slice(data);
        let frame = Frame::new(ty, line.freeze());
        for u in self.users.iter().flatten() {
            if u.level >= to {
                out.push(Action::Send(u.conn, frame.clone()));
            }
        }
    }

    fn whois(&mut self, conn: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let nick = first_word(data);
        if nick.is_empty() {
            return self.bad(conn, "whois failed: missing nickname", now, out);
        }
        let Some(u) = self.user_by_nick(nick) else {
            return self.not_online(conn, nick, now, out);
        };
        let line = Line::new()
            .word(&*u.nick)
            .quoted(u.level.name())
            .num(now.mono.saturating_duration_since(u.since).as_secs())
            .quoted("")
            .quoted(if u.remote { "Remote" } else { "Active" })
            .num(if u.remote {
                u.remote_files as usize
            } else {
                u.files.len()
            })
            .num(u.downloads)
            .num(u.uploads)
            .num(u.link)
            .quoted(&u.client);
        out.push(Action::Send(conn, line.frame(t::WHOIS_REPLY)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Harness {
        index: Index,
        now: Now,
        next: ConnId,
    }

    impl Harness {
        fn new(cfg: IndexConfig) -> Harness {
            Harness {
                index: Index::new(cfg, Accounts::default()),
                now: Now {
                    mono: Instant::now(),
                    unix: 1_000_000,
                },
                next: 0,
            }
        }

        fn open(&mut self) -> ConnId {
            self.next += 1;
            let mut out = Vec::new();
            self.index.connect(
                self.next,
                Ipv4Addr::new(10, 0, 0, self.next as u8),
                self.now,
                &mut out,
            );
            assert!(out.is_empty(), "{out:?}");
            self.next
        }

        fn send(&mut self, conn: ConnId, ty: u16, data: &str) -> Vec<Action> {
            let mut out = Vec::new();
            self.index.receive(
                conn,
                &Frame::new(ty, data.as_bytes().to_vec()),
                self.now,
                &mut out,
            );
            self.run_jobs(out)
        }

        /// Runs the password jobs among `out` as the shell would, in order.
        fn run_jobs(&mut self, out: Vec<Action>) -> Vec<Action> {
            let mut done = Vec::new();
            for a in out {
                if let Some((nick, secret)) = a.run_set_password() {
                    let mut more = Vec::new();
                    self.index.password_set(&nick, secret, &mut more);
                    done.extend(more);
                    continue;
                }
                match a.run_password_job() {
                    Some((conn, result)) => {
                        let mut more = Vec::new();
                        self.index.password_done(conn, result, self.now, &mut more);
                        done.extend(self.run_jobs(more));
                    }
                    None => done.push(a),
                }
            }
            done
        }

        fn login(&mut self, nick: &str, port: u16) -> ConnId {
            let c = self.open();
            let out = self.send(c, t::LOGIN, &format!("{nick} pw {port} \"test 1\" 7"));
            assert!(
                matches!(&out[0], Action::Send(id, f) if *id == c && f.ty == t::LOGIN_ACK),
                "{out:?}"
            );
            c
        }
    }

    /// The frames sent to `conn`, as (type, text).
    fn to(out: &[Action], conn: ConnId) -> Vec<(u16, String)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send(c, f) if *c == conn => Some((f.ty, f.text())),
                _ => None,
            })
            .collect()
    }

    fn closed(out: &[Action], conn: ConnId) -> bool {
        out.contains(&Action::Close(conn))
    }

    #[test]
    fn keywords_fold_and_dedupe() {
        let mut buf = Vec::new();
        let mut spans = Vec::new();
        keywords(
            "C:\\Music\\Björk - Jóga (live) JÓGA.mp3".as_bytes(),
            &mut buf,
            &mut spans,
        );
        let words: Vec<&str> = spans
            .iter()
            .map(|&(a, b)| std::str::from_utf8(&buf[a as usize..b as usize]).unwrap())
            .collect();
        assert_eq!(words, ["c", "music", "björk", "jóga", "live", "mp3"]);
        // Latin-1 bytes (not UTF-8) are kept as word bytes.
        keywords(b"caf\xe9 CAF\xe9", &mut buf, &mut spans);
        assert_eq!(spans.len(), 1);
    }

    #[test]
    fn login_rules() {
        let mut h = Harness::new(IndexConfig {
            max_users: 2,
            ..IndexConfig::default()
        });
        let a = h.login("alice", 6699);
        // Same nick again, any case.
        let c = h.open();
        let out = h.send(c, t::LOGIN, "ALICE pw 6699 \"x\" 3");
        assert_eq!(to(&out, c), [(0, "ALICE is already active".to_string())]);
        assert!(closed(&out, c));
        for (data, why) in [
            ("bob pw 70000 \"x\" 3", "invalid port"),
            ("bob pw 6699 \"x\" 11", "invalid speed"),
            ("bob pw x \"x\" 3", "invalid port"),
            ("b.o.b pw 6699 \"x\" 3", "invalid nick"),
            ("bob pw 6699", "invalid login message"),
        ] {
            let c = h.open();
            let out = h.send(c, t::LOGIN, data);
            assert_eq!(to(&out, c), [(0, why.to_string())], "{data}");
            assert!(closed(&out, c));
        }
        // Anything but a login first is refused with 0 and closed.
        let c = h.open();
        let out = h.send(c, t::SEARCH, "FILENAME CONTAINS \"x\"");
        assert_eq!(to(&out, c), [(0, "invalid command".to_string())]);
        assert!(closed(&out, c));
        // Registration, then the password is checked.
        let c = h.open();
        let out = h.send(c, t::NICK_CHECK, "carol");
        assert_eq!(to(&out, c), [(t::NICK_FREE, String::new())]);
        let out = h.send(
            c,
            t::NEW_USER_LOGIN,
            "carol secret 0 \"x\" 2 carol@example.org",
        );
        let got = to(&out, c);
        assert_eq!(got[0], (t::LOGIN_ACK, "carol@example.org".to_string()));
        // TekNap takes a server for OpenNap only when the MOTD starts so.
        assert!(
            got[1].1.starts_with("VERSION opennap 0.44 (servent "),
            "{got:?}"
        );
        assert_eq!(got.last().unwrap(), &(t::STATS, "2 0 0".to_string()));
        assert!(out.contains(&Action::SaveAccounts));
        let d = h.open();
        assert_eq!(
            to(&h.send(d, t::NICK_CHECK, "Carol"), d),
            [(t::NICK_REGISTERED, String::new())]
        );
        assert_eq!(
            to(&h.send(d, t::NICK_CHECK, "a,b"), d),
            [(t::NICK_INVALID, String::new())]
        );
        // Server full (alice and carol are on, max 2).
        let out = h.send(d, t::LOGIN, "dave pw 0 \"x\" 2");
        assert_eq!(
            to(&out, d),
            [(0, "This server is full (2 connections)".to_string())]
        );
        let mut out = Vec::new();
        h.index.disconnect(a, &mut out);
        // Online already is said before the (costly) password check.
        let c = h.open();
        let out = h.send(c, t::LOGIN, "carol wrong 0 \"x\" 2");
        assert_eq!(to(&out, c), [(0, "carol is already active".to_string())]);
        let c = h.open();
        let out = h.send(c, t::NEW_USER_LOGIN, "carol x 0 \"x\" 2 e@x.org");
        assert_eq!(
            to(&out, c),
            [(0, "account registered to another user".to_string())]
        );
        // A registration needs something that looks like an address.
        for email in ["notanemail", "a@", "@x.org", "a@@x.org"] {
            let c = h.open();
            let out = h.send(c, t::NEW_USER_LOGIN, &format!("erin x 0 \"x\" 2 {email}"));
            assert_eq!(
                to(&out, c),
                [(0, "invalid email address".to_string())],
                "{email}"
            );
        }
        // Logged in, a second login is a 404, not a disconnect.
        let b = h.login("bob", 0);
        let out = h.send(b, t::LOGIN, "bob pw 0 \"x\" 2");
        assert_eq!(
            to(&out, b),
            [(t::NOSUCH, "you are already logged in".to_string())]
        );
        assert!(!closed(&out, b));
    }

    #[test]
    fn password_jobs_run_off_the_index_and_are_capped() {
        let mut h = Harness::new(IndexConfig {
            max_pending_logins: 1,
            ..IndexConfig::default()
        });
        let c = h.open();
        let mut out = Vec::new();
        let reg = Frame::new(t::NEW_USER_LOGIN, &b"frank pw 0 \"x\" 2 f@x.org"[..]);
        h.index.receive(c, &reg, h.now, &mut out);
        // No ack yet: the hash is a job for the shell.
        assert!(matches!(&out[..], [Action::HashPassword { conn, .. }] if *conn == c));
        // A second login meanwhile is refused as busy, not queued.
        let d = h.open();
        let busy = h.send(d, t::NEW_USER_LOGIN, "gina pw 0 \"x\" 2 g@x.org");
        assert_eq!(
            to(&busy, d),
            [(0, "server busy, try again later".to_string())]
        );
        let out = h.run_jobs(out);
        assert_eq!(to(&out, c)[0], (t::LOGIN_ACK, "f@x.org".to_string()));
        // A connection that leaves with a job running frees its place.
        let e = h.open();
        let mut out = Vec::new();
        let login = Frame::new(t::LOGIN, &b"frank pw 0 \"x\" 2"[..]);
        let mut other = Vec::new();
        h.index.disconnect(c, &mut other);
        h.index.receive(e, &login, h.now, &mut out);
        assert!(matches!(&out[..], [Action::CheckPassword { .. }]));
        let mut gone = Vec::new();
        h.index.disconnect(e, &mut gone);
        let w = h.open();
        let wrong = h.send(w, t::LOGIN, "frank wrong 0 \"x\" 2");
        assert_eq!(to(&wrong, w), [(0, "Invalid Password".to_string())]);
        let mut late = Vec::new();
        let (id, result) = out[0].run_password_job().unwrap();
        h.index.password_done(id, result, h.now, &mut late);
        assert!(late.is_empty(), "{late:?}");
        let f = h.open();
        let out = h.send(f, t::LOGIN, "frank pw 0 \"x\" 2");
        assert_eq!(to(&out, f)[0].0, t::LOGIN_ACK);
        // What a client sends right behind its login (TekNap: its shares and
        // a stats request) waits for the password check, then is answered.
        let mut g = Harness::new(IndexConfig::default());
        let c = g.open();
        let reg = g.send(c, t::NEW_USER_LOGIN, "tek pw 0 \"x\" 2 blah@opennap");
        g.run_jobs(reg);
        g.index.disconnect(c, &mut Vec::new());
        let c = g.open();
        let mut out = Vec::new();
        for f in [
            Frame::new(t::LOGIN, &b"tek pw 0 \"x\" 2"[..]),
            Frame::new(t::SHARE, &b"\"d\\a.mp3\" aa 10 128 44100 1"[..]),
            Frame::new(t::STATS, &b""[..]),
        ] {
            g.index.receive(c, &f, g.now, &mut out);
        }
        assert!(
            matches!(&out[..], [Action::CheckPassword { .. }]),
            "{out:?}"
        );
        let out = g.run_jobs(out);
        let got = to(&out, c);
        assert_eq!(got[0].0, t::LOGIN_ACK, "{got:?}");
        assert_eq!(got.last().unwrap().0, t::STATS, "{got:?}");
        assert!(got.last().unwrap().1.starts_with("1 1 "), "{got:?}");
    }

    #[test]
    fn sockets_that_never_log_in_cannot_lock_others_out() {
        let mut h = Harness::new(IndexConfig {
            max_unauthenticated: 8,
            max_unauthenticated_per_ip: 4,
            max_users_per_ip: 2,
            ..IndexConfig::default()
        });
        let flood = Ipv4Addr::new(192, 0, 2, 1);
        let mut out = Vec::new();
        for id in 100..110 {
            h.index.connect(id, flood, h.now, &mut out);
        }
        // One address holds at most 4; its oldest were dropped for the newer.
        assert_eq!(h.index.unauthenticated, 4);
        for id in 100..106 {
            assert!(closed(&out, id), "{id}");
        }
        // Many addresses: the total stays at 8, and the address with the most
        // loses its oldest first.
        let mut out = Vec::new();
        for (i, id) in (200..206).enumerate() {
            h.index
                .connect(id, Ipv4Addr::new(198, 51, 100, i as u8), h.now, &mut out);
        }
        assert_eq!(h.index.unauthenticated, 8);
        assert!(closed(&out, 106) && closed(&out, 107) && !closed(&out, 108));
        // A newcomer always gets in (the flood's oldest makes room) and can log in.
        let mut out = Vec::new();
        h.index
            .connect(400, Ipv4Addr::new(10, 9, 9, 9), h.now, &mut out);
        assert!(closed(&out, 108));
        let out = h.send(400, t::LOGIN, "newcomer pw 0 \"x\" 2");
        assert_eq!(to(&out, 400)[0].0, t::LOGIN_ACK);
        // Users per address.
        let mut out = Vec::new();
        for (id, nick) in [(300, "u1"), (301, "u2"), (302, "u3")] {
            h.index
                .connect(id, Ipv4Addr::new(203, 0, 113, 9), h.now, &mut out);
            let login = Frame::new(t::LOGIN, format!("{nick} pw 0 \"x\" 2").into_bytes());
            h.index.receive(id, &login, h.now, &mut out);
        }
        assert_eq!(
            to(&out, 302),
            [(
                0,
                "too many users from your address (at most 2)".to_string()
            )]
        );
    }

    #[test]
    fn memory_is_handed_back_when_users_leave() {
        let mut h = Harness::new(IndexConfig::default());
        let empty = h.index.heap_bytes();
        let searcher = h.login("searcher", 1);
        let mut conns = Vec::new();
        for u in 0..50 {
            let c = h.login(&format!("user{u}"), 1);
            for i in 0..400 {
                h.send(
                    c,
                    t::SHARE,
                    &format!(
                        "\"music\\artist{u} word{i} title{}.mp3\" aa 1 1 1 1",
                        u * 1000 + i
                    ),
                );
            }
            conns.push(c);
        }
        let peak = h.index.heap_bytes();
        assert!(peak > 1_000_000, "{peak}");
        for c in conns {
            let mut out = Vec::new();
            h.index.disconnect(c, &mut out);
        }
        assert_eq!(h.index.files_indexed(), 0);
        assert_eq!(h.index.keyword_count(), 0);
        let after = h.index.heap_bytes();
        assert!(after < empty + 64 * 1024, "{empty} -> {peak} -> {after}");
        assert!(h.index.take_trimmed());
        // Still works afterwards.
        let c = h.login("late", 1);
        h.send(c, t::SHARE, "\"again.mp3\" aa 1 1 1 1");
        assert_eq!(
            search(&mut h, searcher, "FILENAME CONTAINS \"again\"").len(),
            1
        );
    }

    #[test]
    fn unknown_types_get_404_and_floods_of_errors_a_drop() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 1);
        let out = h.send(a, 9999, "");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "Unknown command code 9999".to_string())]
        );
        let mut dropped = false;
        for _ in 0..100 {
            let out = h.send(a, 9999, "");
            if closed(&out, a) {
                assert_eq!(to(&out, a), [(t::NOSUCH, "too many errors".to_string())]);
                dropped = true;
                break;
            }
        }
        assert!(dropped);
        assert_eq!(h.index.users_online(), 0);
    }

    fn search(h: &mut Harness, c: ConnId, q: &str) -> Vec<String> {
        let out = h.send(c, t::SEARCH, q);
        let got = to(&out, c);
        assert_eq!(got.last().map(|g| g.0), Some(t::SEARCH_END), "{got:?}");
        got.into_iter()
            .filter(|(ty, _)| *ty == t::SEARCH_RESULT)
            .map(|(_, s)| s)
            .collect()
    }

    #[test]
    fn galloping_finds_exactly_the_members() {
        let mut seed = 0x1234_5678u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let n = (next() % 300) as usize;
            let spread = 1 + round as u64 * 5;
            let mut list: Vec<u32> = (0..n)
                .map(|_| (next() % (n as u64 * spread + 1)) as u32)
                .collect();
            list.sort_unstable();
            list.dedup();
            let mut asks: Vec<u32> = (0..50)
                .map(|_| (next() % (n as u64 * spread + 2)) as u32)
                .collect();
            asks.sort_unstable();
            asks.dedup();
            let mut pos = 0;
            for id in asks {
                assert_eq!(
                    gallop_to(&list, &mut pos, id),
                    list.binary_search(&id).is_ok()
                );
                assert_eq!(pos, list.partition_point(|&x| x < id), "{list:?} {id}");
            }
        }
    }

    #[test]
    fn searches_stay_exact_through_purges() {
        let mut h = Harness::new(IndexConfig {
            max_results: 100_000,
            request_burst: 1e9,
            request_rate: 1e9,
            ..IndexConfig::default()
        });
        let s = h.login("searcher", 1);
        let users: Vec<ConnId> = (0..4).map(|u| h.login(&format!("u{u}"), 1)).collect();
        let words = ["red", "green", "blue", "gold", "grey"];
        let name = |u: usize, i: usize| {
            format!(
                "{} {} track{i} by u{u}.mp3",
                words[i % 5],
                words[(i / 5 + u) % 5]
            )
        };
        // Live files as (user, i).
        let mut live = std::collections::BTreeSet::new();
        for round in 0..3 {
            for (u, &c) in users.iter().enumerate() {
                for i in round * 300..(round + 1) * 300 {
                    h.send(c, t::SHARE, &format!("\"{}\" aa 1 1 1 1", name(u, i)));
                    live.insert((u, i));
                }
            }
            // Remove most of the older files, in an order unlike the sharing.
            let old: Vec<(usize, usize)> = live
                .iter()
                .copied()
                .filter(|&(u, i)| i < (round + 1) * 300 && (i * 7 + u) % 10 < 8)
                .collect();
            for (u, i) in old {
                h.send(users[u], t::UNSHARE, &name(u, i));
                live.remove(&(u, i));
            }
            for (a, b, x) in [
                ("red", "green", None),
                ("blue", "blue", None),
                ("gold", "grey", Some("u2")),
                ("grey", "red", Some("u0")),
            ] {
                let mut q = format!("FILENAME CONTAINS \"{a} {b}\" MAX_RESULTS 10000");
                if let Some(x) = x {
                    q += &format!(" FILENAME EXCLUDES \"{x}\"");
                }
                let mut got: Vec<String> = search(&mut h, s, &q)
                    .into_iter()
                    .map(|r| r.split('"').nth(1).unwrap().to_string())
                    .collect();
                got.sort();
                let mut want: Vec<String> = live
                    .iter()
                    .map(|&(u, i)| name(u, i))
                    .filter(|n| {
                        let w: Vec<&str> = n.split([' ', '.']).collect();
                        w.contains(&a) && w.contains(&b) && x.is_none_or(|x| !w.contains(&x))
                    })
                    .collect();
                want.sort();
                assert_eq!(got, want, "round {round}: {q}");
            }
        }
        assert!(h.index.stats().compactions >= 2);
        assert_eq!(h.index.files_indexed(), live.len());
    }

    #[test]
    fn share_search_unshare_and_leave() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 6699);
        let b = h.login("bob", 0);
        assert!(h.send(a, t::SHARE, "\"C:\\mp3\\Sneaker Pimps - Tesko Suicide.mp3\" 0123456789abcdef0123456789abcdef 4000000 128 44100 240").is_empty());
        assert!(
            h.send(
                a,
                t::SHARE,
                "\"C:\\mp3\\Sneaker Pimps - Spin Spin Sugar.mp3\" WMA-FILE 3000000 192 48000 200"
            )
            .is_empty()
        );
        assert!(
            h.send(
                a,
                t::SHARE_GENERIC,
                "\"C:\\docs\\sneaker care.txt\" 1234 abcd text"
            )
            .is_empty()
        );
        let dup = h.send(
            a,
            t::SHARE,
            "\"C:\\mp3\\Sneaker Pimps - Spin Spin Sugar.mp3\" x 1 1 1 1",
        );
        assert_eq!(to(&dup, a), [(t::NOSUCH, "duplicate file".to_string())]);
        assert_eq!(h.index.files_indexed(), 3);

        let r = search(&mut h, b, "FILENAME CONTAINS \"sneaker pimps\"");
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            format!(
                "\"C:\\mp3\\Sneaker Pimps - Tesko Suicide.mp3\" 0123456789abcdef0123456789abcdef 4000000 128 44100 240 alice {} 7",
                ip_to_decimal(Ipv4Addr::new(10, 0, 0, 1))
            )
        );
        assert!(r[1].contains(" WMA-FILE 3000000 192 48000 200 alice "));
        // Every clause.
        let q = |s: &str| format!("FILENAME CONTAINS \"sneaker\" {s}");
        assert_eq!(
            search(&mut h, b, &q("BITRATE \"AT LEAST\" \"160\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("BITRATE \"AT BEST\" \"160\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("BITRATE \"EQUAL TO\" \"192\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("FREQ \"EQUAL TO\" \"44100\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("FREQ \"AT LEAST\" \"48001\"")).len(),
            0
        );
        assert_eq!(search(&mut h, b, &q("LINESPEED \"AT LEAST\" 7")).len(), 2);
        assert_eq!(search(&mut h, b, &q("LINESPEED \"AT BEST\" 6")).len(), 0);
        assert_eq!(search(&mut h, b, &q("MAX_RESULTS 1")).len(), 1);
        assert_eq!(search(&mut h, b, &q("TYPE text")).len(), 1);
        assert_eq!(search(&mut h, b, &q("TYPE any")).len(), 3);
        assert_eq!(
            search(&mut h, b, &q("FILENAME CONTAINS \"sugar\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("FILENAME CONTAINS \"nothing\"")).len(),
            0
        );
        assert_eq!(search(&mut h, b, "FILENAME CONTAINS \"SPIN\"").len(), 1);
        // A bad search: 404 then the 202.
        let out = h.send(b, t::SEARCH, "FILENAME IS \"x\"");
        assert_eq!(
            to(&out, b),
            [
                (t::NOSUCH, "invalid search request".into()),
                (t::SEARCH_END, String::new())
            ]
        );

        // Unshare one, then alice leaves and her files go.
        let out = h.send(
            a,
            t::UNSHARE,
            "C:\\mp3\\Sneaker Pimps - Spin Spin Sugar.mp3",
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(search(&mut h, b, "FILENAME CONTAINS \"sneaker\"").len(), 1);
        let out = h.send(a, t::UNSHARE, "\"no such file\"");
        assert_eq!(to(&out, a), [(t::NOSUCH, "not sharing that file".into())]);
        let mut out = Vec::new();
        h.index.disconnect(a, &mut out);
        assert_eq!(h.index.files_indexed(), 0);
        assert_eq!(
            search(&mut h, b, "FILENAME CONTAINS \"sneaker\" TYPE any").len(),
            0
        );
    }

    #[test]
    fn share_dir_and_limits() {
        let mut h = Harness::new(IndexConfig {
            max_files_per_user: 3,
            ..IndexConfig::default()
        });
        let a = h.login("alice", 1);
        let out = h.send(
            a,
            t::SHARE_DIR,
            "\"C:\\mp3\" \"one.mp3\" aa 1 128 44100 1 \"two.mp3\" bb 2 128 44100 2",
        );
        assert!(out.is_empty(), "{out:?}");
        let b = h.login("bob", 1);
        let r = search(&mut h, b, "FILENAME CONTAINS \"two\"");
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("\"C:\\mp3\\two.mp3\" bb 2 "));
        h.send(a, t::SHARE, "\"three.mp3\" cc 3 1 1 1");
        let out = h.send(a, t::SHARE, "\"four.mp3\" dd 4 1 1 1");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "You may only share 3 files".into())]
        );
        h.send(a, t::UNSHARE_ALL, "");
        assert_eq!(h.index.files_indexed(), 0);
        let out = h.send(a, t::SHARE_DIR, "\"d\" \"x.mp3\" aa 1 2");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "invalid parameters for share (870)".into())]
        );
    }

    #[test]
    fn slots_are_reused_only_after_a_purge() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        for i in 0..5000 {
            h.send(a, t::SHARE, &format!("\"song{i} common.mp3\" aa 1 1 1 1"));
        }
        for i in 0..5000 {
            h.send(a, t::UNSHARE, &format!("song{i} common.mp3"));
        }
        assert!(h.index.stats().compactions >= 1);
        for i in 0..100 {
            h.send(b, t::SHARE, &format!("\"other{i} rare.mp3\" aa 1 1 1 1"));
        }
        assert_eq!(search(&mut h, a, "FILENAME CONTAINS \"common\"").len(), 0);
        assert_eq!(search(&mut h, a, "FILENAME CONTAINS \"rare\"").len(), 100);
        assert_eq!(search(&mut h, a, "FILENAME CONTAINS \"song42\"").len(), 0);
    }

    #[test]
    fn unsharing_squeezes_the_arena_and_keeps_the_rest_intact() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        for i in 0..40 {
            let md5 = if i % 2 == 0 {
                format!("{i:032x}")
            } else {
                format!("X{i}")
            };
            h.send(
                a,
                t::SHARE,
                &format!("\"dir\\song{i} tune.mp3\" {md5} {i} 128 44100 {i}"),
            );
        }
        // Removing 30 of 40 leaves the arena more than a quarter dead: squeezed.
        for i in (0..40).filter(|i| i % 4 != 0) {
            assert!(
                h.send(a, t::UNSHARE, &format!("dir\\song{i} tune.mp3"))
                    .is_empty()
            );
        }
        let user = h.index.user(h.index.slot_by_nick(b"alice").unwrap());
        assert_eq!(user.files.len(), 10);
        assert!((user.dead as usize) * 4 < user.arena.len().max(1));
        let mut r = search(&mut h, b, "FILENAME CONTAINS \"tune\"");
        r.sort();
        let mut want: Vec<String> = (0..40)
            .filter(|i| i % 4 == 0)
            .map(|i| {
                format!(
                    "\"dir\\song{i} tune.mp3\" {i:032x} {i} 128 44100 {i} alice {} 7",
                    ip_to_decimal(Ipv4Addr::new(10, 0, 0, 1))
                )
            })
            .collect();
        want.sort();
        assert_eq!(r, want);
        // Names are found exactly: a removed one is gone, a kept one is a duplicate.
        let out = h.send(a, t::UNSHARE, "dir\\song1 tune.mp3");
        assert_eq!(to(&out, a), [(t::NOSUCH, "not sharing that file".into())]);
        let out = h.send(a, t::SHARE, "\"dir\\song4 tune.mp3\" aa 1 1 1 1");
        assert_eq!(to(&out, a), [(t::NOSUCH, "duplicate file".into())]);
        let out = h.send(a, t::SHARE, "\"dir\\song5 tune.mp3\" X5 5 1 1 1");
        assert!(out.is_empty(), "{out:?}");
        let out = h.send(b, t::DOWNLOAD, "alice \"dir\\song5 tune.mp3\"");
        assert_eq!(
            to(&out, a),
            [(t::UPLOAD_REQUEST, "bob \"dir\\song5 tune.mp3\" 7".into())]
        );
        let out = h.send(a, t::UPLOAD_ACCEPT, "bob \"dir\\song5 tune.mp3\"");
        assert!(
            to(&out, b)[0].1.ends_with("\"dir\\song5 tune.mp3\" X5 7"),
            "{out:?}"
        );
        // Sizes past 48 bits are kept as the largest 48-bit size.
        h.send(a, t::SHARE, "\"huge.iso\" aa 18446744073709551615 0 0 0");
        let r = search(&mut h, b, "FILENAME CONTAINS \"huge\"");
        assert!(r[0].contains(" 281474976710655 0 0 0 "), "{r:?}");
    }

    #[test]
    fn selective_search_cost_does_not_grow_with_the_index() {
        let mut h = Harness::new(IndexConfig::default());
        let b = h.login("searcher", 1);
        let n = h.login("needle", 1);
        h.send(n, t::SHARE, "\"music\\common track needle.mp3\" aa 1 1 1 1");
        let mut cost = Vec::new();
        for round in 0..2 {
            for u in 0..20 {
                let c = h.login(&format!("u{round}x{u}"), 1);
                for i in 0..1000 {
                    h.send(
                        c,
                        t::SHARE,
                        &format!("\"music\\common track {i}.mp3\" aa 1 1 1 1"),
                    );
                }
            }
            let before = h.index.stats().candidates;
            let r = search(
                &mut h,
                b,
                "FILENAME CONTAINS \"Common TRACK\" FILENAME CONTAINS \"needle\"",
            );
            assert_eq!(r.len(), 1);
            cost.push(h.index.stats().candidates - before);
        }
        // 20,001 then 40,001 files carry "common" and "track"; the search walks
        // the one posting of "needle" either way.
        assert_eq!(h.index.files_indexed(), 40_001);
        assert_eq!(cost, [1, 1]);
        // A common word alone stops at MAX_RESULTS.
        let before = h.index.stats().candidates;
        assert_eq!(
            search(&mut h, b, "FILENAME CONTAINS \"track\" MAX_RESULTS 10").len(),
            10
        );
        assert_eq!(h.index.stats().candidates - before, 10);
    }

    #[test]
    fn transfer_brokering() {
        let mut h = Harness::new(IndexConfig::default());
        let up = h.login("up", 6699);
        let fw = h.login("fw", 0);
        let down = h.login("down", 7000);
        let down_fw = h.login("downfw", 0);
        h.send(up, t::SHARE, "\"a b.mp3\" 00ff 10 1 1 1");
        h.send(fw, t::SHARE, "\"c d.mp3\" 00ff 10 1 1 1");
        // Normal: 203 -> 607 to the uploader; 608 -> 204 to the downloader.
        let out = h.send(down, t::DOWNLOAD, "up \"a b.mp3\"");
        assert_eq!(
            to(&out, up),
            [(t::UPLOAD_REQUEST, "down \"a b.mp3\" 7".into())]
        );
        let out = h.send(up, t::UPLOAD_ACCEPT, "down \"a b.mp3\"");
        let ip = ip_to_decimal(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            to(&out, down),
            [(t::DOWNLOAD_ACK, format!("up {ip} 6699 \"a b.mp3\" 00ff 7"))]
        );
        // Not shared / not online: 206.
        let out = h.send(down, t::DOWNLOAD, "up \"zzz.mp3\"");
        assert_eq!(to(&out, down), [(t::GET_ERROR, "up \"zzz.mp3\"".into())]);
        let out = h.send(down, t::DOWNLOAD, "nobody \"a b.mp3\"");
        assert_eq!(
            to(&out, down),
            [(t::GET_ERROR, "nobody \"a b.mp3\"".into())]
        );
        // Firewalled uploader: 204 with port 0, then 500 -> 607, 608 -> 501.
        let out = h.send(down, t::DOWNLOAD, "fw \"c d.mp3\"");
        let ip_fw = ip_to_decimal(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            to(&out, down),
            [(t::DOWNLOAD_ACK, format!("fw {ip_fw} 0 \"c d.mp3\" 00ff 7"))]
        );
        let out = h.send(down, t::FIREWALL_DOWNLOAD, "fw \"c d.mp3\"");
        assert_eq!(
            to(&out, fw),
            [(t::UPLOAD_REQUEST, "down \"c d.mp3\" 7".into())]
        );
        let out = h.send(fw, t::UPLOAD_ACCEPT, "down \"c d.mp3\"");
        let ip_down = ip_to_decimal(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(
            to(&out, fw),
            [(
                t::FIREWALL_UPLOAD,
                format!("down {ip_down} 7000 \"c d.mp3\" 00ff 7")
            )]
        );
        // Both firewalled.
        let out = h.send(down_fw, t::FIREWALL_DOWNLOAD, "fw \"c d.mp3\"");
        assert_eq!(
            to(&out, down_fw),
            [(
                t::DOWNLOAD_ACK,
                format!("fw {ip_fw} 0 \"c d.mp3\" firewallerror 7")
            )]
        );
        // A request the uploader never accepts: 609 when it leaves.
        h.send(down, t::DOWNLOAD, "up \"a b.mp3\"");
        let mut out = Vec::new();
        h.index.disconnect(up, &mut out);
        assert_eq!(
            to(&out, down),
            [(t::UPLOAD_FAILED, "up \"a b.mp3\"".into())]
        );
        // And one that times out.
        h.send(down, t::DOWNLOAD, "fw \"c d.mp3\"");
        h.send(down, t::FIREWALL_DOWNLOAD, "fw \"c d.mp3\"");
        h.now.mono += Duration::from_secs(61);
        let mut out = Vec::new();
        h.index.tick(h.now, &mut out);
        assert_eq!(
            to(&out, down),
            [(t::UPLOAD_FAILED, "fw \"c d.mp3\"".into())]
        );
    }

    #[test]
    fn user_queries() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        h.send(a, t::SHARE, "\"x.mp3\" aa 10 128 44100 60");
        let out = h.send(b, t::PRIVATE_MESSAGE, "alice hello there");
        assert_eq!(
            to(&out, a),
            [(t::PRIVATE_MESSAGE, "bob hello there".into())]
        );
        let out = h.send(b, t::BROWSE, "alice");
        assert_eq!(
            to(&out, b),
            [
                (
                    t::BROWSE_RESULT,
                    "alice \"x.mp3\" aa 10 128 44100 60".into()
                ),
                (t::BROWSE_END, "alice".into())
            ]
        );
        let out = h.send(b, t::BROWSE, "carol");
        assert_eq!(to(&out, b), [(t::SIGNOFF, "carol".into())]);
        let out = h.send(b, t::WHOIS, "alice");
        assert_eq!(
            to(&out, b),
            [(
                t::WHOIS_REPLY,
                "alice \"User\" 0 \"\" \"Active\" 1 0 0 7 \"test 1\"".into()
            )]
        );
        h.send(a, t::UPLOAD_START, "");
        let out = h.send(b, t::WHOIS, "alice");
        assert!(to(&out, b)[0].1.contains("\"Active\" 1 0 1 7"));
        let out = h.send(b, t::LINK_SPEED, "alice");
        assert_eq!(to(&out, b), [(t::LINK_SPEED_REPLY, "alice 7".into())]);
        let out = h.send(b, t::PING, "alice");
        assert_eq!(to(&out, a), [(t::PING, "bob".into())]);
        let out = h.send(a, t::PONG, "bob");
        assert_eq!(to(&out, b), [(t::PONG, "alice".into())]);
        let out = h.send(b, t::SERVER_PING, "");
        assert_eq!(to(&out, b), [(t::SERVER_PING, String::new())]);
        let out = h.send(b, t::STATS, "");
        assert_eq!(to(&out, b), [(t::STATS, "2 1 0".into())]);
        let out = h.send(b, t::WHOIS, "carol");
        assert_eq!(
            to(&out, b),
            [(t::NOSUCH, "carol is not currently online".into())]
        );
    }

    #[test]
    fn nicks_followed_by_more_are_read_as_opennap_does() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("usera", 1);
        let b = h.login("userb", 1);
        // TekNap's /ping sends `751 userb ` (and a timestamp after it, some builds).
        let out = h.send(a, t::PING, "userb ");
        assert_eq!(to(&out, b), [(t::PING, "usera".into())]);
        let out = h.send(a, t::PING, "userb 12345");
        assert_eq!(to(&out, b), [(t::PING, "usera 12345".into())]);
        let out = h.send(b, t::PONG, "usera 12345");
        assert_eq!(to(&out, a), [(t::PONG, "userb 12345".into())]);
        let out = h.send(a, t::PING, "nobody ");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "ping failed, nobody is not online".into())]
        );
        let out = h.send(a, t::WHOIS, "userb ");
        assert!(to(&out, a)[0].1.starts_with("userb \"User\""), "{out:?}");
        let out = h.send(a, t::WHOIS, "");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "whois failed: missing nickname".into())]
        );
        let out = h.send(a, t::LINK_SPEED, "userb ");
        assert_eq!(to(&out, a), [(t::LINK_SPEED_REPLY, "userb 7".into())]);
    }

    #[test]
    fn size_duration_excludes_and_empty_searches() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        h.send(a, t::SHARE, "\"beatles help.mp3\" aa 3000000 128 44100 140");
        h.send(
            a,
            t::SHARE,
            "\"beatles help live.mp3\" aa 9000000 128 44100 400",
        );
        let q = |x: &str| format!("FILENAME CONTAINS \"beatles\" {x}");
        assert_eq!(
            search(&mut h, b, &q("SIZE \"AT LEAST\" \"5000000\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("SIZE \"AT BEST\" \"5000000\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("SIZE \"EQUAL TO\" \"3000000\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("DURATION \"AT LEAST\" \"300\"")).len(),
            1
        );
        assert_eq!(
            search(&mut h, b, &q("DURATION \"AT BEST\" \"100\"")).len(),
            0
        );
        let r = search(&mut h, b, &q("FILENAME EXCLUDES \"live\""));
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("\"beatles help.mp3\""));
        assert_eq!(
            search(&mut h, b, "FILENAME CONTAINS \"beatles -live\"").len(),
            1
        );
        // No word at all: OpenNap's 404 before the 202.
        for q in [
            "MAX_RESULTS 5",
            "FILENAME CONTAINS \"-live\"",
            "FILENAME CONTAINS \"...\"",
        ] {
            let out = h.send(b, t::SEARCH, q);
            assert_eq!(
                to(&out, b),
                [
                    (
                        t::NOSUCH,
                        "search failed: request contained no valid words".into()
                    ),
                    (t::SEARCH_END, String::new())
                ],
                "{q}"
            );
        }
    }

    #[test]
    fn direct_browse_is_relayed() {
        let mut h = Harness::new(IndexConfig::default());
        let open = h.login("open", 6699);
        let walled = h.login("walled", 0);
        let me = h.login("me", 7000);
        let me_fw = h.login("mefw", 0);
        h.send(open, t::SHARE, "\"x.mp3\" aa 1 1 1 1");
        h.send(walled, t::SHARE, "\"y.mp3\" aa 1 1 1 1");
        // 640 to a reachable browsee: it gets the requester's nick only.
        let out = h.send(me, t::BROWSE_DIRECT, "open");
        assert_eq!(to(&out, open), [(t::BROWSE_DIRECT, "me".into())]);
        // Its 641 gives the requester where to connect.
        let out = h.send(open, t::BROWSE_DIRECT_OK, "me");
        let ip = ip_to_decimal(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(
            to(&out, me),
            [(t::BROWSE_DIRECT_OK, format!("open {ip} 6699"))]
        );
        // A firewalled browsee is told where the requester listens.
        let out = h.send(me, t::BROWSE_DIRECT, "walled");
        let my_ip = ip_to_decimal(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(
            to(&out, walled),
            [(t::BROWSE_DIRECT, format!("me {my_ip} 7000"))]
        );
        // Errors: both firewalled, nothing shared, not online.
        let out = h.send(me_fw, t::BROWSE_DIRECT, "walled");
        assert_eq!(
            to(&out, me_fw),
            [(
                t::BROWSE_DIRECT_ERR,
                "walled \"Both you and walled are firewalled; you cannot browse or download from them.\"".into()
            )]
        );
        let out = h.send(open, t::BROWSE_DIRECT, "me");
        assert_eq!(
            to(&out, open),
            [(
                t::BROWSE_DIRECT_ERR,
                "me \"me is not sharing any files.\"".into()
            )]
        );
        let out = h.send(me, t::BROWSE_DIRECT, "ghost");
        assert_eq!(
            to(&out, me),
            [(t::NOSUCH, "ghost is not currently online".into())]
        );
    }

    #[test]
    fn hotlists_tell_who_comes_and_goes() {
        let mut h = Harness::new(IndexConfig {
            max_hotlist: 2,
            ..IndexConfig::default()
        });
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        // Bob is on: ack, then his sign-on.
        let out = h.send(a, t::HOTLIST_INIT, "Bob");
        assert_eq!(
            to(&out, a),
            [
                (t::HOTLIST_ACK, "Bob".into()),
                (t::USER_SIGNON, "bob 7".into())
            ]
        );
        let out = h.send(a, t::HOTLIST_ADD, "carol");
        assert_eq!(to(&out, a), [(t::HOTLIST_ACK, "carol".into())]);
        let out = h.send(a, t::HOTLIST_ADD, "dave");
        assert_eq!(to(&out, a), [(t::HOTLIST_ERROR, "dave".into())]);
        let out = h.send(a, t::HOTLIST_ADD, "a,b");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "hotlist add failed: invalid nick".into())]
        );
        // Carol comes, Bob goes.
        let c = h.open();
        let out = h.send(c, t::LOGIN, "carol pw 0 \"x\" 3");
        assert_eq!(to(&out, a), [(t::USER_SIGNON, "carol 3".into())]);
        let mut out = Vec::new();
        h.index.disconnect(b, &mut out);
        assert_eq!(to(&out, a), [(t::SIGNOFF, "bob".into())]);
        // Removed: no more news of carol.
        let out = h.send(a, t::HOTLIST_REMOVE, "carol");
        assert_eq!(to(&out, a), [(t::HOTLIST_REMOVE, "carol".into())]);
        let out = h.send(a, t::HOTLIST_REMOVE, "carol");
        assert_eq!(
            to(&out, a),
            [(
                t::NOSUCH,
                "hotlist remove failed: carol is not on your hotlist".into()
            )]
        );
        let mut out = Vec::new();
        h.index.disconnect(c, &mut out);
        assert!(to(&out, a).is_empty());
        // A watcher that leaves is forgotten.
        let mut out = Vec::new();
        h.index.disconnect(a, &mut out);
        assert!(h.index.watchers.is_empty());
    }

    #[test]
    fn channels_join_talk_topic_and_part() {
        let mut h = Harness::new(IndexConfig {
            max_user_channels: 2,
            ..IndexConfig::default()
        });
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        h.send(a, t::SHARE, "\"x.mp3\" aa 1 1 1 1");
        let out = h.send(a, t::JOIN, "#Music");
        assert_eq!(
            to(&out, a),
            [
                (t::JOIN_ACK, "#Music".into()),
                (t::CHANNEL_USER, "#Music alice 1 7".into()),
                (t::CHANNEL_USER_END, "#Music".into()),
                (t::TOPIC, "#Music Welcome to the channel".into()),
            ]
        );
        let out = h.send(b, t::JOIN, "#music");
        assert_eq!(to(&out, a), [(t::JOINED, "#Music bob 0 7".into())]);
        let got = to(&out, b);
        assert_eq!(got[1], (t::CHANNEL_USER, "#Music alice 1 7".into()));
        assert_eq!(got[2], (t::CHANNEL_USER, "#Music bob 0 7".into()));
        let out = h.send(b, t::JOIN, "#MUSIC");
        assert_eq!(
            to(&out, b),
            [(
                t::NOSUCH,
                "channel join failed: already joined channel".into()
            )]
        );
        // Public messages reach every member, the sender too.
        let out = h.send(b, t::PUBLIC, "#music hello all");
        assert_eq!(
            to(&out, a),
            [(t::PUBLIC_MESSAGE, "#Music bob hello all".into())]
        );
        assert_eq!(
            to(&out, b),
            [(t::PUBLIC_MESSAGE, "#Music bob hello all".into())]
        );
        let out = h.send(b, t::PUBLIC, "#other hi");
        assert_eq!(
            to(&out, b),
            [(t::NOSUCH, "You are not a member of that channel".into())]
        );
        // Topic: set by a member, read by anyone.
        let out = h.send(a, t::TOPIC, "#music new tunes");
        assert_eq!(to(&out, b), [(t::TOPIC, "#Music new tunes".into())]);
        let out = h.send(a, t::LIST_CHANNELS, "");
        assert_eq!(
            to(&out, a),
            [
                (t::CHANNEL_LIST, "#Music 2 new tunes".into()),
                (t::LIST_CHANNELS, String::new())
            ]
        );
        // TekNap's /list (827) and /names (830).
        let out = h.send(b, t::FULL_CHANNEL_LIST, "");
        assert_eq!(
            to(&out, b),
            [
                (
                    t::FULL_CHANNEL_INFO,
                    "#Music 2 1 1 500 \"new tunes\"".into()
                ),
                (t::FULL_CHANNEL_LIST, String::new())
            ]
        );
        let out = h.send(b, t::NAMES_LIST, "#music");
        assert_eq!(
            to(&out, b),
            [
                (t::NAMES_ENTRY, "#Music alice 1 7".into()),
                (t::NAMES_ENTRY, "#Music bob 0 7".into()),
                (t::NAMES_LIST, String::new())
            ]
        );
        let c = h.login("carol", 1);
        let out = h.send(c, t::NAMES_LIST, "#music");
        assert_eq!(
            to(&out, c),
            [(t::NOSUCH, "you're not on channel #Music".into())]
        );
        // Per-user channel cap.
        h.send(b, t::JOIN, "two");
        let out = h.send(b, t::JOIN, "three");
        assert_eq!(
            to(&out, b),
            [(
                t::NOSUCH,
                "channel join failed: you may only join 2 channels".into()
            )]
        );
        // Part and leaving: the others are told; empty channels go.
        let out = h.send(a, t::PART, "#music");
        assert_eq!(to(&out, a), [(t::PART, "#Music".into())]);
        assert_eq!(to(&out, b), [(t::PARTED, "#Music alice 1 7".into())]);
        let out = h.send(a, t::PART, "#music");
        assert_eq!(
            to(&out, a),
            [(
                t::NOSUCH,
                "part channel failed: you are not in that channel".into()
            )]
        );
        let mut out = Vec::new();
        h.index.disconnect(b, &mut out);
        assert!(h.index.channels.is_empty());
    }

    #[test]
    fn resume_search_by_checksum_and_size() {
        let mut h = Harness::new(IndexConfig::default());
        let a = h.login("alice", 6699);
        let b = h.login("bob", 0);
        let sum = "0123456789abcdef0123456789abcdef";
        h.send(
            a,
            t::SHARE,
            &format!("\"a\\song.mp3\" {sum} 5000 128 44100 60"),
        );
        h.send(
            b,
            t::SHARE,
            &format!("\"b\\same.mp3\" {sum} 5000 128 44100 60"),
        );
        h.send(
            b,
            t::SHARE,
            &format!("\"b\\other size.mp3\" {sum} 4000 128 44100 60"),
        );
        let out = h.send(b, t::RESUME_SEARCH, &format!("{sum} 5000"));
        let got = to(&out, b);
        let ip = ip_to_decimal(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            (
                t::RESUME_RESULT,
                format!("alice {ip} 6699 \"a\\song.mp3\" {sum} 5000 7")
            )
        );
        assert!(got[1].1.starts_with("bob "));
        assert_eq!(got[2], (t::RESUME_END, String::new()));
        let out = h.send(b, t::RESUME_SEARCH, "nothing 5000");
        assert_eq!(to(&out, b), [(t::RESUME_END, String::new())]);
    }

    #[test]
    fn timeouts_and_throttling() {
        let mut h = Harness::new(IndexConfig::default());
        let idle = h.open();
        let a = h.login("alice", 1);
        h.now.mono += Duration::from_secs(31);
        let mut out = Vec::new();
        h.index.tick(h.now, &mut out);
        assert_eq!(to(&out, idle), [(0, "login timed out".into())]);
        assert!(closed(&out, idle) && !closed(&out, a));
        // Idle: pinged once, then dropped.
        h.now.mono += Duration::from_secs(600);
        let mut out = Vec::new();
        h.index.tick(h.now, &mut out);
        assert_eq!(to(&out, a), [(t::SERVER_PING, String::new())]);
        h.now.mono += Duration::from_secs(3600);
        let mut out = Vec::new();
        h.index.tick(h.now, &mut out);
        assert!(closed(&out, a));
        // A search flood: answered, then throttled, then dropped.
        let b = h.login("bob", 1);
        let mut answered = 0;
        let mut throttled = 0;
        let mut dropped = false;
        for _ in 0..10_000 {
            let out = h.send(b, t::SEARCH, "FILENAME CONTAINS \"x\"");
            if closed(&out, b) {
                dropped = true;
                break;
            }
            if to(&out, b).iter().any(|(ty, _)| *ty == t::NOSUCH) {
                throttled += 1;
            } else {
                answered += 1;
            }
        }
        assert!(dropped);
        assert_eq!(answered, 64);
        assert_eq!(throttled, 32);
    }

    /// An index whose `boss` is Elite (and registered, logged in).
    fn with_boss() -> (Harness, ConnId) {
        let mut h = Harness::new(IndexConfig::default());
        let mut ops = Operators::new(100, 3);
        let elite = Record {
            level: Level::Elite,
            muzzled: false,
        };
        ops.set("boss", elite).unwrap();
        // Kept for `fake`, who is not registered: it logs in a User.
        ops.set("fake", elite).unwrap();
        h.index.set_operators(ops);
        let c = h.open();
        let out = h.send(c, t::NEW_USER_LOGIN, "boss pw 0 \"x\" 7 boss@x.org");
        let got = to(&out, c);
        assert_eq!(got[0].0, t::LOGIN_ACK, "{got:?}");
        assert!(
            got.contains(&(
                t::NOSUCH,
                "Server servent set your user level to Elite (4).".into()
            )),
            "{got:?}"
        );
        (h, c)
    }

    fn level_of(h: &mut Harness, asker: ConnId, nick: &str) -> String {
        let out = h.send(asker, t::WHOIS, nick);
        let got = to(&out, asker);
        let text = &got[0].1;
        text.split('"').nth(1).unwrap().to_string()
    }

    use crate::napster::operators::Record;

    #[test]
    fn levels_kill_and_permissions_as_opennap() {
        let (mut h, boss) = with_boss();
        let a = h.login("alice", 1);
        let b = h.login("bob", 1);
        let f = h.login("fake", 1);
        // A level above User needs a registered nick.
        assert_eq!(level_of(&mut h, a, "fake"), "User");
        assert_eq!(level_of(&mut h, a, "boss"), "Elite");
        // Users may not use operator commands.
        for (ty, data, err) in [
            (t::KILL, "bob", "kill failed: permission denied"),
            (t::BAN, "bob", "permission denied"),
            (t::BANLIST, "", "permission denied"),
            (t::WALLOP, "hi", "permission denied"),
            (t::ANNOUNCE, "hi", "permission denied"),
            (t::SERVER_VERSION, "", "permission denied"),
            (
                t::SET_LEVEL,
                "bob leech",
                "set user level failed: permission denied",
            ),
            (t::MUZZLE, "bob", "muzzle failed: permission denied"),
            (t::UNMUZZLE, "bob", "unmuzzle failed: permission denied"),
        ] {
            let out = h.send(f, ty, data);
            assert_eq!(to(&out, f), [(t::NOSUCH, err.to_string())], "{ty}");
        }
        // Elite makes alice a moderator: she is told, and the operators too.
        let out = h.send(boss, t::SET_LEVEL, "alice mod");
        // (she is an operator now: she hears of it as one too)
        assert_eq!(
            to(&out, a),
            [
                (
                    t::NOSUCH,
                    "boss changed your user level to Moderator (2)".into()
                ),
                (
                    t::NOSUCH,
                    "boss changed alice's user level to Moderator (2)".into()
                )
            ]
        );
        assert_eq!(
            to(&out, boss),
            [(
                t::NOSUCH,
                "boss changed alice's user level to Moderator (2)".into()
            )]
        );
        assert!(out.contains(&Action::SaveOperators));
        assert_eq!(h.index.operators().record("Alice").level, Level::Moderator);
        assert_eq!(level_of(&mut h, b, "alice"), "Moderator");
        // Again: nothing to say.
        assert!(h.send(boss, t::SET_LEVEL, "alice moderator").is_empty());
        let out = h.send(boss, t::SET_LEVEL, "alice god");
        assert_eq!(
            to(&out, boss),
            [(
                t::NOSUCH,
                "set user level failed: god: invalid level".into()
            )]
        );
        let out = h.send(boss, t::SET_LEVEL, "a,b user");
        assert_eq!(
            to(&out, boss),
            [(t::NOSUCH, "set user level failed: invalid nickname".into())]
        );
        // A moderator gives nobody her own level or more, and touches nobody above.
        for data in ["bob moderator", "bob admin", "boss user"] {
            let out = h.send(a, t::SET_LEVEL, data);
            assert_eq!(
                to(&out, a),
                [(t::NOSUCH, "set user level failed: permission denied".into())],
                "{data}"
            );
        }
        let out = h.send(a, t::KILL, "boss");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "kill failed: permission denied".into())]
        );
        let out = h.send(a, t::KILL, "nobody");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "kill failed: no such user".into())]
        );
        let out = h.send(a, t::KILL, "");
        assert_eq!(
            to(&out, a),
            [(t::NOSUCH, "kill failed: too few parameters".into())]
        );
        // She kills bob: he is told why and closed; the operators hear of it.
        let out = h.send(a, t::KILL, "bob \"go away\"");
        assert_eq!(
            to(&out, b),
            [
                (t::NOSUCH, "You have been killed by alice: go away".into()),
                (t::DISCONNECTING, "0".into())
            ]
        );
        assert!(closed(&out, b));
        assert!(!h.index.is_online("bob"));
        for c in [a, boss] {
            assert_eq!(
                to(&out, c),
                [(t::NOSUCH, "alice killed bob: go away".into())]
            );
        }
        // She may lower herself; Elite may do anything.
        let out = h.send(a, t::SET_LEVEL, "alice user");
        assert_eq!(
            to(&out, a),
            [(
                t::NOSUCH,
                "alice changed your user level to User (1)".into()
            )]
        );
        assert!(!h.index.operators().knows("alice"));
        // Moderator+ see the server version; opsay reaches moderators only,
        // announce everybody.
        let out = h.send(boss, t::SERVER_VERSION, "");
        assert_eq!(to(&out, boss).len(), 3);
        let out = h.send(boss, t::WALLOP, "ops only");
        assert_eq!(to(&out, boss), [(t::WALLOP, "boss ops only".into())]);
        assert!(to(&out, a).is_empty());
        let out = h.send(boss, t::ANNOUNCE, "to all");
        for c in [boss, a, f] {
            assert_eq!(to(&out, c), [(t::ANNOUNCE, "boss to all".into())]);
        }
    }

    #[test]
    fn muzzled_users_cannot_talk_and_stay_muzzled() {
        let (mut h, boss) = with_boss();
        let c = h.login("carol", 1);
        let d = h.login("dave", 1);
        h.send(c, t::JOIN, "room");
        let out = h.send(boss, t::MUZZLE, "carol \"too loud\"");
        assert_eq!(
            to(&out, c),
            [(t::NOSUCH, "You have been muzzled by boss: too loud".into())]
        );
        assert_eq!(
            to(&out, boss),
            [(t::NOSUCH, "boss has muzzled carol: too loud".into())]
        );
        assert!(h.send(boss, t::MUZZLE, "carol").is_empty());
        let out = h.send(c, t::PUBLIC, "room hello");
        assert_eq!(to(&out, c), [(t::NOSUCH, "You are muzzled.".into())]);
        let out = h.send(c, t::PRIVATE_MESSAGE, "dave hello");
        assert_eq!(to(&out, c), [(t::NOSUCH, "You are muzzled.".into())]);
        assert!(to(&out, d).is_empty());
        // An operator may still be asked why.
        let out = h.send(c, t::PRIVATE_MESSAGE, "boss why");
        assert_eq!(to(&out, boss), [(t::PRIVATE_MESSAGE, "carol why".into())]);
        // Leaving does not lift it.
        let mut out = Vec::new();
        h.index.disconnect(c, &mut out);
        let c = h.open();
        let out = h.send(c, t::LOGIN, "carol pw 0 \"x\" 2");
        assert!(to(&out, c).contains(&(
            t::NOSUCH,
            "You have been muzzled by server servent: quit while muzzled".into()
        )));
        let out = h.send(c, t::PUBLIC, "room hello");
        assert_eq!(to(&out, c), [(t::NOSUCH, "You are muzzled.".into())]);
        let out = h.send(boss, t::UNMUZZLE, "carol");
        assert_eq!(
            to(&out, c),
            [(t::NOSUCH, "You have been unmuzzled by boss: ".into())]
        );
        let out = h.send(c, t::PRIVATE_MESSAGE, "dave hello");
        assert_eq!(to(&out, d), [(t::PRIVATE_MESSAGE, "carol hello".into())]);
        assert!(!h.index.operators().knows("carol"));
        // Raising a level lifts a muzzle.
        h.send(boss, t::MUZZLE, "dave");
        h.send(boss, t::SET_LEVEL, "dave moderator");
        assert!(!h.index.operators().record("dave").muzzled);
        let out = h.send(d, t::PRIVATE_MESSAGE, "carol hi");
        assert_eq!(to(&out, c), [(t::PRIVATE_MESSAGE, "dave hi".into())]);
    }

    #[test]
    fn bans_hold_at_login_by_nick_and_address_and_are_bounded() {
        let (mut h, boss) = with_boss();
        let out = h.send(boss, t::BAN, "Eve \"spam\"");
        assert_eq!(
            to(&out, boss),
            [(t::NOSUCH, "boss banned eve!*: spam".into())]
        );
        assert!(out.contains(&Action::SaveOperators));
        let out = h.send(boss, t::BAN, "eve");
        assert_eq!(to(&out, boss), [(t::NOSUCH, "already banned".into())]);
        let c = h.open();
        let out = h.send(c, t::LOGIN, "EVE pw 0 \"x\" 2");
        assert_eq!(to(&out, c), [(0, "eve!* banned: spam".into())]);
        assert!(closed(&out, c));
        // By address: the next connection is 10.0.0.<next + 1>.
        let ip = format!("10.0.0.{}", h.next + 1);
        h.send(boss, t::BAN, &format!("{ip} \"\" 60"));
        let c = h.open();
        let out = h.send(c, t::LOGIN, "frank pw 0 \"x\" 2");
        assert_eq!(to(&out, c), [(0, format!("*!{ip} banned"))]);
        // The list: both bans, then an empty 615.
        let out = h.send(boss, t::BANLIST, "");
        let got = to(&out, boss);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[0],
            (t::BANLIST_ENTRY, "eve!* boss \"spam\" 1000000 0".into())
        );
        assert_eq!(got[2], (t::BANLIST, String::new()));
        // The third fills the list; a fourth is refused.
        h.send(boss, t::BAN, "x1");
        let out = h.send(boss, t::BAN, "x2");
        assert_eq!(
            to(&out, boss),
            [(t::NOSUCH, "ban failed: the ban list is full (3)".into())]
        );
        // The address ban runs out after 60 s (and makes room).
        h.now.unix += 60;
        let c = h.next + 1;
        let _ = h.login("gus", 1);
        assert!(h.index.is_online("gus"), "{c}");
        let out = h.send(boss, t::BAN, "x2");
        assert_eq!(to(&out, boss)[0].1, "boss banned x2!*: ");
        // Unban.
        let out = h.send(boss, t::UNBAN, "eve \"sorry\"");
        assert_eq!(
            to(&out, boss),
            [(t::NOSUCH, "boss removed ban on eve!*: sorry".into())]
        );
        let out = h.send(boss, t::UNBAN, "eve");
        assert_eq!(to(&out, boss), [(t::NOSUCH, "no such ban".into())]);
        let _ = h.login("eve", 1);
        let out = h.send(boss, t::BAN, "bad\"target");
        assert_eq!(
            to(&out, boss),
            [(t::NOSUCH, "ban failed: invalid target".into())]
        );
        let out = h.send(boss, t::BAN, "y \"r\" -5");
        assert_eq!(to(&out, boss), [(t::NOSUCH, "invalid ban timeout".into())]);
    }

    #[test]
    fn an_admin_sets_a_registered_password() {
        let (mut h, boss) = with_boss();
        let a = h.open();
        h.send(a, t::NEW_USER_LOGIN, "alice old 0 \"x\" 7 a@x.org");
        let u = h.login("user", 1);
        let out = h.send(u, t::ALTER_PASSWORD, "alice new");
        assert_eq!(to(&out, u), [(t::NOSUCH, "permission denied".into())]);
        let out = h.send(boss, t::ALTER_PASSWORD, "nobody new");
        assert_eq!(
            to(&out, boss),
            [(
                t::NOSUCH,
                "alter password failed: nobody is not registered".into()
            )]
        );
        let out = h.send(boss, t::ALTER_PASSWORD, "alice new \"forgot it\"");
        assert!(out.contains(&Action::SaveAccounts), "{out:?}");
        assert_eq!(
            to(&out, boss),
            [(
                t::NOSUCH,
                "boss changed the password of alice: forgot it".into()
            )]
        );
        let mut out = Vec::new();
        h.index.disconnect(a, &mut out);
        let c = h.open();
        let out = h.send(c, t::LOGIN, "alice old 0 \"x\" 7");
        assert_eq!(to(&out, c), [(0, "Invalid Password".into())]);
        let c = h.open();
        let out = h.send(c, t::LOGIN, "alice new 0 \"x\" 7");
        assert_eq!(to(&out, c)[0].0, t::LOGIN_ACK);
    }

    #[test]
    fn leeches_take_no_part_in_sharing() {
        let (mut h, boss) = with_boss();
        let a = h.login("alice", 1);
        let l = h.login("lee", 1);
        h.send(a, t::SHARE, "\"a\\song.mp3\" abc 5000 128 44100 60");
        h.send(boss, t::SET_LEVEL, "lee leech");
        let out = h.send(l, t::SHARE, "\"l\\song.mp3\" abc 5000 128 44100 60");
        assert!(out.is_empty());
        assert_eq!(h.index.files_indexed(), 1);
        let out = h.send(l, t::SEARCH, "FILENAME CONTAINS \"song\"");
        assert_eq!(to(&out, l), [(t::SEARCH_END, String::new())]);
        let out = h.send(l, t::DOWNLOAD, "alice \"a\\song.mp3\"");
        assert_eq!(
            to(&out, l),
            [(t::NOSUCH, "permission denied: you are a leech".into())]
        );
        let out = h.send(l, t::BROWSE, "alice");
        assert_eq!(to(&out, l), [(t::BROWSE_END, "alice 0".into())]);
        assert_eq!(level_of(&mut h, a, "lee"), "Leech");
    }

    fn linked_cfg(name: &str) -> IndexConfig {
        IndexConfig {
            server_name: name.into(),
            link_password: Some("pw".into()),
            ..IndexConfig::default()
        }
    }

    /// Two indexes and the link between them, driven by hand.
    struct Pair {
        a: Harness,
        b: Harness,
        /// The link's connection on each side.
        la: ConnId,
        lb: ConnId,
    }

    impl Pair {
        /// Delivers link traffic both ways until none is left; returns what
        /// the two sides sent anybody else (a's, b's).
        fn pump(
            &mut self,
            mut a_out: Vec<Action>,
            mut b_out: Vec<Action>,
        ) -> (Vec<Action>, Vec<Action>) {
            let (mut a_rest, mut b_rest) = (Vec::new(), Vec::new());
            for _ in 0..100 {
                self.a.index.route(&mut a_out);
                self.b.index.route(&mut b_out);
                let mut to_b = Vec::new();
                let mut to_a = Vec::new();
                for x in a_out.drain(..) {
                    match x {
                        Action::Send(c, f) if c == self.la => to_b.push(f),
                        other => a_rest.push(other),
                    }
                }
                for x in b_out.drain(..) {
                    match x {
                        Action::Send(c, f) if c == self.lb => to_a.push(f),
                        other => b_rest.push(other),
                    }
                }
                if to_a.is_empty() && to_b.is_empty() {
                    return (a_rest, b_rest);
                }
                for f in to_b {
                    self.b.index.receive(self.lb, &f, self.b.now, &mut b_out);
                }
                for f in to_a {
                    self.a.index.receive(self.la, &f, self.a.now, &mut a_out);
                }
            }
            panic!("the link never went quiet");
        }

        fn new(pw_b: &str) -> (Pair, Vec<Action>, Vec<Action>) {
            let mut a = Harness::new(linked_cfg("east"));
            let mut cfg = linked_cfg("west");
            cfg.link_password = Some(pw_b.into());
            let mut b = Harness::new(cfg);
            let la = a.open();
            b.next = 100;
            let lb = b.open();
            let mut out = Vec::new();
            b.index.start_link(lb, &mut out);
            let mut p = Pair { a, b, la, lb };
            let (ra, rb) = p.pump(Vec::new(), out);
            (p, ra, rb)
        }
    }

    #[test]
    fn links_need_the_password_and_misbehaving_links_are_dropped() {
        let (p, ra, rb) = Pair::new("wrong");
        assert!(p.a.index.links().is_empty() && p.b.index.links().is_empty());
        assert!(closed(&ra, p.la) || closed(&rb, p.lb), "{ra:?} {rb:?}");
        // Without a password nothing links.
        let mut h = Harness::new(IndexConfig::default());
        let c = h.open();
        let out = h.send(c, t::SERVER_LOGIN, "peer abc 0");
        assert_eq!(
            to(&out, c),
            [(0, "link failed: linking is not enabled".into())]
        );
        // A good link that then sends garbage is dropped once past its budget.
        let (mut p, _, _) = Pair::new("pw");
        assert_eq!(p.a.index.links(), ["west"]);
        let mut dropped = false;
        for _ in 0..100 {
            let mut out = Vec::new();
            p.a.index
                .receive(p.la, &Frame::new(12345, &b"junk"[..]), p.a.now, &mut out);
            if closed(&out, p.la) {
                dropped = true;
                break;
            }
        }
        assert!(dropped);
        assert!(p.a.index.links().is_empty());
        // Remote users are capped; a login that does not parse is an error.
        let (mut p, _, _) = Pair::new("pw");
        p.a.index.cfg.max_remote_users = 1;
        for nick in ["u1", "u2"] {
            let f = Frame::new(
                t::LOGIN,
                format!("{nick} * 1 \"x\" 7 unknown 0 16777343 west 0").into_bytes(),
            );
            let mut out = Vec::new();
            p.a.index.receive(p.la, &f, p.a.now, &mut out);
            assert!(out.is_empty(), "{out:?}");
        }
        assert!(p.a.index.is_online("u1") && !p.a.index.is_online("u2"));
        // What the link says of a user we did not take is no error: many
        // of them cost the link nothing.
        for _ in 0..100 {
            for f in [
                Frame::new(t::DOWNLOAD, &b":u2 u1 \"x\""[..]),
                Frame::new(t::SERVER_USER_SHARING, &b"u2 5 0"[..]),
            ] {
                let mut out = Vec::new();
                p.a.index.receive(p.la, &f, p.a.now, &mut out);
                assert!(out.is_empty(), "{out:?}");
            }
        }
        let mut out = Vec::new();
        p.a.index
            .receive(p.la, &Frame::new(t::QUIT, &b"u2"[..]), p.a.now, &mut out);
        assert!(out.is_empty() && p.a.index.links() == ["west"]);
        let mut out = Vec::new();
        p.a.index
            .receive(p.la, &Frame::new(t::LOGIN, &b"x"[..]), p.a.now, &mut out);
        assert!(out.is_empty());
        // Searches waiting for links are capped: past it, local results only.
        p.a.index.cfg.max_remote_searches = 0;
        let c = p.a.login("carl", 1);
        // opennap-ng relays its users' own messages (`:<sender> <data>`): a
        // private message reaches ours; its server pings, transfer counters
        // and kills are no fault of the link.
        let mut out = Vec::new();
        let pm = Frame::new(t::PRIVATE_MESSAGE, &b":u1 carl hello there"[..]);
        p.a.index.receive(p.la, &pm, p.a.now, &mut out);
        assert_eq!(to(&out, c), [(t::PRIVATE_MESSAGE, "u1 hello there".into())]);
        for _ in 0..100 {
            for f in [
                Frame::new(t::SERVER_PING, &b"west east"[..]),
                Frame::new(219, &b":u1"[..]),
                Frame::new(t::KILL, &b":west u9 bye"[..]),
            ] {
                let mut out = Vec::new();
                p.a.index.receive(p.la, &f, p.a.now, &mut out);
                assert!(!closed(&out, p.la), "{f:?}");
            }
        }
        assert_eq!(p.a.index.links(), ["west"]);
        let out = p.a.send(c, t::SEARCH, "FILENAME CONTAINS \"x\"");
        assert_eq!(to(&out, c), [(t::SEARCH_END, String::new())]);
        // The same name twice is refused.
        let c = p.a.open();
        let out = p.a.send(c, t::SERVER_LOGIN, "west xyz 0");
        assert_eq!(to(&out, c), [(0, "link failed: already linked".into())]);
    }

    #[test]
    fn linked_users_search_fetch_and_talk_across() {
        let (mut p, _, _) = Pair::new("pw");
        assert_eq!(p.b.index.links(), ["east"]);
        // Users on both sides, before and after the link came up.
        let bob = p.b.open();
        let out = p.b.send(bob, t::LOGIN, "bob pw 6699 \"x\" 7");
        p.pump(Vec::new(), out);
        let out =
            p.b.send(bob, t::SHARE, "\"m\\far away.mp3\" abcd 5000 128 44100 60");
        assert!(out.is_empty());
        let alice = p.a.open();
        let login = p.a.send(alice, t::LOGIN, "alice pw 0 \"x\" 7");
        let (_, lb_out) = p.pump(login, Vec::new());
        assert!(lb_out.is_empty());
        assert!(p.a.index.is_online("bob") && p.b.index.is_online("alice"));
        assert_eq!(p.a.index.users_online(), 1);
        // A search: local results, then west's, then one 202.
        let out = p.a.send(alice, t::SEARCH, "FILENAME CONTAINS \"far away\"");
        assert!(to(&out, alice).is_empty(), "the 202 waits: {out:?}");
        let (ra, _) = p.pump(out, Vec::new());
        assert_eq!(
            to(&ra, alice),
            [
                (
                    t::SEARCH_RESULT,
                    "\"m\\far away.mp3\" abcd 5000 128 44100 60 bob 1711276042 7".into()
                ),
                (t::SEARCH_END, String::new())
            ]
        );
        // A 203 goes to west, whose bob is asked; his 608 brings the 204 back.
        let out = p.a.send(alice, t::DOWNLOAD, "bob \"m\\far away.mp3\"");
        let (_, rb) = p.pump(out, Vec::new());
        assert_eq!(
            to(&rb, bob),
            [(t::UPLOAD_REQUEST, "alice \"m\\far away.mp3\" 7".into())]
        );
        let out = p.b.send(bob, t::UPLOAD_ACCEPT, "alice \"m\\far away.mp3\"");
        let (ra, _) = p.pump(Vec::new(), out);
        assert_eq!(
            to(&ra, alice),
            [(
                t::DOWNLOAD_ACK,
                "bob 1711276042 6699 \"m\\far away.mp3\" abcd 7".into()
            )]
        );
        // Private messages both ways; whois answered locally.
        let out = p.a.send(alice, t::PRIVATE_MESSAGE, "bob hi");
        let (_, rb) = p.pump(out, Vec::new());
        assert_eq!(to(&rb, bob), [(t::PRIVATE_MESSAGE, "alice hi".into())]);
        let out = p.b.send(bob, t::PRIVATE_MESSAGE, "alice yo");
        let (ra, _) = p.pump(Vec::new(), out);
        assert_eq!(to(&ra, alice), [(t::PRIVATE_MESSAGE, "bob yo".into())]);
        // A direct browse of a remote user goes to its server, which asks it;
        // its 641 comes back with where to connect.
        let out = p.a.send(alice, t::BROWSE_DIRECT, "bob");
        assert!(to(&out, alice).is_empty(), "{out:?}");
        let (_, rb) = p.pump(out, Vec::new());
        assert_eq!(to(&rb, bob), [(t::BROWSE_DIRECT, "alice".into())]);
        let out = p.b.send(bob, t::BROWSE_DIRECT_OK, "alice");
        let (ra, _) = p.pump(Vec::new(), out);
        let ok = to(&ra, alice);
        assert_eq!(ok.len(), 1, "{ok:?}");
        assert_eq!(ok[0].0, t::BROWSE_DIRECT_OK);
        assert!(ok[0].1.starts_with("bob "), "{ok:?}");
        // File counts travel at the next tick.
        let mut out = Vec::new();
        p.b.index.tick(p.b.now, &mut out);
        p.pump(Vec::new(), out);
        let out = p.a.send(alice, t::WHOIS, "bob");
        assert!(to(&out, alice)[0].1.contains("\"Remote\" 1 "), "{out:?}");
        // Operators act on their own server's users only.
        p.a.index
            .user_mut(p.a.index.slot_by_nick(b"alice").unwrap())
            .level = Level::Elite;
        let out = p.a.send(alice, t::KILL, "bob");
        assert_eq!(
            to(&out, alice),
            [(t::NOSUCH, "kill failed: bob is on another server".into())]
        );
        // bob leaves: east forgets him.
        let mut out = Vec::new();
        p.b.index.disconnect(bob, &mut out);
        p.pump(Vec::new(), out);
        assert!(!p.a.index.is_online("bob"));
        // A search whose link never answers gets its 202 after the timeout.
        let out = p.a.send(alice, t::SEARCH, "FILENAME CONTAINS \"x\"");
        assert!(to(&out, alice).is_empty());
        p.a.now.mono += Duration::from_secs(11);
        let mut out = Vec::new();
        p.a.index.tick(p.a.now, &mut out);
        assert_eq!(to(&out, alice), [(t::SEARCH_END, String::new())]);
        // The link goes: alice is gone from west.
        let mut out = Vec::new();
        p.b.index.disconnect(p.lb, &mut out);
        assert!(!p.b.index.is_online("alice"));
        assert!(p.b.index.links().is_empty());
    }
}
