//! Every request enters here: it is parsed into a [`Route`], handled by the module
//! that owns that route, and every response, errors included, leaves with the
//! same CORS and security headers.

use std::net::IpAddr;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::error::ApiError;
use crate::http::body::{self, Body};
use crate::http::cors;
use crate::metrics::{self, Busy, Outcome, QuotaKind};
use crate::path::SlotPath;
use crate::telemetry;
use crate::{download, upload};

#[derive(Debug)]
pub enum Route {
    Upload(SlotPath),
    Download { path: SlotPath, head: bool },
    Preflight,
}

impl Route {
    pub fn parse(method: &Method, raw_path: &str, base_path: &str) -> Result<Route, ApiError> {
        if *method == Method::OPTIONS {
            return Ok(Route::Preflight);
        }
        let path = SlotPath::parse(raw_path, base_path);
        match *method {
            Method::PUT => Ok(Route::Upload(path?)),
            Method::GET => Ok(Route::Download {
                path: path?,
                head: false,
            }),
            Method::HEAD => Ok(Route::Download {
                path: path?,
                head: true,
            }),
            _ => {
                path?;
                Err(ApiError::MethodNotAllowed)
            }
        }
    }

    fn label(&self) -> &'static str {
        match self {
            Route::Upload(_) => "upload",
            Route::Download { head: false, .. } => "download",
            Route::Download { head: true, .. } => "head",
            Route::Preflight => "preflight",
        }
    }
}

pub async fn handle(app: &App, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let origin = req.headers().get(header::ORIGIN).cloned();
    let kind = Kind::of(&method);
    let route = if head_size(&req) > app.config.limits.max_header_size {
        Err(ApiError::HeadTooLarge)
    } else {
        Route::parse(&method, req.uri().path(), &app.config.base_path)
    };
    let label = route.as_ref().map_or("invalid", Route::label);
    let discard = app.config.limits.discard_timeout;
    let result = match route {
        Ok(Route::Upload(path)) => upload::put(app, req, path, peer).await,
        Ok(Route::Download { path, head }) => {
            let parts = body::discard(req, discard);
            download::get(app, &parts.headers, path, head).await
        }
        Ok(Route::Preflight) => {
            body::discard(req, discard);
            Ok(preflight())
        }
        Err(e) => {
            body::discard(req, discard);
            Err(e)
        }
    };
    let ended = Ended::of(result.as_ref().err());
    let mut response = result.unwrap_or_else(ApiError::into_response);
    finish(&mut response, origin.as_ref(), app);
    let elapsed = started.elapsed();
    account(app, kind, &method, response.status(), ended, elapsed);
    tracing::info!(
        method = %telemetry::clip(method.as_str(), METHOD_LOGGED),
        route = label,
        status = response.status().as_u16(),
        ms = elapsed.as_millis() as u64,
        "request"
    );
    response
}

/// What a request was meant to be, by its method: what its metrics count it
/// as, whether or not its path parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Upload,
    Download,
    Other,
}

impl Kind {
    fn of(method: &Method) -> Kind {
        match *method {
            Method::PUT => Kind::Upload,
            Method::GET | Method::HEAD => Kind::Download,
            _ => Kind::Other,
        }
    }
}

/// How a request ended, as its metrics tell it.
#[derive(Debug, Clone, Copy)]
struct Ended {
    /// Counted for PUTs only.
    upload: Outcome,
    quota: Option<QuotaKind>,
    busy: Option<Busy>,
}

impl Ended {
    fn of(error: Option<&ApiError>) -> Ended {
        Ended {
            upload: error.map_or(Outcome::Created, ApiError::upload_outcome),
            quota: error.and_then(ApiError::quota_kind),
            busy: match error {
                Some(ApiError::Busy(busy)) => Some(*busy),
                _ => None,
            },
        }
    }
}

/// Every metric a request moves, in one place.
fn account(
    app: &App,
    kind: Kind,
    method: &Method,
    status: StatusCode,
    ended: Ended,
    elapsed: std::time::Duration,
) {
    let m = &app.metrics;
    if let Some(busy) = ended.busy {
        m.busy_rejections.with_label_values(&[busy.label()]).inc();
    }
    match kind {
        Kind::Upload => {
            m.uploads.with_label_values(&[ended.upload.label()]).inc();
            if let Some(quota) = ended.quota {
                m.quota_rejections.with_label_values(&[quota.label()]).inc();
            }
        }
        Kind::Download => m.downloads.with_label_values(&[status.as_str()]).inc(),
        Kind::Other => {}
    }
    m.request_duration
        .with_label_values(&[
            metrics::method_label(method),
            metrics::status_class(status.as_u16()),
        ])
        .observe(elapsed.as_secs_f64());
}

/// Longest method name a log line carries: ours are at most 7 characters, and
/// anything longer is a client's invention.
const METHOD_LOGGED: usize = 16;

/// The size of the request head as received, near enough: the request target
/// and every header line (docs/limits.md).
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path().len()
        + req.uri().query().map_or(0, str::len)
        + 16;
    req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

fn preflight() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    cors::preflight(response.headers_mut());
    response
}

/// Headers on every response: an upload service serves other people's bytes, so
/// nothing it sends may be sniffed, framed, scripted or leak a Referer.
fn finish(response: &mut Response<Body>, origin: Option<&HeaderValue>, app: &App) {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    cors::decorate(headers, origin, &app.config.allow_origins);
}
