//! The node's deciding core: a deterministic state machine in the style of
//! `napster::index` and quinn-proto. Events go in (a frame from a link, a
//! handshake to decide, a tick, a library change, a link closed) with `now`
//! passed in; what it decides goes out through [`Links`] (send these bytes to
//! that link with this priority, close that link with this Bye, answer a Push,
//! connect back). It holds no clock, socket, lock or task; its randomness
//! comes from a seed. The async shell (`crate::node`) moves the bytes.
//!
//! Split by concern: [`routing`] (routing and answering), [`tables`] (QRP
//! tables), [`offers`] (library offers, vendor messages, push proxying),
//! [`dynamic`] (dynamic queries); peer budgets are `core::budget`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::core::ConnId;
use crate::core::budget::{Budget, Kind as BudgetKind, Rates, Verdict};
use crate::core::dq::{self, Candidate, DqConfig, Planner};
use crate::core::flow::Offer;
use crate::core::flow::Priority;
use crate::core::hosts::HostCache;
use crate::core::library::Library;
use crate::core::pongs::PongCache;
use crate::core::router::{Class, Decision, DropReason, Forward, Router, Stats, Targets};
use crate::core::tier::RoleHeaders;
use crate::core::tier::{Admit, Link, PeerRole, Role, RoleChange, Tier};
use crate::wire::Push;
use crate::wire::bye;
use crate::wire::huge::Sha1Urn;
use crate::wire::library_offer::{OfferChunk, OfferedFile};
use crate::wire::qrp::{self, PatchDecoder, QrpTable};
use crate::wire::query::QueryView;
use crate::wire::queryhit::OpenDataFlags;
use crate::wire::{
    Frame, Function, Guid, Header, HitResult, Hops, Message, Ping, Pong, QueryHit,
    RouteTableUpdate, Trailer, TrailerArea, Ttl,
};

mod dynamic;
mod offers;
mod routing;
mod tables;

/// Where the core's decisions go: the shell's connections and tasks (or a
/// test's record of them).
pub trait Links {
    /// Queues a whole frame's bytes on `conn`'s send queue.
    fn send(&mut self, conn: ConnId, priority: Priority, bytes: Bytes) -> Offer;
    /// Ends `conn` with a Bye (`code`, `reason`) first, where the link knows Bye.
    fn close(&mut self, conn: ConnId, code: u16, reason: &str);
    /// Ends `conn` without a Bye (it said Bye, or closed).
    fn close_silently(&mut self, conn: ConnId);
    /// A Push addressed to us: connect to where it says and offer the file.
    fn push(&mut self, push: Push);
    /// A peer asked us to connect back to `to` (TCP connect-back).
    fn connect_back(&mut self, to: SocketAddr);
    /// Whether every upload slot is taken (hits say so).
    fn uploads_busy(&self) -> bool;
}

/// Our vendor code in QueryHit trailers.
pub const VENDOR: [u8; 4] = *b"SRVT";
/// Results per QueryHit message; larger answers are split.
const RESULTS_PER_HIT: usize = 10;
/// Unknown messages a peer may send before it is dropped with Bye 404.
const MAX_UNKNOWN: u32 = 20;
/// Requests a peer may send us twice before it is dropped with Bye 401.
const MAX_REPEATED: u32 = 50;
/// Slots in the tables we send (LimeWire's and gtk-gnutella's receivers rescale).
const TABLE_LEN: usize = 1 << 16;
/// Bytes per PATCH message we send.
const PATCH_CHUNK: usize = 4096;
/// The share of its slots a leaf's table may have present (a leaf sharing
/// thousands of files fills well under half of 65,536).
pub const DEFAULT_MAX_TABLE_FILL: f64 = 0.7;
/// How often every neighbour is pinged to refresh the pong cache.
const PING_EVERY: Duration = Duration::from_secs(30);

/// What the handshake told us about a link.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    /// Our address as this peer reaches us (for Pongs and hits sent to it).
    pub local: SocketAddr,
    /// Where the peer listens, when known.
    pub remote_listen: Option<SocketAddr>,
    /// What the link is (already counted by the role policy at admission);
    /// `ToUltrapeer`: it accepts only our own queries, never relayed ones
    /// (gtk-gnutella drops a leaf that relays with Bye 414).
    pub link: Link,
    /// The peer sends and reads inter-ultrapeer tables.
    pub up_qrp: bool,
    /// The peer speaks the library offer.
    pub offers: bool,
    /// Ultrapeer links the peer keeps (`X-Degree`; 0 if it did not say).
    pub degree: usize,
    /// The peer's servent GUID, when its handshake (or its push-proxy request)
    /// said it.
    pub guid: Option<Guid>,
    /// The address the connection comes from (its IP is where a connect-back
    /// goes).
    pub remote: SocketAddr,
    /// The peer reads vendor messages (`Vendor-Message` in its handshake).
    pub vendor_messages: bool,
    /// The peer connected to us (rather than we to it).
    pub inbound: bool,
}

/// What connections and the node tell the engine.
pub enum Event {
    Opened {
        conn: ConnId,
        info: LinkInfo,
    },
    /// Frames received on one connection, in order.
    Frames {
        conn: ConnId,
        frames: Vec<Frame>,
    },
    Closed {
        conn: ConnId,
    },
    /// A file appeared in the shares (or changed: it was removed first).
    Added {
        name: String,
        path: PathBuf,
        size: u64,
        mtime: SystemTime,
        urn: Option<Sha1Urn>,
    },
    /// A file left the shares, or changed.
    Removed {
        path: PathBuf,
    },
    /// A shared file's hash has been computed (for the size it had then).
    Hashed {
        path: PathBuf,
        size: u64,
        urn: Sha1Urn,
    },
    /// Time passes (sent by the node every second), with the share of the
    /// machine's CPU in use (0..1) and the wall clock (for the host cache's
    /// ages, which outlive a run).
    Tick {
        busy: f64,
        wall: SystemTime,
    },
    /// An inbound socket was closed at once: its address has too many open.
    PerIpRefused,
    /// A link broke one of its time limits (it is being closed).
    Fault {
        conn: ConnId,
        fault: Fault,
    },
}

/// A time limit a link broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing received for too long (Bye 405).
    ReadIdle,
    /// The peer read nothing for too long (closed without a Bye).
    WriteStall,
}

/// Relayed messages queued, counted per connection they were queued on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayCounts {
    pub pings: u64,
    pub pongs: u64,
    pub queries: u64,
    pub query_hits: u64,
    pub pushes: u64,
}

/// Counters beyond the router's.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub router: Stats,
    /// Frames whose payload failed validation.
    pub malformed: u64,
    /// Frames of unknown function.
    pub unknown: u64,
    /// Messages shed or refused by full send queues.
    pub shed: u64,
    /// QueryHit messages we sent in answer to queries.
    pub hits_sent: u64,
    /// Connections opened since the start.
    pub opened: u64,
    /// Relayed messages queued for sending, per function (one per target).
    pub relayed: RelayCounts,
    pub connections: usize,
    /// Whether the node is an ultrapeer now.
    pub ultrapeer: bool,
    /// Role changes since the start.
    pub role_changes: u64,
    /// Open links: our ultrapeers (we are their leaf), our leaves, and
    /// ultrapeer or flat links.
    pub to_ultrapeers: usize,
    pub leaves: usize,
    pub mesh_links: usize,
    /// Queries not sent to a leaf because its table does not match.
    pub leaf_table_misses: u64,
    /// Queries not sent on their last hop to an ultrapeer whose table does not
    /// match.
    pub last_hop_misses: u64,
    /// Route-table messages that broke their sequence (the link is closed).
    pub table_errors: u64,
    /// Complete tables received (RESET + whole PATCH sequence).
    pub tables_received: u64,
    /// PATCH sequences we sent.
    pub tables_sent: u64,
    /// Complete library offers received from leaves.
    pub offers_received: u64,
    /// Library offers we sent (whole libraries).
    pub offers_sent: u64,
    /// Leaves we agreed to be the push proxy of (LIME/21 answered).
    pub push_proxied: u64,
    /// QueryHits we sent for leaves whose files they offered.
    pub hits_for_leaves: u64,
    /// Dynamic queries started for leaves, and running now.
    pub dynamic_queries: u64,
    pub dynamic_running: usize,
    /// Ultrapeers that agreed to be our push proxy (LIME/22 received).
    pub push_proxies: usize,
    /// Messages-Supported and Capabilities messages received.
    pub supported_received: u64,
    /// TCP connect-back requests (BEAR/7) received and passed on to be answered.
    pub connect_backs: u64,
    /// Leaves' queries whose out-of-band flag we cleared (we cannot proxy OOB).
    pub oob_stripped: u64,
    /// Pongs not cached or learned: from leaves, or naming ourselves.
    pub pongs_unlisted: u64,
    /// Table updates and library offers refused by a full control room (offered
    /// again on a later tick).
    pub control_retries: u64,
    /// Links closed for sending nothing for too long, and for reading nothing.
    pub idle_closed: u64,
    pub stalled_closed: u64,
    /// Messages dropped for being over their sender's budget, per kind (in the
    /// order of `core::budget::Kind::ALL`), and links closed for staying over.
    pub over_budget: [u64; 7],
    pub closed_over_budget: u64,
    /// Hosts in the host cache.
    pub hosts: usize,
    /// Inbound sockets closed at once: their address had too many open.
    pub per_ip_refused: u64,
}

impl EngineStats {
    /// Messages of `kind` dropped over budget.
    pub fn over_budget(&self, kind: BudgetKind) -> u64 {
        self.over_budget[kind as usize]
    }
}

/// What each kind of link may send (see `core::budget`).
#[derive(Clone, Debug)]
pub struct Budgets {
    /// Ultrapeer and flat neighbours, and our ultrapeers.
    pub neighbour: Rates,
    /// Our leaves.
    pub leaf: Rates,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            neighbour: Rates::neighbour(),
            leaf: Rates::leaf(),
        }
    }
}

impl Budgets {
    /// No limits (benches that measure raw relaying).
    pub fn unlimited() -> Budgets {
        Budgets {
            neighbour: Rates::unlimited(),
            leaf: Rates::unlimited(),
        }
    }
}

struct Peer {
    conn: ConnId,
    info: LinkInfo,
    unknown: u32,
    repeated: u32,
    /// The table this peer sent us (its leaf's files, or an ultrapeer's merge).
    table: Option<RemoteTable>,
    /// The table we last sent it.
    sent: Option<QrpTable>,
    /// The files a leaf offered us (complete once its last chunk came).
    offered: Option<(Library, bool)>,
    /// The leaf said it accepts no connections.
    offered_firewalled: bool,
    /// Bytes of names in the offer so far.
    offered_bytes: usize,
    /// The version of our library we last offered it.
    offered_version: Option<u64>,
    /// The vendor messages it said it supports (Messages-Supported).
    supported: Vec<crate::wire::vendor::Supported>,
    /// Its capabilities (Capabilities / Features-Supported).
    capabilities: Vec<crate::wire::vendor::Capability>,
    /// As our ultrapeer: the address it acked as our push proxy (LIME/22).
    proxy: Option<std::net::SocketAddrV4>,
    /// We asked it to be our push proxy (LIME/21 sent).
    asked_proxy: bool,
    /// A connect-back it asked for was passed on (one per link).
    connected_back: bool,
    /// Pongs taken from it in the current ping interval, and when that began.
    pongs_taken: u32,
    pongs_since: Instant,
    /// What it may still send.
    budget: Budget,
    /// When it last reset its QRP table.
    resets: ResetPace,
    /// We are closing it: what else it sent is not read.
    closing: bool,
}

/// Slots in a leaf's table, and in an ultrapeer's, at most.
const MAX_LEAF_TABLE: usize = 1 << 17;
const MAX_PEER_TABLE: usize = 1 << 20;

/// QRP RESETs a peer may send: the first at once, then one per
/// [`ResetPace::EVERY`] on average, with a little slack.
#[derive(Clone, Debug, Default)]
struct ResetPace {
    /// Credit in RESETs, and when it was last counted.
    credit: f64,
    at: Option<Instant>,
}

impl ResetPace {
    const EVERY: Duration = Duration::from_secs(10);
    const SLACK: f64 = 3.0;

    fn allow(&mut self, now: Instant) -> bool {
        let credit = match self.at {
            None => Self::SLACK,
            Some(t) => (self.credit
                + now.saturating_duration_since(t).as_secs_f64() / Self::EVERY.as_secs_f64())
            .min(Self::SLACK),
        };
        self.at = Some(now);
        if credit >= 1.0 {
            self.credit = credit - 1.0;
            true
        } else {
            self.credit = credit;
            false
        }
    }
}

/// Pongs one peer may add to the host and pong caches per ping interval (we
/// ping it once an interval; an honest peer answers with its own Pong and up
/// to ten cached ones).
const MAX_PONGS_PER_PING: u32 = 16;

/// Entries kept from a peer's Messages-Supported list.
const MAX_SUPPORTED: usize = 128;
/// Push proxies listed in our hits (GGEP `PUSH`), as LimeWire and gtk-gnutella
/// list at most four.
const MAX_PUSH_PROXIES: usize = 4;

/// The vendor messages we handle, announced in our Messages-Supported.
const OUR_SUPPORTED: [crate::wire::vendor::Supported; 5] = [
    // Push-proxy request (we answer it as an ultrapeer) and its ack (we read it
    // as a leaf, v1 and v2).
    crate::wire::vendor::Supported {
        vendor: *b"LIME",
        selector: 21,
        version: 1,
    },
    crate::wire::vendor::Supported {
        vendor: *b"LIME",
        selector: 22,
        version: 1,
    },
    crate::wire::vendor::Supported {
        vendor: *b"LIME",
        selector: 22,
        version: 2,
    },
    // TCP connect-back (we connect back and say "\n\n").
    crate::wire::vendor::Supported {
        vendor: *b"BEAR",
        selector: 7,
        version: 1,
    },
    // The library offer.
    crate::wire::vendor::Supported {
        vendor: *b"SRVT",
        selector: 1,
        version: 1,
    },
];

impl Peer {
    /// Whether it said it supports `vendor/selector` (any version).
    fn supports(&self, vendor: &[u8; 4], selector: u16) -> bool {
        self.supported
            .iter()
            .any(|e| &e.vendor == vendor && e.selector == selector)
    }
}

struct RemoteTable {
    decoder: PatchDecoder,
    table: QrpTable,
    /// One whole PATCH sequence has arrived: the table can be routed on.
    complete: bool,
}

impl Peer {
    /// Whether we send this peer our table.
    fn wants_table(&self, role: Role) -> bool {
        match role {
            Role::Leaf => self.info.link == Link::ToUltrapeer,
            Role::Ultrapeer => self.info.link == Link::Peer && self.info.up_qrp,
        }
    }

    /// Whether a query matches the table this peer sent (`None`: no table yet).
    fn matches(&self, k: &QueryKeys) -> Option<bool> {
        let t = self.table.as_ref().filter(|t| t.complete)?;
        Some(k.hit(&t.table))
    }
}

/// Whether we answer queries for this leaf ourselves (it offered its files, and
/// we know its GUID and address).
fn answers_for(p: &Peer) -> bool {
    p.info.link == Link::ToLeaf
        && p.info.guid.is_some()
        && p.info.remote_listen.is_some()
        && p.offered.as_ref().is_some_and(|(_, complete)| *complete)
}

/// The ultrapeer (and flat) links as the dynamic-query planner sees them, for
/// query `q` (whose tables match it; unknown without a query).
fn candidates(peers: &HashMap<ConnId, Peer>, k: Option<&QueryKeys>) -> Vec<Candidate> {
    peers
        .iter()
        .filter(|(_, p)| matches!(p.info.link, Link::Peer | Link::Flat))
        .map(|(c, p)| Candidate {
            conn: *c,
            matches: k.and_then(|k| p.matches(k)),
            degree: p.info.degree,
        })
        .collect()
}

/// The QRP keyword a SHA-1 URN goes into tables as (`urn:sha1:` and base32,
/// lower case).
fn urn_keyword(u: &Sha1Urn) -> String {
    u.to_string().to_lowercase()
}

/// A query's QRP keywords, split once per query and matched against as many
/// tables as it meets (every leaf's, and ultrapeers' on its last hop).
struct QueryKeys {
    words: Vec<String>,
    urns: Vec<String>,
}

impl QueryKeys {
    fn of(q: &QueryView<'_>) -> QueryKeys {
        QueryKeys {
            words: qrp::split_keywords(&String::from_utf8_lossy(q.text)),
            urns: q.ext.sha1_urns().map(|u| urn_keyword(&u)).collect(),
        }
    }

    /// Whether the query hits `table`: every keyword of its text, or one of its
    /// URNs.
    fn hit(&self, table: &QrpTable) -> bool {
        table.matches_query(&self.words) || self.urns.iter().any(|u| table.contains_keyword(u))
    }
}

/// What the core is set up with.
pub struct Config {
    /// Our servent GUID.
    pub me: Guid,
    pub router: Router,
    pub library: Library,
    /// Results one query may get from us.
    pub max_results: usize,
    pub hosts: HostCache,
    pub tier: Tier,
    pub dq: DqConfig,
    /// We accept no connections: hits ask for a Push, and we ask our
    /// ultrapeers to be our push proxies.
    pub firewalled: bool,
    pub budgets: Budgets,
    /// A leaf's table with a larger share of its slots present is refused.
    pub max_table_fill: f64,
    /// Seed of the core's randomness (message GUIDs).
    pub seed: u64,
}

/// The core: the router, the library, the host and pong caches, the role
/// policy, dynamic queries, and every link's state.
pub struct Engine<L: Links> {
    me: Guid,
    router: Router,
    library: Library,
    peers: HashMap<ConnId, Peer>,
    max_results: usize,
    stats: EngineStats,
    hosts: HostCache,
    pongs: PongCache,
    last_ping: Option<Instant>,
    tier: Tier,
    /// Our table (library, and as an ultrapeer our leaves') needs rebuilding.
    table_dirty: bool,
    /// Our table as last built.
    table: Option<QrpTable>,
    /// Bumped on every change to our library (for library offers).
    library_version: u64,
    /// Messages shed as of the last tick (shedding is a sign of short bandwidth).
    shed_at_tick: u64,
    /// Dynamic queries run for our leaves, and the query each one sends.
    dq: Planner<Guid>,
    dq_frames: HashMap<Guid, Frame>,
    firewalled: bool,
    /// A peer has connected to us (we can be reached).
    inbound_seen: bool,
    budgets: Budgets,
    max_table_fill: f64,
    rng: Rng,
    /// The wall clock as of the last event that told it (host-cache ages).
    wall: SystemTime,
    links: L,
}

/// The core's randomness: splitmix64 from a seed, so a run can be replayed.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A message GUID, marked as a modern servent's (byte 8 all ones, byte 15
    /// zero), as Gnutella 0.6 GUIDs are.
    fn guid(&mut self) -> Guid {
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&self.next().to_le_bytes());
        g[8..].copy_from_slice(&self.next().to_le_bytes());
        g[8] = 0xff;
        g[15] = 0;
        Guid(g)
    }
}

impl<L: Links> Engine<L> {
    pub fn new(config: Config, links: L) -> Engine<L> {
        Engine {
            me: config.me,
            router: config.router,
            library: config.library,
            peers: HashMap::new(),
            max_results: config.max_results,
            stats: EngineStats::default(),
            hosts: config.hosts,
            pongs: PongCache::new(200, Duration::from_secs(90)),
            last_ping: None,
            tier: config.tier,
            table_dirty: true,
            table: None,
            library_version: 0,
            shed_at_tick: 0,
            dq: Planner::new(config.dq),
            dq_frames: HashMap::new(),
            firewalled: config.firewalled,
            inbound_seen: false,
            budgets: config.budgets,
            max_table_fill: config.max_table_fill.clamp(0.0, 1.0),
            rng: Rng(config.seed),
            wall: SystemTime::UNIX_EPOCH,
            links,
        }
    }

    /// The shell's side of the links.
    pub fn links_mut(&mut self) -> &mut L {
        &mut self.links
    }

    /// The host cache (the shell dials from it and saves it).
    pub fn hosts_mut(&mut self) -> &mut HostCache {
        &mut self.hosts
    }

    /// Whether `conn` is a link the core knows.
    pub fn knows(&self, conn: ConnId) -> bool {
        self.peers.contains_key(&conn)
    }

    /// The links open now.
    pub fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.peers.keys().copied()
    }

    /// Decides how to answer a peer that connected to us, and the role headers
    /// to answer with (`full`: the node has no room for another link). An
    /// accepted (or guided) link is counted from now on: the shell reports it
    /// opened, or calls [`Engine::release`].
    pub fn admit(&mut self, peer: PeerRole, full: bool, now: Instant) -> (Admit, RoleHeaders) {
        if !full {
            let knows = !self.hosts.sample_ultrapeers(1).is_empty();
            if let Some(change) = self.tier.serve_first_leaf(peer, knows, now) {
                tracing::info!("a leaf asks to be served and no ultrapeer is known: becoming one");
                self.change_role(change);
            }
        }
        let admit = if full {
            Admit::Refuse("Too many connections")
        } else {
            self.tier.admit(peer)
        };
        match admit {
            Admit::Accept(link) => self.tier.opened(link, now),
            Admit::Guide => self.tier.opened(Link::ToLeaf, now),
            Admit::Refuse(_) => {}
        }
        let mut headers = self.role_headers();
        if admit == Admit::Guide {
            headers.needed = Some(false);
        }
        (admit, headers)
    }

    /// After guidance: what the link became, from the peer's final answer (the
    /// `ToLeaf` counted at admission is given back first). `None`: close it.
    pub fn guided(&mut self, final_answer: PeerRole, now: Instant) -> Option<Link> {
        self.tier.closed(Link::ToLeaf, now);
        let link = self.tier.guided(final_answer);
        if let Some(l) = link {
            self.tier.opened(l, now);
        }
        link
    }

    /// Decides what a link we dialed becomes from the other side's answer
    /// (counted from now on, as for [`Engine::admit`]); `Err`: refuse it. The
    /// `bool` says what to tell the peer in our final answer: whether we are an
    /// ultrapeer (false after taking leaf guidance).
    pub fn dialed(&mut self, peer: PeerRole, now: Instant) -> Result<(Link, bool), &'static str> {
        let before = self.tier.role();
        let link = self.tier.dialed(peer, now)?;
        self.tier.opened(link, now);
        if self.tier.role() != before {
            tracing::info!("taking leaf guidance: becoming a leaf");
            self.change_role(RoleChange {
                to: self.tier.role(),
                drop: vec![Link::Peer, Link::Flat],
            });
        }
        Ok((link, self.tier.role() == Role::Ultrapeer))
    }

    /// An ultrapeer turned us away and said it wants more ultrapeers.
    pub fn ultrapeers_wanted(&mut self) {
        self.tier.ultrapeers_wanted();
    }

    /// A link counted by `admit`, `guided` or `dialed` never opened.
    pub fn release(&mut self, link: Link, now: Instant) {
        self.tier.closed(link, now);
    }

    /// How many more connections the shell should dial now, given how many
    /// dials are under way.
    pub fn wanted_dials(&self, target_peers: usize, dialing: usize) -> usize {
        self.tier
            .dial_target(target_peers)
            .saturating_sub(self.tier.dialed_links() + dialing)
    }

    /// Says Bye to every peer (the node stops).
    pub fn close_all(&mut self, code: u16, reason: &str) {
        for conn in self.peers.keys() {
            self.links.close(*conn, code, reason);
        }
    }

    /// The role headers to dial with.
    pub fn role_headers(&self) -> RoleHeaders {
        let ultrapeer = self.tier.role() == Role::Ultrapeer;
        RoleHeaders {
            ultrapeer,
            degree: self.tier.config().ultrapeer_links,
            up_qrp: self.tier.config().ultrapeer_qrp,
            needed: ultrapeer.then(|| self.tier.ultrapeers_needed()),
        }
    }

    fn library_changed(&mut self) {
        self.table_dirty = true;
        self.library_version += 1;
    }

    /// Carries out a role change: links that no longer fit are closed (the
    /// maintainer then dials as the new role).
    fn change_role(&mut self, change: RoleChange) {
        tracing::info!(role = ?change.to, "role changed");
        for peer in self.peers.values() {
            if change.drop.contains(&peer.info.link) {
                self.links
                    .close(peer.conn, bye::CODE_SHUTDOWN, "Changing role");
            }
        }
        self.table_dirty = true;
        for peer in self.peers.values_mut() {
            peer.sent = None;
        }
    }

    /// The counters as of now.
    pub fn stats(&mut self) -> EngineStats {
        self.stats.router = self.router.stats().clone();
        self.stats.connections = self.peers.len();
        self.stats.ultrapeer = self.tier.role() == Role::Ultrapeer;
        self.stats.role_changes = self.tier.changes();
        self.stats.to_ultrapeers = self.tier.count(Link::ToUltrapeer);
        self.stats.leaves = self.tier.count(Link::ToLeaf);
        self.stats.mesh_links = self.tier.count(Link::Peer) + self.tier.count(Link::Flat);
        self.stats.dynamic_running = self.dq.len();
        self.stats.hosts = self.hosts.len();
        self.stats.clone()
    }

    /// Takes one event at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Opened { conn, mut info } => {
                tracing::debug!(conn = conn.0, remote_listen = ?info.remote_listen, local = %info.local, link = info.link.name(), "connection opened");
                self.stats.opened += 1;
                self.inbound_seen |= info.inbound;
                self.router.connection_opened(conn);
                info.up_qrp &= self.tier.config().ultrapeer_qrp;
                let rates = match info.link {
                    Link::ToLeaf => self.budgets.leaf.clone(),
                    _ => self.budgets.neighbour.clone(),
                };
                self.peers.insert(
                    conn,
                    Peer {
                        conn,
                        info,
                        unknown: 0,
                        repeated: 0,
                        table: None,
                        sent: None,
                        offered: None,
                        offered_firewalled: false,
                        offered_bytes: 0,
                        offered_version: None,
                        supported: Vec::new(),
                        capabilities: Vec::new(),
                        proxy: None,
                        asked_proxy: false,
                        connected_back: false,
                        pongs_taken: 0,
                        pongs_since: now,
                        budget: Budget::new(rates, now),
                        resets: ResetPace::default(),
                        closing: false,
                    },
                );
                // Ask the new neighbour for itself and the hosts it knows.
                self.ping(conn, now);
                self.send_supported(conn);
            }
            Event::Closed { conn } => {
                tracing::debug!(conn = conn.0, "connection closed");
                self.router.connection_closed(conn);
                self.dq.closed(conn);
                if let Some(peer) = self.peers.remove(&conn) {
                    if peer.proxy.is_some() {
                        self.stats.push_proxies = self.stats.push_proxies.saturating_sub(1);
                    }
                    self.tier.closed(peer.info.link, now);
                    if peer.info.link == Link::ToLeaf && peer.table.is_some() {
                        self.table_dirty = true;
                    }
                    if let Some(addr) = peer.info.remote_listen {
                        self.hosts.closed(addr, now);
                    }
                }
            }
            Event::Added {
                name,
                path,
                size,
                mtime,
                urn,
            } => {
                self.library.add(&name, path, size, mtime, urn);
                self.library_changed();
            }
            Event::Removed { path } => {
                if let Some(index) = self.library.index_of(&path) {
                    self.library.remove(index);
                    self.library_changed();
                }
            }
            Event::Hashed { path, size, urn } => {
                // Only if the file is still the one that was hashed.
                let index = self.library.index_of(&path);
                if let Some(i) =
                    index.filter(|i| self.library.get(*i).is_some_and(|f| f.size == size))
                {
                    self.library.set_sha1(i, urn);
                    self.library_changed();
                }
            }
            Event::Tick { busy, wall } => {
                self.wall = wall;
                let outranked = self
                    .peers
                    .values()
                    .any(|p| p.info.link == Link::Peer && p.info.guid.is_some_and(|g| g > self.me));
                self.tier.set_outranked(outranked);
                if self.stats.shed > self.shed_at_tick {
                    self.tier.congested(now);
                }
                self.shed_at_tick = self.stats.shed;
                if let Some(change) = self.tier.tick(now, busy) {
                    self.change_role(change);
                }
                self.send_tables();
                self.dq_steps(now);
                // Refresh the pong cache by asking every neighbour now and then.
                if self
                    .last_ping
                    .is_none_or(|t| now.duration_since(t) >= PING_EVERY)
                {
                    self.last_ping = Some(now);
                    let conns: Vec<ConnId> = self.peers.keys().copied().collect();
                    for conn in conns {
                        self.ping(conn, now);
                    }
                }
            }
            Event::Frames { conn, frames } => {
                for frame in frames {
                    self.frame(conn, frame, now);
                }
            }
            Event::PerIpRefused => self.stats.per_ip_refused += 1,
            Event::Fault { conn, fault } => {
                tracing::debug!(conn = conn.0, ?fault, "link broke a time limit");
                match fault {
                    Fault::ReadIdle => self.stats.idle_closed += 1,
                    Fault::WriteStall => self.stats.stalled_closed += 1,
                }
            }
        }
    }

    fn frame(&mut self, conn: ConnId, mut frame: Frame, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.closing {
            return;
        }
        if frame.header.function == Function::Query && peer.info.link == Link::ToLeaf {
            // A leaf asking for out-of-band replies would have them sent by UDP
            // to the address in its MUID, which we cannot proxy: responders such
            // as LimeWire then send nothing in-band, and the leaf gets nothing.
            // Cleared, its query is answered along the path it came.
            if let Some(p) = strip_oob(&frame.payload) {
                frame.payload = p;
                frame.header.payload_len = frame.payload.len() as u32;
                self.stats.oob_stripped += 1;
            }
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let kind = match frame.header.function {
            Function::Query => Some(BudgetKind::Query),
            Function::Ping => Some(BudgetKind::Ping),
            Function::Pong => Some(BudgetKind::Pong),
            Function::QueryHit => Some(BudgetKind::Hit),
            Function::Push => Some(BudgetKind::Push),
            Function::RouteTable => Some(BudgetKind::Table),
            Function::Vendor | Function::StandardVendor => Some(BudgetKind::Vendor),
            Function::Bye | Function::Unknown(_) => None,
        };
        if let Some(kind) = kind {
            match peer.budget.admit(kind, now) {
                Verdict::Take => {}
                Verdict::Drop => {
                    self.stats.over_budget[kind as usize] += 1;
                    return;
                }
                Verdict::Close => {
                    self.stats.over_budget[kind as usize] += 1;
                    self.stats.closed_over_budget += 1;
                    tracing::debug!(
                        conn = conn.0,
                        kind = kind.name(),
                        "closing: over its budget"
                    );
                    peer.closing = true;
                    self.links.close(
                        peer.conn,
                        bye::CODE_BAD_QUERIES,
                        &format!("Flooding: too many {} messages", kind.name()),
                    );
                    return;
                }
            }
        }
        let h = frame.header;
        let class = match h.function {
            Function::Ping => Class::Discovery,
            Function::Pong => Class::DiscoveryReply,
            Function::Query => Class::Search,
            Function::QueryHit => match frame.payload.len().checked_sub(16) {
                Some(at) => Class::SearchReply {
                    responder: Guid::from_slice(&frame.payload[at..]).expect("16 bytes"),
                },
                None => {
                    self.stats.malformed += 1;
                    return;
                }
            },
            Function::Push => match Guid::from_slice(&frame.payload) {
                Some(target) => Class::Directed { target },
                None => {
                    self.stats.malformed += 1;
                    return;
                }
            },
            Function::Bye => {
                match crate::wire::Bye::parse(&frame.payload) {
                    Ok(b) => {
                        tracing::info!(conn = conn.0, code = b.code, reason = %b.reason(), "peer said Bye")
                    }
                    Err(e) => {
                        tracing::info!(conn = conn.0, error = %e, "peer said Bye (unreadable)")
                    }
                }
                self.links.close_silently(peer.conn);
                return;
            }
            // Hop-by-hop messages the node does not act on yet.
            Function::RouteTable => {
                self.route_table(conn, &frame.payload, now);
                return;
            }
            Function::Vendor => {
                self.vendor(conn, h.guid, &frame.payload);
                return;
            }
            Function::StandardVendor => return,
            Function::Unknown(f) => {
                tracing::debug!(
                    conn = conn.0,
                    function = f,
                    "dropped a message of unknown function"
                );
                self.stats.unknown += 1;
                peer.unknown += 1;
                if peer.unknown > MAX_UNKNOWN {
                    self.links
                        .close(peer.conn, bye::CODE_UNKNOWN, "Too many unknown messages");
                }
                return;
            }
        };
        // A Query is checked by parsing its view, which answering it needs too;
        // everything else by the allocation-free check.
        let query = if h.function == Function::Query {
            match QueryView::parse(&frame.payload) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::debug!(conn = conn.0, function = ?h.function, error = %e, "dropped a malformed message");
                    self.stats.malformed += 1;
                    return;
                }
            }
        } else {
            if let Err(e) = Message::validate(h.function, &frame.payload) {
                tracing::debug!(conn = conn.0, function = ?h.function, error = %e, "dropped a malformed message");
                self.stats.malformed += 1;
                return;
            }
            None
        };
        if let Class::Directed { target } = class {
            // A Push for a leaf we answered for (we are its push proxy).
            if self.push_to_leaf(conn, target, &frame) {
                return;
            }
        }
        let decision = self
            .router
            .route(conn, h.guid, class, h.ttl.0, h.hops.0, now);
        if h.function == Function::Pong
            && matches!(decision, Decision::Accept { deliver: true, .. })
        {
            // A Pong answering one of our own Pings names a host we may dial
            // later, and one we may tell others about; only so many per Ping, so
            // one neighbour cannot fill the cache with addresses of its choice.
            let p = &frame.payload;
            let port = u16::from_le_bytes([p[0], p[1]]);
            let ip = Ipv4Addr::new(p[2], p[3], p[4], p[5]);
            let addr = SocketAddr::new(IpAddr::V4(ip), port);
            // Not a leaf's (a leaf takes no connections from other nodes; handing
            // it out makes leaves dial each other), and not our own address
            // coming back to us from another host's cache.
            let from_leaf = self
                .peers
                .get(&conn)
                .is_some_and(|p| p.info.link == Link::ToLeaf);
            let over = self.peers.get_mut(&conn).is_some_and(|p| {
                if now.saturating_duration_since(p.pongs_since) >= PING_EVERY {
                    p.pongs_since = now;
                    p.pongs_taken = 0;
                }
                p.pongs_taken += 1;
                p.pongs_taken > MAX_PONGS_PER_PING
            });
            let unlisted = from_leaf || over || self.is_me(addr);
            if unlisted {
                self.stats.pongs_unlisted += 1;
            }
            if port != 0 && !ip.is_unspecified() && !unlisted {
                self.hosts.learn_reachable(addr, self.wall);
                self.pongs
                    .insert(now, frame.payload.clone(), h.hops.0, conn);
            }
        }
        let Decision::Accept { deliver, forward } = decision else {
            if decision == Decision::Drop(DropReason::Repeated) {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.repeated += 1;
                    if peer.repeated == MAX_REPEATED {
                        self.links
                            .close(peer.conn, bye::CODE_DUPLICATES, "Too many duplicates");
                    }
                }
            }
            return;
        };
        // Only an ultrapeer routes by tables; it splits the query's keywords once.
        let keys = match (&query, self.tier.role()) {
            (Some(q), Role::Ultrapeer) => Some(QueryKeys::of(q)),
            _ => None,
        };
        // An ultrapeer and its leaves are one unit: a query goes to every leaf
        // whose table matches, even when its TTL ends here; but only the first
        // time (a probe widened on the same link is not news to the leaves).
        if let (Some(k), true) = (&keys, deliver) {
            self.send_to_leaves(conn, &frame, forward.as_ref(), k);
        }
        let from_leaf = self
            .peers
            .get(&conn)
            .is_some_and(|p| p.info.link == Link::ToLeaf);
        if let (Some(f), Some(k), true) = (&forward, &keys, from_leaf) {
            // A leaf's query: searched for dynamically, not flooded.
            if self.start_dq(conn, &frame, f, k, now) {
                return self.deliver(conn, &h, &frame.payload, deliver, query.as_ref(), now);
            }
        }
        if h.function == Function::QueryHit && self.dq.contains(&h.guid) {
            self.dq
                .results(&h.guid, frame.payload.first().copied().unwrap_or(0) as u32);
        }
        if let Some(f) = forward {
            let priority = match h.function {
                Function::Ping | Function::Pong => Priority::RelayedDiscovery,
                Function::Query => Priority::RelayedSearch,
                _ => Priority::Result,
            };
            self.send(f, priority, &frame, keys.as_ref());
        }
        self.deliver(conn, &h, &frame.payload, deliver, query.as_ref(), now);
    }

    /// Answers a request delivered to us.
    fn deliver(
        &mut self,
        conn: ConnId,
        h: &Header,
        payload: &bytes::Bytes,
        deliver: bool,
        query: Option<&QueryView<'_>>,
        now: Instant,
    ) {
        if deliver {
            match h.function {
                Function::Ping => self.answer_ping(conn, h, now),
                Function::Query => {
                    if let Some(q) = query {
                        self.answer_query(conn, h, q);
                        if self.tier.role() == Role::Ultrapeer {
                            self.answer_for_leaves(conn, h, q);
                        }
                    }
                }
                Function::Push => {
                    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
                    if let Ok(p) = Push::parse(payload, &mut budget) {
                        self.links.push(p);
                    }
                }
                _ => {}
            }
        }
    }

    /// Leaves offering no more files than this, with names of no more bytes in
    /// all, are answered for in full.
    const MAX_OFFERED: usize = 10_000;
    const MAX_OFFERED_BYTES: usize = 1 << 20;

    /// A vendor message: the library offer from a leaf is kept; others ignored.
    fn vendor(&mut self, conn: ConnId, id: Guid, payload: &bytes::Bytes) {
        let role = self.tier.role();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let m = match crate::wire::VendorMsg::parse(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "dropped a malformed vendor message");
                self.stats.malformed += 1;
                return;
            }
        };
        if m.vendor == crate::wire::vendor::NULL_VENDOR {
            match m.selector {
                crate::wire::VendorMsg::MESSAGES_SUPPORTED => match m.supported_entries() {
                    Ok(mut e) => {
                        e.truncate(MAX_SUPPORTED);
                        tracing::debug!(
                            conn = conn.0,
                            entries = e.len(),
                            "peer's Messages-Supported"
                        );
                        peer.supported = e;
                        self.stats.supported_received += 1;
                        self.ask_push_proxy(conn);
                    }
                    Err(e) => {
                        tracing::debug!(conn = conn.0, error = %e, "bad Messages-Supported");
                        self.stats.malformed += 1;
                    }
                },
                crate::wire::VendorMsg::CAPABILITIES => match m.capability_entries() {
                    Ok(c) => {
                        peer.capabilities = c;
                        self.stats.supported_received += 1;
                    }
                    Err(e) => {
                        tracing::debug!(conn = conn.0, error = %e, "bad Capabilities");
                        self.stats.malformed += 1;
                    }
                },
                other => tracing::trace!(
                    conn = conn.0,
                    vendor = "null",
                    selector = other,
                    version = m.version,
                    "ignored a vendor message"
                ),
            }
            return;
        }
        if m.is(b"LIME", 22) && peer.info.link == Link::ToUltrapeer {
            // Our ultrapeer agreed to be our push proxy: v2 names its address
            // (IPv4 big-endian, port little-endian), v1 only its port.
            let b = &m.body[..];
            let addr = if b.len() >= 6 {
                Some(std::net::SocketAddrV4::new(
                    Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                    u16::from_le_bytes([b[4], b[5]]),
                ))
            } else if b.len() >= 2 {
                let ip = peer
                    .info
                    .remote_listen
                    .map_or(peer.info.remote.ip(), |a| a.ip());
                Some(std::net::SocketAddrV4::new(
                    ipv4_of(ip),
                    u16::from_le_bytes([b[0], b[1]]),
                ))
            } else {
                None
            };
            match addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified()) {
                Some(a) => {
                    if peer.proxy.is_none() {
                        self.stats.push_proxies += 1;
                    }
                    tracing::debug!(conn = conn.0, proxy = %a, "push proxy acknowledged");
                    peer.proxy = Some(a);
                }
                None => self.stats.malformed += 1,
            }
            return;
        }
        if m.is(b"BEAR", 7) {
            // TCP connect-back: the peer wants to know whether it can be reached
            // at its address and this port; once per link.
            if m.body.len() >= 2 && !peer.connected_back {
                let port = u16::from_le_bytes([m.body[0], m.body[1]]);
                peer.connected_back = true;
                if port != 0 {
                    let to = SocketAddr::new(peer.info.remote.ip(), port);
                    self.stats.connect_backs += 1;
                    self.links.connect_back(to);
                }
            }
            return;
        }
        if m.is(b"LIME", 21) && role == Role::Ultrapeer && peer.info.link == Link::ToLeaf {
            // A firewalled leaf asks us to be its push proxy; the message id is
            // its servent GUID. Pushes for that GUID now go to it, and the ack
            // (LIME/22v2) gives the address it should list: IPv4 BE, port LE.
            peer.info.guid = Some(id);
            let mut body = Vec::with_capacity(6);
            body.extend_from_slice(&ipv4_of(peer.info.local.ip()).octets());
            body.extend_from_slice(&peer.info.local.port().to_le_bytes());
            let ack = Message::Vendor(crate::wire::VendorMsg {
                vendor: *b"LIME",
                selector: 22,
                version: 2,
                body: bytes::Bytes::from(body),
            });
            let mut out = BytesMut::new();
            if ack.encode_frame(id, Ttl(1), Hops(0), &mut out).is_ok() {
                self.links.send(peer.conn, Priority::Own, out.freeze());
                self.stats.push_proxied += 1;
            }
            return;
        }
        if !OfferChunk::is_offer(&m) || role != Role::Ultrapeer || peer.info.link != Link::ToLeaf {
            tracing::trace!(
                conn = conn.0,
                vendor = %String::from_utf8_lossy(&m.vendor).escape_debug(),
                selector = m.selector,
                version = m.version,
                "ignored a vendor message"
            );
            return;
        }
        let chunk = match OfferChunk::parse(&m.body) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "bad library offer");
                self.stats.malformed += 1;
                peer.offered = None;
                return;
            }
        };
        if chunk.first {
            peer.offered = Some((Library::new(), false));
            peer.offered_firewalled = chunk.firewalled;
            peer.offered_bytes = 0;
        }
        let Some((lib, complete)) = peer.offered.as_mut() else {
            return;
        };
        for f in chunk.files {
            peer.offered_bytes += f.name.len();
            if lib.len() >= Self::MAX_OFFERED || peer.offered_bytes > Self::MAX_OFFERED_BYTES {
                // Too many to answer for: the leaf stays reachable through QRP.
                peer.offered = None;
                return;
            }
            lib.add_at(f.index, &f.name, f.size, f.sha1);
        }
        if chunk.last {
            *complete = true;
            self.stats.offers_received += 1;
        }
    }

    /// Answers a query for every leaf whose offered files match it: a hit naming
    /// the leaf, with us as its push proxy.
    fn answer_for_leaves(&mut self, conn: ConnId, h: &Header, q: &QueryView<'_>) {
        let Some(local) = self.peers.get(&conn).map(|p| p.info.local) else {
            return;
        };
        let text = String::from_utf8_lossy(q.text);
        let urns: Vec<Sha1Urn> = q.ext.sha1_urns().collect();
        let mut hits = Vec::new();
        for (c, p) in &self.peers {
            if *c == conn || !answers_for(p) {
                continue;
            }
            let (Some((lib, _)), Some(guid), Some(addr)) =
                (&p.offered, p.info.guid, p.info.remote_listen)
            else {
                continue;
            };
            let found: Vec<HitResult> = lib
                .search(&text, &urns, self.max_results)
                .into_iter()
                .map(|f| HitResult::new(f.index, f.size, &f.name, f.sha1.as_ref()))
                .collect();
            if !found.is_empty() {
                hits.push((guid, addr, p.offered_firewalled, found));
            }
        }
        let mut proxy = Vec::with_capacity(6);
        proxy.extend_from_slice(&ipv4_of(local.ip()).octets());
        proxy.extend_from_slice(&local.port().to_le_bytes());
        for (guid, addr, firewalled, found) in hits {
            for chunk in found.chunks(RESULTS_PER_HIT) {
                let ggep =
                    crate::wire::Ggep::new(vec![crate::wire::GgepExt::new("PUSH", proxy.clone())]);
                let hit = Message::QueryHit(QueryHit {
                    port: addr.port(),
                    ip: ipv4_of(addr.ip()),
                    speed: 0,
                    results: chunk.to_vec(),
                    // What the leaf told us: whether it needs a Push. Whether its
                    // upload slots are free we do not know, so that flag is unset.
                    trailer: TrailerArea::Qhd(Trailer::new(
                        VENDOR,
                        OpenDataFlags {
                            push: Some(firewalled),
                            ..OpenDataFlags::default()
                        },
                        Some(ggep),
                    )),
                    servent: guid,
                });
                // Sent as if relayed from the leaf (hops 1): a LimeWire leaf drops
                // a hit that arrives with hops 0 naming a public address other
                // than its neighbour's.
                self.reply_hops(conn, h, &hit, Priority::Result, Hops(1));
                self.stats.hits_for_leaves += 1;
            }
        }
    }

    /// Forwards a Push to the leaf it is for, if it is ours; false otherwise.
    fn push_to_leaf(&mut self, from: ConnId, target: Guid, frame: &Frame) -> bool {
        let Some(peer) = self
            .peers
            .iter()
            .find(|(c, p)| {
                **c != from && p.info.link == Link::ToLeaf && p.info.guid == Some(target)
            })
            .map(|(_, p)| p)
        else {
            return false;
        };
        if Message::validate(Function::Push, &frame.payload).is_err() {
            self.stats.malformed += 1;
            return true;
        }
        let bytes = reencode(
            frame,
            frame.header.ttl.0.saturating_sub(1).max(1),
            frame.header.hops.0.saturating_add(1),
        );
        self.links.send(peer.conn, Priority::Result, bytes);
        self.stats.relayed.pushes += 1;
        true
    }

    /// Starts a dynamic query for a leaf's query; false when the planner is full
    /// (the query is then flooded).
    fn start_dq(
        &mut self,
        from: ConnId,
        frame: &Frame,
        f: &Forward,
        k: &QueryKeys,
        now: Instant,
    ) -> bool {
        let links = candidates(&self.peers, Some(k));
        // The leaf's TTL (clamped by the router) caps how far we go.
        let Some(probes) = self
            .dq
            .start(frame.header.guid, from, f.ttl + 1, &links, now)
        else {
            return false;
        };
        self.stats.dynamic_queries += 1;
        self.dq_frames.insert(frame.header.guid, frame.clone());
        for p in probes {
            self.dq_send(frame, p, f.hops);
        }
        true
    }

    fn dq_send(&mut self, frame: &Frame, s: dq::Send, hops: u8) {
        let Some(peer) = self.peers.get(&s.conn) else {
            return;
        };
        let bytes = reencode(frame, s.ttl, hops);
        self.stats.relayed.queries += 1;
        if !matches!(
            self.links.send(peer.conn, Priority::RelayedSearch, bytes),
            crate::core::flow::Offer::Queued
        ) {
            self.stats.shed += 1;
        }
    }

    /// Widens the dynamic queries that are due.
    fn dq_steps(&mut self, now: Instant) {
        if self.dq.is_empty() {
            self.dq_frames.clear();
            return;
        }
        let (peers, frames) = (&self.peers, &self.dq_frames);
        let steps = self.dq.step(now, |id| {
            let keys = frames
                .get(id)
                .and_then(|f| QueryView::parse(&f.payload).ok())
                .map(|q| QueryKeys::of(&q));
            candidates(peers, keys.as_ref())
        });
        for (id, s) in steps {
            if let Some(frame) = self.dq_frames.get(&id).cloned() {
                let hops = frame.header.hops.0.saturating_add(1);
                self.dq_send(&frame, s, hops);
            }
        }
        let dq = &self.dq;
        self.dq_frames.retain(|id, _| dq.contains(id));
    }

    fn send(&mut self, f: Forward, priority: Priority, frame: &Frame, keys: Option<&QueryKeys>) {
        let function = frame.header.function;
        // A leaf relays nothing: it originates queries and answers them.
        if self.tier.role() == Role::Leaf && matches!(function, Function::Query | Function::Ping) {
            return;
        }
        let bytes = reencode(frame, f.ttl, f.hops);
        let (mut sent, mut shed, mut last_hop_misses) = (0u64, 0u64, 0u64);
        let last_hop = f.ttl == 1;
        let mut deliver = |p: &Peer| {
            if matches!(function, Function::Query | Function::Ping) {
                match p.info.link {
                    // Never relay to an ultrapeer that took us as its leaf; leaves
                    // get queries through `send_to_leaves` only, and no pings.
                    Link::ToUltrapeer | Link::ToLeaf => return,
                    // The last-hop rule: on its last hop a query goes only to
                    // ultrapeers whose table matches.
                    Link::Peer if last_hop && keys.and_then(|k| p.matches(k)) == Some(false) => {
                        last_hop_misses += 1;
                        return;
                    }
                    Link::Peer | Link::Flat => {}
                }
            }
            sent += 1;
            if !matches!(
                self.links.send(p.conn, priority, bytes.clone()),
                crate::core::flow::Offer::Queued
            ) {
                shed += 1;
            }
        };
        match f.to {
            Targets::One(c) => self.peers.get(&c).into_iter().for_each(&mut deliver),
            Targets::All => self.peers.values().for_each(&mut deliver),
            Targets::AllExcept(except) => self
                .peers
                .iter()
                .filter(|(c, _)| **c != except)
                .for_each(|(_, p)| deliver(p)),
        }
        self.stats.shed += shed;
        self.stats.last_hop_misses += last_hop_misses;
        let counter = match frame.header.function {
            Function::Ping => &mut self.stats.relayed.pings,
            Function::Pong => &mut self.stats.relayed.pongs,
            Function::Query => &mut self.stats.relayed.queries,
            Function::QueryHit => &mut self.stats.relayed.query_hits,
            _ => &mut self.stats.relayed.pushes,
        };
        *counter += sent;
    }

    /// Sends a query to every leaf (but the one it came from) whose table
    /// matches: with the TTL it goes on with, or 1 where it ends here.
    fn send_to_leaves(
        &mut self,
        from: ConnId,
        frame: &Frame,
        forward: Option<&Forward>,
        k: &QueryKeys,
    ) {
        let (ttl, hops) = match forward {
            Some(f) => (f.ttl.max(1), f.hops),
            None => (1, frame.header.hops.0.saturating_add(1)),
        };
        let mut bytes = None;
        let (mut sent, mut shed, mut misses) = (0u64, 0u64, 0u64);
        for (c, p) in &self.peers {
            if *c == from || p.info.link != Link::ToLeaf || answers_for(p) {
                continue;
            }
            if p.matches(k) != Some(true) {
                misses += 1;
                continue;
            }
            let b = bytes.get_or_insert_with(|| reencode(frame, ttl, hops));
            sent += 1;
            if !matches!(
                self.links.send(p.conn, Priority::RelayedSearch, b.clone()),
                crate::core::flow::Offer::Queued
            ) {
                shed += 1;
            }
        }
        self.stats.relayed.queries += sent;
        self.stats.shed += shed;
        self.stats.leaf_table_misses += misses;
    }

    /// A RESET or PATCH from a peer whose table we keep (our leaves, and
    /// ultrapeers that speak inter-ultrapeer QRP); ignored from others. A broken
    /// sequence closes the link: nothing after it could be trusted.
    fn route_table(&mut self, conn: ConnId, payload: &bytes::Bytes, _now: Instant) {
        let role = self.tier.role();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let keeps = role == Role::Ultrapeer
            && (peer.info.link == Link::ToLeaf
                || (peer.info.link == Link::Peer && peer.info.up_qrp));
        if !keeps {
            return;
        }
        let leaf = peer.info.link == Link::ToLeaf;
        let result = match RouteTableUpdate::parse(payload) {
            Err(e) => Err(e.to_string()),
            // A table larger than any servent sends costs its decoding and every
            // merge into ours: refused (LimeWire and gtk-gnutella leaves send
            // 2^14 to 2^16 slots, ultrapeers up to 2^20).
            Ok(RouteTableUpdate::Reset { table_len, .. })
                if table_len as usize > if leaf { MAX_LEAF_TABLE } else { MAX_PEER_TABLE } =>
            {
                Err(format!("QRP table of {table_len} slots is too large"))
            }
            // A new table every few seconds is a storm: each one is decoded and
            // merged again.
            Ok(RouteTableUpdate::Reset { .. }) if !peer.resets.allow(_now) => {
                Err("QRP tables reset too often".to_string())
            }
            Ok(RouteTableUpdate::Reset { table_len, .. }) => {
                match QrpTable::new(table_len as usize) {
                    Ok(table) => {
                        peer.table = Some(RemoteTable {
                            decoder: PatchDecoder::new(table_len as usize),
                            table,
                            complete: false,
                        });
                        Ok(false)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            }) => match peer.table.as_mut() {
                None => Err("PATCH before RESET".to_string()),
                Some(t) => t
                    .decoder
                    .feed_into(
                        seq_no,
                        seq_size,
                        compressor,
                        entry_bits,
                        &data,
                        &mut t.table,
                    )
                    .map(|progress| {
                        let done = matches!(progress, qrp::Progress::Complete { .. });
                        t.complete |= done;
                        done
                    })
                    .map_err(|e| e.to_string()),
            },
        };
        // A leaf's table with most slots present would make it match almost
        // every query (gtk-gnutella and LimeWire refuse such "full" tables too).
        let result = match result {
            Ok(true) if leaf => match peer.table.as_ref() {
                Some(t)
                    if t.table.present_count() as f64
                        > self.max_table_fill * t.table.slot_count() as f64 =>
                {
                    Err(format!(
                        "QRP table {:.0}% full",
                        100.0 * t.table.present_count() as f64 / t.table.slot_count() as f64
                    ))
                }
                _ => Ok(true),
            },
            other => other,
        };
        match result {
            Ok(true) => {
                self.stats.tables_received += 1;
                if peer.info.link == Link::ToLeaf {
                    self.table_dirty = true;
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "bad route table update");
                self.stats.table_errors += 1;
                peer.table = None;
                peer.closing = true;
                self.links.close(
                    peer.conn,
                    bye::CODE_BAD_QUERIES,
                    &format!("Bad route table update: {e}"),
                );
            }
        }
    }

    /// Our table: our files' keywords and URNs, and as an ultrapeer every
    /// leaf's table.
    fn build_table(&self) -> QrpTable {
        let mut t = QrpTable::new(TABLE_LEN).expect("a valid table length");
        for f in self.library.files() {
            t.insert_text(&f.name);
            if let Some(u) = &f.sha1 {
                t.insert_keyword(&urn_keyword(u));
            }
        }
        if self.tier.role() == Role::Ultrapeer {
            for p in self.peers.values() {
                if let (Link::ToLeaf, Some(r)) = (p.info.link, &p.table) {
                    t.merge(&r.table);
                }
            }
        }
        t
    }

    /// Sends our table, or what changed in it, to every peer that takes it;
    /// and as a leaf, our file list to ultrapeers that take offers.
    fn send_tables(&mut self) {
        let role = self.tier.role();
        if role == Role::Leaf {
            self.send_offers();
        }
        let needs = |p: &Peer| p.wants_table(role);
        if !self.peers.values().any(needs) {
            return;
        }
        if self.table_dirty || self.table.is_none() {
            self.table = Some(self.build_table());
            self.table_dirty = false;
        }
        let table = self.table.as_ref().expect("just built");
        // The whole table (RESET, then a patch from empty) is the same for every
        // new link: built once, when the first one needs it.
        let mut whole: Option<Option<bytes::Bytes>> = None;
        let (mut sent_count, mut retried) = (0, 0);
        for p in self.peers.values_mut().filter(|p| p.wants_table(role)) {
            let bytes = match &p.sent {
                Some(old) if old == table => continue,
                Some(old) => table_update(table, old, false, &mut self.rng),
                None => whole
                    .get_or_insert_with(|| {
                        let empty = QrpTable::new(TABLE_LEN).expect("a valid table length");
                        table_update(table, &empty, true, &mut self.rng)
                    })
                    .clone(),
            };
            let Some(bytes) = bytes else { continue };
            // Sent as one piece in the queue's room for control messages, which
            // is never shed, so the sequence cannot be cut. Refused (that room is
            // full: the peer reads slowly), it is not recorded as sent, and the
            // next tick offers the difference again.
            match self.links.send(p.conn, Priority::Control, bytes) {
                crate::core::flow::Offer::Rejected => retried += 1,
                _ => {
                    p.sent = Some(table.clone());
                    sent_count += 1;
                }
            }
        }
        self.stats.tables_sent += sent_count;
        self.stats.control_retries += retried;
    }

    /// Offers our whole library to every ultrapeer that takes offers and has not
    /// had this version of it.
    fn send_offers(&mut self) {
        if !self.tier.config().offer_library {
            return;
        }
        let version = self.library_version;
        let wanting = |p: &Peer| {
            p.info.link == Link::ToUltrapeer && p.info.offers && p.offered_version != Some(version)
        };
        if !self.peers.values().any(wanting) {
            return;
        }
        // A library larger than an ultrapeer takes (ours take 10,000 files and
        // 1 MiB of names) is not offered: it is found through our table alone.
        let name_bytes: usize = self.library.files().map(|f| f.name.len()).sum();
        if self.library.len() > Self::MAX_OFFERED || name_bytes > Self::MAX_OFFERED_BYTES {
            for p in self.peers.values_mut().filter(|p| wanting(p)) {
                p.offered_version = Some(version);
            }
            return;
        }
        let files: Vec<OfferedFile> = self
            .library
            .files()
            .map(|f| OfferedFile {
                index: f.index,
                size: f.size,
                sha1: f.sha1,
                name: f.name.clone(),
            })
            .collect();
        let mut out = BytesMut::new();
        for m in OfferChunk::encode_all(&files, self.firewalled) {
            let _ = Message::Vendor(m).encode_frame(self.rng.guid(), Ttl(1), Hops(0), &mut out);
        }
        let bytes = out.freeze();
        let (mut sent, mut retried) = (0, 0);
        for p in self.peers.values_mut().filter(|p| wanting(p)) {
            // As for tables: never shed, and offered again while refused.
            match self.links.send(p.conn, Priority::Control, bytes.clone()) {
                crate::core::flow::Offer::Rejected => retried += 1,
                _ => {
                    p.offered_version = Some(version);
                    sent += 1;
                }
            }
        }
        self.stats.offers_sent += sent;
        self.stats.control_retries += retried;
    }

    /// The TTL for a reply to a request that travelled `hops` hops: enough to get
    /// back, with some slack, never above the hard limit.
    fn reply_ttl(hops: Hops) -> Ttl {
        Ttl(hops.0.saturating_add(3).min(15))
    }

    fn reply(&mut self, to: ConnId, request: &Header, msg: &Message, priority: Priority) {
        self.reply_hops(to, request, msg, priority, Hops(0));
    }

    /// A reply that says it has travelled `hops` already.
    fn reply_hops(
        &mut self,
        to: ConnId,
        request: &Header,
        msg: &Message,
        priority: Priority,
        hops: Hops,
    ) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let mut out = BytesMut::new();
        if msg
            .encode_frame(request.guid, Self::reply_ttl(request.hops), hops, &mut out)
            .is_ok()
            && !matches!(
                self.links.send(peer.conn, priority, out.freeze()),
                crate::core::flow::Offer::Queued
            )
        {
            self.stats.shed += 1;
        }
    }

    /// Sends a TTL-2 Ping to one neighbour: it answers with its own Pong and the
    /// Pongs it has cached.
    fn ping(&mut self, conn: ConnId, now: Instant) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        let id = self.rng.guid();
        if let Decision::Accept {
            forward: Some(f), ..
        } = self.router.originate(id, Class::Discovery, 2, now)
        {
            let mut out = BytesMut::new();
            Message::Ping(Ping::default())
                .encode_frame(id, Ttl(f.ttl), Hops(0), &mut out)
                .expect("an empty ping encodes");
            self.links.send(peer.conn, Priority::Own, out.freeze());
        }
    }

    fn answer_ping(&mut self, conn: ConnId, h: &Header, now: Instant) {
        // Hosts we know of, from the cache, as they came (one hop further now).
        for (payload, hops) in self.pongs.answers(now, h.ttl.0, conn) {
            let frame = Frame {
                header: Header {
                    guid: h.guid,
                    function: Function::Pong,
                    ttl: Self::reply_ttl(h.hops),
                    hops: Hops(hops.saturating_add(1)),
                    payload_len: payload.len() as u32,
                },
                payload,
            };
            let mut out = BytesMut::with_capacity(frame.wire_len());
            frame.encode(&mut out);
            if let Some(peer) = self.peers.get(&conn) {
                self.links.send(peer.conn, Priority::Own, out.freeze());
            }
        }
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        let pong = Message::Pong(Pong {
            port: peer.info.local.port(),
            ip: ipv4_of(peer.info.local.ip()),
            files: self.library.len() as u32,
            kbytes: (self.library.total_size() / 1024).min(u32::MAX as u64) as u32,
            ggep: None,
        });
        self.reply(conn, h, &pong, Priority::Own);
    }

    /// Whether `addr` is ours: the address some peer reaches us at.
    fn is_me(&self, addr: SocketAddr) -> bool {
        self.peers.values().any(|p| p.info.local == addr)
    }

    /// Tells a new peer that reads vendor messages which ones we handle, and
    /// what we can do.
    fn send_supported(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        if !peer.info.vendor_messages {
            return;
        }
        use crate::wire::vendor::Capability;
        let caps = [
            Capability {
                name: *b"QRP1",
                version: 1,
            },
            // Whether we took an incoming connection (we are reachable).
            Capability {
                name: *b"TCPI",
                version: u32::from(!self.firewalled && self.inbound_seen),
            },
        ];
        let mut out = BytesMut::new();
        for m in [
            crate::wire::VendorMsg::messages_supported(&OUR_SUPPORTED),
            crate::wire::VendorMsg::capabilities(&caps),
        ] {
            let _ = Message::Vendor(m).encode_frame(self.rng.guid(), Ttl(1), Hops(0), &mut out);
        }
        self.links.send(peer.conn, Priority::Own, out.freeze());
    }

    /// As a firewalled leaf, asks an ultrapeer that supports it to be our push
    /// proxy (LIME/21v1, whose MUID is our servent GUID).
    fn ask_push_proxy(&mut self, conn: ConnId) {
        let me = self.me;
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if !self.firewalled
            || peer.info.link != Link::ToUltrapeer
            || peer.asked_proxy
            || !peer.supports(b"LIME", 21)
        {
            return;
        }
        peer.asked_proxy = true;
        let m = Message::Vendor(crate::wire::VendorMsg {
            vendor: *b"LIME",
            selector: 21,
            version: 1,
            body: bytes::Bytes::new(),
        });
        let mut out = BytesMut::new();
        if m.encode_frame(me, Ttl(1), Hops(0), &mut out).is_ok() {
            self.links.send(peer.conn, Priority::Own, out.freeze());
        }
    }

    /// GGEP `PUSH` naming our push proxies, if we have any.
    fn push_proxies(&self) -> Option<crate::wire::Ggep> {
        let mut value = Vec::new();
        for a in self
            .peers
            .values()
            .filter_map(|p| p.proxy)
            .take(MAX_PUSH_PROXIES)
        {
            value.extend_from_slice(&a.ip().octets());
            value.extend_from_slice(&a.port().to_le_bytes());
        }
        (!value.is_empty())
            .then(|| crate::wire::Ggep::new(vec![crate::wire::GgepExt::new("PUSH", value)]))
    }

    fn answer_query(&mut self, conn: ConnId, h: &Header, q: &QueryView<'_>) {
        let text = String::from_utf8_lossy(q.text);
        let urns: Vec<Sha1Urn> = q.ext.sha1_urns().collect();
        let found: Vec<HitResult> = self
            .library
            .search(&text, &urns, self.max_results)
            .into_iter()
            .map(|f| HitResult::new(f.index, f.size, &f.name, f.sha1.as_ref()))
            .collect();
        if found.is_empty() {
            return;
        }
        let Some(local) = self.peers.get(&conn).map(|p| p.info.local) else {
            return;
        };
        let flags = OpenDataFlags {
            push: Some(self.firewalled),
            busy: Some(self.links.uploads_busy()),
            ..OpenDataFlags::default()
        };
        // Behind a firewall, the ultrapeers that agreed to be our push proxies
        // are listed (GGEP `PUSH`), so a downloader can reach us through them.
        let ggep = self.firewalled.then(|| self.push_proxies()).flatten();
        for chunk in found.chunks(RESULTS_PER_HIT) {
            let hit = Message::QueryHit(QueryHit {
                port: local.port(),
                ip: ipv4_of(local.ip()),
                speed: 0,
                results: chunk.to_vec(),
                trailer: TrailerArea::Qhd(Trailer::new(VENDOR, flags, ggep.clone())),
                servent: self.me,
            });
            self.reply(conn, h, &hit, Priority::Result);
            self.stats.hits_sent += 1;
        }
    }
}

/// A leaf's query with its out-of-band request removed (the 0x0400 flag that
/// gtk-gnutella reads, and GGEP `SO` that LimeWire reads), or `None` when it
/// asks for none.
fn strip_oob(payload: &bytes::Bytes) -> Option<bytes::Bytes> {
    use crate::wire::ext::ExtItem;
    use crate::wire::query::{Query, QueryFlags};
    let flags = QueryFlags([*payload.first()?, *payload.get(1)?]);
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    let mut q = Query::parse(payload, &mut budget).ok()?;
    let so = |g: &crate::wire::Ggep| g.exts.iter().any(|e| e.id.as_bytes() == b"SO");
    let has_so = q
        .ext
        .items
        .iter()
        .any(|i| matches!(i, ExtItem::Ggep(g) if so(g)));
    if !flags.has(QueryFlags::OOB) && !has_so {
        return None;
    }
    q.flags = QueryFlags((flags.bits() & !QueryFlags::OOB).to_be_bytes());
    for item in &mut q.ext.items {
        if let ExtItem::Ggep(g) = item {
            g.exts.retain(|e| e.id.as_bytes() != b"SO");
        }
    }
    q.ext
        .items
        .retain(|i| !matches!(i, ExtItem::Ggep(g) if g.exts.is_empty()));
    let mut out = BytesMut::with_capacity(payload.len());
    if q.encode(&mut out).is_ok() {
        return Some(out.freeze());
    }
    // Cannot be written back as parsed: at least the flag goes.
    let mut raw = payload.to_vec();
    raw[0] &= !((QueryFlags::OOB >> 8) as u8);
    Some(bytes::Bytes::from(raw))
}

/// The frames that turn a peer's copy of our table from `old` into `table`: a
/// RESET first when `reset`, then the PATCH sequence (4-bit, zlib when smaller).
fn table_update(
    table: &QrpTable,
    old: &QrpTable,
    reset: bool,
    rng: &mut Rng,
) -> Option<bytes::Bytes> {
    let chunks = table
        .diff(old, qrp::DEFAULT_INFINITY)
        .and_then(|d| qrp::build_patch_chunks(&d, 4, true, PATCH_CHUNK))
        .ok()?;
    let mut out = BytesMut::new();
    if reset {
        let m = Message::RouteTable(RouteTableUpdate::Reset {
            table_len: TABLE_LEN as u32,
            infinity: qrp::DEFAULT_INFINITY,
        });
        m.encode_frame(rng.guid(), Ttl(1), Hops(0), &mut out).ok()?;
    }
    for c in chunks {
        Message::RouteTable(c.into())
            .encode_frame(rng.guid(), Ttl(1), Hops(0), &mut out)
            .ok()?;
    }
    Some(out.freeze())
}

/// A frame's bytes with new TTL and hops.
fn reencode(frame: &Frame, ttl: u8, hops: u8) -> bytes::Bytes {
    let mut out = BytesMut::with_capacity(frame.wire_len());
    Frame {
        header: Header {
            ttl: Ttl(ttl),
            hops: Hops(hops),
            ..frame.header
        },
        payload: frame.payload.clone(),
    }
    .encode(&mut out);
    out.freeze()
}

fn ipv4_of(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}
