//! Dynamic querying: an ultrapeer searching on behalf of its leaf does not flood
//! the leaf's query at once. It probes a few ultrapeer links, counts the results
//! coming back, and widens the search one link at a time, each time with the
//! smallest TTL expected to find what is still wanted, until enough results have
//! come back, the links run out, or the search has gone on long enough. No I/O:
//! the shell reports results and asks for the next step with `now`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::core::ConnId;

/// Limits and pacing.
#[derive(Clone, Debug)]
pub struct DqConfig {
    /// Results wanted before the search stops.
    pub wanted: u32,
    /// Links probed at once at the start.
    pub probe_links: usize,
    /// Time given to each hop of the TTL a step used before the next step.
    pub wait_per_hop: Duration,
    /// Longest a search runs.
    pub lifetime: Duration,
    /// Searches running at once; more are flooded the plain way.
    pub max_searches: usize,
}

impl Default for DqConfig {
    fn default() -> Self {
        DqConfig {
            wanted: 150,
            probe_links: 3,
            wait_per_hop: Duration::from_millis(2400),
            lifetime: Duration::from_secs(180),
            max_searches: 256,
        }
    }
}

/// An ultrapeer link as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub conn: ConnId,
    /// The link's table matches the query (`None`: it sent none).
    pub matches: Option<bool>,
    /// Ultrapeer links the other side keeps (its `X-Degree`; 0 if unknown).
    pub degree: usize,
}

/// Send the query on `conn` with `ttl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Send {
    pub conn: ConnId,
    pub ttl: u8,
}

/// How long a leaf-guided search waits for the leaf's status (BEAR/12)
/// before taking its next step without it.
pub const STATUS_WAIT: Duration = Duration::from_secs(2);
/// A leaf's status saying "stop this search" (BEAR/12 0xFFFF).
pub const STATUS_STOP: u16 = 0xFFFF;

#[derive(Debug)]
struct Search {
    origin: ConnId,
    max_ttl: u8,
    results: u32,
    /// The leaf answers status requests (leaf-guided): what it last said it
    /// kept (it also gets hits we never see, out of band).
    guided: bool,
    leaf_kept: Option<u32>,
    /// When a status request went out for the coming step (that step was
    /// due then).
    asked: Option<Instant>,
    /// The leaf said stop.
    stop: bool,
    queried: HashSet<ConnId>,
    started: Instant,
    next_at: Instant,
}

/// The searches in progress, keyed by query id.
#[derive(Debug)]
pub struct Planner<K> {
    config: DqConfig,
    searches: HashMap<K, Search>,
}

/// How many hosts a query with `ttl` can reach through one link to a node of
/// `degree` ultrapeer links: Σ_{i<ttl} (degree−1)^i.
pub fn horizon(degree: usize, ttl: u8) -> u64 {
    let d = degree.saturating_sub(1).max(1) as u64;
    (0..ttl as u32).fold(0u64, |sum, i| sum.saturating_add(d.saturating_pow(i)))
}

impl<K: std::hash::Hash + Eq + Clone> Planner<K> {
    pub fn new(config: DqConfig) -> Self {
        Planner {
            config,
            searches: HashMap::new(),
        }
    }

    /// Searches in progress.
    pub fn len(&self) -> usize {
        self.searches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.searches.is_empty()
    }

    /// Starts a search for a leaf's query; `None` when too many run already (the
    /// caller floods it instead). The leaf's TTL caps every step's.
    pub fn start(
        &mut self,
        id: K,
        origin: ConnId,
        max_ttl: u8,
        links: &[Candidate],
        now: Instant,
    ) -> Option<Vec<Send>> {
        if self.searches.len() >= self.config.max_searches || self.searches.contains_key(&id) {
            return None;
        }
        let max_ttl = max_ttl.max(1);
        // Probe: links whose table matches first (TTL 1 reaches their leaves),
        // then others with TTL 2 (theirs and their neighbours').
        let mut order: Vec<&Candidate> = links.iter().filter(|c| c.conn != origin).collect();
        order.sort_by_key(|c| (c.matches != Some(true), c.matches == Some(false), c.conn));
        let probes: Vec<Send> = order
            .into_iter()
            .take(self.config.probe_links)
            .map(|c| Send {
                conn: c.conn,
                ttl: if c.matches == Some(true) {
                    1
                } else {
                    2.min(max_ttl)
                },
            })
            .collect();
        let longest = probes.iter().map(|s| s.ttl).max().unwrap_or(1);
        self.searches.insert(
            id,
            Search {
                origin,
                max_ttl,
                results: 0,
                guided: false,
                leaf_kept: None,
                asked: None,
                stop: false,
                queried: probes.iter().map(|s| s.conn).collect(),
                started: now,
                next_at: now + self.config.wait_per_hop * longest as u32,
            },
        );
        Some(probes)
    }

    /// Results for `id` came back (to be routed to its leaf).
    pub fn results(&mut self, id: &K, count: u32) {
        if let Some(s) = self.searches.get_mut(id) {
            s.results = s.results.saturating_add(count);
        }
    }

    /// The search's leaf answers status requests: ask it before each step.
    pub fn set_guided(&mut self, id: &K) {
        if let Some(s) = self.searches.get_mut(id) {
            s.guided = true;
        }
    }

    /// The status requests due at `now` (leaf-guided searches whose next step
    /// is due and whose leaf was not asked yet): the search and its leaf. The
    /// step then waits [`STATUS_WAIT`] for the answer.
    pub fn status_requests(&mut self, now: Instant) -> Vec<(K, ConnId)> {
        let mut out = Vec::new();
        for (id, s) in self.searches.iter_mut() {
            if s.guided && s.asked.is_none() && !s.stop && now >= s.next_at {
                s.asked = Some(now);
                s.next_at = now + STATUS_WAIT;
                out.push((id.clone(), s.origin));
            }
        }
        out
    }

    /// The leaf `from` says it kept `kept` results for `id` ([`STATUS_STOP`]:
    /// stop searching). False when `id` is no search of `from`'s.
    pub fn leaf_status(&mut self, id: &K, from: ConnId, kept: u16) -> bool {
        let Some(s) = self.searches.get_mut(id).filter(|s| s.origin == from) else {
            return false;
        };
        if kept == STATUS_STOP {
            s.stop = true;
        } else {
            s.leaf_kept = Some(kept.into());
            // Answered: the step waits no longer.
            if let Some(due) = s.asked {
                s.next_at = s.next_at.min(due);
            }
        }
        true
    }

    /// Whether `id` is a search of ours.
    pub fn contains(&self, id: &K) -> bool {
        self.searches.contains_key(id)
    }

    /// A connection closed: its leaf's searches end.
    pub fn closed(&mut self, conn: ConnId) {
        self.searches.retain(|_, s| s.origin != conn);
    }

    /// The next steps due at `now`; `links(id)` gives the ultrapeer links there
    /// are now, as seen for that search's query (whose tables match it).
    /// Finished searches are forgotten.
    pub fn step(
        &mut self,
        now: Instant,
        mut links_for: impl FnMut(&K) -> Vec<Candidate>,
    ) -> Vec<(K, Send)> {
        let config = &self.config;
        let mut out = Vec::new();
        self.searches.retain(|id, s| {
            // What the leaf says it kept counts too: hits it got out of band
            // never pass through us.
            let results = s.results.max(s.leaf_kept.unwrap_or(0));
            if s.stop
                || results >= config.wanted
                || now.saturating_duration_since(s.started) >= config.lifetime
            {
                return false;
            }
            if now < s.next_at {
                return true;
            }
            let links = links_for(id);
            let Some(next) = links
                .iter()
                .filter(|c| c.conn != s.origin && !s.queried.contains(&c.conn))
                .min_by_key(|c| (c.matches == Some(false), c.conn))
            else {
                return false;
            };
            let remaining = links
                .iter()
                .filter(|c| c.conn != s.origin && !s.queried.contains(&c.conn))
                .count()
                .max(1) as f64;
            // Results per link so far (at least a little, so a silent network
            // widens fast rather than not at all).
            let per_link = (results as f64 / s.queried.len().max(1) as f64).max(0.1);
            let needed = (config.wanted - results) as f64;
            let hosts = (needed / per_link / remaining).ceil() as u64;
            let degree = if next.degree == 0 { 32 } else { next.degree };
            let ttl = (1..=s.max_ttl)
                .find(|t| horizon(degree, *t) >= hosts)
                .unwrap_or(s.max_ttl);
            s.queried.insert(next.conn);
            s.asked = None;
            s.next_at = now + config.wait_per_hop * ttl as u32;
            out.push((
                id.clone(),
                Send {
                    conn: next.conn,
                    ttl,
                },
            ));
            true
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(c: u64, matches: Option<bool>) -> Candidate {
        Candidate {
            conn: ConnId(c),
            matches,
            degree: 32,
        }
    }

    #[test]
    fn horizon_counts_the_tree() {
        assert_eq!(horizon(32, 1), 1);
        assert_eq!(horizon(32, 2), 32);
        assert_eq!(horizon(32, 3), 1 + 31 + 961);
        assert_eq!(horizon(1, 4), 4);
    }

    #[test]
    fn probes_matching_links_first_then_widens_one_link_at_a_time() {
        let t0 = Instant::now();
        let mut p = Planner::new(DqConfig {
            probe_links: 2,
            ..DqConfig::default()
        });
        let links = [
            link(1, None),
            link(2, Some(true)),
            link(3, Some(false)),
            link(4, None),
            link(9, None),
        ];
        let probes = p.start("q", ConnId(9), 4, &links, t0).unwrap();
        assert_eq!(
            probes,
            vec![
                Send {
                    conn: ConnId(2),
                    ttl: 1
                },
                Send {
                    conn: ConnId(1),
                    ttl: 2
                }
            ]
        );
        assert!(
            p.step(t0, |_| links.to_vec()).is_empty(),
            "waits for the probes"
        );
        let wait = DqConfig::default().wait_per_hop * 2;
        let steps = p.step(t0 + wait, |_| links.to_vec());
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].1.conn, ConnId(4), "unknown before non-matching");
        // Nothing came back: it goes as far as the leaf allowed.
        assert_eq!(steps[0].1.ttl, 3, "149/0.1/2 hosts need TTL 3 at degree 32");
    }

    #[test]
    fn stops_at_enough_results_when_links_run_out_or_the_leaf_leaves() {
        let t0 = Instant::now();
        let mut p = Planner::new(DqConfig::default());
        let links = [link(1, None), link(2, None)];
        p.start(1u32, ConnId(7), 3, &links, t0).unwrap();
        p.results(&1, 150);
        assert!(
            p.step(t0 + Duration::from_secs(60), |_| links.to_vec())
                .is_empty()
        );
        assert!(p.is_empty());

        p.start(2, ConnId(7), 3, &links, t0).unwrap();
        assert!(
            p.step(t0 + Duration::from_secs(60), |_| links.to_vec())
                .is_empty()
        );
        assert!(p.is_empty(), "every link was probed");

        let more = [link(1, None), link(2, None), link(3, None), link(4, None)];
        p.start(3, ConnId(7), 3, &more, t0).unwrap();
        p.closed(ConnId(7));
        assert!(p.is_empty());
    }

    #[test]
    fn few_results_per_link_pick_a_wider_ttl_than_many() {
        let t0 = Instant::now();
        let links: Vec<Candidate> = (1..=10).map(|c| link(c, None)).collect();
        let wait = Duration::from_secs(10);
        let mut rich = Planner::new(DqConfig::default());
        rich.start(1, ConnId(99), 4, &links, t0).unwrap();
        rich.results(&1, 120);
        let mut poor = Planner::new(DqConfig::default());
        poor.start(1, ConnId(99), 4, &links, t0).unwrap();
        poor.results(&1, 3);
        let r = rich.step(t0 + wait, |_| links.to_vec())[0].1.ttl;
        let q = poor.step(t0 + wait, |_| links.to_vec())[0].1.ttl;
        assert!(r < q, "rich {r} poor {q}");
    }

    #[test]
    fn the_number_of_searches_is_bounded() {
        let t0 = Instant::now();
        let mut p = Planner::new(DqConfig {
            max_searches: 1,
            ..DqConfig::default()
        });
        let links = [link(1, None)];
        assert!(p.start(1, ConnId(5), 3, &links, t0).is_some());
        assert!(p.start(2, ConnId(5), 3, &links, t0).is_none());
    }

    #[test]
    fn a_guided_search_asks_its_leaf_before_each_step_and_obeys_it() {
        let t0 = Instant::now();
        let leaf = ConnId(99);
        let links: Vec<Candidate> = (1..=10).map(|c| link(c, None)).collect();
        let mut p = Planner::new(DqConfig::default());
        p.start(1, leaf, 4, &links, t0).unwrap();
        p.start(2, leaf, 4, &links, t0).unwrap();
        p.set_guided(&1);
        let due = t0 + Duration::from_secs(10);
        // The guided search asks first and waits; the other steps.
        assert_eq!(p.status_requests(due), vec![(1, leaf)]);
        assert!(p.status_requests(due).is_empty(), "asked once per step");
        let steps = p.step(due, |_| links.to_vec());
        assert_eq!(steps.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [2]);
        // Another link's answer for it is not taken; the leaf's is, and the
        // step comes at once.
        assert!(!p.leaf_status(&1, ConnId(3), 5));
        assert!(p.leaf_status(&1, leaf, 5));
        let steps = p.step(due + Duration::from_millis(10), |_| links.to_vec());
        assert_eq!(steps.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1]);
        // The leaf kept enough (out of band, say): the search ends though no
        // hit came through us.
        let later = due + Duration::from_secs(60);
        assert_eq!(p.status_requests(later), vec![(1, leaf)]);
        assert!(p.leaf_status(&1, leaf, 150));
        p.step(later, |_| links.to_vec());
        assert!(!p.contains(&1));
        // A leaf's 0xFFFF ends it too.
        p.start(3, leaf, 4, &links, t0).unwrap();
        p.set_guided(&3);
        assert!(p.leaf_status(&3, leaf, STATUS_STOP));
        p.step(t0 + Duration::from_millis(1), |_| links.to_vec());
        assert!(!p.contains(&3));
        // Without an answer the step is taken after STATUS_WAIT with our count.
        p.start(4, leaf, 4, &links, t0).unwrap();
        p.set_guided(&4);
        assert_eq!(p.status_requests(due), vec![(4, leaf)]);
        assert!(
            p.step(due + STATUS_WAIT / 2, |_| links.to_vec())
                .iter()
                .all(|(id, _)| *id != 4)
        );
        assert!(
            p.step(due + STATUS_WAIT, |_| links.to_vec())
                .iter()
                .any(|(id, _)| *id == 4)
        );
    }
}
