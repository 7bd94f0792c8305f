//! Serving files over HTTP: `servent run` against nginx serving the same files,
//! side by side in one run, driven by the same loopback load generator (keep-alive
//! connections, one request in flight per connection):
//!
//! - random 1 MiB ranges of a 1 GiB file,
//! - random 64 KiB ranges of the same file,
//! - whole GETs of a 4 KiB file.
//!
//! Run with `cargo bench --bench transfer`. Without `--bench` (as `cargo test
//! --benches` runs it) it is a quick smoke run over a small file that checks every
//! answer's status, length and bytes. nginx is started with its own configuration
//! on a loopback port when the `nginx` binary is found; otherwise it says so and
//! reports ours alone.

use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One workload: what to ask for.
#[derive(Clone, Copy)]
enum Load {
    /// Random ranges of this many bytes of the big file.
    Ranges(u64),
    /// The whole small file.
    Small,
}

struct Server {
    name: &'static str,
    addr: SocketAddr,
    big: String,
    small: String,
}

struct Files {
    big: PathBuf,
    big_size: u64,
    small: Vec<u8>,
}

fn pattern_block(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn make_files(dir: &Path, big_size: u64) -> Files {
    std::fs::create_dir_all(dir).expect("share dir");
    let big = dir.join("big.bin");
    let f = std::fs::File::create(&big).expect("big file");
    let block = 1 << 20;
    let mut at = 0;
    while at < big_size {
        let n = (big_size - at).min(block) as usize;
        f.write_all_at(&pattern_block(at / block + 1, n), at)
            .expect("write");
        at += n as u64;
    }
    let small = pattern_block(99, 4096);
    std::fs::write(dir.join("small.txt"), &small).expect("small file");
    Files {
        big,
        big_size,
        small,
    }
}

/// Reads one answer's head; returns status, Content-Length and the body bytes
/// that came with the head.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(u16, usize, usize)> {
    loop {
        if let Some(i) = memchr_crlf2(buf) {
            let head = std::str::from_utf8(&buf[..i]).ok()?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            return Some((status, len, i + 4));
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn memchr_crlf2(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Totals of one measurement.
#[derive(Default, Clone, Copy)]
struct Tally {
    requests: u64,
    bytes: u64,
    secs: f64,
}

/// One connection's loop: requests until `until`, checking status and length of
/// every answer (and, when `check` is set, the bytes of every answer).
async fn client(
    server: Arc<Server>,
    files: Arc<Files>,
    load: Load,
    seed: u64,
    until: Instant,
    check: bool,
) -> (u64, u64) {
    let mut s = TcpStream::connect(server.addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let big_file = std::fs::File::open(&files.big).expect("open big");
    let mut x = seed | 1;
    let mut body = vec![0u8; 256 * 1024];
    let mut buf = Vec::with_capacity(8192);
    let (mut requests, mut bytes) = (0u64, 0u64);
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (req, want_status, want_len, start) = match load {
            Load::Ranges(len) => {
                let start = x % (files.big_size - len);
                (
                    format!(
                        "GET {} HTTP/1.1\r\nHost: bench\r\nRange: bytes={}-{}\r\n\r\n",
                        server.big,
                        start,
                        start + len - 1
                    ),
                    206,
                    len as usize,
                    start,
                )
            }
            Load::Small => (
                format!("GET {} HTTP/1.1\r\nHost: bench\r\n\r\n", server.small),
                200,
                files.small.len(),
                0,
            ),
        };
        s.write_all(req.as_bytes()).await.expect("request");
        buf.clear();
        let (status, len, head_len) = read_head(&mut s, &mut buf).await.expect("answer");
        assert_eq!(
            (status, len),
            (want_status, want_len),
            "{} answered {status} with {len} bytes",
            server.name
        );
        let mut got: Vec<u8> = Vec::new();
        let early = &buf[head_len..];
        if check {
            got.extend_from_slice(early);
        }
        let mut left = len - early.len();
        while left > 0 {
            let n = left.min(body.len());
            let k = s.read(&mut body[..n]).await.expect("body");
            assert!(k > 0, "{} closed in a body", server.name);
            if check {
                got.extend_from_slice(&body[..k]);
            }
            left -= k;
        }
        if check {
            let want = match load {
                Load::Small => files.small.clone(),
                Load::Ranges(_) => {
                    let mut w = vec![0u8; len];
                    big_file.read_exact_at(&mut w, start).expect("read");
                    w
                }
            };
            assert!(got == want, "{} sent wrong bytes", server.name);
        }
        requests += 1;
        bytes += len as u64;
    }
    (requests, bytes)
}

async fn measure(
    server: &Arc<Server>,
    files: &Arc<Files>,
    load: Load,
    conns: usize,
    time: Duration,
    check: bool,
) -> Tally {
    let start = Instant::now();
    let until = start + time;
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            tokio::spawn(client(
                server.clone(),
                files.clone(),
                load,
                0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1),
                until,
                check,
            ))
        })
        .collect();
    let mut t = Tally::default();
    for task in tasks {
        let (r, b) = task.await.expect("client");
        t.requests += r;
        t.bytes += b;
    }
    t.secs = start.elapsed().as_secs_f64();
    t
}

fn start_servent(share: &Path, data: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_servent"))
        // No config file: the bench's flags and nothing of the user's.
        .args([
            "--config",
            "/dev/null",
            "-q",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--max-uploads",
            "256",
        ])
        .arg("--share")
        .arg(share)
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()
        .expect("servent run");
    let addr = common::listening_addr(&mut child);
    (child, addr)
}

/// Waits until `target` answers 200 with a SHA-1 (the file is hashed, so no
/// background hashing competes with the measurement).
async fn wait_hashed(addr: SocketAddr, target: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let req = format!("HEAD {target} HTTP/1.1\r\nHost: bench\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut buf = Vec::new();
                if let Some((200, _, _)) = read_head(&mut s, &mut buf).await {
                    if String::from_utf8_lossy(&buf)
                        .to_ascii_lowercase()
                        .contains("x-gnutella-content-urn")
                    {
                        return;
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "{target} hashed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts nginx (master and workers, one per core like our runtime's threads)
/// serving `root`, with sendfile as its distributions ship it.
fn start_nginx(nginx: &Path, root: &Path, tmp: &Path) -> (Child, SocketAddr) {
    let port = free_port();
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(tmp.join(d)).expect("nginx temp dir");
    }
    let conf = format!(
        "daemon off;\nworker_processes auto;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nodelay on;\n\
           keepalive_requests 1000000;\n  keepalive_timeout 60;\n  default_type application/octet-stream;\n\
           client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fastcgi;\n\
           uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
        tmp = tmp.display(),
        root = root.display(),
    );
    let conf_path = tmp.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(tmp)
        .arg("-e")
        .arg(tmp.join("error.log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nginx listens");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (big_size, time, rounds) = if quick {
        (16u64 << 20, Duration::from_millis(300), 1)
    } else {
        (1u64 << 30, Duration::from_secs(4), 3)
    };
    let conns = 8;
    let root = std::env::temp_dir().join(format!("servent-transfer-bench-{}", std::process::id()));
    let share = root.join("share");
    let files = Arc::new(make_files(&share, big_size));
    let (ours_child, ours_addr) = start_servent(&share, &root.join("data"));
    // Indexes follow the sorted paths: big.bin is 1, small.txt is 2.
    let ours = Arc::new(Server {
        name: "servent",
        addr: ours_addr,
        big: "/get/1/big.bin".into(),
        small: "/get/2/small.txt".into(),
    });
    wait_hashed(ours_addr, &ours.big).await;
    wait_hashed(ours_addr, &ours.small).await;
    let nginx = find_nginx().map(|bin| {
        let (child, addr) = start_nginx(&bin, &share, &root.join("nginx"));
        (
            child,
            Arc::new(Server {
                name: "nginx",
                addr,
                big: "/big.bin".into(),
                small: "/small.txt".into(),
            }),
        )
    });
    if nginx.is_none() {
        println!("nginx not found (Debian package `nginx`): reporting servent alone");
    }
    println!(
        "{} connections, keep-alive; {} per measurement, best of {rounds}; big file {} MiB",
        conns,
        if quick { "0.3 s" } else { "4 s" },
        big_size >> 20
    );
    println!(
        "{:<22} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "load", "servent r/s", "MB/s", "nginx r/s", "MB/s", "ratio"
    );
    for (label, load) in [
        ("1 MiB random ranges", Load::Ranges(1 << 20)),
        ("64 KiB random ranges", Load::Ranges(64 << 10)),
        ("4 KiB whole file", Load::Small),
    ] {
        let mut best_ours = Tally::default();
        let mut best_nginx = Tally::default();
        for _ in 0..rounds {
            // Alternate, so that neither always runs on a warmer machine.
            let t = measure(&ours, &files, load, conns, time, quick).await;
            if t.requests as f64 / t.secs > best_ours.requests as f64 / best_ours.secs.max(1e-9) {
                best_ours = t;
            }
            if let Some((_, n)) = &nginx {
                let t = measure(n, &files, load, conns, time, quick).await;
                if t.requests as f64 / t.secs
                    > best_nginx.requests as f64 / best_nginx.secs.max(1e-9)
                {
                    best_nginx = t;
                }
            }
        }
        assert!(best_ours.requests > 0, "servent answered {label}");
        let rate = |t: &Tally| t.requests as f64 / t.secs;
        let mbps = |t: &Tally| t.bytes as f64 / t.secs / 1e6;
        if nginx.is_some() {
            println!(
                "{label:<22} {:>12.0} {:>10.0} {:>12.0} {:>10.0} {:>8.2}",
                rate(&best_ours),
                mbps(&best_ours),
                rate(&best_nginx),
                mbps(&best_nginx),
                rate(&best_ours) / rate(&best_nginx)
            );
        } else {
            println!(
                "{label:<22} {:>12.0} {:>10.0} {:>12} {:>10} {:>8}",
                rate(&best_ours),
                mbps(&best_ours),
                "-",
                "-",
                "-"
            );
        }
    }
    if let Some((child, _)) = nginx {
        stop(child);
    }
    stop(ours_child);
    let _ = std::fs::remove_dir_all(&root);
}
