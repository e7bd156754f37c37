//! Single-producer/single-consumer mbuf rings between two workers (`rte_ring`).
//!
//! A reply that lands on a queue whose worker does not own its flow is handed to the owner
//! through the ring for that (from, to) pair: one writer and one reader per ring, so the
//! SP/SC ring costs one atomic per burst, not per packet.

use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::eal::EalToken;
use crate::error::DpdkError;
use crate::ffi;
use crate::lcore::SocketId;
use crate::mbuf::Mbuf;

const RING_F_SP_ENQ: u32 = 0x0001;
const RING_F_SC_DEQ: u32 = 0x0002;

#[derive(Debug)]
struct RingInner {
    raw: NonNull<ffi::rte_ring>,
    _eal: EalToken,
}

// SAFETY: an rte_ring is built for cross-thread use; the SP/SC discipline is enforced by
// handing out exactly one Producer and one Consumer (neither Clone nor Sync).
unsafe impl Send for RingInner {}
// SAFETY: shared only between the one producer and the one consumer, which touch disjoint
// ends of the ring; `count` reads are allowed concurrently.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        // Whatever is still queued is ours to free.
        let mut left = Vec::new();
        loop {
            left.clear();
            if dequeue(self.raw, &mut left, 64) == 0 {
                break;
            }
        }
        // SAFETY: both ends are gone (this is the last Arc), the ring is empty.
        unsafe { ffi::rte_ring_free(self.raw.as_ptr()) };
    }
}

/// The writing end.
#[derive(Debug)]
pub struct Producer {
    inner: Arc<RingInner>,
}

/// The reading end.
#[derive(Debug)]
pub struct Consumer {
    inner: Arc<RingInner>,
}

/// Creates an SP/SC ring of `capacity` slots (a power of two; one slot stays unused).
pub fn spsc(
    name: &str,
    capacity: u32,
    socket: SocketId,
) -> Result<(Producer, Consumer), DpdkError> {
    let op = || format!("rte_ring_create({name})");
    let eal = EalToken::acquire(&op())?;
    let cname = CString::new(name).map_err(|_| DpdkError::invalid(op()))?;
    // SAFETY: valid C string; the EAL is up; DPDK validates the size.
    let raw = unsafe {
        ffi::rte_ring_create(
            cname.as_ptr(),
            capacity,
            socket.as_c_int(),
            RING_F_SP_ENQ | RING_F_SC_DEQ,
        )
    };
    let raw = NonNull::new(raw).ok_or_else(|| DpdkError::from_rte_errno(op()))?;
    let inner = Arc::new(RingInner { raw, _eal: eal });
    Ok((
        Producer {
            inner: Arc::clone(&inner),
        },
        Consumer { inner },
    ))
}

impl Producer {
    /// Enqueues from the front of `pkts`; enqueued mbufs leave the vector, what did not fit
    /// stays. Returns how many were enqueued.
    #[inline]
    pub fn enqueue_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let len = pkts.len();
        if len == 0 {
            return 0;
        }
        let n = u32::try_from(len).unwrap_or(u32::MAX);
        // SAFETY: pkts holds `len` owned mbuf pointers (repr(transparent)); the ring takes
        // ownership of the first `done`; we shift the rest down without dropping the moved
        // ones. This Producer is the ring's only writer.
        unsafe {
            let base = pkts.as_mut_ptr();
            let done =
                ffi::plk_ring_enqueue_burst(self.inner.raw.as_ptr(), base.cast::<*mut c_void>(), n)
                    as usize;
            std::ptr::copy(base.add(done), base, len - done);
            pkts.set_len(len - done);
            done
        }
    }

    /// Packets waiting in the ring.
    pub fn len(&self) -> usize {
        count(self.inner.raw)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Consumer {
    /// Dequeues up to `max` packets, appended to `out`.
    #[inline]
    pub fn dequeue_burst(&mut self, out: &mut Vec<Mbuf>, max: u32) -> usize {
        dequeue(self.inner.raw, out, max)
    }

    pub fn len(&self) -> usize {
        count(self.inner.raw)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn count(raw: NonNull<ffi::rte_ring>) -> usize {
    // SAFETY: live ring; a count read is safe concurrently with either end.
    unsafe { ffi::plk_ring_count(raw.as_ptr()) as usize }
}

fn dequeue(raw: NonNull<ffi::rte_ring>, out: &mut Vec<Mbuf>, max: u32) -> usize {
    out.reserve(max as usize);
    let len = out.len();
    // SAFETY: `out` has room for max pointers; every object in the ring is an owned mbuf
    // put there by `enqueue_burst`; ownership passes to us. Called only by the single
    // consumer (or by the last owner in Drop).
    unsafe {
        let dst = out.as_mut_ptr().add(len).cast::<*mut c_void>();
        let n = ffi::plk_ring_dequeue_burst(raw.as_ptr(), dst, max) as usize;
        out.set_len(len + n);
        n
    }
}
