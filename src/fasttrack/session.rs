//! A FastTrack session without I/O, for either end: fed the bytes a socket read
//! ([`receive`](ServerSession::receive)), asked for what arrived
//! ([`poll_packet`](ServerSession::poll_packet)), told what to send
//! ([`send_message`](ServerSession::send_message)), and drained of the bytes to
//! write ([`take_output`](ServerSession::take_output)).
//!
//! The handshake, from the supernode's side:
//!
//! 1. the user sends 12 clear bytes: a constant, its seed, its requested
//!    encryption type masked with its seed;
//! 2. we answer 8 clear bytes: our seed and our encryption type masked with our
//!    seed. Our type holds for both directions; the user's request is ignored, as
//!    shipped supernodes do and as giFT expects;
//! 3. from here every byte is XOR-ed with a keystream: ours from
//!    `(our seed, type)`, the user's from `(its seed ^ our seed, type)`;
//! 4. each side sends its network name and a NUL (a name that does not end
//!    within [`Limits::max_name`] is refused);
//! 5. then units: `0x50` ping, `0x52` pong, or `0x4B`, 4 header bytes whose order
//!    depends on the direction's `xinu`, and the payload.
//!
//! Every buffer is bounded ([`Limits`]): a message longer than the limit is refused
//! as soon as its header is read, before its payload is buffered.

use bytes::{Buf, Bytes, BytesMut};

use super::FtError;
use super::cipher::{
    Cipher, GIFT_CLIENT_SEED, GIFT_REQUESTED_ENC_TYPE, enc_type_mask, is_supported,
};
pub use super::wire::Packet;
use super::wire::{
    ClientHello, DEFAULT_NETWORK_NAME, GIFT_HELLO_RAND, Message, PING, PONG, ServerHello,
    XINU_START, decode_unit, encode_unit,
};

/// How much a session accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest network name in the handshake (without its NUL).
    pub max_name: usize,
    /// The longest message payload (at most 0xFFFF, what the header can say).
    pub max_message: usize,
    /// The most bytes held between `receive` and `poll_packet`.
    pub max_buffer: usize,
}

impl Limits {
    /// What a supernode accepts from a user: giFT's largest messages are shares
    /// of a few hundred bytes.
    pub const SERVER: Limits = Limits {
        max_name: 64,
        max_message: 4096,
        max_buffer: 64 * 1024,
    };
    /// What a user accepts from a supernode: replies up to the 16-bit maximum.
    pub const CLIENT: Limits = Limits {
        max_name: 64,
        max_message: 0xFFFF,
        max_buffer: 256 * 1024,
    };
}

/// The part both roles share once the peer's hello is known: the in-stream with its
/// name and framing, and the out-stream.
#[derive(Debug, Clone)]
struct Stream {
    limits: Limits,
    /// Raw bytes before the peer's hello is complete.
    raw: BytesMut,
    /// Decrypted bytes not yet turned into packets.
    plain: BytesMut,
    in_cipher: Option<Cipher>,
    in_xinu: u32,
    peer_name: Option<Bytes>,
    /// Output ready to write (clear hellos, then ciphertext).
    out: BytesMut,
    /// Plain output waiting for the out-cipher.
    out_plain: BytesMut,
    out_cipher: Option<Cipher>,
    out_xinu: u32,
}

impl Stream {
    fn new(limits: Limits) -> Stream {
        Stream {
            limits,
            raw: BytesMut::new(),
            plain: BytesMut::new(),
            in_cipher: None,
            in_xinu: XINU_START,
            peer_name: None,
            out: BytesMut::new(),
            out_plain: BytesMut::new(),
            out_cipher: None,
            out_xinu: XINU_START,
        }
    }

    fn buffered(&self) -> usize {
        self.raw.len() + self.plain.len()
    }

    /// Takes `data`; returns the peer's hello once `hello_len` raw bytes are in.
    fn receive(&mut self, data: &[u8], hello_len: usize) -> Result<Option<Bytes>, FtError> {
        if self.buffered() + data.len() > self.limits.max_buffer {
            return Err(FtError::BufferFull {
                max: self.limits.max_buffer,
            });
        }
        if let Some(c) = &mut self.in_cipher {
            let start = self.plain.len();
            self.plain.extend_from_slice(data);
            c.apply(&mut self.plain[start..]);
            return Ok(None);
        }
        self.raw.extend_from_slice(data);
        if self.raw.len() < hello_len {
            return Ok(None);
        }
        Ok(Some(self.raw.split_to(hello_len).freeze()))
    }

    /// Starts decrypting with `cipher`, including bytes that came with the hello.
    fn start_in(&mut self, mut cipher: Cipher) {
        let mut rest = std::mem::take(&mut self.raw);
        cipher.apply(&mut rest);
        self.plain.extend_from_slice(&rest);
        self.in_cipher = Some(cipher);
    }

    fn start_out(&mut self, mut cipher: Cipher) {
        let mut pending = std::mem::take(&mut self.out_plain);
        cipher.apply(&mut pending);
        self.out.extend_from_slice(&pending);
        self.out_cipher = Some(cipher);
    }

    fn write_plain(&mut self, bytes: &[u8]) {
        match &mut self.out_cipher {
            Some(c) => {
                let start = self.out.len();
                self.out.extend_from_slice(bytes);
                c.apply(&mut self.out[start..]);
            }
            None => self.out_plain.extend_from_slice(bytes),
        }
    }

    fn send_message(&mut self, msg: &Message) -> Result<(), FtError> {
        let mut payload = BytesMut::new();
        msg.encode(&mut payload);
        self.send_raw(u16::from(msg.kind()), &payload)
    }

    fn send_raw(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), FtError> {
        let mut unit = BytesMut::with_capacity(5 + payload.len());
        encode_unit(&mut self.out_xinu, msg_type, payload, &mut unit)?;
        self.write_plain(&unit);
        Ok(())
    }

    fn poll_packet(&mut self) -> Result<Option<Packet>, FtError> {
        if self.in_cipher.is_none() {
            return Ok(None);
        }
        if self.peer_name.is_none() {
            match memchr::memchr(0, &self.plain) {
                Some(n) if n <= self.limits.max_name => {
                    let name = self.plain.split_to(n).freeze();
                    self.plain.advance(1);
                    self.peer_name = Some(name);
                }
                Some(_) => {
                    return Err(FtError::NetworkNameTooLong {
                        max: self.limits.max_name,
                    });
                }
                None if self.plain.len() > self.limits.max_name => {
                    return Err(FtError::NetworkNameTooLong {
                        max: self.limits.max_name,
                    });
                }
                None => return Ok(None),
            }
        }
        match decode_unit(&mut self.in_xinu, &self.plain, self.limits.max_message)? {
            Some((packet, used)) => {
                self.plain.advance(used);
                Ok(Some(packet))
            }
            None => Ok(None),
        }
    }
}

/// The supernode's end of a session.
#[derive(Debug, Clone)]
pub struct ServerSession {
    seed: u32,
    enc_type: u32,
    hello: Option<ClientHello>,
    stream: Stream,
}

impl ServerSession {
    /// A session that will answer with `seed` and `enc_type` and send the network
    /// name "KaZaA". The seed's mask must be known ([`super::cipher::KNOWN_SEEDS`])
    /// and the type one we implement.
    pub fn new(seed: u32, enc_type: u32) -> Result<ServerSession, FtError> {
        ServerSession::with_options(seed, enc_type, DEFAULT_NETWORK_NAME, Limits::SERVER)
    }

    /// As [`ServerSession::new`], with our network name and limits.
    pub fn with_options(
        seed: u32,
        enc_type: u32,
        network_name: &[u8],
        limits: Limits,
    ) -> Result<ServerSession, FtError> {
        let mask = enc_type_mask(seed).ok_or(FtError::UnknownSeed(seed))?;
        let out_cipher = Cipher::new(seed, enc_type)?;
        let mut stream = Stream::new(limits);
        let hello = ServerHello {
            seed,
            enc_wire: enc_type ^ mask,
        };
        stream.out.extend_from_slice(&hello.encode());
        stream.start_out(out_cipher);
        stream.write_plain(network_name);
        stream.write_plain(&[0]);
        Ok(ServerSession {
            seed,
            enc_type,
            hello: None,
            stream,
        })
    }

    /// Feeds bytes read from the user.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), FtError> {
        if let Some(hello) = self.stream.receive(data, ClientHello::LEN)? {
            let hello = ClientHello::parse(hello[..].try_into().expect("12 bytes"));
            let cipher = Cipher::new(hello.seed ^ self.seed, self.enc_type)?;
            self.stream.start_in(cipher);
            self.hello = Some(hello);
        }
        Ok(())
    }

    /// The next unit from the user, if a whole one has arrived.
    pub fn poll_packet(&mut self) -> Result<Option<Packet>, FtError> {
        self.stream.poll_packet()
    }

    /// Queues a message.
    pub fn send_message(&mut self, msg: &Message) -> Result<(), FtError> {
        self.stream.send_message(msg)
    }

    /// Queues a message of any type (high byte = flags) with a raw payload.
    pub fn send_raw(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), FtError> {
        self.stream.send_raw(msg_type, payload)
    }

    pub fn send_ping(&mut self) {
        self.stream.write_plain(&[PING]);
    }

    pub fn send_pong(&mut self) {
        self.stream.write_plain(&[PONG]);
    }

    /// The bytes to write to the user. Nothing is released before the user's hello
    /// has arrived: what is queued before then follows our hello.
    pub fn take_output(&mut self) -> Bytes {
        if self.hello.is_none() {
            return Bytes::new();
        }
        self.stream.out.split().freeze()
    }

    /// Whether output is waiting.
    pub fn has_output(&self) -> bool {
        self.hello.is_some() && !self.stream.out.is_empty()
    }

    /// The user's hello, once it has arrived.
    pub fn client_hello(&self) -> Option<ClientHello> {
        self.hello
    }

    /// The encryption type the user asked for, when its seed's mask is known.
    pub fn requested_enc_type(&self) -> Option<u32> {
        let h = self.hello?;
        Some(h.enc_wire ^ enc_type_mask(h.seed)?)
    }

    /// The network name the user sent, once it has ended.
    pub fn peer_network_name(&self) -> Option<&Bytes> {
        self.stream.peer_name.as_ref()
    }

    /// Whether the handshake is over (names exchanged) and messages flow.
    pub fn is_established(&self) -> bool {
        self.stream.peer_name.is_some()
    }

    pub fn enc_type(&self) -> u32 {
        self.enc_type
    }

    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// Bytes held between `receive` and `poll_packet`.
    pub fn buffered(&self) -> usize {
        self.stream.buffered()
    }

    /// How many more bytes `receive` takes now: read at most this much from the
    /// socket (after taking every packet), and `BufferFull` never comes from a
    /// well-behaved user.
    pub fn room(&self) -> usize {
        self.stream.limits.max_buffer - self.stream.buffered()
    }
}

/// A user node's end of a session (what giFT-FastTrack does), for tests and for
/// connecting to a supernode.
#[derive(Debug, Clone)]
pub struct ClientSession {
    seed: u32,
    server: Option<ServerHello>,
    enc_type: Option<u32>,
    stream: Stream,
}

impl ClientSession {
    /// A session that sends giFT's hello (seed 0xFACB1238, asking for 0x29) and
    /// the network name "KaZaA".
    pub fn new_gift() -> ClientSession {
        ClientSession::new(GIFT_CLIENT_SEED, GIFT_REQUESTED_ENC_TYPE)
            .expect("giFT's seed has a known mask")
    }

    /// A session with our `seed` (whose mask must be known) asking for
    /// `requested_enc_type`.
    pub fn new(seed: u32, requested_enc_type: u32) -> Result<ClientSession, FtError> {
        ClientSession::with_options(
            seed,
            requested_enc_type,
            DEFAULT_NETWORK_NAME,
            Limits::CLIENT,
        )
    }

    /// As [`ClientSession::new`], with our network name and limits.
    pub fn with_options(
        seed: u32,
        requested_enc_type: u32,
        network_name: &[u8],
        limits: Limits,
    ) -> Result<ClientSession, FtError> {
        let mask = enc_type_mask(seed).ok_or(FtError::UnknownSeed(seed))?;
        let mut stream = Stream::new(limits);
        let hello = ClientHello {
            rand: GIFT_HELLO_RAND,
            seed,
            enc_wire: requested_enc_type ^ mask,
        };
        stream.out.extend_from_slice(&hello.encode());
        stream.write_plain(network_name);
        stream.write_plain(&[0]);
        Ok(ClientSession {
            seed,
            server: None,
            enc_type: None,
            stream,
        })
    }

    /// Feeds bytes read from the supernode. A supernode that picks an encryption
    /// type we do not implement, or a seed whose mask we do not know, is an error.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), FtError> {
        if let Some(hello) = self.stream.receive(data, ServerHello::LEN)? {
            let hello = ServerHello::parse(hello[..].try_into().expect("8 bytes"));
            let mask = enc_type_mask(hello.seed).ok_or(FtError::UnknownSeed(hello.seed))?;
            let enc_type = hello.enc_wire ^ mask;
            if !is_supported(enc_type) {
                return Err(FtError::UnsupportedEncType(enc_type));
            }
            self.stream.start_in(Cipher::new(hello.seed, enc_type)?);
            self.stream
                .start_out(Cipher::new(self.seed ^ hello.seed, enc_type)?);
            self.server = Some(hello);
            self.enc_type = Some(enc_type);
        }
        Ok(())
    }

    pub fn poll_packet(&mut self) -> Result<Option<Packet>, FtError> {
        self.stream.poll_packet()
    }

    pub fn send_message(&mut self, msg: &Message) -> Result<(), FtError> {
        self.stream.send_message(msg)
    }

    pub fn send_raw(&mut self, msg_type: u16, payload: &[u8]) -> Result<(), FtError> {
        self.stream.send_raw(msg_type, payload)
    }

    pub fn send_ping(&mut self) {
        self.stream.write_plain(&[PING]);
    }

    pub fn send_pong(&mut self) {
        self.stream.write_plain(&[PONG]);
    }

    /// The bytes to write: our hello at once, the rest once the supernode's hello
    /// has given us the keystream.
    pub fn take_output(&mut self) -> Bytes {
        self.stream.out.split().freeze()
    }

    pub fn has_output(&self) -> bool {
        !self.stream.out.is_empty()
    }

    /// The supernode's hello, once it has arrived.
    pub fn server_hello(&self) -> Option<ServerHello> {
        self.server
    }

    /// The encryption type the supernode chose.
    pub fn enc_type(&self) -> Option<u32> {
        self.enc_type
    }

    pub fn peer_network_name(&self) -> Option<&Bytes> {
        self.stream.peer_name.as_ref()
    }

    pub fn is_established(&self) -> bool {
        self.stream.peer_name.is_some()
    }

    pub fn buffered(&self) -> usize {
        self.stream.buffered()
    }

    /// How many more bytes `receive` takes now.
    pub fn room(&self) -> usize {
        self.stream.limits.max_buffer - self.stream.buffered()
    }
}
