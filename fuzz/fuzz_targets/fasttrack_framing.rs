//! FastTrack framing behind the cipher: a supernode session
//! (`servent::fasttrack::session::ServerSession`) fed a user's stream in chunks.
//!
//! Input: a control byte `c`, `(c & 7) + 1` chunk-size bytes (as in `framing`),
//! then the plain stream the user sends after the handshake (its network name, a
//! NUL, units). Bit 3 of `c` selects tiny limits (8-byte names, 16-byte messages);
//! bits 4-5 pick the encryption type and seeds.
//!
//! The stream is encrypted as a user would (keystream of both seeds) and fed to
//! the session after the user's hello. Checks: no panic; the packets and the
//! error that stops the session are the same whatever the chunking; they are
//! exactly what `decode_unit` reads from the plain stream with the same limits
//! (after the name); every message re-encoded with `encode_unit` from the same
//! `xinu` gives back the bytes it came from; the session never holds more than its
//! buffer limit.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use servent::fasttrack::FtError;
use servent::fasttrack::cipher::{Cipher, GIFT_CLIENT_SEED, SUPPORTED_ENC_TYPES};
use servent::fasttrack::session::{Limits, Packet, ServerSession};
use servent::fasttrack::wire::{
    ClientHello, DEFAULT_NETWORK_NAME, GIFT_HELLO_RAND, XINU_START, decode_unit, encode_unit,
};
use servent_fuzz::{chunks, hex};

const TINY: Limits = Limits {
    max_name: 8,
    max_message: 16,
    max_buffer: 1 << 20,
};

/// A session right after a giFT hello, for each limit, seed and type: set up
/// once (two 2048-bit cubes each) and cloned for every input.
fn template(tiny: bool, seed_i: usize, enc: u32) -> ServerSession {
    static ALL: OnceLock<Vec<(bool, usize, u32, ServerSession, Cipher)>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let mut v = Vec::new();
        for tiny in [false, true] {
            for (i, &seed) in SEEDS.iter().enumerate() {
                for &enc in SUPPORTED_ENC_TYPES {
                    let limits = if tiny { TINY } else { Limits::SERVER };
                    let mut s =
                        ServerSession::with_options(seed, enc, DEFAULT_NETWORK_NAME, limits)
                            .expect("session");
                    let hello = ClientHello {
                        rand: GIFT_HELLO_RAND,
                        seed: GIFT_CLIENT_SEED,
                        enc_wire: 0,
                    };
                    s.receive(&hello.encode()).expect("hello");
                    assert!(s.take_output().len() >= 8);
                    let c = Cipher::new(GIFT_CLIENT_SEED ^ seed, enc).expect("cipher");
                    v.push((tiny, i, enc, s, c));
                }
            }
        }
        v
    });
    all.iter()
        .find(|t| t.0 == tiny && t.1 == seed_i && t.2 == enc)
        .map(|t| t.3.clone())
        .expect("a template")
}

/// The user's keystream for a seed and type.
fn user_cipher(seed_i: usize, enc: u32) -> Cipher {
    static ALL: OnceLock<Vec<(usize, u32, Cipher)>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let mut v = Vec::new();
        for (i, &seed) in SEEDS.iter().enumerate() {
            for &enc in SUPPORTED_ENC_TYPES {
                v.push((
                    i,
                    enc,
                    Cipher::new(GIFT_CLIENT_SEED ^ seed, enc).expect("cipher"),
                ));
            }
        }
        v
    });
    all.iter()
        .find(|t| t.0 == seed_i && t.1 == enc)
        .map(|t| t.2.clone())
        .expect("a cipher")
}

const SEEDS: [u32; 2] = [0x8BAD_F00D, 0x2A1B_3C4D];

fn run(
    mut s: ServerSession,
    limits: Limits,
    pieces: impl Iterator<Item = Vec<u8>>,
) -> (Vec<Packet>, Option<FtError>) {
    let mut packets = Vec::new();
    for piece in pieces {
        if let Err(e) = s.receive(&piece) {
            return (packets, Some(e));
        }
        assert!(s.buffered() <= limits.max_buffer);
        loop {
            match s.poll_packet() {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => return (packets, Some(e)),
            }
        }
    }
    (packets, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let n = (control & 7) as usize + 1;
    if rest.len() < n {
        return;
    }
    let (sizes, plain) = rest.split_at(n);
    let limits = if control & 8 != 0 {
        TINY
    } else {
        Limits::SERVER
    };
    let enc = SUPPORTED_ENC_TYPES[(control >> 4) as usize % SUPPORTED_ENC_TYPES.len()];
    let seed_i = usize::from(control >> 7);
    let tiny = control & 8 != 0;

    let mut wire = plain.to_vec();
    user_cipher(seed_i, enc).apply(&mut wire);

    let whole = run(
        template(tiny, seed_i, enc),
        limits,
        std::iter::once(wire.clone()),
    );
    let chunked = run(
        template(tiny, seed_i, enc),
        limits,
        chunks(&wire, sizes).map(|c| c.to_vec()),
    );
    assert_eq!(whole, chunked, "the chunking changed what was read");

    // The same stream read directly.
    let mut want = Vec::new();
    let mut error = None;
    match plain.iter().position(|&b| b == 0) {
        Some(i) if i <= limits.max_name => {
            let mut at = &plain[i + 1..];
            let mut xinu = XINU_START;
            loop {
                let before = xinu;
                match decode_unit(&mut xinu, at, limits.max_message) {
                    Ok(Some((p, used))) => {
                        if let Packet::Message {
                            kind,
                            flags,
                            payload,
                        } = &p
                        {
                            let mut x = before;
                            let mut out = BytesMut::new();
                            let t = u16::from_be_bytes([*flags, *kind]);
                            encode_unit(&mut x, t, payload, &mut out).expect("fits");
                            assert!(
                                out[..] == at[..used],
                                "re-encoded unit differs: {} vs {}",
                                hex(&out),
                                hex(&at[..used])
                            );
                            assert_eq!(x, xinu);
                        }
                        want.push(p);
                        at = &at[used..];
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        Some(_) => {
            error = Some(FtError::NetworkNameTooLong {
                max: limits.max_name,
            })
        }
        None if plain.len() > limits.max_name => {
            error = Some(FtError::NetworkNameTooLong {
                max: limits.max_name,
            })
        }
        None => {}
    }
    if plain.len() + 12 <= limits.max_buffer {
        assert_eq!(whole, (want, error));
    }
});
