//! A request that goes away while its file is being committed (client gone, an
//! HTTP/2 stream reset, shutdown): the commit still runs to its end on the
//! blocking pool, so the file and the index entry that quotas and the reaper go
//! by must land together. The real store, with each commit held at its start
//! until the test lets it go, makes that moment exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{SECRET, T0, test_config};
use http::{Method, StatusCode};
use support::{Raw, body, put_head, wait_for};
use upslot::app::App;
use upslot::auth::{Scheme, Verifier, sign_query};
use upslot::catalog::Catalog;
use upslot::clock::ManualClock;
use upslot::http::body::{Body, Segment};
use upslot::index::{LocalIndex, Usage};
use upslot::path::SlotPath;
use upslot::store::{CommitError, CreateError, FsStore, Key, Meta, Store, StoreError, Upload};

const WEEK: u64 = 7 * 24 * 3600;

/// Tells the test that a commit began, then waits for its word to go on.
#[derive(Clone)]
struct Gate {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>>,
}

impl Gate {
    async fn pass(&self) -> io::Result<()> {
        let _ = self.entered.send(());
        let mut release = self.release.lock().await;
        match tokio::time::timeout(Duration::from_secs(30), release.recv()).await {
            Ok(Some(())) => Ok(()),
            _ => Err(io::Error::other("the test never released the commit")),
        }
    }
}

struct Gated {
    inner: FsStore,
    gate: Gate,
}

struct GatedUpload {
    inner: Box<dyn Upload>,
    gate: Gate,
}

#[async_trait]
impl Upload for GatedUpload {
    async fn write(&mut self, chunks: Vec<Bytes>) -> io::Result<Vec<Bytes>> {
        self.inner.write(chunks).await
    }

    async fn commit(self: Box<Self>, meta: &Meta) -> Result<(), CommitError> {
        self.gate.pass().await?;
        self.inner.commit(meta).await
    }
}

#[async_trait]
impl Store for Gated {
    fn new_object(&self, key: &Key) -> String {
        self.inner.new_object(key)
    }
    async fn create(&self, meta: &Meta) -> Result<Box<dyn Upload>, CreateError> {
        Ok(Box::new(GatedUpload {
            inner: self.inner.create(meta).await?,
            gate: self.gate.clone(),
        }))
    }
    async fn put(&self, meta: &Meta, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        self.gate.pass().await?;
        self.inner.put(meta, chunks).await
    }
    async fn read(&self, meta: &Meta, segments: Vec<Segment>) -> io::Result<Option<Body>> {
        self.inner.read(meta, segments).await
    }
    async fn delete(&self, meta: &Meta) -> io::Result<bool> {
        self.inner.delete(meta).await
    }
    async fn scan(&self) -> io::Result<Vec<Meta>> {
        self.inner.scan().await
    }
    async fn check(&self) -> Option<String> {
        self.inner.check().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_during_its_commit_leaves_a_counted_file() {
    let (config, _dir) = test_config();
    let (entered, mut commits) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = tokio::sync::mpsc::unbounded_channel();
    let store = Gated {
        inner: FsStore::open(&config.data_dir, config.fsync, 0).unwrap(),
        gate: Gate {
            entered,
            release: Arc::new(tokio::sync::Mutex::new(released)),
        },
    };
    let verifier = Verifier::new(SECRET.as_bytes(), &config.schemes).unwrap();
    let clock = ManualClock::at(T0);
    let catalog = Catalog::new(Arc::new(store), Arc::new(LocalIndex::new(0, 0)));
    let app = Arc::new(App::new(config.clone(), catalog, verifier, clock.clone()));
    let usage = || async { app.catalog.index.stats().await.unwrap().usage };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(upslot::server::serve(
        Arc::clone(&app),
        listener,
        None,
        std::future::pending(),
    ));

    // One body small enough for the single-trip path, one streamed.
    let sizes = [1_000usize, 300_000];
    let mut stored = Usage::default();
    for (i, size) in sizes.into_iter().enumerate() {
        let path = format!("dropped/{i}.bin");
        let target = format!("{}{}", config.base_path, SlotPath::encode(&path));
        let query = sign_query(Scheme::V1, SECRET.as_bytes(), &path, size as u64, None).unwrap();
        let data = body(size, i as u8);
        let mut raw = Raw::connect(addr).await;
        assert!(
            raw.send(&put_head(&format!("{target}?{query}"), size as u64, &[]))
                .await
        );
        assert!(raw.send(&data).await);
        tokio::time::timeout(Duration::from_secs(30), commits.recv())
            .await
            .expect("the commit begins")
            .unwrap();
        // The client goes; hyper drops the request's future.
        raw.half_close().await;
        drop(raw);
        wait_for("the request to be dropped", || {
            app.metrics.uploads_in_flight.get() == 0
        })
        .await;
        release.send(()).unwrap();
        stored.files += 1;
        stored.bytes += size as u64;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while usage().await != stored {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the index to count the file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = common::request(addr, Method::GET, &target, &[], Vec::new()).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert!(got.body[..] == data[..], "{path}");
    }

    // Counted, so the reaper knows of them too.
    clock.set(T0 + WEEK);
    assert_eq!(upslot::reaper::pass(&app).await.unwrap(), 2);
    assert_eq!(usage().await, Usage::default());
    assert!(common::walk(&config.data_dir.join("files")).is_empty());
    server.abort();
}
