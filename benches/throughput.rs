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

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{Op, Serving, Target, batch, connect, once, pattern_block};
use support::procfs::{Peak, filesystem_of, load_average, status as proc_status};
use support::{KIB, MIB, env_sizes, env_switches, on_off, percentile, show_size};
use upslot::auth::Scheme;
use upslot::clock::SystemClock;
use upslot::config::{Config, SecretSource};
use upslot::path::SlotPath;

const SECRET: &str = "upslot-bench-secret";
const DEFAULT_SIZES: &str = "4KiB,1MiB,100MiB,1GiB";
/// Files up to this size run as batches at several concurrencies.
const BATCH_MAX: u64 = 16 * MIB;
const SMALL_REPS: usize = 2000;
/// Medium files: as many as fit in this many bytes (between 16 and 2000).
const BATCH_BYTES: u64 = 256 * MIB;
const CONCURRENCY: [usize; 2] = [1, 16];
const LARGE_REPS: usize = 3;

fn main() {
    let settings = Settings::from_env();
    let runtime = support::runtime();
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
        let sizes = env_sizes("UPSLOT_BENCH_SIZES", DEFAULT_SIZES);
        assert!(!sizes.is_empty(), "UPSLOT_BENCH_SIZES names no size");
        let fsync = env_switches("UPSLOT_BENCH_FSYNC", "off,on");
        assert!(!fsync.is_empty(), "UPSLOT_BENCH_FSYNC names no setting");
        Settings {
            parent,
            sizes,
            fsync,
        }
    }
}

// ---------------------------------------------------------------------------
// The server under test.

struct Server {
    serving: Serving,
    base_path: String,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start(parent: &Path, fsync: bool, max_file_size: u64) -> Server {
        let dir = support::scratch_dir(parent, "upslot-bench-", "data directory");
        let defaults = Config::default();
        let config = Config {
            data_dir: dir.path().join("data"),
            secret: SecretSource::Inline(SECRET.into()),
            fsync,
            max_file_size: max_file_size.max(defaults.max_file_size),
            min_free_space: 0,
            quota_total: 0,
            quota_per_user: 0,
            limits: support::limits(CONCURRENCY[CONCURRENCY.len() - 1]),
            ..defaults
        };
        let base_path = config.base_path.clone();
        let service = upslot::Service::open(config, Arc::new(SystemClock))
            .await
            .expect("open upslot");
        Server {
            serving: Serving::start(service).await,
            base_path,
            dir,
        }
    }

    /// The v1-signed PUT target and the GET target for `path` below base_path.
    fn target(&self, path: &str, size: u64) -> Target {
        let get = format!("{}{}", self.base_path, SlotPath::encode(path));
        let query = upslot::auth::sign_query(Scheme::V1, SECRET.as_bytes(), path, size, None)
            .expect("v1 signs");
        Target {
            put: format!("{get}?{query}"),
            get,
            seed: 0,
            put_status: http::StatusCode::CREATED,
        }
    }

    async fn stop(self) {
        self.serving.stop().await;
        // Dropping the TempDir removes what the case stored.
        drop(self.dir);
    }
}

// ---------------------------------------------------------------------------
// Measuring and reporting.

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
            on_off(self.fsync),
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
            .map(|&f| on_off(f))
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
            let addr = server.serving.addr;
            if size <= BATCH_MAX {
                let reps = if size <= 64 * KIB {
                    SMALL_REPS
                } else {
                    ((BATCH_BYTES / size) as usize).clamp(16, SMALL_REPS)
                };
                for concurrency in CONCURRENCY {
                    let targets = Arc::new(
                        (0..reps)
                            .map(|i| server.target(&format!("bench/c{concurrency}/{i}.bin"), size))
                            .collect::<Vec<_>>(),
                    );
                    for op in [Op::Put, Op::Get] {
                        peak.reset();
                        let (wall, times) =
                            batch("upslot", addr, op, &targets, size, concurrency, &block).await;
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
                    let target = server.target(&format!("bench/large/{rep}.bin"), size);
                    for (op, row) in [(Op::Put, &mut put), (Op::Get, &mut get)] {
                        let t = Instant::now();
                        once(&mut sender, "upslot", addr, op, &target, size, &block).await;
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
