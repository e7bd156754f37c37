//! What passes between the sync thread and each worker: flow records out (what this
//! worker's flows did, while active) and in (the peer's flows, while standby), the role,
//! the bulk-copy requests, and data-path claims. Lock-free and bounded: a worker never
//! waits on the sync thread.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::record::FlowRecord;

/// [`HaLink::role`] values.
pub const STANDBY: u8 = 0;
pub const ACTIVE: u8 = 1;

/// Records a worker installs per poll at most (the standby's share of the sync load).
pub const INSTALLS_PER_POLL: usize = 256;
/// Flow slots a worker copies per poll for a bulk copy.
pub const BULK_SLOTS_PER_POLL: usize = 512;

/// State shared by the sync thread and every worker.
#[derive(Debug)]
pub struct HaShared {
    /// [`ACTIVE`] or [`STANDBY`], written by the sync thread.
    pub role: AtomicU8,
    /// Bumped when the peer asks for a full copy of the flows.
    pub bulk_epoch: AtomicU64,
    /// Counts ARP from another MAC claiming one of our addresses (the peer, active on a
    /// data network).
    pub claims: AtomicU64,
    /// How often the active node announces its own addresses on the data networks, ms.
    pub announce_every_ms: u64,
    /// Bumped when the active node must announce every address again (another node
    /// spoke for them: a split brain that ended, a peer that stepped down).
    pub announce_epoch: AtomicU64,
    /// Per attachment (index), the MAC another station last claimed one of our addresses
    /// from (the peer's port there), with bit 63 set; 0 = none seen.
    pub peer_macs: Vec<AtomicU64>,
}

/// Attachments whose peer MAC is remembered (a higher index gets no handover).
pub const PEER_MAC_SLOTS: usize = 256;

impl HaShared {
    /// Remembers the MAC the peer used on attachment `att`.
    pub fn note_peer_mac(&self, att: u16, mac: [u8; 6]) {
        if let Some(slot) = self.peer_macs.get(usize::from(att)) {
            let mut v = 0u64;
            for b in mac {
                v = v << 8 | u64::from(b);
            }
            v |= 1 << 63;
            slot.store(v, Ordering::Relaxed);
        }
    }

    /// The MAC the peer used on attachment `att`, if seen.
    pub fn peer_mac(&self, att: u16) -> Option<[u8; 6]> {
        let v = self
            .peer_macs
            .get(usize::from(att))?
            .load(Ordering::Relaxed);
        if v == 0 {
            return None;
        }
        let b = v.to_be_bytes();
        Some([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl HaShared {
    pub fn new(announce_every_ms: u64) -> HaShared {
        HaShared {
            role: AtomicU8::new(STANDBY),
            bulk_epoch: AtomicU64::new(0),
            claims: AtomicU64::new(0),
            announce_every_ms,
            announce_epoch: AtomicU64::new(0),
            peer_macs: (0..PEER_MAC_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.role.load(Ordering::Acquire) == ACTIVE
    }
}

/// One worker's ends.
#[derive(Debug, Clone)]
pub struct HaLink {
    pub shared: Arc<HaShared>,
    /// What this worker's flows did (while active).
    pub export: Arc<ArrayQueue<FlowRecord>>,
    /// The peer's flows for this worker to install (while standby).
    pub import: Arc<ArrayQueue<FlowRecord>>,
    /// The bulk epoch this worker finished copying.
    pub bulk_done: Arc<AtomicU64>,
}

/// The sync thread's ends of every worker's link.
#[derive(Debug, Clone)]
pub struct HaQueues {
    pub shared: Arc<HaShared>,
    pub export: Vec<Arc<ArrayQueue<FlowRecord>>>,
    pub import: Vec<Arc<ArrayQueue<FlowRecord>>>,
    pub bulk_done: Vec<Arc<AtomicU64>>,
}

impl HaQueues {
    pub fn new(workers: usize, depth: usize, announce_every_ms: u64) -> HaQueues {
        let q = || Arc::new(ArrayQueue::new(depth.max(1)));
        let n = workers.max(1);
        HaQueues {
            shared: Arc::new(HaShared::new(announce_every_ms)),
            export: (0..n).map(|_| q()).collect(),
            import: (0..n).map(|_| q()).collect(),
            bulk_done: (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect(),
        }
    }

    pub fn link(&self, i: usize) -> Option<HaLink> {
        Some(HaLink {
            shared: Arc::clone(&self.shared),
            export: Arc::clone(self.export.get(i)?),
            import: Arc::clone(self.import.get(i)?),
            bulk_done: Arc::clone(self.bulk_done.get(i)?),
        })
    }
}
