//! The embedded index: everything in this process's memory, rebuilt from the
//! store at start-up. Every file's metadata (a few hundred bytes each), its
//! expiry in time order (so a reaper pass that finds nothing to do costs one
//! look at the heap), and the bytes held in total and per uploader (so quotas
//! are checked without touching the disk).
//!
//! Claims, reservations and the files they become move under one lock, so
//! concurrent uploads cannot overshoot a quota together, and a file is counted
//! out only by the one party that took it out.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{Index, IndexError, Intent, QuotaError, Stats, Ticket, Usage};
use crate::store::{Key, Meta};

#[derive(Debug, Default)]
struct Inner {
    files: HashMap<Key, Arc<Meta>>,
    /// (expires, key) of every stored file, soonest first. Entries of files that
    /// were removed or replaced stay until popped, and are checked then.
    expiry: BinaryHeap<Reverse<(u64, Key)>>,
    stored: Usage,
    /// How many stored files were created in each second: the oldest is the first.
    created: BTreeMap<u64, u32>,
    per_user: HashMap<String, u64>,
    /// Stored files per JWT slot: a slot holds one file (docs/limits.md).
    jwt_slots: HashMap<String, u32>,
    /// Paths and JWT slots that an upload holds.
    claimed: HashSet<Key>,
    claims: HashMap<u64, Claim>,
    next_claim: u64,
    reserved: u64,
    reserved_per_user: HashMap<String, u64>,
}

#[derive(Debug)]
struct Claim {
    key: Key,
    slot: Option<Key>,
    size: u64,
    user: Option<String>,
}

#[derive(Debug)]
pub struct LocalIndex {
    inner: Arc<Mutex<Inner>>,
    quota_total: u64,
    quota_per_user: u64,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LocalIndex {
    /// `0` means unlimited, for either quota.
    pub fn new(quota_total: u64, quota_per_user: u64) -> LocalIndex {
        LocalIndex {
            inner: Arc::default(),
            quota_total,
            quota_per_user,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn begin_now(&self, intent: Intent<'_>) -> Result<Ticket, IndexError> {
        let mut inner = self.lock();
        let slot = intent.jwt_slot.map(Key::for_slot);
        if inner.claimed.contains(&intent.key) || slot.is_some_and(|s| inner.claimed.contains(&s)) {
            return Err(IndexError::Exists);
        }
        let existing = inner.files.get(&intent.key).cloned();
        if existing.as_ref().is_some_and(|m| !m.is_expired(intent.now)) {
            return Err(IndexError::Exists);
        }
        if intent
            .jwt_slot
            .is_some_and(|s| inner.jwt_slots.contains_key(s))
        {
            return Err(IndexError::Exists);
        }
        let held = inner.stored.bytes + inner.reserved;
        if self.quota_total > 0 && held + intent.size > self.quota_total {
            return Err(QuotaError::Total.into());
        }
        if let Some(user) = intent.uploader
            && self.quota_per_user > 0
        {
            let held = inner.per_user.get(user).copied().unwrap_or(0)
                + inner.reserved_per_user.get(user).copied().unwrap_or(0);
            if held + intent.size > self.quota_per_user {
                return Err(QuotaError::User.into());
            }
        }
        // Past its expiry the path is free again, whether or not the reaper came.
        let replaced = existing.and_then(|m| inner.take(&m.key()));
        inner.claimed.insert(intent.key);
        inner.claimed.extend(slot);
        inner.reserved += intent.size;
        if let Some(user) = intent.uploader {
            *inner.reserved_per_user.entry(user.to_owned()).or_default() += intent.size;
        }
        let id = inner.next_claim;
        inner.next_claim += 1;
        inner.claims.insert(
            id,
            Claim {
                key: intent.key,
                slot,
                size: intent.size,
                user: intent.uploader.map(str::to_owned),
            },
        );
        let shared = Arc::clone(&self.inner);
        Ok(Ticket::new(intent.key, replaced, id, move |id| {
            lock(&shared).release(id);
        }))
    }
}

impl Inner {
    fn add(&mut self, meta: Arc<Meta>) -> bool {
        let key = meta.key();
        if self.files.contains_key(&key) {
            return false;
        }
        self.expiry.push(Reverse((meta.expires, key)));
        self.stored.files += 1;
        self.stored.bytes += meta.size;
        *self.created.entry(meta.created).or_default() += 1;
        if let Some(user) = &meta.uploader {
            *self.per_user.entry(user.clone()).or_default() += meta.size;
        }
        if let Some(slot) = meta.jwt_slot() {
            *self.jwt_slots.entry(slot.to_owned()).or_default() += 1;
        }
        self.files.insert(key, meta);
        true
    }

    /// Takes the file at `key` out, with its accounting.
    fn take(&mut self, key: &Key) -> Option<Arc<Meta>> {
        let meta = self.files.remove(key)?;
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
        Some(meta)
    }

    /// Ends claim `id`: its path and slot are free, its bytes no longer reserved.
    fn release(&mut self, id: u64) {
        let Some(claim) = self.claims.remove(&id) else {
            return;
        };
        self.claimed.remove(&claim.key);
        if let Some(slot) = &claim.slot {
            self.claimed.remove(slot);
        }
        self.reserved = self.reserved.saturating_sub(claim.size);
        if let Some(user) = &claim.user {
            release(&mut self.reserved_per_user, user, claim.size);
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

#[async_trait]
impl Index for LocalIndex {
    async fn get(&self, key: &Key) -> Result<Option<Arc<Meta>>, IndexError> {
        Ok(self.lock().files.get(key).cloned())
    }

    async fn begin(&self, intent: Intent<'_>) -> Result<Ticket, IndexError> {
        self.begin_now(intent)
    }

    async fn commit(&self, ticket: Ticket, meta: &Meta) -> Result<(), IndexError> {
        let mut inner = self.lock();
        // The file is counted before the claim goes: no moment when neither
        // holds the path.
        inner.add(Arc::new(meta.clone()));
        inner.release(ticket.id());
        drop(inner);
        ticket.settle();
        Ok(())
    }

    async fn remove(
        &self,
        key: &Key,
        expect: Option<&Meta>,
    ) -> Result<Option<Arc<Meta>>, IndexError> {
        let mut inner = self.lock();
        if let Some(expect) = expect
            && inner.files.get(key).is_none_or(|m| **m != *expect)
        {
            return Ok(None);
        }
        Ok(inner.take(key))
    }

    async fn take_due(&self, now: u64, max: usize) -> Result<Vec<Arc<Meta>>, IndexError> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        while due.len() < max {
            match inner.expiry.peek() {
                Some(Reverse((expires, _))) if *expires <= now => {}
                _ => break,
            }
            let Some(Reverse((expires, key))) = inner.expiry.pop() else {
                break;
            };
            // Gone already, or replaced by a newer file with its own entry.
            if inner.files.get(&key).is_some_and(|m| m.expires == expires)
                && let Some(meta) = inner.take(&key)
            {
                due.push(meta);
            }
        }
        Ok(due)
    }

    async fn list(&self) -> Result<Vec<Arc<Meta>>, IndexError> {
        Ok(self.lock().files.values().cloned().collect())
    }

    async fn adopt(&self, meta: Meta) -> Result<bool, IndexError> {
        Ok(self.lock().add(Arc::new(meta)))
    }

    async fn stats(&self) -> Result<Stats, IndexError> {
        let mut inner = self.lock();
        // Entries of files gone since are dropped here rather than reported.
        while let Some(Reverse((expires, key))) = inner.expiry.peek()
            && inner.files.get(key).is_none_or(|m| m.expires != *expires)
        {
            inner.expiry.pop();
        }
        Ok(Stats {
            usage: inner.stored,
            reserved: inner.reserved,
            oldest_created: inner.created.keys().next().copied(),
            next_expiry: inner.expiry.peek().map(|Reverse((e, _))| *e),
        })
    }

    async fn check(&self) -> Option<String> {
        None
    }
}
