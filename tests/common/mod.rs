//! The test harness: a real upslot on 127.0.0.1:<ephemeral> with a real data
//! directory, a clock the test controls, and a small HTTP client that sends paths
//! exactly as given (no normalisation), so that tests see what clients see.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upslot::clock::ManualClock;
use upslot::config::{Config, IndexBackend, SecretSource, Setting, Storage};
use upslot::http::body::Segment;

pub const SECRET: &str = "xep0363-test-secret";
/// 2026-01-01T00:00:00Z: tests start their clock here unless they say otherwise.
pub const T0: u64 = 1_767_225_600;

pub struct Server {
    pub addr: SocketAddr,
    /// The admin listener: /metrics, /healthz, /readyz.
    pub admin: SocketAddr,
    /// The running service's state, for checks of what the index holds.
    pub app: Arc<upslot::app::App>,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    /// Swaps the certificate when `config.tls` is set.
    pub tls: Option<upslot::tls::Reloader>,
    data: Option<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A fresh directory under cargo's per-target temporary directory (on this kind
/// of machine, creating many files under /tmp is an order of magnitude slower).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A configuration for tests: fixed secret, a fresh data directory, defaults
/// otherwise. The caller keeps the TempDir alive. With `UPSLOT_TEST_CLUSTER`
/// set, the files go to S3 and PostgreSQL instead (see [`on_cluster`]).
pub fn test_config() -> (Config, tempfile::TempDir) {
    let dir = tempdir();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        secret: SecretSource::Inline(SECRET.into()),
        // The default (1 GiB) would make every test fail on a nearly full disk;
        // the free-space tests set their own.
        min_free_space: 0,
        ..Config::default()
    };
    if let Some((storage, index)) = cluster_backends() {
        config.storage = storage;
        config.index = index;
    }
    (config, dir)
}

/// Whether the HTTP tests run on shared backends: `UPSLOT_TEST_CLUSTER` names
/// the directory of a Garage cluster and a PostgreSQL started by
/// `deploy/cluster/` (its `garage.env` and `postgres.env`). Each test then
/// gets its own key prefix in the bucket and its own schema in the database.
/// Tests of the file-system store itself return early there.
pub fn on_cluster() -> bool {
    std::env::var_os("UPSLOT_TEST_CLUSTER").is_some()
}

/// `KEY=value` lines of a `deploy/cluster/` script's env file.
pub fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect()
}

fn cluster_backends() -> Option<(Storage, IndexBackend)> {
    use upslot::config::S3;
    let dir = PathBuf::from(std::env::var_os("UPSLOT_TEST_CLUSTER")?);
    let s3 = env_file(&dir.join("garage.env"));
    let pg = env_file(&dir.join("postgres.env"));
    let own = format!("t{:016x}", rand::random::<u64>());
    let url = &pg["UPSLOT_INDEX_URL"];
    let made = std::process::Command::new("psql")
        .args([url.as_str(), "-q", "-c", &format!("CREATE SCHEMA {own}")])
        .output()
        .expect("run psql");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let storage = Storage::S3(S3 {
        endpoint: Some(s3["S3_ENDPOINT"].clone()),
        region: s3["S3_REGION"].clone(),
        bucket: s3["S3_BUCKET"].clone(),
        prefix: format!("{own}/"),
        access_key_id: Setting::Inline(s3["AWS_ACCESS_KEY_ID"].clone()),
        secret_access_key: Setting::Inline(s3["AWS_SECRET_ACCESS_KEY"].clone()),
        path_style: true,
    });
    let index = IndexBackend::Postgres {
        url: Setting::Inline(format!("{url}?options=-csearch_path%3D{own}")),
    };
    Some((storage, index))
}

impl Server {
    pub async fn start() -> Server {
        let (config, dir) = test_config();
        Server::start_with(config, ManualClock::at(T0), Some(dir)).await
    }

    pub async fn start_config(f: impl FnOnce(&mut Config)) -> Server {
        let (mut config, dir) = test_config();
        f(&mut config);
        Server::start_with(config, ManualClock::at(T0), Some(dir)).await
    }

    /// Starts on `config` as given; `data` (if any) is removed when the server is dropped.
    pub async fn start_with(
        config: Config,
        clock: Arc<ManualClock>,
        data: Option<tempfile::TempDir>,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let service = upslot::Service::open(config.clone(), clock.clone())
            .await
            .unwrap()
            .with_admin(admin_listener);
        let app = Arc::clone(service.app());
        let tls = service.tls_reloader();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(service.serve(listener, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            admin,
            app,
            clock,
            config,
            tls,
            data,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// What the index holds, in figures.
    pub async fn stats(&self) -> upslot::index::Stats {
        self.app.catalog.index.stats().await.unwrap()
    }

    pub async fn usage(&self) -> upslot::index::Usage {
        self.stats().await.usage
    }

    /// Bytes the index counts as `user`'s.
    pub async fn user_bytes(&self, user: &str) -> u64 {
        let files = self.app.catalog.index.list().await.unwrap();
        files
            .iter()
            .filter(|m| m.uploader.as_deref() == Some(user))
            .map(|m| m.size)
            .sum()
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// Asks for a graceful shutdown and waits until the service has stopped; the
    /// data directory is handed back so that a restart can reuse it.
    pub async fn stop(mut self) -> (Config, Arc<ManualClock>, Option<tempfile::TempDir>) {
        self.shutdown().await;
        (self.config.clone(), self.clock.clone(), self.data.take())
    }

    /// Asks for a graceful shutdown without waiting for it: the service drains
    /// what is in flight meanwhile.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    async fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn secret(&self) -> &[u8] {
        SECRET.as_bytes()
    }

    /// `path` is below base_path, decoded (e.g. `slot/Grüße.txt`). Returns the
    /// request target (encoded path plus `?v=...` etc.) for a query-token scheme.
    pub fn signed_target(
        &self,
        scheme: upslot::auth::Scheme,
        path: &str,
        size: u64,
        content_type: Option<&str>,
    ) -> String {
        let query =
            upslot::auth::sign_query(scheme, self.secret(), path, size, content_type).unwrap();
        format!("{}?{query}", self.target(path))
    }

    /// The encoded request path for a decoded `path` below base_path.
    pub fn target(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.config.base_path,
            upslot::path::SlotPath::encode(path)
        )
    }

    /// PUTs `body` to `path` signed with v1; returns the status.
    pub async fn put_v1(&self, path: &str, body: &[u8]) -> Response {
        let target = self.signed_target(upslot::auth::Scheme::V1, path, body.len() as u64, None);
        self.request(Method::PUT, &target, &[], body.to_vec()).await
    }

    /// Uploads `body` to `path` (v1) and asserts 201.
    pub async fn upload(&self, path: &str, body: &[u8]) {
        let r = self.put_v1(path, body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "upload of {path}: {}",
            r.text()
        );
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request(Method::GET, &self.target(path), headers, Vec::new())
            .await
    }

    pub async fn request(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Response {
        request(self.addr, method, target, headers, body).await
    }

    /// Every file currently in the data directory (bodies, temporaries, named or
    /// not), leaving out the service's own `secret`, `lock` and `control.sock`.
    /// For tests of the file-system store itself; others ask [`leftovers`].
    pub fn files_on_disk(&self) -> Vec<PathBuf> {
        files_in(self.data_dir())
    }

    /// Every complete file the store holds, read through the store itself
    /// (whatever the backend), sorted by path: its metadata as the store keeps
    /// it (with `s3`, `object` too) and its bytes. A file deleted between the
    /// scan and the read (by the reaper, say) is not listed: it is no longer
    /// complete, and whatever is left of it shows in [`pending`](Self::pending).
    pub async fn stored(&self) -> Vec<Stored> {
        let store = &self.app.catalog.store;
        let mut metas = store.scan().await.expect("scan the store");
        metas.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let whole = vec![Segment::Stored {
                offset: 0,
                len: meta.size,
            }];
            let Some(body) = store.read(&meta, whole).await.expect("read a stored file") else {
                continue;
            };
            let body = body.collect().await.expect("read a stored file").to_bytes();
            out.push(Stored {
                meta: serde_json::to_value(&meta).unwrap(),
                body: body.to_vec(),
            });
        }
        out
    }

    /// The paths of [`stored`](Self::stored) files.
    pub async fn stored_paths(&self) -> Vec<String> {
        self.stored()
            .await
            .iter()
            .map(|s| s.meta["path"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Everything the store holds, complete files or not: see [`leftovers`].
    pub async fn leftovers(&self) -> Vec<String> {
        leftovers(&self.config).await
    }

    /// What the store holds that is no part of a complete file: see [`pending`].
    pub async fn pending(&self) -> Vec<String> {
        pending(&self.config).await
    }

    /// Body bytes the service has received from clients so far
    /// (`upslot_upload_bytes_total`), whether or not the store shows them yet.
    pub fn received(&self) -> u64 {
        self.app.metrics.upload_bytes.get()
    }
}

/// One complete file as the store holds it ([`Server::stored`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub meta: serde_json::Value,
    pub body: Vec<u8>,
}

/// Everything the store of `config` holds, complete files or not, named as the
/// store names them, sorted: what "nothing left behind" is checked against. On
/// `fs` the files under the data directory (named or not, see
/// [`Server::files_on_disk`]); on `s3` every object below the prefix (a file is
/// a body and a `.meta` object there). Works on a stopped server's config too.
pub async fn leftovers(config: &Config) -> Vec<String> {
    let mut out = match &config.storage {
        Storage::Fs => files_in(&config.data_dir)
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        Storage::S3(s3) => upslot::store::S3Store::new(s3)
            .expect("an S3 store on the test's bucket")
            .object_names()
            .await
            .expect("list the bucket"),
    };
    out.sort();
    out
}

/// [`Server::files_on_disk`] of `data_dir`.
fn files_in(data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(data_dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n != "secret" && n != "lock" && n != "control.sock")
        })
        .collect();
    out.extend(unnamed_files(data_dir));
    out
}

/// What the store of `config` holds that is no part of a complete file: on
/// `fs` the files of uploads in progress or interrupted (named in `tmp/`, or
/// unnamed), on `s3` a body without its `.meta` object or the reverse. (An S3
/// PUT in progress shows nothing until it is complete.)
pub async fn pending(config: &Config) -> Vec<String> {
    match &config.storage {
        Storage::Fs => {
            let mut out = walk(&config.data_dir.join("tmp"));
            out.extend(unnamed_files(&config.data_dir));
            out.iter().map(|p| p.display().to_string()).collect()
        }
        Storage::S3(_) => {
            let names = leftovers(config).await;
            let all: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
            let whole = |name: &str| match name.strip_suffix(".meta") {
                Some(body) => all.contains(body),
                None => all.contains(format!("{name}.meta").as_str()),
            };
            names.iter().filter(|n| !whole(n)).cloned().collect()
        }
    }
}

/// The `[storage]` and `[index]` sections of a configuration file that name
/// `config`'s backends (empty for fs + local, the defaults): for a command
/// run beside a test's server. Values given inline are written inline, files
/// as `*_file`; those from the environment are left to it.
pub fn backends_toml(config: &Config) -> String {
    fn set(table: &mut toml::Table, key: &str, setting: &Setting) {
        match setting {
            Setting::Inline(v) => {
                table.insert(key.into(), v.clone().into());
            }
            Setting::File(path) => {
                table.insert(format!("{key}_file"), path.display().to_string().into());
            }
            Setting::Env(_) => {}
        }
    }
    let mut doc = toml::Table::new();
    if let Storage::S3(s3) = &config.storage {
        let mut t = toml::Table::new();
        t.insert("backend".into(), "s3".into());
        if let Some(endpoint) = &s3.endpoint {
            t.insert("endpoint".into(), endpoint.clone().into());
        }
        t.insert("region".into(), s3.region.clone().into());
        t.insert("bucket".into(), s3.bucket.clone().into());
        t.insert("prefix".into(), s3.prefix.clone().into());
        set(&mut t, "access_key_id", &s3.access_key_id);
        set(&mut t, "secret_access_key", &s3.secret_access_key);
        t.insert("path_style".into(), s3.path_style.into());
        doc.insert("storage".into(), t.into());
    }
    if let IndexBackend::Postgres { url } = &config.index {
        let mut t = toml::Table::new();
        t.insert("backend".into(), "postgres".into());
        set(&mut t, "url", url);
        doc.insert("index".into(), t.into());
    }
    toml::to_string(&doc).unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The metadata stored with the file at `body` (its `user.upslot` extended
/// attribute), as JSON.
pub fn stored_meta(body: &Path) -> serde_json::Value {
    let mut buf = vec![0; 4096];
    let n = rustix::fs::getxattr(body, "user.upslot", &mut buf[..]).expect("metadata attached");
    serde_json::from_slice(&buf[..n]).expect("metadata is JSON")
}

pub fn set_stored_meta(body: &Path, meta: &[u8]) {
    rustix::fs::setxattr(body, "user.upslot", meta, rustix::fs::XattrFlags::empty()).unwrap();
}

/// Files under `data_dir` that no directory walk finds but that still take space:
/// unnamed (`O_TMPFILE`) uploads in progress, and deleted files still open. Only
/// this process's, which is the server's in tests that start it in-process.
pub fn unnamed_files(data_dir: &Path) -> Vec<PathBuf> {
    unnamed_files_of("self", data_dir)
}

/// [`unnamed_files`] held open by the process `pid` (a number, or `self`).
pub fn unnamed_files_of(pid: &str, data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path())
            && target.starts_with(data_dir)
            && target.to_string_lossy().ends_with(" (deleted)")
        {
            out.push(target);
        }
    }
    out
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// Head and whole body of a client response.
    pub async fn read(res: http::Response<hyper::body::Incoming>) -> Response {
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// One HTTP/1.1 request on a fresh connection; the target is sent as given.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method.clone())
        .uri(target)
        .header("host", addr.to_string());
    let mut has_length = false;
    for (k, v) in headers {
        has_length |= k.eq_ignore_ascii_case("content-length");
        builder = builder.header(*k, *v);
    }
    if method == Method::PUT && !has_length {
        builder = builder.header("content-length", body.len());
    }
    let req = builder.body(Full::new(Bytes::from(body))).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("response within 30 s")
        .unwrap();
    Response::read(res).await
}

/// Writes `bytes` on a fresh connection and returns everything the server sends
/// until it closes the connection or goes quiet for `quiet`.
pub async fn raw(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_until_quiet(&mut stream, quiet).await
}

pub async fn read_until_quiet(stream: &mut TcpStream, quiet: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> Option<u16> {
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` (`TERM`, `HUP`, ...) to the process we started.
pub fn send_signal(child: &std::process::Child, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {}", child.id());
}

/// Whether an operator tool is here; without it the test is skipped, except in
/// CI (`CI` set), where .ci/run installs it and its absence is a failure.
pub fn have_tool(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed (CI is set: .ci/run installs it)"
        );
        println!("SKIPPED: {tool} not installed");
    }
    found
}

/// One GET over HTTP/2 with prior knowledge (h2c) on a fresh connection.
pub async fn h2_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Response {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{target}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(http_body_util::Empty::<Bytes>::new()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("h2 response within 30 s")
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    Response::read(res).await
}
