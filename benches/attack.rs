//! A well-behaved peer's round trips to a node under attack, against the same
//! round trips with no attack in the same run: a Ping answered (TTL 1, so the
//! core answers it itself) and an HTTP `HEAD` (which never touches routing),
//! p50 and p99, while one hostile peer at a time floods fresh queries, floods
//! Pongs, storms QRP RESETs with full tables, holds leaf slots silently,
//! reads nothing, or sends Pushes at a third host. The node shares 100,000
//! files (2,000 in the quick mode that `cargo test --benches` runs).
//!
//! Also printed: how long the core's events held its lock (p50, p99, max), and
//! what the attacker got (closed, messages dropped over budget).
//!
//! Run with `cargo bench --bench attack`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use servent::core::budget::{Kind, Rate, Rates};
use servent::framing::DescriptorCodec;
use servent::node::{self, Budgets, Mode, NodeConfig, NodeHandle, TierConfig};
use servent::wire::Function;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

const UP: &str = "User-Agent: bench/1\r\nX-Ultrapeer: True\r\nX-Degree: 32\r\nX-Query-Routing: 0.1\r\nX-Ultrapeer-Query-Routing: 0.1\r\n";
const LEAF: &str = "User-Agent: bench/1\r\nX-Ultrapeer: False\r\nX-Query-Routing: 0.1\r\n";

type Frames = FramedRead<Box<dyn tokio::io::AsyncRead + Unpin + Send>, DescriptorCodec>;

/// A 0.6 handshake as a client saying `headers`; `None` when refused.
async fn dial(
    addr: SocketAddr,
    headers: &str,
    rcvbuf: Option<u32>,
) -> Option<(Frames, OwnedWriteHalf)> {
    let sock = tokio::net::TcpSocket::new_v4().ok()?;
    if let Some(b) = rcvbuf {
        sock.set_recv_buffer_size(b).ok()?;
    }
    let mut s = sock.connect(addr).await.ok()?;
    s.write_all(format!("GNUTELLA CONNECT/0.6\r\n{headers}\r\n").as_bytes())
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = s.read(&mut buf).await.ok()?;
        if k == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..k]);
    };
    if !got.starts_with(b"GNUTELLA/0.6 200") {
        return None;
    }
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").await.ok()?;
    let (r, w) = s.into_split();
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> =
        Box::new(std::io::Cursor::new(got[end..].to_vec()).chain(r));
    Some((FramedRead::new(input, DescriptorCodec::default()), w))
}

fn frame(guid: [u8; 16], function: u8, ttl: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = guid.to_vec();
    f.extend([function, ttl, hops]);
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

fn percentile(v: &mut [Duration], q: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

/// `n` Ping round trips of a well-behaved neighbour, and `n` HEADs on one
/// keep-alive connection, one at a time.
async fn measure(
    node: &NodeHandle,
    head_target: &str,
    n: usize,
    round: u8,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut frames, mut w) = dial(node.local_addr, UP, None)
        .await
        .expect("the good peer is taken");
    let mut pings = Vec::with_capacity(n);
    for i in 0..n as u64 {
        // Fresh GUIDs every round: a repeated one is a duplicate.
        let g = guid(i, 0x60 + round);
        let start = Instant::now();
        w.write_all(&frame(g, 0x00, 1, 0, b""))
            .await
            .expect("write");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), frames.next()).await {
                Ok(Some(Ok(f))) if f.header.function == Function::Pong && f.header.guid.0 == g => {
                    break;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!(
                    "no Pong ({}): {:?}\n{:?}",
                    other.is_ok(),
                    node.stats(),
                    node.lock_hold()
                ),
            }
        }
        pings.push(start.elapsed());
    }
    let mut s = TcpStream::connect(node.local_addr).await.expect("http");
    let mut heads = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4096];
    for _ in 0..n {
        let start = Instant::now();
        s.write_all(format!("HEAD {head_target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
                .await
                .expect("HEAD answered")
                .expect("read");
            assert!(k > 0, "HEAD answered");
            got.extend_from_slice(&buf[..k]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        heads.push(start.elapsed());
    }
    (pings, heads)
}

/// The attack that must go on until the node refuses it (its tables are only
/// refused once over the route-table budget).
const QRP_STORM: &str = "QRP storm, full tables";

/// One attacker, run until `stop`, reconnecting whenever the node closes it.
async fn attack(
    kind: &'static str,
    addr: SocketAddr,
    me: [u8; 16],
    victim: SocketAddr,
    stop: Arc<AtomicBool>,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        match kind {
            "query flood" => {
                let Some((_r, mut w)) = dial(addr, UP, None).await else {
                    continue;
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut burst = Vec::new();
                    for _ in 0..256 {
                        i += 1;
                        burst.extend(frame(
                            guid(i + (round << 40), 0x71),
                            0x80,
                            3,
                            0,
                            b"\x80\x00mp3\x00",
                        ));
                    }
                    if w.write_all(&burst).await.is_err() {
                        break;
                    }
                }
            }
            "pong flood" => {
                let Some((mut r, mut w)) = dial(addr, UP, None).await else {
                    continue;
                };
                let ping = loop {
                    match r.next().await {
                        Some(Ok(f)) if f.header.function == Function::Ping => {
                            break Some(f.header.guid.0);
                        }
                        Some(Ok(_)) => {}
                        _ => break None,
                    }
                };
                let Some(ping) = ping else { continue };
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let mut burst = Vec::new();
                    for _ in 0..256 {
                        i = i.wrapping_add(1);
                        let mut p = 6346u16.to_le_bytes().to_vec();
                        p.extend([8, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
                        p.extend([0; 8]);
                        burst.extend(frame(ping, 0x01, 2, 1, &p));
                    }
                    if w.write_all(&burst).await.is_err() {
                        break;
                    }
                }
            }
            QRP_STORM => {
                let Some((_r, mut w)) = dial(addr, LEAF, None).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let slots: u32 = 1 << 17;
                let mut burst = Vec::new();
                for _ in 0..4 {
                    let mut reset = vec![0x00];
                    reset.extend(slots.to_le_bytes());
                    reset.push(7);
                    burst.extend(frame(guid(round, 0x72), 0x30, 1, 0, &reset));
                    // A full table: every slot present (8-bit entries, uncompressed),
                    // in 255 chunks at most as the protocol allows.
                    let per = (slots as usize).div_ceil(255).max(4096);
                    let chunks = (slots as usize).div_ceil(per);
                    for c in 0..chunks {
                        let mut patch = vec![0x01, c as u8 + 1, chunks as u8, 0, 8];
                        patch.extend(std::iter::repeat_n(
                            0xffu8,
                            per.min(slots as usize - c * per),
                        ));
                        burst.extend(frame(guid(round, 0x73), 0x30, 1, 0, &patch));
                    }
                }
                let _ = w.write_all(&burst).await;
            }
            "silent leaves" => {
                let mut held = Vec::new();
                for _ in 0..40 {
                    if let Some(l) = dial(addr, LEAF, None).await {
                        held.push(l);
                    }
                }
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            "a peer that never reads" => {
                let Some(_silent) = dial(addr, UP, Some(4096)).await else {
                    continue;
                };
                // Another peer's queries are relayed to it.
                let Some((_r, mut w)) = dial(addr, UP, None).await else {
                    continue;
                };
                let mut i = 0u64;
                let text = format!("\u{80}\0{}\0", "z".repeat(200));
                while !stop.load(Ordering::Relaxed) {
                    let mut burst = Vec::new();
                    for _ in 0..64 {
                        i += 1;
                        burst.extend(frame(
                            guid(i + (round << 40), 0x74),
                            0x80,
                            3,
                            0,
                            text.as_bytes(),
                        ));
                    }
                    if w.write_all(&burst).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            _ => {
                // Pushes for our file, aimed at a third host.
                let Some((_r, mut w)) = dial(addr, UP, None).await else {
                    continue;
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut burst = Vec::new();
                    for _ in 0..64 {
                        i += 1;
                        let mut p = me.to_vec();
                        p.extend(1u32.to_le_bytes());
                        p.extend([127, 0, 0, 1]);
                        p.extend(victim.port().to_le_bytes());
                        burst.extend(frame(guid(i + (round << 40), 0x75), 0x40, 3, 0, &p));
                    }
                    if w.write_all(&burst).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (files, samples) = if quick { (2_000, 20) } else { (100_000, 300) };
    let dir: PathBuf =
        std::env::temp_dir().join(format!("servent-bench-attack-{}", std::process::id()));
    let share = dir.join("share");
    std::fs::create_dir_all(&share).unwrap();
    for i in 0..files {
        std::fs::write(share.join(format!("track {i} mp3 song.txt")), []).unwrap();
    }
    std::fs::write(share.join("unique marker.txt"), b"marker").unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        target_peers: 0,
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            ..TierConfig::default()
        },
        // The well-behaved peer pings once per sample, far more often than
        // a real one: its ping budget is raised, nothing else.
        budgets: Budgets {
            neighbour: Rates::neighbour().with(Kind::Ping, Rate::new(10_000.0, 10_000.0)),
            leaf: Rates::leaf(),
        },
        ..NodeConfig::default()
    };
    let node = node::start(config, CancellationToken::new())
        .await
        .expect("node");
    // The file to HEAD: found by its index through a search.
    let mut target = None;
    servent::node::search::search(
        &node.local_addr.to_string(),
        "unique marker",
        1,
        Duration::from_secs(3),
        1,
        |h| {
            target = Some(format!(
                "/get/{}/{}",
                h.index,
                servent::wire::http::percent_encode(&h.name)
            ))
        },
    )
    .await
    .expect("search");
    let target = target.expect("the marker file is found");
    let victim = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let victim_addr = victim.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = victim.accept().await {
            let _ = s.shutdown().await;
        }
    });

    println!("node sharing {} files; {samples} samples each", files + 1);
    println!();
    println!(
        "| attack | ping p50 | ping p99 | HEAD p50 | HEAD p99 | p99 ratio (ping / HEAD) | lock held p50 / p99 / max |"
    );
    println!("|---|---|---|---|---|---|---|");
    let (mut bp, mut bh) = measure(&node, &target, samples, 0).await;
    let base = (percentile(&mut bp, 0.99), percentile(&mut bh, 0.99));
    let row = |name: &str,
               p: &mut Vec<Duration>,
               h: &mut Vec<Duration>,
               lock: servent::node::LockHold| {
        let (p50, p99, h50, h99) = (
            percentile(p, 0.5),
            percentile(p, 0.99),
            percentile(h, 0.5),
            percentile(h, 0.99),
        );
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1}x / {:.1}x | {} / {} / {} us |",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            h50.as_secs_f64() * 1e3,
            h99.as_secs_f64() * 1e3,
            p99.as_secs_f64() / base.0.as_secs_f64(),
            h99.as_secs_f64() / base.1.as_secs_f64(),
            lock.p50_us,
            lock.p99_us,
            lock.max_us,
        );
    };
    row("none", &mut bp, &mut bh, node.lock_hold());
    for (round, kind) in [
        "query flood",
        "pong flood",
        QRP_STORM,
        "silent leaves",
        "a peer that never reads",
        "push flood at a third host",
    ]
    .into_iter()
    .enumerate()
    {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(attack(
            kind,
            node.local_addr,
            node.guid.0,
            victim_addr,
            stop.clone(),
        ));
        // Let the attack get going.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (mut p, mut h) = measure(&node, &target, samples, round as u8 + 1).await;
        if kind == QRP_STORM {
            // The storm is refused once it passes the route-table budget, which
            // a slow (debug, loaded) run may not reach within the measurement:
            // it goes on until then, 20 s at most.
            let until = Instant::now() + Duration::from_secs(20);
            while node.stats().table_errors == 0 && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        row(kind, &mut p, &mut h, node.lock_hold());
    }
    let st = node.stats();
    println!();
    println!(
        "closed over budget: {}; dropped over budget: queries {}, pongs {}, route-table {}, pushes {}; table errors {}; pongs not listed {}; write stalls {}; idle closed {}",
        st.closed_over_budget,
        st.over_budget(Kind::Query),
        st.over_budget(Kind::Pong),
        st.over_budget(Kind::Table),
        st.over_budget(Kind::Push),
        st.table_errors,
        st.pongs_unlisted,
        st.stalled_closed,
        st.idle_closed,
    );
    assert!(st.closed_over_budget > 0, "the flooders were closed");
    assert!(st.table_errors > 0, "the storm was refused");
    tokio::time::timeout(Duration::from_secs(20), node.shutdown())
        .await
        .expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
