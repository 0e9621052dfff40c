//! A request that goes away while its file is being committed (client gone, an
//! HTTP/2 stream reset, shutdown): the commit still runs to its end on the
//! blocking pool, so the file and the index entry that quotas and the reaper go
//! by must land together. The real store, with each commit held at its start
//! until the test lets it go, makes that moment exact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod support;

use std::io;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{SECRET, T0, test_config};
use http::{Method, StatusCode};
use support::{Raw, body, put_head, wait_for};
use upslot::app::App;
use upslot::auth::{Scheme, Verifier, sign_query};
use upslot::clock::ManualClock;
use upslot::index::{Index, Usage};
use upslot::path::SlotPath;
use upslot::store::{CommitError, FsStore, Key, Meta, Pending, Store};

const WEEK: u64 = 7 * 24 * 3600;

/// Tells the test that a commit began, then waits for its word to go on.
#[derive(Clone)]
struct Gate {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<Mutex<mpsc::Receiver<()>>>,
}

struct Gated {
    inner: FsStore,
    gate: Gate,
}

struct GatedPending {
    inner: Box<dyn Pending>,
    gate: Gate,
}

impl Pending for GatedPending {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write(buf)
    }

    fn commit(self: Box<Self>, meta: &Meta) -> Result<(), CommitError> {
        let _ = self.gate.entered.send(());
        let released = self
            .gate
            .release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
        released.map_err(|_| io::Error::other("the test never released the commit"))?;
        self.inner.commit(meta)
    }
}

impl Store for Gated {
    fn meta(&self, key: &Key) -> io::Result<Option<Arc<Meta>>> {
        self.inner.meta(key)
    }
    fn cached(&self, key: &Key) -> Option<Arc<Meta>> {
        self.inner.cached(key)
    }
    fn open(&self, key: &Key) -> io::Result<Option<(Arc<Meta>, std::fs::File)>> {
        self.inner.open(key)
    }
    fn open_body(&self, key: &Key) -> io::Result<Option<std::fs::File>> {
        self.inner.open_body(key)
    }
    fn create(&self, key: &Key) -> io::Result<Box<dyn Pending>> {
        Ok(Box::new(GatedPending {
            inner: self.inner.create(key)?,
            gate: self.gate.clone(),
        }))
    }
    fn delete(&self, key: &Key) -> io::Result<bool> {
        self.inner.delete(key)
    }
    fn forget(&self, key: &Key) {
        self.inner.forget(key)
    }
    fn available_space(&self) -> io::Result<u64> {
        self.inner.available_space()
    }
    fn for_each(&self, f: &mut dyn FnMut(Meta)) -> io::Result<()> {
        self.inner.for_each(f)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_during_its_commit_leaves_a_counted_file() {
    let (config, _dir) = test_config();
    let (entered, mut commits) = tokio::sync::mpsc::unbounded_channel();
    let (release, released) = mpsc::channel();
    let store = Gated {
        inner: FsStore::open(&config.data_dir, config.fsync).unwrap(),
        gate: Gate {
            entered,
            release: Arc::new(Mutex::new(released)),
        },
    };
    let verifier = Verifier::new(SECRET.as_bytes(), &config.schemes).unwrap();
    let clock = ManualClock::at(T0);
    let app = Arc::new(App::new(
        config.clone(),
        Arc::new(store),
        Arc::new(Index::new(0, 0)),
        verifier,
        clock.clone(),
    ));
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
        wait_for("the index to count the file", || {
            app.index.usage() == stored
        })
        .await;
        let got = common::request(addr, Method::GET, &target, &[], Vec::new()).await;
        assert_eq!(got.status, StatusCode::OK, "{path}");
        assert!(got.body[..] == data[..], "{path}");
    }

    // Counted, so the reaper knows of them too.
    clock.set(T0 + WEEK);
    assert_eq!(upslot::reaper::pass(&app).await.unwrap(), 2);
    assert_eq!(app.index.usage(), Usage::default());
    assert!(common::walk(&config.data_dir.join("files")).is_empty());
    server.abort();
}
