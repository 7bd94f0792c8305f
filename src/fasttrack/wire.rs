//! FastTrack formats as typed values, no I/O: packed integers (`dynint`), tags,
//! the handshake words, the `0x4B` message header and its `xinu` permutation, and
//! the messages between a user node and its supernode, both ways.
//!
//! Parsers take one exact payload (the session has framed it) and either return
//! a value or say what was wrong; nothing read here can panic or allocate more
//! than the input's size. Encoders append to a `BytesMut` and are canonical:
//! a parsed value encodes to bytes that parse back to the same value.
//!
//! Byte order is big-endian for ports, ids, counts and the handshake words;
//! IPv4 addresses are as on the wire; sizes, file ids and tags are `dynint`s.

use std::net::Ipv4Addr;

use bytes::{BufMut, Bytes, BytesMut};

use super::FtError;

/// Message ids (the low byte of the 16-bit type in the message header).
pub mod kind {
    /// Supernode list (supernode → user).
    pub const NODE_LIST: u8 = 0x00;
    /// The user's address, port, bandwidth and name (user → supernode).
    pub const NODE_INFO: u8 = 0x02;
    /// Stop sharing a file (user → supernode).
    pub const UNSHARE_FILE: u8 = 0x05;
    /// A search (user → supernode).
    pub const QUERY: u8 = 0x06;
    /// Search results (supernode → user).
    pub const QUERY_REPLY: u8 = 0x07;
    /// No more results for a search (supernode → user).
    pub const QUERY_END: u8 = 0x08;
    /// Network size (supernode → user).
    pub const NETWORK_STATS: u8 = 0x09;
    /// Push request (user → supernode) and forwarded push (supernode → user).
    pub const PUSH: u8 = 0x0D;
    /// The network's name, unterminated (both ways).
    pub const NETWORK_NAME: u8 = 0x1D;
    /// Share a file (user → supernode).
    pub const SHARE_FILE: u8 = 0x22;
    /// A protocol version number, echoed by giFT (both ways).
    pub const PROTOCOL_VERSION: u8 = 0x26;
    /// The user's address as the supernode sees it (supernode → user).
    pub const EXTERNAL_IP: u8 = 0x2C;
}

/// Tag ids (metadata keys) that giFT-FastTrack knows.
pub mod tag {
    /// Search term matching any field.
    pub const ANY: u32 = 0x00;
    pub const YEAR: u32 = 0x01;
    /// The file name; giFT drops a result without it.
    pub const FILENAME: u32 = 0x02;
    /// 20 raw bytes of FTH (search term for a hash lookup).
    pub const HASH: u32 = 0x03;
    pub const TITLE: u32 = 0x04;
    /// Seconds.
    pub const DURATION: u32 = 0x05;
    pub const ARTIST: u32 = 0x06;
    pub const ALBUM: u32 = 0x08;
    pub const LANGUAGE: u32 = 0x0A;
    pub const KEYWORDS: u32 = 0x0C;
    /// Two dynints: width, height.
    pub const RESOLUTION: u32 = 0x0D;
    pub const CATEGORY: u32 = 0x0E;
    pub const OS: u32 = 0x10;
    pub const BITDEPTH: u32 = 0x11;
    pub const TYPE: u32 = 0x12;
    /// kbit/s.
    pub const BITRATE: u32 = 0x15;
    pub const VERSION: u32 = 0x18;
    pub const COMMENT: u32 = 0x1A;
    pub const CODEC: u32 = 0x1C;
    /// 0..4.
    pub const RATING: u32 = 0x1D;
    /// Search term on the file size.
    pub const SIZE: u32 = 0x21;
}

/// The fixed first word of a client hello, as giFT sends it.
pub const GIFT_HELLO_RAND: u32 = 0xFA00_B62B;

/// The network name giFT-FastTrack sends and that we send by default.
pub const DEFAULT_NETWORK_NAME: &[u8] = b"KaZaA";

// ---------------------------------------------------------------------------
// dynint

/// Appends `v` as a packed integer: base 128, most significant group first, bit 7
/// set on every byte but the last, shortest form.
pub fn put_dynint(out: &mut BytesMut, v: u32) {
    let mut groups = [0u8; 5];
    let mut n = 0;
    let mut x = v;
    loop {
        groups[n] = (x & 0x7F) as u8;
        n += 1;
        x >>= 7;
        if x == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        out.put_u8(groups[i] | more);
    }
}

/// The length of `v` as a packed integer.
pub fn dynint_len(v: u32) -> usize {
    match v {
        0..=0x7F => 1,
        0x80..=0x3FFF => 2,
        0x4000..=0x1F_FFFF => 3,
        0x20_0000..=0x0FFF_FFFF => 4,
        _ => 5,
    }
}

/// Reads a packed integer from the front of `input`, returning the rest. Longer
/// forms than needed (leading `0x80` bytes) are read as shipped clients read them;
/// more than 5 bytes, or a value over 32 bits, is an error.
pub fn dynint(input: &[u8]) -> Result<(&[u8], u32), FtError> {
    let mut v: u64 = 0;
    for (i, &b) in input.iter().enumerate() {
        if i == 5 {
            return Err(FtError::DynIntTooLong);
        }
        v = (v << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            let v = u32::try_from(v).map_err(|_| FtError::DynIntOverflow)?;
            return Ok((&input[i + 1..], v));
        }
    }
    if input.len() >= 5 {
        return Err(FtError::DynIntTooLong);
    }
    Err(FtError::Truncated {
        what: "packed integer",
    })
}

// ---------------------------------------------------------------------------
// A small reader over one payload.

struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a Bytes) -> Self {
        Reader { buf, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<Bytes, FtError> {
        if self.remaining() < n {
            return Err(FtError::Truncated { what });
        }
        let b = self.buf.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FtError> {
        if self.remaining() < N {
            return Err(FtError::Truncated { what });
        }
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.at..self.at + N]);
        self.at += N;
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FtError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FtError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FtError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn ip(&mut self, what: &'static str) -> Result<Ipv4Addr, FtError> {
        Ok(Ipv4Addr::from(self.array::<4>(what)?))
    }

    fn dynint(&mut self) -> Result<u32, FtError> {
        let rest = &self.buf[self.at..];
        let (after, v) = dynint(rest)?;
        self.at += rest.len() - after.len();
        Ok(v)
    }

    /// Bytes up to (not including) `end`, which is consumed.
    fn until(&mut self, end: u8, what: &'static str) -> Result<Bytes, FtError> {
        let rest = &self.buf[self.at..];
        let n = memchr::memchr(end, rest).ok_or(FtError::Truncated { what })?;
        let b = self.buf.slice(self.at..self.at + n);
        self.at += n + 1;
        Ok(b)
    }

    fn rest(&mut self) -> Bytes {
        let b = self.buf.slice(self.at..);
        self.at = self.buf.len();
        b
    }

    fn end(&self, what: &'static str) -> Result<(), FtError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(FtError::TrailingBytes { what, extra }),
        }
    }
}

// ---------------------------------------------------------------------------
// Tags

/// A metadata tag: `dynint id, dynint length, value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    pub id: u32,
    pub value: Bytes,
}

impl Tag {
    /// A tag with a text (or raw bytes) value.
    pub fn text(id: u32, value: impl Into<Bytes>) -> Tag {
        Tag {
            id,
            value: value.into(),
        }
    }

    /// A tag with an integer value (a dynint inside the value bytes).
    pub fn int(id: u32, v: u32) -> Tag {
        let mut b = BytesMut::with_capacity(5);
        put_dynint(&mut b, v);
        Tag {
            id,
            value: b.freeze(),
        }
    }

    /// The value read as one packed integer, when it is exactly one.
    pub fn as_int(&self) -> Option<u32> {
        match dynint(&self.value) {
            Ok(([], v)) => Some(v),
            _ => None,
        }
    }

    /// Appends the tag.
    pub fn encode(&self, out: &mut BytesMut) {
        put_dynint(out, self.id);
        put_dynint(out, self.value.len() as u32);
        out.put_slice(&self.value);
    }

    fn read(r: &mut Reader<'_>) -> Result<Tag, FtError> {
        let id = r.dynint()?;
        let len = r.dynint()? as usize;
        let value = r.take(len, "tag value")?;
        Ok(Tag { id, value })
    }
}

/// The value of the first tag with `id`.
pub fn find_tag(tags: &[Tag], id: u32) -> Option<&Bytes> {
    tags.iter().find(|t| t.id == id).map(|t| &t.value)
}

fn read_tags(r: &mut Reader<'_>) -> Result<Vec<Tag>, FtError> {
    let count = r.dynint()? as usize;
    // Each tag takes at least two bytes: never reserve more than the input holds.
    let mut tags = Vec::with_capacity(count.min(r.remaining() / 2));
    for _ in 0..count {
        tags.push(Tag::read(r)?);
    }
    Ok(tags)
}

fn put_tags(out: &mut BytesMut, tags: &[Tag]) {
    put_dynint(out, tags.len() as u32);
    for t in tags {
        t.encode(out);
    }
}

// ---------------------------------------------------------------------------
// Handshake

/// The 12 clear bytes a user node opens a session with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    /// giFT always sends [`GIFT_HELLO_RAND`]; nobody checks it.
    pub rand: u32,
    pub seed: u32,
    /// The requested encryption type XOR the mask of `seed`.
    pub enc_wire: u32,
}

impl ClientHello {
    pub const LEN: usize = 12;

    pub fn parse(b: &[u8; 12]) -> ClientHello {
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        ClientHello {
            rand: word(0),
            seed: word(4),
            enc_wire: word(8),
        }
    }

    pub fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.rand.to_be_bytes());
        b[4..8].copy_from_slice(&self.seed.to_be_bytes());
        b[8..12].copy_from_slice(&self.enc_wire.to_be_bytes());
        b
    }
}

/// The 8 clear bytes a supernode answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    pub seed: u32,
    /// The encryption type for both directions XOR the mask of `seed`.
    pub enc_wire: u32,
}

impl ServerHello {
    pub const LEN: usize = 8;

    pub fn parse(b: &[u8; 8]) -> ServerHello {
        ServerHello {
            seed: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            enc_wire: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    pub fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.seed.to_be_bytes());
        b[4..8].copy_from_slice(&self.enc_wire.to_be_bytes());
        b
    }
}

// ---------------------------------------------------------------------------
// Framing

/// The first (plain) byte of a ping.
pub const PING: u8 = 0x50;
/// The first (plain) byte of a pong.
pub const PONG: u8 = 0x52;
/// The first (plain) byte of a message, followed by the 4 header bytes.
pub const MESSAGE: u8 = 0x4B;

/// Where each direction's `xinu` starts.
pub const XINU_START: u32 = 0x51;

/// The 4 header bytes after `0x4B` for a message of `msg_type` (low byte id, high
/// byte flags) and `len` payload bytes, in the order `xinu % 3` selects.
pub fn encode_header(xinu: u32, msg_type: u16, len: u16) -> [u8; 4] {
    let [th, tl] = msg_type.to_be_bytes();
    let [lh, ll] = len.to_be_bytes();
    match xinu % 3 {
        0 => [tl, th, lh, ll],
        1 => [th, lh, tl, ll],
        _ => [th, ll, lh, tl],
    }
}

/// The message type and length in 4 header bytes read with `xinu`.
pub fn decode_header(xinu: u32, b: [u8; 4]) -> (u16, u16) {
    let (th, tl, lh, ll) = match xinu % 3 {
        0 => (b[1], b[0], b[2], b[3]),
        1 => (b[0], b[2], b[1], b[3]),
        _ => (b[0], b[3], b[2], b[1]),
    };
    (u16::from_be_bytes([th, tl]), u16::from_be_bytes([lh, ll]))
}

/// A direction's `xinu` after a message of `msg_type` and `len`.
pub fn next_xinu(xinu: u32, msg_type: u16, len: u16) -> u32 {
    xinu ^ !(u32::from(msg_type) + u32::from(len))
}

/// One unit read from a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0x50`: answer with a pong.
    Ping,
    /// `0x52`.
    Pong,
    /// A message: `kind` is the low byte of its type (see `wire::kind`), `flags` the
    /// high byte (0 between users and supernodes).
    Message { kind: u8, flags: u8, payload: Bytes },
}

impl Packet {
    /// The message this packet holds, parsed; `None` for a ping or pong.
    pub fn parse(&self) -> Option<Result<Message, FtError>> {
        match self {
            Packet::Message { kind, payload, .. } => {
                Some(Message::parse_bytes(*kind, payload.clone()))
            }
            _ => None,
        }
    }
}

/// Reads one unit from the front of `buf` (plain bytes after the network names),
/// with the direction's `xinu`, which it advances past a message. Returns the unit
/// and the bytes it took, `None` when `buf` does not yet hold a whole one. A
/// message longer than `max_message` is an error as soon as its header is in.
pub fn decode_unit(
    xinu: &mut u32,
    buf: &[u8],
    max_message: usize,
) -> Result<Option<(Packet, usize)>, FtError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        PING => Ok(Some((Packet::Ping, 1))),
        PONG => Ok(Some((Packet::Pong, 1))),
        MESSAGE => {
            if buf.len() < 5 {
                return Ok(None);
            }
            let (msg_type, len) = decode_header(*xinu, [buf[1], buf[2], buf[3], buf[4]]);
            let max = max_message.min(0xFFFF);
            let len = usize::from(len);
            if len > max {
                return Err(FtError::MessageTooLong { len, max });
            }
            if buf.len() < 5 + len {
                return Ok(None);
            }
            *xinu = next_xinu(*xinu, msg_type, len as u16);
            let [flags, kind] = msg_type.to_be_bytes();
            let payload = Bytes::copy_from_slice(&buf[5..5 + len]);
            Ok(Some((
                Packet::Message {
                    kind,
                    flags,
                    payload,
                },
                5 + len,
            )))
        }
        other => Err(FtError::StrangePacket(other)),
    }
}

/// Appends a message unit: `0x4B`, the header in `xinu`'s order, the payload;
/// advances `xinu`. A payload over 0xFFFF bytes cannot be framed.
pub fn encode_unit(
    xinu: &mut u32,
    msg_type: u16,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), FtError> {
    let len = u16::try_from(payload.len()).map_err(|_| FtError::MessageTooLong {
        len: payload.len(),
        max: 0xFFFF,
    })?;
    out.put_u8(MESSAGE);
    out.put_slice(&encode_header(*xinu, msg_type, len));
    out.put_slice(payload);
    *xinu = next_xinu(*xinu, msg_type, len);
    Ok(())
}

// ---------------------------------------------------------------------------
// Messages

/// One entry of a 0x00 supernode list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeEntry {
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Minutes since the node was seen; 0 = "near this supernode" to giFT.
    pub last_seen: u8,
    /// A percentage (possibly spare capacity).
    pub load: u8,
}

/// 0x02: who the user is. giFT sends it after login and after every 0x2C.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub ip: Ipv4Addr,
    /// The user's HTTP port, 0 when it serves nothing.
    pub port: u16,
    /// Log scale, about 14·log2(kbit/s)+59; giFT sends 0x60.
    pub bandwidth: u8,
    /// The user name, unterminated (giFT: at most 31 bytes, no spaces).
    pub user: Bytes,
}

/// The part of a 0x22 share that a 0x05 unshare repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The 20-byte FTH ("UUHash").
    pub fth: [u8; 20],
    /// The 14-bit checksum of the FTH (giFT never reads it back).
    pub file_id: u32,
    pub size: u32,
    /// giFT puts the filename tag first.
    pub tags: Vec<Tag>,
}

impl FileRecord {
    fn read(r: &mut Reader<'_>) -> Result<FileRecord, FtError> {
        let fth = r.array::<20>("file hash")?;
        let file_id = r.dynint()?;
        let size = r.dynint()?;
        let tags = read_tags(r)?;
        Ok(FileRecord {
            fth,
            file_id,
            size,
            tags,
        })
    }

    fn encode(&self, out: &mut BytesMut) {
        out.put_slice(&self.fth);
        put_dynint(out, self.file_id);
        put_dynint(out, self.size);
        put_tags(out, &self.tags);
    }

    /// The filename tag's value.
    pub fn filename(&self) -> Option<&Bytes> {
        find_tag(&self.tags, tag::FILENAME)
    }
}

/// Media types in a 0x22 share.
pub mod media {
    pub const OTHER: u8 = 0;
    pub const AUDIO: u8 = 1;
    pub const VIDEO: u8 = 2;
    pub const IMAGE: u8 = 3;
    pub const DOCUMENT: u8 = 4;
    pub const SOFTWARE: u8 = 5;
}

/// Search realms in a 0x06 query (giFT's values).
pub mod realm {
    pub const EVERYTHING: u8 = 0xBF;
    pub const AUDIO: u8 = 0xA1;
    pub const VIDEO: u8 = 0xA2;
    pub const IMAGE: u8 = 0xA3;
    pub const TEXT: u8 = 0xA4;
    pub const APPLICATION: u8 = 0xA5;
}

/// Compare operators of a query term.
pub mod cmp {
    pub const EQUALS: u8 = 0x00;
    pub const AT_MOST: u8 = 0x02;
    pub const APPROX: u8 = 0x03;
    pub const AT_LEAST: u8 = 0x04;
    pub const SUBSTRING: u8 = 0x05;
}

/// One term of a 0x06 query: compare `tag` with `value` by `cmp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryTerm {
    pub cmp: u8,
    /// One byte on the wire: 0x00 any field, 0x03 hash, ...
    pub tag: u8,
    pub value: Bytes,
}

/// 0x06: a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// giFT asks for 1000.
    pub max_results: u16,
    /// Per client process, 0, 1, 2, ...; repeated when giFT searches again.
    pub id: u16,
    /// See [`realm`].
    pub realm: u8,
    pub terms: Vec<QueryTerm>,
}

/// One result in a 0x07 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// The sharer's address; port 0 or an unroutable address means "push only".
    pub ip: Ipv4Addr,
    pub port: u16,
    pub bandwidth: u8,
    /// Sent before a `0x01`: a `0x01` here is written as `_`, and so is a leading
    /// `0x02` (which would read as "same names as before").
    pub user: Bytes,
    /// Sent before a `0x00`: a `0x00` here is written as `_`.
    pub network: Bytes,
    pub fth: [u8; 20],
    pub file_id: u32,
    pub size: u32,
    /// Must hold a filename tag, or giFT drops the result.
    pub tags: Vec<Tag>,
}

/// 0x07: results for one search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryReply {
    /// The supernode that holds the results (giFT's `sip`/`sport`).
    pub supernode_ip: Ipv4Addr,
    pub supernode_port: u16,
    pub id: u16,
    pub results: Vec<QueryResult>,
}

/// 0x09: network size. giFT reads the first 12 bytes, and disconnects when the
/// first stats after login say fewer than 100000 users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStats {
    pub users: u32,
    pub files: u32,
    /// Total size in GB is `mantissa << (exponent - 30)` (or `>> (30 - exponent)`).
    pub size_mantissa: u16,
    pub size_exponent: u16,
    /// What follows (per-media blocks, per-network counts), kept as sent.
    pub extra: Bytes,
}

impl NetworkStats {
    /// The total size in GB the mantissa and exponent say.
    pub fn total_gb(&self) -> u64 {
        let m = u64::from(self.size_mantissa);
        let e = u32::from(self.size_exponent);
        if e >= 30 {
            m.checked_shl(e - 30).unwrap_or(u64::MAX)
        } else {
            m.checked_shr(30 - e).unwrap_or(0)
        }
    }
}

/// 0x0D from a user: ask the supernode to have a firewalled sharer connect back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// Sent back by the sharer as `GIVE <push id>`.
    pub push_id: u32,
    pub requester_ip: Ipv4Addr,
    pub requester_port: u16,
    pub target_ip: Ipv4Addr,
    pub target_port: u16,
    pub supernode_ip: Ipv4Addr,
    pub supernode_port: u16,
    pub target_user: Bytes,
}

/// The payload of a 0x0D a supernode forwards to the sharer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushForward {
    pub push_id: u32,
    pub requester_ip: Ipv4Addr,
    pub requester_port: u16,
}

/// A FastTrack message between a user node and a supernode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// 0x00; giFT ignores a trailing part of fewer than 8 bytes, so do we.
    NodeList(Vec<NodeEntry>),
    /// 0x02.
    NodeInfo(NodeInfo),
    /// 0x22.
    ShareFile { media: u8, file: FileRecord },
    /// 0x05.
    UnshareFile(FileRecord),
    /// 0x06.
    Query(Query),
    /// 0x07.
    QueryReply(QueryReply),
    /// 0x08.
    QueryEnd { id: u16 },
    /// 0x09.
    NetworkStats(NetworkStats),
    /// 0x0D with the user's 22+ byte layout.
    PushRequest(PushRequest),
    /// 0x0D with the supernode's 10-byte layout.
    PushForward(PushForward),
    /// 0x1D, unterminated.
    NetworkName(Bytes),
    /// 0x26.
    ProtocolVersion(u32),
    /// 0x2C; giFT reads the first 4 bytes, so we accept (and drop) more.
    ExternalIp(Ipv4Addr),
    /// Any other id, kept as sent.
    Unknown { kind: u8, payload: Bytes },
}

/// Replaces `bad` (and a first byte `lead`) by `_`, for names with a terminator.
fn put_name(out: &mut BytesMut, name: &[u8], bad: u8, lead: Option<u8>) {
    for (i, &b) in name.iter().enumerate() {
        let forbidden = b == bad || (i == 0 && Some(b) == lead);
        out.put_u8(if forbidden { b'_' } else { b });
    }
}

impl Message {
    /// The message id this value is sent with.
    pub fn kind(&self) -> u8 {
        match self {
            Message::NodeList(_) => kind::NODE_LIST,
            Message::NodeInfo(_) => kind::NODE_INFO,
            Message::ShareFile { .. } => kind::SHARE_FILE,
            Message::UnshareFile(_) => kind::UNSHARE_FILE,
            Message::Query(_) => kind::QUERY,
            Message::QueryReply(_) => kind::QUERY_REPLY,
            Message::QueryEnd { .. } => kind::QUERY_END,
            Message::NetworkStats(_) => kind::NETWORK_STATS,
            Message::PushRequest(_) | Message::PushForward(_) => kind::PUSH,
            Message::NetworkName(_) => kind::NETWORK_NAME,
            Message::ProtocolVersion(_) => kind::PROTOCOL_VERSION,
            Message::ExternalIp(_) => kind::EXTERNAL_IP,
            Message::Unknown { kind, .. } => *kind,
        }
    }

    /// Parses one message payload of id `kind`.
    pub fn parse(kind: u8, payload: &[u8]) -> Result<Message, FtError> {
        Message::parse_bytes(kind, Bytes::copy_from_slice(payload))
    }

    /// As [`Message::parse`], keeping variable fields as slices of `payload`.
    pub fn parse_bytes(kind: u8, payload: Bytes) -> Result<Message, FtError> {
        let mut r = Reader::new(&payload);
        let m = match kind {
            kind::NODE_LIST => {
                let n = payload.len() / 8;
                let mut nodes = Vec::with_capacity(n);
                for _ in 0..n {
                    nodes.push(NodeEntry {
                        ip: r.ip("node address")?,
                        port: r.u16("node port")?,
                        last_seen: r.u8("node last seen")?,
                        load: r.u8("node load")?,
                    });
                }
                return Ok(Message::NodeList(nodes));
            }
            kind::NODE_INFO => {
                let ip = r.ip("node info address")?;
                let port = r.u16("node info port")?;
                let bandwidth = r.u8("node info bandwidth")?;
                let _unknown = r.u8("node info")?;
                let user = r.rest();
                return Ok(Message::NodeInfo(NodeInfo {
                    ip,
                    port,
                    bandwidth,
                    user,
                }));
            }
            kind::SHARE_FILE => {
                let _zero = r.u8("share header")?;
                let media = r.u8("share media type")?;
                let _zeros = r.u16("share header")?;
                Message::ShareFile {
                    media,
                    file: FileRecord::read(&mut r)?,
                }
            }
            kind::UNSHARE_FILE => Message::UnshareFile(FileRecord::read(&mut r)?),
            kind::QUERY => {
                let _one = r.u16("query header")?;
                let max_results = r.u16("query max results")?;
                let id = r.u16("query id")?;
                let _one = r.u8("query header")?;
                let realm = r.u8("query realm")?;
                let count = r.u8("query term count")?;
                let mut terms = Vec::with_capacity(usize::from(count).min(r.remaining() / 3));
                for _ in 0..count {
                    let cmp = r.u8("query term")?;
                    let tag = r.u8("query term")?;
                    let len = r.dynint()? as usize;
                    let value = r.take(len, "query term value")?;
                    terms.push(QueryTerm { cmp, tag, value });
                }
                Message::Query(Query {
                    max_results,
                    id,
                    realm,
                    terms,
                })
            }
            kind::QUERY_REPLY => Message::QueryReply(parse_reply(&mut r)?),
            kind::QUERY_END => Message::QueryEnd {
                id: r.u16("query end id")?,
            },
            kind::NETWORK_STATS => Message::NetworkStats(NetworkStats {
                users: r.u32("stats users")?,
                files: r.u32("stats files")?,
                size_mantissa: r.u16("stats size")?,
                size_exponent: r.u16("stats size")?,
                extra: r.rest(),
            }),
            kind::PUSH => match payload.len() {
                10 => Message::PushForward(PushForward {
                    push_id: r.u32("push id")?,
                    requester_ip: r.ip("push address")?,
                    requester_port: r.u16("push port")?,
                }),
                n if n >= 22 => Message::PushRequest(PushRequest {
                    push_id: r.u32("push id")?,
                    requester_ip: r.ip("push address")?,
                    requester_port: r.u16("push port")?,
                    target_ip: r.ip("push target")?,
                    target_port: r.u16("push target")?,
                    supernode_ip: r.ip("push supernode")?,
                    supernode_port: r.u16("push supernode")?,
                    target_user: r.rest(),
                }),
                len => return Err(FtError::BadLength { what: "push", len }),
            },
            kind::NETWORK_NAME => Message::NetworkName(r.rest()),
            kind::PROTOCOL_VERSION => Message::ProtocolVersion(r.u32("protocol version")?),
            kind::EXTERNAL_IP => {
                let ip = r.ip("external address")?;
                return Ok(Message::ExternalIp(ip));
            }
            kind => Message::Unknown {
                kind,
                payload: r.rest(),
            },
        };
        r.end(message_name(kind))?;
        Ok(m)
    }

    /// Appends the payload (no header).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Message::NodeList(nodes) => {
                for n in nodes {
                    out.put_slice(&n.ip.octets());
                    out.put_u16(n.port);
                    out.put_u8(n.last_seen);
                    out.put_u8(n.load);
                }
            }
            Message::NodeInfo(n) => {
                out.put_slice(&n.ip.octets());
                out.put_u16(n.port);
                out.put_u8(n.bandwidth);
                out.put_u8(0);
                out.put_slice(&n.user);
            }
            Message::ShareFile { media, file } => {
                out.put_u8(0);
                out.put_u8(*media);
                out.put_u16(0);
                file.encode(out);
            }
            Message::UnshareFile(file) => file.encode(out),
            Message::Query(q) => {
                out.put_u16(1);
                out.put_u16(q.max_results);
                out.put_u16(q.id);
                out.put_u8(1);
                out.put_u8(q.realm);
                // One byte of count: a query holds at most 255 terms.
                let terms = &q.terms[..q.terms.len().min(255)];
                out.put_u8(terms.len() as u8);
                for t in terms {
                    out.put_u8(t.cmp);
                    out.put_u8(t.tag);
                    put_dynint(out, t.value.len() as u32);
                    out.put_slice(&t.value);
                }
            }
            Message::QueryReply(reply) => {
                out.put_slice(&reply.supernode_ip.octets());
                out.put_u16(reply.supernode_port);
                out.put_u16(reply.id);
                // Two bytes of count: a reply holds at most 65535 results.
                let results = &reply.results[..reply.results.len().min(0xFFFF)];
                out.put_u16(results.len() as u16);
                for res in results {
                    out.put_slice(&res.ip.octets());
                    out.put_u16(res.port);
                    out.put_u8(res.bandwidth);
                    put_name(out, &res.user, 0x01, Some(0x02));
                    out.put_u8(0x01);
                    put_name(out, &res.network, 0x00, None);
                    out.put_u8(0x00);
                    out.put_slice(&res.fth);
                    put_dynint(out, res.file_id);
                    put_dynint(out, res.size);
                    put_tags(out, &res.tags);
                }
            }
            Message::QueryEnd { id } => out.put_u16(*id),
            Message::NetworkStats(s) => {
                out.put_u32(s.users);
                out.put_u32(s.files);
                out.put_u16(s.size_mantissa);
                out.put_u16(s.size_exponent);
                out.put_slice(&s.extra);
            }
            Message::PushRequest(p) => {
                out.put_u32(p.push_id);
                out.put_slice(&p.requester_ip.octets());
                out.put_u16(p.requester_port);
                out.put_slice(&p.target_ip.octets());
                out.put_u16(p.target_port);
                out.put_slice(&p.supernode_ip.octets());
                out.put_u16(p.supernode_port);
                out.put_slice(&p.target_user);
            }
            Message::PushForward(p) => {
                out.put_u32(p.push_id);
                out.put_slice(&p.requester_ip.octets());
                out.put_u16(p.requester_port);
            }
            Message::NetworkName(name) => out.put_slice(name),
            Message::ProtocolVersion(v) => out.put_u32(*v),
            Message::ExternalIp(ip) => out.put_slice(&ip.octets()),
            Message::Unknown { payload, .. } => out.put_slice(payload),
        }
    }

    /// The payload as a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.freeze()
    }
}

fn message_name(kind: u8) -> &'static str {
    match kind {
        kind::NODE_LIST => "node list",
        kind::NODE_INFO => "node info",
        kind::UNSHARE_FILE => "unshare",
        kind::QUERY => "query",
        kind::QUERY_REPLY => "query reply",
        kind::QUERY_END => "query end",
        kind::NETWORK_STATS => "network stats",
        kind::PUSH => "push",
        kind::NETWORK_NAME => "network name",
        kind::SHARE_FILE => "share",
        kind::PROTOCOL_VERSION => "protocol version",
        kind::EXTERNAL_IP => "external address",
        _ => "message",
    }
}

fn parse_reply(r: &mut Reader<'_>) -> Result<QueryReply, FtError> {
    let supernode_ip = r.ip("reply supernode")?;
    let supernode_port = r.u16("reply supernode")?;
    let id = r.u16("reply id")?;
    let count = r.u16("reply count")?;
    // A result takes at least 32 bytes (giFT stops below that).
    let mut results: Vec<QueryResult> =
        Vec::with_capacity(usize::from(count).min(r.remaining() / 32));
    for _ in 0..count {
        let ip = r.ip("result address")?;
        let port = r.u16("result port")?;
        let bandwidth = r.u8("result bandwidth")?;
        let (user, network) = if r.remaining() > 0 && r.buf[r.at] == 0x02 {
            // "Same names as an earlier result from this address in this message";
            // giFT shows "<unknown>" when there is none, we give empty names.
            r.at += 1;
            results
                .iter()
                .find(|e| e.ip == ip && e.port == port)
                .map(|e| (e.user.clone(), e.network.clone()))
                .unwrap_or_default()
        } else {
            let user = r.until(0x01, "result user name")?;
            let network = r.until(0x00, "result network name")?;
            (user, network)
        };
        let fth = r.array::<20>("result hash")?;
        let file_id = r.dynint()?;
        let size = r.dynint()?;
        let tags = read_tags(r)?;
        results.push(QueryResult {
            ip,
            port,
            bandwidth,
            user,
            network,
            fth,
            file_id,
            size,
            tags,
        });
    }
    Ok(QueryReply {
        supernode_ip,
        supernode_port,
        id,
        results,
    })
}
