//! UDP host caches (UHC): what a Ping over UDP asks for, and what a Pong
//! answering it carries, as typed values over the Ping's and Pong's GGEP
//! (`protocol-spec/bootstrap.md`).
//!
//! A UHC ping is a Ping (TTL 1, hops 0, by UDP) with GGEP `SCP` ("send me
//! packed hosts"), usually `VC` (vendor and version); LimeWire adds an empty
//! `UDPHC` and, when it was never reached from outside, an empty `IP` (echo my
//! address). The answer is one Pong for the answering host itself with GGEP
//! `IPP` (hosts to try, 6 bytes each: IPv4 BE, port LE), and from dedicated
//! caches `UDPHC` (I am a cache) and `PHC` (other caches, text lines).
//!
//! Parsing is tolerant, as the deployed servents are: a value of the wrong
//! size is ignored rather than refusing the whole message, a packed list's
//! partial last entry is left out, and unknown extensions are skipped.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::ggep::{Ggep, GgepExt};
use crate::wire::{Ping, Pong};

/// `SCP` flag: the asker is an ultrapeer (wants ultrapeers with free
/// ultrapeer slots; without it, ultrapeers with free leaf slots).
pub const SCP_ULTRAPEER: u8 = 0x01;
/// `SCP` flag: the asker speaks TLS.
pub const SCP_TLS: u8 = 0x02;
/// `SCP` flag: send IPv6 hosts too (`IPP6`).
pub const SCP_IPV6: u8 = 0x04;
/// `SCP` flag: send no IPv4 hosts.
pub const SCP_NO_IPV4: u8 = 0x08;

/// Bytes of one packed IPv4 host.
pub const PACKED_LEN: usize = 6;
/// Hosts an `IPP` we send holds at most (gtk-gnutella packs 30).
pub const MAX_IPP: usize = 30;
/// Lines of a `PHC` list read at most.
pub const MAX_PHC: usize = 50;
/// The port a `PHC` line without one means.
pub const PHC_DEFAULT_PORT: u16 = 6346;
/// Longest cache name taken from `UDPHC` or a `PHC` line.
pub const MAX_NAME: usize = 255;

/// Our vendor code in `VC`.
pub const VENDOR: [u8; 4] = *b"SRVT";

/// The version byte of `VC` for a `major.minor` version: one nibble each, as
/// the Gnutella Developer Forum wrote it (gtk-gnutella puts a date there).
pub fn version_byte(major: u8, minor: u8) -> u8 {
    (major.min(15) << 4) | minor.min(15)
}

/// Our own `VC` version byte, from the crate's version.
pub fn our_version_byte() -> u8 {
    let major = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    version_byte(major, minor)
}

/// What a Ping received over UDP asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PingAsks {
    /// `SCP` was present: its flags (0 when it was empty: "any host").
    pub scp: Option<u8>,
    /// An empty `IP`: echo the address the datagram came from.
    pub ip: bool,
    /// LimeWire's `UDPHC` marker.
    pub udphc: bool,
    /// `VC`: the asker's vendor and version byte.
    pub vendor: Option<([u8; 4], u8)>,
}

impl PingAsks {
    /// Reads what a Ping asks for from its GGEP.
    pub fn of(ping: &Ping) -> PingAsks {
        let Some(g) = &ping.ggep else {
            return PingAsks::default();
        };
        PingAsks {
            scp: g.get("SCP").map(|e| e.data.first().copied().unwrap_or(0)),
            ip: g.get("IP").is_some_and(|e| e.data.is_empty()),
            udphc: g.get("UDPHC").is_some(),
            vendor: g.get("VC").and_then(|e| vc_of(&e.data)),
        }
    }

    /// Whether packed hosts are asked for, and of IPv4.
    pub fn wants_ipv4_hosts(&self) -> bool {
        self.scp.is_some_and(|f| f & SCP_NO_IPV4 == 0)
    }

    /// Whether the asker is an ultrapeer (it wants ultrapeers with free
    /// ultrapeer slots).
    pub fn from_ultrapeer(&self) -> bool {
        self.scp.is_some_and(|f| f & SCP_ULTRAPEER != 0)
    }
}

fn vc_of(data: &[u8]) -> Option<([u8; 4], u8)> {
    let vendor: [u8; 4] = data.get(..4)?.try_into().ok()?;
    Some((vendor, data.get(4).copied().unwrap_or(0)))
}

/// The Ping we send to a UDP host cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UhcPing {
    /// `SCP` flags ([`SCP_ULTRAPEER`] when we are one).
    pub scp: u8,
    /// `VC`: vendor and version byte.
    pub vendor: Option<([u8; 4], u8)>,
    /// Ask for our address as the cache sees it (an empty `IP`).
    pub ip: bool,
}

impl UhcPing {
    /// The Ping: GGEP `SCP`, then `VC`, then `IP`.
    pub fn ping(&self) -> Ping {
        let mut exts = vec![GgepExt::new("SCP", vec![self.scp])];
        if let Some((vendor, version)) = self.vendor {
            let mut vc = vendor.to_vec();
            vc.push(version);
            exts.push(GgepExt::new("VC", vc));
        }
        if self.ip {
            exts.push(GgepExt::flag("IP"));
        }
        Ping {
            ggep: Some(Ggep::new(exts)),
        }
    }
}

/// What a Pong over UDP carries besides the host it describes. Every field
/// is optional; [`PongExtras::exts`] writes them in the order gtk-gnutella
/// and the deployed caches do (`IPP`, `PHC`, `UDPHC`, `VC`, `UP`, `DU`, `IP`),
/// then `more` as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PongExtras {
    /// `IPP`: hosts to try.
    pub ipp: Vec<SocketAddrV4>,
    /// `PHC`: other caches, `host[:port]` each.
    pub phc: Vec<String>,
    /// `UDPHC`: the answering host is a UDP host cache (`Some("")`), known
    /// by this name (`Some(name)`).
    pub udphc: Option<String>,
    /// `VC`: vendor and version byte.
    pub vendor: Option<([u8; 4], u8)>,
    /// `UP`: {version, free leaf slots, free ultrapeer slots}.
    pub up: Option<[u8; 3]>,
    /// `DU`: daily uptime in seconds.
    pub uptime: Option<u32>,
    /// `IP`: the asker's address as we saw it.
    pub ip: Option<SocketAddrV4>,
    /// Further extensions (other parts' own, such as `GUE`), after ours.
    pub more: Vec<GgepExt>,
}

impl PongExtras {
    /// The GGEP extensions, in wire order.
    pub fn exts(&self) -> Vec<GgepExt> {
        let mut v = Vec::new();
        if !self.ipp.is_empty() {
            v.push(GgepExt::new("IPP", encode_packed(&self.ipp)));
        }
        if !self.phc.is_empty() {
            let text = self.phc.join("\n");
            v.push(GgepExt::new("PHC", text.into_bytes()).compressed_if_smaller());
        }
        if let Some(name) = &self.udphc {
            v.push(GgepExt::new("UDPHC", name.clone().into_bytes()));
        }
        if let Some((vendor, version)) = self.vendor {
            let mut vc = vendor.to_vec();
            vc.push(version);
            v.push(GgepExt::new("VC", vc));
        }
        if let Some(up) = self.up {
            v.push(GgepExt::new("UP", up.to_vec()));
        }
        if let Some(du) = self.uptime {
            v.push(GgepExt::int("DU", du as u64));
        }
        if let Some(ip) = self.ip {
            v.push(GgepExt::new("IP", encode_packed(&[ip])));
        }
        v.extend(self.more.iter().cloned());
        v
    }

    /// A Pong for the host at `addr` with `files` and `kbytes`, carrying
    /// these extras.
    pub fn pong(&self, addr: SocketAddrV4, files: u32, kbytes: u32) -> Pong {
        let exts = self.exts();
        Pong {
            port: addr.port(),
            ip: *addr.ip(),
            files,
            kbytes,
            ggep: (!exts.is_empty()).then(|| Ggep::new(exts)),
        }
    }

    /// Reads the extras of a Pong, tolerantly: values of the wrong size are
    /// left out, and so are a packed list's partial last entry and `PHC`
    /// lines that name no host. `more` is left empty.
    pub fn of(pong: &Pong) -> PongExtras {
        let Some(g) = &pong.ggep else {
            return PongExtras::default();
        };
        PongExtras {
            ipp: g
                .get("IPP")
                .map(|e| parse_packed(&e.data))
                .unwrap_or_default(),
            phc: g.get("PHC").map(|e| parse_phc(&e.data)).unwrap_or_default(),
            udphc: g.get("UDPHC").map(|e| name_of(&e.data).unwrap_or_default()),
            vendor: g.get("VC").and_then(|e| vc_of(&e.data)),
            up: g
                .get("UP")
                .and_then(|e| <[u8; 3]>::try_from(&e.data[..]).ok()),
            uptime: g
                .get("DU")
                .and_then(|e| e.as_int())
                .map(|d| d.min(u32::MAX as u64) as u32),
            ip: g
                .get("IP")
                .filter(|e| e.data.len() == PACKED_LEN)
                .and_then(|e| parse_packed(&e.data).first().copied()),
            more: Vec::new(),
        }
    }
}

/// Packs hosts as 6 bytes each (IPv4 BE, port LE).
pub fn encode_packed(hosts: &[SocketAddrV4]) -> Bytes {
    let mut out = BytesMut::with_capacity(hosts.len() * PACKED_LEN);
    for h in hosts {
        out.put_slice(&h.ip().octets());
        out.put_u16_le(h.port());
    }
    out.freeze()
}

/// Unpacks 6-byte hosts; a partial last entry is left out.
pub fn parse_packed(data: &[u8]) -> Vec<SocketAddrV4> {
    data.chunks_exact(PACKED_LEN)
        .map(|c| {
            SocketAddrV4::new(
                Ipv4Addr::new(c[0], c[1], c[2], c[3]),
                u16::from_le_bytes([c[4], c[5]]),
            )
        })
        .collect()
}

/// A cache name (a host name or address, with an optional `:port`), if it
/// is printable ASCII of a sane length.
fn name_of(data: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(data).ok()?.trim();
    (s.len() <= MAX_NAME && s.bytes().all(|b| b.is_ascii_graphic())).then(|| s.to_string())
}

/// Reads `PHC` lines `host[:port][&features]` as `host:port` (default port
/// 6346; what follows `&` is dropped, as LimeWire does), at most
/// [`MAX_PHC`].
pub fn parse_phc(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == b'\n')
        .filter_map(|line| {
            let line = line.split(|b| *b == b'&').next().unwrap_or_default();
            let name = name_of(line)?;
            cache_name(&name, PHC_DEFAULT_PORT)
        })
        .take(MAX_PHC)
        .collect()
}

/// `host[:port]` as `host:port` (`default_port` when it has none), or `None`
/// when the host or port is not one.
pub fn cache_name(s: &str, default_port: u16) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > MAX_NAME {
        return None;
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return (a.port() != 0).then(|| a.to_string());
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => (s, default_port),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    host_ok.then(|| format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn extras_round_trip() {
        let x = PongExtras {
            ipp: vec![a("203.0.113.5:6346"), a("203.0.113.6:6347")],
            phc: vec!["uhc1.example.org:3558".into(), "203.0.113.9:6346".into()],
            udphc: Some(String::new()),
            vendor: Some((VENDOR, 0x01)),
            up: Some([0, 5, 7]),
            uptime: Some(3600),
            ip: Some(a("203.0.113.77:40000")),
            more: Vec::new(),
        };
        let pong = x.pong(a("198.51.100.1:6346"), 3, 8);
        let mut out = BytesMut::new();
        pong.encode(&mut out).unwrap();
        let back = Pong::parse(&out.freeze(), &mut (1 << 16)).unwrap();
        assert_eq!(PongExtras::of(&back), x);
    }

    #[test]
    fn tolerant_reading() {
        // A partial last entry, a wrong-size IP, PHC with features and junk.
        let g = Ggep::new(vec![
            GgepExt::new("IPP", vec![1, 2, 3, 4, 0xca, 0x18, 9, 9]),
            GgepExt::new("IP", vec![1, 2, 3]),
            GgepExt::new(
                "PHC",
                &b"uhc.example.net:4876&x=1\n\nbad host:1\nh.example:0\n11.0.0.9"[..],
            ),
            GgepExt::new("UDPHC", &b"cache.example.org"[..]),
        ]);
        let pong = Pong {
            port: 1,
            ip: Ipv4Addr::LOCALHOST,
            files: 0,
            kbytes: 0,
            ggep: Some(g),
        };
        let x = PongExtras::of(&pong);
        assert_eq!(x.ipp, [a("1.2.3.4:6346")]);
        assert_eq!(x.ip, None);
        assert_eq!(x.phc, ["uhc.example.net:4876", "11.0.0.9:6346"]);
        assert_eq!(x.udphc.as_deref(), Some("cache.example.org"));
    }

    #[test]
    fn what_a_ping_asks() {
        let p = UhcPing {
            scp: SCP_ULTRAPEER,
            vendor: Some((VENDOR, 1)),
            ip: true,
        }
        .ping();
        let asks = PingAsks::of(&p);
        assert_eq!(asks.scp, Some(1));
        assert!(asks.ip && asks.from_ultrapeer() && asks.wants_ipv4_hosts());
        assert_eq!(asks.vendor, Some((VENDOR, 1)));
        assert_eq!(PingAsks::of(&Ping::default()), PingAsks::default());
        let empty_scp = Ping {
            ggep: Some(Ggep::new(vec![GgepExt::flag("SCP")])),
        };
        assert_eq!(PingAsks::of(&empty_scp).scp, Some(0));
        let v6_only = Ping {
            ggep: Some(Ggep::new(vec![GgepExt::new("SCP", vec![SCP_NO_IPV4])])),
        };
        assert!(!PingAsks::of(&v6_only).wants_ipv4_hosts());
    }

    #[test]
    fn cache_names() {
        assert_eq!(
            cache_name("a.example:1", 6346).as_deref(),
            Some("a.example:1")
        );
        assert_eq!(
            cache_name("a.example", 3558).as_deref(),
            Some("a.example:3558")
        );
        assert_eq!(cache_name("[::1]:5", 1).as_deref(), Some("[::1]:5"));
        assert_eq!(cache_name("a b:1", 1), None);
        assert_eq!(cache_name("a:0", 1), None);
        assert_eq!(cache_name(":1", 1), None);
        assert_eq!(version_byte(1, 2), 0x12);
    }
}
