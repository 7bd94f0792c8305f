//! Routing decisions for an unstructured overlay: flooding with duplicate
//! suppression and TTL, replies routed back along the path of their request, and
//! directed messages routed by the responder identity learned from replies.
//!
//! The router knows message *classes*, not wire formats: the shell maps a Gnutella
//! Ping to [`Class::Discovery`], a Pong to [`Class::DiscoveryReply`], a Query to
//! [`Class::Search`], a QueryHit to [`Class::SearchReply`] and a Push to
//! [`Class::Directed`]. Every input yields a [`Decision`]; every drop has a
//! [`DropReason`] and is counted in [`Stats`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::core::ConnId;
use crate::core::timed::TimedMap;
use crate::wire::Guid;

/// What a message is, for routing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Class {
    /// Flooded to every neighbour but the sender; answered by everyone (Ping).
    Discovery,
    /// Flooded to every neighbour but the sender; answered by matching hosts (Query).
    Search,
    /// Routed back along the path of the Discovery with the same id (Pong).
    DiscoveryReply,
    /// Routed back along the path of the Search with the same id (QueryHit). The
    /// responder's identity is learned as reachable through the sender.
    SearchReply { responder: Guid },
    /// Routed towards the host `target`, along the path its replies came (Push).
    Directed { target: Guid },
}

impl Class {
    fn index(self) -> usize {
        match self {
            Class::Discovery => 0,
            Class::Search => 1,
            Class::DiscoveryReply => 2,
            Class::SearchReply { .. } => 3,
            Class::Directed { .. } => 4,
        }
    }

    /// A short name, for counters and logs.
    pub fn name(self) -> &'static str {
        CLASS_NAMES[self.index()]
    }
}

const CLASS_NAMES: [&str; 5] = [
    "discovery",
    "search",
    "discovery-reply",
    "search-reply",
    "directed",
];

/// The kinds of message the duplicate table remembers. Replies are not in it: the
/// many replies to one request share its id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Remembered {
    Discovery,
    Search,
    Directed,
}

/// Why a message was not routed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DropReason {
    /// It arrived with TTL 0.
    ZeroTtl,
    /// Hops plus (clamped) TTL exceed the hard limit.
    OverHardLimit,
    /// The same request was seen before, from another connection (normal in a
    /// mesh with cycles).
    Duplicate,
    /// The same connection sent the same request again (a misbehaving peer).
    Repeated,
    /// A reply or directed message with no known path.
    NoRoute,
    /// The path's connection has closed.
    RouteGone,
    /// The path leads back to the connection it came from.
    RouteLoop,
    /// A reply or directed message whose TTL runs out before its destination.
    Expired,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 8] = [
        DropReason::ZeroTtl,
        DropReason::OverHardLimit,
        DropReason::Duplicate,
        DropReason::Repeated,
        DropReason::NoRoute,
        DropReason::RouteGone,
        DropReason::RouteLoop,
        DropReason::Expired,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// A short name, for counters and logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::ZeroTtl => "zero-ttl",
            DropReason::OverHardLimit => "over-hard-limit",
            DropReason::Duplicate => "duplicate",
            DropReason::Repeated => "repeated",
            DropReason::NoRoute => "no-route",
            DropReason::RouteGone => "route-gone",
            DropReason::RouteLoop => "route-loop",
            DropReason::Expired => "expired",
        }
    }
}

/// Where a message goes on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Targets {
    /// Every open connection.
    All,
    /// Every open connection but this one (the one it came from).
    AllExcept(ConnId),
    /// This connection only.
    One(ConnId),
}

/// A message to send on, with the header values to send it with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Forward {
    pub to: Targets,
    pub ttl: u8,
    pub hops: u8,
}

/// What to do with a message.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Decision {
    /// Drop it, for this reason.
    Drop(DropReason),
    /// Keep it: `deliver` says whether this node handles it (answers a request,
    /// receives a reply to its own request, acts on a message addressed to it), and
    /// `forward` where it goes on, if anywhere.
    Accept {
        deliver: bool,
        forward: Option<Forward>,
    },
}

/// Limits and table sizes.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Requests arriving with a higher TTL are lowered to this (never raised).
    pub max_ttl: u8,
    /// Messages whose hops plus (clamped) TTL exceed this are dropped.
    pub hard_ttl_limit: u8,
    /// Requests remembered for duplicate suppression and reply routing.
    pub seen_capacity: usize,
    /// How long a request is remembered.
    pub seen_max_age: Duration,
    /// Responders remembered for directed routing.
    pub responder_capacity: usize,
    /// How long a responder route lives without being used.
    pub responder_max_age: Duration,
    /// Whether discovery messages are flooded (0.4 style). Off, they are answered
    /// where they arrive (from a pong cache) and go no further.
    pub flood_discovery: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            max_ttl: 7,
            hard_ttl_limit: 15,
            seen_capacity: 200_000,
            seen_max_age: Duration::from_secs(10 * 60),
            responder_capacity: 100_000,
            responder_max_age: Duration::from_secs(30 * 60),
            flood_discovery: false,
        }
    }
}

/// Counters of what the router decided, per message class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    dropped: [[u64; DropReason::ALL.len()]; 5],
    forwarded: [u64; 5],
    delivered: [u64; 5],
}

impl Stats {
    /// Messages of `class` dropped for `reason`.
    pub fn dropped(&self, class: Class, reason: DropReason) -> u64 {
        self.dropped[class.index()][reason.index()]
    }

    /// All drops for `reason`, over every class.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        self.dropped.iter().map(|c| c[reason.index()]).sum()
    }

    /// Messages of `class` sent on (a flood to many connections counts once).
    pub fn forwarded(&self, class: Class) -> u64 {
        self.forwarded[class.index()]
    }

    /// Messages of `class` handled here.
    pub fn delivered(&self, class: Class) -> u64 {
        self.delivered[class.index()]
    }

    /// Every class, as (name, forwarded, delivered).
    pub fn classes(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        (0..CLASS_NAMES.len()).map(|c| (CLASS_NAMES[c], self.forwarded[c], self.delivered[c]))
    }

    /// Every non-zero drop counter, as (class name, reason name, count).
    pub fn drops(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.dropped.iter().enumerate().flat_map(|(c, row)| {
            DropReason::ALL
                .iter()
                .filter(move |r| row[r.index()] > 0)
                .map(move |r| (CLASS_NAMES[c], r.name(), row[r.index()]))
        })
    }
}

/// Where a remembered request came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Origin {
    Local,
    Conn(ConnId),
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    from: Origin,
    /// The highest (clamped) TTL this request has arrived with.
    ttl: u8,
}

/// The routing state of one node.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    /// Our own identity as a responder (the servent GUID).
    me: Guid,
    seen: TimedMap<(Guid, Remembered), Seen>,
    responders: TimedMap<Guid, ConnId>,
    open: HashSet<ConnId, foldhash::fast::FixedState>,
    stats: Stats,
}

impl Router {
    /// A router for the node whose responder identity is `me`.
    pub fn new(me: Guid, config: RouterConfig) -> Router {
        Router {
            seen: TimedMap::new(config.seen_capacity, config.seen_max_age),
            responders: TimedMap::new(config.responder_capacity, config.responder_max_age),
            config,
            me,
            open: HashSet::default(),
            stats: Stats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A connection has opened.
    pub fn connection_opened(&mut self, conn: ConnId) {
        self.open.insert(conn);
    }

    /// A connection has closed: paths through it are gone.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.open.remove(&conn);
    }

    /// Registers a request this node starts, so that replies come back to it and
    /// copies that loop back are dropped. Returns how to send it.
    pub fn originate(&mut self, id: Guid, class: Class, ttl: u8, now: Instant) -> Decision {
        let ttl = ttl.min(self.config.max_ttl).max(1);

        if let Some(kind) = remembered(class) {
            self.seen.insert(
                (id, kind),
                Seen {
                    from: Origin::Local,
                    ttl,
                },
                now,
            );
        }
        self.stats.forwarded[class.index()] += 1;
        Decision::Accept {
            deliver: false,
            forward: Some(Forward {
                to: Targets::All,
                ttl,
                hops: 0,
            }),
        }
    }

    /// Decides what to do with a message that arrived on `from`.
    pub fn route(
        &mut self,
        from: ConnId,
        id: Guid,
        class: Class,
        ttl: u8,
        hops: u8,
        now: Instant,
    ) -> Decision {
        let decision = self.decide(from, id, class, ttl, hops, now);
        match decision {
            Decision::Drop(reason) => self.stats.dropped[class.index()][reason.index()] += 1,
            Decision::Accept { deliver, forward } => {
                if deliver {
                    self.stats.delivered[class.index()] += 1;
                }
                if forward.is_some() {
                    self.stats.forwarded[class.index()] += 1;
                }
            }
        }
        decision
    }

    fn decide(
        &mut self,
        from: ConnId,
        id: Guid,
        class: Class,
        ttl: u8,
        hops: u8,
        now: Instant,
    ) -> Decision {
        if ttl == 0 {
            return Decision::Drop(DropReason::ZeroTtl);
        }
        // Requests are clamped to our maximum first, so an over-eager TTL is
        // lowered rather than refused; hops are never lowered.
        let ttl = match class {
            Class::Discovery | Class::Search => ttl.min(self.config.max_ttl.max(1)),
            _ => ttl,
        };
        if hops as u16 + ttl as u16 > self.config.hard_ttl_limit as u16 {
            return Decision::Drop(DropReason::OverHardLimit);
        }
        let next = Forward {
            to: Targets::AllExcept(from),
            ttl: ttl - 1,
            hops: hops.saturating_add(1),
        };
        match class {
            Class::Discovery | Class::Search => {
                let kind = remembered(class).expect("requests are remembered");
                let key = (id, kind);
                let first = Seen {
                    from: Origin::Conn(from),
                    ttl,
                };
                if let Some(seen) = self.seen.get_mut_or_insert(key, now, || first) {
                    // The same search again, from the same neighbour, with more TTL
                    // to go: a probe being widened. Send it further, but do not
                    // answer it twice. A copy from another neighbour is a plain
                    // duplicate whatever its TTL, so a flood costs exactly one send
                    // per link whichever path its first copy took.
                    if class == Class::Search && ttl > seen.ttl && seen.from == Origin::Conn(from) {
                        seen.ttl = ttl;
                        return Decision::Accept {
                            deliver: false,
                            forward: (ttl > 1).then_some(next),
                        };
                    }
                    return Decision::Drop(repeat_or_duplicate(seen.from, from));
                }
                let floods = class == Class::Search || self.config.flood_discovery;
                Decision::Accept {
                    deliver: true,
                    forward: (floods && ttl > 1).then_some(next),
                }
            }
            Class::DiscoveryReply | Class::SearchReply { .. } => {
                let kind = match class {
                    Class::DiscoveryReply => Remembered::Discovery,
                    _ => Remembered::Search,
                };
                let decision = match self.seen.get(&(id, kind), now).map(|s| s.from) {
                    None => Decision::Drop(DropReason::NoRoute),
                    Some(Origin::Local) => Decision::Accept {
                        deliver: true,
                        forward: None,
                    },
                    Some(Origin::Conn(back)) => self.towards(back, from, next),
                };
                // A reply that follows a known path teaches where its responder is,
                // for directed messages (Push) later.
                if let (Class::SearchReply { responder }, Decision::Accept { .. }) =
                    (class, decision)
                {
                    if responder != self.me {
                        self.responders.insert(responder, from, now);
                    }
                }
                decision
            }
            Class::Directed { target } => {
                let key = (id, Remembered::Directed);
                if let Some(seen) = self.seen.get(&key, now) {
                    return Decision::Drop(repeat_or_duplicate(seen.from, from));
                }
                self.seen.insert(
                    key,
                    Seen {
                        from: Origin::Conn(from),
                        ttl,
                    },
                    now,
                );
                if target == self.me {
                    return Decision::Accept {
                        deliver: true,
                        forward: None,
                    };
                }
                match self.responders.get(&target, now).copied() {
                    None => Decision::Drop(DropReason::NoRoute),
                    Some(via) => self.towards(via, from, next),
                }
            }
        }
    }

    /// Sends a routed message one hop along its path.
    fn towards(&self, to: ConnId, from: ConnId, next: Forward) -> Decision {
        if to == from {
            Decision::Drop(DropReason::RouteLoop)
        } else if !self.open.contains(&to) {
            Decision::Drop(DropReason::RouteGone)
        } else if next.ttl == 0 {
            Decision::Drop(DropReason::Expired)
        } else {
            Decision::Accept {
                deliver: false,
                forward: Some(Forward {
                    to: Targets::One(to),
                    ..next
                }),
            }
        }
    }
}

fn repeat_or_duplicate(first: Origin, now_from: ConnId) -> DropReason {
    if first == Origin::Conn(now_from) {
        DropReason::Repeated
    } else {
        DropReason::Duplicate
    }
}

fn remembered(class: Class) -> Option<Remembered> {
    match class {
        Class::Discovery => Some(Remembered::Discovery),
        Class::Search => Some(Remembered::Search),
        Class::Directed { .. } => Some(Remembered::Directed),
        Class::DiscoveryReply | Class::SearchReply { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use super::*;

    fn g(n: u8) -> Guid {
        Guid([n; 16])
    }

    fn router(me: u8, conns: &[u64]) -> Router {
        let mut r = Router::new(g(me), RouterConfig::default());
        for &c in conns {
            r.connection_opened(ConnId(c));
        }
        r
    }

    fn fwd(to: Targets, ttl: u8, hops: u8) -> Option<Forward> {
        Some(Forward { to, ttl, hops })
    }

    #[test]
    fn request_rules() {
        let now = Instant::now();
        let (a, b) = (ConnId(1), ConnId(2));
        let mut r = router(0, &[1, 2]);
        let search =
            |r: &mut Router, id, ttl, hops| r.route(a, g(id), Class::Search, ttl, hops, now);

        assert_eq!(
            search(&mut r, 1, 3, 0),
            Decision::Accept {
                deliver: true,
                forward: fwd(Targets::AllExcept(a), 2, 1)
            }
        );
        assert_eq!(
            search(&mut r, 1, 3, 0),
            Decision::Drop(DropReason::Repeated)
        );
        // Same id from another connection: a duplicate.
        assert_eq!(
            r.route(b, g(1), Class::Search, 3, 0, now),
            Decision::Drop(DropReason::Duplicate)
        );
        // Same id as a Discovery is a different message. Discovery is answered
        // here (from the pong cache) and not flooded.
        assert_eq!(
            r.route(a, g(1), Class::Discovery, 3, 0, now),
            Decision::Accept {
                deliver: true,
                forward: None
            }
        );
        // TTL 1: answered here, not forwarded.
        assert_eq!(
            search(&mut r, 2, 1, 3),
            Decision::Accept {
                deliver: true,
                forward: None
            }
        );
        assert_eq!(search(&mut r, 3, 0, 1), Decision::Drop(DropReason::ZeroTtl));
        // TTL 255 is clamped to the maximum (7), then forwarded.
        assert_eq!(
            search(&mut r, 4, 255, 0),
            Decision::Accept {
                deliver: true,
                forward: fwd(Targets::AllExcept(a), 6, 1)
            }
        );
        // Hops + clamped TTL over the hard limit (15).
        assert_eq!(
            search(&mut r, 5, 7, 9),
            Decision::Drop(DropReason::OverHardLimit)
        );
        assert!(matches!(search(&mut r, 6, 7, 8), Decision::Accept { .. }));
        // A widening probe: same search with more TTL is forwarded, not re-answered.
        assert!(matches!(
            search(&mut r, 7, 2, 0),
            Decision::Accept { deliver: true, .. }
        ));
        assert_eq!(
            search(&mut r, 7, 4, 0),
            Decision::Accept {
                deliver: false,
                forward: fwd(Targets::AllExcept(a), 3, 1)
            }
        );
        // ...but only from the neighbour that sent it first.
        assert_eq!(
            r.route(b, g(7), Class::Search, 6, 0, now),
            Decision::Drop(DropReason::Duplicate)
        );
        assert_eq!(
            search(&mut r, 7, 4, 0),
            Decision::Drop(DropReason::Repeated)
        );

        let s = r.stats();
        assert_eq!(s.dropped(Class::Search, DropReason::Duplicate), 2);
        assert_eq!(s.dropped(Class::Search, DropReason::Repeated), 2);
        assert_eq!(s.dropped_for(DropReason::ZeroTtl), 1);
        assert_eq!(s.dropped(Class::Search, DropReason::OverHardLimit), 1);
        assert_eq!(s.delivered(Class::Search), 5);
        assert_eq!(s.delivered(Class::Discovery), 1);
    }

    #[test]
    fn reply_rules() {
        let now = Instant::now();
        let (a, b, c) = (ConnId(1), ConnId(2), ConnId(3));
        let mut r = router(0, &[1, 2, 3]);
        let hit = |responder| Class::SearchReply {
            responder: g(responder),
        };
        // A hit for a search never seen is dropped.
        assert_eq!(
            r.route(b, g(1), hit(9), 5, 0, now),
            Decision::Drop(DropReason::NoRoute)
        );
        // Search 1 came from a: its hits go back to a only.
        r.route(a, g(1), Class::Search, 3, 0, now);
        assert_eq!(
            r.route(b, g(1), hit(9), 5, 1, now),
            Decision::Accept {
                deliver: false,
                forward: fwd(Targets::One(a), 4, 2)
            }
        );
        // Several hits share the search's id: none is a duplicate.
        assert!(matches!(
            r.route(c, g(1), hit(8), 5, 1, now),
            Decision::Accept { .. }
        ));
        // A hit arriving from the connection it would go back to.
        assert_eq!(
            r.route(a, g(1), hit(9), 5, 1, now),
            Decision::Drop(DropReason::RouteLoop)
        );
        // TTL spent before the destination.
        assert_eq!(
            r.route(b, g(1), hit(9), 1, 5, now),
            Decision::Drop(DropReason::Expired)
        );
        // A Pong follows the Discovery's path, not the Search's.
        assert_eq!(
            r.route(b, g(1), Class::DiscoveryReply, 5, 0, now),
            Decision::Drop(DropReason::NoRoute)
        );
        // Our own search: hits are delivered here.
        r.originate(g(2), Class::Search, 7, now);
        assert_eq!(
            r.route(b, g(2), hit(9), 5, 1, now),
            Decision::Accept {
                deliver: true,
                forward: None
            }
        );
        // ...and a copy of it looping back is not answered.
        assert_eq!(
            r.route(c, g(2), Class::Search, 5, 2, now),
            Decision::Drop(DropReason::Duplicate)
        );
        // The path closes.
        r.connection_closed(a);
        assert_eq!(
            r.route(b, g(1), hit(9), 5, 1, now),
            Decision::Drop(DropReason::RouteGone)
        );
        // Remembered requests expire.
        let later = now + RouterConfig::default().seen_max_age;
        assert_eq!(
            r.route(b, g(2), hit(9), 5, 1, later),
            Decision::Drop(DropReason::NoRoute)
        );
    }

    #[test]
    fn directed_rules() {
        let now = Instant::now();
        let (a, b) = (ConnId(1), ConnId(2));
        let mut r = router(0, &[1, 2]);
        let push = |target| Class::Directed { target: g(target) };
        assert_eq!(
            r.route(a, g(50), push(9), 5, 0, now),
            Decision::Drop(DropReason::NoRoute)
        );
        // A hit from responder 9 arrives on b for a search from a: 9 is behind b.
        r.route(a, g(1), Class::Search, 3, 0, now);
        r.route(b, g(1), Class::SearchReply { responder: g(9) }, 5, 0, now);
        assert_eq!(
            r.route(a, g(51), push(9), 5, 0, now),
            Decision::Accept {
                deliver: false,
                forward: fwd(Targets::One(b), 4, 1)
            }
        );
        assert_eq!(
            r.route(a, g(51), push(9), 5, 0, now),
            Decision::Drop(DropReason::Repeated)
        );
        // Addressed to us.
        assert_eq!(
            r.route(b, g(52), push(0), 5, 0, now),
            Decision::Accept {
                deliver: true,
                forward: None
            }
        );
        // A hit that is dropped teaches nothing.
        r.route(b, g(77), Class::SearchReply { responder: g(8) }, 5, 0, now);
        assert_eq!(
            r.route(a, g(53), push(8), 5, 0, now),
            Decision::Drop(DropReason::NoRoute)
        );
    }

    /// An in-memory network of routers: messages are delivered in FIFO order, so a
    /// flood reaches every node first along a shortest path.
    struct Net {
        routers: Vec<Router>,
        /// links[n] = (neighbour, conn id at n for that link)
        links: Vec<Vec<(usize, ConnId)>>,
        sent: BTreeMap<&'static str, u64>,
        delivered: Vec<Vec<&'static str>>,
    }

    struct InFlight {
        to: usize,
        conn: ConnId,
        id: Guid,
        class: Class,
        ttl: u8,
        hops: u8,
    }

    impl Net {
        fn new(n: usize, edges: &[(usize, usize)]) -> Net {
            let mut routers: Vec<Router> = (0..n)
                .map(|i| Router::new(Guid([i as u8 + 1; 16]), RouterConfig::default()))
                .collect();
            let mut links = vec![Vec::new(); n];
            for (k, &(x, y)) in edges.iter().enumerate() {
                let (cx, cy) = (ConnId(2 * k as u64), ConnId(2 * k as u64 + 1));
                links[x].push((y, cx));
                links[y].push((x, cy));
                routers[x].connection_opened(cx);
                routers[y].connection_opened(cy);
            }
            Net {
                routers,
                links,
                sent: BTreeMap::new(),
                delivered: vec![Vec::new(); n],
            }
        }

        /// Runs a decision at `node`, queueing what it sends; returns whether the
        /// message was delivered there.
        fn apply(
            &mut self,
            node: usize,
            d: Decision,
            id: Guid,
            class: Class,
            q: &mut VecDeque<InFlight>,
        ) {
            let Decision::Accept { deliver, forward } = d else {
                return;
            };
            if deliver {
                self.delivered[node].push(class.name());
            }
            let Some(f) = forward else { return };
            for &(peer, conn) in &self.links[node] {
                let go = match f.to {
                    Targets::All => true,
                    Targets::AllExcept(c) => c != conn,
                    Targets::One(c) => c == conn,
                };
                if go {
                    *self.sent.entry(class.name()).or_default() += 1;
                    // The peer's end of this link.
                    let back = self.links[peer].iter().find(|(p, _)| *p == node).unwrap().1;
                    q.push_back(InFlight {
                        to: peer,
                        conn: back,
                        id,
                        class,
                        ttl: f.ttl,
                        hops: f.hops,
                    });
                }
            }
        }

        fn run(
            &mut self,
            q: &mut VecDeque<InFlight>,
            now: Instant,
            mut reply: impl FnMut(usize, &InFlight) -> Option<Class>,
        ) {
            while let Some(m) = q.pop_front() {
                let d = self.routers[m.to].route(m.conn, m.id, m.class, m.ttl, m.hops, now);
                self.apply(m.to, d, m.id, m.class, q);
                if let Decision::Accept { deliver: true, .. } = d {
                    if let Some(class) = reply(m.to, &m) {
                        // Reply with a TTL that covers the way back.
                        let d = Decision::Accept {
                            deliver: false,
                            forward: Some(Forward {
                                to: Targets::One(m.conn),
                                ttl: m.hops + 2,
                                hops: 0,
                            }),
                        };
                        self.apply(m.to, d, m.id, class, q);
                    }
                }
            }
        }

        fn search(
            &mut self,
            from: usize,
            id: Guid,
            ttl: u8,
            now: Instant,
            answer: impl Fn(usize) -> bool,
        ) {
            let mut q = VecDeque::new();
            let d = self.routers[from].originate(id, Class::Search, ttl, now);
            self.apply(from, d, id, Class::Search, &mut q);
            self.run(&mut q, now, |node, m| {
                (m.class == Class::Search && answer(node)).then_some(Class::SearchReply {
                    responder: Guid([node as u8 + 1; 16]),
                })
            });
        }

        /// Shortest-path distances from `from`.
        fn distances(&self, from: usize) -> Vec<Option<usize>> {
            let mut dist = vec![None; self.links.len()];
            dist[from] = Some(0);
            let mut q = VecDeque::from([from]);
            while let Some(n) = q.pop_front() {
                for &(p, _) in &self.links[n] {
                    if dist[p].is_none() {
                        dist[p] = Some(dist[n].unwrap() + 1);
                        q.push_back(p);
                    }
                }
            }
            dist
        }
    }

    #[test]
    fn chain_reaches_as_far_as_ttl_allows() {
        let now = Instant::now();
        let edges: Vec<_> = (0..7).map(|i| (i, i + 1)).collect();
        for ttl in 1..=7u8 {
            let mut net = Net::new(8, &edges);
            net.search(0, g(100 + ttl), ttl, now, |_| false);
            for node in 1..8 {
                let reached = !net.delivered[node].is_empty();
                assert_eq!(reached, node <= ttl as usize, "ttl {ttl} node {node}");
            }
        }
    }

    /// A deterministic random graph: a spanning tree plus extra edges.
    fn random_graph(n: usize, extra: usize, mut seed: u64) -> Vec<(usize, usize)> {
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut edges = Vec::new();
        let mut have = HashSet::new();
        for i in 1..n {
            let j = (next() % i as u64) as usize;
            edges.push((j, i));
            have.insert((j, i));
        }
        while edges.len() < n - 1 + extra {
            let (x, y) = ((next() % n as u64) as usize, (next() % n as u64) as usize);
            let e = (x.min(y), x.max(y));
            if x != y && have.insert(e) {
                edges.push(e);
            }
        }
        edges
    }

    #[test]
    fn mesh_flood_sends_exactly_what_the_graph_implies() {
        let now = Instant::now();
        for seed in 1..=5u64 {
            let n = 60;
            let edges = random_graph(n, 90, seed);
            let mut net = Net::new(n, &edges);
            let ttl = 7u8;
            let origin = 0;
            let dist = net.distances(origin);
            // Every node answers: each hit must come back to the origin only.
            net.search(origin, g(200), ttl, now, |node| node != origin);
            let mut expected = net.links[origin].len() as u64;
            for (v, d) in dist.iter().enumerate() {
                if v == origin {
                    continue;
                }
                let Some(d) = *d else { continue };
                // A node at distance d receives TTL ttl-d+1; it forwards while >1.
                if d <= ttl as usize {
                    assert_eq!(net.delivered[v], ["search"], "seed {seed} node {v}");
                    if ttl as usize - d + 1 > 1 {
                        expected += net.links[v].len() as u64 - 1;
                    }
                } else {
                    assert!(net.delivered[v].is_empty());
                }
            }
            assert_eq!(net.sent["search"], expected, "seed {seed}");
            let reached =
                (0..n).filter(|&v| v != origin && dist[v].is_some_and(|d| d <= ttl as usize));
            let answers = reached.count();
            // Every hit arrives at the origin, and nowhere else is one delivered.
            assert_eq!(
                net.delivered[origin]
                    .iter()
                    .filter(|c| **c == "search-reply")
                    .count(),
                answers
            );
            for v in (0..n).filter(|&v| v != origin) {
                assert!(!net.delivered[v].contains(&"search-reply"));
            }
        }
    }

    #[test]
    fn push_reaches_the_responder() {
        let now = Instant::now();
        let n = 30;
        let edges = random_graph(n, 20, 42);
        let mut net = Net::new(n, &edges);
        let responder = 17;
        net.search(0, g(1), 7, now, |node| node == responder);
        assert_eq!(net.delivered[0], ["search-reply"]);
        // The origin pushes to the responder's identity.
        let target = Guid([responder as u8 + 1; 16]);
        let mut q = VecDeque::new();
        let class = Class::Directed { target };
        let d = Decision::Accept {
            deliver: false,
            forward: Some(Forward {
                to: Targets::One(
                    net.links[0]
                        .iter()
                        .map(|l| l.1)
                        .find(|c| net.routers[0].responders.get(&target, now) == Some(c))
                        .expect("origin learned the route"),
                ),
                ttl: 7,
                hops: 0,
            }),
        };
        net.apply(0, d, g(2), class, &mut q);
        net.run(&mut q, now, |_, _| None);
        for v in 0..n {
            let got = net.delivered[v].contains(&"directed");
            assert_eq!(got, v == responder, "node {v}");
        }
    }
}
