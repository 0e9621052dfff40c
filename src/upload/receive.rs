//! The body of a PUT as it arrives: held to its announced length and to a
//! minimum rate, hashed where it arrives (on the runtime's threads, so that on
//! a long upload hashing and writing run side by side on two cores), and
//! handed to the store in batches.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::ApiError;
use crate::store::Upload;

/// Body pieces are gathered up to this many bytes for each write to the store.
const WRITE_CHUNK: usize = 128 * 1024;
/// Past this many bytes an upload is a long one, and its batches grow to
/// `LONG_WRITE_CHUNK`: fewer writes, for the few large uploads that run at once.
const LONG_UPLOAD: u64 = 4 * 1024 * 1024;
const LONG_WRITE_CHUNK: usize = 512 * 1024;

/// Streams exactly `length` bytes of body into `upload`, hashing them.
pub async fn streamed(
    app: &App,
    mut incoming: Incoming,
    mut upload: Box<dyn Upload>,
    length: u64,
) -> Result<(Box<dyn Upload>, Sha256), ApiError> {
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
            batch = upload.write(batch).await?;
            batched = 0;
        }
    }
    if !batch.is_empty() {
        upload.write(batch).await?;
    }
    Ok((upload, hash))
}

/// Takes a whole (small) body as the pieces it arrived in, and its hash.
pub async fn whole(
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
