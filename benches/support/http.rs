//! The client side of the HTTP benches: generated request bodies that can be
//! checked byte for byte, keep-alive HTTP/1.1 connections (hyper's client),
//! one request fully answered, and batches over several connections (panicking
//! on a failure, or counting failures by status). Also an
//! upslot `Service` serving in this process on 127.0.0.1:0.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::show_size;

/// Request bodies go out in chunks of this size, cut from a pattern block.
pub const CHUNK: usize = 256 * 1024;
/// The pattern those chunks are cut from (each chunk a different window).
pub const BLOCK: usize = 1024 * 1024;

pub type ReqBody = BoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------------------
// Generated bodies: every file has a seed; chunk i of it is a window of the
// pattern block that depends on the seed and i, so a GET can be checked
// byte for byte without keeping anything.

/// The pseudo-random block the bodies are cut from.
pub fn pattern_block() -> Bytes {
    let mut block = Vec::with_capacity(BLOCK);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while block.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(block)
}

fn window_start(seed: u64, chunk: u64) -> usize {
    (seed
        .wrapping_mul(7919)
        .wrapping_add(chunk)
        .wrapping_mul(4099 * 8)
        % (BLOCK - CHUNK) as u64) as usize
}

/// `len` bytes of request body, made on the fly: each chunk is a window into
/// the pattern block (zero-copy).
pub struct Generated {
    block: Bytes,
    seed: u64,
    sent: u64,
    len: u64,
}

impl Generated {
    pub fn new(block: &Bytes, seed: u64, len: u64) -> Generated {
        Generated {
            block: block.clone(),
            seed,
            sent: 0,
            len,
        }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent == self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.sent).min(CHUNK as u64) as usize;
        let start = window_start(self.seed, self.sent / CHUNK as u64);
        let chunk = self.block.slice(start..start + n);
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

/// Whether `data`, found at offset `pos` of the file with `seed`, is right.
pub fn check_bytes(block: &[u8], seed: u64, mut pos: u64, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let chunk = pos / CHUNK as u64;
        let off = (pos % CHUNK as u64) as usize;
        let n = (CHUNK - off).min(data.len());
        let start = window_start(seed, chunk) + off;
        if block[start..start + n] != data[..n] {
            return false;
        }
        data = &data[n..];
        pos += n as u64;
    }
    true
}

// ---------------------------------------------------------------------------
// Requests.

/// Where one file is PUT and where it is read back, and its body's seed.
#[derive(Clone)]
pub struct Target {
    pub put: String,
    pub get: String,
    pub seed: u64,
    /// What a PUT must answer: 201 from upslot and nginx (a new file), 200
    /// from S3, which does not say.
    pub put_status: StatusCode,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    /// GET, checking every byte (untimed).
    Verify,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get | Op::Verify => "GET",
        }
    }
}

/// A keep-alive HTTP/1.1 connection to `addr` (TCP_NODELAY), its driver spawned.
pub async fn connect<B>(addr: SocketAddr) -> SendRequest<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    try_connect(addr).await.unwrap_or_else(|e| panic!("{e}"))
}

/// `connect`, saying what went wrong instead of panicking.
pub async fn try_connect<B>(addr: SocketAddr) -> Result<SendRequest<B>, String>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// Generous: a slow disk with fsync still finishes well inside it.
pub fn request_timeout(size: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_secs(size / (5 * 1000 * 1000))
}

/// Why a request failed: `label` groups failures in a report (the status code
/// that came instead of the expected one, `timeout`, `io`, `length`, `bytes`,
/// `connect`); `detail` says what happened.
pub struct Failure {
    pub label: String,
    pub detail: String,
}

/// One request to `server` (a name for messages), fully answered: a PUT must
/// answer the target's `put_status` (201 but from S3), a GET 200 with `size` bytes (checked byte for byte for
/// `Op::Verify`). Panics on anything else.
pub async fn once(
    sender: &mut SendRequest<ReqBody>,
    server: &str,
    addr: SocketAddr,
    op: Op,
    target: &Target,
    size: u64,
    block: &Bytes,
) {
    if let Err(f) = attempt(sender, server, addr, op, target, size, block).await {
        panic!("{}", f.detail);
    }
}

/// `once`, saying what went wrong instead of panicking. After a failure the
/// connection may be unusable: open a new one.
pub async fn attempt(
    sender: &mut SendRequest<ReqBody>,
    server: &str,
    addr: SocketAddr,
    op: Op,
    target: &Target,
    size: u64,
    block: &Bytes,
) -> Result<(), Failure> {
    let uri = &target.get;
    let fail = |label: &str, what: String| Failure {
        label: label.to_owned(),
        detail: format!("{server} {} {uri}: {what}", op.name()),
    };
    let work = async {
        sender
            .ready()
            .await
            .map_err(|e| fail("io", format!("connection not ready: {e}")))?;
        let builder = Request::builder().header("host", addr.to_string());
        let req = match op {
            Op::Put => builder
                .method(Method::PUT)
                .uri(&target.put)
                .header("content-length", size)
                .header("content-type", "application/octet-stream")
                .body(Generated::new(block, target.seed, size).boxed()),
            Op::Get | Op::Verify => builder
                .method(Method::GET)
                .uri(&target.get)
                .body(http_body_util::Empty::new().boxed()),
        };
        let res = sender
            .send_request(req.expect("request"))
            .await
            .map_err(|e| fail("io", format!("no response: {e}")))?;
        let status = res.status();
        let length = res
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = res.into_body();
        let mut received: u64 = 0;
        let mut text = Vec::new();
        let mut intact = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| fail("io", format!("response body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if op == Op::Verify && intact {
                    intact = check_bytes(block, target.seed, received, &data);
                }
                received += data.len() as u64;
                if !status.is_success() && text.len() < 200 {
                    text.extend_from_slice(&data[..data.len().min(200)]);
                }
            }
        }
        // nginx answers 201 for a new file, 204 for an overwrite.
        let expected = match op {
            Op::Put => target.put_status,
            Op::Get | Op::Verify => StatusCode::OK,
        };
        if status != expected {
            return Err(fail(
                status.as_str(),
                format!("{status} {}", String::from_utf8_lossy(&text)),
            ));
        }
        if op != Op::Put {
            if length != Some(size) || received != size {
                return Err(fail(
                    "length",
                    format!(
                        "Content-Length {length:?}, {received} bytes received, {size} expected"
                    ),
                ));
            }
            if !intact {
                return Err(fail("bytes", "body differs from what was PUT".into()));
            }
        }
        Ok(())
    };
    tokio::time::timeout(request_timeout(size), work)
        .await
        .unwrap_or_else(|_| {
            Err(fail(
                "timeout",
                format!("request for {} timed out", show_size(size)),
            ))
        })
}

/// `op` on every target, `concurrency` keep-alive connections pulling from one
/// queue. Returns the wall time and each request's duration; panics on the
/// first failure.
pub async fn batch(
    server: &'static str,
    addr: SocketAddr,
    op: Op,
    targets: &Arc<Vec<Target>>,
    size: u64,
    concurrency: usize,
    block: &Bytes,
) -> (Duration, Vec<Duration>) {
    let seen = load(server, addr, op, targets, size, concurrency, block).await;
    if let Some(first) = seen.first_error {
        panic!("{first}");
    }
    (seen.wall, seen.times)
}

/// What `load` saw.
#[derive(Default)]
pub struct Load {
    pub wall: Duration,
    /// Each successful request's duration.
    pub times: Vec<Duration>,
    /// Failed requests by `Failure::label`.
    pub errors: BTreeMap<String, usize>,
    /// The first failure's detail.
    pub first_error: Option<String>,
}

impl Load {
    fn count(&mut self, f: Failure) {
        *self.errors.entry(f.label).or_default() += 1;
        self.first_error.get_or_insert(f.detail);
    }
}

/// `op` on every target, `concurrency` keep-alive connections pulling from one
/// queue; a failed request is counted by label and its connection replaced.
pub async fn load(
    server: &'static str,
    addr: SocketAddr,
    op: Op,
    targets: &Arc<Vec<Target>>,
    size: u64,
    concurrency: usize,
    block: &Bytes,
) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency.min(targets.len()))
        .map(|_| {
            let next = Arc::clone(&next);
            let targets = Arc::clone(targets);
            let block = block.clone();
            tokio::spawn(async move {
                let mut seen = Load::default();
                let mut sender = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(target) = targets.get(i) else { break };
                    if sender.is_none() {
                        match try_connect(addr).await {
                            Ok(s) => sender = Some(s),
                            Err(detail) => {
                                let label = "connect".to_owned();
                                seen.count(Failure { label, detail });
                                continue;
                            }
                        }
                    }
                    let s = sender.as_mut().expect("connected");
                    let t = Instant::now();
                    match attempt(s, server, addr, op, target, size, &block).await {
                        Ok(()) => seen.times.push(t.elapsed()),
                        Err(f) => {
                            seen.count(f);
                            sender = None;
                        }
                    }
                }
                seen
            })
        })
        .collect::<Vec<_>>();
    let mut all = Load::default();
    for worker in workers {
        let seen = worker.await.expect("bench worker");
        all.times.extend(seen.times);
        for (label, n) in seen.errors {
            *all.errors.entry(label).or_default() += n;
        }
        if all.first_error.is_none() {
            all.first_error = seen.first_error;
        }
    }
    all.wall = started.elapsed();
    all
}

// ---------------------------------------------------------------------------
// The server under test, in this process.

/// An upslot `Service` serving on 127.0.0.1:0 until `stop`.
pub struct Serving {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl Serving {
    pub async fn start(service: upslot::Service) -> Serving {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listener, async {
            let _ = rx.await;
        }));
        Serving { addr, stop, task }
    }

    /// Stops serving and waits until the service has shut down.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("server");
    }
}
