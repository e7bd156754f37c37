//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016), used to pick a target for each new flow.
//!
//! The management thread builds one [`Maglev`] table per target group whenever the group
//! changes and publishes it in the snapshot; workers only call [`Maglev::pick`], which is one
//! modulo and one load from a read-only table.
//!
//! # Properties
//! - **Balance**: each target owns `size * weight / total_weight` entries, give or take one.
//! - **Minimal disruption**: removing one of N targets moves its own ~1/N of the entries and
//!   only a little more (Maglev trades perfect minimality for balance). Measured at 65537
//!   entries, worst case over which target is removed: N=10 1.04/N, N=50 1.26/N, N=100
//!   1.68/N, N=1000 7.5/N (0.75% of entries). Keep the size >= ~100 x N, as the paper
//!   advises, when target groups are that large.
//! - **Order independence**: targets are populated in order of their `key`, so two
//!   appliances given the same targets in any order build the same table. The returned
//!   index still refers to the caller's slice.
//! - **Draining**: a target with weight 0 owns no entry, and its presence changes no entry of
//!   the others (a draining target keeps its flows in the flow tables but gets no new ones).
//!
//! # Weights
//! The paper fills the table in rounds, each target taking one turn per round. Weighted
//! targets take turns in proportion to their weight: in round `r` target `i` takes its
//! `k`-th turn when `r * w_i / w_max >= k`, the "credit" scheme (a target of maximal weight
//! takes a turn every round, one of half that weight every other round). Turns are
//! scheduled with a binary heap keyed by (round of next turn, key order), so a build costs
//! O(M log N) plus the permutation walks, whatever the weights.
//!
//! This module allocates only in [`Maglev::build`] (management thread), never in `pick`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

/// Table size used when the configuration does not choose one (a prime, as Maglev requires;
/// the paper's default). 65537 entries of 2 bytes = 128 KiB per target group.
pub const DEFAULT_TABLE_SIZE: usize = 65537;

/// Largest table [`Maglev::build`] accepts (32 MiB of entries): a sanity limit so a bad
/// configuration cannot ask for gigabytes; the largest prime below it is 16_777_213.
pub const MAX_TABLE_SIZE: usize = 1 << 24;

/// Most backends one table can hold: entries are `u16` indices and `u16::MAX` marks an entry
/// not yet filled while building.
pub const MAX_BACKENDS: usize = u16::MAX as usize - 1;

/// Marks a table entry not yet filled during population.
const EMPTY: u16 = u16::MAX;

/// One candidate target of a Maglev table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend {
    /// Stable identity of the target, e.g. [`target_key`] of its `ip:port`. Its hash fixes
    /// the target's permutation, so it must not change while the target exists.
    pub key: u64,
    /// Relative share of new flows. 0 excludes the target (draining: no new flows).
    pub weight: u32,
}

/// Why [`Maglev::build`] refused a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// "maglev table size {size} is not prime": Maglev's permutations need a prime size.
    SizeNotPrime {
        /// The size asked for.
        size: usize,
    },
    /// "maglev table size {size} must exceed the number of backends ({backends})".
    SizeTooSmall {
        /// The size asked for.
        size: usize,
        /// How many backends were given.
        backends: usize,
    },
    /// "maglev table size {size} exceeds the maximum {MAX_TABLE_SIZE}".
    SizeTooLarge {
        /// The size asked for.
        size: usize,
    },
    /// "{count} maglev backends exceed the maximum {MAX_BACKENDS}".
    TooManyBackends {
        /// How many backends were given.
        count: usize,
    },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MaglevError::SizeNotPrime { size } => {
                write!(f, "maglev table size {size} is not prime")
            }
            MaglevError::SizeTooSmall { size, backends } => write!(
                f,
                "maglev table size {size} must exceed the number of backends ({backends})"
            ),
            MaglevError::SizeTooLarge { size } => write!(
                f,
                "maglev table size {size} exceeds the maximum {MAX_TABLE_SIZE}"
            ),
            MaglevError::TooManyBackends { count } => write!(
                f,
                "{count} maglev backends exceed the maximum {MAX_BACKENDS}"
            ),
        }
    }
}

impl std::error::Error for MaglevError {}

/// A 64-bit mixer: the finaliser of splitmix64 (Stafford's "Mix13" variant of MurmurHash3's
/// `fmix64`, as used by `java.util.SplittableRandom`). It is a bijection on `u64` with full
/// avalanche (every input bit flips each output bit with probability ~1/2), costs two
/// multiplies and three shift-xors (~5 ns latency), and is not keyed: do not rely on it
/// alone against inputs chosen by an attacker. Note `mix64(0) == 0`; callers that may feed 0
/// add a constant first (as [`FlowKey::hash`](crate::tables::flow::FlowKey::hash) does).
#[inline]
pub const fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The golden-ratio increment of splitmix64; consecutive multiples fed to [`mix64`] give
/// independent-looking outputs.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A [`MaglevBackend::key`] for a target `ip:port` (ip in host byte order). Injective, so
/// distinct targets never share a permutation.
#[inline]
pub const fn target_key(ip: u32, port: u16) -> u64 {
    ((ip as u64) << 16) | port as u64
}

/// A Maglev lookup table: `size` entries, each the index of a backend in the slice given to
/// [`Maglev::build`].
pub struct Maglev {
    /// Backend index per entry; empty when no backend has a weight.
    table: Box<[u16]>,
    /// The prime table size (kept apart from `table`, which is empty with no backends).
    size: usize,
    /// Number of backends with a weight > 0.
    active: usize,
}

impl fmt::Debug for Maglev {
    // The table itself is 64K entries: print its shape, not its contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Maglev")
            .field("size", &self.size)
            .field("active_backends", &self.active)
            .finish()
    }
}

/// Per-backend population state.
struct Populating {
    /// Next entry of this backend's permutation to try.
    next: usize,
    /// Permutation step, in `1..size`.
    skip: usize,
    /// Turns taken so far.
    turns: u64,
    /// `u64::from(weight)`.
    weight: u64,
    /// Index into the caller's slice.
    index: u16,
}

impl Maglev {
    /// Builds the table for `backends` (at most [`MAX_BACKENDS`]) with `size` entries, a
    /// prime greater than `backends.len()` and at most [`MAX_TABLE_SIZE`].
    ///
    /// Deterministic: the same backends (in any order) and size give the same table.
    ///
    /// Measured (`cargo bench -p appliance --bench maglev`, AMD EPYC at 2.6 GHz): ~1.4 ms
    /// (~3.8 M cycles) for 10 backends at 65537 entries, ~2.5 ms for 1000; mostly the
    /// permutation walks' random probes of the 128 KiB table. Management thread only.
    pub fn build(backends: &[MaglevBackend], size: usize) -> Result<Maglev, MaglevError> {
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends {
                count: backends.len(),
            });
        }
        if size > MAX_TABLE_SIZE {
            return Err(MaglevError::SizeTooLarge { size });
        }
        if !is_prime(size) {
            return Err(MaglevError::SizeNotPrime { size });
        }
        if size <= backends.len() {
            return Err(MaglevError::SizeTooSmall {
                size,
                backends: backends.len(),
            });
        }

        // Active backends in key order (ties by slice position), so the table does not
        // depend on the order the management plane happens to list targets in.
        let mut order: Vec<(u64, u16)> = (0..=u16::MAX)
            .zip(backends)
            .filter(|(_, b)| b.weight > 0)
            .map(|(i, b)| (b.key, i))
            .collect();
        order.sort_unstable();
        let active = order.len();
        if active == 0 {
            return Ok(Maglev {
                table: Box::default(),
                size,
                active,
            });
        }

        let size64 = size as u64;
        let mut state: Vec<Populating> = order
            .iter()
            .map(|&(key, index)| {
                // Two consecutive splitmix64 outputs seeded by the key: independent hashes
                // for offset and skip, as the paper asks.
                let h1 = mix64(key.wrapping_add(GOLDEN_GAMMA));
                let h2 = mix64(key.wrapping_add(GOLDEN_GAMMA.wrapping_mul(2)));
                Populating {
                    next: reduce(h1, size64),
                    skip: reduce(h2, size64 - 1) + 1,
                    turns: 0,
                    weight: u64::from(backends[usize::from(index)].weight),
                    index,
                }
            })
            .collect();
        let max_weight = state.iter().map(|s| s.weight).max().unwrap_or(1);

        // Min-heap of (round of the backend's next turn, position in key order). A backend
        // takes its k-th turn (k >= 1) in round ceil(k * max / w); with w <= max that is at
        // most one turn per round, and max-weight backends turn every round.
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = (0..active)
            .map(|pos| Reverse((next_turn_round(1, max_weight, state[pos].weight), pos)))
            .collect();

        let mut table = vec![EMPTY; size].into_boxed_slice();
        let mut filled = 0;
        while filled < size {
            // The heap holds every active backend at all times, so it is never empty here.
            let Some(Reverse((_, pos))) = heap.pop() else {
                break;
            };
            let s = &mut state[pos];
            // Walk this backend's permutation (offset + j * skip) mod size to its next free
            // entry. `skip` is coprime with the prime `size`, so the walk visits every entry
            // and finds a free one while `filled < size`.
            loop {
                let entry = s.next;
                s.next += s.skip;
                if s.next >= size {
                    s.next -= size;
                }
                if table[entry] == EMPTY {
                    table[entry] = s.index;
                    break;
                }
            }
            filled += 1;
            s.turns += 1;
            heap.push(Reverse((
                next_turn_round(s.turns + 1, max_weight, s.weight),
                pos,
            )));
        }

        Ok(Maglev {
            table,
            size,
            active,
        })
    }

    /// The backend for a flow: an index into the slice given to [`Maglev::build`], or
    /// `None` when no backend has a weight. `flow_hash` should be a good hash of the flow
    /// (e.g. [`FlowKey::hash`](crate::tables::flow::FlowKey::hash)); it is reduced modulo the
    /// prime size, so all of its bits count.
    ///
    /// Measured: ~2.2 ns (~6 cycles at 2.6 GHz) with the table in cache: the 64-bit
    /// modulo and one load (`cargo bench -p appliance --bench maglev`).
    #[inline]
    pub fn pick(&self, flow_hash: u64) -> Option<u16> {
        if self.table.is_empty() {
            return None;
        }
        self.table.get(reduce(flow_hash, self.size as u64)).copied()
    }

    /// Number of entries (the prime given to [`Maglev::build`]).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of backends with a weight > 0 (those [`Maglev::pick`] can return).
    pub fn active_backends(&self) -> usize {
        self.active
    }
}

/// Round in which a backend of weight `w` takes its `k`-th turn: `ceil(k * max / w)`.
/// `k <= MAX_TABLE_SIZE` and `max < 2^32`, so the product fits in a `u64`.
#[inline]
fn next_turn_round(k: u64, max: u64, w: u64) -> u64 {
    (k * max).div_ceil(w)
}

/// `x mod m` as an index. `m` is a table size (<= [`MAX_TABLE_SIZE`]), so the result fits.
#[inline]
fn reduce(x: u64, m: u64) -> usize {
    usize::try_from(x % m).unwrap_or(0)
}

/// Trial division; sizes are at most [`MAX_TABLE_SIZE`], so at most ~2048 divisors.
/// (Written with `rem` rather than `is_multiple_of`, which is newer than our MSRV.)
fn is_prime(n: usize) -> bool {
    if n < 4 {
        return n >= 2;
    }
    let mut d = 2;
    while d * d <= n {
        let rem = n % d;
        if rem == 0 {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(n: usize) -> Vec<MaglevBackend> {
        (0..n)
            .map(|i| MaglevBackend {
                key: target_key(0x0a00_0001 + u32::try_from(i).unwrap(), 8080),
                weight: 1,
            })
            .collect()
    }

    /// Entries owned by each backend.
    fn counts(m: &Maglev, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in m.table.iter() {
            c[usize::from(e)] += 1;
        }
        c
    }

    /// Fraction of entries whose backend *key* differs between two tables.
    fn moved(a: &Maglev, ab: &[MaglevBackend], b: &Maglev, bb: &[MaglevBackend]) -> f64 {
        assert_eq!(a.size(), b.size());
        let diff = a
            .table
            .iter()
            .zip(b.table.iter())
            .filter(|(x, y)| ab[usize::from(**x)].key != bb[usize::from(**y)].key)
            .count();
        diff as f64 / a.size() as f64
    }

    #[test]
    fn mix64_is_the_splitmix64_finaliser() {
        // Reference values of splitmix64 seeded with 0: next() = mix64(k * gamma).
        assert_eq!(mix64(GOLDEN_GAMMA), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix64(GOLDEN_GAMMA.wrapping_mul(2)), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn primes() {
        let small: Vec<usize> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537));
        assert!(is_prime(16_777_213));
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(!is_prime(251 * 257));
    }

    #[test]
    fn errors() {
        let two = backends(2);
        assert_eq!(
            Maglev::build(&two, 65536).unwrap_err(),
            MaglevError::SizeNotPrime { size: 65536 }
        );
        assert_eq!(
            Maglev::build(&two, 0).unwrap_err(),
            MaglevError::SizeNotPrime { size: 0 }
        );
        assert_eq!(
            Maglev::build(&two, 1).unwrap_err(),
            MaglevError::SizeNotPrime { size: 1 }
        );
        assert_eq!(
            Maglev::build(&two, 2).unwrap_err(),
            MaglevError::SizeTooSmall {
                size: 2,
                backends: 2
            }
        );
        assert_eq!(
            Maglev::build(&two, MAX_TABLE_SIZE + 1).unwrap_err(),
            MaglevError::SizeTooLarge {
                size: MAX_TABLE_SIZE + 1
            }
        );
        let too_many = vec![MaglevBackend { key: 1, weight: 1 }; MAX_BACKENDS + 1];
        assert_eq!(
            Maglev::build(&too_many, DEFAULT_TABLE_SIZE).unwrap_err(),
            MaglevError::TooManyBackends {
                count: MAX_BACKENDS + 1
            }
        );
        assert_eq!(
            MaglevError::SizeNotPrime { size: 4 }.to_string(),
            "maglev table size 4 is not prime"
        );
    }

    #[test]
    fn most_backends_fit_in_the_default_size() {
        let many: Vec<MaglevBackend> = (0..MAX_BACKENDS)
            .map(|i| MaglevBackend {
                key: i as u64,
                weight: 1,
            })
            .collect();
        let m = Maglev::build(&many, DEFAULT_TABLE_SIZE).unwrap();
        let c = counts(&m, many.len());
        // 65537 entries over 65534 backends: every backend gets one, three get two.
        assert!(c.iter().all(|&n| n == 1 || n == 2), "{:?}", &c[..8]);
        assert_eq!(c.iter().filter(|&&n| n == 2).count(), 3);
    }

    #[test]
    fn no_weight_no_pick() {
        let m = Maglev::build(&[], DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(m.pick(12345), None);
        assert_eq!(m.size(), DEFAULT_TABLE_SIZE);
        let zero = [MaglevBackend { key: 7, weight: 0 }; 3];
        let m = Maglev::build(&zero, 7).unwrap();
        assert_eq!(m.pick(0), None);
        assert_eq!(m.active_backends(), 0);
    }

    #[test]
    fn single_backend_takes_everything() {
        let mut b = backends(3);
        b[0].weight = 0;
        b[2].weight = 0;
        let m = Maglev::build(&b, 13).unwrap();
        for h in 0..100 {
            assert_eq!(m.pick(h), Some(1));
        }
    }

    #[test]
    fn every_entry_filled_and_pick_matches_table() {
        let b = backends(5);
        let m = Maglev::build(&b, 101).unwrap();
        assert!(m.table.iter().all(|&e| usize::from(e) < b.len()));
        for h in 0..1000u64 {
            assert_eq!(m.pick(h), Some(m.table[usize::try_from(h % 101).unwrap()]));
        }
        assert_eq!(
            m.pick(u64::MAX),
            Some(m.table[usize::try_from(u64::MAX % 101).unwrap()])
        );
    }

    #[test]
    fn equal_weights_balance() {
        for n in 2..=50 {
            let b = backends(n);
            let m = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
            let ideal = DEFAULT_TABLE_SIZE as f64 / n as f64;
            for (i, &c) in counts(&m, n).iter().enumerate() {
                let dev = (c as f64 - ideal).abs() / ideal;
                assert!(dev < 0.01, "n={n} backend {i}: {c} entries vs {ideal:.0}");
            }
        }
    }

    #[test]
    fn weights_balance() {
        // Deterministic mix of weights 1..=10 for 2..=50 backends.
        for n in 2..=50usize {
            let b: Vec<MaglevBackend> = backends(n)
                .into_iter()
                .enumerate()
                .map(|(i, mut b)| {
                    b.weight = u32::try_from(i * 7 % 10 + 1).unwrap();
                    b
                })
                .collect();
            let total: u64 = b.iter().map(|b| u64::from(b.weight)).sum();
            let m = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
            for (i, &c) in counts(&m, n).iter().enumerate() {
                let ideal = DEFAULT_TABLE_SIZE as f64 * f64::from(b[i].weight) / total as f64;
                let dev = (c as f64 - ideal).abs() / ideal;
                assert!(
                    dev < 0.02,
                    "n={n} backend {i} w={}: {c} entries vs {ideal:.0}",
                    b[i].weight
                );
            }
        }
    }

    #[test]
    fn extreme_weights_are_fast_and_proportional() {
        // One huge weight against many tiny ones: the heap keeps this O(M log N).
        let mut b = backends(1000);
        b[0].weight = u32::MAX;
        let m = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let c = counts(&m, b.len());
        // Each weight-1 backend is owed 65537 / 2^32 of an entry: none before the big one
        // has taken 2^32 turns, i.e. never.
        assert_eq!(c[0], DEFAULT_TABLE_SIZE);
        b[0].weight = 1000;
        let m = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let c = counts(&m, b.len());
        let ideal0 = DEFAULT_TABLE_SIZE as f64 * 1000.0 / 1999.0;
        assert!((c[0] as f64 - ideal0).abs() / ideal0 < 0.01, "{}", c[0]);
    }

    #[test]
    fn pick_distributes_hashed_flows() {
        let b = backends(4);
        let m = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let mut c = [0usize; 4];
        for i in 0..100_000u64 {
            c[usize::from(m.pick(mix64(i)).unwrap())] += 1;
        }
        for &n in &c {
            assert!((n as f64 - 25_000.0).abs() < 1_000.0, "{c:?}");
        }
    }

    #[test]
    fn removing_one_backend_moves_about_one_nth() {
        for n in [2usize, 3, 5, 10, 20, 50, 100] {
            let all = backends(n);
            let before = Maglev::build(&all, DEFAULT_TABLE_SIZE).unwrap();
            for removed in [0, n / 2, n - 1] {
                let mut rest = all.clone();
                rest.remove(removed);
                let after = Maglev::build(&rest, DEFAULT_TABLE_SIZE).unwrap();
                let frac = moved(&before, &all, &after, &rest);
                let bound = 1.5 / n as f64 + 0.01;
                assert!(
                    frac < bound,
                    "n={n} removed {removed}: {frac:.4} of entries moved (bound {bound:.4})"
                );
                // At least the removed backend's own share moved.
                assert!(frac >= 0.99 / n as f64, "n={n}: only {frac:.4} moved");
            }
        }
    }

    #[test]
    fn draining_by_weight_zero_moves_about_one_nth() {
        let n = 10;
        let all = backends(n);
        let before = Maglev::build(&all, DEFAULT_TABLE_SIZE).unwrap();
        let mut drained = all.clone();
        drained[3].weight = 0;
        let after = Maglev::build(&drained, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(counts(&after, n)[3], 0);
        let frac = moved(&before, &all, &after, &drained);
        assert!(frac < 1.5 / n as f64 + 0.01, "{frac}");
    }

    #[test]
    fn adding_a_weight_zero_backend_changes_nothing() {
        let b = backends(10);
        let before = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
        for at in [0, 5, 10] {
            let mut more = b.clone();
            more.insert(
                at,
                MaglevBackend {
                    key: target_key(0x0a00_00ff, 80),
                    weight: 0,
                },
            );
            let after = Maglev::build(&more, DEFAULT_TABLE_SIZE).unwrap();
            assert_eq!(moved(&before, &b, &after, &more), 0.0);
        }
    }

    #[test]
    fn deterministic_and_order_independent() {
        let b: Vec<MaglevBackend> = backends(17)
            .into_iter()
            .enumerate()
            .map(|(i, mut b)| {
                b.weight = u32::try_from(i % 3 + 1).unwrap();
                b
            })
            .collect();
        let one = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
        let two = Maglev::build(&b, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(one.table, two.table);
        let mut reversed = b.clone();
        reversed.reverse();
        let three = Maglev::build(&reversed, DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(moved(&one, &b, &three, &reversed), 0.0);
    }

    #[test]
    fn debug_is_short() {
        let m = Maglev::build(&backends(3), DEFAULT_TABLE_SIZE).unwrap();
        assert_eq!(
            format!("{m:?}"),
            "Maglev { size: 65537, active_backends: 3 }"
        );
    }
}
