//! The core driven by hand: events in, what it asked of its links out. No
//! socket, clock or task; `now` is made up.

use super::*;
use crate::core::tier::{Mode, TierConfig};
use crate::wire::{Query, QueryFlags};

/// What the core asked of its links, in order.
#[derive(Debug, Clone, PartialEq)]
enum Did {
    Send(ConnId, Priority, Frame),
    Close(ConnId, u16),
    CloseSilently(ConnId),
    Push(Push),
    ConnectBack(SocketAddr),
    OwnHit(Guid),
}

#[derive(Default)]
struct Record {
    did: Vec<Did>,
    /// Control messages are refused while this is set.
    refuse_control: bool,
    busy: bool,
    /// Table jobs are kept here (as the shell runs them elsewhere) while set.
    defer_tables: bool,
    jobs: Vec<TableJob>,
}

impl Links for Record {
    fn send(&mut self, conn: ConnId, priority: Priority, bytes: Bytes) -> Offer {
        if priority == Priority::Control && self.refuse_control {
            return Offer::Rejected;
        }
        // Every frame queued (several may be in one piece).
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = crate::framing::DescriptorCodec::default();
        while let Ok(Some(f)) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
            self.did.push(Did::Send(conn, priority, f));
        }
        Offer::Queued
    }
    fn close(&mut self, conn: ConnId, code: u16, _reason: &str) {
        self.did.push(Did::Close(conn, code));
    }
    fn close_silently(&mut self, conn: ConnId) {
        self.did.push(Did::CloseSilently(conn));
    }
    fn push(&mut self, push: Push) {
        self.did.push(Did::Push(push));
    }
    fn connect_back(&mut self, to: SocketAddr) {
        self.did.push(Did::ConnectBack(to));
    }
    fn uploads_busy(&self) -> bool {
        self.busy
    }
    fn own_hit(&mut self, guid: Guid, _payload: Bytes) {
        self.did.push(Did::OwnHit(guid));
    }
    fn decode_tables(&mut self, job: TableJob) -> Option<TableDone> {
        if self.defer_tables {
            self.jobs.push(job);
            None
        } else {
            Some(job.run())
        }
    }
}

const ME: Guid = Guid([0x4d; 16]);

fn engine(mode: Mode, files: &[&str]) -> (Engine<Record>, Instant) {
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
    let e = Engine::new(Config::new(ME, library, tier), Record::default());
    (e, t0)
}

fn info(link: Link, port: u16) -> LinkInfo {
    LinkInfo {
        local: "10.0.0.1:6346".parse().unwrap(),
        remote_listen: Some(SocketAddr::from(([10, 0, 0, 2], port))),
        link,
        up_qrp: false,
        offers: false,
        degree: 32,
        guid: None,
        remote: SocketAddr::from(([10, 0, 0, 2], port)),
        vendor_messages: false,
        hsep: false,
        inbound: true,
    }
}

/// Opens `link` as `conn` (counted by the role policy as a handshake would)
/// and forgets what the core sent on opening.
fn open(e: &mut Engine<Record>, conn: u64, link: Link, now: Instant) -> ConnId {
    let c = ConnId(conn);
    e.tier.opened(link, now);
    e.handle(
        Event::Opened {
            conn: c,
            info: info(link, 6000 + conn as u16),
        },
        now,
    );
    e.links.did.clear();
    c
}

fn frame(guid: [u8; 16], m: &Message, ttl: u8, hops: u8) -> Frame {
    Frame::new(m, Guid(guid), Ttl(ttl), Hops(hops)).unwrap()
}

fn query(words: &str) -> Message {
    Message::Query(Query::new(QueryFlags::with_bits(0), words))
}

fn frames(e: &mut Engine<Record>, conn: ConnId, f: Vec<Frame>, now: Instant) {
    e.handle(Event::Frames { conn, frames: f }, now);
}

/// The frames sent, as (link, function, TTL, hops).
fn sent(e: &Engine<Record>) -> Vec<(ConnId, Function, u8, u8)> {
    e.links
        .did
        .iter()
        .filter_map(|d| match d {
            Did::Send(c, _, f) => Some((*c, f.header.function, f.header.ttl.0, f.header.hops.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_query_is_answered_and_flooded_on_with_one_hop_more() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &["free software song.ogg"]);
    let a = open(&mut e, 1, Link::Flat, t0);
    let b = open(&mut e, 2, Link::Flat, t0);
    let c = open(&mut e, 3, Link::Flat, t0);
    // (words, TTL) -> what goes where
    type Want = Vec<(ConnId, Function, u8, u8)>;
    let table: [(&str, u8, Want); 3] = [
        (
            "free song",
            3,
            vec![
                (b, Function::Query, 2, 1),
                (c, Function::Query, 2, 1),
                (a, Function::QueryHit, 3, 0),
            ],
        ),
        (
            "nothing here",
            3,
            vec![(b, Function::Query, 2, 1), (c, Function::Query, 2, 1)],
        ),
        // Its TTL ends here: answered, not forwarded.
        ("software", 1, vec![(a, Function::QueryHit, 3, 0)]),
    ];
    for (i, (words, ttl, want)) in table.into_iter().enumerate() {
        e.links.did.clear();
        frames(
            &mut e,
            a,
            vec![frame([i as u8 + 1; 16], &query(words), ttl, 0)],
            t0,
        );
        let mut got = sent(&e);
        got.sort_by_key(|x| (x.0, x.1.code()));
        let mut want = want;
        want.sort_by_key(|x| (x.0, x.1.code()));
        assert_eq!(got, want, "{words:?} ttl {ttl}");
    }
    // The same query again is a duplicate: nothing at all.
    e.links.did.clear();
    frames(
        &mut e,
        b,
        vec![frame([1; 16], &query("free song"), 3, 0)],
        t0,
    );
    assert!(e.links.did.is_empty(), "{:?}", e.links.did);
}

/// A leaf's table of `len` slots with `words` present, as RESET and PATCH frames.
fn leaf_table(len: usize, words: &[&str]) -> Vec<Frame> {
    let mut t = QrpTable::new(len).unwrap();
    for w in words {
        t.insert_keyword(w);
    }
    let empty = QrpTable::new(len).unwrap();
    let diff = t.diff(&empty, qrp::DEFAULT_INFINITY).unwrap();
    let chunks = qrp::build_patch_chunks(&diff, 4, true, 4096).unwrap();
    let mut f = vec![frame(
        [9; 16],
        &Message::RouteTable(RouteTableUpdate::Reset {
            table_len: len as u32,
            infinity: qrp::DEFAULT_INFINITY,
        }),
        1,
        0,
    )];
    for c in chunks {
        f.push(frame([10; 16], &Message::RouteTable(c.into()), 1, 0));
    }
    f
}

#[test]
fn tables_are_decoded_by_jobs_and_what_arrives_meanwhile_waits_its_turn() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    e.links.defer_tables = true;
    let up = open(&mut e, 1, Link::Peer, t0);
    let leaf = open(&mut e, 2, Link::ToLeaf, t0);
    // The RESET starts a job; the PATCH waits for it.
    frames(&mut e, leaf, leaf_table(1024, &["holiday"]), t0);
    assert_eq!(e.links.jobs.len(), 1);
    assert_eq!(e.stats().tables_received, 0);
    let job = e.links.jobs.remove(0);
    e.handle(Event::TablesDecoded(job.run()), t0);
    // The waiting PATCH is the next job; the table counts once it is done.
    assert_eq!(e.links.jobs.len(), 1);
    let job = e.links.jobs.remove(0);
    e.handle(Event::TablesDecoded(job.run()), t0);
    assert!(e.links.jobs.is_empty());
    assert_eq!(e.stats().tables_received, 1);
    e.links.did.clear();
    frames(
        &mut e,
        up,
        vec![frame([20; 16], &query("holiday"), 3, 1)],
        t0,
    );
    assert!(
        sent(&e)
            .iter()
            .any(|(c, f, _, _)| *c == leaf && *f == Function::Query)
    );
    // A job that outlives its link is dropped.
    frames(
        &mut e,
        leaf,
        leaf_table(1024, &["work"]),
        t0 + Duration::from_secs(60),
    );
    let job = e.links.jobs.remove(0);
    e.handle(Event::Closed { conn: leaf }, t0);
    e.handle(Event::TablesDecoded(job.run()), t0);
    assert!(e.links.jobs.is_empty());
    // Updates piling up behind a job beyond their room close the link.
    let other = open(&mut e, 3, Link::ToLeaf, t0);
    frames(&mut e, other, leaf_table(1024, &["a"]), t0);
    let mut big = QrpTable::new(1 << 17).unwrap();
    big.insert_keyword("b");
    let diff = big
        .diff(&QrpTable::new(1 << 17).unwrap(), qrp::DEFAULT_INFINITY)
        .unwrap();
    let chunk = qrp::build_patch_chunks(&diff, 8, false, 60_000)
        .unwrap()
        .remove(0);
    let patch = frame([11; 16], &Message::RouteTable(chunk.into()), 1, 0);
    e.links.did.clear();
    for _ in 0..(MAX_QUEUED_TABLE_BYTES / patch.payload.len() + 2) {
        e.handle(
            Event::Frames {
                conn: other,
                frames: vec![patch.clone()],
            },
            t0,
        );
    }
    assert!(
        e.links
            .did
            .contains(&Did::Close(other, bye::CODE_BAD_QUERIES))
    );
}

#[test]
fn a_leaf_gets_only_the_queries_its_table_matches() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    let up = open(&mut e, 1, Link::Peer, t0);
    let leaf = open(&mut e, 2, Link::ToLeaf, t0);
    // The leaf's table: RESET, then one PATCH marking "holiday" present.
    frames(&mut e, leaf, leaf_table(1024, &["holiday"]), t0);
    assert_eq!(e.stats().tables_received, 1);
    for (i, (words, to_leaf)) in [("holiday", true), ("work", false), ("holiday work", false)]
        .into_iter()
        .enumerate()
    {
        e.links.did.clear();
        frames(
            &mut e,
            up,
            vec![frame([20 + i as u8; 16], &query(words), 3, 1)],
            t0,
        );
        let got = sent(&e)
            .iter()
            .any(|(c, f, _, _)| *c == leaf && *f == Function::Query);
        assert_eq!(got, to_leaf, "{words}");
    }
    assert_eq!(e.stats().leaf_table_misses, 2);
}

#[test]
fn over_budget_is_dropped_then_closed_with_402() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    let leaf = open(&mut e, 1, Link::ToLeaf, t0);
    // A leaf may send 15 queries at once.
    let f: Vec<Frame> = (0..100u8)
        .map(|i| frame([i; 16], &query(&format!("w{i}")), 2, 0))
        .collect();
    frames(&mut e, leaf, f, t0);
    let st = e.stats();
    assert!(st.over_budget(BudgetKind::Query) > 0);
    assert_eq!(st.closed_over_budget, 1);
    assert!(
        e.links
            .did
            .contains(&Did::Close(leaf, bye::CODE_BAD_QUERIES))
    );
    // Nothing more from it is read.
    let before = e.stats().over_budget(BudgetKind::Query);
    frames(&mut e, leaf, vec![frame([200; 16], &query("x"), 2, 0)], t0);
    assert_eq!(e.stats().over_budget(BudgetKind::Query), before);
}

#[test]
fn pings_pongs_pushes_and_vendor_messages() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &["a.txt"]);
    let n = open(&mut e, 1, Link::Peer, t0);
    // A TTL-1 Ping gets our own Pong, with the address the peer reaches us at.
    frames(
        &mut e,
        n,
        vec![frame([1; 16], &Message::Ping(Ping::default()), 1, 0)],
        t0,
    );
    let pong = e
        .links
        .did
        .iter()
        .find_map(|d| match d {
            Did::Send(_, _, f) if f.header.function == Function::Pong => Some(f.clone()),
            _ => None,
        })
        .expect("a Pong");
    assert_eq!(&pong.payload[..6], &[0xca, 0x18, 10, 0, 0, 1]);
    // A Push for us goes to the shell to be answered; one for another GUID
    // has no route.
    e.links.did.clear();
    let push = |target: Guid| {
        Message::Push(Push {
            servent: target,
            index: 1,
            ip: Ipv4Addr::new(10, 0, 0, 9),
            port: 7000,
            ggep: None,
        })
    };
    frames(&mut e, n, vec![frame([2; 16], &push(ME), 3, 0)], t0);
    frames(
        &mut e,
        n,
        vec![frame([3; 16], &push(Guid([1; 16])), 3, 0)],
        t0,
    );
    assert!(
        matches!(&e.links.did[..], [Did::Push(p)] if p.servent == ME),
        "{:?}",
        e.links.did
    );
    // A leaf asking us to be its push proxy gets LIME/22v2 with its GUID.
    let leaf = open(&mut e, 2, Link::ToLeaf, t0);
    let ask = Message::Vendor(crate::wire::VendorMsg {
        vendor: *b"LIME",
        selector: 21,
        version: 1,
        body: Bytes::new(),
    });
    frames(&mut e, leaf, vec![frame([0x5a; 16], &ask, 1, 0)], t0);
    let ack = e
        .links
        .did
        .iter()
        .find_map(|d| match d {
            Did::Send(c, _, f) if *c == leaf => Some(f.clone()),
            _ => None,
        })
        .expect("an ack");
    assert_eq!(ack.header.guid, Guid([0x5a; 16]));
    assert_eq!(&ack.payload[..8], b"LIME\x16\x00\x02\x00");
    // A TCP connect-back request: once per link, to the peer's own IP.
    e.links.did.clear();
    let cb = Message::Vendor(crate::wire::VendorMsg {
        vendor: *b"BEAR",
        selector: 7,
        version: 1,
        body: Bytes::from_static(&[0x39, 0x30]),
    });
    frames(
        &mut e,
        n,
        vec![frame([4; 16], &cb, 1, 0), frame([5; 16], &cb, 1, 0)],
        t0,
    );
    assert_eq!(
        e.links.did,
        [Did::ConnectBack("10.0.0.2:12345".parse().unwrap())]
    );
    // A Bye closes without answering.
    e.links.did.clear();
    let bye = Message::Bye(crate::wire::Bye::new(200, "done"));
    frames(&mut e, n, vec![frame([6; 16], &bye, 1, 0)], t0);
    assert_eq!(e.links.did, [Did::CloseSilently(n)]);
}

#[test]
fn a_refused_table_update_is_offered_again() {
    let (mut e, t0) = engine(Mode::Leaf, &["song.ogg"]);
    let up = open(&mut e, 1, Link::ToUltrapeer, t0);
    let tick = |e: &mut Engine<Record>, s: u64| {
        e.handle(
            Event::Tick {
                busy: 0.0,
                wall: SystemTime::UNIX_EPOCH,
            },
            t0 + Duration::from_secs(s),
        )
    };
    e.links.refuse_control = true;
    tick(&mut e, 1);
    assert_eq!(e.stats().tables_sent, 0);
    assert_eq!(e.stats().control_retries, 1);
    e.links.refuse_control = false;
    e.links.did.clear();
    tick(&mut e, 2);
    assert_eq!(e.stats().tables_sent, 1);
    let table: Vec<Function> = sent(&e)
        .into_iter()
        .filter(|(c, f, _, _)| *c == up && *f == Function::RouteTable)
        .map(|x| x.1)
        .collect();
    assert!(table.len() >= 2, "RESET and PATCH: {table:?}");
    // Sent once it went: not again while nothing changes.
    e.links.did.clear();
    tick(&mut e, 3);
    assert!(
        !sent(&e)
            .iter()
            .any(|(_, f, _, _)| *f == Function::RouteTable)
    );
}

#[test]
fn links_closed_are_forgotten_and_their_counts_given_back() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    let a = open(&mut e, 1, Link::ToLeaf, t0);
    let _b = open(&mut e, 2, Link::Peer, t0);
    assert_eq!((e.stats().leaves, e.stats().mesh_links), (1, 1));
    e.handle(Event::Closed { conn: a }, t0);
    assert!(!e.knows(a));
    assert_eq!((e.stats().leaves, e.stats().connections), (0, 1));
    // Frames from a closed link are ignored.
    frames(&mut e, a, vec![frame([1; 16], &query("x"), 2, 0)], t0);
    assert!(e.links.did.is_empty());
}

#[test]
fn our_table_is_kept_file_by_file_and_equals_a_rebuild() {
    let (mut e, t0) = engine(Mode::Leaf, &["free software song.ogg", "holiday photo.jpg"]);
    let add = |e: &mut Engine<Record>, name: &str, urn: Option<Sha1Urn>| {
        e.handle(
            Event::Added {
                name: name.into(),
                path: PathBuf::from(format!("/s/{name}")),
                size: 1,
                mtime: SystemTime::UNIX_EPOCH,
                urn,
                fth: None,
            },
            t0,
        )
    };
    add(&mut e, "song of songs.mp3", None);
    add(&mut e, "another song.mp3", Some(Sha1Urn::digest(b"x")));
    e.handle(
        Event::Hashed {
            path: PathBuf::from("/s/song of songs.mp3"),
            size: 1,
            urn: Sha1Urn::digest(b"y"),
            fth: crate::fasttrack::hash::fth(b"y"),
        },
        t0,
    );
    e.handle(
        Event::Removed {
            path: PathBuf::from("/s/free software song.ogg"),
        },
        t0,
    );
    // Hashed again with another SHA-1 (the file changed): the old URN goes.
    e.handle(
        Event::Hashed {
            path: PathBuf::from("/s/song of songs.mp3"),
            size: 1,
            urn: Sha1Urn::digest(b"z"),
            fth: crate::fasttrack::hash::fth(b"z"),
        },
        t0,
    );
    let mut rebuilt = QrpTable::new(TABLE_LEN).unwrap();
    for f in e.library.view().files() {
        rebuilt.insert_text(f.name);
        if let Some(u) = &f.sha1 {
            rebuilt.insert_keyword(&urn_keyword(u));
        }
    }
    assert_eq!(e.lib_table.table(), rebuilt);
    assert!(
        !rebuilt.contains_keyword("software"),
        "a removed file's words go"
    );
    assert!(
        rebuilt.contains_keyword("song"),
        "words other files still have stay"
    );
    assert!(!rebuilt.contains_keyword(&urn_keyword(&Sha1Urn::digest(b"y"))));
    // The FastTrack hash follows the SHA-1: the new one in, the old one out.
    let fth = |b: &[u8]| crate::fasttrack::hash::fth(b);
    let view = e.library.view();
    let song = view.by_fth(&fth(b"z")).map(|f| f.name);
    assert_eq!(song, Some("song of songs.mp3"));
    assert!(view.by_fth(&fth(b"y")).is_none());
}

#[test]
fn leaves_get_alive_pings_ultrapeers_crawling_ones() {
    // LimeWire answers a TTL-2 Ping from a leaf's ultrapeer as a crawler's
    // (with nothing, being a leaf); a TTL-1 Ping it answers with its Pong.
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    for (conn, link, want) in [
        (1u64, Link::ToLeaf, 1u8),
        (2, Link::Peer, 2),
        (3, Link::Flat, 2),
    ] {
        e.tier.opened(link, t0);
        e.handle(
            Event::Opened {
                conn: ConnId(conn),
                info: info(link, 7000 + conn as u16),
            },
            t0,
        );
        let pings: Vec<u8> = sent(&e)
            .into_iter()
            .filter(|(c, f, _, _)| *c == ConnId(conn) && *f == Function::Ping)
            .map(|x| x.2)
            .collect();
        assert_eq!(pings, [want], "{link:?}");
        e.links.did.clear();
    }
    // The periodic ones too.
    e.handle(
        Event::Tick {
            busy: 0.0,
            wall: SystemTime::UNIX_EPOCH,
        },
        t0 + PING_EVERY,
    );
    let mut got: Vec<(ConnId, u8)> = sent(&e)
        .into_iter()
        .filter(|x| x.1 == Function::Ping)
        .map(|x| (x.0, x.2))
        .collect();
    got.sort();
    assert_eq!(got, [(ConnId(1), 1), (ConnId(2), 2), (ConnId(3), 2)]);
}

#[test]
fn our_table_holds_each_leafs_table_until_it_goes() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &["own file.txt"]);
    let leaf = open(&mut e, 1, Link::ToLeaf, t0);
    // The leaf's table (1024 slots, rescaled into our 65,536).
    let mut t = QrpTable::new(1024).unwrap();
    t.insert_keyword("holiday");
    let empty = QrpTable::new(1024).unwrap();
    let diff = t.diff(&empty, qrp::DEFAULT_INFINITY).unwrap();
    let mut f = vec![frame(
        [9; 16],
        &Message::RouteTable(RouteTableUpdate::Reset {
            table_len: 1024,
            infinity: qrp::DEFAULT_INFINITY,
        }),
        1,
        0,
    )];
    for c in qrp::build_patch_chunks(&diff, 4, true, 4096).unwrap() {
        f.push(frame([10; 16], &Message::RouteTable(c.into()), 1, 0));
    }
    frames(&mut e, leaf, f, t0);
    let ours = e.build_table();
    assert!(
        ours.contains_keyword("holiday"),
        "the leaf's words are in ours"
    );
    assert!(ours.contains_keyword("own"));
    let mut rebuilt = e.lib_table.table();
    rebuilt.merge(&t);
    assert_eq!(ours, rebuilt, "as a merge of the leaf's table would give");
    e.handle(Event::Closed { conn: leaf }, t0);
    let ours = e.build_table();
    assert!(!ours.contains_keyword("holiday"), "gone with the leaf");
    assert_eq!(ours, e.lib_table.table());
}

#[test]
fn only_a_leaf_query_asking_for_oob_is_rewritten() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    let up = open(&mut e, 1, Link::Peer, t0);
    let leaf = open(&mut e, 2, Link::ToLeaf, t0);
    let forwarded = |e: &Engine<Record>| -> Vec<Bytes> {
        e.links
            .did
            .iter()
            .filter_map(|d| match d {
                Did::Send(c, _, f) if *c == up && f.header.function == Function::Query => {
                    Some(f.payload.clone())
                }
                _ => None,
            })
            .collect()
    };
    // No OOB request: the payload goes on as it came.
    let plain = frame([1; 16], &query("plain words"), 3, 0);
    frames(&mut e, leaf, vec![plain.clone()], t0);
    assert_eq!(forwarded(&e), std::slice::from_ref(&plain.payload));
    assert_eq!(e.stats().oob_stripped, 0);
    // The flag and GGEP SO go; the text stays.
    e.links.did.clear();
    let mut q = Query::new(QueryFlags::with_bits(QueryFlags::OOB), "oob words");
    q.ext
        .items
        .push(crate::wire::ExtItem::Ggep(crate::wire::Ggep::new(vec![
            crate::wire::GgepExt::new("SO", Bytes::new()),
        ])));
    frames(
        &mut e,
        leaf,
        vec![frame([2; 16], &Message::Query(q), 3, 0)],
        t0,
    );
    let sent = forwarded(&e);
    assert_eq!(sent.len(), 1);
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    let got = Query::parse(&sent[0], &mut budget).unwrap();
    assert!(!got.flags.has(QueryFlags::OOB));
    assert!(got.ext.items.is_empty(), "{:?}", got.ext);
    assert_eq!(got.text_lossy(), "oob words");
    assert_eq!(e.stats().oob_stripped, 1);
}

#[test]
fn offers_are_bounded_per_leaf_and_for_all_leaves_together() {
    use crate::wire::library_offer::{OfferChunk, OfferedFile};
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    let offer = |leaf: u64, files: u32| -> Vec<Frame> {
        let files: Vec<OfferedFile> = (0..files)
            .map(|i| OfferedFile {
                index: i + 1,
                size: 10,
                sha1: None,
                fth: None,
                name: format!("leaf{leaf} file{i}.txt"),
            })
            .collect();
        OfferChunk::encode_all(&files, false)
            .into_iter()
            .map(|m| frame([leaf as u8; 16], &Message::Vendor(m), 1, 0))
            .collect()
    };
    let per_leaf = Engine::<Record>::MAX_OFFERED as u32;
    let total = Engine::<Record>::MAX_OFFERED_TOTAL as u32;
    // One leaf offering more than a leaf may: refused.
    let big = open(&mut e, 1, Link::ToLeaf, t0);
    frames(&mut e, big, offer(1, per_leaf + 1), t0);
    assert_eq!(
        (e.stats().offers_received, e.stats().offers_refused),
        (0, 1)
    );
    // Leaves offering just under the limit each, until all of them together
    // would pass the node's bound.
    let fit = total / (per_leaf - 1);
    for leaf in 0..fit + 1 {
        let c = open(&mut e, 10 + leaf as u64, Link::ToLeaf, t0);
        frames(&mut e, c, offer(10 + leaf as u64, per_leaf - 1), t0);
    }
    assert_eq!(e.stats().offers_received, fit as u64);
    assert_eq!(e.stats().offers_refused, 2);
    // A leaf that goes gives its room back.
    e.handle(Event::Closed { conn: ConnId(10) }, t0);
    let c = open(&mut e, 99, Link::ToLeaf, t0);
    frames(&mut e, c, offer(99, per_leaf - 1), t0);
    assert_eq!(e.stats().offers_received, fit as u64 + 1);
}

#[test]
fn a_search_of_our_own_goes_to_every_neighbour_and_its_hits_come_to_us() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    let a = open(&mut e, 1, Link::Flat, t0);
    let b = open(&mut e, 2, Link::Peer, t0);
    let mut payload = BytesMut::new();
    query("free song").encode_payload(&mut payload).unwrap();
    let id = Guid([0x77; 16]);
    assert_eq!(e.search(id, payload.freeze(), 5, t0), 2);
    let mut got = sent(&e);
    got.sort_by_key(|x| x.0);
    assert_eq!(
        got,
        vec![(a, Function::Query, 5, 0), (b, Function::Query, 5, 0)]
    );
    // A responder (another core) answers through b; the hit is ours.
    let the_query = match &e.links.did[0] {
        Did::Send(_, _, f) => f.clone(),
        other => panic!("{other:?}"),
    };
    let (mut other, _) = engine(Mode::Ultrapeer, &["free software song.ogg"]);
    let back = open(&mut other, 9, Link::Flat, t0);
    frames(&mut other, back, vec![the_query.clone()], t0);
    let hit = other
        .links
        .did
        .iter()
        .find_map(|d| match d {
            Did::Send(_, _, f) if f.header.function == Function::QueryHit => Some(f.clone()),
            _ => None,
        })
        .expect("the other core answers");
    e.links.did.clear();
    frames(&mut e, b, vec![hit], t0);
    assert_eq!(e.links.did, vec![Did::OwnHit(id)]);
    // Our own query coming back on a is a duplicate, counted for a.
    e.links.did.clear();
    frames(&mut e, a, vec![the_query], t0);
    assert!(e.links.did.is_empty(), "{:?}", e.links.did);
    let reports = e.link_reports();
    assert_eq!(reports[0].conn, a);
    assert_eq!(reports[0].drops.get("duplicate"), Some(&1));
    assert!(reports[1].drops.is_empty());
}

fn tick(e: &mut Engine<Record>, now: Instant) {
    e.handle(
        Event::Tick {
            busy: 0.0,
            wall: SystemTime::UNIX_EPOCH,
        },
        now,
    );
}

/// The vendor messages sent, with the link and MUID.
fn vendor_sent(e: &Engine<Record>) -> Vec<(ConnId, Guid, crate::wire::VendorMsg)> {
    e.links
        .did
        .iter()
        .filter_map(|d| match d {
            Did::Send(c, _, f) if f.header.function == Function::Vendor => Some((
                *c,
                f.header.guid,
                crate::wire::VendorMsg::parse(&f.payload).ok()?,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn an_ultrapeer_asks_a_guided_leaf_and_stops_when_it_says_so() {
    use crate::wire::vendor::{QueryStatusRequest, QueryStatusResponse};
    let (mut e, t0) = engine(Mode::Ultrapeer, &[]);
    for c in 1..=8 {
        open(&mut e, c, Link::Peer, t0);
    }
    let leaf = open(&mut e, 20, Link::ToLeaf, t0);
    // The leaf marks its query leaf-guided (flag 0x1000).
    let guided = Message::Query(Query::new(
        QueryFlags::with_bits(QueryFlags::LEAF_GUIDED),
        "rare words",
    ));
    frames(&mut e, leaf, vec![frame([0x11; 16], &guided, 3, 0)], t0);
    assert_eq!(e.dynamic_running(), 1);
    e.links.did.clear();
    // When the next step is due, the leaf is asked first (MUID = query's).
    let due = t0 + Duration::from_secs(10);
    tick(&mut e, due);
    let asked = vendor_sent(&e);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!((asked[0].0, asked[0].1), (leaf, Guid([0x11; 16])));
    assert!(QueryStatusRequest::parse(&asked[0].2).is_some());
    assert_eq!(e.stats().guidance_asked, 1);
    // The leaf says it kept enough: the search ends without another step.
    let answer = Message::Vendor(QueryStatusResponse { kept: 200 }.to_vendor());
    frames(&mut e, leaf, vec![frame([0x11; 16], &answer, 1, 0)], due);
    e.links.did.clear();
    tick(&mut e, due + Duration::from_secs(1));
    assert_eq!(e.dynamic_running(), 0);
    assert!(
        !e.links
            .did
            .iter()
            .any(|d| matches!(d, Did::Send(_, _, f) if f.header.function == Function::Query)),
        "no step after the leaf had enough"
    );
    assert_eq!(e.stats().guidance_received, 1);
    // An answer from another link, or for no search, is dropped and counted.
    let other = open(&mut e, 21, Link::ToLeaf, t0);
    frames(&mut e, other, vec![frame([0x11; 16], &answer, 1, 0)], due);
    assert_eq!(e.stats().guidance_dropped, 1);
    // A query without the flag from a leaf that does not list BEAR/11 is not
    // guided: steps are taken without asking.
    frames(
        &mut e,
        leaf,
        vec![frame([0x22; 16], &query("plain words"), 3, 0)],
        due,
    );
    e.links.did.clear();
    tick(&mut e, due + Duration::from_secs(20));
    assert!(vendor_sent(&e).is_empty());
}

#[test]
fn a_leaf_answers_status_requests_with_what_its_search_kept() {
    use crate::wire::vendor::{QueryStatusRequest, QueryStatusResponse};
    let (mut e, t0) = engine(Mode::Leaf, &[]);
    let up = open(&mut e, 1, Link::ToUltrapeer, t0);
    let guid = Guid([0x33; 16]);
    let mut q = BytesMut::new();
    Message::Query(Query::new(QueryFlags::with_bits(0), "some words"))
        .encode_payload(&mut q)
        .unwrap();
    e.search(guid, q.freeze(), 3, t0);
    // Our query went out marked leaf-guided.
    let sent_q = e
        .links
        .did
        .iter()
        .find_map(|d| match d {
            Did::Send(_, _, f) if f.header.function == Function::Query => Some(f.clone()),
            _ => None,
        })
        .expect("the query");
    assert!(QueryFlags([sent_q.payload[0], sent_q.payload[1]]).has(QueryFlags::LEAF_GUIDED));
    // Two hits of 1 and 2 results come back.
    for (i, n) in [1usize, 2].into_iter().enumerate() {
        let hit = Message::QueryHit(QueryHit {
            port: 6346,
            ip: Ipv4Addr::new(10, 0, 0, 9),
            speed: 0,
            results: (0..n)
                .map(|j| HitResult::new(j as u32 + 1, 10, &format!("w{i}{j}"), None))
                .collect(),
            trailer: TrailerArea::Qhd(Trailer::new(*b"GTKG", OpenDataFlags::default(), None)),
            servent: Guid([0x44 + i as u8; 16]),
        });
        frames(&mut e, up, vec![frame([0x33; 16], &hit, 3, 1)], t0);
    }
    e.links.did.clear();
    let ask = Message::Vendor(QueryStatusRequest.to_vendor());
    frames(&mut e, up, vec![frame([0x33; 16], &ask, 1, 0)], t0);
    let got = vendor_sent(&e);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0, got[0].1), (up, guid));
    assert_eq!(
        QueryStatusResponse::parse(&got[0].2),
        Some(Ok(QueryStatusResponse { kept: 3 }))
    );
    // Once the search is over: stop.
    e.end_search(guid);
    e.links.did.clear();
    frames(&mut e, up, vec![frame([0x33; 16], &ask, 1, 0)], t0);
    assert_eq!(
        QueryStatusResponse::parse(&vendor_sent(&e)[0].2),
        Some(Ok(QueryStatusResponse {
            kept: QueryStatusResponse::STOP
        }))
    );
    assert_eq!(e.stats().guidance_answered, 2);
}

#[test]
fn hsep_goes_only_to_links_that_announced_it() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &["a.txt", "b.txt"]);
    let plain = open(&mut e, 1, Link::Peer, t0);
    let c = ConnId(2);
    e.tier.opened(Link::Peer, t0);
    e.handle(
        Event::Opened {
            conn: c,
            info: LinkInfo {
                hsep: true,
                ..info(Link::Peer, 6002)
            },
        },
        t0,
    );
    e.links.did.clear();
    tick(&mut e, t0);
    let hsep: Vec<(ConnId, Frame)> = e
        .links
        .did
        .iter()
        .filter_map(|d| match d {
            Did::Send(c, _, f) if f.header.function == Function::Unknown(0xCD) => {
                Some((*c, f.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(hsep.len(), 1);
    assert_eq!(hsep[0].0, c);
    assert_eq!(
        (hsep[0].1.header.ttl, hsep[0].1.header.hops),
        (Ttl(1), Hops(0))
    );
    let triples = crate::wire::hsep::parse(&hsep[0].1.payload).unwrap();
    assert_eq!(triples[0].hosts, 1);
    assert_eq!(triples[0].files, 2);
    // Its message is taken; the other link's is dropped with a reason.
    let mut payload = BytesMut::new();
    crate::wire::hsep::encode(
        &[crate::wire::hsep::Triple {
            hosts: 1,
            files: 7,
            kib: 70,
        }],
        &mut payload,
    );
    let h = Header {
        guid: Guid([9; 16]),
        function: Function::Unknown(0xCD),
        ttl: Ttl(1),
        hops: Hops(0),
        payload_len: payload.len() as u32,
    };
    let f = Frame {
        header: h,
        payload: payload.freeze(),
    };
    frames(&mut e, c, vec![f.clone()], t0);
    frames(&mut e, plain, vec![f], t0);
    let s = e.stats();
    assert_eq!((s.hsep_received, s.hsep_dropped), (1, 1));
    assert_eq!(s.horizon[0].files, 7);
    assert_eq!(s.horizon[9].files, 7);
    assert_eq!(s.unknown, 0);
}

#[test]
fn our_hits_say_we_can_be_browsed() {
    let (mut e, t0) = engine(Mode::Ultrapeer, &["browsable song.ogg"]);
    let n = open(&mut e, 1, Link::Peer, t0);
    frames(
        &mut e,
        n,
        vec![frame([0x66; 16], &query("browsable"), 3, 0)],
        t0,
    );
    let hit = e
        .links
        .did
        .iter()
        .find_map(|d| match d {
            Did::Send(c, _, f) if *c == n && f.header.function == Function::QueryHit => {
                Some(f.clone())
            }
            _ => None,
        })
        .expect("a hit");
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    let hit = QueryHit::parse(&hit.payload, &mut budget).unwrap();
    let ggep = hit
        .qhd()
        .and_then(|t| t.private.ggep.as_ref())
        .expect("GGEP");
    assert!(ggep.get(crate::wire::browse::GGEP_BH).is_some());
}
