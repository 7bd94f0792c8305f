//! QRP tables: our peers' (RESET/PATCH, within size, pace and fill limits),
//! and ours (built from the library and our leaves', sent as updates).

use super::*;

/// The frames that turn a peer's copy of our table from `old` into `table`: a
/// RESET first when `reset`, then the PATCH sequence (4-bit, zlib when smaller).
pub(super) fn table_update(
    table: &QrpTable,
    old: &QrpTable,
    reset: bool,
    rng: &mut Rng,
) -> Option<bytes::Bytes> {
    let chunks = table
        .diff(old, qrp::DEFAULT_INFINITY)
        .and_then(|d| qrp::build_patch_chunks(&d, 4, true, PATCH_CHUNK))
        .ok()?;
    let mut out = BytesMut::new();
    if reset {
        let m = Message::RouteTable(RouteTableUpdate::Reset {
            table_len: TABLE_LEN as u32,
            infinity: qrp::DEFAULT_INFINITY,
        });
        m.encode_frame(rng.guid(), Ttl(1), Hops(0), &mut out).ok()?;
    }
    for c in chunks {
        Message::RouteTable(c.into())
            .encode_frame(rng.guid(), Ttl(1), Hops(0), &mut out)
            .ok()?;
    }
    Some(out.freeze())
}

pub(super) struct RemoteTable {
    pub(super) decoder: PatchDecoder,
    pub(super) table: QrpTable,
    /// One whole PATCH sequence has arrived: the table can be routed on.
    pub(super) complete: bool,
}

/// QRP RESETs a peer may send: the first at once, then one per
/// [`ResetPace::EVERY`] on average, with a little slack.
#[derive(Clone, Debug, Default)]
pub(super) struct ResetPace {
    /// Credit in RESETs, and when it was last counted.
    credit: f64,
    at: Option<Instant>,
}

impl ResetPace {
    const EVERY: Duration = Duration::from_secs(10);
    const SLACK: f64 = 3.0;

    fn allow(&mut self, now: Instant) -> bool {
        let credit = match self.at {
            None => Self::SLACK,
            Some(t) => (self.credit
                + now.saturating_duration_since(t).as_secs_f64() / Self::EVERY.as_secs_f64())
            .min(Self::SLACK),
        };
        self.at = Some(now);
        if credit >= 1.0 {
            self.credit = credit - 1.0;
            true
        } else {
            self.credit = credit;
            false
        }
    }
}

/// Slots in the tables we send (LimeWire's and gtk-gnutella's receivers rescale).
pub(super) const TABLE_LEN: usize = 1 << 16;

/// Bytes per PATCH message we send.
pub(super) const PATCH_CHUNK: usize = 4096;

/// Slots in a leaf's table, and in an ultrapeer's, at most.
pub(super) const MAX_LEAF_TABLE: usize = 1 << 17;

pub(super) const MAX_PEER_TABLE: usize = 1 << 20;

/// Our library's part of our QRP table, kept up to date file by file: how many
/// keywords of our files hash to each slot. Adding or removing a file costs
/// its own keywords, never a pass over the library, so a library change (or
/// a file hashed) does not make the next tick rebuild from every file.
pub(super) struct LibraryTable {
    /// Keywords per slot, for the slots that have any (a small library holds
    /// a few slots, not 65,536 counters).
    counts: HashMap<u32, u32>,
}

impl LibraryTable {
    /// The counts for `library`'s files (one pass, at start).
    pub(super) fn of(library: &Library) -> LibraryTable {
        let mut t = LibraryTable {
            counts: HashMap::new(),
        };
        for f in library.files() {
            t.name(&f.name, 1);
            if let Some(u) = &f.sha1 {
                t.urn(u, 1);
            }
        }
        t
    }

    fn slot(keyword: &str) -> u32 {
        qrp::hash(keyword, TABLE_LEN.trailing_zeros() as u8)
    }

    pub(super) fn bump(&mut self, slot: u32, by: i32) {
        let c = self.counts.entry(slot).or_insert(0);
        *c = c.saturating_add_signed(by);
        if *c == 0 {
            self.counts.remove(&slot);
        }
    }

    /// A file's name counted in (`by` 1) or out (`by` -1).
    pub(super) fn name(&mut self, name: &str, by: i32) {
        for k in qrp::table_keywords(name) {
            self.bump(Self::slot(&k), by);
        }
    }

    /// A file's SHA-1 counted in or out.
    pub(super) fn urn(&mut self, urn: &Sha1Urn, by: i32) {
        self.bump(Self::slot(&urn_keyword(urn)), by);
    }

    /// Counts kept for nothing yet (our leaves' slots use the same counting).
    pub(super) fn empty() -> LibraryTable {
        LibraryTable {
            counts: HashMap::new(),
        }
    }

    /// The presence table: every slot some keyword of ours hashes to.
    pub(super) fn table(&self) -> QrpTable {
        let mut t = QrpTable::new(TABLE_LEN).expect("a valid table length");
        self.add_to(&mut t);
        t
    }

    /// Marks every counted slot present in `t`.
    pub(super) fn add_to(&self, t: &mut QrpTable) {
        for slot in self.counts.keys() {
            t.set_present(*slot as usize, true);
        }
    }
}

impl<L: Links> Engine<L> {
    /// A RESET or PATCH from a peer whose table we keep (our leaves, and
    /// ultrapeers that speak inter-ultrapeer QRP); ignored from others. A broken
    /// sequence closes the link: nothing after it could be trusted.
    pub(super) fn route_table(&mut self, conn: ConnId, payload: &bytes::Bytes, _now: Instant) {
        let role = self.tier.role();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let keeps = role == Role::Ultrapeer
            && (peer.info.link == Link::ToLeaf
                || (peer.info.link == Link::Peer && peer.info.up_qrp));
        if !keeps {
            return;
        }
        let leaf = peer.info.link == Link::ToLeaf;
        let result = match RouteTableUpdate::parse(payload) {
            Err(e) => Err(e.to_string()),
            // A table larger than any servent sends costs its decoding and every
            // merge into ours: refused (LimeWire and gtk-gnutella leaves send
            // 2^14 to 2^16 slots, ultrapeers up to 2^20).
            Ok(RouteTableUpdate::Reset { table_len, .. })
                if table_len as usize > if leaf { MAX_LEAF_TABLE } else { MAX_PEER_TABLE } =>
            {
                Err(format!("QRP table of {table_len} slots is too large"))
            }
            // A new table every few seconds is a storm: each one is decoded and
            // merged again.
            Ok(RouteTableUpdate::Reset { .. }) if !peer.resets.allow(_now) => {
                Err("QRP tables reset too often".to_string())
            }
            Ok(RouteTableUpdate::Reset { table_len, .. }) => {
                match QrpTable::new(table_len as usize) {
                    Ok(table) => {
                        peer.table = Some(RemoteTable {
                            decoder: PatchDecoder::new(table_len as usize),
                            table,
                            complete: false,
                        });
                        Ok(false)
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            }) => match peer.table.as_mut() {
                None => Err("PATCH before RESET".to_string()),
                Some(t) => t
                    .decoder
                    .feed_into(
                        seq_no,
                        seq_size,
                        compressor,
                        entry_bits,
                        &data,
                        &mut t.table,
                    )
                    .map(|progress| {
                        let done = matches!(progress, qrp::Progress::Complete { .. });
                        t.complete |= done;
                        done
                    })
                    .map_err(|e| e.to_string()),
            },
        };
        // A leaf's table with most slots present would make it match almost
        // every query (gtk-gnutella and LimeWire refuse such "full" tables too).
        let result = match result {
            Ok(true) if leaf => match peer.table.as_ref() {
                Some(t)
                    if t.table.present_count() as f64
                        > self.max_table_fill * t.table.slot_count() as f64 =>
                {
                    Err(format!(
                        "QRP table {:.0}% full",
                        100.0 * t.table.present_count() as f64 / t.table.slot_count() as f64
                    ))
                }
                _ => Ok(true),
            },
            other => other,
        };
        match result {
            Ok(true) => {
                self.stats.tables_received += 1;
                if leaf {
                    // The leaf's new table replaces its part of ours, once,
                    // here: no tick merges every leaf's table again.
                    let scaled = peer
                        .table
                        .as_ref()
                        .and_then(|t| t.table.rescale(TABLE_LEN).ok());
                    self.leaf_part(conn, scaled);
                }
            }
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(conn = conn.0, error = %e, "bad route table update");
                self.stats.table_errors += 1;
                peer.table = None;
                peer.closing = true;
                self.links.close(
                    peer.conn,
                    bye::CODE_BAD_QUERIES,
                    &format!("Bad route table update: {e}"),
                );
                self.leaf_part(conn, None);
            }
        }
    }

    /// Replaces leaf `conn`'s part of our table (its table at our size) with
    /// `part`: the slots it had are counted out, the new ones in.
    pub(super) fn leaf_part(&mut self, conn: ConnId, part: Option<QrpTable>) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let old = std::mem::replace(&mut peer.leaf_part, part);
        if let Some(old) = &old {
            for slot in old.present_slots() {
                self.leaf_slots.bump(slot as u32, -1);
            }
        }
        if let Some(new) = &peer.leaf_part {
            for slot in new.present_slots() {
                self.leaf_slots.bump(slot as u32, 1);
            }
        }
        if old.is_some() || peer.leaf_part.is_some() {
            self.table_dirty = true;
        }
    }

    /// Our table: our files' keywords and URNs, and as an ultrapeer every
    /// leaf's table.
    pub(super) fn build_table(&self) -> QrpTable {
        let mut t = self.lib_table.table();
        if self.tier.role() == Role::Ultrapeer {
            self.leaf_slots.add_to(&mut t);
        }
        t
    }

    /// Sends our table, or what changed in it, to every peer that takes it;
    /// and as a leaf, our file list to ultrapeers that take offers.
    pub(super) fn send_tables(&mut self) {
        let role = self.tier.role();
        if role == Role::Leaf {
            self.send_offers();
        }
        let needs = |p: &Peer| p.wants_table(role);
        if !self.peers.values().any(needs) {
            return;
        }
        if self.table_dirty || self.table.is_none() {
            self.table = Some(self.build_table());
            self.table_dirty = false;
        }
        let table = self.table.as_ref().expect("just built");
        // The whole table (RESET, then a patch from empty) is the same for every
        // new link: built once, when the first one needs it.
        let mut whole: Option<Option<bytes::Bytes>> = None;
        let (mut sent_count, mut retried) = (0, 0);
        for p in self.peers.values_mut().filter(|p| p.wants_table(role)) {
            let bytes = match &p.sent {
                Some(old) if old == table => continue,
                Some(old) => table_update(table, old, false, &mut self.rng),
                None => whole
                    .get_or_insert_with(|| {
                        let empty = QrpTable::new(TABLE_LEN).expect("a valid table length");
                        table_update(table, &empty, true, &mut self.rng)
                    })
                    .clone(),
            };
            let Some(bytes) = bytes else { continue };
            // Sent as one piece in the queue's room for control messages, which
            // is never shed, so the sequence cannot be cut. Refused (that room is
            // full: the peer reads slowly), it is not recorded as sent, and the
            // next tick offers the difference again.
            match self.links.send(p.conn, Priority::Control, bytes) {
                crate::core::flow::Offer::Rejected => retried += 1,
                _ => {
                    p.sent = Some(table.clone());
                    sent_count += 1;
                }
            }
        }
        self.stats.tables_sent += sent_count;
        self.stats.control_retries += retried;
    }
}
