//! The Gnutella UDP port: opened on the TCP port's number, every datagram
//! read and either handled or dropped with a counted reason, one source's
//! flood bounded, and a Push by UDP answered like one by TCP.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::Dir;
use servent::node::{self, NodeConfig, NodeHandle};
use servent::wire::{Guid, Hops, Message, Push, Ttl};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn node(dir: &Dir, udp: bool) -> NodeHandle {
    let share = dir.sub("share");
    std::fs::write(share.join("udp test file.txt"), b"over udp").unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        target_peers: 0,
        udp,
        ..NodeConfig::default()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

fn datagram(function: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Guid::new_random().0.to_vec();
    b.extend_from_slice(&[function, ttl, 0]);
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

#[tokio::test]
async fn the_udp_port_counts_what_it_cannot_use() {
    let dir = Dir::new("udp-base");
    let mut n = node(&dir, true).await;
    assert_eq!(n.udp_addr, Some(n.local_addr), "UDP on the TCP port");
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let to = n.local_addr;
    // Too short, a length that lies, a DHT message, a semi-reliable
    // acknowledgement, a Bye (TCP only), a deflated payload that is not.
    s.send_to(&[1, 2, 3], to).await.unwrap();
    let mut lying = datagram(0x00, 1, b"");
    lying.push(0);
    s.send_to(&lying, to).await.unwrap();
    s.send_to(&datagram(0x44, 1, &[0; 30]), to).await.unwrap();
    s.send_to(b"GTA\x00\x09\x34\x01\x00", to).await.unwrap();
    s.send_to(&datagram(0x02, 1, b"\xc8\x00bye\x00"), to)
        .await
        .unwrap();
    s.send_to(&datagram(0x81, 0x82, &[9; 40]), to)
        .await
        .unwrap();
    let ok = n
        .wait_for(WAIT, |st| {
            let u = &st.udp;
            u.received == 6
                && u.dropped("short") == 1
                && u.dropped("size-mismatch") == 1
                && u.dropped("dht") == 1
                && u.dropped("semi-reliable") == 1
                && u.dropped("not-over-udp") == 1
                && u.dropped("bad-deflate") == 1
        })
        .await;
    assert!(ok, "{:?}", n.stats().udp);

    // A flood of hits from one source: past its burst, dropped for budget.
    for _ in 0..2000 {
        let _ = s.send_to(&datagram(0x81, 1, &[0; 10]), to).await;
    }
    assert!(
        n.wait_for(WAIT, |st| st.udp.dropped("over-budget") >= 1000)
            .await,
        "{:?}",
        n.stats().udp
    );
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

#[tokio::test]
async fn a_push_by_udp_is_answered() {
    let dir = Dir::new("udp-push");
    let n = node(&dir, true).await;
    let giv = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = giv.local_addr().unwrap().port();
    // Index 0: "any file", as push proxies send it.
    let index = 0;
    let mut out = BytesMut::new();
    Message::Push(Push {
        servent: n.guid,
        index,
        ip: std::net::Ipv4Addr::LOCALHOST,
        port,
        ggep: None,
    })
    .encode_frame(Guid::new_random(), Ttl(1), Hops(0), &mut out)
    .unwrap();
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(&out, n.local_addr).await.unwrap();
    let (mut c, _) = tokio::time::timeout(WAIT, giv.accept())
        .await
        .expect("the node connects back")
        .unwrap();
    let mut line = vec![0u8; 64];
    let got = tokio::time::timeout(WAIT, c.read(&mut line))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&line[..got]).to_string();
    assert!(text.starts_with("GIV "), "{text}");
    assert!(
        text.to_uppercase()
            .contains(&n.guid.to_string().to_uppercase()),
        "{text}"
    );
    // One for somebody else is dropped, and said so.
    let mut other = BytesMut::new();
    Message::Push(Push {
        servent: Guid([1; 16]),
        index,
        ip: std::net::Ipv4Addr::LOCALHOST,
        port,
        ggep: None,
    })
    .encode_frame(Guid::new_random(), Ttl(1), Hops(0), &mut other)
    .unwrap();
    s.send_to(&other, n.local_addr).await.unwrap();
    let mut n = n;
    assert!(
        n.wait_for(WAIT, |st| st.udp.dropped("push-not-for-us") == 1)
            .await
    );
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

#[tokio::test]
async fn no_udp_port_when_asked() {
    let dir = Dir::new("udp-off");
    let n = node(&dir, false).await;
    assert_eq!(n.udp_addr, None);
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}
