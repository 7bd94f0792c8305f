//! Out-of-band hits in the engine (`protocol-spec/oob.md`): the responder
//! offering its hits by LIME/12 and sending them by UDP when claimed, the
//! querier marking its searches and claiming with LIME/11, and the
//! ultrapeer proxying its leaves' queries. The decisions' state is
//! `core::oob`; this file moves it between links, datagrams and counters.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4};

use bytes::Bytes;

use super::*;
use crate::core::oob::{Answer, Claim, Claims, Held, HitVerdict, OobConfig, Owner};
use crate::wire::oob::{self as wire_oob, Ack, Indication, OobRequest, ProxyControl};
use crate::wire::queryhit::QueryHitView;
use crate::wire::udp::{Datagram, TTL_DEFLATE_OK};

/// The engine's out-of-band state.
pub(super) struct OobState {
    held: Held,
    pub(super) claims: Claims,
    /// Where our UDP port is bound (none: no UDP, every answer goes by TCP).
    pub(super) udp: Option<SocketAddr>,
    /// What each leaf said of proxying (LIME/13); none: proxying allowed.
    control: HashMap<ConnId, ProxyControl>,
    datagram: usize,
}

impl OobState {
    /// The MUID we gave leaf `conn`'s query `original` by proxying it
    /// (`original` itself when we do not proxy it).
    pub(super) fn proxied_muid(&self, conn: ConnId, original: Guid) -> Guid {
        self.claims.proxied(conn, original).unwrap_or(original)
    }

    pub(super) fn new(seed: u64) -> OobState {
        // The token key: from the core's seed, not the seed itself.
        let mut secret = [0u8; 16];
        let mut r = Rng(seed ^ 0x006f_6f62_7365_6372);
        secret[..8].copy_from_slice(&r.next().to_le_bytes());
        secret[8..].copy_from_slice(&r.next().to_le_bytes());
        let config = OobConfig::default();
        OobState {
            held: Held::new(config.clone()),
            claims: Claims::new(config.clone(), secret),
            udp: None,
            control: HashMap::new(),
            datagram: config.datagram,
        }
    }
}

/// `payload` (a Query) asking for out-of-band hits: flag 0x0400 (what
/// gtk-gnutella reads) and GGEP `SO` (what LimeWire reads). `None` when it
/// cannot be rewritten.
pub(super) fn mark_oob(payload: &Bytes) -> Option<Bytes> {
    use crate::wire::ext::ExtItem;
    use crate::wire::query::{Query, QueryFlags};
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    let mut q = Query::parse(payload, &mut budget).ok()?;
    let bits = if q.flags.is_flags() {
        q.flags.bits()
    } else {
        QueryFlags::MARKER
    };
    q.flags = QueryFlags::with_bits(bits | QueryFlags::OOB);
    let so = crate::wire::GgepExt::flag(wire_oob::GGEP_SO);
    let has_so = q
        .ext
        .items
        .iter()
        .any(|i| matches!(i, ExtItem::Ggep(g) if g.get(wire_oob::GGEP_SO).is_some()));
    if !has_so {
        match q.ext.items.iter_mut().find_map(|i| match i {
            ExtItem::Ggep(g) => Some(g),
            _ => None,
        }) {
            Some(g) => g.exts.push(so),
            None => q
                .ext
                .items
                .push(ExtItem::Ggep(crate::wire::Ggep::new(vec![so]))),
        }
    }
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    q.encode(&mut out).ok()?;
    Some(out.freeze())
}

/// A hit with `token` added to its trailer's GGEP block (as `SO`).
fn with_token(mut hit: QueryHit, token: Option<&Bytes>) -> QueryHit {
    let Some(token) = token else {
        return hit;
    };
    if let TrailerArea::Qhd(t) = &hit.trailer {
        let mut g = t.private.ggep.clone().unwrap_or_default();
        g.exts
            .push(crate::wire::GgepExt::new(wire_oob::GGEP_SO, token.clone()));
        hit.trailer = TrailerArea::Qhd(Trailer::new(t.vendor, t.flags(), Some(g)));
    }
    hit
}

/// A frame of `msg` under `guid`.
fn frame_of(msg: &Message, guid: Guid, ttl: u8) -> Option<Frame> {
    let mut out = BytesMut::new();
    msg.encode_frame(guid, Ttl(ttl), Hops(0), &mut out).ok()?;
    let bytes = out.freeze();
    let header = Header::parse_prefix(&bytes)?;
    Some(Frame {
        header,
        payload: bytes.slice(crate::wire::HEADER_LEN..),
    })
}

impl<L: Links> Engine<L> {
    /// Our UDP port is bound at `addr` (or not at all): from now on answers
    /// and searches may go out of band.
    pub fn set_udp_addr(&mut self, addr: Option<SocketAddr>) {
        self.oob.udp = addr;
    }

    /// The address out-of-band replies reach us at (written into MUIDs):
    /// our UDP port at our external IPv4 address when peers agree on one,
    /// else the one they reach us at, if the scope allows it; only while we
    /// can receive unsolicited UDP (`Engine::udp_reachable`).
    pub(super) fn oob_reply_addr(&self) -> Option<SocketAddrV4> {
        if !self.udp_reachable() {
            return None;
        }
        let udp = self.oob.udp?;
        let external = match self.external_ip() {
            Some(IpAddr::V4(v4)) if crate::core::addr::is_routable(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        };
        let ip = match external.map(IpAddr::V4).unwrap_or(udp.ip()) {
            IpAddr::V4(v4) if !v4.is_unspecified() => v4,
            _ => self
                .peers
                .values()
                .filter_map(|p| match p.info.local.ip() {
                    IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
                    IpAddr::V6(v6) => v6.to_ipv4_mapped(),
                    _ => None,
                })
                .next()?,
        };
        let addr = SocketAddrV4::new(ip, udp.port());
        self.hosts
            .scope()
            .allows(SocketAddr::V4(addr))
            .then_some(addr)
    }

    /// A search of ours (`guid`, `query`) as it goes out: marked for
    /// out-of-band hits, under a MUID carrying our address, when we can
    /// receive them.
    pub(super) fn oob_mark(&mut self, guid: Guid, query: Bytes, now: Instant) -> (Guid, Bytes) {
        let Some(addr) = self.oob_reply_addr() else {
            return (guid, query);
        };
        let Some(marked) = mark_oob(&query) else {
            return (guid, query);
        };
        let muid = wire_oob::with_muid_addr(guid, addr);
        self.oob.claims.start(muid, Owner::Own(guid), now);
        self.stats.oob.marked += 1;
        (muid, marked)
    }

    /// A leaf's query before it is routed: relayed as it is when the leaf
    /// asks for out-of-band hits at its own address; else proxied (our
    /// address in the MUID, we claim the hits and pass them down) when we
    /// can and the leaf allows it; else stripped of its OOB request (the
    /// hits then come back along the query's path).
    pub(super) fn oob_leaf_query(&mut self, conn: ConnId, frame: &mut Frame, now: Instant) {
        let Ok(view) = QueryView::parse(&frame.payload) else {
            return;
        };
        let req = OobRequest::of(&view);
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        let reply = wire_oob::muid_addr(&frame.header.guid);
        let scope = self.hosts.scope();
        if req.wanted()
            && IpAddr::V4(*reply.ip()) == peer.info.remote.ip()
            && scope.allows(SocketAddr::V4(reply))
        {
            self.stats.oob.relayed += 1;
            return;
        }
        let allowed = self.oob.control.get(&conn).is_none_or(|c| c.allows_v3());
        let ours = self.oob_reply_addr().filter(|_| allowed && !req.no_proxy);
        if let Some(addr) = ours {
            if let Some(p) = mark_oob(&frame.payload) {
                let original = frame.header.guid;
                let muid = wire_oob::with_muid_addr(original, addr);
                frame.payload = p;
                frame.header.payload_len = frame.payload.len() as u32;
                frame.header.guid = muid;
                self.oob
                    .claims
                    .start(muid, Owner::Leaf(conn, original), now);
                self.stats.oob.proxied += 1;
                return;
            }
        }
        if let Some(p) = strip_oob(&frame.payload) {
            frame.payload = p;
            frame.header.payload_len = frame.payload.len() as u32;
            self.stats.oob_stripped += 1;
        }
    }

    /// A GUESS query's payload as it goes on to our leaves: an OOB request
    /// naming another IP than the query's source is cleared, as gtk-gnutella
    /// does (the leaves would offer hits to a third party).
    pub(super) fn oob_guess_payload(
        &mut self,
        from: SocketAddr,
        muid: &Guid,
        payload: Bytes,
    ) -> Bytes {
        if IpAddr::V4(*wire_oob::muid_addr(muid).ip()) == from.ip() {
            return payload;
        }
        match strip_oob(&payload) {
            Some(p) => {
                self.stats.oob_stripped += 1;
                p
            }
            None => payload,
        }
    }

    /// A hit over TCP for a search whose MUID carries our address (ours, or
    /// a leaf's we proxy): delivered to its owner. False: not one of those.
    pub(super) fn oob_tcp_hit(&mut self, frame: &Frame, now: Instant) -> bool {
        match self.oob.claims.owner(&frame.header.guid) {
            Some(owner) => {
                self.oob_deliver(owner, frame, now);
                true
            }
            None => false,
        }
    }

    /// The MUID a reply to `muid` goes to `to` under: the leaf's own when
    /// `muid` is the one we gave its query by proxying it.
    pub(super) fn oob_reply_guid(&self, to: ConnId, muid: Guid) -> Guid {
        match self.oob.claims.owner(&muid) {
            Some(Owner::Leaf(conn, original)) if conn == to => original,
            _ => muid,
        }
    }

    /// Hands a hit for one of our MUIDs to its owner.
    fn oob_deliver(&mut self, owner: Owner, frame: &Frame, now: Instant) {
        match owner {
            Owner::Own(id) => {
                let results = frame.payload.first().copied().unwrap_or(0) as u32;
                self.guess_results(id, results, now);
                // Kept, for our ultrapeers' status requests (BEAR/11).
                self.own_results(frame.header.guid, &frame.payload);
                self.links.own_hit(id, frame.payload.clone());
            }
            Owner::Leaf(conn, original) => {
                let results = frame.payload.first().copied().unwrap_or(0) as u32;
                if self.dq.contains(&frame.header.guid) {
                    self.dq.results(&frame.header.guid, results);
                }
                let Some(peer) = self.peers.get(&conn) else {
                    return;
                };
                // Down to the leaf under its own MUID, as one hop from us.
                let bytes = reencode(
                    &Frame {
                        header: Header {
                            guid: original,
                            ..frame.header
                        },
                        payload: frame.payload.clone(),
                    },
                    1,
                    1,
                );
                self.stats.oob.to_leaves += 1;
                if !matches!(
                    self.links.send(peer.conn, Priority::Result, bytes),
                    crate::core::flow::Offer::Queued
                ) {
                    self.stats.shed += 1;
                }
            }
        }
    }

    /// Answers a query out of band if it asks for that, came from afar, names
    /// a reply address we may send to, and the hits can be held: LIME/12 to
    /// that address, the hits kept for the LIME/11. False: answer over TCP.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn oob_answer(
        &mut self,
        conn: ConnId,
        h: &Header,
        q: &QueryView<'_>,
        found: &[HitResult],
        local: SocketAddr,
        flags: OpenDataFlags,
        ggep: Option<&crate::wire::Ggep>,
        now: Instant,
    ) -> bool {
        if self.oob.udp.is_none() {
            return false;
        }
        let req = OobRequest::of(q);
        // A neighbour's own query is answered along the link: out of band
        // only what was relayed at least once (gtk-gnutella's rule, which
        // also answers a neighbouring proxy's query by UDP, as captured;
        // LimeWire's "not the neighbour's address" would send those by TCP).
        if !req.wanted() || h.hops.0 < 1 {
            return false;
        }
        let reply = wire_oob::muid_addr(&h.guid);
        let scope = self.hosts.scope();
        if !scope.allows(SocketAddr::V4(reply)) || self.is_me(SocketAddr::V4(reply)) {
            return false;
        }
        if !self.peers.contains_key(&conn) {
            return false;
        }
        // The hits, split into datagrams of about a kilobyte.
        let sizes: Vec<usize> = found
            .iter()
            .map(|r| {
                let mut b = BytesMut::new();
                let _ = r.ext.encode(&mut b);
                10 + r.name.len() + b.len()
            })
            .collect();
        let trailer = Trailer::new(VENDOR, flags, ggep.cloned());
        // Header, fixed fields, GUID, the trailer and room for a token.
        let overhead = 23 + 11 + 16 + 7 + 64;
        let hits: Vec<QueryHit> = crate::core::oob::split(&sizes, overhead, self.oob.datagram)
            .into_iter()
            .map(|r| QueryHit {
                port: local.port(),
                ip: self.our_address(local).0,
                speed: 0,
                results: found[r].to_vec(),
                trailer: TrailerArea::Qhd(trailer.clone()),
                servent: self.me,
            })
            .collect();
        let bytes = sizes.iter().sum::<usize>() + overhead * hits.len();
        if let Err(why) = self
            .oob
            .held
            .hold(h.guid, reply, req.secure, hits, bytes, now)
        {
            tracing::debug!(why, "out-of-band hits not held: answering over TCP");
            self.stats.oob.hold_refused += 1;
            return false;
        }
        let offer = Indication {
            hits: found.len().min(255) as u8,
            unsolicited: self.udp_reachable(),
            version: if req.secure { 3 } else { 2 },
        };
        let Some(frame) = frame_of(&Message::Vendor(offer.to_vendor()), h.guid, 1) else {
            return false;
        };
        self.send_datagram(SocketAddr::V4(reply), &frame, false);
        self.stats.oob.offered += 1;
        true
    }

    /// A vendor message by UDP: the out-of-band ones answered, others
    /// counted by what they are.
    pub(super) fn udp_vendor(&mut self, from: SocketAddr, d: Datagram, now: Instant) {
        let m = match crate::wire::VendorMsg::parse(&d.frame.payload) {
            Ok(m) => m,
            Err(_) => return self.stats.udp.drop("malformed"),
        };
        if m.is(&wire_oob::LIME, wire_oob::ACK) {
            self.oob_ack(from, &d, &m, now);
        } else if m.is(&wire_oob::LIME, wire_oob::INDICATION) {
            self.oob_indication(from, &d, &m, now);
        } else {
            self.stats.udp.drop("vendor-unknown");
        }
    }

    /// LIME/11: hits claimed; sent to the datagram's source, each with the
    /// token, deflated if the ack allowed it.
    fn oob_ack(
        &mut self,
        from: SocketAddr,
        d: &Datagram,
        m: &crate::wire::VendorMsg,
        now: Instant,
    ) {
        let ack = match Ack::parse(m) {
            Ok(a) => a,
            Err(_) => return self.stats.udp.drop("malformed"),
        };
        let muid = d.frame.header.guid;
        let hits = match self
            .oob
            .held
            .claim(&muid, from, ack.wanted, ack.token.is_some(), now)
        {
            Claim::Send(hits) => hits,
            Claim::Refused(why) => return self.stats.udp.drop(why),
        };
        self.stats.oob.claimed += 1;
        for hit in hits {
            let n = hit.results.len() as u64;
            let hit = with_token(hit, ack.token.as_ref());
            if let Some(frame) = frame_of(&Message::QueryHit(hit), muid, 1) {
                self.send_datagram(from, &frame, d.deflate_ok);
                self.stats.oob.hits_sent += 1;
                self.stats.oob.results_sent += n;
            }
        }
    }

    /// LIME/12: a responder offers hits for a search of ours (or one we
    /// proxy); claimed with LIME/11 (v3 with a token for that responder),
    /// TTL 9 because we inflate.
    fn oob_indication(
        &mut self,
        from: SocketAddr,
        d: &Datagram,
        m: &crate::wire::VendorMsg,
        now: Instant,
    ) {
        let offer = match Indication::parse(m) {
            Ok(i) => i,
            Err(_) => return self.stats.udp.drop("malformed"),
        };
        let muid = d.frame.header.guid;
        match self
            .oob
            .claims
            .indication(&muid, from, offer.hits, offer.version, now)
        {
            Answer::Ignore(why) => self.stats.udp.drop(why),
            Answer::Ack { wanted, token } => {
                let ack = Ack {
                    wanted,
                    token: token.map(|t| Bytes::copy_from_slice(&t)),
                };
                if let Some(frame) =
                    frame_of(&Message::Vendor(ack.to_vendor()), muid, 1 | TTL_DEFLATE_OK)
                {
                    self.send_datagram(from, &frame, false);
                    self.stats.oob.acks_sent += 1;
                }
            }
        }
    }

    /// A QueryHit by UDP: taken only for a search of ours that claimed it
    /// from that source, with the token we gave it.
    pub(super) fn udp_hit(&mut self, from: SocketAddr, d: Datagram, now: Instant) {
        let Ok(view) = QueryHitView::parse(&d.frame.payload) else {
            return self.stats.udp.drop("malformed");
        };
        let token = wire_oob::hit_token(&view.trailer);
        let results = view.len() as u32;
        match self
            .oob
            .claims
            .hit(&d.frame.header.guid, from, results, token)
        {
            HitVerdict::Drop(why) => {
                if why == "oob-token-forged" {
                    self.stats.oob.forged += 1;
                }
                self.stats.udp.drop(why)
            }
            HitVerdict::Take(owner) => {
                self.stats.oob.hits_received += 1;
                self.stats.oob.results_received += results as u64;
                self.oob_deliver(owner, &d.frame, now);
            }
        }
    }

    /// LIME/13 from a leaf: whether we may proxy its queries.
    pub(super) fn oob_proxy_control(&mut self, conn: ConnId, m: &crate::wire::VendorMsg) {
        if let Ok(c) = ProxyControl::parse(m) {
            self.oob.control.insert(conn, c);
        }
    }

    /// Once a tick: held hits past their time dropped (counted when never
    /// claimed), searches past their life forgotten.
    pub(super) fn oob_tick(&mut self, now: Instant) {
        self.stats.oob.unclaimed += self.oob.held.expire(now);
        self.oob.claims.expire(now, None);
    }

    /// A link closed: its proxied searches and its proxy control go.
    pub(super) fn oob_closed(&mut self, conn: ConnId, now: Instant) {
        self.oob.control.remove(&conn);
        self.oob.claims.expire(now, Some(conn));
    }
}

#[cfg(test)]
#[path = "oob_tests.rs"]
mod tests;
