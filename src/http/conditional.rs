//! RFC 9110 §13.2.2: the order in which preconditions are evaluated, as one pure
//! function of the request headers and the file's validators.

use std::time::SystemTime;

use headers::{ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfUnmodifiedSince};
use http::HeaderMap;
use http::header::IF_RANGE;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Serve the representation; honour `Range` only if `range_allowed`.
    Proceed { range_allowed: bool },
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates the preconditions of a GET or HEAD request.
pub fn evaluate(headers: &HeaderMap, etag: &ETag, last_modified: SystemTime) -> Outcome {
    // Step 1-2: If-Match, or else If-Unmodified-Since.
    if let Some(if_match) = headers.typed_get::<IfMatch>() {
        if !if_match.precondition_passes(etag) {
            return Outcome::Failed;
        }
    } else if let Some(ius) = headers.typed_get::<IfUnmodifiedSince>()
        && !ius.precondition_passes(last_modified)
    {
        return Outcome::Failed;
    }
    // Step 3-4: If-None-Match, or else If-Modified-Since.
    if let Some(inm) = headers.typed_get::<IfNoneMatch>() {
        if !inm.precondition_passes(etag) {
            return Outcome::NotModified;
        }
    } else if let Some(ims) = headers.typed_get::<IfModifiedSince>()
        && !ims.is_modified(last_modified)
    {
        return Outcome::NotModified;
    }
    // Step 5: If-Range decides whether a Range is honoured.
    let range_allowed = match headers.get(IF_RANGE) {
        None => true,
        Some(value) => if_range_matches(value.to_str().unwrap_or(""), etag, last_modified),
    };
    Outcome::Proceed { range_allowed }
}

/// §13.1.5: an entity tag must match strongly; a date must equal Last-Modified
/// exactly. Anything else (a weak tag, a malformed value) means "send it all".
fn if_range_matches(value: &str, etag: &ETag, last_modified: SystemTime) -> bool {
    let value = value.trim();
    if value.starts_with('"') {
        return value.parse::<ETag>().is_ok_and(|tag| tag == *etag);
    }
    if value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|date| date == last_modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn etag() -> ETag {
        "\"abc\"".parse().unwrap()
    }

    fn lm() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn eval(pairs: &[(&'static str, String)]) -> Outcome {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        evaluate(&h, &etag(), lm())
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    const GO: Outcome = Outcome::Proceed {
        range_allowed: true,
    };

    #[test]
    fn precedence() {
        assert_eq!(eval(&[]), GO);
        assert_eq!(eval(&[("if-match", "\"x\"".into())]), Outcome::Failed);
        assert_eq!(eval(&[("if-match", "\"abc\"".into())]), GO);
        // If-Match present: If-Unmodified-Since is ignored.
        let past = date(lm() - Duration::from_secs(10));
        assert_eq!(
            eval(&[
                ("if-match", "*".into()),
                ("if-unmodified-since", past.clone())
            ]),
            GO
        );
        assert_eq!(eval(&[("if-unmodified-since", past)]), Outcome::Failed);
        assert_eq!(
            eval(&[("if-none-match", "\"abc\"".into())]),
            Outcome::NotModified
        );
        assert_eq!(
            eval(&[("if-none-match", "W/\"abc\"".into())]),
            Outcome::NotModified
        );
        assert_eq!(eval(&[("if-none-match", "*".into())]), Outcome::NotModified);
        // If-None-Match present and not matching: If-Modified-Since is ignored.
        assert_eq!(
            eval(&[
                ("if-none-match", "\"x\"".into()),
                ("if-modified-since", date(lm()))
            ]),
            GO
        );
        assert_eq!(
            eval(&[("if-modified-since", date(lm()))]),
            Outcome::NotModified
        );
        assert_eq!(
            eval(&[("if-modified-since", date(lm() - Duration::from_secs(1)))]),
            GO
        );
    }

    #[test]
    fn if_range() {
        let no = Outcome::Proceed {
            range_allowed: false,
        };
        assert_eq!(eval(&[("if-range", "\"abc\"".into())]), GO);
        assert_eq!(eval(&[("if-range", "\"old\"".into())]), no);
        assert_eq!(eval(&[("if-range", "W/\"abc\"".into())]), no);
        assert_eq!(eval(&[("if-range", date(lm()))]), GO);
        assert_eq!(
            eval(&[("if-range", date(lm() + Duration::from_secs(5)))]),
            no
        );
        assert_eq!(eval(&[("if-range", "garbage".into())]), no);
    }
}
