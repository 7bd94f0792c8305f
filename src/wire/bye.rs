//! Bye (0x02): a status code and a reason, sent just before closing.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError, WireResult};

/// Normal shutdown.
pub const CODE_SHUTDOWN: u16 = 200;
/// Closed at the user's request.
pub const CODE_USER: u16 = 201;
/// A message was larger than allowed.
pub const CODE_TOO_BIG: u16 = 400;
/// Too many duplicate messages.
pub const CODE_DUPLICATES: u16 = 401;
/// Improper queries relayed.
pub const CODE_BAD_QUERIES: u16 = 402;
/// Hops+TTL above the limit.
pub const CODE_HIGH_TTL: u16 = 403;
/// Too many unknown messages.
pub const CODE_UNKNOWN: u16 = 404;
/// Inactivity timeout.
pub const CODE_TIMEOUT: u16 = 405;
/// No reply to a TTL=1 ping.
pub const CODE_NO_PING_REPLY: u16 = 406;
/// Not sharing enough.
pub const CODE_NOT_SHARING: u16 = 407;
/// Internal or I/O error.
pub const CODE_INTERNAL: u16 = 500;
/// The stream lost synchronisation (unparseable framing).
pub const CODE_DESYNC: u16 = 501;
/// The send queue overflowed.
pub const CODE_QUEUE_FULL: u16 = 502;

/// A Bye: a little-endian code and a NUL-terminated text.
///
/// The text is either a bare reason or a reason line followed by CRLF and
/// HTTP-style header lines ending in an empty line. A missing final NUL is
/// tolerated on input; anything after the NUL is ignored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Bye {
    pub code: u16,
    pub text: Bytes,
}

impl Bye {
    /// A Bye with a bare reason.
    pub fn new(code: u16, reason: &str) -> Bye {
        Bye {
            code,
            text: Bytes::copy_from_slice(reason.as_bytes()),
        }
    }

    /// Parses a Bye payload.
    pub fn parse(payload: &Bytes) -> WireResult<Bye> {
        if payload.len() < 2 {
            return Err(WireError::Truncated { what: "bye" });
        }
        let code = u16::from_le_bytes([payload[0], payload[1]]);
        let end = payload[2..]
            .iter()
            .position(|&b| b == 0)
            .map_or(payload.len(), |p| p + 2);
        Ok(Bye {
            code,
            text: payload.slice(2..end),
        })
    }

    /// The reason: the text up to its first line break.
    pub fn reason(&self) -> String {
        let line = self.text.split(|&b| b == b'\r' || b == b'\n').next();
        String::from_utf8_lossy(line.unwrap_or(&[])).into_owned()
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.text.contains(&0) {
            return Err(EncodeError::ForbiddenByte {
                what: "bye text",
                byte: 0,
            });
        }
        out.put_u16_le(self.code);
        out.put_slice(&self.text);
        out.put_u8(0);
        Ok(())
    }
}
