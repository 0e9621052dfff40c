//! Moving up, and back from a lost database: `upslot migrate` copies a
//! one-machine installation into S3 (a real Garage cluster) and PostgreSQL
//! while the old service keeps serving, resumes where it stopped, and refuses a
//! body that no longer matches its hash; `upslot index rebuild` restores an
//! emptied index from the bucket alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod common;

use std::path::Path;
use std::process::Command;

use common::{SECRET, Server, test_config};
use http::StatusCode;
use upslot::clock::ManualClock;
use upslot::config::{IndexBackend, Setting, Storage};

/// A configuration file for the new storage and index.
fn new_config(dir: &Path, storage: &Storage, index: &IndexBackend) -> std::path::PathBuf {
    let (
        Storage::S3(s3),
        IndexBackend::Postgres {
            url: Setting::Inline(url),
        },
    ) = (storage, index)
    else {
        panic!("s3 and postgres");
    };
    let setting = |s: &Setting| match s {
        Setting::Inline(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    let text = format!(
        "data_dir = {data:?}\nsecret = {SECRET:?}\n\n[storage]\nbackend = \"s3\"\nendpoint = {endpoint:?}\n\
         region = {region:?}\nbucket = {bucket:?}\nprefix = {prefix:?}\naccess_key_id = {id:?}\n\
         secret_access_key = {key:?}\n\n[index]\nbackend = \"postgres\"\nurl = {url:?}\n",
        data = dir.join("new-data").display().to_string(),
        endpoint = s3.endpoint.clone().unwrap(),
        region = s3.region,
        bucket = s3.bucket,
        prefix = s3.prefix,
        id = setting(&s3.access_key_id),
        key = setting(&s3.secret_access_key),
    );
    let path = dir.join("new.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn upslot(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_upslot"))
        .args(args)
        .env("UPSLOT_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_moves_to_s3_and_postgres_while_it_serves() {
    if !backends::garage_available() {
        return;
    }
    let garage = backends::Garage::start();
    let pg = backends::Postgres::start();
    let work = common::tempdir();
    let storage = garage.storage(0, "moved/");
    let index = pg.index();
    let config = new_config(work.path(), &storage, &index);
    let config = config.display().to_string();

    // The old installation, serving throughout; its clock is the real one,
    // which `upslot migrate` goes by.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (old_config, old_dir) = test_config();
    let old = Server::start_with(old_config, ManualClock::at(now), Some(old_dir)).await;
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a/notes.txt".into(), b"hello".to_vec()),
        ("b/photo.jpg".into(), support_body(2 * 1024 * 1024 + 3)),
        ("c/empty.bin".into(), Vec::new()),
    ];
    for (path, body) in &files {
        old.upload(path, body).await;
    }
    let from = old.data_dir().display().to_string();

    let (ok, out) = upslot(&["migrate", "-c", &config, "--from", &from]);
    assert!(ok, "{out}");
    assert!(out.contains("copied 3 file(s)"), "{out}");
    eprintln!("first run: {}", out.trim());
    for (path, body) in &files {
        assert_eq!(
            &old.get(path, &[]).await.body[..],
            &body[..],
            "old still serves {path}"
        );
    }
    // Run again: everything is there already.
    let (ok, out) = upslot(&["migrate", "-c", &config, "--from", &from]);
    assert!(ok, "{out}");
    assert!(
        out.contains("copied 0 file(s)") && out.contains("3 already there"),
        "{out}"
    );

    // A file uploaded since, and one whose body rotted on disk.
    old.upload("d/late.txt", b"late").await;
    old.upload("e/rotten.txt", b"intact").await;
    let rotten = old
        .files_on_disk()
        .into_iter()
        .find(|p| std::fs::read(p).is_ok_and(|b| b == b"intact"))
        .unwrap();
    std::fs::write(&rotten, b"INTACT").unwrap();
    let (ok, out) = upslot(&["migrate", "-c", &config, "--from", &from]);
    assert!(!ok, "a refused file fails the run: {out}");
    assert!(
        out.contains("copied 1 file(s)") && out.contains("1 refused"),
        "{out}"
    );

    // The new service serves what was copied, byte for byte, with the same ETag.
    let (mut new_config, _dir) = test_config();
    new_config.storage = storage.clone();
    new_config.index = index.clone();
    let new = Server::start_with(new_config.clone(), ManualClock::at(now), None).await;
    for (path, body) in files
        .iter()
        .chain([&("d/late.txt".into(), b"late".to_vec())])
    {
        let got = new.get(path, &[]).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert_eq!(&got.body[..], &body[..], "{path}");
        assert_eq!(
            got.headers.get("etag"),
            old.get(path, &[]).await.headers.get("etag"),
            "{path}"
        );
    }
    assert_eq!(
        new.get("e/rotten.txt", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    drop(new);

    // The database lost: the bucket alone brings the index back.
    pg.clear().await;
    let (ok, out) = upslot(&["index", "rebuild", "-c", &config]);
    assert!(ok, "{out}");
    assert!(out.contains("recorded 4 file(s)"), "{out}");
    let new = Server::start_with(new_config, ManualClock::at(now), None).await;
    assert_eq!(new.usage().await.files, 4);
    assert_eq!(&new.get("b/photo.jpg", &[]).await.body[..], &files[1].1[..]);
    let (ok, out) = upslot(&["index", "rebuild", "-c", &config]);
    assert!(ok && out.contains("recorded 0 file(s); 4 already"), "{out}");
}

fn support_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}
