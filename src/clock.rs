//! Wall-clock time, injectable so that token expiry and file expiry can be tested
//! at any instant without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;

    /// Seconds since the Unix epoch, as JWT claims and metadata count time.
    fn unix(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to; for tests and benchmarks.
#[derive(Debug)]
pub struct ManualClock {
    unix: AtomicU64,
}

impl ManualClock {
    pub fn at(unix: u64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            unix: AtomicU64::new(unix),
        })
    }

    pub fn set(&self, unix: u64) {
        self.unix.store(unix, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.unix.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.unix.load(Ordering::SeqCst))
    }
}
