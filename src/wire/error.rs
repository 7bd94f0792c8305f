//! Error values for decoding and encoding wire data.

use crate::wire::ggep::GgepError;

/// Why a payload (or a structure inside it) could not be decoded.
///
/// Every malformed input maps to one of these; decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before a field was complete.
    #[error("{what}: truncated")]
    Truncated { what: &'static str },
    /// A fixed-size payload had the wrong length.
    #[error("{what}: length {got}, expected {expected}")]
    BadLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A NUL-terminated field had no terminating NUL.
    #[error("{what}: missing NUL terminator")]
    MissingNul { what: &'static str },
    /// Bytes were left over where the layout allows none.
    #[error("{what}: {count} unexpected trailing bytes")]
    TrailingBytes { what: &'static str, count: usize },
    /// A GGEP block was malformed.
    #[error("GGEP: {0}")]
    Ggep(#[from] GgepError),
    /// The descriptor function code is not one we know.
    #[error("unknown function code 0x{0:02x}")]
    UnknownFunction(u8),
    /// A field held a value the format does not allow.
    #[error("{what}: invalid value {value}")]
    BadValue { what: &'static str, value: u64 },
    /// A field's content was malformed (not a single bad number).
    #[error("{what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    /// The payload is longer than the limit for its type.
    #[error("payload of {len} bytes exceeds the limit of {limit} for {what}")]
    TooLarge {
        what: &'static str,
        len: usize,
        limit: usize,
    },
}

/// Why a typed value could not be encoded.
///
/// Encoders reject values the wire cannot carry (an over-long field, a NUL inside a
/// NUL-terminated string) instead of writing bytes a peer would misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than its length prefix (or the payload limit) allows.
    #[error("{what}: {len} bytes exceeds the limit of {limit}")]
    TooLong {
        what: &'static str,
        len: usize,
        limit: usize,
    },
    /// A field contains a byte that its framing forbids (e.g. NUL in a C string).
    #[error("{what}: contains forbidden byte 0x{byte:02x}")]
    ForbiddenByte { what: &'static str, byte: u8 },
    /// A field violates a structural rule of the format.
    #[error("{what}: {why}")]
    Invalid {
        what: &'static str,
        why: &'static str,
    },
}

/// Shorthand for results of decoding.
pub type WireResult<T> = Result<T, WireError>;
