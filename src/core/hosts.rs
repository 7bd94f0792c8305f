//! The host cache: addresses of other nodes, which of them to dial next, and
//! back-off for the ones that failed. No I/O but [`HostCache::save`] and
//! [`HostCache::load`], which the shell calls at start and shutdown.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::addr::Scope;

// Deployed servents ban an address that connects to them more than twice a
// minute (gtk-gnutella does), so no host is dialed again within 30 seconds.

/// First retry delay after a failed dial; doubled per failure.
const BACKOFF_START: Duration = Duration::from_secs(30);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30 * 60);
/// Delay before redialing a host whose connection ended.
const AFTER_CLOSE: Duration = Duration::from_secs(30);
/// Delay before redialing a host that refused us for being busy ("too many
/// connections", 503 without more): its slots rarely free up within minutes.
const AFTER_BUSY: Duration = Duration::from_secs(5 * 60);
/// Delay before redialing a host that refused us for what we are, or for what
/// it is (a leaf, "Not Good Ultrapeer", a policy 403): that does not change soon.
const AFTER_POLICY: Duration = Duration::from_secs(60 * 60);

/// Why a host turned us away in its handshake, as far as the shell could tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It is a leaf (it says `X-Ultrapeer: False`, or "leaf" in its reason):
    /// leaves take no connections from other nodes, so it is not dialed again.
    Leaf,
    /// Busy (503 "too many connections" and the like): a long pause.
    Busy,
    /// Refused by its policy (403, LimeWire's "Not Good Ultrapeer", a vendor or
    /// slot rule): a longer pause.
    Policy,
}

impl Refusal {
    /// Classifies a refusal from its status code, reason and the refusing
    /// side's `X-Ultrapeer`.
    pub fn of(code: u16, reason: &str, ultrapeer: Option<bool>) -> Refusal {
        let reason = reason.to_ascii_lowercase();
        // "I am a shielded leaf node", "Shielded leaf" (gtk-gnutella), "We're
        // Leaves" (LimeWire, with no headers at all).
        if ultrapeer == Some(false) || reason.contains("leaf") || reason.contains("leaves") {
            Refusal::Leaf
        } else if code == 503
            && (reason.contains("too many")
                || reason.contains("busy")
                || reason.contains("full")
                || reason.contains("slots")
                || reason.is_empty()
                || reason.contains("shutdown"))
        {
            Refusal::Busy
        } else {
            Refusal::Policy
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    Dialing,
    Connected,
}

#[derive(Clone, Debug)]
struct Entry {
    /// When we last heard of the host (wall clock, so it survives restarts).
    seen: SystemTime,
    state: State,
    failures: u32,
    retry_at: Option<Instant>,
    /// It said it is an ultrapeer when we last spoke to it.
    ultrapeer: bool,
    /// It said it is a leaf: never dialed, never handed out.
    leaf: bool,
}

/// Known hosts, bounded in number.
#[derive(Debug)]
pub struct HostCache {
    hosts: HashMap<SocketAddr, Entry>,
    capacity: usize,
    /// Our own listening address: never dialed.
    me: Option<SocketAddr>,
    /// Our ends of outgoing connections, which peers may hand back to us: never
    /// learned (the most recent few).
    also_me: std::collections::VecDeque<SocketAddr>,
    backoff_start: Duration,
    after_close: Duration,
    /// Which addresses may be learned (reserved ranges only on a local mesh).
    scope: Scope,
}

fn is_me(me: Option<SocketAddr>, addr: &SocketAddr) -> bool {
    me.is_some_and(|me| {
        me == *addr
            || (me.ip().is_unspecified() && me.port() == addr.port() && addr.ip().is_loopback())
    })
}

impl HostCache {
    /// A cache of at most `capacity` hosts.
    pub fn new(capacity: usize) -> HostCache {
        HostCache {
            hosts: HashMap::new(),
            capacity: capacity.max(1),
            me: None,
            also_me: std::collections::VecDeque::new(),
            backoff_start: BACKOFF_START,
            after_close: AFTER_CLOSE,
            scope: Scope::Local,
        }
    }

    /// Which addresses the cache takes.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Which addresses may be learned from now on (a cache starts in
    /// [`Scope::Local`], taking any address that names a host).
    pub fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
        self.hosts.retain(|a, _| scope.allows(*a));
    }

    /// Shorter pauses before redialing than the deployed network tolerates; for
    /// meshes of our own nodes (tests) only.
    pub fn set_redial_pause(&mut self, pause: Duration) {
        self.backoff_start = pause;
        self.after_close = pause;
    }

    /// Records whether `addr` is an ultrapeer (learning it if new).
    pub fn mark_ultrapeer(&mut self, addr: SocketAddr, ultrapeer: bool, seen: SystemTime) {
        self.learn(addr, seen);
        if let Some(e) = self.hosts.get_mut(&addr) {
            e.ultrapeer = ultrapeer;
            e.leaf = !ultrapeer;
        }
    }

    /// `addr` turned us away in its handshake: no redial before a pause that
    /// depends on why (a leaf is not dialed again at all).
    pub fn refused(&mut self, addr: SocketAddr, why: Refusal, now: Instant) {
        let Some(e) = self.hosts.get_mut(&addr) else {
            return;
        };
        e.state = State::Idle;
        e.failures = e.failures.saturating_add(1);
        let pause = match why {
            Refusal::Leaf => {
                e.leaf = true;
                e.ultrapeer = false;
                AFTER_POLICY
            }
            Refusal::Busy => AFTER_BUSY.max(self.backoff_start),
            Refusal::Policy => AFTER_POLICY,
        };
        e.retry_at = Some(now + pause);
    }

    /// Up to `n` known ultrapeers, for `X-Try-Ultrapeers`, most recently heard
    /// of first.
    pub fn sample_ultrapeers(&self, n: usize) -> Vec<SocketAddr> {
        self.newest(n, |e| e.ultrapeer)
    }

    /// Up to `n` hosts whose entry passes `keep`, most recently heard of first.
    fn newest(&self, n: usize, keep: impl Fn(&Entry) -> bool) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.hosts.iter().filter(|(_, e)| keep(e)).collect();
        v.sort_by_key(|(a, e)| (std::cmp::Reverse(e.seen), **a));
        v.into_iter().take(n).map(|(a, _)| *a).collect()
    }

    /// Our own listening address, which is never offered for dialing. When it is
    /// the unspecified address (listening everywhere), any loopback address with
    /// our port counts as us too.
    pub fn set_me(&mut self, me: SocketAddr) {
        self.me = Some(me);
        self.hosts.retain(|a, _| !is_me(Some(me), a));
    }

    /// `addr` is our end of an outgoing connection: never learned (and
    /// forgotten if it was).
    pub fn also_me(&mut self, addr: SocketAddr) {
        if self.also_me.len() == 64 {
            self.also_me.pop_front();
        }
        self.also_me.push_back(addr);
        self.hosts.remove(&addr);
    }

    /// Marks a known host as being dialed (a configured peer dialed at start).
    /// The user named it, so it is kept whatever its scope (a `--peer` on the
    /// local network, from a node listening everywhere).
    pub fn begin_dial(&mut self, addr: SocketAddr, seen: SystemTime) {
        self.insert(addr, seen);
        if let Some(e) = self.hosts.get_mut(&addr) {
            e.state = State::Dialing;
        }
    }

    /// Number of hosts known.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether no host is known.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Records that `addr` was heard of at `seen`. When full, the host heard of
    /// least recently (and not connected) makes room.
    pub fn learn(&mut self, addr: SocketAddr, seen: SystemTime) {
        if !self.scope.allows(addr) {
            return;
        }
        self.insert(addr, seen);
    }

    /// [`HostCache::learn`] without the scope check.
    fn insert(&mut self, addr: SocketAddr, seen: SystemTime) {
        if addr.port() == 0
            || addr.ip().is_unspecified()
            || is_me(self.me, &addr)
            || self.also_me.contains(&addr)
        {
            return;
        }
        if let Some(e) = self.hosts.get_mut(&addr) {
            e.seen = e.seen.max(seen);
            return;
        }
        if self.hosts.len() >= self.capacity {
            let oldest = self
                .hosts
                .iter()
                .filter(|(_, e)| e.state == State::Idle)
                .min_by_key(|(_, e)| e.seen)
                .map(|(a, _)| *a);
            match oldest {
                Some(a) => {
                    self.hosts.remove(&a);
                }
                None => return,
            }
        }
        self.hosts.insert(
            addr,
            Entry {
                seen,
                state: State::Idle,
                failures: 0,
                retry_at: None,
                ultrapeer: false,
                leaf: false,
            },
        );
    }

    /// The host to dial next: idle, not backing off, known ultrapeers first, then
    /// the one heard of most recently. It
    /// is marked as being dialed until [`HostCache::dialed`] reports the outcome.
    pub fn next_to_dial(&mut self, now: Instant) -> Option<SocketAddr> {
        let (addr, e) = self
            .hosts
            .iter_mut()
            .filter(|(_, e)| {
                e.state == State::Idle && !e.leaf && e.retry_at.is_none_or(|t| t <= now)
            })
            .max_by_key(|(a, e)| (e.ultrapeer, e.seen, **a))?;
        e.state = State::Dialing;
        Some(*addr)
    }

    /// The outcome of dialing `addr`.
    pub fn dialed(&mut self, addr: SocketAddr, connected: bool, now: Instant) {
        self.dialed_with(addr, connected, 1, now);
    }

    /// The outcome of dialing `addr` with `connections` TCP connections (2 when a
    /// 0.6 attempt was followed by a 0.4 one). A failure waits that many times
    /// longer, so a host never sees more than two of our connections a minute.
    pub fn dialed_with(
        &mut self,
        addr: SocketAddr,
        connected: bool,
        connections: u32,
        now: Instant,
    ) {
        let Some(e) = self.hosts.get_mut(&addr) else {
            return;
        };
        if connected {
            e.state = State::Connected;
            e.failures = 0;
            e.retry_at = None;
        } else {
            e.state = State::Idle;
            e.failures = e.failures.saturating_add(1);
            let delay = self
                .backoff_start
                .saturating_mul(1 << e.failures.min(16).saturating_sub(1))
                .saturating_mul(connections.max(1))
                .min(BACKOFF_MAX);
            e.retry_at = Some(now + delay);
        }
    }

    /// `addr` is connected (it dialed us and told us where it listens).
    pub fn connected(&mut self, addr: SocketAddr, seen: SystemTime) {
        self.learn(addr, seen);
        if let Some(e) = self.hosts.get_mut(&addr) {
            e.state = State::Connected;
        }
    }

    /// The connection to `addr` has ended; it may be dialed again after a pause.
    pub fn closed(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(e) = self.hosts.get_mut(&addr) {
            e.state = State::Idle;
            e.retry_at = Some(now + self.after_close);
        }
    }

    /// Up to `n` hosts for an `X-Try` header, most recently heard of first:
    /// never a known leaf (leaves take no connections from other nodes), and
    /// never one whose last dial failed.
    pub fn sample(&self, n: usize) -> Vec<SocketAddr> {
        self.newest(n, |e| !e.leaf && e.failures == 0)
    }

    /// Records `addr` as heard of in a Pong that did not come from a leaf: it
    /// takes connections, so a leaf mark it had (from an earlier role) goes.
    pub fn learn_reachable(&mut self, addr: SocketAddr, seen: SystemTime) {
        self.learn(addr, seen);
        if let Some(e) = self.hosts.get_mut(&addr) {
            e.leaf = false;
        }
    }

    /// Whether some host is known to be an ultrapeer (without sorting them, as
    /// [`HostCache::sample_ultrapeers`] does).
    pub fn knows_ultrapeer(&self) -> bool {
        self.hosts.values().any(|e| e.ultrapeer)
    }

    /// Writes the cache as lines `ip:port seconds-since-epoch`, atomically.
    pub fn save(&self, file: &Path) -> io::Result<()> {
        self.snapshot().save(file)
    }

    /// What [`HostCache::save`] writes, taken now: to be written later, away
    /// from whatever holds the cache (the node's core lock).
    pub fn snapshot(&self) -> HostsFile {
        HostsFile(
            self.newest(self.hosts.len(), |_| true)
                .into_iter()
                .map(|addr| {
                    let seen = self.hosts[&addr]
                        .seen
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    (addr, seen)
                })
                .collect(),
        )
    }

    /// Every known host, most recently heard of first.
    pub fn list(&self) -> Vec<HostInfo> {
        self.newest(self.hosts.len(), |_| true)
            .into_iter()
            .map(|addr| {
                let e = &self.hosts[&addr];
                HostInfo {
                    addr,
                    seen: e.seen,
                    ultrapeer: e.ultrapeer,
                    leaf: e.leaf,
                    failures: e.failures,
                }
            })
            .collect()
    }

    /// Adds the hosts of a cache file; a missing file adds nothing, bad lines are
    /// skipped.
    pub fn load(&mut self, file: &Path) -> io::Result<()> {
        let f = match std::fs::File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for line in io::BufReader::new(f).lines() {
            let line = line?;
            let mut parts = line.split_whitespace();
            let (Some(Ok(addr)), Some(Ok(secs))) = (
                parts.next().map(str::parse::<SocketAddr>),
                parts.next().map(str::parse::<u64>),
            ) else {
                continue;
            };
            self.learn(addr, UNIX_EPOCH + Duration::from_secs(secs));
        }
        Ok(())
    }
}

/// A known host, as [`HostCache::list`] tells it.
#[derive(Clone, Debug)]
pub struct HostInfo {
    pub addr: SocketAddr,
    /// When we last heard of it.
    pub seen: SystemTime,
    pub ultrapeer: bool,
    pub leaf: bool,
    /// Dials that failed in a row.
    pub failures: u32,
}

/// The host cache's lines, most recently heard of first.
pub struct HostsFile(Vec<(SocketAddr, u64)>);

impl HostsFile {
    /// Writes them atomically (a temporary file, synced, then renamed).
    pub fn save(&self, file: &Path) -> io::Result<()> {
        let tmp = file.with_extension("tmp");
        {
            let mut out = io::BufWriter::new(std::fs::File::create(&tmp)?);
            for (addr, seen) in &self.0 {
                writeln!(out, "{addr} {seen}")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_failed_dial_of_two_connections_waits_twice_as_long() {
        let now = Instant::now();
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let mut c = HostCache::new(10);
        c.learn(a("1.1.1.1:1"), t);
        c.learn(a("2.2.2.2:2"), t);
        c.dialed_with(a("1.1.1.1:1"), false, 1, now);
        c.dialed_with(a("2.2.2.2:2"), false, 2, now);
        let after = |s| now + Duration::from_secs(s);
        assert_eq!(c.next_to_dial(after(29)), None);
        assert_eq!(c.next_to_dial(after(30)), Some(a("1.1.1.1:1")));
        assert_eq!(c.next_to_dial(after(59)), None, "a 0.6 and a 0.4 attempt");
        assert_eq!(c.next_to_dial(after(60)), Some(a("2.2.2.2:2")));
    }

    #[test]
    fn dial_order_backoff_and_states() {
        let now = Instant::now();
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let mut c = HostCache::new(10);
        c.set_me(a("127.0.0.1:9"));
        c.learn(a("127.0.0.1:9"), t);
        c.learn(a("0.0.0.0:1"), t);
        c.learn(a("1.2.3.4:0"), t);
        assert!(
            c.is_empty(),
            "ourselves and undialable addresses are ignored"
        );
        let mut any = HostCache::new(10);
        any.set_me(a("0.0.0.0:9"));
        any.learn(a("127.0.0.1:9"), t);
        any.learn(a("127.0.0.1:10"), t);
        assert_eq!(any.sample(5), [a("127.0.0.1:10")]);
        c.learn(a("1.1.1.1:1"), t);
        c.learn(a("2.2.2.2:2"), t + Duration::from_secs(5));
        assert_eq!(
            c.next_to_dial(now),
            Some(a("2.2.2.2:2")),
            "most recent first"
        );
        assert_eq!(c.next_to_dial(now), Some(a("1.1.1.1:1")));
        assert_eq!(c.next_to_dial(now), None, "both being dialed");
        c.dialed(a("2.2.2.2:2"), false, now);
        c.dialed(a("1.1.1.1:1"), true, now);
        assert_eq!(c.next_to_dial(now), None, "backing off");
        assert_eq!(c.next_to_dial(now + BACKOFF_START), Some(a("2.2.2.2:2")));
        c.dialed(a("2.2.2.2:2"), false, now);
        assert_eq!(c.next_to_dial(now + BACKOFF_START), None, "backoff doubled");
        assert_eq!(
            c.next_to_dial(now + 2 * BACKOFF_START),
            Some(a("2.2.2.2:2"))
        );
        c.closed(a("1.1.1.1:1"), now);
        assert_eq!(c.next_to_dial(now + AFTER_CLOSE), Some(a("1.1.1.1:1")));
    }

    #[test]
    fn bounded_and_persistent() {
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let mut c = HostCache::new(2);
        c.learn(a("1.1.1.1:1"), t);
        c.learn(a("2.2.2.2:2"), t + Duration::from_secs(1));
        c.learn(a("3.3.3.3:3"), t + Duration::from_secs(2));
        assert_eq!(c.len(), 2);
        assert_eq!(c.sample(5), [a("3.3.3.3:3"), a("2.2.2.2:2")]);

        let dir = std::env::temp_dir().join(format!("servent-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hosts.txt");
        c.save(&file).unwrap();
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("junk\n9.9.9.9:9 notanumber\n");
        std::fs::write(&file, text).unwrap();
        let mut back = HostCache::new(10);
        back.load(&file).unwrap();
        assert_eq!(back.sample(5), c.sample(5));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refusals_back_off_by_reason_and_leaves_are_neither_dialed_nor_offered() {
        let now = Instant::now();
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let mut c = HostCache::new(10);
        let (leaf, busy, picky) = (a("1.1.1.1:1"), a("2.2.2.2:2"), a("3.3.3.3:3"));
        for h in [leaf, busy, picky] {
            c.learn(h, t);
        }
        // As LimeWire and gtk-gnutella leaves, busy and picky hosts answer.
        assert_eq!(
            Refusal::of(503, "I am a shielded leaf node", Some(false)),
            Refusal::Leaf
        );
        assert_eq!(Refusal::of(503, "Shielded leaf", None), Refusal::Leaf);
        assert_eq!(Refusal::of(503, "We're Leaves", None), Refusal::Leaf);
        assert_eq!(
            Refusal::of(503, "No Ultrapeer Slots", Some(true)),
            Refusal::Busy
        );
        assert_eq!(
            Refusal::of(503, "Too many connections", Some(true)),
            Refusal::Busy
        );
        assert_eq!(
            Refusal::of(503, "Not Good Ultrapeer", Some(true)),
            Refusal::Policy
        );
        assert_eq!(
            Refusal::of(403, "Compressed connection preferred", None),
            Refusal::Policy
        );
        for _ in [leaf, busy, picky] {
            assert!(c.next_to_dial(now).is_some());
        }
        c.refused(leaf, Refusal::Leaf, now);
        c.refused(busy, Refusal::Busy, now);
        c.refused(picky, Refusal::Policy, now);
        assert!(!c.sample(10).contains(&leaf), "a leaf is not handed out");
        assert_eq!(c.next_to_dial(now + AFTER_CLOSE), None, "not every 30 s");
        assert_eq!(c.next_to_dial(now + AFTER_BUSY), Some(busy));
        assert_eq!(c.next_to_dial(now + AFTER_POLICY), Some(picky));
        assert_eq!(
            c.next_to_dial(now + 10 * AFTER_POLICY),
            None,
            "a leaf never"
        );
        // A leaf that told us its role when it connected is not dialed either.
        let other = a("4.4.4.4:4");
        c.mark_ultrapeer(other, false, t);
        assert!(!c.knows_ultrapeer(), "a leaf is no ultrapeer");
        assert_eq!(c.next_to_dial(now + 10 * AFTER_POLICY), None);
        assert!(
            c.sample(10).is_empty(),
            "failed hosts and leaves are not offered"
        );
    }

    #[test]
    fn a_configured_peer_is_kept_whatever_its_scope() {
        let t = UNIX_EPOCH + Duration::from_secs(1000);
        let mut c = HostCache::new(10);
        c.set_scope(Scope::Internet);
        c.learn(a("192.168.1.5:6346"), t);
        assert!(
            c.is_empty(),
            "a private address is not learned from the network"
        );
        c.begin_dial(a("192.168.1.5:6346"), t);
        assert_eq!(c.len(), 1, "but one the user named is dialed and kept");
    }
}
