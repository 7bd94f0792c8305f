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

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hashbrown::HashTable;
use sha1::{Digest, Sha1};

use super::accounts::{Account, Accounts};
use super::wire::{
    Fields, Frame, Kind, KindFilter, Line, SearchError, SearchRequest, ip_to_decimal,
    nick_and_file, number, types as t,
};

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
    /// Connections that have not logged in yet, at once.
    pub max_unauthenticated: usize,
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
}

impl Default for IndexConfig {
    fn default() -> IndexConfig {
        IndexConfig {
            server_name: "servent".into(),
            motd: Vec::new(),
            max_users: 10_000,
            max_unauthenticated: 256,
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
}

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
    salts: u64,
    conns: HashMap<ConnId, Conn>,
    users: Vec<Option<User>>,
    free_users: Vec<u32>,
    nicks: HashMap<String, u32>,
    online: usize,
    unauthenticated: usize,
    files: Vec<File>,
    /// Slots free for reuse (purged from every posting list).
    free_files: Vec<u32>,
    /// Slots emptied since the last purge; not reusable yet.
    dead_files: Vec<u32>,
    live_files: usize,
    total_bytes: u64,
    words: HashMap<Box<[u8]>, Vec<u32>>,
    name_hasher: RandomState,
    stats: Stats,
    // Scratch buffers, kept to avoid allocating per message.
    buf: Vec<u8>,
    spans: Vec<(u32, u32)>,
    buf2: Vec<u8>,
    spans2: Vec<(u32, u32)>,
}

impl Index {
    pub fn new(cfg: IndexConfig, accounts: Accounts) -> Index {
        Index {
            cfg,
            accounts,
            salts: 0,
            conns: HashMap::new(),
            users: Vec::new(),
            free_users: Vec::new(),
            nicks: HashMap::new(),
            online: 0,
            unauthenticated: 0,
            files: Vec::new(),
            free_files: Vec::new(),
            dead_files: Vec::new(),
            live_files: 0,
            total_bytes: 0,
            words: HashMap::new(),
            name_hasher: RandomState::new(),
            stats: Stats::default(),
            buf: Vec::new(),
            spans: Vec::new(),
            buf2: Vec::new(),
            spans2: Vec::new(),
        }
    }

    pub fn config(&self) -> &IndexConfig {
        &self.cfg
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
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

    /// A connection opened from `ip`.
    pub fn connect(&mut self, conn: ConnId, ip: Ipv4Addr, now: Now, out: &mut Vec<Action>) {
        if self.unauthenticated >= self.cfg.max_unauthenticated {
            out.push(Action::Send(
                conn,
                err_frame(t::ERROR, "too many connections, try again later"),
            ));
            out.push(Action::Close(conn));
            self.stats.dropped += 1;
            return;
        }
        self.unauthenticated += 1;
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
            },
        );
    }

    /// A connection closed (or the shell gave up on it).
    pub fn disconnect(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        match c.user {
            None => self.unauthenticated -= 1,
            Some(slot) => self.remove_user(slot, out),
        }
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
        if !c.errors.take(burst, rate, now.mono) {
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
        match frame.ty {
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
            t::LINK_SPEED => match self.user_by_nick(data) {
                Some(u) => {
                    let line = Line::new().word(&*u.nick).num(u.link);
                    out.push(Action::Send(conn, line.frame(t::LINK_SPEED_REPLY)));
                }
                None => self.not_online(conn, data, now, out),
            },
            t::PING => match self.user_by_nick(data) {
                Some(u) => {
                    let to = u.conn;
                    let me = self.user(slot).nick.clone();
                    out.push(Action::Send(to, Line::new().word(&*me).frame(t::PING)));
                }
                None => self.not_online(conn, data, now, out),
            },
            t::PONG => {
                // `752 <nick>` answers a ping that <nick> sent us: pass it on.
                if let Some(u) = self.user_by_nick(data) {
                    let to = u.conn;
                    let me = self.user(slot).nick.clone();
                    out.push(Action::Send(to, Line::new().word(&*me).frame(t::PONG)));
                }
            }
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
        let version = format!("VERSION servent {}", env!("CARGO_PKG_VERSION"));
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
        match frame.ty {
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
        if self.online >= self.cfg.max_users {
            let why = format!("This server is full ({} connections)", self.cfg.max_users);
            return refuse(self, out, why);
        }
        let email = match (self.accounts.get(&nick), new_user) {
            (Some(_), true) => {
                return refuse(self, out, "account registered to another user".into());
            }
            (Some(account), false) => {
                if !account.check(password) {
                    return refuse(self, out, "Invalid Password".into());
                }
                account.email.clone()
            }
            (None, false) => format!("anon@{}", self.cfg.server_name),
            (None, true) => {
                let email = email.unwrap_or_default();
                let email = String::from_utf8_lossy(email).into_owned();
                if email.is_empty() || email.contains(' ') {
                    return refuse(self, out, "invalid email address".into());
                }
                email
            }
        };
        if self.is_online(&nick) {
            return refuse(self, out, format!("{nick} is already active"));
        }
        if new_user {
            if self.accounts.len() >= self.cfg.max_accounts {
                return refuse(self, out, "registration is closed".into());
            }
            let salt = self.next_salt();
            let account = Account::new(&nick, password, &email, salt, now.unix);
            self.accounts.insert(account);
            out.push(Action::SaveAccounts);
        }
        // Logged in.
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ip = c.ip;
        let user = User {
            conn,
            nick: nick.clone().into_boxed_str(),
            ip,
            port,
            link,
            client: client.into(),
            since: now.mono,
            files: HashTable::new(),
            arena: Vec::new(),
            dead: 0,
            bytes: 0,
            downloads: 0,
            uploads: 0,
            total_downloads: 0,
            total_uploads: 0,
            pending: Vec::new(),
        };
        let slot = match self.free_users.pop() {
            Some(s) => {
                self.users[s as usize] = Some(user);
                s
            }
            None => {
                self.users.push(Some(user));
                (self.users.len() - 1) as u32
            }
        };
        c.user = Some(slot);
        self.unauthenticated -= 1;
        self.online += 1;
        self.nicks.insert(nick.to_ascii_lowercase(), slot);
        self.stats.logins += 1;
        out.push(Action::Send(conn, err_frame(t::LOGIN_ACK, email)));
        self.send_motd(conn, out);
        out.push(Action::Send(conn, self.stats_frame()));
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
        self.online -= 1;
        self.nicks.remove(&user.nick.to_ascii_lowercase());
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
        let id = match self.free_files.pop() {
            Some(id) => {
                self.files[id as usize] = file;
                id
            }
            None => {
                reserve_slim(&mut self.files, 1);
                self.files.push(file);
                (self.files.len() - 1) as u32
            }
        };
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
            self.dead_files.push(id);
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
    /// the slots (and at least a few thousand), then makes them reusable.
    fn maybe_compact(&mut self) {
        let threshold = (self.live_files / 4).max(4096);
        if self.dead_files.len() < threshold {
            return;
        }
        self.compact();
    }

    /// Purges emptied slots from every posting list now.
    pub fn compact(&mut self) {
        let files = &self.files;
        self.words.retain(|_, list| {
            list.retain(|&id| files[id as usize].is_live());
            if list.capacity() > list.len() + list.len() / 8 + 4 {
                list.shrink_to_fit();
            }
            !list.is_empty()
        });
        self.free_files.append(&mut self.dead_files);
        self.stats.compactions += 1;
    }

    // ---- search ----

    fn search(&mut self, conn: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        self.stats.searches += 1;
        match SearchRequest::parse(data) {
            Ok(req) => self.run_search(conn, &req, out),
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

    /// Runs a search and queues its 201s (not the 202).
    fn run_search(&mut self, conn: ConnId, req: &SearchRequest, out: &mut Vec<Action>) {
        let limit = req
            .max_results
            .unwrap_or(self.cfg.max_results)
            .min(self.cfg.max_results) as usize;
        // The query's keywords, folded like the names.
        let mut qbuf = Vec::new();
        let mut qspans = Vec::new();
        let mut query: Vec<Vec<u8>> = Vec::new();
        for clause in &req.contains {
            keywords(clause, &mut qbuf, &mut qspans);
            for &(a, b) in &qspans {
                let w = &qbuf[a as usize..b as usize];
                if !query.iter().any(|q| q == w) {
                    query.push(w.to_vec());
                }
            }
        }
        if query.is_empty() || limit == 0 {
            return;
        }
        // The rarest keyword's list drives the search.
        let mut rarest: Option<(&Vec<u32>, usize)> = None;
        for (i, w) in query.iter().enumerate() {
            let Some(list) = self.words.get(&w[..]) else {
                return;
            };
            if rarest.is_none_or(|(l, _)| list.len() < l.len()) {
                rarest = Some((list, i));
            }
        }
        let Some((list, driver)) = rarest else {
            return;
        };
        let others: Vec<&[u8]> = query
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != driver)
            .map(|(_, w)| &w[..])
            .collect();
        let mut found = 0;
        let mut examined = 0u64;
        for &id in list.iter() {
            if found >= limit || examined as usize >= self.cfg.max_scan {
                break;
            }
            examined += 1;
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
            {
                continue;
            }
            let Some(owner) = self.users[file.owner as usize].as_ref() else {
                continue;
            };
            if !req.linespeed.contains(owner.link as u32) {
                continue;
            }
            let name = file.name(&owner.arena);
            if !others.is_empty() {
                keywords(name, &mut self.buf2, &mut self.spans2);
                let has = |w: &[u8]| {
                    self.spans2
                        .iter()
                        .any(|&(a, b)| &self.buf2[a as usize..b as usize] == w)
                };
                if !others.iter().all(|w| has(w)) {
                    continue;
                }
            }
            found += 1;
            let mut line = BytesMut::with_capacity(file.stored_len() + 96);
            line.put_u8(b'"');
            line.put_slice(name);
            line.put_slice(b"\" ");
            file.write_md5(&owner.arena, &mut line);
            let tail = format!(
                " {} {} {} {} {} {} {}",
                file.size(),
                file.bitrate,
                file.freq,
                file.seconds,
                owner.nick,
                ip_to_decimal(owner.ip),
                owner.link
            );
            line.put_slice(tail.as_bytes());
            out.push(Action::Send(
                conn,
                Frame::new(t::SEARCH_RESULT, line.freeze()),
            ));
        }
        self.stats.candidates += examined;
        self.stats.results += found as u64;
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

    fn whois(&mut self, conn: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let nick = unquote(data);
        let Some(u) = self.user_by_nick(nick) else {
            return self.not_online(conn, nick, now, out);
        };
        let line = Line::new()
            .word(&*u.nick)
            .quoted("User")
            .num(now.mono.saturating_duration_since(u.since).as_secs())
            .quoted("")
            .quoted("Active")
            .num(u.files.len())
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
            out
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
        assert!(got[1].1.starts_with("VERSION servent"));
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
        let c = h.open();
        let out = h.send(c, t::LOGIN, "carol wrong 0 \"x\" 2");
        assert_eq!(to(&out, c), [(0, "Invalid Password".to_string())]);
        let c = h.open();
        let out = h.send(c, t::NEW_USER_LOGIN, "carol x 0 \"x\" 2 e@x");
        assert_eq!(
            to(&out, c),
            [(0, "account registered to another user".to_string())]
        );
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
}
