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
