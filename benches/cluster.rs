//! One machine against several instances: upslot on its own disk (`fs` store,
//! `local` index, fsync off) next to three upslot instances on one S3 bucket and
//! one PostgreSQL index behind nginx, all on this machine, in one run.
//!
//! `cargo bench --bench cluster` (needs Garage 2.x, PostgreSQL 15 and nginx:
//! deploy/cluster/README.md; without Garage it says so and exits 0):
//! - starts, in a scratch directory, a 3-node Garage cluster, PostgreSQL and,
//!   once three `target/release/upslot serve -c FILE` instances (s3 + postgres,
//!   one shared `secret`, each its own `data_dir`, each talking to its own
//!   Garage node) answer `/readyz`, nginx round robin over them, all with the
//!   scripts of deploy/cluster/; and separately one fs + local instance with
//!   fsync off (loadgen's fsync=off rows);
//! - warms every side up with a few small PUTs and GETs (connections to
//!   PostgreSQL and Garage are made on first use), untimed;
//! - for every row of the matrix (size S, N files, concurrency C; by default
//!   4 KiB x1000 at 32, 1 MiB x200 at 16 and 100 MiB x4 at 2, two repetitions),
//!   PUTs N files of S bytes to unique v1-signed paths over C keep-alive
//!   connections pulling from one queue, to (a) the fs + local instance,
//!   (b) the cluster through nginx and (c) one cluster instance directly (no
//!   nginx) and (d) the Garage node that instance talks to, straight, by URLs
//!   presigned with rusty-s3 (the same sizes, keys under `raw/`), in turn (the
//!   first side rotates between repetitions; `sync` runs
//!   before each PUT batch), then GETs them back the same way checking status
//!   and length; afterwards a sample of each side's files is read back and
//!   checked byte for byte, the cluster's through another instance than the
//!   one that took the upload;
//! - prints the cores each part (upslot, Garage, PostgreSQL, nginx, the load
//!   generator) kept busy during every side's batches, from /proc;
//! - prints each instance's peak RSS (VmHWM) after the matrix;
//! - then PUTs 16 files of 100 MiB at once (v1-signed, distinct paths)
//!   straight to one s3 + postgres instance, whose VmHWM was reset first (it
//!   has served the matrix), and prints its peak RSS against the 64 MiB target;
//! - prints how long each phase took, how many bytes Garage keeps on disk for
//!   what was uploaded, and stops everything it started (the scripts' `stop`,
//!   and the instances by PID), also when it fails.
//!
//! It never fails on speed or memory; it exits non-zero only if the run breaks:
//! a request failed, a sampled file differs, a server did not start.
//!
//! Environment:
//! - `UPSLOT_CLUSTER_MATRIX`: `SIZE:N:C,...` (default
//!   `4KiB:1000:32,1MiB:200:16,100MiB:4:2`; a default size alone keeps its N, C).
//! - `UPSLOT_CLUSTER_REPS`: timed repetitions per row (default 2).
//! - `UPSLOT_CLUSTER_WARMUP`: untimed repetitions of each row first (default 0;
//!   the run's own warm-up already opens the connections).
//! - `UPSLOT_CLUSTER_DIRECT`: `off` leaves out the one-instance and raw S3 rows.
//! - `UPSLOT_CLUSTER_MEMORY`: `SIZE:N` for the memory figure (default
//!   `100MiB:16`), or `off`.
//! - `UPSLOT_CLUSTER_DIR`: parent of the scratch directory (default `/var/tmp`),
//!   which is removed at the end. Garage keeps three copies of every file
//!   there, zstd-compressed: the default run needs about 6 GB.
//! - `UPSLOT_CLUSTER_BIN`: another upslot binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::http::{Load, Op, ReqBody, Target, load, pattern_block, try_connect};
use support::process::{Proc, free_port, wait_listening};
use support::procfs::{
    children_of, cpu_of, filesystem_of, load_average, machine, reset_peak_of, status_of,
};
use support::{
    Case, GIB, KIB, MIB, env_matrix, env_or, env_positive, env_switches, median, ms, parse_size,
    per_s, percentile, show_size_tight as show_size,
};
use upslot::auth::Scheme;
use upslot::path::SlotPath;

const SECRET: &str = "upslot-cluster-bench-secret-0123";
const DEFAULT_MATRIX: &str = "4KiB:1000:32,1MiB:200:16,100MiB:4:2";
const DEFAULT_MEMORY: &str = "100MiB:16";
/// The memory target for one s3 + postgres instance.
const RSS_TARGET: u64 = 64 * MIB;
/// Files read back byte for byte per side and row: at most this many, and at
/// most `VERIFY_BYTES` of them (but at least one).
const VERIFY_SAMPLE: usize = 8;
const VERIFY_BYTES: u64 = 256 * MIB;
/// The run's warm-up: this many 4 KiB files per side, PUT and GET, untimed.
const WARMUP_FILES: usize = 200;
/// The longest an instance may take from listening to answering `/readyz`.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Batches shorter than this in all get no CPU figures.
const MIN_CPU_WALL: f64 = 0.5;
/// The whole run gives up after this long.
const RUN_LIMIT: Duration = Duration::from_secs(60 * 60);

fn main() {
    let Some(garage) = garage_binary() else {
        println!(
            "cluster bench: SKIPPED: Garage is not installed (no `garage` on PATH, no \
             ~/.cargo/bin/garage, no $GARAGE). Install it with `cargo install garage --version \
             2.5.0 --locked`; see deploy/cluster/README.md."
        );
        return;
    };
    let settings = Settings::from_env(garage);
    support::run_bounded("cluster", RUN_LIMIT, run(settings));
}

/// `$GARAGE`, `garage` on PATH, or ~/.cargo/bin/garage, as garage.sh looks for
/// it; as an absolute path, which the scripts are given in `$GARAGE`.
fn garage_binary() -> Option<PathBuf> {
    if let Some(g) = std::env::var_os("GARAGE") {
        return Some(PathBuf::from(g)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home)
        .map(|dir| dir.join("garage"))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// Settings.

struct Settings {
    parent: PathBuf,
    matrix: Vec<Case>,
    reps: usize,
    warmup: usize,
    direct: bool,
    /// Size and count of the memory figure's uploads.
    memory: Option<(u64, usize)>,
    bin: PathBuf,
    garage: PathBuf,
}

impl Settings {
    fn from_env(garage: PathBuf) -> Settings {
        let memory = env_or("UPSLOT_CLUSTER_MEMORY", DEFAULT_MEMORY);
        let memory = if memory.trim().eq_ignore_ascii_case("off") {
            None
        } else {
            let parsed = memory.split_once(':').and_then(|(size, n)| {
                Some((parse_size(size.trim())?, n.trim().parse::<usize>().ok()?))
            });
            match parsed {
                Some((size, n)) if n > 0 => Some((size, n)),
                _ => panic!("UPSLOT_CLUSTER_MEMORY: expected SIZE:N (e.g. 100MiB:16) or off"),
            }
        };
        Settings {
            parent: PathBuf::from(env_or("UPSLOT_CLUSTER_DIR", "/var/tmp")),
            matrix: env_matrix("UPSLOT_CLUSTER_MATRIX", DEFAULT_MATRIX),
            reps: env_positive("UPSLOT_CLUSTER_REPS", 2),
            warmup: support::env_number("UPSLOT_CLUSTER_WARMUP", 0) as usize,
            direct: env_switches("UPSLOT_CLUSTER_DIRECT", "on")
                .first()
                .copied()
                .unwrap_or(true),
            memory,
            bin: std::env::var_os("UPSLOT_CLUSTER_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_upslot")),
                PathBuf::from,
            ),
            garage,
        }
    }
}

// ---------------------------------------------------------------------------
// What the scripts of deploy/cluster/ start.

/// A server started by one of deploy/cluster/'s scripts, stopped by the same
/// script's `stop` when dropped (also while unwinding from a panic).
struct Script {
    script: &'static str,
    dir: PathBuf,
    stopped: bool,
}

impl Script {
    fn path(script: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/cluster")
            .join(script)
    }

    /// Runs `script start DIR ARGS...`; panics if it fails. The guard exists
    /// before the script runs, so that what a failed start left is stopped too.
    fn start(script: &'static str, dir: &Path, args: &[String], garage: &Path) -> Script {
        let guard = Script {
            script,
            dir: dir.to_owned(),
            stopped: false,
        };
        // The scripts say how long they took, on stderr, which stays ours.
        let status = Command::new("bash")
            .arg(Script::path(script))
            .arg("start")
            .arg(dir)
            .args(args)
            .env("GARAGE", garage)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("running {script}: {e}"));
        assert!(
            status.success(),
            "{script} start {} failed ({status}); its logs are under that directory",
            dir.display()
        );
        guard
    }

    /// Runs `script stop DIR`, once.
    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let status = Command::new("bash")
            .arg(Script::path(self.script))
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "cluster: {} stop {} failed",
                self.script,
                self.dir.display()
            );
        }
    }

    /// The variables of the env file the script wrote in its directory.
    fn env(&self, file: &str) -> HashMap<String, String> {
        let path = self.dir.join(file);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect()
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// upslot instances.

struct Instance {
    name: &'static str,
    addr: SocketAddr,
    proc: Proc,
}

impl Instance {
    /// Starts the binary with the config's common part plus `backend` (the
    /// `[storage]` and `[index]` sections, or nothing for fs + local), and
    /// waits until it listens and its `/readyz` answers 200.
    async fn start(
        bin: &Path,
        dir: &Path,
        name: &'static str,
        backend: &str,
        clients: usize,
    ) -> Instance {
        std::fs::create_dir_all(dir).expect("instance directory");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        // fsync matters only to the fs store; the S3 store never calls it.
        let config = format!(
            "listen = \"{addr}\"\nbase_path = \"/upload/\"\ndata_dir = \"{}\"\nsecret = \"{SECRET}\"\n\
             schemes = [\"v1\"]\nmax_file_size = \"4 GiB\"\nmin_free_space = \"0\"\nfsync = false\n\
             trusted_proxies = [\"127.0.0.1/32\"]\n\
             [quota]\ntotal = \"0\"\nper_user = \"0\"\n{limits}[admin]\nlisten = \"{admin}\"\n{backend}",
            dir.join("data").display(),
            limits = support::limits_toml(clients),
        );
        let path = dir.join("upslot.toml");
        std::fs::write(&path, config).expect("upslot config");
        let mut proc = Proc::spawn(
            name,
            Command::new(bin).arg("serve").arg("-c").arg(&path),
            dir,
        );
        wait_listening(addr, &mut proc).await;
        wait_ready(admin, &mut proc).await;
        Instance { name, addr, proc }
    }

    fn peak(&self) -> Option<u64> {
        status_of(self.proc.pid(), "VmHWM:")
    }
}

/// Waits until `GET /readyz` on the admin listener answers 200: the listener
/// is bound before the storage and the index are opened.
async fn wait_ready(admin: SocketAddr, proc: &mut Proc) {
    let deadline = Instant::now() + READY_LIMIT;
    let mut last = String::from("no answer");
    loop {
        if let Ok(mut sender) = try_connect::<ReqBody>(admin).await {
            let request = Request::get("/readyz")
                .header("host", admin.to_string())
                .body(http_body_util::Empty::new().boxed())
                .expect("request");
            match sender.send_request(request).await {
                Ok(res) if res.status() == StatusCode::OK => return,
                Ok(res) => {
                    let status = res.status();
                    let body = res.into_body().collect().await.map(|b| b.to_bytes());
                    last = format!(
                        "{status} {}",
                        String::from_utf8_lossy(&body.unwrap_or_default()).trim()
                    );
                }
                Err(e) => last = e.to_string(),
            }
        }
        if !proc.running() {
            panic!(
                "{} exited before it was ready; its stderr ends:\n{}",
                proc.name,
                proc.stderr_tail(20).join("\n")
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} not ready after {} s (/readyz: {last}); its stderr ends:\n{}",
            proc.name,
            READY_LIMIT.as_secs(),
            proc.stderr_tail(20).join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PUT and GET targets for `path`, v1-signed with the shared secret.
fn target(path: &str, size: u64, seed: u64) -> Target {
    let get = format!("/upload/{}", SlotPath::encode(path));
    let query = upslot::auth::sign_query(Scheme::V1, SECRET.as_bytes(), path, size, None)
        .expect("v1 signs");
    Target {
        put: format!("{get}?{query}"),
        get,
        seed,
        put_status: http::StatusCode::CREATED,
    }
}

/// `target`'s object straight in the bucket, by URLs presigned for one hour
/// (the key under `raw/`, the upslot path after it).
fn presigned(bucket: &rusty_s3::Bucket, credentials: &rusty_s3::Credentials, t: Target) -> Target {
    use rusty_s3::S3Action;
    let key = format!("raw/{}", t.get.trim_start_matches("/upload/"));
    let hour = Duration::from_secs(3600);
    let relative = |url: url::Url| format!("{}?{}", url.path(), url.query().unwrap_or(""));
    Target {
        put: relative(bucket.put_object(Some(credentials), &key).sign(hour)),
        get: relative(bucket.get_object(Some(credentials), &key).sign(hour)),
        seed: t.seed,
        put_status: http::StatusCode::OK,
    }
}

fn sync_disks() {
    let _ = Command::new("sync").status();
}

/// Bytes under `dir` as `du -sb` counts them (0 if it cannot).
fn disk_usage(dir: &Path) -> u64 {
    Command::new("du")
        .arg("-sb")
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The first line a command prints (on stdout or stderr), or "unknown".
fn version(cmd: &Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The parts of the set-up whose CPU time is counted, in table order.
const PARTS: [&str; 6] = [
    "upslot fs+local",
    "upslot x3",
    "Garage x3",
    "PostgreSQL",
    "nginx",
    "load generator",
];

/// Reads the CPU time of each part from /proc: its processes by PID, and for
/// PostgreSQL and nginx also their children (backends, workers), whose
/// command lines do not name the scratch directory.
struct Cpu {
    /// Per part: the PIDs, and whether their children count too.
    parts: Vec<(Vec<u32>, bool)>,
}

impl Cpu {
    /// CPU seconds so far, per part.
    fn read(&self) -> Vec<f64> {
        self.parts
            .iter()
            .map(|(pids, tree)| {
                pids.iter()
                    .map(|&pid| {
                        let kids: f64 = if *tree {
                            children_of(pid)
                                .iter()
                                .filter_map(|&c| cpu_of(c, false))
                                .sum()
                        } else {
                            0.0
                        };
                        cpu_of(pid, *tree).unwrap_or(0.0) + kids
                    })
                    .sum()
            })
            .collect()
    }

    /// CPU seconds per part since `before` (a `read`).
    fn since(&self, before: &[f64]) -> Vec<f64> {
        self.read().iter().zip(before).map(|(a, b)| a - b).collect()
    }
}

/// A PID from the first line of `file` (pid files, postmaster.pid).
fn pid_in(file: &Path) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID in {}", file.display()))
}

/// Files under `dir`, and how many of them end in `.zst` (Garage's
/// compressed blocks).
fn block_files(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut counts = (0, 0);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (files, zst) = block_files(&path);
            counts = (counts.0 + files, counts.1 + zst);
        } else {
            counts.0 += 1;
            counts.1 += u64::from(path.extension().is_some_and(|e| e == "zst"));
        }
    }
    counts
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB as f64)
}

// ---------------------------------------------------------------------------
// Figures.

/// The sides a row is measured on, in table order.
const SIDES: [&str; 4] = [
    "fs+local",
    "cluster via nginx",
    "one cluster instance",
    "raw S3 (Garage)",
];
const FS: usize = 0;
const NGINX: usize = 1;
const DIRECT: usize = 2;
/// The Garage node the direct instance talks to, with presigned URLs: what
/// the object-store path costs over the store itself.
const RAW: usize = 3;

/// One side's figures for one row, a value per repetition.
#[derive(Default)]
struct Side {
    mb_s: Vec<f64>,
    req_s: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Failed requests by status (or `timeout`, `io`...), over the whole row.
    errors: BTreeMap<String, usize>,
    /// CPU seconds per part (`PARTS`), and wall seconds, over the timed batches.
    cpu: Vec<f64>,
    wall: f64,
}

impl Side {
    fn add(&mut self, case: Case, run: &Load, cpu: &[f64]) {
        let secs = run.wall.as_secs_f64();
        self.cpu.resize(cpu.len(), 0.0);
        for (sum, used) in self.cpu.iter_mut().zip(cpu) {
            *sum += used;
        }
        self.wall += secs;
        self.req_s.push(case.n as f64 / secs);
        self.mb_s
            .push((case.n as u64 * case.size) as f64 / secs / 1e6);
        let mut times = run.times.clone();
        times.sort();
        let (p50, p99) = if times.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (
                percentile(&times, 0.5).as_secs_f64(),
                percentile(&times, 0.99).as_secs_f64(),
            )
        };
        self.p50.push(p50);
        self.p99.push(p99);
        self.count("", run);
    }

    fn count(&mut self, prefix: &str, run: &Load) {
        for (label, n) in &run.errors {
            *self.errors.entry(format!("{prefix}{label}")).or_default() += n;
        }
    }

    fn failed(&self) -> usize {
        self.errors.values().sum()
    }

    fn show_errors(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors
            .iter()
            .map(|(label, n)| format!("{label} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `MB/s | req/s | p50 / p99` cells.
    fn cells(&self) -> String {
        format!(
            "{:.1} | {} | {} / {}",
            median(&self.mb_s),
            per_s(median(&self.req_s)),
            ms(median(&self.p50)),
            ms(median(&self.p99))
        )
    }

    /// Cores busy per part during the timed batches, and in all; dashes if
    /// they were too short to tell (/proc counts CPU time in 10 ms ticks).
    fn cores(&self) -> String {
        if self.wall < MIN_CPU_WALL {
            return vec!["-"; PARTS.len() + 1].join(" | ");
        }
        let busy: Vec<f64> = self.cpu.iter().map(|c| c / self.wall).collect();
        let mut cells: Vec<String> = busy.iter().map(|b| format!("{b:.2}")).collect();
        cells.push(format!("{:.2}", busy.iter().sum::<f64>()));
        cells.join(" | ")
    }

    /// The median of the per-repetition ratios `self / other` (MB/s), and each.
    fn ratio(&self, other: &Side) -> (f64, String) {
        let each: Vec<f64> = self
            .mb_s
            .iter()
            .zip(&other.mb_s)
            .map(|(a, b)| a / b)
            .collect();
        let shown = each
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        (median(&each), shown)
    }
}

struct Row {
    case: Case,
    op: &'static str,
    sides: [Side; 4],
}

impl Row {
    fn head(&self) -> String {
        format!(
            "| {} | {} | {} | {} |",
            show_size(self.case.size),
            self.op,
            self.case.n,
            self.case.conc
        )
    }
}

// ---------------------------------------------------------------------------
// The run.

/// Runs everything and prints the report; false if a request failed or a
/// sampled file differs. Servers that do not start make it panic, which stops
/// what was started (the guards below, dropped in reverse order).
async fn run(settings: Settings) -> bool {
    let run_started = Instant::now();
    let scratch = support::scratch_dir(&settings.parent, "upslot-cluster-", "scratch directory");
    // PostgreSQL runs as `postgres` and nginx's workers as `nobody` when this
    // runs as root: they must pass through the scratch directory.
    let _ = Command::new("chmod")
        .arg("0711")
        .arg(scratch.path())
        .status();
    let root = scratch.path().to_owned();
    let mut phases: Vec<(String, Duration)> = Vec::new();
    let clients = settings
        .matrix
        .iter()
        .map(|c| c.conc)
        .chain(settings.memory.map(|(_, n)| n))
        .max()
        .unwrap_or(1)
        .max(32);

    println!(
        "upslot cluster bench: one fs+local instance (fsync off) against three s3+postgres \
         instances behind nginx, all on 127.0.0.1 with the load generator; HTTP/1.1 keep-alive."
    );
    let pgbin = PathBuf::from(env_or("PGBIN", "/usr/lib/postgresql/15/bin"));
    let nginx_bin = PathBuf::from(env_or("NGINX", "/usr/sbin/nginx"));
    println!();
    println!(
        "Machine: {}; scratch {} ({}); load average {}.",
        machine(),
        root.display(),
        filesystem_of(&root),
        load_average()
    );
    println!(
        "Software: upslot {}; {}; {}; {}.",
        settings.bin.display(),
        version(&settings.garage, "--version"),
        version(&pgbin.join("postgres"), "--version"),
        version(&nginx_bin, "-v"),
    );

    // --- The cluster: Garage, PostgreSQL, three instances, nginx.
    let t = Instant::now();
    let garage = Script::start("garage.sh", &root.join("garage"), &[], &settings.garage);
    phases.push(("start Garage (3 nodes)".into(), t.elapsed()));
    let t = Instant::now();
    let postgres = Script::start("postgres.sh", &root.join("postgres"), &[], &settings.garage);
    phases.push(("start PostgreSQL".into(), t.elapsed()));
    let s3 = garage.env("garage.env");
    let index_url = postgres.env("postgres.env")["UPSLOT_INDEX_URL"].clone();
    let endpoints: Vec<String> = s3["S3_ENDPOINTS"]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(endpoints.len(), 3, "garage.env: S3_ENDPOINTS");

    let t = Instant::now();
    let mut cluster: Vec<Instance> = Vec::new();
    for (i, name) in ["upslot-1", "upslot-2", "upslot-3"].into_iter().enumerate() {
        // Each instance talks to its own Garage node, as deploy/cluster/README.md suggests.
        let backend = format!(
            "[storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nregion = \"{}\"\nbucket = \"{}\"\n\
             access_key_id = \"{}\"\nsecret_access_key = \"{}\"\npath_style = true\n\
             [index]\nbackend = \"postgres\"\nurl = \"{index_url}\"\n",
            endpoints[i],
            s3["S3_REGION"],
            s3["S3_BUCKET"],
            s3["AWS_ACCESS_KEY_ID"],
            s3["AWS_SECRET_ACCESS_KEY"],
        );
        let dir = root.join(name);
        cluster.push(Instance::start(&settings.bin, &dir, name, &backend, clients).await);
    }
    phases.push(("start 3 s3+postgres instances".into(), t.elapsed()));
    let t = Instant::now();
    let upstreams: Vec<String> = cluster.iter().map(|i| i.addr.to_string()).collect();
    let nginx = Script::start(
        "nginx.sh",
        &root.join("nginx"),
        &upstreams,
        &settings.garage,
    );
    let nginx_addr: SocketAddr = nginx.env("nginx.env")["NGINX_URL"]
        .trim_start_matches("http://")
        .parse()
        .expect("NGINX_URL");
    phases.push(("start nginx".into(), t.elapsed()));

    // --- The one-machine instance.
    let t = Instant::now();
    let fs = Instance::start(
        &settings.bin,
        &root.join("upslot-fs"),
        "upslot-fs",
        "",
        clients,
    )
    .await;
    phases.push(("start the fs+local instance".into(), t.elapsed()));

    let cpu = Cpu {
        parts: vec![
            (vec![fs.proc.pid()], false),
            (cluster.iter().map(|i| i.proc.pid()).collect(), false),
            (
                (1..=3)
                    .map(|k| pid_in(&root.join(format!("garage/node{k}.pid"))))
                    .collect(),
                false,
            ),
            (
                vec![pid_in(&root.join("postgres/pgdata/postmaster.pid"))],
                true,
            ),
            (vec![pid_in(&root.join("nginx/nginx.pid"))], true),
            (vec![std::process::id()], false),
        ],
    };

    let mut addrs = vec![fs.addr, nginx_addr];
    // The node cluster[0] talks to, straight.
    let raw_url: url::Url = endpoints[0].parse().expect("S3 endpoint");
    let raw_addr: SocketAddr = format!(
        "{}:{}",
        raw_url.host_str().expect("S3 endpoint host"),
        raw_url.port_or_known_default().expect("S3 endpoint port")
    )
    .parse()
    .expect("S3 endpoint address");
    let raw_bucket = rusty_s3::Bucket::new(
        raw_url,
        rusty_s3::UrlStyle::Path,
        s3["S3_BUCKET"].clone(),
        s3["S3_REGION"].clone(),
    )
    .expect("bucket");
    let raw_credentials = rusty_s3::Credentials::new(
        s3["AWS_ACCESS_KEY_ID"].clone(),
        s3["AWS_SECRET_ACCESS_KEY"].clone(),
    );
    if settings.direct {
        addrs.push(cluster[0].addr);
        addrs.push(raw_addr);
    }
    let for_side = |s: usize, targets: Arc<Vec<Target>>| -> Arc<Vec<Target>> {
        if s != RAW {
            return targets;
        }
        Arc::new(
            targets
                .iter()
                .map(|t| presigned(&raw_bucket, &raw_credentials, t.clone()))
                .collect(),
        )
    };
    // Where each side's files are read back byte for byte: the cluster's
    // through other instances than the one that took them.
    let verify_at = |side: usize, i: usize| match side {
        FS => fs.addr,
        NGINX => cluster[1 + i % 2].addr,
        RAW => raw_addr,
        _ => cluster[2].addr,
    };

    let block = pattern_block();
    let mut first_errors: Vec<String> = Vec::new();
    let mut cluster_bytes: u64 = 0;
    let mut seed = 0u64;
    let mut new_targets = |prefix: &str, n: usize, size: u64| -> Arc<Vec<Target>> {
        Arc::new(
            (0..n)
                .map(|i| {
                    seed += 1;
                    target(&format!("{prefix}/{i}.bin"), size, seed)
                })
                .collect(),
        )
    };
    let mut note = |what: &str, seen: &Load| {
        if let Some(e) = &seen.first_error {
            eprintln!("cluster: first failure of {what}: {e}");
            first_errors.push(e.clone());
        }
    };

    // --- Warm-up: pools and connections are made on first use.
    let t = Instant::now();
    let mut warmup_failed = 0;
    for (s, &addr) in addrs.iter().enumerate() {
        let targets = for_side(s, new_targets(&format!("warm/{s}"), WARMUP_FILES, 4 * KIB));
        for op in [Op::Put, Op::Get] {
            let seen = load(SIDES[s], addr, op, &targets, 4 * KIB, 32, &block).await;
            warmup_failed += seen.errors.values().sum::<usize>();
            note("the warm-up", &seen);
        }
        if s != FS {
            cluster_bytes += WARMUP_FILES as u64 * 4 * KIB;
        }
    }
    phases.push((
        format!("warm-up ({WARMUP_FILES} x 4 KiB PUT + GET per side)"),
        t.elapsed(),
    ));

    // --- The matrix.
    let mut rows: Vec<Row> = Vec::new();
    let reps = settings.warmup + settings.reps;
    for &case in &settings.matrix {
        let t = Instant::now();
        let Case { size, n, conc } = case;
        let new_row = |op| Row {
            case,
            op,
            sides: Default::default(),
        };
        let (mut put, mut get) = (new_row("PUT"), new_row("GET"));
        let mut stored: Vec<Vec<Target>> = vec![Vec::new(); addrs.len()];
        for rep in 0..reps {
            let timed = rep >= settings.warmup;
            let sides = addrs.len();
            let order: Vec<usize> = (0..sides).map(|k| (k + rep) % sides).collect();
            let targets: Vec<Arc<Vec<Target>>> = (0..sides)
                .map(|s| {
                    for_side(
                        s,
                        new_targets(&format!("m/{}/{s}/r{rep}", show_size(size)), n, size),
                    )
                })
                .collect();
            for op in [Op::Put, Op::Get] {
                for &s in &order {
                    if op == Op::Put {
                        // No side writes back another's dirty pages.
                        sync_disks();
                    }
                    let before = cpu.read();
                    let seen = load(SIDES[s], addrs[s], op, &targets[s], size, conc, &block).await;
                    let used = cpu.since(&before);
                    note(
                        &format!("{} {} {}", show_size(size), op.name(), SIDES[s]),
                        &seen,
                    );
                    let row = if op == Op::Put { &mut put } else { &mut get };
                    if timed {
                        row.sides[s].add(case, &seen, &used);
                    } else {
                        row.sides[s].count("warm-up ", &seen);
                    }
                }
            }
            for s in 0..sides {
                if s != FS {
                    cluster_bytes += n as u64 * size;
                }
                stored[s].extend(targets[s].iter().cloned());
            }
        }
        // Untimed: a sample of each side's files, byte for byte.
        for (s, files) in stored.iter().enumerate() {
            let most = VERIFY_SAMPLE.min((VERIFY_BYTES / size).max(1) as usize);
            let step = files.len().div_ceil(most).max(1);
            for (i, file) in files.iter().step_by(step).enumerate() {
                let one = Arc::new(vec![file.clone()]);
                let seen = load(SIDES[s], verify_at(s, i), Op::Verify, &one, size, 1, &block).await;
                note(&format!("verifying {}", SIDES[s]), &seen);
                get.sides[s].count("verify ", &seen);
            }
        }
        let took = t.elapsed();
        eprintln!(
            "cluster: {} x{n} at {conc}: PUT {} MB/s fs, {} MB/s cluster; GET {} MB/s fs, {} MB/s \
             cluster ({:.1} s)",
            show_size(size),
            per_s(median(&put.sides[FS].mb_s)),
            per_s(median(&put.sides[NGINX].mb_s)),
            per_s(median(&get.sides[FS].mb_s)),
            per_s(median(&get.sides[NGINX].mb_s)),
            took.as_secs_f64()
        );
        phases.push((
            format!("{} x{n} at {conc}, {reps} repetition(s)", show_size(size)),
            took,
        ));
        rows.push(put);
        rows.push(get);
    }
    let after_matrix: Vec<(&str, Option<u64>)> = std::iter::once(&fs)
        .chain(&cluster)
        .map(|i| (i.name, i.peak()))
        .collect();

    // --- The memory figure: concurrent large uploads to one instance.
    let mut memory_line = None;
    let mut memory_failed = 0;
    if let Some((size, n)) = settings.memory {
        let t = Instant::now();
        let instance = &cluster[1];
        let pid = instance.proc.pid();
        let before = status_of(pid, "VmRSS:").unwrap_or(0);
        let reset = reset_peak_of(pid);
        // A second opinion, and the figure if VmHWM cannot be reset.
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut max = 0;
                while !stop.load(Ordering::Relaxed) {
                    max = max.max(status_of(pid, "VmRSS:").unwrap_or(0));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                max
            })
        };
        sync_disks();
        let targets = new_targets(&format!("mem/{}", show_size(size)), n, size);
        let cpu_before = cpu.read();
        let seen = load(
            instance.name,
            instance.addr,
            Op::Put,
            &targets,
            size,
            n,
            &block,
        )
        .await;
        let busy = cpu
            .since(&cpu_before)
            .iter()
            .zip(PARTS)
            .skip(1)
            .map(|(used, part)| format!("{part} {:.2}", used / seen.wall.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ");
        stop.store(true, Ordering::Relaxed);
        let sampled = sampler.await.expect("RSS sampler");
        let hwm = instance.peak().unwrap_or(0);
        memory_failed += seen.errors.values().sum::<usize>();
        note("the memory uploads", &seen);
        cluster_bytes += n as u64 * size;
        let put_secs = seen.wall.as_secs_f64();
        // Two of them read back, byte for byte, through another instance.
        for file in targets.iter().step_by(n.div_ceil(2).max(1)) {
            let one = Arc::new(vec![file.clone()]);
            let back = load(
                "upslot-3",
                cluster[2].addr,
                Op::Verify,
                &one,
                size,
                1,
                &block,
            )
            .await;
            memory_failed += back.errors.values().sum::<usize>();
            note("verifying the memory uploads", &back);
        }
        memory_line = Some(format!(
            "- peak RSS of one s3+postgres instance with {n} concurrent {} uploads: {} MiB (target < {} MiB{}). \
             VmHWM {}, reset just before (RSS then {} MiB); highest RSS sampled every 20 ms: {} MiB. \
             The {n} PUTs took {put_secs:.1} s, {:.1} MB/s together; cores busy meanwhile: {busy}.",
            show_size(size).replace("MiB", " MiB"),
            mib(if reset { hwm } else { sampled }),
            RSS_TARGET / MIB,
            if seen.errors.is_empty() {
                ""
            } else {
                "; uploads FAILED"
            },
            if reset { "read" } else { "could not be" },
            mib(before),
            mib(sampled),
            (n as u64 * size) as f64 / put_secs / 1e6,
        ));
        phases.push((
            format!("{n} concurrent {} PUTs to one instance", show_size(size)),
            t.elapsed(),
        ));
    }

    let garage_disk: u64 = (1..=3)
        .map(|k| disk_usage(&root.join(format!("garage/node{k}/data"))))
        .sum();
    let (blocks, compressed) = (1..=3)
        .map(|k| block_files(&root.join(format!("garage/node{k}/data"))))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));

    // --- Report.
    println!();
    println!(
        "| size | op | N | C | fs+local MB/s | req/s | p50 / p99 ms | cluster MB/s | req/s | \
         p50 / p99 ms | cluster/fs | per rep | errors fs; cluster |"
    );
    println!("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for row in &rows {
        let (ratio, each) = row.sides[NGINX].ratio(&row.sides[FS]);
        println!(
            "{} {} | {} | {ratio:.2}x | {each} | {}; {} |",
            row.head(),
            row.sides[FS].cells(),
            row.sides[NGINX].cells(),
            row.sides[FS].show_errors(),
            row.sides[NGINX].show_errors(),
        );
    }
    if settings.direct {
        println!();
        println!(
            "For context, the same rows against one cluster instance directly (no nginx; the \
             other two instances idle):"
        );
        println!();
        println!(
            "| size | op | N | C | one instance MB/s | req/s | p50 / p99 ms | instance/fs | \
             nginx cluster/instance | errors |"
        );
        println!("|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for row in &rows {
            let (vs_fs, _) = row.sides[DIRECT].ratio(&row.sides[FS]);
            let (vs_nginx, _) = row.sides[NGINX].ratio(&row.sides[DIRECT]);
            println!(
                "{} {} | {vs_fs:.2}x | {vs_nginx:.2}x | {} |",
                row.head(),
                row.sides[DIRECT].cells(),
                row.sides[DIRECT].show_errors(),
            );
        }
        println!();
        println!(
            "The object-store path: that instance against the Garage node it talks to, with the \
             same objects PUT and GET straight by presigned URLs (target: 0.8x for 1 MiB and \
             100 MiB):"
        );
        println!();
        println!(
            "| size | op | N | C | raw S3 MB/s | req/s | p50 / p99 ms | instance/raw S3 | per rep | \
             errors |"
        );
        println!("|---:|:---:|---:|---:|---:|---:|---:|---:|---|---|");
        for row in &rows {
            let (vs_raw, each) = row.sides[DIRECT].ratio(&row.sides[RAW]);
            println!(
                "{} {} | {vs_raw:.2}x | {each} | {} |",
                row.head(),
                row.sides[RAW].cells(),
                row.sides[RAW].show_errors(),
            );
        }
    }
    println!();
    println!(
        "Where the CPU went: cores busy during each side's timed batches (CPU seconds of each \
         part over the batches' wall time, if they took {MIN_CPU_WALL} s or more in all; the machine \
         has {}):",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!("| size | op | side | {} | all |", PARTS.join(" | "));
    println!("|---:|:---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        for (s, side) in row.sides.iter().enumerate() {
            if side.wall > 0.0 {
                println!(
                    "| {} | {} | {} | {} |",
                    show_size(row.case.size),
                    row.op,
                    SIDES[s],
                    side.cores()
                );
            }
        }
    }
    println!();
    println!(
        "N files per repetition over C keep-alive connections; MB/s (10^6 bytes/s) and req/s over \
         the batch's wall time, p50/p99 over its successful requests; medians over {} timed \
         repetition(s) after {} untimed, and a warm-up of {WARMUP_FILES} x 4 KiB per side first. \
         cluster/fs: median of the per-repetition MB/s ratios (\"per rep\"). The sides take turns \
         going first; `sync` runs before every PUT batch; GETs follow the PUTs. Errors: failed \
         requests by status (`verify`: a sample of each side's files, up to {VERIFY_SAMPLE} and {}, \
         read back byte for byte, the cluster's through another instance).",
        settings.reps,
        settings.warmup,
        show_size(VERIFY_BYTES),
    );
    println!();
    let peaks = after_matrix
        .iter()
        .map(|(name, hwm)| format!("{name} {}", hwm.map_or("?".into(), mib)))
        .collect::<Vec<_>>()
        .join(", ");
    println!("- peak RSS (VmHWM, MiB) of each instance after the matrix: {peaks}.");
    if let Some(line) = &memory_line {
        println!("{line}");
    }
    println!(
        "- Garage holds {:.2} GiB in its 3 nodes' data directories for {:.2} GiB PUT to the \
         cluster ({:.2}x; replication factor 3); {compressed} of its {blocks} block files are \
         stored zstd-compressed (the bench's bodies are windows of one 1 MiB pattern).",
        garage_disk as f64 / GIB as f64,
        cluster_bytes as f64 / GIB as f64,
        garage_disk as f64 / cluster_bytes.max(1) as f64,
    );

    // --- Teardown, in the guards' order, timed.
    let t = Instant::now();
    drop(fs);
    let mut nginx = nginx;
    nginx.stop();
    for mut instance in cluster {
        instance.proc.stop();
    }
    let mut postgres = postgres;
    postgres.stop();
    let mut garage = garage;
    garage.stop();
    drop(scratch);
    phases.push((
        "stop everything, remove the scratch directory".into(),
        t.elapsed(),
    ));
    let phases_line = phases
        .iter()
        .map(|(what, d)| format!("{what} {:.1} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join("; ");
    println!("- phases: {phases_line}.");
    println!(
        "- total {:.0} s; load average now {}.",
        run_started.elapsed().as_secs_f64(),
        load_average()
    );

    let failed: usize = rows
        .iter()
        .flat_map(|r| &r.sides)
        .map(Side::failed)
        .sum::<usize>()
        + warmup_failed
        + memory_failed;
    if failed > 0 {
        eprintln!("cluster: {failed} request(s) failed; the first of each batch:");
        for e in &first_errors {
            eprintln!("  {e}");
        }
    }
    failed == 0
}
