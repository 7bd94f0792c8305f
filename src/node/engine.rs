//! The engine task: owns the router and the library, receives frames from every
//! connection, and carries out the router's decisions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::core::ConnId;
use crate::core::flow::Priority;
use crate::core::hosts::HostCache;
use crate::core::library::Library;
use crate::core::pongs::PongCache;
use crate::core::router::{Class, Decision, DropReason, Forward, Router, Stats, Targets};
use crate::share::FoundFile;
use crate::wire::bye;
use crate::wire::huge::Sha1Urn;
use crate::wire::query::QueryView;
use crate::wire::queryhit::OpenDataFlags;
use crate::wire::{
    Frame, Function, Guid, Header, HitResult, Hops, Message, Ping, Pong, QueryHit, Trailer,
    TrailerArea, Ttl,
};

use super::conn::ConnTx;
use super::push::TransferHooks;

/// Our vendor code in QueryHit trailers.
pub const VENDOR: [u8; 4] = *b"SRVT";
/// Results per QueryHit message; larger answers are split.
const RESULTS_PER_HIT: usize = 10;
/// Unknown messages a peer may send before it is dropped with Bye 404.
const MAX_UNKNOWN: u32 = 20;
/// Requests a peer may send us twice before it is dropped with Bye 401.
const MAX_REPEATED: u32 = 50;
/// Events handled after one `recv` before the engine lets other tasks run.
const DRAIN_AT_ONCE: usize = 64;
/// How often every neighbour is pinged to refresh the pong cache.
const PING_EVERY: Duration = Duration::from_secs(30);

/// What connections and the node tell the engine.
pub enum Event {
    Opened {
        conn: ConnId,
        tx: ConnTx,
        /// Our address as this peer reaches us (for Pongs and hits sent to it).
        local: SocketAddr,
        /// Where the peer listens, when known.
        remote_listen: Option<SocketAddr>,
        /// The peer is an ultrapeer and takes us as its leaf.
        upstream: bool,
    },
    Frame {
        conn: ConnId,
        frame: Frame,
    },
    Closed {
        conn: ConnId,
    },
    /// A file appeared in the shares (or changed: it was removed first).
    Added {
        file: FoundFile,
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
    /// Time passes (sent by the node every second).
    Tick,
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
}

struct Peer {
    tx: ConnTx,
    local: SocketAddr,
    remote_listen: Option<SocketAddr>,
    /// We are this peer's leaf: it accepts only our own queries, never relayed
    /// ones (gtk-gnutella drops a leaf that relays with Bye 414).
    upstream: bool,
    unknown: u32,
    repeated: u32,
}

pub struct Engine {
    me: Guid,
    router: Router,
    library: Library,
    peers: HashMap<ConnId, Peer>,
    max_results: usize,
    stats: EngineStats,
    published: watch::Sender<EngineStats>,
    open: Arc<AtomicUsize>,
    hosts: Arc<Mutex<HostCache>>,
    pongs: PongCache,
    last_ping: Option<Instant>,
    transfer: TransferHooks,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: Guid,
        router: Router,
        library: Library,
        max_results: usize,
        published: watch::Sender<EngineStats>,
        open: Arc<AtomicUsize>,
        hosts: Arc<Mutex<HostCache>>,
        transfer: TransferHooks,
    ) -> Engine {
        Engine {
            me,
            router,
            library,
            peers: HashMap::new(),
            max_results,
            stats: EngineStats::default(),
            published,
            open,
            hosts,
            pongs: PongCache::new(200, Duration::from_secs(90)),
            last_ping: None,
            transfer,
        }
    }

    /// Runs until cancelled or every sender is gone.
    pub async fn run(mut self, mut events: mpsc::Receiver<Event>, cancel: CancellationToken) {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = cancel.cancelled() => None,
            };
            let Some(event) = event else { break };
            // One clock reading serves the events already waiting.
            let now = Instant::now();
            self.handle(event, now);
            // Take a few more already waiting before publishing counters, but not
            // without end: `try_recv` never yields, and the connections' writers
            // need the worker threads too.
            for _ in 0..DRAIN_AT_ONCE {
                let Ok(event) = events.try_recv() else { break };
                self.handle(event, now);
            }
            self.stats.router = self.router.stats().clone();
            self.stats.connections = self.peers.len();
            self.published.send_replace(self.stats.clone());
            tokio::task::yield_now().await;
        }
        for peer in self.peers.values() {
            peer.tx.close(bye::CODE_SHUTDOWN, "Servent shutdown");
        }
    }

    fn handle(&mut self, event: Event, now: Instant) {
        match event {
            Event::Opened {
                conn,
                tx,
                local,
                remote_listen,
                upstream,
            } => {
                tracing::debug!(conn = conn.0, ?remote_listen, %local, "connection opened");
                self.stats.opened += 1;
                self.router.connection_opened(conn);
                self.peers.insert(
                    conn,
                    Peer {
                        tx,
                        local,
                        remote_listen,
                        upstream,
                        unknown: 0,
                        repeated: 0,
                    },
                );
                // Ask the new neighbour for itself and the hosts it knows.
                self.ping(conn, now);
            }
            Event::Closed { conn } => {
                tracing::debug!(conn = conn.0, "connection closed");
                self.router.connection_closed(conn);
                if let Some(peer) = self.peers.remove(&conn) {
                    self.open.fetch_sub(1, Ordering::Relaxed);
                    if let Some(addr) = peer.remote_listen {
                        self.hosts.lock().expect("hosts").closed(addr, now);
                    }
                }
            }
            Event::Added { file, urn } => {
                self.library
                    .add(&file.name, file.path, file.size, file.mtime, urn);
            }
            Event::Removed { path } => {
                if let Some(index) = self.library.index_of(&path) {
                    self.library.remove(index);
                }
            }
            Event::Hashed { path, size, urn } => {
                // Only if the file is still the one that was hashed.
                let index = self.library.index_of(&path);
                if let Some(i) =
                    index.filter(|i| self.library.get(*i).is_some_and(|f| f.size == size))
                {
                    self.library.set_sha1(i, urn);
                }
            }
            Event::Tick => {
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
            Event::Frame { conn, frame } => self.frame(conn, frame, now),
        }
    }

    fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
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
                peer.tx.close_silently();
                return;
            }
            // Hop-by-hop messages the node does not act on yet.
            Function::RouteTable | Function::Vendor | Function::StandardVendor => return,
            Function::Unknown(_) => {
                self.stats.unknown += 1;
                peer.unknown += 1;
                if peer.unknown > MAX_UNKNOWN {
                    peer.tx
                        .close(bye::CODE_UNKNOWN, "Too many unknown messages");
                }
                return;
            }
        };
        // A Query is checked by parsing its view, which answering it needs too;
        // everything else by the allocation-free check.
        let query = if h.function == Function::Query {
            match QueryView::parse(&frame.payload) {
                Ok(q) => Some(q),
                Err(_) => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        } else {
            if Message::validate(h.function, &frame.payload).is_err() {
                self.stats.malformed += 1;
                return;
            }
            None
        };
        let decision = self
            .router
            .route(conn, h.guid, class, h.ttl.0, h.hops.0, now);
        if h.function == Function::Pong && matches!(decision, Decision::Accept { .. }) {
            // Every pong that follows a path names a host we may dial later, and
            // one we may tell others about.
            let p = &frame.payload;
            let port = u16::from_le_bytes([p[0], p[1]]);
            let ip = Ipv4Addr::new(p[2], p[3], p[4], p[5]);
            if port != 0 && !ip.is_unspecified() {
                self.hosts
                    .lock()
                    .expect("hosts")
                    .learn(SocketAddr::new(IpAddr::V4(ip), port), SystemTime::now());
                self.pongs
                    .insert(now, frame.payload.clone(), h.hops.0, conn);
            }
        }
        let Decision::Accept { deliver, forward } = decision else {
            if decision == Decision::Drop(DropReason::Repeated) {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.repeated += 1;
                    if peer.repeated == MAX_REPEATED {
                        peer.tx.close(bye::CODE_DUPLICATES, "Too many duplicates");
                    }
                }
            }
            return;
        };
        if let Some(f) = forward {
            let priority = match h.function {
                Function::Ping | Function::Pong => Priority::RelayedDiscovery,
                Function::Query => Priority::RelayedSearch,
                _ => Priority::Result,
            };
            self.send(f, priority, &frame);
        }
        if deliver {
            match h.function {
                Function::Ping => self.answer_ping(conn, &h, now),
                Function::Query => {
                    if let Some(q) = &query {
                        self.answer_query(conn, &h, q);
                    }
                }
                Function::Push => self.transfer.push(&frame.payload),
                _ => {}
            }
        }
    }

    fn send(&mut self, f: Forward, priority: Priority, frame: &Frame) {
        let header = Header {
            ttl: Ttl(f.ttl),
            hops: Hops(f.hops),
            ..frame.header
        };
        let mut out = BytesMut::with_capacity(frame.wire_len());
        Frame {
            header,
            payload: frame.payload.clone(),
        }
        .encode(&mut out);
        let bytes = out.freeze();
        let (mut sent, mut shed) = (0u64, 0u64);
        let relayed_query = frame.header.function == Function::Query;
        let mut deliver = |p: &Peer| {
            if relayed_query && p.upstream {
                return;
            }
            sent += 1;
            if !matches!(
                p.tx.send(priority, bytes.clone()),
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
        let counter = match frame.header.function {
            Function::Ping => &mut self.stats.relayed.pings,
            Function::Pong => &mut self.stats.relayed.pongs,
            Function::Query => &mut self.stats.relayed.queries,
            Function::QueryHit => &mut self.stats.relayed.query_hits,
            _ => &mut self.stats.relayed.pushes,
        };
        *counter += sent;
    }

    /// The TTL for a reply to a request that travelled `hops` hops: enough to get
    /// back, with some slack, never above the hard limit.
    fn reply_ttl(hops: Hops) -> Ttl {
        Ttl(hops.0.saturating_add(3).min(15))
    }

    fn reply(&mut self, to: ConnId, request: &Header, msg: &Message, priority: Priority) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let mut out = BytesMut::new();
        if msg
            .encode_frame(
                request.guid,
                Self::reply_ttl(request.hops),
                Hops(0),
                &mut out,
            )
            .is_ok()
            && !matches!(
                peer.tx.send(priority, out.freeze()),
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
        let id = Guid::new_random();
        if let Decision::Accept {
            forward: Some(f), ..
        } = self.router.originate(id, Class::Discovery, 2, now)
        {
            let mut out = BytesMut::new();
            Message::Ping(Ping::default())
                .encode_frame(id, Ttl(f.ttl), Hops(0), &mut out)
                .expect("an empty ping encodes");
            peer.tx.send(Priority::Own, out.freeze());
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
                peer.tx.send(Priority::Own, out.freeze());
            }
        }
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        let pong = Message::Pong(Pong {
            port: peer.local.port(),
            ip: ipv4_of(peer.local.ip()),
            files: self.library.len() as u32,
            kbytes: (self.library.total_size() / 1024).min(u32::MAX as u64) as u32,
            ggep: None,
        });
        self.reply(conn, h, &pong, Priority::Own);
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
        let Some(local) = self.peers.get(&conn).map(|p| p.local) else {
            return;
        };
        let flags = OpenDataFlags {
            push: Some(self.transfer.firewalled),
            busy: Some(self.transfer.busy()),
            ..OpenDataFlags::default()
        };
        for chunk in found.chunks(RESULTS_PER_HIT) {
            let hit = Message::QueryHit(QueryHit {
                port: local.port(),
                ip: ipv4_of(local.ip()),
                speed: 0,
                results: chunk.to_vec(),
                trailer: TrailerArea::Qhd(Trailer::new(VENDOR, flags, None)),
                servent: self.me,
            });
            self.reply(conn, h, &hit, Priority::Result);
            self.stats.hits_sent += 1;
        }
    }
}

fn ipv4_of(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}
