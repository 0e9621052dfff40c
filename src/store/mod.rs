//! Where files live. The service speaks to storage only through [`Store`]: a file is
//! written through a [`Pending`] upload that nothing can see until `commit`, which
//! either publishes body and metadata together or reports that the path was taken.
//!
//! The calls block (they are file-system calls); the service runs them on tokio's
//! blocking pool.

mod cache;
mod fs;

use std::fmt;
use std::io;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::auth::Scheme;

pub use self::fs::FsStore;

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
}

impl Meta {
    pub fn key(&self) -> Key {
        Key::for_path(&self.path)
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

/// An upload in progress. Dropping it without `commit` removes every trace of it.
pub trait Pending: Send {
    fn write(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file visible under `meta.path`, with `meta`, durably if configured.
    fn commit(self: Box<Self>, meta: &Meta) -> Result<(), CommitError>;
}

pub trait Store: Send + Sync + 'static {
    /// Metadata of a complete file.
    fn meta(&self, key: &Key) -> io::Result<Option<Arc<Meta>>>;
    /// Metadata of a complete file if it is held in memory; never touches the
    /// disk, and `None` says only that it is not held.
    fn cached(&self, key: &Key) -> Option<Arc<Meta>>;
    /// A complete file, opened for reading.
    fn open(&self, key: &Key) -> io::Result<Option<(Arc<Meta>, std::fs::File)>>;
    /// A complete file's body, opened for reading. Blocks, but only briefly for a
    /// file whose metadata is [`cached`](Store::cached): it was met recently.
    fn open_body(&self, key: &Key) -> io::Result<Option<std::fs::File>>;
    /// Begins an upload; nothing is visible until [`Pending::commit`].
    fn create(&self, key: &Key) -> io::Result<Box<dyn Pending>>;
    /// Removes body and metadata; true only for the one caller that removed the
    /// metadata, so that a file is never counted out twice.
    fn delete(&self, key: &Key) -> io::Result<bool>;
    /// [`delete`](Self::delete), for an erasure someone asked for: once it
    /// returns, the removal survives a power loss too (docs/durability.md).
    fn erase(&self, key: &Key) -> io::Result<bool> {
        self.delete(key)
    }
    /// Drops what memory holds about `key`: another process changed it on disk.
    fn forget(&self, key: &Key);
    /// Bytes that unprivileged writers can still store.
    fn available_space(&self) -> io::Result<u64>;
    /// Calls `f` with the metadata of every complete file.
    fn for_each(&self, f: &mut dyn FnMut(Meta)) -> io::Result<()>;
}
