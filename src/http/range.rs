//! RFC 9110 §14: what a `Range` header asks of a file of known size. Parsing is
//! `http-range-header`'s; this decides what to do with its answer.

use std::ops::RangeInclusive;

use http::HeaderValue;
use http_range_header::RangeUnsatisfiableError;

/// More ranges than this are answered with the whole file (RFC 9110 §14.2 lets
/// a server ignore Range), which bounds the work one request can cause.
const MAX_RANGES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ranges {
    /// No usable Range: send everything with 200.
    Full,
    /// 206 with these ranges, in request order; at most one overlaps another
    /// (http-range-header refuses more), so at most twice the file is sent.
    Partial(Vec<RangeInclusive<u64>>),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

pub fn evaluate(header: Option<&HeaderValue>, size: u64) -> Ranges {
    let Some(text) = header.and_then(|h| h.to_str().ok()) else {
        return Ranges::Full;
    };
    let parsed = match http_range_header::parse_range_header(text) {
        Ok(parsed) => parsed,
        Err(RangeUnsatisfiableError::Unsatisfiable) => return Ranges::Unsatisfiable,
        Err(_) => return Ranges::Full,
    };
    if parsed.len() > MAX_RANGES {
        return Ranges::Full;
    }
    match parsed.validate(size) {
        Ok(ranges) if ranges.is_empty() => Ranges::Full,
        Ok(ranges) => Ranges::Partial(ranges),
        Err(RangeUnsatisfiableError::Unsatisfiable) => Ranges::Unsatisfiable,
        // Overlapping or otherwise unreasonable: ignoring Range is always allowed.
        Err(_) => Ranges::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(h: &str, size: u64) -> Ranges {
        evaluate(Some(&HeaderValue::from_str(h).unwrap()), size)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(eval("bytes=0-1", 100), Ranges::Partial(vec![0..=1]));
        assert_eq!(eval("bytes=10-", 100), Ranges::Partial(vec![10..=99]));
        assert_eq!(eval("bytes=-10", 100), Ranges::Partial(vec![90..=99]));
        assert_eq!(eval("bytes=-1000", 100), Ranges::Partial(vec![0..=99]));
        assert_eq!(eval("bytes=90-1000", 100), Ranges::Partial(vec![90..=99]));
        assert_eq!(eval("bytes=99-99", 100), Ranges::Partial(vec![99..=99]));
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(eval("bytes=100-", 100), Ranges::Unsatisfiable);
        assert_eq!(eval("bytes=100-200", 100), Ranges::Unsatisfiable);
        assert_eq!(eval("bytes=-0", 100), Ranges::Unsatisfiable);
        assert_eq!(eval("bytes=0-0", 0), Ranges::Unsatisfiable);
        assert_eq!(eval("bytes=5-2", 100), Ranges::Full);
        assert_eq!(eval("items=0-1", 100), Ranges::Full);
        assert_eq!(eval("bytes=abc", 100), Ranges::Full);
        assert_eq!(evaluate(None, 100), Ranges::Full);
    }

    #[test]
    fn multiple_ranges() {
        assert_eq!(
            eval("bytes=0-1, 10-19", 100),
            Ranges::Partial(vec![0..=1, 10..=19])
        );
        // Two overlapping ranges are legal and served as asked.
        assert_eq!(
            eval("bytes=0-10,5-20", 100),
            Ranges::Partial(vec![0..=10, 5..=20])
        );
        let many: Vec<String> = (0..20).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
        assert_eq!(
            eval(&format!("bytes={}", many.join(",")), 100),
            Ranges::Full
        );
    }
}
