//! What is stored, and who may store more: every file's metadata, the claims
//! of uploads in progress (one per path, one per JWT slot: the 409s), quota
//! reservations, and expiry order (docs/storage.md). The service asks the
//! index, never the store, whether a file exists; the store only holds bytes.
//!
//! `local` keeps all of it in this process's memory and is rebuilt from the
//! store at start-up; `postgres` keeps it in a database that every instance
//! shares.

mod local;
mod postgres;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::store::{Key, Meta};

pub use self::local::LocalIndex;
pub use self::postgres::PgIndex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// `quota.total` would be exceeded: 507.
    #[error("storage quota reached")]
    Total,
    /// `quota.per_user` would be exceeded: 413.
    #[error("quota exceeded")]
    User,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A complete file holds the path, or another upload holds it or its JWT slot.
    #[error("already exists")]
    Exists,
    #[error(transparent)]
    Quota(#[from] QuotaError),
    /// The index cannot be reached or answered wrongly; worth retrying shortly.
    #[error("index unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

/// What the index holds, in figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub usage: Usage,
    /// Bytes reserved by uploads in progress.
    pub reserved: u64,
    /// When the oldest stored file was created.
    pub oldest_created: Option<u64>,
    /// The earliest expiry of a stored file.
    pub next_expiry: Option<u64>,
}

/// An upload about to begin, as the index needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct Intent<'a> {
    pub key: Key,
    /// The signed path, and where the store will keep the bytes: what a sweep
    /// needs to clean up after an upload whose instance died.
    pub path: &'a str,
    pub object: &'a str,
    /// The JWT slot the path belongs to: a slot holds one file (docs/limits.md).
    pub jwt_slot: Option<&'a str>,
    pub size: u64,
    pub uploader: Option<&'a str>,
    pub now: u64,
}

/// An upload's claim on its path (and JWT slot) and its quota reservation.
/// Dropped without [`Index::commit`], it gives both back.
pub struct Ticket {
    pub key: Key,
    /// An expired file that held the path: already out of the index, its bytes
    /// still to be deleted by whoever holds the ticket.
    pub replaced: Option<Arc<Meta>>,
    /// Uploads of instances that died, whose claims this one took over: the
    /// bytes they may have left are the holder's to delete.
    pub abandoned: Vec<Arc<Meta>>,
    id: u64,
    release: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl Ticket {
    pub fn new(
        key: Key,
        replaced: Option<Arc<Meta>>,
        id: u64,
        release: impl FnOnce(u64) + Send + Sync + 'static,
    ) -> Ticket {
        Ticket {
            key,
            replaced,
            abandoned: Vec::new(),
            id,
            release: Some(Box::new(release)),
        }
    }

    /// The index's own number for this claim.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The index recorded the file: nothing to give back.
    pub fn settle(mut self) {
        self.release = None;
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("key", &self.key)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release(self.id);
        }
    }
}

#[async_trait]
pub trait Index: Send + Sync + 'static {
    /// The file at `key`, expired or not.
    async fn get(&self, key: &Key) -> Result<Option<Arc<Meta>>, IndexError>;
    /// Claims the path (and JWT slot) and reserves the size, or says why not.
    /// An expired file at the path is taken out and handed over in the ticket.
    async fn begin(&self, intent: Intent<'_>) -> Result<Ticket, IndexError>;
    /// Gives an upload's claim and reservation back now, for an upload that
    /// failed: a retry must find the path free once the client has its answer.
    /// (Dropping the ticket gives them back too, but maybe a moment later.)
    async fn abandon(&self, ticket: Ticket) {
        drop(ticket);
    }
    /// Records the stored file; ends the claim and the reservation.
    async fn commit(&self, ticket: Ticket, meta: &Meta) -> Result<(), IndexError>;
    /// Takes the file at `key` out (only if it is `expect`, when given); the
    /// caller then deletes its bytes. `None`: nothing was taken out.
    async fn remove(
        &self,
        key: &Key,
        expect: Option<&Meta>,
    ) -> Result<Option<Arc<Meta>>, IndexError>;
    /// Takes out up to `max` files expired at `now`, soonest first, each for
    /// exactly one caller, whose job is to delete their bytes.
    async fn take_due(&self, now: u64, max: usize) -> Result<Vec<Arc<Meta>>, IndexError>;
    /// Takes out the claims this instance held before it last stopped (it
    /// crashed, then): at start, for the caller to delete what their uploads
    /// may have left, so that their clients' retries need not wait for the
    /// claims to go stale.
    async fn recover(&self) -> Result<Vec<Arc<Meta>>, IndexError> {
        Ok(Vec::new())
    }
    /// Takes out the claims of uploads whose instance died, for the caller to
    /// delete whatever bytes they left; each for exactly one caller.
    async fn take_stale(&self) -> Result<Vec<Arc<Meta>>, IndexError> {
        Ok(Vec::new())
    }
    /// Every stored file, expired or not.
    async fn list(&self) -> Result<Vec<Arc<Meta>>, IndexError>;
    /// Records a file found in the store (start-up, rebuild); false if the path
    /// is already recorded.
    async fn adopt(&self, meta: Meta) -> Result<bool, IndexError>;
    async fn stats(&self) -> Result<Stats, IndexError>;
    /// Why the index cannot serve now, if it cannot.
    async fn check(&self) -> Option<String>;
}
