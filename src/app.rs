//! The service's shared state: configuration, storage and its in-memory index,
//! the slot verifier, the clock, and the set of paths with an upload in progress.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::auth::Verifier;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::index::Index;
use crate::limits::Gate;
use crate::metrics::Metrics;
use crate::store::{Key, Store};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub index: Arc<Index>,
    /// Swapped whole when the secrets are reloaded (SIGHUP).
    verifier: RwLock<Arc<Verifier>>,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// Unix seconds when the reaper last showed progress: a finished batch or
    /// pass. Readiness looks at this, so a long pass is not taken for a stuck one.
    pub reaper_heartbeat: AtomicU64,
    /// Set when shutdown begins: readiness says no while requests drain, so a
    /// load balancer sends new ones elsewhere.
    pub stopping: AtomicBool,
    /// Uploads in progress, capped in all and per client (docs/limits.md).
    pub uploads: Arc<Gate>,
    uploading: Arc<Mutex<HashSet<Key>>>,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        index: Arc<Index>,
        verifier: Verifier,
        clock: SharedClock,
    ) -> App {
        App {
            store,
            index,
            verifier: RwLock::new(Arc::new(verifier)),
            clock,
            metrics: Metrics::new(),
            reaper_heartbeat: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            uploads: Gate::new(
                config.limits.max_uploads,
                config.limits.max_uploads_per_client,
                config.trusted_proxies.clone(),
            ),
            uploading: Arc::default(),
            config,
        }
    }

    /// The slot verifier in effect now.
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::clone(&self.verifier.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `verifier` in effect for every slot checked from now on.
    pub fn set_verifier(&self, verifier: Verifier) {
        *self
            .verifier
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(verifier);
    }

    /// Claims `key` for one upload; `None` if another upload holds it. The claim
    /// ends when the returned guard is dropped, however the upload ends.
    pub fn claim(&self, key: Key) -> Option<Claim> {
        self.claim_both(key, None)
    }

    /// Claims `key` and, if given, the JWT slot it belongs to (one upload per
    /// slot): both or neither.
    pub fn claim_both(&self, key: Key, slot: Option<Key>) -> Option<Claim> {
        let mut set = self
            .uploading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if set.contains(&key) || slot.is_some_and(|s| set.contains(&s)) {
            return None;
        }
        set.insert(key);
        set.extend(slot);
        Some(Claim {
            key,
            slot,
            set: Arc::clone(&self.uploading),
        })
    }
}

pub struct Claim {
    key: Key,
    slot: Option<Key>,
    set: Arc<Mutex<HashSet<Key>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut set = self.set.lock().unwrap_or_else(PoisonError::into_inner);
        set.remove(&self.key);
        if let Some(slot) = &self.slot {
            set.remove(slot);
        }
    }
}
