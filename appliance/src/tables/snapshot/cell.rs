//! Publishing an immutable snapshot to the workers without ever making them wait.
//!
//! The writer (management thread) swaps in a new `Arc<T>` and bumps a generation number.
//! A worker reads the generation once per burst (one atomic load); only when it changed
//! does it fetch the new `Arc` — with `try_lock`, so a worker that happens to race the
//! writer simply keeps the snapshot it has and tries again on the next burst. No worker
//! ever blocks, and each burst sees one whole version.
//!
//! Reclamation happens off the fast path: the writer keeps every retired snapshot until
//! all workers report a newer generation, so a worker's drop of its old `Arc` is only a
//! reference-count decrement, never a free of a large table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Implemented by snapshot types: their generation number.
pub trait Versioned {
    fn generation(&self) -> u64;
}

/// The published snapshot and the generations the readers hold.
#[derive(Debug)]
pub struct SnapshotCell<T> {
    generation: AtomicU64,
    current: Mutex<Arc<T>>,
    readers: Vec<AtomicU64>,
    retired: Mutex<Vec<Arc<T>>>,
}

impl<T: Versioned> SnapshotCell<T> {
    /// A cell holding `first`, for `readers` workers.
    pub fn new(first: T, readers: usize) -> SnapshotCell<T> {
        let g = first.generation();
        SnapshotCell {
            generation: AtomicU64::new(g),
            current: Mutex::new(Arc::new(first)),
            readers: (0..readers).map(|_| AtomicU64::new(g)).collect(),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// Publishes `next` (its generation must be higher than the current one's).
    pub fn publish(&self, next: T) {
        let g = next.generation();
        let next = Arc::new(next);
        let old = {
            let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *cur, next)
        };
        self.generation.store(g, Ordering::Release);
        self.retired
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(old);
        self.reclaim();
    }

    /// The current snapshot (for the writer and for off-path readers).
    pub fn load(&self) -> Arc<T> {
        Arc::clone(&self.current.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Drops retired snapshots every reader has moved past. Returns how many remain.
    pub fn reclaim(&self) -> usize {
        let oldest_held = self
            .readers
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|s| s.generation() >= oldest_held);
        retired.len()
    }

    /// A reader handle for worker `index`, starting at the current snapshot.
    pub fn reader(self: &Arc<Self>, index: usize) -> SnapshotReader<T> {
        let snap = self.load();
        if let Some(r) = self.readers.get(index) {
            r.store(snap.generation(), Ordering::Release);
        }
        SnapshotReader {
            cell: Arc::clone(self),
            index,
            snap,
        }
    }
}

/// One worker's view: call [`SnapshotReader::refresh`] once per burst.
#[derive(Debug)]
pub struct SnapshotReader<T> {
    cell: Arc<SnapshotCell<T>>,
    index: usize,
    snap: Arc<T>,
}

impl<T: Versioned> SnapshotReader<T> {
    /// Picks up a newer snapshot if one was published; returns true when it changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        if self.cell.generation.load(Ordering::Acquire) == self.snap.generation() {
            return false;
        }
        let Ok(cur) = self.cell.current.try_lock() else {
            return false;
        };
        if Arc::ptr_eq(&cur, &self.snap) {
            return false;
        }
        self.snap = Arc::clone(&cur);
        drop(cur);
        if let Some(r) = self.cell.readers.get(self.index) {
            r.store(self.snap.generation(), Ordering::Release);
        }
        true
    }

    /// The snapshot this burst uses.
    #[inline]
    pub fn get(&self) -> &T {
        &self.snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generation and a token whose reference count shows when the snapshot is freed.
    #[derive(Debug)]
    struct Snap(u64, #[allow(dead_code)] Arc<()>);
    impl Versioned for Snap {
        fn generation(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn readers_move_forward_and_old_versions_are_reclaimed() {
        let token = Arc::new(());
        let cell = Arc::new(SnapshotCell::new(Snap(1, Arc::clone(&token)), 2));
        let mut a = cell.reader(0);
        let mut b = cell.reader(1);
        assert!(!a.refresh());
        cell.publish(Snap(2, Arc::clone(&token)));
        assert_eq!(a.get().0, 1, "a burst keeps its version until it refreshes");
        assert!(a.refresh());
        assert_eq!(a.get().0, 2);
        // b still holds 1: it is retired but kept.
        assert_eq!(cell.reclaim(), 1);
        assert!(b.refresh());
        assert_eq!(cell.reclaim(), 0);
        assert_eq!(
            Arc::strong_count(&token),
            2,
            "version 1 freed by the writer"
        );
    }

    #[test]
    fn concurrent_publish_and_read_never_tears() {
        let cell = Arc::new(SnapshotCell::new(Snap(0, Arc::new(())), 1));
        let mut r = cell.reader(0);
        let w = {
            let cell = Arc::clone(&cell);
            std::thread::spawn(move || {
                for g in 1..=2000 {
                    cell.publish(Snap(g, Arc::new(())));
                }
            })
        };
        let mut last = 0;
        for _ in 0..200_000 {
            r.refresh();
            let g = r.get().0;
            assert!(g >= last, "generations only move forward");
            last = g;
        }
        w.join().unwrap();
        while !r.refresh() && r.get().0 != 2000 {}
        assert_eq!(r.get().0, 2000);
    }
}
