//! The extension area shared by Query payloads and QueryHit result records.
//!
//! After a NUL-terminated text comes a run of items: HUGE URN strings (`urn:...`),
//! XML documents (`<...`), GGEP blocks (`0xC3...`) and anything else, which is kept
//! as an opaque item. Items are separated by a single FS (0x1C). GGEP blocks are
//! delimited by their own length fields, so they may contain FS bytes.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::wire::error::{EncodeError, WireError};
use crate::wire::ggep::{self, DecodedValues, Ggep, GgepView};
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

/// The items of an area: a result carries one or two (a URN, a GGEP block),
/// held inline.
pub type ExtItems = SmallVec<[ExtItem; 2]>;

/// An extension area: the items in the order they appeared.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ExtArea {
    pub items: ExtItems,
}

/// Where an extension area ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AreaEnd {
    /// At the first NUL outside a GGEP block (QueryHit result records).
    Nul,
    /// At the end of the buffer; NUL and FS both separate items (Query payloads).
    End,
}

/// One item of an [`ExtAreaView`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemView<'a> {
    Urn(&'a [u8]),
    Xml(&'a [u8]),
    Ggep(GgepView<'a>),
    Other(&'a [u8]),
}

/// A validated extension area, borrowed from its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtAreaView<'a> {
    /// The items and separators, without the terminating NUL.
    area: &'a [u8],
}

/// One step of walking an area: an item or a separator, and where the next begins.
enum Step<'a> {
    Item(ItemView<'a>, usize),
    Separator(usize),
    /// The terminating NUL (only for [`AreaEnd::Nul`]), at this offset.
    Terminator(usize),
    End,
}

// Inlined into each walk: the validating walk uses only where the next step
// begins, so the item views it would build (and the URN prefix test) are
// dropped from it (codec bench, framing+validate 0.045x to 0.053x of memcpy).
#[inline(always)]
fn step(b: &[u8], pos: usize, end: AreaEnd) -> Result<Step<'_>, WireError> {
    let Some(&first) = b.get(pos) else {
        return match end {
            AreaEnd::End => Ok(Step::End),
            AreaEnd::Nul => Err(WireError::MissingNul {
                what: "result extension area",
            }),
        };
    };
    Ok(match first {
        0 if end == AreaEnd::Nul => Step::Terminator(pos),
        0 | FS => Step::Separator(pos + 1),
        ggep::MAGIC => {
            let (g, used) = GgepView::parse(&b[pos..])?;
            Step::Item(ItemView::Ggep(g), pos + used)
        }
        _ => {
            let len = crate::wire::scan::find_nul_or(FS, &b[pos..]).unwrap_or(b.len() - pos);
            let item = &b[pos..pos + len];
            let view = if strip_prefix_ci(item, b"urn:").is_some() {
                ItemView::Urn(item)
            } else if first == b'<' {
                ItemView::Xml(item)
            } else {
                ItemView::Other(item)
            };
            Step::Item(view, pos + len)
        }
    })
}

impl<'a> ExtAreaView<'a> {
    /// Validates the area at the start of `b`, returning it and the number of bytes
    /// it took (including the terminating NUL for [`AreaEnd::Nul`]).
    pub fn parse(b: &'a [u8], end: AreaEnd) -> Result<(ExtAreaView<'a>, usize), WireError> {
        let mut pos = 0;
        loop {
            match step(b, pos, end)? {
                Step::Item(_, next) | Step::Separator(next) => pos = next,
                Step::Terminator(at) => return Ok((ExtAreaView { area: &b[..at] }, at + 1)),
                Step::End => return Ok((ExtAreaView { area: b }, b.len())),
            }
        }
    }

    /// Whether the area holds no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.area.is_empty()
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = ItemView<'a>> + 'a {
        let area = self.area;
        let mut pos = 0;
        std::iter::from_fn(move || {
            loop {
                // Validated already: within `area` every step succeeds.
                match step(area, pos, AreaEnd::End).ok()? {
                    Step::Item(item, next) => {
                        pos = next;
                        return Some(item);
                    }
                    Step::Separator(next) => pos = next,
                    Step::Terminator(_) | Step::End => return None,
                }
            }
        })
    }

    /// The SHA-1 URNs that parse.
    pub fn sha1_urns(&self) -> impl Iterator<Item = Sha1Urn> + 'a {
        self.iter().filter_map(|i| match i {
            ItemView::Urn(u) => Sha1Urn::parse(u).ok(),
            _ => None,
        })
    }

    /// The first GGEP block.
    pub fn ggep(&self) -> Option<GgepView<'a>> {
        self.iter().find_map(|i| match i {
            ItemView::Ggep(g) => Some(g),
            _ => None,
        })
    }
}

/// The kinds of non-GGEP item, told apart by their first bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Urn,
    Xml,
    Other,
}

fn kind_of(item: &[u8]) -> Kind {
    if strip_prefix_ci(item, b"urn:").is_some() {
        Kind::Urn
    } else if item.first() == Some(&b'<') {
        Kind::Xml
    } else {
        Kind::Other
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
        let (view, used) = ExtAreaView::parse(&buf[start..], end)?;
        Ok((ExtArea::from_view(buf, &view, budget)?, start + used))
    }

    /// The owned form of a validated view into `buf`.
    pub fn from_view(
        buf: &Bytes,
        view: &ExtAreaView<'_>,
        budget: &mut usize,
    ) -> Result<ExtArea, WireError> {
        ExtArea::from_view_in(buf, view, budget, None)
    }

    /// As [`ExtArea::from_view`], COBS values decoded into `values` (see
    /// `Ggep::from_view_in`).
    pub(crate) fn from_view_in(
        buf: &Bytes,
        view: &ExtAreaView<'_>,
        budget: &mut usize,
        mut values: Option<&mut DecodedValues>,
    ) -> Result<ExtArea, WireError> {
        let mut items = ExtItems::new();
        for item in view.iter() {
            items.push(match item {
                ItemView::Urn(b) => ExtItem::Urn(buf.slice_ref(b)),
                ItemView::Xml(b) => ExtItem::Xml(buf.slice_ref(b)),
                ItemView::Other(b) => ExtItem::Other(buf.slice_ref(b)),
                ItemView::Ggep(g) => {
                    ExtItem::Ggep(Ggep::from_view_in(buf, &g, budget, values.as_deref_mut())?)
                }
            });
        }
        Ok(ExtArea { items })
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
fn check_item(item: &ExtItem, b: &[u8]) -> Result<(), EncodeError> {
    const WHAT: &str = "extension item";
    if let Some(at) = crate::wire::scan::find_nul_or(FS, b) {
        return Err(EncodeError::ForbiddenByte {
            what: WHAT,
            byte: b[at],
        });
    }
    let kind = match item {
        ExtItem::Urn(_) => Kind::Urn,
        ExtItem::Xml(_) => Kind::Xml,
        _ => Kind::Other,
    };
    if b.is_empty() || b[0] == ggep::MAGIC || kind_of(b) != kind {
        return Err(EncodeError::Invalid {
            what: WHAT,
            why: "empty, or its first bytes make it another kind of item",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(item: ExtItem) -> Result<Vec<u8>, EncodeError> {
        let mut out = BytesMut::new();
        ExtArea {
            items: ExtItems::from_vec(vec![item]),
        }
        .encode(&mut out)
        .map(|()| out.to_vec())
    }

    /// An item with a NUL or FS anywhere (in the first word, past it, past
    /// the word-at-a-time stretch) is refused, naming the first such byte;
    /// the same item without it encodes as itself.
    #[test]
    fn an_item_with_a_nul_or_fs_is_refused_naming_the_byte() {
        for len in [9usize, 41, 100] {
            let clean: Vec<u8> = b"urn:sha1:"
                .iter()
                .copied()
                .chain((0..).map(|i| b'A' + (i % 26) as u8))
                .take(len)
                .collect();
            let item = ExtItem::Urn(Bytes::from(clean.clone()));
            assert_eq!(encode(item).expect("clean"), clean);
            for at in [4, 7, 8, len / 2, len - 1] {
                for (bad, later) in [(0u8, FS), (FS, 0u8)] {
                    let mut b = clean.clone();
                    b[at] = bad;
                    if at + 1 < len {
                        b[at + 1] = later;
                    }
                    let got = encode(ExtItem::Urn(Bytes::from(b)));
                    assert!(
                        matches!(got, Err(EncodeError::ForbiddenByte { byte, .. }) if byte == bad),
                        "length {len}, 0x{bad:02X} at {at}: {got:?}"
                    );
                }
            }
        }
    }
}
