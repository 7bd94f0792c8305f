//! Which addresses a node may learn, hand out, dial or connect to for a Push.
//!
//! Reserved and unroutable addresses (RFC 1918 and the other private ranges,
//! loopback, link-local, multicast, 0/8, 240/4) name no host the rest of the
//! network can reach: a Pong or a Push naming one is either a mistake or an
//! attempt to make us connect into our own network. They are refused unless
//! the mesh is local ([`Scope::Local`]): a node listening on such an address, or
//! started with `--local-network` (tests and `scripts/local-mesh.sh` run on
//! loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses count as peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only globally routable addresses.
    Internet,
    /// Private, loopback and link-local addresses too (never unspecified,
    /// multicast or broadcast).
    Local,
}

impl Scope {
    /// The scope of a node listening on `listen` (`local_network`: the user
    /// said the mesh is local).
    pub fn of(listen: IpAddr, local_network: bool) -> Scope {
        if local_network || (!listen.is_unspecified() && !is_routable(listen)) {
            Scope::Local
        } else {
            Scope::Internet
        }
    }

    /// Whether `addr` may be learned, dialed or connected to.
    pub fn allows(self, addr: SocketAddr) -> bool {
        addr.port() != 0
            && match self {
                Scope::Internet => is_routable(addr.ip()),
                Scope::Local => is_host(addr.ip()),
            }
    }
}

/// Whether `ip` can name one host at all: not unspecified, multicast,
/// broadcast or in 0/8 and 240/4.
fn is_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(o[0] == 0 || o[0] >= 224 || v4 == Ipv4Addr::BROADCAST)
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_host(IpAddr::V4(v4)),
            None => !(v6.is_unspecified() || v6.is_multicast()),
        },
    }
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_routable(ip: IpAddr) -> bool {
    if !is_host(ip) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                // Shared address space (carrier-grade NAT), 100.64/10.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // Documentation and benchmarking ranges.
                || (o[0] == 192 && o[1] == 0 && o[2] == 2)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 198 && o[1] == 51 && o[2] == 100)
                || (o[0] == 203 && o[1] == 0 && o[2] == 113))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_routable(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                let o = v6.octets();
                // Tunnels that carry an IPv4 address (6to4 2002::/16, Teredo
                // 2001::/32, whose client address is inverted) are no better
                // than that address, as gtk-gnutella judges them.
                let tunnelled = match (s[0], s[1]) {
                    (0x2002, _) => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
                    (0x2001, 0) => Some(Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15])),
                    _ => None,
                };
                !(v6.is_loopback()
                    || o[0] == 0 // ::/8: loopback, IPv4-compatible, reserved
                    || (s[0] & 0xfe00) == 0xfc00 // unique local
                    || (s[0] & 0xffc0) == 0xfe80 // link-local
                    || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                    || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                    || v6 == Ipv6Addr::UNSPECIFIED
                    || tunnelled.is_some_and(|v4| !is_routable(IpAddr::V4(v4))))
            }
        },
    }
}

/// Inbound sockets open per remote IP address, bounded: one host cannot take
/// every handshake, link or HTTP slot.
#[derive(Debug)]
pub struct PerIp {
    open: std::collections::HashMap<IpAddr, usize>,
    max: usize,
}

impl PerIp {
    /// At most `max` sockets per address.
    pub fn new(max: usize) -> PerIp {
        PerIp {
            open: std::collections::HashMap::new(),
            max: max.max(1),
        }
    }

    /// Counts a new socket from `ip`; false (nothing counted) when it has
    /// `max` open already.
    /// An IPv4 peer on a dual-stack socket (an IPv4-mapped address) counts as
    /// its IPv4 address.
    pub fn take(&mut self, ip: IpAddr) -> bool {
        let n = self.open.entry(ip.to_canonical()).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// A socket from `ip` counted by [`PerIp::take`] has closed.
    pub fn give_back(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(n) = self.open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reserved_ranges_only_on_a_local_mesh() {
        let reserved = [
            "10.1.2.3:6346",
            "172.16.0.1:6346",
            "192.168.1.1:6346",
            "127.0.0.1:6346",
            "169.254.1.1:6346",
            "100.64.0.1:6346",
            "[::1]:6346",
            "[fd00::1]:6346",
            "[fe80::1]:6346",
            "[::ffff:10.0.0.1]:6346",
            "[fec0::1]:6346",
            "[2001:db8::1]:6346",
            "[::10.0.0.1]:6346",
            // 6to4 of 192.168.1.1, Teredo of 10.0.0.1 (inverted).
            "[2002:c0a8:101::1]:6346",
            "[2001:0:4136:e378:8000:63bf:f5ff:fffe]:6346",
        ];
        let never = [
            "0.1.2.3:6346",
            "224.0.0.1:6346",
            "240.0.0.1:6346",
            "255.255.255.255:6346",
            "0.0.0.0:6346",
            "[::]:6346",
            "[ff02::1]:6346",
            "8.8.8.8:0",
        ];
        let public = [
            "8.8.8.8:6346",
            "[2a00:1450::1]:6346",
            "[::ffff:8.8.8.8]:6346",
            "[2a02:11::3]:6346",
            // 6to4 of 8.8.8.8, Teredo of 8.8.4.4.
            "[2002:808:808::1]:6346",
            "[2001:0:4136:e378:8000:63bf:f7f7:fbfb]:6346",
        ];
        for s in reserved {
            assert!(!Scope::Internet.allows(a(s)), "{s}");
            assert!(Scope::Local.allows(a(s)), "{s}");
        }
        for s in never {
            assert!(!Scope::Internet.allows(a(s)), "{s}");
            assert!(!Scope::Local.allows(a(s)), "{s}");
        }
        for s in public {
            assert!(Scope::Internet.allows(a(s)), "{s}");
            assert!(Scope::Local.allows(a(s)), "{s}");
        }
        // A node on loopback or a private address runs a local mesh; one on a
        // wildcard or public address does not, unless told so.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(Scope::of(ip("127.0.0.1"), false), Scope::Local);
        assert_eq!(Scope::of(ip("192.168.0.5"), false), Scope::Local);
        assert_eq!(Scope::of(ip("0.0.0.0"), false), Scope::Internet);
        assert_eq!(Scope::of(ip("8.8.8.8"), false), Scope::Internet);
        assert_eq!(Scope::of(ip("0.0.0.0"), true), Scope::Local);
    }

    #[test]
    fn sockets_per_address_are_bounded() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut p = PerIp::new(2);
        assert!(p.take(ip("8.8.8.8")) && p.take(ip("8.8.8.8")));
        assert!(!p.take(ip("8.8.8.8")), "a third from one host");
        assert!(p.take(ip("8.8.4.4")), "others are not affected");
        p.give_back(ip("8.8.8.8"));
        assert!(p.take(ip("8.8.8.8")));
        assert!(p.take(ip("127.0.0.1")) && p.take(ip("127.0.0.1")));
        assert!(!p.take(ip("127.0.0.1")), "loopback is counted too");
        assert!(
            !p.take(ip("::ffff:127.0.0.1")),
            "an IPv4 peer on a dual-stack socket is the same host"
        );
        p.give_back(ip("::ffff:127.0.0.1"));
        assert!(p.take(ip("127.0.0.1")));
        p.give_back(ip("8.8.4.4"));
        assert!(
            !p.open.contains_key(&ip("8.8.4.4")),
            "nothing kept for gone hosts"
        );
    }
}
