//! Two tiers against flat flooding, on 1000 simulated nodes.
//!
//! Run with `cargo bench --bench tiers`. The nodes live in one process and talk
//! through an in-memory queue of deliveries ordered by a virtual clock (each
//! link has a fixed latency of 20–200 ms). Every node *is* the node's own
//! deciding core (`core::engine::Engine`), fed the frames other cores sent it
//! and ticked as the node's maintainer ticks it; nothing of its routing, QRP
//! tables, library offers or dynamic querying is copied here. Links are made
//! without a handshake (`Engine::open_link`), budgets are off, and the cores
//! exchange their tables and file lists on their first ticks before the
//! searches start. A search is a query the searcher sends to `fanout` of its
//! links, as `servent search` or a leaf does; the hits that reach the searcher
//! are counted.
//!
//! Reported, for rare files (one owner): Query messages per search and the
//! fraction of files found; for popular files (many owners): the messages a
//! search costs, the results it reaches, and the messages sent by the time the
//! 150th result arrived. A message is one Query sent on one link, whoever sends
//! it (the searcher, an ultrapeer to a leaf, a dynamic-query step, a relay).
//!
//! `cargo test --benches` runs a quick mode (200 nodes) that asserts the
//! two-tier network sends at least 10x fewer messages for rare files, that every
//! rare file is found in both networks, and that dynamic querying reaches 150
//! results for popular files with fewer messages than flooding.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use servent::core::ConnId;
use servent::core::engine::{Budgets, Config, Engine, Event as CoreEvent, LinkInfo, Links};
use servent::core::flow::{Offer, Priority};
use servent::core::hosts::HostCache;
use servent::core::library::Library;
use servent::core::router::{Class, DropReason};
use servent::core::tier::{Link, Mode, Tier, TierConfig};
use servent::framing::DescriptorCodec;
use servent::wire::{Frame, Function, Guid, Hops, Message, Query, QueryFlags, Ttl};
use tokio_util::codec::Decoder;

/// Results one query may get from a node (the node's default).
const MAX_RESULTS: usize = 100;
/// The TTL searches start with (the `servent search` default, and 0.4's).
const TTL: u8 = 7;
/// Results a dynamic query wants (the planner's default).
const WANTED: u32 = 150;
/// Copies of a popular title each of its owners shares.
const COPIES: [&str; 3] = ["live", "remix", "acoustic"];

mod common;
use common::Rng;

/// A reproducible message id from the generator.
fn guid(rng: &mut Rng) -> Guid {
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&rng.next().to_le_bytes());
    g[8..].copy_from_slice(&rng.next().to_le_bytes());
    Guid(g)
}

// ---------------------------------------------------------------------------------
// The network to simulate
// ---------------------------------------------------------------------------------

struct Params {
    nodes: usize,
    ultrapeers: usize,
    /// Ultrapeer links each ultrapeer aims for.
    up_degree: usize,
    /// Ultrapeers per leaf, and leaves per ultrapeer at most (TierConfig's).
    per_leaf: usize,
    max_leaves: usize,
    /// Degree of the random flat graph.
    flat_degree: usize,
    rare_queries: usize,
    /// Fractions of the nodes owning one popular title.
    popularity: &'static [f64],
    popular_queries: usize,
}

const FULL: Params = Params {
    nodes: 1000,
    ultrapeers: 100,
    up_degree: 20,
    per_leaf: 3,
    max_leaves: 30,
    flat_degree: 6,
    rare_queries: 300,
    popularity: &[0.05, 0.10, 0.20],
    popular_queries: 40,
};

const QUICK: Params = Params {
    nodes: 200,
    ultrapeers: 20,
    up_degree: 8,
    per_leaf: 3,
    max_leaves: 30,
    flat_degree: 6,
    rare_queries: 20,
    popularity: &[0.4],
    popular_queries: 8,
};

/// Who links to whom, with each link's latency in milliseconds.
type Edges = Vec<(usize, usize, u64)>;

/// A connected random graph on `nodes` in which every node has about `degree`
/// links: a ring, then random links between nodes still short of their degree.
fn regular_ish(nodes: &[usize], degree: usize, rng: &mut Rng) -> Edges {
    let n = nodes.len();
    let mut have: HashSet<(usize, usize)> = HashSet::new();
    let mut deg = vec![0usize; n];
    let mut edges = Vec::new();
    let mut add = |a: usize, b: usize, deg: &mut Vec<usize>, rng: &mut Rng| {
        let key = (a.min(b), a.max(b));
        if a != b && have.insert(key) {
            deg[a] += 1;
            deg[b] += 1;
            edges.push((nodes[a], nodes[b], 20 + rng.below(181) as u64));
        }
    };
    for i in 0..n {
        add(i, (i + 1) % n, &mut deg, rng);
    }
    for _ in 0..n * degree * 20 {
        let (a, b) = (rng.below(n), rng.below(n));
        if deg[a] < degree && deg[b] < degree {
            add(a, b, &mut deg, rng);
        }
    }
    edges
}

/// The nodes, their files and links, shared by every network built from them.
struct World {
    ultrapeers: usize,
    up_edges: Edges,
    /// (leaf, ultrapeer, latency).
    leaf_edges: Edges,
    flat_edges: Edges,
    files: Vec<Vec<String>>,
    /// Leaves that offer their file lists to their ultrapeers (servent leaves),
    /// the others are known by their tables alone (as deployed leaves are).
    offers: Vec<bool>,
    /// (searcher, query text, the file it looks for).
    rare: Vec<(usize, String, String)>,
    /// The popular titles, one set per popularity.
    popular: Vec<Titles>,
}

/// Titles each shared by the same number of owners, and a search for each.
struct Titles {
    /// The fraction of the nodes that own each title, and their number.
    share: f64,
    owners: usize,
    /// (searcher, title).
    searches: Vec<(usize, String)>,
}

impl World {
    fn new(p: &Params, rng: &mut Rng) -> World {
        let ups: Vec<usize> = (0..p.ultrapeers).collect();
        let up_edges = regular_ish(&ups, p.up_degree, rng);
        let mut leaf_edges = Vec::new();
        let mut load = vec![0usize; p.ultrapeers];
        for leaf in p.ultrapeers..p.nodes {
            let mut mine = Vec::new();
            while mine.len() < p.per_leaf {
                let u = rng.below(p.ultrapeers);
                if load[u] < p.max_leaves && !mine.contains(&u) {
                    load[u] += 1;
                    mine.push(u);
                    leaf_edges.push((leaf, u, 20 + rng.below(181) as u64));
                }
            }
        }
        let all: Vec<usize> = (0..p.nodes).collect();
        let flat_edges = regular_ish(&all, p.flat_degree, rng);

        let mut files: Vec<Vec<String>> = (0..p.nodes)
            .map(|_| {
                (0..3 + rng.below(4))
                    .map(|_| format!("{} {}.mp3", rng.word(7), rng.word(7)))
                    .collect()
            })
            .collect();
        let offers = (0..p.nodes).map(|i| i % 2 == 0).collect();
        let leaf = |rng: &mut Rng| p.ultrapeers + rng.below(p.nodes - p.ultrapeers);
        let rare = (0..p.rare_queries)
            .map(|_| {
                let owner = rng.below(p.nodes);
                let file = files[owner][rng.below(files[owner].len())].clone();
                let word = file.split(' ').next().unwrap().to_string();
                let mut searcher = leaf(rng);
                while searcher == owner {
                    searcher = leaf(rng);
                }
                (searcher, word, file)
            })
            .collect();
        let mut popular = Vec::new();
        for &share in p.popularity {
            let owners = (share * p.nodes as f64).round() as usize;
            let mut searches = Vec::new();
            for _ in 0..p.popular_queries {
                let title = rng.word(9);
                let mut chosen = HashSet::new();
                while chosen.len() < owners {
                    chosen.insert(rng.below(p.nodes));
                }
                for o in chosen {
                    for c in COPIES {
                        files[o].push(format!("{title} {c}.mp3"));
                    }
                }
                searches.push((leaf(rng), title));
            }
            popular.push(Titles {
                share,
                owners,
                searches,
            });
        }
        World {
            ultrapeers: p.ultrapeers,
            up_edges,
            leaf_edges,
            flat_edges,
            files,
            offers,
            rare,
            popular,
        }
    }
}

// ---------------------------------------------------------------------------------
// Nodes and messages: each node is the node's own core
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Leaf,
    Ultrapeer,
}

/// What a node's core queued on its links (a link's id is the peer's index).
#[derive(Default)]
struct Out {
    sent: Vec<(ConnId, Bytes)>,
}

impl Links for Out {
    fn send(&mut self, conn: ConnId, _: Priority, bytes: Bytes) -> Offer {
        self.sent.push((conn, bytes));
        Offer::Queued
    }
    fn close(&mut self, _: ConnId, _: u16, _: &str) {}
    fn close_silently(&mut self, _: ConnId) {}
    fn push(&mut self, _: servent::wire::Push) {}
    fn connect_back(&mut self, _: SocketAddr) {}
    fn uploads_busy(&self) -> bool {
        false
    }
}

/// A frame on its way, ordered by arrival time, then by sending order.
struct Event {
    at: u64,
    seq: u64,
    to: usize,
    from: usize,
    frame: Frame,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Event {
    fn cmp(&self, o: &Self) -> Ordering {
        // A min-heap on (at, seq).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Outcome {
    sent: u64,
    results: u32,
    distinct: u32,
    names: HashSet<String>,
    sent_at_wanted: Option<u64>,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6346))
}

fn servent_guid(i: usize) -> Guid {
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    Guid(g)
}

struct Net {
    nodes: Vec<Engine<Out>>,
    roles: Vec<Role>,
    latency: HashMap<(usize, usize), u64>,
    /// Each node's links, in the order they were made.
    links: Vec<Vec<usize>>,
    queue: BinaryHeap<Event>,
    seq: u64,
    /// Virtual time, in milliseconds since `t0`.
    now: u64,
    t0: Instant,
    /// The search in progress.
    searcher: usize,
    search: Guid,
    sent: u64,
    results: u32,
    names: HashSet<String>,
    distinct: HashSet<(Guid, String)>,
    sent_at_wanted: Option<u64>,
}

impl Net {
    /// The two-tier network: ultrapeers linked among themselves (exchanging
    /// tables), each leaf to a few ultrapeers (half of them offering their
    /// file lists).
    fn two_tier(w: &World) -> Net {
        let roles = (0..w.files.len())
            .map(|i| {
                if i < w.ultrapeers {
                    Role::Ultrapeer
                } else {
                    Role::Leaf
                }
            })
            .collect();
        let mut links: Vec<(usize, usize, u64, Link, Link)> = w
            .up_edges
            .iter()
            .map(|&(a, b, l)| (a, b, l, Link::Peer, Link::Peer))
            .collect();
        links.extend(
            w.leaf_edges
                .iter()
                .map(|&(leaf, up, l)| (leaf, up, l, Link::ToUltrapeer, Link::ToLeaf)),
        );
        Net::build(w, roles, &links, true)
    }

    /// Every node an ultrapeer without tables or leaves, linked by `edges`: the
    /// flat mesh, which floods (as the tier test's flat network does).
    fn flat(w: &World, edges: &Edges) -> Net {
        let roles = vec![Role::Ultrapeer; w.files.len()];
        let links: Vec<_> = edges
            .iter()
            .map(|&(a, b, l)| (a, b, l, Link::Flat, Link::Flat))
            .collect();
        Net::build(w, roles, &links, false)
    }

    fn build(
        w: &World,
        roles: Vec<Role>,
        links: &[(usize, usize, u64, Link, Link)],
        tables: bool,
    ) -> Net {
        let t0 = Instant::now();
        let nodes: Vec<Engine<Out>> = roles
            .iter()
            .enumerate()
            .map(|(i, role)| {
                let me = servent_guid(i);
                let mut library = Library::new();
                for (k, name) in w.files[i].iter().enumerate() {
                    library.add_at(k as u32 + 1, name, 1 << 20, None);
                }
                let mode = match role {
                    Role::Leaf => Mode::Leaf,
                    Role::Ultrapeer => Mode::Ultrapeer,
                };
                let tier = Tier::new(
                    TierConfig {
                        mode,
                        ultrapeer_links: 64,
                        leaves: 64,
                        leaf_ultrapeers: 8,
                        offer_library: *role == Role::Leaf && w.offers[i],
                        ultrapeer_qrp: tables,
                        ..TierConfig::default()
                    },
                    t0,
                    0.5,
                );
                Engine::new(
                    Config {
                        max_results: MAX_RESULTS,
                        hosts: HostCache::new(16),
                        budgets: Budgets::unlimited(),
                        max_table_fill: 1.0,
                        ..Config::new(me, library, tier)
                    },
                    Out::default(),
                )
            })
            .collect();
        let mut net = Net {
            nodes,
            roles,
            latency: HashMap::new(),
            links: vec![Vec::new(); w.files.len()],
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            t0,
            searcher: usize::MAX,
            search: Guid([0; 16]),
            sent: 0,
            results: 0,
            names: HashSet::new(),
            distinct: HashSet::new(),
            sent_at_wanted: None,
        };
        let degree = |n: usize| links.iter().filter(|l| l.0 == n || l.1 == n).count();
        for &(a, b, latency, ka, kb) in links {
            net.latency.insert((a, b), latency);
            net.latency.insert((b, a), latency);
            net.links[a].push(b);
            net.links[b].push(a);
            for (me, peer, kind) in [(a, b, ka), (b, a, kb)] {
                let info = LinkInfo {
                    local: addr_of(me),
                    remote_listen: Some(addr_of(peer)),
                    link: kind,
                    up_qrp: tables && kind == Link::Peer,
                    offers: true,
                    degree: degree(peer),
                    guid: Some(servent_guid(peer)),
                    remote: addr_of(peer),
                    vendor_messages: false,
                    hsep: false,
                    inbound: me == b,
                };
                let now = net.instant();
                net.nodes[me].open_link(ConnId(peer as u64), info, now);
                net.drain(me);
            }
        }
        // Tables and file lists go out on the first ticks: leaves' first, then
        // the ultrapeers' merges of them.
        for _ in 0..3 {
            net.now += 1000;
            for n in 0..net.nodes.len() {
                net.tick(n);
            }
            net.run();
        }
        net
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now)
    }

    fn tick(&mut self, n: usize) {
        let now = self.instant();
        self.nodes[n].handle(
            CoreEvent::Tick {
                busy: 0.0,
                wall: std::time::SystemTime::UNIX_EPOCH,
            },
            now,
        );
        self.drain(n);
    }

    /// What node `n`'s core queued goes on its way.
    fn drain(&mut self, n: usize) {
        let sent = std::mem::take(&mut self.nodes[n].links_mut().sent);
        for (conn, bytes) in sent {
            let to = conn.0 as usize;
            let latency = self.latency[&(n, to)];
            let mut buf = BytesMut::from(&bytes[..]);
            let mut codec = DescriptorCodec::default();
            while let Ok(Some(frame)) = codec.decode(&mut buf) {
                if frame.header.function == Function::Query {
                    self.sent += 1;
                }
                self.seq += 1;
                self.queue.push(Event {
                    at: self.now + latency,
                    seq: self.seq,
                    to,
                    from: n,
                    frame,
                });
            }
        }
    }

    /// `searcher` starts a search for `text`, sending it to `fanout` of its
    /// links (a leaf's are its ultrapeers), as `servent search` or a leaf
    /// does, and it runs to its end.
    fn search(&mut self, searcher: usize, text: &str, fanout: usize, guid: Guid) -> Outcome {
        self.searcher = searcher;
        self.search = guid;
        self.sent = 0;
        self.results = 0;
        self.names.clear();
        self.distinct.clear();
        self.sent_at_wanted = None;
        let frame = Frame::new(
            &Message::Query(Query::new(QueryFlags::with_bits(0), text)),
            guid,
            Ttl(TTL),
            Hops(0),
        )
        .expect("a query encodes");
        let to: Vec<usize> = self.links[searcher].iter().take(fanout).copied().collect();
        for peer in to {
            self.sent += 1;
            self.seq += 1;
            self.queue.push(Event {
                at: self.now + self.latency[&(searcher, peer)],
                seq: self.seq,
                to: peer,
                from: searcher,
                frame: frame.clone(),
            });
        }
        self.run();
        Outcome {
            sent: self.sent,
            results: self.results,
            distinct: self.distinct.len() as u32,
            names: std::mem::take(&mut self.names),
            sent_at_wanted: self.sent_at_wanted,
        }
    }

    /// Delivers everything in order, ticking the nodes that run dynamic
    /// queries once a (virtual) second, as the node's maintainer does, until
    /// nothing is left to do.
    fn run(&mut self) {
        loop {
            let next_tick = (self.now / 1000 + 1) * 1000;
            let next = self.queue.peek().map(|e| e.at);
            let running: Vec<usize> = (0..self.nodes.len())
                .filter(|n| {
                    self.roles[*n] == Role::Ultrapeer && self.nodes[*n].dynamic_running() > 0
                })
                .collect();
            if !running.is_empty() && next.is_none_or(|at| at >= next_tick) {
                self.now = next_tick;
                for n in running {
                    self.tick(n);
                }
                continue;
            }
            let Some(ev) = self.queue.pop() else { break };
            self.now = ev.at;
            if ev.to == self.searcher && ev.frame.header.guid == self.search {
                // The searcher's own query is not news to it; its hits are counted.
                if ev.frame.header.function == Function::QueryHit {
                    self.hit(&ev.frame);
                }
                continue;
            }
            let now = self.instant();
            self.nodes[ev.to].handle(
                CoreEvent::Frames {
                    conn: ConnId(ev.from as u64),
                    frames: vec![ev.frame],
                },
                now,
            );
            self.drain(ev.to);
        }
    }

    /// A hit for the search arrived at the searcher.
    fn hit(&mut self, frame: &Frame) {
        let Ok(Message::QueryHit(h)) = frame.message() else {
            return;
        };
        for r in &h.results {
            self.results += 1;
            let name = r.name_lossy();
            self.names.insert(name.clone());
            self.distinct.insert((h.servent, name));
        }
        if self.sent_at_wanted.is_none() && self.distinct.len() as u32 >= WANTED {
            self.sent_at_wanted = Some(self.sent);
        }
    }

    /// A counter of every node of `role`, summed.
    fn sum(&mut self, role: Role, f: impl Fn(&servent::core::engine::EngineStats) -> u64) -> u64 {
        (0..self.nodes.len())
            .filter(|n| self.roles[*n] == role)
            .map(|n| f(&self.nodes[n].stats()))
            .sum()
    }
}

// ---------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------

struct Rare {
    sent_per_query: f64,
    found: usize,
    queries: usize,
}

struct Popular {
    sent_per_query: f64,
    results_mean: f64,
    distinct_mean: f64,
    distinct_min: u32,
    reached: usize,
    queries: usize,
    /// Mean over the searches that reached 150 results.
    sent_at_wanted: f64,
}

fn rare(net: &mut Net, w: &World, fanout: usize, rng: &mut Rng) -> Rare {
    let mut sent = 0;
    let mut found = 0;
    for (searcher, text, file) in &w.rare {
        let o = net.search(*searcher, text, fanout, guid(rng));
        sent += o.sent;
        found += o.names.contains(file) as usize;
    }
    Rare {
        sent_per_query: sent as f64 / w.rare.len() as f64,
        found,
        queries: w.rare.len(),
    }
}

fn popular(net: &mut Net, searches: &[(usize, String)], fanout: usize, rng: &mut Rng) -> Popular {
    let outcomes: Vec<Outcome> = searches
        .iter()
        .map(|(s, title)| net.search(*s, title, fanout, guid(rng)))
        .collect();
    let reached: Vec<u64> = outcomes.iter().filter_map(|o| o.sent_at_wanted).collect();
    let n = outcomes.len() as f64;
    Popular {
        sent_per_query: outcomes.iter().map(|o| o.sent).sum::<u64>() as f64 / n,
        results_mean: outcomes.iter().map(|o| o.results as f64).sum::<f64>() / n,
        distinct_mean: outcomes.iter().map(|o| o.distinct as f64).sum::<f64>() / n,
        distinct_min: outcomes.iter().map(|o| o.distinct).min().unwrap_or(0),
        reached: reached.len(),
        queries: outcomes.len(),
        sent_at_wanted: reached.iter().sum::<u64>() as f64 / reached.len().max(1) as f64,
    }
}

fn degree_range(edges: &Edges, nodes: impl Iterator<Item = usize>) -> (usize, usize, f64) {
    let mut deg: HashMap<usize, usize> = HashMap::new();
    for &(a, b, _) in edges {
        *deg.entry(a).or_default() += 1;
        *deg.entry(b).or_default() += 1;
    }
    let d: Vec<usize> = nodes.map(|n| deg.get(&n).copied().unwrap_or(0)).collect();
    let mean = d.iter().sum::<usize>() as f64 / d.len() as f64;
    (*d.iter().min().unwrap(), *d.iter().max().unwrap(), mean)
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let p = if quick { QUICK } else { FULL };
    let started = Instant::now();
    let mut rng = Rng(0x5EED_7135_2026_1121);
    let w = World::new(&p, &mut rng);

    let (lo, hi, mean) = degree_range(&w.up_edges, 0..p.ultrapeers);
    let (flo, fhi, fmean) = degree_range(&w.flat_edges, 0..p.nodes);
    let mut same = w.up_edges.clone();
    same.extend(w.leaf_edges.iter().copied());
    let (_, _, smean) = degree_range(&same, 0..p.nodes);
    println!(
        "tiers: {} nodes: {} ultrapeers ({lo}-{hi} ultrapeer links, mean {mean:.1}), {} leaves \
         with {} ultrapeers each (half offer their file lists); {} rare searches, {} popular \
         per popularity; searches start with TTL {TTL}",
        p.nodes,
        p.ultrapeers,
        p.nodes - p.ultrapeers,
        p.per_leaf,
        w.rare.len(),
        p.popular_queries,
    );
    println!(
        "flat baselines: the same links flooded (mean degree {smean:.1}), and a random graph \
         of degree {flo}-{fhi} (mean {fmean:.1})"
    );

    // The networks, each searched by the same searchers for the same files.
    let mut nets: Vec<(&str, Net, usize)> = vec![
        (
            "two-tier, leaf asks its 3 ultrapeers",
            Net::two_tier(&w),
            usize::MAX,
        ),
        ("two-tier, leaf asks 1 ultrapeer", Net::two_tier(&w), 1),
        ("flat, same links", Net::flat(&w, &same), usize::MAX),
        (
            "flat, random graph",
            Net::flat(&w, &w.flat_edges),
            usize::MAX,
        ),
    ];

    let rares: Vec<Rare> = nets
        .iter_mut()
        .map(|(_, net, fanout)| rare(net, &w, *fanout, &mut rng))
        .collect();
    let populars: Vec<Vec<Popular>> = w
        .popular
        .iter()
        .map(|t| {
            nets.iter_mut()
                .map(|(_, net, fanout)| popular(net, &t.searches, *fanout, &mut rng))
                .collect()
        })
        .collect();

    println!();
    println!("rare files (one owner): Query messages per search, files found");
    println!();
    println!("| network | messages per search | found | messages x two-tier |");
    println!("|---|---|---|---|");
    let base = rares[0].sent_per_query;
    for ((name, _, _), r) in nets.iter().zip(&rares) {
        println!(
            "| {name} | {:.0} | {}/{} ({:.0} %) | {:.1} |",
            r.sent_per_query,
            r.found,
            r.queries,
            100.0 * r.found as f64 / r.queries as f64,
            r.sent_per_query / base
        );
    }
    println!();
    println!(
        "popular files ({} copies per owner): messages per search, results at the searcher, \
         messages sent by the time the {WANTED}th result arrived",
        COPIES.len()
    );
    println!();
    println!(
        "| owners | network | messages per search | distinct results (mean, min) | all results \
         | reached {WANTED} | messages at {WANTED}th result | messages x two-tier |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (t, rows) in w.popular.iter().zip(&populars) {
        let base = rows[0].sent_per_query;
        for ((name, _, _), r) in nets.iter().zip(rows) {
            println!(
                "| {:.0} % ({}) | {name} | {:.0} | {:.0}, {} | {:.0} | {}/{} | {} | {:.1} |",
                t.share * 100.0,
                t.owners,
                r.sent_per_query,
                r.distinct_mean,
                r.distinct_min,
                r.results_mean,
                r.reached,
                r.queries,
                if r.reached == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", r.sent_at_wanted)
                },
                r.sent_per_query / base
            );
        }
    }
    println!();
    for (name, net, _) in &mut nets {
        let dq = net.sum(Role::Ultrapeer, |s| s.dynamic_queries);
        let last_hop = net.sum(Role::Ultrapeer, |s| s.last_hop_misses);
        let leaf_misses = net.sum(Role::Ultrapeer, |s| s.leaf_table_misses);
        let drops = |net: &mut Net, reason, role| {
            net.sum(role, |s| s.router.dropped(Class::Search, reason))
        };
        let (du, dl) = (
            drops(net, DropReason::Duplicate, Role::Ultrapeer),
            drops(net, DropReason::Duplicate, Role::Leaf),
        );
        let (ru, rl) = (
            drops(net, DropReason::Repeated, Role::Ultrapeer),
            drops(net, DropReason::Repeated, Role::Leaf),
        );
        println!(
            "{name}: {dq} dynamic queries, {last_hop} last-hop misses, {leaf_misses} leaf-table \
             misses; search drops: duplicate {du} at ultrapeers, {dl} at leaves; repeated {ru} \
             at ultrapeers, {rl} at leaves"
        );
    }
    println!("({:.1} s)", started.elapsed().as_secs_f64());

    if quick {
        let (tier, flat) = (&rares[0], &rares[2]);
        assert!(
            tier.sent_per_query * 10.0 <= flat.sent_per_query,
            "rare files: two-tier {:.0} vs flat {:.0} messages per search",
            tier.sent_per_query,
            flat.sent_per_query
        );
        for r in &rares[..3] {
            assert_eq!(r.found, r.queries, "every rare file is found");
        }
        for rows in &populars {
            let (tier, flat) = (&rows[0], &rows[2]);
            assert_eq!(
                tier.reached, tier.queries,
                "dynamic querying reaches {WANTED}"
            );
            assert!(
                tier.sent_per_query < flat.sent_per_query,
                "popular files: two-tier {:.0} vs flat {:.0} messages per search",
                tier.sent_per_query,
                flat.sent_per_query
            );
        }
    }
}
