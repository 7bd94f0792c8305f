//! Gnutella over UDP: one descriptor per datagram (`protocol-spec/udp.md`).
//!
//! A datagram is the 23-byte header and the payload, with no length prefix
//! and no stream compression; the header's length field must equal what
//! follows it. On UDP two bits of the TTL carry meaning: a request with 0x08
//! set says "you may deflate your replies", and a reply with 0x80 set has a
//! zlib-deflated payload (gtk-gnutella's "UDP traffic compression"). gtk's
//! semi-reliable layer ("GTA"/"GND" tags) and Kademlia DHT messages (function
//! 0x44) share the port; they are recognised so that they are counted for
//! what they are, not as garbage.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use super::{Frame, Function, HEADER_LEN, Header, Ttl};

/// TTL bit of a request: the sender can inflate a deflated reply.
pub const TTL_DEFLATE_OK: u8 = 0x08;
/// TTL bit of a datagram whose payload is deflated.
pub const TTL_DEFLATED: u8 = 0x80;
/// The largest datagram read or sent (an IPv4 UDP payload's limit).
pub const MAX_DATAGRAM: usize = 65_507;
/// The most an inflated payload may grow to.
pub const MAX_INFLATED: usize = super::MAX_PAYLOAD as usize;
/// Function code of Kademlia (Mojito) DHT messages.
pub const FUNCTION_DHT: u8 = 0x44;
/// Function code of RUDP (firewall-to-firewall transfers).
pub const FUNCTION_RUDP: u8 = 0x41;

/// A datagram read off the Gnutella UDP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// The message, its payload inflated and the TTL's flag bits cleared.
    pub frame: Frame,
    /// The sender may inflate our reply (TTL bit 0x08).
    pub deflate_ok: bool,
    /// The payload came deflated.
    pub was_deflated: bool,
}

/// Why a datagram is not a Gnutella message we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    #[error("shorter than a header")]
    Short,
    #[error("length field says {said} bytes, {got} follow")]
    SizeMismatch { said: u32, got: usize },
    #[error("a semi-reliable UDP fragment")]
    SemiReliable,
    #[error("a DHT message")]
    Dht,
    #[error("an RUDP message")]
    Rudp,
    #[error("deflated payload that does not inflate")]
    BadDeflate,
    #[error("deflated payload over {MAX_INFLATED} bytes")]
    InflatedTooLarge,
}

impl UdpError {
    /// The counter name of the drop.
    pub fn reason(self) -> &'static str {
        match self {
            UdpError::Short => "short",
            UdpError::SizeMismatch { .. } => "size-mismatch",
            UdpError::SemiReliable => "semi-reliable",
            UdpError::Dht => "dht",
            UdpError::Rudp => "rudp",
            UdpError::BadDeflate => "bad-deflate",
            UdpError::InflatedTooLarge => "inflated-too-large",
        }
    }
}

/// Whether `b` starts with a semi-reliable UDP header ("GTA" or "GND", a
/// flags byte whose low, critical nibble is one we know of, and a part
/// number no larger than the count, or an acknowledgement).
pub fn is_semi_reliable(b: &[u8]) -> bool {
    if b.len() < 8 || !(b.starts_with(b"GTA") || b.starts_with(b"GND")) {
        return false;
    }
    let (part, count) = (b[6], b[7]);
    count == 0 || (part >= 1 && part <= count)
}

/// Reads one datagram. The length field must equal what follows the
/// header; a payload marked deflated is inflated (to at most
/// [`MAX_INFLATED`] bytes) and the mark cleared, as is the "may deflate"
/// bit.
pub fn parse(datagram: Bytes) -> Result<Datagram, UdpError> {
    let header = Header::parse_prefix(&datagram);
    let gnutella_len = header.filter(|h| {
        h.payload_len as usize + HEADER_LEN == datagram.len() && h.payload_len <= 0xffff
    });
    if gnutella_len.is_none() && is_semi_reliable(&datagram) {
        return Err(UdpError::SemiReliable);
    }
    let Some(header) = header else {
        return Err(UdpError::Short);
    };
    let Some(mut header) = gnutella_len else {
        return Err(UdpError::SizeMismatch {
            said: header.payload_len,
            got: datagram.len() - HEADER_LEN,
        });
    };
    // A valid Gnutella length that also reads as a semi-reliable fragment is
    // taken as Gnutella only if its TTL and hops look like one.
    if is_semi_reliable(&datagram) && (header.hops.0 >= 3 || header.ttl.0 & 0x77 > 7) {
        return Err(UdpError::SemiReliable);
    }
    match header.function.code() {
        FUNCTION_DHT => return Err(UdpError::Dht),
        FUNCTION_RUDP => return Err(UdpError::Rudp),
        _ => {}
    }
    let deflate_ok = header.ttl.0 & TTL_DEFLATE_OK != 0;
    let was_deflated = header.ttl.0 & TTL_DEFLATED != 0;
    header.ttl = Ttl(header.ttl.0 & !(TTL_DEFLATE_OK | TTL_DEFLATED));
    let mut payload = datagram.slice(HEADER_LEN..);
    if was_deflated {
        payload = inflate(&payload)?;
    }
    header.payload_len = payload.len() as u32;
    Ok(Datagram {
        frame: Frame { header, payload },
        deflate_ok,
        was_deflated,
    })
}

fn inflate(data: &[u8]) -> Result<Bytes, UdpError> {
    let mut out = Vec::with_capacity(data.len() * 2);
    let mut dec = flate2::read::ZlibDecoder::new_with_decompress(data, super::zlib_inflater())
        .take(MAX_INFLATED as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|_| UdpError::BadDeflate)?;
    if out.len() > MAX_INFLATED {
        return Err(UdpError::InflatedTooLarge);
    }
    Ok(Bytes::from(out))
}

/// Encodes `frame` as one datagram. With `deflate` (the request said it may
/// be), the payload is deflated and TTL bit 0x80 set, but only when that
/// makes it shorter. The TTL's flag bits in `frame` are sent as they are.
pub fn encode(frame: &Frame, deflate: bool) -> Bytes {
    if deflate && frame.payload.len() > 32 {
        let mut enc = flate2::write::ZlibEncoder::new(
            Vec::with_capacity(frame.payload.len()),
            flate2::Compression::default(),
        );
        let packed = enc
            .write_all(&frame.payload)
            .and_then(|_| enc.finish())
            .ok()
            .filter(|p| p.len() < frame.payload.len());
        if let Some(p) = packed {
            let header = Header {
                ttl: Ttl(frame.header.ttl.0 | TTL_DEFLATED),
                payload_len: p.len() as u32,
                ..frame.header
            };
            let mut out = BytesMut::with_capacity(HEADER_LEN + p.len());
            out.put_slice(&header.to_bytes());
            out.put_slice(&p);
            return out.freeze();
        }
    }
    let mut out = BytesMut::with_capacity(frame.wire_len());
    frame.encode(&mut out);
    out.freeze()
}

/// Whether a function is read over UDP at all (Bye and QRP are TCP only).
pub fn travels_over_udp(function: Function) -> bool {
    !matches!(function, Function::Bye | Function::RouteTable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Guid, Hops};

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn frame(function: Function, ttl: u8, payload: &[u8]) -> Frame {
        Frame {
            header: Header {
                guid: Guid([7; 16]),
                function,
                ttl: Ttl(ttl),
                hops: Hops(0),
                payload_len: payload.len() as u32,
            },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn captured_uhc_ping_reads() {
        // gtk-gnutella ultrapeer to a host cache (udp-facts 2.1).
        let b = hex(
            "2a 06 31 02 17 c8 3b 72 b1 db 54 a8 a5 dd 29 e4 00 01 00 18 00 00 00
             c3 03 53 43 50 41 01 02 56 43 45 47 54 4b 47 83 86 44 48 54 49 50 50 40",
        );
        let d = parse(Bytes::from(b)).unwrap();
        assert_eq!(d.frame.header.function, Function::Ping);
        assert_eq!(d.frame.payload.len(), 24);
        assert!(!d.deflate_ok && !d.was_deflated);
    }

    #[test]
    fn length_must_match() {
        let f = frame(Function::Ping, 1, b"");
        let mut b = encode(&f, false).to_vec();
        b.push(0);
        assert_eq!(
            parse(Bytes::from(b)),
            Err(UdpError::SizeMismatch { said: 0, got: 1 })
        );
        assert_eq!(parse(Bytes::from_static(&[0; 10])), Err(UdpError::Short));
    }

    #[test]
    fn deflate_round_trip_and_flags() {
        let payload = vec![b'a'; 500];
        let f = frame(Function::QueryHit, 6, &payload);
        let wire = encode(&f, true);
        assert!(wire.len() < 100);
        assert_eq!(wire[17], 0x86);
        let d = parse(wire).unwrap();
        assert!(d.was_deflated);
        assert_eq!(d.frame, f);
        // Too short to gain: sent plain.
        let small = frame(Function::Pong, 1, &[1; 14]);
        assert_eq!(encode(&small, true)[17], 1);
        // The "may deflate" bit is read and cleared.
        let ask = frame(Function::Vendor, 9, &[0; 9]);
        let d = parse(encode(&ask, false)).unwrap();
        assert!(d.deflate_ok);
        assert_eq!(d.frame.header.ttl, Ttl(1));
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let zeros = vec![0u8; MAX_INFLATED + 10];
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&zeros).unwrap();
        let packed = enc.finish().unwrap();
        let mut f = frame(Function::QueryHit, 0x80 | 2, &packed);
        f.header.payload_len = packed.len() as u32;
        assert_eq!(parse(encode(&f, false)), Err(UdpError::InflatedTooLarge));
        let bad = frame(Function::QueryHit, 0x82, &[1, 2, 3, 4]);
        assert_eq!(parse(encode(&bad, false)), Err(UdpError::BadDeflate));
    }

    #[test]
    fn semi_reliable_and_dht_are_recognised() {
        // The captured GTA fragment and its acknowledgement (udp-facts 1.4).
        let frag = hex(
            "47 54 41 02 09 34 01 01 0b 00 00 01 7e 88 40 c1 91 df 85 61 1f a0 4a 4b
             31 01 00 0a 00 00 00 4c 49 4d 45 0c 00 03 00 01 01",
        );
        assert_eq!(parse(Bytes::from(frag)), Err(UdpError::SemiReliable));
        let ack = hex("47 54 41 00 09 34 01 00");
        assert_eq!(parse(Bytes::from(ack)), Err(UdpError::SemiReliable));
        let dht = frame(Function::from_code(0x44), 1, &[0; 30]);
        assert_eq!(parse(encode(&dht, false)), Err(UdpError::Dht));
    }
}
