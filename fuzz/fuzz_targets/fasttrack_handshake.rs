//! The start of a FastTrack session from both ends: arbitrary bytes fed, in
//! chunks, to a supernode session (as the user's hello and what follows) and to a
//! user session (as the supernode's hello and what follows).
//!
//! Input: a control byte `c`, `(c & 7) + 1` chunk-size bytes (as in `framing`),
//! then the bytes. Bit 3 of `c` selects tiny limits (4-byte names, 8-byte
//! messages).
//!
//! Checks: no panic; what each side reads, the error that stops it, and what it
//! writes are the same whatever the chunking; nothing is written to the user
//! before its 12-byte hello is complete, and then our 8-byte hello comes first with
//! our seed; the user side refuses a supernode whose seed or type we do not know
//! and otherwise takes the type from the hello; neither holds more than its
//! buffer limit.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use servent::fasttrack::FtError;
use servent::fasttrack::cipher::{enc_type_mask, is_supported};
use servent::fasttrack::session::{ClientSession, Limits, Packet, ServerSession};
use servent::fasttrack::wire::{DEFAULT_NETWORK_NAME, ServerHello};
use servent_fuzz::chunks;

// The buffer limit stays large: a whole input arriving at once must not be
// refused where the same bytes in chunks are read (tests/fasttrack_wire.rs checks
// the limit).
const TINY: Limits = Limits {
    max_name: 4,
    max_message: 8,
    max_buffer: 1 << 20,
};

#[derive(Debug, PartialEq)]
struct Run {
    packets: Vec<Packet>,
    error: Option<FtError>,
    output: Vec<u8>,
}

fn server<'a>(limits: Limits, pieces: impl Iterator<Item = &'a [u8]>) -> Run {
    // Set up once (a 2048-bit cube), cloned for every run.
    static SERVERS: OnceLock<[ServerSession; 2]> = OnceLock::new();
    let servers = SERVERS.get_or_init(|| {
        [Limits::CLIENT, TINY].map(|l| {
            ServerSession::with_options(0x1BAD_F00D, 0x09, DEFAULT_NETWORK_NAME, l)
                .expect("session")
        })
    });
    let mut s = servers[usize::from(limits == TINY)].clone();
    let mut run = Run {
        packets: Vec::new(),
        error: None,
        output: Vec::new(),
    };
    let mut fed = 0;
    for piece in pieces {
        fed += piece.len();
        let out = s.take_output();
        if fed - piece.len() < 12 {
            assert!(out.is_empty(), "output before the hello");
        }
        run.output.extend_from_slice(&out);
        if let Err(e) = s.receive(piece) {
            run.error = Some(e);
            break;
        }
        assert!(s.buffered() <= limits.max_buffer);
        loop {
            match s.poll_packet() {
                Ok(Some(p)) => run.packets.push(p),
                Ok(None) => break,
                Err(e) => {
                    run.error = Some(e);
                    break;
                }
            }
        }
        if run.error.is_some() {
            break;
        }
    }
    run.output.extend_from_slice(&s.take_output());
    if s.client_hello().is_some() {
        assert_eq!(run.output[..4], 0x1BAD_F00Du32.to_be_bytes());
    }
    run
}

fn client<'a>(limits: Limits, pieces: impl Iterator<Item = &'a [u8]>) -> Run {
    let mut c = ClientSession::with_options(0xFACB_1238, 0x29, DEFAULT_NETWORK_NAME, limits)
        .expect("session");
    let mut run = Run {
        packets: Vec::new(),
        error: None,
        output: c.take_output().to_vec(),
    };
    assert_eq!(run.output.len(), 12);
    for piece in pieces {
        if let Err(e) = c.receive(piece) {
            run.error = Some(e);
            break;
        }
        run.output.extend_from_slice(&c.take_output());
        assert!(c.buffered() <= limits.max_buffer);
        loop {
            match c.poll_packet() {
                Ok(Some(p)) => run.packets.push(p),
                Ok(None) => break,
                Err(e) => {
                    run.error = Some(e);
                    break;
                }
            }
        }
        if run.error.is_some() {
            break;
        }
    }
    if let Some(h) = c.server_hello() {
        let enc = h.enc_wire ^ enc_type_mask(h.seed).expect("a known seed");
        assert_eq!(c.enc_type(), Some(enc));
        assert!(is_supported(enc));
    }
    run
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let n = (control & 7) as usize + 1;
    if rest.len() < n {
        return;
    }
    let (sizes, stream) = rest.split_at(n);
    let limits = if control & 8 != 0 {
        TINY
    } else {
        Limits::CLIENT
    };

    let whole = server(limits, std::iter::once(stream));
    let chunked = server(limits, chunks(stream, sizes));
    assert_eq!(whole, chunked, "server: the chunking changed the result");

    let whole = client(limits, std::iter::once(stream));
    let chunked = client(limits, chunks(stream, sizes));
    assert_eq!(whole, chunked, "client: the chunking changed the result");
    if stream.len() >= 8 {
        let h = ServerHello::parse(stream[..8].try_into().unwrap());
        match enc_type_mask(h.seed) {
            None => assert_eq!(whole.error, Some(FtError::UnknownSeed(h.seed))),
            Some(mask) if !is_supported(h.enc_wire ^ mask) => assert_eq!(
                whole.error,
                Some(FtError::UnsupportedEncType(h.enc_wire ^ mask))
            ),
            Some(_) => {}
        }
    }
});
