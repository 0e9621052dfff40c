//! What deciding a GET's answer costs before any byte is read: RFC 9110
//! preconditions (`http::conditional::evaluate`) and ranges (`http::range::evaluate`).
//!
//! `cargo bench --bench planning` times each on headers built once, outside the
//! timed loop. Ranges, over a 100 MiB file: none, a single, open-ended and suffix
//! range, 16 ranges (the most honoured), 17 (answered with the whole file) and an
//! unsatisfiable one; the multi-range cases show the bound that `MAX_RANGES` puts
//! on one request's work. Preconditions: none, If-None-Match matching and not,
//! If-Modified-Since, If-Match, and If-Range by entity tag and by date. Every case
//! is checked to give the expected answer before it is timed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::ops::RangeInclusive;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use headers::ETag;
use http::{HeaderMap, HeaderValue};
use upslot::http::conditional::{self, Outcome};
use upslot::http::range::{self, Ranges};

const SIZE: u64 = 100 * 1024 * 1024;

/// `n` disjoint 1 KiB ranges spread over the file, as a video player might ask,
/// and what they come to.
fn multi_range(n: u64) -> (String, Vec<RangeInclusive<u64>>) {
    let step = SIZE / n;
    let ranges: Vec<_> = (0..n).map(|i| i * step..=i * step + 1023).collect();
    let parts: Vec<String> = ranges
        .iter()
        .map(|r| format!("{}-{}", r.start(), r.end()))
        .collect();
    (format!("bytes={}", parts.join(", ")), ranges)
}

fn bench_range(c: &mut Criterion) {
    let (multi_16, multi_16_ranges) = multi_range(16);
    let (multi_17, _) = multi_range(17);
    let cases: Vec<(&str, Option<String>, Ranges)> = vec![
        ("none", None, Ranges::Full),
        (
            "single",
            Some("bytes=0-1023".into()),
            Ranges::Partial(vec![0..=1023]),
        ),
        (
            "open_ended",
            Some("bytes=1048576-".into()),
            Ranges::Partial(vec![1_048_576..=SIZE - 1]),
        ),
        (
            "suffix",
            Some("bytes=-500".into()),
            Ranges::Partial(vec![SIZE - 500..=SIZE - 1]),
        ),
        ("multi_16", Some(multi_16), Ranges::Partial(multi_16_ranges)),
        ("multi_17_ignored", Some(multi_17), Ranges::Full),
        (
            "unsatisfiable",
            Some(format!("bytes={SIZE}-")),
            Ranges::Unsatisfiable,
        ),
    ];
    let mut group = c.benchmark_group("range");
    for (name, header, expect) in cases {
        let header = header.map(|h| HeaderValue::from_str(&h).unwrap());
        // A case that silently took another branch would time the wrong thing.
        assert_eq!(range::evaluate(header.as_ref(), SIZE), expect, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| range::evaluate(black_box(header.as_ref()), black_box(SIZE)))
        });
    }
    group.finish();
}

fn bench_conditional(c: &mut Criterion) {
    // As the download handler builds it: the first 32 hex digits of the SHA-256.
    let tag = "\"9f86d081884c7d659a2feaa0c55ad015\"";
    let etag: ETag = tag.parse().unwrap();
    let last_modified: SystemTime = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let at = httpdate::fmt_http_date(last_modified);
    let earlier = httpdate::fmt_http_date(last_modified - Duration::from_secs(60));
    let other = "\"00000000000000000000000000000000\"";
    let go = Outcome::Proceed {
        range_allowed: true,
    };
    let cases = vec![
        ("none", vec![], go),
        (
            "if_none_match_hit",
            vec![("if-none-match", tag.to_owned())],
            Outcome::NotModified,
        ),
        (
            "if_none_match_miss",
            vec![("if-none-match", format!("{other}, W/{other}"))],
            go,
        ),
        (
            "if_modified_since_not_modified",
            vec![("if-modified-since", at.clone())],
            Outcome::NotModified,
        ),
        (
            "if_modified_since_modified",
            vec![("if-modified-since", earlier)],
            go,
        ),
        (
            "if_match_miss",
            vec![("if-match", other.to_owned())],
            Outcome::Failed,
        ),
        (
            "if_range_etag",
            vec![
                ("if-range", tag.to_owned()),
                ("range", "bytes=0-1023".into()),
            ],
            go,
        ),
        (
            "if_range_date",
            vec![("if-range", at), ("range", "bytes=0-1023".into())],
            go,
        ),
    ];
    let mut group = c.benchmark_group("conditional");
    for (name, pairs, expect) in cases {
        let mut headers = HeaderMap::new();
        for (key, value) in pairs {
            headers.insert(key, HeaderValue::from_str(&value).unwrap());
        }
        assert_eq!(
            conditional::evaluate(&headers, &etag, last_modified),
            expect,
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| conditional::evaluate(black_box(&headers), &etag, last_modified))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_range, bench_conditional);
criterion_main!(benches);
