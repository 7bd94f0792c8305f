//! Bootstrap: the time from a node's start to its first ultrapeer link, by how
//! it learns where to connect, as a ratio to a start with a hand-given `--peer`
//! measured in the same run.
//!
//! Run with `cargo bench --bench bootstrap`. Every round starts, on loopback, a
//! fresh ultrapeer, a second ultrapeer linked to it, and a fresh
//! `servent webcache` that already lists the first; then a leaf that knows
//! only what the case gives it (no host cache), timed from `node::start` until
//! it has an ultrapeer link. Reported per case: the median over the rounds,
//! and its ratio to the `--peer` case's median.
//!
//! Cases are rows of [`CASES`]: a name and what the leaf is given (HTTP host
//! caches, UDP host caches). A new way to bootstrap is one more row.
//!
//! `cargo test --benches` runs a quick mode (3 rounds) that asserts every case
//! joins in every round, and that bootstrapping from a cache costs less than
//! one maintainer tick (1 s) over a hand-given peer: the learned hosts are dialed
//! as soon as they arrive, not at the next tick.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use servent::bootstrap::server::{self as cache, ServerConfig, WebcacheHandle};
use servent::core::webcache::StoreConfig;
use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig};
use servent::wire::webcache::CacheUrl;
use tokio_util::sync::CancellationToken;

/// Longest wait for a link.
const WAIT: Duration = Duration::from_secs(20);

/// What a round starts before the leaf.
struct Net {
    /// The ultrapeer the caches name.
    up: SocketAddr,
    /// The `servent webcache`, listing `up`.
    cache: SocketAddr,
}

/// What a case gives the leaf.
type Setup = fn(&Net) -> NodeConfig;

/// The cases; the first is the baseline.
const CASES: &[(&str, Setup)] = &[
    ("--peer (baseline)", |n| NodeConfig {
        peers: vec![n.up.to_string()],
        ..leaf()
    }),
    ("GWebCache spec 2", |n| NodeConfig {
        webcaches: vec![CacheUrl::parse(&format!("http://{}/gwc.php", n.cache)).unwrap()],
        ..leaf()
    }),
    ("gtk GHC /list4", |n| NodeConfig {
        webcaches: vec![CacheUrl::parse(&format!("http://{}/list4", n.cache)).unwrap()],
        ..leaf()
    }),
    // The ultrapeer answers the cache ping itself: its own pong and the
    // other ultrapeer packed in IPP (loopback hosts, hence `local_network`).
    ("UHC: the ultrapeer", |n| NodeConfig {
        udp_host_caches: vec![n.up.to_string()],
        local_network: true,
        ..leaf()
    }),
    // A cache name that does not answer first (a silent port), then one
    // that does: one round, the answer of the second is taken.
    ("UHC: silent + live", |n| NodeConfig {
        udp_host_caches: vec![SILENT.to_string(), n.up.to_string()],
        local_network: true,
        ..leaf()
    }),
];

/// A loopback port nothing listens on (datagrams to it are lost).
const SILENT: &str = "127.0.0.1:9";

fn leaf() -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 2,
        tier: TierConfig {
            mode: Mode::Leaf,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    }
}

fn ultrapeer(peers: Vec<String>, webcaches: Vec<CacheUrl>) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 0,
        peers,
        webcaches,
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// A fresh cache, an ultrapeer it lists, and a second ultrapeer linked to it.
async fn network() -> (Net, [NodeHandle; 2], WebcacheHandle) {
    let cache = cache::start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: StoreConfig::default(),
            local_network: false,
            data_dir: None,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let gwc = CacheUrl::parse(&format!("http://{}/", cache.local_addr)).unwrap();
    let up = node::start(ultrapeer(Vec::new(), vec![gwc]), CancellationToken::new())
        .await
        .unwrap();
    let mut other = node::start(
        ultrapeer(vec![up.local_addr.to_string()], Vec::new()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        other.wait_for(WAIT, |s| s.mesh_links >= 1).await,
        "the ultrapeers never linked"
    );
    let t = Instant::now();
    while cache.hosts() == 0 {
        assert!(t.elapsed() < WAIT, "the ultrapeer never listed itself");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let net = Net {
        up: up.local_addr,
        cache: cache.local_addr,
    };
    (net, [up, other], cache)
}

/// One start of a leaf set up by `setup`: the time to its first ultrapeer link.
async fn once(setup: Setup) -> Duration {
    let (net, ups, cache) = network().await;
    let start = Instant::now();
    let mut leaf = node::start(setup(&net), CancellationToken::new())
        .await
        .unwrap();
    let joined = leaf.wait_for(WAIT, |s| s.to_ultrapeers >= 1).await;
    let took = start.elapsed();
    assert!(joined, "no ultrapeer link within {WAIT:?}");
    leaf.shutdown().await;
    for n in ups {
        n.shutdown().await;
    }
    cache.shutdown().await;
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds = if quick { 3 } else { 15 };
    let mut medians = Vec::new();
    for (name, setup) in CASES {
        let mut times = Vec::new();
        for _ in 0..rounds {
            times.push(once(*setup).await);
        }
        medians.push((*name, median(times)));
    }
    let base = medians[0].1;
    println!("bootstrap: time from start to the first ultrapeer link, median of {rounds}");
    println!("{:<22} {:>10} {:>8}", "case", "median", "ratio");
    for (name, m) in &medians {
        println!(
            "{:<22} {:>8.1}ms {:>7.1}x",
            name,
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    for (name, m) in &medians[1..] {
        assert!(
            *m < base + Duration::from_secs(1),
            "{name}: {m:?} against {base:?} with --peer: the learned hosts waited for a tick"
        );
    }
}
