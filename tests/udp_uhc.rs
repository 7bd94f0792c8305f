//! UDP host caches: our ping and pong bytes against the constructed vectors
//! of udp-facts, the captured gtk-gnutella and LimeWire pings and pongs read,
//! the core answering pings (packed hosts, address echo, deflate, one answer
//! per minute per address, budgets) and taking answers to its own pings
//! only; and a node that joins from a host cache alone, over loopback.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use common::Dir;
use servent::core::ConnId;
use servent::core::engine::{CacheMode, Config, Engine, Event, Links};
use servent::core::flow::{Offer, Priority};
use servent::core::library::Library;
use servent::core::tier::{Mode as TierMode, Tier, TierConfig};
use servent::core::uhc::UhcConfig;
use servent::node::{self, Mode, NodeConfig, NodeHandle};
use servent::wire::uhc::{self, PingAsks, PongExtras, UhcPing};
use servent::wire::{Frame, Function, Guid, Hops, Message, Ping, Pong, Push, Ttl, udp};
use tokio_util::sync::CancellationToken;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The MUID of every constructed vector.
const MUID: &str = "0123456789abcdefff00112233445500";

fn muid() -> Guid {
    Guid(hex(MUID).try_into().unwrap())
}

fn frame_bytes(msg: &Message, ttl: u8) -> Vec<u8> {
    let mut out = BytesMut::new();
    msg.encode_frame(muid(), Ttl(ttl), Hops(0), &mut out)
        .unwrap();
    out.to_vec()
}

fn a4(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn read(bytes: &[u8]) -> udp::Datagram {
    udp::parse(Bytes::copy_from_slice(bytes)).unwrap()
}

fn pong_of(d: &udp::Datagram) -> Pong {
    assert_eq!(d.frame.header.function, Function::Pong);
    Pong::parse(&d.frame.payload, &mut (1 << 18)).unwrap()
}

fn ping_of(d: &udp::Datagram) -> Ping {
    assert_eq!(d.frame.header.function, Function::Ping);
    Ping::parse(&d.frame.payload, &mut (1 << 18)).unwrap()
}

// ---- golden bytes (udp-facts 12, constructed.json) ----

#[test]
fn our_uhc_ping_is_the_constructed_leaf_ping() {
    let ping = UhcPing {
        scp: 0x00,
        vendor: Some((*b"SRVT", 0x10)),
        ip: false,
    }
    .ping();
    let want = hex(
        "0123456789abcdefff00112233445500 00 01 00 10000000 c3 03534350 41 00 82 5643 45 5352565410",
    );
    assert_eq!(frame_bytes(&Message::Ping(ping), 1), want);
    // The ultrapeer's differs in the SCP flag only.
    let up = UhcPing {
        scp: uhc::SCP_ULTRAPEER,
        vendor: Some((*b"SRVT", 0x10)),
        ip: false,
    };
    let mut want_up = want.clone();
    want_up[23 + 6] = 0x01;
    assert_eq!(frame_bytes(&Message::Ping(up.ping()), 1), want_up);
}

#[test]
fn our_uhc_pong_is_the_constructed_one() {
    let x = PongExtras {
        ipp: vec![a4("203.0.113.5:6346"), a4("203.0.113.6:6347")],
        udphc: Some(String::new()),
        uptime: Some(3600),
        ..PongExtras::default()
    };
    let pong = x.pong(a4("198.51.100.1:6346"), 0, 0);
    let want = hex(
        "0123456789abcdefff00112233445500 01 01 00 2d000000 ca18 c6336401 00000000 00000000
         c3 03495050 4c cb007105ca18 cb007106cb18 05 5544504843 40 82 4455 42 100e",
    );
    assert_eq!(frame_bytes(&Message::Pong(pong), 1), want);
    // And read back.
    assert_eq!(PongExtras::of(&pong_of(&read(&want))), x);
}

#[test]
fn our_ip_ping_and_pong_are_the_constructed_ones() {
    let ping_want = hex("0123456789abcdefff00112233445500 00 01 00 05000000 c3 82 4950 40");
    let asks = PingAsks::of(&ping_of(&read(&ping_want)));
    assert!(asks.ip && asks.scp.is_none());
    let x = PongExtras {
        ip: Some(a4("203.0.113.77:40000")),
        ..PongExtras::default()
    };
    let pong = x.pong(a4("198.51.100.1:6346"), 0, 8);
    let want = hex(
        "0123456789abcdefff00112233445500 01 01 00 19000000 ca18 c6336401 00000000 08000000
         c3 82 4950 46 cb00714d409c",
    );
    assert_eq!(frame_bytes(&Message::Pong(pong), 1), want);
}

#[test]
fn our_deflated_pong_inflates_to_the_constructed_one() {
    let want = hex(
        "0123456789abcdefff0011223344550001810051000000789c1dc4b90d80301000419bd7bce60bdc075590
         b9081a2023459486447034c56957da91f0aebb359ad39f7b8bf13a3f7358096a822966986381253aacb0c6
         065becb0478f038e38e18c8b841ffa27309b",
    );
    let theirs = read(&want);
    assert!(theirs.was_deflated);
    let x = PongExtras {
        ipp: (1..=20)
            .map(|i| SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, i), 6346))
            .collect(),
        ..PongExtras::default()
    };
    let plain = frame_bytes(&Message::Pong(x.pong(a4("198.51.100.1:6346"), 0, 8)), 1);
    assert_eq!(plain.len(), 23 + 141);
    let frame = Frame {
        header: servent::wire::Header::parse_prefix(&plain).unwrap(),
        payload: Bytes::copy_from_slice(&plain[23..]),
    };
    assert_eq!(theirs.frame, frame, "the vector inflates to our pong");
    let ours = udp::encode(&frame, true);
    assert_eq!(ours[17], 0x81, "TTL 1 with the deflated bit");
    assert!(ours.len() < plain.len());
    assert_eq!(read(&ours).frame, frame);
    // Whether the zlib bytes are the same depends on the deflate library;
    // the length is the same at the default level.
    assert_eq!(ours.len(), want.len());
}

// ---- captured pings and pongs (udp-vectors/EXCHANGES.txt) ----

#[test]
fn captured_pings_say_what_they_ask() {
    // gtk ultrapeer: SCP 01, VC GTKG 0x83, DHTIPP.
    let gtk = hex(
        "2a06310217c83b72b1db54a8a5dd29e400010018000000c30353435041010256434547544b4783864448
         5449505040",
    );
    let a = PingAsks::of(&ping_of(&read(&gtk)));
    assert_eq!(a.scp, Some(0x01));
    assert_eq!(a.vendor, Some((*b"GTKG", 0x83)));
    assert!(a.from_ultrapeer() && !a.ip && !a.udphc);
    // LimeWire: SCP 01, UDPHC, and a NUL after the GGEP block.
    let lw = hex("117876d516932a7f36c3e51bb8dc7e000001000f000000c30353435041018555445048434000");
    let a = PingAsks::of(&ping_of(&read(&lw)));
    assert_eq!(a.scp, Some(0x01));
    assert!(a.udphc);
    // gtk leaf: SCP 00.
    let leaf = hex(
        "682f3102aba1303d1a9ff666fb6ae94300010018000000c30353435041000256434547544b47838644485449505040",
    );
    let a = PingAsks::of(&ping_of(&read(&leaf)));
    assert_eq!(a.scp, Some(0));
    assert!(!a.from_ultrapeer() && a.wants_ipv4_hosts());
    // An empty SCP over IPv6 ("any host").
    let any = hex("8c812202fa8659f4731e60c025b90af100010006000000c38353435040");
    assert_eq!(PingAsks::of(&ping_of(&read(&any))).scp, Some(0));
}

#[test]
fn captured_pongs_give_their_hosts() {
    // LimeWire ultrapeer: DHT, DU, IPP of two, LOC, UP.
    let lw = hex(
        "28115cf6a17f76cb6d13c799f935baf40101003d000000ce180b0000050400000000020000c303444854
         43000000024455424b01034950504c0b000003ca180b000001a04a034c4f4343656e008255504300261d",
    );
    let p = pong_of(&read(&lw));
    assert_eq!((p.port, p.ip), (6350, Ipv4Addr::new(11, 0, 0, 5)));
    let x = PongExtras::of(&p);
    assert_eq!(x.ipp, [a4("11.0.0.3:6346"), a4("11.0.0.1:19104")]);
    assert_eq!(x.uptime, Some(331));
    assert_eq!(x.up, Some([0, 38, 29]));
    // gtk ultrapeer: no IPP, VC, GUE, UP, DU.
    let gtk = hex(
        "4a0b31029147264e479af9c885172aac0101002a000000a04a0b0000010100000008000000c302564345
         47544b47830347554541020255504302ff1e824455410b",
    );
    let x = PongExtras::of(&pong_of(&read(&gtk)));
    assert!(x.ipp.is_empty());
    assert_eq!(x.vendor, Some((*b"GTKG", 0x83)));
    assert_eq!(x.up, Some([2, 255, 30]));
    assert_eq!(x.uptime, Some(11));
    // The stub pong gtk accepted: IPP, PHC (features dropped), UDPHC, VC, DU.
    let stub = hex(
        "682f3102aba1303d1a9ff666fb6ae94301010061000000e60d0b0000090000000000000000c303495050
         4c0b000001a04a0b000003ca18035048436631312e302e302e393a333535380a7568632e6578616d706c
         652e6e65743a3438373626783d310555445048434002564345544553540182445542100e",
    );
    let x = PongExtras::of(&pong_of(&read(&stub)));
    assert_eq!(x.ipp, [a4("11.0.0.1:19104"), a4("11.0.0.3:6346")]);
    assert_eq!(x.phc, ["11.0.0.9:3558", "uhc.example.net:4876"]);
    assert_eq!(x.udphc.as_deref(), Some(""));
    assert_eq!(x.vendor, Some((*b"TEST", 1)));
    // gtk and LimeWire echoing the asker's address (11.0.0.8:7001, 11.0.0.20:7001).
    let gtk_ip = hex(
        "dd757cec16ab739eff8b8b1b1e3102a001010034000000a04a0b0000010100000008000000c302564345
         47544b47830347554541020255504302ff1c02445541fc824950460b000008591b",
    );
    assert_eq!(
        PongExtras::of(&pong_of(&read(&gtk_ip))).ip,
        Some(a4("11.0.0.8:7001"))
    );
    let lw_ip = hex(
        "911abdc8d77d432b8229995276971d6201010036000000ce180b0000050400000000020000c303444854
         4300000002445542d601024950460b000014591b034c4f4343656e008255504300261d",
    );
    assert_eq!(
        PongExtras::of(&pong_of(&read(&lw_ip))).ip,
        Some(a4("11.0.0.20:7001"))
    );
    // A leaf's answer over IPv6: IPP of its two ultrapeers.
    let v6 = hex(
        "8c812202fa8659f4731e60c025b90af10101002f000000ca180b0000020100000000000000c302564345
         47544b4783024455423a01834950504c0b000003ca180b000001a04a",
    );
    assert_eq!(PongExtras::of(&pong_of(&read(&v6))).ipp.len(), 2);
}

// ---- the core, driven by hand ----

/// Datagrams the core sent, in order.
#[derive(Default)]
struct Sent(Vec<(SocketAddr, Bytes)>);

impl Links for Sent {
    fn send(&mut self, _: ConnId, _: Priority, _: Bytes) -> Offer {
        Offer::Queued
    }
    fn close(&mut self, _: ConnId, _: u16, _: &str) {}
    fn close_silently(&mut self, _: ConnId) {}
    fn push(&mut self, _: Push) {}
    fn connect_back(&mut self, _: SocketAddr) {}
    fn uploads_busy(&self) -> bool {
        false
    }
    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) -> bool {
        self.0.push((to, bytes));
        true
    }
}

const ME: &str = "198.51.100.1:6346";

fn core(mode: TierMode) -> (Engine<Sent>, Instant) {
    let t0 = Instant::now();
    let tier = Tier::new(
        TierConfig {
            mode,
            ..TierConfig::default()
        },
        t0,
        0.5,
    );
    let mut e = Engine::new(
        Config::new(Guid([0x4d; 16]), Library::new(), tier),
        Sent::default(),
    );
    e.set_udp_address(a4(ME));
    (e, t0)
}

fn dg(e: &mut Engine<Sent>, from: &str, bytes: Vec<u8>, now: Instant) {
    e.handle(
        Event::Datagram {
            from: from.parse().unwrap(),
            bytes: Bytes::from(bytes),
        },
        now,
    );
}

fn uhc_ping(scp: Option<u8>, ip: bool, ttl: u8, hops: u8) -> Vec<u8> {
    let mut exts = Vec::new();
    if let Some(f) = scp {
        exts.push(servent::wire::GgepExt::new("SCP", vec![f]));
    }
    if ip {
        exts.push(servent::wire::GgepExt::flag("IP"));
    }
    let ping = Ping {
        ggep: (!exts.is_empty()).then(|| servent::wire::Ggep::new(exts)),
    };
    let mut out = BytesMut::new();
    Message::Ping(ping)
        .encode_frame(Guid::new_random(), Ttl(ttl), Hops(hops), &mut out)
        .unwrap();
    out.to_vec()
}

fn sent(e: &mut Engine<Sent>) -> Vec<(SocketAddr, udp::Datagram)> {
    e.links_mut()
        .0
        .drain(..)
        .map(|(to, b)| (to, udp::parse(b).unwrap()))
        .collect()
}

fn learn_ultrapeers(e: &mut Engine<Sent>, n: u32) {
    for i in 0..n {
        let a = SocketAddr::from((Ipv4Addr::from(0x0b00_0100 + i), 6346));
        e.hosts_mut().mark_ultrapeer(a, true, SystemTime::now());
    }
}

#[test]
fn an_scp_ping_gets_our_pong_with_packed_hosts_but_never_the_askers_own() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    learn_ultrapeers(&mut e, 40);
    // One whose dial failed is not handed out.
    let dead = e.hosts_mut().next_to_dial(t0).unwrap();
    e.hosts_mut().dialed(dead, false, t0);
    // The asker's own address is in our cache too (and another host on its
    // IP, which may be handed out).
    e.hosts_mut()
        .mark_ultrapeer("11.0.0.200:6346".parse().unwrap(), true, SystemTime::now());
    e.hosts_mut()
        .mark_ultrapeer("11.0.0.200:6347".parse().unwrap(), true, SystemTime::now());
    let ping = uhc_ping(Some(0), false, 1, 0);
    let id = Guid::from_slice(&ping[..16]).unwrap();
    dg(&mut e, "11.0.0.200:6346", ping, t0);
    let out = sent(&mut e);
    assert_eq!(out.len(), 1);
    let (to, d) = &out[0];
    assert_eq!(to.to_string(), "11.0.0.200:6346");
    let h = d.frame.header;
    assert_eq!((h.guid, h.ttl, h.hops), (id, Ttl(1), Hops(0)));
    let p = pong_of(d);
    assert_eq!(SocketAddrV4::new(p.ip, p.port), a4(ME));
    let x = PongExtras::of(&p);
    assert_eq!(x.ipp.len(), uhc::MAX_IPP);
    assert!(!x.ipp.contains(&a4("11.0.0.200:6346")));
    assert!(x.ipp.iter().all(|h| SocketAddr::V4(*h) != dead));
    assert!(x.ipp.contains(&a4("11.0.0.200:6347")), "the freshest");
    assert_eq!(x.vendor.map(|v| v.0), Some(*b"SRVT"));
    assert!(
        x.uptime.is_some() && x.up.is_some(),
        "DU, and UP as an ultrapeer"
    );
    assert_eq!(
        x.udphc.as_deref(),
        Some(""),
        "a reachable ultrapeer is a cache"
    );
    assert_eq!(x.ip, None, "not asked");
    assert_eq!(e.stats().uhc.packed, uhc::MAX_IPP as u64);
}

#[test]
fn a_plain_ping_gets_our_pong_alone_and_a_leaf_says_no_udphc() {
    let (mut e, t0) = core(TierMode::Leaf);
    learn_ultrapeers(&mut e, 5);
    dg(&mut e, "11.0.0.7:6346", uhc_ping(None, false, 1, 0), t0);
    let x = PongExtras::of(&pong_of(&sent(&mut e)[0].1));
    assert!(x.ipp.is_empty() && x.udphc.is_none() && x.up.is_none());
    // Asked to always say it, it does.
    e.set_udp_host_caches(Vec::new(), UhcConfig::default(), CacheMode::Always);
    dg(&mut e, "11.0.0.8:6346", uhc_ping(Some(1), false, 1, 0), t0);
    let x = PongExtras::of(&pong_of(&sent(&mut e)[0].1));
    assert_eq!(x.ipp.len(), 5);
    assert_eq!(x.udphc.as_deref(), Some(""));
    // A ping that wants IPv6 hosts only gets no IPv4 ones.
    dg(
        &mut e,
        "11.0.0.9:6346",
        uhc_ping(Some(uhc::SCP_NO_IPV4), false, 1, 0),
        t0,
    );
    assert!(PongExtras::of(&pong_of(&sent(&mut e)[0].1)).ipp.is_empty());
}

#[test]
fn the_address_is_echoed_only_to_a_direct_request() {
    let (mut e, t0) = core(TierMode::Leaf);
    dg(&mut e, "203.0.113.77:40000", uhc_ping(None, true, 1, 0), t0);
    let x = PongExtras::of(&pong_of(&sent(&mut e)[0].1));
    assert_eq!(x.ip, Some(a4("203.0.113.77:40000")));
    // Relayed once: no echo (gtk's rule), but still a pong.
    dg(&mut e, "203.0.113.78:40000", uhc_ping(None, true, 1, 1), t0);
    let x = PongExtras::of(&pong_of(&sent(&mut e)[0].1));
    assert_eq!(x.ip, None);
    // The "may deflate" TTL 9 is still a direct request.
    dg(&mut e, "203.0.113.79:40000", uhc_ping(None, true, 9, 0), t0);
    let x = PongExtras::of(&pong_of(&sent(&mut e)[0].1));
    assert_eq!(x.ip, Some(a4("203.0.113.79:40000")));
    assert_eq!(e.stats().uhc.echoed, 2);
}

#[test]
fn a_ping_that_allows_it_gets_a_deflated_pong() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    learn_ultrapeers(&mut e, 30);
    dg(&mut e, "11.0.0.7:6346", uhc_ping(Some(0), false, 9, 0), t0);
    let out = sent(&mut e);
    let (_, d) = &out[0];
    assert!(d.was_deflated, "TTL 9 asked for it, 30 hosts shrink");
    assert_eq!(PongExtras::of(&pong_of(d)).ipp.len(), 30);
    // Without TTL 9, plain.
    dg(&mut e, "11.0.0.8:6346", uhc_ping(Some(0), false, 1, 0), t0);
    assert!(!sent(&mut e)[0].1.was_deflated);
}

#[test]
fn limewires_ping_with_its_trailing_nul_is_answered() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    learn_ultrapeers(&mut e, 3);
    let lw = hex("117876d516932a7f36c3e51bb8dc7e000001000f000000c30353435041018555445048434000");
    dg(&mut e, "11.0.0.5:6350", lw, t0);
    let out = sent(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(PongExtras::of(&pong_of(&out[0].1)).ipp.len(), 3);
}

#[test]
fn one_answer_per_minute_per_address_and_a_flood_is_bounded() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    let s = Duration::from_secs(1);
    for _ in 0..3 {
        dg(&mut e, "11.0.0.7:6346", uhc_ping(Some(0), false, 1, 0), t0);
    }
    dg(&mut e, "11.0.0.8:6346", uhc_ping(Some(0), false, 1, 0), t0);
    assert_eq!(sent(&mut e).len(), 2, "one for each address");
    assert_eq!(e.stats().udp.dropped("ping-throttled"), 2);
    dg(
        &mut e,
        "11.0.0.7:6346",
        uhc_ping(Some(0), false, 1, 0),
        t0 + 59 * s,
    );
    assert!(sent(&mut e).is_empty());
    // On a local mesh nodes share an address: each port is a node.
    dg(
        &mut e,
        "11.0.0.7:6347",
        uhc_ping(Some(0), false, 1, 0),
        t0 + 59 * s,
    );
    assert_eq!(sent(&mut e).len(), 1);
    dg(
        &mut e,
        "11.0.0.7:6346",
        uhc_ping(Some(0), false, 1, 0),
        t0 + 60 * s,
    );
    assert_eq!(sent(&mut e).len(), 1, "a minute later");
    // A flood from one address: past the ping budget it is not even read.
    for _ in 0..1000 {
        dg(
            &mut e,
            "11.0.0.9:6346",
            uhc_ping(Some(0), false, 1, 0),
            t0 + 61 * s,
        );
    }
    assert_eq!(sent(&mut e).len(), 1);
    let st = e.stats();
    assert!(st.udp.dropped("over-budget") >= 990, "{:?}", st.udp);
    // Many addresses: each answered once, the throttle's memory bounded.
    for i in 0..10_000u32 {
        let from = SocketAddr::from((Ipv4Addr::from(0x0c00_0000 + i), 6346));
        e.handle(
            Event::Datagram {
                from,
                bytes: Bytes::from(uhc_ping(None, false, 1, 0)),
            },
            t0 + 62 * s,
        );
    }
    // Sources past the 4,096 remembered share one small budget.
    let n = sent(&mut e).len();
    assert!((4090..=4096 + 10).contains(&n), "{n}");
}

#[test]
fn on_the_internet_the_minute_is_per_address_whatever_the_port() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    e.hosts_mut()
        .set_scope(servent::core::addr::Scope::Internet);
    dg(&mut e, "8.8.8.8:6346", uhc_ping(Some(0), false, 1, 0), t0);
    dg(&mut e, "8.8.8.8:6347", uhc_ping(Some(0), false, 1, 0), t0);
    dg(&mut e, "8.8.4.4:6347", uhc_ping(Some(0), false, 1, 0), t0);
    assert_eq!(sent(&mut e).len(), 2);
    // Nor are two caches on one address pinged within the minute.
    e.set_udp_host_caches(
        vec!["a.test:1".into(), "b.test:2".into()],
        UhcConfig::default(),
        CacheMode::Auto,
    );
    let r = e.uhc_round(t0, true);
    assert_eq!(r.ping.len(), 2);
    assert_eq!(
        e.uhc_ping("a.test:1", &["9.9.9.9:1".parse().unwrap()], t0),
        1
    );
    assert_eq!(
        e.uhc_ping("b.test:2", &["9.9.9.9:2".parse().unwrap()], t0),
        0
    );
    // And a learned cache at a private address is not pinged at all.
    assert_eq!(
        e.uhc_ping("c.test:3", &["10.0.0.1:3".parse().unwrap()], t0),
        0
    );
}

#[test]
fn only_answers_to_our_own_pings_are_taken() {
    let (mut e, t0) = core(TierMode::Leaf);
    e.set_udp_host_caches(
        vec!["cache.test:3558".into()],
        UhcConfig::default(),
        CacheMode::Auto,
    );
    let cache: SocketAddr = "11.0.0.9:3558".parse().unwrap();
    // An answer nobody asked for.
    let stray = PongExtras {
        ipp: vec![a4("11.0.0.50:6346")],
        ..PongExtras::default()
    };
    let mut out = BytesMut::new();
    Message::Pong(stray.pong(a4("11.0.0.9:3558"), 0, 0))
        .encode_frame(Guid::new_random(), Ttl(1), Hops(0), &mut out)
        .unwrap();
    dg(&mut e, "11.0.0.9:3558", out.to_vec(), t0);
    assert_eq!(e.stats().udp.dropped("pong-unsolicited"), 1);
    assert!(e.hosts_mut().is_empty());

    // Our round: one ping to the cache, with SCP 0 (a leaf) and VC.
    let r = e.uhc_round(t0, true);
    assert_eq!(r.ping, ["cache.test:3558"]);
    assert_eq!(e.uhc_ping("cache.test:3558", &[cache], t0), 1);
    let out = sent(&mut e);
    assert_eq!(out[0].0, cache);
    let asks = PingAsks::of(&ping_of(&out[0].1));
    assert_eq!(asks.scp, Some(0));
    assert!(!asks.ip, "gtk-gnutella answers no SCP ping that has IP too");
    assert_eq!(asks.vendor.map(|v| v.0), Some(*b"SRVT"));
    let id = out[0].1.frame.header.guid;
    // Not again within the minute, whatever the round says.
    assert_eq!(e.uhc_ping("cache.test:3558", &[cache], t0), 0);

    let answer = PongExtras {
        ipp: vec![a4("11.0.0.50:6346"), a4("11.0.0.51:6346")],
        udphc: Some(String::new()),
        phc: vec!["other.test:4000".into()],
        ip: Some(a4("11.0.0.60:6346")),
        ..PongExtras::default()
    };
    let mut out = BytesMut::new();
    Message::Pong(answer.pong(a4("11.0.0.9:6346"), 0, 0))
        .encode_frame(id, Ttl(1), Hops(0), &mut out)
        .unwrap();
    // From elsewhere: refused.
    dg(&mut e, "11.0.0.10:3558", out.to_vec(), t0);
    assert_eq!(e.stats().udp.dropped("pong-wrong-source"), 1);
    dg(&mut e, "11.0.0.9:3558", out.to_vec(), t0);
    let hosts: Vec<String> = e
        .hosts_mut()
        .list()
        .iter()
        .map(|h| h.addr.to_string())
        .collect();
    for h in ["11.0.0.50:6346", "11.0.0.51:6346", "11.0.0.9:6346"] {
        assert!(hosts.contains(&h.to_string()), "{h} in {hosts:?}");
    }
    assert!(
        e.hosts_mut().knows_ultrapeer(),
        "packed hosts are ultrapeers"
    );
    assert_eq!(
        e.stats().reach.ip_votes,
        1,
        "the echo is a vote for our address"
    );
    let st = e.stats().uhc;
    assert_eq!((st.answers, st.useful, st.learned), (1, 1, 2));
    // The same answer again is not ours any more.
    dg(&mut e, "11.0.0.9:3558", out.to_vec(), t0);
    assert_eq!(e.stats().udp.dropped("pong-unsolicited"), 2);
}

// ---- a node joining from a host cache alone ----

const WAIT: Duration = Duration::from_secs(20);

async fn start(
    dir: &Dir,
    name: &str,
    mode: Mode,
    peers: Vec<String>,
    caches: Vec<String>,
) -> NodeHandle {
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.sub(name)),
        peers,
        target_peers: 4,
        local_network: true,
        redial_pause: Some(Duration::from_millis(500)),
        udp_host_caches: caches,
        tier: servent::node::TierConfig {
            mode,
            ..servent::node::TierConfig::default()
        },
        ..NodeConfig::default()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn a_node_with_no_peer_joins_from_a_udp_host_cache() {
    let dir = Dir::new("udp-uhc-join");
    // An ultrapeer, and a second one acting as the host cache, linked to it.
    let up = start(&dir, "up", Mode::Ultrapeer, Vec::new(), Vec::new()).await;
    let mut cache = start(
        &dir,
        "cache",
        Mode::Ultrapeer,
        vec![up.local_addr.to_string()],
        Vec::new(),
    )
    .await;
    assert!(
        cache.wait_for(WAIT, |s| s.mesh_links >= 1).await,
        "the cache links to the ultrapeer"
    );
    // A leaf that knows nothing but the cache's address.
    let mut leaf = start(
        &dir,
        "leaf",
        Mode::Leaf,
        Vec::new(),
        vec![cache.local_addr.to_string()],
    )
    .await;
    assert!(
        leaf.wait_for(WAIT, |s| s.uhc.useful >= 1 && s.to_ultrapeers >= 1)
            .await,
        "{:?} {:?}",
        leaf.stats().uhc,
        leaf.stats().udp
    );
    // It learned the ultrapeer from the packed hosts, and the cache itself.
    let hosts: Vec<String> = leaf.control().hosts().into_iter().map(|h| h.addr).collect();
    assert!(hosts.contains(&up.local_addr.to_string()), "{hosts:?}");
    assert!(hosts.contains(&cache.local_addr.to_string()), "{hosts:?}");
    assert!(
        leaf.wait_for(WAIT, |s| s.to_ultrapeers >= 2).await,
        "both ultrapeers: {:?}",
        leaf.stats().to_ultrapeers
    );
    assert!(cache.stats().uhc.served >= 1);
    assert!(cache.stats().uhc.packed >= 1);
    for n in [leaf, cache, up] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn a_silent_cache_times_out_and_is_not_pinged_again_at_once() {
    let dir = Dir::new("udp-uhc-silent");
    // A socket that reads and never answers.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(dir.sub("n")),
        target_peers: 4,
        local_network: true,
        udp_host_caches: vec![silent.local_addr().unwrap().to_string()],
        uhc: UhcConfig {
            timeout: Duration::from_millis(500),
            round_every: Duration::from_millis(200),
            ..UhcConfig::default()
        },
        ..NodeConfig::default()
    };
    let mut n = node::start(config, CancellationToken::new()).await.unwrap();
    let mut buf = [0u8; 1024];
    let (len, from) = tokio::time::timeout(WAIT, silent.recv_from(&mut buf))
        .await
        .expect("the node pings the cache")
        .unwrap();
    assert_eq!(from, n.local_addr, "from the Gnutella port");
    let d = read(&buf[..len]);
    assert_eq!(PingAsks::of(&ping_of(&d)).scp, Some(0));
    assert!(n.wait_for(WAIT, |s| s.uhc.timeouts >= 1).await);
    // Backing off for 180 s: no second ping within the next two seconds.
    let again = tokio::time::timeout(Duration::from_secs(2), silent.recv_from(&mut buf)).await;
    assert!(again.is_err(), "pinged again at once");
    assert_eq!(n.stats().uhc.pings, 1);
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

#[test]
fn ipv6_hosts_and_echoes_are_given_when_asked() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    learn_ultrapeers(&mut e, 3);
    for i in 0..4u16 {
        let a = SocketAddr::new(format!("2001:4860::{:x}", i + 1).parse().unwrap(), 6346 + i);
        e.hosts_mut().mark_ultrapeer(a, true, SystemTime::now());
    }
    let ipp6 = |p: &Pong| -> Vec<SocketAddr> {
        p.ggep
            .as_ref()
            .map(|g| servent::wire::ipv6::packed_of(g, "", "IPP6"))
            .unwrap_or_default()
    };
    // SCP 0x04: IPv4 and IPv6 hosts.
    dg(
        &mut e,
        "11.0.0.21:6346",
        uhc_ping(Some(0x04), false, 1, 0),
        t0,
    );
    let p = pong_of(&sent(&mut e)[0].1);
    assert_eq!(PongExtras::of(&p).ipp.len(), 3);
    assert_eq!(ipp6(&p).len(), 4);
    // SCP 0x08: IPv6 only.
    dg(
        &mut e,
        "11.0.0.22:6346",
        uhc_ping(Some(0x08), false, 1, 0),
        t0,
    );
    let p = pong_of(&sent(&mut e)[0].1);
    assert!(PongExtras::of(&p).ipp.is_empty());
    assert_eq!(ipp6(&p).len(), 4);
    // SCP without the IPv6 bits: IPv4 only, as before.
    dg(
        &mut e,
        "11.0.0.23:6346",
        uhc_ping(Some(0x00), false, 1, 0),
        t0,
    );
    assert!(ipp6(&pong_of(&sent(&mut e)[0].1)).is_empty());
    // An asker over IPv6 gets its address echoed in 18 bytes, and is not
    // handed back to itself.
    dg(
        &mut e,
        "[2001:4860::1]:6346",
        uhc_ping(Some(0x04), true, 1, 0),
        t0,
    );
    let p = pong_of(&sent(&mut e)[0].1);
    let echo = p.ggep.as_ref().and_then(|g| g.get("IP")).unwrap();
    assert_eq!(echo.data.len(), 18);
    assert_eq!(
        servent::wire::ipv6::parse_ip_echo(&echo.data),
        Some("[2001:4860::1]:6346".parse().unwrap())
    );
    assert_eq!(ipp6(&p).len(), 3);
}

#[test]
fn a_node_does_not_ping_itself_as_a_cache() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    e.hosts_mut()
        .set_scope(servent::core::addr::Scope::Internet);
    e.set_udp_address(a4("9.9.9.9:6346"));
    e.set_udp_host_caches(
        vec!["me.test:6346".into(), "other.test:6346".into()],
        UhcConfig::default(),
        CacheMode::Auto,
    );
    let r = e.uhc_round(t0, true);
    assert_eq!(r.ping.len(), 2);
    // The name resolves to our own address: skipped, and said so.
    assert_eq!(
        e.uhc_ping("me.test:6346", &["9.9.9.9:6346".parse().unwrap()], t0),
        0
    );
    assert!(sent(&mut e).is_empty());
    assert_eq!(e.stats().uhc.self_skipped, 1);
    let n = e.uhc_ping("other.test:6346", &["9.9.9.10:6346".parse().unwrap()], t0);
    assert_eq!(n, 1, "{:?}", e.stats().uhc);
}

#[test]
fn listening_on_ipv6_only_our_pong_says_127_0_0_0_and_6() {
    let (mut e, t0) = core(TierMode::Ultrapeer);
    let v6: std::net::Ipv6Addr = "2001:4860::6".parse().unwrap();
    e.set_udp_address(a4("0.0.0.0:6346"));
    e.set_udp_addr(Some(SocketAddr::new(v6.into(), 6346)));
    dg(
        &mut e,
        "[2001:4860::1]:6346",
        uhc_ping(None, false, 1, 0),
        t0,
    );
    let p = pong_of(&sent(&mut e)[0].1);
    assert_eq!(p.ip, Ipv4Addr::new(127, 0, 0, 0));
    assert_eq!(p.port, 6346);
    let g = p.ggep.as_ref().expect("GGEP");
    assert_eq!(servent::wire::ipv6::ipv6_of(g), Some(v6));
}
