//! Message and servent identifiers, and the TTL/hops counters of the header.

use std::fmt;

/// A 16-byte Gnutella identifier: a message ID (MUID) or a servent GUID.
///
/// Treated as opaque bytes; historical markings (byte 8 = 0xFF, byte 15 = 0) are
/// neither required nor checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// A fresh random identifier, taken from the bytes of a UUID v4.
    pub fn new_random() -> Self {
        Guid(*uuid::Uuid::new_v4().as_bytes())
    }

    /// The identifier's bytes, in wire order.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Reads a GUID from the first 16 bytes of `b`, if there are that many.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.get(..16)
            .map(|s| Guid(s.try_into().expect("slice of 16 bytes")))
    }

    /// Parses 32 hexadecimal digits (either case), as used in `GIV` lines and
    /// handshake headers.
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.as_bytes();
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Guid(out))
    }

    /// The 32-digit upper-case hexadecimal form.
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(32);
        for b in self.0 {
            let _ = write!(s, "{b:02X}");
        }
        s
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({})", self.to_hex())
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Time-to-live: how many more hops a message may travel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Ttl(pub u8);

/// How many hops a message has travelled so far.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct Hops(pub u8);

impl Ttl {
    /// The TTL after one more hop, or `None` when the message must not travel on
    /// (its TTL would reach zero).
    pub fn after_hop(self) -> Option<Ttl> {
        match self.0 {
            0 | 1 => None,
            n => Some(Ttl(n - 1)),
        }
    }

    /// This TTL, lowered so that it is at most `max`. TTLs are never raised.
    pub fn clamp_to(self, max: u8) -> Ttl {
        Ttl(self.0.min(max))
    }
}

impl Hops {
    /// The hop count after one more hop (saturating at 255).
    pub fn after_hop(self) -> Hops {
        Hops(self.0.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let g = Guid([
            0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18, 0xff, 0x29, 0x3a, 0x4b, 0x5c, 0x6d,
            0x7e, 0x00,
        ]);
        assert_eq!(g.to_hex(), "A1B2C3D4E5F60718FF293A4B5C6D7E00");
        assert_eq!(Guid::from_hex(&g.to_hex().to_lowercase()), Some(g));
        assert_eq!(Guid::from_hex("zz"), None);
        assert_eq!(Guid::from_hex(&"g".repeat(32)), None);
    }

    #[test]
    fn random_guids_differ() {
        assert_ne!(Guid::new_random(), Guid::new_random());
    }

    #[test]
    fn ttl_rules() {
        assert_eq!(Ttl(0).after_hop(), None);
        assert_eq!(Ttl(1).after_hop(), None);
        assert_eq!(Ttl(2).after_hop(), Some(Ttl(1)));
        assert_eq!(Ttl(255).clamp_to(7), Ttl(7));
        assert_eq!(Ttl(3).clamp_to(7), Ttl(3));
        assert_eq!(Hops(255).after_hop(), Hops(255));
    }
}
