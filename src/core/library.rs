//! The index of shared files: look-ups by keywords, by SHA-1 and by FastTrack
//! hash, no I/O.
//!
//! Keywords are folded exactly as for QRP tables ([`crate::wire::qrp`]: NFKD, marks
//! removed, Unicode lower case, split on anything not alphanumeric), and a file is
//! indexed under the same keywords its QRP table entry gets (words plus their
//! stemming prefixes). So whenever a neighbour's view of our QRP table says a query
//! may match, the index answers it the same way.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::fasttrack::hash::Fth;
use crate::wire::huge::Sha1Urn;
use crate::wire::qrp::{split_keywords, table_keywords};

/// Files the node answers queries for that are not on its disk (the files of
/// its FastTrack users, which it serves by proxy), looked up while the engine
/// decides: implementations must not call back into the engine.
pub trait ExtraFiles: Send + Sync {
    /// Results for the words of a query, at most `max`.
    fn search(&self, text: &str, max: usize) -> Vec<crate::wire::queryhit::HitResult>;
}

/// One shared file.
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

/// What the file servers see of the library: every file by index and by SHA-1.
///
/// The engine task owns the [`Library`] and is its only writer; it keeps this
/// view up to date on every change, one entry at a time. Readers (HTTP uploads,
/// push answers, in other tasks) take the read lock for one map look-up and leave
/// with a clone of the entry; nobody holds it across an `.await`.
#[derive(Clone, Debug, Default)]
pub struct Served {
    inner: Arc<RwLock<ServedMaps>>,
}

#[derive(Debug, Default)]
struct ServedMaps {
    files: HashMap<u32, Arc<SharedFile>>,
    by_sha1: HashMap<Sha1Urn, BTreeSet<u32>>,
    by_fth: HashMap<Fth, BTreeSet<u32>>,
    /// By the FTH's 14-bit file id, for FastTrack's `/<file id>/<name>` form.
    by_file_id: HashMap<u16, BTreeSet<u32>>,
}

impl Served {
    /// The file with this index.
    pub fn get(&self, index: u32) -> Option<Arc<SharedFile>> {
        self.read().files.get(&index).cloned()
    }

    /// A file with this SHA-1.
    pub fn by_sha1(&self, urn: &Sha1Urn) -> Option<Arc<SharedFile>> {
        let maps = self.read();
        let index = maps.by_sha1.get(urn)?.first()?;
        maps.files.get(index).cloned()
    }

    /// A file with this FastTrack hash.
    pub fn by_fth(&self, fth: &Fth) -> Option<Arc<SharedFile>> {
        let maps = self.read();
        let index = maps.by_fth.get(fth)?.first()?;
        maps.files.get(index).cloned()
    }

    /// The file with this FastTrack file id and exactly this name.
    pub fn by_file_id(&self, id: u16, name: &str) -> Option<Arc<SharedFile>> {
        let maps = self.read();
        maps.by_file_id
            .get(&id)?
            .iter()
            .filter_map(|i| maps.files.get(i))
            .find(|f| f.name == name)
            .cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ServedMaps> {
        // A writer cannot panic while holding the lock (plain map updates), but a
        // poisoned lock still holds consistent maps.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ServedMaps> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, file: &SharedFile) {
        let mut maps = self.write();
        if let Some(old) = maps.files.insert(file.index, Arc::new(file.clone())) {
            if let Some(u) = old.sha1 {
                remove_from(&mut maps.by_sha1, &u, file.index);
            }
            if let Some(f) = old.fth {
                remove_from(&mut maps.by_fth, &f, file.index);
                remove_from(&mut maps.by_file_id, &f.file_id(), file.index);
            }
        }
        if let Some(u) = file.sha1 {
            maps.by_sha1.entry(u).or_default().insert(file.index);
        }
        if let Some(f) = file.fth {
            maps.by_fth.entry(f).or_default().insert(file.index);
            maps.by_file_id
                .entry(f.file_id())
                .or_default()
                .insert(file.index);
        }
    }

    fn remove(&self, index: u32) {
        let mut maps = self.write();
        if let Some(old) = maps.files.remove(&index) {
            if let Some(u) = old.sha1 {
                remove_from(&mut maps.by_sha1, &u, index);
            }
            if let Some(f) = old.fth {
                remove_from(&mut maps.by_fth, &f, index);
                remove_from(&mut maps.by_file_id, &f.file_id(), index);
            }
        }
    }
}

/// The shared-file index.
#[derive(Debug, Default)]
pub struct Library {
    files: HashMap<u32, SharedFile>,
    by_keyword: HashMap<String, BTreeSet<u32>>,
    by_sha1: HashMap<Sha1Urn, BTreeSet<u32>>,
    by_fth: HashMap<Fth, BTreeSet<u32>>,
    by_path: HashMap<PathBuf, u32>,
    last_index: u32,
    served: Served,
}

impl Library {
    /// An empty library.
    pub fn new() -> Library {
        Library::default()
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is shared.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Total size of the shared files in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.values().map(|f| f.size).sum()
    }

    /// The view file servers read, kept in step with every change.
    pub fn served(&self) -> Served {
        self.served.clone()
    }

    /// Adds a file, as it was on disk (`size`, `mtime`) when found, and returns its
    /// new index.
    pub fn add(
        &mut self,
        name: &str,
        path: PathBuf,
        size: u64,
        mtime: SystemTime,
        sha1: Option<Sha1Urn>,
    ) -> u32 {
        self.last_index = self.last_index.wrapping_add(1).max(1);
        let index = self.last_index;
        for word in table_keywords(name) {
            self.by_keyword.entry(word).or_default().insert(index);
        }
        if let Some(urn) = sha1 {
            self.by_sha1.entry(urn).or_default().insert(index);
        }
        if let Some(old) = self.by_path.insert(path.clone(), index) {
            // The same path again: the new entry replaces the old one.
            self.remove_entry(old);
        }
        let file = SharedFile {
            index,
            name: name.to_string(),
            path,
            size,
            mtime,
            sha1,
            fth: None,
        };
        self.served.put(&file);
        self.files.insert(index, file);
        index
    }

    /// Adds a file under an index chosen by someone else (another node's file
    /// list), replacing any file with that index. Such files have no path.
    pub fn add_at(&mut self, index: u32, name: &str, size: u64, sha1: Option<Sha1Urn>) {
        self.remove_entry(index);
        for word in table_keywords(name) {
            self.by_keyword.entry(word).or_default().insert(index);
        }
        if let Some(urn) = sha1 {
            self.by_sha1.entry(urn).or_default().insert(index);
        }
        self.files.insert(
            index,
            // Not in the served view: such a file is never ours to serve.
            SharedFile {
                index,
                name: name.to_string(),
                path: PathBuf::new(),
                size,
                mtime: SystemTime::UNIX_EPOCH,
                sha1,
                fth: None,
            },
        );
    }

    /// Records a file's SHA-1 once it has been computed.
    pub fn set_sha1(&mut self, index: u32, urn: Sha1Urn) {
        let Some(file) = self.files.get_mut(&index) else {
            return;
        };
        if let Some(old) = file.sha1.replace(urn) {
            remove_from(&mut self.by_sha1, &old, index);
        }
        self.by_sha1.entry(urn).or_default().insert(index);
        self.served.put(file);
    }

    /// Records a file's FastTrack hash once it has been computed.
    pub fn set_fth(&mut self, index: u32, fth: Fth) {
        let Some(file) = self.files.get_mut(&index) else {
            return;
        };
        if let Some(old) = file.fth.replace(fth) {
            remove_from(&mut self.by_fth, &old, index);
        }
        self.by_fth.entry(fth).or_default().insert(index);
        if !file.path.as_os_str().is_empty() {
            self.served.put(file);
        }
    }

    /// A file with this FastTrack hash, if any is shared.
    pub fn by_fth(&self, fth: &Fth) -> Option<&SharedFile> {
        let index = self.by_fth.get(fth)?.first()?;
        self.files.get(index)
    }

    /// Removes a file; returns it if it was shared.
    pub fn remove(&mut self, index: u32) -> Option<SharedFile> {
        let file = self.remove_entry(index)?;
        if self.by_path.get(&file.path) == Some(&index) {
            self.by_path.remove(&file.path);
        }
        Some(file)
    }

    /// The index of the file at `path`, if it is shared.
    pub fn index_of(&self, path: &std::path::Path) -> Option<u32> {
        self.by_path.get(path).copied()
    }

    fn remove_entry(&mut self, index: u32) -> Option<SharedFile> {
        let file = self.files.remove(&index)?;
        self.served.remove(index);
        for word in table_keywords(&file.name) {
            remove_from(&mut self.by_keyword, &word, index);
        }
        if let Some(urn) = &file.sha1 {
            remove_from(&mut self.by_sha1, urn, index);
        }
        if let Some(fth) = &file.fth {
            remove_from(&mut self.by_fth, fth, index);
        }
        Some(file)
    }

    /// The file with this index.
    pub fn get(&self, index: u32) -> Option<&SharedFile> {
        self.files.get(&index)
    }

    /// A file with this SHA-1, if any is shared.
    pub fn by_sha1(&self, urn: &Sha1Urn) -> Option<&SharedFile> {
        let index = self.by_sha1.get(urn)?.first()?;
        self.files.get(index)
    }

    /// Every file, in index order.
    pub fn files(&self) -> impl Iterator<Item = &SharedFile> {
        let mut v: Vec<_> = self.files.values().collect();
        v.sort_by_key(|f| f.index);
        v.into_iter()
    }

    /// The files a query matches, in index order, at most `max`: those whose name
    /// holds every keyword of `text`, and those whose SHA-1 is one of `urns`. A
    /// text with no keywords (such as the URN-only `\`) matches by URN alone.
    pub fn search(&self, text: &str, urns: &[Sha1Urn], max: usize) -> Vec<&SharedFile> {
        let mut found = BTreeSet::new();
        for urn in urns.iter().take(MAX_URNS) {
            if let Some(set) = self.by_sha1.get(urn) {
                found.extend(set.iter().take(max).copied());
            }
        }
        let words = split_keywords(text);
        if !words.is_empty() {
            let mut sets = Vec::with_capacity(words.len());
            for w in &words {
                match self.by_keyword.get(w) {
                    Some(set) => sets.push(set),
                    None => {
                        sets.clear();
                        break;
                    }
                }
            }
            sets.sort_by_key(|s| s.len());
            if let Some((smallest, rest)) = sets.split_first() {
                // In index order, the rarest keyword's files are checked against
                // the others until `max` match: the work is bounded by the cap
                // (and by MAX_SCAN candidates), not by how many files match, so
                // a flood of queries for a common word costs little each.
                found.extend(
                    smallest
                        .iter()
                        .take(MAX_SCAN)
                        .filter(|i| rest.iter().all(|s| s.contains(i)))
                        .take(max)
                        .copied(),
                );
            }
        }
        found
            .into_iter()
            .take(max)
            .filter_map(|i| self.files.get(&i))
            .collect()
    }
}

/// Files of the rarest keyword a search looks at, at most.
pub const MAX_SCAN: usize = 20_000;
/// URNs of one query looked up, at most.
const MAX_URNS: usize = 8;

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, BTreeSet<u32>>, key: &K, index: u32) {
    if let Some(set) = map.get_mut(key) {
        set.remove(&index);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

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

    fn names(found: Vec<&SharedFile>) -> Vec<&str> {
        found.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn every_keyword_must_match() {
        let l = lib(&[
            "Free Software Song.ogg",
            "free_jazz-live.mp3",
            "Linux Install Guide.pdf",
        ]);
        assert_eq!(
            names(l.search("free", &[], 10)),
            ["Free Software Song.ogg", "free_jazz-live.mp3"]
        );
        assert_eq!(
            names(l.search("FREE song", &[], 10)),
            ["Free Software Song.ogg"]
        );
        assert_eq!(names(l.search("free linux", &[], 10)), Vec::<&str>::new());
        assert_eq!(names(l.search("jazz", &[], 10)), ["free_jazz-live.mp3"]);
        assert_eq!(l.search("free", &[], 1).len(), 1, "capped");
        assert!(l.search("", &[], 10).is_empty());
        assert!(l.search("\\", &[], 10).is_empty());
    }

    #[test]
    fn unicode_case_and_accents_fold() {
        let l = lib(&["ÉTÉ à Paris.flac", "Ｆｕｌｌｗｉｄｔｈ.txt", "Straße.mp3"]);
        assert_eq!(names(l.search("été", &[], 10)), ["ÉTÉ à Paris.flac"]);
        assert_eq!(names(l.search("ete PARIS", &[], 10)), ["ÉTÉ à Paris.flac"]);
        assert_eq!(
            names(l.search("fullwidth", &[], 10)),
            ["Ｆｕｌｌｗｉｄｔｈ.txt"]
        );
        assert_eq!(names(l.search("STRAßE", &[], 10)), ["Straße.mp3"]);
        // Lower-casing, not full case folding: "ß" does not become "ss", because
        // QRP tables are hashed from lower-cased words by every servent, and the
        // index must not find what a neighbour's copy of our table would refuse.
        assert!(l.search("strasse", &[], 10).is_empty());
    }

    #[test]
    fn urns_match_alone_or_beside_the_text() {
        let l = lib(&["a.txt", "b.txt"]);
        let b = Sha1Urn::digest(b"b.txt");
        assert_eq!(names(l.search("\\", &[b], 10)), ["b.txt"]);
        // Text OR URN.
        assert_eq!(names(l.search("a", &[b], 10)), ["a.txt", "b.txt"]);
        assert!(l.search("", &[Sha1Urn::digest(b"zzz")], 10).is_empty());
        assert_eq!(l.by_sha1(&b).unwrap().name, "b.txt");
    }

    #[test]
    fn add_remove_and_rehash() {
        let mut l = lib(&["one.txt", "two.txt"]);
        let two = l.search("two", &[], 10)[0].index;
        assert_eq!(l.remove(two).unwrap().name, "two.txt");
        assert!(l.search("two", &[], 10).is_empty());
        assert!(l.by_sha1(&Sha1Urn::digest(b"two.txt")).is_none());
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
        assert_eq!(l.by_sha1(&urn).unwrap().index, three);
        assert_eq!(l.len(), 2);
        assert_eq!(l.total_size(), 105);
    }

    #[test]
    fn fth_lookups_follow_the_file() {
        let mut l = lib(&["one.txt", "two.txt"]);
        let fth = crate::fasttrack::hash::fth(b"one");
        let one = l.search("one", &[], 10)[0].index;
        assert!(l.by_fth(&fth).is_none());
        l.set_fth(one, fth);
        assert_eq!(l.by_fth(&fth).unwrap().index, one);
        assert_eq!(l.get(one).unwrap().fth, Some(fth));
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
        assert!(l.by_fth(&fth).is_none() && served.by_fth(&fth).is_none());
        assert!(served.by_file_id(fth.file_id(), "one.txt").is_none());
        assert_eq!(served.by_fth(&fth2).unwrap().index, one);
        l.remove(one);
        assert!(l.by_fth(&fth2).is_none() && served.by_fth(&fth2).is_none());
        // Another node's file has no path: never in the served view.
        l.add_at(77, "theirs.txt", 3, None);
        l.set_fth(77, fth);
        assert_eq!(l.by_fth(&fth).unwrap().index, 77);
        assert!(served.by_fth(&fth).is_none());
        assert!(served.get(77).is_none());
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
            l.by_sha1(&Sha1Urn::digest(b"v1")).is_none(),
            "old hash gone"
        );
        assert_eq!(l.search("song", &[], 10)[0].index, new);
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
        let got: Vec<u32> = l.search("mp3", &[], 10).iter().map(|f| f.index).collect();
        let all: Vec<u32> = {
            let mut v: Vec<u32> = l.files().map(|f| f.index).collect();
            v.sort();
            v
        };
        assert_eq!(got, all[..10]);
        // A rare word among common ones is still found, with a URN's match.
        let urn = Sha1Urn::digest(b"song 3 mp3");
        let found: Vec<&str> = l
            .search("mp3 song 29999", &[urn], 10)
            .iter()
            .map(|f| f.name.as_str())
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
            let found = !l.search(q, &[], 10).is_empty();
            assert!(found, "{q} found");
            assert!(table.matches_query_text(q), "{q} passes the table");
        }
    }
}
