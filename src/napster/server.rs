//! The async shell of `servent index`: accepts connections, frames what they
//! send, feeds the [`Index`] and carries out its actions. It decides nothing.
//!
//! Tasks: one acceptor (a permit before each accept), one reader and one writer
//! per connection, and the index task that owns the [`Index`]. Readers hand
//! frames to the index task through one bounded channel (a full channel makes
//! every reader wait its turn, in order); the index task hands frames to each
//! writer through a bounded queue and drops a connection whose queue is full
//! rather than wait for it. Accounts are saved at most once a second, written to
//! a temporary file and renamed into place.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::accounts::{Accounts, Secret};
use super::index::{Action, ConnId, Index, IndexConfig, Now, PasswordResult};
use super::operators::{Level, Operators, Record};
use super::wire::{DEFAULT_MAX_FRAME, Frame, FrameError, NapCodec, types};
use bytes::Buf;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_util::codec::Decoder;

/// Name of the accounts file in the data directory.
pub const ACCOUNTS_FILE: &str = "napster-accounts.txt";
/// User levels and muzzles, next to the accounts.
pub const LEVELS_FILE: &str = "napster-levels.txt";
/// Bans, next to the accounts.
pub const BANS_FILE: &str = "napster-bans.txt";

/// Everything `servent index` is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub index: IndexConfig,
    /// Where the accounts file is kept; `None` keeps accounts in memory only.
    pub data_dir: Option<PathBuf>,
    /// Nicks made Elite at start (`--admin`), kept in the levels file.
    pub admins: Vec<String>,
    /// Bans kept at most.
    pub max_bans: usize,
    /// Servers to link to (`HOST:PORT`), kept linked: a link that closes is
    /// tried again after `link_retry`. Linking needs `index.link_password`.
    pub links: Vec<String>,
    pub link_retry: Duration,
    /// Longest message accepted.
    pub max_frame: usize,
    /// Frames queued for one connection before it is dropped as too slow.
    pub queue_frames: usize,
    /// Events queued from all readers to the index task.
    pub event_queue: usize,
    /// How often time is passed to the index.
    pub tick: Duration,
    /// Longest a single write to a client may take.
    pub write_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8888)),
            index: IndexConfig::default(),
            data_dir: None,
            admins: Vec::new(),
            max_bans: 1024,
            links: Vec::new(),
            link_retry: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
            queue_frames: 0,
            event_queue: 4096,
            tick: Duration::from_secs(1),
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot read accounts from {path}: {source}")]
    Accounts { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Operators { path: PathBuf, source: io::Error },
    #[error("--admin {0}: not a valid nick")]
    AdminNick(String),
}

/// A running server.
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    cancel: CancellationToken,
    tracker: TaskTracker,
    counters: tokio::sync::watch::Receiver<Counters>,
}

/// The index's counters, published by its task every tick.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub users: usize,
    pub files: usize,
    pub stats: crate::napster::index::Stats,
}

impl ServerHandle {
    /// The counters as last published (at most a tick old).
    pub fn counters(&self) -> tokio::sync::watch::Receiver<Counters> {
        self.counters.clone()
    }

    /// The task tracker and token the index's tasks run on (an API server
    /// started beside it joins them).
    pub fn tasks(&self) -> (TaskTracker, CancellationToken) {
        (self.tracker.clone(), self.cancel.clone())
    }

    /// Stops every task (the accounts are saved first) and waits for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

enum Event {
    Open {
        id: ConnId,
        ip: Ipv4Addr,
        conn: ConnHandle,
        /// We connected out to a peer server (`--link`).
        link: bool,
    },
    Frame {
        id: ConnId,
        frame: Frame,
    },
    FramingError {
        id: ConnId,
        reason: String,
    },
    Closed {
        id: ConnId,
    },
}

struct ConnHandle {
    tx: mpsc::Sender<Frame>,
    /// Ends the reader (which then drains the socket briefly).
    stop_read: CancellationToken,
    /// Ends the writer at once (slow client, shutdown).
    kill: CancellationToken,
}

/// Loads the accounts file of `data_dir`, if there is one.
fn load_accounts(data_dir: &Option<PathBuf>) -> Result<Accounts, ServerError> {
    let Some(dir) = data_dir else {
        return Ok(Accounts::default());
    };
    let path = dir.join(ACCOUNTS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (accounts, skipped) = Accounts::from_text(&text);
            if skipped > 0 {
                tracing::warn!(path = %path.display(), skipped, "skipped damaged account lines");
            }
            Ok(accounts)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Accounts::default()),
        Err(source) => Err(ServerError::Accounts { path, source }),
    }
}

/// Reads one of the operator files of `data_dir` into `ops` with `load`.
fn load_operator_file(
    dir: &std::path::Path,
    name: &str,
    ops: &mut Operators,
    load: fn(&mut Operators, &str) -> usize,
) -> Result<(), ServerError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let skipped = load(ops, &text);
            if skipped > 0 {
                tracing::warn!(path = %path.display(), skipped, "skipped damaged lines");
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ServerError::Operators { path, source }),
    }
}

/// Loads levels and bans, and makes the `--admin` nicks Elite. Returns
/// whether the files must be written (an admin was added).
fn load_operators(
    config: &ServerConfig,
    accounts: &Accounts,
) -> Result<(Operators, bool), ServerError> {
    let mut ops = Operators::new(config.index.max_accounts, config.max_bans);
    if let Some(dir) = &config.data_dir {
        load_operator_file(dir, LEVELS_FILE, &mut ops, Operators::load_levels)?;
        load_operator_file(dir, BANS_FILE, &mut ops, Operators::load_bans)?;
    }
    let mut changed = false;
    for nick in &config.admins {
        if !super::index::valid_nick(nick.as_bytes(), config.index.max_nick_len) {
            return Err(ServerError::AdminNick(nick.clone()));
        }
        let rec = ops.record(nick);
        if rec.level != Level::Elite {
            let elite = Record {
                level: Level::Elite,
                muzzled: false,
            };
            ops.set(nick, elite)
                .map_err(|_| ServerError::AdminNick(nick.clone()))?;
            changed = true;
        }
        if accounts.get(nick).is_none() {
            tracing::warn!(
                nick,
                "--admin: this nick is not registered yet; it becomes Elite once registered \
                 (register it now: whoever registers it first gets the level)"
            );
        }
    }
    Ok((ops, changed))
}

/// Writes `text` to `dir/name` atomically: a temporary file, synced, then renamed.
fn save_file(dir: &std::path::Path, name: &str, text: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)
}

/// Starts the server; it runs until `cancel` is cancelled or the handle is shut
/// down.
pub async fn start(
    config: ServerConfig,
    cancel: CancellationToken,
) -> Result<ServerHandle, ServerError> {
    let accounts = load_accounts(&config.data_dir)?;
    let (ops, changed) = load_operators(&config, &accounts)?;
    let mut index = Index::new(config.index.clone(), accounts);
    index.set_operators(ops);
    if changed && let Some(dir) = &config.data_dir {
        let ops = index.operators();
        save_file(dir, LEVELS_FILE, &ops.levels_to_text()).map_err(|source| {
            ServerError::Operators {
                path: dir.join(LEVELS_FILE),
                source,
            }
        })?;
    }
    start_with(config, index, cancel).await
}

/// As [`start`], serving an index built beforehand (the bench fills one with a
/// million files without a million messages over sockets). `config.index` is
/// only used for the connection limits; the index keeps its own configuration.
pub async fn start_with(
    mut config: ServerConfig,
    index: Index,
    cancel: CancellationToken,
) -> Result<ServerHandle, ServerError> {
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: config.listen,
                source,
            })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: config.listen,
            source,
        })?;
    if config.queue_frames == 0 {
        // Room for a full search and a full browse answer, twice over.
        let biggest = config.index.max_results.max(config.index.max_browse) as usize;
        config.queue_frames = 2 * biggest + 256;
    }
    let cancel = cancel.child_token();
    let tracker = TaskTracker::new();
    let (events_tx, events_rx) = mpsc::channel(config.event_queue.max(1));
    let permits = Arc::new(Semaphore::new(
        config.index.max_users + config.index.max_unauthenticated,
    ));
    let ids = Arc::new(AtomicU64::new(0));
    for target in &config.links {
        tracker.spawn(link_loop(
            target.clone(),
            config.clone(),
            events_tx.clone(),
            ids.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
    }
    tracker.spawn(accept_loop(
        listener,
        config.clone(),
        events_tx,
        permits,
        ids,
        cancel.clone(),
        tracker.clone(),
    ));
    let (counters_tx, counters) = tokio::sync::watch::channel(Counters::default());
    tracker.spawn(index_loop(
        index,
        config,
        events_rx,
        cancel.clone(),
        counters_tx,
    ));
    tracing::info!(%local_addr, "index listening");
    Ok(ServerHandle {
        local_addr,
        cancel,
        tracker,
        counters,
    })
}

fn ipv4_of(addr: SocketAddr) -> Ipv4Addr {
    match addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

async fn accept_loop(
    listener: TcpListener,
    config: ServerConfig,
    events: mpsc::Sender<Event>,
    permits: Arc<Semaphore>,
    ids: Arc<AtomicU64>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(reader) = spawn_connection(
            stream, peer, false, &config, &events, &ids, &cancel, &tracker,
        )
        .await
        else {
            return;
        };
        tracker.spawn(async move {
            let _ = reader.await;
            drop(permit);
        });
    }
}

/// Hands a connection to the index task and starts its reader and writer;
/// returns the reader's task (it ends when the connection does), `None` when
/// the index task is gone.
#[allow(clippy::too_many_arguments)]
async fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    link: bool,
    config: &ServerConfig,
    events: &mpsc::Sender<Event>,
    ids: &AtomicU64,
    cancel: &CancellationToken,
    tracker: &TaskTracker,
) -> Option<tokio::task::JoinHandle<()>> {
    let _ = stream.set_nodelay(true);
    let id = ids.fetch_add(1, Ordering::Relaxed) + 1;
    let (r, w) = stream.into_split();
    let (tx, rx) = mpsc::channel(config.queue_frames);
    let stop_read = cancel.child_token();
    let kill = cancel.child_token();
    let conn = ConnHandle {
        tx,
        stop_read: stop_read.clone(),
        kill: kill.clone(),
    };
    let open = Event::Open {
        id,
        ip: ipv4_of(peer),
        conn,
        link,
    };
    if events.send(open).await.is_err() {
        return None;
    }
    tracing::debug!(id, %peer, link, "connection");
    tracker.spawn(write_loop(w, rx, kill.clone(), config.write_timeout));
    let events = events.clone();
    let max_frame = config.max_frame;
    Some(tracker.spawn(async move {
        read_loop(id, r, events, stop_read, max_frame).await;
    }))
}

/// Keeps a link to `target` up: connects, lets the index speak the link
/// handshake, and after the connection ends (or fails) tries again.
async fn link_loop(
    target: String,
    config: ServerConfig,
    events: mpsc::Sender<Event>,
    ids: Arc<AtomicU64>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&target));
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = connect => r,
        };
        match attempt {
            Ok(Ok(stream)) => {
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
                tracing::info!(%target, "linking");
                let Some(reader) = spawn_connection(
                    stream, peer, true, &config, &events, &ids, &cancel, &tracker,
                )
                .await
                else {
                    return;
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = reader => {}
                }
                tracing::info!(%target, "link closed");
            }
            Ok(Err(e)) => tracing::warn!(%target, error = %e, "cannot link"),
            Err(_) => tracing::warn!(%target, "cannot link: timed out"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(config.link_retry) => {}
        }
    }
}

/// Marks, in a writer's queue, where a server link's zlib stream starts
/// (never a message type the index sends).
const START_COMPRESSION: u16 = u16::MAX;

/// Bytes inflated at a time from a link, so a small input cannot expand
/// without bound before its frames are handed on.
const INFLATE_STEP: usize = 64 * 1024;

/// Inflates some of `raw` into `plain` (at most [`INFLATE_STEP`] bytes out);
/// `Ok(false)` when more input is needed first.
fn inflate_some(z: &mut Decompress, raw: &mut BytesMut, plain: &mut BytesMut) -> io::Result<bool> {
    let mut out = Vec::with_capacity(INFLATE_STEP);
    let before = z.total_in();
    let status = z
        .decompress_vec(&raw[..], &mut out, FlushDecompress::Sync)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let used = (z.total_in() - before) as usize;
    raw.advance(used);
    plain.extend_from_slice(&out);
    if matches!(status, Status::StreamEnd) {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "zlib stream ended",
        ));
    }
    Ok(used > 0 || !out.is_empty())
}

/// Deflates `input` onto `out` and flushes (`Z_SYNC_FLUSH`, as OpenNap does
/// after each batch), so the peer can read everything written so far.
fn deflate_sync(z: &mut Compress, input: &[u8], out: &mut BytesMut) -> io::Result<()> {
    let mut tmp = Vec::with_capacity(input.len() + 1024);
    let mut pos = 0;
    loop {
        let before = z.total_in();
        z.compress_vec(&input[pos..], &mut tmp, FlushCompress::Sync)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        pos += (z.total_in() - before) as usize;
        if pos >= input.len() && tmp.len() < tmp.capacity() {
            break;
        }
        tmp.reserve(input.len() - pos + 1024);
    }
    out.extend_from_slice(&tmp);
    Ok(())
}

async fn read_loop(
    id: ConnId,
    mut r: OwnedReadHalf,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
    max_frame: usize,
) {
    let mut codec = NapCodec::new(max_frame);
    // What was read; on a server link, once its zlib stream began, what is
    // still to inflate into `plain`.
    let mut raw = BytesMut::with_capacity(8192);
    let mut plain = BytesMut::new();
    let mut z: Option<Decompress> = None;
    let mut frames = 0u32;
    loop {
        let src = if z.is_some() { &mut plain } else { &mut raw };
        let event = match codec.decode(src) {
            Ok(Some(frame)) => {
                frames += 1;
                // A server's 10011 (its second message at most) is the last
                // one before its zlib stream, as OpenNap's links go.
                if z.is_none() && frame.ty == types::SERVER_LOGIN_ACK && frames <= 2 {
                    z = Some(crate::wire::zlib_inflater());
                }
                Some(Event::Frame { id, frame })
            }
            Ok(None) => None,
            Err(FrameError::TooLong { ty, len, max }) => Some(Event::FramingError {
                id,
                reason: format!("message too long ({len} bytes, type {ty}; at most {max})"),
            }),
            Err(FrameError::Io(_)) => Some(Event::Closed { id }),
        };
        let event = match event {
            Some(e) => e,
            None => {
                let more = match z.as_mut() {
                    Some(z) if !raw.is_empty() => inflate_some(z, &mut raw, &mut plain),
                    _ => Ok(false),
                };
                match more {
                    Ok(true) => continue,
                    Ok(false) => {
                        let n = tokio::select! {
                            _ = stop.cancelled() => break,
                            n = r.read_buf(&mut raw) => n,
                        };
                        match n {
                            Ok(n) if n > 0 => continue,
                            _ => Event::Closed { id },
                        }
                    }
                    Err(e) => {
                        tracing::info!(id, error = %e, "unreadable link stream");
                        Event::Closed { id }
                    }
                }
            }
        };
        let last = !matches!(event, Event::Frame { .. });
        tokio::select! {
            _ = stop.cancelled() => break,
            r = events.send(event) => if r.is_err() { return },
        }
        if last {
            break;
        }
    }
    // Read and discard for a moment, so the peer gets our last words (an error
    // message) before the socket closes, not a reset.
    let mut scratch = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = r.read(&mut scratch).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    let _ = events.try_send(Event::Closed { id });
}

async fn write_loop(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    kill: CancellationToken,
    write_timeout: Duration,
) {
    let mut buf = BytesMut::with_capacity(8192);
    // On a server link, once its zlib stream began: frames to deflate.
    let mut plain = BytesMut::new();
    let mut z: Option<Compress> = None;
    loop {
        let frame = tokio::select! {
            _ = kill.cancelled() => return,
            f = rx.recv() => f,
        };
        let Some(frame) = frame else { break };
        let mut next = Some(frame);
        while let Some(f) = next.take() {
            if f.ty == START_COMPRESSION {
                if z.is_none() {
                    z = Some(Compress::new(Compression::none(), true));
                }
            } else if z.is_some() {
                f.encode(&mut plain);
            } else {
                f.encode(&mut buf);
            }
            if buf.len() + plain.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if let Some(z) = z.as_mut()
            && !plain.is_empty()
        {
            if deflate_sync(z, &plain, &mut buf).is_err() {
                kill.cancel();
                return;
            }
            plain.clear();
        }
        if buf.is_empty() {
            continue;
        }
        let write = tokio::time::timeout(write_timeout, w.write_all(&buf));
        let ok = tokio::select! {
            _ = kill.cancelled() => return,
            r = write => matches!(r, Ok(Ok(()))),
        };
        if !ok {
            kill.cancel();
            return;
        }
        buf.clear();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), w.shutdown()).await;
}

struct Shell {
    index: Index,
    conns: HashMap<ConnId, ConnHandle>,
    data_dir: Option<PathBuf>,
    accounts_dirty: bool,
    operators_dirty: bool,
    /// Password jobs' results, back to the index task.
    jobs_tx: mpsc::Sender<(ConnId, PasswordResult)>,
    /// Passwords set by an admin (753), hashed, back to the index task.
    set_tx: mpsc::Sender<(String, Secret)>,
    /// Password jobs running at once (each takes a core and 19 MiB).
    job_slots: Arc<Semaphore>,
    /// Frames for a server link that did not fit its queue: a link carries
    /// every remote user's answers, so it may fall behind for a moment
    /// without being dropped; past `link_backlog_max` frames it is.
    link_backlog: HashMap<ConnId, VecDeque<Frame>>,
    /// 65,536 frames, or four per user allowed online if that is more (a
    /// link's first message is every local user's login and file count).
    link_backlog_max: usize,
}

impl Shell {
    fn apply(&mut self, out: &mut Vec<Action>) {
        self.drain_link_backlog();
        self.index.route(out);
        let mut queue: VecDeque<Action> = out.drain(..).collect();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(id, frame) => {
                    let Some(c) = self.conns.get(&id) else {
                        continue;
                    };
                    if let Some(q) = self.link_backlog.get_mut(&id) {
                        q.push_back(frame);
                        if q.len() > self.link_backlog_max {
                            tracing::warn!(id, "server link too far behind, dropping it");
                            self.link_backlog.remove(&id);
                            self.close(id, true);
                            let mut more = Vec::new();
                            self.index.disconnect(id, &mut more);
                            self.index.route(&mut more);
                            queue.extend(more);
                        }
                        continue;
                    }
                    let full = match c.tx.try_send(frame) {
                        Ok(()) => continue,
                        Err(mpsc::error::TrySendError::Full(frame)) if self.index.is_link(id) => {
                            self.link_backlog.entry(id).or_default().push_back(frame);
                            continue;
                        }
                        Err(_) => true,
                    };
                    if full {
                        // Not reading what it asked for: drop it instead of waiting.
                        tracing::info!(id, "output queue full, dropping the connection");
                        self.close(id, true);
                        let mut more = Vec::new();
                        self.index.disconnect(id, &mut more);
                        self.index.route(&mut more);
                        queue.extend(more);
                    }
                }
                Action::CompressLink(id) => {
                    // Through the same queue as the frames, so the stream
                    // starts exactly after what was queued before.
                    queue.push_front(Action::Send(id, Frame::empty(START_COMPRESSION)));
                }
                Action::Close(id) => self.close(id, false),
                Action::SaveAccounts => self.accounts_dirty = true,
                Action::SaveOperators => self.operators_dirty = true,
                job @ (Action::HashPassword { .. } | Action::CheckPassword { .. }) => {
                    let (tx, slots) = (self.jobs_tx.clone(), self.job_slots.clone());
                    tokio::spawn(async move {
                        let Ok(_slot) = slots.acquire_owned().await else {
                            return;
                        };
                        let done = tokio::task::spawn_blocking(move || job.run_password_job());
                        if let Ok(Some(result)) = done.await {
                            let _ = tx.send(result).await;
                        }
                    });
                }
                job @ Action::SetPassword { .. } => {
                    let (tx, slots) = (self.set_tx.clone(), self.job_slots.clone());
                    tokio::spawn(async move {
                        let Ok(_slot) = slots.acquire_owned().await else {
                            return;
                        };
                        let done = tokio::task::spawn_blocking(move || job.run_set_password());
                        if let Ok(Some(result)) = done.await {
                            let _ = tx.send(result).await;
                        }
                    });
                }
            }
        }
    }

    /// Moves what waits for server links into their queues, as far as they
    /// have room.
    fn drain_link_backlog(&mut self) {
        self.link_backlog.retain(|id, q| {
            let Some(c) = self.conns.get(id) else {
                return false;
            };
            while let Some(f) = q.pop_front() {
                match c.tx.try_send(f) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(f)) => {
                        q.push_front(f);
                        return true;
                    }
                    Err(_) => return false,
                }
            }
            false
        });
    }

    /// Forgets a connection: its writer sends what is queued and closes (or,
    /// with `kill`, stops at once), its reader stops.
    fn close(&mut self, id: ConnId, kill: bool) {
        self.link_backlog.remove(&id);
        if let Some(c) = self.conns.remove(&id) {
            c.stop_read.cancel();
            if kill {
                c.kill.cancel();
            }
        }
    }

    async fn save_if_dirty(&mut self) {
        let Some(dir) = self.data_dir.clone() else {
            return;
        };
        let mut files = Vec::new();
        if std::mem::take(&mut self.accounts_dirty) {
            files.push((ACCOUNTS_FILE, self.index.accounts().to_text()));
        }
        if std::mem::take(&mut self.operators_dirty) {
            let ops = self.index.operators();
            files.push((LEVELS_FILE, ops.levels_to_text()));
            files.push((BANS_FILE, ops.bans_to_text()));
        }
        for (name, text) in files {
            let dir = dir.clone();
            let result = tokio::task::spawn_blocking(move || save_file(&dir, name, &text)).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, file = name, "cannot save"),
                Err(e) => tracing::error!(error = %e, file = name, "cannot save"),
            }
        }
    }
}

/// Asks the allocator to hand freed pages back to the system (glibc keeps
/// them otherwise, and the process's RSS stays at its peak after users leave).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn index_loop(
    index: Index,
    config: ServerConfig,
    mut events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
    counters: tokio::sync::watch::Sender<Counters>,
) {
    let (jobs_tx, mut jobs_rx) = mpsc::channel(64);
    let (set_tx, mut set_rx) = mpsc::channel(16);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut shell = Shell {
        index,
        conns: HashMap::new(),
        data_dir: config.data_dir.clone(),
        accounts_dirty: false,
        operators_dirty: false,
        jobs_tx,
        set_tx,
        job_slots: Arc::new(Semaphore::new(cores.max(1))),
        link_backlog: HashMap::new(),
        link_backlog_max: 65_536.max(4 * config.index.max_users),
    };
    let mut ticker = tokio::time::interval(config.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                let now = Now::system();
                match ev {
                    Event::Open { id, ip, conn, link } => {
                        shell.conns.insert(id, conn);
                        shell.index.connect(id, ip, now, &mut out);
                        if link {
                            shell.index.start_link(id, &mut out);
                        }
                    }
                    Event::Frame { id, frame } => shell.index.receive(id, &frame, now, &mut out),
                    Event::FramingError { id, reason } => {
                        tracing::info!(id, %reason, "dropping a connection");
                        shell.index.framing_error(id, &reason, &mut out);
                    }
                    Event::Closed { id } => {
                        shell.index.disconnect(id, &mut out);
                        shell.close(id, false);
                    }
                }
                shell.apply(&mut out);
            }
            Some((id, result)) = jobs_rx.recv() => {
                shell.index.password_done(id, result, Now::system(), &mut out);
                shell.apply(&mut out);
            }
            Some((nick, secret)) = set_rx.recv() => {
                shell.index.password_set(&nick, secret, &mut out);
                shell.apply(&mut out);
            }
            _ = ticker.tick() => {
                shell.index.tick(Now::system(), &mut out);
                shell.apply(&mut out);
                counters.send_replace(Counters {
                    users: shell.index.users_online(),
                    files: shell.index.files_indexed(),
                    stats: shell.index.stats().clone(),
                });
                shell.save_if_dirty().await;
                if shell.index.take_trimmed() {
                    release_free_memory();
                }
            }
        }
    }
    shell.save_if_dirty().await;
    let s = shell.index.stats();
    tracing::info!(
        users = shell.index.users_online(),
        files = shell.index.files_indexed(),
        searches = s.searches,
        dropped = s.dropped,
        "index stopped"
    );
    for (_, c) in shell.conns.drain() {
        c.stop_read.cancel();
        c.kill.cancel();
    }
}
