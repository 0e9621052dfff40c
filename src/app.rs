//! The service's shared state: configuration, storage and its in-memory index,
//! the slot verifier, the clock, and the set of paths with an upload in progress.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};

use crate::auth::Verifier;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::index::Index;
use crate::metrics::Metrics;
use crate::store::{Key, Store};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub index: Arc<Index>,
    pub verifier: Verifier,
    pub clock: SharedClock,
    pub metrics: Metrics,
    /// Unix seconds when the reaper last showed progress: a finished batch or
    /// pass. Readiness looks at this, so a long pass is not taken for a stuck one.
    pub reaper_heartbeat: AtomicU64,
    /// Set when shutdown begins: readiness says no while requests drain, so a
    /// load balancer sends new ones elsewhere.
    pub stopping: AtomicBool,
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
            config,
            store,
            index,
            verifier,
            clock,
            metrics: Metrics::new(),
            reaper_heartbeat: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            uploading: Arc::default(),
        }
    }

    /// Claims `key` for one upload; `None` if another upload holds it. The claim
    /// ends when the returned guard is dropped, however the upload ends.
    pub fn claim(&self, key: Key) -> Option<Claim> {
        let mut set = self
            .uploading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        set.insert(key).then(|| Claim {
            key,
            set: Arc::clone(&self.uploading),
        })
    }
}

pub struct Claim {
    key: Key,
    set: Arc<Mutex<HashSet<Key>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}
