//! Several instances as one service: three real `upslot serve` processes on
//! one Garage cluster (S3, replication 3, every instance through node 0) and
//! one PostgreSQL index, behind nginx round robin, started by the scripts in
//! deploy/cluster/. Whichever instance a request reaches, the answer is the
//! same: any instance serves every complete file and none a partial, deleted
//! or expired one; one upload per path wins across instances; quotas hold
//! across instances; `upslot files` acts on the whole cluster; a killed
//! instance's upload can be retried elsewhere; a Garage node down changes
//! nothing for clients; the index down gives 503 with `Retry-After`, and the
//! service comes back by itself.
//!
//! One cluster serves the cases of the first test in turn, each under its own
//! path prefix; expiry needs a short retention and gets a cluster of its own.
//! Each case prints its figures on one line (`cargo test -- --nocapture`).
//! Without Garage the tests are skipped (and fail under `CI`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod common;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use support::{Raw, body, put_head, sha256_hex};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use upslot::auth::{JwtSlot, Scheme, sign_jwt, sign_query};
use upslot::path::SlotPath;

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
/// Every instance's HMAC secret, given in `UPSLOT_SECRET`.
const SECRET: &str = "cluster-test-secret-3e9d71";
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The longest an instance may take to listen, and then to be ready.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The longest a request may take to be refused while the index is down.
const UNAVAILABLE_LIMIT: Duration = Duration::from_secs(15);
/// The longest a retry of a killed instance's upload may wait for its claim
/// to go stale (30 s after the last heartbeat, renewed every 5 s).
const TAKEOVER_LIMIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const ROMEO: &str = "romeo@montague.example";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/cluster")
        .join(name)
}

/// The request target of the file at `path` (decoded, below `/upload/`).
fn get_target(path: &str) -> String {
    format!("/upload/{}", SlotPath::encode(path))
}

/// The v1-signed PUT target for `size` bytes at `path`.
fn put_target(path: &str, size: usize) -> String {
    let query = sign_query(Scheme::V1, SECRET.as_bytes(), path, size as u64, None).unwrap();
    format!("{}?{query}", get_target(path))
}

/// The ETag every instance gives a file: the start of its SHA-256.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", &sha256_hex(body)[..32])
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> common::Response {
    common::request(addr, Method::GET, &get_target(path), headers, Vec::new()).await
}

async fn head(addr: SocketAddr, path: &str) -> common::Response {
    common::request(addr, Method::HEAD, &get_target(path), &[], Vec::new()).await
}

/// A PUT of `body` to `path` in one go; returns the answer.
async fn put(addr: SocketAddr, path: &str, body: &[u8]) -> common::Response {
    let target = put_target(path, body.len());
    common::request(addr, Method::PUT, &target, &[], body.to_vec()).await
}

/// A PUT with `Expect: 100-continue`: the body goes only once the instance
/// has claimed the path. Returns the final status.
async fn put_expect(addr: SocketAddr, path: &str, body: &[u8]) -> u16 {
    let mut raw = Raw::connect(addr).await;
    let head = put_head(
        &put_target(path, body.len()),
        body.len() as u64,
        &["Expect: 100-continue"],
    );
    assert!(raw.send(&head).await, "PUT {path}: the head is sent");
    let first = raw.read_response().await.expect("an answer to the head");
    if first.status != 100 {
        return first.status;
    }
    assert!(raw.send(body).await, "PUT {path}: the body is sent");
    raw.read_response()
        .await
        .expect("an answer to the body")
        .status
}

/// Statuses and how often each came.
fn tally(statuses: &[u16]) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for s in statuses {
        *out.entry(*s).or_insert(0) += 1;
    }
    out
}

/// A figure from an instance's `/metrics`.
async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let r = common::request(admin, Method::GET, "/metrics", &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = r.text();
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"));
    value.trim().parse::<f64>().unwrap() as u64
}

/// Asserts that every instance (and nginx, when given) serves `body` at
/// `path` whole, by HEAD and by range, with one ETag. Returns the requests made.
async fn check_served(addrs: &[SocketAddr], path: &str, body: &[u8]) -> usize {
    let etag = etag_of(body);
    let size = body.len().to_string();
    for &addr in addrs {
        let r = get(addr, path, &[]).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "GET {path} via {addr}: {}",
            r.text()
        );
        assert!(r.body == body, "GET {path} via {addr}: the body differs");
        assert_eq!(
            r.header("etag"),
            Some(etag.as_str()),
            "GET {path} via {addr}"
        );

        let r = head(addr, path).await;
        assert_eq!(r.status, StatusCode::OK, "HEAD {path} via {addr}");
        assert_eq!(r.header("content-length"), Some(size.as_str()));
        assert_eq!(
            r.header("etag"),
            Some(etag.as_str()),
            "HEAD {path} via {addr}"
        );

        let r = get(addr, path, &[("range", "bytes=10-99")]).await;
        assert_eq!(
            r.status,
            StatusCode::PARTIAL_CONTENT,
            "range {path} via {addr}"
        );
        assert_eq!(&r.body[..], &body[10..100], "range {path} via {addr}");
        let range = format!("bytes 10-99/{size}");
        assert_eq!(r.header("content-range"), Some(range.as_str()));
        assert_eq!(
            r.header("etag"),
            Some(etag.as_str()),
            "range {path} via {addr}"
        );
    }
    addrs.len() * 3
}

/// Asserts that no instance serves anything at `path`: GET and HEAD are 404.
async fn check_absent(addrs: &[SocketAddr], path: &str) {
    for &addr in addrs {
        let r = get(addr, path, &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "GET {path} via {addr}");
        let r = head(addr, path).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "HEAD {path} via {addr}");
    }
}

// ---------------------------------------------------------------------------
// The processes.

/// One `upslot serve` and its directory: config, data_dir, logs.
struct Instance {
    name: &'static str,
    dir: PathBuf,
    config: PathBuf,
    /// The configuration but `listen` and `[admin]`.
    rest: String,
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    starts: usize,
}

impl Instance {
    /// Writes the configuration (ports chosen by the kernel) and starts the
    /// process; [`listening`](Self::listening) waits for it.
    fn spawn(name: &'static str, dir: PathBuf, rest: String) -> Instance {
        std::fs::create_dir_all(&dir).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut node = Instance {
            name,
            config: dir.join("upslot.toml"),
            dir,
            rest,
            child: None,
            addr: any,
            admin: any,
            starts: 0,
        };
        node.write_config();
        node.spawn_child();
        node
    }

    fn write_config(&self) {
        let text = format!(
            "listen = \"{}\"\n{}[admin]\nlisten = \"{}\"\n",
            self.addr, self.rest, self.admin
        );
        std::fs::write(&self.config, text).unwrap();
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("upslot-{}.log", self.starts))
    }

    fn spawn_child(&mut self) {
        self.starts += 1;
        let stdout = self.dir.join(format!("stdout-{}.log", self.starts));
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .env("UPSLOT_SECRET", SECRET)
            .env_remove("UPSLOT_LOG")
            .env_remove("UPSLOT_INDEX_URL")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(stdout).unwrap())
            .stderr(std::fs::File::create(self.log()).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the process has logged its listeners (it has opened the
    /// store and the index by then) and pins their ports in its
    /// configuration, so that a restart comes back on the same ones.
    async fn listening(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let text = std::fs::read_to_string(self.log()).unwrap_or_default();
            let found = text.lines().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                if line["message"] != "listening" {
                    return None;
                }
                let listen: SocketAddr = line["listen"].as_str()?.parse().ok()?;
                let admin: SocketAddr = line["admin"].as_str()?.parse().ok()?;
                Some((listen, admin))
            });
            if let Some((addr, admin)) = found {
                if self.starts > 1 {
                    assert_eq!((addr, admin), (self.addr, self.admin), "{}", self.name);
                }
                self.addr = addr;
                self.admin = admin;
                self.write_config();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited at start ({status}): {text}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening after {START_LIMIT:?}: {text}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `/readyz` says 200.
    async fn ready(&self) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let r = common::request(self.admin, Method::GET, "/readyz", &[], Vec::new()).await;
            if r.status == StatusCode::OK {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {START_LIMIT:?}: {}\n{}",
                self.name,
                r.text(),
                self.log_tail()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn readyz(&self) -> common::Response {
        common::request(self.admin, Method::GET, "/readyz", &[], Vec::new()).await
    }

    /// SIGKILL, and the proof that it, not something else, ended the process.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{}: {status}", self.name);
    }

    /// Starts again on the same configuration and waits until it is ready.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.name);
        self.spawn_child();
        self.listening().await;
        self.ready().await;
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `upslot files -c <this instance's config> ARGS`; its standard output.
    async fn files(&self, args: &[&str]) -> String {
        let run = tokio::process::Command::new(BIN)
            .arg("files")
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env("UPSLOT_SECRET", SECRET)
            .env_remove("UPSLOT_LOG")
            .env_remove("UPSLOT_INDEX_URL")
            .stdin(Stdio::null())
            .output();
        let out = timeout(Duration::from_secs(30), run)
            .await
            .expect("upslot files ends within 30 s")
            .unwrap();
        assert!(
            out.status.success(),
            "upslot files {args:?} with {}'s config: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `files list --json`: every stored file's path and size.
    async fn listed(&self) -> BTreeMap<String, u64> {
        let text = self.files(&["list", "--json"]).await;
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list.as_array()
            .expect("a JSON array")
            .iter()
            .map(|f| {
                let path = f["path"].as_str().unwrap().to_owned();
                (path, f["size"].as_u64().unwrap())
            })
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nginx round robin over the instances, in a directory of its own.
struct Nginx {
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Nginx {
    fn start(upstreams: &[SocketAddr]) -> Nginx {
        // Under /tmp: nginx's workers run as nobody and must reach the directory.
        let dir = tempfile::Builder::new()
            .prefix("upslot-nginx-")
            .tempdir()
            .unwrap();
        let out = Command::new("bash")
            .arg(script("nginx.sh"))
            .arg("start")
            .arg(dir.path())
            .args(upstreams.iter().map(SocketAddr::to_string))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = common::env_file(&dir.path().join("nginx.env"));
        let addr = env["NGINX_URL"]
            .strip_prefix("http://")
            .expect("NGINX_URL is http://HOST:PORT")
            .parse()
            .unwrap();
        Nginx { dir, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("nginx.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

struct Settings {
    retention: &'static str,
    reap_interval: &'static str,
    quota_total: &'static str,
}

/// Three instances A, B, C on one Garage cluster and one PostgreSQL, and
/// nginx if asked for. Fields drop in order: the instances first.
struct Cluster {
    nodes: Vec<Instance>,
    nginx: Option<Nginx>,
    garage: backends::Garage,
    pg: backends::Postgres,
    _dir: tempfile::TempDir,
}

/// An instance's configuration but `listen` and `[admin]`: the same for
/// all but `data_dir`; storage through Garage's node 0.
fn rest_config(
    garage: &backends::Garage,
    pg: &backends::Postgres,
    home: &Path,
    s: &Settings,
) -> String {
    let env = &garage.env;
    format!(
        "data_dir = {data:?}\n\
         min_free_space = \"0\"\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         retention = {retention:?}\n\
         reap_interval = {reap:?}\n\
         [quota]\n\
         total = {quota:?}\n\
         [log]\n\
         format = \"json\"\n\
         [storage]\n\
         backend = \"s3\"\n\
         endpoint = {endpoint:?}\n\
         region = {region:?}\n\
         bucket = {bucket:?}\n\
         prefix = \"cluster/\"\n\
         access_key_id = {key:?}\n\
         secret_access_key = {secret:?}\n\
         path_style = true\n\
         [index]\n\
         backend = \"postgres\"\n\
         url = {url:?}\n",
        data = home.join("data"),
        retention = s.retention,
        reap = s.reap_interval,
        quota = s.quota_total,
        endpoint = garage.endpoints()[0],
        region = env["S3_REGION"],
        bucket = env["S3_BUCKET"],
        key = env["AWS_ACCESS_KEY_ID"],
        secret = env["AWS_SECRET_ACCESS_KEY"],
        url = pg.url,
    )
}

/// Held while a cluster's Garage and PostgreSQL start.
static STARTING: Mutex<()> = Mutex::new(());

/// Garage, started once more if the first start fails (its nodes are then
/// stopped, and why is printed above): that is the scripts' or the
/// machine's trouble, not upslot's.
fn start_garage() -> backends::Garage {
    match std::panic::catch_unwind(backends::Garage::start) {
        Ok(garage) => garage,
        Err(_) => {
            eprintln!("Garage did not start (see above): trying once more");
            backends::Garage::start()
        }
    }
}

impl Cluster {
    async fn start(settings: &Settings, with_nginx: bool) -> Cluster {
        let started = Instant::now();
        let (garage, pg) = {
            // One cluster starts at a time: each script picks free ports and
            // binds them a moment later, and two starting at once could pick
            // the same.
            let _starting = STARTING.lock().unwrap_or_else(PoisonError::into_inner);
            std::thread::scope(|s| {
                let garage = s.spawn(start_garage);
                let pg = backends::Postgres::start();
                (garage.join().expect("Garage starts"), pg)
            })
        };
        let backends_up = started.elapsed().as_secs_f64();
        let dir = common::tempdir();
        let mut nodes: Vec<Instance> = ["A", "B", "C"]
            .into_iter()
            .map(|name| {
                let home = dir.path().join(name);
                let rest = rest_config(&garage, &pg, &home, settings);
                Instance::spawn(name, home, rest)
            })
            .collect();
        for node in &mut nodes {
            node.listening().await;
        }
        for node in &nodes {
            node.ready().await;
        }
        let nginx =
            with_nginx.then(|| Nginx::start(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>()));
        eprintln!(
            "cluster up in {:.1} s (Garage and PostgreSQL {backends_up:.1} s): A {}, B {}, C {}{}",
            started.elapsed().as_secs_f64(),
            nodes[0].addr,
            nodes[1].addr,
            nodes[2].addr,
            nginx
                .as_ref()
                .map(|n| format!(", nginx {}", n.addr))
                .unwrap_or_default()
        );
        Cluster {
            nodes,
            nginx,
            garage,
            pg,
            _dir: dir,
        }
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    fn nginx(&self) -> SocketAddr {
        self.nginx.as_ref().expect("started with nginx").addr
    }
}

// ---------------------------------------------------------------------------
// The cases on one cluster.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_behave_as_one_service() {
    if !backends::garage_available() {
        return;
    }
    let started = Instant::now();
    let settings = Settings {
        retention: "1h",
        reap_interval: "10s",
        quota_total: "64 MiB",
    };
    let mut cluster = Cluster::start(&settings, true).await;
    let kept = any_instance_serves_what_another_accepted(&cluster).await;
    one_upload_per_path_wins_across_instances(&cluster).await;
    let over_quota = the_quota_holds_across_instances(&cluster).await;
    the_files_command_acts_on_the_whole_cluster(&cluster, &over_quota).await;
    a_killed_instances_uploads_can_be_retried_elsewhere(&mut cluster).await;
    one_garage_node_down_changes_nothing_for_clients(&cluster, &kept).await;
    the_index_down_answers_503_and_service_resumes(&cluster, &kept).await;
    eprintln!(
        "three instances as one service: all cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Case 1: uploads through A (and one through nginx) are served by every
/// instance, by GET, HEAD and range, with one ETag. Returns the files, which
/// later cases read again.
async fn any_instance_serves_what_another_accepted(c: &Cluster) -> Vec<(String, Vec<u8>)> {
    let t = Instant::now();
    let a = c.nodes[0].addr;
    let files = vec![
        ("serve/small.bin".to_owned(), body(KIB, 1)),
        ("serve/streamed.bin".to_owned(), body(5 * MIB, 2)),
        ("serve/via-nginx.bin".to_owned(), body(300 * KIB, 3)),
    ];
    for (i, (path, body)) in files.iter().enumerate() {
        let to = if i == 2 { c.nginx() } else { a };
        let r = put(to, path, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "PUT {path}: {}", r.text());
    }
    let uploading = t.elapsed().as_secs_f64();
    let mut requests = 0;
    // The instances directly, and nginx three times: round robin reaches each.
    let mut addrs = c.addrs();
    addrs.extend([c.nginx(); 3]);
    for (path, body) in &files {
        requests += check_served(&addrs, path, body).await;
    }
    eprintln!(
        "case 1, any instance serves what another accepted: 1 KiB and 5 MiB via A, 300 KiB \
         via nginx, uploaded in {uploading:.1} s; {requests} GET/HEAD/range requests on A, B, C \
         and nginx all 200/206 with the body and one ETag per file; {:.1} s",
        t.elapsed().as_secs_f64()
    );
    files
}

/// Case 2: nine PUTs of one path at once, three on each instance: one 201,
/// eight 409, and the stored body is the winner's.
async fn one_upload_per_path_wins_across_instances(c: &Cluster) {
    const RACERS: usize = 9;
    let t = Instant::now();
    let path = "race/one-path.bin";
    let addrs = c.addrs();
    let bodies: Vec<Vec<u8>> = (0..RACERS).map(|i| body(512 * KIB, 20 + i as u8)).collect();
    let tasks: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (addr, b) = (addrs[i % 3], b.clone());
            tokio::spawn(async move { put(addr, path, &b).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let counts = tally(&statuses);
    assert_eq!(
        counts,
        BTreeMap::from([(201, 1), (409, RACERS - 1)]),
        "statuses by racer: {statuses:?}"
    );
    let winner = statuses.iter().position(|&s| s == 201).unwrap();
    check_served(&addrs, path, &bodies[winner]).await;
    eprintln!(
        "case 2, one upload per path across instances: {RACERS} concurrent PUTs of 512 KiB \
         (3 per instance): {} x 201 (racer {winner}, via {}), {} x 409; every instance \
         serves the winner's body; {:.1} s",
        counts[&201],
        c.nodes[winner % 3].name,
        counts[&409],
        t.elapsed().as_secs_f64()
    );
}

/// Case 3: twelve 8 MiB uploads at once, four per instance, against a 64 MiB
/// quota: the 201s fill what was left and no more, the others get 507.
/// Returns the paths stored.
async fn the_quota_holds_across_instances(c: &Cluster) -> Vec<String> {
    const UPLOADS: usize = 12;
    const SIZE: usize = 8 * MIB;
    const QUOTA: u64 = 64 * MIB as u64;
    let t = Instant::now();
    let addrs = c.addrs();
    let before = metric(c.nodes[0].admin, "upslot_stored_bytes").await;
    let room = (QUOTA - before) / SIZE as u64;
    let shared = bytes::Bytes::from(body(SIZE, 30));
    let tasks: Vec<_> = (0..UPLOADS)
        .map(|i| {
            let (addr, b) = (addrs[i % 3], shared.clone());
            tokio::spawn(async move {
                let path = format!("quota/{i:02}.bin");
                let status = put(addr, &path, &b).await.status.as_u16();
                (path, status)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let statuses: Vec<u16> = outcomes.iter().map(|(_, s)| *s).collect();
    let counts = tally(&statuses);
    let created: Vec<String> = outcomes
        .iter()
        .filter(|(_, s)| *s == 201)
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 507),
        "only 201 and 507: {statuses:?}"
    );
    assert_eq!(
        created.len() as u64,
        room,
        "{before} bytes stored before: room for {room} more ({statuses:?})"
    );
    let stored = before + (created.len() * SIZE) as u64;
    assert!(stored <= QUOTA);
    for node in &c.nodes {
        let bytes = metric(node.admin, "upslot_stored_bytes").await;
        assert_eq!(bytes, stored, "upslot_stored_bytes of {}", node.name);
    }
    let listed = c.nodes[1].listed().await;
    let listed_bytes: u64 = listed.values().sum();
    assert_eq!(listed_bytes, stored, "files list --json: {listed:?}");
    for (path, status) in &outcomes {
        if *status == 201 {
            assert_eq!(listed.get(path), Some(&(SIZE as u64)), "{path} listed");
        } else {
            assert!(!listed.contains_key(path), "{path} refused but listed");
            check_absent(&addrs, path).await;
        }
    }
    eprintln!(
        "case 3, the quota across instances: {UPLOADS} concurrent 8 MiB PUTs (4 per instance), \
         {before} bytes stored before, quota 64 MiB: {} x 201, {} x 507; stored {stored} bytes \
         (metrics of A, B, C and files list agree, <= {QUOTA}); {:.1} s",
        counts.get(&201).unwrap_or(&0),
        counts.get(&507).unwrap_or(&0),
        t.elapsed().as_secs_f64()
    );
    created
}

/// Case 4: `upslot files` with any instance's configuration sees the whole
/// cluster; after `files delete` returns, no instance serves the files.
async fn the_files_command_acts_on_the_whole_cluster(c: &Cluster, paths: &[String]) {
    let t = Instant::now();
    let addrs = c.addrs();
    // A file with an uploader, through B: Prosody's JWT with `sub`.
    let jwt_body = body(3 * KIB, 40);
    let jwt_path = "cli-slot/photo.jpg";
    let now = unix_now();
    let claims = JwtSlot {
        slot: "cli-slot".into(),
        filesize: jwt_body.len() as u64,
        exp: now + 300,
        iat: Some(now),
        filename: Some("photo.jpg".into()),
        filetype: Some("image/jpeg".into()),
        sub: Some(ROMEO.into()),
        expires: None,
    };
    let auth = format!("Bearer {}", sign_jwt(SECRET.as_bytes(), &claims).unwrap());
    let r = common::request(
        addrs[1],
        Method::PUT,
        &get_target(jwt_path),
        &[("authorization", &auth)],
        jwt_body.clone(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "JWT PUT via B: {}", r.text());

    // Every instance's configuration lists the same files.
    let lists = [
        c.nodes[0].listed().await,
        c.nodes[1].listed().await,
        c.nodes[2].listed().await,
    ];
    assert_eq!(lists[0], lists[1], "A's and B's lists");
    assert_eq!(lists[0], lists[2], "A's and C's lists");
    assert!(lists[0].contains_key(jwt_path));
    for path in paths {
        assert!(lists[0].contains_key(path), "{path} listed");
    }
    let listed = lists[0].len();

    // Show and export, through C and A, of what B took.
    let shown: serde_json::Value =
        serde_json::from_str(&c.nodes[2].files(&["show", jwt_path]).await).unwrap();
    assert_eq!(shown["path"], jwt_path);
    assert_eq!(shown["size"], jwt_body.len() as u64);
    assert_eq!(shown["uploader"], ROMEO);
    assert_eq!(shown["sha256"], sha256_hex(&jwt_body));
    let export: serde_json::Value =
        serde_json::from_str(&c.nodes[0].files(&["export", "--user", ROMEO]).await).unwrap();
    let exported: Vec<&str> = export["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(exported, [jwt_path]);

    // Deletion through B's configuration (the quota files, stored via all
    // three) and A's (the JWT file, by its request path): gone everywhere.
    let mut args = vec!["delete"];
    args.extend(paths.iter().map(String::as_str));
    let out = c.nodes[1].files(&args).await;
    assert!(
        out.contains(&format!("deleted {} file(s)", paths.len())),
        "{out}"
    );
    let request_path = get_target(jwt_path);
    let out = c.nodes[0].files(&["delete", &request_path]).await;
    assert!(out.contains("deleted 1 file(s)"), "{out}");
    let deleted_in = t.elapsed().as_secs_f64();
    for path in paths.iter().map(String::as_str).chain([jwt_path]) {
        check_absent(&addrs, path).await;
        check_absent(&[c.nginx()], path).await;
    }
    let after = [
        c.nodes[0].listed().await,
        c.nodes[1].listed().await,
        c.nodes[2].listed().await,
    ];
    assert_eq!(after[0], after[1]);
    assert_eq!(after[0], after[2]);
    assert_eq!(after[0].len(), listed - paths.len() - 1);
    let bytes: u64 = after[0].values().sum();
    for node in &c.nodes {
        assert_eq!(metric(node.admin, "upslot_stored_bytes").await, bytes);
    }
    eprintln!(
        "case 4, files command on the whole cluster: list --json identical from A's, B's and \
         C's configs ({listed} files); show via C and export via A of a JWT upload via B; \
         delete of {} files via B's config and 1 via A's, then GET/HEAD 404 on A, B, C and \
         nginx; lists agree again ({} files, {bytes} bytes); {:.1} s (deletions done at \
         {deleted_in:.1} s)",
        paths.len(),
        after[0].len(),
        t.elapsed().as_secs_f64()
    );
}

/// Case 6: A is SIGKILLed while four uploads to it are half sent. B and C
/// never serve a partial body; the same slots, retried through B, are taken
/// once A's claims are stale; C, and A restarted, serve the full bodies.
async fn a_killed_instances_uploads_can_be_retried_elsewhere(c: &mut Cluster) {
    const UPLOADS: usize = 4;
    const SIZE: usize = 2 * MIB;
    const PIECE: usize = 64 * KIB;
    let t = Instant::now();
    let (a, b, cc) = (c.nodes[0].addr, c.nodes[1].addr, c.nodes[2].addr);
    let uploads: Vec<(String, Vec<u8>)> = (0..UPLOADS)
        .map(|i| (format!("kill/{i}.bin"), body(SIZE, 50 + i as u8)))
        .collect();
    let (half_tx, mut half_rx) = mpsc::unbounded_channel();
    let (killed_tx, killed_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (path, body) in uploads.clone() {
        let (half_tx, mut killed_rx) = (half_tx.clone(), killed_rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut raw = Raw::connect(a).await;
            assert!(
                raw.send(&put_head(&put_target(&path, SIZE), SIZE as u64, &[]))
                    .await
            );
            let mut sent = 0;
            for piece in body.chunks(PIECE) {
                if sent == SIZE / 2 {
                    // Half the body is in: the test kills A now.
                    half_tx.send(()).unwrap();
                    killed_rx.wait_for(|k| *k).await.unwrap();
                }
                if !raw.send(piece).await {
                    break;
                }
                sent += piece.len();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            raw.read_response().await.map(|r| r.status)
        }));
    }
    drop(half_tx);
    for _ in 0..UPLOADS {
        timeout(Duration::from_secs(30), half_rx.recv())
            .await
            .expect("every upload sends half its body")
            .expect("an upload task ended early");
    }
    // Let A pass what it has on to Garage: the S3 PUTs are under way, and
    // no instance serves them yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (path, _) in &uploads {
        check_absent(&[b, cc], path).await;
    }
    c.nodes[0].kill();
    let killed = Instant::now();
    killed_tx.send(true).unwrap();
    for task in tasks {
        let answer = timeout(Duration::from_secs(30), task)
            .await
            .expect("the upload ends once A is dead")
            .unwrap();
        assert_eq!(answer, None, "an answer from a killed instance");
    }
    for (path, _) in &uploads {
        check_absent(&[b, cc], path).await;
    }

    // The retries, through B, until the dead claims are taken over; C never
    // serves a partial file meanwhile.
    let mut retries = Vec::new();
    for (path, body) in uploads.clone() {
        retries.push(tokio::spawn(async move {
            let mut conflicts = 0;
            loop {
                match put_expect(b, &path, &body).await {
                    201 => return (conflicts, killed.elapsed()),
                    409 => conflicts += 1,
                    other => panic!("retry of {path} via B: {other}"),
                }
                assert!(
                    killed.elapsed() < TAKEOVER_LIMIT,
                    "{path}: still 409 {TAKEOVER_LIMIT:?} after the kill"
                );
                let r = get(cc, &path, &[]).await;
                assert_eq!(
                    r.status,
                    StatusCode::NOT_FOUND,
                    "GET {path} via C meanwhile"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let mut waits = Vec::new();
    let mut conflicts = 0;
    for task in retries {
        let (n, after) = task.await.unwrap();
        conflicts += n;
        waits.push(after.as_secs_f64());
    }
    for (path, body) in &uploads {
        check_served(&[cc, b], path, body).await;
    }
    let restart = Instant::now();
    c.nodes[0].restart().await;
    let restarted_in = restart.elapsed().as_secs_f64();
    for (path, body) in &uploads {
        check_served(&[c.nodes[0].addr], path, body).await;
    }
    // Nothing of the cut uploads is left in the bucket: no body without its
    // metadata, or the reverse.
    let config = upslot::config::Config::load(&c.nodes[1].config).unwrap();
    let pending = common::pending(&config).await;
    assert!(pending.is_empty(), "left in the bucket: {pending:?}");
    let min = waits.iter().copied().fold(f64::MAX, f64::min);
    let max = waits.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "case 6, kill -9 mid-upload: {UPLOADS} uploads of 2 MiB to A killed at 1 MiB each; \
         404 on B and C before and after the kill, no answer from A; retries via B: {conflicts} x 409, then 201 at \
         {min:.1}-{max:.1} s after the kill; C and B serve the full bodies, nothing partial left in the bucket, and A restarted \
         (ready in {restarted_in:.1} s) too; {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// Case 7: Garage's node 2 (not the instances' endpoint) stopped: uploads
/// through every instance and downloads of new and old files go on as before.
async fn one_garage_node_down_changes_nothing_for_clients(c: &Cluster, kept: &[(String, Vec<u8>)]) {
    let t = Instant::now();
    c.garage.stop_node(2);
    let stopped_in = t.elapsed().as_secs_f64();
    let addrs = c.addrs();
    let mut files = Vec::new();
    let mut slowest_put: f64 = 0.0;
    for (i, &addr) in addrs.iter().chain([c.nginx()].iter()).enumerate() {
        let path = format!("garage-down/{i}.bin");
        let body = body(MIB + i, 60 + i as u8);
        let put_started = Instant::now();
        let r = put(addr, &path, &body).await;
        slowest_put = slowest_put.max(put_started.elapsed().as_secs_f64());
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "PUT {path} via {addr}: {}",
            r.text()
        );
        files.push((path, body));
    }
    let mut requests = 0;
    for (path, body) in files.iter().chain(kept) {
        requests += check_served(&addrs, path, body).await;
    }
    for node in &c.nodes {
        let r = node.readyz().await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{} readyz: {}",
            node.name,
            r.text()
        );
    }
    let down_for = t.elapsed().as_secs_f64();
    let start = Instant::now();
    c.garage.start_node(2);
    eprintln!(
        "case 7, one Garage node down: node 2 stopped in {stopped_in:.1} s; {} PUTs via A, B, C \
         and nginx all 201 (slowest {slowest_put:.2} s), {requests} GET/HEAD/range requests of \
         new and earlier files all served, /readyz 200 everywhere; {down_for:.1} s down; \
         started again in {:.1} s",
        files.len(),
        start.elapsed().as_secs_f64()
    );
}

/// Case 8: PostgreSQL stopped: a PUT and a GET answer 503 with `Retry-After`
/// within 15 s, `/readyz` is 503 and names the index; once it is back,
/// service resumes by itself.
async fn the_index_down_answers_503_and_service_resumes(c: &Cluster, kept: &[(String, Vec<u8>)]) {
    let t = Instant::now();
    let addrs = c.addrs();
    let (kept_path, kept_body) = &kept[0];
    let new_path = "index-down/new.bin";
    let new_body = body(2 * KIB, 70);
    c.pg.stop();
    let mut slowest: f64 = 0.0;
    for (i, &addr) in addrs.iter().enumerate() {
        let name = c.nodes[i].name;
        let asked = Instant::now();
        let r = timeout(UNAVAILABLE_LIMIT, put(addr, new_path, &new_body))
            .await
            .unwrap_or_else(|_| panic!("PUT via {name} unanswered after {UNAVAILABLE_LIMIT:?}"));
        slowest = slowest.max(asked.elapsed().as_secs_f64());
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "PUT via {name}: {}",
            r.text()
        );
        assert!(
            r.header("retry-after").is_some(),
            "PUT via {name}: no Retry-After"
        );

        let asked = Instant::now();
        let r = timeout(UNAVAILABLE_LIMIT, get(addr, kept_path, &[]))
            .await
            .unwrap_or_else(|_| panic!("GET via {name} unanswered after {UNAVAILABLE_LIMIT:?}"));
        slowest = slowest.max(asked.elapsed().as_secs_f64());
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "GET via {name}: {}",
            r.text()
        );
        assert!(
            r.header("retry-after").is_some(),
            "GET via {name}: no Retry-After"
        );

        let r = timeout(UNAVAILABLE_LIMIT, c.nodes[i].readyz())
            .await
            .unwrap_or_else(|_| panic!("/readyz of {name} unanswered"));
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{name} readyz");
        assert!(r.text().contains("index"), "{name} readyz: {}", r.text());
    }
    let down_for = t.elapsed().as_secs_f64();

    let back = Instant::now();
    c.pg.restart();
    let restarted_in = back.elapsed().as_secs_f64();
    // Bounded: every instance takes the PUT and serves the GET again.
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = put(addrs[2], new_path, &new_body).await;
        match r.status {
            StatusCode::CREATED => break,
            StatusCode::SERVICE_UNAVAILABLE => refused += 1,
            other => panic!("PUT via C after the restart: {other} {}", r.text()),
        }
        assert!(
            Instant::now() < deadline,
            "no 201 within 30 s of the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let resumed_in = back.elapsed().as_secs_f64();
    for node in &c.nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = node.readyz().await;
            if r.status == StatusCode::OK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} readyz: {}",
                node.name,
                r.text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    check_served(&addrs, kept_path, kept_body).await;
    check_served(&addrs, new_path, &new_body).await;
    eprintln!(
        "case 8, the index down: PUT and GET via A, B, C all 503 with Retry-After (slowest \
         {slowest:.2} s), /readyz 503 naming the index; down {down_for:.1} s; PostgreSQL back \
         in {restarted_in:.1} s, first 201 {resumed_in:.1} s after the restart ({refused} x 503 \
         before), /readyz 200 and every instance serves again; {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// Expiry, on a cluster of its own.

/// Case 5: with a 3 s retention, files uploaded through each instance are
/// 404 everywhere once expired, gone from `files list` within a few seconds,
/// and each is deleted by exactly one reaper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_files_are_gone_everywhere_and_deleted_once() {
    if !backends::garage_available() {
        return;
    }
    const FILES: usize = 6;
    let settings = Settings {
        retention: "3s",
        reap_interval: "1s",
        quota_total: "0",
    };
    let c = Cluster::start(&settings, false).await;
    let t = Instant::now();
    let addrs = c.addrs();
    let files: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| (format!("expire/{i}.bin"), body(64 * KIB, 80 + i as u8)))
        .collect();
    let first_upload = Instant::now();
    for (i, (path, body)) in files.iter().enumerate() {
        let r = put(addrs[i % 3], path, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "PUT {path}: {}", r.text());
    }
    let uploaded = Instant::now();
    // While fresh, each is served by another instance than the one that took
    // it, and listed. Expiry counts whole seconds: a file may expire 2 s after
    // its upload, so what is checked after that is not held against anyone.
    let fresh = Duration::from_millis(1500);
    let mut seen = 0;
    for (i, (path, body)) in files.iter().enumerate() {
        if first_upload.elapsed() > fresh {
            break;
        }
        let r = get(addrs[(i + 1) % 3], path, &[]).await;
        if first_upload.elapsed() < fresh {
            assert_eq!(r.status, StatusCode::OK, "GET {path} while fresh");
            assert!(r.body == *body, "GET {path}: the body differs");
            seen += 1;
        }
    }
    let listed = c.nodes[0].listed().await;
    let listed_fresh = first_upload.elapsed() < fresh;
    if listed_fresh {
        assert!(
            files.iter().all(|(p, _)| listed.contains_key(p)),
            "{listed:?}"
        );
    }

    // 404 everywhere once expired.
    let deadline = uploaded + Duration::from_secs(20);
    loop {
        let mut served = 0;
        for (path, _) in &files {
            for &addr in &addrs {
                if get(addr, path, &[]).await.status != StatusCode::NOT_FOUND {
                    served += 1;
                }
            }
        }
        if served == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{served} GETs still not 404");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone_in = uploaded.elapsed().as_secs_f64();

    // Out of the index, each taken by one reaper.
    let deleted = |c: &Cluster| {
        let admins: Vec<SocketAddr> = c.nodes.iter().map(|n| n.admin).collect();
        async move {
            let mut each = Vec::new();
            for admin in admins {
                each.push(metric(admin, "upslot_expired_files_deleted_total").await);
            }
            each
        }
    };
    let deadline = uploaded + Duration::from_secs(20);
    let each = loop {
        let each = deleted(&c).await;
        let listed = c.nodes[1].listed().await;
        let left = files.iter().filter(|(p, _)| listed.contains_key(p)).count();
        if left == 0 && each.iter().sum::<u64>() >= FILES as u64 {
            break each;
        }
        assert!(
            Instant::now() < deadline,
            "{left} files still listed, deletions per instance {each:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let unlisted_in = uploaded.elapsed().as_secs_f64();
    assert_eq!(each.iter().sum::<u64>(), FILES as u64, "deletions {each:?}");
    // Two more passes of every reaper: nothing is deleted twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = deleted(&c).await;
    assert_eq!(later, each, "deletions after two more passes");
    for node in &c.nodes {
        assert_eq!(metric(node.admin, "upslot_stored_files").await, 0);
        assert!(node.listed().await.is_empty());
    }
    eprintln!(
        "case 5, expiry on all: {FILES} files of 64 KiB via A, B, C with retention 3 s, reap \
         every 1 s; {seen} served by another instance while fresh (listed: {listed_fresh}); 404 on every instance \
         {gone_in:.1} s after upload, out of files list {unlisted_in:.1} s after; deletions per \
         instance {each:?} (sum {}), unchanged 2 s later; {:.1} s",
        each.iter().sum::<u64>(),
        t.elapsed().as_secs_f64()
    );
}
