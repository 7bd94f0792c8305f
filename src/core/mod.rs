//! The deciding core: plain values fed events, with `now` passed in, returning
//! decisions. Nothing here does I/O, reads a clock or knows a wire format; the
//! async shell maps wire messages to the core's terms and carries its decisions out.

pub mod addr;
pub mod altloc;
pub mod browse;
pub mod budget;
pub mod capabilities;
pub mod download;
pub mod dq;
pub mod engine;
pub mod external;
pub mod flow;
pub mod guess;
pub mod hosts;
pub mod hsep;
pub mod library;
pub mod oob;
pub mod pongs;
pub mod reach;
pub mod router;
pub mod tier;
mod timed;
pub mod udp;
pub mod uhc;
pub mod webcache;

/// A connection to a neighbour, named by the shell. Identifiers are never reused
/// while a node runs, so a stale route can never point at a new connection.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConnId(pub u64);

/// A map keyed by connection. Connection ids are ours, not a peer's, so a
/// fixed fast hash is safe (no peer can choose colliding keys), cheaper than
/// SipHash on every frame's look-ups, and gives the same iteration order in
/// every run for the same events.
pub type ConnMap<V> = std::collections::HashMap<ConnId, V, foldhash::fast::FixedState>;
