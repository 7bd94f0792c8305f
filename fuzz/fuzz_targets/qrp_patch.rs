//! QRP patches: the receiving `PatchDecoder`, and `pack` / `unpack`.
//!
//! Byte 0 of the input: bits 0-3 give the table length, `1 << (b & 15)`; bit 7
//! selects the mode.
//!
//! * Free mode (bit 7 set): the rest is a list of PATCH messages, each
//!   `seq_no seq_size compressor entry_bits len data[len]`, fed as they are to one
//!   decoder. Only the invariants below are checked.
//! * Built mode (bit 7 clear): byte 1 chooses entry bits (`1 << (b & 3)`), zlib
//!   (bit 2), the number of chunks (`((b >> 3) & 7) + 1`), whether the chunks come
//!   from `qrp::build_patch_chunks` (bit 6; 4 and 8 bits only) and whether one byte
//!   of the compressed stream is corrupted (bit 7). Then come the chunk-boundary
//!   bytes (or one chunk-size byte for `build_patch_chunks`), then the patch
//!   bytes. Without corruption the decoded operations and the final outcome must be
//!   exactly those computed from the packed bytes with `unpack`, whatever the
//!   compression and the chunk boundaries.
//!
//! Invariants in both modes: no panic; every reported slot is below the table
//! length and slots increase within a sequence; no `Unchanged` operation is
//! reported, `Flip` only (and always) for 1-bit patches; progress never counts more
//! entries than the table has, a complete patch is `full` exactly when it covers
//! the table, and after completion or an error no sequence is in progress.
//!
//! Every input also goes through the `pack` / `unpack` round trips, checked
//! against a bit-by-bit reference reading of the packed bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::qrp::{
    self, COMPRESSOR_NONE, COMPRESSOR_ZLIB, PatchDecoder, PatchOp, Progress, QrpError,
};

/// One PATCH message's fields.
struct Msg {
    seq_no: u8,
    seq_size: u8,
    compressor: u8,
    entry_bits: u8,
    data: Vec<u8>,
}

/// Every operation reported, and the result of each message.
type Outcome = (Vec<(usize, PatchOp)>, Vec<Result<Progress, QrpError>>);

/// Feeds `msgs` to `decoder`, checking the invariants.
fn drive(decoder: &mut PatchDecoder, msgs: &[Msg]) -> Outcome {
    let table_len = decoder.table_len();
    let mut ops = Vec::new();
    let mut results = Vec::new();
    // Next slot that may be reported in the current sequence.
    let mut min_slot = 0;
    let mut last_entries = 0;
    for m in msgs {
        let bits = m.entry_bits;
        let before = ops.len();
        let result = decoder.feed(
            m.seq_no,
            m.seq_size,
            m.compressor,
            bits,
            &m.data,
            &mut |slot, op| ops.push((slot, op)),
        );
        for &(slot, op) in &ops[before..] {
            assert!(slot < table_len, "slot {slot} of a {table_len}-slot table");
            assert!(slot >= min_slot, "slot {slot} reported after {min_slot}");
            min_slot = slot + 1;
            assert_ne!(op, PatchOp::Unchanged, "an unchanged slot was reported");
            assert_eq!(
                op == PatchOp::Flip,
                bits == 1,
                "{op:?} in a {bits}-bit patch"
            );
        }
        match &result {
            Ok(Progress::Partial { entries }) => {
                assert!(decoder.in_sequence());
                assert!(*entries <= table_len);
                assert!(*entries >= last_entries, "progress went backwards");
                assert!(
                    min_slot <= *entries,
                    "slot {} beyond {entries}",
                    min_slot - 1
                );
                last_entries = *entries;
            }
            Ok(Progress::Complete { entries, full }) => {
                assert!(
                    !decoder.in_sequence(),
                    "still in a sequence after completion"
                );
                assert!(*entries <= table_len);
                assert!(*entries >= last_entries, "progress went backwards");
                assert_eq!(*full, *entries == table_len);
                assert!(
                    min_slot <= *entries,
                    "slot {} beyond {entries}",
                    min_slot - 1
                );
                min_slot = 0;
                last_entries = 0;
            }
            Err(_) => {
                assert!(!decoder.in_sequence(), "still in a sequence after an error");
                min_slot = 0;
                last_entries = 0;
            }
        }
        results.push(result);
    }
    (ops, results)
}

fn free_mode(table_len: usize, mut input: &[u8]) {
    let mut msgs = Vec::new();
    while let [seq_no, seq_size, compressor, entry_bits, len, rest @ ..] = input {
        let len = (*len as usize).min(rest.len());
        msgs.push(Msg {
            seq_no: *seq_no,
            seq_size: *seq_size,
            compressor: *compressor,
            entry_bits: *entry_bits,
            data: rest[..len].to_vec(),
        });
        input = &rest[len..];
    }
    drive(&mut PatchDecoder::new(table_len), &msgs);
}

/// Cuts `data` into `count` chunks; `cuts` (count - 1 bytes) give the lengths of
/// all but the last chunk, clamped to what is left. Chunks may be empty.
fn cut(data: &[u8], count: usize, cuts: &[u8]) -> Vec<Vec<u8>> {
    let mut rest = data;
    let mut chunks = Vec::with_capacity(count);
    for &c in &cuts[..count - 1] {
        let take = (c as usize).min(rest.len());
        chunks.push(rest[..take].to_vec());
        rest = &rest[take..];
    }
    chunks.push(rest.to_vec());
    chunks
}

fn built_mode(table_len: usize, input: &[u8]) {
    let Some((&params, rest)) = input.split_first() else {
        return;
    };
    let bits = 1u8 << (params & 3);
    let zlib = params & 4 != 0;
    let count = ((params >> 3) & 7) as usize + 1;
    let use_builder = params & 0x40 != 0 && bits >= 4;
    let corrupt = params & 0x80 != 0;

    // `packed` is what the decoder must see once the stream is inflated.
    let (packed, mut msgs) = if use_builder {
        let Some((&size, bytes)) = rest.split_first() else {
            return;
        };
        let entries: Vec<i8> = if bits == 4 {
            bytes.iter().map(|&b| (b as i8) >> 4).collect()
        } else {
            bytes.iter().map(|&b| b as i8).collect()
        };
        let packed = qrp::pack(&entries, bits).expect("entries in range");
        let chunk_size = size as usize + 1;
        let chunks = match qrp::build_patch_chunks(&entries, bits, zlib, chunk_size) {
            Ok(c) => c,
            Err(QrpError::TooManyChunks { needed }) => {
                assert!(needed > 255);
                return;
            }
            Err(e) => panic!("build_patch_chunks: {e}"),
        };
        let msgs: Vec<Msg> = chunks
            .into_iter()
            .map(|c| Msg {
                seq_no: c.seq_no,
                seq_size: c.seq_size,
                compressor: c.compressor,
                entry_bits: c.entry_bits,
                data: c.data,
            })
            .collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.data.clone()).collect();
        if msgs[0].compressor == COMPRESSOR_NONE {
            assert_eq!(
                stream, packed,
                "uncompressed chunks are not the packed bytes"
            );
        } else {
            assert!(zlib, "compressed without being asked to");
        }
        (packed, msgs)
    } else {
        if rest.len() < count - 1 {
            return;
        }
        let (cuts, packed) = rest.split_at(count - 1);
        let (compressor, stream) = if zlib {
            (COMPRESSOR_ZLIB, qrp::compress(packed))
        } else {
            (COMPRESSOR_NONE, packed.to_vec())
        };
        let msgs = cut(&stream, count, cuts)
            .into_iter()
            .zip(1..)
            .map(|(data, seq_no)| Msg {
                seq_no,
                seq_size: count as u8,
                compressor,
                entry_bits: bits,
                data,
            })
            .collect();
        (packed.to_vec(), msgs)
    };

    if corrupt {
        // Flip one byte of the stream (chosen from the data itself), then only the
        // invariants hold.
        let total: usize = msgs.iter().map(|m| m.data.len()).sum();
        if total > 0 {
            let seed = packed
                .iter()
                .fold(0usize, |a, &b| a.wrapping_mul(31).wrapping_add(b as usize));
            let mut at = seed % total;
            for m in &mut msgs {
                if at < m.data.len() {
                    m.data[at] ^= (seed >> 8) as u8 | 1;
                    break;
                }
                at -= m.data.len();
            }
        }
        drive(&mut PatchDecoder::new(table_len), &msgs);
        return;
    }

    let (ops, results) = drive(&mut PatchDecoder::new(table_len), &msgs);

    // The expected outcome, from the packed bytes alone.
    let per_byte = 8 / bits as usize;
    let mut entries = Vec::new();
    qrp::unpack(&packed, bits, &mut entries).expect("unpack");
    let expected_ops: Vec<(usize, PatchOp)> = entries
        .iter()
        .take(table_len)
        .enumerate()
        .filter(|&(_, &v)| v != 0)
        .map(|(slot, &v)| (slot, PatchOp::from_entry(v, bits)))
        .collect();
    assert_eq!(ops, expected_ops, "decoded operations");
    let overflow = packed.len() > table_len.div_ceil(per_byte);
    let first_err = results.iter().position(|r| r.is_err());
    if overflow {
        let at = first_err.expect("an overflow error");
        assert!(
            matches!(results[at], Err(QrpError::Overflow { .. })),
            "expected an overflow, got {:?}",
            results[at]
        );
        for r in &results[..at] {
            assert!(matches!(r, Ok(Progress::Partial { .. })), "{r:?}");
        }
    } else {
        assert_eq!(first_err, None, "unexpected error: {results:?}");
        let covered = (packed.len() * per_byte).min(table_len);
        let (last, before) = results.split_last().expect("at least one message");
        assert_eq!(
            *last,
            Ok(Progress::Complete {
                entries: covered,
                full: covered == table_len
            })
        );
        for r in before {
            assert!(matches!(r, Ok(Progress::Partial { .. })), "{r:?}");
        }
    }
}

/// Entry `k` of a packed byte, most significant first; signed except for 1 bit.
fn reference_entry(byte: u8, bits: u32, k: u32) -> i8 {
    let raw = (byte >> (8 - bits * (k + 1))) & ((1u16 << bits) - 1) as u8;
    if bits == 1 || raw < 1 << (bits - 1) {
        raw as i8
    } else {
        (raw as i16 - (1i16 << bits)) as i8
    }
}

fn pack_unpack(data: &[u8]) {
    // Unpacking in every width agrees with the reference reading.
    for bits in [1u8, 2, 4, 8] {
        let mut out = vec![42]; // unpack appends
        qrp::unpack(data, bits, &mut out).expect("unpack");
        assert_eq!(out[0], 42, "unpack overwrote the output");
        let per_byte = 8 / bits as u32;
        assert_eq!(out.len() - 1, data.len() * per_byte as usize);
        for (i, &v) in out[1..].iter().enumerate() {
            let byte = data[i / per_byte as usize];
            let k = i as u32 % per_byte;
            assert_eq!(
                v,
                reference_entry(byte, bits as u32, k),
                "{bits} bits, entry {i}"
            );
        }
    }
    for bits in [0u8, 3, 5, 6, 7, 9, 16, 255] {
        assert!(qrp::unpack(data, bits, &mut Vec::new()).is_err());
        assert!(qrp::pack(&[], bits).is_err());
    }
    assert!(qrp::pack(&[], 1).is_err());
    assert!(qrp::pack(&[], 2).is_err());

    // 8 bits: the bytes themselves.
    let e8: Vec<i8> = data.iter().map(|&b| b as i8).collect();
    assert_eq!(qrp::pack(&e8, 8).expect("pack 8"), data);
    let mut back = Vec::new();
    qrp::unpack(data, 8, &mut back).expect("unpack 8");
    assert_eq!(back, e8);

    // 4 bits: values in -8..=7, padded with one zero nibble to an even count.
    let e4: Vec<i8> = data.iter().map(|&b| (b as i8) >> 4).collect();
    let p4 = qrp::pack(&e4, 4).expect("pack 4");
    assert_eq!(p4.len(), e4.len().div_ceil(2));
    let mut back = Vec::new();
    qrp::unpack(&p4, 4, &mut back).expect("unpack 4");
    assert_eq!(back.len(), p4.len() * 2);
    assert_eq!(&back[..e4.len()], &e4[..]);
    assert!(
        back[e4.len()..].iter().all(|&v| v == 0),
        "padding is not zero"
    );
    assert_eq!(qrp::choose_entry_bits(&e4), 4);

    // 4 bits refuses the first value out of range.
    let first_bad = e8.iter().position(|v| !(-8..=7).contains(v));
    match (qrp::pack(&e8, 4), first_bad) {
        (Ok(_), None) => assert_eq!(qrp::choose_entry_bits(&e8), 4),
        (
            Err(QrpError::EntryOutOfRange {
                index,
                value,
                bits: 4,
            }),
            Some(i),
        ) => {
            assert_eq!((index, value), (i, e8[i]));
            assert_eq!(qrp::choose_entry_bits(&e8), 8);
        }
        (r, _) => panic!("pack of {e8:?} in 4 bits: {r:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let table_len = 1usize << (control & 15);
    if control & 0x80 != 0 {
        free_mode(table_len, rest);
    } else {
        built_mode(table_len, rest);
    }
    pack_unpack(rest);
});
