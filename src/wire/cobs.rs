//! Consistent-Overhead Byte Stuffing, used to keep NUL bytes out of GGEP values
//! that travel inside NUL-delimited fields.
//!
//! The encoding is the standard one: each group is a code byte `k` (1..=255)
//! followed by `k - 1` non-zero bytes; a group with `k < 255` stands for its bytes
//! followed by a zero, except for the final group.

/// Why COBS data could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CobsError {
    /// A code byte of zero: COBS output never contains a zero.
    #[error("zero byte in COBS data")]
    ZeroByte,
    /// A group announced more bytes than were left.
    #[error("COBS group runs past the end of the data")]
    Truncated,
}

/// A buffer COBS output can be appended to and patched in.
pub trait Sink {
    /// Bytes written so far (where the next byte goes).
    fn pos(&self) -> usize;
    fn push(&mut self, b: u8);
    fn set(&mut self, at: usize, b: u8);
    fn reserve(&mut self, n: usize);
}

impl Sink for Vec<u8> {
    fn pos(&self) -> usize {
        self.len()
    }
    fn push(&mut self, b: u8) {
        Vec::push(self, b)
    }
    fn set(&mut self, at: usize, b: u8) {
        self[at] = b;
    }
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n)
    }
}

impl Sink for bytes::BytesMut {
    fn pos(&self) -> usize {
        self.len()
    }
    fn push(&mut self, b: u8) {
        bytes::BufMut::put_u8(self, b)
    }
    fn set(&mut self, at: usize, b: u8) {
        self[at] = b;
    }
    fn reserve(&mut self, n: usize) {
        bytes::BytesMut::reserve(self, n)
    }
}

/// Appends the COBS encoding of `data` to `out`. Never writes a zero byte.
///
/// A full group (code 0xFF) that ends exactly at the end of the data is not
/// followed by an empty group, so the output is the shortest standard form.
pub fn encode_into(data: &[u8], out: &mut impl Sink) {
    out.reserve(data.len() + data.len() / 254 + 1);
    let mut code_pos = out.pos();
    out.push(0); // placeholder for the current group's code byte
    let mut code: u8 = 1;
    for (i, &b) in data.iter().enumerate() {
        if b == 0 {
            out.set(code_pos, code);
            code_pos = out.pos();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF && i + 1 < data.len() {
                out.set(code_pos, code);
                code_pos = out.pos();
                out.push(0);
                code = 1;
            }
        }
    }
    out.set(code_pos, code);
}

/// The length of the COBS encoding of `data` (what [`encode_into`] appends).
pub fn encoded_len(data: &[u8]) -> usize {
    // One code byte per group; a group ends at each zero (which it replaces)
    // and after 254 non-zero bytes when more data follows.
    let mut len = 1;
    let mut run = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == 0 {
            len += 1;
            run = 0;
        } else {
            len += 1;
            run += 1;
            if run == 254 && i + 1 < data.len() {
                len += 1;
                run = 0;
            }
        }
    }
    len
}

/// The COBS encoding of `data`.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(data, &mut out);
    out
}

/// Whether `data` holds a zero byte. GGEP values, COBS groups and names are
/// short (a group is at most 254 bytes): a branch-free pass over them is cheaper
/// than an early-exit search (`memchr`, `<[u8]>::contains`), whose dispatch
/// costs more than the scan itself at these lengths. Long inputs still use
/// `memchr`.
#[inline]
pub fn has_nul(data: &[u8]) -> bool {
    if data.len() > 256 {
        return memchr::memchr(0, data).is_some();
    }
    data.iter().fold(false, |seen, &b| seen | (b == 0))
}

/// Checks that `data` is well-formed COBS and returns the length it decodes to,
/// without writing anything.
pub fn decoded_len(data: &[u8]) -> Result<usize, CobsError> {
    let mut i = 0;
    let mut len = 0;
    while i < data.len() {
        let code = data[i] as usize;
        if code == 0 {
            return Err(CobsError::ZeroByte);
        }
        let end = i + code;
        if end > data.len() {
            return Err(CobsError::Truncated);
        }
        if has_nul(&data[i + 1..end]) {
            return Err(CobsError::ZeroByte);
        }
        len += code - 1;
        i = end;
        if code < 0xFF && i < data.len() {
            len += 1;
        }
    }
    Ok(len)
}

/// Decodes COBS data into a buffer of exactly the decoded size.
pub fn decode(data: &[u8]) -> Result<Vec<u8>, CobsError> {
    let mut out = Vec::with_capacity(decoded_len(data)?);
    decode_valid(data, |part| out.extend_from_slice(part));
    Ok(out)
}

/// Decodes COBS data, appending it to `out`; returns the decoded length.
/// Nothing is written when the data is malformed.
pub fn decode_into(data: &[u8], out: &mut bytes::BytesMut) -> Result<usize, CobsError> {
    let n = decoded_len(data)?;
    out.reserve(n);
    decode_valid(data, |part| out.extend_from_slice(part));
    Ok(n)
}

/// Hands the decoded bytes of well-formed COBS data to `put`, in order.
fn decode_valid(data: &[u8], mut put: impl FnMut(&[u8])) {
    let mut i = 0;
    while i < data.len() {
        let code = data[i] as usize;
        let end = i + code;
        put(&data[i + 1..end]);
        i = end;
        if code < 0xFF && i < data.len() {
            put(&[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_vectors() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0x00], &[0x01, 0x01]),
            (&[0x00, 0x00], &[0x01, 0x01, 0x01]),
            (&[0x11, 0x22, 0x00, 0x33], &[0x03, 0x11, 0x22, 0x02, 0x33]),
            (&[0x11, 0x22, 0x33, 0x44], &[0x05, 0x11, 0x22, 0x33, 0x44]),
            (
                &[0xC6, 0x33, 0x64, 0x14, 0x00, 0x19],
                &[0x05, 0xC6, 0x33, 0x64, 0x14, 0x02, 0x19],
            ),
            (&[], &[0x01]),
        ];
        for (plain, coded) in cases {
            assert_eq!(decoded_len(coded), Ok(plain.len()));
            assert_eq!(encoded_len(plain), coded.len());
            assert_eq!(encode(plain), coded.to_vec(), "encode {plain:02x?}");
            assert_eq!(
                decode(coded).unwrap(),
                plain.to_vec(),
                "decode {coded:02x?}"
            );
        }
    }

    #[test]
    fn long_runs() {
        let run254: Vec<u8> = (1..=254).collect();
        let enc = encode(&run254);
        assert_eq!(enc.len(), 255);
        assert_eq!(enc[0], 0xFF);
        assert_eq!(decode(&enc).unwrap(), run254);

        let run255: Vec<u8> = (0..255).map(|i| (i % 255) as u8 + 1).collect();
        let enc = encode(&run255);
        assert!(!enc.contains(&0));
        assert_eq!(decode(&enc).unwrap(), run255);

        let mut with_zero = run254.clone();
        with_zero.push(0);
        let enc = encode(&with_zero);
        assert!(!enc.contains(&0));
        assert_eq!(decode(&enc).unwrap(), with_zero);
    }

    #[test]
    fn has_nul_at_every_length_and_position() {
        for len in [0usize, 1, 7, 31, 32, 33, 255, 256, 257, 1000] {
            let mut v = vec![0x5Au8; len];
            assert!(!has_nul(&v), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if at < len {
                    v[at] = 0;
                    assert!(has_nul(&v), "{len} {at}");
                    v[at] = 0x5A;
                }
            }
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(decode(&[0x00]), Err(CobsError::ZeroByte));
        assert_eq!(decode(&[0x05, 0x11]), Err(CobsError::Truncated));
        assert_eq!(decode(&[0x03, 0x11, 0x00]), Err(CobsError::ZeroByte));
    }

    proptest::proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(proptest::num::u8::ANY, 0..1200)) {
            let enc = encode(&data);
            proptest::prop_assert!(!enc.contains(&0));
            proptest::prop_assert_eq!(encoded_len(&data), enc.len());
            let mut b = bytes::BytesMut::new();
            encode_into(&data, &mut b);
            proptest::prop_assert_eq!(&b[..], &enc[..]);
            let mut d = bytes::BytesMut::from(&b"x"[..]);
            proptest::prop_assert_eq!(decode_into(&enc, &mut d), Ok(data.len()));
            proptest::prop_assert_eq!(&d[1..], &data[..]);
            proptest::prop_assert_eq!(decode(&enc).unwrap(), data);
        }
    }
}
