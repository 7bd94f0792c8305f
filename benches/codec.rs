//! Codec throughput on a realistic mix of descriptors, as a ratio to a plain copy
//! of the same bytes measured in the same run.
//!
//! Run with `cargo bench --bench codec`. The mix: Pings (half with GGEP `SCP`),
//! Pongs with GGEP (DU, UP, VC, LOC), Queries with a SHA-1 URN and GGEP, and
//! QueryHits with 10 results (URN + GGEP per result) and a vendor trailer.
//!
//! Two paths are measured:
//! - the relay path: framing, validation with the borrowed views, and writing the
//!   frame out again (what a node does with messages it forwards);
//! - the owned path: parsing into typed values and encoding them back.
//!
//! A counting allocator reports allocations per message and checks that parsing a
//! header allocates nothing.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use servent::framing::{DescriptorCodec, SizeLimits};
use servent::wire::ext::{ExtArea, ExtItem};
use servent::wire::huge::Sha1Urn;
use servent::wire::queryhit::OpenDataFlags;
use servent::wire::{
    Function, Ggep, GgepExt, Guid, HEADER_LEN, Header, HitResult, Hops, MAX_PAYLOAD, Message, Ping,
    Pong, Query, QueryFlags, QueryHit, Trailer, TrailerArea, Ttl,
};
use tokio_util::codec::Decoder;

mod common;
use common::{Counting, Rng, allocs};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Words the generated names and queries are made of.
const WORDS: &[&str] = &[
    "linux",
    "free",
    "software",
    "music",
    "live",
    "concert",
    "debian",
    "holiday",
    "photos",
    "mix",
    "remastered",
    "lecture",
    "notes",
    "podcast",
    "episode",
];

fn ping(rng: &mut Rng) -> Message {
    Message::Ping(Ping {
        ggep: (rng.next() % 2 == 0).then(|| Ggep::new(vec![GgepExt::new("SCP", vec![1u8])])),
    })
}

fn pong(rng: &mut Rng) -> Message {
    Message::Pong(Pong {
        port: 6346,
        ip: Ipv4Addr::from(rng.next() as u32),
        files: (rng.next() % 5000) as u32,
        kbytes: (rng.next() % 50_000_000) as u32,
        ggep: Some(Ggep::new(vec![
            GgepExt::int("DU", rng.next() % 86_400),
            GgepExt::new("UP", vec![0u8, 30, 5]),
            GgepExt::new("VC", b"GTKG\x1c".to_vec()),
            GgepExt::new("LOC", b"en".to_vec()),
        ])),
    })
}

fn query(rng: &mut Rng) -> Message {
    let text = format!(
        "{} {} {}",
        rng.pick(WORDS),
        rng.pick(WORDS),
        rng.pick(WORDS)
    );
    let mut q = Query::new(
        QueryFlags::with_bits(QueryFlags::XML | QueryFlags::GGEP_H),
        &text,
    );
    q.ext = ExtArea {
        items: vec![
            ExtItem::sha1(&Sha1Urn::digest(&rng.next().to_le_bytes())),
            ExtItem::Ggep(Ggep::new(vec![GgepExt::flag("PR"), GgepExt::int("M", 4)])),
        ]
        .into(),
    };
    Message::Query(q)
}

fn query_hit(rng: &mut Rng) -> Message {
    let results = (0..10)
        .map(|j| {
            let name = format!(
                "{} - {} {} ({j}).mp3",
                rng.pick(WORDS),
                rng.pick(WORDS),
                rng.pick(WORDS)
            );
            let mut r = HitResult::new(
                j + 1,
                rng.next() % 20_000_000,
                &name,
                Some(&Sha1Urn::digest(name.as_bytes())),
            );
            r.ext.items.push(ExtItem::Ggep(Ggep::new(vec![
                // One alternate location (its port bytes hold a NUL, so it is COBS'd).
                GgepExt::new("ALT", vec![0xc6, 0x33, 0x64, 0x14, 0x00, 0x19]),
                GgepExt::int("CT", 1_600_000_000 + rng.next() % 100_000_000),
            ])));
            r
        })
        .collect();
    let flags = OpenDataFlags {
        push: Some(false),
        busy: Some(false),
        uploaded: Some(true),
        ..OpenDataFlags::default()
    };
    Message::QueryHit(QueryHit {
        port: 6346,
        ip: Ipv4Addr::new(203, 0, 113, 5),
        speed: 1000,
        results,
        trailer: TrailerArea::Qhd(Trailer::new(
            *b"SRVT",
            flags,
            Some(Ggep::new(vec![GgepExt::flag("BH")])),
        )),
        servent: Guid([7; 16]),
    })
}

/// 30% Pings, 30% Pongs, 25% Queries, 15% QueryHits, in a fixed shuffled order.
fn mix(count: usize) -> Vec<Message> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    (0..count)
        .map(|_| match rng.next() % 100 {
            0..30 => ping(&mut rng),
            30..60 => pong(&mut rng),
            60..85 => query(&mut rng),
            _ => query_hit(&mut rng),
        })
        .collect()
}

/// Runs `f` repeatedly for at least `min` in all and returns the best
/// per-iteration time over five rounds (the round least disturbed by other work).
fn measure(min: Duration, mut f: impl FnMut()) -> Duration {
    measure_on(min, &BytesMut::new(), |_| f())
}

/// As [`measure`], for work that consumes its own copy of `stream`: the copy
/// (the bytes a read would have left in a connection's buffer) is made before
/// each iteration's clock starts, so a row times its work and not the copy,
/// which is itself the baseline's whole cost.
fn measure_on(min: Duration, stream: &BytesMut, mut f: impl FnMut(BytesMut)) -> Duration {
    // A row `only` skipped (`CODEC_ROW` names another) is not run.
    if SKIP.with(|s| s.get()) {
        return Duration::from_nanos(1);
    }
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let mut spent = Duration::ZERO;
        let mut iters = 0u32;
        while start.elapsed() < min / 5 || iters == 0 {
            let input = stream.clone();
            let t = Instant::now();
            f(input);
            spent += t.elapsed();
            iters += 1;
        }
        best = best.min(spent / iters);
    }
    best
}

thread_local! {
    static SKIP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// With `CODEC_ROW=<row>` set, rows other than `<row>` are skipped (their
/// figures are then meaningless), so that `perf record` sees one row alone.
fn only(row: &str) {
    let skip = std::env::var("CODEC_ROW").is_ok_and(|r| r != row);
    SKIP.with(|s| s.set(skip));
}

/// Limits that let every message of the mix through.
fn open_limits() -> SizeLimits {
    SizeLimits {
        query: MAX_PAYLOAD,
        query_hit: MAX_PAYLOAD,
        other: MAX_PAYLOAD,
    }
}

fn decode_all(mut buf: BytesMut, out: &mut Vec<Message>) {
    out.clear();
    let mut codec = DescriptorCodec::new(open_limits());
    while let Some(frame) = codec.decode(&mut buf).expect("valid stream") {
        out.push(frame.message().expect("valid message"));
    }
}

fn encode_all(msgs: &[Message], out: &mut BytesMut) {
    out.clear();
    for m in msgs {
        m.encode_frame(Guid([1; 16]), Ttl(4), Hops(1), out)
            .expect("encodable");
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let min = if quick {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(2)
    };

    let msgs = mix(4000);
    let mut stream = BytesMut::new();
    encode_all(&msgs, &mut stream);
    let bytes = stream.len() as f64;
    let count = msgs.len() as f64;

    // Sanity: the stream decodes back to the mix.
    let mut decoded = Vec::new();
    decode_all(stream.clone(), &mut decoded);
    assert_eq!(decoded, msgs);
    // The floor walk finds the same boundaries: it ends where each payload's
    // parts end (before a hit's servent GUID).
    let mut buf = stream.clone();
    let mut codec = DescriptorCodec::new(open_limits());
    while let Ok(Some(f)) = codec.decode(&mut buf) {
        let guid = if f.header.function == Function::QueryHit {
            16
        } else {
            0
        };
        assert_eq!(
            floor::walk(f.header.function, &f.payload),
            f.payload.len() - guid
        );
    }

    let mut dst = vec![0u8; stream.len()];
    only("memcpy");
    let t_copy = measure(min, || {
        dst.copy_from_slice(black_box(&stream[..]));
        black_box(&mut dst);
    });
    only("framing");
    let t_frame = measure_on(min, &stream, |mut buf| {
        let mut codec = DescriptorCodec::new(open_limits());
        let mut n = 0usize;
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            n += f.payload.len();
        }
        black_box(n);
    });
    only("validate");
    let t_valid = measure_on(min, &stream, |mut buf| {
        let mut codec = DescriptorCodec::new(open_limits());
        let mut n = 0usize;
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            Message::validate(f.header.function, &f.payload).expect("valid");
            n += 1;
        }
        black_box(n);
    });
    let mut out = BytesMut::with_capacity(stream.len());
    // The relay path without validation: what framing and writing the frames
    // out cost by themselves.
    only("copyout");
    let t_copyout = measure_on(min, &stream, |mut buf| {
        let mut codec = DescriptorCodec::new(open_limits());
        out.clear();
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            f.encode(&mut out);
        }
        black_box(&out);
    });
    only("relay");
    let t_relay = measure_on(min, &stream, |mut buf| {
        let mut codec = DescriptorCodec::new(open_limits());
        out.clear();
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            Message::validate(f.header.function, &f.payload).expect("valid");
            f.encode(&mut out);
        }
        black_box(&out);
    });
    // The same with validation replaced by the structural floor (see
    // [`floor`]): the most the relay path could gain from a faster validator.
    only("floor");
    let t_floor = measure_on(min, &stream, |mut buf| {
        let mut codec = DescriptorCodec::new(open_limits());
        out.clear();
        let mut ends = 0usize;
        while let Ok(Some(f)) = codec.decode(&mut buf) {
            ends += floor::walk(f.header.function, &f.payload);
            f.encode(&mut out);
        }
        black_box(ends);
        black_box(&out);
    });
    only("decode");
    let t_dec = measure_on(min, &stream, |buf| {
        decode_all(black_box(buf), &mut decoded);
        black_box(&decoded);
    });
    only("encode");
    let t_enc = measure(min, || {
        encode_all(black_box(&decoded), &mut out);
        black_box(&out);
    });
    only("both");
    let t_both = measure_on(min, &stream, |buf| {
        decode_all(black_box(buf), &mut decoded);
        encode_all(&decoded, &mut out);
        black_box(&out);
    });

    // Allocations: headers must cost none; report what the other paths cost.
    let a0 = allocs();
    let mut sum = 0u64;
    let mut off = 0;
    while off + HEADER_LEN <= stream.len() {
        let h = Header::parse_prefix(black_box(&stream[off..])).expect("header");
        sum += h.payload_len as u64;
        off += HEADER_LEN + h.payload_len as usize;
    }
    let header_allocs = allocs() - a0;
    black_box(sum);
    let a1 = allocs();
    let mut off = 0;
    while off + HEADER_LEN <= stream.len() {
        let h = Header::parse_prefix(&stream[off..]).expect("header");
        let end = off + HEADER_LEN + h.payload_len as usize;
        Message::validate(h.function, &stream[off + HEADER_LEN..end]).expect("valid");
        off = end;
    }
    let validate_allocs = allocs() - a1;
    let copy = stream.clone();
    let a2 = allocs();
    decode_all(copy, &mut decoded);
    let decode_allocs = allocs() - a2;

    let rate = |t: Duration| bytes / t.as_secs_f64();
    let copy = rate(t_copy);
    println!(
        "mix: {} messages, {} bytes (avg {:.0} B/message)",
        msgs.len(),
        stream.len(),
        bytes / count
    );
    println!(
        "{:<24} {:>10} {:>14} {:>10}",
        "", "MB/s", "messages/s", "x memcpy"
    );
    for (name, t) in [
        ("memcpy (baseline)", t_copy),
        ("framing", t_frame),
        ("framing+validate", t_valid),
        ("framing+encode", t_copyout),
        ("framing+validate+encode", t_relay),
        ("framing+floor+encode", t_floor),
        ("owned decode", t_dec),
        ("owned encode", t_enc),
        ("owned decode+encode", t_both),
    ] {
        println!(
            "{:<24} {:>10.1} {:>14.0} {:>10.4}",
            name,
            rate(t) / 1e6,
            count / t.as_secs_f64(),
            rate(t) / copy
        );
    }
    println!(
        "allocations per message: header parse {:.1}, validate {:.1}, owned decode {:.1}",
        header_allocs as f64 / count,
        validate_allocs as f64 / count,
        decode_allocs as f64 / count
    );
    assert_eq!(header_allocs, 0, "parsing a header must not allocate");
    assert_eq!(validate_allocs, 0, "validating must not allocate");
    // Per hit: the result list, one buffer (and its shared header) for all
    // the results' COBS values; a result's items and a block's extensions
    // are held inline. About 0.7 a message over the mix.
    let per_message = decode_allocs as f64 / count;
    assert!(
        per_message <= 0.8,
        "{per_message} allocations per decoded message"
    );
}

/// The structural floor under any validator: a walk that visits, in order,
/// every boundary a validating parser must find (each result's name end, each
/// extension item, each GGEP extension's length field, the trailer's parts)
/// and checks nothing else. Not a validator: it trusts the stream, which the
/// bench has already decoded, so it may index without bounds errors mattering.
/// Its row says how fast the relay path could be on this machine if validation
/// cost nothing beyond finding where each part ends.
mod floor {
    use servent::wire::Function;

    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;

    /// Where the next NUL (or, with `fs`, the next NUL or FS) is at or after
    /// `from`, eight bytes at a time; `h.len()` if none.
    #[inline(always)]
    fn find(h: &[u8], from: usize, fs: bool) -> usize {
        let zero = |w: u64| w.wrapping_sub(LO) & !w & HI;
        let mut i = from;
        while i + 8 <= h.len() {
            let w = u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
            let m = zero(w) | if fs { zero(w ^ (LO * 0x1C)) } else { 0 };
            if m != 0 {
                return i + (m.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while i < h.len() && h[i] != 0 && !(fs && h[i] == 0x1C) {
            i += 1;
        }
        i
    }

    /// The end of the GGEP block whose magic byte is at `p`.
    #[inline(always)]
    fn ggep(b: &[u8], mut p: usize) -> usize {
        p += 1;
        loop {
            let flags = b[p];
            p += 1 + (flags & 0x0F) as usize;
            let mut len = 0usize;
            loop {
                let l = b[p];
                p += 1;
                len = (len << 6) | (l & 0x3F) as usize;
                if l & 0x40 != 0 {
                    break;
                }
            }
            p += len;
            if flags & 0x80 != 0 {
                return p;
            }
        }
    }

    /// The end of the extension area starting at `p` (past its NUL when
    /// `nul_ends`).
    #[inline(always)]
    fn area(b: &[u8], mut p: usize, nul_ends: bool) -> usize {
        while p < b.len() {
            match b[p] {
                0 if nul_ends => return p + 1,
                0 | 0x1C => p += 1,
                0xC3 => p = ggep(b, p),
                _ => p = find(b, p, true),
            }
        }
        p
    }

    /// Walks one payload, returning where the walk ended (kept by the caller
    /// so that the walk is not optimized away).
    pub fn walk(function: Function, b: &[u8]) -> usize {
        match function {
            Function::Ping if !b.is_empty() => ggep(b, 0),
            Function::Pong if b.len() > 14 => ggep(b, 14),
            Function::Query => area(b, find(b, 2, false) + 1, false),
            Function::QueryHit => {
                let body = &b[..b.len() - 16];
                let mut p = 11;
                for _ in 0..b[0] {
                    p = area(body, find(body, p + 8, false) + 1, true);
                }
                // The trailer: vendor code, open data, then the private
                // area's GGEP block.
                if body.len() > p + 4 {
                    p += 5 + body[p + 4] as usize;
                    if let Some(at) = body[p..].iter().position(|&c| c == 0xC3) {
                        p = ggep(body, p + at);
                    }
                }
                p
            }
            _ => 0,
        }
    }
}
