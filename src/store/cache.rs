//! The metadata of recently written or read files, kept in memory so that a hot
//! file costs no metadata read per request. Bounded: past `capacity` entries the
//! oldest go first. Files never change once stored, so an entry is either right
//! or removed (on delete).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Key, Meta};

#[derive(Debug)]
pub struct MetaCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each entry with the generation it was inserted at.
    map: HashMap<Key, (u64, Arc<Meta>)>,
    /// Insertion order. Entries removed or replaced since stay here until they
    /// reach the front (or a compaction), and are recognised by their generation.
    order: VecDeque<(u64, Key)>,
    next: u64,
    /// Moves on every removal: a disk read that began before a removal must not
    /// put back what the removal took out.
    removals: u64,
}

impl Inner {
    fn is_current(&self, generation: u64, key: &Key) -> bool {
        self.map.get(key).is_some_and(|(g, _)| *g == generation)
    }
}

impl MetaCache {
    pub fn new(capacity: usize) -> MetaCache {
        MetaCache {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Meta>> {
        self.lock().map.get(key).map(|(_, meta)| Arc::clone(meta))
    }

    /// A mark to pass to [`insert_unless_removed`](Self::insert_unless_removed)
    /// after a disk read.
    pub fn mark(&self) -> u64 {
        self.lock().removals
    }

    /// Inserts metadata read from disk, unless something was removed since `mark`.
    pub fn insert_unless_removed(&self, mark: u64, key: Key, meta: Arc<Meta>) {
        let mut inner = self.lock();
        if inner.removals == mark {
            self.insert_locked(&mut inner, key, meta);
        }
    }

    pub fn insert(&self, key: Key, meta: Arc<Meta>) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, key, meta);
    }

    fn insert_locked(&self, inner: &mut Inner, key: Key, meta: Arc<Meta>) {
        let generation = inner.next;
        inner.next += 1;
        inner.map.insert(key, (generation, meta));
        inner.order.push_back((generation, key));
        while inner.map.len() > self.capacity {
            let Some((g, k)) = inner.order.pop_front() else {
                break;
            };
            if inner.is_current(g, &k) {
                inner.map.remove(&k);
            }
        }
        if inner.order.len() > 2 * self.capacity {
            let order = std::mem::take(&mut inner.order);
            inner.order = order
                .into_iter()
                .filter(|(g, k)| inner.is_current(*g, k))
                .collect();
        }
    }

    pub fn remove(&self, key: &Key) {
        let mut inner = self.lock();
        inner.map.remove(key);
        inner.removals += 1;
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scheme;

    fn meta(n: u32) -> (Key, Arc<Meta>) {
        let meta = Meta {
            path: format!("dir/{n}.txt"),
            name: format!("{n}.txt"),
            size: u64::from(n),
            content_type: "text/plain".into(),
            sha256: String::new(),
            created: 0,
            expires: 1,
            scheme: Scheme::V1,
            uploader: None,
        };
        (meta.key(), Arc::new(meta))
    }

    #[test]
    fn keeps_the_newest_entries_up_to_capacity() {
        let cache = MetaCache::new(3);
        for n in 0..5 {
            let (key, m) = meta(n);
            cache.insert(key, m);
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&meta(0).0).is_none());
        assert!(cache.get(&meta(1).0).is_none());
        assert_eq!(cache.get(&meta(4).0).map(|m| m.size), Some(4));
    }

    #[test]
    fn a_reinserted_entry_is_not_evicted_by_its_old_position() {
        let cache = MetaCache::new(2);
        let (a, ma) = meta(1);
        let (b, mb) = meta(2);
        cache.insert(a, Arc::clone(&ma));
        cache.insert(b, mb);
        cache.remove(&a);
        cache.insert(a, ma);
        let (c, mc) = meta(3);
        cache.insert(c, mc);
        // `b` is now the oldest live entry; `a`'s first insertion must not count.
        assert!(cache.get(&a).is_some());
        assert!(cache.get(&b).is_none());
        assert!(cache.get(&c).is_some());
    }

    #[test]
    fn a_read_that_raced_a_removal_is_not_cached() {
        let cache = MetaCache::new(4);
        let (key, m) = meta(1);
        let mark = cache.mark();
        cache.remove(&key);
        cache.insert_unless_removed(mark, key, Arc::clone(&m));
        assert!(cache.get(&key).is_none());
        cache.insert_unless_removed(cache.mark(), key, m);
        assert!(cache.get(&key).is_some());
    }

    #[test]
    fn removals_do_not_let_the_order_grow_without_bound() {
        let cache = MetaCache::new(4);
        for round in 0..1000 {
            let (key, m) = meta(round % 3);
            cache.insert(key, m);
            cache.remove(&key);
        }
        assert_eq!(cache.len(), 0);
        assert!(cache.lock().order.len() <= 8);
    }
}
