//! What the FastTrack hash (FTH) adds to hashing a share, as ratios to the SHA-1
//! alone measured in the same run, over the same in-memory bytes (so the disk is
//! out of the figures and only the hashing is compared).
//!
//! Rows:
//! - `sha1`: the SHA-1 of the data in 64 KiB blocks (the baseline);
//! - `sha1+fth`: the same pass also feeding `FthHasher` (what sharing does now);
//! - `fth fill`: `fth_of_reader` over the data (what a file whose SHA-1 is cached
//!   from an older cache costs): it reads only the head, the sampled blocks and
//!   the tail. The bytes it reads are counted, and checked against the rule.
//!
//! Run with `cargo bench --bench hashing`; `cargo test --benches` runs a quick mode.

use std::hint::black_box;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::time::{Duration, Instant};

use servent::fasttrack::hash::{FthHasher, HEAD, fth, fth_of_reader, sampled_ranges};
use sha1::{Digest, Sha1};

/// A reader that counts the bytes read from it.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counted<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Best time of `rounds` runs of `f`.
fn best(rounds: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("at least one round")
}

fn sha1_only(data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    for block in data.chunks(64 * 1024) {
        h.update(block);
    }
    h.finalize().into()
}

fn sha1_and_fth(data: &[u8]) -> ([u8; 20], [u8; 20]) {
    let mut h = Sha1::new();
    let mut f = FthHasher::new(data.len() as u64);
    for block in data.chunks(64 * 1024) {
        h.update(block);
        f.update(block);
    }
    (h.finalize().into(), f.finish().expect("whole file").0)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (size, rounds) = if quick { (6 << 20, 1) } else { (256 << 20, 5) };
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();

    // The one-pass FTH is the one-shot FTH, and the fill reads what the rule says.
    let (_, both) = sha1_and_fth(&data);
    assert_eq!(both, fth(&data).0);
    let mut r = Counted {
        inner: Cursor::new(&data[..]),
        read: 0,
    };
    assert_eq!(fth_of_reader(&mut r, size).unwrap().0, both);
    let covered: u64 = HEAD + sampled_ranges(size).iter().map(|(a, b)| b - a).sum::<u64>();
    assert_eq!(r.read, covered, "the fill reads the covered bytes, once");
    assert!(covered * 4 < size, "a fraction of the file");

    let base = best(rounds, || {
        black_box(sha1_only(black_box(&data)));
    });
    let with_fth = best(rounds, || {
        black_box(sha1_and_fth(black_box(&data)));
    });
    let fill = best(rounds, || {
        let mut c = Cursor::new(black_box(&data[..]));
        black_box(fth_of_reader(&mut c, size).unwrap());
    });
    let secs = base.as_secs_f64().max(1e-9);
    println!(
        "file of {} MiB; sha1 alone {:.0} MB/s (baseline)",
        size >> 20,
        size as f64 / secs / 1e6
    );
    println!(
        "sha1+fth   x{:.3} of sha1 alone",
        with_fth.as_secs_f64() / secs
    );
    println!(
        "fth fill   x{:.3} of sha1 alone ({} KiB read of {} MiB)",
        fill.as_secs_f64() / secs,
        covered >> 10,
        size >> 20
    );
}
