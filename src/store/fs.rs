//! The file-system store.
//!
//! ```text
//! <data_dir>/files/<2 hex>/<64 hex>        body
//! <data_dir>/files/<2 hex>/<64 hex>.meta   metadata (JSON)
//! <data_dir>/tmp/                          uploads in progress; emptied at start-up
//! <data_dir>/lock                          held while a service uses the directory
//! ```
//!
//! Commit order: body and metadata are written to `tmp/` (and fsynced), the body is
//! hard-linked into place (the link fails if the path is taken, which makes the
//! claim atomic), then the metadata is renamed into place: that rename is the
//! instant the file becomes visible. A body without metadata is an interrupted
//! commit and is removed when found.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::MetaCache;
use super::{CommitError, Key, Meta, Pending, Store};

const META_EXT: &str = "meta";
/// Files whose metadata stays in memory: a few hundred bytes each.
const CACHED_FILES: usize = 4096;

#[derive(Debug)]
pub struct FsStore {
    files: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    cache: Arc<MetaCache>,
    /// Held for the store's lifetime: a second service on the same directory would
    /// empty `tmp/` under the first one's feet.
    _lock: Option<File>,
}

impl FsStore {
    /// Opens (creating if needed) the store under `data_dir` and removes what
    /// interrupted uploads left in `tmp/` and interrupted commits in `files/`.
    pub fn open(data_dir: &Path, fsync: bool) -> io::Result<FsStore> {
        let files = data_dir.join("files");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&files)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("lock"))?;
        lock.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::ResourceBusy,
                "another upslot is using this data directory",
            ),
            fs::TryLockError::Error(e) => e,
        })?;
        match fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(&tmp)?;
        for shard in 0..=255u8 {
            let dir = files.join(format!("{shard:02x}"));
            if dir.is_dir() {
                remove_orphan_bodies(&dir)?;
            } else {
                fs::create_dir(&dir)?;
            }
        }
        if fsync {
            sync_dir(&files)?;
            sync_dir(data_dir)?;
        }
        Ok(FsStore {
            files,
            tmp,
            fsync,
            cache: Arc::new(MetaCache::new(CACHED_FILES)),
            _lock: Some(lock),
        })
    }

    /// Opens the store of a directory that a running service may own, for the
    /// `files` commands: no lock, no clean-up, nothing created.
    pub fn attach(data_dir: &Path) -> io::Result<FsStore> {
        let files = data_dir.join("files");
        if !files.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no upslot data in {}", data_dir.display()),
            ));
        }
        Ok(FsStore {
            files,
            tmp: data_dir.join("tmp"),
            fsync: true,
            cache: Arc::new(MetaCache::new(CACHED_FILES)),
            _lock: None,
        })
    }

    fn body_path(&self, key: &Key) -> PathBuf {
        let hex = key.hex();
        self.files.join(&hex[..2]).join(hex)
    }

    fn meta_path(&self, key: &Key) -> PathBuf {
        self.body_path(key).with_extension(META_EXT)
    }

    fn read_meta(&self, key: &Key) -> io::Result<Option<Arc<Meta>>> {
        if let Some(meta) = self.cache.get(key) {
            return Ok(Some(meta));
        }
        let mark = self.cache.mark();
        match fs::read(self.meta_path(key)) {
            Ok(bytes) => {
                let meta = Arc::new(parse_meta(&bytes)?);
                self.cache
                    .insert_unless_removed(mark, *key, Arc::clone(&meta));
                Ok(Some(meta))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// serde's messages quote the offending value, which may be a file name: errors
/// say only where the metadata went wrong, never what it held.
fn parse_meta(bytes: &[u8]) -> io::Result<Meta> {
    serde_json::from_slice(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "metadata unreadable ({:?} error at line {} column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
        )
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes the bodies in `shard` that have no metadata: what a crash between
/// linking a body and renaming its metadata into place (or between removing a
/// file's metadata and its body) leaves. Invisible to clients, but they would
/// hold disk space that nothing counts. Only for `open`, under the lock: no
/// commit can be in flight then.
fn remove_orphan_bodies(shard: &Path) -> io::Result<()> {
    // One listing, no stat per file: this runs over every file at start-up.
    let mut names = std::collections::HashSet::new();
    for entry in fs::read_dir(shard)? {
        if let Ok(name) = entry?.file_name().into_string() {
            names.insert(name);
        }
    }
    for name in &names {
        let is_body = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if is_body && !names.contains(&format!("{name}.{META_EXT}")) {
            tracing::info!("removing a body without metadata left by an interrupted commit");
            remove_if_present(&shard.join(name))?;
        }
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl Store for FsStore {
    fn meta(&self, key: &Key) -> io::Result<Option<Arc<Meta>>> {
        self.read_meta(key)
    }

    fn cached(&self, key: &Key) -> Option<Arc<Meta>> {
        self.cache.get(key)
    }

    fn open(&self, key: &Key) -> io::Result<Option<(Arc<Meta>, File)>> {
        let Some(meta) = self.read_meta(key)? else {
            return Ok(None);
        };
        Ok(self.open_body(key)?.map(|file| (meta, file)))
    }

    fn open_body(&self, key: &Key) -> io::Result<Option<File>> {
        match File::open(self.body_path(key)) {
            Ok(file) => Ok(Some(file)),
            // Deleted since its metadata was read.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create(&self, key: &Key) -> io::Result<Box<dyn Pending>> {
        let name = format!("{}.{:016x}", key.hex(), rand::random::<u64>());
        let body_tmp = self.tmp.join(&name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&body_tmp)?;
        Ok(Box::new(FsPending {
            file: Some(file),
            body_tmp,
            meta_tmp: self.tmp.join(format!("{name}.{META_EXT}")),
            body: self.body_path(key),
            meta: self.meta_path(key),
            fsync: self.fsync,
            cache: Arc::clone(&self.cache),
            published: false,
        }))
    }

    fn delete(&self, key: &Key) -> io::Result<bool> {
        // Metadata first: the file is invisible from that instant, and only one
        // caller can succeed in removing it.
        let removed = remove_if_present(&self.meta_path(key));
        self.cache.remove(key);
        let removed = removed?;
        remove_if_present(&self.body_path(key))?;
        Ok(removed)
    }

    fn forget(&self, key: &Key) {
        self.cache.remove(key);
    }

    fn available_space(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.files).map_err(io::Error::from)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn for_each(&self, f: &mut dyn FnMut(Meta)) -> io::Result<()> {
        for shard in fs::read_dir(&self.files)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == META_EXT) {
                    match fs::read(&path) {
                        Ok(bytes) => match parse_meta(&bytes) {
                            Ok(meta) => f(meta),
                            Err(e) => tracing::warn!(error = %e, "unreadable metadata skipped"),
                        },
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

struct FsPending {
    file: Option<File>,
    body_tmp: PathBuf,
    meta_tmp: PathBuf,
    body: PathBuf,
    meta: PathBuf,
    fsync: bool,
    cache: Arc<MetaCache>,
    published: bool,
}

impl FsPending {
    fn link_body(&self) -> Result<(), CommitError> {
        match fs::hard_link(&self.body_tmp, &self.body) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.meta.exists() {
                    return Err(CommitError::Exists);
                }
                // A body without metadata is what a crash mid-commit leaves: not a file.
                remove_if_present(&self.body)?;
                fs::hard_link(&self.body_tmp, &self.body).map_err(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        CommitError::Exists
                    } else {
                        CommitError::Io(e)
                    }
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Pending for FsPending {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.write_all(buf),
            None => Err(io::Error::other("upload already committed")),
        }
    }

    fn commit(mut self: Box<Self>, meta: &Meta) -> Result<(), CommitError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already committed"))?;
        if self.fsync {
            file.sync_data()?;
        }
        drop(file);
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let mut meta_file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.meta_tmp)?;
        meta_file.write_all(&json)?;
        if self.fsync {
            meta_file.sync_data()?;
        }
        drop(meta_file);
        self.link_body()?;
        if let Err(e) = fs::rename(&self.meta_tmp, &self.meta) {
            let _ = fs::remove_file(&self.body);
            return Err(e.into());
        }
        self.published = true;
        self.cache.insert(meta.key(), Arc::new(meta.clone()));
        if self.fsync
            && let Some(dir) = self.meta.parent()
        {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for FsPending {
    fn drop(&mut self) {
        // After a commit the body lives on under its final name; this is only the
        // temporary one. The metadata's temporary name was renamed away.
        let _ = fs::remove_file(&self.body_tmp);
        if !self.published {
            let _ = fs::remove_file(&self.meta_tmp);
        }
    }
}
