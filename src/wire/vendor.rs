//! Vendor messages (0x31 and the "standard" 0x32): vendor, selector, version, body.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError, WireResult};

/// The all-zero vendor used by the "Messages Supported" family.
pub const NULL_VENDOR: [u8; 4] = [0; 4];

/// A vendor message. The vendor code is compared exactly (case-sensitive); the
/// body is kept as it is for the handler of that message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VendorMsg {
    pub vendor: [u8; 4],
    pub selector: u16,
    pub version: u16,
    pub body: Bytes,
}

/// One entry of a "Messages Supported" list.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Supported {
    pub vendor: [u8; 4],
    pub selector: u16,
    pub version: u16,
}

impl VendorMsg {
    /// Parses a vendor-message payload.
    pub fn parse(payload: &Bytes) -> WireResult<VendorMsg> {
        if payload.len() < 8 {
            return Err(WireError::Truncated {
                what: "vendor message",
            });
        }
        Ok(VendorMsg {
            vendor: [payload[0], payload[1], payload[2], payload[3]],
            selector: u16::from_le_bytes([payload[4], payload[5]]),
            version: u16::from_le_bytes([payload[6], payload[7]]),
            body: payload.slice(8..),
        })
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_slice(&self.vendor);
        out.put_u16_le(self.selector);
        out.put_u16_le(self.version);
        out.put_slice(&self.body);
        Ok(())
    }

    /// Whether this is `vendor/selector` (any version).
    pub fn is(&self, vendor: &[u8; 4], selector: u16) -> bool {
        &self.vendor == vendor && self.selector == selector
    }

    /// A "Messages Supported" (`null/0v0`) message listing `entries`.
    pub fn messages_supported(entries: &[Supported]) -> VendorMsg {
        let mut body = BytesMut::with_capacity(2 + 8 * entries.len());
        body.put_u16_le(entries.len() as u16);
        for e in entries {
            body.put_slice(&e.vendor);
            body.put_u16_le(e.selector);
            body.put_u16_le(e.version);
        }
        VendorMsg {
            vendor: NULL_VENDOR,
            selector: 0,
            version: 0,
            body: body.freeze(),
        }
    }

    /// The entries of a "Messages Supported" body: a u16le count then that many
    /// 8-byte entries, exactly.
    pub fn supported_entries(&self) -> WireResult<Vec<Supported>> {
        const WHAT: &str = "messages supported";
        let b = &self.body;
        if b.len() < 2 {
            return Err(WireError::Truncated { what: WHAT });
        }
        let count = u16::from_le_bytes([b[0], b[1]]) as usize;
        // Bytes after the last entry are ignored, as the shipped servents do.
        if b.len() < 2 + 8 * count {
            return Err(WireError::BadLength {
                what: WHAT,
                expected: 2 + 8 * count,
                got: b.len(),
            });
        }
        Ok(b[2..2 + 8 * count]
            .chunks_exact(8)
            .map(|e| Supported {
                vendor: [e[0], e[1], e[2], e[3]],
                selector: u16::from_le_bytes([e[4], e[5]]),
                version: u16::from_le_bytes([e[6], e[7]]),
            })
            .collect())
    }
}

/// One entry of a "Capabilities" (LimeWire) or "Features Supported"
/// (gtk-gnutella) message, `null/10`: a four-letter name and a version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Capability {
    pub name: [u8; 4],
    pub version: u32,
}

/// Capabilities a list may hold at most; longer lists are cut.
pub const MAX_CAPABILITIES: usize = 64;

impl VendorMsg {
    /// Selector of "Messages Supported" (vendor [`NULL_VENDOR`]).
    pub const MESSAGES_SUPPORTED: u16 = 0;
    /// Selector of "Capabilities" / "Features Supported" (vendor [`NULL_VENDOR`]).
    pub const CAPABILITIES: u16 = 10;

    /// A "Capabilities" message (`null/10v0`, the form gtk-gnutella sends and
    /// LimeWire reads): a u16le count, then {name, u16le version} each.
    pub fn capabilities(caps: &[Capability]) -> VendorMsg {
        let mut body = BytesMut::with_capacity(2 + 6 * caps.len());
        body.put_u16_le(caps.len() as u16);
        for c in caps {
            body.put_slice(&c.name);
            body.put_u16_le(c.version.min(u16::MAX as u32) as u16);
        }
        VendorMsg {
            vendor: NULL_VENDOR,
            selector: Self::CAPABILITIES,
            version: 0,
            body: body.freeze(),
        }
    }

    /// The entries of a "Capabilities" body, v0 or v1: a u16le count and
    /// {name, u16le version} entries; in v1 optionally a second list, u16le count
    /// and {name, u32le version}, whose versions replace the first list's (they
    /// are the ones above 65535). At most [`MAX_CAPABILITIES`] are kept; bytes
    /// after the lists are ignored.
    pub fn capability_entries(&self) -> WireResult<Vec<Capability>> {
        const WHAT: &str = "capabilities";
        let b = &self.body[..];
        let count = |at: usize| -> WireResult<usize> {
            b.get(at..at + 2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as usize)
                .ok_or(WireError::Truncated { what: WHAT })
        };
        let n = count(0)?;
        let end = 2 + 6 * n;
        if b.len() < end {
            return Err(WireError::Truncated { what: WHAT });
        }
        let mut caps: Vec<Capability> = b[2..end]
            .chunks_exact(6)
            .take(MAX_CAPABILITIES)
            .map(|e| Capability {
                name: [e[0], e[1], e[2], e[3]],
                version: u16::from_le_bytes([e[4], e[5]]) as u32,
            })
            .collect();
        if self.version >= 1 && b.len() >= end + 2 {
            let n2 = count(end)?;
            let end2 = end + 2 + 8 * n2;
            if b.len() < end2 {
                return Err(WireError::Truncated { what: WHAT });
            }
            for e in b[end + 2..end2].chunks_exact(8) {
                let name = [e[0], e[1], e[2], e[3]];
                let version = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
                if let Some(c) = caps.iter_mut().find(|c| c.name == name) {
                    c.version = version;
                } else if caps.len() < MAX_CAPABILITIES {
                    caps.push(Capability { name, version });
                }
            }
        }
        Ok(caps)
    }
}

/// BEAR/11v1, Query Status Request: an ultrapeer asks its leaf how many
/// results the leaf kept for a query it searches for it (leaf-guided dynamic
/// querying). The body is empty; the message's MUID is the query's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryStatusRequest;

/// BEAR/12v1, Query Status Response: the leaf's answer, the number of
/// results it kept (u16le), [`QueryStatusResponse::STOP`] when it wants no
/// more. The MUID is the query's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryStatusResponse {
    pub kept: u16,
}

impl QueryStatusRequest {
    pub const VENDOR: [u8; 4] = *b"BEAR";
    pub const SELECTOR: u16 = 11;
    pub const VERSION: u16 = 1;

    pub fn to_vendor(self) -> VendorMsg {
        VendorMsg {
            vendor: Self::VENDOR,
            selector: Self::SELECTOR,
            version: Self::VERSION,
            body: Bytes::new(),
        }
    }

    /// Reads one: anything in the body is ignored (there is none in v1).
    pub fn parse(m: &VendorMsg) -> Option<QueryStatusRequest> {
        m.is(&Self::VENDOR, Self::SELECTOR)
            .then_some(QueryStatusRequest)
    }
}

impl QueryStatusResponse {
    pub const VENDOR: [u8; 4] = *b"BEAR";
    pub const SELECTOR: u16 = 12;
    pub const VERSION: u16 = 1;
    /// "Stop the query."
    pub const STOP: u16 = 0xFFFF;

    /// Exactly two bytes of body.
    pub fn to_vendor(self) -> VendorMsg {
        VendorMsg {
            vendor: Self::VENDOR,
            selector: Self::SELECTOR,
            version: Self::VERSION,
            body: Bytes::copy_from_slice(&self.kept.to_le_bytes()),
        }
    }

    /// Reads one: at least two bytes of body (more are ignored, as shipped
    /// servents do); `None` when it is another message.
    pub fn parse(m: &VendorMsg) -> Option<WireResult<QueryStatusResponse>> {
        if !m.is(&Self::VENDOR, Self::SELECTOR) {
            return None;
        }
        Some(match m.body.get(..2) {
            Some(b) => Ok(QueryStatusResponse {
                kept: u16::from_le_bytes([b[0], b[1]]),
            }),
            None => Err(WireError::Truncated {
                what: "query status response",
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(version: u16, body: &[u8]) -> VendorMsg {
        VendorMsg {
            vendor: NULL_VENDOR,
            selector: VendorMsg::CAPABILITIES,
            version,
            body: Bytes::copy_from_slice(body),
        }
    }

    #[test]
    fn limewire_capabilities_v1_with_long_versions() {
        // As a LimeWire 5.6.2 ultrapeer sent it (udp-facts 7.2).
        let mut b = vec![5, 0];
        for (n, v) in [
            (b"F2FT", [1, 0]),
            (b"IMPP", [0xff, 0xff]),
            (b"LMUP", [0xff, 0xff]),
            (b"TCPI", [0, 0]),
            (b"WHAT", [1, 0]),
        ] {
            b.extend_from_slice(n);
            b.extend_from_slice(&v);
        }
        b.extend_from_slice(&[2, 0]);
        b.extend_from_slice(b"IMPP");
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        b.extend_from_slice(b"LMUP");
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        let caps = msg(1, &b).capability_entries().unwrap();
        assert_eq!(caps.len(), 5);
        assert_eq!(
            caps[1],
            Capability {
                name: *b"IMPP",
                version: 0x7fff_ffff
            }
        );
        assert_eq!(
            caps[3],
            Capability {
                name: *b"TCPI",
                version: 0
            }
        );
    }

    #[test]
    fn capabilities_round_trip_and_tolerance() {
        let ours = [
            Capability {
                name: *b"QRP1",
                version: 1,
            },
            Capability {
                name: *b"TCPI",
                version: 1,
            },
        ];
        let m = VendorMsg::capabilities(&ours);
        assert_eq!(m.capability_entries().unwrap(), ours);
        let mut longer = m.body.to_vec();
        longer.push(0);
        assert_eq!(msg(0, &longer).capability_entries().unwrap(), ours);
        assert!(msg(0, &m.body[..5]).capability_entries().is_err());
        // Messages Supported with a stray byte after its entries.
        let ms = VendorMsg::messages_supported(&[Supported {
            vendor: *b"LIME",
            selector: 21,
            version: 1,
        }]);
        let mut body = ms.body.to_vec();
        body.push(0);
        let ms2 = VendorMsg {
            body: Bytes::from(body),
            ..ms
        };
        assert_eq!(ms2.supported_entries().unwrap().len(), 1);
    }

    #[test]
    fn query_status_messages_round_trip() {
        let req = QueryStatusRequest.to_vendor();
        let mut out = BytesMut::new();
        req.encode(&mut out).unwrap();
        assert_eq!(&out[..], b"BEAR\x0b\x00\x01\x00");
        let back = VendorMsg::parse(&out.freeze()).unwrap();
        assert_eq!(QueryStatusRequest::parse(&back), Some(QueryStatusRequest));
        for kept in [0, 37, QueryStatusResponse::STOP] {
            let m = QueryStatusResponse { kept }.to_vendor();
            let mut out = BytesMut::new();
            m.encode(&mut out).unwrap();
            let mut want = b"BEAR\x0c\x00\x01\x00".to_vec();
            want.extend_from_slice(&kept.to_le_bytes());
            assert_eq!(&out[..], &want[..]);
            let back = VendorMsg::parse(&out.freeze()).unwrap();
            assert_eq!(
                QueryStatusResponse::parse(&back),
                Some(Ok(QueryStatusResponse { kept }))
            );
        }
        let short = VendorMsg {
            body: Bytes::from_static(&[1]),
            ..QueryStatusResponse { kept: 0 }.to_vendor()
        };
        assert!(matches!(QueryStatusResponse::parse(&short), Some(Err(_))));
        let long = VendorMsg {
            body: Bytes::from_static(&[5, 0, 9]),
            ..QueryStatusResponse { kept: 0 }.to_vendor()
        };
        assert_eq!(
            QueryStatusResponse::parse(&long),
            Some(Ok(QueryStatusResponse { kept: 5 }))
        );
        assert_eq!(QueryStatusResponse::parse(&req), None);
        assert_eq!(QueryStatusRequest::parse(&long), None);
    }
}
