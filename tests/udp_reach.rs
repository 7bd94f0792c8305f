//! Reachability: connect-back requests answered (GTKG/7 v1 and v2 by UDP with
//! the right MUID, BEAR/7 and LIME/7 by TCP, LIME/8 by UDP), the node deciding
//! it is reachable by TCP and UDP once peers connect and ping back, our
//! address agreed from `IP` pongs, and in a network namespace, an outside
//! host that can or cannot reach us deciding "firewalled" or not.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::Dir;
use common::raw::{Raw, accept_raw, dial_raw_from, frame, header, vendor};
use servent::core::reach::{ReachTimers, Timers};
use servent::node::{self, NodeConfig, NodeHandle};
use servent::wire::reach::{ConnectBack, connect_back, ip_answer};
use servent::wire::{
    Function, Ggep, Guid, Hops, Message, Pong, QueryHit, TrailerArea, Ttl, VendorMsg,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Timers short enough for a test: a round of connect-backs waits 2 s.
fn quick() -> ReachTimers {
    let t = Timers {
        fresh: Duration::from_secs(600),
        wait: Duration::from_secs(2),
        retry: Duration::from_secs(600),
    };
    ReachTimers {
        tcp: t,
        udp: t,
        solicited: t,
    }
}

async fn node_at(dir: &Dir, listen: &str, peers: Vec<String>) -> NodeHandle {
    std::fs::write(dir.sub("share").join("reach test file.txt"), b"reachable?").unwrap();
    let config = NodeConfig {
        listen: listen.parse().unwrap(),
        shares: vec![dir.sub("share")],
        peers,
        target_peers: 0,
        reach: quick(),
        ..NodeConfig::default()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

const VENDOR_HEADERS: &str = "User-Agent: test\r\nX-Ultrapeer: True\r\nVendor-Message: 0.2\r\n";
const PLAIN_HEADERS: &str = "User-Agent: test\r\nX-Ultrapeer: True\r\n";

/// Reads one datagram within `WAIT`.
async fn datagram(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
        .await
        .expect("a datagram in time")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

/// The bytes of the connect-back ping with MUID `g` (empty, TTL 1, hops 0).
fn cb_ping(g: [u8; 16]) -> Vec<u8> {
    frame(g, 0x00, 1, 0, &[])
}

#[tokio::test]
async fn gtkg7_v1_and_v2_are_answered_by_udp_with_the_right_muid() {
    let dir = Dir::new("reach-gtkg7");
    let mut n = node_at(&dir, "127.0.0.1:0", vec![]).await;
    // v1 from 127.0.0.2: the ping's MUID is the GUID it names.
    let u2 = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let (_, raw) = dial_raw_from(Some("127.0.0.2"), n.local_addr, VENDOR_HEADERS).await;
    let mut raw = raw.expect("accepted");
    let g = [
        0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 7, 0x18, 0xff, 0x29, 0x3a, 0x4b, 0x5c, 0x6d, 0x7e, 0,
    ];
    let mut body = u2.local_addr().unwrap().port().to_le_bytes().to_vec();
    body.extend_from_slice(&g);
    raw.send(&frame([0; 16], 0x31, 1, 0, &vendor(b"GTKG", 7, 1, &body)))
        .await;
    let (got, from) = datagram(&u2).await;
    assert_eq!(got, cb_ping(g), "the connect-back ping, byte for byte");
    assert_eq!(from, n.local_addr, "from the Gnutella port");

    // v2 from 127.0.0.3: the ping reuses the request's MUID.
    let u3 = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let (_, raw3) = dial_raw_from(Some("127.0.0.3"), n.local_addr, VENDOR_HEADERS).await;
    let mut raw3 = raw3.expect("accepted");
    let muid = [
        0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xff, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0,
    ];
    let port3 = u3.local_addr().unwrap().port().to_le_bytes();
    raw3.send(&frame(muid, 0x31, 1, 0, &vendor(b"GTKG", 7, 2, &port3)))
        .await;
    let (got, _) = datagram(&u3).await;
    assert_eq!(got, cb_ping(muid));

    // A second request from the same IP within the minute is not answered.
    raw3.send(&frame([9; 16], 0x31, 1, 0, &vendor(b"GTKG", 7, 2, &port3)))
        .await;
    assert!(
        n.wait_for(WAIT, |s| s.reach.refused.get("throttled") == Some(&1))
            .await,
        "{:?}",
        n.stats().reach
    );
    let mut buf = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), u3.recv_from(&mut buf))
            .await
            .is_err(),
        "throttled: no second ping"
    );
    let s = n.stats().reach;
    assert_eq!(s.answered.get("gtkg7v1"), Some(&1));
    assert_eq!(s.answered.get("gtkg7v2"), Some(&1));
    drop((raw, raw3));
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

/// Waits for one connection on `l` and reads what it says before closing.
async fn connected_back(l: &TcpListener) -> (Vec<u8>, SocketAddr) {
    let (mut s, from) = tokio::time::timeout(WAIT, l.accept())
        .await
        .expect("the node connects back")
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    (got, from)
}

#[tokio::test]
async fn bear7_lime7_and_lime8_are_answered() {
    let dir = Dir::new("reach-bear7");
    let mut n = node_at(&dir, "127.0.0.1:0", vec![]).await;
    // BEAR/7 from 127.0.0.4: a TCP connection to that address and port,
    // saying "CONNECT BACK" and a blank line, as LimeWire does.
    let l4 = TcpListener::bind("127.0.0.4:0").await.unwrap();
    let (_, raw) = dial_raw_from(Some("127.0.0.4"), n.local_addr, VENDOR_HEADERS).await;
    let mut raw = raw.expect("accepted");
    let port = l4.local_addr().unwrap().port().to_le_bytes();
    raw.send(&frame([0; 16], 0x31, 1, 0, &vendor(b"BEAR", 7, 1, &port)))
        .await;
    let (said, _) = connected_back(&l4).await;
    assert_eq!(said, b"CONNECT BACK\r\n\r\n");

    // LIME/7 from 127.0.0.5 naming its own address: connected back too. One
    // from this ultrapeer naming a host we are not linked to is done for
    // it, as LimeWire asks its ultrapeers; one naming a neighbour (127.0.0.4)
    // is refused.
    let l5 = TcpListener::bind("127.0.0.5:0").await.unwrap();
    let (_, raw5) = dial_raw_from(Some("127.0.0.5"), n.local_addr, VENDOR_HEADERS).await;
    let mut raw5 = raw5.expect("accepted");
    let l9 = TcpListener::bind("127.0.0.9:0").await.unwrap();
    let mut elsewhere = vec![127, 0, 0, 9];
    elsewhere.extend_from_slice(&l9.local_addr().unwrap().port().to_le_bytes());
    raw5.send(&frame(
        [1; 16],
        0x31,
        1,
        0,
        &vendor(b"LIME", 7, 1, &elsewhere),
    ))
    .await;
    let (said, _) = connected_back(&l9).await;
    assert_eq!(said, b"CONNECT BACK\r\n\r\n");
    let mut neighbour = vec![127, 0, 0, 4];
    neighbour.extend_from_slice(&l4.local_addr().unwrap().port().to_le_bytes());
    raw5.send(&frame(
        [3; 16],
        0x31,
        1,
        0,
        &vendor(b"LIME", 7, 1, &neighbour),
    ))
    .await;
    let mut own = vec![127, 0, 0, 5];
    own.extend_from_slice(&l5.local_addr().unwrap().port().to_le_bytes());
    raw5.send(&frame([2; 16], 0x31, 1, 0, &vendor(b"LIME", 7, 1, &own)))
        .await;
    let (said, _) = connected_back(&l5).await;
    assert_eq!(said, b"CONNECT BACK\r\n\r\n");

    // LIME/8 from 127.0.0.6: a ping with the request's MUID.
    let u6 = UdpSocket::bind("127.0.0.6:0").await.unwrap();
    let (_, raw6) = dial_raw_from(Some("127.0.0.6"), n.local_addr, VENDOR_HEADERS).await;
    let mut raw6 = raw6.expect("accepted");
    let mut body = vec![127, 0, 0, 6];
    body.extend_from_slice(&u6.local_addr().unwrap().port().to_le_bytes());
    raw6.send(&frame(
        [0x58; 16],
        0x31,
        1,
        0,
        &vendor(b"LIME", 8, 1, &body),
    ))
    .await;
    let (got, _) = datagram(&u6).await;
    assert_eq!(got, cb_ping([0x58; 16]));

    assert!(
        n.wait_for(WAIT, |s| {
            s.reach.answered.get("bear7") == Some(&1)
                && s.reach.answered.get("lime7") == Some(&1)
                && s.reach.answered.get("lime8") == Some(&1)
                && s.reach.answered.get("lime7-redirect") == Some(&1)
                && s.reach.refused.get("redirect-to-neighbour") == Some(&1)
        })
        .await,
        "{:?}",
        n.stats().reach
    );
    drop((raw, raw5, raw6));
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

/// The next vendor message of a connect-back kind on `raw`.
async fn next_connect_back(raw: &mut Raw) -> (Guid, ConnectBack) {
    let f = raw
        .until(|f| {
            f.header.function == Function::Vendor
                && VendorMsg::parse(&f.payload)
                    .ok()
                    .and_then(|m| connect_back(&m))
                    .is_some()
        })
        .await;
    let m = VendorMsg::parse(&f.payload).unwrap();
    (f.header.guid, connect_back(&m).unwrap().unwrap())
}

#[tokio::test]
async fn the_node_decides_it_is_reachable_after_connect_backs() {
    let dir = Dir::new("reach-decide");
    // An outside peer at 127.0.0.7 the node dials.
    let l = TcpListener::bind("127.0.0.7:0").await.unwrap();
    let mut n = node_at(
        &dir,
        "127.0.0.1:0",
        vec![l.local_addr().unwrap().to_string()],
    )
    .await;
    let (request, raw) = accept_raw(&l, "200 OK", VENDOR_HEADERS).await;
    let mut raw = raw.expect("linked");
    assert!(
        header(&request, "Listen-IP").is_some(),
        "not firewalled yet: {request}"
    );
    let st = n.stats().reach;
    assert_eq!((st.tcp, st.udp), (Some("unknown"), Some("unknown")));

    // It asks for both connect-backs; we answer both.
    let mut tcp_port = None;
    let mut udp_ask = None;
    while tcp_port.is_none() || udp_ask.is_none() {
        match next_connect_back(&mut raw).await {
            (_, ConnectBack::Tcp(t)) => tcp_port = Some(t.port),
            (_, ConnectBack::Udp(u)) => udp_ask = Some(u),
            other => panic!("{other:?}"),
        }
    }
    let udp_ask = udp_ask.unwrap();
    assert_eq!(tcp_port, Some(n.local_addr.port()));
    assert_eq!(udp_ask.port, n.local_addr.port());
    assert_eq!(udp_ask.guid, Some(n.guid), "v1, naming its servent GUID");

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.7:0".parse().unwrap()).unwrap();
    let mut back = sock.connect(n.local_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut back, b"\n\n")
        .await
        .unwrap();
    drop(back);
    assert!(
        n.wait_for(WAIT, |s| s.reach.tcp == Some("yes")).await,
        "{:?}",
        n.stats().reach
    );

    let u = UdpSocket::bind("127.0.0.7:0").await.unwrap();
    u.send_to(&cb_ping(udp_ask.guid.unwrap().0), n.local_addr)
        .await
        .unwrap();
    assert!(
        n.wait_for(WAIT, |s| s.reach.udp == Some("yes")
            && s.reach.solicited == Some("yes"))
            .await,
        "{:?}",
        n.stats().reach
    );
    let status = n.control().status();
    assert_eq!(
        (
            status.reach.tcp.as_str(),
            status.reach.udp.as_str(),
            status.firewalled
        ),
        ("yes", "yes", false)
    );
    drop(raw);
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

#[tokio::test]
async fn connect_backs_that_never_come_make_the_node_firewalled() {
    let dir = Dir::new("reach-firewalled");
    let l = TcpListener::bind("127.0.0.8:0").await.unwrap();
    let mut n = node_at(
        &dir,
        "127.0.0.1:0",
        vec![l.local_addr().unwrap().to_string()],
    )
    .await;
    let (_, raw) = accept_raw(&l, "200 OK", VENDOR_HEADERS).await;
    let mut raw = raw.expect("linked");
    // Asked, and never answered.
    next_connect_back(&mut raw).await;
    assert!(
        n.wait_for(WAIT, |s| s.reach.tcp == Some("no")
            && s.reach.udp == Some("no"))
            .await,
        "{:?}",
        n.stats().reach
    );
    let status = n.control().status();
    assert!(status.firewalled);
    // Our hits now ask for a Push.
    let mut q = vec![0, 0];
    q.extend_from_slice(b"reach\0");
    raw.send(&frame([4; 16], 0x80, 2, 0, &q)).await;
    let f = raw.until(|f| f.header.function == Function::QueryHit).await;
    let mut budget = 1 << 16;
    let hit = QueryHit::parse(&Bytes::from(f.payload.to_vec()), &mut budget).unwrap();
    let TrailerArea::Qhd(t) = &hit.trailer else {
        panic!("{:?}", hit.trailer)
    };
    assert_eq!(t.flags().push, Some(true));
    // A connection from elsewhere counts as a connect-back all the same.
    let (answer, raw2) = dial_raw_from(Some("127.0.0.9"), n.local_addr, PLAIN_HEADERS).await;
    assert!(raw2.is_some(), "{answer}");
    assert!(
        n.wait_for(WAIT, |s| s.reach.tcp == Some("yes")).await,
        "{:?}",
        n.stats().reach
    );
    drop((raw, raw2));
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

/// A Pong answering `ping` (a frame the node sent), telling `seen` in `IP`.
fn ip_pong(ping: &[u8], seen: SocketAddr) -> Vec<u8> {
    let mut g = [0u8; 16];
    g.copy_from_slice(&ping[..16]);
    let mut out = BytesMut::new();
    Message::Pong(Pong {
        port: 6346,
        ip: "11.0.0.1".parse().unwrap(),
        files: 0,
        kbytes: 0,
        ggep: Some(Ggep::new(vec![ip_answer(seen)])),
    })
    .encode_frame(Guid(g), Ttl(1), Hops(0), &mut out)
    .unwrap();
    out.to_vec()
}

#[tokio::test]
async fn peers_agree_on_our_address_from_ip_pongs() {
    let dir = Dir::new("reach-ip");
    // Two outside peers (no vendor messages: they get `IP` pings), each with
    // its UDP port on its TCP port.
    let la = TcpListener::bind("127.0.0.10:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.11:0").await.unwrap();
    let ua = UdpSocket::bind(la.local_addr().unwrap()).await.unwrap();
    let ub = UdpSocket::bind(lb.local_addr().unwrap()).await.unwrap();
    let mut n = node_at(
        &dir,
        "127.0.0.1:0",
        vec![
            la.local_addr().unwrap().to_string(),
            lb.local_addr().unwrap().to_string(),
        ],
    )
    .await;
    let (_, ra) = accept_raw(&la, "200 OK", PLAIN_HEADERS).await;
    let (_, rb) = accept_raw(&lb, "200 OK", PLAIN_HEADERS).await;
    let (mut ra, rb) = (ra.unwrap(), rb.unwrap());
    let seen: SocketAddr = "12.0.0.77:40000".parse().unwrap();
    let (ping, from) = datagram(&ua).await;
    assert_eq!(
        &ping[16..],
        &[0x00, 1, 0, 5, 0, 0, 0, 0xc3, 0x82, b'I', b'P', 0x40]
    );
    // One peer alone does not decide.
    ua.send_to(&ip_pong(&ping, seen), from).await.unwrap();
    assert!(
        n.wait_for(WAIT, |s| s.reach.ip_votes == 1
            && s.reach.solicited == Some("yes"))
            .await,
        "{:?}",
        n.stats().reach
    );
    assert_eq!(n.stats().reach.external, None);
    // A pong that answers nothing of ours is no vote.
    ub.send_to(&ip_pong(&[7; 16], seen), from).await.unwrap();
    let (ping_b, _) = datagram(&ub).await;
    ub.send_to(&ip_pong(&ping_b, seen), from).await.unwrap();
    assert!(
        n.wait_for(WAIT, |s| s.reach.external == Some(seen.ip()))
            .await,
        "{:?}",
        n.stats().reach
    );
    assert_eq!(n.stats().reach.ip_votes, 2);
    assert_eq!(
        n.control().status().reach.external_ip.as_deref(),
        Some("12.0.0.77")
    );
    // Our pongs now give the address peers agree on (ours is a loopback one).
    ra.send(&frame([3; 16], 0x00, 1, 0, &[])).await;
    let f = ra
        .until(|f| f.header.function == Function::Pong && f.header.guid == Guid([3; 16]))
        .await;
    let mut budget = 1 << 16;
    let pong = Pong::parse(&Bytes::from(f.payload.to_vec()), &mut budget).unwrap();
    assert_eq!(pong.ip.to_string(), "12.0.0.77");
    assert_eq!(pong.port, n.local_addr.port());
    drop(rb);
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

/// Runs `ip` with `args` (inside the test's own namespace).
fn ip_cmd(args: &str) {
    let out = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// In a network namespace of its own with only `lo` (addresses 11.0.0.x,
/// which count as the Internet), an outside host — a servent node at
/// 11.0.0.2 — answers connect-backs. A node at 11.0.0.1 is reached and
/// decides it is not firewalled; a node at 11.0.0.3, whose port a policy
/// rule makes unreachable (`ip rule ... prohibit`, the namespace's own
/// firewall, no iptables), decides it is firewalled for TCP and UDP.
#[test]
fn an_outside_host_that_can_or_cannot_reach_us() {
    const INNER: &str = "SERVENT_REACH_IN_NAMESPACE";
    if std::env::var_os(INNER).is_some() {
        return in_namespace();
    }
    let can = std::process::Command::new("unshare")
        .args(["-Urn", "ip", "link", "set", "lo", "up"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !can {
        eprintln!(
            "skipped: network namespaces are not available here (`unshare -Urn` failed); \
             the loopback tests above still decide reachability"
        );
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("timeout")
        .arg("60")
        .args(["unshare", "-Urn"])
        .arg(exe)
        .args([
            "--exact",
            "an_outside_host_that_can_or_cannot_reach_us",
            "--nocapture",
        ])
        .env(INNER, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
}

fn in_namespace() {
    ip_cmd("link set lo up");
    for a in ["11.0.0.1", "11.0.0.2", "11.0.0.3"] {
        ip_cmd(&format!("addr add {a}/32 dev lo"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = Dir::new("reach-ns");
        let helper_dir = Dir::new("reach-ns-helper");
        let helper = node_at(&helper_dir, "11.0.0.2:0", vec![]).await;
        let h = helper.local_addr.to_string();

        // Reachable: the helper's connect-backs arrive.
        let mut open = node_at(&dir, "11.0.0.1:0", vec![h.clone()]).await;
        let reached = open
            .wait_for(WAIT, |s| {
                s.reach.tcp == Some("yes") && s.reach.udp == Some("yes")
            })
            .await;
        assert!(reached, "{:?}", open.stats().reach);
        assert!(!open.control().status().firewalled);

        // Unreachable: nothing may connect or send to 11.0.0.3's port.
        let port = std::net::TcpListener::bind("11.0.0.3:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ip_cmd("rule del pref 0 lookup local");
        ip_cmd("rule add pref 100 lookup local");
        for proto in ["tcp", "udp"] {
            ip_cmd(&format!(
                "rule add to 11.0.0.3 ipproto {proto} dport {port} prohibit pref 10"
            ));
        }
        let mut walled = node_at(
            &Dir::new("reach-ns-walled"),
            &format!("11.0.0.3:{port}"),
            vec![h],
        )
        .await;
        let decided = walled
            .wait_for(WAIT, |s| {
                s.reach.tcp == Some("no") && s.reach.udp == Some("no")
            })
            .await;
        assert!(decided, "{:?}", walled.stats().reach);
        let status = walled.control().status();
        assert!(status.firewalled);
        assert_eq!(status.reach.tcp, "no");
        // It asked; the helper answered (and could not get through).
        let asked = &walled.stats().reach.asked;
        assert_eq!(
            (asked.get("bear7"), asked.get("gtkg7v1")),
            (Some(&1), Some(&1))
        );
        // The open node is still reachable.
        assert_eq!(open.stats().reach.tcp, Some("yes"));
        for n in [walled, open, helper] {
            tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
        }
    });
}

#[tokio::test]
async fn a_neighbours_connect_back_requests_are_passed_on_as_redirects() {
    let dir = Dir::new("reach-relay");
    let mut n = node_at(&dir, "127.0.0.1:0", vec![]).await;
    // A LimeWire-like ultrapeer at 127.0.0.11 lists LIME/7 and LIME/8.
    let (_, p1) = dial_raw_from(Some("127.0.0.11"), n.local_addr, VENDOR_HEADERS).await;
    let mut p1 = p1.expect("accepted");
    let mut ms = 2u16.to_le_bytes().to_vec();
    for sel in [7u16, 8] {
        ms.extend_from_slice(b"LIME");
        ms.extend_from_slice(&sel.to_le_bytes());
        ms.extend_from_slice(&1u16.to_le_bytes());
    }
    p1.send(&frame([5; 16], 0x31, 1, 0, &vendor(&[0; 4], 0, 0, &ms)))
        .await;
    assert!(
        n.wait_for(WAIT, |s| s.supported_received >= 1).await,
        "Messages-Supported taken"
    );
    // Another neighbour at 127.0.0.12 asks for both connect-backs.
    let (_, p2) = dial_raw_from(Some("127.0.0.12"), n.local_addr, VENDOR_HEADERS).await;
    let mut p2 = p2.expect("accepted");
    p2.send(&frame(
        [0; 16],
        0x31,
        1,
        0,
        &vendor(b"BEAR", 7, 1, &[0x11, 0x22]),
    ))
    .await;
    let mut v1 = vec![0x33, 0x44];
    v1.extend_from_slice(&[0xab; 16]);
    p2.send(&frame([0; 16], 0x31, 1, 0, &vendor(b"GTKG", 7, 1, &v1)))
        .await;
    // p1 is asked, by redirect, to connect back to p2 (ping MUID: p2's GUID).
    let (mut tcp, mut udp) = (false, false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(tcp && udp) {
        let (guid, cb) = tokio::time::timeout_at(deadline, next_connect_back(&mut p1))
            .await
            .expect("both redirects come");
        if let ConnectBack::Redirect(r) = cb {
            if r.addr.ip().octets() == [127, 0, 0, 12] {
                if r.udp {
                    assert_eq!(r.addr.port(), 0x4433);
                    assert_eq!(guid, Guid([0xab; 16]));
                    udp = true;
                } else {
                    assert_eq!(r.addr.port(), 0x2211);
                    tcp = true;
                }
            }
        }
    }
    let s = n.stats().reach;
    assert_eq!(s.asked.get("lime7-relay"), Some(&1), "{s:?}");
    assert_eq!(s.asked.get("lime8-relay"), Some(&1), "{s:?}");
    drop((p1, p2));
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}
