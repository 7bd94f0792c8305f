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

/// A peer's table as it arrives: the RESET's empty table and the PATCH
/// decoder, with the RESET pace. It travels in a [`TableJob`] to wherever the
/// shell decodes (off the core's hot path) and comes back in a [`TableDone`].
#[derive(Default)]
pub struct Assembler {
    current: Option<(PatchDecoder, QrpTable)>,
    resets: ResetPace,
}

impl Assembler {
    /// Takes one RESET or PATCH payload received at `now`; a table that
    /// became complete comes back (a copy, the decoder keeps its own for the
    /// next patches).
    fn feed(
        &mut self,
        payload: &bytes::Bytes,
        now: Instant,
        leaf: bool,
        max_fill: f64,
    ) -> Result<Option<Completed>, String> {
        match RouteTableUpdate::parse(payload).map_err(|e| e.to_string())? {
            // A table larger than any servent sends costs its decoding and every
            // merge into ours: refused (LimeWire and gtk-gnutella leaves send
            // 2^14 to 2^16 slots, ultrapeers up to 2^20).
            RouteTableUpdate::Reset { table_len, .. }
                if table_len as usize > if leaf { MAX_LEAF_TABLE } else { MAX_PEER_TABLE } =>
            {
                Err(format!("QRP table of {table_len} slots is too large"))
            }
            // A new table every few seconds is a storm: each one is decoded and
            // merged again.
            RouteTableUpdate::Reset { .. } if !self.resets.allow(now) => {
                Err("QRP tables reset too often".to_string())
            }
            RouteTableUpdate::Reset { table_len, .. } => {
                let table = QrpTable::new(table_len as usize).map_err(|e| e.to_string())?;
                self.current = Some((PatchDecoder::new(table_len as usize), table));
                Ok(None)
            }
            RouteTableUpdate::Patch {
                seq_no,
                seq_size,
                compressor,
                entry_bits,
                data,
            } => {
                let Some((decoder, table)) = self.current.as_mut() else {
                    return Err("PATCH before RESET".to_string());
                };
                let progress = decoder
                    .feed_into(seq_no, seq_size, compressor, entry_bits, &data, table)
                    .map_err(|e| e.to_string())?;
                if !matches!(progress, qrp::Progress::Complete { .. }) {
                    return Ok(None);
                }
                // A leaf's table with most slots present would make it match
                // almost every query (gtk-gnutella and LimeWire refuse such
                // "full" tables too).
                let (present, slots) = (table.present_count(), table.slot_count());
                if leaf && present as f64 > max_fill * slots as f64 {
                    return Err(format!(
                        "QRP table {:.0}% full",
                        100.0 * present as f64 / slots as f64
                    ));
                }
                // A leaf's table is merged into ours at our size.
                let part = if leaf {
                    table.rescale(TABLE_LEN).ok()
                } else {
                    None
                };
                Ok(Some(Completed {
                    table: table.clone(),
                    part,
                }))
            }
        }
    }
}

/// A table a whole PATCH sequence completed.
pub struct Completed {
    /// The peer's table, to route on.
    table: QrpTable,
    /// A leaf's table at our size, its part of ours.
    part: Option<QrpTable>,
}

/// Route-table payloads of one link to decode, with the link's [`Assembler`].
/// Running it takes time that grows with the table, so the shell runs it off
/// the core's hot path (see [`Links::decode_tables`]); the result comes back as
/// [`Event::TablesDecoded`].
pub struct TableJob {
    conn: ConnId,
    assembler: Assembler,
    payloads: Vec<(bytes::Bytes, Instant)>,
    leaf: bool,
    max_fill: f64,
}

impl TableJob {
    /// Decodes every payload in order; the first error ends the job.
    pub fn run(mut self) -> TableDone {
        let mut result = Ok(None);
        for (payload, at) in &self.payloads {
            match self.assembler.feed(payload, *at, self.leaf, self.max_fill) {
                Ok(Some(c)) => result = Ok(Some(c)),
                Ok(None) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        TableDone {
            conn: self.conn,
            assembler: self.assembler,
            result,
        }
    }
}

/// A [`TableJob`]'s outcome: the assembler back, and the last table completed
/// (or why the updates were refused).
pub struct TableDone {
    conn: ConnId,
    assembler: Assembler,
    result: Result<Option<Completed>, String>,
}

/// Where a link's table decoding stands in the core.
pub(super) enum Decoding {
    /// The assembler is here: the next payload starts a job.
    Idle(Assembler),
    /// A job holds the assembler; payloads received meanwhile wait.
    Busy {
        queued: Vec<(bytes::Bytes, Instant)>,
        bytes: usize,
    },
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding::Idle(Assembler::default())
    }
}

/// Route-table bytes a link may have waiting while its previous ones are
/// decoded (a whole 2^20-slot table at 8 bits, uncompressed, is 1 MiB).
pub(super) const MAX_QUEUED_TABLE_BYTES: usize = 1 << 20;

/// QRP RESETs a peer may send: the first at once, then one per
/// [`ResetPace::EVERY`] on average, with a little slack.
#[derive(Clone, Debug, Default)]
struct ResetPace {
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
        for f in library.view().files() {
            t.name(f.name, 1);
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

    /// The slots counted present.
    pub(super) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.counts.keys().copied()
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
    /// ultrapeers that speak inter-ultrapeer QRP); ignored from others. It is
    /// decoded by a [`TableJob`] (off the hot path in the shell); a broken
    /// sequence closes the link: nothing after it could be trusted.
    pub(super) fn route_table(&mut self, conn: ConnId, payload: &bytes::Bytes, now: Instant) {
        let role = self.tier.role();
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let keeps = role == Role::Ultrapeer
            && (peer.info.link == Link::ToLeaf
                || (peer.info.link == Link::Peer && peer.info.up_qrp));
        if !keeps || peer.closing {
            return;
        }
        match &mut peer.decoding {
            Decoding::Busy { queued, bytes } => {
                *bytes += payload.len();
                queued.push((payload.clone(), now));
                if *bytes > MAX_QUEUED_TABLE_BYTES {
                    self.table_error(conn, "QRP updates faster than they can be read".into());
                }
            }
            Decoding::Idle(_) => self.start_job(conn, vec![(payload.clone(), now)]),
        }
    }

    /// Hands `payloads` with `conn`'s assembler to a [`TableJob`]; the link is
    /// busy until the job is done.
    fn start_job(&mut self, conn: ConnId, payloads: Vec<(bytes::Bytes, Instant)>) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        let busy = Decoding::Busy {
            queued: Vec::new(),
            bytes: 0,
        };
        let Decoding::Idle(assembler) = std::mem::replace(&mut peer.decoding, busy) else {
            unreachable!("a job starts only from an idle link")
        };
        let job = TableJob {
            conn,
            assembler,
            payloads,
            leaf: peer.info.link == Link::ToLeaf,
            max_fill: self.max_table_fill,
        };
        if let Some(done) = self.links.decode_tables(job) {
            self.tables_decoded(done);
        }
    }

    /// A [`TableJob`] is over: its table (if one completed) is routed on and,
    /// for a leaf, merged into ours; payloads that arrived meanwhile go next.
    pub(super) fn tables_decoded(&mut self, done: TableDone) {
        let TableDone {
            conn,
            assembler,
            result,
        } = done;
        let Some(peer) = self.peers.get_mut(&conn) else {
            // The link went while its updates were decoded: a refusal is
            // still counted.
            if let Err(e) = result {
                tracing::debug!(conn = conn.0, error = %e, "bad route table update from a closed link");
                self.stats.table_errors += 1;
            }
            return;
        };
        let queued = match std::mem::replace(&mut peer.decoding, Decoding::Idle(assembler)) {
            Decoding::Busy { queued, .. } => queued,
            Decoding::Idle(_) => Vec::new(),
        };
        match result {
            Err(e) => return self.table_error(conn, e),
            Ok(Some(c)) => {
                self.stats.tables_received += 1;
                peer.table = Some(c.table);
                if peer.info.link == Link::ToLeaf {
                    // The leaf's new table replaces its part of ours, once,
                    // here: no tick merges every leaf's table again.
                    self.leaf_part(conn, c.part);
                }
            }
            Ok(None) => {}
        }
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        if !queued.is_empty() && !peer.closing {
            self.start_job(conn, queued);
        }
    }

    /// A peer's table updates were refused: the link is closed.
    fn table_error(&mut self, conn: ConnId, e: String) {
        let Some(peer) = self.peers.get_mut(&conn) else {
            return;
        };
        tracing::debug!(conn = conn.0, error = %e, "bad route table update");
        self.stats.table_errors += 1;
        peer.table = None;
        peer.decoding = Decoding::default();
        peer.closing = true;
        self.links.close(
            peer.conn,
            bye::CODE_BAD_QUERIES,
            &format!("Bad route table update: {e}"),
        );
        self.leaf_part(conn, None);
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
