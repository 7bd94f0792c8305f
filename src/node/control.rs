//! What the control API (`crate::api`) sees of a running node and can ask it
//! to do, as the records of `crate::output`: status, links, library, hosts,
//! uploads, shares, searches of its own, and its download queue.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::engine::{EngineRef, EngineStats};
use super::http::Uploads;
use super::library_task::LibraryState;
use super::queue::Queue;
use super::search::{Seen, hits_of};
use crate::core::tier::Link;
use crate::output;
use crate::wire::huge::Sha1Urn;
use crate::wire::{Guid, Hops, Message, Query, QueryFlags, QueryHit, Ttl};

/// Searches kept at once (the oldest is dropped for a new one).
pub const MAX_SEARCHES: usize = 32;
/// Hits kept per search.
pub const MAX_HITS: usize = 1000;
/// How long a search takes hits.
pub const SEARCH_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Longest search text.
pub const MAX_QUERY: usize = 256;

/// The node as the control API sees it. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    inner: Arc<Inner>,
}

struct Inner {
    engine: EngineRef,
    stats: watch::Receiver<EngineStats>,
    uploads: Arc<Uploads>,
    library: Arc<LibraryState>,
    queue: Queue,
    started: Instant,
    guid: Guid,
    listen: Option<SocketAddr>,
    firewalled: bool,
    max_uploads: usize,
    searches: Mutex<Searches>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    fasttrack: crate::fasttrack::server::FastTrack,
    webcaches: crate::bootstrap::WebCaches,
}

#[derive(Default)]
struct Searches {
    next_id: u64,
    by_id: BTreeMap<u64, Arc<SearchEntry>>,
}

/// One search of our own.
pub struct SearchEntry {
    pub id: u64,
    pub query: String,
    guid: Guid,
    started: Instant,
    sent_to: usize,
    stop: CancellationToken,
    state: Mutex<SearchState>,
}

struct SearchState {
    hits: Vec<output::Hit>,
    active: bool,
    /// New hits, for the event streams; dropped when the search ends.
    feed: Option<broadcast::Sender<output::Hit>>,
}

/// What a search is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchFor {
    Words(String),
    Urn(Sha1Urn),
}

impl SearchEntry {
    /// The search as a record.
    pub fn record(&self) -> output::Search {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        output::Search {
            id: self.id,
            query: self.query.clone(),
            active: st.active,
            age_secs: self.started.elapsed().as_secs(),
            sent_to: self.sent_to,
            hits: st.hits.len(),
        }
    }

    /// Its hits so far.
    pub fn hits(&self) -> Vec<output::Hit> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hits
            .clone()
    }

    /// Its hits so far, and new ones as they come (none once it has ended).
    pub fn subscribe(&self) -> (Vec<output::Hit>, Option<broadcast::Receiver<output::Hit>>) {
        // Under the state's lock, so no hit falls between the two.
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rx = st.feed.as_ref().map(|f| f.subscribe());
        (st.hits.clone(), rx)
    }
}

pub(super) struct Parts {
    pub engine: EngineRef,
    pub stats: watch::Receiver<EngineStats>,
    pub uploads: Arc<Uploads>,
    pub library: Arc<LibraryState>,
    pub queue: Queue,
    pub guid: Guid,
    pub listen: Option<SocketAddr>,
    pub firewalled: bool,
    pub max_uploads: usize,
    pub tracker: TaskTracker,
    pub cancel: CancellationToken,
    pub fasttrack: crate::fasttrack::server::FastTrack,
    pub webcaches: crate::bootstrap::WebCaches,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn kind_name(link: Link) -> &'static str {
    match link {
        Link::ToUltrapeer => "to_ultrapeer",
        Link::ToLeaf => "leaf",
        Link::Peer => "ultrapeer",
        Link::Flat => "flat",
    }
}

impl Control {
    pub(super) fn new(p: Parts) -> Control {
        Control {
            inner: Arc::new(Inner {
                engine: p.engine,
                stats: p.stats,
                uploads: p.uploads,
                library: p.library,
                queue: p.queue,
                started: Instant::now(),
                guid: p.guid,
                listen: p.listen,
                firewalled: p.firewalled,
                max_uploads: p.max_uploads,
                searches: Mutex::default(),
                tracker: p.tracker,
                cancel: p.cancel,
                fasttrack: p.fasttrack,
                webcaches: p.webcaches,
            }),
        }
    }

    /// The engine's counters as last published.
    pub fn stats(&self) -> EngineStats {
        self.inner.stats.borrow().clone()
    }

    /// The download queue.
    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    /// Gnutella bytes in and out over every link open now and closed.
    fn traffic(&self) -> (u64, u64) {
        let links = self.inner.engine.links();
        let (mut i, mut o) = (0, 0);
        for (_, meta) in &links {
            if let Some(m) = meta {
                i += m.traffic.bytes_in.load(Ordering::Relaxed);
                o += m.traffic.bytes_out.load(Ordering::Relaxed);
            }
        }
        let closed = self.inner.engine.closed_traffic();
        (i + closed.0, o + closed.1)
    }

    /// What the node is doing.
    pub fn status(&self) -> output::Status {
        let s = self.stats();
        let (files, bytes) = self.inner.engine.library(|l| (l.len(), l.total_size()));
        let (gin, gout) = self.traffic();
        let downloads = self.inner.queue.list();
        let count = |st: output::DownloadState| downloads.iter().filter(|d| d.state == st).count();
        output::Status {
            role: if s.ultrapeer { "ultrapeer" } else { "leaf" }.into(),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            guid: self.inner.guid.to_hex(),
            listen: self.inner.listen.map(|a| a.to_string()),
            firewalled: self.inner.firewalled || s.reach.tcp == Some("no"),
            links: output::LinkCounts {
                to_ultrapeers: s.to_ultrapeers,
                leaves: s.leaves,
                mesh: s.mesh_links,
                total: s.connections,
            },
            library: output::LibraryCounts {
                files,
                bytes,
                hashing_pending: self.inner.library.pending.load(Ordering::Relaxed),
            },
            bandwidth: output::Bandwidth {
                gnutella_in: gin,
                gnutella_out: gout,
                upload: self.inner.uploads.bytes_sent.load(Ordering::Relaxed),
                download: self.inner.queue.bytes(),
            },
            uploads: output::SlotCounts {
                active: self.upload_slots_used(),
                slots: self.inner.max_uploads,
            },
            downloads: output::QueueCounts {
                running: count(output::DownloadState::Running),
                queued: count(output::DownloadState::Queued),
                paused: count(output::DownloadState::Paused),
                max_running: self.inner.queue.max_running(),
            },
            hosts: s.hosts,
            reach: output::Reachability {
                tcp: s.reach.tcp.unwrap_or("unknown").into(),
                udp: s.reach.udp.unwrap_or("unknown").into(),
                udp_solicited: s.reach.solicited.unwrap_or("unknown").into(),
                external_ip: s.reach.external.map(|ip| ip.to_string()),
            },
            horizon: {
                let h = s.horizon[s.horizon.len() - 1];
                output::Horizon {
                    hosts: h.hosts,
                    files: h.files,
                    kib: h.kib,
                }
            },
        }
    }

    /// Browses of our files: answered, refused for coming too often from
    /// one address, refused for too many at once.
    pub fn browse_counts(&self) -> (u64, u64, u64) {
        self.inner.uploads.browse.counts()
    }

    /// Upload slots taken now.
    pub fn upload_slots_used(&self) -> usize {
        self.inner
            .max_uploads
            .saturating_sub(self.inner.uploads.slots.available_permits())
    }

    /// Every Gnutella link.
    pub fn peers(&self) -> Vec<output::Peer> {
        let now = Instant::now();
        self.inner
            .engine
            .links()
            .into_iter()
            .map(|(r, meta)| {
                let t = meta.as_ref().map(|m| &m.traffic);
                let get = |f: fn(&super::engine::Traffic) -> u64| t.map_or(0, |t| f(t));
                output::Peer {
                    id: r.conn.0,
                    addr: r.info.remote.to_string(),
                    listen: r.info.remote_listen.map(|a| a.to_string()),
                    user_agent: meta.as_ref().and_then(|m| m.user_agent.clone()),
                    kind: kind_name(r.info.link).into(),
                    inbound: r.info.inbound,
                    age_secs: meta
                        .as_ref()
                        .map_or(0, |m| now.saturating_duration_since(m.opened).as_secs()),
                    msgs_in: get(|t| t.msgs_in.load(Ordering::Relaxed)),
                    msgs_out: get(|t| t.msgs_out.load(Ordering::Relaxed)),
                    bytes_in: get(|t| t.bytes_in.load(Ordering::Relaxed)),
                    bytes_out: get(|t| t.bytes_out.load(Ordering::Relaxed)),
                    drops: r.drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                }
            })
            .collect()
    }

    /// The shared files, in index order, `offset` skipped, at most `limit`.
    pub fn library(&self, offset: usize, limit: usize) -> Vec<output::SharedFile> {
        let mut v: Vec<output::SharedFile> = self.inner.engine.library(|l| {
            l.view()
                .files()
                .map(|f| output::SharedFile {
                    index: f.index,
                    name: f.name.to_string(),
                    path: f.path().display().to_string(),
                    size: f.size,
                    urn: f.sha1.map(|u| u.to_string()),
                })
                .collect()
        });
        v.sort_by_key(|f| f.index);
        v.into_iter().skip(offset).take(limit).collect()
    }

    /// The host cache, most recently heard of first.
    pub fn hosts(&self) -> Vec<output::Host> {
        self.inner.engine.hosts(|h| {
            h.list()
                .into_iter()
                .map(|h| output::Host {
                    addr: h.addr.to_string(),
                    seen: unix(h.seen),
                    ultrapeer: h.ultrapeer,
                    leaf: h.leaf,
                    failures: h.failures,
                })
                .collect()
        })
    }

    /// Uploads in progress.
    pub fn uploads(&self) -> Vec<output::Upload> {
        let active: Vec<_> = self
            .inner
            .uploads
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, u)| (*id, u.clone()))
            .collect();
        let mut active = active;
        active.sort_by_key(|(id, _)| *id);
        active
            .into_iter()
            .map(|(_, u)| output::Upload {
                addr: u.remote.to_string(),
                name: u.file.name.clone(),
                urn: u.file.sha1.map(|u| u.to_string()),
                start: u.start,
                length: u.len,
                sent: u.sent.load(Ordering::Relaxed),
                age_secs: u.started.elapsed().as_secs(),
            })
            .collect()
    }

    /// The shared directories.
    pub fn shares(&self) -> Vec<output::Share> {
        self.inner
            .library
            .roots()
            .into_iter()
            .map(|p| output::Share {
                path: p.display().to_string(),
            })
            .collect()
    }

    /// Shares a directory from the next scan on (started now). Err: it is no
    /// directory, or already shared.
    pub fn add_share(&self, path: PathBuf) -> Result<(), String> {
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{}: not a directory", path.display())),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        {
            let mut roots = self
                .inner
                .library
                .roots
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if roots.contains(&path) {
                return Err(format!("{} is shared already", path.display()));
            }
            if roots.len() >= 256 {
                return Err("256 shared directories at most".into());
            }
            roots.push(path);
        }
        self.rescan();
        Ok(())
    }

    /// Stops sharing a directory; false if it was not shared.
    pub fn remove_share(&self, path: &std::path::Path) -> bool {
        let removed = {
            let mut roots = self
                .inner
                .library
                .roots
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let before = roots.len();
            roots.retain(|r| r != path);
            roots.len() != before
        };
        if removed {
            self.rescan();
        }
        removed
    }

    /// Rescans the shares now.
    pub fn rescan(&self) {
        self.inner.uploads.rescan.notify_one();
    }

    /// Starts a search of our own.
    pub fn search(&self, what: SearchFor) -> Result<Arc<SearchEntry>, String> {
        let (text, query) = match &what {
            SearchFor::Words(w) => {
                let w = w.trim();
                if w.is_empty() || w.len() > MAX_QUERY || w.chars().any(char::is_control) {
                    return Err(format!(
                        "the words must be 1 to {MAX_QUERY} bytes, without control characters"
                    ));
                }
                (w.to_string(), Query::new(QueryFlags::with_bits(0), w))
            }
            SearchFor::Urn(u) => {
                let mut q = Query::new(QueryFlags::with_bits(0), "\\");
                q.ext.items.push(crate::wire::ext::ExtItem::sha1(u));
                (u.to_string(), q)
            }
        };
        let guid = Guid::new_random();
        let mut out = BytesMut::new();
        Message::Query(query)
            .encode_frame(guid, Ttl(7), Hops(0), &mut out)
            .map_err(|e| e.to_string())?;
        let payload = Bytes::from(out).slice(crate::wire::header::HEADER_LEN..);
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        let sent_to = self.inner.engine.search(guid, payload, 7, tx);
        let (feed, _) = broadcast::channel(256);
        let stop = self.inner.cancel.child_token();
        let entry = {
            let mut s = self
                .inner
                .searches
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            s.next_id += 1;
            let entry = Arc::new(SearchEntry {
                id: s.next_id,
                query: text,
                guid,
                started: Instant::now(),
                sent_to,
                stop: stop.clone(),
                state: Mutex::new(SearchState {
                    hits: Vec::new(),
                    active: true,
                    feed: Some(feed),
                }),
            });
            if s.by_id.len() >= MAX_SEARCHES {
                if let Some((_, old)) = s.by_id.pop_first() {
                    old.stop.cancel();
                }
            }
            s.by_id.insert(entry.id, entry.clone());
            entry
        };
        let e = entry.clone();
        let engine = self.inner.engine.clone();
        self.inner.tracker.spawn(async move {
            let deadline = tokio::time::sleep(SEARCH_LIFETIME);
            tokio::pin!(deadline);
            let mut seen = Seen::default();
            loop {
                let payload = tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => break },
                    _ = &mut deadline => break,
                    _ = stop.cancelled() => break,
                };
                let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
                let Ok(hit) = QueryHit::parse(&payload, &mut budget) else {
                    continue;
                };
                let mut st = e.state.lock().unwrap_or_else(|x| x.into_inner());
                for h in hits_of(&hit) {
                    if st.hits.len() >= MAX_HITS {
                        break;
                    }
                    if !seen.first(&h) {
                        continue;
                    }
                    let r = h.record();
                    if let Some(f) = &st.feed {
                        let _ = f.send(r.clone());
                    }
                    st.hits.push(r);
                }
            }
            engine.end_search(e.guid);
            let mut st = e.state.lock().unwrap_or_else(|x| x.into_inner());
            st.active = false;
            st.feed = None;
        });
        Ok(entry)
    }

    /// A search by id.
    pub fn search_by_id(&self, id: u64) -> Option<Arc<SearchEntry>> {
        self.inner
            .searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .get(&id)
            .cloned()
    }

    /// Every search kept.
    pub fn searches(&self) -> Vec<output::Search> {
        let all: Vec<_> = self
            .inner
            .searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .values()
            .cloned()
            .collect();
        all.iter().map(|e| e.record()).collect()
    }

    /// Stops a search and forgets it; false if there was none.
    pub fn stop_search(&self, id: u64) -> bool {
        let e = self
            .inner
            .searches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_id
            .remove(&id);
        match e {
            Some(e) => {
                e.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Messages in and out per kind, over every link.
    pub fn message_types(&self) -> Arc<super::engine::TypeCounts> {
        self.inner.engine.message_types()
    }

    /// The FastTrack supernode.
    pub fn fasttrack(&self) -> &crate::fasttrack::server::FastTrack {
        &self.inner.fasttrack
    }

    /// What the node's HTTP bootstrap has done.
    pub fn webcache_stats(&self) -> crate::core::webcache::ClientStats {
        self.inner.webcaches.stats()
    }

    /// How the engine's counters and the shell's look now, for `/metrics`.
    pub fn metrics_input(&self) -> (EngineStats, usize, usize, HashMap<&'static str, u64>) {
        let s = self.stats();
        let mut extra = HashMap::new();
        let (gin, gout) = self.traffic();
        extra.insert("gnutella_in", gin);
        extra.insert("gnutella_out", gout);
        extra.insert(
            "upload",
            self.inner.uploads.bytes_sent.load(Ordering::Relaxed),
        );
        extra.insert("download", self.inner.queue.bytes());
        let fill = self.inner.engine.table_fill();
        extra.insert("qrp_present", fill.0);
        extra.insert("qrp_slots", fill.1);
        (s, self.upload_slots_used(), self.inner.max_uploads, extra)
    }
}
