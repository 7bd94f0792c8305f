//! Malformed input: truncation at every point, lying lengths, missing NULs, bad
//! GGEP, out-of-range fields. Every case is a typed error (or a shorter message
//! that is itself valid), never a panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use servent::framing::{DescriptorCodec, FrameError, SizeLimits};
use servent::wire::ggep::GgepError;
use servent::wire::{Function, HEADER_LEN, Message, WireError};
use tokio_util::codec::Decoder;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

const SERVENT: &str = "a1 b2 c3 d4 e5 f6 07 18 ff 29 3a 4b 5c 6d 7e 00";

/// Valid payloads, one or more per function (from the fact sheet's examples).
fn samples() -> Vec<(Function, Vec<u8>)> {
    vec![
        (Function::Ping, hex("c3 82 53 43 40")),
        (
            Function::Pong,
            hex("ca 18 c0 00 02 0a 64 00 00 00 00 10 00 00 c3 02 44 55 42 10 0e 02 55 50 43 00 1e 05 82 56 43 45 47 54 4b 47 1c"),
        ),
        (Function::Bye, [&hex("c8 00")[..], b"Shutting down\0"].concat()),
        (
            Function::Push,
            hex(&format!("{SERVENT} 01 00 00 00 c6 33 64 07 ca 18 c3 83 54 4c 53 40")),
        ),
        (
            Function::Query,
            [&hex("a8 00")[..], b"free software\0urn:\x1c", &hex("c3 82 50 52 40 00")].concat(),
        ),
        (
            Function::QueryHit,
            hex(&format!(
                "01 ca 18 cb 00 71 05 e8 03 00 00 01 00 00 00 87 d6 12 00 6c 69 6e 75 78 2e 69 73 6f 00
                 75 72 6e 3a 73 68 61 31 3a 56 47 4d 54 34 4e 53 48 41 32 41 57 56 4f 52 36 45 56 59 58
                 51 55 47 43 4e 53 4f 4e 42 57 45 35 1c c3 c3 41 4c 54 47 05 c6 33 64 14 02 19 00
                 47 54 4b 47 02 2c 29 c3 82 42 48 40 {SERVENT}"
            )),
        ),
        (Function::RouteTable, hex("00 00 00 01 00 07")),
        (Function::RouteTable, hex("01 01 01 01 04 78 9C 63 58 C0 C0 00 00 01 E4 00 A1")),
        (Function::Vendor, hex("42 45 41 52 04 00 01 00 00")),
        (Function::StandardVendor, hex("00 00 00 00 00 00 00 00 00 00")),
    ]
}

/// A prefix of a valid payload either fails to parse or parses into a message
/// that is valid on its own: one that re-encodes and parses back to itself.
#[test]
fn every_truncation_point() {
    for (function, payload) in samples() {
        Message::parse(function, &Bytes::from(payload.clone())).expect("sample is valid");
        for cut in 0..payload.len() {
            let prefix = Bytes::copy_from_slice(&payload[..cut]);
            assert_eq!(
                Message::validate(function, &prefix).is_ok(),
                Message::parse(function, &prefix).is_ok(),
                "{function:?} cut at {cut}: validate and parse disagree"
            );
            if let Ok(m) = Message::parse(function, &prefix) {
                let mut out = BytesMut::new();
                m.encode_payload(&mut out).expect("a parsed value encodes");
                let back = Message::parse(function, &out.freeze()).expect("and parses back");
                assert_eq!(back, m, "{function:?} cut at {cut}");
            }
        }
    }
}

#[test]
fn fixed_layouts_require_their_bytes() {
    let cases: &[(Function, &[u8], usize)] = &[
        (Function::Pong, &[0; 14], 14),
        (Function::Push, &[0; 26], 26),
        (Function::Bye, &[0xc8, 0x00], 2),
        (Function::Vendor, &[0; 8], 8),
        (Function::QueryHit, &[], 27),
    ];
    for (function, _, min) in cases {
        for len in 0..*min {
            let err = Message::parse(*function, &Bytes::from(vec![0u8; len])).unwrap_err();
            assert!(
                matches!(err, WireError::Truncated { .. }),
                "{function:?} of {len} bytes: {err:?}"
            );
        }
    }
}

#[test]
fn missing_nuls() {
    let query_no_nul = [&hex("a8 00")[..], b"free software"].concat();
    assert_eq!(
        Message::parse(Function::Query, &Bytes::from(query_no_nul)).unwrap_err(),
        WireError::MissingNul { what: "query text" }
    );
    let mut hit = hex("01 ca 18 7f 00 00 01 00 00 00 00 01 00 00 00 05 00 00 00");
    hit.extend(b"name-without-nul");
    hit.extend(hex(SERVENT));
    assert!(matches!(
        Message::parse(Function::QueryHit, &Bytes::from(hit)).unwrap_err(),
        WireError::MissingNul { .. }
    ));
    // Name terminated, but the extension area runs into the servent GUID.
    let mut hit = hex("01 ca 18 7f 00 00 01 00 00 00 00 01 00 00 00 05 00 00 00");
    hit.extend(b"a\0urn:sha1:");
    hit.extend(hex(SERVENT));
    assert!(matches!(
        Message::parse(Function::QueryHit, &Bytes::from(hit)).unwrap_err(),
        WireError::MissingNul {
            what: "result extension area"
        }
    ));
}

#[test]
fn lying_result_count() {
    // Claims three results but holds one, then the GUID.
    let mut hit = hex("03 ca 18 7f 00 00 01 00 00 00 00 01 00 00 00 05 00 00 00");
    hit.extend(b"a\0\0");
    hit.extend(hex(SERVENT));
    assert!(Message::parse(Function::QueryHit, &Bytes::from(hit)).is_err());
}

#[test]
fn bad_ggep_in_payloads() {
    let pong = |tail: &str| {
        let mut p = hex("ca 18 c0 00 02 0a 64 00 00 00 00 10 00 00");
        p.extend(hex(tail));
        Message::parse(Function::Pong, &Bytes::from(p))
    };
    assert_eq!(
        pong("c3 91 41 40").unwrap_err(),
        WireError::Ggep(GgepError::ReservedBit)
    );
    assert_eq!(
        pong("c3 81 41 45 61").unwrap_err(),
        WireError::Ggep(GgepError::Truncated)
    );
    assert_eq!(
        pong("c3 81 41 00").unwrap_err(),
        WireError::Ggep(GgepError::BadLength)
    );
    // Bytes after a whole block that do not start another are ignored, as
    // gtk-gnutella and LimeWire ignore them; the block itself is kept.
    let Message::Pong(p) = pong("c3 81 41 40 99").unwrap() else {
        unreachable!()
    };
    assert_eq!(p.ggep.unwrap().exts.len(), 1);
    assert!(
        Message::validate(
            Function::Pong,
            &hex("ca 18 c0 00 02 0a 64 00 00 00 00 10 00 00 00 00")
        )
        .is_ok()
    );
    // Two blocks in a row are merged.
    let Message::Pong(p) = pong("c3 81 41 40 c3 81 42 40").unwrap() else {
        unreachable!()
    };
    assert_eq!(p.ggep.unwrap().exts.len(), 2);

    // A GGEP block in a query's extension area is length-delimited: a lying length
    // that runs past the payload is an error.
    let q = [&hex("a8 00")[..], b"x\0", &hex("c3 81 41 7f 00")].concat();
    assert_eq!(
        Message::parse(Function::Query, &Bytes::from(q)).unwrap_err(),
        WireError::Ggep(GgepError::Truncated)
    );
    // A zlib bomb inside a ping is refused without inflating it all.
    let big = servent::wire::ggep::zlib(&vec![0u8; 4 << 20]);
    let mut ping = vec![0xc3, 0xa1, b'Z'];
    let mut len = BytesMut::new();
    servent::wire::ggep::encode_len(big.len(), &mut len);
    ping.extend(&len[..]);
    ping.extend(&big);
    assert_eq!(
        Message::parse(Function::Ping, &Bytes::from(ping)).unwrap_err(),
        WireError::Ggep(GgepError::InflateLimit)
    );
}

#[test]
fn hit_trailer_garbage_is_kept_not_fatal() {
    // GGEP flag set in the open data, but the private area holds junk that starts
    // with 0xC3: the hit still parses, the junk is kept as opaque bytes.
    let mut hit = hex("01 ca 18 7f 00 00 01 00 00 00 00 01 00 00 00 05 00 00 00");
    hit.extend(b"a\0\0");
    hit.extend(hex("42 45 41 52 02 20 20 c3 00 ff"));
    hit.extend(hex(SERVENT));
    let Message::QueryHit(h) = Message::parse(Function::QueryHit, &Bytes::from(hit)).unwrap()
    else {
        unreachable!()
    };
    let t = h.qhd().unwrap();
    assert!(t.private.ggep.is_none());
    assert_eq!(t.private.prefix, &[0xc3, 0x00, 0xff][..]);
}

#[test]
fn route_table_fields_are_range_checked() {
    for bad in [
        "",
        "00 08 00 00 00",
        "00 08 00 00 00 07 00",
        "00 06 00 00 00 07",
        "00 00 00 00 00 07",
        "00 08 00 00 00 00",
        "01 01 01 00",
        "01 00 01 00 04",
        "01 02 01 00 04",
        "01 01 01 02 04",
        "01 01 01 00 03",
        "02 00 00 00 00 00",
    ] {
        assert!(
            Message::parse(Function::RouteTable, &Bytes::from(hex(bad))).is_err(),
            "{bad:?} parsed"
        );
    }
}

#[test]
fn unknown_function_is_a_typed_error() {
    for code in [0x10u8, 0x41, 0x44, 0xff] {
        assert_eq!(
            Message::parse(Function::from_code(code), &Bytes::new()).unwrap_err(),
            WireError::UnknownFunction(code)
        );
    }
}

fn frame(function: u8, payload_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x11; 16];
    f.extend([function, 7, 0]);
    f.extend(payload_len.to_le_bytes());
    f.extend(payload);
    f
}

#[test]
fn framing_waits_for_whole_frames() {
    let mut stream = Vec::new();
    for (function, payload) in samples() {
        stream.extend(frame(function.code(), payload.len() as u32, &payload));
    }
    // Byte by byte: no frame until its last byte, then exactly the samples.
    let mut codec = DescriptorCodec::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in &stream {
        buf.extend_from_slice(&[*b]);
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            got.push((f.header.function, f.payload.to_vec()));
        }
    }
    assert!(buf.is_empty());
    assert_eq!(got, samples());
}

#[test]
fn framing_rejects_oversize_before_buffering() {
    let mut codec = DescriptorCodec::default();
    // Only the header has arrived: the lying length is refused at once.
    for (function, len) in [
        (0x80u8, 1025u32),
        (0x00, 40 * 1024 + 1),
        (0x81, 65_536),
        (0x10, u32::MAX),
    ] {
        let mut buf = BytesMut::from(&frame(function, len, &[])[..]);
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { len: l, .. }) => assert_eq!(l, len),
            other => panic!("0x{function:02x} len {len}: {other:?}"),
        }
    }
    // At the limit is fine (and waits for the payload).
    let mut buf = BytesMut::from(&frame(0x80, 1024, &[])[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() >= HEADER_LEN + 1024);
}

#[test]
fn framing_limits_are_capped_at_64k() {
    let limits = SizeLimits {
        query: u32::MAX,
        query_hit: u32::MAX,
        other: u32::MAX,
    };
    let mut codec = DescriptorCodec::new(limits);
    let mut buf = BytesMut::from(&frame(0x81, 65_536, &[])[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn framing_passes_unknown_functions_to_the_caller() {
    let mut codec = DescriptorCodec::default();
    let mut buf = BytesMut::from(&frame(0x10, 3, b"abc")[..]);
    let f = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(f.header.function, Function::Unknown(0x10));
    assert_eq!(f.message().unwrap_err(), WireError::UnknownFunction(0x10));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_payloads_never_panic_and_validate_agrees(code in prop_oneof![
        Just(0x00u8), Just(0x01), Just(0x02), Just(0x30), Just(0x31), Just(0x32),
        Just(0x40), Just(0x80), Just(0x81)
    ], body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let function = Function::from_code(code);
        let parsed = Message::parse(function, &Bytes::from(body.clone()));
        let validated = Message::validate(function, &body);
        match (&parsed, &validated) {
            (Ok(_), Ok(())) | (Err(_), Err(_)) => {}
            // Only the value of a compressed GGEP extension is left for reading time.
            (Err(WireError::Ggep(GgepError::BadZlib | GgepError::InflateLimit)), Ok(())) => {}
            _ => prop_assert!(false, "parse {:?} but validate {:?}", parsed, validated),
        }
        if let Ok(m) = parsed {
            let mut out = BytesMut::new();
            m.encode_payload(&mut out).unwrap();
            prop_assert_eq!(Message::parse(function, &out.freeze()).unwrap(), m);
        }
    }

    #[test]
    fn random_streams_never_panic(stream in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut codec = DescriptorCodec::default();
        let mut buf = BytesMut::from(&stream[..]);
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            let _ = f.message();
        }
    }
}
