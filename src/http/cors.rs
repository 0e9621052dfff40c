//! CORS for browser clients (Converse.js, Movim): preflights need no token, and
//! every response names the allowed origin exactly once (DESIGN §3).
//!
//! Written here rather than taken from tower-http because the contract asks for a
//! 204 preflight on any path and the same headers on every response, errors
//! included; that is a dozen lines without a tower stack around hyper.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ALLOW, VARY,
};
use http::{HeaderMap, HeaderValue};

use crate::config::AllowOrigins;

pub const METHODS: &str = "GET, HEAD, PUT, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type";
const EXPOSE_HEADERS: &str =
    "Content-Length, Content-Range, ETag, Content-Disposition, Accept-Ranges";
const MAX_AGE: &str = "86400";

/// Adds the CORS headers every response carries.
pub fn decorate(response: &mut HeaderMap, origin: Option<&HeaderValue>, allowed: &AllowOrigins) {
    match allowed {
        AllowOrigins::Any => {
            response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        AllowOrigins::List(list) => {
            response.append(VARY, HeaderValue::from_static("Origin"));
            if let Some(origin) =
                origin.filter(|o| list.iter().any(|a| a.as_bytes() == o.as_bytes()))
            {
                response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            }
        }
    }
    response.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
}

/// The headers of a 204 answer to `OPTIONS` (decorate adds the origin).
pub fn preflight(response: &mut HeaderMap) {
    response.insert(ALLOW, HeaderValue::from_static(METHODS));
    response.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    response.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    response.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
}
