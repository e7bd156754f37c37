//! A map split into a fixed number of shards, each behind its own `Arc`, so that two
//! snapshot versions share every shard a change did not touch: a change that adds one
//! endpoint among 100k copies one shard (a few hundred entries), not the whole index.
//!
//! The shard of a key comes from bits the key already has (the low bits of an address or
//! a handle, which the management thread hands out in sequence), so a lookup costs one
//! pointer more than a plain map, not a second hash.

use std::hash::Hash;
use std::sync::Arc;

use crate::tables::fasthash::{fast_map, FastMap};

/// Shards per map: at 1M entries a change copies ~4k of them; at 10 entries the map
/// costs 256 empty tables (no allocation each).
pub const SHARDS: usize = 256;

/// Keys that say which shard they live in (any value; it is reduced modulo [`SHARDS`]).
pub trait ShardKey {
    fn shard(&self) -> usize;
}

impl ShardKey for u32 {
    #[inline]
    fn shard(&self) -> usize {
        *self as usize
    }
}

/// (attachment, IPv4).
impl ShardKey for (u16, u32) {
    #[inline]
    fn shard(&self) -> usize {
        (self.1 ^ u32::from(self.0)) as usize
    }
}

/// (attachment, IPv6): the low bits of the address, where allocation counts.
impl ShardKey for (u16, u128) {
    #[inline]
    fn shard(&self) -> usize {
        #[allow(clippy::cast_possible_truncation)] // the low 32 bits are the point
        let low = self.1 as u32;
        (low ^ u32::from(self.0)) as usize
    }
}

/// (attachment, IPv4, protocol, port): by address only, so that an endpoint's listeners
/// share a shard with its address.
impl ShardKey for (u16, u32, u8, u16) {
    #[inline]
    fn shard(&self) -> usize {
        (self.1 ^ u32::from(self.0)) as usize
    }
}

/// See the module documentation. Cloning is cheap (one reference per shard); the first
/// write to a shared shard copies that shard only.
#[derive(Debug)]
pub struct ShardedMap<K, V> {
    shards: Box<[Arc<FastMap<K, V>>]>,
    len: usize,
}

impl<K, V> Clone for ShardedMap<K, V> {
    fn clone(&self) -> Self {
        ShardedMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<K: Eq + Hash + Clone + ShardKey, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl<K: Eq + Hash + Clone + ShardKey, V: Clone> ShardedMap<K, V> {
    /// An empty map with room for about `n` entries in all.
    pub fn with_capacity(n: usize) -> Self {
        let each = n.div_ceil(SHARDS);
        ShardedMap {
            shards: (0..SHARDS).map(|_| Arc::new(fast_map(each))).collect(),
            len: 0,
        }
    }

    #[inline]
    fn index(k: &K) -> usize {
        k.shard() % SHARDS
    }

    #[inline]
    pub fn get(&self, k: &K) -> Option<&V> {
        self.shards[Self::index(k)].get(k)
    }

    #[inline]
    pub fn contains_key(&self, k: &K) -> bool {
        self.get(k).is_some()
    }

    /// Inserts, copying the key's shard first if another version shares it.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let old = Arc::make_mut(&mut self.shards[Self::index(&k)]).insert(k, v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes, copying the key's shard first if another version shares it (and only
    /// when the key is there).
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let i = Self::index(k);
        if !self.shards[i].contains_key(k) {
            return None;
        }
        let old = Arc::make_mut(&mut self.shards[i]).remove(k);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Removes `k` if its value satisfies `pred`, copying the shard only then.
    pub fn remove_if(&mut self, k: &K, pred: impl FnOnce(&V) -> bool) -> bool {
        let i = Self::index(k);
        if !self.shards[i].get(k).is_some_and(pred) {
            return false;
        }
        Arc::make_mut(&mut self.shards[i]).remove(k);
        self.len -= 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, shard by shard (no order to rely on).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.shards.iter().flat_map(|s| s.iter())
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// How many shards this map shares with `other` (the same table, not equal ones).
    pub fn shared_with(&self, other: &Self) -> usize {
        self.shards
            .iter()
            .zip(other.shards.iter())
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_copies_one_shard_and_leaves_the_other_version_whole() {
        let mut a: ShardedMap<u32, u32> = ShardedMap::with_capacity(10_000);
        for i in 0..10_000 {
            a.insert(i, i * 2);
        }
        let mut b = a.clone();
        assert_eq!(b.shared_with(&a), SHARDS);
        b.insert(7, 1);
        b.remove(&8);
        b.remove(&1_000_000); // absent: copies nothing
        assert_eq!(b.shared_with(&a), SHARDS - 2);
        assert_eq!(
            (a.get(&7), a.get(&8), a.len()),
            (Some(&14), Some(&16), 10_000)
        );
        assert_eq!((b.get(&7), b.get(&8), b.len()), (Some(&1), None, 9_999));
        assert_eq!(b.iter().count(), 9_999);
    }

    #[test]
    fn listeners_of_an_address_share_its_shard() {
        let k = (3u16, 0x0a00_0105u32);
        assert_eq!((k.0, k.1, 6u8, 443u16).shard() % SHARDS, k.shard() % SHARDS);
    }
}
