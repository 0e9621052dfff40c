//! The query-string schemes (v1, v2, token). Fields, one a line: request path (below
//! `/upload/`), query, Content-Length, Content-Type (no line: none).
//!
//! A fuzzed query is accepted only if it carries exactly the token we would sign,
//! and only under the highest scheme present; a token we sign for the same request
//! is accepted, and refused once the size or the signed type changes.

use upslot::auth::{AuthError, Presented, Scheme, Verifier, sign_query};

use crate::input::{Slot, fields, slot};

pub const SECRET: &[u8] = b"xep0363-test-secret";
const OTHER_SECRET: &[u8] = b"xep0363-test-secreT";
const DEFAULT_TYPE: &str = "application/octet-stream";

pub fn check(data: &[u8]) {
    let mut f = fields(data);
    let Some(Slot {
        path,
        token: query,
        size,
        content_type,
    }) = slot(&mut f)
    else {
        return;
    };
    let p = Presented {
        path: &path,
        query,
        content_length: size,
        content_type,
        authorization: None,
        now: 0,
    };
    check_presented(&p);
    for scheme in [Scheme::V1, Scheme::V2, Scheme::Token] {
        signed_verifies(&p, scheme);
    }
}

fn verifier(secret: &[u8], schemes: &[Scheme]) -> Verifier {
    Verifier::new(secret, schemes).expect("a non-empty secret")
}

fn check_presented(p: &Presented<'_>) {
    let Ok(grant) = verifier(SECRET, &Scheme::ALL).verify(p) else {
        return;
    };
    let query = p.query.expect("a query token was accepted");
    assert_eq!(Verifier::scheme_of(p), Some(grant.scheme));
    assert_eq!(grant.size, p.content_length);
    let (key, want) = sign_query(
        grant.scheme,
        SECRET,
        p.path.as_str(),
        p.content_length,
        p.content_type,
    )
    .expect("a query scheme")
    .split_once('=')
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .expect("key=value");
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    assert!(
        pairs
            .iter()
            .any(|(k, v)| *k == key && v.eq_ignore_ascii_case(&want)),
        "{query:?} accepted without the token {key}={want}"
    );
    // Never a fall-back: a v2 or token next to the accepted one would have won.
    let outranks: &[&str] = match grant.scheme {
        Scheme::V1 => &["v2", "token"],
        Scheme::Token => &["v2"],
        _ => &[],
    };
    assert!(
        !pairs.iter().any(|(k, _)| outranks.contains(k)),
        "{query:?} accepted as {}",
        grant.scheme
    );
    match grant.scheme {
        Scheme::V1 => assert_eq!(grant.signed_type, None),
        _ => assert_eq!(
            grant.signed_type.as_deref(),
            Some(p.content_type.unwrap_or(DEFAULT_TYPE))
        ),
    }
    assert_eq!(
        verifier(OTHER_SECRET, &Scheme::ALL).verify(p),
        Err(AuthError::SignatureMismatch)
    );
    let others: Vec<Scheme> = Scheme::ALL
        .into_iter()
        .filter(|s| *s != grant.scheme)
        .collect();
    assert_eq!(
        verifier(SECRET, &others).verify(p),
        Err(AuthError::Disabled)
    );
}

/// Signing and verifying agree, and the signature covers size and (v2, token) type.
fn signed_verifies(p: &Presented<'_>, scheme: Scheme) {
    let path = p.path.as_str();
    let query =
        sign_query(scheme, SECRET, path, p.content_length, p.content_type).expect("a query scheme");
    let signed = Presented {
        query: Some(&query),
        ..*p
    };
    let grant = verifier(SECRET, &Scheme::ALL)
        .verify(&signed)
        .unwrap_or_else(|e| panic!("{scheme} slot for {path:?} refused: {e}"));
    assert_eq!((grant.scheme, grant.size), (scheme, p.content_length));
    let resized = Presented {
        content_length: p.content_length.wrapping_add(1),
        ..signed
    };
    assert_eq!(
        verifier(SECRET, &Scheme::ALL).verify(&resized),
        Err(AuthError::SignatureMismatch)
    );
    let other_type = format!("{}+x", p.content_type.unwrap_or(DEFAULT_TYPE));
    let retyped = Presented {
        content_type: Some(&other_type),
        ..signed
    };
    let retyped = verifier(SECRET, &Scheme::ALL).verify(&retyped);
    match scheme {
        Scheme::V1 => assert!(retyped.is_ok(), "v1 does not sign the type"),
        _ => assert_eq!(retyped, Err(AuthError::SignatureMismatch)),
    }
}
