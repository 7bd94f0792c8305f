//! Out-of-band query hits (`protocol-spec/oob.md`): the vendor messages that
//! offer and claim hits by UDP (LIME/12 reply indication, LIME/11 reply ack),
//! the leaf's proxy control (LIME/13), the reply address a querier writes
//! into its query's MUID, and the GGEP `SO` security token in queries and
//! hits.

use std::net::{Ipv4Addr, SocketAddrV4};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{WireError, WireResult};
use crate::wire::ext::ItemView;
use crate::wire::ggep::{Ggep, GgepExt, GgepView};
use crate::wire::query::{QueryFlags, QueryView};
use crate::wire::queryhit::TrailerView;
use crate::wire::{Guid, VendorMsg};

/// Vendor of the OOB messages.
pub const LIME: [u8; 4] = *b"LIME";
/// Selector of the reply ack (querier → responder: "send me n hits").
pub const ACK: u16 = 11;
/// Selector of the reply indication (responder → querier: "I have n hits").
pub const INDICATION: u16 = 12;
/// Selector of the OOB proxy control (leaf → ultrapeer, TCP).
pub const PROXY_CONTROL: u16 = 13;
/// GGEP id of the secure-OOB request (empty, in a query) and of the token
/// (in a reply ack and in every hit it claims).
pub const GGEP_SO: &str = "SO";
/// GGEP id in a query: "do not OOB-proxy me".
pub const GGEP_NP: &str = "NP";
/// "Every hit you have" in a reply ack; "255 or more" in an indication.
pub const ALL: u8 = 255;
/// The longest token kept (gtk-gnutella truncates at 16 bytes).
pub const MAX_TOKEN: usize = 16;

/// The reply address a querier wrote into an OOB query's MUID: bytes 0-3
/// the IPv4 address (big-endian), bytes 13-14 the UDP port (little-endian).
pub fn muid_addr(muid: &Guid) -> SocketAddrV4 {
    let g = &muid.0;
    SocketAddrV4::new(
        Ipv4Addr::new(g[0], g[1], g[2], g[3]),
        u16::from_le_bytes([g[13], g[14]]),
    )
}

/// `muid` with `addr` written in as the reply address; the other bytes stay.
pub fn with_muid_addr(muid: Guid, addr: SocketAddrV4) -> Guid {
    let mut g = muid.0;
    g[..4].copy_from_slice(&addr.ip().octets());
    g[13..15].copy_from_slice(&addr.port().to_le_bytes());
    Guid(g)
}

/// What a query says about out-of-band delivery.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OobRequest {
    /// Flag 0x0400 (what gtk-gnutella reads).
    pub flag: bool,
    /// GGEP `SO` (what LimeWire reads; "secure OOB", version 3).
    pub secure: bool,
    /// GGEP `NP`: the querier asks not to be OOB-proxied.
    pub no_proxy: bool,
}

impl OobRequest {
    /// What `q` asks for.
    pub fn of(q: &QueryView<'_>) -> OobRequest {
        let mut r = OobRequest {
            flag: q.flags.has(QueryFlags::OOB),
            ..OobRequest::default()
        };
        for item in q.ext.iter() {
            if let ItemView::Ggep(g) = item {
                r.secure |= g.get(GGEP_SO).is_some();
                r.no_proxy |= g.get(GGEP_NP).is_some();
            }
        }
        r
    }

    /// Whether the query asks for out-of-band hits at all (0x0400 or `SO`).
    pub fn wanted(self) -> bool {
        self.flag || self.secure
    }
}

/// The `SO` token in a hit's trailer (its private GGEP block), if any.
pub fn hit_token<'a>(trailer: &TrailerView<'a>) -> Option<&'a [u8]> {
    match trailer {
        TrailerView::Qhd {
            ggep: Some((_, g, _)),
            ..
        } => g.get(GGEP_SO).map(|e| e.raw),
        _ => None,
    }
}

/// The `SO` extension of a GGEP block, borrowed (a reply ack's token).
fn so_of<'a>(g: &GgepView<'a>) -> Option<&'a [u8]> {
    g.get(GGEP_SO).map(|e| e.raw)
}

/// LIME/12, the reply indication: a responder holds `hits` results for the
/// MUID the message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Indication {
    /// 1 to 255 (255: that many or more); 0 is read but means nothing.
    pub hits: u8,
    /// The responder can receive unsolicited UDP (absent in v1).
    pub unsolicited: bool,
    /// 1, 2 or 3; 3 asks for a reply ack with a token.
    pub version: u16,
}

impl Indication {
    /// Reads a LIME/12 message: v1 at least 1 byte, v2 and v3 at least 2;
    /// bytes after those are ignored (v3 leaves room for a GGEP block).
    pub fn parse(m: &VendorMsg) -> WireResult<Indication> {
        const WHAT: &str = "LIME/12 reply indication";
        if !m.is(&LIME, INDICATION) || !(1..=3).contains(&m.version) {
            return Err(WireError::Malformed {
                what: WHAT,
                why: "not LIME/12 v1 to v3",
            });
        }
        let b = &m.body;
        let need = if m.version == 1 { 1 } else { 2 };
        if b.len() < need {
            return Err(WireError::Truncated { what: WHAT });
        }
        Ok(Indication {
            hits: b[0],
            unsolicited: m.version >= 2 && b[1] & 1 != 0,
            version: m.version,
        })
    }

    /// The message: exactly 2 body bytes in v2 and v3 (LimeWire refuses a
    /// longer v2), 1 in v1.
    pub fn to_vendor(self) -> VendorMsg {
        let mut body = BytesMut::with_capacity(2);
        body.put_u8(self.hits);
        if self.version >= 2 {
            body.put_u8(self.unsolicited as u8);
        }
        VendorMsg {
            vendor: LIME,
            selector: INDICATION,
            version: self.version,
            body: body.freeze(),
        }
    }
}

/// LIME/11, the reply ack: the querier claims `wanted` hits (255: all); in
/// v3 it gives the token every hit must carry back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub wanted: u8,
    /// v3: the `SO` token (1 to 16 bytes kept); v2: none.
    pub token: Option<Bytes>,
}

impl Ack {
    /// Reads a LIME/11 message: v2 one byte (more is tolerated), v3 one byte
    /// and a GGEP block right after it holding `SO`. A v3 ack without a
    /// readable `SO` is refused: the hits could not prove they were claimed.
    pub fn parse(m: &VendorMsg) -> WireResult<Ack> {
        const WHAT: &str = "LIME/11 reply ack";
        if !m.is(&LIME, ACK) || !(2..=3).contains(&m.version) {
            return Err(WireError::Malformed {
                what: WHAT,
                why: "not LIME/11 v2 or v3",
            });
        }
        let b = &m.body;
        let Some(&wanted) = b.first() else {
            return Err(WireError::Truncated { what: WHAT });
        };
        if m.version == 2 {
            return Ok(Ack {
                wanted,
                token: None,
            });
        }
        let (g, _) = GgepView::parse(&b[1..]).map_err(|_| WireError::Malformed {
            what: WHAT,
            why: "no GGEP block after the count",
        })?;
        let token = so_of(&g).ok_or(WireError::Malformed {
            what: WHAT,
            why: "no SO token",
        })?;
        if token.is_empty() {
            return Err(WireError::Malformed {
                what: WHAT,
                why: "empty SO token",
            });
        }
        let token = &token[..token.len().min(MAX_TOKEN)];
        Ok(Ack {
            wanted,
            token: Some(m.body.slice_ref(token)),
        })
    }

    /// The message: v3 with the token, v2 without.
    pub fn to_vendor(&self) -> VendorMsg {
        let mut body = BytesMut::with_capacity(1 + 8 + MAX_TOKEN);
        body.put_u8(self.wanted);
        let version = match &self.token {
            Some(t) => {
                Ggep::new(vec![GgepExt::new(GGEP_SO, t.clone())])
                    .encode(&mut body, false)
                    .expect("a one-extension block encodes");
                3
            }
            None => 2,
        };
        VendorMsg {
            vendor: LIME,
            selector: ACK,
            version,
            body: body.freeze(),
        }
    }
}

/// LIME/13, OOB proxy control from a leaf: `None` vetoes proxying of every
/// version; `Some(v)`: queries of OOB version `v` and below may not be
/// proxied (0: proxy anything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyControl {
    pub max_vetoed: Option<u8>,
}

impl ProxyControl {
    /// Reads a LIME/13 message (an empty body vetoes all; bytes after the
    /// first are ignored).
    pub fn parse(m: &VendorMsg) -> WireResult<ProxyControl> {
        if !m.is(&LIME, PROXY_CONTROL) {
            return Err(WireError::Malformed {
                what: "LIME/13 proxy control",
                why: "not LIME/13",
            });
        }
        Ok(ProxyControl {
            max_vetoed: m.body.first().copied(),
        })
    }

    /// Whether a query may be proxied by us (we proxy to OOB version 3).
    pub fn allows_v3(self) -> bool {
        self.max_vetoed.is_some_and(|v| v < 3)
    }

    pub fn to_vendor(self) -> VendorMsg {
        VendorMsg {
            vendor: LIME,
            selector: PROXY_CONTROL,
            version: 1,
            body: Bytes::copy_from_slice(self.max_vetoed.as_slice()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Function, Message};

    fn hex(s: &str) -> Bytes {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    fn vendor_of(frame: &Bytes) -> VendorMsg {
        assert_eq!(frame[16], 0x31);
        VendorMsg::parse(&frame.slice(23..)).unwrap()
    }

    // The constructed vectors of udp-facts section 12 (constructed.json).
    const MUID: &str = "c633640789abcdefff00112233ca1800";

    #[test]
    fn the_muid_carries_the_reply_address() {
        let g = Guid::from_hex(MUID).unwrap();
        let a = muid_addr(&g);
        assert_eq!(a, "198.51.100.7:6346".parse().unwrap());
        let other = with_muid_addr(Guid([0xaa; 16]), a);
        assert_eq!(muid_addr(&other), a);
        assert_eq!(&other.0[4..13], &[0xaa; 9]);
        assert_eq!(other.0[15], 0xaa);
    }

    #[test]
    fn the_oob_query_vector_asks_for_secure_oob() {
        let f = hex(
            "c633640789abcdefff00112233ca1800 80 04 00 11000000 e400 6c696e75782069736f 00 c3 82 534f 40",
        );
        let q = QueryView::parse(&f[23..]).unwrap();
        let r = OobRequest::of(&q);
        assert!(r.flag && r.secure && !r.no_proxy && r.wanted());
        assert_eq!(muid_addr(&Guid::from_slice(&f[..16]).unwrap()).port(), 6346);
    }

    #[test]
    fn indications_golden_and_round_trip() {
        let v3 = hex(&format!(
            "{MUID} 31 01 00 0a000000 4c494d45 0c00 0300 03 01"
        ));
        let v2 = hex(&format!(
            "{MUID} 31 01 00 0a000000 4c494d45 0c00 0200 03 00"
        ));
        for (frame, want) in [
            (
                &v3,
                Indication {
                    hits: 3,
                    unsolicited: true,
                    version: 3,
                },
            ),
            (
                &v2,
                Indication {
                    hits: 3,
                    unsolicited: false,
                    version: 2,
                },
            ),
        ] {
            let m = vendor_of(frame);
            let i = Indication::parse(&m).unwrap();
            assert_eq!(i, want);
            // Encoded again: byte for byte the vector.
            let mut out = BytesMut::new();
            Message::Vendor(i.to_vendor())
                .encode_frame(
                    Guid::from_hex(MUID).unwrap(),
                    crate::wire::Ttl(1),
                    crate::wire::Hops(0),
                    &mut out,
                )
                .unwrap();
            assert_eq!(&out[..], &frame[..]);
        }
        // Longer v3 bodies are read (room for GGEP); short ones are not.
        let mut m = vendor_of(&v3);
        m.body = Bytes::from_static(&[5, 0, 0xc3, 0]);
        assert_eq!(Indication::parse(&m).unwrap().hits, 5);
        m.body = Bytes::from_static(&[5]);
        assert!(Indication::parse(&m).is_err());
        m.version = 1;
        assert_eq!(
            Indication::parse(&m).unwrap(),
            Indication {
                hits: 5,
                unsolicited: false,
                version: 1
            }
        );
        m.version = 4;
        assert!(Indication::parse(&m).is_err());
    }

    #[test]
    fn acks_golden_and_round_trip() {
        let v3 = hex(&format!(
            "{MUID} 31 09 00 12000000 4c494d45 0b00 0300 03 c3 82 534f 44 13893dbd"
        ));
        let v2 = hex(&format!("{MUID} 31 01 00 09000000 4c494d45 0b00 0200 ff"));
        let a3 = Ack::parse(&vendor_of(&v3)).unwrap();
        assert_eq!(a3.wanted, 3);
        assert_eq!(a3.token.as_deref(), Some(&[0x13, 0x89, 0x3d, 0xbd][..]));
        let a2 = Ack::parse(&vendor_of(&v2)).unwrap();
        assert_eq!(
            a2,
            Ack {
                wanted: ALL,
                token: None
            }
        );
        for (a, frame, ttl) in [(a3, &v3, 9), (a2, &v2, 1)] {
            let mut out = BytesMut::new();
            Message::Vendor(a.to_vendor())
                .encode_frame(
                    Guid::from_hex(MUID).unwrap(),
                    crate::wire::Ttl(ttl),
                    crate::wire::Hops(0),
                    &mut out,
                )
                .unwrap();
            assert_eq!(&out[..], &frame[..]);
        }
        // The captured gtk-gnutella and LimeWire-facing acks read the same way.
        let mut m = vendor_of(&v3);
        m.body = hex("01c382534f449536aa88");
        assert_eq!(Ack::parse(&m).unwrap().token.unwrap().len(), 4);
        // A v3 ack with no token, or an empty one, is refused; a long token is cut.
        m.body = hex("01");
        assert!(Ack::parse(&m).is_err());
        m.body = hex("01 c3 82 534f 40");
        assert!(Ack::parse(&m).is_err());
        let long = Ack {
            wanted: 1,
            token: Some(Bytes::from(vec![7u8; 40])),
        };
        assert_eq!(
            Ack::parse(&long.to_vendor()).unwrap().token.unwrap().len(),
            MAX_TOKEN
        );
        m.version = 2;
        m.body = Bytes::new();
        assert!(Ack::parse(&m).is_err());
    }

    #[test]
    fn proxy_control_as_limewire_sends_it() {
        let f = hex("6592 24079b52f9a5a483f3d1a0dcdc00 31 01 00 09000000 4c494d45 0d00 0100 02");
        let m = vendor_of(&f);
        let c = ProxyControl::parse(&m).unwrap();
        assert_eq!(c.max_vetoed, Some(2));
        assert!(c.allows_v3());
        assert_eq!(c.to_vendor(), m);
        let veto = ProxyControl { max_vetoed: None };
        assert!(!veto.allows_v3());
        assert_eq!(ProxyControl::parse(&veto.to_vendor()).unwrap(), veto);
        assert!(
            !ProxyControl {
                max_vetoed: Some(3)
            }
            .allows_v3()
        );
    }

    #[test]
    fn the_token_of_captured_hits() {
        // LimeWire's hit to the gtk-gnutella proxy (SO after BH, XML after the
        // block), and gtk-gnutella's (SO after GTKGV), as captured
        // (udp-facts 4.3, `oob-proxy-*`); the GTA header of the second is cut.
        let lw = hex(concat!(
            "0b0000013f854e45acef525f52a04a658104004101000001ce180b0000055e01000003000000e0930400",
            "73657276656e745f616c7068615f736f6e672e6d70330075726e3a736861313a464948444c34455a4435",
            "5946504844574b3352424d505a4c424f53424b4747491c1cc302435444df89106b825454581940947bf2",
            "1d0691c4219e39ec4ddc09270fdded0102b054004c494d45043d219f0000c30242484082534f449536aa",
            "887b7d3c3f786d6c2076657273696f6e3d22312e30223f3e3c617564696f73207873693a6e6f4e616d65",
            "737061636553636865",
            "6d614c6f636174696f6e3d22687474703a2f2f7777772e6c696d65776972652e636f6d2f736368656d61",
            "732f617564696f2e787364223e3c617564696f207365636f6e64733d22342220626974726174653d2233",
            "38342220696e6465783d2230222f3e3c2f617564696f733e009f13278311269efbfe92595977532900",
        ));
        let gtk = hex(concat!(
            "0b0000017e8840c191df85611fa04a4b810100b000000001ca180b00000310000000020000000c000000",
            "756470627261766f5f74687265652e7478740075726e3a736861313a4b32434e564a5544594a46495434",
            "4b4e414e4e474e464c345655554a4633584a1cc3025454580c4f23430bd8188c58559cf8a284b87fe246",
            "82c480a68cc3824354443d0c5b660047544b47022c21c30547544b475653010102030065e3bd80000000",
            "0e0705a331000382534f4413893dbd56343102cbb2572c85db7e95b7f982ad",
        ));
        for (frame, token) in [
            (&lw, [0x95, 0x36, 0xaa, 0x88]),
            (&gtk, [0x13, 0x89, 0x3d, 0xbd]),
        ] {
            assert_eq!(frame[16], 0x81);
            let v = crate::wire::queryhit::QueryHitView::parse(&frame[23..]).unwrap();
            assert_eq!(hit_token(&v.trailer), Some(&token[..]));
        }
        // A hit with no trailer GGEP has no token.
        let plain = crate::wire::QueryHit {
            port: 1,
            ip: Ipv4Addr::LOCALHOST,
            speed: 0,
            results: vec![crate::wire::HitResult::new(1, 2, "a", None)],
            trailer: crate::wire::TrailerArea::None,
            servent: Guid([1; 16]),
        };
        let mut out = BytesMut::new();
        plain.encode(&mut out).unwrap();
        let v = crate::wire::queryhit::QueryHitView::parse(&out).unwrap();
        assert_eq!(hit_token(&v.trailer), None);
        let _ = Function::QueryHit;
    }
}
