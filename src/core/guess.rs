//! GUESS 0.2 decisions, with no I/O (`protocol-spec/guess.md`).
//!
//! - [`KeyMaker`]: the server's query keys, each bound to the address it was
//!   given to by a keyed hash (HMAC-SHA1) under a secret that rotates; the
//!   previous secret stays good for one more period, as gtk-gnutella keeps two.
//! - [`GuessHosts`]: the ultrapeers known to answer GUESS queries, with the
//!   key each gave us, bounded in number.
//! - [`Client`]: our own searches, watched until their TCP query goes quiet
//!   with few results, then sent by UDP to GUESS ultrapeers one after another
//!   (at most `alpha` waiting at once, each given `rpc_timeout`), fetching
//!   keys first; what to send comes out as [`Action`]s.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::wire::Guid;
use crate::wire::guess::QueryKey;

/// How GUESS runs.
#[derive(Clone, Debug)]
pub struct GuessConfig {
    /// Answer GUESS queries (as an ultrapeer that can receive UDP).
    pub serve: bool,
    /// Run GUESS queries for our own searches.
    pub client: bool,
    /// How long a key secret lives; a key made under the previous one is
    /// still taken (gtk-gnutella: a day, two secrets).
    pub key_period: Duration,
    /// Queries (or key requests) waiting for an answer at once, per search.
    pub alpha: usize,
    /// How long one is waited for.
    pub rpc_timeout: Duration,
    /// Least time between two key requests to one host.
    pub key_every: Duration,
    /// How long a key we were given is used.
    pub key_life: Duration,
    /// A search's TCP query is quiet after this long without a new result.
    pub idle: Duration,
    /// ... and then it goes on by GUESS when it has fewer results than this.
    pub few: u32,
    /// A GUESS query stops once the search has this many results.
    pub wanted: u32,
    /// The longest a GUESS query runs.
    pub lifetime: Duration,
    /// Ultrapeers queried per search at most.
    pub max_queried: usize,
    /// GUESS hosts remembered.
    pub max_hosts: usize,
    /// Searches watched at once.
    pub max_searches: usize,
    /// A host that timed out this many times in a row is forgotten.
    pub max_timeouts: u32,
}

impl Default for GuessConfig {
    fn default() -> Self {
        GuessConfig {
            serve: true,
            client: true,
            key_period: Duration::from_secs(24 * 3600),
            alpha: 5,
            rpc_timeout: Duration::from_secs(35),
            key_every: Duration::from_secs(60),
            key_life: Duration::from_secs(86_000),
            // gtk-gnutella waits 120 s; our searches are short (`servent
            // search` gives 10 s), so GUESS starts sooner.
            idle: Duration::from_secs(4),
            few: 50,
            wanted: 150,
            lifetime: Duration::from_secs(600),
            max_queried: 500,
            max_hosts: 1024,
            max_searches: 64,
            max_timeouts: 5,
        }
    }
}

/// HMAC-SHA1 (RFC 2104) of `msg` under `key` (at most 64 bytes).
fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 64];
    k[..key.len().min(64)].copy_from_slice(&key[..key.len().min(64)]);
    let mut inner = Sha1::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha1::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// splitmix64, for the secrets.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Bytes of the keys we hand out.
pub const KEY_LEN: usize = 4;

/// The server's query keys.
pub struct KeyMaker {
    /// The current secret and the one before it.
    secrets: [[u8; 16]; 2],
    /// When the current secret began (the first use, for a new maker).
    since: Option<Instant>,
    period: Duration,
    rng: u64,
}

impl KeyMaker {
    pub fn new(seed: u64, period: Duration) -> KeyMaker {
        let mut k = KeyMaker {
            secrets: [[0; 16]; 2],
            since: None,
            period: period.max(Duration::from_millis(1)),
            rng: seed,
        };
        k.secrets = [k.fresh(), k.fresh()];
        k
    }

    fn fresh(&mut self) -> [u8; 16] {
        let mut s = [0u8; 16];
        s[..8].copy_from_slice(&mix(&mut self.rng).to_le_bytes());
        s[8..].copy_from_slice(&mix(&mut self.rng).to_le_bytes());
        s
    }

    /// Rotates the secrets for the periods gone by `now`.
    fn rotate(&mut self, now: Instant) {
        let mut since = *self.since.get_or_insert(now);
        let mut turns = 0;
        while now.saturating_duration_since(since) >= self.period && turns < 2 {
            self.secrets[1] = self.secrets[0];
            self.secrets[0] = self.fresh();
            since += self.period;
            turns += 1;
        }
        if now.saturating_duration_since(since) >= self.period {
            // Idle for long: both secrets are new already.
            since = now;
        }
        self.since = Some(since);
    }

    fn make(secret: &[u8; 16], addr: SocketAddr) -> QueryKey {
        let mut msg = [0u8; 18];
        let n = match addr.ip() {
            IpAddr::V4(v4) => {
                msg[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                msg[..16].copy_from_slice(&v6.octets());
                16
            }
        };
        msg[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
        let mac = hmac_sha1(secret, &msg[..n + 2]);
        QueryKey::new(&mac[..KEY_LEN]).expect("4 bytes")
    }

    /// The key for `addr` as of `now`.
    pub fn key(&mut self, addr: SocketAddr, now: Instant) -> QueryKey {
        self.rotate(now);
        Self::make(&self.secrets[0], addr)
    }

    /// Whether `key` is one we gave `addr` under the current or the previous
    /// secret.
    pub fn valid(&mut self, addr: SocketAddr, key: &QueryKey, now: Instant) -> bool {
        self.rotate(now);
        self.secrets
            .iter()
            .any(|s| Self::make(s, addr).as_bytes() == key.as_bytes())
    }
}

#[derive(Clone, Debug)]
struct Host {
    seen: Instant,
    key: Option<(QueryKey, Instant)>,
    key_asked: Option<Instant>,
    timeouts: u32,
}

/// Ultrapeers known to answer GUESS queries, and the keys they gave us.
pub struct GuessHosts {
    map: HashMap<SocketAddr, Host>,
    cap: usize,
}

impl GuessHosts {
    pub fn new(cap: usize) -> GuessHosts {
        GuessHosts {
            map: HashMap::new(),
            cap: cap.max(1),
        }
    }

    /// `addr` serves GUESS queries (seen at `now`).
    pub fn learn(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(h) = self.map.get_mut(&addr) {
            h.seen = now;
            return;
        }
        if self.map.len() >= self.cap {
            // The one heard of longest ago makes room.
            if let Some(old) = self.map.iter().min_by_key(|(_, h)| h.seen).map(|(a, _)| *a) {
                self.map.remove(&old);
            }
        }
        self.map.insert(
            addr,
            Host {
                seen: now,
                key: None,
                key_asked: None,
                timeouts: 0,
            },
        );
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.map.contains_key(addr)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Up to `n` hosts, the most recently heard of first, but `except`.
    pub fn recent(&self, n: usize, except: &[SocketAddr]) -> Vec<SocketAddr> {
        let mut v: Vec<(&SocketAddr, &Host)> = self
            .map
            .iter()
            .filter(|(a, _)| !except.contains(a))
            .collect();
        v.sort_by(|a, b| b.1.seen.cmp(&a.1.seen).then(a.0.cmp(b.0)));
        v.into_iter().take(n).map(|(a, _)| *a).collect()
    }

    /// The key `addr` gave us, if still fresh.
    pub fn key(&self, addr: &SocketAddr, now: Instant, life: Duration) -> Option<QueryKey> {
        let (k, at) = self.map.get(addr)?.key?;
        (now.saturating_duration_since(at) < life).then_some(k)
    }

    /// `addr` gave us `key`.
    pub fn set_key(&mut self, addr: SocketAddr, key: QueryKey, now: Instant) {
        self.learn(addr, now);
        if let Some(h) = self.map.get_mut(&addr) {
            h.key = Some((key, now));
            h.timeouts = 0;
        }
    }

    /// Whether a key may be asked of `addr` now (and if so, it counts as asked).
    pub fn ask_key(&mut self, addr: SocketAddr, now: Instant, every: Duration) -> bool {
        let Some(h) = self.map.get_mut(&addr) else {
            return false;
        };
        if h.key_asked
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return false;
        }
        h.key_asked = Some(now);
        true
    }

    /// `addr` answered.
    pub fn answered(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(h) = self.map.get_mut(&addr) {
            h.timeouts = 0;
            h.seen = now;
        }
    }

    /// `addr` did not answer in time: its key is dropped (to be fetched again)
    /// and after `max` silences in a row it is forgotten.
    pub fn timed_out(&mut self, addr: SocketAddr, max: u32) {
        if let Some(h) = self.map.get_mut(&addr) {
            h.key = None;
            h.timeouts += 1;
            if h.timeouts >= max {
                self.map.remove(&addr);
            }
        }
    }
}

/// What the client wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A Ping asking `to` for a query key (with `SCP`), under `muid`.
    KeyRequest { to: SocketAddr, muid: Guid },
    /// The GUESS query `muid` to `to`, with `key`; `query` is the search's
    /// query payload, to be given `QK`, `SCP` and `Z`.
    Query {
        to: SocketAddr,
        muid: Guid,
        key: QueryKey,
        query: Bytes,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Key(Guid),
    Ack,
}

/// One of our searches, watched and maybe run by GUESS.
struct Search {
    query: Bytes,
    /// When its TCP query went out, and its last result.
    last: Instant,
    results: u32,
    /// The GUESS query: its MUID and when it began.
    guess: Option<(Guid, Instant)>,
    queried: HashSet<SocketAddr>,
    /// Hosts we wait on, for what, since when.
    waiting: HashMap<SocketAddr, (Waiting, Instant)>,
    /// Hosts that refused a stale key with a fresh one and were queried
    /// again (once each).
    retried: HashSet<SocketAddr>,
    /// Enough results, or its time is up: nothing more is sent.
    done: bool,
}

/// What happened to the client, for the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub started: u64,
    pub key_requests: u64,
    pub keys: u64,
    pub queries: u64,
    pub acks: u64,
    pub hits: u64,
    pub results: u64,
    pub timeouts: u64,
}

/// Our searches, and their GUESS queries.
pub struct Client {
    config: GuessConfig,
    searches: HashMap<Guid, Search>,
    /// A GUESS query's MUID to its search's.
    by_muid: HashMap<Guid, Guid>,
    pub stats: ClientStats,
}

impl Client {
    pub fn new(config: GuessConfig) -> Client {
        Client {
            config,
            searches: HashMap::new(),
            by_muid: HashMap::new(),
            stats: ClientStats::default(),
        }
    }

    pub fn config(&self) -> &GuessConfig {
        &self.config
    }

    /// A search of ours went out over TCP (`query`: its payload).
    pub fn watch(&mut self, search: Guid, query: Bytes, now: Instant) {
        if !self.config.client {
            return;
        }
        if self.searches.len() >= self.config.max_searches {
            // The oldest gives way.
            if let Some(old) = self
                .searches
                .iter()
                .min_by_key(|(_, s)| s.guess.map_or(s.last, |g| g.1))
                .map(|(g, _)| *g)
            {
                self.end(old);
            }
        }
        self.searches.insert(
            search,
            Search {
                query,
                last: now,
                results: 0,
                guess: None,
                queried: HashSet::new(),
                waiting: HashMap::new(),
                retried: HashSet::new(),
                done: false,
            },
        );
    }

    /// The search is over.
    pub fn end(&mut self, search: Guid) {
        if let Some(s) = self.searches.remove(&search) {
            if let Some((muid, _)) = s.guess {
                self.by_muid.remove(&muid);
            }
        }
    }

    pub fn running(&self) -> usize {
        self.searches.values().filter(|s| s.guess.is_some()).count()
    }

    /// `n` results came for `search` (by any path).
    pub fn results(&mut self, search: Guid, n: u32, now: Instant) {
        if let Some(s) = self.searches.get_mut(&search) {
            s.results = s.results.saturating_add(n);
            if n > 0 {
                s.last = now;
            }
        }
    }

    /// The search a GUESS query's MUID belongs to, if `from` is a host it
    /// was sent to.
    pub fn search_of(&self, muid: &Guid, from: SocketAddr) -> Option<Guid> {
        let search = self.by_muid.get(muid)?;
        let s = self.searches.get(search)?;
        s.queried
            .iter()
            .any(|a| a.ip() == from.ip())
            .then_some(*search)
    }

    /// A hit with `n` results came by UDP for GUESS query `muid` from `from`;
    /// returns the search it is for (its results are counted), or `None` when
    /// it answers nothing we asked.
    pub fn hit(&mut self, muid: &Guid, from: SocketAddr, n: u32, now: Instant) -> Option<Guid> {
        let search = self.search_of(muid, from)?;
        self.stats.hits += 1;
        self.stats.results += n as u64;
        self.results(search, n, now);
        Some(search)
    }

    /// A pong from `from` with MUID `muid`. Returns whether it answered
    /// something of ours: a key request (`key` is stored), or a GUESS query
    /// (the acknowledgement). `hosts`: GUESS hosts it names, learned.
    pub fn pong(
        &mut self,
        hosts: &mut GuessHosts,
        from: SocketAddr,
        muid: &Guid,
        key: Option<QueryKey>,
        named: &[SocketAddr],
        now: Instant,
    ) -> bool {
        let mut ours = false;
        for s in self.searches.values_mut() {
            match s.waiting.get(&from) {
                Some((Waiting::Key(m), _)) if m == muid => {
                    s.waiting.remove(&from);
                    ours = true;
                }
                Some((Waiting::Ack, _)) if s.guess.is_some_and(|g| g.0 == *muid) => {
                    s.waiting.remove(&from);
                    self.stats.acks += 1;
                    ours = true;
                    // A fresh key instead of hits: our key was stale. Queried
                    // again with it, once.
                    if key.is_some() && s.retried.insert(from) {
                        s.queried.remove(&from);
                    }
                }
                _ => {}
            }
        }
        if ours {
            hosts.answered(from, now);
            if let Some(k) = key {
                hosts.set_key(from, k, now);
                self.stats.keys += 1;
            }
            for a in named {
                hosts.learn(*a, now);
            }
        }
        ours
    }

    /// What to send at `now`: GUESS queries started for searches gone quiet,
    /// timeouts noted, and the next hosts asked for keys or queried.
    pub fn step(
        &mut self,
        hosts: &mut GuessHosts,
        now: Instant,
        mut new_muid: impl FnMut() -> Guid,
    ) -> Vec<Action> {
        let c = self.config.clone();
        let mut out = Vec::new();
        let mut ended = Vec::new();
        for (id, s) in self.searches.iter_mut() {
            if s.done {
                if s.guess
                    .is_some_and(|g| now.saturating_duration_since(g.1) >= c.lifetime)
                {
                    ended.push(*id);
                }
                continue;
            }
            if s.guess.is_none() {
                let quiet = now.saturating_duration_since(s.last) >= c.idle;
                if !quiet || hosts.is_empty() {
                    continue;
                }
                if s.results >= c.few {
                    s.done = true;
                    continue;
                }
                let muid = new_muid();
                s.guess = Some((muid, now));
                self.by_muid.insert(muid, *id);
                self.stats.started += 1;
            }
            let (muid, began) = s.guess.expect("started above");
            // Answers not come in time.
            let late: Vec<SocketAddr> = s
                .waiting
                .iter()
                .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= c.rpc_timeout)
                .map(|(a, _)| *a)
                .collect();
            for a in late {
                s.waiting.remove(&a);
                hosts.timed_out(a, c.max_timeouts);
                self.stats.timeouts += 1;
            }
            if s.results >= c.wanted
                || now.saturating_duration_since(began) >= c.lifetime
                || s.queried.len() >= c.max_queried
            {
                s.done = true;
                continue;
            }
            let mut room = c.alpha.max(1).saturating_sub(s.waiting.len());
            if room == 0 {
                continue;
            }
            // Hosts with a key first, then those we may ask for one.
            let (keyed, unkeyed): (Vec<SocketAddr>, Vec<SocketAddr>) = hosts
                .recent(usize::MAX, &[])
                .into_iter()
                .filter(|a| !s.queried.contains(a) && !s.waiting.contains_key(a))
                .partition(|a| hosts.key(a, now, c.key_life).is_some());
            for to in keyed {
                if room == 0 {
                    break;
                }
                let key = hosts.key(&to, now, c.key_life).expect("keyed");
                s.queried.insert(to);
                s.waiting.insert(to, (Waiting::Ack, now));
                self.stats.queries += 1;
                out.push(Action::Query {
                    to,
                    muid,
                    key,
                    query: s.query.clone(),
                });
                room -= 1;
            }
            for to in unkeyed {
                if room == 0 {
                    break;
                }
                if hosts.ask_key(to, now, c.key_every) {
                    let m = new_muid();
                    s.waiting.insert(to, (Waiting::Key(m), now));
                    self.stats.key_requests += 1;
                    out.push(Action::KeyRequest { to, muid: m });
                    room -= 1;
                }
            }
            // With nobody left to ask, the query stays until its lifetime: more
            // hosts may be learned meanwhile.
        }
        for id in ended {
            self.end(id);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(11, 0, 0, n)), 6346)
    }

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // Test case 2 of RFC 2202.
        let mac = hmac_sha1(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
    }

    #[test]
    fn keys_are_bound_to_address_and_port_and_age_out_after_two_rotations() {
        let t0 = Instant::now();
        let day = Duration::from_secs(100);
        let mut k = KeyMaker::new(7, day);
        let key = k.key(addr(1), t0);
        assert_eq!(key.as_bytes().len(), KEY_LEN);
        assert!(k.valid(addr(1), &key, t0));
        // Another host, or the same host's other port, may not use it.
        assert!(!k.valid(addr(2), &key, t0));
        let other_port = SocketAddr::new(addr(1).ip(), 6347);
        assert!(!k.valid(other_port, &key, t0));
        // One rotation: still good, and a new key is made.
        let t1 = t0 + day;
        assert!(k.valid(addr(1), &key, t1));
        assert_ne!(k.key(addr(1), t1), key);
        // Two: stale.
        let t2 = t0 + day * 2;
        assert!(!k.valid(addr(1), &key, t2));
        let fresh = k.key(addr(1), t2);
        assert!(k.valid(addr(1), &fresh, t2));
        // Long idle: both secrets new.
        let t9 = t0 + day * 9;
        assert!(!k.valid(addr(1), &fresh, t9));
        // Another node's secrets make other keys.
        let mut other = KeyMaker::new(8, day);
        assert_ne!(
            other.key(addr(1), t0),
            KeyMaker::new(7, day).key(addr(1), t0)
        );
    }

    #[test]
    fn host_cache_is_bounded_and_forgets_the_silent() {
        let t0 = Instant::now();
        let mut h = GuessHosts::new(3);
        for n in 1..=5 {
            h.learn(addr(n), t0 + Duration::from_secs(n as u64));
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.recent(10, &[]), vec![addr(5), addr(4), addr(3)]);
        assert!(h.ask_key(addr(5), t0, Duration::from_secs(60)));
        assert!(!h.ask_key(
            addr(5),
            t0 + Duration::from_secs(59),
            Duration::from_secs(60)
        ));
        let k = QueryKey::new(&[1, 2, 3, 4]).unwrap();
        h.set_key(addr(5), k, t0);
        assert_eq!(h.key(&addr(5), t0, Duration::from_secs(10)), Some(k));
        assert_eq!(
            h.key(
                &addr(5),
                t0 + Duration::from_secs(10),
                Duration::from_secs(10)
            ),
            None
        );
        h.timed_out(addr(5), 2);
        assert_eq!(h.key(&addr(5), t0, Duration::from_secs(10)), None);
        h.timed_out(addr(5), 2);
        assert!(!h.contains(&addr(5)));
    }

    fn muids() -> impl FnMut() -> Guid {
        let mut n = 0u8;
        move || {
            n += 1;
            Guid([n; 16])
        }
    }

    #[test]
    fn a_quiet_search_iterates_hosts_alpha_at_a_time() {
        let t0 = Instant::now();
        let config = GuessConfig {
            alpha: 2,
            idle: Duration::from_secs(5),
            ..GuessConfig::default()
        };
        let mut c = Client::new(config);
        let mut hosts = GuessHosts::new(100);
        for n in 1..=4 {
            hosts.learn(addr(n), t0);
        }
        let search = Guid([0xaa; 16]);
        let query = Bytes::from_static(b"\x80\x00rare\x00");
        c.watch(search, query.clone(), t0);
        let mut ids = muids();
        // Not quiet yet.
        assert!(
            c.step(&mut hosts, t0 + Duration::from_secs(4), &mut ids)
                .is_empty()
        );
        let t1 = t0 + Duration::from_secs(5);
        let a = c.step(&mut hosts, t1, &mut ids);
        // Two key requests (no keys yet).
        assert_eq!(a.len(), 2, "{a:?}");
        let mut asked = Vec::new();
        for x in &a {
            let Action::KeyRequest { to, muid } = x else {
                panic!("{x:?}")
            };
            asked.push((*to, *muid));
        }
        // Nothing more until one answers.
        assert!(c.step(&mut hosts, t1, &mut ids).is_empty());
        let key = QueryKey::new(&[9, 9, 9, 9]).unwrap();
        let (to, m) = asked[0];
        assert!(c.pong(&mut hosts, to, &m, Some(key), &[addr(7)], t1));
        assert!(hosts.contains(&addr(7)), "IPP hosts are learned");
        // A pong with a MUID we did not use is not ours.
        assert!(!c.pong(&mut hosts, asked[1].0, &Guid([0x55; 16]), None, &[], t1));
        let a = c.step(&mut hosts, t1, &mut ids);
        let Some(Action::Query {
            to: q_to,
            muid: gmuid,
            key: k,
            query: q,
        }) = a.first().cloned()
        else {
            panic!("{a:?}")
        };
        assert_eq!((q_to, k, q), (to, key, query));
        // Its hits are taken from that host only.
        assert_eq!(c.hit(&gmuid, to, 1, t1), Some(search));
        assert_eq!(c.hit(&gmuid, addr(99), 1, t1), None);
        assert_eq!(c.hit(&Guid([0x77; 16]), to, 1, t1), None);
        // The other key request times out: counted, the host's silence noted.
        let t2 = t1 + Duration::from_secs(35);
        let _ = c.step(&mut hosts, t2, &mut ids);
        assert!(c.stats.timeouts >= 1);
        // Enough results: no more queries.
        c.results(search, 200, t2);
        let t3 = t2 + Duration::from_secs(1);
        assert!(c.step(&mut hosts, t3, &mut ids).is_empty());
        c.end(search);
        assert_eq!(c.hit(&gmuid, to, 1, t3), None);
    }

    #[test]
    fn a_search_with_enough_results_is_left_alone() {
        let t0 = Instant::now();
        let mut c = Client::new(GuessConfig::default());
        let mut hosts = GuessHosts::new(10);
        hosts.learn(addr(1), t0);
        let s = Guid([1; 16]);
        c.watch(s, Bytes::from_static(b"\x80\x00x\x00"), t0);
        c.results(s, 60, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(c.step(&mut hosts, later, muids()).is_empty());
        assert_eq!(c.stats.started, 0);
    }

    #[test]
    fn watched_searches_are_bounded() {
        let t0 = Instant::now();
        let mut c = Client::new(GuessConfig {
            max_searches: 4,
            ..GuessConfig::default()
        });
        for n in 0..10u8 {
            c.watch(
                Guid([n; 16]),
                Bytes::new(),
                t0 + Duration::from_secs(n as u64),
            );
        }
        assert_eq!(c.searches.len(), 4);
        assert!(c.searches.contains_key(&Guid([9; 16])));
    }
}
