//! HTTP bootstrap decisions, both sides, without I/O (`now` passed in).
//!
//! * [`Caches`]: a client's list of HTTP host caches (gtk's GHC, LimeWire-style
//!   URLs, GWebCaches): which to ask next, how many per round, back-off after a
//!   failure, never sooner than the cache allows (`I|access|period`, and at most
//!   hourly on the Internet, as gtk-gnutella asks its GHC), which to tell our
//!   address and when. Hosts and cache URLs learned from answers pass the node's
//!   [`Scope`] first.
//! * [`Store`]: the host cache `servent webcache` serves: hosts and cache URLs
//!   learned from updates, bounded in number and aged, updates rate-limited per
//!   client, an answer for each request form.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::addr::Scope;
use crate::wire::webcache::{Answer, CacheUrl, Info, Kind, Line, Query};

/// Timers and bounds of a client's cache rotation.
#[derive(Clone, Debug)]
pub struct RotationConfig {
    /// Caches asked in one round.
    pub per_round: usize,
    /// Least time between two requests to one cache.
    pub min_interval: Duration,
    /// Pause after a cache's first failure; doubled per failure in a row.
    pub retry_start: Duration,
    /// Longest pause.
    pub retry_max: Duration,
    /// Caches learned from answers kept at most (configured ones always stay).
    pub max_learned: usize,
    /// A learned cache failing this often in a row is forgotten.
    pub drop_after: u32,
    /// Least time between two updates of one cache with our address.
    pub update_every: Duration,
    /// Uptime before the first update.
    pub first_update_after: Duration,
}

impl RotationConfig {
    /// For the Internet: what public caches expect. A cache is asked at most
    /// hourly (gtk-gnutella's GHC rule) and updated at most hourly, first
    /// after an hour of uptime (GWebCache 1.3.1).
    pub fn internet() -> RotationConfig {
        RotationConfig {
            per_round: 2,
            min_interval: Duration::from_secs(3600),
            retry_start: Duration::from_secs(3600),
            retry_max: Duration::from_secs(24 * 3600),
            max_learned: 20,
            drop_after: 3,
            update_every: Duration::from_secs(3600),
            first_update_after: Duration::from_secs(3600),
        }
    }

    /// For a local mesh, whose cache is one of its own (`servent webcache`):
    /// asked again after seconds, updated at once (still at most hourly).
    pub fn local() -> RotationConfig {
        RotationConfig {
            min_interval: Duration::from_secs(5),
            retry_start: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            first_update_after: Duration::ZERO,
            ..RotationConfig::internet()
        }
    }

    /// The rotation for a node of `scope`.
    pub fn for_scope(scope: Scope) -> RotationConfig {
        match scope {
            Scope::Internet => RotationConfig::internet(),
            Scope::Local => RotationConfig::local(),
        }
    }
}

/// What a client's rotation has done, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests for hosts handed out.
    pub asked: u64,
    /// Requests that got an answer without `ERROR`.
    pub answered: u64,
    /// Requests that failed: no connection, a bad status, a timeout, `ERROR`.
    pub failed: u64,
    /// Answers that named no host.
    pub empty: u64,
    /// Hosts passed on to the host cache.
    pub hosts: u64,
    /// Hosts dropped for naming an address outside the node's scope.
    pub hosts_out_of_scope: u64,
    /// Hosts beyond what one answer may give.
    pub hosts_over_limit: u64,
    /// Cache URLs learned.
    pub urls: u64,
    /// Cache URLs dropped: bad, out of scope, or over the bound.
    pub urls_dropped: u64,
    /// Lines of answers that were not understood.
    pub junk_lines: u64,
    /// Caches forgotten (`I|force|remove`, or failing again and again).
    pub removed: u64,
    /// Updates sent, and those the cache took.
    pub updates: u64,
    pub updates_ok: u64,
}

impl ClientStats {
    /// Every counter by name (for `/metrics`).
    pub fn counters(&self) -> [(&'static str, u64); 13] {
        [
            ("asked", self.asked),
            ("answered", self.answered),
            ("failed", self.failed),
            ("empty", self.empty),
            ("hosts", self.hosts),
            ("hosts_out_of_scope", self.hosts_out_of_scope),
            ("hosts_over_limit", self.hosts_over_limit),
            ("urls", self.urls),
            ("urls_dropped", self.urls_dropped),
            ("junk_lines", self.junk_lines),
            ("removed", self.removed),
            ("updates", self.updates),
            ("updates_ok", self.updates_ok),
        ]
    }
}

#[derive(Clone, Debug)]
struct Entry {
    url: CacheUrl,
    learned: bool,
    /// Not asked again before this.
    not_before: Option<Duration>,
    asked: Option<Duration>,
    failures: u32,
    /// It answered with hosts at least once.
    worked: bool,
    /// Not updated again before this.
    update_not_before: Option<Duration>,
    /// Order among equals, drawn at start.
    shuffle: u64,
}

/// Most hosts taken from one answer.
pub const MAX_HOSTS_PER_ANSWER: usize = 100;

/// A client's HTTP host caches and what it knows of each. Times are offsets
/// from a start the caller chooses (`now` is a `Duration` since then).
#[derive(Clone, Debug)]
pub struct Caches {
    entries: Vec<Entry>,
    config: RotationConfig,
    scope: Scope,
    stats: ClientStats,
    rng: u64,
}

impl Caches {
    /// `urls` (configured: never forgotten), asked in an order drawn from `seed`.
    pub fn new(urls: Vec<CacheUrl>, config: RotationConfig, scope: Scope, seed: u64) -> Caches {
        let mut c = Caches {
            entries: Vec::new(),
            config,
            scope,
            stats: ClientStats::default(),
            rng: seed | 1,
        };
        for u in urls {
            if !c.entries.iter().any(|e| e.url == u) {
                let shuffle = c.draw();
                c.entries.push(Entry::new(u, false, shuffle));
            }
        }
        c
    }

    fn draw(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// The caches known now, configured ones first.
    pub fn urls(&self) -> Vec<CacheUrl> {
        self.entries.iter().map(|e| e.url.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `url` was learned from an answer (its address must be checked
    /// against the scope once resolved), not configured.
    pub fn learned(&self, url: &CacheUrl) -> bool {
        self.entries.iter().any(|e| &e.url == url && e.learned)
    }

    /// The caches to ask now (at most `per_round`), each then not asked again
    /// for at least the least interval: first those that never failed, the
    /// least recently asked first, in the start order among equals.
    pub fn round(&mut self, now: Duration) -> Vec<CacheUrl> {
        let mut due: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].not_before.is_none_or(|t| t <= now))
            .collect();
        due.sort_by_key(|&i| {
            let e = &self.entries[i];
            (e.failures, e.asked, e.shuffle)
        });
        due.truncate(self.config.per_round);
        due.into_iter()
            .map(|i| {
                let e = &mut self.entries[i];
                e.asked = Some(now);
                e.not_before = Some(now + self.config.min_interval);
                self.stats.asked += 1;
                e.url.clone()
            })
            .collect()
    }

    /// How long until some cache may be asked (none: no cache is left).
    pub fn next_due(&self, now: Duration) -> Option<Duration> {
        self.entries
            .iter()
            .map(|e| {
                e.not_before
                    .map_or(Duration::ZERO, |t| t.saturating_sub(now))
            })
            .min()
    }

    fn index(&self, url: &CacheUrl) -> Option<usize> {
        self.entries.iter().position(|e| &e.url == url)
    }

    /// `url` could not be asked or answered badly: paused for longer each time
    /// in a row; a learned cache that keeps failing is forgotten.
    pub fn failed(&mut self, url: &CacheUrl, now: Duration) {
        self.stats.failed += 1;
        let Some(i) = self.index(url) else { return };
        let e = &mut self.entries[i];
        e.failures = e.failures.saturating_add(1);
        let pause = self
            .config
            .retry_start
            .saturating_mul(1 << (e.failures - 1).min(16))
            .min(self.config.retry_max)
            .max(self.config.min_interval);
        e.not_before = Some(now + pause);
        if e.learned && e.failures >= self.config.drop_after {
            self.entries.remove(i);
            self.stats.removed += 1;
        }
    }

    /// `url` answered `answer`: the hosts in it that may be learned (in the
    /// node's scope, at most [`MAX_HOSTS_PER_ANSWER`]). Cache URLs in it are
    /// learned, within bounds.
    pub fn answered(&mut self, url: &CacheUrl, answer: &Answer, now: Duration) -> Vec<SocketAddr> {
        self.stats.junk_lines += answer.junk as u64;
        if answer.error().is_some() {
            self.failed(url, now);
            return Vec::new();
        }
        self.stats.answered += 1;
        let mut hosts = Vec::new();
        for (addr, _) in answer.hosts() {
            if !self.scope.allows(addr) {
                self.stats.hosts_out_of_scope += 1;
            } else if hosts.len() == MAX_HOSTS_PER_ANSWER {
                self.stats.hosts_over_limit += 1;
            } else if !hosts.contains(&addr) {
                hosts.push(addr);
            }
        }
        self.stats.hosts += hosts.len() as u64;
        for u in answer.urls() {
            self.learn_url(u);
        }
        let Some(i) = self.index(url) else {
            return hosts;
        };
        if answer.force_remove() && self.entries[i].learned {
            self.entries.remove(i);
            self.stats.removed += 1;
            return hosts;
        }
        let e = &mut self.entries[i];
        if let Some(p) = answer.access_period() {
            // Obeyed, up to a day.
            let p = Duration::from_secs(p.into()).min(Duration::from_secs(24 * 3600));
            e.not_before = Some(e.not_before.unwrap_or(now).max(now + p));
        }
        if hosts.is_empty() {
            self.stats.empty += 1;
        } else {
            e.failures = 0;
            e.worked = true;
        }
        hosts
    }

    /// Learns a cache URL from an answer, if it is new, well-formed, in scope
    /// when it names an address, and there is room.
    fn learn_url(&mut self, text: &str) {
        let Ok(url) = CacheUrl::parse(text) else {
            self.stats.urls_dropped += 1;
            return;
        };
        if self.index(&url).is_some() {
            return;
        }
        let literal = url
            .host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, url.port));
        let learned = self.entries.iter().filter(|e| e.learned).count();
        if literal.is_some_and(|a| !self.scope.allows(a)) || learned >= self.config.max_learned {
            self.stats.urls_dropped += 1;
            return;
        }
        let shuffle = self.draw();
        self.entries.push(Entry::new(url, true, shuffle));
        self.stats.urls += 1;
    }

    /// Whether a learned cache's resolved address may be contacted.
    pub fn allows_address(&self, url: &CacheUrl, addr: SocketAddr) -> bool {
        !self.learned(url) || self.scope.allows(addr)
    }

    /// The GWebCaches to tell our address now, each with another cache that
    /// worked for us to name in the update (`url=`); each is then not updated
    /// again for `update_every`. `up_for`: how long the node has been
    /// reachable.
    pub fn updates(&mut self, now: Duration, up_for: Duration) -> Vec<(CacheUrl, Option<String>)> {
        if up_for < self.config.first_update_after {
            return Vec::new();
        }
        let worked: Vec<CacheUrl> = self
            .entries
            .iter()
            .filter(|e| e.worked && e.url.kind == Kind::Gwc)
            .map(|e| e.url.clone())
            .collect();
        let mut out = Vec::new();
        for e in &mut self.entries {
            if e.url.kind != Kind::Gwc || e.update_not_before.is_some_and(|t| t > now) {
                continue;
            }
            e.update_not_before = Some(now + self.config.update_every);
            let other = worked.iter().find(|u| **u != e.url).map(|u| u.http());
            out.push((e.url.clone(), other));
            self.stats.updates += 1;
        }
        out
    }

    /// `url` answered our update with `answer`. A cache that said our `sent`
    /// URL is bad makes us forget that URL if we learned it.
    pub fn update_answered(
        &mut self,
        url: &CacheUrl,
        sent: Option<&str>,
        answer: &Answer,
        now: Duration,
    ) {
        if answer.update_ok() && answer.warning().is_none() {
            self.stats.updates_ok += 1;
        }
        if let (Some(w), Some(sent)) = (answer.warning(), sent) {
            if w.to_ascii_lowercase().contains("url") {
                if let Ok(s) = CacheUrl::parse(sent) {
                    if let Some(j) = self.index(&s).filter(|&j| self.entries[j].learned) {
                        self.entries.remove(j);
                        self.stats.removed += 1;
                    }
                }
            }
        }
        if let Some(p) = answer.update_period() {
            if let Some(i) = self.index(url) {
                let p = Duration::from_secs(p.into()).min(Duration::from_secs(24 * 3600));
                let e = &mut self.entries[i];
                e.update_not_before = Some(e.update_not_before.unwrap_or(now).max(now + p));
            }
        }
    }
}

impl Entry {
    fn new(url: CacheUrl, learned: bool, shuffle: u64) -> Entry {
        Entry {
            url,
            learned,
            not_before: None,
            asked: None,
            failures: 0,
            worked: false,
            update_not_before: None,
            shuffle,
        }
    }
}

/// Bounds and timers of a [`Store`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Hosts kept at most (the oldest go first).
    pub max_hosts: usize,
    /// Cache URLs kept at most.
    pub max_urls: usize,
    /// A host not updated for this long is forgotten.
    pub host_ttl: Duration,
    /// A cache URL not updated for this long is forgotten.
    pub url_ttl: Duration,
    /// Least time between two updates from one client.
    pub update_every: Duration,
    /// Hosts in one answer, newest first.
    pub answer_hosts: usize,
    /// Cache URLs in one answer.
    pub answer_urls: usize,
    /// Clients whose last update is remembered (for the rate limit) at most;
    /// beyond it updates are refused until some age out.
    pub max_clients: usize,
    /// Name and version in pongs.
    pub name: String,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            max_hosts: 200,
            max_urls: 50,
            host_ttl: Duration::from_secs(2 * 3600),
            url_ttl: Duration::from_secs(24 * 3600),
            update_every: Duration::from_secs(3600),
            answer_hosts: 20,
            answer_urls: 10,
            max_clients: 10_000,
            name: concat!("servent ", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// What a [`Store`] has done, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub requests: u64,
    /// Requests refused with 400 (bad query string).
    pub bad_requests: u64,
    pub updates_taken: u64,
    /// Updates refused: too soon after the client's last one.
    pub updates_too_soon: u64,
    /// Updates refused: `ip=` names another address than the client's.
    pub updates_not_yours: u64,
    /// Updates refused: an address outside the cache's scope, or not
    /// `ip:port`, or a bad URL.
    pub updates_bad: u64,
    /// Updates refused: too many clients remembered.
    pub updates_busy: u64,
    /// Requests for another network than Gnutella.
    pub other_network: u64,
    /// Hosts and URLs forgotten for age, or pushed out by newer ones.
    pub hosts_expired: u64,
    pub urls_expired: u64,
}

/// An answer of the cache: an HTTP status and a text body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// Whom a client's updates are counted against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Client {
    /// On the Internet: its IP address.
    Ip(IpAddr),
    /// On a local network (many nodes behind one address): the address it
    /// lists.
    Listed(SocketAddr),
}

/// The host cache `servent webcache` serves. Times (`now`) are offsets from an
/// epoch the caller chooses; the shell uses the Unix epoch, so that what
/// [`Store::save`] writes keeps its ages across a restart.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    scope: Scope,
    /// Host → when it last updated.
    hosts: HashMap<SocketAddr, Duration>,
    /// Cache URL (as written) → when it was last named.
    urls: HashMap<String, Duration>,
    /// When each client last updated.
    updates: HashMap<Client, Duration>,
    stats: StoreStats,
}

impl Store {
    /// An empty cache taking addresses of `scope`.
    pub fn new(config: StoreConfig, scope: Scope) -> Store {
        Store {
            config,
            scope,
            hosts: HashMap::new(),
            urls: HashMap::new(),
            updates: HashMap::new(),
            stats: StoreStats::default(),
        }
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Hosts listed now.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Cache URLs listed now.
    pub fn urls(&self) -> usize {
        self.urls.len()
    }

    /// The hosts and URLs as text to keep in a file: lines `host IP:PORT T`
    /// and `url URL T`, `T` the time of the last update in seconds.
    pub fn save(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let mut hosts: Vec<_> = self.hosts.iter().collect();
        hosts.sort_by_key(|(a, t)| (std::cmp::Reverse(**t), **a));
        for (a, t) in hosts {
            let _ = writeln!(out, "host {a} {}", t.as_secs());
        }
        let mut urls: Vec<_> = self.urls.iter().collect();
        urls.sort();
        for (u, t) in urls {
            let _ = writeln!(out, "url {u} {}", t.as_secs());
        }
        out
    }

    /// Takes back what [`Store::save`] wrote, as far as it is still young, in
    /// scope and within bounds (bad lines are skipped); returns the entries
    /// taken.
    pub fn load(&mut self, text: &str, now: Duration) -> usize {
        let mut taken = 0;
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(kind), Some(what), Some(t), None) = (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let Ok(t) = t.parse::<u64>().map(Duration::from_secs) else {
                continue;
            };
            let t = t.min(now);
            match kind {
                "host" => {
                    let Ok(a) = what.parse::<SocketAddr>() else {
                        continue;
                    };
                    if !self.scope.allows(a) || now - t >= self.config.host_ttl {
                        continue;
                    }
                    if !self.hosts.contains_key(&a) && self.hosts.len() >= self.config.max_hosts {
                        evict_oldest(&mut self.hosts);
                    }
                    self.hosts.insert(a, t);
                }
                "url" => {
                    let Ok(u) = CacheUrl::parse(what) else {
                        continue;
                    };
                    if !self.url_in_scope(&u) || now - t >= self.config.url_ttl {
                        continue;
                    }
                    let u = u.to_string();
                    if !self.urls.contains_key(&u) && self.urls.len() >= self.config.max_urls {
                        evict_oldest(&mut self.urls);
                    }
                    self.urls.insert(u, t);
                }
                _ => continue,
            }
            taken += 1;
        }
        taken
    }

    /// Forgets what aged out.
    fn expire(&mut self, now: Duration) {
        let (ht, ut) = (self.config.host_ttl, self.config.url_ttl);
        let before = (self.hosts.len(), self.urls.len());
        self.hosts.retain(|_, t| now.saturating_sub(*t) < ht);
        self.urls.retain(|_, t| now.saturating_sub(*t) < ut);
        self.stats.hosts_expired += (before.0 - self.hosts.len()) as u64;
        self.stats.urls_expired += (before.1 - self.urls.len()) as u64;
        let every = self.config.update_every;
        self.updates.retain(|_, t| now.saturating_sub(*t) < every);
    }

    /// Answers a GET of `path` with query string `query`, from `client`.
    pub fn handle(
        &mut self,
        path: &str,
        query: Option<&str>,
        client: IpAddr,
        now: Duration,
    ) -> Reply {
        self.stats.requests += 1;
        self.expire(now);
        let q = match Query::parse(query.unwrap_or("")) {
            Ok(q) => q,
            Err(e) => {
                self.stats.bad_requests += 1;
                return Reply {
                    status: 400,
                    body: format!("ERROR: {e}\n"),
                };
            }
        };
        let spec2 = q.get || q.update || q.net.is_some();
        let mut out = Vec::new();
        if !q.gnutella() {
            self.stats.other_network += 1;
            out.push(Line::Error("network not supported".into()));
            return self.reply(out);
        }
        if q.ping {
            out.push(if spec2 {
                Line::Info(Info::Pong {
                    name: self.config.name.clone(),
                    networks: "gnutella".into(),
                })
            } else {
                Line::Pong(self.config.name.clone())
            });
        }
        if q.update || q.ip.is_some() || q.url.is_some() {
            let refused = self.update(&q, client, now);
            match (spec2, refused) {
                (true, None) => out.push(Line::Info(Info::UpdateOk)),
                (true, Some(why)) => out.push(Line::Info(Info::UpdateWarning(why.into()))),
                (false, None) => out.push(Line::Ok),
                (false, Some(why)) => {
                    out.push(Line::Ok);
                    out.push(Line::Warning(why.into()));
                }
            }
            if spec2 {
                let period = self.config.update_every.as_secs().min(u32::MAX.into()) as u32;
                out.push(Line::Info(Info::UpdatePeriod(period)));
            }
        }
        if q.get {
            if !q.ping {
                out.push(Line::Info(Info::Pong {
                    name: self.config.name.clone(),
                    networks: "gnutella".into(),
                }));
            }
            for (addr, age) in self.newest_hosts(now, false) {
                out.push(Line::Host {
                    addr,
                    age: Some(age),
                });
            }
            for (url, age) in self.newest_urls(now) {
                out.push(Line::Url {
                    url,
                    age: Some(age),
                });
            }
        } else if q.hostfile || q.urlfile {
            if q.hostfile {
                let hosts = self.newest_hosts(now, false);
                out.extend(hosts.into_iter().map(|(a, _)| Line::BareHost(a)));
            }
            if q.urlfile {
                let urls = self.newest_urls(now);
                out.extend(urls.into_iter().map(|(u, _)| Line::BareUrl(u)));
            }
        } else if q.statfile {
            out.push(Line::Error("statfile not served".into()));
        } else if out.is_empty() {
            // No request this cache knows: the host list (gtk's GHC
            // `/list4`, a LimeWire bootstrap URL), IPv4 only for `/list4`.
            let v4 = path.ends_with("/list4");
            let hosts = self.newest_hosts(now, v4);
            out.extend(hosts.into_iter().map(|(a, _)| Line::BareHost(a)));
        }
        self.reply(out)
    }

    fn reply(&self, lines: Vec<Line>) -> Reply {
        Reply {
            status: 200,
            body: Answer {
                lines,
                junk: 0,
                truncated: false,
            }
            .encode(),
        }
    }

    /// The newest hosts with their ages in seconds.
    fn newest_hosts(&self, now: Duration, v4_only: bool) -> Vec<(SocketAddr, u32)> {
        let mut v: Vec<_> = self
            .hosts
            .iter()
            .filter(|(a, _)| !v4_only || a.is_ipv4())
            .map(|(a, t)| (*a, *t))
            .collect();
        v.sort_by_key(|(a, t)| (std::cmp::Reverse(*t), *a));
        v.truncate(self.config.answer_hosts);
        v.into_iter().map(|(a, t)| (a, age(now, t))).collect()
    }

    fn newest_urls(&self, now: Duration) -> Vec<(String, u32)> {
        let mut v: Vec<_> = self.urls.iter().map(|(u, t)| (u.clone(), *t)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(self.config.answer_urls);
        v.into_iter().map(|(u, t)| (u, age(now, t))).collect()
    }

    /// Takes an update; why not, if it was refused.
    fn update(&mut self, q: &Query, client: IpAddr, now: Duration) -> Option<&'static str> {
        let host = match q.ip.as_deref() {
            None => None,
            Some(ip) => match ip.trim().parse::<SocketAddr>() {
                Ok(a) if !self.scope.allows(a) => {
                    self.stats.updates_bad += 1;
                    return Some("address not accepted");
                }
                // Only the host itself may list its address: the one the
                // connection comes from, never one a header names.
                Ok(a) if canonical(a.ip()) != canonical(client) => {
                    self.stats.updates_not_yours += 1;
                    return Some("ip is not yours");
                }
                Ok(a) => Some(SocketAddr::new(canonical(a.ip()), a.port())),
                Err(_) => {
                    self.stats.updates_bad += 1;
                    return Some("bad ip");
                }
            },
        };
        let url = match q.url.as_deref() {
            None => None,
            Some(u) => match CacheUrl::parse(u) {
                Ok(url) if self.url_in_scope(&url) => Some(url.to_string()),
                _ => {
                    self.stats.updates_bad += 1;
                    return Some("bad url");
                }
            },
        };
        if host.is_none() && url.is_none() {
            self.stats.updates_bad += 1;
            return Some("nothing to update");
        }
        let key = match (self.scope, host) {
            (Scope::Local, Some(h)) => Client::Listed(h),
            _ => Client::Ip(canonical(client)),
        };
        if self.updates.contains_key(&key) {
            self.stats.updates_too_soon += 1;
            return Some("too soon");
        }
        if self.updates.len() >= self.config.max_clients {
            self.stats.updates_busy += 1;
            return Some("busy");
        }
        self.updates.insert(key, now);
        self.stats.updates_taken += 1;
        if let Some(h) = host {
            if !self.hosts.contains_key(&h) && self.hosts.len() >= self.config.max_hosts {
                evict_oldest(&mut self.hosts);
                self.stats.hosts_expired += 1;
            }
            self.hosts.insert(h, now);
        }
        if let Some(u) = url {
            if !self.urls.contains_key(&u) && self.urls.len() >= self.config.max_urls {
                evict_oldest(&mut self.urls);
                self.stats.urls_expired += 1;
            }
            self.urls.insert(u, now);
        }
        None
    }

    fn url_in_scope(&self, url: &CacheUrl) -> bool {
        match url.host.parse::<IpAddr>() {
            Ok(ip) => self.scope.allows(SocketAddr::new(ip, url.port)),
            Err(_) => true,
        }
    }
}

fn age(now: Duration, then: Duration) -> u32 {
    now.saturating_sub(then).as_secs().min(u32::MAX.into()) as u32
}

/// An IPv4-mapped IPv6 address as the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn evict_oldest<K: Clone + Eq + std::hash::Hash>(map: &mut HashMap<K, Duration>) {
    if let Some(k) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::webcache::parse_answer;

    fn url(s: &str) -> CacheUrl {
        CacheUrl::parse(s).unwrap()
    }
    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rounds_take_few_caches_and_respect_intervals() {
        let urls = ["http://a/", "http://b/", "http://c/"].map(url).to_vec();
        let mut c = Caches::new(urls, RotationConfig::internet(), Scope::Internet, 7);
        let first = c.round(secs(0));
        assert_eq!(first.len(), 2);
        let second = c.round(secs(1));
        assert_eq!(second.len(), 1, "the third, and only it");
        assert!(!first.contains(&second[0]));
        assert!(c.round(secs(10)).is_empty(), "none again within the hour");
        assert_eq!(c.next_due(secs(10)), Some(secs(3590)));
        // One fails: it waits longer and comes after the others.
        c.failed(&first[0], secs(20));
        let again = c.round(secs(3601));
        assert_eq!(again.len(), 2);
        assert!(!again.contains(&first[0]));
        assert!(
            c.round(secs(3619)).is_empty(),
            "failed cache paused 1 h from its failure"
        );
        assert_eq!(c.round(secs(3620)), vec![first[0].clone()]);
        c.failed(&first[0], secs(3620));
        assert_eq!(
            c.next_due(secs(3620)).unwrap(),
            secs(3601 + 3600 - 3620).min(secs(7200))
        );
        assert_eq!(c.stats().asked, 6);
    }

    #[test]
    fn answers_feed_scoped_hosts_and_learned_caches() {
        let a = url("http://a/");
        let mut c = Caches::new(
            vec![a.clone()],
            RotationConfig::internet(),
            Scope::Internet,
            1,
        );
        c.round(secs(0));
        let answer = parse_answer(
            b"H|8.8.8.8:6346|10\nH|10.0.0.1:6346|10\nH|8.8.8.8:6346|5\nH|8.8.4.4:0|1\n\
              U|http://b.example/g.php|5\nU|http://192.168.1.1/g.php|5\nU|ftp://x/|1\nI|access|period|7200\n",
        );
        let hosts = c.answered(&a, &answer, secs(1));
        assert_eq!(hosts, ["8.8.8.8:6346".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.stats().hosts_out_of_scope, 2);
        assert_eq!(
            c.urls().len(),
            2,
            "the private-address cache is not learned"
        );
        assert_eq!(c.stats().urls_dropped, 1);
        assert_eq!(c.stats().junk_lines, 1, "the ftp URL line");
        // The access period is longer than the least interval: obeyed.
        assert_eq!(c.round(secs(3601)), vec![url("http://b.example/g.php")]);
        assert!(
            c.round(secs(7000)).is_empty(),
            "a waits out its access period"
        );
        assert_eq!(c.round(secs(7201))[0], a);
        // A local mesh takes private addresses.
        let mut l = Caches::new(vec![a.clone()], RotationConfig::local(), Scope::Local, 1);
        assert_eq!(l.answered(&a, &answer, secs(0)).len(), 2);
        // An ERROR is a failure.
        c.answered(&a, &parse_answer(b"ERROR\n8.8.8.8:1\n"), secs(7202));
        assert_eq!(c.stats().failed, 1);
    }

    #[test]
    fn learned_caches_are_bounded_and_forgotten() {
        let a = url("http://a/");
        let mut c = Caches::new(
            vec![a.clone()],
            RotationConfig::internet(),
            Scope::Internet,
            1,
        );
        let mut body = String::new();
        for i in 0..50 {
            body.push_str(&format!("http://c{i}.example/\n"));
        }
        c.answered(&a, &parse_answer(body.as_bytes()), secs(0));
        assert_eq!(c.urls().len(), 1 + 20);
        assert_eq!(c.stats().urls_dropped, 30);
        let learned = url("http://c0.example/");
        assert!(c.learned(&learned) && !c.learned(&a));
        assert!(!c.allows_address(&learned, "127.0.0.1:80".parse().unwrap()));
        assert!(c.allows_address(&a, "127.0.0.1:80".parse().unwrap()));
        for t in 0..3 {
            c.failed(&learned, secs(t));
        }
        assert_eq!(c.urls().len(), 20, "dropped after 3 failures");
        for t in 0..10 {
            c.failed(&a, secs(t));
        }
        assert!(c.urls().contains(&a), "a configured cache stays");
        c.answered(
            &url("http://c1.example/"),
            &parse_answer(b"I|force|remove\n"),
            secs(20),
        );
        assert_eq!(c.urls().len(), 19);
    }

    #[test]
    fn updates_go_to_gwebcaches_at_most_hourly() {
        let g1 = url("http://g1/gwc.php");
        let g2 = url("http://g2/gwc.php");
        let list = url("http://ghc/list4");
        let mut c = Caches::new(
            vec![g1.clone(), g2.clone(), list],
            RotationConfig::internet(),
            Scope::Internet,
            3,
        );
        assert!(
            c.updates(secs(0), secs(60)).is_empty(),
            "not before an hour up"
        );
        c.answered(&g2, &parse_answer(b"H|8.8.8.8:1|1\n"), secs(1));
        let u = c.updates(secs(4000), secs(3600));
        assert_eq!(
            u,
            vec![
                (g1.clone(), Some("http://g2/gwc.php".to_string())),
                (g2.clone(), None)
            ]
        );
        assert!(c.updates(secs(4001), secs(3601)).is_empty());
        c.update_answered(
            &g1,
            None,
            &parse_answer(b"I|update|OK\nI|update|period|7200\n"),
            secs(4001),
        );
        assert_eq!(c.stats().updates_ok, 1);
        assert_eq!(c.updates(secs(7600), secs(9999)), vec![(g2.clone(), None)]);
        assert!(
            c.updates(secs(11200), secs(9999))
                .iter()
                .all(|(u, _)| *u == g2)
        );
        assert_eq!(
            c.updates(secs(11201), secs(9999)),
            vec![(g1.clone(), Some("http://g2/gwc.php".into()))],
            "g1 after its period"
        );
        let mut l = Caches::new(vec![g1.clone()], RotationConfig::local(), Scope::Local, 3);
        assert_eq!(
            l.updates(secs(0), secs(0)).len(),
            1,
            "a local mesh updates at once"
        );
    }

    fn store(scope: Scope) -> Store {
        Store::new(
            StoreConfig {
                max_hosts: 3,
                max_urls: 2,
                host_ttl: secs(100),
                url_ttl: secs(100),
                update_every: secs(10),
                answer_hosts: 2,
                answer_urls: 2,
                max_clients: 4,
                name: "servent 0".into(),
            },
            scope,
        )
    }

    #[test]
    fn the_store_answers_each_form() {
        let mut s = store(Scope::Local);
        let me = ip("127.0.0.1");
        let r = s.handle(
            "/",
            Some("update=1&ip=127.0.0.1:7001&url=http%3A%2F%2F127.0.0.1%3A9%2Fgwc&net=gnutella"),
            me,
            secs(0),
        );
        assert_eq!(
            r,
            Reply {
                status: 200,
                body: "I|update|OK\nI|update|period|10\n".into()
            }
        );
        s.handle("/", Some("ip=127.0.0.1:7002"), me, secs(1));
        let r = s.handle(
            "/",
            Some("get=1&net=gnutella&client=SRVT&version=1"),
            me,
            secs(5),
        );
        assert_eq!(
            r.body,
            "I|pong|servent 0|gnutella\nH|127.0.0.1:7002|4\nH|127.0.0.1:7001|5\nU|http://127.0.0.1:9/gwc|5\n"
        );
        assert_eq!(
            s.handle("/list4", None, me, secs(5)).body,
            "127.0.0.1:7002\n127.0.0.1:7001\n"
        );
        assert_eq!(
            s.handle("/gwc.php", Some("hostfile=1"), me, secs(5)).body,
            "127.0.0.1:7002\n127.0.0.1:7001\n"
        );
        assert_eq!(
            s.handle("/gwc.php", Some("urlfile=1"), me, secs(5)).body,
            "http://127.0.0.1:9/gwc\n"
        );
        assert_eq!(
            s.handle("/", Some("ping=1"), me, secs(5)).body,
            "PONG servent 0\n"
        );
        assert_eq!(
            s.handle("/", Some("ping=1&net=gnutella"), me, secs(5)).body,
            "I|pong|servent 0|gnutella\n"
        );
        assert_eq!(
            s.handle("/", Some("get=1&net=gnutella2"), me, secs(5)).body,
            "ERROR: network not supported\n"
        );
        assert_eq!(s.handle("/", Some("url=%zz"), me, secs(5)).status, 400);
        assert_eq!(s.stats().bad_requests, 1);
        // The client's parser reads the store's answers.
        let a = parse_answer(s.handle("/", Some("get=1"), me, secs(6)).body.as_bytes());
        assert_eq!(a.hosts().count(), 2);
        assert_eq!(a.urls().count(), 1);
    }

    #[test]
    fn updates_are_honest_rate_limited_bounded_and_aged() {
        let mut s = store(Scope::Internet);
        let c = ip("8.8.8.8");
        let upd = |s: &mut Store, q: &str, from: IpAddr, t: u64| {
            s.handle("/", Some(q), from, secs(t)).body
        };
        assert_eq!(
            upd(&mut s, "update=1&ip=9.9.9.9:1", c, 0),
            "I|update|WARNING|ip is not yours\nI|update|period|10\n"
        );
        assert_eq!(
            upd(&mut s, "update=1&ip=10.0.0.1:1", ip("10.0.0.1"), 0),
            "I|update|WARNING|address not accepted\nI|update|period|10\n"
        );
        assert_eq!(upd(&mut s, "ip=8.8.8.8:1", c, 0), "OK\n");
        assert_eq!(upd(&mut s, "ip=8.8.8.8:2", c, 5), "OK\nWARNING: too soon\n");
        assert_eq!(
            upd(&mut s, "ip=8.8.8.8:2", c, 10),
            "OK\n",
            "after the period"
        );
        assert_eq!(upd(&mut s, "ip=banana", c, 30), "OK\nWARNING: bad ip\n");
        assert_eq!(
            upd(&mut s, "url=https://x/", c, 30),
            "OK\nWARNING: bad url\n"
        );
        assert_eq!(
            upd(&mut s, "update=1", c, 30),
            "I|update|WARNING|nothing to update\nI|update|period|10\n"
        );
        let st = s.stats().clone();
        assert_eq!(
            (
                st.updates_taken,
                st.updates_too_soon,
                st.updates_not_yours,
                st.updates_bad
            ),
            (2, 1, 1, 4)
        );
        // Bounded: the oldest host goes.
        for (i, t) in [(1u8, 31), (2, 32), (3, 33), (4, 34)] {
            let from = IpAddr::from([8, 8, 4, i]);
            upd(&mut s, &format!("ip={from}:6346"), from, t);
        }
        assert_eq!(s.hosts(), 3);
        assert_eq!(
            s.handle("/list4", None, c, secs(35)).body,
            "8.8.4.4:6346\n8.8.4.3:6346\n"
        );
        // Too many clients remembered: refused until they age out.
        assert_eq!(
            upd(&mut s, "ip=8.8.4.9:1", ip("8.8.4.9"), 35),
            "OK\nWARNING: busy\n"
        );
        assert_eq!(upd(&mut s, "ip=8.8.4.9:1", ip("8.8.4.9"), 50), "OK\n");
        // Aged out after the host TTL.
        assert_eq!(
            s.handle("/list4", None, c, secs(133)).body,
            "8.8.4.9:1\n8.8.4.4:6346\n"
        );
        assert_eq!(s.handle("/list4", None, c, secs(200)).body, "");
        assert_eq!(s.hosts(), 0);
        // An IPv4-mapped client address is its IPv4 one.
        assert_eq!(
            upd(&mut s, "ip=8.8.8.8:3", ip("::ffff:8.8.8.8"), 300),
            "OK\n"
        );
    }

    #[test]
    fn a_saved_store_comes_back_with_its_ages() {
        let mut s = store(Scope::Internet);
        let t0 = secs(1_000_000);
        s.handle(
            "/",
            Some("ip=8.8.8.8:1&url=http://c.example/g.php"),
            ip("8.8.8.8"),
            t0,
        );
        s.handle("/", Some("ip=8.8.4.4:2"), ip("8.8.4.4"), t0 + secs(50));
        let text = s.save();
        assert_eq!(
            text,
            "host 8.8.4.4:2 1000050\nhost 8.8.8.8:1 1000000\nurl http://c.example/g.php 1000000\n"
        );
        let mut back = store(Scope::Internet);
        let junk = "host 10.0.0.1:1 1000000\nhost nonsense 5\nurl https://x/ 1000000\nwhat 1 2\nhost 8.8.8.8:9\n";
        assert_eq!(back.load(&format!("{text}{junk}"), t0 + secs(70)), 3);
        assert_eq!(
            back.handle("/", Some("get=1"), ip("8.8.8.8"), t0 + secs(70))
                .body,
            "I|pong|servent 0|gnutella\nH|8.8.4.4:2|20\nH|8.8.8.8:1|70\nU|http://c.example/g.php|70\n"
        );
        // What aged out meanwhile is not taken back.
        let mut late = store(Scope::Internet);
        assert_eq!(
            late.load(&text, t0 + secs(140)),
            1,
            "one host and the URL are too old"
        );
        assert_eq!(late.hosts(), 1);
    }

    #[test]
    fn a_local_store_limits_each_listed_address() {
        let mut s = store(Scope::Local);
        let me = ip("127.0.0.1");
        assert_eq!(
            s.handle("/", Some("ip=127.0.0.1:1"), me, secs(0)).body,
            "OK\n"
        );
        assert_eq!(
            s.handle("/", Some("ip=127.0.0.1:2"), me, secs(0)).body,
            "OK\n"
        );
        assert_eq!(
            s.handle("/", Some("ip=127.0.0.1:2"), me, secs(1)).body,
            "OK\nWARNING: too soon\n"
        );
    }
}
