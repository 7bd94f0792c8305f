//! Budgets for UDP sources: what one address may make the node spend.
//!
//! Over TCP a budget belongs to a link; over UDP anyone can send, from any
//! address, so budgets are kept per source IP in a bounded table. Sources
//! idle for a while are forgotten; when the table is full of active ones, a
//! new source shares one strict budget with every other newcomer, so a flood
//! from many (possibly forged) addresses costs a bounded amount.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::budget::{Budget, Kind, Rate, Rates, Verdict};

/// Sources remembered at most.
pub const MAX_SOURCES: usize = 4096;
/// A source not heard from for this long is forgotten.
const IDLE: Duration = Duration::from_secs(120);

/// What one UDP source may send.
pub fn source_rates() -> Rates {
    Rates::unlimited()
        .with(Kind::Query, Rate::new(2.0, 10.0)) // GUESS queries
        .with(Kind::Ping, Rate::new(1.0, 5.0)) // host-cache, query-key, echo pings
        .with(Kind::Pong, Rate::new(10.0, 50.0))
        .with(Kind::Hit, Rate::new(100.0, 500.0)) // out-of-band hits
        .with(Kind::Push, Rate::new(2.0, 10.0))
        .with(Kind::Table, Rate::new(0.0, 0.0)) // never over UDP
        .with(Kind::Vendor, Rate::new(10.0, 50.0))
}

/// What all newcomers together may send while the table is full.
fn overflow_rates() -> Rates {
    Rates::unlimited()
        .with(Kind::Query, Rate::new(5.0, 10.0))
        .with(Kind::Ping, Rate::new(5.0, 10.0))
        .with(Kind::Pong, Rate::new(20.0, 50.0))
        .with(Kind::Hit, Rate::new(100.0, 200.0))
        .with(Kind::Push, Rate::new(5.0, 10.0))
        .with(Kind::Table, Rate::new(0.0, 0.0))
        .with(Kind::Vendor, Rate::new(10.0, 20.0))
}

struct Source {
    budget: Budget,
    seen: Instant,
}

/// Per-source budgets, bounded in number.
pub struct Sources {
    rates: Rates,
    map: HashMap<IpAddr, Source>,
    /// Made at the first overflow.
    overflow: Option<Budget>,
    cap: usize,
    last_sweep: Option<Instant>,
}

impl Sources {
    pub fn new(rates: Rates) -> Sources {
        Sources::with_cap(rates, MAX_SOURCES)
    }

    pub fn with_cap(rates: Rates, cap: usize) -> Sources {
        Sources {
            rates,
            map: HashMap::new(),
            overflow: None,
            cap,
            last_sweep: None,
        }
    }

    /// Whether a message of `kind` from `ip` at `now` is within its budget.
    /// [`Verdict::Close`] (a source that stays over) means the same as a drop:
    /// there is no link to close.
    pub fn admit(&mut self, ip: IpAddr, kind: Kind, now: Instant) -> bool {
        if let Some(s) = self.map.get_mut(&ip) {
            s.seen = now;
            return s.budget.admit(kind, now) == Verdict::Take;
        }
        if self.map.len() >= self.cap {
            self.sweep(now);
        }
        if self.map.len() >= self.cap {
            let overflow = self
                .overflow
                .get_or_insert_with(|| Budget::new(overflow_rates(), now));
            return overflow.admit(kind, now) == Verdict::Take;
        }
        let mut budget = Budget::new(self.rates.clone(), now);
        let ok = budget.admit(kind, now) == Verdict::Take;
        self.map.insert(ip, Source { budget, seen: now });
        ok
    }

    /// Forgets sources idle for long (at most once a second of `now`).
    pub fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_sweep = Some(now);
        self.map
            .retain(|_, s| now.saturating_duration_since(s.seen) < IDLE);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Allows one event per key per `every` (gtk-gnutella answers one UDP ping
/// per minute per address, and sends at most one per minute to each), in a
/// bounded table: when full, the oldest half is forgotten.
pub struct Throttle<K> {
    every: Duration,
    cap: usize,
    last: HashMap<K, Instant>,
}

impl<K: std::hash::Hash + Eq + Copy> Throttle<K> {
    pub fn new(every: Duration, cap: usize) -> Throttle<K> {
        Throttle {
            every,
            cap,
            last: HashMap::new(),
        }
    }

    /// Whether `key` may go at `now` (and if so, it is counted as gone).
    pub fn allow(&mut self, key: K, now: Instant) -> bool {
        if let Some(t) = self.last.get(&key) {
            if now.saturating_duration_since(*t) < self.every {
                return false;
            }
        }
        if self.last.len() >= self.cap && !self.last.contains_key(&key) {
            let every = self.every;
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < every);
            if self.last.len() >= self.cap {
                // Every entry is recent: forget the older half.
                let mut times: Vec<Instant> = self.last.values().copied().collect();
                times.sort();
                let cut = times[times.len() / 2];
                self.last.retain(|_, t| *t > cut);
            }
        }
        self.last.insert(key, now);
        true
    }

    /// Whether `key` went less than `every` ago.
    pub fn recent(&self, key: &K, now: Instant) -> bool {
        self.last
            .get(key)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.every)
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n))
    }

    #[test]
    fn each_source_has_its_own_budget() {
        let t0 = Instant::now();
        let mut s = Sources::new(source_rates());
        let taken = (0..20).filter(|_| s.admit(ip(1), Kind::Ping, t0)).count();
        assert_eq!(taken, 5);
        assert!(s.admit(ip(2), Kind::Ping, t0));
        // A second later the first may send one more.
        assert!(s.admit(ip(1), Kind::Ping, t0 + Duration::from_secs(1)));
        // Route-table messages never come over UDP.
        assert!(!s.admit(ip(3), Kind::Table, t0));
    }

    #[test]
    fn a_flood_of_sources_is_bounded() {
        let t0 = Instant::now();
        let mut s = Sources::with_cap(source_rates(), 100);
        let taken = (0..10_000)
            .filter(|n| s.admit(ip(*n), Kind::Query, t0))
            .count();
        assert_eq!(s.len(), 100);
        // 100 sources with their own burst, then the shared overflow's 10.
        assert_eq!(taken, 100 + 10);
        // Once idle, sources are forgotten and newcomers get their own budget.
        let later = t0 + IDLE + Duration::from_secs(1);
        assert!(s.admit(ip(20_000), Kind::Query, later));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn throttle_allows_one_per_period_and_stays_bounded() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(60), 10);
        assert!(t.allow(ip(1), t0));
        assert!(!t.allow(ip(1), t0 + Duration::from_secs(59)));
        assert!(t.allow(ip(1), t0 + Duration::from_secs(60)));
        for n in 0..100 {
            assert!(t.allow(ip(100 + n), t0 + Duration::from_secs(61)));
            assert!(t.len() <= 10);
        }
    }
}
