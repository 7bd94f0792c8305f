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
use crate::fasttrack::hash::Fth;
use crate::wire::Push;
use crate::wire::bye;
use crate::wire::huge::Sha1Urn;
use crate::wire::library_offer::{OfferChunk, OfferedFile};
use crate::wire::qrp::{self, PatchDecoder, QrpTable};
use crate::wire::query::QueryView;
use crate::wire::queryhit::OpenDataFlags;
use crate::wire::{
    Frame, Function, Guid, HEADER_LEN, Header, HitResult, Hops, Message, Ping, Pong, QueryHit,
    RouteTableUpdate, Trailer, TrailerArea, Ttl,
};

mod dynamic;
mod guess;
mod guidance;
mod hsep;
mod ipv6;
mod offers;
mod oob;
mod reach;
mod routing;
mod tables;
mod udp;
mod uhc;

pub use guess::GuessStats;
use offers::*;
use routing::*;
use tables::*;
pub use tables::{TableDone, TableJob};
pub use udp::UdpStats;
pub use uhc::CacheMode;

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
    /// Runs `job` (QRP decoding, which costs time in proportion to the table):
    /// here, returning its outcome, or elsewhere (a blocking task), the outcome
    /// coming back later as [`Event::TablesDecoded`].
    fn decode_tables(&mut self, job: TableJob) -> Option<TableDone> {
        Some(job.run())
    }
    /// A QueryHit answering a query we started ([`Engine::search`]): `guid`
    /// is the query's, `payload` the hit's, validated.
    fn own_hit(&mut self, guid: Guid, payload: Bytes) {
        let _ = (guid, payload);
    }
    /// Sends one datagram from the Gnutella UDP port to `to`; false when it
    /// cannot (no UDP socket, or its queue is full: the datagram is lost,
    /// as datagrams may be).
    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) -> bool {
        let _ = (to, bytes);
        false
    }
    /// A host cache's answer brought hosts to dial: the shell may dial now
    /// rather than at its next round.
    fn hosts_learned(&mut self) {}
    /// Whether the node has a UDP port (datagrams can be sent and received).
    fn udp_open(&self) -> bool {
        false
    }
}

/// What the core knows of one link, for the control API.
#[derive(Clone, Debug)]
pub struct LinkReport {
    pub conn: ConnId,
    pub info: LinkInfo,
    /// Messages from it dropped, by reason (router reasons, `malformed`,
    /// `unknown-function`, `over-budget-<kind>`).
    pub drops: std::collections::BTreeMap<&'static str, u64>,
}

/// Our vendor code in QueryHit trailers.
pub const VENDOR: [u8; 4] = *b"SRVT";
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
    /// The peer exchanges HSEP (`HSEP/0.2` in its `X-Features`).
    pub hsep: bool,
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
        /// Its FastTrack hash, when known (from the hash cache).
        fth: Option<Fth>,
    },
    /// A file left the shares, or changed.
    Removed {
        path: PathBuf,
    },
    /// A shared file's hashes have been computed (for the size it had then).
    Hashed {
        path: PathBuf,
        size: u64,
        urn: Sha1Urn,
        fth: Fth,
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
    /// A [`TableJob`] handed to [`Links::decode_tables`] is over.
    TablesDecoded(TableDone),
    /// A datagram read on the Gnutella UDP port, as it came.
    Datagram {
        from: SocketAddr,
        bytes: Bytes,
    },
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
    /// Library offers refused as too large (for the leaf, or for every leaf's
    /// together); such leaves are reached through their tables.
    pub offers_refused: u64,
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
    /// order of `core::budget::Kind`), and links closed for staying over.
    pub over_budget: [u64; 7],
    pub closed_over_budget: u64,
    /// Hosts in the host cache.
    pub hosts: usize,
    /// Inbound sockets closed at once: their address had too many open.
    pub per_ip_refused: u64,
    /// Second links to one servent (by GUID, often its other address family)
    /// closed when both opened at once.
    pub duplicates_closed: u64,
    /// HSEP messages taken, sent, and dropped (malformed ones count as
    /// `malformed`).
    pub hsep_received: u64,
    pub hsep_sent: u64,
    pub hsep_dropped: u64,
    /// Leaf-guided dynamic querying: status requests (BEAR/11) we sent our
    /// leaves and answers (BEAR/12) taken from them; requests from our
    /// ultrapeers we answered; and either dropped (from the wrong kind of
    /// link, or for no search of that link's).
    pub guidance_asked: u64,
    pub guidance_received: u64,
    pub guidance_answered: u64,
    pub guidance_dropped: u64,
    /// What our HSEP links reach within 1, 2, ... 10 hops (ourselves not
    /// counted).
    pub horizon: [crate::wire::hsep::Triple; crate::wire::hsep::MAX_TRIPLES],
    /// The UDP port's counters.
    pub udp: UdpStats,
    /// UDP host caches: ours as a client, and the pings we answered as one.
    pub uhc: crate::core::uhc::UhcStats,
    /// Out-of-band hits, as responder, querier and proxy.
    pub oob: crate::core::oob::OobStats,
    /// Reachability: verdicts, our address, connect-backs asked and answered.
    pub reach: crate::core::reach::ReachStats,
    /// GUESS, as server and client.
    pub guess: GuessStats,
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
    table: Option<QrpTable>,
    /// Its table updates being decoded.
    decoding: Decoding,
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
    proxy: Option<SocketAddr>,
    /// We asked it to be our push proxy (LIME/21 sent).
    asked_proxy: bool,
    /// A connect-back it asked for was passed on (one per link).
    connected_back: bool,
    /// Pongs taken from it in the current ping interval, and when that began.
    pongs_taken: u32,
    pongs_since: Instant,
    /// What it may still send.
    budget: Budget,
    /// We are closing it: what else it sent is not read.
    closing: bool,
    /// As our leaf: its table at our table's size, counted in `leaf_slots`.
    leaf_part: Option<QrpTable>,
    /// Messages from it dropped, by reason (a fixed set of names).
    drops: std::collections::BTreeMap<&'static str, u64>,
    /// Connect-backs and address pings exchanged with it.
    reach: reach::LinkReach,
}

impl Peer {
    /// Whether it said it supports `vendor/selector` (any version).
    fn supports(&self, vendor: &[u8; 4], selector: u16) -> bool {
        self.supported
            .iter()
            .any(|e| &e.vendor == vendor && e.selector == selector)
    }
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
    fn matches(&self, k: &QueryKeys<'_>) -> Option<bool> {
        let t = self.table.as_ref()?;
        Some(k.hit(t))
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
    /// Which hosts count as peers: in `Internet`, only routable ones prove
    /// that we are reachable or tell our address.
    pub scope: crate::core::addr::Scope,
    /// How long reachability evidence stays fresh, and how long a round of
    /// connect-back requests waits.
    pub reach: crate::core::reach::ReachTimers,
    /// GUESS, as server and client.
    pub guess: crate::core::guess::GuessConfig,
}

impl Config {
    /// A core for `me` sharing `library` in the role `tier` decides, with the
    /// node's defaults for the rest: a router with its default limits, 100
    /// results per query, a host cache of 2,000, the default dynamic queries,
    /// budgets and table fill, not firewalled, seeded from `me`. Change what
    /// differs with struct update syntax.
    pub fn new(me: Guid, library: Library, tier: Tier) -> Config {
        Config {
            me,
            router: Router::new(me, crate::core::router::RouterConfig::default()),
            library,
            max_results: 100,
            hosts: HostCache::new(2000),
            tier,
            dq: DqConfig::default(),
            firewalled: false,
            budgets: Budgets::default(),
            max_table_fill: DEFAULT_MAX_TABLE_FILL,
            seed: u64::from_le_bytes(me.0[..8].try_into().expect("8 bytes")),
            scope: crate::core::addr::Scope::Local,
            reach: Default::default(),
            guess: Default::default(),
        }
    }
}

/// The core: the router, the library, the host and pong caches, the role
/// policy, dynamic queries, and every link's state.
pub struct Engine<L: Links> {
    me: Guid,
    router: Router,
    library: Library,
    /// Files answered for that are not on our disk (FastTrack users' files,
    /// served by proxy).
    extra: Option<std::sync::Arc<dyn crate::core::library::ExtraFiles>>,
    peers: crate::core::ConnMap<Peer>,
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
    /// Searches of our own, with the results they got (for BEAR/11).
    own_searches: HashMap<Guid, guidance::OwnSearch>,
    /// HSEP tables of the links that speak it.
    hsep: crate::core::hsep::Hsep,
    /// Our library's part of our QRP table, kept file by file.
    lib_table: LibraryTable,
    /// Our leaves' part of it, kept leaf by leaf (their tables at our size).
    leaf_slots: LibraryTable,
    /// The wall clock as of the last event that told it (host-cache ages).
    wall: SystemTime,
    /// What each UDP source may still send.
    udp_sources: crate::core::udp::Sources,
    /// UDP host caches, as a client and as one.
    uhc: uhc::UhcState,
    /// Out-of-band hits held, claimed and proxied.
    oob: oob::OobState,
    /// Whether we can be reached, and our external address.
    reach: crate::core::reach::Reach,
    /// Connect-backs we make per IP (TCP, and UDP ping-backs); on a local
    /// mesh per address and port (its nodes share one IP).
    tcp_backs: crate::core::udp::Throttle<SocketAddr>,
    udp_backs: crate::core::udp::Throttle<SocketAddr>,
    /// GUESS: query keys, GUESS hosts, our searches run by GUESS.
    guess: guess::Guess,
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
        let lib_table = LibraryTable::of(&config.library);
        Engine {
            me: config.me,
            router: config.router,
            library: config.library,
            extra: None,
            peers: Default::default(),
            max_results: config.max_results,
            stats: EngineStats::default(),
            hosts: config.hosts,
            pongs: PongCache::new(200, Duration::from_secs(90)),
            last_ping: None,
            tier: config.tier,
            table_dirty: true,
            table: None,
            shed_at_tick: 0,
            dq: Planner::new(config.dq),
            dq_frames: HashMap::new(),
            firewalled: config.firewalled,
            inbound_seen: false,
            budgets: config.budgets,
            max_table_fill: config.max_table_fill.clamp(0.0, 1.0),
            rng: Rng(config.seed),
            hsep: crate::core::hsep::Hsep::new(),
            own_searches: HashMap::new(),
            lib_table,
            leaf_slots: LibraryTable::empty(),
            wall: SystemTime::UNIX_EPOCH,
            udp_sources: crate::core::udp::Sources::new(crate::core::udp::source_rates()),
            uhc: uhc::UhcState::new(),
            oob: oob::OobState::new(config.seed),
            reach: crate::core::reach::Reach::new(config.scope, config.reach),
            tcp_backs: crate::core::udp::Throttle::new(
                reach::CONNECT_BACK_EVERY,
                reach::CONNECT_BACK_IPS,
            ),
            udp_backs: crate::core::udp::Throttle::new(
                reach::CONNECT_BACK_EVERY,
                reach::CONNECT_BACK_IPS,
            ),
            guess: guess::Guess::new(config.guess, config.seed),
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

    /// A link made without a handshake (a simulation's, or a test's): counted
    /// by the role policy as `info.link`, then opened. The shell uses
    /// [`Engine::admit`] or [`Engine::dialed`] and then [`Event::Opened`].
    pub fn open_link(&mut self, conn: ConnId, info: LinkInfo, now: Instant) {
        self.tier.opened(info.link, now);
        self.handle(Event::Opened { conn, info }, now);
    }

    /// Dynamic queries running now.
    pub fn dynamic_running(&self) -> usize {
        self.dq.len()
    }

    /// Decides how to answer a peer that connected to us, and the role headers
    /// to answer with (`full`: the node has no room for another link). An
    /// accepted (or guided) link is counted from now on: the shell reports it
    /// opened, or calls [`Engine::release`].
    pub fn admit(&mut self, peer: PeerRole, full: bool, now: Instant) -> (Admit, RoleHeaders) {
        if !full {
            let knows = self.hosts.knows_ultrapeer();
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
        self.stats.uhc = self.uhc.stats();
        self.stats.reach = self.reach.stats();
        self.stats.hsep_sent = self.hsep.sent;
        self.stats.hsep_received = self.hsep.received;
        self.stats.horizon = self.hsep.horizon();
        self.stats.guess = self.guess.report();
        self.stats.clone()
    }

    /// Every link, with what its handshake said and its drops by reason.
    pub fn link_reports(&self) -> Vec<LinkReport> {
        let mut v: Vec<LinkReport> = self
            .peers
            .values()
            .map(|p| LinkReport {
                conn: p.conn,
                info: p.info.clone(),
                drops: p.drops.clone(),
            })
            .collect();
        v.sort_by_key(|r| r.conn.0);
        v
    }

    /// Our QRP table's fill: slots present (our files' and our leaves'
    /// keywords), and slots in all.
    pub fn table_fill(&self) -> (u64, u64) {
        let present = self
            .lib_table
            .slots()
            .chain(self.leaf_slots.slots())
            .collect::<std::collections::HashSet<u32>>()
            .len();
        (present as u64, tables::TABLE_LEN as u64)
    }

    /// The shared files.
    pub fn library(&self) -> &Library {
        &self.library
    }

    /// Queries are answered for these files too (after our own).
    pub fn set_extra(&mut self, extra: std::sync::Arc<dyn crate::core::library::ExtraFiles>) {
        self.extra = Some(extra);
    }

    /// Starts a query of our own (`query`: an encoded Query payload) with id
    /// `guid`: as a leaf to our ultrapeers, as an ultrapeer to every
    /// ultrapeer or flat neighbour and to the leaves whose table matches. Its
    /// hits come back through [`Links::own_hit`]. Returns the links it went to.
    pub fn search(&mut self, guid: Guid, query: Bytes, ttl: u8, now: Instant) -> usize {
        if crate::wire::query::QueryView::parse(&query).is_err() {
            return 0;
        }
        // IPv6-Ready: say we take IPv6 hosts when we have an IPv6 address.
        let query = self.with_i6(query);
        // Marked for out-of-band hits when we can take them (its MUID then
        // carries our address; its hits still reach `own_hit` under `guid`).
        // GUESS goes on with the query unmarked: its MUIDs name nobody.
        // Leaf guidance counts it under the MUID our ultrapeers see.
        let id = guid;
        let plain = query.clone();
        let (guid, query) = self.oob_mark(guid, query, now);
        let query = self.own_search_started(guid, query, now);
        let Ok(view) = crate::wire::query::QueryView::parse(&query) else {
            return 0;
        };
        let keys = routing::QueryKeys::of(&view);
        let Decision::Accept {
            forward: Some(f), ..
        } = self.router.originate(guid, Class::Search, ttl, now)
        else {
            return 0;
        };
        let frame = Frame {
            header: Header {
                guid,
                function: Function::Query,
                ttl: Ttl(f.ttl),
                hops: Hops(0),
                payload_len: query.len() as u32,
            },
            payload: query.clone(),
        };
        let bytes = routing::reencode(&frame, f.ttl, 0);
        self.guess_watch(id, &plain, now);
        let mut sent = 0;
        for p in self.peers.values() {
            let go = match p.info.link {
                Link::ToUltrapeer | Link::Peer | Link::Flat => true,
                Link::ToLeaf => p.matches(&keys) == Some(true),
            };
            if go {
                self.links.send(p.conn, Priority::Own, bytes.clone());
                sent += 1;
            }
        }
        sent
    }

    /// Takes one event at `now`.
    pub fn handle(&mut self, event: Event, now: Instant) {
        self.reach.set_clock(now);
        match event {
            Event::Opened { conn, mut info } => {
                tracing::debug!(conn = conn.0, remote_listen = ?info.remote_listen, local = %info.local, link = info.link.name(), "connection opened");
                self.stats.opened += 1;
                self.inbound_seen |= info.inbound;
                if info.hsep {
                    self.hsep.opened(conn, info.link == Link::ToLeaf, now);
                }
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
                        decoding: Decoding::default(),
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
                        closing: false,
                        leaf_part: None,
                        drops: Default::default(),
                        reach: Default::default(),
                    },
                );
                self.drop_duplicate(conn);
                if self.peers.get(&conn).is_some_and(|p| p.closing) {
                    return;
                }
                // Ask the new neighbour for itself and the hosts it knows.
                self.ping(conn, now);
                self.send_supported(conn);
                self.reach_opened(conn, now);
            }
            Event::Closed { conn } => {
                tracing::debug!(conn = conn.0, "connection closed");
                self.router.connection_closed(conn);
                self.dq.closed(conn);
                self.oob_closed(conn, now);
                self.hsep.closed(conn);
                self.leaf_part(conn, None);
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
                fth,
            } => {
                self.lib_table.name(&name, 1);
                if let Some(u) = &urn {
                    self.lib_table.urn(u, 1);
                }
                self.library.add_hashed(&name, &path, size, mtime, urn, fth);
                self.library_changed();
            }
            Event::Removed { path } => {
                if let Some(index) = self.library.index_of(&path) {
                    if let Some(f) = self.library.remove(index) {
                        self.lib_table.name(&f.name, -1);
                        if let Some(u) = &f.sha1 {
                            self.lib_table.urn(u, -1);
                        }
                    }
                    self.library_changed();
                }
            }
            Event::Hashed {
                path,
                size,
                urn,
                fth,
            } => {
                // Only if the file is still the one that was hashed.
                let still = self.library.index_of(&path).and_then(|i| {
                    let view = self.library.view();
                    let f = view.get(i).filter(|f| f.size == size)?;
                    Some((i, f.sha1))
                });
                if let Some((i, old)) = still {
                    if old != Some(urn) {
                        if let Some(o) = &old {
                            self.lib_table.urn(o, -1);
                        }
                        self.lib_table.urn(&urn, 1);
                    }
                    self.library.set_sha1(i, urn);
                    self.library.set_fth(i, fth);
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
                self.tier.set_unreachable(self.tcp_firewalled());
                if self.stats.shed > self.shed_at_tick {
                    self.tier.congested(now);
                }
                self.shed_at_tick = self.stats.shed;
                if let Some(change) = self.tier.tick(now, busy) {
                    self.change_role(change);
                }
                self.send_tables();
                self.dq_steps(now);
                self.oob_tick(now);
                self.reach_tick(now);
                self.hsep_tick(now);
                self.guess_tick(now);
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
            Event::Datagram { from, bytes } => self.datagram(from, bytes, now),
            Event::TablesDecoded(done) => self.tables_decoded(done),
            Event::Fault { conn, fault } => {
                tracing::debug!(conn = conn.0, ?fault, "link broke a time limit");
                match fault {
                    Fault::ReadIdle => self.stats.idle_closed += 1,
                    Fault::WriteStall => self.stats.stalled_closed += 1,
                }
            }
        }
    }

    /// Leaves offering no more files than this, with names of no more bytes in
    /// all, are answered for in full.
    const MAX_OFFERED: usize = 10_000;
    const MAX_OFFERED_BYTES: usize = 1 << 20;
    /// Files offered by all leaves together that are kept (each costs a
    /// library entry: about 600 bytes with a 100-byte name).
    const MAX_OFFERED_TOTAL: usize = 50_000;
}

#[cfg(test)]
mod tests;
