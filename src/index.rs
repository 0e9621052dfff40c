//! What is stored, in memory: every file's expiry in time order (so a reaper pass
//! that finds nothing to do costs one look at the heap, not a read of every
//! file's metadata), and the bytes held in total and per uploader (so quotas are
//! checked without touching the disk). Rebuilt from the store at start-up.
//!
//! Uploads reserve their size before the body is read and release it if they
//! fail, so concurrent uploads cannot overshoot a quota together. Counts move only
//! for the party that really removed a file, so the reaper, the HTTP path and the
//! `files` command can race without counting a file twice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::store::{Key, Meta, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// `quota.total` would be exceeded: 507.
    #[error("storage quota reached")]
    Total,
    /// `quota.per_user` would be exceeded: 413.
    #[error("quota exceeded")]
    User,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// (expires, key) of every stored file, soonest first. Entries of files that
    /// were deleted or replaced stay until popped, and are checked then.
    expiry: BinaryHeap<Reverse<(u64, Key)>>,
    stored: Usage,
    /// How many stored files were created in each second: the oldest is the first.
    created: BTreeMap<u64, u32>,
    per_user: HashMap<String, u64>,
    reserved: u64,
    reserved_per_user: HashMap<String, u64>,
    /// Stored files per JWT slot: a slot holds one file (docs/limits.md).
    jwt_slots: HashMap<String, u32>,
}

#[derive(Debug)]
pub struct Index {
    inner: Mutex<Inner>,
    quota_total: u64,
    quota_per_user: u64,
}

impl Index {
    /// `0` means unlimited, for either quota.
    pub fn new(quota_total: u64, quota_per_user: u64) -> Index {
        Index {
            inner: Mutex::default(),
            quota_total,
            quota_per_user,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads every file's metadata once: live files are indexed, expired ones are
    /// returned for deletion.
    pub fn load(&self, store: &dyn Store, now: u64) -> io::Result<Vec<Meta>> {
        let mut expired = Vec::new();
        let mut inner = self.lock();
        store.for_each(&mut |meta| {
            if meta.is_expired(now) {
                expired.push(meta);
            } else {
                inner.add(&meta);
            }
        })?;
        Ok(expired)
    }

    /// Sets `size` bytes aside for an upload by `user`, or says which quota it
    /// would break. The reservation ends when the guard is committed or dropped.
    pub fn reserve(
        self: &Arc<Self>,
        size: u64,
        user: Option<&str>,
    ) -> Result<Reservation, QuotaError> {
        let mut inner = self.lock();
        if self.quota_total > 0 && inner.stored.bytes + inner.reserved + size > self.quota_total {
            return Err(QuotaError::Total);
        }
        if let Some(user) = user
            && self.quota_per_user > 0
        {
            let held = inner.per_user.get(user).copied().unwrap_or(0)
                + inner.reserved_per_user.get(user).copied().unwrap_or(0);
            if held + size > self.quota_per_user {
                return Err(QuotaError::User);
            }
        }
        inner.reserved += size;
        if let Some(user) = user {
            *inner.reserved_per_user.entry(user.to_owned()).or_default() += size;
        }
        Ok(Reservation {
            index: Arc::clone(self),
            size,
            user: user.map(str::to_owned),
        })
    }

    /// Bytes reserved by uploads in progress.
    pub fn reserved(&self) -> u64 {
        self.lock().reserved
    }

    /// Records a file that is now gone. Call only if this caller removed it.
    pub fn removed(&self, meta: &Meta) {
        self.lock().remove(meta);
    }

    /// Takes up to `max` entries that are due at `now`, soonest first. The caller
    /// checks each against the store: the file may be gone or replaced.
    pub fn take_due(&self, now: u64, max: usize) -> Vec<(u64, Key)> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match inner.expiry.peek() {
                Some(Reverse((expires, _))) if *expires <= now => {}
                _ => break,
            }
            if let Some(Reverse(entry)) = inner.expiry.pop() {
                due.push(entry);
            }
        }
        due
    }

    /// Returns entries taken by [`take_due`](Self::take_due) that could not be
    /// dealt with yet.
    pub fn put_back(&self, entries: Vec<(u64, Key)>) {
        if entries.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.expiry.extend(entries.into_iter().map(Reverse));
    }

    /// The earliest expiry in the index, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.lock().expiry.peek().map(|Reverse((e, _))| *e)
    }

    pub fn usage(&self) -> Usage {
        self.lock().stored
    }

    /// When the oldest stored file was created.
    pub fn oldest_created(&self) -> Option<u64> {
        self.lock().created.keys().next().copied()
    }

    /// Whether a file uploaded with a JWT for `slot` is stored.
    pub fn jwt_slot_taken(&self, slot: &str) -> bool {
        self.lock().jwt_slots.contains_key(slot)
    }

    pub fn user_bytes(&self, user: &str) -> u64 {
        self.lock().per_user.get(user).copied().unwrap_or(0)
    }
}

impl Inner {
    fn add(&mut self, meta: &Meta) {
        self.expiry.push(Reverse((meta.expires, meta.key())));
        self.stored.files += 1;
        self.stored.bytes += meta.size;
        *self.created.entry(meta.created).or_default() += 1;
        if let Some(user) = &meta.uploader {
            *self.per_user.entry(user.clone()).or_default() += meta.size;
        }
        if let Some(slot) = meta.jwt_slot() {
            *self.jwt_slots.entry(slot.to_owned()).or_default() += 1;
        }
    }

    fn remove(&mut self, meta: &Meta) {
        self.stored.files = self.stored.files.saturating_sub(1);
        self.stored.bytes = self.stored.bytes.saturating_sub(meta.size);
        if let Some(count) = self.created.get_mut(&meta.created) {
            *count -= 1;
            if *count == 0 {
                self.created.remove(&meta.created);
            }
        }
        if let Some(user) = &meta.uploader {
            release(&mut self.per_user, user, meta.size);
        }
        if let Some(slot) = meta.jwt_slot()
            && let Some(count) = self.jwt_slots.get_mut(slot)
        {
            *count -= 1;
            if *count == 0 {
                self.jwt_slots.remove(slot);
            }
        }
    }
}

fn release(map: &mut HashMap<String, u64>, user: &str, size: u64) {
    if let Some(held) = map.get_mut(user) {
        *held = held.saturating_sub(size);
        if *held == 0 {
            map.remove(user);
        }
    }
}

/// Bytes set aside for one upload in progress.
#[derive(Debug)]
pub struct Reservation {
    index: Arc<Index>,
    size: u64,
    user: Option<String>,
}

impl Reservation {
    /// The upload is stored: its bytes count as stored from now on.
    pub fn commit(self, meta: &Meta) {
        let mut inner = self.index.lock();
        inner.add(meta);
        // Drop releases the reservation.
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut inner = self.index.lock();
        inner.reserved = inner.reserved.saturating_sub(self.size);
        if let Some(user) = &self.user {
            release(&mut inner.reserved_per_user, user, self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scheme;

    fn meta(path: &str, size: u64, expires: u64, user: Option<&str>) -> Meta {
        Meta {
            path: path.into(),
            name: "f".into(),
            size,
            content_type: "text/plain".into(),
            sha256: String::new(),
            created: 0,
            expires,
            scheme: Scheme::Jwt,
            uploader: user.map(Into::into),
        }
    }

    #[test]
    fn reservations_cannot_overshoot_together() {
        let index = Arc::new(Index::new(100, 60));
        let a = index.reserve(50, Some("alice")).unwrap();
        assert_eq!(
            index.reserve(20, Some("alice")).unwrap_err(),
            QuotaError::User
        );
        let b = index.reserve(50, Some("bob")).unwrap();
        assert_eq!(index.reserve(1, None).unwrap_err(), QuotaError::Total);
        drop(b);
        let c = index.reserve(40, None).unwrap();
        a.commit(&meta("a/1", 50, 10, Some("alice")));
        assert_eq!(
            index.usage(),
            Usage {
                files: 1,
                bytes: 50
            }
        );
        assert_eq!(index.user_bytes("alice"), 50);
        assert_eq!(index.reserved(), 40);
        drop(c);
        assert_eq!(index.reserved(), 0);
        assert!(index.reserve(50, None).is_ok());
        assert_eq!(index.reserve(51, None).unwrap_err(), QuotaError::Total);
    }

    #[test]
    fn due_entries_come_out_in_expiry_order_in_batches() {
        let index = Arc::new(Index::new(0, 0));
        for (i, e) in [30u64, 10, 20, 40].into_iter().enumerate() {
            let m = meta(&format!("p/{i}"), 1, e, None);
            index.reserve(1, None).unwrap().commit(&m);
        }
        assert_eq!(index.next_expiry(), Some(10));
        assert!(index.take_due(9, 10).is_empty());
        let first = index.take_due(30, 2);
        assert_eq!(first.iter().map(|e| e.0).collect::<Vec<_>>(), [10, 20]);
        let second = index.take_due(30, 2);
        assert_eq!(second.iter().map(|e| e.0).collect::<Vec<_>>(), [30]);
        assert_eq!(index.next_expiry(), Some(40));
    }
}
