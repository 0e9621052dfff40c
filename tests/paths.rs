//! Path attacks (DESIGN §3, §4): dot segments, encoded slashes and dots, NUL,
//! invalid UTF-8, malformed escapes, empty segments, backslashes, escapes from
//! base_path, absolute-form and raw bytes. Each is sent raw, as written, as PUTs
//! carrying a *valid* v1 token for every reading of the path a careless server
//! might verify (raw, decoded once, decoded and normalised), and as GETs. None may
//! store anything, in the store or anywhere on disk, and each gets the 400 or
//! 404 named in the table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::{Path, PathBuf};

use common::Server;
use percent_encoding::percent_decode;
use support::Raw;
use upslot::auth::{Scheme, sign_query};

/// (request target as sent, expected status). Paths are below `/upload/`.
const CASES: &[(&[u8], u16)] = &[
    // Dot segments, plain and encoded in either case.
    (b"/upload/a/../b.txt", 400),
    (b"/upload/../etc/passwd", 400),
    (b"/upload/../upload/b.txt", 400),
    (b"/upload/a/%2e%2e/b.txt", 400),
    (b"/upload/a/%2E%2E/b.txt", 400),
    (b"/upload/a/.%2e/b.txt", 400),
    (b"/upload/%2e%2e/x", 400),
    (b"/upload/a/./b.txt", 400),
    (b"/upload/a/%2e/b.txt", 400),
    (b"/upload/a/..", 400),
    // An encoded '/' inside a segment.
    (b"/upload/a/b%2fc.txt", 400),
    (b"/upload/a/b%2Fc.txt", 400),
    (b"/upload/%2e%2e%2fetc%2fpasswd", 400),
    (b"/upload/a/..%2f..%2fetc%2fpasswd", 400),
    // NUL, other control characters, invalid UTF-8.
    (b"/upload/a/%00b.txt", 400),
    (b"/upload/a/b.txt%00.png", 400),
    (b"/upload/a/b%0d%0aSet-Cookie:%20x", 400),
    (b"/upload/a/b%7f", 400),
    (b"/upload/a/b%c2%85", 400),
    (b"/upload/a/%ff.txt", 400),
    (b"/upload/a/%c0%ae%c0%ae/b.txt", 400),
    (b"/upload/a/%e2%82", 400),
    // Malformed escapes.
    (b"/upload/a/%zz.txt", 400),
    (b"/upload/a/%4.txt", 400),
    (b"/upload/a/b%", 400),
    (b"/upload/a/%u002e%u002e/b.txt", 400),
    // Empty segments.
    (b"/upload/a//b.txt", 400),
    (b"/upload//a/b.txt", 400),
    (b"/upload/a/b/", 400),
    (b"/upload/a/b.txt/", 400),
    // Backslashes, encoded and raw.
    (b"/upload/a/b%5c..%5c..%5cx", 400),
    (b"/upload/a/%5C", 400),
    (b"/upload/a\\..\\..\\x", 400),
    // Outside base_path.
    (b"/etc/passwd", 404),
    (b"/../etc/passwd", 404),
    (b"/./upload/a/b.txt", 404),
    (b"//upload/a/b.txt", 404),
    (b"/%75pload/a/b.txt", 404),
    (b"/upload%2fa/b.txt", 404),
    (b"/UPLOAD/a/b.txt", 404),
    (b"/uploadx/a/b.txt", 404),
    (b"/upload", 404),
    (b"/upload/", 404),
    // Absolute-form (RFC 9112 §3.2.2): the path inside is checked the same way.
    (b"http://upslot.test/upload/a/../b.txt", 400),
    (b"http://upslot.test/upload/%2e%2e/x", 400),
    (b"http://upslot.test/upload/a//b.txt", 400),
    (b"http://upslot.test/etc/passwd", 404),
    // Raw bytes the HTTP parser refuses before any handler runs.
    (b"/upload/a/\xff.txt", 400),
    (b"/upload/a/\xc0\xae\xc0\xae/b.txt", 400),
    (b"/upload/a/b\x01.txt", 400),
    (b"/upload/a/b\x7f.txt", 400),
];

/// The path part of a target, whatever its form.
fn path_of(target: &[u8]) -> String {
    let t = String::from_utf8_lossy(target).into_owned();
    match t.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/".into(), |i| rest[i..].to_owned()),
        None => t,
    }
}

/// Decodes every escape, once, keeping what does not decode.
fn decode(s: &str) -> String {
    percent_decode(s.as_bytes())
        .decode_utf8_lossy()
        .into_owned()
}

/// `.`, `..` and empty segments resolved, as a normalising server would.
fn normalise(s: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in s.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.join("/")
}

/// Every signed path a careless implementation might check the token against.
fn readings(target: &[u8]) -> Vec<String> {
    let path = path_of(target);
    let below = |p: &str| {
        p.strip_prefix("/upload/")
            .unwrap_or(p.trim_start_matches('/'))
            .to_owned()
    };
    let mut out = vec![
        below(&path),
        decode(&below(&path)),
        below(&decode(&path)),
        normalise(&decode(&below(&path))),
        below(&format!("/{}", normalise(&decode(&path)))),
    ];
    out.sort();
    out.dedup();
    out
}

fn request(method: &str, target: &[u8], query: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    let head = format!(
        " HTTP/1.1\r\nHost: upslot.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends one raw request and returns the status of the answer.
async fn status_of(server: &Server, bytes: &[u8]) -> u16 {
    let mut raw = Raw::connect(server.addr).await;
    assert!(raw.send(bytes).await);
    let answer = if bytes.starts_with(b"HEAD ") {
        raw.read_head().await
    } else {
        raw.read_response().await
    };
    let r = answer.unwrap_or_else(|| {
        panic!(
            "no answer to {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(120)])
        )
    });
    r.status
}

/// Every file and directory below `dir`, except what the service itself keeps
/// at the top of its data directory (secret, lock, control socket; the last one
/// appears asynchronously after start-up).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(list) = std::fs::read_dir(dir) {
        for entry in list.flatten() {
            let path = entry.path();
            let own = ["secret", "lock", "control.sock"];
            if own
                .iter()
                .any(|n| path.file_name().is_some_and(|f| f == *n))
            {
                continue;
            }
            if path.is_dir() {
                out.extend(entries(&path));
            }
            out.push(path);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn hostile_puts_store_nothing_anywhere() {
    let server = Server::start().await;
    let outer = server.data_dir().parent().unwrap().to_owned();
    let before = entries(&outer);
    let body = b"owned";
    for &(target, want) in CASES {
        let shown = String::from_utf8_lossy(target);
        for signed in readings(target) {
            let query = sign_query(Scheme::V1, server.secret(), &signed, 5, None).unwrap();
            let got = status_of(&server, &request("PUT", target, Some(&query), body)).await;
            assert_eq!(got, want, "PUT {shown} signed over {signed:?}");
        }
        // Unsigned, and with other methods: the path is judged first.
        let got = status_of(&server, &request("PUT", target, None, body)).await;
        assert_eq!(got, want, "unsigned PUT {shown}");
        let got = status_of(&server, &request("DELETE", target, None, b"")).await;
        assert_eq!(got, want, "DELETE {shown}");
        let left = server.leftovers().await;
        assert!(left.is_empty(), "{shown} stored {left:?}");
    }
    assert_eq!(entries(&outer), before, "something was written");
}

#[tokio::test]
async fn hostile_gets_never_reach_a_stored_file() {
    let server = Server::start().await;
    // Files that a normalising or twice-decoding server would hand out.
    for path in ["a/b.txt", "b.txt", "x", "etc/passwd", "a/b/c.txt", "a/b"] {
        server.upload(path, b"secret bytes").await;
    }
    let stored = server.leftovers().await;
    for &(target, want) in CASES {
        let shown = String::from_utf8_lossy(target);
        for method in ["GET", "HEAD"] {
            let got = status_of(&server, &request(method, target, None, b"")).await;
            assert_eq!(got, want, "{method} {shown}");
        }
    }
    assert_eq!(server.leftovers().await, stored);
}

/// The sanity check behind both tests: the same requests with a well-formed path
/// do succeed, so the refusals above are about the path and nothing else.
#[tokio::test]
async fn the_raw_requests_work_for_a_good_path() {
    let server = Server::start().await;
    for target in [
        &b"/upload/a/b.txt"[..],
        b"http://upslot.test/upload/a/c.txt",
    ] {
        let signed = readings(target);
        assert_eq!(signed.len(), 1, "{signed:?}");
        let query = sign_query(Scheme::V1, server.secret(), &signed[0], 5, None).unwrap();
        let got = status_of(&server, &request("PUT", target, Some(&query), b"hello")).await;
        assert_eq!(got, 201, "{}", String::from_utf8_lossy(target));
        let got = status_of(&server, &request("GET", target, None, b"")).await;
        assert_eq!(got, 200);
    }
}

/// Every spelling of one signed path (either hex case, escaped or not, raw UTF-8)
/// names one file: the second upload under another spelling is a 409.
#[tokio::test]
async fn one_file_under_every_spelling() {
    let server = Server::start().await;
    let signed = "a/Grüße+~.txt";
    let query = sign_query(Scheme::V1, server.secret(), signed, 5, None).unwrap();
    let spellings: [&[u8]; 4] = [
        b"/upload/a/Gr%c3%bc%c3%9fe+~.txt",
        b"/upload/a/Gr%C3%BC%C3%9Fe%2B%7E.txt",
        b"/upload/%61/%47r%c3%bc%c3%9f%65+~.txt",
        "/upload/a/Grüße+~.txt".as_bytes(),
    ];
    let got = status_of(
        &server,
        &request("PUT", spellings[0], Some(&query), b"first"),
    )
    .await;
    assert_eq!(got, 201);
    for spelling in &spellings[1..] {
        let shown = String::from_utf8_lossy(spelling);
        let got = status_of(&server, &request("PUT", spelling, Some(&query), b"other")).await;
        assert_eq!(got, 409, "PUT {shown}");
        let got = status_of(&server, &request("GET", spelling, None, b"")).await;
        assert_eq!(got, 200, "GET {shown}");
    }
    assert_eq!(server.stored_paths().await, [signed], "one file");
    assert_eq!(server.pending().await, Vec::<String>::new());
}

/// Asterisk-form is only for OPTIONS: `PUT *` is no path of ours (404), and
/// `*?query` is no request target at all (hyper: 400).
#[tokio::test]
async fn asterisk_form() {
    let server = Server::start().await;
    let query = sign_query(Scheme::V1, server.secret(), "*", 5, None).unwrap();
    let got = status_of(&server, &request("PUT", b"*", Some(&query), b"hello")).await;
    assert_eq!(got, 400);
    let got = status_of(&server, &request("PUT", b"*", None, b"hello")).await;
    assert_eq!(got, 404);
    let got = status_of(&server, &request("GET", b"*", None, b"")).await;
    assert_eq!(got, 404);
    assert_eq!(server.leftovers().await, Vec::<String>::new());
}

/// ejabberd >= 25.08 may send the file name as raw UTF-8 (DESIGN §2): the HTTP
/// parser lets valid UTF-8 through, and it names the same file as its
/// percent-encoded form (invalid UTF-8 is refused, see CASES).
#[tokio::test]
async fn raw_utf8_in_the_target_is_the_same_file() {
    let server = Server::start().await;
    let target = "/upload/a/Grüße.txt".as_bytes();
    let query = sign_query(Scheme::V1, server.secret(), "a/Grüße.txt", 5, None).unwrap();
    let got = status_of(&server, &request("PUT", target, Some(&query), b"hello")).await;
    assert_eq!(got, 201, "raw UTF-8 in the request line");
    let got = server.get("a/Grüße.txt", &[]).await;
    assert_eq!(
        &got.body[..],
        b"hello",
        "the percent-encoded form serves it"
    );
    let got = status_of(&server, &request("GET", target, None, b"")).await;
    assert_eq!(got, 200);
}
