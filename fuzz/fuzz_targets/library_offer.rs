//! Library offers (`SRVT/1v2` vendor bodies, which read `1v1` too): `OfferChunk::parse` and
//! `OfferChunk::encode_all`. Every input is used twice.
//!
//! * As a chunk body. When `parse` accepts it: no proper prefix parses (the count
//!   fixes the length); `encode_all(files, firewalled)` gives one first-and-last
//!   chunk unless the body is close to `CHUNK_BYTES` (never so with the default
//!   `-max_len`), and its body is the input byte for byte except the flags byte,
//!   which is `first | last | firewalled` (the parser ignores the other bits and
//!   the first/last bits of one chunk). In every case the chunks parse back to the
//!   same files and firewalled flag.
//! * As a library description, to reach the cutting into chunks: records of a
//!   control byte `c`, a length byte `n` and `n` bytes of name material. The name
//!   is the material (lossily made UTF-8) repeated `1 + (c >> 4) * 5` times, so
//!   names may be empty, hold NUL or be longer than `MAX_NAME`; bit 0 of `c` gives
//!   a SHA-1, bit 1 an FTH. Bit 0 of the first byte is the firewalled flag. `encode_all` must
//!   keep exactly the files with a sendable name, in order, cut into chunks that
//!   parse, are offers, stay within `CHUNK_BYTES`, are non-empty (but for an empty
//!   library's single chunk), and carry first/last/firewalled correctly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::fasttrack::hash::Fth;
use servent::wire::huge::Sha1Urn;
use servent::wire::library_offer::{CHUNK_BYTES, MAX_NAME, OfferChunk, OfferedFile};
use servent_fuzz::hex;

/// Parses every message of `encode_all`, checks the flags and the size limit, and
/// returns the files of all chunks in order.
fn parse_all(files: &[OfferedFile], firewalled: bool) -> (usize, Vec<OfferedFile>) {
    let msgs = OfferChunk::encode_all(files, firewalled);
    assert!(!msgs.is_empty(), "encode_all gave no message");
    let n = msgs.len();
    let mut back = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        assert!(OfferChunk::is_offer(m), "message {i} is not an offer");
        assert!(
            m.body.len() <= CHUNK_BYTES + 3,
            "chunk {i} is {} bytes",
            m.body.len()
        );
        let c = match OfferChunk::parse(&m.body) {
            Ok(c) => c,
            Err(e) => panic!("chunk {i} of {n} does not parse: {e}\n{}", hex(&m.body)),
        };
        assert_eq!(c.first, i == 0, "first flag of chunk {i} of {n}");
        assert_eq!(c.last, i + 1 == n, "last flag of chunk {i} of {n}");
        assert_eq!(c.firewalled, firewalled, "firewalled flag of chunk {i}");
        assert!(
            !c.files.is_empty() || n == 1,
            "empty chunk {i} in an offer of {n}"
        );
        back.extend(c.files);
    }
    (n, back)
}

fn check_body(data: &[u8]) {
    let Ok(chunk) = OfferChunk::parse(data) else {
        return;
    };
    if let Some(cut) = data.len().checked_sub(1) {
        assert!(
            OfferChunk::parse(&data[..cut]).is_err(),
            "a proper prefix of an accepted body parses"
        );
    }
    let msgs = OfferChunk::encode_all(&chunk.files, chunk.firewalled);
    if msgs.len() == 1 {
        let body = &msgs[0].body;
        let flags = 0x03 | if chunk.firewalled { 0x04 } else { 0 };
        assert_eq!(body[0], flags, "flags of the re-encoded chunk");
        assert!(
            body[1..] == data[1..],
            "re-encoding differs\ninput:      {}\nre-encoded: {}",
            hex(data),
            hex(body)
        );
    } else {
        // `encode_all` budgets 16 bytes per entry besides the hashes and the name
        // (one more than it writes), so only a body near CHUNK_BYTES may split.
        assert!(
            data.len() + chunk.files.len() > CHUNK_BYTES,
            "a body of {} bytes was split",
            data.len()
        );
    }
    let (_, back) = parse_all(&chunk.files, chunk.firewalled);
    assert_eq!(back, chunk.files, "files do not survive encode_all");
}

fn sendable(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME && !name.contains('\0')
}

fn check_library(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let firewalled = first & 1 != 0;
    let mut files = Vec::new();
    while let [c, n, tail @ ..] = rest {
        let n = (*n as usize).min(tail.len());
        let material = String::from_utf8_lossy(&tail[..n]);
        rest = &tail[n..];
        let i = files.len() as u32;
        files.push(OfferedFile {
            index: i.wrapping_mul(0x9e37_79b9),
            size: (*c as u64) << (i % 57),
            sha1: (c & 1 != 0).then_some(Sha1Urn([*c ^ i as u8; 20])),
            fth: (c & 2 != 0).then_some(Fth([*c ^ 0x5a ^ i as u8; 20])),
            name: material.repeat(1 + (*c >> 4) as usize * 5),
        });
    }
    let kept: Vec<OfferedFile> = files
        .iter()
        .filter(|f| sendable(&f.name))
        .cloned()
        .collect();
    let (_, back) = parse_all(&files, firewalled);
    assert_eq!(
        back, kept,
        "encode_all does not keep exactly the sendable files"
    );
}

fuzz_target!(|data: &[u8]| {
    check_body(data);
    check_library(data);
});
