//! Bodies: small fixed ones, the pieces a stored file's answer is made of
//! ([`Segment`]; the store reads them), counting what goes out, and the
//! reading-away of request bodies that are refused.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use prometheus::IntCounter;
use std::time::Duration;

use http::{Request, header};
use http_body::Body as _;
use hyper::body::Incoming;

pub type Body = UnsyncBoxBody<Bytes, io::Error>;

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
    /// `len` bytes of the stored file from `offset`.
    Stored {
        offset: u64,
        len: u64,
    },
}

impl Segment {
    /// Bytes this piece adds to the body.
    pub fn size(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Stored { len, .. } => *len,
        }
    }
}

/// What a body's `poll_frame` returns for `bytes`, counted off `remaining`.
pub fn data(remaining: &mut u64, bytes: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
    *remaining = remaining.saturating_sub(bytes.len() as u64);
    Poll::Ready(Some(Ok(Frame::data(bytes))))
}

/// `body`, with every byte that goes out counted in `sent`.
pub fn counted(body: Body, sent: IntCounter) -> Body {
    Counted { inner: body, sent }.boxed_unsync()
}

struct Counted {
    inner: Body,
    sent: IntCounter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            self.sent.inc_by(data.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
