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
use crate::metrics::{self, outcome};
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
    if let Err(ApiError::Busy(reason)) = &result {
        app.metrics
            .busy_rejections
            .with_label_values(&[reason])
            .inc();
    }
    if method == Method::PUT {
        let outcome = result
            .as_ref()
            .map_or_else(ApiError::upload_outcome, |_| outcome::CREATED);
        app.metrics.uploads.with_label_values(&[outcome]).inc();
        if let Err(kind) = result.as_ref().map_err(ApiError::quota_kind)
            && let Some(kind) = kind
        {
            app.metrics
                .quota_rejections
                .with_label_values(&[kind])
                .inc();
        }
    }
    let mut response = result.unwrap_or_else(ApiError::into_response);
    finish(&mut response, origin.as_ref(), app);
    let status = response.status().as_u16();
    if method == Method::GET || method == Method::HEAD {
        app.metrics
            .downloads
            .with_label_values(&[response.status().as_str()])
            .inc();
    }
    let elapsed = started.elapsed();
    app.metrics
        .request_duration
        .with_label_values(&[
            metrics::method_label(&method),
            metrics::status_class(status),
        ])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        method = %telemetry::clip(method.as_str(), METHOD_LOGGED),
        route = label,
        status,
        ms = elapsed.as_millis() as u64,
        "request"
    );
    response
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
