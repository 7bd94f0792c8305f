//! Routing and answering: each frame through the budgets, the router and the
//! role rules to its targets; Pings and Queries answered from the pong cache
//! and the library.

use super::*;

/// A leaf's query with its out-of-band request removed (the 0x0400 flag that
/// gtk-gnutella reads, and GGEP `SO` that LimeWire reads), or `None` when it
/// asks for none.
pub(super) fn strip_oob(payload: &bytes::Bytes) -> Option<bytes::Bytes> {
    use crate::wire::ext::{ExtItem, ItemView};
    use crate::wire::query::{Query, QueryFlags};
    // Most queries ask for none: told by the borrowed view, with no allocation.
    let view = QueryView::parse(payload).ok()?;
    let has_so = view
        .ext
        .iter()
        .any(|i| matches!(i, ItemView::Ggep(g) if g.iter().any(|e| e.id == b"SO")));
    if !view.flags.has(QueryFlags::OOB) && !has_so {
        return None;
    }
    let flags = view.flags;
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    let mut q = Query::parse(payload, &mut budget).ok()?;
    q.flags = QueryFlags((flags.bits() & !QueryFlags::OOB).to_be_bytes());
    for item in &mut q.ext.items {
        if let ExtItem::Ggep(g) = item {
            g.exts.retain(|e| e.id.as_bytes() != b"SO");
        }
    }
    q.ext
        .items
        .retain(|i| !matches!(i, ExtItem::Ggep(g) if g.exts.is_empty()));
    let mut out = BytesMut::with_capacity(payload.len());
    if q.encode(&mut out).is_ok() {
        return Some(out.freeze());
    }
    // Cannot be written back as parsed: at least the flag goes.
    let mut raw = payload.to_vec();
    raw[0] &= !((QueryFlags::OOB >> 8) as u8);
    Some(bytes::Bytes::from(raw))
}

/// A frame's bytes with new TTL and hops.
pub(super) fn reencode(frame: &Frame, ttl: u8, hops: u8) -> bytes::Bytes {
    let mut out = BytesMut::with_capacity(frame.wire_len());
    Frame {
        header: Header {
            ttl: Ttl(ttl),
            hops: Hops(hops),
            ..frame.header
        },
        payload: frame.payload.clone(),
    }
    .encode(&mut out);
    out.freeze()
}

/// A query's QRP keywords, split once per query and matched against as many
/// tables as it meets (every leaf's, and ultrapeers' on its last hop).
/// A query's keywords and URNs as QRP keys, split the first time a table is
/// asked (most queries meet no table: a node with no leaves and no
/// table-speaking ultrapeers never splits one).
pub(super) struct QueryKeys<'a> {
    q: &'a QueryView<'a>,
    keys: std::cell::OnceCell<(Vec<String>, Vec<String>)>,
}

impl<'a> QueryKeys<'a> {
    pub(super) fn of(q: &'a QueryView<'a>) -> QueryKeys<'a> {
        QueryKeys {
            q,
            keys: std::cell::OnceCell::new(),
        }
    }

    /// Whether the query hits `table`: every keyword of its text, or one of its
    /// URNs.
    pub(super) fn hit(&self, table: &QrpTable) -> bool {
        let (words, urns) = self.keys.get_or_init(|| {
            (
                qrp::split_keywords(&String::from_utf8_lossy(self.q.text)),
                self.q.ext.sha1_urns().map(|u| urn_keyword(&u)).collect(),
            )
        });
        table.matches_query(words) || urns.iter().any(|u| table.contains_keyword(u))
    }
}

/// The QRP keyword a SHA-1 URN goes into tables as (`urn:sha1:` and base32,
/// lower case).
pub(super) fn urn_keyword(u: &Sha1Urn) -> String {
    u.to_string().to_lowercase()
}

/// Results per QueryHit message; larger answers are split.
pub(super) const RESULTS_PER_HIT: usize = 10;

/// Unknown messages a peer may send before it is dropped with Bye 404.
pub(super) const MAX_UNKNOWN: u32 = 20;

/// Requests a peer may send us twice before it is dropped with Bye 401.
pub(super) const MAX_REPEATED: u32 = 50;

/// Pongs one peer may add to the host and pong caches per ping interval (we
/// ping it once an interval; an honest peer answers with its own Pong and up
/// to ten cached ones).
pub(super) const MAX_PONGS_PER_PING: u32 = 16;

impl<L: Links> Engine<L> {
    pub(super) fn frame(&mut self, conn: ConnId, mut frame: Frame, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.closing {
            return;
        }
        let kind = match frame.header.function {
            Function::Query => Some(BudgetKind::Query),
            Function::Ping => Some(BudgetKind::Ping),
            Function::Pong => Some(BudgetKind::Pong),
            Function::QueryHit => Some(BudgetKind::Hit),
            Function::Push => Some(BudgetKind::Push),
            Function::RouteTable => Some(BudgetKind::Table),
            Function::Vendor | Function::StandardVendor => Some(BudgetKind::Vendor),
            // HSEP is charged as a vendor message (a few a minute).
            Function::Unknown(crate::wire::hsep::FUNCTION) => Some(BudgetKind::Vendor),
            Function::Bye | Function::Unknown(_) => None,
        };
        if let Some(kind) = kind {
            match peer.budget.admit(kind, now) {
                Verdict::Take => {}
                Verdict::Drop => {
                    self.stats.over_budget[kind as usize] += 1;
                    *peer.drops.entry("over-budget").or_default() += 1;
                    return;
                }
                Verdict::Close => {
                    self.stats.over_budget[kind as usize] += 1;
                    self.stats.closed_over_budget += 1;
                    tracing::debug!(
                        conn = conn.0,
                        kind = kind.name(),
                        "closing: over its budget"
                    );
                    peer.closing = true;
                    self.links.close(
                        peer.conn,
                        bye::CODE_BAD_QUERIES,
                        &format!("Flooding: too many {} messages", kind.name()),
                    );
                    return;
                }
            }
        }
        if frame.header.function == Function::Query && peer.info.link == Link::ToLeaf {
            // A leaf's out-of-band request: relayed, proxied or cleared (a
            // request we neither relay nor proxy would have responders such as
            // LimeWire send nothing in-band, and the leaf get nothing).
            self.oob_leaf_query(conn, &mut frame, now);
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let h = frame.header;
        let class = match h.function {
            Function::Ping => Class::Discovery,
            Function::Pong => Class::DiscoveryReply,
            Function::Query => Class::Search,
            Function::QueryHit => match frame.payload.len().checked_sub(16) {
                Some(at) => Class::SearchReply {
                    responder: Guid::from_slice(&frame.payload[at..]).expect("16 bytes"),
                },
                None => {
                    self.stats.malformed += 1;
                    *peer.drops.entry("malformed").or_default() += 1;
                    return;
                }
            },
            Function::Push => match Guid::from_slice(&frame.payload) {
                Some(target) => Class::Directed { target },
                None => {
                    self.stats.malformed += 1;
                    *peer.drops.entry("malformed").or_default() += 1;
                    return;
                }
            },
            Function::Bye => {
                match crate::wire::Bye::parse(&frame.payload) {
                    Ok(b) => {
                        tracing::info!(conn = conn.0, code = b.code, reason = %b.reason(), "peer said Bye")
                    }
                    Err(e) => {
                        tracing::info!(conn = conn.0, error = %e, "peer said Bye (unreadable)")
                    }
                }
                self.links.close_silently(peer.conn);
                return;
            }
            // Hop-by-hop messages the node does not act on yet.
            Function::RouteTable => {
                self.route_table(conn, &frame.payload, now);
                return;
            }
            Function::Vendor => {
                self.vendor(conn, h.guid, &frame.payload);
                return;
            }
            Function::StandardVendor => return,
            Function::Unknown(crate::wire::hsep::FUNCTION) => {
                self.hsep_frame(conn, &frame.payload, now);
                return;
            }
            Function::Unknown(f) => {
                tracing::debug!(
                    conn = conn.0,
                    function = f,
                    "dropped a message of unknown function"
                );
                self.stats.unknown += 1;
                *peer.drops.entry("unknown-function").or_default() += 1;
                peer.unknown += 1;
                if peer.unknown > MAX_UNKNOWN {
                    self.links
                        .close(peer.conn, bye::CODE_UNKNOWN, "Too many unknown messages");
                }
                return;
            }
        };
        // A Query is checked by parsing its view, which answering it needs too;
        // everything else by the allocation-free check.
        let query = if h.function == Function::Query {
            match QueryView::parse(&frame.payload) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::debug!(conn = conn.0, function = ?h.function, error = %e, "dropped a malformed message");
                    self.stats.malformed += 1;
                    *peer.drops.entry("malformed").or_default() += 1;
                    return;
                }
            }
        } else {
            if let Err(e) = Message::validate(h.function, &frame.payload) {
                tracing::debug!(conn = conn.0, function = ?h.function, error = %e, "dropped a malformed message");
                self.stats.malformed += 1;
                *peer.drops.entry("malformed").or_default() += 1;
                return;
            }
            None
        };
        // A hit for a search whose MUID carries our address (ours, or a
        // leaf's we proxy) goes to its owner.
        if h.function == Function::QueryHit && self.oob_tcp_hit(&frame, now) {
            return;
        }
        if let Class::Directed { target } = class {
            // A Push for a leaf we answered for (we are its push proxy).
            if self.push_to_leaf(conn, target, &frame) {
                return;
            }
        }
        let decision = self
            .router
            .route(conn, h.guid, class, h.ttl.0, h.hops.0, now);
        if h.function == Function::Pong
            && matches!(decision, Decision::Accept { deliver: true, .. })
        {
            // A Pong answering one of our own Pings names a host we may dial
            // later, and one we may tell others about; only so many per Ping, so
            // one neighbour cannot fill the cache with addresses of its choice.
            // IPv6-Ready: an IPv6 host in `6` (127.0.0.0 when it has no IPv4).
            let addrs = super::ipv6::pong_addrs(&frame.payload);
            // Not a leaf's (a leaf takes no connections from other nodes; handing
            // it out makes leaves dial each other), and not our own address
            // coming back to us from another host's cache.
            let from_leaf = self
                .peers
                .get(&conn)
                .is_some_and(|p| p.info.link == Link::ToLeaf);
            let over = self.peers.get_mut(&conn).is_some_and(|p| {
                if now.saturating_duration_since(p.pongs_since) >= PING_EVERY {
                    p.pongs_since = now;
                    p.pongs_taken = 0;
                }
                p.pongs_taken += 1;
                p.pongs_taken > MAX_PONGS_PER_PING
            });
            let unlisted = from_leaf || over || addrs.iter().any(|a| self.is_me(*a));
            if unlisted {
                self.stats.pongs_unlisted += 1;
            }
            let usable: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
                .collect();
            if !usable.is_empty() && !unlisted {
                for a in &usable {
                    self.hosts.learn_reachable(*a, self.wall);
                }
                // The host's primary address (IPv4 when it has one).
                self.guess_learn_pong(usable[0], &frame.payload, now);
                self.pongs
                    .insert(now, frame.payload.clone(), h.hops.0, conn);
            }
        }
        if let Decision::Drop(reason) = decision {
            if let Some(p) = self.peers.get_mut(&conn) {
                *p.drops.entry(reason.name()).or_default() += 1;
            }
        }
        let Decision::Accept { deliver, forward } = decision else {
            if decision == Decision::Drop(DropReason::Repeated) {
                if let Some(peer) = self.peers.get_mut(&conn) {
                    peer.repeated += 1;
                    if peer.repeated == MAX_REPEATED {
                        self.links
                            .close(peer.conn, bye::CODE_DUPLICATES, "Too many duplicates");
                    }
                }
            }
            return;
        };
        // Only an ultrapeer routes by tables; it splits the query's keywords once.
        let keys = match (&query, self.tier.role()) {
            (Some(q), Role::Ultrapeer) => Some(QueryKeys::of(q)),
            _ => None,
        };
        // An ultrapeer and its leaves are one unit: a query goes to every leaf
        // whose table matches, even when its TTL ends here; but only the first
        // time (a probe widened on the same link is not news to the leaves).
        if let (Some(k), true) = (&keys, deliver) {
            self.send_to_leaves(conn, &frame, forward.as_ref(), k);
        }
        let from_leaf = self
            .peers
            .get(&conn)
            .is_some_and(|p| p.info.link == Link::ToLeaf);
        if let (Some(f), Some(k), true) = (&forward, &keys, from_leaf) {
            // A leaf's query: searched for dynamically, not flooded.
            if self.start_dq(conn, &frame, f, k, now) {
                return self.deliver(conn, &h, &frame.payload, deliver, query.as_ref(), now);
            }
        }
        if h.function == Function::QueryHit && self.dq.contains(&h.guid) {
            self.dq
                .results(&h.guid, frame.payload.first().copied().unwrap_or(0) as u32);
        }
        if let Some(f) = forward {
            let priority = match h.function {
                Function::Ping | Function::Pong => Priority::RelayedDiscovery,
                Function::Query => Priority::RelayedSearch,
                _ => Priority::Result,
            };
            self.send(f, priority, &frame, keys.as_ref());
        }
        self.deliver(conn, &h, &frame.payload, deliver, query.as_ref(), now);
    }

    /// Answers a request delivered to us.
    pub(super) fn deliver(
        &mut self,
        conn: ConnId,
        h: &Header,
        payload: &bytes::Bytes,
        deliver: bool,
        query: Option<&QueryView<'_>>,
        now: Instant,
    ) {
        if deliver {
            match h.function {
                Function::Ping => self.answer_ping(conn, h, now),
                Function::Query => {
                    if let Some(q) = query {
                        self.answer_query(conn, h, q, now);
                        if self.tier.role() == Role::Ultrapeer {
                            self.answer_for_leaves(conn, h, q);
                        }
                    }
                }
                // A hit for a query of our own (one for a leaf's is forwarded,
                // not delivered).
                Function::QueryHit => {
                    self.own_results(h.guid, payload);
                    self.own_or_relayed_hit(h, payload, now)
                }
                Function::Push => {
                    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
                    if let Ok(p) = Push::parse(payload, &mut budget) {
                        self.links.push(p);
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn send(
        &mut self,
        f: Forward,
        priority: Priority,
        frame: &Frame,
        keys: Option<&QueryKeys<'_>>,
    ) {
        let function = frame.header.function;
        // A leaf relays nothing: it originates queries and answers them.
        if self.tier.role() == Role::Leaf && matches!(function, Function::Query | Function::Ping) {
            return;
        }
        let bytes = reencode(frame, f.ttl, f.hops);
        let (mut sent, mut shed, mut last_hop_misses) = (0u64, 0u64, 0u64);
        let last_hop = f.ttl == 1;
        let mut deliver = |p: &Peer| {
            if matches!(function, Function::Query | Function::Ping) {
                match p.info.link {
                    // Never relay to an ultrapeer that took us as its leaf; leaves
                    // get queries through `send_to_leaves` only, and no pings.
                    Link::ToUltrapeer | Link::ToLeaf => return,
                    // The last-hop rule: on its last hop a query goes only to
                    // ultrapeers whose table matches.
                    Link::Peer if last_hop && keys.and_then(|k| p.matches(k)) == Some(false) => {
                        last_hop_misses += 1;
                        return;
                    }
                    Link::Peer | Link::Flat => {}
                }
            }
            sent += 1;
            if !matches!(
                self.links.send(p.conn, priority, bytes.clone()),
                crate::core::flow::Offer::Queued
            ) {
                shed += 1;
            }
        };
        match f.to {
            Targets::One(c) => self.peers.get(&c).into_iter().for_each(&mut deliver),
            Targets::All => self.peers.values().for_each(&mut deliver),
            Targets::AllExcept(except) => self
                .peers
                .iter()
                .filter(|(c, _)| **c != except)
                .for_each(|(_, p)| deliver(p)),
        }
        self.stats.shed += shed;
        self.stats.last_hop_misses += last_hop_misses;
        let counter = match frame.header.function {
            Function::Ping => &mut self.stats.relayed.pings,
            Function::Pong => &mut self.stats.relayed.pongs,
            Function::Query => &mut self.stats.relayed.queries,
            Function::QueryHit => &mut self.stats.relayed.query_hits,
            _ => &mut self.stats.relayed.pushes,
        };
        *counter += sent;
    }

    /// Sends a query to every leaf (but the one it came from) whose table
    /// matches: with the TTL it goes on with, or 1 where it ends here.
    pub(super) fn send_to_leaves(
        &mut self,
        from: ConnId,
        frame: &Frame,
        forward: Option<&Forward>,
        k: &QueryKeys<'_>,
    ) {
        let (ttl, hops) = match forward {
            Some(f) => (f.ttl.max(1), f.hops),
            None => (1, frame.header.hops.0.saturating_add(1)),
        };
        let mut bytes = None;
        let (mut sent, mut shed, mut misses) = (0u64, 0u64, 0u64);
        for (c, p) in &self.peers {
            if *c == from || p.info.link != Link::ToLeaf || answers_for(p) {
                continue;
            }
            if p.matches(k) != Some(true) {
                misses += 1;
                continue;
            }
            let b = bytes.get_or_insert_with(|| reencode(frame, ttl, hops));
            sent += 1;
            if !matches!(
                self.links.send(p.conn, Priority::RelayedSearch, b.clone()),
                crate::core::flow::Offer::Queued
            ) {
                shed += 1;
            }
        }
        self.stats.relayed.queries += sent;
        self.stats.shed += shed;
        self.stats.leaf_table_misses += misses;
    }

    /// The TTL for a reply to a request that travelled `hops` hops: enough to get
    /// back, with some slack, never above the hard limit.
    pub(super) fn reply_ttl(hops: Hops) -> Ttl {
        Ttl(hops.0.saturating_add(3).min(15))
    }

    pub(super) fn reply(
        &mut self,
        to: ConnId,
        request: &Header,
        msg: &Message,
        priority: Priority,
    ) {
        self.reply_hops(to, request, msg, priority, Hops(0));
    }

    /// A reply that says it has travelled `hops` already.
    pub(super) fn reply_hops(
        &mut self,
        to: ConnId,
        request: &Header,
        msg: &Message,
        priority: Priority,
        hops: Hops,
    ) {
        let Some(peer) = self.peers.get(&to) else {
            return;
        };
        let mut out = BytesMut::new();
        // A leaf's query we proxy is answered to the leaf under its own MUID.
        let guid = self.oob_reply_guid(to, request.guid);
        if msg
            .encode_frame(guid, Self::reply_ttl(request.hops), hops, &mut out)
            .is_ok()
            && !matches!(
                self.links.send(peer.conn, priority, out.freeze()),
                crate::core::flow::Offer::Queued
            )
        {
            self.stats.shed += 1;
        }
    }

    /// Pings one neighbour: an ultrapeer (or flat peer) with TTL 2, so it
    /// answers with its own Pong and those it has cached; a leaf with TTL 1, the
    /// "alive" Ping every servent answers with its own Pong (LimeWire takes a
    /// TTL-2 Ping as a crawler's and a leaf answers it with nothing, so the
    /// link would look silent and go at the read-idle limit).
    pub(super) fn ping(&mut self, conn: ConnId, now: Instant) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        let ttl = if peer.info.link == Link::ToLeaf { 1 } else { 2 };
        let id = self.rng.guid();
        if let Decision::Accept {
            forward: Some(f), ..
        } = self.router.originate(id, Class::Discovery, ttl, now)
        {
            let mut out = BytesMut::new();
            Message::Ping(Ping::default())
                .encode_frame(id, Ttl(f.ttl), Hops(0), &mut out)
                .expect("an empty ping encodes");
            self.links.send(peer.conn, Priority::Own, out.freeze());
        }
    }

    pub(super) fn answer_ping(&mut self, conn: ConnId, h: &Header, now: Instant) {
        // Hosts we know of, from the cache, as they came (one hop further now).
        for (payload, hops) in self.pongs.answers(now, h.ttl.0, conn) {
            let frame = Frame {
                header: Header {
                    guid: h.guid,
                    function: Function::Pong,
                    ttl: Self::reply_ttl(h.hops),
                    hops: Hops(hops.saturating_add(1)),
                    payload_len: payload.len() as u32,
                },
                payload,
            };
            let mut out = BytesMut::with_capacity(frame.wire_len());
            frame.encode(&mut out);
            if let Some(peer) = self.peers.get(&conn) {
                self.links.send(peer.conn, Priority::Own, out.freeze());
            }
        }
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        let local = self.our_addr(peer.info.local);
        let mut pong = self.own_pong(local);
        if let Some(g) = self.guess_pong_ggep() {
            match &mut pong.ggep {
                Some(ours) => ours.exts.extend(g.exts),
                None => pong.ggep = Some(g),
            }
        }
        let pong = Message::Pong(pong);
        self.reply(conn, h, &pong, Priority::Own);
    }

    /// Whether `addr` is ours: the address some peer reaches us at.
    pub(super) fn is_me(&self, addr: SocketAddr) -> bool {
        self.peers.values().any(|p| p.info.local == addr)
    }

    /// Our files (and those we serve by proxy) that answer `q`.
    pub(super) fn local_results(&self, q: &QueryView<'_>) -> Vec<HitResult> {
        let text = String::from_utf8_lossy(q.text);
        let urns: Vec<Sha1Urn> = q.ext.sha1_urns().collect();
        let mut found: Vec<HitResult> = self
            .library
            .view()
            .search(&text, &urns, self.max_results)
            .into_iter()
            .map(|f| HitResult::new(f.index, f.size, f.name, f.sha1.as_ref()).with_fth(f.fth))
            .collect();
        // Files of others we serve by proxy; they have no SHA-1 to match a URN.
        if let Some(extra) = self.extra.as_ref().filter(|_| urns.is_empty()) {
            let room = self.max_results.saturating_sub(found.len());
            if room > 0 {
                found.extend(extra.search(&text, room));
            }
        }
        found
    }

    pub(super) fn answer_query(
        &mut self,
        conn: ConnId,
        h: &Header,
        q: &QueryView<'_>,
        now: Instant,
    ) {
        let found = self.local_results(q);
        if found.is_empty() {
            return;
        }
        let Some(local) = self.peers.get(&conn).map(|p| self.our_addr(p.info.local)) else {
            return;
        };
        let firewalled = self.tcp_firewalled();
        let flags = OpenDataFlags {
            push: Some(firewalled),
            busy: Some(self.links.uploads_busy()),
            ..OpenDataFlags::default()
        };
        // Behind a firewall, the ultrapeers that agreed to be our push proxies
        // are listed (GGEP `PUSH`/`PUSH6`), so a downloader can reach us
        // through them; our IPv6 address goes in `6`. Every hit says we can be
        // browsed (GGEP `BH`, as gtk-gnutella and LimeWire mark theirs).
        let (ip, ggep) = self.hit_trailer_ggep(local, q.i6(), firewalled);
        let ggep = Some(crate::wire::browse::with_bh(ggep));
        if self.oob_answer(conn, h, q, &found, local, flags, ggep.as_ref(), now) {
            return;
        }
        for chunk in found.chunks(RESULTS_PER_HIT) {
            let hit = Message::QueryHit(QueryHit {
                port: local.port(),
                ip,
                speed: 0,
                results: chunk.to_vec(),
                trailer: TrailerArea::Qhd(Trailer::new(VENDOR, flags, ggep.clone())),
                servent: self.me,
            });
            self.reply(conn, h, &hit, Priority::Result);
            self.stats.hits_sent += 1;
        }
    }
}
