//! Two tiers against flat flooding, on 1000 simulated nodes.
//!
//! Run with `cargo bench --bench tiers`. The nodes live in one process and talk
//! through an in-memory queue of deliveries ordered by a virtual clock (each
//! link has a fixed latency of 20–200 ms). What each node decides is decided by
//! the project's own core, as the node's engine (`src/node/engine.rs`) combines
//! it: `Router` for duplicates, TTL and hops and the way hits go back;
//! `QrpTable` for the leaves' tables and the ultrapeers' merged tables (a query
//! goes to a leaf only if its table matches, to a neighbour ultrapeer on its
//! last hop only if that ultrapeer's table matches); `dq::Planner` for the
//! dynamic queries ultrapeers run for their leaves, stepped once a virtual
//! second; `Library` for answering. The glue below mirrors the engine's
//! `frame`, `send`, `send_to_leaves`, `start_dq`, `dq_steps`, `answer_query` and
//! `answer_for_leaves`.
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
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use servent::core::ConnId;
use servent::core::dq::{self, Candidate, DqConfig, Planner};
use servent::core::library::Library;
use servent::core::router::{Class, Decision, DropReason, Forward, Router, RouterConfig, Targets};
use servent::wire::Guid;
use servent::wire::qrp::QrpTable;

/// As in the engine.
const TABLE_LEN: usize = 1 << 16;
const RESULTS_PER_HIT: usize = 10;
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
// Nodes and messages
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Leaf,
    Ultrapeer,
}

/// As the engine's `Link`, for the kinds that occur here.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// We are this ultrapeer's leaf.
    ToUltrapeer,
    /// This is our leaf.
    ToLeaf,
    /// Another ultrapeer (or, flat, any other node).
    Peer,
}

struct LinkTo {
    peer: usize,
    kind: Link,
    latency: u64,
}

struct Node {
    guid: Guid,
    role: Role,
    links: Vec<LinkTo>,
    router: Router,
    library: Library,
    offers: bool,
    dq: Planner<Guid>,
    /// The query each dynamic query sends, as it arrived.
    dq_frames: HashMap<Guid, Query>,
}

impl Node {
    fn link(&self, peer: usize) -> Option<&LinkTo> {
        self.links.iter().find(|l| l.peer == peer)
    }
}

#[derive(Clone)]
struct Query {
    guid: Guid,
    text: Rc<str>,
    ttl: u8,
    hops: u8,
}

struct Hit {
    guid: Guid,
    responder: Guid,
    ttl: u8,
    hops: u8,
    names: Rc<Vec<String>>,
}

enum Msg {
    Query(Query),
    Hit(Hit),
}

struct Event {
    at: u64,
    seq: u64,
    to: usize,
    from: usize,
    msg: Msg,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    /// Earliest first out of the (max-)heap.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What one search did.
struct Outcome {
    sent: u64,
    /// Results in the hits that arrived, and how many of them were distinct (an
    /// offering leaf is answered for by each of its ultrapeers the query reaches).
    results: u32,
    distinct: u32,
    names: HashSet<String>,
    sent_at_wanted: Option<u64>,
}

#[derive(Default)]
struct Counters {
    last_hop_misses: u64,
    leaf_table_misses: u64,
    dynamic_queries: u64,
}

struct Net {
    nodes: Vec<Node>,
    /// The table each node's neighbours hold for it: a leaf's own, an
    /// ultrapeer's merge (inter-ultrapeer QRP); none in the flat network.
    tables: Vec<Option<QrpTable>>,
    queue: BinaryHeap<Event>,
    seq: u64,
    /// Virtual time, in milliseconds since `t0`.
    now: u64,
    t0: Instant,
    dq_running: BTreeSet<usize>,
    counters: Counters,
    /// The search in progress.
    searcher: usize,
    sent: u64,
    results: u32,
    names: HashSet<String>,
    distinct: HashSet<(Guid, String)>,
    sent_at_wanted: Option<u64>,
}

impl Net {
    /// The two-tier network: ultrapeers linked among themselves, each leaf to a
    /// few ultrapeers.
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
        let mut net = Net::build(w, roles, &links);
        // Every leaf's table (as its RESET and PATCH carry it), then each
        // ultrapeer's: its own files merged with its leaves' tables.
        for (i, node) in net.nodes.iter().enumerate() {
            if node.role == Role::Leaf {
                net.tables[i] = Some(own_table(&w.files[i]));
            }
        }
        for i in 0..w.ultrapeers {
            let mut t = own_table(&w.files[i]);
            for l in &net.nodes[i].links {
                if l.kind == Link::ToLeaf {
                    t.merge(net.tables[l.peer].as_ref().expect("leaf table"));
                }
            }
            net.tables[i] = Some(t);
        }
        net
    }

    /// Every node an ultrapeer without tables or leaves, linked by `edges`: the
    /// flat mesh, which floods (as the tier test's flat network does).
    fn flat(w: &World, edges: &Edges) -> Net {
        let roles = vec![Role::Ultrapeer; w.files.len()];
        let links: Vec<_> = edges
            .iter()
            .map(|&(a, b, l)| (a, b, l, Link::Peer, Link::Peer))
            .collect();
        Net::build(w, roles, &links)
    }

    fn build(w: &World, roles: Vec<Role>, links: &[(usize, usize, u64, Link, Link)]) -> Net {
        let mut nodes: Vec<Node> = roles
            .into_iter()
            .enumerate()
            .map(|(i, role)| {
                let mut g = [0u8; 16];
                g[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                let guid = Guid(g);
                let mut library = Library::new();
                for (k, name) in w.files[i].iter().enumerate() {
                    library.add_at(k as u32 + 1, name, 1 << 20, None);
                }
                Node {
                    guid,
                    role,
                    links: Vec::new(),
                    router: Router::new(guid, RouterConfig::default()),
                    library,
                    offers: role == Role::Leaf && w.offers[i],
                    dq: Planner::new(DqConfig::default()),
                    dq_frames: HashMap::new(),
                }
            })
            .collect();
        for &(a, b, latency, ka, kb) in links {
            nodes[a].links.push(LinkTo {
                peer: b,
                kind: ka,
                latency,
            });
            nodes[b].links.push(LinkTo {
                peer: a,
                kind: kb,
                latency,
            });
            nodes[a].router.connection_opened(ConnId(b as u64));
            nodes[b].router.connection_opened(ConnId(a as u64));
        }
        Net {
            tables: (0..nodes.len()).map(|_| None).collect(),
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            t0: Instant::now(),
            dq_running: BTreeSet::new(),
            counters: Counters::default(),
            searcher: usize::MAX,
            sent: 0,
            results: 0,
            names: HashSet::new(),
            distinct: HashSet::new(),
            sent_at_wanted: None,
        }
    }

    fn instant(&self) -> Instant {
        self.t0 + Duration::from_millis(self.now)
    }

    fn push(&mut self, from: usize, to: usize, msg: Msg) {
        let latency = self.nodes[from]
            .link(to)
            .expect("sent on an open link")
            .latency;
        if matches!(msg, Msg::Query(_)) {
            self.sent += 1;
        }
        self.seq += 1;
        self.queue.push(Event {
            at: self.now + latency,
            seq: self.seq,
            to,
            from,
            msg,
        });
    }

    /// Whether `q` matches the table `peer` sent us (`None`: it sent none).
    fn matches(&self, peer: usize, q: &Query) -> Option<bool> {
        self.tables[peer]
            .as_ref()
            .map(|t| t.matches_query_text(&q.text))
    }

    /// `searcher` starts a search for `text`, sending it to `fanout` of its
    /// links (a leaf's are its ultrapeers), and it runs to its end.
    fn search(&mut self, searcher: usize, text: &str, fanout: usize, guid: Guid) -> Outcome {
        self.searcher = searcher;
        self.sent = 0;
        self.results = 0;
        self.names.clear();
        self.distinct.clear();
        self.sent_at_wanted = None;
        let now = self.instant();
        let Decision::Accept {
            forward: Some(f), ..
        } = self.nodes[searcher]
            .router
            .originate(guid, Class::Search, TTL, now)
        else {
            unreachable!("a search is always sent")
        };
        let q = Query {
            guid,
            text: text.into(),
            ttl: f.ttl,
            hops: f.hops,
        };
        let to: Vec<usize> = self.nodes[searcher]
            .links
            .iter()
            .take(fanout)
            .map(|l| l.peer)
            .collect();
        for peer in to {
            self.push(searcher, peer, Msg::Query(q.clone()));
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

    /// Delivers everything in order, stepping the dynamic queries once a
    /// (virtual) second as the engine's tick does, until nothing is left to do.
    fn run(&mut self) {
        loop {
            let next_tick = (self.now / 1000 + 1) * 1000;
            let next = self.queue.peek().map(|e| e.at);
            if !self.dq_running.is_empty() && next.is_none_or(|at| at >= next_tick) {
                self.now = next_tick;
                let running: Vec<usize> = self.dq_running.iter().copied().collect();
                for n in running {
                    self.dq_steps(n);
                }
                continue;
            }
            let Some(ev) = self.queue.pop() else { break };
            self.now = ev.at;
            match ev.msg {
                Msg::Query(q) => self.query(ev.to, ev.from, q),
                Msg::Hit(h) => self.hit(ev.to, ev.from, h),
            }
        }
    }

    /// The engine's `frame` for a Query.
    fn query(&mut self, n: usize, from: usize, q: Query) {
        let now = self.instant();
        let node = &mut self.nodes[n];
        let decision = node.router.route(
            ConnId(from as u64),
            q.guid,
            Class::Search,
            q.ttl,
            q.hops,
            now,
        );
        let Decision::Accept { deliver, forward } = decision else {
            return;
        };
        // An ultrapeer and its leaves are one unit: a query goes to every leaf
        // whose table matches, even when its TTL ends here.
        if node.role == Role::Ultrapeer {
            self.send_to_leaves(n, from, &q, forward.as_ref());
        }
        let from_leaf = self.nodes[n]
            .link(from)
            .is_some_and(|l| l.kind == Link::ToLeaf);
        if let (Some(f), true) = (&forward, from_leaf) {
            if self.start_dq(n, from, &q, f) {
                return self.deliver(n, from, &q, deliver);
            }
        }
        if let Some(f) = forward {
            self.send(n, f, &q);
        }
        self.deliver(n, from, &q, deliver);
    }

    /// The engine's `send` for a Query.
    fn send(&mut self, n: usize, f: Forward, q: &Query) {
        // A leaf relays nothing.
        if self.nodes[n].role == Role::Leaf {
            return;
        }
        let last_hop = f.ttl == 1;
        let mut to = Vec::new();
        for l in &self.nodes[n].links {
            let wanted = match f.to {
                Targets::All => true,
                Targets::AllExcept(c) => c != ConnId(l.peer as u64),
                Targets::One(c) => c == ConnId(l.peer as u64),
            };
            if !wanted {
                continue;
            }
            match l.kind {
                Link::ToUltrapeer | Link::ToLeaf => continue,
                Link::Peer if last_hop && self.matches(l.peer, q) == Some(false) => {
                    self.counters.last_hop_misses += 1;
                    continue;
                }
                Link::Peer => to.push(l.peer),
            }
        }
        for peer in to {
            let m = Query {
                ttl: f.ttl,
                hops: f.hops,
                ..q.clone()
            };
            self.push(n, peer, Msg::Query(m));
        }
    }

    /// The engine's `send_to_leaves`: to every leaf but `from` whose table
    /// matches and that we do not answer for.
    fn send_to_leaves(&mut self, n: usize, from: usize, q: &Query, forward: Option<&Forward>) {
        let (ttl, hops) = match forward {
            Some(f) => (f.ttl.max(1), f.hops),
            None => (1, q.hops.saturating_add(1)),
        };
        let mut to = Vec::new();
        for l in &self.nodes[n].links {
            if l.peer == from || l.kind != Link::ToLeaf || self.nodes[l.peer].offers {
                continue;
            }
            if self.matches(l.peer, q) != Some(true) {
                self.counters.leaf_table_misses += 1;
                continue;
            }
            to.push(l.peer);
        }
        for peer in to {
            let m = Query {
                ttl,
                hops,
                ..q.clone()
            };
            self.push(n, peer, Msg::Query(m));
        }
    }

    /// The ultrapeer links as the planner sees them; with the query, for the
    /// probes (`start_dq`), without it for the later steps (`dq_steps`).
    fn candidates(&self, n: usize, q: Option<&Query>) -> Vec<Candidate> {
        self.nodes[n]
            .links
            .iter()
            .filter(|l| l.kind == Link::Peer)
            .map(|l| Candidate {
                conn: ConnId(l.peer as u64),
                matches: q.and_then(|q| self.matches(l.peer, q)),
                degree: self.nodes[l.peer]
                    .links
                    .iter()
                    .filter(|m| m.kind == Link::Peer)
                    .count(),
            })
            .collect()
    }

    /// The engine's `start_dq`.
    fn start_dq(&mut self, n: usize, from: usize, q: &Query, f: &Forward) -> bool {
        let links = self.candidates(n, Some(q));
        let now = self.instant();
        let node = &mut self.nodes[n];
        let Some(probes) = node
            .dq
            .start(q.guid, ConnId(from as u64), f.ttl + 1, &links, now)
        else {
            return false;
        };
        self.counters.dynamic_queries += 1;
        node.dq_frames.insert(q.guid, q.clone());
        self.dq_running.insert(n);
        for p in probes {
            self.dq_send(n, q, p, f.hops);
        }
        true
    }

    fn dq_send(&mut self, n: usize, q: &Query, s: dq::Send, hops: u8) {
        let peer = s.conn.0 as usize;
        if self.nodes[n].link(peer).is_none() {
            return;
        }
        let m = Query {
            ttl: s.ttl,
            hops,
            ..q.clone()
        };
        self.push(n, peer, Msg::Query(m));
    }

    /// The engine's `dq_steps`.
    fn dq_steps(&mut self, n: usize) {
        let now = self.instant();
        if self.nodes[n].dq.is_empty() {
            self.nodes[n].dq_frames.clear();
            self.dq_running.remove(&n);
            return;
        }
        // The engine plans each search with its own query's view of the tables.
        let per_query: std::collections::HashMap<_, _> = self.nodes[n]
            .dq_frames
            .iter()
            .map(|(id, q)| (*id, self.candidates(n, Some(q))))
            .collect();
        let steps = self.nodes[n]
            .dq
            .step(now, |id| per_query.get(id).cloned().unwrap_or_default());
        for (id, s) in steps {
            if let Some(q) = self.nodes[n].dq_frames.get(&id).cloned() {
                let hops = q.hops.saturating_add(1);
                self.dq_send(n, &q, s, hops);
            }
        }
        let node = &mut self.nodes[n];
        let dq = &node.dq;
        node.dq_frames.retain(|id, _| dq.contains(id));
        if node.dq.is_empty() {
            self.dq_running.remove(&n);
        }
    }

    /// The engine's `deliver` for a Query: `answer_query`, and as an ultrapeer
    /// `answer_for_leaves`.
    fn deliver(&mut self, n: usize, from: usize, q: &Query, deliver: bool) {
        if !deliver {
            return;
        }
        let mut hits: Vec<(Guid, Vec<String>)> = Vec::new();
        let node = &self.nodes[n];
        let own: Vec<String> = node
            .library
            .search(&q.text, &[], MAX_RESULTS)
            .into_iter()
            .map(|f| f.name.clone())
            .collect();
        if !own.is_empty() {
            hits.push((node.guid, own));
        }
        if node.role == Role::Ultrapeer {
            for l in &node.links {
                let leaf = &self.nodes[l.peer];
                if l.peer == from || l.kind != Link::ToLeaf || !leaf.offers {
                    continue;
                }
                let found: Vec<String> = leaf
                    .library
                    .search(&q.text, &[], MAX_RESULTS)
                    .into_iter()
                    .map(|f| f.name.clone())
                    .collect();
                if !found.is_empty() {
                    hits.push((leaf.guid, found));
                }
            }
        }
        for (responder, names) in hits {
            for chunk in names.chunks(RESULTS_PER_HIT) {
                let hit = Hit {
                    guid: q.guid,
                    responder,
                    // The engine's `reply_ttl`.
                    ttl: q.hops.saturating_add(3).min(15),
                    hops: 0,
                    names: Rc::new(chunk.to_vec()),
                };
                self.push(n, from, Msg::Hit(hit));
            }
        }
    }

    /// The engine's `frame` for a QueryHit.
    fn hit(&mut self, n: usize, from: usize, h: Hit) {
        let now = self.instant();
        let node = &mut self.nodes[n];
        let class = Class::SearchReply {
            responder: h.responder,
        };
        let decision = node
            .router
            .route(ConnId(from as u64), h.guid, class, h.ttl, h.hops, now);
        let Decision::Accept { deliver, forward } = decision else {
            return;
        };
        if node.dq.contains(&h.guid) {
            node.dq.results(&h.guid, h.names.len() as u32);
        }
        if deliver && n == self.searcher {
            self.results += h.names.len() as u32;
            self.names.extend(h.names.iter().cloned());
            self.distinct
                .extend(h.names.iter().map(|name| (h.responder, name.clone())));
            if self.distinct.len() as u32 >= WANTED && self.sent_at_wanted.is_none() {
                self.sent_at_wanted = Some(self.sent);
            }
        }
        if let Some(Forward {
            to: Targets::One(c),
            ttl,
            hops,
        }) = forward
        {
            let hit = Hit { ttl, hops, ..h };
            self.push(n, c.0 as usize, Msg::Hit(hit));
        }
    }

    fn drops(&self, reason: DropReason, role: Role) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.role == role)
            .map(|n| n.router.stats().dropped(Class::Search, reason))
            .sum()
    }
}

/// A node's table of its own files, as the engine's `build_table` makes it.
fn own_table(files: &[String]) -> QrpTable {
    let mut t = QrpTable::new(TABLE_LEN).expect("a valid table length");
    for f in files {
        t.insert_text(f);
    }
    t
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
    for (name, net, _) in &nets {
        println!(
            "{name}: {} dynamic queries, {} last-hop misses, {} leaf-table misses; search drops: \
             duplicate {} at ultrapeers, {} at leaves; repeated {} at ultrapeers, {} at leaves",
            net.counters.dynamic_queries,
            net.counters.last_hop_misses,
            net.counters.leaf_table_misses,
            net.drops(DropReason::Duplicate, Role::Ultrapeer),
            net.drops(DropReason::Duplicate, Role::Leaf),
            net.drops(DropReason::Repeated, Role::Ultrapeer),
            net.drops(DropReason::Repeated, Role::Leaf),
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
