//! FastTrack file hashes: the FTH ("UUHash", the 20 bytes FastTrack names a file
//! by), the kzhash (the FTH followed by an MD5 tree), the file id checksum, and
//! the text forms FastTrack writes them in. No I/O, apart from
//! [`fth_of_reader`], which reads only the parts of a file the FTH covers.
//!
//! The rules are in `protocol-spec/fasttrack-hashes.md`:
//!
//! * FTH = MD5 of the first 307 200 bytes (the whole file if shorter), then the
//!   "smallhash" as a little-endian u32. The smallhash starts at `0xFFFF_FFFF`
//!   and is a CRC-32 register (reflected, polynomial 0xEDB88320, no inversion)
//!   fed, for a file of `n > 307 200` bytes, the 307 200-byte blocks at 1 MiB,
//!   2 MiB, 4 MiB ... that end at or before `n - 307 200`, then the last
//!   `min(n - 307 200, 307 200)` bytes; finally it is XOR-ed with `n mod 2^32`.
//! * kzhash = FTH, then the root of an MD5 tree over 32 KiB blocks.
//! * file id = CRC-16/XMODEM of the FTH, `& 0x3FFF`.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use data_encoding::{BASE64, HEXLOWER_PERMISSIVE};
use md5::{Digest, Md5};

/// Bytes of the file's head the MD5 part covers, and the size of every sampled
/// block and of the tail.
pub const HEAD: u64 = 307_200;
/// Offset of the first sampled block; the next ones double it.
pub const FIRST_SAMPLE: u64 = 1024 * 1024;
/// Leaf size of the kzhash MD5 tree.
pub const TREE_BLOCK: usize = 32 * 1024;

/// A FastTrack file hash (FTH, "UUHash"): 16 bytes of MD5, 4 of smallhash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fth(pub [u8; 20]);

/// Why text is not an FTH.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FthParseError {
    #[error("an FTH is 40 hexadecimal digits")]
    Hex,
    #[error("an FTH in base64 is 28 characters (after an optional '=')")]
    Base64,
}

impl Fth {
    /// The 20 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The smallhash part, as the number it is.
    pub fn smallhash(&self) -> u32 {
        u32::from_le_bytes([self.0[16], self.0[17], self.0[18], self.0[19]])
    }

    /// Lower-case hex, as in `GET /.hash=<hex>`.
    pub fn hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.0)
    }

    /// Parses 40 hex digits, either case.
    pub fn from_hex(s: &[u8]) -> Result<Fth, FthParseError> {
        if s.len() != 40 {
            return Err(FthParseError::Hex);
        }
        let v = HEXLOWER_PERMISSIVE
            .decode(s)
            .map_err(|_| FthParseError::Hex)?;
        Ok(Fth(v.try_into().map_err(|_| FthParseError::Hex)?))
    }

    /// Standard base64 with padding, 28 characters.
    pub fn base64(&self) -> String {
        BASE64.encode(&self.0)
    }

    /// The form FastTrack writes in `X-KazaaTag: 3==...` and `sig2dat` links:
    /// `=` then the base64.
    pub fn kazaa_base64(&self) -> String {
        format!("={}", self.base64())
    }

    /// Parses the base64 form, with or without the leading `=`.
    pub fn from_base64(s: &[u8]) -> Result<Fth, FthParseError> {
        let s = match s {
            [b'=', rest @ ..] if rest.len() == 28 => rest,
            _ => s,
        };
        if s.len() != 28 {
            return Err(FthParseError::Base64);
        }
        let v = BASE64.decode(s).map_err(|_| FthParseError::Base64)?;
        Ok(Fth(v.try_into().map_err(|_| FthParseError::Base64)?))
    }

    /// The file id (checksum) FastTrack puts beside the hash in shares and
    /// results: CRC-16/XMODEM of the 20 bytes, 14 bits kept.
    pub fn file_id(&self) -> u16 {
        crc16_xmodem(&self.0) & 0x3FFF
    }

    /// The HTTP path a FastTrack downloader asks for.
    pub fn http_path(&self) -> String {
        format!("/.hash={}", self.hex())
    }
}

impl fmt::Debug for Fth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fth({})", self.hex())
    }
}

impl fmt::Display for Fth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl std::str::FromStr for Fth {
    type Err = FthParseError;
    fn from_str(s: &str) -> Result<Fth, FthParseError> {
        Fth::from_hex(s.as_bytes())
    }
}

/// The CRC-32 table (reflected, polynomial 0xEDB88320).
const CRC32_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// The smallhash update: a CRC-32 register step over `data`, without the usual
/// inversions.
pub fn smallhash_update(mut c: u32, data: &[u8]) -> u32 {
    for &b in data {
        c = CRC32_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c
}

/// CRC-16/XMODEM (polynomial 0x1021, initial 0, not reflected).
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut c: u16 = 0;
    for &b in data {
        c ^= (b as u16) << 8;
        for _ in 0..8 {
            c = if c & 0x8000 != 0 {
                (c << 1) ^ 0x1021
            } else {
                c << 1
            };
        }
    }
    c
}

/// The byte ranges of a file of `size` bytes the smallhash covers, in the order
/// it covers them: the sampled blocks, then the tail. Empty for files of at
/// most [`HEAD`] bytes. The ranges never overlap and only grow.
pub fn sampled_ranges(size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    if size <= HEAD {
        return out;
    }
    let mut off = FIRST_SAMPLE;
    // A block is kept when it ends at or before the tail window's start
    // (giFT's rule: equality keeps it).
    while off + HEAD <= size - HEAD {
        out.push((off, off + HEAD));
        off = match off.checked_mul(2) {
            Some(o) => o,
            None => break,
        };
    }
    let tail = (size - HEAD).min(HEAD);
    out.push((size - tail, size));
    out
}

/// The FTH of a whole file held in memory.
pub fn fth(data: &[u8]) -> Fth {
    let mut h = FthHasher::new(data.len() as u64);
    h.update(data);
    h.finish().expect("fed exactly the announced size")
}

/// Computes the FTH from one sequential pass over a file whose size is known
/// beforehand (the sampled blocks and the tail depend on it), so the pass that
/// computes the SHA-1 can feed it too. Memory is constant.
#[derive(Clone)]
pub struct FthHasher {
    size: u64,
    pos: u64,
    md5: Md5,
    crc: u32,
    ranges: Vec<(u64, u64)>,
    /// First range of `ranges` not wholly fed yet.
    next: usize,
}

/// The bytes fed were not as many as announced: the file changed while it was
/// read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{fed} bytes hashed, {announced} announced")]
pub struct SizeMismatch {
    pub announced: u64,
    pub fed: u64,
}

impl FthHasher {
    /// A hasher for a file of `size` bytes.
    pub fn new(size: u64) -> FthHasher {
        FthHasher {
            size,
            pos: 0,
            md5: Md5::new(),
            crc: 0xFFFF_FFFF,
            ranges: sampled_ranges(size),
            next: 0,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, data: &[u8]) {
        let start = self.pos;
        let end = start + data.len() as u64;
        if start < HEAD {
            let n = (HEAD.min(end) - start) as usize;
            self.md5.update(&data[..n]);
        }
        while let Some(&(a, b)) = self.ranges.get(self.next) {
            if a >= end {
                break;
            }
            let from = a.max(start);
            let to = b.min(end);
            if from < to {
                let slice = &data[(from - start) as usize..(to - start) as usize];
                self.crc = smallhash_update(self.crc, slice);
            }
            if b <= end {
                self.next += 1;
            } else {
                break;
            }
        }
        self.pos = end;
    }

    /// Bytes fed so far.
    pub fn fed(&self) -> u64 {
        self.pos
    }

    /// The FTH, if exactly the announced number of bytes was fed.
    pub fn finish(self) -> Result<Fth, SizeMismatch> {
        if self.pos != self.size {
            return Err(SizeMismatch {
                announced: self.size,
                fed: self.pos,
            });
        }
        let mut out = [0u8; 20];
        out[..16].copy_from_slice(&self.md5.finalize());
        let small = self.crc ^ (self.size as u32);
        out[16..].copy_from_slice(&small.to_le_bytes());
        Ok(Fth(out))
    }
}

/// The FTH of a file of `size` bytes read from `r`, reading only the head, the
/// sampled blocks and the tail (at most about 300 KiB per power of two of the
/// size, plus 600 KiB), seeking over the rest. For a file whose SHA-1 is known
/// and whose FTH is not.
pub fn fth_of_reader<R: Read + Seek>(r: &mut R, size: u64) -> io::Result<Fth> {
    let mut h = FthHasher::new(size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut parts = vec![(0, size.min(HEAD))];
    parts.extend(sampled_ranges(size));
    for (a, b) in parts {
        r.seek(SeekFrom::Start(a))?;
        // Skipped bytes are not fed: tell the hasher where it is.
        h.pos = a;
        let mut at = a;
        while at < b {
            let n = ((b - at) as usize).min(buf.len());
            r.read_exact(&mut buf[..n])?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    h.pos = size;
    h.finish()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The root of the kzhash MD5 tree, computed in one pass with a digest kept per
/// tree level (so memory grows with the logarithm of the size).
///
/// Leaves are the MD5s of 32 KiB blocks; a level is reduced by hashing the
/// concatenation of each pair, an unpaired last node being hashed alone; a
/// single leaf is hashed once more; an empty file gives MD5 of nothing.
#[derive(Clone, Default)]
pub struct Md5TreeHasher {
    block: Md5,
    in_block: usize,
    leaves: u64,
    /// At most one digest waiting for its pair, per level.
    levels: Vec<Option<[u8; 16]>>,
}

fn md5_of(parts: &[&[u8]]) -> [u8; 16] {
    let mut m = Md5::new();
    for p in parts {
        m.update(p);
    }
    m.finalize().into()
}

impl Md5TreeHasher {
    /// An empty tree.
    pub fn new() -> Md5TreeHasher {
        Md5TreeHasher::default()
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (TREE_BLOCK - self.in_block).min(data.len());
            self.block.update(&data[..n]);
            self.in_block += n;
            data = &data[n..];
            if self.in_block == TREE_BLOCK {
                self.end_block();
            }
        }
    }

    fn end_block(&mut self) {
        let leaf: [u8; 16] = std::mem::take(&mut self.block).finalize().into();
        self.in_block = 0;
        self.leaves += 1;
        self.push(0, leaf);
    }

    fn push(&mut self, mut level: usize, mut node: [u8; 16]) {
        loop {
            if self.levels.len() <= level {
                self.levels.resize(level + 1, None);
            }
            match self.levels[level].take() {
                Some(left) => {
                    node = md5_of(&[&left, &node]);
                    level += 1;
                }
                None => {
                    self.levels[level] = Some(node);
                    return;
                }
            }
        }
    }

    /// The root.
    pub fn finish(mut self) -> [u8; 16] {
        if self.in_block > 0 {
            self.end_block();
        }
        match self.leaves {
            0 => return md5_of(&[]),
            1 => return md5_of(&[&self.levels[0].expect("one leaf")]),
            _ => {}
        }
        // Unpaired nodes, lowest level first: each is the last of its level, so
        // it is hashed alone and carried up, unless it is the root.
        let mut carry: Option<[u8; 16]> = None;
        let top = self.levels.len();
        for level in 0..top {
            let pending = self.levels[level].take();
            let higher = self.levels[level + 1..].iter().any(Option::is_some);
            carry = match (pending, carry) {
                (Some(left), Some(right)) => Some(md5_of(&[&left, &right])),
                (Some(only), None) | (None, Some(only)) => {
                    if higher {
                        Some(md5_of(&[&only]))
                    } else {
                        // Nothing above: this is the root.
                        return only;
                    }
                }
                (None, None) => None,
            };
            if !higher {
                if let Some(root) = carry {
                    return root;
                }
            }
        }
        carry.expect("a tree with leaves has a root")
    }
}

/// The kzhash of a file held in memory: FTH then the MD5 tree root.
pub fn kzhash(data: &[u8]) -> [u8; 36] {
    let mut tree = Md5TreeHasher::new();
    tree.update(data);
    let mut out = [0u8; 36];
    out[..20].copy_from_slice(&fth(data).0);
    out[20..].copy_from_slice(&tree.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The vectors' data generator (fasttrack-facts 5.4).
    fn generate(n: usize) -> Vec<u8> {
        let mut x: u32 = 1;
        (0..n)
            .map(|_| {
                x = (1_103_515_245u32.wrapping_mul(x).wrapping_add(12345)) & 0x7FFF_FFFF;
                (x >> 16) as u8
            })
            .collect()
    }

    /// The MD5 tree computed the plain way, level by level, all leaves held.
    fn md5tree_by_levels(data: &[u8]) -> [u8; 16] {
        let mut level: Vec<[u8; 16]> = data.chunks(TREE_BLOCK).map(|b| md5_of(&[b])).collect();
        match level.len() {
            0 => return md5_of(&[]),
            1 => return md5_of(&[&level[0]]),
            _ => {}
        }
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| match p {
                    [a, b] => md5_of(&[a, b]),
                    [a] => md5_of(&[a]),
                    _ => unreachable!(),
                })
                .collect();
        }
        level[0]
    }

    #[test]
    fn generator_matches_the_vectors() {
        assert_eq!(
            data_encoding::HEXLOWER.encode(&generate(16)),
            "c67e816b4bfbe2fb54f6bddf7c1ce187"
        );
    }

    /// Every case of the vector file: FTH, its text forms, file id, MD5 tree,
    /// kzhash, HTTP path; and the smallhash primitive cases.
    #[test]
    fn golden_vectors() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/fasttrack/hashes.json"))
                .unwrap();
        let cases = v["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 18);
        let biggest = cases
            .iter()
            .map(|c| c["size"].as_u64().unwrap())
            .max()
            .unwrap();
        let data = generate(biggest as usize);
        for c in cases {
            let n = c["size"].as_u64().unwrap() as usize;
            let d = &data[..n];
            let h = fth(d);
            assert_eq!(h.hex(), c["fthash_hex"].as_str().unwrap(), "{n}");
            assert_eq!(
                h.kazaa_base64(),
                c["fthash_base64"].as_str().unwrap(),
                "{n}"
            );
            assert_eq!(
                data_encoding::HEXLOWER.encode(&h.0[..16]),
                c["md5_300k_hex"].as_str().unwrap()
            );
            assert_eq!(
                data_encoding::HEXLOWER.encode(&h.0[16..]),
                c["smallhash_le_hex"].as_str().unwrap()
            );
            assert_eq!(
                u64::from(h.file_id()),
                c["file_id"].as_u64().unwrap(),
                "{n}"
            );
            assert_eq!(h.http_path(), c["http_path"].as_str().unwrap());
            let kz = kzhash(d);
            assert_eq!(
                data_encoding::HEXLOWER.encode(&kz),
                c["kzhash_hex"].as_str().unwrap(),
                "{n}"
            );
            assert_eq!(
                data_encoding::HEXLOWER.encode(&kz[20..]),
                c["md5tree_hex"].as_str().unwrap()
            );
            assert_eq!(md5tree_by_levels(d), kz[20..]);
            let mut r = std::io::Cursor::new(d);
            assert_eq!(fth_of_reader(&mut r, n as u64).unwrap(), h, "{n}");
        }
        for c in v["smallhash_primitive"]["cases"].as_array().unwrap() {
            let want = u32::from_str_radix(&c["result"].as_str().unwrap()[2..], 16).unwrap();
            let data = c["data_ascii"].as_str().unwrap();
            assert_eq!(smallhash_update(0xFFFF_FFFF, data.as_bytes()), want);
        }
    }

    #[test]
    fn smallhash_and_crc16_primitives() {
        assert_eq!(smallhash_update(0xFFFF_FFFF, b""), 0xFFFF_FFFF);
        assert_eq!(smallhash_update(0xFFFF_FFFF, b"a"), 0x1748_41BC);
        assert_eq!(smallhash_update(0xFFFF_FFFF, b"123456789"), 0x340B_C6D9);
        assert_eq!(
            smallhash_update(
                0xFFFF_FFFF,
                b".hash=8fc670eaf45c09b7b6783ba20f014efd0342f2f2"
            ),
            0xDAA8_66C9
        );
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    }

    #[test]
    fn ranges_follow_the_tail_rule() {
        assert!(sampled_ranges(HEAD).is_empty());
        assert_eq!(sampled_ranges(HEAD + 1), [(HEAD, HEAD + 1)]);
        // A block ending exactly where the tail starts is kept.
        let n = FIRST_SAMPLE + 2 * HEAD;
        assert_eq!(
            sampled_ranges(n),
            [(FIRST_SAMPLE, FIRST_SAMPLE + HEAD), (n - HEAD, n)]
        );
        // One byte less and it is dropped.
        assert_eq!(sampled_ranges(n - 1), [(n - 1 - HEAD, n - 1)]);
        // Huge sizes stop doubling before overflowing.
        assert!(sampled_ranges(u64::MAX).len() < 70);
    }

    #[test]
    fn zero_filled_files_from_the_facts() {
        let cases: [(usize, &str, &str, &str, u16); 3] = [
            (
                1,
                "93b885adfe0da089cdf634904fd59f71feffffff",
                "k7iFrf4NoInN9jSQT9Wfcf7///8=",
                "7e4696ef25d5faececd853ce5e2a233b",
                0x28d8,
            ),
            (
                307_201,
                "90aeded9922cf8946ea785863549372473a0f92d",
                "kK7e2ZIs+JRup4WGNUk3JHOg+S0=",
                "b9cbe185751a6329a1a9e15f84a4f464",
                0x35cf,
            ),
            (
                2_000_000,
                "90aeded9922cf8946ea78586354937242fc8b739",
                "kK7e2ZIs+JRup4WGNUk3JC/Itzk=",
                "b1228a6ea7dccdf251026c5115243bfb",
                0x017a,
            ),
        ];
        for (n, hex, b64, tree, id) in cases {
            let data = vec![0u8; n];
            let h = fth(&data);
            assert_eq!(h.hex(), hex, "{n}");
            assert_eq!(h.base64(), b64, "{n}");
            assert_eq!(h.file_id(), id, "{n}");
            assert_eq!(data_encoding::HEXLOWER.encode(&kzhash(&data)[20..]), tree);
        }
    }

    #[test]
    fn text_forms_round_trip_and_refuse_garbage() {
        let h = fth(b"x");
        assert_eq!(Fth::from_hex(h.hex().as_bytes()), Ok(h));
        assert_eq!(Fth::from_hex(h.hex().to_uppercase().as_bytes()), Ok(h));
        assert_eq!(h.hex().parse::<Fth>(), Ok(h));
        assert_eq!(Fth::from_base64(h.base64().as_bytes()), Ok(h));
        assert_eq!(Fth::from_base64(h.kazaa_base64().as_bytes()), Ok(h));
        assert_eq!(h.kazaa_base64().len(), 29);
        assert!(Fth::from_hex(b"").is_err());
        assert!(Fth::from_hex(&[b'g'; 40]).is_err());
        assert!(Fth::from_hex(&[b'0'; 41]).is_err());
        assert!(Fth::from_base64(b"=abc").is_err());
        assert!(Fth::from_base64(&[b'!'; 28]).is_err());
        assert_eq!(h.http_path(), format!("/.hash={}", h.hex()));
    }

    #[test]
    fn a_short_or_long_feed_is_refused() {
        let mut h = FthHasher::new(10);
        h.update(b"123456789");
        assert_eq!(
            h.clone().finish(),
            Err(SizeMismatch {
                announced: 10,
                fed: 9
            })
        );
        h.update(b"01");
        assert!(h.finish().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Feeding in any chunking gives what the one-shot hash gives, and so
        /// does the seeking reader.
        #[test]
        fn incremental_equals_one_shot(
            size in prop_oneof![
                0usize..70_000,
                300_000usize..320_000,
                1_600_000usize..1_700_000,
            ],
            cuts in proptest::collection::vec(1usize..400_000, 1..12),
        ) {
            let data = generate(size);
            let whole = fth(&data);
            let mut h = FthHasher::new(size as u64);
            let mut tree = Md5TreeHasher::new();
            let mut at = 0;
            for c in cuts.iter().cycle() {
                if at == size {
                    break;
                }
                let n = (*c).min(size - at);
                h.update(&data[at..at + n]);
                tree.update(&data[at..at + n]);
                at += n;
            }
            prop_assert_eq!(h.finish().unwrap(), whole);
            prop_assert_eq!(tree.finish(), md5tree_by_levels(&data));
            let mut r = std::io::Cursor::new(&data);
            prop_assert_eq!(fth_of_reader(&mut r, size as u64).unwrap(), whole);
        }
    }
}
