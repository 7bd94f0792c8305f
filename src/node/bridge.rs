//! Between the FastTrack supernode and the Gnutella side of the node: a
//! FastTrack user's search run as one of the node's own Gnutella searches (its
//! hits that carry an FTH go back to the user as results), the node's own
//! files offered to FastTrack users, and the `GIVE` a FastTrack user sends
//! when it answers a push from the node.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::engine::EngineRef;
use super::search::{SearchHit, Seen, hits_of};
use crate::core::library::{FileRef, Library};
use crate::fasttrack::server::{Bridge, FastTrack};
use crate::fasttrack::supernode::{Fth, Hit, NodeEntry, SessionId, Share, Tag};
use crate::wire::{Guid, Hops, Message, Query, QueryFlags, QueryHit, Ttl};

/// Hits one bridged search takes from the Gnutella network (the supernode
/// caps what reaches the user anyway).
const MAX_BRIDGED_HITS: usize = 500;

/// Runs FastTrack users' searches as the node's own Gnutella searches.
pub struct NodeBridge {
    engine: EngineRef,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// How long a search takes hits (the supernode ends the user's search then).
    wait: Duration,
}

impl NodeBridge {
    pub fn new(
        engine: EngineRef,
        tracker: TaskTracker,
        cancel: CancellationToken,
        wait: Duration,
    ) -> NodeBridge {
        NodeBridge {
            engine,
            tracker,
            cancel,
            wait,
        }
    }
}

/// A Gnutella hit as a FastTrack result, when a FastTrack user can fetch and
/// check it: it carries the FTH, and its host takes connections.
pub fn as_fasttrack(h: &SearchHit) -> Result<Hit, &'static str> {
    let fth = h.fth.ok_or("no FTH")?;
    if h.push || h.port == 0 {
        return Err("firewalled");
    }
    // FastTrack results name IPv4 hosts only.
    let std::net::IpAddr::V4(ip) = h.host.to_canonical() else {
        return Err("IPv6 host");
    };
    Ok(Hit {
        addr: SocketAddrV4::new(ip, h.port),
        bandwidth: 0,
        user: Bytes::from_static(b"gnutella"),
        hash: *fth.as_bytes(),
        file_id: u32::from(fth.file_id()),
        size: h.size,
        tags: vec![Tag::filename(&h.name)],
    })
}

impl Bridge for NodeBridge {
    fn search(&self, ft: FastTrack, session: SessionId, id: u16, text: String, hash: Option<Fth>) {
        // Called while the supernode decides: everything happens in a task of
        // its own, which may then call back into the supernode.
        let (engine, cancel, wait) = (self.engine.clone(), self.cancel.clone(), self.wait);
        self.tracker.spawn(async move {
            // A search by FTH has no Gnutella form (hits name files by SHA-1).
            let text = text.trim().to_string();
            let guid = Guid::new_random();
            let mut out = BytesMut::new();
            if hash.is_some()
                || text.is_empty()
                || text.len() > 200
                || Message::Query(Query::new(QueryFlags::with_bits(0), &text))
                    .encode_frame(guid, Ttl(7), Hops(0), &mut out)
                    .is_err()
            {
                ft.end_search(session, id);
                return;
            }
            let payload = Bytes::from(out).slice(crate::wire::header::HEADER_LEN..);
            let (tx, mut rx) = mpsc::channel::<Bytes>(64);
            if engine.search(guid, payload, 7, tx) == 0 {
                // Nobody to ask: the user need not wait.
                engine.end_search(guid);
                ft.end_search(session, id);
                return;
            }
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            let mut seen = Seen::default();
            let mut taken = 0;
            while taken < MAX_BRIDGED_HITS {
                let payload = tokio::select! {
                    p = rx.recv() => match p { Some(p) => p, None => break },
                    _ = &mut deadline => break,
                    _ = cancel.cancelled() => break,
                };
                let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
                let Ok(hit) = QueryHit::parse(&payload, &mut budget) else {
                    continue;
                };
                let mut hits = Vec::new();
                for h in hits_of(&hit) {
                    if !seen.first(&h) {
                        continue;
                    }
                    taken += 1;
                    match as_fasttrack(&h) {
                        Ok(x) => hits.push(x),
                        Err(why) => ft.count_unbridged(why),
                    }
                }
                if !hits.is_empty() {
                    ft.bridged(session, id, hits);
                }
            }
            engine.end_search(guid);
        });
    }
}

/// How often the library is looked at for files to offer FastTrack users.
const OFFER_EVERY: Duration = Duration::from_secs(2);

/// Other supernodes to tell FastTrack users about (0x00): our Gnutella links
/// to other servent ultrapeers, which take FastTrack sessions on their
/// Gnutella port. Refreshed every few seconds.
pub async fn tell_nodes(engine: EngineRef, ft: FastTrack, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        let nodes = engine
            .links()
            .into_iter()
            .filter(|(r, meta)| {
                r.info.link != crate::core::tier::Link::ToLeaf
                    && meta
                        .as_ref()
                        .and_then(|m| m.user_agent.as_deref())
                        .is_some_and(|ua| ua.starts_with("servent/"))
            })
            .filter_map(|(r, _)| match r.info.remote_listen? {
                std::net::SocketAddr::V4(a) => Some(NodeEntry {
                    addr: a,
                    // Seen a minute ago at most; "0" would tell giFT the node
                    // is near this one and not worth a session of its own.
                    last_seen: 1,
                    load: 50,
                }),
                std::net::SocketAddr::V6(_) => None,
            })
            .collect();
        ft.set_nodes(nodes);
    }
}

/// The FastTrack media type of a file name, by its extension.
pub fn media_of(name: &str) -> u8 {
    let ext = name
        .rsplit_once('.')
        .map_or("", |(_, e)| e)
        .to_ascii_lowercase();
    match ext.as_str() {
        "mp3" | "ogg" | "wav" | "flac" | "wma" | "m4a" | "aac" | "mid" => 1,
        "avi" | "mpg" | "mpeg" | "mp4" | "mkv" | "mov" | "wmv" | "asf" | "ogm" => 2,
        "jpg" | "jpeg" | "png" | "gif" | "bmp" | "tif" | "tiff" => 3,
        "txt" | "pdf" | "doc" | "rtf" | "html" | "htm" | "ps" | "odt" => 4,
        "exe" | "msi" | "com" => 5,
        _ => 0,
    }
}

/// A library file with its FTH as a FastTrack share.
fn share_of(f: &FileRef<'_>) -> Option<Share> {
    let fth = f.fth?;
    Some(Share {
        media: media_of(f.name),
        hash: *fth.as_bytes(),
        file_id: u32::from(fth.file_id()),
        size: f.size,
        tags: vec![Tag::filename(f.name)],
    })
}

/// The library's files with these indexes, as FastTrack shares keyed by
/// index.
fn shares_of(lib: &Library, indexes: &[u32]) -> Vec<(u32, Share)> {
    let view = lib.view();
    indexes
        .iter()
        .filter_map(|&i| Some((i, share_of(&view.get(i)?)?)))
        .collect()
}

/// What is in `a` and not in `b`, both sorted.
fn missing_from(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut rest = b.iter().peekable();
    a.iter()
        .copied()
        .filter(|x| {
            while rest.next_if(|y| *y < x).is_some() {}
            rest.peek() != Some(&x)
        })
        .collect()
}

/// Keeps the supernode's view of the node's own files in step with the
/// library (files are offered once their FTH is known), served on `port`,
/// while FastTrack users are logged in. With none, the supernode holds no copy
/// of the library (for 100,000 files, some 30 MB): it is made when the first
/// user logs in and dropped when the last one leaves. In between, a change to
/// the library changes the supernode's copy by the files added and removed
/// alone (a file's index never outlives a change of its content), so a long
/// hashing run with users logged in does not rebuild it every tick.
pub async fn offer_own_files(
    engine: EngineRef,
    ft: FastTrack,
    port: u16,
    cancel: CancellationToken,
) {
    let at = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
    // The library's change count when its files were last offered, and the
    // indexes offered then.
    let mut offered: Option<(u64, Vec<u32>)> = None;
    let mut tick = tokio::time::interval(OFFER_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ft.first_user() => {}
            _ = cancel.cancelled() => return,
        }
        if !ft.has_users() {
            if offered.take().is_some() {
                ft.clear_own_files(at);
            }
            continue;
        }
        let changes = engine.library(|lib| lib.changes());
        let before = match &offered {
            Some((seen, _)) if *seen == changes => continue,
            Some((_, before)) => &before[..],
            None => {
                ft.clear_own_files(at);
                &[]
            }
        };
        let now = engine.library(|lib| lib.view().indexes_with_fth());
        let gone = missing_from(before, &now);
        if !gone.is_empty() {
            ft.change_own_files(&gone, Vec::new());
        }
        offer_in_batches(&engine, &ft, &missing_from(&now, before)).await;
        offered = Some((changes, now));
    }
}

/// Files offered to the supernode per turn of the library's and the
/// supernode's locks.
const OFFER_BATCH: usize = 1024;

/// Offers the library's files with these indexes, a batch at a time: neither
/// lock is held for a whole library (the engine's lock is the one every
/// relayed message takes), and at most a batch of copies is alive at once
/// rather than one of every file. A file removed between batches is left out
/// (its index is gone at the next change and never comes back: indexes are not
/// reused), one added is offered at the next change.
async fn offer_in_batches(engine: &EngineRef, ft: &FastTrack, indexes: &[u32]) {
    for chunk in indexes.chunks(OFFER_BATCH) {
        let batch = engine.library(|lib| shares_of(lib, chunk));
        ft.change_own_files(&[], batch);
        tokio::task::yield_now().await;
    }
}

/// The longest `GIVE <id>\r\n` line taken.
const MAX_GIVE_LEN: usize = 64;

/// Parses `GIVE <decimal id>\r\n` (a bare `\n` is taken too); none while the
/// line is not complete.
pub fn parse_give(buf: &[u8]) -> Result<Option<(u32, usize)>, String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let id = line
        .strip_prefix(b"GIVE ")
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.trim().parse::<u32>().ok())
        .ok_or_else(|| "not a GIVE line".to_string())?;
    Ok(Some((id, end + 1)))
}

/// Reads the `GIVE` line a FastTrack user opens its push answer with; what
/// follows is ours to speak (an HTTP request).
pub async fn read_give(stream: &mut TcpStream, mut buf: BytesMut) -> Result<u32, String> {
    loop {
        match parse_give(&buf)? {
            Some((id, used)) if used == buf.len() => return Ok(id),
            Some(_) => return Err("bytes after the GIVE line".into()),
            None => {}
        }
        if buf.len() >= MAX_GIVE_LEN {
            return Err("GIVE line too long".into());
        }
        buf.reserve(64);
        let n = stream.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the GIVE ended".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_one_sorted_list_has_and_the_other_not() {
        assert_eq!(missing_from(&[1, 2, 3, 7, 9], &[2, 3, 4, 9, 10]), [1, 7]);
        assert_eq!(missing_from(&[2, 3, 4, 9, 10], &[1, 2, 3, 7, 9]), [4, 10]);
        assert_eq!(missing_from(&[], &[1]), Vec::<u32>::new());
        assert_eq!(missing_from(&[5, 6], &[]), [5, 6]);
        assert_eq!(missing_from(&[5, 6], &[5, 6]), Vec::<u32>::new());
        // Against a model, over many pairs of sorted lists.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let mut list = |n: u64| {
                let mut v: Vec<u32> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % 40) as u32
                    })
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let (a, b) = (list(20), list(20));
            let want: Vec<u32> = a.iter().copied().filter(|v| !b.contains(v)).collect();
            assert_eq!(missing_from(&a, &b), want, "{a:?} {b:?}");
        }
    }

    #[test]
    fn give_lines() {
        assert_eq!(parse_give(b"GIVE 1\r\n"), Ok(Some((1, 8))));
        assert_eq!(parse_give(b"GIVE 42\n"), Ok(Some((42, 8))));
        assert_eq!(parse_give(b"GIVE 4"), Ok(None));
        assert!(parse_give(b"GIVE x\r\n").is_err());
        assert!(parse_give(b"GIVE 99999999999\r\n").is_err());
    }
}
