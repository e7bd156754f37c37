//! Bindings to the system DPDK (22.11) and thin safe wrappers over the parts privlink uses.
//!
//! This is the only crate of the workspace with FFI `unsafe`. Everything above it sees safe
//! types: [`Eal`], [`Mempool`], [`Mbuf`], [`Port`] with its [`RxQueue`]/[`TxQueue`],
//! [`ring`] handoff rings, [`flow`] rules (`rte_flow`), lcore launching and TSC time. Every C return code and null
//! pointer becomes a [`DpdkError`] here, in one place.
//!
//! Lifetimes across the C boundary are kept simple and conservative: DPDK objects hold no
//! Rust borrows, and the EAL is only torn down when nothing created through it is still
//! alive (see [`Eal`]).

pub mod eal;
pub mod error;
pub mod flow;
pub mod lcore;
pub mod mbuf;
pub mod mempool;
pub mod os;
pub mod port;
pub mod prefetch;
pub mod ring;
pub mod signal;
pub mod time;

pub use eal::{Eal, Pdump};
pub use error::DpdkError;
pub use flow::{Flow, FlowAction, FlowItem, FlowRule};
pub use lcore::{LaunchHandle, LcoreId, SocketId};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{
    DeviceInfo, LinkStatus, Port, PortConfig, PortId, PortStats, QueueId, RxQueue, TxOutcome,
    TxQueue,
};

/// Raw bindgen output. Not for use outside this crate's wrappers except in tests.
#[allow(
    warnings,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    missing_debug_implementations
)]
pub mod ffi {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

/// DPDK's version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(ffi::rte_version()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::ffi;

    /// bindgen and the C compiler must agree on the mbuf layout, since the fast path reads
    /// its fields directly.
    #[test]
    fn mbuf_layout_matches_c() {
        // SAFETY: pure functions returning compile-time constants.
        let (size, data_len, pool) = unsafe {
            (
                ffi::plk_sizeof_mbuf(),
                ffi::plk_offsetof_mbuf_data_len(),
                ffi::plk_offsetof_mbuf_pool(),
            )
        };
        assert_eq!(size, std::mem::size_of::<ffi::rte_mbuf>() as u64);
        assert_eq!(
            data_len,
            std::mem::offset_of!(ffi::rte_mbuf, data_len) as u64
        );
        assert_eq!(pool, std::mem::offset_of!(ffi::rte_mbuf, pool) as u64);
    }

    #[test]
    fn headroom_matches_c() {
        assert_eq!(
            u32::from(crate::mempool::HEADROOM),
            ffi::RTE_PKTMBUF_HEADROOM
        );
        assert_eq!(crate::mempool::data_room_for(1518), Some(2048 + 128));
        assert_eq!(crate::mempool::data_room_for(9022), Some(9022 + 128));
        assert_eq!(crate::mempool::data_room_for(70_000), None);
        // 64-byte header, 128-byte rte_mbuf, the data room, and a ring slot.
        let per = crate::mempool::bytes_for(1, crate::mempool::DEFAULT_DATA_ROOM);
        assert!(
            (64 + 128 + 2176 + 8..=64 + 128 + 2176 + 8 + 128).contains(&per),
            "{per}"
        );
        assert_eq!(crate::mempool::bytes_for(1000, 2176), 1000 * per);
    }

    #[test]
    fn version_is_dpdk() {
        assert!(super::version().starts_with("DPDK"));
    }
}
