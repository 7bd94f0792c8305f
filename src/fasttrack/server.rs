//! The async shell of the FastTrack supernode: one task per user session that
//! runs the sans-I/O [`ServerSession`] over its socket and feeds the typed
//! messages to the [`Supernode`] core; a ticker; and the bridge that runs a
//! user's search on the Gnutella network.
//!
//! Sessions arrive through the node's listeners (the node's own port, and the
//! `--fasttrack-listen` one): the node's dispatcher recognises a FastTrack hello
//! by its first bytes ([`looks_like_hello`]) and hands the socket over with
//! what it has read ([`FastTrack::serve`]).
//!
//! Bounds: sessions at once ([`ServerConfig::max_sessions`], more are closed at
//! once and counted), the session's receive buffer and message size (the
//! session's [`Limits`]), the handshake time, a write stall, and the queue of
//! replies waiting for one session (a user that does not read is closed).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::FtError;
use super::cipher::{DEFAULT_ENC_TYPE, KNOWN_SEEDS};
use super::session::{Limits, Packet, ServerSession};
use super::supernode::{
    self as core, Action, Config, Fth, Hit, Reply, Request, SessionId, Share, Supernode,
};
use super::wire::{self, Message};

/// Gnutella file indexes from here up name users' files (the slot below it).
pub const GNUTELLA_INDEX_BASE: u32 = 0x8000_0000;

/// Pushes waited for at once.
const MAX_GIVES: usize = 256;

/// How the shell runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub core: Config,
    /// Sessions at once; more are closed as they come.
    pub max_sessions: usize,
    /// Time for the handshake (hello and network name).
    pub handshake_timeout: Duration,
    /// A write that makes no progress for this long closes the session.
    pub write_timeout: Duration,
    /// Replies waiting for one session; a user that lets more pile up is closed.
    pub max_queued: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            core: Config {
                // Gnutella hits take a few seconds to come back.
                bridge_wait: Duration::from_secs(4),
                ..Config::default()
            },
            max_sessions: 2000,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_queued: 512,
        }
    }
}

/// Counters of the shell (the core keeps its own, [`core::Stats`]).
#[derive(Debug, Default)]
pub struct ShellCounters {
    pub sessions_refused_full: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub handshakes_timed_out: AtomicU64,
    /// Sessions closed for a framing error (strange packet, message too long,
    /// buffer full).
    pub closed_framing: AtomicU64,
    /// Messages that did not parse (dropped, the session goes on).
    pub bad_messages: AtomicU64,
    pub closed_slow_reader: AtomicU64,
    /// Gnutella hits for a bridged search without a FastTrack hash (giFT could
    /// not verify them): not forwarded.
    pub bridge_hits_without_fth: AtomicU64,
    /// Gnutella hits from firewalled hosts (a FastTrack user cannot reach them).
    pub bridge_hits_firewalled: AtomicU64,
}

/// What the supernode reports (status and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FastTrackStatus {
    pub users: usize,
    pub files: usize,
    /// The node's own files offered to users: none while no user is logged in.
    pub own_files: usize,
    pub counters: Vec<(&'static str, u64)>,
}

/// Runs a search on the Gnutella network for a user; the hits with an FTH go
/// back through [`FastTrack::bridged`]. Implemented by the node.
///
/// `search` is called while the supernode's lock is held: it must return at
/// once and call back into the [`FastTrack`] (`bridged`, `end_search`) only
/// from a task of its own, or the supernode deadlocks.
pub trait Bridge: Send + Sync + 'static {
    fn search(&self, ft: FastTrack, session: SessionId, id: u16, text: String, hash: Option<Fth>);
}

struct State {
    core: Supernode,
    sessions: HashMap<SessionId, SessionHandle>,
}

struct SessionHandle {
    tx: mpsc::Sender<Reply>,
    /// Our end of the session: where the user reaches us (for a GIVE).
    local: SocketAddrV4,
    /// Closing the session (the core forgot it, or the shell gave up on it).
    close: CancellationToken,
}

struct Inner {
    cfg: ServerConfig,
    state: Mutex<State>,
    next: AtomicU64,
    counters: ShellCounters,
    bridge: Mutex<Option<Arc<dyn Bridge>>>,
    /// Connections waited for: a `GIVE <push id>` from a user we pushed.
    gives: Mutex<HashMap<u32, oneshot::Sender<TcpStream>>>,
    next_push: std::sync::atomic::AtomicU32,
    /// Sessions being served, handshakes included.
    live: std::sync::atomic::AtomicUsize,
    /// Woken when a user logs in to a supernode that had none.
    first_user: tokio::sync::Notify,
    cancel: CancellationToken,
}

/// The supernode, shared by the node's listeners.
#[derive(Clone)]
pub struct FastTrack {
    inner: Arc<Inner>,
}

/// Whether 12 bytes that start none of the text protocols look like a
/// FastTrack hello: binary, not a line of text. giFT always opens with
/// `FA 00 B6 2B`; other clients' first word is random, so the rule is "some
/// byte in the first twelve is not printable text".
pub fn looks_like_hello(first: &[u8]) -> bool {
    first.len() >= 12
        && first[..12]
            .iter()
            .any(|&b| !(b.is_ascii_graphic() || b == b' ' || b == b'\r' || b == b'\n'))
}

impl crate::core::library::ExtraFiles for FastTrack {
    fn search(&self, text: &str, max: usize) -> Vec<crate::wire::HitResult> {
        self.gnutella_results(text, max)
    }
}

impl FastTrack {
    /// A supernode with no sessions; its ticker runs on `tracker` until `cancel`.
    pub fn start(cfg: ServerConfig, tracker: TaskTracker, cancel: CancellationToken) -> FastTrack {
        let ft = FastTrack {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    core: Supernode::new(cfg.core.clone()),
                    sessions: HashMap::new(),
                }),
                cfg,
                next: AtomicU64::new(1),
                counters: ShellCounters::default(),
                bridge: Mutex::new(None),
                gives: Mutex::new(HashMap::new()),
                next_push: std::sync::atomic::AtomicU32::new(1),
                live: std::sync::atomic::AtomicUsize::new(0),
                first_user: tokio::sync::Notify::new(),
                cancel: cancel.clone(),
            }),
        };
        let t = ft.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = cancel.cancelled() => break,
                }
                let mut out = Vec::new();
                let mut st = t.lock();
                st.core.tick(Instant::now(), &mut out);
                t.apply(&mut st, out);
            }
        });
        ft
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gnutella searches for users go through `bridge` from now on.
    pub fn set_bridge(&self, bridge: Arc<dyn Bridge>) {
        *self.inner.bridge.lock().unwrap_or_else(|e| e.into_inner()) = Some(bridge);
    }

    /// Drops the node's own files from the users' index; those offered next
    /// are served at `addr` (an unspecified IP: the address each user
    /// reached us at).
    pub fn clear_own_files(&self, addr: SocketAddrV4) {
        self.lock().core.clear_own_files(addr, b"servent");
    }

    /// The node's own files changed: those with the library indexes `gone`
    /// left, `new` came (see [`Supernode::change_own_files`]).
    pub fn change_own_files(&self, gone: &[u32], new: Vec<(u32, Share)>) {
        self.lock().core.change_own_files(gone, new);
    }

    /// Whether any user is logged in.
    pub fn has_users(&self) -> bool {
        !self.lock().sessions.is_empty()
    }

    /// Returns once a user has logged in to a supernode that had none (at
    /// once if one did since the last call).
    pub async fn first_user(&self) {
        self.inner.first_user.notified().await;
    }

    /// Other supernodes, for the 0x00 sent at login.
    pub fn set_nodes(&self, nodes: Vec<core::NodeEntry>) {
        self.lock().core.set_nodes(nodes);
    }

    /// Counters and sizes, for status and metrics.
    pub fn status(&self) -> FastTrackStatus {
        let st = self.lock();
        let s = st.core.stats().clone();
        let c = &self.inner.counters;
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FastTrackStatus {
            users: st.core.users_online(),
            files: st.core.files_indexed(),
            own_files: st.core.own_files(),
            counters: vec![
                ("sessions", s.sessions),
                ("logins", s.logins),
                ("shares", s.shares),
                ("unshares", s.unshares),
                ("shares_over_user_cap", s.shares_over_user_cap),
                ("shares_over_total_cap", s.shares_over_total_cap),
                ("shares_refused", s.shares_refused),
                ("shares_over_rate", s.shares_over_rate),
                ("unshares_unknown", s.unshares_unknown),
                ("searches", s.searches),
                ("searches_over_rate", s.searches_over_rate),
                ("searches_over_open", s.searches_over_open),
                ("searches_refused", s.searches_refused),
                ("searches_repeated", s.searches_repeated),
                ("results", s.results),
                ("bridged_results", s.bridged_results),
                ("bridged_late", s.bridged_late),
                ("pushes", s.pushes),
                ("pushes_unknown", s.pushes_unknown),
                ("pushes_over_rate", s.pushes_over_rate),
                ("pings_sent", s.pings_sent),
                ("closed_dead", s.closed_dead),
                ("closed_flood", s.closed_flood),
                ("closed_no_login", s.closed_no_login),
                ("unknown_messages", s.unknown_messages),
                ("sessions_refused_full", r(&c.sessions_refused_full)),
                ("handshakes_failed", r(&c.handshakes_failed)),
                ("handshakes_timed_out", r(&c.handshakes_timed_out)),
                ("closed_framing", r(&c.closed_framing)),
                ("bad_messages", r(&c.bad_messages)),
                ("closed_slow_reader", r(&c.closed_slow_reader)),
                ("bridge_hits_without_fth", r(&c.bridge_hits_without_fth)),
                ("bridge_hits_firewalled", r(&c.bridge_hits_firewalled)),
            ],
        }
    }

    /// Asks the user named `user` (the first of that name) to connect back to
    /// the address its session reached us at and say `GIVE <id>`; the
    /// connection is handed over after that line. None when no such user is
    /// logged in, or too many pushes are waited for.
    pub fn push_for(&self, user: &[u8]) -> Option<oneshot::Receiver<TcpStream>> {
        let push_id = self.inner.next_push.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut g = self.inner.gives.lock().unwrap_or_else(|e| e.into_inner());
            g.retain(|_, t| !t.is_closed());
            if g.len() >= MAX_GIVES {
                return None;
            }
            g.insert(push_id, tx);
        }
        let mut out = Vec::new();
        let mut st = self.lock();
        let target = st.core.session_named(user)?;
        let to = st.sessions.get(&target)?.local;
        out.push(Action::Send(
            target,
            Reply::Push {
                push_id,
                requester: to,
            },
        ));
        self.apply(&mut st, out);
        Some(rx)
    }

    /// A user connected and said `GIVE <push_id>`: hands the connection to
    /// whoever waits for it (false: nobody does).
    pub fn deliver_give(&self, push_id: u32, stream: TcpStream) -> bool {
        let tx = self
            .inner
            .gives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&push_id);
        tx.is_some_and(|tx| tx.send(stream).is_ok())
    }

    /// Users' files matching Gnutella query words, as Gnutella results that
    /// name the file by an index of ours ([`GNUTELLA_INDEX_BASE`] + slot) and
    /// carry the FTH; the node serves them by proxy.
    pub fn gnutella_results(&self, text: &str, max: usize) -> Vec<crate::wire::HitResult> {
        let state = self.lock();
        // Every Gnutella query passes here: with no user sharing, nothing is
        // built or cut into words.
        if !state.core.has_user_files() {
            return Vec::new();
        }
        let q = core::Query {
            id: 0,
            max_results: u16::try_from(max).unwrap_or(u16::MAX),
            realm: 0xBF,
            terms: vec![core::Term {
                cmp: 0x05,
                tag: 0,
                value: Bytes::copy_from_slice(text.as_bytes()),
            }],
        };
        let found = state.core.matches_for_gnutella(&q, max);
        drop(state);
        found
            .into_iter()
            .filter(|(slot, _)| *slot < GNUTELLA_INDEX_BASE)
            .filter_map(|(slot, h)| {
                let name = h.tags.iter().find(|t| t.id == core::TAG_FILENAME)?;
                let name = std::str::from_utf8(&name.value).ok()?;
                Some(
                    crate::wire::HitResult::new(GNUTELLA_INDEX_BASE | slot, h.size, name, None)
                        .with_fth(Some(super::hash::Fth(h.hash))),
                )
            })
            .collect()
    }

    /// The user's file behind a Gnutella index of ours, if its name matches.
    pub fn source_by_index(&self, index: u32, name: &str) -> Option<Hit> {
        let slot = index.checked_sub(GNUTELLA_INDEX_BASE)?;
        self.lock().core.file_at(slot, name.as_bytes())
    }

    /// A user's file by its FTH.
    pub fn source_by_hash(&self, hash: &Fth) -> Option<Hit> {
        self.lock().core.file_by_hash(hash)
    }

    /// Counts a Gnutella hit for a bridged search that a FastTrack user could
    /// not use: `"no FTH"` (giFT could not verify it) or `"firewalled"`.
    pub fn count_unbridged(&self, why: &str) {
        let c = match why {
            "firewalled" => &self.inner.counters.bridge_hits_firewalled,
            _ => &self.inner.counters.bridge_hits_without_fth,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A bridged search has nothing more to wait for: the user gets its 0x08.
    pub fn end_search(&self, session: SessionId, id: u16) {
        let mut out = Vec::new();
        let mut st = self.lock();
        st.core.finish(session, id, Instant::now(), &mut out);
        self.apply(&mut st, out);
    }

    /// Hits from the Gnutella network for a user's open search.
    pub fn bridged(&self, session: SessionId, id: u16, hits: Vec<Hit>) {
        let mut out = Vec::new();
        let mut st = self.lock();
        st.core.bridged(session, id, hits, &mut out);
        self.apply(&mut st, out);
    }

    /// Carries out what the core decided. Sends never wait: a full queue closes
    /// the session.
    fn apply(&self, st: &mut State, out: Vec<Action>) {
        let mut slow = Vec::new();
        for a in out {
            match a {
                Action::Send(s, reply) => {
                    if let Some(h) = st.sessions.get(&s) {
                        if h.tx.try_send(reply).is_err() && !h.close.is_cancelled() {
                            slow.push(s);
                        }
                    }
                }
                Action::Close(s, why) => {
                    tracing::debug!(session = s, why = why.name(), "FastTrack user closed");
                    if let Some(h) = st.sessions.remove(&s) {
                        h.close.cancel();
                    }
                }
                Action::Bridge {
                    session,
                    id,
                    text,
                    hash,
                } => {
                    let bridge = self
                        .inner
                        .bridge
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    if let Some(b) = bridge {
                        b.search(self.clone(), session, id, text, hash);
                    }
                }
            }
        }
        for s in slow {
            self.inner
                .counters
                .closed_slow_reader
                .fetch_add(1, Ordering::Relaxed);
            st.core.disconnect(s);
            if let Some(h) = st.sessions.remove(&s) {
                h.close.cancel();
            }
        }
    }

    /// Serves a FastTrack session on `stream`, whose first bytes (`first`) have
    /// been read already. Returns when the session ends.
    pub async fn serve(&self, mut stream: TcpStream, first: Bytes, peer: SocketAddr) {
        let cfg = &self.inner.cfg;
        // Sessions still in their handshake count too.
        let live = self.inner.live.fetch_add(1, Ordering::Relaxed);
        let _live = Live(&self.inner.live);
        if live >= cfg.max_sessions {
            self.inner
                .counters
                .sessions_refused_full
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (Ok(local), SocketAddr::V4(peer4)) = (stream.local_addr(), peer) else {
            return;
        };
        let local_ip = match local {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let local4 = SocketAddrV4::new(local_ip, local.port());
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        // Each session answers with one of the seeds whose masks we know.
        let seed = KNOWN_SEEDS[(id as usize) % KNOWN_SEEDS.len()].0;
        let mut session = match ServerSession::with_options(
            seed,
            DEFAULT_ENC_TYPE,
            wire::DEFAULT_NETWORK_NAME,
            Limits::SERVER,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "FastTrack session cannot start");
                return;
            }
        };
        let mut early = Vec::new();
        let hs = tokio::time::timeout(
            cfg.handshake_timeout,
            handshake(&mut stream, &mut session, first, &mut early),
        )
        .await;
        match hs {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "FastTrack handshake failed");
                self.inner
                    .counters
                    .handshakes_failed
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => {
                self.inner
                    .counters
                    .handshakes_timed_out
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let (tx, mut rx) = mpsc::channel(cfg.max_queued);
        let close = self.inner.cancel.child_token();
        {
            let mut out = Vec::new();
            let mut st = self.lock();
            if st.sessions.is_empty() {
                // Kept until the one waiting takes it (`notify_one`).
                self.inner.first_user.notify_one();
            }
            st.sessions.insert(
                id,
                SessionHandle {
                    tx,
                    local: local4,
                    close: close.clone(),
                },
            );
            st.core.connect(id, peer4, Instant::now(), &mut out);
            self.apply(&mut st, out);
        }
        // Units that arrived with the handshake, then the rest.
        let mut result = self.feed(
            id,
            early
                .into_iter()
                .map(Ok)
                .chain(std::iter::from_fn(|| session.poll_packet().transpose())),
        );
        let mut buf = vec![0u8; 4096];
        while result.is_ok() {
            let out = session.take_output();
            if !out.is_empty() {
                match tokio::time::timeout(cfg.write_timeout, stream.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
            // Never more than the session takes: a user that keeps sending
            // without a whole unit ends on the session's limit, not ours.
            let room = session.room().clamp(1, buf.len());
            tokio::select! {
                r = stream.read(&mut buf[..room]) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        result = session.receive(&buf[..n]).and_then(|()| {
                            self.feed(id, std::iter::from_fn(|| session.poll_packet().transpose()))
                        });
                    }
                },
                reply = rx.recv() => match reply {
                    Some(reply) => {
                        encode(&mut session, reply, local4);
                        // Everything already queued goes out in one write.
                        while let Ok(reply) = rx.try_recv() {
                            encode(&mut session, reply, local4);
                        }
                    }
                    None => break,
                },
                _ = close.cancelled() => {
                    // Closed by the core: what it queued before still goes out.
                    while let Ok(reply) = rx.try_recv() {
                        encode(&mut session, reply, local4);
                    }
                    let out = session.take_output();
                    let _ = tokio::time::timeout(cfg.write_timeout, stream.write_all(&out)).await;
                    break;
                }
            }
        }
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "FastTrack session closed");
            self.inner
                .counters
                .closed_framing
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(%peer, session = id, "FastTrack session ended");
        let mut st = self.lock();
        st.sessions.remove(&id);
        st.core.disconnect(id);
    }

    /// Hands units to the core, until one is an error.
    fn feed(
        &self,
        id: SessionId,
        packets: impl Iterator<Item = Result<Packet, FtError>>,
    ) -> Result<(), FtError> {
        let mut out = Vec::new();
        let now = Instant::now();
        let mut st = self.lock();
        let mut result = Ok(());
        for p in packets {
            let p = match p {
                Ok(p) => p,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let req = match &p {
                Packet::Ping => Request::Ping,
                Packet::Pong => Request::Pong,
                Packet::Message { kind, .. } => match p.parse() {
                    Some(Ok(m)) => request(m),
                    Some(Err(e)) => {
                        tracing::debug!(kind, error = %e, "bad FastTrack message dropped");
                        self.inner
                            .counters
                            .bad_messages
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => continue,
                },
            };
            st.core.receive(id, req, now, &mut out);
        }
        self.apply(&mut st, out);
        result
    }
}

/// Counts a session as served while it lives.
struct Live<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads until the user's hello and network name are in, writing what the
/// session has to say; units that came with the name go to `early` (bounded by
/// the session's buffer limit).
async fn handshake(
    stream: &mut TcpStream,
    session: &mut ServerSession,
    first: Bytes,
    early: &mut Vec<Packet>,
) -> Result<(), FtError> {
    session.receive(&first)?;
    let mut buf = BytesMut::with_capacity(256);
    loop {
        while let Some(p) = session.poll_packet()? {
            early.push(p);
        }
        let out = session.take_output();
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return Err(FtError::Truncated { what: "handshake" });
        }
        if session.is_established() {
            return Ok(());
        }
        buf.clear();
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return Err(FtError::Truncated { what: "handshake" }),
            Ok(_) => session.receive(&buf)?,
        }
    }
}

/// A message from a user, as the core takes it.
fn request(m: Message) -> Request {
    match m {
        Message::NodeInfo(i) => Request::NodeInfo(core::NodeInfo {
            ip: i.ip,
            port: i.port,
            bandwidth: i.bandwidth,
            name: i.user,
        }),
        Message::ShareFile { media, file } => Request::Share(Share {
            media,
            hash: file.fth,
            file_id: file.file_id,
            size: u64::from(file.size),
            tags: file
                .tags
                .into_iter()
                .map(|t| core::Tag {
                    id: t.id,
                    value: t.value,
                })
                .collect(),
        }),
        Message::UnshareFile(file) => Request::Unshare(file.fth),
        Message::Query(q) => Request::Query(core::Query {
            id: q.id,
            max_results: q.max_results,
            realm: q.realm,
            terms: q
                .terms
                .into_iter()
                .map(|t| core::Term {
                    cmp: t.cmp,
                    tag: u32::from(t.tag),
                    value: t.value,
                })
                .collect(),
        }),
        Message::PushRequest(p) => Request::Push(core::PushRequest {
            push_id: p.push_id,
            requester: SocketAddrV4::new(p.requester_ip, p.requester_port),
            target: SocketAddrV4::new(p.target_ip, p.target_port),
            target_supernode: SocketAddrV4::new(p.supernode_ip, p.supernode_port),
            target_user: p.target_user,
        }),
        Message::ProtocolVersion(v) => Request::ProtocolVersion(v),
        Message::NetworkName(n) => Request::NetworkName(n),
        other => Request::Other(u16::from(other.kind())),
    }
}

/// An address with an unspecified IP names us as the user reached us.
fn ours(a: SocketAddrV4, local: SocketAddrV4) -> SocketAddrV4 {
    if a.ip().is_unspecified() {
        SocketAddrV4::new(
            *local.ip(),
            if a.port() == 0 {
                local.port()
            } else {
                a.port()
            },
        )
    } else {
        a
    }
}

/// Size in GB as the mantissa and exponent of a 0x09.
fn gigabytes(gb: u64) -> (u16, u16) {
    let mut m = gb;
    let mut e = 30u16;
    while m > u64::from(u16::MAX) {
        m >>= 1;
        e += 1;
    }
    (m as u16, e)
}

/// Queues a reply on the session.
fn encode(session: &mut ServerSession, reply: Reply, local: SocketAddrV4) {
    let msg = match reply {
        Reply::Ping => return session.send_ping(),
        Reply::Pong => return session.send_pong(),
        Reply::NodeList(v) => Message::NodeList(
            v.into_iter()
                .map(|n| wire::NodeEntry {
                    ip: *n.addr.ip(),
                    port: n.addr.port(),
                    last_seen: n.last_seen,
                    load: n.load,
                })
                .collect(),
        ),
        Reply::ExternalIp(ip) => Message::ExternalIp(ip),
        Reply::Stats {
            users,
            files,
            gigabytes: gb,
        } => {
            let (size_mantissa, size_exponent) = gigabytes(gb);
            Message::NetworkStats(wire::NetworkStats {
                users,
                files,
                size_mantissa,
                size_exponent,
                extra: Bytes::new(),
            })
        }
        Reply::Results {
            supernode,
            id,
            hits,
        } => {
            let sn = ours(supernode, local);
            Message::QueryReply(wire::QueryReply {
                supernode_ip: *sn.ip(),
                supernode_port: sn.port(),
                id,
                results: hits
                    .into_iter()
                    .map(|h| {
                        let a = if h.addr.ip().is_unspecified() {
                            SocketAddrV4::new(*local.ip(), h.addr.port())
                        } else {
                            h.addr
                        };
                        wire::QueryResult {
                            ip: *a.ip(),
                            port: a.port(),
                            bandwidth: h.bandwidth,
                            user: h.user,
                            network: Bytes::from_static(core::NETWORK_NAME),
                            fth: h.hash,
                            file_id: h.file_id,
                            size: u32::try_from(h.size).unwrap_or(u32::MAX),
                            tags: h
                                .tags
                                .into_iter()
                                .map(|t| wire::Tag::text(t.id, t.value))
                                .collect(),
                        }
                    })
                    .collect(),
            })
        }
        Reply::End(id) => Message::QueryEnd { id },
        Reply::Push { push_id, requester } => Message::PushForward(wire::PushForward {
            push_id,
            requester_ip: *requester.ip(),
            requester_port: requester.port(),
        }),
        Reply::ProtocolVersion(v) => Message::ProtocolVersion(v),
        Reply::NetworkName(n) => Message::NetworkName(n),
    };
    if let Err(e) = session.send_message(&msg) {
        // Only a message over 64 KiB fails, and the core keeps results under it.
        tracing::warn!(error = %e, "FastTrack message not sent");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_is_binary_and_text_protocols_are_not() {
        assert!(looks_like_hello(&[
            0xFA, 0x00, 0xB6, 0x2B, 0xFA, 0xCB, 0x12, 0x38, 0x32, 0x09, 0xD2, 0x32
        ]));
        assert!(!looks_like_hello(b"GNUTELLA CONNECT/0.6\r\n"));
        assert!(!looks_like_hello(b"GIVE 1\r\n\r\nxxxx"));
        assert!(!looks_like_hello(b"short\x00"));
    }

    #[test]
    fn sizes_in_gb_keep_sixteen_bits_of_mantissa() {
        assert_eq!(gigabytes(0), (0, 30));
        assert_eq!(gigabytes(1000), (1000, 30));
        let (m, e) = gigabytes(1 << 20);
        assert_eq!(u64::from(m) << (e - 30), 1 << 20);
    }
}
