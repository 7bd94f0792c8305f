//! FastTrack session throughput, as ratios to a plain copy of the same bytes
//! measured in the same run.
//!
//! Run with `cargo bench --bench fasttrack_wire`. Rows:
//! - `cipher`: the keystream XOR-ed onto the bytes (type 0x09: the lookup shift at
//!   every pad wrap included);
//! - `supernode in`: a `ServerSession` reading what giFT sends after login (50
//!   shares, queries, pings, node infos), decrypting, framing and parsing every
//!   message into a `Message`;
//! - `supernode out`: a `ServerSession` encoding and encrypting replies of 20
//!   results each, then a 0x08.
//!
//! Setting up a session (two ciphers; type 0x01 cubes a 2048-bit number) is given
//! as the number of stream bytes the cipher handles in the same time.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use servent::fasttrack::cipher::Cipher;
use servent::fasttrack::session::{ClientSession, Packet, ServerSession};
use servent::fasttrack::wire::{
    FileRecord, Message, NodeInfo, Query, QueryReply, QueryResult, QueryTerm, Tag, realm, tag,
};

mod common;
use common::Rng;

fn best<F: FnMut()>(rounds: usize, min: Duration, mut f: F) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let mut n = 0u32;
        let start = Instant::now();
        loop {
            f();
            n += 1;
            if start.elapsed() >= min {
                break;
            }
        }
        best = best.min(start.elapsed() / n);
    }
    best
}

fn fth(rng: &mut Rng) -> [u8; 20] {
    let mut h = [0u8; 20];
    for b in h.iter_mut() {
        *b = rng.next() as u8;
    }
    h
}

fn file(rng: &mut Rng, i: usize) -> FileRecord {
    FileRecord {
        fth: fth(rng),
        file_id: rng.next() as u32 & 0x3FFF,
        size: rng.next() as u32,
        tags: vec![
            Tag::text(
                tag::FILENAME,
                format!("artist {i} - some song title {i}.mp3"),
            ),
            Tag::text(tag::ARTIST, format!("artist {i}")),
            Tag::int(tag::BITRATE, 192),
            Tag::int(tag::DURATION, 200 + i as u32),
        ],
    }
}

/// What a giFT user sends in its first minutes.
fn upstream(rng: &mut Rng) -> Vec<Message> {
    let info = Message::NodeInfo(NodeInfo {
        ip: Ipv4Addr::new(10, 0, 0, 7),
        port: 21301,
        bandwidth: 0x60,
        user: Bytes::from_static(b"someone"),
    });
    let mut out = vec![info.clone(), Message::ProtocolVersion(0x22), info];
    for i in 0..50 {
        out.push(Message::ShareFile {
            media: 1,
            file: file(rng, i),
        });
    }
    for id in 0..20u16 {
        out.push(Message::Query(Query {
            max_results: 1000,
            id,
            realm: realm::EVERYTHING,
            terms: vec![QueryTerm {
                cmp: 0x05,
                tag: 0,
                value: Bytes::from(format!("song title {id}")),
            }],
        }));
    }
    out
}

fn reply(rng: &mut Rng, id: u16) -> Message {
    Message::QueryReply(QueryReply {
        supernode_ip: Ipv4Addr::new(10, 0, 0, 1),
        supernode_port: 1214,
        id,
        results: (0..20)
            .map(|i| {
                let f = file(rng, i);
                QueryResult {
                    ip: Ipv4Addr::new(10, 0, 1, i as u8),
                    port: 21301,
                    bandwidth: 0x60,
                    user: Bytes::from(format!("user{i}")),
                    network: Bytes::from_static(b"KaZaA"),
                    fth: f.fth,
                    file_id: f.file_id,
                    size: f.size,
                    tags: f.tags,
                }
            })
            .collect(),
    })
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (rounds, min) = if quick {
        (1, Duration::from_millis(20))
    } else {
        (5, Duration::from_millis(300))
    };
    let mut rng = Rng(0x5EED_F457);

    // The user's stream: what a ClientSession writes after the supernode's hello.
    let msgs = upstream(&mut rng);
    let mut server = ServerSession::new(0x2A1B_3C4D, 0x09).unwrap();
    let mut client = ClientSession::new_gift();
    let hello = client.take_output();
    server.receive(&hello).unwrap();
    client.receive(&server.take_output()).unwrap();
    for m in &msgs {
        client.send_message(m).unwrap();
        client.send_ping();
    }
    let stream = client.take_output();
    let n_units = msgs.len() * 2;

    // A session right after the user's hello, cloned for each run so that the
    // set-up (measured on its own below) is not counted.
    let mut fresh = ServerSession::new(0x2A1B_3C4D, 0x09).unwrap();
    fresh.receive(&hello).unwrap();
    let _ = fresh.take_output();
    let read_all = |stream: &[u8]| -> usize {
        let mut s = fresh.clone();
        let mut n = 0;
        for chunk in stream.chunks(4096) {
            s.receive(chunk).unwrap();
            while let Some(p) = s.poll_packet().unwrap() {
                if let Some(m) = p.parse() {
                    black_box(m.unwrap());
                }
                n += 1;
            }
        }
        n
    };
    // Correctness first: every unit arrives and parses to what was sent.
    {
        let mut s = ServerSession::new(0x2A1B_3C4D, 0x09).unwrap();
        s.receive(&hello).unwrap();
        s.receive(&stream).unwrap();
        let mut got = Vec::new();
        while let Some(p) = s.poll_packet().unwrap() {
            if p != Packet::Ping {
                got.push(p.parse().unwrap().unwrap());
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(read_all(&stream), n_units);
    }

    let mut copy = vec![0u8; stream.len()];
    let t_copy = best(rounds, min, || {
        copy.copy_from_slice(black_box(&stream));
        black_box(&copy);
    });
    let mut buf = stream.to_vec();
    let mut cipher = Cipher::new(0x1234_5678, 0x09).unwrap();
    let t_cipher = best(rounds, min, || {
        cipher.apply(black_box(&mut buf));
    });
    let t_in = best(rounds, min, || {
        black_box(read_all(black_box(&stream)));
    });

    let replies: Vec<Message> = (0..10).map(|id| reply(&mut rng, id)).collect();
    let mut out_len = 0;
    let t_out = best(rounds, min, || {
        let mut s = fresh.clone();
        for (id, r) in replies.iter().enumerate() {
            s.send_message(r).unwrap();
            s.send_message(&Message::QueryEnd { id: id as u16 })
                .unwrap();
        }
        out_len = s.take_output().len();
        black_box(out_len);
    });
    // Setting up the session is part of t_out; measure it alone too.
    let t_setup = best(rounds, min, || {
        let mut s = ServerSession::new(0x2A1B_3C4D, 0x01).unwrap();
        s.receive(black_box(&hello)).unwrap();
        black_box(s.take_output());
    });
    let mut copy_out = vec![0u8; out_len];
    let src = vec![1u8; out_len];
    let t_copy_out = best(rounds, min, || {
        copy_out.copy_from_slice(black_box(&src));
        black_box(&copy_out);
    });

    let mbs = |bytes: usize, t: Duration| bytes as f64 / t.as_secs_f64() / 1e6;
    println!(
        "stream in: {} bytes, {} units; stream out: {} bytes",
        stream.len(),
        n_units,
        out_len
    );
    println!("| row | MB/s | x memcpy |");
    println!("|---|---|---|");
    println!(
        "| memcpy (baseline) | {:.0} | 1.0000 |",
        mbs(stream.len(), t_copy)
    );
    for (name, bytes, t, base) in [
        ("cipher (0x09)", stream.len(), t_cipher, t_copy),
        ("supernode in", stream.len(), t_in, t_copy),
        ("supernode out", out_len, t_out, t_copy_out),
    ] {
        println!(
            "| {name} | {:.0} | {:.4} |",
            mbs(bytes, t),
            base.as_secs_f64() / t.as_secs_f64()
        );
    }
    let per_byte = t_cipher.as_secs_f64() / stream.len() as f64;
    println!(
        "session set-up (type 0x01, both ciphers): as long as ciphering {:.0} bytes",
        t_setup.as_secs_f64() / per_byte
    );
    println!(
        "units read per second: {:.0}",
        n_units as f64 / t_in.as_secs_f64()
    );
}
