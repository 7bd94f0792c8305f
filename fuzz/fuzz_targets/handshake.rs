//! Handshake blocks: `parse_block` under the default limits and under tiny ones.
//! It must never panic; a complete block must report a length within the input,
//! encode, and parse back (under limits just large enough for the encoding) to the
//! same block using the whole encoding, whose re-encoding is identical.
//! Feeding the same bytes one prefix at a time must agree with the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::handshake::{Block, Limits, parse_block};
use servent_fuzz::hex;

const TINY: Limits = Limits {
    max_line: 16,
    max_headers: 2,
    max_block: 64,
};

fn check(data: &[u8], limits: &Limits) {
    let result = parse_block(data, limits);
    // Where the block ends, or the whole input when there is no complete block.
    let end = match &result {
        Ok(Some((_, used))) => *used,
        _ => data.len(),
    };
    check_prefixes(&data[..end], limits, result.is_ok());
    let Ok(Some((block, used))) = result else {
        return;
    };
    assert!(used <= data.len(), "used {used} of {} bytes", data.len());
    assert!(
        used > 0 && data[used - 1] == b'\n',
        "block does not end in LF"
    );
    // Bytes after the block are the caller's: the block alone gives the same result.
    assert_eq!(
        parse_block(&data[..used], limits),
        Ok(Some((block.clone(), used)))
    );
    round_trip(&block);
}

/// Incremental parsing agrees with parsing the whole: a proper prefix of `data`
/// (a complete block, or an input without one) never yields a block, and when
/// `data` did not fail, neither does the prefix (it only needs more bytes).
fn check_prefixes(data: &[u8], limits: &Limits, data_ok: bool) {
    // A few cut points only, to keep each run linear in the input.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        if cut >= data.len() {
            continue;
        }
        match parse_block(&data[..cut], limits) {
            Ok(None) => {}
            Ok(Some((_, used))) => {
                panic!("a prefix of {cut} bytes yields a block of {used} bytes, the whole does not")
            }
            Err(e) => assert!(
                !data_ok,
                "a prefix of {cut} bytes fails ({e}), the whole does not"
            ),
        }
    }
}

fn round_trip(block: &Block) {
    let wire = match block.encode() {
        Ok(w) => w,
        Err(e) => panic!("a parsed block failed to encode: {e}\nblock: {block:?}"),
    };
    // The encoding may be longer than the input (LF becomes CRLF, continuation
    // lines are joined, ": " is written), so parse it with limits that fit it.
    let fit = Limits {
        max_line: wire.len(),
        max_headers: block.headers.len(),
        max_block: wire.len(),
    };
    match parse_block(&wire, &fit) {
        Ok(Some((back, used))) => {
            assert_eq!(used, wire.len(), "encoding not wholly used\n{}", hex(&wire));
            assert_eq!(&back, block, "round trip\nencoding: {}", hex(&wire));
            let again = back.encode().expect("re-encoding");
            assert!(again == wire, "encoding is not canonical");
        }
        other => panic!(
            "the encoding of a parsed block does not parse: {other:?}\nblock: {block:?}\nencoding: {}",
            hex(&wire)
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, &Limits::default());
    check(data, &TINY);
});
