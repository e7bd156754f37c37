//! The neighbour (ARP) table of one worker: next-hop MACs per VPC attachment, learned from
//! traffic and resolved on demand with bounded retries.
//!
//! Single writer (its worker). Entries learned from ARP are also pushed to the other
//! workers through their inboxes, since the ARP reply for a request one worker sent may
//! arrive on another worker's queue. The table never grows past its capacity: when full,
//! stale entries are evicted first, else the new neighbour is not cached (and counted by
//! the caller as unresolved).

use crate::fasthash::{fast_map, FastMap};

/// What to do about a next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Known: use this MAC.
    Known([u8; 6]),
    /// Known but not confirmed for a while: use this MAC and send an ARP request to
    /// refresh it (like Linux's STALE → PROBE), so traffic never stalls on a refresh.
    Refresh([u8; 6]),
    /// Unknown and no request is outstanding: send an ARP request now, hold the packet.
    Request,
    /// A request is outstanding: hold the packet.
    Pending,
    /// Recently failed to resolve: drop the packet.
    Failed,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Reachable { mac: [u8; 6], confirmed_ms: u64 },
    Static { mac: [u8; 6] },
    Incomplete { sent: u8, next_retry_ms: u64 },
    Failed { until_ms: u64 },
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

/// Neighbours of all attachments seen by one worker, keyed by (attachment index, IPv4).
#[derive(Debug)]
pub struct Neighbours {
    map: FastMap<(u16, u32), State>,
    capacity: usize,
    timers: NeighbourTimers,
    /// A small direct-mapped cache of recent Known answers in front of the map: most
    /// packets go to a handful of next hops, and this turns their hash-map probe into one
    /// compare. Any change to the map clears it, so it never answers with stale data.
    cache: Box<[CacheEntry; CACHE_SLOTS]>,
}

const CACHE_SLOTS: usize = 64;
/// How long a cached answer is trusted before the map is asked again (bounded further by
/// the entry's own TTL).
const CACHE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, Default)]
struct CacheEntry {
    /// (attachment << 32 | ip) + 1; 0 = empty.
    key: u64,
    mac: [u8; 6],
    until_ms: u64,
}

impl Neighbours {
    pub fn new(capacity: usize, timers: NeighbourTimers) -> Neighbours {
        Neighbours {
            map: fast_map(capacity.min(1 << 16)),
            capacity: capacity.max(1),
            timers,
            cache: Box::new([CacheEntry::default(); CACHE_SLOTS]),
        }
    }

    #[inline]
    fn cache_key(att: u16, ip: u32) -> (u64, usize) {
        let k = ((u64::from(att) << 32) | u64::from(ip)) + 1;
        // Low bits of the host part spread consecutive addresses over the slots.
        let slot = ((ip ^ (ip >> 8) ^ u32::from(att)) as usize) % CACHE_SLOTS;
        (k, slot)
    }

    fn invalidate(&mut self) {
        self.cache.fill(CacheEntry::default());
    }

    /// A permanent entry from the configuration.
    pub fn add_static(&mut self, att: u16, ip: u32, mac: [u8; 6]) {
        self.invalidate();
        self.map.insert((att, ip), State::Static { mac });
    }

    /// The MAC of next hop `ip` on attachment `att` if it can be used now without asking
    /// (static, or reachable and confirmed within the TTL); None otherwise, and then
    /// nothing changed: [`resolve`](Self::resolve) decides what to do. Fills the cache.
    #[inline]
    pub fn known(&mut self, att: u16, ip: u32, now_ms: u64) -> Option<[u8; 6]> {
        let (key, slot) = Self::cache_key(att, ip);
        match self.cache.get(slot) {
            Some(c) if c.key == key && now_ms < c.until_ms => Some(c.mac),
            _ => self.known_uncached(att, ip, now_ms),
        }
    }

    /// [`known`](Self::known) past the cache: out of line, so the cached case inlines.
    #[cold]
    #[inline(never)]
    fn known_uncached(&mut self, att: u16, ip: u32, now_ms: u64) -> Option<[u8; 6]> {
        let (key, slot) = Self::cache_key(att, ip);
        let (mac, until_ms) = match self.map.get(&(att, ip))? {
            State::Static { mac } => (*mac, now_ms + CACHE_MS),
            State::Reachable { mac, confirmed_ms }
                if now_ms.saturating_sub(*confirmed_ms) <= self.timers.ttl_ms =>
            {
                (
                    *mac,
                    (now_ms + CACHE_MS).min(confirmed_ms + self.timers.ttl_ms),
                )
            }
            _ => return None,
        };
        if let Some(c) = self.cache.get_mut(slot) {
            *c = CacheEntry { key, mac, until_ms };
        }
        Some(mac)
    }

    /// What to do for next hop `ip` on attachment `att` now.
    #[inline]
    pub fn resolve(&mut self, att: u16, ip: u32, now_ms: u64) -> Resolution {
        if let Some(mac) = self.known(att, ip, now_ms) {
            return Resolution::Known(mac);
        }
        match self.map.get(&(att, ip)).copied() {
            // `known` answered for static and fresh entries: this one is stale.
            Some(State::Static { mac }) => Resolution::Known(mac),
            Some(State::Reachable { mac, .. }) => {
                // Ask again at most once per retry interval while it stays unconfirmed.
                self.map.insert(
                    (att, ip),
                    State::Reachable {
                        mac,
                        confirmed_ms: now_ms.saturating_sub(self.timers.ttl_ms)
                            + self.timers.retry_ms,
                    },
                );
                self.invalidate();
                Resolution::Refresh(mac)
            }
            Some(State::Incomplete { .. }) => Resolution::Pending,
            Some(State::Failed { until_ms }) if now_ms < until_ms => Resolution::Failed,
            Some(State::Failed { .. }) | None => {
                if !self.make_room(now_ms) {
                    return Resolution::Failed;
                }
                self.map.insert(
                    (att, ip),
                    State::Incomplete {
                        sent: 1,
                        next_retry_ms: now_ms + self.timers.retry_ms,
                    },
                );
                Resolution::Request
            }
        }
    }

    /// The MAC of `ip` if known, without side effects.
    pub fn get(&self, att: u16, ip: u32) -> Option<[u8; 6]> {
        match self.map.get(&(att, ip))? {
            State::Static { mac } | State::Reachable { mac, .. } => Some(*mac),
            _ => None,
        }
    }

    /// Records `ip` at `mac`. Returns true when this is new or changed information (worth
    /// telling the other workers and releasing held packets).
    pub fn learn(&mut self, att: u16, ip: u32, mac: [u8; 6], now_ms: u64) -> bool {
        self.invalidate();
        match self.map.get(&(att, ip)).copied() {
            Some(State::Static { .. }) => false,
            Some(State::Reachable { mac: old, .. }) => {
                self.map.insert(
                    (att, ip),
                    State::Reachable {
                        mac,
                        confirmed_ms: now_ms,
                    },
                );
                old != mac
            }
            Some(_) => {
                self.map.insert(
                    (att, ip),
                    State::Reachable {
                        mac,
                        confirmed_ms: now_ms,
                    },
                );
                true
            }
            None => {
                if !self.make_room(now_ms) {
                    return false;
                }
                self.map.insert(
                    (att, ip),
                    State::Reachable {
                        mac,
                        confirmed_ms: now_ms,
                    },
                );
                true
            }
        }
    }

    /// Refreshes an entry we already track (a packet from it proves it is alive) without
    /// creating new ones: learning every source would let a sender fill the table.
    #[inline]
    pub fn confirm(&mut self, att: u16, ip: u32, mac: [u8; 6], now_ms: u64) -> bool {
        self.invalidate();
        match self.map.get_mut(&(att, ip)) {
            Some(State::Reachable {
                mac: m,
                confirmed_ms,
            }) => {
                let changed = *m != mac;
                *m = mac;
                *confirmed_ms = now_ms;
                changed
            }
            Some(s @ State::Incomplete { .. }) | Some(s @ State::Failed { .. }) => {
                *s = State::Reachable {
                    mac,
                    confirmed_ms: now_ms,
                };
                true
            }
            _ => false,
        }
    }

    /// Calls `send(att, ip)` for every outstanding request due for a retry, and moves the
    /// ones out of tries to Failed (calling `failed(att, ip)`).
    pub fn retry_due(
        &mut self,
        now_ms: u64,
        mut send: impl FnMut(u16, u32),
        mut failed: impl FnMut(u16, u32),
    ) {
        let t = self.timers;
        for (&(att, ip), st) in self.map.iter_mut() {
            if let State::Incomplete {
                sent,
                next_retry_ms,
            } = st
            {
                if now_ms < *next_retry_ms {
                    continue;
                }
                if *sent >= t.tries {
                    *st = State::Failed {
                        until_ms: now_ms + t.failed_hold_ms,
                    };
                    failed(att, ip);
                } else {
                    *sent += 1;
                    *next_retry_ms = now_ms + t.retry_ms;
                    send(att, ip);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn make_room(&mut self, now_ms: u64) -> bool {
        if self.map.len() < self.capacity {
            return true;
        }
        self.invalidate();
        let ttl = self.timers.ttl_ms;
        self.map.retain(|_, st| match st {
            State::Static { .. } | State::Incomplete { .. } => true,
            State::Reachable { confirmed_ms, .. } => now_ms.saturating_sub(*confirmed_ms) <= ttl,
            State::Failed { until_ms } => now_ms < *until_ms,
        });
        self.map.len() < self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    #[test]
    fn resolve_request_pending_then_known() {
        let mut n = Neighbours::new(16, NeighbourTimers::default());
        assert_eq!(n.resolve(0, 7, 0), Resolution::Request);
        assert_eq!(n.resolve(0, 7, 10), Resolution::Pending);
        assert!(n.learn(0, 7, MAC, 20));
        assert_eq!(n.resolve(0, 7, 30), Resolution::Known(MAC));
        assert!(!n.learn(0, 7, MAC, 40), "same information is not news");
        // Another attachment is another neighbour.
        assert_eq!(n.resolve(1, 7, 30), Resolution::Request);
    }

    #[test]
    fn retries_are_bounded_then_failed_then_retried_later() {
        let t = NeighbourTimers {
            retry_ms: 100,
            tries: 3,
            ttl_ms: 1000,
            failed_hold_ms: 500,
        };
        let mut n = Neighbours::new(16, t);
        assert_eq!(n.resolve(0, 9, 0), Resolution::Request);
        let mut sent = 0;
        let mut failed = 0;
        for now in (0..=1000).step_by(50) {
            n.retry_due(now, |_, _| sent += 1, |_, _| failed += 1);
        }
        assert_eq!(sent, 2, "three tries in all: the first plus two retries");
        assert_eq!(failed, 1);
        assert_eq!(n.resolve(0, 9, 400), Resolution::Failed);
        assert_eq!(n.resolve(0, 9, 2000), Resolution::Request);
    }

    #[test]
    fn stale_entries_keep_working_while_refreshed() {
        let t = NeighbourTimers {
            ttl_ms: 100,
            ..NeighbourTimers::default()
        };
        let mut n = Neighbours::new(16, t);
        n.learn(0, 1, MAC, 0);
        assert_eq!(n.resolve(0, 1, 150), Resolution::Refresh(MAC));
        assert_eq!(n.get(0, 1), Some(MAC));
        assert_eq!(n.resolve(0, 1, 160), Resolution::Known(MAC));
    }

    #[test]
    fn confirm_does_not_create_and_static_is_permanent() {
        let mut n = Neighbours::new(16, NeighbourTimers::default());
        assert!(!n.confirm(0, 3, MAC, 0));
        assert_eq!(n.get(0, 3), None);
        n.add_static(0, 4, MAC);
        assert!(!n.learn(0, 4, [9; 6], 0));
        assert_eq!(n.resolve(0, 4, u64::MAX / 2), Resolution::Known(MAC));
    }

    #[test]
    fn full_table_evicts_stale_or_refuses() {
        let t = NeighbourTimers {
            ttl_ms: 100,
            ..NeighbourTimers::default()
        };
        let mut n = Neighbours::new(2, t);
        assert!(n.learn(0, 1, MAC, 0));
        assert!(n.learn(0, 2, MAC, 0));
        assert!(!n.learn(0, 3, MAC, 50), "full of fresh entries");
        assert_eq!(n.resolve(0, 3, 50), Resolution::Failed);
        assert!(n.learn(0, 3, MAC, 500), "stale ones make room");
        assert!(n.len() <= 2);
    }

    #[test]
    fn cache_never_hides_a_changed_mac() {
        let mut n = Neighbours::new(16, NeighbourTimers::default());
        n.learn(0, 5, MAC, 0);
        assert_eq!(n.resolve(0, 5, 1), Resolution::Known(MAC));
        assert_eq!(n.resolve(0, 5, 2), Resolution::Known(MAC), "from the cache");
        n.learn(0, 5, [7; 6], 3);
        assert_eq!(n.resolve(0, 5, 4), Resolution::Known([7; 6]));
        // Another attachment with the same IP is another neighbour, cached or not.
        assert_eq!(n.resolve(1, 5, 5), Resolution::Request);
    }
}
