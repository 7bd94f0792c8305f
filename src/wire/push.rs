//! Push (0x40): asks a firewalled servent to connect out and offer a file.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{be_u32, le_u16, le_u32};

use crate::wire::error::{EncodeError, WireResult};
use crate::wire::ggep::Ggep;
use crate::wire::guid::Guid;
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
