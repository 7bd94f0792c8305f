//! Browse host between nodes on loopback: the answer plain and deflated, the
//! page at `/` left alone for other requests, the per-address limit, and
//! `servent browse` with its errors. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use servent::node::{self, NodeConfig, NodeHandle};
use servent::wire::browse::{Limits, Reader};
use tokio_util::sync::CancellationToken;

mod common;
use common::{Dir, servent_cmd};

const WAIT: Duration = Duration::from_secs(10);

async fn sharing(dir: &Dir, files: usize) -> NodeHandle {
    let share = dir.sub("share");
    for i in 0..files {
        std::fs::write(
            share.join(format!("browsed file {i:03}.ogg")),
            vec![b'x'; i + 1],
        )
        .unwrap();
    }
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        target_peers: 0,
        ..NodeConfig::default()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// Sends `request` and reads the whole answer (the server closes or the
/// body's length is reached): head, and body bytes.
fn raw(addr: SocketAddr, request: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a Content-Length");
            if buf.len() >= end + 4 + len {
                return (head, buf[end + 4..end + 4 + len].to_vec());
            }
        }
    }
    panic!("the answer ended early: {}", String::from_utf8_lossy(&buf));
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn names_in(body: &[u8], deflated: bool) -> Vec<String> {
    let mut r = Reader::new(deflated, Limits::default());
    let hits = r.feed(body).expect("a good body");
    r.finish().expect("whole");
    hits.iter()
        .flat_map(|h| h.results.iter().map(|r| r.name_lossy()))
        .collect()
}

fn all_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("browsed file {i:03}.ogg")).collect()
}

async fn stop(n: NodeHandle) {
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown ends every task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_browsed_plain_and_deflated_then_limited() {
    let dir = Dir::new("browse-both");
    let n = sharing(&dir, 25).await;
    let addr = n.local_addr;
    // Our own client: every file, our address and GUID.
    let mut got = Vec::new();
    let done = node::browse::browse(&addr.to_string(), WAIT, Limits::default(), |h| got.push(h))
        .await
        .expect("browsed");
    assert_eq!(done.results, 25);
    assert!(!done.cut);
    let mut names: Vec<String> = got.iter().map(|h| h.name.clone()).collect();
    names.sort();
    assert_eq!(names, all_names(25));
    for h in &got {
        assert_eq!(
            (h.host, h.port),
            (std::net::Ipv4Addr::LOCALHOST, addr.port())
        );
        assert_eq!(h.servent_guid, n.guid);
        assert!(!h.push);
    }

    let (head, body) = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nAccept: application/x-gnutella-packets\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        header(&head, "Content-Type"),
        Some("application/x-gnutella-packets")
    );
    assert_eq!(header(&head, "Content-Encoding"), None);
    assert_eq!(header(&head, "X-Features"), Some("browse/1.0"));
    let mut plain = names_in(&body, false);
    plain.sort();
    assert_eq!(plain, all_names(25));

    // gtk-gnutella's request form: both media types, deflate accepted.
    let (head, body) = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: gtk-gnutella/1.2.3\r\nAccept: application/x-gnutella-packets, application/x-gnutella2\r\nAccept-Encoding: deflate\r\nX-Features: browse/1.0\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header(&head, "Content-Encoding"), Some("deflate"));
    let mut deflated = names_in(&body, true);
    deflated.sort();
    assert_eq!(deflated, all_names(25));

    // A fourth browse from the same address within minutes is refused.
    let (head, _) = tokio::task::spawn_blocking(move || {
        raw(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nAccept: application/x-gnutella-packets\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    let err = node::browse::browse(&addr.to_string(), WAIT, Limits::default(), |_| {})
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("429 Cannot Browse Too Often"),
        "{err}"
    );
    assert_eq!(n.control().browse_counts(), (3, 2, 0));
    stop(n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_at_the_root_are_answered_as_before() {
    let dir = Dir::new("browse-root");
    let n = sharing(&dir, 2).await;
    let addr = n.local_addr;
    for req in [
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html, */*\r\nConnection: close\r\n\r\n",
    ] {
        let (head, _) = tokio::task::spawn_blocking(move || raw(addr, req))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    }
    assert_eq!(n.control().browse_counts(), (0, 0, 0));
    stop(n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_stops_at_its_limits() {
    let dir = Dir::new("browse-limits");
    let n = sharing(&dir, 40).await;
    let mut got = 0;
    let done = node::browse::browse(
        &n.local_addr.to_string(),
        WAIT,
        Limits {
            max_bytes: usize::MAX,
            max_results: 15,
        },
        |_| got += 1,
    )
    .await
    .expect("browsed");
    assert_eq!((done.results, got), (15, 15));
    assert!(done.cut);
    stop(n).await;
}

/// A server that answers every connection with `answer` and closes.
fn fake_server(answer: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        }
    });
    addr
}

#[test]
fn servent_browse_prints_hits_and_says_what_went_wrong() {
    let dir = Dir::new("browse-cli");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(sharing(&dir, 3));
    let addr = n.local_addr.to_string();
    let out = servent_cmd(&["browse", "--json", "-q", &addr], &dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["type"], "hit");
            assert_eq!(v["port"], n.local_addr.port());
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    assert_eq!(names, all_names(3));

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = servent_cmd(&["browse", &closed.to_string()], &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // A web server, not a servent.
    let web = fake_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\r\nhello",
    );
    let out = servent_cmd(&["browse", &web.to_string()], &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did not answer with Gnutella packets"),
        "{err}"
    );
    // A servent that does not allow browsing (gtk-gnutella's default).
    let off = fake_server(
        b"HTTP/1.1 403 Browse Host Disabled\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let out = servent_cmd(&["browse", &off.to_string()], &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused the browse: 403 Browse Host Disabled"),
        "{err}"
    );
    // A stream cut inside a descriptor.
    let cut = fake_server(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-gnutella-packets\r\nConnection: close\r\n\r\n\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x81\x01\x00\x40\x00\x00\x00abc",
    );
    let out = servent_cmd(&["browse", &cut.to_string()], &dir.0)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ends inside a descriptor"), "{err}");
    rt.block_on(stop(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_nodes_exchange_their_horizon() {
    let dir_a = Dir::new("hsep-a");
    let dir_b = Dir::new("hsep-b");
    let a = sharing(&dir_a, 3).await;
    let share = dir_b.sub("share");
    for i in 0..2 {
        std::fs::write(share.join(format!("b{i}.txt")), vec![0u8; 2048]).unwrap();
    }
    let b = node::start(
        NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shares: vec![share],
            peers: vec![a.local_addr.to_string()],
            target_peers: 0,
            ..NodeConfig::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // Each hears of the other within a tick or two of linking: one host, its
    // files and KiB within one hop, and nothing farther.
    let mut a = a;
    let mut b = b;
    assert!(
        a.wait_for(WAIT, |s| s.horizon[0].hosts == 1 && s.horizon[0].files == 2)
            .await,
        "a hears of b"
    );
    assert!(
        b.wait_for(WAIT, |s| s.horizon[0].hosts == 1 && s.horizon[0].files == 3)
            .await,
        "b hears of a"
    );
    let s = a.control().status();
    assert_eq!((s.horizon.hosts, s.horizon.files, s.horizon.kib), (1, 2, 4));
    let metrics = servent::api::metrics::node(&a.control());
    assert!(
        metrics.contains("servent_hsep_horizon{hops=\"1\",kind=\"files\"} 2"),
        "{metrics}"
    );
    stop(a).await;
    stop(b).await;
}
