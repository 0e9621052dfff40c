//! Quotas (DESIGN §3, §5): `quota.per_user` (413 `quota exceeded`), `quota.total`
//! and `min_free_space` (507), reserved before the body so that concurrent uploads
//! cannot overshoot together, and a real ENOSPC mid-upload (507, nothing left).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::path::Path;
use std::process::Command;

use common::{Server, T0};
use http::{Method, StatusCode};
use support::{Raw, RawResponse, wait_until};
use upslot::auth::{JwtSlot, Scheme, sign_jwt};
use upslot::index::Usage;

fn jwt_auth(server: &Server, slot: &str, size: u64, sub: &str) -> String {
    let claims = JwtSlot {
        slot: slot.into(),
        filesize: size,
        exp: T0 + 300,
        iat: Some(T0),
        filename: None,
        filetype: None,
        sub: Some(sub.into()),
        expires: None,
    };
    format!("Bearer {}", sign_jwt(server.secret(), &claims).unwrap())
}

async fn put_jwt(server: &Server, slot: &str, sub: &str, body: &[u8]) -> common::Response {
    let auth = jwt_auth(server, slot, body.len() as u64, sub);
    server
        .request(
            Method::PUT,
            &server.target(&format!("{slot}/f.bin")),
            &[("authorization", &auth)],
            body.to_vec(),
        )
        .await
}

#[tokio::test]
async fn per_user_quota_from_jwt_sub() {
    let server = Server::start_config(|c| c.quota_per_user = 10).await;
    assert_eq!(
        put_jwt(&server, "a1", "alice@example.org", b"123456")
            .await
            .status,
        StatusCode::CREATED
    );
    let r = put_jwt(&server, "a2", "alice@example.org", b"123456").await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.text(), "quota exceeded");
    assert_eq!(
        put_jwt(&server, "a3", "alice@example.org", b"1234")
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        put_jwt(&server, "b1", "bob@example.org", b"123456")
            .await
            .status,
        StatusCode::CREATED
    );
    // Nothing of the refused upload is stored: three files, nothing else.
    assert_eq!(
        server.stored_paths().await,
        ["a1/f.bin", "a3/f.bin", "b1/f.bin"]
    );
    assert_eq!(server.pending().await, Vec::<String>::new());
    assert_eq!(server.user_bytes("alice@example.org").await, 10);
}

#[tokio::test]
async fn per_user_quota_for_ejabberd_paths() {
    let server = Server::start_config(|c| c.quota_per_user = 10).await;
    let user = "a5018f8c277bc4e61647c7b631df1c57f1cd4628";
    let random = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0";
    let path = |n: u32| format!("{user}/{random}/file{n}.txt");
    let put = |n: u32, body: &'static [u8]| {
        let target = server.signed_target(Scheme::V1, &path(n), body.len() as u64, None);
        let server = &server;
        async move {
            server
                .request(Method::PUT, &target, &[], body.to_vec())
                .await
        }
    };
    assert_eq!(put(1, b"1234567").await.status, StatusCode::CREATED);
    let r = put(2, b"1234").await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.text(), "quota exceeded");
    // Prosody's v1 layout names no user: only the total applies.
    server.upload("6b1f0a4e/photo.jpg", b"123456789012").await;
}

#[tokio::test]
async fn total_quota_gives_507() {
    let server = Server::start_config(|c| c.quota_total = 10).await;
    server.upload("s/a", b"123456").await;
    let r = server.put_v1("s/b", b"123456").await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    server.upload("s/c", b"1234").await;
    assert_eq!(
        server.usage().await,
        Usage {
            files: 2,
            bytes: 10
        }
    );
}

#[tokio::test]
async fn free_space_watermark_gives_507() {
    if common::on_cluster() {
        return; // about the file-system store: min_free_space is the data directory's
    }
    let server = Server::start_config(|c| c.min_free_space = u64::MAX / 4).await;
    let r = server.put_v1("s/a", b"hello").await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(server.files_on_disk().is_empty());
}

/// Sends the headers of a PUT with `Expect: 100-continue` and returns the
/// connection with the server's first answer (`100` or a final status).
async fn announce(server: &Server, target: &str, extra: &str, size: usize) -> (Raw, RawResponse) {
    let mut raw = Raw::connect(server.addr).await;
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n{extra}\r\n"
    );
    assert!(raw.send(head.as_bytes()).await);
    let answer = raw.read_response().await.expect("an answer to the head");
    (raw, answer)
}

#[tokio::test]
async fn concurrent_uploads_cannot_overshoot_a_quota() {
    let server = Server::start_config(|c| c.quota_per_user = 100).await;
    // Ten uploads of 30 bytes announce themselves before any sends a byte of body.
    let mut waiting = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let slot = format!("race{i}");
        let auth = jwt_auth(&server, &slot, 30, "carol@example.org");
        let target = server.target(&format!("{slot}/f.bin"));
        let (raw, answer) =
            announce(&server, &target, &format!("Authorization: {auth}\r\n"), 30).await;
        match answer.status {
            100 => waiting.push(raw),
            413 => {
                assert!(answer.text().ends_with("quota exceeded"), "{answer:?}");
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {answer:?}"),
        }
    }
    assert_eq!((waiting.len(), refused), (3, 7));
    for mut raw in waiting {
        assert!(raw.send(&[7u8; 30]).await);
        let answer = raw.read_response().await.expect("an answer to the body");
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    assert_eq!(server.user_bytes("carol@example.org").await, 90);
    // A failed upload gives its reservation back.
    let auth = jwt_auth(&server, "late", 10, "carol@example.org");
    let (raw, answer) = announce(
        &server,
        &server.target("late/f.bin"),
        &format!("Authorization: {auth}\r\n"),
        10,
    )
    .await;
    assert_eq!(answer.status, 100);
    drop(raw);
    wait_until("the failed upload's reservation given back", || async {
        server.stats().await.reserved == 0
    })
    .await;
    assert_eq!(
        put_jwt(&server, "late2", "carol@example.org", &[1; 10])
            .await
            .status,
        StatusCode::CREATED
    );
}

/// A small file system the test mounts itself (CI runs as root).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        Tmpfs::mount_as("tmpfs", &format!("size={size}"))
    }

    /// ramfs: like tmpfs, but without extended attributes. `None`: the test is
    /// skipped, which under CI (root) is a failure instead.
    fn mount_as(kind: &str, options: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", kind, "-o", options, kind])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must be able to mount a {kind} (it runs as root)"
            );
            eprintln!("SKIPPED: cannot mount a {kind} here (not root?)");
        }
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn enospc_mid_upload_gives_507_and_leaves_nothing() {
    if common::on_cluster() {
        return; // about the file-system store: a full local disk under the data directory
    }
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    let (mut config, _dir) = common::test_config();
    config.data_dir = fs.path().join("data");
    let server = Server::start_with(config, upslot::clock::ManualClock::at(T0), None).await;
    let kept: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    server.upload("s/kept.bin", &kept).await;

    // The checks pass (there is room), then the disk fills before the body comes.
    let size = 2_000_000;
    let target = server.signed_target(Scheme::V1, "s/big.bin", size as u64, None);
    let (mut raw, answer) = announce(&server, &target, "", size).await;
    assert_eq!(answer.status, 100, "{answer:?}");
    let filler = fs.path().join("filler");
    let free = rustix::fs::statvfs(fs.path()).unwrap();
    let room = (free.f_bavail * free.f_frsize) as usize;
    std::fs::write(&filler, vec![0u8; room.saturating_sub(500_000)]).unwrap();
    let _ = raw.send(&vec![9u8; size]).await;
    let answer = raw.read_response().await.expect("an answer to the body");
    assert_eq!(answer.status, 507, "{answer:?}");
    std::fs::remove_file(&filler).unwrap();

    let left = server.files_on_disk();
    assert_eq!(left.len(), 1, "only the kept file: {left:?}");
    let r = server.get("s/kept.bin", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body[..] == kept[..]);
    // With room again, the same slot can be retried.
    let r = server
        .request(Method::PUT, &target, &[], vec![9u8; size])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    drop(server);
    drop(fs);
}

/// Metadata lives in an extended attribute: on a file system without them every
/// commit would fail, so start-up refuses, and says why.
#[tokio::test]
async fn a_file_system_without_extended_attributes_is_refused_at_start() {
    if common::on_cluster() {
        return; // about the file-system store: its metadata is an extended attribute
    }
    let Some(fs) = Tmpfs::mount_as("ramfs", "mode=0700") else {
        return;
    };
    let (mut config, _dir) = common::test_config();
    config.data_dir = fs.path().join("data");
    let refused = upslot::Service::open(config, upslot::clock::ManualClock::at(T0))
        .await
        .err();
    let message = refused.expect("start-up refused").to_string();
    assert!(message.contains("extended attributes"), "{message}");
}
