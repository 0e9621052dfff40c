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

/// One pass: deletes everything due at the clock's current time.
pub async fn pass(app: &App) -> io::Result<u64> {
    let now = app.clock.unix();
    let mut deleted = 0;
    loop {
        let due = app.index.take_due(now, BATCH);
        if due.is_empty() {
            break;
        }
        // Holding the upload claim keeps a new upload from landing on a path
        // between the expiry check and the delete.
        let claimed: Vec<_> = due
            .into_iter()
            .filter_map(|(_, key)| app.claim(key).map(|claim| (key, claim)))
            .collect();
        let store = Arc::clone(&app.store);
        let index = Arc::clone(&app.index);
        deleted += spawn_blocking(move || delete_expired(&*store, &index, &claimed, now))
            .await
            .map_err(io::Error::other)??;
        app.reaper_heartbeat
            .store(app.clock.unix(), Ordering::Relaxed);
        tokio::task::yield_now().await;
    }
    app.metrics.expired_deleted.inc_by(deleted);
    app.metrics.reaper_last_run.set(now as f64);
    app.reaper_heartbeat.fetch_max(now, Ordering::Relaxed);
    Ok(deleted)
}

fn delete_expired<C>(
    store: &dyn Store,
    index: &Index,
    due: &[(Key, C)],
    now: u64,
) -> io::Result<u64> {
    let mut deleted = 0;
    for (key, _claim) in due {
        // Gone already, or replaced by a newer upload with its own entry.
        let Some(meta) = store.meta(key)? else {
            continue;
        };
        if meta.is_expired(now) && store.delete(key)? {
            index.removed(&meta);
            deleted += 1;
        }
    }
    Ok(deleted)
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
