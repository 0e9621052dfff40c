//! HTTP pieces that no handler owns alone: response bodies, CORS, RFC 9110
//! preconditions and ranges, and RFC 8187 `Content-Disposition`.

pub mod body;
pub mod conditional;
pub mod cors;
pub mod disposition;
pub mod range;
