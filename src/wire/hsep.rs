//! HSEP 0.2, the Horizon Size Estimation Protocol: message function `0xCD`,
//! TTL 1, hops 0, sent only to peers whose handshake lists `HSEP/0.2` in
//! `X-Features`. The payload is one or more triples of u64le {hosts, files,
//! KiB}: triple `i` (from 0) counts what the sender reaches within `i + 1`
//! hops, itself included. See `protocol-spec/hsep.md`.

use bytes::{BufMut, BytesMut};

use crate::wire::error::{WireError, WireResult};

/// The descriptor function of an HSEP message.
pub const FUNCTION: u8 = 0xCD;
/// What `X-Features` lists for HSEP.
pub const FEATURE: &str = "HSEP/0.2";
/// Triples kept and sent at most (gtk-gnutella's `HSEP_N_MAX`); a longer
/// message's extra triples are ignored.
pub const MAX_TRIPLES: usize = 10;
/// Bytes of one triple.
pub const TRIPLE_LEN: usize = 24;

/// Hosts, files, KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Triple {
    pub hosts: u64,
    pub files: u64,
    pub kib: u64,
}

impl Triple {
    pub const ZERO: Triple = Triple {
        hosts: 0,
        files: 0,
        kib: 0,
    };

    /// Field by field, wrapping as gtk-gnutella's unsigned sums do (values
    /// come from the network; no sum may panic).
    pub fn plus(self, o: Triple) -> Triple {
        Triple {
            hosts: self.hosts.wrapping_add(o.hosts),
            files: self.files.wrapping_add(o.files),
            kib: self.kib.wrapping_add(o.kib),
        }
    }

    pub fn minus(self, o: Triple) -> Triple {
        Triple {
            hosts: self.hosts.wrapping_sub(o.hosts),
            files: self.files.wrapping_sub(o.files),
            kib: self.kib.wrapping_sub(o.kib),
        }
    }

    /// Every field at least `o`'s.
    pub fn covers(self, o: Triple) -> bool {
        self.hosts >= o.hosts && self.files >= o.files && self.kib >= o.kib
    }
}

/// Reads an HSEP payload: a whole number of triples, at least one, the first
/// counting exactly one host (the sender), each covering the one before.
/// Triples past [`MAX_TRIPLES`] are ignored (not checked).
pub fn parse(payload: &[u8]) -> WireResult<Vec<Triple>> {
    const WHAT: &str = "HSEP";
    if payload.is_empty() {
        return Err(WireError::Truncated { what: WHAT });
    }
    if payload.len() % TRIPLE_LEN != 0 {
        return Err(WireError::BadLength {
            what: WHAT,
            expected: payload.len() / TRIPLE_LEN * TRIPLE_LEN + TRIPLE_LEN,
            got: payload.len(),
        });
    }
    let u64le = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let triples: Vec<Triple> = payload
        .chunks_exact(TRIPLE_LEN)
        .take(MAX_TRIPLES)
        .map(|t| Triple {
            hosts: u64le(&t[..8]),
            files: u64le(&t[8..16]),
            kib: u64le(&t[16..]),
        })
        .collect();
    if triples[0].hosts != 1 {
        return Err(WireError::Malformed {
            what: WHAT,
            why: "the first triple does not count one host",
        });
    }
    if triples.windows(2).any(|w| !w[1].covers(w[0])) {
        return Err(WireError::Malformed {
            what: WHAT,
            why: "a triple counts less than the one before",
        });
    }
    Ok(triples)
}

/// Appends the payload of `triples` to `out`.
pub fn encode(triples: &[Triple], out: &mut BytesMut) {
    out.reserve(triples.len() * TRIPLE_LEN);
    for t in triples {
        out.put_u64_le(t.hosts);
        out.put_u64_le(t.files);
        out.put_u64_le(t.kib);
    }
}

/// `triples` without the trailing ones equal to the one before them (they
/// say nothing new: a reader repeats the last triple it got), as
/// gtk-gnutella sends them.
pub fn trimmed(triples: &[Triple]) -> &[Triple] {
    let mut n = triples.len();
    while n > 1 && triples[n - 1] == triples[n - 2] {
        n -= 1;
    }
    &triples[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER
            .decode(s.replace(' ', "").as_bytes())
            .expect("hex")
    }

    fn t(hosts: u64, files: u64, kib: u64) -> Triple {
        Triple { hosts, files, kib }
    }

    #[test]
    fn gtk_gnutellas_captured_messages() {
        // hsep-gtk in the captures: a3 -> a1 (one triple, a leaf's), and
        // a1 -> a3 (two triples).
        let one = hex("01000000000000000200000000000000 0000000000000000");
        assert_eq!(parse(&one), Ok(vec![t(1, 2, 0)]));
        let two = hex("0100000000000000 0100000000000000 0000000000000000 \
             0200000000000000 0100000000000000 0000000000000000");
        let got = parse(&two).expect("good");
        assert_eq!(got, [t(1, 1, 0), t(2, 1, 0)]);
        let mut out = BytesMut::new();
        encode(&got, &mut out);
        assert_eq!(&out[..], &two[..]);
    }

    #[test]
    fn constructed_vector() {
        // constructed.json `hsep`: (1,10,2048),(5,100,20480).
        let want = [t(1, 10, 2048), t(5, 100, 20480)];
        let mut out = BytesMut::new();
        encode(&want, &mut out);
        assert_eq!(parse(&out), Ok(want.to_vec()));
        assert_eq!(out.len(), 48);
    }

    #[test]
    fn bad_payloads_are_refused_and_long_ones_cut() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0; 25]).is_err());
        let mut out = BytesMut::new();
        encode(&[t(2, 1, 1)], &mut out);
        assert!(parse(&out).is_err(), "first triple must count one host");
        let mut out = BytesMut::new();
        encode(&[t(1, 5, 5), t(3, 4, 9)], &mut out);
        assert!(parse(&out).is_err(), "files went down");
        let many: Vec<Triple> = (1..=15).map(|i| t(i, i, i)).collect();
        let mut out = BytesMut::new();
        encode(&many, &mut out);
        assert_eq!(parse(&out).expect("good").len(), MAX_TRIPLES);
        let huge = [t(1, u64::MAX, u64::MAX), t(u64::MAX, u64::MAX, u64::MAX)];
        let mut out = BytesMut::new();
        encode(&huge, &mut out);
        assert_eq!(parse(&out), Ok(huge.to_vec()));
    }

    #[test]
    fn trailing_repeats_are_trimmed() {
        let a = [t(1, 1, 0), t(2, 1, 0), t(2, 1, 0), t(2, 1, 0)];
        assert_eq!(trimmed(&a), &a[..2]);
        assert_eq!(trimmed(&a[..1]), &a[..1]);
        let same = [t(1, 0, 0); 4];
        assert_eq!(trimmed(&same), &same[..1]);
        assert!(trimmed(&[]).is_empty());
    }
}
