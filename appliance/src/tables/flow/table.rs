//! The per-worker flow table.
//!
//! # Design
//!
//! Flows live in a fixed array of slots allocated once by [`FlowTable::with_capacity`]; a
//! [`FlowId`] is a slot number. Two hash indexes find a slot: one by the forward key, one
//! by the reverse key. Each index is an array of `u32` chain heads, `next_pow2(capacity)`
//! long (one head per key when full), and the chains are *intrusive*: the links `next_fwd`
//! and `next_rev` live in the slot beside the flow, so following a chain touches only the
//! slots it compares anyway.
//!
//! - Lookup: hash, load one head, compare keys along the chain. With load factor
//!   `α = len / heads <= 1` a hit visits `1 + α/2 <= 1.5` slots on average and a miss `α`:
//!   about one bucket line plus one slot line per lookup.
//! - Remove: unlink from both chains (a walk of the chain, usually 1-2 slots) and push the
//!   slot onto a LIFO free list (threaded through `next_fwd`; `next_rev == FREE` marks a
//!   free slot). Nothing is left behind: no tombstones, no rehash, no compaction.
//! - Insert: pop a free slot, push it at the head of both chains. O(1), cannot fail except
//!   when no slot is free; existing flows are never moved, so a full table keeps serving.
//! - Expiry: a cursor walks the slots, a bounded number per call ([`FlowTable::expire`]),
//!   so no call ever stalls the worker; with a budget of B slots per loop iteration, every
//!   flow is visited once per `capacity / B` iterations.
//! - The index hash is keyed with a random per-table seed ([`FlowKey::index_hash`]) so
//!   consumers cannot aim their source ports at one chain.
//! - Half-open queue: every TCP flow joins a FIFO when inserted, threaded through a 4-byte
//!   link in the flow's former padding; a full table (or another resource under pressure)
//!   evicts the oldest flow still half-open ([`FlowTable::evict_half_open`]), so a SYN
//!   flood cannot keep new connections out until its flows time out. Places of flows that
//!   completed their handshake or ended are dropped lazily as the queue is walked.
//!
//! Open addressing was the alternative; with two keys per flow its deletions need
//! tombstones or backward shifting in two places, and cuckoo inserts can fail before the
//! table is full. The lookups' cost is dominated by cache misses either way.
//!
//! # Memory per flow
//!
//! | part | bytes |
//! |---|---|
//! | [`Flow`] (with the half-open queue link in what was padding) | 104 |
//! | chain links `next_fwd`, `next_rev` | 8 |
//! | slot total | 112 |
//! | index: 2 heads × 4 B × `next_pow2(cap) / cap` | 8 ..< 16 |
//! | **total** | **120 ..< 128** |
//!
//! 120 B at a power-of-two capacity (1 Mi flows = 120 MiB per worker), just under 128 B
//! at the worst capacity (`2^k + 1`). [`FlowTable::bytes_per_flow`] reports the figure of
//! a given table.
//!
//! # Cache lines
//!
//! A slot is 112 bytes aligned to 16, so it starts 0, 16, 32 or 48 bytes into a line and
//! spans three lines at half of those offsets. What a packet touches is laid out first
//! (the links, both keys, the time, the counters, the TCP state and windows: 80 bytes, see
//! [`Flow`]), so it always lies in two lines, and [`FlowTable::prefetch_flow`] loads
//! exactly those two; only a TCP flow's acknowledgement numbers, at one offset in four,
//! reach a third line. Before, the hot fields ran to the slot's last byte: three lines
//! (three prefetches) at every other slot.
//!
//! Slots of 128 bytes aligned to 128 (two lines each, always) were tried (branch
//! `tables-aligned-128`, measured in BENCHMARKS.md): within 128 bytes a flow they leave
//! no room for the head arrays, so the heads went into the slots' spare 16 bytes, four
//! to a slot instead of sixteen to a line of their own. Every lookup then pays a head
//! line that is as cold as the flow's own (at 1M flows a DRAM line where the dense head
//! arrays mostly stay in cache), which costs more than the third line of a slot saves.
//!
//! # Cost
//!
//! Measured with `cargo bench -p appliance --bench flow` on one core of an AMD EPYC at
//! 2.6 GHz (32 MiB L3), cycles at that clock; numbers beside each function. Up to ~100k
//! flows (12 MiB) the table lives in L3; beyond, a lookup is two dependent DRAM misses
//! (head, then slot), which [`FlowTable::lookup_forward_burst`] overlaps across a burst.
//! The benchmark's memory is in 4 KiB pages (transparent huge pages are `madvise`-only
//! here), so the 1M figures include TLB misses; backing the table with huge pages (DPDK
//! memory or `MADV_HUGEPAGE`, which needs the FFI crate) should lower them.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::mem::size_of;

use dpdk_bindings::prefetch::prefetch;

use super::{Flow, FlowId, FlowKey, QueueLink, Timeouts};
use crate::tables::vhash::VectorHash;

/// The largest capacity a table accepts: slot numbers must stay clear of the `NIL` and
/// `FREE` sentinels (and 2^30 flows would need 128 GiB anyway).
pub const MAX_CAPACITY: usize = 1 << 30;

/// End of a chain or of the free list. Larger than any slot number, so `slots.get(NIL)`
/// is `None` and ends a walk by itself.
const NIL: u32 = u32::MAX;
/// `next_rev` of a free slot.
const FREE: u32 = u32::MAX - 1;

/// One flow and its bookkeeping. 112 bytes aligned to 16; the links come first so a chain
/// walk reads the links and the key it compares from the same line most of the time.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
struct Slot {
    /// Next slot in the forward-key chain; for a free slot, the next free slot.
    next_fwd: u32,
    /// Next slot in the reverse-key chain; `FREE` for a free slot.
    next_rev: u32,
    /// The flow (stale contents in a free slot).
    flow: Flow,
}

/// A slot starts 0, 16, 32 or 48 bytes into a cache line (112 = 7 × 16). Its first `HOT`
/// bytes, all that a packet touches but a TCP flow's acknowledgement numbers, therefore
/// always lie in two lines (48 + 80 = 128), where the whole slot spans three lines at
/// half of the offsets.
const LINE: usize = 64;
const HOT: usize = 80;
const _: () = assert!(size_of::<Slot>() == 112 && std::mem::align_of::<Slot>() == 16);
const _: () = assert!(3 * 16 + HOT <= 2 * LINE);
const _: () =
    assert!(std::mem::offset_of!(Slot, flow) + std::mem::offset_of!(Flow, listener) + 2 == HOT);
const _: () =
    assert!(std::mem::offset_of!(Slot, flow) + std::mem::offset_of!(Flow, bytes_rev) + 8 <= HOT);

impl Slot {
    #[inline]
    fn is_free(&self) -> bool {
        self.next_rev == FREE
    }

    #[inline]
    fn link<const REV: bool>(&mut self) -> &mut u32 {
        if REV {
            &mut self.next_rev
        } else {
            &mut self.next_fwd
        }
    }

    #[inline]
    fn key<const REV: bool>(&self) -> &FlowKey {
        if REV {
            &self.flow.rev
        } else {
            &self.flow.fwd
        }
    }
}

/// [`FlowTable::insert`] found no free slot; the new flow was not added and every existing
/// flow is untouched. Prints "flow table full".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

impl fmt::Display for TableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flow table full")
    }
}

impl std::error::Error for TableFull {}

/// A worker's flows: fixed capacity, single writer, no allocation after
/// [`FlowTable::with_capacity`], no locks, no atomics. See the module docs for the design.
pub struct FlowTable {
    slots: Box<[Slot]>,
    /// Heads of the forward-key chains.
    fwd_heads: Box<[u32]>,
    /// Heads of the reverse-key chains (same length as `fwd_heads`).
    rev_heads: Box<[u32]>,
    /// `heads.len() - 1`; the length is a power of two.
    mask: u64,
    /// The index hash's keys, from the table's seed.
    index: VectorHash,
    free_head: u32,
    len: usize,
    /// Next slot [`FlowTable::expire`] examines.
    cursor: u32,
    timeouts: Timeouts,
    /// The queue of half-open flows, oldest first (`NIL` when empty); see
    /// [`FlowTable::evict_half_open`].
    queue_head: u32,
    queue_tail: u32,
}

impl fmt::Debug for FlowTable {
    // Never the flows themselves: a table holds up to millions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowTable")
            .field("capacity", &self.capacity())
            .field("len", &self.len)
            .field("buckets", &self.fwd_heads.len())
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A slot number as an index (`u32` always fits in `usize` on the targets we build for).
#[inline]
fn ix(id: u32) -> usize {
    id as usize
}

impl FlowTable {
    /// A table for up to `capacity` flows with a random index seed. All its memory
    /// ([`FlowTable::memory_bytes`]) is allocated and written here, so pages are faulted in
    /// at start-up rather than on the fast path.
    ///
    /// # Panics
    /// If `capacity` exceeds [`MAX_CAPACITY`] (a start-up configuration error).
    pub fn with_capacity(capacity: usize, timeouts: Timeouts) -> FlowTable {
        let seed = RandomState::new().hash_one(0x5eed_u64);
        FlowTable::with_capacity_and_seed(capacity, timeouts, seed)
    }

    /// As [`FlowTable::with_capacity`] with a chosen index seed: for reproducible tests and
    /// benchmarks. A seed that consumers can learn lets them flood one chain.
    ///
    /// # Panics
    /// If `capacity` exceeds [`MAX_CAPACITY`].
    pub fn with_capacity_and_seed(capacity: usize, timeouts: Timeouts, seed: u64) -> FlowTable {
        assert!(
            capacity <= MAX_CAPACITY,
            "flow table capacity {capacity} exceeds the maximum {MAX_CAPACITY}"
        );
        let buckets = capacity.max(1).next_power_of_two();
        let blank = Slot {
            next_fwd: NIL,
            next_rev: FREE,
            flow: Flow::new(FlowKey::default(), FlowKey::default(), 0),
        };
        let mut slots = filled(capacity, blank);
        // Free list in slot order, so a fresh table fills from slot 0 upwards.
        for (next, slot) in (1u32..).zip(slots.iter_mut()) {
            slot.next_fwd = next;
        }
        if let Some(last) = slots.last_mut() {
            last.next_fwd = NIL;
        }
        FlowTable {
            slots,
            fwd_heads: filled(buckets, NIL),
            rev_heads: filled(buckets, NIL),
            mask: (buckets - 1) as u64,
            index: VectorHash::new(seed),
            free_head: if capacity == 0 { NIL } else { 0 },
            len: 0,
            cursor: 0,
            timeouts,
            queue_head: NIL,
            queue_tail: NIL,
        }
    }

    /// How many flows the table can hold.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// How many flows it holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when every slot holds a flow: the next insert fails unless one is removed
    /// (or evicted, [`FlowTable::evict_half_open`]).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.free_head == NIL
    }

    /// True when it holds no flow.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The timeouts [`FlowTable::is_expired`] and [`FlowTable::expire`] apply.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Changes the timeouts (e.g. on a configuration reload); applies to existing flows at
    /// their next expiry check.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// All memory the table owns, in bytes: slots plus both indexes.
    pub fn memory_bytes(&self) -> usize {
        size_of::<FlowTable>()
            + self.slots.len() * size_of::<Slot>()
            + (self.fwd_heads.len() + self.rev_heads.len()) * size_of::<u32>()
    }

    /// The bytes [`FlowTable::with_capacity`] allocates for `capacity` flows: lets the
    /// configuration check table sizes against memory before allocating anything.
    pub fn memory_for(capacity: usize) -> usize {
        let buckets = capacity.max(1).next_power_of_two();
        size_of::<FlowTable>() + capacity * size_of::<Slot>() + 2 * buckets * size_of::<u32>()
    }

    /// Memory per flow of capacity, rounded up: slot (112 B) plus its share of the two
    /// indexes (8 B at a power-of-two capacity, under 16 B otherwise). At most 128.
    pub fn bytes_per_flow(&self) -> usize {
        let index = (self.fwd_heads.len() + self.rev_heads.len()) * size_of::<u32>();
        size_of::<Slot>() + index.div_ceil(self.capacity().max(1))
    }

    #[inline]
    fn bucket(&self, key: &FlowKey) -> usize {
        // `mask` < 2^30, so the conversion never fails (and compiles to nothing on 64-bit).
        usize::try_from(key.index_hash(&self.index) & self.mask).unwrap_or(0)
    }

    #[inline]
    fn lookup<const REV: bool>(&self, key: &FlowKey) -> Option<FlowId> {
        let heads = if REV {
            &self.rev_heads
        } else {
            &self.fwd_heads
        };
        self.find_from(heads[self.bucket(key)], key, REV)
    }

    /// The index hash of `key` (seeded, unlike [`FlowKey::hash`]): the first step of a
    /// lookup split over a burst, [`prefetch_head`](Self::prefetch_head) →
    /// [`head`](Self::head) + [`prefetch_flow`](Self::prefetch_flow) →
    /// [`find_from`](Self::find_from), with the stages of many keys interleaved so their
    /// cache misses overlap. Each stage is correct on its own; the prefetches only hint.
    #[inline]
    pub fn index_hash(&self, key: &FlowKey) -> u64 {
        key.index_hash(&self.index)
    }

    /// The keys of [`index_hash`](Self::index_hash), for a caller that hashes a key it
    /// holds in registers.
    #[inline]
    pub fn index_keys(&self) -> &VectorHash {
        &self.index
    }

    #[inline]
    fn heads(&self, rev: bool) -> &[u32] {
        if rev {
            &self.rev_heads
        } else {
            &self.fwd_heads
        }
    }

    /// Starts loading the chain head of index hash `hash` (reverse index if `rev`).
    #[inline]
    pub fn prefetch_head(&self, hash: u64, rev: bool) {
        // `mask` < 2^30: the conversion never fails.
        let b = usize::try_from(hash & self.mask).unwrap_or(0);
        if let Some(h) = self.heads(rev).get(b) {
            prefetch(h);
        }
    }

    /// The first flow of the chain of index hash `hash` (NIL-terminated; pass it to
    /// [`find_from`](Self::find_from)).
    #[inline]
    pub fn head(&self, hash: u64, rev: bool) -> u32 {
        let b = usize::try_from(hash & self.mask).unwrap_or(0);
        self.heads(rev).get(b).copied().unwrap_or(NIL)
    }

    /// Starts loading flow slot `id`: its hot part (links, keys, time, counters, TCP
    /// state and windows), the first and the last line of it, which are at most two
    /// lines. A TCP flow's acknowledgement numbers, just after, fall into a third line at
    /// one slot offset in four and are loaded when the packet reaches them.
    #[inline]
    pub fn prefetch_flow(&self, id: u32) {
        if let Some(s) = self.slots.get(ix(id)) {
            prefetch(s);
            prefetch(&s.flow.listener);
        }
    }

    /// Starts loading only the keys of flow slot `id`: enough for a chain walk that is
    /// expected to miss (a new flow's lookup, a SNAT port probe).
    #[inline]
    pub fn prefetch_keys(&self, id: u32) {
        if let Some(s) = self.slots.get(ix(id)) {
            prefetch(&s.flow.fwd);
            prefetch(&s.flow.rev);
        }
    }

    /// Walks the chain starting at `head` (from [`head`](Self::head)) for `key`.
    #[inline]
    pub fn find_from(&self, head: u32, key: &FlowKey, rev: bool) -> Option<FlowId> {
        let mut id = head;
        // `NIL` is out of range, so `get` ends the walk.
        while let Some(slot) = self.slots.get(ix(id)) {
            let k = if rev { &slot.flow.rev } else { &slot.flow.fwd };
            if k == key {
                return Some(id);
            }
            id = if rev { slot.next_rev } else { slot.next_fwd };
        }
        None
    }

    /// The flow whose forward (consumer-side) key is `key`.
    ///
    /// Measured, random keys, hit / miss: 1k flows ~5.3 / ~4.2 ns (~14 / ~11 cycles);
    /// 100k ~23 / ~18 ns (~60 / ~47 cycles); 1M ~88 / ~72 ns (~230 / ~190 cycles).
    #[inline]
    pub fn lookup_forward(&self, key: &FlowKey) -> Option<FlowId> {
        self.lookup::<false>(key)
    }

    /// The flow whose reverse (provider-side) key is `key`. Same cost as
    /// [`FlowTable::lookup_forward`].
    #[inline]
    pub fn lookup_reverse(&self, key: &FlowKey) -> Option<FlowId> {
        self.lookup::<true>(key)
    }

    fn lookup_burst<const REV: bool>(&self, keys: &[FlowKey], out: &mut [Option<FlowId>]) {
        let heads = if REV {
            &self.rev_heads
        } else {
            &self.fwd_heads
        };
        // Pass 1: every key's chain head. The loads are independent, so the CPU overlaps
        // their cache misses instead of paying them one after another.
        for (key, o) in keys.iter().zip(out.iter_mut()) {
            *o = Some(heads[self.bucket(key)]);
        }
        // Pass 2: the first slot of each chain, again independent across keys; further
        // chain steps (rare at load <= 1) are dependent.
        for (key, o) in keys.iter().zip(out.iter_mut()) {
            let mut id = o.unwrap_or(NIL);
            *o = None;
            while let Some(slot) = self.slots.get(ix(id)) {
                if slot.key::<REV>() == key {
                    *o = Some(id);
                    break;
                }
                id = if REV { slot.next_rev } else { slot.next_fwd };
            }
        }
    }

    /// [`FlowTable::lookup_forward`] for a burst: `out[i]` is the flow of `keys[i]`, for
    /// `i < min(keys.len(), out.len())`. Same results, but the cache misses of the whole
    /// burst overlap, which is what matters once the table outgrows the cache.
    ///
    /// Measured, bursts of 32 random hits, per key: 100k flows ~12 ns (~30 cycles) against
    /// ~23 ns one at a time; 1M ~54 ns (~140 cycles) against ~88 ns.
    pub fn lookup_forward_burst(&self, keys: &[FlowKey], out: &mut [Option<FlowId>]) {
        self.lookup_burst::<false>(keys, out);
    }

    /// [`FlowTable::lookup_reverse`] for a burst; see
    /// [`FlowTable::lookup_forward_burst`].
    pub fn lookup_reverse_burst(&self, keys: &[FlowKey], out: &mut [Option<FlowId>]) {
        self.lookup_burst::<true>(keys, out);
    }

    /// True when a flow has reverse key `key`: a SNAT `ip:port` is free for a target when
    /// `(provider vpc, target, snat ip:port)` is not present.
    #[inline]
    pub fn contains_reverse(&self, key: &FlowKey) -> bool {
        self.lookup_reverse(key).is_some()
    }

    /// Adds `flow`, findable by both its keys. The caller guarantees that neither key is
    /// already present (it looked them up; checked in debug builds). When no slot is free
    /// it returns [`TableFull`] and changes nothing.
    ///
    /// Measured, insert + remove of one flow: ~29 ns (~75 cycles) in a 1k table, ~40 ns
    /// (~105 cycles) in a half-full 1M table.
    pub fn insert(&mut self, flow: Flow) -> Result<FlowId, TableFull> {
        debug_assert!(
            self.lookup_forward(&flow.fwd).is_none(),
            "forward key already present: {:?}",
            flow.fwd
        );
        debug_assert!(
            self.lookup_reverse(&flow.rev).is_none(),
            "reverse key already present: {:?}",
            flow.rev
        );
        let id = self.free_head;
        let fb = self.bucket(&flow.fwd);
        let rb = self.bucket(&flow.rev);
        let next_fwd = self.fwd_heads[fb];
        let next_rev = self.rev_heads[rb];
        let slot = self.slots.get_mut(ix(id)).ok_or(TableFull)?;
        self.free_head = slot.next_fwd;
        // The slot's place in the half-open queue outlives the flows in it (the queue is
        // cleaned lazily): keep it.
        let queue = slot.flow.queue;
        let half_open = flow.is_half_open();
        *slot = Slot {
            next_fwd,
            next_rev,
            flow,
        };
        slot.flow.queue = queue;
        if queue.queued() {
            // The place is an earlier flow's; this one, if half-open, gets its own place
            // at the back when that one comes up.
            slot.flow.queue = queue.not_current();
        } else if half_open {
            self.queue_push(id);
        }
        self.fwd_heads[fb] = id;
        self.rev_heads[rb] = id;
        self.len += 1;
        // The next insert pops the new free head and reads its free-list link and queue
        // link (two lines of a slot nobody touched for long): start loading them now, a
        // packet or more before they are needed.
        if let Some(next) = self.slots.get(ix(self.free_head)) {
            prefetch(&next.next_fwd);
            prefetch(&next.flow.queue);
        }
        Ok(id)
    }

    /// The queue link of slot `id` (`id` in range).
    #[inline]
    fn link(&mut self, id: u32) -> &mut QueueLink {
        &mut self.slots[ix(id)].flow.queue
    }

    /// Appends slot `id` (not queued) to the half-open queue, as its flow's own place.
    fn queue_push(&mut self, id: u32) {
        *self.link(id) = QueueLink::last();
        if self.queue_tail == NIL {
            self.queue_head = id;
        } else {
            let tail = self.queue_tail;
            let l = self.link(tail);
            *l = l.with_next(id);
        }
        self.queue_tail = id;
    }

    /// Takes slot `cur` out of the queue, `prev` being the slot before it (NIL at the
    /// head) and `next` the one after.
    fn queue_unlink(&mut self, prev: u32, cur: u32, next: u32) {
        if prev == NIL {
            self.queue_head = next;
        } else {
            let l = self.link(prev);
            *l = l.with_next(next);
        }
        if self.queue_tail == cur {
            self.queue_tail = prev;
        }
        *self.link(cur) = QueueLink::NOT_QUEUED;
    }

    /// Evicts the oldest half-open flow for which `wanted` holds, looking at no more than
    /// `budget` places of the half-open queue, and returns it (removed from the table,
    /// like [`FlowTable::remove`]). None when there is none among them.
    ///
    /// # The half-open queue
    ///
    /// Every TCP flow joins a FIFO queue when it is inserted (every TCP flow starts
    /// half-open), threaded through the flows themselves (a 4-byte link in what was the
    /// flow's padding: no memory of its own, no allocation). A flow that completes its
    /// handshake or ends stays in the queue: removing it from a singly linked queue would
    /// need a walk. Such stale places are dropped when the walk meets them, here or in
    /// [`FlowTable::tidy_half_open`], so each place is visited once on average and the
    /// queue never holds more than one place per slot. A slot reused while still queued
    /// keeps its (older) place, marked as not its flow's own; when that place comes up,
    /// the flow, if still half-open, moves to the back: a flow is never evicted ahead of
    /// an older one because of its slot.
    ///
    /// Cost: one slot read per place looked at; with `wanted` always true (a full table)
    /// the first half-open flow is taken, so it is O(1) amortised.
    pub fn evict_half_open(
        &mut self,
        budget: usize,
        mut wanted: impl FnMut(&Flow) -> bool,
    ) -> Option<Flow> {
        let mut prev = NIL;
        let mut cur = self.queue_head;
        for _ in 0..budget {
            let slot = self.slots.get(ix(cur))?;
            let link = slot.flow.queue;
            let next = link.next();
            if slot.is_free() || !slot.flow.is_half_open() {
                self.queue_unlink(prev, cur, next);
                cur = next;
            } else if !link.current() {
                if next == NIL {
                    // Last already: the place becomes its own, look again.
                    *self.link(cur) = QueueLink::last();
                } else {
                    self.queue_unlink(prev, cur, next);
                    self.queue_push(cur);
                    cur = next;
                }
            } else if wanted(&slot.flow) {
                self.queue_unlink(prev, cur, next);
                return self.remove(cur);
            } else {
                prev = cur;
                cur = next;
            }
        }
        None
    }

    /// Drops stale places at the head of the half-open queue (flows no longer half-open
    /// or gone), at most `budget`, stopping at the oldest flow that is half-open: the
    /// worker calls it every poll so that an eviction under pressure finds a half-open
    /// flow at once. Returns how many places it looked at.
    pub fn tidy_half_open(&mut self, budget: usize) -> usize {
        for n in 0..budget {
            let cur = self.queue_head;
            let Some(slot) = self.slots.get(ix(cur)) else {
                return n;
            };
            let link = slot.flow.queue;
            let next = link.next();
            if slot.is_free() || !slot.flow.is_half_open() {
                self.queue_unlink(NIL, cur, next);
            } else if link.current() {
                return n;
            } else if next == NIL {
                *self.link(cur) = QueueLink::last();
                return n + 1;
            } else {
                self.queue_unlink(NIL, cur, next);
                self.queue_push(cur);
            }
        }
        budget
    }

    /// The flow in slot `id`, or `None` when there is none (removed, or never used).
    #[inline]
    pub fn get(&self, id: FlowId) -> Option<&Flow> {
        self.slots
            .get(ix(id))
            .filter(|s| !s.is_free())
            .map(|s| &s.flow)
    }

    /// The flow in slot `id`, to update its state, time and counters. Do not change its
    /// keys (see [`Flow::fwd`]).
    #[inline]
    pub fn get_mut(&mut self, id: FlowId) -> Option<&mut Flow> {
        self.slots
            .get_mut(ix(id))
            .filter(|s| !s.is_free())
            .map(|s| &mut s.flow)
    }

    /// Removes the flow in slot `id` from both indexes and returns it; `None` when there
    /// is none.
    pub fn remove(&mut self, id: FlowId) -> Option<Flow> {
        let flow = *self.get(id)?;
        let fb = self.bucket(&flow.fwd);
        let rb = self.bucket(&flow.rev);
        let FlowTable {
            slots,
            fwd_heads,
            rev_heads,
            ..
        } = self;
        if !unlink::<false>(fwd_heads, slots, fb, id) {
            // Only reachable when the caller changed the key through `get_mut`.
            debug_assert!(false, "flow {id} not in its forward chain: key changed?");
            unlink_anywhere::<false>(fwd_heads, slots, id);
        }
        if !unlink::<true>(rev_heads, slots, rb, id) {
            debug_assert!(false, "flow {id} not in its reverse chain: key changed?");
            unlink_anywhere::<true>(rev_heads, slots, id);
        }
        let slot = &mut self.slots[ix(id)];
        slot.next_fwd = self.free_head;
        slot.next_rev = FREE;
        self.free_head = id;
        self.len -= 1;
        Some(flow)
    }

    /// True when the flow in slot `id` has been idle at least its timeout at `now_ms`
    /// (per TCP state, or the UDP/ICMP timeout), or when there is no such flow.
    #[inline]
    pub fn is_expired(&self, id: FlowId, now_ms: u64) -> bool {
        match self.get(id) {
            Some(flow) => flow.is_expired(now_ms, &self.timeouts),
            None => true,
        }
    }

    /// Incremental expiry: examines at most `budget` slots (and at most one full pass),
    /// starting where the previous call stopped and wrapping around; removes the expired
    /// flows among them, calling `on_expire` with each. Returns how many it removed.
    /// Does nothing on an empty table. The cost is bounded by `budget`, never by the table
    /// size, so a worker can call it every loop iteration.
    ///
    /// Measured at 1M flows: ~3.3 ns (~8.5 cycles) per slot examined when nothing expires
    /// (a sequential walk); removing an expired flow and inserting a new one ~290 ns
    /// (~750 cycles: the unlinks and links are random DRAM accesses).
    pub fn expire(
        &mut self,
        now_ms: u64,
        budget: usize,
        mut on_expire: impl FnMut(FlowId, &Flow),
    ) -> usize {
        if self.len == 0 {
            return 0;
        }
        let capacity = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(capacity) {
            let id = self.cursor;
            self.cursor = if ix(id) + 1 >= capacity { 0 } else { id + 1 };
            let slot = &self.slots[ix(id)];
            if slot.is_free() || !slot.flow.is_expired(now_ms, &self.timeouts) {
                continue;
            }
            if let Some(flow) = self.remove(id) {
                on_expire(id, &flow);
                removed += 1;
            }
        }
        removed
    }

    /// Every flow with its id, in slot order. Walks the whole table: for listing and
    /// draining, off the fast path.
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> + '_ {
        (0u32..)
            .zip(self.slots.iter())
            .filter(|(_, s)| !s.is_free())
            .map(|(id, s)| (id, &s.flow))
    }
}

/// Removes slot `id` from the chain starting at `heads[bucket]`. False when it is not
/// there.
fn unlink<const REV: bool>(heads: &mut [u32], slots: &mut [Slot], bucket: usize, id: u32) -> bool {
    let after = *slots[ix(id)].link::<REV>();
    if heads[bucket] == id {
        heads[bucket] = after;
        return true;
    }
    let mut cur = heads[bucket];
    while let Some(slot) = slots.get_mut(ix(cur)) {
        let link = slot.link::<REV>();
        if *link == id {
            *link = after;
            return true;
        }
        cur = *link;
    }
    false
}

/// Removes slot `id` from whichever chain holds it: a full scan, for the misuse case of a
/// key changed in place. Keeps the index consistent rather than leaving a dangling link.
#[cold]
fn unlink_anywhere<const REV: bool>(heads: &mut [u32], slots: &mut [Slot], id: u32) {
    for bucket in 0..heads.len() {
        if unlink::<REV>(heads, slots, bucket, id) {
            return;
        }
    }
}

/// `n` copies of `value`, in memory the kernel is asked to back with transparent huge
/// pages before it is written: lookups land on random slots of tables far larger than
/// the TLB covers with 4 KiB pages (a 1M-flow table is 128 MB). Only a hint.
fn filled<T: Clone>(n: usize, value: T) -> Box<[T]> {
    let mut v = Vec::with_capacity(n);
    if let Err(e) = dpdk_bindings::os::advise_huge_pages(v.spare_capacity_mut()) {
        log::debug!("flow table: no transparent huge pages ({e})");
    }
    v.resize(n, value);
    v.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::super::{TcpState, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    fn fwd_key(i: u32) -> FlowKey {
        FlowKey {
            vpc: 1,
            proto: PROTO_TCP,
            src_ip: 0x0a00_0000 | (i >> 16),
            dst_ip: 0x0a01_0005,
            src_port: u16::try_from(i & 0xffff).unwrap(),
            dst_port: 443,
        }
    }

    fn rev_key(i: u32) -> FlowKey {
        FlowKey {
            vpc: 2,
            proto: PROTO_TCP,
            src_ip: 0xc0a8_0010,
            dst_ip: 0xc0a8_0001 + (i >> 16),
            src_port: 8443,
            dst_port: u16::try_from(i & 0xffff).unwrap(),
        }
    }

    fn flow(i: u32, now_ms: u64) -> Flow {
        let mut f = Flow::new(fwd_key(i), rev_key(i), now_ms);
        f.endpoint = i;
        f
    }

    const T: Timeouts = Timeouts {
        tcp_syn_ms: 10,
        tcp_established_ms: 100,
        tcp_closing_ms: 30,
        tcp_closed_ms: 5,
        udp_ms: 20,
        icmp_ms: 7,
    };

    /// Walks every chain and checks the index against the slots: each live slot is in
    /// exactly the chain of each of its keys, free slots in none, the free list is exact.
    fn check_invariants(t: &FlowTable) {
        let mut fwd_seen = vec![0u32; t.capacity()];
        let mut rev_seen = vec![0u32; t.capacity()];
        for (b, &head) in t.fwd_heads.iter().enumerate() {
            let mut id = head;
            while id != NIL {
                let s = &t.slots[ix(id)];
                assert!(!s.is_free());
                assert_eq!(t.bucket(&s.flow.fwd), b);
                fwd_seen[ix(id)] += 1;
                id = s.next_fwd;
            }
        }
        for (b, &head) in t.rev_heads.iter().enumerate() {
            let mut id = head;
            while id != NIL {
                let s = &t.slots[ix(id)];
                assert!(!s.is_free());
                assert_eq!(t.bucket(&s.flow.rev), b);
                rev_seen[ix(id)] += 1;
                id = s.next_rev;
            }
        }
        let mut free = 0;
        let mut id = t.free_head;
        while id != NIL {
            assert!(t.slots[ix(id)].is_free());
            free += 1;
            assert!(free <= t.capacity(), "free list loops");
            id = t.slots[ix(id)].next_fwd;
        }
        let live = t.slots.iter().filter(|s| !s.is_free()).count();
        assert_eq!(live, t.len());
        assert_eq!(free + live, t.capacity());
        for (i, s) in t.slots.iter().enumerate() {
            let expect = u32::from(!s.is_free());
            assert_eq!((fwd_seen[i], rev_seen[i]), (expect, expect), "slot {i}");
        }
        // The half-open queue: a NIL-terminated chain from the head to the tail through
        // exactly the queued slots, each once; every live half-open flow is in it.
        let mut queued_seen = vec![false; t.capacity()];
        let (mut id, mut last, mut n) = (t.queue_head, NIL, 0);
        while id != NIL {
            let link = t.slots[ix(id)].flow.queue;
            assert!(link.queued(), "slot {id} in the queue but not marked");
            assert!(!queued_seen[ix(id)], "slot {id} twice in the queue");
            queued_seen[ix(id)] = true;
            n += 1;
            assert!(n <= t.capacity(), "queue loops");
            last = id;
            id = link.next();
        }
        assert_eq!(last, t.queue_tail);
        for (i, s) in t.slots.iter().enumerate() {
            assert_eq!(s.flow.queue.queued(), queued_seen[i], "slot {i}");
            if !s.is_free() && s.flow.is_half_open() {
                assert!(queued_seen[i], "half-open flow in slot {i} not queued");
            }
        }
    }

    fn udp_flow(i: u32, now_ms: u64) -> Flow {
        let mut f = flow(i, now_ms);
        f.fwd.proto = PROTO_UDP;
        f.rev.proto = PROTO_UDP;
        f
    }

    fn evict_all(t: &mut FlowTable) -> Vec<u32> {
        std::iter::from_fn(|| t.evict_half_open(1000, |_| true).map(|f| f.endpoint)).collect()
    }

    /// The table full of half-open flows (a SYN flood): each eviction takes the oldest,
    /// skipping established and UDP flows, and frees a slot for a new flow. Without it a
    /// full table refuses every new flow until the half-open ones time out.
    #[test]
    fn full_table_evicts_the_oldest_half_open_flow() {
        let mut t = FlowTable::with_capacity(6, T);
        let ids: Vec<FlowId> = (0..5).map(|i| t.insert(flow(i, 0)).unwrap()).collect();
        t.insert(udp_flow(5, 0)).unwrap();
        t.get_mut(ids[1]).unwrap().tcp = TcpState::Established;
        t.get_mut(ids[3]).unwrap().tcp = TcpState::SynReceived; // still half-open
        assert!(t.is_full());
        assert_eq!(t.insert(flow(6, 0)), Err(TableFull));
        let oldest = t.evict_half_open(8, |_| true).unwrap();
        assert_eq!(oldest.endpoint, 0);
        assert_eq!(t.lookup_forward(&fwd_key(0)), None);
        assert!(!t.is_full());
        t.insert(flow(6, 0)).unwrap();
        check_invariants(&t);
        assert_eq!(
            evict_all(&mut t),
            [2, 3, 4, 6],
            "oldest first, established kept"
        );
        assert_eq!(t.len(), 2, "the established and the UDP flow stay");
        assert!(t.lookup_forward(&fwd_key(1)).is_some());
        assert_eq!(t.evict_half_open(100, |_| true), None);
        check_invariants(&t);
    }

    /// Pressure on one port range or one endpoint: the oldest half-open flow that holds it
    /// goes, the others keep their places.
    #[test]
    fn evicts_the_oldest_half_open_flow_that_matches() {
        let mut t = FlowTable::with_capacity(8, T);
        for i in 0..6 {
            t.insert(flow(i, 0)).unwrap();
        }
        let odd = |f: &Flow| f.endpoint % 2 == 1;
        assert_eq!(t.evict_half_open(8, odd).unwrap().endpoint, 1);
        assert_eq!(t.evict_half_open(8, odd).unwrap().endpoint, 3);
        assert_eq!(t.evict_half_open(8, |f: &Flow| f.endpoint == 99), None);
        assert_eq!(evict_all(&mut t), [0, 2, 4, 5]);
        check_invariants(&t);
    }

    /// A slot freed while its flow still had a place in the queue, then reused: the new
    /// flow does not inherit the old (older) place.
    #[test]
    fn reused_slot_does_not_jump_the_queue() {
        let mut t = FlowTable::with_capacity(3, T);
        let a = t.insert(flow(0, 0)).unwrap();
        t.insert(flow(1, 0)).unwrap();
        t.insert(flow(2, 0)).unwrap();
        t.get_mut(a).unwrap().tcp = TcpState::Established;
        t.remove(a);
        let d = t.insert(flow(3, 0)).unwrap();
        assert_eq!(d, a, "LIFO free list: the queued slot is reused");
        check_invariants(&t);
        assert_eq!(evict_all(&mut t), [1, 2, 3]);
        check_invariants(&t);
    }

    /// Every call looks at no more than its budget; stale places are dropped on the way,
    /// so later calls get further.
    #[test]
    fn eviction_and_tidying_are_bounded() {
        let mut t = FlowTable::with_capacity(100, T);
        let ids: Vec<FlowId> = (0..100).map(|i| t.insert(flow(i, 0)).unwrap()).collect();
        for &id in &ids[..90] {
            t.get_mut(id).unwrap().tcp = TcpState::Established;
        }
        assert_eq!(t.evict_half_open(40, |_| true), None);
        assert_eq!(t.evict_half_open(40, |_| true), None);
        assert_eq!(t.evict_half_open(40, |_| true).unwrap().endpoint, 90);
        check_invariants(&t);
        // Tidying: stale head places go, the oldest half-open flow stays first.
        for &id in &ids[91..95] {
            t.get_mut(id).unwrap().tcp = TcpState::Established;
        }
        assert_eq!(t.tidy_half_open(2), 2);
        assert_eq!(t.tidy_half_open(100), 2, "stops at flow 95");
        assert_eq!(t.queue_head, ids[95]);
        assert_eq!(t.tidy_half_open(100), 0);
        check_invariants(&t);
        let mut empty = FlowTable::with_capacity(0, T);
        assert_eq!(empty.evict_half_open(10, |_| true), None);
        assert_eq!(empty.tidy_half_open(10), 0);
    }

    #[test]
    fn flows_compare_without_their_queue_link() {
        let mut t = FlowTable::with_capacity(4, T);
        let f = flow(1, 0);
        let id = t.insert(f).unwrap();
        t.insert(flow(2, 0)).unwrap();
        assert!(t.get(id).unwrap().queue.queued());
        assert_eq!(t.get(id), Some(&f));
        assert_eq!(size_of::<Flow>(), 104, "the link lives in padding");
    }

    /// What a packet touches (the slot's first `HOT` bytes) is in at most two cache lines
    /// at every slot, where the whole slot is in three at every other one: the prefetch of
    /// a flow's first and last hot line loads all it needs.
    #[test]
    fn hot_part_of_every_slot_is_in_two_lines() {
        let t = FlowTable::with_capacity(64, T);
        let line = |p: *const u8| p as usize / LINE;
        let mut three = 0;
        for s in t.slots.iter() {
            let start = std::ptr::from_ref(s).cast::<u8>();
            let hot_last = std::ptr::from_ref(&s.flow.listener)
                .cast::<u8>()
                .wrapping_add(1);
            assert_eq!(hot_last as usize - start as usize, HOT - 1);
            assert!(
                line(hot_last) - line(start) <= 1,
                "hot part over three lines"
            );
            let end = start.wrapping_add(size_of::<Slot>() - 1);
            three += usize::from(line(end) - line(start) == 2);
        }
        assert_eq!(three, 32, "half the slots span three lines");
    }

    #[test]
    fn memory_budget() {
        assert_eq!(size_of::<Slot>(), 112);
        for cap in [0, 1, 2, 3, 1000, 1024, 1025, 65_537, 1 << 20] {
            let t = FlowTable::with_capacity(cap, T);
            let b = t.bytes_per_flow();
            assert!(b <= 128, "capacity {cap}: {b} bytes per flow");
            if cap.is_power_of_two() {
                assert_eq!(b, 120, "capacity {cap}");
            }
        }
        let t = FlowTable::with_capacity(1 << 20, T);
        assert!(t.memory_bytes() <= 120 * (1 << 20) + 4096);
        assert_eq!(FlowTable::memory_for(1 << 20), t.memory_bytes());
        assert_eq!(
            FlowTable::memory_for(1000),
            FlowTable::with_capacity(1000, T).memory_bytes()
        );
    }

    #[test]
    fn insert_and_lookup_both_keys() {
        let mut t = FlowTable::with_capacity(100, T);
        assert!(t.is_empty());
        let ids: Vec<FlowId> = (0..100).map(|i| t.insert(flow(i, 0)).unwrap()).collect();
        assert_eq!(t.len(), 100);
        for (i, &id) in (0..).zip(&ids) {
            assert_eq!(t.lookup_forward(&fwd_key(i)), Some(id));
            assert_eq!(t.lookup_reverse(&rev_key(i)), Some(id));
            assert!(t.contains_reverse(&rev_key(i)));
            assert_eq!(t.get(id).unwrap().endpoint, i);
            // A forward key is not a reverse key and vice versa.
            assert_eq!(t.lookup_reverse(&fwd_key(i)), None);
            assert_eq!(t.lookup_forward(&rev_key(i)), None);
        }
        assert_eq!(t.lookup_forward(&fwd_key(100)), None);
        assert!(!t.contains_reverse(&rev_key(100)));
        check_invariants(&t);
    }

    #[test]
    fn burst_lookup_matches_single_and_tolerates_length_mismatch() {
        let mut t = FlowTable::with_capacity(64, T);
        for i in 0..40 {
            t.insert(flow(i, 0)).unwrap();
        }
        let keys: Vec<FlowKey> = (30..50).map(fwd_key).collect();
        let mut out = [Some(7); 20];
        t.lookup_forward_burst(&keys, &mut out);
        for (k, o) in keys.iter().zip(out) {
            assert_eq!(o, t.lookup_forward(k));
        }
        assert!(out[..10].iter().all(Option::is_some));
        assert!(out[10..].iter().all(Option::is_none));
        // Shorter output: only that many keys are looked up, nothing panics.
        let mut short = [None; 3];
        t.lookup_reverse_burst(
            &[rev_key(1), rev_key(2), rev_key(3), rev_key(4)],
            &mut short,
        );
        assert!(short.iter().all(Option::is_some));
        let mut long = [Some(1); 5];
        t.lookup_reverse_burst(&[rev_key(45)], &mut long);
        assert_eq!(long, [None, Some(1), Some(1), Some(1), Some(1)]);
    }

    #[test]
    fn one_consumers_ports_spread_over_the_chains() {
        // 32k flows of one consumer to one endpoint, only the source port differing, in a
        // 32k-slot table (32k chains a side): with a good keyed index the longest chain is
        // a handful; a hash that kept the port's bits apart badly would stack them.
        for seed in [1, 42, 0x5eed] {
            let t = FlowTable::with_capacity_and_seed(1 << 15, T, seed);
            let mut per_chain = vec![0u32; 1 << 15];
            for port in 0..1u16 << 15 {
                let key = FlowKey {
                    src_ip: 0x0a01_0164,
                    dst_ip: 0x0a01_0001,
                    src_port: 1024 + port,
                    dst_port: 443,
                    vpc: 0,
                    proto: PROTO_TCP,
                };
                per_chain[t.bucket(&key)] += 1;
                assert_eq!(t.index_hash(&key) & t.mask, t.bucket(&key) as u64);
            }
            let longest = per_chain.iter().max().copied().unwrap_or(0);
            assert!(longest <= 10, "seed {seed}: a chain of {longest}");
        }
    }

    #[test]
    fn chains_with_one_bucket() {
        // Capacity 1 has one bucket per index; a tiny table with many collisions is what
        // exercises mid-chain unlinking, so use capacity 8 with every key in few buckets.
        let mut t = FlowTable::with_capacity_and_seed(8, T, 42);
        let ids: Vec<FlowId> = (0..8).map(|i| t.insert(flow(i, 0)).unwrap()).collect();
        check_invariants(&t);
        for &victim in &[ids[3], ids[0], ids[7], ids[5]] {
            t.remove(victim).unwrap();
            check_invariants(&t);
        }
        for i in [1u32, 2, 4, 6] {
            assert_eq!(t.lookup_forward(&fwd_key(i)), Some(ids[ix(i)]));
            assert_eq!(t.lookup_reverse(&rev_key(i)), Some(ids[ix(i)]));
        }
        for i in [0u32, 3, 5, 7] {
            assert_eq!(t.lookup_forward(&fwd_key(i)), None);
            assert_eq!(t.lookup_reverse(&rev_key(i)), None);
        }
    }

    #[test]
    fn remove_unlinks_both_chains_and_frees_the_slot() {
        let mut t = FlowTable::with_capacity(4, T);
        let a = t.insert(flow(1, 0)).unwrap();
        let b = t.insert(flow(2, 0)).unwrap();
        let removed = t.remove(a).unwrap();
        assert_eq!(removed.endpoint, 1);
        assert_eq!(t.lookup_forward(&fwd_key(1)), None);
        assert_eq!(t.lookup_reverse(&rev_key(1)), None);
        assert_eq!(t.lookup_forward(&fwd_key(2)), Some(b));
        assert_eq!(t.len(), 1);
        check_invariants(&t);
        // The freed slot is reused first (LIFO, cache-warm).
        assert_eq!(t.insert(flow(3, 0)).unwrap(), a);
        check_invariants(&t);
    }

    #[test]
    fn stale_and_bad_ids() {
        let mut t = FlowTable::with_capacity(4, T);
        let a = t.insert(flow(1, 0)).unwrap();
        assert!(t.remove(a).is_some());
        assert!(t.get(a).is_none());
        assert!(t.get_mut(a).is_none());
        assert!(t.remove(a).is_none(), "double remove");
        assert!(t.is_expired(a, 0));
        for bad in [3, 4, 1000, FREE, NIL] {
            assert!(t.get(bad).is_none());
            assert!(t.get_mut(bad).is_none());
            assert!(t.remove(bad).is_none());
            assert!(t.is_expired(bad, 0));
        }
        assert_eq!(t.len(), 0);
        check_invariants(&t);
    }

    #[test]
    fn full_table_refuses_and_keeps_serving() {
        let mut t = FlowTable::with_capacity(3, T);
        for i in 0..3 {
            t.insert(flow(i, 0)).unwrap();
        }
        assert_eq!(t.insert(flow(3, 0)), Err(TableFull));
        assert_eq!(TableFull.to_string(), "flow table full");
        assert_eq!(t.len(), 3);
        for i in 0..3 {
            assert!(t.lookup_forward(&fwd_key(i)).is_some());
            assert!(t.lookup_reverse(&rev_key(i)).is_some());
        }
        assert_eq!(t.lookup_forward(&fwd_key(3)), None);
        check_invariants(&t);
        let id = t.lookup_forward(&fwd_key(1)).unwrap();
        t.remove(id);
        assert!(t.insert(flow(3, 0)).is_ok());

        let mut empty = FlowTable::with_capacity(0, T);
        assert_eq!(empty.insert(flow(0, 0)), Err(TableFull));
        assert_eq!(empty.lookup_forward(&fwd_key(0)), None);
        assert_eq!(empty.expire(1000, 10, |_, _| {}), 0);
    }

    #[test]
    fn get_mut_updates_in_place() {
        let mut t = FlowTable::with_capacity(4, T);
        let id = t.insert(flow(1, 0)).unwrap();
        let f = t.get_mut(id).unwrap();
        f.tcp = f.tcp.advance(false, super::super::TcpFlags::SYN_ACK);
        f.touch(9, true, 100);
        assert_eq!(t.get(id).unwrap().tcp, TcpState::SynReceived);
        assert_eq!(t.get(id).unwrap().bytes_fwd, 100);
        assert_eq!(t.lookup_forward(&fwd_key(1)), Some(id));
    }

    #[test]
    fn changed_key_still_removes_cleanly_in_release() {
        // Misuse: the key is changed in place. Lookups by the new key miss, but removal
        // must not leave the index dangling. (In debug builds it asserts.)
        if cfg!(debug_assertions) {
            return;
        }
        let mut t = FlowTable::with_capacity(16, T);
        let id = t.insert(flow(1, 0)).unwrap();
        t.get_mut(id).unwrap().fwd = fwd_key(99);
        assert!(t.remove(id).is_some());
        check_invariants(&t);
    }

    #[test]
    fn is_expired_per_protocol_and_state() {
        let mut t = FlowTable::with_capacity(8, T);
        let tcp = t.insert(flow(1, 1000)).unwrap();
        assert!(!t.is_expired(tcp, 1009));
        assert!(t.is_expired(tcp, 1010), "SYN timeout 10");
        t.get_mut(tcp).unwrap().tcp = TcpState::Established;
        assert!(!t.is_expired(tcp, 1099));
        assert!(t.is_expired(tcp, 1100));
        t.get_mut(tcp).unwrap().tcp = TcpState::Closed;
        assert!(t.is_expired(tcp, 1005));

        let mut u = flow(2, 1000);
        u.fwd.proto = PROTO_UDP;
        u.rev.proto = PROTO_UDP;
        let udp = t.insert(u).unwrap();
        assert!(!t.is_expired(udp, 1019));
        assert!(t.is_expired(udp, 1020));

        let mut i = flow(3, 1000);
        i.fwd.proto = PROTO_ICMP;
        i.rev.proto = PROTO_ICMP;
        let icmp = t.insert(i).unwrap();
        assert!(!t.is_expired(icmp, 1006));
        assert!(t.is_expired(icmp, 1007));
        assert!(!t.is_expired(icmp, 0), "clock went backwards");

        t.set_timeouts(Timeouts { icmp_ms: 1, ..T });
        assert!(t.is_expired(icmp, 1001));
        assert_eq!(t.timeouts().icmp_ms, 1);
    }

    #[test]
    fn expire_removes_only_expired_and_respects_budget() {
        let mut t = FlowTable::with_capacity(10, T);
        // Even flows seen at 0, odd at 50; SYN timeout 10.
        for i in 0..10 {
            t.insert(flow(i, if i % 2 == 0 { 0 } else { 50 })).unwrap();
        }
        let mut gone = Vec::new();
        // Budget 4 at t=55: examines slots 0..4, removes 0 and 2.
        assert_eq!(t.expire(55, 4, |_, f| gone.push(f.endpoint)), 2);
        assert_eq!(gone, [0, 2]);
        assert_eq!(t.len(), 8);
        // Next call continues at slot 4.
        assert_eq!(t.expire(55, 4, |_, f| gone.push(f.endpoint)), 2);
        assert_eq!(gone, [0, 2, 4, 6]);
        // Budget larger than the table: one pass only, wrapping from slot 8.
        assert_eq!(t.expire(55, 1000, |_, f| gone.push(f.endpoint)), 1);
        assert_eq!(gone, [0, 2, 4, 6, 8]);
        assert_eq!(t.len(), 5);
        assert!(t.iter().all(|(_, f)| f.endpoint % 2 == 1));
        // Budget 0 does nothing.
        assert_eq!(t.expire(1_000_000, 0, |_, _| panic!()), 0);
        // Later everything goes.
        assert_eq!(t.expire(1_000_000, 10, |_, _| {}), 5);
        assert!(t.is_empty());
        check_invariants(&t);
    }

    #[test]
    fn expire_wraps_around() {
        let mut t = FlowTable::with_capacity(5, T);
        for i in 0..5 {
            t.insert(flow(i, 0)).unwrap();
        }
        // Advance the cursor to 3 with nothing expired.
        assert_eq!(t.expire(0, 3, |_, _| panic!()), 0);
        let mut gone = Vec::new();
        assert_eq!(t.expire(100, 4, |_, f| gone.push(f.endpoint)), 4);
        assert_eq!(gone, [3, 4, 0, 1]);
        assert_eq!(t.expire(100, 1, |_, f| gone.push(f.endpoint)), 1);
        assert_eq!(gone, [3, 4, 0, 1, 2]);
        check_invariants(&t);
    }

    #[test]
    fn iter_lists_live_flows() {
        let mut t = FlowTable::with_capacity(6, T);
        let ids: Vec<FlowId> = (0..6).map(|i| t.insert(flow(i, 0)).unwrap()).collect();
        t.remove(ids[1]);
        t.remove(ids[4]);
        let listed: Vec<(FlowId, u32)> = t.iter().map(|(id, f)| (id, f.endpoint)).collect();
        assert_eq!(listed, [(ids[0], 0), (ids[2], 2), (ids[3], 3), (ids[5], 5)]);
    }

    #[test]
    fn debug_is_short() {
        let t = FlowTable::with_capacity(1000, T);
        let s = format!("{t:?}");
        assert!(
            s.starts_with("FlowTable { capacity: 1000, len: 0, buckets: 1024"),
            "{s}"
        );
    }

    #[test]
    #[should_panic(expected = "exceeds the maximum")]
    fn capacity_limit() {
        let _ = FlowTable::with_capacity(MAX_CAPACITY + 1, T);
    }

    // ---- model test: the table against std maps ----

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert a flow with these key numbers, if neither key is present.
        Insert { fwd: u32, rev: u32, udp: bool },
        /// Remove the n-th live flow (modulo the count).
        Remove(usize),
        /// Remove by an id that may be stale or out of range.
        RemoveId(u32),
        /// Refresh the n-th live flow's last-seen time.
        Touch(usize),
        /// Move the clock forward.
        Advance(u64),
        /// Run expiry with this budget.
        Expire(usize),
        /// Complete the n-th live flow's handshake (it stops being half-open).
        Establish(usize),
        /// Evict a half-open flow, looking at this many queue places.
        Evict(usize),
        /// Tidy the half-open queue with this budget.
        Tidy(usize),
    }

    /// Runs `ops` on a table of `capacity` and on a model, checking they agree after every
    /// operation. Keys are drawn from `0..domain`, so lookups of absent keys are checked
    /// too.
    fn run_model(capacity: usize, domain: u32, seed: u64, ops: impl IntoIterator<Item = Op>) {
        let mut t = FlowTable::with_capacity_and_seed(capacity, T, seed);
        // id -> flow, plus key -> id maps and the expiry cursor.
        let mut live: BTreeMap<FlowId, Flow> = BTreeMap::new();
        let mut by_fwd: HashMap<FlowKey, FlowId> = HashMap::new();
        let mut by_rev: HashMap<FlowKey, FlowId> = HashMap::new();
        let mut cursor = 0usize;
        let mut now = 0u64;
        let mut serial = 0u32;
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert { fwd, rev, udp } => {
                    let mut f = flow(fwd % domain, now);
                    f.rev = rev_key(rev % domain);
                    if udp {
                        f.fwd.proto = PROTO_UDP;
                        f.rev.proto = PROTO_UDP;
                    }
                    f.endpoint = serial;
                    serial += 1;
                    if by_fwd.contains_key(&f.fwd) || by_rev.contains_key(&f.rev) {
                        continue; // the caller guarantees absent keys
                    }
                    match t.insert(f) {
                        Ok(id) => {
                            assert!(live.len() < capacity, "step {step}: over capacity");
                            assert!(live.insert(id, f).is_none(), "step {step}: id reused");
                            by_fwd.insert(f.fwd, id);
                            by_rev.insert(f.rev, id);
                        }
                        Err(TableFull) => assert_eq!(live.len(), capacity, "step {step}"),
                    }
                }
                Op::Remove(n) => {
                    if let Some(&id) = live.keys().nth(n % live.len().max(1)) {
                        let f = live.remove(&id).unwrap();
                        by_fwd.remove(&f.fwd);
                        by_rev.remove(&f.rev);
                        assert_eq!(t.remove(id), Some(f), "step {step}");
                    }
                }
                Op::RemoveId(id) => {
                    let expect = live.remove(&id);
                    if let Some(f) = expect {
                        by_fwd.remove(&f.fwd);
                        by_rev.remove(&f.rev);
                    }
                    assert_eq!(t.remove(id), expect, "step {step}");
                }
                Op::Touch(n) => {
                    let count = live.len().max(1);
                    if let Some((&id, f)) = live.iter_mut().nth(n % count) {
                        f.last_seen_ms = now;
                        t.get_mut(id).unwrap().last_seen_ms = now;
                    }
                }
                Op::Advance(ms) => now += ms,
                Op::Establish(n) => {
                    let count = live.len().max(1);
                    if let Some((&id, f)) = live.iter_mut().nth(n % count) {
                        f.tcp = TcpState::Established;
                        t.get_mut(id).unwrap().tcp = TcpState::Established;
                    }
                }
                Op::Evict(budget) => {
                    let half_open = live.values().filter(|f| f.is_half_open()).count();
                    match t.evict_half_open(budget, |_| true) {
                        Some(f) => {
                            assert!(f.is_half_open(), "step {step}: evicted {f:?}");
                            let id = by_fwd.remove(&f.fwd).expect("evicted a live flow");
                            by_rev.remove(&f.rev);
                            assert_eq!(live.remove(&id), Some(f), "step {step}");
                        }
                        // Each place is looked at at most twice (once more after a move
                        // to the back), so a budget of twice the capacity finds any.
                        None => assert!(
                            half_open == 0 || budget < 2 * capacity + 1,
                            "step {step}: {half_open} half-open flows, none evicted"
                        ),
                    }
                }
                Op::Tidy(budget) => {
                    assert!(t.tidy_half_open(budget) <= budget);
                }
                Op::Expire(budget) => {
                    let mut expected = Vec::new();
                    if !live.is_empty() {
                        for _ in 0..budget.min(capacity) {
                            let id = u32::try_from(cursor).unwrap();
                            cursor = (cursor + 1) % capacity;
                            if live.get(&id).is_some_and(|f| f.is_expired(now, &T)) {
                                let f = live.remove(&id).unwrap();
                                by_fwd.remove(&f.fwd);
                                by_rev.remove(&f.rev);
                                expected.push(f);
                            }
                        }
                    }
                    let mut got = Vec::new();
                    let n = t.expire(now, budget, |_, f| got.push(*f));
                    assert_eq!(n, got.len());
                    assert_eq!(got, expected, "step {step}");
                }
            }
            // Agreement after every step.
            assert_eq!(t.len(), live.len(), "step {step}");
            for (&id, f) in &live {
                assert_eq!(t.get(id), Some(f), "step {step}");
                assert_eq!(t.lookup_forward(&f.fwd), Some(id), "step {step}");
                assert_eq!(t.lookup_reverse(&f.rev), Some(id), "step {step}");
                assert_eq!(t.is_expired(id, now), f.is_expired(now, &T));
            }
            let mut fwd_keys = Vec::new();
            let mut rev_keys = Vec::new();
            for k in 0..domain {
                for proto in [PROTO_TCP, PROTO_UDP] {
                    let fk = FlowKey {
                        proto,
                        ..fwd_key(k)
                    };
                    let rk = FlowKey {
                        proto,
                        ..rev_key(k)
                    };
                    assert_eq!(t.lookup_forward(&fk), by_fwd.get(&fk).copied());
                    assert_eq!(t.contains_reverse(&rk), by_rev.contains_key(&rk));
                    fwd_keys.push(fk);
                    rev_keys.push(rk);
                }
            }
            let mut out = vec![Some(NIL); fwd_keys.len()];
            t.lookup_forward_burst(&fwd_keys, &mut out);
            let expect: Vec<_> = fwd_keys.iter().map(|k| by_fwd.get(k).copied()).collect();
            assert_eq!(out, expect, "step {step}");
            t.lookup_reverse_burst(&rev_keys, &mut out);
            let expect: Vec<_> = rev_keys.iter().map(|k| by_rev.get(k).copied()).collect();
            assert_eq!(out, expect, "step {step}");
            let listed: Vec<(FlowId, Flow)> = t.iter().map(|(id, f)| (id, *f)).collect();
            let modelled: Vec<(FlowId, Flow)> = live.iter().map(|(&id, f)| (id, *f)).collect();
            assert_eq!(listed, modelled, "step {step}");
        }
        check_invariants(&t);
    }

    /// xorshift64*: a tiny seeded PRNG for the long model run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_op(r: &mut Rng, domain: u32) -> Op {
        let d = u64::from(domain);
        let small = |x: u64| u32::try_from(x).unwrap();
        match r.below(100) {
            0..=39 => Op::Insert {
                fwd: small(r.below(d)),
                rev: small(r.below(d)),
                udp: r.below(2) == 0,
            },
            40..=54 => Op::Remove(usize::try_from(r.below(1 << 16)).unwrap()),
            55..=59 => Op::RemoveId(small(r.below(d + 4))),
            60..=69 => Op::Touch(usize::try_from(r.below(1 << 16)).unwrap()),
            70..=81 => Op::Advance(r.below(8)),
            82..=85 => Op::Establish(usize::try_from(r.below(1 << 16)).unwrap()),
            86..=89 => Op::Evict(usize::try_from(r.below(2 * d + 4)).unwrap()),
            90..=91 => Op::Tidy(usize::try_from(r.below(8)).unwrap()),
            _ => Op::Expire(usize::try_from(r.below(d / 2 + 2)).unwrap()),
        }
    }

    #[test]
    fn model_seeded_long_run() {
        for (capacity, domain, seed) in [(1, 4, 1), (7, 16, 2), (64, 96, 3), (300, 400, 4)] {
            let mut r = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
            let ops: Vec<Op> = (0..3000).map(|_| random_op(&mut r, domain)).collect();
            run_model(capacity, domain, seed, ops);
        }
    }

    mod model_prop {
        use super::*;
        use proptest::prelude::*;

        fn op(domain: u32) -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0..domain, 0..domain, any::<bool>())
                    .prop_map(|(fwd, rev, udp)| Op::Insert { fwd, rev, udp }),
                2 => any::<usize>().prop_map(Op::Remove),
                1 => (0..domain + 2).prop_map(Op::RemoveId),
                1 => any::<usize>().prop_map(Op::Touch),
                2 => (0..12u64).prop_map(Op::Advance),
                2 => (0..24usize).prop_map(Op::Expire),
                1 => any::<usize>().prop_map(Op::Establish),
                1 => (0..60usize).prop_map(Op::Evict),
                1 => (0..8usize).prop_map(Op::Tidy),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn table_matches_model(
                capacity in 1usize..24,
                seed in any::<u64>(),
                ops in proptest::collection::vec(op(32), 1..200),
            ) {
                run_model(capacity, 32, seed, ops);
            }
        }
    }
}
