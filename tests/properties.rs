//! Properties over generated input (proptest):
//! - no request path maps outside the store: whatever `SlotPath::parse` accepts is
//!   stored by `FsStore` at `<data_dir>/files/<2 hex>/<64 hex>`, read back from the
//!   kernel's own name for the open file, and nothing is written anywhere else;
//! - signing and verifying agree for every scheme, and any one change to a signed
//!   request (size, path, type where signed, secret, one token character) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use upslot::auth::{AuthError, Grant, JwtSlot, Presented, Scheme, Verifier, sign_jwt, sign_query};
use upslot::path::SlotPath;
use upslot::store::{FsStore, Key, Meta, Store};

const BASE: &str = "/upload/";
const PATH_CASES: u32 = 400;
const SIGNING_CASES: u32 = 200;

/// One segment of a request path as an attacker or a careless client writes it.
fn raw_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9._~-]{1,12}",
        2 => "\\PC{1,10}",
        1 => any::<String>(),
        2 => prop::collection::vec(any::<u8>(), 1..8).prop_flat_map(|bytes| {
            prop::collection::vec(any::<bool>(), bytes.len()).prop_map(move |upper| {
                bytes
                    .iter()
                    .zip(upper)
                    .map(|(b, up)| if up { format!("%{b:02X}") } else { format!("%{b:02x}") })
                    .collect()
            })
        }),
        // Unicode, every byte encoded, the case alternating.
        2 => "\\PC{1,6}".prop_map(|s| {
            s.bytes()
                .enumerate()
                .map(|(i, b)| if i % 2 == 0 { format!("%{b:02X}") } else { format!("%{b:02x}") })
                .collect()
        }),
        2 => prop::sample::select(vec![
            ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "...", "%2f", "%2F", "a%2fb",
            "..%2f..%2fetc", "%5c", "..\\..", "%00", "%252e%252e", "%", "%g0", "%c3", "%c3%bc",
            "%C3%BC", "+", "%2b", "", "~",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A request path: mostly below `/upload/`, sometimes not.
fn raw_path() -> impl Strategy<Value = String> {
    let below =
        prop::collection::vec(raw_segment(), 1..6).prop_map(|s| format!("{BASE}{}", s.join("/")));
    prop_oneof![
        8 => below,
        1 => prop::collection::vec(raw_segment(), 0..4).prop_map(|s| format!("/{}", s.join("/"))),
        1 => any::<String>(),
    ]
}

/// A failing case is printed, shrunk, to be kept in tests/fuzz_regressions.rs.
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn meta(path: &str) -> Meta {
    Meta {
        path: path.to_owned(),
        name: path.rsplit('/').next().unwrap().to_owned(),
        size: 1,
        content_type: "application/octet-stream".into(),
        sha256: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d".into(),
        created: 1_767_225_600,
        expires: 1_767_830_400,
        scheme: Scheme::V1,
        uploader: None,
        object: String::new(),
    }
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn no_request_path_maps_outside_the_store() {
    let outer = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let data_dir = outer.path().join("data");
    let store = FsStore::open(&data_dir, false, 0).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let files = data_dir.canonicalize().unwrap().join("files");
    let accepted = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(config(PATH_CASES));
    runner
        .run(&raw_path(), |raw| {
            let Ok(path) = SlotPath::parse(&raw, BASE) else {
                return Ok(());
            };
            accepted.set(accepted.get() + 1);
            let decoded = path.as_str();
            for segment in decoded.split('/') {
                prop_assert!(
                    !segment.is_empty() && segment != "." && segment != "..",
                    "{raw:?}"
                );
                prop_assert!(
                    !segment.contains('\\') && !segment.contains('\0'),
                    "{raw:?}"
                );
            }
            let key = Key::for_path(decoded);
            let stored = meta(decoded);
            runtime
                .block_on(store.put(&stored, vec![Bytes::from_static(b"x")]))
                .unwrap();
            let mut found = files_below(&files);
            prop_assert_eq!(found.len(), 1, "{:?}", raw);
            let location = found.remove(0);
            let below = location
                .strip_prefix(&files)
                .unwrap_or_else(|_| panic!("{raw:?} stored at {location:?}, outside {files:?}"));
            let parts: Vec<Component> = below.components().collect();
            let hex = key.hex();
            prop_assert_eq!(
                parts,
                vec![
                    Component::Normal(hex[..2].as_ref()),
                    Component::Normal(hex.as_ref())
                ],
                "{:?}",
                raw
            );
            prop_assert!(runtime.block_on(store.delete(&stored)).unwrap());
            Ok(())
        })
        .unwrap();
    let accepted = accepted.get();
    assert!(
        accepted >= PATH_CASES / 8,
        "only {accepted} of {PATH_CASES} paths were accepted: the generator drifted"
    );
    // Nothing was written beside data_dir, and nothing but the lock is left in it.
    let beside: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("data")]);
    assert_eq!(files_below(&data_dir), vec![data_dir.join("lock")]);
}

/// A clean decoded path of 1 to 4 segments, and its request form.
fn slot_path() -> impl Strategy<Value = SlotPath> {
    let segment = "\\PC{1,12}".prop_filter("a clean segment", |s: &String| {
        s != "." && s != ".." && !s.contains(['/', '\\'])
    });
    prop::collection::vec(segment, 1..5).prop_map(|segments| {
        let raw = format!("{BASE}{}", SlotPath::encode(&segments.join("/")));
        SlotPath::parse(&raw, BASE).unwrap()
    })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "image/jpeg",
            "text/plain",
            "application/octet-stream",
            ""
        ])
        .prop_map(|t| Some(t.to_owned())),
        "\\PC{0,24}".prop_map(Some),
    ]
}

#[derive(Debug, Clone)]
struct Slot {
    path: SlotPath,
    other_path: SlotPath,
    size: u64,
    size_delta: u64,
    content_type: Option<String>,
    other_type: Option<String>,
    secret: Vec<u8>,
    other_secret: Vec<u8>,
    now: u64,
    lifetime: u64,
    /// Which token character to change, and to what.
    flip: (usize, usize),
}

fn slot() -> impl Strategy<Value = Slot> {
    let secret = || prop::collection::vec(any::<u8>(), 16..48);
    (
        (slot_path(), slot_path(), any::<u64>(), 1..=u64::MAX),
        (content_type(), content_type(), secret(), secret()),
        (
            0..4_000_000_000u64,
            0..1_000_000u64,
            any::<usize>(),
            1..64usize,
        ),
    )
        .prop_map(
            |(
                (path, other_path, size, size_delta),
                (ct, other_ct, secret, other_secret),
                (now, lifetime, at, by),
            )| Slot {
                path,
                other_path,
                size,
                size_delta,
                content_type: ct,
                other_type: other_ct,
                secret,
                other_secret,
                now,
                lifetime,
                flip: (at, by),
            },
        )
}

fn verify(secret: &[u8], p: &Presented<'_>) -> Result<Grant, AuthError> {
    Verifier::new(secret, &Scheme::ALL).unwrap().verify(p)
}

/// `token` with one character replaced by another from `alphabet`.
fn flipped(token: &str, alphabet: &[u8], (at, by): (usize, usize)) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = at % bytes.len();
    let i = alphabet.iter().position(|c| *c == bytes[at]).unwrap_or(0);
    bytes[at] = alphabet[(i + 1 + by % (alphabet.len() - 1)) % alphabet.len()];
    String::from_utf8(bytes).unwrap()
}

const HEX: &[u8] = b"0123456789abcdef";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn query_schemes_agree(s: &Slot) -> Result<(), TestCaseError> {
    let ct = s.content_type.as_deref();
    let effective = |t: Option<&str>| t.unwrap_or("application/octet-stream").to_owned();
    for scheme in [Scheme::V1, Scheme::V2, Scheme::Token] {
        let query = sign_query(scheme, &s.secret, s.path.as_str(), s.size, ct).unwrap();
        let p = Presented {
            path: &s.path,
            query: Some(&query),
            content_length: s.size,
            content_type: ct,
            authorization: None,
            now: s.now,
        };
        let grant =
            verify(&s.secret, &p).map_err(|e| TestCaseError::fail(format!("{scheme}: {e}")))?;
        prop_assert_eq!((grant.scheme, grant.size), (scheme, s.size));
        let refused =
            |changed: &Presented<'_>, secret: &[u8], what: &str| -> Result<(), TestCaseError> {
                let got = verify(secret, changed);
                prop_assert!(
                    matches!(
                        got,
                        Err(AuthError::SignatureMismatch | AuthError::Malformed)
                    ),
                    "{scheme} with {what} changed: {got:?}"
                );
                Ok(())
            };
        let resized = Presented {
            content_length: s.size.wrapping_add(s.size_delta),
            ..p
        };
        refused(&resized, &s.secret, "size")?;
        if s.other_path != s.path {
            refused(
                &Presented {
                    path: &s.other_path,
                    ..p
                },
                &s.secret,
                "path",
            )?;
        }
        if s.other_secret != s.secret {
            refused(&p, &s.other_secret, "secret")?;
        }
        let (key, tag) = query.split_once('=').unwrap();
        let changed = format!("{key}={}", flipped(tag, HEX, s.flip));
        refused(
            &Presented {
                query: Some(&changed),
                ..p
            },
            &s.secret,
            "a token character",
        )?;
        let retyped = Presented {
            content_type: s.other_type.as_deref(),
            ..p
        };
        if scheme == Scheme::V1 {
            prop_assert!(
                verify(&s.secret, &retyped).is_ok(),
                "v1 does not sign the type"
            );
        } else if effective(s.other_type.as_deref()) != effective(ct) {
            refused(&retyped, &s.secret, "type")?;
        }
    }
    Ok(())
}

/// A JWT slot's URL is `<base>/<slot>/<filename>`.
fn jwt_path(p: &SlotPath) -> SlotPath {
    let (slot, name) = (p.first_segment(), p.file_name());
    let raw = format!(
        "{BASE}{}/{}",
        SlotPath::encode(slot),
        SlotPath::encode(name)
    );
    SlotPath::parse(&raw, BASE).unwrap()
}

fn jwt_agrees(s: &Slot) -> Result<(), TestCaseError> {
    let (path, other_path) = (jwt_path(&s.path), jwt_path(&s.other_path));
    let claims = JwtSlot {
        slot: path.first_segment().to_owned(),
        filesize: s.size,
        exp: s.now + s.lifetime,
        iat: Some(s.now),
        filename: Some(path.file_name().to_owned()),
        filetype: s.content_type.clone(),
        sub: Some("juliet@example.org".into()),
        expires: Some(s.now + 604_800),
    };
    let token = sign_jwt(&s.secret, &claims).unwrap();
    let bearer = format!("Bearer {token}");
    let p = Presented {
        path: &path,
        query: None,
        content_length: s.size,
        content_type: None,
        authorization: Some(&bearer),
        now: s.now,
    };
    let grant = verify(&s.secret, &p).map_err(|e| TestCaseError::fail(format!("jwt: {e}")))?;
    prop_assert_eq!((grant.scheme, grant.size), (Scheme::Jwt, s.size));
    prop_assert_eq!(grant.expires, claims.expires);
    prop_assert_eq!(grant.uploader.as_deref(), Some("juliet@example.org"));
    let want_type = s.content_type.clone().filter(|t| !t.is_empty());
    prop_assert_eq!(grant.signed_type, want_type);

    let resized = Presented {
        content_length: s.size.wrapping_add(s.size_delta),
        ..p
    };
    prop_assert_eq!(verify(&s.secret, &resized), Err(AuthError::SizeMismatch));
    let late = Presented {
        now: claims.exp + 1,
        ..p
    };
    prop_assert_eq!(verify(&s.secret, &late), Err(AuthError::Expired));
    if other_path.first_segment() != path.first_segment() {
        let moved = Presented {
            path: &other_path,
            ..p
        };
        prop_assert_eq!(verify(&s.secret, &moved), Err(AuthError::SlotMismatch));
    }
    if s.other_secret != s.secret {
        prop_assert_eq!(
            verify(&s.other_secret, &p),
            Err(AuthError::SignatureMismatch)
        );
    }
    let changed = format!("Bearer {}", flipped(&token, BASE64URL, s.flip));
    let got = verify(
        &s.secret,
        &Presented {
            authorization: Some(&changed),
            ..p
        },
    );
    prop_assert!(
        got.is_err(),
        "{token:?} changed to {changed:?} still verifies"
    );
    Ok(())
}

#[test]
fn signing_and_verifying_agree() {
    let mut runner = TestRunner::new(config(SIGNING_CASES));
    runner
        .run(&slot(), |s| {
            query_schemes_agree(&s)?;
            jwt_agrees(&s)
        })
        .unwrap();
}
