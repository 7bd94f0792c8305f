//! The FastTrack supernode at scale: what a user costs and how fast searches go.
//!
//! Run with `cargo bench --bench fasttrack`. Reported, each next to a baseline
//! measured in the same run:
//! - memory in the core: heap bytes per user sharing 50 files (a counting global
//!   allocator: live bytes after the users logged in and shared, minus before),
//!   against the raw bytes of their names and hashes, and against the Napster
//!   index holding the same files for the same number of users;
//! - memory per connected user: the same through the whole node (a real
//!   session per user over loopback: socket task, cipher state, buffers), the
//!   clients keeping only their sockets;
//! - searches per second over 1,000 users (50,000 files) in the core, against
//!   the same queries through the Napster index core.
//!
//! `cargo test --benches` runs a quick mode (200 users, 20 connected; 60 in the
//! full run, under the node's 64 sockets per address) that
//! checks the supernode's answers against a naive scan of every name, a ceiling
//! on core bytes per file, and that every connected user's files got indexed.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use servent::fasttrack::session::ClientSession;
use servent::fasttrack::supernode::{
    Action as FtAction, Config, NodeInfo, Query, Reply, Request, Share, Supernode, TAG_FILENAME,
    Tag, Term,
};
use servent::fasttrack::wire::{self, FileRecord, Message};
use servent::napster::accounts::Accounts;
use servent::napster::index::{Action, Index, IndexConfig, Now, keywords};
use servent::napster::wire::{Frame, types as t};
use servent::node::{self, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Counting, Rng, live};

#[global_allocator]
static GLOBAL: Counting = Counting;

const FILES_PER_USER: usize = 50;

/// Pronounceable made-up words.
fn vocabulary(n: usize) -> Vec<String> {
    const SYL: &[&str] = &[
        "ka", "ri", "mo", "la", "ten", "su", "vo", "ne", "dra", "pi", "lo", "zen", "ba", "qui",
        "sto", "mer", "fa", "gul", "ion", "te", "ra", "ny", "ost", "ech",
    ];
    let mut rng = Rng(0x5eed);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::with_capacity(n);
    while words.len() < n {
        let k = 2 + rng.below(3);
        let w: String = (0..k).map(|_| SYL[rng.below(SYL.len())]).collect();
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

/// `<artist> - <title words> <nn>.mp3`, about 30 bytes.
fn file_names(users: usize, vocab: &[String]) -> Vec<Vec<String>> {
    let mut rng = Rng(0xfeed_f00d);
    (0..users)
        .map(|_| {
            let artist = &vocab[rng.below(vocab.len())];
            (0..FILES_PER_USER)
                .map(|i| {
                    let a = &vocab[rng.below(vocab.len())];
                    let b = &vocab[rng.below(vocab.len())];
                    format!("{artist} - {a} {b} {i:02}.mp3")
                })
                .collect()
        })
        .collect()
}

fn hash_of(u: usize, i: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&(u as u64).to_le_bytes());
    h[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    h
}

fn share(u: usize, i: usize, name: &str) -> Share {
    Share {
        media: 1,
        hash: hash_of(u, i),
        file_id: 0,
        size: 3_000_000 + i as u64,
        tags: vec![Tag {
            id: TAG_FILENAME,
            value: Bytes::copy_from_slice(name.as_bytes()),
        }],
    }
}

fn fill_supernode(names: &[Vec<String>]) -> Supernode {
    let mut s = Supernode::new(Config {
        // The bench feeds shares as fast as it can: no rate limit.
        share_rate: servent::core::budget::Rate::new(f64::INFINITY, f64::INFINITY),
        search_rate: servent::core::budget::Rate::new(f64::INFINITY, f64::INFINITY),
        ..Config::default()
    });
    let now = Instant::now();
    let mut out = Vec::new();
    for (u, files) in names.iter().enumerate() {
        let id = u as u64 + 1;
        let ip = Ipv4Addr::from(0x0a00_0000u32 + u as u32);
        s.connect(id, SocketAddrV4::new(ip, 1214), now, &mut out);
        s.receive(
            id,
            Request::NodeInfo(NodeInfo {
                ip,
                port: 1214,
                bandwidth: 0x60,
                name: Bytes::from(format!("user{u}")),
            }),
            now,
            &mut out,
        );
        for (i, name) in files.iter().enumerate() {
            s.receive(id, Request::Share(share(u, i, name)), now, &mut out);
        }
        out.clear();
    }
    s
}

fn fill_napster(names: &[Vec<String>]) -> Index {
    let mut index = Index::new(
        IndexConfig {
            max_users: 20_000,
            max_unauthenticated: 20_000,
            request_burst: 1e12,
            request_rate: 1e12,
            ..IndexConfig::default()
        },
        Accounts::default(),
    );
    let mut out: Vec<Action> = Vec::new();
    for (u, files) in names.iter().enumerate() {
        let conn = (1u64 << 40) + u as u64;
        index.connect(
            conn,
            Ipv4Addr::from(0x0a00_0000u32 + u as u32),
            Now::system(),
            &mut out,
        );
        let login = format!("user{u} pw 6699 \"bench\" 7");
        index.receive(
            conn,
            &Frame::new(t::LOGIN, login.into_bytes()),
            Now::system(),
            &mut out,
        );
        for (i, name) in files.iter().enumerate() {
            let msg = format!(
                "\"{name}\" {:032x} {} 128 44100 180",
                (u as u128) << 64 | i as u128,
                3_000_000 + i
            );
            index.receive(
                conn,
                &Frame::new(t::SHARE, msg.into_bytes()),
                Now::system(),
                &mut out,
            );
        }
        out.clear();
    }
    index
}

/// Two words of one file's name.
fn queries(names: &[Vec<String>], n: usize) -> Vec<(String, String)> {
    let mut rng = Rng(0xabcdef);
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    (0..n)
        .map(|_| {
            let files = &names[rng.below(names.len())];
            let name = &files[rng.below(files.len())];
            keywords(name.as_bytes(), &mut buf, &mut spans);
            let words: Vec<&str> = spans[..spans.len() - 2]
                .iter()
                .map(|&(a, b)| std::str::from_utf8(&buf[a as usize..b as usize]).unwrap())
                .collect();
            let a = words[rng.below(words.len())];
            let b = words[rng.below(words.len())];
            (a.to_string(), b.to_string())
        })
        .collect()
}

fn ft_query(id: u16, a: &str, b: &str) -> Query {
    Query {
        id,
        max_results: 100,
        realm: 0xBF,
        terms: vec![Term {
            cmp: 0x05,
            tag: 0,
            value: Bytes::from(format!("{a} {b}")),
        }],
    }
}

/// Results the supernode sends for `q` to a searcher that shares nothing.
fn ft_search(s: &mut Supernode, searcher: u64, q: Query) -> usize {
    let mut out = Vec::new();
    s.receive(searcher, Request::Query(q), Instant::now(), &mut out);
    out.iter()
        .map(|a| match a {
            FtAction::Send(_, Reply::Results { hits, .. }) => hits.len(),
            _ => 0,
        })
        .sum()
}

fn napster_search(index: &mut Index, conn: u64, a: &str, b: &str) -> usize {
    let mut out = Vec::new();
    let q = format!("FILENAME CONTAINS \"{a} {b}\" MAX_RESULTS 100");
    index.receive(
        conn,
        &Frame::new(t::SEARCH, q.into_bytes()),
        Now::system(),
        &mut out,
    );
    out.iter()
        .filter(|a| matches!(a, Action::Send(_, f) if f.ty == t::SEARCH_RESULT))
        .count()
}

/// Every name holding both words, whole (the naive answer).
fn naive(names: &[Vec<String>], a: &str, b: &str) -> usize {
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    let mut n = 0;
    for files in names {
        for name in files {
            keywords(name.as_bytes(), &mut buf, &mut spans);
            let has = |w: &str| {
                spans
                    .iter()
                    .any(|&(x, y)| &buf[x as usize..y as usize] == w.as_bytes())
            };
            if has(a) && has(b) {
                n += 1;
            }
        }
    }
    n.min(100)
}

/// A user that logs in, shares its files and then keeps only its socket.
async fn connected_user(at: std::net::SocketAddr, u: usize, files: &[String]) -> TcpStream {
    let mut s = TcpStream::connect(at).await.unwrap();
    let mut c = ClientSession::new_gift();
    s.write_all(&c.take_output()).await.unwrap();
    let mut buf = BytesMut::with_capacity(4096);
    while !c.is_established() {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        c.receive(&buf).unwrap();
        buf.clear();
        while c.poll_packet().unwrap().is_some() {}
        s.write_all(&c.take_output()).await.unwrap();
    }
    c.send_message(&Message::NodeInfo(wire::NodeInfo {
        ip: Ipv4Addr::LOCALHOST,
        port: 2000,
        bandwidth: 0x60,
        user: Bytes::from(format!("user{u}")),
    }))
    .unwrap();
    for (i, name) in files.iter().enumerate() {
        c.send_message(&Message::ShareFile {
            media: 1,
            file: FileRecord {
                fth: hash_of(u, i),
                file_id: 0,
                size: 3_000_000,
                tags: vec![wire::Tag::text(wire::tag::FILENAME, name.clone())],
            },
        })
        .unwrap();
    }
    s.write_all(&c.take_output()).await.unwrap();
    s
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs this without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let users = if quick { 200 } else { 1000 };
    // Every user comes from 127.0.0.1, and the node takes 64 sockets per
    // address on a local mesh.
    let connected = if quick { 20 } else { 60 };
    let searches = if quick { 2_000 } else { 50_000 };
    let vocab = vocabulary(if quick { 2_000 } else { 10_000 });
    let names = file_names(users, &vocab);
    let files = users * FILES_PER_USER;
    let raw: usize = names.iter().flatten().map(|n| n.len() + 20).sum();

    // Memory in the core, against the Napster index with the same files.
    let before = live();
    let mut sn = fill_supernode(&names);
    let ft_bytes = (live() - before) as f64;
    let before = live();
    let mut nap = fill_napster(&names);
    let nap_bytes = (live() - before) as f64;
    assert_eq!(sn.files_indexed(), files);
    println!(
        "core memory per user with {FILES_PER_USER} files ({users} users): supernode {:.0} B, napster index {:.0} B, raw names+hashes {:.0} B (supernode/napster {:.2}, supernode/raw {:.2})",
        ft_bytes / users as f64,
        nap_bytes / users as f64,
        raw as f64 / users as f64,
        ft_bytes / nap_bytes,
        ft_bytes / raw as f64
    );
    let per_file = ft_bytes / files as f64;
    assert!(per_file < 350.0, "{per_file:.0} bytes per file in the core");

    // The answers are right: the naive scan agrees.
    let searcher = users as u64 + 10;
    let mut out = Vec::new();
    let now = Instant::now();
    sn.connect(
        searcher,
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1),
        now,
        &mut out,
    );
    sn.receive(
        searcher,
        Request::NodeInfo(NodeInfo {
            ip: Ipv4Addr::LOCALHOST,
            port: 1,
            bandwidth: 0,
            name: Bytes::from_static(b"searcher"),
        }),
        now,
        &mut out,
    );
    let nap_searcher = 1u64 << 50;
    nap.connect(
        nap_searcher,
        Ipv4Addr::LOCALHOST,
        Now::system(),
        &mut Vec::new(),
    );
    nap.receive(
        nap_searcher,
        &Frame::new(t::LOGIN, &b"searcher pw 0 \"b\" 7"[..]),
        Now::system(),
        &mut Vec::new(),
    );
    let qs = queries(&names, searches);
    for (i, (a, b)) in qs.iter().take(50).enumerate() {
        let want = naive(&names, a, b);
        assert_eq!(
            ft_search(&mut sn, searcher, ft_query(i as u16, a, b)),
            want,
            "{a} {b}"
        );
    }

    // Searches per second, the same queries through both cores.
    let t0 = Instant::now();
    let mut ft_results = 0;
    for (i, (a, b)) in qs.iter().enumerate() {
        ft_results += ft_search(&mut sn, searcher, ft_query(i as u16, a, b));
    }
    let ft_el = t0.elapsed();
    let t0 = Instant::now();
    let mut nap_results = 0;
    for (a, b) in &qs {
        nap_results += napster_search(&mut nap, nap_searcher, a, b);
    }
    let nap_el = t0.elapsed();
    let rate = |el: Duration| searches as f64 / el.as_secs_f64();
    println!(
        "searches over {users} users ({files} files): supernode {:.0}/s ({ft_results} results), napster index {:.0}/s ({nap_results} results), ratio {:.2}",
        rate(ft_el),
        rate(nap_el),
        rate(ft_el) / rate(nap_el)
    );
    drop(sn);
    drop(nap);

    // Memory per connected user, through the whole node.
    let dir = std::env::temp_dir().join(format!("servent-bench-ft-{}", std::process::id()));
    let mut cfg = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.clone()),
        local_network: true,
        target_peers: 0,
        ..NodeConfig::default()
    };
    cfg.fasttrack.core.share_rate = servent::core::budget::Rate::new(1000.0, 1000.0);
    let node = node::start(cfg, CancellationToken::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = live();
    let mut socks = Vec::new();
    for (u, files) in names.iter().take(connected).enumerate() {
        socks.push(connected_user(node.local_addr, u, files).await);
    }
    let want = connected * FILES_PER_USER;
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.fasttrack().status().files < want {
        assert!(Instant::now() < deadline, "{:?}", node.fasttrack().status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let per_user = (live() - before) as f64 / connected as f64;
    println!(
        "memory per connected user with {FILES_PER_USER} files ({connected} sessions): {per_user:.0} B (core alone {:.0} B)",
        ft_bytes / users as f64
    );
    drop(socks);
    node.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
