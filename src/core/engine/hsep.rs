//! HSEP on the links that announced it: messages taken from them and sent to
//! them on the tick (`core::hsep` decides).

use super::*;

impl<L: Links> Engine<L> {
    /// An HSEP message (function 0xCD) from `conn`.
    pub(super) fn hsep_frame(&mut self, conn: ConnId, payload: &Bytes, now: Instant) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let triples = match crate::wire::hsep::parse(payload) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "dropped a malformed HSEP message");
                self.stats.malformed += 1;
                *peer.drops.entry("malformed").or_default() += 1;
                return;
            }
        };
        if let Err(why) = self.hsep.received(conn, &triples, now) {
            tracing::debug!(conn = conn.0, why = why.name(), "dropped an HSEP message");
            self.stats.hsep_dropped += 1;
            *peer.drops.entry(why.name()).or_default() += 1;
        }
    }

    /// Sends the HSEP messages that are due.
    pub(super) fn hsep_tick(&mut self, now: Instant) {
        self.hsep
            .set_own(self.library.len() as u64, self.library.total_size());
        let leaf = self.tier.role() == Role::Leaf;
        let rng = &mut self.rng;
        let due = self.hsep.due(now, leaf, || {
            (rng.next() >> 11) as f64 / (1u64 << 53) as f64
        });
        for (conn, triples) in due {
            let mut payload = BytesMut::new();
            crate::wire::hsep::encode(&triples, &mut payload);
            let header = Header {
                guid: self.rng.guid(),
                function: Function::Unknown(crate::wire::hsep::FUNCTION),
                ttl: Ttl(1),
                hops: Hops(0),
                payload_len: payload.len() as u32,
            };
            let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
            out.extend_from_slice(&header.to_bytes());
            out.extend_from_slice(&payload);
            self.links.send(conn, Priority::Own, out.freeze());
        }
    }
}
