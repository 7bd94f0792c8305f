//! The central index at scale: 1,000,000 files from 10,000 simulated users, then
//! searches from many connections.
//!
//! Run with `cargo bench --bench napster`. Reported, each next to a baseline
//! measured in the same run:
//! - memory: bytes allocated by the index per indexed file (a counting global
//!   allocator: live bytes after indexing minus before), against the raw bytes
//!   of the file names themselves (the least any index that can answer with the
//!   names must hold); the growth of the resident set too, which includes the
//!   allocator's own overhead;
//! - search speed in the core: searches per second on a mix of queries drawn
//!   from the indexed names, against a naive structure (a list of lower-cased
//!   names scanned for every query word);
//! - search through the server: searches per second and latency p50/p99 over
//!   loopback from many connections, against the same connections doing a no-op
//!   round trip (a `214` stats request, framed, queued and answered by the same
//!   index task without touching the index).
//!
//! The 10,000 users are fed to the index as login and share messages directly
//! (no sockets); the server then serves that index to real TCP connections.
//!
//! `cargo test --benches` runs a quick mode (20,000 files) that asserts the
//! index's answers equal the naive scan's, that a selective search examines the
//! same number of candidates at two index sizes, and a ceiling on bytes per file.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use servent::napster::accounts::Accounts;
use servent::napster::index::{Action, Index, IndexConfig, Now, keywords};
use servent::napster::server::{self, ServerConfig};
use servent::napster::wire::{Frame, NapCodec, types as t};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

mod common;
use common::{Counting, Rng, allocs, live};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Pronounceable made-up words.
fn vocabulary(n: usize) -> Vec<String> {
    const SYL: &[&str] = &[
        "ka", "ri", "mo", "la", "ten", "su", "vo", "ne", "dra", "pi", "lo", "zen", "ba", "qui",
        "sto", "mer", "fa", "gul", "ion", "te", "ra", "ny", "ost", "ech",
    ];
    let mut rng = Rng(0x5eed);
    let mut seen = std::collections::HashSet::new();
    let mut words = Vec::with_capacity(n);
    assert!(n <= 100_000);
    while words.len() < n {
        // 2 to 4 syllables: 346,176 possible words, far more than asked for.
        let k = 2 + rng.below(3);
        let w: String = (0..k).map(|_| SYL[rng.below(SYL.len())]).collect();
        if seen.insert(w.clone()) {
            words.push(w);
        }
    }
    words
}

/// `C:\My Music\<Artist> - <Title> <nn>.mp3`, capitalised, about 45 bytes.
fn file_names(users: usize, per_user: usize, vocab: &[String]) -> Vec<Vec<String>> {
    let mut rng = Rng(0xfeed_f00d);
    let cap = |w: &str| {
        let mut c = w.chars();
        c.next()
            .map(|f| f.to_uppercase().chain(c).collect::<String>())
            .unwrap_or_default()
    };
    (0..users)
        .map(|_| {
            (0..per_user)
                .map(|i| {
                    let mut w = || cap(&vocab[rng.skewed(vocab.len())]);
                    format!(
                        "C:\\My Music\\{} {} - {} {} {:02}.mp3",
                        w(),
                        w(),
                        w(),
                        w(),
                        i % 20
                    )
                })
                .collect()
        })
        .collect()
}

const SIM_BASE: u64 = 1 << 40;

fn now() -> Now {
    Now::system()
}

/// Logs `names.len()` users in and shares their files, as messages.
fn fill(index: &mut Index, names: &[Vec<String>]) {
    let mut out: Vec<Action> = Vec::new();
    for (u, files) in names.iter().enumerate() {
        let conn = SIM_BASE + u as u64;
        let ip = Ipv4Addr::from(0x0a00_0000u32 + u as u32);
        index.connect(conn, ip, now(), &mut out);
        let login = format!("user{u} pw 6699 \"bench\" {}", u % 11);
        index.receive(
            conn,
            &Frame::new(t::LOGIN, login.into_bytes()),
            now(),
            &mut out,
        );
        out.clear();
        for (i, name) in files.iter().enumerate() {
            let msg = format!(
                "\"{name}\" {:032x} {} {} 44100 {}",
                (u as u128) << 64 | i as u128,
                3_000_000 + i * 1000,
                [128, 160, 192, 256, 320][i % 5],
                180 + i
            );
            index.receive(
                conn,
                &Frame::new(t::SHARE, msg.into_bytes()),
                now(),
                &mut out,
            );
            debug_assert!(out.is_empty(), "{out:?}");
        }
    }
}

/// Queries drawn from the names: two words of one file (often a common and a
/// rarer one), the fixed words of the path alone now and then.
fn queries(names: &[Vec<String>], n: usize) -> Vec<String> {
    let mut rng = Rng(0xabcdef);
    let mut buf = Vec::new();
    let mut spans = Vec::new();
    (0..n)
        .map(|_| {
            let files = &names[rng.below(names.len())];
            let name = &files[rng.below(files.len())];
            keywords(name.as_bytes(), &mut buf, &mut spans);
            // Skip "c", "my", "music"; then artist and title words, the number, "mp3".
            let words: Vec<&str> = spans[3..spans.len() - 2]
                .iter()
                .map(|&(a, b)| std::str::from_utf8(&buf[a as usize..b as usize]).unwrap())
                .collect();
            let a = words[rng.below(words.len())];
            let b = words[rng.below(words.len())];
            format!("FILENAME CONTAINS \"{a} {b}\" MAX_RESULTS 100")
        })
        .collect()
}

/// The naive structure: every name, lower-cased, scanned for each query word.
struct Naive {
    names: Vec<String>,
}

impl Naive {
    fn new(names: &[Vec<String>]) -> Naive {
        Naive {
            names: names.iter().flatten().map(|n| n.to_lowercase()).collect(),
        }
    }

    /// Names holding every word as a whole word, at most `max`.
    fn search(&self, words: &[&str], max: usize) -> Vec<&str> {
        let mut out = Vec::new();
        for n in &self.names {
            if words.iter().all(|w| {
                n.split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|t| t == *w)
            }) {
                out.push(n.as_str());
                if out.len() == max {
                    break;
                }
            }
        }
        out
    }
}

fn words_of(query: &str) -> Vec<String> {
    let inner = query.split('"').nth(1).unwrap();
    inner.split(' ').map(str::to_string).collect()
}

/// Runs a search through the core; returns the result names (lower-cased).
fn core_search(index: &mut Index, conn: u64, query: &str) -> Vec<String> {
    let mut out = Vec::new();
    index.receive(
        conn,
        &Frame::new(t::SEARCH, query.as_bytes().to_vec()),
        now(),
        &mut out,
    );
    out.iter()
        .filter_map(|a| match a {
            Action::Send(_, f) if f.ty == t::SEARCH_RESULT => {
                let text = f.text();
                Some(text.split('"').nth(1).unwrap().to_lowercase())
            }
            _ => None,
        })
        .collect()
}

fn bench_config() -> IndexConfig {
    IndexConfig {
        max_users: 20_000,
        max_unauthenticated: 20_000,
        // The load's connections all come from 127.0.0.1 at once: on a busy
        // machine more than the default 32 may wait for their login together.
        max_unauthenticated_per_ip: 20_000,
        request_burst: 1e12,
        request_rate: 1e12,
        ..IndexConfig::default()
    }
}

/// Latencies of `rounds` of (send `frame`, read until a frame of type `until`)
/// from each of `conns` logged-in connections, for `time`.
async fn load(
    addr: SocketAddr,
    conns: usize,
    time: Duration,
    frames: Vec<Frame>,
    until: u16,
) -> (usize, Duration, Vec<Duration>) {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..conns {
        let frames = frames.clone();
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let (r, mut w) = s.into_split();
            let mut r = FramedRead::new(r, NapCodec::default());
            let mut b = bytes::BytesMut::new();
            Frame::new(t::LOGIN, format!("load{c} pw 0 \"bench\" 7").into_bytes()).encode(&mut b);
            w.write_all(&b).await.unwrap();
            while r.next().await.unwrap().unwrap().ty != t::STATS {}
            let mut lat = Vec::new();
            let mut i = c;
            let begin = Instant::now();
            while begin.elapsed() < time {
                b.clear();
                frames[i % frames.len()].encode(&mut b);
                i += conns;
                let t0 = Instant::now();
                w.write_all(&b).await.unwrap();
                while r.next().await.unwrap().unwrap().ty != until {}
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort();
    (all.len(), elapsed, all)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[tokio::main]
async fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (users, per_user, vocab_n, n_queries, conns, time) = if quick {
        (200, 100, 2_000, 200, 8, Duration::from_millis(300))
    } else {
        (10_000, 100, 50_000, 20_000, 50, Duration::from_secs(5))
    };
    let vocab = vocabulary(vocab_n);
    let names = file_names(users, per_user, &vocab);
    let files = users * per_user;
    let name_bytes: usize = names.iter().flatten().map(String::len).sum();

    // ---- memory ----
    let rss0 = rss_bytes();
    let live0 = live();
    let allocs0 = allocs();
    let t0 = Instant::now();
    let mut index = Index::new(bench_config(), Accounts::default());
    fill(&mut index, &names);
    let index_time = t0.elapsed();
    let live1 = live();
    let rss1 = rss_bytes();
    assert_eq!(index.files_indexed(), files);
    assert_eq!(index.users_online(), users);
    let per_file = (live1 - live0) as f64 / files as f64;
    let raw = name_bytes as f64 / files as f64;
    println!(
        "napster index: {users} users, {files} files, {} keywords",
        index.keyword_count()
    );
    println!(
        "  indexing: {:.2} s, {:.0} files/s, {:.2} allocations/file",
        index_time.as_secs_f64(),
        files as f64 / index_time.as_secs_f64(),
        (allocs() - allocs0) as f64 / files as f64
    );
    println!(
        "  memory: {per_file:.1} bytes/file allocated; raw name bytes {raw:.1}/file (baseline); ratio {:.2}x",
        per_file / raw
    );
    if let (Some(a), Some(b)) = (rss0, rss1) {
        println!(
            "  resident set grew {:.1} bytes/file (allocator overhead included)",
            b.saturating_sub(a) as f64 / files as f64
        );
    }
    // The quick mode's 20,000 files take about 160 bytes each (fixed costs weigh
    // more at that size); the full run about 156.
    assert!(per_file < 200.0, "{per_file} bytes per file");

    // ---- search in the core, against a naive scan ----
    let searcher = SIM_BASE - 1;
    let mut out = Vec::new();
    index.connect(searcher, Ipv4Addr::LOCALHOST, now(), &mut out);
    index.receive(
        searcher,
        &Frame::new(t::LOGIN, &b"searcher pw 0 \"bench\" 7"[..]),
        now(),
        &mut out,
    );
    let qs = queries(&names, n_queries);
    let naive = Naive::new(&names);
    // Same answers (as sets of names: both return up to 100).
    let check = if quick { qs.len() } else { 50 };
    for q in &qs[..check] {
        let words = words_of(q);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut want: Vec<&str> = naive.search(&w, usize::MAX);
        let mut got = core_search(&mut index, searcher, q);
        if want.len() <= 100 {
            want.sort();
            got.sort();
            assert_eq!(got, want, "{q}");
        } else {
            assert_eq!(got.len(), 100, "{q}");
        }
    }
    let t0 = Instant::now();
    let mut results = 0usize;
    let cand0 = index.stats().candidates;
    // Timed: the request framed as the server hands it over, and the results
    // counted (the comparison above read them).
    let frames: Vec<Frame> = qs
        .iter()
        .map(|q| Frame::new(t::SEARCH, q.clone().into_bytes()))
        .collect();
    let mut out = Vec::new();
    for f in &frames {
        out.clear();
        index.receive(searcher, f, now(), &mut out);
        results += out
            .iter()
            .filter(|a| matches!(a, Action::Send(_, f) if f.ty == t::SEARCH_RESULT))
            .count();
    }
    let core_time = t0.elapsed();
    let core_rate = qs.len() as f64 / core_time.as_secs_f64();
    let cand = (index.stats().candidates - cand0) as f64 / qs.len() as f64;
    let naive_n = if quick { 20 } else { 40 };
    let t0 = Instant::now();
    for q in &qs[..naive_n] {
        let words = words_of(q);
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        std::hint::black_box(naive.search(&w, 100));
    }
    let naive_rate = naive_n as f64 / t0.elapsed().as_secs_f64();
    println!(
        "  core search: {core_rate:.0}/s ({:.1} results, {cand:.0} candidates each); naive scan {naive_rate:.1}/s (baseline); ratio {:.0}x",
        results as f64 / qs.len() as f64,
        core_rate / naive_rate
    );

    // A selective search costs the same at twice the size.
    let mut rare = Index::new(bench_config(), Accounts::default());
    let small: Vec<Vec<String>> = names[..users / 2].to_vec();
    let needle = |index: &mut Index| {
        let mut out = Vec::new();
        let conn = SIM_BASE - 2;
        index.connect(conn, Ipv4Addr::LOCALHOST, now(), &mut out);
        index.receive(
            conn,
            &Frame::new(t::LOGIN, &b"needle pw 0 \"b\" 7"[..]),
            now(),
            &mut out,
        );
        index.receive(
            conn,
            &Frame::new(
                t::SHARE,
                &b"\"C:\\My Music\\zzneedle.mp3\" aa 1 128 44100 1"[..],
            ),
            now(),
            &mut out,
        );
        let c0 = index.stats().candidates;
        let r = core_search(index, searcher, "FILENAME CONTAINS \"my music zzneedle\"");
        index.disconnect(conn, &mut out);
        (r.len(), index.stats().candidates - c0)
    };
    fill(&mut rare, &small);
    rare.connect(searcher, Ipv4Addr::LOCALHOST, now(), &mut out);
    rare.receive(
        searcher,
        &Frame::new(t::LOGIN, &b"s pw 0 \"b\" 7"[..]),
        now(),
        &mut out,
    );
    let half = needle(&mut rare);
    let full = needle(&mut index);
    assert_eq!(half, (1, 1));
    assert_eq!(full, half, "selective search cost grew with the index");
    drop(rare);

    // ---- through the server, from many connections ----
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        index: bench_config(),
        ..ServerConfig::default()
    };
    let srv = server::start_with(config, index, CancellationToken::new())
        .await
        .unwrap();
    let search_frames: Vec<Frame> = qs
        .iter()
        .map(|q| Frame::new(t::SEARCH, q.clone().into_bytes()))
        .collect();
    let (n, el, lat) = load(srv.local_addr, conns, time, search_frames, t::SEARCH_END).await;
    let (bn, bel, blat) = load(
        srv.local_addr,
        conns,
        time,
        vec![Frame::empty(t::STATS)],
        t::STATS,
    )
    .await;
    srv.shutdown().await;
    let rate = n as f64 / el.as_secs_f64();
    let brate = bn as f64 / bel.as_secs_f64();
    println!("  server, {conns} connections over loopback:");
    println!(
        "    searches: {rate:.0}/s, p50 {:?}, p99 {:?}",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "    no-op 214 round trips (baseline): {brate:.0}/s, p50 {:?}, p99 {:?}",
        pct(&blat, 0.5),
        pct(&blat, 0.99)
    );
    println!(
        "    ratio: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
        rate / brate,
        pct(&lat, 0.5).as_secs_f64() / pct(&blat, 0.5).as_secs_f64().max(1e-9),
        pct(&lat, 0.99).as_secs_f64() / pct(&blat, 0.99).as_secs_f64().max(1e-9)
    );
    assert!(n > 0 && bn > 0);
}
