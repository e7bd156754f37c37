//! The fragment node: gives a fragment of a TCP or UDP datagram to an endpoint or SNAT
//! address the ports of its datagram, so that the flow nodes and rewrite treat it like any
//! packet of its flow (virtual reassembly, see [`crate::tables::fragments`]). Nothing is
//! reassembled: each fragment leaves as it came, translated; the target or consumer
//! reassembles.
//!
//! # One worker per datagram
//!
//! Only the first fragment carries the ports, so a datagram's fragments must meet on one
//! worker, whichever queues RSS put them on: the owner of a datagram is a hash of its
//! attachment, addresses and protocol under the daemon's per-start seed (the same on every
//! worker), and a fragment received elsewhere is handed to it. The identification is left
//! out of the hash on purpose: all fragmented datagrams between two hosts then meet on one
//! worker, so a consumer's fragmented datagrams of one flow create one flow there, not one
//! per worker. (A NIC's RSS hashes fragments on their addresses only, for the same reason.)
//!
//! The owner tracks the datagram. Towards an endpoint it is also the worker whose flow the
//! fragments use (the first fragment creates it there). Towards a SNAT address the flow
//! belongs to the owner of the SNAT port, which the first fragment names: the fragments go
//! on to that worker with their ports in the handoff tag, so it needs no entry of its own.
//! A fragment handed to a worker that does not own its datagram is such a resolved one.
//!
//! # Out of order
//!
//! A fragment that comes before its datagram's first fragment is recorded (so overlaps are
//! still found) and held in a bounded queue (`tables.fragments_held`) for at most
//! `timeouts.fragment`; when the first fragment comes, the held ones run through the graph
//! right after it, with its ports. Overflow and timeouts are dropped and counted.
//!
//! # What is not translated
//!
//! ICMP fragments (a large echo request), fragments of other protocols and fragments to
//! the appliance's own addresses are dropped as `fragment`. A fragment other than the
//! first never creates a flow, and never gets an ICMP error or RST back (RFC 1812
//! §4.3.2.7). Cost: one table lookup per fragment; packets that are not fragments never
//! come here.

use super::context::{Ctx, L4};
use super::dispatch::Next;
use super::*;
use crate::tables::fragments::{DatagramKey, Piece, Ports, Refused, Seen};

/// A fragment waiting for its datagram's first fragment.
pub(super) struct HeldFragment<F> {
    frame: F,
    in_port: u16,
    key: DatagramKey<u32>,
    since_ms: u64,
}

/// Ports as a handoff tag, and back.
#[inline]
fn tag_of(p: Ports) -> u32 {
    (u32::from(p.0) << 16) | u32::from(p.1)
}

#[inline]
fn ports_of(tag: u32) -> Ports {
    // The two halves of the tag, on purpose.
    #[allow(clippy::cast_possible_truncation)]
    ((tag >> 16) as u16, tag as u16)
}

/// The datagram a fragment belongs to.
#[inline]
fn datagram_of(ctx: &Ctx) -> Option<DatagramKey<u32>> {
    let f = ctx.frag?;
    let (src, dst) = ctx.v4();
    Some(DatagramKey {
        src,
        dst,
        id: f.id,
        att: ctx.att,
        proto: ctx.proto,
    })
}

/// The drop reason of a refused fragment.
fn refusal(r: Refused) -> DropReason {
    match r {
        Refused::Overlap => DropReason::FragmentOverlap,
        Refused::TooBig => DropReason::FragmentTooBig,
        Refused::TooMany => DropReason::FragmentTooMany,
        Refused::Malformed => DropReason::FragmentTooSmall,
        Refused::TableFull => DropReason::FragmentTableFull,
    }
}

/// The handoff tag of a packet the reverse node sends to the SNAT port's owner: a fragment
/// takes its datagram's ports along (a later fragment has none of its own); any other
/// packet 0.
#[inline]
pub(super) fn handoff_tag(ctx: &Ctx) -> u32 {
    match (ctx.frag, ctx.l4) {
        (Some(_), Ok(l4)) => tag_of((l4.sport, l4.dport)),
        _ => 0,
    }
}

impl<F: Frame> Pipeline<F> {
    /// The worker that tracks the datagrams of `key`'s hosts (module docs).
    #[inline]
    pub(super) fn datagram_owner(&self, key: &DatagramKey<u32>) -> u16 {
        let workers = u64::from(self.settings.workers.max(1));
        let hosts = (u64::from(key.src) << 32) | u64::from(key.dst);
        let h = crate::tables::maglev::mix64(
            self.settings.flow_hash_seed
                ^ hosts
                ^ (u64::from(key.att) << 8 | u64::from(key.proto)).rotate_left(40),
        );
        // Below `workers`, which is a u16.
        #[allow(clippy::cast_possible_truncation)]
        let owner = (h % workers) as u16;
        owner
    }

    /// The fragment node: the datagram's ports into the context, then on to the flow node
    /// of its direction; or to the datagram's owner, or held, or refused.
    pub(super) fn fragment(
        &mut self,
        frame: &mut F,
        ctx: &mut Ctx,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let (Some(frag), Some(key)) = (ctx.frag, datagram_of(ctx)) else {
            return Err(DropReason::Malformed);
        };
        let owner = self.datagram_owner(&key);
        let resolved = self.releasing || (self.handed_off && owner != self.id);
        let ports = if resolved {
            ports_of(frame.handoff_tag())
        } else if owner != self.id {
            frame.set_handoff_tag(0);
            return Ok(Next::Handoff(owner));
        } else {
            if ctx.proto == PROTO_TCP && frag.offset == 8 {
                return Err(DropReason::FragmentTooSmall);
            }
            let first = if frag.is_first() {
                let l4 = ctx.l4?;
                Some((l4.sport, l4.dport))
            } else {
                None
            };
            let len = ctx.total_len.saturating_sub(ctx.header_len);
            let piece = Piece {
                offset: frag.offset,
                len: u16::try_from(len).map_err(|_| DropReason::Malformed)?,
                more: frag.more,
            };
            match self.datagrams.observe(&key, piece, first, now_ms) {
                Ok(Seen::Ports(p)) => {
                    if first.is_some() {
                        self.release_fragments(&key, p);
                    }
                    p
                }
                Ok(Seen::WaitingForFirst) => return Ok(Next::HoldFragment),
                Err(r) => return Err(refusal(r)),
            }
        };
        if !frag.is_first() {
            ctx.l4 = Ok(L4 {
                sport: ports.0,
                dport: ports.1,
                tcp: None,
                seq: 0,
            });
        }
        let (src, dst) = ctx.v4();
        let key = FlowKey {
            src_ip: src,
            dst_ip: dst,
            src_port: ports.0,
            dst_port: ports.1,
            vpc: ctx.att,
            proto: ctx.proto,
        };
        ctx.set_key(key, self.flows.index_keys());
        Ok(match ctx.local {
            Some(LocalKind::Snat(_)) => Next::Reverse,
            _ => Next::Forward,
        })
    }

    /// Keeps a fragment that came before its datagram's first fragment (the node said
    /// [`Next::HoldFragment`]); dropped, counted, when the queue is full.
    pub(super) fn hold_fragment(&mut self, frame: F, ctx: &Ctx, in_port: u16, now_ms: u64) {
        let Some(key) = datagram_of(ctx) else {
            self.counters.drop(DropReason::Malformed);
            return;
        };
        if let Some(&(_, ports)) = self.frag_released.iter().find(|(k, _)| *k == key) {
            let mut frame = frame;
            frame.set_handoff_tag(tag_of(ports));
            self.counters.fragments_held += 1;
            self.frag_ready.push_back((in_port, frame));
            return;
        }
        if self.frag_held.len() >= self.settings.fragments_held {
            self.counters.drop(DropReason::FragmentHeldFull);
            return;
        }
        self.counters.fragments_held += 1;
        self.frag_held.push_back(HeldFragment {
            frame,
            in_port,
            key,
            since_ms: now_ms,
        });
    }

    /// The first fragment of `key` came: its held fragments are ready to go, in the order
    /// they came.
    fn release_fragments(&mut self, key: &DatagramKey<u32>, ports: Ports) {
        self.frag_released.push((*key, ports));
        if self.frag_held.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.frag_held.len() {
            if self.frag_held.get(i).is_some_and(|h| h.key == *key) {
                if let Some(mut h) = self.frag_held.remove(i) {
                    h.frame.set_handoff_tag(tag_of(ports));
                    self.frag_ready.push_back((h.in_port, h.frame));
                }
            } else {
                i += 1;
            }
        }
    }

    /// Drops the held fragments whose first fragment did not come in time (between
    /// bursts; the queue is in arrival order, so only its front is looked at).
    pub(super) fn expire_held_fragments(&mut self, now_ms: u64) {
        let timeout = self.datagrams.timeout_ms();
        while self
            .frag_held
            .front()
            .is_some_and(|h| now_ms.saturating_sub(h.since_ms) >= timeout)
        {
            self.frag_held.pop_front();
            self.counters.drop(DropReason::FragmentTimeout);
        }
    }

    /// Fragments held now (for tests and reports).
    pub fn fragments_waiting(&self) -> usize {
        self.frag_held.len()
    }
}
