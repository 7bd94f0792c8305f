//! GUESS in the engine (`protocol-spec/guess.md`): as an ultrapeer that can
//! receive UDP, query keys handed out on `Ping{QK}` and GUESS queries answered
//! by UDP (an acknowledging pong, our hits and our leaves'); as a client, our
//! own searches that went quiet sent on to GUESS ultrapeers one after another
//! (`core::guess::Client`), their hits taken by UDP. The decisions are in
//! `core::guess`; this file moves them to and from datagrams.

use std::net::SocketAddrV4;

use super::*;
use crate::core::guess::{Action, Client, ClientStats, GuessConfig, GuessHosts, KeyMaker};
use crate::core::udp::Throttle;
use crate::wire::guess::{self as g, Gue, GuessPing, GuessPong, GuessQuery};
use crate::wire::udp::Datagram;
use crate::wire::{Ggep, GgepExt};

/// The largest QueryHit payload sent by UDP (the GUESS document asks for
/// datagrams under about 1 KiB); more results go in more hits.
pub const MAX_UDP_HIT: usize = 1024;
/// GUESS hosts packed in one pong's `IPP`.
const MAX_IPP: usize = 10;
/// A GUESS query's MUID is answered once in this time.
const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// How long hits of leaves for a GUESS query are sent on by UDP.
const RELAY_LIFE: Duration = Duration::from_secs(90);
/// GUESS queries whose leaves' hits are sent on, at most.
const MAX_RELAYS: usize = 1024;
/// Pings answered per source IP: one a minute (gtk-gnutella's rule).
const PING_EVERY: Duration = Duration::from_secs(60);
/// Sources remembered by the throttles.
const THROTTLE_CAP: usize = 4096;

/// GUESS counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuessStats {
    /// Query keys handed out (on a key request, or instead of a stale one).
    pub keys_sent: u64,
    /// GUESS queries answered (acknowledged, and searched).
    pub queries_answered: u64,
    /// QueryHits sent by UDP for GUESS queries (ours and our leaves').
    pub hits_sent: u64,
    /// Queries with a key that is not (or no longer) the source's.
    pub bad_keys: u64,
    /// Queries with no key at all.
    pub no_keys: u64,
    /// Key requests and queries refused: we are not a GUESS server now.
    pub refused: u64,
    /// Key requests over the one-per-minute rule.
    pub throttled: u64,
    /// Queries seen before (same MUID).
    pub repeated: u64,
    /// Queries passed on to leaves whose tables match.
    pub to_leaves: u64,
    /// Leaves' hits sent on by UDP.
    pub leaf_hits_relayed: u64,
    /// GUESS ultrapeers known.
    pub hosts: usize,
    /// The client's side: our searches run by GUESS.
    pub client: ClientStats,
}

/// What the engine keeps for GUESS.
pub(super) struct Guess {
    config: GuessConfig,
    keys: KeyMaker,
    hosts: GuessHosts,
    client: Client,
    pings: Throttle<IpAddr>,
    seen: Throttle<Guid>,
    /// GUESS queries sent on to leaves: where their hits go, whether they
    /// may be deflated, and since when.
    relays: HashMap<Guid, (SocketAddr, bool, Instant)>,
    /// Our UDP address as the shell bound it.
    local: Option<SocketAddr>,
    stats: GuessStats,
}

impl Guess {
    pub(super) fn new(config: GuessConfig, seed: u64) -> Guess {
        Guess {
            keys: KeyMaker::new(seed ^ 0x6775_6573_735f_716b, config.key_period),
            hosts: GuessHosts::new(config.max_hosts),
            client: Client::new(config.clone()),
            pings: Throttle::new(PING_EVERY, THROTTLE_CAP),
            seen: Throttle::new(REPEAT_WINDOW, THROTTLE_CAP),
            relays: HashMap::new(),
            local: None,
            stats: GuessStats::default(),
            config,
        }
    }

    pub(super) fn report(&self) -> GuessStats {
        GuessStats {
            hosts: self.hosts.len(),
            client: self.client.stats.clone(),
            ..self.stats.clone()
        }
    }
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(v) => Some(v),
        SocketAddr::V6(v) => v
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, v.port())),
    }
}

impl<L: Links> Engine<L> {
    /// Whether we answer GUESS queries now: an ultrapeer, not firewalled, with
    /// a UDP port.
    pub fn guess_serving(&self) -> bool {
        self.guess.config.serve
            && self.tier.role() == Role::Ultrapeer
            && !self.tcp_firewalled()
            && self.links.udp_open()
    }

    /// Our UDP port is bound at `addr` (the address pongs and hits name when
    /// no link tells a better one).
    pub fn set_udp_local(&mut self, addr: SocketAddr) {
        self.guess.local = Some(addr);
    }

    /// A GUESS ultrapeer (one that said `X-Guess` in its handshake, say).
    pub fn guess_learn(&mut self, addr: SocketAddr, now: Instant) {
        if self.hosts.scope().allows(addr) && !self.is_me(addr) {
            self.guess.hosts.learn(addr, now);
        }
    }

    /// Our search `guid` is over: no GUESS query for it any more, and our
    /// ultrapeers' status requests (BEAR/11) for it are answered "stop".
    pub fn end_search(&mut self, guid: Guid) {
        self.guess.client.end(guid);
        self.own_search_ended(guid);
        // Marked for out-of-band hits, it went out (and leaf guidance counts
        // it) under the MUID carrying our address: that ends too, and its
        // offers are no longer claimed.
        if let Some(muid) = self.oob.claims.own_muid(guid) {
            self.own_search_ended(muid);
            self.oob.claims.end(&muid);
        }
    }

    /// The GUESS counters.
    pub fn guess_stats(&self) -> GuessStats {
        self.guess.report()
    }

    /// Our address for pongs and hits sent by UDP.
    fn guess_local(&self) -> Option<SocketAddrV4> {
        self.peers
            .values()
            .filter_map(|p| v4(p.info.local))
            .find(|a| !a.ip().is_unspecified())
            .or_else(|| self.guess.local.and_then(v4))
            .filter(|a| !a.ip().is_unspecified())
    }

    /// The GGEP our pongs carry for GUESS: `GUE` while we serve.
    pub(super) fn guess_pong_ggep(&self) -> Option<Ggep> {
        self.guess_serving().then(|| Ggep::new(vec![Gue::ours()]))
    }

    /// A pong over TCP: its host serves GUESS when it says `GUE`.
    pub(super) fn guess_learn_pong(&mut self, addr: SocketAddr, payload: &Bytes, now: Instant) {
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        if let Ok(p) = Pong::parse(payload, &mut budget) {
            if GuessPong::of(&p).gue.is_some() {
                self.guess_learn(addr, now);
            }
        }
    }

    /// Our own pong, with `exts` (and `IPP` of GUESS hosts but `except` when
    /// `ipp`).
    fn guess_own_pong(&self, mut exts: Vec<GgepExt>, ipp: bool, except: &[SocketAddr]) -> Pong {
        if ipp {
            let hosts: Vec<SocketAddrV4> = self
                .guess
                .hosts
                .recent(MAX_IPP * 2, except)
                .into_iter()
                .filter_map(v4)
                .take(MAX_IPP)
                .collect();
            if !hosts.is_empty() {
                exts.push(g::ipp(&hosts));
            }
        }
        let me = self.guess_local();
        Pong {
            port: me.map_or(0, |a| a.port()),
            ip: me.map_or(Ipv4Addr::UNSPECIFIED, |a| *a.ip()),
            files: self.library.len() as u32,
            kbytes: (self.library.total_size() / 1024).min(u32::MAX as u64) as u32,
            ggep: (!exts.is_empty()).then(|| Ggep::new(exts)),
        }
    }

    fn guess_send(&mut self, to: SocketAddr, muid: Guid, msg: &Message, hops: u8, deflate: bool) {
        match Frame::new(msg, muid, Ttl(1), Hops(hops)) {
            Ok(frame) => self.send_datagram(to, &frame, deflate),
            Err(e) => tracing::debug!(error = %e, "a GUESS reply does not encode"),
        }
    }

    /// A Ping by UDP: handled here when it is about GUESS (`QK` or `GUE`);
    /// false otherwise.
    pub(super) fn guess_ping(&mut self, from: SocketAddr, d: &Datagram, now: Instant) -> bool {
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        let Ok(ping) = Ping::parse(&d.frame.payload, &mut budget) else {
            return false;
        };
        let gp = GuessPing::of(&ping);
        if !gp.is_guess() {
            return false;
        }
        if !self.guess_serving() {
            self.guess.stats.refused += 1;
            self.stats.udp.drop("guess-not-served");
            return true;
        }
        if !self.guess.pings.allow(from.ip(), now) {
            self.guess.stats.throttled += 1;
            self.stats.udp.drop("guess-ping-throttled");
            return true;
        }
        // An introduction: the sender serves GUESS too, at the port it says.
        if let Some(port) = gp.gue.and_then(|g| g.port) {
            self.guess_learn(SocketAddr::new(from.ip(), port), now);
        }
        let mut exts = vec![Gue::ours()];
        if gp.key_request {
            let key = self.guess.keys.key(from, now);
            exts.push(GgepExt::new(
                g::ID_QK,
                Bytes::copy_from_slice(key.as_bytes()),
            ));
            self.guess.stats.keys_sent += 1;
        }
        // `SCP`, or an empty `GUE` alone: "and GUESS hosts".
        let ipp =
            gp.scp.is_some() || (!gp.key_request && gp.gue.is_some_and(|g| g.version.is_none()));
        let pong = Message::Pong(self.guess_own_pong(exts, ipp, &[from]));
        self.guess_send(from, d.frame.header.guid, &pong, 0, d.deflate_ok);
        true
    }

    /// A Query by UDP: a GUESS query, answered when its key is the source's.
    pub(super) fn guess_query(&mut self, from: SocketAddr, d: Datagram, now: Instant) {
        if !self.guess_serving() {
            self.guess.stats.refused += 1;
            self.stats.udp.drop("guess-not-served");
            return;
        }
        let payload = d.frame.payload.clone();
        let Ok(view) = QueryView::parse(&payload) else {
            self.stats.udp.drop("malformed");
            return;
        };
        let gq = GuessQuery::of(&view);
        let muid = d.frame.header.guid;
        let Some(key) = gq.key else {
            self.guess.stats.no_keys += 1;
            self.stats.udp.drop("guess-no-key");
            return;
        };
        if !key.is_some_and(|k| self.guess.keys.valid(from, &k, now)) {
            // As gtk-gnutella does: the query is not run, and the querier is
            // given the key it should have used.
            self.guess.stats.bad_keys += 1;
            self.stats.udp.drop("guess-bad-key");
            let fresh = self.guess.keys.key(from, now);
            let exts = vec![
                Gue::ours(),
                GgepExt::new(g::ID_QK, Bytes::copy_from_slice(fresh.as_bytes())),
            ];
            let pong = Message::Pong(self.guess_own_pong(exts, false, &[]));
            self.guess_send(from, muid, &pong, 0, false);
            self.guess.stats.keys_sent += 1;
            return;
        }
        if !self.guess.seen.allow(muid, now) {
            self.guess.stats.repeated += 1;
            self.stats.udp.drop("guess-repeated");
            return;
        }
        self.guess.stats.queries_answered += 1;
        self.guess_ack(from, muid, gq.scp);
        let Some(me) = self.guess_local() else {
            return;
        };
        // Our files.
        let found = self.local_results(&view);
        let flags = OpenDataFlags {
            push: Some(self.tcp_firewalled()),
            busy: Some(self.links.uploads_busy()),
            ..OpenDataFlags::default()
        };
        self.guess_hits(from, muid, gq.deflate, found, me, self.me, flags, None, 0);
        // Files our leaves offered us: hits naming the leaf, us as its proxy.
        let mut proxy = Vec::with_capacity(6);
        proxy.extend_from_slice(&me.ip().octets());
        proxy.extend_from_slice(&me.port().to_le_bytes());
        for (guid, addr, firewalled, found) in self.offered_results(None, &view) {
            let Some(addr) = v4(addr) else { continue };
            let ggep = Ggep::new(vec![GgepExt::new("PUSH", proxy.clone())]);
            let flags = OpenDataFlags {
                push: Some(firewalled),
                ..OpenDataFlags::default()
            };
            self.guess_hits(
                from,
                muid,
                gq.deflate,
                found,
                addr,
                guid,
                flags,
                Some(ggep),
                1,
            );
            self.stats.hits_for_leaves += 1;
        }
        // Leaves reached by their tables: the query goes on to them without
        // its GUESS extensions, its hits sent on by UDP as they come.
        self.guess_to_leaves(from, &d.frame, &view, gq.deflate, now);
    }

    /// Acknowledges a GUESS query: the pong of another GUESS ultrapeer (or ours
    /// when we know none), with `GUE`, and `IPP` of GUESS hosts when asked.
    fn guess_ack(&mut self, to: SocketAddr, muid: Guid, scp: bool) {
        let other = self
            .guess
            .hosts
            .recent(4, &[to])
            .into_iter()
            .filter_map(v4)
            .find(|a| Some(*a) != self.guess_local());
        let (pong, hops) = match other {
            Some(o) => {
                let mut exts = vec![Gue::ours()];
                if scp {
                    let hosts: Vec<SocketAddrV4> = self
                        .guess
                        .hosts
                        .recent(MAX_IPP * 2, &[to, SocketAddr::V4(o)])
                        .into_iter()
                        .filter_map(v4)
                        .take(MAX_IPP)
                        .collect();
                    if !hosts.is_empty() {
                        exts.push(g::ipp(&hosts));
                    }
                }
                let p = Pong {
                    port: o.port(),
                    ip: *o.ip(),
                    files: 0,
                    kbytes: 0,
                    ggep: Some(Ggep::new(exts)),
                };
                (p, 1)
            }
            None => (self.guess_own_pong(vec![Gue::ours()], scp, &[to]), 0),
        };
        self.guess_send(to, muid, &Message::Pong(pong), hops, false);
    }

    /// Sends `found` to `to` as QueryHits of at most [`MAX_UDP_HIT`] bytes
    /// each, naming `host` and `servent`.
    #[allow(clippy::too_many_arguments)]
    fn guess_hits(
        &mut self,
        to: SocketAddr,
        muid: Guid,
        deflate: bool,
        found: Vec<HitResult>,
        host: SocketAddrV4,
        servent: Guid,
        flags: OpenDataFlags,
        ggep: Option<Ggep>,
        hops: u8,
    ) {
        let hit = |results: Vec<HitResult>| {
            Message::QueryHit(QueryHit {
                port: host.port(),
                ip: *host.ip(),
                speed: 0,
                results,
                trailer: TrailerArea::Qhd(Trailer::new(VENDOR, flags, ggep.clone())),
                servent,
            })
        };
        let size = |m: &Message| {
            let mut b = BytesMut::new();
            m.encode_payload(&mut b)
                .map(|_| b.len())
                .unwrap_or(usize::MAX)
        };
        let mut batches: Vec<Vec<HitResult>> = Vec::new();
        let mut current: Vec<HitResult> = Vec::new();
        for r in found {
            current.push(r);
            if current.len() > 1
                && (current.len() > 255 || size(&hit(current.clone())) > MAX_UDP_HIT)
            {
                let last = current.pop().expect("two or more");
                batches.push(std::mem::replace(&mut current, vec![last]));
            }
        }
        if !current.is_empty() {
            batches.push(current);
        }
        for b in batches {
            let msg = hit(b);
            match Frame::new(&msg, muid, Self::reply_ttl(Hops(0)), Hops(hops)) {
                Ok(frame) => {
                    self.send_datagram(to, &frame, deflate);
                    self.guess.stats.hits_sent += 1;
                    self.stats.hits_sent += 1;
                }
                Err(e) => tracing::debug!(error = %e, "a GUESS hit does not encode"),
            }
        }
    }

    /// Sends a GUESS query on to the leaves whose tables match, stripped of
    /// its GUESS extensions, TTL 1; their hits come back to us (the query is
    /// registered as ours) and go on by UDP.
    fn guess_to_leaves(
        &mut self,
        from: SocketAddr,
        frame: &Frame,
        view: &QueryView<'_>,
        deflate: bool,
        now: Instant,
    ) {
        let keys = QueryKeys::of(view);
        let any = self.peers.values().any(|p| {
            p.info.link == Link::ToLeaf && !answers_for(p) && p.matches(&keys) == Some(true)
        });
        if !any {
            return;
        }
        self.guess
            .relays
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < RELAY_LIFE);
        if self.guess.relays.len() >= MAX_RELAYS {
            self.stats.udp.drop("guess-relays-full");
            return;
        }
        let muid = frame.header.guid;
        let payload = g::without_guess(&frame.payload).unwrap_or_else(|| frame.payload.clone());
        let payload = self.oob_guess_payload(from, &frame.header.guid, payload);
        let stripped = Frame {
            header: Header {
                ttl: Ttl(1),
                hops: Hops(0),
                payload_len: payload.len() as u32,
                ..frame.header
            },
            payload,
        };
        self.router.originate(muid, Class::Search, 1, now);
        self.guess.relays.insert(muid, (from, deflate, now));
        let before = self.stats.relayed.queries;
        // No link has this id: every matching leaf gets it.
        self.send_to_leaves(ConnId(u64::MAX), &stripped, None, &keys);
        self.guess.stats.to_leaves += self.stats.relayed.queries - before;
    }

    /// A hit delivered to us: one of a leaf for a GUESS query we passed on
    /// (sent on by UDP), or one for a search of ours.
    pub(super) fn own_or_relayed_hit(&mut self, h: &Header, payload: &Bytes, now: Instant) {
        if let Some((to, deflate, at)) = self.guess.relays.get(&h.guid).copied() {
            if now.saturating_duration_since(at) < RELAY_LIFE {
                let frame = Frame {
                    header: Header {
                        ttl: Self::reply_ttl(Hops(0)),
                        hops: Hops(1),
                        payload_len: payload.len() as u32,
                        ..*h
                    },
                    payload: payload.clone(),
                };
                self.send_datagram(to, &frame, deflate);
                self.guess.stats.leaf_hits_relayed += 1;
                return;
            }
        }
        let n = payload.first().copied().unwrap_or(0) as u32;
        self.guess.client.results(h.guid, n, now);
        self.links.own_hit(h.guid, payload.clone());
    }

    /// `n` results for our search `search` came by another way (out of
    /// band): it is not quiet.
    pub(super) fn guess_results(&mut self, search: Guid, n: u32, now: Instant) {
        self.guess.client.results(search, n, now);
    }

    /// A search of ours went out: watched, to go on by GUESS if it goes quiet.
    pub(super) fn guess_watch(&mut self, guid: Guid, query: &Bytes, now: Instant) {
        self.guess.client.watch(guid, query.clone(), now);
    }

    /// A Pong by UDP: handled here when it answers a key request or a GUESS
    /// query of ours; false otherwise.
    pub(super) fn guess_pong(&mut self, from: SocketAddr, d: &Datagram, now: Instant) -> bool {
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        let Ok(pong) = Pong::parse(&d.frame.payload, &mut budget) else {
            return false;
        };
        let gp = GuessPong::of(&pong);
        let scope = self.hosts.scope();
        let mut named: Vec<SocketAddr> = gp
            .hosts
            .iter()
            .map(|a| SocketAddr::V4(*a))
            .filter(|a| scope.allows(*a) && !self.is_me(*a))
            .collect();
        // An acknowledgement names another GUESS host in its fixed part.
        let host = SocketAddr::V4(SocketAddrV4::new(pong.ip, pong.port));
        if gp.gue.is_some() && host != from && scope.allows(host) && !self.is_me(host) {
            named.push(host);
        }
        let Guess { client, hosts, .. } = &mut self.guess;
        let ours = client.pong(hosts, from, &d.frame.header.guid, gp.key, &named, now);
        if ours {
            // A key or an acknowledgement frees a place: the next request goes
            // now rather than at the next tick.
            self.guess_tick(now);
        }
        ours
    }

    /// A QueryHit by UDP: taken when it answers a GUESS query of ours, from a
    /// host it went to; false otherwise.
    pub(super) fn guess_hit(&mut self, from: SocketAddr, d: &Datagram, now: Instant) -> bool {
        let muid = d.frame.header.guid;
        let Some(search) = self.guess.client.search_of(&muid, from) else {
            return false;
        };
        let n = d.frame.payload.first().copied().unwrap_or(0) as u32;
        self.guess.client.hit(&muid, from, n, now);
        // Counted for our ultrapeers' status requests (BEAR/11) too.
        self.own_results(search, &d.frame.payload);
        self.links.own_hit(search, d.frame.payload.clone());
        true
    }

    /// Every tick: our quiet searches go on by GUESS.
    pub(super) fn guess_tick(&mut self, now: Instant) {
        if !self.links.udp_open() {
            return;
        }
        let actions = {
            let Guess { client, hosts, .. } = &mut self.guess;
            let rng = &mut self.rng;
            client.step(hosts, now, || rng.guid())
        };
        let scp = u8::from(self.tier.role() == Role::Ultrapeer);
        for a in actions {
            match a {
                Action::KeyRequest { to, muid } => {
                    let ping = Message::Ping(g::key_request(Some(scp)));
                    self.guess_send(to, muid, &ping, 0, false);
                }
                Action::Query {
                    to,
                    muid,
                    key,
                    query,
                } => match g::with_key(&query, &key, true, true) {
                    Ok(p) => {
                        let frame = Frame {
                            header: Header {
                                guid: muid,
                                function: Function::Query,
                                ttl: Ttl(1),
                                hops: Hops(0),
                                payload_len: p.len() as u32,
                            },
                            payload: p,
                        };
                        self.send_datagram(to, &frame, false);
                    }
                    Err(e) => tracing::debug!(error = %e, "a GUESS query does not encode"),
                },
            }
        }
    }
}
