//! The deciding core: plain values fed events, with `now` passed in, returning
//! decisions. Nothing here does I/O, reads a clock or knows a wire format; the
//! async shell maps wire messages to the core's terms and carries its decisions out.

pub mod addr;
pub mod altloc;
pub mod budget;
pub mod download;
pub mod dq;
pub mod engine;
pub mod external;
pub mod flow;
pub mod hosts;
pub mod library;
pub mod pongs;
pub mod router;
pub mod tier;
mod timed;

/// A connection to a neighbour, named by the shell. Identifiers are never reused
/// while a node runs, so a stale route can never point at a new connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);
