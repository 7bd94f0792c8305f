//! Ping (0x00): empty, or one GGEP block.

use bytes::{Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireResult};
use crate::wire::ggep::Ggep;
use crate::wire::message::ggep_tail;

/// A Ping. With no GGEP block the payload is empty.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Ping {
    pub ggep: Option<Ggep>,
}

impl Ping {
    /// Parses a Ping payload.
    pub fn parse(payload: &Bytes, budget: &mut usize) -> WireResult<Ping> {
        Ok(Ping {
            ggep: ggep_tail(payload, 0, budget)?,
        })
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match &self.ggep {
            Some(g) => g.encode(out, false),
            None => Ok(()),
        }
    }
}
