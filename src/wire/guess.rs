//! GUESS 0.2 (`protocol-spec/guess.md`): the GGEP extensions by which a client
//! asks an ultrapeer for a query key (`QK` in a Ping), the server hands it out
//! (`QK` in its Pong), and a query sent by UDP carries it back (`QK` in the
//! Query, with `SCP` "put GUESS hosts in your acknowledgement" and `Z` "you may
//! deflate your hits"); `GUE` marks GUESS ultrapeers in pongs and introduction
//! pings, and `IPP` packs hosts (6 bytes each: IPv4 big-endian, port
//! little-endian).
//!
//! Values are read tolerantly (a `GUE` of 0, 1 or 3 bytes, a key of 1 to 16
//! bytes, an `IPP` whose length is not a multiple of 6 read as far as it goes)
//! and written as gtk-gnutella writes them.

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::{Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError, WireResult};
use crate::wire::ext::{ExtItem, ItemView};
use crate::wire::ggep::{DEFAULT_INFLATE_BUDGET, Ggep, GgepExt, GgepView};
use crate::wire::query::{Query, QueryView};
use crate::wire::{Ping, Pong};

/// The GUESS version we speak and advertise (`GUE` = 0x02: 0.2).
pub const VERSION: u8 = 0x02;
/// The longest query key taken (gtk and LimeWire send 4 bytes).
pub const MAX_KEY: usize = 16;
/// Bytes of one packed IPv4 host in `IPP`.
pub const IPP_ENTRY: usize = 6;

pub const ID_QK: &str = "QK";
pub const ID_GUE: &str = "GUE";
pub const ID_SCP: &str = "SCP";
pub const ID_Z: &str = "Z";
pub const ID_IPP: &str = "IPP";

/// A query key: 1 to [`MAX_KEY`] opaque bytes, bound by the server to the
/// address it gave it to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryKey {
    len: u8,
    bytes: [u8; MAX_KEY],
}

impl QueryKey {
    /// A key from its bytes; `None` when empty or longer than [`MAX_KEY`].
    pub fn new(b: &[u8]) -> Option<QueryKey> {
        if b.is_empty() || b.len() > MAX_KEY {
            return None;
        }
        let mut bytes = [0u8; MAX_KEY];
        bytes[..b.len()].copy_from_slice(b);
        Some(QueryKey {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for QueryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryKey(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A `GUE` value: empty (LimeWire's pongs, or a ping asking for GUESS hosts),
/// the version (gtk's pongs), or the version and the sender's UDP port (gtk's
/// introduction ping).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Gue {
    pub version: Option<u8>,
    pub port: Option<u16>,
}

impl Gue {
    /// Reads a value of any length: the first byte is the version, the next two
    /// (when both are there) the port; more is ignored.
    pub fn parse(data: &[u8]) -> Gue {
        Gue {
            version: data.first().copied(),
            port: data
                .get(1..3)
                .map(|p| u16::from_le_bytes([p[0], p[1]]))
                .filter(|p| *p != 0),
        }
    }

    /// Ours, as gtk writes it in pongs: one byte, the version.
    pub fn ours() -> GgepExt {
        GgepExt::new(ID_GUE, vec![VERSION])
    }
}

/// Reads the hosts of an `IPP` value (as far as whole entries go; port 0 and
/// unspecified addresses are left out).
pub fn ipp_hosts(data: &[u8]) -> impl Iterator<Item = SocketAddrV4> + '_ {
    data.chunks_exact(IPP_ENTRY).filter_map(|e| {
        let ip = Ipv4Addr::new(e[0], e[1], e[2], e[3]);
        let port = u16::from_le_bytes([e[4], e[5]]);
        (port != 0 && !ip.is_unspecified()).then_some(SocketAddrV4::new(ip, port))
    })
}

/// An `IPP` extension packing `hosts`.
pub fn ipp(hosts: &[SocketAddrV4]) -> GgepExt {
    let mut v = Vec::with_capacity(hosts.len() * IPP_ENTRY);
    for h in hosts {
        v.extend_from_slice(&h.ip().octets());
        v.extend_from_slice(&h.port().to_le_bytes());
    }
    GgepExt::new(ID_IPP, v)
}

/// What a Ping asks of a GUESS server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct GuessPing {
    /// `QK` present: "send me a query key".
    pub key_request: bool,
    /// `GUE`: an introduction (with a port) or "send me GUESS hosts" (empty).
    pub gue: Option<Gue>,
    /// `SCP` present, with its flags byte (0 when empty).
    pub scp: Option<u8>,
}

impl GuessPing {
    pub fn of(ping: &Ping) -> GuessPing {
        let Some(g) = &ping.ggep else {
            return GuessPing::default();
        };
        GuessPing {
            key_request: g.get(ID_QK).is_some(),
            gue: g.get(ID_GUE).map(|e| Gue::parse(&e.data)),
            scp: g.get(ID_SCP).map(|e| e.data.first().copied().unwrap_or(0)),
        }
    }

    /// Whether the Ping is about GUESS at all.
    pub fn is_guess(&self) -> bool {
        self.key_request || self.gue.is_some()
    }
}

/// What a Pong tells a GUESS client.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct GuessPong {
    /// `QK`, when it holds 1 to 16 bytes.
    pub key: Option<QueryKey>,
    /// `GUE`: the pong's host serves GUESS queries.
    pub gue: Option<Gue>,
    /// `IPP`: more hosts (GUESS hosts, in a GUESS server's pong).
    pub hosts: Vec<SocketAddrV4>,
}

impl GuessPong {
    pub fn of(pong: &Pong) -> GuessPong {
        let Some(g) = &pong.ggep else {
            return GuessPong::default();
        };
        GuessPong {
            key: g.get(ID_QK).and_then(|e| QueryKey::new(&e.data)),
            gue: g.get(ID_GUE).map(|e| Gue::parse(&e.data)),
            hosts: g
                .get(ID_IPP)
                .map(|e| ipp_hosts(&e.data).collect())
                .unwrap_or_default(),
        }
    }
}

/// What a query tells a GUESS server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct GuessQuery {
    /// `QK` as sent: `Some(None)` when present but not a key (empty, too long,
    /// or a value that does not decode).
    pub key: Option<Option<QueryKey>>,
    /// `SCP`: put GUESS hosts in the acknowledgement's `IPP`.
    pub scp: bool,
    /// `Z`: the querier inflates deflated hits.
    pub deflate: bool,
}

impl GuessQuery {
    /// Reads the GGEP blocks of a validated query.
    pub fn of(q: &QueryView<'_>) -> GuessQuery {
        let mut out = GuessQuery::default();
        for item in q.ext.iter() {
            let ItemView::Ggep(g) = item else { continue };
            out.merge(&g);
        }
        out
    }

    fn merge(&mut self, g: &GgepView<'_>) {
        for e in g.iter() {
            match e.id {
                b"QK" if self.key.is_none() => {
                    let mut budget = MAX_KEY * 4;
                    let v: Option<Cow<'_, [u8]>> = e.value(&mut budget).ok();
                    self.key = Some(v.and_then(|v| QueryKey::new(&v)));
                }
                b"SCP" => self.scp = true,
                b"Z" => self.deflate = true,
                _ => {}
            }
        }
    }
}

/// A Ping asking for a query key (with `SCP` = `scp` when given: "and GUESS
/// hosts in `IPP`").
pub fn key_request(scp: Option<u8>) -> Ping {
    let mut exts = vec![GgepExt::flag(ID_QK)];
    if let Some(flags) = scp {
        exts.push(GgepExt::new(ID_SCP, vec![flags]));
    }
    Ping {
        ggep: Some(Ggep::new(exts)),
    }
}

/// The GUESS extensions' IDs, which a query sent on to leaves goes without.
fn is_guess_id(id: &[u8]) -> bool {
    matches!(id, b"QK" | b"SCP" | b"Z")
}

/// Encodes `q` as gtk-gnutella does: with no terminating NUL after a GGEP block
/// that ends the extension area (the block delimits itself).
fn encode_query(q: &Query) -> Result<Bytes, EncodeError> {
    let mut out = BytesMut::new();
    q.encode(&mut out)?;
    if matches!(q.ext.items.last(), Some(ExtItem::Ggep(_))) && out.last() == Some(&0) {
        out.truncate(out.len() - 1);
    }
    Ok(out.freeze())
}

/// A query payload made into a GUESS query: any GUESS extensions it had are
/// replaced by `QK` = `key`, then `SCP` (empty) when `scp`, then `Z` when
/// `deflate`, appended to its first GGEP block (or a new one).
pub fn with_key(payload: &Bytes, key: &QueryKey, scp: bool, deflate: bool) -> WireResult<Bytes> {
    let mut budget = DEFAULT_INFLATE_BUDGET;
    let mut q = Query::parse(payload, &mut budget)?;
    strip(&mut q);
    let mut add = vec![GgepExt::new(ID_QK, Bytes::copy_from_slice(key.as_bytes()))];
    if scp {
        add.push(GgepExt::flag(ID_SCP));
    }
    if deflate {
        add.push(GgepExt::flag(ID_Z));
    }
    match q.ext.items.iter_mut().find_map(|i| match i {
        ExtItem::Ggep(g) => Some(g),
        _ => None,
    }) {
        Some(g) => g.exts.extend(add),
        None => q.ext.items.push(ExtItem::Ggep(Ggep::new(add))),
    }
    encode_query(&q).map_err(|_| WireError::Malformed {
        what: "query",
        why: "cannot be written back with a query key",
    })
}

fn strip(q: &mut Query) {
    for item in &mut q.ext.items {
        if let ExtItem::Ggep(g) = item {
            g.exts.retain(|e| !is_guess_id(e.id.as_bytes()));
        }
    }
    q.ext
        .items
        .retain(|i| !matches!(i, ExtItem::Ggep(g) if g.exts.is_empty()));
}

/// A GUESS query's payload without `QK`, `SCP` and `Z`, as it goes on to
/// leaves (the GUESS document asks servers to strip them); `None` when it
/// has none of them, or cannot be written back.
pub fn without_guess(payload: &Bytes) -> Option<Bytes> {
    let view = QueryView::parse(payload).ok()?;
    let has = view
        .ext
        .iter()
        .any(|i| matches!(i, ItemView::Ggep(g) if g.iter().any(|e| is_guess_id(e.id))));
    if !has {
        return None;
    }
    let mut budget = DEFAULT_INFLATE_BUDGET;
    let mut q = Query::parse(payload, &mut budget).ok()?;
    strip(&mut q);
    encode_query(&q).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::QueryFlags;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn gue_of_every_length() {
        assert_eq!(Gue::parse(&[]), Gue::default());
        assert_eq!(
            Gue::parse(&[2]),
            Gue {
                version: Some(2),
                port: None
            }
        );
        // gtk's introduction ping: version, then its UDP port (19104).
        assert_eq!(
            Gue::parse(&[2, 0xa0, 0x4a]),
            Gue {
                version: Some(2),
                port: Some(19104)
            }
        );
        assert_eq!(Gue::parse(&[2, 0xa0]).port, None);
    }

    #[test]
    fn keys_are_one_to_sixteen_bytes() {
        assert!(QueryKey::new(&[]).is_none());
        assert!(QueryKey::new(&[0; 17]).is_none());
        let k = QueryKey::new(&[0xd5, 0x43, 0xcb, 0x6b]).unwrap();
        assert_eq!(k.as_bytes(), &[0xd5, 0x43, 0xcb, 0x6b]);
        assert_eq!(format!("{k:?}"), "QueryKey(d543cb6b)");
    }

    #[test]
    fn ipp_round_trip_and_partial_entries() {
        let hosts = [
            SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 5), 6350),
            SocketAddrV4::new(Ipv4Addr::new(11, 0, 0, 1), 19104),
        ];
        let e = ipp(&hosts);
        assert_eq!(e.data.as_ref(), hex("0b000005ce18 0b000001a04a").as_slice());
        let mut data = e.data.to_vec();
        data.extend_from_slice(&[1, 2, 3]);
        assert_eq!(ipp_hosts(&data).collect::<Vec<_>>(), hosts);
        // Port 0 and 0.0.0.0 name no host.
        assert_eq!(ipp_hosts(&[0, 0, 0, 0, 1, 0, 1, 2, 3, 4, 0, 0]).count(), 0);
    }

    #[test]
    fn the_query_text_and_other_extensions_survive() {
        let mut q = Query::new(QueryFlags::with_bits(QueryFlags::OOB), "two words");
        q.ext.items.push(ExtItem::Urn(Bytes::from_static(b"urn:")));
        q.ext
            .items
            .push(ExtItem::Ggep(Ggep::new(vec![GgepExt::flag("SO")])));
        let mut plain = BytesMut::new();
        q.encode(&mut plain).unwrap();
        let key = QueryKey::new(&[0, 1, 0, 2]).unwrap();
        let g = with_key(&plain.freeze(), &key, true, true).unwrap();
        let view = QueryView::parse(&g).unwrap();
        assert_eq!(view.text, b"two words");
        assert_eq!(
            GuessQuery::of(&view),
            GuessQuery {
                key: Some(Some(key)),
                scp: true,
                deflate: true
            }
        );
        // The key has NUL bytes: COBS-encoded in the NUL-free area.
        assert!(!g[2 + 9 + 1..].contains(&0));
        let ggep = view.ext.ggep().unwrap();
        assert!(ggep.get("SO").is_some());
        // Keyed again: one QK, the new one.
        let other = QueryKey::new(&[9; 4]).unwrap();
        let again = with_key(&g, &other, false, false).unwrap();
        let v = QueryView::parse(&again).unwrap();
        assert_eq!(GuessQuery::of(&v).key, Some(Some(other)));
        assert!(!GuessQuery::of(&v).scp);
        // Stripped for leaves: SO stays, the rest goes.
        let bare = without_guess(&g).unwrap();
        let v = QueryView::parse(&bare).unwrap();
        assert_eq!(GuessQuery::of(&v), GuessQuery::default());
        assert!(v.ext.ggep().unwrap().get("SO").is_some());
        assert!(without_guess(&bare).is_none());
    }

    #[test]
    fn bad_keys_in_queries_are_seen_as_bad() {
        // Empty QK, and one of 17 bytes.
        for data in [Vec::new(), vec![7u8; 17]] {
            let q = Query {
                flags: QueryFlags::with_bits(0),
                text: Bytes::from_static(b"x"),
                ext: crate::wire::ExtArea {
                    items: vec![ExtItem::Ggep(Ggep::new(vec![GgepExt::new("QK", data)]))].into(),
                },
            };
            let p = encode_query(&q).unwrap();
            let v = QueryView::parse(&p).unwrap();
            assert_eq!(GuessQuery::of(&v).key, Some(None));
        }
    }
}
