//! The reachability messages: connect-back requests (BEAR/7, GTKG/7 v1 and
//! v2, LIME/7, LIME/8) as typed vendor-message bodies, and the `IP` GGEP of
//! a Ping asking for (and of a Pong telling) the address a datagram came from.
//! See `protocol-spec/reachability.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{WireError, WireResult};
use crate::wire::ggep::{Ggep, GgepExt};
use crate::wire::guid::Guid;
use crate::wire::vendor::VendorMsg;

/// BEAR/7v1 "TCP connect-back": connect to the sender's address at `port`,
/// write `\n\n`, close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConnectBack {
    pub port: u16,
}

impl TcpConnectBack {
    pub const VENDOR: [u8; 4] = *b"BEAR";
    pub const SELECTOR: u16 = 7;

    /// Reads the body: a u16le port (bytes after it are ignored, as
    /// gtk-gnutella and LimeWire ignore them).
    pub fn parse(body: &[u8]) -> WireResult<TcpConnectBack> {
        let p = body.get(..2).ok_or(WireError::Truncated {
            what: "BEAR/7 connect-back",
        })?;
        Ok(TcpConnectBack {
            port: u16::from_le_bytes([p[0], p[1]]),
        })
    }

    /// The message, version 1.
    pub fn to_vendor(self) -> VendorMsg {
        VendorMsg {
            vendor: Self::VENDOR,
            selector: Self::SELECTOR,
            version: 1,
            body: Bytes::copy_from_slice(&self.port.to_le_bytes()),
        }
    }
}

/// GTKG/7 "UDP connect-back": send an empty Ping (TTL 1) to the sender's
/// address at `port`. Version 1 names the Ping's MUID (`guid`: gtk-gnutella
/// puts its servent GUID there); in version 2 the Ping reuses the request's
/// own MUID (`guid` is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpConnectBack {
    pub port: u16,
    pub guid: Option<Guid>,
}

impl UdpConnectBack {
    pub const VENDOR: [u8; 4] = *b"GTKG";
    pub const SELECTOR: u16 = 7;

    /// Reads a body of `version`: v1 is u16le port + GUID (18 bytes), v2 the
    /// port alone (2 bytes). LimeWire insists on those exact lengths;
    /// gtk-gnutella reads at least them, and so do we (longer is tolerated).
    pub fn parse(version: u16, body: &[u8]) -> WireResult<UdpConnectBack> {
        const WHAT: &str = "GTKG/7 connect-back";
        let need = match version {
            1 => 18,
            2 => 2,
            v => {
                return Err(WireError::BadValue {
                    what: WHAT,
                    value: v.into(),
                });
            }
        };
        if body.len() < need {
            return Err(WireError::BadLength {
                what: WHAT,
                expected: need,
                got: body.len(),
            });
        }
        let port = u16::from_le_bytes([body[0], body[1]]);
        let guid = (version == 1).then(|| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&body[2..18]);
            Guid(g)
        });
        Ok(UdpConnectBack { port, guid })
    }

    /// The message: version 1 when it names a GUID, else version 2.
    pub fn to_vendor(self) -> VendorMsg {
        let mut body = BytesMut::with_capacity(18);
        body.put_u16_le(self.port);
        if let Some(g) = self.guid {
            body.put_slice(&g.0);
        }
        VendorMsg {
            vendor: Self::VENDOR,
            selector: Self::SELECTOR,
            version: if self.guid.is_some() { 1 } else { 2 },
            body: body.freeze(),
        }
    }
}

/// LIME/7v1 (TCP) and LIME/8v1 (UDP) "connect-back redirect": have a host
/// connect (TCP) or send a Ping (UDP, MUID = the request's) to `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectBackRedirect {
    /// LIME/8 (UDP) rather than LIME/7 (TCP).
    pub udp: bool,
    pub addr: SocketAddrV4,
}

impl ConnectBackRedirect {
    pub const VENDOR: [u8; 4] = *b"LIME";
    pub const TCP_SELECTOR: u16 = 7;
    pub const UDP_SELECTOR: u16 = 8;

    /// Reads the body of LIME/7 (`udp` false) or LIME/8: IPv4 big-endian then
    /// port little-endian (6 bytes; more are ignored).
    pub fn parse(udp: bool, body: &[u8]) -> WireResult<ConnectBackRedirect> {
        let b = body.get(..6).ok_or(WireError::Truncated {
            what: "LIME connect-back redirect",
        })?;
        Ok(ConnectBackRedirect {
            udp,
            addr: SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                u16::from_le_bytes([b[4], b[5]]),
            ),
        })
    }

    /// The message, version 1.
    pub fn to_vendor(self) -> VendorMsg {
        let mut body = BytesMut::with_capacity(6);
        body.put_slice(&self.addr.ip().octets());
        body.put_u16_le(self.addr.port());
        VendorMsg {
            vendor: Self::VENDOR,
            selector: if self.udp {
                Self::UDP_SELECTOR
            } else {
                Self::TCP_SELECTOR
            },
            version: 1,
            body: body.freeze(),
        }
    }
}

/// Which connect-back a vendor message is, read from its header and body
/// (`None`: not one of them).
pub fn connect_back(m: &VendorMsg) -> Option<WireResult<ConnectBack>> {
    let r = if m.is(&TcpConnectBack::VENDOR, TcpConnectBack::SELECTOR) {
        TcpConnectBack::parse(&m.body).map(ConnectBack::Tcp)
    } else if m.is(&UdpConnectBack::VENDOR, UdpConnectBack::SELECTOR) {
        UdpConnectBack::parse(m.version, &m.body).map(ConnectBack::Udp)
    } else if m.is(
        &ConnectBackRedirect::VENDOR,
        ConnectBackRedirect::TCP_SELECTOR,
    ) {
        ConnectBackRedirect::parse(false, &m.body).map(ConnectBack::Redirect)
    } else if m.is(
        &ConnectBackRedirect::VENDOR,
        ConnectBackRedirect::UDP_SELECTOR,
    ) {
        ConnectBackRedirect::parse(true, &m.body).map(ConnectBack::Redirect)
    } else {
        return None;
    };
    Some(r)
}

/// A connect-back request of any kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectBack {
    Tcp(TcpConnectBack),
    Udp(UdpConnectBack),
    Redirect(ConnectBackRedirect),
}

/// The GGEP of a Ping asking "where do you see this datagram from?": an
/// empty `IP`.
pub fn ip_request() -> Ggep {
    Ggep::new(vec![GgepExt::flag("IP")])
}

/// Whether a Ping's GGEP asks for our address as seen (`IP`, empty).
pub fn asks_ip(g: &Ggep) -> bool {
    g.get("IP").is_some_and(|e| e.data.is_empty())
}

/// The `IP` of a Pong answering such a Ping: the address the Ping came from,
/// IPv4 big-endian + port little-endian (6 bytes), or IPv6 (18 bytes).
pub fn ip_answer(seen: SocketAddr) -> GgepExt {
    let mut v = Vec::with_capacity(18);
    match seen.ip() {
        IpAddr::V4(ip) => v.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => v.extend_from_slice(&ip.octets()),
    }
    v.extend_from_slice(&seen.port().to_le_bytes());
    GgepExt::new("IP", v)
}

/// Reads a Pong's `IP`: 6 bytes (IPv4) or 18 (IPv6). An empty, unspecified or
/// odd-sized value says nothing.
pub fn ip_seen(g: &Ggep) -> Option<SocketAddr> {
    let d = &g.get("IP")?.data;
    let (ip, port) = match d.len() {
        6 => (
            IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])),
            [d[4], d[5]],
        ),
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&d[..16]);
            (IpAddr::V6(Ipv6Addr::from(o)), [d[16], d[17]])
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, u16::from_le_bytes(port))).filter(|a| !a.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let tcp = TcpConnectBack { port: 6346 };
        assert_eq!(TcpConnectBack::parse(&tcp.to_vendor().body), Ok(tcp));
        let g = Guid([7; 16]);
        for udp in [
            UdpConnectBack {
                port: 6346,
                guid: Some(g),
            },
            UdpConnectBack {
                port: 1,
                guid: None,
            },
        ] {
            let m = udp.to_vendor();
            assert_eq!(connect_back(&m), Some(Ok(ConnectBack::Udp(udp))), "{udp:?}");
        }
        for udp in [false, true] {
            let r = ConnectBackRedirect {
                udp,
                addr: "203.0.113.5:6346".parse().unwrap(),
            };
            assert_eq!(
                connect_back(&r.to_vendor()),
                Some(Ok(ConnectBack::Redirect(r)))
            );
        }
        for a in ["203.0.113.77:40000", "[2001:db8::1]:6346"] {
            let a: SocketAddr = a.parse().unwrap();
            assert_eq!(ip_seen(&Ggep::new(vec![ip_answer(a)])), Some(a));
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.as_bytes()).unwrap()
    }

    fn framed(m: crate::wire::Message, muid: &str) -> Vec<u8> {
        let mut g = [0u8; 16];
        g.copy_from_slice(&hex(muid));
        let mut out = BytesMut::new();
        m.encode_frame(Guid(g), crate::wire::Ttl(1), crate::wire::Hops(0), &mut out)
            .unwrap();
        out.to_vec()
    }

    /// The frames of udp-facts section 12 (constructed.json), byte for
    /// byte, both ways.
    #[test]
    fn golden_vectors() {
        use crate::wire::{Message, Ping, Pong};
        const MUID: &str = "0123456789abcdefff00112233445500";
        const ZERO: &str = "00000000000000000000000000000000";
        let bear7 = "000000000000000000000000000000003101000a0000004245415207000100ca18";
        assert_eq!(
            framed(
                Message::Vendor(TcpConnectBack { port: 6346 }.to_vendor()),
                ZERO
            ),
            hex(bear7)
        );
        let gtkg7v2 = "0123456789abcdefff001122334455003101000a00000047544b4707000200ca18";
        let v2 = UdpConnectBack {
            port: 6346,
            guid: None,
        };
        assert_eq!(framed(Message::Vendor(v2.to_vendor()), MUID), hex(gtkg7v2));
        let gtkg7v1 = "000000000000000000000000000000003101001a00000047544b4707000100ca18a1b2c3d4e5f60718ff293a4b5c6d7e00";
        let g = Guid(hex("a1b2c3d4e5f60718ff293a4b5c6d7e00").try_into().unwrap());
        let v1 = UdpConnectBack {
            port: 6346,
            guid: Some(g),
        };
        assert_eq!(framed(Message::Vendor(v1.to_vendor()), ZERO), hex(gtkg7v1));
        // And read back from the vectors' bodies.
        for (v, want) in [
            (gtkg7v1, ConnectBack::Udp(v1)),
            (gtkg7v2, ConnectBack::Udp(v2)),
        ] {
            let m = VendorMsg::parse(&Bytes::from(hex(v)[23..].to_vec())).unwrap();
            assert_eq!(connect_back(&m), Some(Ok(want)));
        }
        let cb_ping = "a1b2c3d4e5f60718ff293a4b5c6d7e0000010000000000";
        assert_eq!(
            framed(
                Message::Ping(Ping::default()),
                "a1b2c3d4e5f60718ff293a4b5c6d7e00"
            ),
            hex(cb_ping)
        );
        let ip_ping = "0123456789abcdefff0011223344550000010005000000c382495040";
        assert_eq!(
            framed(
                Message::Ping(Ping {
                    ggep: Some(ip_request())
                }),
                MUID
            ),
            hex(ip_ping)
        );
        let ip_pong = "0123456789abcdefff0011223344550001010019000000ca18c63364010000000008000000c382495046cb00714d409c";
        let seen: SocketAddr = "203.0.113.77:40000".parse().unwrap();
        let pong = Pong {
            port: 6346,
            ip: Ipv4Addr::new(198, 51, 100, 1),
            files: 0,
            kbytes: 8,
            ggep: Some(Ggep::new(vec![ip_answer(seen)])),
        };
        assert_eq!(framed(Message::Pong(pong), MUID), hex(ip_pong));
        let mut budget = 1 << 16;
        let read = Pong::parse(&Bytes::from(hex(ip_pong)[23..].to_vec()), &mut budget).unwrap();
        assert_eq!(read.ggep.as_ref().and_then(ip_seen), Some(seen));
        // LIME/7 and LIME/8 (not in the vectors): vendor, selector, version 1,
        // then IPv4 big-endian and port little-endian, as udp-facts 7.3 says.
        let addr = "198.51.100.7:6346".parse().unwrap();
        let lime7 = "0123456789abcdefff001122334455003101000e0000004c494d4507000100c6336407ca18";
        let lime8 = "0123456789abcdefff001122334455003101000e0000004c494d4508000100c6336407ca18";
        for (udp, v) in [(false, lime7), (true, lime8)] {
            let r = ConnectBackRedirect { udp, addr };
            assert_eq!(framed(Message::Vendor(r.to_vendor()), MUID), hex(v));
        }
    }

    #[test]
    fn short_and_odd_bodies_are_errors_not_panics() {
        assert!(TcpConnectBack::parse(&[1]).is_err());
        assert!(UdpConnectBack::parse(1, &[0; 17]).is_err());
        assert!(UdpConnectBack::parse(2, &[0]).is_err());
        assert!(UdpConnectBack::parse(3, &[0; 18]).is_err());
        assert!(ConnectBackRedirect::parse(true, &[0; 5]).is_err());
        // Longer than needed is tolerated.
        assert_eq!(
            UdpConnectBack::parse(2, &[0xca, 0x18, 9]),
            Ok(UdpConnectBack {
                port: 6346,
                guid: None
            })
        );
        assert_eq!(
            ip_seen(&Ggep::new(vec![GgepExt::new("IP", vec![1, 2, 3])])),
            None
        );
        assert_eq!(
            ip_seen(&Ggep::new(vec![GgepExt::new("IP", vec![0; 6])])),
            None
        );
        assert!(asks_ip(&ip_request()));
    }
}
