//! Hostile peers against one node, in process, on loopback: each attack leaves a
//! well-behaved peer served and the attacker dropped (or its messages dropped)
//! with the right counted reason. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use servent::core::budget::Kind;
use servent::node::get::{self as dl, GetConfig, SourceSpec, Wanted};
use servent::node::{self, Budgets, Mode, NodeConfig, NodeHandle, TierConfig, search};
use servent::wire::http::HttpUrl;
use servent::wire::huge::Sha1Urn;
use servent::wire::{Function, Guid, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;
use common::Dir;
use common::raw::{WAIT, dial_raw, frame};

const UP: &str = "User-Agent: hostile/1\r\nX-Ultrapeer: True\r\nX-Degree: 32\r\nX-Query-Routing: 0.1\r\nX-Ultrapeer-Query-Routing: 0.1\r\n";
const LEAF: &str = "User-Agent: hostile/1\r\nX-Ultrapeer: False\r\nX-Query-Routing: 0.1\r\n";

async fn ultrapeer(dir: &Dir, files: usize, tweak: impl FnOnce(&mut NodeConfig)) -> NodeHandle {
    let share = dir.sub("share");
    for i in 0..files {
        std::fs::write(share.join(format!("track {i} mp3.txt")), i.to_string()).unwrap();
    }
    let mut config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        target_peers: 0,
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    };
    tweak(&mut config);
    node::start(config, CancellationToken::new()).await.unwrap()
}

async fn stop(n: NodeHandle) {
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown ends every task");
}

/// A well-behaved peer's Ping is answered, and a search finds `word`.
async fn still_served(n: &NodeHandle, word: &str) {
    let (answer, raw) = dial_raw(n.local_addr, UP).await;
    let mut good = raw.unwrap_or_else(|| panic!("{answer}"));
    good.send(&frame([0x60; 16], 0x00, 1, 0, b"")).await;
    good.until(|f| f.header.function == Function::Pong && f.header.guid.0 == [0x60; 16])
        .await;
    let mut found = 0;
    search::search(
        &n.local_addr.to_string(),
        word,
        2,
        Duration::from_secs(2),
        5,
        |_| found += 1,
    )
    .await
    .unwrap();
    assert!(found > 0, "{word} found");
}

/// The code of the first Bye in what a raw peer reads until the node closes.
async fn bye_of(raw: &mut common::raw::Raw) -> Option<u16> {
    let f = raw.until(|f| f.header.function == Function::Bye).await;
    Some(u16::from_le_bytes([f.payload[0], f.payload[1]]))
}

#[tokio::test]
async fn a_fresh_query_flood_is_dropped_and_its_sender_closed() {
    let dir = Dir::new("qflood");
    let mut n = ultrapeer(&dir, 200, |_| {}).await;
    let (_, raw) = dial_raw(n.local_addr, UP).await;
    let mut attacker = raw.unwrap();
    // Thousands of fresh queries for a word every shared file holds.
    let mut burst = Vec::new();
    for i in 0..3000u32 {
        let mut g = [0u8; 16];
        g[..4].copy_from_slice(&i.to_le_bytes());
        g[8] = 0xff;
        burst.extend(frame(g, 0x80, 2, 0, b"\x80\x00mp3\x00"));
    }
    let _ = attacker.w.write_all(&burst).await;
    assert_eq!(bye_of(&mut attacker).await, Some(402));
    assert!(n.wait_for(WAIT, |s| s.closed_over_budget >= 1).await);
    let st = n.stats();
    assert!(st.over_budget(Kind::Query) > 0);
    // Only what the budget let through was answered (500 at once, 50 a second).
    let answered = st.router.delivered(servent::core::router::Class::Search);
    assert!(answered < 700, "{answered} of 3000 answered");
    still_served(&n, "mp3").await;
    stop(n).await;
}

#[tokio::test]
async fn a_pong_flood_cannot_replace_the_host_cache() {
    let dir = Dir::new("pongflood");
    let mut n = ultrapeer(&dir, 1, |_| {}).await;
    let (_, raw) = dial_raw(n.local_addr, UP).await;
    let mut attacker = raw.unwrap();
    let ping = attacker
        .until(|f| f.header.function == Function::Ping)
        .await;
    let mut burst = Vec::new();
    for i in 0..500u32 {
        let mut p = 6346u16.to_le_bytes().to_vec();
        p.extend([8, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        p.extend([0; 8]);
        burst.extend(frame(ping.header.guid.0, 0x01, 2, 1, &p));
    }
    // Unsolicited ones too, for a Ping we never sent.
    for i in 0..100u8 {
        let mut p = 6346u16.to_le_bytes().to_vec();
        p.extend([9, 9, 9, i]);
        p.extend([0; 8]);
        burst.extend(frame([i; 16], 0x01, 2, 1, &p));
    }
    attacker.send(&burst).await;
    // Past its budget's burst, twice over: the flooder is closed.
    assert_eq!(bye_of(&mut attacker).await, Some(402));
    assert!(n.wait_for(WAIT, |s| s.closed_over_budget == 1).await);
    assert!(n.stats().pongs_unlisted > 100);
    let st = n.stats();
    assert!(
        st.hosts <= 16,
        "at most one Ping's worth learned: {}",
        st.hosts
    );
    still_served(&n, "mp3").await;
    stop(n).await;
}

/// A RESET message for a table of `slots`.
fn reset(slots: u32) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend(slots.to_le_bytes());
    p.push(7);
    frame([0x31; 16], 0x30, 1, 0, &p)
}

#[tokio::test]
async fn qrp_reset_storms_full_and_huge_tables_are_refused() {
    let dir = Dir::new("qrpstorm");
    let mut n = ultrapeer(&dir, 1, |_| {}).await;
    // A storm of RESETs.
    let (_, raw) = dial_raw(n.local_addr, LEAF).await;
    let mut storm = raw.unwrap();
    let mut burst = Vec::new();
    for _ in 0..20 {
        burst.extend(reset(65536));
    }
    let _ = storm.w.write_all(&burst).await;
    assert_eq!(bye_of(&mut storm).await, Some(402));
    // A table larger than any leaf sends.
    let (_, raw) = dial_raw(n.local_addr, LEAF).await;
    let mut huge = raw.unwrap();
    huge.send(&reset(1 << 22)).await;
    assert_eq!(bye_of(&mut huge).await, Some(402));
    // A "full" table: every slot present, so every query would match.
    let (_, raw) = dial_raw(n.local_addr, LEAF).await;
    let mut full = raw.unwrap();
    full.send(&reset(1024)).await;
    // PATCH: seq 1 of 1, no compression, 8-bit entries, all -1 (present).
    let mut patch = vec![0x01, 1, 1, 0, 8];
    patch.extend(std::iter::repeat_n(0xffu8, 1024));
    full.send(&frame([0x32; 16], 0x30, 1, 0, &patch)).await;
    assert_eq!(bye_of(&mut full).await, Some(402));
    assert!(n.wait_for(WAIT, |s| s.table_errors >= 3).await);
    assert_eq!(n.stats().tables_received, 0);
    still_served(&n, "mp3").await;
    stop(n).await;
}

#[tokio::test]
async fn silent_leaves_lose_their_slots() {
    let dir = Dir::new("silent");
    let mut n = ultrapeer(&dir, 1, |c| {
        c.tier.leaves = 2;
        c.link_limits.read_idle = Duration::from_secs(1);
    })
    .await;
    let (_, a) = dial_raw(n.local_addr, LEAF).await;
    let (_, b) = dial_raw(n.local_addr, LEAF).await;
    let (mut a, mut b) = (a.unwrap(), b.unwrap());
    let (refused, _) = dial_raw(n.local_addr, LEAF).await;
    assert!(refused.starts_with("GNUTELLA/0.6 503"), "{refused}");
    // They say nothing (they do not even answer our Pings).
    assert_eq!(bye_of(&mut a).await, Some(405));
    assert_eq!(bye_of(&mut b).await, Some(405));
    assert!(
        n.wait_for(WAIT, |s| s.idle_closed == 2 && s.leaves == 0)
            .await
    );
    let (accepted, _c) = dial_raw(n.local_addr, LEAF).await;
    assert!(accepted.starts_with("GNUTELLA/0.6 200"), "{accepted}");
    stop(n).await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_dropped() {
    let dir = Dir::new("noread");
    let mut n = ultrapeer(&dir, 1, |c| {
        c.link_limits.write_stall = Duration::from_secs(1);
        c.budgets = Budgets::unlimited();
    })
    .await;
    // A peer with a tiny receive window that never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(n.local_addr).await.unwrap();
    s.write_all(format!("GNUTELLA CONNECT/0.6\r\n{UP}\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    common::raw::read_block(&mut s, &mut got).await;
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").await.unwrap();
    // Another peer's queries are relayed to it, far more than it takes in.
    let (_, flooder) = dial_raw(n.local_addr, UP).await;
    let mut flooder = flooder.unwrap();
    assert!(n.wait_for(WAIT, |s| s.connections == 2).await);
    let text = format!("\u{80}\0{}\0", "z".repeat(200));
    let mut burst = Vec::new();
    for i in 0..20_000u32 {
        let mut g = [0u8; 16];
        g[..4].copy_from_slice(&i.to_le_bytes());
        g[9] = 0xee;
        burst.extend(frame(g, 0x80, 3, 0, text.as_bytes()));
    }
    let writer = tokio::spawn(async move {
        let _ = flooder.w.write_all(&burst).await;
        flooder
    });
    assert!(
        n.wait_for(WAIT, |s| s.stalled_closed == 1).await,
        "{:?}",
        n.stats()
    );
    drop(writer);
    drop(s);
    stop(n).await;
}

#[tokio::test]
async fn a_push_flood_aimed_at_a_third_host_makes_one_connection() {
    let dir = Dir::new("pushflood");
    let n = ultrapeer(&dir, 1, |_| {}).await;
    let victim = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let vport = victim.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let counter = tokio::spawn(async move {
        while let Ok((mut s, _)) = victim.accept().await {
            h2.fetch_add(1, Ordering::SeqCst);
            let mut b = [0u8; 256];
            let _ = s.read(&mut b).await;
        }
    });
    let (_, raw) = dial_raw(n.local_addr, UP).await;
    let mut attacker = raw.unwrap();
    let mut burst = Vec::new();
    for i in 0..50u8 {
        let mut p = n.guid.0.to_vec();
        p.extend(1u32.to_le_bytes());
        p.extend([127, 0, 0, 1]);
        p.extend(vport.to_le_bytes());
        burst.extend(frame([i; 16], 0x40, 3, 0, &p));
    }
    // And Pushes for files we do not have, and to an unroutable address.
    for i in 0..20u8 {
        let mut p = n.guid.0.to_vec();
        p.extend(9999u32.to_le_bytes());
        p.extend([127, 0, 0, 1]);
        p.extend(vport.to_le_bytes());
        burst.extend(frame([100 + i; 16], 0x40, 3, 0, &p));
        let mut q = n.guid.0.to_vec();
        q.extend(1u32.to_le_bytes());
        q.extend([224, 0, 0, 1]);
        q.extend(vport.to_le_bytes());
        burst.extend(frame([150 + i; 16], 0x40, 3, 0, &q));
    }
    attacker.send(&burst).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hits.load(Ordering::SeqCst), 1, "one connection, not 50");
    counter.abort();
    still_served(&n, "mp3").await;
    stop(n).await;
}

#[tokio::test]
async fn fake_alternate_sources_and_a_huge_size_are_contained() {
    let dir = Dir::new("fakealts");
    // A source that answers every request with a list of 200 sources that do
    // not exist.
    let data: Arc<Vec<u8>> = Arc::new((0..300_000u32).map(|i| (i * 7) as u8).collect());
    let urn = Sha1Urn::digest(&data);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let alts: Vec<String> = (0..200).map(|i| format!("127.0.0.1:{}", 1 + i)).collect();
    let alts = alts.join(", ");
    let d2 = data.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (d, alts) = (d2.clone(), alts.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let mut b = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&b[..k]),
                        }
                    };
                    let req = String::from_utf8_lossy(&got[..end]).into_owned();
                    got.drain(..end);
                    let (a, e) = req
                        .lines()
                        .find_map(|l| l.strip_prefix("Range: bytes="))
                        .and_then(|r| {
                            let (a, e) = r.split_once('-')?;
                            Some((a.parse::<usize>().ok()?, e.parse::<usize>().ok()?))
                        })
                        .unwrap();
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{e}/{}\r\nX-Gnutella-Content-URN: {urn}\r\nX-Alt: {alts}\r\n\r\n",
                        e - a + 1,
                        d.len()
                    );
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&d[a..=e]).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let url = HttpUrl::parse(&format!("http://{addr}/uri-res/N2R?{urn}")).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        dl::download(
            Wanted {
                urn: Some(urn),
                fth: None,
                size: Some(data.len() as u64),
                name: None,
                sources: vec![SourceSpec::Url(url.clone())],
            },
            Some(dir.0.join("f.bin")),
            &dir.0,
            None,
            GetConfig::default(),
            CancellationToken::new(),
            |_| {},
        ),
    )
    .await
    .expect("done in time")
    .expect("downloaded despite the fake sources");
    assert!(
        out.sources.len() <= dl::MAX_SOURCES,
        "{}",
        out.sources.len()
    );
    assert_eq!(std::fs::read(dir.0.join("f.bin")).unwrap(), *data);
    // A hit that claims 2^62 bytes: refused before anything is allocated or
    // made on disk.
    let r = dl::download(
        Wanted {
            urn: Some(urn),
            fth: None,
            size: Some(1 << 62),
            name: None,
            sources: vec![SourceSpec::Url(url)],
        },
        Some(dir.0.join("huge.bin")),
        &dir.0,
        None,
        GetConfig::default(),
        CancellationToken::new(),
        |_| {},
    )
    .await;
    assert!(
        matches!(r, Err(dl::GetError::TooLarge { .. })),
        "{:?}",
        r.err()
    );
    assert!(!dir.0.join("huge.bin.part").exists());
}

#[tokio::test]
async fn a_hit_claiming_2_62_bytes_is_refused_by_get() {
    // The search path: a node answers with a hit whose GGEP LF says 2^62.
    let dir = Dir::new("lfhit");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (_, raw) = common::raw::accept_raw(&l, "200 OK", UP).await;
        let mut c = raw.unwrap();
        let q = c.until(|f| f.header.function == Function::Query).await;
        let urn = Sha1Urn::digest(b"huge");
        let hit = Message::QueryHit(servent::wire::QueryHit {
            port: 1,
            ip: std::net::Ipv4Addr::LOCALHOST,
            speed: 0,
            results: vec![servent::wire::HitResult::new(
                1,
                1 << 62,
                "huge.iso",
                Some(&urn),
            )],
            trailer: servent::wire::TrailerArea::Qhd(servent::wire::Trailer::new(
                *b"EVIL",
                servent::wire::OpenDataFlags::default(),
                None,
            )),
            servent: Guid([5; 16]),
        });
        c.send_msg(q.header.guid, 3, 0, &hit).await;
        c.frames_for(Duration::from_secs(8)).await;
    });
    let o = tokio::task::spawn_blocking({
        let d = dir.0.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_servent"))
                .args(["get", "--peer", &addr.to_string(), "huge"])
                .current_dir(&d)
                .env_remove("SERVENT_GET_OUTPUT")
                .env("SERVENT_CONFIG", "/dev/null")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("over the limit"), "{err}");
    assert!(!dir.0.join("huge.iso.part").exists());
    server.abort();
}

#[tokio::test]
async fn one_address_cannot_take_every_socket() {
    let dir = Dir::new("perip");
    let mut n = ultrapeer(&dir, 1, |_| {}).await;
    // Sockets that connect and say nothing hold their address's share while
    // their handshake time runs (64 on a local mesh).
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(tokio::net::TcpStream::connect(n.local_addr).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(n.local_addr).await.unwrap();
    let mut b = [0u8; 16];
    let r = tokio::time::timeout(WAIT, extra.read(&mut b))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "closed at once");
    assert!(n.wait_for(WAIT, |s| s.per_ip_refused >= 1).await);
    // Another address is served meanwhile.
    let (answer, _) = common::raw::dial_raw_from(Some("127.0.0.2"), n.local_addr, UP).await;
    assert!(answer.starts_with("GNUTELLA/0.6 200"), "{answer}");
    drop(held);
    stop(n).await;
}
