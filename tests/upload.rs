//! DESIGN §3 "Upload (PUT)": every row but quotas and 507 (they have their own
//! tests), the race for one path, and the metadata stored with each file (§4).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::sync::Arc;

use common::{Server, T0};
use http::{Method, StatusCode};
use serde_json::Value;
use support::{Raw, body, put_head, sha256_hex, v1_target};
use upslot::auth::{JwtSlot, Scheme, sign_jwt};

const WEEK: u64 = 7 * 24 * 3600;

fn jwt(server: &Server, claims: &JwtSlot) -> String {
    format!("Bearer {}", sign_jwt(server.secret(), claims).unwrap())
}

fn slot(slot: &str, filesize: u64) -> JwtSlot {
    JwtSlot {
        slot: slot.into(),
        filesize,
        exp: T0 + 300,
        iat: Some(T0),
        filename: None,
        filetype: None,
        sub: None,
        expires: None,
    }
}

/// The one file in the store: its metadata, as stored, and its body. Nothing
/// else is there, not even part of a file.
async fn stored(server: &Server) -> (Value, Vec<u8>) {
    let mut files = server.stored().await;
    assert_eq!(files.len(), 1, "exactly one stored file: {files:?}");
    assert_eq!(server.pending().await, Vec::<String>::new());
    let file = files.remove(0);
    (file.meta, file.body)
}

/// Whether the store holds nothing at all (no file, no part of one).
async fn store_is_empty(server: &Server) -> bool {
    server.leftovers().await.is_empty()
}

#[tokio::test]
async fn created_file_reads_back_identical() {
    let server = Server::start().await;
    let data = body(300_000, 1);
    server.upload("u1/photo.jpg", &data).await;
    let got = server.get("u1/photo.jpg", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-length"), Some("300000"));
    assert!(
        got.body[..] == data[..],
        "served bytes differ from uploaded"
    );
    // An empty file is a file too.
    server.upload("u1/empty", b"").await;
    let got = server.get("u1/empty", &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.body.is_empty());
}

#[tokio::test]
async fn refused_tokens_are_403_with_a_reason() {
    let server = Server::start().await;
    let path = "u1/a.txt";
    let good = v1_target(&server, path, 5);
    let bare = server.target(path);
    let expired = {
        let mut claims = slot("u1", 5);
        claims.exp = T0 - 1;
        jwt(&server, &claims)
    };
    let forged = format!(
        "Bearer {}",
        sign_jwt(b"not-the-shared-secret", &slot("u1", 5)).unwrap()
    );
    let query_of = |target: &str| target.split_once('?').unwrap().1.to_owned();
    // (what, target, Authorization, reason)
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        ("missing", bare.clone(), None, "missing token"),
        ("not hex", format!("{bare}?v=zz"), None, "malformed token"),
        ("empty", format!("{bare}?v2="), None, "malformed token"),
        ("short", format!("{bare}?v=abcdef"), None, "malformed token"),
        (
            "signed for another size",
            v1_target(&server, path, 6),
            None,
            "signature mismatch",
        ),
        (
            "signed for another path",
            format!("{}?{}", server.target("u1/b.txt"), query_of(&good)),
            None,
            "signature mismatch",
        ),
        (
            "bearer not a JWT",
            bare.clone(),
            Some("Bearer abc.def".into()),
            "malformed token",
        ),
        (
            "JWT with another secret",
            bare.clone(),
            Some(forged),
            "signature mismatch",
        ),
        ("expired JWT", bare.clone(), Some(expired), "token expired"),
    ];
    for (what, target, authorization, reason) in cases {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|v| ("authorization", v.as_str()))
            .collect();
        let r = server
            .request(Method::PUT, &target, &headers, b"hello".to_vec())
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text());
        assert_eq!(r.text(), reason, "{what}");
        assert!(store_is_empty(&server).await, "{what} left a file");
    }
    // The slot is still free: the good token works after all the refusals.
    let r = server
        .request(Method::PUT, &good, &[], b"hello".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn disabled_jwt_scheme_is_403() {
    let server = Server::start_config(|c| c.schemes = vec![Scheme::V1, Scheme::V2]).await;
    let auth = jwt(&server, &slot("s1", 5));
    let target = server.target("s1/a.txt");
    let r = server
        .request(
            Method::PUT,
            &target,
            &[("authorization", &auth)],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.text(), "scheme disabled");
    assert!(store_is_empty(&server).await);
}

#[tokio::test]
async fn no_content_length_is_411() {
    let server = Server::start().await;
    let target = v1_target(&server, "u1/chunked.txt", 5);
    // Chunked: the length is not known before the body arrives.
    let mut raw = Raw::connect(server.addr).await;
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: upslot.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    assert!(raw.send(head.as_bytes()).await);
    let r = raw.read_response().await.expect("an answer");
    assert_eq!(r.status, 411, "{}", r.head);
    // No framing header at all: a body-less PUT, still 411.
    let mut raw = Raw::connect(server.addr).await;
    let head = format!("PUT {target} HTTP/1.1\r\nHost: upslot.test\r\n\r\n");
    assert!(raw.send(head.as_bytes()).await);
    let r = raw.read_response().await.expect("an answer");
    assert_eq!(r.status, 411, "{}", r.head);
    assert!(store_is_empty(&server).await);
}

/// Both framings at once (a request-smuggling shape, RFC 9112 §6.3): refused with
/// 411, the connection closed, and the request hidden in the chunked body (under
/// a Content-Length reading) never runs.
#[tokio::test]
async fn content_length_with_chunked_is_refused_and_smuggles_nothing() {
    let server = Server::start().await;
    let target = v1_target(&server, "u1/a.txt", 5);
    let hidden = v1_target(&server, "u1/hidden.txt", 5);
    let request = format!(
        "PUT {target} HTTP/1.1\r\nHost: upslot.test\r\nContent-Length: 5\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
         PUT {hidden} HTTP/1.1\r\nHost: upslot.test\r\nContent-Length: 5\r\n\r\nhello"
    );
    let mut raw = Raw::connect(server.addr).await;
    assert!(raw.send(request.as_bytes()).await);
    let r = raw.read_response().await.expect("an answer");
    assert_eq!(r.status, 411, "{}", r.head);
    assert!(raw.closed().await, "a second request was read");
    assert!(store_is_empty(&server).await);
    let got = server.get("u1/hidden.txt", &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
}

/// Once a file has expired its path is free again (the same slot URL may be
/// used anew), whether or not the reaper has removed it yet.
#[tokio::test]
async fn an_expired_path_can_be_uploaded_again() {
    let server = Server::start().await;
    server.upload("u1/again.txt", b"first").await;
    server.clock.set(T0 + WEEK);
    assert_eq!(
        server.get("u1/again.txt", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    server.upload("u1/again.txt", b"other").await;
    assert_eq!(&server.get("u1/again.txt", &[]).await.body[..], b"other");
    let (meta, body) = stored(&server).await;
    assert_eq!(body, b"other");
    assert_eq!(meta["created"], T0 + WEEK);
    assert_eq!(meta["expires"], T0 + 2 * WEEK);
}

#[tokio::test]
async fn above_max_file_size_is_413_and_the_limit_itself_fits() {
    let server = Server::start_config(|c| c.max_file_size = 1024).await;
    let r = server.put_v1("u1/big.bin", &body(1025, 2)).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    assert_eq!(r.text(), "file too large");
    assert!(store_is_empty(&server).await);
    server.upload("u1/big.bin", &body(1024, 2)).await;
}

#[tokio::test]
async fn second_put_to_a_completed_path_is_409_and_changes_nothing() {
    let server = Server::start().await;
    let first = body(4096, 3);
    server.upload("u1/once.bin", &first).await;
    let before = server.leftovers().await;
    let r = server.put_v1("u1/once.bin", &body(4096, 4)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert_eq!(
        server.leftovers().await,
        before,
        "the refused PUT left something"
    );
    let got = server.get("u1/once.bin", &[]).await;
    assert!(
        got.body[..] == first[..],
        "the first upload was overwritten"
    );
}

#[tokio::test]
async fn other_methods_are_405_with_allow() {
    let server = Server::start().await;
    server.upload("u1/keep.txt", b"keep me").await;
    let target = v1_target(&server, "u1/keep.txt", 7);
    for method in ["DELETE", "POST", "PATCH"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = server
            .request(method.clone(), &target, &[], b"keep me".to_vec())
            .await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        let allow = r.header("allow").expect("Allow header");
        for m in ["GET", "HEAD", "PUT", "OPTIONS"] {
            assert!(allow.contains(m), "{method}: Allow: {allow}");
        }
    }
    let got = server.get("u1/keep.txt", &[]).await;
    assert_eq!(got.status, StatusCode::OK, "DELETE must not delete");
}

#[tokio::test]
async fn outside_base_path_is_404() {
    let server = Server::start().await;
    let query = upslot::auth::sign_query(Scheme::V1, server.secret(), "u1/a.txt", 5, None).unwrap();
    for path in [
        "/u1/a.txt",
        "/uploads/u1/a.txt",
        "/upload",
        "/",
        "/UPLOAD/u1/a.txt",
    ] {
        let target = format!("{path}?{query}");
        let r = server
            .request(Method::PUT, &target, &[], b"hello".to_vec())
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert!(store_is_empty(&server).await);
}

/// Eight clients PUT different bodies to one slot at once: one wins, seven get 409,
/// and the stored body is the winner's.
#[tokio::test]
async fn racing_puts_give_one_201_and_the_winners_body() {
    const N: usize = 8;
    let server = Arc::new(Server::start().await);
    let len = 256 * 1024;
    let target = v1_target(&server, "u1/race.bin", len as u64);
    let start = Arc::new(tokio::sync::Barrier::new(N));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (server, start, target) = (server.clone(), start.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let data = body(len, i as u8);
            start.wait().await;
            let r = server.request(Method::PUT, &target, &[], data).await;
            (i, r.status)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (i, status) = task.await.unwrap();
        match status {
            StatusCode::CREATED => winners.push(i),
            StatusCode::CONFLICT => {}
            other => panic!("client {i} got {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let got = server.get("u1/race.bin", &[]).await;
    assert!(
        got.body[..] == body(len, winners[0] as u8)[..],
        "stored body is not the winner's"
    );
    // The losers left nothing: `stored` finds the one file and nothing else.
    let (meta, _) = stored(&server).await;
    assert_eq!(meta["sha256"], sha256_hex(&body(len, winners[0] as u8)));
}

/// Path and name are most of a file's metadata, which every store must be able
/// to keep beside the file (at most `META_MAX` bytes; on fs an extended
/// attribute): a path too long for it is refused before the body (414), one of
/// a realistic length is stored whole.
#[tokio::test]
async fn a_path_too_long_for_the_metadata_is_refused() {
    let server = Server::start().await;
    let long = format!("slot/{}.txt", "n".repeat(2000));
    let r = server.put_v1(&long, b"x").await;
    assert_eq!(r.status, StatusCode::URI_TOO_LONG, "{}", r.text());
    assert!(store_is_empty(&server).await);

    let fine = format!("slot/{}.txt", "ü".repeat(300));
    server.upload(&fine, b"x").await;
    let (meta, body) = stored(&server).await;
    assert_eq!(meta["path"], fine.as_str());
    assert_eq!(body, b"x");
}

#[tokio::test]
async fn metadata_describes_the_file() {
    let server = Server::start().await;
    let path = "3f2a/Grüße (1).png";
    let data = body(70_000, 5);
    let target = server.signed_target(Scheme::V2, path, data.len() as u64, Some("image/png"));
    let r = server
        .request(
            Method::PUT,
            &target,
            &[("content-type", "image/png")],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let (meta, stored_body) = stored(&server).await;
    assert!(stored_body == data, "stored body differs");
    assert_eq!(meta["path"], path);
    assert_eq!(meta["name"], "Grüße (1).png");
    assert_eq!(meta["size"], 70_000);
    assert_eq!(meta["content_type"], "image/png");
    assert_eq!(meta["sha256"], sha256_hex(&data));
    assert_eq!(meta["created"], T0);
    assert_eq!(meta["expires"], T0 + WEEK);
    assert_eq!(meta["scheme"], "v2");
    assert!(meta.get("uploader").is_none_or(Value::is_null), "{meta}");
}

#[tokio::test]
async fn metadata_of_a_v1_upload_guesses_the_type_from_the_name() {
    let server = Server::start().await;
    server.upload("u1/notes.txt", b"some notes").await;
    let (meta, _) = stored(&server).await;
    assert_eq!(meta["scheme"], "v1");
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["sha256"], sha256_hex(b"some notes"));
}

#[tokio::test]
async fn jwt_expires_and_sub_are_stored() {
    let server = Server::start().await;
    let data = body(1000, 6);
    let mut claims = slot("s1", data.len() as u64);
    claims.expires = Some(T0 + 3600);
    claims.sub = Some("juliet@example.org".into());
    claims.filetype = Some("text/plain".into());
    let auth = jwt(&server, &claims);
    let target = server.target("s1/note.txt");
    let r = server
        .request(
            Method::PUT,
            &target,
            &[("authorization", &auth)],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let (meta, _) = stored(&server).await;
    assert_eq!(meta["scheme"], "jwt");
    assert_eq!(meta["created"], T0);
    assert_eq!(
        meta["expires"],
        T0 + 3600,
        "the JWT's expires caps retention"
    );
    assert_eq!(meta["uploader"], "juliet@example.org");
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["sha256"], sha256_hex(&data));
    // Served until then, and not a second after.
    server.clock.set(T0 + 3599);
    assert_eq!(server.get("s1/note.txt", &[]).await.status, StatusCode::OK);
    server.clock.set(T0 + 3600);
    assert_eq!(
        server.get("s1/note.txt", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn jwt_expires_beyond_retention_is_capped() {
    let server = Server::start().await;
    let mut claims = slot("s2", 3);
    claims.expires = Some(T0 + 30 * 24 * 3600);
    let auth = jwt(&server, &claims);
    let r = server
        .request(
            Method::PUT,
            &server.target("s2/x.bin"),
            &[("authorization", &auth)],
            b"abc".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let (meta, _) = stored(&server).await;
    assert_eq!(meta["expires"], T0 + WEEK);
    assert!(meta.get("uploader").is_none_or(Value::is_null));
}

#[tokio::test]
async fn raw_put_head_helper_round_trips() {
    // The raw client used by the wire tests agrees with the real one.
    let server = Server::start().await;
    let target = v1_target(&server, "u1/raw.txt", 5);
    let mut raw = Raw::connect(server.addr).await;
    assert!(raw.send(&put_head(&target, 5, &[])).await);
    assert!(raw.send(b"hello").await);
    let r = raw.read_response().await.expect("an answer");
    assert_eq!(r.status, 201, "{}", r.head);
    assert_eq!(&server.get("u1/raw.txt", &[]).await.body[..], b"hello");
}

/// Prosody counts one upload per JWT slot; a slot must not store more files,
/// whatever their names (docs/limits.md).
#[tokio::test]
async fn a_jwt_slot_holds_one_file() {
    let server = Server::start().await;
    let running = &server;
    let put = |path: &str, claims: JwtSlot| {
        let server = running;
        let auth = jwt(server, &claims);
        let target = server.target(path);
        async move {
            server
                .request(
                    Method::PUT,
                    &target,
                    &[("authorization", &auth)],
                    b"hello".to_vec(),
                )
                .await
        }
    };
    let named = |name: &str| JwtSlot {
        filename: Some(name.into()),
        ..slot("j1", 5)
    };
    assert_eq!(
        put("j1/f.txt", named("f.txt")).await.status,
        StatusCode::CREATED
    );
    // Another name under the same slot: with the token's own name refused by
    // the token, without one refused because the slot is used.
    let r = put("j1/other.html", named("f.txt")).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::FORBIDDEN, "slot mismatch")
    );
    let r = put("j1/other.html", slot("j1", 5)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let r = put("j1/x/y/z.svg", slot("j1", 5)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (StatusCode::FORBIDDEN, "slot mismatch")
    );
    assert_eq!(server.stored_paths().await, ["j1/f.txt"]);
    assert_eq!(server.pending().await, Vec::<String>::new());
    // The slot stays used across a restart: the index is rebuilt from the store.
    let (config, clock, dir) = server.stop().await;
    let server = Server::start_with(config, clock, dir).await;
    let auth = jwt(&server, &slot("j1", 5));
    let r = server
        .request(
            Method::PUT,
            &server.target("j1/again.txt"),
            &[("authorization", &auth)],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    // Other slots are not affected.
    let auth = jwt(&server, &slot("j2", 5));
    let r = server
        .request(
            Method::PUT,
            &server.target("j2/g.txt"),
            &[("authorization", &auth)],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

/// Two uploads racing for one JWT slot under different names: one wins.
#[tokio::test]
async fn racing_names_in_one_jwt_slot_give_one_201() {
    let server = Arc::new(Server::start().await);
    let size = 200_000;
    let mut racers = Vec::new();
    for name in ["a.bin", "b.bin", "c.bin", "d.bin"] {
        let server = Arc::clone(&server);
        racers.push(tokio::spawn(async move {
            let auth = jwt(&server, &slot("race", size as u64));
            let mut raw = Raw::connect(server.addr).await;
            let head = put_head(
                &server.target(&format!("race/{name}")),
                size as u64,
                &[&format!("Authorization: {auth}")],
            );
            assert!(raw.send(&head).await);
            // Half the body, a pause in which the others start, then the rest.
            let data = body(size, 3);
            let _ = raw.send(&data[..size / 2]).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = raw.send(&data[size / 2..]).await;
            raw.read_response().await.unwrap().status
        }));
    }
    let mut statuses = Vec::new();
    for r in racers {
        statuses.push(r.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409]);
    let (meta, _) = stored(&server).await;
    assert!(
        meta["path"].as_str().unwrap().starts_with("race/"),
        "{meta}"
    );
}

/// After a rotation, slots signed with the previous secret are accepted until
/// its end, and not a second longer; the new secret works throughout.
#[tokio::test]
async fn a_previous_secret_is_accepted_until_its_end() {
    const OLD: &str = "the-secret-before-rotation";
    let server = Server::start_config(|c| {
        c.previous_secrets = vec![upslot::config::PreviousSecret {
            source: upslot::config::SecretSource::Inline(OLD.into()),
            until: T0 + 3600,
        }];
    })
    .await;
    let put = |path: String, secret: &'static str| {
        let query =
            upslot::auth::sign_query(Scheme::V2, secret.as_bytes(), &path, 5, None).unwrap();
        let target = format!("{}?{query}", server.target(&path));
        let server = &server;
        async move {
            server
                .request(Method::PUT, &target, &[], b"hello".to_vec())
                .await
                .status
        }
    };
    let current = std::str::from_utf8(server.secret()).unwrap().to_owned();
    let current: &'static str = current.leak();
    assert_eq!(put("r/old".into(), OLD).await, StatusCode::CREATED);
    assert_eq!(put("r/new".into(), current).await, StatusCode::CREATED);
    assert_eq!(
        put("r/other".into(), "neither-of-the-two-secrets").await,
        StatusCode::FORBIDDEN
    );
    let claims = JwtSlot {
        filename: Some("f.txt".into()),
        ..slot("rj", 5)
    };
    let auth = format!("Bearer {}", sign_jwt(OLD.as_bytes(), &claims).unwrap());
    let r = server
        .request(
            Method::PUT,
            &server.target("rj/f.txt"),
            &[("authorization", &auth)],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    server.clock.set(T0 + 3600);
    assert_eq!(put("r/old-late".into(), OLD).await, StatusCode::FORBIDDEN);
    assert_eq!(put("r/new-late".into(), current).await, StatusCode::CREATED);
    // Refusals say why, never which secret was tried.
    let failures = server
        .app
        .metrics
        .auth_failures
        .with_label_values(&["v2", "signature"]);
    assert_eq!(failures.get(), 2);
}
