//! HSEP payloads (function 0xCD): a payload that parses encodes back to its
//! first triples exactly, every taken message keeps the horizon's sums
//! panic-free, and the triples of a good message never go down.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::core::ConnId;
use servent::core::hsep::Hsep;
use servent::wire::hsep::{MAX_TRIPLES, TRIPLE_LEN, parse, trimmed};

fuzz_target!(|data: &[u8]| {
    let Ok(triples) = parse(data) else {
        return;
    };
    assert!(!triples.is_empty() && triples.len() <= MAX_TRIPLES);
    assert_eq!(triples[0].hosts, 1);
    let mut out = bytes::BytesMut::new();
    servent::wire::hsep::encode(&triples, &mut out);
    assert_eq!(&out[..], &data[..triples.len() * TRIPLE_LEN]);
    assert!(triples.windows(2).all(|w| w[1].covers(w[0])));
    assert!(!trimmed(&triples).is_empty());
    let now = std::time::Instant::now();
    let mut h = Hsep::new();
    h.opened(ConnId(1), false, now);
    h.opened(ConnId(2), false, now);
    h.received(ConnId(1), &triples, now).unwrap();
    h.received(ConnId(2), &triples, now).unwrap();
    let _ = h.horizon();
    for (_, sent) in h.due(now, false, || 0.5) {
        assert!(!sent.is_empty() && sent.len() <= MAX_TRIPLES);
    }
});
