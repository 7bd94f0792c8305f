//! Our addresses in what we send, by gtk-gnutella's IPv6-Ready rules
//! (`wire::ipv6`): the IPv4 field of a Pong, hit or Push holds our IPv4
//! address, or 127.0.0.0 when we have none; an IPv6 address of ours rides in
//! GGEP `6`. We know our addresses from our links: each link's `local` is
//! the address that peer reaches us at.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use crate::wire::ggep::GgepExt;

/// The Bye code closing a second link to one servent (gtk-gnutella refuses
/// such a handshake with 409).
const DUPLICATE_BYE: u16 = 409;
use crate::wire::ipv6::{self, I6};

impl<L: Links> Engine<L> {
    /// Whether a link to the servent `guid` is open: a host listening on
    /// IPv4 and IPv6 is reached by either, and a second link to it is
    /// refused (IPv6-Ready's reason for the `GUID` header), as is one to
    /// ourselves.
    pub fn linked_to(&self, guid: Guid) -> bool {
        guid == self.me || self.peers.values().any(|p| p.info.guid == Some(guid))
    }

    /// Two links to one servent opened at once (each side's check in the
    /// handshake passed before either link opened): one is closed, the same
    /// one at both ends. Kept: the IPv4 link before the IPv6 one, then the
    /// one dialed by the servent with the lower GUID.
    pub(super) fn drop_duplicate(&mut self, conn: ConnId) {
        let Some(guid) = self.peers.get(&conn).and_then(|p| p.info.guid) else {
            return;
        };
        let me = self.me;
        let mut twins: Vec<((bool, Guid, ConnId), ConnId)> = self
            .peers
            .values()
            .filter(|p| p.info.guid == Some(guid) && !p.closing)
            .map(|p| {
                let dialer = if p.info.inbound { guid } else { me };
                ((p.info.remote.is_ipv6(), dialer, p.conn), p.conn)
            })
            .collect();
        if twins.len() < 2 {
            return;
        }
        twins.sort();
        for (_, c) in twins.into_iter().skip(1) {
            if let Some(p) = self.peers.get_mut(&c) {
                tracing::debug!(conn = c.0, "closing a second link to one servent");
                p.closing = true;
                self.stats.duplicates_closed += 1;
                self.links
                    .close(c, DUPLICATE_BYE, "Already connected to this GUID");
            }
        }
    }

    /// An IPv6 address peers reach us at (a link's local end), if any; only
    /// one the host cache's scope allows (no link-local or unique-local
    /// address said to the Internet because a neighbour reached us by it).
    pub(super) fn own_v6(&self) -> Option<Ipv6Addr> {
        self.own_addrs().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
    }

    /// An IPv4 address peers reach us at, if any (in scope, as above).
    pub(super) fn own_v4(&self) -> Option<Ipv4Addr> {
        self.own_addrs().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Our links' local addresses that the scope allows.
    fn own_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let scope = self.hosts.scope();
        self.peers
            .values()
            .map(|p| self.our_addr(p.info.local))
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .filter(move |a| scope.allows(*a))
            .map(|a| a.ip())
    }

    /// What to write for ourselves to the peer that reaches us at `local`:
    /// the IPv4 field and the `6` value. An IPv4 link says our IPv6 address
    /// too when we have one; an IPv6 link puts the IPv4 address we have (or
    /// 127.0.0.0) in the field and its own address in `6`.
    pub(super) fn our_address(&self, local: SocketAddr) -> (Ipv4Addr, Option<Ipv6Addr>) {
        match local.ip().to_canonical() {
            IpAddr::V4(v4) => (v4, self.own_v6()),
            IpAddr::V6(v6) => (self.own_v4().unwrap_or(ipv6::IPV4_NONE), Some(v6)),
        }
    }

    /// Our Pong to the peer that reaches us at `local`.
    pub(super) fn own_pong(&self, local: SocketAddr) -> Pong {
        let (ip, v6) = self.our_address(local);
        Pong {
            port: local.port(),
            ip,
            files: self.library.len() as u32,
            kbytes: (self.library.total_size() / 1024).min(u32::MAX as u64) as u32,
            ggep: v6.map(|a| crate::wire::Ggep::new(vec![ipv6::ipv6_ext(a)])),
        }
    }

    /// The trailer GGEP of our hits to the peer at `local`: our push proxies
    /// when `firewalled` (`PUSH`, and `PUSH6` when the query takes IPv6), and
    /// our IPv6 address (`6`) when we have one.
    pub(super) fn hit_trailer_ggep(
        &self,
        local: SocketAddr,
        i6: I6,
        firewalled: bool,
    ) -> (Ipv4Addr, Option<crate::wire::Ggep>) {
        let (ip, v6) = self.our_address(local);
        let mut exts: Vec<GgepExt> = Vec::new();
        if firewalled {
            let proxies: Vec<SocketAddr> = self
                .peers
                .values()
                .filter_map(|p| p.proxy)
                .take(MAX_PUSH_PROXIES)
                .collect();
            exts.extend(ipv6::packed_exts(
                &proxies,
                "PUSH",
                ipv6::GGEP_PUSH6,
                i6.takes_v6(),
                !i6.takes_v4(),
            ));
        }
        exts.extend(v6.map(ipv6::ipv6_ext));
        (ip, (!exts.is_empty()).then(|| crate::wire::Ggep::new(exts)))
    }

    /// A query of ours with `I6` added when we have an IPv6 address (so
    /// IPv6-Ready responders may name IPv6 hosts to us); as it was otherwise.
    pub(super) fn with_i6(&self, query: Bytes) -> Bytes {
        let i6 = I6::of_node(self.own_v4().is_some(), self.own_v6().is_some());
        add_i6(query, i6)
    }
}

/// `query` (a Query payload) with `i6` in its GGEP block (one is added when it
/// has none); unchanged for [`I6::Absent`], when it says `I6` already, or when
/// it does not parse.
pub fn add_i6(query: Bytes, i6: I6) -> Bytes {
    use crate::wire::ext::ExtItem;
    let Some(ext) = i6.ext() else {
        return query;
    };
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    let Ok(mut q) = crate::wire::Query::parse(&query, &mut budget) else {
        return query;
    };
    if q.i6() != I6::Absent {
        return query;
    }
    let block = q.ext.items.iter_mut().find_map(|i| match i {
        ExtItem::Ggep(g) => Some(g),
        _ => None,
    });
    match block {
        Some(g) => g.exts.push(ext),
        None => q
            .ext
            .items
            .push(ExtItem::Ggep(crate::wire::Ggep::new(vec![ext]))),
    }
    let mut out = BytesMut::with_capacity(query.len() + 4);
    match q.encode(&mut out) {
        Ok(()) => out.freeze(),
        Err(_) => query,
    }
}

/// The addresses a Pong names (IPv4 unless "IPv6 only", then its `6`), or
/// none when it does not parse.
pub(super) fn pong_addrs(payload: &Bytes) -> Vec<SocketAddr> {
    let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
    Pong::parse(payload, &mut budget).map_or_else(|_| Vec::new(), |p| p.addrs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Query;
    use crate::wire::query::QueryFlags;

    #[test]
    fn i6_joins_a_query_once() {
        let mut out = BytesMut::new();
        Query::new(QueryFlags::with_bits(0), "free software")
            .encode(&mut out)
            .unwrap();
        let plain = out.freeze();
        assert_eq!(add_i6(plain.clone(), I6::Absent), plain);
        let with = add_i6(plain.clone(), I6::Also);
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        let q = Query::parse(&with, &mut budget).unwrap();
        assert_eq!(q.i6(), I6::Also);
        assert_eq!(q.text_lossy(), "free software");
        assert_eq!(add_i6(with.clone(), I6::Only), with, "said already");
        let view = crate::wire::query::QueryView::parse(&with).unwrap();
        assert_eq!(view.i6(), I6::Also);
        let only = add_i6(plain, I6::Only);
        assert_eq!(Query::parse(&only, &mut budget).unwrap().i6(), I6::Only);
    }

    #[test]
    fn pongs_name_ipv4_or_ipv6_hosts() {
        let v6: Ipv6Addr = "2a02:11::3".parse().unwrap();
        let enc = |p: &Pong| {
            let mut out = BytesMut::new();
            p.encode(&mut out).unwrap();
            out.freeze()
        };
        let only6 = Pong::for_host(SocketAddr::new(v6.into(), 6346), None, 1, 2, vec![]);
        assert_eq!(only6.ip, ipv6::IPV4_NONE);
        assert_eq!(
            pong_addrs(&enc(&only6)),
            vec![SocketAddr::new(v6.into(), 6346)]
        );
        let four: SocketAddr = "11.0.0.3:6346".parse().unwrap();
        let both = Pong::for_host(four, Some(v6), 1, 2, vec![]);
        assert_eq!(
            pong_addrs(&enc(&both)),
            vec![four, SocketAddr::new(v6.into(), 6346)]
        );
        assert!(pong_addrs(&Bytes::from_static(&[1, 2])).is_empty());
    }
}
