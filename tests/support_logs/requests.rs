//! How the workload talks to the service, and what it remembers: every request
//! goes out with distinctive headers, and every name, path, query and token it
//! signs is recorded as a secret that no log line may hold.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use upslot::auth::{JwtSlot, Scheme, sign_jwt, sign_query};
use upslot::path::SlotPath;

use super::now;
use crate::common::{self, Response};

/// Request headers: (name, value).
pub type Headers<'a> = &'a [(&'a str, &'a str)];

// Request headers with distinctive values; none may reach a log line.
pub const USER_AGENT: &str = "Mozilla/5.0 (UAx4q distinctive agent) Conversations/2.17";
pub const REFERER: &str = "https://Rf4q-referer.example/chat?room=Rf4q-room";
pub const COOKIE: &str = "sid=Ck2z-cookie-value; theme=Ck2z-dark";
pub const ORIGIN: &str = "https://Og3w-origin.example";
pub const JID: &str = "romeo-Jb8q@example.org";
/// Sent with every request (the HTTP/2 one has no Origin).
const DISTINCTIVE: [(&str, &str); 4] = [
    ("user-agent", USER_AGENT),
    ("referer", REFERER),
    ("cookie", COOKIE),
    ("origin", ORIGIN),
];
/// Forwarding headers on requests that are not refused slots: never logged.
const PROXY_NOISE: [(&str, &str); 2] = [
    ("x-forwarded-for", "198.51.100.99"),
    ("forwarded", "for=198.51.100.98;proto=https"),
];
/// The body of every upload.
pub const BODY: &[u8] = b"Zq9 body: twenty-four bytes";
pub const SIZE: u64 = BODY.len() as u64;
/// The type every JWT slot is signed for.
const JWT_TYPE: &str = "image/png";

/// How a PUT is signed.
#[derive(Clone, Copy, Debug)]
pub enum Credential {
    /// A query for `size` bytes of a content type, signed with a key.
    Query(Scheme, &'static str, u64, Option<&'static str>),
    /// A bearer JWT for `SIZE` bytes of `JWT_TYPE`, signed with a key, expiring
    /// this many seconds from now (in the past when negative).
    Jwt(&'static str, i64),
    /// A query string sent as it is.
    Literal(&'static str),
    None,
}

impl Credential {
    /// The type the slot was signed for, which an upload sends as its
    /// Content-Type (a refused slot sends only the headers its row names).
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Credential::Query(_, _, _, ctype) => ctype,
            Credential::Jwt(..) => Some(JWT_TYPE),
            Credential::Literal(_) | Credential::None => None,
        }
    }
}

/// The failure line a refused slot must leave: its scheme and reason, and the
/// address it names when 127.0.0.1 is a trusted proxy.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub scheme: &'static str,
    pub reason: &'static str,
    pub via_proxy: &'static str,
}

#[derive(Debug, Default)]
pub struct Workload {
    /// Requests that reached the service's router (one `request` line each).
    pub requests: usize,
    pub uploads: usize,
    pub failures: Vec<Failure>,
    /// Strings that must appear in no log line: names, paths, queries, tokens...
    pub secrets: Vec<String>,
}

impl Workload {
    pub fn secret(&mut self, s: impl Into<String>) {
        let s = s.into();
        assert!(!s.is_empty());
        self.secrets.push(s);
    }

    /// A path below base_path: the path itself, its encoded forms, its segments.
    fn secret_path(&mut self, path: &str) {
        let encoded = SlotPath::encode(path);
        self.secret(path);
        self.secret(lower_hex(&encoded));
        for segment in path.split('/') {
            self.secret(segment);
            self.secret(SlotPath::encode(segment));
        }
        self.secret(encoded);
    }

    /// The query string and the token in it.
    pub fn secret_query(&mut self, query: &str) {
        self.secret(query);
        let token = query.split_once('=').unwrap().1;
        self.secret(token);
        self.secret(&token[..16]);
    }

    fn secret_jwt(&mut self, jwt: &str) {
        self.secret(jwt);
        for part in jwt.split('.').skip(1) {
            self.secret(part);
        }
    }

    /// The target of a PUT of `path` and its Authorization value, if any; all
    /// of it secret.
    pub fn sign(&mut self, path: &str, credential: Credential) -> (String, Option<String>) {
        self.secret_path(path);
        match credential {
            Credential::Query(scheme, key, size, ctype) => {
                let query = sign_query(scheme, key.as_bytes(), path, size, ctype).unwrap();
                self.secret_query(&query);
                (format!("{}?{query}", target(path)), None)
            }
            Credential::Jwt(key, ttl) => {
                let exp = now().checked_add_signed(ttl).unwrap();
                let token = jwt(key, path, exp);
                self.secret_jwt(&token);
                (target(path), Some(format!("Bearer {token}")))
            }
            Credential::Literal(query) => {
                self.secret(query);
                (format!("{}?{query}", target(path)), None)
            }
            Credential::None => (target(path), None),
        }
    }

    /// A request from an ordinary client behind the (maybe trusted) proxy.
    pub async fn ok(
        &mut self,
        addr: SocketAddr,
        method: Method,
        target: &str,
        headers: Headers<'_>,
        body: &[u8],
    ) -> Response {
        self.requests += 1;
        let all = [&DISTINCTIVE[..], &PROXY_NOISE, headers].concat();
        common::request(addr, method, target, &all, body.to_vec()).await
    }

    /// A PUT that must be refused: its own forwarding headers, if any, and no
    /// proxy's, so that the failure line names the client it should.
    pub async fn refused(
        &mut self,
        addr: SocketAddr,
        target: &str,
        headers: Headers<'_>,
    ) -> Response {
        self.requests += 1;
        let all = [&DISTINCTIVE[..], headers].concat();
        common::request(addr, Method::PUT, target, &all, BODY.to_vec()).await
    }

    /// Sends bytes as they are; `counted` if the request reaches the router.
    pub async fn raw(&mut self, addr: SocketAddr, bytes: &[u8], counted: bool) -> String {
        self.requests += usize::from(counted);
        common::raw(addr, bytes, Duration::from_secs(10)).await
    }
}

/// The Authorization header that [`Workload::sign`] asked for, if any.
pub fn authorization(bearer: &Option<String>) -> Vec<(&str, &str)> {
    bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect()
}

fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        out.push_str(&rest[i..i + 3].to_ascii_lowercase());
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    out
}

pub fn target(path: &str) -> String {
    format!("/upload/{}", SlotPath::encode(path))
}

/// A JWT for `SIZE` bytes of `JWT_TYPE` at `path`, signed with `key`.
fn jwt(key: &str, path: &str, exp: u64) -> String {
    let (slot, name) = path.split_once('/').unwrap();
    let claims = JwtSlot {
        slot: slot.to_owned(),
        filesize: SIZE,
        exp,
        iat: Some(now()),
        filename: Some(name.to_owned()),
        filetype: Some(JWT_TYPE.to_owned()),
        sub: Some(JID.to_owned()),
        expires: None,
    };
    sign_jwt(key.as_bytes(), &claims).unwrap()
}

pub async fn h2_get(addr: SocketAddr, target: &str) -> StatusCode {
    let headers: Vec<(&str, &str)> = DISTINCTIVE[..3]
        .iter()
        .chain(&PROXY_NOISE)
        .copied()
        .collect();
    common::h2_get(addr, target, &headers).await.status
}
