//! The two-tier network in one process: ultrapeers shielding leaves by their
//! tables, against the same nodes flooding as a flat mesh; and nodes started
//! with default settings sorting themselves into roles. Loopback only, bounded.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Dir, Rng};
use servent::core::router::Class;
use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig, search};
use servent::wire::qrp::QrpTable;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const UPS: usize = 10;
const LEAVES: usize = 100;
/// Ultrapeers each leaf connects to.
const PER_LEAF: usize = 3;

fn config(
    mode: Mode,
    up_qrp: bool,
    share: Option<std::path::PathBuf>,
    peers: Vec<String>,
) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: share.into_iter().collect(),
        peers,
        target_peers: 0,
        handshake_timeout: Duration::from_secs(5),
        tier: TierConfig {
            mode,
            ultrapeer_qrp: up_qrp,
            // Room for every leaf of the test and a search client (as leaves,
            // or as flat links when the same graph floods).
            leaves: 40,
            ultrapeer_links: 40,
            ..TierConfig::default()
        },
        // A flat mesh floods every query; only ultrapeers query dynamically.
        dq: node::DqConfig {
            max_searches: if up_qrp { 256 } else { 0 },
            ..node::DqConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// The ultrapeer graph: a ring with chords, so any ultrapeer is at most three
/// hops from any other.
fn up_edges() -> Vec<(usize, usize)> {
    let mut e = Vec::new();
    for i in 0..UPS {
        for step in [1, 3, 5] {
            let j = (i + step) % UPS;
            let edge = (i.min(j), i.max(j));
            if !e.contains(&edge) {
                e.push(edge);
            }
        }
    }
    e
}

struct Net {
    ups: Vec<NodeHandle>,
    leaves: Vec<NodeHandle>,
}

impl Net {
    fn all(&self) -> impl Iterator<Item = &NodeHandle> {
        self.ups.iter().chain(&self.leaves)
    }

    fn queries_sent(&self) -> u64 {
        self.all().map(|n| n.stats().relayed.queries).sum()
    }

    /// Waits until no dynamic query runs and no node has sent a query for a
    /// while (the search is over).
    async fn quiet(&self) {
        let deadline = Instant::now() + WAIT;
        let mut last = self.queries_sent();
        let mut still = 0;
        let running = || {
            self.ups
                .iter()
                .map(|u| u.stats().dynamic_running)
                .sum::<usize>()
        };
        while (still < 4 || running() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.queries_sent();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
    }

    async fn stop(self) {
        for n in self.ups.into_iter().chain(self.leaves) {
            tokio::time::timeout(WAIT, n.shutdown())
                .await
                .expect("shutdown");
        }
    }
}

/// Starts the ultrapeers (dialing along `up_edges`), then the leaves, each
/// sharing its own file and dialing `PER_LEAF` ultrapeers. With `two_tier`
/// unset, every node is a flat flooding peer on the same graph.
async fn build(dir: &Dir, names: &[String], two_tier: bool) -> Net {
    let edges = up_edges();
    let mut ups: Vec<NodeHandle> = Vec::new();
    for i in 0..UPS {
        let peers = edges
            .iter()
            .filter(|(a, b)| *b == i && *a < i)
            .map(|(a, _)| ups[*a].local_addr.to_string())
            .collect();
        let c = config(Mode::Ultrapeer, two_tier, None, peers);
        ups.push(node::start(c, CancellationToken::new()).await.unwrap());
    }
    for (i, up) in ups.iter_mut().enumerate() {
        let degree = edges.iter().filter(|(a, b)| *a == i || *b == i).count();
        assert!(
            up.wait_for(WAIT, |s| s.mesh_links == degree).await,
            "ultrapeer {i} links"
        );
    }
    let mut leaves = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let share = dir.0.join(format!("leaf{k}"));
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join(name), name.as_bytes()).unwrap();
        let peers = (0..PER_LEAF)
            .map(|j| ups[(k + j) % UPS].local_addr.to_string())
            .collect();
        let mode = if two_tier {
            Mode::Leaf
        } else {
            Mode::Ultrapeer
        };
        let mut c = config(mode, two_tier, Some(share), peers);
        // Half the leaves offer their file lists (their ultrapeers answer for
        // them); the others are known by their tables alone, like deployed
        // leaves.
        c.tier.offer_library = offers(k);
        leaves.push(node::start(c, CancellationToken::new()).await.unwrap());
    }
    for (k, leaf) in leaves.iter_mut().enumerate() {
        let ok = if two_tier {
            leaf.wait_for(WAIT, |s| {
                s.to_ultrapeers == PER_LEAF
                    && s.tables_sent >= PER_LEAF as u64
                    && s.offers_sent >= if offers(k) { PER_LEAF as u64 } else { 0 }
            })
            .await
        } else {
            leaf.wait_for(WAIT, |s| s.mesh_links == PER_LEAF).await
        };
        assert!(ok, "leaf {k} connected");
    }
    if two_tier {
        // Every leaf's table has reached its ultrapeers, and the ultrapeers'
        // merged tables have gone round (they are re-sent once a second while
        // they change).
        for (i, up) in ups.iter_mut().enumerate() {
            let degree = up.stats().mesh_links as u64;
            let offering = (0..LEAVES)
                .filter(|k| offers(*k) && (0..PER_LEAF).any(|j| (k + j) % UPS == i))
                .count() as u64;
            let ok = up
                .wait_for(WAIT, |s| {
                    s.leaves == LEAVES * PER_LEAF / UPS
                        && s.tables_received >= (LEAVES * PER_LEAF / UPS) as u64 + degree
                        && s.offers_received >= offering
                })
                .await;
            let s = up.stats();
            assert!(
                ok,
                "ultrapeer: {} leaves, {} tables, {} offers",
                s.leaves, s.tables_received, s.offers_received
            );
        }
        let sent = |ups: &[NodeHandle]| ups.iter().map(|u| u.stats().tables_sent).sum::<u64>();
        let deadline = Instant::now() + WAIT;
        let mut last = sent(&ups);
        loop {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            let now = sent(&ups);
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
    }
    Net { ups, leaves }
}

/// Whether leaf `k` offers its file list to its ultrapeers.
fn offers(k: usize) -> bool {
    k % 2 == 0
}

/// The table a leaf sharing `name` must have sent.
fn leaf_table(name: &str) -> QrpTable {
    let mut t = QrpTable::new(1 << 16).unwrap();
    t.insert_text(name);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tiers_reach_only_matching_leaves_with_ten_times_fewer_queries() {
    let dir = Dir::new("tiers");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let words: Vec<String> = (0..LEAVES).map(|_| rng.word(10)).collect();
    let names: Vec<String> = words
        .iter()
        .map(|w| format!("{w} {}.txt", rng.word(6)))
        .collect();
    let probes: Vec<usize> = (0..10).map(|_| rng.below(LEAVES)).collect();

    // Query messages per search, measured on each network.
    let mut per_search = Vec::new();
    for two_tier in [true, false] {
        let net = build(&dir, &names, two_tier).await;
        let mut total = 0;
        for &k in &probes {
            let before: Vec<u64> = net
                .leaves
                .iter()
                .map(|l| l.stats().router.delivered(Class::Search))
                .collect();
            let sent = net.queries_sent();
            let mut found = Vec::new();
            search::search(
                &net.ups[0].local_addr.to_string(),
                &words[k],
                7,
                Duration::from_secs(5),
                1,
                |h| found.push(h.name),
            )
            .await
            .unwrap();
            if found.is_empty() {
                for (i, n) in net.all().enumerate() {
                    let s = n.stats();
                    eprintln!(
                        "{i}: links {} leaves {} ups {} relayed {:?} delivered {} hits {} drops {:?}",
                        s.mesh_links,
                        s.leaves,
                        s.to_ultrapeers,
                        s.relayed,
                        s.router.delivered(Class::Search),
                        s.hits_sent,
                        s.router.drops().collect::<Vec<_>>()
                    );
                }
            }
            assert_eq!(found, vec![names[k].clone()], "two-tier: {two_tier}");
            net.quiet().await;
            total += net.queries_sent() - sent;
            if two_tier {
                // The query reached its owner, and no leaf whose table misses it.
                let reached: HashSet<usize> = net
                    .leaves
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| l.stats().router.delivered(Class::Search) > before[*i])
                    .map(|(i, _)| i)
                    .collect();
                // The owner was asked, unless its ultrapeer answered for it.
                assert_eq!(reached.contains(&k), !offers(k), "leaf {k}");
                for i in reached {
                    assert!(
                        leaf_table(&names[i]).matches_query_text(&words[k]),
                        "leaf {i} got a query its table does not match"
                    );
                }
            }
        }
        if two_tier {
            // Every leaf's file is found from one ultrapeer.
            for (k, w) in words.iter().enumerate() {
                let mut found = Vec::new();
                search::search(
                    &net.ups[0].local_addr.to_string(),
                    w,
                    7,
                    Duration::from_secs(5),
                    1,
                    |h| found.push(h.name),
                )
                .await
                .unwrap();
                assert_eq!(found, vec![names[k].clone()]);
            }
            let misses: u64 = net.ups.iter().map(|u| u.stats().leaf_table_misses).sum();
            assert!(misses > 0, "leaves were shielded");
            let for_leaves: u64 = net.ups.iter().map(|u| u.stats().hits_for_leaves).sum();
            assert!(for_leaves > 0, "ultrapeers answered for leaves");
        }
        per_search.push(total as f64 / probes.len() as f64);
        net.stop().await;
    }
    let (tiered, flat) = (per_search[0], per_search[1]);
    println!("queries per search: two-tier {tiered:.1}, flat {flat:.1}");
    assert!(
        tiered * 10.0 <= flat,
        "two-tier {tiered:.1} vs flat {flat:.1} queries per search"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_with_defaults_sort_themselves_into_ultrapeers_and_leaves() {
    const N: usize = 20;
    let dir = Dir::new("auto");
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let words: Vec<String> = (0..N).map(|_| rng.word(10)).collect();
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let share = dir.0.join(format!("auto{i}"));
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join(format!("{w}.txt")), w.as_bytes()).unwrap();
        // Every node knows the first; the rest they learn from each other.
        let peers = nodes
            .first()
            .map(|n| vec![n.local_addr.to_string()])
            .unwrap_or_default();
        // Default settings, but with the clock sped up: promotion after 1 s
        // alone instead of 60, demotion after 2 s without leaves instead of
        // 120, redials after 0.5 s instead of 30; and the machine's load
        // (other tests run beside this one) never counts as busy.
        let c = NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shares: vec![share],
            peers,
            handshake_timeout: Duration::from_secs(5),
            redial_pause: Some(Duration::from_millis(500)),
            tier: TierConfig {
                promote_after: Duration::from_secs(1),
                demote_after: Duration::from_secs(2),
                max_busy: f64::INFINITY,
                ..TierConfig::default()
            },
            ..NodeConfig::default()
        };
        assert_eq!(c.tier.mode, Mode::Auto);
        nodes.push(node::start(c, CancellationToken::new()).await.unwrap());
    }
    // Settled: some ultrapeers, every other node a leaf of one of them, and
    // the same for a few seconds.
    let settled = |nodes: &[NodeHandle]| {
        let ups = nodes.iter().filter(|n| n.stats().ultrapeer).count();
        ups > 0
            && ups < N
            && nodes.iter().all(|n| {
                let s = n.stats();
                // A leaf has an ultrapeer; an ultrapeer (if not alone) has links.
                (s.ultrapeer && (ups == 1 || s.mesh_links > 0)) || s.to_ultrapeers > 0
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut calm = 0;
    while calm < 3 {
        assert!(Instant::now() < deadline, "roles did not settle");
        tokio::time::sleep(Duration::from_secs(1)).await;
        calm = if settled(&nodes) { calm + 1 } else { 0 };
    }
    let ups: Vec<&NodeHandle> = nodes.iter().filter(|n| n.stats().ultrapeer).collect();
    println!(
        "{} ultrapeers, {} leaves; role changes {:?}",
        ups.len(),
        N - ups.len(),
        nodes
            .iter()
            .map(|n| n.stats().role_changes)
            .collect::<Vec<_>>()
    );
    // Every file is found from an ultrapeer (dynamic querying widens every
    // 2.4 s per hop of TTL: a file far away takes a few steps).
    for (i, w) in words.iter().enumerate() {
        let mut found = Vec::new();
        search::search(
            &ups[0].local_addr.to_string(),
            w,
            7,
            Duration::from_secs(30),
            1,
            |h| found.push(h.name),
        )
        .await
        .unwrap();
        assert_eq!(found, vec![format!("{w}.txt")], "node {i}'s file");
    }
    for n in nodes {
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("shutdown");
    }
}

#[tokio::test]
async fn a_search_through_a_leaf_follows_it_to_its_ultrapeer() {
    let dir = Dir::new("follow");
    let share = dir.0.join("leaf");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("quietfile.txt"), b"q").unwrap();
    let up = node::start(
        config(Mode::Ultrapeer, true, None, Vec::new()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut leaf = node::start(
        config(
            Mode::Leaf,
            true,
            Some(share),
            vec![up.local_addr.to_string()],
        ),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        leaf.wait_for(WAIT, |s| s.to_ultrapeers == 1 && s.tables_sent == 1)
            .await
    );
    let mut up = up;
    assert!(up.wait_for(WAIT, |s| s.tables_received == 1).await);
    // The leaf refuses a leaf (us) and names its ultrapeer; the search goes on
    // there and finds the leaf's file.
    let mut found = Vec::new();
    search::search(
        &leaf.local_addr.to_string(),
        "quietfile",
        3,
        Duration::from_secs(5),
        1,
        |h| found.push(h.name),
    )
    .await
    .unwrap();
    assert_eq!(found, vec!["quietfile.txt".to_string()]);
    for n in [leaf, up] {
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("shutdown");
    }
}
