//! Datagrams on the Gnutella UDP port: read with `wire::udp`, charged to
//! their source's budget (`core::udp`), validated like a frame off a link,
//! then handed by function to the part that answers it. Every datagram not
//! answered is dropped with a reason, counted in [`UdpStats`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use super::{Engine, Links};
use crate::core::budget::Kind as BudgetKind;
use crate::wire::udp::{self, Datagram};
use crate::wire::{Frame, Function, Message, Push};

/// Counters of the UDP port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams read, and their bytes.
    pub received: u64,
    pub bytes_in: u64,
    /// Datagrams handed to the socket, and their bytes.
    pub sent: u64,
    pub bytes_out: u64,
    /// Datagrams we had to send that the socket's queue refused.
    pub send_refused: u64,
    /// Datagrams read by function (the name of `Function`), as taken.
    pub taken: BTreeMap<&'static str, u64>,
    /// Datagrams dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl UdpStats {
    pub fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Datagrams dropped for `reason` so far.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }
}

impl<L: Links> Engine<L> {
    /// One datagram from `from`.
    pub(super) fn datagram(&mut self, from: SocketAddr, bytes: Bytes, now: Instant) {
        self.stats.udp.received += 1;
        self.stats.udp.bytes_in += bytes.len() as u64;
        let d = match udp::parse(bytes) {
            Ok(d) => d,
            Err(e) => {
                self.stats.udp.drop(e.reason());
                return;
            }
        };
        let function = d.frame.header.function;
        let kind = match function {
            Function::Query => BudgetKind::Query,
            Function::Ping => BudgetKind::Ping,
            Function::Pong => BudgetKind::Pong,
            Function::QueryHit => BudgetKind::Hit,
            Function::Push => BudgetKind::Push,
            Function::Vendor | Function::StandardVendor => BudgetKind::Vendor,
            Function::Bye | Function::RouteTable | Function::Unknown(_) => {
                self.stats.udp.drop("not-over-udp");
                return;
            }
        };
        if !self.udp_sources.admit(from.ip(), kind, now) {
            self.stats.udp.drop("over-budget");
            return;
        }
        if Message::validate(function, &d.frame.payload).is_err() {
            self.stats.udp.drop("malformed");
            return;
        }
        *self.stats.udp.taken.entry(function.name()).or_default() += 1;
        if self.reach_datagram(from, &d, now) {
            return;
        }
        match function {
            Function::Push => self.udp_push(d),
            // Parts of the UDP protocol not answered yet: counted, by what
            // they are.
            Function::Ping => {
                if !self.guess_ping(from, &d, now) {
                    self.udp_ping(from, d, now)
                }
            }
            Function::Pong => {
                if !self.guess_pong(from, &d, now) {
                    self.udp_pong(from, d, now)
                }
            }
            Function::Query => self.guess_query(from, d, now),
            Function::QueryHit => {
                // A GUESS answer, else an out-of-band hit (or unsolicited).
                if !self.guess_hit(from, &d, now) {
                    self.udp_hit(from, d, now)
                }
            }
            Function::Vendor | Function::StandardVendor => self.udp_vendor(from, d, now),
            Function::Bye | Function::RouteTable | Function::Unknown(_) => {}
        }
    }

    /// A Push by UDP (from a push proxy): answered if it is for us.
    fn udp_push(&mut self, d: Datagram) {
        let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
        match Push::parse(&d.frame.payload, &mut budget) {
            Ok(p) if p.servent == self.me => self.links.push(p),
            Ok(_) => self.stats.udp.drop("push-not-for-us"),
            Err(_) => self.stats.udp.drop("malformed"),
        }
    }

    /// Sends `frame` to `to` as one datagram, deflated when `deflate` (the
    /// request allowed it) and that makes it shorter.
    pub fn send_datagram(&mut self, to: SocketAddr, frame: &Frame, deflate: bool) {
        self.reach.sent_to(to.ip());
        let bytes = udp::encode(frame, deflate);
        let len = bytes.len() as u64;
        if self.links.send_datagram(to, bytes) {
            self.stats.udp.sent += 1;
            self.stats.udp.bytes_out += len;
        } else {
            self.stats.udp.send_refused += 1;
        }
    }
}
