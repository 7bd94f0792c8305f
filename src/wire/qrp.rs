//! Query Routing Protocol (QRP) wire-level pieces.
//!
//! This module contains everything QRP needs below the message layer:
//!
//! * the keyword hash ([`hash`], [`hash_range`]),
//! * keyword normalization and splitting ([`split_keywords`], [`table_keywords`]),
//! * patch computation, packing and compression ([`patch_entries`], [`pack`],
//!   [`unpack`], [`compress`], [`build_patch_chunks`]),
//! * the receiving state machine for PATCH sequences ([`PatchDecoder`]),
//! * a presence-only routing table as a bitset ([`QrpTable`]), with rescaling,
//! * [`PatchChunk`], one PATCH message's fields, convertible to and from the
//!   [`RouteTableUpdate`] message that carries it on the wire.
//!
//! Nothing here performs I/O. The formats and the choices made where the old
//! specifications disagree are described in `protocol-spec/qrp.md`.
//!
//! # Semantics in one paragraph
//!
//! Tables are treated as presence bitsets: a slot is "present" when some keyword
//! hashes to it. A patch is one signed entry per slot; when decoding we look only at
//! the sign (negative = becomes present, positive = becomes absent, zero = unchanged),
//! so any sender's "infinity" works. 1-bit patches (accepted on receive only) flip
//! the slot for every 1 bit.

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;

use crate::wire::route_table::RouteTableUpdate;
use flate2::{Compression, Decompress, FlushDecompress, Status, write::ZlibEncoder};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The multiplier of the QRP hash: ⌊(√5−1)/2 · 2^31⌋.
const HASH_MULTIPLIER: u32 = 0x4F1B_BCDC;

/// Route-table-update variant byte of a RESET message.
pub const VARIANT_RESET: u8 = 0x00;
/// Route-table-update variant byte of a PATCH message.
pub const VARIANT_PATCH: u8 = 0x01;
/// Compressor byte: the patch bytes are sent as they are.
pub const COMPRESSOR_NONE: u8 = 0x00;
/// Compressor byte: the patch bytes form one zlib (RFC 1950) stream.
pub const COMPRESSOR_ZLIB: u8 = 0x01;
/// The largest table (number of slots) we accept or build: 2^22, twice the largest
/// size any known servent sends (gtk-gnutella goes up to 2^21). As a bitset this is
/// 512 KiB.
pub const MAX_TABLE_LEN: usize = 1 << 22;
/// The infinity value we send in RESET messages (LimeWire's; patch values ±6).
pub const DEFAULT_INFINITY: u8 = 7;
/// A chunk size that works with deployed servents (LimeWire uses 4096 bytes).
pub const DEFAULT_CHUNK_SIZE: usize = 4096;
/// The most PATCH messages one sequence can have (the sequence size is one byte).
pub const MAX_CHUNKS: usize = 255;

/// Size of the scratch buffer the patch decoder inflates into. Inflating happens in
/// steps of at most this many bytes, so a decompression bomb costs CPU time only
/// until the table length is exceeded, never memory.
const INFLATE_STEP: usize = 1024;

/// Everything that can go wrong in this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QrpError {
    /// Entry bits other than those supported for the operation (1, 2, 4, 8 on
    /// receive; 4, 8 when packing).
    #[error("unsupported entry bits {0}")]
    UnsupportedEntryBits(u8),
    /// A compressor byte other than 0 (none) or 1 (zlib).
    #[error("unsupported compressor {0}")]
    UnsupportedCompressor(u8),
    /// An entry does not fit in the requested number of bits.
    #[error("entry {index} = {value} does not fit in {bits} bits")]
    EntryOutOfRange { index: usize, value: i8, bits: u8 },
    /// An infinity that cannot express a presence change as a nonzero `i8`
    /// (valid: 2..=128).
    #[error("infinity {0} is not usable (must be 2..=128)")]
    BadInfinity(u8),
    /// A table length that is not a power of two in `1..=MAX_TABLE_LEN`.
    #[error("table length {0} is not a power of two in 1..={MAX_TABLE_LEN}")]
    BadTableLen(u64),
    /// Two tables (or a table and an entry vector) have different lengths.
    #[error("table length mismatch: {left} vs {right}")]
    TableLenMismatch { left: usize, right: usize },
    /// A chunk size of zero was requested.
    #[error("chunk size must be at least 1")]
    BadChunkSize,
    /// The patch would need more than 255 PATCH messages.
    #[error("patch needs {needed} chunks, at most {MAX_CHUNKS} allowed")]
    TooManyChunks { needed: usize },
    /// A PATCH announced a sequence size of 0.
    #[error("sequence size 0")]
    BadSequenceSize,
    /// A PATCH arrived out of order.
    #[error("PATCH sequence number {got}, expected {expected}")]
    SequenceGap { expected: u8, got: u8 },
    /// Sequence size, compressor or entry bits changed inside a sequence.
    #[error("PATCH {field} changed from {was} to {now} inside a sequence")]
    ParameterChanged {
        field: &'static str,
        was: u8,
        now: u8,
    },
    /// The patch holds more entries than the table has slots.
    #[error("patch is longer than the table ({table_len} slots)")]
    Overflow { table_len: usize },
    /// The zlib stream is corrupt (bad header, bad data, bad checksum).
    #[error("zlib: {0}")]
    Inflate(String),
    /// Bytes followed the end of the zlib stream.
    #[error("{bytes} bytes after the end of the zlib stream")]
    TrailingData { bytes: usize },
    /// The last PATCH of a sequence arrived but the zlib stream had not ended.
    #[error("zlib stream truncated at the end of the PATCH sequence")]
    TruncatedStream,
}

// ---------------------------------------------------------------------------------
// Hash
// ---------------------------------------------------------------------------------

/// Lower-cases one UTF-16 code unit the way Java's `Character.toLowerCase(char)`
/// does (simple case mapping, result stays one BMP unit) and returns the low byte.
fn lowered_low_byte(unit: u16) -> u8 {
    let lowered = match char::from_u32(u32::from(unit)) {
        // Surrogate halves have no case.
        None => u32::from(unit),
        Some(c) if c.is_ascii() => u32::from(c.to_ascii_lowercase()),
        Some(c) => {
            // Rust applies the full mapping; the only BMP character whose full
            // lower-case mapping is longer than one character is U+0130, whose
            // first character ('i') is its simple mapping. A mapping that leaves
            // the BMP would not fit a Java `char`, so Java keeps the original.
            let first = c.to_lowercase().next().unwrap_or(c);
            if u32::from(first) > 0xFFFF {
                u32::from(c)
            } else {
                u32::from(first)
            }
        }
    };
    (lowered & 0xFF) as u8
}

/// Hashes a sequence of UTF-16 code units.
fn hash_units(units: impl Iterator<Item = u16>, bits: u8) -> u32 {
    let mut x: u32 = 0;
    for (i, unit) in units.enumerate() {
        x ^= u32::from(lowered_low_byte(unit)) << ((i & 3) * 8);
    }
    finish_hash(x, bits)
}

fn finish_hash(x: u32, bits: u8) -> u32 {
    if bits == 0 {
        return 0;
    }
    x.wrapping_mul(HASH_MULTIPLIER) >> (32 - u32::from(bits.min(32)))
}

/// The QRP hash of `keyword` into a table of `2^bits` slots.
///
/// The keyword is taken as UTF-16 code units (characters outside the BMP count as
/// two units, each hashed on its own); every unit is lower-cased like Java's
/// `Character.toLowerCase(char)` and only its low byte is used. Unit `i` is XORed
/// into byte `i % 4` of a 32-bit word (little-endian packing), the word is
/// multiplied by `0x4F1BBCDC` (wrapping) and the top `bits` bits of the 32-bit
/// product are returned, so the result is always `< 2^bits`.
///
/// `bits == 0` returns 0 (a table of one slot); `bits > 32` is treated as 32.
pub fn hash(keyword: &str, bits: u8) -> u32 {
    hash_units(keyword.encode_utf16(), bits)
}

/// [`hash`] of the UTF-16 code units `[start, end)` of `keyword`.
///
/// The byte position in the 32-bit word counts from `start`, so
/// `hash_range(s, a, b, bits)` equals `hash` of that substring. Out-of-range
/// bounds are clamped to the string; `start >= end` hashes the empty string (0).
pub fn hash_range(keyword: &str, start: usize, end: usize, bits: u8) -> u32 {
    let units = keyword
        .encode_utf16()
        .skip(start)
        .take(end.saturating_sub(start));
    hash_units(units, bits)
}

// ---------------------------------------------------------------------------------
// Keywords
// ---------------------------------------------------------------------------------

/// Splits `text` into normalized keywords, in order, duplicates kept.
///
/// Normalization: Unicode NFKD (so full-width and other compatibility forms become
/// their plain equivalents), every combining mark (General Category M: Mn, Mc, Me)
/// removed (this strips accents), then Unicode lower-casing.
///
/// Splitting: a keyword is a maximal run of alphanumeric characters (Rust's
/// [`char::is_alphanumeric`]: Unicode Alphabetic or Numeric); every other character
/// — LimeWire's delimiters `` -._+/*()\,`` and any other punctuation, symbol,
/// space or control character — separates keywords. Marks never separate (they
/// are removed first), so `"rÈmovË"` stays one word. Empty words are dropped.
pub fn split_keywords(text: &str) -> Vec<String> {
    if text.is_ascii() {
        // NFKD leaves ASCII as it is and ASCII has no marks: the same result, fast.
        return text
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    split_keywords_unicode(text)
}

/// [`split_keywords`] for any text.
fn split_keywords_unicode(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    for c in text.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        for lower in c.to_lowercase() {
            if is_combining_mark(lower) {
                continue;
            }
            if lower.is_alphanumeric() {
                current.push(lower);
            } else if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// The keywords a node inserts into its own table for `text` (e.g. a file name):
/// the words of [`split_keywords`] plus, for every word longer than four
/// characters, the word without its last character and without its last two
/// characters (LimeWire's "stemming prefixes"). Characters are Unicode scalar
/// values. The result is de-duplicated, keeping the first occurrence's position.
pub fn table_keywords(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut add = |w: &str| {
        if seen.insert(w.to_owned()) {
            out.push(w.to_owned());
        }
    };
    for word in split_keywords(text) {
        add(&word);
        let ends: Vec<usize> = word.char_indices().map(|(i, _)| i).collect();
        let n = ends.len();
        if n > 4 {
            add(&word[..ends[n - 1]]);
            add(&word[..ends[n - 2]]);
        }
    }
    out
}

/// Calls `f` with every keyword of [`table_keywords`]`(text)`, in the same
/// order, possibly more than once each; without allocating for an ASCII text.
pub fn for_each_table_keyword(text: &str, mut f: impl FnMut(&str)) {
    if !text.is_ascii() {
        for k in table_keywords(text) {
            f(&k);
        }
        return;
    }
    let mut lower = [0u8; 64];
    for word in text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if word.len() > lower.len() {
            let w = word.to_ascii_lowercase();
            f(&w);
            if w.len() > 4 {
                f(&w[..w.len() - 1]);
                f(&w[..w.len() - 2]);
            }
            continue;
        }
        let w = &mut lower[..word.len()];
        w.copy_from_slice(word.as_bytes());
        w.make_ascii_lowercase();
        let w = std::str::from_utf8(w).expect("ASCII");
        f(w);
        if w.len() > 4 {
            f(&w[..w.len() - 1]);
            f(&w[..w.len() - 2]);
        }
    }
}

// ---------------------------------------------------------------------------------
// Patch entries, packing, compression
// ---------------------------------------------------------------------------------

fn check_infinity(infinity: u8) -> Result<(), QrpError> {
    if (2..=128).contains(&infinity) {
        Ok(())
    } else {
        Err(QrpError::BadInfinity(infinity))
    }
}

/// Checks that `len` is a table length we accept: a power of two in
/// `1..=MAX_TABLE_LEN`.
pub fn check_table_len(len: usize) -> Result<(), QrpError> {
    if len.is_power_of_two() && len <= MAX_TABLE_LEN {
        Ok(())
    } else {
        Err(QrpError::BadTableLen(len as u64))
    }
}

/// Computes the patch that turns presence `old` into presence `new` for slots
/// `0..len`: a slot becoming present gets `1 - infinity`, one becoming absent gets
/// `infinity - 1`, an unchanged one 0. After a RESET, `old` is "all absent".
///
/// `infinity` must be in `2..=128` so that both values are nonzero `i8`s.
pub fn patch_entries(
    old: impl Fn(usize) -> bool,
    new: impl Fn(usize) -> bool,
    len: usize,
    infinity: u8,
) -> Result<Vec<i8>, QrpError> {
    check_infinity(infinity)?;
    let becomes_present = (1 - i16::from(infinity)) as i8;
    let becomes_absent = (i16::from(infinity) - 1) as i8;
    Ok((0..len)
        .map(|i| match (old(i), new(i)) {
            (false, true) => becomes_present,
            (true, false) => becomes_absent,
            _ => 0,
        })
        .collect())
}

/// The smallest entry width we send for `entries`: 4 if every value is in
/// `-8..=7`, else 8.
pub fn choose_entry_bits(entries: &[i8]) -> u8 {
    if entries.iter().all(|v| (-8..=7).contains(v)) {
        4
    } else {
        8
    }
}

/// Packs patch entries into bytes.
///
/// * `bits == 8`: one signed byte per entry.
/// * `bits == 4`: two signed nibbles per byte, the **high nibble holds the lower
///   slot index** (slot 2k in bits 7-4, slot 2k+1 in bits 3-0). Every value must
///   be in `-8..=7`. An odd count leaves the last low nibble 0.
///
/// Other widths are not sent by us and give [`QrpError::UnsupportedEntryBits`].
pub fn pack(entries: &[i8], bits: u8) -> Result<Vec<u8>, QrpError> {
    match bits {
        8 => Ok(entries.iter().map(|&v| v as u8).collect()),
        4 => {
            if let Some((index, &value)) = entries
                .iter()
                .enumerate()
                .find(|(_, v)| !(-8..=7).contains(*v))
            {
                return Err(QrpError::EntryOutOfRange { index, value, bits });
            }
            Ok(entries
                .chunks(2)
                .map(|pair| {
                    let hi = (pair[0] as u8) & 0x0F;
                    let lo = pair.get(1).map_or(0, |&v| (v as u8) & 0x0F);
                    (hi << 4) | lo
                })
                .collect())
        }
        other => Err(QrpError::UnsupportedEntryBits(other)),
    }
}

fn check_receive_bits(bits: u8) -> Result<(), QrpError> {
    match bits {
        1 | 2 | 4 | 8 => Ok(()),
        other => Err(QrpError::UnsupportedEntryBits(other)),
    }
}

/// Entry `k` (0-based, counted from the most significant end) of a packed byte.
///
/// 2-, 4- and 8-bit entries are signed (two's complement); 1-bit entries are
/// returned as 0 or 1.
fn entry_of(byte: u8, bits: u8, k: usize) -> i8 {
    let bits32 = u32::from(bits);
    let shift = 8 - bits32 * (k as u32 + 1);
    let raw = (byte >> shift) & (0xFFu8 >> (8 - bits32));
    if bits == 1 {
        raw as i8
    } else {
        // Move the field to the top of the byte and sign-extend it back down.
        ((raw << (8 - bits32)) as i8) >> (8 - bits32)
    }
}

/// Unpacks `data` into entries, appending `data.len() * 8 / bits` values to `out`
/// (so a padded final nibble is included; truncate to the table length).
///
/// Bit order is most-significant-first in every width: for 4 bits the high nibble
/// is the lower slot; for 2 bits slot 4k is bits 7-6; for 1 bit slot 8k is bit 7.
/// Values of 2, 4 and 8 bits are signed; 1-bit values are 0 or 1 and mean
/// "unchanged" / "flip presence" (see [`PatchOp::from_entry`]).
pub fn unpack(data: &[u8], bits: u8, out: &mut Vec<i8>) -> Result<(), QrpError> {
    check_receive_bits(bits)?;
    let per_byte = 8 / usize::from(bits);
    out.reserve(data.len() * per_byte);
    for &byte in data {
        for k in 0..per_byte {
            out.push(entry_of(byte, bits, k));
        }
    }
    Ok(())
}

/// Compresses `data` as one zlib (RFC 1950) stream at the default level.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(data.len() / 4 + 16),
        Compression::default(),
    );
    // Writing into a Vec cannot fail, and the compressor itself does not fail on
    // any input.
    encoder
        .write_all(data)
        .expect("zlib compression into a Vec cannot fail");
    encoder
        .finish()
        .expect("zlib compression into a Vec cannot fail")
}

/// Applies the "compress only if smaller" rule: returns the compressor byte and the
/// bytes to send.
pub fn compress_if_smaller(packed: Vec<u8>) -> (u8, Vec<u8>) {
    let compressed = compress(&packed);
    if compressed.len() < packed.len() {
        (COMPRESSOR_ZLIB, compressed)
    } else {
        (COMPRESSOR_NONE, packed)
    }
}

/// One PATCH message's payload (the variant byte 0x01 is implied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchChunk {
    /// 1-based position in the sequence.
    pub seq_no: u8,
    /// Number of messages in the sequence.
    pub seq_size: u8,
    /// [`COMPRESSOR_NONE`] or [`COMPRESSOR_ZLIB`].
    pub compressor: u8,
    /// Bits per entry: 4 or 8 when we send; 1, 2, 4 or 8 accepted on receive.
    pub entry_bits: u8,
    /// This message's slice of the (compressed) patch bytes.
    pub data: Vec<u8>,
}

impl From<PatchChunk> for RouteTableUpdate {
    fn from(c: PatchChunk) -> RouteTableUpdate {
        RouteTableUpdate::Patch {
            seq_no: c.seq_no,
            seq_size: c.seq_size,
            compressor: c.compressor,
            entry_bits: c.entry_bits,
            data: Bytes::from(c.data),
        }
    }
}

impl PatchChunk {
    /// The chunk a PATCH message carries; `None` for a RESET.
    pub fn from_message(m: &RouteTableUpdate) -> Option<PatchChunk> {
        match m {
            RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            } => Some(PatchChunk {
                seq_no: *seq_no,
                seq_size: *seq_size,
                compressor: *compressor,
                entry_bits: *entry_bits,
                data: data.to_vec(),
            }),
            RouteTableUpdate::Reset { .. } => None,
        }
    }
}

/// Builds the PATCH sequence for `entries`: packs them with `bits` (4 or 8),
/// zlib-compresses the whole packed array as one stream if `try_compress` is set
/// and that makes it smaller, and cuts the result into chunks of at most
/// `chunk_size` bytes numbered `1..=seq_size`.
///
/// An empty patch still yields one (empty) chunk. More than 255 chunks is an error.
pub fn build_patch_chunks(
    entries: &[i8],
    bits: u8,
    try_compress: bool,
    chunk_size: usize,
) -> Result<Vec<PatchChunk>, QrpError> {
    if chunk_size == 0 {
        return Err(QrpError::BadChunkSize);
    }
    let packed = pack(entries, bits)?;
    let (compressor, body) = if try_compress {
        compress_if_smaller(packed)
    } else {
        (COMPRESSOR_NONE, packed)
    };
    let needed = body.len().div_ceil(chunk_size).max(1);
    let seq_size = u8::try_from(needed)
        .ok()
        .filter(|_| needed <= MAX_CHUNKS)
        .ok_or(QrpError::TooManyChunks { needed })?;
    if body.is_empty() {
        return Ok(vec![PatchChunk {
            seq_no: 1,
            seq_size,
            compressor,
            entry_bits: bits,
            data: Vec::new(),
        }]);
    }
    Ok(body
        .chunks(chunk_size)
        .zip(1..=seq_size)
        .map(|(data, seq_no)| PatchChunk {
            seq_no,
            seq_size,
            compressor,
            entry_bits: bits,
            data: data.to_vec(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------
// Patch receiving
// ---------------------------------------------------------------------------------

/// What one decoded patch entry does to its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOp {
    /// Leave the slot as it is (entry 0).
    Unchanged,
    /// The slot becomes present (negative entry).
    Present,
    /// The slot becomes absent (positive entry, 2/4/8-bit patches).
    Absent,
    /// Invert the slot (a 1 in a 1-bit patch).
    Flip,
}

impl PatchOp {
    /// Interprets an entry value of a patch with `entry_bits` bits per entry:
    /// for 1-bit patches any nonzero value flips the slot; otherwise only the sign
    /// matters (so any sender's infinity works).
    pub fn from_entry(value: i8, entry_bits: u8) -> Self {
        match (entry_bits, value) {
            (_, 0) => Self::Unchanged,
            (1, _) => Self::Flip,
            (_, v) if v < 0 => Self::Present,
            _ => Self::Absent,
        }
    }
}

/// Where a PATCH sequence stands after a [`PatchDecoder::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More messages of this sequence are expected. `entries` slots decoded so far.
    Partial { entries: usize },
    /// The last message (`seq_no == seq_size`) was processed. `entries` slots were
    /// covered by the patch (at most the table length; padding entries are not
    /// counted); `full` tells whether that is the whole table. A short patch is
    /// accepted (as LimeWire does): slots it does not cover are unchanged.
    Complete { entries: usize, full: bool },
}

#[derive(Debug, Clone, Copy)]
struct Sequence {
    seq_size: u8,
    compressor: u8,
    entry_bits: u8,
    last_seq_no: u8,
}

/// Turns decoded bytes into slot operations.
#[derive(Debug)]
struct EntryCursor {
    table_len: usize,
    next_slot: usize,
}

impl EntryCursor {
    fn push_bytes<F: FnMut(usize, PatchOp)>(
        &mut self,
        bytes: &[u8],
        bits: u8,
        sink: &mut F,
    ) -> Result<(), QrpError> {
        let per_byte = 8 / usize::from(bits);
        for &byte in bytes {
            if self.next_slot >= self.table_len {
                return Err(QrpError::Overflow {
                    table_len: self.table_len,
                });
            }
            if byte != 0 {
                for k in 0..per_byte {
                    let slot = self.next_slot + k;
                    if slot >= self.table_len {
                        // Padding in the final byte: ignored whatever its value.
                        break;
                    }
                    let op = PatchOp::from_entry(entry_of(byte, bits, k), bits);
                    if op != PatchOp::Unchanged {
                        sink(slot, op);
                    }
                }
            }
            self.next_slot += per_byte;
        }
        Ok(())
    }

    fn entries(&self) -> usize {
        self.next_slot.min(self.table_len)
    }
}

/// Receives PATCH sequences for a table of `table_len` slots, one message at a time.
///
/// Rules enforced (any violation is an error; the caller should then close the
/// connection — the decoder itself resets and expects a new sequence at seq 1):
///
/// * the first message has `seq_no == 1` and `seq_size >= 1`; each following one
///   has the next number and the same `seq_size`, compressor and entry bits;
/// * compressor 0 or 1, entry bits 1, 2, 4 or 8;
/// * the packed stream may not hold more bytes than needed for `table_len` entries
///   (entries past `table_len` in the final byte are padding and ignored);
/// * with zlib, the whole sequence is one stream inflated by one inflater (chunk
///   boundaries can fall anywhere, even inside the zlib header); it must end (with
///   a valid Adler-32) exactly with the data of the last message.
///
/// Decoded entries are handed to the caller's sink as they are decoded (slot,
/// operation); zero entries are not reported. Entries are applied incrementally,
/// so after an error the table may be partially patched.
///
/// Memory: apart from the inflater's fixed state, decoding uses a 1 KiB stack
/// buffer; inflation stops with [`QrpError::Overflow`] as soon as the output
/// exceeds the table, so a decompression bomb cannot make it allocate.
pub struct PatchDecoder {
    cursor: EntryCursor,
    sequence: Option<Sequence>,
    inflater: Option<Decompress>,
    stream_ended: bool,
}

impl std::fmt::Debug for PatchDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchDecoder")
            .field("table_len", &self.cursor.table_len)
            .field("next_slot", &self.cursor.next_slot)
            .field("sequence", &self.sequence)
            .field("stream_ended", &self.stream_ended)
            .finish_non_exhaustive()
    }
}

impl PatchDecoder {
    /// A decoder for a table of `table_len` slots, waiting for seq 1.
    pub fn new(table_len: usize) -> Self {
        Self {
            cursor: EntryCursor {
                table_len,
                next_slot: 0,
            },
            sequence: None,
            inflater: None,
            stream_ended: false,
        }
    }

    /// The table length this decoder was made for.
    pub fn table_len(&self) -> usize {
        self.cursor.table_len
    }

    /// Whether a sequence has started and not yet completed.
    pub fn in_sequence(&self) -> bool {
        self.sequence.is_some()
    }

    /// Abandons any sequence in progress; the next message must be seq 1.
    pub fn reset(&mut self) {
        self.sequence = None;
        self.stream_ended = false;
        self.cursor.next_slot = 0;
    }

    /// Processes one PATCH message. `sink(slot, op)` is called for every nonzero
    /// entry decoded from it, in slot order.
    pub fn feed<F: FnMut(usize, PatchOp)>(
        &mut self,
        seq_no: u8,
        seq_size: u8,
        compressor: u8,
        entry_bits: u8,
        data: &[u8],
        sink: &mut F,
    ) -> Result<Progress, QrpError> {
        let result = self.feed_inner(seq_no, seq_size, compressor, entry_bits, data, sink);
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// [`feed`](Self::feed) with a parsed [`PatchChunk`].
    pub fn feed_chunk<F: FnMut(usize, PatchOp)>(
        &mut self,
        chunk: &PatchChunk,
        sink: &mut F,
    ) -> Result<Progress, QrpError> {
        self.feed(
            chunk.seq_no,
            chunk.seq_size,
            chunk.compressor,
            chunk.entry_bits,
            &chunk.data,
            sink,
        )
    }

    /// [`feed`](Self::feed), applying the operations to `table` (whose slot count
    /// should equal this decoder's table length; other slots are ignored).
    pub fn feed_into(
        &mut self,
        seq_no: u8,
        seq_size: u8,
        compressor: u8,
        entry_bits: u8,
        data: &[u8],
        table: &mut QrpTable,
    ) -> Result<Progress, QrpError> {
        self.feed(
            seq_no,
            seq_size,
            compressor,
            entry_bits,
            data,
            &mut |slot, op| table.apply_op(slot, op),
        )
    }

    fn feed_inner<F: FnMut(usize, PatchOp)>(
        &mut self,
        seq_no: u8,
        seq_size: u8,
        compressor: u8,
        entry_bits: u8,
        data: &[u8],
        sink: &mut F,
    ) -> Result<Progress, QrpError> {
        let sequence = match self.sequence {
            None => {
                if seq_no != 1 {
                    return Err(QrpError::SequenceGap {
                        expected: 1,
                        got: seq_no,
                    });
                }
                if seq_size == 0 {
                    return Err(QrpError::BadSequenceSize);
                }
                if compressor > COMPRESSOR_ZLIB {
                    return Err(QrpError::UnsupportedCompressor(compressor));
                }
                check_receive_bits(entry_bits)?;
                self.cursor.next_slot = 0;
                self.stream_ended = false;
                if compressor == COMPRESSOR_ZLIB {
                    match &mut self.inflater {
                        Some(inflater) => inflater.reset(true),
                        None => self.inflater = Some(super::zlib_inflater()),
                    }
                }
                Sequence {
                    seq_size,
                    compressor,
                    entry_bits,
                    last_seq_no: 1,
                }
            }
            Some(mut sequence) => {
                for (field, was, now) in [
                    ("sequence size", sequence.seq_size, seq_size),
                    ("compressor", sequence.compressor, compressor),
                    ("entry bits", sequence.entry_bits, entry_bits),
                ] {
                    if was != now {
                        return Err(QrpError::ParameterChanged { field, was, now });
                    }
                }
                // A sequence in progress always has last_seq_no < seq_size.
                let expected = sequence.last_seq_no + 1;
                if seq_no != expected {
                    return Err(QrpError::SequenceGap {
                        expected,
                        got: seq_no,
                    });
                }
                sequence.last_seq_no = seq_no;
                sequence
            }
        };
        self.sequence = Some(sequence);

        if compressor == COMPRESSOR_ZLIB {
            self.inflate(data, entry_bits, sink)?;
        } else {
            self.cursor.push_bytes(data, entry_bits, sink)?;
        }

        if seq_no < seq_size {
            return Ok(Progress::Partial {
                entries: self.cursor.entries(),
            });
        }
        if compressor == COMPRESSOR_ZLIB && !self.stream_ended {
            return Err(QrpError::TruncatedStream);
        }
        let entries = self.cursor.entries();
        self.reset();
        Ok(Progress::Complete {
            entries,
            full: entries == self.cursor.table_len,
        })
    }

    fn inflate<F: FnMut(usize, PatchOp)>(
        &mut self,
        data: &[u8],
        bits: u8,
        sink: &mut F,
    ) -> Result<(), QrpError> {
        let mut input = data;
        let mut buf = [0u8; INFLATE_STEP];
        loop {
            if self.stream_ended {
                return if input.is_empty() {
                    Ok(())
                } else {
                    Err(QrpError::TrailingData { bytes: input.len() })
                };
            }
            let inflater = self.inflater.get_or_insert_with(super::zlib_inflater);
            let (in_before, out_before) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(input, &mut buf, FlushDecompress::None)
                .map_err(|e| QrpError::Inflate(e.to_string()))?;
            let consumed = (inflater.total_in() - in_before) as usize;
            let produced = (inflater.total_out() - out_before) as usize;
            input = &input[consumed..];
            self.cursor.push_bytes(&buf[..produced], bits, sink)?;
            match status {
                Status::StreamEnd => self.stream_ended = true,
                Status::Ok | Status::BufError => {
                    if input.is_empty() && produced < buf.len() {
                        // Everything given has been consumed and drained.
                        return Ok(());
                    }
                    if consumed == 0 && produced == 0 {
                        return Err(QrpError::Inflate("inflater made no progress".into()));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Presence table
// ---------------------------------------------------------------------------------

/// A presence-only QRP table of `2^k` slots, stored as a bitset.
#[derive(Clone, PartialEq, Eq)]
pub struct QrpTable {
    words: Vec<u64>,
    len: usize,
}

impl std::fmt::Debug for QrpTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrpTable")
            .field("len", &self.len)
            .field("present", &self.present_count())
            .finish()
    }
}

impl QrpTable {
    /// An empty table (every slot absent) of `len` slots; `len` must be a power of
    /// two in `1..=MAX_TABLE_LEN`.
    pub fn new(len: usize) -> Result<Self, QrpError> {
        check_table_len(len)?;
        Ok(Self::new_unchecked(len))
    }

    fn new_unchecked(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Number of slots.
    pub fn slot_count(&self) -> usize {
        self.len
    }

    /// log2 of the slot count: the `bits` argument of [`hash`] for this table.
    pub fn hash_bits(&self) -> u8 {
        self.len.trailing_zeros() as u8
    }

    /// Whether `slot` is present (`false` for slots out of range).
    pub fn is_present(&self, slot: usize) -> bool {
        slot < self.len && self.words[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Sets `slot` present or absent; out-of-range slots are ignored.
    pub fn set_present(&mut self, slot: usize, present: bool) {
        if slot >= self.len {
            return;
        }
        let mask = 1u64 << (slot % 64);
        if present {
            self.words[slot / 64] |= mask;
        } else {
            self.words[slot / 64] &= !mask;
        }
    }

    /// Marks every slot absent (what a RESET does).
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Number of present slots.
    pub fn present_count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Iterates over the present slots in increasing order.
    pub fn present_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + bit)
            })
        })
    }

    /// Marks the slot of one (already normalized) keyword present.
    pub fn insert_keyword(&mut self, keyword: &str) {
        let slot = hash(keyword, self.hash_bits()) as usize;
        self.set_present(slot, true);
    }

    /// Inserts every keyword of [`table_keywords`]`(text)` (words and stemming
    /// prefixes), e.g. for a shared file's name.
    pub fn insert_text(&mut self, text: &str) {
        for keyword in table_keywords(text) {
            self.insert_keyword(&keyword);
        }
    }

    /// Whether the slot `hash` (a hash computed with [`hash_bits`](Self::hash_bits))
    /// is present.
    pub fn contains_hash(&self, hash: u32) -> bool {
        usize::try_from(hash).is_ok_and(|slot| self.is_present(slot))
    }

    /// Whether the slot of one (already normalized) keyword is present.
    pub fn contains_keyword(&self, keyword: &str) -> bool {
        self.contains_hash(hash(keyword, self.hash_bits()))
    }

    /// Whether every keyword hits a present slot (AND). An empty keyword list does
    /// not match: a query with no keywords gives QRP nothing to route on.
    pub fn matches_query<S: AsRef<str>>(&self, keywords: &[S]) -> bool {
        !keywords.is_empty() && keywords.iter().all(|k| self.contains_keyword(k.as_ref()))
    }

    /// [`matches_query`](Self::matches_query) on [`split_keywords`]`(text)`.
    pub fn matches_query_text(&self, text: &str) -> bool {
        self.matches_query(&split_keywords(text))
    }

    /// Applies one patch entry by sign: negative = present, positive = absent,
    /// 0 = unchanged. (For 1-bit patches use [`apply_op`](Self::apply_op) with
    /// [`PatchOp::from_entry`].) Out-of-range slots are ignored.
    pub fn apply(&mut self, slot: usize, value: i8) {
        self.apply_op(slot, PatchOp::from_entry(value, 8));
    }

    /// Applies one decoded patch operation. Out-of-range slots are ignored.
    pub fn apply_op(&mut self, slot: usize, op: PatchOp) {
        match op {
            PatchOp::Unchanged => {}
            PatchOp::Present => self.set_present(slot, true),
            PatchOp::Absent => self.set_present(slot, false),
            PatchOp::Flip => {
                let present = self.is_present(slot);
                self.set_present(slot, !present);
            }
        }
    }

    /// The patch entries that turn `old` into `self` (see [`patch_entries`]). To
    /// send a whole table after a RESET, diff against an empty table.
    pub fn diff(&self, old: &QrpTable, infinity: u8) -> Result<Vec<i8>, QrpError> {
        if old.len != self.len {
            return Err(QrpError::TableLenMismatch {
                left: self.len,
                right: old.len,
            });
        }
        patch_entries(
            |i| old.is_present(i),
            |i| self.is_present(i),
            self.len,
            infinity,
        )
    }

    /// ORs `other` into `self`, rescaling `other` first if its size differs (an
    /// ultrapeer's table is the OR of its own and its leaves' tables).
    pub fn merge(&mut self, other: &QrpTable) {
        if other.len == self.len {
            for (a, b) in self.words.iter_mut().zip(&other.words) {
                *a |= b;
            }
        } else {
            for slot in other.present_slots() {
                self.mark_covered(slot, other.len);
            }
        }
    }

    /// Marks present every slot of `self` covered by slot `slot` of a table of
    /// `from_len` slots.
    fn mark_covered(&mut self, slot: usize, from_len: usize) {
        if self.len >= from_len {
            let factor = self.len / from_len;
            for s in slot * factor..(slot + 1) * factor {
                self.set_present(s, true);
            }
        } else {
            self.set_present(slot / (from_len / self.len), true);
        }
    }

    /// This table converted to `new_len` slots (a power of two in
    /// `1..=MAX_TABLE_LEN`).
    ///
    /// Growing by `f = new_len / len`, slot `i` covers new slots `i·f .. (i+1)·f`;
    /// shrinking by `f = len / new_len`, slot `i` maps to new slot `i / f`. A new
    /// slot is present iff any covering old slot is. Because a keyword's hash at
    /// `b + 1` bits is `2·h` or `2·h + 1` of its hash at `b` bits, every keyword
    /// present before is present after (no false negatives); growing adds false
    /// positives, shrinking merges slots. Growing then shrinking back gives the
    /// original table exactly.
    pub fn rescale(&self, new_len: usize) -> Result<QrpTable, QrpError> {
        check_table_len(new_len)?;
        if new_len == self.len {
            return Ok(self.clone());
        }
        let mut out = Self::new_unchecked(new_len);
        for slot in self.present_slots() {
            out.mark_covered(slot, self.len);
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ascii_fast_path_equals_the_general_one(text in "[ -~\\t\\n]{0,80}") {
            prop_assert_eq!(split_keywords(&text), split_keywords_unicode(&text));
        }
    }
    use std::io::Read;

    // ---- hash -------------------------------------------------------------------

    /// QRP spec appendix A / LimeWire HashFunctionTest vectors (protocol-facts §4.2).
    const PUBLISHED: &[(&str, u8, u32)] = &[
        ("", 13, 0),
        ("eb", 13, 6791),
        ("ebc", 13, 7082),
        ("ebck", 13, 6698),
        ("ebckl", 13, 3179),
        ("ebcklm", 13, 3235),
        ("ebcklme", 13, 6438),
        ("ebcklmen", 13, 1062),
        ("ebcklmenq", 13, 3527),
        ("", 16, 0),
        ("n", 16, 65003),
        ("nd", 16, 54193),
        ("ndf", 16, 4953),
        ("ndfl", 16, 58201),
        ("ndfla", 16, 34830),
        ("ndflal", 16, 36910),
        ("ndflale", 16, 34586),
        ("ndflalem", 16, 37658),
        ("ndflaleme", 16, 45559),
        ("ol2j34lj", 10, 318),
        ("asdfas23", 10, 503),
        ("9um3o34fd", 10, 758),
        ("a234d", 10, 281),
        ("a3f", 10, 767),
        ("3nja9", 10, 581),
        ("3NJA9", 10, 581),
        ("3nJa9", 10, 581),
        ("2459345938032343", 10, 146),
        ("7777a88a8a8a8", 10, 342),
        ("asdfjklkj3k", 10, 861),
        ("adfk32l", 10, 1011),
        ("zzzzzzzzzzz", 10, 944),
    ];

    /// "Extra vectors" of §4.2 (computed with the verified implementation).
    const EXTRA: &[(&str, u8, u32)] = &[
        ("test", 13, 2589),
        ("test", 16, 20712),
        ("test", 17, 41424),
        ("qrp", 13, 7347),
        ("qrp", 16, 58776),
        ("linux", 16, 16680),
        ("free", 16, 11763),
        ("software", 16, 7666),
        ("mp3", 16, 28995),
        ("\u{9234}\u{6728}", 16, 26404),
    ];

    #[test]
    fn published_hash_vectors() {
        for &(input, bits, expected) in PUBLISHED {
            assert_eq!(hash(input, bits), expected, "hash({input:?}, {bits})");
        }
    }

    #[test]
    fn extra_hash_vectors() {
        for &(input, bits, expected) in EXTRA {
            assert_eq!(hash(input, bits), expected, "hash({input:?}, {bits})");
        }
        assert_eq!("鈴木", "\u{9234}\u{6728}");
        assert_eq!(hash("鈴木", 16), 26404);
    }

    #[test]
    fn hash_range_vector() {
        assert_eq!(hash_range("_ndfl_", 1, 5, 16), 58201);
        assert_eq!(hash_range("_ndfl_", 1, 5, 16), hash("ndfl", 16));
        // Clamping and empty ranges.
        assert_eq!(hash_range("_ndfl_", 1, 100, 16), hash("ndfl_", 16));
        assert_eq!(hash_range("_ndfl_", 5, 1, 16), 0);
        assert_eq!(hash_range("_ndfl_", 100, 200, 16), 0);
        assert_eq!(hash_range("ndfl", 0, 4, 16), hash("ndfl", 16));
    }

    #[test]
    fn hash_bit_edges() {
        for &(input, _, _) in PUBLISHED {
            assert_eq!(hash(input, 0), 0);
            let full = hash(input, 32);
            assert_eq!(hash(input, 40), full);
            for bits in 1..=32u8 {
                let h = hash(input, bits);
                assert_eq!(h, full >> (32 - u32::from(bits)));
                assert!(u64::from(h) < (1u64 << bits));
            }
        }
        assert_eq!(hash("test", 3), 2);
        assert_eq!(hash("qrp", 3), 7);
    }

    #[test]
    fn hash_lowercases_like_java() {
        assert_eq!(hash("Ä", 16), hash("ä", 16));
        assert_eq!(hash("ΣΑ", 16), hash("σα", 16));
        // U+0130's simple lower-case mapping is 'i'.
        assert_eq!(hash("\u{130}", 16), hash("i", 16));
        // Lower-case first, then keep the low byte: U+0141 'Ł' -> U+0142 'ł' -> 0x42,
        // the same byte as U+0242 'ɂ' (already lower case); ASCII 'B' becomes 0x62.
        assert_eq!(hash("Ł", 16), hash("ł", 16));
        assert_eq!(hash("Ł", 16), hash("\u{242}", 16));
        assert_ne!(hash("Ł", 16), hash("B", 16));
        assert_eq!(hash("Ł", 16), finish_hash(0x42, 16));
        // Outside the BMP: two surrogate units, each by its low byte, not lowered.
        // U+1F600 = D83D DE00 -> bytes 3D 00 -> like "=\0".
        assert_eq!(hash("\u{1F600}", 16), hash("=\u{0}", 16));
        assert_eq!(hash_range("a\u{1F600}b", 1, 3, 16), hash("=\u{0}", 16));
    }

    // ---- keywords -----------------------------------------------------------------

    #[test]
    fn split_vectors() {
        assert_eq!(
            split_keywords("/home/test/this_is_gReAt_teSt/WE_ArE_herE_tO_stAy.txt"),
            [
                "home", "test", "this", "is", "great", "test", "we", "are", "here", "to", "stay",
                "txt"
            ]
        );
        let accents = [
            "home", "test", "accents", "remove", "these", "things", "txt",
        ];
        assert_eq!(
            split_keywords("/home/test/âccènts/rÈmovË_thêsÈ_thÎngs.txt"),
            accents
        );
        // The same in decomposed form (base letter + combining mark).
        let decomposed: String = "/home/test/âccènts/rÈmovË_thêsÈ_thÎngs.txt".nfd().collect();
        assert_ne!(decomposed, "/home/test/âccènts/rÈmovË_thêsÈ_thÎngs.txt");
        assert_eq!(split_keywords(&decomposed), accents);
        assert_eq!(split_keywords("＿ＴＥＳＴ＿ＦＩＬＥ"), ["test", "file"]);
    }

    #[test]
    fn split_delimiters() {
        assert_eq!(
            split_keywords(" a-b.c_d+e/f*g(h)i\\j,k "),
            ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
        );
        assert_eq!(
            split_keywords("don't [stop] me!now"),
            ["don", "t", "stop", "me", "now"]
        );
        assert_eq!(split_keywords(""), Vec::<String>::new());
        assert_eq!(split_keywords(" -._ "), Vec::<String>::new());
        assert_eq!(split_keywords("MP3 2004"), ["mp3", "2004"]);
        assert_eq!(split_keywords("鈴木 Ｔｅｓｔ"), ["鈴木", "test"]);
        assert_eq!(split_keywords("İstanbul"), ["istanbul"]);
    }

    #[test]
    fn stemming_prefixes() {
        assert_eq!(table_keywords("goods"), ["goods", "good", "goo"]);
        for text in [
            "goods good goo Goods",
            "ÉTÉ à Paris",
            "a_b-c.Mp3 x",
            "long".repeat(30).as_str(),
            "",
        ] {
            let mut seen = Vec::new();
            for_each_table_keyword(text, |k| {
                if !seen.iter().any(|s: &String| s == k) {
                    seen.push(k.to_string());
                }
            });
            assert_eq!(seen, table_keywords(text), "{text}");
        }
        assert_eq!(table_keywords("hey"), ["hey"]);
        assert_eq!(table_keywords("good"), ["good"]);
        // De-duplicated, first occurrence kept.
        assert_eq!(
            table_keywords("goods good goo Goods"),
            ["goods", "good", "goo"]
        );
        // Characters are scalar values, not bytes.
        assert_eq!(table_keywords("ééééé"), ["eeeee", "eeee", "eee"]);
        assert_eq!(
            table_keywords("鈴木鈴木鈴"),
            ["鈴木鈴木鈴", "鈴木鈴木", "鈴木鈴"]
        );
    }

    // ---- appendix B byte dumps --------------------------------------------------------

    const ZLIB_DUMP: [u8; 12] = [
        0x78, 0x9C, 0x63, 0x58, 0xC0, 0xC0, 0x00, 0x00, 0x01, 0xE4, 0x00, 0xA1,
    ];

    fn appendix_table() -> QrpTable {
        let mut t = QrpTable::new(8).unwrap();
        assert_eq!(hash("test", 3), 2);
        t.insert_keyword("test");
        assert!(t.is_present(2));
        assert_eq!(t.present_count(), 1);
        t
    }

    /// Feeds one whole sequence, returning the ops and the final progress.
    fn decode_all(
        table_len: usize,
        chunks: &[PatchChunk],
    ) -> Result<(Vec<(usize, PatchOp)>, Progress), QrpError> {
        let mut dec = PatchDecoder::new(table_len);
        let mut ops = Vec::new();
        let mut last = None;
        for c in chunks {
            last = Some(dec.feed_chunk(c, &mut |s, op| ops.push((s, op)))?);
        }
        Ok((ops, last.unwrap()))
    }

    fn chunk(seq_no: u8, seq_size: u8, compressor: u8, bits: u8, data: &[u8]) -> PatchChunk {
        PatchChunk {
            seq_no,
            seq_size,
            compressor,
            entry_bits: bits,
            data: data.to_vec(),
        }
    }

    fn payload_of(c: &PatchChunk) -> Vec<u8> {
        let mut out = BytesMut::new();
        RouteTableUpdate::from(c.clone()).encode(&mut out).unwrap();
        out.to_vec()
    }

    fn parse_chunk(payload: &[u8]) -> PatchChunk {
        let m = RouteTableUpdate::parse(&Bytes::copy_from_slice(payload)).unwrap();
        PatchChunk::from_message(&m).unwrap()
    }

    #[test]
    fn appendix_reset() {
        let reset = RouteTableUpdate::Reset {
            table_len: 8,
            infinity: 7,
        };
        let mut out = BytesMut::new();
        reset.encode(&mut out).unwrap();
        assert_eq!(&out[..], [0x00, 0x08, 0x00, 0x00, 0x00, 0x07]);
        assert_eq!(RouteTableUpdate::parse(&out.freeze()).unwrap(), reset);
        assert!(PatchChunk::from_message(&reset).is_none());
    }

    #[test]
    fn appendix_patch_8bit() {
        let entries = appendix_table()
            .diff(&QrpTable::new(8).unwrap(), 7)
            .unwrap();
        assert_eq!(entries, [0, 0, -6, 0, 0, 0, 0, 0]);
        let chunks = build_patch_chunks(&entries, 8, false, 1024).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(
            payload_of(&chunks[0]),
            [
                0x01, 0x01, 0x01, 0x00, 0x08, 0x00, 0x00, 0xFA, 0x00, 0x00, 0x00, 0x00, 0x00
            ]
        );
        let (ops, progress) = decode_all(8, &chunks).unwrap();
        assert_eq!(ops, [(2, PatchOp::Present)]);
        assert_eq!(
            progress,
            Progress::Complete {
                entries: 8,
                full: true
            }
        );
    }

    #[test]
    fn appendix_patch_4bit() {
        let entries = appendix_table()
            .diff(&QrpTable::new(8).unwrap(), 7)
            .unwrap();
        assert_eq!(choose_entry_bits(&entries), 4);
        assert_eq!(pack(&entries, 4).unwrap(), [0x00, 0xA0, 0x00, 0x00]);
        let chunks = build_patch_chunks(&entries, 4, false, 1024).unwrap();
        assert_eq!(
            payload_of(&chunks[0]),
            [0x01, 0x01, 0x01, 0x00, 0x04, 0x00, 0xA0, 0x00, 0x00]
        );
        let parsed = parse_chunk(&payload_of(&chunks[0]));
        assert_eq!(parsed, chunks[0]);
        let mut table = QrpTable::new(8).unwrap();
        let mut dec = PatchDecoder::new(8);
        dec.feed_into(1, 1, 0, 4, &[0x00, 0xA0, 0x00, 0x00], &mut table)
            .unwrap();
        assert_eq!(table, appendix_table());
    }

    #[test]
    fn appendix_patch_4bit_zlib_dump() {
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&ZLIB_DUMP[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, [0x00, 0xA0, 0x00, 0x00]);

        let parsed = parse_chunk(&[&[0x01u8, 0x01, 0x01, 0x01, 0x04][..], &ZLIB_DUMP[..]].concat());
        assert_eq!(parsed, chunk(1, 1, 1, 4, &ZLIB_DUMP));
        let (ops, progress) = decode_all(8, &[parsed]).unwrap();
        assert_eq!(ops, [(2, PatchOp::Present)]);
        assert_eq!(
            progress,
            Progress::Complete {
                entries: 8,
                full: true
            }
        );
    }

    #[test]
    fn appendix_zlib_own_output_round_trips() {
        let packed = pack(&[0, 0, -6, 0, 0, 0, 0, 0], 4).unwrap();
        let ours = compress(&packed);
        assert_eq!(&ours[..2], [0x78, 0x9C], "zlib header, default level");
        let mut inflated = Vec::new();
        flate2::read::ZlibDecoder::new(&ours[..])
            .read_to_end(&mut inflated)
            .unwrap();
        assert_eq!(inflated, packed);
        // The 4-byte patch does not get smaller: build_patch_chunks sends it raw.
        let chunks = build_patch_chunks(&[0, 0, -6, 0, 0, 0, 0, 0], 4, true, 1024).unwrap();
        assert_eq!(chunks[0].compressor, COMPRESSOR_NONE);
        // Decoding our compressed bytes gives the same result as the dump.
        let (ops, _) = decode_all(8, &[chunk(1, 1, 1, 4, &ours)]).unwrap();
        assert_eq!(ops, [(2, PatchOp::Present)]);
    }

    #[test]
    fn appendix_zlib_dump_split_everywhere() {
        for split in 0..=ZLIB_DUMP.len() {
            let chunks = [
                chunk(1, 2, 1, 4, &ZLIB_DUMP[..split]),
                chunk(2, 2, 1, 4, &ZLIB_DUMP[split..]),
            ];
            let (ops, progress) = decode_all(8, &chunks).unwrap();
            assert_eq!(ops, [(2, PatchOp::Present)], "split at {split}");
            assert_eq!(
                progress,
                Progress::Complete {
                    entries: 8,
                    full: true
                }
            );
        }
        // And one byte per message.
        let chunks: Vec<_> = ZLIB_DUMP
            .iter()
            .enumerate()
            .map(|(i, b)| chunk(i as u8 + 1, 12, 1, 4, &[*b]))
            .collect();
        assert_eq!(decode_all(8, &chunks).unwrap().0, [(2, PatchOp::Present)]);
    }

    #[test]
    fn appendix_split_uncompressed() {
        let entries = [0, 0, -6, 0, 0, 0, 0, 0];
        let chunks = build_patch_chunks(&entries, 4, false, 2).unwrap();
        assert_eq!(
            chunks.iter().map(payload_of).collect::<Vec<_>>(),
            [
                vec![0x01, 0x01, 0x02, 0x00, 0x04, 0x00, 0xA0],
                vec![0x01, 0x02, 0x02, 0x00, 0x04, 0x00, 0x00],
            ]
        );
        let mut dec = PatchDecoder::new(8);
        let mut ops = Vec::new();
        let p1 = dec
            .feed(1, 2, 0, 4, &[0x00, 0xA0], &mut |s, o| ops.push((s, o)))
            .unwrap();
        assert_eq!(p1, Progress::Partial { entries: 4 });
        let p2 = dec
            .feed(2, 2, 0, 4, &[0x00, 0x00], &mut |s, o| ops.push((s, o)))
            .unwrap();
        assert_eq!(
            p2,
            Progress::Complete {
                entries: 8,
                full: true
            }
        );
        assert_eq!(ops, [(2, PatchOp::Present)]);
    }

    #[test]
    fn appendix_removal() {
        let with = appendix_table();
        let without = QrpTable::new(8).unwrap();
        let entries = without.diff(&with, 7).unwrap();
        assert_eq!(entries, [0, 0, 6, 0, 0, 0, 0, 0]);
        assert_eq!(pack(&entries, 8).unwrap(), [0, 0, 0x06, 0, 0, 0, 0, 0]);
        assert_eq!(pack(&entries, 4).unwrap(), [0x00, 0x60, 0x00, 0x00]);
        let mut table = with.clone();
        PatchDecoder::new(8)
            .feed_into(1, 1, 0, 4, &[0x00, 0x60, 0x00, 0x00], &mut table)
            .unwrap();
        assert_eq!(table, without);
    }

    #[test]
    fn qrp_dump_discrepancy_documented() {
        // The appendix's "qrp" dumps put the change in slot 6 although the hash
        // says 7: we decode the dump as written (slot 6) and trust the hash.
        assert_eq!(hash("qrp", 3), 7);
        let dump = [
            0x78, 0x9C, 0x63, 0x60, 0x60, 0x58, 0x00, 0x00, 0x00, 0xA4, 0x00, 0xA1,
        ];
        let (ops, _) = decode_all(8, &[chunk(1, 1, 1, 4, &dump)]).unwrap();
        assert_eq!(ops, [(6, PatchOp::Present)]);
    }

    // ---- packing ------------------------------------------------------------------

    #[test]
    fn pack_errors_and_padding() {
        assert_eq!(
            pack(&[0, 8], 4),
            Err(QrpError::EntryOutOfRange {
                index: 1,
                value: 8,
                bits: 4
            })
        );
        assert_eq!(
            pack(&[-9], 4),
            Err(QrpError::EntryOutOfRange {
                index: 0,
                value: -9,
                bits: 4
            })
        );
        assert_eq!(pack(&[0], 2), Err(QrpError::UnsupportedEntryBits(2)));
        assert_eq!(pack(&[-8, 7, -1], 4).unwrap(), [0x87, 0xF0]);
        assert_eq!(pack(&[], 4).unwrap(), Vec::<u8>::new());
        assert_eq!(choose_entry_bits(&[-8, 7]), 4);
        assert_eq!(choose_entry_bits(&[-9]), 8);
        assert_eq!(choose_entry_bits(&[127]), 8);
        let mut out = Vec::new();
        assert_eq!(
            unpack(&[0], 3, &mut out),
            Err(QrpError::UnsupportedEntryBits(3))
        );
    }

    #[test]
    fn unpack_small_widths() {
        let mut out = Vec::new();
        unpack(&[0b1000_0001], 1, &mut out).unwrap();
        assert_eq!(out, [1, 0, 0, 0, 0, 0, 0, 1]);
        out.clear();
        // 2-bit: 01 = +1, 11 = -1, 10 = -2, 00 = 0, MSB first.
        unpack(&[0b01_11_10_00], 2, &mut out).unwrap();
        assert_eq!(out, [1, -1, -2, 0]);
        out.clear();
        unpack(&[0x7F, 0x80], 8, &mut out).unwrap();
        assert_eq!(out, [127, -128]);
    }

    #[test]
    fn decode_1bit_flips_and_2bit_signs() {
        let mut table = QrpTable::new(16).unwrap();
        table.set_present(0, true);
        let mut dec = PatchDecoder::new(16);
        // Flip slots 0 and 7 and 8.
        dec.feed_into(1, 1, 0, 1, &[0b1000_0001, 0b1000_0000], &mut table)
            .unwrap();
        assert_eq!(table.present_slots().collect::<Vec<_>>(), [7, 8]);
        // 2-bit: slot 0 -> present (-1), slot 7 -> absent (+1).
        dec.feed_into(1, 1, 0, 2, &[0b11_00_00_00, 0b00_00_00_01], &mut table)
            .unwrap();
        assert_eq!(table.present_slots().collect::<Vec<_>>(), [0, 8]);
    }

    #[test]
    fn padding_in_final_byte_is_ignored() {
        // Table of 2 slots, 1-bit patch: one byte covers 8 entries.
        let mut table = QrpTable::new(2).unwrap();
        let p = PatchDecoder::new(2)
            .feed_into(1, 1, 0, 1, &[0b0111_1111], &mut table)
            .unwrap();
        assert_eq!(
            p,
            Progress::Complete {
                entries: 2,
                full: true
            }
        );
        assert_eq!(table.present_slots().collect::<Vec<_>>(), [1]);
        // A second byte is entirely past the table: overflow.
        assert_eq!(
            PatchDecoder::new(2).feed_into(1, 1, 0, 1, &[0, 0], &mut table),
            Err(QrpError::Overflow { table_len: 2 })
        );
    }

    // ---- build_patch_chunks -----------------------------------------------------------

    #[test]
    fn chunk_limits() {
        assert_eq!(
            build_patch_chunks(&[0; 8], 8, false, 0),
            Err(QrpError::BadChunkSize)
        );
        assert_eq!(
            build_patch_chunks(&[0; 255], 8, false, 1).unwrap().len(),
            255
        );
        assert_eq!(
            build_patch_chunks(&[0; 256], 8, false, 1),
            Err(QrpError::TooManyChunks { needed: 256 })
        );
        let empty = build_patch_chunks(&[], 4, true, 10).unwrap();
        assert_eq!(empty, [chunk(1, 1, 0, 4, &[])]);
        assert_eq!(
            decode_all(8, &empty).unwrap(),
            (
                vec![],
                Progress::Complete {
                    entries: 0,
                    full: false
                }
            )
        );
        // A large sparse patch compresses.
        let mut entries = vec![0i8; 1 << 16];
        entries[1234] = -6;
        let chunks = build_patch_chunks(&entries, 4, true, 4096).unwrap();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].compressor, COMPRESSOR_ZLIB);
        let (ops, _) = decode_all(1 << 16, &chunks).unwrap();
        assert_eq!(ops, [(1234, PatchOp::Present)]);
    }

    #[test]
    fn short_patch_is_accepted() {
        let (ops, progress) = decode_all(16, &[chunk(1, 1, 0, 8, &[0, 0xFA])]).unwrap();
        assert_eq!(ops, [(1, PatchOp::Present)]);
        assert_eq!(
            progress,
            Progress::Complete {
                entries: 2,
                full: false
            }
        );
    }

    #[test]
    fn patch_entries_and_infinity() {
        assert_eq!(
            patch_entries(|_| false, |_| true, 2, 1),
            Err(QrpError::BadInfinity(1))
        );
        assert_eq!(
            patch_entries(|_| false, |_| true, 2, 129),
            Err(QrpError::BadInfinity(129))
        );
        assert_eq!(
            patch_entries(|i| i == 0, |i| i == 1, 3, 2).unwrap(),
            [1, -1, 0]
        );
        assert_eq!(
            patch_entries(|i| i == 0, |i| i == 1, 2, 128).unwrap(),
            [127, -127]
        );
        let a = QrpTable::new(8).unwrap();
        let b = QrpTable::new(16).unwrap();
        assert_eq!(
            a.diff(&b, 7),
            Err(QrpError::TableLenMismatch { left: 8, right: 16 })
        );
    }

    // ---- malformed input --------------------------------------------------------------

    fn noop(_: usize, _: PatchOp) {}

    #[test]
    fn sequence_errors() {
        let mut d = PatchDecoder::new(64);
        assert_eq!(
            d.feed(2, 3, 0, 4, &[0], &mut noop),
            Err(QrpError::SequenceGap {
                expected: 1,
                got: 2
            })
        );
        assert_eq!(
            d.feed(1, 0, 0, 4, &[0], &mut noop),
            Err(QrpError::BadSequenceSize)
        );
        d.feed(1, 3, 0, 4, &[0], &mut noop).unwrap();
        assert!(d.in_sequence());
        assert_eq!(
            d.feed(3, 3, 0, 4, &[0], &mut noop),
            Err(QrpError::SequenceGap {
                expected: 2,
                got: 3
            })
        );
        // After an error the decoder waits for a new sequence.
        assert!(!d.in_sequence());
        d.feed(1, 3, 0, 4, &[0], &mut noop).unwrap();
        assert_eq!(
            d.feed(2, 4, 0, 4, &[0], &mut noop),
            Err(QrpError::ParameterChanged {
                field: "sequence size",
                was: 3,
                now: 4
            })
        );
        d.feed(1, 3, 0, 4, &[0], &mut noop).unwrap();
        assert_eq!(
            d.feed(2, 3, 1, 4, &[0], &mut noop),
            Err(QrpError::ParameterChanged {
                field: "compressor",
                was: 0,
                now: 1
            })
        );
        d.feed(1, 3, 0, 4, &[0], &mut noop).unwrap();
        assert_eq!(
            d.feed(2, 3, 0, 8, &[0], &mut noop),
            Err(QrpError::ParameterChanged {
                field: "entry bits",
                was: 4,
                now: 8
            })
        );
        // Restarting at 1 in the middle of a sequence is a gap too.
        d.feed(1, 3, 0, 4, &[0], &mut noop).unwrap();
        assert_eq!(
            d.feed(1, 3, 0, 4, &[0], &mut noop),
            Err(QrpError::SequenceGap {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            d.feed(1, 1, 2, 4, &[0], &mut noop),
            Err(QrpError::UnsupportedCompressor(2))
        );
        for bits in [0, 3, 5, 6, 7, 9, 16, 255] {
            assert_eq!(
                d.feed(1, 1, 0, bits, &[0], &mut noop),
                Err(QrpError::UnsupportedEntryBits(bits))
            );
        }
    }

    #[test]
    fn new_sequence_after_completion() {
        let mut table = QrpTable::new(8).unwrap();
        let mut d = PatchDecoder::new(8);
        d.feed_into(1, 1, 1, 4, &ZLIB_DUMP, &mut table).unwrap();
        assert!(table.is_present(2));
        assert!(!d.in_sequence());
        d.feed_into(1, 2, 0, 4, &[0x00, 0x60], &mut table).unwrap();
        d.feed_into(2, 2, 0, 4, &[0x00, 0x00], &mut table).unwrap();
        assert!(!table.is_present(2));
        d.feed_into(1, 1, 1, 4, &ZLIB_DUMP, &mut table).unwrap();
        assert!(table.is_present(2));
    }

    #[test]
    fn overflow_errors() {
        assert_eq!(
            decode_all(8, &[chunk(1, 1, 0, 8, &[0; 9])]),
            Err(QrpError::Overflow { table_len: 8 })
        );
        assert_eq!(
            decode_all(8, &[chunk(1, 1, 0, 4, &[0; 5])]),
            Err(QrpError::Overflow { table_len: 8 })
        );
        assert_eq!(
            decode_all(8, &[chunk(1, 2, 0, 4, &[0; 4]), chunk(2, 2, 0, 4, &[0])]),
            Err(QrpError::Overflow { table_len: 8 })
        );
        let z = compress(&[0; 5]);
        assert_eq!(
            decode_all(8, &[chunk(1, 1, 1, 4, &z)]),
            Err(QrpError::Overflow { table_len: 8 })
        );
        assert_eq!(
            decode_all(0, &[chunk(1, 1, 0, 8, &[0])]),
            Err(QrpError::Overflow { table_len: 0 })
        );
    }

    #[test]
    fn bad_zlib() {
        // Garbage header.
        assert!(matches!(
            decode_all(8, &[chunk(1, 1, 1, 4, &[0x00, 0x00, 0xA0, 0x00])]),
            Err(QrpError::Inflate(_))
        ));
        // Truncated stream.
        for cut in 0..ZLIB_DUMP.len() {
            assert_eq!(
                decode_all(8, &[chunk(1, 1, 1, 4, &ZLIB_DUMP[..cut])]),
                Err(QrpError::TruncatedStream),
                "cut at {cut}"
            );
        }
        // Bad Adler-32.
        let mut bad = ZLIB_DUMP;
        bad[11] ^= 1;
        assert!(matches!(
            decode_all(8, &[chunk(1, 1, 1, 4, &bad)]),
            Err(QrpError::Inflate(_))
        ));
        // Data after the end of the stream, in the same or in a later message.
        let mut trailing = ZLIB_DUMP.to_vec();
        trailing.push(0);
        assert_eq!(
            decode_all(8, &[chunk(1, 1, 1, 4, &trailing)]),
            Err(QrpError::TrailingData { bytes: 1 })
        );
        assert_eq!(
            decode_all(
                8,
                &[chunk(1, 2, 1, 4, &ZLIB_DUMP), chunk(2, 2, 1, 4, &[1, 2])]
            ),
            Err(QrpError::TrailingData { bytes: 2 })
        );
        // An empty final message after the stream ended is fine.
        assert!(decode_all(8, &[chunk(1, 2, 1, 4, &ZLIB_DUMP), chunk(2, 2, 1, 4, &[])]).is_ok());
        // Raw deflate (no zlib header) is rejected.
        let mut raw = Vec::new();
        let mut enc = flate2::write::DeflateEncoder::new(&mut raw, Compression::default());
        enc.write_all(&[0x00, 0xA0, 0x00, 0x00]).unwrap();
        enc.finish().unwrap();
        assert!(decode_all(8, &[chunk(1, 1, 1, 4, &raw)]).is_err());
    }

    #[test]
    fn zlib_bomb_is_bounded() {
        let bomb = compress(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096, "bomb is {} bytes", bomb.len());
        let mut d = PatchDecoder::new(1024);
        let mut calls = 0usize;
        assert_eq!(
            d.feed(1, 1, 1, 8, &bomb, &mut |_, _| calls += 1),
            Err(QrpError::Overflow { table_len: 1024 })
        );
        assert_eq!(calls, 0);
        // Fed in small pieces it stops just as early.
        let pieces: Vec<_> = bomb.chunks(bomb.len().div_ceil(200)).collect();
        let n = pieces.len() as u8;
        let mut d = PatchDecoder::new(1024);
        let mut result = Ok(Progress::Partial { entries: 0 });
        for (i, p) in pieces.iter().enumerate() {
            result = d.feed(i as u8 + 1, n, 1, 8, p, &mut noop);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(QrpError::Overflow { table_len: 1024 }));
        // A bomb of nonzero entries reports at most table_len entries.
        let bomb = compress(&vec![0xFAu8; 1 << 20]);
        let mut calls = 0usize;
        assert_eq!(
            PatchDecoder::new(1024).feed(1, 1, 1, 8, &bomb, &mut |_, _| calls += 1),
            Err(QrpError::Overflow { table_len: 1024 })
        );
        assert_eq!(calls, 1024);
    }

    #[test]
    fn table_length_bounds() {
        assert_eq!(check_table_len(0), Err(QrpError::BadTableLen(0)));
        assert_eq!(check_table_len(6), Err(QrpError::BadTableLen(6)));
        assert_eq!(
            check_table_len(1 << 23),
            Err(QrpError::BadTableLen(1 << 23))
        );
        assert_eq!(check_table_len(1 << 17), Ok(()));
        assert_eq!(parse_chunk(&[1, 1, 1, 0, 4]), chunk(1, 1, 0, 4, &[]));
    }

    // ---- table --------------------------------------------------------------------

    #[test]
    fn table_basics() {
        assert_eq!(QrpTable::new(0), Err(QrpError::BadTableLen(0)));
        assert_eq!(QrpTable::new(3), Err(QrpError::BadTableLen(3)));
        assert_eq!(
            QrpTable::new(MAX_TABLE_LEN * 2),
            Err(QrpError::BadTableLen((MAX_TABLE_LEN * 2) as u64))
        );
        let mut t = QrpTable::new(1 << 16).unwrap();
        assert_eq!(t.hash_bits(), 16);
        t.insert_text("Free Linux Software.mp3");
        for w in [
            "free", "linux", "software", "softwar", "softwa", "mp3", "linu", "lin",
        ] {
            assert!(t.contains_keyword(w), "{w}");
        }
        assert!(t.contains_hash(16680));
        assert!(!t.contains_hash(1 << 16));
        assert!(t.matches_query(&["linux", "free"]));
        assert!(t.matches_query_text("LINUX software"));
        assert!(!t.matches_query(&["linux", "windows"]));
        assert!(!t.matches_query::<&str>(&[]));
        assert!(!t.matches_query_text(" - "));
        t.apply(16680, 6);
        assert!(!t.contains_keyword("linux"));
        t.apply(16680, -1);
        assert!(t.contains_keyword("linux"));
        t.apply(16680, 0);
        assert!(t.contains_keyword("linux"));
        t.apply(1 << 20, -1); // ignored
        t.clear();
        assert_eq!(t.present_count(), 0);

        let mut one = QrpTable::new(1).unwrap();
        one.insert_keyword("anything");
        assert!(one.is_present(0));
        assert!(one.matches_query(&["whatever"]));
    }

    #[test]
    fn rescale_examples() {
        let mut t = QrpTable::new(8).unwrap();
        t.set_present(2, true);
        t.set_present(7, true);
        let up = t.rescale(32).unwrap();
        assert_eq!(
            up.present_slots().collect::<Vec<_>>(),
            [8, 9, 10, 11, 28, 29, 30, 31]
        );
        let down = t.rescale(2).unwrap();
        assert_eq!(down.present_slots().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(
            t.rescale(4).unwrap().present_slots().collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(t.rescale(1).unwrap().present_count(), 1);
        assert_eq!(up.rescale(8).unwrap(), t);
        assert_eq!(t.rescale(5), Err(QrpError::BadTableLen(5)));
        let mut merged = QrpTable::new(16).unwrap();
        merged.merge(&t);
        assert_eq!(merged, t.rescale(16).unwrap());
        merged.merge(&QrpTable::new(16).unwrap());
        assert_eq!(merged, t.rescale(16).unwrap());
    }

    // ---- properties ---------------------------------------------------------------

    fn table_from(bits: &[bool]) -> QrpTable {
        let mut t = QrpTable::new(bits.len()).unwrap();
        for (i, &b) in bits.iter().enumerate() {
            t.set_present(i, b);
        }
        t
    }

    fn table_pair() -> impl Strategy<Value = (Vec<bool>, Vec<bool>)> {
        (0u32..=11).prop_flat_map(|k| {
            let n = 1usize << k;
            (
                proptest::collection::vec(any::<bool>(), n),
                proptest::collection::vec(proptest::bool::weighted(0.1), n),
            )
        })
    }

    #[test]
    fn entry_width_at_infinity_9() {
        // The case proptest found: with infinity 9 a slot becoming present is
        // -8, which 4 bits hold; one becoming absent is +8, which they do not.
        let present = patch_entries(|_| false, |_| true, 1, 9).unwrap();
        assert_eq!(
            (present.clone(), choose_entry_bits(&present)),
            (vec![-8], 4)
        );
        let absent = patch_entries(|_| true, |_| false, 1, 9).unwrap();
        assert_eq!((absent.clone(), choose_entry_bits(&absent)), (vec![8], 8));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn pack_unpack_4bit(entries in proptest::collection::vec(-8i8..=7, 0..300)) {
            let packed = pack(&entries, 4).unwrap();
            prop_assert_eq!(packed.len(), entries.len().div_ceil(2));
            let mut out = Vec::new();
            unpack(&packed, 4, &mut out).unwrap();
            if entries.len() % 2 == 1 {
                prop_assert_eq!(out.pop(), Some(0));
            }
            prop_assert_eq!(out, entries);
        }

        #[test]
        fn pack_unpack_8bit(entries in proptest::collection::vec(any::<i8>(), 0..300)) {
            let packed = pack(&entries, 8).unwrap();
            let mut out = Vec::new();
            unpack(&packed, 8, &mut out).unwrap();
            prop_assert_eq!(out, entries);
        }

        #[test]
        fn patch_round_trip(
            (old_bits, flips) in table_pair(),
            infinity in prop_oneof![Just(2u8), Just(7u8), 2u8..=128],
            chunk_size in 1usize..600,
            try_compress in any::<bool>(),
        ) {
            let old = table_from(&old_bits);
            let new_bits: Vec<bool> =
                old_bits.iter().zip(&flips).map(|(a, f)| a ^ f).collect();
            let new = table_from(&new_bits);
            let entries = new.diff(&old, infinity).unwrap();
            let bits = choose_entry_bits(&entries);
            // 4 bits hold -8..=7: every entry when infinity <= 8; with
            // infinity 9 a slot becoming present (-8) but not one becoming
            // absent (+8); beyond, only unchanged slots.
            let fits = infinity <= 8
                || entries.iter().all(|&e| e == 0)
                || (infinity == 9 && entries.iter().all(|&e| e <= 0));
            prop_assert_eq!(bits == 4, fits);
            let chunks = match build_patch_chunks(&entries, bits, try_compress, chunk_size) {
                Ok(c) => c,
                Err(QrpError::TooManyChunks { needed }) => {
                    prop_assert!(needed > MAX_CHUNKS);
                    return Ok(());
                }
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            };
            prop_assert!(chunks.iter().all(|c| c.data.len() <= chunk_size));
            let mut table = old.clone();
            let mut dec = PatchDecoder::new(old.slot_count());
            let n = chunks.len();
            for (i, c) in chunks.iter().enumerate() {
                let parsed = parse_chunk(&payload_of(c));
                prop_assert_eq!(&parsed, c);
                let p = dec
                    .feed_into(parsed.seq_no, parsed.seq_size, parsed.compressor,
                               parsed.entry_bits, &parsed.data, &mut table)
                    .unwrap();
                if i + 1 == n {
                    prop_assert_eq!(p, Progress::Complete {
                        entries: old.slot_count(),
                        full: true,
                    });
                } else {
                    prop_assert!(matches!(p, Progress::Partial { .. }), "partial expected");
                }
            }
            prop_assert_eq!(table, new);
        }

        #[test]
        fn rescale_properties(
            k in 0u32..=10,
            seed in proptest::collection::vec(any::<u64>(), 16),
            density in 0usize..64,
            d in 0u32..=4,
        ) {
            let n = 1usize << k;
            let bits: Vec<bool> = (0..n).map(|i| {
                let w = seed[i % 16].rotate_left(i as u32 / 16).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                (w >> 58) as usize <= density
            }).collect();
            let t = table_from(&bits);
            // Up then down: exactly the original.
            let up = t.rescale(n << d).unwrap();
            prop_assert_eq!(up.present_count(), t.present_count() << d);
            prop_assert_eq!(&up.rescale(n).unwrap(), &t);
            // Down then up: a superset of the original.
            if d <= k {
                let small = t.rescale(n >> d).unwrap();
                let back = small.rescale(n).unwrap();
                for s in t.present_slots() {
                    prop_assert!(back.is_present(s));
                }
            }
        }

        #[test]
        fn rescale_keeps_keywords(
            words in proptest::collection::vec("[a-z0-9]{1,12}", 1..20),
            k in 0u32..=16,
            k2 in 0u32..=16,
        ) {
            let mut t = QrpTable::new(1 << k).unwrap();
            for w in &words {
                t.insert_keyword(w);
            }
            let r = t.rescale(1 << k2).unwrap();
            for w in &words {
                prop_assert!(r.contains_keyword(w), "{} lost", w);
            }
            prop_assert!(r.matches_query(&words));
        }

        #[test]
        fn hash_range_matches_substring(
            s in "[ -~]{0,20}",
            a in 0usize..25,
            b in 0usize..25,
            bits in 0u8..=32,
        ) {
            let sub: String = s.chars().skip(a).take(b.saturating_sub(a)).collect();
            prop_assert_eq!(hash_range(&s, a, b, bits), hash(&sub, bits));
        }

        #[test]
        fn hash_rescale_property(s in "\\PC{0,12}", bits in 1u8..32) {
            let h = hash(&s, bits);
            let h1 = hash(&s, bits + 1);
            prop_assert!(h1 == 2 * h || h1 == 2 * h + 1);
        }

        #[test]
        fn split_is_normalized(s in "\\PC{0,40}") {
            for w in split_keywords(&s) {
                prop_assert!(!w.is_empty());
                prop_assert!(w.chars().all(|c| c.is_alphanumeric() && !is_combining_mark(c)));
                prop_assert_eq!(split_keywords(&w), vec![w.clone()]);
            }
        }

        #[test]
        fn decoder_never_panics(
            msgs in proptest::collection::vec(
                (0u8..4, 0u8..4, 0u8..3, prop_oneof![Just(1u8), Just(2), Just(4), Just(8), any::<u8>()],
                 proptest::collection::vec(any::<u8>(), 0..64)),
                0..8),
            k in 0u32..8,
        ) {
            let n = 1usize << k;
            let mut d = PatchDecoder::new(n);
            let mut table = QrpTable::new(n).unwrap();
            for (seq_no, seq_size, compressor, bits, data) in msgs {
                let mut data = data;
                if compressor == 1 && seq_no == 1 && !data.is_empty() {
                    data = compress(&data);
                }
                if let Ok(Progress::Complete { entries, .. }) =
                    d.feed_into(seq_no, seq_size, compressor, bits, &data, &mut table)
                {
                    prop_assert!(entries <= n);
                }
            }
        }
    }
}
