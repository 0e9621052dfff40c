//! CORS for browser clients (DESIGN §3): a preflight needs no token, and every
//! response, errors included, names the allowed origin exactly once and exposes
//! the headers a resuming client reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Response, Server};
use http::{Method, StatusCode};
use upslot::auth::Scheme;
use upslot::config::AllowOrigins;

const ORIGIN: &str = "https://chat.example.org";

fn tokens(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

fn count(r: &Response, name: &str) -> usize {
    r.headers.get_all(name).iter().count()
}

fn assert_exposes(r: &Response) {
    let what = r.status;
    assert_eq!(count(r, "access-control-expose-headers"), 1, "{what}");
    let exposed = tokens(r.header("access-control-expose-headers").unwrap());
    for name in ["content-length", "content-range", "etag"] {
        assert!(exposed.iter().any(|e| e == name), "{what}: {exposed:?}");
    }
}

async fn preflight(server: &Server, target: &str, origin: &str) -> Response {
    server
        .request(
            Method::OPTIONS,
            target,
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ],
            vec![],
        )
        .await
}

fn assert_preflight(r: &Response) {
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert!(r.body.is_empty());
    let methods = tokens(r.header("access-control-allow-methods").unwrap());
    for m in ["get", "head", "put", "options"] {
        assert!(methods.iter().any(|x| x == m), "{methods:?}");
    }
    let headers = tokens(r.header("access-control-allow-headers").unwrap());
    for h in ["authorization", "content-type"] {
        assert!(headers.iter().any(|x| x == h), "{headers:?}");
    }
    let max_age: u64 = r.header("access-control-max-age").unwrap().parse().unwrap();
    assert!(max_age > 0);
}

#[tokio::test]
async fn preflight_needs_no_token() {
    let server = Server::start().await;
    // The upload URL without its token, with a bad one, and a file that exists.
    let signed = server.signed_target(Scheme::V1, "slot/a.jpg", 10, None);
    let bad = format!("{}?v=00", server.target("slot/a.jpg"));
    for target in [server.target("slot/a.jpg"), signed, bad] {
        let r = preflight(&server, &target, ORIGIN).await;
        assert_preflight(&r);
        assert_eq!(count(&r, "access-control-allow-origin"), 1);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_exposes(&r);
    }
    // Preflight stored nothing.
    assert_eq!(server.leftovers().await, Vec::<String>::new());
}

/// One response of each status a browser can meet, all sent with `Origin`.
async fn every_kind_of_response(server: &Server) -> Vec<(StatusCode, Response)> {
    let o = ("origin", ORIGIN);
    let body = b"0123456789".to_vec();
    let signed = server.signed_target(Scheme::V1, "slot/a.bin", 10, None);
    let mut out = Vec::new();
    let put = server
        .request(Method::PUT, &signed, &[o], body.clone())
        .await;
    out.push((StatusCode::CREATED, put));
    let again = server.request(Method::PUT, &signed, &[o], body).await;
    out.push((StatusCode::CONFLICT, again));
    let get = server.get("slot/a.bin", &[o]).await;
    let etag = get.header("etag").unwrap().to_owned();
    out.push((StatusCode::OK, get));
    let range = server.get("slot/a.bin", &[o, ("range", "bytes=0-1")]).await;
    out.push((StatusCode::PARTIAL_CONTENT, range));
    let multi = server
        .get("slot/a.bin", &[o, ("range", "bytes=0-1,4-5")])
        .await;
    out.push((StatusCode::PARTIAL_CONTENT, multi));
    let cached = server
        .get("slot/a.bin", &[o, ("if-none-match", &etag)])
        .await;
    out.push((StatusCode::NOT_MODIFIED, cached));
    let failed = server.get("slot/a.bin", &[o, ("if-match", "\"x\"")]).await;
    out.push((StatusCode::PRECONDITION_FAILED, failed));
    let unsat = server.get("slot/a.bin", &[o, ("range", "bytes=10-")]).await;
    out.push((StatusCode::RANGE_NOT_SATISFIABLE, unsat));
    let head = server
        .request(Method::HEAD, &server.target("slot/a.bin"), &[o], vec![])
        .await;
    out.push((StatusCode::OK, head));
    let unsigned = server
        .request(Method::PUT, &server.target("slot/b.bin"), &[o], vec![1])
        .await;
    out.push((StatusCode::FORBIDDEN, unsigned));
    let big = vec![0u8; 2000];
    let signed_big = server.signed_target(Scheme::V1, "slot/big.bin", 2000, None);
    let too_big = server.request(Method::PUT, &signed_big, &[o], big).await;
    out.push((StatusCode::PAYLOAD_TOO_LARGE, too_big));
    let missing = server.get("slot/missing.bin", &[o]).await;
    out.push((StatusCode::NOT_FOUND, missing));
    let outside = server
        .request(Method::GET, "/elsewhere", &[o], vec![])
        .await;
    out.push((StatusCode::NOT_FOUND, outside));
    let bad_path = server
        .request(Method::GET, "/upload/a/../b", &[o], vec![])
        .await;
    out.push((StatusCode::BAD_REQUEST, bad_path));
    let delete = server
        .request(Method::DELETE, &server.target("slot/a.bin"), &[o], vec![])
        .await;
    out.push((StatusCode::METHOD_NOT_ALLOWED, delete));
    out
}

fn small_files(c: &mut upslot::config::Config) {
    c.max_file_size = 1000;
}

#[tokio::test]
async fn every_response_names_the_origin_exactly_once() {
    let server = Server::start_config(small_files).await;
    for (want, r) in every_kind_of_response(&server).await {
        assert_eq!(r.status, want, "{}", r.text());
        assert_eq!(count(&r, "access-control-allow-origin"), 1, "{want}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{want}");
        assert_exposes(&r);
    }
}

#[tokio::test]
async fn a_configured_origin_list_is_echoed_with_vary() {
    let server = Server::start_config(|c| {
        small_files(c);
        c.allow_origins = AllowOrigins::List(vec![ORIGIN.into()]);
    })
    .await;
    for (want, r) in every_kind_of_response(&server).await {
        assert_eq!(r.status, want, "{}", r.text());
        assert_eq!(count(&r, "access-control-allow-origin"), 1, "{want}");
        assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
        let vary: Vec<String> = r
            .headers
            .get_all("vary")
            .iter()
            .flat_map(|v| tokens(v.to_str().unwrap()))
            .collect();
        assert_eq!(vary.iter().filter(|v| *v == "origin").count(), 1, "{want}");
        assert_exposes(&r);
    }
    let target = server.target("slot/a.bin");
    let r = preflight(&server, &target, ORIGIN).await;
    assert_preflight(&r);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));

    // Another origin (or a near miss) is not named; a preflight still answers.
    for other in [
        "https://evil.example",
        "https://chat.example.org.evil",
        "null",
    ] {
        let r = server.get("slot/a.bin", &[("origin", other)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(count(&r, "access-control-allow-origin"), 0, "{other}");
        let r = preflight(&server, &target, other).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(count(&r, "access-control-allow-origin"), 0, "{other}");
    }
    let r = server.get("slot/a.bin", &[]).await;
    assert_eq!(count(&r, "access-control-allow-origin"), 0, "no Origin");
}
