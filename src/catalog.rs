//! The store and the index together, and the one place where a file is removed
//! with its accounting (docs/storage.md): the index takes it out first, so that
//! from that instant nobody serves or counts it and exactly one party holds it,
//! and that party then deletes its bytes. Bytes whose deletion failed are tried
//! again at the next reaper pass.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use crate::index::{Index, IndexError};
use crate::store::{Key, Meta, Store};

pub struct Catalog {
    pub store: Arc<dyn Store>,
    pub index: Arc<dyn Index>,
    /// Files out of the index whose bytes could not be deleted yet.
    undeleted: Mutex<Vec<Arc<Meta>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Out of the index (nobody serves it), but its bytes are still stored;
    /// they are tried again later.
    #[error("file removed from the index, but its bytes not yet: {0}")]
    Bytes(#[source] io::Error),
}

/// What a reaper batch did.
#[derive(Debug, Default)]
pub struct Reaped {
    pub deleted: u64,
    /// Whether the index may hold more that is due.
    pub more: bool,
    pub first_error: Option<io::Error>,
}

impl Catalog {
    pub fn new(store: Arc<dyn Store>, index: Arc<dyn Index>) -> Catalog {
        Catalog {
            store,
            index,
            undeleted: Mutex::default(),
        }
    }

    /// Indexes what the store holds, deleting what expired (an embedded index,
    /// at start-up). Returns how many expired files were deleted.
    pub async fn load(&self, now: u64) -> Result<u64, RemoveError> {
        let found = self.store.scan().await.map_err(RemoveError::Bytes)?;
        let mut deleted = 0;
        for meta in found {
            if meta.is_expired(now) {
                if self.store.delete(&meta).await.map_err(RemoveError::Bytes)? {
                    deleted += 1;
                }
            } else {
                self.index.adopt(meta).await?;
            }
        }
        Ok(deleted)
    }

    /// Indexes everything the store holds, expired or not: the `files` command's
    /// own copy of an embedded index.
    pub async fn adopt_all(&self) -> Result<(), RemoveError> {
        for meta in self.store.scan().await.map_err(RemoveError::Bytes)? {
            self.index.adopt(meta).await?;
        }
        Ok(())
    }

    /// Removes the file at `key` for good, on someone's request: once this
    /// returns, nothing serves it and the removal survives a power loss.
    pub async fn erase(&self, key: &Key) -> Result<Option<Arc<Meta>>, RemoveError> {
        let Some(meta) = self.index.remove(key, None).await? else {
            return Ok(None);
        };
        self.store.erase(&meta).await.map_err(RemoveError::Bytes)?;
        Ok(Some(meta))
    }

    /// Deletes the bytes of a file already out of the index; on failure they are
    /// kept for the next [`reap`](Self::reap). True if they were there.
    pub async fn delete_bytes(&self, meta: Arc<Meta>) -> io::Result<bool> {
        match self.store.delete(&meta).await {
            Ok(found) => Ok(found),
            Err(e) => {
                self.undeleted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(meta);
                Err(e)
            }
        }
    }

    /// One batch of the reaper: up to `max` files expired at `now` are taken out
    /// of the index and their bytes deleted, after those left over from before.
    pub async fn reap(&self, now: u64, max: usize) -> Result<Reaped, IndexError> {
        let mut reaped = Reaped::default();
        let left: Vec<_> = std::mem::take(
            &mut *self
                .undeleted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let due = self.index.take_due(now, max).await?;
        reaped.more = due.len() == max;
        for meta in left.into_iter().chain(due) {
            match self.delete_bytes(meta).await {
                Ok(_) => reaped.deleted += 1,
                Err(e) => {
                    reaped.first_error.get_or_insert(e);
                }
            }
        }
        Ok(reaped)
    }
}
