//! Soak: a few hundred clients against the real `upslot serve` for a bounded
//! time, mixing what a busy service sees; then a check that nothing stored was
//! lost or changed, nothing answered 5xx, and the process's memory and open
//! descriptors came back to their level after a warm-up.
//!
//! `cargo bench --bench soak` starts `target/release/upslot serve` (the binary
//! Cargo builds for this bench) on a free 127.0.0.1 port with a fresh data
//! directory, every signing scheme, fsync on and its `[limits]` raised for one
//! address (if the build has them), then:
//! - warm-up (`UPSLOT_SOAK_WARMUP` s): the load below, so that buffers, thread
//!   pools and the allocator reach their working size; then every client
//!   connection closes and, once the process is idle (descriptor count still,
//!   blocking threads gone), its RSS and open descriptors are the start level;
//! - soak (`UPSLOT_SOAK_SECS` s): `UPSLOT_SOAK_CLIENTS` clients, each on a
//!   keep-alive HTTP/1.1 connection (now and then a fresh one, or a
//!   `Connection: close`), pick at random: valid PUTs (v1, v2, token, jwt; 1 B to
//!   4 MiB) → 201; GETs read back byte for byte → 200; HEAD → 200 with the size;
//!   single ranges of every form → 206 with the right bytes, or 416 past the end;
//!   If-None-Match and If-Modified-Since with the file's own validators → 304;
//!   If-Match with another ETag → 412; unknown paths → 404; PUTs with bad tokens
//!   (flipped signature, another size, none, JWT with another key or expired, v2
//!   with another type; a quarter with `Expect: 100-continue`, answered without
//!   the body) → 403; PUTs cut off mid-body (FIN or RST), and retries of those
//!   slots → 201; races of 3 to 5 PUTs to one new slot → exactly one 201, the
//!   rest 409;
//! - then every stored file is read back byte for byte (0 corrupt, 0 lost), cut
//!   and refused slots must be 404 (nothing left behind), the server's own count
//!   of created uploads must match the 201s, and, idle again, RSS and descriptors
//!   must be back near the start level (waiting at most 15 s).
//!
//! It prints requests by kind and status, req/s, the final check, RSS, open
//! descriptors and threads at start, peak and end, the server's upload and
//! connection counters, and its warnings. It exits non-zero on any
//! unexpected answer (every 5xx is one), a corrupt, lost or left-behind file, RSS
//! or descriptors that stay up, or a server that dies.
//!
//! Environment:
//! - `UPSLOT_SOAK_SECS`: how long the soak runs (default 60; CI runs 10).
//! - `UPSLOT_SOAK_CLIENTS`: concurrent clients (default 300).
//! - `UPSLOT_SOAK_WARMUP`: seconds of warm-up (default a quarter of the soak, 5 to
//!   15: shorter, and the allocator has not yet reached the load's working size).
//! - `UPSLOT_SOAK_PUT_RATE`: valid upload bytes per second on average (default
//!   `32MiB`); ahead of it, uploads are small, so that the data directory grows
//!   by about 2 GiB a minute however fast the machine is.
//! - `UPSLOT_SOAK_FSYNC`: upslot's fsync setting (default `on`).
//! - `UPSLOT_SOAK_DIR`: parent of the scratch directory (default `/var/tmp`); the
//!   scratch directory is removed at the end.
//! - `UPSLOT_SOAK_BIN`: another upslot binary.
//! - `UPSLOT_SOAK_BACKEND`: `fs` (default: local disk, embedded index) or
//!   `s3+postgres`: the files go to a 3-node Garage cluster and the index to
//!   PostgreSQL, both started in the scratch directory by `deploy/cluster/`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

use support::http::{Generated, ReqBody, check_bytes, pattern_block, request_timeout, try_connect};
use support::process::{Proc, free_port, wait_listening};
use support::procfs::{fd_count, filesystem_of, load_average, machine, status_of, status_raw_of};
use support::{
    KIB, MIB, count, env_number, env_or, env_positive, env_switches, on_off, parse_size,
    scratch_dir, show_size,
};
use upslot::auth::{JwtSlot, Scheme, sign_jwt, sign_query};
use upslot::path::SlotPath;

const SECRET: &str = "upslot-soak-secret-0123456789abcdef";
const OTHER_SECRET: &str = "not-the-soak-secret-0123456789ab";
/// Valid uploads are 1 B to this.
const MAX_SIZE: u64 = 4 * MIB;
/// What an upload shrinks to while the bytes are ahead of `UPSLOT_SOAK_PUT_RATE`.
const SMALL: u64 = 16 * KIB;
/// Upload bytes allowed before the rate applies.
const RATE_HEADROOM: u64 = 64 * MIB;
/// Refused uploads send bodies of 1 B to this.
const REFUSED_MAX: u64 = 64 * KIB;
/// RSS may end this much above its start level. The warm-up has grown buffers,
/// pools and the allocator to the load's working size, but the heap keeps some
/// of what the run's highest moment took: on the 2-core CI VM the idle level
/// ended 6 to 12 MiB above the start, about 5 MiB below the run's peak, and no
/// higher after 60 s than after 10 s with a fifth of the requests (fewer glibc
/// arenas or a fixed mmap threshold changed nothing). A leak of 100 bytes per
/// request outgrows this within a minute at the rates here.
const RSS_SLACK: u64 = 16 * MIB;
/// Plus this much per file stored after the start level, growth by design: the
/// embedded index keeps every file's metadata in memory (docs/storage.md):
/// path, name, type, hash and uploader as strings of their own (some 450 bytes
/// with the allocator's share), the map and expiry entries beside them (about
/// 100 more), and tables that grow by doubling, so up to twice that. (On a
/// shared index the process keeps none of it, and this is an upper bound.)
const INDEX_BYTES_PER_FILE: u64 = 1024;
/// Open descriptors may end this many above the start level: a connection the
/// server is still closing, the log file, a directory being synced.
const FD_SLACK: u64 = 4;
/// The longest wait for RSS and descriptors to come down, and for the start
/// level to hold still.
const SETTLE: Duration = Duration::from_secs(15);
/// A cut slot is retried this long after the cut at the earliest; a 409 (the
/// server has not seen the cut yet) puts it back until this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);
const RETRY_WINDOW: Duration = Duration::from_secs(10);
/// Raw-socket exchanges (cuts, `Expect: 100-continue`) give up after this.
const RAW_TIMEOUT: Duration = Duration::from_secs(30);
/// Refused slots remembered for the nothing-left-behind check.
const REFUSED_CHECKED: usize = 5000;
/// Failure details printed: the first this many.
const DETAILS: usize = 20;
/// Connections of the final read-back.
const RECHECK_CONNECTIONS: usize = 16;
/// Past the warm-up and soak, the whole run gives up after this long.
const RUN_SPARE: Duration = Duration::from_secs(300);

const NAMES: [&str; 5] = [
    "photo.jpg",
    "Notizen für Montag.txt",
    "voice message.ogg",
    "a+b=c (1).bin",
    "данные.pdf",
];
const TYPES: [&str; 4] = [
    "image/jpeg",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "video/mp4",
];
const USERS: [&str; 3] = [
    "romeo@example.org",
    "juliet@example.org",
    "nurse@example.net",
];

fn main() {
    let settings = Settings::from_env();
    let limit = Duration::from_secs(settings.warmup + settings.secs) + RUN_SPARE;
    support::run_bounded("soak", limit, run(settings));
}

// ---------------------------------------------------------------------------
// Settings.

struct Settings {
    secs: u64,
    warmup: u64,
    clients: usize,
    put_rate: u64,
    fsync: bool,
    parent: PathBuf,
    bin: PathBuf,
    /// On S3 and PostgreSQL rather than the local disk and the embedded index.
    cluster: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let secs = env_positive("UPSLOT_SOAK_SECS", 60) as u64;
        let warmup = env_number("UPSLOT_SOAK_WARMUP", (secs / 4).clamp(5, 15));
        assert!(
            warmup > 0,
            "UPSLOT_SOAK_WARMUP: the start level needs a warm-up"
        );
        let rate = env_or("UPSLOT_SOAK_PUT_RATE", "32MiB");
        let fsync = env_switches("UPSLOT_SOAK_FSYNC", "on");
        assert!(fsync.len() == 1, "UPSLOT_SOAK_FSYNC: on or off");
        Settings {
            secs,
            warmup,
            clients: env_positive("UPSLOT_SOAK_CLIENTS", 300),
            put_rate: parse_size(&rate)
                .unwrap_or_else(|| panic!("UPSLOT_SOAK_PUT_RATE: bad size {rate:?}")),
            fsync: fsync[0],
            parent: PathBuf::from(env_or("UPSLOT_SOAK_DIR", "/var/tmp")),
            bin: std::env::var_os("UPSLOT_SOAK_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_upslot")),
                PathBuf::from,
            ),
            cluster: match env_or("UPSLOT_SOAK_BACKEND", "fs").as_str() {
                "fs" => false,
                "s3+postgres" => true,
                other => panic!("UPSLOT_SOAK_BACKEND: {other:?} is neither fs nor s3+postgres"),
            },
        }
    }
}

/// Writes the server's configuration to `<dir>/upslot.toml`, with `[limits]` if
/// this binary knows it; returns the path and what was done about limits.
fn write_config(
    s: &Settings,
    dir: &Path,
    addr: SocketAddr,
    admin: SocketAddr,
    tables: &str,
) -> (PathBuf, String) {
    let base = format!(
        "listen = \"{addr}\"\nbase_path = \"/upload/\"\ndata_dir = \"{}\"\nsecret = \"{SECRET}\"\n\
         max_file_size = \"16 MiB\"\nmin_free_space = \"0\"\nfsync = {}\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\n{tables}",
        dir.join("data").display(),
        s.fsync,
        admin.port(),
    );
    let path = dir.join("upslot.toml");
    let limits = support::limits_toml(s.clients);
    std::fs::write(&path, format!("{base}{limits}")).expect("upslot config");
    let check = Command::new(&s.bin)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running {} check-config: {e}", s.bin.display()));
    if check.status.success() {
        let shown = limits.trim_end().replace('\n', "; ").replacen("; ", " ", 1);
        return (path, format!("{shown} (every client is 127.0.0.1)"));
    }
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("limits"),
        "{} check-config refuses the soak's configuration: {err}",
        s.bin.display()
    );
    std::fs::write(&path, &base).expect("upslot config");
    (
        path,
        "this build has no [limits] section: its defaults".to_owned(),
    )
}

// ---------------------------------------------------------------------------
// What was asked and answered.

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Put,
    Get,
    Head,
    Range,
    IfNoneMatch,
    IfModifiedSince,
    IfMatch,
    Missing,
    BadToken,
    Cut,
    Retry,
    Race,
}

impl Kind {
    const ALL: [Kind; 12] = [
        Kind::Put,
        Kind::Get,
        Kind::Head,
        Kind::Range,
        Kind::IfNoneMatch,
        Kind::IfModifiedSince,
        Kind::IfMatch,
        Kind::Missing,
        Kind::BadToken,
        Kind::Cut,
        Kind::Retry,
        Kind::Race,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Put => "PUT",
            Kind::Get => "GET (bytes checked)",
            Kind::Head => "HEAD",
            Kind::Range => "GET Range",
            Kind::IfNoneMatch => "GET If-None-Match: its ETag",
            Kind::IfModifiedSince => "GET If-Modified-Since: its date",
            Kind::IfMatch => "GET If-Match: another ETag",
            Kind::Missing => "GET unknown path",
            Kind::BadToken => "PUT bad token",
            Kind::Cut => "PUT cut mid-body",
            Kind::Retry => "PUT retry of a cut slot",
            Kind::Race => "PUT race, 3-5 per slot",
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Put | Kind::Retry => "201",
            Kind::Get | Kind::Head => "200",
            Kind::Range => "206, 416",
            Kind::IfNoneMatch | Kind::IfModifiedSince => "304",
            Kind::IfMatch => "412",
            Kind::Missing => "404",
            Kind::BadToken => "403",
            Kind::Cut => "none (cut)",
            Kind::Race => "one 201, others 409",
        }
    }
}

/// When the server was started: failures say how long after it they came.
static RUN_START: OnceLock<Instant> = OnceLock::new();

/// Answers by kind and label (a status, or `io`, `timeout`, `bytes`...), split
/// into expected and unexpected, with the first failures' details.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<(Kind, String), [u64; 2]>>,
    details: Mutex<Vec<String>>,
    unexpected: AtomicU64,
    server_errors: AtomicU64,
}

impl Tally {
    fn ok(&self, kind: Kind, label: &str) {
        self.add(kind, label, 0);
    }

    fn bad(&self, kind: Kind, label: &str, detail: String) {
        self.add(kind, label, 1);
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        if label.starts_with('5') {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut details = self.details.lock().unwrap();
        if details.len() < DETAILS {
            let at = RUN_START.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
            details.push(format!("+{at:.1} s: {detail}"));
        }
    }

    fn add(&self, kind: Kind, label: &str, i: usize) {
        let mut counts = self.counts.lock().unwrap();
        counts.entry((kind, label.to_owned())).or_default()[i] += 1;
    }

    fn total(&self) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .values()
            .map(|c| c[0] + c[1])
            .sum()
    }

    fn unexpected(&self) -> u64 {
        self.unexpected.load(Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------
// Slots and stored files.

/// One upload: where it goes, how it is signed, and its body's seed.
#[derive(Clone)]
struct Slot {
    get: String,
    put: String,
    authorization: Option<String>,
    content_type: &'static str,
    size: u64,
    seed: u64,
}

/// How a refused slot is wrong.
#[derive(Clone, Copy)]
enum Bad {
    Flipped,
    OtherSize,
    NoToken,
    JwtOtherKey,
    JwtExpired,
    OtherType,
}

const BADS: [Bad; 6] = [
    Bad::Flipped,
    Bad::OtherSize,
    Bad::NoToken,
    Bad::JwtOtherKey,
    Bad::JwtExpired,
    Bad::OtherType,
];

/// A file that answered 201, with its validators once a GET or HEAD showed them.
struct Stored {
    slot: Slot,
    etag: OnceLock<String>,
    last_modified: OnceLock<String>,
}

struct CutSlot {
    slot: Slot,
    at: Instant,
}

/// Valid upload bytes, paced: ahead of the rate, uploads are small.
struct Budget {
    started: Instant,
    rate: f64,
    used: AtomicU64,
}

impl Budget {
    fn size(&self, rng: &mut SmallRng, lo: u64, hi: u64) -> u64 {
        let allowed = RATE_HEADROOM as f64 + self.rate * self.started.elapsed().as_secs_f64();
        let want = log_uniform(rng, lo, hi);
        if (self.used.fetch_add(want, Ordering::Relaxed) + want) as f64 <= allowed {
            return want;
        }
        self.used.fetch_sub(want, Ordering::Relaxed);
        let small = log_uniform(rng, 1, SMALL.min(hi));
        self.used.fetch_add(small, Ordering::Relaxed);
        small
    }
}

/// Sizes spread evenly over orders of magnitude: mostly small, some large.
fn log_uniform(rng: &mut SmallRng, lo: u64, hi: u64) -> u64 {
    let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
    (rng.random_range(l..=h).exp().round() as u64).clamp(lo, hi)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

struct Shared {
    addr: SocketAddr,
    block: Bytes,
    files: RwLock<Vec<Arc<Stored>>>,
    cut: Mutex<VecDeque<CutSlot>>,
    /// GET paths of refused slots: none may ever be stored.
    refused: Mutex<Vec<String>>,
    next_id: AtomicU64,
    budget: Budget,
}

impl Shared {
    /// A new slot; `bad` makes it one the server must refuse.
    fn slot(&self, rng: &mut SmallRng, size: u64, bad: Option<Bad>) -> Slot {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = NAMES[rng.random_range(0..NAMES.len())];
        let content_type = TYPES[rng.random_range(0..TYPES.len())];
        let first = format!("s{id}");
        let path = format!("{first}/{name}");
        let get = format!("/upload/{}", SlotPath::encode(&path));
        let scheme = match bad {
            None => Scheme::ALL[rng.random_range(0..Scheme::ALL.len())],
            Some(Bad::JwtOtherKey | Bad::JwtExpired) => Scheme::Jwt,
            Some(Bad::OtherType) => Scheme::V2,
            Some(_) => Scheme::V1,
        };
        let (put, authorization) = if scheme == Scheme::Jwt {
            let now = unix_now();
            let expired = matches!(bad, Some(Bad::JwtExpired));
            let claims = JwtSlot {
                slot: first,
                filesize: size,
                exp: if expired { now - 60 } else { now + 3600 },
                iat: Some(now),
                filename: Some(name.to_owned()),
                filetype: Some(content_type.to_owned()),
                sub: Some(USERS[rng.random_range(0..USERS.len())].to_owned()),
                expires: None,
            };
            let key = match bad {
                Some(Bad::JwtOtherKey) => OTHER_SECRET,
                _ => SECRET,
            };
            let token = sign_jwt(key.as_bytes(), &claims).expect("JWT signs");
            (get.clone(), Some(format!("Bearer {token}")))
        } else {
            let signed_size = match bad {
                Some(Bad::OtherSize) => size + 1,
                _ => size,
            };
            let signed_type = match bad {
                Some(Bad::OtherType) => "application/x-other",
                _ => content_type,
            };
            let mut query = sign_query(
                scheme,
                SECRET.as_bytes(),
                &path,
                signed_size,
                Some(signed_type),
            )
            .expect("query schemes sign");
            if matches!(bad, Some(Bad::Flipped)) {
                let last = if query.ends_with('0') { '1' } else { '0' };
                query.pop();
                query.push(last);
            }
            let put = match bad {
                Some(Bad::NoToken) => get.clone(),
                _ => format!("{get}?{query}"),
            };
            (put, None)
        };
        Slot {
            get,
            put,
            authorization,
            content_type,
            size,
            seed: rng.random(),
        }
    }

    fn stored(&self, slot: Slot) {
        self.files.write().unwrap().push(Arc::new(Stored {
            slot,
            etag: OnceLock::new(),
            last_modified: OnceLock::new(),
        }));
    }

    fn refused(&self, get: &str) {
        let mut refused = self.refused.lock().unwrap();
        if refused.len() < REFUSED_CHECKED {
            refused.push(get.to_owned());
        }
    }

    /// The request head of `slot`'s PUT, for a raw socket.
    fn raw_head(&self, slot: &Slot, extra: &str) -> String {
        let mut head = format!(
            "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nContent-Type: {}\r\n{extra}",
            slot.put, self.addr, slot.size, slot.content_type
        );
        if let Some(a) = &slot.authorization {
            head.push_str(&format!("Authorization: {a}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}

// ---------------------------------------------------------------------------
// A client.

/// What came back: status, headers, how many body bytes, whether they were the
/// expected ones (when checked), and the start of an error body.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    received: u64,
    intact: bool,
    text: String,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request went wrong: a label for the table and what happened.
type Failure = (String, String);

struct Client {
    shared: Arc<Shared>,
    tally: Arc<Tally>,
    rng: SmallRng,
    conn: Option<SendRequest<ReqBody>>,
}

impl Client {
    fn new(shared: Arc<Shared>, tally: Arc<Tally>, seed: u64) -> Client {
        Client {
            shared,
            tally,
            rng: SmallRng::seed_from_u64(seed),
            conn: None,
        }
    }

    fn builder(&mut self, method: Method, uri: &str) -> http::request::Builder {
        let builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, self.shared.addr.to_string());
        if self.rng.random_ratio(1, 32) {
            builder.header(header::CONNECTION, "close")
        } else {
            builder
        }
    }

    /// Sends `req` on this client's connection (a new one if it has none) and
    /// reads the answer whole, checking body bytes against `check` (the file's
    /// seed and the offset of the first byte). The connection is given up after
    /// a failure, a `Connection: close`, or a PUT that did not store (the rest of
    /// its body may still be on the way).
    async fn send(
        &mut self,
        req: Request<ReqBody>,
        size: u64,
        check: Option<(u64, u64)>,
    ) -> Result<Answer, Failure> {
        let put = req.method() == Method::PUT;
        let close = req.headers().contains_key(header::CONNECTION);
        let answer = tokio::time::timeout(request_timeout(size), self.exchange(req, check))
            .await
            .unwrap_or_else(|_| Err(("timeout".into(), "no answer in time".into())));
        let keep = match &answer {
            Ok(a) => {
                !close
                    && !a.headers.contains_key(header::CONNECTION)
                    && (!put || a.status == StatusCode::CREATED)
            }
            Err(_) => false,
        };
        if !keep {
            self.conn = None;
        }
        answer
    }

    async fn exchange(
        &mut self,
        req: Request<ReqBody>,
        check: Option<(u64, u64)>,
    ) -> Result<Answer, Failure> {
        let io = |what: &str, e: hyper::Error| ("io".to_owned(), format!("{what}: {e}"));
        if self.conn.is_none() {
            let conn = try_connect(self.shared.addr)
                .await
                .map_err(|e| ("connect".to_owned(), e))?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("connected");
        conn.ready()
            .await
            .map_err(|e| io("connection not ready", e))?;
        let res = conn
            .send_request(req)
            .await
            .map_err(|e| io("no response", e))?;
        let (parts, mut body) = res.into_parts();
        let mut answer = Answer {
            status: parts.status,
            headers: parts.headers,
            received: 0,
            intact: true,
            text: String::new(),
        };
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| io("response body", e))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if let Some((seed, start)) = check
                && answer.intact
            {
                answer.intact =
                    check_bytes(&self.shared.block, seed, start + answer.received, &data);
            }
            answer.received += data.len() as u64;
            if !answer.status.is_success() && text.len() < 200 {
                text.extend_from_slice(&data[..data.len().min(200)]);
            }
        }
        answer.text = String::from_utf8_lossy(&text).trim().to_owned();
        Ok(answer)
    }

    async fn upload(&mut self, slot: &Slot) -> Result<Answer, Failure> {
        let mut builder = self
            .builder(Method::PUT, &slot.put)
            .header(header::CONTENT_LENGTH, slot.size)
            .header(header::CONTENT_TYPE, slot.content_type);
        if let Some(a) = &slot.authorization {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        let body = Generated::new(&self.shared.block, slot.seed, slot.size).boxed();
        self.send(builder.body(body).expect("request"), slot.size, None)
            .await
    }

    async fn get(
        &mut self,
        uri: &str,
        headers: &[(header::HeaderName, String)],
        size: u64,
        check: Option<(u64, u64)>,
    ) -> Result<Answer, Failure> {
        self.request(Method::GET, uri, headers, size, check).await
    }

    async fn request(
        &mut self,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, String)],
        size: u64,
        check: Option<(u64, u64)>,
    ) -> Result<Answer, Failure> {
        let mut builder = self.builder(method, uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let req = builder
            .body(http_body_util::Empty::new().boxed())
            .expect("request");
        self.send(req, size, check).await
    }

    fn pick(&mut self) -> Option<Arc<Stored>> {
        let files = self.shared.files.read().unwrap();
        (!files.is_empty()).then(|| Arc::clone(&files[self.rng.random_range(0..files.len())]))
    }

    /// One request of a kind picked at random.
    async fn one(&mut self) {
        // Now and then a fresh connection.
        if self.rng.random_ratio(1, 32) {
            self.conn = None;
        }
        let roll = self.rng.random_range(0..100u32);
        match roll {
            0..18 => self.put().await,
            18..24 => self.bad_token().await,
            24..28 => self.cut().await,
            28..32 => {
                if !self.retry().await {
                    self.put().await;
                }
            }
            32..34 => self.race().await,
            34..38 => self.missing().await,
            _ => {
                let Some(file) = self.pick() else {
                    return self.put().await;
                };
                match roll {
                    38..58 => self.read(Kind::Get, &file).await,
                    58..68 => self.read(Kind::Head, &file).await,
                    68..82 => self.range(&file).await,
                    82..88 => self.conditional(Kind::IfNoneMatch, &file).await,
                    88..94 => self.conditional(Kind::IfModifiedSince, &file).await,
                    _ => self.conditional(Kind::IfMatch, &file).await,
                }
            }
        }
    }

    async fn put(&mut self) {
        let size = self.shared.budget.size(&mut self.rng, 1, MAX_SIZE);
        let slot = self.shared.slot(&mut self.rng, size, None);
        self.store(Kind::Put, slot).await;
    }

    /// PUTs `slot`, expecting 201.
    async fn store(&mut self, kind: Kind, slot: Slot) {
        match self.upload(&slot).await {
            Ok(a) if a.status == StatusCode::CREATED => {
                self.tally.ok(kind, "201");
                self.shared.stored(slot);
            }
            Ok(a) => self.tally.bad(
                kind,
                a.status.as_str(),
                format!(
                    "PUT {} ({}): {} {}",
                    slot.get,
                    show_size(slot.size),
                    a.status,
                    a.text
                ),
            ),
            Err((label, detail)) => {
                self.tally
                    .bad(kind, &label, format!("PUT {}: {detail}", slot.get))
            }
        }
    }

    async fn bad_token(&mut self) {
        let bad = BADS[self.rng.random_range(0..BADS.len())];
        let size = log_uniform(&mut self.rng, 1, REFUSED_MAX);
        let slot = self.shared.slot(&mut self.rng, size, Some(bad));
        self.shared.refused(&slot.get);
        let status = if self.rng.random_ratio(1, 4) {
            self.expect_continue(&slot).await
        } else {
            self.upload(&slot)
                .await
                .map(|a| a.status.as_str().to_owned())
        };
        match status {
            Ok(s) if s == "403" => self.tally.ok(Kind::BadToken, "403"),
            Ok(s) => self.tally.bad(
                Kind::BadToken,
                &s,
                format!("PUT {} with a bad token: {s}", slot.put),
            ),
            Err((label, detail)) => self.tally.bad(
                Kind::BadToken,
                &label,
                format!("PUT {}: {detail}", slot.put),
            ),
        }
    }

    /// A PUT head with `Expect: 100-continue` on a raw socket: the refusal must
    /// come without the body being sent. Returns the status of the first answer.
    async fn expect_continue(&mut self, slot: &Slot) -> Result<String, Failure> {
        let head = self
            .shared
            .raw_head(slot, "Expect: 100-continue\r\nConnection: close\r\n");
        let addr = self.shared.addr;
        let exchange = async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(head.as_bytes()).await?;
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 16 * 1024 {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(got)
        };
        let got = tokio::time::timeout(RAW_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                (
                    "timeout".to_owned(),
                    "no answer to Expect: 100-continue".to_owned(),
                )
            })?
            .map_err(|e| ("io".to_owned(), format!("Expect: 100-continue: {e}")))?;
        let text = String::from_utf8_lossy(&got);
        text.split(' ')
            .nth(1)
            .filter(|_| text.starts_with("HTTP/1.1 "))
            .map(str::to_owned)
            .ok_or_else(|| ("io".to_owned(), format!("no status line in {text:?}")))
    }

    /// A valid PUT whose connection goes away mid-body, with a FIN or an RST.
    async fn cut(&mut self) {
        let size = self.shared.budget.size(&mut self.rng, 2, MAX_SIZE);
        let slot = self.shared.slot(&mut self.rng, size, None);
        let sent = self.rng.random_range(0..size);
        let pause = Duration::from_millis(self.rng.random_range(0..20));
        let reset = self.rng.random_bool(0.5);
        let head = self.shared.raw_head(&slot, "");
        let (addr, block) = (self.shared.addr, self.shared.block.clone());
        let seed = slot.seed;
        let exchange = async move {
            let mut s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            s.write_all(head.as_bytes()).await?;
            let mut body = Generated::new(&block, seed, size);
            let mut left = sent;
            while left > 0 {
                let Some(Ok(frame)) = body.frame().await else {
                    break;
                };
                let Ok(data) = frame.into_data() else { break };
                let n = (data.len() as u64).min(left) as usize;
                s.write_all(&data[..n]).await?;
                left -= n as u64;
            }
            tokio::time::sleep(pause).await;
            if reset {
                s.set_zero_linger()?;
            }
            drop(s);
            Ok::<_, std::io::Error>(())
        };
        let label = if reset { "RST sent" } else { "FIN sent" };
        match tokio::time::timeout(RAW_TIMEOUT, exchange).await {
            Ok(Ok(())) => {
                self.tally.ok(Kind::Cut, label);
                let at = Instant::now();
                self.shared
                    .cut
                    .lock()
                    .unwrap()
                    .push_back(CutSlot { slot, at });
            }
            Ok(Err(e)) => self.tally.bad(
                Kind::Cut,
                "io",
                format!("PUT {} cut after {sent} bytes: {e}", slot.get),
            ),
            Err(_) => self.tally.bad(
                Kind::Cut,
                "timeout",
                format!("PUT {} cut after {sent} bytes: timed out", slot.get),
            ),
        }
    }

    /// Retries the oldest cut slot once it is old enough; false if none is.
    async fn retry(&mut self) -> bool {
        let cut = {
            let mut queue = self.shared.cut.lock().unwrap();
            match queue.front() {
                Some(c) if c.at.elapsed() >= RETRY_AFTER => queue.pop_front(),
                _ => None,
            }
        };
        let Some(cut) = cut else { return false };
        match self.upload(&cut.slot).await {
            Ok(a) if a.status == StatusCode::CREATED => {
                self.tally.ok(Kind::Retry, "201");
                self.shared.stored(cut.slot);
            }
            // The cut has not reached the server yet: later.
            Ok(a) if a.status == StatusCode::CONFLICT && cut.at.elapsed() < RETRY_WINDOW => {
                self.tally.ok(Kind::Retry, "409 (cut not seen yet)");
                self.shared.cut.lock().unwrap().push_back(cut);
            }
            Ok(a) => self.tally.bad(
                Kind::Retry,
                a.status.as_str(),
                format!(
                    "PUT {} again after a cut: {} {}",
                    cut.slot.get, a.status, a.text
                ),
            ),
            Err((label, detail)) => self.tally.bad(
                Kind::Retry,
                &label,
                format!("PUT {} again after a cut: {detail}", cut.slot.get),
            ),
        }
        true
    }

    /// Several clients PUT one new slot at once, each on its own connection.
    async fn race(&mut self) {
        let size = self.shared.budget.size(&mut self.rng, 16 * KIB, MIB);
        let slot = Arc::new(self.shared.slot(&mut self.rng, size, None));
        let racers = self.rng.random_range(3..=5);
        let mut set = JoinSet::new();
        for _ in 0..racers {
            let mut racer = Client::new(
                Arc::clone(&self.shared),
                Arc::clone(&self.tally),
                self.rng.random(),
            );
            let slot = Arc::clone(&slot);
            set.spawn(async move { racer.upload(&slot).await });
        }
        let mut winners = 0;
        while let Some(joined) = set.join_next().await {
            match joined.expect("racer") {
                Ok(a) if a.status == StatusCode::CREATED => {
                    winners += 1;
                    if winners == 1 {
                        self.tally.ok(Kind::Race, "201");
                    } else {
                        self.tally.bad(
                            Kind::Race,
                            "201",
                            format!("race for {}: {winners} PUTs answered 201", slot.get),
                        );
                    }
                }
                Ok(a) if a.status == StatusCode::CONFLICT => self.tally.ok(Kind::Race, "409"),
                Ok(a) => self.tally.bad(
                    Kind::Race,
                    a.status.as_str(),
                    format!("race for {}: {} {}", slot.get, a.status, a.text),
                ),
                Err((label, detail)) => self.tally.bad(
                    Kind::Race,
                    &label,
                    format!("race for {}: {detail}", slot.get),
                ),
            }
        }
        if winners == 0 {
            self.tally.bad(
                Kind::Race,
                "no 201",
                format!("race for {}: no PUT stored it", slot.get),
            );
        } else {
            self.shared.stored((*slot).clone());
        }
    }

    async fn missing(&mut self) {
        let uri = format!("/upload/never/{:016x}.bin", self.rng.random::<u64>());
        match self.get(&uri, &[], 0, None).await {
            Ok(a) if a.status == StatusCode::NOT_FOUND => self.tally.ok(Kind::Missing, "404"),
            Ok(a) => self.tally.bad(
                Kind::Missing,
                a.status.as_str(),
                format!("GET {uri}: {} {}", a.status, a.text),
            ),
            Err((label, detail)) => {
                self.tally
                    .bad(Kind::Missing, &label, format!("GET {uri}: {detail}"))
            }
        }
    }

    /// A whole GET (bytes checked) or a HEAD of a stored file.
    async fn read(&mut self, kind: Kind, file: &Stored) {
        let (method, check) = if kind == Kind::Head {
            (Method::HEAD, None)
        } else {
            (Method::GET, Some((file.slot.seed, 0)))
        };
        let answer = self
            .request(method.clone(), &file.slot.get, &[], file.slot.size, check)
            .await;
        match answer.and_then(|a| judge_whole(file, &a, method == Method::HEAD)) {
            Ok(()) => self.tally.ok(kind, "200"),
            Err((label, detail)) => self.tally.bad(
                kind,
                &label,
                format!("{method} {}: {detail}", file.slot.get),
            ),
        }
    }

    async fn range(&mut self, file: &Stored) {
        let size = file.slot.size;
        // (Range header, the bytes it means; None: unsatisfiable).
        let (spec, want) = match self.rng.random_range(0..10) {
            0 => (format!("bytes={size}-"), None),
            1 => ("bytes=0-1".to_owned(), Some((0, 1.min(size - 1)))),
            2..=5 => {
                let a = self.rng.random_range(0..size);
                let b = self.rng.random_range(a..size);
                (format!("bytes={a}-{b}"), Some((a, b)))
            }
            6..=7 => {
                let a = self.rng.random_range(0..size);
                (format!("bytes={a}-"), Some((a, size - 1)))
            }
            _ => {
                let n = self.rng.random_range(1..=size);
                (format!("bytes=-{n}"), Some((size - n, size - 1)))
            }
        };
        let check = want.map(|(a, _)| (file.slot.seed, a));
        let headers = [(header::RANGE, spec.clone())];
        let answer = self.get(&file.slot.get, &headers, size, check).await;
        let judged = answer.and_then(|a| {
            let (status, range) = match want {
                Some((a, b)) => (StatusCode::PARTIAL_CONTENT, format!("bytes {a}-{b}/{size}")),
                None => (StatusCode::RANGE_NOT_SATISFIABLE, format!("bytes */{size}")),
            };
            if a.status != status {
                return Err((
                    a.status.as_str().to_owned(),
                    format!("{} {}", a.status, a.text),
                ));
            }
            if a.header(header::CONTENT_RANGE) != Some(range.as_str()) {
                return Err((
                    "content-range".into(),
                    format!(
                        "Content-Range {:?}, {range} expected",
                        a.header(header::CONTENT_RANGE)
                    ),
                ));
            }
            if let Some((from, to)) = want {
                if a.received != to - from + 1 {
                    return Err((
                        "length".into(),
                        format!("{} bytes, {} expected", a.received, to - from + 1),
                    ));
                }
                if !a.intact {
                    return Err((
                        "bytes".into(),
                        "the range's bytes differ from what was PUT".into(),
                    ));
                }
            }
            Ok(a.status)
        });
        match judged {
            Ok(status) => self.tally.ok(Kind::Range, status.as_str()),
            Err((label, detail)) => self.tally.bad(
                Kind::Range,
                &label,
                format!("GET {} Range: {spec}: {detail}", file.slot.get),
            ),
        }
    }

    /// A conditional GET; the file's validators come from a HEAD if no answer
    /// has shown them yet.
    async fn conditional(&mut self, kind: Kind, file: &Stored) {
        if file.etag.get().is_none() || file.last_modified.get().is_none() {
            self.read(Kind::Head, file).await;
        }
        let (Some(etag), Some(date)) = (file.etag.get(), file.last_modified.get()) else {
            return;
        };
        let (headers, status) = match kind {
            Kind::IfNoneMatch => (
                [(header::IF_NONE_MATCH, etag.clone())],
                StatusCode::NOT_MODIFIED,
            ),
            Kind::IfModifiedSince => (
                [(header::IF_MODIFIED_SINCE, date.clone())],
                StatusCode::NOT_MODIFIED,
            ),
            _ => (
                [(header::IF_MATCH, "\"soak-not-this-one\"".to_owned())],
                StatusCode::PRECONDITION_FAILED,
            ),
        };
        let answer = self.get(&file.slot.get, &headers, 0, None).await;
        let judged = answer.and_then(|a| {
            if a.status != status {
                return Err((
                    a.status.as_str().to_owned(),
                    format!("{} {}", a.status, a.text),
                ));
            }
            if status == StatusCode::NOT_MODIFIED && a.received != 0 {
                return Err((
                    "length".into(),
                    format!("304 with {} body bytes", a.received),
                ));
            }
            Ok(())
        });
        match judged {
            Ok(()) => self.tally.ok(kind, status.as_str()),
            Err((label, detail)) => self.tally.bad(
                kind,
                &label,
                format!("GET {} {}: {detail}", file.slot.get, headers[0].0),
            ),
        }
    }
}

/// Whether a GET (or HEAD) answer is the whole stored file, with the headers
/// every download carries and the same validators as before.
fn judge_whole(file: &Stored, a: &Answer, head: bool) -> Result<(), Failure> {
    let size = file.slot.size;
    if a.status != StatusCode::OK {
        let label = if a.status == StatusCode::NOT_FOUND {
            "404, lost"
        } else {
            a.status.as_str()
        };
        return Err((label.to_owned(), format!("{} {}", a.status, a.text)));
    }
    let length = a
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok());
    let received = if head { 0 } else { size };
    if length != Some(size) || a.received != received {
        return Err((
            "length".into(),
            format!(
                "Content-Length {length:?} and {} bytes for a file of {size}",
                a.received
            ),
        ));
    }
    if !a.intact {
        return Err(("bytes".into(), "body differs from what was PUT".into()));
    }
    if a.header(header::X_CONTENT_TYPE_OPTIONS) != Some("nosniff") {
        return Err((
            "headers".into(),
            "no X-Content-Type-Options: nosniff".into(),
        ));
    }
    for (name, seen) in [
        (header::ETAG, &file.etag),
        (header::LAST_MODIFIED, &file.last_modified),
    ] {
        let Some(value) = a.header(name.clone()) else {
            return Err(("headers".into(), format!("no {name}")));
        };
        let first = seen.get_or_init(|| value.to_owned());
        if first != value {
            return Err((
                "validators".into(),
                format!("{name} {value:?}, earlier {first:?}"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The process.

#[derive(Clone, Copy, Default)]
struct Level {
    rss: u64,
    /// The part of `rss` that is the heap and stacks (the rest: mapped files).
    anon: u64,
    fds: u64,
    threads: u64,
}

fn level(pid: u32) -> Option<Level> {
    Some(Level {
        rss: status_of(pid, "VmRSS:")?,
        anon: status_of(pid, "RssAnon:")?,
        fds: fd_count(pid)?,
        threads: status_raw_of(&pid.to_string(), "Threads:")?,
    })
}

/// The highest RSS, descriptor and thread counts seen, every 100 ms.
struct Monitor {
    peak: Arc<[AtomicU64; 3]>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Monitor {
    fn start(pid: u32) -> Monitor {
        let peak: Arc<[AtomicU64; 3]> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(l) = level(pid) {
                        for (p, v) in peak.iter().zip([l.rss, l.fds, l.threads]) {
                            p.fetch_max(v, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Monitor { peak, stop, task }
    }

    fn peak(&self) -> Level {
        let [rss, fds, threads] = [0, 1, 2].map(|i| self.peak[i].load(Ordering::Relaxed));
        Level {
            rss,
            anon: 0,
            fds,
            threads,
        }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// The level once the server is idle: its descriptor count has held still for
/// a second and its threads are back to `idle_threads` (tokio's blocking
/// threads, up to a few hundred under this load, exit after 10 s without work,
/// and each holds some stack), or `SETTLE` has passed. Start and end are both
/// taken so, for a like-for-like comparison.
async fn quiet_level(pid: u32, idle_threads: u64) -> (Option<Level>, Duration) {
    let started = Instant::now();
    let mut last = level(pid);
    let mut still = 0;
    loop {
        let Some(now) = last else {
            return (None, started.elapsed());
        };
        if (still >= 5 && now.threads <= idle_threads) || started.elapsed() >= SETTLE {
            return (last, started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let next = level(pid);
        still = if next.is_some_and(|n| n.fds == now.fds) {
            still + 1
        } else {
            0
        };
        last = next;
    }
}

// ---------------------------------------------------------------------------
// The run.

/// `clients` clients for `secs`; returns the wall time until the last one is
/// done and how many had to be stopped (none should: every request is bounded).
async fn drive(
    shared: &Arc<Shared>,
    tally: &Arc<Tally>,
    clients: usize,
    secs: u64,
    seed: u64,
) -> (Duration, usize) {
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut set = JoinSet::new();
    for i in 0..clients {
        let mut client = Client::new(
            Arc::clone(shared),
            Arc::clone(tally),
            seed ^ ((i as u64) << 20),
        );
        set.spawn(async move {
            while Instant::now() < until {
                client.one().await;
            }
        });
    }
    // A client finishes the request it is in; the longest is bounded by its timeout.
    let limit = until + request_timeout(MAX_SIZE) + Duration::from_secs(15);
    let mut stuck = 0;
    loop {
        match tokio::time::timeout_at(limit.into(), set.join_next()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => std::panic::resume_unwind(e.into_panic()),
            Ok(None) => break,
            Err(_) => {
                stuck = set.len();
                set.abort_all();
                while set.join_next().await.is_some() {}
                break;
            }
        }
    }
    (started.elapsed(), stuck)
}

/// What the read-back after the soak found.
#[derive(Default)]
struct Recheck {
    files: u64,
    bytes: u64,
    corrupt: u64,
    lost: u64,
    unreadable: u64,
    /// Cut (never retried) and refused slots, all of which must be 404.
    empty_slots: u64,
    left_behind: u64,
    details: Vec<String>,
}

/// Every stored file read back byte for byte, and every cut or refused slot
/// that was never stored asked for.
async fn recheck(shared: &Arc<Shared>) -> Recheck {
    let files: Arc<Vec<Arc<Stored>>> = Arc::new(shared.files.read().unwrap().clone());
    let mut empty: Vec<String> = shared
        .cut
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.slot.get.clone())
        .collect();
    empty.extend(shared.refused.lock().unwrap().iter().cloned());
    let empty = Arc::new(empty);
    let next = Arc::new(AtomicUsize::new(0));
    let found = Arc::new(Mutex::new(Recheck {
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.slot.size).sum(),
        empty_slots: empty.len() as u64,
        ..Recheck::default()
    }));
    let mut set = JoinSet::new();
    for i in 0..RECHECK_CONNECTIONS {
        let mut client = Client::new(Arc::clone(shared), Arc::default(), i as u64);
        let (files, empty, next, found) = (
            Arc::clone(&files),
            Arc::clone(&empty),
            Arc::clone(&next),
            Arc::clone(&found),
        );
        set.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if let Some(file) = files.get(n) {
                    // No `Connection: close` or fresh connections needed here.
                    let answer = client
                        .get(
                            &file.slot.get,
                            &[],
                            file.slot.size,
                            Some((file.slot.seed, 0)),
                        )
                        .await;
                    if let Err((label, detail)) = answer.and_then(|a| judge_whole(file, &a, false))
                    {
                        let mut found = found.lock().unwrap();
                        match label.as_str() {
                            "404, lost" => found.lost += 1,
                            "length" | "bytes" | "validators" => found.corrupt += 1,
                            _ => found.unreadable += 1,
                        }
                        if found.details.len() < DETAILS {
                            found
                                .details
                                .push(format!("read-back GET {}: {detail}", file.slot.get));
                        }
                    }
                } else if let Some(uri) = empty.get(n - files.len()) {
                    match client.get(uri, &[], 0, None).await {
                        Ok(a) if a.status == StatusCode::NOT_FOUND => {}
                        outcome => {
                            let mut found = found.lock().unwrap();
                            found.left_behind += 1;
                            if found.details.len() < DETAILS {
                                let what = match outcome {
                                    Ok(a) => a.status.to_string(),
                                    Err((_, detail)) => detail,
                                };
                                found
                                    .details
                                    .push(format!("GET {uri}, a slot never stored: {what}"));
                            }
                        }
                    }
                } else {
                    break;
                }
            }
        });
    }
    while let Some(joined) = set.join_next().await {
        if let Err(e) = joined {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    Arc::try_unwrap(found)
        .ok()
        .expect("read-back done")
        .into_inner()
        .unwrap()
}

/// Removes the stored files, several shard directories at once: where the file
/// system discards blocks on delete (as the CI VM's ext4 does), one unlink at a
/// time manages a few hundred files a second, and a run stores 100,000.
fn remove_files(data: &Path) {
    let Ok(shards) = std::fs::read_dir(data.join("files")) else {
        return;
    };
    let shards: Vec<PathBuf> = shards.filter_map(|e| Some(e.ok()?.path())).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                while let Some(shard) = shards.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let _ = std::fs::remove_dir_all(shard);
                }
            });
        }
    });
}

/// The server's warnings and errors, besides the refused slots this run asks for.
fn server_warnings(log: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(log) else {
        return vec![format!("cannot read {}", log.display())];
    };
    std::io::BufRead::lines(std::io::BufReader::new(file))
        .map_while(Result::ok)
        .filter(|l| {
            (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains("authorization failed")
        })
        .collect()
}

/// The server's own counts of uploads and of connections and requests it turned
/// away or closed, from its admin listener: `name{labels} value` lines.
async fn server_counts(admin: SocketAddr) -> Vec<String> {
    const SHOWN: [&str; 4] = [
        "upslot_uploads_total",
        "upslot_connections_refused_total",
        "upslot_connections_closed_total",
        "upslot_busy_rejections_total",
    ];
    let fetch = async {
        let mut conn = try_connect::<ReqBody>(admin).await.ok()?;
        let req = Request::get("/metrics")
            .header(header::HOST, admin.to_string())
            .body(http_body_util::Empty::new().boxed())
            .ok()?;
        let body = conn.send_request(req).await.ok()?.into_body();
        body.collect().await.ok().map(|b| b.to_bytes())
    };
    let Ok(Some(text)) = tokio::time::timeout(Duration::from_secs(10), fetch).await else {
        return vec!["(no answer from the admin listener)".to_owned()];
    };
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| SHOWN.iter().any(|m| l.starts_with(m)))
        .map(|l| l.strip_prefix("upslot_").unwrap_or(l).to_owned())
        .collect()
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / MIB as f64)
}

/// A Garage cluster and a PostgreSQL started by `deploy/cluster/` in `dir`,
/// stopped when dropped.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn script(name: &str, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/cluster")
            .join(name);
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{name} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts both, and returns them with the `[storage]` and `[index]` tables.
    fn start(dir: &Path) -> (Cluster, String) {
        std::fs::create_dir_all(dir).expect("cluster directory");
        let path = dir.display().to_string();
        Cluster::script("garage.sh", &["start", &path]);
        let cluster = Cluster {
            dir: dir.to_owned(),
        };
        Cluster::script("postgres.sh", &["start", &path]);
        let env = |file: &str| -> BTreeMap<String, String> {
            std::fs::read_to_string(dir.join(file))
                .expect("an env file")
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect()
        };
        let (s3, pg) = (env("garage.env"), env("postgres.env"));
        let tables = format!(
            "[storage]\nbackend = \"s3\"\nendpoint = {:?}\nregion = {:?}\nbucket = {:?}\n\
             access_key_id = {:?}\nsecret_access_key = {:?}\n\
             [index]\nbackend = \"postgres\"\nurl = {:?}\n",
            s3["S3_ENDPOINT"],
            s3["S3_REGION"],
            s3["S3_BUCKET"],
            s3["AWS_ACCESS_KEY_ID"],
            s3["AWS_SECRET_ACCESS_KEY"],
            pg["UPSLOT_INDEX_URL"],
        );
        (cluster, tables)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let path = self.dir.display().to_string();
        for script in ["garage.sh", "postgres.sh"] {
            let _ = Command::new("bash")
                .arg(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("deploy/cluster")
                        .join(script),
                )
                .args(["stop", &path])
                .output();
        }
    }
}

/// Runs the soak and prints the report; false on any failure.
async fn run(s: Settings) -> bool {
    let scratch = scratch_dir(&s.parent, "upslot-soak-", "soak scratch directory");
    let dir = scratch.path();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    // PostgreSQL runs as its own user, which must reach its directory below.
    let _cluster = s.cluster.then(|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
            .expect("scratch directory reachable");
        Cluster::start(&dir.join("cluster"))
    });
    let tables = _cluster.as_ref().map_or("", |(_, tables)| tables.as_str());
    let (config, limits) = write_config(&s, dir, addr, admin, tables);
    let mut proc = Proc::spawn(
        "upslot",
        Command::new(&s.bin).arg("serve").arg("-c").arg(&config),
        dir,
    );
    wait_listening(addr, &mut proc).await;
    let pid = proc.pid();
    RUN_START.get_or_init(Instant::now);
    let idle_threads = level(pid).expect("server process").threads;
    println!(
        "upslot soak: {} clients for {} s (after {} s of warm-up) against {} (pid {pid}) on {addr}, \
         HTTP/1.1 over 127.0.0.1; {}; fsync {}; valid uploads paced to {}/s on average.",
        s.clients,
        s.secs,
        s.warmup,
        s.bin.display(),
        if s.cluster {
            "files on S3 (3-node Garage), index on PostgreSQL"
        } else {
            "files on local disk, embedded index"
        },
        on_off(s.fsync),
        show_size(s.put_rate),
    );
    println!("Limits: {limits}.");
    println!(
        "Machine: {}; scratch {} ({}); load average {}.",
        machine(),
        dir.display(),
        filesystem_of(dir),
        load_average()
    );

    let shared = Arc::new(Shared {
        addr,
        block: pattern_block(),
        files: RwLock::default(),
        cut: Mutex::default(),
        refused: Mutex::default(),
        next_id: AtomicU64::new(0),
        budget: Budget {
            started: Instant::now(),
            rate: s.put_rate as f64,
            used: AtomicU64::new(0),
        },
    });
    let monitor = Monitor::start(pid);

    let warm = Arc::new(Tally::default());
    let (_, warm_stuck) = drive(&shared, &warm, s.clients, s.warmup, 1).await;
    let (start, _) = quiet_level(pid, idle_threads).await;
    let start = start.expect("server process");
    let files_at_start = shared.files.read().unwrap().len() as u64;

    let tally = Arc::new(Tally::default());
    let (wall, stuck) = drive(&shared, &tally, s.clients, s.secs, 2).await;
    let peak = monitor.peak();
    let soak_files = shared.files.read().unwrap().len() as u64 - files_at_start;

    let found = recheck(&shared).await;
    let server = server_counts(admin).await;
    let rss_max = start.rss + RSS_SLACK + INDEX_BYTES_PER_FILE * soak_files;
    let fds_max = start.fds + FD_SLACK;
    let (end, settled_in) = quiet_level(pid, idle_threads).await;
    let hwm = status_of(pid, "VmHWM:").unwrap_or(0);
    monitor.stop().await;
    let alive = proc.running();
    proc.stop();
    let exit = proc.child.try_wait().ok().flatten();
    let warnings = server_warnings(&proc.stderr);
    let removing = Instant::now();
    let data = dir.join("data");
    tokio::task::spawn_blocking(move || remove_files(&data))
        .await
        .expect("removing the data directory");
    let removed_in = removing.elapsed();

    // Requests by kind and status.
    println!();
    println!("| kind | expected | requests | by status | unexpected |");
    println!("|---|---|---:|---|---:|");
    let counts = tally.counts.lock().unwrap().clone();
    for kind in Kind::ALL {
        let rows: Vec<_> = counts.iter().filter(|((k, _), _)| *k == kind).collect();
        let total: u64 = rows.iter().map(|(_, c)| c[0] + c[1]).sum();
        let bad: u64 = rows.iter().map(|(_, c)| c[1]).sum();
        let by = rows
            .iter()
            .map(|((_, label), c)| {
                let mark = if c[1] > 0 { " (!)" } else { "" };
                format!("{label} x{}{mark}", count(c[0] + c[1]))
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "| {} | {} | {} | {} | {} |",
            kind.name(),
            kind.expected(),
            count(total),
            if by.is_empty() { "-".into() } else { by },
            count(bad)
        );
    }
    let total = tally.total();
    println!(
        "| all | | {} | {} per second | {} |",
        count(total),
        count((total as f64 / wall.as_secs_f64()).round() as u64),
        count(tally.unexpected())
    );
    println!();
    println!(
        "Soak: {} requests in {:.1} s ({}/s; a race counts each PUT, a cut counts once), {} files \
         ({} MiB) stored during it; warm-up: {} requests, {} unexpected. 5xx answers: {}.",
        count(total),
        wall.as_secs_f64(),
        count((total as f64 / wall.as_secs_f64()).round() as u64),
        count(soak_files),
        mib(shared
            .files
            .read()
            .unwrap()
            .iter()
            .skip(files_at_start as usize)
            .map(|f| f.slot.size)
            .sum()),
        count(warm.total()),
        count(warm.unexpected()),
        tally.server_errors.load(Ordering::Relaxed) + warm.server_errors.load(Ordering::Relaxed),
    );
    println!(
        "Read-back of every stored file (warm-up and soak): {} files, {} MiB: {} corrupt, {} lost, \
         {} unreadable; {} cut or refused slots: {} left behind.",
        count(found.files),
        mib(found.bytes),
        found.corrupt,
        found.lost,
        found.unreadable,
        count(found.empty_slots),
        found.left_behind
    );

    // The process.
    let end_level = end.unwrap_or_default();
    let rss_ok = end.is_some() && end_level.rss <= rss_max;
    let fds_ok = end.is_some() && end_level.fds <= fds_max;
    let verdict = |ok: bool| if ok { "pass" } else { "FAIL" };
    println!();
    println!(
        "| upslot process | start (idle after the warm-up) | peak (warm-up and soak) | end (idle, {:.1} s after the read-back) | allowed at the end | |",
        settled_in.as_secs_f64()
    );
    println!("|---|---:|---:|---:|---|---|");
    println!(
        "| RSS, MiB | {} | {} | {} | ≤ {} (start + {} + {} B x {} files) | {} |",
        mib(start.rss),
        mib(peak.rss.max(hwm)),
        mib(end_level.rss),
        mib(rss_max),
        show_size(RSS_SLACK),
        INDEX_BYTES_PER_FILE,
        count(soak_files),
        verdict(rss_ok)
    );
    println!(
        "| of which anonymous, MiB | {} | - | {} | - | |",
        mib(start.anon),
        mib(end_level.anon)
    );
    println!(
        "| open descriptors | {} | {} | {} | ≤ {} (start + {FD_SLACK}) | {} |",
        start.fds,
        peak.fds,
        end_level.fds,
        fds_max,
        verdict(fds_ok)
    );
    println!(
        "| threads | {} | {} | {} | - ({idle_threads} before any request) | |",
        start.threads, peak.threads, end_level.threads
    );
    println!();
    println!(
        "Peaks: the highest of samples every 100 ms (and, for RSS, VmHWM). \
         Server {}; load average now {}.",
        match (alive, exit) {
            (true, Some(status)) => format!("ran to the end and stopped on SIGTERM ({status})"),
            (true, None) => "ran to the end".to_owned(),
            (false, _) => "DIED during the run".to_owned(),
        },
        load_average()
    );

    println!("Server's counts (/metrics): {}.", server.join(", "));
    println!(
        "Stored files removed in {:.1} s after the server stopped.",
        removed_in.as_secs_f64()
    );
    println!(
        "Server log: {} warnings or errors besides the refused slots'.",
        warnings.len()
    );
    for line in warnings.iter().take(10) {
        println!("  {line}");
    }

    let mut failures = Vec::new();
    if tally.unexpected() + warm.unexpected() > 0 {
        failures.push(format!(
            "{} unexpected answers",
            tally.unexpected() + warm.unexpected()
        ));
    }
    if found.corrupt + found.lost + found.unreadable + found.left_behind > 0 {
        failures.push("read-back found corrupt, lost, unreadable or left-behind files".to_owned());
    }
    if stuck + warm_stuck > 0 {
        failures.push(format!(
            "{} clients did not finish in time",
            stuck + warm_stuck
        ));
    }
    if !rss_ok {
        failures.push("RSS did not come back".to_owned());
    }
    if !fds_ok {
        failures.push("open descriptors did not come back".to_owned());
    }
    if !alive {
        failures.push("the server died".to_owned());
    }
    let created = server
        .iter()
        .find_map(|l| l.strip_prefix("uploads_total{outcome=\"created\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    if let Some(created) = created
        && created != found.files
    {
        failures.push(format!(
            "the server counted {created} uploads created, the clients {} answered 201",
            found.files
        ));
    }
    if failures.is_empty() {
        println!("Result: pass.");
        return true;
    }
    println!("Result: FAIL: {}.", failures.join("; "));
    let mut details = warm.details.lock().unwrap().clone();
    details.extend(tally.details.lock().unwrap().iter().cloned());
    details.extend(found.details);
    for d in details.iter().take(DETAILS) {
        eprintln!("  {d}");
    }
    if !alive {
        for line in proc.stderr_tail(20) {
            eprintln!("  upslot: {line}");
        }
    }
    false
}
