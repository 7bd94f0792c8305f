//! IPv6, as gtk-gnutella's "IPv6-Ready" specification has it: the GGEP forms
//! read from captured gtk-gnutella traffic and written back exactly, and nodes
//! on `[::1]` that link, search, download, push and take peers of both
//! families. Every wait is bounded. The node tests skip (saying so) on a
//! machine without an IPv6 loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use servent::node::{self, NodeConfig, NodeHandle, search};
use servent::wire::ggep::DEFAULT_INFLATE_BUDGET;
use servent::wire::ipv6::{self, I6};
use servent::wire::{
    Frame, Function, Ggep, GgepExt, Guid, Header, HitResult, Message, OpenDataFlags, Pong, Push,
    Query, QueryHit, Trailer, TrailerArea,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

mod common;
use common::raw::{dial_raw, header};
use common::{Dir, pattern, servent_output};

const WAIT: Duration = Duration::from_secs(20);

fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    Bytes::from(
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>(),
    )
}

/// A captured message: its header and payload.
fn frame(s: &str) -> (Header, Bytes) {
    let b = hex(s);
    let h = Header::parse(&b[..23].try_into().unwrap());
    assert_eq!(h.payload_len as usize, b.len() - 23);
    (h, b.slice(23..))
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn budget() -> usize {
    DEFAULT_INFLATE_BUDGET
}

// ---------------------------------------------------------------------------
// Captured bytes (udp-vectors/exchanges.json)
// ---------------------------------------------------------------------------

/// `uhc-scp-ipv6-flag`: gtk a3, running IPv4 and IPv6, answers SCP=0x05 with
/// its `6`.
const DUAL_STACK_PONG: &str = "36a4da4d3f00ffa282dc501d8d00a16c0101003e000000ca180b0000030200000008000000c30256434547544b47830347554541020255504302ff1c0244554228018136502a020011000000000000000000000003";
const SCP_05_PING: &str = "36a4da4d3f00ffa282dc501d8d00a16c00010007000000c3835343504105";
/// `guess-query-i6-hit-with-6`: a query with an empty `I6`, and gtk's hit with
/// `6` in its trailer.
const I6_QUERY: &str = "54d750fe6bd62461f01c4b847c66762b80010018000000a000756470627261766f00c302514b4482926ef782493640";
const HIT_WITH_6: &str = "54d750fe6bd62461f01c4b847c66762b810600bf00000001ca180b00000310000000020000000c000000756470627261766f5f74687265652e7478740075726e3a736861313a4b32434e564a5544594a464954344b4e414e4e474e464c345655554a4633584a1cc3025454580c4f23430bd8188c58559cf8a284b87fe24682c480a68cc3824354443d0c5b660047544b47022c29c30547544b475653010102030065e3bd800000000e0705a33100030136502a0200110000000000000000000000038242484056343102cbb2572c85db7e95b7f982ad";
/// `uhc-ping-over-ipv6-answered-by-gtk-leaf`: the pong gtk a2 sent over IPv6.
const PONG_OVER_IPV6: &str = "8c812202fa8659f4731e60c025b90af10101002f000000ca180b0000020100000000000000c30256434547544b4783024455423a01834950504c0b000003ca180b000001a04a";

#[test]
fn a_captured_dual_stack_pong_reads_both_addresses_and_encodes_back() {
    let (h, payload) = frame(DUAL_STACK_PONG);
    assert_eq!(h.function, Function::Pong);
    let pong = Pong::parse(&payload, &mut budget()).unwrap();
    assert_eq!(pong.ipv6(), Some(v6("2a02:11::3")));
    // IPv4 is the primary address of a host that runs both.
    assert_eq!(pong.addr(), "11.0.0.3:6346".parse().unwrap());
    assert_eq!(
        pong.addrs(),
        vec![
            "11.0.0.3:6346".parse::<SocketAddr>().unwrap(),
            "[2a02:11::3]:6346".parse().unwrap()
        ]
    );
    let mut out = BytesMut::new();
    pong.encode(&mut out).unwrap();
    assert_eq!(out.freeze(), payload, "encoded back byte for byte");
    // What it answered: SCP 0x05, "ultrapeer, and IPv6 hosts too".
    let (_, ping) = frame(SCP_05_PING);
    let (g, _) = Ggep::parse(&ping).unwrap();
    assert_eq!(
        ipv6::scp_families(&g.get("SCP").unwrap().data),
        (true, true)
    );
    // The same pong as we would write it for that host.
    let ours = Pong::for_host(
        "11.0.0.3:6346".parse().unwrap(),
        Some(v6("2a02:11::3")),
        2,
        8,
        vec![],
    );
    let mut out = BytesMut::new();
    ours.encode(&mut out).unwrap();
    assert!(
        out.ends_with(&hex("8136502a020011000000000000000000000003")),
        "the `6` as gtk writes it: {out:02x?}"
    );
}

#[test]
fn a_captured_i6_query_and_the_hit_that_names_an_ipv6_server() {
    let (_, q) = frame(I6_QUERY);
    let query = Query::parse(&q, &mut budget()).unwrap();
    assert_eq!(query.i6(), I6::Also);
    assert_eq!(query.oob_ipv6(), None, "no OOB reply address");
    let view = servent::wire::query::QueryView::parse(&q).unwrap();
    assert_eq!(view.i6(), I6::Also);

    let (h, p) = frame(HIT_WITH_6);
    assert_eq!(h.function, Function::QueryHit);
    let hit = QueryHit::parse(&p, &mut budget()).unwrap();
    assert_eq!(hit.ipv6(), Some(v6("2a02:11::3")));
    assert_eq!(hit.host(), "11.0.0.3:6346".parse().unwrap());
    assert!(hit.push_proxies().is_empty());
    let view = servent::wire::queryhit::QueryHitView::parse(&p).unwrap();
    assert_eq!(view.ipv6(), Some(v6("2a02:11::3")));
    let mut out = BytesMut::new();
    hit.encode(&mut out).unwrap();
    assert_eq!(out.freeze(), p, "encoded back byte for byte");
    // The search client shows the hit at its IPv4 address (the primary).
    let shown = search::hits_of(&hit);
    assert_eq!(shown[0].host, IpAddr::V4(Ipv4Addr::new(11, 0, 0, 3)));
}

#[test]
fn a_captured_pong_sent_over_ipv6_packs_ipv4_hosts() {
    let (_, p) = frame(PONG_OVER_IPV6);
    let pong = Pong::parse(&p, &mut budget()).unwrap();
    assert_eq!(pong.ipv6(), None);
    assert_eq!(
        pong.packed_hosts(),
        vec![
            "11.0.0.3:6346".parse::<SocketAddr>().unwrap(),
            "11.0.0.1:19104".parse().unwrap()
        ]
    );
}

// ---------------------------------------------------------------------------
// Our forms, byte by byte
// ---------------------------------------------------------------------------

#[test]
fn an_ipv6_only_host_writes_127_0_0_0_and_its_6() {
    let me: SocketAddr = "[2001:db8::5]:5400".parse().unwrap();
    let pong = Pong::for_host(me, None, 2, 8, vec![]);
    let mut out = BytesMut::new();
    pong.encode(&mut out).unwrap();
    assert_eq!(
        out.freeze(),
        hex("1815 7f000000 02000000 08000000 c3 8136 50 20010db8000000000000000000000005")
    );
    assert_eq!(pong.addr(), me);
    assert_eq!(pong.addrs(), vec![me], "no IPv4 to dial");

    let guid = Guid([0x11; 16]);
    let push = Push::to(guid, 7, me);
    let mut out = BytesMut::new();
    push.encode(&mut out).unwrap();
    let mut want = vec![0x11u8; 16];
    want.extend(hex(
        "07000000 7f000000 1815 c3 8136 50 20010db8000000000000000000000005",
    ));
    assert_eq!(&out[..], &want[..]);
    let back = Push::parse(&out.freeze(), &mut budget()).unwrap();
    assert_eq!(back.target(), me);
    // An IPv4 target is a plain Push.
    let four = Push::to(guid, 7, "198.51.100.1:6346".parse().unwrap());
    assert_eq!(four.ggep, None);
    // gtk's older name for `6` is read too.
    let old = Push {
        ggep: Some(Ggep::new(vec![GgepExt::new(
            ipv6::GGEP_GTKG_IPV6,
            Bytes::copy_from_slice(&v6("2001:db8::5").octets()),
        )])),
        ..four.clone()
    };
    assert_eq!(old.ipv6(), Some(v6("2001:db8::5")));
    assert_eq!(
        old.target().ip(),
        IpAddr::V4("198.51.100.1".parse().unwrap()),
        "dual stack: IPv4 first"
    );
}

#[test]
fn ipp6_alt6_and_push6_round_trip_in_pongs_and_hits() {
    let hosts: Vec<SocketAddr> = [
        "[2a02:11::3]:6346",
        "11.0.0.1:19104",
        "[2a02:11::4]:6348",
        "[::ffff:11.0.0.5]:6350",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    // A UHC pong with IPP and IPP6.
    let exts = ipv6::packed_exts(&hosts, "IPP", ipv6::GGEP_IPP6, true, false);
    let pong = Pong::for_host("198.51.100.1:6346".parse().unwrap(), None, 0, 0, exts);
    let mut out = BytesMut::new();
    pong.encode(&mut out).unwrap();
    let back = Pong::parse(&out.freeze(), &mut budget()).unwrap();
    let mut want = vec![hosts[1], "11.0.0.5:6350".parse().unwrap()];
    want.extend([hosts[0], hosts[2]]);
    assert_eq!(back.packed_hosts(), want);
    // The IPP6 value: 18-byte entries, port little-endian.
    let raw = ipv6::encode_packed6(&[SocketAddrV6::new(v6("2a02:11::3"), 6346, 0, 0)]);
    assert_eq!(raw, hex("2a020011000000000000000000000003 ca18"));

    // Hit results with ALT6 (their area is NUL-delimited: COBS on the wire),
    // and a trailer with PUSH6 and our `6`.
    let alts: Vec<SocketAddr> = vec![
        "[2001:db8::1]:6346".parse().unwrap(),
        "203.0.113.9:6347".parse().unwrap(),
    ];
    let results = vec![
        HitResult::new(1, 10, "one.txt", None).with_alt_locs(&alts, true),
        HitResult::new(2, 20, "two.txt", None).with_alt_locs(&alts, false),
    ];
    let proxies: Vec<SocketAddr> = vec!["[2001:db8::7]:6346".parse().unwrap()];
    let mut trailer_exts = ipv6::packed_exts(&proxies, "PUSH", ipv6::GGEP_PUSH6, true, false);
    trailer_exts.push(ipv6::ipv6_ext(v6("2001:db8::5")));
    let hit = QueryHit {
        port: 5400,
        ip: ipv6::IPV4_NONE,
        speed: 0,
        results,
        trailer: TrailerArea::Qhd(Trailer::new(
            *b"SRVT",
            OpenDataFlags {
                push: Some(true),
                ..OpenDataFlags::default()
            },
            Some(Ggep::new(trailer_exts)),
        )),
        servent: Guid([3; 16]),
    };
    let mut out = BytesMut::new();
    hit.encode(&mut out).unwrap();
    let wire = out.freeze();
    let back = QueryHit::parse(&wire, &mut budget()).unwrap();
    assert_eq!(back, hit);
    assert_eq!(
        back.results[0].alt_locs(),
        vec![alts[1], alts[0]],
        "IPv4 first"
    );
    assert_eq!(back.results[1].alt_locs(), vec![alts[1]], "no I6: no ALT6");
    assert_eq!(back.push_proxies(), proxies);
    assert_eq!(back.host(), "[2001:db8::5]:5400".parse().unwrap());
    let shown = search::hits_of(&back);
    assert_eq!(shown[0].host, IpAddr::V6(v6("2001:db8::5")));
    // Relays read it without allocating, and agree.
    let view = servent::wire::queryhit::QueryHitView::parse(&wire).unwrap();
    assert_eq!(view.len(), 2);
    assert_eq!(view.host(), back.host());
    Message::validate(Function::QueryHit, &wire).unwrap();
}

// ---------------------------------------------------------------------------
// Nodes on [::1]
// ---------------------------------------------------------------------------

fn has_ipv6() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

macro_rules! needs_ipv6 {
    () => {
        if !has_ipv6() {
            eprintln!("skipped: this machine has no IPv6 loopback ([::1])");
            return;
        }
    };
}

async fn node_on(
    listen: &str,
    share: Option<&std::path::Path>,
    peers: Vec<String>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> NodeHandle {
    let mut config = NodeConfig {
        listen: listen.parse().unwrap(),
        shares: share.map(|s| vec![s.to_path_buf()]).unwrap_or_default(),
        peers,
        handshake_timeout: Duration::from_secs(5),
        target_peers: 0,
        local_network: true,
        tier: node::TierConfig {
            mode: node::Mode::Ultrapeer,
            ..node::TierConfig::default()
        },
        ..NodeConfig::default()
    };
    tweak(&mut config);
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// Searches through `peer` until a hit with a SHA-1 comes (the file is hashed).
async fn hashed_hit(peer: SocketAddr, words: &str) -> search::SearchHit {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut hits = Vec::new();
        search::search(
            &peer.to_string(),
            words,
            3,
            Duration::from_millis(500),
            5,
            |h| hits.push(h),
        )
        .await
        .unwrap();
        if let Some(h) = hits.into_iter().find(|h| h.urn.is_some()) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "a hashed hit for {words:?} in time"
        );
    }
}

#[tokio::test]
async fn two_nodes_linked_over_ipv6_search_and_download() {
    needs_ipv6!();
    let dir = Dir::new("v6-pair");
    let share = dir.sub("a");
    let out = dir.sub("out");
    let data = pattern(300_000, 6);
    std::fs::write(share.join("sixes over loopback.bin"), &data).unwrap();
    let mut a = node_on("[::1]:0", Some(&share), vec![], |_| {}).await;
    let b = node_on("[::1]:0", None, vec![a.local_addr.to_string()], |_| {}).await;
    assert!(a.local_addr.is_ipv6());
    assert!(a.wait_for(WAIT, |s| s.connections == 1).await, "linked");
    // Through b: the hit names a at its IPv6 address (127.0.0.0 and `6`).
    let h = hashed_hit(b.local_addr, "sixes loopback").await;
    assert_eq!(h.host, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(h.port, a.local_addr.port());
    // The hit as it came: the IPv4 field says "IPv6 only".
    let link = search::LeafLink::connect(&b.local_addr.to_string(), WAIT)
        .await
        .unwrap();
    let mut raw_hits = Vec::new();
    link.query("sixes", 3, Duration::from_millis(1500), 5, |h| {
        raw_hits.push(h)
    })
    .await
    .unwrap();
    link.close().await;
    assert_eq!(raw_hits.len(), 1);
    // Download it from the hit, by the command line, over IPv6.
    let b_addr = b.local_addr.to_string();
    let o = servent_output(
        &["get", "--json", "--peer", &b_addr, "sixes", "loopback"],
        &out,
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("sixes over loopback.bin")).unwrap(),
        data
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn get_fetches_a_bracketed_ipv6_url_and_a_magnet_with_one() {
    needs_ipv6!();
    let dir = Dir::new("v6-url");
    let share = dir.sub("s");
    let out = dir.sub("out");
    let data = pattern(200_000, 9);
    std::fs::write(share.join("url six.dat"), &data).unwrap();
    let n = node_on("[::1]:0", Some(&share), vec![], |_| {}).await;
    let h = hashed_hit(n.local_addr, "url six").await;
    let urn = h.urn.unwrap();
    let url = format!("http://[::1]:{}/uri-res/N2R?{urn}", n.local_addr.port());
    let o = servent_output(&["get", "-o", "by-url.dat", &url], &out).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("by-url.dat")).unwrap(), data);
    let magnet = format!(
        "magnet:?xt={urn}&dn=m.dat&xs=http%3A%2F%2F%5B%3A%3A1%5D%3A{}%2Furi-res%2FN2R%3F{urn}",
        n.local_addr.port()
    );
    let o = servent_output(&["get", "-o", "by-magnet.dat", &magnet], &out).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("by-magnet.dat")).unwrap(), data);
    n.shutdown().await;
}

#[tokio::test]
async fn a_dual_stack_node_takes_an_ipv4_and_an_ipv6_peer() {
    needs_ipv6!();
    let dir = Dir::new("v6-dual");
    let share = dir.sub("s");
    std::fs::write(share.join("dual stacked.txt"), b"both families").unwrap();
    for wildcard in ["[::]:0", "0.0.0.0:0"] {
        let mut hub = node_on(wildcard, Some(&share), vec![], |_| {}).await;
        let port = hub.local_addr.port();
        let four = node_on(
            "127.0.0.1:0",
            None,
            vec![format!("127.0.0.1:{port}")],
            |_| {},
        )
        .await;
        let six = node_on("[::1]:0", None, vec![format!("[::1]:{port}")], |_| {}).await;
        assert!(
            hub.wait_for(WAIT, |s| s.connections == 2).await,
            "{wildcard}: both linked"
        );
        // The IPv4 peer is seen as IPv4, not as an IPv4-mapped IPv6 address.
        let peers = hub.control().peers();
        let mut remotes: Vec<IpAddr> = peers
            .iter()
            .map(|p| p.addr.parse::<SocketAddr>().unwrap().ip())
            .collect();
        remotes.sort();
        assert_eq!(
            remotes,
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            ],
            "{wildcard}"
        );
        // A query by either family gets a hit naming the hub's IPv4 address
        // (its primary) and its IPv6 one (`6`): it knows both from its links.
        let _ = hashed_hit(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            "dual stacked",
        )
        .await;
        for (i, to) in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
        .into_iter()
        .enumerate()
        {
            let (answer, raw) = dial_raw(
                SocketAddr::new(to, port),
                "User-Agent: t\r\nX-Ultrapeer: False\r\n",
            )
            .await;
            let mut raw = raw.unwrap_or_else(|| panic!("{answer}"));
            let q = Query::new(servent::wire::QueryFlags::with_bits(0), "dual stacked");
            raw.send_msg(Guid([9 + i as u8; 16]), 2, 0, &Message::Query(q))
                .await;
            let f = raw.until(|f| f.header.function == Function::QueryHit).await;
            let Ok(Message::QueryHit(hit)) = f.message() else {
                panic!("a hit")
            };
            assert_eq!(hit.ip, Ipv4Addr::LOCALHOST, "{wildcard} via {to}");
            assert_eq!(hit.ipv6(), Some(Ipv6Addr::LOCALHOST), "{wildcard} via {to}");
            assert_eq!(hit.port, port);
        }
        // The hub says it is IPv6-Ready, with both families.
        let (answer, _) = dial_raw(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            "User-Agent: t\r\n",
        )
        .await;
        let features = header(&answer, "X-Features").unwrap_or_default();
        assert!(features.ends_with(", IP/6.0"), "{answer}");
        assert_eq!(answer.matches("X-Features").count(), 1, "one line");
        six.shutdown().await;
        four.shutdown().await;
        hub.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_on_ipv6_answers_pings_and_queries_with_6() {
    needs_ipv6!();
    let dir = Dir::new("v6-raw");
    let share = dir.sub("s");
    std::fs::write(share.join("raw six.txt"), b"answered").unwrap();
    let n = node_on("[::1]:0", Some(&share), vec![], |_| {}).await;
    let _ = hashed_hit(n.local_addr, "raw six").await;
    let (answer, raw) = dial_raw(
        n.local_addr,
        "User-Agent: t\r\nX-Ultrapeer: False\r\nX-Features: IP/6.0\r\n",
    )
    .await;
    let mut raw = raw.unwrap_or_else(|| panic!("{answer}"));
    let features = header(&answer, "X-Features").unwrap_or_default();
    assert!(features.ends_with(", IP/6.4"), "IPv6 only: {answer}");
    assert_eq!(
        header(&answer, "Listen-IP"),
        Some(format!("[::1]:{}", n.local_addr.port()).as_str())
    );
    let ping = Message::Ping(servent::wire::Ping { ggep: None });
    raw.send_msg(Guid([5; 16]), 1, 0, &ping).await;
    let f: Frame = raw.until(|f| f.header.function == Function::Pong).await;
    let Ok(Message::Pong(p)) = f.message() else {
        panic!("a pong")
    };
    assert_eq!(p.ip, ipv6::IPV4_NONE);
    assert_eq!(p.ipv6(), Some(Ipv6Addr::LOCALHOST));
    assert_eq!(p.addr(), n.local_addr);
    // A query with I6 gets a hit naming us by `6`.
    let mut q = Query::new(servent::wire::QueryFlags::with_bits(0), "raw six");
    q.ext
        .items
        .push(servent::wire::ExtItem::Ggep(Ggep::new(vec![
            I6::Also.ext().unwrap(),
        ])));
    raw.send_msg(Guid([6; 16]), 2, 0, &Message::Query(q)).await;
    let f = raw.until(|f| f.header.function == Function::QueryHit).await;
    let Ok(Message::QueryHit(hit)) = f.message() else {
        panic!("a hit")
    };
    assert_eq!(hit.ip, ipv6::IPV4_NONE);
    assert_eq!(hit.host(), n.local_addr);
    n.shutdown().await;
}

#[tokio::test]
async fn a_push_over_ipv6_reaches_a_firewalled_node() {
    needs_ipv6!();
    let dir = Dir::new("v6-push");
    let hub_share = dir.sub("hub");
    let fw_share = dir.sub("fw");
    let out = dir.sub("out");
    let data = pattern(250_000, 3);
    std::fs::write(fw_share.join("pushed six.dat"), &data).unwrap();
    let mut hub = node_on("[::1]:0", Some(&hub_share), vec![], |_| {}).await;
    let fw = node_on(
        "[::1]:0",
        Some(&fw_share),
        vec![hub.local_addr.to_string()],
        |c| {
            c.firewalled = true;
            c.tier.mode = node::Mode::Leaf;
        },
    )
    .await;
    assert!(hub.wait_for(WAIT, |s| s.connections == 1).await, "linked");
    let h = hashed_hit(hub.local_addr, "pushed six").await;
    assert!(h.push, "the firewalled node asks for a push");
    let hub_addr = hub.local_addr.to_string();
    let o = servent_output(
        &["get", "--json", "--peer", &hub_addr, "pushed", "six"],
        &out,
    )
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(out.join("pushed six.dat")).unwrap(), data);
    fw.shutdown().await;
    hub.shutdown().await;
}

/// An HTTP answer's headers from a node, for `X-Alt` checks.
async fn head(addr: SocketAddr, target: &str, extra: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("HEAD {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0);
        got.extend_from_slice(&buf[..k]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn x_alt_gives_ipv6_locations_only_to_those_who_read_them() {
    needs_ipv6!();
    let dir = Dir::new("v6-alt");
    let share = dir.sub("s");
    std::fs::write(share.join("alt six.txt"), b"alternate locations").unwrap();
    let n = node_on("[::1]:0", Some(&share), vec![], |_| {}).await;
    let h = hashed_hit(n.local_addr, "alt six").await;
    let target = format!("/uri-res/N2R?{}", h.urn.unwrap());
    // A downloader tells of two other sources, one on IPv6.
    let told = head(
        n.local_addr,
        &target,
        "X-Alt: [2001:db8::1]:6346, 203.0.113.9:6347\r\nX-Features: IP/6.0\r\n",
    )
    .await;
    assert!(told.starts_with("HTTP/1.1 200"), "{told}");
    let v6_reader = head(n.local_addr, &target, "X-Features: IP/6.0\r\n").await;
    let alt = |a: &str| {
        a.lines()
            .find_map(|l| l.strip_prefix("X-Alt: ").map(str::to_string))
            .unwrap_or_default()
    };
    let mut got = servent::wire::http::parse_x_alt(&alt(&v6_reader), 10);
    got.sort();
    let mut want: Vec<SocketAddr> = vec![
        "[2001:db8::1]:6346".parse().unwrap(),
        "203.0.113.9:6347".parse().unwrap(),
    ];
    want.sort();
    assert_eq!(got, want, "{v6_reader}");
    assert!(alt(&v6_reader).contains("[2001:db8::1]:6346"), "bracketed");
    let legacy = head(n.local_addr, &target, "").await;
    assert_eq!(alt(&legacy), "203.0.113.9:6347", "{legacy}");
    n.shutdown().await;
}

#[tokio::test]
async fn one_servent_reached_by_both_families_is_linked_once() {
    needs_ipv6!();
    let mut hub = node_on("[::]:0", None, vec![], |_| {}).await;
    let port = hub.local_addr.port();
    // One node told of the hub's IPv4 and IPv6 addresses dials both.
    let mut both = node_on(
        "127.0.0.1:0",
        None,
        vec![format!("127.0.0.1:{port}"), format!("[::1]:{port}")],
        |_| {},
    )
    .await;
    assert!(hub.wait_for(WAIT, |s| s.connections == 1).await, "linked");
    assert!(both.wait_for(WAIT, |s| s.connections == 1).await);
    // The second handshake was refused by GUID (409), whichever came second.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.stats().connections, 1);
    assert_eq!(both.stats().connections, 1);
    // A raw peer naming the hub's own GUID is refused the same way.
    let (answer, raw) = dial_raw(
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
        &format!("User-Agent: t\r\nGUID: {}\r\n", hub.guid.to_hex()),
    )
    .await;
    assert!(
        raw.is_none() && answer.starts_with("GNUTELLA/0.6 409"),
        "{answer}"
    );
    both.shutdown().await;
    hub.shutdown().await;
}

#[tokio::test]
async fn a_push_by_udp_over_ipv6_is_answered_at_its_6_address() {
    needs_ipv6!();
    let dir = Dir::new("v6-udp-push");
    let share = dir.sub("s");
    std::fs::write(share.join("udp six.txt"), b"pushed by datagram").unwrap();
    for wildcard in ["[::]:0", "0.0.0.0:0"] {
        let mut n = node_on(wildcard, Some(&share), vec![], |_| {}).await;
        let port = n.local_addr.port();
        let giv = tokio::net::TcpListener::bind("[::1]:0").await.unwrap();
        let to = giv.local_addr().unwrap();
        let mut out = BytesMut::new();
        // 127.0.0.0 and `6`: push to an IPv6 host.
        Message::Push(Push::to(n.guid, 0, to))
            .encode_frame(
                Guid::new_random(),
                servent::wire::Ttl(1),
                servent::wire::Hops(0),
                &mut out,
            )
            .unwrap();
        let s = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
        s.send_to(&out, SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port))
            .await
            .unwrap();
        let (mut c, from) = tokio::time::timeout(WAIT, giv.accept())
            .await
            .expect("the node connects back over IPv6")
            .unwrap();
        assert!(from.is_ipv6());
        let mut line = vec![0u8; 64];
        let got = tokio::time::timeout(WAIT, c.read(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert!(line[..got].starts_with(b"GIV "), "{wildcard}");
        // An IPv4 datagram reaches the same port, and counts as IPv4.
        let s4 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s4.send_to(
            &out[..10],
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        )
        .await
        .unwrap();
        assert!(
            n.wait_for(WAIT, |st| st.udp.received >= 2).await,
            "{wildcard}: both datagrams read"
        );
        n.shutdown().await;
    }
}
