//! The admin listener: `/metrics` moves by exactly what a scripted workload did,
//! with the names of DESIGN §7 and bounded labels; `/healthz` and `/readyz`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use common::{Server, T0};
use http::{Method, StatusCode};
use support::{wait_for, wait_until};
use upslot::auth::Scheme;

/// `name{labels}` → value, for every sample line.
fn scrape_text(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &Server) -> (String, HashMap<String, f64>) {
    let r = common::request(server.admin, Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    let samples = scrape_text(&text);
    (text, samples)
}

fn get(samples: &HashMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_what_the_workload_did() {
    let server = Server::start_config(|c| {
        c.max_file_size = 1000;
        c.quota_total = 1500;
    })
    .await;
    let (_, before) = scrape(&server).await;

    // 3 stored uploads of 100, 200 and 300 bytes.
    for (i, n) in [100usize, 200, 300].into_iter().enumerate() {
        server.upload(&format!("m/{i}.bin"), &vec![1u8; n]).await;
    }
    // Refusals: 2 bad signatures, 1 missing token, 1 too large, 1 conflict, 1 over quota.
    let bad = format!("{}?v={}", server.target("m/x.bin"), "0".repeat(64));
    for _ in 0..2 {
        let r = server.request(Method::PUT, &bad, &[], vec![0; 10]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
    }
    let r = server
        .request(Method::PUT, &server.target("m/y.bin"), &[], vec![0; 10])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        server.put_v1("m/big.bin", &[0; 1001]).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        server.put_v1("m/0.bin", &[1; 100]).await.status,
        StatusCode::CONFLICT
    );
    let r = server.put_v1("m/q.bin", &[0; 1000]).await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    // Downloads: 2 full GETs of 200 bytes, 1 range of 10, 1 HEAD, 1 404, 1 304.
    for _ in 0..2 {
        assert_eq!(server.get("m/1.bin", &[]).await.body.len(), 200);
    }
    let r = server.get("m/1.bin", &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let head = server
        .request(Method::HEAD, &server.target("m/1.bin"), &[], vec![])
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        server.get("m/none.bin", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let etag = r.header("etag").unwrap().to_owned();
    let r = server.get("m/1.bin", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    let (text, after) = scrape(&server).await;
    let moved = |key: &str| get(&after, key) - get(&before, key);
    assert_eq!(moved("upslot_uploads_total{outcome=\"created\"}"), 3.0);
    assert_eq!(moved("upslot_uploads_total{outcome=\"refused\"}"), 3.0);
    assert_eq!(moved("upslot_uploads_total{outcome=\"too_large\"}"), 1.0);
    assert_eq!(moved("upslot_uploads_total{outcome=\"conflict\"}"), 1.0);
    assert_eq!(moved("upslot_uploads_total{outcome=\"no_space\"}"), 1.0);
    assert_eq!(moved("upslot_upload_bytes_total"), 600.0);
    assert_eq!(
        moved("upslot_auth_failures_total{reason=\"signature\",scheme=\"v1\"}"),
        2.0
    );
    assert_eq!(
        moved("upslot_auth_failures_total{reason=\"missing\",scheme=\"none\"}"),
        1.0
    );
    assert_eq!(moved("upslot_quota_rejections_total{kind=\"total\"}"), 1.0);
    assert_eq!(moved("upslot_downloads_total{status=\"200\"}"), 3.0);
    assert_eq!(moved("upslot_downloads_total{status=\"206\"}"), 1.0);
    assert_eq!(moved("upslot_downloads_total{status=\"404\"}"), 1.0);
    assert_eq!(moved("upslot_downloads_total{status=\"304\"}"), 1.0);
    assert_eq!(moved("upslot_download_bytes_total"), 410.0);
    assert_eq!(get(&after, "upslot_stored_files"), 3.0);
    assert_eq!(get(&after, "upslot_stored_bytes"), 600.0);
    assert_eq!(get(&after, "upslot_uploads_in_flight"), 0.0);
    assert_eq!(
        moved("upslot_http_request_duration_seconds_count{method=\"PUT\",status_class=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        moved("upslot_http_request_duration_seconds_count{method=\"PUT\",status_class=\"4xx\"}"),
        5.0
    );
    assert!(get(&after, "upslot_reaper_last_run_timestamp_seconds") >= T0 as f64);
    assert!(
        text.contains("process_resident_memory_bytes"),
        "process metrics"
    );
    // No label anywhere names a path, a file, a user or an address.
    for needle in ["m/1.bin", "1.bin", "127.0.0.1", "upload/"] {
        assert!(!text.contains(needle), "metrics mention {needle}");
    }
    check_with_promtool(&text);
}

#[tokio::test]
async fn age_and_expiry_gauges_follow_the_clock() {
    let server = Server::start_config(|c| c.reap_interval = Duration::from_millis(20)).await;
    server.upload("a/old", b"1").await;
    server.clock.set(T0 + 100);
    server.upload("a/new", b"22").await;
    server.clock.set(T0 + 1000);
    let (_, m) = scrape(&server).await;
    assert_eq!(get(&m, "upslot_oldest_file_age_seconds"), 1000.0);
    server.clock.set(T0 + 7 * 24 * 3600 + 50);
    let last = RefCell::new(HashMap::new());
    wait_until("the reaper to delete the old file", || async {
        let (_, m) = scrape(&server).await;
        let deleted = get(&m, "upslot_expired_files_deleted_total") >= 1.0;
        *last.borrow_mut() = m;
        deleted
    })
    .await;
    let m = last.into_inner();
    assert_eq!(get(&m, "upslot_expired_files_deleted_total"), 1.0);
    assert_eq!(
        get(&m, "upslot_oldest_file_age_seconds"),
        (7 * 24 * 3600 - 50) as f64
    );
    assert_eq!(get(&m, "upslot_stored_files"), 1.0);
}

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start().await;
    let r = common::request(server.admin, Method::GET, "/healthz", &[], vec![]).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok\n"));
    let r = common::request(server.admin, Method::GET, "/readyz", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The admin routes are not on the public listener, nor the reverse.
    let r = common::request(server.addr, Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let target = server.signed_target(Scheme::V1, "a/b", 1, None);
    let r = common::request(server.admin, Method::PUT, &target, &[], vec![1]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // The reaper has not run for far longer than its interval allows: not ready.
    // Its first pass (at start, slower on a shared index) must be over first,
    // or it would stamp the later time as its progress.
    wait_for("the reaper's first pass", || {
        server.app.metrics.reaper_last_run.get() > 0.0
    })
    .await;
    server.clock.set(T0 + 3600 * 24);
    let r = common::request(server.admin, Method::GET, "/readyz", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("reaper"), "{}", r.text());
}

/// While shutdown drains the requests in flight, readiness says no, so that a
/// load balancer sends new ones elsewhere.
#[tokio::test]
async fn not_ready_while_shutting_down() {
    use tokio::io::AsyncWriteExt;
    let mut server = Server::start_config(|c| c.shutdown_timeout = Duration::from_secs(30)).await;
    // An upload in flight (2 of its 10 bytes) keeps the service draining.
    let target = server.signed_target(Scheme::V1, "drain/f.bin", 10, None);
    let mut upload = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!("PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab");
    upload.write_all(head.as_bytes()).await.unwrap();
    wait_for("the upload in flight", || {
        server.app.metrics.uploads_in_flight.get() == 1
    })
    .await;
    server.begin_shutdown();
    let admin = server.admin;
    let last = RefCell::new(String::new());
    wait_until("readiness to say no", || async {
        let r = common::request(admin, Method::GET, "/readyz", &[], vec![]).await;
        *last.borrow_mut() = r.text();
        r.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let last = last.into_inner();
    assert!(last.contains("shutting down"), "{last}");
    drop(upload);
}

#[tokio::test]
async fn not_ready_below_the_free_space_watermark() {
    if common::on_cluster() {
        return; // about the file-system store: min_free_space is the data directory's
    }
    let server = Server::start_config(|c| c.min_free_space = u64::MAX / 4).await;
    let r = common::request(server.admin, Method::GET, "/readyz", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("free space"), "{}", r.text());
}

#[tokio::test]
async fn not_ready_when_the_data_directory_refuses_writes() {
    if common::on_cluster() {
        return; // about the file-system store: its directories on local disk
    }
    let server = Server::start().await;
    // Where uploads are made: root ignores permissions, so these become files.
    for dir in ["tmp", "files"] {
        let dir = server.data_dir().join(dir);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
    }
    let r = common::request(server.admin, Method::GET, "/readyz", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().contains("not writable"), "{}", r.text());
}

/// `promtool check metrics` (Debian package prometheus) lints the exposition.
fn check_with_promtool(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(std::env::var_os("CI").is_none(), "CI must have promtool");
        eprintln!("SKIPPED: promtool not installed; exposition not linted");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool: {report}");
}
