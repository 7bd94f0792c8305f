//! GGEP, the generic extension block carried by most descriptors.
//!
//! A block is the magic byte `0xC3` followed by one or more extensions. Each
//! extension is a flags byte, an ID of 1 to 15 bytes, a length of 1 to 3 bytes and
//! the data. Data may be zlib-compressed and/or COBS-encoded on the wire; a parsed
//! [`GgepExt`] holds the plain value and remembers whether it travelled compressed.
//! COBS is a transport detail chosen by the encoder from the context (see
//! [`Ggep::encode`]), so it is not part of the value.

use std::borrow::Cow;
use std::fmt;
use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::wire::cobs;
use crate::wire::error::EncodeError;

/// The magic byte that starts every GGEP block.
pub const MAGIC: u8 = 0xC3;
/// The largest data length the 3-byte length field can express.
pub const MAX_DATA_LEN: usize = 0x3FFFF;
/// Default cap on the total size of inflated values in one message. A value that
/// would inflate past the remaining budget is an error, so a small compressed
/// payload cannot make the parser allocate without bound.
pub const DEFAULT_INFLATE_BUDGET: usize = 256 * 1024;

const FLAG_LAST: u8 = 0x80;
const FLAG_COBS: u8 = 0x40;
const FLAG_DEFLATE: u8 = 0x20;
const FLAG_RESERVED: u8 = 0x10;
const ID_LEN_MASK: u8 = 0x0F;

/// Why a GGEP block could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GgepError {
    #[error("block does not start with 0xC3")]
    NoMagic,
    #[error("block has no extensions")]
    Empty,
    #[error("block ends before its last extension")]
    Truncated,
    #[error("reserved flag bit set")]
    ReservedBit,
    #[error("extension ID length is zero")]
    EmptyId,
    #[error("extension ID contains a non-printable byte 0x{0:02x}")]
    BadIdByte(u8),
    #[error("malformed length field")]
    BadLength,
    #[error("malformed COBS data")]
    BadCobs,
    #[error("malformed zlib data")]
    BadZlib,
    #[error("inflated data exceeds the allowed size")]
    InflateLimit,
}

/// An extension ID: 1 to 15 printable ASCII bytes, compared exactly.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgepId {
    bytes: [u8; 15],
    len: u8,
}

impl GgepId {
    /// Builds an ID, or `None` if it is empty, longer than 15 bytes, or holds a
    /// byte outside printable ASCII.
    pub fn new(id: &[u8]) -> Option<GgepId> {
        if id.is_empty() || id.len() > 15 || !id.iter().all(|b| is_id_byte(*b)) {
            return None;
        }
        let mut bytes = [0u8; 15];
        bytes[..id.len()].copy_from_slice(id);
        Some(GgepId {
            bytes,
            len: id.len() as u8,
        })
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The ID as text (IDs are printable ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("?")
    }
}

impl fmt::Debug for GgepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

fn is_id_byte(b: u8) -> bool {
    (0x21..=0x7E).contains(&b)
}

/// One extension: its ID, its plain data, and whether it travels zlib-compressed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GgepExt {
    pub id: GgepId,
    pub data: Bytes,
    /// Sent as a zlib stream (flag 0x20). Set by the parser when the value arrived
    /// compressed; builders should set it only when compression shrinks the value
    /// (see [`GgepExt::compressed_if_smaller`]).
    pub compressed: bool,
}

impl GgepExt {
    /// An uncompressed extension. Panics if `id` is not a valid ID: IDs are
    /// compile-time constants in practice; use [`GgepId::new`] for untrusted ones.
    pub fn new(id: &str, data: impl Into<Bytes>) -> GgepExt {
        GgepExt {
            id: GgepId::new(id.as_bytes()).expect("valid GGEP id"),
            data: data.into(),
            compressed: false,
        }
    }

    /// An extension with no data (a flag such as `BH` or `PR`).
    pub fn flag(id: &str) -> GgepExt {
        GgepExt::new(id, Bytes::new())
    }

    /// An extension holding a little-endian integer in the fewest bytes (zero is
    /// written as no bytes at all), as used by `DU`, `LF`, `CT` and friends.
    pub fn int(id: &str, value: u64) -> GgepExt {
        let bytes = value.to_le_bytes();
        let len = 8 - (value.leading_zeros() as usize / 8);
        GgepExt::new(id, Bytes::copy_from_slice(&bytes[..len]))
    }

    /// An extension marked compressed only when zlib makes it smaller.
    pub fn compressed_if_smaller(mut self) -> GgepExt {
        self.compressed = zlib(&self.data).len() < self.data.len();
        self
    }

    /// Reads the data as a little-endian integer of 0 to 8 bytes.
    pub fn as_int(&self) -> Option<u64> {
        le_int(&self.data)
    }
}

/// Reads a little-endian integer of 0 to 8 bytes (the GGEP integer encoding).
pub fn le_int(data: &[u8]) -> Option<u64> {
    if data.len() > 8 {
        return None;
    }
    let mut b = [0u8; 8];
    b[..data.len()].copy_from_slice(data);
    Some(u64::from_le_bytes(b))
}

/// The extensions of a block: most blocks have one or two, held inline.
pub type GgepExts = SmallVec<[GgepExt; 2]>;

/// One GGEP block: an ordered list of extensions (at least one to be encodable).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Ggep {
    pub exts: GgepExts,
}

impl Ggep {
    /// A block from a list of extensions.
    pub fn new(exts: Vec<GgepExt>) -> Ggep {
        Ggep {
            exts: GgepExts::from_vec(exts),
        }
    }

    /// The first extension with this ID.
    pub fn get(&self, id: &str) -> Option<&GgepExt> {
        self.exts.iter().find(|e| e.id.as_bytes() == id.as_bytes())
    }

    /// Parses one block at the start of `buf`, returning it and the number of bytes
    /// it occupied. Bytes after the block are not looked at.
    pub fn parse(buf: &Bytes) -> Result<(Ggep, usize), GgepError> {
        let mut budget = DEFAULT_INFLATE_BUDGET;
        Ggep::parse_with_budget(buf, &mut budget)
    }

    /// As [`Ggep::parse`], drawing inflated sizes from a budget shared with other
    /// blocks of the same message.
    pub fn parse_with_budget(buf: &Bytes, budget: &mut usize) -> Result<(Ggep, usize), GgepError> {
        Ggep::parse_at(buf, 0, budget)
    }

    /// Parses one block that starts at `buf[start]`, returning it and the offset
    /// just past it. Values that need no decoding are slices of `buf`.
    pub fn parse_at(
        buf: &Bytes,
        start: usize,
        budget: &mut usize,
    ) -> Result<(Ggep, usize), GgepError> {
        let (view, used) = GgepView::parse(&buf[start..])?;
        Ok((Ggep::from_view(buf, &view, budget)?, start + used))
    }

    /// The owned form of a validated view into `buf`: COBS and zlib values are
    /// decoded, plain values become slices of `buf`.
    pub fn from_view(
        buf: &Bytes,
        view: &GgepView<'_>,
        budget: &mut usize,
    ) -> Result<Ggep, GgepError> {
        Ggep::from_view_in(buf, view, budget, None)
    }

    /// As [`Ggep::from_view`], COBS values decoded into `values` (shared by the
    /// blocks of one message) rather than into an allocation each.
    pub(crate) fn from_view_in(
        buf: &Bytes,
        view: &GgepView<'_>,
        budget: &mut usize,
        mut values: Option<&mut DecodedValues>,
    ) -> Result<Ggep, GgepError> {
        let mut exts = GgepExts::with_capacity(view.len());
        for e in view.iter() {
            let data = match values.as_deref_mut() {
                Some(values) if e.is_cobs() && !e.is_compressed() => values.cobs(e.raw)?,
                _ => match e.value(budget)? {
                    Cow::Borrowed(plain) => buf.slice_ref(plain),
                    Cow::Owned(decoded) => Bytes::from(decoded),
                },
            };
            exts.push(GgepExt {
                id: GgepId::new(e.id).ok_or(GgepError::EmptyId)?,
                data,
                compressed: e.is_compressed(),
            });
        }
        Ok(Ggep { exts })
    }

    /// Appends the block's wire form to `out`.
    ///
    /// With `nul_free` set (inside query and query-hit extension areas, which are
    /// NUL-delimited) every value whose wire bytes contain 0x00 is COBS-encoded, so
    /// the whole block is free of NUL bytes. Elsewhere values are written as they are.
    pub fn encode(&self, out: &mut BytesMut, nul_free: bool) -> Result<(), EncodeError> {
        if self.exts.is_empty() {
            return Err(EncodeError::Invalid {
                what: "GGEP block",
                why: "no extensions",
            });
        }
        out.put_u8(MAGIC);
        let last = self.exts.len() - 1;
        for (i, ext) in self.exts.iter().enumerate() {
            let mut flags = ext.id.len;
            if i == last {
                flags |= FLAG_LAST;
            }
            let compressed;
            let mut value: &[u8] = &ext.data;
            if ext.compressed {
                flags |= FLAG_DEFLATE;
                compressed = zlib(value);
                value = &compressed;
            }
            // COBS is written straight into `out`, its length known beforehand.
            let stuff = nul_free && cobs::has_nul(value);
            let len = if stuff {
                flags |= FLAG_COBS;
                cobs::encoded_len(value)
            } else {
                value.len()
            };
            if len > MAX_DATA_LEN {
                return Err(EncodeError::TooLong {
                    what: "GGEP value",
                    len,
                    limit: MAX_DATA_LEN,
                });
            }
            // Flags, ID and length in one write.
            let id = ext.id.as_bytes();
            let mut head = [0u8; 1 + 15 + 3];
            head[0] = flags;
            head[1..1 + id.len()].copy_from_slice(id);
            let used = 1 + id.len() + len_into(len, &mut head[1 + id.len()..]);
            out.put_slice(&head[..used]);
            if stuff {
                cobs::encode_into(value, out);
            } else {
                out.put_slice(value);
            }
        }
        Ok(())
    }

    /// The block's wire form as a fresh buffer.
    pub fn to_bytes(&self, nul_free: bool) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out, nul_free)?;
        Ok(out.freeze())
    }
}

/// One buffer for the COBS-decoded values of a message: sliced per value, so
/// a hit whose results each carry a COBS value costs one allocation for them
/// all instead of one each.
pub(crate) struct DecodedValues {
    buf: BytesMut,
    /// What to reserve when the buffer runs out: decoded COBS is never longer
    /// than its wire form, so a message's payload length holds all of them.
    chunk: usize,
}

impl DecodedValues {
    pub(crate) fn new(chunk: usize) -> DecodedValues {
        DecodedValues {
            buf: BytesMut::new(),
            chunk,
        }
    }

    fn cobs(&mut self, raw: &[u8]) -> Result<Bytes, GgepError> {
        let n = cobs::decoded_len(raw).map_err(|_| GgepError::BadCobs)?;
        if self.buf.capacity() < n {
            self.buf = BytesMut::with_capacity(n.max(self.chunk));
        }
        cobs::decode_into(raw, &mut self.buf).map_err(|_| GgepError::BadCobs)?;
        Ok(self.buf.split().freeze())
    }
}

/// A validated GGEP block, borrowed from the buffer it was read from.
///
/// [`GgepView::parse`] checks the whole block in one pass without allocating:
/// every flag, ID and length, and the structure of COBS values. zlib values are
/// only checked when read with [`RawExt::value`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgepView<'a> {
    /// The extensions, from just after the magic byte to the end of the last one.
    exts: &'a [u8],
    count: usize,
}

/// One extension of a [`GgepView`], as it is on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawExt<'a> {
    pub id: &'a [u8],
    flags: u8,
    /// The value's wire bytes (still COBS-encoded and/or compressed if flagged).
    pub raw: &'a [u8],
}

impl<'a> RawExt<'a> {
    /// Whether the value is COBS-encoded on the wire.
    pub fn is_cobs(&self) -> bool {
        self.flags & FLAG_COBS != 0
    }

    /// Whether the value is a zlib stream on the wire.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_DEFLATE != 0
    }

    /// The plain value: borrowed when the wire bytes are the value, decoded (COBS
    /// first, then zlib within `budget`) otherwise.
    pub fn value(&self, budget: &mut usize) -> Result<Cow<'a, [u8]>, GgepError> {
        let mut v = Cow::Borrowed(self.raw);
        if self.is_cobs() {
            v = Cow::Owned(cobs::decode(self.raw).map_err(|_| GgepError::BadCobs)?);
        }
        if self.is_compressed() {
            v = Cow::Owned(inflate_limited(&v, budget)?);
        }
        Ok(v)
    }
}

/// Reads one extension header and its value from the start of `b`.
fn parse_ext(b: &[u8]) -> Result<(RawExt<'_>, usize), GgepError> {
    let flags = *b.first().ok_or(GgepError::Truncated)?;
    if flags & FLAG_RESERVED != 0 {
        return Err(GgepError::ReservedBit);
    }
    let id_len = (flags & ID_LEN_MASK) as usize;
    if id_len == 0 {
        return Err(GgepError::EmptyId);
    }
    let id = b.get(1..1 + id_len).ok_or(GgepError::Truncated)?;
    // All bytes checked without branching per byte; the culprit is looked for
    // only when there is one.
    if !id.iter().fold(true, |ok, &c| ok & is_id_byte(c)) {
        let bad = id.iter().copied().find(|&c| !is_id_byte(c)).unwrap_or(0);
        return Err(GgepError::BadIdByte(bad));
    }
    let pos = 1 + id_len;
    // The common one-byte length (values under 64 bytes) without the loop.
    let (len, used) = match b.get(pos) {
        Some(&l) if l & 0xC0 == 0x40 => ((l & 0x3F) as usize, 1),
        _ => decode_len(&b[pos..])?,
    };
    let start = pos + used;
    let raw = b.get(start..start + len).ok_or(GgepError::Truncated)?;
    Ok((RawExt { id, flags, raw }, start + len))
}

impl<'a> GgepView<'a> {
    /// Validates the block at the start of `buf`, returning it and its length.
    pub fn parse(buf: &'a [u8]) -> Result<(GgepView<'a>, usize), GgepError> {
        if buf.first() != Some(&MAGIC) {
            return Err(GgepError::NoMagic);
        }
        let mut pos = 1;
        let mut count = 0;
        loop {
            let (ext, used) = parse_ext(&buf[pos..])?;
            if ext.is_cobs() {
                cobs::decoded_len(ext.raw).map_err(|_| GgepError::BadCobs)?;
            }
            pos += used;
            count += 1;
            if ext.flags & FLAG_LAST != 0 {
                let view = GgepView {
                    exts: &buf[1..pos],
                    count,
                };
                return Ok((view, pos));
            }
        }
    }

    /// Number of extensions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the block has no extensions (never true for a parsed block).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The extensions in order.
    pub fn iter(&self) -> impl Iterator<Item = RawExt<'a>> + 'a {
        let mut rest = self.exts;
        std::iter::from_fn(move || {
            // The block was validated, so this only stops at its end.
            let (ext, used) = parse_ext(rest).ok()?;
            rest = &rest[used..];
            Some(ext)
        })
    }

    /// The first extension with this ID.
    pub fn get(&self, id: &str) -> Option<RawExt<'a>> {
        self.iter().find(|e| e.id == id.as_bytes())
    }
}

/// Reads a GGEP length field: 1 to 3 bytes of 6 value bits each, every byte but the
/// last flagged 0x80, the last flagged 0x40. Non-minimal forms are accepted.
pub fn decode_len(b: &[u8]) -> Result<(usize, usize), GgepError> {
    let mut len = 0usize;
    for i in 0..3 {
        let byte = *b.get(i).ok_or(GgepError::Truncated)?;
        len = (len << 6) | (byte & 0x3F) as usize;
        match byte & 0xC0 {
            0x40 => return Ok((len, i + 1)),
            0x80 => continue,
            _ => return Err(GgepError::BadLength),
        }
    }
    Err(GgepError::BadLength)
}

/// Writes a GGEP length field in its shortest form. `len` must be at most
/// [`MAX_DATA_LEN`].
pub fn encode_len(len: usize, out: &mut BytesMut) {
    let mut b = [0u8; 3];
    let used = len_into(len, &mut b);
    out.put_slice(&b[..used]);
}

/// Writes a GGEP length field in its shortest form at the start of `b` (3
/// bytes or more), returning how many bytes it took.
fn len_into(len: usize, b: &mut [u8]) -> usize {
    debug_assert!(len <= MAX_DATA_LEN);
    if len < 1 << 6 {
        b[0] = 0x40 | len as u8;
        1
    } else if len < 1 << 12 {
        b[0] = 0x80 | (len >> 6) as u8;
        b[1] = 0x40 | (len & 0x3F) as u8;
        2
    } else {
        b[0] = 0x80 | ((len >> 12) & 0x3F) as u8;
        b[1] = 0x80 | ((len >> 6) & 0x3F) as u8;
        b[2] = 0x40 | (len & 0x3F) as u8;
        3
    }
}

/// A zlib (RFC 1950) stream of `data` at the default level.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Inflates a complete zlib stream, failing once the output would exceed `budget`
/// (which is reduced by what was produced).
fn inflate_limited(data: &[u8], budget: &mut usize) -> Result<Vec<u8>, GgepError> {
    let mut dec = flate2::read::ZlibDecoder::new_with_decompress(data, super::zlib_inflater());
    let mut out = Vec::new();
    // Read one byte past the budget to tell "exactly at the limit" from "over".
    let read = (&mut dec)
        .take(*budget as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| GgepError::BadZlib)?;
    if read > *budget {
        return Err(GgepError::InflateLimit);
    }
    // The stream must end exactly where the value does.
    if dec.total_in() != data.len() as u64 {
        return Err(GgepError::BadZlib);
    }
    *budget -= read;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn length_vectors() {
        for (len, wire) in [
            (0usize, "40"),
            (63, "7F"),
            (64, "81 40"),
            (4095, "BF 7F"),
            (4096, "81 80 40"),
            (262143, "BF BF 7F"),
        ] {
            let mut out = BytesMut::new();
            encode_len(len, &mut out);
            assert_eq!(out.to_vec(), hex(wire), "encode {len}");
            assert_eq!(
                decode_len(&hex(wire)).unwrap(),
                (len, out.len()),
                "decode {wire}"
            );
        }
        assert_eq!(
            decode_len(&hex("80 40")).unwrap(),
            (0, 2),
            "non-minimal accepted"
        );
        assert_eq!(decode_len(&hex("00")), Err(GgepError::BadLength));
        assert_eq!(decode_len(&hex("C0")), Err(GgepError::BadLength));
        assert_eq!(decode_len(&hex("80 80 80")), Err(GgepError::BadLength));
        assert_eq!(decode_len(&hex("80")), Err(GgepError::Truncated));
    }

    #[test]
    fn limewire_block() {
        let wire = Bytes::from(hex(
            "C3 05 42 48 4F 53 54 40 87 53 55 53 48 45 45 4C 47 44 41 53 57 41 4E 49",
        ));
        let (g, used) = Ggep::parse(&wire).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(g.exts.len(), 2);
        assert_eq!(g.exts[0].id.as_str(), "BHOST");
        assert!(g.exts[0].data.is_empty());
        assert_eq!(g.get("SUSHEEL").unwrap().data, &b"DASWANI"[..]);
        assert_eq!(g.to_bytes(false).unwrap(), wire);

        let mut bad = wire.to_vec();
        bad[1] = 0x15;
        assert_eq!(
            Ggep::parse(&Bytes::from(bad)).unwrap_err(),
            GgepError::ReservedBit
        );
    }

    #[test]
    fn compressed_block() {
        // {"1": "begin", "2": zlib("middle"), "3": "end"}
        let mut wire = hex("C3 01 31 45");
        wire.extend_from_slice(b"begin");
        let z = zlib(b"middle");
        wire.extend_from_slice(&[0x21, 0x32, 0x40 | z.len() as u8]);
        wire.extend_from_slice(&z);
        wire.extend_from_slice(&[0x81, 0x33, 0x43]);
        wire.extend_from_slice(b"end");
        let wire = Bytes::from(wire);
        let (g, used) = Ggep::parse(&wire).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(g.get("1").unwrap().data, &b"begin"[..]);
        let two = g.get("2").unwrap();
        assert!(two.compressed);
        assert_eq!(two.data, &b"middle"[..]);
        assert_eq!(g.get("3").unwrap().data, &b"end"[..]);
        assert_eq!(g.to_bytes(false).unwrap(), wire);
    }

    #[test]
    fn cobs_when_nul_free() {
        let g = Ggep::new(vec![GgepExt::new("ALT", hex("C6 33 64 14 00 19"))]);
        assert_eq!(
            g.to_bytes(true).unwrap().to_vec(),
            hex("C3 C3 41 4C 54 47 05 C6 33 64 14 02 19")
        );
        assert_eq!(
            g.to_bytes(false).unwrap().to_vec(),
            hex("C3 83 41 4C 54 46 C6 33 64 14 00 19")
        );
        let (back, _) = Ggep::parse(&g.to_bytes(true).unwrap()).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn integers() {
        assert_eq!(GgepExt::int("DU", 527).data.to_vec(), hex("0F 02"));
        assert_eq!(GgepExt::int("DU", 0xABCD).data.to_vec(), hex("CD AB"));
        assert_eq!(
            GgepExt::int("DU", 0xABCDEF12).data.to_vec(),
            hex("12 EF CD AB")
        );
        assert!(GgepExt::int("DU", 0).data.is_empty());
        assert_eq!(GgepExt::int("LF", 1 << 40).as_int(), Some(1 << 40));
    }

    #[test]
    fn malformed_blocks() {
        let cases: &[(&str, GgepError)] = &[
            ("", GgepError::NoMagic),
            ("C4 81 41 40", GgepError::NoMagic),
            ("C3", GgepError::Truncated),
            ("C3 80 41 40", GgepError::EmptyId),
            ("C3 81", GgepError::Truncated),
            ("C3 82 41", GgepError::Truncated),
            ("C3 81 00 40", GgepError::BadIdByte(0)),
            ("C3 81 41 00", GgepError::BadLength),
            ("C3 81 41 45 61", GgepError::Truncated),
            ("C3 01 41 40", GgepError::Truncated),
            ("C3 C1 41 42 00 11", GgepError::BadCobs),
            ("C3 A1 41 43 01 02 03", GgepError::BadZlib),
        ];
        for (wire, err) in cases {
            assert_eq!(
                Ggep::parse(&Bytes::from(hex(wire))).unwrap_err(),
                *err,
                "{wire}"
            );
        }
    }

    #[test]
    fn zlib_values_must_be_whole_streams() {
        let z = zlib(b"middle");
        let value = |bytes: &[u8]| {
            let mut wire = vec![MAGIC, 0xA1, b'Z'];
            let mut len = BytesMut::new();
            encode_len(bytes.len(), &mut len);
            wire.extend_from_slice(&len);
            wire.extend_from_slice(bytes);
            Ggep::parse(&Bytes::from(wire))
        };
        assert_eq!(value(&z).unwrap().0.exts[0].data, &b"middle"[..]);
        assert_eq!(value(&z[..z.len() - 1]).unwrap_err(), GgepError::BadZlib);
        assert_eq!(
            value(&[&z[..], &[0]].concat()).unwrap_err(),
            GgepError::BadZlib
        );
    }

    #[test]
    fn inflate_budget_is_enforced() {
        let big = vec![0u8; DEFAULT_INFLATE_BUDGET + 1];
        let g = Ggep::new(vec![GgepExt {
            id: GgepId::new(b"Z").unwrap(),
            data: Bytes::from(big),
            compressed: true,
        }]);
        let wire = g.to_bytes(false).unwrap();
        assert!(wire.len() < 2000, "zeros compress well");
        assert_eq!(Ggep::parse(&wire).unwrap_err(), GgepError::InflateLimit);
        let mut budget = DEFAULT_INFLATE_BUDGET * 2;
        assert!(Ggep::parse_with_budget(&wire, &mut budget).is_ok());
        assert_eq!(budget, DEFAULT_INFLATE_BUDGET - 1);
    }

    #[test]
    fn ids_are_validated() {
        assert!(GgepId::new(b"").is_none());
        assert!(GgepId::new(b"0123456789ABCDEF").is_none());
        assert!(GgepId::new(b"A B").is_none());
        assert_eq!(GgepId::new(b"GTKGV").unwrap().as_str(), "GTKGV");
    }
}
