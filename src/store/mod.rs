//! Where file bodies live. The service speaks to storage only through
//! [`Store`]: a file is written through an [`Upload`] that nothing can see until
//! `commit`, which either publishes body and metadata together or reports that
//! the path was taken. What is stored, and who may store more, is the
//! index's business ([`crate::index`]).

mod fs;
mod s3;

use std::fmt;
use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Scheme;
use crate::http::body::{Body, Segment};

pub use self::fs::FsStore;
pub use self::s3::S3Store;

/// A file's identity in storage: SHA-256 of its signed path. Derived, fixed-length
/// and hex, so no request path can name anything on disk.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key([u8; 32]);

impl Key {
    pub fn for_path(signed_path: &str) -> Key {
        Key(Sha256::digest(signed_path.as_bytes()).into())
    }

    /// The key that stands for a whole JWT slot while an upload holds it: no
    /// signed path ends in `/`, so it names no file.
    pub fn for_slot(slot: &str) -> Key {
        Key(Sha256::digest(format!("{slot}/").as_bytes()).into())
    }

    /// The key whose [`hex`](Self::hex) is `hex`.
    pub fn from_hex(hex: &str) -> Option<Key> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(hex, &mut bytes).ok()?;
        Some(Key(bytes))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short id for logs: the file without its name or path.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// The most bytes a file's metadata may take, encoded (JSON): what every store
/// must be able to hold (an ext4 extended attribute holds a little more).
pub const META_MAX: usize = 4000;

/// Everything stored about a file besides its bytes (DESIGN §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The signed path, decoded, below `base_path`.
    pub path: String,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    /// SHA-256 of the body, lowercase hex.
    pub sha256: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; the file is gone from this instant on.
    pub expires: u64,
    pub scheme: Scheme,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploader: Option<String>,
    /// Where the store keeps the bytes, for stores that do not derive it from
    /// the path (an object store's object name, below its prefix).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
}

impl Meta {
    pub fn key(&self) -> Key {
        Key::for_path(&self.path)
    }

    /// What a store needs to delete the bytes an abandoned upload may have
    /// left: the path and the object.
    pub fn abandoned(path: String, object: String) -> Meta {
        Meta {
            name: path.rsplit('/').next().unwrap_or_default().to_owned(),
            path,
            size: 0,
            content_type: String::new(),
            sha256: String::new(),
            created: 0,
            expires: 0,
            scheme: Scheme::V1,
            uploader: None,
            object,
        }
    }

    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires
    }

    /// The slot of a file uploaded with a JWT: its path's first segment.
    pub fn jwt_slot(&self) -> Option<&str> {
        (self.scheme == Scheme::Jwt).then(|| self.path.split('/').next().unwrap_or(""))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A complete file already holds this path.
    #[error("already exists")]
    Exists,
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The store would keep less free space than it must (`min_free_space`).
    #[error("not enough free space")]
    NoSpace,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// An upload in progress. Dropping it without `commit` removes every trace of
/// it (an object store's part uploads are aborted).
#[async_trait]
pub trait Upload: Send {
    /// Appends `chunks` and hands the vector back empty, to be filled again. A
    /// store may still be writing them when this returns: `commit` waits.
    async fn write(&mut self, chunks: Vec<Bytes>) -> io::Result<Vec<Bytes>>;
    /// Makes the file visible under `meta.path`, with `meta`, durably if
    /// configured; never replaces a complete file.
    async fn commit(self: Box<Self>, meta: &Meta) -> Result<(), CommitError>;
}

/// Where file bodies live, each with its metadata beside it so that an index
/// can be rebuilt from the store alone (docs/storage.md). Async throughout: a
/// store that blocks keeps that inside.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where a new upload for `key` is to keep its bytes ([`Meta::object`]).
    fn new_object(&self, key: &Key) -> String;
    /// Begins the upload of a file (its hash still unknown); nothing is
    /// visible until [`Upload::commit`].
    async fn create(&self, meta: &Meta) -> Result<Box<dyn Upload>, CreateError>;
    /// A whole small body at once: one trip where the store blocks.
    async fn put(&self, meta: &Meta, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        let mut upload = self.create(meta).await?;
        upload.write(chunks).await?;
        Ok(upload.commit(meta).await?)
    }
    /// The file's bytes for `segments`, in order, with the literal segments
    /// in between; `None` if the file's bytes are gone.
    async fn read(&self, meta: &Meta, segments: Vec<Segment>) -> io::Result<Option<Body>>;
    /// Removes a file's bytes and metadata; false if they were gone already.
    async fn delete(&self, meta: &Meta) -> io::Result<bool>;
    /// [`delete`](Self::delete), for an erasure someone asked for: once it
    /// returns, the removal survives a power loss too (docs/durability.md).
    async fn erase(&self, meta: &Meta) -> io::Result<bool> {
        self.delete(meta).await
    }
    /// The metadata of every complete file, for an index to be built from.
    async fn scan(&self) -> io::Result<Vec<Meta>>;
    /// Removes what interrupted uploads left, for an owner that knows no upload
    /// is in flight (one instance, at start-up). Returns how many were removed.
    async fn tidy(&self) -> io::Result<u64> {
        Ok(0)
    }
    /// Objects of complete bodies last changed before `before` (Unix
    /// seconds), by [`Meta::object`], for a sweep to compare with the index.
    /// Stores that name bodies by their key alone have none to offer.
    async fn objects_before(&self, _before: u64) -> io::Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Why the store cannot take uploads now, if it cannot.
    async fn check(&self) -> Option<String>;
}

/// Takes `<data_dir>/lock` for as long as the returned file is open: one
/// service per data directory.
pub fn lock_dir(data_dir: &std::path::Path) -> io::Result<std::fs::File> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join("lock"))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => io::Error::new(
            io::ErrorKind::ResourceBusy,
            "another upslot is using this data directory",
        ),
        std::fs::TryLockError::Error(e) => e,
    })?;
    Ok(lock)
}

/// The store cannot be reached, or failed on its side: worth retrying shortly.
/// Carried inside an `io::Error`, so that callers can answer 503 rather than 500.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

pub fn unreachable(why: impl Into<String>) -> io::Error {
    io::Error::other(Unreachable(why.into()))
}

/// Whether `e` says the store is unreachable (see [`Unreachable`]).
pub fn is_unreachable(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Unreachable>())
}

/// What [`Store::put`] can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Commit(#[from] CommitError),
}

impl From<io::Error> for StoreError {
    fn from(e: io::Error) -> Self {
        StoreError::Commit(CommitError::Io(e))
    }
}
