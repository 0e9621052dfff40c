//! The file-system store.
//!
//! ```text
//! <data_dir>/files/<2 hex>/<64 hex>        body
//! <data_dir>/files/<2 hex>/<64 hex>.meta   metadata (JSON)
//! <data_dir>/tmp/                          uploads in progress, where files cannot
//!                                          be unnamed; emptied at start-up
//! <data_dir>/lock                          held while a service uses the directory
//! ```
//!
//! An upload is written to an unnamed file (`O_TMPFILE`) in its shard directory,
//! so one that dies leaves nothing, and uploads do not queue on one shared
//! directory. Commit order: body and metadata are written (and fsynced), the body
//! is linked to its name (which fails if the path is taken: the claim is atomic),
//! then the metadata is: that link is the instant the file becomes visible. A
//! body without metadata is an interrupted commit and is removed when found.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::MetaCache;
use super::{CommitError, Key, Meta, Pending, Store};

const META_EXT: &str = "meta";
/// Files whose metadata stays in memory: a few hundred bytes each.
const CACHED_FILES: usize = 4096;
/// With fsync on, writeback of a body starts after each this many bytes, so
/// that the disk works while the rest arrives and the fdatasync before the 201
/// finds little left to do.
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

#[derive(Debug)]
pub struct FsStore {
    files: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    /// Whether uploads start as unnamed files (see [`anonymous_files_work`]).
    anonymous: bool,
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
        let anonymous = anonymous_files_work(&tmp);
        Ok(FsStore {
            files,
            tmp,
            fsync,
            anonymous,
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
            anonymous: false,
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
        let body = self.body_path(key);
        let meta = self.meta_path(key);
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
        Ok(Box::new(FsPending {
            file: Some(file),
            written: 0,
            flushed: 0,
            body_tmp,
            dir,
            tmp: self.tmp.clone(),
            anonymous: self.anonymous,
            body,
            meta,
            fsync: self.fsync,
            cache: Arc::clone(&self.cache),
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

struct FsPending {
    file: Option<File>,
    written: u64,
    /// Bytes up to here were handed to writeback.
    flushed: u64,
    /// The body's temporary name, where files cannot be unnamed.
    body_tmp: Option<PathBuf>,
    dir: PathBuf,
    tmp: PathBuf,
    anonymous: bool,
    body: PathBuf,
    meta: PathBuf,
    fsync: bool,
    cache: Arc<MetaCache>,
}

/// Where a body or metadata file stands before it is given its final name.
enum Staged {
    Unnamed(File),
    Named(PathBuf),
}

impl Staged {
    /// Names it `to`, failing if `to` exists (so a taken path is never replaced).
    fn link(&self, to: &Path) -> io::Result<()> {
        match self {
            Staged::Unnamed(file) => name_file(file, to),
            Staged::Named(path) => fs::hard_link(path, to),
        }
    }
}

impl FsPending {
    fn link_body(&self, staged: &Staged) -> Result<(), CommitError> {
        match staged.link(&self.body) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if self.meta.exists() {
                    return Err(CommitError::Exists);
                }
                // A body without metadata is what a crash mid-commit leaves: not a file.
                remove_if_present(&self.body)?;
                staged.link(&self.body).map_err(|e| {
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

    /// The metadata, written and (if configured) synced, not yet under its name.
    fn stage_meta(&self, meta: &Meta) -> io::Result<(File, Option<PathBuf>)> {
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let (mut file, path) = match anonymous_file(&self.dir, self.anonymous)? {
            Some(file) => (file, None),
            None => {
                let name = format!(
                    "{}.{:016x}.{META_EXT}",
                    meta.key().hex(),
                    rand::random::<u64>()
                );
                let path = self.tmp.join(name);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                (file, Some(path))
            }
        };
        file.write_all(&json)?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok((file, path))
    }
}

impl Pending for FsPending {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
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

    fn commit(mut self: Box<Self>, meta: &Meta) -> Result<(), CommitError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("upload already committed"))?;
        if self.fsync {
            file.sync_data()?;
        }
        let body = match self.body_tmp.clone() {
            Some(path) => Staged::Named(path),
            None => Staged::Unnamed(file),
        };
        let (meta_file, meta_tmp) = self.stage_meta(meta)?;
        let staged_meta = match meta_tmp {
            Some(path) => Staged::Named(path),
            None => Staged::Unnamed(meta_file),
        };
        let published = self.link_body(&body).and_then(|()| {
            // The instant the file becomes visible.
            let named = match &staged_meta {
                Staged::Named(path) => fs::rename(path, &self.meta),
                unnamed => unnamed.link(&self.meta),
            };
            named.map_err(|e| {
                let _ = fs::remove_file(&self.body);
                CommitError::Io(e)
            })
        });
        if let Staged::Named(path) = &staged_meta {
            let _ = fs::remove_file(path);
        }
        published?;
        self.cache.insert(meta.key(), Arc::new(meta.clone()));
        if self.fsync {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Drop for FsPending {
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
    #[test]
    fn unnamed_and_named_staging_behave_alike() {
        for anonymous in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = FsStore::open(dir.path(), true).unwrap();
            assert!(store.anonymous, "this system has O_TMPFILE");
            store.anonymous = anonymous;
            let m = meta("a/b.bin", b"hello");
            let key = m.key();

            let mut pending = store.create(&key).unwrap();
            pending.write(b"hello").unwrap();
            pending.commit(&m).unwrap();
            let (got, mut file) = store.open(&key).unwrap().unwrap();
            assert_eq!(*got, m);
            let mut body = String::new();
            file.read_to_string(&mut body).unwrap();
            assert_eq!(body, "hello");

            let mut second = store.create(&key).unwrap();
            second.write(b"other").unwrap();
            assert!(matches!(second.commit(&m), Err(CommitError::Exists)));

            let abandoned = meta("a/c.bin", b"");
            let mut third = store.create(&abandoned.key()).unwrap();
            third.write(b"half").unwrap();
            drop(third);

            let mut files = every_file(dir.path());
            files.retain(|p| !p.ends_with("lock"));
            files.sort();
            let mut want = vec![store.body_path(&key), store.meta_path(&key)];
            want.sort();
            assert_eq!(files, want, "anonymous: {anonymous}");
        }
    }
}
