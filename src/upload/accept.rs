//! Everything about a PUT that can be decided from its head: the slot's
//! signature, the size, the caps on uploads in progress, and, in the index,
//! the claim on the path and the quota reservation.

use std::net::IpAddr;

use http::{HeaderMap, header};

use crate::app::App;
use crate::auth::{Presented, Scheme, Verifier};
use crate::client_ip::client_ip;
use crate::error::ApiError;
use crate::index::{Intent, Ticket};
use crate::limits::Pass;
use crate::path::SlotPath;
use crate::store::{META_MAX, Meta};
use crate::telemetry;

/// Length of the hash in a complete file's metadata.
const SHA256_HEX: usize = 64;

/// An upload that passed every check that can be made from its head.
pub struct Accepted {
    pub length: u64,
    pub meta: Meta,
    /// The path's claim and the reservation; given back if the upload fails.
    pub ticket: Ticket,
    /// This upload's place under `max_uploads` and `max_uploads_per_client`.
    pub _slot: Pass,
}

pub async fn accept(
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
        .map_err(|full| ApiError::Busy(full.busy()))?;
    let now = app.clock.unix();
    let meta = super::meta::describe(app, path, &grant, content_type, now);
    // Path and name are most of the metadata, which the store must hold.
    let encoded = serde_json::to_vec(&meta).map_or(usize::MAX, |json| json.len());
    if encoded.saturating_add(SHA256_HEX) > META_MAX {
        return Err(ApiError::PathTooLong);
    }
    let mut ticket = app
        .catalog
        .index
        .begin(Intent {
            key: meta.key(),
            path: &meta.path,
            object: &meta.object,
            // A JWT slot holds one file, whatever its name: the XMPP server
            // counted one upload when it issued the token (docs/limits.md).
            jwt_slot: (grant.scheme == Scheme::Jwt).then(|| path.first_segment()),
            size: length,
            uploader: meta.uploader.as_deref(),
            now,
        })
        .await?;
    for abandoned in std::mem::take(&mut ticket.abandoned) {
        if let Err(e) = app.catalog.delete_bytes(abandoned).await {
            tracing::warn!(error = %e, "what an abandoned upload left could not be deleted yet");
        }
    }
    if let Some(expired) = ticket.replaced.take() {
        // Its bytes must go before ours can take the path.
        app.catalog.delete_bytes(expired).await?;
        app.metrics.expired_deleted.inc();
    }
    Ok(Accepted {
        length,
        meta,
        ticket,
        _slot: slot,
    })
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
