//! Every signing vector from `tests/data/signing.json` (produced by running the real
//! Prosody, ejabberd and Metronome code) goes through the real HTTP path: accepted
//! slots store and serve the file and refuse a second PUT; refused ones store nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Server, test_config};
use http::{Method, StatusCode};
use serde_json::Value;
use upslot::clock::ManualClock;
use upslot::config::SecretSource;

fn vectors() -> Vec<Value> {
    let text = include_str!("data/signing.json");
    serde_json::from_str::<Vec<Value>>(text).unwrap()
}

/// DESIGN §3: a refused slot is 403, except a JWT whose `filesize` differs from
/// Content-Length, which Prosody (and upslot) answer with 413.
fn expected_refusal(id: &str) -> (StatusCode, &'static str) {
    match id {
        "reject-jwt-size-mismatch" => (StatusCode::PAYLOAD_TOO_LARGE, "size mismatch"),
        "reject-jwt-expired" => (StatusCode::FORBIDDEN, "token expired"),
        "reject-jwt-alg-hs384" => (StatusCode::FORBIDDEN, "algorithm not allowed"),
        "reject-jwt-alg-none" | "reject-jwt-alg-none-with-sig" | "reject-jwt-no-bearer-prefix" => {
            (StatusCode::FORBIDDEN, "malformed token")
        }
        "reject-jwt-slot-mismatch" => (StatusCode::FORBIDDEN, "slot mismatch"),
        "reject-missing-token" => (StatusCode::FORBIDDEN, "missing token"),
        _ => (StatusCode::FORBIDDEN, "signature mismatch"),
    }
}

async fn run(v: &Value) {
    let id = v["id"].as_str().unwrap();
    let (mut config, dir) = test_config();
    config.secret = SecretSource::Inline(v["secret"].as_str().unwrap().to_owned());
    config.base_path = v["base_path"].as_str().unwrap().to_owned();
    let now = v["now"].as_u64().unwrap_or(common::T0);
    let server = Server::start_with(config, ManualClock::at(now), Some(dir)).await;

    let mut target = v["url_path"].as_str().unwrap().to_owned();
    if let Some(q) = v["query"].as_str() {
        target = format!("{target}?{q}");
    }
    let headers: Vec<(String, String)> = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, val)| (k.clone(), val.as_str().unwrap().to_owned()))
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap();
    let body: Vec<u8> = (0..length).map(|i| (i * 7 % 251) as u8).collect();

    let put = server
        .request(Method::PUT, &target, &header_refs, body.clone())
        .await;
    match v["expected"].as_str().unwrap() {
        "accept" => {
            assert_eq!(put.status, StatusCode::CREATED, "{id}: {}", put.text());
            let get = server
                .request(Method::GET, v["url_path"].as_str().unwrap(), &[], vec![])
                .await;
            assert_eq!(get.status, StatusCode::OK, "{id}");
            assert_eq!(&get.body[..], &body[..], "{id}: body differs");
            let want_type = v["content_type"]
                .as_str()
                .filter(|t| !t.is_empty())
                .or_else(|| v["claims"]["filetype"].as_str())
                .unwrap_or("application/octet-stream");
            assert_eq!(get.header("content-type"), Some(want_type), "{id}");
            let again = server
                .request(Method::PUT, &target, &header_refs, body)
                .await;
            assert_eq!(again.status, StatusCode::CONFLICT, "{id}: second PUT");
        }
        "reject" => {
            let (status, reason) = expected_refusal(id);
            assert_eq!(put.status, status, "{id}: {}", put.text());
            assert_eq!(put.text(), reason, "{id}");
            let left = server.leftovers().await;
            assert!(left.is_empty(), "{id}: a refused upload left {left:?}");
            let get = server
                .request(Method::GET, v["url_path"].as_str().unwrap(), &[], vec![])
                .await;
            assert_eq!(get.status, StatusCode::NOT_FOUND, "{id}");
        }
        other => panic!("{id}: unknown expectation {other}"),
    }
}

#[tokio::test]
async fn all_vectors_through_http() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 38, "the vector file holds 38 vectors");
    // DESIGN.md says 20/18; the file itself holds 19 of each.
    let accepts = vectors.iter().filter(|v| v["expected"] == "accept").count();
    assert_eq!(accepts, 19);
    for v in &vectors {
        run(v).await;
    }
}

/// One test per vector as well, so that a failure names the vector.
macro_rules! vector_tests {
    ($($name:ident => $id:literal),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let v = vectors().into_iter().find(|v| v["id"] == $id).expect($id);
            run(&v).await;
        }
    )*};
}

vector_tests! {
    ext_v1_ascii => "ext-v1-ascii",
    ext_v1_utf8 => "ext-v1-utf8",
    ext_v1_utf8_uppercase_pct => "ext-v1-utf8-uppercase-pct",
    ext_v1_plus_percent => "ext-v1-plus-percent",
    ext_v2_ascii => "ext-v2-ascii",
    ext_v2_utf8 => "ext-v2-utf8",
    ext_v2_no_ct => "ext-v2-no-ct",
    ext_v2_txt => "ext-v2-txt",
    ext_v2_no_ct_explicit_octet => "ext-v2-no-ct-explicit-octet",
    metronome_token_ascii => "metronome-token-ascii",
    reject_v1_tampered_size => "reject-v1-tampered-size",
    reject_v2_tampered_size => "reject-v2-tampered-size",
    reject_v2_tampered_type => "reject-v2-tampered-type",
    reject_v2_no_ct_but_header_sent => "reject-v2-no-ct-but-header-sent",
    reject_v1_wrong_secret => "reject-v1-wrong-secret",
    reject_v2_wrong_secret => "reject-v2-wrong-secret",
    reject_v1_token_as_v2 => "reject-v1-token-as-v2",
    reject_missing_token => "reject-missing-token",
    reject_v1_valid_but_v2_present_and_bad => "reject-v1-valid-but-v2-present-and-bad",
    reject_v1_signed_over_encoded_path => "reject-v1-signed-over-encoded-path",
    prosody_filer_testsuite_v1 => "prosody-filer-testsuite-v1",
    prosody_filer_testsuite_v2 => "prosody-filer-testsuite-v2",
    ejabberd_v1_utf8_sha1 => "ejabberd-v1-utf8-sha1",
    ejabberd_v1_ascii_node => "ejabberd-v1-ascii-node",
    jwt_012_utf8 => "jwt-012-utf8",
    jwt_012_ascii_no_ct => "jwt-012-ascii-no-ct",
    jwt_13_utf8 => "jwt-13-utf8",
    jwt_python_sorted => "jwt-python-sorted",
    jwt_python_sorted_at_exp => "jwt-python-sorted-at-exp",
    reject_jwt_expired => "reject-jwt-expired",
    reject_jwt_wrong_secret => "reject-jwt-wrong-secret",
    reject_jwt_alg_none => "reject-jwt-alg-none",
    reject_jwt_alg_none_with_sig => "reject-jwt-alg-none-with-sig",
    reject_jwt_alg_hs384 => "reject-jwt-alg-hs384",
    reject_jwt_slot_mismatch => "reject-jwt-slot-mismatch",
    reject_jwt_size_mismatch => "reject-jwt-size-mismatch",
    reject_jwt_no_bearer_prefix => "reject-jwt-no-bearer-prefix",
    reject_jwt_tampered_payload => "reject-jwt-tampered-payload",
}

/// A scheme left out of `schemes` is refused even with a valid token.
#[tokio::test]
async fn disabled_scheme_is_refused() {
    let server = Server::start_config(|c| c.schemes = vec![upslot::auth::Scheme::V2]).await;
    let r = server.put_v1("slot/a.txt", b"hello").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.text(), "scheme disabled");
    assert_eq!(server.leftovers().await, Vec::<String>::new());
}
