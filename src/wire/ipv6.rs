//! IPv6 in Gnutella messages, as gtk-gnutella's "IPv6-Ready" specification
//! (2011) puts it: the 4-byte IPv4 fields of Pong, QueryHit and Push stay, and
//! an IPv6 address rides beside them in GGEP.
//!
//! - `6`: one IPv6 address, 16 bytes in network order, in a Pong's block, a
//!   hit's trailer block, a Push's block, or a query's block (the out-of-band
//!   reply address). gtk-gnutella before 0.97 called it `GTKG.IPV6` (0 or 16
//!   bytes); both are read. With `6` present, an IPv4 field of 127.0.0.0
//!   ([`IPV4_NONE`]) means "IPv6 only"; any other IPv4 field means the host
//!   runs both.
//! - `IPP6` (pongs), `ALT6` (hit results), `PUSH6` (hit trailers): packed
//!   lists of 18-byte entries, the IPv6 address in network order then the
//!   port little-endian; twins of the 6-byte `IPP`, `ALT` and `PUSH`.
//! - `IP` in a Pong echoes the asker's address: 6 bytes for IPv4, 18 for IPv6.
//! - `I6` in a query: empty, "you may give me IPv6 addresses"; one byte with
//!   bit 0 set, "give me only IPv6 addresses".
//! - `SCP` in a UDP Ping: bit 0x04 "also IPv6 hosts", 0x08 "no IPv4 hosts".
//!
//! Parsers are as tolerant as gtk-gnutella's (a `6` longer than 16 bytes is
//! read for its first 16); encoders are exact. Layouts: `protocol-spec/ipv6.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::ggep::{DEFAULT_INFLATE_BUDGET, Ggep, GgepExt, GgepView};

/// GGEP ID of one IPv6 address.
pub const GGEP_6: &str = "6";
/// gtk-gnutella's older ID of the same (before 0.97).
pub const GGEP_GTKG_IPV6: &str = "GTKG.IPV6";
/// Packed IPv6 hosts in a Pong (UDP host caches).
pub const GGEP_IPP6: &str = "IPP6";
/// Packed IPv6 alternate locations in a hit result.
pub const GGEP_ALT6: &str = "ALT6";
/// Packed IPv6 push proxies in a hit trailer.
pub const GGEP_PUSH6: &str = "PUSH6";
/// "I can take IPv6 addresses" in a query.
pub const GGEP_I6: &str = "I6";
/// The asker's own address echoed in a Pong (6 or 18 bytes).
pub const GGEP_IP: &str = "IP";

/// The IPv4 field of a host that has no IPv4 address (with `6` beside it).
pub const IPV4_NONE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 0);

/// `SCP` flag: send IPv6 hosts too (`IPP6`).
pub const SCP_IPV6: u8 = 0x04;
/// `SCP` flag: send no IPv4 hosts (implies [`SCP_IPV6`]).
pub const SCP_NO_IPV4: u8 = 0x08;

/// Bytes of one packed IPv6 entry.
pub const ENTRY6_LEN: usize = 18;
/// Bytes of one packed IPv4 entry.
pub const ENTRY4_LEN: usize = 6;
/// Entries read from one packed list at most (gtk-gnutella's bound too).
pub const MAX_PACKED: usize = 255;

/// Why a packed list was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PackedError {
    #[error("packed host list is empty")]
    Empty,
    #[error("packed host list of {len} bytes is not a multiple of {entry}")]
    Ragged { len: usize, entry: usize },
}

/// The address in a `6` or `GTKG.IPV6` value: its first 16 bytes. `None` for
/// an empty value (gtk's "no address") or one shorter than 16 bytes.
pub fn ipv6_value(data: &[u8]) -> Option<Ipv6Addr> {
    let b: [u8; 16] = data.get(..16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// The `6` extension for `addr`.
pub fn ipv6_ext(addr: Ipv6Addr) -> GgepExt {
    GgepExt::new(GGEP_6, Bytes::copy_from_slice(&addr.octets()))
}

/// The IPv6 address a block carries: the first `6` or `GTKG.IPV6` that holds
/// one.
pub fn ipv6_of(ggep: &Ggep) -> Option<Ipv6Addr> {
    ggep.exts
        .iter()
        .filter(|e| is_ipv6_id(e.id.as_bytes()))
        .find_map(|e| ipv6_value(&e.data))
}

/// As [`ipv6_of`], read from a borrowed block.
pub fn ipv6_of_view(view: &GgepView<'_>) -> Option<Ipv6Addr> {
    let mut budget = DEFAULT_INFLATE_BUDGET;
    view.iter()
        .filter(|e| is_ipv6_id(e.id))
        .find_map(|e| ipv6_value(&e.value(&mut budget).ok()?))
}

fn is_ipv6_id(id: &[u8]) -> bool {
    id == GGEP_6.as_bytes() || id == GGEP_GTKG_IPV6.as_bytes()
}

/// Where a host with IPv4 field `ipv4` and optional `6` value is reached:
/// at the IPv6 address when the IPv4 field says "none" (127.0.0.0) or is
/// unspecified, else at the IPv4 address (a dual-stack host's primary).
pub fn host_ip(ipv4: Ipv4Addr, ipv6: Option<Ipv6Addr>) -> IpAddr {
    match ipv6 {
        Some(v6) if ipv4 == IPV4_NONE || ipv4.is_unspecified() => IpAddr::V6(v6),
        _ => IpAddr::V4(ipv4),
    }
}

/// What to write for our address `primary` in a message with a 4-byte IPv4
/// field: the IPv4 field, and the `6` value when there is one to say.
/// `also_v6` is an IPv6 address we listen on besides an IPv4 primary (a
/// dual-stack host says both). An IPv4-mapped IPv6 address counts as IPv4.
pub fn advertise(primary: IpAddr, also_v6: Option<Ipv6Addr>) -> (Ipv4Addr, Option<Ipv6Addr>) {
    match primary.to_canonical() {
        IpAddr::V4(v4) => (v4, also_v6.filter(|a| a.to_ipv4_mapped().is_none())),
        IpAddr::V6(v6) => (IPV4_NONE, Some(v6)),
    }
}

/// Reads a packed IPv6 list (`IPP6`, `ALT6`, `PUSH6`): 18-byte entries, at
/// most [`MAX_PACKED`] read. A value that is empty or not a whole number of
/// entries is refused, as gtk-gnutella refuses it.
pub fn parse_packed6(data: &[u8]) -> Result<Vec<SocketAddrV6>, PackedError> {
    check_packed(data, ENTRY6_LEN)?;
    Ok(data
        .chunks_exact(ENTRY6_LEN)
        .take(MAX_PACKED)
        .map(|e| {
            let ip: [u8; 16] = e[..16].try_into().expect("16 bytes");
            SocketAddrV6::new(Ipv6Addr::from(ip), u16::from_le_bytes([e[16], e[17]]), 0, 0)
        })
        .collect())
}

/// Reads a packed IPv4 list (`IPP`, `ALT`, `PUSH`): 6-byte entries, IPv4 in
/// network order then the port little-endian, at most [`MAX_PACKED`] read.
pub fn parse_packed4(data: &[u8]) -> Result<Vec<SocketAddrV4>, PackedError> {
    check_packed(data, ENTRY4_LEN)?;
    Ok(data
        .chunks_exact(ENTRY4_LEN)
        .take(MAX_PACKED)
        .map(|e| {
            SocketAddrV4::new(
                Ipv4Addr::new(e[0], e[1], e[2], e[3]),
                u16::from_le_bytes([e[4], e[5]]),
            )
        })
        .collect())
}

fn check_packed(data: &[u8], entry: usize) -> Result<(), PackedError> {
    if data.is_empty() {
        return Err(PackedError::Empty);
    }
    if data.len() % entry != 0 {
        return Err(PackedError::Ragged {
            len: data.len(),
            entry,
        });
    }
    Ok(())
}

/// Writes a packed IPv6 list, at most [`MAX_PACKED`] entries.
pub fn encode_packed6<'a>(addrs: impl IntoIterator<Item = &'a SocketAddrV6>) -> Bytes {
    let mut out = BytesMut::new();
    for a in addrs.into_iter().take(MAX_PACKED) {
        out.put_slice(&a.ip().octets());
        out.put_u16_le(a.port());
    }
    out.freeze()
}

/// Writes a packed IPv4 list, at most [`MAX_PACKED`] entries.
pub fn encode_packed4<'a>(addrs: impl IntoIterator<Item = &'a SocketAddrV4>) -> Bytes {
    let mut out = BytesMut::new();
    for a in addrs.into_iter().take(MAX_PACKED) {
        out.put_slice(&a.ip().octets());
        out.put_u16_le(a.port());
    }
    out.freeze()
}

/// A packed list split by family: the IPv4 addresses (IPv4-mapped ones
/// included) and the IPv6 ones, in order.
pub fn split_families(addrs: &[SocketAddr]) -> (Vec<SocketAddrV4>, Vec<SocketAddrV6>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for a in addrs {
        match a.ip().to_canonical() {
            IpAddr::V4(ip) => v4.push(SocketAddrV4::new(ip, a.port())),
            IpAddr::V6(ip) => v6.push(SocketAddrV6::new(ip, a.port(), 0, 0)),
        }
    }
    (v4, v6)
}

/// The extensions that carry `addrs` under the IPv4 name `id4` (`IPP`, `ALT`,
/// `PUSH`) and the IPv6 name `id6` (`IPP6`, `ALT6`, `PUSH6`): one each for the
/// families present, IPv6 only when `with_v6` (the receiver said it reads
/// IPv6), IPv4 unless `no_v4`. IPv6 lists are compressed when that shrinks
/// them, as gtk-gnutella does.
pub fn packed_exts(
    addrs: &[SocketAddr],
    id4: &str,
    id6: &str,
    with_v6: bool,
    no_v4: bool,
) -> Vec<GgepExt> {
    let (v4, v6) = split_families(addrs);
    let mut exts = Vec::new();
    if !no_v4 && !v4.is_empty() {
        exts.push(GgepExt::new(id4, encode_packed4(&v4)));
    }
    if (with_v6 || no_v4) && !v6.is_empty() {
        exts.push(GgepExt::new(id6, encode_packed6(&v6)).compressed_if_smaller());
    }
    exts
}

/// Every address of a block's `id4` and `id6` lists (a malformed list is
/// skipped whole), IPv4 first; at most [`MAX_PACKED`] of each.
pub fn packed_of(ggep: &Ggep, id4: &str, id6: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    if let Some(e) = ggep.get(id4) {
        if let Ok(v) = parse_packed4(&e.data) {
            out.extend(v.into_iter().map(SocketAddr::V4));
        }
    }
    if let Some(e) = ggep.get(id6) {
        if let Ok(v) = parse_packed6(&e.data) {
            out.extend(v.into_iter().map(SocketAddr::V6));
        }
    }
    out
}

/// Reads a Pong's `IP` echo: 6 bytes (IPv4) or 18 (IPv6); the length tells.
pub fn parse_ip_echo(data: &[u8]) -> Option<SocketAddr> {
    match data.len() {
        ENTRY4_LEN => parse_packed4(data).ok()?.pop().map(SocketAddr::V4),
        ENTRY6_LEN => parse_packed6(data).ok()?.pop().map(SocketAddr::V6),
        _ => None,
    }
}

/// Writes the `IP` echo of `addr` (IPv4-mapped addresses as IPv4).
pub fn encode_ip_echo(addr: SocketAddr) -> Bytes {
    match addr.ip().to_canonical() {
        IpAddr::V4(ip) => encode_packed4(&[SocketAddrV4::new(ip, addr.port())]),
        IpAddr::V6(ip) => encode_packed6(&[SocketAddrV6::new(ip, addr.port(), 0, 0)]),
    }
}

/// What a query's `I6` says about the addresses its sender takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I6 {
    /// No `I6`: IPv4 addresses only (a servent that knows nothing of IPv6).
    Absent,
    /// IPv6 addresses as well as IPv4 ones.
    Also,
    /// IPv6 addresses only (bit 0 of a one-byte value).
    Only,
}

impl I6 {
    /// Reads an `I6` value (present): empty or bit 0 clear is [`I6::Also`].
    pub fn from_value(data: &[u8]) -> I6 {
        match data.first() {
            Some(b) if b & 1 != 0 => I6::Only,
            _ => I6::Also,
        }
    }

    /// The `I6` extension that says this (`None` for [`I6::Absent`]).
    pub fn ext(self) -> Option<GgepExt> {
        match self {
            I6::Absent => None,
            I6::Also => Some(GgepExt::flag(GGEP_I6)),
            I6::Only => Some(GgepExt::new(GGEP_I6, Bytes::from_static(&[1]))),
        }
    }

    /// Whether IPv6 addresses may be given to the sender.
    pub fn takes_v6(self) -> bool {
        self != I6::Absent
    }

    /// Whether IPv4 addresses may be given to the sender.
    pub fn takes_v4(self) -> bool {
        self != I6::Only
    }

    /// What a node with these addresses says: `Also` with both, `Only` with
    /// IPv6 alone, `Absent` without IPv6.
    pub fn of_node(has_v4: bool, has_v6: bool) -> I6 {
        match (has_v4, has_v6) {
            (_, false) => I6::Absent,
            (true, true) => I6::Also,
            (false, true) => I6::Only,
        }
    }
}

/// The `I6` of a block (the first one).
pub fn i6_of(ggep: &Ggep) -> I6 {
    ggep.get(GGEP_I6)
        .map_or(I6::Absent, |e| I6::from_value(&e.data))
}

/// What an `SCP` value asks for: (IPv4 hosts, IPv6 hosts). No IPv4 implies
/// IPv6, whatever the 0x04 bit says.
pub fn scp_families(scp: &[u8]) -> (bool, bool) {
    let f = scp.first().copied().unwrap_or(0);
    let no_v4 = f & SCP_NO_IPV4 != 0;
    (!no_v4, no_v4 || f & SCP_IPV6 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn six_reads_16_bytes_and_tolerates_more() {
        let a = v6("2a02:11::3");
        assert_eq!(ipv6_value(&a.octets()), Some(a));
        let mut long = a.octets().to_vec();
        long.push(9);
        assert_eq!(ipv6_value(&long), Some(a), "gtk reads the first 16");
        assert_eq!(ipv6_value(&[]), None, "empty: no address");
        assert_eq!(ipv6_value(&a.octets()[..15]), None);
        let g = Ggep::new(vec![
            GgepExt::new(GGEP_GTKG_IPV6, Bytes::new()),
            GgepExt::new(GGEP_GTKG_IPV6, Bytes::copy_from_slice(&a.octets())),
        ]);
        assert_eq!(ipv6_of(&g), Some(a), "the old name, an empty one skipped");
        let wire = g.to_bytes(false).unwrap();
        let (view, _) = GgepView::parse(&wire).unwrap();
        assert_eq!(ipv6_of_view(&view), Some(a));
        assert_eq!(ipv6_of(&Ggep::new(vec![GgepExt::flag("BH")])), None);
    }

    #[test]
    fn advertising_and_reading_back_the_host() {
        let a = v6("2001:db8::5");
        let four = Ipv4Addr::new(198, 51, 100, 1);
        assert_eq!(advertise(IpAddr::V6(a), None), (IPV4_NONE, Some(a)));
        assert_eq!(advertise(IpAddr::V4(four), None), (four, None));
        assert_eq!(advertise(IpAddr::V4(four), Some(a)), (four, Some(a)));
        let mapped = IpAddr::V6(four.to_ipv6_mapped());
        assert_eq!(advertise(mapped, Some(a)), (four, Some(a)));
        assert_eq!(
            advertise(IpAddr::V4(four), Some(four.to_ipv6_mapped())),
            (four, None),
            "a mapped address is no IPv6 to say"
        );
        assert_eq!(host_ip(IPV4_NONE, Some(a)), IpAddr::V6(a));
        assert_eq!(host_ip(Ipv4Addr::UNSPECIFIED, Some(a)), IpAddr::V6(a));
        assert_eq!(host_ip(four, Some(a)), IpAddr::V4(four), "IPv4 is primary");
        assert_eq!(host_ip(IPV4_NONE, None), IpAddr::V4(IPV4_NONE));
    }

    #[test]
    fn packed_lists_round_trip_and_refuse_ragged_values() {
        let hosts = [
            SocketAddrV6::new(v6("2a02:11::3"), 6346, 0, 0),
            SocketAddrV6::new(v6("2001:db8::1"), 0xa04a, 0, 0),
        ];
        let wire = encode_packed6(&hosts);
        assert_eq!(wire.len(), 36);
        assert_eq!(&wire[16..18], &[0xca, 0x18], "port little-endian");
        assert_eq!(parse_packed6(&wire).unwrap(), hosts);
        assert_eq!(parse_packed6(&[]), Err(PackedError::Empty));
        assert_eq!(
            parse_packed6(&wire[..35]),
            Err(PackedError::Ragged { len: 35, entry: 18 })
        );
        let four = [SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 3), 6346)];
        let w4 = encode_packed4(&four);
        assert_eq!(&w4[..], &[11, 0, 0, 3, 0xca, 0x18]);
        assert_eq!(parse_packed4(&w4).unwrap(), four);
        let many: Vec<SocketAddrV6> = (0..300u16)
            .map(|i| SocketAddrV6::new(v6("2001:db8::"), i + 1, 0, 0))
            .collect();
        assert_eq!(encode_packed6(&many).len(), MAX_PACKED * 18);
        let mut big = BytesMut::new();
        for a in &many {
            big.put_slice(&a.ip().octets());
            big.put_u16_le(a.port());
        }
        assert_eq!(parse_packed6(&big).unwrap().len(), MAX_PACKED);
    }

    #[test]
    fn mixed_lists_split_by_family() {
        let addrs: Vec<SocketAddr> = [
            "11.0.0.3:6346",
            "[2a02:11::3]:6346",
            "[::ffff:11.0.0.1]:19104",
            "[2a02:11::4]:6347",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let exts = packed_exts(&addrs, "IPP", GGEP_IPP6, true, false);
        let ids: Vec<&str> = exts.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["IPP", "IPP6"]);
        assert_eq!(exts[0].data.len(), 12);
        let g = Ggep::new(exts);
        let (back, _) = Ggep::parse(&g.to_bytes(false).unwrap()).unwrap();
        let got = packed_of(&back, "IPP", GGEP_IPP6);
        let want: Vec<SocketAddr> = [
            "11.0.0.3:6346",
            "11.0.0.1:19104",
            "[2a02:11::3]:6346",
            "[2a02:11::4]:6347",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        assert_eq!(got, want);
        let only4 = packed_exts(&addrs, "IPP", GGEP_IPP6, false, false);
        assert_eq!(only4.len(), 1, "no IPv6 to a receiver that did not ask");
        let only6 = packed_exts(&addrs, "IPP", GGEP_IPP6, false, true);
        assert_eq!(only6.len(), 1);
        assert_eq!(only6[0].id.as_str(), "IPP6");
        assert!(packed_exts(&[], "IPP", GGEP_IPP6, true, false).is_empty());
    }

    #[test]
    fn ip_echo_is_told_by_its_length() {
        let four: SocketAddr = "11.0.0.8:7001".parse().unwrap();
        let w = encode_ip_echo(four);
        // Captured: gtk's pong to 11.0.0.8:7001 (`ping-ip-gtk`).
        assert_eq!(&w[..], &[0x0b, 0x00, 0x00, 0x08, 0x59, 0x1b]);
        assert_eq!(parse_ip_echo(&w), Some(four));
        let six: SocketAddr = "[2a02:11::1]:7002".parse().unwrap();
        let w = encode_ip_echo(six);
        assert_eq!(w.len(), 18);
        assert_eq!(parse_ip_echo(&w), Some(six));
        assert_eq!(parse_ip_echo(&[]), None);
        assert_eq!(parse_ip_echo(&[1; 12]), None);
        let mapped: SocketAddr = "[::ffff:11.0.0.8]:7001".parse().unwrap();
        assert_eq!(encode_ip_echo(mapped).len(), 6);
    }

    #[test]
    fn i6_and_scp() {
        assert_eq!(I6::from_value(&[]), I6::Also);
        assert_eq!(I6::from_value(&[1]), I6::Only);
        assert_eq!(I6::from_value(&[2]), I6::Also);
        for i in [I6::Also, I6::Only] {
            let g = Ggep::new(vec![i.ext().unwrap()]);
            assert_eq!(i6_of(&g), i);
        }
        assert_eq!(I6::Absent.ext(), None);
        assert_eq!(i6_of(&Ggep::new(vec![GgepExt::flag("QK")])), I6::Absent);
        assert!(I6::Also.takes_v4() && I6::Also.takes_v6());
        assert!(!I6::Only.takes_v4() && !I6::Absent.takes_v6());
        assert_eq!(I6::of_node(true, false), I6::Absent);
        assert_eq!(I6::of_node(true, true), I6::Also);
        assert_eq!(I6::of_node(false, true), I6::Only);
        assert_eq!(scp_families(&[]), (true, false));
        assert_eq!(scp_families(&[0x01]), (true, false));
        assert_eq!(scp_families(&[0x05]), (true, true));
        assert_eq!(scp_families(&[0x08]), (false, true));
        assert_eq!(scp_families(&[0x0c]), (false, true));
    }
}
