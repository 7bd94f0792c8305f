//! The pong cache: recent Pongs from other hosts, used to answer Pings without
//! flooding them. A Ping with TTL 1 is answered with our own Pong only; a Ping with
//! more TTL also gets up to [`PongCache::ANSWERS`] cached Pongs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::core::ConnId;

#[derive(Clone, Debug)]
struct Cached {
    at: Instant,
    /// The Pong's payload, forwarded as it came.
    payload: Bytes,
    /// Hops the Pong had travelled when it reached us.
    hops: u8,
    from: ConnId,
}

/// Recent Pongs, bounded in number and age, one per advertised address.
#[derive(Debug)]
pub struct PongCache {
    entries: VecDeque<Cached>,
    capacity: usize,
    max_age: Duration,
}

impl PongCache {
    /// How many cached Pongs answer one Ping at most.
    pub const ANSWERS: usize = 10;

    /// A cache of at most `capacity` Pongs, each kept for `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> PongCache {
        PongCache {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// Remembers a Pong payload (at least 6 bytes: port and address) that arrived
    /// on `from` after `hops` hops. A newer Pong for the same address replaces the
    /// older one.
    pub fn insert(&mut self, now: Instant, payload: Bytes, hops: u8, from: ConnId) {
        let Some(addr) = payload.get(..6).map(<[u8]>::to_vec) else {
            return;
        };
        self.entries.retain(|e| e.payload[..6] != addr[..]);
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(Cached {
            at: now,
            payload,
            hops,
            from,
        });
    }

    /// Pongs to answer a Ping with `ttl` that came on `asker`: none for TTL 1,
    /// otherwise the freshest, never ones that came from the asker, and only those
    /// close enough for the Ping's TTL. Each comes with the hops it had travelled.
    pub fn answers(&mut self, now: Instant, ttl: u8, asker: ConnId) -> Vec<(Bytes, u8)> {
        let max_age = self.max_age;
        self.entries
            .retain(|e| now.saturating_duration_since(e.at) < max_age);
        if ttl <= 1 {
            return Vec::new();
        }
        self.entries
            .iter()
            .rev()
            .filter(|e| e.from != asker && e.hops < ttl)
            .take(Self::ANSWERS)
            .map(|e| (e.payload.clone(), e.hops))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pong(last: u8) -> Bytes {
        Bytes::from(vec![0xca, 0x18, 127, 0, 0, last, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn answers_are_fresh_filtered_and_bounded() {
        let t = Instant::now();
        let s = Duration::from_secs(1);
        let mut c = PongCache::new(20, 30 * s);
        let (a, b) = (ConnId(1), ConnId(2));
        for i in 0..15u8 {
            c.insert(t, pong(i), i % 3, if i % 2 == 0 { a } else { b });
        }
        assert!(
            c.answers(t, 1, ConnId(9)).is_empty(),
            "TTL 1: own pong only"
        );
        let all = c.answers(t, 7, ConnId(9));
        assert_eq!(all.len(), PongCache::ANSWERS);
        assert_eq!(all[0].0, pong(14), "freshest first");
        assert!(
            c.answers(t, 7, a).iter().all(|(p, _)| p[5] % 2 == 1),
            "none from the asker"
        );
        assert!(c.answers(t, 2, ConnId(9)).iter().all(|(_, h)| *h < 2));
        // The same address again replaces the entry; age expires entries.
        c.insert(t + s, pong(0), 0, b);
        assert_eq!(c.answers(t + s, 7, ConnId(9))[0].0, pong(0));
        assert!(c.answers(t + 31 * s, 7, ConnId(9)).is_empty());
        // Bounded.
        let mut small = PongCache::new(3, 30 * s);
        for i in 0..10u8 {
            small.insert(t, pong(i), 0, a);
        }
        assert_eq!(small.answers(t, 7, ConnId(9)).len(), 3);
    }
}
