//! Slot authorisation: every signing scheme turns a request into one [`Grant`],
//! or an [`AuthError`] that says why not (DESIGN §2).
//!
//! Query tokens take precedence over `Authorization`, and among query tokens only
//! the highest version present is used (`v2`/`token` over `v`): a bad `v2` next to a
//! good `v` is refused rather than downgraded.

mod jwt;
mod query;

use std::fmt;
use std::str::FromStr;

use http::StatusCode;

use crate::path::SlotPath;

pub use self::jwt::{JwtSlot, sign_jwt};
pub use self::query::sign_query;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    V1,
    V2,
    Token,
    Jwt,
}

impl Scheme {
    pub const ALL: [Scheme; 4] = [Scheme::V1, Scheme::V2, Scheme::Token, Scheme::Jwt];

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::V1 => "v1",
            Scheme::V2 => "v2",
            Scheme::Token => "token",
            Scheme::Jwt => "jwt",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Scheme::ALL.into_iter().find(|x| x.as_str() == s).ok_or(())
    }
}

/// What a valid slot allows: one upload of exactly `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub scheme: Scheme,
    pub size: u64,
    /// The type the slot was signed with (v2, token) or names (JWT `filetype`).
    pub signed_type: Option<String>,
    /// JWT `expires`: the latest instant the file may live, in Unix seconds.
    pub expires: Option<u64>,
    /// JWT `sub`: the uploader's bare JID.
    pub uploader: Option<String>,
}

/// The parts of a PUT that a scheme may look at.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub path: &'a SlotPath,
    pub query: Option<&'a str>,
    pub content_length: u64,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    /// Unix seconds, from the service's clock.
    pub now: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("signature mismatch")]
    SignatureMismatch,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("token expired")]
    Expired,
    #[error("scheme disabled")]
    Disabled,
    #[error("slot mismatch")]
    SlotMismatch,
    #[error("size mismatch")]
    SizeMismatch,
}

impl AuthError {
    pub fn status(self) -> StatusCode {
        match self {
            // Prosody answers a filesize mismatch with 413, and so do we.
            AuthError::SizeMismatch => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// A bounded label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::SignatureMismatch => "signature",
            AuthError::Algorithm => "algorithm",
            AuthError::Expired => "expired",
            AuthError::Disabled => "disabled",
            AuthError::SlotMismatch => "slot",
            AuthError::SizeMismatch => "size",
        }
    }
}

/// Checks slots against the shared secret, and against the secrets from
/// before a rotation until their ends. Which one matched is not told: a grant
/// is a grant.
pub struct Verifier {
    current: Key,
    previous: Vec<(Key, u64)>,
    schemes: Vec<Scheme>,
}

struct Key {
    secret: Vec<u8>,
    jwt: jsonwebtoken::DecodingKey,
}

impl Key {
    fn new(secret: &[u8]) -> Result<Key, AuthError> {
        Ok(Key {
            secret: secret.to_vec(),
            jwt: jsonwebtoken::DecodingKey::from_secret(secret)
                .map_err(|_| AuthError::Malformed)?,
        })
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("schemes", &self.schemes)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// `secret` must not be empty (configuration guarantees at least 16 bytes).
    pub fn new(secret: &[u8], schemes: &[Scheme]) -> Result<Verifier, AuthError> {
        Ok(Verifier {
            current: Key::new(secret)?,
            previous: Vec::new(),
            schemes: schemes.to_vec(),
        })
    }

    /// Also accepts slots signed with each of `previous` before its end (Unix
    /// seconds, exclusive).
    pub fn with_previous<'a>(
        mut self,
        previous: impl IntoIterator<Item = (&'a [u8], u64)>,
    ) -> Result<Verifier, AuthError> {
        for (secret, until) in previous {
            self.previous.push((Key::new(secret)?, until));
        }
        Ok(self)
    }

    /// Secrets from before a rotation that are still accepted at `now`.
    pub fn previous_in_effect(&self, now: u64) -> usize {
        self.previous
            .iter()
            .filter(|(_, until)| now < *until)
            .count()
    }

    /// Which scheme a request claims to use, before any checking; `None` if no token.
    pub fn scheme_of(p: &Presented<'_>) -> Option<Scheme> {
        if let Some((scheme, _)) = query::query_token(p.query) {
            return Some(scheme);
        }
        p.authorization.map(|_| Scheme::Jwt)
    }

    pub fn verify(&self, p: &Presented<'_>) -> Result<Grant, AuthError> {
        let scheme = Verifier::scheme_of(p).ok_or(AuthError::Missing)?;
        if !self.schemes.contains(&scheme) {
            return Err(AuthError::Disabled);
        }
        let check = |key: &Key| match scheme {
            Scheme::Jwt => jwt::verify(&key.jwt, p),
            _ => query::verify(&key.secret, p),
        };
        let current = check(&self.current);
        if current != Err(AuthError::SignatureMismatch) {
            return current;
        }
        self.previous
            .iter()
            .filter(|(_, until)| p.now < *until)
            .map(|(key, _)| check(key))
            .find(|r| *r != Err(AuthError::SignatureMismatch))
            .unwrap_or(current)
    }
}
