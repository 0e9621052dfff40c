//! `files export --archive`: a user's files and the facts stored about them,
//! as one tar archive (gzip-compressed for `.tar.gz` and `.tgz`).
//!
//! `export.json` comes first (the JSON export, with each file's name in the
//! archive), then every file under `files/`, oldest first. Bodies are read
//! through the [`Store`] (docs/storage.md, "The two seams"), so any backend
//! will do, and streamed: a chunk at a time goes from the store into the
//! archive, whatever a file's size. Each is checked against its stored SHA-256
//! on the way; a mismatch or a short read stops the export.
//!
//! The archive holds personal data and is all or nothing: it is written into a
//! temporary file (mode 0600) beside the target, fsynced, then published with
//! a hard link, which never replaces an existing file (as an upload's commit
//! is, docs/durability.md, "The commit, step by step").

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::BodyDataStream;
use sha2::{Digest, Sha256};
use tokio::runtime::Handle;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::{Export, ExportedFile, rfc3339};
use crate::http::body::Segment;
use crate::store::{Meta, Store};

/// The longest file name most file systems take (bytes): extracted names must fit.
const NAME_MAX: usize = 255;
/// A longer "extension" is taken for part of the name.
const EXT_MAX: usize = 16;
/// Between the archive and the disk: fewer, larger writes.
const WRITE_BUFFER: usize = 256 * 1024;

/// What [`write`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    /// The files' bytes.
    pub bytes: u64,
    /// The archive's size on disk.
    pub archive_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0} exists already: not overwritten")]
    Exists(PathBuf),
    #[error(
        "{path} ({name}): its bytes do not match its stored SHA-256 \
         (stored {stored}, read {read}); no archive written"
    )]
    Mismatch {
        path: String,
        name: String,
        stored: String,
        read: String,
    },
    #[error("{path} ({name}): the store gave {got} of its {size} bytes; no archive written")]
    Short {
        path: String,
        name: String,
        got: u64,
        size: u64,
    },
    #[error(
        "{path} ({name}): its bytes are gone from the store (deleted since it was \
         listed?); no archive written"
    )]
    Gone { path: String, name: String },
    // `cause`, not `source`: the message says it already, once is enough.
    #[error("{path} ({name}): cannot read it: {cause}; no archive written")]
    Read {
        path: String,
        name: String,
        cause: io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
}

/// Refuses a target that exists (even as a dangling symlink), before anything
/// is read; the hard link at the end enforces it without a race.
pub fn refuse_existing(target: &Path) -> Result<(), ArchiveError> {
    match target.symlink_metadata() {
        Ok(_) => Err(ArchiveError::Exists(target.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(cause) => Err(ArchiveError::Io {
            path: target.to_owned(),
            cause,
        }),
    }
}

/// Whether `target` names a gzip-compressed archive.
pub fn is_gzip(target: &Path) -> bool {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// The names of `files` in the archive, in order: `files/<upload date> <name>`,
/// unique also when case is ignored (extraction on a case-insensitive file
/// system), " (2)" and so on before the extension. The date in front means no
/// name starts with a dot or is `..`.
pub fn entry_names(files: &[Meta]) -> Vec<String> {
    let mut taken = HashSet::new();
    files
        .iter()
        .map(|meta| {
            let date = rfc3339(meta.created);
            let date = date.get(..10).unwrap_or(&date);
            let name = safe_name(&meta.name);
            let (stem, ext) = match name.rfind('.') {
                Some(i) if i > 0 && name.len() - i <= EXT_MAX => name.split_at(i),
                _ => (name.as_str(), ""),
            };
            let mut n = 1;
            loop {
                let suffix = if n == 1 {
                    String::new()
                } else {
                    format!(" ({n})")
                };
                let room = NAME_MAX.saturating_sub(date.len() + 1 + suffix.len() + ext.len());
                let candidate = format!("{date} {}{suffix}{ext}", truncate(stem, room));
                if taken.insert(candidate.to_lowercase()) {
                    break format!("files/{candidate}");
                }
                n += 1;
            }
        })
        .collect()
}

/// `name` without what a tar entry or an extracted file must not hold: a path
/// separator (either kind) or a control character.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.trim().is_empty() {
        "file".to_owned()
    } else {
        cleaned
    }
}

/// The longest prefix of `s` of at most `max` bytes, cut between characters.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes the archive of `user`'s `files` (as [`super::list`] returns them) to
/// `target`, which must not exist. `now` stamps the export.
pub async fn write(
    store: Arc<dyn Store>,
    user: &str,
    now: u64,
    files: Vec<Meta>,
    target: &Path,
) -> Result<Summary, ArchiveError> {
    refuse_existing(target)?;
    let names = entry_names(&files);
    let export = Export {
        user,
        exported_at: rfc3339(now),
        files: files
            .iter()
            .zip(&names)
            .map(|(meta, name)| ExportedFile {
                archive_name: Some(name.clone()),
                ..ExportedFile::from(meta)
            })
            .collect(),
    };
    let mut json = serde_json::to_vec_pretty(&export).map_err(|e| ArchiveError::Io {
        path: target.to_owned(),
        cause: e.into(),
    })?;
    json.push(b'\n');
    let job = Job {
        handle: Handle::current(),
        store,
        json,
        now,
        entries: files.into_iter().zip(names).collect(),
        target: target.to_owned(),
    };
    // tar and gzip write synchronously; the bodies are read through the
    // runtime from that thread (SyncIoBridge).
    tokio::task::spawn_blocking(move || job.run())
        .await
        .map_err(|e| ArchiveError::Io {
            path: target.to_owned(),
            cause: io::Error::other(e),
        })?
}

struct Job {
    handle: Handle,
    store: Arc<dyn Store>,
    json: Vec<u8>,
    now: u64,
    entries: Vec<(Meta, String)>,
    target: PathBuf,
}

/// A temporary file, removed when dropped.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Job {
    fn run(self) -> Result<Summary, ArchiveError> {
        let io_at = |path: &Path| {
            let path = path.to_owned();
            move |cause| ArchiveError::Io { path, cause }
        };
        let target = &self.target;
        let file_name = target
            .file_name()
            .ok_or_else(|| io_at(target)(io::Error::other("not a file name")))?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.{:016x}.part",
            file_name.to_string_lossy(),
            rand::random::<u64>()
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            // A missing directory, say: name the one the user gave.
            .map_err(io_at(dir))?;
        let partial = Partial(tmp);
        let tmp = &partial.0;
        let buffered = BufWriter::with_capacity(WRITE_BUFFER, file);
        let sink = if is_gzip(target) {
            // Most uploads (photos, videos) are compressed already: the
            // fastest level costs least for what it still saves.
            Sink::Gzip(GzEncoder::new(buffered, Compression::fast()))
        } else {
            Sink::Tar(buffered)
        };
        let mut builder = tar::Builder::new(sink);
        let mut header = header(self.json.len() as u64, self.now);
        builder
            .append_data(&mut header, "export.json", &self.json[..])
            .map_err(io_at(tmp))?;
        let mut bytes = 0;
        for (meta, name) in &self.entries {
            self.append(&mut builder, meta, name, tmp)?;
            bytes += meta.size;
        }
        let file = builder
            .into_inner()
            .and_then(Sink::finish)
            .map_err(io_at(tmp))?;
        file.sync_all().map_err(io_at(tmp))?;
        let archive_bytes = file.metadata().map_err(io_at(tmp))?.len();
        drop(file);
        std::fs::hard_link(tmp, target).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ArchiveError::Exists(target.clone()),
            _ => io_at(target)(e),
        })?;
        std::fs::remove_file(tmp).map_err(io_at(tmp))?;
        // The new name survives a power loss too.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
        Ok(Summary {
            files: self.entries.len(),
            bytes,
            archive_bytes,
        })
    }

    /// Appends one file, its bytes checked against its SHA-256 on the way.
    fn append(
        &self,
        builder: &mut tar::Builder<Sink>,
        meta: &Meta,
        name: &str,
        tmp: &Path,
    ) -> Result<(), ArchiveError> {
        let whole = vec![Segment::Stored {
            offset: 0,
            len: meta.size,
        }];
        let read_error = |cause| ArchiveError::Read {
            path: meta.path.clone(),
            name: name.to_owned(),
            cause,
        };
        let body = self
            .handle
            .block_on(self.store.read(meta, whole))
            .map_err(read_error)?
            .ok_or_else(|| ArchiveError::Gone {
                path: meta.path.clone(),
                name: name.to_owned(),
            })?;
        let reader = SyncIoBridge::new_with_handle(
            StreamReader::new(BodyDataStream::new(body)),
            self.handle.clone(),
        );
        let mut verified = Verified {
            inner: reader,
            size: meta.size,
            left: meta.size,
            hasher: Sha256::new(),
            failure: None,
            checked: false,
            stored: &meta.sha256,
        };
        let mut header = header(meta.size, meta.created);
        let appended = builder.append_data(&mut header, name, &mut verified);
        let failure = verified.failure.take();
        let checked = verified.checked;
        match (appended, failure) {
            (_, Some(Failure::Mismatch(read))) => Err(ArchiveError::Mismatch {
                path: meta.path.clone(),
                name: name.to_owned(),
                stored: meta.sha256.clone(),
                read,
            }),
            (_, Some(Failure::Short(got))) => Err(ArchiveError::Short {
                path: meta.path.clone(),
                name: name.to_owned(),
                got,
                size: meta.size,
            }),
            (_, Some(Failure::Read(e))) => Err(read_error(e)),
            (Err(e), None) => Err(ArchiveError::Io {
                path: tmp.to_owned(),
                cause: e,
            }),
            // tar reads to the end, so the check has run; never trust that.
            (Ok(()), None) if !checked => Err(read_error(io::Error::other("not read to the end"))),
            (Ok(()), None) => Ok(()),
        }
    }
}

/// A regular file's header: `size` bytes, changed at `mtime`, mode 0644.
fn header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header
}

/// Where the archive goes: plain, or through gzip.
enum Sink {
    Tar(BufWriter<File>),
    Gzip(GzEncoder<BufWriter<File>>),
}

impl Sink {
    /// Writes out everything buffered and hands the file back, for fsync.
    fn finish(self) -> io::Result<File> {
        let buffered = match self {
            Sink::Tar(w) => w,
            Sink::Gzip(gz) => gz.finish()?,
        };
        buffered
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Tar(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Tar(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

/// Why a file's bytes were not taken.
enum Failure {
    /// The SHA-256 of what was read.
    Mismatch(String),
    /// Bytes read before the store had no more.
    Short(u64),
    Read(io::Error),
}

/// Exactly `left` bytes of `inner`, hashed on the way: the read after the last
/// byte fails unless the hash is `stored`, before tar can count the entry
/// complete. Failures are kept in `failure`, tar only sees that there was one.
struct Verified<'a, R> {
    inner: R,
    size: u64,
    left: u64,
    hasher: Sha256,
    stored: &'a str,
    failure: Option<Failure>,
    checked: bool,
}

impl<R> Verified<'_, R> {
    fn got(&self) -> u64 {
        self.size - self.left
    }
}

impl<R: Read> Read for Verified<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other("failed already"));
        }
        if self.left == 0 {
            if !self.checked {
                let read = hex::encode(self.hasher.finalize_reset());
                if !read.eq_ignore_ascii_case(self.stored) {
                    self.failure = Some(Failure::Mismatch(read));
                    return Err(io::Error::other("SHA-256 mismatch"));
                }
                self.checked = true;
            }
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        match self.inner.read(&mut buf[..want]) {
            Ok(0) if want > 0 => {
                self.failure = Some(Failure::Short(self.got()));
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.left -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.failure = Some(Failure::Short(self.got()));
                Err(e)
            }
            Err(e) => {
                let kind = e.kind();
                self.failure = Some(Failure::Read(e));
                Err(kind.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::auth::Scheme;

    const DAY: u64 = 86_400;
    /// 2026-01-01T00:00:00Z.
    const T0: u64 = 1_767_225_600;

    fn meta(name: &str, created: u64) -> Meta {
        Meta {
            path: format!("s/{name}"),
            name: name.into(),
            size: 0,
            content_type: "text/plain".into(),
            sha256: String::new(),
            created,
            expires: created + DAY,
            scheme: Scheme::V1,
            uploader: None,
            object: String::new(),
        }
    }

    fn names(files: &[(&str, u64)]) -> Vec<String> {
        let metas: Vec<Meta> = files.iter().map(|(n, t)| meta(n, *t)).collect();
        entry_names(&metas)
    }

    #[test]
    fn names_are_dated_and_unique() {
        assert_eq!(
            names(&[
                ("photo.jpg", T0),
                ("photo.jpg", T0 + 60),
                ("Photo.JPG", T0 + 120),
                ("photo (2).jpg", T0 + 180),
                ("photo.jpg", T0 + DAY),
                ("notes", T0 + DAY),
                ("notes", T0 + DAY),
            ]),
            [
                "files/2026-01-01 photo.jpg",
                "files/2026-01-01 photo (2).jpg",
                // Case-insensitive file systems would merge it with the first.
                "files/2026-01-01 Photo (3).JPG",
                "files/2026-01-01 photo (2) (2).jpg",
                "files/2026-01-02 photo.jpg",
                "files/2026-01-02 notes",
                "files/2026-01-02 notes (2)",
            ]
        );
    }

    #[test]
    fn names_are_safe_for_tar_and_file_systems() {
        assert_eq!(
            names(&[
                ("..", T0),
                (".bashrc", T0),
                ("a/b\\c\u{7}d\n.txt", T0),
                ("", T0),
                ("\u{1b}", T0),
            ]),
            [
                "files/2026-01-01 ..",
                "files/2026-01-01 .bashrc",
                "files/2026-01-01 a_b_c_d_.txt",
                "files/2026-01-01 file",
                "files/2026-01-01 _",
            ]
        );
        // Too long for one file name: cut between characters, extension kept.
        let long = format!("{}.jpeg", "ü".repeat(200));
        let got = names(&[(&long, T0), (&long, T0)]);
        for name in &got {
            let file = name.strip_prefix("files/").unwrap();
            assert!(file.len() <= NAME_MAX, "{}", file.len());
            assert!(file.ends_with(".jpeg"), "{file}");
        }
        assert!(got[1].ends_with("ü (2).jpeg"), "{}", got[1]);
        // Every name is one a tar entry may have.
        for name in got.iter().chain(&names(&[("..", T0), (".x", T0)])) {
            let mut header = tar::Header::new_gnu();
            let mut builder = tar::Builder::new(Vec::new());
            builder.append_data(&mut header, name, &b""[..]).unwrap();
        }
    }

    fn verify(body: &[u8], size: u64, stored: &str) -> (io::Result<Vec<u8>>, Option<Failure>) {
        let mut verified = Verified {
            inner: body,
            size,
            left: size,
            hasher: Sha256::new(),
            stored,
            failure: None,
            checked: false,
        };
        let mut out = Vec::new();
        let read = verified.read_to_end(&mut out).map(|_| out);
        (read, verified.failure)
    }

    #[test]
    fn bytes_are_checked_against_the_stored_hash() {
        let sha = hex::encode(Sha256::digest(b"hello"));
        let (read, failure) = verify(b"hello", 5, &sha);
        assert_eq!(read.unwrap(), b"hello");
        assert!(failure.is_none());
        // Not a byte more than the size, even if the store had more.
        let (read, failure) = verify(b"hello, world", 5, &sha);
        assert_eq!(read.unwrap(), b"hello");
        assert!(failure.is_none());

        let (read, failure) = verify(b"hellO", 5, &sha);
        assert!(read.is_err());
        assert!(
            matches!(failure, Some(Failure::Mismatch(h)) if h == hex::encode(Sha256::digest(b"hellO")))
        );
        let (read, failure) = verify(b"hel", 5, &sha);
        assert!(read.is_err());
        assert!(matches!(failure, Some(Failure::Short(3))));
    }
}
