//! The neighbour table: next-hop MACs per VPC attachment, learned from ARP (IPv4) or
//! neighbour discovery (IPv6) and resolved on demand with bounded retries, shared by
//! every worker. One implementation serves both versions ([`NeighbourAddr`]): an IPv6
//! key is three words instead of one, compared whole, never a hash of the address.
//!
//! Why one table for all workers: a worker that needs a next hop sends the ARP request,
//! but the reply comes back on whatever queue the device (RSS, or the kernel behind a tap)
//! picks, usually one worker's. With a table per worker, the news had to travel to the
//! others through bounded inboxes and could be lost, and a worker that missed it never
//! heard it again (the next reply carries the same, "unchanged" MAC) and black-holed that
//! next hop. Here the worker that receives a reply writes it into the one table, and every
//! worker sees it at its next lookup; packets another worker holds for that next hop go out
//! at its next timer tick (10 ms), when it looks its held packets up again. Nothing is sent
//! between workers, so nothing can be dropped on the way.
//!
//! Layout and concurrency: a set-associative table of [`WAYS`]-entry sets. Each set is
//! guarded by a sequence lock made of atomics only (no raw memory access, no mutex): readers never
//! write the set and never wait for more than a few retries; a writer takes the set's
//! sequence with one compare-and-swap, which serialises writers (any worker may write: the
//! ARP reply can land anywhere) and keeps one key in one way of its set. Writes are rare
//! (ARP traffic, a refresh claim per TTL, a request per new next hop). A writer that finds
//! the set taken retries a little and then gives up: a claim (request, refresh, retry) is
//! then someone else's, and a learned MAC is kept by the worker and written at its next
//! tick ([`Neighbours::retry_deferred`]), so even that race loses nothing.
//!
//! One ARP per next hop, not one per worker: the transitions that send a request (unknown →
//! incomplete, a retry that is due, a reachable entry past its TTL → refreshed) are
//! claimed under the set's lock, so exactly one worker sends it; the others hold their
//! packets (unknown) or keep using the MAC (refresh).
//!
//! A full set evicts its least recently used entry (static ones never): the set holds
//! [`WAYS`] candidates, so choosing among them is a fixed cost, never a scan of the table.
//! Lookups stamp an entry's last use at most once per cache period per worker (see
//! [`Neighbours`]), so the packet path does not write shared memory per packet.
//!
//! In front of the shared table each worker keeps a small private cache of recent answers
//! ([`Neighbours`]): the fast path's lookup stays one compare. A change that could make a
//! cached answer wrong (a MAC changed, an entry evicted or replaced) bumps the table's
//! version; each worker compares it once per poll and clears its cache when it moved.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

/// An address the table keys next hops by: `u32` (IPv4) or `u128` (IPv6).
pub trait NeighbourAddr: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// (attachment, address) as stored; the default value marks a free way, which no
    /// key ever equals.
    type Key: Copy + Eq + Default + std::fmt::Debug;
    /// The atomics one key is stored in.
    type Cell: Default + std::fmt::Debug + Send + Sync;
    fn key(att: u16, ip: Self) -> Self::Key;
    /// Reads a key; a whole one only under the set's sequence (see [`Set::read`]).
    fn load(cell: &Self::Cell) -> Self::Key;
    fn store(cell: &Self::Cell, key: Self::Key);
    /// The bits the set is chosen by.
    fn spread(key: Self::Key) -> u64;
    /// The slot of a worker's cache.
    fn cache_slot(att: u16, ip: Self) -> usize;
    fn addr(self) -> IpAddr;
    /// Whether two keys are one: `==` unless a key is wider than a register.
    #[inline]
    fn same(a: Self::Key, b: Self::Key) -> bool {
        a == b
    }
}

impl NeighbourAddr for u32 {
    /// `(attachment << 32 | ip) + 1`.
    type Key = u64;
    type Cell = AtomicU64;

    #[inline]
    fn key(att: u16, ip: u32) -> u64 {
        ((u64::from(att) << 32) | u64::from(ip)) + 1
    }

    #[inline]
    fn load(cell: &AtomicU64) -> u64 {
        cell.load(Ordering::Relaxed)
    }

    #[inline]
    fn store(cell: &AtomicU64, key: u64) {
        cell.store(key, Ordering::Relaxed);
    }

    #[inline]
    fn spread(key: u64) -> u64 {
        key
    }

    #[inline]
    fn cache_slot(att: u16, ip: u32) -> usize {
        // Low bits of the host part spread consecutive addresses over the slots.
        ((ip ^ (ip >> 8) ^ u32::from(att)) as usize) % CACHE_SLOTS
    }

    fn addr(self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(self))
    }
}

impl NeighbourAddr for u128 {
    /// `[attachment + 1, high half, low half]`.
    type Key = [u64; 3];
    type Cell = [AtomicU64; 3];

    #[inline]
    fn key(att: u16, ip: u128) -> [u64; 3] {
        #[allow(clippy::cast_possible_truncation)] // the two halves
        let (hi, lo) = ((ip >> 64) as u64, ip as u64);
        [u64::from(att) + 1, hi, lo]
    }

    #[inline]
    fn load(cell: &[AtomicU64; 3]) -> [u64; 3] {
        [
            cell[0].load(Ordering::Relaxed),
            cell[1].load(Ordering::Relaxed),
            cell[2].load(Ordering::Relaxed),
        ]
    }

    #[inline]
    fn store(cell: &[AtomicU64; 3], key: [u64; 3]) {
        for (c, k) in cell.iter().zip(key) {
            c.store(k, Ordering::Relaxed);
        }
    }

    /// Word by word in registers: `==` on the arrays compares them as 16 bytes from
    /// memory, where the key was just written as three words (a store the load cannot
    /// be forwarded from: more than half the IPv6 output node's time).
    #[inline]
    fn same(a: [u64; 3], b: [u64; 3]) -> bool {
        ((a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2])) == 0
    }

    #[inline]
    fn spread(key: [u64; 3]) -> u64 {
        // Interface identifiers differ in the low half, prefixes in the high one.
        crate::tables::maglev::mix64(key[2] ^ key[1].rotate_left(17) ^ key[0].rotate_left(48))
    }

    #[inline]
    fn cache_slot(att: u16, ip: u128) -> usize {
        #[allow(clippy::cast_possible_truncation)] // the low bits
        let low = ip as u32;
        <u32 as NeighbourAddr>::cache_slot(att, low)
    }

    fn addr(self) -> IpAddr {
        IpAddr::V6(Ipv6Addr::from(self))
    }
}

/// Entries per set: the candidates a new neighbour may replace when its set is full.
pub const WAYS: usize = 8;
/// Read attempts while a writer holds a set (each a few nanoseconds apart).
const READ_TRIES: u32 = 64;
/// Attempts to take a set for writing before leaving the write to someone else or later.
const LOCK_TRIES: u32 = 256;
/// Learned MACs a worker keeps for a later write when their set was busy.
pub(crate) const DEFERRED: usize = 16;

/// What to do about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Known: use this MAC.
    Known([u8; 6]),
    /// Known but not confirmed for a while: use this MAC and send an ARP request to
    /// refresh it (like Linux's STALE → PROBE), so traffic never stalls on a refresh.
    /// Only the worker that claimed the refresh gets this; the others get `Known`.
    Refresh([u8; 6]),
    /// Unknown (or a retry is due) and this worker claimed the request: send an ARP
    /// request now, hold the packet.
    Request,
    /// A request is outstanding (or the set is being written): hold the packet.
    Pending,
    /// Recently failed to resolve, or no room for it: drop the packet.
    Failed,
}

/// What [`NeighbourTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A neighbour that was unknown, incomplete or failed is now reachable.
    New,
    /// A reachable neighbour has a new MAC.
    Changed,
    /// Same MAC, confirmed again.
    Confirmed,
    /// A static entry: configuration wins over ARP.
    Static,
    /// Its set is full of static entries: not cached.
    NoRoom,
    /// Its set was being written: not written (the caller may retry).
    Busy,
    /// [`NeighbourTable::confirm`] of a neighbour nobody asked for: nothing written.
    Untracked,
}

impl Learned {
    /// The MAC is in the table now (held packets for it can go).
    pub fn is_usable(self) -> bool {
        matches!(
            self,
            Learned::New | Learned::Changed | Learned::Confirmed | Learned::Static
        )
    }
}

/// Timing of resolution.
#[derive(Debug, Clone, Copy)]
pub struct NeighbourTimers {
    pub retry_ms: u64,
    pub tries: u8,
    /// A learned entry is trusted this long without being confirmed again.
    pub ttl_ms: u64,
    /// After the last try fails, packets to that neighbour are dropped this long.
    pub failed_hold_ms: u64,
}

impl Default for NeighbourTimers {
    fn default() -> Self {
        NeighbourTimers {
            retry_ms: 1000,
            tries: 3,
            ttl_ms: 600_000,
            failed_hold_ms: 3000,
        }
    }
}

/// One entry as decoded from its atomics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Static { mac: [u8; 6] },
    Reachable { mac: [u8; 6], confirmed_ms: u64 },
    Incomplete { sent: u8, next_retry_ms: u64 },
    Failed { until_ms: u64 },
}

const KIND_STATIC: u8 = 1;
const KIND_REACHABLE: u8 = 2;
const KIND_INCOMPLETE: u8 = 3;
const KIND_FAILED: u8 = 4;

impl State {
    /// (entry word, time word): the MAC in bytes 0..6 of the entry, the kind in byte 6,
    /// the request count in byte 7.
    fn encode(self) -> (u64, u64) {
        let (mac, kind, sent, time) = match self {
            State::Static { mac } => (mac, KIND_STATIC, 0, 0),
            State::Reachable { mac, confirmed_ms } => (mac, KIND_REACHABLE, 0, confirmed_ms),
            State::Incomplete {
                sent,
                next_retry_ms,
            } => ([0; 6], KIND_INCOMPLETE, sent, next_retry_ms),
            State::Failed { until_ms } => ([0; 6], KIND_FAILED, 0, until_ms),
        };
        let w = [mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], kind, sent];
        (u64::from_le_bytes(w), time)
    }

    fn decode(entry: u64, time: u64) -> Option<State> {
        let w = entry.to_le_bytes();
        let mac = [w[0], w[1], w[2], w[3], w[4], w[5]];
        Some(match w[6] {
            KIND_STATIC => State::Static { mac },
            KIND_REACHABLE => State::Reachable {
                mac,
                confirmed_ms: time,
            },
            KIND_INCOMPLETE => State::Incomplete {
                sent: w[7],
                next_retry_ms: time,
            },
            KIND_FAILED => State::Failed { until_ms: time },
            _ => return None,
        })
    }

    fn mac(self) -> Option<[u8; 6]> {
        match self {
            State::Static { mac } | State::Reachable { mac, .. } => Some(mac),
            _ => None,
        }
    }
}

/// One set: its sequence lock and [`WAYS`] entries. Keys sit together so a lookup reads
/// the sequence and one line of keys before the entry it wants.
#[derive(Debug)]
#[repr(align(64))]
struct Set<A: NeighbourAddr> {
    /// Odd while a writer holds the set.
    seq: AtomicU64,
    /// [`NeighbourAddr::key`]s; the default = free.
    keys: [A::Cell; WAYS],
    entries: [AtomicU64; WAYS],
    times: [AtomicU64; WAYS],
    /// Last use (ms), for eviction only: a hint, written outside the lock.
    used: [AtomicU64; WAYS],
}

impl<A: NeighbourAddr> Set<A> {
    fn new() -> Set<A> {
        Set {
            seq: AtomicU64::new(0),
            keys: std::array::from_fn(|_| A::Cell::default()),
            entries: std::array::from_fn(|_| AtomicU64::new(0)),
            times: std::array::from_fn(|_| AtomicU64::new(0)),
            used: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The way holding `key` and its state, read consistently; Err when a writer held the
    /// set for every attempt.
    #[inline]
    fn read(&self, key: A::Key) -> Result<Option<(usize, State)>, ()> {
        for _ in 0..READ_TRIES {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                let mut found = None;
                for (w, k) in self.keys.iter().enumerate() {
                    if A::load(k) == key {
                        found = Some((
                            w,
                            self.entries[w].load(Ordering::Relaxed),
                            self.times[w].load(Ordering::Relaxed),
                        ));
                        break;
                    }
                }
                // The loads above must complete before the sequence is checked again.
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return Ok(found.and_then(|(w, e, t)| State::decode(e, t).map(|s| (w, s))));
                }
            }
            std::hint::spin_loop();
        }
        Err(())
    }

    /// Takes the set for writing, or None when another writer keeps it.
    fn lock(&self) -> Option<SetGuard<'_, A>> {
        for _ in 0..LOCK_TRIES {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                // The odd sequence must be visible before any entry changes.
                fence(Ordering::Release);
                return Some(SetGuard {
                    set: self,
                    seq: s + 1,
                });
            }
            std::hint::spin_loop();
        }
        None
    }
}

/// A set held for writing; dropping it publishes the changes (even sequence).
struct SetGuard<'a, A: NeighbourAddr> {
    set: &'a Set<A>,
    seq: u64,
}

impl<A: NeighbourAddr> SetGuard<'_, A> {
    fn find(&self, key: A::Key) -> Option<(usize, State)> {
        let s = self.set;
        let w = s.keys.iter().position(|k| A::load(k) == key)?;
        // Every write stores a valid entry; an unreadable one would be an expired failure,
        // still in its way so that the key is never stored twice.
        let st = State::decode(
            s.entries[w].load(Ordering::Relaxed),
            s.times[w].load(Ordering::Relaxed),
        )
        .unwrap_or(State::Failed { until_ms: 0 });
        Some((w, st))
    }

    fn put(&self, way: usize, key: A::Key, state: State, now_ms: u64) {
        let s = self.set;
        let (entry, time) = state.encode();
        A::store(&s.keys[way], key);
        s.entries[way].store(entry, Ordering::Relaxed);
        s.times[way].store(time, Ordering::Relaxed);
        s.used[way].store(now_ms, Ordering::Relaxed);
    }

    /// A free or failed way, if the set has one (evicting nothing in use).
    fn free_way(&self) -> Option<(usize, bool)> {
        let s = self.set;
        (0..WAYS)
            .find(|&w| {
                A::load(&s.keys[w]) == A::Key::default()
                    || matches!(
                        State::decode(
                            s.entries[w].load(Ordering::Relaxed),
                            s.times[w].load(Ordering::Relaxed),
                        ),
                        None | Some(State::Failed { .. })
                    )
            })
            .map(|w| (w, false))
    }

    /// A way for a new key: a free one, else a failed one, else the least recently used
    /// of the rest (never a static one). The second value is true when a usable MAC is
    /// evicted (workers may have it cached).
    fn victim(&self) -> Option<(usize, bool)> {
        let s = self.set;
        let mut best: Option<(usize, u64, bool)> = None;
        for w in 0..WAYS {
            if A::load(&s.keys[w]) == A::Key::default() {
                return Some((w, false));
            }
            let st = State::decode(
                s.entries[w].load(Ordering::Relaxed),
                s.times[w].load(Ordering::Relaxed),
            );
            let rank = match st {
                Some(State::Static { .. }) => continue,
                None | Some(State::Failed { .. }) => return Some((w, false)),
                Some(st) => (s.used[w].load(Ordering::Relaxed), st.mac().is_some()),
            };
            if best.is_none_or(|(_, used, _)| rank.0 < used) {
                best = Some((w, rank.0, rank.1));
            }
        }
        best.map(|(w, _, had_mac)| (w, had_mac))
    }
}

impl<A: NeighbourAddr> Drop for SetGuard<'_, A> {
    fn drop(&mut self) {
        self.set.seq.store(self.seq + 1, Ordering::Release);
    }
}

/// The neighbours of all attachments, shared by every worker (see the module docs).
#[derive(Debug)]
pub struct NeighbourTableOf<A: NeighbourAddr> {
    sets: Box<[Set<A>]>,
    mask: usize,
    timers: NeighbourTimers,
    /// Bumped when a MAC that a worker may have cached changes or leaves the table.
    version: AtomicU64,
}

/// The IPv4 (ARP) table.
pub type NeighbourTable = NeighbourTableOf<u32>;
/// The IPv6 (neighbour discovery) table.
pub type NeighbourTable6 = NeighbourTableOf<u128>;

#[inline]
fn key_of<A: NeighbourAddr>(att: u16, ip: A) -> A::Key {
    A::key(att, ip)
}

impl<A: NeighbourAddr> NeighbourTableOf<A> {
    /// A table for at least `capacity` neighbours (rounded up to whole sets, a power of
    /// two of them).
    pub fn new(capacity: usize, timers: NeighbourTimers) -> NeighbourTableOf<A> {
        let sets = Self::sets_for(capacity);
        NeighbourTableOf {
            sets: (0..sets).map(|_| Set::new()).collect(),
            mask: sets - 1,
            timers,
            version: AtomicU64::new(0),
        }
    }

    fn sets_for(capacity: usize) -> usize {
        capacity.max(1).div_ceil(WAYS).next_power_of_two()
    }

    /// The bytes [`NeighbourTable::new`] allocates for `capacity`: for the start-up memory
    /// check.
    pub fn memory_for(capacity: usize) -> usize {
        Self::sets_for(capacity) * std::mem::size_of::<Set<A>>() + std::mem::size_of::<Self>()
    }

    /// How many neighbours it can hold.
    pub fn capacity(&self) -> usize {
        self.sets.len() * WAYS
    }

    pub fn timers(&self) -> NeighbourTimers {
        self.timers
    }

    /// Changes whenever a MAC that may be cached changes or is evicted.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    #[inline]
    fn set_of(&self, key: A::Key) -> &Set<A> {
        // Fibonacci hashing: the high bits of the product spread neighbouring addresses.
        let h = A::spread(key).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let i = usize::try_from(h).unwrap_or(0) & self.mask;
        &self.sets[i]
    }

    /// The MAC of `ip` on `att` if it can be used now without asking (static, or reachable
    /// and confirmed within the TTL), with how long it stays usable (u64::MAX: static).
    /// Stamps the entry's last use.
    pub fn known(&self, att: u16, ip: A, now_ms: u64) -> Option<([u8; 6], u64)> {
        let key = key_of(att, ip);
        let set = self.set_of(key);
        let (way, st) = set.read(key).ok()??;
        let answer = match st {
            State::Static { mac } => (mac, u64::MAX),
            State::Reachable { mac, confirmed_ms }
                if now_ms.saturating_sub(confirmed_ms) <= self.timers.ttl_ms =>
            {
                (mac, confirmed_ms.saturating_add(self.timers.ttl_ms))
            }
            _ => return None,
        };
        set.used[way].store(now_ms, Ordering::Relaxed);
        Some(answer)
    }

    /// The MAC of `ip` if known (static or reachable, fresh or not), without side effects.
    pub fn get(&self, att: u16, ip: A) -> Option<[u8; 6]> {
        let key = key_of(att, ip);
        self.set_of(key).read(key).ok()??.1.mac()
    }

    /// What to do for next hop `ip` on `att` now; claims the request or refresh when one
    /// is to be sent, so that one worker sends it.
    pub fn resolve(&self, att: u16, ip: A, now_ms: u64) -> Resolution {
        let t = self.timers;
        let key = key_of(att, ip);
        let set = self.set_of(key);
        let Ok(found) = set.read(key) else {
            return Resolution::Pending;
        };
        // Decide on what was read; write only when a claim is due.
        match found.map(|(_, s)| s) {
            Some(State::Static { mac }) => return Resolution::Known(mac),
            Some(State::Reachable { mac, confirmed_ms })
                if now_ms.saturating_sub(confirmed_ms) <= t.ttl_ms =>
            {
                return Resolution::Known(mac)
            }
            Some(State::Incomplete { next_retry_ms, .. }) if now_ms < next_retry_ms => {
                return Resolution::Pending
            }
            Some(State::Failed { until_ms }) if now_ms < until_ms => return Resolution::Failed,
            _ => {}
        }
        let Some(g) = set.lock() else {
            // Another worker is writing this set, likely claiming the same thing.
            return match found.and_then(|(_, s)| s.mac()) {
                Some(mac) => Resolution::Known(mac),
                None => Resolution::Pending,
            };
        };
        match g.find(key) {
            Some((_, State::Static { mac })) => Resolution::Known(mac),
            Some((w, State::Reachable { mac, confirmed_ms })) => {
                if now_ms.saturating_sub(confirmed_ms) <= t.ttl_ms {
                    return Resolution::Known(mac);
                }
                // Stale: this worker asks; the entry looks fresh to everyone for one retry
                // interval, so nobody else asks meanwhile.
                let confirmed_ms = now_ms.saturating_sub(t.ttl_ms).saturating_add(t.retry_ms);
                g.put(w, key, State::Reachable { mac, confirmed_ms }, now_ms);
                Resolution::Refresh(mac)
            }
            Some((
                w,
                State::Incomplete {
                    sent,
                    next_retry_ms,
                },
            )) => {
                if now_ms < next_retry_ms {
                    Resolution::Pending
                } else if sent >= t.tries {
                    let until_ms = now_ms.saturating_add(t.failed_hold_ms);
                    g.put(w, key, State::Failed { until_ms }, now_ms);
                    Resolution::Failed
                } else {
                    let next_retry_ms = now_ms.saturating_add(t.retry_ms);
                    let sent = sent.saturating_add(1);
                    g.put(
                        w,
                        key,
                        State::Incomplete {
                            sent,
                            next_retry_ms,
                        },
                        now_ms,
                    );
                    Resolution::Request
                }
            }
            Some((_, State::Failed { until_ms })) if now_ms < until_ms => Resolution::Failed,
            Some((w, State::Failed { .. })) => {
                let next_retry_ms = now_ms.saturating_add(t.retry_ms);
                g.put(
                    w,
                    key,
                    State::Incomplete {
                        sent: 1,
                        next_retry_ms,
                    },
                    now_ms,
                );
                Resolution::Request
            }
            None => {
                let Some((w, evicts_mac)) = g.victim() else {
                    return Resolution::Failed;
                };
                let next_retry_ms = now_ms.saturating_add(t.retry_ms);
                g.put(
                    w,
                    key,
                    State::Incomplete {
                        sent: 1,
                        next_retry_ms,
                    },
                    now_ms,
                );
                drop(g);
                if evicts_mac {
                    self.bump();
                }
                Resolution::Request
            }
        }
    }

    /// Records `ip` at `mac` (an ARP reply, or a request addressed to us).
    pub fn learn(&self, att: u16, ip: A, mac: [u8; 6], now_ms: u64) -> Learned {
        self.learn_as(att, ip, mac, now_ms, false)
    }

    /// [`learn`](Self::learn) for what nobody asked (a solicitation's source): a new
    /// neighbour takes only a free or failed way, never one in use, so a sender making up
    /// sources (an IPv6 prefix has 2^64) cannot evict the neighbours traffic needs.
    pub fn learn_unasked(&self, att: u16, ip: A, mac: [u8; 6], now_ms: u64) -> Learned {
        self.learn_as(att, ip, mac, now_ms, true)
    }

    fn learn_as(&self, att: u16, ip: A, mac: [u8; 6], now_ms: u64, no_evict: bool) -> Learned {
        let key = key_of(att, ip);
        let set = self.set_of(key);
        let Some(g) = set.lock() else {
            return Learned::Busy;
        };
        let reachable = State::Reachable {
            mac,
            confirmed_ms: now_ms,
        };
        let (learned, bump) = match g.find(key) {
            Some((_, State::Static { .. })) => (Learned::Static, false),
            Some((w, State::Reachable { mac: old, .. })) => {
                g.put(w, key, reachable, now_ms);
                if old == mac {
                    (Learned::Confirmed, false)
                } else {
                    (Learned::Changed, true)
                }
            }
            Some((w, _)) => {
                g.put(w, key, reachable, now_ms);
                (Learned::New, false)
            }
            None => match if no_evict { g.free_way() } else { g.victim() } {
                Some((w, evicts_mac)) => {
                    g.put(w, key, reachable, now_ms);
                    (Learned::New, evicts_mac)
                }
                None => (Learned::NoRoom, false),
            },
        };
        drop(g);
        if bump {
            self.bump();
        }
        learned
    }

    /// Refreshes an entry already tracked (a packet from it proves it is alive) without
    /// creating new ones: learning every source would let a sender fill the table.
    pub fn confirm(&self, att: u16, ip: A, mac: [u8; 6], now_ms: u64) -> Learned {
        let key = key_of(att, ip);
        match self.set_of(key).read(key) {
            Ok(Some((_, State::Static { .. }))) => Learned::Static,
            Ok(Some(_)) => self.learn(att, ip, mac, now_ms),
            Ok(None) => Learned::Untracked,
            Err(()) => Learned::Busy,
        }
    }

    /// A permanent entry from the configuration. Nothing is written when it is already
    /// there, so every worker may install the same entries at every snapshot. False when
    /// the set was busy or full of static entries.
    pub fn add_static(&self, att: u16, ip: A, mac: [u8; 6]) -> bool {
        let key = key_of(att, ip);
        let set = self.set_of(key);
        if let Ok(Some((_, State::Static { mac: m }))) = set.read(key) {
            if m == mac {
                return true;
            }
        }
        let Some(g) = set.lock() else {
            return false;
        };
        let way = match g.find(key) {
            Some((w, _)) => Some(w),
            None => g.victim().map(|(w, _)| w),
        };
        let Some(way) = way else {
            return false;
        };
        g.put(way, key, State::Static { mac }, 0);
        drop(g);
        // Whatever was cached for this way (this neighbour's old MAC, or an evicted one).
        self.bump();
        true
    }

    /// Entries in use (walks the table: for tests and diagnostics, not the packet path).
    pub fn len(&self) -> usize {
        self.sets
            .iter()
            .flat_map(|s| s.keys.iter())
            .filter(|k| A::load(k) != A::Key::default())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const CACHE_SLOTS: usize = 64;
/// How long a cached answer is trusted before the shared table is asked again (bounded
/// further by the entry's own TTL).
const CACHE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct CacheEntry<K> {
    /// [`key_of`]; the default = empty.
    key: K,
    mac: [u8; 6],
    until_ms: u64,
}

/// One worker's view of the shared [`NeighbourTable`]: a small direct-mapped cache of
/// recent `Known` answers in front of it (most packets go to a handful of next hops, and
/// this turns their lookup into one compare), and the learned MACs whose write found their
/// set busy, written again at the next tick.
#[derive(Debug)]
pub struct NeighboursOf<A: NeighbourAddr> {
    table: Arc<NeighbourTableOf<A>>,
    cache: Box<[CacheEntry<A::Key>; CACHE_SLOTS]>,
    /// The table version the cache was filled under.
    seen_version: u64,
    deferred: [Option<(u16, A, [u8; 6])>; DEFERRED],
}

/// A worker's view of the IPv4 table.
pub type Neighbours = NeighboursOf<u32>;
/// A worker's view of the IPv6 table.
pub type Neighbours6 = NeighboursOf<u128>;

impl<A: NeighbourAddr> NeighboursOf<A> {
    /// A private table of its own (a single worker, tests).
    pub fn new(capacity: usize, timers: NeighbourTimers) -> NeighboursOf<A> {
        Self::shared(Arc::new(NeighbourTableOf::new(capacity, timers)))
    }

    /// A view of `table`, shared with the other workers.
    pub fn shared(table: Arc<NeighbourTableOf<A>>) -> NeighboursOf<A> {
        let seen_version = table.version();
        NeighboursOf {
            table,
            cache: Box::new([CacheEntry::default(); CACHE_SLOTS]),
            seen_version,
            deferred: [None; DEFERRED],
        }
    }

    /// The shared table.
    pub fn table(&self) -> &Arc<NeighbourTableOf<A>> {
        &self.table
    }

    #[inline]
    fn cache_slot(att: u16, ip: A) -> usize {
        A::cache_slot(att, ip)
    }

    fn invalidate(&mut self) {
        self.cache.fill(CacheEntry::default());
    }

    /// Drops cached answers if the table changed under them (once per poll: one atomic
    /// load).
    #[inline]
    pub fn sync(&mut self) {
        let v = self.table.version();
        if v != self.seen_version {
            self.seen_version = v;
            self.invalidate();
        }
    }

    /// A permanent entry from the configuration.
    pub fn add_static(&mut self, att: u16, ip: A, mac: [u8; 6]) {
        if !self.table.add_static(att, ip, mac) {
            log::warn!(
                "static neighbour {} on attachment {att} not installed: its set of the neighbour table is full of static entries (or was busy); raise tables.neighbours",
                ip.addr()
            );
        }
        self.sync();
    }

    /// The MAC of next hop `ip` on attachment `att` if it can be used now without asking
    /// (static, or reachable and confirmed within the TTL); None otherwise, and then
    /// nothing changed: [`resolve`](Self::resolve) decides what to do. Fills the cache.
    #[inline]
    pub fn known(&mut self, att: u16, ip: A, now_ms: u64) -> Option<[u8; 6]> {
        let key = key_of(att, ip);
        match self.cache.get(Self::cache_slot(att, ip)) {
            Some(c) if A::same(c.key, key) && now_ms < c.until_ms => Some(c.mac),
            _ => self.known_uncached(att, ip, now_ms),
        }
    }

    /// [`known`](Self::known) past the cache: out of line, so the cached case inlines.
    #[cold]
    #[inline(never)]
    fn known_uncached(&mut self, att: u16, ip: A, now_ms: u64) -> Option<[u8; 6]> {
        let (mac, usable_until) = self.table.known(att, ip, now_ms)?;
        let until_ms = now_ms.saturating_add(CACHE_MS).min(usable_until);
        if let Some(c) = self.cache.get_mut(Self::cache_slot(att, ip)) {
            *c = CacheEntry {
                key: key_of(att, ip),
                mac,
                until_ms,
            };
        }
        Some(mac)
    }

    /// What to do for next hop `ip` on attachment `att` now.
    #[inline]
    pub fn resolve(&mut self, att: u16, ip: A, now_ms: u64) -> Resolution {
        if let Some(mac) = self.known(att, ip, now_ms) {
            return Resolution::Known(mac);
        }
        self.table.resolve(att, ip, now_ms)
    }

    /// The MAC of `ip` if known, without side effects.
    pub fn get(&self, att: u16, ip: A) -> Option<[u8; 6]> {
        self.table.get(att, ip)
    }

    /// [`NeighbourTableOf::learn_unasked`] (a busy set is not retried: the sender asks
    /// again, or answers our own solicitation).
    pub fn learn_unasked(&mut self, att: u16, ip: A, mac: [u8; 6], now_ms: u64) -> Learned {
        self.table.learn_unasked(att, ip, mac, now_ms)
    }

    /// Records `ip` at `mac`; a write that found its set busy is kept and retried at the
    /// next [`retry_deferred`](Self::retry_deferred).
    pub fn learn(&mut self, att: u16, ip: A, mac: [u8; 6], now_ms: u64) -> Learned {
        let learned = self.table.learn(att, ip, mac, now_ms);
        if learned == Learned::Busy {
            self.defer(att, ip, mac);
        }
        learned
    }

    /// Refreshes an entry already tracked, never creating one (so a busy set is not
    /// retried later: that write could create it; the next ARP packet confirms it again).
    pub fn confirm(&mut self, att: u16, ip: A, mac: [u8; 6], now_ms: u64) -> Learned {
        self.table.confirm(att, ip, mac, now_ms)
    }

    fn defer(&mut self, att: u16, ip: A, mac: [u8; 6]) {
        let same = |d: &Option<(u16, A, [u8; 6])>| d.is_some_and(|(a, i, _)| (a, i) == (att, ip));
        let slot = match self.deferred.iter().position(same) {
            Some(i) => Some(i),
            None => self.deferred.iter().position(Option::is_none),
        };
        // All slots taken (a set busy for that long is a pathology): the requester's
        // retries recover it.
        if let Some(d) = slot.and_then(|i| self.deferred.get_mut(i)) {
            *d = Some((att, ip, mac));
        }
    }

    /// Writes the learned MACs whose set was busy; returns those now usable, for the
    /// caller to release held packets.
    pub fn retry_deferred(&mut self, now_ms: u64, mut usable: impl FnMut(u16, A, [u8; 6])) {
        for d in self.deferred.iter_mut() {
            let Some((att, ip, mac)) = *d else { continue };
            let learned = self.table.learn(att, ip, mac, now_ms);
            if learned != Learned::Busy {
                *d = None;
            }
            if learned.is_usable() {
                usable(att, ip, mac);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// The IPv4 and the IPv6 table, one of each for all workers.
#[derive(Debug, Clone)]
pub struct SharedNeighbours {
    pub v4: Arc<NeighbourTable>,
    pub v6: Arc<NeighbourTable6>,
}

impl SharedNeighbours {
    /// Room for `capacity` neighbours of each version.
    pub fn new(capacity: usize, timers: NeighbourTimers) -> SharedNeighbours {
        SharedNeighbours {
            v4: Arc::new(NeighbourTable::new(capacity, timers)),
            v6: Arc::new(NeighbourTable6::new(capacity, timers)),
        }
    }

    /// The bytes [`SharedNeighbours::new`] allocates.
    pub fn memory_for(capacity: usize) -> usize {
        NeighbourTable::memory_for(capacity) + NeighbourTable6::memory_for(capacity)
    }
}

#[cfg(test)]
mod tests;
