//! The Gnutella 0.6 handshake (and the 0.4 fallback) over a byte stream.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::handshake::{self as hs, Block, Headers, Limits, StartLine};

/// How a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("malformed handshake: {0}")]
    Malformed(#[from] hs::HandshakeError),
    #[error("refused: {code} {reason}")]
    Refused {
        code: u16,
        reason: String,
        /// Hosts the refusing side suggested (`X-Try`, `X-Try-Ultrapeers`).
        try_hosts: Vec<SocketAddr>,
        /// The refusing side said `X-Ultrapeer-Needed: true`: it turned us away
        /// but wants more ultrapeers in the network.
        ultrapeer_needed: bool,
        /// What the refusing side said of its own role (`X-Ultrapeer`).
        ultrapeer: Option<bool>,
    },
    #[error("unexpected handshake line: {0}")]
    Unexpected(String),
}

/// What the handshake established.
#[derive(Debug)]
pub struct Established {
    /// The other side's headers (the server's answer, or the client's request).
    pub headers: Headers,
    /// Whether the connection speaks 0.4 (no headers, no Bye).
    pub v04: bool,
    /// The client's final block (empty when we were the client, or on 0.4).
    pub final_headers: Headers,
    /// Bytes read past the end of the handshake: the start of the message stream.
    pub leftover: BytesMut,
    /// We deflate what we send (we said `Content-Encoding: deflate`).
    pub deflate_out: bool,
    /// The peer deflates what it sends (it said `Content-Encoding: deflate`).
    pub deflate_in: bool,
}

/// Whether a block offers to receive a deflated stream.
fn accepts_deflate(h: &Headers) -> bool {
    h.list_contains(hs::ACCEPT_ENCODING, hs::DEFLATE)
}

/// Whether a block announces a deflated stream.
fn sends_deflate(h: &Headers) -> bool {
    h.list_contains(hs::CONTENT_ENCODING, hs::DEFLATE)
}

/// Reads one header block, keeping what follows it in `buf`.
pub async fn read_block<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> Result<Block, HandshakeFailure> {
    let limits = Limits::default();
    loop {
        if let Some((block, used)) = hs::parse_block(buf, &limits)? {
            let _ = buf.split_to(used);
            return Ok(block);
        }
        buf.reserve(1024);
        if r.read_buf(buf).await? == 0 {
            return Err(HandshakeFailure::Closed);
        }
    }
}

async fn write_block<W: AsyncWrite + Unpin>(
    w: &mut W,
    block: &Block,
) -> Result<(), HandshakeFailure> {
    w.write_all(&block.encode()?).await?;
    w.flush().await?;
    Ok(())
}

/// The hosts a block suggests in `X-Try` and `X-Try-Ultrapeers`.
pub fn try_hosts(h: &Headers) -> Vec<SocketAddr> {
    h.get_all(hs::X_TRY)
        .chain(h.get_all(hs::X_TRY_ULTRAPEERS))
        .flat_map(hs::parse_try_list)
        .collect()
}

/// Where a peer says it listens (`Listen-IP`, gtk-gnutella's `Node`, or the
/// older `X-My-Address`; the first that reads as an address).
pub fn listen_addr(h: &Headers) -> Option<SocketAddr> {
    [hs::LISTEN_IP, hs::NODE, hs::X_MY_ADDRESS]
        .into_iter()
        .filter_map(|name| h.get(name))
        .find_map(hs::parse_listen_ip)
}

/// The highest TTL we announce for fresh queries (`X-Max-TTL`): gtk-gnutella's
/// default, and below the 5 that LimeWire leaves require of an ultrapeer. The
/// router's own clamp (`--max-ttl`) is separate.
pub const ANNOUNCED_MAX_TTL: u8 = 4;

pub use crate::core::tier::RoleHeaders;

/// What a peer's headers say about its role.
pub fn peer_role(h: &Headers) -> crate::core::tier::PeerRole {
    crate::core::tier::PeerRole {
        ultrapeer: h.get_bool(hs::X_ULTRAPEER),
        needed: h.get_bool(hs::X_ULTRAPEER_NEEDED),
    }
}

/// Whether a peer reads and sends inter-ultrapeer tables.
pub fn peer_up_qrp(h: &Headers) -> bool {
    h.get(hs::X_UP_QUERY_ROUTING).is_some()
}

/// The headers we offer in every handshake.
pub fn our_headers(
    user_agent: &str,
    listen: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    max_ttl: u8,
    role: RoleHeaders,
) -> Headers {
    let mut h = Headers::new();
    h.push(hs::USER_AGENT, user_agent);
    h.push(
        hs::X_ULTRAPEER,
        if role.ultrapeer { "True" } else { "False" },
    );
    // Leaves send tables to their ultrapeers; ultrapeers read them.
    h.push(hs::X_QUERY_ROUTING, "0.1");
    if role.ultrapeer {
        // LimeWire leaves take only ultrapeers that say both of these, an
        // X-Degree of 15 or more and an X-Max-TTL below 5 ("503 Not Good
        // Ultrapeer" otherwise).
        if role.up_qrp {
            h.push(hs::X_UP_QUERY_ROUTING, "0.1");
        }
        // gtk-gnutella leaves accept only ultrapeers that keep 16 or more links
        // and query dynamically for them.
        h.push(hs::X_DEGREE, role.degree.to_string());
        h.push(hs::X_DYNAMIC_QUERYING, "0.1");
        if let Some(needed) = role.needed {
            h.push(
                hs::X_ULTRAPEER_NEEDED,
                if needed { "true" } else { "false" },
            );
        }
    }
    if let Some(l) = listen {
        h.push(hs::LISTEN_IP, l.to_string());
    }
    if let Some(r) = remote {
        h.push(hs::REMOTE_IP, r.ip().to_string());
    }
    h.push(hs::BYE_PACKET, "0.1");
    h.push(hs::PONG_CACHING, "0.1");
    h.push(hs::GGEP, "0.5");
    h.push(hs::VENDOR_MESSAGE, "0.2");
    h.push(hs::X_FEATURES, crate::core::capabilities::x_features());
    h.push(hs::X_MAX_TTL, max_ttl.min(ANNOUNCED_MAX_TTL).to_string());
    // We send the library offer vendor message as SRVT/1v2 and read 1v1 too.
    h.push(X_LIBRARY_OFFER, "2");
    h
}

/// Our header saying we speak the library offer (`protocol-spec/library-offer.md`).
pub const X_LIBRARY_OFFER: &str = "X-Library-Offer";

/// Whether a peer speaks the library offer.
pub fn peer_offers(h: &Headers) -> bool {
    matches!(h.get(X_LIBRARY_OFFER).map(str::trim), Some("1" | "2"))
}

/// The server side (compressing what it sends when `compress` is set and the
/// client accepts it), after the first block (`request`) was read: answer it with
/// `answer` (headers, or a refusal code and reason), then read the client's final
/// block.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: Block,
    mut buf: BytesMut,
    answer: Result<Headers, (u16, String, Headers)>,
    compress: bool,
) -> Result<Established, HandshakeFailure> {
    match request.start {
        StartLine::Connect { major: 0, minor: 4 } => {
            if let Err((code, reason, _)) = answer {
                return Err(HandshakeFailure::Refused {
                    code,
                    reason,
                    try_hosts: Vec::new(),
                    ultrapeer_needed: false,
                    ultrapeer: None,
                });
            }
            write_block(s, &Block::ok_04()).await?;
            Ok(Established {
                headers: request.headers,
                final_headers: Headers::new(),
                v04: true,
                leftover: buf,
                deflate_out: false,
                deflate_in: false,
            })
        }
        StartLine::Connect { .. } => {
            let deflate_out = compress && answer.is_ok() && accepts_deflate(&request.headers);
            let (code, reason, mut headers, refused) = match answer {
                Ok(h) => (hs::STATUS_OK, "OK".to_string(), h, false),
                Err((code, reason, h)) => (code, reason, h, true),
            };
            if deflate_out {
                headers.push(hs::CONTENT_ENCODING, hs::DEFLATE);
            }
            write_block(s, &Block::response(code, reason.clone(), headers)).await?;
            if refused {
                return Err(HandshakeFailure::Refused {
                    code,
                    reason,
                    try_hosts: Vec::new(),
                    ultrapeer_needed: false,
                    ultrapeer: None,
                });
            }
            let last = read_block(s, &mut buf).await?;
            match last.start {
                StartLine::Status { code: 200, .. } => Ok(Established {
                    v04: false,
                    leftover: buf,
                    deflate_out,
                    deflate_in: sends_deflate(&last.headers),
                    headers: request.headers,
                    final_headers: last.headers,
                }),
                StartLine::Status { code, reason, .. } => Err(HandshakeFailure::Refused {
                    code,
                    reason,
                    try_hosts: Vec::new(),
                    ultrapeer_needed: false,
                    ultrapeer: None,
                }),
                other => Err(HandshakeFailure::Unexpected(other.to_string())),
            }
        }
        other => Err(HandshakeFailure::Unexpected(other.to_string())),
    }
}

/// The client side of the 0.4 handshake: `GNUTELLA CONNECT/0.4`, answered by
/// `GNUTELLA OK`.
pub async fn connect_04<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<Established, HandshakeFailure> {
    write_block(s, &Block::connect_04()).await?;
    let mut buf = BytesMut::new();
    let answer = read_block(s, &mut buf).await?;
    match answer.start {
        StartLine::Ok04 => Ok(Established {
            headers: Headers::new(),
            final_headers: Headers::new(),
            v04: true,
            leftover: buf,
            deflate_out: false,
            deflate_in: false,
        }),
        other => Err(HandshakeFailure::Unexpected(other.to_string())),
    }
}

/// The client side: send our request, read the answer, confirm it.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    headers: Headers,
    compress: bool,
) -> Result<Established, HandshakeFailure> {
    connect_deciding(s, headers, compress, |_| Ok(Headers::new())).await
}

/// The client side, where `decide` looks at a 200 answer and gives the headers
/// of our final block, or a refusal (sent as our final status, e.g. when the
/// answer gives roles we cannot take).
pub async fn connect_deciding<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    headers: Headers,
    compress: bool,
    decide: impl FnOnce(&Headers) -> Result<Headers, (u16, &'static str)>,
) -> Result<Established, HandshakeFailure> {
    write_block(s, &Block::connect_06(headers)).await?;
    let mut buf = BytesMut::new();
    let answer = read_block(s, &mut buf).await?;
    match answer.start {
        StartLine::Status { code: 200, .. } => {
            let mut last = match decide(&answer.headers) {
                Ok(h) => h,
                Err((code, reason)) => {
                    write_block(s, &Block::response(code, reason, Headers::new())).await?;
                    return Err(HandshakeFailure::Refused {
                        code,
                        reason: format!("(by us) {reason}"),
                        try_hosts: try_hosts(&answer.headers),
                        ultrapeer_needed: false,
                        ultrapeer: None,
                    });
                }
            };
            let deflate_out = compress && accepts_deflate(&answer.headers);
            if deflate_out {
                last.push(hs::CONTENT_ENCODING, hs::DEFLATE);
            }
            write_block(s, &Block::response(hs::STATUS_OK, "OK", last)).await?;
            Ok(Established {
                v04: false,
                leftover: buf,
                deflate_out,
                deflate_in: sends_deflate(&answer.headers),
                headers: answer.headers,
                final_headers: Headers::new(),
            })
        }
        StartLine::Status { code, reason, .. } => Err(HandshakeFailure::Refused {
            code,
            reason,
            try_hosts: try_hosts(&answer.headers),
            ultrapeer_needed: answer.headers.get_bool(hs::X_ULTRAPEER_NEEDED) == Some(true),
            ultrapeer: answer.headers.get_bool(hs::X_ULTRAPEER),
        }),
        other => Err(HandshakeFailure::Unexpected(other.to_string())),
    }
}
