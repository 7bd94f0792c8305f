//! The client side: a logged-in session with an index, and the three things
//! `servent napster` does with one: share a directory and serve it, search, and
//! download a file from another user (resuming a partial file).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::transfer::{
    self, Check, Downloaded, Offered, Part, PartState, Timeouts, TransferError, Verified,
};
use super::wire::{
    Fields, Frame, FrameError, Kind, Line, NapCodec, PeerFile, SearchRequest, SearchResult,
    nick_and_file, number, types as t,
};
use crate::share::{self, HashCache};

/// How we log in.
#[derive(Clone, Debug)]
pub struct Login {
    pub nick: String,
    pub password: String,
    /// Our data port; 0 when we cannot accept connections.
    pub data_port: u16,
    /// Link type (0-10); ours is "unknown" unless told.
    pub link: u8,
    pub client_info: String,
}

impl Login {
    /// A login under a made-up nick, for a one-shot search or download.
    pub fn anonymous(data_port: u16) -> Login {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Login {
            nick: format!("servent_{}", &id[..8]),
            password: id[8..24].to_string(),
            data_port,
            link: 0,
            client_info: client_info(),
        }
    }
}

/// The client-info string we send.
pub fn client_info() -> String {
    format!("servent {}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: std::io::Error,
    },
    #[error("the server refused the login: {0}")]
    Refused(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Framing(#[from] FrameError),
    #[error("the server says: {0}")]
    Server(String),
    #[error("{nick} is not online")]
    Offline { nick: String },
    #[error("{nick} does not share {file:?}")]
    NotShared { nick: String, file: String },
    #[error("{nick} did not accept the download of {file:?}")]
    NotAccepted { nick: String, file: String },
    #[error("both sides are firewalled: no transfer is possible")]
    BothFirewalled,
    #[error("cannot share {path}: {reason}")]
    Share { path: PathBuf, reason: String },
    #[error("{0}")]
    Transfer(#[from] TransferError),
    #[error("{0}")]
    Invalid(String),
}

/// A logged-in connection to an index.
pub struct Session {
    reader: FramedRead<OwnedReadHalf, NapCodec>,
    writer: OwnedWriteHalf,
    out: BytesMut,
    pub nick: String,
    /// The address the login ack gave us.
    pub email: String,
    pub motd: Vec<String>,
    /// The `214` stats after login: users, files, gigabytes.
    pub stats: (u64, u64, u64),
}

/// Reads a `214` stats line.
fn parse_stats(data: &[u8]) -> Option<(u64, u64, u64)> {
    let [u, f, g] = Fields::exactly::<3>(data)?;
    Some((number(u)?, number(f)?, number(g)?))
}

impl Session {
    /// Connects to `server` and logs in; waits for the ack, the MOTD and the stats.
    pub async fn login(
        server: &str,
        login: &Login,
        wait: Duration,
    ) -> Result<Session, ClientError> {
        let deadline = Instant::now() + wait;
        let stream = timeout_at(deadline, TcpStream::connect(server))
            .await
            .map_err(|_| ClientError::Timeout("connecting to the server"))?
            .map_err(|source| ClientError::Connect {
                server: server.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        let line = Line::new()
            .word(&login.nick)
            .word(&login.password)
            .num(login.data_port)
            .quoted(&login.client_info)
            .num(login.link);
        let mut session = Session {
            reader: FramedRead::new(r, NapCodec::default()),
            writer: w,
            out: BytesMut::new(),
            nick: login.nick.clone(),
            email: String::new(),
            motd: Vec::new(),
            stats: (0, 0, 0),
        };
        session.send(line.frame(t::LOGIN)).await?;
        // 3, then 621s, then 214.
        let mut acked = false;
        loop {
            let f = session.recv_until(deadline, "logging in").await?;
            match f.ty {
                t::ERROR => return Err(ClientError::Refused(f.text())),
                t::LOGIN_ACK => {
                    acked = true;
                    session.email = f.text();
                }
                t::MOTD if acked => session.motd.push(f.text()),
                t::STATS if acked => {
                    session.stats = parse_stats(&f.data).unwrap_or_default();
                    return Ok(session);
                }
                _ => session.background(&f).await?,
            }
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.feed(frame);
        self.flush().await
    }

    /// Queues one frame without writing it yet.
    pub fn feed(&mut self, frame: Frame) {
        frame.encode(&mut self.out);
    }

    /// Writes what was queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.writer.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// The next frame, whatever it is.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        match self.reader.next().await {
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    async fn recv_until(
        &mut self,
        deadline: Instant,
        what: &'static str,
    ) -> Result<Frame, ClientError> {
        timeout_at(deadline, self.recv())
            .await
            .map_err(|_| ClientError::Timeout(what))?
    }

    /// Handles what the server may send at any time: pings are answered,
    /// messages logged.
    pub async fn background(&mut self, f: &Frame) -> Result<(), ClientError> {
        match f.ty {
            t::SERVER_PING => {
                let nick = self.nick.clone();
                self.send(Line::new().word(nick).frame(t::SERVER_PING))
                    .await?;
            }
            t::PING => self.send(Frame::new(t::PONG, f.data.clone())).await?,
            t::PRIVATE_MESSAGE => tracing::info!(message = %f.text(), "private message"),
            t::NOSUCH => tracing::warn!(error = %f.text(), "server error"),
            t::DISCONNECTING => tracing::warn!("the server is disconnecting us"),
            _ => tracing::debug!(ty = f.ty, data = %f.text(), "ignored"),
        }
        Ok(())
    }

    /// Asks for the server's stats and waits for them. Everything sent before
    /// has been handled by the server when this returns.
    pub async fn sync(&mut self, wait: Duration) -> Result<(u64, u64, u64), ClientError> {
        let deadline = Instant::now() + wait;
        self.send(Frame::empty(t::STATS)).await?;
        loop {
            let f = self.recv_until(deadline, "waiting for the server").await?;
            if f.ty == t::STATS {
                return Ok(parse_stats(&f.data).unwrap_or_default());
            }
            self.background(&f).await?;
        }
    }

    /// Runs a search; calls `on_result` for each result and returns how many there
    /// were. A 404 during the search (a refused request) is an error.
    pub async fn search(
        &mut self,
        req: &SearchRequest,
        wait: Duration,
        mut on_result: impl FnMut(SearchResult),
    ) -> Result<usize, ClientError> {
        let deadline = Instant::now() + wait;
        self.send(Frame::new(t::SEARCH, req.encode())).await?;
        let mut count = 0;
        let mut error = None;
        loop {
            let f = self
                .recv_until(deadline, "waiting for search results")
                .await?;
            match f.ty {
                t::SEARCH_RESULT => match SearchResult::parse(&f.data) {
                    Some(r) => {
                        count += 1;
                        on_result(r);
                    }
                    None => tracing::warn!(data = %f.text(), "unreadable search result"),
                },
                t::SEARCH_END => {
                    return match error {
                        Some(e) => Err(ClientError::Server(e)),
                        None => Ok(count),
                    };
                }
                t::NOSUCH => error = Some(f.text()),
                _ => self.background(&f).await?,
            }
        }
    }

    /// Lists a user's files (as many as the server gives): `None` if the user is
    /// not online.
    pub async fn browse(
        &mut self,
        nick: &str,
        wait: Duration,
    ) -> Result<Option<Vec<Listed>>, ClientError> {
        let deadline = Instant::now() + wait;
        self.send(Line::new().word(nick).frame(t::BROWSE)).await?;
        let mut files = Vec::new();
        loop {
            let f = self.recv_until(deadline, "browsing").await?;
            match f.ty {
                t::BROWSE_RESULT => {
                    if let Some(([_, name, md5, size], _)) = Fields::at_least::<4>(&f.data) {
                        if let Some(size) = number(size) {
                            files.push(Listed {
                                name: name.to_vec(),
                                md5: String::from_utf8_lossy(md5).into_owned(),
                                size,
                            });
                        }
                    }
                }
                t::BROWSE_END => return Ok(Some(files)),
                t::SIGNOFF => return Ok(None),
                _ => self.background(&f).await?,
            }
        }
    }

    /// A direct browse (640): asks `nick` for its list through the server and
    /// fetches it from its data port (`GETLIST`). Firewalled users, which would
    /// push the list to us, are not browsed this way: use [`Session::browse`].
    pub async fn browse_direct(
        &mut self,
        nick: &str,
        timeouts: Timeouts,
        wait: Duration,
    ) -> Result<Vec<Listed>, ClientError> {
        let deadline = Instant::now() + wait;
        self.send(Line::new().word(nick).frame(t::BROWSE_DIRECT))
            .await?;
        loop {
            let f = self
                .recv_until(deadline, "waiting for a direct browse")
                .await?;
            match f.ty {
                t::BROWSE_DIRECT_OK => {
                    let Some(([_, ip, port], _)) = Fields::at_least::<3>(&f.data) else {
                        return Err(ClientError::Invalid(format!(
                            "unreadable 641: {}",
                            f.text()
                        )));
                    };
                    let (Some(ip), Some(port)) = (number::<u32>(ip), number::<u16>(port)) else {
                        return Err(ClientError::Invalid(format!(
                            "unreadable 641: {}",
                            f.text()
                        )));
                    };
                    let addr = SocketAddr::from((super::wire::ip_from_decimal(ip), port));
                    let (_, files) = transfer::fetch_listing(addr, timeouts).await?;
                    return Ok(files
                        .into_iter()
                        .map(|(name, md5, size)| Listed { name, md5, size })
                        .collect());
                }
                t::BROWSE_DIRECT_ERR => return Err(ClientError::Server(f.text())),
                t::NOSUCH => {
                    return Err(ClientError::Offline {
                        nick: nick.to_string(),
                    });
                }
                _ => self.background(&f).await?,
            }
        }
    }

    /// The client-info string `nick` logged in with (from a whois), or `None`
    /// if it is not online.
    pub async fn client_of(
        &mut self,
        nick: &str,
        wait: Duration,
    ) -> Result<Option<String>, ClientError> {
        let deadline = Instant::now() + wait;
        self.send(Line::new().word(nick).frame(t::WHOIS)).await?;
        loop {
            let f = self.recv_until(deadline, "asking who a user is").await?;
            match f.ty {
                t::WHOIS_REPLY => {
                    let mut fields = Fields::new(&f.data);
                    let all: Vec<&[u8]> = std::iter::from_fn(|| fields.next_field()).collect();
                    return Ok(all.get(9).map(|c| String::from_utf8_lossy(c).into_owned()));
                }
                t::NOSUCH | t::WHOWAS_REPLY => return Ok(None),
                _ => self.background(&f).await?,
            }
        }
    }
}

/// One entry of a browse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: Vec<u8>,
    pub md5: String,
    pub size: u64,
}

// ---- share ----

/// Where a sharer accepts downloads.
pub enum DataPort {
    /// Listen here (already bound).
    Listen(TcpListener),
    /// No data port: downloads come as pushes (`SEND`) we make on request.
    Firewalled,
}

pub struct ShareConfig {
    pub server: String,
    pub nick: String,
    /// `None`: a made-up one (the nick is then unregistered for us).
    pub password: Option<String>,
    pub root: PathBuf,
    pub data: DataPort,
    /// The hash cache shared with `servent run`.
    pub cache_file: Option<PathBuf>,
    pub max_uploads: usize,
    pub timeouts: Timeouts,
}

/// A running sharer.
pub struct Sharer {
    /// Files announced.
    pub files: usize,
    /// Our data port, unless firewalled.
    pub data_addr: Option<SocketAddr>,
    task: JoinHandle<Result<(), ClientError>>,
}

impl Sharer {
    /// Waits until the sharer stops: `Ok` after cancellation, an error if the
    /// server went away.
    pub async fn wait(self) -> Result<(), ClientError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ClientError::Invalid(format!("sharer task failed: {e}"))),
        }
    }
}

/// The name a file is announced under: the share directory's own name, then
/// the path below it, directories separated by `\` as the Windows clients write
/// them (`Music\album\song.mp3`). Real clients send full paths, and OpenNap
/// indexes no word of a name without a `\` (its `index_path_depth` counts
/// path components), so a file at the top of the share needs the root's name
/// in front. `None` when a component holds a `"` or `\` (which the protocol
/// cannot carry faithfully).
pub fn announced_name(root: &Path, path: &Path) -> Option<Vec<u8>> {
    let rel = path.strip_prefix(root).ok()?;
    let top = root
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.contains('"') && !n.contains('\\') && !n.is_empty())
        .unwrap_or("share");
    let mut parts = vec![top];
    for c in rel.components() {
        let s = c.as_os_str().to_str()?;
        if s.contains('"') || s.contains('\\') || s.is_empty() {
            return None;
        }
        parts.push(s);
    }
    (parts.len() > 1).then(|| parts.join("\\").into_bytes())
}

/// Scans `root` and hashes what the cache does not know (blocking). The md5
/// field is the first 32 hex digits of the file's SHA-1: see
/// `protocol-spec/napster.md`.
pub fn build_library(root: &Path, cache_file: Option<&Path>) -> Result<Vec<Offered>, ClientError> {
    let canon = std::fs::canonicalize(root).map_err(|e| ClientError::Share {
        path: root.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !canon.is_dir() {
        return Err(ClientError::Share {
            path: root.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    let (found, errors, cache) = share::scan_with_cache(std::slice::from_ref(&canon), cache_file);
    for (p, e) in errors {
        tracing::warn!(path = %p.display(), error = %e, "skipped");
    }
    let mut cache = cache.unwrap_or_else(|e| {
        if let Some(f) = cache_file {
            tracing::warn!(file = %f.display(), error = %e, "hash cache unreadable; rehashing");
        }
        HashCache::default()
    });
    let mut out = Vec::new();
    let mut hashed = 0;
    for f in &found {
        let Some(name) = announced_name(&canon, &f.path) else {
            tracing::info!(path = %f.path.display(), "not shared: its name cannot be sent");
            continue;
        };
        let urn = match cache.get(f) {
            Some(u) => u,
            None => match share::hash_file(&f.path) {
                Ok(u) => {
                    cache.insert(f, u);
                    hashed += 1;
                    u
                }
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), error = %e, "cannot hash; skipped");
                    continue;
                }
            },
        };
        let md5: String = urn.0[..16].iter().map(|b| format!("{b:02x}")).collect();
        let kind = Kind::from_file_name(f.name());
        let info = if kind == Kind::Mp3 {
            super::mp3::read(&f.path).ok().flatten().unwrap_or_default()
        } else {
            super::mp3::Mp3Info::default()
        };
        out.push(Offered {
            kind,
            name,
            path: f.path.clone(),
            size: f.size,
            md5,
            bitrate: info.bitrate,
            freq: info.freq,
            seconds: info.seconds,
        });
    }
    if hashed > 0 {
        if let Some(file) = cache_file {
            if let Err(e) = cache.save(file) {
                tracing::warn!(file = %file.display(), error = %e, "cannot save the hash cache");
            }
        }
    }
    Ok(out)
}

/// The share message for a file: 100 for mp3 (with the bit rate, frequency and
/// length its headers give, 0 when they cannot be read), 10300 with its content
/// type for everything else.
pub fn share_frame(f: &Offered) -> Frame {
    if f.kind == Kind::Mp3 {
        Line::new()
            .quoted(&f.name)
            .word(&f.md5)
            .num(f.size)
            .num(f.bitrate)
            .num(f.freq)
            .num(f.seconds)
            .frame(t::SHARE)
    } else {
        Line::new()
            .quoted(&f.name)
            .num(f.size)
            .word(&f.md5)
            .word(f.kind.name())
            .frame(t::SHARE_GENERIC)
    }
}

/// Logs in, announces the library, and keeps serving until `cancel`: accepts
/// every download request for a shared file (608), serves `GET`s on the data
/// port, and pushes files (`SEND`) when the server asks a firewalled us to.
pub async fn start_share(
    config: ShareConfig,
    cancel: CancellationToken,
) -> Result<Sharer, ClientError> {
    let root = config.root.clone();
    let cache_file = config.cache_file.clone();
    let library = tokio::task::spawn_blocking(move || build_library(&root, cache_file.as_deref()))
        .await
        .map_err(|e| ClientError::Invalid(format!("scan failed: {e}")))??;
    let data_addr = match &config.data {
        DataPort::Listen(l) => Some(l.local_addr()?),
        DataPort::Firewalled => None,
    };
    let login = Login {
        nick: config.nick.clone(),
        password: config
            .password
            .clone()
            .unwrap_or_else(|| Login::anonymous(0).password),
        data_port: data_addr.map_or(0, |a| a.port()),
        link: 0,
        client_info: client_info(),
    };
    let wait = Duration::from_secs(30);
    let mut session = Session::login(&config.server, &login, wait).await?;
    for f in &library {
        session.feed(share_frame(f));
        if session.out.len() >= 64 * 1024 {
            session.flush().await?;
        }
    }
    session.flush().await?;
    // Once the stats come back, every share has been indexed.
    session.sync(wait).await?;
    tracing::info!(files = library.len(), server = %config.server, nick = %config.nick, "sharing");
    let files = library.len();
    let listing: Arc<[u8]> = transfer::listing(&config.nick, &library).into();
    let by_name: Arc<HashMap<Vec<u8>, Offered>> =
        Arc::new(library.into_iter().map(|f| (f.name.clone(), f)).collect());
    let task = tokio::spawn(share_loop(session, config, by_name, listing, cancel));
    Ok(Sharer {
        files,
        data_addr,
        task,
    })
}

async fn share_loop(
    mut session: Session,
    config: ShareConfig,
    library: Arc<HashMap<Vec<u8>, Offered>>,
    listing: Arc<[u8]>,
    cancel: CancellationToken,
) -> Result<(), ClientError> {
    let slots = Arc::new(Semaphore::new(config.max_uploads.max(1)));
    // Upload tasks report start and end, for the server's 220/221 counters.
    let (counter_tx, mut counter_rx) = mpsc::channel::<u16>(64);
    let listener = match config.data {
        DataPort::Listen(l) => Some(l),
        DataPort::Firewalled => None,
    };
    let timeouts = config.timeouts;
    let tasks = tokio_util::task::TaskTracker::new();
    let result = loop {
        let accept = async {
            match &listener {
                Some(l) => l.accept().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            c = counter_rx.recv() => {
                if let Some(ty) = c {
                    session.send(Frame::empty(ty)).await?;
                }
            }
            a = accept => {
                let Ok((stream, peer)) = a else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::info!(%peer, "all upload slots busy; refused");
                    continue;
                };
                let lib = library.clone();
                let list = listing.clone();
                let counters = counter_tx.clone();
                tasks.spawn(async move {
                    let _ = counters.send(t::UPLOAD_START).await;
                    let find = |name: &[u8]| lib.get(name).cloned();
                    match transfer::serve_get(stream, find, &list, timeouts).await {
                        Ok((nick, sent)) => tracing::info!(%nick, sent, "upload done"),
                        Err(e) => tracing::info!(%peer, error = %e, "upload failed"),
                    }
                    let _ = counters.send(t::UPLOAD_END).await;
                    drop(permit);
                });
            }
            f = session.recv() => {
                let f = match f {
                    Ok(f) => f,
                    Err(e) => break Err(e),
                };
                match f.ty {
                    t::UPLOAD_REQUEST => {
                        let Some((nick, name)) = nick_and_file(&f.data) else { continue };
                        if library.contains_key(name) {
                            let accept = Line::new().word(nick).quoted(name).frame(t::UPLOAD_ACCEPT);
                            session.send(accept).await?;
                        } else {
                            tracing::info!(file = %String::from_utf8_lossy(name), "request for a file we do not share");
                        }
                    }
                    t::BROWSE_DIRECT => {
                        // A direct browse: accept it (the requester connects to
                        // our data port and sends GETLIST), or, firewalled, push
                        // the list to the address the server gave.
                        let mut fields = Fields::new(&f.data);
                        let Some(requester) = fields.next_field().map(<[u8]>::to_vec) else { continue };
                        let addr = match (fields.next_field().and_then(number::<u32>), fields.next_field().and_then(number::<u16>)) {
                            (Some(ip), Some(port)) if port != 0 => Some(SocketAddr::from((super::wire::ip_from_decimal(ip), port))),
                            _ => None,
                        };
                        if listener.is_some() {
                            let ok = Line::new().word(&requester).frame(t::BROWSE_DIRECT_OK);
                            session.send(ok).await?;
                        } else if let Some(addr) = addr {
                            let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                            let list = listing.clone();
                            tasks.spawn(async move {
                                if let Err(e) = transfer::push_listing(addr, &list, timeouts).await {
                                    tracing::info!(%addr, error = %e, "pushing our list failed");
                                }
                                drop(permit);
                            });
                        }
                    }
                    t::FIREWALL_UPLOAD => {
                        let Some(p) = PeerFile::parse(&f.data) else { continue };
                        let Some(file) = library.get(&p.name).cloned() else { continue };
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            tracing::info!(nick = %p.nick, "all upload slots busy; push refused");
                            continue;
                        };
                        let me = session.nick.clone();
                        let counters = counter_tx.clone();
                        tasks.spawn(async move {
                            let _ = counters.send(t::UPLOAD_START).await;
                            let addr = SocketAddr::from((p.ip, p.port));
                            match transfer::push_upload(addr, &me, &file, timeouts).await {
                                Ok(sent) => tracing::info!(nick = %p.nick, sent, "push upload done"),
                                Err(e) => tracing::info!(nick = %p.nick, error = %e, "push upload failed"),
                            }
                            let _ = counters.send(t::UPLOAD_END).await;
                            drop(permit);
                        });
                    }
                    _ => session.background(&f).await?,
                }
            }
        }
    };
    tasks.close();
    drop(listener);
    result
}

// ---- get ----

pub struct GetConfig {
    pub server: String,
    pub from: String,
    pub file: Vec<u8>,
    pub output: PathBuf,
    /// Longest wait for the uploader to accept.
    pub wait: Duration,
    pub timeouts: Timeouts,
}

/// A search result as the record every command prints (see [`crate::output`]).
pub fn hit_record(r: &super::wire::SearchResult) -> crate::output::Hit {
    use crate::output;
    output::Hit {
        network: output::Network::Napster,
        name: String::from_utf8_lossy(&r.name).into_owned(),
        size: r.size,
        urn: None,
        fth: None,
        host: r.ip.to_string(),
        port: None,
        gnutella: None,
        napster: Some(output::NapsterHit {
            nick: r.nick.clone(),
            md5: String::from_utf8_lossy(&r.md5).into_owned(),
            bitrate: r.bitrate,
            freq: r.freq,
            seconds: r.seconds,
            link: r.link,
        }),
    }
}

/// The local name for a remote one: the part after the last `\` or `/`.
pub fn local_name(remote: &[u8]) -> String {
    let s = String::from_utf8_lossy(remote);
    let base = s.rsplit(['\\', '/']).next().unwrap_or("").trim();
    if base.is_empty() || base == "." || base == ".." {
        "download".to_string()
    } else {
        base.to_string()
    }
}

/// Downloads `file` from `from` into `output` by way of `output.part` (see
/// [`Part`]): an existing `output` is never touched, a `.part` is continued only
/// when its state file says it holds the same file, the uploader must send the
/// size the file is listed with, and a servent's file (its md5 field is the
/// SHA-1 prefix) is checked before the rename.
pub async fn get(config: GetConfig) -> Result<Downloaded, ClientError> {
    if config.file.contains(&b'"') {
        return Err(ClientError::Invalid(
            "a file name cannot contain '\"'".into(),
        ));
    }
    if std::fs::symlink_metadata(&config.output).is_ok() {
        return Err(TransferError::Part(format!(
            "{} already exists; it is left alone (choose another --output)",
            config.output.display()
        ))
        .into());
    }
    // A data port of our own, for a firewalled uploader's push.
    let listener = TcpListener::bind(("0.0.0.0", 0)).await?;
    let port = listener.local_addr()?.port();
    let login = Login::anonymous(port);
    let wait = Duration::from_secs(30);
    let mut session = Session::login(&config.server, &login, wait).await?;
    let file_str = String::from_utf8_lossy(&config.file).into_owned();
    let not_shared = || ClientError::NotShared {
        nick: config.from.clone(),
        file: file_str.clone(),
    };
    // The size (enforced) and the md5 field (checked, from a servent).
    let Some(listing) = session.browse(&config.from, wait).await? else {
        return Err(ClientError::Offline {
            nick: config.from.clone(),
        });
    };
    let listed = match listing.into_iter().find(|l| l.name == config.file) {
        Some(l) => l,
        None => find_by_search(&mut session, &config.from, &config.file, wait)
            .await?
            .ok_or_else(not_shared)?,
    };
    let client = session.client_of(&config.from, wait).await?;
    let check = check_for(client.as_deref(), &listed);
    // Other users who list the same size and digest: independent copies
    // that agree (reported with the result).
    let agreeing = match check {
        Check::HeadMd5 { .. } => count_agreeing(&mut session, &config.from, &listed, wait).await?,
        _ => 0,
    };
    let part = Part::open(
        &config.output,
        PartState {
            nick: config.from.clone(),
            name: config.file.clone(),
            size: listed.size,
            md5: listed.md5.clone(),
        },
    )?;
    let done = if part.offset == listed.size {
        // Everything is in the .part already (an earlier run stopped before
        // the rename).
        Downloaded {
            offset: part.offset,
            size: listed.size,
            verified: Verified::Unchecked,
            agreeing: 0,
        }
    } else {
        fetch(&mut session, &config, &listener, &part, not_shared).await?
    };
    let finish = tokio::task::spawn_blocking(move || part.finish(check));
    let verified = finish
        .await
        .map_err(|e| ClientError::Invalid(format!("finishing failed: {e}")))??;
    Ok(Downloaded {
        verified,
        agreeing,
        ..done
    })
}

/// How to check a download from a user with this client info and listing: a
/// servent's md5 field is its SHA-1 prefix; another client's, when it has an
/// MD5's shape, an MD5 of the file's head. A mismatch of the latter is damage
/// only when we know the uploader's convention: TekNap's (its client info, or
/// its `<md5>-<size>` field), which we read in its source.
pub fn check_for(client: Option<&str>, listed: &Listed) -> Check {
    let servent = client.is_some_and(|c| c.starts_with("servent "));
    if servent {
        return if transfer::is_sha1_prefix(&listed.md5) {
            Check::Sha1Prefix
        } else {
            Check::None
        };
    }
    match transfer::md5_field(&listed.md5, listed.size) {
        Some((_, teknap_form)) => {
            let teknap = client.is_some_and(|c| c.to_ascii_lowercase().starts_with("teknap"));
            Check::HeadMd5 {
                strict: teknap_form || teknap,
            }
        }
        None => Check::None,
    }
}

/// How many users other than `nick` list a file of `listed`'s size and md5
/// field, found by a search for its name's words (0 when the server refuses
/// the search).
async fn count_agreeing(
    session: &mut Session,
    nick: &str,
    listed: &Listed,
    wait: Duration,
) -> Result<usize, ClientError> {
    let req = SearchRequest {
        contains: vec![local_name(&listed.name).into_bytes()],
        kind: super::wire::KindFilter::Any,
        ..SearchRequest::default()
    };
    let mut nicks: Vec<String> = Vec::new();
    let r = session
        .search(&req, wait, |r| {
            let md5 = String::from_utf8_lossy(&r.md5);
            if r.size == listed.size
                && md5.eq_ignore_ascii_case(&listed.md5)
                && !r.nick.eq_ignore_ascii_case(nick)
                && !nicks.iter().any(|n| n.eq_ignore_ascii_case(&r.nick))
            {
                nicks.push(r.nick.clone());
            }
        })
        .await;
    match r {
        Ok(_) => Ok(nicks.len()),
        Err(ClientError::Server(_)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// Looks `name` up in `nick`'s shares by a search (for a file past the browse
/// limit).
async fn find_by_search(
    session: &mut Session,
    nick: &str,
    name: &[u8],
    wait: Duration,
) -> Result<Option<Listed>, ClientError> {
    let words = local_name(name);
    let req = SearchRequest {
        contains: vec![words.into_bytes()],
        kind: super::wire::KindFilter::Any,
        ..SearchRequest::default()
    };
    let mut found = None;
    let r = session
        .search(&req, wait, |r| {
            if r.nick.eq_ignore_ascii_case(nick) && r.name == name {
                found = Some(Listed {
                    name: r.name,
                    md5: String::from_utf8_lossy(&r.md5).into_owned(),
                    size: r.size,
                });
            }
        })
        .await;
    match r {
        Ok(_) => Ok(found),
        Err(ClientError::Server(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Asks the server for the file and receives it into the `.part`.
async fn fetch(
    session: &mut Session,
    config: &GetConfig,
    listener: &TcpListener,
    part: &Part,
    not_shared: impl Fn() -> ClientError,
) -> Result<Downloaded, ClientError> {
    let file_str = String::from_utf8_lossy(&config.file).into_owned();
    let request = Line::new().word(&config.from).quoted(&config.file);
    session.send(request.frame(t::DOWNLOAD)).await?;
    let deadline = Instant::now() + config.wait;
    loop {
        tokio::select! {
            f = timeout_at(deadline, session.recv()) => {
                let f = f.map_err(|_| ClientError::Timeout("waiting for the uploader"))??;
                match f.ty {
                    t::DOWNLOAD_ACK => {
                        let Some(p) = PeerFile::parse(&f.data) else {
                            return Err(ClientError::Invalid(format!("unreadable 204: {}", f.text())));
                        };
                        if p.is_firewall_error() {
                            return Err(ClientError::BothFirewalled);
                        }
                        if p.port == 0 {
                            // Ask the firewalled uploader to connect to us.
                            let push = Line::new().word(&config.from).quoted(&config.file);
                            session.send(push.frame(t::FIREWALL_DOWNLOAD)).await?;
                            continue;
                        }
                        session.send(Frame::empty(t::DOWNLOAD_START)).await?;
                        let addr = SocketAddr::from((p.ip, p.port));
                        let r = transfer::download(addr, &session.nick, part, config.timeouts).await;
                        let _ = session.send(Frame::empty(t::DOWNLOAD_END)).await;
                        return Ok(r?);
                    }
                    t::GET_ERROR => return Err(not_shared()),
                    t::UPLOAD_FAILED => return Err(ClientError::NotAccepted { nick: config.from.clone(), file: file_str.clone() }),
                    t::NOSUCH => return Err(ClientError::Server(f.text())),
                    _ => session.background(&f).await?,
                }
            }
            a = listener.accept() => {
                let (stream, _) = a?;
                session.send(Frame::empty(t::DOWNLOAD_START)).await?;
                let r = transfer::receive_push(stream, &config.from, part, config.timeouts).await;
                let _ = session.send(Frame::empty(t::DOWNLOAD_END)).await;
                return Ok(r?);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let root = Path::new("/srv/share");
        assert_eq!(
            announced_name(root, Path::new("/srv/share/a/b c.mp3")),
            Some(b"share\\a\\b c.mp3".to_vec())
        );
        // A file at the top still has a directory in front of it.
        assert_eq!(
            announced_name(
                Path::new("/home/me/Music"),
                Path::new("/home/me/Music/x.mp3")
            ),
            Some(b"Music\\x.mp3".to_vec())
        );
        assert_eq!(
            announced_name(Path::new("/"), Path::new("/x.mp3")),
            Some(b"share\\x.mp3".to_vec())
        );
        assert_eq!(announced_name(root, root), None);
        assert_eq!(announced_name(root, Path::new("/srv/share/a\"b.mp3")), None);
        assert_eq!(announced_name(root, Path::new("/srv/share/a\\b.mp3")), None);
        assert_eq!(announced_name(root, Path::new("/elsewhere/x")), None);
        assert_eq!(local_name(b"C:\\mp3\\song.mp3"), "song.mp3");
        assert_eq!(local_name(b"dir/x.txt"), "x.txt");
        assert_eq!(local_name(b"..\\.."), "download");
    }
}
