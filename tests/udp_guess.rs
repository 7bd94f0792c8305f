//! GUESS 0.2 (protocol-spec/guess.md): query keys bound to the asker's
//! address and rotated, queries by UDP answered only with a good key, leaves
//! refusing, deflated answers for `Z`, our bytes against the constructed
//! vectors and the captured ones read; and a leaf whose TCP search cannot
//! reach a rare file finding it by querying ultrapeers one after another.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use common::Dir;
use servent::core::ConnId;
use servent::core::engine::{Config, Engine, Event, LinkInfo, Links};
use servent::core::flow::{Offer, Priority};
use servent::core::guess::GuessConfig;
use servent::core::library::Library;
use servent::core::tier::{Link, Mode, Tier, TierConfig};
use servent::node::control::SearchFor;
use servent::node::{self, NodeConfig, NodeHandle};
use servent::wire::guess::{self as g, GuessPong, QueryKey};
use servent::wire::huge::Sha1Urn;
use servent::wire::qrp::{self, QrpTable};
use servent::wire::udp;
use servent::wire::{
    ExtArea, ExtItem, Frame, Function, Ggep, GgepExt, Guid, Hops, Message, Ping, Pong, Push, Query,
    QueryFlags, QueryHit, RouteTableUpdate, Ttl,
};
use tokio_util::sync::CancellationToken;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The constructed vectors (udp-facts section 12) share this MUID.
const MUID: &str = "0123456789abcdefff00112233445500";

// ---------------------------------------------------------------------------
// The core, driven by hand.

/// Datagrams (and frames on links) the core sent.
#[derive(Default)]
struct Wire {
    sent: Vec<(SocketAddr, Bytes)>,
    frames: Vec<(ConnId, Frame)>,
    own_hits: Vec<Guid>,
    udp: bool,
}

impl Links for Wire {
    fn send(&mut self, conn: ConnId, _: Priority, bytes: Bytes) -> Offer {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = servent::framing::DescriptorCodec::default();
        while let Ok(Some(f)) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
            self.frames.push((conn, f));
        }
        Offer::Queued
    }
    fn close(&mut self, _: ConnId, _: u16, _: &str) {}
    fn close_silently(&mut self, _: ConnId) {}
    fn push(&mut self, _: Push) {}
    fn connect_back(&mut self, _: SocketAddr) {}
    fn uploads_busy(&self) -> bool {
        false
    }
    fn own_hit(&mut self, guid: Guid, _: Bytes) {
        self.own_hits.push(guid);
    }
    fn send_datagram(&mut self, to: SocketAddr, bytes: Bytes) -> bool {
        self.sent.push((to, bytes));
        true
    }
    fn udp_open(&self) -> bool {
        self.udp
    }
}

const ME: Guid = Guid([0x4d; 16]);
const HERE: &str = "198.51.100.1:6346";
const ASKER: &str = "11.0.0.17:7001";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn core(mode: Mode, files: &[&str]) -> (Engine<Wire>, Instant) {
    let t0 = Instant::now();
    let mut library = Library::new();
    for (i, f) in files.iter().enumerate() {
        library.add(
            f,
            PathBuf::from(format!("/s/{f}")),
            100 + i as u64,
            SystemTime::UNIX_EPOCH,
            Some(Sha1Urn::digest(f.as_bytes())),
        );
    }
    let tier = Tier::new(
        TierConfig {
            mode,
            ..TierConfig::default()
        },
        t0,
        0.5,
    );
    let config = Config {
        guess: GuessConfig {
            key_period: DAY,
            ..GuessConfig::default()
        },
        ..Config::new(ME, library, tier)
    };
    let mut e = Engine::new(
        config,
        Wire {
            udp: true,
            ..Wire::default()
        },
    );
    e.set_udp_local(HERE.parse().unwrap());
    (e, t0)
}

fn datagram(muid: Guid, m: &Message, ttl: u8) -> Bytes {
    let mut out = BytesMut::new();
    m.encode_frame(muid, Ttl(ttl), Hops(0), &mut out).unwrap();
    out.freeze()
}

fn feed(e: &mut Engine<Wire>, from: &str, bytes: Bytes, now: Instant) -> Vec<udp::Datagram> {
    e.handle(
        Event::Datagram {
            from: from.parse().unwrap(),
            bytes,
        },
        now,
    );
    let sent = std::mem::take(&mut e.links_mut().sent);
    sent.into_iter()
        .map(|(to, b)| {
            assert_eq!(to, from.parse().unwrap(), "replies go to the asker");
            udp::parse(b).expect("our datagrams read")
        })
        .collect()
}

fn pong_of(d: &udp::Datagram) -> Pong {
    assert_eq!(d.frame.header.function, Function::Pong);
    let mut budget = 1 << 16;
    Pong::parse(&d.frame.payload, &mut budget).unwrap()
}

fn hit_of(d: &udp::Datagram) -> QueryHit {
    assert_eq!(d.frame.header.function, Function::QueryHit);
    let mut budget = 1 << 16;
    QueryHit::parse(&d.frame.payload, &mut budget).unwrap()
}

/// Asks for a key from `from`; returns it.
fn key_from(e: &mut Engine<Wire>, from: &str, now: Instant) -> QueryKey {
    let ping = Message::Ping(g::key_request(None));
    let got = feed(e, from, datagram(Guid::new_random(), &ping, 1), now);
    assert_eq!(got.len(), 1, "one pong");
    GuessPong::of(&pong_of(&got[0])).key.expect("a key")
}

fn guess_query(words: &str, key: Option<&[u8]>, z: bool) -> Message {
    let mut exts = Vec::new();
    if let Some(k) = key {
        exts.push(GgepExt::new("QK", Bytes::copy_from_slice(k)));
    }
    if z {
        exts.push(GgepExt::flag("Z"));
    }
    let mut q = Query::new(QueryFlags::with_bits(0), words);
    if !exts.is_empty() {
        q.ext = ExtArea {
            items: vec![ExtItem::Ggep(Ggep::new(exts))].into(),
        };
    }
    Message::Query(q)
}

#[test]
fn a_key_request_is_answered_once_a_minute() {
    let (mut e, t0) = core(Mode::Ultrapeer, &[]);
    let muid = Guid::from_hex(MUID).unwrap();
    let req = Bytes::from(hex(
        "0123456789abcdefff00112233445500 00 01 00 05000000 c3 82 514b 40",
    ));
    let got = feed(&mut e, ASKER, req.clone(), t0);
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d.frame.header.guid, muid, "the ping's MUID");
    assert_eq!((d.frame.header.ttl, d.frame.header.hops), (Ttl(1), Hops(0)));
    let pong = pong_of(d);
    assert_eq!((pong.ip, pong.port), (Ipv4Addr::new(198, 51, 100, 1), 6346));
    let gp = GuessPong::of(&pong);
    assert_eq!(gp.key.unwrap().as_bytes().len(), 4);
    assert_eq!(gp.gue.unwrap().version, Some(g::VERSION));
    // Within the minute: nothing (gtk-gnutella's rule), counted.
    assert!(feed(&mut e, ASKER, req.clone(), t0 + Duration::from_secs(59)).is_empty());
    assert_eq!(e.stats().guess.throttled, 1);
    assert_eq!(e.stats().udp.dropped("guess-ping-throttled"), 1);
    // A minute on, the same key again (the secret has not rotated).
    let again = feed(&mut e, ASKER, req, t0 + Duration::from_secs(60));
    assert_eq!(GuessPong::of(&pong_of(&again[0])).key, gp.key);
    // Another port of the same host gets another key.
    let other = key_from(&mut e, "11.0.0.18:7001", t0);
    assert_ne!(Some(other), gp.key);
}

#[test]
fn a_query_with_its_key_is_acknowledged_and_answered_by_udp() {
    let (mut e, t0) = core(Mode::Ultrapeer, &["free software.iso", "other.txt"]);
    let key = key_from(&mut e, ASKER, t0);
    let muid = Guid::new_random();
    let q = guess_query("free software", Some(key.as_bytes()), false);
    let got = feed(&mut e, ASKER, datagram(muid, &q, 1), t0);
    assert_eq!(got.len(), 2, "an acknowledgement and a hit");
    assert!(got.iter().all(|d| d.frame.header.guid == muid));
    // No other GUESS host known: the acknowledgement is our own pong.
    let ack = pong_of(&got[0]);
    assert_eq!(ack.port, 6346);
    assert!(GuessPong::of(&ack).gue.is_some());
    let hit = hit_of(&got[1]);
    assert_eq!(hit.results.len(), 1);
    assert_eq!(hit.results[0].name_lossy(), "free software.iso");
    assert_eq!(
        (hit.ip, hit.port, hit.servent),
        (Ipv4Addr::new(198, 51, 100, 1), 6346, ME)
    );
    let st = e.stats().guess;
    assert_eq!((st.queries_answered, st.hits_sent), (1, 1));
    // The same query again: not answered twice.
    assert!(feed(&mut e, ASKER, datagram(muid, &q, 1), t0).is_empty());
    assert_eq!(e.stats().guess.repeated, 1);
    // The key is the asker's: from another address it is a bad key.
    let got = feed(
        &mut e,
        "11.0.0.99:7001",
        datagram(Guid::new_random(), &q, 1),
        t0,
    );
    assert_eq!(got.len(), 1);
    assert!(GuessPong::of(&pong_of(&got[0])).key.is_some());
    assert_eq!(e.stats().guess.bad_keys, 1);
}

#[test]
fn a_stale_key_gets_a_fresh_one_and_no_answer() {
    let (mut e, t0) = core(Mode::Ultrapeer, &["rare.bin"]);
    let key = key_from(&mut e, ASKER, t0);
    let q = guess_query("rare", Some(key.as_bytes()), false);
    // After one rotation the old key is still taken.
    let t1 = t0 + DAY;
    let got = feed(&mut e, ASKER, datagram(Guid::new_random(), &q, 1), t1);
    assert_eq!(got.len(), 2, "ack and hit");
    // After two it is stale: a pong with the fresh key, and no hit.
    let t2 = t0 + DAY * 2;
    let got = feed(&mut e, ASKER, datagram(Guid::new_random(), &q, 1), t2);
    assert_eq!(got.len(), 1, "{got:?}");
    let fresh = GuessPong::of(&pong_of(&got[0])).key.expect("a fresh key");
    assert_ne!(fresh, key);
    let st = e.stats();
    assert_eq!(st.guess.bad_keys, 1);
    assert_eq!(st.udp.dropped("guess-bad-key"), 1);
    // With the fresh key it is answered.
    let q = guess_query("rare", Some(fresh.as_bytes()), false);
    let got = feed(&mut e, ASKER, datagram(Guid::new_random(), &q, 1), t2);
    assert_eq!(got.len(), 2);
    assert_eq!(hit_of(&got[1]).results[0].name_lossy(), "rare.bin");
}

#[test]
fn a_query_without_key_is_dropped() {
    let (mut e, t0) = core(Mode::Ultrapeer, &["rare.bin"]);
    let got = feed(
        &mut e,
        ASKER,
        datagram(Guid::new_random(), &guess_query("rare", None, false), 1),
        t0,
    );
    assert!(got.is_empty());
    let st = e.stats();
    assert_eq!(st.guess.no_keys, 1);
    assert_eq!(st.udp.dropped("guess-no-key"), 1);
    // An empty QK is no key either: a bad one (answered with a fresh key).
    let got = feed(
        &mut e,
        ASKER,
        datagram(
            Guid::new_random(),
            &guess_query("rare", Some(&[]), false),
            1,
        ),
        t0,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(e.stats().guess.bad_keys, 1);
}

#[test]
fn a_leaf_refuses_and_does_not_advertise() {
    let (mut e, t0) = core(Mode::Leaf, &["rare.bin"]);
    assert!(!e.guess_serving());
    let ping = Message::Ping(g::key_request(None));
    assert!(feed(&mut e, ASKER, datagram(Guid::new_random(), &ping, 1), t0).is_empty());
    let q = guess_query("rare", Some(&[1, 2, 3, 4]), false);
    assert!(feed(&mut e, ASKER, datagram(Guid::new_random(), &q, 1), t0).is_empty());
    let st = e.stats();
    assert_eq!(st.guess.refused, 2);
    assert_eq!(st.udp.dropped("guess-not-served"), 2);
    assert_eq!(st.guess.keys_sent, 0);
    // Nor does an ultrapeer without a UDP port.
    let (mut up, _) = core(Mode::Ultrapeer, &[]);
    assert!(up.guess_serving());
    up.links_mut().udp = false;
    assert!(!up.guess_serving());
}

#[test]
fn z_gets_deflated_hits_and_big_answers_are_split() {
    let names: Vec<String> = (0..60)
        .map(|i| format!("common words in a rather long file name number {i:03}.txt"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (mut e, t0) = core(Mode::Ultrapeer, &refs);
    let key = key_from(&mut e, ASKER, t0);
    let muid = Guid::new_random();
    let q = guess_query("common words", Some(key.as_bytes()), true);
    let got = feed(&mut e, ASKER, datagram(muid, &q, 1), t0);
    let hits: Vec<&udp::Datagram> = got
        .iter()
        .filter(|d| d.frame.header.function == Function::QueryHit)
        .collect();
    assert!(hits.len() >= 3, "{} hits", hits.len());
    assert!(hits.iter().all(|d| d.was_deflated), "deflated for Z");
    let results: usize = hits.iter().map(|d| hit_of(d).results.len()).sum();
    assert_eq!(results, 60);
    for d in &hits {
        assert!(d.frame.payload.len() <= 1024, "{}", d.frame.payload.len());
    }
    // Without Z, plain.
    let q = guess_query("common words", Some(key.as_bytes()), false);
    let got = feed(&mut e, ASKER, datagram(Guid::new_random(), &q, 1), t0);
    assert!(got.iter().all(|d| !d.was_deflated));
    assert!(
        got.iter()
            .skip(1)
            .all(|d| d.frame.header.payload_len <= 1024)
    );
}

#[test]
fn introductions_and_pongs_teach_guess_hosts_named_in_acks() {
    let (mut e, t0) = core(Mode::Ultrapeer, &["x.txt"]);
    // gtk's introduction ping (captured guess-intro-ping-and-qk): QK and
    // GUE {0x02, port 19104}, from 11.0.0.1.
    let intro = hex(
        "02 a6 31 02 9f f4 53 f7 ff b1 80 1d 93 18 1a 03 00 01 00 0d 00 00 00
         c3 02 51 4b 40 83 47 55 45 43 02 a0 4a",
    );
    let got = feed(&mut e, "11.0.0.1:19104", Bytes::from(intro), t0);
    assert!(GuessPong::of(&pong_of(&got[0])).key.is_some());
    assert_eq!(e.stats().guess.hosts, 1);
    // A query with SCP from elsewhere: acknowledged with that host's address.
    let key = key_from(&mut e, ASKER, t0);
    let mut q = Query::new(QueryFlags::with_bits(0), "x");
    q.ext.items.push(ExtItem::Ggep(Ggep::new(vec![
        GgepExt::new("QK", Bytes::copy_from_slice(key.as_bytes())),
        GgepExt::flag("SCP"),
    ])));
    let got = feed(
        &mut e,
        ASKER,
        datagram(Guid::new_random(), &Message::Query(q), 1),
        t0,
    );
    let ack = pong_of(&got[0]);
    assert_eq!((ack.ip, ack.port), (Ipv4Addr::new(11, 0, 0, 1), 19104));
    assert_eq!(got[0].frame.header.hops, Hops(1), "another host's pong");
    // A second GUESS host is named in the IPP of the next ack with SCP.
    e.guess_learn("11.0.0.3:6346".parse().unwrap(), t0);
    let mut q = Query::new(QueryFlags::with_bits(0), "x");
    q.ext.items.push(ExtItem::Ggep(Ggep::new(vec![
        GgepExt::new("QK", Bytes::copy_from_slice(key.as_bytes())),
        GgepExt::flag("SCP"),
    ])));
    let got = feed(
        &mut e,
        ASKER,
        datagram(Guid::new_random(), &Message::Query(q), 1),
        t0,
    );
    let gp = GuessPong::of(&pong_of(&got[0]));
    let acked = SocketAddr::from((pong_of(&got[0]).ip, pong_of(&got[0]).port));
    let named: Vec<SocketAddr> = gp.hosts.iter().map(|a| SocketAddr::V4(*a)).collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_ne!(named[0], acked, "the ack's host is not named twice");
    assert!(!named.contains(&ASKER.parse().unwrap()), "never the asker");
    // An empty GUE ping ("GUESS hosts, please", as gtk leaves send it) is
    // answered with IPP (from another address: one answer a minute per IP).
    let ping = Message::Ping(Ping {
        ggep: Some(Ggep::new(vec![GgepExt::flag("GUE")])),
    });
    let got = feed(
        &mut e,
        "11.0.0.40:6346",
        datagram(Guid::new_random(), &ping, 1),
        t0,
    );
    let gp = GuessPong::of(&pong_of(&got[0]));
    assert!(gp.key.is_none(), "no key asked for");
    assert_eq!(gp.hosts.len(), 2);
    // A pong over TCP answering our ping, saying GUE: one more GUESS host;
    // one without GUE is not.
    let before = e.stats().guess.hosts;
    let up = ConnId(1);
    let up_addr: SocketAddr = "11.0.0.50:6346".parse().unwrap();
    e.open_link(
        up,
        LinkInfo {
            local: HERE.parse().unwrap(),
            remote_listen: Some(up_addr),
            link: Link::Peer,
            up_qrp: false,
            offers: false,
            degree: 0,
            guid: None,
            remote: up_addr,
            vendor_messages: false,
            hsep: false,
            inbound: false,
        },
        t0,
    );
    let ping = e
        .links_mut()
        .frames
        .iter()
        .find(|(c, f)| *c == up && f.header.function == Function::Ping)
        .map(|(_, f)| f.header.guid)
        .expect("a new link is pinged");
    let pong = |port: u16, gue: bool| {
        let p = Message::Pong(Pong {
            port,
            ip: Ipv4Addr::new(11, 0, 0, 60),
            files: 0,
            kbytes: 8,
            ggep: gue.then(|| Ggep::new(vec![g::Gue::ours()])),
        });
        Frame::new(&p, ping, Ttl(1), Hops(1)).unwrap()
    };
    e.handle(
        Event::Frames {
            conn: up,
            frames: vec![pong(6346, true), pong(6347, false)],
        },
        t0,
    );
    assert_eq!(e.stats().guess.hosts, before + 1);
}

#[test]
fn a_leaf_reached_by_its_table_answers_through_us_by_udp() {
    let (mut e, t0) = core(Mode::Ultrapeer, &[]);
    let leaf = ConnId(2);
    let leaf_addr: SocketAddr = "10.0.0.2:6002".parse().unwrap();
    e.open_link(
        leaf,
        LinkInfo {
            local: HERE.parse().unwrap(),
            remote_listen: Some(leaf_addr),
            link: Link::ToLeaf,
            up_qrp: false,
            offers: false,
            degree: 0,
            guid: None,
            remote: leaf_addr,
            vendor_messages: false,
            hsep: false,
            inbound: true,
        },
        t0,
    );
    // The leaf's table: "holiday" present.
    let mut t = QrpTable::new(1024).unwrap();
    t.insert_keyword("holiday");
    let diff = t
        .diff(&QrpTable::new(1024).unwrap(), qrp::DEFAULT_INFINITY)
        .unwrap();
    let mut table = vec![
        Frame::new(
            &Message::RouteTable(RouteTableUpdate::Reset {
                table_len: 1024,
                infinity: qrp::DEFAULT_INFINITY,
            }),
            Guid([9; 16]),
            Ttl(1),
            Hops(0),
        )
        .unwrap(),
    ];
    for c in qrp::build_patch_chunks(&diff, 4, true, 4096).unwrap() {
        table.push(
            Frame::new(
                &Message::RouteTable(c.into()),
                Guid([10; 16]),
                Ttl(1),
                Hops(0),
            )
            .unwrap(),
        );
    }
    e.handle(
        Event::Frames {
            conn: leaf,
            frames: table,
        },
        t0,
    );
    assert_eq!(e.stats().tables_received, 1);
    let key = key_from(&mut e, ASKER, t0);
    e.links_mut().frames.clear();
    let muid = Guid::new_random();
    let q = guess_query("holiday", Some(key.as_bytes()), true);
    let got = feed(&mut e, ASKER, datagram(muid, &q, 1), t0);
    assert_eq!(
        got.len(),
        1,
        "the acknowledgement only: we have no such file"
    );
    // The leaf gets the query, TTL 1, without the GUESS extensions.
    let to_leaf: Vec<&Frame> = e
        .links_mut()
        .frames
        .iter()
        .filter(|(c, f)| *c == leaf && f.header.function == Function::Query)
        .map(|(_, f)| f)
        .collect();
    assert_eq!(to_leaf.len(), 1);
    let f = to_leaf[0].clone();
    assert_eq!((f.header.guid, f.header.ttl), (muid, Ttl(1)));
    let v = servent::wire::query::QueryView::parse(&f.payload).unwrap();
    assert_eq!(v.text, b"holiday");
    assert_eq!(g::GuessQuery::of(&v), g::GuessQuery::default());
    // Not "work": that query goes to no leaf.
    let q = guess_query("work", Some(key.as_bytes()), false);
    feed(&mut e, ASKER, datagram(Guid::new_random(), &q, 1), t0);
    assert_eq!(e.stats().guess.to_leaves, 1);
    // The leaf's hit comes back over TCP and goes on by UDP to the asker.
    let hit = Message::QueryHit(QueryHit {
        port: 6002,
        ip: Ipv4Addr::new(10, 0, 0, 2),
        speed: 0,
        results: vec![servent::wire::HitResult::new(
            3,
            4096,
            "holiday photos.zip",
            None,
        )],
        trailer: servent::wire::TrailerArea::None,
        servent: Guid([0x1e; 16]),
    });
    let hit = Frame::new(&hit, muid, Ttl(3), Hops(0)).unwrap();
    e.handle(
        Event::Frames {
            conn: leaf,
            frames: vec![hit],
        },
        t0,
    );
    let sent = std::mem::take(&mut e.links_mut().sent);
    assert_eq!(sent.len(), 1, "sent on by UDP");
    assert_eq!(sent[0].0, ASKER.parse::<SocketAddr>().unwrap());
    let d = udp::parse(sent[0].1.clone()).unwrap();
    assert_eq!(d.frame.header.guid, muid);
    assert_eq!(hit_of(&d).results[0].name_lossy(), "holiday photos.zip");
    assert_eq!(e.stats().guess.leaf_hits_relayed, 1);
    assert!(e.links_mut().own_hits.is_empty(), "not taken as ours");
}

// ---------------------------------------------------------------------------
// Bytes: ours against the constructed vectors, the captured ones read.

#[test]
fn golden_key_request_key_pong_and_query() {
    let muid = Guid::from_hex(MUID).unwrap();
    // guess-qk-ping
    let ping = datagram(muid, &Message::Ping(g::key_request(None)), 1);
    assert_eq!(
        ping.to_vec(),
        hex("0123456789abcdefff00112233445500 00 01 00 05000000 c3 82 514b 40")
    );
    // guess-qk-pong: the server 198.51.100.1:6346, 0 files, 8 KB, GUE, QK.
    let pong = Message::Pong(Pong {
        port: 6346,
        ip: Ipv4Addr::new(198, 51, 100, 1),
        files: 0,
        kbytes: 8,
        ggep: Some(Ggep::new(vec![
            g::Gue::ours(),
            GgepExt::new("QK", Bytes::from_static(&[0xd5, 0x43, 0xcb, 0x6b])),
        ])),
    });
    assert_eq!(
        datagram(muid, &pong, 1).to_vec(),
        hex(
            "0123456789abcdefff001122334455000101001d000000ca18c63364010000000008000000c303475545410282514b44d543cb6b"
        )
    );
    // guess-query: "free software" with QK and Z, flags 0xa000, no trailing NUL.
    let mut base = BytesMut::new();
    Query::new(QueryFlags::with_bits(QueryFlags::XML), "free software")
        .encode(&mut base)
        .unwrap();
    let key = QueryKey::new(&[0xd5, 0x43, 0xcb, 0x6b]).unwrap();
    let payload = g::with_key(&base.freeze(), &key, false, true).unwrap();
    let frame = Frame {
        header: servent::wire::Header {
            guid: muid,
            function: Function::Query,
            ttl: Ttl(1),
            hops: Hops(0),
            payload_len: payload.len() as u32,
        },
        payload,
    };
    assert_eq!(
        udp::encode(&frame, false).to_vec(),
        hex(
            "0123456789abcdefff001122334455008001001c000000a0006672656520736f66747761726500c302514b44d543cb6b815a40"
        )
    );
}

#[test]
fn captured_guess_traffic_reads() {
    // LimeWire's key pong (guess-qk-request-leaf): QK only.
    let lw = hex(
        "91 eb 31 02 68 0b 15 b5 ff b8 18 30 d1 e6 ea 03 01 01 00 17 00 00 00 ce 18 0b 00 00 05
         04 00 00 00 00 02 00 00 c3 82 51 4b 44 45 2a 10 04",
    );
    let d = udp::parse(Bytes::from(lw)).unwrap();
    let gp = GuessPong::of(&pong_of(&d));
    assert_eq!(gp.key.unwrap().as_bytes(), &[0x45, 0x2a, 0x10, 0x04]);
    assert_eq!(gp.gue, None);
    // gtk's key pong with IPP (guess-qk-scp-gtk).
    let gtk = hex(
        "22 88 55 bf cd e6 38 f2 8a f0 32 92 eb 8c 24 73 01 01 00 3d 00 00 00 a0 4a 0b 00 00 01 01
         00 00 00 08 00 00 00 c3 02 56 43 45 47 54 4b 47 83 03 47 55 45 41 02 02 55 50 43 02 ff 1c
         02 44 55 41 ea 03 49 50 50 46 0b 00 00 05 ce 18 82 51 4b 44 d5 43 cb 6b",
    );
    let d = udp::parse(Bytes::from(gtk)).unwrap();
    let gp = GuessPong::of(&pong_of(&d));
    assert_eq!(gp.key.unwrap().as_bytes(), &[0xd5, 0x43, 0xcb, 0x6b]);
    assert_eq!(gp.gue.unwrap().version, Some(2));
    assert_eq!(gp.hosts, vec!["11.0.0.5:6350".parse().unwrap()]);
    // gtk leaf's GUESS query to LimeWire (guess-query-gtk-to-limewire).
    let q = hex(
        "0b 00 00 02 31 02 15 23 fa 25 9a e9 8d ca 18 69 80 01 00 26 00 00 00 bd 00 75 64 70 63 68
         61 72 6c 69 65 00 c3 02 53 4f 40 02 51 4b 44 45 2a 10 04 03 53 43 50 40 01 5a 40 82 50 52 40",
    );
    let d = udp::parse(Bytes::from(q)).unwrap();
    let v = servent::wire::query::QueryView::parse(&d.frame.payload).unwrap();
    let gq = g::GuessQuery::of(&v);
    assert_eq!(
        gq.key.unwrap().unwrap().as_bytes(),
        &[0x45, 0x2a, 0x10, 0x04]
    );
    assert!(gq.scp && gq.deflate);
    // Stripped for leaves: SO and PR stay.
    let bare = g::without_guess(&d.frame.payload).unwrap();
    let v = servent::wire::query::QueryView::parse(&bare).unwrap();
    let ggep = v.ext.ggep().unwrap();
    assert!(ggep.get("SO").is_some() && ggep.get("PR").is_some());
    assert!(ggep.get("QK").is_none() && ggep.get("Z").is_none());
    // gtk's acknowledgement (guess-query-probe-to-gtk): hops 1, GUE only.
    let ack = hex(
        "1d 41 4e 14 70 40 4a fe bd d3 28 32 aa 09 4a be 01 01 01 15 00 00 00 ce 18 0b 00 00 05 0b
         00 00 00 00 00 00 00 c3 83 47 55 45 41 02",
    );
    let d = udp::parse(Bytes::from(ack)).unwrap();
    let p = pong_of(&d);
    assert_eq!(p.port, 6350);
    assert!(GuessPong::of(&p).gue.is_some());
    // The ping asking for a key, as gtk's leaf sends it, reads as one.
    let mut budget = 1 << 16;
    let ping = Ping::parse(&Bytes::from(hex("c3 82 51 4b 40")), &mut budget).unwrap();
    assert!(g::GuessPing::of(&ping).key_request);
}

// ---------------------------------------------------------------------------
// Nodes on loopback.

const WAIT: Duration = Duration::from_secs(30);

fn config(mode: Mode, share: PathBuf, peers: Vec<String>, max_ttl: u8) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        peers,
        target_peers: 0,
        max_ttl,
        local_network: true,
        handshake_timeout: Duration::from_secs(5),
        tier: TierConfig {
            mode,
            ..TierConfig::default()
        },
        guess: GuessConfig {
            idle: Duration::from_secs(1),
            ..GuessConfig::default()
        },
        ..NodeConfig::default()
    }
}

async fn start(
    dir: &Dir,
    name: &str,
    mode: Mode,
    files: &[&str],
    peers: Vec<String>,
    max_ttl: u8,
) -> NodeHandle {
    let share = dir.sub(name);
    for f in files {
        std::fs::write(share.join(f), f.as_bytes()).unwrap();
    }
    let mut config = config(mode, share, peers, max_ttl);
    if name == "leaf" {
        // Another loopback address: ultrapeers answer one key request a
        // minute per IP, and `servent search` asks from 127.0.0.1.
        config.listen = "127.0.0.2:0".parse().unwrap();
    }
    node::start(config, CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn a_leaf_finds_by_guess_what_its_tcp_search_cannot_reach() {
    let dir = Dir::new("udp-guess-mesh");
    // A line of ultrapeers: a - b - c. The rare file is on c only; a relays
    // nothing past itself (max TTL 1), so the leaf's TCP search ends at a.
    let mut c = start(
        &dir,
        "c",
        Mode::Ultrapeer,
        &["guessrare only here.txt"],
        vec![],
        7,
    )
    .await;
    let mut b = start(
        &dir,
        "b",
        Mode::Ultrapeer,
        &["common b.txt"],
        vec![c.local_addr.to_string()],
        7,
    )
    .await;
    let mut a = start(
        &dir,
        "a",
        Mode::Ultrapeer,
        &["common a.txt"],
        vec![b.local_addr.to_string()],
        1,
    )
    .await;
    assert!(b.wait_for(WAIT, |s| s.mesh_links == 2).await);
    let mut leaf = start(
        &dir,
        "leaf",
        Mode::Leaf,
        &[],
        vec![a.local_addr.to_string()],
        7,
    )
    .await;
    assert!(leaf.wait_for(WAIT, |s| s.to_ultrapeers == 1).await);
    // Ultrapeers advertise GUESS in their handshakes: the leaf knows a.
    assert!(leaf.wait_for(WAIT, |s| s.guess.hosts >= 1).await);

    let search = leaf
        .control()
        .search(SearchFor::Words("guessrare".into()))
        .unwrap();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(h) = search.hits().into_iter().next() {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no hit by GUESS: leaf {:?}", leaf.stats().guess));
    assert_eq!(found.name, "guessrare only here.txt");
    assert_eq!(found.port, Some(c.local_addr.port()), "from c");
    let ls = leaf.stats().guess;
    eprintln!("leaf GUESS client: {:?}", ls.client);
    eprintln!("c GUESS server: {:?}", c.stats().guess);
    // a, then b (named in a's acknowledgement), then c (in b's).
    assert!(ls.client.started == 1 && ls.client.queries >= 3, "{ls:?}");
    assert!(ls.client.hits >= 1);
    assert!(c.stats().guess.queries_answered >= 1);
    assert!(a.stats().guess.queries_answered >= 1);
    // The TCP search went to a only: c never saw it by TCP.
    assert_eq!(c.stats().hits_sent, c.stats().guess.hits_sent);
    // `servent search --peer a` (a bare leaf link with its own UDP socket)
    // finds it the same way once its TCP query goes quiet.
    let answered = c.stats().guess.queries_answered;
    let mut names = Vec::new();
    let n = node::search::search(
        &a.local_addr.to_string(),
        "guessrare",
        7,
        Duration::from_secs(12),
        1,
        |h| names.push((h.name.clone(), h.port)),
    )
    .await
    .unwrap();
    assert_eq!(n, 1, "found by GUESS within the search's time");
    assert_eq!(
        names,
        vec![("guessrare only here.txt".to_string(), c.local_addr.port())]
    );
    assert!(c.stats().guess.queries_answered > answered);
    let _ = (&mut a, &mut b, &mut c);
    for n in [leaf, a, b, c] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn ultrapeers_say_x_guess_and_answer_a_key_request_by_udp() {
    let dir = Dir::new("udp-guess-up");
    let up = start(&dir, "up", Mode::Ultrapeer, &["thing.txt"], vec![], 7).await;
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ping = datagram(Guid::new_random(), &Message::Ping(g::key_request(None)), 1);
    s.send_to(&ping, up.local_addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, up.local_addr);
    let d = udp::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
    let key = GuessPong::of(&pong_of(&d)).key.unwrap();
    let q = guess_query("thing", Some(key.as_bytes()), false);
    s.send_to(&datagram(Guid::new_random(), &q, 1), up.local_addr)
        .await
        .unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (n, _) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let d = udp::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
        kinds.push(d.frame.header.function);
    }
    assert_eq!(kinds, vec![Function::Pong, Function::QueryHit]);
    // Its handshake says X-Guess.
    let (block, _) =
        common::raw::dial_raw(up.local_addr, "User-Agent: test\r\nX-Ultrapeer: False\r\n").await;
    assert_eq!(
        common::raw::header(&block, "X-Guess"),
        Some("0.2"),
        "{block}"
    );
    tokio::time::timeout(WAIT, up.shutdown()).await.unwrap();
}
