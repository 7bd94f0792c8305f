//! Dynamic queries for our leaves' queries: the planner's sends carried out.

use super::*;

/// The ultrapeer (and flat) links as the dynamic-query planner sees them, for
/// query `q` (whose tables match it; unknown without a query).
pub(super) fn candidates(
    peers: &crate::core::ConnMap<Peer>,
    k: Option<&QueryKeys<'_>>,
) -> Vec<Candidate> {
    peers
        .iter()
        .filter(|(_, p)| matches!(p.info.link, Link::Peer | Link::Flat))
        .map(|(c, p)| Candidate {
            conn: *c,
            matches: k.and_then(|k| p.matches(k)),
            degree: p.info.degree,
        })
        .collect()
}

impl<L: Links> Engine<L> {
    /// Starts a dynamic query for a leaf's query; false when the planner is full
    /// (the query is then flooded).
    pub(super) fn start_dq(
        &mut self,
        from: ConnId,
        frame: &Frame,
        f: &Forward,
        k: &QueryKeys<'_>,
        now: Instant,
    ) -> bool {
        let links = candidates(&self.peers, Some(k));
        // The leaf's TTL (clamped by the router) caps how far we go.
        let Some(probes) = self
            .dq
            .start(frame.header.guid, from, f.ttl + 1, &links, now)
        else {
            return false;
        };
        self.stats.dynamic_queries += 1;
        if self.leaf_guided(from, &frame.payload) {
            self.dq.set_guided(&frame.header.guid);
        }
        self.dq_frames.insert(frame.header.guid, frame.clone());
        for p in probes {
            self.dq_send(frame, p, f.hops);
        }
        true
    }

    pub(super) fn dq_send(&mut self, frame: &Frame, s: dq::Send, hops: u8) {
        let Some(peer) = self.peers.get(&s.conn) else {
            return;
        };
        let bytes = reencode(frame, s.ttl, hops);
        self.stats.relayed.queries += 1;
        if !matches!(
            self.links.send(peer.conn, Priority::RelayedSearch, bytes),
            crate::core::flow::Offer::Queued
        ) {
            self.stats.shed += 1;
        }
    }

    /// Widens the dynamic queries that are due.
    pub(super) fn dq_steps(&mut self, now: Instant) {
        if self.dq.is_empty() {
            self.dq_frames.clear();
            return;
        }
        self.ask_leaves(now);
        let (peers, frames) = (&self.peers, &self.dq_frames);
        let steps = self.dq.step(now, |id| {
            let q = frames
                .get(id)
                .and_then(|f| QueryView::parse(&f.payload).ok());
            let keys = q.as_ref().map(QueryKeys::of);
            candidates(peers, keys.as_ref())
        });
        for (id, s) in steps {
            if let Some(frame) = self.dq_frames.get(&id).cloned() {
                let hops = frame.header.hops.0.saturating_add(1);
                self.dq_send(&frame, s, hops);
            }
        }
        let dq = &self.dq;
        self.dq_frames.retain(|id, _| dq.contains(id));
    }
}
