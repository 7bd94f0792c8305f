//! The disk side of sharing: finding the files under the share roots, hashing them,
//! and remembering hashes between runs.
//!
//! Rules: directories are walked recursively; hidden entries (name starting with
//! `.`, or lying under such a directory once links are resolved) are skipped; a
//! symbolic link is followed only when its target lies inside
//! the same share root (after resolving every link), so a link can never expose a
//! file outside what the user shared; a directory reached twice (through links) is
//! walked once.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha1::{Digest, Sha1};

use crate::fasttrack::hash::{self as fthash, Fth, FthHasher};
use crate::wire::huge::Sha1Urn;

/// A regular file found under a share root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundFile {
    /// The file's canonical path (links resolved).
    pub path: PathBuf,
    /// The name to share it under: the last component of the path it was found at.
    pub name: String,
    pub size: u64,
    pub mtime: SystemTime,
}

/// Finds every shareable file under `roots`. Unreadable entries are skipped and
/// reported in the second list, so one bad directory does not stop a scan.
pub fn scan(roots: &[PathBuf]) -> (Vec<FoundFile>, Vec<(PathBuf, io::Error)>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut seen_dirs = HashSet::new();
    for root in roots {
        let root = match fs::canonicalize(root) {
            Ok(r) => r,
            Err(e) => {
                errors.push((root.clone(), e));
                continue;
            }
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            if !seen_dirs.insert(dir.clone()) {
                continue;
            }
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    errors.push((dir, e));
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        errors.push((dir.clone(), e));
                        continue;
                    }
                };
                let name = entry.file_name();
                let Some(name) = name.to_str() else {
                    // Names that are not UTF-8 cannot be offered in hits faithfully.
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                // The directory is canonical and inside the root, so an entry
                // that is no link is too, at `dir/name`: its type comes with
                // the directory listing, and only a file needs one `stat`
                // (size and time). Links take the long way.
                let kind = match entry.file_type() {
                    Ok(k) => k,
                    Err(e) => {
                        errors.push((entry.path(), e));
                        continue;
                    }
                };
                if kind.is_dir() {
                    stack.push(dir.join(name));
                    continue;
                }
                if kind.is_file() {
                    match entry.metadata() {
                        Ok(meta) => found.push(FoundFile {
                            name: name.to_string(),
                            size: meta.len(),
                            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
                            path: dir.join(name),
                        }),
                        Err(e) => errors.push((entry.path(), e)),
                    }
                    continue;
                }
                if !kind.is_symlink() {
                    // Sockets, pipes, devices.
                    continue;
                }
                // Resolve links, and keep only what stays inside this root.
                let real = match fs::canonicalize(entry.path()) {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push((entry.path(), e));
                        continue;
                    }
                };
                // Inside this root, and not hidden on the resolved side either (a
                // visible link to a hidden entry does not expose it).
                let Ok(inner) = real.strip_prefix(&root) else {
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
                        errors.push((real, e));
                        continue;
                    }
                };
                if meta.is_dir() {
                    stack.push(real);
                } else if meta.is_file() {
                    found.push(FoundFile {
                        name: name.to_string(),
                        size: meta.len(),
                        mtime: meta.modified().unwrap_or(UNIX_EPOCH),
                        path: real,
                    });
                }
            }
        }
    }
    // A file reached twice (directly and through a link, or through two
    // links) is found once, under the name it was first found by: the sort
    // is stable and keeps the walk's order among equal paths.
    found.sort_by(|a, b| path_order(&a.path, &b.path));
    found.dedup_by(|later, first| later.path == first.path);
    (found, errors)
}

/// The order of [`Path`]s (component by component), fast for the normal
/// paths a scan finds: there, comparing the bytes with the separator taken
/// as the least byte gives the same order.
#[cfg(unix)]
fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    use std::os::unix::ffi::OsStrExt;
    let (x, y) = (a.as_os_str().as_bytes(), b.as_os_str().as_bytes());
    let key = |c: u8| if c == b'/' { 0 } else { c };
    match x.iter().zip(y).find(|(p, q)| p != q) {
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
    /// Found by the current scans (see [`HashCache::note`]).
    known: bool,
    has_fth: bool,
    urn: [u8; 20],
    fth: [u8; 20],
}

/// Hashes remembered between runs, keyed by path, size and modification time.
///
/// Stored as text, one file per line: `<base32 sha1>[,<hex fth>] <size> <mtime
/// ns> <path>`; the FastTrack hash is optional (caches written before it existed
/// have none: such files get it computed and added later). Lines that do not
/// parse are ignored, so a damaged cache costs rehashing, never a wrong hash: an
/// entry is used only when size and time still match the file.
///
/// A node also keeps here what it knows of every shared file (the size and
/// time it was indexed at, [`HashCache::note`]), so each path is held once
/// for both. The file is read line by line into the table, never whole.
#[derive(Debug, Default)]
pub struct HashCache {
    entries: HashMap<Box<Path>, Cached>,
}

/// What [`HashCache::note`] found about a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noted {
    /// Not known before.
    New,
    /// Known with the same size and time.
    Same,
    /// Known with another size or time: its old hash no longer holds.
    Changed,
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
        let mut reader = BufReader::with_capacity(64 * 1024, f);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            let mut parts = line.splitn(4, ' ');
            let (Some(sha), Some(size), Some(mtime), Some(path)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (sha, fth) = match sha.split_once(',') {
                Some((sha, fth)) => match Fth::from_hex(fth.as_bytes()) {
                    Ok(f) => (sha, Some(f)),
                    Err(_) => continue,
                },
                None => (sha, None),
            };
            let (Ok(urn), Ok(size), Ok(mtime_ns)) = (
                Sha1Urn::from_base32(sha.as_bytes()),
                size.parse(),
                mtime.parse(),
            ) else {
                continue;
            };
            let Some(stamp) = Stamp::new(size, mtime_ns) else {
                continue;
            };
            cache.entries.insert(
                Box::from(Path::new(path)),
                Cached {
                    stamp,
                    has_urn: true,
                    known: false,
                    has_fth: fth.is_some(),
                    urn: urn.0,
                    fth: fth.map(|f| f.0).unwrap_or_default(),
                },
            );
        }
        cache.entries.shrink_to_fit();
        Ok(cache)
    }

    /// Writes the cache atomically: to a temporary file, then renamed into place.
    pub fn save(&self, file: &Path) -> io::Result<()> {
        // A name of this process's own: two processes sharing one data
        // directory must not rename each other's half-written file away.
        let tmp = file.with_extension(format!("tmp.{}", std::process::id()));
        {
            let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
            let mut rows: Vec<_> = self.entries.iter().filter(|(_, c)| c.has_urn).collect();
            rows.sort_by(|a, b| a.0.cmp(b.0));
            for (path, c) in rows {
                let Some(p) = path.to_str() else { continue };
                if p.contains('\n') {
                    continue;
                }
                let urn = Sha1Urn(c.urn);
                let fth = if c.has_fth {
                    format!(",{}", Fth(c.fth).hex())
                } else {
                    String::new()
                };
                let (size, mtime) = (c.stamp.size, c.stamp.mtime_ns());
                writeln!(out, "{}{fth} {size} {mtime} {p}", urn.base32())?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        fs::rename(&tmp, file)
    }

    /// The cached hash of `file`, if it is still valid for its size and time.
    pub fn get(&self, file: &FoundFile) -> Option<Sha1Urn> {
        let c = self.entries.get(file.path.as_path())?;
        (c.has_urn && c.stamp == stamp(file.size, file.mtime)).then_some(Sha1Urn(c.urn))
    }

    /// The cached FastTrack hash of `file`, if it is still valid.
    pub fn get_fth(&self, file: &FoundFile) -> Option<Fth> {
        let c = self.entries.get(file.path.as_path())?;
        (c.has_urn && c.has_fth && c.stamp == stamp(file.size, file.mtime)).then_some(Fth(c.fth))
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
        match self.entries.get_mut(file.path.as_path()) {
            Some(c) => {
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
            None => {
                self.entries.insert(
                    Box::from(file.path.as_path()),
                    Cached {
                        stamp,
                        has_urn: true,
                        known: false,
                        has_fth: fth.is_some(),
                        urn: urn.0,
                        fth: fth.map(|f| f.0).unwrap_or_default(),
                    },
                );
            }
        }
    }

    /// Records that `file` is shared as it is now (size and time), and says
    /// how that compares with what was known of it. A hash cached for another
    /// size or time is dropped.
    pub fn note(&mut self, file: &FoundFile) -> Noted {
        let stamp = stamp(file.size, file.mtime);
        match self.entries.get_mut(file.path.as_path()) {
            Some(c) => {
                let noted = match (c.known, c.stamp == stamp) {
                    (false, _) => Noted::New,
                    (true, true) => Noted::Same,
                    (true, false) => Noted::Changed,
                };
                if c.stamp != stamp {
                    c.stamp = stamp;
                    c.has_urn = false;
                    c.has_fth = false;
                }
                c.known = true;
                noted
            }
            None => {
                self.entries.insert(
                    Box::from(file.path.as_path()),
                    Cached {
                        stamp,
                        has_urn: false,
                        known: true,
                        has_fth: false,
                        urn: [0; 20],
                        fth: [0; 20],
                    },
                );
                Noted::New
            }
        }
    }

    /// Forgets every known path `seen` says is gone from the shares, and
    /// returns them.
    pub fn forget_unseen(&mut self, seen: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        self.entries.retain(|p, c| {
            if c.known && !seen(p) {
                gone.push(p.to_path_buf());
                false
            } else {
                true
            }
        });
        gone
    }

    /// Forgets every entry not noted as shared (files that are gone).
    pub fn retain_known(&mut self) {
        self.entries.retain(|_, c| c.known);
    }

    /// Forgets every path not in `keep` (files that are gone).
    pub fn retain_paths(&mut self, keep: &HashSet<&Path>) {
        self.entries.retain(|p, _| keep.contains(&**p));
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
        let mut names: Vec<_> = found.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["a.txt", "b.txt"],
            "no hidden files, nothing outside"
        );
        let b = found.iter().find(|f| f.name == "b.txt").unwrap();
        assert_eq!(b.size, 2);
        #[cfg(unix)]
        assert_eq!(errors.len(), 1, "only the dangling link: {errors:?}");
        let (none, errors) = scan(&[t.0.join("does-not-exist")]);
        assert!(none.is_empty());
        assert_eq!(errors.len(), 1);
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
        let big = found.iter().find(|f| f.name == "big file.bin").unwrap();
        let old = found.iter().find(|f| f.name == "old.txt").unwrap();
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
    fn paths_with_spaces_round_trip() {
        let t = TempDir::new("spaces");
        write(&t.0.join("share/my song 1.mp3"), b"x");
        let (found, _) = scan(&[t.0.join("share")]);
        let mut cache = HashCache::default();
        cache.insert(&found[0], Sha1Urn::digest(b"x"));
        cache.save(&t.0.join("h")).unwrap();
        let back = HashCache::load(&t.0.join("h")).unwrap();
        assert_eq!(back.get(&found[0]), Some(Sha1Urn::digest(b"x")));
        let keep = HashSet::new();
        let mut c = back;
        c.retain_paths(&keep);
        assert!(c.is_empty());
    }
}
