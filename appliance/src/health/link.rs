//! What passes between the health checker and the workers: TCP segments the checker wants
//! sent from the appliance's own address in a provider VPC, and the segments that come
//! back to that address on the probe ports. Lock-free bounded queues both ways, so a
//! worker only ever does a non-blocking push or pop, a few per poll.

use std::net::IpAddr;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use crate::wire::tcp::TcpRepr;

/// The local ports of probes, on the appliance's own address in a provider VPC. Nothing
/// else listens there, so every TCP segment to one of these ports is a probe's.
pub const PROBE_PORTS: std::ops::RangeInclusive<u16> = 32768..=65535;

/// How much of a reply's payload is passed to the checker: an HTTP status line's start
/// (`HTTP/1.1 200`) is all it reads.
pub const REPLY_PAYLOAD: usize = 64;

/// Segments a worker sends per poll at most.
pub const SENDS_PER_POLL: usize = 32;

/// A segment to send: TCP header fields and payload, from `src` (the appliance's own
/// address on attachment `attachment`, of the target's family) to `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSegment {
    pub attachment: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tcp: TcpRepr,
    pub payload: Vec<u8>,
}

/// A segment that arrived for a probe port, checksum verified, with the start of its
/// payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    pub attachment: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub tcp: TcpRepr,
    /// The payload's length on the wire.
    pub payload_len: u16,
    /// Its first bytes (up to [`REPLY_PAYLOAD`]).
    pub head: [u8; REPLY_PAYLOAD],
}

impl ProbeReply {
    /// The payload bytes that were kept.
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.payload_len).min(REPLY_PAYLOAD)]
    }
}

/// One worker's ends: its own queue of segments to send, and the queue all workers put
/// replies into (a reply arrives on whichever queue RSS picks).
#[derive(Debug, Clone)]
pub struct ProbeLink {
    pub outgoing: Arc<ArrayQueue<ProbeSegment>>,
    pub replies: Arc<ArrayQueue<ProbeReply>>,
}

/// The checker's ends of every worker's link.
#[derive(Debug, Clone)]
pub struct ProbeQueues {
    pub outgoing: Vec<Arc<ArrayQueue<ProbeSegment>>>,
    pub replies: Arc<ArrayQueue<ProbeReply>>,
}

impl ProbeQueues {
    /// Queues for `workers` workers, each direction `depth` deep per worker.
    pub fn new(workers: usize, depth: usize) -> ProbeQueues {
        ProbeQueues {
            outgoing: (0..workers.max(1))
                .map(|_| Arc::new(ArrayQueue::new(depth.max(1))))
                .collect(),
            replies: Arc::new(ArrayQueue::new((depth * workers.max(1)).max(1))),
        }
    }

    /// Worker `i`'s ends.
    pub fn link(&self, i: usize) -> Option<ProbeLink> {
        Some(ProbeLink {
            outgoing: Arc::clone(self.outgoing.get(i)?),
            replies: Arc::clone(&self.replies),
        })
    }

    /// Queues `seg` on the worker for its probe's port (so one probe's segments leave in
    /// order); false when that queue is full.
    pub fn send(&self, seg: ProbeSegment) -> bool {
        let i = usize::from(seg.tcp.src_port) % self.outgoing.len();
        self.outgoing[i].push(seg).is_ok()
    }
}
