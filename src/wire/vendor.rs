//! Vendor messages (0x31 and the "standard" 0x32): vendor, selector, version, body.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError, WireResult};

/// The all-zero vendor used by the "Messages Supported" family.
pub const NULL_VENDOR: [u8; 4] = [0; 4];

/// A vendor message. The vendor code is compared exactly (case-sensitive); the
/// body is kept as it is for the handler of that message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VendorMsg {
    pub vendor: [u8; 4],
    pub selector: u16,
    pub version: u16,
    pub body: Bytes,
}

/// One entry of a "Messages Supported" list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Supported {
    pub vendor: [u8; 4],
    pub selector: u16,
    pub version: u16,
}

impl VendorMsg {
    /// Parses a vendor-message payload.
    pub fn parse(payload: &Bytes) -> WireResult<VendorMsg> {
        if payload.len() < 8 {
            return Err(WireError::Truncated {
                what: "vendor message",
            });
        }
        Ok(VendorMsg {
            vendor: [payload[0], payload[1], payload[2], payload[3]],
            selector: u16::from_le_bytes([payload[4], payload[5]]),
            version: u16::from_le_bytes([payload[6], payload[7]]),
            body: payload.slice(8..),
        })
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_slice(&self.vendor);
        out.put_u16_le(self.selector);
        out.put_u16_le(self.version);
        out.put_slice(&self.body);
        Ok(())
    }

    /// Whether this is `vendor/selector` (any version).
    pub fn is(&self, vendor: &[u8; 4], selector: u16) -> bool {
        &self.vendor == vendor && self.selector == selector
    }

    /// A "Messages Supported" (`null/0v0`) message listing `entries`.
    pub fn messages_supported(entries: &[Supported]) -> VendorMsg {
        let mut body = BytesMut::with_capacity(2 + 8 * entries.len());
        body.put_u16_le(entries.len() as u16);
        for e in entries {
            body.put_slice(&e.vendor);
            body.put_u16_le(e.selector);
            body.put_u16_le(e.version);
        }
        VendorMsg {
            vendor: NULL_VENDOR,
            selector: 0,
            version: 0,
            body: body.freeze(),
        }
    }

    /// The entries of a "Messages Supported" body: a u16le count then that many
    /// 8-byte entries, exactly.
    pub fn supported_entries(&self) -> WireResult<Vec<Supported>> {
        const WHAT: &str = "messages supported";
        let b = &self.body;
        if b.len() < 2 {
            return Err(WireError::Truncated { what: WHAT });
        }
        let count = u16::from_le_bytes([b[0], b[1]]) as usize;
        if b.len() != 2 + 8 * count {
            return Err(WireError::BadLength {
                what: WHAT,
                expected: 2 + 8 * count,
                got: b.len(),
            });
        }
        Ok(b[2..]
            .chunks_exact(8)
            .map(|e| Supported {
                vendor: [e[0], e[1], e[2], e[3]],
                selector: u16::from_le_bytes([e[4], e[5]]),
                version: u16::from_le_bytes([e[6], e[7]]),
            })
            .collect())
    }
}
