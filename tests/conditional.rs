//! Conditional GET and HEAD (RFC 9110 §13) through a real socket: which
//! precondition wins (§13.2.2), what a 304 carries, and If-Range deciding
//! whether a Range is honoured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{Response, Server, T0};
use http::{Method, StatusCode};

const PATH: &str = "slot/photo.jpg";

fn content() -> Vec<u8> {
    (0..500u32).map(|i| (i * 13 % 251) as u8).collect()
}

/// A server holding `content()` at PATH, plus its ETag and Last-Modified.
async fn setup() -> (Server, String, String) {
    let server = Server::start().await;
    server.upload(PATH, &content()).await;
    // Validators are read later on the clock, to be sure they are the upload's.
    server.clock.advance(Duration::from_secs(120));
    let r = server.get(PATH, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    let etag = r.header("etag").unwrap().to_owned();
    let lm = r.header("last-modified").unwrap().to_owned();
    assert_eq!(lm, date(0));
    (server, etag, lm)
}

/// The HTTP date `offset` seconds after the upload.
fn date(offset: i64) -> String {
    let t = T0.checked_add_signed(offset).unwrap();
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(t))
}

fn assert_full(r: &Response, why: &str) {
    assert_eq!(r.status, StatusCode::OK, "{why}");
    assert_eq!(&r.body[..], &content()[..], "{why}");
    assert!(r.header("content-range").is_none(), "{why}");
}

fn assert_not_modified(r: &Response, etag: &str, why: &str) {
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{why}");
    assert!(r.body.is_empty(), "{why}: 304 with a body");
    assert_eq!(r.header("etag"), Some(etag), "{why}");
    assert!(r.header("cache-control").is_some(), "{why}");
    assert!(r.header("content-range").is_none(), "{why}");
}

#[tokio::test]
async fn if_none_match_gives_304() {
    let (server, etag, _) = setup().await;
    let weak = format!("W/{etag}");
    let list = format!("\"other\", {etag}, \"third\"");
    for value in [etag.as_str(), "*", list.as_str(), weak.as_str()] {
        let r = server.get(PATH, &[("if-none-match", value)]).await;
        assert_not_modified(&r, &etag, value);
    }
    // HEAD and a Range do not change that: If-None-Match is evaluated first.
    let h = server
        .request(
            Method::HEAD,
            &server.target(PATH),
            &[("if-none-match", &etag)],
            vec![],
        )
        .await;
    assert_not_modified(&h, &etag, "HEAD");
    let r = server
        .get(PATH, &[("if-none-match", &etag), ("range", "bytes=0-1")])
        .await;
    assert_not_modified(&r, &etag, "with Range");
    for value in ["\"other\"", "W/\"other\"", "\"a\", \"b\""] {
        let r = server.get(PATH, &[("if-none-match", value)]).await;
        assert_full(&r, value);
    }
}

#[tokio::test]
async fn if_modified_since() {
    let (server, etag, lm) = setup().await;
    for value in [lm.clone(), date(1), date(120)] {
        let r = server.get(PATH, &[("if-modified-since", &value)]).await;
        assert_not_modified(&r, &etag, &value);
    }
    for value in [date(-1), date(-86_400), "not a date".to_owned()] {
        let r = server.get(PATH, &[("if-modified-since", &value)]).await;
        assert_full(&r, &value);
    }
}

#[tokio::test]
async fn if_none_match_takes_precedence_over_if_modified_since() {
    let (server, etag, lm) = setup().await;
    let r = server
        .get(
            PATH,
            &[("if-none-match", "\"other\""), ("if-modified-since", &lm)],
        )
        .await;
    assert_full(&r, "INM mismatch + IMS match");
    let r = server
        .get(
            PATH,
            &[("if-none-match", &etag), ("if-modified-since", &date(-60))],
        )
        .await;
    assert_not_modified(&r, &etag, "INM match + IMS before");
}

#[tokio::test]
async fn if_match_and_if_unmodified_since_give_412() {
    let (server, etag, lm) = setup().await;
    let r = server.get(PATH, &[("if-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert!(r.body.is_empty());
    let r = server.get(PATH, &[("if-match", "W/\"x\", \"y\"")]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    // If-Match uses the strong comparison.
    let weak = format!("W/{etag}");
    let r = server.get(PATH, &[("if-match", &weak)]).await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    for value in [etag.as_str(), "*"] {
        assert_full(&server.get(PATH, &[("if-match", value)]).await, value);
    }

    let r = server
        .get(PATH, &[("if-unmodified-since", &date(-1))])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    for value in [lm.clone(), date(60)] {
        let r = server.get(PATH, &[("if-unmodified-since", &value)]).await;
        assert_full(&r, &value);
    }
    // If-Match present: If-Unmodified-Since is not evaluated.
    let r = server
        .get(
            PATH,
            &[("if-match", &etag), ("if-unmodified-since", &date(-1))],
        )
        .await;
    assert_full(&r, "If-Match passes, IUS ignored");
    // A failed If-Match comes before If-None-Match.
    let r = server
        .get(PATH, &[("if-match", "\"other\""), ("if-none-match", &etag)])
        .await;
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn if_range_decides_whether_range_is_honoured() {
    let (server, etag, lm) = setup().await;
    let bytes = content();
    let partial = |r: &Response, why: &str| {
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{why}");
        assert_eq!(
            r.header("content-range"),
            Some("bytes 100-199/500"),
            "{why}"
        );
        assert_eq!(&r.body[..], &bytes[100..200], "{why}");
    };
    let range = ("range", "bytes=100-199");

    let r = server.get(PATH, &[range, ("if-range", &etag)]).await;
    partial(&r, "current etag");
    let r = server.get(PATH, &[range, ("if-range", &lm)]).await;
    partial(&r, "exact Last-Modified");

    let weak = format!("W/{etag}");
    let stale = date(-1);
    let later = date(1);
    for value in ["\"stale\"", weak.as_str(), stale.as_str(), later.as_str()] {
        let r = server.get(PATH, &[range, ("if-range", value)]).await;
        assert_full(&r, value);
    }
    // If-Range without Range changes nothing.
    assert_full(&server.get(PATH, &[("if-range", &etag)]).await, "no Range");
}
