//! Property round-trips: for every message type, `decode(encode(x)) == x`, both
//! as a bare payload and as a frame through the stream codec.

use std::net::Ipv4Addr;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use servent::framing::DescriptorCodec;
use servent::wire::ext::{ExtArea, ExtItem};
use servent::wire::ggep::GgepId;
use servent::wire::queryhit::{OpenDataFlags, PrivateArea};
use servent::wire::{
    Bye, Frame, Ggep, GgepExt, Guid, HitResult, Hops, Message, Ping, Pong, Push, Query, QueryFlags,
    QueryHit, RouteTableUpdate, Trailer, TrailerArea, Ttl, VendorMsg,
};
use tokio_util::codec::Decoder;

fn bytes_without(forbidden: &'static [u8], max: usize) -> impl Strategy<Value = Bytes> {
    vec(
        any::<u8>().prop_filter("forbidden byte", move |b| !forbidden.contains(b)),
        0..max,
    )
    .prop_map(Bytes::from)
}

fn guid() -> impl Strategy<Value = Guid> {
    any::<[u8; 16]>().prop_map(Guid)
}

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn ggep_ext() -> impl Strategy<Value = GgepExt> {
    (
        vec(0x21u8..=0x7E, 1..=15),
        vec(any::<u8>(), 0..48),
        any::<bool>(),
    )
        .prop_map(|(id, data, compressed)| GgepExt {
            id: GgepId::new(&id).unwrap(),
            data: Bytes::from(data),
            compressed,
        })
}

fn ggep() -> impl Strategy<Value = Ggep> {
    vec(ggep_ext(), 1..4).prop_map(Ggep::new)
}

fn ext_item() -> impl Strategy<Value = ExtItem> {
    let text = || bytes_without(&[0x00, 0x1C], 40);
    prop_oneof![
        text().prop_map(|t| ExtItem::Urn([&b"urn:"[..], &t].concat().into())),
        text().prop_map(|t| ExtItem::Xml([&b"<"[..], &t].concat().into())),
        ggep().prop_map(ExtItem::Ggep),
        // Opaque items must not look like another kind: no leading 'u'/'U' (urn:),
        // '<' or 0xC3.
        (0x21u8..=0x7E, text())
            .prop_filter("looks like another kind", |(first, _)| {
                !matches!(first, b'u' | b'U' | b'<')
            })
            .prop_map(|(first, t)| ExtItem::Other([&[first][..], &t].concat().into())),
    ]
}

fn ext_area() -> impl Strategy<Value = ExtArea> {
    vec(ext_item(), 0..4).prop_map(|items| ExtArea {
        items: items.into(),
    })
}

fn hit_result() -> impl Strategy<Value = HitResult> {
    (
        any::<u32>(),
        any::<u32>(),
        bytes_without(&[0], 40),
        ext_area(),
    )
        .prop_map(|(index, size, name, ext)| HitResult {
            index,
            size,
            name,
            ext,
        })
}

fn flag() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![Just(None), Just(Some(false)), Just(Some(true))]
}

fn qhd() -> impl Strategy<Value = Trailer> {
    (
        any::<[u8; 4]>(),
        (flag(), flag(), flag(), flag()),
        vec(any::<u8>(), 0..3),
        proptest::option::of(ggep()),
        bytes_without(&[0xC3], 12),
        vec(any::<u8>(), 0..12),
    )
        .prop_map(
            |(vendor, (push, busy, uploaded, measured), extra_od, g, prefix, rest)| {
                let flags = OpenDataFlags {
                    push,
                    busy,
                    uploaded,
                    measured_speed: measured,
                    ggep: Some(g.is_some()),
                };
                let mut od = flags.to_bytes().to_vec();
                od.extend(extra_od);
                // Without a parsed block the whole private area is the prefix.
                let (prefix, rest) = match g {
                    Some(_) => (prefix, Bytes::from(rest)),
                    None => (Bytes::from([&prefix[..], &rest[..]].concat()), Bytes::new()),
                };
                Trailer {
                    vendor,
                    open_data: Bytes::from(od),
                    private: PrivateArea {
                        prefix,
                        ggep: g,
                        rest,
                    },
                }
            },
        )
}

fn trailer_area() -> impl Strategy<Value = TrailerArea> {
    prop_oneof![
        Just(TrailerArea::None),
        qhd().prop_map(TrailerArea::Qhd),
        // Too short to hold a vendor code and open-data size.
        vec(any::<u8>(), 1..5).prop_map(|b| TrailerArea::Opaque(Bytes::from(b))),
    ]
}

fn query_hit() -> impl Strategy<Value = QueryHit> {
    (
        any::<u16>(),
        ip(),
        any::<u32>(),
        vec(hit_result(), 0..6),
        trailer_area(),
        guid(),
    )
        .prop_filter("a hit needs results or a trailer", |(_, _, _, r, t, _)| {
            !(r.is_empty() && *t == TrailerArea::None)
        })
        .prop_map(|(port, ip, speed, results, trailer, servent)| QueryHit {
            port,
            ip,
            speed,
            results,
            trailer,
            servent,
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        proptest::option::of(ggep()).prop_map(|ggep| Message::Ping(Ping { ggep })),
        (
            any::<u16>(),
            ip(),
            any::<u32>(),
            any::<u32>(),
            proptest::option::of(ggep())
        )
            .prop_map(|(port, ip, files, kbytes, ggep)| Message::Pong(Pong {
                port,
                ip,
                files,
                kbytes,
                ggep
            })),
        (any::<u16>(), bytes_without(&[0], 80))
            .prop_map(|(code, text)| Message::Bye(Bye { code, text })),
        (0u32..32, 1u8..=255).prop_map(|(shift, infinity)| Message::RouteTable(
            RouteTableUpdate::Reset {
                table_len: 1 << shift,
                infinity
            }
        )),
        (
            1u8..=255,
            0u8..=1,
            prop_oneof![Just(1u8), Just(2), Just(4), Just(8)],
            vec(any::<u8>(), 0..64)
        )
            .prop_flat_map(|(size, compressor, entry_bits, data)| (1..=size).prop_map(
                move |seq_no| {
                    Message::RouteTable(RouteTableUpdate::Patch {
                        seq_no,
                        seq_size: size,
                        compressor,
                        entry_bits,
                        data: Bytes::from(data.clone()),
                    })
                }
            )),
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>(),
            vec(any::<u8>(), 0..64),
            any::<bool>()
        )
            .prop_map(|(vendor, selector, version, body, standard)| {
                let v = VendorMsg {
                    vendor,
                    selector,
                    version,
                    body: Bytes::from(body),
                };
                if standard {
                    Message::StandardVendor(v)
                } else {
                    Message::Vendor(v)
                }
            }),
        (
            guid(),
            any::<u32>(),
            ip(),
            any::<u16>(),
            proptest::option::of(ggep())
        )
            .prop_map(|(servent, index, ip, port, ggep)| Message::Push(Push {
                servent,
                index,
                ip,
                port,
                ggep
            })),
        (any::<[u8; 2]>(), bytes_without(&[0], 60), ext_area()).prop_map(|(f, text, ext)| {
            Message::Query(Query {
                flags: QueryFlags(f),
                text,
                ext,
            })
        }),
        query_hit().prop_map(Message::QueryHit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn payload_round_trip(msg in message()) {
        let mut out = BytesMut::new();
        msg.encode_payload(&mut out).unwrap();
        let payload = out.freeze();
        let back = Message::parse(msg.function(), &payload).unwrap();
        prop_assert_eq!(&back, &msg);
        // Encoding is canonical: the parsed value encodes to the same bytes.
        let mut again = BytesMut::new();
        back.encode_payload(&mut again).unwrap();
        prop_assert_eq!(again.freeze(), payload);
    }

    #[test]
    fn frame_round_trip(msg in message(), id in guid(), ttl in any::<u8>(), hops in any::<u8>()) {
        let frame = Frame::new(&msg, id, Ttl(ttl), Hops(hops)).unwrap();
        let mut wire = BytesMut::new();
        frame.encode(&mut wire);
        let mut codec = DescriptorCodec::new(servent::framing::SizeLimits {
            query: servent::wire::MAX_PAYLOAD,
            query_hit: servent::wire::MAX_PAYLOAD,
            other: servent::wire::MAX_PAYLOAD,
        });
        let decoded = codec.decode(&mut wire).unwrap().unwrap();
        prop_assert!(wire.is_empty());
        prop_assert_eq!(&decoded, &frame);
        prop_assert_eq!(decoded.message().unwrap(), msg);
    }

    #[test]
    fn file_sizes_survive(size in any::<u64>()) {
        let r = HitResult::new(7, size, "f", None);
        let hit = QueryHit {
            port: 1,
            ip: Ipv4Addr::LOCALHOST,
            speed: 0,
            results: vec![r],
            trailer: TrailerArea::None,
            servent: Guid::default(),
        };
        let mut out = BytesMut::new();
        hit.encode(&mut out).unwrap();
        let payload = out.freeze();
        let back = QueryHit::parse(&payload, &mut 1_000_000).unwrap();
        prop_assert_eq!(back.results[0].file_size(), size);
        // The borrowed view reads the same size (LF is COBS-encoded when it holds NULs).
        let view = servent::wire::queryhit::QueryHitView::parse(&payload).unwrap();
        prop_assert_eq!(view.results().next().unwrap().file_size(), size);
    }
}
