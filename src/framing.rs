//! Framing of descriptor streams for `tokio-util` codecs.
//!
//! The decoder reads the 23-byte header, checks the payload length against the
//! limit for the descriptor's function *before* buffering the payload, and yields a
//! [`Frame`] only once the whole payload has arrived. It does not parse payloads:
//! that is left to whoever handles the frame, so relayed messages cost one copy-free
//! split of the read buffer.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::wire::{Frame, Function, HEADER_LEN, Header, MAX_PAYLOAD};

/// Largest payload accepted per function. Anything above a limit is a fatal
/// framing error (the connection is answered with Bye 400 and closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizeLimits {
    pub query: u32,
    pub query_hit: u32,
    /// Every other function, known or not.
    pub other: u32,
}

impl Default for SizeLimits {
    /// Queries up to 1 KiB, hits up to the 64 KiB hard limit, everything else up to
    /// 40 KiB: the sizes deployed servents tolerate before dropping a peer.
    fn default() -> Self {
        SizeLimits {
            query: 1024,
            query_hit: MAX_PAYLOAD,
            other: 40 * 1024,
        }
    }
}

impl SizeLimits {
    /// The limit for `function`, never above [`MAX_PAYLOAD`].
    pub fn limit_for(&self, function: Function) -> u32 {
        let l = match function {
            Function::Query => self.query,
            Function::QueryHit => self.query_hit,
            _ => self.other,
        };
        l.min(MAX_PAYLOAD)
    }
}

/// A framing failure. After one, the stream cannot be resynchronised.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{} payload of {len} bytes exceeds the limit of {limit}", function.name())]
    TooLarge {
        function: Function,
        len: u32,
        limit: u32,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Decoder and encoder for Gnutella descriptor streams.
#[derive(Clone, Debug, Default)]
pub struct DescriptorCodec {
    limits: SizeLimits,
}

impl DescriptorCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: SizeLimits) -> Self {
        DescriptorCodec { limits }
    }
}

impl Decoder for DescriptorCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = Header::parse_prefix(src) else {
            src.reserve(HEADER_LEN - src.len());
            return Ok(None);
        };
        let limit = self.limits.limit_for(header.function);
        if header.payload_len > limit {
            return Err(FrameError::TooLarge {
                function: header.function,
                len: header.payload_len,
                limit,
            });
        }
        let total = HEADER_LEN + header.payload_len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            header,
            payload: frame.freeze(),
        }))
    }
}

impl Encoder<&Frame> for DescriptorCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let len = frame.payload.len();
        let limit = self.limits.limit_for(frame.header.function);
        if len > limit as usize {
            return Err(FrameError::TooLarge {
                function: frame.header.function,
                len: len.min(u32::MAX as usize) as u32,
                limit,
            });
        }
        frame.encode(dst);
        Ok(())
    }
}

impl Encoder<Frame> for DescriptorCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&frame, dst)
    }
}
