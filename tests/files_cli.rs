//! `upslot files` against a live service: what a data-subject request needs
//! (see, export, erase), taking effect at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, T0};
use http::{Method, StatusCode};
use serde_json::Value;
use upslot::auth::{JwtSlot, Scheme, sign_jwt};
use upslot::config::Config;
use upslot::index::Usage;

const BIN: &str = env!("CARGO_BIN_EXE_upslot");
const ROMEO: &str = "romeo@montague.example";
/// What ejabberd puts in the path for ROMEO (SHA-1 of the bare JID).
const ROMEO_SHA1: &str = "a5018f8c277bc4e61647c7b631df1c57f1cd4628";
const RANDOM: &str = "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8S9t0";

/// A configuration file for the command: the server's data directory, base
/// path and secret, and its storage and index.
fn config_file(config: &Config, name: &str) -> PathBuf {
    let file = config.data_dir.parent().unwrap().join(name);
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nbase_path = {:?}\nsecret = {:?}\n{}",
            config.data_dir,
            config.base_path,
            common::SECRET,
            common::backends_toml(config)
        ),
    )
    .unwrap();
    file
}

async fn files(server: &Server, args: &[&str]) -> (bool, String) {
    let (ok, out, _) = files_under(server, &[], args).await;
    (ok, out)
}

/// `upslot files ARGS`, run by `wrapper` if not empty (which may report the
/// peak RSS in KiB on a `peak-rss-kib=` line of stderr): success, stdout and
/// the rest of stderr, and that RSS.
async fn files_under(
    server: &Server,
    wrapper: &[String],
    args: &[&str],
) -> (bool, String, Option<u64>) {
    let config = config_file(&server.config, "files.toml");
    // Asynchronously: the service under test answers on this same runtime.
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = tokio::process::Command::new(program);
            command.args(wrapper_args).arg(BIN);
            command
        }
        None => tokio::process::Command::new(BIN),
    };
    let out = command
        .arg("files")
        .arg("-c")
        .arg(&config)
        .args(args)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut rss = None;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in stderr.lines() {
        match line.strip_prefix("peak-rss-kib=") {
            Some(kib) => rss = kib.trim().parse().ok(),
            None => text.push_str(&format!("{line}\n")),
        }
    }
    (out.status.success(), text, rss)
}

/// `files export --user ROMEO --archive target`.
async fn export_romeo(server: &Server, target: &std::path::Path) -> (bool, String) {
    files(
        server,
        &[
            "export",
            "--user",
            ROMEO,
            "--archive",
            target.to_str().unwrap(),
        ],
    )
    .await
}

async fn put_jwt(server: &Server, slot: &str, name: &str, sub: &str, body: &[u8]) {
    let claims = JwtSlot {
        slot: slot.into(),
        filesize: body.len() as u64,
        exp: T0 + 300,
        iat: Some(T0),
        filename: Some(name.into()),
        filetype: Some("image/jpeg".into()),
        sub: Some(sub.into()),
        expires: None,
    };
    let auth = format!("Bearer {}", sign_jwt(server.secret(), &claims).unwrap());
    let r = server
        .request(
            Method::PUT,
            &server.target(&format!("{slot}/{name}")),
            &[("authorization", &auth)],
            body.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
}

/// Romeo has a JWT upload and an ejabberd upload; Juliet has one; one is anonymous.
async fn populated() -> Server {
    let server = Server::start_config(|c| c.quota_per_user = 20).await;
    put_jwt(&server, "s1", "Grüße (1).jpg", ROMEO, b"romeo-jwt").await;
    let ejabberd = format!("{ROMEO_SHA1}/{RANDOM}/notes.txt");
    let target = server.signed_target(Scheme::V1, &ejabberd, 7, Some("text/plain"));
    let r = server
        .request(
            Method::PUT,
            &target,
            &[("content-type", "text/plain")],
            b"ejabber".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    put_jwt(&server, "s2", "j.jpg", "juliet@capulet.example", b"juliet").await;
    server.upload("anon/x.bin", b"anon").await;
    server
}

#[tokio::test]
async fn list_and_export_find_both_of_a_users_uploads() {
    let server = populated().await;
    let (ok, out) = files(&server, &["list", "--user", ROMEO, "--json"]).await;
    assert!(ok, "{out}");
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut paths: Vec<&str> = list.iter().map(|f| f["path"].as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            format!("{ROMEO_SHA1}/{RANDOM}/notes.txt").as_str(),
            "s1/Grüße (1).jpg"
        ]
    );

    let (ok, out) = files(&server, &["export", "--user", ROMEO]).await;
    assert!(ok, "{out}");
    let export: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(export["user"], ROMEO);
    let files_out = export["files"].as_array().unwrap();
    assert_eq!(files_out.len(), 2);
    let jwt = files_out
        .iter()
        .find(|f| f["path"] == "s1/Grüße (1).jpg")
        .unwrap();
    for key in [
        "path", "name", "size", "type", "sha256", "created", "expires",
    ] {
        assert!(!jwt[key].is_null(), "export lacks {key}: {jwt}");
    }
    assert_eq!(jwt["name"], "Grüße (1).jpg");
    assert_eq!(jwt["size"], 9);
    assert_eq!(jwt["type"], "image/jpeg");
    assert_eq!(jwt["created"], "2026-01-01T00:00:00Z");
    assert_eq!(jwt["expires"], "2026-01-08T00:00:00Z");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"romeo-jwt"));
    assert_eq!(jwt["sha256"], sha.as_str());
    // Every fact stored about each file is in the export, and nothing else
    // (but where the store keeps its bytes, `object`, which is no fact about it).
    let stored = server.stored().await;
    for exported in files_out {
        let path = exported["path"].as_str().unwrap();
        let mut stored = stored
            .iter()
            .find(|s| s.meta["path"] == path)
            .unwrap_or_else(|| panic!("{path} exported, not stored"))
            .meta
            .clone();
        let stored = stored.as_object_mut().unwrap();
        stored.remove("object");
        let exported = exported.as_object().unwrap();
        let renamed = |k: &str| if k == "content_type" { "type" } else { k }.to_owned();
        let mut stored_keys: Vec<String> = stored.keys().map(|k| renamed(k)).collect();
        let mut exported_keys: Vec<String> = exported
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k.clone())
            .collect();
        stored_keys.sort();
        exported_keys.sort();
        assert_eq!(exported_keys, stored_keys, "{path}");
        for (k, v) in stored {
            let shown = &exported[&renamed(k)];
            match k.as_str() {
                "created" | "expires" => assert_eq!(
                    shown.as_str().unwrap(),
                    upslot::files::rfc3339(v.as_u64().unwrap()),
                    "{path}: {k}"
                ),
                _ => assert_eq!(shown, v, "{path}: {k}"),
            }
        }
    }
    // Everybody's list has all four.
    let (ok, out) = files(&server, &["list"]).await;
    assert!(ok);
    assert_eq!(out.lines().count(), 4, "{out}");
}

#[tokio::test]
async fn show_by_url_path_or_signed_path() {
    let server = populated().await;
    let url = format!(
        "http://{}{}",
        server.addr,
        server.target("s1/Grüße (1).jpg")
    );
    for arg in [
        url.as_str(),
        "/upload/s1/Gr%C3%BC%C3%9Fe%20(1).jpg",
        "s1/Grüße (1).jpg",
    ] {
        let (ok, out) = files(&server, &["show", arg]).await;
        assert!(ok, "{arg}: {out}");
        let shown: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(shown["uploader"], ROMEO);
    }
    let (ok, out) = files(&server, &["show", "s1/nothing.jpg"]).await;
    assert!(!ok && out.contains("no file"), "{out}");
}

#[tokio::test]
async fn delete_by_user_takes_effect_at_once() {
    let server = populated().await;
    assert_eq!(server.usage().await.files, 4);
    assert_eq!(server.user_bytes(ROMEO).await, 9);
    let (ok, out) = files(&server, &["delete", "--user", ROMEO]).await;
    assert!(ok, "{out}");
    assert!(out.contains("deleted 2 file(s)"), "{out}");
    // The running service heard (embedded index) or shares the index
    // (PostgreSQL): nothing to warn about either way.
    assert!(!out.contains("service"), "{out}");
    assert_eq!(
        server.get("s1/Grüße (1).jpg", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let ejabberd = format!("{ROMEO_SHA1}/{RANDOM}/notes.txt");
    assert_eq!(
        server.get(&ejabberd, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(server.get("s2/j.jpg", &[]).await.status, StatusCode::OK);
    // Counts and quotas follow: the service's index knows of the deletion.
    assert_eq!(
        server.usage().await,
        Usage {
            files: 2,
            bytes: 10
        }
    );
    assert_eq!(server.user_bytes(ROMEO).await, 0);
    assert_eq!(server.user_bytes(ROMEO_SHA1).await, 0);
    let (_, out) = files(&server, &["list", "--user", ROMEO]).await;
    assert!(out.trim().is_empty(), "{out}");
    // Erased in the store, not only hidden: the other two files are all that is left.
    assert_eq!(server.stored_paths().await, ["anon/x.bin", "s2/j.jpg"]);
    assert_eq!(server.pending().await, Vec::<String>::new());
}

#[tokio::test]
async fn delete_by_path_frees_the_users_quota() {
    let server = populated().await;
    // Romeo's 20-byte quota holds 9; a 12-byte upload does not fit...
    let claims = |slot: &str| JwtSlot {
        slot: slot.into(),
        filesize: 12,
        exp: T0 + 300,
        iat: None,
        filename: None,
        filetype: None,
        sub: Some(ROMEO.into()),
        expires: None,
    };
    let auth = format!(
        "Bearer {}",
        sign_jwt(server.secret(), &claims("s9")).unwrap()
    );
    let r = server
        .request(
            Method::PUT,
            &server.target("s9/big"),
            &[("authorization", &auth)],
            vec![0; 12],
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    // ...until the 9-byte one is deleted.
    let (ok, out) = files(&server, &["delete", "/upload/s1/Gr%C3%BC%C3%9Fe%20(1).jpg"]).await;
    assert!(ok && out.contains("deleted 1 file(s)"), "{out}");
    let r = server
        .request(
            Method::PUT,
            &server.target("s9/big"),
            &[("authorization", &auth)],
            vec![0; 12],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Deleting what is not there is not an error, and deletes nothing.
    let (ok, out) = files(&server, &["delete", "s1/Grüße (1).jpg"]).await;
    assert!(ok && out.contains("deleted 0 file(s)"), "{out}");
}

#[tokio::test]
async fn works_without_a_running_service() {
    let server = populated().await;
    let (config, clock, data) = server.stop().await;
    let dir = data.unwrap();
    let cfg = config_file(&config, "offline.toml");
    let out = Command::new(BIN)
        .args(["files", "-c", cfg.to_str().unwrap(), "delete", "anon/x.bin"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("deleted 1 file(s)"),
        "{text}"
    );
    let server = Server::start_with(config, clock, Some(dir)).await;
    assert_eq!(server.usage().await.files, 3);
    assert_eq!(
        server.get("anon/x.bin", &[]).await.status,
        StatusCode::NOT_FOUND
    );
}

/// An ejabberd URL with `jid_in_url: node` names only "romeo", which could be
/// any domain's romeo: `--user` leaves it out unless `--by-node` asks for it.
#[tokio::test]
async fn a_bare_node_is_matched_only_when_asked_for() {
    let server = populated().await;
    let node_only = format!("romeo/{RANDOM}/n.txt");
    server.upload(&node_only, b"node").await;
    let other = "romeo@other.example";
    let (ok, out) = files(&server, &["list", "--user", other]).await;
    assert!(ok && out.trim().is_empty(), "{out}");
    let (ok, out) = files(&server, &["delete", "--user", other]).await;
    assert!(ok && out.contains("deleted 0 file(s)"), "{out}");
    assert_eq!(server.get(&node_only, &[]).await.status, StatusCode::OK);

    let (ok, out) = files(&server, &["list", "--user", other, "--by-node"]).await;
    assert!(ok && out.contains(&node_only), "{out}");
    let (ok, out) = files(&server, &["delete", "--user", other, "--by-node"]).await;
    assert!(ok && out.contains("deleted 1 file(s)"), "{out}");
    assert_eq!(
        server.get(&node_only, &[]).await.status,
        StatusCode::NOT_FOUND
    );
    let (ok, out) = files(&server, &["list", "--by-node"]).await;
    assert!(!ok && out.contains("--user"), "{out}");
}

/// How the peak RSS of a command is measured: GNU time, or else Python's
/// wait4 of its one child (CI installs python3; a spawned child's figure
/// includes Python's own image, some 13 MiB, as a floor). Neither: not at all.
fn rss_wrapper() -> Option<Vec<String>> {
    const PYTHON: &str = "import os, sys\n\
        pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)\n\
        _, status, usage = os.wait4(pid, 0)\n\
        sys.stderr.write('peak-rss-kib=%d\\n' % usage.ru_maxrss)\n\
        sys.exit(os.waitstatus_to_exitcode(status))";
    if std::path::Path::new("/usr/bin/time").exists() {
        return Some(vec![
            "/usr/bin/time".into(),
            "-f".into(),
            "peak-rss-kib=%M".into(),
        ]);
    }
    let python = Command::new("python3").arg("-c").arg("pass").status();
    python
        .is_ok_and(|s| s.success())
        .then(|| vec!["python3".into(), "-c".into(), PYTHON.into()])
}

/// [`files`], with the command's peak RSS in KiB where it can be measured.
async fn files_measured(server: &Server, args: &[&str]) -> (bool, String, Option<u64>) {
    files_under(server, &rss_wrapper().unwrap_or_default(), args).await
}

/// The entries of the archive at `path` (gzip-compressed or not), in order:
/// name, bytes, mtime, mode.
fn read_archive(path: &std::path::Path) -> Vec<(String, Vec<u8>, u64, u32)> {
    use std::io::Read;
    let file = std::fs::File::open(path).unwrap();
    let reader: Box<dyn Read> = if path.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let header = entry.header();
        assert_eq!(header.entry_type(), tar::EntryType::Regular, "{name}");
        let (mtime, mode) = (header.mtime().unwrap(), header.mode().unwrap());
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((name, bytes, mtime, mode));
    }
    out
}

/// The names in `dir`, sorted: no temporary may be left beside an archive.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn export_archive_holds_the_json_and_every_file() {
    use std::os::unix::fs::PermissionsExt;
    const DAY: u64 = 86_400;
    let server = Server::start().await;
    let mut big = vec![0u8; 20 << 20];
    rand::fill(&mut big[..]);
    // Two photos of one name on one day, the big one, and Juliet's.
    put_jwt(&server, "s1", "photo.jpg", ROMEO, b"first photo").await;
    put_jwt(
        &server,
        "s2",
        "photo.jpg",
        ROMEO,
        b"second photo, same name",
    )
    .await;
    put_jwt(&server, "s3", "video.mp4", ROMEO, &big).await;
    put_jwt(&server, "s4", "j.jpg", "juliet@capulet.example", b"juliet").await;
    // A day later, two ejabberd uploads of Romeo's (one empty).
    server.clock.advance(std::time::Duration::from_secs(DAY));
    let notes = format!("{ROMEO_SHA1}/{RANDOM}/notes.txt");
    let empty = format!("{ROMEO_SHA1}/{RANDOM}/empty");
    server.upload(&notes, b"ejabber").await;
    server.upload(&empty, b"").await;
    let want: [(&str, &str, &[u8], u64); 5] = [
        (
            "s1/photo.jpg",
            "files/2026-01-01 photo.jpg",
            b"first photo",
            T0,
        ),
        (
            "s2/photo.jpg",
            "files/2026-01-01 photo (2).jpg",
            b"second photo, same name",
            T0,
        ),
        ("s3/video.mp4", "files/2026-01-01 video.mp4", &big, T0),
        (&empty, "files/2026-01-02 empty", b"", T0 + DAY),
        (&notes, "files/2026-01-02 notes.txt", b"ejabber", T0 + DAY),
    ];

    // The JSON alone, for the command's baseline memory.
    let (ok, out, baseline) = files_measured(&server, &["export", "--user", ROMEO]).await;
    assert!(ok, "{out}");
    let dir = common::tempdir();
    for name in ["romeo.tar", "romeo.tar.gz"] {
        let target = dir.path().join(name);
        let target_arg = target.to_str().unwrap();
        let (ok, out, peak) = files_measured(
            &server,
            &["export", "--user", ROMEO, "--archive", target_arg],
        )
        .await;
        assert!(ok, "{out}");
        assert!(
            out.starts_with(&format!("wrote {target_arg}: 5 file(s), 21.0 MB")),
            "{out}"
        );
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: personal data");

        let entries = read_archive(&target);
        let (first, json, _, _) = &entries[0];
        assert_eq!(first, "export.json");
        let export: Value = serde_json::from_slice(json).unwrap();
        assert_eq!(export["user"], ROMEO);
        let listed: Vec<(&str, &str)> = export["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap(),
                    f["archive_name"].as_str().unwrap(),
                )
            })
            .collect();
        let wanted: Vec<(&str, &str)> = want.iter().map(|w| (w.0, w.1)).collect();
        assert_eq!(listed, wanted, "{name}: export.json");
        // The same facts as the JSON export, plus the names in the archive.
        let (ok, plain) = files(&server, &["export", "--user", ROMEO]).await;
        assert!(ok, "{plain}");
        let plain: Value = serde_json::from_str(&plain).unwrap();
        for (archived, plain) in export["files"]
            .as_array()
            .unwrap()
            .iter()
            .zip(plain["files"].as_array().unwrap())
        {
            let mut archived = archived.clone();
            archived.as_object_mut().unwrap().remove("archive_name");
            assert_eq!(&archived, plain, "{name}");
        }

        // Then every file, in that order, and nothing else.
        let files_in: Vec<(&str, &[u8], u64, u32)> = entries[1..]
            .iter()
            .map(|(n, b, t, m)| (n.as_str(), b.as_slice(), *t, *m))
            .collect();
        assert_eq!(files_in.len(), want.len(), "{name}");
        for ((entry, bytes, mtime, mode), (path, archived, body, created)) in
            files_in.into_iter().zip(want)
        {
            assert_eq!(entry, archived, "{name}");
            assert!(bytes == body, "{name}: {path}: bytes differ");
            assert_eq!((mtime, mode), (created, 0o644), "{name}: {path}");
        }
        assert_eq!(
            names_in(dir.path()).last().unwrap(),
            name,
            "a temporary left"
        );

        // Streamed: a file is never held whole (the big one is 20 MiB).
        match (baseline, peak) {
            (Some(baseline), Some(peak)) => {
                println!(
                    "peak RSS of `files export --archive {name}`: {peak} KiB \
                     (JSON only: {baseline} KiB)"
                );
                assert!(
                    peak < baseline + 12 * 1024,
                    "{name}: peak RSS {peak} KiB, {baseline} KiB without the archive"
                );
            }
            _ => println!("peak RSS not measured: neither /usr/bin/time nor python3"),
        }
    }
    assert_eq!(names_in(dir.path()), ["romeo.tar", "romeo.tar.gz"]);
}

#[tokio::test]
async fn export_archive_refuses_to_overwrite() {
    let server = populated().await;
    let dir = common::tempdir();
    let target = dir.path().join("romeo.tar");
    let before = b"somebody's earlier export".to_vec();
    std::fs::write(&target, &before).unwrap();
    let (ok, out) = export_romeo(&server, &target).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{} exists already: not overwritten",
            target.display()
        )),
        "{out}"
    );
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert_eq!(names_in(dir.path()), ["romeo.tar"]);
}

/// A body that changed on disk after its upload (bit rot, tampering) or lost
/// its end: the export names it and leaves nothing behind.
#[tokio::test]
async fn export_archive_detects_a_rotted_file() {
    use std::os::unix::fs::FileExt;
    if common::on_cluster() {
        return; // it alters a body on the file-system store
    }
    let server = Server::start().await;
    put_jwt(&server, "s1", "fine.jpg", ROMEO, b"fine").await;
    let mut rotten = vec![0u8; 1 << 20];
    rand::fill(&mut rotten[..]);
    put_jwt(&server, "s2", "rotten.jpg", ROMEO, &rotten).await;
    put_jwt(&server, "s3", "after.jpg", ROMEO, b"after").await;
    let hex = upslot::store::Key::for_path("s2/rotten.jpg").hex();
    let body = server.data_dir().join("files").join(&hex[..2]).join(&hex);
    let file = std::fs::OpenOptions::new().write(true).open(&body).unwrap();
    let flipped = [rotten[700_000] ^ 0x20];
    file.write_all_at(&flipped, 700_000).unwrap();
    assert_eq!(file.metadata().unwrap().len(), rotten.len() as u64);

    let dir = common::tempdir();
    for name in ["romeo.tar", "romeo.tgz"] {
        let target = dir.path().join(name);
        let (ok, out) = export_romeo(&server, &target).await;
        assert!(!ok, "{out}");
        assert!(
            out.contains("s2/rotten.jpg (files/2026-01-01 rotten.jpg)")
                && out.contains("do not match its stored SHA-256"),
            "{out}"
        );
        assert_eq!(names_in(dir.path()), Vec::<String>::new(), "{name}");
    }

    // Cut short instead: the store has fewer bytes than the metadata says.
    file.write_all_at(&rotten[700_000..700_001], 700_000)
        .unwrap();
    file.set_len(500_000).unwrap();
    let target = dir.path().join("romeo.tar");
    let (ok, out) = export_romeo(&server, &target).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("s2/rotten.jpg (files/2026-01-01 rotten.jpg)")
            && out.contains("of its 1048576 bytes"),
        "{out}"
    );
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
}
