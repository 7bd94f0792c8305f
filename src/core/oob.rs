//! Out-of-band query hits, decided without I/O (`protocol-spec/oob.md`).
//!
//! Three roles share one exchange: a querier marks its query with its own
//! address; a responder far away offers its hits by UDP (LIME/12) and keeps
//! them; the querier claims some (LIME/11, with a token in version 3) and the
//! responder sends them by UDP, each hit carrying the token back. An
//! ultrapeer may stand in as the querier for a leaf (OOB proxying).
//!
//! [`Held`] is the responder's store of hits waiting to be claimed, [`Claims`]
//! the querier's (and proxy's) record of what it claimed from whom, with the
//! tokens it checks. Both are bounded in entries, bytes and age; every
//! refusal names a counter.

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::core::ConnId;
use crate::wire::{Guid, QueryHit};

/// Limits and timers.
#[derive(Clone, Debug)]
pub struct OobConfig {
    /// How long a responder keeps hits waiting for their LIME/11 (LimeWire
    /// waits 25 s, gtk-gnutella longer).
    pub hold: Duration,
    /// Queries whose hits are held at once.
    pub max_held: usize,
    /// Bytes of held hits at most.
    pub max_held_bytes: usize,
    /// Queries held for one querying address (gtk-gnutella: 50).
    pub max_per_host: usize,
    /// Largest datagram of hits we send (plain; the GUESS advice is "about
    /// 1 KiB").
    pub datagram: usize,
    /// How long a querier accepts hits for a search, and a proxy keeps a
    /// leaf's MUID mapping.
    pub search_life: Duration,
    /// Searches (own and proxied) tracked at once; the oldest goes first.
    pub max_searches: usize,
    /// Responders remembered per search.
    pub max_responders: usize,
    /// Results a search claims in all.
    pub wanted: u32,
}

impl Default for OobConfig {
    fn default() -> Self {
        OobConfig {
            hold: Duration::from_secs(30),
            max_held: 512,
            max_held_bytes: 4 << 20,
            max_per_host: 50,
            datagram: 1024,
            search_life: Duration::from_secs(300),
            max_searches: 1024,
            max_responders: 128,
            wanted: 200,
        }
    }
}

/// Counters of the three roles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OobStats {
    /// Responder: queries answered by LIME/12 instead of over TCP.
    pub offered: u64,
    /// Responder: claims (LIME/11) that sent hits, hit messages and results
    /// sent by UDP.
    pub claimed: u64,
    pub hits_sent: u64,
    pub results_sent: u64,
    /// Responder: held hits never claimed, dropped when their time was up.
    pub unclaimed: u64,
    /// Responder: queries answered over TCP because no more hits could be
    /// held (full store, or too many for one querier).
    pub hold_refused: u64,
    /// Querier: our queries marked for OOB, and leaves' queries proxied.
    pub marked: u64,
    pub proxied: u64,
    /// Ultrapeer: leaves' OOB queries relayed unchanged (the leaf receives
    /// UDP itself).
    pub relayed: u64,
    /// Querier: LIME/11 sent, hit messages and results accepted by UDP.
    pub acks_sent: u64,
    pub hits_received: u64,
    pub results_received: u64,
    /// Querier: hits whose token did not match (dropped).
    pub forged: u64,
    /// Proxy: hits sent down to leaves (by UDP in, TCP out).
    pub to_leaves: u64,
}

/// One query's hits waiting to be claimed.
struct Entry {
    /// Where the LIME/12 went (the MUID's address).
    to: SocketAddrV4,
    /// The hits, each a datagram's worth; sent in order.
    hits: Vec<QueryHit>,
    /// Hits sent so far.
    next: usize,
    bytes: usize,
    /// The querier asked for version 3 (the LIME/11 must bring a token).
    secure: bool,
    until: Instant,
}

/// What a LIME/11 gets.
#[derive(Debug)]
pub enum Claim {
    /// Send these hits to the LIME/11's source (each with the token, if any).
    Send(Vec<QueryHit>),
    /// Nothing held for that MUID (never, or expired): counted as `reason`.
    Refused(&'static str),
}

/// The responder's hits waiting for their LIME/11.
pub struct Held {
    config: OobConfig,
    map: HashMap<Guid, Entry>,
    order: VecDeque<(Instant, Guid)>,
    bytes: usize,
}

impl Held {
    pub fn new(config: OobConfig) -> Held {
        Held {
            config,
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Queries whose hits are held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keeps `hits` for `muid` until claimed from `to`'s address (or the
    /// time is up). `Err`: they cannot be held (answer over TCP instead).
    pub fn hold(
        &mut self,
        muid: Guid,
        to: SocketAddrV4,
        secure: bool,
        hits: Vec<QueryHit>,
        bytes: usize,
        now: Instant,
    ) -> Result<(), &'static str> {
        if self.map.contains_key(&muid) {
            return Err("held-already");
        }
        if self.map.len() >= self.config.max_held || self.bytes + bytes > self.config.max_held_bytes
        {
            return Err("held-full");
        }
        let per_host = self.map.values().filter(|e| e.to.ip() == to.ip()).count();
        if per_host >= self.config.max_per_host {
            return Err("held-host-full");
        }
        let until = now + self.config.hold;
        self.bytes += bytes;
        self.order.push_back((until, muid));
        self.map.insert(
            muid,
            Entry {
                to,
                hits,
                next: 0,
                bytes,
                secure,
                until,
            },
        );
        Ok(())
    }

    /// A LIME/11 for `muid` from `from` claiming `wanted` results (255: all)
    /// and bringing `token` (v3). Each hit is sent once however many acks
    /// come; the entry stays until its time is up, so a repeated ack finds
    /// nothing more to send rather than nothing known.
    pub fn claim(
        &mut self,
        muid: &Guid,
        from: SocketAddr,
        wanted: u8,
        has_token: bool,
        now: Instant,
    ) -> Claim {
        let Some(e) = self.map.get_mut(muid).filter(|e| e.until > now) else {
            return Claim::Refused("oob-ack-unknown");
        };
        // Only the querier (or its proxy) named in the MUID may claim: anyone
        // else would have us send hits to an address of their choosing.
        if from.ip() != std::net::IpAddr::V4(*e.to.ip()) {
            return Claim::Refused("oob-ack-wrong-source");
        }
        if e.secure && !has_token {
            return Claim::Refused("oob-ack-no-token");
        }
        if e.next >= e.hits.len() {
            return Claim::Refused("oob-ack-duplicate");
        }
        let limit = if wanted == crate::wire::oob::ALL {
            usize::MAX
        } else {
            wanted as usize
        };
        let mut out = Vec::new();
        let mut results = 0usize;
        while e.next < e.hits.len() && results < limit {
            // Taken out of the store: sent once, and its memory goes now.
            let h = std::mem::replace(&mut e.hits[e.next], empty_hit());
            results += h.results.len();
            out.push(h);
            e.next += 1;
        }
        if out.is_empty() {
            return Claim::Refused("oob-ack-wants-none");
        }
        Claim::Send(out)
    }

    /// Forgets what is past its time; returns how many were never claimed.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let mut unclaimed = 0;
        while let Some(&(until, muid)) = self.order.front() {
            if until > now {
                break;
            }
            self.order.pop_front();
            if let Some(e) = self.map.remove(&muid) {
                self.bytes -= e.bytes;
                if e.next == 0 {
                    unclaimed += 1;
                }
            }
        }
        unclaimed
    }
}

/// What is left in the store of a hit once sent.
fn empty_hit() -> QueryHit {
    QueryHit {
        port: 0,
        ip: std::net::Ipv4Addr::UNSPECIFIED,
        speed: 0,
        results: Vec::new(),
        trailer: crate::wire::TrailerArea::None,
        servent: Guid([0; 16]),
    }
}

/// Whose search a claimed MUID is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Ours, started with this id (hits go to `Links::own_hit` under it).
    Own(Guid),
    /// A leaf's, proxied: hits go down `conn` under the leaf's own MUID.
    Leaf(ConnId, Guid),
}

struct Responder {
    claimed: u32,
    got: u32,
    secure: bool,
}

struct Search {
    owner: Owner,
    /// Results claimed so far, from every responder.
    claimed: u32,
    started: Instant,
    responders: HashMap<SocketAddr, Responder>,
}

/// What a LIME/12 gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send a LIME/11 claiming `wanted` (v3 with `token` when the
    /// indication was v3).
    Ack { wanted: u8, token: Option<[u8; 4]> },
    /// Nothing: counted as the reason.
    Ignore(&'static str),
}

/// What an out-of-band hit gets.
#[derive(Debug, PartialEq, Eq)]
pub enum HitVerdict {
    Take(Owner),
    Drop(&'static str),
}

/// The querier's side: searches whose MUID carries our address, what was
/// claimed from whom, and the tokens the hits must bring back.
pub struct Claims {
    config: OobConfig,
    secret: [u8; 16],
    map: HashMap<Guid, Search>,
    order: VecDeque<Guid>,
}

impl Claims {
    /// `secret` keys the tokens (from the core's seeded randomness).
    pub fn new(config: OobConfig, secret: [u8; 16]) -> Claims {
        Claims {
            config,
            secret,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Starts tracking `muid` (already carrying our address) for `owner`;
    /// the oldest search goes when there are too many.
    pub fn start(&mut self, muid: Guid, owner: Owner, now: Instant) {
        if self.map.contains_key(&muid) {
            return;
        }
        while self.map.len() >= self.config.max_searches {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(muid);
        self.map.insert(
            muid,
            Search {
                owner,
                claimed: 0,
                started: now,
                responders: HashMap::new(),
            },
        );
    }

    /// The MUID under which we proxy leaf `conn`'s query `original`.
    pub fn proxied(&self, conn: ConnId, original: Guid) -> Option<Guid> {
        self.map
            .iter()
            .find(|(_, s)| s.owner == Owner::Leaf(conn, original))
            .map(|(m, _)| *m)
    }

    /// The MUID our own search `id` went out under, while it is tracked.
    pub fn own_muid(&self, id: Guid) -> Option<Guid> {
        self.map
            .iter()
            .find(|(_, s)| s.owner == Owner::Own(id))
            .map(|(m, _)| *m)
    }

    /// Stops tracking `muid`: its offers are no longer claimed.
    pub fn end(&mut self, muid: &Guid) {
        if self.map.remove(muid).is_some() {
            self.order.retain(|m| m != muid);
        }
    }

    /// Whose search `muid` is (for hits that come over TCP too).
    pub fn owner(&self, muid: &Guid) -> Option<Owner> {
        self.map.get(muid).map(|s| s.owner)
    }

    /// Forgets searches past their life, and those of a closed leaf.
    pub fn expire(&mut self, now: Instant, closed: Option<ConnId>) {
        let life = self.config.search_life;
        self.map.retain(|_, s| {
            now.saturating_duration_since(s.started) < life
                && !matches!((s.owner, closed), (Owner::Leaf(c, _), Some(d)) if c == d)
        });
        let map = &self.map;
        self.order.retain(|m| map.contains_key(m));
    }

    /// The token a responder at `from` must echo for `muid`: a keyed hash of
    /// both, 4 bytes as gtk-gnutella's.
    pub fn token(&self, from: SocketAddr, muid: &Guid) -> [u8; 4] {
        let mut h = Sha1::new();
        h.update(self.secret);
        match from {
            SocketAddr::V4(a) => {
                h.update(a.ip().octets());
                h.update(a.port().to_le_bytes());
            }
            SocketAddr::V6(a) => {
                h.update(a.ip().octets());
                h.update(a.port().to_le_bytes());
            }
        }
        h.update(muid.0);
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    /// A LIME/12 for `muid` from `from`, offering `hits` (version `version`).
    pub fn indication(
        &mut self,
        muid: &Guid,
        from: SocketAddr,
        hits: u8,
        version: u16,
        now: Instant,
    ) -> Answer {
        let life = self.config.search_life;
        let token = self.token(from, muid);
        let (wanted_total, max_responders) = (self.config.wanted, self.config.max_responders);
        let Some(s) = self
            .map
            .get_mut(muid)
            .filter(|s| now.saturating_duration_since(s.started) < life)
        else {
            return Answer::Ignore("oob-offer-unknown");
        };
        if hits == 0 {
            return Answer::Ignore("oob-offer-empty");
        }
        let secure = version >= 3;
        if let Some(r) = s.responders.get_mut(&from) {
            // Offered again (LimeWire sends its LIME/12 twice): claimed again
            // while nothing came, in case our ack was lost; each hit comes once
            // anyway.
            if r.got > 0 || r.claimed == 0 {
                return Answer::Ignore("oob-offer-repeated");
            }
            return Answer::Ack {
                wanted: r.claimed.min(255) as u8,
                token: r.secure.then_some(token),
            };
        }
        let left = wanted_total.saturating_sub(s.claimed);
        if left == 0 {
            return Answer::Ignore("oob-offer-enough");
        }
        if s.responders.len() >= max_responders {
            return Answer::Ignore("oob-offer-too-many");
        }
        let wanted = (hits as u32).min(left).min(255);
        s.claimed += wanted;
        s.responders.insert(
            from,
            Responder {
                claimed: wanted,
                got: 0,
                secure,
            },
        );
        Answer::Ack {
            wanted: wanted as u8,
            token: secure.then_some(token),
        }
    }

    /// A hit by UDP for `muid` from `from` with `results` results and the
    /// `SO` token it carries.
    pub fn hit(
        &mut self,
        muid: &Guid,
        from: SocketAddr,
        results: u32,
        token: Option<&[u8]>,
    ) -> HitVerdict {
        let expected = self.token(from, muid);
        let Some(s) = self.map.get_mut(muid) else {
            return HitVerdict::Drop("hit-unsolicited");
        };
        let Some(r) = s.responders.get_mut(&from) else {
            return HitVerdict::Drop("oob-hit-unclaimed");
        };
        if r.secure && token != Some(&expected[..]) {
            return HitVerdict::Drop("oob-token-forged");
        }
        if r.got >= r.claimed {
            return HitVerdict::Drop("oob-hit-over-claim");
        }
        r.got = r.got.saturating_add(results);
        HitVerdict::Take(s.owner)
    }
}

/// Splits results (their encoded `sizes`) into runs that each fit a
/// datagram of `limit` bytes with `overhead` bytes of the rest of the hit; a
/// result too big for any goes alone, and no run has more than 255.
pub fn split(sizes: &[usize], overhead: usize, limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut len = overhead;
    for (i, s) in sizes.iter().enumerate() {
        if i > start && (len + s > limit || i - start == 255) {
            out.push(start..i);
            start = i;
            len = overhead;
        }
        len += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HitResult, TrailerArea};
    use std::net::Ipv4Addr;

    fn hit(n: usize) -> QueryHit {
        QueryHit {
            port: 6346,
            ip: Ipv4Addr::new(10, 0, 0, 1),
            speed: 0,
            results: (0..n)
                .map(|i| HitResult::new(i as u32, 1, "f", None))
                .collect(),
            trailer: TrailerArea::None,
            servent: Guid([9; 16]),
        }
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn held_hits_go_once_to_the_querier_and_expire_counted() {
        let t0 = Instant::now();
        let mut h = Held::new(OobConfig::default());
        let q: SocketAddrV4 = "10.1.1.1:6346".parse().unwrap();
        let m = Guid([1; 16]);
        h.hold(m, q, true, vec![hit(2), hit(3)], 100, t0).unwrap();
        assert_eq!(
            h.hold(m, q, true, vec![hit(1)], 10, t0),
            Err("held-already")
        );
        // Not from the querier's address, no token for a v3 query: refused.
        assert!(matches!(
            h.claim(&m, a("10.9.9.9:6346"), 255, true, t0),
            Claim::Refused("oob-ack-wrong-source")
        ));
        assert!(matches!(
            h.claim(&m, a("10.1.1.1:7000"), 255, false, t0),
            Claim::Refused("oob-ack-no-token")
        ));
        // Want 1: the first hit (2 results) goes; the rest on the next ack.
        let Claim::Send(first) = h.claim(&m, a("10.1.1.1:7000"), 1, true, t0) else {
            panic!()
        };
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].results.len(), 2);
        let Claim::Send(rest) = h.claim(&m, a("10.1.1.1:7000"), 255, true, t0) else {
            panic!()
        };
        assert_eq!(rest[0].results.len(), 3);
        assert!(matches!(
            h.claim(&m, a("10.1.1.1:7000"), 255, true, t0),
            Claim::Refused("oob-ack-duplicate")
        ));
        // An unclaimed one is counted when it expires; a claimed one is not.
        let m2 = Guid([2; 16]);
        h.hold(m2, q, false, vec![hit(1)], 10, t0).unwrap();
        assert_eq!(h.expire(t0 + Duration::from_secs(29)), 0);
        assert_eq!(h.expire(t0 + Duration::from_secs(30)), 1);
        assert!(h.is_empty());
        assert!(matches!(
            h.claim(&m2, a("10.1.1.1:7000"), 255, false, t0),
            Claim::Refused("oob-ack-unknown")
        ));
    }

    #[test]
    fn the_store_is_bounded_per_host_and_in_bytes() {
        let t0 = Instant::now();
        let mut h = Held::new(OobConfig {
            max_per_host: 2,
            max_held_bytes: 250,
            ..OobConfig::default()
        });
        let q: SocketAddrV4 = "10.1.1.1:6346".parse().unwrap();
        let r: SocketAddrV4 = "10.1.1.2:6346".parse().unwrap();
        h.hold(Guid([1; 16]), q, false, vec![hit(1)], 100, t0)
            .unwrap();
        h.hold(Guid([2; 16]), q, false, vec![hit(1)], 100, t0)
            .unwrap();
        assert_eq!(
            h.hold(Guid([3; 16]), q, false, vec![hit(1)], 10, t0),
            Err("held-host-full")
        );
        assert_eq!(
            h.hold(Guid([4; 16]), r, false, vec![hit(1)], 100, t0),
            Err("held-full")
        );
        h.hold(Guid([5; 16]), r, false, vec![hit(1)], 50, t0)
            .unwrap();
    }

    #[test]
    fn an_ended_search_claims_no_more() {
        let t0 = Instant::now();
        let mut c = Claims::new(OobConfig::default(), [7; 16]);
        let (id, m) = (Guid([4; 16]), Guid([3; 16]));
        c.start(m, Owner::Own(id), t0);
        assert_eq!(c.own_muid(id), Some(m));
        assert_eq!(c.own_muid(Guid([5; 16])), None);
        c.end(&m);
        assert_eq!(c.own_muid(id), None);
        assert!(c.is_empty());
        assert_eq!(
            c.indication(&m, a("10.2.2.2:6346"), 3, 3, t0),
            Answer::Ignore("oob-offer-unknown")
        );
    }

    #[test]
    fn claims_check_tokens_and_what_was_claimed() {
        let t0 = Instant::now();
        let mut c = Claims::new(
            OobConfig {
                wanted: 5,
                ..OobConfig::default()
            },
            [7; 16],
        );
        let m = Guid([3; 16]);
        let r1 = a("10.2.2.2:6346");
        let r2 = a("10.3.3.3:6346");
        assert_eq!(
            c.indication(&m, r1, 3, 3, t0),
            Answer::Ignore("oob-offer-unknown")
        );
        let owner = Owner::Own(Guid([4; 16]));
        c.start(m, owner, t0);
        let Answer::Ack { wanted, token } = c.indication(&m, r1, 3, 3, t0) else {
            panic!()
        };
        assert_eq!(wanted, 3);
        let token = token.unwrap();
        assert_eq!(token, c.token(r1, &m));
        assert_ne!(token, c.token(r2, &m), "a token per responder");
        // The search wants 5: the second responder is claimed for 2.
        assert_eq!(
            c.indication(&m, r2, 9, 2, t0),
            Answer::Ack {
                wanted: 2,
                token: None
            }
        );
        assert_eq!(
            c.indication(&m, a("10.4.4.4:1"), 9, 3, t0),
            Answer::Ignore("oob-offer-enough")
        );
        // A repeated offer is claimed again while nothing came.
        assert_eq!(
            c.indication(&m, r1, 3, 3, t0),
            Answer::Ack {
                wanted: 3,
                token: Some(token)
            }
        );
        // Forged token, unclaimed source, then the real one.
        assert_eq!(
            c.hit(&m, r1, 1, Some(&[1, 2, 3, 4])),
            HitVerdict::Drop("oob-token-forged")
        );
        assert_eq!(c.hit(&m, r1, 1, None), HitVerdict::Drop("oob-token-forged"));
        assert_eq!(
            c.hit(&m, a("10.9.9.9:1"), 1, None),
            HitVerdict::Drop("oob-hit-unclaimed")
        );
        assert_eq!(c.hit(&m, r1, 3, Some(&token)), HitVerdict::Take(owner));
        assert_eq!(
            c.hit(&m, r1, 1, Some(&token)),
            HitVerdict::Drop("oob-hit-over-claim")
        );
        assert_eq!(
            c.indication(&m, r1, 3, 3, t0),
            Answer::Ignore("oob-offer-repeated")
        );
        // v2 responder: no token needed.
        assert_eq!(c.hit(&m, r2, 2, None), HitVerdict::Take(owner));
        assert_eq!(
            c.hit(&Guid([8; 16]), r2, 2, None),
            HitVerdict::Drop("hit-unsolicited")
        );
        // Searches end with their life, or with their leaf.
        c.start(Guid([5; 16]), Owner::Leaf(ConnId(3), Guid([6; 16])), t0);
        c.expire(t0, Some(ConnId(3)));
        assert_eq!(c.len(), 1);
        c.expire(t0 + Duration::from_secs(301), None);
        assert!(c.is_empty());
    }

    #[test]
    fn searches_are_bounded_oldest_first() {
        let t0 = Instant::now();
        let mut c = Claims::new(
            OobConfig {
                max_searches: 2,
                ..OobConfig::default()
            },
            [0; 16],
        );
        for i in 0..3u8 {
            c.start(Guid([i; 16]), Owner::Own(Guid([i; 16])), t0);
        }
        assert_eq!(c.len(), 2);
        assert!(c.owner(&Guid([0; 16])).is_none());
        assert!(c.owner(&Guid([2; 16])).is_some());
    }

    #[test]
    fn splitting_keeps_datagrams_under_the_limit() {
        assert_eq!(split(&[100; 5], 50, 300), vec![0..2, 2..4, 4..5]);
        assert_eq!(split(&[500, 10], 50, 300), vec![0..1, 1..2]);
        assert_eq!(split(&[], 50, 300), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(split(&[1; 300], 0, 10_000), vec![0..255, 255..300]);
    }
}
