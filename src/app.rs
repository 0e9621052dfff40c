//! The service's shared state: configuration, the store and index, the slot
//! verifier, the clock, and the caps on uploads in progress.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, PoisonError, RwLock};

use crate::auth::Verifier;
use crate::catalog::Catalog;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::limits::Gate;
use crate::metrics::Metrics;

pub struct App {
    pub config: Config,
    pub catalog: Catalog,
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
}

impl App {
    pub fn new(config: Config, catalog: Catalog, verifier: Verifier, clock: SharedClock) -> App {
        App {
            catalog,
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
}
