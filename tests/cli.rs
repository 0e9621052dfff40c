//! The `upslot` binary as an operator uses it: `serve` on defaults or a file,
//! `sign` for curl-style trials, `check-config`, and SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_upslot");

struct Running {
    child: Child,
    addr: SocketAddr,
    stdout: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `upslot serve` in `dir` and reads the banner up to the last snippet line.
fn serve(dir: &Path, args: &[&str]) -> Running {
    serve_with_secret(dir, args, None)
}

/// [`serve`], with `UPSLOT_SECRET` set to `secret` if given.
fn serve_with_secret(dir: &Path, args: &[&str], secret: Option<&str>) -> Running {
    let mut command = Command::new(BIN);
    command.env_remove("UPSLOT_SECRET");
    if let Some(secret) = secret {
        command.env("UPSLOT_SECRET", secret);
    }
    let mut child = command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let mut addr = None;
    for line in lines.by_ref().take(200) {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("upslot listening on http://") {
            addr = Some(rest.split('/').next().unwrap().parse().unwrap());
        }
        let last = line.contains("max_size:");
        stdout.push(line);
        if last {
            break;
        }
    }
    Running {
        child,
        addr: addr.expect("banner names the address"),
        stdout,
    }
}

fn sign(dir: &Path, args: &[&str]) -> Vec<String> {
    sign_with_secret(dir, args, None)
}

fn sign_with_secret(dir: &Path, args: &[&str], secret: Option<&str>) -> Vec<String> {
    let mut command = Command::new(BIN);
    command.env_remove("UPSLOT_SECRET");
    if let Some(secret) = secret {
        command.env("UPSLOT_SECRET", secret);
    }
    let out = command
        .arg("sign")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_config(dir: &Path, extra: &str) -> String {
    let path = dir.join("upslot.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:0\"\n{extra}[admin]\nlisten = \"127.0.0.1:0\"\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn target_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    rest[rest.find('/').unwrap()..].to_owned()
}

#[tokio::test]
async fn first_start_generates_a_secret_and_prints_snippets() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let running = serve(dir.path(), &["-c", &config]);
    let secret_path = dir.path().join("upslot-data/secret");
    let mode = std::fs::metadata(&secret_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let banner = running.stdout.join("\n");
    for line in [
        "http_upload_external_base_url",
        "http_upload_external_secret",
        "http_file_share_base_url",
        "http_file_share_secret",
        "mod_http_upload:",
        "external_secret:",
    ] {
        assert!(banner.contains(line), "banner lacks {line}:\n{banner}");
    }
    // Not a terminal: the secret itself stays out of captured output.
    let secret = std::fs::read_to_string(&secret_path).unwrap();
    assert!(!banner.contains(secret.trim()));
    drop(running);

    // A second start keeps the same secret.
    let _again = serve(dir.path(), &["-c", &config]);
    assert_eq!(std::fs::read_to_string(&secret_path).unwrap(), secret);
}

/// `UPSLOT_SECRET` wins over the config file's `secret`; and the control socket
/// in the data directory is for the service's own user only.
#[tokio::test]
async fn the_environment_secret_wins_over_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "secret = \"the-config-file-secret\"\n");
    let env = Some("the-environment-secret");
    let running = serve_with_secret(dir.path(), &["-c", &config], env);
    let base = format!("http://{}/upload/", running.addr);
    let args = ["-c", &config, "--size", "5", "--base-url", &base, "f.txt"];
    for (secret, status) in [(env, StatusCode::CREATED), (None, StatusCode::FORBIDDEN)] {
        let lines = sign_with_secret(dir.path(), &args, secret);
        let target = target_of(&lines[0]);
        let put = common::request(running.addr, Method::PUT, &target, &[], b"hello".to_vec()).await;
        assert_eq!(put.status, status, "signed with {secret:?}: {}", put.text());
    }
    let socket = dir.path().join("upslot-data/control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(running);

    // A short one is refused there as in the file.
    let out = Command::new(BIN)
        .args(["serve", "-c", &config])
        .current_dir(dir.path())
        .env("UPSLOT_SECRET", "abc")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("UPSLOT_SECRET: secret must be at least 16"),
        "{err}"
    );
}

#[tokio::test]
async fn sign_then_put_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let running = serve(dir.path(), &["-c", &config]);
    let base = format!("http://{}/upload/", running.addr);
    for scheme in ["v1", "v2", "token", "jwt"] {
        let name = format!("Grüße {scheme} (1).txt");
        let lines = sign(
            dir.path(),
            &[
                "-c",
                &config,
                "--scheme",
                scheme,
                "--size",
                "5",
                "--type",
                "text/plain",
                "--base-url",
                &base,
                "--user",
                "romeo@example.org",
                &name,
            ],
        );
        let target = target_of(&lines[0]);
        let mut headers = vec![("content-type", "text/plain")];
        if scheme == "jwt" {
            let value = lines[1].strip_prefix("Authorization: ").unwrap();
            headers.push(("authorization", value));
        }
        let put = common::request(
            running.addr,
            Method::PUT,
            &target,
            &headers,
            b"hello".to_vec(),
        )
        .await;
        assert_eq!(put.status, StatusCode::CREATED, "{scheme}: {}", put.text());
        let get_target = target.split('?').next().unwrap();
        let get = common::request(running.addr, Method::GET, get_target, &[], vec![]).await;
        assert_eq!(get.status, StatusCode::OK);
        assert_eq!(&get.body[..], b"hello");
        assert!(
            get.header("content-disposition")
                .unwrap()
                .contains("filename*=UTF-8''Gr%C3%BC%C3%9Fe")
        );
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut running = serve(dir.path(), &["-c", &config]);
    let pid = running.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut exit = None;
    for _ in 0..100 {
        if let Some(s) = running.child.try_wait().unwrap() {
            exit = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let exit = exit.expect("exited after SIGTERM");
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(exit.success(), "{exit:?}: {log}");
}

#[test]
fn check_config() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "retention = \"2d\"\n");
    let out = Command::new(BIN)
        .args(["check-config", &good])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    for (text, needle) in [
        ("retention = \"2d\"\nretension = \"3d\"\n", "retension"),
        ("max_file_size = \"huge\"\n", "max_file_size"),
        ("[cors]\nallow_origin = [\"*\"]\n", "allow_origin"),
    ] {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", bad.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn sign_without_secret_explains() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["sign", "--size", "1", "a.txt"])
        .current_dir(dir.path())
        .env_remove("UPSLOT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no secret"));
}

/// Secret rotation without a restart: SIGHUP puts a new secret in effect and
/// keeps the previous one until its end; the log never says which matched.
#[tokio::test]
async fn sighup_rotates_the_secret_without_downtime() {
    const OLD: &str = "the-secret-before-rotation";
    const NEW: &str = "the-secret-after-the-rotation";
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret.txt");
    std::fs::write(&secret_file, format!("{OLD}\n")).unwrap();
    let secret_line = format!("secret_file = \"{}\"\n", secret_file.display());
    let config = write_config(dir.path(), &secret_line);
    let running = serve(dir.path(), &["-c", &config]);
    let put = |path: &str, secret: &str| {
        let query =
            upslot::auth::sign_query(upslot::auth::Scheme::V1, secret.as_bytes(), path, 5, None)
                .unwrap();
        let target = format!("/upload/{path}?{query}");
        async move {
            common::request(running.addr, Method::PUT, &target, &[], b"hello".to_vec())
                .await
                .status
        }
    };
    let log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    // SIGHUP, then wait until the log says `what` for the `times`th time.
    let hangup = |what: &str, times: usize| {
        common::send_signal(&running.child, "HUP");
        for _ in 0..500 {
            if log().matches(what).count() == times {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {what:?} logged:\n{}", log());
    };
    assert_eq!(put("a/1", OLD).await, StatusCode::CREATED);
    assert_eq!(put("a/2", NEW).await, StatusCode::FORBIDDEN);

    // The operator's steps: the old secret becomes a previous one, the new
    // one takes its place, then SIGHUP (`systemctl reload upslot`).
    let old_file = dir.path().join("secret.old");
    std::fs::write(&old_file, format!("{OLD}\n")).unwrap();
    std::fs::write(&secret_file, format!("{NEW}\n")).unwrap();
    let previous = |until: &str| {
        format!(
            "{secret_line}[[previous_secrets]]\nsecret_file = \"{}\"\nuntil = \"{until}\"\n",
            old_file.display()
        )
    };
    write_config(dir.path(), &previous("2999-01-01T00:00:00Z"));
    hangup("secrets reloaded", 1);
    assert_eq!(put("b/1", NEW).await, StatusCode::CREATED);
    assert_eq!(put("b/2", OLD).await, StatusCode::CREATED);

    // Its end passed: only the new secret is left.
    write_config(dir.path(), &previous("2001-01-01T00:00:00Z"));
    hangup("secrets reloaded", 2);
    assert_eq!(put("c/1", NEW).await, StatusCode::CREATED);
    assert_eq!(put("c/2", OLD).await, StatusCode::FORBIDDEN);

    // A bad file keeps the secrets in effect.
    write_config(dir.path(), "secret = \"short\"\n");
    hangup("secrets not reloaded", 1);
    assert_eq!(put("d/1", NEW).await, StatusCode::CREATED);

    let log = log();
    for secret in [OLD, NEW] {
        assert!(!log.contains(secret), "{log}");
    }
    // Accepted uploads' lines are alike, whichever secret signed them.
    let created: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request") && l.contains("status=201"))
        .collect();
    assert_eq!(created.len(), 5, "{log}");
    let shape = |l: &str| {
        l.split_once(" INFO ")
            .map(|(_, rest)| rest.split(" ms=").next().unwrap_or("").to_owned())
    };
    assert!(
        created.iter().all(|l| shape(l) == shape(created[0])),
        "{log}"
    );
}
