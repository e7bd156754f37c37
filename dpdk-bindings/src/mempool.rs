//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;

use crate::eal::EalToken;
use crate::error::DpdkError;
use crate::ffi;
use crate::lcore::SocketId;
use crate::mbuf::Mbuf;

/// DPDK's headroom in front of the packet in each mbuf (`RTE_PKTMBUF_HEADROOM`).
pub const HEADROOM: u16 = 128;
/// Default data room: 2 KiB of packet plus DPDK's headroom, one standard frame per mbuf.
pub const DEFAULT_DATA_ROOM: u16 = 2048 + HEADROOM;

/// The data room that holds a `frame`-byte frame in one mbuf (at least the default);
/// None when no mbuf can be that large.
pub fn data_room_for(frame: usize) -> Option<u16> {
    let room = u16::try_from(frame.checked_add(usize::from(HEADROOM))?).ok()?;
    Some(room.max(DEFAULT_DATA_ROOM))
}

/// About the memory [`Mempool::new`] takes for `size` mbufs of `data_room` bytes: each
/// object as DPDK lays it out (header, `rte_mbuf`, data room, alignment) plus its ring
/// slot. For checking a pool against free memory before creating it.
pub fn bytes_for(size: u32, data_room: u16) -> u64 {
    let elt = u32::try_from(std::mem::size_of::<ffi::rte_mbuf>()).unwrap_or(u32::MAX)
        + u32::from(data_room);
    let mut sz = ffi::rte_mempool_objsz::default();
    // SAFETY: a pure computation over its arguments, writing only to `sz`.
    let per = unsafe { ffi::rte_mempool_calc_obj_size(elt, 0, &mut sz) };
    let ring_slot = std::mem::size_of::<*mut ffi::rte_mbuf>() as u64;
    u64::from(size) * (u64::from(per) + ring_slot)
}

/// A pktmbuf pool on one NUMA socket.
///
/// Freed on drop only when every mbuf has come back; otherwise it is deliberately leaked
/// (with a warning) so that an outstanding mbuf never points into freed memory.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<ffi::rte_mempool>,
    name: String,
    size: u32,
    _eal: EalToken,
}

// SAFETY: DPDK mempools are designed for concurrent use from many lcores (lock-free ring
// plus per-lcore caches); the handle itself is an immutable pointer.
unsafe impl Send for Mempool {}
// SAFETY: as above; every operation through &Mempool is thread-safe in DPDK.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `size` mbufs with a per-lcore cache of `cache` and `data_room`
    /// bytes per buffer, on `socket`.
    pub fn new(
        name: &str,
        size: u32,
        cache: u32,
        data_room: u16,
        socket: SocketId,
    ) -> Result<Mempool, DpdkError> {
        let op = || format!("rte_pktmbuf_pool_create({name})");
        let eal = EalToken::acquire(&op())?;
        let cname = CString::new(name).map_err(|_| DpdkError::invalid(op()))?;
        // SAFETY: cname is a valid C string for the duration of the call; the EAL is up
        // (EalToken); DPDK validates the numeric arguments.
        let raw = unsafe {
            ffi::rte_pktmbuf_pool_create(
                cname.as_ptr(),
                size,
                cache,
                0,
                data_room,
                socket.as_c_int(),
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| DpdkError::from_rte_errno(op()))?;
        Ok(Mempool {
            raw,
            name: name.to_owned(),
            size,
            _eal: eal,
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of mbufs the pool was created with.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Mbufs currently free (in the pool or in per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: raw is a live mempool.
        unsafe { ffi::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    /// Mbufs currently handed out.
    pub fn in_use(&self) -> u32 {
        // SAFETY: raw is a live mempool.
        unsafe { ffi::rte_mempool_in_use_count(self.raw.as_ptr()) }
    }

    /// Allocates one mbuf (reset, empty). `None` when the pool is exhausted.
    #[inline]
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: raw is a live pktmbuf pool; a non-null result is a fresh mbuf we own.
        let m = unsafe { ffi::plk_pktmbuf_alloc(self.raw.as_ptr()) };
        // SAFETY: m is either null or an mbuf whose ownership passes to us.
        NonNull::new(m).map(|m| unsafe { Mbuf::from_raw(m) })
    }

    /// Allocates `n` mbufs into `out` at once, or none at all.
    pub fn alloc_bulk(&self, out: &mut Vec<Mbuf>, n: usize) -> Result<(), DpdkError> {
        let op = || format!("rte_pktmbuf_alloc_bulk({})", self.name);
        let count = u32::try_from(n).map_err(|_| DpdkError::invalid(op()))?;
        out.reserve(n);
        let len = out.len();
        // SAFETY: `out` has room for n more pointers after `len`; Mbuf is
        // repr(transparent) over NonNull<rte_mbuf>, so the spare capacity is an array of
        // mbuf pointers. On success DPDK filled all n with valid mbufs we now own.
        unsafe {
            let dst = out.as_mut_ptr().add(len).cast::<*mut ffi::rte_mbuf>();
            let rc = ffi::plk_pktmbuf_alloc_bulk(self.raw.as_ptr(), dst, count);
            if rc != 0 {
                return Err(DpdkError::new(op(), rc));
            }
            out.set_len(len + n);
        }
        Ok(())
    }

    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        let in_use = self.in_use();
        if in_use != 0 {
            log::warn!(
                "mempool {} still has {in_use} mbufs out; leaving it allocated",
                self.name
            );
            // Keep the EAL from being cleaned up under it.
            crate::eal::keep_alive_forever();
            return;
        }
        // SAFETY: no mbuf of this pool is outstanding and no port references it any more
        // (ports hold an Arc to the pool and are stopped before it drops).
        unsafe { ffi::rte_mempool_free(self.raw.as_ptr()) };
    }
}
