//! HSEP 0.2 decisions: what each HSEP-speaking link told us, the horizon
//! they add up to, and when to tell each link what it reaches through us.
//! No I/O; `now` passed in; the engine sends what [`Hsep::due`] returns.
//!
//! A link's message says what it reaches within 1, 2, ... hops (itself
//! first). What we reach within `i + 1` hops, not counting ourselves, is the
//! sum over links of their triple `i` (the *horizon*). What we tell a link:
//! triple 0 is ourselves alone; triple `i` is ourselves plus what every other
//! link reaches within `i` hops.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::ConnId;
use crate::wire::hsep::{MAX_TRIPLES, Triple, trimmed};

/// Average time between two messages to one link (gtk-gnutella's
/// `HSEP_MSG_INTERVAL`), and the random skew either way around it.
pub const INTERVAL: Duration = Duration::from_secs(30);
pub const SKEW: Duration = Duration::from_secs(10);
/// A link's messages closer together than this are dropped (a well-behaved
/// peer sends one every 20 s at the soonest).
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// Why a received message was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// The link did not announce HSEP (or is gone).
    NotNegotiated,
    /// It came sooner than [`MIN_GAP`] after the last.
    TooOften,
    /// A leaf must send one triple only (its own).
    LeafSentMore,
}

impl Drop {
    pub fn name(self) -> &'static str {
        match self {
            Drop::NotNegotiated => "hsep-not-negotiated",
            Drop::TooOften => "hsep-too-often",
            Drop::LeafSentMore => "hsep-leaf-sent-more",
        }
    }
}

struct Link {
    /// What it reaches within `i + 1` hops (its last message, the last triple
    /// repeated to the end).
    reach: [Triple; MAX_TRIPLES],
    /// The link is our leaf.
    leaf: bool,
    /// When we send to it next.
    next: Instant,
    /// What we sent it last (nothing new: nothing sent).
    sent: Vec<Triple>,
    received: Option<Instant>,
}

/// Every HSEP link's table and our own share.
pub struct Hsep {
    own: Triple,
    links: HashMap<ConnId, Link>,
    /// Messages taken, and sent.
    pub received: u64,
    pub sent: u64,
}

impl Default for Hsep {
    fn default() -> Self {
        Hsep::new()
    }
}

impl Hsep {
    pub fn new() -> Hsep {
        Hsep {
            own: Triple {
                hosts: 1,
                files: 0,
                kib: 0,
            },
            links: HashMap::new(),
            received: 0,
            sent: 0,
        }
    }

    /// What we share.
    pub fn set_own(&mut self, files: u64, bytes: u64) {
        self.own.files = files;
        self.own.kib = bytes / 1024;
    }

    /// A link that announced HSEP opened: our first message to it is due now.
    pub fn opened(&mut self, conn: ConnId, leaf: bool, now: Instant) {
        self.links.insert(
            conn,
            Link {
                reach: [Triple::ZERO; MAX_TRIPLES],
                leaf,
                next: now,
                sent: Vec::new(),
                received: None,
            },
        );
    }

    pub fn closed(&mut self, conn: ConnId) {
        self.links.remove(&conn);
    }

    /// Whether `conn` speaks HSEP.
    pub fn speaks(&self, conn: ConnId) -> bool {
        self.links.contains_key(&conn)
    }

    /// Takes a link's parsed message.
    pub fn received(&mut self, conn: ConnId, triples: &[Triple], now: Instant) -> Result<(), Drop> {
        let link = self.links.get_mut(&conn).ok_or(Drop::NotNegotiated)?;
        if link.leaf && triples.len() > 1 {
            return Err(Drop::LeafSentMore);
        }
        if link
            .received
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_GAP)
        {
            return Err(Drop::TooOften);
        }
        link.received = Some(now);
        let Some(&last) = triples.last() else {
            return Ok(());
        };
        for (i, r) in link.reach.iter_mut().enumerate() {
            *r = triples.get(i).copied().unwrap_or(last);
        }
        self.received += 1;
        Ok(())
    }

    /// What we reach within 1, 2, ... [`MAX_TRIPLES`] hops, ourselves not
    /// counted.
    pub fn horizon(&self) -> [Triple; MAX_TRIPLES] {
        let mut h = [Triple::ZERO; MAX_TRIPLES];
        for l in self.links.values() {
            for (t, r) in h.iter_mut().zip(&l.reach) {
                *t = t.plus(*r);
            }
        }
        h
    }

    /// The messages due by `now`: for each link, the triples to send (trimmed
    /// of trailing repeats; one, our own, when `we_are_leaf`). A link whose
    /// table did not change since the last message gets none this time.
    /// `skew` (0..1) picks where in `INTERVAL ± SKEW` the next one falls.
    pub fn due(
        &mut self,
        now: Instant,
        we_are_leaf: bool,
        mut skew: impl FnMut() -> f64,
    ) -> Vec<(ConnId, Vec<Triple>)> {
        let horizon = self.horizon();
        let own = self.own;
        let mut out = Vec::new();
        for (&conn, l) in self.links.iter_mut() {
            if now < l.next {
                continue;
            }
            let wait =
                INTERVAL.as_secs_f64() + (2.0 * skew().clamp(0.0, 1.0) - 1.0) * SKEW.as_secs_f64();
            l.next = now + Duration::from_secs_f64(wait);
            let n = if we_are_leaf { 1 } else { MAX_TRIPLES };
            // Triple i: ourselves, and what the other links reach within i hops.
            let table: Vec<Triple> = (0..n)
                .map(|i| match i {
                    0 => own,
                    _ => own.plus(horizon[i - 1].minus(l.reach[i - 1])),
                })
                .collect();
            if table == l.sent {
                continue;
            }
            let send = trimmed(&table).to_vec();
            l.sent = table;
            self.sent += 1;
            out.push((conn, send));
        }
        out.sort_by_key(|(c, _)| c.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(hosts: u64, files: u64, kib: u64) -> Triple {
        Triple { hosts, files, kib }
    }

    #[test]
    fn each_link_hears_of_the_others_and_the_horizon_adds_up() {
        let t0 = Instant::now();
        let mut h = Hsep::new();
        h.set_own(3, 3 * 1024);
        let (a, b, leaf) = (ConnId(1), ConnId(2), ConnId(3));
        h.opened(a, false, t0);
        h.opened(b, false, t0);
        h.opened(leaf, true, t0);
        // Before anything is heard, every link is told of us alone.
        let first = h.due(t0, false, || 0.5);
        assert_eq!(first.len(), 3);
        for (_, m) in &first {
            assert_eq!(m, &[t(1, 3, 3)]);
        }
        // Nothing more until the interval has passed.
        assert!(
            h.due(t0 + Duration::from_secs(19), false, || 0.5)
                .is_empty()
        );
        h.received(a, &[t(1, 10, 100), t(4, 40, 400)], t0).unwrap();
        h.received(b, &[t(1, 1, 1)], t0).unwrap();
        h.received(leaf, &[t(1, 2, 2)], t0).unwrap();
        // Within 1 hop: a, b and the leaf; within 2: a's 4, b's 1, the leaf's 1.
        let hz = h.horizon();
        assert_eq!(hz[0], t(3, 13, 103));
        assert_eq!(hz[1], t(6, 43, 403));
        assert_eq!(hz[9], t(6, 43, 403));
        let later = t0 + Duration::from_secs(30);
        let msgs: HashMap<ConnId, Vec<Triple>> = h.due(later, false, || 0.5).into_iter().collect();
        // To a: us, then us + b + leaf within 1 hop, then within 2 (the same:
        // trimmed).
        assert_eq!(msgs[&a], [t(1, 3, 3), t(3, 6, 6)]);
        // To b: us, us + a + leaf, us + a's 2-hop reach + leaf.
        assert_eq!(msgs[&b], [t(1, 3, 3), t(3, 15, 105), t(6, 45, 405)]);
        // Unchanged tables are not sent again.
        h.received(a, &[t(1, 10, 100), t(4, 40, 400)], later)
            .unwrap();
        assert!(
            h.due(later + Duration::from_secs(40), false, || 0.5)
                .is_empty()
        );
        // As a leaf we send our own triple only.
        let mut l = Hsep::new();
        l.opened(a, false, t0);
        l.received(a, &[t(1, 10, 100), t(4, 40, 400)], t0).unwrap();
        assert_eq!(l.due(t0, true, || 0.0), vec![(a, vec![t(1, 0, 0)])]);
        // A closed link leaves the horizon.
        h.closed(a);
        assert_eq!(h.horizon()[1], t(2, 3, 3));
    }

    #[test]
    fn bad_senders_are_refused() {
        let t0 = Instant::now();
        let mut h = Hsep::new();
        assert_eq!(
            h.received(ConnId(9), &[t(1, 0, 0)], t0),
            Err(Drop::NotNegotiated)
        );
        h.opened(ConnId(1), true, t0);
        assert_eq!(
            h.received(ConnId(1), &[t(1, 0, 0), t(2, 0, 0)], t0),
            Err(Drop::LeafSentMore)
        );
        h.received(ConnId(1), &[t(1, 0, 0)], t0).unwrap();
        assert_eq!(
            h.received(ConnId(1), &[t(1, 0, 0)], t0 + Duration::from_secs(1)),
            Err(Drop::TooOften)
        );
        assert_eq!(h.received, 1);
    }

    #[test]
    fn hostile_values_wrap_instead_of_panicking() {
        let t0 = Instant::now();
        let mut h = Hsep::new();
        h.opened(ConnId(1), false, t0);
        h.opened(ConnId(2), false, t0);
        let max = t(1, u64::MAX, u64::MAX);
        h.received(ConnId(1), &[max, t(u64::MAX, u64::MAX, u64::MAX)], t0)
            .unwrap();
        h.received(ConnId(2), &[max], t0).unwrap();
        let _ = h.horizon();
        assert_eq!(h.due(t0, false, || 1.0).len(), 2);
    }
}
