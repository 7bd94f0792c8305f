//! File transfer on loopback: ranges, refusals, upload slots, resuming after a
//! kill, a swarm with a lying source, a push download from a firewalled node, and
//! a file over 4 GiB. Every wait is bounded; nothing sleeps to wait for a state.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use servent::fasttrack::hash::{self as fasttrack_hash, Fth};
use servent::node::get::{self as dl, GetConfig, SourceSpec, Wanted};
use servent::node::{self, NodeConfig, NodeHandle, search};
use servent::wire::http::HttpUrl;
use servent::wire::huge::Sha1Urn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

mod common;
use common::{Dir, pattern, servent_output};

async fn node_sharing(
    share: &Path,
    peers: Vec<String>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> NodeHandle {
    let mut config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share.to_path_buf()],
        peers,
        handshake_timeout: Duration::from_secs(5),
        target_peers: 0,
        // Ultrapeers, so a search client can connect to any of them (a
        // --firewalled one stays a leaf).
        tier: node::TierConfig {
            mode: node::Mode::Ultrapeer,
            ..node::TierConfig::default()
        },
        ..NodeConfig::default()
    };
    tweak(&mut config);
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// An HTTP answer as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on `s` and reads its answer (HEAD: no body).
async fn exchange(s: &mut TcpStream, request: &str, head: bool) -> Answer {
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("answered in time")
            .unwrap();
        assert!(n > 0, "connection closed before the answer's head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head_text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut a = Answer {
        status,
        headers,
        body: buf[end..].to_vec(),
    };
    let len: usize = a
        .header("content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    if head {
        assert!(a.body.is_empty());
        return a;
    }
    while a.body.len() < len {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("body in time")
            .unwrap();
        assert!(n > 0, "connection closed in the body");
        a.body.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(a.body.len(), len, "no more than Content-Length");
    a
}

async fn get(addr: SocketAddr, target: &str, extra: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = extra.starts_with("HEAD");
    let (method, extra) = if head {
        ("HEAD", &extra[4..])
    } else {
        ("GET", extra)
    };
    exchange(
        &mut s,
        &format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
        head,
    )
    .await
}

/// Waits until the node serves `name` with a SHA-1; returns its index and URN.
async fn hashed(addr: SocketAddr, name: &str) -> (u32, Sha1Urn) {
    let deadline = Instant::now() + WAIT;
    loop {
        for index in 1..20 {
            let a = get(addr, &format!("/get/{index}/{name}"), "HEAD").await;
            if a.status == 200 {
                if let Some(u) = a.header("x-gnutella-content-urn") {
                    return (index, u.parse().unwrap());
                }
            }
        }
        assert!(Instant::now() < deadline, "{name} hashed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ranges_as_a_table_with_keep_alive() {
    let dir = Dir::new("ranges");
    let share = dir.sub("share");
    let data = pattern(1000, 1);
    std::fs::write(share.join("data.bin"), &data).unwrap();
    let n = node_sharing(&share, vec![], |_| {}).await;
    let (index, urn) = hashed(n.local_addr, "data.bin").await;
    assert_eq!(urn, Sha1Urn::digest(&data));
    // One connection for the whole table: keep-alive.
    let mut s = TcpStream::connect(n.local_addr).await.unwrap();
    let by_index = format!("/get/{index}/data.bin");
    let by_urn = format!("/uri-res/N2R?{urn}");
    // (range header, status, content-range, body bytes)
    type Row<'a> = (
        Option<&'a str>,
        u16,
        Option<&'a str>,
        Option<(usize, usize)>,
    );
    let table: &[Row] = &[
        (None, 200, None, Some((0, 1000))),
        (
            Some("bytes=0-99"),
            206,
            Some("bytes 0-99/1000"),
            Some((0, 100)),
        ),
        (
            Some("bytes=900-"),
            206,
            Some("bytes 900-999/1000"),
            Some((900, 1000)),
        ),
        (
            Some("bytes=-10"),
            206,
            Some("bytes 990-999/1000"),
            Some((990, 1000)),
        ),
        (
            Some("bytes=-2000"),
            206,
            Some("bytes 0-999/1000"),
            Some((0, 1000)),
        ),
        (
            Some("bytes=995-5000"),
            206,
            Some("bytes 995-999/1000"),
            Some((995, 1000)),
        ),
        (
            Some("bytes=10-19,50-59"),
            206,
            Some("bytes 10-19/1000"),
            Some((10, 20)),
        ),
        (Some("bytes=1000-"), 416, Some("bytes */1000"), None),
        (Some("bytes=5000-6000"), 416, Some("bytes */1000"), None),
        (Some("bytes=-0"), 416, Some("bytes */1000"), None),
        // A Range that cannot be read is ignored (RFC 9110): the whole file.
        (Some("bytes=9-3"), 200, None, Some((0, 1000))),
        (Some("bytes=10-5"), 200, None, Some((0, 1000))),
        (Some("pages=1-2"), 200, None, Some((0, 1000))),
        (Some("bytes=x-"), 200, None, Some((0, 1000))),
        (Some("bytes=abc"), 200, None, Some((0, 1000))),
    ];
    for target in [&by_index, &by_urn] {
        for (range, status, content_range, body) in table {
            let extra = range.map_or(String::new(), |r| format!("Range: {r}\r\n"));
            let a = exchange(
                &mut s,
                &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n"),
                false,
            )
            .await;
            assert_eq!(a.status, *status, "{target} {range:?}");
            assert_eq!(a.header("content-range"), *content_range, "{range:?}");
            if let Some((from, to)) = body {
                assert_eq!(a.body, data[*from..*to], "{range:?}");
                assert_eq!(a.header("content-type"), Some("application/octet-stream"));
                assert_eq!(
                    a.header("x-gnutella-content-urn"),
                    Some(urn.to_string().as_str())
                );
                assert_eq!(a.header("accept-ranges"), Some("bytes"));
            }
            assert!(
                a.header("server")
                    .is_some_and(|v| v.starts_with("servent/"))
            );
        }
    }
    // HEAD: the headers of a GET, no body.
    let a = exchange(
        &mut s,
        &format!("HEAD {by_urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=1-2\r\n\r\n"),
        true,
    )
    .await;
    assert_eq!((a.status, a.header("content-length")), (206, Some("2")));
    // A downloader's X-Alt is passed on to the next one.
    let a = exchange(
        &mut s,
        &format!("GET {by_urn} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\nX-Gnutella-Content-URN: {urn}\r\nX-Alt: 192.0.2.7:6350, 198.51.100.1\r\n\r\n"),
        false,
    )
    .await;
    assert_eq!(a.status, 206);
    let a = get(n.local_addr, &by_urn, "Range: bytes=0-0\r\n").await;
    let alt = a.header("x-alt").expect("X-Alt");
    assert!(
        alt.contains("192.0.2.7:6350") && alt.contains("198.51.100.1"),
        "{alt}"
    );
    // Not GET or HEAD.
    let a = exchange(
        &mut s,
        &format!("DELETE {by_urn} HTTP/1.1\r\nHost: x\r\n\r\n"),
        false,
    )
    .await;
    assert_eq!(a.status, 405);
    n.shutdown().await;
}

#[tokio::test]
async fn every_traversal_form_is_refused() {
    let dir = Dir::new("traversal");
    let share = dir.sub("share");
    let outside = dir.sub("private");
    std::fs::write(outside.join("secret.txt"), b"TOP SECRET").unwrap();
    std::fs::write(share.join("public.txt"), b"public bytes").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.join("secret.txt"), share.join("link.txt")).unwrap();
    let n = node_sharing(&share, vec![], |_| {}).await;
    let (index, _) = hashed(n.local_addr, "public.txt").await;
    let secret = outside.join("secret.txt");
    let abs = secret.to_str().unwrap();
    let targets = [
        format!("/get/{index}/.."),
        format!("/get/{index}/%2e%2e"),
        format!("/get/{index}/%2E%2E/%2E%2E/private/secret.txt"),
        format!("/get/{index}/..%2f..%2fprivate%2fsecret.txt"),
        format!("/get/{index}/../../private/secret.txt"),
        format!(
            "/get/{index}/%2f{}",
            abs.trim_start_matches('/').replace('/', "%2f")
        ),
        format!("/get/{index}/..%5c..%5csecret.txt"),
        format!("/get/{index}/public.txt%00.jpg"),
        format!("/get/{index}/secret.txt"),
        format!("/get/{}/link.txt", index + 1),
        "/get/0/public.txt".to_string(),
        "/get/999/public.txt".to_string(),
        "/get/-1/public.txt".to_string(),
        "/get/1x/public.txt".to_string(),
        abs.to_string(),
        format!("/..{abs}"),
        "/../../../../etc/passwd".to_string(),
        "/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/uri-res/N2R?urn:sha1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string(),
        "/uri-res/N2R?../../etc/passwd".to_string(),
        "/uri-res/N2R?urn:sha1:%2e%2e".to_string(),
        format!(
            "/uri-res/N2R?urn:sha1:{}",
            Sha1Urn::digest(b"TOP SECRET").base32()
        ),
    ];
    for t in &targets {
        let a = get(n.local_addr, t, "").await;
        assert!(matches!(a.status, 400 | 404), "{t}: {}", a.status);
        assert!(!String::from_utf8_lossy(&a.body).contains("SECRET"), "{t}");
    }
    // The one good request still works.
    let a = get(n.local_addr, &format!("/get/{index}/public.txt"), "").await;
    assert_eq!((a.status, a.body.as_slice()), (200, &b"public bytes"[..]));
    n.shutdown().await;
}

#[tokio::test]
async fn a_changed_file_is_never_served_under_its_old_hash() {
    let dir = Dir::new("changed");
    let share = dir.sub("share");
    std::fs::write(share.join("doc.txt"), b"first version").unwrap();
    let n = node_sharing(&share, vec![], |_| {}).await;
    let (index, old) = hashed(n.local_addr, "doc.txt").await;
    std::fs::write(share.join("doc.txt"), b"the second version, longer").unwrap();
    for t in [
        format!("/get/{index}/doc.txt"),
        format!("/uri-res/N2R?{old}"),
    ] {
        let a = get(n.local_addr, &t, "").await;
        assert_eq!(a.status, 404, "{t}");
    }
    // The refusal made the library look again: the new content comes back under
    // its own SHA-1 (and a new index), the old one never again.
    let new = Sha1Urn::digest(b"the second version, longer");
    let deadline = Instant::now() + WAIT;
    loop {
        let a = get(n.local_addr, &format!("/uri-res/N2R?{new}"), "").await;
        if a.status == 200 {
            assert_eq!(a.body, b"the second version, longer");
            break;
        }
        assert!(Instant::now() < deadline, "rehashed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(n.local_addr, &format!("/uri-res/N2R?{old}"), "")
            .await
            .status,
        404
    );
    n.shutdown().await;
}

/// A connection keeps its last file open between requests; a change on disk
/// must still be seen by its next request, as by a new connection's.
#[tokio::test]
async fn a_kept_alive_connection_sees_the_file_change_too() {
    let dir = Dir::new("changed-keepalive");
    let share = dir.sub("share");
    let path = share.join("doc.bin");
    let first = pattern(10_000, 7);
    std::fs::write(&path, &first).unwrap();
    let n = node_sharing(&share, vec![], |_| {}).await;
    let (index, old) = hashed(n.local_addr, "doc.bin").await;
    let mut s = TcpStream::connect(n.local_addr).await.unwrap();
    let req =
        |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n");
    let by_index = format!("/get/{index}/doc.bin");
    let by_urn = format!("/uri-res/N2R?{old}");
    for t in [&by_index, &by_urn] {
        let a = exchange(&mut s, &req(t), false).await;
        assert_eq!(
            (a.status, a.body.as_slice()),
            (206, &first[100..200]),
            "{t}"
        );
    }
    // Same size, other bytes, written in place (the same inode), a later time.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pattern(10_000, 8), 0).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    drop(f);
    for t in [&by_index, &by_urn] {
        let a = exchange(&mut s, &req(t), false).await;
        assert_eq!(a.status, 404, "{t}");
    }
    n.shutdown().await;
}

#[tokio::test]
async fn upload_slots_are_limited_and_hits_say_busy() {
    let dir = Dir::new("slots");
    let share = dir.sub("share");
    let data = pattern(8 << 20, 2);
    std::fs::write(share.join("song.ogg"), &data).unwrap();
    let n = node_sharing(&share, vec![], |c| c.max_uploads = 1).await;
    let (index, _) = hashed(n.local_addr, "song.ogg").await;
    let target = format!("/get/{index}/song.ogg");
    // A download in progress (its reader is slow: it reads nothing for now)
    // holds the one slot...
    let mut first = TcpStream::connect(n.local_addr).await.unwrap();
    first
        .write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // ...so another download is turned away.
    let b = get(n.local_addr, &target, "").await;
    assert_eq!(b.status, 503);
    assert!(
        b.header("retry-after")
            .is_some_and(|v| v.parse::<u32>().is_ok())
    );
    // HEAD needs no slot.
    assert_eq!(get(n.local_addr, &target, "HEAD").await.status, 200);
    let mut busy = Vec::new();
    search::search(
        &n.local_addr.to_string(),
        "song",
        2,
        Duration::from_secs(2),
        1,
        |h| busy.push(h.busy),
    )
    .await
    .unwrap();
    assert_eq!(busy, [true]);
    // Once its body is sent the slot is free again, though the connection
    // stays open (kept alive, idle between requests: it holds no slot).
    let mut buf = head.to_vec();
    let mut chunk = vec![0u8; 1 << 16];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = first.read(&mut chunk).await.unwrap();
        assert!(k > 0);
        buf.extend_from_slice(&chunk[..k]);
    };
    let mut body = buf.len() - header_end;
    while body < data.len() {
        let k = tokio::time::timeout(WAIT, first.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0, "the body ended early");
        body += k;
    }
    assert_eq!(body, data.len());
    let deadline = Instant::now() + WAIT;
    while get(n.local_addr, &target, "Range: bytes=0-9\r\n")
        .await
        .status
        != 206
    {
        assert!(Instant::now() < deadline, "slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first connection downloads on, when a slot is free.
    let a = exchange(
        &mut first,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n"),
        false,
    )
    .await;
    assert_eq!(a.status, 206);
    n.shutdown().await;
}

/// Waits until the node serves `fth` (its FastTrack hash is computed).
async fn fth_served(addr: SocketAddr, fth: Fth) {
    let deadline = Instant::now() + WAIT;
    while get(addr, &fth.http_path(), "HEAD").await.status != 200 {
        assert!(Instant::now() < deadline, "FTH known in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The identity headers every answer to a FastTrack client carries.
fn says_kazaa(a: &Answer, addr: SocketAddr) {
    assert_eq!(a.header("x-kazaa-username"), Some("servent"), "{a:?}");
    assert_eq!(a.header("x-kazaa-network"), Some("KaZaA"));
    assert_eq!(a.header("x-kazaa-ip"), Some(addr.to_string().as_str()));
    assert_eq!(a.header("x-kazaa-supernodeip"), None, "no supernode");
}

#[tokio::test]
async fn a_fasttrack_client_downloads_by_fth_as_gift_asks() {
    let dir = Dir::new("ft-get");
    let share = dir.sub("share");
    let data = pattern(400_000, 11);
    std::fs::write(share.join("file.bin"), &data).unwrap();
    let fth = fasttrack_hash::fth(&data);
    let n = node_sharing(&share, vec![], |_| {}).await;
    let addr = n.local_addr;
    fth_served(addr, fth).await;
    // The request giFT-FastTrack 0.8.9 sent, byte for byte but the hash.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /.hash={} HTTP/1.1\r\nRange: bytes=0-399999\r\nUserAgent: giFT-FastTrack 0.8.9\r\n\
         X-Kazaa-Network: KaZaA\r\nX-Kazaa-Username: B\r\nConnection: Close\r\n\
         X-Kazaa-XferUid: VvdW4Mtg2a3+fZPPTRUZmIbccHW9F6FmzNwa+98ShQE=\r\nHost: {addr}\r\n\r\n",
        fth.hex()
    );
    let a = exchange(&mut s, &request, false).await;
    assert_eq!(a.status, 206, "{a:?}");
    assert_eq!(a.header("content-range"), Some("bytes 0-399999/400000"));
    assert_eq!(a.header("content-length"), Some("400000"));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert_eq!(a.header("content-type"), Some("application/octet-stream"));
    assert_eq!(a.header("connection"), Some("close"));
    says_kazaa(&a, addr);
    let tag = format!("3={}", fth.kazaa_base64());
    assert_eq!(a.header("x-kazaatag"), Some(tag.as_str()));
    assert!(tag.starts_with("3==") && tag.len() == 31);
    assert_eq!(
        a.header("x-gnutella-content-urn"),
        None,
        "FastTrack headers only"
    );
    assert!(a.body == data, "the bytes");
    // And then the connection is closed, as asked.
    let mut rest = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, s.read(&mut rest)).await.unwrap();
    assert_eq!(closed.unwrap(), 0);

    // Kept alive when not asked to close: a range, HEAD, the older
    // `/<file id>/<name>` form, one connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let path = fth.http_path();
    let a = exchange(
        &mut s,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n"),
        false,
    )
    .await;
    assert_eq!((a.status, &a.body[..]), (206, &data[100..200]));
    assert_eq!(a.header("content-range"), Some("bytes 100-199/400000"));
    let a = exchange(
        &mut s,
        &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"),
        true,
    )
    .await;
    assert_eq!(
        (a.status, a.header("content-length")),
        (200, Some("400000"))
    );
    says_kazaa(&a, addr);
    let legacy = format!("/{}/file.bin", fth.file_id());
    let a = exchange(
        &mut s,
        &format!("GET {legacy} HTTP/1.1\r\nHost: x\r\nRange: bytes=399990-\r\n\r\n"),
        false,
    )
    .await;
    assert_eq!((a.status, &a.body[..]), (206, &data[399_990..]));
    says_kazaa(&a, addr);

    // Refusals name us too.
    let other = fasttrack_hash::fth(b"not shared");
    let a = get(addr, &other.http_path(), "").await;
    assert_eq!(a.status, 404);
    says_kazaa(&a, addr);
    let a = get(addr, &format!("/{}/other.bin", fth.file_id()), "").await;
    assert_eq!(a.status, 404, "the name must match exactly");
    says_kazaa(&a, addr);
    let a = get(addr, "/.hash=1234", "").await;
    assert_eq!(a.status, 400);
    says_kazaa(&a, addr);
    let a = get(addr, &path, "Range: bytes=400000-\r\n").await;
    assert_eq!(a.status, 416);
    // Gnutella requests carry no FastTrack headers.
    let a = get(addr, "/get/1/file.bin", "HEAD").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-kazaa-username"), None);
    // Our hits carry the FTH (GGEP `FTH`), for a FastTrack client to verify.
    let mut seen = Vec::new();
    search::search(
        &addr.to_string(),
        "file",
        2,
        Duration::from_secs(2),
        1,
        |h| seen.push((h.name.clone(), h.fth)),
    )
    .await
    .unwrap();
    assert_eq!(seen, [("file.bin".to_string(), Some(fth))]);
    n.shutdown().await;
}

#[tokio::test]
async fn fasttrack_downloads_share_the_upload_slots() {
    let dir = Dir::new("ft-slots");
    let share = dir.sub("share");
    let data = pattern(8 << 20, 12);
    std::fs::write(share.join("big.bin"), &data).unwrap();
    let fth = fasttrack_hash::fth(&data);
    let n = node_sharing(&share, vec![], |c| c.max_uploads = 1).await;
    fth_served(n.local_addr, fth).await;
    // A Gnutella download that reads nothing holds the one slot...
    let (index, _) = hashed(n.local_addr, "big.bin").await;
    let mut first = TcpStream::connect(n.local_addr).await.unwrap();
    first
        .write_all(format!("GET /get/{index}/big.bin HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    first.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // ...so a FastTrack one is told to come back, in FastTrack's words too.
    let a = get(n.local_addr, &fth.http_path(), "Range: bytes=0-99\r\n").await;
    assert_eq!(a.status, 503);
    assert!(a.header("retry-after").is_some());
    says_kazaa(&a, n.local_addr);
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let a = get(n.local_addr, &fth.http_path(), "Range: bytes=0-99\r\n").await;
        if a.status == 206 {
            assert_eq!(a.body, data[..100]);
            break;
        }
        assert!(Instant::now() < deadline, "slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    n.shutdown().await;
}

#[tokio::test]
async fn a_hash_cache_from_before_the_fth_gets_it_filled_in() {
    let dir = Dir::new("ft-cache");
    let share = dir.sub("share");
    let data_dir = dir.sub("data");
    let data = pattern(3 << 20, 13);
    let file = share.join("song.ogg");
    std::fs::write(&file, &data).unwrap();
    let meta = std::fs::metadata(&file).unwrap();
    let mtime_ns = meta
        .modified()
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let urn = Sha1Urn::digest(&data);
    let canon = std::fs::canonicalize(&file).unwrap();
    // The line an older servent wrote: SHA-1 only.
    let cache = data_dir.join("sha1-cache.txt");
    let old_line = format!(
        "{} {} {mtime_ns} {}\n",
        urn.base32(),
        data.len(),
        canon.display()
    );
    std::fs::write(&cache, &old_line).unwrap();
    let n = node_sharing(&share, vec![], |c| c.data_dir = Some(data_dir.clone())).await;
    // Served by SHA-1 at once (the cache is trusted for it)...
    let a = get(n.local_addr, &format!("/uri-res/N2R?{urn}"), "HEAD").await;
    assert_eq!(a.status, 200);
    // ...and by FTH once that is filled in, then kept in the cache.
    let fth = fasttrack_hash::fth(&data);
    fth_served(n.local_addr, fth).await;
    let deadline = Instant::now() + WAIT;
    let want = format!("{},{} ", urn.base32(), fth.hex());
    while !std::fs::read_to_string(&cache).unwrap().contains(&want) {
        assert!(Instant::now() < deadline, "cache rewritten with the FTH");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n.shutdown().await;
}

/// A source written for the tests: serves one file's ranges over keep-alive
/// HTTP/1.1, optionally slowly (a pause per 16 KiB) or lying (every byte
/// flipped). Counts the body bytes it sent.
struct TestSource {
    addr: SocketAddr,
    sent: Arc<AtomicU64>,
    requests: Arc<AtomicUsize>,
    /// The head of every request, as received.
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestSource {
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn test_source(
    data: Arc<Vec<u8>>,
    urn: Option<Sha1Urn>,
    lie: bool,
    pause: Duration,
) -> TestSource {
    test_source_with(data, urn, None, lie, pause).await
}

/// As [`test_source`], with one more header line (`Name: value`) in every answer.
async fn test_source_with(
    data: Arc<Vec<u8>>,
    urn: Option<Sha1Urn>,
    extra: Option<String>,
    lie: bool,
    pause: Duration,
) -> TestSource {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (sent2, requests2, heads2) = (sent.clone(), requests.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (data, sent, requests, heads, extra) = (
                data.clone(),
                sent2.clone(),
                requests2.clone(),
                heads2.clone(),
                extra.clone(),
            );
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 16 * 1024 {
                            return;
                        }
                    };
                    let req = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    requests.fetch_add(1, Ordering::Relaxed);
                    heads.lock().unwrap().push(req.clone());
                    let size = data.len() as u64;
                    let (a, b) = req
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("range: bytes=")
                                .map(str::to_string)
                        })
                        .and_then(|r| {
                            let (a, b) = r.split_once('-')?;
                            Some((a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)))
                        })
                        .unwrap_or((0, size - 1));
                    let mut head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{size}\r\n",
                        b - a + 1
                    );
                    if let Some(u) = urn {
                        head.push_str(&format!("X-Gnutella-Content-URN: {u}\r\n"));
                    }
                    if let Some(x) = &extra {
                        head.push_str(&format!("{x}\r\n"));
                    }
                    head.push_str("\r\n");
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    if req.starts_with("HEAD") {
                        continue;
                    }
                    let mut body = data[a as usize..=b as usize].to_vec();
                    if lie {
                        body.iter_mut().for_each(|x| *x ^= 0xFF);
                    }
                    for piece in body.chunks(16 * 1024) {
                        if !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        if s.write_all(piece).await.is_err() {
                            return;
                        }
                        sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    TestSource {
        addr,
        sent,
        requests,
        heads,
    }
}

fn n2r(addr: SocketAddr, urn: Sha1Urn) -> String {
    format!("http://{addr}/uri-res/N2R?{urn}")
}

#[tokio::test]
async fn a_killed_download_resumes_to_identical_bytes() {
    let dir = Dir::new("resume");
    let out = dir.sub("out");
    let data = Arc::new(pattern(3 << 20, 3));
    let urn = Sha1Urn::digest(&data);
    // About 1.6 MB/s: the first run is killed long before it could finish.
    let slow = test_source(data.clone(), Some(urn), false, Duration::from_millis(10)).await;
    let url = n2r(slow.addr, urn);
    let out2 = out.clone();
    // Killed once the state file records some blocks.
    let mid = tokio::task::spawn_blocking(move || {
        common::get_killed_when(&url, &out2, |s| {
            !s.is_empty() && !s.trim_end().ends_with("have")
        })
    })
    .await
    .unwrap();
    assert!(mid, "killed mid-download");
    assert!(
        !out.join("file.bin").exists(),
        "nothing pretends to be the file"
    );
    assert!(out.join("file.bin.part").exists());
    let first_run = slow.sent.load(Ordering::Relaxed);
    assert!(first_run < data.len() as u64);

    // The second run, from a fast source, fetches only what is missing.
    let fast = test_source(data.clone(), Some(urn), false, Duration::ZERO).await;
    let url = n2r(fast.addr, urn);
    let status = servent_output(&["get", "-o", "file.bin", &url], &out).await;
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(std::fs::read(out.join("file.bin")).unwrap(), *data);
    let second_run = fast.sent.load(Ordering::Relaxed);
    assert!(
        second_run < data.len() as u64,
        "resumed: {second_run} bytes fetched again"
    );
    assert!(!out.join("file.bin.part").exists() && !out.join("file.bin.part.state").exists());
}

#[tokio::test]
async fn a_swarm_of_three_drops_the_liar_and_delivers_the_right_bytes() {
    let dir = Dir::new("swarm");
    let out = dir.sub("out");
    let data = pattern(2 << 20, 4);
    let urn = Sha1Urn::digest(&data);
    let mut honest = Vec::new();
    for i in 0..2 {
        let share = dir.sub(&format!("share{i}"));
        std::fs::write(share.join("swarm.bin"), &data).unwrap();
        honest.push(node_sharing(&share, vec![], |_| {}).await);
    }
    for n in &honest {
        hashed(n.local_addr, "swarm.bin").await;
    }
    // The liar claims the right URN and sends wrong bytes.
    let liar = test_source(Arc::new(data.clone()), Some(urn), true, Duration::ZERO).await;
    let sources = [liar.addr, honest[0].local_addr, honest[1].local_addr]
        .iter()
        .map(|a| SourceSpec::Url(HttpUrl::parse(&n2r(*a, urn)).unwrap()))
        .collect();
    let wanted = Wanted {
        urn: Some(urn),
        fth: None,
        size: Some(data.len() as u64),
        name: Some("swarm.bin".into()),
        sources,
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        dl::download(
            wanted,
            None,
            &out,
            None,
            GetConfig::default(),
            CancellationToken::new(),
            |_| {},
        ),
    )
    .await
    .expect("in time")
    .expect("downloaded");
    assert_eq!(std::fs::read(&outcome.path).unwrap(), data);
    assert!(
        liar.requests.load(Ordering::Relaxed) > 0,
        "the liar was used"
    );
    // Every honest source supplied a share.
    assert!(
        outcome.sources[1].1 > 0 && outcome.sources[2].1 > 0,
        "{:?}",
        outcome.sources
    );
    for n in honest {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_hash_that_never_matches_fails_and_keeps_nothing() {
    let dir = Dir::new("mismatch");
    let out = dir.sub("out");
    let data = Arc::new(pattern(300_000, 5));
    let claimed = Sha1Urn::digest(b"some other file");
    // Serves other bytes than the URN names, and does not say its own URN.
    let src = test_source(data, None, false, Duration::ZERO).await;
    let magnet = format!(
        "magnet:?xt={claimed}&dn=wanted.bin&xs={}",
        n2r(src.addr, claimed)
            .replace(':', "%3A")
            .replace('/', "%2F")
            .replace('?', "%3F")
    );
    let o = servent_output(&["get", &magnet], &out).await;
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SHA-1 does not match") && err.contains("nothing was kept"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_slow_source_loses_its_range_to_a_fast_one() {
    let dir = Dir::new("slow");
    let out = dir.sub("out");
    let data = Arc::new(pattern(1 << 20, 6));
    let urn = Sha1Urn::digest(&data);
    // 16 KiB per 200 ms: alone it would need over 12 seconds.
    let slow = test_source(data.clone(), Some(urn), false, Duration::from_millis(200)).await;
    let fast = test_source(data.clone(), Some(urn), false, Duration::ZERO).await;
    let wanted = Wanted {
        urn: Some(urn),
        fth: None,
        size: Some(data.len() as u64),
        name: None,
        sources: [slow.addr, fast.addr]
            .iter()
            .map(|a| SourceSpec::Url(HttpUrl::parse(&n2r(*a, urn)).unwrap()))
            .collect(),
    };
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        WAIT,
        dl::download(
            wanted,
            Some(out.join("f")),
            &out,
            None,
            GetConfig::default(),
            CancellationToken::new(),
            |_| {},
        ),
    )
    .await
    .expect("in time")
    .expect("downloaded");
    assert_eq!(std::fs::read(&outcome.path).unwrap(), *data);
    let (slow_bytes, fast_bytes) = (outcome.sources[0].1, outcome.sources[1].1);
    assert!(fast_bytes > 3 * slow_bytes, "{:?}", outcome.sources);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_push_download_from_a_firewalled_node() {
    let dir = Dir::new("push");
    let hub_share = dir.sub("hub");
    let fw_share = dir.sub("fw");
    let out = dir.sub("out");
    let data = pattern(700_000, 7);
    std::fs::write(fw_share.join("behind firewall.dat"), &data).unwrap();
    let mut hub = node_sharing(&hub_share, vec![], |_| {}).await;
    let fw = node_sharing(&fw_share, vec![hub.local_addr.to_string()], |c| {
        c.firewalled = true
    })
    .await;
    assert!(hub.wait_for(WAIT, |s| s.connections == 1).await, "linked");
    // Nothing reaches the firewalled node directly.
    assert!(TcpStream::connect(fw.local_addr).await.is_err());
    // Its hit says push, once the file is hashed.
    let deadline = Instant::now() + WAIT;
    loop {
        let mut hits = Vec::new();
        search::search(
            &hub.local_addr.to_string(),
            "firewall",
            2,
            Duration::from_millis(500),
            1,
            |h| hits.push(h),
        )
        .await
        .unwrap();
        if let Some(h) = hits.first().filter(|h| h.urn.is_some()) {
            assert!(h.push, "push flag set");
            break;
        }
        assert!(Instant::now() < deadline, "hit in time");
    }
    let hub_addr = hub.local_addr.to_string();
    let o = servent_output(
        &["get", "--json", "--peer", &hub_addr, "behind", "firewall"],
        &out,
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last = common::download_record(stdout.lines().last().unwrap());
    assert_eq!(last.state, servent::output::DownloadState::Done, "{stdout}");
    assert_eq!(
        std::fs::read(out.join("behind firewall.dat")).unwrap(),
        data
    );
    fw.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn ranges_past_4_gib_in_a_sparse_file() {
    let dir = Dir::new("huge");
    let share = dir.sub("share");
    let size: u64 = (4 << 30) + 4096 + 123;
    let path = share.join("huge.img");
    {
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(size).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::FileExt::write_all_at(&f, b"the end of a big file", size - 21).unwrap();
    }
    let n = node_sharing(&share, vec![], |_| {}).await;
    // Served by index before (and while) it is hashed.
    let target = "/get/1/huge.img";
    let a = get(n.local_addr, target, "HEAD").await;
    assert_eq!(a.header("content-length"), Some(size.to_string().as_str()));
    let a = get(n.local_addr, target, "Range: bytes=-21\r\n").await;
    assert_eq!(a.status, 206);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes {}-{}/{size}", size - 21, size - 1).as_str())
    );
    assert_eq!(a.body, b"the end of a big file");
    let a = get(
        n.local_addr,
        target,
        &format!("Range: bytes={}-{}\r\n", 1u64 << 32, (1u64 << 32) + 9),
    )
    .await;
    assert_eq!((a.status, a.body), (206, vec![0u8; 10]));
    let a = get(n.local_addr, target, &format!("Range: bytes={size}-\r\n")).await;
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    // Its hit carries the 64-bit size (GGEP LF).
    let mut sizes = Vec::new();
    search::search(
        &n.local_addr.to_string(),
        "huge",
        2,
        Duration::from_secs(2),
        1,
        |h| sizes.push(h.size),
    )
    .await
    .unwrap();
    assert_eq!(sizes, [size]);
    n.shutdown().await;
}

/// A download of `name` known by its FTH alone (no SHA-1), from hits at `sources`.
fn by_fth(fth: Fth, size: usize, name: &str, sources: &[&TestSource]) -> Wanted {
    Wanted {
        urn: None,
        fth: Some(fth),
        size: Some(size as u64),
        name: Some(name.into()),
        sources: sources
            .iter()
            .enumerate()
            .map(|(i, s)| SourceSpec::Hit {
                addr: s.addr,
                index: 1,
                name: name.into(),
                servent: servent::wire::Guid([i as u8 + 1; 16]),
                push: false,
            })
            .collect(),
    }
}

async fn fetch(wanted: Wanted, out: &Path) -> Result<dl::Outcome, dl::GetError> {
    tokio::time::timeout(
        Duration::from_secs(60),
        dl::download(
            wanted,
            None,
            out,
            None,
            GetConfig::default(),
            CancellationToken::new(),
            |_| {},
        ),
    )
    .await
    .expect("in time")
}

#[tokio::test]
async fn a_file_known_by_its_fth_alone_is_fetched_by_index_and_checked_by_it() {
    let dir = Dir::new("fthget");
    let out = dir.sub("out");
    // Over 1 MiB, so the FTH's sampled blocks are in play.
    let data = Arc::new(pattern(2_500_000, 21));
    let fth = fasttrack_hash::fth(&data);
    // Like a FastTrack bridge: no URN header at all.
    let src = test_source(data.clone(), None, false, Duration::ZERO).await;
    let o = fetch(by_fth(fth, data.len(), "ft song.mp3", &[&src]), &out)
        .await
        .expect("downloaded");
    assert_eq!(std::fs::read(&o.path).unwrap(), *data);
    assert_eq!(o.path, out.join("ft song.mp3"));
    assert_eq!((o.urn, o.fth), (None, Some(fth)));
    let heads = src.heads();
    assert!(!heads.is_empty());
    for h in &heads {
        assert!(
            h.starts_with("GET /get/1/ft%20song.mp3 HTTP/1.1\r\n"),
            "{h}"
        );
        // No URN to name, and no alternate sources to trade without one.
        assert!(
            !h.to_ascii_lowercase().contains("x-gnutella-content-urn"),
            "{h}"
        );
        assert!(!h.to_ascii_lowercase().contains("x-alt"), "{h}");
    }
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(left.len(), 1, "no .part or state left: {left:?}");
}

/// A URL alone (as a user copies it from a hit) names no hash; a source that
/// names the file's FTH in `X-KazaaTag: 3==...` (as the node does for a
/// FastTrack user's file it serves by proxy) is checked by it, and a lie is a
/// mismatch.
#[tokio::test]
async fn a_url_is_checked_by_the_fth_its_source_names_in_a_kazaa_tag() {
    let dir = Dir::new("fthtag");
    let data = Arc::new(pattern(1_300_000, 24));
    let fth = fasttrack_hash::fth(&data);
    let mut wrong = fth;
    wrong.0[5] ^= 0x40;
    for (tag, ok) in [(fth, true), (wrong, false)] {
        let out = dir.sub(if ok { "good" } else { "bad" });
        let src = test_source_with(
            data.clone(),
            None,
            Some(format!("X-KazaaTag: 3={}", tag.kazaa_base64())),
            false,
            Duration::ZERO,
        )
        .await;
        let url = format!("http://{}/get/7/tagged.bin", src.addr);
        let wanted = Wanted {
            sources: vec![SourceSpec::Url(HttpUrl::parse(&url).unwrap())],
            ..Wanted::default()
        };
        let r = fetch(wanted, &out).await;
        if ok {
            let o = r.expect("downloaded");
            assert_eq!(std::fs::read(&o.path).unwrap(), *data);
            assert_eq!((o.urn, o.fth), (None, Some(fth)));
        } else {
            let Err(dl::GetError::HashMismatch(why)) = r else {
                panic!("not a mismatch: {r:?}");
            };
            assert!(why.contains(&wrong.hex()), "{why}");
            let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
    // With no tag and no URN there is still nothing to check by.
    let out = dir.sub("none");
    let src = test_source(data.clone(), None, false, Duration::ZERO).await;
    let url = format!("http://{}/get/7/tagged.bin", src.addr);
    let wanted = Wanted {
        sources: vec![SourceSpec::Url(HttpUrl::parse(&url).unwrap())],
        ..Wanted::default()
    };
    assert!(matches!(
        fetch(wanted, &out).await,
        Err(dl::GetError::NoUrn)
    ));
}

#[tokio::test]
async fn a_wrong_fth_fails_as_a_hash_mismatch_and_keeps_nothing() {
    let dir = Dir::new("fthbad");
    let out = dir.sub("out");
    let data = Arc::new(pattern(1_500_000, 22));
    let mut fth = fasttrack_hash::fth(&data);
    fth.0[0] ^= 1;
    // The source even names the bytes' true SHA-1: the FTH decides.
    let src = test_source(
        data.clone(),
        Some(Sha1Urn::digest(&data)),
        false,
        Duration::ZERO,
    )
    .await;
    let r = fetch(by_fth(fth, data.len(), "bad.bin", &[&src]), &out).await;
    let Err(dl::GetError::HashMismatch(why)) = r else {
        panic!("not a mismatch: {r:?}");
    };
    assert!(why.contains("FTH") && why.contains(&fth.hex()), "{why}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_sha1_a_source_names_does_not_override_the_fth() {
    let dir = Dir::new("fthsha");
    let out = dir.sub("out");
    let data = Arc::new(pattern(700_000, 23));
    let fth = fasttrack_hash::fth(&data);
    // A source naming a SHA-1 that is not the file's: only its word, the bytes
    // are checked by the FTH the hit gave, and they are right.
    let other = Sha1Urn::digest(b"another file");
    let src = test_source(data.clone(), Some(other), false, Duration::ZERO).await;
    let o = fetch(by_fth(fth, data.len(), "named.bin", &[&src]), &out)
        .await
        .expect("downloaded");
    assert_eq!(std::fs::read(&o.path).unwrap(), *data);
    assert_eq!((o.urn, o.fth), (None, Some(fth)));
}

#[tokio::test]
async fn a_lying_source_is_found_by_block_checks_when_checking_by_fth() {
    let dir = Dir::new("fthswarm");
    let out = dir.sub("out");
    let data = Arc::new(pattern(2 << 20, 24));
    let fth = fasttrack_hash::fth(&data);
    let liar = test_source(data.clone(), None, true, Duration::ZERO).await;
    let a = test_source(data.clone(), None, false, Duration::ZERO).await;
    let b = test_source(data.clone(), None, false, Duration::ZERO).await;
    let o = fetch(by_fth(fth, data.len(), "swarm.bin", &[&liar, &a, &b]), &out)
        .await
        .expect("downloaded");
    assert_eq!(std::fs::read(&o.path).unwrap(), *data);
    assert!(
        liar.requests.load(Ordering::Relaxed) > 0,
        "the liar was used"
    );
}

#[tokio::test]
async fn an_fth_download_resumes_and_its_state_names_the_fth() {
    let dir = Dir::new("fthresume");
    let out = dir.sub("out");
    let data = Arc::new(pattern(3 << 20, 25));
    let fth = fasttrack_hash::fth(&data);
    let slow = test_source(data.clone(), None, false, Duration::from_millis(10)).await;
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        dl::download(
            by_fth(fth, data.len(), "r.bin", &[&slow]),
            None,
            &out,
            None,
            GetConfig::default(),
            cancel,
            move |p| {
                if p.done > 0 {
                    stop.cancel();
                }
            },
        ),
    )
    .await
    .expect("in time");
    assert!(matches!(r, Err(dl::GetError::Interrupted(_))), "{r:?}");
    let state = std::fs::read_to_string(out.join("r.bin.part.state")).unwrap();
    assert!(
        state.contains(&format!("\nurn urn:fth:{}\n", fth.hex())),
        "{state}"
    );
    let first_run = slow.sent.load(Ordering::Relaxed);
    assert!(first_run < data.len() as u64);

    // Another FTH under the same name is another file: the .part is left alone.
    let mut other = fth;
    other.0[19] ^= 1;
    let fast = test_source(data.clone(), None, false, Duration::ZERO).await;
    let r = fetch(by_fth(other, data.len(), "r.bin", &[&fast]), &out).await;
    assert!(
        matches!(&r, Err(dl::GetError::Part(m)) if m.contains("another download")),
        "{r:?}"
    );
    assert!(out.join("r.bin.part").exists());

    // The same FTH resumes: only what is missing is fetched.
    let o = fetch(by_fth(fth, data.len(), "r.bin", &[&fast]), &out)
        .await
        .expect("resumed");
    assert_eq!(std::fs::read(&o.path).unwrap(), *data);
    let second_run = fast.sent.load(Ordering::Relaxed);
    assert!(
        second_run < data.len() as u64,
        "resumed: {second_run} bytes fetched again"
    );
    assert!(!out.join("r.bin.part").exists() && !out.join("r.bin.part.state").exists());
}

#[tokio::test]
async fn get_peer_fetches_an_fth_only_hit_by_its_fth_and_a_hit_with_a_sha1_by_that() {
    use common::raw::accept_raw;
    use servent::wire::{Function, HitResult, Message, OpenDataFlags, QueryHit, Trailer};
    let dir = Dir::new("fthcli");
    let out = dir.sub("out");
    let ft_data = Arc::new(pattern(1_200_000, 26));
    let gn_data = Arc::new(pattern(600_000, 27));
    let (ft_fth, gn_fth) = (fasttrack_hash::fth(&ft_data), fasttrack_hash::fth(&gn_data));
    let gn_urn = Sha1Urn::digest(&gn_data);
    // The bridged FastTrack user's file: no URN anywhere. The Gnutella file:
    // SHA-1 and FTH both, as a sharing node answers.
    let ft = test_source(ft_data.clone(), None, false, Duration::ZERO).await;
    let gn = test_source(gn_data.clone(), Some(gn_urn), false, Duration::ZERO).await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let hits = [
        (
            ft.addr,
            "bridged tune.mp3",
            ft_data.len(),
            None,
            ft_fth,
            1u8,
        ),
        (
            gn.addr,
            "gnutella tune.mp3",
            gn_data.len(),
            Some(gn_urn),
            gn_fth,
            2,
        ),
    ];
    let server = tokio::spawn(async move {
        let (_, raw) = accept_raw(
            &l,
            "200 OK",
            "User-Agent: test/1\r\nX-Ultrapeer: True\r\nX-Query-Routing: 0.1\r\nX-Ultrapeer-Query-Routing: 0.1\r\n",
        )
        .await;
        let mut c = raw.unwrap();
        let q = c.until(|f| f.header.function == Function::Query).await;
        for (addr, name, size, urn, fth, g) in hits {
            let SocketAddr::V4(a) = addr else {
                unreachable!()
            };
            let hit = Message::QueryHit(QueryHit {
                port: a.port(),
                ip: *a.ip(),
                speed: 0,
                results: vec![
                    HitResult::new(1, size as u64, name, urn.as_ref()).with_fth(Some(fth)),
                ],
                trailer: servent::wire::TrailerArea::Qhd(Trailer::new(
                    *b"TEST",
                    OpenDataFlags::default(),
                    None,
                )),
                servent: servent::wire::Guid([g; 16]),
            });
            c.send_msg(q.header.guid, 3, 0, &hit).await;
        }
        c.frames_for(Duration::from_secs(10)).await;
    });
    let o = servent_output(
        &["get", "--json", "--all", "--peer", &up.to_string(), "tune"],
        &out,
    )
    .await;
    server.abort();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("bridged tune.mp3")).unwrap(),
        *ft_data
    );
    assert_eq!(
        std::fs::read(out.join("gnutella tune.mp3")).unwrap(),
        *gn_data
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let done: Vec<_> = stdout
        .lines()
        .map(common::download_record)
        .filter(|d| d.state == servent::output::DownloadState::Done)
        .collect();
    assert_eq!(done.len(), 2, "{stdout}");
    let rec = |n: &str| done.iter().find(|d| d.name.as_deref() == Some(n)).unwrap();
    let b = rec("bridged tune.mp3");
    assert_eq!(
        (b.urn.as_deref(), b.fth.clone()),
        (None, Some(ft_fth.hex()))
    );
    let g = rec("gnutella tune.mp3");
    assert_eq!(
        (g.urn.clone(), g.fth.as_deref()),
        (Some(gn_urn.to_string()), None)
    );
    // Each asked for as its hash allows: by index without a SHA-1, by SHA-1 with one.
    assert!(
        ft.heads()
            .iter()
            .all(|h| h.starts_with("GET /get/1/bridged%20tune.mp3 ")),
        "{:?}",
        ft.heads()
    );
    assert!(
        gn.heads()
            .iter()
            .all(|h| h.contains(&format!("/uri-res/N2R?{gn_urn} "))),
        "{:?}",
        gn.heads()
    );
}
