//! Leaf-guided dynamic querying (BEAR/11 and BEAR/12), both sides. As an
//! ultrapeer, a leaf's query searched dynamically asks the leaf, before each
//! widening step, how many results it kept (BEAR/11), and the leaf's answer
//! (BEAR/12) steers the search: enough results, or 0xFFFF, end it. As a leaf,
//! our searches are marked leaf-guided and the ultrapeer's questions are
//! answered with the results our search got (0xFFFF once it is over).

use super::*;
use crate::wire::vendor::{QueryStatusRequest, QueryStatusResponse};

/// Searches of our own whose results are counted for status requests; a
/// newer one pushes out the oldest.
pub(super) const MAX_OWN_SEARCHES: usize = 64;

/// A search of our own, as status requests see it.
#[derive(Clone, Copy, Debug)]
pub(super) struct OwnSearch {
    /// Results of the hits delivered for it.
    pub kept: u32,
    pub started: Instant,
}

impl<L: Links> Engine<L> {
    /// A BEAR/11 or BEAR/12 from `conn` (`muid`: the query's GUID). False
    /// when `m` is neither.
    pub(super) fn guidance(
        &mut self,
        conn: ConnId,
        muid: Guid,
        m: &crate::wire::VendorMsg,
    ) -> bool {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return false;
        };
        if QueryStatusRequest::parse(m).is_some() {
            if peer.info.link != Link::ToUltrapeer {
                *peer
                    .drops
                    .entry("status-request-not-from-our-ultrapeer")
                    .or_default() += 1;
                self.stats.guidance_dropped += 1;
                return true;
            }
            let kept = match self.own_searches.get(&muid) {
                Some(s) => s.kept.min(u32::from(QueryStatusResponse::STOP - 1)) as u16,
                // Over, cancelled, or not ours: stop.
                None => QueryStatusResponse::STOP,
            };
            let reply = Message::Vendor(QueryStatusResponse { kept }.to_vendor());
            let mut out = BytesMut::new();
            if reply.encode_frame(muid, Ttl(1), Hops(0), &mut out).is_ok() {
                self.links.send(conn, Priority::Own, out.freeze());
                self.stats.guidance_answered += 1;
            }
            return true;
        }
        match QueryStatusResponse::parse(m) {
            None => false,
            Some(Err(e)) => {
                tracing::debug!(conn = conn.0, error = %e, "bad query status response");
                self.stats.malformed += 1;
                *peer.drops.entry("malformed").or_default() += 1;
                true
            }
            Some(Ok(r)) => {
                // A leaf's query we proxy runs under our MUID; the leaf
                // answers under its own.
                let muid = self.oob.proxied_muid(conn, muid);
                let Some(peer) = self.peers.get_mut(&conn) else {
                    return true;
                };
                if peer.info.link == Link::ToLeaf && self.dq.leaf_status(&muid, conn, r.kept) {
                    self.stats.guidance_received += 1;
                } else {
                    *peer.drops.entry("status-for-no-search-of-its").or_default() += 1;
                    self.stats.guidance_dropped += 1;
                }
                true
            }
        }
    }

    /// Whether a leaf's query is leaf-guided: it says so (flag 0x1000), or
    /// the leaf lists BEAR/11 (LimeWire does not set the flag; gtk-gnutella
    /// infers it so too).
    pub(super) fn leaf_guided(&self, conn: ConnId, query: &Bytes) -> bool {
        let flagged = query.len() >= 2
            && crate::wire::QueryFlags([query[0], query[1]])
                .has(crate::wire::QueryFlags::LEAF_GUIDED);
        flagged
            || self.peers.get(&conn).is_some_and(|p| {
                p.supports(&QueryStatusRequest::VENDOR, QueryStatusRequest::SELECTOR)
            })
    }

    /// Sends the status requests that are due (before the planner's steps).
    pub(super) fn ask_leaves(&mut self, now: Instant) {
        for (id, leaf) in self.dq.status_requests(now) {
            let m = Message::Vendor(QueryStatusRequest.to_vendor());
            let mut out = BytesMut::new();
            // Asked under the leaf's own MUID when we proxy its query.
            let id = self.oob_reply_guid(leaf, id);
            if m.encode_frame(id, Ttl(1), Hops(0), &mut out).is_ok() {
                self.links.send(leaf, Priority::Own, out.freeze());
                self.stats.guidance_asked += 1;
            }
        }
    }

    /// A search of our own started: its results are counted from now on, and
    /// as a leaf its query (an encoded payload) is marked leaf-guided.
    pub(super) fn own_search_started(&mut self, guid: Guid, query: Bytes, now: Instant) -> Bytes {
        if self.own_searches.len() >= MAX_OWN_SEARCHES && !self.own_searches.contains_key(&guid) {
            if let Some(oldest) = self
                .own_searches
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(g, _)| *g)
            {
                self.own_searches.remove(&oldest);
            }
        }
        self.own_searches.insert(
            guid,
            OwnSearch {
                kept: 0,
                started: now,
            },
        );
        let flags = query
            .get(..2)
            .map(|b| crate::wire::QueryFlags([b[0], b[1]]));
        match flags {
            Some(f) if self.tier.role() == Role::Leaf && f.is_flags() => {
                let bits = (f.bits() | crate::wire::QueryFlags::LEAF_GUIDED).to_be_bytes();
                let mut q = BytesMut::from(&query[..]);
                q[..2].copy_from_slice(&bits);
                q.freeze()
            }
            _ => query,
        }
    }

    /// A hit for a search of our own was delivered.
    pub(super) fn own_results(&mut self, guid: Guid, payload: &Bytes) {
        if let Some(s) = self.own_searches.get_mut(&guid) {
            s.kept = s
                .kept
                .saturating_add(u32::from(payload.first().copied().unwrap_or(0)));
        }
    }

    /// A search of our own is over (stopped, or its time ran out): our
    /// ultrapeers' status requests for it are answered "stop". Called by
    /// [`Engine::end_search`].
    pub(super) fn own_search_ended(&mut self, guid: Guid) {
        self.own_searches.remove(&guid);
    }
}
