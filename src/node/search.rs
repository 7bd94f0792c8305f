//! A one-shot search: connect to a node as a leaf, send one query, collect hits.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use crate::framing::DescriptorCodec;
use crate::wire::bye::{self, Bye};
use crate::wire::huge::Sha1Urn;
use crate::wire::{Function, Guid, Hops, Message, Query, QueryFlags, Ttl};

use super::deflate::{Deflate, Inflate};
use super::handshake::{self, HandshakeFailure};
use crate::wire::handshake as hs;

/// One result of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchHit {
    pub name: String,
    pub size: u64,
    pub urn: Option<Sha1Urn>,
    pub index: u32,
    pub host: Ipv4Addr,
    pub port: u16,
    pub servent_guid: Guid,
}

impl SearchHit {
    /// The hit as one line of JSON.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"name\":{},\"size\":{},\"urn\":{},\"index\":{},\"host\":\"{}\",\"port\":{},\"servent_guid\":\"{}\"}}",
            json_string(&self.name),
            self.size,
            self.urn
                .map_or("null".to_string(), |u| json_string(&u.to_string())),
            self.index,
            self.host,
            self.port,
            self.servent_guid.to_hex()
        )
    }
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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

/// Searches `words` through `peer`, calling `on_hit` for each result as it arrives,
/// until `timeout` has passed or `max_results` results have come. Returns the
/// number of results.
pub async fn search(
    peer: &str,
    words: &str,
    ttl: u8,
    timeout: Duration,
    max_results: usize,
    mut on_hit: impl FnMut(SearchHit),
) -> Result<usize, SearchError> {
    let (stream, est) = connect_leaf(peer, timeout).await?;
    let (r, mut w) = stream.into_split();
    let id = Guid::new_random();
    let mut out = BytesMut::new();
    Message::Query(Query::new(QueryFlags::with_bits(0), words))
        .encode_frame(id, Ttl(ttl.max(1)), Hops(0), &mut out)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut deflate = est.deflate_out.then(Deflate::default);
    match deflate.as_mut() {
        Some(z) => w.write_all(&z.pack([&out[..]])).await?,
        None => w.write_all(&out).await?,
    }

    let input = std::io::Cursor::new(est.leftover.to_vec()).chain(r);
    let source: Box<dyn AsyncRead + Unpin + Send> = if est.deflate_in {
        Box::new(Inflate::new(input))
    } else {
        Box::new(input)
    };
    let mut framed = FramedRead::new(source, DescriptorCodec::default());
    let deadline = tokio::time::Instant::now() + timeout;
    let mut count = 0;
    while count < max_results {
        let next = match tokio::time::timeout_at(deadline, framed.next()).await {
            Ok(Some(Ok(frame))) => frame,
            // Time is up, the node closed, or the stream broke: stop with what we have.
            Err(_) | Ok(None) | Ok(Some(Err(_))) => break,
        };
        if next.header.function != Function::QueryHit || next.header.guid != id {
            if next.header.function == Function::Bye {
                break;
            }
            continue;
        }
        let Ok(Message::QueryHit(hit)) = next.message() else {
            continue;
        };
        for r in &hit.results {
            if count == max_results {
                break;
            }
            on_hit(SearchHit {
                name: r.name_lossy(),
                size: r.file_size(),
                urn: r.ext.sha1_urns().next(),
                index: r.index,
                host: hit.ip,
                port: hit.port,
                servent_guid: hit.servent,
            });
            count += 1;
        }
    }
    let mut bye = BytesMut::new();
    Message::Bye(Bye::new(bye::CODE_SHUTDOWN, "Search done"))
        .encode_frame(Guid::new_random(), Ttl(1), Hops(0), &mut bye)
        .expect("a short Bye encodes");
    let bye = match deflate.as_mut() {
        Some(z) => z.pack([&bye[..]]),
        None => bye.to_vec(),
    };
    let _ = w.write_all(&bye).await;
    let _ = w.shutdown().await;
    Ok(count)
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
            index: 7,
            host: Ipv4Addr::LOCALHOST,
            port: 6346,
            servent_guid: Guid([0xab; 16]),
        };
        assert_eq!(
            hit.to_json(),
            "{\"name\":\"a \\\"b\\\"\\n.mp3\",\"size\":3,\"urn\":\"urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5\",\"index\":7,\"host\":\"127.0.0.1\",\"port\":6346,\"servent_guid\":\"ABABABABABABABABABABABABABABABAB\"}"
        );
        assert_eq!(json_string("\u{1}"), "\"\\u0001\"");
    }
}
