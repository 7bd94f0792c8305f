//! HUGE: SHA-1 URNs (`urn:sha1:` + 32 base32 characters).

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use sha1::{Digest, Sha1};

/// A file's SHA-1 digest, the identity used by `urn:sha1:` URNs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha1Urn(pub [u8; 20]);

/// Why a URN string was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrnError {
    #[error("not a urn:sha1: or urn:bitprint: URN")]
    NotSha1,
    #[error("bad base32 digest")]
    BadBase32,
}

impl Sha1Urn {
    /// The SHA-1 of `data`.
    pub fn digest(data: &[u8]) -> Sha1Urn {
        Sha1Urn(Sha1::digest(data).into())
    }

    /// The 32-character upper-case base32 form of the digest.
    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// Decodes 32 base32 characters (either case).
    pub fn from_base32(s: &[u8]) -> Result<Sha1Urn, UrnError> {
        if s.len() != 32 {
            return Err(UrnError::BadBase32);
        }
        let mut upper = [0u8; 32];
        for (d, c) in upper.iter_mut().zip(s) {
            *d = c.to_ascii_uppercase();
        }
        let mut out = [0u8; 20];
        BASE32_NOPAD
            .decode_mut(&upper, &mut out)
            .map_err(|_| UrnError::BadBase32)?;
        Ok(Sha1Urn(out))
    }

    /// Parses `urn:sha1:<base32>` or `urn:bitprint:<sha1 base32>.<tiger base32>`
    /// (reduced to its SHA-1 part). The `urn:` prefix and namespace are matched
    /// without regard to case.
    pub fn parse(s: &[u8]) -> Result<Sha1Urn, UrnError> {
        let rest = strip_prefix_ci(s, b"urn:").ok_or(UrnError::NotSha1)?;
        if let Some(b32) = strip_prefix_ci(rest, b"sha1:") {
            Sha1Urn::from_base32(b32)
        } else if let Some(bp) = strip_prefix_ci(rest, b"bitprint:") {
            let sha = bp.get(..32).ok_or(UrnError::BadBase32)?;
            if bp.len() != 32 + 1 + 39 || bp[32] != b'.' {
                return Err(UrnError::BadBase32);
            }
            Sha1Urn::from_base32(sha)
        } else {
            Err(UrnError::NotSha1)
        }
    }
}

impl fmt::Display for Sha1Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "urn:sha1:{}", self.base32())
    }
}

impl fmt::Debug for Sha1Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Sha1Urn {
    type Err = UrnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha1Urn::parse(s.as_bytes())
    }
}

/// `s` without `prefix`, if `s` starts with it ignoring ASCII case.
pub fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_vectors() {
        assert_eq!(BASE32_NOPAD.encode(&[0x0F, 0xF5]), "B72Q");
        assert_eq!(
            Sha1Urn::digest(b"").base32(),
            "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"
        );
        assert_eq!(
            Sha1Urn::digest(b"abc").to_string(),
            "urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5"
        );
    }

    #[test]
    fn parse_forms() {
        let abc = Sha1Urn::digest(b"abc");
        for s in [
            "urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
            "URN:SHA1:vgmt4nsha2awvor6evyxqugcnsonbwe5",
            "urn:bitprint:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(s.parse::<Sha1Urn>(), Ok(abc), "{s}");
        }
        for s in [
            "urn:",
            "urn:sha1:",
            "urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE",
            "urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE1",
            "urn:md5:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
            "sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5",
        ] {
            assert!(s.parse::<Sha1Urn>().is_err(), "{s}");
        }
    }
}
