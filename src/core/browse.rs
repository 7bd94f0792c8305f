//! Browse host, the decisions: which hits describe our shared files, and
//! whether a host may browse us now (per-address frequency). No I/O; `now`
//! is passed in. The HTTP shell (`node::http`) asks and sends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::wire::browse::GGEP_BH;
use crate::wire::{Ggep, GgepExt, Guid, HitResult, OpenDataFlags, QueryHit, Trailer, TrailerArea};

/// Results in one hit of a browse answer (LimeWire puts 4, gtk-gnutella 2 to
/// a few; we answer queries with up to 10 a hit too).
pub const RESULTS_PER_HIT: usize = 10;
/// Bytes of names in one hit at most, so no hit nears the 64 KiB limit.
pub const NAME_BYTES_PER_HIT: usize = 8 * 1024;
/// Files listed in one browse at most.
pub const MAX_FILES: usize = 50_000;

/// Who we say we are in the hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub guid: Guid,
    /// The address the browsing host reached us at.
    pub ip: Ipv4Addr,
    pub port: u16,
    /// We accept no connections: downloads need a Push.
    pub push: bool,
    /// Every upload slot is taken now.
    pub busy: bool,
}

/// Cuts `files` into QueryHits from `id`, each with at most
/// [`RESULTS_PER_HIT`] results and [`NAME_BYTES_PER_HIT`] bytes of names
/// (a single longer name gets a hit of its own), each trailer saying we can
/// be browsed (GGEP `BH`).
pub fn hits(files: Vec<HitResult>, id: &Identity) -> Vec<QueryHit> {
    let flags = OpenDataFlags {
        push: Some(id.push),
        busy: Some(id.busy),
        ..OpenDataFlags::default()
    };
    let trailer = Trailer::new(
        crate::core::engine::VENDOR,
        flags,
        Some(Ggep::new(vec![GgepExt::flag(GGEP_BH)])),
    );
    let mut out = Vec::new();
    let mut batch: Vec<HitResult> = Vec::new();
    let mut bytes = 0;
    let flush = |batch: &mut Vec<HitResult>, out: &mut Vec<QueryHit>| {
        if !batch.is_empty() {
            out.push(QueryHit {
                port: id.port,
                ip: id.ip,
                speed: 0,
                results: std::mem::take(batch),
                trailer: TrailerArea::Qhd(trailer.clone()),
                servent: id.guid,
            });
        }
    };
    for f in files {
        let len = f.name.len();
        if !batch.is_empty() && (batch.len() == RESULTS_PER_HIT || bytes + len > NAME_BYTES_PER_HIT)
        {
            flush(&mut batch, &mut out);
            bytes = 0;
        }
        bytes += len;
        batch.push(f);
    }
    flush(&mut batch, &mut out);
    out
}

/// How often one address may browse us: a token bucket per address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Browses in a burst.
    pub burst: u32,
    /// One more browse is allowed after this long.
    pub every: Duration,
}

impl Default for Rate {
    /// Three browses at once, then one every five minutes (gtk-gnutella's
    /// client browses a host at most once an hour; a person clicking
    /// "browse" twice should not be refused).
    fn default() -> Self {
        Rate {
            burst: 3,
            every: Duration::from_secs(300),
        }
    }
}

/// Addresses remembered at most; beyond, the one heard from longest ago goes
/// (it could at worst browse again a little early).
pub const MAX_ADDRESSES: usize = 4096;

/// Why a browse is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address browsed too often (429).
    TooOften,
}

/// The per-address limit on browses.
#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    /// Tokens (in `every` units, scaled by 1000) and when they were counted.
    seen: HashMap<IpAddr, (u64, Instant)>,
    /// Browses refused since the start.
    pub refused: u64,
    /// Browses allowed since the start.
    pub allowed: u64,
}

impl Limiter {
    pub fn new(rate: Rate) -> Limiter {
        Limiter {
            rate,
            seen: HashMap::new(),
            refused: 0,
            allowed: 0,
        }
    }

    /// Whether `ip` may browse now; an allowed browse is counted.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        const SCALE: u64 = 1000;
        let full = u64::from(self.rate.burst) * SCALE;
        if !self.seen.contains_key(&ip) && self.seen.len() >= MAX_ADDRESSES {
            if let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(a, _)| *a)
            {
                self.seen.remove(&oldest);
            }
        }
        let (tokens, at) = self.seen.entry(ip).or_insert((full, now));
        let every = self.rate.every.as_millis().max(1) as u64;
        let gained = now.saturating_duration_since(*at).as_millis() as u64 * SCALE / every;
        *tokens = (*tokens + gained).min(full);
        *at = now;
        if *tokens >= SCALE {
            *tokens -= SCALE;
            self.allowed += 1;
            Ok(())
        } else {
            self.refused += 1;
            Err(Refusal::TooOften)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            guid: Guid([7; 16]),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            port: 6346,
            push: true,
            busy: false,
        }
    }

    fn file(i: u32, name: &str) -> HitResult {
        HitResult::new(i, 100 + u64::from(i), name, None)
    }

    #[test]
    fn files_are_cut_into_bounded_hits_that_say_browsable() {
        let files: Vec<_> = (1..=25).map(|i| file(i, &format!("f{i}.txt"))).collect();
        let hs = hits(files, &id());
        assert_eq!(
            hs.iter().map(|h| h.results.len()).collect::<Vec<_>>(),
            [10, 10, 5]
        );
        let indexes: Vec<u32> = hs
            .iter()
            .flat_map(|h| h.results.iter().map(|r| r.index))
            .collect();
        assert_eq!(indexes, (1..=25).collect::<Vec<_>>());
        for h in &hs {
            assert_eq!((h.ip, h.port, h.servent), (id().ip, 6346, Guid([7; 16])));
            let t = h.qhd().expect("a trailer");
            assert_eq!(t.flags().push, Some(true));
            assert!(
                t.private
                    .ggep
                    .as_ref()
                    .and_then(|g| g.get(GGEP_BH))
                    .is_some()
            );
        }
        // Long names: a hit holds no more than the byte bound (one name alone
        // may pass it).
        let long = "x".repeat(3000);
        let files: Vec<_> = (1..=5).map(|i| file(i, &long)).collect();
        let hs = hits(files, &id());
        assert_eq!(
            hs.iter().map(|h| h.results.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let huge = "y".repeat(NAME_BYTES_PER_HIT + 1);
        let hs = hits(vec![file(1, &huge), file(2, "a")], &id());
        assert_eq!(hs.len(), 2);
        assert!(hits(Vec::new(), &id()).is_empty());
    }

    #[test]
    fn an_address_browses_a_burst_then_waits() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Rate {
            burst: 2,
            every: Duration::from_secs(60),
        });
        let a: IpAddr = Ipv4Addr::new(1, 2, 3, 4).into();
        let b: IpAddr = Ipv4Addr::new(1, 2, 3, 5).into();
        assert!(l.check(a, t0).is_ok());
        assert!(l.check(a, t0).is_ok());
        assert_eq!(l.check(a, t0), Err(Refusal::TooOften));
        // Another address is not held back.
        assert!(l.check(b, t0).is_ok());
        assert_eq!(
            l.check(a, t0 + Duration::from_secs(30)),
            Err(Refusal::TooOften)
        );
        assert!(l.check(a, t0 + Duration::from_secs(61)).is_ok());
        assert_eq!((l.allowed, l.refused), (4, 2));
    }

    #[test]
    fn remembered_addresses_are_bounded() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Rate::default());
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            let ip: IpAddr = Ipv4Addr::from(i).into();
            assert!(
                l.check(ip, t0 + Duration::from_millis(u64::from(i)))
                    .is_ok()
            );
        }
        assert_eq!(l.seen.len(), MAX_ADDRESSES);
    }
}
