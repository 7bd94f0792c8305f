//! Whether the world can reach us, decided from what we observe (no I/O): our
//! external address, by agreement of several peers (`Remote-IP` in
//! handshakes, `IP` in pongs answering our UDP pings); whether we accept TCP
//! connections (an incoming connection from another host says yes;
//! connect-back requests that bring none say no); whether we receive
//! solicited UDP (a pong to one of our pings) and unsolicited UDP (a
//! connect-back ping, or a ping from a host we never sent to).
//!
//! Each property is a [`Check`]: unknown until tested, yes while evidence is
//! fresh, no when a round of requests brought none in time. A yes that has
//! grown stale is tested again (a round), and only a failed round turns it
//! into a no. See `protocol-spec/reachability.md`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::addr::{Scope, is_routable};
use super::external::ExternalIp;
use crate::wire::Guid;

/// What a check has found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not tested yet (or not testable).
    Unknown,
    Yes,
    No,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Yes => "yes",
            Verdict::No => "no",
        }
    }
}

/// The timers of one check.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// Evidence older than this is stale: test again.
    pub fresh: Duration,
    /// A round of requests that brings no evidence within this decides no.
    pub wait: Duration,
    /// After a no, test again this long later.
    pub retry: Duration,
}

/// One reachability property.
#[derive(Clone, Debug)]
pub struct Check {
    verdict: Verdict,
    timers: Timers,
    /// When evidence last came.
    last: Option<Instant>,
    /// When the current round of requests began.
    round: Option<Instant>,
    /// When the last no was decided.
    decided: Option<Instant>,
    /// Evidence seen, rounds that failed.
    pub evidence: u64,
    pub failed_rounds: u64,
}

impl Check {
    pub fn new(timers: Timers) -> Check {
        Check {
            verdict: Verdict::Unknown,
            timers,
            last: None,
            round: None,
            decided: None,
            evidence: 0,
            failed_rounds: 0,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Evidence came at `now`: yes.
    pub fn evidence(&mut self, now: Instant) {
        self.verdict = Verdict::Yes;
        self.last = Some(now);
        self.round = None;
        self.evidence += 1;
    }

    /// Whether a request should go to a peer met now: the property is not
    /// known to hold, or its evidence is stale.
    pub fn wanted(&self, now: Instant) -> bool {
        match self.verdict {
            Verdict::Yes => self.stale(now),
            Verdict::Unknown | Verdict::No => true,
        }
    }

    fn stale(&self, now: Instant) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.timers.fresh)
    }

    /// A request went out at `now` (a round begins, if none is under way).
    pub fn asked(&mut self, now: Instant) {
        self.round.get_or_insert(now);
    }

    /// Time passes: a round that brought nothing in time decides no. Returns
    /// true when a new round should begin now (the engine then sends one
    /// request): stale evidence, or a no old enough to retry.
    pub fn tick(&mut self, now: Instant) -> bool {
        if let Some(r) = self.round {
            if now.saturating_duration_since(r) >= self.timers.wait {
                self.round = None;
                self.verdict = Verdict::No;
                self.decided = Some(now);
                self.failed_rounds += 1;
            }
            return false;
        }
        match self.verdict {
            Verdict::Yes => self.stale(now),
            Verdict::No => self
                .decided
                .is_none_or(|d| now.saturating_duration_since(d) >= self.timers.retry),
            // Unknown: rounds begin with the first link.
            Verdict::Unknown => false,
        }
    }

    /// Whether a round is under way.
    pub fn testing(&self) -> bool {
        self.round.is_some()
    }
}

/// TCP: a reachable node sees connections all the time; a test takes a
/// connect-back (seconds).
pub const TCP_TIMERS: Timers = Timers {
    fresh: Duration::from_secs(30 * 60),
    wait: Duration::from_secs(60),
    retry: Duration::from_secs(10 * 60),
};

/// Unsolicited UDP: gtk-gnutella re-checks after 2 minutes without it; a
/// round waits past gtk's one-ping-per-minute throttle, which may eat a
/// ping-back.
pub const UDP_TIMERS: Timers = Timers {
    fresh: Duration::from_secs(2 * 60),
    wait: Duration::from_secs(90),
    retry: Duration::from_secs(3 * 60),
};

/// Solicited UDP: any pong to our pings.
pub const SOLICITED_TIMERS: Timers = Timers {
    fresh: Duration::from_secs(10 * 60),
    wait: Duration::from_secs(60),
    retry: Duration::from_secs(5 * 60),
};

/// MUIDs of our requests awaiting a datagram, remembered this long.
const PENDING_FOR: Duration = Duration::from_secs(5 * 60);
/// At most this many of them (the oldest make room).
const MAX_PENDING: usize = 64;
/// Destinations of our datagrams remembered (a datagram from one of them may
/// come through a hole our own datagram opened in a NAT).
const MAX_SENT_TO: usize = 1024;
/// How long a NAT keeps such a hole open, at least as we count it.
const HOLE_FOR: Duration = Duration::from_secs(3 * 60);
/// Peers that agree on our address before we believe it.
pub const AGREE: usize = 2;
/// `IP` pings sent per window at most, and the window.
pub const IP_PINGS: usize = 4;
pub const IP_PING_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What a datagram we waited for was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A UDP ping of ours (solicited UDP, and maybe our address in `IP`).
    Ping,
    /// A connect-back we asked for (GTKG/7v2, LIME/8): its Ping reuses the MUID.
    PingBack,
}

/// The timers of the three checks.
#[derive(Clone, Copy, Debug)]
pub struct ReachTimers {
    pub tcp: Timers,
    pub udp: Timers,
    pub solicited: Timers,
}

impl Default for ReachTimers {
    fn default() -> Self {
        ReachTimers {
            tcp: TCP_TIMERS,
            udp: UDP_TIMERS,
            solicited: SOLICITED_TIMERS,
        }
    }
}

/// The reachability of this node.
#[derive(Debug)]
pub struct Reach {
    pub tcp: Check,
    pub udp: Check,
    pub solicited: Check,
    /// Our address, by agreement of peers.
    external: ExternalIp,
    /// Requests awaiting a datagram, by MUID.
    pending: HashMap<Guid, (Pending, IpAddr, Instant)>,
    /// Where our datagrams went lately, and when.
    sent_to: HashMap<IpAddr, Instant>,
    /// The latest `now` seen (for the shell's calls that carry none).
    clock: Option<Instant>,
    /// `IP` pings sent in the current window, and when it began.
    ip_pings: (usize, Option<Instant>),
    scope: Scope,
    pub stats: ReachStats,
}

/// Counters of reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReachStats {
    /// Connect-back requests we sent, by kind (`bear7`, `gtkg7v1`, `lime7`, `lime8`).
    pub asked: std::collections::BTreeMap<&'static str, u64>,
    /// Connect-back requests we answered, by kind (`bear7`, `gtkg7v1`,
    /// `gtkg7v2`, `lime7`, `lime8`).
    pub answered: std::collections::BTreeMap<&'static str, u64>,
    /// Connect-back requests not answered, by reason.
    pub refused: std::collections::BTreeMap<&'static str, u64>,
    /// `IP` pings sent, and answers that voted for our address.
    pub ip_pings: u64,
    pub ip_votes: u64,
    /// Verdict of each check (for the status API and /metrics).
    pub tcp: Option<&'static str>,
    pub udp: Option<&'static str>,
    pub solicited: Option<&'static str>,
    /// Evidence seen per check.
    pub tcp_evidence: u64,
    pub udp_evidence: u64,
    pub solicited_evidence: u64,
    /// Our external address, when peers agree on it.
    pub external: Option<IpAddr>,
}

impl ReachStats {
    pub fn bump(map: &mut std::collections::BTreeMap<&'static str, u64>, key: &'static str) {
        *map.entry(key).or_default() += 1;
    }
}

impl Reach {
    /// Nothing known yet. In `Scope::Internet` only routable peers count as
    /// evidence (a host on our own LAN proves nothing about the Internet); on
    /// a local mesh every host does.
    pub fn new(scope: Scope, timers: ReachTimers) -> Reach {
        Reach {
            tcp: Check::new(timers.tcp),
            udp: Check::new(timers.udp),
            solicited: Check::new(timers.solicited),
            external: ExternalIp::new(AGREE),
            pending: HashMap::new(),
            sent_to: HashMap::new(),
            clock: None,
            ip_pings: (0, None),
            scope,
            stats: ReachStats::default(),
        }
    }

    /// The time of the event being handled (set by the engine for every
    /// event; calls without a `now` of their own use it).
    pub fn set_clock(&mut self, now: Instant) {
        self.clock = Some(now);
    }

    pub fn now(&self) -> Option<Instant> {
        self.clock
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn counts(&self, ip: IpAddr) -> bool {
        match self.scope {
            Scope::Internet => is_routable(ip),
            Scope::Local => !ip.is_unspecified(),
        }
    }

    /// A peer said where it sees us (`Remote-IP`, or `IP` in a pong). Every
    /// peer votes, a LAN neighbour too: it sees the address it reaches us at,
    /// and the majority decides.
    pub fn vote(&mut self, voter: IpAddr, said: IpAddr) {
        self.external.vote(voter, said);
    }

    /// Our external address, once enough peers agree.
    pub fn external(&self) -> Option<IpAddr> {
        self.external.agreed()
    }

    /// A TCP connection came in from `from` to our `local` address: from
    /// another host, it proves we accept connections. On a local mesh every
    /// connection counts (its nodes share an address: one machine's loopback).
    pub fn tcp_inbound(&mut self, from: IpAddr, local: IpAddr, now: Instant) {
        self.clock = Some(now);
        let counts = match self.scope {
            Scope::Internet => from != local && is_routable(from),
            Scope::Local => true,
        };
        if counts {
            self.tcp.evidence(now);
        }
    }

    /// We sent a datagram to `to` (a reply from it is solicited).
    pub fn sent_to(&mut self, to: IpAddr) {
        let Some(now) = self.clock else { return };
        if self.sent_to.len() >= MAX_SENT_TO && !self.sent_to.contains_key(&to) {
            self.sent_to
                .retain(|_, t| now.saturating_duration_since(*t) < HOLE_FOR);
            if self.sent_to.len() >= MAX_SENT_TO {
                // All recent: the oldest goes.
                if let Some(old) = self
                    .sent_to
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(k, _)| *k)
                {
                    self.sent_to.remove(&old);
                }
            }
        }
        self.sent_to.insert(to, now);
    }

    fn hole_to(&self, ip: IpAddr, now: Instant) -> bool {
        self.sent_to
            .get(&ip)
            .is_some_and(|t| now.saturating_duration_since(*t) < HOLE_FOR)
    }

    /// We wait for a datagram with MUID `id` from `from`.
    pub fn expect(&mut self, id: Guid, kind: Pending, from: IpAddr, now: Instant) {
        self.clock = Some(now);
        if self.pending.len() >= MAX_PENDING {
            self.pending
                .retain(|_, (_, _, t)| now.saturating_duration_since(*t) < PENDING_FOR);
            if self.pending.len() >= MAX_PENDING {
                if let Some(old) = self
                    .pending
                    .iter()
                    .min_by_key(|(_, (_, _, t))| *t)
                    .map(|(k, _)| *k)
                {
                    self.pending.remove(&old);
                }
            }
        }
        self.pending.insert(id, (kind, from, now));
    }

    /// A UDP Ping came from `from` with MUID `id` (`me`: our servent GUID).
    /// Returns true when it was a connect-back ping we asked for (it needs no
    /// answer then).
    pub fn ping_in(&mut self, from: IpAddr, id: Guid, me: Guid, now: Instant) -> bool {
        self.clock = Some(now);
        let asked = id == me
            || matches!(self.pending.get(&id), Some((Pending::PingBack, _, _)))
                && self.pending.remove(&id).is_some();
        if asked {
            // As gtk-gnutella counts it: a ping-back proves unsolicited UDP
            // (the engine does not ping a peer it asks for one, so no hole
            // of ours lets it through a port-restricted NAT).
            self.solicited.evidence(now);
            self.udp.evidence(now);
            return true;
        }
        // Any other ping from a host we never sent to came unsolicited.
        if self.counts(from) && !self.hole_to(from, now) {
            self.udp.evidence(now);
        }
        false
    }

    /// A UDP Pong came from `from` with MUID `id`: one answering our ping is
    /// solicited UDP; true when it was (the caller then reads its `IP`).
    pub fn pong_in(&mut self, from: IpAddr, id: Guid, now: Instant) -> bool {
        self.clock = Some(now);
        match self.pending.get(&id) {
            Some((Pending::Ping, to, _)) if *to == from => {
                self.pending.remove(&id);
                self.solicited.evidence(now);
                true
            }
            _ => false,
        }
    }

    /// Whether another `IP` ping may go now (and if so, it is counted).
    pub fn ip_ping_allowed(&mut self, now: Instant) -> bool {
        self.clock = Some(now);
        let (n, since) = &mut self.ip_pings;
        if since.is_none_or(|s| now.saturating_duration_since(s) >= IP_PING_WINDOW) {
            *n = 0;
            *since = Some(now);
        }
        if *n >= IP_PINGS {
            return false;
        }
        *n += 1;
        self.stats.ip_pings += 1;
        true
    }

    /// Time passes: rounds time out. Returns which checks want a new round
    /// now: (tcp, udp).
    pub fn tick(&mut self, now: Instant) -> (bool, bool) {
        self.clock = Some(now);
        let tcp = self.tcp.tick(now);
        let udp = self.udp.tick(now);
        // Solicited UDP is tested by the pings themselves.
        let solicited = self.solicited.tick(now);
        let _ = solicited;
        (tcp, udp)
    }

    /// The counters, with the verdicts as of now.
    pub fn stats(&mut self) -> ReachStats {
        self.stats.tcp = Some(self.tcp.verdict().name());
        self.stats.udp = Some(self.udp.verdict().name());
        self.stats.solicited = Some(self.solicited.verdict().name());
        self.stats.tcp_evidence = self.tcp.evidence;
        self.stats.udp_evidence = self.udp.evidence;
        self.stats.solicited_evidence = self.solicited.evidence;
        self.stats.external = self.external();
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_check_goes_from_unknown_to_yes_or_no_and_is_retested() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut c = Check::new(TCP_TIMERS);
        assert_eq!(c.verdict(), Verdict::Unknown);
        assert!(c.wanted(t0));
        assert!(!c.tick(t0), "unknown: rounds start with links");
        c.asked(t0);
        assert!(c.testing());
        assert!(!c.tick(s(59)));
        assert_eq!(c.verdict(), Verdict::Unknown);
        c.tick(s(60));
        assert_eq!(c.verdict(), Verdict::No, "a round without evidence");
        assert!(!c.tick(s(61)), "retried only after a while");
        assert!(c.tick(s(60 + 600)));
        c.asked(s(660));
        c.evidence(s(661));
        assert_eq!(c.verdict(), Verdict::Yes);
        assert!(!c.wanted(s(662)));
        // Stale evidence starts a round, and stays yes while it runs.
        assert!(c.tick(s(661 + 1800)));
        c.asked(s(661 + 1800));
        assert_eq!(c.verdict(), Verdict::Yes);
        c.tick(s(661 + 1800 + 60));
        assert_eq!(c.verdict(), Verdict::No);
        assert_eq!(c.failed_rounds, 2);
    }

    #[test]
    fn tcp_evidence_needs_another_host() {
        let now = Instant::now();
        let mut r = Reach::new(Scope::Internet, ReachTimers::default());
        r.tcp_inbound(ip("12.0.0.9"), ip("12.0.0.9"), now);
        r.tcp_inbound(ip("192.168.1.5"), ip("12.0.0.9"), now);
        assert_eq!(r.tcp.verdict(), Verdict::Unknown);
        r.tcp_inbound(ip("11.0.0.4"), ip("12.0.0.9"), now);
        assert_eq!(r.tcp.verdict(), Verdict::Yes);
        // On a local mesh a neighbour on the LAN counts, and so does another
        // node on our own loopback address.
        let mut l = Reach::new(Scope::Local, ReachTimers::default());
        l.tcp_inbound(ip("127.0.0.2"), ip("127.0.0.1"), now);
        assert_eq!(l.tcp.verdict(), Verdict::Yes);
        let mut l = Reach::new(Scope::Local, ReachTimers::default());
        l.tcp_inbound(ip("127.0.0.1"), ip("127.0.0.1"), now);
        assert_eq!(l.tcp.verdict(), Verdict::Yes);
    }

    #[test]
    fn ping_backs_and_pongs_are_recognised_by_muid() {
        let now = Instant::now();
        let me = Guid([1; 16]);
        let peer = ip("11.0.0.4");
        let mut r = Reach::new(Scope::Internet, ReachTimers::default());
        // A ping from a host we pinged came through our hole: not unsolicited.
        r.expect(Guid([2; 16]), Pending::Ping, peer, now);
        r.sent_to(peer);
        assert!(!r.ping_in(peer, Guid([9; 16]), me, now));
        assert_eq!(r.udp.verdict(), Verdict::Unknown);
        // A pong with an unknown MUID, or from elsewhere, is not ours.
        assert!(!r.pong_in(peer, Guid([3; 16]), now));
        assert!(!r.pong_in(ip("11.0.0.5"), Guid([2; 16]), now));
        assert!(r.pong_in(peer, Guid([2; 16]), now));
        assert!(!r.pong_in(peer, Guid([2; 16]), now), "once");
        assert_eq!(r.solicited.verdict(), Verdict::Yes);
        // The GTKG/7v1 ping-back carries our GUID; from a host we never sent
        // to, it proves unsolicited UDP.
        assert!(r.ping_in(ip("11.0.0.6"), me, me, now));
        assert_eq!(r.udp.verdict(), Verdict::Yes);
        // A v2 / LIME/8 ping-back reuses the request's MUID.
        let mut r = Reach::new(Scope::Internet, ReachTimers::default());
        r.expect(Guid([4; 16]), Pending::PingBack, peer, now);
        assert!(r.ping_in(ip("11.0.0.7"), Guid([4; 16]), me, now));
        assert_eq!(r.udp.verdict(), Verdict::Yes);
        // A stranger's ping (a host-cache ping, say) counts too.
        let mut r = Reach::new(Scope::Internet, ReachTimers::default());
        assert!(!r.ping_in(ip("11.0.0.8"), Guid([5; 16]), me, now));
        assert_eq!(r.udp.verdict(), Verdict::Yes);
    }

    #[test]
    fn votes_from_both_sources_agree_and_are_bounded() {
        let now = Instant::now();
        let mut r = Reach::new(Scope::Internet, ReachTimers::default());
        r.vote(ip("11.0.0.1"), ip("12.0.0.77"));
        assert_eq!(r.external(), None);
        r.vote(ip("11.0.0.1"), ip("12.0.0.77"));
        assert_eq!(r.external(), None, "nor by saying it twice");
        r.vote(ip("11.0.0.2"), ip("12.0.0.77"));
        assert_eq!(r.external(), Some(ip("12.0.0.77")));
        let mut n = 0;
        while r.ip_ping_allowed(now) {
            n += 1;
        }
        assert_eq!(n, IP_PINGS);
        assert!(r.ip_ping_allowed(now + IP_PING_WINDOW));
        for i in 0..200u8 {
            r.expect(Guid([i; 16]), Pending::Ping, ip("11.0.0.1"), now);
            r.sent_to(IpAddr::from([203, 0, 113, i]));
        }
        assert!(r.pending.len() <= MAX_PENDING);
        assert!(r.sent_to.len() <= MAX_SENT_TO);
    }
}
