//! Browse-host answer bodies: the reader takes any bytes, plain or as a
//! deflate stream, in pieces of any size, within its limits, and never
//! panics; what a whole-body read finds, a read in small pieces finds too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::browse::{Limits, Reader};

fn read(body: &[u8], deflated: bool, piece: usize) -> (Vec<servent::wire::QueryHit>, bool) {
    let limits = Limits {
        max_bytes: 1 << 20,
        max_results: 1000,
    };
    let mut r = Reader::new(deflated, limits);
    let mut hits = Vec::new();
    for p in body.chunks(piece) {
        match r.feed(p) {
            Ok(h) => hits.extend(h),
            Err(_) => return (hits, false),
        }
    }
    assert!(r.results() <= limits.max_results);
    let ok = r.finish().is_ok();
    (hits, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let deflated = first & 1 == 1;
    let piece = usize::from(first >> 1).max(1);
    let (whole, whole_ok) = read(body, deflated, body.len().max(1));
    let (pieces, pieces_ok) = read(body, deflated, piece);
    // A body read whole or in pieces reads the same (an error drops the hits
    // of the piece it came in, so only good reads are compared).
    if !deflated {
        assert_eq!(whole_ok, pieces_ok);
    }
    if whole_ok && pieces_ok {
        assert_eq!(whole, pieces);
    }
});
