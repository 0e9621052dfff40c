//! The real parts the scale-out runs on, started by the repository's own
//! scripts (`deploy/cluster/`): a 3-node Garage cluster and PostgreSQL, each in
//! a fresh directory and stopped when dropped. Without Garage installed the
//! tests that need it are skipped, unless `CI` is set, where they fail. Test
//! files that use it also declare `mod common`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use upslot::config::{IndexBackend, S3, Setting, Storage};

use crate::common::env_file;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/cluster")
        .join(name)
}

fn run(script_name: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(script(script_name))
        .args(args)
        .output()
        .expect("run a cluster script");
    assert!(
        out.status.success(),
        "{script_name} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether Garage can be found; if not, tests that need it skip, or fail under CI.
pub fn garage_available() -> bool {
    let home = std::env::var("HOME").unwrap_or_default();
    let found = std::env::var_os("GARAGE").is_some()
        || Command::new("garage").arg("--version").output().is_ok()
        || Path::new(&home).join(".cargo/bin/garage").exists();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "Garage is not installed (cargo install garage --version 2.5.0 --locked)"
        );
        eprintln!("SKIPPED: Garage is not installed");
    }
    found
}

pub struct Garage {
    dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
}

impl Garage {
    pub fn start() -> Garage {
        let dir = tempfile::Builder::new()
            .prefix("upslot-garage-")
            .tempdir()
            .unwrap();
        let path = dir.path().display().to_string();
        let out = Command::new("bash")
            .arg(script("garage.sh"))
            .args(["start", &path])
            .output()
            .expect("run a cluster script");
        if !out.status.success() {
            // The nodes' logs go with the directory: keep their ends, and stop
            // the nodes that did start rather than leave them running.
            let logs: String = (1..=3)
                .map(|n| {
                    let log = std::fs::read_to_string(dir.path().join(format!("node{n}.log")))
                        .unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                    format!("--- node{n}.log (end)\n{tail}\n")
                })
                .collect();
            let _ = Command::new("bash")
                .arg(script("garage.sh"))
                .args(["stop", &path])
                .output();
            panic!(
                "garage.sh start {path} failed:\n{}{}{logs}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = env_file(&dir.path().join("garage.env"));
        Garage { dir, env }
    }

    /// Every node's S3 endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.env["S3_ENDPOINTS"]
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// `[storage]` for the bucket, through node `n` (0-based), below `prefix`.
    pub fn storage(&self, n: usize, prefix: &str) -> Storage {
        Storage::S3(S3 {
            endpoint: Some(self.endpoints()[n].clone()),
            region: self.env["S3_REGION"].clone(),
            bucket: self.env["S3_BUCKET"].clone(),
            prefix: prefix.to_owned(),
            access_key_id: Setting::Inline(self.env["AWS_ACCESS_KEY_ID"].clone()),
            secret_access_key: Setting::Inline(self.env["AWS_SECRET_ACCESS_KEY"].clone()),
            path_style: true,
        })
    }

    pub fn stop_node(&self, n: usize) {
        let n = (n + 1).to_string();
        run("garage.sh", &["stop-node", &self.path(), &n]);
    }

    pub fn start_node(&self, n: usize) {
        let n = (n + 1).to_string();
        run("garage.sh", &["start-node", &self.path(), &n]);
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        run("garage.sh", &["stop", &self.path()]);
    }
}

pub struct Postgres {
    dir: tempfile::TempDir,
    pub url: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("upslot-postgres-")
            .tempdir()
            .unwrap();
        run("postgres.sh", &["start", &dir.path().display().to_string()]);
        let env = env_file(&dir.path().join("postgres.env"));
        Postgres {
            dir,
            url: env["UPSLOT_INDEX_URL"].clone(),
        }
    }

    pub fn index(&self) -> IndexBackend {
        IndexBackend::Postgres {
            url: Setting::Inline(self.url.clone()),
        }
    }

    pub fn stop(&self) {
        run("postgres.sh", &["stop", &self.path()]);
    }

    pub fn restart(&self) {
        run("postgres.sh", &["start", &self.path()]);
    }

    /// Empties the index's tables, for the next case.
    pub async fn clear(&self) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let task = tokio::spawn(connection);
        // The schema exists once an index has connected; before, nothing to clear.
        let _ = client
            .batch_execute(
                "TRUNCATE files, claims, user_usage; \
                 UPDATE usage SET files = 0, bytes = 0, reserved = 0",
            )
            .await;
        drop(client);
        let _ = task.await;
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
