//! Preconditions (RFC 9110 §13.2.2). Fields: header lines `name: value`, against a
//! file whose ETag is `"9f86d081884c7d659a2feaa0c55ad015"` and whose Last-Modified is
//! Thu, 01 Jan 2026 00:00:00 GMT.
//!
//! Each outcome needs the header that can cause it, and the steps go in the RFC's
//! order: what a later step looks at never changes an earlier step's answer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headers::ETag;
use http::HeaderMap;
use upslot::http::conditional::{Outcome, evaluate};

use crate::input::{fields, headers};

pub const ETAG: &str = "\"9f86d081884c7d659a2feaa0c55ad015\"";
pub const LAST_MODIFIED: u64 = 1_767_225_600;

pub fn check(data: &[u8]) {
    let map = headers(fields(data));
    let etag: ETag = ETAG.parse().expect("a strong ETag");
    let modified = UNIX_EPOCH + Duration::from_secs(LAST_MODIFIED);
    let eval = |h: &HeaderMap| evaluate(h, &etag, modified);
    let got = eval(&map);
    let has = |names: &[&str]| names.iter().any(|n| map.contains_key(*n));
    let without = |names: &[&str]| {
        let mut h = map.clone();
        for n in names {
            h.remove(*n);
        }
        h
    };
    let steps_1_2 = ["if-match", "if-unmodified-since"];
    let steps_3_4 = ["if-none-match", "if-modified-since"];
    match got {
        Outcome::Failed => {
            assert!(
                has(&steps_1_2),
                "412 without If-Match or If-Unmodified-Since"
            );
            // Steps 3 to 5 come after a 412.
            assert_eq!(
                eval(&without(&[
                    "if-none-match",
                    "if-modified-since",
                    "if-range"
                ])),
                got
            );
        }
        Outcome::NotModified => {
            assert!(
                has(&steps_3_4),
                "304 without If-None-Match or If-Modified-Since"
            );
            assert_eq!(eval(&without(&["if-range"])), got);
            // Steps 1 and 2 passed: without steps 3 and 4 the file is served.
            assert!(matches!(
                eval(&without(&steps_3_4)),
                Outcome::Proceed { .. }
            ));
        }
        Outcome::Proceed { range_allowed } => {
            assert!(
                range_allowed || has(&["if-range"]),
                "Range ignored without If-Range"
            );
            // Steps 1 to 4 passed: without their headers the answer is the same.
            assert_eq!(eval(&without(&steps_1_2)), got);
            assert_eq!(eval(&without(&steps_3_4)), got);
            assert_eq!(
                eval(&without(&["if-range"])),
                Outcome::Proceed {
                    range_allowed: true
                }
            );
        }
    }
    // Whatever else is asked, removing steps 1 and 2 never makes a 412.
    assert_ne!(eval(&without(&steps_1_2)), Outcome::Failed);
    if_range_is_exact(&map, &etag, modified);
}

/// §13.1.5: If-Range holding exactly the strong ETag or the Last-Modified date
/// lets the range through; a weak tag never does.
fn if_range_is_exact(map: &HeaderMap, etag: &ETag, modified: SystemTime) {
    let mut h = map.clone();
    for n in [
        "if-match",
        "if-unmodified-since",
        "if-none-match",
        "if-modified-since",
    ] {
        h.remove(n);
    }
    let Some(value) = h
        .get("if-range")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
    else {
        return;
    };
    let allowed = evaluate(&h, etag, modified)
        == Outcome::Proceed {
            range_allowed: true,
        };
    if value == ETAG || value == httpdate::fmt_http_date(modified) {
        assert!(allowed, "If-Range {value:?} should match");
    }
    if value.starts_with("W/") || (value.starts_with('"') && value != ETAG) {
        assert!(!allowed, "If-Range {value:?} must not match");
    }
}
