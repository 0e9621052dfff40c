//! The file-system store: one file per upload, its metadata (JSON) in an
//! extended attribute of the body, as OpenStack Swift's object servers keep
//! theirs.
//!
//! ```text
//! <data_dir>/files/<2 hex>/<64 hex>   body; metadata in xattr `user.upslot`
//! <data_dir>/tmp/                     uploads in progress, where files cannot be
//!                                     unnamed; emptied at start-up
//! <data_dir>/lock                     held while a service uses the directory
//! ```
//!
//! An upload is written to an unnamed file (`O_TMPFILE`) in its shard directory,
//! so one that dies leaves nothing and uploads do not queue on one shared
//! directory. Commit: the metadata is attached, the file is fsynced, then
//! linked to its name, which fails if the path is taken (the claim is atomic)
//! and is the one instant the file, body and metadata together, becomes
//! visible; then the directory is fsynced. Deleting is one unlink. One inode,
//! one link and two fsyncs per upload, where a metadata file beside the body
//! cost two, two and three.

mod read;

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use rustix::fs::{Mode, OFlags, XattrFlags, openat};
use rustix::io::Errno;
use tokio::task::{JoinHandle, spawn_blocking};

use super::{CommitError, CreateError, Key, META_MAX, Meta, Store, StoreError, Upload};
use crate::http::body::{Body, Segment};

/// The extended attribute that holds a file's metadata.
const META_XATTR: &str = "user.upslot";
/// Metadata files of the layout before metadata moved into the body's
/// extended attribute: folded in at start-up.
const OLD_META_EXT: &str = "meta";
/// Files remembered as recently met, whose directory entries are likely in
/// memory (see [`Recent`]).
const RECENT_FILES: usize = 4096;
/// With fsync on, writeback of a body starts after each this many bytes, so
/// that the disk works while the rest arrives and the fdatasync before the 201
/// finds little left to do.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: PathBuf,
    /// `files/`, for opening bodies by their short relative path.
    files_fd: OwnedFd,
    tmp: PathBuf,
    fsync: bool,
    /// Uploads are refused when they would leave less free space than this.
    min_free_space: u64,
    /// Bytes that uploads in progress will still add.
    pending: Arc<AtomicU64>,
    /// Whether uploads start as unnamed files (see [`anonymous_files_work`]).
    anonymous: bool,
    recent: Recent,
    /// Held for the store's lifetime: a second service on the same directory would
    /// empty `tmp/` under the first one's feet.
    _lock: Option<File>,
}

/// Keys of files written or read lately. Such a file is opened in place on
/// the runtime's thread: its directory entries are in memory, so the open does
/// not wait for the disk, and it saves the blocking pool's hand-off, which costs
/// more than the open. Only a hint: a file deleted since is simply not found.
#[derive(Debug, Default)]
struct Recent {
    inner: Mutex<(HashSet<Key>, VecDeque<Key>)>,
}

impl Recent {
    fn contains(&self, key: &Key) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .contains(key)
    }

    fn insert(&self, key: Key) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (set, order) = &mut *inner;
        if set.insert(key) {
            order.push_back(key);
            if order.len() > RECENT_FILES
                && let Some(oldest) = order.pop_front()
            {
                set.remove(&oldest);
            }
        }
    }
}

impl FsStore {
    /// Opens (creating if needed) the store under `data_dir` and removes what
    /// interrupted uploads left in `tmp/` and interrupted commits in `files/`.
    pub fn open(data_dir: &Path, fsync: bool, min_free_space: u64) -> io::Result<FsStore> {
        let files = data_dir.join("files");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&files)?;
        let lock = super::lock_dir(data_dir)?;
        match fs::remove_dir_all(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        fs::create_dir_all(&tmp)?;
        for shard in 0..=255u8 {
            let dir = files.join(format!("{shard:02x}"));
            if dir.is_dir() {
                fold_in_old_metadata(&dir)?;
            } else {
                fs::create_dir(&dir)?;
            }
        }
        if fsync {
            sync_dir(&files)?;
            sync_dir(data_dir)?;
        }
        check_xattrs(&tmp)?;
        let anonymous = anonymous_files_work(&tmp);
        Ok(FsStore::of(Inner {
            files_fd: dir_fd(&files)?,
            files,
            tmp,
            fsync,
            min_free_space,
            pending: Arc::default(),
            anonymous,
            recent: Recent::default(),
            _lock: Some(lock),
        }))
    }

    fn of(inner: Inner) -> FsStore {
        FsStore {
            inner: Arc::new(inner),
        }
    }

    /// Runs `f` on the blocking pool, with the store.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> T + Send + 'static,
    ) -> io::Result<T> {
        let inner = Arc::clone(&self.inner);
        spawn_blocking(move || f(&inner))
            .await
            .map_err(io::Error::other)
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
        Ok(FsStore::of(Inner {
            files_fd: dir_fd(&files)?,
            files,
            tmp: data_dir.join("tmp"),
            fsync: true,
            min_free_space: 0,
            pending: Arc::default(),
            anonymous: false,
            recent: Recent::default(),
            _lock: None,
        }))
    }
}

impl Inner {
    fn body_path(&self, key: &Key) -> PathBuf {
        let hex = key.hex();
        self.files.join(&hex[..2]).join(hex)
    }

    fn available_space(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.files).map_err(io::Error::from)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Begins an upload of `size` bytes, if the file system keeps
    /// `min_free_space` besides it and what uploads in progress will add. Blocks.
    fn create(&self, key: &Key, size: u64) -> Result<Staged, CreateError> {
        let needed = size
            .saturating_add(self.min_free_space)
            .saturating_add(self.pending.load(Ordering::Relaxed));
        if self.available_space()? < needed {
            return Err(CreateError::NoSpace);
        }
        self.pending.fetch_add(size, Ordering::Relaxed);
        let pending = Pending {
            size,
            total: Arc::clone(&self.pending),
        };
        let body = self.body_path(key);
        let dir = body.parent().unwrap_or(&self.files).to_owned();
        let (file, body_tmp) = match anonymous_file(&dir, self.anonymous)? {
            Some(file) => (file, None),
            None => {
                let name = format!("{}.{:016x}", key.hex(), rand::random::<u64>());
                let path = self.tmp.join(name);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                (file, Some(path))
            }
        };
        Ok(Staged {
            _pending: pending,
            file: Some(file),
            written: 0,
            flushed: 0,
            body_tmp,
            dir,
            body,
            fsync: self.fsync,
        })
    }

    /// Opens a file's body; `None` if it is gone. Blocks, briefly for a
    /// recent file. Relative to `files/`, so the lookup walks two names, not
    /// the whole data directory's path; with `O_NOATIME`, so that a read does
    /// not dirty the inode (docs/performance.md).
    fn open_body(&self, key: &Key) -> io::Result<Option<File>> {
        let hex = key.hex();
        let name = format!("{}/{hex}", &hex[..2]);
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let opened = match openat(
            &self.files_fd,
            &name,
            flags | OFlags::NOATIME,
            Mode::empty(),
        ) {
            // O_NOATIME is for the file's owner: a command run as another user.
            Err(Errno::PERM) => openat(&self.files_fd, &name, flags, Mode::empty()),
            other => other,
        };
        match opened {
            Ok(fd) => {
                self.recent.insert(*key);
                Ok(Some(File::from(fd)))
            }
            // Deleted since its metadata was read.
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A whole small body, created, written and committed at once. Blocks.
    fn put(&self, meta: &Meta, chunks: &[Bytes]) -> Result<(), StoreError> {
        let key = meta.key();
        let mut staged = self.create(&key, meta.size)?;
        staged.write(chunks)?;
        staged.commit(meta)?;
        self.recent.insert(key);
        Ok(())
    }

    /// One unlink: only one caller can succeed. Blocks.
    fn delete(&self, key: &Key) -> io::Result<bool> {
        remove_if_present(&self.body_path(key))
    }

    /// Every complete file's metadata. Blocks.
    fn scan(&self) -> io::Result<Vec<Meta>> {
        let mut found = Vec::new();
        let mut buf = [0; META_MAX];
        for shard in fs::read_dir(&self.files)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                if !entry.file_name().to_str().is_some_and(is_body_name) {
                    continue;
                }
                let path = entry.path();
                match rustix::fs::getxattr(&path, META_XATTR, &mut buf[..]) {
                    Ok(n) => match parse_meta(&buf[..n]) {
                        Ok(meta) => found.push(meta),
                        Err(e) => tracing::warn!(error = %e, "unreadable metadata skipped"),
                    },
                    // A body without metadata: no commit makes one, but a crash
                    // in the earlier layout's did. The owner (at start-up)
                    // removes it; nobody counts it.
                    Err(rustix::io::Errno::NODATA) if self._lock.is_some() => {
                        tracing::info!(
                            "removing a body without metadata left by an interrupted commit"
                        );
                        remove_if_present(&path)?;
                    }
                    Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(found)
    }

    /// Why uploads would fail now, if they would. Blocks.
    fn check(&self) -> Option<String> {
        let mut problems = Vec::new();
        // A real upload, dropped at once: proves the directory takes new files.
        let probe = Key::for_path(&format!("readyz/{:016x}", rand::random::<u64>()));
        if let Err(e) = self.create(&probe, 0).map(drop) {
            match e {
                CreateError::NoSpace => {}
                CreateError::Io(e) => problems.push(format!("data directory not writable ({e})")),
            }
        }
        match self.available_space() {
            Ok(free) if free < self.min_free_space => problems.push(format!(
                "free space {free} below min_free_space {}",
                self.min_free_space
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("free space unknown ({e})")),
        }
        (!problems.is_empty()).then(|| problems.join("; "))
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

/// A descriptor of the directory at `path`, to open files relative to it.
fn dir_fd(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves the metadata files of the layout before this one (`<64 hex>.meta`
/// beside the body) into their bodies' extended attribute. Only for `open`,
/// under the lock: no commit can be in flight then.
fn fold_in_old_metadata(shard: &Path) -> io::Result<()> {
    let mut names = std::collections::HashSet::new();
    for entry in fs::read_dir(shard)? {
        if let Ok(name) = entry?.file_name().into_string() {
            names.insert(name);
        }
    }
    for name in &names {
        let Some(body) = name.strip_suffix(&format!(".{OLD_META_EXT}")) else {
            continue;
        };
        let old = shard.join(name);
        if names.contains(body) {
            let json = fs::read(&old)?;
            if let Err(e) = parse_meta(&json) {
                // Unservable in that layout too; its body goes as one without metadata.
                tracing::warn!(error = %e, "unreadable metadata of the earlier layout dropped");
            } else {
                rustix::fs::setxattr(shard.join(body), META_XATTR, &json, XattrFlags::empty())?;
                File::open(shard.join(body))?.sync_all()?;
            }
        }
        fs::remove_file(&old)?;
    }
    Ok(())
}

/// Refuses a file system without user extended attributes, where every commit
/// would fail, at start-up and by name.
fn check_xattrs(tmp: &Path) -> io::Result<()> {
    let probe = tmp.join("xattr-probe");
    let made = File::create(&probe).and_then(|file| {
        rustix::fs::fsetxattr(&file, META_XATTR, b"{}", XattrFlags::empty())
            .map_err(io::Error::from)
    });
    let _ = fs::remove_file(&probe);
    made.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "the data directory's file system cannot hold file metadata in extended \
                 attributes ({e}): use ext4, XFS, Btrfs, ZFS or tmpfs (Linux 6.6 or later)"
            ),
        )
    })
}

/// Whether `name` is a stored file's: 64 hex digits.
fn is_body_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Store for FsStore {
    /// The body's name is its key's: the link that publishes it cannot
    /// replace another.
    fn new_object(&self, _key: &Key) -> String {
        String::new()
    }

    async fn create(&self, meta: &Meta) -> Result<Box<dyn Upload>, CreateError> {
        let (key, size) = (meta.key(), meta.size);
        let staged = self
            .blocking(move |store| store.create(&key, size))
            .await??;
        Ok(Box::new(FsUpload {
            idle: Some(staged),
            busy: None,
            store: Arc::clone(&self.inner),
        }))
    }

    async fn put(&self, meta: &Meta, chunks: Vec<Bytes>) -> Result<(), StoreError> {
        // Without fsync a small file's create, write, xattr and link wait for
        // no disk: done in place, they cost less than the blocking pool's two
        // thread hand-offs (docs/performance.md).
        if !self.inner.fsync {
            return self.inner.put(meta, &chunks);
        }
        let meta = meta.clone();
        self.blocking(move |store| store.put(&meta, &chunks))
            .await?
    }

    async fn read(&self, meta: &Meta, segments: Vec<Segment>) -> io::Result<Option<Body>> {
        let key = meta.key();
        let file = if self.inner.recent.contains(&key) {
            self.inner.open_body(&key)?
        } else {
            self.blocking(move |store| store.open_body(&key)).await??
        };
        Ok(file.map(|file| read::segments(file, segments)))
    }

    async fn delete(&self, meta: &Meta) -> io::Result<bool> {
        let key = meta.key();
        self.blocking(move |store| store.delete(&key)).await?
    }

    /// The reaper's deletions need no directory fsync: an expired file that a
    /// power loss brings back is still expired, and deleted again at start.
    /// An erasure someone asked for must stay done.
    async fn erase(&self, meta: &Meta) -> io::Result<bool> {
        let key = meta.key();
        self.blocking(move |store| {
            let removed = store.delete(&key)?;
            if removed && store.fsync {
                let body = store.body_path(&key);
                if let Some(shard) = body.parent() {
                    sync_dir(shard)?;
                }
            }
            Ok(removed)
        })
        .await?
    }

    async fn scan(&self) -> io::Result<Vec<Meta>> {
        self.blocking(Inner::scan).await?
    }

    async fn check(&self) -> Option<String> {
        self.blocking(Inner::check)
            .await
            .unwrap_or_else(|e| Some(format!("disk check failed ({e})")))
    }
}

/// An upload into the file system. Batches are written on the blocking pool one
/// at a time, so that the next fills from the network while the previous one
/// goes to disk; a batch holds the body's pieces as they came (no copy).
/// A batch being written: the staged body and the batch's emptied vector.
type Written = JoinHandle<io::Result<(Staged, Vec<Bytes>)>>;

struct FsUpload {
    idle: Option<Staged>,
    busy: Option<Written>,
    store: Arc<Inner>,
}

impl FsUpload {
    async fn settle(&mut self) -> io::Result<(Staged, Vec<Bytes>)> {
        match (self.busy.take(), self.idle.take()) {
            (Some(handle), _) => handle.await.map_err(io::Error::other)?,
            (None, Some(idle)) => Ok((idle, Vec::new())),
            (None, None) => Err(io::Error::other("upload writer lost")),
        }
    }
}

#[async_trait]
impl Upload for FsUpload {
    async fn write(&mut self, chunks: Vec<Bytes>) -> io::Result<Vec<Bytes>> {
        let (mut staged, spare) = self.settle().await?;
        self.busy = Some(spawn_blocking(move || {
            let mut chunks = chunks;
            staged.write(&chunks)?;
            chunks.clear();
            Ok((staged, chunks))
        }));
        Ok(spare)
    }

    async fn commit(mut self: Box<Self>, meta: &Meta) -> Result<(), CommitError> {
        let (staged, _) = self.settle().await?;
        let meta = meta.clone();
        let store = Arc::clone(&self.store);
        spawn_blocking(move || {
            staged.commit(&meta)?;
            store.recent.insert(meta.key());
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Whether this system can make files without a name (`O_TMPFILE`) and name
/// them later through `/proc/self/fd`. Such files vanish by themselves if the
/// upload dies, and cost no create or unlink in a shared directory.
fn anonymous_files_work(dir: &Path) -> bool {
    match anonymous_file(dir, true) {
        Ok(Some(file)) => Path::new(&fd_path(&file)).exists(),
        _ => false,
    }
}

/// An unnamed file in `dir`, or `None` if those are not to be used.
fn anonymous_file(dir: &Path, anonymous: bool) -> io::Result<Option<File>> {
    use rustix::fs::{Mode, OFlags, openat};
    if !anonymous {
        return Ok(None);
    }
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    match openat(rustix::fs::CWD, dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => Ok(Some(File::from(fd))),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::ISDIR => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn fd_path(file: &File) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", file.as_raw_fd())
}

/// Gives the unnamed `file` the name `to`; fails if `to` exists.
fn name_file(file: &File, to: &Path) -> io::Result<()> {
    use rustix::fs::{AtFlags, CWD, linkat};
    linkat(CWD, fd_path(file), CWD, to, AtFlags::SYMLINK_FOLLOW).map_err(io::Error::from)
}

/// Bytes an upload in progress will add, counted until it ends.
struct Pending {
    size: u64,
    total: Arc<AtomicU64>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.total.fetch_sub(self.size, Ordering::Relaxed);
    }
}

/// A body being written, not yet visible. Dropping it removes every trace.
struct Staged {
    _pending: Pending,
    file: Option<File>,
    written: u64,
    /// Bytes up to here were handed to writeback.
    flushed: u64,
    /// The body's temporary name, where files cannot be unnamed.
    body_tmp: Option<PathBuf>,
    dir: PathBuf,
    body: PathBuf,
    fsync: bool,
}

impl Staged {
    /// Gives the body its final name; fails if that is taken (never replaces).
    fn link(&self, file: &File) -> io::Result<()> {
        match &self.body_tmp {
            Some(path) => fs::hard_link(path, &self.body),
            None => name_file(file, &self.body),
        }
    }
}

impl Staged {
    fn write(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            self.write_one(chunk)?;
        }
        Ok(())
    }

    fn write_one(&mut self, buf: &[u8]) -> io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already committed"))?;
        file.write_all(buf)?;
        self.written += buf.len() as u64;
        if self.fsync
            && let Some(len) = std::num::NonZeroU64::new(self.written - self.flushed)
            && len.get() >= WRITEBACK_STEP
        {
            // Starts writeback of the range without waiting for it: rustix has no
            // sync_file_range, and this is the fallback PostgreSQL uses too.
            // Pages still under writeback stay cached; only a hint, so errors
            // are left to the fdatasync.
            let _ = rustix::fs::fadvise(
                &*file,
                self.flushed,
                Some(len),
                rustix::fs::Advice::DontNeed,
            );
            self.flushed = self.written;
        }
        Ok(())
    }

    fn commit(mut self, meta: &Meta) -> Result<(), CommitError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already committed"))?;
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        if json.len() > META_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "metadata too large").into());
        }
        rustix::fs::fsetxattr(&file, META_XATTR, &json, XattrFlags::CREATE)
            .map_err(io::Error::from)?;
        if self.fsync {
            // The body, and with its inode the metadata.
            file.sync_all()?;
        }
        // The instant the file becomes visible, body and metadata at once.
        match self.link(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(CommitError::Exists),
            Err(e) => return Err(e.into()),
        }
        if self.fsync
            && let Err(e) = sync_dir(&self.dir)
        {
            // Not durable, so not stored: the client is told so, and its retry
            // must find the path free.
            let _ = fs::remove_file(&self.body);
            return Err(e.into());
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // An unnamed body goes with its last descriptor. A named one lives on
        // under its final name after a commit: this is only the temporary one.
        if let Some(path) = &self.body_tmp {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::Scheme;
    use std::io::Read;

    fn meta(path: &str, body: &[u8]) -> Meta {
        Meta {
            path: path.into(),
            name: "f.bin".into(),
            size: body.len() as u64,
            content_type: "application/octet-stream".into(),
            sha256: String::new(),
            created: 0,
            expires: u64::MAX,
            scheme: Scheme::V1,
            uploader: None,
            object: String::new(),
        }
    }

    fn every_file(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(every_file(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    /// Both ways of staging an upload (unnamed files, and named ones in `tmp/`
    /// where the system has no `O_TMPFILE`) publish, refuse a taken path, and
    /// leave nothing behind when abandoned.
    /// A download must not write: with relatime, the first read after a write
    /// would update the access time, and dirty the inode, but for O_NOATIME.
    #[tokio::test]
    async fn reading_a_body_leaves_its_access_time() {
        use http_body_util::BodyExt;
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path(), false, 0).unwrap();
        let m = meta("a/t.bin", b"hello");
        store
            .put(&m, vec![Bytes::from_static(b"hello")])
            .await
            .unwrap();
        let path = store.inner.body_path(&m.key());
        // An access time before the modification: relatime would update it.
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(old))
            .unwrap();
        for _ in 0..2 {
            let segments = vec![Segment::Stored { offset: 0, len: 5 }];
            let body = store.read(&m, segments).await.unwrap().unwrap();
            assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
        }
        assert_eq!(fs::metadata(&path).unwrap().accessed().unwrap(), old);
    }

    #[tokio::test]
    async fn unnamed_and_named_staging_behave_alike() {
        for anonymous in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = FsStore::open(dir.path(), true, 0).unwrap();
            assert!(store.inner.anonymous, "this system has O_TMPFILE");
            let store = FsStore::of(Inner {
                anonymous,
                files_fd: dir_fd(&store.inner.files).unwrap(),
                files: store.inner.files.clone(),
                tmp: store.inner.tmp.clone(),
                fsync: true,
                min_free_space: 0,
                pending: Arc::default(),
                recent: Recent::default(),
                _lock: None,
            });
            let m = meta("a/b.bin", b"hello");
            let key = m.key();

            let mut upload = store.create(&m).await.unwrap();
            upload
                .write(vec![Bytes::from_static(b"hello")])
                .await
                .unwrap();
            upload.commit(&m).await.unwrap();
            let mut file = store.inner.open_body(&key).unwrap().unwrap();
            let mut body = String::new();
            file.read_to_string(&mut body).unwrap();
            assert_eq!(body, "hello");
            assert_eq!(store.scan().await.unwrap(), vec![m.clone()]);

            let mut second = store.create(&m).await.unwrap();
            second
                .write(vec![Bytes::from_static(b"other")])
                .await
                .unwrap();
            assert!(matches!(second.commit(&m).await, Err(CommitError::Exists)));

            let abandoned = meta("a/c.bin", b"");
            let mut third = store.create(&abandoned).await.unwrap();
            third
                .write(vec![Bytes::from_static(b"half")])
                .await
                .unwrap();
            drop(third);

            let want = vec![store.inner.body_path(&key)];
            let left = || {
                let mut files = every_file(dir.path());
                files.retain(|p| !p.ends_with("lock"));
                files.sort();
                files
            };
            // The dropped upload's last write may still be on the blocking pool.
            for _ in 0..500 {
                if left() == want {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert_eq!(left(), want, "anonymous: {anonymous}");
        }
    }
}
