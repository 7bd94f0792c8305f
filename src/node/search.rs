//! Searching as a leaf: connect to a node, send a query, collect hits; the same
//! link carries the Pushes a download sends to firewalled hosts.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

use crate::fasttrack::hash::Fth;
use crate::framing::DescriptorCodec;
use crate::output;
use crate::wire::bye::{self, Bye};
use crate::wire::huge::Sha1Urn;
use crate::wire::{Function, Guid, Hops, Message, Push, Query, QueryFlags, QueryHit, Ttl};

use super::deflate::{Deflate, Inflate};
use super::handshake::{self, HandshakeFailure};
use crate::wire::handshake as hs;

/// One result of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchHit {
    pub name: String,
    pub size: u64,
    pub urn: Option<Sha1Urn>,
    /// The FastTrack hash, when the result carries it (GGEP `FTH`).
    pub fth: Option<Fth>,
    pub index: u32,
    /// Where to download from: the IPv4 field, or the IPv6 address of GGEP
    /// `6` when the responder has no IPv4 (127.0.0.0 in the field).
    pub host: IpAddr,
    pub port: u16,
    pub servent_guid: Guid,
    /// The responder says it must be reached by a Push.
    pub push: bool,
    /// The responder says all its upload slots are taken.
    pub busy: bool,
}

impl SearchHit {
    /// The hit as the record every command prints (see [`crate::output`]).
    pub fn record(&self) -> output::Hit {
        output::Hit {
            network: output::Network::Gnutella,
            name: self.name.clone(),
            size: self.size,
            urn: self.urn.map(|u| u.to_string()),
            fth: self.fth.map(|f| f.hex()),
            host: self.host.to_string(),
            port: Some(self.port),
            gnutella: Some(output::GnutellaHit {
                index: self.index,
                servent_guid: self.servent_guid.to_hex(),
                push: self.push,
                busy: self.busy,
            }),
            napster: None,
        }
    }
}

/// The results of a QueryHit, fakes left out.
pub fn hits_of(hit: &QueryHit) -> Vec<SearchHit> {
    let flags = hit.qhd().map(|t| t.flags()).unwrap_or_default();
    let vendor = hit.qhd().map(|t| t.vendor);
    let mut v = Vec::with_capacity(hit.results.len());
    for r in &hit.results {
        let h = SearchHit {
            name: r.name_lossy(),
            size: r.file_size(),
            urn: r.ext.sha1_urns().next(),
            fth: r.fth(),
            index: r.index,
            host: hit.host().ip(),
            port: hit.port,
            servent_guid: hit.servent,
            push: flags.push == Some(true),
            busy: flags.busy == Some(true),
        };
        if let Some(why) = spam(&h, vendor) {
            tracing::debug!(name = %h.name, host = %h.host, why, "dropped a fake result");
            continue;
        }
        v.push(h);
    }
    v
}

/// Why a search could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        peer: String,
        source: std::io::Error,
    },
    #[error("{peer} refused us: {source}")]
    Handshake {
        peer: String,
        source: HandshakeFailure,
    },
    #[error("timed out connecting to {peer}")]
    Timeout { peer: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Ultrapeers tried after a leaf refused us and pointed at them.
const FOLLOW_TRY: usize = 3;

/// Connects to `peer` as a leaf. A node that cannot take us (a leaf itself, or
/// full) names ultrapeers in its refusal; up to [`FOLLOW_TRY`] of them are tried
/// in turn, within the same `timeout`.
async fn connect_leaf(
    peer: &str,
    timeout: Duration,
) -> Result<(TcpStream, handshake::Established), SearchError> {
    let one = |peer: String| async move {
        let mut stream =
            TcpStream::connect(&peer)
                .await
                .map_err(|source| SearchError::Connect {
                    peer: peer.clone(),
                    source,
                })?;
        // Deployed ultrapeers (gtk-gnutella) refuse uncompressed connections.
        let mut headers = super::client_headers();
        headers.push(hs::ACCEPT_ENCODING, hs::DEFLATE);
        match handshake::connect(&mut stream, headers, true).await {
            Ok(est) => Ok((stream, est)),
            Err(source) => Err(SearchError::Handshake { peer, source }),
        }
    };
    let work = async {
        let first = one(peer.to_string()).await;
        let suggested = match &first {
            Err(SearchError::Handshake {
                source: HandshakeFailure::Refused { try_hosts, .. },
                ..
            }) => try_hosts.clone(),
            _ => return first,
        };
        for addr in suggested.into_iter().take(FOLLOW_TRY) {
            tracing::info!(refused_by = peer, trying = %addr, "following the refusal's suggestion");
            if let Ok(ok) = one(addr.to_string()).await {
                return Ok(ok);
            }
        }
        first
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| SearchError::Timeout {
            peer: peer.to_string(),
        })?
}

/// A connection to a node as a leaf, kept open after a search so that Pushes can
/// be sent along it. Hits for our queries arrive through a bounded channel; other
/// messages are read and dropped.
pub struct LeafLink {
    writer: tokio::sync::Mutex<(OwnedWriteHalf, Option<Deflate>)>,
    hits: tokio::sync::Mutex<mpsc::Receiver<(Guid, QueryHit)>>,
    reader: tokio::task::JoinHandle<()>,
    /// Out-of-band hits: our UDP address (the link's local IP) and the
    /// claims of our searches, when the node's address and ours allow it.
    oob: Option<Oob>,
    /// Our address as the node sees it (the local end of the connection).
    pub local: SocketAddr,
    /// The node's address, when it said it answers GUESS queries (`X-Guess`).
    guess: Option<SocketAddr>,
    /// How a quiet query goes on by GUESS (`client: false`: it does not).
    pub guess_config: crate::core::guess::GuessConfig,
}

/// QueryHits waiting to be read; more are dropped while the reader is behind.
const HIT_QUEUE: usize = 256;

impl LeafLink {
    /// Connects to `peer` and completes the handshake within `timeout`.
    pub async fn connect(peer: &str, timeout: Duration) -> Result<LeafLink, SearchError> {
        let (stream, est) = connect_leaf(peer, timeout).await?;
        let local = super::listen::canonical(stream.local_addr()?);
        let node = super::listen::canonical(stream.peer_addr()?);
        let guess = match est.headers.get(hs::X_GUESS) {
            Some(_) => stream.peer_addr().ok().map(super::listen::canonical),
            None => None,
        };
        let (r, w) = stream.into_split();
        let input = std::io::Cursor::new(est.leftover.to_vec()).chain(r);
        let source: Box<dyn AsyncRead + Unpin + Send> = if est.deflate_in {
            Box::new(Inflate::new(input))
        } else {
            Box::new(input)
        };
        let (tx, rx) = mpsc::channel(HIT_QUEUE);
        let oob = Oob::start(local, node, tx.clone()).await;
        let reader = tokio::spawn(async move {
            let mut framed = FramedRead::new(source, DescriptorCodec::default());
            while let Some(Ok(frame)) = framed.next().await {
                match frame.header.function {
                    Function::Bye => break,
                    Function::QueryHit => {
                        if let Ok(Message::QueryHit(hit)) = frame.message() {
                            let _ = tx.try_send((frame.header.guid, hit));
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(LeafLink {
            writer: tokio::sync::Mutex::new((w, est.deflate_out.then(Deflate::default))),
            hits: tokio::sync::Mutex::new(rx),
            reader,
            oob,
            local,
            guess,
            guess_config: Default::default(),
        })
    }

    async fn send(&self, msg: &Message, ttl: u8) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        msg.encode_frame(Guid::new_random(), Ttl(ttl.max(1)), Hops(0), &mut out)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut w = self.writer.lock().await;
        let (w, deflate) = &mut *w;
        match deflate.as_mut() {
            Some(z) => w.write_all(&z.pack([&out[..]])).await,
            None => w.write_all(&out).await,
        }
    }

    /// Sends one query and calls `on_hit` for each result as it arrives, until
    /// `timeout` has passed or `max_results` results have come. Returns the number
    /// of results.
    pub async fn query(
        &self,
        words: &str,
        ttl: u8,
        timeout: Duration,
        max_results: usize,
        mut on_hit: impl FnMut(SearchHit),
    ) -> Result<usize, SearchError> {
        let mut out = BytesMut::new();
        let mut id = Guid::new_random();
        let mut query = Query::new(QueryFlags::with_bits(0), words);
        let mut ggep = Vec::new();
        if self.local.is_ipv6() {
            // IPv6-Ready: on an IPv6 link we take IPv6 hosts in the hits.
            ggep.extend(crate::wire::ipv6::I6::Also.ext());
        }
        if let Some(oob) = &self.oob {
            // Asked for out-of-band hits, at our UDP address (0x0400 and SO).
            id = crate::wire::oob::with_muid_addr(id, oob.addr);
            query.flags = QueryFlags::with_bits(QueryFlags::OOB);
            ggep.push(crate::wire::GgepExt::flag(crate::wire::oob::GGEP_SO));
            oob.claims.lock().unwrap_or_else(|e| e.into_inner()).start(
                id,
                crate::core::oob::Owner::Own(id),
                std::time::Instant::now(),
            );
        }
        if !ggep.is_empty() {
            query
                .ext
                .items
                .push(crate::wire::ExtItem::Ggep(crate::wire::Ggep::new(ggep)));
        }
        Message::Query(query)
            .encode_frame(id, Ttl(ttl.max(1)), Hops(0), &mut out)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        {
            let mut w = self.writer.lock().await;
            let (w, deflate) = &mut *w;
            match deflate.as_mut() {
                Some(z) => w.write_all(&z.pack([&out[..]])).await?,
                None => w.write_all(&out).await?,
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // Quiet for long, the query goes on by GUESS (when the node serves it).
        let mut guess = match self.guess.filter(|_| self.guess_config.client) {
            Some(first) => {
                // Unmarked: a GUESS query's MUID names nobody to send OOB hits to.
                let mut plain = BytesMut::new();
                Query::new(QueryFlags::with_bits(0), words)
                    .encode(&mut plain)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let payload = plain.freeze();
                super::guess_search::start(
                    self.local.ip(),
                    vec![first],
                    payload,
                    self.guess_config.clone(),
                )
                .await
            }
            None => None,
        };
        let mut hits = self.hits.lock().await;
        let mut count = 0;
        // A file reached along two paths (a leaf under two ultrapeers, or an
        // ultrapeer answering for a leaf that answers too) is shown once.
        let mut seen = Seen::default();
        while count < max_results {
            let by_guess = async {
                match guess.as_mut() {
                    Some(g) => g.hits.recv().await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                h = hits.recv() => h.map(Some),
                h = by_guess => Some(h.map(|hit| (id, hit))),
                _ = tokio::time::sleep_until(deadline) => {
                    // Time is up: stop with what we have.
                    break;
                }
            };
            let (guid, hit) = match next {
                Some(Some(h)) => h,
                // The GUESS client stopped: TCP goes on alone.
                Some(None) => {
                    guess = None;
                    continue;
                }
                None => {
                    tracing::warn!(
                        results = count,
                        "the node closed the connection before the search's time was up"
                    );
                    break;
                }
            };
            if guid != id {
                continue;
            }
            for h in hits_of(&hit) {
                if count == max_results {
                    break;
                }
                if !seen.first(&h) {
                    continue;
                }
                on_hit(h);
                count += 1;
            }
            if let Some(g) = &guess {
                g.results.send_replace(count as u32);
            }
        }
        Ok(count)
    }

    /// Asks `servent` (through the node) to connect to `to` and offer file `index`.
    /// An IPv6 `to` goes in GGEP `6`, with 127.0.0.0 in the IPv4 field.
    pub async fn push(&self, servent: Guid, index: u32, to: SocketAddr) -> std::io::Result<()> {
        let push = Message::Push(Push::to(servent, index, to));
        self.send(&push, 7).await
    }

    /// Says Bye and closes.
    pub async fn close(self) {
        let _ = self
            .send(&Message::Bye(Bye::new(bye::CODE_SHUTDOWN, "Done")), 1)
            .await;
        let mut w = self.writer.lock().await;
        let _ = w.0.shutdown().await;
        self.reader.abort();
        if let Some(o) = &self.oob {
            o.task.abort();
        }
    }
}

/// A leaf link's out-of-band side: a UDP socket on the link's local IP,
/// answering offers (LIME/12) for our searches with claims (LIME/11) and
/// passing the claimed hits, checked as the node checks them
/// (`core::oob::Claims`), to the link's hit queue.
struct Oob {
    addr: SocketAddrV4,
    claims: std::sync::Arc<std::sync::Mutex<crate::core::oob::Claims>>,
    task: tokio::task::JoinHandle<()>,
}

impl Oob {
    /// Out of band only where replies can reach us: our local address is
    /// routable, or the node's is not (a local mesh, where the node sees us
    /// at the address we see). `None` otherwise, or without a socket.
    async fn start(
        local: SocketAddr,
        peer: SocketAddr,
        hits: mpsc::Sender<(Guid, QueryHit)>,
    ) -> Option<Oob> {
        use crate::core::addr::is_routable;
        let SocketAddr::V4(l4) = local else {
            return None;
        };
        if !is_routable(local.ip()) && is_routable(peer.ip()) {
            return None;
        }
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0))
            .await
            .ok()?;
        let addr = SocketAddrV4::new(*l4.ip(), socket.local_addr().ok()?.port());
        let mut secret = [0u8; 16];
        secret.copy_from_slice(&Guid::new_random().0);
        let claims = std::sync::Arc::new(std::sync::Mutex::new(crate::core::oob::Claims::new(
            crate::core::oob::OobConfig::default(),
            secret,
        )));
        let task = tokio::spawn(oob_loop(socket, claims.clone(), hits));
        Some(Oob { addr, claims, task })
    }
}

/// Reads datagrams: offers for our searches are claimed, hits taken when
/// claimed with our token; everything else is ignored.
async fn oob_loop(
    socket: tokio::net::UdpSocket,
    claims: std::sync::Arc<std::sync::Mutex<crate::core::oob::Claims>>,
    hits: mpsc::Sender<(Guid, QueryHit)>,
) {
    use crate::core::oob::{Answer, HitVerdict};
    use crate::wire::oob::{Ack, Indication, hit_token};
    let mut buf = vec![0u8; crate::wire::udp::MAX_DATAGRAM + 1];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(d) = crate::wire::udp::parse(bytes::Bytes::copy_from_slice(&buf[..n])) else {
            continue;
        };
        let muid = d.frame.header.guid;
        match d.frame.header.function {
            Function::Vendor => {
                let Ok(m) = crate::wire::VendorMsg::parse(&d.frame.payload) else {
                    continue;
                };
                let Ok(offer) = Indication::parse(&m) else {
                    continue;
                };
                let answer = claims.lock().unwrap_or_else(|e| e.into_inner()).indication(
                    &muid,
                    from,
                    offer.hits,
                    offer.version,
                    std::time::Instant::now(),
                );
                if let Answer::Ack { wanted, token } = answer {
                    let ack = Ack {
                        wanted,
                        token: token.map(|t| bytes::Bytes::copy_from_slice(&t)),
                    };
                    let mut out = BytesMut::new();
                    // TTL 9: we read deflated hits.
                    if Message::Vendor(ack.to_vendor())
                        .encode_frame(muid, Ttl(9), Hops(0), &mut out)
                        .is_ok()
                    {
                        let _ = socket.send_to(&out, from).await;
                    }
                }
            }
            Function::QueryHit => {
                let Ok(view) = crate::wire::queryhit::QueryHitView::parse(&d.frame.payload) else {
                    continue;
                };
                let verdict = claims.lock().unwrap_or_else(|e| e.into_inner()).hit(
                    &muid,
                    from,
                    view.len() as u32,
                    hit_token(&view.trailer),
                );
                if verdict == HitVerdict::Drop("oob-token-forged") {
                    tracing::debug!(%from, "dropped an out-of-band hit with a forged token");
                }
                if let HitVerdict::Take(_) = verdict {
                    if let Ok(Message::QueryHit(hit)) = d.frame.message() {
                        let _ = hits.try_send((muid, hit));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Results already shown, by host and by servent, so that each (host, file) is
/// shown once however many paths it came by.
#[derive(Default)]
pub struct Seen {
    by_host: std::collections::HashSet<(IpAddr, u16, FileKey)>,
    by_servent: std::collections::HashSet<(Guid, FileKey)>,
}

/// A file as a result names it: by SHA-1 when it has one, else by index and
/// name.
#[derive(Clone, PartialEq, Eq, Hash)]
enum FileKey {
    Sha1(Sha1Urn),
    Named(u32, String),
}

impl Seen {
    /// Whether `h` is new (and remembers it).
    pub fn first(&mut self, h: &SearchHit) -> bool {
        let file = match h.urn {
            Some(u) => FileKey::Sha1(u),
            None => FileKey::Named(h.index, h.name.clone()),
        };
        let a = self.by_host.insert((h.host, h.port, file.clone()));
        let b = self.by_servent.insert((h.servent_guid, file));
        a && b
    }
}

/// Why a result is a known fake, if it is one. LimeWire answers every query
/// holding "limewire" with an advertisement made to look like a file: "LimeWire
/// PRO Available at LimeWire.com", 1024 bytes, index 0xFFFFFFFF, no SHA-1, from
/// vendor `LIME` with an all-zero servent GUID (see `protocol-spec/descriptors.md`,
/// section 9.5). It is never a real share.
pub fn spam(h: &SearchHit, vendor: Option<[u8; 4]>) -> Option<&'static str> {
    let name = h.name.to_ascii_lowercase();
    let limewire = vendor.is_some_and(|v| v.eq_ignore_ascii_case(b"LIME"));
    let advert = name.starts_with("limewire pro") && name.contains("limewire.com");
    let canned = h.index == u32::MAX && h.urn.is_none() && h.servent_guid == Guid([0; 16]);
    if limewire && (advert || canned) {
        return Some("LimeWire PRO advertisement");
    }
    None
}

/// Searches `words` through `peer`, calling `on_hit` for each result as it arrives,
/// until `timeout` has passed or `max_results` results have come. Returns the
/// number of results.
pub async fn search(
    peer: &str,
    words: &str,
    ttl: u8,
    timeout: Duration,
    max_results: usize,
    on_hit: impl FnMut(SearchHit),
) -> Result<usize, SearchError> {
    search_guess(peer, words, ttl, timeout, max_results, true, on_hit).await
}

/// As [`search`], going on by GUESS when the TCP query goes quiet only when
/// `guess` is set.
pub async fn search_guess(
    peer: &str,
    words: &str,
    ttl: u8,
    timeout: Duration,
    max_results: usize,
    guess: bool,
    on_hit: impl FnMut(SearchHit),
) -> Result<usize, SearchError> {
    let mut link = LeafLink::connect(peer, timeout).await?;
    link.guess_config.client = guess;
    let count = link.query(words, ttl, timeout, max_results, on_hit).await;
    link.close().await;
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines() {
        let hit = SearchHit {
            name: "a \"b\"\n.mp3".into(),
            size: 3,
            urn: Some(Sha1Urn::digest(b"abc")),
            fth: None,
            index: 7,
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 6346,
            servent_guid: Guid([0xab; 16]),
            push: true,
            busy: false,
        };
        assert_eq!(
            output::json_line(&hit.record()),
            "{\"v\":1,\"type\":\"hit\",\"network\":\"gnutella\",\"name\":\"a \\\"b\\\"\\n.mp3\",\"size\":3,\"urn\":\"urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\",\"host\":\"127.0.0.1\",\"port\":6346,\"gnutella\":{\"index\":7,\"servent_guid\":\"ABABABABABABABABABABABABABABABAB\",\"push\":true,\"busy\":false}}"
        );
    }

    #[test]
    fn limewires_advertisement_is_recognised_and_nothing_else() {
        // As LimeWire 5.6.2 sends it for any query holding "limewire".
        let ad = SearchHit {
            name: "LimeWire PRO Available at LimeWire.com".into(),
            size: 1024,
            urn: None,
            fth: None,
            index: u32::MAX,
            host: std::net::Ipv4Addr::new(64, 61, 25, 171).into(),
            port: 6346,
            servent_guid: Guid([0; 16]),
            push: false,
            busy: false,
        };
        assert!(spam(&ad, Some(*b"LIME")).is_some());
        // The same name from another vendor, or a real LimeWire share about
        // LimeWire, is shown.
        assert!(spam(&ad, Some(*b"GTKG")).is_none());
        let real = SearchHit {
            name: "limewire pro tips.txt".into(),
            urn: Some(Sha1Urn::digest(b"x")),
            index: 3,
            servent_guid: Guid([7; 16]),
            ..ad.clone()
        };
        assert!(spam(&real, Some(*b"LIME")).is_none());
    }
}
