//! Control API request latency: `GET /api/v1/status` on one kept-alive
//! connection, p50 and p99, on an idle node and on the same node while it
//! relays the relay bench's load (a peer sending distinct queries as fast as
//! the node takes them, another reading what it forwards), as ratios to the
//! idle figures measured in the same run.
//!
//! Run with `cargo bench --bench api`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::load::{peer, queries_from};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use servent::api;
use servent::node::{self, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Latencies of `n` requests in a row, sorted, in microseconds.
async fn latencies(addr: std::net::SocketAddr, n: usize) -> Vec<u64> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let req = hyper::Request::get("/api/v1/status")
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender.ready().await.expect("connection ready");
        let t = Instant::now();
        let r = sender.send_request(req).await.expect("answer");
        assert!(r.status().is_success());
        let body = r.into_body().collect().await.expect("body").to_bytes();
        v.push(t.elapsed().as_micros() as u64);
        assert!(body.starts_with(b"{\"v\":1,\"type\":\"status\""));
    }
    v.sort_unstable();
    v
}

fn at(v: &[u64], q: f64) -> u64 {
    v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (requests, rounds) = if quick { (200, 1) } else { (5_000, 3) };

    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        target_peers: 0,
        tier: node::TierConfig {
            mode: node::Mode::Ultrapeer,
            ultrapeer_links: 8,
            ..node::TierConfig::default()
        },
        budgets: node::Budgets::unlimited(),
        ..NodeConfig::default()
    };
    let cancel = CancellationToken::new();
    let mut node = node::start(config, cancel.clone()).await.expect("node");
    let tasks = TaskTracker::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let handler = Arc::new(api::node::NodeApi {
        control: node.control(),
        cancel: node.cancelled(),
    });
    let server = api::serve(listener, handler, None, &tasks, node.cancelled()).expect("api");
    let api_addr = server.local_addr;

    // The relay bench's two peers.
    let mut to = peer(node.local_addr).await;
    let mut from = peer(node.local_addr).await;
    assert!(
        node.wait_for(Duration::from_secs(10), |s| s.connections == 2)
            .await
    );

    let mut best_idle = (u64::MAX, u64::MAX);
    let mut best_load = (u64::MAX, u64::MAX);
    let mut relayed_per_sec = 0f64;
    let mut next = 0u64;
    for _ in 0..rounds {
        let idle = latencies(api_addr, requests).await;
        best_idle = (
            best_idle.0.min(at(&idle, 0.5)),
            best_idle.1.min(at(&idle, 0.99)),
        );

        // Load: distinct queries in bursts of 10,000 for as long as the
        // requests take, read and dropped on the other side.
        let stop = Arc::new(AtomicBool::new(false));
        let arrived = Arc::new(AtomicU64::new(0));
        let reader = {
            let (stop, arrived) = (stop.clone(), arrived.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match tokio::time::timeout(Duration::from_millis(200), to.read(&mut buf)).await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(k)) => {
                            arrived.fetch_add(k as u64, Ordering::Relaxed);
                        }
                        Err(_) => {}
                    }
                }
                to
            })
        };
        let writer = {
            let stop = stop.clone();
            let first = next;
            tokio::spawn(async move {
                let mut i = first;
                while !stop.load(Ordering::Relaxed) {
                    let burst = queries_from(i, 10_000);
                    i += 10_000;
                    from.write_all(&burst).await.expect("write");
                }
                (from, i)
            })
        };
        // Let the load reach its pace first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let before = arrived.load(Ordering::Relaxed);
        let loaded = latencies(api_addr, requests).await;
        let moved = arrived.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        let (f, i) = writer.await.expect("writer");
        from = f;
        next = i;
        to = reader.await.expect("reader");
        let frame = queries_from(0, 1).len() as f64;
        relayed_per_sec = relayed_per_sec.max(moved as f64 / frame / t.elapsed().as_secs_f64());
        best_load = (
            best_load.0.min(at(&loaded, 0.5)),
            best_load.1.min(at(&loaded, 0.99)),
        );
        // Drain what is still queued before the next idle round.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    println!("GET /api/v1/status, {requests} requests on one connection (best of {rounds}):");
    println!("{:<34} {:>10} {:>10}", "", "p50 us", "p99 us");
    println!(
        "{:<34} {:>10} {:>10}",
        "idle node (baseline)", best_idle.0, best_idle.1
    );
    println!(
        "{:<34} {:>10} {:>10}",
        "under relay load", best_load.0, best_load.1
    );
    println!(
        "ratio loaded / idle: p50 {:.2}, p99 {:.2} (the node relayed {:.0} queries/s meanwhile)",
        best_load.0 as f64 / best_idle.0.max(1) as f64,
        best_load.1 as f64 / best_idle.1.max(1) as f64,
        relayed_per_sec
    );
    cancel.cancel();
    node.shutdown().await;
    tasks.close();
    tasks.wait().await;
}
