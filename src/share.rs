//! The disk side of sharing: finding the files under the share roots, hashing them,
//! and remembering hashes between runs.
//!
//! Rules: directories are walked recursively; hidden entries (name starting with
//! `.`, or lying under such a directory once links are resolved) are skipped; a
//! symbolic link is followed only when its target lies inside
//! the same share root (after resolving every link), so a link can never expose a
//! file outside what the user shared; a directory reached twice (through links) is
//! walked once.

use std::collections::HashMap;
use std::fs;
use std::hash::BuildHasher;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hashbrown::{HashTable, hash_table};
use sha1::{Digest, Sha1};

use crate::core::library::Library;
use crate::fasttrack::hash::{self as fthash, Fth, FthHasher};
use crate::wire::huge::Sha1Urn;

/// A regular file found under a share root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// The file's canonical path (links resolved).
    pub path: PathBuf,
    pub size: u64,
    pub mtime: SystemTime,
    /// The name it was found by where that is not the path's last component
    /// (a link's): most files cost one allocation, their path.
    other_name: Option<Box<str>>,
}

impl FoundFile {
    /// A file at `path` found by the name `name`.
    pub fn new(path: PathBuf, name: &str, size: u64, mtime: SystemTime) -> FoundFile {
        let other_name = (after_last_slash(&path) != name.as_bytes()).then(|| name.into());
        FoundFile {
            path,
            size,
            mtime,
            other_name,
        }
    }

    /// The name to share it under: the last component of the path it was
    /// found at.
    pub fn name(&self) -> &str {
        std::str::from_utf8(self.name_bytes()).unwrap_or_default()
    }

    /// [`FoundFile::name`]'s bytes, found without parsing the whole path
    /// (the scan sorts by them).
    fn name_bytes(&self) -> &[u8] {
        match &self.other_name {
            Some(name) => name.as_bytes(),
            None => after_last_slash(&self.path),
        }
    }
}

/// The bytes of `path` after its last separator: the last component of the
/// paths a scan makes (`dir/name`). (`/` everywhere, and the platform's own
/// where it has another.)
fn after_last_slash(path: &Path) -> &[u8] {
    let path = path.as_os_str().as_encoded_bytes();
    memchr::memrchr2(b'/', std::path::MAIN_SEPARATOR as u8, path).map_or(path, |at| &path[at + 1..])
}

/// Finds every shareable file under `roots`. Unreadable entries are skipped and
/// reported in the second list, so one bad directory does not stop a scan.
///
/// The files come in path order, each once. Directories are read on several
/// threads (the machine's cores, at most [`SCAN_THREADS`]), each listing in
/// name order; they are then put together by one walk, depth first, so the
/// answer does not depend on which thread was faster.
pub fn scan(roots: &[PathBuf]) -> (Vec<FoundFile>, Vec<(PathBuf, io::Error)>) {
    scan_keeping(roots, &|_, _, _| true)
}

/// Whether a scan keeps a file it found, asked with the file's path, size and
/// time as the file is found.
pub type Keep<'a> = dyn Fn(&Path, u64, SystemTime) -> bool + Sync + 'a;

/// [`scan`], keeping only the files `keep` wants, in the same order. A file
/// not kept is never copied out of the directory's listing: a rescan that
/// asks the library about each file as it is found holds only the files that
/// changed, where a whole [`scan`] holds a path for every file at once (and
/// leaves the allocator holding that much for good, on the threads that
/// scanned).
pub fn scan_keeping(
    roots: &[PathBuf],
    keep: &Keep<'_>,
) -> (Vec<FoundFile>, Vec<(PathBuf, io::Error)>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut walk = Walk::default();
    let mut walked = 0;
    let mut linked = false;
    for root in roots {
        let root = match fs::canonicalize(root) {
            Ok(r) => r,
            Err(e) => {
                errors.push((root.clone(), e));
                continue;
            }
        };
        let Some(first) = walk.read(&root, keep) else {
            // Walked already, under an earlier root.
            continue;
        };
        walked += 1;
        linked |= walk.emit(first, &mut found, &mut errors);
    }
    // One root walked without links gives its files in path order, each
    // once, by construction; only several roots, or links, need the sort.
    if walked > 1 || linked {
        return (in_path_order(found), errors);
    }
    debug_assert!(
        found
            .windows(2)
            .all(|w| path_order(&w[0].path, &w[1].path).is_lt())
    );
    (found, errors)
}

/// [`scan`] with the hash cache in `cache_file` read at the same time, on a
/// thread of its own: what a start-up needs, the cache being ready when the
/// files are. No file given, or none there: an empty cache.
pub fn scan_with_cache(
    roots: &[PathBuf],
    cache_file: Option<&Path>,
) -> (
    Vec<FoundFile>,
    Vec<(PathBuf, io::Error)>,
    io::Result<HashCache>,
) {
    std::thread::scope(|s| {
        let cache = cache_file.map(|f| s.spawn(|| HashCache::load(f)));
        let (found, errors) = scan(roots);
        let cache = cache.map_or(Ok(HashCache::default()), |t| {
            t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        (found, errors, cache)
    })
}

/// `found` in path order; a file reached twice (directly and through a link,
/// or through two links) once, under the name it was first found by.
///
/// Sorted as keys: the 8 bytes of each path after the beginning all share
/// (the root's path, usually), taken in path order, and the file's place in
/// the walk; only paths whose keys tie are compared whole. So most of the
/// comparisons are of two numbers, not of two long paths elsewhere in
/// memory.
fn in_path_order(found: Vec<FoundFile>) -> Vec<FoundFile> {
    fn bytes(f: &FoundFile) -> &[u8] {
        f.path.as_os_str().as_encoded_bytes()
    }
    let common = found.first().map_or(0, |first| {
        let first = bytes(first);
        found.iter().fold(first.len(), |n, f| {
            let b = bytes(f);
            first[..n]
                .iter()
                .zip(b)
                .position(|(x, y)| x != y)
                .unwrap_or(n.min(b.len()))
        })
    });
    let key = |f: &FoundFile| {
        // Eight bytes, each as a 16-bit digit: a path's end 0, the separator
        // 1 (the least byte in path order), any other byte 2 or more.
        bytes(f)[common..]
            .iter()
            .chain(std::iter::repeat(&0))
            .take(8)
            .enumerate()
            .fold(0u128, |k, (i, &b)| {
                let digit = if i >= bytes(f).len() - common {
                    0
                } else if b == b'/' {
                    1
                } else {
                    u128::from(b) + 2
                };
                k << 16 | digit
            })
    };
    let mut order: Vec<(u128, u32)> = found
        .iter()
        .enumerate()
        .map(|(i, f)| (key(f), i as u32))
        .collect();
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| path_order(&found[a.1 as usize].path, &found[b.1 as usize].path))
            .then(a.1.cmp(&b.1))
    });
    let mut found: Vec<Option<FoundFile>> = found.into_iter().map(Some).collect();
    let mut sorted: Vec<FoundFile> = Vec::with_capacity(found.len());
    for (_, i) in order {
        let f = found[i as usize].take().expect("each once");
        if sorted.last().is_some_and(|last| last.path == f.path) {
            continue;
        }
        sorted.push(f);
    }
    sorted
}

/// Puts the files a scan found in `library`, each with the hashes `cache`
/// holds for its size and time: what a node does at start-up. Returns the
/// files still to hash (no SHA-1 or no FastTrack hash cached), in the order
/// found.
pub fn index_found(
    found: Vec<FoundFile>,
    cache: &HashCache,
    library: &mut Library,
) -> Vec<FoundFile> {
    let mut to_hash = Vec::new();
    library.reserve(found.len());
    for f in found {
        let (urn, fth) = cache.hashes(&f);
        let hashed = urn.is_some() && fth.is_some();
        library.add_hashed(f.name(), &f.path, f.size, f.mtime, urn, fth);
        if !hashed {
            to_hash.push(f);
        }
    }
    library.shrink_to_fit();
    to_hash
}

/// Threads a scan reads directories on, at most.
pub const SCAN_THREADS: usize = 4;

/// What one directory holds, in name order.
#[derive(Debug, Default)]
struct Listing {
    /// Its files (and files linked from it), by the name they are found by.
    files: Vec<FoundFile>,
    /// Its directories (and directories linked from it), by the name they
    /// are found by: each as how many of `files` come between the directory
    /// before it (or the start) and it, and its id in [`Walk::listings`].
    dirs: Vec<(u32, u32)>,
    errors: Vec<(PathBuf, io::Error)>,
    /// Whether a link was followed from it: a path not of the form
    /// `dir/name`, out of path order.
    linked: bool,
}

/// Every directory the scan has reached, by canonical path, and what each
/// holds once read (taken when put in order).
#[derive(Debug, Default)]
struct Walk {
    ids: HashMap<PathBuf, u32>,
    listings: Vec<Option<Listing>>,
}

/// The directories waiting to be read, shared by the threads reading them.
struct Queue {
    todo: Vec<(u32, PathBuf)>,
    /// Threads reading a directory now (which may add more).
    busy: usize,
    ids: HashMap<PathBuf, u32>,
    next: u32,
}

impl Walk {
    /// Reads every directory reachable from `root` not reached before; the
    /// root's id, unless it was.
    fn read(&mut self, root: &Path, keep: &Keep<'_>) -> Option<u32> {
        if self.ids.contains_key(root) {
            return None;
        }
        let first = self.listings.len() as u32;
        self.ids.insert(root.to_path_buf(), first);
        let queue = std::sync::Mutex::new(Queue {
            todo: vec![(first, root.to_path_buf())],
            busy: 0,
            ids: std::mem::take(&mut self.ids),
            next: first + 1,
        });
        let wake = std::sync::Condvar::new();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, SCAN_THREADS);
        let read = || {
            let mut done = Vec::new();
            loop {
                let (id, dir) = {
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if let Some(next) = q.todo.pop() {
                            q.busy += 1;
                            break next;
                        }
                        if q.busy == 0 {
                            wake.notify_all();
                            return done;
                        }
                        q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let (listing, subdirs) = list_dir(root, &dir, keep);
                let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                let mut ids = Vec::with_capacity(subdirs.len());
                for (before, d) in subdirs {
                    let id = match q.ids.get(&d) {
                        Some(&id) => id,
                        None => {
                            let id = q.next;
                            q.next += 1;
                            q.ids.insert(d.clone(), id);
                            q.todo.push((id, d));
                            wake.notify_one();
                            id
                        }
                    };
                    ids.push((before, id));
                }
                q.busy -= 1;
                if q.busy == 0 && q.todo.is_empty() {
                    wake.notify_all();
                }
                drop(q);
                done.push((
                    id,
                    Listing {
                        dirs: ids,
                        ..listing
                    },
                ));
            }
        };
        let done: Vec<Vec<(u32, Listing)>> = std::thread::scope(|s| {
            let others: Vec<_> = (1..threads).map(|_| s.spawn(read)).collect();
            let mut all = vec![read()];
            all.extend(others.into_iter().filter_map(|t| t.join().ok()));
            all
        });
        let q = queue.into_inner().unwrap_or_else(|e| e.into_inner());
        self.ids = q.ids;
        self.listings.resize_with(q.next as usize, || None);
        for (id, listing) in done.into_iter().flatten() {
            self.listings[id as usize] = Some(listing);
        }
        Some(first)
    }

    /// Puts the files of `first` and of every directory below it not put
    /// before into `found`, depth first, each directory's entries in name
    /// order: so the paths come in path order, unless a link was followed
    /// (returns whether one was).
    fn emit(
        &mut self,
        first: u32,
        found: &mut Vec<FoundFile>,
        errors: &mut Vec<(PathBuf, io::Error)>,
    ) -> bool {
        let mut linked = false;
        /// A directory being put out: its files and directories not yet
        /// put out.
        struct Open {
            files: std::vec::IntoIter<FoundFile>,
            dirs: std::vec::IntoIter<(u32, u32)>,
        }
        let mut open = |id: u32, listings: &mut Vec<Option<Listing>>| {
            // A directory reached twice is walked once, where first reached.
            let listing = listings[id as usize].take()?;
            errors.extend(listing.errors);
            linked |= listing.linked;
            Some(Open {
                files: listing.files.into_iter(),
                dirs: listing.dirs.into_iter(),
            })
        };
        let mut stack: Vec<Open> = open(first, &mut self.listings).into_iter().collect();
        while let Some(top) = stack.last_mut() {
            // The files before the next directory (all, after the last).
            let n = top
                .dirs
                .as_slice()
                .first()
                .map_or(usize::MAX, |d| d.0 as usize);
            found.extend(top.files.by_ref().take(n));
            match top.dirs.next() {
                Some((_, id)) => {
                    if let Some(dir) = open(id, &mut self.listings) {
                        stack.push(dir);
                    }
                }
                None => {
                    stack.pop();
                }
            }
        }
        linked
    }
}

/// `dir.join(name)`, allocated once at its size.
fn child(dir: &Path, name: &str) -> PathBuf {
    let mut p = PathBuf::with_capacity(dir.as_os_str().len() + 1 + name.len());
    p.push(dir);
    p.push(name);
    p
}

/// Lists `dir` (canonical, inside `root`): its shareable files that `keep`
/// wants, and the directories to walk from it, each with how many of the
/// files come between the directory before it (or the start) and it; both in
/// name order.
fn list_dir(root: &Path, dir: &Path, keep: &Keep<'_>) -> (Listing, Vec<(u32, PathBuf)>) {
    let mut listing = Listing::default();
    let mut subdirs: Vec<PathBuf> = Vec::new();
    let mut links = Vec::new();
    // Each file's path is made here (the directory, then the name pushed
    // and popped again), and copied out only if kept.
    let mut path = dir.to_path_buf();
    // The directory is canonical and inside the root, so an entry that is
    // no link is too, at `dir/name`: its type comes with the directory
    // listing, and only a file needs one `stat` (size and time). Links take
    // the long way, below.
    let read = read_entries(dir, |name, entry| match entry {
        Ok(EntryKind::File { size, mtime }) => {
            // A name read from a directory is one component: the pop takes
            // it off again.
            path.push(name);
            if keep(&path, size, mtime) {
                listing.files.push(FoundFile {
                    path: path.clone(),
                    size,
                    mtime,
                    other_name: None,
                });
            }
            path.pop();
        }
        Ok(EntryKind::Dir) => subdirs.push(child(dir, name)),
        Ok(EntryKind::Link) => links.push(name.to_string()),
        // Sockets, pipes, devices.
        Ok(EntryKind::Other) => {}
        Err(e) => listing.errors.push((child(dir, name), e)),
    });
    if let Err(e) = read {
        listing.errors.push((dir.to_path_buf(), e));
    }
    for name in links {
        let path = child(dir, &name);
        // Resolve links, and keep only what stays inside this root.
        let real = match fs::canonicalize(&path) {
            Ok(r) => r,
            Err(e) => {
                listing.errors.push((path, e));
                continue;
            }
        };
        // Inside this root, and not hidden on the resolved side either (a
        // visible link to a hidden entry does not expose it).
        let Ok(inner) = real.strip_prefix(root) else {
            continue;
        };
        if inner
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
        {
            continue;
        }
        let meta = match fs::metadata(&real) {
            Ok(m) => m,
            Err(e) => {
                listing.errors.push((real, e));
                continue;
            }
        };
        listing.linked = true;
        if meta.is_dir() {
            subdirs.push(real);
        } else if meta.is_file() {
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            if keep(&real, meta.len(), mtime) {
                listing
                    .files
                    .push(FoundFile::new(real, &name, meta.len(), mtime));
            }
        }
    }
    // In name order (bytes), which is the order of the paths `dir/name`;
    // each directory after the files whose names are less than its own.
    // (A link's path lies elsewhere: the order it gets here is put right by
    // `in_path_order`.)
    listing
        .files
        .sort_unstable_by(|a, b| a.name_bytes().cmp(b.name_bytes()));
    subdirs.sort_unstable_by(|a, b| after_last_slash(a).cmp(after_last_slash(b)));
    let (mut before, mut placed) = (0, 0);
    let subdirs = subdirs
        .into_iter()
        .map(|d| {
            let name = after_last_slash(&d);
            while listing
                .files
                .get(before)
                .is_some_and(|f| f.name_bytes() < name)
            {
                before += 1;
            }
            let between = before - placed;
            placed = before;
            (between as u32, d)
        })
        .collect();
    (listing, subdirs)
}

/// A directory entry, as far as a scan cares.
enum EntryKind {
    File {
        size: u64,
        mtime: SystemTime,
    },
    Dir,
    Link,
    /// Sockets, pipes, devices.
    Other,
}

/// Calls `each` with every entry of `dir` whose name is UTF-8 (names that
/// are not cannot be offered in hits faithfully) and not hidden: its name,
/// and what it is, a file with its size and time (one `stat`). An error
/// reading the directory stops the reading and is returned.
///
/// On Linux the entries are read into one buffer and each file is looked up
/// beside its directory's descriptor: no allocation per entry, which
/// `fs::read_dir` makes (the name, twice).
#[cfg(target_os = "linux")]
fn read_entries(dir: &Path, mut each: impl FnMut(&str, io::Result<EntryKind>)) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Stat, open, statat};
    // The fields' types differ between targets and rustix's backends.
    #[allow(clippy::unnecessary_cast)]
    let kind = |st: &Stat| match FileType::from_raw_mode(st.st_mode as _) {
        FileType::RegularFile => EntryKind::File {
            size: st.st_size as u64,
            mtime: system_time(st.st_mtime as i64, st.st_mtime_nsec as u64),
        },
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Link,
        _ => EntryKind::Other,
    };
    let fd = open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 16 * 1024];
    let mut entries = RawDir::new(&fd, &mut buf);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let stat = || statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from);
        let found = match entry.file_type() {
            FileType::Directory => Ok(EntryKind::Dir),
            FileType::Symlink => Ok(EntryKind::Link),
            // A file, or a file system that does not say (`DT_UNKNOWN`).
            FileType::RegularFile | FileType::Unknown => stat().map(|st| kind(&st)),
            _ => Ok(EntryKind::Other),
        };
        each(name, found);
    }
    Ok(())
}

/// A time as `stat` gives it (seconds and nanoseconds since the epoch), as
/// `fs::Metadata::modified` gives it.
#[cfg(target_os = "linux")]
fn system_time(secs: i64, nanos: u64) -> SystemTime {
    let nanos = Duration::from_nanos(nanos.min(999_999_999));
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + nanos
    }
}

#[cfg(not(target_os = "linux"))]
fn read_entries(dir: &Path, mut each: impl FnMut(&str, io::Result<EntryKind>)) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let found = entry.file_type().and_then(|t| {
            Ok(if t.is_file() {
                let meta = entry.metadata()?;
                EntryKind::File {
                    size: meta.len(),
                    mtime: meta.modified().unwrap_or(UNIX_EPOCH),
                }
            } else if t.is_dir() {
                EntryKind::Dir
            } else if t.is_symlink() {
                EntryKind::Link
            } else {
                EntryKind::Other
            })
        });
        each(name, found);
    }
    Ok(())
}

/// The order of [`Path`]s (component by component), fast for the normal
/// paths a scan finds: there, comparing the bytes with the separator taken
/// as the least byte gives the same order.
#[cfg(unix)]
fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let (x, y) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
    let key = |c: u8| if c == b'/' { 0 } else { c };
    // Paths of one tree share long beginnings: skip them 16 bytes at a time.
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + 16 <= n && x[i..i + 16] == y[i..i + 16] {
        i += 16;
    }
    match x[i..n].iter().zip(&y[i..n]).find(|(p, q)| p != q) {
        Some((p, q)) => key(*p).cmp(&key(*q)),
        None => x.len().cmp(&y.len()),
    }
}

#[cfg(not(unix))]
fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.cmp(b)
}

/// The SHA-1 of a file's content, read in 64 KiB blocks.
pub fn hash_file(path: &Path) -> io::Result<Sha1Urn> {
    hash_file_until(path, || false)
}

/// As [`hash_file`], giving up with [`io::ErrorKind::Interrupted`] as soon as
/// `stop` returns true (checked before every block), so a large file does not
/// hold up a shutdown.
pub fn hash_file_until(path: &Path, stop: impl Fn() -> bool) -> io::Result<Sha1Urn> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha1::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha1Urn(hasher.finalize().into()))
}

/// The SHA-1 and the FastTrack hash of a file, from one read of its content
/// (64 KiB blocks), giving up with [`io::ErrorKind::Interrupted`] as soon as
/// `stop` returns true. A file that is not `size` bytes long (the size it was
/// found with), or whose length changes while it is read, fails with
/// [`io::ErrorKind::InvalidData`]: hashes are cached for the size and time a
/// file was found with, so they must be of that content (a rescan sees the
/// change and hashes it again).
pub fn hash_file_both_until(
    path: &Path,
    size: u64,
    stop: impl Fn() -> bool,
) -> io::Result<(Sha1Urn, Fth)> {
    let mut f = fs::File::open(path)?;
    if f.metadata()?.len() != size {
        return Err(changed());
    }
    let mut sha = Sha1::new();
    let mut fth = FthHasher::new(size);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        fth.update(&buf[..n]);
    }
    let fth = fth.finish().map_err(|_| changed())?;
    Ok((Sha1Urn(sha.finalize().into()), fth))
}

fn changed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "file changed size since it was found",
    )
}

/// The FastTrack hash alone, for a file whose SHA-1 is known: only the parts
/// the FTH covers are read (the head, a block per power of two of the size, the
/// tail). A file not of length `size` any more fails.
pub fn fth_file(path: &Path, size: u64) -> io::Result<Fth> {
    let mut f = fs::File::open(path)?;
    if f.metadata()?.len() != size {
        return Err(changed());
    }
    fthash::fth_of_reader(&mut io::BufReader::with_capacity(64 * 1024, &mut f), size)
}

/// What a cached hash is valid for: the same path, size and modification time
/// (in nanoseconds since the Unix epoch, as whole seconds and the rest, so an
/// entry needs no 16-byte alignment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Stamp {
    size: u64,
    secs: u64,
    nanos: u32,
}

impl Stamp {
    fn new(size: u64, mtime_ns: u128) -> Option<Stamp> {
        Some(Stamp {
            size,
            secs: u64::try_from(mtime_ns / 1_000_000_000).ok()?,
            nanos: (mtime_ns % 1_000_000_000) as u32,
        })
    }

    fn mtime_ns(&self) -> u128 {
        u128::from(self.secs) * 1_000_000_000 + u128::from(self.nanos)
    }
}

fn stamp(size: u64, mtime: SystemTime) -> Stamp {
    let d = mtime.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    Stamp {
        size,
        secs: d.as_secs(),
        nanos: d.subsec_nanos(),
    }
}

/// One path's entry: the stamp it was last seen or hashed at, and the hash
/// when it is valid for that stamp.
#[derive(Clone, Copy, Debug)]
struct Cached {
    stamp: Stamp,
    has_urn: bool,
    has_fth: bool,
    urn: [u8; 20],
    fth: [u8; 20],
}

impl Cached {
    /// A hashed file's entry, not yet found by a scan.
    fn hashed(stamp: Stamp, urn: Sha1Urn, fth: Option<Fth>) -> Cached {
        Cached {
            stamp,
            has_urn: true,
            has_fth: fth.is_some(),
            urn: urn.0,
            fth: fth.map(|f| f.0).unwrap_or_default(),
        }
    }
}

/// An entry and where its path's bytes are in [`HashCache::paths`].
#[derive(Clone, Copy, Debug)]
struct Entry {
    off: u32,
    len: u32,
    cached: Cached,
}

impl Entry {
    /// Its path's bytes in `arena` ([`HashCache::paths`]).
    fn path<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.off as usize..][..self.len as usize]
    }
}

/// Hashes remembered between runs, keyed by path, size and modification time.
///
/// Stored as text, one file per line: `<base32 sha1>[,<hex fth>] <size> <mtime
/// ns> <path>`; the FastTrack hash is optional (caches written before it existed
/// have none: such files get it computed and added later). Lines that do not
/// parse are ignored, so a damaged cache costs rehashing, never a wrong hash: an
/// entry is used only when size and time still match the file.
///
/// A node reads it at start-up to fill its library and then drops it: the
/// library holds the same (path, size, time, hashes), and the cache file is
/// written from there ([`write_cache_lines`]). The file is read a line at a time
/// into one reused buffer, never whole; the paths are kept back to back in one byte arena, found through a
/// table of entry numbers hashed by the path's bytes.
#[derive(Debug, Default)]
pub struct HashCache {
    /// The paths' bytes (as [`std::ffi::OsStr::as_encoded_bytes`] gives
    /// them), back to back.
    paths: Vec<u8>,
    entries: Vec<Entry>,
    /// Entry numbers, by path.
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_encoded_bytes()
}

fn path_of(bytes: &[u8]) -> &Path {
    // SAFETY: the arena holds only copies of `as_encoded_bytes` output and of
    // UTF-8 text, each whole, which is what `from_encoded_bytes_unchecked`
    // asks for.
    Path::new(unsafe { std::ffi::OsStr::from_encoded_bytes_unchecked(bytes) })
}

/// One line of a cache file (without its end of line), if it parses.
fn parse_line(line: &[u8]) -> Option<(&str, Cached)> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (sha, size, mtime, path) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let (sha, fth) = match sha.iter().position(|&b| b == b',') {
        Some(comma) => (&sha[..comma], Some(Fth::from_hex(&sha[comma + 1..]).ok()?)),
        None => (sha, None),
    };
    let urn = Sha1Urn::from_base32(sha).ok()?;
    let size = std::str::from_utf8(size).ok()?.parse().ok()?;
    let mtime_ns = std::str::from_utf8(mtime).ok()?.parse().ok()?;
    let stamp = Stamp::new(size, mtime_ns)?;
    let path = std::str::from_utf8(path).ok()?;
    Some((path, Cached::hashed(stamp, urn, fth)))
}

/// Appends the cache file's line for one file (path, size, modification
/// time, SHA-1, FastTrack hash) to `out`, as [`HashCache::load`] reads it back;
/// nothing for a path that is not UTF-8 or holds an end of line.
pub fn cache_line(
    out: &mut Vec<u8>,
    path: &Path,
    size: u64,
    mtime: SystemTime,
    urn: &Sha1Urn,
    fth: Option<&Fth>,
) {
    line_of(out, path, &stamp(size, mtime), urn, fth);
}

fn line_of(out: &mut Vec<u8>, path: &Path, stamp: &Stamp, urn: &Sha1Urn, fth: Option<&Fth>) {
    let Some(p) = path.to_str() else { return };
    if p.contains('\n') {
        return;
    }
    out.extend_from_slice(urn.base32().as_bytes());
    if let Some(f) = fth {
        out.push(b',');
        out.extend_from_slice(f.hex().as_bytes());
    }
    // Writing to a Vec cannot fail.
    let _ = writeln!(out, " {} {} {p}", stamp.size, stamp.mtime_ns());
}

/// Writes a hash cache file atomically (a temporary file of this process's
/// own, renamed into place) from lines that `fill` appends to a buffer
/// ([`cache_line`]), one batch per call, until it returns false: for a node
/// whose library holds what a cache would (see `core::library::Served`),
/// which hands its files over a batch at a time rather than all at once.
pub fn write_cache_lines(
    file: &Path,
    mut fill: impl FnMut(&mut Vec<u8>) -> bool,
) -> io::Result<()> {
    // A name of this process's own: two processes sharing one data
    // directory must not rename each other's half-written file away.
    let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
    let written = (|| {
        let mut out = fs::File::create(&tmp)?;
        let mut batch = Vec::new();
        loop {
            batch.clear();
            let more = fill(&mut batch);
            out.write_all(&batch)?;
            if !more {
                break;
            }
        }
        out.sync_all()
    })();
    match written {
        Ok(()) => fs::rename(&tmp, file),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes cache lines in path order.
fn write_cache(file: &Path, mut rows: Vec<(&Path, Stamp, Sha1Urn, Option<Fth>)>) -> io::Result<()> {
    rows.sort_by(|a, b| a.0.cmp(b.0));
    let mut rows = rows.into_iter();
    write_cache_lines(file, |out| {
        for (path, stamp, urn, fth) in rows.by_ref().take(1024) {
            line_of(out, path, &stamp, &urn, fth.as_ref());
        }
        rows.len() > 0
    })
}

impl HashCache {
    /// Loads a cache file; a missing file is an empty cache.
    pub fn load(file: &Path) -> io::Result<HashCache> {
        let f = match fs::File::open(file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashCache::default()),
            Err(e) => return Err(e),
        };
        let mut cache = HashCache::default();
        // About 130 bytes a line: room for the entries from the start.
        let lines = f.metadata().map_or(0, |m| m.len() / 130) as usize;
        cache.entries.reserve(lines.min(1 << 24));
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut line = Vec::with_capacity(512);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let l = line.strip_suffix(b"\n").unwrap_or(&line);
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if let Some((path, cached)) = parse_line(l) {
                // A path listed twice: the later line holds.
                if let Some(c) = cache.find_or_push(Path::new(path), || cached) {
                    *c = cached;
                }
            }
        }
        cache.entries.shrink_to_fit();
        cache.paths.shrink_to_fit();
        Ok(cache)
    }

    fn find(&self, path: &Path) -> Option<u32> {
        let bytes = path_bytes(path);
        self.table
            .find(self.hasher.hash_one(bytes), |&i| {
                self.entries[i as usize].path(&self.paths) == bytes
            })
            .copied()
    }

    fn get_entry(&self, path: &Path) -> Option<&Cached> {
        self.find(path).map(|i| &self.entries[i as usize].cached)
    }

    /// The entry for `path`; or, where there is none, `None` once `new()` is
    /// added for it: one hash of the path and one probe of the table either
    /// way. (Past 4 GiB of paths nothing is added: that file is hashed again.)
    fn find_or_push(&mut self, path: &Path, new: impl FnOnce() -> Cached) -> Option<&mut Cached> {
        let bytes = path_bytes(path);
        let hash = self.hasher.hash_one(bytes);
        let HashCache {
            paths,
            entries,
            table,
            hasher,
        } = self;
        let vacant = match table.entry(
            hash,
            |&i| entries[i as usize].path(paths) == bytes,
            |&j| hasher.hash_one(entries[j as usize].path(paths)),
        ) {
            hash_table::Entry::Occupied(o) => return Some(&mut entries[*o.get() as usize].cached),
            hash_table::Entry::Vacant(v) => v,
        };
        let off = u32::try_from(paths.len()).ok()?;
        let len = u32::try_from(bytes.len()).ok()?;
        off.checked_add(len)?;
        paths.extend_from_slice(bytes);
        vacant.insert(entries.len() as u32);
        entries.push(Entry {
            off,
            len,
            cached: new(),
        });
        None
    }

    /// Writes the cache atomically: to a temporary file, then renamed into place.
    pub fn save(&self, file: &Path) -> io::Result<()> {
        let rows = self
            .entries
            .iter()
            .filter(|e| e.cached.has_urn)
            .map(|e| {
                let c = &e.cached;
                let fth = c.has_fth.then_some(Fth(c.fth));
                (path_of(e.path(&self.paths)), c.stamp, Sha1Urn(c.urn), fth)
            })
            .collect();
        write_cache(file, rows)
    }

    /// The cached hashes of `file` (SHA-1, FastTrack hash), those still
    /// valid for its size and time, from one look-up.
    pub fn hashes(&self, file: &FoundFile) -> (Option<Sha1Urn>, Option<Fth>) {
        match self.get_entry(&file.path) {
            Some(c) if c.has_urn && c.stamp == stamp(file.size, file.mtime) => {
                (Some(Sha1Urn(c.urn)), c.has_fth.then_some(Fth(c.fth)))
            }
            _ => (None, None),
        }
    }

    /// The cached hash of `file`, if it is still valid for its size and time.
    pub fn get(&self, file: &FoundFile) -> Option<Sha1Urn> {
        self.hashes(file).0
    }

    /// The cached FastTrack hash of `file`, if it is still valid.
    pub fn get_fth(&self, file: &FoundFile) -> Option<Fth> {
        self.hashes(file).1
    }

    /// Remembers the SHA-1 of `file` (keeping its FastTrack hash if the entry
    /// is for the same content).
    pub fn insert(&mut self, file: &FoundFile, urn: Sha1Urn) {
        self.put(file, urn, None);
    }

    /// Remembers both hashes of `file`.
    pub fn insert_both(&mut self, file: &FoundFile, urn: Sha1Urn, fth: Fth) {
        self.put(file, urn, Some(fth));
    }

    fn put(&mut self, file: &FoundFile, urn: Sha1Urn, fth: Option<Fth>) {
        let stamp = stamp(file.size, file.mtime);
        let Some(c) = self.find_or_push(&file.path, || Cached::hashed(stamp, urn, fth)) else {
            return;
        };
        let same = c.has_urn && c.stamp == stamp && c.urn == urn.0;
        c.stamp = stamp;
        c.has_urn = true;
        c.urn = urn.0;
        match fth {
            Some(f) => {
                c.has_fth = true;
                c.fth = f.0;
            }
            None => c.has_fth &= same,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Reads exactly `buf.len()` bytes of `f` at offset `at`, without moving a file
/// cursor (so one open file can serve several readers).
#[cfg(unix)]
pub fn read_exact_at(f: &fs::File, buf: &mut [u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(f, buf, at)
}

/// Reads exactly `buf.len()` bytes of `f` at offset `at`.
#[cfg(windows)]
pub fn read_exact_at(f: &fs::File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match f.seek_read(buf, at)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "servent-share-{tag}-{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(p: &Path, content: &[u8]) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn scan_walks_skips_hidden_and_stays_inside_roots() {
        let t = TempDir::new("scan");
        let root = t.0.join("share");
        let outside = t.0.join("private");
        write(&root.join("a.txt"), b"a");
        write(&root.join("sub/deeper/b.txt"), b"bb");
        write(&root.join(".hidden"), b"h");
        write(&root.join(".hiddendir/c.txt"), b"c");
        write(&outside.join("secret.txt"), b"s");
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(&outside, root.join("escape")).unwrap();
            symlink(outside.join("secret.txt"), root.join("secret-link.txt")).unwrap();
            symlink(root.join("sub"), root.join("inside-link")).unwrap();
            symlink(&root, root.join("sub/loop")).unwrap();
            symlink(root.join("missing"), root.join("dangling")).unwrap();
            symlink(root.join(".hidden"), root.join("visible-link")).unwrap();
        }
        let (found, errors) = scan(std::slice::from_ref(&root));
        let mut names: Vec<_> = found.iter().map(|f| f.name()).collect();
        names.sort();
        assert_eq!(
            names,
            ["a.txt", "b.txt"],
            "no hidden files, nothing outside"
        );
        let b = found.iter().find(|f| f.name() == "b.txt").unwrap();
        assert_eq!(b.size, 2);
        #[cfg(unix)]
        assert_eq!(errors.len(), 1, "only the dangling link: {errors:?}");
        let (none, errors) = scan(&[t.0.join("does-not-exist")]);
        assert!(none.is_empty());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn a_scan_gives_path_order_and_the_sizes_and_times_std_gives() {
        // Names around the separator's place in the order (`ab` before
        // `ab c`, `ab-`, `ab/...`), files and directories interleaved, on
        // several levels; times before and after the epoch, with nanoseconds.
        let t = TempDir::new("scan-order");
        let root = t.0.join("share");
        let files = [
            "ab c",
            "ab-",
            "ab/x",
            "ab/x y/z",
            "ab/x-y",
            "ab/w/v",
            "a",
            "a b/c",
            "b",
            "\u{e9}t\u{e9}",
            "Z",
            "10/1",
            "1/10",
            "1 0",
        ];
        for (i, f) in files.iter().enumerate() {
            write(&root.join(f), &vec![b'x'; i]);
        }
        let set = |f: &str, time: SystemTime| {
            let file = fs::File::options().write(true).open(root.join(f)).unwrap();
            file.set_modified(time).unwrap();
        };
        set("a", UNIX_EPOCH - Duration::new(1, 500_000_000));
        set("b", UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        #[cfg(unix)]
        {
            // Neither a name that is not UTF-8 nor a pipe is shared.
            use std::os::unix::ffi::OsStrExt;
            let odd = std::ffi::OsStr::from_bytes(b"bad\xff");
            fs::write(root.join(odd), b"x").unwrap();
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(root.join("pipe"))
                    .status()
                    .is_ok_and(|s| s.success())
            );
        }
        let canon = fs::canonicalize(&root).unwrap();
        let mut want: Vec<FoundFile> = files
            .iter()
            .map(|f| {
                let path = canon.join(f);
                let meta = fs::metadata(&path).unwrap();
                let name = path.file_name().unwrap().to_str().unwrap().to_string();
                FoundFile::new(path, &name, meta.len(), meta.modified().unwrap())
            })
            .collect();
        want.sort_by(|a, b| a.path.cmp(&b.path));
        let (found, errors) = scan(std::slice::from_ref(&root));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(found, want);
        // Links put their paths out of the walk's order: the sort puts them
        // back, each file once, under the name it was reached by first.
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(canon.join("ab/w/v"), root.join("zlink")).unwrap();
            symlink(canon.join("b"), root.join("1/link")).unwrap();
            let (found, _) = scan(std::slice::from_ref(&root));
            for f in &mut want {
                if f.name() == "b" {
                    *f = FoundFile::new(f.path.clone(), "link", f.size, f.mtime);
                }
            }
            assert_eq!(found, want);
        }
        // A scan keeping some of the files gives those, in the same order,
        // each under the same name, having asked about every file with its
        // size and time.
        let asked = std::sync::Mutex::new(Vec::new());
        let (kept, errors) = scan_keeping(std::slice::from_ref(&root), &|path, size, mtime| {
            asked
                .lock()
                .unwrap()
                .push((path.to_path_buf(), size, mtime));
            size % 2 == 0
        });
        assert!(errors.is_empty(), "{errors:?}");
        let even: Vec<_> = want.iter().filter(|f| f.size % 2 == 0).cloned().collect();
        assert!(!even.is_empty() && even.len() < want.len());
        assert_eq!(kept, even);
        let asked = asked.into_inner().unwrap();
        for f in &want {
            assert!(asked.contains(&(f.path.clone(), f.size, f.mtime)), "{f:?}");
        }
    }

    #[test]
    fn a_cache_written_in_batches_reads_back() {
        let t = TempDir::new("cache-batches");
        let file = t.0.join("hashes");
        let at = |i: u32| UNIX_EPOCH + Duration::new(1_700_000_000 + u64::from(i), i * 7);
        let found = |i: u32| {
            let path = t.0.join(format!("d{}/f {i}.txt", i % 3));
            FoundFile::new(path, &format!("f {i}.txt"), u64::from(i), at(i))
        };
        let urn = |i: u32| Sha1Urn::digest(&i.to_be_bytes());
        let fth = |i: u32| (i % 2 == 0).then_some(Fth([i as u8; 20]));
        let (mut next, mut batches) = (0u32, 0);
        write_cache_lines(&file, |out| {
            batches += 1;
            for i in next..(next + 700).min(2000) {
                let f = found(i);
                cache_line(out, &f.path, f.size, f.mtime, &urn(i), fth(i).as_ref());
            }
            // Paths a line cannot hold are left out.
            cache_line(out, Path::new("/a\nb"), 1, at(0), &urn(0), None);
            next += 700;
            next < 2000
        })
        .unwrap();
        assert_eq!(batches, 3);
        let cache = HashCache::load(&file).unwrap();
        assert_eq!(cache.len(), 2000);
        for i in 0..2000 {
            assert_eq!(cache.hashes(&found(i)), (Some(urn(i)), fth(i)), "{i}");
        }
        // A file that cannot be made is an error, and nothing is left behind.
        let gone = t.0.join("no-such-dir/hashes");
        assert!(write_cache_lines(&gone, |_| false).is_err());
        assert_eq!(fs::read_dir(&t.0).unwrap().count(), 1);
    }

    #[test]
    fn hashes_and_cache_survive_a_restart() {
        let t = TempDir::new("cache");
        let f = t.0.join("share/abc.txt");
        write(&f, b"abc");
        let (found, _) = scan(&[t.0.join("share")]);
        let file = &found[0];
        let urn = hash_file(&file.path).unwrap();
        assert_eq!(urn, Sha1Urn::digest(b"abc"));
        let stopped = hash_file_until(&file.path, || true).unwrap_err();
        assert_eq!(stopped.kind(), io::ErrorKind::Interrupted);

        let cache_file = t.0.join("hashes");
        let mut cache = HashCache::load(&cache_file).unwrap();
        assert!(cache.is_empty());
        cache.insert(file, urn);
        cache.save(&cache_file).unwrap();
        let again = HashCache::load(&cache_file).unwrap();
        assert_eq!(again.get(file), Some(urn));
        // Read beside a scan, as at start-up: the same files, the same cache;
        // a cache that cannot be read is an error, the files still found.
        let (also, errors, loaded) = scan_with_cache(&[t.0.join("share")], Some(&cache_file));
        assert_eq!((&also, errors.len()), (&found, 0));
        assert_eq!(loaded.unwrap().get(file), Some(urn));
        let (_, _, none) = scan_with_cache(&[t.0.join("share")], None);
        assert!(none.unwrap().is_empty());
        let (also, _, unreadable) = scan_with_cache(&[t.0.join("share")], Some(&t.0));
        assert!(unreadable.is_err());
        assert_eq!(also, found);

        // A changed file is not matched by its old hash.
        let changed = FoundFile {
            size: file.size + 1,
            ..file.clone()
        };
        assert_eq!(again.get(&changed), None);
        let touched = FoundFile {
            mtime: file.mtime + Duration::from_secs(1),
            ..file.clone()
        };
        assert_eq!(again.get(&touched), None);

        // Damaged lines are skipped, good ones kept.
        let mut text = fs::read_to_string(&cache_file).unwrap();
        text.push_str("garbage line\nAAAA 1 2 /x\n\n");
        fs::write(&cache_file, text).unwrap();
        let damaged = HashCache::load(&cache_file).unwrap();
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged.get(file), Some(urn));
    }

    #[test]
    fn both_hashes_in_one_read_and_in_the_cache() {
        let t = TempDir::new("fth");
        let content: Vec<u8> = (0..700_000u32).map(|i| (i * 7 + i / 300) as u8).collect();
        write(&t.0.join("share/big file.bin"), &content);
        write(&t.0.join("share/old.txt"), b"old");
        let (found, _) = scan(&[t.0.join("share")]);
        let big = found.iter().find(|f| f.name() == "big file.bin").unwrap();
        let old = found.iter().find(|f| f.name() == "old.txt").unwrap();
        let (urn, fth) = hash_file_both_until(&big.path, big.size, || false).unwrap();
        assert_eq!(urn, Sha1Urn::digest(&content));
        assert_eq!(fth, fthash::fth(&content));
        assert_eq!(fth_file(&big.path, big.size).unwrap(), fth);
        assert_eq!(
            fth_file(&big.path, big.size + 1).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let stopped = hash_file_both_until(&big.path, big.size, || true).unwrap_err();
        assert_eq!(stopped.kind(), io::ErrorKind::Interrupted);
        let grown = hash_file_both_until(&big.path, big.size - 1, || false).unwrap_err();
        assert_eq!(grown.kind(), io::ErrorKind::InvalidData);

        // A cache written before the FastTrack hash existed: SHA-1 only.
        let cache_file = t.0.join("hashes");
        let old_urn = Sha1Urn::digest(b"old");
        let mtime_ns = |f: &FoundFile| f.mtime.duration_since(UNIX_EPOCH).unwrap().as_nanos();
        fs::write(
            &cache_file,
            format!(
                "{} {} {} {}\n",
                old_urn.base32(),
                old.size,
                mtime_ns(old),
                old.path.display()
            ),
        )
        .unwrap();
        let mut cache = HashCache::load(&cache_file).unwrap();
        assert_eq!(cache.get(old), Some(old_urn));
        assert_eq!(cache.get_fth(old), None, "to be filled in");
        cache.insert_both(big, urn, fth);
        // Inserting the same SHA-1 again keeps the FTH; another one drops it.
        cache.insert(big, urn);
        assert_eq!(cache.get_fth(big), Some(fth));
        cache.save(&cache_file).unwrap();
        let text = fs::read_to_string(&cache_file).unwrap();
        assert!(
            text.contains(&format!("{},{} ", urn.base32(), fth.hex())),
            "{text}"
        );
        let back = HashCache::load(&cache_file).unwrap();
        assert_eq!(back.get(big), Some(urn));
        assert_eq!(back.get_fth(big), Some(fth));
        assert_eq!((back.get(old), back.get_fth(old)), (Some(old_urn), None));
        // Stale for a changed file.
        let touched = FoundFile {
            mtime: big.mtime + Duration::from_secs(1),
            ..big.clone()
        };
        assert_eq!(back.get_fth(&touched), None);
        let mut other = back;
        other.insert(big, old_urn);
        assert_eq!(other.get_fth(big), None);
        // A damaged FTH field loses the line, never yields a wrong hash.
        let bad = text.replace(&format!(",{}", fth.hex()), ",zz");
        fs::write(&cache_file, bad).unwrap();
        let damaged = HashCache::load(&cache_file).unwrap();
        assert_eq!((damaged.get(big), damaged.len()), (None, 1));
    }

    #[test]
    fn the_fast_path_order_is_the_component_order() {
        let paths = [
            "/a/b",
            "/a/b/c",
            "/a/b-c",
            "/a/bc",
            "/a/b c",
            "/a",
            "/ab",
            "/a/b/c/d",
            "/a/b.c/d",
            "/",
            "/z",
            "/a/\u{e9}",
            "/a/e",
        ];
        for x in paths {
            for y in paths {
                let (x, y) = (Path::new(x), Path::new(y));
                assert_eq!(path_order(x, y), x.cmp(y), "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn the_keyed_sort_is_the_stable_sort() {
        // Paths alike for more than the key's 8 bytes, prefixes of one
        // another, the separator beside the bytes around it, and the same
        // path found twice under different names.
        let parts = [
            "/",
            "a",
            "ab",
            "\u{1}",
            "-",
            "b",
            "\u{e9}",
            "abcdefghij",
            ".",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        for round in 0..50 {
            let found: Vec<FoundFile> = (0..200u64)
                .map(|i| {
                    let mut p = String::from(if round % 2 == 0 { "/root/share" } else { "" });
                    for _ in 0..1 + next(6) {
                        p.push_str(parts[next(parts.len())]);
                    }
                    FoundFile::new(PathBuf::from(p), &format!("n{i}"), i, UNIX_EPOCH)
                })
                .collect();
            let mut want = found.clone();
            want.sort_by(|a, b| path_order(&a.path, &b.path));
            want.dedup_by(|later, first| later.path == first.path);
            assert_eq!(in_path_order(found), want, "round {round}");
        }
    }

    #[test]
    fn the_cache_table_answers_as_a_map_would() {
        // Random inserts (both hashes, or the SHA-1 alone) and look-ups over
        // a few hundred paths, against a `HashMap` of what each path should
        // give; then a save and load, with one path listed a second time
        // (the later line holds).
        let t = TempDir::new("cache-model");
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let file = |i: u64, size: u64| {
            FoundFile::new(
                PathBuf::from(format!("/share/dir{}/file {i}.mp3", i % 7)),
                &format!("file {i}.mp3"),
                size,
                UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            )
        };
        let mut cache = HashCache::default();
        // path number -> (size, urn, fth)
        let mut model: HashMap<u64, (u64, Option<Sha1Urn>, Option<Fth>)> = HashMap::new();
        for step in 0..5_000u64 {
            let i = next(300);
            let size = next(3);
            let f = file(i, size);
            match next(10) {
                0..=3 => {
                    let urn = Sha1Urn::digest(&step.to_le_bytes());
                    let fth = Fth(urn.0);
                    cache.insert_both(&f, urn, fth);
                    model.insert(i, (size, Some(urn), Some(fth)));
                }
                4..=5 => {
                    // The SHA-1 alone keeps the FastTrack hash only for the
                    // same content.
                    let urn = Sha1Urn::digest(&(step % 4).to_le_bytes());
                    cache.insert(&f, urn);
                    let fth = model
                        .get(&i)
                        .filter(|m| m.0 == size && m.1 == Some(urn))
                        .and_then(|m| m.2);
                    model.insert(i, (size, Some(urn), fth));
                }
                _ => {
                    let want = match model.get(&i) {
                        Some(m) if m.0 == size => (m.1, m.2),
                        _ => (None, None),
                    };
                    assert_eq!(cache.hashes(&f), want, "step {step}");
                }
            }
            assert_eq!(cache.len(), model.len(), "step {step}");
        }
        for i in 0..300 {
            for size in 0..3 {
                let f = file(i, size);
                let want = model.get(&i).filter(|m| m.0 == size);
                assert_eq!(cache.get(&f), want.and_then(|m| m.1), "path {i}");
                assert_eq!(cache.get_fth(&f), want.and_then(|m| m.2), "path {i}");
            }
        }
        let saved = t.0.join("hashes");
        cache.save(&saved).unwrap();
        let (&i, &(size, ..)) = model.iter().find(|(_, m)| m.1.is_some()).unwrap();
        let again = Sha1Urn::digest(b"listed again");
        let line = format!(
            "{} {size} {} {}\n",
            again.base32(),
            1_700_000_000u64 * 1_000_000_000,
            file(i, size).path.display()
        );
        let mut text = fs::read_to_string(&saved).unwrap();
        text.push_str(&line);
        fs::write(&saved, text).unwrap();
        let loaded = HashCache::load(&saved).unwrap();
        let hashed = model.values().filter(|m| m.1.is_some()).count();
        assert_eq!(loaded.len(), hashed);
        for (&j, m) in &model {
            let want = if j == i { Some(again) } else { m.1 };
            assert_eq!(loaded.get(&file(j, m.0)), want, "path {j} after load");
        }
    }

    #[test]
    fn paths_with_spaces_round_trip() {
        let t = TempDir::new("spaces");
        write(&t.0.join("share/my song 1.mp3"), b"x");
        let (found, _) = scan(&[t.0.join("share")]);
        let mut cache = HashCache::default();
        cache.insert(&found[0], Sha1Urn::digest(b"x"));
        cache.save(&t.0.join("h")).unwrap();
        let back = HashCache::load(&t.0.join("h")).unwrap();
        assert_eq!(back.get(&found[0]), Some(Sha1Urn::digest(b"x")));
    }
}
