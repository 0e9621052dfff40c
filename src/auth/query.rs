//! The query-string schemes: Prosody mod_http_upload_external `v` (also ejabberd's
//! `external_secret`) and `v2`, and Metronome's `token` (the same string as `v2`).
//! Each is a lowercase-hex HMAC-SHA256 over the signed path and the size (and type).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{AuthError, Grant, Presented, Scheme};

type HmacSha256 = Hmac<Sha256>;

/// Prosody signs this type when the slot request named none.
const DEFAULT_TYPE: &str = "application/octet-stream";

/// The highest-version token in the query, if any.
pub(super) fn query_token(query: Option<&str>) -> Option<(Scheme, &str)> {
    let mut best: Option<(Scheme, &str)> = None;
    for pair in query?.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let scheme = match key {
            "v2" => Scheme::V2,
            "token" => Scheme::Token,
            "v" => Scheme::V1,
            _ => continue,
        };
        let rank = |s: Scheme| match s {
            Scheme::V2 => 3,
            Scheme::Token => 2,
            _ => 1,
        };
        if best.is_none_or(|(b, _)| rank(scheme) > rank(b)) {
            best = Some((scheme, value));
        }
    }
    best
}

fn message(scheme: Scheme, path: &str, size: u64, content_type: Option<&str>) -> Vec<u8> {
    match scheme {
        Scheme::V1 => format!("{path} {size}").into_bytes(),
        _ => format!("{path}\0{size}\0{}", content_type.unwrap_or(DEFAULT_TYPE)).into_bytes(),
    }
}

fn mac(secret: &[u8], msg: &[u8]) -> HmacSha256 {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac
}

pub(super) fn verify(secret: &[u8], p: &Presented<'_>) -> Result<Grant, AuthError> {
    let (scheme, token) = query_token(p.query).ok_or(AuthError::Missing)?;
    let tag = hex::decode(token).map_err(|_| AuthError::Malformed)?;
    if tag.len() != 32 {
        return Err(AuthError::Malformed);
    }
    let msg = message(scheme, p.path.as_str(), p.content_length, p.content_type);
    mac(secret, &msg)
        .verify_slice(&tag)
        .map_err(|_| AuthError::SignatureMismatch)?;
    let signed_type = match scheme {
        Scheme::V1 => None,
        _ => Some(p.content_type.unwrap_or(DEFAULT_TYPE).to_owned()),
    };
    Ok(Grant {
        scheme,
        size: p.content_length,
        signed_type,
        expires: None,
        uploader: None,
    })
}

/// The query string (without `?`) that signs an upload of `path` (decoded, below
/// `base_path`); what an XMPP server would put in the slot's PUT URL.
pub fn sign_query(
    scheme: Scheme,
    secret: &[u8],
    path: &str,
    size: u64,
    content_type: Option<&str>,
) -> Option<String> {
    let key = match scheme {
        Scheme::V1 => "v",
        Scheme::V2 => "v2",
        Scheme::Token => "token",
        Scheme::Jwt => return None,
    };
    let msg = message(scheme, path, size, content_type);
    let tag = hex::encode(mac(secret, &msg).finalize().into_bytes());
    Some(format!("{key}={tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_version_wins_whatever_the_order() {
        let q = Some("v=aa&v2=bb");
        assert_eq!(query_token(q), Some((Scheme::V2, "bb")));
        let q = Some("v2=bb&v=aa");
        assert_eq!(query_token(q), Some((Scheme::V2, "bb")));
        let q = Some("token=cc&v=aa");
        assert_eq!(query_token(q), Some((Scheme::Token, "cc")));
        assert_eq!(query_token(Some("x=1")), None);
        assert_eq!(query_token(None), None);
    }
}
