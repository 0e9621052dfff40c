//! Stopping and starting (DESIGN §4): files survive a restart byte for byte and
//! header for header, start-up removes what interrupted uploads left, and a
//! graceful shutdown finishes what it can and leaves nothing partial behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::time::Duration;

use common::{Server, T0};
use http::{Method, StatusCode};
use support::{
    Raw, body, pending_files, put_head, store_files, v1_target, wait_for_upload_under_way,
    wait_until,
};
use upslot::auth::{JwtSlot, Scheme, sign_jwt};

/// Headers that describe the stored file (everything but `date`).
const DESCRIBING: &[&str] = &[
    "content-type",
    "content-length",
    "content-disposition",
    "etag",
    "last-modified",
    "cache-control",
    "accept-ranges",
];

/// Status, describing headers and body of a GET.
type Snapshot = (StatusCode, Vec<Option<String>>, Vec<u8>);

/// The [`Snapshot`] of `path`.
async fn snapshot(server: &Server, path: &str) -> Snapshot {
    let r = server.get(path, &[]).await;
    let headers = DESCRIBING
        .iter()
        .map(|h| r.header(h).map(str::to_owned))
        .collect();
    (r.status, headers, r.body.to_vec())
}

/// Uploads one file per scheme family; returns their paths.
async fn upload_some(server: &Server) -> Vec<&'static str> {
    server.upload("u1/notes.txt", b"plain text notes").await;

    let png = body(40_000, 1);
    let target = server.signed_target(
        Scheme::V2,
        "u2/pic.png",
        png.len() as u64,
        Some("image/png"),
    );
    let r = server
        .request(Method::PUT, &target, &[("content-type", "image/png")], png)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let pdf = body(12_345, 2);
    let claims = JwtSlot {
        slot: "s1".into(),
        filesize: pdf.len() as u64,
        exp: T0 + 300,
        iat: Some(T0),
        filename: Some("doc.pdf".into()),
        filetype: Some("application/pdf".into()),
        sub: Some("romeo@example.org".into()),
        expires: Some(T0 + 86_400),
    };
    let auth = format!("Bearer {}", sign_jwt(server.secret(), &claims).unwrap());
    let r = server
        .request(
            Method::PUT,
            &server.target("s1/doc.pdf"),
            &[("authorization", &auth)],
            pdf,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    vec!["u1/notes.txt", "u2/pic.png", "s1/doc.pdf"]
}

/// [`snapshot`]s of `paths`, each of them served.
async fn snapshots(server: &Server, paths: &[&str]) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for path in paths {
        let snap = snapshot(server, path).await;
        assert_eq!(snap.0, StatusCode::OK, "{path}");
        out.push(snap);
    }
    out
}

/// Asserts that `paths` are served as `before`.
async fn served_as_before(server: &Server, paths: &[&str], before: &[Snapshot]) {
    for (path, want) in paths.iter().zip(before) {
        let got = snapshot(server, path).await;
        assert_eq!(got.0, want.0, "{path}: status");
        assert_eq!(got.1, want.1, "{path}: headers");
        assert!(got.2 == want.2, "{path}: body differs after restart");
    }
}

#[tokio::test]
async fn files_survive_a_restart() {
    let server = Server::start().await;
    let paths = upload_some(&server).await;
    let before = snapshots(&server, &paths).await;
    let stored = server.stored().await;
    let held = server.leftovers().await;
    assert_eq!(stored.len(), paths.len(), "one file per upload");
    let (config, clock, data) = server.stop().await;

    let server = Server::start_with(config, clock, data).await;
    served_as_before(&server, &paths, &before).await;
    assert_eq!(server.stored().await, stored, "the store changed");
    assert_eq!(server.leftovers().await, held);
    // Still taken after the restart.
    let r = server.put_v1("u1/notes.txt", b"plain text notes").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

/// What a crash leaves in the data directory (temporaries, a body without
/// metadata, the earlier layout's metadata file) is dealt with at start-up.
#[tokio::test]
async fn files_survive_a_restart_and_leftovers_do_not() {
    if common::on_cluster() {
        return; // about the file-system store: its tmp/ and files/ on local disk
    }
    let server = Server::start().await;
    let paths = upload_some(&server).await;
    let before = snapshots(&server, &paths).await;
    let (config, clock, data) = server.stop().await;

    // What a crash mid-upload leaves: a body and metadata under temporary names.
    let tmp = config.data_dir.join("tmp");
    let leftover = format!("{}.00000000deadbeef", "ab".repeat(32));
    std::fs::write(tmp.join(&leftover), b"half a body").unwrap();
    std::fs::write(tmp.join(format!("{leftover}.meta")), b"{\"path\":").unwrap();
    // A body without metadata, which a crash in the earlier layout's commit
    // (metadata in a file beside the body) could leave: nobody can see it.
    let orphan = config.data_dir.join("files/cd").join("cd".repeat(32));
    std::fs::write(&orphan, b"a body without metadata").unwrap();
    let stored = store_files(&config.data_dir)
        .into_iter()
        .filter(|p| !p.starts_with(&tmp) && *p != orphan)
        .collect::<Vec<_>>();
    assert_eq!(stored.len(), paths.len(), "one file per upload: {stored:?}");
    // Not ours (no 64-hex name): start-up leaves it alone.
    let foreign = config.data_dir.join("files/ab/README");
    std::fs::write(&foreign, b"an operator's note").unwrap();
    // A file stored in that earlier layout: its metadata in `<body>.meta`.
    let old_layout = stored[0].with_extension("meta");
    std::fs::write(&old_layout, common::stored_meta(&stored[0]).to_string()).unwrap();
    rustix::fs::removexattr(&stored[0], "user.upslot").unwrap();

    let server = Server::start_with(config, clock, data).await;
    assert!(
        pending_files(server.data_dir()).is_empty(),
        "start-up left {:?}",
        pending_files(server.data_dir())
    );
    served_as_before(&server, &paths, &before).await;
    assert!(!orphan.exists(), "start-up kept a body without metadata");
    assert!(!old_layout.exists(), "start-up left the old metadata file");
    assert!(
        foreign.exists(),
        "start-up removed a file that is not an upload"
    );
    std::fs::remove_file(&foreign).unwrap();
    assert_eq!(store_files(server.data_dir()), stored);
    // Still taken after the restart.
    let r = server.put_v1("u1/notes.txt", b"plain text notes").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
}

/// An upload that stalls mid-body does not hold shutdown past
/// `shutdown_timeout`, and what it had written is removed.
#[tokio::test]
async fn shutdown_aborts_a_stalled_upload_and_leaves_nothing() {
    let server = Server::start_config(|c| c.shutdown_timeout = Duration::from_secs(1)).await;
    server
        .upload("u1/kept.txt", b"complete before shutdown")
        .await;
    let complete = server.leftovers().await;
    let data = body(3 << 20, 3);
    let target = v1_target(&server, "u1/stalled.bin", data.len() as u64);
    let received = server.received();
    let mut raw = Raw::connect(server.addr).await;
    assert!(raw.send(&put_head(&target, data.len() as u64, &[])).await);
    assert!(raw.send(&data[..1 << 20]).await);
    wait_for_upload_under_way(&server, received, 1 << 20).await;

    let (config, clock, dir) = tokio::time::timeout(Duration::from_secs(20), server.stop())
        .await
        .expect("stop() returns although an upload is stalled");
    // The connection was cut without a 201.
    if let Some(r) = raw.read_response().await {
        assert_ne!(r.status, 201, "{}", r.head);
    }
    wait_until("the aborted upload to be removed", || async {
        common::leftovers(&config).await == complete
    })
    .await;

    // And after a restart only the complete file is there.
    let server = Server::start_with(config, clock, dir).await;
    assert_eq!(server.leftovers().await, complete);
    assert_eq!(
        server.get("u1/stalled.bin", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        &server.get("u1/kept.txt", &[]).await.body[..],
        b"complete before shutdown"
    );
}

/// An upload in flight when shutdown begins may still finish (within
/// `shutdown_timeout`): it gets its 201 and the file is there after a restart.
#[tokio::test]
async fn shutdown_lets_an_upload_in_flight_finish() {
    let server = Server::start().await;
    let addr = server.addr;
    let data = body(300_000, 4);
    let target = v1_target(&server, "u1/inflight.bin", data.len() as u64);
    let received = server.received();
    let mut raw = Raw::connect(addr).await;
    assert!(raw.send(&put_head(&target, data.len() as u64, &[])).await);
    assert!(raw.send(&data[..100_000]).await);
    wait_for_upload_under_way(&server, received, 100_000).await;

    let stopping = tokio::spawn(server.stop());
    // Shutdown has begun once the listener is gone.
    wait_until("the listener to close after stop()", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;

    assert!(raw.send(&data[100_000..]).await);
    let r = raw.read_response().await.expect("an answer");
    assert_eq!(r.status, 201, "{}", r.head);
    let (config, clock, dir) = tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("stop() returns once the upload is done")
        .unwrap();
    assert_eq!(common::pending(&config).await, Vec::<String>::new());

    let server = Server::start_with(config, clock, dir).await;
    assert!(server.get("u1/inflight.bin", &[]).await.body[..] == data[..]);
}
