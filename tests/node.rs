//! Nodes on loopback, in one process: searching through a chain, hostile peers,
//! and shutdown. Every wait is bounded.

use std::time::Duration;

use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig, search};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

mod common;
use common::Dir;

/// The code of the Bye in a descriptor stream a node sent, if there is one.
fn bye_code(stream: &[u8]) -> Option<u16> {
    use tokio_util::codec::Decoder;
    let mut buf = bytes::BytesMut::from(stream);
    let mut codec = servent::framing::DescriptorCodec::default();
    while let Ok(Some(f)) = codec.decode(&mut buf) {
        if let Ok(servent::wire::Message::Bye(b)) = f.message() {
            return Some(b.code);
        }
    }
    None
}

/// Starts a node sharing one file named `file`, dialing `peers`.
async fn node_with(dir: &Dir, file: &str, peers: Vec<String>) -> NodeHandle {
    let share = dir.0.join(file.replace('.', "_"));
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join(file), file.as_bytes()).unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        peers,
        handshake_timeout: Duration::from_secs(2),
        target_peers: 0,
        ..flat()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// Nodes that flood each other as one flat mesh: ultrapeers without
/// inter-ultrapeer tables or dynamic querying.
fn flat() -> NodeConfig {
    NodeConfig {
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            ultrapeer_qrp: false,
            ..TierConfig::default()
        },
        // Every query flooded with the TTL it came with.
        dq: node::DqConfig {
            max_searches: 0,
            ..node::DqConfig::default()
        },
        ..NodeConfig::default()
    }
}

async fn find(peer: &NodeHandle, words: &str, ttl: u8) -> Vec<String> {
    let mut names = Vec::new();
    search::search(
        &peer.local_addr.to_string(),
        words,
        ttl,
        Duration::from_millis(1500),
        100,
        |h| names.push(h.name),
    )
    .await
    .unwrap();
    names.sort();
    names
}

#[tokio::test]
async fn a_chain_answers_as_far_as_the_ttl_reaches() {
    let dir = Dir::new("chain");
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..5 {
        let peers = nodes
            .last()
            .map(|n: &NodeHandle| vec![n.local_addr.to_string()])
            .unwrap_or_default();
        nodes.push(node_with(&dir, &format!("chainfile{i}.txt"), peers).await);
    }
    // Each inner node holds two connections, the ends one.
    for (i, n) in nodes.iter_mut().enumerate() {
        let want = if i == 0 || i == 4 { 1 } else { 2 };
        assert!(
            n.wait_for(WAIT, |s| s.connections == want).await,
            "node {i} linked"
        );
    }
    // The searching client is one hop from node 0: TTL t reaches nodes 0..t-1.
    // Every file's name holds "txt".
    for ttl in 1..=5u8 {
        let want: Vec<String> = (0..ttl as usize)
            .map(|i| format!("chainfile{i}.txt"))
            .collect();
        assert_eq!(find(&nodes[0], "txt", ttl).await, want, "ttl {ttl}");
    }
    // Every keyword must match: no file holds both of these.
    assert!(find(&nodes[0], "chainfile0 chainfile1", 5).await.is_empty());
    for n in nodes {
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("shutdown ends every task");
    }
}

#[tokio::test]
async fn hostile_peers_do_not_disturb_service() {
    let dir = Dir::new("hostile");
    let mut n = node_with(&dir, "precious.txt", vec![]).await;
    let addr = n.local_addr;

    // Garbage instead of a handshake: the connection is closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"HELLO THERE\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "closed");

    // A handshake that never ends: dropped after the handshake timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GNUTELLA CONNECT/0.6\r\nUser-Agent: slow\r\n")
        .await
        .unwrap();
    let r = tokio::time::timeout(WAIT, slow.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "dropped");

    // An oversized payload: answered with Bye 400 and closed.
    let mut big = TcpStream::connect(addr).await.unwrap();
    request(&mut big, "").await;
    big.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").await.unwrap();
    let mut header = vec![0x11u8; 16];
    header.extend([0x80, 7, 0]);
    header.extend(60_000u32.to_le_bytes());
    big.write_all(&header).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, big.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bye_code(&rest), Some(400));

    // HTTP is served on the same port.
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET /get/1/precious.txt HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(WAIT, http.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 200"));
    assert!(reply.ends_with(b"\r\n\r\nprecious.txt"));

    // Through all of it, the node still answers.
    assert!(n.wait_for(WAIT, |s| s.connections == 0).await);
    assert_eq!(find(&n, "precious", 3).await, ["precious.txt"]);
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn full_node_refuses_with_503() {
    let dir = Dir::new("full");
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![dir.0.clone()],
        max_peers: 0,
        target_peers: 0,
        ..flat()
    };
    let n = node::start(config, CancellationToken::new()).await.unwrap();
    let r = search::search(&n.local_addr.to_string(), "x", 3, WAIT, 10, |_| {}).await;
    let err = r.unwrap_err().to_string();
    assert!(err.contains("503"), "{err}");
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

/// Completes a 0.6 handshake as a client on a raw socket.
async fn raw_peer(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (answer, _) = request(&mut s, "").await;
    assert!(answer.starts_with("GNUTELLA/0.6 200"), "{answer}");
    s.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").await.unwrap();
    s
}

/// Sends a 0.6 request with `extra` header lines (each ending in CRLF) and reads
/// the node's answer block. Returns the block and the bytes read past it.
async fn request(s: &mut TcpStream, extra: &str) -> (String, Vec<u8>) {
    let req = format!("GNUTELLA CONNECT/0.6\r\nUser-Agent: test/1\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let answer = String::from_utf8_lossy(&got[..at + 4]).into_owned();
            return (answer, got[at + 4..].to_vec());
        }
        let k = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0, "handshake answered");
        got.extend_from_slice(&buf[..k]);
    }
}

fn frame(guid: [u8; 16], function: u8, ttl: u8, hops: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = guid.to_vec();
    f.extend([function, ttl, hops]);
    f.extend((payload.len() as u32).to_le_bytes());
    f.extend(payload);
    f
}

#[tokio::test]
async fn floods_are_forwarded_once_and_the_flooder_is_dropped() {
    let dir = Dir::new("flood");
    let mut n = node_with(&dir, "center.txt", vec![]).await;
    let mut m = node_with(&dir, "neighbour.txt", vec![n.local_addr.to_string()]).await;
    assert!(n.wait_for(WAIT, |s| s.connections == 1).await);

    let mut h = raw_peer(n.local_addr).await;
    // A hit for a query never seen, then 1000 copies of one query with TTL 255.
    let mut hit = vec![0u8, 0xca, 0x18, 127, 0, 0, 1, 0, 0, 0, 0];
    hit.extend(b"BEAR\x00");
    hit.extend([9u8; 16]);
    let mut burst = frame([8; 16], 0x81, 5, 0, &hit);
    let query = frame([7; 16], 0x80, 255, 0, b"\x80\x00flood\x00\x00");
    for _ in 0..1000 {
        burst.extend_from_slice(&query);
    }
    // The node may close on us before reading everything.
    let _ = h.write_all(&burst).await;

    // The neighbour saw the query once, with the TTL lowered to the maximum.
    assert!(
        m.wait_for(WAIT, |s| s
            .router
            .delivered(servent::core::router::Class::Search)
            == 1)
            .await
    );
    // The flooder was told why and dropped.
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, h.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(bye_code(&rest), Some(401));
    use servent::core::router::{Class, DropReason};
    // ...and still once, now that the flood is over.
    assert_eq!(m.stats().router.delivered(Class::Search), 1);
    let stats = n.stats();
    assert!(stats.router.dropped(Class::Search, DropReason::Repeated) >= 49);
    let hit_class = Class::SearchReply {
        responder: servent::wire::Guid([9; 16]),
    };
    assert_eq!(stats.router.dropped(hit_class, DropReason::NoRoute), 1);
    // Everyone else is still served.
    assert_eq!(find(&n, "neighbour", 3).await, ["neighbour.txt"]);
    for node in [n, m] {
        tokio::time::timeout(WAIT, node.shutdown())
            .await
            .expect("shutdown");
    }
}

/// Reads frames from a raw peer until `done` says so or time runs out.
async fn read_frames(
    framed: &mut tokio_util::codec::FramedRead<
        tokio::net::tcp::OwnedReadHalf,
        servent::framing::DescriptorCodec,
    >,
    mut done: impl FnMut(&servent::wire::Frame) -> bool,
) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Ok(Some(Ok(f))) = tokio::time::timeout_at(deadline, framed.next()).await {
        if done(&f) {
            return;
        }
    }
    panic!("timed out reading frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_of_50_floods_exactly_and_routes_hits_and_pushes_back() {
    use servent::core::router::Class;
    use servent::wire::{Frame, Function, Guid, Hops, Message, Push, Query, QueryFlags, Ttl};

    const N: usize = 50;
    const TTL: u8 = 12;
    let dir = Dir::new("mesh");
    // A seeded random graph: node i dials one or two earlier nodes.
    let mut rng = common::Rng(0x2545_F491_4F6C_DD1D);
    let mut next = move || rng.next();
    let mut edges = Vec::new();
    for i in 1..N {
        let a = (next() % i as u64) as usize;
        edges.push((a, i));
        if i > 2 && next() % 2 == 0 {
            let b = (next() % i as u64) as usize;
            if b != a {
                edges.push((b, i));
            }
        }
    }
    let mut degree = vec![0u64; N];
    for &(a, b) in &edges {
        degree[a] += 1;
        degree[b] += 1;
    }
    // Precondition: every node is close enough for the TTL to reach it with room to
    // forward, whichever path its first copy takes in practice.
    let mut dist = vec![usize::MAX; N];
    dist[0] = 0;
    let mut queue = std::collections::VecDeque::from([0]);
    while let Some(v) = queue.pop_front() {
        for &(a, b) in &edges {
            let w = if a == v {
                b
            } else if b == v {
                a
            } else {
                continue;
            };
            if dist[w] == usize::MAX {
                dist[w] = dist[v] + 1;
                queue.push_back(w);
            }
        }
    }
    assert!(
        dist.iter().all(|&d| d + 2 < TTL as usize),
        "graph too deep: {dist:?}"
    );

    let mut nodes: Vec<NodeHandle> = Vec::new();
    for i in 0..N {
        let peers = edges
            .iter()
            .filter(|(_, b)| *b == i)
            .map(|(a, _)| nodes[*a].local_addr.to_string())
            .collect();
        let share = dir.0.join(format!("n{i}"));
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join(format!("meshfile{i}.txt")), format!("{i}")).unwrap();
        let config = NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            shares: vec![share],
            peers,
            max_ttl: TTL,
            max_peers: 64,
            target_peers: 0,
            ..flat()
        };
        nodes.push(node::start(config, CancellationToken::new()).await.unwrap());
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        let want = degree[i] as usize;
        assert!(
            n.wait_for(WAIT, |s| s.connections == want).await,
            "node {i} linked"
        );
    }

    // A client at node 0 searches; every node answers with its one file.
    let client = raw_peer(nodes[0].local_addr).await;
    let (r, mut w) = client.into_split();
    let mut framed =
        tokio_util::codec::FramedRead::new(r, servent::framing::DescriptorCodec::default());
    let id = Guid::new_random();
    let mut out = bytes::BytesMut::new();
    Message::Query(Query::new(QueryFlags::with_bits(0), "meshfile"))
        .encode_frame(id, Ttl(TTL), Hops(0), &mut out)
        .unwrap();
    w.write_all(&out).await.unwrap();
    let mut found = std::collections::BTreeMap::new();
    read_frames(&mut framed, |f: &Frame| {
        if f.header.function == Function::QueryHit && f.header.guid == id {
            let Ok(Message::QueryHit(h)) = f.message() else {
                panic!("bad hit")
            };
            for r in &h.results {
                found.insert(r.name_lossy(), h.servent);
            }
        }
        found.len() == N
    })
    .await;
    let names: Vec<String> = (0..N).map(|i| format!("meshfile{i}.txt")).collect();
    let mut got: Vec<String> = found.keys().cloned().collect();
    got.sort();
    let mut want = names.clone();
    want.sort();
    assert_eq!(got, want, "every node's file is found");

    // Exactly one send per link, counted from the graph: node 0 sends to all its
    // neighbours, every other node to all but the one it heard first from.
    let expected: u64 = degree[0] + (1..N).map(|v| degree[v] - 1).sum::<u64>();
    let total =
        |nodes: &Vec<NodeHandle>| nodes.iter().map(|n| n.stats().relayed.queries).sum::<u64>();
    // Copies may still be in flight when the last hit arrives: wait (bounded) for
    // the count to reach the figure, then check that it does not go past it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while total(&nodes) < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(total(&nodes), expected, "Query messages sent");
    // Hits went back to the originator only: no node took one as its own.
    let delivered_hits: u64 = nodes
        .iter()
        .map(|n| {
            n.stats().router.delivered(Class::SearchReply {
                responder: Guid::default(),
            })
        })
        .sum();
    assert_eq!(delivered_hits, 0);

    // A Push to the node holding meshfile37 reaches it, and only it.
    let target = found["meshfile37.txt"];
    assert_eq!(target, nodes[37].guid);
    let mut out = bytes::BytesMut::new();
    Message::Push(Push {
        servent: target,
        index: 1,
        ip: std::net::Ipv4Addr::LOCALHOST,
        port: 1,
        ggep: None,
    })
    .encode_frame(Guid::new_random(), Ttl(TTL), Hops(0), &mut out)
    .unwrap();
    w.write_all(&out).await.unwrap();
    let directed = Class::Directed { target };
    assert!(
        nodes[37]
            .wait_for(WAIT, |s| s.router.delivered(directed) == 1)
            .await
    );
    for (i, n) in nodes.iter().enumerate() {
        if i != 37 {
            assert_eq!(n.stats().router.delivered(directed), 0, "node {i}");
        }
    }
    for n in nodes {
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("shutdown ends every task");
    }
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_peer_that_never_reads() {
    let dir = Dir::new("stuck");
    let n = node_with(&dir, "f.txt", vec![]).await;
    // A tiny receive buffer, so the node's writes to this peer block quickly.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut h = sock.connect(n.local_addr).await.unwrap();
    request(&mut h, "").await;
    h.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n").await.unwrap();
    // 200,000 queries, each answered with a hit the peer never reads: far more
    // than the socket buffers hold.
    let mut burst = Vec::with_capacity(200_000 * 30);
    for i in 0..200_000u32 {
        let mut guid = [0u8; 16];
        guid[..4].copy_from_slice(&i.to_le_bytes());
        burst.extend(frame(guid, 0x80, 1, 0, b"\x80\x00f\x00\x00"));
    }
    let writer = tokio::spawn(async move {
        let _ = h.write_all(&burst).await;
        h // keep the socket open, unread
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown ends every task");
    drop(writer.await);
}

#[tokio::test]
async fn a_node_that_loses_its_peer_reconnects_to_a_host_it_learned() {
    let dir = Dir::new("reconnect");
    let a = node_with(&dir, "on_a.txt", vec![]).await;
    let mut b = node_with(&dir, "on_b.txt", vec![a.local_addr.to_string()]).await;
    assert!(b.wait_for(WAIT, |s| s.connections == 1).await);
    // C keeps one connection; it starts with A only.
    let share = dir.0.join("c");
    std::fs::create_dir_all(&share).unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        peers: vec![a.local_addr.to_string()],
        target_peers: 1,
        ..flat()
    };
    let mut c = node::start(config, CancellationToken::new()).await.unwrap();
    assert!(c.wait_for(WAIT, |s| s.connections == 1).await);
    // C's ping on connecting is answered by A with its own pong and B's, from
    // A's pong cache.
    assert!(
        c.wait_for(WAIT, |s| s
            .router
            .delivered(servent::core::router::Class::DiscoveryReply)
            >= 2)
            .await
    );
    assert_eq!(c.stats().opened, 1);
    tokio::time::timeout(WAIT, a.shutdown())
        .await
        .expect("A stops");
    // C notices, and dials B, which it heard of only through A.
    assert!(
        c.wait_for(WAIT, |s| s.opened == 2 && s.connections == 1)
            .await
    );
    assert!(b.wait_for(WAIT, |s| s.connections == 1).await, "B has C");
    assert_eq!(find(&c, "on_b", 3).await, ["on_b.txt"]);
    for n in [b, c] {
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("shutdown");
    }
}

#[tokio::test]
async fn a_peer_that_asks_for_deflate_gets_a_deflated_stream_both_ways() {
    use flate2::{Decompress, FlushDecompress};
    use std::io::Write;

    let dir = Dir::new("deflate");
    let n = node_with(&dir, "squeezed.txt", vec![]).await;
    let mut s = TcpStream::connect(n.local_addr).await.unwrap();
    let (answer, mut compressed_in) = request(&mut s, "Accept-Encoding: deflate\r\n").await;
    let answer = answer.to_lowercase();
    assert!(answer.contains("content-encoding: deflate"), "{answer}");
    let mut buf = [0u8; 4096];
    s.write_all(b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n")
        .await
        .unwrap();
    // Our query, deflated.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&frame([5; 16], 0x80, 3, 0, b"\x80\x00squeezed\x00\x00"))
        .unwrap();
    z.flush().unwrap();
    s.write_all(z.get_ref()).await.unwrap();
    // The node's answers, inflated: a ping (greeting) and a hit.
    let mut inflater = Decompress::new(true);
    let mut plain = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !plain.windows(12).any(|w| w == b"squeezed.txt") {
        if compressed_in.is_empty() {
            let k = tokio::time::timeout_at(deadline, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(k > 0, "stream open");
            compressed_in.extend_from_slice(&buf[..k]);
        }
        let mut out = vec![0u8; 64 * 1024];
        let before = (inflater.total_in(), inflater.total_out());
        inflater
            .decompress(&compressed_in, &mut out, FlushDecompress::None)
            .unwrap();
        let used = (inflater.total_in() - before.0) as usize;
        let made = (inflater.total_out() - before.1) as usize;
        compressed_in.drain(..used);
        plain.extend_from_slice(&out[..made]);
    }
    let hit = servent::wire::Message::parse(
        servent::wire::Function::QueryHit,
        &bytes::Bytes::from(
            plain[plain.windows(16).position(|w| w == [5; 16]).unwrap() + 23..].to_vec(),
        ),
    );
    assert!(
        matches!(hit, Ok(servent::wire::Message::QueryHit(_))),
        "{hit:?}"
    );
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn files_added_changed_or_removed_while_running_are_noticed() {
    use servent::wire::huge::Sha1Urn;
    let dir = Dir::new("rescan");
    let share = dir.0.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("first.txt"), b"one").unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share.clone()],
        target_peers: 0,
        rescan_every: Duration::from_millis(200),
        ..flat()
    };
    let n = node::start(config, CancellationToken::new()).await.unwrap();
    let urns = |words: &'static str| {
        let addr = n.local_addr.to_string();
        async move {
            let mut found = Vec::new();
            search::search(&addr, words, 2, Duration::from_millis(700), 10, |h| {
                found.push((h.name, h.urn))
            })
            .await
            .unwrap();
            found
        }
    };
    assert_eq!(urns("first").await.len(), 1);
    // Added.
    std::fs::write(share.join("second.txt"), b"two").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while tokio::time::Instant::now() < deadline {
        got = urns("second").await;
        if got.first().is_some_and(|(_, u)| u.is_some()) {
            break;
        }
    }
    assert_eq!(
        got,
        [("second.txt".to_string(), Some(Sha1Urn::digest(b"two")))]
    );
    // Changed: the new content's hash replaces the old one, never both.
    std::fs::write(share.join("second.txt"), b"two, longer").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        got = urns("second").await;
        if got
            .first()
            .is_some_and(|(_, u)| *u == Some(Sha1Urn::digest(b"two, longer")))
        {
            break;
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Some(Sha1Urn::digest(b"two, longer")));
    // Removed.
    std::fs::remove_file(share.join("first.txt")).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline && !urns("first").await.is_empty() {}
    assert!(urns("first").await.is_empty());
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

/// Whether the hash cache file holds a line for each content of `want`
/// (by its SHA-1), none for `gone`, and nothing else.
fn cache_says(cache: &std::path::Path, want: &[&[u8]], gone: &[&[u8]]) -> bool {
    use servent::wire::huge::Sha1Urn;
    let text = std::fs::read_to_string(cache).unwrap_or_default();
    let has = |b: &&[u8]| text.contains(&format!("{},", Sha1Urn::digest(b).base32()));
    want.iter().all(has) && !gone.iter().any(has) && text.lines().count() == want.len()
}

/// Waits until [`cache_says`] holds.
async fn cache_becomes(cache: &std::path::Path, want: &[&[u8]], gone: &[&[u8]]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cache_says(cache, want, gone) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache: {:?}",
            std::fs::read_to_string(cache)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_hash_cache_holds_the_shared_files_after_changes_and_a_restart() {
    use servent::wire::huge::Sha1Urn;
    let dir = Dir::new("cache-rescan");
    let share = dir.0.join("share");
    let data_dir = dir.0.join("data");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("apple.txt"), b"apple").unwrap();
    std::fs::write(share.join("banana.txt"), b"banana").unwrap();
    let config = || NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share.clone()],
        data_dir: Some(data_dir.clone()),
        target_peers: 0,
        rescan_every: Duration::from_millis(200),
        ..flat()
    };
    let cache = data_dir.join("sha1-cache.txt");
    let n = node::start(config(), CancellationToken::new())
        .await
        .unwrap();
    cache_becomes(&cache, &[b"apple", b"banana"], &[]).await;
    // One removed, one added, one changed: the cache follows the library.
    std::fs::remove_file(share.join("banana.txt")).unwrap();
    std::fs::write(share.join("cherry.txt"), b"cherry").unwrap();
    std::fs::write(share.join("apple.txt"), b"apple, ripe").unwrap();
    let now: [&[u8]; 2] = [b"apple, ripe", b"cherry"];
    let old: [&[u8]; 2] = [b"apple", b"banana"];
    cache_becomes(&cache, &now, &old).await;
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
    // Restarted over the same files: their hashes come from the cache, and
    // it still says the same.
    let n = node::start(config(), CancellationToken::new())
        .await
        .unwrap();
    let mut found = Vec::new();
    search::search(
        &n.local_addr.to_string(),
        "cherry",
        2,
        Duration::from_millis(500),
        10,
        |h| found.push(h.urn),
    )
    .await
    .unwrap();
    assert_eq!(found, [Some(Sha1Urn::digest(b"cherry"))]);
    assert!(cache_says(&cache, &now, &old));
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test]
async fn dialing_a_peer_that_only_speaks_0_4_falls_back() {
    let dir = Dir::new("v04");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old = listener.local_addr().unwrap();
    // A peer of the 0.4 era: it hangs up on a 0.6 request and answers 0.4.
    let peer = tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(2).any(|w| w == b"\n\n") && !req.windows(4).any(|w| w == b"\r\n\r\n")
            {
                let k = s.read(&mut buf).await.unwrap();
                if k == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..k]);
            }
            if req.starts_with(b"GNUTELLA CONNECT/0.4\n\n") {
                s.write_all(b"GNUTELLA OK\n\n").await.unwrap();
                return s;
            }
        }
    });
    let mut n = node_with(&dir, "vintage.txt", vec![old.to_string()]).await;
    let mut s = tokio::time::timeout(WAIT, peer).await.unwrap().unwrap();
    assert!(n.wait_for(WAIT, |st| st.connections == 1).await);
    s.write_all(&frame([3; 16], 0x80, 2, 0, b"\x00\x00vintage\x00"))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !got.windows(11).any(|w| w == b"vintage.txt") {
        let k = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0);
        got.extend_from_slice(&buf[..k]);
    }
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
    got.extend(rest);
    assert_eq!(bye_code(&got), None, "no Bye on a 0.4 connection");
}

#[tokio::test]
async fn a_corrupt_compressed_stream_gets_bye_501() {
    let dir = Dir::new("desync");
    let mut n = node_with(&dir, "x.txt", vec![]).await;
    let mut s = TcpStream::connect(n.local_addr).await.unwrap();
    request(&mut s, "").await;
    // We promise a deflated stream, then send garbage.
    s.write_all(b"GNUTELLA/0.6 200 OK\r\nContent-Encoding: deflate\r\n\r\n")
        .await
        .unwrap();
    s.write_all(&[0xff; 64]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(bye_code(&rest), Some(501));
    assert!(n.wait_for(WAIT, |st| st.connections == 0).await);
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

/// Accepts one connection on `listener` as a raw peer that answers the handshake
/// with `x_ultrapeer`, then collects the functions of the frames it receives.
async fn raw_acceptor(
    listener: tokio::net::TcpListener,
    x_ultrapeer: &'static str,
    send: Vec<u8>,
) -> tokio::sync::mpsc::UnboundedReceiver<u8> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0);
            got.extend_from_slice(&buf[..k]);
        }
        let answer = format!("GNUTELLA/0.6 200 OK\r\nX-Ultrapeer: {x_ultrapeer}\r\n\r\n");
        s.write_all(answer.as_bytes()).await.unwrap();
        // The node's final 200 block comes first: skip up to its blank line.
        use futures_util::StreamExt;
        let mut last = Vec::new();
        while !last.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = s.read(&mut buf).await.unwrap();
            if k == 0 {
                return;
            }
            last.extend_from_slice(&buf[..k]);
        }
        let end = last.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        s.write_all(&send).await.unwrap();
        // Bytes already read after it are the start of the message stream.
        let stream = std::io::Cursor::new(last[end..].to_vec()).chain(s);
        let mut framed = tokio_util::codec::FramedRead::new(
            stream,
            servent::framing::DescriptorCodec::default(),
        );
        while let Some(Ok(f)) = framed.next().await {
            if tx.send(f.header.function.code()).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test]
async fn a_leaf_answers_its_ultrapeers_sends_them_its_table_and_relays_nothing() {
    let dir = Dir::new("upstream");
    let up1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peers = vec![
        up1.local_addr().unwrap().to_string(),
        up2.local_addr().unwrap().to_string(),
    ];
    // The first ultrapeer sends a query for the leaf's file.
    let query = frame([7; 16], 0x80, 3, 0, b"\x80\x00local\x00");
    let mut up1_rx = raw_acceptor(up1, "True", query).await;
    let mut up2_rx = raw_acceptor(up2, "True", Vec::new()).await;
    std::fs::write(dir.0.join("local.txt"), b"local file").unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![dir.0.clone()],
        peers,
        target_peers: 0,
        tier: TierConfig {
            mode: Mode::Leaf,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    };
    let mut n = node::start(config, CancellationToken::new()).await.unwrap();
    assert!(n.wait_for(WAIT, |s| s.to_ultrapeers == 2).await);
    assert!(n.wait_for(WAIT, |s| s.hits_sent == 1).await);
    assert!(n.wait_for(WAIT, |s| s.tables_sent == 2).await);
    let mut saw = [Vec::new(), Vec::new()];
    for (i, rx) in [&mut up1_rx, &mut up2_rx].into_iter().enumerate() {
        while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
            saw[i].push(f);
        }
    }
    assert!(saw[0].contains(&0x81), "the asker got a hit: {saw:?}");
    assert!(!saw[1].contains(&0x80), "no query relayed: {saw:?}");
    assert!(
        saw.iter().all(|s| s.contains(&0x30)),
        "both got the table: {saw:?}"
    );
    assert!(!n.stats().ultrapeer);
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_gets_bye_200_at_shutdown() {
    // Shutdown wakes a connection's reader, its writer and the engine at once;
    // whichever runs first must not close the connection without the Bye. The race
    // is run many times, with several peers each.
    let dir = Dir::new("byeatshutdown");
    for round in 0..10 {
        let mut n = node_with(&dir, "x.txt", vec![]).await;
        let mut peers = Vec::new();
        for _ in 0..4 {
            peers.push(raw_peer(n.local_addr).await);
        }
        assert!(n.wait_for(WAIT, |st| st.connections == 4).await);
        tokio::time::timeout(WAIT, n.shutdown())
            .await
            .expect("shutdown");
        for (i, s) in peers.iter_mut().enumerate() {
            let mut got = Vec::new();
            let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await;
            assert_eq!(
                bye_code(&got),
                Some(200),
                "round {round}, peer {i}: {got:02x?}"
            );
        }
    }
}

#[tokio::test]
async fn an_ultrapeer_is_push_proxy_for_a_leaf_that_asks() {
    use tokio_util::codec::FramedRead;
    let dir = Dir::new("pushproxy");
    let n = node_with(&dir, "p.txt", vec![]).await;
    // A firewalled leaf: asks for a push proxy with LIME/21v1, its servent GUID
    // as the message id.
    let mut leaf = TcpStream::connect(n.local_addr).await.unwrap();
    let (answer, _) = request(&mut leaf, "X-Ultrapeer: False\r\n").await;
    assert!(answer.contains("X-Ultrapeer: True"), "{answer}");
    leaf.write_all(b"GNUTELLA/0.6 200 OK\r\n\r\n")
        .await
        .unwrap();
    let leaf_guid = [0x5a; 16];
    leaf.write_all(&frame(leaf_guid, 0x31, 1, 0, b"LIME\x15\x00\x01\x00"))
        .await
        .unwrap();
    let (r, _w) = leaf.into_split();
    let mut leaf_in = FramedRead::new(r, servent::framing::DescriptorCodec::default());
    let mut ack = None;
    read_frames(&mut leaf_in, |f| {
        if f.header.function.code() == 0x31 && f.payload.starts_with(b"LIME\x16\x00") {
            ack = Some(f.clone());
            true
        } else {
            false
        }
    })
    .await;
    let ack = ack.unwrap();
    assert_eq!(ack.header.guid.as_bytes(), &leaf_guid, "same message id");
    let mut want = b"LIME\x16\x00\x02\x00\x7f\x00\x00\x01".to_vec();
    want.extend(n.local_addr.port().to_le_bytes());
    assert_eq!(
        &ack.payload[..],
        &want[..],
        "LIME/22v2: our IP (BE), port (LE)"
    );
    // A Push for the leaf, arriving from elsewhere, reaches it.
    let mut other = raw_peer(n.local_addr).await;
    let mut push = leaf_guid.to_vec();
    push.extend(7u32.to_le_bytes());
    push.extend([127, 0, 0, 1]);
    push.extend(6346u16.to_le_bytes());
    other
        .write_all(&frame([0x33; 16], 0x40, 3, 0, &push))
        .await
        .unwrap();
    read_frames(&mut leaf_in, |f| {
        f.header.function.code() == 0x40 && f.payload[..16] == leaf_guid
    })
    .await;
    tokio::time::timeout(WAIT, n.shutdown())
        .await
        .expect("shutdown");
}
