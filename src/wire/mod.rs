//! The Gnutella wire format, as typed values with parsers and encoders.
//!
//! Nothing in this module performs I/O. Parsers take an exact frame (`&[u8]` or
//! [`bytes::Bytes`]) and return typed values or a typed error; encoders append to a
//! [`bytes::BytesMut`]. Variable-length fields that are forwarded unchanged are kept
//! as [`bytes::Bytes`] slices of the received buffer, so decoding does not copy them.
//!
//! The byte layouts are described in `protocol-spec/` at the root of the repository.

pub mod browse;
pub mod bye;
pub mod cobs;
pub mod error;
pub mod ext;
pub mod ggep;
pub mod guess;
pub mod guid;
pub mod handshake;
pub mod header;
pub mod hsep;
pub mod http;
pub mod huge;
pub mod ipv6;
pub mod library_offer;
pub mod magnet;
pub mod message;
pub mod oob;
pub mod ping;
pub mod pong;
pub mod push;
pub mod qrp;
pub mod query;
pub mod queryhit;
pub mod reach;
pub mod route_table;
pub(crate) mod scan;
pub mod udp;
pub mod uhc;
pub mod vendor;
pub mod webcache;

pub use bye::Bye;
pub use error::{EncodeError, WireError};
pub use ext::{ExtArea, ExtItem};
pub use ggep::{Ggep, GgepError, GgepExt, GgepId};
pub use guid::{Guid, Hops, Ttl};
pub use header::{Function, HEADER_LEN, Header};
pub use message::{Frame, Message};
pub use ping::Ping;
pub use pong::Pong;
pub use push::Push;
pub use query::{Query, QueryFlags};
pub use queryhit::{HitResult, OpenDataFlags, QueryHit, Trailer, TrailerArea};
pub use route_table::RouteTableUpdate;
pub use vendor::VendorMsg;

/// The hard ceiling on a descriptor payload. Longer payloads are always a protocol
/// error: the upper 16 bits of the length field are reserved by deployed servents.
pub const MAX_PAYLOAD: u32 = 65_535;

/// A zlib inflater: every one the node makes comes from here (readers via
/// `ZlibDecoder::new_with_decompress`). Built out of line: flate2 builds the
/// inflater's state (about 43 KB) on the stack before boxing it, and inlined
/// into a caller that frame would become the caller's, paid at its every call
/// (a probe of each 4 KiB stack page) even when it inflates nothing, as a
/// connection's reader does at every poll.
#[inline(never)]
pub fn zlib_inflater() -> flate2::Decompress {
    flate2::Decompress::new(true)
}
