//! UDP pings and pongs: answering pings as a host cache does (our own pong,
//! packed hosts when `SCP` asks, our address echoed when `IP` asks), and
//! taking the answers to our own host-cache pings into the host cache
//! (`protocol-spec/bootstrap.md`). The client's decisions (which caches,
//! when) are `core::uhc`; the shell resolves names and calls
//! [`Engine::uhc_round`] and [`Engine::uhc_ping`].

use crate::wire::GgepExt;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::*;
use crate::core::addr::Scope;
use crate::core::udp::Throttle;
use crate::core::uhc::{Answer, Round, UhcClient, UhcConfig, UhcStats};
use crate::wire::udp::Datagram;
use crate::wire::uhc::{self as wire_uhc, PingAsks, PongExtras, UhcPing};

/// One answer per minute per address, as gtk-gnutella answers (and at most
/// one ping per minute to an address, as it sends).
const ANSWER_EVERY: Duration = Duration::from_secs(60);
/// Addresses the throttles remember at most.
const THROTTLE_CAP: usize = 4096;

/// Whether we say `UDPHC` ("I am a UDP host cache") in our answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CacheMode {
    /// When we are an ultrapeer that takes connections.
    #[default]
    Auto,
    Always,
    Never,
}

/// The host-cache part of the core.
pub(super) struct UhcState {
    client: UhcClient,
    /// Pings answered per source address.
    answered: Throttle<SocketAddr>,
    /// Our pings per cache address.
    pinged: Throttle<SocketAddr>,
    mode: CacheMode,
    /// Where we listen, as pongs advertise it (the IP may be unspecified:
    /// then a link's local address stands in).
    me: Option<SocketAddrV4>,
    stats: UhcStats,
}

impl UhcState {
    pub(super) fn new() -> UhcState {
        UhcState {
            client: UhcClient::new(Vec::new(), UhcConfig::default()),
            answered: Throttle::new(ANSWER_EVERY, THROTTLE_CAP),
            pinged: Throttle::new(ANSWER_EVERY, THROTTLE_CAP),
            mode: CacheMode::Auto,
            me: None,
            stats: UhcStats::default(),
        }
    }

    pub(super) fn stats(&self) -> UhcStats {
        let c = self.client.stats();
        UhcStats {
            served: self.stats.served,
            packed: self.stats.packed,
            echoed: self.stats.echoed,
            throttled: self.stats.throttled,
            self_skipped: self.stats.self_skipped,
            ..c.clone()
        }
    }
}

impl<L: Links> Engine<L> {
    /// The UDP host caches to ask (`host:port` each, in this order), how
    /// often, and whether we say we are one.
    pub fn set_udp_host_caches(&mut self, names: Vec<String>, config: UhcConfig, mode: CacheMode) {
        self.uhc.client = UhcClient::new(names, config);
        self.uhc.mode = mode;
    }

    /// Where we listen, for the pongs we send by UDP.
    pub fn set_udp_address(&mut self, me: SocketAddrV4) {
        self.uhc.me = Some(me);
    }

    /// The host-cache client's decision at `now` (see `core::uhc`):
    /// `need_hosts` when nothing is left to dial.
    pub fn uhc_round(&mut self, now: Instant, need_hosts: bool) -> Round {
        self.uhc.client.round(now, need_hosts)
    }

    /// Pings cache `name`, resolved by the shell to `addrs`: a UHC ping to
    /// each IPv4 address we may send to (at most 4), no more than once a
    /// minute each. Returns how many went.
    pub fn uhc_ping(&mut self, name: &str, addrs: &[SocketAddr], now: Instant) -> usize {
        let configured = self.uhc.client.configured(name);
        let ultrapeer = self.tier.role() == Role::Ultrapeer;
        let (mut sent, mut throttled) = (0, false);
        for to in addrs.iter().filter(|a| a.is_ipv4()).take(4) {
            // Learned caches only within our scope (no private addresses
            // from the Internet); the user's own, wherever they are.
            if !configured && !self.hosts.scope().allows(*to) {
                continue;
            }
            // Our own address in the list (a node that is one of the
            // caches it was given): nothing to learn from ourselves.
            if self.is_our_udp(*to) {
                self.uhc.stats.self_skipped += 1;
                continue;
            }
            if !self.uhc.pinged.allow(self.uhc_throttle_key(*to), now) {
                throttled = true;
                continue;
            }
            let muid = self.rng.guid();
            let ping = UhcPing {
                scp: if ultrapeer {
                    wire_uhc::SCP_ULTRAPEER
                } else {
                    0
                },
                vendor: Some((wire_uhc::VENDOR, wire_uhc::our_version_byte())),
                // No `IP` with `SCP`: gtk-gnutella 1.2.3 answers no ping that
                // carries both (checked against it; either alone is answered).
                ip: false,
            }
            .ping();
            let Some(frame) = datagram_frame(muid, &Message::Ping(ping)) else {
                continue;
            };
            self.send_datagram(*to, &frame, false);
            self.uhc.client.sent(name, *to, muid, now);
            sent += 1;
        }
        // No address we may ping: as good as a name that does not resolve.
        // (One pinged within the minute under another name is not a failure.)
        if sent == 0 && !throttled {
            self.uhc.client.unresolved(name, now);
        }
        sent
    }

    /// A cache name that did not resolve.
    pub fn uhc_unresolved(&mut self, name: &str, now: Instant) {
        self.uhc.client.unresolved(name, now);
    }

    /// A Ping by UDP: answered with our own Pong, with packed hosts when it
    /// says `SCP` and our address as seen when it asks with `IP`; one answer
    /// per minute per address.
    pub(super) fn udp_ping(&mut self, from: SocketAddr, d: Datagram, now: Instant) {
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        let ping = match Ping::parse(&d.frame.payload, &mut budget) {
            Ok(p) => p,
            Err(_) => return self.stats.udp.drop("malformed"),
        };
        if !self.uhc.answered.allow(self.uhc_throttle_key(from), now) {
            self.uhc.stats.throttled += 1;
            return self.stats.udp.drop("ping-throttled");
        }
        let asks = PingAsks::of(&ping);
        let h = d.frame.header;
        let Some(me) = self.udp_me() else {
            return self.stats.udp.drop("ping-no-address");
        };
        let mut extras = PongExtras {
            vendor: Some((wire_uhc::VENDOR, wire_uhc::our_version_byte())),
            uptime: Some(
                now.saturating_duration_since(self.tier.started())
                    .as_secs()
                    .min(u32::MAX as u64) as u32,
            ),
            ..PongExtras::default()
        };
        if self.tier.role() == Role::Ultrapeer {
            let c = self.tier.config();
            let free_leaves = c.leaves.saturating_sub(self.tier.count(Link::ToLeaf));
            let free_ups = c
                .ultrapeer_links
                .saturating_sub(self.tier.count(Link::Peer) + self.tier.count(Link::Flat));
            extras.up = Some([0, free_leaves.min(255) as u8, free_ups.min(255) as u8]);
        }
        if asks.wants_ipv4_hosts() {
            extras.ipp = self.packed_hosts(from);
            self.uhc.stats.packed += extras.ipp.len() as u64;
        }
        // IPv6 hosts in `IPP6` when `SCP` asks for them (0x04, or 0x08:
        // IPv6 only), as gtk-gnutella answers.
        if let Some(f) = asks.scp {
            if crate::wire::ipv6::scp_families(&[f]).1 {
                let v6 = self.packed_hosts6(from);
                self.uhc.stats.packed += v6.len() as u64;
                if !v6.is_empty() {
                    extras.more.push(
                        GgepExt::new(
                            crate::wire::ipv6::GGEP_IPP6,
                            crate::wire::ipv6::encode_packed6(&v6),
                        )
                        .compressed_if_smaller(),
                    );
                }
            }
        }
        if self.acts_as_cache() {
            extras.udphc = Some(String::new());
        }
        // Only for a direct request (gtk-gnutella's rule), and IPv4 only.
        if asks.ip && h.ttl.0 == 1 && h.hops.0 == 0 {
            match from.ip().to_canonical() {
                IpAddr::V4(ip) => extras.ip = Some(SocketAddrV4::new(ip, from.port())),
                // 18 bytes for an IPv6 asker.
                IpAddr::V6(_) => extras.more.push(GgepExt::new(
                    crate::wire::ipv6::GGEP_IP,
                    crate::wire::ipv6::encode_ip_echo(from),
                )),
            }
            self.uhc.stats.echoed += 1;
        }
        // Our IPv6 address, when we have one, rides in `6` (IPv6-Ready); with
        // no IPv4 address the field says 127.0.0.0.
        let v6 = match self.oob.udp.map(|a| a.ip().to_canonical()) {
            Some(IpAddr::V6(v6)) if !v6.is_unspecified() => Some(v6),
            _ => self.own_v6(),
        };
        if let Some(v6) = v6 {
            extras.more.push(crate::wire::ipv6::ipv6_ext(v6));
        }
        let me = if me.ip().is_unspecified() && v6.is_some() {
            SocketAddrV4::new(crate::wire::ipv6::IPV4_NONE, me.port())
        } else {
            me
        };
        let pong = extras.pong(
            me,
            self.library.len().min(u32::MAX as usize) as u32,
            (self.library.total_size() / 1024).min(u32::MAX as u64) as u32,
        );
        if let Some(frame) = datagram_frame(h.guid, &Message::Pong(pong)) {
            self.uhc.stats.served += 1;
            self.send_datagram(from, &frame, d.deflate_ok);
        }
    }

    /// A Pong by UDP: taken only as the answer to one of our host-cache
    /// pings, from the address pinged.
    pub(super) fn udp_pong(&mut self, from: SocketAddr, d: Datagram, now: Instant) {
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        let pong = match Pong::parse(&d.frame.payload, &mut budget) {
            Ok(p) => p,
            Err(_) => return self.stats.udp.drop("malformed"),
        };
        let extras = PongExtras::of(&pong);
        // IPv6 hosts (`IPP6`), read beside the IPv4 ones.
        let ipp6: Vec<SocketAddr> = pong
            .ggep
            .as_ref()
            .map(|g| crate::wire::ipv6::packed_of(g, "", crate::wire::ipv6::GGEP_IPP6))
            .unwrap_or_default();
        let name = match self.uhc.client.answered(
            from,
            d.frame.header.guid,
            extras.ipp.len() + ipp6.len(),
            now,
        ) {
            Answer::NotOurs => return self.stats.udp.drop("pong-unsolicited"),
            Answer::WrongSource => return self.stats.udp.drop("pong-wrong-source"),
            Answer::From(name) => name,
        };
        tracing::debug!(cache = %name, %from, hosts = extras.ipp.len(), "a UDP host cache answered");
        let wall = self.wall;
        // Packed hosts are ultrapeers (gtk-gnutella puts them in its
        // ultrapeer cache).
        for a in extras.ipp.iter().map(|h| SocketAddr::V4(*h)).chain(ipp6) {
            if !self.is_me(a) {
                self.hosts.mark_ultrapeer(a, true, wall);
            }
        }
        // The answering host itself: where its pong says it listens, at the
        // address it answered from when the pong does not say.
        let ip = if pong.ip.is_unspecified() {
            from.ip()
        } else {
            IpAddr::V4(pong.ip)
        };
        let itself = SocketAddr::new(ip, pong.port);
        if pong.port != 0 && !self.is_me(itself) {
            if extras.up.is_some() {
                self.hosts.mark_ultrapeer(itself, true, wall);
            } else {
                self.hosts.learn_reachable(itself, wall);
            }
        }
        // Caches it names (LimeWire learns them; gtk-gnutella does not).
        if let Some(n) = &extras.udphc {
            let named = if n.is_empty() {
                Some(from.to_string())
            } else {
                wire_uhc::cache_name(n, from.port())
            };
            if let Some(n) = named {
                self.uhc.client.learn(n);
            }
        }
        for n in extras.phc {
            self.uhc.client.learn(n);
        }
        if let Some(seen) = extras.ip {
            self.reach.vote(from.ip(), IpAddr::V4(*seen.ip()));
            self.reach.stats.ip_votes += 1;
        }
        self.links.hosts_learned();
    }

    /// What the once-a-minute rules count by: the IP address (as the
    /// deployed servents count), or on a local mesh, where many nodes share
    /// one address, the address and port (a node's UDP port is its own).
    fn uhc_throttle_key(&self, a: SocketAddr) -> SocketAddr {
        match self.hosts.scope() {
            Scope::Internet => SocketAddr::new(a.ip(), 0),
            Scope::Local => a,
        }
    }

    /// Whether we say `UDPHC`.
    fn acts_as_cache(&self) -> bool {
        match self.uhc.mode {
            CacheMode::Always => true,
            CacheMode::Never => false,
            CacheMode::Auto => self.tier.role() == Role::Ultrapeer && !self.firewalled,
        }
    }

    /// Whether `to` is our own UDP port: our address, or, when we listen on
    /// every address, our port at a link's local address, at a loopback
    /// address, or at the external address peers agree on.
    fn is_our_udp(&self, to: SocketAddr) -> bool {
        let Some(me) = self.uhc.me else {
            return false;
        };
        if to.port() != me.port() {
            return false;
        }
        if !me.ip().is_unspecified() {
            return to.ip() == IpAddr::V4(*me.ip());
        }
        to.ip().is_loopback() || self.is_me(to) || self.external_ip() == Some(to.ip())
    }

    /// Our address for a pong by UDP: the one the shell set, its IP taken
    /// from a link's local end when it is unspecified.
    fn udp_me(&self) -> Option<SocketAddrV4> {
        let me = self.uhc.me?;
        if !me.ip().is_unspecified() {
            return Some(me);
        }
        let ip = self
            .peers
            .values()
            .map(|p| match p.info.local.ip().to_canonical() {
                std::net::IpAddr::V4(v4) => v4,
                std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            })
            .find(|ip| !ip.is_unspecified())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        Some(SocketAddrV4::new(ip, me.port()))
    }

    /// Up to 30 hosts to pack for `asker`: the ultrapeers we are linked to,
    /// then those of the host cache, then other hosts that take connections;
    /// never the asker, us, a leaf, or a host whose last dial failed. (We do
    /// not know others' free slots, so the `SCP` ultrapeer flag does not
    /// change the choice.)
    fn packed_hosts(&self, asker: SocketAddr) -> Vec<SocketAddrV4> {
        self.packed(asker, |a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
    }

    /// The IPv6 hosts to pack for `asker` (`IPP6`), chosen the same way.
    fn packed_hosts6(&self, asker: SocketAddr) -> Vec<std::net::SocketAddrV6> {
        self.packed(asker, |a| match a {
            SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_none() => Some(v6),
            _ => None,
        })
    }

    /// Up to 30 hosts of one family (`family` keeps those it maps), in the
    /// order and with the exclusions [`Self::packed_hosts`] describes.
    fn packed<T: Copy + Eq + std::hash::Hash>(
        &self,
        asker: SocketAddr,
        family: impl Fn(SocketAddr) -> Option<T>,
    ) -> Vec<T> {
        let linked = self.peers.values().filter_map(|p| match p.info.link {
            Link::Peer | Link::Flat | Link::ToUltrapeer => p.info.remote_listen,
            Link::ToLeaf => None,
        });
        let cached = self
            .hosts
            .sample_live_ultrapeers(wire_uhc::MAX_IPP * 2)
            .into_iter()
            .chain(self.hosts.sample(wire_uhc::MAX_IPP * 2));
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for a in linked.chain(cached) {
            let Some(h) = family(a) else { continue };
            if a == asker || self.is_me(a) || !seen.insert(h) {
                continue;
            }
            out.push(h);
            if out.len() == wire_uhc::MAX_IPP {
                break;
            }
        }
        out
    }
}

/// A message as a datagram's frame: TTL 1, hops 0.
fn datagram_frame(muid: Guid, msg: &Message) -> Option<Frame> {
    let mut out = BytesMut::new();
    msg.encode_frame(muid, Ttl(1), Hops(0), &mut out).ok()?;
    let bytes = out.freeze();
    let header = Header::parse_prefix(&bytes)?;
    Some(Frame {
        header,
        payload: bytes.slice(crate::wire::HEADER_LEN..),
    })
}
