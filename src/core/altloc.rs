//! Alternate locations: other hosts known to have a file, by SHA-1, told to
//! downloaders in `X-Alt`. Bounded in files, in hosts per file and in age. No I/O.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::huge::Sha1Urn;

/// Hosts kept per file.
pub const PER_FILE: usize = 10;

/// The table of alternate locations.
#[derive(Debug)]
pub struct AltLocs {
    files: HashMap<Sha1Urn, Vec<(SocketAddr, Instant)>>,
    max_files: usize,
    max_age: Duration,
}

impl AltLocs {
    /// A table of at most `max_files` files, forgetting a host after `max_age`.
    pub fn new(max_files: usize, max_age: Duration) -> AltLocs {
        AltLocs {
            files: HashMap::new(),
            max_files,
            max_age,
        }
    }

    /// Learns that `host` has the file `urn` (heard at `now`).
    pub fn add(&mut self, urn: Sha1Urn, host: SocketAddr, now: Instant) {
        if !self.files.contains_key(&urn) && self.files.len() >= self.max_files {
            self.expire(now);
            if self.files.len() >= self.max_files {
                // Forget the file heard of longest ago.
                let oldest = self
                    .files
                    .iter()
                    .map(|(u, v)| (*u, v.iter().map(|e| e.1).max()))
                    .min_by_key(|(_, t)| *t)
                    .map(|(u, _)| u);
                if let Some(u) = oldest {
                    self.files.remove(&u);
                }
            }
        }
        let hosts = self.files.entry(urn).or_default();
        hosts.retain(|(h, _)| *h != host);
        if hosts.len() == PER_FILE {
            // The host heard of longest ago makes room.
            if let Some(i) = (0..hosts.len()).min_by_key(|&i| hosts[i].1) {
                hosts.swap_remove(i);
            }
        }
        hosts.push((host, now));
    }

    /// Forgets that `host` has the file (it did not, or is gone).
    pub fn remove(&mut self, urn: &Sha1Urn, host: SocketAddr) {
        if let Some(hosts) = self.files.get_mut(urn) {
            hosts.retain(|(h, _)| *h != host);
            if hosts.is_empty() {
                self.files.remove(urn);
            }
        }
    }

    /// Up to `max` hosts with the file, most recently heard first, leaving out
    /// `except` (the asker).
    pub fn get(
        &self,
        urn: &Sha1Urn,
        except: Option<SocketAddr>,
        max: usize,
        now: Instant,
    ) -> Vec<SocketAddr> {
        let Some(hosts) = self.files.get(urn) else {
            return Vec::new();
        };
        let mut v: Vec<_> = hosts
            .iter()
            .filter(|(h, t)| Some(*h) != except && now.duration_since(*t) < self.max_age)
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.into_iter().take(max).map(|(h, _)| *h).collect()
    }

    fn expire(&mut self, now: Instant) {
        let age = self.max_age;
        self.files.retain(|_, v| {
            v.retain(|(_, t)| now.duration_since(*t) < age);
            !v.is_empty()
        });
    }

    /// Files with at least one host.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no host is known for any file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], i))
    }

    #[test]
    fn bounded_and_ordered() {
        let t = Instant::now();
        let f = Sha1Urn::digest(b"f");
        let mut alt = AltLocs::new(2, Duration::from_secs(60));
        for i in 1..=12 {
            alt.add(f, a(i), t + Duration::from_secs(i as u64));
        }
        let now = t + Duration::from_secs(13);
        let got = alt.get(&f, Some(a(12)), 3, now);
        assert_eq!(got, [a(11), a(10), a(9)]);
        assert_eq!(alt.get(&f, None, 100, now).len(), PER_FILE);
        alt.remove(&f, a(11));
        assert!(!alt.get(&f, None, 100, now).contains(&a(11)));
        // Old entries are not offered.
        assert!(
            alt.get(&f, None, 100, t + Duration::from_secs(200))
                .is_empty()
        );
        // At most two files.
        alt.add(Sha1Urn::digest(b"g"), a(1), now);
        alt.add(Sha1Urn::digest(b"h"), a(1), now + Duration::from_secs(1));
        assert_eq!(alt.len(), 2);
        assert!(
            alt.get(&f, None, 10, now).is_empty(),
            "the oldest file went"
        );
    }
}
