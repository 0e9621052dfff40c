//! Side-by-side load generator: upslot (as its own process) against nginx's dav
//! module, on the same machine in the same run, with the machine's own limits
//! (loopback TCP, the disk's sequential write + fdatasync) measured alongside.
//! `bash benches/compare.sh` installs nginx if needed and runs it.
//!
//! `cargo bench --bench loadgen` (nginx must be installed: Debian's `nginx`
//! package; as root its workers drop to `nobody`, which is fine) does, for
//! every fsync setting and every row of the matrix (size S, N files,
//! concurrency C; by default the performance issue's 4 KiB x2000 at 32, 1 MiB
//! x300 at 16, 100 MiB x4 at 2 and 1 GiB x1 at 1, three repetitions, fsync off
//! then on):
//! - starts `target/release/upslot serve -c <temp config>` (the binary Cargo
//!   builds for this bench) with a fresh data directory, and nginx with a temp
//!   prefix (`dav_methods PUT`, `create_full_put_path on`, `client_max_body_size
//!   0`, `client_body_temp_path` on the same filesystem, `sendfile on`), both on
//!   127.0.0.1 high ports;
//! - per repetition, PUTs N files of size S to unique paths (v1-signed for
//!   upslot, plain for nginx) over C keep-alive connections pulling from one
//!   queue, to each server in turn (the first server alternates between
//!   repetitions), then GETs them back the same way checking status and length;
//!   `sync` runs before each PUT batch so neither server pays for the other's
//!   dirty pages; a failed request is counted by status (or `timeout`, `io`...)
//!   and its connection replaced, it does not stop the run;
//! - after the timed part, GETs a sample of each server's files again and checks
//!   every byte;
//! - reads upslot's peak RSS (VmHWM in /proc/<pid>/status) before stopping it.
//!
//! It prints the machine (CPUs, memory, kernel, the scratch directory's
//! filesystem), loopback TCP and `dd conv=fdatasync` throughput, then a markdown
//! table with one row per size, fsync setting and method: for each server the
//! medians over the repetitions of MB/s, req/s and p50/p99 request latency, the
//! median of the pairwise (same repetition) upslot/nginx ratios and each of them,
//! the performance issue's target for the ratio, and the failed requests by
//! status; then the 1 GiB single-stream PUT against loopback TCP, the fsync PUTs
//! against dd, and upslot's peak RSS per size and fsync setting. It never fails on speed; it exits non-zero
//! if a request failed or a sampled file differs.
//!
//! Environment:
//! - `UPSLOT_LOADGEN_MATRIX`: comma-separated `SIZE:N:C` rows (default
//!   `4KiB:2000:32,1MiB:300:16,100MiB:4:2,1GiB:1:1`); a size of the default
//!   alone (`1GiB`) takes its default N and C, so `UPSLOT_LOADGEN_MATRIX=4KiB,1MiB`
//!   runs a subset. (It replaces `UPSLOT_LOADGEN_SIZES`, `_N` and `_C`, which
//!   are refused.)
//! - `UPSLOT_LOADGEN_FSYNC`: upslot's fsync settings to run (default `off,on`).
//! - `UPSLOT_LOADGEN_REPS`: timed repetitions per row (default 3).
//! - `UPSLOT_LOADGEN_WARMUP`: untimed repetitions before them (default 1): a
//!   fresh data directory's first batch pays for empty shard directories and,
//!   on some file systems, for the inodes the previous row freed.
//! - `UPSLOT_LOADGEN_DIR`: parent of the scratch directory (default `/var/tmp`;
//!   `/tmp` is slow on the CI VM). Everything under it is removed at the end.
//! - `UPSLOT_LOADGEN_NGINX_WORKERS`: nginx `worker_processes` (default `auto`).
//! - `UPSLOT_LOADGEN_BIN`: another upslot binary.
//! - `UPSLOT_LOADGEN_PERF`: `stat` attaches `perf stat` to each server during
//!   every timed batch and prints, per request, CPU time, context switches,
//!   system calls and page faults of upslot and of nginx (master and workers);
//!   `alloc` counts `malloc` calls too, through a uprobe that slows them, so
//!   that run's times do not count; `record` samples call stacks instead
//!   (`perf record -g`, one file per server and batch in
//!   `UPSLOT_LOADGEN_PERF_DIR`, default /var/tmp/upslot-perf) (docs/performance.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::http::{CHUNK, Load, Op, Target, load, pattern_block};
use support::process::{Proc, free_port, wait_listening};
use support::procfs::{filesystem_of, load_average, machine};
use support::{
    GIB, KIB, MIB, env_list, env_or, env_positive, env_switches, median, ms, on_off, parse_size,
    per_s, percentile, show_size_tight as show_size,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use upslot::auth::Scheme;
use upslot::path::SlotPath;

const SECRET: &str = "upslot-loadgen-secret-0123456789";
/// The performance issue's matrix: SIZE:N:C.
const DEFAULT_MATRIX: &str = "4KiB:2000:32,1MiB:300:16,100MiB:4:2,1GiB:1:1";
/// Files checked byte for byte after the timed part, per server and row: at
/// most this many, and at most `VERIFY_BYTES` of them (but at least one).
const VERIFY_SAMPLE: usize = 8;
const VERIFY_BYTES: u64 = GIB;
/// The whole run gives up after this long.
const RUN_LIMIT: Duration = Duration::from_secs(60 * 60);
/// Loopback and dd: this many bytes, this many times.
const PROBE_BYTES: u64 = GIB;
const PROBE_REPS: usize = 3;

fn main() {
    let settings = Settings::from_env();
    support::run_bounded("loadgen", RUN_LIMIT, run(settings));
}

// ---------------------------------------------------------------------------
// Settings.

/// One row of the matrix: N files of `size` bytes at concurrency `conc`.
#[derive(Clone, Copy)]
struct Case {
    size: u64,
    n: usize,
    conc: usize,
}

/// `SIZE:N:C,...`; a size of `DEFAULT_MATRIX` alone takes its N and C there.
fn parse_matrix(name: &str) -> Vec<Case> {
    let row = |item: &str| -> Option<Case> {
        let mut parts = item.split(':').map(str::trim);
        let size = parse_size(parts.next()?)?;
        let (n, conc) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(c), None) => (n.parse().ok()?, c.parse().ok()?),
            (None, _, _) => {
                let default = DEFAULT_MATRIX
                    .split(',')
                    .map(|d| row_default(d).expect("default matrix"))
                    .find(|d| d.size == size)?;
                (default.n, default.conc)
            }
            _ => return None,
        };
        (n > 0 && conc > 0).then_some(Case { size, n, conc })
    };
    let matrix: Vec<Case> = env_list(name, DEFAULT_MATRIX)
        .iter()
        .map(|item| {
            row(item).unwrap_or_else(|| {
                panic!(
                    "{name}: bad row {item:?}: expected SIZE:N:C (e.g. 1MiB:300:16), or a size of \
                     the default {DEFAULT_MATRIX} alone"
                )
            })
        })
        .collect();
    assert!(!matrix.is_empty(), "{name}: no rows");
    matrix
}

fn row_default(item: &str) -> Option<Case> {
    let mut parts = item.split(':');
    Some(Case {
        size: parse_size(parts.next()?)?,
        n: parts.next()?.parse().ok()?,
        conc: parts.next()?.parse().ok()?,
    })
}

struct Settings {
    parent: PathBuf,
    matrix: Vec<Case>,
    fsync: Vec<bool>,
    reps: usize,
    /// Untimed repetitions before the timed ones.
    warmup: usize,
    nginx: PathBuf,
    nginx_workers: String,
    perf: support::perf::Mode,
    bin: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        for gone in [
            "UPSLOT_LOADGEN_SIZES",
            "UPSLOT_LOADGEN_N",
            "UPSLOT_LOADGEN_C",
        ] {
            assert!(
                std::env::var_os(gone).is_none(),
                "{gone} was replaced by UPSLOT_LOADGEN_MATRIX=SIZE:N:C,... (default {DEFAULT_MATRIX})"
            );
        }
        let fsync = env_switches("UPSLOT_LOADGEN_FSYNC", "off,on");
        assert!(!fsync.is_empty(), "UPSLOT_LOADGEN_FSYNC: nothing to run");
        Settings {
            parent: PathBuf::from(env_or("UPSLOT_LOADGEN_DIR", "/var/tmp")),
            matrix: parse_matrix("UPSLOT_LOADGEN_MATRIX"),
            fsync,
            reps: env_positive("UPSLOT_LOADGEN_REPS", 3),
            warmup: std::env::var("UPSLOT_LOADGEN_WARMUP")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            nginx: find_nginx(),
            nginx_workers: env_or("UPSLOT_LOADGEN_NGINX_WORKERS", "auto"),
            perf: support::perf::Mode::from_env(),
            bin: std::env::var_os("UPSLOT_LOADGEN_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_upslot")),
                PathBuf::from,
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// The servers.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Upslot,
    Nginx,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Upslot => "upslot",
            Kind::Nginx => "nginx",
        }
    }
}

struct Server {
    kind: Kind,
    addr: SocketAddr,
    proc: Proc,
}

impl Server {
    /// `clients`: the concurrency the row drives, which `[limits]` must allow.
    async fn upslot(bin: &Path, dir: &Path, fsync: bool, clients: usize) -> Server {
        std::fs::create_dir_all(dir).expect("upslot directory");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let admin = free_port();
        let config = format!(
            "listen = \"{addr}\"\nbase_path = \"/upload/\"\ndata_dir = \"{}\"\nsecret = \"{SECRET}\"\n\
             schemes = [\"v1\"]\nmax_file_size = \"4 GiB\"\nmin_free_space = \"0\"\nfsync = {fsync}\n\
             [quota]\ntotal = \"0\"\nper_user = \"0\"\n{limits}[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            dir.join("data").display(),
            limits = support::limits_toml(clients),
        );
        let path = dir.join("upslot.toml");
        std::fs::write(&path, config).expect("upslot config");
        let mut proc = Proc::spawn(
            "upslot",
            Command::new(bin).arg("serve").arg("-c").arg(&path),
            dir,
        );
        wait_listening(addr, &mut proc).await;
        Server {
            kind: Kind::Upslot,
            addr,
            proc,
        }
    }

    async fn nginx(nginx: &Path, dir: &Path, workers: &str) -> Server {
        // nginx's workers drop to nobody when started as root: they must reach
        // the document root and the body temp directory.
        for sub in ["", "root", "body", "logs"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).expect("nginx directory");
            let mode = if sub.is_empty() { "0711" } else { "0777" };
            let _ = Command::new("chmod").arg(mode).arg(&d).status();
        }
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let d = dir.display();
        let config = format!(
            "worker_processes {workers};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  default_type application/octet-stream;\n  access_log {d}/logs/access.log;\n\
             \x20 sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n  client_max_body_size 0;\n\
             \x20 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/body;\n  fastcgi_temp_path {d}/body;\n\
             \x20 uwsgi_temp_path {d}/body;\n  scgi_temp_path {d}/body;\n\
             \x20 server {{\n    listen {addr};\n    root {d}/root;\n    location / {{\n\
             \x20     dav_methods PUT DELETE;\n      create_full_put_path on;\n      dav_access user:rw group:r all:r;\n\
             \x20   }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, config).expect("nginx config");
        let mut proc = Proc::spawn(
            "nginx",
            Command::new(nginx)
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&path)
                .arg("-e")
                .arg(dir.join("logs/error.log")),
            dir,
        );
        wait_listening(addr, &mut proc).await;
        Server {
            kind: Kind::Nginx,
            addr,
            proc,
        }
    }

    /// PUT and GET targets for `path`.
    fn target(&self, path: &str, size: u64, seed: u64) -> Target {
        match self.kind {
            Kind::Upslot => {
                let get = format!("/upload/{}", SlotPath::encode(path));
                let query =
                    upslot::auth::sign_query(Scheme::V1, SECRET.as_bytes(), path, size, None)
                        .expect("v1 signs");
                Target {
                    put: format!("{get}?{query}"),
                    get,
                    seed,
                    put_status: http::StatusCode::CREATED,
                }
            }
            Kind::Nginx => {
                let get = format!("/{}", SlotPath::encode(path));
                Target {
                    put: get.clone(),
                    get,
                    seed,
                    put_status: http::StatusCode::CREATED,
                }
            }
        }
    }
}

/// nginx on PATH, or in /usr/sbin (which a non-root PATH often lacks).
fn find_nginx() -> PathBuf {
    for candidate in ["nginx", "/usr/sbin/nginx"] {
        let works = Command::new(candidate)
            .arg("-v")
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if works {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "nginx not found (on PATH or in /usr/sbin): `bash benches/compare.sh` installs Debian's \
         nginx, or run `apt-get install nginx` as root"
    );
}

// ---------------------------------------------------------------------------
// The machine's limits.

/// 1 GiB through one 127.0.0.1 TCP connection (256 KiB writes and reads), MB/s.
async fn loopback_mb_s() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break total;
            }
            total += n as u64;
        }
    });
    let buf = vec![0x5au8; CHUNK];
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut sent = 0u64;
    while sent < PROBE_BYTES {
        s.write_all(&buf).await.expect("write");
        sent += CHUNK as u64;
    }
    s.shutdown().await.expect("shutdown");
    drop(s);
    let got = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("loopback probe timed out")
        .expect("reader");
    assert_eq!(got, sent);
    got as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// `dd if=/dev/zero of=<dir>/dd.bin bs=1M count=1024 conv=fdatasync`, MB/s.
fn dd_mb_s(dir: &Path) -> f64 {
    let file = dir.join("dd.bin");
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args([
            "bs=1M",
            &format!("count={}", PROBE_BYTES / MIB),
            "conv=fdatasync",
        ])
        .output()
        .expect("running dd");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dd failed: {text}");
    // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 2.345 s, 458 MB/s"
    let line = text
        .lines()
        .find(|l| l.contains(" copied, "))
        .expect("dd summary line");
    let bytes: f64 = line
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .expect("dd bytes");
    let secs: f64 = line
        .split(" copied, ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.replace(',', ".").parse().ok())
        .expect("dd seconds");
    bytes / secs / 1e6
}

fn sync_disks() {
    let _ = Command::new("sync").status();
}

// ---------------------------------------------------------------------------
// Reporting.

/// One server's figures for one row, a value per repetition.
#[derive(Default)]
struct Side {
    mb_s: Vec<f64>,
    req_s: Vec<f64>,
    /// Request latency quantiles, seconds (successful requests only).
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// Failed requests by status (or `timeout`, `io`...), over all repetitions.
    errors: BTreeMap<String, usize>,
    /// Kernel counters per request, one list per repetition (UPSLOT_LOADGEN_PERF).
    perf: Vec<Vec<f64>>,
}

impl Side {
    fn add(&mut self, case: Case, run: &Load) {
        let secs = run.wall.as_secs_f64();
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

    /// `0`, or `500 x3, timeout x1`.
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

    /// `MB/s | req/s | p50 / p99 ms` cells.
    fn cells(&self) -> String {
        format!(
            "{:.1} | {} | {} / {}",
            median(&self.mb_s),
            per_s(median(&self.req_s)),
            ms(median(&self.p50)),
            ms(median(&self.p99))
        )
    }
}

struct Row {
    case: Case,
    fsync: bool,
    op: &'static str,
    /// Indexed like `servers`: upslot, nginx.
    sides: [Side; 2],
}

impl Row {
    fn ratios(&self) -> Vec<f64> {
        self.sides[0]
            .mb_s
            .iter()
            .zip(&self.sides[1].mb_s)
            .map(|(u, n)| u / n)
            .collect()
    }

    /// The target ratio upslot/nginx for this row, if it has one.
    fn target(&self) -> Option<f64> {
        match (self.fsync, self.op) {
            (false, "PUT") => Some(1.5),
            (false, "GET") => Some(1.0),
            (true, "PUT") if self.case.size <= 64 * KIB => Some(1.0),
            _ => None,
        }
    }

    fn print(&self) {
        let ratios = self.ratios();
        let ratio = median(&ratios);
        let failed = self.sides.iter().any(|s| s.failed() > 0);
        let target = match self.target() {
            // Failed requests make the figures meaningless.
            Some(t) if failed => format!("{t:.1}x ERR"),
            Some(t) => format!("{t:.1}x {}", if ratio >= t { "pass" } else { "MISS" }),
            None => "-".into(),
        };
        let each = ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {ratio:.2}x | {each} | {target} | {}; {} |",
            show_size(self.case.size),
            on_off(self.fsync),
            self.op,
            self.case.n,
            self.case.conc,
            self.sides[0].cells(),
            self.sides[1].cells(),
            self.sides[0].show_errors(),
            self.sides[1].show_errors(),
        );
    }
}

/// Per request, each server's kernel counters (medians over the repetitions)
/// and upslot's over nginx's.
fn print_perf(rows: &[Row], labels: &[&str]) {
    println!();
    println!("Per request (perf stat on each server's processes; medians over the repetitions):");
    println!();
    let mut header = "| size | fsync | op | C |".to_owned();
    let mut rule = "|---:|:---:|:---:|---:|".to_owned();
    for label in labels {
        let _ = write!(header, " {label} upslot | nginx | ratio |");
        rule.push_str("---:|---:|---:|");
    }
    println!("{header}\n{rule}");
    for row in rows {
        let mut line = format!(
            "| {} | {} | {} | {} |",
            show_size(row.case.size),
            on_off(row.fsync),
            row.op,
            row.case.conc
        );
        for i in 0..labels.len() {
            let of = |side: &Side| median(&side.perf.iter().map(|p| p[i]).collect::<Vec<_>>());
            let (u, n) = (of(&row.sides[0]), of(&row.sides[1]));
            let _ = write!(line, " {u:.1} | {n:.1} | {:.2} |", u / n);
        }
        println!("{line}");
    }
}

const HEADER: &str = "| size | fsync | op | N | C | upslot MB/s | upslot req/s | upslot p50 / p99 ms \
                      | nginx MB/s | nginx req/s | nginx p50 / p99 ms | upslot/nginx | per rep | target \
                      | errors upslot; nginx |\n\
                      |---:|:---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|";

// ---------------------------------------------------------------------------
// The run.

/// Runs the matrix and prints the report; false if a request failed or a
/// sampled file differs.
async fn run(settings: Settings) -> bool {
    settings.perf.prepare();
    let scratch = tempfile::Builder::new()
        .prefix("upslot-loadgen-")
        .tempdir_in(&settings.parent)
        .unwrap_or_else(|e| panic!("scratch directory under {}: {e}", settings.parent.display()));
    let _ = Command::new("chmod")
        .arg("0711")
        .arg(scratch.path())
        .status();
    let nginx_version = Command::new(&settings.nginx)
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    println!(
        "upslot loadgen: upslot ({}) vs {nginx_version} (dav PUT, sendfile GET, worker_processes {}), \
         HTTP/1.1 keep-alive over 127.0.0.1; client, upslot and nginx share the CPUs.",
        settings.bin.display(),
        settings.nginx_workers,
    );
    println!();
    println!(
        "Machine: {}; scratch {} ({}); load average {}.",
        machine(),
        scratch.path().display(),
        filesystem_of(scratch.path()),
        load_average()
    );

    // The machine's limits, measured first.
    let mut loopback = Vec::new();
    for _ in 0..PROBE_REPS {
        loopback.push(loopback_mb_s().await);
    }
    let mut dd = Vec::new();
    if settings.fsync.contains(&true) {
        for _ in 0..PROBE_REPS {
            let dir = scratch.path().to_owned();
            // dd's fdatasync should not be writing back anyone else's pages.
            sync_disks();
            dd.push(
                tokio::task::spawn_blocking(move || dd_mb_s(&dir))
                    .await
                    .expect("dd"),
            );
        }
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let dd_line = if dd.is_empty() {
        "not measured (fsync off only)".to_owned()
    } else {
        format!("median {:.0} MB/s ({})", median(&dd), show(&dd))
    };
    println!();
    println!(
        "Loopback TCP, {} one stream: median {:.0} MB/s ({}). Disk, dd bs=1M count={} conv=fdatasync: {dd_line}.",
        show_size(PROBE_BYTES),
        median(&loopback),
        show(&loopback),
        PROBE_BYTES / MIB,
    );
    println!();
    println!("{HEADER}");

    let block = pattern_block();
    let mut rows: Vec<Row> = Vec::new();
    let mut rss: Vec<(u64, bool, u64)> = Vec::new();
    let mut first_errors: Vec<String> = Vec::new();
    let mut seed = 0u64;
    let started = Instant::now();
    for &fsync in &settings.fsync {
        for &case in &settings.matrix {
            let case_started = Instant::now();
            let Case { size, n, conc } = case;
            let dir = scratch.path().join(format!(
                "{}-{n}-{conc}-{}",
                show_size(size),
                if fsync { "fsync" } else { "nofsync" }
            ));
            let servers = [
                Server::upslot(&settings.bin, &dir.join("upslot"), fsync, conc).await,
                Server::nginx(&settings.nginx, &dir.join("nginx"), &settings.nginx_workers).await,
            ];
            let new_row = |op| Row {
                case,
                fsync,
                op,
                sides: [Side::default(), Side::default()],
            };
            let mut put = new_row("PUT");
            let mut get = new_row("GET");
            let mut all_targets: [Vec<Target>; 2] = [Vec::new(), Vec::new()];
            for rep in 0..settings.warmup + settings.reps {
                // Untimed first rounds take what a fresh directory costs once
                // (empty shard directories, inodes freed by the previous row).
                let timed = rep >= settings.warmup;
                // The server that goes first alternates between repetitions.
                let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
                let targets = [0, 1].map(|s| {
                    Arc::new(
                        (0..n)
                            .map(|i| {
                                seed += 1;
                                servers[s].target(&format!("lg/r{rep}/{i}.bin"), size, seed)
                            })
                            .collect::<Vec<_>>(),
                    )
                });
                for op in [Op::Put, Op::Get] {
                    for &s in &order {
                        if op == Op::Put {
                            // Neither server writes back the other's dirty pages.
                            sync_disks();
                        }
                        let name = servers[s].kind.name();
                        let pids = support::perf::with_children(servers[s].proc.pid());
                        let counting = timed
                            .then(|| {
                                support::perf::Counting::start(
                                    settings.perf,
                                    &pids,
                                    &format!(
                                        "{name}-{}-{}-{}-r{rep}",
                                        show_size(size),
                                        on_off(fsync),
                                        op.name()
                                    ),
                                    scratch.path().join("perf.csv"),
                                )
                            })
                            .flatten();
                        let seen =
                            load(name, servers[s].addr, op, &targets[s], size, conc, &block).await;
                        let counted = counting.map(support::perf::Counting::finish);
                        if let Some(e) = &seen.first_error {
                            eprintln!("loadgen: first failure of this batch: {e}");
                            first_errors.push(e.clone());
                        }
                        let row = if op == Op::Put { &mut put } else { &mut get };
                        if timed {
                            row.sides[s].add(case, &seen);
                            if let Some(totals) = counted.filter(|t| !t.is_empty()) {
                                row.sides[s]
                                    .perf
                                    .push(totals.iter().map(|t| t / n as f64).collect());
                            }
                        } else {
                            row.sides[s].count("warm-up ", &seen);
                        }
                    }
                }
                for s in 0..2 {
                    all_targets[s].extend(targets[s].iter().cloned());
                }
            }
            // Untimed: a sample of each server's files, byte for byte.
            for (s, server) in servers.iter().enumerate() {
                let files = &all_targets[s];
                let most = VERIFY_SAMPLE.min((VERIFY_BYTES / size).max(1) as usize);
                let step = files.len().div_ceil(most).max(1);
                let sample = Arc::new(files.iter().step_by(step).cloned().collect::<Vec<_>>());
                let name = server.kind.name();
                let seen = load(name, server.addr, Op::Verify, &sample, size, 1, &block).await;
                if let Some(e) = &seen.first_error {
                    eprintln!("loadgen: verification: {e}");
                    first_errors.push(e.clone());
                }
                get.sides[s].count("verify ", &seen);
            }
            let hwm = support::procfs::status_of(servers[0].proc.pid(), "VmHWM:").unwrap_or(0);
            rss.push((size, fsync, hwm));
            put.print();
            get.print();
            rows.push(put);
            rows.push(get);
            drop(servers);
            drop(all_targets);
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!(
                "loadgen: {} x{n} at {conc}, fsync {}: {:.1} s",
                show_size(size),
                on_off(fsync),
                case_started.elapsed().as_secs_f64()
            );
        }
    }

    println!();
    println!(
        "N files per repetition over C keep-alive connections; MB/s (10^6 bytes/s) and req/s over the \
         batch's wall time, p50/p99 over its successful requests. upslot, nginx: medians over {} \
         timed repetitions, after {} untimed warm-up; upslot/nginx: median of the per-repetition ratios (listed under \"per rep\"). \
         GETs follow the PUTs, so both servers serve them from the page cache. `sync` runs before \
         every PUT batch. Errors: failed requests by status over all repetitions (`verify`: a sample \
         of each server's files, up to {VERIFY_SAMPLE} and {}, read back byte for byte afterwards).",
        settings.reps,
        settings.warmup,
        show_size(VERIFY_BYTES)
    );
    println!();
    let lo = median(&loopback);
    for row in rows
        .iter()
        .filter(|r| r.op == "PUT" && r.case.size == GIB && r.case.conc == 1 && !r.fsync)
    {
        let mb_s = median(&row.sides[0].mb_s);
        let r = mb_s / lo;
        println!(
            "- single-stream 1GiB PUT (fsync off) / loopback TCP: {mb_s:.1} / {lo:.0} MB/s = {:.0}% (target 60%: {})",
            r * 100.0,
            if r >= 0.6 { "pass" } else { "MISS" }
        );
    }
    if !dd.is_empty() {
        let d = median(&dd);
        for row in rows
            .iter()
            .filter(|r| r.op == "PUT" && r.fsync && r.case.size >= 100 * MIB)
        {
            let mb_s = median(&row.sides[0].mb_s);
            let r = mb_s / d;
            println!(
                "- {} x{} at {} PUT (fsync on) / dd conv=fdatasync: {mb_s:.1} / {d:.0} MB/s = {:.0}% (target 90%: {})",
                show_size(row.case.size),
                row.case.n,
                row.case.conc,
                r * 100.0,
                if r >= 0.9 { "pass" } else { "MISS" }
            );
        }
    }
    let mut line = String::new();
    for (size, fsync, hwm) in &rss {
        let _ = write!(
            line,
            " {}/{}: {:.1}",
            show_size(*size),
            on_off(*fsync),
            *hwm as f64 / MIB as f64
        );
    }
    let peak = rss.iter().map(|r| r.2).max().unwrap_or(0);
    println!("- upslot peak RSS (VmHWM, MiB; one process per size/fsync):{line}");
    println!(
        "- upslot peak RSS over the matrix: {:.1} MiB (target <= 20 MiB: {}).",
        peak as f64 / MIB as f64,
        if peak <= 20 * MIB { "pass" } else { "MISS" },
    );
    println!(
        "- total {:.0} s; load average now {}.",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if !settings.perf.labels().is_empty() {
        print_perf(&rows, &settings.perf.labels());
    }
    drop(scratch);
    let failed: usize = rows.iter().flat_map(|r| &r.sides).map(Side::failed).sum();
    if failed > 0 {
        eprintln!("loadgen: {failed} request(s) failed; the first of each batch:");
        for e in &first_errors {
            eprintln!("  {e}");
        }
    }
    failed == 0
}
