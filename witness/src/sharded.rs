//! A map split into shards, each behind a [`ShortLock`], for the tables every renewal reads
//! (the clusters, the rate limiter's buckets): requests for different keys rarely wait for
//! one another.
//!
//! A key is hashed once, and that hash picks both its shard and its place in the shard. The
//! hash is SipHash-1-3 under keys drawn at random for this process (std's `RandomState`), so
//! nobody can choose names that collide; hashing each key twice, once for the shard and once
//! for the map inside it, was two SipHash runs per table per renewal.
use crate::shortlock::{lock, ShortLock};
use hashbrown::HashTable;
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::MutexGuard;

/// One shard: its entries, behind its lock.
type Table<K, V> = ShortLock<HashTable<(K, V)>>;

/// Entries `(K, V)` in a fixed number of shards.
pub struct Sharded<K, V> {
    hasher: RandomState,
    shards: Box<[Table<K, V>]>,
}

/// One key's shard, locked, with the key's hash: look the key up, or insert it.
pub struct Shard<'a, K, V> {
    hash: u64,
    hasher: &'a RandomState,
    table: MutexGuard<'a, HashTable<(K, V)>>,
}

impl<K: Hash + Eq, V> Sharded<K, V> {
    pub fn new(shards: usize) -> Sharded<K, V> {
        Sharded {
            hasher: RandomState::new(),
            shards: (0..shards.max(1))
                .map(|_| ShortLock::new(HashTable::new()))
                .collect(),
        }
    }

    /// Locks the shard of `key`.
    pub fn lock<Q>(&self, key: &Q) -> Shard<'_, K, V>
    where
        K: Borrow<Q>,
        Q: Hash + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        // Bits 32 and up: a shard's table places entries by the low bits and tags them with the
        // top seven, so the shard must not be chosen by either.
        let shard = ((hash >> 32) as usize) % self.shards.len();
        Shard {
            hash,
            hasher: &self.hasher,
            table: lock(&self.shards[shard]),
        }
    }

    /// Runs `f` on every shard's table in turn, each locked only while `f` runs.
    pub fn each_shard(&self, mut f: impl FnMut(&mut HashTable<(K, V)>)) {
        for shard in self.shards.iter() {
            f(&mut lock(shard));
        }
    }
}

impl<K: Hash + Eq, V> Shard<'_, K, V> {
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.table
            .find(self.hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        self.table
            .find_mut(self.hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    /// Inserts `key`, which must be the key this shard was locked for and not be in it yet
    /// (looked up first, under the same lock).
    pub fn insert_new(&mut self, key: K, value: V) {
        debug_assert_eq!(
            self.hasher.hash_one(&key),
            self.hash,
            "a key inserted into the shard of another key"
        );
        let hasher = self.hasher;
        self.table
            .insert_unique(self.hash, (key, value), |(k, _)| hasher.hash_one(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_borrowed_form_and_every_entry_is_seen_once() {
        let map: Sharded<String, u32> = Sharded::new(8);
        for i in 0..2_000u32 {
            let key = format!("witness://cluster-{i}/a/a1");
            let mut shard = map.lock(key.as_str());
            assert!(shard.get(key.as_str()).is_none(), "{key} before insertion");
            shard.insert_new(key.clone(), i);
        }
        for i in 0..2_000u32 {
            let key = format!("witness://cluster-{i}/a/a1");
            let mut shard = map.lock(key.as_str());
            assert_eq!(shard.get(key.as_str()), Some(&i));
            *shard.get_mut(key.as_str()).expect("present") += 1;
            assert_eq!(shard.get(&key), Some(&(i + 1)));
        }
        assert!(map
            .lock("witness://cluster-2000/a/a1")
            .get("witness://cluster-2000/a/a1")
            .is_none());
        let mut seen = Vec::new();
        let mut shards_used = 0;
        map.each_shard(|t| {
            shards_used += usize::from(!t.is_empty());
            seen.extend(t.iter().map(|(_, v)| *v));
            // Some dropped in place, as a pruning pass does.
            t.retain(|(_, v)| *v % 2 == 0);
        });
        seen.sort_unstable();
        assert_eq!(seen, (1..=2_000).collect::<Vec<_>>());
        assert!(shards_used > 1, "every key went to one shard");
        let mut left = 0;
        map.each_shard(|t| left += t.len());
        assert_eq!(left, 1_000);
    }
}
