//! Napster messages (`servent::napster::wire`). Byte 0 of the input selects the
//! parser (`b % 4`); the rest is its input.
//!
//! 0. `NapCodec`, fed in chunks. Then a control byte `c`: `(c & 7) + 1`
//!    chunk-size bytes follow (as in the `framing` target: `b + 1` bytes below
//!    0x80, else `((b & 0x7f) + 1) * 64`), then the stream; bit 3 selects a tiny
//!    limit (`c >> 4` bytes) instead of `DEFAULT_MAX_FRAME`. The frames, and the
//!    error that stops decoding, are the same whatever the chunking; no frame is
//!    over the limit; only a header claiming more than the limit is an error;
//!    without one the leftover bytes are an incomplete frame; each frame
//!    re-encoded with the codec's `Encoder` gives back the bytes it came from.
//! 1. `Fields` and `Line`: every field is a piece of the input, a bare one
//!    non-empty and without a space, a quoted one without `"`; the fields written
//!    again with `Line` (quoted when they need it) read back the same with nothing
//!    bad; `exactly` and `at_least` agree with reading field by field; `rest`
//!    continues where the fields stopped; `number` only reads plain digits.
//! 2. `SearchRequest::parse` / `encode`: what parses encodes to a request that
//!    parses back to it, except that a `"` in a bare `FILENAME CONTAINS` text is
//!    written as `'` (the protocol has no escape); that re-parsed request
//!    round-trips exactly, and encoding is canonical.
//! 3. `SearchResult::parse` / `encode` and `PeerFile::parse` / `encode`: the
//!    encoding parses back to the same value when the fields written bare (md5,
//!    nick) are non-empty and hold no space, again with `"` in the name written as
//!    `'`; otherwise (a quoted md5 or nick) the bare encoding cannot hold them, and
//!    only the absence of panics is checked. `nick_and_file` agrees with `Fields`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use servent::napster::wire::{
    DEFAULT_MAX_FRAME, Fields, Line, NapCodec, PeerFile, SearchRequest, SearchResult,
    nick_and_file, number,
};
use servent_fuzz::{chunks, decode_chunks, hex};
use tokio_util::codec::Encoder;

fn codec(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let n = (control & 7) as usize + 1;
    if rest.len() < n {
        return;
    }
    let (sizes, stream) = rest.split_at(n);
    let max = if control & 8 != 0 {
        (control >> 4) as usize
    } else {
        DEFAULT_MAX_FRAME
    };

    let whole = decode_chunks(NapCodec::new(max), std::iter::once(stream));
    let chunked = decode_chunks(NapCodec::new(max), chunks(stream, sizes));
    assert_eq!(
        chunked.frames, whole.frames,
        "frames depend on the chunking"
    );
    assert_eq!(chunked.error, whole.error, "errors depend on the chunking");

    let mut enc = NapCodec::new(max);
    let mut offset = 0;
    for frame in &whole.frames {
        assert!(frame.data.len() <= max, "a frame over the limit");
        let mut out = BytesMut::new();
        enc.encode(frame.clone(), &mut out)
            .expect("encoding a frame");
        let original = &stream[offset..offset + 4 + frame.data.len()];
        assert!(
            out[..] == original[..],
            "re-encoded frame differs\noriginal:   {}\nre-encoded: {}",
            hex(original),
            hex(&out)
        );
        offset += original.len();
    }
    let tail = &stream[offset..];
    let claimed = (tail.len() >= 4).then(|| u16::from_le_bytes([tail[0], tail[1]]) as usize);
    match (&whole.error, claimed) {
        (Some(_), Some(len)) => assert!(len > max, "error on a frame within the limit"),
        (Some(e), None) => panic!("error without a complete header: {e}"),
        (None, Some(len)) => {
            assert!(len <= max, "no error on a frame over the limit");
            assert!(tail.len() < 4 + len, "a complete frame was left undecoded");
        }
        (None, None) => {}
    }
    if whole.error.is_none() {
        assert_eq!(whole.leftover, tail.len());
        assert_eq!(chunked.leftover, tail.len());
    }
}

/// Whether a value can be written with `Line::word` and read back as one field.
fn bare(v: &[u8]) -> bool {
    !v.is_empty() && !v.contains(&b' ') && v[0] != b'"'
}

fn fields(data: &[u8]) {
    let mut f = Fields::new(data);
    let mut all = Vec::new();
    while let Some(field) = f.next_field() {
        let start = field.as_ptr() as usize - data.as_ptr() as usize;
        assert!(
            start + field.len() <= data.len(),
            "a field outside the input"
        );
        // A quoted field ends at its closing quote, a bare one at a space or the
        // end (a bare field may directly follow a closing quote).
        let quoted = data.get(start + field.len()) == Some(&b'"');
        if quoted {
            assert!(!field.contains(&b'"'), "a quote inside a quoted field");
        } else {
            assert!(bare(field), "bad bare field {:?}", field);
        }
        all.push(field);
    }
    let bad = f.is_bad();
    if bad {
        assert!(data.contains(&b'"'), "bad without a quote");
    }

    let mut line = Line::new();
    for field in &all {
        line = if bare(field) {
            line.word(field)
        } else {
            line.quoted(field)
        };
    }
    let written = line.build();
    let mut g = Fields::new(&written);
    let mut again = Vec::new();
    while let Some(field) = g.next_field() {
        again.push(field);
    }
    assert!(!g.is_bad(), "written fields read as bad: {}", hex(&written));
    assert_eq!(again, all, "written fields read differently");

    let exactly = Fields::exactly::<3>(data);
    let want = (all.len() == 3 && !bad).then(|| [all[0], all[1], all[2]]);
    assert_eq!(exactly, want, "exactly::<3>");
    match Fields::at_least::<2>(data) {
        Some(([a, b], mut more)) => {
            assert_eq!([a, b], [all[0], all[1]], "at_least::<2>");
            let rest = more.rest();
            let mut r = Fields::new(rest);
            let mut tail = Vec::new();
            while let Some(field) = r.next_field() {
                tail.push(field);
            }
            assert_eq!(tail, all[2..], "rest after at_least::<2>");
            assert_eq!(r.is_bad(), bad);
        }
        None => assert!(all.len() < 2, "at_least::<2> refused {} fields", all.len()),
    }
    for field in &all {
        if let Some(n) = number::<u64>(field) {
            assert!(field.iter().all(u8::is_ascii_digit));
            let digits = std::str::from_utf8(field).unwrap().trim_start_matches('0');
            assert_eq!(n.to_string(), if digits.is_empty() { "0" } else { digits });
        }
    }
}

fn search(data: &[u8]) {
    let Ok(req) = SearchRequest::parse(data) else {
        return;
    };
    let wire = req.encode();
    let back = match SearchRequest::parse(&wire) {
        Ok(r) => r,
        Err(e) => panic!("the encoding does not parse: {e}\n{req:?}\n{}", hex(&wire)),
    };
    let mut want = req.clone();
    for c in want.contains.iter_mut().chain(want.excludes.iter_mut()) {
        for b in c.iter_mut() {
            if *b == b'"' {
                *b = b'\'';
            }
        }
    }
    assert_eq!(back, want, "encoding: {}", hex(&wire));
    assert!(back.encode() == wire, "encoding is not canonical");
}

fn unquote(name: &[u8]) -> Vec<u8> {
    name.iter()
        .map(|&b| if b == b'"' { b'\'' } else { b })
        .collect()
}

fn results(data: &[u8]) {
    if let Some(r) = SearchResult::parse(data) {
        let wire = r.encode();
        if bare(&r.md5) && bare(r.nick.as_bytes()) {
            let want = SearchResult {
                name: unquote(&r.name),
                ..r.clone()
            };
            assert_eq!(
                SearchResult::parse(&wire),
                Some(want),
                "encoding: {}",
                hex(&wire)
            );
        }
    }
    if let Some(p) = PeerFile::parse(data) {
        let wire = p.encode();
        if bare(&p.md5) && bare(p.nick.as_bytes()) {
            let want = PeerFile {
                name: unquote(&p.name),
                ..p.clone()
            };
            assert_eq!(
                PeerFile::parse(&wire),
                Some(want),
                "encoding: {}",
                hex(&wire)
            );
        }
    }
    let mut f = Fields::new(data);
    let two = (f.next_field(), f.next_field());
    match nick_and_file(data) {
        Some(pair) => assert_eq!((Some(pair.0), Some(pair.1)), two),
        None => assert!(two.1.is_none()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => codec(rest),
        1 => fields(rest),
        2 => search(rest),
        _ => results(rest),
    }
});
