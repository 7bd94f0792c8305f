//! The client-to-client transfer on the data port.
//!
//! Normal (the uploader is reachable): the downloader connects, the uploader
//! writes `1`, the downloader writes `GET` and then `<nick> "<file>" <offset>`,
//! the uploader answers the file's total size in ASCII digits immediately followed
//! by the bytes from `offset` (or an error text such as `FILE NOT SHARED`).
//!
//! Firewalled uploader: it connects out to the downloader, which writes `1`; the
//! uploader writes `SEND` and then `<nick> "<file>" <size>`, the downloader answers
//! the offset to start from in ASCII digits (or `INVALID REQUEST`), and the bytes
//! follow.
//!
//! None of these texts has a terminator. A request is complete once it parses and
//! nothing more arrives for a short pause ([`PAUSE`]), which is how the old
//! clients read it too (one packet). A size followed by file bytes is cut at the
//! known size's digits when the downloader knows the size (from a browse), else at
//! the first byte that is not a digit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::fs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

use super::wire::{Fields, Kind, Line, number};

/// Quiet time after which a parsed request counts as complete.
pub const PAUSE: Duration = Duration::from_millis(150);
/// Longest request or reply text read before the data.
const MAX_HEAD: usize = 2048;

/// Time limits of a transfer.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// To connect and to exchange the texts before the data.
    pub setup: Duration,
    /// Longest wait for the next chunk of data either way.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            setup: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// A file we offer for upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    /// The name announced to the index (and asked for by downloaders).
    pub name: Vec<u8>,
    pub path: PathBuf,
    pub size: u64,
    /// The md5 field announced (see `protocol-spec/napster.md`).
    pub md5: String,
    pub kind: Kind,
    /// An MP3's kilobits per second, samples per second and seconds (0 when
    /// unknown or not an MP3).
    pub bitrate: u32,
    pub freq: u32,
    pub seconds: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the peer refused: {0}")]
    Refused(String),
    #[error("the peer broke the protocol: {0}")]
    Protocol(String),
    #[error("the local file is {local} bytes, larger than the remote file ({remote} bytes)")]
    LocalLarger { local: u64, remote: u64 },
    #[error("the transfer ended early, at {got} of {size} bytes (run again to resume)")]
    Short { got: u64, size: u64 },
    #[error("the uploader says the file is {said} bytes, but it was listed as {listed}")]
    SizeMismatch { said: u64, listed: u64 },
    #[error("{0}")]
    Part(String),
    #[error(
        "the content does not match the hash the uploader announced ({md5}); the partial file was discarded"
    )]
    Corrupt { md5: String },
}

/// What a `.part` belongs to: written next to it as `<PATH>.part.state`, so a
/// resume continues only the same file, from the same nick, of the same size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartState {
    pub nick: String,
    pub name: Vec<u8>,
    pub size: u64,
    pub md5: String,
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl PartState {
    /// The state file's text.
    pub fn to_text(&self) -> String {
        format!(
            "servent-napster-partial 1\nnick {}\nname {}\nsize {}\nmd5 {}\n",
            self.nick,
            hex_bytes(&self.name),
            self.size,
            self.md5
        )
    }

    pub fn from_text(text: &str) -> Option<PartState> {
        let mut lines = text.lines();
        if lines.next()? != "servent-napster-partial 1" {
            return None;
        }
        let mut field = |key: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(key))
                .and_then(|l| l.strip_prefix(' '))
                .map(str::to_string)
        };
        let nick = field("nick")?;
        let name_hex = field("name")?;
        let size = field("size")?.parse().ok()?;
        let md5 = field("md5")?;
        if name_hex.len() % 2 != 0 {
            return None;
        }
        let name = (0..name_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(name_hex.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        Some(PartState {
            nick,
            name,
            size,
            md5,
        })
    }
}

/// `PATH` plus a suffix.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A download's `.part`, as the Gnutella downloader keeps one: `PATH` itself is
/// never opened until the finished `.part` is renamed onto it (and never if a
/// file appeared there meanwhile); `PATH.part` is continued only when
/// `PATH.part.state` says it holds the same file.
#[derive(Debug)]
pub struct Part {
    pub path: PathBuf,
    pub part: PathBuf,
    pub state_path: PathBuf,
    pub state: PartState,
    /// Bytes already in the `.part`: where the transfer resumes.
    pub offset: u64,
}

impl Part {
    /// Opens (or creates) the `.part` of `path` for `state`.
    pub fn open(path: &Path, state: PartState) -> Result<Part, TransferError> {
        let part = with_suffix(path, ".part");
        let state_path = with_suffix(path, ".part.state");
        if std::fs::symlink_metadata(path).is_ok() {
            return Err(TransferError::Part(format!(
                "{} already exists; it is left alone (choose another --output)",
                path.display()
            )));
        }
        let existing = match std::fs::read_to_string(&state_path) {
            Ok(t) => Some(PartState::from_text(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let part_meta = std::fs::symlink_metadata(&part).ok();
        let offset = match (existing, part_meta) {
            (Some(Some(s)), Some(m)) if s == state && m.is_file() => {
                if m.len() > state.size {
                    return Err(TransferError::Part(format!(
                        "{} is longer than the file; remove it to start over",
                        part.display()
                    )));
                }
                m.len()
            }
            (Some(_), Some(_)) => {
                return Err(TransferError::Part(format!(
                    "{} belongs to another download; remove it and {} to start over",
                    part.display(),
                    state_path.display()
                )));
            }
            (None, Some(_)) => {
                return Err(TransferError::Part(format!(
                    "{} exists but is not one of ours (no {}); it is left alone",
                    part.display(),
                    state_path.display()
                )));
            }
            (_, None) => {
                // A fresh start: the state first, then an empty .part that
                // must not exist already (create_new).
                write_atomically(&state_path, state.to_text().as_bytes())?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&part)?;
                0
            }
        };
        Ok(Part {
            path: path.to_path_buf(),
            part,
            state_path,
            state,
            offset,
        })
    }

    /// Checks the finished `.part` against the md5 field as `check` says and
    /// renames it onto `PATH`; a mismatch that `check` calls damage discards
    /// the `.part` and its state.
    pub fn finish(self, check: Check) -> Result<Verified, TransferError> {
        let len = std::fs::metadata(&self.part)?.len();
        if len != self.state.size {
            return Err(TransferError::Short {
                got: len,
                size: self.state.size,
            });
        }
        let corrupt = |this: &Part| {
            let _ = std::fs::remove_file(&this.part);
            let _ = std::fs::remove_file(&this.state_path);
            TransferError::Corrupt {
                md5: this.state.md5.clone(),
            }
        };
        let verified = match check {
            Check::None => Verified::Unchecked,
            Check::Sha1Prefix => {
                let sha1 = sha1_file(&self.part)?;
                if !hex_bytes(&sha1[..16]).eq_ignore_ascii_case(&self.state.md5) {
                    return Err(corrupt(&self));
                }
                Verified::Sha1
            }
            Check::HeadMd5 { strict } => {
                let Some((want, _)) = md5_field(&self.state.md5, self.state.size) else {
                    return self.rename(Verified::Unchecked);
                };
                match head_md5s(&self.part)?
                    .into_iter()
                    .find(|h| h.digest == want)
                {
                    Some(h) => Verified::HeadMd5 {
                        start: h.start,
                        len: h.len,
                    },
                    None if strict => return Err(corrupt(&self)),
                    None => Verified::Unmatched,
                }
            }
        };
        self.rename(verified)
    }

    /// Moves the finished `.part` onto `PATH` (never over a file that
    /// appeared meanwhile) and removes the state.
    fn rename(self, verified: Verified) -> Result<Verified, TransferError> {
        // A hard link fails if PATH appeared meanwhile: it is never replaced.
        match std::fs::hard_link(&self.part, &self.path) {
            Ok(()) => std::fs::remove_file(&self.part)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(TransferError::Part(format!(
                    "{} appeared during the download; the data stays in {}",
                    self.path.display(),
                    self.part.display()
                )));
            }
            Err(_) => {
                if std::fs::symlink_metadata(&self.path).is_ok() {
                    return Err(TransferError::Part(format!(
                        "{} appeared during the download; the data stays in {}",
                        self.path.display(),
                        self.part.display()
                    )));
                }
                std::fs::rename(&self.part, &self.path)?;
            }
        }
        let _ = std::fs::remove_file(&self.state_path);
        Ok(verified)
    }
}

/// How a finished download is checked against its md5 field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing to check against.
    None,
    /// A servent's field: the first half of the file's SHA-1; a mismatch is damage.
    Sha1Prefix,
    /// An MD5 of the file's head, as the OpenNap-era clients compute it (see
    /// [`head_md5s`]). A mismatch is damage when `strict` (the uploader's
    /// convention is known), otherwise only reported.
    HeadMd5 { strict: bool },
}

/// What the check of a finished download found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verified {
    /// Nothing said what the content should be.
    Unchecked,
    /// A servent's SHA-1 prefix matched.
    Sha1,
    /// The MD5 of `len` bytes from `start` matched the md5 field.
    HeadMd5 { start: u64, len: u64 },
    /// The field has an MD5's shape but matched no head we know how to hash.
    Unmatched,
}

/// The digest in an md5 field that has the shape of one: 32 hex digits,
/// alone or followed by `-<size>` as TekNap writes it (then `true`, when the
/// size is the listed one). All zeros (an OpenNap without checksums) is not
/// a digest.
pub fn md5_field(md5: &str, size: u64) -> Option<([u8; 16], bool)> {
    let (hex, suffix) = match md5.split_once('-') {
        Some((h, s)) => (h, Some(s)),
        None => (md5, None),
    };
    let teknap = match suffix {
        None => false,
        Some(s) if s.parse::<u64>().ok() == Some(size) => true,
        Some(_) => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    (out != [0; 16]).then_some((out, teknap))
}

/// Bytes nap hashes from the start of a file.
pub const NAP_MD5_BYTES: u64 = 300_000;
/// Bytes Windows Napster and TekNap hash (292 KiB), after an ID3v2 tag.
pub const NAPSTER_MD5_BYTES: u64 = 292 * 1024;

/// One head of a file and its MD5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadMd5 {
    pub start: u64,
    pub len: u64,
    pub digest: [u8; 16],
}

/// The MD5s of a file's head as the clients of the time computed their md5
/// field: nap the first 300,000 bytes; Windows Napster and TekNap 299,008
/// bytes from the start, or, for an MP3 with an ID3v2 tag, from the end of
/// the tag (TekNap also leaves out a trailing ID3v1 tag when the file is
/// shorter than that). Reads at most about a megabyte.
pub fn head_md5s(path: &Path) -> std::io::Result<Vec<HeadMd5>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 10];
    let got = f.read(&mut head)?;
    let id3v2 = if got == 10 && &head[..3] == b"ID3" {
        let size = head[6..10]
            .iter()
            .fold(0u64, |n, &b| (n << 7) | u64::from(b & 0x7f));
        (size + 10).min(len)
    } else {
        0
    };
    let id3v1 = len >= 128 && {
        let mut tail = [0u8; 3];
        f.seek(SeekFrom::Start(len - 128))?;
        f.read_exact(&mut tail)?;
        &tail == b"TAG"
    };
    let tail = if id3v1 { 128 } else { 0 };
    let mut ranges = vec![(0, len.min(NAP_MD5_BYTES)), (0, len.min(NAPSTER_MD5_BYTES))];
    if id3v2 > 0 {
        let room = len - id3v2;
        let room = if id3v1 {
            room.saturating_sub(128)
        } else {
            room
        };
        ranges.push((id3v2, room.min(NAPSTER_MD5_BYTES)));
    } else if id3v1 && len < NAPSTER_MD5_BYTES {
        ranges.push((0, len - tail));
    }
    ranges.sort_unstable();
    ranges.dedup();
    let mut out = Vec::with_capacity(ranges.len());
    let mut buf = Vec::new();
    for (start, n) in ranges {
        use md5::{Digest, Md5};
        buf.resize(n as usize, 0);
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf)?;
        out.push(HeadMd5 {
            start,
            len: n,
            digest: Md5::digest(&buf).into(),
        });
    }
    Ok(out)
}

/// Whether an md5 field is what a servent announces: 32 lower-case hex digits
/// (the first half of the file's SHA-1).
pub fn is_sha1_prefix(md5: &str) -> bool {
    md5.len() == 32
        && md5
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        // opennap-ng blanks every md5 field to zeros: no checksum at all.
        && md5.bytes().any(|b| b != b'0')
}

fn sha1_file(path: &Path) -> std::io::Result<[u8; 20]> {
    use sha1::{Digest, Sha1};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// What a finished download did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Where it started (the partial file's length).
    pub offset: u64,
    /// The remote file's size, now the local one's.
    pub size: u64,
    /// What checking the content found.
    pub verified: Verified,
    /// Other users listing a file of the same size and md5 field (counted for
    /// an md5 field that has a digest's shape, from a non-servent uploader).
    pub agreeing: usize,
}

/// How a head text stands.
enum Head {
    Incomplete,
    Complete,
}

/// Reads into `buf` until `check` says complete and nothing more arrives for
/// [`PAUSE`], or the peer closes, or `deadline` passes.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    deadline: Instant,
    check: impl Fn(&[u8]) -> Head,
) -> Result<(), TransferError> {
    let mut chunk = [0u8; 512];
    loop {
        let complete = matches!(check(buf), Head::Complete);
        let read = if complete {
            match timeout(PAUSE, r.read(&mut chunk)).await {
                Err(_) => return Ok(()),
                Ok(r) => r?,
            }
        } else {
            timeout_at(deadline, r.read(&mut chunk))
                .await
                .map_err(|_| TransferError::Timeout("waiting for the peer's request"))??
        };
        if read == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..read]);
        if buf.len() > MAX_HEAD {
            return Err(TransferError::Protocol("request too long".into()));
        }
    }
}

/// `<nick> "<file>" <number>` complete?
/// Opens a data-port exchange as the side that was connected to: writes the
/// `1`, then reads the other side's head, `<command>nick "file" number`.
async fn open_exchange(
    s: &mut TcpStream,
    command: &'static [u8],
    deadline: Instant,
) -> Result<Vec<u8>, TransferError> {
    s.write_all(b"1").await?;
    let mut buf = Vec::new();
    read_head(s, &mut buf, deadline, |b| match b.strip_prefix(command) {
        Some(rest) => triple(rest),
        None => Head::Incomplete,
    })
    .await?;
    Ok(buf)
}

fn triple(buf: &[u8]) -> Head {
    match Fields::exactly::<3>(buf) {
        Some([_, _, n]) if number::<u64>(n).is_some() => Head::Complete,
        _ => Head::Incomplete,
    }
}

fn parse_triple(buf: &[u8]) -> Option<(String, Vec<u8>, u64)> {
    let [nick, file, n] = Fields::exactly::<3>(buf)?;
    Some((
        String::from_utf8_lossy(nick).into_owned(),
        file.to_vec(),
        number(n)?,
    ))
}

fn text(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf).trim().to_string()
}

async fn read_one(s: &mut TcpStream, deadline: Instant) -> Result<u8, TransferError> {
    let mut b = [0u8; 1];
    let n = timeout_at(deadline, s.read(&mut b))
        .await
        .map_err(|_| TransferError::Timeout("waiting for the peer's greeting"))??;
    if n == 0 {
        return Err(TransferError::Protocol("closed before the greeting".into()));
    }
    Ok(b[0])
}

/// Sends `path` from `offset` (at most `len` bytes), each write within `idle`.
async fn send_file<W: AsyncWrite + Unpin>(
    w: &mut W,
    path: &Path,
    offset: u64,
    len: u64,
    idle: Duration,
) -> Result<u64, TransferError> {
    let mut f = fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut f = f.take(len);
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        timeout(idle, w.write_all(&buf[..n]))
            .await
            .map_err(|_| TransferError::Timeout("sending data"))??;
        sent += n as u64;
    }
    timeout(idle, w.flush())
        .await
        .map_err(|_| TransferError::Timeout("sending data"))??;
    Ok(sent)
}

/// Appends what `r` sends (after `head`, bytes already read) to `out` until it
/// holds `size` bytes.
async fn receive_file<R: AsyncRead + Unpin>(
    r: &mut R,
    head: &[u8],
    out: &Path,
    offset: u64,
    size: u64,
    idle: Duration,
    overlap: u64,
) -> Result<Downloaded, TransferError> {
    // Only ever our own .part (made by `Part::open`), continued at its end.
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .await?;
    if f.metadata().await?.len() != offset || overlap > offset {
        return Err(TransferError::Part(format!(
            "{} changed under us",
            out.display()
        )));
    }
    // A resume asks for `overlap` bytes we have already: they must be the
    // same, or the uploader is not sending from where we asked (TekNap's
    // uploads start over at byte 0 whatever the offset), and nothing of it
    // may reach the .part.
    let mut head = head;
    if overlap > 0 {
        let mut ours = vec![0u8; overlap as usize];
        f.seek(std::io::SeekFrom::Start(offset - overlap)).await?;
        f.read_exact(&mut ours).await?;
        let mut theirs = Vec::with_capacity(overlap as usize);
        let from_head = head.len().min(overlap as usize);
        theirs.extend_from_slice(&head[..from_head]);
        head = &head[from_head..];
        let mut buf = vec![0u8; overlap as usize];
        while theirs.len() < overlap as usize {
            let want = overlap as usize - theirs.len();
            let n = match timeout(idle, r.read(&mut buf[..want])).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) | Err(_) => 0,
            };
            if n == 0 {
                return Err(TransferError::Short { got: offset, size });
            }
            theirs.extend_from_slice(&buf[..n]);
        }
        if theirs != ours {
            return Err(TransferError::Part(format!(
                "the uploader's bytes before the resume point differ from {}: it is not sending from where we asked; the .part is left as it was",
                out.display()
            )));
        }
    }
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut have = offset;
    let take = (head.len() as u64).min(size - have) as usize;
    f.write_all(&head[..take]).await?;
    have += take as u64;
    let mut buf = vec![0u8; 64 * 1024];
    while have < size {
        let want = ((size - have) as usize).min(buf.len());
        let n = match timeout(idle, r.read(&mut buf[..want])).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => 0,
        };
        if n == 0 {
            f.flush().await?;
            return Err(TransferError::Short { got: have, size });
        }
        f.write_all(&buf[..n]).await?;
        have += n as u64;
    }
    f.flush().await?;
    f.sync_all().await?;
    Ok(Downloaded {
        offset,
        size,
        verified: Verified::Unchecked,
        agreeing: 0,
    })
}

/// Bytes a resume asks for again before the end of the `.part`, to check the
/// uploader sends from where it is asked.
const RESUME_OVERLAP: u64 = 4096;

/// Serves one connection to our data port: the `GET` of a downloader.
/// `find` looks a requested name up among the files we offer. Returns the
/// requester's nick and the bytes sent.
pub async fn serve_get(
    mut s: TcpStream,
    find: impl Fn(&[u8]) -> Option<Offered>,
    listing: &[u8],
    timeouts: Timeouts,
) -> Result<(String, u64), TransferError> {
    let deadline = Instant::now() + timeouts.setup;
    s.write_all(b"1").await?;
    let mut buf = Vec::new();
    read_head(&mut s, &mut buf, deadline, |b| {
        if is_getlist(b) {
            return Head::Complete;
        }
        match b.strip_prefix(b"GET") {
            Some(rest) => triple(rest),
            None => Head::Incomplete,
        }
    })
    .await?;
    if is_getlist(&buf) {
        // A direct browse (640/641): our list, then close.
        timeout(timeouts.idle, s.write_all(listing))
            .await
            .map_err(|_| TransferError::Timeout("sending the list"))??;
        let _ = s.shutdown().await;
        return Ok((String::new(), listing.len() as u64));
    }
    let Some(rest) = buf.strip_prefix(b"GET") else {
        let _ = s.write_all(b"INVALID REQUEST").await;
        return Err(TransferError::Protocol(format!(
            "expected GET, got {:?}",
            text(&buf)
        )));
    };
    let Some((nick, name, offset)) = parse_triple(rest) else {
        let _ = s.write_all(b"INVALID REQUEST").await;
        return Err(TransferError::Protocol(format!(
            "bad request {:?}",
            text(rest)
        )));
    };
    let Some(file) = find(&name) else {
        let _ = s.write_all(b"FILE NOT SHARED").await;
        return Err(TransferError::Refused(format!(
            "{nick} asked for {:?}, which we do not share",
            String::from_utf8_lossy(&name)
        )));
    };
    let size = fs::metadata(&file.path).await?.len();
    if offset > size {
        let _ = s.write_all(b"INVALID REQUEST").await;
        return Err(TransferError::Protocol(format!(
            "offset {offset} beyond the end ({size})"
        )));
    }
    s.write_all(size.to_string().as_bytes()).await?;
    let sent = send_file(&mut s, &file.path, offset, size - offset, timeouts.idle).await?;
    let _ = s.shutdown().await;
    Ok((nick, sent))
}

/// Whether a request is a direct browse: `GETLIST`, with the line end TekNap
/// adds (`GETLIST\n`) or none.
fn is_getlist(b: &[u8]) -> bool {
    b.strip_prefix(b"GETLIST")
        .is_some_and(|rest| rest.iter().all(|c| matches!(c, b'\r' | b'\n')))
}

/// The list a direct browse sends: `<nick>\n`, one line per file in the 100
/// message's form, then an empty line.
pub fn listing(nick: &str, files: &[Offered]) -> Vec<u8> {
    let mut out = format!("{nick}\n").into_bytes();
    for f in files {
        let line = Line::new()
            .quoted(&f.name)
            .word(&f.md5)
            .num(f.size)
            .num(f.bitrate)
            .num(f.freq)
            .num(f.seconds)
            .build();
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Reads a direct-browse list (after `GETLIST`, or after `SENDLIST ` on a
/// pushed connection): the nick, then `(name, md5, size)` per file. At most
/// `max_bytes` are read.
pub async fn read_listing<R: AsyncRead + Unpin>(
    r: &mut R,
    max_bytes: usize,
    idle: Duration,
) -> Result<(String, Vec<(Vec<u8>, String, u64)>), TransferError> {
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = timeout(idle, r.read(&mut chunk))
            .await
            .map_err(|_| TransferError::Timeout("reading the list"))??;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
        if data.len() > max_bytes {
            return Err(TransferError::Protocol("list too long".into()));
        }
        if data.ends_with(b"\n\n") {
            break;
        }
    }
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    // TekNap answers `GETLIST` with a `SENDLIST` line before its nick; a pushed
    // list may carry `SENDLIST <nick>` on one line.
    let mut first = lines.next().unwrap_or_default();
    if first == b"SENDLIST" {
        first = lines.next().unwrap_or_default();
    } else if let Some(nick) = first.strip_prefix(b"SENDLIST ") {
        first = nick;
    }
    let nick = String::from_utf8_lossy(first).into_owned();
    let mut files = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some(([name, md5, size], _)) = Fields::at_least::<3>(line) {
            if let Some(size) = number(size) {
                files.push((
                    name.to_vec(),
                    String::from_utf8_lossy(md5).into_owned(),
                    size,
                ));
            }
        }
    }
    Ok((nick, files))
}

/// Connects to a peer's data port by `deadline` and reads its greeting (`1`).
async fn connect_greeted(addr: SocketAddr, deadline: Instant) -> Result<TcpStream, TransferError> {
    let mut s = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| TransferError::Timeout("connecting"))?
        .map_err(|source| TransferError::Connect { addr, source })?;
    if read_one(&mut s, deadline).await? != b'1' {
        return Err(TransferError::Protocol("no greeting".into()));
    }
    Ok(s)
}

/// A direct browse of a reachable user: connect to `addr`, `GETLIST`, read.
pub async fn fetch_listing(
    addr: SocketAddr,
    timeouts: Timeouts,
) -> Result<(String, Vec<(Vec<u8>, String, u64)>), TransferError> {
    let deadline = Instant::now() + timeouts.setup;
    let mut s = connect_greeted(addr, deadline).await?;
    s.write_all(b"GETLIST").await?;
    read_listing(&mut s, 16 << 20, timeouts.idle).await
}

/// A firewalled browsee's side of a direct browse: connect out to the
/// requester at `addr`, and send `SENDLIST <nick>` and the list.
pub async fn push_listing(
    addr: SocketAddr,
    listing: &[u8],
    timeouts: Timeouts,
) -> Result<(), TransferError> {
    let deadline = Instant::now() + timeouts.setup;
    let mut s = connect_greeted(addr, deadline).await?;
    s.write_all(b"SENDLIST ").await?;
    timeout(timeouts.idle, s.write_all(listing))
        .await
        .map_err(|_| TransferError::Timeout("sending the list"))??;
    let _ = s.shutdown().await;
    Ok(())
}

/// A firewalled uploader's side: connect out to the downloader at `addr`, offer
/// `file` with `SEND`, and send it from the offset the downloader asks for.
pub async fn push_upload(
    addr: SocketAddr,
    my_nick: &str,
    file: &Offered,
    timeouts: Timeouts,
) -> Result<u64, TransferError> {
    let deadline = Instant::now() + timeouts.setup;
    let mut s = connect_greeted(addr, deadline).await?;
    let size = fs::metadata(&file.path).await?.len();
    s.write_all(b"SEND").await?;
    let line = Line::new()
        .word(my_nick)
        .quoted(&file.name)
        .num(size)
        .build();
    s.write_all(&line).await?;
    let mut buf = Vec::new();
    // Digits (the offset), or an error text of a few bytes.
    read_head(&mut s, &mut buf, deadline, |b| {
        let digits = !b.is_empty() && b.iter().all(u8::is_ascii_digit);
        if digits || b.len() >= 3 {
            Head::Complete
        } else {
            Head::Incomplete
        }
    })
    .await?;
    let Some(offset) = number::<u64>(&buf) else {
        return Err(TransferError::Refused(text(&buf)));
    };
    if offset > size {
        return Err(TransferError::Protocol(format!(
            "offset {offset} beyond the end ({size})"
        )));
    }
    let sent = send_file(&mut s, &file.path, offset, size - offset, timeouts.idle).await?;
    let _ = s.shutdown().await;
    Ok(sent)
}

/// Reads the size that precedes the data: the digits of `expected` when it is
/// known, else every digit up to the first other byte. Returns the size and the
/// data bytes read past it.
async fn read_size<R: AsyncRead + Unpin>(
    r: &mut R,
    expected: Option<u64>,
    deadline: Instant,
) -> Result<(u64, Vec<u8>), TransferError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(e) = expected {
            let digits = e.to_string();
            if buf.len() >= digits.len() && buf.starts_with(digits.as_bytes()) {
                return Ok((e, buf.split_off(digits.len())));
            }
        }
        if let Some(end) = buf.iter().position(|b| !b.is_ascii_digit()) {
            if end == 0 {
                // An error text, not a size: read what follows it, briefly.
                let _ = timeout(PAUSE, r.read(&mut chunk)).await.map(|n| {
                    if let Ok(n) = n {
                        buf.extend_from_slice(&chunk[..n]);
                    }
                });
                return Err(TransferError::Refused(text(&buf)));
            }
            let size = number(&buf[..end])
                .ok_or_else(|| TransferError::Protocol("size out of range".into()))?;
            return Ok((size, buf.split_off(end)));
        }
        if buf.len() > 20 {
            return Err(TransferError::Protocol("size out of range".into()));
        }
        let n = timeout_at(deadline, r.read(&mut chunk))
            .await
            .map_err(|_| TransferError::Timeout("waiting for the file size"))??;
        if n == 0 {
            // Closed right after the digits: an empty remainder.
            return match number(&buf) {
                Some(size) => Ok((size, Vec::new())),
                None => Err(TransferError::Refused(text(&buf))),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A downloader's side when the uploader is reachable: connect to `addr`, `GET`
/// the part's file from where the `.part` ends, and write the rest into it. The
/// uploader must announce exactly the size the file was listed with.
pub async fn download(
    addr: SocketAddr,
    my_nick: &str,
    part: &Part,
    timeouts: Timeouts,
) -> Result<Downloaded, TransferError> {
    let (offset, size) = (part.offset, part.state.size);
    let deadline = Instant::now() + timeouts.setup;
    let mut s = connect_greeted(addr, deadline).await?;
    s.write_all(b"GET").await?;
    s.flush().await?;
    let overlap = offset.min(RESUME_OVERLAP);
    let line = Line::new()
        .word(my_nick)
        .quoted(&part.state.name)
        .num(offset - overlap)
        .build();
    s.write_all(&line).await?;
    let (said, head) = read_size(&mut s, Some(size), deadline).await?;
    if said != size {
        return Err(TransferError::SizeMismatch { said, listed: size });
    }
    receive_file(
        &mut s,
        &head,
        &part.part,
        offset,
        size,
        timeouts.idle,
        overlap,
    )
    .await
}

/// A downloader's side of a firewalled transfer: `s` was accepted on our data
/// port; expect `SEND` of the part's file from `from` with the listed size,
/// answer the offset where the `.part` ends, write the rest into it.
pub async fn receive_push(
    mut s: TcpStream,
    from: &str,
    part: &Part,
    timeouts: Timeouts,
) -> Result<Downloaded, TransferError> {
    let deadline = Instant::now() + timeouts.setup;
    let buf = open_exchange(&mut s, b"SEND", deadline).await?;
    let parsed = buf.strip_prefix(b"SEND").and_then(parse_triple);
    let Some((nick, file, size)) = parsed else {
        let _ = s.write_all(b"INVALID REQUEST").await;
        return Err(TransferError::Protocol(format!(
            "expected SEND, got {:?}",
            text(&buf)
        )));
    };
    if !nick.eq_ignore_ascii_case(from) || file != part.state.name {
        let _ = s.write_all(b"INVALID REQUEST").await;
        return Err(TransferError::Protocol(format!(
            "{nick} offered {:?}, not what we asked for",
            String::from_utf8_lossy(&file)
        )));
    }
    if size != part.state.size {
        let _ = s.write_all(b"INVALID REQUEST").await;
        return Err(TransferError::SizeMismatch {
            said: size,
            listed: part.state.size,
        });
    }
    let offset = part.offset;
    let overlap = offset.min(RESUME_OVERLAP);
    s.write_all((offset - overlap).to_string().as_bytes())
        .await?;
    receive_file(
        &mut s,
        &[],
        &part.part,
        offset,
        size,
        timeouts.idle,
        overlap,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest, Md5};

    fn temp(tag: &str, data: &[u8]) -> PathBuf {
        let p = std::env::temp_dir().join(format!("servent-head-md5-{tag}-{}", std::process::id()));
        std::fs::write(&p, data).unwrap();
        p
    }

    fn md5_of(b: &[u8]) -> [u8; 16] {
        Md5::digest(b).into()
    }

    fn hex(d: &[u8]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_fields_with_a_digest_shape() {
        let d = [0xabu8; 16];
        assert_eq!(md5_field(&hex(&d), 5), Some((d, false)));
        assert_eq!(md5_field(&hex(&d).to_uppercase(), 5), Some((d, false)));
        assert_eq!(md5_field(&format!("{}-5", hex(&d)), 5), Some((d, true)));
        // TekNap's suffix must be the listed size.
        assert_eq!(md5_field(&format!("{}-6", hex(&d)), 5), None);
        assert_eq!(md5_field(&"0".repeat(32), 5), None);
        assert_eq!(md5_field("WMA-FILE", 5), None);
        assert_eq!(md5_field(&"g".repeat(32), 5), None);
        assert_eq!(md5_field("abc", 5), None);
    }

    #[test]
    fn heads_hashed_as_nap_napster_and_teknap_do() {
        let body: Vec<u8> = (0..400_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        // No tags: nap's 300,000 bytes and Napster's 299,008.
        let p = temp("plain", &body);
        let got = head_md5s(&p).unwrap();
        assert!(got.contains(&HeadMd5 {
            start: 0,
            len: 300_000,
            digest: md5_of(&body[..300_000])
        }));
        assert!(got.contains(&HeadMd5 {
            start: 0,
            len: 299_008,
            digest: md5_of(&body[..299_008])
        }));
        assert_eq!(got.len(), 2);
        // An ID3v2 tag of 1000 + 10 bytes (synchsafe size 1000 = 0x07 0x68).
        let mut tagged = b"ID3\x03\x00\x00\x00\x00\x07\x68".to_vec();
        tagged.extend(std::iter::repeat_n(0u8, 1000));
        tagged.extend(&body);
        let p2 = temp("v2", &tagged);
        let got = head_md5s(&p2).unwrap();
        assert!(got.contains(&HeadMd5 {
            start: 1010,
            len: 299_008,
            digest: md5_of(&body[..299_008])
        }));
        // A short file with both tags: TekNap leaves the ID3v1 tag out.
        let mut short = tagged[..1010 + 5000].to_vec();
        short.extend(b"TAG");
        short.extend([0u8; 125]);
        let p3 = temp("v1v2", &short);
        let got = head_md5s(&p3).unwrap();
        assert!(got.contains(&HeadMd5 {
            start: 1010,
            len: 5000,
            digest: md5_of(&body[..5000])
        }));
        // A short file with an ID3v1 tag only.
        let mut v1 = body[..2000].to_vec();
        v1.extend(b"TAG");
        v1.extend([0u8; 125]);
        let p4 = temp("v1", &v1);
        assert!(head_md5s(&p4).unwrap().contains(&HeadMd5 {
            start: 0,
            len: 2000,
            digest: md5_of(&body[..2000])
        }));
        // A tiny file: its whole content.
        let p5 = temp("tiny", b"abc");
        assert_eq!(head_md5s(&p5).unwrap()[0].digest, md5_of(b"abc"));
        for p in [p, p2, p3, p4, p5] {
            let _ = std::fs::remove_file(p);
        }
    }

    #[test]
    fn a_browse_request_with_or_without_a_line_end() {
        for yes in [&b"GETLIST"[..], b"GETLIST\n", b"GETLIST\r\n"] {
            assert!(is_getlist(yes), "{yes:?}");
        }
        for no in [&b"GETLISTER \"a\" 0"[..], b"GET", b"GETLIS"] {
            assert!(!is_getlist(no), "{no:?}");
        }
    }

    #[tokio::test]
    async fn lists_as_teknap_and_as_we_send_them() {
        let line = "\"d\\a.mp3\" 0123456789abcdef0123456789abcdef 10 128 44100 1\n";
        for (input, nick) in [
            // Ours after GETLIST, TekNap's answer to GETLIST, our pushed list.
            (format!("alice\n{line}\n"), "alice"),
            (format!("SENDLIST\nbob\n{line}\n"), "bob"),
            (format!("SENDLIST carol\r\n{line}\n"), "carol"),
        ] {
            let mut r = input.as_bytes();
            let (got, files) = read_listing(&mut r, 1 << 20, Duration::from_secs(1))
                .await
                .unwrap();
            assert_eq!(got, nick);
            assert_eq!(files.len(), 1, "{input:?}");
            assert_eq!(files[0].2, 10);
        }
    }

    #[tokio::test]
    async fn a_resume_checks_the_bytes_it_already_has() {
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 31 + i / 7) as u8).collect();
        let part = temp("overlap", &data[..8192]);
        let idle = Duration::from_secs(2);
        // An uploader that starts over at byte 0 (TekNap): refused, and the
        // .part is left as it was.
        let mut from_zero = &data[..];
        let err = receive_file(&mut from_zero, &[], &part, 8192, 20_000, idle, 4096)
            .await
            .unwrap_err();
        assert!(matches!(err, TransferError::Part(_)), "{err:?}");
        assert_eq!(std::fs::read(&part).unwrap(), &data[..8192]);
        // One that sends from where it was asked (4 KiB before the end, part
        // of it already read with the size): the file is whole.
        let mut rest = &data[4096 + 100..];
        receive_file(
            &mut rest,
            &data[4096..4096 + 100],
            &part,
            8192,
            20_000,
            idle,
            4096,
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), data);
        let _ = std::fs::remove_file(part);
    }
}
