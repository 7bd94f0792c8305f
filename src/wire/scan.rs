//! Searches for a delimiter in the short fields of a descriptor (names, URNs,
//! extension items), which are mostly under 64 bytes: eight bytes at a time in
//! plain registers, where `memchr`'s vector dispatch costs more than the search
//! itself. Past the first 64 bytes the search is left to `memchr`.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// How far the word-at-a-time search goes before handing over to `memchr`.
const SHORT: usize = 64;

/// A word with the high bit set in every byte of `x` that is zero, and
/// possibly in bytes after the first such (borrows): only the lowest set bit
/// is to be trusted.
#[inline(always)]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// The offset of the first byte for which `hit` finds the high bit set, over
/// `hay[..SHORT]` a word at a time, and the rest by `long`.
#[inline(always)]
fn find_with(
    hay: &[u8],
    hit: impl Fn(u64) -> u64,
    byte: impl Fn(u8) -> bool,
    long: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    let short = hay.len().min(SHORT);
    let mut i = 0;
    while i + 8 <= short {
        let w = u64::from_le_bytes(hay[i..i + 8].try_into().expect("8 bytes"));
        let m = hit(w);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    while i < short {
        if byte(hay[i]) {
            return Some(i);
        }
        i += 1;
    }
    if hay.len() > SHORT {
        return long(&hay[SHORT..]).map(|at| at + SHORT);
    }
    None
}

/// The offset of the first NUL in `hay`.
#[inline]
pub fn find_nul(hay: &[u8]) -> Option<usize> {
    find_with(hay, zero_bytes, |b| b == 0, |rest| memchr::memchr(0, rest))
}

/// The offset of the first NUL or `other` byte in `hay`.
#[inline]
pub fn find_nul_or(other: u8, hay: &[u8]) -> Option<usize> {
    let splat = LO * other as u64;
    find_with(
        hay,
        |w| zero_bytes(w) | zero_bytes(w ^ splat),
        |b| b == 0 || b == other,
        |rest| memchr::memchr2(0, other, rest),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every position and length around the word and `SHORT` boundaries,
    /// with bytes that trip a careless zero test (0x01 after the NUL, 0x80,
    /// 0xFF, the other delimiter plus one), against a plain search.
    #[test]
    fn agrees_with_a_plain_search() {
        let fill = [0x41u8, 0x01, 0x80, 0xFF, 0x1D, 0x1B];
        for len in 0..150 {
            for &f in &fill {
                let base: Vec<u8> = vec![f; len];
                assert_eq!(find_nul(&base), base.iter().position(|&b| b == 0));
                for at in 0..len {
                    for (a, b) in [(0u8, 0x1Cu8), (0x1C, 0), (0, 0)] {
                        let mut hay = base.clone();
                        hay[at] = a;
                        if at + 1 < len {
                            hay[at + 1] = b;
                        }
                        let nul = hay.iter().position(|&c| c == 0);
                        let either = hay.iter().position(|&c| c == 0 || c == 0x1C);
                        assert_eq!(find_nul(&hay), nul, "len {len} at {at} fill {f:#x}");
                        assert_eq!(find_nul_or(0x1C, &hay), either, "len {len} at {at}");
                    }
                }
            }
        }
    }
}
