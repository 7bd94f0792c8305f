//! Query (0x80): a flags word, NUL-terminated search text, and an extension area.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError, WireResult};
use crate::wire::ext::{AreaEnd, ExtArea, ExtAreaView};

/// The two bytes that open a Query, kept as they appear on the wire.
///
/// When bit 7 of the first byte is set the bytes are a flags word; the bit
/// constants below are positions in the big-endian reading of the two bytes, so
/// they address the same wire bits every deployed servent uses. Otherwise the bytes
/// are a legacy minimum speed, little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct QueryFlags(pub [u8; 2]);

impl QueryFlags {
    /// "These bytes are flags" marker.
    pub const MARKER: u16 = 0x8000;
    /// The querier is firewalled: a firewalled responder must not answer.
    pub const FIREWALLED: u16 = 0x4000;
    /// The querier wants XML metadata in hits.
    pub const XML: u16 = 0x2000;
    /// Leaf-guided dynamic query.
    pub const LEAF_GUIDED: u16 = 0x1000;
    /// The querier understands GGEP `H` in hits.
    pub const GGEP_H: u16 = 0x0800;
    /// Out-of-band replies wanted; the MUID carries the reply address.
    pub const OOB: u16 = 0x0400;
    /// The querier can do firewall-to-firewall transfers.
    pub const FW_TO_FW: u16 = 0x0200;
    /// The querier accepts semi-reliable UDP replies.
    pub const SEMI_RELIABLE_UDP: u16 = 0x0100;

    /// A flags word with the marker and the given bits, no hit limit.
    pub fn with_bits(bits: u16) -> QueryFlags {
        QueryFlags((bits | Self::MARKER).to_be_bytes())
    }

    /// The big-endian reading of the two bytes.
    pub fn bits(self) -> u16 {
        u16::from_be_bytes(self.0)
    }

    /// Whether the bytes are a flags word (rather than a legacy speed).
    pub fn is_flags(self) -> bool {
        self.0[0] & 0x80 != 0
    }

    /// Whether a flag (one of the constants) is set. Always false for a legacy
    /// speed value.
    pub fn has(self, flag: u16) -> bool {
        self.is_flags() && self.bits() & flag == flag
    }

    /// The maximum number of hits wanted (0 = no limit), when these are flags.
    pub fn max_hits(self) -> Option<u8> {
        self.is_flags().then_some(self.0[1])
    }

    /// The legacy minimum speed in kbit/s, when these are not flags.
    pub fn min_speed(self) -> Option<u16> {
        (!self.is_flags()).then(|| u16::from_le_bytes(self.0))
    }
}

/// A Query.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Query {
    pub flags: QueryFlags,
    /// The search text as sent (normally UTF-8 keywords separated by spaces). A
    /// lone backslash means "match by URN only".
    pub text: Bytes,
    /// URNs, XML, GGEP and other items after the text.
    pub ext: ExtArea,
}

impl Query {
    /// A plain keyword query with the given flags and no extensions.
    pub fn new(flags: QueryFlags, text: &str) -> Query {
        Query {
            flags,
            text: Bytes::copy_from_slice(text.as_bytes()),
            ext: ExtArea::default(),
        }
    }

    /// What the query's `I6` says about the addresses its sender takes.
    pub fn i6(&self) -> crate::wire::ipv6::I6 {
        self.ext
            .ggep()
            .map_or(crate::wire::ipv6::I6::Absent, crate::wire::ipv6::i6_of)
    }

    /// The IPv6 address out-of-band hits go to (GGEP `6`; the GUID's IPv4
    /// part is then 127.0.0.0).
    pub fn oob_ipv6(&self) -> Option<std::net::Ipv6Addr> {
        self.ext.ggep().and_then(crate::wire::ipv6::ipv6_of)
    }

    /// The search text, decoded as UTF-8 with invalid bytes replaced.
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    /// Parses a Query payload. The extension area runs to the end of the payload;
    /// NUL and FS both separate its items.
    pub fn parse(payload: &Bytes, budget: &mut usize) -> WireResult<Query> {
        let v = QueryView::parse(payload)?;
        Ok(Query {
            flags: v.flags,
            text: payload.slice_ref(v.text),
            ext: ExtArea::from_view(payload, &v.ext, budget)?,
        })
    }

    /// Appends the payload: flags, text, NUL, the items separated by FS, and one
    /// terminating NUL (so a query with no items ends in two NULs).
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if crate::wire::cobs::has_nul(&self.text) {
            return Err(EncodeError::ForbiddenByte {
                what: "query text",
                byte: 0,
            });
        }
        out.put_slice(&self.flags.0);
        out.put_slice(&self.text);
        out.put_u8(0);
        self.ext.encode(out)?;
        out.put_u8(0);
        Ok(())
    }
}

/// A validated Query, borrowed from its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryView<'a> {
    pub flags: QueryFlags,
    pub text: &'a [u8],
    pub ext: ExtAreaView<'a>,
}

impl<'a> QueryView<'a> {
    /// What the query's `I6` says (see [`Query::i6`]), without allocating.
    pub fn i6(&self) -> crate::wire::ipv6::I6 {
        use crate::wire::ipv6::{GGEP_I6, I6};
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        self.ext
            .ggep()
            .and_then(|g| g.get(GGEP_I6))
            .map_or(I6::Absent, |e| {
                e.value(&mut budget)
                    .map_or(I6::Also, |v| I6::from_value(&v))
            })
    }

    /// Validates a Query payload without allocating.
    pub fn parse(payload: &'a [u8]) -> WireResult<QueryView<'a>> {
        if payload.len() < 2 {
            return Err(WireError::Truncated { what: "query" });
        }
        let nul = crate::wire::scan::find_nul(&payload[2..])
            .ok_or(WireError::MissingNul { what: "query text" })?
            + 2;
        let (ext, _) = ExtAreaView::parse(&payload[nul + 1..], AreaEnd::End)?;
        Ok(QueryView {
            flags: QueryFlags([payload[0], payload[1]]),
            text: &payload[2..nul],
            ext,
        })
    }
}
