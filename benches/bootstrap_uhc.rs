//! Bootstrap from a UDP host cache: the time from a node's start to its first
//! ultrapeer link, as a ratio to a start with a hand-given `--peer` measured
//! in the same run.
//!
//! Run with `cargo bench --bench bootstrap_uhc`. Every round starts, on
//! loopback, a fresh ultrapeer and a second ultrapeer linked to it; then a
//! leaf that knows only what the case gives it (no host cache), timed from
//! `node::start` until it has an ultrapeer link. Reported per case: the median
//! over the rounds, and its ratio to the `--peer` case's median.
//!
//! Cases are rows of [`CASES`]: a name and what the leaf is given.
//!
//! `cargo test --benches` runs a quick mode (3 rounds) that asserts every case
//! joins in every round, and that bootstrapping from a UDP host cache costs
//! less than one maintainer tick (1 s) over a hand-given peer: the cache is
//! pinged at the first tick and the hosts of its answer are dialed as soon as
//! it arrives, not at the next tick.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig};
use tokio_util::sync::CancellationToken;

/// Longest wait for a link.
const WAIT: Duration = Duration::from_secs(20);

/// What a case gives the leaf, from the two ultrapeers' addresses.
type Setup = fn(up: SocketAddr, other: SocketAddr) -> NodeConfig;

/// The cases; the first is the baseline.
const CASES: &[(&str, Setup)] = &[
    ("--peer (baseline)", |up, _| NodeConfig {
        peers: vec![up.to_string()],
        ..leaf()
    }),
    // The ultrapeer answers the cache ping itself: its own pong and the
    // other ultrapeer packed in IPP.
    ("UHC: the ultrapeer", |up, _| NodeConfig {
        udp_host_caches: vec![up.to_string()],
        ..leaf()
    }),
    // A cache name that does not answer first (a silent port), then one
    // that does: one round, the answer of the second is taken.
    ("UHC: silent + live", |up, _| NodeConfig {
        udp_host_caches: vec![SILENT.to_string(), up.to_string()],
        ..leaf()
    }),
];

/// A loopback port nothing listens on (datagrams to it are lost).
const SILENT: &str = "127.0.0.1:9";

fn leaf() -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 2,
        local_network: true,
        tier: TierConfig {
            mode: Mode::Leaf,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    }
}

fn ultrapeer(peers: Vec<String>) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 0,
        peers,
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// Two fresh ultrapeers, linked.
async fn network() -> (NodeHandle, NodeHandle) {
    let up = node::start(ultrapeer(Vec::new()), CancellationToken::new())
        .await
        .unwrap();
    let mut other = node::start(
        ultrapeer(vec![up.local_addr.to_string()]),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        other.wait_for(WAIT, |s| s.mesh_links >= 1).await,
        "the ultrapeers never linked"
    );
    (up, other)
}

/// One start of a leaf set up by `setup`: the time to its first ultrapeer link.
async fn once(setup: Setup) -> Duration {
    let (up, other) = network().await;
    let start = Instant::now();
    let mut leaf = node::start(
        setup(up.local_addr, other.local_addr),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let joined = leaf.wait_for(WAIT, |s| s.to_ultrapeers >= 1).await;
    let took = start.elapsed();
    assert!(joined, "no ultrapeer link within {WAIT:?}");
    for n in [leaf, up, other] {
        n.shutdown().await;
    }
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
    println!("bootstrap_uhc: time from start to the first ultrapeer link, median of {rounds}");
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
