//! Upload and download throughput of a real upslot over loopback HTTP/1.1.
//!
//! `cargo bench --bench throughput` starts upslot in this process on 127.0.0.1:0
//! with a fresh data directory, and for every size and fsync setting PUTs
//! generated data to unique v1-signed paths with hyper's HTTP/1.1 client (the
//! body is produced on the fly in 256 KiB chunks, never held whole), then GETs it
//! back, counting (and discarding) the bytes and checking the length.
//!
//! Small and medium files run as batches over keep-alive connections at
//! concurrency 1 and 16 (req/s and aggregate MB/s over the batch's wall time);
//! large files run 3 times, one at a time (median MB/s). Client and server share
//! the process and its CPUs, so the figures are a floor for the server alone.
//!
//! Environment:
//! - `UPSLOT_BENCH_DIR`: where the data directory is created (default: the
//!   system temporary directory, i.e. `$TMPDIR` or `/tmp`; mind tmpfs).
//! - `UPSLOT_BENCH_SIZES`: comma-separated sizes (default `4KiB,1MiB,100MiB,1GiB`);
//!   units B, KiB/K, MiB/M, GiB/G (binary) or KB, MB, GB (decimal).
//! - `UPSLOT_BENCH_FSYNC`: which fsync settings to run (default `off,on`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upslot::auth::Scheme;
use upslot::clock::SystemClock;
use upslot::config::{Config, SecretSource};
use upslot::path::SlotPath;

const SECRET: &str = "upslot-bench-secret";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const DEFAULT_SIZES: &str = "4KiB,1MiB,100MiB,1GiB";
/// Request bodies go out in chunks of this size.
const CHUNK: usize = 256 * 1024;
/// The pattern those chunks are cut from (each chunk a different window).
const BLOCK: usize = 1024 * 1024;
/// Files up to this size run as batches at several concurrencies.
const BATCH_MAX: u64 = 16 * MIB;
const SMALL_REPS: usize = 2000;
/// Medium files: as many as fit in this many bytes (between 16 and 2000).
const BATCH_BYTES: u64 = 256 * MIB;
const CONCURRENCY: [usize; 2] = [1, 16];
const LARGE_REPS: usize = 3;

type ReqBody = BoxBody<Bytes, Infallible>;

fn main() {
    let settings = Settings::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(settings));
}

struct Settings {
    parent: PathBuf,
    sizes: Vec<u64>,
    fsync: Vec<bool>,
}

impl Settings {
    fn from_env() -> Settings {
        let parent = std::env::var_os("UPSLOT_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let sizes = std::env::var("UPSLOT_BENCH_SIZES").unwrap_or_else(|_| DEFAULT_SIZES.into());
        let sizes = sizes
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse_size(s).unwrap_or_else(|| panic!("UPSLOT_BENCH_SIZES: bad size {s:?}")))
            .collect::<Vec<_>>();
        assert!(!sizes.is_empty(), "UPSLOT_BENCH_SIZES names no size");
        let fsync = std::env::var("UPSLOT_BENCH_FSYNC").unwrap_or_else(|_| "off,on".into());
        let fsync = fsync
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| match s.to_ascii_lowercase().as_str() {
                "on" | "true" | "1" | "yes" => true,
                "off" | "false" | "0" | "no" => false,
                _ => panic!("UPSLOT_BENCH_FSYNC: expected on/off, got {s:?}"),
            })
            .collect::<Vec<_>>();
        assert!(!fsync.is_empty(), "UPSLOT_BENCH_FSYNC names no setting");
        Settings {
            parent,
            sizes,
            fsync,
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..digits].parse().ok()?;
    let unit = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => KIB,
        "m" | "mi" | "mib" => MIB,
        "g" | "gi" | "gib" => GIB,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        _ => return None,
    };
    n.checked_mul(unit).filter(|&n| n > 0)
}

fn show_size(n: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if n >= unit && n / unit * unit == n {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} B")
}

// ---------------------------------------------------------------------------
// The server under test.

struct Server {
    addr: SocketAddr,
    base_path: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(parent: &Path, fsync: bool, max_file_size: u64) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("upslot-bench-")
            .tempdir_in(parent)
            .unwrap_or_else(|e| panic!("data directory under {}: {e}", parent.display()));
        let defaults = Config::default();
        let config = Config {
            data_dir: dir.path().join("data"),
            secret: SecretSource::Inline(SECRET.into()),
            fsync,
            max_file_size: max_file_size.max(defaults.max_file_size),
            min_free_space: 0,
            quota_total: 0,
            quota_per_user: 0,
            ..defaults
        };
        let base_path = config.base_path.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let service = upslot::Service::open(config, Arc::new(SystemClock)).expect("open upslot");
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(service.serve(listener, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            base_path,
            stop,
            task,
            dir,
        }
    }

    /// The v1-signed PUT target and the GET target for `path` below base_path.
    fn targets(&self, path: &str, size: u64) -> (String, String) {
        let get = format!("{}{}", self.base_path, SlotPath::encode(path));
        let query = upslot::auth::sign_query(Scheme::V1, SECRET.as_bytes(), path, size, None)
            .expect("v1 signs");
        (format!("{get}?{query}"), get)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("server");
        // Dropping the TempDir removes what the case stored.
        drop(self.dir);
    }
}

// ---------------------------------------------------------------------------
// The client side.

/// `len` bytes of request body, made on the fly: each chunk is a window into
/// a small pattern block (zero-copy), starting somewhere different each time.
struct Generated {
    block: Bytes,
    sent: u64,
    len: u64,
    index: usize,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent == self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.sent).min(CHUNK as u64) as usize;
        let start = (self.index * 4099 * 8) % (BLOCK - CHUNK);
        let chunk = self.block.slice(start..start + n);
        self.index += 1;
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

fn pattern_block() -> Bytes {
    let mut block = Vec::with_capacity(BLOCK);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while block.len() < BLOCK {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        block.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(block)
}

async fn connect(addr: SocketAddr) -> SendRequest<ReqBody> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    sender
}

/// Generous: a slow disk with fsync still finishes well inside it.
fn request_timeout(size: u64) -> Duration {
    Duration::from_secs(30) + Duration::from_secs(size / (5 * 1000 * 1000))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Put => "PUT",
            Op::Get => "GET",
        }
    }
}

/// One request on `sender`, fully answered; panics on anything unexpected.
async fn once(
    sender: &mut SendRequest<ReqBody>,
    addr: SocketAddr,
    op: Op,
    targets: &(String, String),
    size: u64,
    block: &Bytes,
) {
    let work = async {
        sender.ready().await.expect("connection ready");
        let builder = Request::builder().header("host", addr.to_string());
        let req = match op {
            Op::Put => builder
                .method(Method::PUT)
                .uri(&targets.0)
                .header("content-length", size)
                .header("content-type", "application/octet-stream")
                .body(
                    Generated {
                        block: block.clone(),
                        sent: 0,
                        len: size,
                        index: 0,
                    }
                    .boxed(),
                ),
            Op::Get => builder
                .method(Method::GET)
                .uri(&targets.1)
                .body(http_body_util::Empty::new().boxed()),
        }
        .expect("request");
        let res = sender.send_request(req).await.expect("response");
        let status = res.status();
        let length = res
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = res.into_body();
        let mut received: u64 = 0;
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("response body").into_data() {
                received += data.len() as u64;
                if status.is_client_error() || status.is_server_error() {
                    text.extend_from_slice(&data[..data.len().min(200)]);
                }
            }
        }
        let expected = match op {
            Op::Put => StatusCode::CREATED,
            Op::Get => StatusCode::OK,
        };
        assert_eq!(
            status,
            expected,
            "{} {}: {}",
            op.name(),
            targets.1,
            String::from_utf8_lossy(&text)
        );
        if op == Op::Get {
            assert_eq!(length, Some(size), "GET {}: Content-Length", targets.1);
            assert_eq!(received, size, "GET {}: body length", targets.1);
        }
    };
    tokio::time::timeout(request_timeout(size), work)
        .await
        .unwrap_or_else(|_| panic!("{} of {} timed out", op.name(), show_size(size)));
}

/// Runs `op` on every target, `concurrency` keep-alive connections pulling from
/// one queue. Returns the wall time and each request's duration.
async fn batch(
    addr: SocketAddr,
    op: Op,
    targets: Arc<Vec<(String, String)>>,
    size: u64,
    concurrency: usize,
    block: &Bytes,
) -> (Duration, Vec<Duration>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..concurrency)
        .map(|_| {
            let next = Arc::clone(&next);
            let targets = Arc::clone(&targets);
            let block = block.clone();
            tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut times = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(target) = targets.get(i) else { break };
                    let t = Instant::now();
                    once(&mut sender, addr, op, target, size, &block).await;
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect::<Vec<_>>();
    let mut times = Vec::with_capacity(targets.len());
    for worker in workers {
        times.extend(worker.await.expect("bench worker"));
    }
    (started.elapsed(), times)
}

// ---------------------------------------------------------------------------
// Measuring and reporting.

/// A field of /proc/self/status, in bytes.
fn proc_status(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Tracks the process's peak RSS across rows: VmHWM is reset to the current RSS
/// before each row (via /proc/self/clear_refs, if permitted) so each row gets its
/// own peak, and the lifetime peak is the maximum of every reading.
struct Peak {
    lifetime: u64,
    resettable: bool,
}

impl Peak {
    fn new() -> Peak {
        Peak {
            lifetime: proc_status("VmHWM:").unwrap_or(0),
            resettable: true,
        }
    }

    fn reset(&mut self) {
        self.lifetime = self.lifetime.max(proc_status("VmHWM:").unwrap_or(0));
        if self.resettable {
            self.resettable = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        }
    }

    /// The peak since the last reset (None if resetting is not possible).
    fn read(&mut self) -> Option<u64> {
        let hwm = proc_status("VmHWM:")?;
        self.lifetime = self.lifetime.max(hwm);
        self.resettable.then_some(hwm)
    }
}

struct Row {
    size: u64,
    fsync: bool,
    op: Op,
    concurrency: usize,
    /// Batch rows: aggregate rate over `wall`; otherwise the median of the reps.
    batch: bool,
    wall: Duration,
    times: Vec<Duration>,
    peak: Option<u64>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 1000.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

const HEADER: &str = "     size  fsync  op    conc   reps      req/s       MB/s     p50 ms     p99 ms     max ms   peak RSS";

impl Row {
    fn print(&self) {
        let mut sorted = self.times.clone();
        sorted.sort();
        let reps = sorted.len();
        let (req_s, mb_s) = if self.batch {
            let secs = self.wall.as_secs_f64();
            (
                format!("{:.0}", reps as f64 / secs),
                format!("{:.1}", (reps as u64 * self.size) as f64 / secs / 1e6),
            )
        } else {
            // Median rate of the reps = size over the median duration.
            let median = percentile(&sorted, 0.5).as_secs_f64();
            (
                "-".to_owned(),
                format!("{:.1}", self.size as f64 / median / 1e6),
            )
        };
        let peak = self.peak.map_or_else(
            || "-".to_owned(),
            |p| format!("{:.1} MiB", p as f64 / MIB as f64),
        );
        println!(
            "{:>9}  {:<5}  {:<4} {:>5} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            show_size(self.size),
            if self.fsync { "on" } else { "off" },
            self.op.name(),
            self.concurrency,
            reps,
            req_s,
            mb_s,
            ms(percentile(&sorted, 0.5)),
            ms(percentile(&sorted, 0.99)),
            ms(sorted[reps - 1]),
            peak,
        );
    }
}

/// The filesystem type holding `path`, from /proc/mounts (longest mount point).
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown filesystem".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, at, fs) = (f.next()?, f.next()?, f.next()?);
            let at = at.replace("\\040", " ");
            path.starts_with(&at)
                .then(|| (at.len(), format!("{fs} on {dev}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown filesystem".into(), |(_, fs)| fs)
}

async fn run(settings: Settings) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fs = filesystem_of(&settings.parent);
    println!(
        "upslot throughput: loopback HTTP/1.1 (hyper client, keep-alive), v1-signed PUT then GET"
    );
    println!(
        "NOTE: client and server share this process and its {cpus} CPU(s); figures include the client's cost."
    );
    println!(
        "data dir under {} ({fs}); set UPSLOT_BENCH_DIR to move it",
        settings.parent.display()
    );
    if fs.starts_with("tmpfs") || fs.starts_with("ramfs") {
        println!("WARNING: that is a RAM filesystem: fsync costs nothing and no disk is measured");
    }
    println!(
        "sizes: {}; fsync: {}",
        settings
            .sizes
            .iter()
            .map(|&s| show_size(s))
            .collect::<Vec<_>>()
            .join(", "),
        settings
            .fsync
            .iter()
            .map(|&f| if f { "on" } else { "off" })
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("load average at start: {}", load_average());
    println!();
    println!("{HEADER}");

    let block = pattern_block();
    let mut peak = Peak::new();
    let run_started = Instant::now();
    for &size in &settings.sizes {
        for &fsync in &settings.fsync {
            let server = Server::start(&settings.parent, fsync, size).await;
            let addr = server.addr;
            if size <= BATCH_MAX {
                let reps = if size <= 64 * KIB {
                    SMALL_REPS
                } else {
                    ((BATCH_BYTES / size) as usize).clamp(16, SMALL_REPS)
                };
                for concurrency in CONCURRENCY {
                    let targets = Arc::new(
                        (0..reps)
                            .map(|i| server.targets(&format!("bench/c{concurrency}/{i}.bin"), size))
                            .collect::<Vec<_>>(),
                    );
                    for op in [Op::Put, Op::Get] {
                        peak.reset();
                        let (wall, times) =
                            batch(addr, op, Arc::clone(&targets), size, concurrency, &block).await;
                        Row {
                            size,
                            fsync,
                            op,
                            concurrency,
                            batch: true,
                            wall,
                            times,
                            peak: peak.read(),
                        }
                        .print();
                    }
                }
            } else {
                let mut sender = connect(addr).await;
                let mut put = Row {
                    size,
                    fsync,
                    op: Op::Put,
                    concurrency: 1,
                    batch: false,
                    wall: Duration::ZERO,
                    times: Vec::new(),
                    peak: None,
                };
                let mut get = Row {
                    op: Op::Get,
                    times: Vec::new(),
                    ..put
                };
                peak.reset();
                for rep in 0..LARGE_REPS {
                    let targets = server.targets(&format!("bench/large/{rep}.bin"), size);
                    for (op, row) in [(Op::Put, &mut put), (Op::Get, &mut get)] {
                        let t = Instant::now();
                        once(&mut sender, addr, op, &targets, size, &block).await;
                        row.times.push(t.elapsed());
                    }
                }
                // PUT and GET alternate, so they share one peak reading.
                put.peak = peak.read();
                get.peak = put.peak;
                put.print();
                get.print();
            }
            server.stop().await;
        }
    }
    peak.reset();
    println!();
    println!(
        "MB/s = 10^6 bytes/s. Batch rows (reps > {LARGE_REPS}): req/s and MB/s over the batch's wall time, \
         each connection sending its next request as soon as the last is answered. \
         Rows with reps = {LARGE_REPS}: one transfer at a time, MB/s = size / median duration."
    );
    println!(
        "GETs follow the PUTs directly, so they are served from the page cache. \
         p50/p99/max are per-request latencies."
    );
    println!(
        "peak RSS column: VmHWM over that row (reset before each row via /proc/self/clear_refs; \
         large-file PUT and GET rows share one reading)."
    );
    println!(
        "process peak RSS (VmHWM, max over the run): {:.1} MiB; VmRSS now {:.1} MiB; client and server \
         share the process. Total time {:.1} s; load average now {}.",
        peak.lifetime as f64 / MIB as f64,
        proc_status("VmRSS:").unwrap_or(0) as f64 / MIB as f64,
        run_started.elapsed().as_secs_f64(),
        load_average()
    );
}

/// /proc/loadavg's 1, 5 and 15 minute figures: other work on the machine skews
/// every number here.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
