//! Cache prefetch hints, as DPDK's `rte_prefetch0` but inlined into Rust callers (the C
//! shim's calls could not be): the burst paths start loading the flow-table lines of a
//! whole burst before they need any of them, so the misses overlap.

/// Starts loading the cache line holding `value` into every cache level. A hint only: it
/// never faults, changes nothing the program can observe, and is a no-op off x86_64.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing architecturally and cannot fault; the pointer comes
    // from a live reference anyway. SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            std::ptr::from_ref(value).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefetch_is_only_a_hint() {
        let v = [7u64; 64];
        for x in &v {
            super::prefetch(x);
        }
        assert!(v.iter().all(|&x| x == 7));
    }
}
