//! GET and HEAD through a real socket (DESIGN §3 "Download"): headers, the
//! disposition rules, every form of Range (RFC 9110 §14), expiry on the clock, and
//! the same answers over HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{Response, Server, T0};
use http::{HeaderMap, Method, StatusCode};
use upslot::auth::Scheme;

const WEEK: u64 = 7 * 24 * 3600;

/// Bytes whose every prefix and slice is distinguishable from its neighbours.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Uploads with v2 so that the type (if any) is part of the signature.
async fn upload_typed(server: &Server, path: &str, bytes: &[u8], ty: Option<&str>) {
    let target = server.signed_target(Scheme::V2, path, bytes.len() as u64, ty);
    let headers: Vec<(&str, &str)> = ty.map(|t| ("content-type", t)).into_iter().collect();
    let r = server
        .request(Method::PUT, &target, &headers, bytes.to_vec())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "upload {path}: {}", r.text());
}

async fn head(server: &Server, path: &str, headers: &[(&str, &str)]) -> Response {
    server
        .request(Method::HEAD, &server.target(path), headers, Vec::new())
        .await
}

fn max_age(r: &Response) -> u64 {
    let cc = r.header("cache-control").expect("cache-control");
    cc.split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .expect("max-age directive")
        .parse()
        .unwrap()
}

fn assert_security_headers(r: &Response) {
    let what = r.status;
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; frame-ancestors 'none'; sandbox"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
}

/// Every header but `date`, as sorted (name, value) pairs; repeats are kept.
fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<_> = h
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn get_serves_the_bytes_with_every_download_header() {
    let server = Server::start().await;
    let bytes = content(1000);
    upload_typed(&server, "slot/photo.jpg", &bytes, Some("image/jpeg")).await;

    let r = server.get("slot/photo.jpg", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &bytes[..]);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").expect("etag");
    assert!(!etag.starts_with("W/"), "weak etag {etag}");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{etag}"
    );
    assert!(!etag[1..etag.len() - 1].contains('"'), "{etag}");
    let uploaded_at = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(T0));
    assert_eq!(r.header("last-modified"), Some(uploaded_at.as_str()));
    assert_eq!(max_age(&r), WEEK);
    assert_security_headers(&r);

    // The validators are stable across requests.
    let again = server.get("slot/photo.jpg", &[]).await;
    assert_eq!(again.header("etag"), Some(etag));
}

#[tokio::test]
async fn cache_lifetime_shrinks_with_the_file_lifetime() {
    let server = Server::start().await;
    server.upload("slot/a.bin", b"abc").await;
    assert_eq!(max_age(&server.get("slot/a.bin", &[]).await), WEEK);
    server.clock.advance(Duration::from_secs(3600));
    assert_eq!(max_age(&server.get("slot/a.bin", &[]).await), WEEK - 3600);
    server.clock.advance(Duration::from_secs(WEEK - 3600 - 10));
    let r = server.get("slot/a.bin", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(max_age(&r), 10);
}

#[tokio::test]
async fn security_headers_on_errors_too() {
    let server = Server::start().await;
    let missing = server.get("slot/missing.txt", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_security_headers(&missing);
    let unsigned = server
        .request(
            Method::PUT,
            &server.target("slot/x.txt"),
            &[],
            b"x".to_vec(),
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
    assert_security_headers(&unsigned);
}

#[tokio::test]
async fn head_sends_exactly_the_headers_of_get() {
    let server = Server::start().await;
    let bytes = content(4096);
    upload_typed(&server, "slot/clip.mp4", &bytes, Some("video/mp4")).await;

    for range in [
        None,
        Some("bytes=100-199"),
        Some("bytes=4000-"),
        Some("bytes=-0"),
    ] {
        let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        let g = server.get("slot/clip.mp4", &headers).await;
        let h = head(&server, "slot/clip.mp4", &headers).await;
        assert_eq!(g.status, h.status, "{range:?}");
        assert_eq!(
            header_pairs(&g.headers),
            header_pairs(&h.headers),
            "{range:?}"
        );
        assert!(h.body.is_empty(), "{range:?}: HEAD sent a body");
        assert!(h.header("content-length").is_some(), "{range:?}");
    }
    let h = head(&server, "slot/clip.mp4", &[]).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.header("content-length"), Some("4096"));
    let h = head(&server, "slot/clip.mp4", &[("range", "bytes=100-199")]).await;
    assert_eq!(h.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(h.header("content-length"), Some("100"));
    assert_eq!(h.header("content-range"), Some("bytes 100-199/4096"));
}

/// (kind, ascii fallback, decoded `filename*`) of a Content-Disposition value.
fn disposition(value: &str) -> (String, String, String) {
    let (kind, rest) = value.split_once(';').expect("parameters");
    let fallback = rest
        .trim_start()
        .strip_prefix("filename=\"")
        .expect("filename= first");
    let end = fallback.find('"').expect("closing quote");
    let (fallback, rest) = fallback.split_at(end);
    let encoded = rest
        .strip_prefix("\"; filename*=UTF-8''")
        .expect("filename* after filename");
    assert!(
        !encoded.contains([';', ' ', '"', '\'']),
        "not a single ext-value: {encoded}"
    );
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .expect("UTF-8 name")
        .into_owned();
    (kind.to_owned(), fallback.to_owned(), decoded)
}

#[tokio::test]
async fn disposition_is_inline_only_for_safe_types() {
    let server = Server::start().await;
    let cases: &[(Option<&str>, &str)] = &[
        (Some("image/jpeg"), "inline"),
        (Some("image/png"), "inline"),
        (Some("video/mp4"), "inline"),
        (Some("audio/ogg"), "inline"),
        (Some("text/plain"), "inline"),
        (Some("text/plain; charset=utf-8"), "inline"),
        (Some("image/svg+xml"), "attachment"),
        (Some("text/html"), "attachment"),
        (Some("application/pdf"), "attachment"),
        (Some("application/octet-stream"), "attachment"),
        (None, "attachment"),
    ];
    for (i, (ty, kind)) in cases.iter().enumerate() {
        let path = format!("d{i}/file");
        upload_typed(&server, &path, b"<svg onload=alert(1)>", *ty).await;
        let r = server.get(&path, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{ty:?}");
        let want_type = ty.unwrap_or("application/octet-stream");
        assert_eq!(r.header("content-type"), Some(want_type));
        let cd = r
            .header("content-disposition")
            .expect("content-disposition");
        let (got_kind, fallback, name) = disposition(cd);
        assert_eq!(got_kind, *kind, "{ty:?}: {cd}");
        assert_eq!((fallback.as_str(), name.as_str()), ("file", "file"));
    }
    // A v1 upload of a name without extension and without a type.
    server.upload("v1/blob", b"data").await;
    let r = server.get("v1/blob", &[]).await;
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let (kind, _, _) = disposition(r.header("content-disposition").unwrap());
    assert_eq!(kind, "attachment");
}

#[tokio::test]
async fn non_ascii_file_name_round_trips_through_rfc_8187() {
    let server = Server::start().await;
    let name = "Grüße \"Ä\" (2) 日本 50%.txt";
    let path = format!("slot/{name}");
    upload_typed(&server, &path, b"hello", Some("text/plain")).await;
    let r = server.get(&path, &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"hello");
    let cd = r.header("content-disposition").unwrap();
    let (kind, fallback, decoded) = disposition(cd);
    assert_eq!(kind, "inline");
    assert_eq!(decoded, name, "{cd}");
    assert!(
        fallback.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            && !fallback.contains(['"', '\\']),
        "{fallback}"
    );
    assert!(
        fallback.starts_with("Gr") && fallback.ends_with(".txt"),
        "{fallback}"
    );
    assert!(fallback.contains("(2)"), "{fallback}");
}

async fn ranged(server: &Server, path: &str, spec: &str) -> Response {
    server.get(path, &[("range", spec)]).await
}

#[tokio::test]
async fn single_ranges_give_206_with_the_right_bytes() {
    let server = Server::start().await;
    let bytes = content(100);
    upload_typed(&server, "slot/v.mp4", &bytes, Some("video/mp4")).await;
    let cases = [
        ("bytes=0-1", 0, 1), // Safari's probe
        ("bytes=10-19", 10, 19),
        ("bytes=40-", 40, 99), // Conversations resuming
        ("bytes=-7", 93, 99),
        ("bytes=-1000", 0, 99), // suffix longer than the file
        ("bytes=90-5000", 90, 99),
        ("bytes=99-99", 99, 99),
        ("bytes=99-", 99, 99),
        ("bytes=0-", 0, 99),
    ];
    for (spec, start, end) in cases {
        let r = ranged(&server, "slot/v.mp4", spec).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/100").as_str()),
            "{spec}"
        );
        assert_eq!(&r.body[..], &bytes[start..=end], "{spec}");
        let len = (end - start + 1).to_string();
        assert_eq!(r.header("content-length"), Some(len.as_str()), "{spec}");
        assert_eq!(r.header("content-type"), Some("video/mp4"), "{spec}");
        assert_eq!(r.header("accept-ranges"), Some("bytes"), "{spec}");
        assert!(r.header("etag").is_some(), "{spec}");
    }
}

#[tokio::test]
async fn unsatisfiable_and_invalid_ranges() {
    let server = Server::start().await;
    let bytes = content(100);
    server.upload("slot/f.bin", &bytes).await;
    for spec in ["bytes=100-", "bytes=-0", "bytes=200-300"] {
        let r = ranged(&server, "slot/f.bin", spec).await;
        assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE, "{spec}");
        assert_eq!(r.header("content-range"), Some("bytes */100"), "{spec}");
        assert!(r.body.is_empty(), "{spec}");
    }
    for spec in [
        "bytes=5-2",
        "items=0-1",
        "garbage",
        "bytes=",
        "bytes=x-y",
        "bytes=1-2-3",
    ] {
        let r = ranged(&server, "slot/f.bin", spec).await;
        assert_eq!(r.status, StatusCode::OK, "{spec}");
        assert_eq!(&r.body[..], &bytes[..], "{spec}");
        assert!(r.header("content-range").is_none(), "{spec}");
    }
}

/// The parts of a `multipart/byteranges` body as (content-type, content-range,
/// bytes), checking the framing strictly: CRLFs, boundaries, the closing one.
fn parse_byteranges(body: &[u8], boundary: &str) -> Vec<(String, String, Vec<u8>)> {
    let delimiter = format!("--{boundary}");
    let mut rest = body;
    // An optional preamble ends where the first delimiter starts.
    let first = find(rest, delimiter.as_bytes()).expect("first boundary");
    rest = &rest[first + delimiter.len()..];
    let mut parts = Vec::new();
    for _ in 0..64 {
        if let Some(after) = rest.strip_prefix(b"--") {
            assert!(after.is_empty() || after == b"\r\n", "epilogue: {after:?}");
            return parts;
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after boundary");
        let end = find(rest, b"\r\n\r\n").expect("end of part headers");
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        rest = &rest[end + 4..];
        let mut ty = String::new();
        let mut cr = String::new();
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':').expect("header line");
            match k.to_ascii_lowercase().as_str() {
                "content-type" => ty = v.trim().to_owned(),
                "content-range" => cr = v.trim().to_owned(),
                other => panic!("unexpected part header {other}"),
            }
        }
        let span = cr.strip_prefix("bytes ").expect("bytes unit");
        let (span, _) = span.split_once('/').expect("complete length");
        let (a, b) = span.split_once('-').expect("first-last");
        let len = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        parts.push((ty, cr, rest[..len].to_vec()));
        rest = &rest[len..];
        rest = rest.strip_prefix(b"\r\n").expect("CRLF before boundary");
        rest = rest.strip_prefix(delimiter.as_bytes()).expect("boundary");
    }
    panic!("more than 64 parts");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn multiple_ranges_give_a_correct_multipart_byteranges() {
    let server = Server::start().await;
    let bytes = content(100);
    upload_typed(&server, "slot/doc.pdf", &bytes, Some("application/pdf")).await;
    let r = ranged(&server, "slot/doc.pdf", "bytes=0-1,5-9,-3").await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert!(r.header("content-range").is_none());
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content-type {ct}"));
    assert!(!boundary.is_empty() && boundary.len() <= 70, "{boundary}");
    let length: usize = r.header("content-length").unwrap().parse().unwrap();
    assert_eq!(length, r.body.len());
    let parts = parse_byteranges(&r.body, boundary);
    let want = [(0, 1), (5, 9), (97, 99)];
    assert_eq!(parts.len(), want.len());
    for ((ty, cr, got), (a, b)) in parts.iter().zip(want) {
        assert_eq!(ty, "application/pdf");
        assert_eq!(cr, &format!("bytes {a}-{b}/100"));
        assert_eq!(got, &bytes[a..=b]);
    }
    // HEAD agrees on the length (the boundary is fresh on every response).
    let h = head(&server, "slot/doc.pdf", &[("range", "bytes=0-1,5-9,-3")]).await;
    assert_eq!(h.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        h.header("content-length"),
        Some(length.to_string().as_str())
    );
    assert!(h.body.is_empty());
}

#[tokio::test]
async fn too_many_ranges_get_the_whole_file() {
    let server = Server::start().await;
    let bytes = content(100);
    server.upload("slot/many.bin", &bytes).await;
    let spec: Vec<String> = (0..17).map(|i| format!("{}-{}", i * 3, i * 3)).collect();
    let r = ranged(
        &server,
        "slot/many.bin",
        &format!("bytes={}", spec.join(",")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &bytes[..]);
    // Sixteen is still served as asked.
    let spec: Vec<String> = (0..16).map(|i| format!("{}-{}", i * 3, i * 3)).collect();
    let r = ranged(
        &server,
        "slot/many.bin",
        &format!("bytes={}", spec.join(",")),
    )
    .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
}

#[tokio::test]
async fn empty_file() {
    let server = Server::start().await;
    server.upload("slot/empty.txt", b"").await;
    let r = server.get("slot/empty.txt", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));
    assert!(r.header("etag").is_some());
    let h = head(&server, "slot/empty.txt", &[]).await;
    assert_eq!(header_pairs(&r.headers), header_pairs(&h.headers));
    // Only a suffix range could be satisfiable, and it would select nothing.
    let r = ranged(&server, "slot/empty.txt", "bytes=0-1").await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */0"));
    let r = ranged(&server, "slot/empty.txt", "bytes=-5").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn served_until_one_second_before_expiry_then_404() {
    let server = Server::start().await;
    server.upload("slot/short.txt", b"soon gone").await;
    server.clock.set(T0 + WEEK - 1);
    let r = server.get("slot/short.txt", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"soon gone");
    assert_eq!(max_age(&r), 1);
    for t in [T0 + WEEK, T0 + WEEK + 1] {
        server.clock.set(t);
        let r = server.get("slot/short.txt", &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "at {t}");
        assert_security_headers(&r);
        let h = head(&server, "slot/short.txt", &[]).await;
        assert_eq!(h.status, StatusCode::NOT_FOUND, "HEAD at {t}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = Server::start().await;
    server.upload("slot/known.txt", b"x").await;
    for path in [
        "slot/unknown.txt",
        "slot/known.txt2",
        "other/known.txt",
        "slot",
    ] {
        let r = server.get(path, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn http2_serves_the_same_answers_as_http1() {
    let server = Server::start().await;
    let bytes = content(300_000);
    upload_typed(&server, "slot/big.mp4", &bytes, Some("video/mp4")).await;
    let target = server.target("slot/big.mp4");
    // The last range crosses the server's 256 KiB read chunk.
    let cases = [
        (None, 0..300_000),
        (Some("bytes=0-1"), 0..2),
        (Some("bytes=262000-"), 262_000..300_000),
    ];
    for (range, want) in cases {
        let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        let h1 = server.get("slot/big.mp4", &headers).await;
        let h2 = common::h2_get(server.addr, &target, &headers).await;
        assert_eq!(h1.status, h2.status, "{range:?}");
        assert_eq!(
            header_pairs(&h1.headers),
            header_pairs(&h2.headers),
            "{range:?}"
        );
        assert_eq!(&h1.body[..], &bytes[want.clone()], "{range:?}");
        assert_eq!(&h2.body[..], &bytes[want], "{range:?}");
    }
}

/// A bidi control in a file name reaches the client as a visible `_`, so the
/// name cannot be shown reordered (`invoice<RLO>gpj.exe` as `invoiceexe.jpg`).
#[tokio::test]
async fn bidi_controls_in_names_are_shown_not_obeyed() {
    let server = Server::start().await;
    let name = "invoice\u{202E}gpj.exe";
    server.upload(&format!("bidi/{name}"), b"MZ").await;
    let r = server.get(&format!("bidi/{name}"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"invoice_gpj.exe\"; filename*=UTF-8''invoice_gpj.exe")
    );
}
