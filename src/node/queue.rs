//! The node's download queue: downloads handed to a running node (through
//! the control API or `servent get --node`), run a few at a time by
//! [`super::get::download`], and kept in the data directory
//! (`downloads.json`, written atomically: temporary file, sync, rename) so they
//! survive a restart, or a kill, and resume from their `.part` where they were.
//!
//! A download's file name is settled when it is added, so the same `.part`
//! (and its `.part.state`) is found again after a restart; an existing file is
//! never overwritten (the download fails instead).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::get::{self, GetConfig, GetError, SourceSpec, Wanted};
use crate::fasttrack::hash::Fth;
use crate::output::{Download, DownloadState, SourceBytes};
use crate::wire::Guid;
use crate::wire::http::HttpUrl;
use crate::wire::huge::Sha1Urn;

/// Downloads kept in the queue at most (finished ones are dropped first).
pub const MAX_ENTRIES: usize = 1000;
/// The queue's file in the data directory.
pub const FILE: &str = "downloads.json";

/// A source as kept in the queue's file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SavedSource {
    Url {
        url: String,
    },
    Hit {
        addr: SocketAddr,
        index: u32,
        name: String,
        /// 32 hex digits.
        servent: String,
        push: bool,
    },
}

impl SavedSource {
    fn of(s: &SourceSpec) -> SavedSource {
        match s {
            SourceSpec::Url(u) => SavedSource::Url {
                url: format!("http://{}{}", u.authority, u.target),
            },
            SourceSpec::Hit {
                addr,
                index,
                name,
                servent,
                push,
            } => SavedSource::Hit {
                addr: *addr,
                index: *index,
                name: name.clone(),
                servent: servent.to_hex(),
                push: *push,
            },
        }
    }

    fn spec(&self) -> Option<SourceSpec> {
        Some(match self {
            SavedSource::Url { url } => SourceSpec::Url(HttpUrl::parse(url)?),
            SavedSource::Hit {
                addr,
                index,
                name,
                servent,
                push,
            } => SourceSpec::Hit {
                addr: *addr,
                index: *index,
                name: name.clone(),
                servent: Guid::from_hex(servent)?,
                push: *push,
            },
        })
    }
}

/// One download as kept in the queue's file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Saved {
    id: u64,
    name: String,
    urn: Option<String>,
    /// The FTH (hex) the file is checked by when it has no SHA-1 (absent in
    /// files written before there was one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fth: Option<String>,
    size: Option<u64>,
    sources: Vec<SavedSource>,
    /// Where the file goes (its `.part` beside it).
    path: PathBuf,
    /// `queued`, `paused`, `done` or `failed`; a download that was running
    /// is saved as `queued`, so it starts again.
    state: DownloadState,
    error: Option<String>,
    done: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedQueue {
    v: u32,
    next_id: u64,
    downloads: Vec<Saved>,
}

struct Entry {
    saved: Saved,
    record: Download,
    /// Stops it while it runs.
    stop: Option<CancellationToken>,
    /// What to do when its task ends after a stop.
    after_stop: AfterStop,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Pause,
    Remove { delete_part: bool },
}

struct State {
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
}

/// Why a download cannot be added or changed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no such download")]
    NotFound,
    #[error("{0}")]
    Bad(String),
    #[error("the queue is full ({MAX_ENTRIES} downloads)")]
    Full,
}

/// The node's download queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    file: Option<PathBuf>,
    dir: PathBuf,
    max_running: usize,
    config: GetConfig,
    wake: Notify,
    /// File bytes written by finished downloads, and fetched by running ones
    /// as last reported.
    bytes: AtomicU64,
}

impl Queue {
    /// The queue kept in `data_dir` (none: not kept), writing files into `dir`,
    /// running at most `max_running` downloads at once.
    pub fn open(
        data_dir: Option<&Path>,
        dir: PathBuf,
        max_running: usize,
        config: GetConfig,
    ) -> Queue {
        let file = data_dir.map(|d| d.join(FILE));
        let mut state = State {
            next_id: 1,
            entries: BTreeMap::new(),
        };
        if let Some(f) = &file {
            match std::fs::read(f) {
                Ok(bytes) => match serde_json::from_slice::<SavedQueue>(&bytes) {
                    Ok(q) => {
                        state.next_id = q.next_id.max(1);
                        for s in q.downloads.into_iter().take(MAX_ENTRIES) {
                            state.next_id = state.next_id.max(s.id + 1);
                            let record = record_of(&s);
                            state.entries.insert(
                                s.id,
                                Entry {
                                    saved: s,
                                    record,
                                    stop: None,
                                    after_stop: AfterStop::Pause,
                                },
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(file = %f.display(), error = %e, "cannot read the download queue; starting empty")
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "cannot read the download queue")
                }
            }
        }
        Queue {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                file,
                dir,
                max_running: max_running.max(1),
                config,
                wake: Notify::new(),
                bytes: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where downloaded files go.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Downloads at once at most.
    pub fn max_running(&self) -> usize {
        self.inner.max_running
    }

    /// Bytes downloaded by the queue since the start (as last reported).
    pub fn bytes(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Adds a download; returns its id. `name` is the file name in the
    /// download directory (made safe; from the hit, magnet or URL when none).
    pub fn add(&self, wanted: Wanted, name: Option<&str>) -> Result<u64, QueueError> {
        if wanted.sources.is_empty() {
            return Err(QueueError::Bad("no source given".into()));
        }
        let name = name
            .map(str::to_string)
            .or_else(|| wanted.name.clone())
            .or_else(|| wanted.urn.map(|u| u.base32()))
            .or_else(|| wanted.fth.map(|f| f.hex()))
            .ok_or_else(|| QueueError::Bad("the file has no name: give one".into()))?;
        let file = get::safe_file_name(&name)
            .ok_or_else(|| QueueError::Bad(format!("not a usable file name: {name:?}")))?;
        let path = self.inner.dir.join(file);
        let id = {
            let mut st = self.lock();
            if st.entries.len() >= MAX_ENTRIES {
                // Finished ones make room first.
                let old = st
                    .entries
                    .iter()
                    .find(|(_, e)| {
                        matches!(e.saved.state, DownloadState::Done | DownloadState::Failed)
                    })
                    .map(|(id, _)| *id);
                match old {
                    Some(id) => {
                        st.entries.remove(&id);
                    }
                    None => return Err(QueueError::Full),
                }
            }
            if st.entries.values().any(|e| {
                e.saved.path == path
                    && !matches!(e.saved.state, DownloadState::Done | DownloadState::Failed)
            }) {
                return Err(QueueError::Bad(format!(
                    "{} is being downloaded already",
                    path.display()
                )));
            }
            let id = st.next_id;
            st.next_id += 1;
            let saved = Saved {
                id,
                name,
                urn: wanted.urn.map(|u| u.to_string()),
                fth: wanted.fth.map(|f| f.hex()),
                size: wanted.size,
                sources: wanted.sources.iter().map(SavedSource::of).collect(),
                path,
                state: DownloadState::Queued,
                error: None,
                done: 0,
            };
            let record = record_of(&saved);
            st.entries.insert(
                id,
                Entry {
                    saved,
                    record,
                    stop: None,
                    after_stop: AfterStop::Pause,
                },
            );
            id
        };
        self.save();
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Every download, oldest first.
    pub fn list(&self) -> Vec<Download> {
        self.lock()
            .entries
            .values()
            .map(|e| e.record.clone())
            .collect()
    }

    /// One download.
    pub fn get(&self, id: u64) -> Option<Download> {
        self.lock().entries.get(&id).map(|e| e.record.clone())
    }

    /// Stops a download (or keeps a failed one from being retried), keeping
    /// its `.part`, until resumed.
    pub fn pause(&self, id: u64) -> Result<Download, QueueError> {
        let r = {
            let mut st = self.lock();
            let e = st.entries.get_mut(&id).ok_or(QueueError::NotFound)?;
            match e.saved.state {
                DownloadState::Queued
                | DownloadState::Running
                | DownloadState::Failed
                | DownloadState::Interrupted => {
                    if let Some(stop) = &e.stop {
                        e.after_stop = AfterStop::Pause;
                        stop.cancel();
                    }
                    e.saved.state = DownloadState::Paused;
                    e.record.state = DownloadState::Paused;
                }
                DownloadState::Paused => {}
                DownloadState::Done => return Err(QueueError::Bad("the download is done".into())),
            }
            e.record.clone()
        };
        self.save();
        Ok(r)
    }

    /// Queues a paused (or failed) download again.
    pub fn resume(&self, id: u64) -> Result<Download, QueueError> {
        let r = {
            let mut st = self.lock();
            let e = st.entries.get_mut(&id).ok_or(QueueError::NotFound)?;
            match e.saved.state {
                DownloadState::Paused | DownloadState::Failed | DownloadState::Interrupted => {
                    e.saved.state = DownloadState::Queued;
                    e.saved.error = None;
                    e.record.state = DownloadState::Queued;
                    e.record.error = None;
                }
                DownloadState::Queued | DownloadState::Running => {}
                DownloadState::Done => return Err(QueueError::Bad("the download is done".into())),
            }
            e.record.clone()
        };
        self.save();
        self.inner.wake.notify_one();
        Ok(r)
    }

    /// Removes a download from the queue, stopping it. Its `.part` and
    /// `.part.state` are kept (the same download added again resumes from
    /// them) unless `delete_part`. A finished file is never touched.
    pub fn cancel(&self, id: u64, delete_part: bool) -> Result<(), QueueError> {
        let part = {
            let mut st = self.lock();
            let e = st.entries.get_mut(&id).ok_or(QueueError::NotFound)?;
            if let Some(stop) = &e.stop {
                // The task removes it (and the .part) once it has stopped.
                e.after_stop = AfterStop::Remove { delete_part };
                stop.cancel();
                None
            } else {
                let e = st.entries.remove(&id).expect("present");
                (delete_part && e.saved.state != DownloadState::Done).then_some(e.saved.path)
            }
        };
        if let Some(p) = part {
            delete_part_files(&p);
        }
        self.save();
        Ok(())
    }

    /// Writes the queue's file (atomically).
    fn save(&self) {
        let Some(file) = &self.inner.file else { return };
        let q = {
            let st = self.lock();
            SavedQueue {
                v: 1,
                next_id: st.next_id,
                downloads: st
                    .entries
                    .values()
                    .map(|e| {
                        let mut s = e.saved.clone();
                        s.done = e.record.done;
                        if s.state == DownloadState::Running {
                            s.state = DownloadState::Queued;
                        }
                        s
                    })
                    .collect(),
            }
        };
        if let Err(e) = write_atomically(file, &serde_json::to_vec_pretty(&q).expect("serializes"))
        {
            tracing::warn!(file = %file.display(), error = %e, "cannot save the download queue");
        }
    }

    /// Runs queued downloads, `max_running` at a time, until `cancel`; a
    /// download stopped by `cancel` stays queued (and resumes at the next start).
    pub async fn run(self, tracker: TaskTracker, cancel: CancellationToken) {
        if let Err(e) = std::fs::create_dir_all(&self.inner.dir) {
            tracing::warn!(dir = %self.inner.dir.display(), error = %e, "cannot create the download directory");
        }
        loop {
            let starts: Vec<(u64, Wanted, PathBuf, CancellationToken)> = {
                let mut st = self.lock();
                let running = st.entries.values().filter(|e| e.stop.is_some()).count();
                let mut room = self.inner.max_running.saturating_sub(running);
                let mut v = Vec::new();
                for e in st.entries.values_mut() {
                    if room == 0 {
                        break;
                    }
                    if e.saved.state != DownloadState::Queued || e.stop.is_some() {
                        continue;
                    }
                    let stop = cancel.child_token();
                    e.stop = Some(stop.clone());
                    e.after_stop = AfterStop::Pause;
                    e.saved.state = DownloadState::Running;
                    e.record.state = DownloadState::Running;
                    room -= 1;
                    let wanted = Wanted {
                        urn: e
                            .saved
                            .urn
                            .as_deref()
                            .and_then(|u| u.parse::<Sha1Urn>().ok()),
                        fth: e
                            .saved
                            .fth
                            .as_deref()
                            .and_then(|f| Fth::from_hex(f.as_bytes()).ok()),
                        size: e.saved.size,
                        name: Some(e.saved.name.clone()),
                        sources: e
                            .saved
                            .sources
                            .iter()
                            .filter_map(SavedSource::spec)
                            .collect(),
                    };
                    v.push((e.saved.id, wanted, e.saved.path.clone(), stop));
                }
                v
            };
            for (id, wanted, path, stop) in starts {
                let q = self.clone();
                tracker.spawn(async move { q.run_one(id, wanted, path, stop).await });
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = cancel.cancelled() => return,
            }
        }
    }

    async fn run_one(&self, id: u64, wanted: Wanted, path: PathBuf, stop: CancellationToken) {
        let mut last_done = 0u64;
        let mut last_save = std::time::Instant::now();
        let outcome = get::download(
            wanted,
            Some(path.clone()),
            &self.inner.dir,
            None,
            self.inner.config.clone(),
            stop.clone(),
            |p| {
                self.inner
                    .bytes
                    .fetch_add(p.done.saturating_sub(last_done), Ordering::Relaxed);
                last_done = last_done.max(p.done);
                {
                    let mut st = self.lock();
                    if let Some(e) = st.entries.get_mut(&id) {
                        e.record.size = Some(p.size);
                        e.saved.size = Some(p.size);
                        e.record.done = p.done;
                        e.record.bytes_per_sec = p.rate.max(0.0).round() as u64;
                        e.record.sources_active = p.active;
                        e.record.sources_known = p.sources;
                    }
                }
                if last_save.elapsed() >= Duration::from_secs(5) {
                    last_save = std::time::Instant::now();
                    self.save();
                }
            },
        )
        .await;
        let mut delete = None;
        {
            let mut st = self.lock();
            let Some(e) = st.entries.get_mut(&id) else {
                return;
            };
            e.stop = None;
            e.record.bytes_per_sec = 0;
            e.record.sources_active = 0;
            let stopped = stop.is_cancelled();
            match outcome {
                Ok(o) => {
                    e.saved.state = DownloadState::Done;
                    e.saved.urn = o.urn.map(|u| u.to_string());
                    e.saved.fth = o.fth.map(|f| f.hex());
                    e.record.state = DownloadState::Done;
                    e.record.urn = o.urn.map(|u| u.to_string());
                    e.record.fth = o.fth.map(|f| f.hex());
                    e.record.size = Some(o.size);
                    e.record.done = o.size;
                    e.record.sources = o
                        .sources
                        .into_iter()
                        .map(|(source, bytes)| SourceBytes { source, bytes })
                        .collect();
                }
                Err(err) if stopped => match e.after_stop {
                    AfterStop::Pause => {
                        // Paused by request, or the node is stopping: either
                        // way it goes on from its .part later.
                        let state = if e.saved.state == DownloadState::Paused {
                            DownloadState::Paused
                        } else {
                            DownloadState::Queued
                        };
                        e.saved.state = state;
                        e.record.state = state;
                        tracing::debug!(id, error = %err, "download stopped");
                    }
                    AfterStop::Remove { delete_part } => {
                        st.entries.remove(&id);
                        if delete_part {
                            delete = Some(path.clone());
                        }
                    }
                },
                Err(err) => {
                    if matches!(err, GetError::HashMismatch(_)) {
                        e.record.done = 0;
                    }
                    e.saved.state = DownloadState::Failed;
                    e.saved.error = Some(err.to_string());
                    e.record.state = DownloadState::Failed;
                    e.record.error = Some(err.to_string());
                }
            }
        }
        if let Some(p) = delete {
            delete_part_files(&p);
        }
        self.save();
        self.inner.wake.notify_one();
    }
}

fn record_of(s: &Saved) -> Download {
    let mut d = Download::new(Some(s.name.clone()), s.urn.clone(), s.size);
    d.fth = s.fth.clone();
    d.id = Some(s.id);
    d.state = s.state;
    d.path = Some(s.path.display().to_string());
    d.error = s.error.clone();
    d.done = s.done;
    d
}

fn part_files(path: &Path) -> [PathBuf; 2] {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let mut state = part.clone();
    state.push(".state");
    [PathBuf::from(part), PathBuf::from(state)]
}

fn delete_part_files(path: &Path) {
    for f in part_files(path) {
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "cannot delete"),
        }
    }
}

/// Writes `bytes` to `file` through a temporary file, synced, then renamed.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = file.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, file)
}
