//! Our vendor message `SRVT/1v2` (and `SRVT/1v1` before it): a leaf offers its ultrapeer the full list of
//! the files it shares, so the ultrapeer can answer queries for it (QRP alone
//! only tells it which keywords may match). See `protocol-spec/library-offer.md`.
//!
//! The list is sent in chunks, each a vendor message body:
//!
//! ```text
//! flags   u8      bit 0: first chunk (forget what was offered before)
//!                 bit 1: last chunk (the list is complete)
//!                 bit 2: the leaf accepts no connections (downloads need a Push)
//! count   u16 LE  entries in this chunk
//! entry:  index   u32 LE   the leaf's file index (for /get/<index>/<name>)
//!         size    u64 LE
//!         hashes  u8       bit 0: a SHA-1 follows; bit 1: an FTH follows (sent from
//!                          version 2 on); other bits must be 0
//!         sha1    20 bytes (only when bit 0 is set)
//!         fth     20 bytes, the FastTrack hash (only when bit 1 is set)
//!         len     u16 LE   name length in bytes, 1..=MAX_NAME
//!         name    UTF-8, no NUL
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::fasttrack::hash::Fth;
use crate::wire::error::{WireError, WireResult};
use crate::wire::huge::Sha1Urn;
use crate::wire::vendor::VendorMsg;

/// Our vendor code.
pub const VENDOR: [u8; 4] = *b"SRVT";
/// The selector of the library offer.
pub const SELECTOR: u16 = 1;
/// The version we send: 2 adds each file's FTH, so an ultrapeer answering for
/// the leaf gives FastTrack users hits they can verify. Version 1 bodies (no
/// FTH) are still read.
pub const VERSION: u16 = 2;
/// The oldest version read.
pub const OLDEST_VERSION: u16 = 1;
/// Longest file name carried.
pub const MAX_NAME: usize = 1024;
/// Largest chunk body we send (well inside every peer's message size limit).
pub const CHUNK_BYTES: usize = 16 * 1024;

const FIRST: u8 = 0x01;
const LAST: u8 = 0x02;
const FIREWALLED: u8 = 0x04;
const HAS_SHA1: u8 = 0x01;
const HAS_FTH: u8 = 0x02;

/// One shared file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedFile {
    pub index: u32,
    pub size: u64,
    pub sha1: Option<Sha1Urn>,
    /// The FastTrack hash (version 2).
    pub fth: Option<Fth>,
    pub name: String,
}

/// One chunk of an offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferChunk {
    pub first: bool,
    pub last: bool,
    /// The leaf accepts no connections.
    pub firewalled: bool,
    pub files: Vec<OfferedFile>,
}

impl OfferChunk {
    /// Whether a vendor message is a library offer.
    pub fn is_offer(m: &VendorMsg) -> bool {
        m.is(&VENDOR, SELECTOR) && (OLDEST_VERSION..=VERSION).contains(&m.version)
    }

    /// Reads a chunk from a vendor message body.
    pub fn parse(body: &[u8]) -> WireResult<OfferChunk> {
        let mut b = body;
        let need = |b: &[u8], n: usize| {
            if b.len() < n {
                Err(WireError::Truncated {
                    what: "library offer",
                })
            } else {
                Ok(())
            }
        };
        need(b, 3)?;
        let flags = b.get_u8();
        let count = b.get_u16_le() as usize;
        // Every entry takes at least 16 bytes: a count the body cannot hold is
        // refused before anything is allocated for it.
        if count * 16 > b.len() {
            return Err(WireError::Truncated {
                what: "library offer",
            });
        }
        let mut files = Vec::with_capacity(count);
        for _ in 0..count {
            need(b, 13)?;
            let index = b.get_u32_le();
            let size = b.get_u64_le();
            let hashes = b.get_u8();
            if hashes & !(HAS_SHA1 | HAS_FTH) != 0 {
                return Err(WireError::BadValue {
                    what: "library offer URN flag",
                    value: hashes as u64,
                });
            }
            let read_hash = |b: &mut &[u8]| -> WireResult<[u8; 20]> {
                need(b, 20)?;
                let mut h = [0u8; 20];
                b.copy_to_slice(&mut h);
                Ok(h)
            };
            let sha1 = match hashes & HAS_SHA1 {
                0 => None,
                _ => Some(Sha1Urn(read_hash(&mut b)?)),
            };
            let fth = match hashes & HAS_FTH {
                0 => None,
                _ => Some(Fth(read_hash(&mut b)?)),
            };
            need(b, 2)?;
            let len = b.get_u16_le() as usize;
            if len == 0 || len > MAX_NAME {
                return Err(WireError::BadValue {
                    what: "library offer name length",
                    value: len as u64,
                });
            }
            need(b, len)?;
            let name = std::str::from_utf8(&b[..len]).map_err(|_| WireError::Malformed {
                what: "library offer name",
                why: "not UTF-8",
            })?;
            if name.contains('\0') {
                return Err(WireError::Malformed {
                    what: "library offer name",
                    why: "contains NUL",
                });
            }
            let name = name.to_string();
            b.advance(len);
            files.push(OfferedFile {
                index,
                size,
                sha1,
                fth,
                name,
            });
        }
        if !b.is_empty() {
            return Err(WireError::TrailingBytes {
                what: "library offer",
                count: b.len(),
            });
        }
        Ok(OfferChunk {
            first: flags & FIRST != 0,
            last: flags & LAST != 0,
            firewalled: flags & FIREWALLED != 0,
            files,
        })
    }

    /// Cuts a whole library into vendor messages of at most [`CHUNK_BYTES`] of
    /// entries each (at least one message, even for no files). Names longer than
    /// [`MAX_NAME`] or holding NUL are left out.
    pub fn encode_all(files: &[OfferedFile], firewalled: bool) -> Vec<VendorMsg> {
        let usable = files
            .iter()
            .filter(|f| !f.name.is_empty() && f.name.len() <= MAX_NAME && !f.name.contains('\0'));
        let mut chunks: Vec<Vec<&OfferedFile>> = vec![Vec::new()];
        let mut bytes = 0;
        for f in usable {
            let len = 16 + f.sha1.map_or(0, |_| 20) + f.fth.map_or(0, |_| 20) + f.name.len();
            let current = chunks.last_mut().expect("one chunk at least");
            if !current.is_empty()
                && (bytes + len > CHUNK_BYTES || current.len() == u16::MAX as usize)
            {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += len;
            chunks.last_mut().expect("one chunk at least").push(f);
        }
        let n = chunks.len();
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, files)| {
                let mut body = BytesMut::new();
                let mut flags = if firewalled { FIREWALLED } else { 0 };
                if i == 0 {
                    flags |= FIRST;
                }
                if i + 1 == n {
                    flags |= LAST;
                }
                body.put_u8(flags);
                body.put_u16_le(files.len() as u16);
                for f in files {
                    body.put_u32_le(f.index);
                    body.put_u64_le(f.size);
                    let hashes = if f.sha1.is_some() { HAS_SHA1 } else { 0 }
                        | if f.fth.is_some() { HAS_FTH } else { 0 };
                    body.put_u8(hashes);
                    if let Some(u) = &f.sha1 {
                        body.put_slice(&u.0);
                    }
                    if let Some(h) = &f.fth {
                        body.put_slice(&h.0);
                    }
                    body.put_u16_le(f.name.len() as u16);
                    body.put_slice(f.name.as_bytes());
                }
                VendorMsg {
                    vendor: VENDOR,
                    selector: SELECTOR,
                    version: VERSION,
                    body: Bytes::from(body),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(i: u32, name: &str, urn: bool) -> OfferedFile {
        OfferedFile {
            index: i,
            size: i as u64 * 1000 + (1 << 33),
            sha1: urn.then_some(Sha1Urn([i as u8; 20])),
            fth: (i % 2 == 0).then_some(Fth([i as u8 ^ 0x5a; 20])),
            name: name.to_string(),
        }
    }

    #[test]
    fn a_library_round_trips_through_its_chunks() {
        let files: Vec<OfferedFile> = (0..2000)
            .map(|i| file(i, &format!("file number {i} é.mp3"), i % 3 == 0))
            .collect();
        let msgs = OfferChunk::encode_all(&files, true);
        assert!(msgs.len() > 1, "split into chunks");
        let mut back = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(OfferChunk::is_offer(m));
            assert!(m.body.len() <= CHUNK_BYTES + 3);
            let c = OfferChunk::parse(&m.body).unwrap();
            assert_eq!(c.first, i == 0);
            assert_eq!(c.last, i + 1 == msgs.len());
            assert!(c.firewalled);
            back.extend(c.files);
        }
        assert_eq!(back, files);
    }

    #[test]
    fn the_documented_example() {
        let f = OfferedFile {
            index: 7,
            size: 5,
            sha1: None,
            fth: None,
            name: "a.txt".to_string(),
        };
        let msgs = OfferChunk::encode_all(std::slice::from_ref(&f), false);
        assert_eq!(
            &msgs[0].body[..],
            b"\x03\x01\x00\x07\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x05\x00a.txt"
        );
    }

    #[test]
    fn version_2_carries_the_fth_and_version_1_bodies_still_read() {
        let f = OfferedFile {
            index: 7,
            size: 5,
            sha1: Some(Sha1Urn([0x11; 20])),
            fth: Some(Fth([0x22; 20])),
            name: "a.txt".to_string(),
        };
        let msgs = OfferChunk::encode_all(std::slice::from_ref(&f), false);
        assert_eq!(msgs[0].version, 2);
        let mut want = b"\x03\x01\x00\x07\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x03".to_vec();
        want.extend_from_slice(&[0x11; 20]);
        want.extend_from_slice(&[0x22; 20]);
        want.extend_from_slice(b"\x05\x00a.txt");
        assert_eq!(&msgs[0].body[..], &want[..]);
        assert_eq!(OfferChunk::parse(&msgs[0].body).unwrap().files, vec![f]);
        // What a version 1 sender wrote: a SHA-1 flag of 1, no FTH.
        let mut v1 = b"\x03\x01\x00\x07\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00\x01".to_vec();
        v1.extend_from_slice(&[0x11; 20]);
        v1.extend_from_slice(b"\x05\x00a.txt");
        let back = OfferChunk::parse(&v1).unwrap();
        assert_eq!(back.files[0].sha1, Some(Sha1Urn([0x11; 20])));
        assert_eq!(back.files[0].fth, None);
        let mut m = msgs[0].clone();
        for (version, offer) in [(0, false), (1, true), (2, true), (3, false)] {
            m.version = version;
            assert_eq!(OfferChunk::is_offer(&m), offer, "version {version}");
        }
    }

    #[test]
    fn an_empty_library_is_one_first_and_last_chunk() {
        let msgs = OfferChunk::encode_all(&[], false);
        assert_eq!(msgs.len(), 1);
        let c = OfferChunk::parse(&msgs[0].body).unwrap();
        assert!(c.first && c.last && !c.firewalled && c.files.is_empty());
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        let good = OfferChunk::encode_all(&[file(1, "a", true), file(2, "bb", false)], false);
        let body = &good[0].body;
        for cut in 0..body.len() {
            assert!(OfferChunk::parse(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = body.to_vec();
        lying[1] = 0xFF;
        lying[2] = 0xFF;
        assert!(OfferChunk::parse(&lying).is_err(), "count beyond the body");
        let mut bad_flag = body.to_vec();
        bad_flag[3 + 12] = 4;
        assert!(OfferChunk::parse(&bad_flag).is_err());
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert!(OfferChunk::parse(&trailing).is_err());
    }
}
