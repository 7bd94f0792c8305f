//! The index of shared files: look-ups by keywords, by SHA-1 and by FastTrack
//! hash, no I/O.
//!
//! Keywords are folded exactly as for QRP tables ([`crate::wire::qrp`]: NFKD, marks
//! removed, Unicode lower case, split on anything not alphanumeric), and a file is
//! indexed under the same keywords its QRP table entry gets (words plus their
//! stemming prefixes). So whenever a neighbour's view of our QRP table says a query
//! may match, the index answers it the same way.
//!
//! Built to hold a large share in little memory (about 100 bytes per file besides
//! its name; `cargo bench --bench library`): each file is one fixed-size record,
//! its name in one byte arena shared by all files, its path as an interned
//! directory plus the name (the file name on disk is stored only when it differs
//! from the name offered), the look-ups by index, SHA-1 and path are hash tables
//! of 4-byte record numbers, and each keyword's files are a compact sorted list
//! ([`postings`]). The records are what the file servers read too ([`Served`]):
//! there is one copy of each file, behind a lock that only the engine task writes.

mod postings;

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::fasttrack::hash::Fth;
use crate::wire::huge::Sha1Urn;
use crate::wire::qrp::{for_each_table_keyword, split_keywords};

use postings::Postings;

/// Files the node answers queries for that are not on its disk (the files of
/// its FastTrack users, which it serves by proxy), looked up while the engine
/// decides: implementations must not call back into the engine.
pub trait ExtraFiles: Send + Sync {
    /// Results for the words of a query, at most `max`.
    fn search(&self, text: &str, max: usize) -> Vec<crate::wire::queryhit::HitResult>;
}

/// One shared file, as an owned value (what a file server is handed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFile {
    /// The file's index in hits and `/get/<index>/<name>` requests. Never 0 and
    /// never reused while the node runs.
    pub index: u32,
    /// The name offered in hits (the file name, without directories).
    pub name: String,
    /// Where the file is on disk.
    pub path: PathBuf,
    pub size: u64,
    /// The modification time the file had when it was indexed: with the size, what
    /// a server checks before offering the file's bytes under its SHA-1.
    pub mtime: SystemTime,
    /// Known once the file has been hashed.
    pub sha1: Option<Sha1Urn>,
    /// The FastTrack hash (FTH), computed with the SHA-1.
    pub fth: Option<Fth>,
}

/// One shared file as the library holds it, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct FileRef<'a> {
    pub index: u32,
    /// The name offered in hits.
    pub name: &'a str,
    pub size: u64,
    pub mtime: SystemTime,
    pub sha1: Option<Sha1Urn>,
    pub fth: Option<Fth>,
    store: &'a Store,
    slot: u32,
}

impl FileRef<'_> {
    /// Where the file is on disk (empty for a file listed by another node).
    pub fn path(&self) -> PathBuf {
        self.store.path(self.slot)
    }

    /// Whether `f` is what [`FileRef::to_shared`] would make of this file,
    /// compared in place (no copy of the name or path). Every field is named,
    /// so a field added to `SharedFile` must be added here too.
    pub fn describes(&self, f: &SharedFile) -> bool {
        let SharedFile {
            index,
            name,
            path,
            size,
            mtime,
            sha1,
            fth,
        } = f;
        *index == self.index
            && *name == self.name
            && *size == self.size
            && *mtime == self.mtime
            && *sha1 == self.sha1
            && *fth == self.fth
            && self.store.path_is(self.slot, path)
    }

    /// The file as an owned value.
    pub fn to_shared(&self) -> SharedFile {
        SharedFile {
            index: self.index,
            name: self.name.to_string(),
            path: self.path(),
            size: self.size,
            mtime: self.mtime,
            sha1: self.sha1,
            fth: self.fth,
        }
    }
}

/// What the file servers see of the library: every file by index and by SHA-1.
///
/// The same records the library searches, behind a read-write lock: the engine
/// task owns the [`Library`] and is its only writer. Readers (HTTP uploads,
/// push answers, in other tasks) take the read lock for one look-up and leave
/// with an owned copy of the entry; nobody holds it across an `.await`.
///
/// Files listed by another node ([`Library::add_at`]) have no path and are
/// never served.
#[derive(Clone, Debug, Default)]
pub struct Served {
    inner: Arc<RwLock<Store>>,
}

impl Served {
    /// The file with this index.
    pub fn get(&self, index: u32) -> Option<Arc<SharedFile>> {
        self.get_reusing(index, None)
    }

    /// A file with this SHA-1 (the one with the lowest index).
    pub fn by_sha1(&self, urn: &Sha1Urn) -> Option<Arc<SharedFile>> {
        self.by_sha1_reusing(urn, None)
    }

    /// [`Served::get`], giving back `held` itself (no copy) when the file
    /// found is still exactly what it says: a connection asking for the file
    /// it asked for last.
    pub fn get_reusing(
        &self,
        index: u32,
        held: Option<&Arc<SharedFile>>,
    ) -> Option<Arc<SharedFile>> {
        let store = self.read();
        let slot = store.slot_of(index)?;
        store.servable_as(slot, held)
    }

    /// [`Served::by_sha1`], reusing `held` as [`Served::get_reusing`] does.
    pub fn by_sha1_reusing(
        &self,
        urn: &Sha1Urn,
        held: Option<&Arc<SharedFile>>,
    ) -> Option<Arc<SharedFile>> {
        let store = self.read();
        let slot = store.first_with(SHA1, &urn.0)?;
        store.servable_as(slot, held)
    }

    /// A file with this FastTrack hash (the one with the lowest index).
    pub fn by_fth(&self, fth: &Fth) -> Option<Arc<SharedFile>> {
        let store = self.read();
        let slot = store.first_with(FTH, &fth.0)?;
        store.servable(slot)
    }

    /// The file with this FastTrack file id and exactly this name.
    pub fn by_file_id(&self, id: u16, name: &str) -> Option<Arc<SharedFile>> {
        let store = self.read();
        store
            .with_file_id(id)
            .filter(|&s| store.records[s].dir != NO_DIR)
            .filter(|&s| store.name(&store.records[s]) == name)
            .min_by_key(|&s| store.records[s].index)
            .and_then(|s| store.servable(s))
    }

    /// Every file that can be served, in index order, at most `max`, as hit
    /// results: what a browse of this host lists.
    pub fn listing(&self, max: usize) -> Vec<crate::wire::HitResult> {
        let store = self.read();
        store
            .slots_by_index(|r| r.dir != NO_DIR)
            .take(max)
            .map(|s| {
                let f = store.file(s);
                crate::wire::HitResult::new(f.index, f.size, f.name, f.sha1.as_ref())
                    .with_fth(f.fth)
            })
            .collect()
    }

    /// What the library holds of the file at `path`, if it is shared: the
    /// size and time it was indexed at, and its hashes once known. (The
    /// library task compares its rescans with this; no second copy of every
    /// path is kept for that.)
    pub fn on_disk(&self, path: &Path) -> Option<OnDisk> {
        let store = self.read();
        let f = store.file(store.slot_of_path(path)?);
        Some(OnDisk::of(&f))
    }

    /// The paths of the shared files on disk whose index `seen` does not
    /// take (those a rescan did not find again).
    pub fn paths_except(&self, seen: impl Fn(u32) -> bool) -> Vec<PathBuf> {
        let store = self.read();
        // In slot order: no sort of every file by index for the few gone.
        store
            .records
            .used()
            .filter(|(_, r)| r.dir != NO_DIR && !seen(r.index))
            .map(|(s, _)| store.path(s))
            .collect()
    }

    /// Calls `each` with the path of every shared file on disk in the slots
    /// from `from` on, at most 1,024 of them, and what [`Served::on_disk`]
    /// says of it; returns the slot to go on from, or `None` past the last.
    /// The read lock is held for one call: whoever goes through every file
    /// (the hash cache's writer) does it a chunk at a time, never holding
    /// the lock long nor a copy of every path.
    pub fn on_disk_from(&self, from: u32, mut each: impl FnMut(&Path, &OnDisk)) -> Option<u32> {
        let store = self.read();
        let end = from.saturating_add(CHUNK).min(store.records.len);
        let mut path = PathBuf::new();
        for slot in from..end {
            let r = &store.records[slot];
            if r.index == 0 || r.dir == NO_DIR {
                continue;
            }
            store.path_into(slot, &mut path);
            each(&path, &OnDisk::of(&store.file(slot)));
        }
        (end < store.records.len).then_some(end)
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A writer cannot panic while holding the lock (plain table updates),
        // but a poisoned lock still holds consistent tables.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the library holds of a file on disk ([`Served::on_disk`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnDisk {
    pub index: u32,
    pub size: u64,
    pub mtime: SystemTime,
    pub sha1: Option<Sha1Urn>,
    pub fth: Option<Fth>,
}

impl OnDisk {
    fn of(f: &FileRef<'_>) -> OnDisk {
        OnDisk {
            index: f.index,
            size: f.size,
            mtime: f.mtime,
            sha1: f.sha1,
            fth: f.fth,
        }
    }

    /// Whether it was indexed at this size and time (the file has not
    /// changed since, as far as its size and time tell).
    pub fn is(&self, size: u64, mtime: SystemTime) -> bool {
        self.size == size && self.mtime == mtime
    }
}

/// A file's fixed-size record (80 bytes).
#[derive(Clone, Copy, Debug)]
struct Record {
    /// 0 for a free slot (indexes are never 0).
    index: u32,
    /// [`NO_DIR`], [`ODD_DIR`] or a directory id.
    dir: u32,
    /// The name's bytes in the arena; the file name on disk follows it when
    /// `file_len` is not 0.
    name_off: u32,
    name_len: u16,
    file_len: u16,
    /// The next slot with the same FastTrack file id ([`Store::file_ids`]),
    /// or [`NO_SLOT`].
    next_id: u32,
    /// The modification time's nanoseconds, and [`HAS_SHA1`], [`HAS_FTH`].
    nanos: u32,
    secs: i64,
    size: u64,
    sha1: [u8; 20],
    fth: [u8; 20],
}

const _: () = assert!(std::mem::size_of::<Record>() == 80);

/// In `Record::nanos` (which never reach 2^30): the SHA-1 is known.
const HAS_SHA1: u32 = 1 << 31;
/// In `Record::nanos`: the FastTrack hash is known.
const HAS_FTH: u32 = 1 << 30;

/// The end of a chain of slots.
const NO_SLOT: u32 = u32::MAX;

/// The digests a record holds: which one, for `Record::digest`.
const SHA1: usize = 0;
const FTH: usize = 1;

impl Record {
    fn has_sha1(&self) -> bool {
        self.nanos & HAS_SHA1 != 0
    }

    fn has_fth(&self) -> bool {
        self.nanos & HAS_FTH != 0
    }

    fn digest(&self, which: usize) -> Option<&[u8; 20]> {
        match which {
            SHA1 => self.has_sha1().then_some(&self.sha1),
            _ => self.has_fth().then_some(&self.fth),
        }
    }
}

/// Files by SHA-1: the lowest index's slot for each, and every index of a
/// SHA-1 several files have.
#[derive(Debug, Default)]
struct ByDigest {
    first: HashTable<u32>,
    /// Sorted, distinct, two or more.
    shared: HashMap<[u8; 20], Vec<u32>>,
}

/// The records, in chunks of a fixed size, so a growing library never holds
/// spare room for more than one chunk (a vector doubling would leave up to
/// half of it unused).
#[derive(Debug, Default)]
struct Records {
    chunks: Vec<Vec<Record>>,
    len: u32,
}

const CHUNK: u32 = 1024;

impl Records {
    fn push(&mut self, r: Record) -> u32 {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::with_capacity(CHUNK as usize));
        }
        self.chunks.last_mut().expect("a chunk").push(r);
        self.len += 1;
        self.len - 1
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Record> {
        self.chunks.iter_mut().flatten()
    }

    /// Every slot in use, with its record.
    fn used(&self) -> impl Iterator<Item = (u32, &Record)> {
        (0..)
            .zip(self.chunks.iter().flatten())
            .filter(|(_, r)| r.index != 0)
    }
}

impl std::ops::Index<u32> for Records {
    type Output = Record;

    fn index(&self, slot: u32) -> &Record {
        &self.chunks[(slot / CHUNK) as usize][(slot % CHUNK) as usize]
    }
}

impl std::ops::IndexMut<u32> for Records {
    fn index_mut(&mut self, slot: u32) -> &mut Record {
        &mut self.chunks[(slot / CHUNK) as usize][(slot % CHUNK) as usize]
    }
}

/// `name`, cut to at most 65,535 bytes at a character boundary (a longer name
/// cannot be offered in a hit anyway).
fn clamp_name(name: &str) -> &str {
    let mut end = name.len().min(usize::from(u16::MAX));
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// A file with no path (listed by another node).
const NO_DIR: u32 = u32::MAX;
/// A path that cannot be split into a directory and a UTF-8 file name: kept
/// whole in `Store::odd_paths`.
const ODD_DIR: u32 = u32::MAX - 1;

fn to_parts(t: SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs().min(i64::MAX as u64) as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (
                d.as_secs().min(i64::MAX as u64 - 1) as i64,
                d.subsec_nanos(),
            );
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

fn from_parts(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

/// Interned directories, counted by the files in them, found by their
/// paths' bytes (the paths a scan finds are canonical: equal paths have
/// equal bytes).
#[derive(Debug, Default)]
struct Dirs {
    paths: Vec<(PathBuf, u32)>,
    free: Vec<u32>,
    table: HashTable<u32>,
    /// The directory found last (files come a directory at a time), or
    /// `u32::MAX`.
    last: AtomicU32,
}

fn dir_bytes(dir: &Path) -> &[u8] {
    dir.as_os_str().as_encoded_bytes()
}

impl Dirs {
    fn find(&self, hasher: &RandomState, dir: &Path) -> Option<u32> {
        let bytes = dir_bytes(dir);
        let last = self.last.load(Relaxed);
        if let Some((p, n)) = self.paths.get(last as usize)
            && *n > 0
            && dir_bytes(p) == bytes
        {
            return Some(last);
        }
        let id = *self.table.find(hasher.hash_one(bytes), |&id| {
            dir_bytes(&self.paths[id as usize].0) == bytes
        })?;
        self.last.store(id, Relaxed);
        Some(id)
    }

    fn intern(&mut self, hasher: &RandomState, dir: &Path) -> u32 {
        if let Some(id) = self.find(hasher, dir) {
            self.paths[id as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.paths[id as usize] = (dir.to_path_buf(), 1);
                id
            }
            None => {
                self.paths.push((dir.to_path_buf(), 1));
                self.paths.len() as u32 - 1
            }
        };
        let paths = &self.paths;
        self.table
            .insert_unique(hasher.hash_one(dir_bytes(dir)), id, |&i| {
                hasher.hash_one(dir_bytes(&paths[i as usize].0))
            });
        self.last.store(id, Relaxed);
        id
    }

    fn release(&mut self, hasher: &RandomState, id: u32) {
        let entry = &mut self.paths[id as usize];
        entry.1 -= 1;
        if entry.1 > 0 {
            return;
        }
        let path = std::mem::take(&mut entry.0);
        if let Ok(e) = self
            .table
            .find_entry(hasher.hash_one(dir_bytes(&path)), |&i| i == id)
        {
            e.remove();
        }
        self.free.push(id);
    }
}

/// The files' records and every look-up but the keywords'.
#[derive(Debug, Default)]
struct Store {
    records: Records,
    /// Slots of `records` free for reuse.
    free: Vec<u32>,
    /// Names (and differing file names), back to back.
    arena: Vec<u8>,
    /// Arena bytes no record uses any more.
    garbage: usize,
    dirs: Dirs,
    odd_paths: HashMap<u32, PathBuf>,
    /// Files in the store.
    files: u32,
    /// Slots by index, of the files not in slot `index - 1` ([`Store::in_place`]).
    by_index: HashTable<u32>,
    /// By SHA-1.
    by_sha1: ByDigest,
    /// The first slot of each FastTrack file id (14 bits of the FTH); the
    /// others follow in a chain through `Record::next_id`. Every file with
    /// an FTH is in the chain of its file id, which is how files are found
    /// by FTH (`/.hash=` requests, the supernode) and by file id and name
    /// (`/<file id>/<name>` requests): a chain is about one file in 16,384,
    /// and costs no table entry per file. Empty until a file has an FTH.
    file_ids: Vec<u32>,
    /// Slots by directory and file name (files with a path).
    by_path: HashTable<u32>,
    hasher: RandomState,
    total_size: u64,
}

impl Store {
    fn name(&self, r: &Record) -> &str {
        name_in(&self.arena, r)
    }

    /// The file name on disk (the last component of the path).
    fn file_name(&self, r: &Record) -> &str {
        file_name_in(&self.arena, r)
    }

    /// Whether `path` is [`Store::path`] of `slot`, compared in place.
    fn path_is(&self, slot: u32, path: &Path) -> bool {
        let r = &self.records[slot];
        match r.dir {
            NO_DIR => path.as_os_str().is_empty(),
            ODD_DIR => self.odd_paths.get(&r.index).is_some_and(|p| p == path),
            // `dir.join(file name)`, the name being one plain component.
            d => {
                path.parent() == Some(self.dirs.paths[d as usize].0.as_path())
                    && path.file_name() == Some(std::ffi::OsStr::new(self.file_name(r)))
            }
        }
    }

    fn path(&self, slot: u32) -> PathBuf {
        let mut p = PathBuf::new();
        self.path_into(slot, &mut p);
        p
    }

    /// [`Store::path`] into `out`, reusing its allocation.
    fn path_into(&self, slot: u32, out: &mut PathBuf) {
        let r = &self.records[slot];
        out.clear();
        match r.dir {
            NO_DIR => {}
            ODD_DIR => out.extend(self.odd_paths.get(&r.index)),
            d => {
                out.push(&self.dirs.paths[d as usize].0);
                out.push(self.file_name(r));
            }
        }
    }

    fn file(&self, slot: u32) -> FileRef<'_> {
        let r = &self.records[slot];
        FileRef {
            index: r.index,
            name: self.name(r),
            size: r.size,
            mtime: from_parts(r.secs, r.nanos & !(HAS_SHA1 | HAS_FTH)),
            sha1: r.has_sha1().then_some(Sha1Urn(r.sha1)),
            fth: r.has_fth().then_some(Fth(r.fth)),
            store: self,
            slot,
        }
    }

    fn servable(&self, slot: u32) -> Option<Arc<SharedFile>> {
        self.servable_as(slot, None)
    }

    /// The file in `slot` as an owned value, if it can be served: `held`
    /// itself when it says all that a fresh copy would.
    fn servable_as(&self, slot: u32, held: Option<&Arc<SharedFile>>) -> Option<Arc<SharedFile>> {
        if self.records[slot].dir == NO_DIR {
            return None;
        }
        match held {
            Some(h) if self.file(slot).describes(h) => Some(h.clone()),
            _ => Some(Arc::new(self.file(slot).to_shared())),
        }
    }

    fn hash_index(&self, index: u32) -> u64 {
        self.hasher.hash_one(index)
    }

    fn hash_path(&self, dir: u32, file_name: &str) -> u64 {
        path_hash(&self.hasher, dir, file_name)
    }

    /// Whether a file with `index` in `slot` sits where its index says, and so
    /// is found without the table. Indexes and new slots are both handed out in
    /// order, so a library that was only added to has every file in place; a
    /// file in a slot freed by a removal is in `by_index`.
    fn in_place(index: u32, slot: u32) -> bool {
        slot.wrapping_add(1) == index
    }

    fn slot_of(&self, index: u32) -> Option<u32> {
        if let Some(slot) = index.checked_sub(1)
            && slot < self.records.len
            && self.records[slot].index == index
        {
            return Some(slot);
        }
        self.by_index
            .find(self.hash_index(index), |&s| self.records[s].index == index)
            .copied()
    }

    /// The slots of the files `keep` says yes to, in index order.
    fn slots_by_index(&self, keep: impl Fn(&Record) -> bool) -> impl Iterator<Item = u32> {
        let mut slots: Vec<(u32, u32)> = self
            .records
            .used()
            .filter(|(_, r)| keep(r))
            .map(|(s, r)| (r.index, s))
            .collect();
        slots.sort_unstable();
        slots.into_iter().map(|(_, s)| s)
    }

    /// The slots of the files with this FastTrack file id.
    fn with_file_id(&self, id: u16) -> impl Iterator<Item = u32> + '_ {
        let first = self.file_ids.get(usize::from(id)).copied();
        std::iter::successors(first.filter(|&s| s != NO_SLOT), |&s| {
            Some(self.records[s].next_id).filter(|&n| n != NO_SLOT)
        })
    }

    /// The slot of the file with the lowest index with this digest.
    fn first_with(&self, which: usize, d: &[u8; 20]) -> Option<u32> {
        match which {
            FTH => self
                .with_file_id(Fth(*d).file_id())
                .filter(|&s| self.records[s].digest(FTH) == Some(d))
                .min_by_key(|&s| self.records[s].index),
            _ => self
                .by_sha1
                .first
                .find(self.hasher.hash_one(d), |&s| {
                    self.records[s].digest(SHA1) == Some(d)
                })
                .copied(),
        }
    }

    /// Every index with this SHA-1, in order.
    fn indexes_with(&self, urn: &Sha1Urn) -> Vec<u32> {
        match self.by_sha1.shared.get(&urn.0) {
            Some(set) => set.clone(),
            None => self
                .first_with(SHA1, &urn.0)
                .map(|s| vec![self.records[s].index])
                .unwrap_or_default(),
        }
    }

    fn slot_of_path(&self, path: &Path) -> Option<u32> {
        self.slot_of_split(path, split_path(path))
    }

    /// As `slot_of_path`, with the path already split.
    fn slot_of_split(&self, path: &Path, split: Option<(&Path, &str)>) -> Option<u32> {
        let Some((dir, file)) = split else {
            return self.odd_slot(path);
        };
        let Some(dir) = self.dirs.find(&self.hasher, dir) else {
            return self.odd_slot(path);
        };
        self.by_path
            .find(self.hash_path(dir, file), |&s| {
                let r = &self.records[s];
                r.dir == dir && self.file_name(r) == file
            })
            .copied()
            .or_else(|| self.odd_slot(path))
    }

    fn odd_slot(&self, path: &Path) -> Option<u32> {
        let (index, _) = self.odd_paths.iter().find(|(_, p)| p.as_path() == path)?;
        self.slot_of(*index)
    }

    /// Files a new record; `path` with what `split_path` makes of it.
    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        index: u32,
        name: &str,
        path: Option<(&Path, Option<(&Path, &str)>)>,
        size: u64,
        mtime: SystemTime,
        sha1: Option<Sha1Urn>,
    ) -> u32 {
        let (secs, nanos) = to_parts(mtime);
        let name_off = self.arena.len() as u32;
        reserve_quarter(&mut self.arena, name.len());
        self.arena.extend_from_slice(name.as_bytes());
        let mut record = Record {
            index,
            dir: NO_DIR,
            name_off,
            name_len: name.len() as u16,
            file_len: 0,
            next_id: NO_SLOT,
            nanos: nanos | if sha1.is_some() { HAS_SHA1 } else { 0 },
            secs,
            size,
            sha1: sha1.map(|u| u.0).unwrap_or_default(),
            fth: [0; 20],
        };
        if let Some((path, split)) = path {
            match split.filter(|(_, f)| f.len() <= usize::from(u16::MAX)) {
                Some((dir, file)) => {
                    record.dir = self.dirs.intern(&self.hasher, dir);
                    if file != name {
                        reserve_quarter(&mut self.arena, file.len());
                        self.arena.extend_from_slice(file.as_bytes());
                        record.file_len = file.len() as u16;
                    }
                }
                None => {
                    record.dir = ODD_DIR;
                    self.odd_paths.insert(index, path.to_path_buf());
                }
            }
        }
        let slot = match self.free.pop() {
            Some(s) => {
                self.records[s] = record;
                s
            }
            None => self.records.push(record),
        };
        self.total_size += size;
        self.files += 1;
        if !Store::in_place(index, slot) {
            let (records, hasher) = (&self.records, &self.hasher);
            self.by_index
                .insert_unique(hasher.hash_one(index), slot, |&s| {
                    hasher.hash_one(records[s].index)
                });
        }
        if record.dir != NO_DIR && record.dir != ODD_DIR {
            let Store {
                by_path,
                records,
                arena,
                hasher,
                ..
            } = self;
            let h = path_hash(hasher, record.dir, file_name_in(arena, &record));
            by_path.insert_unique(h, slot, |&s| {
                let r = &records[s];
                path_hash(hasher, r.dir, file_name_in(arena, r))
            });
        }
        if let Some(u) = sha1 {
            self.add_digest(SHA1, slot, u.0);
        }
        slot
    }

    /// Files `slot` under digest `d` (already in its record).
    fn add_digest(&mut self, which: usize, slot: u32, d: [u8; 20]) {
        match which {
            FTH => self.chain_file_id(slot, Fth(d).file_id()),
            _ => self.file_sha1(slot, d),
        }
    }

    /// Unfiles `slot` from digest `d` (still in its record).
    fn remove_digest(&mut self, which: usize, slot: u32, d: &[u8; 20]) {
        match which {
            FTH => self.unchain_file_id(slot, Fth(*d).file_id()),
            _ => self.unfile_sha1(slot, d),
        }
    }

    /// Puts `slot` at the head of the chain of file id `id`.
    fn chain_file_id(&mut self, slot: u32, id: u16) {
        if self.file_ids.is_empty() {
            self.file_ids = vec![NO_SLOT; 1 << 14];
        }
        let head = &mut self.file_ids[usize::from(id)];
        self.records[slot].next_id = *head;
        *head = slot;
    }

    /// Files `slot` under SHA-1 `d`.
    fn file_sha1(&mut self, slot: u32, d: [u8; 20]) {
        let index = self.records[slot].index;
        match self.first_with(SHA1, &d) {
            None => {
                let (records, hasher) = (&self.records, &self.hasher);
                self.by_sha1
                    .first
                    .insert_unique(hasher.hash_one(d), slot, |&s| {
                        hasher.hash_one(records[s].digest(SHA1).expect("filed"))
                    });
            }
            Some(first) => {
                let first_index = self.records[first].index;
                let set = self
                    .by_sha1
                    .shared
                    .entry(d)
                    .or_insert_with(|| vec![first_index]);
                if let Err(at) = set.binary_search(&index) {
                    set.insert(at, index);
                }
                if index < first_index {
                    self.point(&d, slot);
                }
            }
        }
    }

    /// Takes `slot` out of the chain of file id `id`.
    fn unchain_file_id(&mut self, slot: u32, id: u16) {
        let next = std::mem::replace(&mut self.records[slot].next_id, NO_SLOT);
        let Some(head) = self.file_ids.get_mut(usize::from(id)) else {
            return;
        };
        if *head == slot {
            *head = next;
            return;
        }
        let mut at = *head;
        while at != NO_SLOT {
            let r = &mut self.records[at];
            if r.next_id == slot {
                r.next_id = next;
                return;
            }
            at = r.next_id;
        }
    }

    /// Makes the SHA-1 table's entry for `d` (which exists) name `slot`.
    fn point(&mut self, d: &[u8; 20], slot: u32) {
        let h = self.hasher.hash_one(d);
        let records = &self.records;
        if let Some(s) = self
            .by_sha1
            .first
            .find_mut(h, |&s| records[s].digest(SHA1) == Some(d))
        {
            *s = slot;
        }
    }

    /// Unfiles `slot` from SHA-1 `d`.
    fn unfile_sha1(&mut self, slot: u32, d: &[u8; 20]) {
        let index = self.records[slot].index;
        if let Some(set) = self.by_sha1.shared.get_mut(d) {
            if let Ok(at) = set.binary_search(&index) {
                set.remove(at);
            }
            let next = *set.first().expect("two or more");
            if set.len() == 1 {
                self.by_sha1.shared.remove(d);
            }
            if let Some(s) = self.slot_of(next) {
                self.point(d, s);
            }
            return;
        }
        let h = self.hasher.hash_one(d);
        if let Ok(e) = self.by_sha1.first.find_entry(h, |&s| s == slot) {
            e.remove();
        }
    }

    /// Sets (or replaces) a digest of the file in `slot`.
    fn set_digest(&mut self, which: usize, slot: u32, d: [u8; 20]) {
        let r = self.records[slot];
        if let Some(old) = r.digest(which) {
            if *old == d {
                return;
            }
            let old = *old;
            self.remove_digest(which, slot, &old);
        }
        let r = &mut self.records[slot];
        match which {
            SHA1 => {
                r.sha1 = d;
                r.nanos |= HAS_SHA1;
            }
            _ => {
                r.fth = d;
                r.nanos |= HAS_FTH;
            }
        }
        self.add_digest(which, slot, d);
    }

    /// Takes the file out; its record as it was.
    fn remove(&mut self, index: u32) -> Option<SharedFile> {
        let slot = self.slot_of(index)?;
        let shared = self.file(slot).to_shared();
        let r = self.records[slot];
        if let Some(u) = shared.sha1 {
            self.remove_digest(SHA1, slot, &u.0);
        }
        if let Some(f) = shared.fth {
            self.remove_digest(FTH, slot, &f.0);
        }
        if !Store::in_place(index, slot)
            && let Ok(e) = self
                .by_index
                .find_entry(self.hash_index(index), |&s| s == slot)
        {
            e.remove();
        }
        match r.dir {
            NO_DIR => {}
            ODD_DIR => {
                self.odd_paths.remove(&index);
            }
            dir => {
                let h = self.hash_path(dir, self.file_name(&r));
                if let Ok(e) = self.by_path.find_entry(h, |&s| s == slot) {
                    e.remove();
                }
                self.dirs.release(&self.hasher, dir);
            }
        }
        self.total_size -= r.size;
        self.garbage += r.name_len as usize + r.file_len as usize;
        self.records[slot].index = 0;
        self.files -= 1;
        self.free.push(slot);
        if self.garbage > 4096 && self.garbage > self.arena.len() / 4 {
            self.compact_arena();
        }
        if self.files == 0 {
            // Nothing left: give every table's memory back.
            let hasher = self.hasher.clone();
            *self = Store {
                hasher,
                ..Store::default()
            };
        }
        Some(shared)
    }

    fn reserve(&mut self, more: usize) {
        // Not `by_index`: the files added next are in place.
        let Store {
            records,
            by_path,
            by_sha1,
            hasher,
            arena,
            ..
        } = self;
        by_path.reserve(more, |&s| {
            let r = &records[s];
            path_hash(hasher, r.dir, file_name_in(arena, r))
        });
        by_sha1.first.reserve(more, |&s| {
            hasher.hash_one(records[s].digest(SHA1).expect("filed"))
        });
    }

    fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.free.shrink_to_fit();
        self.dirs.paths.shrink_to_fit();
    }

    /// Copies the names still in use into a new arena.
    fn compact_arena(&mut self) {
        let mut arena = Vec::with_capacity(self.arena.len() - self.garbage);
        for r in self.records.iter_mut().filter(|r| r.index != 0) {
            let len = r.name_len as usize + r.file_len as usize;
            let off = arena.len() as u32;
            arena.extend_from_slice(&self.arena[r.name_off as usize..][..len]);
            r.name_off = off;
        }
        self.arena = arena;
        self.garbage = 0;
    }
}

fn name_in<'a>(arena: &'a [u8], r: &Record) -> &'a str {
    let bytes = &arena[r.name_off as usize..][..r.name_len as usize];
    // Only ever copied in from a `&str`.
    std::str::from_utf8(bytes).expect("names are UTF-8")
}

fn file_name_in<'a>(arena: &'a [u8], r: &Record) -> &'a str {
    if r.file_len == 0 {
        return name_in(arena, r);
    }
    let start = r.name_off as usize + r.name_len as usize;
    std::str::from_utf8(&arena[start..][..r.file_len as usize]).expect("file names are UTF-8")
}

fn path_hash(hasher: &RandomState, dir: u32, file_name: &str) -> u64 {
    hasher.hash_one((dir, file_name))
}

/// Grows `v` by a quarter when `more` bytes do not fit: a library grows one
/// name at a time, and doubling would leave up to half the arena unused.
fn reserve_quarter(v: &mut Vec<u8>, more: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(4096).max(v.len() / 4));
    }
}

/// A path's directory and its file name, when the name is UTF-8 and the two
/// give the path back byte for byte (`dir.join(file)`): split at the last
/// separator, with no empty name and no directory ending in a separator
/// (but the root).
#[cfg(unix)]
fn split_path(path: &Path) -> Option<(&Path, &str)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let (dir, file) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(0) => bytes.split_at(1),
        // Two separators in a row would come back as one.
        Some(at) if bytes[at - 1] == b'/' => return None,
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (&bytes[..0], bytes),
    };
    if file.is_empty() || file == b"." || file == b".." {
        return None;
    }
    Some((
        Path::new(std::ffi::OsStr::from_bytes(dir)),
        std::str::from_utf8(file).ok()?,
    ))
}

#[cfg(not(unix))]
fn split_path(path: &Path) -> Option<(&Path, &str)> {
    let file = path.file_name()?.to_str()?;
    let dir = path.parent()?;
    let (whole, d) = (path.as_os_str().len(), dir.as_os_str().len());
    let exact = path
        .as_os_str()
        .as_encoded_bytes()
        .ends_with(file.as_bytes())
        && (whole == d + file.len() || whole == d + 1 + file.len());
    exact.then_some((dir, file))
}

/// The words of the files' names, each with its files.
#[derive(Debug, Default)]
struct Keywords {
    /// Keyword ids, by text.
    table: HashTable<u32>,
    words: Vec<Word>,
    free: Vec<u32>,
    /// The keywords' text, back to back.
    text: Vec<u8>,
    garbage: usize,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Word {
    off: u32,
    len: u32,
    files: Postings,
}

impl Keywords {
    fn text(&self, id: u32) -> &[u8] {
        let w = &self.words[id as usize];
        &self.text[w.off as usize..][..w.len as usize]
    }

    fn id(&self, word: &str) -> Option<u32> {
        self.table
            .find(self.hasher.hash_one(word.as_bytes()), |&id| {
                self.text(id) == word.as_bytes()
            })
            .copied()
    }

    fn files(&self, word: &str) -> Option<&Postings> {
        self.id(word).map(|id| &self.words[id as usize].files)
    }

    fn add(&mut self, word: &str, index: u32) {
        let id = match self.id(word) {
            Some(id) => id,
            None => {
                let off = self.text.len() as u32;
                reserve_quarter(&mut self.text, word.len());
                self.text.extend_from_slice(word.as_bytes());
                let w = Word {
                    off,
                    len: word.len() as u32,
                    files: Postings::default(),
                };
                let id = match self.free.pop() {
                    Some(id) => {
                        self.words[id as usize] = w;
                        id
                    }
                    None => {
                        if self.words.len() == self.words.capacity() {
                            let extra = 16 + self.words.len() / 4;
                            self.words.reserve_exact(extra);
                        }
                        self.words.push(w);
                        self.words.len() as u32 - 1
                    }
                };
                let Keywords {
                    table,
                    words,
                    text,
                    hasher,
                    ..
                } = self;
                table.insert_unique(hasher.hash_one(word.as_bytes()), id, |&i| {
                    let w = &words[i as usize];
                    hasher.hash_one(&text[w.off as usize..][..w.len as usize])
                });
                id
            }
        };
        self.words[id as usize].files.insert(index);
    }

    fn shrink_to_fit(&mut self) {
        for w in &mut self.words {
            w.files.shrink_to_fit();
        }
        self.words.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    fn remove(&mut self, word: &str, index: u32) {
        let Some(id) = self.id(word) else {
            return;
        };
        let w = &mut self.words[id as usize];
        w.files.remove(index);
        if !w.files.is_empty() {
            return;
        }
        self.garbage += w.len as usize;
        *w = Word::default();
        let h = self.hasher.hash_one(word.as_bytes());
        if let Ok(e) = self.table.find_entry(h, |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
        if self.table.is_empty() {
            let hasher = self.hasher.clone();
            *self = Keywords {
                hasher,
                ..Keywords::default()
            };
        } else if self.garbage > 4096 && self.garbage > self.text.len() / 4 {
            let mut text = Vec::with_capacity(self.text.len() - self.garbage);
            for w in self.words.iter_mut().filter(|w| !w.files.is_empty()) {
                let off = text.len() as u32;
                text.extend_from_slice(&self.text[w.off as usize..][..w.len as usize]);
                w.off = off;
            }
            self.text = text;
            self.garbage = 0;
        }
    }
}

/// The shared-file index.
#[derive(Debug, Default)]
pub struct Library {
    served: Served,
    keywords: Keywords,
    last_index: u32,
    /// Bumped by every change to the files or their hashes ([`Library::changes`]).
    changes: u64,
}

/// A look at the library: its files, searches. Holds the read side of the
/// lock the file servers share, so it is kept for one task's step, never
/// across an `.await`.
pub struct View<'a> {
    keywords: &'a Keywords,
    store: RwLockReadGuard<'a, Store>,
}

impl Library {
    /// An empty library.
    pub fn new() -> Library {
        Library::default()
    }

    /// A count of the changes made so far (files added or removed, hashes
    /// recorded): a copy of the library kept elsewhere is current while this
    /// has not moved, without comparing the files.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.served.read().files as usize
    }

    /// Whether no file is shared.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total size of the shared files in bytes.
    pub fn total_size(&self) -> u64 {
        self.served.read().total_size
    }

    /// The view file servers read, kept in step with every change.
    pub fn served(&self) -> Served {
        self.served.clone()
    }

    /// A look at the files.
    pub fn view(&self) -> View<'_> {
        View {
            keywords: &self.keywords,
            store: self.served.read(),
        }
    }

    /// Adds a file, as it was on disk (`size`, `mtime`) when found, and returns its
    /// new index.
    pub fn add(
        &mut self,
        name: &str,
        path: impl AsRef<Path>,
        size: u64,
        mtime: SystemTime,
        sha1: Option<Sha1Urn>,
    ) -> u32 {
        self.add_hashed(name, path.as_ref(), size, mtime, sha1, None)
    }

    /// As [`Library::add`], with the FastTrack hash too when known (as
    /// [`Library::set_fth`] would record it).
    pub fn add_hashed(
        &mut self,
        name: &str,
        path: &Path,
        size: u64,
        mtime: SystemTime,
        sha1: Option<Sha1Urn>,
        fth: Option<Fth>,
    ) -> u32 {
        let name = clamp_name(name);
        self.changes += 1;
        self.last_index = self.last_index.wrapping_add(1).max(1);
        let index = self.last_index;
        let split = split_path(path);
        let old = {
            let store = self.served.read();
            let slot = store.slot_of_split(path, split);
            slot.map(|s| store.records[s].index)
        };
        if let Some(old) = old {
            // The same path again: the new entry replaces the old one.
            self.remove(old);
        }
        for_each_table_keyword(name, |word| self.keywords.add(word, index));
        let mut store = self.served.write();
        let slot = store.insert(index, name, Some((path, split)), size, mtime, sha1);
        if let Some(f) = fth {
            store.set_digest(FTH, slot, f.0);
        }
        index
    }

    /// Adds a file under an index chosen by someone else (another node's file
    /// list), replacing any file with that index. Such files have no path and
    /// are never served.
    pub fn add_at(&mut self, index: u32, name: &str, size: u64, sha1: Option<Sha1Urn>) {
        let name = clamp_name(name);
        self.changes += 1;
        self.remove(index);
        for_each_table_keyword(name, |word| self.keywords.add(word, index));
        self.served
            .write()
            .insert(index, name, None, size, UNIX_EPOCH, sha1);
    }

    /// Records a file's SHA-1 once it has been computed.
    pub fn set_sha1(&mut self, index: u32, urn: Sha1Urn) {
        let mut store = self.served.write();
        if let Some(slot) = store.slot_of(index) {
            self.changes += 1;
            store.set_digest(SHA1, slot, urn.0);
        }
    }

    /// Records a file's FastTrack hash once it has been computed.
    pub fn set_fth(&mut self, index: u32, fth: Fth) {
        let mut store = self.served.write();
        if let Some(slot) = store.slot_of(index) {
            self.changes += 1;
            store.set_digest(FTH, slot, fth.0);
        }
    }

    /// Removes a file; returns it if it was shared.
    pub fn remove(&mut self, index: u32) -> Option<SharedFile> {
        let file = self.served.write().remove(index)?;
        self.changes += 1;
        for_each_table_keyword(&file.name, |word| self.keywords.remove(word, index));
        Some(file)
    }

    /// Makes room for `more` files at once (a start-up scan's), so the look-up
    /// tables are not rebuilt several times while they are added.
    pub fn reserve(&mut self, more: usize) {
        self.served.write().reserve(more);
    }

    /// Gives back the room kept for growth (the name and keyword lists grow
    /// by a quarter at a time): for after a bulk load, such as the scan at
    /// start-up. Adding files afterwards works as before.
    pub fn shrink_to_fit(&mut self) {
        self.keywords.shrink_to_fit();
        self.served.write().shrink_to_fit();
    }

    /// The index of the file at `path`, if it is shared.
    pub fn index_of(&self, path: &Path) -> Option<u32> {
        let store = self.served.read();
        let slot = store.slot_of_path(path)?;
        Some(store.records[slot].index)
    }
}

impl View<'_> {
    /// The file with this index.
    pub fn get(&self, index: u32) -> Option<FileRef<'_>> {
        Some(self.store.file(self.store.slot_of(index)?))
    }

    /// A file with this SHA-1, if any is shared (the one with the lowest index).
    pub fn by_sha1(&self, urn: &Sha1Urn) -> Option<FileRef<'_>> {
        Some(self.store.file(self.store.first_with(SHA1, &urn.0)?))
    }

    /// A file with this FastTrack hash, if any is shared.
    pub fn by_fth(&self, fth: &Fth) -> Option<FileRef<'_>> {
        Some(self.store.file(self.store.first_with(FTH, &fth.0)?))
    }

    /// The indexes of the files whose FastTrack hash is known, in order: read
    /// off the records alone (no file's name or path looked at, only those
    /// indexes sorted).
    pub fn indexes_with_fth(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .store
            .records
            .used()
            .filter(|(_, r)| r.has_fth())
            .map(|(_, r)| r.index)
            .collect();
        v.sort_unstable();
        v
    }

    /// Every file, in index order.
    pub fn files(&self) -> impl Iterator<Item = FileRef<'_>> {
        self.store
            .slots_by_index(|_| true)
            .map(|s| self.store.file(s))
    }

    /// The files a query matches, in index order, at most `max`: those whose name
    /// holds every keyword of `text`, and those whose SHA-1 is one of `urns`. A
    /// text with no keywords (such as the URN-only `\`) matches by URN alone.
    pub fn search(&self, text: &str, urns: &[Sha1Urn], max: usize) -> Vec<FileRef<'_>> {
        // Most relayed queries reach libraries with nothing in them (an
        // ultrapeer sharing nothing, a leaf that offered none): no words cut.
        if self.store.files == 0 {
            return Vec::new();
        }
        let mut found = BTreeSet::new();
        for urn in urns.iter().take(MAX_URNS) {
            found.extend(self.store.indexes_with(urn).into_iter().take(max));
        }
        let words = split_keywords(text);
        if !words.is_empty() {
            let mut lists = Vec::with_capacity(words.len());
            for w in &words {
                match self.keywords.files(w) {
                    Some(list) => lists.push(list),
                    None => {
                        lists.clear();
                        break;
                    }
                }
            }
            lists.sort_by_key(|l| l.len());
            if let Some((smallest, rest)) = lists.split_first() {
                // In index order, the rarest keyword's files are checked against
                // the others until `max` match: the work is bounded by the cap
                // (and by MAX_SCAN candidates), not by how many files match, so
                // a flood of queries for a common word costs little each. The
                // other lists are walked forward once, skipping whole blocks.
                let mut others: Vec<_> = rest.iter().map(|l| l.iter()).collect();
                found.extend(
                    smallest
                        .iter()
                        .take(MAX_SCAN)
                        .filter(|&i| others.iter_mut().all(|c| c.seek(i)))
                        .take(max),
                );
            }
        }
        found
            .into_iter()
            .take(max)
            .filter_map(|i| self.get(i))
            .collect()
    }
}

/// Files of the rarest keyword a search looks at, at most.
pub const MAX_SCAN: usize = 20_000;
/// URNs of one query looked up, at most.
const MAX_URNS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::qrp::QrpTable;

    fn lib(names: &[&str]) -> Library {
        let mut l = Library::new();
        for n in names {
            l.add(
                n,
                PathBuf::from(n),
                100,
                SystemTime::UNIX_EPOCH,
                Some(Sha1Urn::digest(n.as_bytes())),
            );
        }
        l
    }

    fn names(found: Vec<FileRef<'_>>) -> Vec<String> {
        found.iter().map(|f| f.name.to_string()).collect()
    }

    #[test]
    fn every_file_on_disk_a_chunk_at_a_time() {
        // Over two chunks of slots, with files removed (their slots reused
        // by later files, or left free), one without a path, one at a path
        // of its own kind (no directory to split off), and hashes or none.
        let mut l = Library::new();
        let mut want = std::collections::BTreeMap::new();
        for i in 0..2500u32 {
            let path = PathBuf::from(format!("/share/d{}/f {i}.txt", i % 7));
            let sha1 = (i % 3 != 0).then(|| Sha1Urn::digest(&i.to_be_bytes()));
            let mtime = SystemTime::UNIX_EPOCH + std::time::Duration::new(u64::from(i), i);
            let index = l.add(&format!("f {i}.txt"), &path, u64::from(i), mtime, sha1);
            want.insert(path, (index, u64::from(i), mtime, sha1));
        }
        for i in (0..2500u32).step_by(5) {
            let path = PathBuf::from(format!("/share/d{}/f {i}.txt", i % 7));
            let (index, ..) = want.remove(&path).unwrap();
            assert!(l.remove(index).is_some());
        }
        for path in ["/share/d1/again.txt", "plain.txt"] {
            let index = l.add("again.txt", path, 1, SystemTime::UNIX_EPOCH, None);
            want.insert(
                PathBuf::from(path),
                (index, 1, SystemTime::UNIX_EPOCH, None),
            );
        }
        l.add_at(90_000, "listed.txt", 3, None);
        let (mut got, mut calls, mut next) = (std::collections::BTreeMap::new(), 0, Some(0));
        while let Some(from) = next {
            calls += 1;
            let mut in_call = 0;
            next = l.served().on_disk_from(from, |path, k| {
                in_call += 1;
                assert!(
                    got.insert(path.to_path_buf(), (k.index, k.size, k.mtime, k.sha1))
                        .is_none()
                );
            });
            assert!(in_call <= 1024);
        }
        assert_eq!(calls, 3);
        assert_eq!(got, want);
        assert_eq!(l.served().on_disk_from(10_000, |_, _| panic!("none")), None);
    }

    #[test]
    fn split_paths_join_back() {
        for p in [
            "/a/b",
            "/b",
            "b",
            "a/b",
            "/a//b",
            "/a/b/",
            "/a/.",
            "/a/..",
            "",
            "/",
            "./x",
            "a/./b",
            "/a/b c.mp3",
            "//b",
        ] {
            let p = Path::new(p);
            if let Some((d, f)) = split_path(p) {
                assert_eq!(d.join(f).as_os_str(), p.as_os_str(), "{p:?}");
            }
        }
        assert_eq!(split_path(Path::new("/a/b/")), None);
        assert_eq!(split_path(Path::new("/a/b")), Some((Path::new("/a"), "b")));
        assert_eq!(split_path(Path::new("/b")), Some((Path::new("/"), "b")));
    }

    /// A connection's copy of the file it asked for last is given back while
    /// it is the file, and never once anything it says has changed.
    #[test]
    fn a_held_copy_is_given_back_only_while_it_is_the_file() {
        let mut l = Library::new();
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let a = l.add("a.mp3", PathBuf::from("/share/a.mp3"), 10, t, None);
        // A path with no plain last component is kept whole.
        let odd = l.add("b.mp3", PathBuf::from("/share/b/"), 20, t, None);
        let served = l.served();
        for index in [a, odd] {
            let first = served.get(index).expect("served");
            let again = served.get_reusing(index, Some(&first)).expect("served");
            assert!(Arc::ptr_eq(&first, &again), "{index}");
            type Change = fn(&mut SharedFile);
            let changes: [Change; 8] = [
                |f| f.index += 100,
                |f| f.name.push('x'),
                |f| f.path.push("x"),
                |f| f.path = PathBuf::from("/elsewhere/a.mp3"),
                |f| f.size += 1,
                |f| f.mtime += Duration::from_nanos(1),
                |f| f.sha1 = Some(Sha1Urn([1; 20])),
                |f| f.fth = Some(Fth([2; 20])),
            ];
            for change in changes {
                let mut other = (*first).clone();
                change(&mut other);
                let other = Arc::new(other);
                let got = served.get_reusing(index, Some(&other)).expect("served");
                assert!(!Arc::ptr_eq(&got, &other), "{other:?}");
                assert_eq!(*got, *first);
            }
        }
        // Hashed since: the copy without the URN is stale.
        let first = served.get(a).expect("served");
        let urn = Sha1Urn([3; 20]);
        l.set_sha1(a, urn);
        let got = served.get_reusing(a, Some(&first)).expect("served");
        assert!(!Arc::ptr_eq(&got, &first));
        assert_eq!(got.sha1, Some(urn));
        let again = served.by_sha1_reusing(&urn, Some(&got)).expect("by URN");
        assert!(Arc::ptr_eq(&again, &got));
        // Replaced at the same path (a new index): the old copy is not it.
        let b = l.add("a.mp3", PathBuf::from("/share/a.mp3"), 10, t, Some(urn));
        assert!(served.get_reusing(a, Some(&got)).is_none());
        let now = served.by_sha1_reusing(&urn, Some(&got)).expect("by URN");
        assert!(!Arc::ptr_eq(&now, &got));
        assert_eq!(now.index, b);
    }

    #[test]
    fn every_keyword_must_match() {
        let l = lib(&[
            "Free Software Song.ogg",
            "free_jazz-live.mp3",
            "Linux Install Guide.pdf",
        ]);
        assert_eq!(
            names(l.view().search("free", &[], 10)),
            ["Free Software Song.ogg", "free_jazz-live.mp3"]
        );
        assert_eq!(
            names(l.view().search("FREE song", &[], 10)),
            ["Free Software Song.ogg"]
        );
        assert_eq!(
            names(l.view().search("free linux", &[], 10)),
            Vec::<&str>::new()
        );
        assert_eq!(
            names(l.view().search("jazz", &[], 10)),
            ["free_jazz-live.mp3"]
        );
        assert_eq!(l.view().search("free", &[], 1).len(), 1, "capped");
        assert!(l.view().search("", &[], 10).is_empty());
        assert!(l.view().search("\\", &[], 10).is_empty());
    }

    #[test]
    fn unicode_case_and_accents_fold() {
        let l = lib(&["ÉTÉ à Paris.flac", "Ｆｕｌｌｗｉｄｔｈ.txt", "Straße.mp3"]);
        assert_eq!(names(l.view().search("été", &[], 10)), ["ÉTÉ à Paris.flac"]);
        assert_eq!(
            names(l.view().search("ete PARIS", &[], 10)),
            ["ÉTÉ à Paris.flac"]
        );
        assert_eq!(
            names(l.view().search("fullwidth", &[], 10)),
            ["Ｆｕｌｌｗｉｄｔｈ.txt"]
        );
        assert_eq!(names(l.view().search("STRAßE", &[], 10)), ["Straße.mp3"]);
        // Lower-casing, not full case folding: "ß" does not become "ss", because
        // QRP tables are hashed from lower-cased words by every servent, and the
        // index must not find what a neighbour's copy of our table would refuse.
        assert!(l.view().search("strasse", &[], 10).is_empty());
    }

    #[test]
    fn urns_match_alone_or_beside_the_text() {
        let l = lib(&["a.txt", "b.txt"]);
        let b = Sha1Urn::digest(b"b.txt");
        assert_eq!(names(l.view().search("\\", &[b], 10)), ["b.txt"]);
        // Text OR URN.
        assert_eq!(names(l.view().search("a", &[b], 10)), ["a.txt", "b.txt"]);
        assert!(
            l.view()
                .search("", &[Sha1Urn::digest(b"zzz")], 10)
                .is_empty()
        );
        assert_eq!(l.view().by_sha1(&b).unwrap().name, "b.txt");
    }

    #[test]
    fn add_remove_and_rehash() {
        let mut l = lib(&["one.txt", "two.txt"]);
        let two = l.view().search("two", &[], 10)[0].index;
        assert_eq!(l.remove(two).unwrap().name, "two.txt");
        assert!(l.view().search("two", &[], 10).is_empty());
        assert!(l.view().by_sha1(&Sha1Urn::digest(b"two.txt")).is_none());
        let three = l.add(
            "two.txt",
            PathBuf::from("new/two.txt"),
            5,
            SystemTime::UNIX_EPOCH,
            None,
        );
        assert_ne!(three, two, "indexes are never reused");
        let urn = Sha1Urn::digest(b"new content");
        l.set_sha1(three, urn);
        assert_eq!(l.view().by_sha1(&urn).unwrap().index, three);
        assert_eq!(l.len(), 2);
        assert_eq!(l.total_size(), 105);
    }

    /// Files in the slot their index names and files elsewhere (after
    /// removals, and under indexes chosen by another node) are all found by
    /// index, listed once, counted once and removed cleanly: a library of
    /// our own files, and one of another node's listing.
    #[test]
    fn indexes_are_found_in_place_and_displaced() {
        for remote in [false, true] {
            let mut l = Library::new();
            let mut live = std::collections::BTreeMap::new();
            let mut rng = 0x2545_f491_u32;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                rng
            };
            for round in 0..3000u32 {
                let name = format!("file {round}.txt");
                if next() % 5 < 3 {
                    let index = if remote {
                        // Another node's index: anywhere, perhaps one in use.
                        let index = next() % 4000 + 1;
                        l.add_at(index, &name, u64::from(round), None);
                        index
                    } else {
                        l.add(
                            &name,
                            PathBuf::from(format!("/s/d{}/{name}", round % 7)),
                            u64::from(round),
                            SystemTime::UNIX_EPOCH,
                            None,
                        )
                    };
                    live.insert(index, name);
                } else if !live.is_empty() {
                    let at = next() as usize % live.len();
                    let index = *live.keys().nth(at).expect("in range");
                    assert_eq!(l.remove(index).map(|f| f.name), live.remove(&index));
                }
                if round % 100 == 0 || round > 2900 {
                    assert_eq!(l.len(), live.len());
                    let v = l.view();
                    for (&index, name) in &live {
                        assert_eq!(v.get(index).map(|f| f.name), Some(name.as_str()));
                    }
                    let listed: Vec<u32> = v.files().map(|f| f.index).collect();
                    assert_eq!(listed, live.keys().copied().collect::<Vec<_>>());
                }
            }
            for index in live.keys().copied().collect::<Vec<_>>() {
                assert!(l.remove(index).is_some());
            }
            assert!(l.is_empty());
            assert!(l.view().files().next().is_none());
        }
    }

    #[test]
    fn fth_lookups_follow_the_file() {
        let mut l = lib(&["one.txt", "two.txt"]);
        let fth = crate::fasttrack::hash::fth(b"one");
        let one = l.view().search("one", &[], 10)[0].index;
        assert!(l.view().by_fth(&fth).is_none());
        l.set_fth(one, fth);
        assert_eq!(l.view().by_fth(&fth).unwrap().index, one);
        assert_eq!(l.view().get(one).unwrap().fth, Some(fth));
        let served = l.served();
        assert_eq!(served.by_fth(&fth).unwrap().name, "one.txt");
        assert_eq!(
            served.by_file_id(fth.file_id(), "one.txt").unwrap().index,
            one
        );
        assert!(served.by_file_id(fth.file_id(), "two.txt").is_none());
        assert!(served.by_file_id(fth.file_id() ^ 1, "one.txt").is_none());
        // A new FTH (the file changed) replaces the old one in both views.
        let fth2 = crate::fasttrack::hash::fth(b"one, changed");
        l.set_fth(one, fth2);
        assert!(l.view().by_fth(&fth).is_none() && served.by_fth(&fth).is_none());
        assert!(served.by_file_id(fth.file_id(), "one.txt").is_none());
        assert_eq!(served.by_fth(&fth2).unwrap().index, one);
        l.remove(one);
        assert!(l.view().by_fth(&fth2).is_none() && served.by_fth(&fth2).is_none());
        // Another node's file has no path: never in the served view.
        l.add_at(77, "theirs.txt", 3, None);
        l.set_fth(77, fth);
        assert_eq!(l.view().by_fth(&fth).unwrap().index, 77);
        assert!(served.by_fth(&fth).is_none());
        assert!(served.get(77).is_none());
    }

    #[test]
    fn indexes_with_fth_in_order_after_slots_are_reused() {
        let mut l = Library::new();
        let fth = |i: u32| crate::fasttrack::hash::fth(&i.to_le_bytes());
        let add = |l: &mut Library, i: u32| {
            l.add(
                &format!("f{i}.txt"),
                PathBuf::from(format!("/s/f{i}.txt")),
                1,
                SystemTime::UNIX_EPOCH,
                None,
            )
        };
        let first: Vec<u32> = (0..40).map(|i| add(&mut l, i)).collect();
        for &i in first.iter().step_by(3) {
            l.set_fth(i, fth(i));
        }
        // Freed slots taken by later (higher) indexes: slot order is no
        // longer index order.
        for &i in &first[..20] {
            l.remove(i);
        }
        for i in 40..60 {
            let index = add(&mut l, i);
            if i % 2 == 0 {
                l.set_fth(index, fth(index));
            }
        }
        let want: Vec<u32> = l
            .view()
            .files()
            .filter(|f| f.fth.is_some())
            .map(|f| f.index)
            .collect();
        assert_eq!(want.len(), 7 + 10);
        assert_eq!(l.view().indexes_with_fth(), want);
    }

    #[test]
    fn a_path_added_again_replaces_its_old_entry() {
        let mut l = Library::new();
        let old = l.add(
            "song.mp3",
            PathBuf::from("/s/song.mp3"),
            1,
            SystemTime::UNIX_EPOCH,
            Some(Sha1Urn::digest(b"v1")),
        );
        let new = l.add(
            "song.mp3",
            PathBuf::from("/s/song.mp3"),
            2,
            SystemTime::UNIX_EPOCH,
            None,
        );
        assert_ne!(old, new);
        assert_eq!(l.len(), 1);
        assert_eq!(l.index_of(std::path::Path::new("/s/song.mp3")), Some(new));
        assert!(
            l.view().by_sha1(&Sha1Urn::digest(b"v1")).is_none(),
            "old hash gone"
        );
        assert_eq!(l.view().search("song", &[], 10)[0].index, new);
        l.remove(new);
        assert_eq!(l.index_of(std::path::Path::new("/s/song.mp3")), None);
        assert!(l.is_empty());
    }

    #[test]
    fn a_common_word_costs_the_cap_not_the_library() {
        let names: Vec<String> = (0..30_000).map(|i| format!("song {i} mp3")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let l = lib(&refs);
        // The first ten in index order, as a full scan would give.
        let got: Vec<u32> = l
            .view()
            .search("mp3", &[], 10)
            .iter()
            .map(|f| f.index)
            .collect();
        let all: Vec<u32> = {
            let mut v: Vec<u32> = l.view().files().map(|f| f.index).collect();
            v.sort();
            v
        };
        assert_eq!(got, all[..10]);
        // A rare word among common ones is still found, with a URN's match.
        let urn = Sha1Urn::digest(b"song 3 mp3");
        let found: Vec<String> = l
            .view()
            .search("mp3 song 29999", &[urn], 10)
            .iter()
            .map(|f| f.name.to_string())
            .collect();
        assert_eq!(found, ["song 3 mp3", "song 29999 mp3"]);
    }

    #[test]
    fn the_qrp_table_agrees_with_the_index() {
        // Whatever the index finds, the node's QRP table must let through.
        let names_ = [
            "Free Software Song.ogg",
            "ÉTÉ à Paris.flac",
            "goods_list.csv",
        ];
        let l = lib(&names_);
        let mut table = QrpTable::new(1 << 16).unwrap();
        for n in names_ {
            table.insert_text(n);
        }
        for q in ["free", "song free", "ete", "paris", "good", "goods", "goo"] {
            let found = !l.view().search(q, &[], 10).is_empty();
            assert!(found, "{q} found");
            assert!(table.matches_query_text(q), "{q} passes the table");
        }
    }
}
