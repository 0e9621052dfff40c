//! Crash safety at scale: the real binary is SIGKILLed five times, each time
//! while 100 uploads of 1–20 MB are in flight, and restarted on the same data
//! directory with fsync at its default (on). After each restart every upload
//! acknowledged with 201, in any round, reads back byte for byte; no upload cut
//! short is visible; every interrupted slot takes a retry; and the data
//! directory and the index hold exactly the stored files. What this relies on
//! is in docs/durability.md.
//!
//! Sizes, bodies and kill instants come from one seed, printed at the start;
//! `UPSLOT_CRASH_SEED=<seed> cargo test --test crash` replays a run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use support::{Raw, put_head, sha256_hex};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::timeout;
use upslot::auth::{Scheme, sign_query};
use upslot::path::SlotPath;
use upslot::store::Key;

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
const SECRET: &str = "crash-test-secret-5b1e";
const BASE_PATH: &str = "/upload/";
const ROUNDS: usize = 5;
const UPLOADS: usize = 100;
const MIN_SIZE: usize = 1_000_000;
const MAX_SIZE: usize = 20_000_000;
/// Bodies are slices of one random pool, at random offsets: no two alike and
/// none repeating within itself, without generating gigabytes.
const POOL: usize = 24 << 20;
/// Bytes per write while a body is sent.
const CHUNK: usize = 256 << 10;
/// The kill comes right after the k-th 201, k at most this, so that the larger
/// uploads are still sending their bodies.
const LAST_KILL: usize = 80;
/// Downloads checked at once.
const CHECKS_AT_ONCE: usize = 4;
/// The bound on every wait: a service that hangs fails the test.
const WAIT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(25);

#[derive(Clone)]
struct Upload {
    /// The signed path, below `base_path`.
    path: String,
    body: Bytes,
    sha256: String,
}

impl Upload {
    fn size(&self) -> u64 {
        self.body.len() as u64
    }

    /// The v1-signed PUT target; the same for the first try and the retry.
    fn put_target(&self) -> String {
        let query = sign_query(Scheme::V1, SECRET.as_bytes(), &self.path, self.size(), None)
            .expect("v1 signs");
        format!("{}?{query}", self.get_target())
    }

    fn get_target(&self) -> String {
        format!("{BASE_PATH}{}", SlotPath::encode(&self.path))
    }

    /// Where the store keeps the file: `files/<2 hex>/<64 hex>`.
    fn file(&self, data: &Path) -> PathBuf {
        let hex = Key::for_path(&self.path).hex();
        data.join("files").join(&hex[..2]).join(hex)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    /// The body was not sent in full: nothing may be stored.
    Cut,
    /// The whole body was sent but no answer came: the file is stored whole
    /// (the commit ran before the kill) or not at all.
    Unanswered,
    Refused(u16),
}

/// Sends `upload` on `raw` and reads the answer; reports a 201 on `acked`.
async fn put(mut raw: Raw, upload: Upload, acked: Option<mpsc::UnboundedSender<()>>) -> Outcome {
    let mut sent = raw
        .send(&put_head(&upload.put_target(), upload.size(), &[]))
        .await;
    for chunk in upload.body.chunks(CHUNK) {
        if !sent {
            break;
        }
        sent = timeout(WAIT, raw.send(chunk))
            .await
            .expect("the service takes the body");
    }
    match raw.read_response().await {
        Some(r) if r.status == 201 => {
            if let Some(acked) = acked {
                let _ = acked.send(());
            }
            Outcome::Created
        }
        Some(r) => Outcome::Refused(r.status),
        None if sent => Outcome::Unanswered,
        None => Outcome::Cut,
    }
}

/// `uploads`, all at once; the outcomes in the same order.
async fn put_all(
    addr: SocketAddr,
    uploads: &[Upload],
    acked: Option<mpsc::UnboundedSender<()>>,
) -> Vec<tokio::task::JoinHandle<Outcome>> {
    let mut tasks = Vec::new();
    // Every connection is open before any body goes: a kill cannot beat one.
    for upload in uploads {
        let raw = Raw::connect(addr).await;
        tasks.push(tokio::spawn(put(raw, upload.clone(), acked.clone())));
    }
    tasks
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut out = Vec::new();
    for task in tasks {
        let outcome = timeout(WAIT, task).await.expect("every upload ends");
        out.push(outcome.expect("the upload task did not panic"));
    }
    out
}

/// `upslot serve -c <dir>/upslot.toml`, stdout and the log in `dir`.
struct Upslot {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log: PathBuf,
}

impl Drop for Upslot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upslot {
    /// The `n`th start on `dir`; returns once both listeners are bound.
    fn start(dir: &Path, n: usize) -> Upslot {
        let stdout = dir.join(format!("stdout-{n}.log"));
        let log = dir.join(format!("upslot-{n}.log"));
        let mut child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(dir.join("upslot.toml"))
            .current_dir(dir)
            .env_remove("UPSLOT_SECRET")
            .env_remove("UPSLOT_LOG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            let banner = std::fs::read_to_string(&stdout).unwrap_or_default();
            let addr = banner
                .lines()
                .find_map(|l| l.strip_prefix("upslot listening on http://"))
                .map(|rest| rest.split('/').next().unwrap().parse().unwrap());
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let admin = text.lines().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                if line["message"] != "listening" {
                    return None;
                }
                line["admin"].as_str()?.parse().ok()
            });
            if let (Some(addr), Some(admin)) = (addr, admin) {
                return Upslot {
                    child,
                    addr,
                    admin,
                    log,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("upslot exited at start ({status}): {text}");
            }
            assert!(Instant::now() < deadline, "upslot not listening: {text}");
            std::thread::sleep(POLL);
        }
    }

    /// The last lines of the log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// SIGKILL, and the proof that it, not something else, ended the process.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert_eq!(status.signal(), Some(9), "{status}: {log}");
    }

    /// Stored files and bytes, as `/metrics` has them from the index.
    async fn stored(&self) -> (u64, u64) {
        let r = common::request(self.admin, Method::GET, "/metrics", &[], Vec::new()).await;
        assert_eq!(r.status, StatusCode::OK);
        let text = r.text();
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("{name} missing from /metrics"))
                .parse()
                .unwrap()
        };
        (value("upslot_stored_files"), value("upslot_stored_bytes"))
    }
}

/// GET: 200 with the body sent, byte for byte; the metadata holds its size and
/// SHA-256 (which the ETag shows too).
async fn check_intact(addr: SocketAddr, data: PathBuf, upload: Upload) {
    let r = common::request(addr, Method::GET, &upload.get_target(), &[], Vec::new()).await;
    let path = &upload.path;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
    assert_eq!(r.body.len(), upload.body.len(), "{path}: length");
    assert!(r.body == upload.body, "{path}: the body differs");
    let etag = format!("\"{}\"", &upload.sha256[..32]);
    assert_eq!(r.header("etag"), Some(etag.as_str()), "{path}");
    let meta = common::stored_meta(&upload.file(&data));
    assert_eq!(meta["sha256"], upload.sha256.as_str(), "{path}: metadata");
    assert_eq!(meta["size"], upload.size(), "{path}: metadata");
}

/// [`check_intact`] for each of `uploads`, a few at a time.
async fn check_all_intact(addr: SocketAddr, data: &Path, uploads: &[Upload]) {
    let mut set = JoinSet::new();
    for upload in uploads {
        if set.len() == CHECKS_AT_ONCE {
            join_next(&mut set).await;
        }
        set.spawn(check_intact(addr, data.to_owned(), upload.clone()));
    }
    while !set.is_empty() {
        join_next(&mut set).await;
    }
}

async fn join_next(set: &mut JoinSet<()>) {
    let done = timeout(WAIT, set.join_next())
        .await
        .expect("a download ends");
    if let Some(Err(e)) = done {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// GET and HEAD: 404.
async fn check_absent(addr: SocketAddr, upload: &Upload) {
    for method in [Method::GET, Method::HEAD] {
        let r = common::request(addr, method.clone(), &upload.get_target(), &[], Vec::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {}", upload.path);
    }
}

/// The data directory holds the bodies of `stored` and nothing else (no
/// temporary, named or unnamed, besides the service's `lock` and
/// `control.sock`), and the index counts the same.
async fn check_store(server: &Upslot, data: &Path, stored: &[Upload]) {
    let mut want: Vec<PathBuf> = stored.iter().map(|u| u.file(data)).collect();
    want.sort();
    let mut got = common::walk(data);
    got.retain(|p| {
        p.file_name()
            .is_some_and(|n| n != "lock" && n != "control.sock")
    });
    assert!(
        got == want,
        "on disk: {} files, stored: {}; extra: {:?}",
        got.len(),
        want.len(),
        got.iter().filter(|p| !want.contains(p)).collect::<Vec<_>>()
    );
    let held = common::unnamed_files_of(&server.pid(), data);
    assert!(held.is_empty(), "the service holds {held:?}");
    let bytes = stored.iter().map(Upload::size).sum();
    assert_eq!(server.stored().await, (stored.len() as u64, bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_loses_no_acknowledged_file_and_leaves_nothing() {
    let seed = std::env::var("UPSLOT_CRASH_SEED")
        .map(|s| s.parse().expect("UPSLOT_CRASH_SEED is a number"))
        .unwrap_or_else(|_| rand::random());
    println!("seed {seed} (UPSLOT_CRASH_SEED={seed} replays this run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pool = vec![0; POOL];
    rng.fill_bytes(&mut pool);
    let pool = Bytes::from(pool);

    let dir = common::tempdir();
    let data = dir.path().join("data");
    std::fs::write(
        dir.path().join("upslot.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\n\
             secret = \"{SECRET}\"\n\
             # the disk under test may have less than the default 1 GiB to spare\n\
             min_free_space = \"0\"\n\
             [limits]\n\
             # all uploads come from one client, 127.0.0.1\n\
             max_uploads = {room}\n\
             max_uploads_per_client = {room}\n\
             max_connections_per_client = {room}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\n",
            data.display(),
            room = 2 * UPLOADS,
        ),
    )
    .unwrap();

    let started = Instant::now();
    let mut server = Upslot::start(dir.path(), 0);
    // Every upload that got a 201, or was found stored whole after a kill.
    let mut stored: Vec<Upload> = Vec::new();
    for round in 0..ROUNDS {
        let phase = Instant::now();
        let uploads: Vec<Upload> = (0..UPLOADS)
            .map(|i| {
                let size = rng.random_range(MIN_SIZE..=MAX_SIZE);
                let start = rng.random_range(0..=POOL - size);
                let body = pool.slice(start..start + size);
                Upload {
                    path: format!("round{round}/{i:03}.bin"),
                    sha256: sha256_hex(&body),
                    body,
                }
            })
            .collect();
        let kill_after = rng.random_range(1..=LAST_KILL);
        let hashing = phase.elapsed().as_secs_f64();

        let phase = Instant::now();
        let (acked, mut acks) = mpsc::unbounded_channel();
        let tasks = put_all(server.addr, &uploads, Some(acked)).await;
        for _ in 0..kill_after {
            let ack = timeout(WAIT, acks.recv())
                .await
                .expect("uploads are acknowledged");
            if ack.is_none() {
                let outcomes = finish(tasks).await;
                panic!(
                    "the uploads ended before the kill: {outcomes:?}\n{}",
                    server.log_tail()
                );
            }
        }
        server.kill();
        let outcomes = finish(tasks).await;
        server = Upslot::start(dir.path(), round + 1);
        let uploading = phase.elapsed().as_secs_f64();
        let phase = Instant::now();

        let mut acknowledged = 0;
        let mut cut = Vec::new();
        let mut unanswered = Vec::new();
        for (upload, outcome) in uploads.iter().zip(&outcomes) {
            match outcome {
                Outcome::Created => {
                    acknowledged += 1;
                    stored.push(upload.clone());
                }
                Outcome::Cut => cut.push(upload.clone()),
                Outcome::Unanswered => unanswered.push(upload.clone()),
                Outcome::Refused(status) => panic!("{}: {status} before the kill", upload.path),
            }
        }
        assert!(
            acknowledged > 0 && cut.len() + unanswered.len() > 0,
            "round {round} needs acknowledged and interrupted uploads"
        );
        // A body sent in full may have been committed in the instant before
        // the kill, with its 201 lost: then it must be whole.
        let mut stored_unacknowledged = Vec::new();
        let mut interrupted = cut;
        for upload in unanswered {
            let r = common::request(
                server.addr,
                Method::HEAD,
                &upload.get_target(),
                &[],
                Vec::new(),
            )
            .await;
            if r.status == StatusCode::OK {
                stored_unacknowledged.push(upload);
            } else {
                interrupted.push(upload);
            }
        }
        stored.extend(stored_unacknowledged.iter().cloned());

        check_all_intact(server.addr, &data, &stored).await;
        let intact = stored.len();
        for upload in &interrupted {
            check_absent(server.addr, upload).await;
        }
        check_store(&server, &data, &stored).await;

        let checking = phase.elapsed().as_secs_f64();
        let phase = Instant::now();
        // The same signed URLs again: each interrupted slot is free, and a
        // slot stored without its 201 is taken (409 before any body).
        for upload in &stored_unacknowledged {
            let mut raw = Raw::connect(server.addr).await;
            let head = put_head(
                &upload.put_target(),
                upload.size(),
                &["Expect: 100-continue"],
            );
            assert!(raw.send(&head).await);
            let r = raw.read_response().await.expect("an answer");
            assert_eq!(r.status, 409, "{}: {}", upload.path, r.head);
        }
        let retries = finish(put_all(server.addr, &interrupted, None).await).await;
        for (upload, outcome) in interrupted.iter().zip(&retries) {
            assert_eq!(*outcome, Outcome::Created, "retry of {}", upload.path);
        }
        check_all_intact(server.addr, &data, &interrupted).await;
        stored.extend(interrupted.iter().cloned());
        check_store(&server, &data, &stored).await;

        println!(
            "round {round}: killed after 201 number {kill_after}; acknowledged {acknowledged}, \
             interrupted {} (stored whole without a 201: {}), retried {}, intact {intact} \
             (every file stored so far); hashing {hashing:.1} s, uploads {uploading:.1} s, \
             checks {checking:.1} s, retries {:.1} s, {:.1} s in all",
            interrupted.len() + stored_unacknowledged.len(),
            stored_unacknowledged.len(),
            interrupted.len(),
            phase.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64(),
        );
    }
}
