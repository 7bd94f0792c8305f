//! Stream compression of a connection's directions: one zlib stream each, for the
//! life of the connection.

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, ReadBuf};

/// Compressed bytes read from the socket at a time.
const READ_CHUNK: usize = 8 * 1024;

/// An [`AsyncRead`] that inflates the zlib stream read from `inner`. Memory is
/// bounded: at most one chunk of compressed input is held, and output goes straight
/// into the caller's buffer, so a small stream that inflates hugely costs time in
/// the reader (bounded by the framing limits above it), not memory.
pub struct Inflate<R> {
    inner: R,
    input: BytesMut,
    z: Decompress,
    eof: bool,
    done: bool,
}

impl<R> Inflate<R> {
    pub fn new(inner: R) -> Inflate<R> {
        Inflate {
            inner,
            input: BytesMut::with_capacity(READ_CHUNK),
            z: crate::wire::zlib_inflater(),
            eof: false,
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Inflate<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.done {
                return Poll::Ready(Ok(()));
            }
            // Always ask the inflater first, even with no new input: when the last
            // call filled the caller's buffer, output may be waiting inside it, and
            // the peer may have nothing more to send until it is read.
            let (in0, out0) = (this.z.total_in(), this.z.total_out());
            let status = this
                .z
                .decompress(
                    &this.input,
                    buf.initialize_unfilled(),
                    FlushDecompress::None,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let consumed = (this.z.total_in() - in0) as usize;
            let produced = (this.z.total_out() - out0) as usize;
            this.input.advance(consumed);
            buf.advance(produced);
            if status == Status::StreamEnd {
                this.done = true;
            }
            if produced > 0 {
                return Poll::Ready(Ok(()));
            }
            if consumed > 0 {
                continue;
            }
            if this.eof {
                // The peer closed; whatever was not inflated is lost either way.
                return Poll::Ready(Ok(()));
            }
            if this.input.len() >= READ_CHUNK * 4 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zlib stream makes no progress",
                )));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.input.extend_from_slice(rb.filled());
            }
        }
    }
}

/// The compressing side: frames in, one zlib stream out, flushed (sync) after
/// every batch so the peer can decode it without waiting for more.
pub struct Deflate {
    z: flate2::write::ZlibEncoder<Vec<u8>>,
}

impl Default for Deflate {
    fn default() -> Self {
        Deflate {
            z: flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default()),
        }
    }
}

impl Deflate {
    /// Compresses `parts` and flushes; returns the bytes to write.
    pub fn pack<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        for p in parts {
            self.z.write_all(p).expect("writing to a Vec cannot fail");
        }
        self.z.flush().expect("writing to a Vec cannot fail");
        std::mem::take(self.z.get_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn round_trip_in_batches_and_odd_reads() {
        let mut d = Deflate::default();
        let mut wire = Vec::new();
        let mut plain = Vec::new();
        for i in 0..200u32 {
            let part = format!("frame {i} {}", "x".repeat((i % 50) as usize));
            plain.extend_from_slice(part.as_bytes());
            wire.extend(d.pack([part.as_bytes()]));
        }
        // Read through a reader that hands out 7 bytes at a time.
        struct Dribble(std::io::Cursor<Vec<u8>>);
        impl AsyncRead for Dribble {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let mut tmp = [0u8; 7];
                let n = std::io::Read::read(&mut self.0, &mut tmp)?;
                buf.put_slice(&tmp[..n]);
                Poll::Ready(Ok(()))
            }
        }
        let mut r = Inflate::new(Dribble(std::io::Cursor::new(wire)));
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, plain);
    }

    #[tokio::test]
    async fn output_held_in_the_inflater_is_delivered_without_more_input() {
        // One flushed batch that inflates to far more than the reader's buffer: all
        // of it must come out although no more input ever arrives.
        let plain: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let wire = Deflate::default().pack([&plain[..]]);
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        tokio::io::AsyncWriteExt::write_all(&mut tx, &wire)
            .await
            .unwrap();
        // tx stays open: a read that waits for more input would hang.
        let mut r = Inflate::new(rx);
        let mut out = vec![0u8; plain.len()];
        let mut at = 0;
        while at < out.len() {
            let end = (at + 100).min(out.len());
            let k =
                tokio::time::timeout(std::time::Duration::from_secs(5), r.read(&mut out[at..end]))
                    .await
                    .expect("no hang")
                    .unwrap();
            assert!(k > 0);
            at += k;
        }
        assert_eq!(out, plain);
        drop(tx);
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        let mut r = Inflate::new(std::io::Cursor::new(vec![0xff; 64]));
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).await.is_err());
    }
}
