//! FastTrack formats against the research vectors (tests/fixtures/fasttrack/, copied
//! from the reference sheet's vectors: outputs of the reference C code and two
//! captured giFT-FastTrack sessions), round trips of every message, sessions
//! played from both ends, and hostile input.

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use sha2::{Digest, Sha256};

use servent::fasttrack::FtError;
use servent::fasttrack::cipher::{
    Cipher, KNOWN_SEEDS, SUPPORTED_ENC_TYPES, enc_type_1, enc_type_mask, is_supported,
};
use servent::fasttrack::session::{ClientSession, Limits, Packet, ServerSession};
use servent::fasttrack::wire::{
    ClientHello, Message, ServerHello, Tag, XINU_START, decode_header, decode_unit, dynint,
    encode_header, encode_unit, next_xinu, put_dynint,
};

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("fixture is JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(s.as_bytes())
        .expect("fixture hex")
}

fn num(v: &Value) -> u32 {
    match v {
        Value::Number(n) => n.as_u64().expect("integer") as u32,
        Value::String(s) => {
            let s = s.trim_start_matches("0x").trim_start_matches("0X");
            u32::from_str_radix(s, 16).expect("hex number")
        }
        _ => panic!("not a number: {v}"),
    }
}

fn keystream(c: &mut Cipher, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    c.apply(&mut buf);
    buf
}

const CIPHER: &str = include_str!("fixtures/fasttrack/cipher.json");
const DYNINT: &str = include_str!("fixtures/fasttrack/dynint.json");
const FRAMING: &str = include_str!("fixtures/fasttrack/framing.json");
const MANGLE: &str = include_str!("fixtures/fasttrack/mangle.json");
const MASKS: &str = include_str!("fixtures/fasttrack/seed_masks_and_enc1.json");
const MIX: &str = include_str!("fixtures/fasttrack/mix_functions.json");
const DECODED: &str = include_str!("fixtures/fasttrack/captured-sessions-decoded.json");
const RAW_SHARER: &str = include_str!("fixtures/fasttrack/captured-raw-session-sharer.json");
const RAW_SEARCHER: &str = include_str!("fixtures/fasttrack/captured-raw-session-searcher.json");

// ---------------------------------------------------------------------------
// Golden vectors

#[test]
fn dynint_vectors() {
    let v = json(DYNINT);
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 14);
    for case in cases {
        let value = case["value"].as_u64().unwrap() as u32;
        let wire = unhex(case["hex"].as_str().unwrap());
        let mut out = BytesMut::new();
        put_dynint(&mut out, value);
        assert_eq!(&out[..], &wire[..], "encoding {value}");
        assert_eq!(servent::fasttrack::wire::dynint_len(value), wire.len());
        let mut with_tail = wire.clone();
        with_tail.push(0xAA);
        assert_eq!(
            dynint(&with_tail),
            Ok((&[0xAA][..], value)),
            "decoding {value}"
        );
    }
}

#[test]
fn dynint_protocol_facts_vectors() {
    // protocol-facts.md 9.1.
    for (value, wire) in [(1234567u32, &[0xCB, 0xAD, 0x07][..]), (300, &[0x82, 0x2C])] {
        let mut out = BytesMut::new();
        put_dynint(&mut out, value);
        assert_eq!(&out[..], wire);
    }
}

#[test]
fn framing_vectors() {
    let v = json(FRAMING);
    let seq = v["sequence"].as_array().unwrap();
    let mut xinu = XINU_START;
    for step in seq {
        assert_eq!(xinu, num(&step["xinu_before"]));
        let t = num(&step["type"]) as u16;
        let len = num(&step["len"]) as u16;
        let want = unhex(step["header_hex"].as_str().unwrap());
        let h = encode_header(xinu, t, len);
        assert_eq!(want[0], 0x4B);
        assert_eq!(&h[..], &want[1..], "header for type {t:#x} len {len}");
        assert_eq!(decode_header(xinu, h), (t, len));
        xinu = next_xinu(xinu, t, len);
        assert_eq!(xinu, num(&step["xinu_after"]));
    }
}

#[test]
fn framing_vectors_from_protocol_facts() {
    // protocol-facts.md 9.4: the worked sequence.
    let mut xinu = XINU_START;
    for (t, len, hex, after) in [
        (0x02u16, 14u16, "4b0200000e", 0xFFFF_FFBEu32),
        (0x26, 4, "4b00002604", 0x0000_006B),
        (0x06, 25, "4b00190006", 0xFFFF_FF8B),
        (0x22, 40, "4b00002228", 0x0000_003E),
    ] {
        let mut out = BytesMut::new();
        encode_unit(&mut xinu, t, &vec![0; len as usize], &mut out).unwrap();
        assert_eq!(&out[..5], &unhex(hex)[..]);
        assert_eq!(xinu, after);
    }
}

#[test]
fn seed_masks() {
    let v = json(MASKS);
    let masks = v["masks"].as_array().unwrap();
    assert_eq!(masks.len(), KNOWN_SEEDS.len());
    for m in masks {
        let seed = num(&m["seed"]);
        assert_eq!(enc_type_mask(seed), Some(num(&m["mask"])), "seed {seed:#x}");
    }
    let v = json(MANGLE);
    for case in v["cases"].as_array().unwrap() {
        let seed = num(&case["seed"]);
        let mask = enc_type_mask(seed).expect("every mangle seed is known");
        assert_eq!(mask, num(&case["mask"]));
        assert_eq!(num(&case["enc_type"]) ^ mask, num(&case["wire"]));
        assert_eq!(num(&case["wire"]) ^ mask, num(&case["enc_type"]));
    }
    // protocol-facts.md 9.2.
    assert_eq!(0x29 ^ enc_type_mask(0xFACB_1238).unwrap(), 0x3209_D232);
    assert_eq!(enc_type_mask(0x0BAD_F00D), None);
}

#[test]
fn enc_type_1_vectors() {
    let v = json(MIX);
    let mut seen = 0;
    for case in v["cases"].as_array().unwrap() {
        if case["function"] != "enc_type_1" {
            continue;
        }
        let input: [u8; 255] = unhex(case["in_hex"].as_str().unwrap()).try_into().unwrap();
        let want = unhex(case["out_hex"].as_str().unwrap());
        assert_eq!(&enc_type_1(&input)[..], &want[..]);
        seen += 1;
    }
    assert_eq!(seen, 2);
    // The input is built from the LCG as the description says.
    let mut s = 0x1234_5678u32;
    let mut input = [0u8; 255];
    for b in input.iter_mut() {
        s = s.wrapping_mul(0x10DCD).wrapping_add(0x4271);
        *b = ((s >> 17) % 0xE0) as u8;
    }
    let case = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["function"] == "enc_type_1" && c["seed"] == "0x12345678")
        .unwrap();
    assert_eq!(&input[..], &unhex(case["in_hex"].as_str().unwrap())[..]);
}

fn state_of(case: &Value) -> Cipher {
    let st = &case["state_after_init"];
    let pad: [u8; 63] = unhex(st["pad_hex"].as_str().unwrap()).try_into().unwrap();
    let lookup: [u8; 256] = unhex(st["lookup_hex"].as_str().unwrap())
        .try_into()
        .unwrap();
    Cipher::from_state(
        num(&case["enc_type"]),
        pad,
        st["pos"].as_u64().unwrap() as usize,
        lookup,
    )
}

fn check_stream(mut c: Cipher, case: &Value, plaintext: &[u8]) {
    let what = format!("seed {} enc {}", case["seed"], case["enc_type"]);
    let mut enc = c.clone();
    let ks = keystream(&mut c, 64);
    assert_eq!(
        ks,
        unhex(case["keystream_64_hex"].as_str().unwrap()),
        "{what}"
    );
    let mut text = plaintext.to_vec();
    enc.apply(&mut text);
    assert_eq!(
        text,
        unhex(case["ciphertext_hex"].as_str().unwrap()),
        "{what}"
    );
    // 64 KiB from the start covers the pad wraps and the lookup shift.
    let rest = keystream(&mut c, 65536 - 64);
    let mut all = ks;
    all.extend_from_slice(&rest);
    let digest = Sha256::digest(&all);
    assert_eq!(
        data_encoding::HEXLOWER.encode(&digest),
        case["keystream_64k_sha256"].as_str().unwrap(),
        "{what}"
    );
}

#[test]
fn cipher_vectors() {
    let v = json(CIPHER);
    let plaintext = unhex(v["plaintext_hex"].as_str().unwrap());
    let (mut ours, mut resumed, mut refused) = (0, 0, 0);
    for case in v["cases"].as_array().unwrap() {
        let seed = num(&case["seed"]);
        let enc = num(&case["enc_type"]);
        match Cipher::new(seed, enc) {
            Ok(c) => {
                assert!(SUPPORTED_ENC_TYPES.contains(&enc));
                check_stream(c, case, &plaintext);
                // Our own initialisation gives the same state as the reference.
                check_stream(state_of(case), case, &plaintext);
                ours += 1;
            }
            Err(e) => {
                assert_eq!(e, FtError::UnsupportedEncType(enc));
                assert!(!is_supported(enc));
                // Types without 0x10 run from the reference's initial state.
                if enc & 0x10 == 0 {
                    check_stream(state_of(case), case, &plaintext);
                    resumed += 1;
                } else {
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(ours, 4, "0x00, 0x01, 0x08 and 0x40 of 0x12345678");
    assert!(resumed >= 10, "{resumed}");
    assert!(refused >= 1);
    for bad in v["unsupported_enc_types"].as_array().unwrap() {
        let enc = num(bad);
        assert_eq!(
            Cipher::new(1, enc).unwrap_err(),
            FtError::UnsupportedEncType(enc)
        );
    }
}

#[test]
fn cipher_table_from_protocol_facts() {
    // protocol-facts.md 9.3: first 16 key bytes, bytes 63..78, MD5 of 64 KiB.
    for (seed, enc, first, at63, md5) in [
        (
            0xFACB_1238u32,
            0x01u32,
            "308d04bffc3ebd213c2953fe6797a615",
            "2ebbbf7e7ab87596d2fb4e4cb34af005",
            "ba862db38b2aa8d2b45cdf90689b7a69",
        ),
        (
            0xFACB_1238,
            0x08,
            "9d097578b0660567fd168194851cdac7",
            "2115d8d99250741cceb05fa0ac3b8f73",
            "df6421d7032c12e6bf508ba006066ec9",
        ),
    ] {
        let mut c = Cipher::new(seed, enc).unwrap();
        let ks = keystream(&mut c, 65536);
        assert_eq!(ks[..16], unhex(first)[..]);
        assert_eq!(ks[63..79], unhex(at63)[..]);
        use md5::Md5;
        let d = Md5::digest(&ks);
        assert_eq!(data_encoding::HEXLOWER.encode(&d), md5);
    }
}

// ---------------------------------------------------------------------------
// Captured sessions

/// Messages whose payload is not what we would write for the parsed value.
fn canonical(kind: u8, payload: &[u8]) -> bool {
    match kind {
        // NodeInfo's byte 7 and ShareFile's bytes 0, 2, 3 are always 0 from us.
        0x02 => payload.get(7) == Some(&0),
        0x22 => payload.first() == Some(&0) && payload.get(2..4) == Some(&[0, 0]),
        _ => true,
    }
}

#[test]
fn captured_messages_parse_and_reencode() {
    let v = json(DECODED);
    let mut kinds = std::collections::BTreeSet::new();
    for session in v.as_array().unwrap() {
        for dir in ["s2c_frames", "c2s_frames"] {
            for f in session[dir].as_array().unwrap() {
                let kind = num(&f["type"]) as u8;
                let payload = unhex(f["payload_hex"].as_str().unwrap());
                let header = unhex(f["header_hex"].as_str().unwrap());
                let xinu = num(&f["xinu_before"]);
                assert_eq!(
                    &encode_header(xinu, u16::from(kind), payload.len() as u16)[..],
                    &header[1..]
                );
                let m = Message::parse(kind, &payload)
                    .unwrap_or_else(|e| panic!("{} {kind:#x}: {e}", f["name"]));
                assert!(!matches!(m, Message::Unknown { .. }), "{kind:#x}");
                assert_eq!(m.kind(), kind);
                if canonical(kind, &payload) {
                    assert_eq!(&m.to_bytes()[..], &payload[..], "{kind:#x}");
                }
                kinds.insert(kind);
            }
        }
    }
    // Every kind a giFT session used: 00 02 06 07 08 09 0D 1D 22 26 2C.
    assert_eq!(kinds.len(), 11, "{kinds:?}");
}

#[test]
fn captured_message_contents() {
    let share = unhex(
        "000000008fc670eaf45c09b7b6783ba20f014efd0342f2f28b0a98b5000102146e6565646c6520746573742066696c652e62696e",
    );
    let Message::ShareFile { media, file } = Message::parse(0x22, &share).unwrap() else {
        panic!("not a share");
    };
    assert_eq!(media, 0);
    assert_eq!(file.file_id, 1418);
    assert_eq!(file.size, 400_000);
    assert_eq!(&file.filename().unwrap()[..], b"needle test file.bin");
    assert_eq!(file.fth[..4], [0x8f, 0xc6, 0x70, 0xea]);

    let info = unhex("7f0000015335600041");
    let Message::NodeInfo(n) = Message::parse(0x02, &info).unwrap() else {
        panic!("not node info");
    };
    assert_eq!(
        (n.ip, n.port, n.bandwidth),
        ("127.0.0.1".parse().unwrap(), 21301, 0x60)
    );
    assert_eq!(&n.user[..], b"A");

    let push = unhex("000000017f00000153367f00000100007f00000152de41");
    let Message::PushRequest(p) = Message::parse(0x0D, &push).unwrap() else {
        panic!("not a push request");
    };
    assert_eq!((p.push_id, p.requester_port, p.target_port), (1, 21302, 0));
    assert_eq!((p.supernode_port, &p.target_user[..]), (21214, &b"A"[..]));

    let fwd = unhex("000000017f0000015336");
    assert!(matches!(
        Message::parse(0x0D, &fwd).unwrap(),
        Message::PushForward(f) if f.push_id == 1 && f.requester_port == 21302
    ));

    let v = json(DECODED);
    let reply = v[1]["s2c_frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["type"] == "0x07")
        .unwrap();
    let Message::QueryReply(r) =
        Message::parse(0x07, &unhex(reply["payload_hex"].as_str().unwrap())).unwrap()
    else {
        panic!("not a reply");
    };
    assert_eq!(r.results.len(), 1);
    let res = &r.results[0];
    assert_eq!(
        (&res.user[..], &res.network[..]),
        (&b"A"[..], &b"KaZaA"[..])
    );
    assert!(
        res.tags
            .iter()
            .any(|t| t.id == 2 && &t.value[..] == b"needle test file.bin")
    );

    let query = v[1]["c2s_frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["type"] == "0x06")
        .unwrap();
    let Message::Query(q) =
        Message::parse(0x06, &unhex(query["payload_hex"].as_str().unwrap())).unwrap()
    else {
        panic!("not a query");
    };
    assert_eq!((q.max_results, q.realm, q.terms.len()), (1000, 0xBF, 1));
    assert_eq!(q.terms[0].cmp, 0x05);

    let stats = unhex(
        "000249f0000f42400fa0001e000000000000001e000000000000001e000000000000001e000000000000001e000000000000001e000000000000001e",
    );
    let Message::NetworkStats(s) = Message::parse(0x09, &stats).unwrap() else {
        panic!("not stats");
    };
    assert_eq!((s.users, s.files), (150_000, 1_000_000));
    assert_eq!(s.total_gb(), 4000);
    assert_eq!(s.extra.len(), 48);
}

/// Walks a plain stream (network name, NUL, units) the way a session does and
/// returns the name and the messages with the xinu each was read with.
/// A message read off a captured stream: the xinu it was read with, its kind,
/// its payload.
type Read = (u32, u8, Vec<u8>);

fn walk(plain: &[u8]) -> (Vec<u8>, Vec<Read>) {
    let nul = plain.iter().position(|&b| b == 0).unwrap();
    let name = plain[..nul].to_vec();
    let mut rest = &plain[nul + 1..];
    let mut xinu = XINU_START;
    let mut out = Vec::new();
    loop {
        let before = xinu;
        match decode_unit(&mut xinu, rest, 0xFFFF).unwrap() {
            Some((
                Packet::Message {
                    kind,
                    flags,
                    payload,
                },
                used,
            )) => {
                assert_eq!(flags, 0);
                out.push((before, kind, payload.to_vec()));
                rest = &rest[used..];
            }
            Some((p, _)) => panic!("unexpected {p:?}"),
            None => break,
        }
    }
    assert!(rest.is_empty(), "{} bytes left", rest.len());
    (name, out)
}

#[test]
fn captured_raw_sessions_replay() {
    let ciphers = json(CIPHER);
    let case = ciphers["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["seed"] == "0x2A1B3C4D" && c["enc_type"] == "0x29")
        .unwrap();
    for text in [RAW_SHARER, RAW_SEARCHER] {
        let v = json(text);
        let hello = unhex(v["client_hello"].as_str().unwrap());
        let ch = ClientHello::parse(&hello.clone().try_into().unwrap());
        assert_eq!(ch.seed, num(&v["client_seed"]));
        assert_eq!(ch.rand, num(&v["rand"]));
        assert_eq!(ch.encode().to_vec(), hello);
        let requested = ch.enc_wire ^ enc_type_mask(ch.seed).unwrap();
        assert_eq!(requested, num(&v["client_requested_enc_type"]));

        let sh = unhex(v["server_hello"].as_str().unwrap());
        let server = ServerHello::parse(&sh.clone().try_into().unwrap());
        assert_eq!(server.seed, num(&v["server_seed"]));
        let enc = server.enc_wire ^ enc_type_mask(server.seed).unwrap();
        assert_eq!(enc, num(&v["enc_type"]));
        assert_eq!(server.encode().to_vec(), sh);

        // The supernode's stream decrypts with the reference's initial state of
        // (server seed, 0x29).
        let mut raw = unhex(v["s2c_raw"].as_str().unwrap());
        let s2c_plain = unhex(v["s2c_plain"].as_str().unwrap());
        state_of(case).apply(&mut raw);
        assert_eq!(raw, s2c_plain);
        // The client's stream: its first 6 key bytes are the ones the sheet read
        // off the capture.
        let c2s_raw = unhex(v["c2s_raw"].as_str().unwrap());
        let c2s_plain = unhex(v["c2s_plain"].as_str().unwrap());
        let key: Vec<u8> = c2s_raw.iter().zip(&c2s_plain).map(|(a, b)| a ^ b).collect();
        assert_eq!(key[..6], unhex("820dea46f1bc")[..]);

        let (s_name, s_msgs) = walk(&s2c_plain);
        let (c_name, c_msgs) = walk(&c2s_plain);
        assert_eq!(s_name, b"KaZaA");
        assert_eq!(c_name, b"KaZaA");
        let listed = v["messages"].as_array().unwrap();
        for (dir, msgs) in [("s2c", &s_msgs), ("c2s", &c_msgs)] {
            let want: Vec<_> = listed.iter().filter(|m| m["dir"] == dir).collect();
            assert_eq!(want.len(), msgs.len(), "{dir}");
            for (w, (xinu, kind, payload)) in want.iter().zip(msgs.iter()) {
                assert_eq!(num(&w["xinu_before"]), *xinu);
                assert_eq!(num(&w["type"]) as u8, *kind);
                assert_eq!(unhex(w["payload"].as_str().unwrap()), *payload);
                let m = Message::parse(*kind, payload).unwrap();
                if canonical(*kind, payload) {
                    assert_eq!(m.to_bytes().to_vec(), *payload);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions, both ends

/// Moves bytes both ways until neither side has output, collecting what each
/// side reads.
fn pump(c: &mut ClientSession, s: &mut ServerSession) -> (Vec<Packet>, Vec<Packet>) {
    let (mut at_client, mut at_server) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let to_server = c.take_output();
        let to_client = s.take_output();
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
        s.receive(&to_server).unwrap();
        while let Some(p) = s.poll_packet().unwrap() {
            at_server.push(p);
        }
        c.receive(&to_client).unwrap();
        while let Some(p) = c.poll_packet().unwrap() {
            at_client.push(p);
        }
    }
    (at_client, at_server)
}

fn captured_messages() -> (Vec<Message>, Vec<Message>) {
    let v = json(DECODED);
    let (mut s2c, mut c2s) = (Vec::new(), Vec::new());
    for session in v.as_array().unwrap() {
        for (dir, list) in [("s2c_frames", &mut s2c), ("c2s_frames", &mut c2s)] {
            for f in session[dir].as_array().unwrap() {
                let kind = num(&f["type"]) as u8;
                list.push(
                    Message::parse(kind, &unhex(f["payload_hex"].as_str().unwrap())).unwrap(),
                );
            }
        }
    }
    (s2c, c2s)
}

fn messages(packets: &[Packet]) -> Vec<Message> {
    packets
        .iter()
        .filter_map(|p| p.parse())
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn sessions_carry_the_captured_messages_with_every_supported_type() {
    let (s2c, c2s) = captured_messages();
    for &enc in SUPPORTED_ENC_TYPES {
        for &(seed, _) in KNOWN_SEEDS {
            let mut s = ServerSession::new(seed, enc).unwrap();
            let mut c = ClientSession::new_gift();
            for m in &s2c {
                s.send_message(m).unwrap();
            }
            s.send_ping();
            for m in &c2s {
                c.send_message(m).unwrap();
            }
            c.send_pong();
            let (at_client, at_server) = pump(&mut c, &mut s);
            assert_eq!(messages(&at_client), s2c);
            assert_eq!(messages(&at_server), c2s);
            assert_eq!(at_client.last(), Some(&Packet::Ping));
            assert_eq!(at_server.last(), Some(&Packet::Pong));
            assert_eq!(c.enc_type(), Some(enc));
            assert_eq!(s.requested_enc_type(), Some(0x29));
            assert!(c.is_established() && s.is_established());
            assert_eq!(&s.peer_network_name().unwrap()[..], b"KaZaA");
            assert_eq!(&c.peer_network_name().unwrap()[..], b"KaZaA");
        }
    }
}

#[test]
fn server_answers_with_its_seed_type_and_name() {
    let mut s = ServerSession::new(0x2A1B_3C4D, 0x01).unwrap();
    assert!(
        s.take_output().is_empty(),
        "nothing before the user's hello"
    );
    s.receive(&unhex("fa00b62bfacb12383209d232")).unwrap();
    let out = s.take_output();
    assert_eq!(out[..8], unhex("2a1b3c4d402008c5")[..]);
    let mut name = out[8..].to_vec();
    Cipher::new(0x2A1B_3C4D, 0x01).unwrap().apply(&mut name);
    assert_eq!(name, b"KaZaA\0");
    // The user's stream is keyed with both seeds.
    let mut hello_name = b"KaZaA\0\x50".to_vec();
    Cipher::new(0xFACB_1238 ^ 0x2A1B_3C4D, 0x01)
        .unwrap()
        .apply(&mut hello_name);
    s.receive(&hello_name).unwrap();
    assert_eq!(s.poll_packet().unwrap(), Some(Packet::Ping));
    assert!(s.is_established());
}

#[test]
fn sessions_survive_any_split_of_the_stream() {
    let (s2c, _) = captured_messages();
    let mut s = ServerSession::new(0xDEAD_BEEF, 0x49).unwrap();
    let mut c = ClientSession::new_gift();
    s.receive(&c.take_output()).unwrap();
    for m in &s2c {
        s.send_message(m).unwrap();
    }
    let all = s.take_output();
    let mut got = Vec::new();
    // Byte by byte: the hello, the name and each header arrive in pieces.
    for b in all.iter() {
        c.receive(&[*b]).unwrap();
        while let Some(p) = c.poll_packet().unwrap() {
            got.push(p);
        }
    }
    assert_eq!(messages(&got), s2c);
}

// ---------------------------------------------------------------------------
// Hostile input

fn server_after_hello() -> (ServerSession, Cipher) {
    let mut s = ServerSession::new(0x2A1B_3C4D, 0x09).unwrap();
    let mut c = ClientSession::new_gift();
    let hello = c.take_output();
    s.receive(&hello).unwrap();
    let key = Cipher::new(0xFACB_1238 ^ 0x2A1B_3C4D, 0x09).unwrap();
    (s, key)
}

fn send(s: &mut ServerSession, key: &mut Cipher, plain: &[u8]) -> Result<(), FtError> {
    let mut b = plain.to_vec();
    key.apply(&mut b);
    s.receive(&b)
}

fn drain(s: &mut ServerSession) -> Result<Vec<Packet>, FtError> {
    let mut out = Vec::new();
    while let Some(p) = s.poll_packet()? {
        out.push(p);
    }
    Ok(out)
}

#[test]
fn a_name_that_never_ends_is_refused_at_the_limit() {
    let (mut s, mut key) = server_after_hello();
    send(&mut s, &mut key, &[b'a'; 64]).unwrap();
    assert_eq!(drain(&mut s).unwrap(), vec![]);
    send(&mut s, &mut key, b"a").unwrap();
    assert_eq!(
        drain(&mut s).unwrap_err(),
        FtError::NetworkNameTooLong { max: 64 }
    );
}

#[test]
fn a_long_name_with_its_nul_is_refused_too() {
    let (mut s, mut key) = server_after_hello();
    let mut name = vec![b'a'; 65];
    name.push(0);
    send(&mut s, &mut key, &name).unwrap();
    assert!(matches!(
        drain(&mut s),
        Err(FtError::NetworkNameTooLong { .. })
    ));
}

#[test]
fn a_0xffff_long_message_is_refused_at_its_header() {
    let (mut s, mut key) = server_after_hello();
    send(&mut s, &mut key, b"KaZaA\0").unwrap();
    let mut xinu = XINU_START;
    let mut unit = BytesMut::new();
    encode_unit(&mut xinu, 0x22, &vec![0u8; 0xFFFF], &mut unit).unwrap();
    // Only the header: refused before any payload is buffered.
    send(&mut s, &mut key, &unit[..5]).unwrap();
    assert_eq!(
        drain(&mut s).unwrap_err(),
        FtError::MessageTooLong {
            len: 0xFFFF,
            max: Limits::SERVER.max_message
        }
    );
    // A client accepts up to the 16-bit maximum.
    let mut c = ClientSession::new_gift();
    let mut s = ServerSession::new(0x2A1B_3C4D, 0x01).unwrap();
    s.receive(&c.take_output()).unwrap();
    s.send_raw(0x07, &vec![0u8; 0xFFFF]).unwrap();
    c.receive(&s.take_output()).unwrap();
    assert!(matches!(
        c.poll_packet().unwrap(),
        Some(Packet::Message { kind: 7, payload, .. }) if payload.len() == 0xFFFF
    ));
    // And nobody can send more than 16 bits can say.
    assert!(matches!(
        s.send_raw(0x07, &vec![0u8; 0x10000]),
        Err(FtError::MessageTooLong { .. })
    ));
}

#[test]
fn garbage_after_the_names_is_a_strange_packet() {
    let (mut s, mut key) = server_after_hello();
    send(&mut s, &mut key, b"KaZaA\0\x50\x52\x00").unwrap();
    assert_eq!(s.poll_packet().unwrap(), Some(Packet::Ping));
    assert_eq!(s.poll_packet().unwrap(), Some(Packet::Pong));
    assert_eq!(s.poll_packet().unwrap_err(), FtError::StrangePacket(0));
}

#[test]
fn a_garbage_hello_gives_garbage_that_is_refused_boundedly() {
    // Any 12 bytes are a hello; what follows decrypts to noise, which ends as a
    // name that never ends, a strange packet or an over-long message, never a stall.
    let mut rng = 0x1234_5678u32;
    for _ in 0..200 {
        let mut s = ServerSession::new(0x2A1B_3C4D, 0x01).unwrap();
        let mut junk = vec![0u8; 4096];
        for b in junk.iter_mut() {
            rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (rng >> 16) as u8;
        }
        s.receive(&junk).unwrap();
        let mut n = 0;
        let end = loop {
            match s.poll_packet() {
                Ok(Some(_)) => n += 1,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
            assert!(n <= 4096);
        };
        if end.is_none() {
            // Whatever is left is a partial unit within the limits.
            assert!(s.buffered() <= 5 + Limits::SERVER.max_message);
        }
    }
}

#[test]
fn the_receive_buffer_is_bounded() {
    let (mut s, mut key) = server_after_hello();
    assert_eq!(s.room(), Limits::SERVER.max_buffer);
    send(&mut s, &mut key, b"KaZaA\0\x4b").unwrap();
    assert_eq!(drain(&mut s).unwrap(), vec![]);
    assert_eq!(s.room(), Limits::SERVER.max_buffer - 1);
    let big = vec![0x50u8; Limits::SERVER.max_buffer];
    assert_eq!(
        send(&mut s, &mut key, &big).unwrap_err(),
        FtError::BufferFull {
            max: Limits::SERVER.max_buffer
        }
    );
}

#[test]
fn a_server_with_an_unknown_seed_or_type_is_refused() {
    assert_eq!(
        ServerSession::new(0x0BAD_F00D, 0x01).unwrap_err(),
        FtError::UnknownSeed(0x0BAD_F00D)
    );
    assert_eq!(
        ServerSession::new(0x2A1B_3C4D, 0x29).unwrap_err(),
        FtError::UnsupportedEncType(0x29)
    );
    // A client told to use a type we lack says so.
    let mut c = ClientSession::new_gift();
    let hello = ServerHello {
        seed: 0x2A1B_3C4D,
        enc_wire: 0x29 ^ 0x4020_08C4,
    };
    assert_eq!(
        c.receive(&hello.encode()).unwrap_err(),
        FtError::UnsupportedEncType(0x29)
    );
}

#[test]
fn bad_dynints() {
    assert_eq!(
        dynint(&[]),
        Err(FtError::Truncated {
            what: "packed integer"
        })
    );
    assert_eq!(
        dynint(&[0x81]),
        Err(FtError::Truncated {
            what: "packed integer"
        })
    );
    assert_eq!(dynint(&[0x80; 6]), Err(FtError::DynIntTooLong));
    assert_eq!(
        dynint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
        Err(FtError::DynIntTooLong)
    );
    assert_eq!(
        dynint(&[0x90, 0x80, 0x80, 0x80, 0x00]),
        Err(FtError::DynIntOverflow)
    );
    // A longer form than needed reads as shipped clients read it.
    assert_eq!(dynint(&[0x80, 0x05]), Ok((&[][..], 5)));
}

#[test]
fn truncated_messages_are_errors() {
    let (s2c, c2s) = captured_messages();
    for m in s2c.iter().chain(c2s.iter()) {
        let full = m.to_bytes();
        for cut in 0..full.len() {
            let r = Message::parse(m.kind(), &full[..cut]);
            match (m.kind(), r) {
                // Variable-length tails: a shorter payload is another valid message.
                (0x00 | 0x02 | 0x09 | 0x1D, Ok(_)) => {}
                (0x0D, Ok(_)) if cut == 10 || cut >= 22 => {}
                (_, Ok(other)) => panic!("{:#x} cut at {cut} parsed as {other:?}", m.kind()),
                (_, Err(_)) => {}
            }
        }
        // A byte too many is an error where the end is fixed.
        let mut longer = full.to_vec();
        longer.push(0);
        let r = Message::parse(m.kind(), &longer);
        match m.kind() {
            0x06 | 0x07 | 0x08 | 0x22 | 0x05 | 0x26 => {
                assert!(matches!(r, Err(FtError::TrailingBytes { .. })), "{r:?}")
            }
            0x0D if full.len() == 10 => {
                assert!(matches!(r, Err(FtError::BadLength { .. })), "{r:?}")
            }
            _ => assert!(r.is_ok(), "{:#x}: {r:?}", m.kind()),
        }
    }
}

#[test]
fn unknown_kinds_are_kept() {
    for kind in [0x01u8, 0x03, 0x1E, 0x1F, 0x23, 0x24, 0xFF] {
        let m = Message::parse(kind, b"\x00\x00\x00\x7b").unwrap();
        assert_eq!(
            m,
            Message::Unknown {
                kind,
                payload: Bytes::from_static(b"\x00\x00\x00\x7b")
            }
        );
        assert_eq!(m.kind(), kind);
    }
}

#[test]
fn huge_counts_do_not_allocate() {
    // A tag count of 2^32-1 in 30 bytes, and a reply claiming 65535 results.
    let mut share = vec![0u8; 24];
    share.extend_from_slice(&[0x00, 0x00, 0x8F, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert!(matches!(
        Message::parse(0x22, &share),
        Err(FtError::Truncated { .. })
    ));
    let reply = [127, 0, 0, 1, 0, 1, 0, 0, 0xFF, 0xFF];
    assert!(matches!(
        Message::parse(0x07, &reply),
        Err(FtError::Truncated { .. })
    ));
}

#[test]
fn result_names_are_written_so_they_read_back() {
    use servent::fasttrack::wire::{QueryReply, QueryResult};
    let res = QueryResult {
        ip: "10.0.0.1".parse().unwrap(),
        port: 1214,
        bandwidth: 0x60,
        user: Bytes::from_static(b"\x02a\x01b"),
        network: Bytes::from_static(b"Ka\0ZaA"),
        fth: [7; 20],
        file_id: 3,
        size: 1 << 31,
        tags: vec![Tag::text(2, &b"x.mp3"[..]), Tag::int(0x15, 128)],
    };
    let m = Message::QueryReply(QueryReply {
        supernode_ip: "10.0.0.2".parse().unwrap(),
        supernode_port: 1214,
        id: 9,
        results: vec![res],
    });
    let Message::QueryReply(back) = Message::parse(7, &m.to_bytes()).unwrap() else {
        panic!()
    };
    assert_eq!(&back.results[0].user[..], b"_a_b");
    assert_eq!(&back.results[0].network[..], b"Ka_ZaA");
    assert_eq!(back.results[0].tags[1].as_int(), Some(128));
}

#[test]
fn compressed_result_names_copy_the_earlier_result() {
    let mut p = vec![127, 0, 0, 1, 0x52, 0xde, 0, 1, 0, 2];
    for second in [false, true] {
        p.extend_from_slice(&[10, 0, 0, 5, 0x53, 0x35, 0x60]);
        if second {
            p.push(0x02);
        } else {
            p.extend_from_slice(b"bob\x01KaZaA\x00");
        }
        p.extend_from_slice(&[1; 20]);
        p.extend_from_slice(&[0x01, 0x02, 0x01, 0x02, 0x01, b'f']);
    }
    let Message::QueryReply(r) = Message::parse(7, &p).unwrap() else {
        panic!()
    };
    assert_eq!(&r.results[1].user[..], b"bob");
    assert_eq!(&r.results[1].network[..], b"KaZaA");
}

// ---------------------------------------------------------------------------
// Property round trips

mod props {
    use std::net::Ipv4Addr;

    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    use servent::fasttrack::cipher::{KNOWN_SEEDS, SUPPORTED_ENC_TYPES};
    use servent::fasttrack::session::{ClientSession, Packet, ServerSession};
    use servent::fasttrack::wire::{
        FileRecord, Message, NetworkStats, NodeEntry, NodeInfo, PushForward, PushRequest, Query,
        QueryReply, QueryResult, QueryTerm, Tag, dynint, put_dynint,
    };

    fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
    }

    fn without(bad: u8, max: usize) -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(
            any::<u8>().prop_filter("terminator", move |b| *b != bad),
            0..max,
        )
        .prop_map(Bytes::from)
    }

    fn ip() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn tag() -> impl Strategy<Value = Tag> {
        (any::<u32>(), bytes(40)).prop_map(|(id, value)| Tag { id, value })
    }

    fn tags() -> impl Strategy<Value = Vec<Tag>> {
        proptest::collection::vec(tag(), 0..6)
    }

    fn file() -> impl Strategy<Value = FileRecord> {
        (any::<[u8; 20]>(), any::<u32>(), any::<u32>(), tags()).prop_map(
            |(fth, file_id, size, tags)| FileRecord {
                fth,
                file_id,
                size,
                tags,
            },
        )
    }

    fn result() -> impl Strategy<Value = QueryResult> {
        (
            (ip(), any::<u16>(), any::<u8>()),
            without(0x01, 20).prop_filter("compressed", |u| u.first() != Some(&0x02)),
            without(0x00, 12),
            (any::<[u8; 20]>(), any::<u32>(), any::<u32>(), tags()),
        )
            .prop_map(
                |((ip, port, bandwidth), user, network, (fth, file_id, size, tags))| QueryResult {
                    ip,
                    port,
                    bandwidth,
                    user,
                    network,
                    fth,
                    file_id,
                    size,
                    tags,
                },
            )
    }

    fn message() -> impl Strategy<Value = Message> {
        prop_oneof![
            proptest::collection::vec(
                (ip(), any::<u16>(), any::<u8>(), any::<u8>()).prop_map(
                    |(ip, port, last_seen, load)| NodeEntry {
                        ip,
                        port,
                        last_seen,
                        load
                    }
                ),
                0..20
            )
            .prop_map(Message::NodeList),
            (ip(), any::<u16>(), any::<u8>(), bytes(32)).prop_map(|(ip, port, bandwidth, user)| {
                Message::NodeInfo(NodeInfo {
                    ip,
                    port,
                    bandwidth,
                    user,
                })
            }),
            (any::<u8>(), file()).prop_map(|(media, file)| Message::ShareFile { media, file }),
            file().prop_map(Message::UnshareFile),
            (
                any::<u16>(),
                any::<u16>(),
                any::<u8>(),
                proptest::collection::vec(
                    (any::<u8>(), any::<u8>(), bytes(30)).prop_map(|(cmp, tag, value)| QueryTerm {
                        cmp,
                        tag,
                        value
                    }),
                    0..4
                )
            )
                .prop_map(|(max_results, id, realm, terms)| Message::Query(Query {
                    max_results,
                    id,
                    realm,
                    terms
                })),
            (
                ip(),
                any::<u16>(),
                any::<u16>(),
                proptest::collection::vec(result(), 0..5)
            )
                .prop_map(|(supernode_ip, supernode_port, id, results)| {
                    Message::QueryReply(QueryReply {
                        supernode_ip,
                        supernode_port,
                        id,
                        results,
                    })
                }),
            any::<u16>().prop_map(|id| Message::QueryEnd { id }),
            (
                any::<u32>(),
                any::<u32>(),
                any::<u16>(),
                any::<u16>(),
                bytes(60)
            )
                .prop_map(|(users, files, size_mantissa, size_exponent, extra)| {
                    Message::NetworkStats(NetworkStats {
                        users,
                        files,
                        size_mantissa,
                        size_exponent,
                        extra,
                    })
                }),
            (
                (any::<u32>(), ip(), any::<u16>()),
                (ip(), any::<u16>(), ip(), any::<u16>()),
                bytes(20)
            )
                .prop_map(
                    |((push_id, requester_ip, requester_port), (ti, tp, si, sp), u)| {
                        Message::PushRequest(PushRequest {
                            push_id,
                            requester_ip,
                            requester_port,
                            target_ip: ti,
                            target_port: tp,
                            supernode_ip: si,
                            supernode_port: sp,
                            target_user: u,
                        })
                    }
                ),
            (any::<u32>(), ip(), any::<u16>()).prop_map(
                |(push_id, requester_ip, requester_port)| {
                    Message::PushForward(PushForward {
                        push_id,
                        requester_ip,
                        requester_port,
                    })
                }
            ),
            bytes(20).prop_map(Message::NetworkName),
            any::<u32>().prop_map(Message::ProtocolVersion),
            ip().prop_map(Message::ExternalIp),
            (any::<u8>(), bytes(40))
                .prop_filter("a kind we parse", |(k, _)| ![
                    0x00u8, 0x02, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0D, 0x1D, 0x22, 0x26, 0x2C
                ]
                .contains(k))
                .prop_map(|(kind, payload)| Message::Unknown { kind, payload }),
        ]
    }

    proptest! {
        #[test]
        fn dynint_round_trips(v in any::<u32>(), tail in bytes(4)) {
            let mut out = BytesMut::new();
            put_dynint(&mut out, v);
            out.extend_from_slice(&tail);
            prop_assert_eq!(dynint(&out), Ok((&tail[..], v)));
        }

        #[test]
        fn tags_round_trip(t in tag()) {
            let mut out = BytesMut::new();
            t.encode(&mut out);
            let Message::UnshareFile(f) = Message::parse(0x05, &{
                let mut p = BytesMut::from(&[0u8; 20][..]);
                p.extend_from_slice(&[0, 0, 1]);
                p.extend_from_slice(&out);
                p
            }).unwrap() else { panic!() };
            prop_assert_eq!(&f.tags[..], &[t][..]);
        }

        #[test]
        fn messages_round_trip(m in message()) {
            let wire = m.to_bytes();
            let back = Message::parse(m.kind(), &wire).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.to_bytes(), wire);
        }

        #[test]
        fn any_payload_parses_or_errs_and_reencodes_stably(kind in any::<u8>(), p in bytes(200)) {
            if let Ok(m) = Message::parse(kind, &p) {
                prop_assert_eq!(m.kind(), kind);
                let wire = m.to_bytes();
                let again = Message::parse(kind, &wire).unwrap();
                prop_assert_eq!(again.to_bytes(), wire);
            }
        }

        #[test]
        fn sessions_round_trip(
            seed_i in 0..KNOWN_SEEDS.len(),
            client_seed_i in 0..KNOWN_SEEDS.len(),
            enc_i in 0..SUPPORTED_ENC_TYPES.len(),
            down in proptest::collection::vec(proptest::option::of(message()), 0..8),
            up in proptest::collection::vec(proptest::option::of(message()), 0..8),
            cut in 1usize..64,
        ) {
            let mut s = ServerSession::new(KNOWN_SEEDS[seed_i].0, SUPPORTED_ENC_TYPES[enc_i]).unwrap();
            let mut c = ClientSession::new(KNOWN_SEEDS[client_seed_i].0, 0x29).unwrap();
            // None = a ping.
            for m in &down {
                match m { Some(m) => s.send_message(m).unwrap(), None => s.send_ping() }
            }
            for m in &up {
                match m { Some(m) => c.send_message(m).unwrap(), None => c.send_ping() }
            }
            let mut at_server = Vec::new();
            let mut at_client = Vec::new();
            for _ in 0..4 {
                for chunk in c.take_output().chunks(cut) {
                    s.receive(chunk).unwrap();
                    while let Some(p) = s.poll_packet().unwrap() { at_server.push(p); }
                }
                for chunk in s.take_output().chunks(cut) {
                    c.receive(chunk).unwrap();
                    while let Some(p) = c.poll_packet().unwrap() { at_client.push(p); }
                }
            }
            let read = |ps: &[Packet]| -> Vec<Option<Message>> {
                ps.iter().map(|p| p.parse().map(|r| r.unwrap())).collect()
            };
            prop_assert_eq!(read(&at_client), down);
            prop_assert_eq!(read(&at_server), up);
        }
    }
}
