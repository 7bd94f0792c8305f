//! The FastTrack supernode with users written here from the fact sheet
//! (`fasttrack-facts.md`): the library's client session for the cipher and
//! framing, the user's side of sharing, searching, pushing and the HTTP
//! transfers (`GET /.hash=`, `GIVE`) written in the test. Loopback only,
//! bounded times.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use servent::fasttrack::session::{ClientSession, Packet};
use servent::fasttrack::wire::{self, FileRecord, Message, NodeInfo, Query, QueryTerm, Tag};
use servent::node::{self, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

mod common;

const WAIT: Duration = Duration::from_secs(10);
const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The FTH of a file: MD5 of the first 300 KiB, then the smallhash (facts 5.1).
fn fth(data: &[u8]) -> [u8; 20] {
    const HEAD: usize = 307_200;
    let mut out = [0u8; 20];
    out[..16].copy_from_slice(&Md5::digest(&data[..data.len().min(HEAD)]));
    let n = data.len();
    let mut c: u32 = 0xFFFF_FFFF;
    if n > HEAD {
        let mut off = 1 << 20;
        while off + HEAD <= n - HEAD {
            c = crc(c, &data[off..off + HEAD]);
            off *= 2;
        }
        let tail = (n - HEAD).min(HEAD);
        c = crc(c, &data[n - tail..]);
    }
    c ^= n as u32;
    out[16..].copy_from_slice(&c.to_le_bytes());
    out
}

/// The reflected CRC-32 update without the final inversion.
fn crc(mut c: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    c
}

/// A user logged in to the supernode.
struct User {
    stream: TcpStream,
    session: ClientSession,
    /// What arrived and was not asked for yet.
    inbox: Vec<Message>,
    external_ip: Option<Ipv4Addr>,
    stats_users: Option<u32>,
}

impl User {
    /// Connects, hands shakes, reads the login messages and says who it is.
    async fn login(node: SocketAddr, name: &str, port: u16) -> User {
        let stream = TcpStream::connect(node).await.unwrap();
        let mut u = User {
            stream,
            session: ClientSession::new_gift(),
            inbox: Vec::new(),
            external_ip: None,
            stats_users: None,
        };
        u.flush().await;
        timeout(WAIT, async {
            while u.external_ip.is_none() || u.stats_users.is_none() {
                u.read_some().await;
            }
        })
        .await
        .expect("0x2C and 0x09 at login");
        u.send(Message::NodeInfo(NodeInfo {
            ip: LOCAL,
            port,
            bandwidth: 0x60,
            user: Bytes::copy_from_slice(name.as_bytes()),
        }))
        .await;
        u
    }

    async fn flush(&mut self) {
        let out = self.session.take_output();
        if !out.is_empty() {
            self.stream.write_all(&out).await.unwrap();
        }
    }

    async fn send(&mut self, m: Message) {
        self.session.send_message(&m).unwrap();
        self.flush().await;
    }

    /// Reads once and files what arrived; answers pings.
    async fn read_some(&mut self) {
        let mut buf = BytesMut::with_capacity(8192);
        let n = self.stream.read_buf(&mut buf).await.unwrap();
        assert!(n > 0, "the supernode closed the session");
        self.session.receive(&buf).unwrap();
        while let Some(p) = self.session.poll_packet().unwrap() {
            match p {
                Packet::Ping => self.session.send_pong(),
                Packet::Pong => {}
                p @ Packet::Message { .. } => {
                    let m = p.parse().unwrap().unwrap();
                    match &m {
                        Message::ExternalIp(ip) => self.external_ip = Some(*ip),
                        Message::NetworkStats(s) => self.stats_users = Some(s.users),
                        _ => {}
                    }
                    self.inbox.push(m);
                }
            }
        }
        self.flush().await;
    }

    /// The first message that `f` picks, waiting for it.
    async fn expect<T>(&mut self, mut f: impl FnMut(&Message) -> Option<T>) -> T {
        timeout(WAIT, async {
            loop {
                if let Some(i) = self.inbox.iter().position(|m| f(m).is_some()) {
                    let m = self.inbox.remove(i);
                    return f(&m).unwrap();
                }
                self.read_some().await;
            }
        })
        .await
        .expect("the message came")
    }

    async fn share(&mut self, name: &str, data: &[u8]) {
        self.send(Message::ShareFile {
            media: wire::media::OTHER,
            file: FileRecord {
                fth: fth(data),
                file_id: 1,
                size: data.len() as u32,
                tags: vec![Tag::text(wire::tag::FILENAME, name.as_bytes().to_vec())],
            },
        })
        .await;
    }

    /// Searches and collects the results until the 0x08.
    async fn search(&mut self, id: u16, words: &str) -> Vec<(wire::QueryReply, wire::QueryResult)> {
        self.send(Message::Query(Query {
            max_results: 1000,
            id,
            realm: wire::realm::EVERYTHING,
            terms: vec![QueryTerm {
                cmp: wire::cmp::SUBSTRING,
                tag: 0,
                value: Bytes::copy_from_slice(words.as_bytes()),
            }],
        }))
        .await;
        let mut got = Vec::new();
        timeout(WAIT, async {
            loop {
                let m = self
                    .expect(|m| match m {
                        Message::QueryReply(r) if r.id == id => Some(m.clone()),
                        Message::QueryEnd { id: e } if *e == id => Some(m.clone()),
                        _ => None,
                    })
                    .await;
                match m {
                    Message::QueryReply(r) => {
                        for x in &r.results {
                            got.push((r.clone(), x.clone()));
                        }
                    }
                    _ => return,
                }
            }
        })
        .await
        .expect("the search ended");
        got
    }
}

/// A user's HTTP side: serves `data` at `/.hash=<fth hex>` to every GET on
/// `stream`, as giFT does (206, X-Kazaa headers).
async fn serve_hash(mut stream: TcpStream, data: Vec<u8>) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let want = format!("GET /.hash={} HTTP/1.1", hex(&fth(&data)));
    let reply = if req.starts_with(want.as_bytes()) {
        let mut r = format!(
            "HTTP/1.1 206 Partial Content\r\nServer: giFT-FastTrack 0.8.9\r\nX-Kazaa-Username: A\r\nX-Kazaa-Network: KaZaA\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-{}/{}\r\nContent-Length: {}\r\n\r\n",
            data.len() - 1,
            data.len(),
            data.len()
        )
        .into_bytes();
        r.extend_from_slice(&data);
        r
    } else {
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
    };
    stream.write_all(&reply).await.unwrap();
    let _ = stream.shutdown().await;
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sends giFT's GET for `hash` on `stream` and returns the body.
async fn get_hash(mut stream: TcpStream, hash: &[u8; 20], host: SocketAddr) -> Vec<u8> {
    let req = format!(
        "GET /.hash={} HTTP/1.1\r\nUserAgent: giFT-FastTrack 0.8.9\r\nX-Kazaa-Network: KaZaA\r\nX-Kazaa-Username: B\r\nConnection: Close\r\nHost: {host}\r\n\r\n",
        hex(hash)
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.1 206"),
        "{head}"
    );
    all[end..].to_vec()
}

/// Everything `at` sends back to `head` (a request's lines, to which
/// `Connection: close` and the blank line are added) until it closes.
async fn answer_to(at: SocketAddr, head: &str) -> String {
    String::from_utf8_lossy(&bytes_from(at, head).await).into_owned()
}

/// [`answer_to`]'s bytes, as they came.
async fn bytes_from(at: SocketAddr, head: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    got
}

/// A Gnutella search through the node at `at` (at most 10 results), with
/// the hits that came within `wait`.
async fn gnutella_search(
    at: SocketAddr,
    words: &str,
    ttl: u8,
    wait: Duration,
) -> Vec<servent::node::search::SearchHit> {
    let mut hits = Vec::new();
    servent::node::search::search(&at.to_string(), words, ttl, wait, 10, |h| hits.push(h))
        .await
        .unwrap();
    hits
}

async fn start_node(dir: &common::Dir) -> node::NodeHandle {
    node::start(
        NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: Some(dir.sub("data")),
            local_network: true,
            target_peers: 0,
            ..NodeConfig::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

fn data(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

#[tokio::test]
async fn two_users_share_search_download_push_and_leave() {
    let dir = common::Dir::new("ft-users");
    let node = start_node(&dir).await;
    let at = node.local_addr;

    // A serves its file over HTTP, as giFT does.
    let a_data = data(400_000, 7);
    let a_http = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let a_port = a_http.local_addr().unwrap().port();
    let mut a = User::login(at, "A", a_port).await;
    assert_eq!(a.external_ip, Some(LOCAL));
    assert!(a.stats_users.unwrap() >= 100_000, "giFT needs 100000 users");
    a.share("needle test file.bin", &a_data).await;

    let b_listen = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let b_port = b_listen.local_addr().unwrap().port();
    let mut b = User::login(at, "B", b_port).await;
    // The share may still be on its way: search until it is found.
    let mut found = Vec::new();
    for id in 0..20 {
        found = b.search(id, "needle test file").await;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(found.len(), 1, "A's file found");
    let (reply, result) = &found[0];
    assert_eq!(result.fth, fth(&a_data));
    assert_eq!((result.ip, result.port), (LOCAL, a_port));
    assert_eq!(&result.user[..], b"A");
    assert_eq!(
        wire::find_tag(&result.tags, wire::tag::FILENAME).map(|v| &v[..]),
        Some(&b"needle test file.bin"[..])
    );
    assert_eq!(
        (reply.supernode_ip, reply.supernode_port),
        (LOCAL, at.port())
    );

    // B downloads straight from A.
    let served = tokio::spawn({
        let d = a_data.clone();
        async move {
            let (s, _) = a_http.accept().await.unwrap();
            serve_hash(s, d).await;
        }
    });
    let conn = TcpStream::connect((LOCAL, a_port)).await.unwrap();
    let got = get_hash(conn, &result.fth, SocketAddr::from((LOCAL, a_port))).await;
    assert_eq!(fth(&got), result.fth, "the download checks out by FTH");
    served.await.unwrap();

    // A push: B asks the supernode to have A connect to it; A says GIVE and
    // serves B's GET on that connection.
    b.send(Message::PushRequest(wire::PushRequest {
        push_id: 1,
        requester_ip: LOCAL,
        requester_port: b_port,
        target_ip: LOCAL,
        target_port: 0,
        supernode_ip: LOCAL,
        supernode_port: at.port(),
        target_user: Bytes::from_static(b"A"),
    }))
    .await;
    let fwd = a
        .expect(|m| match m {
            Message::PushForward(p) => Some(*p),
            Message::Unknown {
                kind: 0x0D,
                payload,
            } if payload.len() == 10 => Some(wire::PushForward {
                push_id: u32::from_be_bytes(payload[..4].try_into().unwrap()),
                requester_ip: Ipv4Addr::new(payload[4], payload[5], payload[6], payload[7]),
                requester_port: u16::from_be_bytes([payload[8], payload[9]]),
            }),
            _ => None,
        })
        .await;
    assert_eq!(fwd.push_id, 1);
    assert_eq!((fwd.requester_ip, fwd.requester_port), (LOCAL, b_port));
    let d = a_data.clone();
    let giver = tokio::spawn(async move {
        let mut s = TcpStream::connect((fwd.requester_ip, fwd.requester_port))
            .await
            .unwrap();
        s.write_all(format!("GIVE {}\r\n", fwd.push_id).as_bytes())
            .await
            .unwrap();
        serve_hash(s, d).await;
    });
    let (mut pushed, _) = timeout(WAIT, b_listen.accept()).await.unwrap().unwrap();
    let mut line = [0u8; 8];
    pushed.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"GIVE 1\r\n");
    let got = get_hash(pushed, &result.fth, SocketAddr::from((LOCAL, b_port))).await;
    assert_eq!(fth(&got), result.fth, "the pushed download checks out");
    giver.await.unwrap();

    // A leaves: its file is gone from the results.
    drop(a);
    let mut gone = false;
    for id in 100..140 {
        if b.search(id, "needle").await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "A's files left with A");
    let st = node.fasttrack().status();
    assert_eq!(st.users, 1);
    assert_eq!(st.files, 0);
    node.shutdown().await;
}

/// The supernode's counter `event`.
fn counter(node: &node::NodeHandle, event: &str) -> u64 {
    node.fasttrack()
        .status()
        .counters
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no counter {event}"))
}

/// Waits until `event` has counted at least `n`.
async fn counted(node: &node::NodeHandle, event: &str, n: u64) {
    let ok = timeout(WAIT, async {
        while counter(node, event) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "{event} = {} < {n}", counter(node, event));
}

/// Reads until the peer closes; false if it stays open past `WAIT`.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

impl User {
    async fn closed(&mut self) -> bool {
        closed(&mut self.stream).await
    }
}

/// A user can still log in, share and be found: the node is not stalled.
async fn still_serves(at: SocketAddr, tag: &str) {
    let mut s = User::login(at, &format!("{tag}s"), 1000).await;
    s.share(&format!("{tag} survivor.txt"), b"still here").await;
    let mut f = User::login(at, &format!("{tag}f"), 1001).await;
    for id in 0..20 {
        if !f.search(id, &format!("{tag} survivor")).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the node no longer answers searches");
}

async fn hostile_node(dir: &common::Dir) -> node::NodeHandle {
    let mut fasttrack = servent::fasttrack::server::ServerConfig {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    fasttrack.core.login_timeout = Duration::from_secs(2);
    node::start(
        NodeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: Some(dir.sub("data")),
            local_network: true,
            target_peers: 0,
            fasttrack,
            ..NodeConfig::default()
        },
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn hostile_handshakes_are_closed_and_counted() {
    let dir = common::Dir::new("ft-hostile-hs");
    let node = hostile_node(&dir).await;
    let at = node.local_addr;

    // Garbage: 12 binary bytes, then noise that decrypts to no name and no unit.
    let mut s = TcpStream::connect(at).await.unwrap();
    let noise = data(600, 99);
    s.write_all(&[0x01, 0x02, 0x03, 0xFF, 0, 0, 0, 1, 0x80, 0, 0, 2])
        .await
        .unwrap();
    s.write_all(&noise).await.unwrap();
    assert!(closed(&mut s).await, "garbage hello closed");

    // A network name that never ends.
    let mut c = ClientSession::with_options(
        0xFACB_1238,
        0x29,
        &[b'K'; 500],
        servent::fasttrack::session::Limits::CLIENT,
    )
    .unwrap();
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(&c.take_output()).await.unwrap();
    let mut buf = BytesMut::with_capacity(64);
    while c.server_hello().is_none() {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        c.receive(&buf).unwrap();
        buf.clear();
    }
    s.write_all(&c.take_output()).await.unwrap();
    assert!(closed(&mut s).await, "endless name closed");

    // A hello and then silence: the handshake times out.
    let mut s = TcpStream::connect(at).await.unwrap();
    s.write_all(&ClientSession::new_gift().take_output())
        .await
        .unwrap();
    assert!(closed(&mut s).await, "silent user closed");

    counted(&node, "handshakes_failed", 2).await;
    counted(&node, "handshakes_timed_out", 1).await;
    still_serves(at, "hs").await;
    node.shutdown().await;
}

#[tokio::test]
async fn hostile_sessions_are_dropped_or_closed_and_counted() {
    let dir = common::Dir::new("ft-hostile");
    let node = hostile_node(&dir).await;
    let at = node.local_addr;

    // A 0xFFFF-long message: refused on its header, the session closed.
    let mut u = User::login(at, "big", 1).await;
    u.session.send_raw(0x22, &vec![0u8; 0xFFFF]).unwrap();
    u.flush().await;
    assert!(u.closed().await, "0xFFFF-long message closed the session");
    counted(&node, "closed_framing", 1).await;

    // Unknown ids: a push to nobody, an unknown message, an unshare of nothing,
    // a message that does not parse: counted, the session goes on.
    let mut u = User::login(at, "odd", 1).await;
    u.send(Message::PushRequest(wire::PushRequest {
        push_id: 5,
        requester_ip: LOCAL,
        requester_port: 1,
        target_ip: LOCAL,
        target_port: 0,
        supernode_ip: LOCAL,
        supernode_port: at.port(),
        target_user: Bytes::from_static(b"nobody"),
    }))
    .await;
    u.session.send_raw(0x77, b"what is this").unwrap();
    u.send(Message::UnshareFile(FileRecord {
        fth: [9; 20],
        file_id: 0,
        size: 1,
        tags: vec![],
    }))
    .await;
    u.session.send_raw(0x06, &[0x00]).unwrap();
    u.flush().await;
    counted(&node, "pushes_unknown", 1).await;
    counted(&node, "unknown_messages", 1).await;
    counted(&node, "unshares_unknown", 1).await;
    counted(&node, "bad_messages", 1).await;
    assert!(u.search(1, "anything").await.is_empty(), "still answered");
    // A search by hash (giFT's LOCATE) has no Gnutella form: it ends at once,
    // and the session goes on.
    u.send(Message::Query(Query {
        max_results: 1000,
        id: 2,
        realm: wire::realm::EVERYTHING,
        terms: vec![QueryTerm {
            cmp: wire::cmp::EQUALS,
            tag: 3,
            value: Bytes::copy_from_slice(&[7u8; 20]),
        }],
    }))
    .await;
    u.expect(|m| matches!(m, Message::QueryEnd { id: 2 }).then_some(()))
        .await;
    assert!(
        u.search(3, "anything").await.is_empty(),
        "answered after LOCATE"
    );

    // A share flood: over the rate it is dropped, then the user is closed and
    // its files are gone.
    let mut f = User::login(at, "flood", 1).await;
    for i in 0..3000u32 {
        f.session
            .send_message(&Message::ShareFile {
                media: 0,
                file: FileRecord {
                    fth: fth(&i.to_be_bytes()),
                    file_id: 0,
                    size: 4,
                    tags: vec![Tag::text(wire::tag::FILENAME, format!("flood {i}"))],
                },
            })
            .unwrap();
    }
    f.flush().await;
    assert!(f.closed().await, "share flood closed");
    counted(&node, "shares_over_rate", 1).await;
    counted(&node, "closed_flood", 1).await;

    // A search flood: the first few are answered, then dropped, then closed.
    let mut q = User::login(at, "asker", 1).await;
    for id in 0..200u16 {
        q.session
            .send_message(&Message::Query(Query {
                max_results: 1000,
                id,
                realm: wire::realm::EVERYTHING,
                terms: vec![QueryTerm {
                    cmp: wire::cmp::SUBSTRING,
                    tag: 0,
                    value: Bytes::from_static(b"flood"),
                }],
            }))
            .unwrap();
    }
    q.flush().await;
    assert!(q.closed().await, "search flood closed");
    counted(&node, "searches_over_rate", 1).await;
    counted(&node, "closed_flood", 2).await;

    // A session that never says who it is goes after the login timeout.
    let mut n = TcpStream::connect(at).await.unwrap();
    let mut c = ClientSession::new_gift();
    n.write_all(&c.take_output()).await.unwrap();
    let mut buf = BytesMut::with_capacity(4096);
    while !c.is_established() {
        assert!(n.read_buf(&mut buf).await.unwrap() > 0);
        c.receive(&buf).unwrap();
        buf.clear();
        while c.poll_packet().unwrap().is_some() {}
        n.write_all(&c.take_output()).await.unwrap();
    }
    assert!(closed(&mut n).await, "no login, closed");
    counted(&node, "closed_no_login", 1).await;

    assert_eq!(
        node.fasttrack().status().files,
        0,
        "no file of the flooder left"
    );
    still_serves(at, "after").await;
    node.shutdown().await;
}

fn mesh_node(
    dir: &common::Dir,
    tag: &str,
    mode: node::Mode,
    share: Option<(&str, &[u8])>,
    peers: Vec<String>,
) -> NodeConfig {
    let shares = share
        .map(|(name, bytes)| {
            let d = dir.sub(&format!("share-{tag}"));
            std::fs::write(d.join(name), bytes).unwrap();
            vec![d]
        })
        .unwrap_or_default();
    let mut fasttrack = servent::fasttrack::server::ServerConfig::default();
    fasttrack.core.bridge_wait = Duration::from_millis(1500);
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.sub(&format!("data-{tag}"))),
        local_network: true,
        target_peers: 0,
        shares,
        peers,
        handshake_timeout: Duration::from_secs(2),
        fasttrack,
        tier: node::TierConfig {
            mode,
            ultrapeer_qrp: false,
            // Library offers stay on (the default): the ultrapeer answers for
            // its leaf, with the FTH the offer carries.
            ..node::TierConfig::default()
        },
        dq: node::DqConfig {
            max_searches: 0,
            ..node::DqConfig::default()
        },
        ..NodeConfig::default()
    }
}

#[tokio::test]
async fn a_fasttrack_user_finds_and_fetches_a_gnutella_leafs_file_through_the_mesh() {
    let dir = common::Dir::new("ft-bridge");
    let cancel = CancellationToken::new;
    let mut b = node::start(
        mesh_node(&dir, "b", node::Mode::Ultrapeer, None, vec![]),
        cancel(),
    )
    .await
    .unwrap();
    let leaf_data = data(350_000, 3);
    let mut leaf = node::start(
        mesh_node(
            &dir,
            "leaf",
            node::Mode::Leaf,
            Some(("bridged gnutella song.mp3", &leaf_data)),
            vec![b.local_addr.to_string()],
        ),
        cancel(),
    )
    .await
    .unwrap();
    let mut a = node::start(
        mesh_node(
            &dir,
            "a",
            node::Mode::Ultrapeer,
            None,
            vec![b.local_addr.to_string()],
        ),
        cancel(),
    )
    .await
    .unwrap();
    assert!(leaf.wait_for(WAIT, |s| s.to_ultrapeers == 1).await);
    assert!(a.wait_for(WAIT, |s| s.connections == 1).await);
    assert!(b.wait_for(WAIT, |s| s.connections == 2).await);

    // A FastTrack user of A searches: the leaf of B answers through the mesh,
    // with the FTH, and the user fetches the file from the leaf by it.
    let mut u = User::login(a.local_addr, "U", 1).await;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut id = 0;
    while found.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bridged result: {:?} {:?}",
            a.fasttrack().status(),
            a.stats()
        );
        found = u.search(id, "bridged gnutella song").await;
        id += 1;
    }
    let (_, r) = &found[0];
    assert_eq!(r.fth, fth(&leaf_data));
    assert_eq!((r.ip, r.port), (LOCAL, leaf.local_addr.port()));
    let conn = TcpStream::connect((r.ip, r.port)).await.unwrap();
    let got = get_hash(conn, &r.fth, SocketAddr::from((r.ip, r.port))).await;
    assert_eq!(
        fth(&got),
        fth(&leaf_data),
        "the bridged download checks out"
    );
    assert!(counter(&a, "bridged_results") >= 1);
    for n in [a, leaf, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn the_nodes_own_files_are_offered_only_while_users_are_logged_in() {
    let dir = common::Dir::new("ft-own");
    let own = data(120_000, 5);
    let mut config = mesh_node(
        &dir,
        "own",
        node::Mode::Ultrapeer,
        Some(("own library song.mp3", &own)),
        vec![],
    );
    config.rescan_every = Duration::from_millis(300);
    let n = node::start(config, CancellationToken::new()).await.unwrap();
    // Hashed (a Gnutella search finds it with its FTH), and with no user the
    // supernode holds no copy of the library.
    let mut hits = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while hits.is_empty() && tokio::time::Instant::now() < deadline {
        hits = gnutella_search(
            n.local_addr,
            "own library song",
            1,
            Duration::from_millis(300),
        )
        .await;
        hits.retain(|h| h.fth.is_some());
    }
    assert_eq!(hits.len(), 1, "the file is hashed");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(n.fasttrack().status().own_files, 0, "no user, no copy");

    // A user logs in: the node's file is in its index at once and answers
    // the user's search, served by the node.
    let mut u = User::login(n.local_addr, "U", 1).await;
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut id = 0;
    while found.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "own file not offered"
        );
        found = u.search(id, "own library song").await;
        id += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        id <= 3,
        "offered at the login, not at a later tick: {id} searches"
    );
    let (_, r) = &found[0];
    assert_eq!(r.fth, fth(&own));
    assert_eq!((r.ip, r.port), (LOCAL, n.local_addr.port()));
    assert_eq!(n.fasttrack().status().own_files, 1);

    // While the user is logged in, a file added to the share is offered
    // once hashed, and a file removed is no longer: the copy follows the
    // library. (Waited for by the status, not by searching: a user may
    // search once a second.)
    let own_files = |want: usize, what: &'static str| {
        let ft = n.fasttrack();
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while ft.status().own_files != want {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let share = dir.sub("share-own");
    std::fs::write(share.join("own second tune.mp3"), data(50_000, 6)).unwrap();
    own_files(2, "added file not offered").await;
    id += 1;
    assert_eq!(u.search(id, "second tune").await.len(), 1);
    std::fs::remove_file(share.join("own library song.mp3")).unwrap();
    own_files(1, "removed file still offered").await;
    id += 1;
    assert!(u.search(id, "own library song").await.is_empty());
    id += 1;
    assert_eq!(u.search(id, "second tune").await.len(), 1);

    // The last user leaves: the copy goes.
    drop(u);
    let deadline = tokio::time::Instant::now() + WAIT;
    while n.fasttrack().status().own_files != 0 {
        assert!(tokio::time::Instant::now() < deadline, "copy kept");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n.shutdown().await;
}

/// A user's HTTP side that serves `data` by its FTH to every connection.
async fn serve_forever(l: TcpListener, data: Vec<u8>) {
    loop {
        let Ok((s, _)) = l.accept().await else {
            return;
        };
        tokio::spawn(serve_hash(s, data.clone()));
    }
}

/// A plain HTTP GET of `path` from `at`; the body.
async fn http_get(at: SocketAddr, path: &str) -> Vec<u8> {
    let all = bytes_from(at, &format!("GET {path} HTTP/1.1\r\nHost: {at}\r\n")).await;
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    all[end..].to_vec()
}

#[tokio::test]
async fn a_fasttrack_users_file_is_found_and_fetched_from_gnutella_and_from_another_supernode() {
    let dir = common::Dir::new("ft-bridge-back");
    let cancel = CancellationToken::new;
    let mut a = node::start(
        mesh_node(&dir, "a", node::Mode::Ultrapeer, None, vec![]),
        cancel(),
    )
    .await
    .unwrap();
    let mut b = node::start(
        mesh_node(
            &dir,
            "b",
            node::Mode::Ultrapeer,
            None,
            vec![a.local_addr.to_string()],
        ),
        cancel(),
    )
    .await
    .unwrap();
    assert!(a.wait_for(WAIT, |s| s.connections == 1).await);
    assert!(b.wait_for(WAIT, |s| s.connections == 1).await);

    // U1, a FastTrack user of A, shares a file it serves by FTH.
    let u1_data = data(120_000, 11);
    let u1_http = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let u1_port = u1_http.local_addr().unwrap().port();
    tokio::spawn(serve_forever(u1_http, u1_data.clone()));
    let mut u1 = User::login(a.local_addr, "U1", u1_port).await;
    u1.share("faraway fasttrack tune.mp3", &u1_data).await;
    timeout(WAIT, async {
        while a.fasttrack().status().files < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();

    // A Gnutella leaf of B searches: A answers for U1's file, naming itself and
    // the FTH; the leaf fetches it from A, which passes U1's bytes through.
    let hits = gnutella_search(
        b.local_addr,
        "faraway fasttrack tune",
        3,
        Duration::from_millis(2000),
    )
    .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    let h = &hits[0];
    assert_eq!((h.host, h.port), (LOCAL.into(), a.local_addr.port()));
    assert_eq!(h.fth.map(|f| f.0), Some(fth(&u1_data)));
    let got = http_get(
        SocketAddr::from((h.host, h.port)),
        &format!("/get/{}/{}", h.index, h.name.replace(' ', "%20")),
    )
    .await;
    assert_eq!(got, u1_data, "the Gnutella download through A is U1's file");

    // U2, a FastTrack user of B, is told of A as another supernode (0x00).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut u2 = loop {
        let mut u = User::login(b.local_addr, "U2", 1).await;
        let listed = timeout(Duration::from_millis(500), async {
            loop {
                if u.inbox.iter().any(|m| {
                    matches!(m, Message::NodeList(v)
                    if v.iter().any(|n| (n.ip, n.port) == (LOCAL, a.local_addr.port())))
                }) {
                    return;
                }
                u.read_some().await;
            }
        })
        .await
        .is_ok();
        if listed {
            break u;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A never listed to B's users"
        );
    };
    // U2 finds U1's file through the mesh and fetches it from A by FTH.
    let found = u2.search(0, "faraway tune").await;
    assert_eq!(found.len(), 1);
    let (_, r) = &found[0];
    assert_eq!((r.ip, r.port), (LOCAL, a.local_addr.port()));
    let conn = TcpStream::connect((r.ip, r.port)).await.unwrap();
    let got = get_hash(conn, &r.fth, SocketAddr::from((r.ip, r.port))).await;
    assert_eq!(fth(&got), fth(&u1_data), "U2's download checks out by FTH");
    for n in [a, b] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_firewalled_users_file_reaches_a_gnutella_downloader_by_push() {
    let dir = common::Dir::new("ft-bridge-push");
    let a = node::start(
        mesh_node(&dir, "a", node::Mode::Ultrapeer, None, vec![]),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // U3 takes no connections (port 0): the node must push it.
    let u3_data = data(90_000, 5);
    let mut u3 = User::login(a.local_addr, "U3", 0).await;
    u3.share("walled garden tune.mp3", &u3_data).await;
    timeout(WAIT, async {
        while a.fasttrack().status().files < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let d = u3_data.clone();
    let giver = tokio::spawn(async move {
        let p = u3
            .expect(|m| match m {
                Message::PushForward(p) => Some(*p),
                _ => None,
            })
            .await;
        let mut s = TcpStream::connect((p.requester_ip, p.requester_port))
            .await
            .unwrap();
        s.write_all(format!("GIVE {}\r\n", p.push_id).as_bytes())
            .await
            .unwrap();
        serve_hash(s, d).await;
        u3
    });
    let hits = gnutella_search(
        a.local_addr,
        "walled garden",
        2,
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(hits.len(), 1, "{hits:?}");
    let h = &hits[0];
    let path = format!("/get/{}/{}", h.index, h.name.replace(' ', "%20"));
    // A HEAD is answered from what U3 announced, without a push (U3 answers
    // one push only here: a HEAD that pushed would leave the GET without).
    let at = SocketAddr::from((h.host, h.port));
    let head = answer_to(at, &format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", u3_data.len())),
        "{head}"
    );
    // A range past the announced size is refused the way a local file's is,
    // naming the size so that the client can ask again, and without a push
    // (U3 answers one only: the GET below would find none).
    let past = u3_data.len();
    for method in ["HEAD", "GET"] {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nRange: bytes={past}-\r\n");
        let head = answer_to(at, &request).await.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 416"), "{method}: {head}");
        assert!(
            head.contains(&format!("content-range: bytes */{past}\r\n")),
            "{method}: {head}"
        );
    }
    let got = http_get(SocketAddr::from((h.host, h.port)), &path).await;
    assert_eq!(
        got, u3_data,
        "the pushed user's bytes came through the node"
    );
    drop(giver.await.unwrap());
    a.shutdown().await;
}
