//! The reaper at scale: what an idle pass costs with a million files stored, and
//! whether a large reap holds up downloads.
//!
//! `cargo bench --bench reaper` fills a fresh data directory with N tiny files
//! (16-byte bodies, written directly through `FsStore` with fsync off, several
//! threads), E of which expire at an instant T and the rest a month later, and
//! flushes it to disk (syncfs: a delete frees real blocks, as it would for files
//! uploaded days ago; the page cache stays warm). Then:
//!
//! 1. `Service::open` is timed with the clock before T: the start-up index
//!    rebuild, which reads every file's metadata once (and sweeps nothing).
//! 2. The service serves on 127.0.0.1:0 and `upslot::reaper::pass` is called
//!    directly, many times, with nothing due: the median must be microseconds
//!    and must not grow with N. The same is measured on a second directory of
//!    10,000 files for comparison, and the process's read syscalls across the
//!    passes are counted (/proc/self/io) to show that no metadata is read.
//! 3. GETs of live files run for a few seconds on keep-alive HTTP/1.1
//!    connections (hyper's client) for a latency baseline; then the clock moves
//!    past T and one pass (spawned on the runtime, as the service's own reaper
//!    runs) deletes the E expired files while the same GET load runs. Reap time,
//!    files deleted and GET latency during the reap are reported next to the
//!    baseline; afterwards a sample of expired files is checked gone from disk
//!    (body and metadata) and answering 404, and live files still answer 200.
//!    The GET windows also report the process's CPU time and peak thread count
//!    (runtime workers plus the blocking pool).
//! 4. `Index::take_due(now, 256)`, as a pass calls it, is timed on an in-memory
//!    index of N entries (E due): how long each batch holds the index lock.
//!
//! The service's own reaper is configured with a one-day interval so that only
//! the passes called here do any work. Client and server share the process and
//! its CPUs. The data directories are removed at the end (also when a check
//! panics, as the stack unwinds).
//!
//! Environment:
//! - `UPSLOT_BENCH_FILES`: N (default 1,000,000).
//! - `UPSLOT_BENCH_EXPIRED`: E (default 100,000).
//! - `UPSLOT_BENCH_DIR`: where the data directories are created (default
//!   `/var/tmp`). 1M files need about 2M inodes and ~8 GB on ext4 with 4 KiB
//!   blocks (one block per body and per metadata file).
//! - `UPSLOT_BENCH_THREADS`: threads that populate (default 2 x CPUs).
//! - `UPSLOT_BENCH_CONCURRENCY`: GET connections (default 4).
//! - `UPSLOT_BENCH_BASELINE_SECS`: length of the GET baseline (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use sha2::{Digest, Sha256};
use support::http::{Serving, connect};
use support::procfs::{Monitor, Process, filesystem_of, load_average, reads_so_far};
use support::{count, env_number, percentile, rate, show_duration as show};
use tokio::task::JoinHandle;
use upslot::app::App;
use upslot::auth::Scheme;
use upslot::clock::ManualClock;
use upslot::config::{Config, SecretSource};
use upslot::path::SlotPath;
use upslot::store::{FsStore, Key, Meta, Store};

const SECRET: &str = "upslot-bench-secret";
/// 2026-01-01T00:00:00Z: the clock starts here.
const T0: u64 = 1_767_225_600;
/// When the expiring files expire.
const T: u64 = T0 + 3600;
/// When the other files expire.
const LATER: u64 = T0 + 30 * 24 * 3600;
const BODY_LEN: usize = 16;
/// The comparison directory's size.
const SMALL_N: u64 = 10_000;
/// Idle passes timed per directory.
const IDLE_PASSES: usize = 1001;
/// Files checked after the reap, of each kind.
const SAMPLE: u64 = 1000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// However long the reap takes, the bench gives up after this.
const REAP_TIMEOUT: Duration = Duration::from_secs(1800);
/// GETs slower than this are counted.
const SLOW: Duration = Duration::from_millis(10);
const MIB: f64 = 1024.0 * 1024.0;

fn main() {
    let settings = Settings::from_env();
    let runtime = support::runtime();
    // Created outside the runtime so that they outlive it: on a panic the
    // runtime shuts down first, then the directories are removed.
    let big = data_dir(&settings.parent);
    let small = (settings.files > SMALL_N).then(|| data_dir(&settings.parent));
    let report = runtime.block_on(run(&settings, big.path(), small.as_ref().map(|d| d.path())));
    drop(runtime);
    let t = Instant::now();
    remove_files(big.path(), settings.threads);
    drop(big);
    drop(small);
    report.print(&settings, t.elapsed());
}

fn data_dir(parent: &Path) -> tempfile::TempDir {
    support::scratch_dir(parent, "upslot-reaper-bench-", "data directory")
}

struct Settings {
    parent: PathBuf,
    files: u64,
    expired: u64,
    threads: usize,
    concurrency: usize,
    baseline: Duration,
    cpus: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let parent = std::env::var_os("UPSLOT_BENCH_DIR")
            .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
        let files = env_number("UPSLOT_BENCH_FILES", 1_000_000);
        let expired = env_number("UPSLOT_BENCH_EXPIRED", 100_000);
        assert!(files > 0, "UPSLOT_BENCH_FILES must be positive");
        assert!(
            expired < files,
            "UPSLOT_BENCH_EXPIRED must leave some live files to GET"
        );
        let threads = env_number("UPSLOT_BENCH_THREADS", 2 * cpus as u64).max(1) as usize;
        let concurrency = env_number("UPSLOT_BENCH_CONCURRENCY", 4).max(1) as usize;
        let baseline = Duration::from_secs(env_number("UPSLOT_BENCH_BASELINE_SECS", 5).max(1));
        Settings {
            parent,
            files,
            expired,
            threads,
            concurrency,
            baseline,
            cpus,
        }
    }
}

// ---------------------------------------------------------------------------
// The files.

/// File `i` of a directory; the first `expired` of them expire at T.
fn file_path(i: u64) -> String {
    format!("bench{:03}/{i:08}/f{i}.bin", i % 1000)
}

fn body_of(i: u64) -> [u8; BODY_LEN] {
    let mut body = [0u8; BODY_LEN];
    body[..8].copy_from_slice(&i.to_le_bytes());
    body[8..].copy_from_slice(&(!i).to_le_bytes());
    body
}

fn meta_of(i: u64, expired: u64) -> Meta {
    Meta {
        path: file_path(i),
        name: format!("f{i}.bin"),
        size: BODY_LEN as u64,
        content_type: "application/octet-stream".into(),
        sha256: hex::encode(Sha256::digest(body_of(i))),
        created: T0 - 600,
        expires: if i < expired { T } else { LATER },
        scheme: Scheme::V1,
        uploader: Some(format!("user{}@example.org", i % 1000)),
        object: String::new(),
    }
}

/// Writes files 0..n through `FsStore` (fsync off) on `threads` threads.
fn populate(dir: &Path, n: u64, expired: u64, threads: usize, progress: bool) -> Duration {
    let started = Instant::now();
    let store = FsStore::open(dir, false, 0).expect("open the store to populate");
    let done = AtomicU64::new(0);
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            let (store, done, runtime) = (&store, &done, &runtime);
            s.spawn(move || {
                let mut i = t;
                while i < n {
                    let meta = meta_of(i, expired);
                    let body = vec![Bytes::copy_from_slice(&body_of(i))];
                    runtime.block_on(store.put(&meta, body)).expect("store");
                    let total = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if progress && total % (n / 10).max(1) == 0 {
                        eprintln!(
                            "  populated {total}/{n} in {:.0} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    i += threads as u64;
                }
            });
        }
    });
    drop(store);
    started.elapsed()
}

/// Flushes the file system holding `dir` to disk, so that what the reap deletes
/// is really allocated on disk, as files uploaded days ago are (freeing blocks is
/// part of a delete's cost, more so with `discard`). The page cache stays warm.
fn sync_to_disk(dir: &Path) -> Duration {
    let started = Instant::now();
    let handle = std::fs::File::open(dir).expect("open the data directory");
    rustix::fs::syncfs(&handle).expect("syncfs");
    started.elapsed()
}

/// Removes the files of `dir` (a data directory) on `threads` threads, one
/// shard at a time; the TempDir removes the rest when dropped.
fn remove_files(dir: &Path, threads: usize) {
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let shard = next.fetch_add(1, Ordering::Relaxed);
                    if shard > 255 {
                        break;
                    }
                    let _ = std::fs::remove_dir_all(dir.join("files").join(format!("{shard:02x}")));
                }
            });
        }
    });
}

/// Whether file `i`'s body and its metadata (attached as `user.upslot`) are on
/// disk, as (body, meta).
fn on_disk(dir: &Path, i: u64) -> (bool, bool) {
    let hex = Key::for_path(&file_path(i)).hex();
    let body = dir.join("files").join(&hex[..2]).join(&hex);
    let meta = rustix::fs::getxattr(&body, "user.upslot", &mut [0u8; 4096][..]).is_ok();
    (body.exists(), meta)
}

// ---------------------------------------------------------------------------
// The server under test.

struct Server {
    serving: Serving,
    app: Arc<App>,
    clock: Arc<ManualClock>,
    base_path: String,
}

impl Server {
    async fn usage(&self) -> upslot::index::Usage {
        self.app.catalog.index.stats().await.expect("stats").usage
    }

    /// Opens (timed) and serves the data directory `dir`.
    async fn start(dir: &Path) -> (Server, Duration) {
        let defaults = Config::default();
        let config = Config {
            data_dir: dir.to_owned(),
            secret: SecretSource::Inline(SECRET.into()),
            fsync: false,
            min_free_space: 0,
            quota_total: 0,
            quota_per_user: 0,
            // Only the passes this bench calls do any work.
            reap_interval: Duration::from_secs(24 * 3600),
            ..defaults
        };
        let base_path = config.base_path.clone();
        let clock = ManualClock::at(T0);
        let started = Instant::now();
        let service = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current()
                .block_on(upslot::Service::open(config, Arc::clone(&clock) as _))
                .expect("open upslot")
        });
        let opened = started.elapsed();
        let app = Arc::clone(service.app());
        let server = Server {
            serving: Serving::start(service).await,
            app,
            clock,
            base_path,
        };
        (server, opened)
    }

    fn target(&self, i: u64) -> String {
        format!("{}{}", self.base_path, SlotPath::encode(&file_path(i)))
    }

    async fn stop(self) {
        self.serving.stop().await;
    }
}

// ---------------------------------------------------------------------------
// Idle passes.

struct Idle {
    files: u64,
    median: Duration,
    p99: Duration,
    max: Duration,
    /// Read syscalls (and bytes) by the whole process across all the passes,
    /// less what reading /proc/self/io itself costs.
    reads: Option<(u64, u64)>,
}

async fn idle_passes(app: &App, files: u64) -> Idle {
    // What one reading of /proc/self/io adds to the counters.
    let a = reads_so_far();
    let b = reads_so_far();
    let before = reads_so_far();
    let mut times = Vec::with_capacity(IDLE_PASSES);
    for _ in 0..IDLE_PASSES {
        let t = Instant::now();
        let deleted = upslot::reaper::pass(app).await.expect("idle pass");
        times.push(t.elapsed());
        assert_eq!(deleted, 0, "an idle pass deleted something");
    }
    let after = reads_so_far();
    let reads = match (a, b, before, after) {
        (Some(a), Some(b), Some(before), Some(after)) => Some((
            (after.0 - before.0).saturating_sub(b.0 - a.0),
            (after.1 - before.1).saturating_sub(b.1 - a.1),
        )),
        _ => None,
    };
    times.sort();
    Idle {
        files,
        median: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        max: times[times.len() - 1],
        reads,
    }
}

// ---------------------------------------------------------------------------
// The GET load.

/// GETs `target` on `sender`; returns the status and, for 200, checks the body.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr, target: &str) -> StatusCode {
    let work = async {
        sender.ready().await.expect("connection ready");
        let req = Request::builder()
            .method(Method::GET)
            .uri(target)
            .header("host", addr.to_string())
            .body(Empty::new())
            .expect("request");
        let res = sender.send_request(req).await.expect("response");
        let status = res.status();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        if status == StatusCode::OK {
            assert_eq!(body.len(), BODY_LEN, "GET {target}: body length");
        }
        status
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| panic!("GET {target} timed out"))
}

/// One GET's start and duration.
type Sample = (Instant, Duration);

/// `concurrency` keep-alive connections GETting random live files (each must
/// answer 200) until `stop` is set.
fn start_load(
    server: &Server,
    settings: &Settings,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<Vec<Sample>>> {
    let live = settings.expired..settings.files;
    (0..settings.concurrency as u64)
        .map(|w| {
            let stop = Arc::clone(stop);
            let addr = server.serving.addr;
            let base_path = server.base_path.clone();
            let live = live.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut rng =
                    0x9E37_79B9_7F4A_7C15u64 ^ (w + 1).wrapping_mul(0xA24B_AED4_963E_E407);
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let i = live.start + rng % (live.end - live.start);
                    let target = format!("{base_path}{}", SlotPath::encode(&file_path(i)));
                    let t = Instant::now();
                    let status = get(&mut sender, addr, &target).await;
                    samples.push((t, t.elapsed()));
                    assert_eq!(status, StatusCode::OK, "GET of live file {i}");
                }
                samples
            })
        })
        .collect()
}

async fn finish_load(workers: Vec<JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("GET worker"));
    }
    all
}

struct Latency {
    count: usize,
    secs: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    /// GETs that took longer than SLOW.
    slow: usize,
    process: Option<Process>,
}

/// The GETs that started in [from, to).
fn latency(samples: &[Sample], from: Instant, to: Instant) -> Latency {
    let mut times: Vec<Duration> = samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, d)| *d)
        .collect();
    assert!(!times.is_empty(), "no GET completed in the window");
    times.sort();
    Latency {
        count: times.len(),
        secs: (to - from).as_secs_f64(),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        p999: percentile(&times, 0.999),
        max: times[times.len() - 1],
        slow: times.iter().filter(|&&d| d > SLOW).count(),
        process: None,
    }
}

// ---------------------------------------------------------------------------
// The run.

struct Report {
    fs: String,
    load_start: String,
    populate: Duration,
    synced: Duration,
    populate_small: Option<Duration>,
    open: Duration,
    store_open: Duration,
    open_small: Option<Duration>,
    idle_small: Option<Idle>,
    idle: Idle,
    reap: Duration,
    deleted: u64,
    usage_after: u64,
    baseline: Latency,
    during: Latency,
    after: Latency,
    /// Lock hold of each `take_due(BATCH)` on an index like the service's.
    take_due: (usize, Duration, Duration),
    gone_checked: u64,
    live_checked: u64,
    peak_rss: Option<u64>,
}

async fn run(settings: &Settings, big: &Path, small: Option<&Path>) -> Report {
    let fs = filesystem_of(&settings.parent);
    let load_start = load_average();
    eprintln!(
        "upslot reaper bench: N = {}, E = {}, data under {} ({fs})",
        settings.files,
        settings.expired,
        settings.parent.display()
    );

    // The comparison directory: same proportion expiring, idle passes only.
    let (populate_small, open_small, idle_small) = match small {
        Some(dir) => {
            let expired = settings.expired * SMALL_N / settings.files;
            let populate = tokio::task::block_in_place(|| {
                populate(dir, SMALL_N, expired, settings.threads, false) + sync_to_disk(dir)
            });
            let (server, open) = Server::start(dir).await;
            assert_eq!(server.usage().await.files, SMALL_N);
            let idle = idle_passes(&server.app, SMALL_N).await;
            server.stop().await;
            eprintln!("  comparison directory of {SMALL_N} files done");
            (Some(populate), Some(open), Some(idle))
        }
        None => (None, None, None),
    };

    eprintln!("populating {} files...", settings.files);
    let populate = tokio::task::block_in_place(|| {
        populate(
            big,
            settings.files,
            settings.expired,
            settings.threads,
            true,
        )
    });
    eprintln!("  populated in {:.1} s; syncing", populate.as_secs_f64());
    let synced = tokio::task::block_in_place(|| sync_to_disk(big));
    eprintln!("  synced in {:.1} s; opening", synced.as_secs_f64());
    // The part of start-up that is the store's own scan (metadata files of the earlier layout), timed
    // alone; Service::open below does it again, then reads every metadata file.
    let store_open = tokio::task::block_in_place(|| {
        let t = Instant::now();
        drop(FsStore::open(big, false, 0).expect("open the store"));
        t.elapsed()
    });
    let (server, open) = Server::start(big).await;
    let usage = server.usage().await;
    assert_eq!(usage.files, settings.files, "open swept or missed files");
    eprintln!("  opened in {:.1} s; idle passes", open.as_secs_f64());
    let idle = idle_passes(&server.app, settings.files).await;

    // Baseline: GETs with nothing else going on.
    eprintln!("GET baseline for {} s", settings.baseline.as_secs());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_load(&server, settings, &stop);
    // Let the connections open before the window starts.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let monitor = Monitor::start();
    let from = Instant::now();
    tokio::time::sleep(settings.baseline).await;
    let to = Instant::now();
    let process = monitor.finish().await;
    stop.store(true, Ordering::Relaxed);
    let samples = finish_load(workers).await;
    let mut baseline = latency(&samples, from, to);
    baseline.process = Some(process);

    // The reap, under the same load.
    eprintln!("reaping {} files under GET load", settings.expired);
    server.clock.set(T + 60);
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_load(&server, settings, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let app = Arc::clone(&server.app);
    let monitor = Monitor::start();
    let from = Instant::now();
    let reaping = tokio::spawn(async move { upslot::reaper::pass(&app).await });
    let deleted = tokio::time::timeout(REAP_TIMEOUT, reaping)
        .await
        .expect("reap within the timeout")
        .expect("reap task")
        .expect("reap pass");
    let to = Instant::now();
    let process = monitor.finish().await;
    let reap = to - from;
    // A short tail after the reap, to see the service settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tail_end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let samples = finish_load(workers).await;
    let mut during = latency(&samples, from, to);
    during.process = Some(process);
    let after = latency(&samples, to, tail_end);
    eprintln!(
        "  reaped {deleted} in {:.1} s; checking",
        reap.as_secs_f64()
    );

    assert_eq!(deleted, settings.expired, "files deleted by the reap");
    let usage_after = server.usage().await.files;
    assert_eq!(usage_after, settings.files - settings.expired);
    // A sample of each kind, spread over the whole range.
    let expired_sample = sample(0..settings.expired);
    let live_sample = sample(settings.expired..settings.files);
    for &i in &expired_sample {
        assert_eq!(
            on_disk(big, i),
            (false, false),
            "expired file {i} still on disk"
        );
    }
    for &i in &live_sample {
        assert_eq!(
            on_disk(big, i),
            (true, true),
            "live file {i} missing on disk"
        );
    }
    let mut sender = connect(server.serving.addr).await;
    for &i in expired_sample.iter().take(100) {
        let status = get(&mut sender, server.serving.addr, &server.target(i)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET of reaped file {i}");
    }
    for &i in &live_sample {
        let status = get(&mut sender, server.serving.addr, &server.target(i)).await;
        assert_eq!(status, StatusCode::OK, "GET of live file {i}");
    }
    drop(sender);
    server.stop().await;
    let peak_rss = support::procfs::status("VmHWM:");
    let take_due = take_due_hold(settings.files, settings.expired).await;

    Report {
        fs,
        load_start,
        populate,
        synced,
        populate_small,
        open,
        store_open,
        open_small,
        idle_small,
        idle,
        reap,
        deleted,
        usage_after,
        baseline,
        during,
        after,
        gone_checked: expired_sample.len() as u64,
        live_checked: live_sample.len() as u64,
        peak_rss,
        take_due,
    }
}

/// How long the reaper holds the index lock per batch: an index like the
/// service's (N entries, E of them due), emptied of its due entries by
/// `take_due(now, 256)` as a pass does. Returns (calls, median, max).
async fn take_due_hold(n: u64, e: u64) -> (usize, Duration, Duration) {
    use upslot::index::Index;
    let index = upslot::index::LocalIndex::new(0, 0);
    for i in 0..n {
        index.adopt(meta_of(i, e)).await.expect("adopt");
    }
    let mut times = Vec::new();
    loop {
        let t = Instant::now();
        let due = index.take_due(T + 60, 256).await.expect("take due");
        times.push(t.elapsed());
        if due.is_empty() {
            break;
        }
    }
    times.pop();
    assert_eq!(times.len() as u64, e.div_ceil(256));
    times.sort();
    (times.len(), percentile(&times, 0.5), times[times.len() - 1])
}

/// Up to SAMPLE indices spread evenly over `range`, first and last included.
fn sample(range: std::ops::Range<u64>) -> Vec<u64> {
    let len = range.end - range.start;
    if len <= SAMPLE {
        return range.collect();
    }
    (0..SAMPLE)
        .map(|k| range.start + k * (len - 1) / (SAMPLE - 1))
        .collect()
}

// ---------------------------------------------------------------------------
// Reporting.

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

impl Idle {
    fn line(&self) -> String {
        let reads = self.reads.map_or_else(
            || "read syscalls: unknown".to_owned(),
            |(calls, bytes)| format!("{calls} read syscalls ({bytes} B) in all {IDLE_PASSES}"),
        );
        format!(
            "median {} (p99 {}, max {}); {reads}",
            show(self.median),
            show(self.p99),
            show(self.max)
        )
    }
}

impl Latency {
    fn row(&self, name: &str) {
        println!(
            "  {name:<22} {:>8} {:>8.1} {:>9.0} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
            self.count,
            self.secs,
            self.count as f64 / self.secs,
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max),
            self.slow,
            self.process
                .map_or_else(|| "-".into(), |p| format!("{:.0}%", 100.0 * p.cpu / p.secs)),
            self.process
                .map_or_else(|| "-".into(), |p| p.max_threads.to_string()),
        );
    }
}

impl Report {
    fn print(&self, settings: &Settings, removal: Duration) {
        let n = settings.files;
        let e = settings.expired;
        println!();
        println!("upslot reaper at scale");
        println!(
            "  data under {} ({}); {} CPU(s); load average at start {}, now {}",
            settings.parent.display(),
            self.fs,
            settings.cpus,
            self.load_start,
            load_average()
        );
        println!(
            "  N = {} files ({BODY_LEN} B bodies + JSON metadata, FsStore, fsync off), E = {} expiring at T, \
             the rest 30 days later",
            count(n),
            count(e)
        );
        println!();
        println!("  {:<48} value", "figure");
        println!(
            "  {:<48} {} ({}, {} threads)",
            format!("populate {} files (setup)", count(n)),
            show(self.populate),
            rate(n, self.populate),
            settings.threads
        );
        println!(
            "  {:<48} {}",
            "syncfs after populating (setup)",
            show(self.synced)
        );
        if let Some(p) = self.populate_small {
            println!(
                "  {:<48} {} ({})",
                format!("populate + syncfs {} files (setup)", count(SMALL_N)),
                show(p),
                rate(SMALL_N, p)
            );
        }
        println!(
            "  {:<48} {} ({} metadata files/s)",
            format!("Service::open, {} files (index rebuild)", count(n)),
            show(self.open),
            rate(n, self.open).trim_end_matches("/s")
        );
        println!(
            "  {:<48} {}",
            "  of which FsStore::open's scan of the shards",
            show(self.store_open)
        );
        if let Some(o) = self.open_small {
            println!(
                "  {:<48} {}",
                format!("Service::open, {} files", count(SMALL_N)),
                show(o)
            );
        }
        for idle in self.idle_small.iter().chain([&self.idle]) {
            println!(
                "  {:<48} {}",
                format!("idle pass, {} files", count(idle.files)),
                idle.line()
            );
        }
        println!(
            "  {:<48} {} ({}; {} batches of <= 256, {} per batch)",
            format!("reap {} expired files (one pass)", count(e)),
            show(self.reap),
            rate(self.deleted, self.reap),
            e.div_ceil(256),
            show(self.reap / e.div_ceil(256).max(1) as u32)
        );
        println!(
            "  {:<48} median {}, max {} ({} calls, on a {}-entry index)",
            "index lock held per take_due(256)",
            show(self.take_due.1),
            show(self.take_due.2),
            self.take_due.0,
            count(n)
        );
        println!(
            "  {:<48} {} (expected {}); index now holds {}",
            "files deleted",
            count(self.deleted),
            count(e),
            count(self.usage_after)
        );
        println!(
            "  {:<48} {} expired: body and metadata gone, 100 of them 404; {} live: on disk and 200",
            "checked after the reap",
            count(self.gone_checked),
            count(self.live_checked)
        );
        println!(
            "  {:<48} {:.1} MiB",
            "peak RSS (VmHWM, whole process)",
            self.peak_rss.unwrap_or(0) as f64 / MIB
        );
        println!(
            "  {:<48} {}",
            "removing the data directories",
            show(removal)
        );
        println!();
        println!(
            "  GET of random live files, {} keep-alive HTTP/1.1 connections (hyper client), latency in ms:",
            settings.concurrency
        );
        println!(
            "  {:<22} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8}",
            "window",
            "GETs",
            "secs",
            "req/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            ">10ms",
            "CPU",
            "threads"
        );
        self.baseline.row("baseline (before)");
        self.during.row("during the reap");
        self.after.row("1 s after the reap");
        println!();
        println!(
            "  notes: client and server share this process and its {} CPU(s), so GET latencies include the \
             client's cost; the files were written and synced to disk just before, so metadata and directories \
             are in the page cache (a cold start-up reads from disk and is slower); idle passes are timed one by one with \
             Instant::now, and the read-syscall count covers the whole process (/proc/self/io) across all \
             {IDLE_PASSES} passes; the service's own reaper runs at start and then daily, so only the passes \
             called here do work. >10ms = GETs slower than 10 ms. CPU = the process's user + system time over the window (100% = one CPU); \
             threads = most threads the process had (2 runtime workers, the blocking pool, this bench's); \
             the 'after' row has no monitor. Other work on the machine (see load average) skews every figure.",
            settings.cpus
        );
    }
}
