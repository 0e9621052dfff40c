//! A stored file's answer, read in large chunks with positional reads, so one
//! open file can serve a whole range or every part of a `multipart/byteranges`
//! answer. What the page cache holds is read in place (`RWF_NOWAIT` cannot wait
//! for the disk); only the rest goes to the blocking pool, whose hand-off would
//! otherwise cost more than a small file's read.

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
use tokio::task::JoinHandle;

use crate::http::body::{self, Body, Segment};

const READ_CHUNK: usize = 128 * 1024;
/// What is left of a long file is read in larger chunks: fewer reads and
/// writes per byte for the few large downloads that run at once.
const LONG_SEGMENT: u64 = 4 * 1024 * 1024;
const LONG_READ_CHUNK: usize = 512 * 1024;

/// Streams `segments`, reading the stored pieces from `file`.
pub fn segments(file: File, segments: Vec<Segment>) -> Body {
    let remaining = segments.iter().map(Segment::size).sum();
    FileBody {
        file: Arc::new(file),
        segments: segments.into(),
        reading: None,
        remaining,
        nowait: true,
    }
    .boxed_unsync()
}

struct FileBody {
    file: Arc<File>,
    segments: VecDeque<Segment>,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
    remaining: u64,
    /// Whether reads may try the page cache in place; off once the file
    /// system says it cannot.
    nowait: bool,
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
                return body::data(&mut self.remaining, bytes);
            }
            match self.segments.pop_front() {
                None => return Poll::Ready(None),
                Some(Segment::Bytes(bytes)) => return body::data(&mut self.remaining, bytes),
                Some(Segment::Stored { len: 0, .. }) => {}
                Some(Segment::Stored { offset, len }) => {
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
                                    self.segments.push_front(Segment::Stored {
                                        offset: offset + got,
                                        len: len - got,
                                    });
                                }
                                return body::data(&mut self.remaining, bytes);
                            }
                            Err(Cached::Unsupported) => self.nowait = false,
                            Err(Cached::NotNow) => {}
                        }
                    }
                    if len > n {
                        self.segments.push_front(Segment::Stored {
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
