//! The descriptor stream codec, fed in chunks.
//!
//! Input layout: a control byte `c`, then `(c & 7) + 1` chunk-size bytes, then the
//! stream. Bit 3 of `c` selects tiny size limits (so that `TooLarge` is reached
//! with short inputs). A chunk-size byte `b` below 0x80 means `b + 1` bytes,
//! otherwise `((b & 0x7f) + 1) * 64` bytes; the sizes are used in turn, cyclically.
//!
//! Checks: decoding never panics; the frames (and whether decoding failed, and
//! how) are the same whatever the chunking as when the stream arrives at once;
//! after an error nothing more is decoded; without an error the bytes left over
//! are an incomplete frame; each frame, re-encoded with the codec's `Encoder`,
//! gives back exactly the bytes it was decoded from. Each frame's payload is also
//! handed to `Frame::message`, which must not panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use servent::framing::{DescriptorCodec, SizeLimits};
use servent::wire::{HEADER_LEN, Header};
use servent_fuzz::{chunks, decode_chunks, hex};
use tokio_util::codec::Encoder;

const TINY: SizeLimits = SizeLimits {
    query: 8,
    query_hit: 64,
    other: 32,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let n = (control & 7) as usize + 1;
    if rest.len() < n {
        return;
    }
    let (sizes, stream) = rest.split_at(n);
    let limits = if control & 8 != 0 {
        TINY
    } else {
        SizeLimits::default()
    };

    let whole = decode_chunks(DescriptorCodec::new(limits), std::iter::once(stream));

    let chunked = decode_chunks(DescriptorCodec::new(limits), chunks(stream, sizes));

    assert_eq!(
        chunked.frames, whole.frames,
        "frames depend on the chunking"
    );
    assert_eq!(chunked.error, whole.error, "errors depend on the chunking");

    // Each frame re-encodes to the bytes it came from.
    let mut codec = DescriptorCodec::new(limits);
    let mut offset = 0;
    for frame in &whole.frames {
        assert_eq!(frame.header.payload_len as usize, frame.payload.len());
        let mut out = BytesMut::new();
        codec
            .encode(frame, &mut out)
            .expect("a decoded frame re-encodes");
        let original = &stream[offset..offset + frame.wire_len()];
        assert!(
            out[..] == original[..],
            "re-encoded frame differs\noriginal:   {}\nre-encoded: {}",
            hex(original),
            hex(&out)
        );
        offset += frame.wire_len();
        let _ = frame.message();
    }

    // What follows the last frame: the frame that failed, or an incomplete one.
    let tail = &stream[offset..];
    match (&whole.error, Header::parse_prefix(tail)) {
        (Some(_), Some(h)) => assert!(
            h.payload_len > limits.limit_for(h.function),
            "error on a header within its limit: {h:?}"
        ),
        (Some(e), None) => panic!("error without a complete header: {e}"),
        (None, Some(h)) => {
            assert!(h.payload_len <= limits.limit_for(h.function));
            assert!(
                tail.len() < HEADER_LEN + h.payload_len as usize,
                "a complete frame was left undecoded"
            );
        }
        (None, None) => {}
    }
    if whole.error.is_none() {
        assert_eq!(whole.leftover, tail.len());
        assert_eq!(chunked.leftover, tail.len());
    }
});
