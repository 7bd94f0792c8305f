//! Checks shared by the fuzz targets in `fuzz_targets/`.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use servent::wire::ggep::{DEFAULT_INFLATE_BUDGET, MAX_DATA_LEN};
use servent::wire::{EncodeError, ExtArea, ExtItem, Ggep, WireError};

/// A fresh inflate budget, as [`servent::wire::Message::parse`] gives each message.
pub fn budget() -> usize {
    DEFAULT_INFLATE_BUDGET
}

/// Values at least this long may legitimately fail to encode with
/// `EncodeError::TooLong { what: "GGEP value", .. }`.
///
/// A parsed GGEP value is written back zlib-compressed when it arrived compressed,
/// and COBS-stuffed inside NUL-delimited extension areas. Both can make the wire
/// form longer than the one it was parsed from: zlib at its default level may
/// compress worse than whatever produced the original stream, and COBS adds one
/// byte per 254. Only a value within a few per cent of [`MAX_DATA_LEN`] (or
/// incompressible data close to it) can overflow that way, so a `TooLong` from any
/// value shorter than half of it is still reported as a bug. With libFuzzer's
/// default `-max_len` such values are never produced; the exception only matters
/// for runs with very large inputs.
pub const GGEP_TOO_LONG_THRESHOLD: usize = MAX_DATA_LEN / 2;

/// The length of the longest (plain) value in a GGEP block.
pub fn ggep_max(g: &Ggep) -> usize {
    g.exts.iter().map(|e| e.data.len()).max().unwrap_or(0)
}

/// The length of the longest GGEP value in an extension area.
pub fn ext_area_max(a: &ExtArea) -> usize {
    a.items
        .iter()
        .map(|i| match i {
            ExtItem::Ggep(g) => ggep_max(g),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

/// Hex dump for assertion messages.
pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether an encoding error is the one tolerated exception (see
/// [`GGEP_TOO_LONG_THRESHOLD`]) for a value whose longest GGEP value is `ggep_len`.
pub fn tolerated(e: &EncodeError, ggep_len: usize) -> bool {
    matches!(
        e,
        EncodeError::TooLong {
            what: "GGEP value",
            ..
        }
    ) && ggep_len >= GGEP_TOO_LONG_THRESHOLD
}

/// Encodes `value` with `encode` into a fresh buffer. `None` for the tolerated
/// exception; any other error is a bug.
pub fn encode_or_panic<T: Debug>(
    value: &T,
    encode: impl Fn(&T, &mut BytesMut) -> Result<(), EncodeError>,
    ggep_len: usize,
) -> Option<Bytes> {
    let mut out = BytesMut::new();
    match encode(value, &mut out) {
        Ok(()) => Some(out.freeze()),
        Err(e) if tolerated(&e, ggep_len) => None,
        Err(e) => panic!("a parsed value failed to encode: {e}\nvalue: {value:?}"),
    }
}

/// The payload round trip: when `input` parses to `x`, `encode(x)` must succeed,
/// parse back to `x`, and `encode` of that must give the same bytes again.
///
/// `ggep_len` reports the longest GGEP value inside a parsed value (0 for types
/// without GGEP), for the one tolerated encoding failure.
pub fn round_trip<T: PartialEq + Debug>(
    input: &[u8],
    parse: impl Fn(&Bytes) -> Result<T, WireError>,
    encode: impl Fn(&T, &mut BytesMut) -> Result<(), EncodeError>,
    ggep_len: impl Fn(&T) -> usize,
) {
    let input = Bytes::copy_from_slice(input);
    let Ok(first) = parse(&input) else {
        return;
    };
    let Some(wire) = encode_or_panic(&first, &encode, ggep_len(&first)) else {
        return;
    };
    let second = match parse(&wire) {
        Ok(v) => v,
        Err(e) => panic!(
            "the encoding of a parsed value does not parse: {e}\nvalue: {first:?}\nencoding: {}",
            hex(&wire)
        ),
    };
    assert_eq!(
        second,
        first,
        "parse(encode(x)) != x\nencoding: {}",
        hex(&wire)
    );
    let mut again = BytesMut::new();
    if let Err(e) = encode(&second, &mut again) {
        panic!("the re-parsed value failed to encode: {e}\nvalue: {second:?}");
    }
    assert!(
        again[..] == wire[..],
        "encoding is not canonical: two encodings of equal values differ\nfirst:  {}\nsecond: {}",
        hex(&wire),
        hex(&again)
    );
}

/// `Message::validate` (the borrowed views) accepts exactly what `Message::parse`
/// accepts, except that a compressed GGEP value is only inflated when read, so a
/// corrupt or oversized one passes `validate` and fails `parse`.
pub fn validate_agrees(function: servent::wire::Function, input: &[u8]) {
    use servent::wire::Message;
    use servent::wire::ggep::GgepError;
    let parsed = Message::parse(function, &Bytes::copy_from_slice(input));
    let valid = Message::validate(function, input);
    match (&parsed, &valid) {
        (Ok(_), Ok(())) | (Err(_), Err(_)) => {}
        (Err(WireError::Ggep(GgepError::BadZlib | GgepError::InflateLimit)), Ok(())) => {}
        _ => panic!(
            "parse {parsed:?} but validate {valid:?}\ninput: {}",
            hex(input)
        ),
    }
}

/// What a stream decoder made of a byte stream.
#[derive(Debug, PartialEq)]
pub struct Decoded<F> {
    pub frames: Vec<F>,
    /// The error that stopped decoding, as text.
    pub error: Option<String>,
    /// Bytes still buffered at the end (only meaningful without an error).
    pub leftover: usize,
}

/// Runs `codec` over `chunks`, fed one at a time as they would arrive from a
/// socket, until the input ends or the codec fails.
pub fn decode_chunks<'a, D>(
    mut codec: D,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> Decoded<D::Item>
where
    D: tokio_util::codec::Decoder,
    D::Error: std::fmt::Display,
{
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    return Decoded {
                        frames,
                        error: Some(e.to_string()),
                        leftover: buf.len(),
                    };
                }
            }
        }
    }
    Decoded {
        frames,
        error: None,
        leftover: buf.len(),
    }
}

/// Cuts `stream` into chunks whose sizes come from `sizes` in turn (a byte below
/// 0x80 gives 1..=128 bytes, others multiples of 64 up to 8 KiB); no chunks when
/// `sizes` is empty.
pub fn chunks<'a>(stream: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut pos = 0;
    sizes.iter().cycle().map_while(move |&b| {
        if pos >= stream.len() {
            return None;
        }
        let size = if b < 0x80 {
            b as usize + 1
        } else {
            ((b & 0x7f) as usize + 1) * 64
        };
        let end = stream.len().min(pos + size);
        let chunk = &stream[pos..end];
        pos = end;
        Some(chunk)
    })
}
