//! Per-peer message budgets: a token bucket per kind of message, so that one
//! neighbour cannot make the node spend without bound on what it sends. Over
//! budget a message is dropped (and counted by the caller, with its kind as
//! the reason); a peer that stays over, sending at least twice its allowance
//! for as long as its burst lasts, is to be closed.

use std::time::Instant;

/// The kinds of message a budget is kept for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Query,
    Ping,
    Pong,
    Hit,
    Push,
    /// QRP RESET and PATCH.
    Table,
    Vendor,
}

impl Kind {
    fn slot(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Query => "query",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::Hit => "hit",
            Kind::Push => "push",
            Kind::Table => "route-table",
            Kind::Vendor => "vendor",
        }
    }
}

/// A rate: `per_sec` messages a second on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

impl Rate {
    pub const fn new(per_sec: f64, burst: f64) -> Rate {
        Rate { per_sec, burst }
    }
}

/// The allowance of every kind, for one kind of link.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates {
    rates: [Rate; 7],
}

impl Rates {
    /// What an ultrapeer (or flat) neighbour may send: it relays a network's
    /// worth of queries and hits.
    pub fn neighbour() -> Rates {
        Rates {
            rates: [
                Rate::new(50.0, 500.0),   // queries
                Rate::new(1.0, 10.0),     // pings (pong caching: one per 3 s is normal)
                Rate::new(50.0, 200.0),   // pongs
                Rate::new(200.0, 2000.0), // hits
                Rate::new(20.0, 200.0),   // pushes
                Rate::new(5.0, 100.0),    // route-table messages
                Rate::new(10.0, 100.0),   // vendor messages
            ],
        }
    }

    /// What a leaf may send: its own queries and answers only.
    pub fn leaf() -> Rates {
        Rates {
            rates: [
                Rate::new(1.0, 15.0),     // queries: a person searching
                Rate::new(1.0, 10.0),     // pings
                Rate::new(10.0, 50.0),    // pongs
                Rate::new(100.0, 1000.0), // hits for queries we sent it
                Rate::new(2.0, 20.0),     // pushes
                Rate::new(5.0, 100.0),    // route-table messages
                Rate::new(5.0, 100.0),    // vendor messages (library offers)
            ],
        }
    }

    /// No limit (benches that measure raw relaying).
    pub fn unlimited() -> Rates {
        Rates {
            rates: [Rate::new(f64::INFINITY, f64::INFINITY); 7],
        }
    }

    /// These rates with `kind`'s set to `rate`.
    pub fn with(mut self, kind: Kind, rate: Rate) -> Rates {
        self.rates[kind.slot()] = rate;
        self
    }

    pub fn get(&self, kind: Kind) -> Rate {
        self.rates[kind.slot()]
    }
}

#[derive(Clone, Debug)]
struct Bucket {
    tokens: f64,
    /// Messages over budget, decaying at the rate: past the burst, the peer has
    /// sent twice its allowance for as long as a burst lasts.
    strikes: f64,
    at: Instant,
}

/// What to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Over budget: drop it.
    Drop,
    /// Over budget for too long: drop it and close the link.
    Close,
}

/// One peer's budgets.
#[derive(Clone, Debug)]
pub struct Budget {
    rates: Rates,
    buckets: [Bucket; 7],
}

impl Budget {
    /// Full buckets at `now`.
    pub fn new(rates: Rates, now: Instant) -> Budget {
        let buckets = std::array::from_fn(|i| Bucket {
            tokens: rates.rates[i].burst,
            strikes: 0.0,
            at: now,
        });
        Budget { rates, buckets }
    }

    /// Whether a message of `kind` arriving at `now` is within budget.
    pub fn admit(&mut self, kind: Kind, now: Instant) -> Verdict {
        let rate = self.rates.get(kind);
        if rate.per_sec.is_infinite() {
            return Verdict::Take;
        }
        let b = &mut self.buckets[kind.slot()];
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now.max(b.at);
        b.tokens = (b.tokens + dt * rate.per_sec).min(rate.burst);
        b.strikes = (b.strikes - dt * rate.per_sec).max(0.0);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Take;
        }
        b.strikes += 1.0;
        if b.strikes > rate.burst {
            Verdict::Close
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate_then_closed_when_it_stays_over() {
        let t0 = Instant::now();
        let rates = Rates::leaf().with(Kind::Query, Rate::new(2.0, 5.0));
        let mut b = Budget::new(rates, t0);
        for _ in 0..5 {
            assert_eq!(b.admit(Kind::Query, t0), Verdict::Take);
        }
        assert_eq!(b.admit(Kind::Query, t0), Verdict::Drop);
        // Other kinds have their own buckets.
        assert_eq!(b.admit(Kind::Ping, t0), Verdict::Take);
        // Half a second later one more is allowed.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(b.admit(Kind::Query, t1), Verdict::Take);
        assert_eq!(b.admit(Kind::Query, t1), Verdict::Drop);
        // A well-behaved peer at the rate is never dropped.
        let mut ok = Budget::new(Rates::leaf().with(Kind::Query, Rate::new(2.0, 5.0)), t0);
        for i in 0..100 {
            let t = t0 + Duration::from_millis(500 * i);
            assert_eq!(ok.admit(Kind::Query, t), Verdict::Take, "message {i}");
        }
        // A flood: dropped at first, then the link goes.
        let verdicts: Vec<Verdict> = (0..20).map(|_| b.admit(Kind::Query, t1)).collect();
        assert!(
            verdicts[..4].iter().all(|v| *v == Verdict::Drop),
            "{verdicts:?}"
        );
        assert!(verdicts.contains(&Verdict::Close), "{verdicts:?}");
        // Unlimited takes everything.
        let mut u = Budget::new(Rates::unlimited(), t0);
        assert!((0..100_000).all(|_| u.admit(Kind::Query, t0) == Verdict::Take));
    }
}
