//! The store and the index together, and the one place where a file is removed
//! with its accounting (docs/storage.md): the index takes it out first, so that
//! from that instant nobody serves or counts it and exactly one party holds it,
//! and that party then deletes its bytes. Bytes whose deletion failed are tried
//! again at the next reaper pass.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{Config, IndexBackend, Storage};
use crate::index::{Index, IndexError, LocalIndex, PgIndex};
use crate::store::{FsStore, Key, Meta, S3Store, Store};

pub struct Catalog {
    pub store: Arc<dyn Store>,
    pub index: Arc<dyn Index>,
    /// Files out of the index whose bytes could not be deleted yet.
    undeleted: Mutex<Vec<Arc<Meta>>>,
    /// Held while a service uses the data directory, where the store does not
    /// hold it itself (the file-system store does).
    _lock: Option<std::fs::File>,
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

/// Why the store and index could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[source] io::Error),
    #[error("index: {0}")]
    Index(#[from] IndexError),
}

/// Who opens the store and index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// The service: it owns the data directory, and an embedded index is
    /// rebuilt from the store, what expired meanwhile deleted.
    Service,
    /// The `files` command, beside a service that may be running: it takes
    /// nothing over, and reads an embedded index's copy from the store.
    Command,
}

/// This instance's name in the claims of a shared index: kept in the data
/// directory, so that a restarted instance knows its own claims.
fn instance_name(data_dir: &std::path::Path) -> io::Result<String> {
    let path = data_dir.join("instance");
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = format!("{:016x}", rand::random::<u64>());
    std::fs::write(&path, format!("{name}\n"))?;
    Ok(name)
}

impl Catalog {
    /// The store and index that `config` names. Returns how many expired
    /// files were deleted on the way.
    pub async fn open(
        config: &Config,
        opener: Opener,
        now: u64,
    ) -> Result<(Catalog, u64), OpenError> {
        let dir = |source| OpenError::Dir {
            path: config.data_dir.clone(),
            source,
        };
        let mut lock = None;
        let store: Arc<dyn Store> = match (&config.storage, opener) {
            (Storage::Fs, Opener::Service) => Arc::new(
                FsStore::open(&config.data_dir, config.fsync, config.min_free_space)
                    .map_err(dir)?,
            ),
            (Storage::Fs, Opener::Command) => {
                Arc::new(FsStore::attach(&config.data_dir).map_err(dir)?)
            }
            (Storage::S3(s3), opener) => {
                if opener == Opener::Service {
                    // Still home to the secret, the control socket and the
                    // instance's name, which one service at a time may use.
                    std::fs::create_dir_all(&config.data_dir).map_err(dir)?;
                    lock = Some(crate::store::lock_dir(&config.data_dir).map_err(dir)?);
                }
                Arc::new(S3Store::new(s3).map_err(OpenError::Storage)?)
            }
        };
        let (quota_total, quota_per_user) = (config.quota_total, config.quota_per_user);
        let index: Arc<dyn Index> = match &config.index {
            IndexBackend::Local => Arc::new(LocalIndex::new(quota_total, quota_per_user)),
            IndexBackend::Postgres { url } => {
                let url = url
                    .resolve()
                    .map_err(|e| IndexError::Unavailable(format!("index.url: {e}")))?;
                let instance = match opener {
                    Opener::Service => instance_name(&config.data_dir).map_err(dir)?,
                    Opener::Command => format!("command-{:016x}", rand::random::<u64>()),
                };
                Arc::new(PgIndex::connect(&url, quota_total, quota_per_user, &instance).await?)
            }
        };
        let mut catalog = Catalog::new(store, index);
        catalog._lock = lock;
        if opener == Opener::Service {
            // Uploads this instance had in flight when it last died.
            for abandoned in catalog.index.recover().await? {
                let _ = catalog.delete_bytes(abandoned).await;
            }
        }
        let mut swept = 0;
        if config.index == IndexBackend::Local {
            let loaded = match opener {
                Opener::Service => catalog.load(now).await.map(|n| swept = n),
                Opener::Command => catalog.adopt_all().await,
            };
            loaded.map_err(|e| match e {
                RemoveError::Index(e) => OpenError::Index(e),
                RemoveError::Bytes(e) if config.storage == Storage::Fs => dir(e),
                RemoveError::Bytes(e) => OpenError::Storage(e),
            })?;
        }
        Ok((catalog, swept))
    }

    pub fn new(store: Arc<dyn Store>, index: Arc<dyn Index>) -> Catalog {
        Catalog {
            store,
            index,
            undeleted: Mutex::default(),
            _lock: None,
        }
    }

    /// Indexes what the store holds, deleting what expired (an embedded index,
    /// at start-up). Returns how many expired files were deleted.
    pub async fn load(&self, now: u64) -> Result<u64, RemoveError> {
        let tidied = self.store.tidy().await.map_err(RemoveError::Bytes)?;
        if tidied > 0 {
            tracing::info!(removed = tidied, "removed what interrupted uploads left");
        }
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

    /// Deletes objects of complete bodies older than `grace` that the index
    /// does not know: what a crash or a failed deletion left (docs/storage.md).
    /// A body becomes an object only when its upload's last byte is in, and the
    /// index records it moments later, so an hour-old unknown one is garbage.
    pub async fn sweep(&self, now: u64, grace: u64) -> Result<u64, IndexError> {
        let objects = match self.store.objects_before(now.saturating_sub(grace)).await {
            Ok(objects) => objects,
            Err(e) => {
                tracing::warn!(error = %e, "stray objects not swept this time");
                return Ok(0);
            }
        };
        let mut swept = 0;
        for object in objects {
            let Some(key) = object.split('.').next().and_then(Key::from_hex) else {
                continue;
            };
            if self
                .index
                .get(&key)
                .await?
                .is_some_and(|meta| meta.object == object)
            {
                continue;
            }
            let stray = Arc::new(Meta::abandoned(String::new(), object));
            if self.delete_bytes(stray).await.is_ok() {
                swept += 1;
            }
        }
        Ok(swept)
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
        // What uploads of instances that died left: not files, so not counted.
        for abandoned in self.index.take_stale().await? {
            let _ = self.delete_bytes(abandoned).await;
        }
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
