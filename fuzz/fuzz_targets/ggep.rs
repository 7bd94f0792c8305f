//! One GGEP block: when the input starts with a block that parses, the block must
//! encode both plainly and NUL-free (COBS where needed), each encoding must parse
//! back to the same block using all of its bytes, and re-encoding must give the
//! same bytes. Bytes after the block must not influence the result.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::wire::Ggep;
use servent_fuzz::{ggep_max, hex, tolerated};

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let Ok((block, used)) = Ggep::parse(&input) else {
        return;
    };
    assert!(used <= input.len(), "used {used} of {} bytes", input.len());
    assert!(!block.exts.is_empty(), "a parsed block has no extensions");
    let exact = Ggep::parse(&input.slice(..used)).expect("the block alone parses");
    assert_eq!(
        exact,
        (block.clone(), used),
        "bytes after the block changed it"
    );

    for nul_free in [false, true] {
        let wire = match block.to_bytes(nul_free) {
            Ok(w) => w,
            Err(e) if tolerated(&e, ggep_max(&block)) => continue,
            Err(e) => panic!("a parsed block failed to encode (nul_free {nul_free}): {e}"),
        };
        if nul_free {
            assert!(
                !wire.contains(&0),
                "NUL in a nul_free block: {}",
                hex(&wire)
            );
        }
        let (back, back_used) = match Ggep::parse(&wire) {
            Ok(r) => r,
            Err(e) => panic!(
                "encoding (nul_free {nul_free}) does not parse: {e}\nencoding: {}",
                hex(&wire)
            ),
        };
        assert_eq!(back_used, wire.len(), "encoding not wholly used");
        assert_eq!(back, block, "round trip (nul_free {nul_free})");
        let again = back.to_bytes(nul_free).expect("re-encoding");
        assert!(
            again == wire,
            "encoding (nul_free {nul_free}) is not canonical"
        );
    }
});
