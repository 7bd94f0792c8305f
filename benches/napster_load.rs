//! Load on a running Napster index over real sockets: many users log in and
//! share, sequential searches are timed, the users leave, and again; the
//! server's resident set and CPU time are read from /proc along the way.
//!
//! ```sh
//! cargo bench --bench napster_load                      # starts `servent index` itself
//! cargo bench --bench napster_load -- --server 127.0.0.1:8888 --pid 1234   # any other server
//! ```
//!
//! By default the bench starts the `servent` binary of this build as a child
//! (`servent index --listen 127.0.0.1:0`) and reads its `listening on` line;
//! `--bin PATH` starts another build. With `--server HOST:PORT --pid PID` it
//! loads a server started elsewhere (such as OpenNap), whose /proc entry it
//! reads. Options (full-run defaults in brackets): `--users N` [2000],
//! `--files N` in all [100000], `--rounds N` [3], `--searches N` [300],
//! `--concurrency N` logins at once [16]; `--no-quickack` times searches
//! with the client's delayed ACKs left on (see [`quickack`]); `--dump FILE`
//! writes each search and its result count, to compare two servers' answers.
//!
//! Each round: every user connects from its own loopback address
//! (127.1.x.y), logs in (type 2), shares its files (type 100 each) and waits
//! for the answer to a whois of itself, so the server has taken every share;
//! the resident set is read (loaded). In the first round `--searches`
//! sequential searches (two words of one shared name, `MAX_RESULTS 100`) are
//! timed from send to the `202`, spread over a few searching users so no
//! per-user rate limit is reached. Then every connection is closed, a probe
//! user polls the `214` stats until the server counts no other user, and the
//! resident set is read again (after users leave).
//!
//! `cargo test --benches` runs it without `--bench`: a quick mode (40 users,
//! 1,000 files, 2 rounds, 30 searches) against the child server, asserting that
//! every search finds at least the file its words were taken from and that
//! the server counts the users and files it was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;
use common::Rng;

const LOGIN: u16 = 2;
const LOGIN_ACK: u16 = 3;
const LOGIN_ERROR: u16 = 0;
const SHARE: u16 = 100;
const SEARCH: u16 = 200;
const SEARCH_RESULT: u16 = 201;
const SEARCH_END: u16 = 202;
const STATS: u16 = 214;
const ERROR: u16 = 404;
const WHOIS: u16 = 603;
const WHOIS_REPLY: u16 = 604;

const IO_TIMEOUT: Duration = Duration::from_secs(60);

struct Opts {
    full: bool,
    server: Option<SocketAddr>,
    pid: Option<u32>,
    bin: Option<String>,
    users: usize,
    files: usize,
    rounds: usize,
    searches: usize,
    concurrency: usize,
    quickack: bool,
    dump: Option<String>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let mut o = Opts {
        full,
        server: None,
        pid: None,
        bin: None,
        users: if full { 2000 } else { 40 },
        files: if full { 100_000 } else { 1000 },
        rounds: if full { 3 } else { 2 },
        searches: if full { 300 } else { 30 },
        concurrency: 16,
        quickack: true,
        dump: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value"))
                .clone()
        };
        match a.as_str() {
            "--server" => o.server = Some(val().parse().expect("--server HOST:PORT")),
            "--pid" => o.pid = Some(val().parse().expect("--pid PID")),
            "--bin" => o.bin = Some(val()),
            "--users" => o.users = val().parse().expect("--users N"),
            "--files" => o.files = val().parse().expect("--files N"),
            "--rounds" => o.rounds = val().parse().expect("--rounds N"),
            "--searches" => o.searches = val().parse().expect("--searches N"),
            "--concurrency" => o.concurrency = val().parse().expect("--concurrency N"),
            "--no-quickack" => o.quickack = false,
            "--dump" => o.dump = Some(val()),
            // What cargo and libtest pass to a bench or test binary.
            _ => {}
        }
    }
    assert!(
        o.server.is_some() == o.pid.is_some(),
        "--server and --pid go together"
    );
    assert!(o.users > 0 && o.files >= o.users && o.rounds > 0);
    o
}

// ---- framing: u16 length, u16 type (little endian), then the data ----

fn send(s: &mut TcpStream, ty: u16, data: &[u8]) {
    let mut b = Vec::with_capacity(4 + data.len());
    frame(&mut b, ty, data);
    s.write_all(&b).expect("write to the server");
}

fn frame(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(data);
}

fn recv(s: &mut impl Read) -> (u16, Vec<u8>) {
    let mut h = [0u8; 4];
    s.read_exact(&mut h).expect("read from the server");
    let len = u16::from_le_bytes([h[0], h[1]]) as usize;
    let ty = u16::from_le_bytes([h[2], h[3]]);
    let mut data = vec![0; len];
    s.read_exact(&mut data).expect("read from the server");
    (ty, data)
}

/// Reads frames until one of type `until`; a login error ends the run.
fn recv_until(s: &mut impl Read, until: u16) -> Vec<u8> {
    loop {
        let (ty, data) = recv(s);
        if ty == until {
            return data;
        }
        if ty == LOGIN_ERROR {
            panic!("login refused: {}", String::from_utf8_lossy(&data));
        }
    }
}

// ---- the server under load ----

struct Server {
    addr: SocketAddr,
    pid: u32,
    child: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_servent(bin: &str, users: usize) -> Server {
    let mut child = Command::new(bin)
        .args(["index", "--listen", "127.0.0.1:0", "--max-users"])
        .arg((users + 100).to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the server's first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("a socket address");
    Server {
        addr,
        pid: child.id(),
        child: Some(child),
    }
}

fn rss_kib(pid: u32) -> u64 {
    common::rss_kib(pid).expect("the server's VmRSS")
}

/// User plus system CPU time of the server so far, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    // Fields after the command's closing parenthesis start at field 3.
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (f[11] + f[12]) as f64 / tick
}

/// A connection from loopback address `127.1.x.y` for `n`, so per-address
/// limits of either server are not what is measured; the plain address if
/// that cannot be bound.
fn connect(addr: SocketAddr, n: usize) -> TcpStream {
    let src = Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8);
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    let s: TcpStream = match sock
        .bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
        .and_then(|()| sock.connect(&addr.into()))
    {
        Ok(()) => sock.into(),
        Err(_) => TcpStream::connect(addr).expect("connect to the server"),
    };
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Connects and logs `nick` in; returns once the login is acknowledged.
fn login(addr: SocketAddr, n: usize, nick: &str) -> TcpStream {
    let mut s = connect(addr, n);
    send(
        &mut s,
        LOGIN,
        format!("{nick} benchpw 6699 \"napster_load\" 7").as_bytes(),
    );
    recv_until(&mut s, LOGIN_ACK);
    s
}

/// Made-up words, 2 to 4 syllables.
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

/// Per user, its files' four name words: `C:\My Music\A B - C D nn.mp3`.
fn library(users: usize, files: usize) -> Vec<Vec<[String; 4]>> {
    let vocab = vocabulary((files / 5).clamp(500, 50_000));
    let mut rng = Rng(0xfeed_f00d);
    (0..users)
        .map(|u| {
            let k = files / users + usize::from(u < files % users);
            (0..k)
                .map(|_| std::array::from_fn(|_| vocab[rng.skewed(vocab.len())].clone()))
                .collect()
        })
        .collect()
}

fn file_name(w: &[String; 4], i: usize) -> String {
    format!(
        "C:\\My Music\\{} {} - {} {} {:02}.mp3",
        w[0],
        w[1],
        w[2],
        w[3],
        i % 20
    )
}

/// Logs every user in and shares its files; returns the open connections.
fn load(addr: SocketAddr, lib: &[Vec<[String; 4]>], concurrency: usize) -> Vec<TcpStream> {
    let next = AtomicUsize::new(0);
    let conns = Mutex::new(Vec::with_capacity(lib.len()));
    std::thread::scope(|sc| {
        for _ in 0..concurrency {
            sc.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    let u = next.fetch_add(1, Ordering::Relaxed);
                    if u >= lib.len() {
                        break;
                    }
                    let nick = format!("loaduser{u}");
                    let mut s = login(addr, u, &nick);
                    buf.clear();
                    for (i, w) in lib[u].iter().enumerate() {
                        let share = format!(
                            "\"{}\" {:032x} {} {} 44100 {}",
                            file_name(w, i),
                            (u as u128) << 64 | i as u128,
                            3_000_000 + i * 1000,
                            [128, 160, 192, 256, 320][i % 5],
                            180 + i % 120
                        );
                        frame(&mut buf, SHARE, share.as_bytes());
                    }
                    frame(&mut buf, WHOIS, nick.as_bytes());
                    s.write_all(&buf).expect("write to the server");
                    // The whois is answered after every share before it was taken.
                    recv_until(&mut s, WHOIS_REPLY);
                    conns.lock().unwrap().push(s);
                }
            });
        }
    });
    conns.into_inner().unwrap()
}

/// The server's `214` counts: users, files.
fn stats(addr: SocketAddr, probe: usize) -> (u64, u64) {
    let mut s = login(addr, 60_000 + probe % 2000, &format!("loadprobe{probe}"));
    send(&mut s, STATS, b"");
    let d = recv_until(&mut s, STATS);
    let text = String::from_utf8_lossy(&d).into_owned();
    let mut f = text.split_whitespace().map(|x| x.parse().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// Waits until the server counts no user but the probe itself.
fn wait_empty(addr: SocketAddr, probes: &mut usize) -> Duration {
    let t0 = Instant::now();
    loop {
        *probes += 1;
        let (users, _) = stats(addr, *probes);
        if users <= 1 {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{users} users stay"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Acknowledges what arrives at once (Linux resets this after a while, so it
/// is set again before each read): a server that writes a search's results
/// and its end in separate small segments without `TCP_NODELAY` otherwise
/// waits for our delayed ACK (40 ms) before the end, and its latency would be
/// that timer rather than its own work.
fn quickack(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the right size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `n` sequential searches over a few connections; latencies and result counts.
fn searches(
    addr: SocketAddr,
    lib: &[Vec<[String; 4]>],
    n: usize,
    quick_ack: bool,
) -> (Vec<Duration>, Vec<usize>, Vec<String>) {
    // Fewer than 40 searches on each connection: under any per-user burst limit.
    let per = 40;
    let mut conns: Vec<TcpStream> = (0..n.div_ceil(per))
        .map(|i| login(addr, 50_000 + i, &format!("loadsearch{i}")))
        .collect();
    let mut rng = Rng(0xabcdef);
    let mut lat = Vec::with_capacity(n);
    let mut found = Vec::with_capacity(n);
    let mut asked = Vec::with_capacity(n);
    for q in 0..n {
        let files = &lib[rng.below(lib.len())];
        let w = &files[rng.below(files.len())];
        let (a, b) = (&w[rng.below(4)], &w[rng.below(4)]);
        let query = format!("FILENAME CONTAINS \"{a} {b}\" MAX_RESULTS 100");
        let k = conns.len();
        let s = &mut conns[q % k];
        let t0 = Instant::now();
        send(s, SEARCH, query.as_bytes());
        let mut results = 0;
        loop {
            if quick_ack {
                quickack(s);
            }
            let (ty, data) = recv(s);
            match ty {
                SEARCH_RESULT => results += 1,
                SEARCH_END => break,
                ERROR => eprintln!("  404 to {query:?}: {}", String::from_utf8_lossy(&data)),
                _ => {}
            }
        }
        lat.push(t0.elapsed());
        found.push(results);
        asked.push(query);
    }
    (lat, found, asked)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let o = opts();
    let server = match (o.server, o.pid) {
        (Some(addr), Some(pid)) => Server {
            addr,
            pid,
            child: None,
        },
        _ => {
            let bin = o
                .bin
                .clone()
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_servent").to_string());
            start_servent(&bin, o.users)
        }
    };
    let (addr, pid) = (server.addr, server.pid);
    let lib = library(o.users, o.files);
    let files: usize = lib.iter().map(Vec::len).sum();
    println!(
        "napster_load: {} users sharing {files} files, {} rounds, {} searches; server {addr} (pid {pid}){}",
        o.users,
        o.rounds,
        o.searches,
        if o.full { "" } else { ", quick mode" }
    );
    let cpu0 = cpu_secs(pid);
    let rss0 = rss_kib(pid);
    println!("  idle: RSS {:.1} MiB", mib(rss0));
    let mut probes = 0;
    let mut peak = rss0;
    for round in 1..=o.rounds {
        let c0 = cpu_secs(pid);
        let t0 = Instant::now();
        let conns = load(addr, &lib, o.concurrency);
        let took = t0.elapsed();
        let cpu_load = cpu_secs(pid) - c0;
        assert_eq!(conns.len(), o.users);
        probes += 1;
        let (users, shared) = stats(addr, probes);
        let loaded = rss_kib(pid);
        peak = peak.max(loaded);
        println!(
            "  round {round}: {} users logged in and shared in {:.2} s (server CPU {cpu_load:.2} s); server counts {users} users, {shared} files; RSS loaded {:.1} MiB",
            o.users,
            took.as_secs_f64(),
            mib(loaded)
        );
        // Counted with the probe; a server may count files a little later.
        assert!(users as usize >= o.users, "{users} users counted");
        if !o.full {
            assert_eq!(shared as usize, files, "files counted");
        }
        if round == 1 && o.searches > 0 {
            let c0 = cpu_secs(pid);
            let (mut lat, found, asked) = searches(addr, &lib, o.searches, o.quickack);
            let cpu_search = cpu_secs(pid) - c0;
            let misses = found.iter().filter(|&&n| n == 0).count();
            lat.sort();
            println!(
                "    {} sequential searches: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.1} results each, {misses} found nothing; server CPU {cpu_search:.2} s",
                o.searches,
                pct(&lat, 0.5).as_secs_f64() * 1e3,
                pct(&lat, 0.99).as_secs_f64() * 1e3,
                lat[lat.len() - 1].as_secs_f64() * 1e3,
                found.iter().sum::<usize>() as f64 / found.len() as f64,
            );
            if let Some(path) = &o.dump {
                let text: String = asked
                    .iter()
                    .zip(&found)
                    .map(|(q, n)| format!("{n}\t{q}\n"))
                    .collect();
                std::fs::write(path, text).expect("write the dump");
            }
            if !o.full {
                assert_eq!(misses, 0, "a search missed the file its words came from");
            }
        }
        drop(conns);
        let emptied = wait_empty(addr, &mut probes);
        std::thread::sleep(Duration::from_secs(1));
        let left = rss_kib(pid);
        println!(
            "    all left (counted gone after {:.1} s): RSS {:.1} MiB",
            emptied.as_secs_f64(),
            mib(left)
        );
    }
    println!(
        "  total server CPU {:.2} s; RSS idle {:.1} MiB, peak seen {:.1} MiB, at the end {:.1} MiB",
        cpu_secs(pid) - cpu0,
        mib(rss0),
        mib(peak),
        mib(rss_kib(pid))
    );
}
