//! TSC time: the cheapest clock on the fast path.

use crate::ffi;

/// The TSC now (cycles).
#[inline]
pub fn tsc() -> u64 {
    // SAFETY: reads the time-stamp counter; no memory is touched.
    unsafe { ffi::plk_rdtsc() }
}

/// TSC frequency in Hz as measured by the EAL (0 before `Eal::init`).
pub fn tsc_hz() -> u64 {
    // SAFETY: returns a value the EAL calibrated at init (or 0); no preconditions.
    unsafe { ffi::rte_get_tsc_hz() }
}

/// A spin-wait hint (the `pause` instruction).
#[inline]
pub fn pause() {
    // SAFETY: executes a pause instruction; no memory is touched.
    unsafe { ffi::plk_pause() }
}
