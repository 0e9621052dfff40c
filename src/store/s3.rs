//! The S3 store: file bodies as objects in a bucket of any S3-compatible
//! service (Garage, MinIO, Ceph RGW, AWS), each with a small metadata object
//! beside it (docs/storage.md):
//!
//! ```text
//! <prefix><64 hex>.<16 hex>        the body; the name is the file's key and a
//!                                  nonce, so that no two uploads share an object
//! <prefix><64 hex>.<16 hex>.meta   its metadata (JSON), written after the body
//! ```
//!
//! A body is streamed from the client into one PUT with its length announced,
//! so an upload holds a couple of batches in memory whatever its size, and one
//! that fails leaves nothing behind: the last bytes are held back until the
//! commit, so an upload that ends any other way is cut short and the service
//! discards it. Reads are ranged GETs, streamed. Requests are signed with
//! rusty-s3 and sent with hyper's client; every one has a deadline, and a
//! service that cannot be reached or fails on its side is reported as
//! [`Unreachable`](super::Unreachable) (503 to clients).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::{Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{CommitError, CreateError, Key, Meta, Store, StoreError, Upload, unreachable};
use crate::config;
use crate::http::body::{self, Body, Segment};

/// How long a signed request stays valid: the longest it may take to begin.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// The longest the service may take to answer a request's head.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections to the service kept open while idle.
const IDLE_CONNECTIONS: usize = 16;
/// Batches of an upload on their way to the service at once.
const IN_FLIGHT: usize = 2;
/// Metadata objects read at once when the bucket is scanned.
const SCAN_READS: usize = 16;
const META_SUFFIX: &str = ".meta";

type RequestBody = BoxBody<Bytes, io::Error>;

#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    bucket: Bucket,
    credentials: Credentials,
    prefix: String,
    client: Client<HttpConnector, RequestBody>,
}

impl S3Store {
    /// Every object below the prefix, bodies and metadata alike, whether or not
    /// a file: what an operator (or a test) finds in the bucket.
    pub async fn object_names(&self) -> io::Result<Vec<String>> {
        self.inner.list().await
    }

    /// A store on the bucket `config` names; the credentials are read now.
    pub fn new(config: &config::S3) -> io::Result<S3Store> {
        let endpoint = match &config.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => format!("https://s3.{}.amazonaws.com", config.region),
        };
        let endpoint: url::Url = endpoint
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("endpoint: {e}")))?;
        if endpoint.scheme() != "http" {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "storage.endpoint: only http:// endpoints are supported so far \
                 (put a TLS-terminating proxy on loopback in front of the S3 service)",
            ));
        }
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bucket: {e}")))?;
        let credentials = Credentials::new(
            config
                .access_key_id
                .resolve()
                .map_err(|e| annotate(e, "storage.access_key_id"))?,
            config
                .secret_access_key
                .resolve()
                .map_err(|e| annotate(e, "storage.secret_access_key"))?,
        );
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        // Idle connections beyond a few each hold their buffers: under a burst of
        // hundreds of clients they would keep the process's memory and
        // descriptors up long after it (docs/storage.md).
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build(connector);
        Ok(S3Store {
            inner: Arc::new(Inner {
                bucket,
                credentials,
                prefix: config.prefix.clone(),
                client,
            }),
        })
    }
}

fn annotate(e: io::Error, key: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{key}: {e}"))
}

impl Inner {
    fn body_name(&self, meta: &Meta) -> String {
        format!("{}{}", self.prefix, meta.object)
    }

    fn meta_name(&self, meta: &Meta) -> String {
        format!("{}{}{META_SUFFIX}", self.prefix, meta.object)
    }

    fn request(&self, method: Method, url: url::Url) -> http::request::Builder {
        Request::builder().method(method).uri(url.as_str())
    }

    /// Sends `request` and waits for the answer's head, within the deadline.
    async fn send(&self, request: Request<RequestBody>) -> io::Result<Response<Incoming>> {
        match tokio::time::timeout(ANSWER_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(unreachable(format!("S3 request failed: {e}"))),
            Err(_) => Err(unreachable("S3 did not answer in time")),
        }
    }

    /// The error for an answer that is not a success; reads a little of its
    /// body (S3 explains itself in XML).
    async fn failure(&self, what: &str, response: Response<Incoming>) -> io::Error {
        let status = response.status();
        let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let code = xml_code(&body).unwrap_or_default();
        let message = format!("S3 {what}: {status} {code}");
        if status.is_server_error() {
            unreachable(message)
        } else {
            io::Error::other(message)
        }
    }

    async fn put_bytes(&self, name: &str, bytes: Bytes) -> io::Result<()> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), name)
            .sign(SIGNED_FOR);
        let len = bytes.len();
        let request = self
            .request(Method::PUT, url)
            .header(header::CONTENT_LENGTH, len)
            .body(full(bytes))
            .map_err(io::Error::other)?;
        let response = self.send(request).await?;
        if !response.status().is_success() {
            return Err(self.failure("PUT", response).await);
        }
        drain(response).await;
        Ok(())
    }

    /// A GET of the object, or of `range` of it; `None` if there is none.
    async fn get(
        &self,
        name: &str,
        range: Option<(u64, u64)>,
    ) -> io::Result<Option<Response<Incoming>>> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), name)
            .sign(SIGNED_FOR);
        let mut request = self.request(Method::GET, url);
        if let Some((first, last)) = range {
            request = request.header(header::RANGE, format!("bytes={first}-{last}"));
        }
        let response = self
            .send(request.body(empty()).map_err(io::Error::other)?)
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(Some(response)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.failure("GET", response).await),
        }
    }

    /// A whole (small) object; `None` if there is none.
    async fn get_bytes(&self, name: &str) -> io::Result<Option<Bytes>> {
        match self.get(name, None).await? {
            Some(response) => Ok(Some(collect(response, "GET").await?)),
            None => Ok(None),
        }
    }

    /// `len` bytes of the object from `offset`, as they come.
    async fn get_range(&self, name: &str, offset: u64, len: u64) -> io::Result<Option<Incoming>> {
        let Some(response) = self.get(name, Some((offset, offset + len - 1))).await? else {
            return Ok(None);
        };
        let sent = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if sent != Some(len) {
            return Err(io::Error::other(format!(
                "S3 sent {sent:?} bytes for a range of {len}"
            )));
        }
        Ok(Some(response.into_body()))
    }

    async fn delete_object(&self, name: &str) -> io::Result<()> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), name)
            .sign(SIGNED_FOR);
        let request = self
            .request(Method::DELETE, url)
            .body(empty())
            .map_err(io::Error::other)?;
        let response = self.send(request).await?;
        // 404: gone already, which is what was asked.
        if !response.status().is_success() && response.status() != StatusCode::NOT_FOUND {
            return Err(self.failure("DELETE", response).await);
        }
        drain(response).await;
        Ok(())
    }

    /// Every object name below the prefix.
    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self
            .list_dated()
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    /// Every object below the prefix, with when it was last changed (Unix
    /// seconds; 0 if S3 sent a time it cannot read).
    async fn list_dated(&self) -> io::Result<Vec<(String, u64)>> {
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
            if !self.prefix.is_empty() {
                action.with_prefix(self.prefix.as_str());
            }
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let request = self
                .request(Method::GET, url)
                .body(empty())
                .map_err(io::Error::other)?;
            let response = self.send(request).await?;
            if !response.status().is_success() {
                return Err(self.failure("LIST", response).await);
            }
            let body = collect(response, "LIST").await?;
            let page = ListObjectsV2::parse_response(&body)
                .map_err(|e| io::Error::other(format!("S3 listing unreadable: {e}")))?;
            // rusty-s3 asks for URL-encoded keys (`encoding-type=url`).
            for content in page.contents {
                let key = percent_encoding::percent_decode_str(&content.key)
                    .decode_utf8()
                    .map_err(|e| {
                        io::Error::other(format!("S3 listing: a key is not UTF-8: {e}"))
                    })?;
                let changed = humantime::parse_rfc3339_weak(&content.last_modified)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                names.push((key.into_owned(), changed));
            }
            match page.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(names),
            }
        }
    }

    /// Looks up an object that does not exist: unlike the bucket's own
    /// metadata, an object's needs the service's quorum (Garage answers for
    /// its bucket with two of three nodes down, but cannot store).
    async fn check(&self) -> Option<String> {
        let probe = format!("{}readyz-probe", self.prefix);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &probe)
            .sign(SIGNED_FOR);
        let request = match self.request(Method::HEAD, url).body(empty()) {
            Ok(request) => request,
            Err(e) => return Some(format!("storage check failed ({e})")),
        };
        match self.send(request).await {
            Ok(response)
                if response.status() == StatusCode::NOT_FOUND || response.status().is_success() =>
            {
                None
            }
            Ok(response) => Some(format!(
                "storage unavailable (the bucket answers {})",
                response.status()
            )),
            Err(e) => Some(format!("storage unavailable ({e})")),
        }
    }
}

/// The `<Code>` of an S3 error document.
fn xml_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(text[start..end].to_owned())
}

fn empty() -> RequestBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(bytes: Bytes) -> RequestBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A (small) answer's whole body, within the deadline.
async fn collect(response: Response<Incoming>, what: &str) -> io::Result<Bytes> {
    Ok(
        tokio::time::timeout(ANSWER_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unreachable(format!("S3 did not send the {what} answer in time")))?
            .map_err(|e| unreachable(format!("S3 {what} failed: {e}")))?
            .to_bytes(),
    )
}

/// Reads an answer's (small) body away, so that its connection can be reused.
async fn drain(response: Response<Incoming>) {
    let _ = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
}

fn metadata_json(meta: &Meta) -> io::Result<Bytes> {
    serde_json::to_vec(meta)
        .map(Bytes::from)
        .map_err(io::Error::other)
}

#[async_trait]
impl Store for S3Store {
    fn new_object(&self, key: &Key) -> String {
        format!("{}.{:016x}", key.hex(), rand::random::<u64>())
    }

    async fn create(&self, meta: &Meta) -> Result<Box<dyn Upload>, CreateError> {
        Ok(Box::new(S3Upload {
            store: Arc::clone(&self.inner),
            name: self.inner.body_name(meta),
            size: meta.size,
            sending: None,
            held: None,
        }))
    }

    async fn put(&self, meta: &Meta, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        let mut body = bytes::BytesMut::with_capacity(meta.size as usize);
        for chunk in chunks {
            body.extend_from_slice(&chunk);
        }
        self.inner
            .put_bytes(&self.inner.body_name(meta), body.freeze())
            .await?;
        self.inner
            .put_bytes(&self.inner.meta_name(meta), metadata_json(meta)?)
            .await?;
        Ok(())
    }

    async fn read(&self, meta: &Meta, segments: Vec<Segment>) -> io::Result<Option<Body>> {
        let name = self.inner.body_name(meta);
        let mut segments: VecDeque<Segment> = segments.into();
        let remaining = segments.iter().map(Segment::size).sum();
        let mut before = VecDeque::new();
        // The first range is asked for now, so that a missing object is a 404
        // and an unreachable service a 503, before any header goes out.
        let mut current = None;
        while let Some(segment) = segments.pop_front() {
            match segment {
                Segment::Stored { len: 0, .. } => {}
                Segment::Stored { offset, len } => {
                    match self.inner.get_range(&name, offset, len).await? {
                        Some(body) => current = Some(body),
                        None => return Ok(None),
                    }
                    break;
                }
                bytes @ Segment::Bytes(_) => before.push_back(bytes),
            }
        }
        Ok(Some(
            S3Read {
                store: Arc::clone(&self.inner),
                name,
                before,
                current,
                segments,
                pending: None,
                remaining,
            }
            .boxed_unsync(),
        ))
    }

    async fn delete(&self, meta: &Meta) -> io::Result<bool> {
        // Metadata first: a body without it is never taken for a file.
        self.inner
            .delete_object(&self.inner.meta_name(meta))
            .await?;
        self.inner
            .delete_object(&self.inner.body_name(meta))
            .await?;
        Ok(true)
    }

    async fn scan(&self) -> io::Result<Vec<Meta>> {
        let names = self.inner.list().await?;
        let mut found = Vec::new();
        let mut reads = tokio::task::JoinSet::new();
        let mut metas = names.into_iter().filter(|n| n.ends_with(META_SUFFIX));
        loop {
            while reads.len() < SCAN_READS {
                let Some(name) = metas.next() else { break };
                let store = Arc::clone(&self.inner);
                reads.spawn(async move { store.get_bytes(&name).await });
            }
            let Some(read) = reads.join_next().await else {
                break;
            };
            let Some(json) = read.map_err(io::Error::other)?? else {
                continue;
            };
            match serde_json::from_slice::<Meta>(&json) {
                Ok(meta) => found.push(meta),
                Err(e) => tracing::warn!(line = e.line(), "unreadable metadata object skipped"),
            }
        }
        Ok(found)
    }

    async fn objects_before(&self, before: u64) -> io::Result<Vec<String>> {
        let prefix = &self.inner.prefix;
        Ok(self
            .inner
            .list_dated()
            .await?
            .into_iter()
            .filter(|(name, changed)| *changed < before && !name.ends_with(META_SUFFIX))
            .filter_map(|(name, _)| name.strip_prefix(prefix.as_str()).map(str::to_owned))
            .collect())
    }

    /// Bodies without metadata: an upload stopped between the two PUTs.
    async fn tidy(&self) -> io::Result<u64> {
        let names = self.inner.list().await?;
        let complete: std::collections::HashSet<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(META_SUFFIX))
            .collect();
        let mut removed = 0;
        for name in names.iter().filter(|n| !n.ends_with(META_SUFFIX)) {
            if !complete.contains(name.as_str()) {
                self.inner.delete_object(name).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn check(&self) -> Option<String> {
        self.inner.check().await
    }
}

/// An upload on its way into one PUT. The request starts with the first
/// batch; the last piece of each batch is held back until the next, and the
/// very last until the commit, so the service never has the whole body before
/// the commit asks for it (see the module's documentation).
struct S3Upload {
    store: Arc<Inner>,
    name: String,
    size: u64,
    sending: Option<Sending>,
    held: Option<Bytes>,
}

struct Sending {
    pieces: mpsc::Sender<Bytes>,
    answer: JoinHandle<io::Result<Response<Incoming>>>,
}

impl S3Upload {
    fn start(&mut self) -> io::Result<&mut Sending> {
        if self.sending.is_none() {
            let url = self
                .store
                .bucket
                .put_object(Some(&self.store.credentials), &self.name)
                .sign(SIGNED_FOR);
            let (pieces, incoming) = mpsc::channel(IN_FLIGHT);
            let body = Piped {
                pieces: incoming,
                remaining: self.size,
            };
            let request = self
                .store
                .request(Method::PUT, url)
                .header(header::CONTENT_LENGTH, self.size)
                .body(body.boxed())
                .map_err(io::Error::other)?;
            let store = Arc::clone(&self.store);
            let answer = tokio::spawn(async move {
                store
                    .client
                    .request(request)
                    .await
                    .map_err(|e| unreachable(format!("S3 PUT failed: {e}")))
            });
            self.sending = Some(Sending { pieces, answer });
        }
        self.sending
            .as_mut()
            .ok_or_else(|| io::Error::other("upload not started"))
    }

    /// Sends one piece; if the request is over, says why.
    async fn send(&mut self, piece: Bytes) -> io::Result<()> {
        let sending = self.start()?;
        if sending.pieces.send(piece).await.is_ok() {
            return Ok(());
        }
        // The request ended early: its answer says why.
        Err(self
            .finish()
            .await
            .err()
            .unwrap_or_else(|| io::Error::other("S3 answered before the whole body was sent")))
    }

    /// Ends the body and waits for the answer.
    async fn finish(&mut self) -> io::Result<()> {
        // An empty body's request starts only now.
        self.start()?;
        let Some(Sending { pieces, mut answer }) = self.sending.take() else {
            return Err(io::Error::other("upload not started"));
        };
        drop(pieces);
        let response = match tokio::time::timeout(ANSWER_TIMEOUT, &mut answer).await {
            Ok(joined) => joined.map_err(io::Error::other)??,
            Err(_) => {
                answer.abort();
                return Err(unreachable("S3 did not answer a PUT in time"));
            }
        };
        if !response.status().is_success() {
            return Err(self.store.failure("PUT", response).await);
        }
        drain(response).await;
        Ok(())
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunks: Vec<Bytes>) -> io::Result<Vec<Bytes>> {
        for chunk in chunks {
            if chunk.is_empty() {
                continue;
            }
            if let Some(held) = self.held.replace(chunk) {
                self.send(held).await?;
            }
        }
        Ok(Vec::new())
    }

    async fn commit(mut self: Box<Self>, meta: &Meta) -> Result<(), CommitError> {
        if let Some(held) = self.held.take() {
            self.send(held).await?;
        }
        self.finish().await?;
        self.store
            .put_bytes(&self.store.meta_name(meta), metadata_json(meta)?)
            .await?;
        Ok(())
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Cut short: the service discards a PUT whose body did not all come.
        if let Some(sending) = self.sending.take() {
            sending.answer.abort();
        }
    }
}

/// An upload's body as the upload hands it over.
struct Piped {
    pieces: mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl http_body::Body for Piped {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match ready!(self.pieces.poll_recv(cx)) {
            Some(piece) => body::data(&mut self.remaining, piece),
            None if self.remaining == 0 => Poll::Ready(None),
            // The upload went away before its body was whole.
            None => Poll::Ready(Some(Err(io::Error::other("upload abandoned")))),
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

type Ranged = Pin<Box<dyn Future<Output = io::Result<Option<Incoming>>> + Send>>;

/// A stored file's answer: the literal segments, and each range fetched in turn.
struct S3Read {
    store: Arc<Inner>,
    name: String,
    /// Literal segments before `current`.
    before: VecDeque<Segment>,
    current: Option<Incoming>,
    segments: VecDeque<Segment>,
    pending: Option<Ranged>,
    remaining: u64,
}

impl http_body::Body for S3Read {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(Segment::Bytes(bytes)) = self.before.pop_front() {
                return body::data(&mut self.remaining, bytes);
            }
            if let Some(pending) = self.pending.as_mut() {
                let ranged = ready!(pending.as_mut().poll(cx));
                self.pending = None;
                match ranged? {
                    Some(body) => self.current = Some(body),
                    None => return Poll::Ready(Some(Err(io::Error::other("object gone")))),
                }
            }
            if let Some(current) = self.current.as_mut() {
                match ready!(Pin::new(current).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(bytes) => return body::data(&mut self.remaining, bytes),
                        Err(_) => continue,
                    },
                    Some(Err(e)) => {
                        return Poll::Ready(Some(Err(unreachable(format!("S3 GET failed: {e}")))));
                    }
                    None => self.current = None,
                }
                continue;
            }
            match self.segments.pop_front() {
                None => return Poll::Ready(None),
                Some(Segment::Bytes(bytes)) => return body::data(&mut self.remaining, bytes),
                Some(Segment::Stored { len: 0, .. }) => {}
                Some(Segment::Stored { offset, len }) => {
                    let store = Arc::clone(&self.store);
                    let name = self.name.clone();
                    self.pending = Some(Box::pin(async move {
                        store.get_range(&name, offset, len).await
                    }));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
