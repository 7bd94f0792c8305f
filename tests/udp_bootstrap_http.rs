//! HTTP bootstrap: a node with no peer joins through a `servent webcache` of
//! its own (GWebCache spec 2 and gtk's `/list4`), the cache's bounds, ageing and
//! rate limits over HTTP, and the client against the answers real caches gave
//! (capture run 2).

use std::net::SocketAddr;
use std::time::Duration;

use servent::bootstrap::server::{self as cache, ServerConfig, WebcacheHandle};
use servent::bootstrap::{WebCaches, http_round};
use servent::core::addr::Scope;
use servent::core::webcache::{RotationConfig, StoreConfig};
use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig};
use servent::wire::webcache::{CacheUrl, parse_answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bootstrap-http-run2"
);

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

async fn webcache(store: StoreConfig) -> WebcacheHandle {
    cache::start(
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            store,
            local_network: false,
            data_dir: None,
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// A node on loopback with no peer, only `webcaches`.
async fn node_with_caches(mode: Mode, webcaches: &[String]) -> NodeHandle {
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        handshake_timeout: Duration::from_secs(2),
        redial_pause: Some(Duration::from_millis(200)),
        target_peers: 2,
        tier: TierConfig {
            mode,
            ..TierConfig::default()
        },
        webcaches: webcaches
            .iter()
            .map(|u| CacheUrl::parse(u).unwrap())
            .collect(),
        ..NodeConfig::default()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// Sends `request` as it is and reads the whole answer (the cache closes or
/// the answer is complete by its length).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(usize::MAX);
                if body.len() >= len {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("an answer");
    String::from_utf8(got).unwrap()
}

/// GETs `target` and returns the status code and the body.
async fn get(addr: SocketAddr, target: &str) -> (u16, String) {
    let answer = raw(
        addr,
        format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn joins_through(form: impl Fn(SocketAddr) -> String) {
    let cache = webcache(StoreConfig::default()).await;
    let gwc = format!("http://{}/", cache.local_addr);
    // The ultrapeer updates the cache with its address (a local mesh: at once).
    let up = node_with_caches(Mode::Ultrapeer, std::slice::from_ref(&gwc)).await;
    let t = std::time::Instant::now();
    while cache.hosts() == 0 {
        assert!(t.elapsed() < WAIT, "the ultrapeer never updated the cache");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.stats().updates_taken, 1);
    assert_eq!(up.webcache_stats().updates_ok, 1);
    // A leaf that knows only the cache, in the form under test, joins it.
    let mut leaf = node_with_caches(Mode::Leaf, &[form(cache.local_addr)]).await;
    assert!(
        leaf.wait_for(WAIT, |s| s.to_ultrapeers == 1).await,
        "the leaf did not join: {:?}",
        leaf.webcache_stats()
    );
    let st = leaf.webcache_stats();
    assert!(st.asked >= 1 && st.hosts >= 1, "{st:?}");
    assert_eq!(st.updates, 0, "a leaf does not list itself");
    for n in [leaf, up] {
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("stops");
    }
    cache.shutdown().await;
}

#[tokio::test]
async fn a_node_joins_through_a_gwebcache_alone() {
    joins_through(|a| format!("http://{a}/gwc.php")).await;
}

#[tokio::test]
async fn a_node_joins_through_list4_alone() {
    joins_through(|a| format!("http://{a}/list4")).await;
}

#[tokio::test]
async fn a_node_joins_through_a_limewire_style_url_alone() {
    joins_through(|a| format!("list:http://{a}/bootstrap")).await;
}

#[tokio::test]
async fn a_node_with_no_cache_and_no_peer_stays_alone() {
    let mut n = node_with_caches(Mode::Leaf, &[]).await;
    assert!(
        !n.wait_for(Duration::from_millis(1500), |s| s.connections > 0)
            .await
    );
    assert_eq!(n.webcache_stats().asked, 0);
    n.shutdown().await;
}

#[tokio::test]
async fn the_cache_is_bounded_aged_and_rate_limited() {
    let cache = webcache(StoreConfig {
        max_hosts: 2,
        host_ttl: Duration::from_secs(1),
        update_every: Duration::from_secs(60),
        ..StoreConfig::default()
    })
    .await;
    let a = cache.local_addr;
    let update = |port: u16| format!("/?update=1&ip=127.0.0.1:{port}&net=gnutella");
    assert_eq!(
        get(a, &update(1000)).await,
        (200, "I|update|OK\nI|update|period|60\n".into())
    );
    // The same host again within the period: refused.
    assert_eq!(
        get(a, &update(1000)).await.1,
        "I|update|WARNING|too soon\nI|update|period|60\n"
    );
    get(a, &update(1001)).await;
    get(a, &update(1002)).await;
    assert_eq!(cache.hosts(), 2, "bounded");
    assert_eq!(
        get(a, "/list4").await,
        (200, "127.0.0.1:1002\n127.0.0.1:1001\n".into())
    );
    // Only the host itself may list its address, whatever a header says.
    let forged = raw(
        a,
        b"GET /?ip=8.8.8.8:6346 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 8.8.8.8\r\nX-Remote-IP: 8.8.8.8\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        forged.ends_with("OK\nWARNING: ip is not yours\n"),
        "{forged}"
    );
    // Aged out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get(a, "/list4").await, (200, String::new()));
    assert_eq!(cache.hosts(), 0);
    // Clear statuses for what is not a cache request.
    assert_eq!(get(a, "/?url=%zz").await.0, 400);
    let post = raw(
        a,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let head = raw(
        a,
        b"HEAD /?get=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let st = cache.stats();
    assert_eq!(
        (
            st.updates_taken,
            st.updates_too_soon,
            st.updates_not_yours,
            st.bad_requests
        ),
        (3, 1, 1, 1)
    );
    assert!(st.hosts_expired >= 3, "{st:?}");
    cache.shutdown().await;
}

#[tokio::test]
async fn the_cache_keeps_its_list_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("servent-webcache-{}", std::process::id()));
    let start = || {
        cache::start(
            ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                store: StoreConfig::default(),
                local_network: false,
                data_dir: Some(dir.clone()),
            },
            CancellationToken::new(),
        )
    };
    let first = start().await.unwrap();
    get(
        first.local_addr,
        "/?ip=127.0.0.1:6346&url=http://127.0.0.1:1/g.php",
    )
    .await;
    first.shutdown().await;
    let second = start().await.unwrap();
    assert_eq!(second.hosts(), 1);
    let (_, body) = get(second.local_addr, "/?get=1").await;
    let a = parse_answer(body.as_bytes());
    assert_eq!(
        a.hosts().map(|(h, _)| h).collect::<Vec<_>>(),
        ["127.0.0.1:6346".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(a.urls().collect::<Vec<_>>(), ["http://127.0.0.1:1/g.php"]);
    second.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_cache_answers_gtk_and_limewire_requests_as_captured() {
    let cache = webcache(StoreConfig::default()).await;
    let a = cache.local_addr;
    get(a, "/?ip=127.0.0.1:19104").await;
    for request in ["gtk-ghc-request.http", "limewire-request.http"] {
        let answer = raw(a, &fixture(request)).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Content-Type: text/plain"), "{head}");
        // What both read: `ip:port` lines (LimeWire stops at an empty line).
        assert_eq!(body, "127.0.0.1:19104\n", "{request}");
    }
    cache.shutdown().await;
}

#[test]
fn the_captured_answers_parse() {
    for name in ["gtk-ghc-answer.http", "limewire-answer.http"] {
        let raw = fixture(name);
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let a = parse_answer(&raw[at..]);
        let hosts: Vec<SocketAddr> = a.hosts().map(|(h, _)| h).collect();
        assert_eq!(
            hosts,
            [
                "11.0.0.1:19104".parse::<SocketAddr>().unwrap(),
                "11.0.0.3:6346".parse().unwrap()
            ]
        );
        assert_eq!((a.junk, a.truncated, a.spec2()), (0, false, false));
    }
}

/// A cache that answers every connection with `answer`, and hands each
/// request it read to the test.
async fn canned(answer: Vec<u8>) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (answer, tx) = (answer.clone(), tx.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&got).into_owned());
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, rx)
}

fn fast() -> RotationConfig {
    RotationConfig {
        min_interval: Duration::ZERO,
        retry_start: Duration::ZERO,
        ..RotationConfig::local()
    }
}

#[tokio::test]
async fn the_client_reads_a_ghc_as_gtk_does_and_keeps_to_its_scope() {
    let (addr, mut requests) = canned(fixture("gtk-ghc-answer.http")).await;
    let url = CacheUrl::parse(&format!("http://{addr}/list4")).unwrap();
    let caches = WebCaches::new(vec![url.clone()], Scope::Internet, None, 1).with_rotation(
        fast(),
        Scope::Internet,
        1,
    );
    let hosts = http_round(&caches).await;
    assert_eq!(
        hosts,
        [
            "11.0.0.1:19104".parse::<SocketAddr>().unwrap(),
            "11.0.0.3:6346".parse().unwrap()
        ]
    );
    let request = requests.recv().await.unwrap();
    assert!(request.starts_with("GET /list4 HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains(&format!("\r\nHost: {addr}\r\n")),
        "{request}"
    );
    // A GWebCache is asked with spec-2 parameters; hosts outside the scope
    // (here: private ones, for a node on the Internet) are dropped, counted.
    let (addr, mut requests) = canned(
        b"HTTP/1.0 200 OK\r\n\r\nI|pong|x|gnutella\nH|10.0.0.1:6346|1\nH|8.8.8.8:6346|1\nU|http://192.168.0.1/x|1\nH|8.8.4.4:6346\n"
            .to_vec(),
    )
    .await;
    let url = CacheUrl::parse(&format!("http://{addr}/gwc.php")).unwrap();
    let caches = WebCaches::new(vec![url], Scope::Internet, None, 1);
    let hosts = http_round(&caches).await;
    assert_eq!(
        hosts,
        [
            "8.8.8.8:6346".parse::<SocketAddr>().unwrap(),
            "8.8.4.4:6346".parse().unwrap()
        ]
    );
    let request = requests.recv().await.unwrap();
    assert!(
        request.starts_with(&format!(
            "GET /gwc.php?get=1&hostfile=1&urlfile=1&net=gnutella&client=SRVT&version={} HTTP/1.1\r\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{request}"
    );
    let st = caches.stats();
    assert_eq!(
        (st.hosts, st.hosts_out_of_scope, st.urls_dropped),
        (2, 1, 1)
    );
    // Asked again only after the interval: nothing now.
    assert!(http_round(&caches).await.is_empty());
    assert_eq!(caches.stats().asked, 1);
}

#[tokio::test]
async fn the_client_follows_a_redirect_caps_the_size_and_counts_failures() {
    let (to, _r) = canned(b"HTTP/1.0 200 OK\r\n\r\n8.8.8.8:1\n".to_vec()).await;
    let (from, _r2) = canned(
        format!("HTTP/1.0 302 Found\r\nLocation: http://{to}/elsewhere\r\n\r\n").into_bytes(),
    )
    .await;
    let url = CacheUrl::parse(&format!("http://{from}/list4")).unwrap();
    let caches = WebCaches::new(vec![url], Scope::Internet, None, 1);
    assert_eq!(http_round(&caches).await, ["8.8.8.8:1".parse().unwrap()]);
    // A huge answer is read up to the cap: the lines in it count, no more.
    let mut huge = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    for i in 0..20_000u32 {
        huge.extend_from_slice(format!("8.8.{}.{}:6346\n", i / 250, i % 250 + 1).as_bytes());
    }
    let (big, _r3) = canned(huge).await;
    let url = CacheUrl::parse(&format!("http://{big}/list4")).unwrap();
    let caches = WebCaches::new(vec![url], Scope::Internet, None, 1);
    let hosts = http_round(&caches).await;
    assert_eq!(hosts.len(), servent::core::webcache::MAX_HOSTS_PER_ANSWER);
    assert!(caches.stats().hosts_over_limit > 0);
    // Nobody listening: a failure, counted.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let url = CacheUrl::parse(&format!("http://{gone_addr}/")).unwrap();
    let caches = WebCaches::new(vec![url], Scope::Internet, None, 1);
    assert!(http_round(&caches).await.is_empty());
    assert_eq!(caches.stats().failed, 1);
    // A 404 is a failure too.
    let (nf, _r4) = canned(b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec()).await;
    let url = CacheUrl::parse(&format!("http://{nf}/")).unwrap();
    let caches = WebCaches::new(vec![url], Scope::Internet, None, 1);
    assert!(http_round(&caches).await.is_empty());
    assert_eq!(caches.stats().failed, 1);
}
