//! What gtk-gnutella 1.2.3 and LimeWire 5.6.2 were seen to do, played by fake
//! peers on loopback, and what servent must do with them. Each test names the
//! behaviour it plays; `protocol-spec/` says where each rule comes from. Every
//! wait is bounded.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use servent::node::get::{self as dl, GetConfig, SourceSpec, Wanted};
use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig, search};
use servent::wire::http::HttpUrl;
use servent::wire::huge::Sha1Urn;
use servent::wire::{
    Function, Ggep, GgepExt, Guid, HitResult, Message, OpenDataFlags, Query, QueryFlags, QueryHit,
    Trailer, TrailerArea,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use common::raw::WAIT;

mod common;
use common::raw::{accept_raw, dial_raw, dial_raw_from, frame, header, read_block, vendor};
use common::{Dir, pattern, servent_output};

/// LimeWire 5.6.2's Messages-Supported list, as captured (udp-facts 7.1).
fn limewire_messages_supported() -> Vec<u8> {
    let entries: [(&[u8; 4], u16); 11] = [
        (b"LIME", 8),
        (b"LIME", 21),
        (b"LIME", 25),
        (b"LIME", 6),
        (b"LIME", 13),
        (b"BEAR", 7),
        (b"BEAR", 4),
        (b"LIME", 7),
        (b"LIME", 33),
        (b"GTKG", 7),
        (b"BEAR", 11),
    ];
    let mut body = (entries.len() as u16).to_le_bytes().to_vec();
    for (v, s) in entries {
        body.extend(v);
        body.extend(s.to_le_bytes());
        body.extend(if *v == *b"GTKG" { 2u16 } else { 1u16 }.to_le_bytes());
    }
    vendor(&[0; 4], 0, 0, &body)
}

const LIMEWIRE_LEAF: &str = "User-Agent: LimeWire/5.6.2\r\nX-Ultrapeer: False\r\nX-Query-Routing: 0.1\r\nVendor-Message: 0.2\r\nGGEP: 0.5\r\n";
const LIMEWIRE_UP: &str = "User-Agent: LimeWire/5.6.2\r\nX-Ultrapeer: True\r\nX-Degree: 32\r\nX-Query-Routing: 0.1\r\nX-Ultrapeer-Query-Routing: 0.1\r\nX-Dynamic-Querying: 0.1\r\nX-Max-TTL: 3\r\nVendor-Message: 0.2\r\nGGEP: 0.5\r\n";

fn ultrapeer() -> TierConfig {
    TierConfig {
        mode: Mode::Ultrapeer,
        ..TierConfig::default()
    }
}

async fn node(dir: &Dir, files: &[(&str, &[u8])], config: NodeConfig) -> NodeHandle {
    let share = dir.sub("share");
    for (name, data) in files {
        std::fs::write(share.join(name), data).unwrap();
    }
    let config = NodeConfig {
        listen: if config.listen.port() == 6346 {
            "127.0.0.1:0".parse().unwrap()
        } else {
            config.listen
        },
        shares: vec![share],
        handshake_timeout: Duration::from_secs(5),
        // Dial learned hosts only where the test gives peers to start from.
        target_peers: if config.peers.is_empty() {
            0
        } else {
            config.target_peers
        },
        ..config
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// An ultrapeer sharing nothing.
async fn up_node(dir: &Dir) -> NodeHandle {
    node(
        dir,
        &[],
        NodeConfig {
            tier: ultrapeer(),
            ..NodeConfig::default()
        },
    )
    .await
}

async fn stop(n: NodeHandle) {
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

fn qhit(
    results: Vec<HitResult>,
    port: u16,
    servent: Guid,
    vendor: [u8; 4],
    ggep: Option<Ggep>,
) -> Message {
    Message::QueryHit(QueryHit {
        port,
        ip: std::net::Ipv4Addr::LOCALHOST,
        speed: 0,
        results,
        trailer: TrailerArea::Qhd(Trailer::new(vendor, OpenDataFlags::default(), ggep)),
        servent,
    })
}

// ---------------------------------------------------------- HTTP sources

/// How a fake HTTP source answers.
#[derive(Clone, Copy, PartialEq)]
enum Serves {
    /// gtk-gnutella: the first request on a connection gets at most 512 KiB
    /// (206 for a shorter range); a host that opens more than two connections
    /// (within the test) is turned away with 503, as gtk bans and drops hosts
    /// that reconnect too often.
    Gtk,
    /// LimeWire: `Range` is matched case-sensitively; without it, 200 and the
    /// whole file.
    LimeWire,
    /// Any range request answered 200 with the whole file.
    Whole,
}

struct Source {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
}

const GTK_FIRST_CHUNK: u64 = 512 * 1024;

async fn http_source(data: Arc<Vec<u8>>, urn: Sha1Urn, serves: Serves, pause: Duration) -> Source {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (conns, reqs) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
            let (data, reqs) = (data.clone(), reqs.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut first = true;
                loop {
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    };
                    let req = String::from_utf8_lossy(&got[..end]).into_owned();
                    got.drain(..end);
                    reqs.lock().unwrap().push(req.clone());
                    let size = data.len() as u64;
                    if serves == Serves::Gtk && n > 2 {
                        let _ = s
                            .write_all(b"HTTP/1.1 503 Too many disconnections\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    let range_line = req.lines().find_map(|l| match serves {
                        Serves::LimeWire => l.strip_prefix("Range: bytes="),
                        _ => l
                            .to_ascii_lowercase()
                            .starts_with("range: bytes=")
                            .then(|| &l["range: bytes=".len()..]),
                    });
                    let asked = range_line.and_then(|r| {
                        let (a, b) = r.trim().split_once('-')?;
                        Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?.min(size - 1)))
                    });
                    let (a, mut b) = match (serves, asked) {
                        (Serves::Whole, _) | (_, None) => (0, size - 1),
                        (_, Some(r)) => r,
                    };
                    if serves == Serves::Gtk && first {
                        b = b.min(a + GTK_FIRST_CHUNK - 1);
                    }
                    first = false;
                    let head = if (a, b) == (0, size - 1) {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n")
                    } else {
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\n",
                            b - a + 1
                        )
                    };
                    let head = format!(
                        "{head}X-Gnutella-Content-URN: {urn}\r\nContent-Type: application/octet-stream\r\n\r\n"
                    );
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    if req.starts_with("HEAD") {
                        continue;
                    }
                    for piece in data[a as usize..=b as usize].chunks(16 * 1024) {
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        if s.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Source {
        addr,
        connections,
        requests,
    }
}

fn url(addr: SocketAddr, urn: Sha1Urn) -> HttpUrl {
    HttpUrl::parse(&format!("http://{addr}/uri-res/N2R?{urn}")).unwrap()
}

async fn fetch(
    dir: &Path,
    name: &str,
    sources: Vec<SourceSpec>,
    urn: Sha1Urn,
    size: u64,
) -> Result<dl::Outcome, dl::GetError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        dl::download(
            Wanted {
                urn: Some(urn),
                fth: None,
                size: Some(size),
                name: None,
                sources,
            },
            Some(dir.join(name)),
            dir,
            None,
            GetConfig::default(),
            CancellationToken::new(),
            |_| {},
        ),
    )
    .await
    .expect("the download ends")
}

// ------------------------------------------------------------- 1-3. downloads

#[tokio::test]
async fn gtk_caps_the_first_request_and_the_rest_comes_on_the_same_connection() {
    let dir = Dir::new("gtkcap");
    let data = Arc::new(pattern(3 << 20, 1));
    let urn = Sha1Urn::digest(&data);
    let gtk = http_source(data.clone(), urn, Serves::Gtk, Duration::ZERO).await;
    let out = fetch(
        &dir.0,
        "f.bin",
        vec![SourceSpec::Url(url(gtk.addr, urn))],
        urn,
        data.len() as u64,
    )
    .await
    .expect("downloaded from a capping source");
    assert_eq!(out.size, data.len() as u64);
    assert_eq!(std::fs::read(dir.0.join("f.bin")).unwrap(), *data);
    assert_eq!(
        gtk.connections.load(Ordering::SeqCst),
        1,
        "one connection for the whole file (gtk drops hosts that reconnect)"
    );
    assert!(gtk.requests.lock().unwrap().len() >= 3);
}

#[tokio::test]
async fn limewire_sees_our_range_header_and_a_whole_file_200_is_used_too() {
    let dir = Dir::new("lwrange");
    let data = Arc::new(pattern(2 << 20, 2));
    let urn = Sha1Urn::digest(&data);
    let lw = http_source(data.clone(), urn, Serves::LimeWire, Duration::ZERO).await;
    fetch(
        &dir.0,
        "a.bin",
        vec![SourceSpec::Url(url(lw.addr, urn))],
        urn,
        data.len() as u64,
    )
    .await
    .expect("downloaded from LimeWire");
    assert_eq!(std::fs::read(dir.0.join("a.bin")).unwrap(), *data);
    let reqs = lw.requests.lock().unwrap().clone();
    for r in &reqs {
        for name in ["Range: bytes=", "Host: ", "User-Agent: "] {
            assert!(r.contains(name), "{name:?} as LimeWire matches it, in {r}");
        }
    }
    // A source that ignores every range: its whole-file answers are read from
    // the right offsets.
    let whole = http_source(data.clone(), urn, Serves::Whole, Duration::ZERO).await;
    fetch(
        &dir.0,
        "b.bin",
        vec![SourceSpec::Url(url(whole.addr, urn))],
        urn,
        data.len() as u64,
    )
    .await
    .expect("downloaded from a source that sends 200");
    assert_eq!(std::fs::read(dir.0.join("b.bin")).unwrap(), *data);
}

#[tokio::test]
async fn a_download_from_gtk_killed_mid_body_resumes_to_identical_bytes() {
    let dir = Dir::new("gtkresume");
    let out = dir.sub("out");
    let data = Arc::new(pattern(3 << 20, 3));
    let urn = Sha1Urn::digest(&data);
    // Slow enough that the first run is killed mid-body.
    let slow = http_source(data.clone(), urn, Serves::Gtk, Duration::from_millis(20)).await;
    let link = format!("http://{}/uri-res/N2R?{urn}", slow.addr);
    let out2 = out.clone();
    // Past the first (capped) answer, in the middle of a later one.
    let mid = tokio::task::spawn_blocking(move || {
        common::get_killed_when(&link, &out2, |s| {
            s.contains("have 0-") && !s.contains("have 0-7\n")
        })
    })
    .await
    .unwrap();
    assert!(mid, "killed mid-download");
    assert!(!out.join("file.bin").exists());
    // Run again: a new process, so a new first request; gtk caps it again.
    let fast = http_source(data.clone(), urn, Serves::Gtk, Duration::ZERO).await;
    let link = format!("http://{}/uri-res/N2R?{urn}", fast.addr);
    let o = servent_output(&["get", "-o", "file.bin", &link], &out).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), *data);
    assert_eq!(fast.connections.load(Ordering::SeqCst), 1);
}

// ------------------------------------------------------ 4-7. their messages

#[tokio::test]
async fn limewire_pings_with_a_locale_block_and_a_zero_byte_are_answered() {
    let dir = Dir::new("lwping");
    let n = node(
        &dir,
        &[("x.txt", b"x")],
        NodeConfig {
            tier: ultrapeer(),
            ..NodeConfig::default()
        },
    )
    .await;
    let (answer, raw) = dial_raw(n.local_addr, LIMEWIRE_UP).await;
    let mut lw = raw.unwrap_or_else(|| panic!("{answer}"));
    // GGEP block {LOC: "en"}, then one zero byte, as LimeWire sends it.
    let ping = b"\xc3\x83LOC\x42en\x00";
    lw.send(&frame([0x4c; 16], 0x00, 1, 0, ping)).await;
    let pong = lw
        .until(|f| f.header.function == Function::Pong && f.header.guid.0 == [0x4c; 16])
        .await;
    assert_eq!(
        u16::from_le_bytes([pong.payload[0], pong.payload[1]]),
        n.local_addr.port()
    );
    assert_eq!(n.stats().malformed, 0);
    stop(n).await;
}

#[tokio::test]
async fn messages_supported_both_ways_push_proxies_and_connect_back() {
    let dir = Dir::new("lwvendor");
    // A firewalled leaf under a LimeWire ultrapeer.
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = up.local_addr().unwrap();
    let n = node(
        &dir,
        &[("proxied song.mp3", b"proxied")],
        NodeConfig {
            peers: vec![up_addr.to_string()],
            firewalled: true,
            tier: TierConfig {
                mode: Mode::Leaf,
                ..TierConfig::default()
            },
            ..NodeConfig::default()
        },
    )
    .await;
    let (request, lw) = accept_raw(&up, "200 OK", LIMEWIRE_UP).await;
    assert!(
        header(&request, "Listen-IP").is_none(),
        "a firewalled node says no Listen-IP: {request}"
    );
    let mut lw = lw.unwrap();
    // Ours arrive, with the vendor code of four zero bytes.
    let ms = lw
        .until(|f| {
            f.header.function == Function::Vendor && f.payload.starts_with(&[0, 0, 0, 0, 0, 0])
        })
        .await;
    let m = servent::wire::VendorMsg::parse(&ms.payload).unwrap();
    let ours = m.supported_entries().unwrap();
    assert!(
        ours.iter()
            .any(|e| &e.vendor == b"LIME" && e.selector == 21),
        "{ours:?}"
    );
    lw.until(|f| {
        f.header.function == Function::Vendor && f.payload.starts_with(&[0, 0, 0, 0, 10, 0])
    })
    .await;
    // LimeWire's list names LIME/21: the leaf asks it to be its push proxy.
    lw.send(&frame([1; 16], 0x31, 1, 0, &limewire_messages_supported()))
        .await;
    let ask = lw
        .until(|f| f.header.function == Function::Vendor && f.payload.starts_with(b"LIME\x15\x00"))
        .await;
    assert_eq!(
        ask.header.guid, n.guid,
        "LIME/21's message id is the leaf's servent GUID"
    );
    // The ack (LIME/22v2: IPv4 big-endian, port little-endian).
    let mut body = vec![127, 0, 0, 1];
    body.extend(up_addr.port().to_le_bytes());
    lw.send(&frame(n.guid.0, 0x31, 1, 0, &vendor(b"LIME", 22, 2, &body)))
        .await;
    let mut watch = n;
    assert!(watch.wait_for(WAIT, |s| s.push_proxies == 1).await);
    // Its hits now name the proxy (GGEP PUSH) and ask for a Push.
    let q = Message::Query(Query::new(QueryFlags::with_bits(0), "proxied"));
    lw.send_msg(Guid([0x71; 16]), 1, 1, &q).await;
    let hit = lw.until(|f| f.header.function == Function::QueryHit).await;
    let Message::QueryHit(h) = hit.message().unwrap() else {
        unreachable!()
    };
    let t = h.qhd().unwrap();
    assert_eq!(t.flags().push, Some(true));
    let push = t
        .private
        .ggep
        .as_ref()
        .and_then(|g| g.exts.iter().find(|e| e.id.as_str() == "PUSH"))
        .expect("GGEP PUSH");
    assert_eq!(&push.data[..], &body[..]);
    // A TCP connect-back request (BEAR/7): we connect to its address and port.
    let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = back.local_addr().unwrap().port();
    lw.send(&frame(
        [2; 16],
        0x31,
        1,
        0,
        &vendor(b"BEAR", 7, 1, &port.to_le_bytes()),
    ))
    .await;
    let (mut s, _) = tokio::time::timeout(WAIT, back.accept())
        .await
        .unwrap()
        .unwrap();
    let mut said = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut said))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(said, b"CONNECT BACK\r\n\r\n");
    assert_eq!(watch.stats().supported_received, 1);
    stop(watch).await;
}

#[tokio::test]
async fn a_limewire_leaf_query_asking_for_oob_at_its_own_address_is_relayed_as_it_is() {
    let dir = Dir::new("lwoob");
    let n = up_node(&dir).await;
    // A LimeWire ultrapeer beside us: like LimeWire, it answers a query that
    // asks for out-of-band replies by UDP only (never in-band).
    let (_, up) = dial_raw(n.local_addr, LIMEWIRE_UP).await;
    let mut lw_up = up.unwrap();
    let (answer, leaf) = dial_raw(n.local_addr, LIMEWIRE_LEAF).await;
    assert!(answer.starts_with("GNUTELLA/0.6 200"), "{answer}");
    let mut leaf = leaf.unwrap();
    // The leaf's query: OOB flag, its address in the MUID, GGEP SO (OOB v3).
    let mut muid = [0u8; 16];
    muid[..4].copy_from_slice(&[127, 0, 0, 1]);
    muid[13..15].copy_from_slice(&6346u16.to_le_bytes());
    muid[8] = 0xff;
    let mut q = Query::new(
        QueryFlags::with_bits(QueryFlags::OOB | QueryFlags::GGEP_H),
        "rare tune",
    );
    q.ext
        .items
        .push(servent::wire::ExtItem::Ggep(Ggep::new(vec![GgepExt::new(
            "SO",
            Bytes::new(),
        )])));
    leaf.send_msg(Guid(muid), 3, 0, &Message::Query(q)).await;
    let got = lw_up.until(|f| f.header.function == Function::Query).await;
    let Message::Query(seen) = got.message().unwrap() else {
        unreachable!()
    };
    let oob = seen.flags.has(QueryFlags::OOB)
        && seen.ext.items.iter().any(|i| matches!(i, servent::wire::ExtItem::Ggep(g) if g.exts.iter().any(|e| e.id.as_str() == "SO")));
    // The MUID names the leaf's own IP: it takes its hits by UDP itself, so
    // the request goes on unchanged (protocol-spec/oob.md).
    assert!(oob, "the request is kept: {seen:?}");
    assert_eq!(
        got.header.guid,
        Guid(muid),
        "same MUID, so the hit finds its way back"
    );
    assert_eq!(seen.text_lossy(), "rare tune");
    // A hit in-band (as LimeWire sends what does not fit a datagram) still
    // reaches the leaf.
    let hit = qhit(
        vec![HitResult::new(3, 1000, "rare tune.mp3", None)],
        6346,
        Guid([0x11; 16]),
        *b"LIME",
        None,
    );
    lw_up.send_msg(Guid(muid), 3, 0, &hit).await;
    let back = leaf
        .until(|f| f.header.function == Function::QueryHit)
        .await;
    assert_eq!(back.header.guid, Guid(muid));
    stop(n).await;
}

#[tokio::test]
async fn limewire_pro_advertisements_are_not_shown_and_each_file_is_shown_once() {
    // A LimeWire ultrapeer as a search client's node: it answers with its
    // advertisement, and the same file twice (two paths to one leaf).
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (_, raw) = accept_raw(&l, "200 OK", LIMEWIRE_UP).await;
        let mut c = raw.unwrap();
        let q = c.until(|f| f.header.function == Function::Query).await;
        let urn = Sha1Urn::digest(b"real");
        let real = HitResult::new(5, 4, "limewire tutorial.txt", Some(&urn));
        // LimeWire's canned advertisement, as LimeWire 5.6.2 sends it.
        let ad = qhit(
            vec![HitResult::new(
                u32::MAX,
                1024,
                "LimeWire PRO Available at LimeWire.com",
                None,
            )],
            6346,
            Guid([0; 16]),
            *b"LIME",
            None,
        );
        c.send_msg(q.header.guid, 3, 0, &ad).await;
        for hops in [1, 2] {
            let h = qhit(vec![real.clone()], 7000, Guid([8; 16]), *b"GTKG", None);
            c.send_msg(q.header.guid, 3, hops, &h).await;
        }
        c.frames_for(Duration::from_secs(3)).await;
    });
    let mut names = Vec::new();
    search::search(
        &addr.to_string(),
        "limewire",
        3,
        Duration::from_millis(1500),
        100,
        |h| names.push(h.name),
    )
    .await
    .unwrap();
    assert_eq!(names, ["limewire tutorial.txt"]);
    server.abort();
}

// --------------------------------------------------- 8-14. headers, addresses

/// LimeWire's rule for a leaf taking an ultrapeer (otherwise "503 Not Good
/// Ultrapeer"), and gtk-gnutella's (X-Degree >= 16, dynamic querying).
fn good_ultrapeer_for_limewire_and_gtk(answer: &str) -> Result<(), String> {
    let num = |h: &str| header(answer, h).and_then(|v| v.parse::<u32>().ok());
    if num("X-Max-TTL").is_none_or(|t| t >= 5) {
        return Err("X-Max-TTL".into());
    }
    if num("X-Degree").is_none_or(|d| d < 16) {
        return Err("X-Degree".into());
    }
    for h in [
        "X-Ultrapeer-Query-Routing",
        "X-Dynamic-Querying",
        "X-Query-Routing",
    ] {
        if header(answer, h).is_none() {
            return Err(h.into());
        }
    }
    Ok(())
}

#[tokio::test]
async fn limewire_and_gtk_leaves_find_our_ultrapeer_good() {
    let dir = Dir::new("goodup");
    let n = node(
        &dir,
        &[],
        NodeConfig {
            tier: ultrapeer(),
            max_ttl: 7,
            ..NodeConfig::default()
        },
    )
    .await;
    let (answer, _leaf) = dial_raw(n.local_addr, LIMEWIRE_LEAF).await;
    assert!(answer.starts_with("GNUTELLA/0.6 200"), "{answer}");
    good_ultrapeer_for_limewire_and_gtk(&answer).unwrap_or_else(|h| panic!("{h} in {answer}"));
    stop(n).await;
}

#[tokio::test]
async fn a_specific_listen_address_is_the_one_we_connect_from_and_advertise() {
    let dir = Dir::new("listenip");
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let n = node(
        &dir,
        &[],
        NodeConfig {
            listen: "127.0.0.2:0".parse().unwrap(),
            peers: vec![peer_addr.to_string()],
            tier: ultrapeer(),
            ..NodeConfig::default()
        },
    )
    .await;
    let port = n.local_addr.port();
    let (s, from) = tokio::time::timeout(WAIT, peer.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        from.ip().to_string(),
        "127.0.0.2",
        "connected from the listening address"
    );
    drop(s);
    // Accepted connections say it too (and so do Pongs).
    let (answer, raw) = dial_raw(n.local_addr, LIMEWIRE_UP).await;
    assert_eq!(
        header(&answer, "Listen-IP"),
        Some(format!("127.0.0.2:{port}").as_str()),
        "{answer}"
    );
    let mut raw = raw.unwrap();
    raw.send(&frame([3; 16], 0x00, 1, 0, b"")).await;
    let pong = raw
        .until(|f| f.header.function == Function::Pong && f.header.guid.0 == [3; 16])
        .await;
    assert_eq!(&pong.payload[2..6], &[127, 0, 0, 2]);
    stop(n).await;
}

#[tokio::test]
async fn with_a_wildcard_listener_the_address_peers_agree_on_is_advertised() {
    let dir = Dir::new("remoteip");
    let n = node(
        &dir,
        &[],
        NodeConfig {
            listen: "0.0.0.0:0".parse().unwrap(),
            tier: ultrapeer(),
            ..NodeConfig::default()
        },
    )
    .await;
    let to = SocketAddr::from(([127, 0, 0, 1], n.local_addr.port()));
    // One peer's word is not enough.
    let (_, a) = dial_raw_from(
        Some("127.0.0.3"),
        to,
        &format!("{LIMEWIRE_UP}Remote-IP: 127.0.0.9\r\n"),
    )
    .await;
    let (answer, _) = dial_raw_from(Some("127.0.0.5"), to, LIMEWIRE_UP).await;
    assert_eq!(
        header(&answer, "Listen-IP").map(|v| v.starts_with("127.0.0.1:")),
        Some(true),
        "{answer}"
    );
    // Two different peers agree.
    let (_, b) = dial_raw_from(
        Some("127.0.0.4"),
        to,
        &format!("{LIMEWIRE_UP}Remote-IP: 127.0.0.9\r\n"),
    )
    .await;
    let (answer, _) = dial_raw_from(
        Some("127.0.0.6"),
        to,
        "User-Agent: x\r\nX-Ultrapeer: False\r\n",
    )
    .await;
    assert_eq!(
        header(&answer, "Listen-IP"),
        Some(format!("127.0.0.9:{}", n.local_addr.port()).as_str()),
        "{answer}"
    );
    drop((a, b));
    stop(n).await;
}

#[tokio::test]
async fn gtk_node_header_is_read_and_only_ultrapeers_are_handed_out() {
    let dir = Dir::new("nodehdr");
    let n = up_node(&dir).await;
    // gtk-gnutella says where it listens in `Node:`.
    let gtk = "User-Agent: gtk-gnutella/1.2.3\r\nX-Ultrapeer: True\r\nNode: 127.0.0.1:16001\r\nX-Degree: 32\r\nX-Query-Routing: 0.2\r\nX-Ultrapeer-Query-Routing: 0.1\r\n";
    let (_, g) = dial_raw(n.local_addr, gtk).await;
    let mut g = g.unwrap();
    // It answers our Ping with a Pong from its cache that names us (hops 2).
    let ping = g.until(|f| f.header.function == Function::Ping).await;
    let mut me = n.local_addr.port().to_le_bytes().to_vec();
    me.extend([127, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]);
    g.send(&frame(ping.header.guid.0, 0x01, 3, 2, &me)).await;
    // A leaf (firewalled or not) says where it listens too.
    let (_, leaf) = dial_raw(
        n.local_addr,
        &format!("{LIMEWIRE_LEAF}Listen-IP: 127.0.0.1:16002\r\n"),
    )
    .await;
    let mut leaf = leaf.unwrap();
    // Our ping reaches the leaf; its Pong (for itself) is not to be handed out.
    let ping = leaf.until(|f| f.header.function == Function::Ping).await;
    let mut pong = 16002u16.to_le_bytes().to_vec();
    pong.extend([127, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0]);
    leaf.send(&frame(ping.header.guid.0, 0x01, 1, 0, &pong))
        .await;
    let mut n = n;
    assert!(n.wait_for(WAIT, |s| s.pongs_unlisted >= 2).await);
    let (answer, newcomer) = dial_raw(n.local_addr, LIMEWIRE_UP).await;
    let tried = format!(
        "{} {}",
        header(&answer, "X-Try").unwrap_or(""),
        header(&answer, "X-Try-Ultrapeers").unwrap_or("")
    );
    assert!(
        tried.contains("127.0.0.1:16001"),
        "gtk's Node header was read: {answer}"
    );
    assert!(
        !tried.contains("16002"),
        "a leaf is not handed out: {answer}"
    );
    // gtk connecting again is not told of itself.
    let (again, _) = dial_raw(n.local_addr, gtk).await;
    assert!(
        !again.contains("16001"),
        "the asker is not handed itself: {again}"
    );
    let mut newcomer = newcomer.unwrap();
    newcomer.send(&frame([5; 16], 0x00, 2, 0, b"")).await;
    let pongs = newcomer.frames_for(Duration::from_millis(800)).await;
    let ports: Vec<u16> = pongs
        .iter()
        .filter(|f| f.header.function == Function::Pong && f.header.guid.0 == [5; 16])
        .map(|f| u16::from_le_bytes([f.payload[0], f.payload[1]]))
        .collect();
    assert!(
        !ports.contains(&16002),
        "no leaf in pong-cache answers: {ports:?}"
    );
    assert_eq!(
        ports.iter().filter(|p| **p == n.local_addr.port()).count(),
        1,
        "one Pong for ourselves: {ports:?}"
    );
    stop(n).await;
}

#[tokio::test]
async fn hosts_that_refuse_us_are_not_redialed_soon() {
    let dir = Dir::new("refused");
    // As a gtk-gnutella or LimeWire leaf refuses (with or without headers),
    // and as a LimeWire leaf with all its ultrapeer slots taken.
    let refusals = [
        (
            "503 I am a shielded leaf node",
            "User-Agent: LimeWire/5.6.2\r\nX-Ultrapeer: False\r\n",
        ),
        ("503 We're Leaves", ""),
        ("503 No Ultrapeer Slots", "User-Agent: LimeWire/5.6.2\r\n"),
    ];
    let mut peers = Vec::new();
    let mut counts = Vec::new();
    for (status, headers) in refusals {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.push(l.local_addr().unwrap().to_string());
        let seen = Arc::new(AtomicUsize::new(0));
        counts.push(seen.clone());
        tokio::spawn(async move {
            loop {
                let _ = accept_raw(&l, status, headers).await;
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let n = node(
        &dir,
        &[],
        NodeConfig {
            peers,
            target_peers: 4,
            redial_pause: Some(Duration::from_millis(100)),
            tier: ultrapeer(),
            ..NodeConfig::default()
        },
    )
    .await;
    // The node dials its configured peers, and its maintainer keeps dialing
    // what it knows for 3 s with a 100 ms pause between failed dials.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen: Vec<usize> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(seen, [1, 1, 1], "each refusing host is asked once");
    stop(n).await;
}

// --------------------------------------------------------------- 15. HTTP

/// A GET of the first byte of `urn` from `addr` with `extra` header lines;
/// the answer's header block.
async fn get_head(addr: SocketAddr, urn: Sha1Urn, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET /uri-res/N2R?{urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    read_block(&mut s, &mut got).await
}

#[tokio::test]
async fn x_alt_never_names_the_asker() {
    let dir = Dir::new("xalt");
    let data = pattern(5000, 9);
    let n = node(&dir, &[("f.bin", &data)], NodeConfig::default()).await;
    let urn = Sha1Urn::digest(&data);
    let a = n.local_addr;
    // Once hashed, the file is served by URN.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !get_head(a, urn, "").await.starts_with("HTTP/1.1 206") {
        assert!(tokio::time::Instant::now() < deadline, "never hashed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A downloader tells of two sources; one of them asks next.
    get_head(
        a,
        urn,
        &format!("X-Gnutella-Content-URN: {urn}\r\nX-Alt: 127.0.0.1:7001, 127.0.0.1:7002\r\n"),
    )
    .await;
    let r = get_head(a, urn, "X-Node: 127.0.0.1:7001\r\n").await;
    let alt = header(&r, "X-Alt").unwrap_or("");
    assert!(alt.contains("7002") && !alt.contains("7001"), "{r}");
    assert_eq!(header(&r, "Content-Type"), Some("application/octet-stream"));
    stop(n).await;
}

// -------------------------------------------------------- 16-17. searching

#[tokio::test]
async fn a_fresh_node_serves_a_search_client_at_once() {
    let dir = Dir::new("freshsearch");
    // Started as the README says: `servent run --share DIR`, mode auto.
    let n = node(
        &dir,
        &[("holiday photo.jpg", b"jpeg")],
        NodeConfig::default(),
    )
    .await;
    let mut names = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        names.clear();
        let r = search::search(
            &n.local_addr.to_string(),
            "holiday",
            3,
            Duration::from_millis(800),
            10,
            |h| names.push(h.name),
        )
        .await;
        if let Err(e) = &r {
            assert!(!e.to_string().contains("503"), "refused: {e}");
        }
        if !names.is_empty() || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    assert_eq!(
        names,
        ["holiday photo.jpg"],
        "found (the library may still be hashing at first)"
    );
    assert!(n.stats().ultrapeer);
    stop(n).await;
}
