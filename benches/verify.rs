//! What checking one upload slot costs, for each signing scheme.
//!
//! `cargo bench --bench verify` times `Verifier::verify` on a valid PUT signed
//! with Prosody `v` (v1), `v2`, Metronome `token`, ejabberd's `external_secret`
//! (v1 over ejabberd's path layout) and a Prosody 0.12 mod_http_file_share HS256
//! JWT, and on a bad signature for a query scheme and for the JWT: a refusal is
//! work too, and anyone can send one.
//!
//! The slot path is parsed once, outside the timed loop: path decoding is the
//! same for every scheme. Every case is checked to give the expected answer
//! before it is timed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use upslot::auth::{AuthError, JwtSlot, Presented, Scheme, Verifier, sign_jwt, sign_query};
use upslot::path::SlotPath;

const SECRET: &[u8] = b"upslot-bench-secret-0123456789ab";
const NOW: u64 = 1_767_225_600;
const SIZE: u64 = 23_026;
const CONTENT_TYPE: &str = "image/jpeg";

/// One request as the upload handler would present it.
struct Case {
    name: &'static str,
    path: SlotPath,
    query: Option<String>,
    content_type: Option<&'static str>,
    authorization: Option<String>,
    expect: Result<Scheme, AuthError>,
}

impl Case {
    fn presented(&self) -> Presented<'_> {
        Presented {
            path: &self.path,
            query: self.query.as_deref(),
            content_length: SIZE,
            content_type: self.content_type,
            authorization: self.authorization.as_deref(),
            now: NOW,
        }
    }
}

fn slot_path(decoded: &str) -> SlotPath {
    SlotPath::parse(
        &format!("/upload/{}", SlotPath::encode(decoded)),
        "/upload/",
    )
    .unwrap()
}

fn query_case(
    name: &'static str,
    scheme: Scheme,
    decoded: &str,
    content_type: Option<&'static str>,
) -> Case {
    let query = sign_query(scheme, SECRET, decoded, SIZE, content_type).unwrap();
    Case {
        name,
        path: slot_path(decoded),
        query: Some(query),
        content_type,
        authorization: None,
        expect: Ok(scheme),
    }
}

fn jwt_case(name: &'static str) -> Case {
    let path = slot_path("RVbKAgWPcrUYAodjXyZ12345/Grüße 2026 (1).jpg");
    // The claims Prosody 0.12 puts in a token.
    let claims = JwtSlot {
        slot: path.first_segment().to_owned(),
        filesize: SIZE,
        exp: NOW + 300,
        iat: Some(NOW),
        filename: Some(path.file_name().to_owned()),
        filetype: Some(CONTENT_TYPE.to_owned()),
        sub: Some("romeo@montague.example".to_owned()),
        expires: Some(NOW + 7 * 86_400),
    };
    let token = sign_jwt(SECRET, &claims).unwrap();
    Case {
        name,
        path,
        query: None,
        content_type: Some(CONTENT_TYPE),
        authorization: Some(format!("Bearer {token}")),
        expect: Ok(Scheme::Jwt),
    }
}

/// Changes one signature character to another valid in hex and in base64url,
/// away from the end (whose base64 padding bits must stay zero): the token still
/// decodes, so the whole check runs and only the comparison fails.
fn corrupt(token: &mut String) {
    let at = token.len() - 10;
    let swapped = if &token[at..=at] == "0" { "1" } else { "0" };
    token.replace_range(at..=at, swapped);
}

fn cases() -> Vec<Case> {
    let prosody = "6b1f0a4e-3c2d-4f5e-9a8b-7c6d5e4f3a2b/photo.jpg";
    // ejabberd: <sha1 of the user's JID or its node>/<random>/<file name>.
    let ejabberd = "a5018f8c277bc4e61647c7b631df1c57f1cd4628/\
                    A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0/Grüße_2026__1_.jpg";
    let mut bad_v2 = query_case("v2_bad_signature", Scheme::V2, prosody, Some(CONTENT_TYPE));
    corrupt(bad_v2.query.as_mut().unwrap());
    bad_v2.expect = Err(AuthError::SignatureMismatch);
    let mut bad_jwt = jwt_case("jwt_bad_signature");
    corrupt(bad_jwt.authorization.as_mut().unwrap());
    bad_jwt.expect = Err(AuthError::SignatureMismatch);
    vec![
        query_case("v1", Scheme::V1, prosody, Some(CONTENT_TYPE)),
        query_case("v2", Scheme::V2, prosody, Some(CONTENT_TYPE)),
        query_case("token", Scheme::Token, prosody, Some(CONTENT_TYPE)),
        query_case("ejabberd_v1", Scheme::V1, ejabberd, Some(CONTENT_TYPE)),
        jwt_case("jwt"),
        bad_v2,
        bad_jwt,
    ]
}

fn bench_verify(c: &mut Criterion) {
    let verifier = Verifier::new(SECRET, &Scheme::ALL).unwrap();
    let mut group = c.benchmark_group("verify");
    for case in cases() {
        let presented = case.presented();
        // A case that silently took another branch would time the wrong thing.
        let got = verifier.verify(&presented).map(|grant| grant.scheme);
        assert_eq!(got, case.expect, "{}", case.name);
        group.bench_function(case.name, |b| {
            b.iter(|| verifier.verify(black_box(&presented)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
