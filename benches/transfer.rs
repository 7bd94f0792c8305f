//! Serving files over HTTP: `servent run` against nginx serving the same files,
//! side by side in one run, driven by the same loopback load generator (keep-alive
//! connections, one request in flight per connection):
//!
//! - random 1 MiB ranges of a 1 GiB file,
//! - random 64 KiB ranges of the same file,
//! - whole GETs of a 4 KiB file.
//!
//! nginx gets a production file server's settings (`sendfile`, `tcp_nopush`,
//! `open_file_cache`, long keep-alive) and runs a second time with `tcp_nopush`
//! off; servent is held against the better of the two. Each server's CPU time
//! (user + system, from `/proc`) is reported per GiB served. The whole run is
//! repeated with 1, 2, ... worker threads for servent (`TOKIO_WORKER_THREADS`)
//! and as many worker processes for nginx, up to the machine's cores.
//!
//! Run with `cargo bench --bench transfer`. `TRANSFER_LOAD=1m`, `64k` or `4k`
//! measures that load alone and `TRANSFER_THREADS=n` that many workers alone, so
//! one cell can be measured again and again (binaries alternated). Without `--bench` (as `cargo test
//! --benches` runs it) it is a quick smoke run over a small file that checks every
//! answer's status, length and bytes, nginx's too. nginx is started with its own
//! configuration on a loopback port when the `nginx` binary is found; otherwise
//! it says so and reports ours alone.

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

/// Starts `servent run` with `threads` runtime worker threads (tokio reads
/// `TOKIO_WORKER_THREADS`).
fn start_servent(share: &Path, data: &Path, threads: usize) -> (Child, SocketAddr) {
    let mut child = common::servent_run()
        .args(["--max-uploads", "256"])
        .arg("--share")
        .arg(share)
        .arg("--data-dir")
        .arg(data)
        .env("TOKIO_WORKER_THREADS", threads.to_string())
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

/// Starts nginx (a master and `workers` worker processes) serving `root`, with
/// the settings a production file server is given: `sendfile`, `tcp_nopush`
/// (the head and the first bytes of the body in full packets) when `nopush`,
/// an open-file cache, and long keep-alive.
///
/// Both ways of `tcp_nopush` are measured because on loopback (MSS 65,483) it
/// costs nginx dearly where an answer is a little over one segment: the 64 KiB
/// ranges wait about 40 ms each for the corked tail (25 answers/s on one
/// connection instead of 7,400). Each load is held against the better of the two.
fn start_nginx(
    nginx: &Path,
    root: &Path,
    tmp: &Path,
    workers: usize,
    nopush: bool,
) -> (Child, SocketAddr) {
    let port = free_port();
    for d in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(tmp.join(d)).expect("nginx temp dir");
    }
    let conf = format!(
        "daemon off;\nworker_processes {workers};\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush {nopush};\n  tcp_nodelay on;\n\
           open_file_cache max=1000 inactive=60s;\n  open_file_cache_valid 60s;\n\
           open_file_cache_errors on;\n\
           keepalive_requests 1000000;\n  keepalive_timeout 60;\n  default_type application/octet-stream;\n\
           client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n  fastcgi_temp_path {tmp}/fastcgi;\n\
           uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n\
           server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n",
        tmp = tmp.display(),
        root = root.display(),
        nopush = if nopush { "on" } else { "off" },
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

/// CPU time (user + system, in clock ticks) used so far by process `pid` and,
/// when `children` is set, by its live children (nginx's workers), read from
/// `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32, children: bool) -> u64 {
    // The fields after the command name: state is field 3, ppid 4, utime 14,
    // stime 15 (proc(5)).
    let fields = |p: &str| -> Option<(u32, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ppid = rest.get(1)?.parse().ok()?;
        let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some((ppid, ticks))
    };
    let mut total = fields(&pid.to_string()).map_or(0, |f| f.1);
    if children {
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some((ppid, ticks)) = fields(name) {
                if ppid == pid {
                    total += ticks;
                }
            }
        }
    }
    total
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// One server under measurement: where it answers and which process to charge.
struct Running {
    label: &'static str,
    server: Arc<Server>,
    child: Child,
    /// Count its children's CPU too (nginx's workers).
    tree: bool,
}

impl Running {
    fn ticks(&self) -> u64 {
        cpu_ticks(self.child.id(), self.tree)
    }
}

/// The best round of one server on one load, and its CPU over all rounds.
#[derive(Default, Clone, Copy)]
struct Measured {
    best: Tally,
    ticks: u64,
    bytes: u64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.best.requests as f64 / self.best.secs.max(1e-9)
    }
    fn mbps(&self) -> f64 {
        self.best.bytes as f64 / self.best.secs.max(1e-9) / 1e6
    }
    /// CPU seconds per GiB served.
    fn cpu_per_gib(&self) -> f64 {
        self.ticks as f64 / ticks_per_sec() / (self.bytes as f64 / (1u64 << 30) as f64).max(1e-12)
    }
    fn add(&mut self, t: Tally, ticks: u64) {
        if t.requests as f64 / t.secs > self.rate() {
            self.best = t;
        }
        self.ticks += ticks;
        self.bytes += t.bytes;
    }
}

const LOADS: [(&str, Load); 3] = [
    ("1 MiB random ranges", Load::Ranges(1 << 20)),
    ("64 KiB random ranges", Load::Ranges(64 << 10)),
    ("4 KiB whole file", Load::Small),
];

#[tokio::main]
async fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (big_size, time, rounds) = if quick {
        (16u64 << 20, Duration::from_millis(300), 1)
    } else {
        (1u64 << 30, Duration::from_secs(4), 3)
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Worker threads (servent) and worker processes (nginx): 1, 2, 4, ... up to
    // the cores there are; the quick run uses all of them once.
    let only_threads = std::env::var("TRANSFER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0);
    let only_load = std::env::var("TRANSFER_LOAD").ok();
    let loads: Vec<(&str, Load)> = LOADS
        .iter()
        .zip(["1m", "64k", "4k"])
        .filter(|(_, key)| only_load.as_deref().is_none_or(|l| l == *key))
        .map(|(l, _)| *l)
        .collect();
    assert!(!loads.is_empty(), "TRANSFER_LOAD is one of 1m, 64k, 4k");
    let threads: Vec<usize> = if let Some(n) = only_threads {
        vec![n]
    } else if quick {
        vec![cores]
    } else {
        std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|n| *n <= cores.max(2))
            .collect()
    };
    let conns = 8;
    let root = std::env::temp_dir().join(format!("servent-transfer-bench-{}", std::process::id()));
    let share = root.join("share");
    let files = Arc::new(make_files(&share, big_size));
    let nginx_bin = find_nginx();
    if nginx_bin.is_none() {
        println!("nginx not found (Debian package `nginx`): reporting servent alone");
    }
    println!(
        "{} connections, keep-alive; {} per measurement, best of {rounds}; big file {} MiB\n\
         CPU: user + system time of the server's processes over all rounds, per GiB served\n\
         ratio: servent's requests/s over the better nginx's",
        conns,
        if quick { "0.3 s" } else { "4 s" },
        big_size >> 20
    );
    // (threads, load, servent's rate, the better nginx's rate) for the summary.
    let mut results: Vec<(usize, &str, f64, Option<f64>)> = Vec::new();
    for &n in &threads {
        let (child, addr) = start_servent(&share, &root.join("data"), n);
        // Indexes follow the sorted paths: big.bin is 1, small.txt is 2.
        let ours = Running {
            label: "servent",
            server: Arc::new(Server {
                name: "servent",
                addr,
                big: "/get/1/big.bin".into(),
                small: "/get/2/small.txt".into(),
            }),
            child,
            tree: false,
        };
        wait_hashed(addr, &ours.server.big).await;
        wait_hashed(addr, &ours.server.small).await;
        let mut servers = vec![ours];
        if let Some(bin) = &nginx_bin {
            for (label, nopush) in [("nginx", true), ("nginx, tcp_nopush off", false)] {
                let dir = root.join(format!("nginx-{n}-{nopush}"));
                let (child, addr) = start_nginx(bin, &share, &dir, n, nopush);
                servers.push(Running {
                    label,
                    server: Arc::new(Server {
                        name: label,
                        addr,
                        big: "/big.bin".into(),
                        small: "/small.txt".into(),
                    }),
                    child,
                    tree: true,
                });
            }
        }
        println!(
            "\nservent with {n} worker thread(s), nginx with {n} worker process(es)\n\
             {:<22} {:<22} {:>9} {:>8} {:>10} {:>7}",
            "load", "server", "r/s", "MB/s", "CPU s/GiB", "ratio"
        );
        for &(label, load) in &loads {
            let mut m = vec![Measured::default(); servers.len()];
            for _ in 0..rounds {
                // In turn, so that none always runs on a warmer machine.
                for (s, m) in servers.iter().zip(m.iter_mut()) {
                    let before = s.ticks();
                    let t = measure(&s.server, &files, load, conns, time, quick).await;
                    m.add(t, s.ticks().saturating_sub(before));
                }
            }
            assert!(m[0].best.requests > 0, "servent answered {label}");
            let nginx_best = m[1..].iter().map(Measured::rate).reduce(f64::max);
            for (i, (s, m)) in servers.iter().zip(&m).enumerate() {
                let ratio = match (i, nginx_best) {
                    (0, Some(b)) => format!("{:.2}", m.rate() / b),
                    _ => String::new(),
                };
                println!(
                    "{:<22} {:<22} {:>9.0} {:>8.0} {:>10.2} {:>7}",
                    if i == 0 { label } else { "" },
                    s.label,
                    m.rate(),
                    m.mbps(),
                    m.cpu_per_gib(),
                    ratio
                );
            }
            results.push((n, label, m[0].rate(), nginx_best));
        }
        for s in servers {
            stop(s.child);
        }
    }
    if threads.len() > 1 {
        println!("\nscaling: requests/s at n workers over requests/s at 1");
        for &(label, _) in &loads {
            let of = |n: usize| results.iter().find(|r| r.0 == n && r.1 == label);
            let Some(one) = of(1) else { continue };
            let mut line = format!("{label:<22}");
            for &n in &threads[1..] {
                let Some(r) = of(n) else { continue };
                line += &format!("  {n}: servent {:.2}x", r.2 / one.2);
                if let (Some(a), Some(b)) = (r.3, one.3) {
                    line += &format!(", nginx {:.2}x", a / b);
                }
            }
            println!("{line}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
