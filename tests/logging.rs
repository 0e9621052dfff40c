//! What the logs keep (DESIGN §6, README "Logs and privacy"), proved on the real
//! binary: `upslot serve` at `UPSLOT_LOG=debug`, stderr in a file, a realistic
//! workload over real sockets, SIGTERM, then every line of the log is read.
//!
//! The promise: no file names, paths, query strings, tokens, secrets, User-Agent,
//! Referer or Cookie values at any level; a client address only in the one
//! `authorization failed` line per refused slot (honouring `trusted_proxies`, or
//! none with `[log] failed_auth_ip = false`). The operator files in `deploy/` are
//! checked against the same logs: the fail2ban filter with `fail2ban-regex`, the
//! jail with `fail2ban-client -t`, the logrotate file with `logrotate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use upslot::auth::{JwtSlot, Scheme, sign_jwt, sign_query};
use upslot::path::SlotPath;

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const FILTER: &str = "deploy/fail2ban/filter.d/upslot.conf";
const JAIL: &str = "deploy/fail2ban/jail.d/upslot.conf";
const LOGROTATE: &str = "deploy/logrotate/upslot";

const SECRET: &str = "Sx7q-logging-secret-0123";
const OTHER_SECRET: &str = "Oy6w-not-the-secret-4567";
const PEER: &str = "127.0.0.1";

// Request headers with distinctive values; none may reach a log line.
const USER_AGENT: &str = "Mozilla/5.0 (UAx4q distinctive agent) Conversations/2.17";
const REFERER: &str = "https://Rf4q-referer.example/chat?room=Rf4q-room";
const COOKIE: &str = "sid=Ck2z-cookie-value; theme=Ck2z-dark";
const ORIGIN: &str = "https://Og3w-origin.example";
const JID: &str = "romeo-Jb8q@example.org";
/// Forwarding headers on requests that are not refused slots: never logged.
const PROXY_NOISE: [(&str, &str); 2] = [
    ("x-forwarded-for", "198.51.100.99"),
    ("forwarded", "for=198.51.100.98;proto=https"),
];
/// Every address the workload puts in a forwarding header.
const FORWARDED_ADDRS: [&str; 9] = [
    "198.51.100.23",
    "198.51.100.24",
    "2001:db8::23",
    "203.0.113.77",
    "198.51.100.25",
    "198.51.100.26",
    "198.51.100.27",
    "198.51.100.98",
    "198.51.100.99",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

/// How the service is told to treat client addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Defaults: the peer (127.0.0.1) is not a trusted proxy.
    Untrusted,
    /// `trusted_proxies = ["127.0.0.1/32"]`: forwarding headers are believed.
    Trusted,
    /// `failed_auth_ip = false` (with 127.0.0.1 trusted, so that a forwarded
    /// address would show if the switch were ignored).
    NoAddress,
}

impl Scenario {
    fn config(self) -> &'static str {
        match self {
            Scenario::Untrusted => "",
            Scenario::Trusted | Scenario::NoAddress => "trusted_proxies = [\"127.0.0.1/32\"]\n",
        }
    }

    fn log_section(self) -> &'static str {
        match self {
            Scenario::NoAddress => "failed_auth_ip = false\n",
            _ => "",
        }
    }
}

// ---------------------------------------------------------------------------
// The real binary

struct Running {
    child: Child,
    addr: SocketAddr,
    /// Config, data, stdout and the log; handed to the [`Log`] at the end.
    dir: Option<tempfile::TempDir>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(format: Format, scenario: Scenario) -> Running {
    start_in(common::tempdir(), format, scenario)
}

/// Starts on `dir` (which may hold the data of an earlier run).
fn start_in(dir: tempfile::TempDir, format: Format, scenario: Scenario) -> Running {
    let config = dir.path().join("upslot.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             data_dir = \"{data}\"\n\
             secret = \"{SECRET}\"\n\
             min_free_space = \"0\"\n\
             fsync = false\n\
             {extra}\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nformat = \"{format}\"\n{log}",
            data = dir.path().join("data").display(),
            extra = scenario.config(),
            format = format.name(),
            log = scenario.log_section(),
        ),
    )
    .unwrap();
    let stdout = dir.path().join("stdout.log");
    let mut child = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .env("UPSLOT_LOG", "debug")
        .env_remove("UPSLOT_SECRET")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(dir.path().join("upslot.log")).unwrap())
        .spawn()
        .unwrap();
    let mut addr = None;
    for _ in 0..400 {
        let banner = std::fs::read_to_string(&stdout).unwrap_or_default();
        addr = banner
            .lines()
            .find_map(|l| l.strip_prefix("upslot listening on http://"))
            .map(|rest| rest.split('/').next().unwrap().parse().unwrap());
        if addr.is_some() {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.path().join("upslot.log")).unwrap();
            panic!("upslot exited at start ({status}): {log}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Running {
        addr: addr.expect("the banner names the address within 10 s"),
        child,
        dir: Some(dir),
    }
}

impl Running {
    /// SIGTERM, wait (bounded) for a clean exit, and read what it logged.
    fn stop(mut self, format: Format) -> Log {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut exit = None;
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                exit = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let dir = self.dir.take().unwrap();
        let path = dir.path().join("upslot.log");
        let text = std::fs::read_to_string(&path).unwrap();
        let exit = exit.expect("upslot exits within 10 s of SIGTERM");
        assert!(exit.success(), "{exit}: {text}");
        Log {
            format,
            lines: text.lines().map(str::to_owned).collect(),
            path,
            stdout: std::fs::read_to_string(dir.path().join("stdout.log")).unwrap(),
            listen: self.addr.to_string(),
            dir: Some(dir),
        }
    }
}

// ---------------------------------------------------------------------------
// The log as written

struct Log {
    format: Format,
    lines: Vec<String>,
    /// The file the service wrote (stderr), for fail2ban-regex.
    path: PathBuf,
    stdout: String,
    /// The service's own address, which the `listening` line names.
    listen: String,
    /// The run's directory (data included), kept alive with the log.
    dir: Option<tempfile::TempDir>,
}

impl Log {
    fn json(line: &str) -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn level(&self, line: &str) -> String {
        match self.format {
            Format::Json => Log::json(line)["level"].as_str().unwrap().to_owned(),
            Format::Text => line.split_whitespace().nth(1).unwrap().to_owned(),
        }
    }

    fn target(&self, line: &str) -> String {
        match self.format {
            Format::Json => Log::json(line)["target"].as_str().unwrap().to_owned(),
            Format::Text => line
                .split_whitespace()
                .nth(2)
                .unwrap()
                .trim_end_matches(':')
                .to_owned(),
        }
    }

    /// The event's message, with the fields that follow it in text format.
    fn message(&self, line: &str) -> String {
        match self.format {
            Format::Json => Log::json(line)["message"].as_str().unwrap().to_owned(),
            // `<time> <LEVEL> <target>: <message> <fields>`; the time has no ": ".
            Format::Text => line.split_once(": ").unwrap().1.trim().to_owned(),
        }
    }

    fn is(&self, line: &str, message: &str) -> bool {
        let m = self.message(line);
        m == message || m.starts_with(&format!("{message} "))
    }

    /// A field's value, quotes removed (the text formatter quotes strings).
    fn field(&self, line: &str, name: &str) -> Option<String> {
        match self.format {
            Format::Json => Log::json(line).get(name).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            Format::Text => {
                let start = line.find(&format!(" {name}="))? + name.len() + 2;
                let value = line[start..].split(' ').next().unwrap();
                Some(value.trim_matches('"').to_owned())
            }
        }
    }

    fn with(&self, message: &str) -> Vec<&String> {
        self.lines.iter().filter(|l| self.is(l, message)).collect()
    }

    fn dump(&self) -> String {
        self.lines.join("\n")
    }

    /// The same log without its directory (for altered copies).
    fn clone_shallow(&self) -> Log {
        Log {
            format: self.format,
            lines: self.lines.clone(),
            path: self.path.clone(),
            stdout: self.stdout.clone(),
            listen: self.listen.clone(),
            dir: None,
        }
    }
}

// ---------------------------------------------------------------------------
// The workload

/// A refused slot, and the address the failure line must name when 127.0.0.1
/// is a trusted proxy.
#[derive(Debug)]
struct Failure {
    scheme: &'static str,
    reason: &'static str,
    via_proxy: &'static str,
}

#[derive(Debug, Default)]
struct Workload {
    /// Requests that reached the service's router (one `request` line each).
    requests: usize,
    uploads: usize,
    failures: Vec<Failure>,
    /// Strings that must appear in no log line: names, paths, queries, tokens...
    secrets: Vec<String>,
}

impl Workload {
    fn secret(&mut self, s: impl Into<String>) {
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
    fn secret_query(&mut self, query: &str) {
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

    async fn send(
        &mut self,
        addr: SocketAddr,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> common::Response {
        let mut all = vec![
            ("user-agent", USER_AGENT),
            ("referer", REFERER),
            ("cookie", COOKIE),
            ("origin", ORIGIN),
        ];
        all.extend_from_slice(headers);
        self.requests += 1;
        common::request(addr, method, target, &all, body.to_vec()).await
    }

    /// A request from an ordinary client behind the (maybe trusted) proxy.
    async fn ok(
        &mut self,
        addr: SocketAddr,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> common::Response {
        let mut all = PROXY_NOISE.to_vec();
        all.extend_from_slice(headers);
        self.send(addr, method, target, &all, body).await
    }

    /// Sends bytes as they are; `counted` if the request reaches the router.
    async fn raw(&mut self, addr: SocketAddr, bytes: &[u8], counted: bool) -> String {
        self.requests += usize::from(counted);
        common::raw(addr, bytes, Duration::from_secs(10)).await
    }
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn target(path: &str) -> String {
    format!("/upload/{}", SlotPath::encode(path))
}

fn jwt(secret: &str, path: &str, size: u64, filetype: &str, exp: u64) -> String {
    let (slot, name) = path.split_once('/').unwrap();
    let claims = JwtSlot {
        slot: slot.to_owned(),
        filesize: size,
        exp,
        iat: Some(now()),
        filename: Some(name.to_owned()),
        filetype: Some(filetype.to_owned()),
        sub: Some(JID.to_owned()),
        expires: None,
    };
    sign_jwt(secret.as_bytes(), &claims).unwrap()
}

async fn h2_get(addr: SocketAddr, target: &str) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{target}"));
    for (k, v) in [
        ("user-agent", USER_AGENT),
        ("referer", REFERER),
        ("cookie", COOKIE),
    ]
    .into_iter()
    .chain(PROXY_NOISE)
    {
        req = req.header(k, v);
    }
    let res = tokio::time::timeout(
        Duration::from_secs(30),
        sender.send_request(req.body(Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("h2 response within 30 s")
    .unwrap();
    res.status()
}

/// Uploads with every scheme, downloads of every kind, errors of every kind,
/// and six refused slots, each with its own forwarding headers.
async fn workload(addr: SocketAddr) -> Workload {
    let mut w = Workload::default();
    w.secret(SECRET);
    w.secret(OTHER_SECRET);
    for marker in ["UAx4q", "Rf4q", "Ck2z", "Og3w", "Jb8q", USER_AGENT, REFERER] {
        w.secret(marker);
    }
    w.secret(COOKIE);
    w.secret(ORIGIN);
    w.secret(JID);
    // Markers that every name and path below carries.
    for marker in [
        "Zq9", "Wx7", "Tk5", "Jv5", "Kq3", "Nf6", "Pz8", "Gx5", "Ex4",
    ] {
        w.secret(marker);
    }

    // --- uploads: v1, v2, token, jwt; ASCII and non-ASCII names
    let v1 = "Kq3slotA1/Zq9-secret-name (1).txt";
    let v2 = "Kq3slotB2/Wx7-Grüße-Привет 🎉.txt";
    let token = "Kq3slotC3/Tk5 naïve résumé.pdf";
    let jwt_path = "Kq3slotD4/Jv5-jwt-名前.png";
    let body = b"Zq9 body: twenty-four bytes";
    let mut v1_query = String::new();
    for (scheme, path, ctype) in [
        (Scheme::V1, v1, None),
        (Scheme::V2, v2, Some("text/plain")),
        (Scheme::Token, token, Some("application/pdf")),
    ] {
        let query = sign_query(scheme, SECRET.as_bytes(), path, body.len() as u64, ctype).unwrap();
        w.secret_path(path);
        w.secret_query(&query);
        let mut headers = vec![];
        if let Some(t) = ctype {
            headers.push(("content-type", t));
        }
        let put_target = format!("{}?{query}", target(path));
        let r = w.ok(addr, Method::PUT, &put_target, &headers, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{scheme}: {}", r.text());
        if scheme == Scheme::V1 {
            v1_query = put_target;
        }
    }
    let token_jwt = jwt(
        SECRET,
        jwt_path,
        body.len() as u64,
        "image/png",
        now() + 300,
    );
    w.secret_path(jwt_path);
    w.secret_jwt(&token_jwt);
    let bearer = format!("Bearer {token_jwt}");
    let r = w
        .ok(
            addr,
            Method::PUT,
            &target(jwt_path),
            &[("authorization", &bearer), ("content-type", "image/png")],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "jwt: {}", r.text());
    w.uploads = 4;

    // --- downloads
    let r = w.ok(addr, Method::GET, &target(v1), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], body);
    let etag = r.header("etag").unwrap().to_owned();
    let r = w.ok(addr, Method::HEAD, &target(v2), &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = w
        .ok(
            addr,
            Method::GET,
            &target(token),
            &[("range", "bytes=0-1")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let r = w
        .ok(
            addr,
            Method::GET,
            &target(jwt_path),
            &[("range", "bytes=-3")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let r = w
        .ok(
            addr,
            Method::GET,
            &target(v1),
            &[("if-none-match", &etag)],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = w
        .ok(
            addr,
            Method::GET,
            &target(v2),
            &[("range", "bytes=9999-")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    w.requests += 1;
    assert_eq!(h2_get(addr, &target(v2)).await, StatusCode::OK);
    let r = w
        .ok(
            addr,
            Method::OPTIONS,
            &target(v1),
            &[("access-control-request-method", "PUT")],
            b"",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    // --- errors that are not refused slots
    let r = w.ok(addr, Method::PUT, &v1_query, &[], body).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    for missing in ["/upload/Nf6-missing/Nf6-file.txt", "/Nf6-outside/Nf6-x.txt"] {
        w.secret(missing);
        let r = w.ok(addr, Method::GET, missing, &[], b"").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{missing}");
    }
    for method in ["POST", "DELETE", "PROPFIND"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = w.ok(addr, method, &target(v1), &[], b"").await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    for attack in [
        "/upload/Pz8a/../../etc/passwd",
        "/upload/Pz8b/%2e%2e/%2E%2E/etc/shadow",
        "/upload/Pz8c%2F..%2Fsecret/x.txt",
        "/upload/Pz8d/%00.txt",
        "/upload/Pz8e/%FF%FE.txt",
        "/upload/Pz8f//double.txt",
        "/upload/./Pz8g/x.txt",
        "/Pz8h/../upload/x.txt",
    ] {
        w.secret(attack);
        let r = w.ok(addr, Method::GET, attack, &[], b"").await;
        assert!(
            matches!(r.status.as_u16(), 400 | 404),
            "{attack}: {}",
            r.status
        );
    }
    // A PUT to a bad path with a token: refused as a path, not as a slot.
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), "Pz8i/../x", 3, None).unwrap();
    w.secret_query(&query);
    let r = w
        .ok(
            addr,
            Method::PUT,
            &format!("/upload/Pz8i/../x?{query}"),
            &[],
            b"abc",
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // 411 (chunked) and 413 (too large, valid signature), on raw connections.
    let path = "Kq3slotE5/Ex4-chunked.txt";
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), path, 5, None).unwrap();
    w.secret_path(path);
    w.secret_query(&query);
    let chunked = format!(
        "PUT {}?{query} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {USER_AGENT}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        target(path)
    );
    let answer = w.raw(addr, chunked.as_bytes(), true).await;
    assert_eq!(common::raw_status(&answer), Some(411), "{answer}");
    let huge = 200 * 1024 * 1024;
    let path = "Kq3slotE6/Ex4-huge.bin";
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), path, huge, None).unwrap();
    w.secret_path(path);
    w.secret_query(&query);
    let too_large = format!(
        "PUT {}?{query} HTTP/1.1\r\nHost: {addr}\r\nReferer: {REFERER}\r\n\
         Content-Length: {huge}\r\nConnection: close\r\n\r\n",
        target(path)
    );
    let answer = w.raw(addr, too_large.as_bytes(), true).await;
    assert_eq!(common::raw_status(&answer), Some(413), "{answer}");
    // An unknown method reaches the router; bytes that are not HTTP do not.
    let answer = w
        .raw(
            addr,
            b"GX5METHOD /upload/Gx5-ext/Gx5.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            true,
        )
        .await;
    assert_eq!(common::raw_status(&answer), Some(405), "{answer}");
    let answer = w
        .raw(addr, b"\x16\x03\x01 Gx5-garbage /Gx5 \r\n\r\n", false)
        .await;
    assert_eq!(common::raw_status(&answer), Some(400), "{answer}");

    // --- refused slots, each carrying its own forwarding headers
    // 1. v1, wrong signature (signed for another size).
    let path = "Kq3slotF1/Zq9-fail-one.txt";
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), path, 999, None).unwrap();
    w.secret_path(path);
    w.secret_query(&query);
    let r = w
        .send(
            addr,
            Method::PUT,
            &format!("{}?{query}", target(path)),
            &[("x-forwarded-for", "198.51.100.23")],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.failures.push(Failure {
        scheme: "v1",
        reason: "signature",
        via_proxy: "198.51.100.23",
    });
    // 2. v2, signed with another secret.
    let path = "Kq3slotF2/Wx7-fail-two ü.txt";
    let query = sign_query(
        Scheme::V2,
        OTHER_SECRET.as_bytes(),
        path,
        body.len() as u64,
        Some("text/plain"),
    )
    .unwrap();
    w.secret_path(path);
    w.secret_query(&query);
    let r = w
        .send(
            addr,
            Method::PUT,
            &format!("{}?{query}", target(path)),
            &[
                ("content-type", "text/plain"),
                ("forwarded", "for=198.51.100.24;proto=https"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.failures.push(Failure {
        scheme: "v2",
        reason: "signature",
        via_proxy: "198.51.100.24",
    });
    // 3. No token at all, no forwarding header.
    let path = "Kq3slotF3/Zq9-no-token.txt";
    w.secret_path(path);
    let r = w.send(addr, Method::PUT, &target(path), &[], body).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.failures.push(Failure {
        scheme: "none",
        reason: "missing",
        via_proxy: PEER,
    });
    // 4. An expired JWT, from an IPv6 client.
    let path = "Kq3slotF4/Jv5-expired.png";
    let expired = jwt(SECRET, path, body.len() as u64, "image/png", now() - 600);
    w.secret_path(path);
    w.secret_jwt(&expired);
    let bearer = format!("Bearer {expired}");
    let r = w
        .send(
            addr,
            Method::PUT,
            &target(path),
            &[
                ("authorization", &bearer),
                ("forwarded", "for=\"[2001:db8::23]:4711\";proto=https"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.failures.push(Failure {
        scheme: "jwt",
        reason: "expired",
        via_proxy: "2001:db8::23",
    });
    // 5. A JWT signed with another key; the client spoofs an earlier hop.
    let path = "Kq3slotF5/Jv5-forged.png";
    let forged = jwt(
        OTHER_SECRET,
        path,
        body.len() as u64,
        "image/png",
        now() + 300,
    );
    w.secret_path(path);
    w.secret_jwt(&forged);
    let bearer = format!("Bearer {forged}");
    let r = w
        .send(
            addr,
            Method::PUT,
            &target(path),
            &[
                ("authorization", &bearer),
                ("x-forwarded-for", "203.0.113.77, 198.51.100.25"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.failures.push(Failure {
        scheme: "jwt",
        reason: "signature",
        via_proxy: "198.51.100.25",
    });
    // 6. A token that is not hex; both headers: X-Forwarded-For wins, because
    //    proxies append to it but pass a client's own Forwarded on.
    let path = "Kq3slotF6/Tk5-malformed.txt";
    w.secret_path(path);
    w.secret("token=Zq9-not-hex");
    let r = w
        .send(
            addr,
            Method::PUT,
            &format!("{}?token=Zq9-not-hex", target(path)),
            &[
                ("x-forwarded-for", "198.51.100.26"),
                ("forwarded", "for=198.51.100.27"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    w.failures.push(Failure {
        scheme: "token",
        reason: "malformed",
        via_proxy: "198.51.100.26",
    });
    w
}

/// The address each failure line must name in `scenario`, in order.
fn expected_clients(w: &Workload, scenario: Scenario) -> Vec<Option<&'static str>> {
    w.failures
        .iter()
        .map(|f| match scenario {
            Scenario::Untrusted => Some(PEER),
            Scenario::Trusted => Some(f.via_proxy),
            Scenario::NoAddress => None,
        })
        .collect()
}

async fn run(format: Format, scenario: Scenario) -> (Log, Workload) {
    let running = start(format, scenario);
    let w = workload(running.addr).await;
    (running.stop(format), w)
}

// ---------------------------------------------------------------------------
// The checks

/// Whether `s` holds something that looks like an IPv4 address.
fn has_ipv4(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|start| {
        if start > 0 && (b[start - 1].is_ascii_digit() || b[start - 1] == b'.') {
            return false;
        }
        let mut i = start;
        for part in 0..4 {
            let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 3 {
                return false;
            }
            i += digits;
            if part < 3 {
                if b.get(i) != Some(&b'.') {
                    return false;
                }
                i += 1;
            }
        }
        true
    })
}

/// Fails the check with a message (the checks return errors rather than panic,
/// so that `the_checks_catch_what_they_promise` can show each one biting).
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn check(log: &Log, w: &Workload, scenario: Scenario) -> Result<(), String> {
    let all = log.dump();
    // The workload really was logged: an empty or truncated log fails here.
    ensure!(!log.lines.is_empty(), "empty log");
    for line in &log.lines {
        let level = log.level(line);
        ensure!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level.as_str()),
            "not a log line: {line}"
        );
    }
    let requests = log.with("request");
    ensure!(
        requests.len() == w.requests,
        "{} request lines for {} requests:\n{all}",
        requests.len(),
        w.requests
    );
    let status = |code: &str| {
        requests
            .iter()
            .filter(|l| log.field(l, "status").as_deref() == Some(code))
            .count()
    };
    ensure!(status("201") == w.uploads, "201 lines:\n{all}");
    ensure!(status("403") == w.failures.len(), "403 lines:\n{all}");
    for code in [
        "200", "204", "206", "304", "400", "404", "405", "409", "411", "413", "416",
    ] {
        ensure!(status(code) > 0, "no {code} request line:\n{all}");
    }
    // UPSLOT_LOG=debug took effect: the debug line of each upload is there.
    ensure!(
        log.with("body received").len() == w.uploads,
        "debug lines:\n{all}"
    );
    ensure!(log.with("stopped").len() == 1, "no clean stop:\n{all}");

    // One failure line per refused slot, in order, naming the right address.
    let failures = log.with("authorization failed");
    let expected = expected_clients(w, scenario);
    ensure!(
        failures.len() == w.failures.len(),
        "{} failure lines for {} refused slots:\n{all}",
        failures.len(),
        w.failures.len()
    );
    for ((line, f), client) in failures.iter().zip(&w.failures).zip(&expected) {
        ensure!(log.level(line) == "WARN", "{line}");
        ensure!(log.target(line) == "upslot::auth", "{line}");
        ensure!(
            log.field(line, "scheme").as_deref() == Some(f.scheme),
            "not {}: {line}",
            f.scheme
        );
        ensure!(
            log.field(line, "reason").as_deref() == Some(f.reason),
            "not {}: {line}",
            f.reason
        );
        ensure!(
            log.field(line, "client").as_deref() == *client,
            "client should be {client:?}: {line}"
        );
        if log.format == Format::Text {
            let head = match client {
                Some(ip) => format!(" WARN upslot::auth: authorization failed client={ip} "),
                None => " WARN upslot::auth: authorization failed scheme=".to_owned(),
            };
            ensure!(line.contains(&head), "not the fixed line: {line}");
        }
    }

    // Nothing the clients sent, nothing secret, at any level, nor on stdout.
    for line in log
        .lines
        .iter()
        .map(String::as_str)
        .chain(log.stdout.lines())
    {
        for secret in &w.secrets {
            ensure!(!line.contains(secret.as_str()), "{secret:?} leaked: {line}");
        }
    }

    // Addresses: only in failure lines, exactly the expected one in each.
    for line in &log.lines {
        if failures.contains(&line) {
            continue;
        }
        let mut rest = line.clone();
        if log.is(line, "listening") {
            // The service's own addresses (public and admin listeners), not a
            // client's: the public one is the banner's, the admin one is on
            // 127.0.0.1 as configured, on a port of its own.
            ensure!(
                log.field(line, "listen").as_deref() == Some(log.listen.as_str()),
                "{line}"
            );
            rest = rest.replace(&log.listen, "<listen>");
            if let Some(admin) = log.field(line, "admin") {
                let parsed: SocketAddr = admin.parse().map_err(|_| format!("admin: {line}"))?;
                ensure!(
                    parsed.ip().to_string() == PEER && admin != log.listen,
                    "{line}"
                );
                rest = rest.replace(&admin, "<admin>");
            }
        }
        ensure!(!rest.contains(PEER), "client address logged: {line}");
        ensure!(!has_ipv4(&rest), "an address logged: {line}");
        for addr in FORWARDED_ADDRS {
            ensure!(!rest.contains(addr), "{addr} logged: {line}");
        }
    }
    for (line, client) in failures.iter().zip(&expected) {
        for addr in FORWARDED_ADDRS.iter().chain([&PEER]) {
            let times = line.matches(addr).count();
            let want = usize::from(*client == Some(*addr));
            ensure!(times == want, "{addr} {times} times in {line}");
        }
        ensure!(client.is_some() || !has_ipv4(line), "{line}");
    }
    // The banner on stdout (which under systemd lands in the journal too)
    // names the service's own address and nothing else.
    let stdout = log.stdout.replace(&log.listen, "<listen>");
    ensure!(log.stdout.contains(&log.listen), "no banner: {stdout}");
    ensure!(!has_ipv4(&stdout), "an address on stdout: {stdout}");
    Ok(())
}

#[tokio::test]
async fn text_log_names_clients_only_in_failed_authorizations() {
    let (log, w) = run(Format::Text, Scenario::Untrusted).await;
    check(&log, &w, Scenario::Untrusted).unwrap();
}

#[tokio::test]
async fn json_log_names_clients_only_in_failed_authorizations() {
    let (log, w) = run(Format::Json, Scenario::Untrusted).await;
    for line in &log.lines {
        Log::json(line);
    }
    check(&log, &w, Scenario::Untrusted).unwrap();
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_the_one_logged_text() {
    let (log, w) = run(Format::Text, Scenario::Trusted).await;
    check(&log, &w, Scenario::Trusted).unwrap();
    let all = log.dump();
    for ip in ["198.51.100.23", "198.51.100.24", "2001:db8::23"] {
        let line = format!(" WARN upslot::auth: authorization failed client={ip} ");
        assert_eq!(all.matches(&line).count(), 1, "{line}\n{all}");
    }
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_the_one_logged_json() {
    let (log, w) = run(Format::Json, Scenario::Trusted).await;
    check(&log, &w, Scenario::Trusted).unwrap();
}

#[tokio::test]
async fn failed_auth_ip_off_logs_no_address_at_all() {
    for format in [Format::Text, Format::Json] {
        let (log, w) = run(format, Scenario::NoAddress).await;
        check(&log, &w, Scenario::NoAddress).unwrap();
        assert!(!log.dump().contains("client"), "{}", log.dump());
    }
}

/// The checks above are only worth something if they fail on a bad log: each
/// corruption of a real log (what a leaking or silent service would write)
/// must be caught, while the real log passes.
#[tokio::test]
async fn the_checks_catch_what_they_promise() {
    for format in [Format::Text, Format::Json] {
        let (log, w) = run(format, Scenario::Untrusted).await;
        check(&log, &w, Scenario::Untrusted).unwrap();
        let request = log.with("request")[0].clone();
        let failure = log.with("authorization failed")[0].clone();
        // An extra field on a real line, in the line's own format.
        let add = |line: &str, key: &str, value: &str| match format {
            Format::Text => format!("{line} {key}={value:?}"),
            Format::Json => {
                let mut v = Log::json(line);
                v[key] = serde_json::Value::String(value.to_owned());
                v.to_string()
            }
        };
        // The log with one of its lines replaced.
        let altered = |line: &str, by: String| -> Vec<String> {
            let mut l = log.lines.clone();
            let i = l.iter().position(|x| x == line).unwrap();
            l[i] = by;
            l
        };
        let debug = log.with("body received")[0].clone();
        let start = log.with("secret taken from the configuration")[0].clone();
        let query = w.secrets.iter().find(|s| s.starts_with("v2=")).unwrap();
        let bad_jwt = w.secrets.iter().find(|s| s.starts_with("eyJ")).unwrap();
        let file_name = SlotPath::encode("Kq3slotB2/Wx7-Grüße-Привет 🎉.txt");
        let corruptions: Vec<(&str, Vec<String>)> = vec![
            ("empty log", vec![]),
            ("failure lines lost", {
                let mut l = log.lines.clone();
                l.retain(|x| *x != failure);
                l
            }),
            ("a failure logged twice", {
                let mut l = log.lines.clone();
                l.push(failure.clone());
                l
            }),
            ("request lines lost", {
                let mut l = log.lines.clone();
                l.retain(|x| *x != request);
                l
            }),
            ("debug not in effect", {
                let mut l = log.lines.clone();
                l.retain(|x| log.level(x) != "DEBUG");
                l
            }),
            (
                "client address on a request line",
                altered(&request, add(&request, "peer", "127.0.0.1:51234")),
            ),
            (
                "user agent",
                altered(&request, add(&request, "ua", USER_AGENT)),
            ),
            (
                "referer",
                altered(&request, add(&request, "referer", REFERER)),
            ),
            ("cookie", altered(&request, add(&request, "cookie", COOKIE))),
            (
                "percent-encoded path",
                altered(
                    &request,
                    add(&request, "path", &format!("/upload/{file_name}")),
                ),
            ),
            (
                "JWT at debug",
                altered(&debug, add(&debug, "token", bad_jwt)),
            ),
            (
                "file name at debug",
                altered(&debug, add(&debug, "name", "Tk5 naïve résumé.pdf")),
            ),
            (
                "query string at debug",
                altered(&debug, add(&debug, "query", query)),
            ),
            ("secret", altered(&start, add(&start, "secret", SECRET))),
            ("forwarded address believed from an untrusted peer", {
                log.lines
                    .iter()
                    .map(|x| match log.is(x, "authorization failed") {
                        true => x.replace("127.0.0.1", "198.51.100.23"),
                        false => x.clone(),
                    })
                    .collect()
            }),
            (
                "spoofed hop logged next to the client",
                altered(&failure, add(&failure, "via", "203.0.113.77")),
            ),
        ];
        for (what, lines) in corruptions {
            let bad = Log {
                lines,
                ..log.clone_shallow()
            };
            let caught = check(&bad, &w, Scenario::Untrusted)
                .expect_err(&format!("{format:?}: a log with {what} passed the checks"));
            println!("{format:?}, {what}: {}", caught.lines().next().unwrap());
        }
        // And the right address in the wrong scenario is caught too.
        assert!(check(&log, &w, Scenario::Trusted).is_err());
        assert!(check(&log, &w, Scenario::NoAddress).is_err());
    }
}

// ---------------------------------------------------------------------------
// deploy/: fail2ban, logrotate

/// Whether an operator tool is here; without it the test is skipped, except in
/// CI (`CI` set), where .ci/run installs it and its absence is a failure.
fn have(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed (CI is set: .ci/run installs it)"
        );
        println!("SKIPPED: {tool} not installed");
    }
    found
}

struct Fail2banRun {
    matched: usize,
    /// The address of each match, in log order.
    ips: Vec<String>,
    /// The time fail2ban read for each match (Unix seconds).
    times: Vec<u64>,
    summary: String,
}

fn fail2ban_regex(log: &Path) -> Fail2banRun {
    let filter = Path::new(ROOT).join(FILTER);
    let out = Command::new("fail2ban-regex")
        .arg("--print-no-missed")
        .arg(log)
        .arg(&filter)
        .output()
        .unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "Lines: 40 lines, 0 ignored, 6 matched, 34 missed"
    let counts = summary
        .lines()
        .find_map(|l| l.strip_prefix("Lines: "))
        .unwrap_or_else(|| panic!("no summary: {summary}"));
    let matched = counts
        .split(", ")
        .find_map(|part| part.strip_suffix(" matched"))
        .unwrap()
        .parse()
        .unwrap();
    let ips = run_out(log, &filter, "ip", None);
    // Timestamps as fail2ban reads them, in a zone far from UTC: the log's
    // trailing Z must be honoured, or fail2ban would see every failure hours
    // away from now and never ban (findtime).
    let times = run_out(log, &filter, "row", Some("UPSLOT-05:45"))
        .iter()
        .map(|row| {
            let t: f64 = row.split(',').nth(1).unwrap().trim().parse().unwrap();
            t as u64
        })
        .collect();
    Fail2banRun {
        matched,
        ips,
        times,
        summary,
    }
}

fn run_out(log: &Path, filter: &Path, token: &str, tz: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("fail2ban-regex");
    cmd.args(["-o", token]).arg(log).arg(filter);
    if let Some(tz) = tz {
        cmd.env("TZ", tz);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

async fn fail2ban_on(format: Format, scenario: Scenario) {
    if !have("fail2ban-regex") {
        return;
    }
    let started = now();
    let (log, w) = run(format, scenario).await;
    let finished = now();
    let found = fail2ban_regex(&log.path);
    let expected: Vec<&str> = expected_clients(&w, scenario)
        .into_iter()
        .flatten()
        .collect();
    // The log really holds the failures, so a filter that matches nothing fails.
    assert_eq!(log.with("authorization failed").len(), w.failures.len());
    assert_eq!(
        found.matched,
        expected.len(),
        "{}\n{}",
        found.summary,
        log.dump()
    );
    assert_eq!(found.ips, expected, "{}", found.summary);
    assert_eq!(found.times.len(), expected.len());
    for t in &found.times {
        assert!(
            (started - 1..=finished + 1).contains(t),
            "fail2ban read time {t}, the run was {started}..{finished}"
        );
    }
    println!(
        "fail2ban-regex {} ({format:?}, {scenario:?}): {}",
        FILTER,
        found
            .summary
            .lines()
            .find(|l| l.starts_with("Lines: "))
            .unwrap()
    );
}

#[tokio::test]
async fn fail2ban_filter_matches_each_failure_text() {
    fail2ban_on(Format::Text, Scenario::Untrusted).await;
}

#[tokio::test]
async fn fail2ban_filter_matches_each_failure_json() {
    fail2ban_on(Format::Json, Scenario::Untrusted).await;
}

#[tokio::test]
async fn fail2ban_filter_bans_the_forwarded_client() {
    fail2ban_on(Format::Text, Scenario::Trusted).await;
    fail2ban_on(Format::Json, Scenario::Trusted).await;
}

#[tokio::test]
async fn fail2ban_filter_has_nothing_to_ban_without_addresses() {
    fail2ban_on(Format::Text, Scenario::NoAddress).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// The jail loads in fail2ban's own configuration reader, as shipped (journal
/// namespace) and in the log-file variant its comments describe.
#[test]
fn fail2ban_jail_is_valid() {
    if !have("fail2ban-client") {
        return;
    }
    let system = Path::new("/etc/fail2ban");
    assert!(
        system.join("jail.conf").exists(),
        "fail2ban without /etc/fail2ban"
    );
    let dir = common::tempdir();
    let conf = dir.path().join("fail2ban");
    copy_dir(system, &conf);
    // Only our jail: the distribution's defaults may enable others.
    for entry in std::fs::read_dir(conf.join("jail.d")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    std::fs::copy(
        Path::new(ROOT).join(FILTER),
        conf.join("filter.d/upslot.conf"),
    )
    .unwrap();
    let jail = std::fs::read_to_string(Path::new(ROOT).join(JAIL)).unwrap();

    let dump = |jail: &str| {
        std::fs::write(conf.join("jail.d/upslot.conf"), jail).unwrap();
        let test = Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-t")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&test.stdout),
            String::from_utf8_lossy(&test.stderr)
        );
        assert!(test.status.success(), "{said}");
        assert!(said.contains("OK"), "{said}");
        let out = Command::new("fail2ban-client")
            .arg("-c")
            .arg(&conf)
            .arg("-d")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };

    let shipped = dump(&jail);
    for expected in [
        "['add', 'upslot', 'systemd[namespace=upslot]']",
        "['set', 'upslot', 'addjournalmatch', '_SYSTEMD_UNIT=upslot.service']",
        "['set', 'upslot', 'maxretry', 5]",
        "['set', 'upslot', 'findtime', '10m']",
        "['set', 'upslot', 'bantime', '1h']",
        "['start', 'upslot']",
    ] {
        assert!(shipped.contains(expected), "{expected} not in:\n{shipped}");
    }
    assert!(shipped.contains("'addfailregex'") && shipped.contains("upslot::auth"));

    // The documented alternative: a log file.
    let log = dir.path().join("upslot.log");
    std::fs::write(&log, "").unwrap();
    let file_jail: String = jail
        .lines()
        .filter(|l| !l.starts_with("backend") && !l.starts_with("journalmatch"))
        .map(|l| match l {
            "#backend = auto" => "backend = auto".to_owned(),
            "#logpath = /var/log/upslot/upslot.log" => format!("logpath = {}", log.display()),
            other => other.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(file_jail, jail);
    let with_file = dump(&file_jail);
    assert!(
        with_file.contains("['add', 'upslot', 'auto']"),
        "{with_file}"
    );
    assert!(with_file.contains("addlogpath"), "{with_file}");
    assert!(
        with_file.contains(&log.display().to_string()),
        "{with_file}"
    );
}

/// deploy/logrotate/upslot parses, and, run for real on a copy pointed at a
/// temporary directory, keeps exactly fourteen days of lines: today's file and
/// thirteen rotated ones. The writer keeps one O_APPEND handle open throughout,
/// as the service does, and its lines land at the start of the truncated file.
#[test]
fn logrotate_keeps_fourteen_days() {
    if !have("logrotate") {
        return;
    }
    let shipped = Path::new(ROOT).join(LOGROTATE);
    let out = Command::new("logrotate")
        .arg("-d")
        .arg(&shipped)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("error"), "{said}");
    assert!(said.contains("after 1 days (13 rotations)"), "{said}");
    assert!(said.contains("empty log files are rotated"), "{said}");

    let dir = common::tempdir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(text.contains("/var/log/upslot/*.log {"));
    let conf = dir.path().join("upslot.logrotate");
    std::fs::write(
        &conf,
        text.replace(
            "/var/log/upslot/*.log",
            &format!("{}/*.log", logs.display()),
        ),
    )
    .unwrap();
    let live = logs.join("upslot.log");
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&live)
        .unwrap();
    let inode = std::fs::metadata(&live).unwrap().ino();
    let rotate = || {
        let out = Command::new("logrotate")
            .arg("-f")
            .arg("-s")
            .arg(dir.path().join("state"))
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Day 12 is quiet: nothing logged, rotated all the same (ifempty).
    for day in 1..=21 {
        if day != 12 {
            writeln!(
                writer,
                "day-{day:02} WARN upslot::auth: authorization failed"
            )
            .unwrap();
        }
        rotate();
    }
    writeln!(writer, "day-22 (today, not yet rotated)").unwrap();
    assert_eq!(
        std::fs::metadata(&live).unwrap().ino(),
        inode,
        "copytruncate keeps the file"
    );

    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let rotated: Vec<String> = (1..=13).map(|n| format!("upslot.log.{n}.gz")).collect();
    let mut expected = rotated.clone();
    expected.push("upslot.log".to_owned());
    expected.sort();
    assert_eq!(names, expected);

    let mut kept = std::fs::read_to_string(&live).unwrap();
    assert!(kept.starts_with("day-22"), "{kept:?}");
    for name in &rotated {
        let out = Command::new("gzip")
            .arg("-dc")
            .arg(logs.join(name))
            .output()
            .unwrap();
        assert!(out.status.success());
        let day = String::from_utf8(out.stdout).unwrap();
        assert!(!day.contains('\0'), "{name}: {day:?}");
        kept.push_str(&day);
    }
    let mut days: Vec<&str> = kept.lines().map(|l| &l[..6]).collect();
    days.sort_unstable();
    let want: Vec<String> = (9..=22)
        .filter(|&d| d != 12)
        .map(|d| format!("day-{d:02}"))
        .collect();
    assert_eq!(days, want, "fourteen days kept, the oldest first to go");
}

/// A metadata file that is valid JSON of the wrong shape (a hand edit, or a format
/// change between versions) must not bring its values into the log: serde_json's
/// messages quote them, e.g. the file name.
#[tokio::test]
async fn unreadable_metadata_is_logged_without_its_contents() {
    let running = start(Format::Text, Scenario::Untrusted);
    let path = "Kq3slotM1/Zq9-meta-name.txt";
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), path, 5, None).unwrap();
    let mut w = Workload::default();
    let put_target = format!("{}?{query}", target(path));
    let r = w
        .ok(running.addr, Method::PUT, &put_target, &[], b"hello")
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let dir = running.stop(Format::Text).dir.take().unwrap();

    let meta = common::walk(&dir.path().join("data"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "meta"))
        .unwrap();
    let mut fields: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    fields["size"] = fields["name"].clone();
    std::fs::write(&meta, fields.to_string()).unwrap();

    let running = start_in(dir, Format::Text, Scenario::Untrusted);
    let r = w
        .ok(running.addr, Method::GET, &target(path), &[], b"")
        .await;
    assert_ne!(r.status, StatusCode::OK);
    let log = running.stop(Format::Text);
    assert!(
        log.lines.iter().any(|l| l.contains("metadata")),
        "the bad metadata went unnoticed:\n{}",
        log.dump()
    );
    for line in &log.lines {
        assert!(!line.contains("Zq9"), "file name leaked: {line}");
    }
}
