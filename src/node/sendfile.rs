//! File bodies sent from the page cache to a TCP socket with `sendfile(2)`, with
//! no copy through user space, under hyper's HTTP/1.1 framing.
//!
//! hyper writes what the body yields. A file body on a [`SendfileStream`] yields
//! *placeholders*: slices of [`PLACEHOLDER`], a static that is never read, and
//! records at the same time, in [`Spans`], which bytes of which file each one
//! stands for. hyper queues body frames as they are (`writev(true)`, its queue
//! strategy, never copies a frame) and hands them to the stream in order; the
//! stream recognises a placeholder by its address, writes the head before it
//! as any other bytes, and sends the file bytes with `sendfile`. Framing, headers,
//! keep-alive and every rule of `http.rs` stay hyper's and ours as before.
//!
//! A placeholder with no span behind it, or a file that ends early, fails the
//! write: the connection closes rather than send anything but the file's bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Mutex};

#[cfg(target_os = "linux")]
pub use linux::SendfileStream;

/// Largest body frame of placeholders; also the most one `sendfile` call sends,
/// so that one upload yields to the others on its thread at least this often.
/// 2 MiB, as nginx's `sendfile_max_chunk`: a 1 MiB range leaves in one call
/// where the socket takes it (512 KiB frames made it two).
pub const FRAME: usize = 2 * 1024 * 1024;

/// What placeholders point into. Zero-initialised, so it takes no memory until
/// written, and nothing writes or reads it.
static PLACEHOLDER: [u8; FRAME] = [0; FRAME];

/// `n` placeholder bytes, to be yielded as a body frame right after the span
/// they stand for is pushed.
pub fn placeholder(n: usize) -> bytes::Bytes {
    bytes::Bytes::from_static(&PLACEHOLDER[..n])
}

/// A piece of a file that placeholder bytes stand for. (Only a `SendfileStream`
/// reads one, and there is none where `sendfile` is missing.)
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Span {
    file: Arc<File>,
    at: u64,
    left: u64,
}

/// The file pieces behind the placeholders handed to hyper and not yet sent,
/// in the order hyper writes them. Shared by a connection's bodies (which
/// push) and its stream (which sends and pops).
#[derive(Default)]
pub struct Spans(Mutex<VecDeque<Span>>);

impl Spans {
    /// Records that the next `len` placeholder bytes are `file` from `at`.
    pub fn push(&self, file: Arc<File>, at: u64, len: u64) {
        if len > 0 {
            self.lock().push_back(Span {
                file,
                at,
                left: len,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Span>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Asks the kernel to start reading `len` bytes of `file` at `at` into the
/// page cache, so that `sendfile` of a large body finds them there rather than
/// wait for the disk on the connection's thread.
pub fn advise_willneed(file: &File, at: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open; the call only gives advice.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                at as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, at, len);
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{self, IoSlice};
    use std::os::fd::AsRawFd;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, ready};

    use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
    use tokio::net::TcpStream;

    use super::{FRAME, PLACEHOLDER, Spans};

    pub(super) fn is_placeholder(b: &[u8]) -> bool {
        let start = PLACEHOLDER.as_ptr() as usize;
        let p = b.as_ptr() as usize;
        !b.is_empty() && p >= start && p < start + FRAME
    }

    /// A TCP stream whose writes turn placeholders into `sendfile` calls.
    pub struct SendfileStream {
        tcp: TcpStream,
        spans: Arc<Spans>,
    }

    impl SendfileStream {
        pub fn new(tcp: TcpStream) -> (SendfileStream, Arc<Spans>) {
            let spans = Arc::<Spans>::default();
            (
                SendfileStream {
                    tcp,
                    spans: spans.clone(),
                },
                spans,
            )
        }

        /// Runs the non-blocking `op` when the socket is writable, waiting (and
        /// registering the task) while it would block.
        fn poll_op(
            &self,
            cx: &mut Context<'_>,
            mut op: impl FnMut() -> io::Result<usize>,
        ) -> Poll<io::Result<usize>> {
            loop {
                // Readiness also spends the task's cooperative budget, so a fast
                // upload yields to the other connections of its thread.
                ready!(self.tcp.poll_write_ready(cx))?;
                match self.tcp.try_io(Interest::WRITABLE, &mut op) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => return Poll::Ready(r),
                }
            }
        }

        /// Sends up to `want` bytes of the span at the front of the queue.
        fn poll_sendfile(&self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
            let (file, at, n) = {
                let spans = self.spans.lock();
                let Some(span) = spans.front() else {
                    return Poll::Ready(Err(io::Error::other(
                        "a file body with no file behind it",
                    )));
                };
                let n = (want as u64).min(span.left).min(FRAME as u64) as usize;
                (span.file.clone(), span.at, n)
            };
            let sock = self.tcp.as_raw_fd();
            let src = file.as_raw_fd();
            let sent = ready!(self.poll_op(cx, || {
                let mut off = at as libc::off_t;
                // SAFETY: both descriptors are open for the call; `off` is ours.
                let n = unsafe { libc::sendfile(sock, src, &mut off, n) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }))?;
            if sent == 0 {
                // The file is shorter than when it was checked.
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let mut spans = self.spans.lock();
            if let Some(span) = spans.front_mut() {
                span.at += sent as u64;
                span.left -= sent as u64;
                if span.left == 0 {
                    spans.pop_front();
                }
            }
            Poll::Ready(Ok(sent))
        }

        /// Writes the slices up to and including the first placeholder: the bytes
        /// before it (a head) with one vectored write, then up to one frame of file
        /// with one `sendfile`. Returns how many bytes of `bufs` went out.
        ///
        /// The head is not corked (`MSG_MORE`, `TCP_CORK`) to leave with the first
        /// file bytes: on loopback that doubled the CPU time per byte sent, for us
        /// and for nginx with `tcp_nopush` alike (`benches/transfer.rs`).
        fn poll_write_bufs(
            &mut self,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let first = bufs.iter().position(|b| is_placeholder(b));
            let Some(first) = first else {
                return Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs);
            };
            let mut done = 0;
            if first > 0 {
                let plain = &bufs[..first];
                let want: usize = plain.iter().map(|b| b.len()).sum();
                match Pin::new(&mut self.tcp).poll_write_vectored(cx, plain) {
                    Poll::Ready(Ok(n)) if n == want => done = n,
                    other => return other,
                }
            }
            match self.poll_sendfile(cx, bufs[first].len()) {
                Poll::Ready(Ok(n)) => Poll::Ready(Ok(done + n)),
                // What went out is reported; the rest is asked again.
                Poll::Pending | Poll::Ready(Err(_)) if done > 0 => Poll::Ready(Ok(done)),
                other => other,
            }
        }
    }

    impl AsyncRead for SendfileStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for SendfileStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if is_placeholder(buf) {
                self.poll_sendfile(cx, buf.len())
            } else {
                Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
            }
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write_bufs(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::io::{self, IoSlice, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A temporary file holding `data`, removed when the test ends.
    fn temp_file(tag: &str, data: &[u8]) -> (Arc<File>, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "servent-sendfile-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(data))
            .expect("temp file");
        (Arc::new(File::open(&path).expect("open")), path)
    }

    /// A connected pair on loopback: ours (wrapped) and the reader's end. The
    /// send buffer is made small so that writes come back partial and the
    /// stream has to wait for the socket.
    async fn pair() -> (SendfileStream, Arc<Spans>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        let (server, _) = accepted.expect("accept");
        socket2::SockRef::from(&server)
            .set_send_buffer_size(8192)
            .expect("SO_SNDBUF");
        let (stream, spans) = SendfileStream::new(server);
        (stream, spans, client.expect("connect"))
    }

    #[tokio::test]
    async fn placeholders_become_the_file_bytes_after_the_head() {
        let data = pattern(3 * FRAME + 12_345, 1);
        let (file, path) = temp_file("bytes", &data);
        let (mut ours, spans, mut theirs) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.expect("read");
            got
        });
        // Two answers on one connection, as hyper hands them over: a head
        // and the first frame in one vectored write, then the rest.
        let mut want = Vec::new();
        for (at, len) in [(7u64, 2 * FRAME + 100), (1000, 50_000)] {
            let head = format!("HTTP/1.1 206 Partial Content\r\nContent-Length: {len}\r\n\r\n");
            want.extend_from_slice(head.as_bytes());
            want.extend_from_slice(&data[at as usize..at as usize + len]);
            let mut frames = Vec::new();
            let (mut pos, mut left) = (at, len);
            while left > 0 {
                let n = left.min(FRAME);
                frames.push((pos, n));
                pos += n as u64;
                left -= n;
            }
            spans.push(file.clone(), frames[0].0, frames[0].1 as u64);
            let first = placeholder(frames[0].1);
            let bufs = [IoSlice::new(head.as_bytes()), IoSlice::new(&first)];
            let mut n = ours.write_vectored(&bufs).await.expect("write");
            // What the vectored write left over, written as hyper would.
            if n < head.len() {
                ours.write_all(&head.as_bytes()[n..]).await.expect("head");
                n = head.len();
            }
            ours.write_all(&first[n - head.len()..])
                .await
                .expect("frame");
            for &(pos, n) in &frames[1..] {
                spans.push(file.clone(), pos, n as u64);
                ours.write_all(&placeholder(n)).await.expect("frame");
            }
        }
        ours.shutdown().await.expect("shutdown");
        drop(ours);
        let got = reader.await.expect("reader");
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the bytes sent are the file's");
        assert!(spans.lock().is_empty(), "every span was sent");
        let _ = std::fs::remove_file(path);
    }

    #[tokio::test]
    async fn a_placeholder_with_no_file_behind_it_fails() {
        let (mut ours, _spans, _theirs) = pair().await;
        let e = ours.write_all(&placeholder(10)).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::Other);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_span_fails_and_sends_no_filler() {
        let data = pattern(1000, 2);
        let (file, path) = temp_file("short", &data);
        let (mut ours, spans, mut theirs) = pair().await;
        spans.push(file, 0, 1500);
        let e = ours
            .write_all(&placeholder(1500))
            .await
            .expect_err("short file");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        drop(ours);
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await.expect("read");
        assert!(got == data, "the file's bytes and nothing after them");
        let _ = std::fs::remove_file(path);
    }
}
