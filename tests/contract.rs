//! One contract that every store and every index must keep (docs/storage.md),
//! run against each: the file system and S3 (a real Garage cluster) for the
//! store, the embedded index and PostgreSQL for the index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use upslot::auth::Scheme;
use upslot::http::body::Segment;
use upslot::index::{Index, IndexError, Intent, LocalIndex, PgIndex, QuotaError, Usage};
use upslot::store::{FsStore, Key, Meta, S3Store, Store};

const NOW: u64 = 1_767_225_600;

fn meta(store: &dyn Store, path: &str, body: &[u8], user: Option<&str>) -> Meta {
    let key = Key::for_path(path);
    Meta {
        path: path.into(),
        name: path.rsplit('/').next().unwrap().into(),
        size: body.len() as u64,
        content_type: "application/octet-stream".into(),
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body)),
        created: NOW,
        expires: NOW + 3600,
        scheme: Scheme::V1,
        uploader: user.map(Into::into),
        object: store.new_object(&key),
    }
}

/// A body with no two equal neighbouring bytes at a 64 KiB boundary.
fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

async fn read(store: &dyn Store, meta: &Meta, segments: Vec<Segment>) -> Option<Vec<u8>> {
    let body = store.read(meta, segments).await.unwrap()?;
    Some(body.collect().await.unwrap().to_bytes().to_vec())
}

fn whole(meta: &Meta) -> Vec<Segment> {
    vec![Segment::Stored {
        offset: 0,
        len: meta.size,
    }]
}

// ---------------------------------------------------------------------------
// The store's contract.

async fn store_contract(store: &dyn Store) {
    assert_eq!(store.check().await, None, "a healthy store is ready");
    assert!(store.scan().await.unwrap().is_empty(), "starts empty");

    // A small file in one piece; a large one streamed in batches.
    let small = body(1000, 1);
    let small_meta = meta(store, "a/small.bin", &small, Some("alice@example.org"));
    store
        .put(
            &small_meta,
            vec![
                Bytes::copy_from_slice(&small[..10]),
                Bytes::copy_from_slice(&small[10..]),
            ],
        )
        .await
        .unwrap();
    let large = body(3 * 1024 * 1024 + 17, 2);
    let large_meta = meta(store, "b/large.bin", &large, None);
    let mut upload = store.create(&large_meta).await.unwrap();
    for batch in large.chunks(200_000) {
        let pieces = batch.chunks(70_000).map(Bytes::copy_from_slice).collect();
        upload.write(pieces).await.unwrap();
    }
    upload.commit(&large_meta).await.unwrap();
    let empty_meta = meta(store, "c/empty.txt", b"", None);
    let upload = store.create(&empty_meta).await.unwrap();
    upload.commit(&empty_meta).await.unwrap();

    assert_eq!(
        read(store, &small_meta, whole(&small_meta)).await.unwrap(),
        small
    );
    assert_eq!(
        read(store, &large_meta, whole(&large_meta)).await.unwrap(),
        large
    );
    assert_eq!(
        read(store, &empty_meta, whole(&empty_meta)).await.unwrap(),
        b""
    );

    // Ranges, with literal pieces between them, in order.
    let segments = vec![
        Segment::Bytes(Bytes::from_static(b"<")),
        Segment::Stored { offset: 5, len: 10 },
        Segment::Bytes(Bytes::from_static(b"|")),
        Segment::Stored {
            offset: 2_000_000,
            len: large.len() as u64 - 2_000_000,
        },
        Segment::Bytes(Bytes::from_static(b">")),
    ];
    let mut want = b"<".to_vec();
    want.extend_from_slice(&large[5..15]);
    want.push(b'|');
    want.extend_from_slice(&large[2_000_000..]);
    want.push(b'>');
    assert_eq!(read(store, &large_meta, segments).await.unwrap(), want);

    // An upload dropped before its commit leaves nothing anyone can see.
    let dropped = body(500_000, 3);
    let dropped_meta = meta(store, "d/dropped.bin", &dropped, None);
    let mut upload = store.create(&dropped_meta).await.unwrap();
    upload
        .write(vec![Bytes::copy_from_slice(&dropped[..400_000])])
        .await
        .unwrap();
    drop(upload);
    // A whole body whose commit never came leaves nothing either.
    let whole_meta = meta(store, "d/uncommitted.bin", &dropped, None);
    let mut upload = store.create(&whole_meta).await.unwrap();
    upload
        .write(vec![Bytes::copy_from_slice(&dropped)])
        .await
        .unwrap();
    drop(upload);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(read(store, &dropped_meta, whole(&dropped_meta)).await, None);
    assert_eq!(read(store, &whole_meta, whole(&whole_meta)).await, None);

    // The store alone tells what it holds, metadata and all.
    let mut scanned = store.scan().await.unwrap();
    scanned.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        scanned,
        vec![small_meta.clone(), large_meta.clone(), empty_meta.clone()]
    );

    // Deleted is gone, and deleting again is no error.
    store.delete(&small_meta).await.unwrap();
    assert_eq!(read(store, &small_meta, whole(&small_meta)).await, None);
    store.delete(&small_meta).await.unwrap();
    store.erase(&large_meta).await.unwrap();
    store.delete(&empty_meta).await.unwrap();
    assert!(store.scan().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_file_system_store_keeps_the_contract() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = FsStore::open(dir.path(), true, 0).unwrap();
    store_contract(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s3_store_keeps_the_contract_on_garage() {
    if !backends::garage_available() {
        return;
    }
    let garage = backends::Garage::start();
    let upslot::config::Storage::S3(s3) = garage.storage(0, "contract/") else {
        unreachable!()
    };
    let store = S3Store::new(&s3).unwrap();
    store_contract(&store).await;
}

// ---------------------------------------------------------------------------
// The index's contract.

fn file(path: &str, size: u64, expires: u64, user: Option<&str>, scheme: Scheme) -> Meta {
    Meta {
        path: path.into(),
        name: path.rsplit('/').next().unwrap().into(),
        size,
        content_type: "text/plain".into(),
        sha256: "00".repeat(32),
        created: NOW,
        expires,
        scheme,
        uploader: user.map(Into::into),
        object: format!("{}.0", Key::for_path(path).hex()),
    }
}

fn intent<'a>(meta: &'a Meta, slot: Option<&'a str>, now: u64) -> Intent<'a> {
    Intent {
        key: meta.key(),
        path: &meta.path,
        object: &meta.object,
        jwt_slot: slot,
        size: meta.size,
        uploader: meta.uploader.as_deref(),
        now,
    }
}

async fn store_file(index: &dyn Index, meta: &Meta) {
    let ticket = index
        .begin(intent(meta, meta.jwt_slot(), NOW))
        .await
        .unwrap();
    index.commit(ticket, meta).await.unwrap();
}

/// A claim given back (a dropped ticket) frees its path and its reservation,
/// at once or, for an index that gives back in the background, shortly.
async fn begin_eventually(index: &dyn Index, meta: &Meta) -> upslot::index::Ticket {
    for _ in 0..200 {
        match index.begin(intent(meta, None, NOW)).await {
            Ok(ticket) => return ticket,
            Err(IndexError::Exists | IndexError::Quota(_)) => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the claim on {} was never given back", meta.path);
}

type Later<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T>>>;

/// `fresh(total, per_user)` is an empty index with those quotas.
async fn index_contract(fresh: &dyn Fn(u64, u64) -> Later<Arc<dyn Index>>) {
    // Claims: one per path, given back when dropped; a stored file holds its path.
    let index = fresh(0, 0).await;
    let a = file("s/a.txt", 10, NOW + 100, Some("alice"), Scheme::V1);
    let ticket = index.begin(intent(&a, None, NOW)).await.unwrap();
    assert!(matches!(
        index.begin(intent(&a, None, NOW)).await,
        Err(IndexError::Exists)
    ));
    assert_eq!(
        index.get(&a.key()).await.unwrap(),
        None,
        "not visible before its commit"
    );
    drop(ticket);
    let ticket = begin_eventually(&*index, &a).await;
    index.commit(ticket, &a).await.unwrap();
    assert_eq!(index.get(&a.key()).await.unwrap().as_deref(), Some(&a));
    assert!(matches!(
        index.begin(intent(&a, None, NOW)).await,
        Err(IndexError::Exists)
    ));
    let stats = index.stats().await.unwrap();
    assert_eq!(
        stats.usage,
        Usage {
            files: 1,
            bytes: 10
        }
    );
    assert_eq!(stats.reserved, 0);
    assert_eq!(stats.oldest_created, Some(NOW));
    assert_eq!(stats.next_expiry, Some(NOW + 100));

    // Past its expiry the path is free again, and the ticket hands the old file over.
    let ticket = index.begin(intent(&a, None, NOW + 100)).await.unwrap();
    assert_eq!(ticket.replaced.as_deref(), Some(&a));
    assert_eq!(index.stats().await.unwrap().usage, Usage::default());
    drop(ticket);

    // A JWT slot holds one file, whatever its name, and one upload at a time.
    let index = fresh(0, 0).await;
    let j1 = file("slot/one.txt", 1, NOW + 100, None, Scheme::Jwt);
    let j2 = file("slot/two.txt", 1, NOW + 100, None, Scheme::Jwt);
    let ticket = index.begin(intent(&j1, Some("slot"), NOW)).await.unwrap();
    assert!(matches!(
        index.begin(intent(&j2, Some("slot"), NOW)).await,
        Err(IndexError::Exists)
    ));
    index.commit(ticket, &j1).await.unwrap();
    assert!(matches!(
        index.begin(intent(&j2, Some("slot"), NOW)).await,
        Err(IndexError::Exists)
    ));

    // Quotas count what is stored and what is reserved, in all and per user.
    let index = fresh(100, 60).await;
    let f1 = file("q/1", 50, NOW + 100, Some("alice"), Scheme::V1);
    let f2 = file("q/2", 20, NOW + 100, Some("alice"), Scheme::V1);
    let f3 = file("q/3", 50, NOW + 100, Some("bob"), Scheme::V1);
    let f4 = file("q/4", 1, NOW + 100, None, Scheme::V1);
    let t1 = index.begin(intent(&f1, None, NOW)).await.unwrap();
    assert!(matches!(
        index.begin(intent(&f2, None, NOW)).await,
        Err(IndexError::Quota(QuotaError::User))
    ));
    let t3 = index.begin(intent(&f3, None, NOW)).await.unwrap();
    assert!(matches!(
        index.begin(intent(&f4, None, NOW)).await,
        Err(IndexError::Quota(QuotaError::Total))
    ));
    assert_eq!(index.stats().await.unwrap().reserved, 100);
    index.commit(t1, &f1).await.unwrap();
    drop(t3);
    let t4 = begin_eventually(&*index, &f4).await;
    index.commit(t4, &f4).await.unwrap();
    let stats = index.stats().await.unwrap();
    assert_eq!(
        stats.usage,
        Usage {
            files: 2,
            bytes: 51
        }
    );
    assert_eq!(stats.reserved, 0);

    // Removal: only the file expected, and counted out once.
    let other = file("q/1", 50, NOW + 999, Some("alice"), Scheme::V1);
    assert_eq!(index.remove(&f1.key(), Some(&other)).await.unwrap(), None);
    assert_eq!(
        index.remove(&f1.key(), Some(&f1)).await.unwrap().as_deref(),
        Some(&f1)
    );
    assert_eq!(index.remove(&f1.key(), None).await.unwrap(), None);
    assert_eq!(
        index.stats().await.unwrap().usage,
        Usage { files: 1, bytes: 1 }
    );

    // Adopting what a store holds: once per path.
    assert!(index.adopt(f3.clone()).await.unwrap());
    assert!(!index.adopt(f3.clone()).await.unwrap());
    let mut listed: Vec<String> = index
        .list()
        .await
        .unwrap()
        .iter()
        .map(|m| m.path.clone())
        .collect();
    listed.sort();
    assert_eq!(listed, ["q/3", "q/4"]);

    // Due files come out soonest first, each for exactly one taker.
    let index = fresh(0, 0).await;
    for i in 0..40u64 {
        store_file(
            &*index,
            &file(&format!("e/{i}"), 1, NOW + 10 + (i % 7), None, Scheme::V1),
        )
        .await;
    }
    store_file(&*index, &file("e/late", 1, NOW + 1000, None, Scheme::V1)).await;
    assert!(index.take_due(NOW + 9, 100).await.unwrap().is_empty());
    let (first, second) = tokio::join!(index.take_due(NOW + 20, 15), index.take_due(NOW + 20, 15));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(first.windows(2).all(|w| w[0].expires <= w[1].expires));
    let rest = index.take_due(NOW + 20, 100).await.unwrap();
    let mut taken: Vec<String> = first
        .iter()
        .chain(&second)
        .chain(&rest)
        .map(|m| m.path.clone())
        .collect();
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 40, "every due file once");
    assert_eq!(first.len() + second.len() + rest.len(), 40, "none twice");
    assert_eq!(
        index.stats().await.unwrap().usage,
        Usage { files: 1, bytes: 1 }
    );
}

#[tokio::test]
async fn the_embedded_index_keeps_the_contract() {
    index_contract(&|total, per_user| {
        Box::pin(async move { Arc::new(LocalIndex::new(total, per_user)) as Arc<dyn Index> })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_index_keeps_the_contract() {
    let pg = Arc::new(backends::Postgres::start());
    index_contract(&|total, per_user| {
        let pg = Arc::clone(&pg);
        Box::pin(async move {
            pg.clear().await;
            let index = PgIndex::connect(&pg.url, total, per_user, "contract")
                .await
                .unwrap();
            Arc::new(index) as Arc<dyn Index>
        })
    })
    .await;
}

/// The sweep deletes objects the index does not know (a crash between an
/// upload's body and its index entry, a failed deletion) and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_deletes_only_the_objects_nobody_knows() {
    if !backends::garage_available() {
        return;
    }
    let garage = backends::Garage::start();
    let upslot::config::Storage::S3(s3) = garage.storage(0, "sweep/") else {
        unreachable!()
    };
    let store = Arc::new(S3Store::new(&s3).unwrap());
    let catalog = upslot::catalog::Catalog::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::new(LocalIndex::new(0, 0)),
    );
    let known = meta(&*store, "k/known.txt", b"known", None);
    store
        .put(&known, vec![Bytes::from_static(b"known")])
        .await
        .unwrap();
    assert!(catalog.index.adopt(known.clone()).await.unwrap());
    let stray = meta(&*store, "s/stray.txt", b"stray", None);
    store
        .put(&stray, vec![Bytes::from_static(b"stray")])
        .await
        .unwrap();
    // A second object for the known path: an earlier upload's, never recorded.
    let mut shadow = known.clone();
    shadow.object = store.new_object(&known.key());
    store
        .put(&shadow, vec![Bytes::from_static(b"known")])
        .await
        .unwrap();

    // Nothing is old enough yet.
    assert_eq!(catalog.sweep(NOW, 3600).await.unwrap(), 0);
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2 * 3600;
    assert_eq!(catalog.sweep(later, 3600).await.unwrap(), 2);
    let name = format!("sweep/{}", known.object);
    let want = vec![name.clone(), format!("{name}.meta")];
    // Garage's listing may show a just-deleted object for a moment.
    let mut left = Vec::new();
    for _ in 0..100 {
        left = store.object_names().await.unwrap();
        left.sort();
        if left == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, want);
    assert_eq!(
        read(&*store, &known, whole(&known)).await.unwrap(),
        b"known"
    );
}
