//! Out-of-band hits in the core, driven by hand with made-up time: what is
//! offered, held, sent, dropped and proxied.

use super::*;
use crate::core::tier::{Mode, TierConfig};
use crate::wire::ext::ExtItem;
use crate::wire::query::{Query, QueryFlags};

#[derive(Default)]
struct Rec {
    sent: Vec<(ConnId, Frame)>,
    datagrams: Vec<(SocketAddr, Bytes)>,
    own: Vec<Guid>,
}

impl Links for Rec {
    fn send(&mut self, conn: ConnId, _priority: Priority, bytes: Bytes) -> Offer {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = crate::framing::DescriptorCodec::default();
        while let Ok(Some(f)) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
            self.sent.push((conn, f));
        }
        Offer::Queued
    }
    fn close(&mut self, _conn: ConnId, _code: u16, _reason: &str) {}
    fn close_silently(&mut self, _conn: ConnId) {}
    fn push(&mut self, _push: Push) {}
    fn connect_back(&mut self, _to: SocketAddr) {}
    fn uploads_busy(&self) -> bool {
        false
    }
    fn own_hit(&mut self, guid: Guid, _payload: Bytes) {
        self.own.push(guid);
    }
    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) -> bool {
        self.datagrams.push((to, bytes));
        true
    }
    fn udp_open(&self) -> bool {
        true
    }
}

const US: &str = "10.0.0.1:6346";
const QUERIER: &str = "10.9.9.9:7000";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn engine(files: &[String], udp: bool) -> (Engine<Rec>, Instant) {
    let t0 = Instant::now();
    let mut library = Library::new();
    for (i, f) in files.iter().enumerate() {
        library.add(
            f,
            PathBuf::from(format!("/s/{f}")),
            100 + i as u64,
            SystemTime::UNIX_EPOCH,
            None,
        );
    }
    let tier = Tier::new(
        TierConfig {
            mode: Mode::Ultrapeer,
            ..TierConfig::default()
        },
        t0,
        0.5,
    );
    let mut e = Engine::new(Config::new(Guid([0x4d; 16]), library, tier), Rec::default());
    if udp {
        e.set_udp_addr(Some(a(US)));
        // A connect-back showed unsolicited datagrams reach us.
        e.reach.udp.evidence(t0);
    }
    (e, t0)
}

fn open(e: &mut Engine<Rec>, conn: u64, link: Link, remote: &str, now: Instant) -> ConnId {
    let c = ConnId(conn);
    e.open_link(
        c,
        LinkInfo {
            local: a(US),
            remote_listen: Some(a(remote)),
            link,
            up_qrp: false,
            offers: false,
            degree: 32,
            guid: None,
            remote: a(remote),
            vendor_messages: true,
            inbound: true,
            hsep: false,
        },
        now,
    );
    let l = e.links_mut();
    l.sent.clear();
    l.datagrams.clear();
    c
}

fn query_frame(muid: Guid, hops: u8, words: &str, oob: bool, extra: &[&str]) -> Frame {
    let mut q = Query::new(
        QueryFlags::with_bits(if oob { QueryFlags::OOB } else { 0 }),
        words,
    );
    let mut exts: Vec<crate::wire::GgepExt> = extra
        .iter()
        .map(|id| crate::wire::GgepExt::flag(id))
        .collect();
    if oob {
        exts.push(crate::wire::GgepExt::flag("SO"));
    }
    if !exts.is_empty() {
        q.ext
            .items
            .push(ExtItem::Ggep(crate::wire::Ggep::new(exts)));
    }
    let mut out = BytesMut::new();
    Message::Query(q)
        .encode_frame(muid, Ttl(3), Hops(hops), &mut out)
        .unwrap();
    let b = out.freeze();
    Frame {
        header: Header::parse_prefix(&b).unwrap(),
        payload: b.slice(23..),
    }
}

fn muid_for(reply: &str) -> Guid {
    let SocketAddr::V4(r) = a(reply) else {
        panic!()
    };
    crate::wire::oob::with_muid_addr(Guid([0x11; 16]), r)
}

fn datagram(e: &mut Engine<Rec>, from: &str, muid: Guid, ttl: u8, m: &Message, now: Instant) {
    let mut out = BytesMut::new();
    m.encode_frame(muid, Ttl(ttl), Hops(0), &mut out).unwrap();
    e.handle(
        Event::Datagram {
            from: a(from),
            bytes: out.freeze(),
        },
        now,
    );
}

fn hits_sent(e: &mut Engine<Rec>) -> usize {
    e.links_mut()
        .sent
        .iter()
        .filter(|(_, f)| f.header.function == Function::QueryHit)
        .count()
}

#[test]
fn a_claim_that_never_comes_drops_the_hits_counted() {
    let (mut e, t0) = engine(&["song one.mp3".into()], true);
    let c = open(&mut e, 1, Link::Peer, "10.0.0.2:6346", t0);
    let muid = muid_for(QUERIER);
    let frames = vec![query_frame(muid, 1, "song", true, &[])];
    e.handle(Event::Frames { conn: c, frames }, t0);
    // Offered by UDP to the MUID's address, nothing over TCP.
    let d = std::mem::take(&mut e.links_mut().datagrams);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, a(QUERIER));
    let offer = crate::wire::udp::parse(d[0].1.clone()).unwrap();
    let m = crate::wire::VendorMsg::parse(&offer.frame.payload).unwrap();
    assert_eq!(
        crate::wire::oob::Indication::parse(&m).unwrap(),
        crate::wire::oob::Indication {
            hits: 1,
            unsolicited: true,
            version: 3
        }
    );
    assert_eq!(hits_sent(&mut e), 0);
    // Still held just before the time is up; gone and counted after.
    e.handle(
        Event::Tick {
            busy: 0.0,
            wall: SystemTime::UNIX_EPOCH,
        },
        t0 + Duration::from_secs(29),
    );
    assert_eq!(e.stats().oob.unclaimed, 0);
    let later = t0 + Duration::from_secs(31);
    e.handle(
        Event::Tick {
            busy: 0.0,
            wall: SystemTime::UNIX_EPOCH,
        },
        later,
    );
    assert_eq!(e.stats().oob.unclaimed, 1);
    // A late claim finds nothing.
    let ack = crate::wire::oob::Ack {
        wanted: 255,
        token: Some(Bytes::from_static(b"tokn")),
    };
    datagram(
        &mut e,
        QUERIER,
        muid,
        1,
        &Message::Vendor(ack.to_vendor()),
        later,
    );
    assert_eq!(e.stats().udp.dropped("oob-ack-unknown"), 1);
    assert!(e.links_mut().datagrams.is_empty());
}

#[test]
fn without_udp_or_from_a_neighbour_the_answer_goes_by_tcp() {
    let (mut e, t0) = engine(&["song one.mp3".into()], false);
    let c = open(&mut e, 1, Link::Peer, "10.0.0.2:6346", t0);
    let frames = vec![query_frame(muid_for(QUERIER), 1, "song", true, &[])];
    e.handle(Event::Frames { conn: c, frames }, t0);
    assert!(e.links_mut().datagrams.is_empty());
    assert_eq!(hits_sent(&mut e), 1);

    let (mut e, t0) = engine(&["song one.mp3".into()], true);
    let c = open(&mut e, 1, Link::Peer, "10.0.0.2:6346", t0);
    // Hops 0: the neighbour's own query.
    let frames = vec![query_frame(muid_for("10.0.0.2:6346"), 0, "song", true, &[])];
    e.handle(Event::Frames { conn: c, frames }, t0);
    assert!(e.links_mut().datagrams.is_empty());
    assert_eq!(hits_sent(&mut e), 1);
}

#[test]
fn many_results_go_in_small_datagrams_deflated_when_asked_each_with_the_token() {
    let files: Vec<String> = (0..40)
        .map(|i| format!("a rather long song title number {i:02} of the collection.mp3"))
        .collect();
    let (mut e, t0) = engine(&files, true);
    let c = open(&mut e, 1, Link::Peer, "10.0.0.2:6346", t0);
    let muid = muid_for(QUERIER);
    let frames = vec![query_frame(muid, 2, "song collection", true, &[])];
    e.handle(Event::Frames { conn: c, frames }, t0);
    e.links_mut().datagrams.clear();
    let token = Bytes::from_static(&[9, 8, 7, 6]);
    let ack = crate::wire::oob::Ack {
        wanted: 255,
        token: Some(token.clone()),
    };
    datagram(
        &mut e,
        "10.9.9.9:7001",
        muid,
        1 | crate::wire::udp::TTL_DEFLATE_OK,
        &Message::Vendor(ack.to_vendor()),
        t0,
    );
    let d = std::mem::take(&mut e.links_mut().datagrams);
    assert!(d.len() >= 3, "split: {}", d.len());
    let mut results = 0;
    let mut deflated = 0;
    for (to, bytes) in &d {
        assert_eq!(*to, a("10.9.9.9:7001"), "to the claim's source");
        let plain = crate::wire::udp::encode(
            &crate::wire::udp::parse(bytes.clone()).unwrap().frame,
            false,
        );
        assert!(plain.len() <= 1024, "{} bytes", plain.len());
        let dg = crate::wire::udp::parse(bytes.clone()).unwrap();
        if dg.was_deflated {
            assert!(bytes.len() < plain.len());
            deflated += 1;
        }
        assert_eq!(dg.frame.header.guid, muid);
        let v = QueryHitView::parse(&dg.frame.payload).unwrap();
        assert_eq!(crate::wire::oob::hit_token(&v.trailer), Some(&token[..]));
        results += v.len();
    }
    assert_eq!(results, 40);
    // Deflated wherever that shortens them (a short last one may not be).
    assert!(deflated + 1 >= d.len(), "{deflated} of {}", d.len());
    let s = e.stats();
    assert_eq!((s.oob.results_sent, s.oob.hits_sent), (40, d.len() as u64));
}

use crate::wire::queryhit::QueryHitView;

/// The query a leaf's frame became on the ultrapeer link.
fn forwarded(e: &mut Engine<Rec>) -> Frame {
    let sent = std::mem::take(&mut e.links_mut().sent);
    sent.into_iter()
        .find(|(c, f)| *c == ConnId(1) && f.header.function == Function::Query)
        .map(|(_, f)| f)
        .expect("forwarded to the ultrapeer")
}

#[test]
fn leaves_queries_are_relayed_proxied_or_cleared() {
    let (mut e, t0) = engine(&[], true);
    open(&mut e, 1, Link::Peer, "10.0.0.2:6346", t0);
    let leaf = open(&mut e, 2, Link::ToLeaf, "10.0.0.3:6346", t0);
    let send = |e: &mut Engine<Rec>, muid: Guid, oob: bool, extra: &[&str]| {
        let frames = vec![query_frame(muid, 0, "tune", oob, extra)];
        e.handle(Event::Frames { conn: leaf, frames }, t0);
        forwarded(e)
    };
    // Asking for OOB at its own address: relayed as it is.
    let own = crate::wire::oob::with_muid_addr(Guid([1; 16]), "10.0.0.3:6346".parse().unwrap());
    let f = send(&mut e, own, true, &[]);
    assert_eq!(f.header.guid, own);
    assert!(OobRequest::of(&QueryView::parse(&f.payload).unwrap()).flag);
    // Not asking: proxied under our address, with both marks.
    let plain = Guid([2; 16]);
    let f = send(&mut e, plain, false, &[]);
    assert_eq!(
        crate::wire::oob::muid_addr(&f.header.guid),
        "10.0.0.1:6346".parse().unwrap()
    );
    assert_eq!(&f.header.guid.0[4..13], &plain.0[4..13]);
    let r = OobRequest::of(&QueryView::parse(&f.payload).unwrap());
    assert!(r.flag && r.secure);
    // A hit for it over TCP goes to the leaf under the leaf's MUID.
    let hit = Message::QueryHit(QueryHit {
        port: 1,
        ip: Ipv4Addr::new(10, 5, 5, 5),
        speed: 0,
        results: vec![HitResult::new(1, 2, "tune.mp3", None)],
        trailer: TrailerArea::None,
        servent: Guid([5; 16]),
    });
    let mut out = BytesMut::new();
    hit.encode_frame(f.header.guid, Ttl(3), Hops(1), &mut out)
        .unwrap();
    let b = out.freeze();
    let frames = vec![Frame {
        header: Header::parse_prefix(&b).unwrap(),
        payload: b.slice(23..),
    }];
    e.handle(
        Event::Frames {
            conn: ConnId(1),
            frames,
        },
        t0,
    );
    let down: Vec<Frame> = std::mem::take(&mut e.links_mut().sent)
        .into_iter()
        .filter(|(c, f)| *c == leaf && f.header.function == Function::QueryHit)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].header.guid, plain);
    // `NP`: not proxied (nor marked).
    let f = send(&mut e, Guid([3; 16]), false, &["NP"]);
    assert_eq!(f.header.guid, Guid([3; 16]));
    // OOB asked for another address, and NP: cleared.
    let f = send(&mut e, muid_for(QUERIER), true, &["NP"]);
    assert!(!OobRequest::of(&QueryView::parse(&f.payload).unwrap()).wanted());
    // LIME/13 with no byte vetoes proxying.
    let veto = crate::wire::oob::ProxyControl { max_vetoed: None }.to_vendor();
    let mut out = BytesMut::new();
    Message::Vendor(veto)
        .encode_frame(Guid([0; 16]), Ttl(1), Hops(0), &mut out)
        .unwrap();
    let b = out.freeze();
    e.handle(
        Event::Frames {
            conn: leaf,
            frames: vec![Frame {
                header: Header::parse_prefix(&b).unwrap(),
                payload: b.slice(23..),
            }],
        },
        t0,
    );
    let f = send(&mut e, Guid([4; 16]), false, &[]);
    assert_eq!(f.header.guid, Guid([4; 16]));
    let s = e.stats();
    assert_eq!((s.oob.relayed, s.oob.proxied, s.oob.to_leaves), (1, 1, 1));
    assert_eq!(s.oob_stripped, 1);
}

#[test]
fn our_searches_are_marked_and_their_hits_reach_the_search() {
    let (mut e, t0) = engine(&[], true);
    open(&mut e, 1, Link::Peer, "10.0.0.2:6346", t0);
    let id = Guid([7; 16]);
    let q = query_frame(id, 0, "tune", false, &[]).payload;
    assert_eq!(e.search(id, q.clone(), 3, t0), 1);
    let f = forwarded(&mut e);
    assert_ne!(f.header.guid, id);
    assert_eq!(
        crate::wire::oob::muid_addr(&f.header.guid),
        "10.0.0.1:6346".parse().unwrap()
    );
    // Not known to receive unsolicited UDP: not marked.
    let (mut e2, t0) = engine(&[], false);
    e2.set_udp_addr(Some(a(US)));
    open(&mut e2, 1, Link::Peer, "10.0.0.2:6346", t0);
    e2.search(id, q, 3, t0);
    assert_eq!(forwarded(&mut e2).header.guid, id);
    // An offer is claimed; the hit reaches the search under its own id.
    let muid = f.header.guid;
    let offer = crate::wire::oob::Indication {
        hits: 1,
        unsolicited: false,
        version: 2,
    };
    datagram(
        &mut e,
        "10.7.7.7:6346",
        muid,
        1,
        &Message::Vendor(offer.to_vendor()),
        t0,
    );
    let d = std::mem::take(&mut e.links_mut().datagrams);
    assert_eq!(d.len(), 1);
    let ack = crate::wire::udp::parse(d[0].1.clone()).unwrap();
    assert!(ack.deflate_ok, "TTL 9");
    let m = crate::wire::VendorMsg::parse(&ack.frame.payload).unwrap();
    assert_eq!(m.version, 2, "v2 offer, v2 ack");
    let hit = Message::QueryHit(QueryHit {
        port: 1,
        ip: Ipv4Addr::new(10, 7, 7, 7),
        speed: 0,
        results: vec![HitResult::new(1, 2, "tune.mp3", None)],
        trailer: TrailerArea::None,
        servent: Guid([5; 16]),
    });
    datagram(&mut e, "10.7.7.7:6346", muid, 1, &hit, t0);
    assert_eq!(e.links_mut().own, vec![id]);
}
