//! Pong (0x01): a host's address and library size, plus optional GGEP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u32, le_u16, le_u32};

use crate::wire::error::{EncodeError, WireResult};
use crate::wire::ggep::Ggep;
use crate::wire::ipv6;
use crate::wire::message::{fields, ggep_tail};

/// A Pong: 14 fixed bytes then an optional GGEP block.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Pong {
    pub port: u16,
    pub ip: Ipv4Addr,
    pub files: u32,
    pub kbytes: u32,
    pub ggep: Option<Ggep>,
}

impl Pong {
    /// Parses a Pong payload.
    pub fn parse(payload: &Bytes, budget: &mut usize) -> WireResult<Pong> {
        let (_, (port, ip, files, kbytes)) =
            fields("pong", payload, (le_u16, be_u32, le_u32, le_u32))?;
        Ok(Pong {
            port,
            ip: Ipv4Addr::from(ip),
            files,
            kbytes,
            ggep: ggep_tail(payload, 14, budget)?,
        })
    }

    /// The host's IPv6 address (GGEP `6`, or gtk's older `GTKG.IPV6`).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ggep.as_ref().and_then(ipv6::ipv6_of)
    }

    /// Where the host is reached: its IPv6 address when the IPv4 field says
    /// "IPv6 only" (127.0.0.0), else the IPv4 field.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(ipv6::host_ip(self.ip, self.ipv6()), self.port)
    }

    /// Every address the host is reached at: IPv4 (unless "IPv6 only"), then
    /// IPv6.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut out = Vec::with_capacity(2);
        if self.ip != ipv6::IPV4_NONE {
            out.push(SocketAddr::new(IpAddr::V4(self.ip), self.port));
        }
        if let Some(v6) = self.ipv6() {
            out.push(SocketAddr::new(IpAddr::V6(v6), self.port));
        }
        out
    }

    /// The hosts packed in `IPP` and `IPP6` (a UDP host cache's answer).
    pub fn packed_hosts(&self) -> Vec<SocketAddr> {
        self.ggep
            .as_ref()
            .map_or_else(Vec::new, |g| ipv6::packed_of(g, "IPP", ipv6::GGEP_IPP6))
    }

    /// The asker's address as the host saw it (GGEP `IP`, 6 or 18 bytes).
    pub fn ip_echo(&self) -> Option<SocketAddr> {
        let e = self.ggep.as_ref()?.get(ipv6::GGEP_IP)?;
        ipv6::parse_ip_echo(&e.data)
    }

    /// A Pong for our address `primary` (an IPv6 one is written as 127.0.0.0
    /// with `6`), saying `also_v6` in `6` besides an IPv4 primary, followed by
    /// `more` extensions.
    pub fn for_host(
        primary: SocketAddr,
        also_v6: Option<Ipv6Addr>,
        files: u32,
        kbytes: u32,
        more: Vec<crate::wire::GgepExt>,
    ) -> Pong {
        let (ip, v6) = ipv6::advertise(primary.ip(), also_v6);
        let mut exts: Vec<_> = v6.map(ipv6::ipv6_ext).into_iter().collect();
        exts.extend(more);
        Pong {
            port: primary.port(),
            ip,
            files,
            kbytes,
            ggep: (!exts.is_empty()).then(|| Ggep::new(exts)),
        }
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16_le(self.port);
        out.put_slice(&self.ip.octets());
        out.put_u32_le(self.files);
        out.put_u32_le(self.kbytes);
        match &self.ggep {
            Some(g) => g.encode(out, false),
            None => Ok(()),
        }
    }
}
