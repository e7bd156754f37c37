//! A list that versions of the state share in chunks.
//!
//! The store copies its state for every request and keeps the one in force beside the one
//! being prepared; with a million endpoints a plain `Vec` made each copy, each comparison
//! and each diff walk 200 MB. [`Chunked`] keeps the objects in chunks of at most
//! [`CHUNK`] behind `Arc`s: a copy clones the pointers, a change copies the one chunk it
//! writes to (`Arc::make_mut`), and two versions compare and diff chunk by chunk, skipping
//! every chunk they still share. It serialises as a plain sequence, so the state file and
//! the configuration do not see the chunks.

use std::fmt;
use std::ops::{Index, IndexMut, Range};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The most objects in one chunk: small enough that copying the chunk a change writes to
/// is cheap (512 endpoints are ~100 KB), large enough that a version of a million objects
/// is ~2,000 pointers.
pub const CHUNK: usize = 512;

/// Where an object lies: its chunk (the same in every version that shares it) and its
/// place there. Meaningful only while some version holds the chunk, and only to
/// [`Chunked::position_of`], which finds it again in another version in O(chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    chunk: usize,
    at: usize,
}

/// A list of `T` shared in chunks between its clones (see the module's description).
///
/// Every chunk holds at least one object; objects are appended to the last chunk until it
/// is full. Positions are those of the flat list, as in a `Vec`.
pub struct Chunked<T> {
    chunks: Vec<Arc<Vec<T>>>,
    /// The position of each chunk's first object.
    starts: Vec<usize>,
    len: usize,
}

impl<T> Chunked<T> {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            chunks: Vec::new(),
            starts: Vec::new(),
            len: 0,
        }
    }

    /// The number of objects.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The objects in order.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            chunks: &self.chunks,
            front: [].iter(),
            back: [].iter(),
            left: self.len,
        }
    }

    /// The objects at the positions of `range` (cut to the list), in order; finding the
    /// start costs a search among the chunks, not a walk.
    pub fn iter_range(&self, range: Range<usize>) -> Iter<'_, T> {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        let (Some((k, j)), Some((last, to))) =
            (self.locate(start), self.locate(end.wrapping_sub(1)))
        else {
            return Iter {
                chunks: &[],
                front: [].iter(),
                back: [].iter(),
                left: 0,
            };
        };
        let (front, chunks, back) = if k == last {
            (self.chunks[k][j..=to].iter(), &self.chunks[..0], [].iter())
        } else {
            (
                self.chunks[k][j..].iter(),
                &self.chunks[k + 1..last],
                self.chunks[last][..=to].iter(),
            )
        };
        Iter {
            chunks,
            front,
            back,
            left: end - start,
        }
    }

    /// The chunk holding position `i` and the position within it.
    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        // The last chunk whose start is at or before `i`.
        let k = self.starts.partition_point(|&s| s <= i) - 1;
        Some((k, i - self.starts[k]))
    }

    /// The object at position `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.locate(i).map(|(k, j)| &self.chunks[k][j])
    }

    /// The first object.
    pub fn first(&self) -> Option<&T> {
        self.chunks.first().and_then(|c| c.first())
    }

    /// The last object.
    pub fn last(&self) -> Option<&T> {
        self.chunks.last().and_then(|c| c.last())
    }

    /// The objects at the positions of `range` (cut to the list), each with where it lies
    /// ([`Place`]), in order.
    pub fn iter_placed(&self, range: Range<usize>) -> impl Iterator<Item = (Place, &T)> + '_ {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        let first = self
            .starts
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        (self.chunks[first..].iter().zip(&self.starts[first..]))
            .take_while(move |(_, &s)| s < end)
            .flat_map(move |(c, &s)| {
                let chunk = Arc::as_ptr(c).addr();
                let (lo, hi) = (start.saturating_sub(s), (end - s).min(c.len()));
                (c[lo..hi].iter().enumerate()).map(move |(j, x)| (Place { chunk, at: lo + j }, x))
            })
    }

    /// The position of what lies at `place` in this version, if it shares that chunk:
    /// O(chunks), no look at the objects.
    pub fn position_of(&self, place: Place) -> Option<usize> {
        let k = (self.chunks.iter()).position(|c| Arc::as_ptr(c).addr() == place.chunk)?;
        (place.at < self.chunks[k].len()).then(|| self.starts[k] + place.at)
    }

    /// [`position_of`](Self::position_of) for many places: the chunks are looked up
    /// once, then each place in O(1).
    pub fn locator(&self) -> impl Fn(Place) -> Option<usize> + '_ {
        let chunks: crate::fasthash::FastMap<usize, (usize, usize)> = (self.chunks.iter())
            .zip(&self.starts)
            .map(|(c, &s)| (Arc::as_ptr(c).addr(), (s, c.len())))
            .collect();
        move |place| {
            let &(start, len) = chunks.get(&place.chunk)?;
            (place.at < len).then_some(start + place.at)
        }
    }

    /// The first position where `pred` fails, in a list where it holds for a prefix (a
    /// sorted list's place for a key): a search among the chunks, then within one.
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // The first chunk whose last object fails holds the point (its start if none).
        let k = self
            .chunks
            .partition_point(|c| c.last().is_some_and(&mut pred));
        match self.chunks.get(k) {
            Some(c) => self.starts[k] + c.partition_point(pred),
            None => self.len,
        }
    }

    /// How many objects at the start and at the end of `self` and `other` lie in chunks the
    /// two share (the same chunk at the same position, counted from that end): those are
    /// equal without a look at them. The two counts do not overlap.
    pub fn shared_ends(&self, other: &Self) -> (usize, usize) {
        let head_chunks = self
            .chunks
            .iter()
            .zip(&other.chunks)
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let tail_chunks = self.chunks[head_chunks..]
            .iter()
            .rev()
            .zip(other.chunks[head_chunks..].iter().rev())
            .take_while(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        let count = |chunks: &[Arc<Vec<T>>]| chunks.iter().map(|c| c.len()).sum::<usize>();
        (
            count(&self.chunks[..head_chunks]),
            count(&self.chunks[self.chunks.len() - tail_chunks..]),
        )
    }

    /// The positions in `self` and in `other` outside the chunks the two share at either
    /// end ([`shared_ends`](Self::shared_ends)): where whatever differs between them lies.
    pub fn unshared(&self, other: &Self) -> (Range<usize>, Range<usize>) {
        let (head, tail) = self.shared_ends(other);
        (head..self.len - tail, head..other.len - tail)
    }

    /// Recomputes the chunks' starts from chunk `from` on, after a change of lengths there.
    fn restart(&mut self, from: usize) {
        self.starts.truncate(from);
        let mut at = match from {
            0 => 0,
            k => self.starts[k - 1] + self.chunks[k - 1].len(),
        };
        for c in &self.chunks[from..] {
            self.starts.push(at);
            at += c.len();
        }
        self.len = at;
    }
}

impl<T: Clone> Chunked<T> {
    /// The object at position `i`, to change: copies its chunk if another version shares it.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let (k, j) = self.locate(i)?;
        Some(&mut Arc::make_mut(&mut self.chunks[k])[j])
    }

    /// The last object, to change.
    pub fn last_mut(&mut self) -> Option<&mut T> {
        let i = self.len.checked_sub(1)?;
        self.get_mut(i)
    }

    /// Every object, to change: copies every chunk another version shares, so it costs a
    /// whole copy; for the rare change of many objects.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.chunks
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
    }

    /// Applies `f` to every object for which `which` holds; only the chunks holding one are
    /// copied.
    pub fn modify_where(&mut self, mut which: impl FnMut(&T) -> bool, mut f: impl FnMut(&mut T)) {
        for c in &mut self.chunks {
            if c.iter().any(&mut which) {
                Arc::make_mut(c)
                    .iter_mut()
                    .filter(|x| which(x))
                    .for_each(&mut f);
            }
        }
    }

    /// Appends `x`.
    pub fn push(&mut self, x: T) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => Arc::make_mut(c).push(x),
            _ => {
                self.starts.push(self.len);
                let mut c = Vec::with_capacity(CHUNK);
                c.push(x);
                self.chunks.push(Arc::new(c));
            }
        }
        self.len += 1;
    }

    /// Puts `x` at position `i`, moving those after it, as `Vec::insert` does (and, as it
    /// does, panics when `i` is beyond the end). A chunk that overflows is split in two.
    pub fn insert(&mut self, i: usize, x: T) {
        if i == self.len {
            self.push(x);
            return;
        }
        let Some((k, j)) = self.locate(i) else {
            panic!(
                "insertion index {i} is beyond the end (length {})",
                self.len
            );
        };
        let c = Arc::make_mut(&mut self.chunks[k]);
        c.insert(j, x);
        if c.len() > CHUNK {
            let upper = c.split_off(c.len() / 2);
            self.chunks.insert(k + 1, Arc::new(upper));
        }
        self.restart(k);
    }

    /// Removes and returns the object at position `i`, as `Vec::remove` does (and, as it
    /// does, panics when `i` is out of bounds).
    pub fn remove(&mut self, i: usize) -> T {
        let Some((k, j)) = self.locate(i) else {
            panic!("removal index {i} is out of bounds (length {})", self.len);
        };
        let x = Arc::make_mut(&mut self.chunks[k]).remove(j);
        self.settle(k);
        x
    }

    /// Keeps the objects for which `keep` holds, each asked once, in order. Only chunks
    /// that lose an object are copied.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        let mut k = 0;
        let mut first_changed = None;
        let mut kept = Vec::with_capacity(CHUNK);
        while k < self.chunks.len() {
            kept.clear();
            kept.extend(self.chunks[k].iter().map(&mut keep));
            if kept.iter().all(|&x| x) {
                k += 1;
                continue;
            }
            first_changed.get_or_insert(k);
            let mut verdicts = kept.iter();
            Arc::make_mut(&mut self.chunks[k]).retain(|_| verdicts.next() == Some(&true));
            if self.chunks[k].is_empty() {
                self.chunks.remove(k);
            } else {
                k += 1;
            }
        }
        if let Some(k) = first_changed {
            self.restart(k);
        }
    }

    /// After chunk `k` shrank: drops it when empty, merges it into a neighbour when the two
    /// fit in one chunk (so that the chunks stay on average at least half full), and
    /// recomputes the starts.
    fn settle(&mut self, k: usize) {
        if self.chunks[k].is_empty() {
            self.chunks.remove(k);
            self.restart(k);
            return;
        }
        let fits = |a: usize, b: usize| a + b <= CHUNK;
        let merge =
            if k + 1 < self.chunks.len() && fits(self.chunks[k].len(), self.chunks[k + 1].len()) {
                Some(k)
            } else if k > 0 && fits(self.chunks[k - 1].len(), self.chunks[k].len()) {
                Some(k - 1)
            } else {
                None
            };
        match merge {
            Some(m) => {
                let next = self.chunks.remove(m + 1);
                let next = Arc::try_unwrap(next).unwrap_or_else(|shared| (*shared).clone());
                Arc::make_mut(&mut self.chunks[m]).extend(next);
                self.restart(m);
            }
            None => self.restart(k),
        }
    }

    /// Removes every object.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Reverses the order of the objects (a whole copy).
    pub fn reverse(&mut self) {
        *self = self.iter().rev().cloned().collect();
    }

    /// The objects as a `Vec`.
    pub fn to_vec(&self) -> Vec<T> {
        self.iter().cloned().collect()
    }

    /// The objects as a `Vec`, copying only the chunks another version shares.
    pub fn into_vec(self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len);
        for c in self.chunks {
            match Arc::try_unwrap(c) {
                Ok(c) => out.extend(c),
                Err(shared) => out.extend_from_slice(&shared),
            }
        }
        out
    }
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Chunked<T> {
    /// The chunks are shared, not copied: O(chunks).
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            starts: self.starts.clone(),
            len: self.len,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.chunks.clone_from(&source.chunks);
        self.starts.clone_from(&source.starts);
        self.len = source.len;
    }
}

impl<T: PartialEq> PartialEq for Chunked<T> {
    /// Chunk by chunk where the two are chunked alike, a shared chunk equal without a look.
    fn eq(&self, other: &Self) -> bool {
        if self.len != other.len {
            return false;
        }
        if self.starts == other.starts {
            return self
                .chunks
                .iter()
                .zip(&other.chunks)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a == b);
        }
        self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for Chunked<T> {}

impl<T: fmt::Debug> fmt::Debug for Chunked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        match self.get(i) {
            Some(x) => x,
            None => panic!("index {i} is out of bounds (length {})", self.len),
        }
    }
}

impl<T: Clone> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(i) {
            Some(x) => x,
            None => panic!("index {i} is out of bounds (length {len})"),
        }
    }
}

impl<T: Clone> Extend<T> for Chunked<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for x in items {
            self.push(x);
        }
    }
}

impl<T: Clone> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut out = Self::new();
        out.extend(items);
        out
    }
}

impl<T> From<Vec<T>> for Chunked<T> {
    fn from(v: Vec<T>) -> Self {
        let mut out = Self::new();
        let mut items = v.into_iter().peekable();
        while items.peek().is_some() {
            let c: Vec<T> = items.by_ref().take(CHUNK).collect();
            out.starts.push(out.len);
            out.len += c.len();
            out.chunks.push(Arc::new(c));
        }
        out
    }
}

impl<'a, T> IntoIterator for &'a Chunked<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Serialize> Serialize for Chunked<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Chunked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::deserialize(d).map(Self::from)
    }
}

/// A list of the state's objects, a `Vec` or a [`Chunked`] (whose versions share chunks
/// that need no look), for code that reads and edits either.
pub trait ObjectList<T> {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn at(&self, i: usize) -> &T;
    /// The positions in `self` and in `other` where the two may differ.
    fn differing(&self, other: &Self) -> (Range<usize>, Range<usize>);
    /// The first position in `range` where `f` holds.
    fn position_in(&self, range: Range<usize>, f: impl FnMut(&T) -> bool) -> Option<usize>;
    fn keep(&mut self, keep: impl FnMut(&T) -> bool);
    /// Replaces the object at `i`, copying no more of the list than that takes.
    fn replace(&mut self, i: usize, x: T);
    fn append(&mut self, x: T);
    /// Replaces the list with `f` of its objects (a whole copy, for a change of many).
    fn rebuild(&mut self, f: impl FnOnce(Vec<T>) -> Vec<T>);
}

impl<T> ObjectList<T> for Vec<T> {
    fn len(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> &T {
        &self[i]
    }
    fn differing(&self, other: &Self) -> (Range<usize>, Range<usize>) {
        (0..self.len(), 0..other.len())
    }
    fn position_in(&self, range: Range<usize>, f: impl FnMut(&T) -> bool) -> Option<usize> {
        let start = range.start;
        let within = self.get(range).unwrap_or_default();
        within.iter().position(f).map(|i| start + i)
    }
    fn keep(&mut self, keep: impl FnMut(&T) -> bool) {
        self.retain(keep);
    }
    fn replace(&mut self, i: usize, x: T) {
        self[i] = x;
    }
    fn append(&mut self, x: T) {
        self.push(x);
    }
    fn rebuild(&mut self, f: impl FnOnce(Vec<T>) -> Vec<T>) {
        *self = f(std::mem::take(self));
    }
}

impl<T: Clone> ObjectList<T> for Chunked<T> {
    fn len(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> &T {
        &self[i]
    }
    fn differing(&self, other: &Self) -> (Range<usize>, Range<usize>) {
        self.unshared(other)
    }
    fn position_in(&self, range: Range<usize>, f: impl FnMut(&T) -> bool) -> Option<usize> {
        let start = range.start;
        self.iter_range(range).position(f).map(|i| start + i)
    }
    fn keep(&mut self, keep: impl FnMut(&T) -> bool) {
        self.retain(keep);
    }
    fn replace(&mut self, i: usize, x: T) {
        self[i] = x;
    }
    fn append(&mut self, x: T) {
        self.push(x);
    }
    fn rebuild(&mut self, f: impl FnOnce(Vec<T>) -> Vec<T>) {
        *self = f(std::mem::take(self).into_vec()).into();
    }
}

/// The objects of a [`Chunked`] in order, from either end.
pub struct Iter<'a, T> {
    chunks: &'a [Arc<Vec<T>>],
    front: std::slice::Iter<'a, T>,
    back: std::slice::Iter<'a, T>,
    left: usize,
}

impl<T> Clone for Iter<'_, T> {
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks,
            front: self.front.clone(),
            back: self.back.clone(),
            left: self.left,
        }
    }
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(x) = self.front.next() {
                self.left -= 1;
                return Some(x);
            }
            match self.chunks.split_first() {
                Some((c, rest)) => {
                    self.front = c.iter();
                    self.chunks = rest;
                }
                None => {
                    let x = self.back.next()?;
                    self.left -= 1;
                    return Some(x);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<'a, T> DoubleEndedIterator for Iter<'a, T> {
    fn next_back(&mut self) -> Option<&'a T> {
        loop {
            if let Some(x) = self.back.next_back() {
                self.left -= 1;
                return Some(x);
            }
            match self.chunks.split_last() {
                Some((c, rest)) => {
                    self.back = c.iter();
                    self.chunks = rest;
                }
                None => {
                    let x = self.front.next_back()?;
                    self.left -= 1;
                    return Some(x);
                }
            }
        }
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").field("left", &self.left).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: u32) -> Chunked<u32> {
        (0..n).collect()
    }

    /// The invariants every operation must keep: no empty chunk, none over CHUNK, the
    /// starts and length right.
    fn check(c: &Chunked<u32>) {
        let mut at = 0;
        assert_eq!(c.starts.len(), c.chunks.len());
        for (k, chunk) in c.chunks.iter().enumerate() {
            assert!(
                !chunk.is_empty() && chunk.len() <= CHUNK,
                "chunk {k}: {}",
                chunk.len()
            );
            assert_eq!(c.starts[k], at);
            at += chunk.len();
        }
        assert_eq!(c.len, at);
    }

    #[test]
    fn behaves_as_a_vec_through_every_operation() {
        let mut v: Vec<u32> = (0..3000).collect();
        let mut c = list(3000);
        check(&c);
        for (i, x) in v.iter().enumerate() {
            assert_eq!(c[i], *x);
        }
        assert!(c.iter().eq(v.iter()));
        assert!(c.iter().rev().eq(v.iter().rev()));
        assert_eq!(c.iter().len(), 3000);
        // From both ends at once.
        let mut it = c.iter();
        assert_eq!((it.next(), it.next_back()), (Some(&0), Some(&2999)));
        assert_eq!(it.len(), 2998);
        assert_eq!(it.count(), 2998);
        for i in [0, 511, 512, 513, 1500, 2990] {
            let x = c.remove(i);
            assert_eq!(x, v.remove(i));
            check(&c);
        }
        c.retain(|x| x % 7 != 0);
        v.retain(|x| x % 7 != 0);
        check(&c);
        assert_eq!(c.to_vec(), v);
        for x in c.iter_mut() {
            *x += 1;
        }
        v.iter_mut().for_each(|x| *x += 1);
        c[5] = 99;
        v[5] = 99;
        *c.last_mut().expect("an object") = 7;
        *v.last_mut().expect("an object") = 7;
        c.push(100_000);
        v.push(100_000);
        check(&c);
        assert_eq!(c.to_vec(), v);
        assert_eq!((c.first(), c.last()), (v.first(), v.last()));
        assert_eq!(c.get(v.len()), None);
        c.reverse();
        v.reverse();
        assert_eq!(c.to_vec(), v);
        // Removing everything, one by one from the front, leaves no chunk behind.
        while !c.is_empty() {
            c.remove(0);
            check(&c);
        }
        assert!(c.chunks.is_empty());
    }

    #[test]
    fn a_copy_shares_every_chunk_and_a_change_copies_one() {
        let a = list(5000);
        let mut b = a.clone();
        assert_eq!(b.shared_ends(&a), (5000, 0));
        b[2000] = 0;
        let k = 2000 / CHUNK;
        for (j, (x, y)) in a.chunks.iter().zip(&b.chunks).enumerate() {
            assert_eq!(Arc::ptr_eq(x, y), j != k, "chunk {j}");
        }
        assert_eq!(b.shared_ends(&a), (k * CHUNK, 5000 - (k + 1) * CHUNK));
        assert_ne!(a, b);
        b[2000] = 2000;
        // Equal again though no longer shared.
        assert_eq!(a, b);
        // An append copies only the last chunk.
        let mut c = a.clone();
        c.push(1);
        assert_eq!(c.shared_ends(&a).0, (5000 / CHUNK) * CHUNK);
        // A change where a condition holds copies the chunks holding a match, only them.
        let mut e = a.clone();
        e.modify_where(|x| *x == 10 || *x == 4000, |x| *x += 1);
        let copied: Vec<usize> = (a.chunks.iter().zip(&e.chunks).enumerate())
            .filter(|(_, (x, y))| !Arc::ptr_eq(x, y))
            .map(|(j, _)| j)
            .collect();
        assert_eq!(copied, [0, 4000 / CHUNK]);
        assert_eq!((e[10], e[4000], e[11]), (11, 4001, 11));
        // A retain that keeps everything copies nothing.
        let mut d = a.clone();
        d.retain(|_| true);
        assert_eq!(d.shared_ends(&a), (5000, 0));
    }

    #[test]
    fn a_range_is_the_same_as_a_slice_of_the_flat_list() {
        let c = list(2000);
        let v = c.to_vec();
        for (a, b) in [
            (0, 0),
            (0, 2000),
            (3, 9),
            (500, 530),
            (511, 1025),
            (1999, 2000),
            (7, 5000),
            (3000, 4000),
        ] {
            let end = b.min(v.len());
            let start = a.min(end);
            assert!(c.iter_range(a..b).eq(v[start..end].iter()), "{a}..{b}");
            assert!(
                c.iter_range(a..b).rev().eq(v[start..end].iter().rev()),
                "{a}..{b}"
            );
            assert_eq!(c.iter_range(a..b).len(), end - start);
        }
        let mut d = c.clone();
        d.remove(1200);
        let (mine, theirs) = d.unshared(&c);
        // The chunk that lost one and its neighbours after it, whose positions shifted.
        assert_eq!(mine.start, 1200 / CHUNK * CHUNK);
        assert_eq!(theirs.start, mine.start);
        assert_eq!(c.len() - theirs.end, d.len() - mine.end);
    }

    #[test]
    fn kept_sorted_by_insertion_at_the_partition_point() {
        let mut c: Chunked<u32> = Chunked::new();
        let mut v: Vec<u32> = Vec::new();
        let mut x = 0x2545_f491u32;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let key = x % 10_000;
            let i = c.partition_point(|y| *y < key);
            assert_eq!(i, v.partition_point(|y| *y < key));
            c.insert(i, key);
            v.insert(i, key);
            if key.is_multiple_of(3) {
                let at = c.partition_point(|y| *y < key / 2).min(c.len() - 1);
                assert_eq!(c.remove(at), v.remove(at));
            }
            check(&c);
        }
        assert_eq!(c.to_vec(), v);
        assert!(c.chunks.len() > 3000 / CHUNK);
        assert_eq!(c.partition_point(|_| true), c.len());
        assert_eq!(c.partition_point(|_| false), 0);
        // An insertion copies only the chunk it goes into.
        let d = c.clone();
        c.insert(1, 0);
        assert_eq!(c.shared_ends(&d).1, d.len() - d.chunks[0].len());
    }

    #[test]
    fn a_place_is_found_again_in_every_version_that_shares_its_chunk() {
        let a = list(3000);
        let placed: Vec<(Place, u32)> = a.iter_placed(0..3000).map(|(p, x)| (p, *x)).collect();
        assert_eq!(placed.len(), 3000);
        for (i, &(p, x)) in placed.iter().enumerate() {
            assert_eq!((a.position_of(p), x), (Some(i), a[i]));
        }
        assert!(a.iter_placed(700..1900).map(|(_, x)| *x).eq(700..1900));
        assert_eq!(a.iter_placed(5..5).count(), 0);
        assert_eq!(a.iter_placed(2990..9000).count(), 10);
        // A removal in the first chunk moves the others' positions, not their places.
        let mut b = a.clone();
        b.remove(3);
        let (p, x) = placed[2500];
        assert_eq!(b.position_of(p), Some(2499));
        assert_eq!(b[2499], x);
        // The chunk that was written to is another: its places are not found.
        assert_eq!(b.position_of(placed[10].0), None);
        // Many at once, alike.
        let at = b.locator();
        for &(p, _) in &placed {
            assert_eq!(at(p), b.position_of(p));
        }
    }

    #[test]
    fn equal_lists_chunked_differently_are_equal() {
        let mut a = list(2000);
        a.remove(100);
        let b: Chunked<u32> = a.to_vec().into();
        assert_ne!(a.starts, b.starts);
        assert_eq!(a, b);
        let mut c = b.clone();
        c.push(0);
        assert_ne!(a, c);
    }

    #[test]
    fn serialises_as_a_plain_sequence() {
        let a = list(1100);
        let text = serde_json::to_string(&a).expect("serialise");
        assert_eq!(text, serde_json::to_string(&a.to_vec()).expect("serialise"));
        let back: Chunked<u32> = serde_json::from_str(&text).expect("deserialise");
        check(&back);
        assert_eq!(back, a);
        let empty: Chunked<u32> = serde_json::from_str("[]").expect("deserialise");
        assert!(empty.is_empty());
        assert!(serde_json::from_str::<Chunked<u32>>("[1,\"x\"]").is_err());
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn removal_out_of_bounds_panics_as_a_vec_does() {
        list(3).remove(3);
    }
}
