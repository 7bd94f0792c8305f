//! Browse host: what a `GET /` asking for `application/x-gnutella-packets`
//! means, and the answer's body, a stream of whole descriptors (QueryHits
//! describing every shared file), optionally zlib-deflated. No I/O: the
//! [`Reader`] is fed the body's bytes as they come and hands back the hits.
//! See `protocol-spec/browse.md`.

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};

use crate::wire::{
    Frame, Function, Ggep, GgepExt, Guid, HEADER_LEN, Header, Hops, Message, QueryHit, Ttl,
};

/// The media type of a browse answer (and of what a browser asks for).
pub const PACKETS: &str = "application/x-gnutella-packets";
/// What `X-Features` says of a servent that can be browsed.
pub const FEATURE: &str = "browse/1.0";
/// GGEP extension of a hit's trailer saying "this host can be browsed".
pub const GGEP_BH: &str = "BH";

/// `ggep` with the `BH` flag added (a block holding only it when `None`).
pub fn with_bh(ggep: Option<Ggep>) -> Ggep {
    let mut g = ggep.unwrap_or_default();
    if g.get(GGEP_BH).is_none() {
        g.exts.push(GgepExt::flag(GGEP_BH));
    }
    g
}

/// What a `GET /` asks for, by its `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Gnutella descriptors (`application/x-gnutella-packets` listed).
    Packets,
    /// Anything else, or no `Accept` at all: not a browse.
    Other,
}

/// Reads an `Accept` value: a browse when it lists our media type (with any
/// parameters, any case, among other types as gtk-gnutella sends
/// `application/x-gnutella-packets, application/x-gnutella2`).
pub fn wanted(accept: Option<&str>) -> Wanted {
    let Some(a) = accept else {
        return Wanted::Other;
    };
    let listed = a.split(',').any(|t| {
        let ty = t.split(';').next().unwrap_or("").trim();
        ty.eq_ignore_ascii_case(PACKETS)
    });
    if listed {
        Wanted::Packets
    } else {
        Wanted::Other
    }
}

/// Whether an `Accept-Encoding` value allows `deflate` (not refused with
/// `q=0`).
pub fn accepts_deflate(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|a| {
        a.split(',').any(|t| {
            let mut parts = t.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            coding.eq_ignore_ascii_case("deflate") && !refused
        })
    })
}

/// Encodes hits as a browse body: each a whole descriptor with an all-zero
/// MUID, TTL 1 and hops 0, as gtk-gnutella sends them. Hits too large to
/// encode are left out; the number left out is returned with the bytes.
pub fn encode_stream(hits: &[QueryHit]) -> (BytesMut, usize) {
    let mut out = BytesMut::new();
    let mut skipped = 0;
    for h in hits {
        let m = Message::QueryHit(h.clone());
        if m.encode_frame(Guid([0; 16]), Ttl(1), Hops(0), &mut out)
            .is_err()
        {
            skipped += 1;
        }
    }
    (out, skipped)
}

/// How much a [`Reader`] takes before it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Body bytes (after inflating) at most.
    pub max_bytes: usize,
    /// Results (files) at most, over all hits.
    pub max_results: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 16 << 20,
            max_results: 20_000,
        }
    }
}

/// Why a browse body could not be read (on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrowseError {
    #[error("the deflated body is corrupt")]
    Inflate,
    #[error("a descriptor claims {0} bytes of payload, more than any may have")]
    TooLarge(u32),
    #[error("the body is longer than the {0} bytes allowed")]
    TooLong(usize),
    #[error("a query hit is malformed: {0}")]
    BadHit(String),
    #[error("the body ends inside a descriptor")]
    Truncated,
}

/// Compressed bytes inflated at a time; the inflated bytes are bounded by
/// [`Limits::max_bytes`], checked after each step.
const INFLATE_STEP: usize = 32 * 1024;

/// Reads a browse body fed in pieces: inflates it when the answer was
/// deflated, cuts it into descriptors by their headers' lengths and parses
/// the QueryHits among them. Other descriptors are counted and skipped. Memory
/// is bounded by one descriptor plus one inflate step; everything by `limits`.
pub struct Reader {
    inflate: Option<Decompress>,
    buf: BytesMut,
    /// Output of one inflate step.
    scratch: Vec<u8>,
    limits: Limits,
    /// Inflated (or plain) bytes taken so far.
    taken: usize,
    results: usize,
    /// Descriptors that were not QueryHits.
    pub skipped: u64,
    /// The body went past a limit: the rest is not read.
    pub stopped: bool,
    failed: Option<BrowseError>,
}

impl Reader {
    /// A reader of a body that is deflated (zlib) when `deflated` is set.
    pub fn new(deflated: bool, limits: Limits) -> Reader {
        Reader {
            inflate: deflated.then(super::zlib_inflater),
            buf: BytesMut::new(),
            scratch: Vec::new(),
            limits,
            taken: 0,
            results: 0,
            skipped: 0,
            stopped: false,
            failed: None,
        }
    }

    /// Takes the next piece of the body and returns the hits it completed (at
    /// most up to the result limit). After an error nothing more is read.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<Vec<QueryHit>, BrowseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut hits = Vec::new();
        // Inflated output left inside the decompressor (the last step filled
        // its room): taken before more input.
        let mut pending = false;
        while (!piece.is_empty() || pending) && !self.stopped {
            pending = false;
            let used = match self.inflate.as_mut() {
                None => {
                    let room = self.limits.max_bytes - self.taken;
                    let n = piece.len().min(room);
                    self.buf.extend_from_slice(&piece[..n]);
                    self.taken += n;
                    if n < piece.len() {
                        self.stopped = true;
                    }
                    n
                }
                Some(z) => {
                    let input = &piece[..piece.len().min(INFLATE_STEP)];
                    let room = (self.limits.max_bytes - self.taken).min(4 * INFLATE_STEP);
                    let before_in = z.total_in();
                    self.scratch.clear();
                    self.scratch.reserve(room);
                    let status = z.decompress_vec(input, &mut self.scratch, FlushDecompress::None);
                    let used = (z.total_in() - before_in) as usize;
                    let out = self.scratch.len().min(room);
                    self.buf.extend_from_slice(&self.scratch[..out]);
                    self.taken += out;
                    if self.taken >= self.limits.max_bytes {
                        self.stopped = true;
                    }
                    match status {
                        // Whatever follows the zlib stream is not ours.
                        Ok(Status::StreamEnd) => used.max(piece.len()),
                        Ok(_) if used == 0 && out == 0 && !input.is_empty() => {
                            // No progress with input and room: a corrupt stream.
                            return Err(self.fail(BrowseError::Inflate));
                        }
                        Ok(_) => {
                            pending = out == room;
                            used
                        }
                        Err(_) => return Err(self.fail(BrowseError::Inflate)),
                    }
                }
            };
            piece = &piece[used..];
            self.parse(&mut hits)?;
        }
        if self.stopped {
            self.parse(&mut hits)?;
        }
        Ok(hits)
    }

    /// The body ended: an error when it stopped inside a descriptor (unless a
    /// limit stopped it).
    pub fn finish(&mut self) -> Result<(), BrowseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.stopped && !self.buf.is_empty() {
            return Err(self.fail(BrowseError::Truncated));
        }
        Ok(())
    }

    /// Results read so far.
    pub fn results(&self) -> usize {
        self.results
    }

    fn fail(&mut self, e: BrowseError) -> BrowseError {
        self.failed = Some(e.clone());
        self.stopped = true;
        e
    }

    /// Cuts whole descriptors off the buffer.
    fn parse(&mut self, hits: &mut Vec<QueryHit>) -> Result<(), BrowseError> {
        while let Some(h) = Header::parse_prefix(&self.buf) {
            if h.payload_len > crate::wire::MAX_PAYLOAD {
                return Err(self.fail(BrowseError::TooLarge(h.payload_len)));
            }
            let len = HEADER_LEN + h.payload_len as usize;
            if self.buf.len() < len {
                break;
            }
            let mut frame = self.buf.split_to(len);
            frame.advance(HEADER_LEN);
            let frame = Frame {
                header: h,
                payload: frame.freeze(),
            };
            if h.function != Function::QueryHit {
                self.skipped += 1;
                continue;
            }
            let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
            let hit = match QueryHit::parse(&frame.payload, &mut budget) {
                Ok(hit) => hit,
                Err(e) => return Err(self.fail(BrowseError::BadHit(e.to_string()))),
            };
            let room = self.limits.max_results - self.results;
            if hit.results.len() >= room {
                let mut hit = hit;
                hit.results.truncate(room);
                self.results += hit.results.len();
                self.stopped = true;
                self.buf.clear();
                if !hit.results.is_empty() {
                    hits.push(hit);
                }
                return Ok(());
            }
            self.results += hit.results.len();
            hits.push(hit);
        }
        if self.stopped && self.taken >= self.limits.max_bytes {
            // A descriptor cut by the byte limit is not read.
            self.buf.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{HitResult, OpenDataFlags, Trailer, TrailerArea};
    use flate2::{Compression, write::ZlibEncoder};
    use std::io::Write;

    const GTK: &[u8] = include_bytes!("../../tests/fixtures/browse/gtk.body");
    const LIMEWIRE: &[u8] = include_bytes!("../../tests/fixtures/browse/limewire.body");

    fn read_all(
        body: &[u8],
        deflated: bool,
        piece: usize,
        limits: Limits,
    ) -> (Vec<QueryHit>, Reader) {
        let mut r = Reader::new(deflated, limits);
        let mut hits = Vec::new();
        for p in body.chunks(piece.max(1)) {
            hits.extend(r.feed(p).expect("a good body"));
        }
        (hits, r)
    }

    fn names(hits: &[QueryHit]) -> Vec<String> {
        hits.iter()
            .flat_map(|h| h.results.iter().map(|r| r.name_lossy()))
            .collect()
    }

    #[test]
    fn accept_headers_as_peers_send_them() {
        assert_eq!(wanted(Some(PACKETS)), Wanted::Packets);
        assert_eq!(
            wanted(Some(
                "application/x-gnutella-packets, application/x-gnutella2"
            )),
            Wanted::Packets
        );
        assert_eq!(
            wanted(Some("text/html, Application/X-Gnutella-Packets;q=0.5")),
            Wanted::Packets
        );
        assert_eq!(wanted(Some("text/html,*/*")), Wanted::Other);
        assert_eq!(wanted(None), Wanted::Other);
        assert!(accepts_deflate(Some("deflate")));
        assert!(accepts_deflate(Some("gzip, Deflate")));
        assert!(!accepts_deflate(Some("gzip")));
        assert!(!accepts_deflate(Some("deflate;q=0")));
        assert!(!accepts_deflate(None));
    }

    #[test]
    fn gtk_gnutellas_captured_answer() {
        for piece in [1, 7, 1000] {
            let (hits, mut r) = read_all(GTK, false, piece, Limits::default());
            r.finish().expect("whole");
            assert_eq!(names(&hits), ["udpalpha_three.txt", "udpbravo_three.txt"]);
            let h = &hits[0];
            assert_eq!(h.port, 6346);
            assert_eq!(h.ip, Ipv4Addr::new(11, 0, 0, 3));
            assert_eq!(
                h.servent.to_hex().to_lowercase(),
                "56343102cbb2572c85db7e95b7f982ad"
            );
            let t = h.qhd().expect("trailer");
            assert_eq!(&t.vendor, b"GTKG");
            assert!(
                t.private
                    .ggep
                    .as_ref()
                    .and_then(|g| g.get(GGEP_BH))
                    .is_some()
            );
        }
    }

    #[test]
    fn limewires_captured_answer() {
        let (hits, mut r) = read_all(LIMEWIRE, false, 64, Limits::default());
        r.finish().expect("whole");
        assert_eq!(
            names(&hits),
            [
                "servent_delta_tune.mp3",
                "udpcharlie_lime.mp3",
                "servent_echo_leafsong.mp3",
                "servent_alpha_song.mp3"
            ]
        );
        assert_eq!(&hits[0].qhd().expect("trailer").vendor, b"LIME");
        // LimeWire answered an Accept-Encoding: deflate request without
        // compression: the same layout.
        let asked = include_bytes!("../../tests/fixtures/browse/limewire-asked-deflate.body");
        let (hits, mut r) = read_all(asked, false, 5, Limits::default());
        r.finish().expect("whole");
        assert_eq!(names(&hits).len(), 4);
    }

    use std::net::Ipv4Addr;

    fn ours(n: u32) -> Vec<QueryHit> {
        (0..n)
            .map(|i| QueryHit {
                port: 6346,
                ip: Ipv4Addr::LOCALHOST,
                speed: 0,
                results: vec![HitResult::new(i + 1, 10, &format!("file {i}.ogg"), None)],
                trailer: TrailerArea::Qhd(Trailer::new(*b"SRVT", OpenDataFlags::default(), None)),
                servent: Guid([1; 16]),
            })
            .collect()
    }

    #[test]
    fn our_stream_round_trips_plain_and_deflated() {
        let sent = ours(300);
        let (body, skipped) = encode_stream(&sent);
        assert_eq!(skipped, 0);
        // Every descriptor: MUID zero, TTL 1, hops 0.
        let h = Header::parse_prefix(&body).expect("a header");
        assert_eq!((h.guid, h.ttl, h.hops), (Guid([0; 16]), Ttl(1), Hops(0)));
        let (hits, mut r) = read_all(&body, false, 333, Limits::default());
        r.finish().expect("whole");
        assert_eq!(hits, sent);
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(&body).expect("in memory");
        let deflated = z.finish().expect("in memory");
        for piece in [1, 100, 1 << 20] {
            let (hits, mut r) = read_all(&deflated, true, piece, Limits::default());
            r.finish().expect("whole");
            assert_eq!(hits, sent);
        }
    }

    #[test]
    fn limits_stop_the_reader() {
        let (body, _) = encode_stream(&ours(50));
        let (hits, r) = read_all(
            &body,
            false,
            100,
            Limits {
                max_bytes: usize::MAX,
                max_results: 7,
            },
        );
        assert_eq!(names(&hits).len(), 7);
        assert!(r.stopped);
        let (hits, mut r) = read_all(
            &body,
            false,
            100,
            Limits {
                max_bytes: body.len() / 2,
                max_results: usize::MAX,
            },
        );
        assert!(r.stopped && r.finish().is_ok());
        assert!(!hits.is_empty() && hits.len() < 50);
        // A small deflated body that inflates hugely stops at the byte limit.
        let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
        z.write_all(&vec![0u8; 8 << 20]).expect("in memory");
        let bomb = z.finish().expect("in memory");
        let mut r = Reader::new(
            true,
            Limits {
                max_bytes: 1 << 20,
                max_results: usize::MAX,
            },
        );
        // All-zero bytes are headers of zero-length pings: skipped, never
        // buffered beyond one descriptor.
        let _ = r.feed(&bomb);
        assert!(r.stopped);
    }

    #[test]
    fn bad_bodies_give_clear_errors() {
        let (body, _) = encode_stream(&ours(3));
        let mut r = Reader::new(false, Limits::default());
        r.feed(&body[..body.len() - 1]).expect("so far so good");
        assert_eq!(r.finish(), Err(BrowseError::Truncated));
        let mut r = Reader::new(true, Limits::default());
        assert_eq!(r.feed(b"not zlib at all"), Err(BrowseError::Inflate));
        assert_eq!(r.feed(b"more"), Err(BrowseError::Inflate));
        let mut big = vec![0u8; 23];
        big[16] = 0x81;
        big[19..23].copy_from_slice(&0x10000u32.to_le_bytes());
        let mut r = Reader::new(false, Limits::default());
        assert_eq!(r.feed(&big), Err(BrowseError::TooLarge(0x10000)));
        let mut bad = vec![0u8; 23];
        bad[16] = 0x81;
        bad[19] = 3;
        bad.extend_from_slice(&[1, 2, 3]);
        let mut r = Reader::new(false, Limits::default());
        assert!(matches!(r.feed(&bad), Err(BrowseError::BadHit(_))));
    }
}
