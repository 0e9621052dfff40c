//! JWT slots (Prosody mod_http_file_share). Fields, one a line: request path (below
//! `/upload/`), Authorization, Content-Length, Content-Type (no line: none), now.
//!
//! A fuzzed token is accepted only if it is HS256 under our secret and its claims
//! fit the request; a token we sign is accepted, and refused once its size, slot or
//! expiry does not fit, or any one of its characters changes.

use upslot::auth::{AuthError, JwtSlot, Presented, Scheme, Verifier, sign_jwt};
use upslot::path::SlotPath;

use crate::input::{Slot, fields, slot, text};
use crate::query_token::SECRET;

const OTHER_SECRET: &[u8] = b"xep0363-test-secreT";
const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

pub fn check(data: &[u8]) {
    let mut f = fields(data);
    let Some(Slot {
        path,
        token: authorization,
        size,
        content_type,
    }) = slot(&mut f)
    else {
        return;
    };
    let content_type = content_type.filter(|t| !t.is_empty());
    let now = f
        .next()
        .and_then(text)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_767_225_660);
    let p = Presented {
        path: &path,
        query: None,
        content_length: size,
        content_type,
        authorization,
        now,
    };
    check_presented(&p);
    signed_verifies(&p, data.len());
}

fn verifier(secret: &[u8]) -> Verifier {
    Verifier::new(secret, &Scheme::ALL).expect("a non-empty secret")
}

fn check_presented(p: &Presented<'_>) {
    let Ok(grant) = verifier(SECRET).verify(p) else {
        return;
    };
    assert_eq!(grant.scheme, Scheme::Jwt);
    let token = p
        .authorization
        .and_then(|h| h.split_once(' '))
        .map(|(_, t)| t.trim())
        .expect("an Authorization header was accepted");
    let mut parts = token.split('.');
    let (Some(header), Some(payload)) = (parts.next(), parts.next()) else {
        panic!("{token:?} accepted without header and payload");
    };
    let header: serde_json::Value = decode_part(header).expect("an accepted header is JSON");
    assert_eq!(header["alg"], "HS256", "{token:?}");
    let claims: JwtSlot = decode_part(payload).expect("accepted claims parse");
    assert!(claims.exp >= p.now, "expired token accepted");
    assert_eq!(claims.slot, p.path.first_segment());
    assert_eq!(
        (claims.filesize, grant.size),
        (p.content_length, p.content_length)
    );
    assert_eq!(grant.expires, claims.expires);
    assert_eq!(
        verifier(OTHER_SECRET).verify(p),
        Err(AuthError::SignatureMismatch)
    );
}

fn signed_verifies(p: &Presented<'_>, pick: usize) {
    // A slot's URL is `<base>/<slot>/<filename>`.
    let (slot, name) = (p.path.first_segment(), p.path.file_name());
    let raw = format!(
        "/upload/{}/{}",
        SlotPath::encode(slot),
        SlotPath::encode(name)
    );
    let path = SlotPath::parse(&raw, "/upload/").expect("a clean path");
    let p = &Presented { path: &path, ..*p };
    let claims = JwtSlot {
        slot: p.path.first_segment().to_owned(),
        filesize: p.content_length,
        exp: p.now.saturating_add(300),
        iat: Some(p.now),
        filename: Some(p.path.file_name().to_owned()),
        filetype: p.content_type.map(str::to_owned),
        sub: Some("juliet@example.org".to_owned()),
        expires: p.now.checked_add(86_400),
    };
    let token = sign_jwt(SECRET, &claims).expect("HS256 signs anything");
    let bearer = format!("Bearer {token}");
    let signed = Presented {
        authorization: Some(&bearer),
        ..*p
    };
    let grant = verifier(SECRET)
        .verify(&signed)
        .unwrap_or_else(|e| panic!("{token:?} for {:?} refused: {e}", p.path));
    assert_eq!((grant.scheme, grant.size), (Scheme::Jwt, p.content_length));
    assert_eq!(grant.signed_type.as_deref(), p.content_type);
    assert_eq!(grant.expires, claims.expires);
    assert_eq!(grant.uploader.as_deref(), Some("juliet@example.org"));

    let refused = |changed: Presented<'_>, want: AuthError| {
        assert_eq!(verifier(SECRET).verify(&changed), Err(want), "{changed:?}");
    };
    refused(
        Presented {
            content_length: p.content_length.wrapping_add(1),
            ..signed
        },
        AuthError::SizeMismatch,
    );
    if claims.exp < u64::MAX {
        refused(
            Presented {
                now: claims.exp + 1,
                ..signed
            },
            AuthError::Expired,
        );
    }
    let other_slot = SlotPath::parse(
        &format!("/upload/{}x/f", SlotPath::encode(&claims.slot)),
        "/upload/",
    )
    .expect("a clean path");
    refused(
        Presented {
            path: &other_slot,
            ..signed
        },
        AuthError::SlotMismatch,
    );

    // Any one character of the token changed to another base64url character.
    let mut flipped = token.clone().into_bytes();
    let at = pick % flipped.len();
    let old = flipped[at];
    let next = BASE64URL
        .iter()
        .position(|c| *c == old)
        .map_or(b'A', |i| BASE64URL[(i + 1) % 64]);
    flipped[at] = next;
    let flipped = format!("Bearer {}", String::from_utf8(flipped).expect("ASCII"));
    let result = verifier(SECRET).verify(&Presented {
        authorization: Some(&flipped),
        ..signed
    });
    assert!(result.is_err(), "{token:?} changed at {at} still verifies");
}

/// A base64url (unpadded) JWT part, parsed as JSON.
fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in part.bytes() {
        let v = BASE64URL.iter().position(|x| *x == c)? as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    serde_json::from_slice(&out).ok()
}
