//! Files are kept `retention` (7 days by default) or until the JWT's `expires`,
//! whichever is sooner; expired files are 404 at once and deleted by the reaper,
//! and those that expired while the service was down go at start-up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::Duration;

use common::{SECRET, Server, T0};
use http::{Method, StatusCode};
use support::{Raw, put_head, v1_target, wait_for, wait_until, wait_until_empty};
use upslot::auth::{JwtSlot, sign_jwt};
use upslot::index::Usage;

const WEEK: u64 = 7 * 24 * 3600;

async fn reaping_server() -> Server {
    Server::start_config(|c| c.reap_interval = Duration::from_millis(20)).await
}

#[tokio::test]
async fn served_until_the_last_second_then_gone_before_the_reaper_runs() {
    // A reaper that never runs within the test: 404 must not depend on it.
    let server = Server::start_config(|c| c.reap_interval = Duration::from_secs(3600)).await;
    server.upload("slot/a.txt", b"hello").await;
    server.clock.set(T0 + WEEK - 1);
    let r = server.get("slot/a.txt", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("cache-control"),
        Some("private, max-age=1, immutable")
    );
    server.clock.set(T0 + WEEK);
    assert_eq!(
        server.get("slot/a.txt", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    server.clock.set(T0 + WEEK + 1);
    assert_eq!(
        server.get("slot/a.txt", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let head = server
        .request(Method::HEAD, &server.target("slot/a.txt"), &[], vec![])
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    // Still stored (the reaper has not run), yet never served.
    assert_eq!(server.stored_paths().await, ["slot/a.txt"]);
}

#[tokio::test]
async fn reaper_deletes_body_metadata_and_index_entry() {
    let server = reaping_server().await;
    server.upload("slot/old.txt", b"old").await;
    server.clock.set(T0 + 3600);
    server.upload("slot/new.txt", b"newer").await;
    assert_eq!(server.usage().await, Usage { files: 2, bytes: 8 });

    server.clock.set(T0 + WEEK);
    wait_until("the reaper to take the old file out", || async {
        server.usage().await.files == 1
    })
    .await;
    assert_eq!(server.usage().await, Usage { files: 1, bytes: 5 });
    assert_eq!(server.get("slot/new.txt", &[]).await.status, StatusCode::OK);
    // Body and metadata of the old file are gone from the store, not only
    // from the index.
    wait_until("the old file's bytes deleted", || async {
        server.stored_paths().await == ["slot/new.txt"] && server.pending().await.is_empty()
    })
    .await;

    server.clock.set(T0 + 3600 + WEEK);
    wait_until_empty(&server).await;
    assert_eq!(server.usage().await, Usage::default());
    assert!(server.stats().await.next_expiry.is_none());
}

#[tokio::test]
async fn a_jwt_expires_sooner_than_retention_wins() {
    let server = reaping_server().await;
    let expires = T0 + 3600;
    let claims = JwtSlot {
        slot: "slot1".into(),
        filesize: 4,
        exp: T0 + 300,
        iat: Some(T0),
        filename: Some("a.bin".into()),
        filetype: None,
        sub: Some("juliet@capulet.example".into()),
        expires: Some(expires),
    };
    let token = sign_jwt(SECRET.as_bytes(), &claims).unwrap();
    let auth = format!("Bearer {token}");
    let r = server
        .request(
            Method::PUT,
            &server.target("slot1/a.bin"),
            &[("authorization", &auth)],
            b"data".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    server.clock.set(expires - 1);
    let r = server.get("slot1/a.bin", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("cache-control"),
        Some("private, max-age=1, immutable")
    );
    server.clock.set(expires);
    assert_eq!(
        server.get("slot1/a.bin", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    wait_until_empty(&server).await;
}

#[tokio::test]
async fn a_jwt_expires_later_than_retention_is_capped() {
    let server = Server::start().await;
    let claims = JwtSlot {
        slot: "slot2".into(),
        filesize: 1,
        exp: T0 + 300,
        iat: Some(T0),
        filename: None,
        filetype: None,
        sub: None,
        expires: Some(T0 + 30 * 24 * 3600),
    };
    let auth = format!("Bearer {}", sign_jwt(SECRET.as_bytes(), &claims).unwrap());
    let target = server.target("slot2/x");
    let r = server
        .request(
            Method::PUT,
            &target,
            &[("authorization", &auth)],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    server.clock.set(T0 + WEEK);
    assert_eq!(
        server.get("slot2/x", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn restart_after_downtime_deletes_what_expired_meanwhile() {
    let server = Server::start_config(|c| c.reap_interval = Duration::from_secs(3600)).await;
    server.upload("slot/early.txt", b"early").await;
    server.clock.set(T0 + 2 * 24 * 3600);
    server.upload("slot/late.txt", b"late").await;
    let (config, clock, data) = server.stop().await;

    // Down for a week: the first file expired meanwhile, the second did not.
    clock.set(T0 + WEEK + 60);
    let server = Server::start_with(config, clock, data).await;
    // An embedded index is rebuilt without it; a shared one (PostgreSQL) has
    // it taken out by the reaper's first pass, which runs at start.
    wait_until("the expired file deleted at start-up", || async {
        server.stored_paths().await == ["slot/late.txt"] && server.pending().await.is_empty()
    })
    .await;
    assert_eq!(server.usage().await, Usage { files: 1, bytes: 4 });
    assert_eq!(
        server.get("slot/late.txt", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get("slot/early.txt", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_expired_path_can_be_uploaded_again() {
    let server = Server::start_config(|c| c.reap_interval = Duration::from_secs(3600)).await;
    server.upload("slot/again.txt", b"first").await;
    server.clock.set(T0 + WEEK);
    server.upload("slot/again.txt", b"second").await;
    let r = server.get("slot/again.txt", &[]).await;
    assert_eq!(&r.body[..], b"second");
    assert_eq!(server.usage().await, Usage { files: 1, bytes: 6 });
}

/// An upload to an expired file's path takes the path over: the expired file
/// goes at once (it is out of the index, and its bytes deleted), so neither a
/// reaper pass nor the upload's failure can leave it behind.
#[tokio::test]
async fn an_upload_to_an_expired_path_deletes_the_expired_file_first() {
    let server = Server::start_config(|c| c.reap_interval = Duration::from_secs(3600)).await;
    server.upload("slot/old.txt", b"hello").await;
    server.clock.set(T0 + WEEK);
    // A new upload to the same path: its head and 2 of its 5 bytes.
    let target = v1_target(&server, "slot/old.txt", 5);
    let mut stalled = Raw::connect(server.addr).await;
    assert!(stalled.send(&put_head(&target, 5, &[])).await);
    assert!(stalled.send(b"ab").await);
    wait_until("the new upload to claim the path", || async {
        server.stats().await.reserved == 5
    })
    .await;
    // It holds the path: another upload to it is refused.
    let other = server
        .request(Method::PUT, &target, &[], b"abcde".to_vec())
        .await;
    assert_eq!(other.status, StatusCode::CONFLICT);
    // The upload that took the path deletes the expired file's bytes right
    // after its claim, before any of its own land; no reaper pass runs here.
    wait_until("the expired file's bytes deleted", || async {
        server.leftovers().await.is_empty()
    })
    .await;
    assert_eq!(server.usage().await, Usage::default());
    assert_eq!(upslot::reaper::pass(&server.app).await.unwrap(), 0);

    drop(stalled);
    wait_for("the stalled upload to end", || {
        server.app.metrics.uploads_in_flight.get() == 0
    })
    .await;
    assert_eq!(server.leftovers().await, Vec::<String>::new());
    assert_eq!(upslot::reaper::pass(&server.app).await.unwrap(), 0);
    assert_eq!(server.stats().await.reserved, 0);
    // The path is free again.
    let again = server
        .request(Method::PUT, &target, &[], b"abcde".to_vec())
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
}
