//! The UDP host cache client's decisions, without I/O (`now` passed in):
//! which caches to ping and when, which pings are still awaited, which
//! answers are ours, and which caches to stop asking.
//!
//! The rules are those of the deployed servents (udp-facts 2.3, 2.4): a
//! round pings a few caches at once (LimeWire 5, gtk-gnutella one at a time;
//! we take [`UhcConfig::per_round`]), rounds are at least
//! [`UhcConfig::round_every`] apart, an answer is awaited
//! [`UhcConfig::timeout`] (gtk's 20 s), a cache is pinged again no sooner than
//! [`UhcConfig::reuse_after`] (gtk's 180 s; both caches answer one ping per
//! minute per address), and one that failed waits twice as long after each
//! failure. Caches given by the user or built in are never forgotten; caches
//! learned from pongs (`UDPHC`, `PHC`, as LimeWire learns them) are bounded
//! in number and dropped after [`UhcConfig::max_failures`] failures.
//!
//! A round that brings no hosts for [`UhcConfig::fallback_after`] says so
//! ([`Round::fallback`]): the shell then asks the HTTP host caches.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::Guid;

/// Timings and limits.
#[derive(Clone, Debug)]
pub struct UhcConfig {
    /// Caches pinged per round at most.
    pub per_round: usize,
    /// Least time between two rounds.
    pub round_every: Duration,
    /// How long an answer is awaited.
    pub timeout: Duration,
    /// Least time before the same cache is pinged again.
    pub reuse_after: Duration,
    /// Longest pause of a failing cache.
    pub backoff_max: Duration,
    /// A learned cache is forgotten after this many failures in a row.
    pub max_failures: u32,
    /// Learned caches kept at most.
    pub max_learned: usize,
    /// Rounds bringing no host for this long: time for the HTTP caches.
    pub fallback_after: Duration,
}

impl Default for UhcConfig {
    fn default() -> Self {
        UhcConfig {
            per_round: 3,
            round_every: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            reuse_after: Duration::from_secs(180),
            backoff_max: Duration::from_secs(3600),
            max_failures: 5,
            max_learned: 100,
            fallback_after: Duration::from_secs(20),
        }
    }
}

/// Pings awaiting an answer at most (a round's worth, several addresses
/// each, with room to spare).
const MAX_PENDING: usize = 64;

#[derive(Clone, Debug)]
struct Cache {
    /// `host:port`, resolved by the shell each time it is pinged.
    name: String,
    /// Given by the user or built in (never forgotten), or learned.
    configured: bool,
    failures: u32,
    last_ping: Option<Instant>,
    retry_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Pending {
    muid: Guid,
    to: SocketAddr,
    name: String,
    sent: Instant,
}

/// What a round decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Caches to ping now (the shell resolves each name and hands the
    /// addresses to [`UhcClient::sent`] as it pings them).
    pub ping: Vec<String>,
    /// Caches whose answer did not come in time.
    pub timed_out: Vec<String>,
    /// The UDP caches have brought no host for a while (or there are none
    /// to ask): time to try the HTTP host caches.
    pub fallback: bool,
}

/// Whose answer a Pong is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not an answer to a ping of ours.
    NotOurs,
    /// Our ping's MUID, from another address than the one we pinged.
    WrongSource,
    /// The answer of this cache.
    From(String),
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UhcStats {
    /// Pings sent to caches, answers matched, and answers that brought hosts.
    pub pings: u64,
    pub answers: u64,
    pub useful: u64,
    /// Pings not answered in time, and cache names that did not resolve.
    pub timeouts: u64,
    pub unresolved: u64,
    /// Caches learned from pongs, and forgotten after failing.
    pub learned: u64,
    pub forgotten: u64,
    /// Times the UDP caches gave nothing and the HTTP caches were due.
    pub fallbacks: u64,
    /// Cache addresses not pinged for being our own.
    pub self_skipped: u64,
    /// As a cache: pings answered, hosts packed in the answers, addresses
    /// echoed (`IP`), and pings not answered within one minute of the last
    /// one from their address.
    pub served: u64,
    pub packed: u64,
    pub echoed: u64,
    pub throttled: u64,
}

/// The client: the list of caches and the pings in flight.
#[derive(Debug)]
pub struct UhcClient {
    config: UhcConfig,
    caches: Vec<Cache>,
    pending: Vec<Pending>,
    last_round: Option<Instant>,
    /// Since when rounds have brought no host (while hosts were needed).
    dry_since: Option<Instant>,
    /// How long a dry spell lasts before the next fallback: doubled after
    /// each, up to [`MAX_FALLBACK_WAIT`].
    fallback_wait: Duration,
    stats: UhcStats,
}

/// The longest pause between two fallbacks of one dry spell.
const MAX_FALLBACK_WAIT: Duration = Duration::from_secs(600);

impl UhcClient {
    /// A client for `names` (`host:port` each), in the order given: the
    /// shell shuffles a built-in list first, as gtk-gnutella does, so that
    /// every node does not ask the same cache first.
    pub fn new(names: Vec<String>, config: UhcConfig) -> UhcClient {
        let mut c = UhcClient {
            config: config.clone(),
            caches: Vec::new(),
            pending: Vec::new(),
            last_round: None,
            dry_since: None,
            fallback_wait: config.fallback_after,
            stats: UhcStats::default(),
        };
        for n in names {
            if !c.caches.iter().any(|e| e.name == n) {
                c.caches.push(Cache {
                    name: n,
                    configured: true,
                    failures: 0,
                    last_ping: None,
                    retry_at: None,
                });
            }
        }
        c
    }

    pub fn stats(&self) -> &UhcStats {
        &self.stats
    }

    /// The caches known, configured ones first.
    pub fn names(&self) -> Vec<String> {
        self.caches.iter().map(|c| c.name.clone()).collect()
    }

    /// Whether `name` was given by the user or built in.
    pub fn configured(&self, name: &str) -> bool {
        self.caches.iter().any(|c| c.name == name && c.configured)
    }

    /// Pings awaiting an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Decides at `now`: pings that timed out fail their cache, and, when
    /// `need_hosts` (nothing left to dial), a new round starts if the last
    /// one is over and old enough.
    pub fn round(&mut self, now: Instant, need_hosts: bool) -> Round {
        let mut r = Round::default();
        let timeout = self.config.timeout;
        let (late, keep): (Vec<Pending>, Vec<Pending>) = self
            .pending
            .drain(..)
            .partition(|p| now.saturating_duration_since(p.sent) >= timeout);
        self.pending = keep;
        for p in late {
            self.stats.timeouts += 1;
            // A cache pinged at several addresses fails once, when its last
            // ping is given up.
            if !self.pending.iter().any(|q| q.name == p.name) && !r.timed_out.contains(&p.name) {
                self.failed(&p.name, now);
                r.timed_out.push(p.name);
            }
        }
        if !need_hosts {
            self.dry_since = None;
            self.fallback_wait = self.config.fallback_after;
            return r;
        }
        let (dry_since, first) = match self.dry_since {
            Some(t) => (t, false),
            None => (now, true),
        };
        self.dry_since = Some(dry_since);
        let nothing_to_ask = self.caches.is_empty() && self.pending.is_empty();
        if now.saturating_duration_since(dry_since) >= self.fallback_wait
            || (first && nothing_to_ask)
        {
            // Then again after twice as long, while the spell lasts.
            r.fallback = true;
            self.stats.fallbacks += 1;
            self.dry_since = Some(now);
            self.fallback_wait = (self.fallback_wait * 2).min(MAX_FALLBACK_WAIT);
        }
        let round_due = self.pending.is_empty()
            && self
                .last_round
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.round_every);
        if !round_due {
            return r;
        }
        let reuse = self.config.reuse_after;
        let mut ready: Vec<usize> = (0..self.caches.len())
            .filter(|i| {
                let c = &self.caches[*i];
                c.retry_at.is_none_or(|t| t <= now)
                    && c.last_ping
                        .is_none_or(|t| now.saturating_duration_since(t) >= reuse)
            })
            .collect();
        // Those that failed least first; the list's order otherwise.
        ready.sort_by_key(|i| self.caches[*i].failures);
        for i in ready.into_iter().take(self.config.per_round) {
            let c = &mut self.caches[i];
            c.last_ping = Some(now);
            r.ping.push(c.name.clone());
        }
        if !r.ping.is_empty() {
            self.last_round = Some(now);
        }
        r
    }

    /// A ping with `muid` went to `to`, an address of cache `name`.
    pub fn sent(&mut self, name: &str, to: SocketAddr, muid: Guid, now: Instant) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.stats.pings += 1;
        self.pending.push(Pending {
            muid,
            to,
            name: name.to_string(),
            sent: now,
        });
    }

    /// Cache `name` could not be pinged (its name did not resolve, or to no
    /// address we may send to).
    pub fn unresolved(&mut self, name: &str, now: Instant) {
        self.stats.unresolved += 1;
        self.failed(name, now);
    }

    /// Whose answer a Pong with `muid` from `from` is. An answer is taken
    /// once; `hosts` is how many it brought (a Pong without packed hosts
    /// counts as no answer for the cache, as gtk-gnutella counts it, though
    /// the host it names is still worth learning).
    pub fn answered(&mut self, from: SocketAddr, muid: Guid, hosts: usize, now: Instant) -> Answer {
        let Some(i) = self.pending.iter().position(|p| p.muid == muid) else {
            return Answer::NotOurs;
        };
        // Caches answer from the address we pinged; only the port may differ
        // behind a NAT.
        if !same_host(self.pending[i].to.ip(), from.ip()) {
            return Answer::WrongSource;
        }
        let p = self.pending.remove(i);
        self.stats.answers += 1;
        if let Some(c) = self.caches.iter_mut().find(|c| c.name == p.name) {
            if hosts > 0 {
                c.failures = 0;
                c.retry_at = None;
            }
        }
        if hosts > 0 {
            self.stats.useful += 1;
            self.dry_since = None;
            self.fallback_wait = self.config.fallback_after;
        } else {
            self.failed(&p.name, now);
        }
        Answer::From(p.name)
    }

    /// A cache learned from a pong (`UDPHC`, `PHC`); false when it was known
    /// already or there is no room.
    pub fn learn(&mut self, name: String) -> bool {
        if self.caches.iter().any(|c| c.name == name) {
            return false;
        }
        let learned = self.caches.iter().filter(|c| !c.configured).count();
        if learned >= self.config.max_learned {
            return false;
        }
        self.stats.learned += 1;
        self.caches.push(Cache {
            name,
            configured: false,
            failures: 0,
            last_ping: None,
            retry_at: None,
        });
        true
    }

    fn failed(&mut self, name: &str, now: Instant) {
        let Some(i) = self.caches.iter().position(|c| c.name == name) else {
            return;
        };
        let c = &mut self.caches[i];
        c.failures = c.failures.saturating_add(1);
        if !c.configured && c.failures >= self.config.max_failures {
            self.caches.remove(i);
            self.stats.forgotten += 1;
            return;
        }
        let pause = self
            .config
            .reuse_after
            .saturating_mul(1 << c.failures.min(16).saturating_sub(1))
            .min(self.config.backoff_max);
        c.retry_at = Some(now + pause);
    }
}

fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}.example:3558")).collect()
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([11, 0, 0, i], 3558))
    }

    fn muid(i: u8) -> Guid {
        Guid([i; 16])
    }

    #[test]
    fn rounds_are_paced_and_few() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = UhcClient::new(names(5), UhcConfig::default());
        assert_eq!(c.round(t, false), Round::default(), "no hosts needed");
        let r = c.round(t, true);
        assert_eq!(r.ping, names(3));
        for (i, n) in r.ping.iter().enumerate() {
            c.sent(n, addr(i as u8), muid(i as u8), t);
        }
        assert!(c.round(t + s, true).ping.is_empty(), "a round under way");
        // One answers with hosts, the others time out.
        assert_eq!(
            c.answered(addr(0), muid(0), 2, t + s),
            Answer::From(names(1)[0].clone())
        );
        assert_eq!(
            c.answered(addr(0), muid(0), 2, t + s),
            Answer::NotOurs,
            "once"
        );
        let r = c.round(t + 20 * s, true);
        assert_eq!(r.timed_out, names(3)[1..].to_vec());
        // The next round: the two never pinged, not the ones pinged lately.
        assert_eq!(r.ping, names(5)[3..].to_vec());
        assert_eq!(c.stats().timeouts, 2);
    }

    #[test]
    fn failing_caches_back_off_and_learned_ones_go() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let config = UhcConfig {
            per_round: 1,
            ..UhcConfig::default()
        };
        let mut c = UhcClient::new(vec!["a:1".into()], config);
        assert!(c.learn("b:2".into()));
        assert!(!c.learn("b:2".into()), "known");
        // A second failure waits twice as long as the first.
        let r = c.round(t, true);
        assert_eq!(r.ping, ["a:1"]);
        c.unresolved("a:1", t);
        let r = c.round(t + 10 * s, true);
        assert_eq!(r.ping, ["b:2"]);
        c.unresolved("b:2", t + 10 * s);
        assert!(c.round(t + 179 * s, true).ping.is_empty());
        assert_eq!(c.round(t + 180 * s, true).ping, ["a:1"]);
        c.unresolved("a:1", t + 180 * s);
        let r = c.round(t + 539 * s, true);
        assert_eq!(r.ping, ["b:2"], "a's second pause is 360 s");
        c.unresolved("b:2", t + 539 * s);
        assert_eq!(c.round(t + 550 * s, true).ping, ["a:1"]);
        c.unresolved("a:1", t + 550 * s);
        let mut now = t + 600 * s;
        for _ in 0..12 {
            now += 3600 * s;
            for n in c.round(now, true).ping {
                c.unresolved(&n, now);
            }
        }
        assert!(!c.names().contains(&"b:2".to_string()), "forgotten");
        assert!(c.names().contains(&"a:1".to_string()), "configured stays");
        assert_eq!(c.stats().forgotten, 1);
    }

    #[test]
    fn answers_are_checked_and_dry_rounds_fall_back() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = UhcClient::new(names(1), UhcConfig::default());
        let r = c.round(t, true);
        c.sent(&r.ping[0], addr(1), muid(1), t);
        assert_eq!(c.answered(addr(2), muid(1), 3, t), Answer::WrongSource);
        assert_eq!(c.answered(addr(1), muid(9), 3, t), Answer::NotOurs);
        // An answer without hosts is no help: the cache backs off.
        assert!(matches!(
            c.answered(addr(1), muid(1), 0, t),
            Answer::From(_)
        ));
        assert_eq!(c.stats().useful, 0);
        assert!(!c.round(t + 10 * s, true).fallback);
        let r = c.round(t + 20 * s, true);
        assert!(r.fallback, "20 s without hosts");
        assert!(r.ping.is_empty(), "the only cache backs off");
        assert!(!c.round(t + 21 * s, true).fallback, "not every second");
        assert!(!c.round(t + 59 * s, true).fallback);
        assert!(
            c.round(t + 60 * s, true).fallback,
            "then after twice as long"
        );
        // No cache at all: the HTTP caches at once, then as pacing allows.
        let mut none = UhcClient::new(Vec::new(), UhcConfig::default());
        assert!(none.round(t, true).fallback);
        assert!(!none.round(t + s, true).fallback);
        assert!(none.round(t + 40 * s, true).fallback);
    }

    #[test]
    fn pending_and_learned_are_bounded() {
        let t = Instant::now();
        let mut c = UhcClient::new(Vec::new(), UhcConfig::default());
        for i in 0..200u32 {
            let mut g = [0u8; 16];
            g[..4].copy_from_slice(&i.to_le_bytes());
            c.sent("x:1", addr(1), Guid(g), t);
            c.learn(format!("l{i}:1"));
        }
        assert_eq!(c.pending(), MAX_PENDING);
        assert_eq!(c.names().len(), UhcConfig::default().max_learned);
    }
}
