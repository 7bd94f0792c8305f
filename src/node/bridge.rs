//! Between the FastTrack supernode and the Gnutella side of the node: a
//! FastTrack user's search run as one of the node's own Gnutella searches, and
//! the `GIVE` a FastTrack user sends when it answers a push from the node.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::engine::EngineRef;
use crate::core::library::Library;
use crate::fasttrack::server::FastTrack;
use crate::fasttrack::supernode::{Share, TAG_FILENAME, Tag};

/// How often the library is looked at for files to offer FastTrack users.
const OFFER_EVERY: Duration = Duration::from_secs(2);

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

/// The library's files that have their FTH, as FastTrack shares.
fn own_shares(lib: &Library) -> Vec<Share> {
    lib.files()
        .filter_map(|f| {
            let fth = f.fth?;
            Some(Share {
                media: media_of(&f.name),
                hash: *fth.as_bytes(),
                file_id: u32::from(fth.file_id()),
                size: f.size,
                tags: vec![Tag {
                    id: TAG_FILENAME,
                    value: Bytes::copy_from_slice(f.name.as_bytes()),
                }],
            })
        })
        .collect()
}

/// Keeps the supernode's view of the node's own files in step with the
/// library (files are offered once their FTH is known), served on `port`.
pub async fn offer_own_files(
    engine: EngineRef,
    ft: FastTrack,
    port: u16,
    cancel: CancellationToken,
) {
    let mut seen = None;
    let mut tick = tokio::time::interval(OFFER_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = cancel.cancelled() => return,
        }
        // A change in the files or in which have their FTH changes this.
        let print = engine.library(|lib| {
            lib.files().fold((0usize, 0u64), |(n, sum), f| {
                (
                    n + usize::from(f.fth.is_some()),
                    sum.wrapping_add(u64::from(f.index).wrapping_mul(0x9E37_79B9)),
                )
            })
        });
        if seen == Some(print) {
            continue;
        }
        seen = Some(print);
        let shares = engine.library(own_shares);
        ft.set_own_files(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port), shares);
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
    fn give_lines() {
        assert_eq!(parse_give(b"GIVE 1\r\n"), Ok(Some((1, 8))));
        assert_eq!(parse_give(b"GIVE 42\n"), Ok(Some((42, 8))));
        assert_eq!(parse_give(b"GIVE 4"), Ok(None));
        assert!(parse_give(b"GIVE x\r\n").is_err());
        assert!(parse_give(b"GIVE 99999999999\r\n").is_err());
    }
}
