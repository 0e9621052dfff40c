//! Deletes files once they expire (DESIGN §4): body, metadata and index entry.
//!
//! Each pass takes due files from the index in batches ([`Catalog::reap`]),
//! yielding between batches so that a large reap never holds up requests.
//! Serving does not depend on the reaper: an expired file is 404 from its first
//! expired second.
//!
//! [`Catalog::reap`]: crate::catalog::Catalog::reap

use std::io;
use std::sync::atomic::Ordering;

use crate::app::App;

/// Files deleted per batch.
const BATCH: usize = 256;
/// How often the store is swept for objects nobody knows, and how old such an
/// object must be (see `Catalog::sweep`).
const SWEEP_EVERY: u64 = 3600;

/// Runs passes every `reap_interval` until the task is dropped.
pub async fn run(app: std::sync::Arc<App>) {
    let mut ticks = tokio::time::interval(app.config.reap_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept = app.clock.unix();
    loop {
        ticks.tick().await;
        match pass(&app).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired files deleted"),
            Err(e) => tracing::error!(error = %e, "reaper pass failed"),
        }
        let now = app.clock.unix();
        if now.saturating_sub(swept) >= SWEEP_EVERY {
            swept = now;
            match app.catalog.sweep(now, SWEEP_EVERY).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "stray objects deleted"),
                Err(e) => tracing::warn!(error = %e, "stray objects not swept"),
            }
        }
    }
}

/// One pass: deletes everything due at the clock's current time. Bytes whose
/// deletion failed are tried again next pass.
pub async fn pass(app: &App) -> io::Result<u64> {
    let now = app.clock.unix();
    let mut deleted = 0;
    let mut first_error = None;
    loop {
        let batch = app
            .catalog
            .reap(now, BATCH)
            .await
            .map_err(io::Error::other)?;
        deleted += batch.deleted;
        first_error = first_error.or(batch.first_error);
        app.reaper_heartbeat
            .store(app.clock.unix(), Ordering::Relaxed);
        if !batch.more {
            break;
        }
        tokio::task::yield_now().await;
    }
    if let Some(e) = first_error {
        tracing::error!(error = %e, "an expired file could not be deleted; trying again next pass");
    }
    app.metrics.expired_deleted.inc_by(deleted);
    app.metrics.reaper_last_run.set(now as f64);
    app.reaper_heartbeat.fetch_max(now, Ordering::Relaxed);
    Ok(deleted)
}
