//! FastTrack (KaZaA, Grokster, iMesh), the user-node ↔ supernode protocol that
//! giFT-FastTrack clients speak, laid out like `napster`: formats without I/O
//! here, decisions in a core, sockets in a shell.
//!
//! - [`wire`]: `dynint`, tags, the handshake words, the `0x4B` message header with
//!   its `xinu` permutation, and every message both ways, as typed values.
//! - [`cipher`]: the session cipher for the encryption types we implement (0x01,
//!   0x08, 0x40 and their combinations) and the masks of the seeds we answer with.
//! - [`session`]: a sans-I/O session for each role, fed bytes and asked for
//!   packets, with every buffer bounded.
//! - [`hash`]: the file hashes (FTH, file id, kzhash).
//!
//! `protocol-spec/fasttrack.md` describes the formats and why we support the
//! encryption types we do; `protocol-spec/fasttrack-hashes.md` the hashes.

pub mod cipher;
pub mod hash;
pub mod session;
pub mod wire;

/// Why FastTrack input was refused. Each variant is one drop reason; [`FtError::reason`]
/// gives a short stable name for counters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FtError {
    /// The input ended inside a field.
    #[error("truncated {what}")]
    Truncated { what: &'static str },
    /// Bytes were left after a message that has a fixed end.
    #[error("{extra} unexpected bytes after {what}")]
    TrailingBytes { what: &'static str, extra: usize },
    /// A field had a length this message cannot have.
    #[error("{what} of {len} bytes")]
    BadLength { what: &'static str, len: usize },
    /// A packed integer longer than the five bytes a 32-bit value needs.
    #[error("packed integer longer than 5 bytes")]
    DynIntTooLong,
    /// A packed integer whose value does not fit in 32 bits.
    #[error("packed integer over 32 bits")]
    DynIntOverflow,
    /// An encryption type whose cipher we do not implement.
    #[error("unsupported encryption type {0:#x}")]
    UnsupportedEncType(u32),
    /// A seed whose encryption-type mask we do not know.
    #[error("no known encryption-type mask for seed {0:#010x}")]
    UnknownSeed(u32),
    /// A handshake network name that did not end within the limit.
    #[error("network name longer than {max} bytes")]
    NetworkNameTooLong { max: usize },
    /// A unit that starts with neither 0x50 (ping), 0x52 (pong) nor 0x4B (message).
    #[error("strange packet starting with {0:#04x}")]
    StrangePacket(u8),
    /// A message longer than this session accepts (or than 16 bits can say).
    #[error("message of {len} bytes over the limit of {max}")]
    MessageTooLong { len: usize, max: usize },
    /// More bytes buffered than the session allows.
    #[error("receive buffer over {max} bytes")]
    BufferFull { max: usize },
}

impl FtError {
    /// A short, stable name for this kind of error, for drop counters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            FtError::Truncated { .. } => "truncated",
            FtError::TrailingBytes { .. } => "trailing_bytes",
            FtError::BadLength { .. } => "bad_length",
            FtError::DynIntTooLong => "dynint_too_long",
            FtError::DynIntOverflow => "dynint_overflow",
            FtError::UnsupportedEncType(_) => "unsupported_enc_type",
            FtError::UnknownSeed(_) => "unknown_seed",
            FtError::NetworkNameTooLong { .. } => "network_name_too_long",
            FtError::StrangePacket(_) => "strange_packet",
            FtError::MessageTooLong { .. } => "message_too_long",
            FtError::BufferFull { .. } => "buffer_full",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FtError;

    #[test]
    fn every_reason_names_one_kind_of_error() {
        let all = [
            FtError::Truncated { what: "x" },
            FtError::TrailingBytes {
                what: "x",
                extra: 1,
            },
            FtError::BadLength { what: "x", len: 1 },
            FtError::DynIntTooLong,
            FtError::DynIntOverflow,
            FtError::UnsupportedEncType(0x29),
            FtError::UnknownSeed(1),
            FtError::NetworkNameTooLong { max: 64 },
            FtError::StrangePacket(0),
            FtError::MessageTooLong { len: 2, max: 1 },
            FtError::BufferFull { max: 1 },
        ];
        let mut reasons: Vec<_> = all.iter().map(FtError::reason).collect();
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), all.len());
        for e in &all {
            assert!(!e.to_string().is_empty());
        }
    }
}
