//! The 23-byte descriptor header.

use crate::wire::guid::{Guid, Hops, Ttl};

/// Length of a descriptor header on the wire.
pub const HEADER_LEN: usize = 23;

/// A descriptor's function (payload type) code.
///
/// Unknown codes are kept as [`Function::Unknown`] so that framing can carry them to
/// the layer that counts and drops them; parsing their payload is an error.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Function {
    Ping,
    Pong,
    Bye,
    RouteTable,
    Vendor,
    StandardVendor,
    Push,
    Query,
    QueryHit,
    Unknown(u8),
}

impl Function {
    /// The code as it appears in byte 16 of the header.
    pub fn code(self) -> u8 {
        match self {
            Function::Ping => 0x00,
            Function::Pong => 0x01,
            Function::Bye => 0x02,
            Function::RouteTable => 0x30,
            Function::Vendor => 0x31,
            Function::StandardVendor => 0x32,
            Function::Push => 0x40,
            Function::Query => 0x80,
            Function::QueryHit => 0x81,
            Function::Unknown(c) => c,
        }
    }

    /// The function for a header byte.
    pub fn from_code(code: u8) -> Function {
        match code {
            0x00 => Function::Ping,
            0x01 => Function::Pong,
            0x02 => Function::Bye,
            0x30 => Function::RouteTable,
            0x31 => Function::Vendor,
            0x32 => Function::StandardVendor,
            0x40 => Function::Push,
            0x80 => Function::Query,
            0x81 => Function::QueryHit,
            c => Function::Unknown(c),
        }
    }

    /// A short lower-case name, for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            Function::Ping => "ping",
            Function::Pong => "pong",
            Function::Bye => "bye",
            Function::RouteTable => "route-table",
            Function::Vendor => "vendor",
            Function::StandardVendor => "standard-vendor",
            Function::Push => "push",
            Function::Query => "query",
            Function::QueryHit => "query-hit",
            Function::Unknown(_) => "unknown",
        }
    }
}

/// A parsed descriptor header. `Copy`, and parsing it never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Header {
    /// The message ID (MUID), preserved when forwarding.
    pub guid: Guid,
    pub function: Function,
    pub ttl: Ttl,
    pub hops: Hops,
    /// Length of the payload that follows, as read from the wire (little-endian).
    pub payload_len: u32,
}

impl Header {
    /// Reads a header from exactly 23 bytes.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&b[..16]);
        Header {
            guid: Guid(guid),
            function: Function::from_code(b[16]),
            ttl: Ttl(b[17]),
            hops: Hops(b[18]),
            payload_len: u32::from_le_bytes([b[19], b[20], b[21], b[22]]),
        }
    }

    /// Reads a header from the start of `b`, or `None` when fewer than 23 bytes are
    /// available.
    pub fn parse_prefix(b: &[u8]) -> Option<Header> {
        b.get(..HEADER_LEN)
            .map(|h| Header::parse(h.try_into().expect("23 bytes")))
    }

    /// The header's 23 wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..16].copy_from_slice(&self.guid.0);
        b[16] = self.function.code();
        b[17] = self.ttl.0;
        b[18] = self.hops.0;
        b[19..].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// The header a forwarder sends on: TTL one less, hops one more. `None` when the
    /// TTL is spent and the message must not be forwarded.
    pub fn forwarded(&self) -> Option<Header> {
        Some(Header {
            ttl: self.ttl.after_hop()?,
            hops: self.hops.after_hop(),
            ..*self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            assert_eq!(Function::from_code(c).code(), c);
        }
    }

    #[test]
    fn header_round_trip() {
        let raw: [u8; 23] = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xff, 0x00, 0x11, 0x22, 0x33, 0x44,
            0x55, 0x00, 0x81, 0x05, 0x00, 0x71, 0x00, 0x00, 0x00,
        ];
        let h = Header::parse(&raw);
        assert_eq!(h.function, Function::QueryHit);
        assert_eq!(h.ttl, Ttl(5));
        assert_eq!(h.hops, Hops(0));
        assert_eq!(h.payload_len, 0x71);
        assert_eq!(h.to_bytes(), raw);
        let f = h.forwarded().unwrap();
        assert_eq!((f.ttl, f.hops), (Ttl(4), Hops(1)));
    }
}
