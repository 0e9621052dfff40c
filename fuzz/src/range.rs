//! `Range` (RFC 9110 §14). Fields, one a line: the file's size, the header value.
//!
//! A 206 names 1 to 16 ranges, each inside the file, sending at most twice the file
//! (one overlap is tolerated, not more); a 206 or 416 answers a `bytes=` header
//! only; and a single range of any form gets exactly what RFC 9110 says.

use http::HeaderValue;
use upslot::http::range::{Ranges, evaluate};

use crate::input::{fields, text};

pub fn check(data: &[u8]) {
    let mut f = fields(data);
    let Some(size) = f
        .next()
        .and_then(text)
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    let Some(header) = f.next() else {
        assert_eq!(evaluate(None, size), Ranges::Full);
        return;
    };
    let Ok(value) = HeaderValue::from_bytes(header) else {
        return;
    };
    let got = evaluate(Some(&value), size);
    let asks_bytes = header
        .get(..6)
        .is_some_and(|unit| unit.eq_ignore_ascii_case(b"bytes="));
    match &got {
        Ranges::Full => {}
        Ranges::Unsatisfiable => assert!(asks_bytes, "416 for {value:?}"),
        Ranges::Partial(ranges) => {
            assert!(asks_bytes, "206 for {value:?}");
            assert!((1..=16).contains(&ranges.len()), "{} ranges", ranges.len());
            for r in ranges {
                assert!(r.start() <= r.end() && *r.end() < size, "{r:?} of {size}");
            }
            let mut by_start: Vec<(u64, u64)> =
                ranges.iter().map(|r| (*r.start(), *r.end())).collect();
            by_start.sort_unstable();
            let mut max_end = by_start[0].1;
            let mut overlaps = 0;
            for &(start, end) in &by_start[1..] {
                if start <= max_end {
                    overlaps += 1;
                }
                max_end = max_end.max(end);
            }
            assert!(overlaps <= 1, "{value:?}: {overlaps} overlaps");
            let sent: u128 = ranges
                .iter()
                .map(|r| u128::from(r.end() - r.start()) + 1)
                .sum();
            assert!(
                sent <= 2 * u128::from(size),
                "{value:?} sends {sent} of {size}"
            );
        }
    }
    if let Some(want) = text(header).and_then(|t| single(t, size)) {
        assert_eq!(got, want, "{value:?} of {size}");
    }
}

/// RFC 9110 §14.1.2 for a header that is one range and nothing else.
fn single(header: &str, size: u64) -> Option<Ranges> {
    let spec = header
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .and(header.get(6..))?;
    let (first, last) = spec.split_once('-')?;
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let partial = |a: u64, b: u64| Ranges::Partial(vec![a..=b]);
    Some(match (first.is_empty(), last.is_empty()) {
        (true, true) => return None,
        // -n: the last n bytes. An empty file has none to give, but that is a 200.
        (true, false) => match number(last)? {
            0 => Ranges::Unsatisfiable,
            _ if size == 0 => Ranges::Full,
            n => partial(size - n.min(size), size - 1),
        },
        (false, true) => match number(first)? {
            a if a >= size => Ranges::Unsatisfiable,
            a => partial(a, size - 1),
        },
        (false, false) => match (number(first)?, number(last)?) {
            (a, b) if a > b => Ranges::Full,
            (a, _) if a >= size => Ranges::Unsatisfiable,
            (a, b) => partial(a, b.min(size - 1)),
        },
    })
}
