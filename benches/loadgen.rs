//! Side-by-side load generator: upslot (as its own process) against nginx's dav
//! module, on the same machine in the same run, with the machine's own limits
//! (loopback TCP, the disk's sequential write + fdatasync) measured alongside.
//!
//! `cargo bench --bench loadgen` (as root if nginx must be installed or its
//! workers must drop privileges) does, for every fsync setting and size:
//! - starts `target/release/upslot serve -c <temp config>` (the binary Cargo
//!   builds for this bench) with a fresh data directory, and nginx with a temp
//!   prefix (`dav_methods PUT`, `create_full_put_path on`, `client_max_body_size
//!   0`, `client_body_temp_path` on the same filesystem, `sendfile on`), both on
//!   127.0.0.1 high ports;
//! - per repetition, PUTs the files (unique paths; v1-signed for upslot, plain
//!   for nginx) to each server in turn (the first server alternates between
//!   repetitions), then GETs them back checking status and length; small and
//!   medium files run as a batch of N requests over C keep-alive connections,
//!   large files one at a time on one connection (`sync` before each large PUT
//!   so neither server pays for the other's dirty pages);
//! - after the timed part, GETs a sample of the files again and checks every byte;
//! - reads upslot's peak RSS (VmHWM in /proc/<pid>/status) before stopping it.
//!
//! It prints one table: medians over the repetitions for each server and the
//! median of the pairwise (same repetition) ratios, against the targets of the
//! performance issue, then the 1 GiB single-stream PUT against loopback TCP, the
//! fsync PUTs against `dd conv=fdatasync`, and peak RSS per size.
//!
//! Environment:
//! - `UPSLOT_LOADGEN_DIR`: parent of the scratch directory (default `/var/tmp`;
//!   `/tmp` is slow on the CI VM). Everything under it is removed at the end.
//! - `UPSLOT_LOADGEN_SIZES`: comma-separated sizes (default `4KiB,1MiB,100MiB,1GiB`).
//! - `UPSLOT_LOADGEN_FSYNC`: fsync settings to run (default `off,on`).
//! - `UPSLOT_LOADGEN_REPS`: repetitions per row (default 3).
//! - `UPSLOT_LOADGEN_N`: requests per batch for 4 KiB-class files (default 2000;
//!   medium files get as many as fit in 256 MiB, at least 16).
//! - `UPSLOT_LOADGEN_C`: batch concurrency (default 16).
//! - `UPSLOT_LOADGEN_NGINX_WORKERS`: nginx `worker_processes` (default `auto`).
//! - `UPSLOT_LOADGEN_BIN`: another upslot binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::http::{CHUNK, Op, Target, connect, once, pattern_block};
use support::procfs::{filesystem_of, load_average};
use support::{
    GIB, KIB, MIB, env_or, env_positive, env_sizes, env_switches, median, on_off,
    show_size_tight as show_size,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use upslot::auth::Scheme;
use upslot::path::SlotPath;

const SECRET: &str = "upslot-loadgen-secret-0123456789";
const DEFAULT_SIZES: &str = "4KiB,1MiB,100MiB,1GiB";
/// Files up to this size run as batches at concurrency C.
const BATCH_MAX: u64 = 16 * MIB;
/// Medium files: as many per batch as fit in this many bytes.
const BATCH_BYTES: u64 = 256 * MIB;
/// Files checked byte for byte after the timed part, per server and size.
const VERIFY_SAMPLE: usize = 8;
/// The whole run gives up after this long.
const RUN_LIMIT: Duration = Duration::from_secs(60 * 60);
/// Loopback and dd: this many bytes, this many times.
const PROBE_BYTES: u64 = GIB;
const PROBE_REPS: usize = 3;

fn main() {
    let settings = Settings::from_env();
    let runtime = support::runtime();
    runtime.block_on(async {
        tokio::select! {
            () = run(settings) => {}
            r = tokio::time::timeout(RUN_LIMIT, tokio::signal::ctrl_c()) => {
                // Returning drops the run: its guards stop every process and
                // remove the scratch directory.
                eprintln!("loadgen: {}; stopping", if r.is_ok() { "interrupted" } else { "run time limit reached" });
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Settings.

struct Settings {
    parent: PathBuf,
    sizes: Vec<u64>,
    fsync: Vec<bool>,
    reps: usize,
    small_n: usize,
    concurrency: usize,
    nginx_workers: String,
    bin: PathBuf,
}

impl Settings {
    fn from_env() -> Settings {
        let sizes = env_sizes("UPSLOT_LOADGEN_SIZES", DEFAULT_SIZES);
        let fsync = env_switches("UPSLOT_LOADGEN_FSYNC", "off,on");
        assert!(!sizes.is_empty() && !fsync.is_empty(), "nothing to run");
        let num = env_positive;
        Settings {
            parent: PathBuf::from(env_or("UPSLOT_LOADGEN_DIR", "/var/tmp")),
            sizes,
            fsync,
            reps: num("UPSLOT_LOADGEN_REPS", 3),
            small_n: num("UPSLOT_LOADGEN_N", 2000),
            concurrency: num("UPSLOT_LOADGEN_C", 16),
            nginx_workers: env_or("UPSLOT_LOADGEN_NGINX_WORKERS", "auto"),
            bin: std::env::var_os("UPSLOT_LOADGEN_BIN").map_or_else(
                || PathBuf::from(env!("CARGO_BIN_EXE_upslot")),
                PathBuf::from,
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Processes.

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) when dropped,
/// also while unwinding from a panic.
struct Proc {
    name: &'static str,
    child: Child,
    stderr: PathBuf,
    stopped: bool,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log_dir: &Path) -> Proc {
        let out = std::fs::File::create(log_dir.join(format!("{name}.stdout"))).expect("log file");
        let stderr = log_dir.join(format!("{name}.stderr"));
        let err = std::fs::File::create(&stderr).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name,
            child,
            stderr,
            stopped: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            if !self.stopped {
                // It died on its own: say how, before its directory goes.
                let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
                let tail = err.lines().rev().take(20).collect::<Vec<_>>();
                eprintln!(
                    "loadgen: {} exited on its own ({status}); its stderr ends:",
                    self.name
                );
                for line in tail.iter().rev() {
                    eprintln!("  {line}");
                }
                self.stopped = true;
            }
            return;
        }
        self.stopped = true;
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("loadgen: {} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on now, below Linux's ephemeral range (32768 and up)
/// so that no client connection of this run can take it before the server binds.
fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize * 7) % 6000;
    for _ in 0..6000 {
        let port = (base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000 on 127.0.0.1");
}

async fn wait_listening(addr: SocketAddr, proc: &mut Proc, log_dir: &Path) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            let err = std::fs::read_to_string(log_dir.join(format!("{}.stderr", proc.name)))
                .unwrap_or_default();
            panic!("{} exited ({status}) before listening:\n{err}", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} is not listening on {addr} after 5 s", proc.name);
}

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
    async fn upslot(bin: &Path, dir: &Path, fsync: bool) -> Server {
        std::fs::create_dir_all(dir).expect("upslot directory");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let admin = free_port();
        let config = format!(
            "listen = \"{addr}\"\nbase_path = \"/upload/\"\ndata_dir = \"{}\"\nsecret = \"{SECRET}\"\n\
             schemes = [\"v1\"]\nmax_file_size = \"4 GiB\"\nmin_free_space = \"0\"\nfsync = {fsync}\n\
             [quota]\ntotal = \"0\"\nper_user = \"0\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            dir.join("data").display()
        );
        let path = dir.join("upslot.toml");
        std::fs::write(&path, config).expect("upslot config");
        let mut proc = Proc::spawn(
            "upslot",
            Command::new(bin).arg("serve").arg("-c").arg(&path),
            dir,
        );
        wait_listening(addr, &mut proc, dir).await;
        Server {
            kind: Kind::Upslot,
            addr,
            proc,
        }
    }

    async fn nginx(dir: &Path, workers: &str) -> Server {
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
            Command::new("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&path)
                .arg("-e")
                .arg(dir.join("logs/error.log")),
            dir,
        );
        wait_listening(addr, &mut proc, dir).await;
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
                }
            }
            Kind::Nginx => {
                let get = format!("/{}", SlotPath::encode(path));
                Target {
                    put: get.clone(),
                    get,
                    seed,
                }
            }
        }
    }
}

fn ensure_nginx() {
    if Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return;
    }
    eprintln!("loadgen: nginx missing; installing it with apt-get (needs root)");
    // Keep the package from starting its default site on port 80.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let made = !policy.exists() && std::fs::write(policy, "#!/bin/sh\nexit 101\n").is_ok();
    if made {
        let _ = Command::new("chmod").arg("0755").arg(policy).status();
    }
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "nginx"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let _ = std::fs::remove_file(policy);
    }
    assert!(ok, "could not install nginx");
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

struct Row {
    size: u64,
    fsync: bool,
    op: &'static str,
    conc: usize,
    n: usize,
    /// req/s for 4 KiB-class files, MB/s otherwise.
    req_s: bool,
    upslot: Vec<f64>,
    nginx: Vec<f64>,
}

impl Row {
    fn ratios(&self) -> Vec<f64> {
        self.upslot
            .iter()
            .zip(&self.nginx)
            .map(|(u, n)| u / n)
            .collect()
    }

    /// The target ratio upslot/nginx for this row, if it has one.
    fn target(&self) -> Option<f64> {
        match (self.fsync, self.op) {
            (false, "PUT") => Some(1.5),
            (false, "GET") => Some(1.0),
            (true, "PUT") if self.size <= 64 * KIB => Some(1.0),
            _ => None,
        }
    }

    fn print(&self) {
        let ratios = self.ratios();
        let ratio = median(&ratios);
        let (target, verdict) = match self.target() {
            Some(t) => (format!("{t:.1}x"), if ratio >= t { "pass" } else { "MISS" }),
            None => ("-".into(), "info"),
        };
        let fmt = |v: f64| {
            if self.req_s {
                format!("{v:.0} req/s")
            } else {
                format!("{v:.1} MB/s")
            }
        };
        let each = ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:>7} {:>5} {:>4} {:>4} {:>5} {:>14} {:>14} {:>6.2}x {:>7} {:>5}   {each}",
            show_size(self.size),
            on_off(self.fsync),
            self.op,
            self.conc,
            self.n,
            fmt(median(&self.upslot)),
            fmt(median(&self.nginx)),
            ratio,
            target,
            verdict,
        );
    }
}

const HEADER: &str = "   size fsync   op conc     N         upslot          nginx   ratio  target  p/m    ratio per rep";

// ---------------------------------------------------------------------------
// The run.

async fn run(settings: Settings) {
    ensure_nginx();
    let scratch = tempfile::Builder::new()
        .prefix("upslot-loadgen-")
        .tempdir_in(&settings.parent)
        .unwrap_or_else(|e| panic!("scratch directory under {}: {e}", settings.parent.display()));
    let _ = Command::new("chmod")
        .arg("0711")
        .arg(scratch.path())
        .status();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let nginx_version = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    println!(
        "upslot loadgen: upslot ({}) vs {nginx_version} (dav PUT, sendfile GET), HTTP/1.1 keep-alive over 127.0.0.1",
        settings.bin.display()
    );
    println!(
        "{cpus} CPU(s) shared by client, upslot and nginx (worker_processes {}); scratch {} ({}); load average {}",
        settings.nginx_workers,
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
    println!(
        "loopback TCP, 1 GiB one stream: median {:.0} MB/s ({}); dd bs=1M count=1024 conv=fdatasync: median {:.0} MB/s ({})",
        median(&loopback),
        show(&loopback),
        median(&dd),
        show(&dd)
    );
    println!();
    println!("{HEADER}");

    let block = pattern_block();
    let mut rows: Vec<Row> = Vec::new();
    let mut rss: Vec<(u64, bool, u64)> = Vec::new();
    let mut seed = 0u64;
    let started = Instant::now();
    for &fsync in &settings.fsync {
        for &size in &settings.sizes {
            let case = scratch.path().join(format!(
                "{}-{}",
                show_size(size),
                if fsync { "fsync" } else { "nofsync" }
            ));
            let servers = [
                Server::upslot(&settings.bin, &case.join("upslot"), fsync).await,
                Server::nginx(&case.join("nginx"), &settings.nginx_workers).await,
            ];
            let large = size > BATCH_MAX;
            let (n, conc) = if large {
                (1, 1)
            } else if size <= 64 * KIB {
                (settings.small_n, settings.concurrency)
            } else {
                (
                    ((BATCH_BYTES / size) as usize).clamp(16, settings.small_n),
                    settings.concurrency,
                )
            };
            let new_row = |op| Row {
                size,
                fsync,
                op,
                conc,
                n,
                req_s: size <= 64 * KIB,
                upslot: Vec::new(),
                nginx: Vec::new(),
            };
            let mut put = new_row("PUT");
            let mut get = new_row("GET");
            let mut all_targets: [Vec<Arc<Vec<Target>>>; 2] = [Vec::new(), Vec::new()];
            for rep in 0..settings.reps {
                // The server that goes first alternates between repetitions.
                let order: [usize; 2] = if rep % 2 == 0 { [0, 1] } else { [1, 0] };
                let mut reps_targets: [Option<Arc<Vec<Target>>>; 2] = [None, None];
                for &s in &order {
                    let targets = Arc::new(
                        (0..n)
                            .map(|i| {
                                seed += 1;
                                servers[s].target(&format!("lg/r{rep}/{i}.bin"), size, seed)
                            })
                            .collect::<Vec<_>>(),
                    );
                    reps_targets[s] = Some(targets);
                }
                for op in [Op::Put, Op::Get] {
                    for &s in &order {
                        let targets = reps_targets[s].as_ref().expect("targets");
                        if large && op == Op::Put {
                            sync_disks();
                        }
                        let (wall, _) = support::http::batch(
                            servers[s].kind.name(),
                            servers[s].addr,
                            op,
                            targets,
                            size,
                            conc,
                            &block,
                        )
                        .await;
                        let rate = if size <= 64 * KIB {
                            n as f64 / wall.as_secs_f64()
                        } else {
                            (n as u64 * size) as f64 / wall.as_secs_f64() / 1e6
                        };
                        let row = if op == Op::Put { &mut put } else { &mut get };
                        match servers[s].kind {
                            Kind::Upslot => row.upslot.push(rate),
                            Kind::Nginx => row.nginx.push(rate),
                        }
                    }
                }
                for s in 0..2 {
                    all_targets[s].push(reps_targets[s].take().expect("targets"));
                }
            }
            // Untimed: a sample of each server's files, byte for byte.
            for (s, server) in servers.iter().enumerate() {
                let files = all_targets[s]
                    .iter()
                    .flat_map(|t| t.iter())
                    .collect::<Vec<_>>();
                let step = files.len().div_ceil(VERIFY_SAMPLE).max(1);
                let mut sender = connect(server.addr).await;
                for target in files.iter().step_by(step) {
                    once(
                        &mut sender,
                        server.kind.name(),
                        server.addr,
                        Op::Verify,
                        target,
                        size,
                        &block,
                    )
                    .await;
                }
            }
            let hwm = support::procfs::status_of(servers[0].proc.pid(), "VmHWM:").unwrap_or(0);
            rss.push((size, fsync, hwm));
            put.print();
            get.print();
            rows.push(put);
            rows.push(get);
            drop(servers);
            drop(all_targets);
            let _ = std::fs::remove_dir_all(&case);
        }
    }

    println!();
    println!(
        "N = requests per batch at concurrency conc (batch rate over its wall time); conc 1, N 1 = one \
         transfer at a time. upslot/nginx: medians over {} repetitions; ratio: median of the per-repetition \
         upslot/nginx ratios. MB/s = 10^6 bytes/s. GETs follow the PUTs, so both are served from the page cache.",
        settings.reps
    );
    let lo = median(&loopback);
    for row in rows
        .iter()
        .filter(|r| r.op == "PUT" && r.size == GIB && !r.fsync)
    {
        let r = median(&row.upslot) / lo;
        println!(
            "single-stream 1GiB PUT (fsync off) / loopback TCP: {:.1} / {lo:.0} MB/s = {:.0}%  (target 60%: {})",
            median(&row.upslot),
            r * 100.0,
            if r >= 0.6 { "pass" } else { "MISS" }
        );
    }
    let d = median(&dd);
    for row in rows
        .iter()
        .filter(|r| r.op == "PUT" && r.fsync && r.size >= 100 * MIB)
    {
        let r = median(&row.upslot) / d;
        println!(
            "{} PUT (fsync on) / dd conv=fdatasync: {:.1} / {d:.0} MB/s = {:.0}%  (target 90%: {})",
            show_size(row.size),
            median(&row.upslot),
            r * 100.0,
            if r >= 0.9 { "pass" } else { "MISS" }
        );
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
    println!("upslot peak RSS (VmHWM, MiB; one process per size/fsync):{line}");
    println!(
        "upslot peak RSS over the matrix: {:.1} MiB (target <= 20 MiB: {}). Total {:.0} s; load average now {}.",
        peak as f64 / MIB as f64,
        if peak <= 20 * MIB { "pass" } else { "MISS" },
        started.elapsed().as_secs_f64(),
        load_average()
    );
    drop(scratch);
}
