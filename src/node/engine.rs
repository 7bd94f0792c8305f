//! The shell around the deciding core (`core::engine`): the core behind one
//! lock, and [`ShellLinks`], through which its decisions reach the connections'
//! send queues and the node's tasks.
//!
//! The core decides without waiting on anything (sending to a connection only
//! queues), so each task runs its events through it under the lock, on its own
//! thread: a frame goes from the socket that read it to the send queues of its
//! targets with no task switch in between. Nothing in it can block; the time it
//! holds the lock is bounded by its own limits (results per query, table sizes,
//! the reader's batch).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::core::ConnId;
use crate::core::flow::{Offer, Priority};
use crate::core::hosts::HostCache;
use crate::core::tier::{Admit, Link, PeerRole, RoleHeaders};
use crate::wire::Push;
use crate::wire::bye;

pub use crate::core::engine::{
    Budgets, Config, DEFAULT_MAX_TABLE_FILL, EngineStats, Event, Fault, LinkInfo, LinkReport,
    Links, RelayCounts, TableDone, TableJob,
};
use crate::wire::Guid;

use super::conn::ConnTx;

/// Traffic on one link, as the shell sees it (whole frames, header included).
#[derive(Debug, Default)]
pub struct Traffic {
    pub msgs_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub bytes_out: AtomicU64,
}

/// The names of the kinds of message counted by [`TypeCounts`].
pub const MESSAGE_TYPES: [&str; 10] = [
    "ping",
    "pong",
    "bye",
    "route_table",
    "vendor",
    "standard_vendor",
    "push",
    "query",
    "query_hit",
    "unknown",
];

/// Messages received and queued for sending, over every link, per kind (in
/// the order of [`MESSAGE_TYPES`]).
#[derive(Debug, Default)]
pub struct TypeCounts {
    pub received: [AtomicU64; 10],
    pub sent: [AtomicU64; 10],
}

/// The index in [`MESSAGE_TYPES`] of a header's function byte.
fn type_index(code: u8) -> usize {
    match code {
        0x00 => 0,
        0x01 => 1,
        0x02 => 2,
        0x30 => 3,
        0x31 => 4,
        0x32 => 5,
        0x40 => 6,
        0x80 => 7,
        0x81 => 8,
        _ => 9,
    }
}

/// What the shell keeps of a link besides its send queue.
#[derive(Clone, Debug)]
pub struct LinkMeta {
    /// The peer's `User-Agent`, as it said it (unescaped).
    pub user_agent: Option<String>,
    pub opened: Instant,
    pub traffic: Arc<Traffic>,
}

struct LinkEntry {
    tx: ConnTx,
    meta: LinkMeta,
}

/// The core's way out to the shell: each link's send queue, and the tasks
/// that answer Pushes and connect-back requests.
pub struct ShellLinks {
    conns: crate::core::ConnMap<LinkEntry>,
    /// Searches of our own under way: where each one's hits go (bounded; a
    /// hit that finds its channel full is dropped).
    searches: std::collections::HashMap<Guid, mpsc::Sender<Bytes>>,
    types: Arc<TypeCounts>,
    pushes: mpsc::Sender<Push>,
    connect_backs: mpsc::Sender<SocketAddr>,
    slots: Arc<Semaphore>,
    /// Where QRP decoding jobs, run on the blocking pool, report (at most one
    /// job per link is out at a time).
    decoded: mpsc::UnboundedSender<TableDone>,
    /// The UDP port's send queue, once it is bound.
    udp: Option<super::udp::UdpTx>,
    /// Wakes the maintainer when hosts to dial were learned.
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl ShellLinks {
    /// The links, and the receiver of finished table jobs, which the node
    /// feeds back to the core as [`Event::TablesDecoded`].
    pub fn new(
        pushes: mpsc::Sender<Push>,
        connect_backs: mpsc::Sender<SocketAddr>,
        slots: Arc<Semaphore>,
    ) -> (ShellLinks, mpsc::UnboundedReceiver<TableDone>) {
        let (decoded, rx) = mpsc::unbounded_channel();
        let links = ShellLinks {
            conns: Default::default(),
            searches: Default::default(),
            types: Default::default(),
            pushes,
            connect_backs,
            slots,
            decoded,
            udp: None,
            wake: None,
        };
        (links, rx)
    }
}

impl Links for ShellLinks {
    fn send(&mut self, conn: ConnId, priority: Priority, bytes: Bytes) -> Offer {
        match self.conns.get(&conn) {
            Some(e) => {
                let len = bytes.len() as u64;
                let bytes_fn = bytes.get(16).copied();
                let offer = e.tx.send(priority, bytes);
                if matches!(offer, Offer::Queued) {
                    if let Some(code) = bytes_fn {
                        self.types.sent[type_index(code)].fetch_add(1, Ordering::Relaxed);
                    }
                    e.meta.traffic.msgs_out.fetch_add(1, Ordering::Relaxed);
                    e.meta.traffic.bytes_out.fetch_add(len, Ordering::Relaxed);
                }
                offer
            }
            None => Offer::Rejected,
        }
    }

    fn close(&mut self, conn: ConnId, code: u16, reason: &str) {
        if let Some(e) = self.conns.get(&conn) {
            e.tx.close(code, reason);
        }
    }

    fn close_silently(&mut self, conn: ConnId) {
        if let Some(e) = self.conns.get(&conn) {
            e.tx.close_silently();
        }
    }

    fn own_hit(&mut self, guid: Guid, payload: Bytes) {
        if let Some(tx) = self.searches.get(&guid) {
            let _ = tx.try_send(payload);
        }
    }

    fn push(&mut self, push: Push) {
        // Dropped when the queue is full: Pushes are retried by their senders.
        let _ = self.pushes.try_send(push);
    }

    fn connect_back(&mut self, to: SocketAddr) {
        let _ = self.connect_backs.try_send(to);
    }

    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) -> bool {
        self.udp
            .as_ref()
            .is_some_and(|tx| tx.try_send((to, bytes)).is_ok())
    }

    fn hosts_learned(&mut self) {
        if let Some(w) = &self.wake {
            w.notify_one();
        }
    }

    fn uploads_busy(&self) -> bool {
        self.slots.available_permits() == 0
    }

    fn udp_open(&self) -> bool {
        self.udp.is_some()
    }

    fn decode_tables(&mut self, job: TableJob) -> Option<TableDone> {
        // Decoding a table costs up to milliseconds: it runs on the blocking
        // pool, not under the core's lock on a worker thread.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let tx = self.decoded.clone();
                rt.spawn_blocking(move || {
                    let _ = tx.send(job.run());
                });
                None
            }
            Err(_) => Some(job.run()),
        }
    }
}

type Engine = crate::core::engine::Engine<ShellLinks>;

/// The way into the core for every task of the node.
#[derive(Clone)]
pub struct EngineRef {
    inner: Arc<Mutex<Running>>,
    /// Gnutella bytes in and out on links that have closed.
    closed_in: Arc<AtomicU64>,
    closed_out: Arc<AtomicU64>,
    published: Arc<watch::Sender<EngineStats>>,
    /// Connections open (counted from `open_connection` to the reader's end).
    open: Arc<AtomicUsize>,
    /// How long each event held the lock: a count per power of two of
    /// microseconds (bucket i: under 2^i us).
    held: Arc<[AtomicU64; 32]>,
}

/// How long events held the core's lock, as measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockHold {
    pub events: u64,
    /// Upper bounds, in microseconds (powers of two).
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

struct Running {
    engine: Engine,
    stopped: bool,
}

impl EngineRef {
    pub fn new(
        engine: Engine,
        published: watch::Sender<EngineStats>,
        open: Arc<AtomicUsize>,
    ) -> EngineRef {
        EngineRef {
            inner: Arc::new(Mutex::new(Running {
                engine,
                stopped: false,
            })),
            closed_in: Default::default(),
            closed_out: Default::default(),
            published: Arc::new(published),
            open,
            held: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }

    /// Records that the lock was held for `d`.
    fn held_for(&self, d: std::time::Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let bucket = (64 - us.leading_zeros()).min(31) as usize;
        self.held[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// How long events have held the lock so far.
    pub fn lock_hold(&self) -> LockHold {
        let counts: Vec<u64> = self
            .held
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let events: u64 = counts.iter().sum();
        let at = |q: f64| -> u64 {
            let want = (events as f64 * q).ceil() as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= want.max(1) {
                    return 1u64 << i;
                }
            }
            0
        };
        let max = counts.iter().rposition(|c| *c > 0).map_or(0, |i| 1u64 << i);
        LockHold {
            events,
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: max,
        }
    }

    /// The core, locked. A panic anywhere ends the process (see `main`), so a
    /// poisoned lock is never seen by a live node; tests take it as it is.
    fn lock(&self) -> MutexGuard<'_, Running> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new link: its send queue joins the links, then the core hears of it.
    /// False once the node has stopped.
    pub fn open(&self, conn: ConnId, tx: ConnTx, info: LinkInfo, meta: LinkMeta) -> bool {
        let mut running = self.lock();
        if running.stopped {
            return false;
        }
        running
            .engine
            .links_mut()
            .conns
            .insert(conn, LinkEntry { tx, meta });
        running
            .engine
            .handle(Event::Opened { conn, info }, Instant::now());
        self.publish(&mut running);
        true
    }

    /// Hands the core an event; false once the node has stopped.
    pub fn send(&self, event: Event) -> bool {
        let mut running = self.lock();
        let start = Instant::now();
        let result = self.handle_locked(&mut running, event);
        drop(running);
        self.held_for(start.elapsed());
        result
    }

    fn handle_locked(&self, running: &mut Running, event: Event) -> bool {
        if running.stopped {
            return false;
        }
        if let Event::Frames { conn, frames } = &event {
            let links = running.engine.links_mut();
            if let Some(e) = links.conns.get(conn) {
                let bytes: usize = frames.iter().map(|f| f.wire_len()).sum();
                let t = &e.meta.traffic;
                t.msgs_in.fetch_add(frames.len() as u64, Ordering::Relaxed);
                let types = &links.types;
                for f in frames {
                    types.received[type_index(f.header.function.code())]
                        .fetch_add(1, Ordering::Relaxed);
                }
                t.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
        if let Event::Closed { conn } = &event {
            let conn = *conn;
            if running.engine.knows(conn) {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
            if let Some(e) = running.engine.links_mut().conns.remove(&conn) {
                let t = &e.meta.traffic;
                self.closed_in
                    .fetch_add(t.bytes_in.load(Ordering::Relaxed), Ordering::Relaxed);
                self.closed_out
                    .fetch_add(t.bytes_out.load(Ordering::Relaxed), Ordering::Relaxed);
            }
        }
        running.engine.handle(event, Instant::now());
        self.publish(running);
        true
    }

    fn publish(&self, running: &mut Running) {
        self.published.send_replace(running.engine.stats());
    }

    /// A tick, with the machine's load and the wall clock.
    pub fn tick(&self, busy: f64) -> bool {
        self.send(Event::Tick {
            busy,
            wall: SystemTime::now(),
        })
    }

    /// See [`crate::core::engine::Engine::admit`].
    pub fn admit(&self, peer: PeerRole, full: bool) -> (Admit, RoleHeaders) {
        self.lock().engine.admit(peer, full, Instant::now())
    }

    /// See [`crate::core::engine::Engine::guided`].
    pub fn guided(&self, final_answer: PeerRole) -> Option<Link> {
        self.lock().engine.guided(final_answer, Instant::now())
    }

    /// The role headers to dial with.
    pub fn role_headers(&self) -> RoleHeaders {
        self.lock().engine.role_headers()
    }

    /// See [`crate::core::engine::Engine::dialed`].
    pub fn dialed(&self, peer: PeerRole) -> Result<(Link, bool), &'static str> {
        self.lock().engine.dialed(peer, Instant::now())
    }

    /// See [`crate::core::engine::Engine::linked_to`].
    pub fn linked_to(&self, guid: Guid) -> bool {
        self.lock().engine.linked_to(guid)
    }

    /// An ultrapeer turned us away and said it wants more ultrapeers.
    pub fn ultrapeers_wanted(&self) {
        self.lock().engine.ultrapeers_wanted();
    }

    /// A link counted by `admit`, `guided` or `dialed` never opened.
    pub fn release(&self, link: Link) {
        self.lock().engine.release(link, Instant::now());
    }

    /// How many more connections the maintainer should dial now, given how many
    /// dials are under way.
    pub fn wanted_dials(&self, target_peers: usize, dialing: usize) -> usize {
        self.lock().engine.wanted_dials(target_peers, dialing)
    }

    /// Runs `f` on the host cache (held by the core).
    pub fn hosts<T>(&self, f: impl FnOnce(&mut HostCache) -> T) -> T {
        f(self.lock().engine.hosts_mut())
    }

    /// Every link: what the core knows and what the shell counted.
    pub fn links(&self) -> Vec<(LinkReport, Option<LinkMeta>)> {
        let mut running = self.lock();
        let reports = running.engine.link_reports();
        let conns = &running.engine.links_mut().conns;
        reports
            .into_iter()
            .map(|r| {
                let meta = conns.get(&r.conn).map(|e| e.meta.clone());
                (r, meta)
            })
            .collect()
    }

    /// Messages in and out per kind.
    pub fn message_types(&self) -> Arc<TypeCounts> {
        self.lock().engine.links_mut().types.clone()
    }

    /// Gnutella bytes in and out on links that have closed.
    pub fn closed_traffic(&self) -> (u64, u64) {
        (
            self.closed_in.load(Ordering::Relaxed),
            self.closed_out.load(Ordering::Relaxed),
        )
    }

    /// Our QRP table's fill (see `Engine::table_fill`).
    pub fn table_fill(&self) -> (u64, u64) {
        self.lock().engine.table_fill()
    }

    /// Runs `f` on the library (held by the core).
    pub fn library<T>(&self, f: impl FnOnce(&crate::core::library::Library) -> T) -> T {
        f(self.lock().engine.library())
    }

    /// Our external IP, once several peers agree on it.
    pub fn external_ip(&self) -> Option<std::net::IpAddr> {
        self.lock().engine.external_ip()
    }

    /// A peer's handshake said where it sees us.
    pub fn remote_ip_said(&self, voter: std::net::IpAddr, said: std::net::IpAddr) {
        self.lock().engine.remote_ip_said(voter, said);
    }

    /// Whether we accept no connections (said, or learned).
    pub fn tcp_firewalled(&self) -> bool {
        self.lock().engine.tcp_firewalled()
    }

    /// A TCP connection came in from `from` to `local`.
    pub fn tcp_inbound(&self, from: SocketAddr, local: SocketAddr) {
        let mut running = self.lock();
        if running.stopped {
            return;
        }
        running.engine.tcp_inbound(from, local, Instant::now());
        self.publish(&mut running);
    }

    /// The core's datagrams go to `udp` from now on (the port bound at `addr`).
    pub fn set_udp(&self, udp: super::udp::UdpTx, addr: SocketAddr) {
        let mut running = self.lock();
        running.engine.links_mut().udp = Some(udp);
        running.engine.set_udp_local(addr);
        running.engine.set_udp_addr(Some(addr));
    }

    /// `addr` answers GUESS queries (it said so in its handshake).
    pub fn guess_host(&self, addr: SocketAddr) {
        self.lock().engine.guess_learn(addr, Instant::now());
    }

    /// `wake` is notified when hosts to dial were learned.
    pub fn set_wake(&self, wake: Arc<tokio::sync::Notify>) {
        self.lock().engine.links_mut().wake = Some(wake);
    }

    /// The UDP host caches to ask, how, whether we say we are one, and
    /// where we listen (for our pongs by UDP).
    pub fn set_udp_host_caches(
        &self,
        names: Vec<String>,
        config: crate::core::uhc::UhcConfig,
        mode: crate::core::engine::CacheMode,
        me: std::net::SocketAddrV4,
    ) {
        let mut running = self.lock();
        running.engine.set_udp_host_caches(names, config, mode);
        running.engine.set_udp_address(me);
    }

    /// See [`crate::core::engine::Engine::uhc_round`].
    pub fn uhc_round(&self, need_hosts: bool) -> crate::core::uhc::Round {
        self.lock().engine.uhc_round(Instant::now(), need_hosts)
    }

    /// See [`crate::core::engine::Engine::uhc_ping`].
    pub fn uhc_ping(&self, name: &str, addrs: &[SocketAddr]) -> usize {
        let mut running = self.lock();
        let sent = running.engine.uhc_ping(name, addrs, Instant::now());
        self.publish(&mut running);
        sent
    }

    /// A host cache's name did not resolve.
    pub fn uhc_unresolved(&self, name: &str) {
        self.lock().engine.uhc_unresolved(name, Instant::now());
    }

    /// Queries are answered for `extra`'s files too.
    pub fn set_extra(&self, extra: Arc<dyn crate::core::library::ExtraFiles>) {
        self.lock().engine.set_extra(extra);
    }

    /// Starts a search of our own (see `Engine::search`); its hits' payloads go
    /// to `hits` until [`EngineRef::end_search`]. Returns the links it went to.
    pub fn search(&self, guid: Guid, query: Bytes, ttl: u8, hits: mpsc::Sender<Bytes>) -> usize {
        let mut running = self.lock();
        if running.stopped {
            return 0;
        }
        running.engine.links_mut().searches.insert(guid, hits);
        let sent = running.engine.search(guid, query, ttl, Instant::now());
        self.publish(&mut running);
        sent
    }

    /// Stops taking hits for a search of our own.
    pub fn end_search(&self, guid: Guid) {
        let mut running = self.lock();
        running.engine.links_mut().searches.remove(&guid);
        running.engine.end_search(guid);
    }

    /// Says Bye to every peer; later events are refused.
    pub fn stop(&self) {
        let mut running = self.lock();
        running.stopped = true;
        running
            .engine
            .close_all(bye::CODE_SHUTDOWN, super::conn::SHUTDOWN_REASON);
    }
}
