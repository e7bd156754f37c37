//! A keyed hash of four 32-bit words for the packet path: Thorup's vector multiply-shift,
//! `(a0·x0 + a1·x1 + a2·x2 + a3·x3 + b) mod 2^64` with the five keys uniformly random
//! (here: splitmix64's outputs for a secret seed).
//!
//! Any window of `l` result bits that starts at bit `j` ≥ 31 is strongly universal: such
//! a window is the same scheme computed modulo `2^(j + l)`, which the analysis admits as
//! long as `j + l ≥ 32 + l - 1` (M. Thorup, "High Speed Hashing for Integers and
//! Strings", 2015, vector multiply-shift). So two distinct inputs land on the same
//! `l`-bit value with probability `2^-l`, whatever inputs an adversary who does not know
//! the keys picks: what a flow table index and the consumer fold need. Its four
//! multiplies do not wait for each other, where two rounds of a 64-bit mixer are four
//! multiplies in a row: the packet's next step (a chain head's load) starts a dozen
//! cycles sooner.

use crate::tables::maglev::{mix64, GOLDEN_GAMMA};

/// The keys of one function of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorHash {
    a: [u64; 4],
    b: u64,
}

impl VectorHash {
    /// The function of `seed`.
    pub fn new(seed: u64) -> VectorHash {
        let key = |i: u64| mix64(seed.wrapping_add(GOLDEN_GAMMA.wrapping_mul(i)));
        VectorHash {
            a: [key(1), key(2), key(3), key(4)],
            b: key(5),
        }
    }

    /// The whole 64-bit sum; take a window at bit 31 or above (see the module).
    #[inline(always)]
    pub fn hash(&self, x: [u32; 4]) -> u64 {
        let term = |i: usize| self.a[i].wrapping_mul(u64::from(x[i]));
        // A tree, not a chain: the multiplies' results are added as they come.
        (term(0).wrapping_add(term(1)))
            .wrapping_add(term(2).wrapping_add(term(3)))
            .wrapping_add(self.b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs of `inputs` whose bits `from..from + 20` agree under `h`.
    fn shared(h: &VectorHash, from: u32, inputs: impl Iterator<Item = [u32; 4]>) -> usize {
        let mut v: Vec<u64> = inputs.map(|x| (h.hash(x) >> from) & 0xf_ffff).collect();
        v.sort_unstable();
        v.windows(2).filter(|w| w[0] == w[1]).count()
    }

    #[test]
    fn windows_from_bit_32_spread_inputs_that_differ_anywhere() {
        // 2^12 inputs into 2^20 values: ~8 pairs agree by chance.
        let n = 1u32 << 12;
        for seed in [0, 1, 0x5eed] {
            let h = VectorHash::new(seed);
            for from in [32, 44] {
                for (what, s) in [
                    ("low bits", shared(&h, from, (0..n).map(|i| [7, 8, i, 9]))),
                    (
                        "high bits",
                        shared(&h, from, (0..n).map(|i| [7, i << 20, 8, 9])),
                    ),
                    (
                        "two words",
                        shared(&h, from, (0..n).map(|i| [i, 8, 9, i << 16])),
                    ),
                ] {
                    assert!(
                        s < 40,
                        "seed {seed}, bits {from}.., {what}: {s} pairs agree"
                    );
                }
            }
        }
    }

    #[test]
    fn keys_come_from_the_seed() {
        assert_eq!(VectorHash::new(3), VectorHash::new(3));
        assert_ne!(VectorHash::new(3), VectorHash::new(4));
        let x = [1, 2, 3, 4];
        assert_ne!(VectorHash::new(3).hash(x), VectorHash::new(4).hash(x));
    }
}
