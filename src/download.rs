//! GET and HEAD: look the file up in the index, decide what to send
//! (preconditions, then ranges), render that decision into a response, and
//! only then, for a body, go to the store. HEAD gets exactly GET's headers,
//! and neither it nor a 304, 412 or 416 touches the store.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use headers::{ETag, HeaderMapExt, LastModified};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::app::App;
use crate::error::ApiError;
use crate::http::body::{self, Body, Segment};
use crate::http::conditional::{self, Outcome};
use crate::http::disposition::{content_disposition, is_inline};
use crate::http::range::{self, Ranges};
use crate::path::SlotPath;
use crate::store::{Key, Meta};

/// What a GET or HEAD will answer, before any header is written.
enum Decision {
    NotModified,
    Failed,
    Full,
    Partial(Vec<std::ops::RangeInclusive<u64>>),
    Unsatisfiable,
}

pub async fn get(
    app: &App,
    request: &HeaderMap,
    path: SlotPath,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let key = Key::for_path(path.as_str());
    let meta = app
        .catalog
        .index
        .get(&key)
        .await?
        .ok_or(ApiError::NotFound)?;
    let now = app.clock.unix();
    if meta.is_expired(now) {
        return Err(ApiError::NotFound);
    }
    let etag = etag(&meta)?;
    let last_modified = UNIX_EPOCH + Duration::from_secs(meta.created);
    let decision = match conditional::evaluate(request, &etag, last_modified) {
        Outcome::NotModified => Decision::NotModified,
        Outcome::Failed => Decision::Failed,
        Outcome::Proceed { range_allowed } => {
            let asked = range_allowed.then(|| request.get(header::RANGE)).flatten();
            match range::evaluate(asked, meta.size) {
                Ranges::Full => Decision::Full,
                Ranges::Partial(ranges) => Decision::Partial(ranges),
                Ranges::Unsatisfiable => Decision::Unsatisfiable,
            }
        }
    };
    let (mut response, segments) = render(decision, &meta);
    let headers = response.headers_mut();
    headers.typed_insert(etag);
    headers.typed_insert(LastModified::from(last_modified));
    headers.insert(header::CACHE_CONTROL, cache_control(meta.expires - now));
    if !head && !segments.is_empty() {
        let body = app
            .catalog
            .store
            .read(&meta, segments)
            .await?
            // Deleted since the index was asked.
            .ok_or(ApiError::NotFound)?;
        *response.body_mut() = body::counted(body, app.metrics.download_bytes.clone());
    }
    Ok(response)
}

/// A strong validator from the content hash: bodies never change once stored.
fn etag(meta: &Meta) -> Result<ETag, ApiError> {
    let digest = meta.sha256.get(..32).unwrap_or(&meta.sha256);
    format!("\"{digest}\"")
        .parse()
        .map_err(|_| ApiError::Internal(std::io::Error::other("metadata holds a bad hash")))
}

/// Caches may keep the file no longer than the file itself lives.
fn cache_control(remaining: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("private, max-age={remaining}, immutable"))
        .unwrap_or_else(|_| HeaderValue::from_static("no-store"))
}

/// The response for `decision`, with an empty body, and the pieces its body is
/// to be made of.
fn render(decision: Decision, meta: &Meta) -> (Response<Body>, Vec<Segment>) {
    let size = meta.size;
    let mut response = Response::new(body::empty());
    let content_type = HeaderValue::from_str(&meta.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    match decision {
        Decision::NotModified => {
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            return (response, Vec::new());
        }
        Decision::Failed => {
            *response.status_mut() = StatusCode::PRECONDITION_FAILED;
            return (response, Vec::new());
        }
        Decision::Unsatisfiable => {
            headers.insert(header::CONTENT_RANGE, content_range(None, size));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            return (response, Vec::new());
        }
        Decision::Full | Decision::Partial(_) => {}
    }
    headers.insert(
        header::CONTENT_DISPOSITION,
        content_disposition(&meta.name, is_inline(&meta.content_type)),
    );
    let (status, segments, length) = match decision {
        Decision::Partial(ranges) if ranges.len() == 1 => {
            let (start, end) = (*ranges[0].start(), *ranges[0].end());
            headers.insert(
                header::CONTENT_RANGE,
                content_range(Some((start, end)), size),
            );
            headers.insert(header::CONTENT_TYPE, content_type);
            let len = end - start + 1;
            let segments = vec![Segment::Stored { offset: start, len }];
            (StatusCode::PARTIAL_CONTENT, segments, len)
        }
        Decision::Partial(ranges) => {
            let boundary = format!("{:032x}", rand::random::<u128>());
            let (segments, len) = multipart(&ranges, &content_type, size, &boundary);
            let value = format!("multipart/byteranges; boundary={boundary}");
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            (StatusCode::PARTIAL_CONTENT, segments, len)
        }
        _ => {
            headers.insert(header::CONTENT_TYPE, content_type);
            let segments = vec![Segment::Stored {
                offset: 0,
                len: size,
            }];
            (StatusCode::OK, segments, size)
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    *response.status_mut() = status;
    (response, segments)
}

fn content_range(range: Option<(u64, u64)>, size: u64) -> HeaderValue {
    let text = match range {
        Some((start, end)) => format!("bytes {start}-{end}/{size}"),
        None => format!("bytes */{size}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}

/// RFC 9110 §14.6: each part carries its own Content-Type and Content-Range.
fn multipart(
    ranges: &[std::ops::RangeInclusive<u64>],
    content_type: &HeaderValue,
    size: u64,
    boundary: &str,
) -> (Vec<Segment>, u64) {
    let content_type = content_type.to_str().unwrap_or("application/octet-stream");
    let mut segments = Vec::with_capacity(ranges.len() * 2 + 1);
    let mut length = 0;
    for (i, range) in ranges.iter().enumerate() {
        let (start, end) = (*range.start(), *range.end());
        let lead = if i == 0 { "" } else { "\r\n" };
        let head = format!(
            "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {start}-{end}/{size}\r\n\r\n"
        );
        length += head.len() as u64 + (end - start + 1);
        segments.push(Segment::Bytes(Bytes::from(head)));
        segments.push(Segment::Stored {
            offset: start,
            len: end - start + 1,
        });
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    length += tail.len() as u64;
    segments.push(Segment::Bytes(Bytes::from(tail)));
    (segments, length)
}
