//! PUT: check everything that can be checked from the headers in memory, then the
//! disk (so an `Expect: 100-continue` client never sends a body we would refuse),
//! then stream the body to a pending file while hashing it, then commit. A small
//! body that is on its way anyway is taken first, and the disk checks, the write
//! and the commit share one trip to the blocking pool.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use prometheus::IntCounter;
use sha2::{Digest, Sha256};
use tokio::task::{JoinHandle, spawn_blocking};

use crate::app::{App, Claim};
use crate::auth::{Grant, Presented, Scheme, Verifier};
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::index::{Index, Reservation};
use crate::limits::Pass;
use crate::metrics::{GaugeGuard, quota_kind};
use crate::path::SlotPath;
use crate::store::{CommitError, Key, META_MAX, Meta, Pending, Store};
use crate::telemetry;

/// Body pieces are gathered up to this many bytes for each trip to the disk.
const WRITE_CHUNK: usize = 128 * 1024;
/// Past this many bytes an upload is a long one, and its batches grow to
/// `LONG_WRITE_CHUNK`: fewer trips to the blocking pool, for the few large
/// uploads that run at once.
const LONG_UPLOAD: u64 = 4 * 1024 * 1024;
const LONG_WRITE_CHUNK: usize = 512 * 1024;
/// Bodies up to this size are taken whole before the disk is touched: one trip
/// to the blocking pool instead of three, and a refused one cost no more than
/// the reading that a refusal does anyway (see [`body::discard`]).
const SMALL_BODY: u64 = 64 * 1024;
/// Length of the hash in a complete file's metadata.
const SHA256_HEX: usize = 64;

pub async fn put(
    app: &App,
    req: Request<Incoming>,
    path: SlotPath,
    peer: IpAddr,
) -> Result<Response<Body>, ApiError> {
    let _in_flight = GaugeGuard::new(&app.metrics.uploads_in_flight);
    let discard = app.config.limits.discard_timeout;
    let (parts, incoming) = req.into_parts();
    let accepted = match accept(app, &parts, &path, peer) {
        Ok(accepted) => accepted,
        Err(e) => {
            body::discard(Request::from_parts(parts, incoming), discard);
            return Err(e);
        }
    };
    let Accepted {
        length,
        meta,
        needed,
        reservation,
        claim,
        _slot,
    } = accepted;
    let key = meta.key();
    let disk = Disk::of(app);
    if length <= SMALL_BODY && !body::expects_continue(&parts.headers) {
        // Small and already on its way: take the body, then make one trip to the
        // blocking pool for all the disk work, checks included.
        let (pieces, hash) = receive_small(app, incoming, length).await?;
        tracing::debug!(file = %key, bytes = length, "body received");
        spawn_blocking(move || -> Result<(), ApiError> {
            let sink = Sink {
                pending: disk.prepare(key, meta.created, needed)?,
            };
            let (sink, _) = sink.write(pieces)?;
            Ok(sink.commit(meta, hash, reservation, claim)?)
        })
        .await
        .map_err(join_error)??;
    } else {
        let created = meta.created;
        let prepared = spawn_blocking(move || disk.prepare(key, created, needed)).await;
        let pending = match prepared.map_err(join_error).and_then(|p| p) {
            Ok(pending) => pending,
            Err(e) => {
                body::discard(Request::from_parts(parts, incoming), discard);
                return Err(e);
            }
        };
        let (sink, hash) = receive(app, incoming, pending, length).await?;
        tracing::debug!(file = %key, bytes = length, "body received");
        spawn_blocking(move || sink.commit(meta, hash, reservation, claim))
            .await
            .map_err(join_error)??;
    }
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// An upload that passed every check that can be made in memory from its head.
struct Accepted {
    length: u64,
    meta: Meta,
    /// Free bytes the file system must have for this upload to go ahead.
    needed: u64,
    reservation: Reservation,
    /// Held until the file is committed or abandoned.
    claim: Claim,
    /// This upload's place under `max_uploads` and `max_uploads_per_client`.
    _slot: Pass,
}

/// Checks slot, size, path and quota from the request head alone.
fn accept(
    app: &App,
    parts: &http::request::Parts,
    path: &SlotPath,
    peer: IpAddr,
) -> Result<Accepted, ApiError> {
    let headers = &parts.headers;
    let length = content_length(headers)?;
    let content_type = header_str(headers, header::CONTENT_TYPE)?;
    let presented = Presented {
        path,
        query: parts.uri.query(),
        content_length: length,
        content_type,
        authorization: header_str(headers, header::AUTHORIZATION)?,
        now: app.clock.unix(),
    };
    let grant = app.verifier().verify(&presented).inspect_err(|&e| {
        let ip = app
            .config
            .failed_auth_ip
            .then(|| client_ip(peer, headers, &app.config.trusted_proxies));
        let scheme = Verifier::scheme_of(&presented);
        telemetry::auth_failure(ip, scheme, e);
        let scheme = scheme.map_or("none", |s| s.as_str());
        app.metrics
            .auth_failures
            .with_label_values(&[scheme, e.label()])
            .inc();
    })?;
    if length > app.config.max_file_size {
        return Err(ApiError::TooLarge);
    }
    let client = client_ip(peer, headers, &app.config.trusted_proxies);
    let slot = app
        .uploads
        .enter(client, || false)
        .map_err(|full| ApiError::Busy(full.label()))?;
    let key = Key::for_path(path.as_str());
    let now = app.clock.unix();
    if app.store.cached(&key).is_some_and(|m| !m.is_expired(now)) {
        return Err(ApiError::Exists);
    }
    // A JWT slot holds one file, whatever its name: the XMPP server counted
    // one upload when it issued the token (docs/limits.md).
    let jwt_slot = (grant.scheme == Scheme::Jwt).then(|| path.first_segment());
    let claim = app
        .claim_both(key, jwt_slot.map(Key::for_slot))
        .ok_or(ApiError::Exists)?;
    if jwt_slot.is_some_and(|slot| app.index.jwt_slot_taken(slot)) {
        return Err(ApiError::Exists);
    }
    let meta = describe(app, path, &grant, content_type, now);
    // Path and name are most of the metadata, which the store must hold.
    let encoded = serde_json::to_vec(&meta).map_or(usize::MAX, |json| json.len());
    if encoded.saturating_add(SHA256_HEX) > META_MAX {
        return Err(ApiError::PathTooLong);
    }
    let needed = length
        .saturating_add(app.config.min_free_space)
        .saturating_add(app.index.reserved());
    let reservation = app.index.reserve(length, meta.uploader.as_deref())?;
    Ok(Accepted {
        length,
        meta,
        needed,
        reservation,
        claim,
        _slot: slot,
    })
}

/// What the disk checks need, to take to the blocking pool.
struct Disk {
    store: Arc<dyn Store>,
    index: Arc<Index>,
    expired_deleted: IntCounter,
}

impl Disk {
    fn of(app: &App) -> Disk {
        Disk {
            store: Arc::clone(&app.store),
            index: Arc::clone(&app.index),
            expired_deleted: app.metrics.expired_deleted.clone(),
        }
    }

    /// The checks that need the disk: the path is free (or holds only an
    /// expired file, which goes now), and the file system keeps `needed` bytes.
    /// Blocks.
    fn prepare(&self, key: Key, now: u64, needed: u64) -> Result<Box<dyn Pending>, ApiError> {
        if let Some(existing) = self.store.meta(&key)? {
            if !existing.is_expired(now) {
                return Err(ApiError::Exists);
            }
            // Past its expiry the path is free again, whether or not the reaper came.
            if self.store.delete(&key)? {
                self.index.removed(&existing);
                self.expired_deleted.inc();
            }
        }
        if self.store.available_space()? < needed {
            return Err(ApiError::InsufficientStorage(quota_kind::FREE_SPACE));
        }
        Ok(self.store.create(&key)?)
    }
}

fn content_length(headers: &HeaderMap) -> Result<u64, ApiError> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ApiError::LengthRequired);
    }
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next().ok_or(ApiError::LengthRequired)?;
    if values.next().is_some() {
        return Err(ApiError::BadRequest("several content-length headers"));
    }
    value
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or(ApiError::BadRequest("bad content-length"))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str())
        .transpose()
        .map_err(|_| ApiError::BadRequest("header is not ASCII"))
}

/// The metadata the file will carry once complete (size and hash filled in later).
fn describe(app: &App, path: &SlotPath, grant: &Grant, sent_type: Option<&str>, now: u64) -> Meta {
    let retention_end = now.saturating_add(app.config.retention.as_secs());
    let expires = grant
        .expires
        .map_or(retention_end, |e| e.min(retention_end));
    let content_type = grant
        .signed_type
        .as_deref()
        .or(sent_type)
        .filter(|t| t.parse::<mime::Mime>().is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            mime_guess::from_path(path.file_name())
                .first_or_octet_stream()
                .to_string()
        });
    Meta {
        path: path.as_str().to_owned(),
        name: path.file_name().to_owned(),
        size: grant.size,
        content_type,
        sha256: String::new(),
        created: now,
        expires,
        scheme: grant.scheme,
        uploader: grant.uploader.clone().or_else(|| ejabberd_user(path)),
    }
}

/// ejabberd's slots are `<user>/<40 random alphanumerics>/<name>`, where `<user>`
/// is the SHA-1 of the bare JID or its node: the uploader, for quotas and `files`.
fn ejabberd_user(path: &SlotPath) -> Option<String> {
    let mut segments = path.as_str().split('/');
    let (user, random, _name) = (segments.next()?, segments.next()?, segments.next()?);
    let looks_random = random.len() == 40 && random.bytes().all(|b| b.is_ascii_alphanumeric());
    (segments.next().is_none() && looks_random).then(|| user.to_owned())
}

/// A pending file and the hash of what went into it. The hash is taken where
/// the body arrives, on the runtime's threads, so that on a long upload hashing
/// and writing run side by side on two cores instead of one after the other.
struct Sink {
    pending: Box<dyn Pending>,
}

impl Sink {
    /// Writes `batch` and hands it back empty, to be filled again.
    fn write(mut self, mut batch: Vec<Bytes>) -> io::Result<(Sink, Vec<Bytes>)> {
        for piece in &batch {
            self.pending.write(piece)?;
        }
        batch.clear();
        Ok((self, batch))
    }

    /// Publishes the file and counts it in the index in the same blocking call:
    /// a request dropped meanwhile (client gone, shutdown) cannot leave a stored
    /// file that quotas and the reaper do not know of. The claim goes last.
    fn commit(
        self,
        mut meta: Meta,
        hash: Sha256,
        reservation: Reservation,
        _claim: Claim,
    ) -> Result<(), CommitError> {
        meta.sha256 = hex::encode(hash.finalize());
        self.pending.commit(&meta)?;
        reservation.commit(&meta);
        Ok(())
    }
}

type Written = JoinHandle<io::Result<(Sink, Vec<Bytes>)>>;

/// Writes batches on the blocking pool, one at a time, so that the next batch
/// fills from the network while the previous one goes to disk. A batch holds
/// the body's pieces as they came (no copy).
struct Writer {
    idle: Option<(Sink, Vec<Bytes>)>,
    busy: Option<Written>,
}

impl Writer {
    async fn settle(&mut self) -> Result<(Sink, Vec<Bytes>), ApiError> {
        match (self.busy.take(), self.idle.take()) {
            (Some(handle), _) => Ok(handle.await.map_err(join_error)??),
            (None, Some(idle)) => Ok(idle),
            (None, None) => Err(ApiError::Internal(io::Error::other("upload writer lost"))),
        }
    }

    /// Hands `batch`'s pieces to the disk and leaves `batch` empty.
    async fn flush(&mut self, batch: &mut Vec<Bytes>) -> Result<(), ApiError> {
        let (sink, mut spare) = self.settle().await?;
        std::mem::swap(batch, &mut spare);
        self.busy = Some(spawn_blocking(move || sink.write(spare)));
        Ok(())
    }

    async fn finish(mut self) -> Result<Sink, ApiError> {
        Ok(self.settle().await?.0)
    }
}

/// Streams exactly `length` bytes of body into `pending`, hashing them.
async fn receive(
    app: &App,
    mut incoming: Incoming,
    pending: Box<dyn Pending>,
    length: u64,
) -> Result<(Sink, Sha256), ApiError> {
    let mut writer = Writer {
        idle: Some((Sink { pending }, Vec::new())),
        busy: None,
    };
    let mut hash = Sha256::new();
    let mut batch = Vec::new();
    let mut batched = 0;
    let mut body = Received::new(length);
    while let Some(data) = body.next(app, &mut incoming).await? {
        hash.update(&data);
        batched += data.len();
        batch.push(data);
        let limit = if body.so_far > LONG_UPLOAD {
            LONG_WRITE_CHUNK
        } else {
            WRITE_CHUNK
        };
        if batched >= limit {
            writer.flush(&mut batch).await?;
            batched = 0;
        }
    }
    if !batch.is_empty() {
        writer.flush(&mut batch).await?;
    }
    Ok((writer.finish().await?, hash))
}

/// Takes a whole (small) body as the pieces it arrived in, and its hash.
async fn receive_small(
    app: &App,
    mut incoming: Incoming,
    length: u64,
) -> Result<(Vec<Bytes>, Sha256), ApiError> {
    let mut hash = Sha256::new();
    let mut pieces = Vec::new();
    let mut body = Received::new(length);
    while let Some(data) = body.next(app, &mut incoming).await? {
        hash.update(&data);
        pieces.push(data);
    }
    Ok((pieces, hash))
}

/// Counts a body in as it arrives, holding it to its announced length and to
/// the minimum rate: after `idle_timeout` of grace, each second must have
/// brought `limits.min_upload_rate` bytes on average, as Apache's
/// mod_reqtimeout `MinRate` asks (docs/limits.md). A slow upload cannot hold its
/// quota reservation and its place for ever.
struct Received {
    length: u64,
    so_far: u64,
    started: Instant,
}

impl Received {
    fn new(length: u64) -> Received {
        Received {
            length,
            so_far: 0,
            started: Instant::now(),
        }
    }

    /// How long to wait for the next piece: the idle timeout, or less if the
    /// minimum rate's deadline comes sooner.
    fn patience(&self, app: &App) -> Result<Duration, ApiError> {
        let idle = app.config.idle_timeout;
        let rate = app.config.limits.min_upload_rate;
        if rate == 0 {
            return Ok(idle);
        }
        let earned = Duration::from_secs_f64(self.so_far as f64 / rate as f64);
        let left = (idle + earned).saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return Err(ApiError::Timeout);
        }
        Ok(left.min(idle))
    }

    /// The next piece of the body; `None` once exactly `length` bytes came.
    async fn next(
        &mut self,
        app: &App,
        incoming: &mut Incoming,
    ) -> Result<Option<Bytes>, ApiError> {
        loop {
            let frame = tokio::time::timeout(self.patience(app)?, incoming.frame())
                .await
                .map_err(|_| ApiError::Timeout)?;
            let data = match frame {
                None if self.so_far == self.length => return Ok(None),
                None => return Err(ApiError::ShortBody),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_trailers) => continue,
                },
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "upload body interrupted");
                    return Err(ApiError::ShortBody);
                }
            };
            self.so_far += data.len() as u64;
            app.metrics.upload_bytes.inc_by(data.len() as u64);
            if self.so_far > self.length {
                return Err(ApiError::LongBody);
            }
            return Ok(Some(data));
        }
    }
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    ApiError::Internal(io::Error::other(e))
}
