//! Response bodies: small fixed ones, and file contents read in large chunks with
//! positional reads, so one open file can serve a whole range or every part of a
//! `multipart/byteranges` answer. What the page cache holds is read in place
//! (`RWF_NOWAIT` cannot wait for the disk); only the rest goes to the blocking
//! pool, whose hand-off would otherwise cost more than a small file's read.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use prometheus::IntCounter;
use std::time::Duration;
use tokio::task::JoinHandle;

use http::{Request, header};
use http_body::Body as _;
use hyper::body::Incoming;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

const READ_CHUNK: usize = 128 * 1024;
/// What is left of a long file is read in larger chunks: fewer reads and
/// writes per byte for the few large downloads that run at once.
const LONG_SEGMENT: u64 = 4 * 1024 * 1024;
const LONG_READ_CHUNK: usize = 512 * 1024;

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What a refused request may still send before the connection is given up.
const DISCARD_LIMIT: u64 = 16 * 1024 * 1024;

/// Takes a request's body away to be read and thrown away, and returns the rest.
///
/// Answering without reading the body and then closing the connection would reset
/// it under a client or proxy still sending (nginx then turns a 409 into a 502).
/// RFC 9112 §9.6 suggests reading on for a while instead; up to `deadline` and
/// a byte limit, we do, and then the body is dropped, which closes the
/// connection (docs/limits.md: a client dripping a body cannot hold it).
/// A client that asked `Expect: 100-continue` and got a final answer instead
/// sends nothing more, and polling its body would invite it, so it is left alone.
pub fn discard(request: Request<Incoming>, deadline: Duration) -> http::request::Parts {
    let (parts, mut incoming) = request.into_parts();
    if !expects_continue(&parts.headers) && !incoming.is_end_stream() {
        tokio::spawn(tokio::time::timeout(deadline, async move {
            let mut left = DISCARD_LIMIT;
            while let Some(Ok(frame)) = incoming.frame().await {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                left = left.saturating_sub(n);
                if left == 0 {
                    break;
                }
            }
        }));
    }
    parts
}

/// Whether the client waits for `100 Continue` before it sends the body.
pub fn expects_continue(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// One piece of a response body.
#[derive(Debug, Clone)]
pub enum Segment {
    Bytes(Bytes),
    /// `len` bytes of the file from `offset`.
    File {
        offset: u64,
        len: u64,
    },
}

/// Streams `segments`, reading file pieces from `file`; `sent` counts the bytes
/// as they go out.
pub fn segments(file: File, segments: Vec<Segment>, sent: IntCounter) -> Body {
    let remaining = segments
        .iter()
        .map(|s| match s {
            Segment::Bytes(b) => b.len() as u64,
            Segment::File { len, .. } => *len,
        })
        .sum();
    FileBody {
        file: Arc::new(file),
        segments: segments.into(),
        reading: None,
        remaining,
        sent,
        nowait: true,
    }
    .boxed_unsync()
}

struct FileBody {
    file: Arc<File>,
    segments: VecDeque<Segment>,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    remaining: u64,
    sent: IntCounter,
    /// Whether reads may try the page cache in place; off once the file
    /// system says it cannot.
    nowait: bool,
}

impl FileBody {
    fn send(&mut self, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.remaining = self.remaining.saturating_sub(bytes.len() as u64);
        self.sent.inc_by(bytes.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(handle) = self.reading.as_mut() {
                let result = ready!(Pin::new(handle).poll(cx));
                self.reading = None;
                let bytes = result.map_err(io::Error::other)??;
                return self.send(bytes);
            }
            match self.segments.pop_front() {
                None => return Poll::Ready(None),
                Some(Segment::Bytes(bytes)) => return self.send(bytes),
                Some(Segment::File { len: 0, .. }) => {}
                Some(Segment::File { offset, len }) => {
                    let chunk = if len >= LONG_SEGMENT {
                        LONG_READ_CHUNK
                    } else {
                        READ_CHUNK
                    };
                    let n = len.min(chunk as u64);
                    if self.nowait {
                        match read_cached(&self.file, offset, n as usize) {
                            Ok(bytes) => {
                                let got = bytes.len() as u64;
                                if len > got {
                                    self.segments.push_front(Segment::File {
                                        offset: offset + got,
                                        len: len - got,
                                    });
                                }
                                return self.send(bytes);
                            }
                            Err(Cached::Unsupported) => self.nowait = false,
                            Err(Cached::NotNow) => {}
                        }
                    }
                    if len > n {
                        self.segments.push_front(Segment::File {
                            offset: offset + n,
                            len: len - n,
                        });
                    }
                    let file = Arc::clone(&self.file);
                    self.reading = Some(tokio::task::spawn_blocking(move || {
                        read_exact_at(&file, offset, n as usize)
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.reading.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

enum Cached {
    /// Not (all) in the page cache, or any other failure: the blocking read
    /// will find out which.
    NotNow,
    /// The kernel or file system has no `RWF_NOWAIT`.
    Unsupported,
}

/// Reads up to `len` bytes at `offset` if the page cache holds them, without
/// waiting for the disk.
fn read_cached(file: &File, offset: u64, len: usize) -> Result<Bytes, Cached> {
    use rustix::io::{Errno, ReadWriteFlags, preadv2};
    let mut buf = ReadBuf::take(len);
    let read = preadv2(
        file,
        &mut [io::IoSliceMut::new(buf.space())],
        offset,
        ReadWriteFlags::NOWAIT,
    );
    match read {
        Ok(0) => Err(Cached::NotNow),
        Ok(n) => Ok(buf.into_bytes(n)),
        Err(Errno::OPNOTSUPP | Errno::INVAL | Errno::NOSYS) => Err(Cached::Unsupported),
        Err(_) => Err(Cached::NotNow),
    }
}

fn read_exact_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = ReadBuf::take(len);
    file.read_exact_at(buf.space(), offset)?;
    Ok(buf.into_bytes(len))
}

/// Chunk buffers of the two chunk sizes go back to a small free list when the
/// bytes read into them have been sent: a large GET then neither allocates nor
/// zeroes (nor faults in) fresh memory for every chunk.
static FREE_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
static FREE_LONG_BUFFERS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// The free list for buffers of `len` bytes, and how many idle ones it keeps
/// (what stays allocated when idle); none for other sizes.
fn free_list(len: usize) -> Option<(&'static Mutex<Vec<Vec<u8>>>, usize)> {
    match len {
        READ_CHUNK => Some((&FREE_BUFFERS, 16)),
        LONG_READ_CHUNK => Some((&FREE_LONG_BUFFERS, 4)),
        _ => None,
    }
}

struct ReadBuf {
    buf: Vec<u8>,
    len: usize,
}

impl ReadBuf {
    /// A buffer with room for `len` bytes.
    fn take(len: usize) -> ReadBuf {
        let pooled = free_list(len)
            .and_then(|(free, _)| free.lock().unwrap_or_else(PoisonError::into_inner).pop());
        ReadBuf {
            buf: pooled.unwrap_or_else(|| vec![0; len]),
            len,
        }
    }

    fn space(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// The first `n` bytes, as `Bytes` that give the buffer back when dropped.
    fn into_bytes(mut self, n: usize) -> Bytes {
        self.len = n.min(self.len);
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for ReadBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if let Some((free, kept)) = free_list(self.buf.len()) {
            let mut free = free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < kept {
                free.push(std::mem::take(&mut self.buf));
            }
        }
    }
}
