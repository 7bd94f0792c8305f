//! Route-table update (0x30): the QRP RESET and PATCH messages.
//!
//! Only the message layout lives here; hashing, patch packing and the receiving
//! state machine are in [`crate::wire::qrp`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::error::{EncodeError, WireError, WireResult};

pub use crate::wire::qrp::{COMPRESSOR_NONE, COMPRESSOR_ZLIB, VARIANT_PATCH, VARIANT_RESET};

/// The fixed fields of a payload that passed the checks.
enum Checked {
    Reset {
        table_len: u32,
        infinity: u8,
    },
    /// The five header bytes of a PATCH.
    Patch([u8; 5]),
}

/// A RESET or PATCH message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RouteTableUpdate {
    /// Clear the table and set its size (a power of two) and "infinity" value.
    Reset { table_len: u32, infinity: u8 },
    /// One chunk of a patch sequence.
    Patch {
        /// 1-based position of this chunk in the sequence.
        seq_no: u8,
        /// Number of chunks in the sequence.
        seq_size: u8,
        compressor: u8,
        /// Bits per table entry: 1, 2, 4 or 8.
        entry_bits: u8,
        data: Bytes,
    },
}

impl RouteTableUpdate {
    /// Parses a route-table-update payload, checking every field's range.
    pub fn parse(payload: &Bytes) -> WireResult<RouteTableUpdate> {
        Ok(match RouteTableUpdate::check(payload)? {
            Checked::Reset {
                table_len,
                infinity,
            } => RouteTableUpdate::Reset {
                table_len,
                infinity,
            },
            Checked::Patch(h) => RouteTableUpdate::Patch {
                seq_no: h[1],
                seq_size: h[2],
                compressor: h[3],
                entry_bits: h[4],
                data: payload.slice(5..),
            },
        })
    }

    /// Checks a payload by the rules of [`RouteTableUpdate::parse`] without
    /// building a value.
    pub fn validate(payload: &[u8]) -> WireResult<()> {
        RouteTableUpdate::check(payload).map(drop)
    }

    fn check(payload: &[u8]) -> WireResult<Checked> {
        match payload.first() {
            None => Err(WireError::Truncated {
                what: "route table update",
            }),
            Some(&VARIANT_RESET) => {
                if payload.len() != 6 {
                    return Err(WireError::BadLength {
                        what: "QRP reset",
                        expected: 6,
                        got: payload.len(),
                    });
                }
                let table_len =
                    u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                if !table_len.is_power_of_two() {
                    return Err(WireError::BadValue {
                        what: "QRP table length",
                        value: table_len as u64,
                    });
                }
                let infinity = payload[5];
                if infinity == 0 {
                    return Err(WireError::BadValue {
                        what: "QRP infinity",
                        value: 0,
                    });
                }
                Ok(Checked::Reset {
                    table_len,
                    infinity,
                })
            }
            Some(&VARIANT_PATCH) => {
                let Some(h) = payload.first_chunk::<5>() else {
                    return Err(WireError::Truncated { what: "QRP patch" });
                };
                let [_, seq_no, seq_size, compressor, entry_bits] = *h;
                if seq_no == 0 || seq_no > seq_size {
                    return Err(WireError::BadValue {
                        what: "QRP patch sequence number",
                        value: seq_no as u64,
                    });
                }
                if compressor > COMPRESSOR_ZLIB {
                    return Err(WireError::BadValue {
                        what: "QRP compressor",
                        value: compressor as u64,
                    });
                }
                if !matches!(entry_bits, 1 | 2 | 4 | 8) {
                    return Err(WireError::BadValue {
                        what: "QRP entry bits",
                        value: entry_bits as u64,
                    });
                }
                Ok(Checked::Patch(*h))
            }
            Some(&v) => Err(WireError::BadValue {
                what: "QRP variant",
                value: v as u64,
            }),
        }
    }

    /// Appends the payload to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            RouteTableUpdate::Reset {
                table_len,
                infinity,
            } => {
                if !table_len.is_power_of_two() || *infinity == 0 {
                    return Err(EncodeError::Invalid {
                        what: "QRP reset",
                        why: "table length must be a power of two and infinity non-zero",
                    });
                }
                out.put_u8(VARIANT_RESET);
                out.put_u32_le(*table_len);
                out.put_u8(*infinity);
            }
            RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            } => {
                if *seq_no == 0
                    || seq_no > seq_size
                    || *compressor > COMPRESSOR_ZLIB
                    || !matches!(entry_bits, 1 | 2 | 4 | 8)
                {
                    return Err(EncodeError::Invalid {
                        what: "QRP patch",
                        why: "sequence, compressor or entry bits out of range",
                    });
                }
                out.put_slice(&[VARIANT_PATCH, *seq_no, *seq_size, *compressor, *entry_bits]);
                out.put_slice(data);
            }
        }
        Ok(())
    }
}
