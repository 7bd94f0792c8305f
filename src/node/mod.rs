//! The node: the async shell around the deciding core. It accepts and dials
//! connections, runs the handshake, frames descriptors, and feeds them to the
//! engine task, which owns the router and the library.
//!
//! One shutdown path serves `main` and the tests: cancel the token given to
//! [`start`] (or call [`NodeHandle::shutdown`]); every peer gets a Bye 200 and every
//! task ends.

mod conn;
mod deflate;
mod engine;
pub mod get;
pub mod handshake;
pub mod http;
mod library_task;
pub mod push;
pub mod search;

use std::io;
use std::net::SocketAddr;
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
use crate::core::hosts::HostCache;
use crate::core::router::{Router, RouterConfig};
use crate::wire::Guid;
use crate::wire::handshake::{self as hs, Headers};

use engine::{Engine, Event};
pub use engine::{EngineStats, RelayCounts};
use handshake::{Established, HandshakeFailure};

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
    /// Accept no inbound connections; hits ask for a Push.
    pub firewalled: bool,
    /// Concurrent uploads; more get 503.
    pub max_uploads: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 6346)),
            shares: Vec::new(),
            peers: Vec::new(),
            data_dir: None,
            max_peers: 32,
            target_peers: 8,
            max_ttl: 7,
            max_results: 100,
            handshake_timeout: Duration::from_secs(10),
            compress: true,
            rescan_every: Duration::from_secs(60),
            firewalled: false,
            max_uploads: 8,
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
}

impl NodeHandle {
    /// Waits for a pushed host (`servent`) to connect to our port and say `GIV`;
    /// the connection is handed over as it is after the GIV line.
    pub fn expect_giv(&self, servent: Guid) -> tokio::sync::oneshot::Receiver<TcpStream> {
        self.givs.expect(servent)
    }

    /// The engine's counters as last published.
    pub fn stats(&self) -> EngineStats {
        self.stats.borrow().clone()
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
    events: mpsc::Sender<Event>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    open: Arc<AtomicUsize>,
    next_conn: AtomicU64,
    /// The port we accept connections on, advertised in Pongs and hits.
    listen_port: u16,
    hosts: Arc<Mutex<HostCache>>,
    /// Dials under way, started by the maintainer.
    dialing: AtomicUsize,
    uploads: Arc<http::Uploads>,
    /// HTTP connections being served; more are answered 503 and closed.
    http_permits: Arc<tokio::sync::Semaphore>,
    givs: push::GivWaiters,
}

/// HTTP connections served at once (each holds an upload slot only while it
/// downloads, so this is well above `max_uploads`).
const MAX_HTTP_CONNECTIONS: usize = 256;

/// Binds the listener and starts the node's tasks.
pub async fn start(config: NodeConfig, cancel: CancellationToken) -> io::Result<NodeHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let guid = Guid::new_random();
    let tracker = TaskTracker::new();
    let (events, rx) = mpsc::channel(1024);
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
    let mut hosts = HostCache::new(2000);
    hosts.set_me(local_addr);
    let hosts_file = config.data_dir.as_ref().map(|d| d.join("hosts.txt"));
    if let Some(f) = &hosts_file {
        if let Err(e) = hosts.load(f) {
            tracing::warn!(file = %f.display(), error = %e, "cannot read the host cache");
        }
    }
    let hosts = Arc::new(Mutex::new(hosts));
    let uploads = Arc::new(http::Uploads::new(
        library.served(),
        config.max_uploads,
        cancel.clone(),
    ));
    let (push_tx, push_rx) = mpsc::channel(64);
    let givs = push::GivWaiters::default();
    tracker.spawn(push::answer_pushes(
        guid,
        push_rx,
        uploads.clone(),
        tracker.clone(),
    ));
    let engine = Engine::new(
        guid,
        router,
        library,
        config.max_results,
        stats_tx,
        open.clone(),
        hosts.clone(),
        push::TransferHooks {
            firewalled: config.firewalled,
            slots: uploads.slots.clone(),
            pushes: push_tx,
        },
    );
    tracker.spawn(engine.run(rx, cancel.clone()));

    tracker.spawn(library_task::run(
        shares,
        events.clone(),
        cancel.clone(),
        config.rescan_every,
        uploads.rescan.clone(),
    ));

    let shared = Arc::new(Shared {
        config,
        events,
        cancel: cancel.clone(),
        tracker: tracker.clone(),
        open,
        next_conn: AtomicU64::new(1),
        listen_port: local_addr.port(),
        hosts,
        dialing: AtomicUsize::new(0),
        uploads,
        http_permits: Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS)),
        givs: givs.clone(),
    });
    if shared.config.firewalled {
        // Behind a firewall nothing reaches us: the port is given up, and peers
        // and downloaders must wait for us to connect out.
        drop(listener);
    } else {
        let shared = shared.clone();
        tracker.spawn(accept_loop(listener, shared));
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
                shared
                    .hosts
                    .lock()
                    .expect("hosts")
                    .begin_dial(a, SystemTime::now());
            }
            if let Err(e) = dial_recorded(&shared, &peer, addr).await {
                tracing::warn!(peer, error = %e, "cannot connect");
            }
        });
    }
    tracker.spawn(maintain(shared.clone(), hosts_file));
    Ok(NodeHandle {
        local_addr,
        guid,
        cancel,
        tracker,
        stats,
        givs,
    })
}

/// Inbound connections being dispatched or handshaken at once; more wait in the
/// kernel's backlog until one finishes.
const MAX_HANDSHAKES: usize = 256;

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
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
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared2 = shared.clone();
        shared.tracker.spawn(async move {
            let _permit = permit;
            let timeout = shared2.config.handshake_timeout;
            let cancel = shared2.cancel.clone();
            tokio::select! {
                r = tokio::time::timeout(timeout, inbound(&shared2, stream, remote)) => match r {
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
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.cancel.cancelled() => break,
        }
        let _ = shared.events.try_send(Event::Tick);
        let busy = shared.open.load(Ordering::Relaxed) + shared.dialing.load(Ordering::Relaxed);
        for _ in busy..target {
            let next = shared
                .hosts
                .lock()
                .expect("hosts")
                .next_to_dial(Instant::now());
            let Some(addr) = next else { break };
            shared.dialing.fetch_add(1, Ordering::Relaxed);
            let s = shared.clone();
            shared.tracker.spawn(async move {
                if let Err(e) = dial_recorded(&s, &addr.to_string(), Some(addr)).await {
                    tracing::debug!(%addr, error = %e, "dial failed");
                }
                s.dialing.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    if let Some(f) = hosts_file {
        let saved = shared.hosts.lock().expect("hosts").save(&f);
        if let Err(e) = saved {
            tracing::warn!(file = %f.display(), error = %e, "cannot save the host cache");
        }
    }
}

/// Dispatches an inbound connection on its first bytes.
async fn inbound(
    shared: &Arc<Shared>,
    mut stream: TcpStream,
    remote: SocketAddr,
) -> Result<(), HandshakeFailure> {
    let mut buf = BytesMut::with_capacity(1024);
    while buf.len() < 8 && !buf.contains(&b'\n') {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeFailure::Closed);
        }
    }
    if buf.starts_with(b"GNUTELLA") {
        let request = handshake::read_block(&mut stream, &mut buf).await?;
        let local = stream.local_addr()?;
        let their_listen = handshake::listen_addr(&request.headers);
        let suggested = {
            let mut hosts = shared.hosts.lock().expect("hosts");
            for h in handshake::try_hosts(&request.headers) {
                hosts.learn(h, SystemTime::now());
            }
            hosts.sample(10)
        };
        let full = shared.open.load(Ordering::Relaxed) >= shared.config.max_peers;
        let me = SocketAddr::new(local.ip(), shared.listen_port);
        let mut ours =
            handshake::our_headers(USER_AGENT, Some(me), Some(remote), shared.config.max_ttl);
        if !suggested.is_empty() {
            let list: Vec<String> = suggested.iter().map(|a| a.to_string()).collect();
            ours.push(hs::X_TRY, list.join(","));
        }
        if shared.config.compress {
            ours.push(hs::ACCEPT_ENCODING, hs::DEFLATE);
        }
        let answer = if full {
            Err((
                hs::STATUS_UNAVAILABLE,
                "Too many connections".to_string(),
                ours,
            ))
        } else {
            Ok(ours)
        };
        let est =
            handshake::accept(&mut stream, request, buf, answer, shared.config.compress).await?;
        if let Some(addr) = their_listen {
            shared
                .hosts
                .lock()
                .expect("hosts")
                .connected(addr, SystemTime::now());
        }
        open_connection(shared, stream, local, est, their_listen).await;
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
    } else {
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
    let result = dial(shared, peer).await;
    if let Some(a) = addr {
        shared
            .hosts
            .lock()
            .expect("hosts")
            .dialed(a, result.is_ok(), Instant::now());
    }
    result
}

/// Connects to `peer` and, on success, runs the connection.
async fn dial(shared: &Arc<Shared>, peer: &str) -> Result<(), HandshakeFailure> {
    let timeout = shared.config.handshake_timeout;
    let work = async {
        let mut stream = TcpStream::connect(peer).await?;
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        let me = SocketAddr::new(local.ip(), shared.listen_port);
        let mut headers =
            handshake::our_headers(USER_AGENT, Some(me), Some(remote), shared.config.max_ttl);
        if shared.config.compress {
            headers.push(hs::ACCEPT_ENCODING, hs::DEFLATE);
        }
        let result = handshake::connect(&mut stream, headers, shared.config.compress).await;
        let suggested = match &result {
            Ok(est) => handshake::try_hosts(&est.headers),
            Err(HandshakeFailure::Refused { try_hosts, .. }) => try_hosts.clone(),
            Err(_) => Vec::new(),
        };
        {
            let mut hosts = shared.hosts.lock().expect("hosts");
            for h in suggested {
                hosts.learn(h, SystemTime::now());
            }
        }
        match result {
            Ok(est) => Ok((stream, local, remote, est)),
            // A peer that only speaks 0.4 closes on, or does not understand, a 0.6
            // request: try once more the old way, on a new connection.
            Err(
                HandshakeFailure::Closed
                | HandshakeFailure::Unexpected(_)
                | HandshakeFailure::Malformed(_),
            ) => {
                let mut stream = TcpStream::connect(remote).await?;
                let local = stream.local_addr()?;
                let est = handshake::connect_04(&mut stream).await?;
                Ok((stream, local, remote, est))
            }
            Err(e) => Err(e),
        }
    };
    let (stream, local, remote, est) = tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.map_err(|_| HandshakeFailure::Io(io::ErrorKind::TimedOut.into()))??,
        _ = shared.cancel.cancelled() => return Ok(()),
    };
    open_connection(shared, stream, local, est, Some(remote)).await;
    Ok(())
}

/// Tells the engine of an established connection, then starts its tasks. The
/// engine counts it open until its reader reports the end.
async fn open_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    local: SocketAddr,
    est: Established,
    remote_listen: Option<SocketAddr>,
) {
    let conn = ConnId(shared.next_conn.fetch_add(1, Ordering::Relaxed));
    // The peer reaches us at this connection's local IP, and our listening port
    // (a dialed connection's own port is an ephemeral one nobody can connect to).
    let local = SocketAddr::new(local.ip(), shared.listen_port);
    let _ = stream.set_nodelay(true);
    let tx = conn::ConnTx::new(est.v04);
    shared.open.fetch_add(1, Ordering::Relaxed);
    if shared
        .events
        .send(Event::Opened {
            conn,
            tx: tx.clone(),
            local,
            remote_listen,
            // We always say X-Ultrapeer: False, so a peer that says True takes
            // us as its leaf.
            upstream: est.headers.get_bool(hs::X_ULTRAPEER) == Some(true),
        })
        .await
        .is_err()
    {
        shared.open.fetch_sub(1, Ordering::Relaxed);
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
        shared.events.clone(),
        shared.cancel.clone(),
    );
}

/// Headers a leaf-mode client (such as `servent search`) offers.
pub fn client_headers() -> Headers {
    handshake::our_headers(USER_AGENT, None, None, 7)
}
