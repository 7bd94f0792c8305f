//! The node: the async shell around the deciding core. It accepts and dials
//! connections, runs the handshake, frames descriptors, and feeds them to the
//! engine task, which owns the router and the library.
//!
//! One shutdown path serves `main` and the tests: cancel the token given to
//! [`start`] (or call [`NodeHandle::shutdown`]); every peer gets a Bye 200 and every
//! task ends.

mod bootstrap;
mod bridge;
pub mod browse;
pub mod conn;
pub mod control;
mod deflate;
mod engine;
mod ft_proxy;
pub mod get;
mod guess_search;
pub mod handshake;
pub mod http;
mod http_lane;
mod library_task;
pub mod listen;
pub mod portmap;
pub mod push;
pub mod queue;
pub mod search;
mod sendfile;
mod udp;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::ConnId;
use crate::core::addr::{PerIp, Scope};
pub use crate::core::dq::DqConfig;
use crate::core::hosts::{HostCache, Refusal};
use crate::core::router::{Router, RouterConfig};
use crate::core::tier::{Admit, Link, PeerRole, Tier};
pub use crate::core::tier::{Mode, TierConfig};
use crate::fasttrack::server::{self as ft_server, FastTrack};
use crate::wire::Guid;
use crate::wire::handshake::{self as hs, Headers};

pub use engine::{Budgets, EngineStats, LockHold, MESSAGE_TYPES, RelayCounts, TypeCounts};
use engine::{EngineRef, Event, LinkInfo};
type Engine = crate::core::engine::Engine<engine::ShellLinks>;
use handshake::{Established, HandshakeFailure, RoleHeaders};

/// The User-Agent we announce.
pub const USER_AGENT: &str = concat!("servent/", env!("CARGO_PKG_VERSION"));

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub shares: Vec<PathBuf>,
    /// Peers to dial at start, as `host:port`.
    pub peers: Vec<String>,
    /// Where the hash cache is kept; none: hashes are not remembered.
    pub data_dir: Option<PathBuf>,
    pub max_peers: usize,
    /// Connections the node dials learned hosts to keep (never above
    /// `max_peers`); 0: dial only `peers`, once.
    pub target_peers: usize,
    pub max_ttl: u8,
    /// Results one query may get from us.
    pub max_results: usize,
    /// A peer must finish its handshake within this time.
    pub handshake_timeout: Duration,
    /// Offer and use `deflate` stream compression.
    pub compress: bool,
    /// How often the shared directories are rescanned for added, changed or
    /// removed files.
    pub rescan_every: Duration,
    /// Role in the two-tier network, link limits, and when `auto` changes role.
    pub tier: TierConfig,
    /// How an ultrapeer paces dynamic queries for its leaves.
    pub dq: DqConfig,
    /// Pause before redialing a host that failed or closed (default: the 30 s
    /// deployed servents require; meshes of our own nodes may go faster).
    pub redial_pause: Option<Duration>,
    /// Accept no inbound connections; hits ask for a Push.
    pub firewalled: bool,
    /// Concurrent uploads; more get 503.
    pub max_uploads: usize,
    /// Time limits on established links (read idle, write stall).
    pub link_limits: conn::Limits,
    /// The mesh is local: private and loopback addresses are learned, dialed and
    /// pushed to (they are anyway when `listen` is such an address).
    pub local_network: bool,
    /// What each link may send (token buckets per kind of message).
    pub budgets: Budgets,
    /// A leaf's QRP table with a larger share of its slots present is refused
    /// (it would match almost every query).
    pub max_table_fill: f64,
    /// Where the download queue writes files (default: `downloads` in the
    /// data directory, else the current directory).
    pub download_dir: Option<PathBuf>,
    /// Downloads of the queue running at once.
    pub max_downloads: usize,
    /// A second port taking every kind of connection the node's port takes,
    /// for FastTrack users (who expect 1214); FastTrack sessions are taken on
    /// the node's own port too.
    pub fasttrack_listen: Option<SocketAddr>,
    /// The FastTrack supernode's limits and timers.
    pub fasttrack: crate::fasttrack::server::ServerConfig,
    /// HTTP host caches asked for hosts when there is none to dial, and told
    /// our address once we are a reachable ultrapeer (none by default here;
    /// `servent run` gives the built-in list).
    pub webcaches: Vec<crate::wire::webcache::CacheUrl>,
    /// How long the node has had nothing to dial before it asks them.
    pub webcache_after: Duration,
    /// Open the Gnutella UDP port (the TCP port's number).
    pub udp: bool,
    /// UDP host caches asked for hosts when there is nothing left to dial
    /// (`host:port` each, resolved at each use; asked in this order, those
    /// that failed least first). None by default here; `servent run` gives
    /// [`DEFAULT_UDP_HOST_CACHES`].
    pub udp_host_caches: Vec<String>,
    /// How the host-cache client paces its pings.
    pub uhc: crate::core::uhc::UhcConfig,
    /// Whether our pongs by UDP say we are a UDP host cache (`UDPHC`).
    pub udp_host_cache_mode: crate::core::engine::CacheMode,
    /// Ask the default gateway to forward our port (PCP / NAT-PMP) when we
    /// listen on a private address and the mesh is not a local one. Off by
    /// default here (tests never ask a router); `servent run` turns it on
    /// unless `--no-port-mapping`.
    pub port_mapping: bool,
    /// How long reachability evidence stays fresh, and how long connect-backs
    /// are waited for (`protocol-spec/reachability.md`).
    pub reach: crate::core::reach::ReachTimers,
    /// GUESS, as server (an ultrapeer with UDP) and client (our searches).
    pub guess: crate::core::guess::GuessConfig,
}

/// The UDP host caches `servent run` asks unless told others: the ones
/// gtk-gnutella ships (GhostWhiteCrab caches and peers acting as caches).
pub const DEFAULT_UDP_HOST_CACHES: [&str; 9] = [
    "useast.gnutella.dyslexicfish.net:3558",
    "uswest.gnutella.dyslexicfish.net:3558",
    "uk.gnutella.dyslexicfish.net:3558",
    "au.gnutella.dyslexicfish.net:3558",
    "1.uhc.gtk-gnutella.nl:19104",
    "2.uhc.gtk-gnutella.nl:4876",
    "useast.gnutella.dyslexicfish.net:15321",
    "uswest.gnutella.dyslexicfish.net:18037",
    "uk.gnutella.dyslexicfish.net:41481",
];

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 6346)),
            shares: Vec::new(),
            peers: Vec::new(),
            data_dir: None,
            max_peers: 72,
            target_peers: 8,
            max_ttl: 7,
            max_results: 100,
            handshake_timeout: Duration::from_secs(10),
            compress: true,
            rescan_every: Duration::from_secs(60),
            tier: TierConfig::default(),
            dq: DqConfig::default(),
            redial_pause: None,
            firewalled: false,
            max_uploads: 8,
            link_limits: conn::Limits::default(),
            local_network: false,
            budgets: Budgets::default(),
            max_table_fill: engine::DEFAULT_MAX_TABLE_FILL,
            download_dir: None,
            max_downloads: 4,
            fasttrack_listen: None,
            fasttrack: crate::fasttrack::server::ServerConfig::default(),
            webcaches: Vec::new(),
            webcache_after: Duration::ZERO,
            udp: true,
            udp_host_caches: Vec::new(),
            uhc: crate::core::uhc::UhcConfig::default(),
            udp_host_cache_mode: crate::core::engine::CacheMode::default(),
            port_mapping: false,
            reach: Default::default(),
            guess: Default::default(),
        }
    }
}

/// A running node.
pub struct NodeHandle {
    pub local_addr: SocketAddr,
    /// This node's servent GUID.
    pub guid: Guid,
    cancel: CancellationToken,
    tracker: TaskTracker,
    stats: watch::Receiver<EngineStats>,
    givs: push::GivWaiters,
    engine: EngineRef,
    control: control::Control,
    fasttrack: FastTrack,
    /// Where the `--fasttrack-listen` port took connections.
    pub fasttrack_addr: Option<SocketAddr>,
    webcaches: crate::bootstrap::WebCaches,
    /// The Gnutella UDP port (same address as `local_addr`), when open.
    pub udp_addr: Option<SocketAddr>,
}

impl NodeHandle {
    /// What the control API sees of the node and asks of it.
    pub fn control(&self) -> control::Control {
        self.control.clone()
    }

    /// The FastTrack supernode.
    pub fn fasttrack(&self) -> &FastTrack {
        &self.fasttrack
    }

    /// A token cancelled when the node stops.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Waits for a pushed host (`servent`) to connect to our port and say `GIV`;
    /// the connection is handed over as it is after the GIV line.
    pub fn expect_giv(&self, servent: Guid) -> tokio::sync::oneshot::Receiver<TcpStream> {
        self.givs.expect(servent)
    }

    /// What the node's HTTP bootstrap has done.
    pub fn webcache_stats(&self) -> crate::core::webcache::ClientStats {
        self.webcaches.stats()
    }

    /// The engine's counters as last published.
    pub fn stats(&self) -> EngineStats {
        self.stats.borrow().clone()
    }

    /// How long the core's events have held its lock so far.
    pub fn lock_hold(&self) -> LockHold {
        self.engine.lock_hold()
    }

    /// Waits until the counters satisfy `f`, or `timeout` passes.
    pub async fn wait_for(&mut self, timeout: Duration, f: impl Fn(&EngineStats) -> bool) -> bool {
        tokio::time::timeout(timeout, self.stats.wait_for(|s| f(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops the node: Bye 200 to every peer, then every task ends.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

struct Shared {
    config: NodeConfig,
    engine: EngineRef,
    cancel: CancellationToken,
    tracker: TaskTracker,
    open: Arc<AtomicUsize>,
    next_conn: AtomicU64,
    /// The port we accept connections on, advertised in Pongs and hits.
    listen_port: u16,
    /// Dials under way, started by the maintainer.
    dialing: AtomicUsize,
    guid: Guid,
    uploads: Arc<http::Uploads>,
    /// HTTP connections being served; more are answered 503 and closed.
    http_permits: Arc<tokio::sync::Semaphore>,
    givs: push::GivWaiters,
    /// The listening IP when it is a specific one: outgoing connections are made
    /// from it, and it is the address we advertise.
    bind: Option<IpAddr>,
    /// Which addresses count as peers (reserved ones only on a local mesh).
    scope: Scope,
    fasttrack: FastTrack,
    /// HTTP host caches: asked when there is nothing to dial, updated.
    boot: bootstrap::Boot,
    /// Wakes the maintainer when a host cache brought hosts: they are dialed
    /// at once.
    wake: Arc<tokio::sync::Notify>,
    /// The address families we take connections on (IPv4, IPv6).
    families: (bool, bool),
}

impl Shared {
    /// The IP to advertise on a connection whose local end is `local`: the
    /// connection's own when the world can reach it; else (behind NAT) the
    /// external address several peers agree on when the world can reach that;
    /// else the listening IP when specific; else the agreed address, else the
    /// connection's own.
    fn advertised(&self, local: IpAddr) -> IpAddr {
        if crate::core::addr::is_routable(local) {
            return local;
        }
        let agreed = self
            .engine
            .external_ip()
            .filter(|ip| ip.is_ipv4() == local.is_ipv4());
        match (agreed, self.bind) {
            (Some(ip), _) if crate::core::addr::is_routable(ip) => ip,
            (_, Some(bind)) => bind,
            (Some(ip), None) => ip,
            (None, None) => local,
        }
    }

    /// A peer's handshake said where it sees us (`Remote-IP`): a vote for our
    /// external address (the engine's reachability counts them).
    fn remote_ip_said(&self, peer: SocketAddr, h: &Headers) {
        if let Some(said) = h.get(hs::REMOTE_IP).and_then(hs::parse_remote_ip) {
            // A dual-stack peer may see our IPv4 address as IPv4-mapped.
            self.engine.remote_ip_said(peer.ip(), said.to_canonical());
        }
    }

    /// Our headers for a handshake on a connection from `local` to `remote`.
    fn our_headers(&self, local: SocketAddr, remote: SocketAddr, role: RoleHeaders) -> Headers {
        // Behind a firewall (said, or learned from connect-backs that never
        // came) we do not say where we listen: nobody could reach that
        // address, and it would spread in X-Try.
        let me = (!self.engine.tcp_firewalled())
            .then(|| SocketAddr::new(self.advertised(local.ip()), self.listen_port));
        let guess = role.ultrapeer && self.config.udp && self.config.guess.serve && me.is_some();
        let mut h = handshake::our_headers(USER_AGENT, me, Some(remote), self.config.max_ttl, role);
        if guess {
            // We answer GUESS queries (protocol-spec/guess.md).
            h.push(hs::X_GUESS, "0.2");
        }
        h.push("GUID", self.guid.to_hex());
        if let (v4, true) = self.families {
            // IPv6-Ready: we read IPv6 addresses in headers and GGEP. One
            // X-Features line (peers read the first one only).
            let ip = crate::wire::http::ip_feature(v4);
            let all = match h.get(hs::X_FEATURES) {
                Some(f) if !f.is_empty() => format!("{f}, {ip}"),
                _ => ip.to_string(),
            };
            h.insert(hs::X_FEATURES, all);
        }
        if self.config.compress {
            h.push(hs::ACCEPT_ENCODING, hs::DEFLATE);
        }
        h
    }
}

/// The handshake refusal of a second link to one servent (gtk-gnutella's).
const STATUS_DUPLICATE: u16 = 409;
const DUPLICATE_GUID: &str = "Already connected to this GUID";

/// Whether a peer's headers say it is IPv6-Ready (`X-Features: IP/6.x`, on
/// any of its lines).
fn reads_ipv6(h: &Headers) -> bool {
    h.get_all(hs::X_FEATURES)
        .any(crate::wire::http::features_ipv6)
}

/// Connects to `to`, from `bind` when it is given (and of the same family), so
/// a node listening on one address of several also connects from it.
pub async fn connect_from(bind: Option<IpAddr>, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(ip) = bind.filter(|ip| ip.is_ipv4() == to.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.connect(to).await
}

/// HTTP connections served at once (each holds an upload slot only while it
/// downloads, so this is well above `max_uploads`).
const MAX_HTTP_CONNECTIONS: usize = 256;

/// Binds the listener and starts the node's tasks.
pub async fn start(config: NodeConfig, cancel: CancellationToken) -> io::Result<NodeHandle> {
    let listeners = listen::tcp(config.listen)?;
    let local_addr = listeners.local;
    let families = (listeners.ipv4, listeners.ipv6);
    let guid = servent_guid(config.data_dir.as_deref());
    let tracker = TaskTracker::new();
    let (stats_tx, stats) = watch::channel(EngineStats::default());
    let open = Arc::new(AtomicUsize::new(0));

    let router = Router::new(
        guid,
        RouterConfig {
            max_ttl: config.max_ttl,
            ..RouterConfig::default()
        },
    );
    let (library, shares) = library_task::initial(&config.shares, config.data_dir.as_ref());
    let scope = Scope::of(local_addr.ip(), config.local_network);
    let mut hosts = HostCache::new(2000);
    hosts.set_scope(scope);
    hosts.set_me(local_addr);
    if let Some(p) = config.redial_pause {
        hosts.set_redial_pause(p);
    }
    let hosts_file = config.data_dir.as_ref().map(|d| d.join("hosts.txt"));
    if let Some(f) = &hosts_file {
        if let Err(e) = hosts.load(f) {
            tracing::warn!(file = %f.display(), error = %e, "cannot read the host cache");
        }
    }
    // A node that takes no connections can never serve leaves.
    let tier_config = TierConfig {
        accepts_inbound: config.tier.accepts_inbound && !config.firewalled,
        ..config.tier.clone()
    };
    let tier = Tier::new(tier_config, Instant::now(), jitter(&guid));
    let uploads = Arc::new(http::Uploads::new(
        library.served(),
        config.max_uploads,
        cancel.clone(),
    ));
    let (push_tx, push_rx) = mpsc::channel(64);
    let givs = push::GivWaiters::default();
    let bind = Some(local_addr.ip()).filter(|ip| !ip.is_unspecified());
    // FastTrack downloaders are told our address when we listen on a specific
    // one (else 0.0.0.0, as giFT-FastTrack says before it knows its own).
    let mut kazaa = http::KazaaIdentity::new(local_addr.port());
    if let Some(ip @ IpAddr::V4(_)) = bind {
        kazaa.addr.set_ip(ip);
    }
    uploads.set_kazaa(kazaa);
    uploads.browse.set_identity(guid, config.firewalled);
    tracker.spawn(push::answer_pushes(
        guid,
        push_rx,
        uploads.clone(),
        tracker.clone(),
        bind,
        scope,
    ));
    let (connect_back_tx, connect_back_rx) = mpsc::channel(16);
    tracker.spawn(push::answer_connect_backs(
        connect_back_rx,
        bind,
        scope,
        tracker.clone(),
        cancel.clone(),
    ));
    let (links, mut decoded) =
        engine::ShellLinks::new(push_tx, connect_back_tx, uploads.slots.clone());
    let engine = Engine::new(
        engine::Config {
            me: guid,
            router,
            library,
            max_results: config.max_results,
            hosts,
            tier,
            dq: config.dq.clone(),
            firewalled: config.firewalled,
            budgets: config.budgets.clone(),
            max_table_fill: config.max_table_fill,
            seed: u64::from_le_bytes(Guid::new_random().0[..8].try_into().expect("8 bytes")),
            scope,
            reach: config.reach,
            guess: config.guess.clone(),
        },
        links,
    );
    let engine = EngineRef::new(engine, stats_tx, open.clone());
    {
        // Table jobs finished on the blocking pool go back into the core.
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tracker.spawn(async move {
            loop {
                let done = tokio::select! {
                    done = decoded.recv() => done,
                    _ = cancel.cancelled() => None,
                };
                let Some(done) = done else { break };
                if !engine.send(Event::TablesDecoded(done)) {
                    break;
                }
            }
        });
    }
    {
        // The one shutdown path: Bye to every peer, then the writers close.
        let (engine, cancel) = (engine.clone(), cancel.clone());
        tracker.spawn(async move {
            cancel.cancelled().await;
            engine.stop();
        });
    }

    let library_state = shares.state.clone();
    tracker.spawn(library_task::run(
        shares,
        engine.clone(),
        cancel.clone(),
        config.rescan_every,
        uploads.rescan.clone(),
    ));

    let wake = Arc::new(tokio::sync::Notify::new());
    engine.set_wake(wake.clone());
    let udp_addr = if config.udp {
        match udp::start(local_addr, engine.clone(), &tracker, cancel.clone()).await {
            Ok((addr, tx)) => {
                engine.set_udp(tx, addr);
                // Pongs by UDP advertise IPv4 only; listening on IPv6, a
                // link's local IPv4 address stands in.
                let ip = match local_addr.ip() {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
                };
                engine.set_udp_host_caches(
                    config.udp_host_caches.clone(),
                    config.uhc.clone(),
                    config.udp_host_cache_mode,
                    std::net::SocketAddrV4::new(ip, local_addr.port()),
                );
                Some(addr)
            }
            Err(e) => {
                // TCP still works without it; say so, as peers will miss
                // what only travels by UDP.
                tracing::warn!(addr = %local_addr, error = %e, "cannot open the UDP port; running without UDP");
                None
            }
        }
    } else {
        None
    };

    if config.port_mapping && !config.local_network && !config.firewalled {
        tracker.spawn(portmap::run(local_addr, udp_addr.is_some(), cancel.clone()));
    }

    let fasttrack_listener = match config.fasttrack_listen {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let fasttrack_addr = match &fasttrack_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let fasttrack = FastTrack::start(config.fasttrack.clone(), tracker.clone(), cancel.clone());
    engine.set_extra(Arc::new(fasttrack.clone()));
    uploads.set_fasttrack(fasttrack.clone());
    fasttrack.set_bridge(Arc::new(bridge::NodeBridge::new(
        engine.clone(),
        tracker.clone(),
        cancel.clone(),
        config.fasttrack.core.bridge_wait,
    )));

    let webcaches = crate::bootstrap::WebCaches::new(
        config.webcaches.clone(),
        scope,
        bind,
        u64::from_le_bytes(guid.0[8..].try_into().expect("8 bytes")),
    );
    let shared = Arc::new(Shared {
        boot: bootstrap::Boot::new(webcaches.clone(), wake.clone()),
        config,
        engine: engine.clone(),
        cancel: cancel.clone(),
        tracker: tracker.clone(),
        open,
        next_conn: AtomicU64::new(1),
        listen_port: local_addr.port(),
        dialing: AtomicUsize::new(0),
        guid,
        uploads,
        http_permits: Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS)),
        givs: givs.clone(),
        bind,
        wake,
        scope,
        fasttrack: fasttrack.clone(),
        families,
    });
    if !shared.config.firewalled {
        tracker.spawn(bridge::offer_own_files(
            engine.clone(),
            fasttrack.clone(),
            local_addr.port(),
            cancel.clone(),
        ));
    }
    tracker.spawn(bridge::tell_nodes(
        engine.clone(),
        fasttrack.clone(),
        cancel.clone(),
    ));
    if let Some(l) = fasttrack_listener {
        tracker.spawn(accept_loop(l, shared.clone()));
    }
    if shared.config.firewalled {
        // Behind a firewall nothing reaches us: the port is given up, and peers
        // and downloaders must wait for us to connect out.
        drop(listeners);
    } else {
        for listener in listeners.sockets {
            tracker.spawn(accept_loop(listener, shared.clone()));
        }
    }
    for peer in shared.config.peers.clone() {
        let shared = shared.clone();
        tracker.spawn(async move {
            // Remembered, so that a lost configured peer is dialed again.
            let addr = tokio::net::lookup_host(&peer)
                .await
                .ok()
                .and_then(|mut a| a.next());
            if let Some(a) = addr {
                shared.engine.hosts(|h| h.begin_dial(a, SystemTime::now()));
            }
            if let Err(e) = dial_recorded(&shared, &peer, addr).await {
                tracing::warn!(peer, error = %e, "cannot connect");
            }
        });
    }
    tracker.spawn(maintain(shared.clone(), hosts_file));
    let download_dir = shared.config.download_dir.clone().unwrap_or_else(|| {
        shared
            .config
            .data_dir
            .as_ref()
            .map_or_else(|| PathBuf::from("."), |d| d.join("downloads"))
    });
    let queue = queue::Queue::open(
        shared.config.data_dir.as_deref(),
        download_dir,
        shared.config.max_downloads,
        get::GetConfig::default(),
    );
    tracker.spawn(queue.clone().run(tracker.clone(), cancel.clone()));
    let control = control::Control::new(control::Parts {
        engine: shared.engine.clone(),
        stats: stats.clone(),
        uploads: shared.uploads.clone(),
        library: library_state,
        queue,
        guid,
        listen: (!shared.config.firewalled).then_some(local_addr),
        firewalled: shared.config.firewalled,
        max_uploads: shared.config.max_uploads,
        tracker: tracker.clone(),
        cancel: cancel.clone(),
        fasttrack: fasttrack.clone(),
        webcaches: webcaches.clone(),
    });
    Ok(NodeHandle {
        control,
        local_addr,
        guid,
        cancel,
        tracker,
        stats,
        givs,
        engine: shared.engine.clone(),
        fasttrack,
        fasttrack_addr,
        webcaches,
        udp_addr,
    })
}

/// Our servent GUID: kept in the data directory (file `guid`, 32 hex digits),
/// so that peers, push routes and push proxies know us again after a restart,
/// as gtk-gnutella keeps its own; a new random one without a data directory.
fn servent_guid(data_dir: Option<&std::path::Path>) -> Guid {
    let Some(dir) = data_dir else {
        return Guid::new_random();
    };
    let file = dir.join("guid");
    if let Some(g) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| Guid::from_hex(t.trim()))
    {
        return g;
    }
    let g = Guid::new_random();
    let tmp = dir.join("guid.tmp");
    let written = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&tmp, format!("{}\n", g.to_hex())))
        .and_then(|_| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot keep the servent GUID");
    }
    g
}

/// Idle time before the kernel probes a link that carries nothing.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Inbound connections being dispatched or handshaken at once; more wait in the
/// kernel's backlog until one finishes.
const MAX_HANDSHAKES: usize = 256;

/// Inbound sockets (handshaking, Gnutella links, HTTP) one remote address may
/// have open at once; on a local mesh (`Scope::Local`: every node of a test or
/// of `scripts/local-mesh.sh` connects from 127.0.0.1) a larger share.
const MAX_PER_IP: usize = 8;
const MAX_PER_IP_LOCAL: usize = 64;

/// A socket counted against its address's share, given back when dropped.
struct IpSlot {
    per_ip: Arc<Mutex<PerIp>>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give_back(self.ip);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let max = match shared.scope {
        Scope::Internet => MAX_PER_IP,
        Scope::Local => MAX_PER_IP_LOCAL,
    };
    let per_ip = Arc::new(Mutex::new(PerIp::new(max)));
    loop {
        // A permit before each accept: a flood of connections cannot make us hold
        // more than MAX_HANDSHAKES half-open ones.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = shared.cancel.cancelled() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shared.cancel.cancelled() => return,
        };
        let (stream, remote) = match accepted {
            // A dual-stack socket gives IPv4 peers as IPv4-mapped addresses.
            Ok((s, remote)) => (s, listen::canonical(remote)),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = remote.ip();
        // Any connection from another host says we can be reached.
        if let Ok(local) = stream.local_addr() {
            shared.engine.tcp_inbound(remote, local);
        }
        if !per_ip.lock().unwrap_or_else(|e| e.into_inner()).take(ip) {
            tracing::debug!(%remote, "too many connections from one address; closed");
            shared.engine.send(Event::PerIpRefused);
            continue;
        }
        let ip_slot = IpSlot {
            per_ip: per_ip.clone(),
            ip,
        };
        let shared2 = shared.clone();
        shared.tracker.spawn(async move {
            let _permit = permit;
            let timeout = shared2.config.handshake_timeout;
            let cancel = shared2.cancel.clone();
            tokio::select! {
                r = tokio::time::timeout(timeout, inbound(&shared2, stream, remote, ip_slot)) => match r {
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "inbound connection ended"),
                    Err(_) => tracing::debug!(%remote, "handshake timed out"),
                    Ok(Ok(())) => {}
                },
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Keeps `target_peers` connections by dialing learned hosts, and saves the host
/// cache at shutdown.
async fn maintain(shared: Arc<Shared>, hosts_file: Option<PathBuf>) {
    let target = shared.config.target_peers.min(shared.config.max_peers);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut saved = Instant::now();
    loop {
        // Woken early when a bootstrap brought hosts: they are dialed at once.
        let woken = tokio::select! {
            _ = tick.tick() => false,
            _ = shared.wake.notified() => true,
            _ = shared.cancel.cancelled() => break,
        };
        if !woken {
            // Saved now and then too, not only at a clean shutdown.
            if saved.elapsed() >= SAVE_HOSTS_EVERY {
                saved = Instant::now();
                save_hosts(&shared, hosts_file.as_deref());
            }
            shared.engine.tick(cpu_busy());
        }
        let wanted = if target == 0 {
            0
        } else {
            shared
                .engine
                .wanted_dials(target, shared.dialing.load(Ordering::Relaxed))
                .min(
                    shared
                        .config
                        .max_peers
                        .saturating_sub(shared.open.load(Ordering::Relaxed)),
                )
        };
        let mut nothing_to_dial = wanted > 0;
        for _ in 0..wanted {
            let next = shared.engine.hosts(|h| h.next_to_dial(Instant::now()));
            let Some(addr) = next else { break };
            nothing_to_dial = false;
            shared.dialing.fetch_add(1, Ordering::Relaxed);
            let s = shared.clone();
            shared.tracker.spawn(async move {
                if let Err(e) = dial_recorded(&s, &addr.to_string(), Some(addr)).await {
                    tracing::debug!(%addr, error = %e, "dial failed");
                }
                s.dialing.fetch_sub(1, Ordering::Relaxed);
            });
        }
        // Nothing to dial: UDP host caches; nothing under way and no link
        // either: HTTP host caches too (after the UDP ones had their time).
        uhc_round(&shared, nothing_to_dial);
        let starving = nothing_to_dial
            && shared.dialing.load(Ordering::Relaxed) == 0
            && shared.open.load(Ordering::Relaxed) == 0;
        shared.boot.tick(&shared, starving);
    }
    save_hosts(&shared, hosts_file.as_deref());
}

/// Asks the UDP host caches for hosts when there is nothing left to dial
/// (`need`), and says on the log what it does when it cannot join: which
/// caches it pings (info), which did not answer and when they all gave
/// nothing (warn, so `-q` still shows it).
fn uhc_round(shared: &Arc<Shared>, need: bool) {
    let round = shared.engine.uhc_round(need);
    for name in &round.timed_out {
        tracing::warn!(cache = %name, "no answer from a UDP host cache");
    }
    if !round.ping.is_empty() {
        tracing::info!(
            caches = %round.ping.join(","),
            "pinging {} UDP host caches",
            round.ping.len()
        );
    }
    for name in round.ping {
        let s = shared.clone();
        shared.tracker.spawn(async move {
            let looked_up = tokio::select! {
                r = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(name.clone())) => r,
                _ = s.cancel.cancelled() => return,
            };
            match looked_up {
                Ok(Ok(addrs)) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    if s.engine.uhc_ping(&name, &addrs) == 0 {
                        tracing::debug!(cache = %name, ?addrs, "UDP host cache not pinged: no IPv4 address to ping now");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(cache = %name, error = %e, "cannot resolve a UDP host cache");
                    s.engine.uhc_unresolved(&name);
                }
                Err(_) => {
                    tracing::warn!(cache = %name, "cannot resolve a UDP host cache: timed out");
                    s.engine.uhc_unresolved(&name);
                }
            }
        });
    }
    // Said only while the node has no link at all (a node that has some
    // and wants more is not stuck).
    let alone =
        shared.open.load(Ordering::Relaxed) == 0 && shared.dialing.load(Ordering::Relaxed) == 0;
    if round.fallback && alone && shared.config.udp && !shared.config.udp_host_caches.is_empty() {
        // Without UDP host caches the HTTP ones (`Boot`) say what they do.
        tracing::warn!(
            "no hosts from the UDP host caches yet; still asking them, and the HTTP host caches (--peer HOST:PORT joins at once)"
        );
    }
}

/// How long a host cache's name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the host cache is written to the data directory.
const SAVE_HOSTS_EVERY: Duration = Duration::from_secs(5 * 60);

fn save_hosts(shared: &Shared, file: Option<&std::path::Path>) {
    if let Some(f) = file {
        // Taken under the core's lock, written (and synced) outside it.
        let saved = shared.engine.hosts(|h| h.snapshot()).save(f);
        if let Err(e) = saved {
            tracing::warn!(file = %f.display(), error = %e, "cannot save the host cache");
        }
    }
}

/// The share of the machine's CPU in use, from the one-minute load average
/// (0 where it cannot be read).
fn cpu_busy() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |load| (load / cores).min(1.0))
}

/// A number in 0..1 drawn from the servent GUID: spreads role changes of
/// nodes started together.
fn jitter(guid: &Guid) -> f64 {
    let b = guid.as_bytes();
    u16::from_le_bytes([b[0], b[1]]) as f64 / 65536.0
}

/// Dispatches an inbound connection on its first bytes.
async fn inbound(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
    ip_slot: IpSlot,
) -> Result<(), HandshakeFailure> {
    let mut buf = BytesMut::with_capacity(1024);
    while buf.len() < 8 && !buf.contains(&b'\n') {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeFailure::Closed);
        }
    }
    if buf.starts_with(b"GNUTELLA") {
        let request = handshake::read_block(&mut stream, &mut buf).await?;
        let local = listen::canonical(stream.local_addr()?);
        let their_listen = handshake::listen_addr(&request.headers);
        let peer = handshake::peer_role(&request.headers);
        let full = shared.open.load(Ordering::Relaxed) >= shared.config.max_peers;
        let (admit, role) = shared.engine.admit(peer, full);
        let (suggested, ultrapeers) = shared.engine.hosts(|hosts| {
            for h in handshake::try_hosts(&request.headers) {
                hosts.learn(h, SystemTime::now());
            }
            if let (Some(addr), Some(up)) = (their_listen, peer.ultrapeer) {
                hosts.mark_ultrapeer(addr, up, SystemTime::now());
            }
            // Never the asker itself.
            let others = |v: Vec<SocketAddr>| -> Vec<SocketAddr> {
                v.into_iter()
                    .filter(|a| Some(*a) != their_listen)
                    .take(10)
                    .collect()
            };
            (
                others(hosts.sample(11)),
                others(hosts.sample_ultrapeers(11)),
            )
        });
        shared.remote_ip_said(remote, &request.headers);
        let mut ours = shared.our_headers(local, remote, role);
        // IPv6 hosts only to a peer that reads them (IPv6-Ready `IP/6.x`, or
        // it came to us over IPv6).
        let v6_ok = remote.is_ipv6() || reads_ipv6(&request.headers);
        let list = |v: &[SocketAddr]| {
            v.iter()
                .filter(|a| v6_ok || a.is_ipv4())
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let (suggested, ultrapeers) = (list(&suggested), list(&ultrapeers));
        if !suggested.is_empty() {
            ours.push(hs::X_TRY, suggested);
        }
        if !ultrapeers.is_empty() {
            ours.push(hs::X_TRY_ULTRAPEERS, ultrapeers);
        }
        // A servent we are linked to already (by its other address family):
        // refused as gtk-gnutella refuses it.
        let duplicate = request
            .headers
            .get("GUID")
            .and_then(Guid::from_hex)
            .is_some_and(|g| shared.engine.linked_to(g));
        let answer = match admit {
            _ if duplicate => Err((STATUS_DUPLICATE, DUPLICATE_GUID.to_string(), ours)),
            Admit::Refuse(reason) => Err((hs::STATUS_UNAVAILABLE, reason.to_string(), ours)),
            Admit::Accept(_) | Admit::Guide => Ok(ours),
        };
        let counted = match admit {
            Admit::Accept(link) => Some(link),
            Admit::Guide => Some(Link::ToLeaf),
            Admit::Refuse(_) => None,
        };
        let est = match handshake::accept(&mut stream, request, buf, answer, shared.config.compress)
            .await
        {
            Ok(est) => est,
            Err(e) => {
                if let Some(link) = counted {
                    shared.engine.release(link);
                }
                return Err(e);
            }
        };
        let link = match admit {
            Admit::Accept(link) => link,
            _ => match shared
                .engine
                .guided(handshake::peer_role(&est.final_headers))
            {
                Some(link) => link,
                None => return Ok(()),
            },
        };
        if let Some(addr) = their_listen {
            shared
                .engine
                .hosts(|h| h.connected(addr, SystemTime::now()));
        }
        open_connection(
            shared,
            stream,
            (local, remote),
            est,
            their_listen,
            link,
            Some(ip_slot),
        )
        .await;
        Ok(())
    } else if buf.starts_with(b"\n\n") {
        // A host we asked to connect back (or one that does so on its own):
        // nothing more to say.
        tracing::debug!(%remote, "connect-back received");
        Ok(())
    } else if buf.starts_with(b"GET ") || buf.starts_with(b"HEAD ") {
        // Served in a task of its own: the handshake deadline does not apply, the
        // connection's idle timeout does.
        let Ok(permit) = shared.http_permits.clone().try_acquire_owned() else {
            use tokio::io::AsyncWriteExt;
            let reply = format!(
                "HTTP/1.1 503 Service Unavailable\r\nServer: {USER_AGENT}\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(reply.as_bytes()).await?;
            let _ = stream.shutdown().await;
            return Ok(());
        };
        let _ = stream.set_nodelay(true);
        let uploads = shared.uploads.clone();
        shared.tracker.spawn(async move {
            let _permit = permit;
            let _ip_slot = ip_slot;
            http::serve(stream, buf.freeze(), remote, uploads).await;
        });
        Ok(())
    } else if buf.starts_with(b"GIV ") {
        // A host we pushed connects back; the download waiting for it takes over.
        let giv = push::read_giv(&mut stream, buf)
            .await
            .map_err(HandshakeFailure::Unexpected)?;
        if !shared.givs.deliver(&giv, stream) {
            tracing::debug!(%remote, servent = %giv.servent.to_hex(), "GIV nobody waits for");
        }
        Ok(())
    } else if buf.starts_with(b"CONNECT BACK") || buf.starts_with(b"\n") || buf.starts_with(b"\r\n")
    {
        // A connect-back we asked for: LimeWire's `CONNECT BACK` and blank
        // line, or gtk-gnutella's bare `\n\n`. The connection itself was the
        // evidence (taken at accept); nothing more to read.
        tracing::debug!(%remote, "connected back to");
        Ok(())
    } else if buf.starts_with(b"GIVE ") {
        // A FastTrack user answering a push the node sent for a proxied download.
        let give = bridge::read_give(&mut stream, buf)
            .await
            .map_err(HandshakeFailure::Unexpected)?;
        if !shared.fasttrack.deliver_give(give, stream) {
            tracing::debug!(%remote, give, "GIVE nobody waits for");
        }
        Ok(())
    } else {
        // None of the text protocols: a FastTrack hello is 12 binary bytes.
        while buf.len() < 12 {
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(HandshakeFailure::Closed);
            }
        }
        if ft_server::looks_like_hello(&buf) {
            let ft = shared.fasttrack.clone();
            shared.tracker.spawn(async move {
                let _ip_slot = ip_slot;
                ft.serve(stream, buf.freeze(), remote).await;
            });
            return Ok(());
        }
        Err(HandshakeFailure::Unexpected(
            String::from_utf8_lossy(&buf[..buf.len().min(16)]).into_owned(),
        ))
    }
}

/// Dials `peer` and tells the host cache how it went (when its address is known).
async fn dial_recorded(
    shared: &Arc<Shared>,
    peer: &str,
    addr: Option<SocketAddr>,
) -> Result<(), HandshakeFailure> {
    let mut connections = 0;
    let result = dial(shared, peer, &mut connections).await;
    // A refusal has set its own pause already, by its reason.
    let refused_by_peer = matches!(
        &result,
        Err(HandshakeFailure::Refused { reason, .. }) if !reason.starts_with("(by us)")
    );
    if let Some(a) = addr.filter(|_| !refused_by_peer) {
        shared
            .engine
            .hosts(|h| h.dialed_with(a, result.is_ok(), connections, Instant::now()));
    }
    result
}

/// Connects to `peer` and, on success, runs the connection; `connections`
/// counts the TCP connections made (a 0.4 fallback makes a second).
async fn dial(
    shared: &Arc<Shared>,
    peer: &str,
    connections: &mut u32,
) -> Result<(), HandshakeFailure> {
    let timeout = shared.config.handshake_timeout;
    // The link the handshake settled, counted by the engine until it opens.
    let mut counted: Option<Link> = None;
    let work = async {
        *connections += 1;
        let to = match peer.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => tokio::net::lookup_host(peer)
                .await?
                .next()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?,
        };
        let mut stream = connect_from(shared.bind, to).await?;
        let local = listen::canonical(stream.local_addr()?);
        let remote = listen::canonical(stream.peer_addr()?);
        // Peers may hand this address (our end of their link) back to us as a
        // host to try: it is ours, never to be dialed.
        shared.engine.hosts(|h| h.also_me(local));
        let headers = shared.our_headers(local, remote, shared.engine.role_headers());
        let result =
            handshake::connect_deciding(&mut stream, headers, shared.config.compress, |answer| {
                if answer
                    .get("GUID")
                    .and_then(Guid::from_hex)
                    .is_some_and(|g| shared.engine.linked_to(g))
                {
                    return Err((STATUS_DUPLICATE, DUPLICATE_GUID));
                }
                let (link, ultrapeer) = shared
                    .engine
                    .dialed(handshake::peer_role(answer))
                    .map_err(|reason| (hs::STATUS_UNAVAILABLE, reason))?;
                counted = Some(link);
                let mut last = Headers::new();
                last.push(hs::X_ULTRAPEER, if ultrapeer { "True" } else { "False" });
                Ok(last)
            })
            .await;
        if let Err(HandshakeFailure::Refused {
            ultrapeer_needed: true,
            ..
        }) = &result
        {
            shared.engine.ultrapeers_wanted();
        }
        if let Ok(est) = &result {
            shared.remote_ip_said(remote, &est.headers);
        }
        if let Err(HandshakeFailure::Refused {
            code,
            reason,
            ultrapeer,
            ..
        }) = &result
        {
            // Not dialed again soon, by why it said no (a leaf never again).
            let why = Refusal::of(*code, reason, *ultrapeer);
            tracing::debug!(%remote, code, reason, ?why, "refused");
            if !reason.starts_with("(by us)") {
                shared
                    .engine
                    .hosts(|h| h.refused(remote, why, Instant::now()));
            }
        }
        let suggested = match &result {
            Ok(est) => handshake::try_hosts(&est.headers),
            Err(HandshakeFailure::Refused { try_hosts, .. }) => try_hosts.clone(),
            Err(_) => Vec::new(),
        };
        shared.engine.hosts(|hosts| {
            let now = SystemTime::now();
            for h in suggested {
                hosts.learn(h, now);
            }
            if let Ok(est) = &result {
                if let Some(up) = handshake::peer_role(&est.headers).ultrapeer {
                    hosts.mark_ultrapeer(remote, up, now);
                }
            }
        });
        match result {
            Ok(est) => Ok((stream, local, remote, est)),
            // A peer that only speaks 0.4 closes on, or does not understand, a 0.6
            // request: try once more the old way, on a new connection.
            Err(
                HandshakeFailure::Closed
                | HandshakeFailure::Unexpected(_)
                | HandshakeFailure::Malformed(_),
            ) if counted.is_none() => {
                *connections += 1;
                let mut stream = connect_from(shared.bind, remote).await?;
                let local = stream.local_addr()?;
                let est = handshake::connect_04(&mut stream).await?;
                let (link, _) = shared
                    .engine
                    .dialed(PeerRole::default())
                    .map_err(|reason| HandshakeFailure::Refused {
                        code: hs::STATUS_UNAVAILABLE,
                        reason: format!("(by us) {reason}"),
                        try_hosts: Vec::new(),
                        ultrapeer_needed: false,
                        ultrapeer: None,
                    })?;
                counted = Some(link);
                Ok((stream, local, remote, est))
            }
            Err(e) => Err(e),
        }
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.map_err(|_| HandshakeFailure::Io(io::ErrorKind::TimedOut.into())).and_then(|r| r),
        _ = shared.cancel.cancelled() => Err(HandshakeFailure::Closed),
    };
    match (outcome, counted) {
        (Ok((stream, local, remote, est)), Some(link)) => {
            open_connection(
                shared,
                stream,
                (local, remote),
                est,
                Some(remote),
                link,
                None,
            )
            .await;
            Ok(())
        }
        (Ok(_), None) => Ok(()),
        (Err(e), counted) => {
            if let Some(link) = counted {
                shared.engine.release(link);
            }
            if shared.cancel.is_cancelled() {
                return Ok(());
            }
            Err(e)
        }
    }
}

/// Tells the engine of an established connection, then starts its tasks. The
/// engine counts it open until its reader reports the end.
/// `ip_slot`: for a peer that connected to us, its address's share, held for
/// the link's life.
async fn open_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    (local, remote): (SocketAddr, SocketAddr),
    est: Established,
    remote_listen: Option<SocketAddr>,
    link: Link,
    ip_slot: Option<IpSlot>,
) {
    let inbound = ip_slot.is_some();
    if inbound {
        shared.boot.inbound_seen.store(true, Ordering::Relaxed);
    }
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    // The peer reaches us at the address we advertise, and our listening port
    // (a dialed connection's own port is an ephemeral one nobody can connect to).
    let local = SocketAddr::new(shared.advertised(local.ip()), shared.listen_port);
    let _ = stream.set_nodelay(true);
    // The kernel notices a peer that vanished without a word (no FIN, no RST).
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let tx = conn::ConnTx::new(est.v04);
    shared.open.fetch_add(1, Ordering::Relaxed);
    let info = LinkInfo {
        local,
        remote_listen,
        link,
        up_qrp: handshake::peer_up_qrp(&est.headers),
        offers: handshake::peer_offers(&est.headers),
        degree: est
            .headers
            .get(hs::X_DEGREE)
            .and_then(|d| d.trim().parse().ok())
            .unwrap_or(0),
        guid: est.headers.get("GUID").and_then(Guid::from_hex),
        remote,
        vendor_messages: est.headers.get(hs::VENDOR_MESSAGE).is_some(),
        hsep: est
            .headers
            .get(hs::X_FEATURES)
            .is_some_and(|f| crate::core::capabilities::has_feature(f, crate::wire::hsep::FEATURE)),
        inbound,
    };
    let meta = engine::LinkMeta {
        user_agent: est.headers.get(hs::USER_AGENT).map(str::to_string),
        opened: Instant::now(),
        traffic: Default::default(),
    };
    // An ultrapeer saying X-Guess answers GUESS queries where it listens.
    let ultrapeer = matches!(link, Link::Peer | Link::ToUltrapeer);
    if let (Some(addr), true) = (
        remote_listen,
        ultrapeer && est.headers.get(hs::X_GUESS).is_some(),
    ) {
        shared.engine.guess_host(addr);
    }
    if !shared.engine.open(conn, tx.clone(), info, meta) {
        shared.open.fetch_sub(1, Ordering::Relaxed);
        shared.engine.release(link);
        return;
    }
    let (r, w) = stream.into_split();
    conn::start(
        &shared.tracker,
        conn,
        tx,
        r,
        w,
        conn::Streams {
            leftover: est.leftover,
            deflate_in: est.deflate_in,
            deflate_out: est.deflate_out,
        },
        shared.engine.clone(),
        shared.cancel.clone(),
        shared.config.link_limits,
        ip_slot.map(|s| Box::new(s) as Box<dyn Send>),
    );
}

/// Headers a leaf-mode client (such as `servent search`) offers.
pub fn client_headers() -> Headers {
    handshake::our_headers(USER_AGENT, None, None, 7, RoleHeaders::default())
}
