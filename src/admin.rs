//! The admin listener (`[admin] listen`, never the public one): `/metrics` for
//! Prometheus, `/healthz` (the process answers) and `/readyz` (it can do its job:
//! it is not shutting down, the data directory takes writes, free space is above
//! the watermark, and the reaper has run recently).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::task::spawn_blocking;

use crate::app::App;
use crate::http::body::{self, Body};
use crate::store::Key;

pub async fn handle(app: Arc<App>, req: Request<Incoming>, _peer: IpAddr) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    let mut response = match req.uri().path() {
        "/metrics" => {
            let now = app.clock.unix();
            let body = app
                .metrics
                .render(app.index.usage(), app.index.oldest_created(), now);
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
    let store = Arc::clone(&app.store);
    let min_free = app.config.min_free_space;
    let disk = spawn_blocking(move || {
        // A real pending upload, dropped at once: proves tmp/ takes new files.
        let probe = Key::for_path(&format!("readyz/{:016x}", rand::random::<u64>()));
        let writable = store.create(&probe).map(drop);
        (writable, store.available_space())
    })
    .await;
    match disk {
        Ok((writable, free)) => {
            if let Err(e) = writable {
                problems.push(format!("data directory not writable ({e})"));
            }
            match free {
                Ok(free) if free < min_free => {
                    problems.push(format!("free space {free} below min_free_space {min_free}"));
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("free space unknown ({e})")),
            }
        }
        Err(e) => problems.push(format!("disk check failed ({e})")),
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
