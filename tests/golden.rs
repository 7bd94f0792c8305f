//! Golden vectors: the worked messages of the protocol fact sheet (§1.11) and the
//! QueryHit trailer flag cases (§1.7.3), decoded field by field and re-encoded
//! byte for byte.

use std::net::Ipv4Addr;

use bytes::{Bytes, BytesMut};
use servent::framing::DescriptorCodec;
use servent::wire::bye::CODE_SHUTDOWN;
use servent::wire::ext::ExtItem;
use servent::wire::huge::Sha1Urn;
use servent::wire::queryhit::OpenDataFlags;
use servent::wire::vendor::Supported;
use servent::wire::{
    Frame, Function, Ggep, GgepExt, Guid, Hops, Message, QueryFlags, RouteTableUpdate, TrailerArea,
    Ttl,
};
use tokio_util::codec::Decoder;

const MUID: &str = "01 23 45 67 89 ab cd ef ff 00 11 22 33 44 55 00";
const SERVENT: &str = "a1 b2 c3 d4 e5 f6 07 18 ff 29 3a 4b 5c 6d 7e 00";

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .flat_map(|tok| {
            // Allow quoted ASCII runs: "text"
            if let Some(t) = tok.strip_prefix('"') {
                return t.trim_end_matches('"').bytes().collect::<Vec<_>>();
            }
            vec![u8::from_str_radix(tok, 16).expect(tok)]
        })
        .collect()
}

fn guid(s: &str) -> Guid {
    Guid::from_slice(&hex(s)).unwrap()
}

/// Decodes one whole frame through the stream codec, checks nothing is left over,
/// parses its payload, and checks the message re-encodes to the same bytes.
fn decode_exact(wire: &[u8]) -> (Frame, Message) {
    let mut buf = BytesMut::from(wire);
    let frame = DescriptorCodec::default()
        .decode(&mut buf)
        .expect("framing")
        .expect("a whole frame");
    assert!(buf.is_empty(), "frame consumed exactly");
    let msg = frame.message().expect("payload parses");
    let mut out = BytesMut::new();
    msg.encode_frame(
        frame.header.guid,
        frame.header.ttl,
        frame.header.hops,
        &mut out,
    )
    .expect("encodes");
    assert_eq!(
        hexdump(&out),
        hexdump(wire),
        "re-encoding is byte-identical"
    );
    (frame, msg)
}

fn hexdump(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn ping() {
    let wire = hex(&format!("{MUID} 00 01 00 00 00 00 00"));
    let (f, m) = decode_exact(&wire);
    assert_eq!(f.header.guid, guid(MUID));
    assert_eq!(f.header.function, Function::Ping);
    assert_eq!((f.header.ttl, f.header.hops), (Ttl(1), Hops(0)));
    assert_eq!(m, Message::Ping(Default::default()));
}

#[test]
fn pong_with_ggep() {
    let wire = hex(&format!(
        "{MUID} 01 03 00 25 00 00 00
         ca 18 c0 00 02 0a 64 00 00 00 00 10 00 00
         c3 02 44 55 42 10 0e 02 55 50 43 00 1e 05 82 56 43 45 47 54 4b 47 1c"
    ));
    let (f, m) = decode_exact(&wire);
    assert_eq!((f.header.ttl, f.header.hops), (Ttl(3), Hops(0)));
    let Message::Pong(p) = m else {
        panic!("not a pong")
    };
    assert_eq!(p.port, 6346);
    assert_eq!(p.ip, Ipv4Addr::new(192, 0, 2, 10));
    assert_eq!((p.files, p.kbytes), (100, 4096));
    let g = p.ggep.unwrap();
    assert_eq!(g.get("DU").unwrap().as_int(), Some(3600));
    assert_eq!(g.get("UP").unwrap().data, &[0, 30, 5][..]);
    assert_eq!(g.get("VC").unwrap().data, &b"GTKG\x1c"[..]);
}

#[test]
fn query_with_urn_and_ggep() {
    let wire = hex(&format!(
        "{MUID} 80 04 00 1b 00 00 00
         a8 00 \"free\" 20 \"software\" 00 \"urn:\" 1c c3 82 50 52 40 00"
    ));
    let (f, m) = decode_exact(&wire);
    assert_eq!(f.header.ttl, Ttl(4));
    let Message::Query(q) = m else {
        panic!("not a query")
    };
    assert_eq!(q.flags, QueryFlags([0xa8, 0x00]));
    assert!(q.flags.is_flags());
    assert!(q.flags.has(QueryFlags::XML));
    assert!(q.flags.has(QueryFlags::GGEP_H));
    assert!(!q.flags.has(QueryFlags::FIREWALLED));
    assert_eq!(q.flags.max_hits(), Some(0));
    assert_eq!(q.text_lossy(), "free software");
    assert_eq!(q.ext.items.len(), 2);
    assert_eq!(q.ext.items[0], ExtItem::Urn(Bytes::from_static(b"urn:")));
    let g = q.ext.ggep().unwrap();
    assert_eq!(g.exts.len(), 1);
    assert_eq!(g.exts[0].id.as_str(), "PR");
    assert!(g.exts[0].data.is_empty());
}

#[test]
fn query_hit_with_cobs_alt_and_trailer() {
    let wire = hex(&format!(
        "{MUID} 81 05 00 71 00 00 00
         01 ca 18 cb 00 71 05 e8 03 00 00
         01 00 00 00 87 d6 12 00 \"linux.iso\" 00
         \"urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\" 1c
         c3 c3 41 4c 54 47 05 c6 33 64 14 02 19
         00
         47 54 4b 47 02 2c 29
         c3 82 42 48 40
         {SERVENT}"
    ));
    let (f, m) = decode_exact(&wire);
    assert_eq!(f.header.payload_len, 0x71);
    let Message::QueryHit(h) = m else {
        panic!("not a hit")
    };
    assert_eq!(h.port, 6346);
    assert_eq!(h.ip, Ipv4Addr::new(203, 0, 113, 5));
    assert_eq!(h.speed, 1000);
    assert_eq!(h.servent, guid(SERVENT));
    assert_eq!(h.results.len(), 1);
    let r = &h.results[0];
    assert_eq!((r.index, r.size, r.file_size()), (1, 1_234_567, 1_234_567));
    assert_eq!(r.name_lossy(), "linux.iso");
    assert_eq!(
        r.ext.sha1_urns().collect::<Vec<_>>(),
        vec![Sha1Urn::digest(b"abc")]
    );
    let alt = r.ext.ggep().unwrap().get("ALT").unwrap();
    assert_eq!(alt.data, &[0xc6, 0x33, 0x64, 0x14, 0x00, 0x19][..]);
    let t = h.qhd().unwrap();
    assert_eq!(&t.vendor, b"GTKG");
    let flags = t.flags();
    assert_eq!(flags.push, Some(false));
    assert_eq!(flags.busy, Some(false));
    assert_eq!(flags.uploaded, Some(true));
    assert_eq!(flags.measured_speed, None);
    assert_eq!(flags.ggep, Some(true));
    assert!(t.private.prefix.is_empty() && t.private.rest.is_empty());
    assert!(t.private.ggep.as_ref().unwrap().get("BH").is_some());
}

#[test]
fn query_hit_built_from_parts_matches_the_vector() {
    use servent::wire::{HitResult, QueryHit, Trailer};
    let mut r = HitResult::new(1, 1_234_567, "linux.iso", Some(&Sha1Urn::digest(b"abc")));
    r.ext.items.push(ExtItem::Ggep(Ggep::new(vec![GgepExt::new(
        "ALT",
        hex("c6 33 64 14 00 19"),
    )])));
    let flags = OpenDataFlags {
        push: Some(false),
        busy: Some(false),
        uploaded: Some(true),
        ..OpenDataFlags::default()
    };
    let hit = QueryHit {
        port: 6346,
        ip: Ipv4Addr::new(203, 0, 113, 5),
        speed: 1000,
        results: vec![r],
        trailer: TrailerArea::Qhd(Trailer::new(
            *b"GTKG",
            flags,
            Some(Ggep::new(vec![GgepExt::flag("BH")])),
        )),
        servent: guid(SERVENT),
    };
    let frame = Frame::new(&Message::QueryHit(hit), guid(MUID), Ttl(5), Hops(0)).unwrap();
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    let (want, _) = decode_exact(&hex(&format!(
        "{MUID} 81 05 00 71 00 00 00
         01 ca 18 cb 00 71 05 e8 03 00 00
         01 00 00 00 87 d6 12 00 \"linux.iso\" 00
         \"urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\" 1c
         c3 c3 41 4c 54 47 05 c6 33 64 14 02 19 00
         47 54 4b 47 02 2c 29 c3 82 42 48 40 {SERVENT}"
    )));
    assert_eq!(frame, want);
}

#[test]
fn push() {
    let wire = hex(&format!(
        "fe dc ba 98 76 54 32 10 ff 01 02 03 04 05 ff 00 40 05 00 1a 00 00 00
         {SERVENT} 01 00 00 00 c6 33 64 07 ca 18"
    ));
    let (_, m) = decode_exact(&wire);
    let Message::Push(p) = m else {
        panic!("not a push")
    };
    assert_eq!(p.servent, guid(SERVENT));
    assert_eq!(p.index, 1);
    assert_eq!(p.ip, Ipv4Addr::new(198, 51, 100, 7));
    assert_eq!(p.port, 6346);
    assert_eq!(p.ggep, None);
}

#[test]
fn bye_with_header_line() {
    let wire = hex(&format!(
        "{MUID} 02 01 00 29 00 00 00
         c8 00 \"Shutting\" 20 \"down\" 0d 0a \"Server:\" 20 \"example/1.0\" 0d 0a 0d 0a 00"
    ));
    let (_, m) = decode_exact(&wire);
    let Message::Bye(b) = m else {
        panic!("not a bye")
    };
    assert_eq!(b.code, CODE_SHUTDOWN);
    assert_eq!(b.reason(), "Shutting down");
}

#[test]
fn qrp_reset() {
    let wire = hex(&format!("{MUID} 30 01 00 06 00 00 00 00 00 00 01 00 07"));
    let (_, m) = decode_exact(&wire);
    assert_eq!(
        m,
        Message::RouteTable(RouteTableUpdate::Reset {
            table_len: 65536,
            infinity: 7
        })
    );
}

#[test]
fn qrp_appendix_messages() {
    // The 8-slot example of §4.4: RESET, then PATCHes in every packing.
    let cases: &[(&str, RouteTableUpdate)] = &[
        (
            "00 08 00 00 00 07",
            RouteTableUpdate::Reset {
                table_len: 8,
                infinity: 7,
            },
        ),
        (
            "01 01 01 00 08 00 00 FA 00 00 00 00 00",
            patch(1, 1, 0, 8, "00 00 FA 00 00 00 00 00"),
        ),
        (
            "01 01 01 00 04 00 A0 00 00",
            patch(1, 1, 0, 4, "00 A0 00 00"),
        ),
        (
            "01 01 01 01 04 78 9C 63 58 C0 C0 00 00 01 E4 00 A1",
            patch(1, 1, 1, 4, "78 9C 63 58 C0 C0 00 00 01 E4 00 A1"),
        ),
        ("01 01 02 00 04 00 A0", patch(1, 2, 0, 4, "00 A0")),
        ("01 02 02 00 04 00 00", patch(2, 2, 0, 4, "00 00")),
    ];
    for (payload, want) in cases {
        let wire = hex(&format!(
            "{MUID} 30 01 00 {:02x} 00 00 00 {payload}",
            hex(payload).len()
        ));
        let (f, m) = decode_exact(&wire);
        assert_eq!((f.header.ttl, f.header.hops), (Ttl(1), Hops(0)));
        assert_eq!(&m, &Message::RouteTable(want.clone()), "{payload}");
    }
}

fn patch(seq_no: u8, seq_size: u8, compressor: u8, entry_bits: u8, data: &str) -> RouteTableUpdate {
    RouteTableUpdate::Patch {
        seq_no,
        seq_size,
        compressor,
        entry_bits,
        data: Bytes::from(hex(data)),
    }
}

#[test]
fn vendor_messages_supported() {
    let wire = hex(&format!(
        "{MUID} 31 01 00 1a 00 00 00
         00 00 00 00 00 00 00 00 02 00 42 45 41 52 04 00 01 00 4c 49 4d 45 15 00 01 00"
    ));
    let (_, m) = decode_exact(&wire);
    let Message::Vendor(v) = m else {
        panic!("not a vendor message")
    };
    assert!(v.is(&[0; 4], 0));
    let entries = v.supported_entries().unwrap();
    let want = [
        Supported {
            vendor: *b"BEAR",
            selector: 4,
            version: 1,
        },
        Supported {
            vendor: *b"LIME",
            selector: 21,
            version: 1,
        },
    ];
    assert_eq!(entries, want);
    let mut out = BytesMut::new();
    Message::Vendor(servent::wire::VendorMsg::messages_supported(&want))
        .encode_frame(guid(MUID), Ttl(1), Hops(0), &mut out)
        .unwrap();
    assert_eq!(hexdump(&out), hexdump(&wire));
}

#[test]
fn vendor_hops_flow() {
    let wire = hex(&format!(
        "{MUID} 31 01 00 09 00 00 00 42 45 41 52 04 00 01 00 00"
    ));
    let (_, m) = decode_exact(&wire);
    let Message::Vendor(v) = m else {
        panic!("not a vendor message")
    };
    assert!(v.is(b"BEAR", 4));
    assert_eq!(v.version, 1);
    assert_eq!(v.body, &[0u8][..]);
}

#[test]
fn trailer_flag_cases() {
    let all = |v| OpenDataFlags {
        push: Some(v),
        busy: Some(v),
        uploaded: Some(v),
        measured_speed: Some(v),
        ggep: None,
    };
    // LimeWire's cases: 1D 1D (all four true), 1C 01 (all false), B1 01 (push).
    assert_eq!(
        OpenDataFlags::from_open_data(&[0x1D, 0x1D, 0, 0]),
        all(true)
    );
    assert_eq!(OpenDataFlags::from_open_data(&[0x1C, 0x01]), all(false));
    let f = OpenDataFlags::from_open_data(&[0xB1, 0x01]);
    assert_eq!(f.push, Some(true));
    assert_eq!(f.busy, None);
    // gtk-gnutella: not firewalled, not busy, has uploaded, GGEP present.
    let g = OpenDataFlags::from_open_data(&[0x2C, 0x29]);
    assert_eq!(
        g,
        OpenDataFlags {
            push: Some(false),
            busy: Some(false),
            uploaded: Some(true),
            measured_speed: None,
            ggep: Some(true),
        }
    );
    assert_eq!(g.to_bytes(), [0x2C, 0x29]);
    // One byte (NapShare): busy and firewalled, no validity byte.
    let n = OpenDataFlags::from_open_data(&[0x05]);
    assert_eq!((n.push, n.busy, n.uploaded), (Some(true), Some(true), None));
    assert_eq!(OpenDataFlags::from_open_data(&[]), OpenDataFlags::default());
}

#[test]
fn trailer_with_limewire_xml_size() {
    // LIME, open data 4 bytes (flags + XML size 6), private area: chat byte, GGEP,
    // then the XML document with its NUL.
    let mut payload = hex("00 ca 18 7f 00 00 01 00 00 00 00");
    payload.extend(hex("4c 49 4d 45 04 3c 21 06 00 01 c3 82 42 48 40"));
    payload.extend(b"<x/>\x00\x00");
    payload.extend(hex(SERVENT));
    let m = Message::parse(Function::QueryHit, &Bytes::from(payload.clone())).unwrap();
    let Message::QueryHit(h) = &m else {
        panic!("not a hit")
    };
    let t = h.qhd().unwrap();
    assert_eq!(t.xml_size(), Some(6));
    assert_eq!(t.flags().ggep, Some(true));
    assert_eq!(t.private.prefix, &[0x01][..]);
    assert!(t.private.ggep.is_some());
    assert_eq!(t.private.rest, &b"<x/>\x00\x00"[..]);
    let mut out = BytesMut::new();
    m.encode_payload(&mut out).unwrap();
    assert_eq!(out.to_vec(), payload);
}
