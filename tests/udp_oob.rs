//! Out-of-band hits end to end on loopback: a leaf's search answered by UDP
//! from a far ultrapeer, a responder driven by a raw UDP querier (offer,
//! claim with a token, hits carrying it, a repeated claim), a querier
//! refusing forged tokens, and an ultrapeer proxying for a leaf that has no
//! UDP. Every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::Dir;
use common::raw::{Raw, dial_raw};
use servent::node::control::SearchFor;
use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig};
use servent::wire::ext::ExtItem;
use servent::wire::oob::{self, Ack, Indication};
use servent::wire::queryhit::QueryHitView;
use servent::wire::{
    Function, Ggep, GgepExt, Guid, HitResult, Hops, Message, OpenDataFlags, Query, QueryFlags,
    QueryHit, Trailer, TrailerArea, Ttl, VendorMsg,
};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);
const UP: &str =
    "User-Agent: oob-test/1\r\nX-Ultrapeer: True\r\nX-Degree: 32\r\nX-Query-Routing: 0.1\r\n";

async fn node(
    dir: &Dir,
    name: &str,
    mode: Mode,
    file: Option<&str>,
    peers: Vec<String>,
    udp: bool,
) -> NodeHandle {
    let share = dir.sub(name);
    if let Some(f) = file {
        std::fs::write(share.join(f), f.as_bytes()).unwrap();
    }
    let config = NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![share],
        peers,
        target_peers: 0,
        local_network: true,
        udp,
        tier: TierConfig {
            mode,
            ..TierConfig::default()
        },
        ..NodeConfig::default()
    };
    node::start(config, CancellationToken::new()).await.unwrap()
}

/// Waits until the search has `n` hits; returns them.
async fn hits(entry: &node::control::SearchEntry, n: usize) -> Vec<servent::output::Hit> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = entry.hits();
        if h.len() >= n || tokio::time::Instant::now() > deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Leaf L — ultrapeer A — ultrapeer B sharing the file. `leaf_udp`: whether
/// L has a UDP port.
async fn line(dir: &Dir, leaf_udp: bool) -> (NodeHandle, NodeHandle, NodeHandle) {
    let mut b = node(
        dir,
        "b",
        Mode::Ultrapeer,
        Some("far away file.txt"),
        vec![],
        true,
    )
    .await;
    let mut a = node(
        dir,
        "a",
        Mode::Ultrapeer,
        None,
        vec![b.local_addr.to_string()],
        true,
    )
    .await;
    let mut l = node(
        dir,
        "l",
        Mode::Leaf,
        None,
        vec![a.local_addr.to_string()],
        leaf_udp,
    )
    .await;
    assert!(
        a.wait_for(WAIT, |s| s.mesh_links == 1
            && s.leaves == 1
            && s.connections == 2)
            .await
    );
    assert!(b.wait_for(WAIT, |s| s.connections == 1).await);
    assert!(
        l.wait_for(WAIT, |s| s.to_ultrapeers == 1 && s.connections == 1)
            .await
    );
    // B's table has reached A (A probes B with it).
    assert!(a.wait_for(WAIT, |s| s.tables_received >= 1).await);
    // Pinged back by UDP, A (and L when it has a port) know unsolicited
    // datagrams reach them: only then do they mark or proxy queries.
    assert!(a.wait_for(WAIT, |s| s.reach.udp == Some("yes")).await);
    if leaf_udp {
        assert!(l.wait_for(WAIT, |s| s.reach.udp == Some("yes")).await);
    }
    (l, a, b)
}

#[tokio::test]
async fn a_leaf_gets_hits_by_udp_from_a_far_ultrapeer() {
    let dir = Dir::new("oob-leaf");
    let (l, a, b) = line(&dir, true).await;
    let entry = l
        .control()
        .search(SearchFor::Words("far away".into()))
        .unwrap();
    let got = hits(&entry, 1).await;
    assert_eq!(got.len(), 1, "{:?} {:?}", l.stats().oob, b.stats().oob);
    assert_eq!(got[0].name, "far away file.txt");
    let (ls, as_, bs) = (l.stats(), a.stats(), b.stats());
    // L marked it, A relayed it as it was, B offered and sent by UDP, L
    // claimed and took the hit by UDP.
    assert_eq!(ls.oob.marked, 1);
    assert_eq!(as_.oob.relayed, 1);
    assert_eq!(as_.oob.proxied, 0);
    assert_eq!(bs.oob.offered, 1);
    assert_eq!((bs.oob.claimed, bs.oob.results_sent), (1, 1));
    assert_eq!(ls.oob.acks_sent, 1);
    assert_eq!((ls.oob.hits_received, ls.oob.results_received), (1, 1));
    assert!(ls.udp.taken.get("query-hit").copied().unwrap_or(0) >= 1);
    // Nothing came back along the TCP path.
    assert_eq!(as_.relayed.query_hits, 0);
    assert_eq!(bs.hits_sent, 0);
    for n in [l, a, b] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn an_ultrapeer_proxies_for_a_leaf_without_udp() {
    let dir = Dir::new("oob-proxy");
    let (l, a, b) = line(&dir, false).await;
    assert_eq!(l.udp_addr, None);
    let entry = l
        .control()
        .search(SearchFor::Words("far away".into()))
        .unwrap();
    let got = hits(&entry, 1).await;
    assert_eq!(got.len(), 1, "{:?} {:?}", a.stats().oob, b.stats().oob);
    let (ls, as_, bs) = (l.stats(), a.stats(), b.stats());
    assert_eq!(ls.oob.marked, 0, "no UDP, no OOB of its own");
    assert_eq!(as_.oob.proxied, 1);
    assert_eq!(as_.oob.acks_sent, 1);
    assert_eq!(as_.oob.hits_received, 1);
    assert_eq!(as_.oob.to_leaves, 1, "down the leaf's TCP link");
    assert_eq!(bs.oob.offered, 1);
    assert_eq!(ls.udp.received, 0);
    for n in [l, a, b] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
}

fn encode(guid: Guid, ttl: u8, hops: u8, m: &Message) -> Bytes {
    let mut out = BytesMut::new();
    m.encode_frame(guid, Ttl(ttl), Hops(hops), &mut out)
        .unwrap();
    out.freeze()
}

/// An OOB query for `words` whose MUID names `reply`.
fn oob_query(words: &str, reply: SocketAddr) -> (Guid, Message) {
    let SocketAddr::V4(r) = reply else { panic!() };
    let muid = oob::with_muid_addr(Guid::new_random(), r);
    let mut q = Query::new(QueryFlags::with_bits(QueryFlags::OOB), words);
    q.ext
        .items
        .push(ExtItem::Ggep(Ggep::new(vec![GgepExt::flag(oob::GGEP_SO)])));
    (muid, Message::Query(q))
}

/// The next datagram on `s` (within `d`), as a frame's bytes.
async fn recv(s: &UdpSocket, d: Duration) -> Option<(Bytes, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(d, s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some((Bytes::copy_from_slice(&buf[..n]), from))
}

fn vendor_of(b: &Bytes) -> VendorMsg {
    assert_eq!(b[16], 0x31, "a vendor message");
    VendorMsg::parse(&b.slice(23..)).unwrap()
}

#[tokio::test]
async fn a_responder_offers_then_sends_the_claimed_hits_with_the_token() {
    let dir = Dir::new("oob-responder");
    let mut n = node(
        &dir,
        "n",
        Mode::Ultrapeer,
        Some("raw oob file.txt"),
        vec![],
        true,
    )
    .await;
    let (answer, raw) = dial_raw(n.local_addr, UP).await;
    let mut p: Raw = raw.unwrap_or_else(|| panic!("{answer}"));
    let q = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply = q.local_addr().unwrap();

    // Relayed once (hops 1): answered out of band.
    let (muid, query) = oob_query("raw oob", reply);
    p.send_msg(muid, 3, 1, &query).await;
    let (offer, from) = recv(&q, WAIT).await.expect("a LIME/12");
    assert_eq!(from, n.udp_addr.unwrap(), "from the node's UDP port");
    assert_eq!(Guid::from_slice(&offer[..16]), Some(muid));
    let ind = Indication::parse(&vendor_of(&offer)).unwrap();
    assert_eq!((ind.hits, ind.version), (1, 3));
    // Claimed with a token: the hit comes by UDP carrying it.
    let token = Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]);
    let ack = Ack {
        wanted: 255,
        token: Some(token.clone()),
    };
    q.send_to(&encode(muid, 1, 0, &Message::Vendor(ack.to_vendor())), from)
        .await
        .unwrap();
    let (hit, _) = recv(&q, WAIT).await.expect("the hit");
    assert_eq!(hit[16], 0x81);
    assert_eq!(Guid::from_slice(&hit[..16]), Some(muid));
    let view = QueryHitView::parse(&hit[23..]).unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(oob::hit_token(&view.trailer), Some(&token[..]));
    // The same claim again: each hit goes once.
    q.send_to(&encode(muid, 1, 0, &Message::Vendor(ack.to_vendor())), from)
        .await
        .unwrap();
    assert!(
        n.wait_for(WAIT, |s| s.udp.dropped("oob-ack-duplicate") == 1)
            .await
    );
    assert!(recv(&q, Duration::from_millis(300)).await.is_none());

    // A neighbour's own query (hops 0) is answered along the link.
    let (muid2, query2) = oob_query("raw oob", reply);
    p.send_msg(muid2, 3, 0, &query2).await;
    let f = p.until(|f| f.header.function == Function::QueryHit).await;
    assert_eq!(f.header.guid, muid2);
    assert!(recv(&q, Duration::from_millis(300)).await.is_none());
    let s = n.stats();
    assert_eq!(
        (s.oob.offered, s.oob.claimed, s.oob.results_sent),
        (1, 1, 1)
    );
    assert_eq!(s.hits_sent, 1, "one hit over TCP, for the neighbour");
    tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
}

/// A hit for `muid` with `token` in its trailer.
fn hit_with(muid: Guid, token: &[u8]) -> Bytes {
    let g = Ggep::new(vec![GgepExt::new(
        oob::GGEP_SO,
        Bytes::copy_from_slice(token),
    )]);
    let hit = QueryHit {
        port: 6346,
        ip: std::net::Ipv4Addr::new(127, 0, 0, 1),
        speed: 0,
        results: vec![HitResult::new(3, 1234, "claimed file.txt", None)],
        trailer: TrailerArea::Qhd(Trailer::new(*b"TEST", OpenDataFlags::default(), Some(g))),
        servent: Guid([0x42; 16]),
    };
    encode(muid, 1, 0, &Message::QueryHit(hit))
}

#[tokio::test]
async fn a_querier_takes_only_hits_with_its_token() {
    let dir = Dir::new("oob-querier");
    let mut n = node(&dir, "n", Mode::Ultrapeer, None, vec![], true).await;
    // A node beside it pings it back by UDP: it learns it can receive
    // unsolicited datagrams, and only then marks its searches.
    let m = node(
        &dir,
        "m",
        Mode::Ultrapeer,
        None,
        vec![n.local_addr.to_string()],
        true,
    )
    .await;
    assert!(
        n.wait_for(WAIT, |s| s.reach.udp == Some("yes")).await,
        "{:?}",
        n.stats().reach
    );
    let (answer, raw) = dial_raw(n.local_addr, UP).await;
    let mut p: Raw = raw.unwrap_or_else(|| panic!("{answer}"));
    // Open in the core, not only admitted: our search goes to open links.
    assert!(n.wait_for(WAIT, |s| s.connections == 2).await);
    let entry = n
        .control()
        .search(SearchFor::Words("claimed".into()))
        .unwrap();
    // The query asks for OOB both ways, at the node's UDP address.
    let f = p.until(|f| f.header.function == Function::Query).await;
    let udp = n.udp_addr.unwrap();
    let SocketAddr::V4(u4) = udp else { panic!() };
    assert_eq!(oob::muid_addr(&f.header.guid), u4);
    let view = servent::wire::query::QueryView::parse(&f.payload).unwrap();
    let req = oob::OobRequest::of(&view);
    assert!(req.flag && req.secure, "{req:?}");
    let muid = f.header.guid;

    let r = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let offer = Indication {
        hits: 2,
        unsolicited: false,
        version: 3,
    };
    r.send_to(
        &encode(muid, 1, 0, &Message::Vendor(offer.to_vendor())),
        udp,
    )
    .await
    .unwrap();
    let (ack, _) = recv(&r, WAIT).await.expect("a LIME/11");
    assert_eq!(ack[17], 9, "TTL 9: deflated hits welcome");
    let ack = Ack::parse(&vendor_of(&ack)).unwrap();
    assert_eq!(ack.wanted, 2);
    let token = ack.token.expect("v3 brings a token");
    assert_eq!(token.len(), 4);

    // A forged token, and a source that was never claimed: dropped.
    let mut forged = token.to_vec();
    forged[0] ^= 0xff;
    r.send_to(&hit_with(muid, &forged), udp).await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other.send_to(&hit_with(muid, &token), udp).await.unwrap();
    assert!(
        n.wait_for(WAIT, |s| s.udp.dropped("oob-token-forged") == 1
            && s.udp.dropped("oob-hit-unclaimed") == 1)
            .await,
        "{:?}",
        n.stats().udp
    );
    assert_eq!(n.stats().oob.forged, 1);
    assert!(entry.hits().is_empty());
    // The real one reaches the search.
    r.send_to(&hit_with(muid, &token), udp).await.unwrap();
    let got = hits(&entry, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, "claimed file.txt");
    assert_eq!(n.stats().oob.hits_received, 1);
    for n in [n, m] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
}

#[tokio::test]
async fn servent_search_claims_out_of_band_hits_on_its_own_socket() {
    let dir = Dir::new("oob-search");
    let mut b = node(
        &dir,
        "b",
        Mode::Ultrapeer,
        Some("far away file.txt"),
        vec![],
        true,
    )
    .await;
    let mut a = node(
        &dir,
        "a",
        Mode::Ultrapeer,
        None,
        vec![b.local_addr.to_string()],
        true,
    )
    .await;
    assert!(a.wait_for(WAIT, |s| s.connections == 1).await);
    assert!(b.wait_for(WAIT, |s| s.connections == 1).await);
    assert!(a.wait_for(WAIT, |s| s.tables_received >= 1).await);
    let mut found = Vec::new();
    let n = servent::node::search::search(&a.local_addr.to_string(), "far away", 4, WAIT, 1, |h| {
        found.push(h)
    })
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(found[0].name, "far away file.txt");
    // It came by UDP: B offered and sent it; A relayed the query as it was
    // and carried no hit.
    assert!(
        b.wait_for(WAIT, |s| s.oob.results_sent == 1).await,
        "{:?}",
        b.stats().oob
    );
    let s = a.stats();
    assert_eq!((s.oob.relayed, s.relayed.query_hits), (1, 0));
    for n in [a, b] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
}
