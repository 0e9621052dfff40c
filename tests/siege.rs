//! The release-style attack on the real binary, under `ulimit -n 256`: 300
//! connections from anyone, with no credentials (idle, slow request heads,
//! idle HTTP/2, refused bodies dripped a byte at a time), reconnecting whenever
//! they are closed. A new client must still upload and download while they are
//! held, and at once when they let go (docs/limits.md). The timeouts are set
//! far past the test's length: only the caps and eviction can save the service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use upslot::auth::{Scheme, sign_query};

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
const SECRET: &str = "siege-test-secret-0123";
/// How long the attack is held while the new client works.
const HOLD: Duration = Duration::from_secs(8);
/// No single request of the new client may take longer: far more than a
/// request needs, far less than any timeout that could have freed room.
const PATIENCE: Duration = Duration::from_secs(10);

struct Upslot {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Upslot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Upslot {
    /// `upslot serve` under `ulimit -n descriptors`, on a fresh data directory.
    fn start(descriptors: u32, limits: &str) -> Upslot {
        let dir = common::tempdir();
        let config = dir.path().join("upslot.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\nsecret = \"{SECRET}\"\n\
                 min_free_space = \"0\"\nfsync = false\nidle_timeout = \"120s\"\n\
                 shutdown_timeout = \"120s\"\n[limits]\nheader_timeout = \"120s\"\n\
                 discard_timeout = \"120s\"\n{limits}[admin]\nlisten = \"127.0.0.1:0\"\n",
                data = dir.path().join("data").display()
            ),
        )
        .unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {descriptors} && exec \"$0\" serve -c \"$1\""
            ))
            .arg(BIN)
            .arg(&config)
            .env_remove("UPSLOT_SECRET")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines
            .take(200)
            .map_while(Result::ok)
            .find_map(|line| {
                let rest = line.strip_prefix("upslot listening on http://")?;
                rest.split('/').next()?.parse().ok()
            })
            .expect("the banner names the address");
        Upslot { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap()
    }

    /// SIGTERM, then the exit; panics if it takes longer than `limit`.
    fn terminate(mut self, limit: Duration) {
        common::send_signal(&self.child, "TERM");
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {}", self.log());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("still running {limit:?} after SIGTERM:\n{}", self.log());
    }
}

fn target(path: &str, size: u64) -> String {
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), path, size, None).unwrap();
    format!("/upload/{}?{query}", upslot::path::SlotPath::encode(path))
}

/// One upload and its download by a new client, each on a fresh connection;
/// the error says which step failed and how.
async fn upload_and_download(addr: SocketAddr, path: &str, body: &[u8]) -> Result<(), String> {
    let step = |what: &'static str, method: Method, target: String, body: Vec<u8>| async move {
        let request = common::request(addr, method, &target, &[], body);
        tokio::time::timeout(PATIENCE, request)
            .await
            .map_err(|_| format!("{what}: no answer within {PATIENCE:?}"))
    };
    let put = step(
        "PUT",
        Method::PUT,
        target(path, body.len() as u64),
        body.to_vec(),
    )
    .await?;
    if put.status != StatusCode::CREATED {
        return Err(format!("PUT: {} {}", put.status, put.text()));
    }
    let get = step("GET", Method::GET, format!("/upload/{path}"), Vec::new()).await?;
    if get.status != StatusCode::OK || get.body != body {
        return Err(format!("GET: {} ({} bytes)", get.status, get.body.len()));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    /// Connects and says nothing.
    Idle,
    /// A request head, a byte a second.
    SlowHead,
    /// HTTP/2 with prior knowledge: one request, then silence.
    IdleH2,
    /// A GET with a 1 MB body, refused (404), the body dripped a byte a second.
    DripBody,
}

const ATTACKS: [Attack; 4] = [
    Attack::Idle,
    Attack::SlowHead,
    Attack::IdleH2,
    Attack::DripBody,
];

/// Holds one attacking connection of `kind` from `source` until `stop`,
/// opening a new one whenever the server closes it; counts the openings.
async fn attacker(
    addr: SocketAddr,
    source: IpAddr,
    kind: Attack,
    stop: Arc<AtomicBool>,
    opened: Arc<AtomicU64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = support::connect_from(addr, source).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let held = async {
            match kind {
                Attack::Idle => std::future::pending::<()>().await,
                Attack::SlowHead => {
                    let _ = stream
                        .write_all(b"GET /upload/a/b HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                        .await;
                    while stream.write_all(b"a").await.is_ok() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Attack::DripBody => {
                    let head =
                        b"GET /upload/a/b HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n";
                    let _ = stream.write_all(head).await;
                    while stream.write_all(b"a").await.is_ok() {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                Attack::IdleH2 => {
                    let Ok((mut sender, conn)) = hyper::client::conn::http2::handshake(
                        TokioExecutor::new(),
                        TokioIo::new(stream),
                    )
                    .await
                    else {
                        return;
                    };
                    let conn = tokio::spawn(conn);
                    let req = Request::builder()
                        .uri(format!("http://{addr}/upload/a/b"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let _ = sender.send_request(req).await;
                    let _ = conn.await;
                }
            }
        };
        tokio::select! {
            () = held => {}
            () = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(50)).await } } => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_anonymous_connections_cannot_stop_a_new_client() {
    let upslot = Upslot::start(256, "");
    let addr = upslot.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for i in 0..300u32 {
        // Ten addresses: thirty each, under the per-client cap, so that only
        // the cap on everyone together is left to hold them.
        let source: IpAddr = format!("127.0.0.{}", 2 + i % 10).parse().unwrap();
        let kind = ATTACKS[(i / 10 % 4) as usize];
        attackers.push(tokio::spawn(attacker(
            addr,
            source,
            kind,
            Arc::clone(&stop),
            Arc::clone(&opened),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        opened.load(Ordering::Relaxed) >= 300,
        "the attack did not get going"
    );
    let held_from = Instant::now();
    let mut round = 0;
    let mut slowest = Duration::ZERO;
    while held_from.elapsed() < HOLD {
        let started = Instant::now();
        let body = support::body(64 * 1024 + round, round as u8);
        upload_and_download(addr, &format!("held/{round}.bin"), &body)
            .await
            .unwrap_or_else(|e| panic!("round {round}, under attack: {e}\n{}", upslot.log()));
        slowest = slowest.max(started.elapsed());
        round += 1;
    }
    let reconnects = opened.load(Ordering::Relaxed) - 300;
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
        let _ = a.await;
    }
    // As soon as they let go, as if nothing had happened.
    let let_go = Instant::now();
    upload_and_download(addr, "after/a.bin", b"after the siege")
        .await
        .unwrap_or_else(|e| panic!("after the attack: {e}\n{}", upslot.log()));
    let recovered = let_go.elapsed();
    println!(
        "under attack: {round} uploads and downloads, the slowest pair {slowest:?}; \
         {reconnects} reconnections by the attackers; after: {recovered:?}"
    );
    let log = upslot.log();
    assert!(!log.contains("internal error"), "{log}");
    assert!(log.matches("accept failed").count() <= 2, "{log}");
    // Shutdown with idle connections open does not wait for them.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    upslot.terminate(Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_out_of_descriptors_answers_503_and_logs_once() {
    // 128 descriptors carry 32 connections; each HTTP/2 connection may hold 32
    // downloads, each with its file open: four of them hold more files than
    // there are descriptors. (A fifth could not even be accepted.)
    let upslot = Upslot::start(128, "max_streams = 32\n");
    let addr = upslot.addr;
    let size = 4 * 1024 * 1024;
    let body = support::body(size, 7);
    upload_and_download(addr, "big/file.bin", &body)
        .await
        .unwrap();
    let mut held = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut retry_after = true;
    for _ in 0..4 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        held.push(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let mut streams = Vec::new();
        for _ in 0..32 {
            let mut sender = sender.clone();
            let req = Request::builder()
                .uri(format!("http://{addr}/upload/big/file.bin"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            streams.push(tokio::spawn(async move { sender.send_request(req).await }));
        }
        for s in streams {
            // Bodies are never read: each 200 keeps its file open.
            let res = tokio::time::timeout(PATIENCE, s)
                .await
                .unwrap_or_else(|_| panic!("no answer; so far {statuses:?}\n{}", upslot.log()))
                .unwrap()
                .unwrap();
            *statuses.entry(res.status().as_u16()).or_default() += 1;
            if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                retry_after &= res.headers().get("retry-after").is_some();
            }
            held.push(tokio::spawn(async move {
                let _keep = res;
                std::future::pending::<()>().await;
            }));
        }
    }
    println!("128 downloads held open under ulimit -n 128: {statuses:?}");
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(retry_after);
    assert_eq!(
        statuses.keys().filter(|s| **s != 200 && **s != 503).count(),
        0,
        "{statuses:?}"
    );
    // A new client now waits in the listen queue: with no descriptor for it,
    // accept fails, again and again, and says so once.
    let queued = tokio::spawn(common::request(
        addr,
        Method::GET,
        "/upload/big/file.bin",
        &[],
        Vec::new(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let log = upslot.log();
    assert_eq!(log.matches("no file descriptor left").count(), 1, "{log}");
    assert_eq!(log.matches("accept failed").count(), 1, "{log}");
    assert!(!log.contains("internal error"), "{log}");
    // Once the downloads let go, the waiting client is served.
    for h in held {
        h.abort();
    }
    let r = tokio::time::timeout(PATIENCE, queued)
        .await
        .expect("the queued client is answered")
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body == body, "the queued download differs");
}
