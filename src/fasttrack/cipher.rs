//! The FastTrack session cipher: a keystream XOR-ed onto every byte after the
//! handshake hellos, one stream per direction.
//!
//! State is a 63-byte pad clocked like a lagged additive generator, a 256-byte
//! output lookup, and a position. What fills the pad at the start depends on the
//! encryption type, a bit set:
//!
//! - 0x01 (and a type with none of 0x1E7): 255 bytes from the LCG, cubed modulo a
//!   fixed 2048-bit number ([`enc_type_1`]), XOR-ed into the pad.
//! - 0x40: 20 more LCG words XOR-ed into the pad (no mixing function).
//! - 0x08: the output lookup is shuffled from the MD5 of the pad, and shifts by one
//!   at every pad wrap.
//!
//! We do not implement bits 0x02, 0x10, 0x20 and 0x80: they need giFT's generated
//! mixing functions, which exist only as GPL code; nor 0x04 and 0x100, which no
//! known implementation has. A supernode picks the type, and giFT accepts what it
//! is given, so [`SUPPORTED_ENC_TYPES`] is all a supernode needs.
//!
//! The handshake sends each side's encryption type XOR-ed with a mask derived from
//! its seed by the same mixing code; [`enc_type_mask`] knows the masks of a fixed set
//! of seeds ([`KNOWN_SEEDS`]), including giFT's constant client seed.

use std::sync::LazyLock;

use md5::{Digest, Md5};
use num_bigint::BigUint;

use super::FtError;

/// The bits of an encryption type this cipher implements.
pub const SUPPORTED_BITS: u32 = 0x01 | 0x08 | 0x40;

/// Every encryption type we can run, in both directions.
pub const SUPPORTED_ENC_TYPES: &[u32] = &[0x00, 0x01, 0x08, 0x09, 0x40, 0x41, 0x48, 0x49];

/// The encryption type a supernode picks unless told otherwise: 0x01 is the type
/// a giFT-FastTrack client completed login, sharing, searching and downloading
/// with against a test supernode.
pub const DEFAULT_ENC_TYPE: u32 = 0x01;

/// giFT-FastTrack's client seed: every giFT session sends this one.
pub const GIFT_CLIENT_SEED: u32 = 0xFACB_1238;

/// The encryption type giFT-FastTrack asks for.
pub const GIFT_REQUESTED_ENC_TYPE: u32 = 0x29;

/// Seeds whose encryption-type masks we know, with their masks (computed by the
/// reference implementation; see `tests/fixtures/fasttrack/seed_masks_and_enc1.json`).
pub const KNOWN_SEEDS: &[(u32, u32)] = &[
    (0xFACB_1238, 0x3209_D21B),
    (0x2A1B_3C4D, 0x4020_08C4),
    (0x0000_0000, 0x48A0_0A33),
    (0x0000_0001, 0x0A24_408D),
    (0x1234_5678, 0x0A56_0342),
    (0xDEAD_BEEF, 0x4C00_0410),
    (0xCAFE_BABE, 0x1402_0800),
    (0xFFFF_FFFF, 0x3E8A_5476),
    (0x1BAD_F00D, 0x0040_0040),
    (0x2BAD_F00D, 0x8120_1150),
    (0x3BAD_F00D, 0x7C08_FA4D),
    (0x4BAD_F00D, 0x1005_100B),
    (0x5BAD_F00D, 0x2032_E810),
    (0x6BAD_F00D, 0x2000_0108),
    (0x7BAD_F00D, 0x8880_912A),
    (0x8BAD_F00D, 0x0000_0000),
];

/// The mask that hides an encryption type sent with `seed`, if we know it:
/// `wire = enc_type ^ mask`, and the same XOR decodes.
pub fn enc_type_mask(seed: u32) -> Option<u32> {
    KNOWN_SEEDS
        .iter()
        .find(|&&(s, _)| s == seed)
        .map(|&(_, mask)| mask)
}

/// Whether [`Cipher::new`] accepts this encryption type.
pub fn is_supported(enc_type: u32) -> bool {
    enc_type & !SUPPORTED_BITS == 0
}

/// The LCG behind every seed expansion.
#[inline]
fn step(s: u32) -> u32 {
    s.wrapping_mul(0x10DCD).wrapping_add(0x4271)
}

/// The modulus of encryption type 0x01 (2048 bits, most significant digit first).
const ENC1_MODULUS_HEX: &str = concat!(
    "d453ec0a34eb20ca0a532f6aae08473dc6f2dc0e96e62735dd331dd5522f69d1",
    "0d7a00501928851271a157acde7aa2fedbd26bb04d23ffc1b6a31787315d5780",
    "51be98b0da2d7944ed64060a96e537a7a4037cdbde3c6725e9db63418443fd05",
    "0829ee6d18e4dd48d61a70558606342ac3741ca71e4970e510a931f8b42d2df0",
    "5250e6fe0a7703d88781ab210032a3dfe957a9b5d238b5b8363dc15e2c0054b3",
    "390a5a36b15e221669f29f9af97bb445695b3ca272f554fce475aa9e6e37192e",
    "91fd3a9ebc8c0457e7ee26ad19d2974dc11f00e38d5b5eb2e84b25f81b32a36f",
    "ba1519a15efa55ffe569c5fc96d7f927bf77b6d6193bbd8f31c4a05eeb96841d",
);

static ENC1_MODULUS: LazyLock<BigUint> = LazyLock::new(|| {
    BigUint::parse_bytes(ENC1_MODULUS_HEX.as_bytes(), 16).expect("the modulus is valid hex")
});

/// Encryption type 0x01's mixing step: the 255 input bytes with a top byte of 1,
/// read as a little-endian number, cubed modulo a fixed 2048-bit number, written
/// back as 256 little-endian bytes.
pub fn enc_type_1(input: &[u8; 255]) -> [u8; 256] {
    let mut digits = [0u8; 256];
    digits[..255].copy_from_slice(input);
    digits[255] = 1;
    let x = BigUint::from_bytes_le(&digits);
    // Two products and two reductions: some 20 times faster than `modpow`, whose
    // Montgomery set-up costs more than it saves for an exponent of 3.
    let n = &*ENC1_MODULUS;
    let y = (&x * &x % n) * &x % n;
    let mut out = [0u8; 256];
    let bytes = y.to_bytes_le();
    out[..bytes.len()].copy_from_slice(&bytes);
    out
}

/// One direction's keystream.
#[derive(Clone)]
pub struct Cipher {
    enc_type: u32,
    pad: [u8; 63],
    lookup: [u8; 256],
    pos: usize,
    add: u8,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("enc_type", &format_args!("{:#x}", self.enc_type))
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl Cipher {
    /// The keystream for `seed` and `enc_type`, or an error for a type we do not
    /// implement (see [`SUPPORTED_ENC_TYPES`]).
    pub fn new(seed: u32, enc_type: u32) -> Result<Cipher, FtError> {
        if !is_supported(enc_type) {
            return Err(FtError::UnsupportedEncType(enc_type));
        }
        let mut pad = [0u8; 63];
        let mut s = seed;
        if enc_type & 0x01 != 0 || enc_type & 0x1E7 == 0 {
            let mut input = [0u8; 255];
            for b in input.iter_mut() {
                s = step(s);
                *b = ((s >> 17) % 0xE0) as u8;
            }
            let mixed = enc_type_1(&input);
            for (p, m) in pad.iter_mut().zip(mixed.iter()) {
                *p ^= m;
            }
        }
        if enc_type & 0x1E6 != 0 {
            // Only 0x40 gets here (the others are refused above): it has no mixing
            // function, the words go into the pad as they come.
            let mut words = [0u8; 80];
            for chunk in words.chunks_exact_mut(4) {
                s = step(s);
                chunk.copy_from_slice(&s.to_le_bytes());
            }
            for (p, w) in pad.iter_mut().zip(words.iter()) {
                *p ^= w;
            }
        }
        let t = step(s) >> 16;
        let pos = ((t * 63) >> 16) as usize;
        if pad.iter().all(|b| b & 1 == 0) {
            pad[0] |= 0x71;
        }
        let mut lookup = [0u8; 256];
        for (i, l) in lookup.iter_mut().enumerate() {
            *l = i as u8;
        }
        if enc_type & 0x08 != 0 {
            let digest = Md5::digest(pad);
            let mut m = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
            for i in 0..256usize {
                m = step(m);
                let j = i + ((((m >> 16) as usize) * (256 - i)) >> 16);
                lookup.swap(i, j);
            }
        }
        let mut c = Cipher::from_state(enc_type, pad, pos, lookup);
        c.shuffle((pos * pos + 2) % 59);
        Ok(c)
    }

    /// A cipher resumed from a state: the pad, position and lookup as they are
    /// right after initialisation (or any later point before the first pad
    /// wrap). This runs any encryption type without bit 0x10 (whose re-keying
    /// needs a mixing function), including types we cannot initialise ourselves,
    /// given a state made elsewhere; the tests replay captured sessions with it.
    pub fn from_state(enc_type: u32, pad: [u8; 63], pos: usize, lookup: [u8; 256]) -> Cipher {
        Cipher {
            enc_type,
            pad,
            lookup,
            pos: pos % 63,
            add: 0,
        }
    }

    /// The encryption type this stream runs.
    pub fn enc_type(&self) -> u32 {
        self.enc_type
    }

    fn shuffle(&mut self, k: usize) {
        self.pad[k..k + 5].sort_unstable_by_key(|b| b ^ 0x20);
        for i in (5..63).step_by(3) {
            self.pad[i] = ((!self.pad[i]).wrapping_add(i as u8)) | 1;
        }
    }

    /// The next key byte.
    #[inline]
    pub fn clock(&mut self) -> u8 {
        let prev = if self.pos == 0 { 62 } else { self.pos - 1 };
        self.pad[self.pos] = self.pad[self.pos].wrapping_add(self.pad[prev]);
        let x = self.pad[self.pos];
        if self.pos == 7 && x & 0x70 == 0 {
            let v = x as usize + self.pad[2] as usize;
            self.shuffle((v * v + 2) % 59);
        }
        self.pos += 1;
        if self.pos == 63 {
            self.pos = 0;
            if self.enc_type & 0x08 != 0 {
                self.add = self.add.wrapping_add(1);
            }
        }
        self.lookup[self.add.wrapping_add(x) as usize]
    }

    /// XORs the keystream onto `buf`: encrypts and decrypts alike.
    pub fn apply(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b ^= self.clock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_types_are_refused() {
        for enc in [0x02, 0x04, 0x10, 0x20, 0x29, 0x80, 0x100, 0xBF] {
            assert_eq!(
                Cipher::new(1, enc).unwrap_err(),
                FtError::UnsupportedEncType(enc)
            );
        }
        for &enc in SUPPORTED_ENC_TYPES {
            assert!(Cipher::new(1, enc).is_ok());
        }
    }

    #[test]
    fn first_key_bytes_of_type_1() {
        // protocol-facts.md 9.3 and fasttrack-facts.md 3.5.
        let mut c = Cipher::new(0x1234_5678, 0x01).unwrap();
        let mut buf = [0u8; 16];
        c.apply(&mut buf);
        assert_eq!(
            buf,
            [
                0x32, 0x75, 0x28, 0x34, 0xa0, 0x2b, 0x08, 0x2f, 0xf6, 0x6f, 0x4f, 0x0a, 0x7c, 0x3a,
                0x63, 0xd3
            ]
        );
    }
}
