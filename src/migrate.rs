//! `upslot migrate`: copies an installation on one machine (fs + local) into
//! the store and index the configuration names (s3 + postgres), while the old
//! service goes on serving from its data directory. Each file is streamed from
//! disk to the new store, its SHA-256 checked against the one stored at upload
//! before it is recorded; a file the new index already holds with the same hash
//! is skipped, so an interrupted run is simply run again (README, "Moving to
//! several instances").

use std::io;
use std::sync::Arc;

use http_body_util::BodyExt;
use sha2::{Digest, Sha256};

use crate::catalog::Catalog;
use crate::http::body::Segment;
use crate::index::{IndexError, Intent};
use crate::store::{Meta, Store};

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub copied: u64,
    pub bytes: u64,
    /// Already in the new index with the same hash.
    pub present: u64,
    pub expired: u64,
    /// Bodies that no longer match their hash, or paths the new index holds
    /// with another file: left where they are, and named in the log.
    pub refused: u64,
}

/// Copies every live file of `from` into `to`.
pub async fn run(from: &dyn Store, to: &Catalog, now: u64) -> io::Result<Moved> {
    let mut moved = Moved::default();
    let mut files = from.scan().await?;
    files.sort_by_key(|m| m.created);
    for source in files {
        if source.is_expired(now) {
            moved.expired += 1;
            continue;
        }
        match to
            .index
            .get(&source.key())
            .await
            .map_err(io::Error::other)?
        {
            Some(there) if there.sha256 == source.sha256 => {
                moved.present += 1;
                continue;
            }
            Some(_) => {
                tracing::warn!(file = %source.key(), "the new index holds another file at this path: left alone");
                moved.refused += 1;
                continue;
            }
            None => {}
        }
        match copy(from, to, &source).await {
            Ok(true) => {
                moved.copied += 1;
                moved.bytes += source.size;
            }
            Ok(false) => moved.refused += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Copies one file; false if it was refused (see [`Moved::refused`]).
async fn copy(from: &dyn Store, to: &Catalog, source: &Meta) -> io::Result<bool> {
    let mut meta = source.clone();
    meta.object = to.store.new_object(&meta.key());
    let ticket = match to
        .index
        .begin(Intent {
            key: meta.key(),
            path: &meta.path,
            object: &meta.object,
            jwt_slot: meta.jwt_slot(),
            size: meta.size,
            uploader: meta.uploader.as_deref(),
            now: meta.created,
        })
        .await
    {
        Ok(ticket) => ticket,
        Err(IndexError::Exists) => {
            tracing::warn!(file = %meta.key(), "claimed by an upload in progress: left alone");
            return Ok(false);
        }
        Err(e) => return Err(io::Error::other(e)),
    };
    let segments = vec![Segment::Stored {
        offset: 0,
        len: meta.size,
    }];
    let Some(mut body) = from.read(source, segments).await? else {
        // Deleted or expired in the old service meanwhile.
        return Ok(false);
    };
    let mut upload = to.store.create(&meta).await.map_err(io::Error::other)?;
    let mut hash = Sha256::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        hash.update(&data);
        upload.write(vec![data]).await?;
    }
    if hex::encode(hash.finalize()) != meta.sha256 {
        tracing::warn!(file = %meta.key(), "body does not match its SHA-256: left alone");
        return Ok(false);
    }
    upload.commit(&meta).await.map_err(io::Error::other)?;
    if let Err(e) = to.index.commit(ticket, &meta).await {
        let _ = to.store.delete(&meta).await;
        return Err(io::Error::other(e));
    }
    Ok(true)
}

/// Rebuilds an index from what the store holds (`upslot index rebuild`):
/// every file whose body and metadata are there is recorded, unless its path
/// is already. Returns (recorded, already there).
pub async fn rebuild(catalog: &Catalog) -> io::Result<(u64, u64)> {
    let (mut recorded, mut present) = (0, 0);
    let store: &Arc<dyn Store> = &catalog.store;
    let mut found = store.scan().await?;
    // Two objects for one path (a crash between an upload's body and its
    // index entry, retried since): the first upload wins, as it did.
    found.sort_by_key(|m| m.created);
    for meta in found {
        if catalog.index.adopt(meta).await.map_err(io::Error::other)? {
            recorded += 1;
        } else {
            present += 1;
        }
    }
    Ok((recorded, present))
}
