//! The admin listener (`[admin] listen`, never the public one): `/metrics` for
//! Prometheus, `/healthz` (the process answers) and `/readyz` (it can do its job:
//! it is not shutting down, the store takes uploads (for the file system: the
//! data directory takes writes, free space is above the watermark), the index
//! answers, and the reaper has run recently).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::http::body::{self, Body};

pub async fn handle(app: Arc<App>, req: Request<Incoming>, _peer: IpAddr) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    let mut response = match req.uri().path() {
        "/metrics" => {
            let now = app.clock.unix();
            // Without the index's figures, the rest is still worth scraping.
            let stats = app.catalog.index.stats().await.ok().unwrap_or_default();
            let body = app.metrics.render(stats.usage, stats.oldest_created, now);
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match problems(&app).await {
            problems if problems.is_empty() => text(StatusCode::OK, "ready\n".into()),
            problems => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", problems.join("; ")),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    if req.method() == Method::HEAD {
        *response.body_mut() = body::empty();
    }
    response
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The longest the reaper may go without completing a pass before it counts as
/// stuck: three intervals, and a minute of slack for a large pass.
pub fn reaper_deadline(interval: Duration) -> u64 {
    (interval * 3).as_secs() + 60
}

/// Why the service cannot do its job now; empty when it can.
async fn problems(app: &Arc<App>) -> Vec<String> {
    let mut problems = Vec::new();
    if app.stopping.load(std::sync::atomic::Ordering::Relaxed) {
        problems.push("shutting down".to_owned());
    }
    if let Some(problem) = app.catalog.store.check().await {
        problems.push(problem);
    }
    if let Some(problem) = app.catalog.index.check().await {
        problems.push(problem);
    }
    let last = app
        .reaper_heartbeat
        .load(std::sync::atomic::Ordering::Relaxed);
    let now = app.clock.unix();
    if now.saturating_sub(last) > reaper_deadline(app.config.reap_interval) {
        problems.push(format!("reaper has made no progress since {last}"));
    }
    problems
}
