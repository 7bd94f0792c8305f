//! QueryHit (0x81): results for a Query, routed back along the Query's path.
//!
//! Layout: result count, port, IPv4, speed, the result records, an optional
//! trailer (vendor code, open data, private area), and always the responder's
//! servent GUID in the last 16 bytes. The result set has no length field, so the
//! trailer is whatever lies between the last record and the GUID.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u32, le_u16, le_u32};

use crate::fasttrack::hash::Fth;
use crate::wire::error::{EncodeError, WireError, WireResult};
use crate::wire::ext::{AreaEnd, ExtArea, ExtAreaView, ExtItem};
use crate::wire::ggep::{self, DecodedValues, Ggep, GgepExt, GgepView};
use crate::wire::guid::Guid;
use crate::wire::huge::Sha1Urn;
use crate::wire::ipv6;
use crate::wire::message::fields;

/// Value written in the 32-bit size field when the real size is carried in GGEP
/// `LF` (files of 2 GiB and more).
pub const SIZE_IN_LF: u32 = 0xFFFF_FFFF;

/// GGEP ID of a result's FastTrack hash: the 20 raw bytes of the file's FTH
/// (`fasttrack-hashes.md`), so that a FastTrack client given the result can
/// fetch it by `/.hash=` and verify it.
pub const GGEP_FTH: &str = "FTH";

/// The FTH in a GGEP value: exactly 20 bytes, anything else is ignored.
fn fth_of(data: &[u8]) -> Option<Fth> {
    Some(Fth(data.try_into().ok()?))
}

/// One result record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HitResult {
    pub index: u32,
    /// The 32-bit size field as sent; see [`HitResult::file_size`].
    pub size: u32,
    /// The file name as sent (UTF-8 in practice).
    pub name: Bytes,
    pub ext: ExtArea,
}

impl HitResult {
    /// A result for a file, with its SHA-1 URN when known. Sizes of 2^31 bytes and
    /// more are carried in GGEP `LF`, with the size field set to 0xFFFFFFFF.
    pub fn new(index: u32, size: u64, name: &str, urn: Option<&Sha1Urn>) -> HitResult {
        let mut items = Vec::new();
        if let Some(u) = urn {
            items.push(ExtItem::sha1(u));
        }
        let size32 = if size >= 1 << 31 {
            items.push(ExtItem::Ggep(Ggep::new(vec![GgepExt::int("LF", size)])));
            SIZE_IN_LF
        } else {
            size as u32
        };
        HitResult {
            index,
            size: size32,
            name: Bytes::copy_from_slice(name.as_bytes()),
            ext: ExtArea {
                items: items.into(),
            },
        }
    }

    /// The file's size: GGEP `LF` when present and well-formed, else the 32-bit field.
    pub fn file_size(&self) -> u64 {
        self.ext
            .ggep()
            .and_then(|g| g.get("LF"))
            .and_then(|e| e.as_int())
            .unwrap_or(self.size as u64)
    }

    /// The file name, decoded as UTF-8 with invalid bytes replaced.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The result with its file's FastTrack hash (GGEP `FTH`), when known. It
    /// joins the result's GGEP block if it has one (a result carries one block,
    /// as the last item, where LimeWire expects it), replacing an earlier `FTH`.
    pub fn with_fth(mut self, fth: Option<Fth>) -> HitResult {
        let Some(fth) = fth else {
            return self;
        };
        let ext = GgepExt::new(GGEP_FTH, Bytes::copy_from_slice(&fth.0));
        let block = self.ext.items.iter_mut().find_map(|i| match i {
            ExtItem::Ggep(g) => Some(g),
            _ => None,
        });
        match block {
            Some(g) => {
                g.exts.retain(|e| e.id.as_bytes() != GGEP_FTH.as_bytes());
                g.exts.push(ext);
            }
            None => self.ext.items.push(ExtItem::Ggep(Ggep::new(vec![ext]))),
        }
        self
    }

    /// Other hosts with the file: GGEP `ALT` (IPv4) and `ALT6` (IPv6) of the
    /// result's block, IPv4 first.
    pub fn alt_locs(&self) -> Vec<SocketAddr> {
        self.ext
            .ggep()
            .map_or_else(Vec::new, |g| ipv6::packed_of(g, "ALT", ipv6::GGEP_ALT6))
    }

    /// The result with alternate locations added to its GGEP block: `ALT` for
    /// the IPv4 ones, `ALT6` for the IPv6 ones when `with_v6` (the query
    /// carried `I6`).
    pub fn with_alt_locs(mut self, alts: &[SocketAddr], with_v6: bool) -> HitResult {
        let exts = ipv6::packed_exts(alts, "ALT", ipv6::GGEP_ALT6, with_v6, false);
        if exts.is_empty() {
            return self;
        }
        let block = self.ext.items.iter_mut().find_map(|i| match i {
            ExtItem::Ggep(g) => Some(g),
            _ => None,
        });
        match block {
            Some(g) => {
                g.exts
                    .retain(|e| e.id.as_bytes() != b"ALT" && e.id.as_bytes() != b"ALT6");
                g.exts.extend(exts);
            }
            None => self.ext.items.push(ExtItem::Ggep(Ggep::new(exts))),
        }
        self
    }

    /// The file's FastTrack hash, from the first GGEP `FTH` of 20 bytes in any
    /// of the result's GGEP blocks.
    pub fn fth(&self) -> Option<Fth> {
        self.ext.items.iter().find_map(|i| match i {
            ExtItem::Ggep(g) => g
                .exts
                .iter()
                .filter(|e| e.id.as_bytes() == GGEP_FTH.as_bytes())
                .find_map(|e| fth_of(&e.data)),
            _ => None,
        })
    }
}

/// The trailer flags, each `None` when the sender did not say.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OpenDataFlags {
    /// The responder needs a Push to be reached.
    pub push: Option<bool>,
    /// All upload slots are full.
    pub busy: Option<bool>,
    /// The responder has uploaded at least one file.
    pub uploaded: Option<bool>,
    /// The speed field is a measured value.
    pub measured_speed: Option<bool>,
    /// The private area holds a GGEP block.
    pub ggep: Option<bool>,
}

const OD_PUSH: u8 = 0x01;
const OD_BUSY: u8 = 0x04;
const OD_UPLOADED: u8 = 0x08;
const OD_MEASURED: u8 = 0x10;
const OD_GGEP: u8 = 0x20;

impl OpenDataFlags {
    /// Reads the flags from the open-data bytes.
    ///
    /// With two or more bytes (OD0, OD1) a flag is set when its bit is set in both
    /// bytes, which reads the push bit (value in OD0, validity in OD1) and the
    /// others (value in OD1, validity in OD0) alike. One byte is the NapShare form
    /// (push and busy only, no validity byte).
    pub fn from_open_data(od: &[u8]) -> OpenDataFlags {
        match od {
            [] => OpenDataFlags::default(),
            [b] => OpenDataFlags {
                push: Some(b & OD_PUSH != 0),
                busy: Some(b & OD_BUSY != 0),
                ..OpenDataFlags::default()
            },
            [od0, od1, ..] => {
                let get = |bit: u8, known: bool| known.then_some(od0 & od1 & bit != 0);
                OpenDataFlags {
                    push: get(OD_PUSH, od1 & OD_PUSH != 0),
                    busy: get(OD_BUSY, od0 & OD_BUSY != 0),
                    uploaded: get(OD_UPLOADED, od0 & OD_UPLOADED != 0),
                    measured_speed: get(OD_MEASURED, od0 & OD_MEASURED != 0),
                    ggep: get(OD_GGEP, od0 & OD_GGEP != 0),
                }
            }
        }
    }

    /// The two open-data bytes (OD0, OD1) that say exactly these flags.
    pub fn to_bytes(self) -> [u8; 2] {
        let (mut od0, mut od1) = (0u8, 0u8);
        if let Some(v) = self.push {
            od1 |= OD_PUSH;
            if v {
                od0 |= OD_PUSH;
            }
        }
        for (flag, bit) in [
            (self.busy, OD_BUSY),
            (self.uploaded, OD_UPLOADED),
            (self.measured_speed, OD_MEASURED),
            (self.ggep, OD_GGEP),
        ] {
            if let Some(v) = flag {
                od0 |= bit;
                if v {
                    od1 |= bit;
                }
            }
        }
        [od0, od1]
    }
}

/// The private area of a trailer: vendor bytes, at most one GGEP block we parsed,
/// and whatever follows it (LimeWire puts its XML there).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PrivateArea {
    /// Bytes before the GGEP block; all of the area when no block was parsed.
    pub prefix: Bytes,
    pub ggep: Option<Ggep>,
    /// Bytes after the GGEP block.
    pub rest: Bytes,
}

/// A vendor trailer ("QHD").
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Trailer {
    /// Four-character vendor code (compare case-insensitively).
    pub vendor: [u8; 4],
    /// The open data, normally two flag bytes (LimeWire adds a 2-byte XML size).
    pub open_data: Bytes,
    pub private: PrivateArea,
}

impl Trailer {
    /// A trailer with two flag bytes and an optional GGEP block. The GGEP flag is
    /// set to say whether the block is present.
    pub fn new(vendor: [u8; 4], flags: OpenDataFlags, ggep: Option<Ggep>) -> Trailer {
        let flags = OpenDataFlags {
            ggep: Some(ggep.is_some()),
            ..flags
        };
        Trailer {
            vendor,
            open_data: Bytes::copy_from_slice(&flags.to_bytes()),
            private: PrivateArea {
                ggep,
                ..PrivateArea::default()
            },
        }
    }

    /// The flags the open data carries.
    pub fn flags(&self) -> OpenDataFlags {
        OpenDataFlags::from_open_data(&self.open_data)
    }

    /// LimeWire's XML size (open data of 4 bytes): length of the XML document at
    /// the end of the private area, including its NUL.
    pub fn xml_size(&self) -> Option<u16> {
        (self.open_data.len() == 4)
            .then(|| u16::from_le_bytes([self.open_data[2], self.open_data[3]]))
    }

    fn from_view(buf: &Bytes, view: &TrailerView<'_>, budget: &mut usize) -> TrailerArea {
        match *view {
            TrailerView::None => TrailerArea::None,
            TrailerView::Opaque(b) => TrailerArea::Opaque(buf.slice_ref(b)),
            TrailerView::Qhd {
                vendor,
                open_data,
                private,
                ggep,
            } => {
                // A block whose values do not decode (bad zlib, over budget) is kept
                // as opaque bytes like any other unparseable private data.
                let owned = ggep.and_then(|(at, g, end)| {
                    Some((at, Ggep::from_view(buf, &g, budget).ok()?, end))
                });
                let private = match owned {
                    Some((at, g, end)) => PrivateArea {
                        prefix: buf.slice_ref(&private[..at]),
                        ggep: Some(g),
                        rest: buf.slice_ref(&private[end..]),
                    },
                    None => PrivateArea {
                        prefix: buf.slice_ref(private),
                        ..PrivateArea::default()
                    },
                };
                TrailerArea::Qhd(Trailer {
                    vendor,
                    open_data: buf.slice_ref(open_data),
                    private,
                })
            }
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let s = self.open_data.len();
        if s > 255 {
            return Err(EncodeError::TooLong {
                what: "trailer open data",
                len: s,
                limit: 255,
            });
        }
        out.put_slice(&self.vendor);
        out.put_u8(s as u8);
        out.put_slice(&self.open_data);
        let p = &self.private;
        out.put_slice(&p.prefix);
        if let Some(g) = &p.ggep {
            if self.flags().ggep != Some(true) || p.prefix.contains(&ggep::MAGIC) {
                return Err(EncodeError::Invalid {
                    what: "trailer",
                    why: "a GGEP block needs the GGEP flag and no 0xC3 before it",
                });
            }
            g.encode(out, false)?;
        }
        out.put_slice(&p.rest);
        Ok(())
    }
}

/// What lies between the last result and the servent GUID.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum TrailerArea {
    /// Nothing: a plain 0.4 hit.
    None,
    /// A vendor trailer.
    Qhd(Trailer),
    /// Bytes too short to be a trailer, kept as they are.
    Opaque(Bytes),
}

/// A QueryHit.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct QueryHit {
    /// Where to download from (HTTP on the Gnutella port).
    pub port: u16,
    pub ip: Ipv4Addr,
    /// Upload speed in kbit/s.
    pub speed: u32,
    pub results: Vec<HitResult>,
    pub trailer: TrailerArea,
    /// The responder's servent GUID, the key for routing Pushes to it.
    pub servent: Guid,
}

impl QueryHit {
    /// The trailer, when there is one.
    pub fn qhd(&self) -> Option<&Trailer> {
        match &self.trailer {
            TrailerArea::Qhd(t) => Some(t),
            _ => None,
        }
    }

    /// The trailer's GGEP block, when there is one.
    pub fn trailer_ggep(&self) -> Option<&Ggep> {
        self.qhd().and_then(|t| t.private.ggep.as_ref())
    }

    /// The responder's IPv6 address (trailer GGEP `6` or `GTKG.IPV6`).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.trailer_ggep().and_then(ipv6::ipv6_of)
    }

    /// Where to download from: the IPv6 address when the IPv4 field says
    /// "IPv6 only" (127.0.0.0), else the IPv4 field and port.
    pub fn host(&self) -> SocketAddr {
        SocketAddr::new(ipv6::host_ip(self.ip, self.ipv6()), self.port)
    }

    /// The responder's push proxies: trailer GGEP `PUSH` (IPv4) and `PUSH6`
    /// (IPv6), IPv4 first.
    pub fn push_proxies(&self) -> Vec<SocketAddr> {
        self.trailer_ggep()
            .map_or_else(Vec::new, |g| ipv6::packed_of(g, "PUSH", ipv6::GGEP_PUSH6))
    }

    /// Parses a QueryHit payload.
    pub fn parse(payload: &Bytes, budget: &mut usize) -> WireResult<QueryHit> {
        // Each result is built as soon as it is validated: one walk over the
        // records, not one to validate and another to build.
        let mut results = Vec::with_capacity(payload.first().copied().unwrap_or(0).into());
        let mut values = DecodedValues::new(payload.len());
        let v = QueryHitView::parse_each(payload, |r| {
            results.push(HitResult {
                index: r.index,
                size: r.size,
                name: payload.slice_ref(r.name),
                ext: ExtArea::from_view_in(payload, &r.ext, budget, Some(&mut values))?,
            });
            Ok(())
        })?;
        Ok(QueryHit {
            port: v.port,
            ip: v.ip,
            speed: v.speed,
            results,
            trailer: Trailer::from_view(payload, &v.trailer, budget),
            servent: v.servent,
        })
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.results.len() > 255 {
            return Err(EncodeError::TooLong {
                what: "query hit results",
                len: self.results.len(),
                limit: 255,
            });
        }
        out.put_u8(self.results.len() as u8);
        out.put_u16_le(self.port);
        out.put_slice(&self.ip.octets());
        out.put_u32_le(self.speed);
        for r in &self.results {
            if crate::wire::cobs::has_nul(&r.name) {
                return Err(EncodeError::ForbiddenByte {
                    what: "result name",
                    byte: 0,
                });
            }
            let mut fixed = [0u8; 8];
            fixed[..4].copy_from_slice(&r.index.to_le_bytes());
            fixed[4..].copy_from_slice(&r.size.to_le_bytes());
            out.put_slice(&fixed);
            out.put_slice(&r.name);
            out.put_u8(0);
            r.ext.encode(out)?;
            out.put_u8(0);
        }
        match &self.trailer {
            TrailerArea::None if self.results.is_empty() => {
                return Err(EncodeError::Invalid {
                    what: "query hit",
                    why: "no results and no trailer",
                });
            }
            TrailerArea::None => {}
            TrailerArea::Qhd(t) => t.encode(out)?,
            TrailerArea::Opaque(b) => {
                let fits_qhd = b.len() >= 5 && 5 + b[4] as usize <= b.len();
                if b.is_empty() || fits_qhd {
                    return Err(EncodeError::Invalid {
                        what: "opaque trailer",
                        why: "empty, or shaped like a vendor trailer",
                    });
                }
                out.put_slice(b);
            }
        }
        out.put_slice(self.servent.as_bytes());
        Ok(())
    }
}

/// A validated result record, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultView<'a> {
    pub index: u32,
    pub size: u32,
    pub name: &'a [u8],
    pub ext: ExtAreaView<'a>,
}

impl<'a> ResultView<'a> {
    /// Reads one record at the start of `b`, returning it and its length.
    fn parse(b: &'a [u8]) -> WireResult<(ResultView<'a>, usize)> {
        let (_, (index, size)) = fields("query hit result", b, (le_u32, le_u32))?;
        let nul = memchr::memchr(0, &b[8..]).ok_or(WireError::MissingNul {
            what: "result name",
        })? + 8;
        let (ext, used) = ExtAreaView::parse(&b[nul + 1..], AreaEnd::Nul)?;
        let view = ResultView {
            index,
            size,
            name: &b[8..nul],
            ext,
        };
        Ok((view, nul + 1 + used))
    }

    /// The file's size: GGEP `LF` when present and well-formed, else the 32-bit field.
    pub fn file_size(&self) -> u64 {
        // LF is usually COBS-encoded in result areas (large sizes hold NUL bytes).
        self.ext
            .ggep()
            .and_then(|g| g.get("LF"))
            .and_then(|e| e.value(&mut ggep::DEFAULT_INFLATE_BUDGET.clone()).ok())
            .and_then(|v| ggep::le_int(&v))
            .unwrap_or(self.size as u64)
    }

    /// The file's FastTrack hash (GGEP `FTH`, see [`HitResult::fth`]). Values
    /// are usually COBS-encoded here (20 raw bytes often hold a NUL).
    pub fn fth(&self) -> Option<Fth> {
        let mut budget = ggep::DEFAULT_INFLATE_BUDGET;
        self.ext.iter().find_map(|i| match i {
            crate::wire::ext::ItemView::Ggep(g) => g
                .iter()
                .filter(|e| e.id == GGEP_FTH.as_bytes())
                .find_map(|e| fth_of(&e.value(&mut budget).ok()?)),
            _ => None,
        })
    }
}

/// The trailer of a [`QueryHitView`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailerView<'a> {
    None,
    Qhd {
        vendor: [u8; 4],
        open_data: &'a [u8],
        /// The whole private area.
        private: &'a [u8],
        /// The GGEP block found in it, with its start and end offsets.
        ggep: Option<(usize, GgepView<'a>, usize)>,
    },
    Opaque(&'a [u8]),
}

impl<'a> TrailerView<'a> {
    fn parse(t: &'a [u8]) -> TrailerView<'a> {
        if t.is_empty() {
            return TrailerView::None;
        }
        let Some(&s) = t.get(4) else {
            return TrailerView::Opaque(t);
        };
        let od_end = 5 + s as usize;
        if od_end > t.len() {
            return TrailerView::Opaque(t);
        }
        let open_data = &t[5..od_end];
        let private = &t[od_end..];
        let mut ggep = None;
        if OpenDataFlags::from_open_data(open_data).ggep == Some(true) {
            if let Some(at) = memchr::memchr(ggep::MAGIC, private) {
                // Legacy private data may hold anything: a block that does not parse
                // leaves the whole area as opaque bytes.
                if let Ok((g, used)) = GgepView::parse(&private[at..]) {
                    ggep = Some((at, g, at + used));
                }
            }
        }
        TrailerView::Qhd {
            vendor: [t[0], t[1], t[2], t[3]],
            open_data,
            private,
            ggep,
        }
    }
}

/// A validated QueryHit, borrowed from its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryHitView<'a> {
    pub port: u16,
    pub ip: Ipv4Addr,
    pub speed: u32,
    count: u8,
    records: &'a [u8],
    pub trailer: TrailerView<'a>,
    pub servent: Guid,
}

impl<'a> QueryHitView<'a> {
    /// Validates a QueryHit payload without allocating.
    pub fn parse(payload: &'a [u8]) -> WireResult<QueryHitView<'a>> {
        QueryHitView::parse_each(payload, |_| Ok(()))
    }

    /// As [`QueryHitView::parse`], handing each result to `each` as soon as
    /// it is validated; an error from `each` ends the parse.
    fn parse_each(
        payload: &'a [u8],
        mut each: impl FnMut(ResultView<'a>) -> WireResult<()>,
    ) -> WireResult<QueryHitView<'a>> {
        const WHAT: &str = "query hit";
        if payload.len() < 11 + 16 {
            return Err(WireError::Truncated { what: WHAT });
        }
        let (_, (count, port, ip, speed)) = fields(
            WHAT,
            payload,
            (nom::number::complete::u8, le_u16, be_u32, le_u32),
        )?;
        let guid_at = payload.len() - 16;
        let body = &payload[..guid_at];
        let mut pos = 11;
        for _ in 0..count {
            let (r, used) = ResultView::parse(&body[pos..])?;
            each(r)?;
            pos += used;
        }
        let trailer = TrailerView::parse(&body[pos..]);
        if count == 0 && trailer == TrailerView::None {
            return Err(WireError::Malformed {
                what: WHAT,
                why: "no results and no trailer",
            });
        }
        Ok(QueryHitView {
            port,
            ip: Ipv4Addr::from(ip),
            speed,
            count,
            records: &body[11..pos],
            trailer,
            servent: Guid::from_slice(&payload[guid_at..]).expect("16 bytes"),
        })
    }

    /// Number of results.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// The responder's IPv6 address (trailer GGEP `6` or `GTKG.IPV6`).
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        match &self.trailer {
            TrailerView::Qhd {
                ggep: Some((_, g, _)),
                ..
            } => ipv6::ipv6_of_view(g),
            _ => None,
        }
    }

    /// Where to download from (see [`QueryHit::host`]).
    pub fn host(&self) -> SocketAddr {
        SocketAddr::new(ipv6::host_ip(self.ip, self.ipv6()), self.port)
    }

    /// Whether the hit has no results.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The results in order.
    pub fn results(&self) -> impl Iterator<Item = ResultView<'a>> + 'a {
        let mut rest = self.records;
        std::iter::from_fn(move || {
            // Validated already: this stops only at the end of the records.
            let (r, used) = ResultView::parse(rest).ok()?;
            rest = &rest[used..];
            Some(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(results: Vec<HitResult>) -> Bytes {
        let h = QueryHit {
            port: 6346,
            ip: Ipv4Addr::new(10, 0, 0, 1),
            speed: 0,
            results,
            trailer: TrailerArea::None,
            servent: Guid([7; 16]),
        };
        let mut out = BytesMut::new();
        h.encode(&mut out).unwrap();
        out.freeze()
    }

    #[test]
    fn the_fth_travels_in_ggep_and_reads_back_both_ways() {
        // An FTH with NUL bytes (COBS in the result area) and one without.
        let mut with_nul = crate::fasttrack::hash::fth(b"x");
        with_nul.0[3] = 0;
        with_nul.0[19] = 0;
        let plain = Fth([0x41; 20]);
        let urn = Sha1Urn::digest(b"x");
        let big = 5u64 << 30;
        let results = vec![
            HitResult::new(1, 10, "a.txt", Some(&urn)).with_fth(Some(with_nul)),
            HitResult::new(2, big, "big.iso", None).with_fth(Some(plain)),
            HitResult::new(3, 10, "none.txt", Some(&urn)).with_fth(None),
        ];
        // The large file's FTH shares the block that holds LF.
        assert_eq!(results[1].ext.items.len(), 1);
        assert_eq!(results[1].ext.ggep().unwrap().exts.len(), 2);
        let bytes = hit(results.clone());
        let parsed = QueryHit::parse(&bytes, &mut ggep::DEFAULT_INFLATE_BUDGET.clone()).unwrap();
        assert_eq!(parsed.results, results);
        let got: Vec<_> = parsed.results.iter().map(HitResult::fth).collect();
        assert_eq!(got, [Some(with_nul), Some(plain), None]);
        assert_eq!(parsed.results[1].file_size(), big);
        let view = QueryHitView::parse(&bytes).unwrap();
        let seen: Vec<_> = view.results().map(|r| (r.fth(), r.file_size())).collect();
        assert_eq!(seen, [(Some(with_nul), 10), (Some(plain), big), (None, 10)]);
        // Set twice: one FTH, the last.
        let twice = results[0].clone().with_fth(Some(plain));
        assert_eq!(twice.ext.ggep().unwrap().exts.len(), 1);
        assert_eq!(twice.fth(), Some(plain));
    }

    #[test]
    fn an_fth_of_the_wrong_length_is_ignored() {
        let mut r = HitResult::new(1, 10, "a.txt", None);
        r.ext.items.push(ExtItem::Ggep(Ggep::new(vec![
            GgepExt::new(GGEP_FTH, vec![1u8; 19]),
            GgepExt::new(GGEP_FTH, vec![2u8; 21]),
        ])));
        let bytes = hit(vec![r.clone()]);
        assert_eq!(r.fth(), None);
        let view = QueryHitView::parse(&bytes).unwrap();
        assert_eq!(view.results().next().unwrap().fth(), None);
        // A later good one in the same block is found.
        if let ExtItem::Ggep(g) = &mut r.ext.items[0] {
            g.exts.push(GgepExt::new(GGEP_FTH, vec![3u8; 20]));
        }
        assert_eq!(r.fth(), Some(Fth([3; 20])));
        let bytes = hit(vec![r]);
        let view = QueryHitView::parse(&bytes).unwrap();
        assert_eq!(view.results().next().unwrap().fth(), Some(Fth([3; 20])));
    }
}
