//! Out-of-band hits against hits routed back over TCP, in one simulated mesh.
//!
//! Run with `cargo bench --bench oob`. Every node is the node's own deciding
//! core (`core::engine::Engine`); the bench only carries what the cores send:
//! frames over the links between them and datagrams between their UDP
//! addresses, in order, with no latency, while a virtual clock ticks every
//! core once a second (dynamic queries pace themselves by it). Nothing of the
//! OOB exchange, the routing or the dynamic querying is copied here.
//!
//! The same ultrapeers, leaves, files and searches run three ways:
//!
//! - `tcp`: no node has a UDP port; every hit comes back along the query's
//!   path, one TCP message per link crossed.
//! - `oob`: every node has one; the searching leaf marks its query, the
//!   responders offer by LIME/12, the leaf claims with LIME/11 and the hits
//!   come to it by UDP.
//! - `proxied`: the searching leaves have no UDP port; their ultrapeers
//!   proxy their queries, claim the hits and pass them down the leaf's link.
//!
//! Reported per search: results reaching the searcher (all, and distinct by
//! servent and file index: a leaf under two proxying ultrapeers gets some
//! twice, as each proxies under its own MUID), Query messages (on
//! every link, relays and dynamic-query steps included), QueryHit messages on
//! links, datagrams (offers, claims and hits; not the reachability checks'
//! pings, exchanged in a warm-up before the searches), and all messages together;
//! then, per distinct result, the messages each way costs. The baseline is
//! the `tcp` run of the same searches.
//!
//! `cargo test --benches` runs a quick mode (12 ultrapeers, 90 leaves, 4
//! searches) asserting that OOB and proxied delivery bring the searcher at
//! least nine tenths of what TCP routing brings, that in `oob` no hit crosses
//! a TCP link, that `proxied` uses fewer QueryHit link messages than `tcp`,
//! and that a claimed result costs the responder no more than a few datagrams.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use servent::core::ConnId;
use servent::core::engine::{Budgets, Config, Engine, Event, LinkInfo, Links};
use servent::core::flow::{Offer, Priority};
use servent::core::hosts::HostCache;
use servent::core::library::Library;
use servent::core::tier::{Link, Mode, Tier, TierConfig};
use servent::framing::DescriptorCodec;
use servent::wire::queryhit::QueryHitView;
use servent::wire::{Function, Guid, Hops, Message, Push, Query, QueryFlags, Ttl};
use tokio_util::codec::Decoder;

mod common;
use common::Rng;

struct Params {
    ultrapeers: usize,
    leaves: usize,
    /// Ultrapeer links each ultrapeer aims for, and ultrapeers per leaf.
    up_degree: usize,
    per_leaf: usize,
    /// The share of leaves owning the searched title.
    share: f64,
    searches: usize,
}

const QUICK: Params = Params {
    ultrapeers: 12,
    leaves: 90,
    up_degree: 4,
    per_leaf: 2,
    share: 0.2,
    searches: 4,
};

const FULL: Params = Params {
    ultrapeers: 60,
    leaves: 900,
    up_degree: 6,
    per_leaf: 2,
    share: 0.1,
    searches: 20,
};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Way {
    Tcp,
    Oob,
    Proxied,
}

enum Out {
    Tcp(ConnId, Bytes),
    Udp(SocketAddr, Bytes),
    Own(Bytes),
}

type Outbox = Rc<RefCell<Vec<(usize, Out)>>>;

struct SimLinks {
    me: usize,
    out: Outbox,
    udp: bool,
}

impl Links for SimLinks {
    fn send(&mut self, conn: ConnId, _priority: Priority, bytes: Bytes) -> Offer {
        self.out.borrow_mut().push((self.me, Out::Tcp(conn, bytes)));
        Offer::Queued
    }
    fn close(&mut self, _conn: ConnId, _code: u16, _reason: &str) {}
    fn close_silently(&mut self, _conn: ConnId) {}
    fn push(&mut self, _push: Push) {}
    fn connect_back(&mut self, _to: SocketAddr) {}
    fn uploads_busy(&self) -> bool {
        false
    }
    fn own_hit(&mut self, _guid: Guid, payload: Bytes) {
        self.out.borrow_mut().push((self.me, Out::Own(payload)));
    }
    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) -> bool {
        self.out.borrow_mut().push((self.me, Out::Udp(to, bytes)));
        self.udp
    }
    fn udp_open(&self) -> bool {
        self.udp
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Counts {
    results: u64,
    /// Results of distinct (servent, file index) pairs.
    distinct: u64,
    queries: u64,
    hits_tcp: u64,
    datagrams: u64,
    other_tcp: u64,
}

impl Counts {
    fn messages(&self) -> u64 {
        self.queries + self.hits_tcp + self.datagrams
    }
}

struct Net {
    nodes: Vec<Engine<SimLinks>>,
    addr: Vec<SocketAddr>,
    by_addr: HashMap<SocketAddr, usize>,
    wires: HashMap<(usize, ConnId), (usize, ConnId)>,
    out: Outbox,
    t0: Instant,
    now: Duration,
    counts: Counts,
    searcher: usize,
    seen: std::collections::HashSet<(Guid, u32)>,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(10, (i >> 8) as u8, (i & 255) as u8, 1), 6346))
}

impl Net {
    /// Node `i < ultrapeers` is an ultrapeer, the rest leaves; `title` is
    /// shared by the leaves in `owners`; `no_udp` nodes have no UDP port.
    fn build(p: &Params, way: Way, owners: &[bool], searchers: &[usize], seed: u64) -> Net {
        let mut rng = Rng(seed);
        let t0 = Instant::now();
        let out: Outbox = Rc::default();
        let n = p.ultrapeers + p.leaves;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let up = i < p.ultrapeers;
            let mut library = Library::new();
            let mut names = vec![format!("ordinary file {i}.txt")];
            if !up && owners[i - p.ultrapeers] {
                names.push(format!("popular tune by node {i}.mp3"));
            }
            for (k, name) in names.iter().enumerate() {
                library.add(
                    name,
                    PathBuf::from(format!("/s/{i}/{k}")),
                    1000 + k as u64,
                    SystemTime::UNIX_EPOCH,
                    None,
                );
            }
            let mut me = [0u8; 16];
            me[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            me[8..].copy_from_slice(&rng.next().to_le_bytes());
            let tier = Tier::new(
                TierConfig {
                    mode: if up { Mode::Ultrapeer } else { Mode::Leaf },
                    ultrapeer_links: 64,
                    leaves: 200,
                    leaf_ultrapeers: 8,
                    ultrapeer_qrp: true,
                    offer_library: false,
                    ..TierConfig::default()
                },
                t0,
                0.5,
            );
            let udp = match way {
                Way::Tcp => false,
                Way::Oob => true,
                Way::Proxied => !searchers.contains(&i),
            };
            let mut e = Engine::new(
                Config {
                    hosts: HostCache::new(16),
                    budgets: Budgets::unlimited(),
                    max_table_fill: 1.0,
                    ..Config::new(Guid(me), library, tier)
                },
                SimLinks {
                    me: i,
                    out: out.clone(),
                    udp,
                },
            );
            if udp {
                e.set_udp_addr(Some(addr_of(i)));
            }
            nodes.push(e);
        }
        let mut net = Net {
            nodes,
            addr: (0..n).map(addr_of).collect(),
            by_addr: (0..n).map(|i| (addr_of(i), i)).collect(),
            wires: HashMap::new(),
            out,
            t0,
            now: Duration::ZERO,
            counts: Counts::default(),
            searcher: usize::MAX,
            seen: Default::default(),
        };
        // Ultrapeers: a ring and random chords; leaves: `per_leaf` ultrapeers.
        let mut deg = vec![0usize; p.ultrapeers];
        let mut have = std::collections::HashSet::new();
        let mut edges = Vec::new();
        for a in 0..p.ultrapeers {
            let b = (a + 1) % p.ultrapeers;
            if have.insert((a.min(b), a.max(b))) {
                edges.push((a, b));
                deg[a] += 1;
                deg[b] += 1;
            }
        }
        for _ in 0..p.ultrapeers * p.up_degree * 20 {
            let (a, b) = (rng.below(p.ultrapeers), rng.below(p.ultrapeers));
            if a != b
                && deg[a] < p.up_degree
                && deg[b] < p.up_degree
                && have.insert((a.min(b), a.max(b)))
            {
                edges.push((a, b));
                deg[a] += 1;
                deg[b] += 1;
            }
        }
        for (a, b) in edges {
            net.link(a, Link::Peer, b, Link::Peer, p.up_degree);
        }
        for l in p.ultrapeers..n {
            let first = rng.below(p.ultrapeers);
            for k in 0..p.per_leaf {
                let up = (first + k * (p.ultrapeers / p.per_leaf).max(1)) % p.ultrapeers;
                net.link(l, Link::ToUltrapeer, up, Link::ToLeaf, p.up_degree);
            }
        }
        net.pump();
        // Tables go round on the first ticks; connect-backs tell the nodes
        // with a UDP port that datagrams reach them.
        for _ in 0..90 {
            net.tick();
        }
        net
    }

    fn link(&mut self, a: usize, la: Link, b: usize, lb: Link, degree: usize) {
        let ca = ConnId(self.wires.len() as u64 + 1);
        let cb = ConnId(self.wires.len() as u64 + 2);
        self.wires.insert((a, ca), (b, cb));
        self.wires.insert((b, cb), (a, ca));
        let now = self.t0 + self.now;
        for (me, conn, link, peer, inbound) in [(a, ca, la, b, false), (b, cb, lb, a, true)] {
            let info = LinkInfo {
                local: self.addr[me],
                remote_listen: Some(self.addr[peer]),
                link,
                up_qrp: matches!(link, Link::Peer),
                offers: false,
                degree,
                guid: None,
                remote: self.addr[peer],
                vendor_messages: true,
                inbound,
                hsep: false,
            };
            self.nodes[me].open_link(conn, info, now);
        }
    }

    /// Carries everything sent until nothing is left.
    fn pump(&mut self) {
        let now = self.t0 + self.now;
        loop {
            let batch = std::mem::take(&mut *self.out.borrow_mut());
            if batch.is_empty() {
                return;
            }
            for (from, o) in batch {
                match o {
                    Out::Tcp(conn, bytes) => {
                        let Some(&(to, to_conn)) = self.wires.get(&(from, conn)) else {
                            continue;
                        };
                        let mut buf = BytesMut::from(&bytes[..]);
                        let mut frames = Vec::new();
                        while let Ok(Some(f)) = DescriptorCodec::default().decode(&mut buf) {
                            match f.header.function {
                                Function::Query => self.counts.queries += 1,
                                Function::QueryHit => self.counts.hits_tcp += 1,
                                _ => self.counts.other_tcp += 1,
                            }
                            frames.push(f);
                        }
                        self.nodes[to].handle(
                            Event::Frames {
                                conn: to_conn,
                                frames,
                            },
                            now,
                        );
                    }
                    Out::Udp(to, bytes) => {
                        // Offers, claims and hits; not the reachability
                        // checks' pings that share the port.
                        let oob = match bytes.get(16) {
                            Some(0x81) => true,
                            Some(0x31) => bytes.get(23..29).is_some_and(|v| {
                                &v[..4] == b"LIME" && matches!(v[4], 11 | 12) && v[5] == 0
                            }),
                            _ => false,
                        };
                        if oob {
                            self.counts.datagrams += 1;
                        }
                        if let Some(&j) = self.by_addr.get(&to) {
                            let from = self.addr[from];
                            self.nodes[j].handle(Event::Datagram { from, bytes }, now);
                        }
                    }
                    Out::Own(payload) => {
                        if from == self.searcher {
                            self.counts.results += payload.first().copied().unwrap_or(0) as u64;
                            if let Ok(v) = QueryHitView::parse(&payload) {
                                for r in v.results() {
                                    if self.seen.insert((v.servent, r.index)) {
                                        self.counts.distinct += 1;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn tick(&mut self) {
        self.now += Duration::from_secs(1);
        let now = self.t0 + self.now;
        for e in &mut self.nodes {
            e.handle(
                Event::Tick {
                    busy: 0.0,
                    wall: SystemTime::UNIX_EPOCH,
                },
                now,
            );
        }
        self.pump();
    }

    /// One search by leaf `who`; what it cost and brought.
    fn search(&mut self, who: usize, words: &str, id: Guid) -> Counts {
        self.counts = Counts::default();
        self.seen.clear();
        self.searcher = who;
        let mut out = BytesMut::new();
        Message::Query(Query::new(QueryFlags::with_bits(0), words))
            .encode_frame(id, Ttl(4), Hops(0), &mut out)
            .unwrap();
        let payload = Bytes::from(out).slice(23..);
        let now = self.t0 + self.now;
        self.nodes[who].search(id, payload, 4, now);
        self.pump();
        // Long enough for every dynamic-query step.
        for _ in 0..60 {
            self.tick();
        }
        self.counts
    }
}

fn run(p: &Params, way: Way) -> (Vec<Counts>, u64) {
    let mut rng = Rng(0x00b_5eed);
    let owners: Vec<bool> = (0..p.leaves)
        .map(|_| (rng.next() % 10_000) as f64 / 10_000.0 < p.share)
        .collect();
    let searchers: Vec<usize> = (0..p.searches)
        .map(|k| p.ultrapeers + (k * 7919) % p.leaves)
        .collect();
    let mut net = Net::build(p, way, &owners, &searchers, 42);
    let mut per = Vec::new();
    for who in &searchers {
        // Random as a servent's: a proxy keeps all but bytes 0-3 and 13-14.
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&rng.next().to_le_bytes());
        g[8..].copy_from_slice(&rng.next().to_le_bytes());
        per.push(net.search(*who, "popular tune", Guid(g)));
    }
    (per, owners.iter().filter(|o| **o).count() as u64)
}

fn mean(v: &[Counts], f: impl Fn(&Counts) -> u64) -> f64 {
    v.iter().map(&f).sum::<u64>() as f64 / v.len().max(1) as f64
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let p = if quick { QUICK } else { FULL };
    println!(
        "{} ultrapeers, {} leaves, {} searches for a title {:.0} % of the leaves own",
        p.ultrapeers,
        p.leaves,
        p.searches,
        p.share * 100.0
    );
    let mut rows = Vec::new();
    for way in [Way::Tcp, Way::Oob, Way::Proxied] {
        let (per, owners) = run(&p, way);
        rows.push((way, per, owners));
    }
    println!(
        "{:<8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>11} {:>12}",
        "way",
        "results",
        "distinct",
        "queries",
        "hits/tcp",
        "datagrams",
        "messages",
        "msgs/result",
        "x tcp msgs"
    );
    let base = mean(&rows[0].1, Counts::messages);
    let mut summary = HashMap::new();
    for (way, per, _) in &rows {
        let results = mean(per, |c| c.results);
        let distinct = mean(per, |c| c.distinct);
        let msgs = mean(per, Counts::messages);
        println!(
            "{:<8} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>11.2} {:>12.2}",
            format!("{way:?}").to_lowercase(),
            results,
            distinct,
            mean(per, |c| c.queries),
            mean(per, |c| c.hits_tcp),
            mean(per, |c| c.datagrams),
            msgs,
            msgs / distinct.max(1.0),
            msgs / base.max(1.0),
        );
        summary.insert(*way, per.clone());
    }
    if quick {
        let tcp = &summary[&Way::Tcp];
        let oob = &summary[&Way::Oob];
        let proxied = &summary[&Way::Proxied];
        let r = |v: &[Counts]| mean(v, |c| c.distinct);
        assert!(r(tcp) >= 1.0, "TCP routing finds the title");
        assert!(r(oob) >= 0.9 * r(tcp), "oob {} tcp {}", r(oob), r(tcp));
        assert!(
            r(proxied) >= 0.9 * r(tcp),
            "proxied {} tcp {}",
            r(proxied),
            r(tcp)
        );
        assert_eq!(mean(oob, |c| c.hits_tcp), 0.0, "no hit crosses a link");
        assert!(mean(tcp, |c| c.datagrams) == 0.0);
        assert!(
            mean(proxied, |c| c.hits_tcp) < mean(tcp, |c| c.hits_tcp),
            "proxied {} tcp {}",
            mean(proxied, |c| c.hits_tcp),
            mean(tcp, |c| c.hits_tcp)
        );
        // An offer, a claim and the hits: about three datagrams a responder.
        assert!(mean(oob, |c| c.datagrams) <= 3.0 * mean(oob, |c| c.results) + 1.0);
        println!("quick mode: assertions hold");
    }
}
