//! A node relaying queries between two loopback peers, against a minimal relay in
//! the same run that only reads descriptors and writes them on with TTL and hops
//! rewritten (no handshake, no validation, no routing); and the memory a `servent
//! run` process spends per idle connection.
//!
//! Run with `cargo bench --bench relay`; `RELAY_THREADS=n` runs it on `n` tokio
//! worker threads (default: one per core), to see how relaying scales.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::load::{peer, peer_from, queries};

use bytes::BytesMut;
use futures_util::StreamExt;
use servent::framing::DescriptorCodec;
use servent::node::{self, NodeConfig};
use servent::wire::{Function, HEADER_LEN, Header};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Sends `burst`, cut in as many equal parts (at descriptor boundaries) as
/// there are senders, from all of them at once, and counts queries arriving at
/// `to`, until all `n` have arrived or none has for two seconds (a relay may
/// shed under load). Returns how many arrived and when the last one did.
async fn pump(froms: Vec<TcpStream>, to: TcpStream, burst: &[u8], n: usize) -> (usize, Duration) {
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut framed = FramedRead::new(to, DescriptorCodec::default());
        let mut seen = 0;
        let mut last = start.elapsed();
        while seen < n {
            match tokio::time::timeout(Duration::from_secs(2), framed.next()).await {
                Ok(Some(Ok(f))) => {
                    if f.header.function == Function::Query {
                        seen += 1;
                        last = start.elapsed();
                    }
                }
                _ => break,
            }
        }
        (seen, last)
    });
    let frame_len = burst.len() / n;
    let per = n.div_ceil(froms.len());
    let mut writers = Vec::new();
    for (i, mut from) in froms.into_iter().enumerate() {
        let part = burst
            [(i * per * frame_len).min(burst.len())..((i + 1) * per * frame_len).min(burst.len())]
            .to_vec();
        writers.push(tokio::spawn(async move {
            from.write_all(&part).await.expect("write");
            from
        }));
    }
    let mut held = Vec::new();
    for w in writers {
        held.push(w.await.expect("writer"));
    }
    let got = reader.await.expect("reader");
    drop(held);
    got
}

/// What a minimal relay does to a frame: TTL one less, hops one more, appended
/// to `buf`.
fn relayed(mut f: servent::wire::Frame, buf: &mut BytesMut) {
    f.header = Header {
        ttl: servent::wire::Ttl(f.header.ttl.0.saturating_sub(1)),
        hops: servent::wire::Hops(f.header.hops.0 + 1),
        ..f.header
    };
    f.encode(buf);
}

/// The baseline for several senders: the first connection is the output; each
/// of the next `inputs` is read by a task of its own that rewrites TTL and hops
/// into batches, handed to one writer.
async fn minimal_relay_many(listener: TcpListener, inputs: usize) {
    let (out, _) = listener.accept().await.expect("accept");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BytesMut>(64);
    for _ in 0..inputs {
        let (input, _) = listener.accept().await.expect("accept");
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut framed = FramedRead::new(input, DescriptorCodec::default());
            let mut buf = BytesMut::new();
            while let Some(Ok(f)) = framed.next().await {
                relayed(f, &mut buf);
                let flush = framed.read_buffer().len() < HEADER_LEN || buf.len() >= 64 * 1024;
                if flush && tx.send(buf.split()).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut w = BufWriter::with_capacity(64 * 1024, out);
    while let Some(b) = rx.recv().await {
        if w.write_all(&b).await.is_err() {
            return;
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
}

/// The baseline: accept two connections and copy descriptors from the second to
/// the first, TTL one less and hops one more, flushing when the input runs dry.
async fn minimal_relay(listener: TcpListener) {
    let (out, _) = listener.accept().await.expect("accept");
    let (input, _) = listener.accept().await.expect("accept");
    let mut w = BufWriter::with_capacity(64 * 1024, out);
    let mut framed = FramedRead::new(input, DescriptorCodec::default());
    let mut buf = BytesMut::new();
    while let Some(Ok(f)) = framed.next().await {
        buf.clear();
        relayed(f, &mut buf);
        if w.write_all(&buf).await.is_err() {
            return;
        }
        if framed.read_buffer().len() < HEADER_LEN && w.flush().await.is_err() {
            return;
        }
    }
}

async fn idle_connection_memory(connections: usize) -> (u64, u64) {
    let dir = std::env::temp_dir().join(format!("servent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut child = common::servent_run()
        // An ultrapeer, so it takes every flat connection up to the limits.
        .args(["--mode", "ultrapeer"])
        .arg("--max-peers")
        .arg((connections + 10).to_string())
        .arg("--max-ultrapeers")
        .arg((connections + 10).to_string())
        .arg("--data-dir")
        .arg(&dir)
        .arg("--share")
        .arg(&dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("servent run");
    let addr = common::listening_addr(&mut child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = common::rss_kib(child.id()).unwrap_or(0);
    let mut held = Vec::with_capacity(connections);
    // From several loopback addresses: a node takes at most 64 sockets from
    // one address, even on a local mesh.
    for i in 0..connections {
        let from = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i / 50) as u8);
        held.push(peer_from(addr, from).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = common::rss_kib(child.id()).unwrap_or(0);
    drop(held);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    (before, after)
}

/// One round through a node: `senders` links send `burst` at once, one
/// receives (with nothing to answer and nobody else to send to). Each
/// sender's queries also go to the other senders, which read nothing (their
/// queues shed): only what reaches the receiver counts.
async fn node_round(senders: usize, burst: &[u8], n: usize) -> (usize, Duration) {
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 0,
        // Relaying between flat peers: the node floods as an ultrapeer.
        tier: node::TierConfig {
            mode: node::Mode::Ultrapeer,
            ultrapeer_links: senders + 4,
            ..node::TierConfig::default()
        },
        // The bench measures raw relaying: no per-peer budget.
        budgets: node::Budgets::unlimited(),
        ..NodeConfig::default()
    };
    let mut node = node::start(config, CancellationToken::new())
        .await
        .expect("node");
    let to = peer(node.local_addr).await;
    let mut froms = Vec::new();
    for _ in 0..senders {
        froms.push(peer(node.local_addr).await);
    }
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s.connections == senders + 1)
            .await
    );
    let got = pump(froms, to, burst, n).await;
    node.shutdown().await;
    got
}

/// The same round through the minimal relay (the one-input relay for one
/// sender, the many-input one otherwise).
async fn base_round(senders: usize, burst: &[u8], n: usize) -> (usize, Duration) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let relay = if senders == 1 {
        tokio::spawn(minimal_relay(listener))
    } else {
        tokio::spawn(minimal_relay_many(listener, senders))
    };
    let to = TcpStream::connect(addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut froms = Vec::new();
    for _ in 0..senders {
        froms.push(TcpStream::connect(addr).await.expect("connect"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = pump(froms, to, burst, n).await;
    relay.abort();
    got
}

/// Worker threads of the runtime everything runs on (the node and the load
/// alike): `RELAY_THREADS`, else one per core as `#[tokio::main]` would.
fn worker_threads() -> usize {
    std::env::var("RELAY_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
}

fn main() {
    let threads = worker_threads();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(threads));
}

async fn run(threads: usize) {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    println!("{threads} worker threads (RELAY_THREADS to choose)");
    let (n, rounds, connections) = if quick {
        (2_000, 1, 50)
    } else {
        (200_000, 3, 1000)
    };
    let burst = queries(n);

    // Best rate of each over the rounds, as (arrived, time).
    let rate = |(k, t): (usize, Duration)| k as f64 / t.as_secs_f64();
    let mut best_node = 0f64;
    let mut best_base = 0f64;
    let mut node_arrived = n;
    for _ in 0..rounds {
        let got = node_round(1, &burst, n).await;
        node_arrived = node_arrived.min(got.0);
        best_node = best_node.max(rate(got));
        best_base = best_base.max(rate(base_round(1, &burst, n).await));
    }
    println!("relaying {n} queries between two loopback peers (best of {rounds}):");
    println!("{:<28} {:>14}", "", "descriptors/s");
    println!("{:<28} {:>14.0}", "minimal relay (baseline)", best_base);
    println!("{:<28} {:>14.0}", "servent node", best_node);
    println!("ratio node / minimal relay: {:.2}", best_node / best_base);
    if node_arrived < n {
        println!(
            "(the node shed relayed queries under load: {node_arrived} of {n} arrived in its worst round)"
        );
    }

    // The same with 8 senders at once.
    const SENDERS: usize = 8;
    let mut best_node8 = 0f64;
    let mut best_base8 = 0f64;
    for _ in 0..rounds {
        best_node8 = best_node8.max(rate(node_round(SENDERS, &burst, n).await));
        best_base8 = best_base8.max(rate(base_round(SENDERS, &burst, n).await));
    }
    println!("the same {n} queries from {SENDERS} senders at once (best of {rounds}):");
    println!("{:<28} {:>14.0}", "minimal relay (baseline)", best_base8);
    println!("{:<28} {:>14.0}", "servent node", best_node8);
    println!("ratio node / minimal relay: {:.2}", best_node8 / best_base8);

    let (before, after) = idle_connection_memory(connections).await;
    println!(
        "memory: servent run at {before} KiB RSS; with {connections} idle connections {after} KiB: {:.1} KiB per connection",
        (after.saturating_sub(before)) as f64 / connections as f64
    );
}
