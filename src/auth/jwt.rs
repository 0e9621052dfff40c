//! Prosody 0.12+ mod_http_file_share in external mode: an HS256 JWT in
//! `Authorization: Bearer`. The signature is checked over the bytes received (claim
//! order varies between Prosody runs, so re-serialising would break it), `alg` is
//! pinned to HS256, and the clock is the service's, not the library's.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, Grant, Presented, Scheme};

/// The claims Prosody puts in an upload token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JwtSlot {
    pub slot: String,
    pub filesize: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filetype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    // Expiry is checked below against the service's clock.
    v.validate_exp = false;
    v.validate_aud = false;
    v.leeway = 0;
    v
}

pub(super) fn verify(key: &DecodingKey, p: &Presented<'_>) -> Result<Grant, AuthError> {
    let header = p.authorization.ok_or(AuthError::Missing)?;
    let token = bearer(header).ok_or(AuthError::Malformed)?;
    let data =
        jsonwebtoken::decode::<JwtSlot>(token, key, &validation()).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::SignatureMismatch,
            ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
            _ => AuthError::Malformed,
        })?;
    let claims = data.claims;
    if claims.exp < p.now {
        return Err(AuthError::Expired);
    }
    // Prosody's URL is `<base>/<slot>/<filename>`, and a slot is for one file:
    // no deeper paths, and the name is the one the token was issued for.
    let (slot, name) = p
        .path
        .as_str()
        .split_once('/')
        .ok_or(AuthError::SlotMismatch)?;
    if claims.slot != slot || name.contains('/') {
        return Err(AuthError::SlotMismatch);
    }
    if claims.filename.as_deref().is_some_and(|f| f != name) {
        return Err(AuthError::SlotMismatch);
    }
    if claims.filesize != p.content_length {
        return Err(AuthError::SizeMismatch);
    }
    let signed_type = claims
        .filetype
        .filter(|t| !t.is_empty())
        .or_else(|| p.content_type.map(str::to_owned));
    Ok(Grant {
        scheme: Scheme::Jwt,
        size: claims.filesize,
        signed_type,
        expires: claims.expires,
        uploader: claims.sub.filter(|s| !s.is_empty()),
    })
}

fn bearer(header: &str) -> Option<&str> {
    let (word, token) = header.split_once(' ')?;
    let token = token.trim();
    (word.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// An HS256 token as Prosody would issue it, for `upslot sign` and tests.
pub fn sign_jwt(secret: &[u8], claims: &JwtSlot) -> Result<String, jsonwebtoken::errors::Error> {
    let key = EncodingKey::from_secret(secret)?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
}
