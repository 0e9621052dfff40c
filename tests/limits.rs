//! `[limits]` (docs/limits.md) on a real server: what one client, or all of them
//! together, may hold, and for how long. Each test reproduces a way an
//! anonymous client (or one slot holder) used to hold the service, and shows it
//! no longer can. Timeouts are set short so that no test waits out a default;
//! every wait is bounded, so a server that keeps a connection fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use common::Server;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Raw, body, put_head, v1_target, wait_for};
use tokio::net::TcpStream;

/// Far past every timeout the tests set: only a connection that the server
/// never closes runs into it.
const LIMIT: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An HTTP/2 (h2c) connection that has made one request and then says nothing.
async fn h2_after_one_request(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .uri(format!("http://{addr}/upload/none/such.txt"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // The sender stays alive: the client does not close the connection.
    tokio::spawn(async move {
        let _keep = sender;
        std::future::pending::<()>().await;
    });
    conn
}

/// Sends a byte every `every` until the server closes the connection; true if
/// it did within [`LIMIT`].
async fn drip_until_closed(raw: &mut Raw, every: Duration) -> bool {
    let dripping = async {
        while raw.send(b"x").await {
            tokio::time::sleep(every).await;
        }
    };
    tokio::time::timeout(LIMIT, dripping).await.is_ok()
}

/// A GET of a missing file that announces a large body and then drips it.
async fn dripping_get(addr: SocketAddr, source: IpAddr) -> Raw {
    let mut raw = Raw::connect_from(addr, source).await;
    assert!(
        raw.send(b"GET /upload/a/b HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            .await
    );
    raw
}

#[tokio::test]
async fn idle_http2_connection_is_closed_after_its_request() {
    let server = Server::start_config(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let conn = h2_after_one_request(server.addr).await;
    tokio::time::timeout(LIMIT, conn)
        .await
        .expect("an idle h2c connection stays open")
        .unwrap();
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed() {
    let server = Server::start_config(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let mut raw = Raw::connect(server.addr).await;
    assert!(
        raw.send(b"GET /upload/a/b HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
    );
    assert_eq!(raw.read_response().await.unwrap().status, 404);
    assert!(raw.closed().await, "the server answered more");
}

#[tokio::test]
async fn refused_body_is_read_for_a_bounded_time() {
    let server = Server::start_config(|c| {
        c.limits.discard_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut raw = dripping_get(server.addr, ip("127.0.0.1")).await;
    assert_eq!(raw.read_head().await.unwrap().status, 404);
    assert!(
        drip_until_closed(&mut raw, Duration::from_millis(100)).await,
        "a dripped body kept the connection for {LIMIT:?}"
    );
}

#[tokio::test]
async fn connections_are_capped_per_client_address() {
    let server = Server::start_config(|c| {
        c.limits.max_connections_per_client = 4;
        c.limits.header_timeout = Duration::from_secs(60);
    })
    .await;
    let attacker = ip("127.0.0.2");
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(Raw::connect_from(server.addr, attacker).await);
    }
    // Counted once accepted; the answer to a request proves it.
    let mut probe = Raw::connect(server.addr).await;
    assert!(
        probe
            .send(b"GET /upload/a/b HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
    );
    assert_eq!(probe.read_response().await.unwrap().status, 404);

    let mut fifth = Raw::connect_from(server.addr, attacker).await;
    let refused = fifth
        .read_response()
        .await
        .expect("an answer, then the close");
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(fifth.closed().await);
    // Another address is a client of its own.
    server.upload("mine/a.txt", b"hello").await;
    assert_eq!(server.get("mine/a.txt", &[]).await.body, &b"hello"[..]);
    let refused = server
        .app
        .metrics
        .connections_refused
        .with_label_values(&["per_client"]);
    assert_eq!(refused.get(), 1);
}

#[tokio::test]
async fn a_full_listener_closes_an_idle_connection_to_make_room() {
    let server = Server::start_config(|c| {
        c.limits.max_connections = 6;
        c.limits.header_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    // Six idle connections from six addresses: the listener is full.
    let mut idle = Vec::new();
    for i in 2..8 {
        idle.push(Raw::connect_from(server.addr, ip(&format!("127.0.0.{i}"))).await);
    }
    wait_for("six connections counted", || {
        server.app.metrics.connections_open.get() == 6
    })
    .await;
    // A new client still uploads and downloads: the oldest idle ones made room.
    server.upload("room/a.txt", b"made room").await;
    assert_eq!(server.get("room/a.txt", &[]).await.body, &b"made room"[..]);
    let evicted = server
        .app
        .metrics
        .connections_closed
        .with_label_values(&["evicted"]);
    assert_eq!(evicted.get(), 2);
    assert!(
        idle.remove(0).closed().await,
        "the oldest idle connection is closed"
    );
}

#[tokio::test]
async fn a_listener_full_of_busy_connections_refuses_with_503() {
    let server = Server::start_config(|c| {
        c.limits.max_connections = 3;
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    // Three uploads in progress: busy, not to be closed for room.
    let mut busy = Vec::new();
    for i in 0..3 {
        let path = format!("busy/{i}.bin");
        let mut raw = Raw::connect(server.addr).await;
        assert!(
            raw.send(&put_head(&v1_target(&server, &path, 100), 100, &[]))
                .await
        );
        assert!(raw.send(b"0123456789").await);
        busy.push(raw);
    }
    wait_for("three uploads under way", || {
        server.app.metrics.uploads_in_flight.get() == 3
    })
    .await;
    let mut refused = Raw::connect(server.addr).await;
    let answer = refused.read_response().await.expect("an answer");
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("retry-after"), Some("5"));
    // The uploads in progress were not harmed.
    for raw in &mut busy {
        assert!(raw.send(&[b'y'; 90]).await);
        assert_eq!(raw.read_response().await.unwrap().status, 201);
    }
}

#[tokio::test]
async fn uploads_are_capped_per_client_behind_a_trusted_proxy() {
    let server = Server::start_config(|c| {
        c.limits.max_uploads_per_client = 2;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let start = |path: &str, client: &str| {
        let head = put_head(
            &v1_target(&server, path, 10),
            10,
            &[&format!("X-Forwarded-For: {client}")],
        );
        let addr = server.addr;
        async move {
            let mut raw = Raw::connect(addr).await;
            assert!(raw.send(&head).await);
            raw
        }
    };
    let mut first = start("cap/1", "198.51.100.1").await;
    let mut second = start("cap/2", "198.51.100.1").await;
    assert!(first.send(b"01234").await && second.send(b"01234").await);
    wait_for("two uploads under way", || {
        server.app.metrics.uploads_in_flight.get() == 2
    })
    .await;
    let mut third = start("cap/3", "198.51.100.1").await;
    let answer = third.read_response().await.unwrap();
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.header("retry-after"), Some("5"));
    // Another client behind the same proxy has its own uploads.
    let mut other = start("cap/4", "198.51.100.2").await;
    assert!(other.send(b"0123456789").await);
    assert_eq!(other.read_response().await.unwrap().status, 201);
    // And once one upload ends, the first client may start another.
    assert!(first.send(b"56789").await);
    assert_eq!(first.read_response().await.unwrap().status, 201);
    let mut again = start("cap/3", "198.51.100.1").await;
    assert!(again.send(b"0123456789").await);
    assert_eq!(again.read_response().await.unwrap().status, 201);
    let busy = server
        .app
        .metrics
        .busy_rejections
        .with_label_values(&["per_client"]);
    assert_eq!(busy.get(), 1);
    drop(second);
}

#[tokio::test]
async fn a_slow_upload_is_cut_and_gives_its_quota_back() {
    let server = Server::start_config(|c| {
        c.quota_total = 10 * 1024 * 1024;
        c.idle_timeout = Duration::from_secs(2);
        c.limits.min_upload_rate = 1024;
    })
    .await;
    let size = 9_000_000;
    let mut slow = Raw::connect(server.addr).await;
    assert!(
        slow.send(&put_head(
            &v1_target(&server, "slow/big.bin", size),
            size,
            &[]
        ))
        .await
    );
    // A byte every 200 ms is never idle for 2 s, but far below 1 KiB/s.
    assert!(
        drip_until_closed(&mut slow, Duration::from_millis(200)).await,
        "the slow upload went on for {LIMIT:?}"
    );
    wait_for("the slow upload cut", || {
        server.app.metrics.uploads_in_flight.get() == 0
    })
    .await;
    let timeouts = server.app.metrics.uploads.with_label_values(&["timeout"]);
    assert_eq!(timeouts.get(), 1);
    assert_eq!(server.stats().await.reserved, 0);
    // The space it held is free for others.
    server.upload("fast/other.bin", &body(2_000_000, 1)).await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_connections() {
    let mut server = Server::start_config(|c| {
        c.shutdown_timeout = Duration::from_secs(60);
        c.idle_timeout = Duration::from_secs(60);
        c.limits.discard_timeout = Duration::from_secs(60);
    })
    .await;
    let h2 = h2_after_one_request(server.addr).await;
    let mut dripping = dripping_get(server.addr, ip("127.0.0.1")).await;
    assert_eq!(dripping.read_head().await.unwrap().status, 404);
    assert!(dripping.send(b"xyz").await);
    let mut silent = Raw::connect(server.addr).await;
    assert!(silent.send(b"GET /upl").await);
    server.begin_shutdown();
    // Well before the 60 s deadline, every connection is closed and the service
    // has stopped, while the clients still hold their ends.
    tokio::time::timeout(LIMIT, h2)
        .await
        .expect("shutdown waited on an idle h2c connection")
        .unwrap();
    assert!(drip_until_closed(&mut dripping, Duration::from_millis(100)).await);
    assert!(silent.closed().await);
    tokio::time::timeout(LIMIT, server.stop())
        .await
        .expect("the service stops without waiting out shutdown_timeout");
}

#[tokio::test]
async fn oversized_heads_are_refused_with_431() {
    let server = Server::start_config(|c| c.limits.max_header_size = 4096).await;
    let big = "a".repeat(5000);
    let r = server
        .request(Method::GET, "/upload/a/b", &[("x-big", &big)], Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Just under the limit is an ordinary request.
    let fits = "a".repeat(3500);
    let r = server
        .request(Method::GET, "/upload/a/b", &[("x-big", &fits)], Vec::new())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Too many header lines: hyper's own refusal.
    let mut head = String::from("GET /upload/a/b HTTP/1.1\r\nHost: t\r\n");
    for i in 0..150 {
        head.push_str(&format!("x-{i}: 1\r\n"));
    }
    head.push_str("\r\n");
    let answer = common::raw(server.addr, head.as_bytes(), Duration::from_secs(2)).await;
    assert_eq!(common::raw_status(&answer), Some(431), "{answer}");
}

#[tokio::test]
async fn a_download_nobody_reads_is_given_up() {
    let server = Server::start_config(|c| c.idle_timeout = Duration::from_secs(1)).await;
    // More than loopback's socket buffers hold, so the sending must stall.
    let big = body(32 * 1024 * 1024, 5);
    server.upload("stall/big.bin", &big).await;
    let mut raw = Raw::connect(server.addr).await;
    assert!(
        raw.send(b"GET /upload/stall/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
    );
    // Never read: after a second without progress the connection goes.
    let stalled = server
        .app
        .metrics
        .connections_closed
        .with_label_values(&["stalled"]);
    wait_for("the stalled download given up", || stalled.get() == 1).await;
    wait_for("the connection closed", || {
        server.app.metrics.connections_open.get() == 0
    })
    .await;
}
