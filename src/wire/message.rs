//! Typed descriptors, and frames (a header with its raw payload).

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::MAX_PAYLOAD;
use crate::wire::bye::Bye;
use crate::wire::error::{EncodeError, WireError, WireResult};
use crate::wire::ggep::{self, DEFAULT_INFLATE_BUDGET, Ggep, GgepView};
use crate::wire::guid::{Guid, Hops, Ttl};
use crate::wire::header::{Function, HEADER_LEN, Header};
use crate::wire::ping::Ping;
use crate::wire::pong::Pong;
use crate::wire::push::Push;
use crate::wire::query::{Query, QueryView};
use crate::wire::queryhit::{QueryHit, QueryHitView};
use crate::wire::route_table::RouteTableUpdate;
use crate::wire::vendor::VendorMsg;

/// A descriptor payload, typed by its function.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    Ping(Ping),
    Pong(Pong),
    Bye(Bye),
    RouteTable(RouteTableUpdate),
    Vendor(VendorMsg),
    StandardVendor(VendorMsg),
    Push(Push),
    Query(Query),
    QueryHit(QueryHit),
}

impl Message {
    /// The function code this message travels under.
    pub fn function(&self) -> Function {
        match self {
            Message::Ping(_) => Function::Ping,
            Message::Pong(_) => Function::Pong,
            Message::Bye(_) => Function::Bye,
            Message::RouteTable(_) => Function::RouteTable,
            Message::Vendor(_) => Function::Vendor,
            Message::StandardVendor(_) => Function::StandardVendor,
            Message::Push(_) => Function::Push,
            Message::Query(_) => Function::Query,
            Message::QueryHit(_) => Function::QueryHit,
        }
    }

    /// Parses an exact payload for `function`. Inflated GGEP values across the whole
    /// message are capped at [`DEFAULT_INFLATE_BUDGET`] bytes.
    pub fn parse(function: Function, payload: &Bytes) -> WireResult<Message> {
        let budget = &mut DEFAULT_INFLATE_BUDGET.clone();
        Ok(match function {
            Function::Ping => Message::Ping(Ping::parse(payload, budget)?),
            Function::Pong => Message::Pong(Pong::parse(payload, budget)?),
            Function::Bye => Message::Bye(Bye::parse(payload)?),
            Function::RouteTable => Message::RouteTable(RouteTableUpdate::parse(payload)?),
            Function::Vendor => Message::Vendor(VendorMsg::parse(payload)?),
            Function::StandardVendor => Message::StandardVendor(VendorMsg::parse(payload)?),
            Function::Push => Message::Push(Push::parse(payload, budget)?),
            Function::Query => Message::Query(Query::parse(payload, budget)?),
            Function::QueryHit => Message::QueryHit(QueryHit::parse(payload, budget)?),
            Function::Unknown(code) => return Err(WireError::UnknownFunction(code)),
        })
    }

    /// Checks an exact payload for `function` by the same rules as
    /// [`Message::parse`], without building values or allocating. The one
    /// difference: zlib-compressed GGEP values are checked only when read, so a
    /// payload whose compressed value is corrupt validates but does not parse.
    /// This is what a relay needs before forwarding a message unchanged.
    pub fn validate(function: Function, payload: &[u8]) -> WireResult<()> {
        match function {
            Function::Ping => ggep_tail_valid(payload, 0),
            Function::Pong => fixed_then_ggep(payload, 14, "pong"),
            Function::Push => fixed_then_ggep(payload, 26, "push"),
            Function::Query => QueryView::parse(payload).map(drop),
            Function::QueryHit => QueryHitView::parse(payload).map(drop),
            Function::RouteTable => RouteTableUpdate::validate(payload),
            // Any text is a valid Bye reason and any body a valid vendor body.
            Function::Bye => at_least(payload, 2, "bye"),
            Function::Vendor | Function::StandardVendor => at_least(payload, 8, "vendor message"),
            Function::Unknown(code) => Err(WireError::UnknownFunction(code)),
        }
    }

    /// Appends the payload (no header) to `out`.
    pub fn encode_payload(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Message::Ping(m) => m.encode(out),
            Message::Pong(m) => m.encode(out),
            Message::Bye(m) => m.encode(out),
            Message::RouteTable(m) => m.encode(out),
            Message::Vendor(m) | Message::StandardVendor(m) => m.encode(out),
            Message::Push(m) => m.encode(out),
            Message::Query(m) => m.encode(out),
            Message::QueryHit(m) => m.encode(out),
        }
    }

    /// Appends a whole descriptor (header and payload) to `out`. On error `out` is
    /// left as it was.
    pub fn encode_frame(
        &self,
        guid: Guid,
        ttl: Ttl,
        hops: Hops,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        out.put_bytes(0, HEADER_LEN);
        if let Err(e) = self.encode_payload(out) {
            out.truncate(start);
            return Err(e);
        }
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD as usize {
            out.truncate(start);
            return Err(EncodeError::TooLong {
                what: "payload",
                len,
                limit: MAX_PAYLOAD as usize,
            });
        }
        let header = Header {
            guid,
            function: self.function(),
            ttl,
            hops,
            payload_len: len as u32,
        };
        out[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
        Ok(())
    }
}

/// A descriptor as framed off the wire: its header and its payload, unparsed.
///
/// Routing works on frames (forwarding only rewrites TTL and hops), so messages a
/// node merely relays are never parsed or re-encoded, and extensions it does not
/// understand travel on unchanged.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frame {
    pub header: Header,
    pub payload: Bytes,
}

impl Frame {
    /// Encodes `msg` into a frame.
    pub fn new(msg: &Message, guid: Guid, ttl: Ttl, hops: Hops) -> Result<Frame, EncodeError> {
        let mut out = BytesMut::new();
        msg.encode_frame(guid, ttl, hops, &mut out)?;
        let mut bytes = out.freeze();
        let payload = bytes.split_off(HEADER_LEN);
        Ok(Frame {
            header: Header::parse(bytes[..].try_into().expect("23 bytes")),
            payload,
        })
    }

    /// Parses the payload according to the header's function.
    pub fn message(&self) -> WireResult<Message> {
        Message::parse(self.header.function, &self.payload)
    }

    /// Total length on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Appends the frame's wire bytes to `out`. The header's length field is
    /// written from the payload actually held.
    pub fn encode(&self, out: &mut BytesMut) {
        let header = Header {
            payload_len: self.payload.len() as u32,
            ..self.header
        };
        out.reserve(self.wire_len());
        out.put_slice(&header.to_bytes());
        out.put_slice(&self.payload);
    }
}

/// Runs a `nom` parser over fixed fields, mapping failure to a truncation error.
pub(crate) fn fields<'a, P>(
    what: &'static str,
    input: &'a [u8],
    mut p: P,
) -> WireResult<(&'a [u8], P::Output)>
where
    P: nom::Parser<&'a [u8], Error = nom::error::Error<&'a [u8]>>,
{
    p.parse(input).map_err(|_| WireError::Truncated { what })
}

fn at_least(payload: &[u8], len: usize, what: &'static str) -> WireResult<()> {
    if payload.len() < len {
        return Err(WireError::Truncated { what });
    }
    Ok(())
}

fn fixed_then_ggep(payload: &[u8], fixed: usize, what: &'static str) -> WireResult<()> {
    at_least(payload, fixed, what)?;
    ggep_tail_valid(payload, fixed)
}

/// Checks that `buf[start..]` is a run of whole GGEP blocks, optionally followed
/// by bytes that do not start a block. Those are ignored, as gtk-gnutella and
/// LimeWire ignore them (LimeWire's Pings end in a zero byte after their GGEP
/// block); a block that starts but is broken is an error.
fn ggep_tail_valid(buf: &[u8], start: usize) -> WireResult<()> {
    let mut pos = start;
    while pos < buf.len() && buf[pos] == ggep::MAGIC {
        pos += GgepView::parse(&buf[pos..])?.1;
    }
    Ok(())
}

/// Parses the GGEP blocks that make up `buf[start..]`, merging them into one (an
/// empty tail gives `None`). Bytes after the last whole block that do not start
/// another one are ignored (see [`ggep_tail_valid`]).
pub(crate) fn ggep_tail(buf: &Bytes, start: usize, budget: &mut usize) -> WireResult<Option<Ggep>> {
    let mut pos = start;
    let mut merged: Option<Ggep> = None;
    while pos < buf.len() && buf[pos] == ggep::MAGIC {
        let (g, end) = Ggep::parse_at(buf, pos, budget)?;
        pos = end;
        match &mut merged {
            Some(m) => m.exts.extend(g.exts),
            None => merged = Some(g),
        }
    }
    Ok(merged)
}
