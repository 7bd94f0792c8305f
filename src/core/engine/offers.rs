//! Library offers (a leaf's file list, answered for by its ultrapeer), vendor
//! messages (Messages-Supported, Capabilities, connect-back) and push
//! proxying both ways.

use super::*;

/// Whether we answer queries for this leaf ourselves (it offered its files, and
/// we know its GUID and address).
pub(super) fn answers_for(p: &Peer) -> bool {
    p.info.link == Link::ToLeaf
        && p.info.guid.is_some()
        && p.info.remote_listen.is_some()
        && p.offered.as_ref().is_some_and(|(_, complete)| *complete)
}

/// Entries kept from a peer's Messages-Supported list.
pub(super) const MAX_SUPPORTED: usize = 128;

/// Push proxies listed in our hits (GGEP `PUSH`), as LimeWire and gtk-gnutella
/// list at most four.
pub(super) const MAX_PUSH_PROXIES: usize = 4;

impl<L: Links> Engine<L> {
    /// A vendor message: the library offer from a leaf is kept; others ignored.
    pub(super) fn vendor(&mut self, conn: ConnId, id: Guid, payload: &bytes::Bytes) {
        let role = self.tier.role();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let m = match crate::wire::VendorMsg::parse(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "dropped a malformed vendor message");
                self.stats.malformed += 1;
                return;
            }
        };
        if m.vendor == crate::wire::vendor::NULL_VENDOR {
            match m.selector {
                crate::wire::VendorMsg::MESSAGES_SUPPORTED => match m.supported_entries() {
                    Ok(mut e) => {
                        e.truncate(MAX_SUPPORTED);
                        tracing::debug!(
                            conn = conn.0,
                            entries = e.len(),
                            "peer's Messages-Supported"
                        );
                        peer.supported = e;
                        self.stats.supported_received += 1;
                        self.ask_push_proxy(conn);
                        self.reach_supported(conn);
                    }
                    Err(e) => {
                        tracing::debug!(conn = conn.0, error = %e, "bad Messages-Supported");
                        self.stats.malformed += 1;
                    }
                },
                crate::wire::VendorMsg::CAPABILITIES => match m.capability_entries() {
                    Ok(c) => {
                        peer.capabilities = c;
                        self.stats.supported_received += 1;
                    }
                    Err(e) => {
                        tracing::debug!(conn = conn.0, error = %e, "bad Capabilities");
                        self.stats.malformed += 1;
                    }
                },
                other => tracing::trace!(
                    conn = conn.0,
                    vendor = "null",
                    selector = other,
                    version = m.version,
                    "ignored a vendor message"
                ),
            }
            return;
        }
        if self.guidance(conn, id, &m) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if m.is(b"LIME", 22) && peer.info.link == Link::ToUltrapeer {
            // Our ultrapeer agreed to be our push proxy: v2 names its address
            // (IPv4 big-endian, port little-endian), v1 only its port.
            // An ultrapeer reached over IPv6 sends v1: its address is the
            // one we reach it at.
            let b = &m.body[..];
            let addr = if b.len() >= 6 {
                Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])),
                    u16::from_le_bytes([b[4], b[5]]),
                ))
            } else if b.len() >= 2 {
                let ip = peer
                    .info
                    .remote_listen
                    .map_or(peer.info.remote.ip(), |a| a.ip());
                Some(SocketAddr::new(
                    ip.to_canonical(),
                    u16::from_le_bytes([b[0], b[1]]),
                ))
            } else {
                None
            };
            match addr.filter(|a| a.port() != 0 && !a.ip().is_unspecified()) {
                Some(a) => {
                    if peer.proxy.is_none() {
                        self.stats.push_proxies += 1;
                    }
                    tracing::debug!(conn = conn.0, proxy = %a, "push proxy acknowledged");
                    peer.proxy = Some(a);
                }
                None => self.stats.malformed += 1,
            }
            return;
        }
        if m.is(b"LIME", 13) {
            self.oob_proxy_control(conn, &m);
            return;
        }
        if self.reach_vendor(conn, id, &m) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if m.is(b"LIME", 21) && role == Role::Ultrapeer && peer.info.link == Link::ToLeaf {
            // A firewalled leaf asks us to be its push proxy; the message id is
            // its servent GUID. Pushes for that GUID now go to it, and the ack
            // (LIME/22v2) gives the address it should list: IPv4 BE, port LE.
            // v2 has no room for IPv6: over IPv6 the ack is v1 (the port; the
            // leaf lists the address it reaches us at).
            peer.info.guid = Some(id);
            let local = peer.info.local;
            let mut body = Vec::with_capacity(6);
            let version = match local.ip().to_canonical() {
                IpAddr::V4(v4) => {
                    body.extend_from_slice(&v4.octets());
                    2
                }
                IpAddr::V6(_) => 1,
            };
            body.extend_from_slice(&local.port().to_le_bytes());
            let ack = Message::Vendor(crate::wire::VendorMsg {
                vendor: *b"LIME",
                selector: 22,
                version,
                body: bytes::Bytes::from(body),
            });
            let mut out = BytesMut::new();
            if ack.encode_frame(id, Ttl(1), Hops(0), &mut out).is_ok() {
                self.links.send(peer.conn, Priority::Own, out.freeze());
                self.stats.push_proxied += 1;
            }
            return;
        }
        if !OfferChunk::is_offer(&m) || role != Role::Ultrapeer || peer.info.link != Link::ToLeaf {
            tracing::trace!(
                conn = conn.0,
                vendor = %String::from_utf8_lossy(&m.vendor).escape_debug(),
                selector = m.selector,
                version = m.version,
                "ignored a vendor message"
            );
            return;
        }
        let chunk = match OfferChunk::parse(&m.body) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "bad library offer");
                self.stats.malformed += 1;
                peer.offered = None;
                return;
            }
        };
        // Every leaf's offered files together are bounded too: each costs the
        // node a library entry.
        let others: usize = self
            .peers
            .iter()
            .filter(|(c, _)| **c != conn)
            .filter_map(|(_, p)| p.offered.as_ref())
            .map(|(lib, _)| lib.len())
            .sum();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if chunk.first {
            peer.offered = Some((Library::new(), false));
            peer.offered_firewalled = chunk.firewalled;
            peer.offered_bytes = 0;
        }
        let Some((lib, complete)) = peer.offered.as_mut() else {
            return;
        };
        for f in chunk.files {
            peer.offered_bytes += f.name.len();
            if lib.len() >= Self::MAX_OFFERED
                || peer.offered_bytes > Self::MAX_OFFERED_BYTES
                || others + lib.len() >= Self::MAX_OFFERED_TOTAL
            {
                // Too many to answer for: the leaf stays reachable through QRP.
                tracing::debug!(
                    conn = conn.0,
                    files = lib.len(),
                    others,
                    "library offer refused"
                );
                self.stats.offers_refused += 1;
                peer.offered = None;
                return;
            }
            lib.add_at(f.index, &f.name, f.size, f.sha1);
            if let Some(fth) = f.fth {
                lib.set_fth(f.index, fth);
            }
        }
        if chunk.last {
            *complete = true;
            self.stats.offers_received += 1;
        }
    }

    /// The files leaves offered us that answer `q`, leaf by leaf (all but
    /// `except`'s): the leaf's GUID, address, whether it needs a Push, and
    /// the results.
    pub(super) fn offered_results(
        &self,
        except: Option<ConnId>,
        q: &QueryView<'_>,
    ) -> Vec<(Guid, SocketAddr, bool, Vec<HitResult>)> {
        let text = String::from_utf8_lossy(q.text);
        let urns: Vec<Sha1Urn> = q.ext.sha1_urns().collect();
        let mut hits = Vec::new();
        for (c, p) in &self.peers {
            if Some(*c) == except || !answers_for(p) {
                continue;
            }
            let (Some((lib, _)), Some(guid), Some(addr)) =
                (&p.offered, p.info.guid, p.info.remote_listen)
            else {
                continue;
            };
            let found: Vec<HitResult> = lib
                .view()
                .search(&text, &urns, self.max_results)
                .into_iter()
                .map(|f| HitResult::new(f.index, f.size, f.name, f.sha1.as_ref()).with_fth(f.fth))
                .collect();
            if !found.is_empty() {
                hits.push((guid, addr, p.offered_firewalled, found));
            }
        }
        hits
    }

    /// Answers a query for every leaf whose offered files match it: a hit naming
    /// the leaf, with us as its push proxy.
    pub(super) fn answer_for_leaves(&mut self, conn: ConnId, h: &Header, q: &QueryView<'_>) {
        let Some(local) = self.peers.get(&conn).map(|p| p.info.local) else {
            return;
        };
        let hits = self.offered_results(Some(conn), q);
        if hits.is_empty() {
            return;
        }
        // We are the push proxy (`PUSH`, or `PUSH6` when the asker reaches us
        // over IPv6); a leaf on IPv6 is named in `6` (IPv6-Ready).
        let proxy = crate::wire::ipv6::packed_exts(
            &[local],
            "PUSH",
            crate::wire::ipv6::GGEP_PUSH6,
            true,
            false,
        );
        for (guid, addr, firewalled, found) in hits {
            let (ip, v6) = crate::wire::ipv6::advertise(addr.ip(), None);
            for chunk in found.chunks(RESULTS_PER_HIT) {
                let mut exts = proxy.clone();
                exts.extend(v6.map(crate::wire::ipv6::ipv6_ext));
                let ggep = crate::wire::Ggep::new(exts);
                let hit = Message::QueryHit(QueryHit {
                    port: addr.port(),
                    ip,
                    speed: 0,
                    results: chunk.to_vec(),
                    // What the leaf told us: whether it needs a Push. Whether its
                    // upload slots are free we do not know, so that flag is unset.
                    trailer: TrailerArea::Qhd(Trailer::new(
                        VENDOR,
                        OpenDataFlags {
                            push: Some(firewalled),
                            ..OpenDataFlags::default()
                        },
                        Some(ggep),
                    )),
                    servent: guid,
                });
                // Sent as if relayed from the leaf (hops 1): a LimeWire leaf drops
                // a hit that arrives with hops 0 naming a public address other
                // than its neighbour's.
                self.reply_hops(conn, h, &hit, Priority::Result, Hops(1));
                self.stats.hits_for_leaves += 1;
            }
        }
    }

    /// Forwards a Push to the leaf it is for, if it is ours; false otherwise.
    pub(super) fn push_to_leaf(&mut self, from: ConnId, target: Guid, frame: &Frame) -> bool {
        let Some(peer) = self
            .peers
            .iter()
            .find(|(c, p)| {
                **c != from && p.info.link == Link::ToLeaf && p.info.guid == Some(target)
            })
            .map(|(_, p)| p)
        else {
            return false;
        };
        if Message::validate(Function::Push, &frame.payload).is_err() {
            self.stats.malformed += 1;
            return true;
        }
        let bytes = reencode(
            frame,
            frame.header.ttl.0.saturating_sub(1).max(1),
            frame.header.hops.0.saturating_add(1),
        );
        self.links.send(peer.conn, Priority::Result, bytes);
        self.stats.relayed.pushes += 1;
        true
    }

    /// Offers our whole library to every ultrapeer that takes offers and has not
    /// had this version of it.
    pub(super) fn send_offers(&mut self) {
        if !self.tier.config().offer_library {
            return;
        }
        // The library's own count of its changes says which version it is.
        let version = self.library.changes();
        let wanting = |p: &Peer| {
            p.info.link == Link::ToUltrapeer && p.info.offers && p.offered_version != Some(version)
        };
        if !self.peers.values().any(wanting) {
            return;
        }
        // A library larger than an ultrapeer takes (ours take 10,000 files and
        // 1 MiB of names) is not offered: it is found through our table alone.
        let name_bytes: usize = self.library.view().files().map(|f| f.name.len()).sum();
        if self.library.len() > Self::MAX_OFFERED || name_bytes > Self::MAX_OFFERED_BYTES {
            for p in self.peers.values_mut().filter(|p| wanting(p)) {
                p.offered_version = Some(version);
            }
            return;
        }
        let files: Vec<OfferedFile> = self
            .library
            .view()
            .files()
            .map(|f| OfferedFile {
                index: f.index,
                size: f.size,
                sha1: f.sha1,
                fth: f.fth,
                name: f.name.to_string(),
            })
            .collect();
        let mut out = BytesMut::new();
        for m in OfferChunk::encode_all(&files, self.tcp_firewalled()) {
            let _ = Message::Vendor(m).encode_frame(self.rng.guid(), Ttl(1), Hops(0), &mut out);
        }
        let bytes = out.freeze();
        let (mut sent, mut retried) = (0, 0);
        for p in self.peers.values_mut().filter(|p| wanting(p)) {
            // As for tables: never shed, and offered again while refused.
            match self.links.send(p.conn, Priority::Control, bytes.clone()) {
                crate::core::flow::Offer::Rejected => retried += 1,
                _ => {
                    p.offered_version = Some(version);
                    sent += 1;
                }
            }
        }
        self.stats.offers_sent += sent;
        self.stats.control_retries += retried;
    }

    /// Tells a new peer that reads vendor messages which ones we handle, and
    /// what we can do.
    pub(super) fn send_supported(&mut self, conn: ConnId) {
        let Some(peer) = self.peers.get(&conn) else {
            return;
        };
        if !peer.info.vendor_messages {
            return;
        }
        // Whether we took an incoming connection (we are reachable).
        let caps = crate::core::capabilities::capabilities(
            self.tcp_reachable() || (!self.firewalled && self.inbound_seen),
        );
        let mut out = BytesMut::new();
        for m in [
            crate::wire::VendorMsg::messages_supported(crate::core::capabilities::MESSAGES),
            crate::wire::VendorMsg::capabilities(&caps),
        ] {
            let _ = Message::Vendor(m).encode_frame(self.rng.guid(), Ttl(1), Hops(0), &mut out);
        }
        self.links.send(peer.conn, Priority::Own, out.freeze());
    }

    /// As a firewalled leaf, asks an ultrapeer that supports it to be our push
    /// proxy (LIME/21v1, whose MUID is our servent GUID).
    pub(super) fn ask_push_proxy(&mut self, conn: ConnId) {
        let me = self.me;
        let firewalled = self.tcp_firewalled();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if !firewalled
            || peer.info.link != Link::ToUltrapeer
            || peer.asked_proxy
            || !peer.supports(b"LIME", 21)
        {
            return;
        }
        peer.asked_proxy = true;
        let m = Message::Vendor(crate::wire::VendorMsg {
            vendor: *b"LIME",
            selector: 21,
            version: 1,
            body: bytes::Bytes::new(),
        });
        let mut out = BytesMut::new();
        if m.encode_frame(me, Ttl(1), Hops(0), &mut out).is_ok() {
            self.links.send(peer.conn, Priority::Own, out.freeze());
        }
    }
}
