//! The extension area shared by Query payloads and QueryHit result records.
//!
//! After a NUL-terminated text comes a run of items: HUGE URN strings (`urn:...`),
//! XML documents (`<...`), GGEP blocks (`0xC3...`) and anything else, which is kept
//! as an opaque item. Items are separated by a single FS (0x1C). GGEP blocks are
//! delimited by their own length fields, so they may contain FS bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError};
use crate::wire::ggep::{self, Ggep};
use crate::wire::huge::{Sha1Urn, strip_prefix_ci};

/// The item separator.
pub const FS: u8 = 0x1C;

/// One item of an extension area.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ExtItem {
    /// A HUGE URN string, kept as sent (e.g. `urn:`, `urn:sha1:`, or a full URN).
    Urn(Bytes),
    /// An XML document (starts with `<`).
    Xml(Bytes),
    /// A GGEP block.
    Ggep(Ggep),
    /// An item of a kind we do not interpret, kept so it can be inspected.
    Other(Bytes),
}

impl ExtItem {
    /// A SHA-1 URN item.
    pub fn sha1(urn: &Sha1Urn) -> ExtItem {
        ExtItem::Urn(Bytes::from(urn.to_string()))
    }
}

/// An extension area: the items in the order they appeared.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ExtArea {
    pub items: Vec<ExtItem>,
}

/// Where an extension area ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AreaEnd {
    /// At the first NUL outside a GGEP block (QueryHit result records).
    Nul,
    /// At the end of the buffer; NUL and FS both separate items (Query payloads).
    End,
}

fn classify(item: &[u8]) -> fn(Bytes) -> ExtItem {
    if strip_prefix_ci(item, b"urn:").is_some() {
        ExtItem::Urn
    } else if item.first() == Some(&b'<') {
        ExtItem::Xml
    } else {
        ExtItem::Other
    }
}

impl ExtArea {
    /// Whether the area has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The URN strings.
    pub fn urns(&self) -> impl Iterator<Item = &Bytes> {
        self.items.iter().filter_map(|i| match i {
            ExtItem::Urn(u) => Some(u),
            _ => None,
        })
    }

    /// The SHA-1 URNs that parse.
    pub fn sha1_urns(&self) -> impl Iterator<Item = Sha1Urn> + '_ {
        self.urns().filter_map(|u| Sha1Urn::parse(u).ok())
    }

    /// The first GGEP block.
    pub fn ggep(&self) -> Option<&Ggep> {
        self.items.iter().find_map(|i| match i {
            ExtItem::Ggep(g) => Some(g),
            _ => None,
        })
    }

    /// Parses the area starting at `buf[start]`. Returns the area and the offset
    /// just past it: past the terminating NUL for [`AreaEnd::Nul`], the buffer's
    /// length for [`AreaEnd::End`]. Empty items (separators in a row) are skipped.
    pub fn parse(
        buf: &Bytes,
        start: usize,
        end: AreaEnd,
        budget: &mut usize,
    ) -> Result<(ExtArea, usize), WireError> {
        let mut items = Vec::new();
        let mut pos = start;
        loop {
            let Some(&b) = buf.get(pos) else {
                return match end {
                    AreaEnd::End => Ok((ExtArea { items }, pos)),
                    AreaEnd::Nul => Err(WireError::MissingNul {
                        what: "result extension area",
                    }),
                };
            };
            match b {
                0 if end == AreaEnd::Nul => return Ok((ExtArea { items }, pos + 1)),
                0 | FS => pos += 1,
                ggep::MAGIC => {
                    let (g, used) = Ggep::parse_with_budget(&buf.slice(pos..), budget)?;
                    items.push(ExtItem::Ggep(g));
                    pos += used;
                }
                _ => {
                    let len = buf[pos..]
                        .iter()
                        .position(|&c| c == 0 || c == FS)
                        .unwrap_or(buf.len() - pos);
                    let item = buf.slice(pos..pos + len);
                    items.push(classify(&item)(item));
                    pos += len;
                }
            }
        }
    }

    /// Writes the items separated by single FS bytes, GGEP values COBS-encoded where
    /// they contain NUL. No terminator is written.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.put_u8(FS);
            }
            match item {
                ExtItem::Ggep(g) => g.encode(out, true)?,
                ExtItem::Urn(b) | ExtItem::Xml(b) | ExtItem::Other(b) => {
                    check_item(item, b)?;
                    out.put_slice(b);
                }
            }
        }
        Ok(())
    }
}

/// Rejects an item that would not parse back as itself.
fn check_item(item: &ExtItem, b: &Bytes) -> Result<(), EncodeError> {
    const WHAT: &str = "extension item";
    if let Some(&byte) = b.iter().find(|&&c| c == 0 || c == FS) {
        return Err(EncodeError::ForbiddenByte { what: WHAT, byte });
    }
    if b.is_empty() || b[0] == ggep::MAGIC || classify(b)(Bytes::new()) != empty_like(item) {
        return Err(EncodeError::Invalid {
            what: WHAT,
            why: "empty, or its first bytes make it another kind of item",
        });
    }
    Ok(())
}

fn empty_like(item: &ExtItem) -> ExtItem {
    match item {
        ExtItem::Urn(_) => ExtItem::Urn(Bytes::new()),
        ExtItem::Xml(_) => ExtItem::Xml(Bytes::new()),
        _ => ExtItem::Other(Bytes::new()),
    }
}
