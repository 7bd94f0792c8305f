//! A map whose entries expire with age and whose size is capped: the oldest entry
//! goes first when it is full.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The map's hasher: keys (GUIDs) are chosen by peers, so the hash is seeded at
/// random per process, but it is several times cheaper than the standard SipHash
/// on a 16-byte key, and the duplicate table is on every message's path.
type Hasher = foldhash::fast::RandomState;

/// A bounded map with expiry. Refreshing an entry moves it to the young end.
#[derive(Debug)]
pub struct TimedMap<K, V> {
    map: HashMap<K, (V, Instant), Hasher>,
    /// Insertion order with the time of each insertion. An element whose time no
    /// longer matches the map's is a leftover of a refresh and is skipped.
    order: VecDeque<(Instant, K)>,
    capacity: usize,
    max_age: Duration,
}

impl<K: Hash + Eq + Clone, V> TimedMap<K, V> {
    /// A map holding at most `capacity` entries (at least one), each for at most
    /// `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        TimedMap {
            map: HashMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// The entry for `key` if it is younger than the maximum age at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<&V> {
        self.map
            .get(key)
            .filter(|(_, at)| now.saturating_duration_since(*at) < self.max_age)
            .map(|(v, _)| v)
    }

    /// Inserts or replaces `key`, stamped `now`, evicting expired entries and, if
    /// still full, the oldest.
    pub fn insert(&mut self, key: K, value: V, now: Instant) {
        self.expire(now);
        self.order.push_back((now, key.clone()));
        if self.map.insert(key, (value, now)).is_none() {
            // The new entry is the youngest: eviction takes others first.
            while self.map.len() > self.capacity && self.evict_oldest() {}
        }
        // Refreshes leave stale order elements behind; keep them bounded.
        if self.order.len() > 2 * self.capacity {
            self.compact();
        }
    }

    /// The live entry for `key`, or, when there is none, `value()` inserted
    /// under it (stamped `now`) and `None` returned: one look-up where
    /// `get_mut` then `insert` would take two. A full map makes room first, so
    /// finding an entry in a full map may cost its oldest entry.
    pub fn get_mut_or_insert(
        &mut self,
        key: K,
        now: Instant,
        value: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        self.expire(now);
        if self.order.len() >= 2 * self.capacity {
            self.compact();
        }
        while self.map.len() >= self.capacity && self.evict_oldest() {}
        let max_age = self.max_age;
        match self.map.entry(key) {
            std::collections::hash_map::Entry::Occupied(e)
                if now.saturating_duration_since(e.get().1) < max_age =>
            {
                Some(&mut e.into_mut().0)
            }
            std::collections::hash_map::Entry::Occupied(mut e) => {
                // Expired but not yet swept: replaced, as a new entry.
                self.order.push_back((now, e.key().clone()));
                e.insert((value(), now));
                None
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                self.order.push_back((now, e.key().clone()));
                e.insert((value(), now));
                None
            }
        }
    }

    /// Drops every entry older than the maximum age at `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.max_age {
                break;
            }
            let (at, key) = self.order.pop_front().expect("front exists");
            if self.map.get(&key).is_some_and(|(_, t)| *t == at) {
                self.map.remove(&key);
            }
        }
    }

    /// Removes the oldest entry; false if there was none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((at, key)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|(_, t)| *t == at) {
                self.map.remove(&key);
                return true;
            }
        }
        false
    }

    fn compact(&mut self) {
        let map = &self.map;
        self.order
            .retain(|(at, key)| map.get(key).is_some_and(|(_, t)| t == at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_capacity() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = TimedMap::new(3, 10 * s);
        for k in 0..3 {
            m.insert(k, k * 10, t0 + k as u32 * s);
        }
        assert_eq!(m.get(&0, t0 + 5 * s), Some(&0));
        assert_eq!(m.get(&0, t0 + 10 * s), None, "expired at max age");
        m.insert(3, 30, t0 + 3 * s);
        assert_eq!(m.map.len(), 3);
        assert_eq!(m.get(&0, t0 + 3 * s), None, "oldest evicted when full");
        assert_eq!(m.get(&3, t0 + 3 * s), Some(&30));
    }

    #[test]
    fn refresh_moves_an_entry_young() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = TimedMap::new(2, 10 * s);
        m.insert("a", 1, t0);
        m.insert("b", 2, t0 + s);
        m.insert("a", 3, t0 + 2 * s); // refresh: "b" is now the oldest
        m.insert("c", 4, t0 + 3 * s);
        assert_eq!(m.get(&"a", t0 + 3 * s), Some(&3));
        assert_eq!(m.get(&"b", t0 + 3 * s), None);
        assert_eq!(
            m.get(&"a", t0 + 11 * s),
            Some(&3),
            "refreshed entry lives on"
        );
    }

    #[test]
    fn get_mut_or_insert_finds_or_inserts_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = TimedMap::new(2, 10 * s);
        assert!(m.get_mut_or_insert("a", t0, || 1).is_none(), "inserted");
        *m.get_mut_or_insert("a", t0 + s, || 9).expect("found") += 1;
        assert_eq!(m.get(&"a", t0 + s), Some(&2));
        assert!(m.get_mut_or_insert("b", t0 + s, || 3).is_none());
        assert!(m.get_mut_or_insert("c", t0 + 2 * s, || 4).is_none());
        assert_eq!(m.get(&"a", t0 + 2 * s), None, "oldest evicted at capacity");
        assert_eq!(m.get(&"b", t0 + 2 * s), Some(&3));
        assert_eq!(m.map.len(), 2);
        // An expired entry counts as absent.
        assert!(m.get_mut_or_insert("c", t0 + 13 * s, || 5).is_none());
        assert_eq!(m.get(&"c", t0 + 13 * s), Some(&5));
    }

    #[test]
    fn order_stays_bounded_under_refreshes() {
        let t0 = Instant::now();
        let mut m = TimedMap::new(4, Duration::from_secs(3600));
        for i in 0..10_000u32 {
            m.insert(i % 3, i, t0 + Duration::from_millis(i as u64));
        }
        assert!(m.order.len() <= 8);
        assert_eq!(m.map.len(), 3);
    }
}
