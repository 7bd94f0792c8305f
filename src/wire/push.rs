//! Push (0x40): asks a firewalled servent to connect out and offer a file.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{be_u32, le_u16, le_u32};

use crate::wire::error::{EncodeError, WireResult};
use crate::wire::ggep::Ggep;
use crate::wire::guid::Guid;
use crate::wire::ipv6;
use crate::wire::message::{fields, ggep_tail};

/// File index meaning "any file" (the download is then named by URN).
pub const INDEX_ANY: u32 = 0;

/// A Push: 26 fixed bytes then an optional GGEP block.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Push {
    /// The servent GUID of the host that should connect (from its QueryHit).
    pub servent: Guid,
    pub index: u32,
    /// Where the target must connect to.
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ggep: Option<Ggep>,
}

impl Push {
    /// Parses a Push payload.
    pub fn parse(payload: &Bytes, budget: &mut usize) -> WireResult<Push> {
        let (_, (guid, index, ip, port)) =
            fields("push", payload, (take(16usize), le_u32, be_u32, le_u16))?;
        Ok(Push {
            servent: Guid::from_slice(guid).expect("16 bytes"),
            index,
            ip: Ipv4Addr::from(ip),
            port,
            ggep: ggep_tail(payload, 26, budget)?,
        })
    }

    /// A Push asking `servent` to connect to `to` (an IPv6 address is written
    /// as 127.0.0.0 with GGEP `6`, as gtk-gnutella does).
    pub fn to(servent: Guid, index: u32, to: SocketAddr) -> Push {
        let (ip, v6) = ipv6::advertise(to.ip(), None);
        Push {
            servent,
            index,
            ip,
            port: to.port(),
            ggep: v6.map(|a| Ggep::new(vec![ipv6::ipv6_ext(a)])),
        }
    }

    /// The IPv6 address in GGEP `6` (or `GTKG.IPV6`).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ggep.as_ref().and_then(ipv6::ipv6_of)
    }

    /// Where the target must connect: the IPv6 address when the IPv4 field
    /// says "IPv6 only", else the IPv4 field.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(ipv6::host_ip(self.ip, self.ipv6()), self.port)
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_slice(self.servent.as_bytes());
        out.put_u32_le(self.index);
        out.put_slice(&self.ip.octets());
        out.put_u16_le(self.port);
        match &self.ggep {
            Some(g) => g.encode(out, false),
            None => Ok(()),
        }
    }
}
