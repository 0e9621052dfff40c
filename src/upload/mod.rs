//! PUT, top to bottom: check everything that can be checked from the head and
//! claim the path in the index ([`accept`]), so that an `Expect: 100-continue`
//! client never sends a body we would refuse; stream the body into the store
//! while hashing it ([`receive`]); then commit the file to the store and the
//! index together. A small body that is on its way anyway is taken whole first
//! and handed to the store in one piece.

mod accept;
mod meta;
mod receive;

use std::net::IpAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::index::{Index, Ticket};
use crate::metrics::GaugeGuard;
use crate::path::SlotPath;
use crate::store::{Meta, Store, Upload};

use self::accept::Accepted;

/// Bodies up to this size are taken whole before the store is touched: one
/// trip to the store instead of three, and a refused one cost no more than
/// the reading that a refusal does anyway (see [`body::discard`]).
const SMALL_BODY: u64 = 64 * 1024;

pub async fn put(
    app: &App,
    req: Request<Incoming>,
    path: SlotPath,
    peer: IpAddr,
) -> Result<Response<Body>, ApiError> {
    let _in_flight = GaugeGuard::new(&app.metrics.uploads_in_flight);
    let discard = app.config.limits.discard_timeout;
    let (parts, incoming) = req.into_parts();
    let accepted = match accept::accept(app, &parts, &path, peer).await {
        Ok(accepted) => accepted,
        Err(e) => {
            body::discard(Request::from_parts(parts, incoming), discard);
            return Err(e);
        }
    };
    let Accepted {
        length,
        meta,
        ticket,
        _slot,
    } = accepted;
    let store = Arc::clone(&app.catalog.store);
    let index = Arc::clone(&app.catalog.index);
    let received = if length <= SMALL_BODY && !body::expects_continue(&parts.headers) {
        receive::whole(app, incoming, length)
            .await
            .map(|(pieces, hash)| (Received::Whole(pieces), hash))
    } else {
        match store.create(&meta).await {
            Ok(upload) => receive::streamed(app, incoming, upload, length)
                .await
                .map(|(upload, hash)| (Received::Streamed(upload), hash)),
            Err(e) => {
                body::discard(Request::from_parts(parts, incoming), discard);
                Err(e.into())
            }
        }
    };
    let (received, hash) = match received {
        Ok(received) => received,
        Err(e) => {
            // Given back before the answer, so that a retry finds the path free.
            index.abandon(ticket).await;
            return Err(e);
        }
    };
    tracing::debug!(file = %meta.key(), bytes = length, "body received");
    let meta = sealed(meta, hash);
    finish(async move {
        let stored = match received {
            Received::Whole(pieces) => store.put(&meta, pieces).await.map_err(ApiError::from),
            Received::Streamed(upload) => upload.commit(&meta).await.map_err(ApiError::from),
        };
        if let Err(e) = stored {
            index.abandon(ticket).await;
            return Err(e);
        }
        record(&*store, &*index, ticket, &meta).await
    })
    .await?;
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// A body as it arrived: whole (small), or already in the store's hands.
enum Received {
    Whole(Vec<bytes::Bytes>),
    Streamed(Box<dyn Upload>),
}

/// The metadata with the body's hash, ready to be stored.
fn sealed(mut meta: Meta, hash: Sha256) -> Meta {
    meta.sha256 = hex::encode(hash.finalize());
    meta
}

/// Runs a commit to its end even if the request goes away meanwhile (client
/// gone, stream reset, shutdown): a file in the store must also be in the
/// index, or quotas and the reaper would not know of it.
async fn finish(
    commit: impl Future<Output = Result<(), ApiError>> + Send + 'static,
) -> Result<(), ApiError> {
    tokio::spawn(commit)
        .await
        .map_err(|e| ApiError::Internal(std::io::Error::other(e)))?
}

/// Records a stored file in the index; if the index refuses it, its bytes go
/// again, for a file the index does not know of must not stay.
async fn record(
    store: &dyn Store,
    index: &dyn Index,
    ticket: Ticket,
    meta: &Meta,
) -> Result<(), ApiError> {
    if let Err(e) = index.commit(ticket, meta).await {
        if let Err(gone) = store.delete(meta).await {
            tracing::warn!(error = %gone, "a file the index refused could not be deleted");
        }
        return Err(e.into());
    }
    Ok(())
}
