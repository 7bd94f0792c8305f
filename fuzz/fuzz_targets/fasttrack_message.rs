//! FastTrack messages (`servent::fasttrack::wire::Message`). Byte 0 is the message
//! id (every id reaches a parser: the twelve we know, the rest as `Unknown`); the
//! rest is the payload.
//!
//! Checks: parsing never panics; what parses has the id it was parsed with, and its
//! encoding parses back to the same value, whose encoding is byte-identical
//! (canonical). When the payload was already in our form (the bytes we always
//! write as constants were those constants, no compressed result names, nothing ignored at the
//! end), the encoding is the payload itself. Tags read as integers agree with
//! `dynint`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::fasttrack::wire::{Message, dynint};
use servent_fuzz::hex;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let Ok(m) = Message::parse(kind, payload) else {
        return;
    };
    assert_eq!(m.kind(), kind);
    let wire = m.to_bytes();
    let again = match Message::parse(kind, &wire) {
        Ok(a) => a,
        Err(e) => panic!("encoding does not parse: {e}\n{m:?}\n{}", hex(&wire)),
    };
    assert_eq!(again, m, "encoding: {}", hex(&wire));
    assert!(again.to_bytes() == wire, "encoding is not canonical");
    if wire.len() == payload.len() && !matches!(m, Message::QueryReply(_)) {
        // The constants we write and do not check when reading.
        let zeros_kept = match kind {
            0x02 => payload[7] == 0,
            0x06 => payload[..2] == [0, 1] && payload[6] == 1,
            0x22 => payload[0] == 0 && payload[2..4] == [0, 0],
            _ => true,
        };
        if zeros_kept {
            assert!(
                wire[..] == payload[..],
                "same length, other bytes:\n{}\n{}",
                hex(payload),
                hex(&wire)
            );
        }
    }
    let tags = match &m {
        Message::ShareFile { file, .. } | Message::UnshareFile(file) => file.tags.clone(),
        Message::QueryReply(r) => r.results.iter().flat_map(|r| r.tags.clone()).collect(),
        _ => Vec::new(),
    };
    for t in tags {
        let direct = match dynint(&t.value) {
            Ok(([], v)) => Some(v),
            _ => None,
        };
        assert_eq!(t.as_int(), direct);
    }
});
