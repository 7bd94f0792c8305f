//! Between the FastTrack supernode and the Gnutella side of the node: a
//! FastTrack user's search run as one of the node's own Gnutella searches, and
//! the `GIVE` a FastTrack user sends when it answers a push from the node.

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

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
