//! Magnet links: `magnet:?xt=urn:sha1:<base32>&dn=<name>&xs=<url>&xl=<size>`.

use crate::wire::http::{HttpUrl, percent_decode};
use crate::wire::huge::Sha1Urn;

/// Sources a magnet may list that we keep; more are ignored.
pub const MAX_SOURCES: usize = 32;

/// What a magnet link says about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Magnet {
    /// The SHA-1 the file must have (`xt=urn:sha1:` or `urn:bitprint:`).
    pub urn: Sha1Urn,
    /// The display name (`dn`).
    pub name: Option<String>,
    /// Exact length (`xl`).
    pub size: Option<u64>,
    /// HTTP sources (`xs`, and `as`).
    pub sources: Vec<HttpUrl>,
}

/// Why a magnet link was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link (it must start with magnet:?)")]
    NotMagnet,
    #[error("the magnet link has no urn:sha1: exact topic (xt)")]
    NoSha1,
    #[error("bad escape in the magnet link's {0} parameter")]
    BadEscape(String),
}

/// A parameter value: `%XX` escapes and `+` for a space.
fn value(key: &str, v: &str) -> Result<String, MagnetError> {
    percent_decode(&v.replace('+', " ")).ok_or_else(|| MagnetError::BadEscape(key.to_string()))
}

impl Magnet {
    /// Parses a magnet link. Numbered keys (`xt.1`, `xs.2`) count as their base
    /// key; unknown keys and sources that are not `http://` URLs are ignored.
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        let rest = s
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &s[8..])
            .ok_or(MagnetError::NotMagnet)?;
        let mut urn = None;
        let mut name = None;
        let mut size = None;
        let mut sources = Vec::new();
        for pair in rest.split('&') {
            let Some((k, v)) = pair.split_once('=') else {
                continue;
            };
            let key = k.split('.').next().unwrap_or(k).to_ascii_lowercase();
            match key.as_str() {
                "xt" => {
                    // The xt value is a URN, which never needs `+` as a space.
                    let v = percent_decode(v).ok_or(MagnetError::BadEscape(key.clone()))?;
                    if let Ok(u) = Sha1Urn::parse(v.as_bytes()) {
                        urn.get_or_insert(u);
                    }
                }
                "dn" => name = Some(value(&key, v)?),
                "xl" => size = v.parse().ok(),
                "xs" | "as" => {
                    let v = percent_decode(v).ok_or(MagnetError::BadEscape(key.clone()))?;
                    if let Some(u) = HttpUrl::parse(&v) {
                        if sources.len() < MAX_SOURCES {
                            sources.push(u);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Magnet {
            urn: urn.ok_or(MagnetError::NoSha1)?,
            name,
            size,
            sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnet_fields() {
        let m = Magnet::parse(
            "magnet:?xt=urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5&dn=My+Song%21.mp3&xl=3\
             &xs=http%3A%2F%2F127.0.0.1%3A6346%2Furi-res%2FN2R%3Furn%3Asha1%3AVGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\
             &xs.2=http://10.0.0.1:7000/get/1/a.txt&xs=ftp://x/y&foo=bar&junk",
        )
        .unwrap();
        assert_eq!(m.urn, Sha1Urn::digest(b"abc"));
        assert_eq!(m.name.as_deref(), Some("My Song!.mp3"));
        assert_eq!(m.size, Some(3));
        assert_eq!(m.sources.len(), 2);
        assert_eq!(m.sources[0].port, 6346);
        assert_eq!(m.sources[1].target, "/get/1/a.txt");
        assert_eq!(Magnet::parse("magnet:?dn=x"), Err(MagnetError::NoSha1));
        assert_eq!(Magnet::parse("http://x"), Err(MagnetError::NotMagnet));
        assert!(matches!(
            Magnet::parse("magnet:?xt=urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5&dn=%zz"),
            Err(MagnetError::BadEscape(_))
        ));
    }
}
