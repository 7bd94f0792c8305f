//! GUESS for `servent search --peer`: the search has no node behind it, so
//! it runs its own client (`core::guess::Client`) from a UDP socket of its
//! own. When the leaf link's TCP query goes quiet, the query goes by UDP to
//! the peer (when it said `X-Guess`) and to the GUESS ultrapeers its
//! acknowledgements name, one after another; the hits that answer it come
//! back through a channel to the search's loop.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::core::addr::Scope;
use crate::core::guess::{Action, Client, GuessConfig, GuessHosts};
use crate::wire::guess::{self as g, GuessPong};
use crate::wire::udp::{self, MAX_DATAGRAM};
use crate::wire::{Frame, Function, Guid, Header, Hops, Message, QueryHit, Ttl};

/// How often the client is stepped.
const STEP: Duration = Duration::from_millis(250);
/// Hits waiting for the search's loop; more are dropped meanwhile.
const HIT_QUEUE: usize = 64;

/// A GUESS client running beside a TCP search.
pub struct GuessSearch {
    /// Hits taken by UDP.
    pub hits: mpsc::Receiver<QueryHit>,
    /// The search's results so far (by any path), for the client to know when
    /// the TCP query went quiet and when it has enough.
    pub results: watch::Sender<u32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GuessSearch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the client for `query` (a Query payload) with `first` as the GUESS
/// hosts known, from a socket on `local_ip`. `None` when the socket cannot be
/// opened (the search goes on over TCP alone).
pub async fn start(
    local_ip: IpAddr,
    first: Vec<SocketAddr>,
    query: Bytes,
    config: GuessConfig,
) -> Option<GuessSearch> {
    let socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no UDP socket for GUESS");
            return None;
        }
    };
    let (hits_tx, hits) = mpsc::channel(HIT_QUEUE);
    let (results, progress) = watch::channel(0u32);
    let scope = Scope::of(local_ip, false);
    let task = tokio::spawn(run(socket, scope, first, query, config, progress, hits_tx));
    Some(GuessSearch {
        hits,
        results,
        task,
    })
}

async fn run(
    socket: UdpSocket,
    scope: Scope,
    first: Vec<SocketAddr>,
    query: Bytes,
    config: GuessConfig,
    progress: watch::Receiver<u32>,
    hits: mpsc::Sender<QueryHit>,
) {
    let mut hosts = GuessHosts::new(config.max_hosts);
    let mut client = Client::new(config);
    let start = Instant::now();
    for h in first {
        hosts.learn(h, start);
    }
    let search = Guid::new_random();
    client.watch(search, query, start);
    let mut counted = 0u32;
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut tick = tokio::time::interval(STEP);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let seen = *progress.borrow();
                if seen > counted {
                    client.results(search, seen - counted, now);
                    counted = seen;
                }
                for a in client.step(&mut hosts, now, Guid::new_random) {
                    let (to, bytes) = match encode(a) {
                        Some(x) => x,
                        None => continue,
                    };
                    let _ = socket.send_to(&bytes, to).await;
                }
            }
            got = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                let Ok(d) = udp::parse(Bytes::copy_from_slice(&buf[..n])) else { continue };
                let now = Instant::now();
                let mut budget = crate::wire::ggep::DEFAULT_INFLATE_BUDGET;
                match d.frame.header.function {
                    Function::Pong => {
                        let Ok(Message::Pong(p)) = Message::parse(Function::Pong, &d.frame.payload) else { continue };
                        let gp = GuessPong::of(&p);
                        let mut named: Vec<SocketAddr> =
                            gp.hosts.iter().map(|a| SocketAddr::V4(*a)).filter(|a| scope.allows(*a)).collect();
                        let host = SocketAddr::from((p.ip, p.port));
                        if gp.gue.is_some() && host != from && scope.allows(host) {
                            named.push(host);
                        }
                        client.pong(&mut hosts, from, &d.frame.header.guid, gp.key, &named, now);
                    }
                    Function::QueryHit => {
                        let count = d.frame.payload.first().copied().unwrap_or(0) as u32;
                        if client.hit(&d.frame.header.guid, from, count, now).is_none() {
                            continue;
                        }
                        counted = counted.saturating_add(count);
                        if let Ok(hit) = QueryHit::parse(&d.frame.payload, &mut budget) {
                            let _ = hits.try_send(hit);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The datagram an action sends, and where.
fn encode(a: Action) -> Option<(SocketAddr, Bytes)> {
    match a {
        Action::KeyRequest { to, muid } => {
            let mut out = BytesMut::new();
            // As a leaf: SCP 0, "and GUESS hosts".
            Message::Ping(g::key_request(Some(0)))
                .encode_frame(muid, Ttl(1), Hops(0), &mut out)
                .ok()?;
            Some((to, out.freeze()))
        }
        Action::Query {
            to,
            muid,
            key,
            query,
        } => {
            let payload = g::with_key(&query, &key, true, true).ok()?;
            let frame = Frame {
                header: Header {
                    guid: muid,
                    function: Function::Query,
                    ttl: Ttl(1),
                    hops: Hops(0),
                    payload_len: payload.len() as u32,
                },
                payload,
            };
            Some((to, udp::encode(&frame, false)))
        }
    }
}
