//! RFC 9110 §13.2.2: the order in which preconditions are evaluated, as one pure
//! function of the request headers and the file's validators.

use std::borrow::Cow;
use std::time::SystemTime;

use headers::{ETag, HeaderMapExt, IfMatch, IfModifiedSince, IfNoneMatch, IfUnmodifiedSince};
use http::header::{IF_MATCH, IF_NONE_MATCH, IF_RANGE};
use http::{HeaderMap, HeaderValue};

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
    let headers = &*without_malformed_tags(headers);
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
        return !has_whitespace(value.as_bytes())
            && value.parse::<ETag>().is_ok_and(|tag| tag == *etag);
    }
    if value.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(value).is_ok_and(|date| date == last_modified)
}

/// An entity-tag holds no whitespace (§8.8.3), but a header value may, and
/// `headers` 0.4 debug-asserts that it never meets one (a panic in debug builds).
/// Such a tag is malformed and matches nothing, so it is left out of the list.
fn without_malformed_tags(headers: &HeaderMap) -> Cow<'_, HeaderMap> {
    let mut clean: Option<HeaderMap> = None;
    for name in [IF_MATCH, IF_NONE_MATCH] {
        // Several lines are one list, joined as `headers` joins them.
        let values: Vec<&[u8]> = headers
            .get_all(&name)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let list = values.join(&b", "[..]);
        if !elements(&list).any(has_whitespace) {
            continue;
        }
        let kept: Vec<&[u8]> = elements(&list)
            .filter(|tag| !tag.is_empty() && !has_whitespace(tag))
            .collect();
        // None left: `"` is no tag, and a list of no tags matches nothing.
        let kept = match kept.join(&b","[..]) {
            list if list.is_empty() => b"\"".to_vec(),
            list => list,
        };
        let clean = clean.get_or_insert_with(|| headers.clone());
        clean.remove(&name);
        if let Ok(value) = HeaderValue::from_bytes(&kept) {
            clean.insert(name, value);
        }
    }
    clean.map_or(Cow::Borrowed(headers), Cow::Owned)
}

/// The trimmed elements of a list, split at commas outside quotes, as `headers` does.
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut in_quotes = false;
    value
        .split(move |b| {
            if *b == b'"' {
                in_quotes = !in_quotes;
            }
            *b == b',' && !in_quotes
        })
        .map(<[u8]>::trim_ascii)
}

fn has_whitespace(tag: &[u8]) -> bool {
    tag.iter().any(|b| b.is_ascii_whitespace())
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
        assert_eq!(eval(&[("if-range", "\"ab c\"".into())]), no);
    }

    #[test]
    fn a_tag_with_whitespace_matches_nothing() {
        // Found by fuzzing: `headers` debug-asserts on these instead.
        assert_eq!(eval(&[("if-match", "W/\"a b\"".into())]), Outcome::Failed);
        assert_eq!(eval(&[("if-match", "\"a\tb\", \"abc\"".into())]), GO);
        assert_eq!(eval(&[("if-none-match", "\"ab c\"".into())]), GO);
        assert_eq!(
            eval(&[("if-none-match", "\"x y\", W/\"abc\"".into())]),
            Outcome::NotModified
        );
        // A comma inside quotes is part of the tag, as `headers` reads it.
        assert_eq!(eval(&[("if-match", "\"a, b\"".into())]), Outcome::Failed);
        assert_eq!(
            eval(&[("if-none-match", "\"a, b\",\"abc\"".into())]),
            Outcome::NotModified
        );
        // Several lines are one list: a quote left open on one runs into the next.
        let mut h = HeaderMap::new();
        h.append("if-none-match", "\"x y\"".parse().unwrap());
        h.append("if-none-match", "\"abc\"".parse().unwrap());
        assert_eq!(evaluate(&h, &etag(), lm()), Outcome::NotModified);
        let mut h = HeaderMap::new();
        h.append("if-none-match", "\"x".parse().unwrap());
        h.append("if-none-match", "\"abc\"".parse().unwrap());
        assert_eq!(evaluate(&h, &etag(), lm()), GO);
    }
}
