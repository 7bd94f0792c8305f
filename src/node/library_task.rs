//! Keeping the library in step with the disk: hashing in the background with a
//! persistent cache, and rescanning the shares now and then to notice files added,
//! changed or removed while the node runs.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::library::{Library, Served};
use crate::share::{self, FoundFile, HashCache};

use super::engine::{EngineRef, Event};

/// What the task shares with the control API: the share roots (changed at
/// run time, taking effect at the next rescan) and the hashing progress.
#[derive(Debug, Default)]
pub struct LibraryState {
    pub roots: std::sync::Mutex<Vec<PathBuf>>,
    /// Files found and not hashed yet.
    pub pending: std::sync::atomic::AtomicUsize,
}

impl LibraryState {
    /// The share roots now.
    pub fn roots(&self) -> Vec<PathBuf> {
        self.roots.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What the task knows of the shares.
pub struct Shares {
    pub state: Arc<LibraryState>,
    /// The library as the file servers see it: every shared file by path,
    /// with the size and time it was indexed at and its hashes. Rescans are
    /// compared with it and the hash cache is written from it, so no second
    /// copy of every path is kept (the cache read at start-up is dropped once
    /// the library is filled from it: 15 MB at 100,000 files).
    served: Served,
    cache_file: Option<PathBuf>,
    /// Files indexed without a hash yet (or without their FastTrack hash).
    to_hash: Vec<FoundFile>,
}

/// Scans the shares once, before the node starts serving, so that the first
/// queries already see every file (hashes follow in the background).
pub fn initial(roots: &[PathBuf], data_dir: Option<&PathBuf>) -> (Library, Shares) {
    let cache_file = data_dir.map(|d| d.join("sha1-cache.txt"));
    let (found, errors, cache) = share::scan_with_cache(roots, cache_file.as_deref());
    warn_unread(errors);
    let cache = cache.unwrap_or_else(|e| {
        if let Some(f) = &cache_file {
            tracing::warn!(file = %f.display(), error = %e, "cannot read the hash cache");
        }
        HashCache::default()
    });
    let mut library = Library::new();
    let to_hash = share::index_found(found, &cache, &mut library);
    // Everything it held is in the library now.
    drop(cache);
    let shares = Shares {
        state: Arc::new(LibraryState {
            roots: std::sync::Mutex::new(roots.to_vec()),
            pending: Default::default(),
        }),
        served: library.served(),
        cache_file,
        to_hash,
    };
    shares.set_pending();
    tracing::info!(
        files = library.len(),
        to_hash = shares.to_hash.len(),
        "library scanned"
    );
    (library, shares)
}

impl Shares {
    fn set_pending(&self) {
        self.state
            .pending
            .store(self.to_hash.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

/// Hands the allocator's free pages back to the system once the library is
/// settled (after start-up, and after each rescan with its hashing). glibc
/// returns only the top of its heap by itself; what the scan, the hash cache's
/// text and the hashing freed below what stays would stay resident for as
/// long as the node runs. 100,000 files, warm hash cache: 59 MB resident after
/// start-up without it, 47 MB with it.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own free
    // lists, under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The files under `roots` that `served` does not hold at their size and
/// time (new, or changed since), with every shared file found noted in
/// `seen`.
fn rescan(roots: &[PathBuf], served: &Served, seen: &Seen) -> Vec<FoundFile> {
    let (found, errors) =
        share::scan_keeping(roots, &|path, size, mtime| match served.on_disk(path) {
            Some(k) => {
                seen.note(k.index);
                !k.is(size, mtime)
            }
            None => true,
        });
    warn_unread(errors);
    found
}

/// The indexes of the shared files a rescan found, one bit each.
#[derive(Default)]
struct Seen(Mutex<Vec<u64>>);

impl Seen {
    fn note(&self, index: u32) {
        let mut bits = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (word, bit) = (index as usize / 64, index % 64);
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        bits[word] |= 1 << bit;
    }

    /// Whether an index was noted, once the noting is over.
    fn into_test(self) -> impl Fn(u32) -> bool {
        let bits = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        move |index| {
            bits.get(index as usize / 64)
                .is_some_and(|w| w & (1 << (index % 64)) != 0)
        }
    }
}

fn warn_unread(errors: Vec<(PathBuf, std::io::Error)>) {
    for (path, e) in errors {
        tracing::warn!(path = %path.display(), error = %e, "cannot read shared entry");
    }
}

/// Hashes what needs hashing, then rescans every `every` (or at once when
/// `rescan_now` is notified), until cancelled.
pub async fn run(
    mut shares: Shares,
    events: EngineRef,
    cancel: CancellationToken,
    every: Duration,
    rescan_now: Arc<Notify>,
) {
    loop {
        if !hash_pending(&mut shares, &events, &cancel).await {
            return;
        }
        // Settled until the next rescan. Off the runtime's threads: the trim
        // walks every free chunk of the heap, however large the library is.
        if tokio::task::spawn_blocking(give_back_memory).await.is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            // A server found a file changed on disk: look now.
            _ = rescan_now.notified() => {}
            _ = cancel.cancelled() => return,
        }
        let roots = shares.state.roots();
        // Each file found is looked up in the library as the scan finds it
        // (the read lock taken per look-up, never while events go to the
        // engine, which takes the write side): the scan keeps only the files
        // new or changed, and notes the shared files it found again.
        let served = shares.served.clone();
        let Ok((found, seen)) = tokio::task::spawn_blocking(move || {
            let seen = Seen::default();
            let found = rescan(&roots, &served, &seen);
            (found, seen)
        })
        .await
        else {
            return;
        };
        // Which files kept are shared already (so changed, as the scan kept
        // them), and the shared files not found again, both before any event
        // changes the library (only this task adds files to it).
        let shared: Vec<bool> = found
            .iter()
            .map(|f| shares.served.on_disk(&f.path).is_some())
            .collect();
        let gone = shares.served.paths_except(seen.into_test());
        let (mut added, mut changed_files) = (0, 0);
        for (f, changed) in found.into_iter().zip(shared) {
            if changed {
                changed_files += 1;
            } else {
                added += 1;
            }
            // Changed on disk: its old hash must never be offered again.
            if changed
                && !events.send(Event::Removed {
                    path: f.path.clone(),
                })
            {
                return;
            }
            shares.to_hash.push(f.clone());
            if !events.send(Event::Added {
                name: f.name().to_string(),
                path: f.path,
                size: f.size,
                mtime: f.mtime,
                urn: None,
                fth: None,
            }) {
                return;
            }
        }
        let removed = gone.len();
        for path in gone {
            if !events.send(Event::Removed { path }) {
                return;
            }
        }
        if added + changed_files + removed > 0 {
            tracing::info!(added, changed = changed_files, removed, "shares rescanned");
        } else {
            tracing::debug!("shares rescanned, nothing changed");
        }
    }
}

/// Hashes the files waiting for it; false once the node is stopping.
async fn hash_pending(shares: &mut Shares, events: &EngineRef, cancel: &CancellationToken) -> bool {
    if shares.to_hash.is_empty() {
        return true;
    }
    shares.set_pending();
    let todo = std::mem::take(&mut shares.to_hash);
    let mut left = todo.len();
    for file in todo {
        left -= 1;
        let path = file.path.clone();
        let stop = cancel.clone();
        // A file whose SHA-1 is known (from a cache written before the
        // FastTrack hash was kept) gets the FTH alone, which reads only a few
        // blocks of it.
        let known = shares
            .served
            .on_disk(&file.path)
            .filter(|k| k.is(file.size, file.mtime))
            .and_then(|k| k.sha1);
        let size = file.size;
        let hashing = tokio::task::spawn_blocking(move || match known {
            Some(urn) => share::fth_file(&path, size).map(|fth| (urn, fth)),
            None => share::hash_file_both_until(&path, size, || stop.is_cancelled()),
        });
        match hashing.await {
            Ok(Ok((urn, fth))) => {
                let event = Event::Hashed {
                    path: file.path.clone(),
                    size: file.size,
                    urn,
                    fth,
                };
                if !events.send(event) {
                    return false;
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => return false,
            Ok(Err(e)) => tracing::warn!(path = %file.path.display(), error = %e, "cannot hash"),
            Err(_) => return false,
        }
        shares
            .state
            .pending
            .store(left, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(f) = shares.cache_file.clone() {
        // Every hash is in the library by now (events are handled as they
        // are sent): the cache is what it holds, taken a chunk at a time,
        // written (and synced) off the runtime's threads. A file the engine
        // adds or removes meanwhile may be left out or kept until the next
        // write: the cache is a hint, each entry checked against the file's
        // size and time when read.
        let served = shares.served.clone();
        let write = move || {
            let mut next = Some(0);
            let written = share::write_cache_lines(&f, |out| {
                if let Some(from) = next {
                    next = served.on_disk_from(from, |path, k| {
                        if let Some(urn) = &k.sha1 {
                            share::cache_line(out, path, k.size, k.mtime, urn, k.fth.as_ref());
                        }
                    });
                }
                next.is_some()
            });
            if let Err(e) = written {
                tracing::warn!(file = %f.display(), error = %e, "cannot save the hash cache");
            }
        };
        if tokio::task::spawn_blocking(write).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_indexes_are_told_from_the_rest() {
        let seen = Seen::default();
        let noted = [0, 63, 64, 1000, 99_999];
        for i in noted {
            seen.note(i);
        }
        seen.note(64);
        let has = seen.into_test();
        for i in 0..101_000 {
            assert_eq!(has(i), noted.contains(&i), "{i}");
        }
        assert!(!has(u32::MAX));
    }
}
