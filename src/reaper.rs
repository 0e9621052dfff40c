//! Deletes files once they expire (DESIGN §4): body, metadata and index entry.
//!
//! Each pass takes due entries from the in-memory index in small batches, each
//! batch one trip to the blocking pool, yielding between batches so that a large
//! reap never holds up requests. Serving does not depend on the reaper: an expired
//! file is 404 from its first expired second.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::spawn_blocking;

use crate::app::App;
use crate::index::Index;
use crate::store::{Key, Store};

/// Files deleted per trip to the blocking pool.
const BATCH: usize = 256;

/// Runs passes every `reap_interval` until the task is dropped.
pub async fn run(app: Arc<App>) {
    let mut ticks = tokio::time::interval(app.config.reap_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match pass(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired files deleted"),
            Err(e) => tracing::error!(error = %e, "reaper pass failed"),
        }
    }
}

/// One pass: deletes everything due at the clock's current time. An entry whose
/// path an upload holds (that upload may still fail and leave the expired file
/// where it is), or whose deletion failed, is tried again next pass.
pub async fn pass(app: &App) -> io::Result<u64> {
    let now = app.clock.unix();
    let mut deleted = 0;
    // Put back after the pass, not at once, so that this pass does not take
    // them again.
    let mut later = Vec::new();
    let mut first_error = None;
    loop {
        let due = app.index.take_due(now, BATCH);
        if due.is_empty() {
            break;
        }
        // Holding the upload claim keeps a new upload from landing on a path
        // between the expiry check and the delete.
        let mut claimed = Vec::with_capacity(due.len());
        for entry in due {
            match app.claim(entry.1) {
                Some(claim) => claimed.push((entry, claim)),
                None => later.push(entry),
            }
        }
        let store = Arc::clone(&app.store);
        let index = Arc::clone(&app.index);
        let batch = spawn_blocking(move || delete_expired(&*store, &index, claimed, now))
            .await
            .map_err(io::Error::other)?;
        deleted += batch.deleted;
        later.extend(batch.failed);
        first_error = first_error.or(batch.first_error);
        app.reaper_heartbeat
            .store(app.clock.unix(), Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
    if let Some(e) = first_error {
        tracing::error!(error = %e, "an expired file could not be deleted; trying again next pass");
    }
    app.index.put_back(later);
    app.metrics.expired_deleted.inc_by(deleted);
    app.metrics.reaper_last_run.set(now as f64);
    app.reaper_heartbeat.fetch_max(now, Ordering::Relaxed);
    Ok(deleted)
}

struct Batch {
    deleted: u64,
    failed: Vec<(u64, Key)>,
    first_error: Option<io::Error>,
}

/// Deletes what is still expired; an error costs only its own entry.
fn delete_expired<C>(
    store: &dyn Store,
    index: &Index,
    due: Vec<((u64, Key), C)>,
    now: u64,
) -> Batch {
    let mut batch = Batch {
        deleted: 0,
        failed: Vec::new(),
        first_error: None,
    };
    for (entry, _claim) in due {
        let key = &entry.1;
        let outcome = store.meta(key).and_then(|meta| match meta {
            // Gone already, or replaced by a newer upload with its own entry.
            Some(meta) if meta.is_expired(now) => Ok(store.delete(key)?.then_some(meta)),
            _ => Ok(None),
        });
        match outcome {
            Ok(Some(meta)) => {
                index.removed(&meta);
                batch.deleted += 1;
            }
            Ok(None) => {}
            Err(e) => {
                batch.failed.push(entry);
                batch.first_error.get_or_insert(e);
            }
        }
    }
    batch
}

/// Removes what expired while the service was down, before it starts serving.
pub fn sweep_at_start(store: &dyn Store, index: &Index, now: u64) -> io::Result<u64> {
    let expired = index.load(store, now)?;
    let mut deleted = 0;
    for meta in expired {
        if store.delete(&meta.key())? {
            deleted += 1;
        }
    }
    Ok(deleted)
}
