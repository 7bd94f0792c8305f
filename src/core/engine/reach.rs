//! Reachability in the engine (`core::reach` decides): asking our neighbours
//! for connect-backs and for our address, answering their connect-backs,
//! reading the datagrams that answer ours, and the accessors other parts use
//! (`tcp_firewalled`, `udp_reachable`, our advertised address).

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use super::*;
use crate::core::reach::{Pending, ReachStats, Verdict};
use crate::wire::VendorMsg;
use crate::wire::reach::{
    ConnectBack, ConnectBackRedirect, TcpConnectBack, UdpConnectBack, asks_ip, ip_request, ip_seen,
};
use crate::wire::udp::Datagram;

/// Connect-backs we make to one IP: one a minute (gtk-gnutella's rule for
/// UDP pings; for TCP, so that reconnecting cannot make us a connect cannon).
pub(super) const CONNECT_BACK_EVERY: Duration = Duration::from_secs(60);
/// IPs remembered by those throttles.
pub(super) const CONNECT_BACK_IPS: usize = 1024;

/// What one link has been asked, and asked us.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkReach {
    /// When we last sent it a TCP and a UDP connect-back request.
    pub tcp_asked: Option<Instant>,
    pub udp_asked: Option<Instant>,
    /// We sent it an `IP` ping.
    pub ip_pinged: bool,
    /// We sent it our LIME/7 and LIME/8 (after its Messages-Supported).
    pub redirects_sent: bool,
    /// Its BEAR/7 and GTKG/7 were passed on to another neighbour.
    pub relayed_tcp: bool,
    pub relayed_udp: bool,
}

impl<L: Links> Engine<L> {
    /// Whether we accept no connections: forced (`--firewalled`), or learned
    /// (connect-backs we asked for never came). Unknown counts as reachable.
    pub fn tcp_firewalled(&self) -> bool {
        self.firewalled || self.reach.tcp.verdict() == Verdict::No
    }

    /// Whether a host connected to us from elsewhere lately.
    pub fn tcp_reachable(&self) -> bool {
        !self.firewalled && self.reach.tcp.verdict() == Verdict::Yes
    }

    /// Whether we can receive unsolicited UDP (a connect-back ping came, or a
    /// stranger's ping): what out-of-band hits and GUESS need of a host
    /// others send to first.
    pub fn udp_reachable(&self) -> bool {
        self.links.udp_open() && self.reach.udp.verdict() == Verdict::Yes
    }

    /// Whether replies to our own datagrams reach us (pongs to our pings).
    pub fn udp_solicited(&self) -> bool {
        self.links.udp_open()
            && (self.reach.solicited.verdict() == Verdict::Yes || self.udp_reachable())
    }

    /// Our external IP, once several peers agree on it.
    pub fn external_ip(&self) -> Option<IpAddr> {
        self.reach.external()
    }

    /// A peer said where it sees us (`Remote-IP` in its handshake).
    pub fn remote_ip_said(&mut self, voter: IpAddr, said: IpAddr) {
        self.reach.vote(voter, said);
    }

    /// A TCP connection came in from `from` to `local` (any kind: Gnutella,
    /// HTTP, GIV, a connect-back's `\n\n`).
    pub fn tcp_inbound(&mut self, from: SocketAddr, local: SocketAddr, now: Instant) {
        let before = self.tcp_firewalled();
        self.reach.tcp_inbound(from.ip(), local.ip(), now);
        self.reach_changed(before);
    }

    /// Reachability's counters and verdicts.
    pub fn reach_stats(&mut self) -> ReachStats {
        self.reach.stats()
    }

    /// The address to advertise to a peer that reaches us at `local` (what
    /// the shell chose when the link opened): our external address instead
    /// when `local` is one the world cannot reach (behind NAT) and peers agree
    /// on a routable one.
    pub(super) fn our_addr(&self, local: SocketAddr) -> SocketAddr {
        if crate::core::addr::is_routable(local.ip()) {
            return local;
        }
        match self.reach.external() {
            Some(ip) if ip.is_ipv4() == local.is_ipv4() && crate::core::addr::is_routable(ip) => {
                SocketAddr::new(ip, local.port())
            }
            _ => local,
        }
    }

    /// Sends a vendor message on `conn`; its MUID is returned.
    fn send_vendor(&mut self, conn: ConnId, m: VendorMsg, id: Guid) -> bool {
        let mut out = BytesMut::new();
        if Message::Vendor(m)
            .encode_frame(id, Ttl(1), Hops(0), &mut out)
            .is_err()
        {
            return false;
        }
        !matches!(
            self.links.send(conn, Priority::Own, out.freeze()),
            crate::core::flow::Offer::Rejected
        )
    }

    /// A link opened: ask it for connect-backs we still need, and ping its UDP
    /// port for our address.
    pub(super) fn reach_opened(&mut self, conn: ConnId, now: Instant) {
        let (tcp, udp) = (self.reach.tcp.wanted(now), self.reach.udp.wanted(now));
        self.ask_connect_backs(conn, now, tcp, udp);
        self.ip_ping(conn, now);
    }

    /// Sends `conn` the connect-back requests asked for: BEAR/7 (`tcp`) and
    /// GTKG/7v1 (`udp`). gtk-gnutella sends both to every peer that reads
    /// vendor messages while it thinks it is firewalled.
    fn ask_connect_backs(&mut self, conn: ConnId, now: Instant, tcp: bool, udp: bool) -> bool {
        let me = self.me;
        let want_tcp = tcp && !self.firewalled;
        let want_udp = udp && self.links.udp_open();
        let Some(peer) = self.peers.get(&conn) else {
            return false;
        };
        if !peer.info.vendor_messages {
            return false;
        }
        let port = peer.info.local.port();
        let mut sent = false;
        if want_tcp && self.send_vendor(conn, TcpConnectBack { port }.to_vendor(), Guid([0; 16])) {
            ReachStats::bump(&mut self.reach.stats.asked, "bear7");
            self.reach.tcp.asked(now);
            if let Some(p) = self.peers.get_mut(&conn) {
                p.reach.tcp_asked = Some(now);
            }
            sent = true;
        }
        if want_udp {
            let m = UdpConnectBack {
                port,
                guid: Some(me),
            }
            .to_vendor();
            if self.send_vendor(conn, m, Guid([0; 16])) {
                ReachStats::bump(&mut self.reach.stats.asked, "gtkg7v1");
                self.reach.udp.asked(now);
                if let Some(p) = self.peers.get_mut(&conn) {
                    p.reach.udp_asked = Some(now);
                }
                sent = true;
            }
        }
        sent
    }

    /// A peer's Messages-Supported came: LimeWire-like peers (LIME/7, LIME/8
    /// listed) are asked by redirect too.
    pub(super) fn reach_supported(&mut self, conn: ConnId) {
        let Some(now) = self.reach.now() else { return };
        let udp = self.links.udp_open();
        let Some(local) = self.peers.get(&conn).map(|p| p.info.local) else {
            return;
        };
        let local = self.our_addr(local);
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if peer.reach.redirects_sent {
            return;
        }
        peer.reach.redirects_sent = true;
        let (tcp7, udp8) = (peer.supports(b"LIME", 7), peer.supports(b"LIME", 8));
        let std::net::IpAddr::V4(ip) = local.ip() else {
            return;
        };
        let addr = SocketAddrV4::new(ip, local.port());
        if tcp7 && !self.firewalled && self.reach.tcp.wanted(now) {
            let m = ConnectBackRedirect { udp: false, addr }.to_vendor();
            let id = self.rng.guid();
            if self.send_vendor(conn, m, id) {
                ReachStats::bump(&mut self.reach.stats.asked, "lime7");
                self.reach.tcp.asked(now);
            }
        }
        if udp8 && udp && self.reach.udp.wanted(now) {
            let id = self.rng.guid();
            let m = ConnectBackRedirect { udp: true, addr }.to_vendor();
            let from = self.peers.get(&conn).map(|p| p.info.remote.ip());
            if let Some(from) = from {
                if self.send_vendor(conn, m, id) {
                    ReachStats::bump(&mut self.reach.stats.asked, "lime8");
                    // The ping back may come from any host the peer picks.
                    self.reach.expect(id, Pending::PingBack, from, now);
                    self.reach.udp.asked(now);
                }
            }
        }
    }

    /// Sends an `IP` ping (UDP, TTL 1) to where `conn`'s peer listens, while
    /// the window allows: its pong says where it sees our datagrams from,
    /// and that replies reach us.
    fn ip_ping(&mut self, conn: ConnId, now: Instant) {
        if !self.links.udp_open() {
            return;
        }
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        // Only where the peer's own address is: a listening address it
        // claims elsewhere could aim our pings at a third host.
        let Some(to) = peer
            .info
            .remote_listen
            .filter(|a| a.ip() == peer.info.remote.ip())
        else {
            return;
        };
        // Not a peer we asked for a ping-back: the pong's way in would let
        // its ping-back through a NAT that admits only replies. Not a leaf
        // either: leaves are often firewalled, and an ultrapeer has many.
        if peer.reach.ip_pinged
            || peer.reach.udp_asked.is_some()
            || peer.info.link == Link::ToLeaf
            || !self.reach.ip_ping_allowed(now)
        {
            return;
        }
        let id = self.rng.guid();
        let Ok(frame) = Frame::new(
            &Message::Ping(Ping {
                ggep: Some(ip_request()),
            }),
            id,
            Ttl(1),
            Hops(0),
        ) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&conn) {
            p.reach.ip_pinged = true;
        }
        self.reach.expect(id, Pending::Ping, to.ip(), now);
        self.reach.solicited.asked(now);
        self.send_datagram(to, &frame, false);
    }

    /// A vendor message on a link: a connect-back request is answered here
    /// (true), anything else is not ours (false).
    pub(super) fn reach_vendor(&mut self, conn: ConnId, id: Guid, m: &VendorMsg) -> bool {
        let Some(request) = crate::wire::reach::connect_back(m) else {
            return false;
        };
        let Some(now) = self.reach.now() else {
            return true;
        };
        let Some(peer) = self.peers.get(&conn) else {
            return true;
        };
        let remote = peer.info.remote.ip();
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "bad connect-back request");
                self.stats.malformed += 1;
                ReachStats::bump(&mut self.reach.stats.refused, "malformed");
                return true;
            }
        };
        match request {
            ConnectBack::Tcp(TcpConnectBack { port }) => {
                self.tcp_connect_back(conn, remote, port, "bear7", now);
                self.relay_connect_back(conn, false, port, id);
            }
            ConnectBack::Redirect(r) => {
                let target = SocketAddr::V4(r.addr);
                if target.ip() == remote {
                    if r.udp {
                        self.udp_ping_back(target, id, "lime8", now);
                    } else {
                        self.tcp_connect_back(conn, remote, r.addr.port(), "lime7", now);
                    }
                } else if let Some(why) = self.redirect_refused(conn, target) {
                    ReachStats::bump(&mut self.reach.stats.refused, why);
                } else if r.udp {
                    // For a third host, as LimeWire asks its ultrapeers: the
                    // ping it counts comes from a host it is not linked to.
                    self.udp_ping_back(target, id, "lime8-redirect", now);
                } else {
                    self.tcp_redirect(target, now);
                }
            }
            ConnectBack::Udp(u) => {
                let muid = u.guid.unwrap_or(id);
                let kind = if u.guid.is_some() {
                    "gtkg7v1"
                } else {
                    "gtkg7v2"
                };
                self.udp_ping_back(SocketAddr::new(remote, u.port), muid, kind, now);
                self.relay_connect_back(conn, true, u.port, muid);
            }
        }
        true
    }

    /// Why a redirect (LIME/7, LIME/8) naming `target`, another host than
    /// the asker, is refused, if it is: LimeWire's rules (only from an
    /// ultrapeer neighbour, never towards a host we are linked to), and only
    /// within our scope. Each target is still throttled once a minute.
    fn redirect_refused(&self, conn: ConnId, target: SocketAddr) -> Option<&'static str> {
        let peer = self.peers.get(&conn)?;
        if peer.info.link == Link::ToLeaf {
            return Some("redirect-from-leaf");
        }
        if !self.hosts.scope().allows(target) {
            return Some("redirect-out-of-scope");
        }
        if self
            .peers
            .values()
            .any(|p| p.info.remote.ip() == target.ip())
        {
            return Some("redirect-to-neighbour");
        }
        None
    }

    /// Connects to `target` for another host's LIME/7 (once a minute per IP).
    fn tcp_redirect(&mut self, target: SocketAddr, now: Instant) {
        if target.port() == 0 {
            ReachStats::bump(&mut self.reach.stats.refused, "port-zero");
        } else if !self.tcp_backs.allow(self.throttle_key(target), now) {
            ReachStats::bump(&mut self.reach.stats.refused, "throttled");
        } else {
            self.stats.connect_backs += 1;
            ReachStats::bump(&mut self.reach.stats.answered, "lime7-redirect");
            self.links.connect_back(target);
        }
    }

    /// Passes a neighbour's BEAR/7 (`udp` false) or GTKG/7 on, as LIME/7 or
    /// LIME/8 naming it, to one other neighbour that lists them: a host it
    /// is not linked to then connects back (LimeWire counts only those).
    /// Once per asking link and kind; `id` is the MUID the ping back must
    /// carry.
    fn relay_connect_back(&mut self, conn: ConnId, udp: bool, port: u16, id: Guid) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let done = if udp {
            &mut peer.reach.relayed_udp
        } else {
            &mut peer.reach.relayed_tcp
        };
        if *done || port == 0 {
            return;
        }
        *done = true;
        let std::net::IpAddr::V4(ip) = peer.info.remote.ip().to_canonical() else {
            return;
        };
        let selector = if udp { 8 } else { 7 };
        let mut others: Vec<ConnId> = self
            .peers
            .values()
            .filter(|p| {
                p.conn != conn
                    && p.info.link != Link::ToLeaf
                    && p.info.remote.ip() != IpAddr::V4(ip)
                    && p.supports(b"LIME", selector)
            })
            .map(|p| p.conn)
            .collect();
        others.sort();
        let Some(to) = others.first().copied() else {
            return;
        };
        let m = ConnectBackRedirect {
            udp,
            addr: SocketAddrV4::new(ip, port),
        }
        .to_vendor();
        if self.send_vendor(to, m, id) {
            ReachStats::bump(
                &mut self.reach.stats.asked,
                if udp { "lime8-relay" } else { "lime7-relay" },
            );
        }
    }

    /// What connect-backs are throttled by: the IP, as gtk-gnutella does; on
    /// a local mesh the address and port.
    fn throttle_key(&self, to: SocketAddr) -> SocketAddr {
        match self.reach.scope() {
            crate::core::addr::Scope::Internet => SocketAddr::new(to.ip(), 0),
            crate::core::addr::Scope::Local => to,
        }
    }

    /// Connects back to `ip:port` by TCP (once per link, once a minute per IP).
    fn tcp_connect_back(
        &mut self,
        conn: ConnId,
        ip: IpAddr,
        port: u16,
        kind: &'static str,
        now: Instant,
    ) {
        let key = self.throttle_key(SocketAddr::new(ip, port));
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let reason = if port == 0 {
            Some("port-zero")
        } else if peer.connected_back {
            Some("once-per-link")
        } else if !self.tcp_backs.allow(key, now) {
            Some("throttled")
        } else {
            None
        };
        if let Some(r) = reason {
            ReachStats::bump(&mut self.reach.stats.refused, r);
            return;
        }
        peer.connected_back = true;
        self.stats.connect_backs += 1;
        ReachStats::bump(&mut self.reach.stats.answered, kind);
        self.links.connect_back(SocketAddr::new(ip, port));
    }

    /// Sends the connect-back Ping (empty, TTL 1, MUID `muid`) to `to` by
    /// UDP, at most once a minute per IP.
    fn udp_ping_back(&mut self, to: SocketAddr, muid: Guid, kind: &'static str, now: Instant) {
        let reason = if to.port() == 0 {
            Some("port-zero")
        } else if !self.links.udp_open() {
            Some("no-udp")
        } else if !self.udp_backs.allow(self.throttle_key(to), now) {
            Some("throttled")
        } else {
            None
        };
        if let Some(r) = reason {
            ReachStats::bump(&mut self.reach.stats.refused, r);
            return;
        }
        let Ok(frame) = Frame::new(&Message::Ping(Ping::default()), muid, Ttl(1), Hops(0)) else {
            return;
        };
        ReachStats::bump(&mut self.reach.stats.answered, kind);
        self.send_datagram(to, &frame, false);
    }

    /// A datagram, before it is handed out by function: a connect-back Ping
    /// we asked for, or a Pong to one of our pings, is taken here (true).
    /// Every other Ping is looked at too (a stranger's ping says we receive
    /// unsolicited UDP) and left to its handler.
    pub(super) fn reach_datagram(&mut self, from: SocketAddr, d: &Datagram, now: Instant) -> bool {
        let h = &d.frame.header;
        match h.function {
            Function::Ping => {
                let before = self.tcp_firewalled();
                let ours = self.reach.ping_in(from.ip(), h.guid, self.me, now);
                self.reach_changed(before);
                ours
            }
            Function::Pong => {
                if !self.reach.pong_in(from.ip(), h.guid, now) {
                    return false;
                }
                let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
                if let Ok(p) = Pong::parse(&d.frame.payload, &mut budget) {
                    if let Some(seen) = p.ggep.as_ref().and_then(ip_seen) {
                        self.reach.vote(from.ip(), seen.ip());
                        self.reach.stats.ip_votes += 1;
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Whether a Ping's GGEP asks for our address as seen (for the part that
    /// answers UDP pings).
    pub fn ping_asks_ip(p: &Ping) -> bool {
        p.ggep.as_ref().is_some_and(asks_ip)
    }

    /// Time passes: rounds time out, stale verdicts are tested again (one
    /// request, to the peer asked longest ago).
    pub(super) fn reach_tick(&mut self, now: Instant) {
        let before = self.tcp_firewalled();
        let (tcp, udp) = self.reach.tick(now);
        self.reach_changed(before);
        if !(tcp || udp) {
            return;
        }
        let pick = |asked: fn(&LinkReach) -> Option<Instant>| {
            self.peers
                .values()
                .filter(|p| p.info.vendor_messages)
                .min_by_key(|p| (asked(&p.reach), p.conn.0))
                .map(|p| p.conn)
        };
        let tcp_conn = tcp.then(|| pick(|r| r.tcp_asked)).flatten();
        let udp_conn = udp.then(|| pick(|r| r.udp_asked)).flatten();
        // One request per check that is due.
        if let Some(conn) = tcp_conn {
            self.ask_connect_backs(conn, now, true, false);
        }
        if let Some(conn) = udp_conn {
            self.ask_connect_backs(conn, now, false, true);
        }
    }

    /// After something that may change whether we are TCP-firewalled: a node
    /// that becomes firewalled asks its ultrapeers to be its push proxies.
    fn reach_changed(&mut self, was_firewalled: bool) {
        if !was_firewalled && self.tcp_firewalled() {
            tracing::info!("no connect-back came: we are firewalled (TCP)");
            let ups: Vec<ConnId> = self.peers.keys().copied().collect();
            for conn in ups {
                self.ask_push_proxy(conn);
            }
        } else if was_firewalled && !self.tcp_firewalled() {
            tracing::info!("a host connected to us: we accept connections (TCP)");
        }
    }
}
