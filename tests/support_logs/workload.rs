//! What the log tests send: uploads with every scheme, downloads and errors of
//! every kind, and six refused slots, each with its own forwarding headers. A
//! realistic mix, so that every code path that logs gets the chance to leak.

use std::net::SocketAddr;

use http::{Method, StatusCode};
use upslot::auth::{Scheme, sign_query};

use super::requests::{
    BODY, COOKIE, Credential, Failure, Headers, JID, ORIGIN, REFERER, SIZE, USER_AGENT, Workload,
    authorization, h2_get, target,
};
use super::{OTHER_SECRET, PEER, SECRET, Scenario};
use crate::common;

/// Every address the workload puts in a forwarding header.
pub const FORWARDED_ADDRS: [&str; 9] = [
    "198.51.100.23",
    "198.51.100.24",
    "2001:db8::23",
    "203.0.113.77",
    "198.51.100.25",
    "198.51.100.26",
    "198.51.100.27",
    "198.51.100.98",
    "198.51.100.99",
];
/// Markers in the header values above, and in every name and path below.
const MARKERS: [&str; 14] = [
    "UAx4q", "Rf4q", "Ck2z", "Og3w", "Jb8q", "Zq9", "Wx7", "Tk5", "Jv5", "Kq3", "Nf6", "Pz8",
    "Gx5", "Ex4",
];

// The uploads: one per scheme, ASCII and non-ASCII names.
pub const V1_PATH: &str = "Kq3slotA1/Zq9-secret-name (1).txt";
pub const V2_PATH: &str = "Kq3slotB2/Wx7-Grüße-Привет 🎉.txt";
pub const TOKEN_PATH: &str = "Kq3slotC3/Tk5 naïve résumé.pdf";
const JWT_PATH: &str = "Kq3slotD4/Jv5-jwt-名前.png";

/// A PUT that must be refused: how, with which other headers, and the line it
/// must leave in the log.
#[derive(Debug)]
struct Refusal {
    path: &'static str,
    credential: Credential,
    headers: Headers<'static>,
    failure: Failure,
}

const fn failure(scheme: &'static str, reason: &'static str, via_proxy: &'static str) -> Failure {
    Failure {
        scheme,
        reason,
        via_proxy,
    }
}

const REFUSALS: [Refusal; 6] = [
    Refusal {
        // Signed for another size.
        path: "Kq3slotF1/Zq9-fail-one.txt",
        credential: Credential::Query(Scheme::V1, SECRET, 999, None),
        headers: &[("x-forwarded-for", "198.51.100.23")],
        failure: failure("v1", "signature", "198.51.100.23"),
    },
    Refusal {
        path: "Kq3slotF2/Wx7-fail-two ü.txt",
        credential: Credential::Query(Scheme::V2, OTHER_SECRET, SIZE, Some("text/plain")),
        headers: &[
            ("content-type", "text/plain"),
            ("forwarded", "for=198.51.100.24;proto=https"),
        ],
        failure: failure("v2", "signature", "198.51.100.24"),
    },
    Refusal {
        // No token at all, no forwarding header.
        path: "Kq3slotF3/Zq9-no-token.txt",
        credential: Credential::None,
        headers: &[],
        failure: failure("none", "missing", PEER),
    },
    Refusal {
        // From an IPv6 client.
        path: "Kq3slotF4/Jv5-expired.png",
        credential: Credential::Jwt(SECRET, -600),
        headers: &[("forwarded", "for=\"[2001:db8::23]:4711\";proto=https")],
        failure: failure("jwt", "expired", "2001:db8::23"),
    },
    Refusal {
        // The client spoofs an earlier hop.
        path: "Kq3slotF5/Jv5-forged.png",
        credential: Credential::Jwt(OTHER_SECRET, 300),
        headers: &[("x-forwarded-for", "203.0.113.77, 198.51.100.25")],
        failure: failure("jwt", "signature", "198.51.100.25"),
    },
    Refusal {
        // Both headers: X-Forwarded-For wins, because proxies append to it but
        // pass a client's own Forwarded on.
        path: "Kq3slotF6/Tk5-malformed.txt",
        credential: Credential::Literal("token=Zq9-not-hex"),
        headers: &[
            ("x-forwarded-for", "198.51.100.26"),
            ("forwarded", "for=198.51.100.27"),
        ],
        failure: failure("token", "malformed", "198.51.100.26"),
    },
];

/// The whole workload against the service at `addr`.
pub async fn workload(addr: SocketAddr) -> Workload {
    let mut w = Workload::default();
    for s in [
        SECRET,
        OTHER_SECRET,
        USER_AGENT,
        REFERER,
        COOKIE,
        ORIGIN,
        JID,
    ] {
        w.secret(s);
    }
    for marker in MARKERS {
        w.secret(marker);
    }
    let v1_target = uploads(&mut w, addr).await;
    downloads(&mut w, addr).await;
    errors(&mut w, addr, &v1_target).await;
    refusals(&mut w, addr).await;
    w
}

/// The refused slots, in the order their failure lines must appear.
async fn refusals(w: &mut Workload, addr: SocketAddr) {
    for refusal in &REFUSALS {
        let (put_target, bearer) = w.sign(refusal.path, refusal.credential);
        let mut headers = authorization(&bearer);
        headers.extend_from_slice(refusal.headers);
        let r = w.refused(addr, &put_target, &headers).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{refusal:?}: {}", r.text());
        w.failures.push(refusal.failure);
    }
}

/// One upload per scheme; returns the v1 target, for a second PUT (409).
async fn uploads(w: &mut Workload, addr: SocketAddr) -> String {
    let mut v1_target = String::new();
    let signed = |scheme, ctype| Credential::Query(scheme, SECRET, SIZE, ctype);
    for (path, credential) in [
        (V1_PATH, signed(Scheme::V1, None)),
        (V2_PATH, signed(Scheme::V2, Some("text/plain"))),
        (TOKEN_PATH, signed(Scheme::Token, Some("application/pdf"))),
        (JWT_PATH, Credential::Jwt(SECRET, 300)),
    ] {
        let (put_target, bearer) = w.sign(path, credential);
        let mut headers = authorization(&bearer);
        headers.extend(credential.content_type().map(|t| ("content-type", t)));
        let r = w.ok(addr, Method::PUT, &put_target, &headers, BODY).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{credential:?}: {}",
            r.text()
        );
        w.uploads += 1;
        if path == V1_PATH {
            v1_target = put_target;
        }
    }
    v1_target
}

/// Downloads of every kind: whole, HEAD, ranges, conditional, HTTP/2, preflight.
async fn downloads(w: &mut Workload, addr: SocketAddr) {
    let r = w.ok(addr, Method::GET, &target(V1_PATH), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], BODY);
    let etag = r.header("etag").unwrap().to_owned();
    let steps: [(Method, &str, Headers, u16); 5] = [
        (Method::HEAD, V2_PATH, &[], 200),
        (Method::GET, TOKEN_PATH, &[("range", "bytes=0-1")], 206),
        (Method::GET, JWT_PATH, &[("range", "bytes=-3")], 206),
        (Method::GET, V1_PATH, &[("if-none-match", &etag)], 304),
        (Method::GET, V2_PATH, &[("range", "bytes=9999-")], 416),
    ];
    for (method, path, headers, status) in steps {
        let r = w
            .ok(addr, method.clone(), &target(path), headers, b"")
            .await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}");
    }
    w.requests += 1;
    assert_eq!(h2_get(addr, &target(V2_PATH)).await, StatusCode::OK);
    let preflight = [("access-control-request-method", "PUT")];
    let r = w
        .ok(addr, Method::OPTIONS, &target(V1_PATH), &preflight, b"")
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

/// Errors that are not refused slots.
async fn errors(w: &mut Workload, addr: SocketAddr, v1_target: &str) {
    let r = w.ok(addr, Method::PUT, v1_target, &[], BODY).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for missing in ["/upload/Nf6-missing/Nf6-file.txt", "/Nf6-outside/Nf6-x.txt"] {
        w.secret(missing);
        let r = w.ok(addr, Method::GET, missing, &[], b"").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
    }
    for method in ["POST", "DELETE", "PROPFIND"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = w.ok(addr, method, &target(V1_PATH), &[], b"").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    for attack in [
        "/upload/Pz8a/../../etc/passwd",
        "/upload/Pz8b/%2e%2e/%2E%2E/etc/shadow",
        "/upload/Pz8c%2F..%2Fsecret/x.txt",
        "/upload/Pz8d/%00.txt",
        "/upload/Pz8e/%FF%FE.txt",
        "/upload/Pz8f//double.txt",
        "/upload/./Pz8g/x.txt",
        "/Pz8h/../upload/x.txt",
    ] {
        w.secret(attack);
        let r = w.ok(addr, Method::GET, attack, &[], b"").await;
        let status = r.status.as_u16();
        assert!(matches!(status, 400 | 404), "{attack}: {status}");
    }
    // A PUT to a bad path with a token: refused as a path, not as a slot.
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), "Pz8i/../x", 3, None).unwrap();
    w.secret_query(&query);
    let bad_path = format!("/upload/Pz8i/../x?{query}");
    let r = w.ok(addr, Method::PUT, &bad_path, &[], b"abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // 411 (chunked) and 413 (too large, valid signature), on raw connections.
    let v1 = |size| Credential::Query(Scheme::V1, SECRET, size, None);
    let (chunked, _) = w.sign("Kq3slotE5/Ex4-chunked.txt", v1(5));
    let chunked = format!(
        "PUT {chunked} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {USER_AGENT}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let huge = 200 * 1024 * 1024;
    let (too_large, _) = w.sign("Kq3slotE6/Ex4-huge.bin", v1(huge));
    let too_large = format!(
        "PUT {too_large} HTTP/1.1\r\nHost: {addr}\r\nReferer: {REFERER}\r\n\
         Content-Length: {huge}\r\nConnection: close\r\n\r\n"
    );
    // An unknown method reaches the router; bytes that are not HTTP do not.
    let raw: [(&[u8], bool, u16); 4] = [
        (chunked.as_bytes(), true, 411),
        (too_large.as_bytes(), true, 413),
        (
            b"GX5METHOD /upload/Gx5-ext/Gx5.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            true,
            405,
        ),
        (b"\x16\x03\x01 Gx5-garbage /Gx5 \r\n\r\n", false, 400),
    ];
    for (bytes, counted, status) in raw {
        let answer = w.raw(addr, bytes, counted).await;
        assert_eq!(common::raw_status(&answer), Some(status), "{answer}");
    }
}

/// The address each failure line must name in `scenario`, in order.
pub fn expected_clients(w: &Workload, scenario: Scenario) -> Vec<Option<&'static str>> {
    w.failures
        .iter()
        .map(|f| match scenario {
            Scenario::Untrusted => Some(PEER),
            Scenario::Trusted => Some(f.via_proxy),
            Scenario::NoAddress => None,
        })
        .collect()
}
