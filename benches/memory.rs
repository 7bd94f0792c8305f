//! What a link costs an ultrapeer in memory: idle, and in the worst case its
//! limits allow. Leaves connect and sit idle; then each sends the largest
//! table a leaf may (2^17 slots, just under the fill limit) and the largest
//! library offer the node keeps (10,000 files, 1 MiB of names); then a
//! neighbour floods queries that the leaves' tables match while the leaves
//! read nothing, so every leaf's send queue fills to its limit (the router's
//! table of queries seen, bounded for the whole node, is filled before the
//! count starts). Heap bytes
//! live (a counting allocator, so kernel socket buffers are not in it) are
//! read after each step.
//!
//! Run with `cargo bench --bench memory`.

use std::net::SocketAddr;
use std::time::Duration;

mod common;

use bytes::BytesMut;
use servent::node::{self, Budgets, Mode, NodeConfig, TierConfig};
use servent::wire::library_offer::{OfferChunk, OfferedFile};
use servent::wire::{Guid, Hops, Message, Ttl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const UP: &str =
    "User-Agent: bench/1\r\nX-Ultrapeer: True\r\nX-Degree: 32\r\nX-Query-Routing: 0.1\r\n";
const LEAF: &str =
    "User-Agent: bench/1\r\nX-Ultrapeer: False\r\nX-Query-Routing: 0.1\r\nX-Library-Offer: 1\r\n";

/// A 0.6 handshake as a client saying `headers`, with a small receive buffer
/// (the peer will read nothing).
async fn dial(addr: SocketAddr, headers: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut s = sock.connect(addr).await.expect("connect");
    s.write_all(format!("GNUTELLA CONNECT/0.6\r\n{headers}\r\n").as_bytes())
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = s.read(&mut buf).await.expect("read");
        assert!(k > 0, "handshake answered");
        got.extend_from_slice(&buf[..k]);
    }
    assert!(
        got.starts_with(b"GNUTELLA/0.6 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n")
        .await
        .expect("write");
    s
}

fn frame(guid: [u8; 16], function: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = guid.to_vec();
    f.extend([function, ttl, 0]);
    f.extend((payload.len() as u32).to_le_bytes());
    f.extend(payload);
    f
}

fn guid(i: u64, tag: u8) -> [u8; 16] {
    let mut g = [tag; 16];
    g[..8].copy_from_slice(&i.to_le_bytes());
    g[8] = 0xff;
    g
}

/// The largest table a leaf may send: 2^17 slots, 69% present (the node
/// refuses over 70%), as a RESET and 8-bit uncompressed PATCHes.
fn big_table(leaf: u64) -> Vec<u8> {
    let slots: usize = 1 << 17;
    let mut out = Vec::new();
    let mut reset = vec![0x00];
    reset.extend((slots as u32).to_le_bytes());
    reset.push(7);
    out.extend(frame(guid(leaf, 0x30), 0x30, 1, &reset));
    let mut state = leaf.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let entries: Vec<u8> = (0..slots)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 100 < 69 { 0xff } else { 0 }
        })
        .collect();
    let per = 4096;
    let chunks = slots / per;
    for (c, part) in entries.chunks(per).enumerate() {
        let mut patch = vec![0x01, c as u8 + 1, chunks as u8, 0, 8];
        patch.extend(part);
        out.extend(frame(guid(leaf, 0x31), 0x30, 1, &patch));
    }
    out
}

/// The largest offer the node keeps: 10,000 files, names of 100 bytes (just
/// under 1 MiB in all), every word distinct.
fn big_offer(leaf: u64) -> Vec<u8> {
    let files: Vec<OfferedFile> = (0..10_000u32)
        .map(|i| {
            let mut name = format!("leaf{leaf} track{i} artist{} album{} ", i % 97, i % 89);
            while name.len() < 96 {
                name.push('x');
            }
            name.push_str(".mp3");
            OfferedFile {
                index: i + 1,
                size: 1_000_000 + i as u64,
                sha1: None,
                fth: None,
                name,
            }
        })
        .collect();
    let mut out = BytesMut::new();
    for (k, m) in OfferChunk::encode_all(&files, false)
        .into_iter()
        .enumerate()
    {
        Message::Vendor(m)
            .encode_frame(
                Guid(guid(leaf * 1000 + k as u64, 0x32)),
                Ttl(1),
                Hops(0),
                &mut out,
            )
            .expect("encode");
    }
    out.to_vec()
}

/// `n` distinct one-word queries on `up`.
async fn flood(up: &mut TcpStream, n: usize, tag: u8) {
    let mut burst = Vec::with_capacity(64 * 1024);
    for i in 0..n as u64 {
        let text = format!("\u{80}\0w{tag}x{i}\0");
        burst.extend(frame(guid(i, tag), 0x80, 3, text.as_bytes()));
        if burst.len() > 60 * 1024 {
            up.write_all(&burst).await.expect("flood");
            burst.clear();
        }
    }
    up.write_all(&burst).await.expect("flood");
}

fn kib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let leaves = if quick { 3 } else { 30 };
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 0,
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            leaves,
            ..TierConfig::default()
        },
        // The flood must reach the leaves: no budget stops it first.
        budgets: Budgets::unlimited(),
        ..NodeConfig::default()
    };
    let mut node = node::start(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("node");
    // A neighbour fills the router's table of queries seen (bounded for the
    // node, not per link) before anything is counted.
    let mut up = dial(node.local_addr, UP).await;
    let n = if quick { 20_000 } else { 200_000 };
    flood(&mut up, n, 0x80).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let base = common::live();

    let mut held = Vec::new();
    for _ in 0..leaves {
        held.push(dial(node.local_addr, LEAF).await);
    }
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s.leaves == leaves)
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = common::live();

    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&big_table(i as u64 + 1)).await.expect("table");
    }
    assert!(
        node.wait_for(Duration::from_secs(60), |s| s.tables_received
            >= leaves as u64)
            .await,
        "tables taken: {:?}",
        node.stats()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tabled = common::live();
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&big_offer(i as u64 + 1)).await.expect("offer");
    }
    assert!(
        node.wait_for(Duration::from_secs(60), |s| {
            s.offers_received + s.offers_refused >= leaves as u64
        })
        .await,
        "offers taken: {:?}",
        node.stats()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let loaded = common::live();

    // The neighbour floods distinct one-word queries; each leaf's table
    // matches about 69% of them, and no leaf reads.
    flood(&mut up, n, 0x81).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let flooded = common::live();
    let stats = node.stats();

    let per = |from: i64, to: i64| kib(to - from) / leaves as f64;
    let taken = node.stats().offers_received;
    println!("an ultrapeer with {leaves} leaves (heap bytes live, counting allocator):");
    println!(
        "node started, its table of queries seen full: {:.0} KiB",
        kib(base)
    );
    println!(
        "{leaves} idle leaves: {:.0} KiB, {:.1} KiB per link",
        kib(idle),
        per(base, idle)
    );
    println!(
        "each with a 2^17-slot table (69% full): {:.0} KiB, {:.1} KiB per link more",
        kib(tabled),
        per(idle, tabled)
    );
    println!(
        "each offering 10,000 files ({taken} offers kept, the node keeps 50,000 files at most): {:.0} KiB, {:.1} KiB per link more, {:.0} KiB per offer kept",
        kib(loaded),
        per(tabled, loaded),
        kib(loaded - tabled) / taken.max(1) as f64
    );
    println!(
        "and {n} queries flooded at them, none read: {:.0} KiB, {:.1} KiB per link more ({} shed)",
        kib(flooded),
        per(loaded, flooded),
        stats.shed
    );
    println!("worst case per link: {:.1} KiB", per(base, flooded));
    drop(held);
    drop(up);
    node.shutdown().await;
}
