//! The node's use of HTTP host caches: it asks them when it has no host to
//! dial, and tells them its address once it is a reachable ultrapeer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::Shared;
use crate::bootstrap::{WebCaches, http_round, http_updates};
use crate::core::addr::Scope;

/// What the maintainer keeps between its ticks.
pub(super) struct Boot {
    pub caches: WebCaches,
    /// A round of requests is under way.
    asking: Arc<AtomicBool>,
    /// Updates are under way.
    updating: Arc<AtomicBool>,
    /// Since when the node has had nothing to dial.
    starving_since: Mutex<Option<Instant>>,
    /// Since when the node has been a reachable ultrapeer.
    reachable_since: Mutex<Option<Instant>>,
    /// A peer connected to us: our address is reachable from outside.
    pub inbound_seen: AtomicBool,
    /// "Nothing to ask" was said for this spell without hosts.
    said: AtomicBool,
    /// Wakes the maintainer when a round brought hosts.
    pub wake: Arc<tokio::sync::Notify>,
}

/// How long the UDP host caches are given before the HTTP ones are asked
/// (the UDP caches' own wait for an answer).
const UHC_FIRST: Duration = Duration::from_secs(20);

impl Boot {
    /// `wake`: the maintainer's, notified when a round brought hosts.
    pub fn new(caches: WebCaches, wake: Arc<tokio::sync::Notify>) -> Boot {
        Boot {
            caches,
            asking: Arc::default(),
            updating: Arc::default(),
            starving_since: Mutex::new(None),
            reachable_since: Mutex::new(None),
            inbound_seen: AtomicBool::new(false),
            said: AtomicBool::new(false),
            wake,
        }
    }

    /// Called every second by the maintainer. `starving`: no connection, no
    /// dial under way and no host to dial.
    pub fn tick(&self, shared: &Arc<Shared>, starving: bool) {
        let now = Instant::now();
        self.ask_if_starving(shared, starving, now);
        self.update_if_reachable(shared, now);
    }

    fn ask_if_starving(&self, shared: &Arc<Shared>, starving: bool, now: Instant) {
        let mut since = self
            .starving_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !starving {
            *since = None;
            self.said.store(false, Ordering::Relaxed);
            return;
        }
        let since = *since.get_or_insert(now);
        // Configured peers are dialed outside the maintainer: they get a
        // handshake's time first. The UDP host caches get `webcache_after`.
        let mut wait = shared.config.webcache_after;
        if shared.config.udp && !shared.config.udp_host_caches.is_empty() {
            wait = wait.max(UHC_FIRST);
        }
        if !shared.config.peers.is_empty() {
            wait = wait.max(shared.config.handshake_timeout);
        }
        if now.duration_since(since) < wait || self.asking.load(Ordering::Relaxed) {
            return;
        }
        if self.caches.is_empty() {
            if !self.said.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "no hosts to connect to and no HTTP host cache to ask: give --peer or --webcache"
                );
            }
            return;
        }
        match self.caches.next_due() {
            Some(d) if d > Duration::ZERO => {
                if !self.said.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        next_in_secs = d.as_secs(),
                        "no hosts to connect to; every HTTP host cache was asked lately"
                    );
                }
                return;
            }
            None => return,
            Some(_) => {}
        }
        self.said.store(false, Ordering::Relaxed);
        self.asking.store(true, Ordering::Relaxed);
        let (caches, asking, s) = (self.caches.clone(), self.asking.clone(), shared.clone());
        let wake = self.wake.clone();
        shared.tracker.spawn(async move {
            let hosts = tokio::select! {
                h = http_round(&caches) => h,
                _ = s.cancel.cancelled() => Vec::new(),
            };
            let learned = !hosts.is_empty();
            s.engine.hosts(|h| {
                let seen = SystemTime::now();
                for a in hosts {
                    h.learn(a, seen);
                }
            });
            asking.store(false, Ordering::Relaxed);
            if learned {
                wake.notify_one();
            }
        });
    }

    fn update_if_reachable(&self, shared: &Arc<Shared>, now: Instant) {
        if self.caches.is_empty() {
            return;
        }
        let ultrapeer = shared.engine.role_headers().ultrapeer;
        // On a local mesh the cache is ours and its nodes reach each other;
        // on the Internet only a peer that connected to us proves it.
        let reachable = !shared.config.firewalled
            && ultrapeer
            // Connect-backs found us firewalled: nobody could reach what we list.
            && !shared.engine.tcp_firewalled()
            && (shared.scope == Scope::Local || self.inbound_seen.load(Ordering::Relaxed));
        let mut since = self
            .reachable_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !reachable {
            *since = None;
            return;
        }
        let up_for = now.duration_since(*since.get_or_insert(now));
        if self.updating.swap(true, Ordering::Relaxed) {
            return;
        }
        let (caches, updating, s) = (self.caches.clone(), self.updating.clone(), shared.clone());
        shared.tracker.spawn(async move {
            let me = |local: SocketAddr| SocketAddr::new(s.advertised(local.ip()), s.listen_port);
            tokio::select! {
                _ = http_updates(&caches, up_for, me) => {}
                _ = s.cancel.cancelled() => {}
            }
            updating.store(false, Ordering::Relaxed);
        });
    }
}
