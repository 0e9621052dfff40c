//! When S3 cannot serve: with two of three Garage nodes down (no quorum), the
//! requests that need the bucket answer 503 with `Retry-After`, never 500 and
//! never a hang; those the index answers alone (HEAD, 304) still work;
//! `/readyz` names the storage; and all is well again once the nodes are back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod common;

use std::time::{Duration, Instant};

use common::{Server, T0, test_config};
use http::{Method, StatusCode};
use upslot::clock::ManualClock;

/// Retries `f` until it says yes, for at most `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_away_means_503_and_readiness_says_so_until_it_is_back() {
    if !backends::garage_available() {
        return;
    }
    let garage = backends::Garage::start();
    let pg = backends::Postgres::start();
    let (mut config, dir) = test_config();
    config.storage = garage.storage(0, "outage/");
    config.index = pg.index();
    let server = Server::start_with(config, ManualClock::at(T0), Some(dir)).await;
    let body = vec![7u8; 300_000];
    server.upload("o/before.bin", &body).await;
    let etag = server.get("o/before.bin", &[]).await.headers["etag"].clone();

    garage.stop_node(1);
    garage.stop_node(2);
    let started = Instant::now();
    let put = server.put_v1("o/during.bin", b"hello").await;
    assert_eq!(
        put.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        put.text()
    );
    assert!(put.headers.contains_key("retry-after"));
    let get = server.get("o/before.bin", &[]).await;
    assert_eq!(
        get.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        get.text()
    );
    assert!(get.headers.contains_key("retry-after"));
    eprintln!(
        "two nodes down: PUT and GET answered 503 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The index alone answers these.
    let head = server
        .request(
            Method::HEAD,
            &server.target("o/before.bin"),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    let etag_value = etag.to_str().unwrap();
    let not_modified = server
        .get("o/before.bin", &[("if-none-match", etag_value)])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    let ready = common::request(server.admin, Method::GET, "/readyz", &[], vec![]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(ready.text().contains("storage"), "{}", ready.text());
    // Nothing was left half-stored: the path is free.
    assert_eq!(server.usage().await.files, 1);
    assert_eq!(server.stats().await.reserved, 0);

    garage.start_node(1);
    garage.start_node(2);
    within(
        Duration::from_secs(60),
        "the bucket to serve again",
        || async { server.get("o/before.bin", &[]).await.status == StatusCode::OK },
    )
    .await;
    assert_eq!(&server.get("o/before.bin", &[]).await.body[..], &body[..]);
    let put = server.put_v1("o/during.bin", b"hello").await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text());
    within(Duration::from_secs(30), "/readyz to say ready", || async {
        common::request(server.admin, Method::GET, "/readyz", &[], vec![])
            .await
            .status
            == StatusCode::OK
    })
    .await;
}
