//! Pong (0x01): a host's address and library size, plus optional GGEP.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u32, le_u16, le_u32};

use crate::wire::error::{EncodeError, WireResult};
use crate::wire::ggep::Ggep;
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
