//! Flow-log records, made by the worker for the flow-log writer thread
//! (`daemon/flowlog.rs`): at each window's end, one record per flow that carried packets
//! in the window (a sweep of the flow table, a budget of slots per poll, off the packet
//! path); one when a flow ends; and the window's rejected traffic, aggregated per
//! (endpoint, source address, protocol, reason), so that a flood of refused packets makes
//! one record per source and reason, not one per packet.
//!
//! Records go into a bounded queue the writer empties; when it is full the record is
//! dropped and counted (`flow_log_dropped`), never the packet. A flow's records carry its
//! cumulative counters: the writer turns them into the window's figures.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::nat64::Side6;
use super::*;
use crate::tables::fasthash::{fast_map, FastMap};

/// Distinct (endpoint, source, protocol, reason) rejects one window keeps; beyond, they
/// are added to the window's overflow record (source 0.0.0.0).
pub const REJECT_KEYS: usize = 1024;

/// Flow slots looked at per poll by the window sweep.
const SWEEP_SLOTS: u32 = 4096;

/// One record for the writer.
#[derive(Debug, Clone, Copy)]
pub enum FlowLogRecord {
    /// A flow that carried packets in the window `[start_ms, end_ms)` (worker clock);
    /// `side`: an IPv6 consumer's addresses.
    Window {
        flow: Flow,
        side: Option<Side6>,
        start_ms: u64,
        end_ms: u64,
    },
    /// A flow that ended at `at_ms`.
    End {
        flow: Flow,
        side: Option<Side6>,
        at_ms: u64,
    },
    /// Packets to an endpoint refused in the window (`src` unspecified: the window's
    /// sources beyond [`REJECT_KEYS`]).
    Reject {
        endpoint: u32,
        src: IpAddr,
        proto: u8,
        dport: u16,
        reason: DropReason,
        packets: u64,
        bytes: u64,
        start_ms: u64,
        end_ms: u64,
    },
}

/// What rejects are added up by: endpoint handle, source address, protocol, reason.
type RejectKey = (u32, IpAddr, u8, DropReason);
/// A reject key's first destination port, packets and bytes in the window.
type RejectSum = (u16, u64, u64);

/// The worker's queue to the writer, and the window it is in.
#[derive(Debug)]
pub struct FlowLogOut {
    queue: Arc<ArrayQueue<FlowLogRecord>>,
    interval_ms: u64,
    window_start_ms: u64,
    /// The sweep of the window that ended: next slot, and the window.
    sweep: Option<(u32, u64, u64)>,
    rejects: FastMap<RejectKey, RejectSum>,
}

impl FlowLogOut {
    pub fn new(queue: Arc<ArrayQueue<FlowLogRecord>>, interval_ms: u64, now_ms: u64) -> Self {
        FlowLogOut {
            queue,
            interval_ms: interval_ms.max(1),
            window_start_ms: now_ms,
            sweep: None,
            rejects: fast_map(REJECT_KEYS),
        }
    }

    /// Queues a record; false (the caller counts it) when the writer is behind.
    #[inline]
    fn push(&self, r: FlowLogRecord) -> bool {
        self.queue.push(r).is_ok()
    }

    /// A refused packet to endpoint `endpoint` (its handle) from `src`.
    #[inline]
    pub fn reject(
        &mut self,
        endpoint: u32,
        src: IpAddr,
        proto: u8,
        dport: u16,
        reason: DropReason,
        bytes: u64,
    ) {
        let key = if self.rejects.len() < REJECT_KEYS
            || self.rejects.contains_key(&(endpoint, src, proto, reason))
        {
            (endpoint, src, proto, reason)
        } else {
            (endpoint, IpAddr::V4(Ipv4Addr::UNSPECIFIED), proto, reason)
        };
        let e = self.rejects.entry(key).or_insert((dport, 0, 0));
        e.1 += 1;
        e.2 += bytes;
    }
}

impl<F: Frame> Pipeline<F> {
    /// Turns flow logs on for this worker: records go into `queue`, windows are
    /// `interval_ms` long.
    pub fn set_flow_log(&mut self, queue: Arc<ArrayQueue<FlowLogRecord>>, interval_ms: u64) {
        self.flow_log = Some(Box::new(FlowLogOut::new(
            queue,
            interval_ms,
            self.last_tick_ms,
        )));
    }

    /// A flow ended: its last record.
    #[inline]
    pub(super) fn log_flow_end(
        flow_log: &mut Option<Box<FlowLogOut>>,
        counters: &mut Counters,
        f: &Flow,
        side: Option<Side6>,
        now_ms: u64,
    ) {
        if let Some(fl) = flow_log {
            if !fl.push(FlowLogRecord::End {
                flow: *f,
                side,
                at_ms: now_ms,
            }) {
                counters.flow_log_dropped += 1;
            }
        }
    }

    /// Between bursts: ends the window when its time came (its rejects go out, a sweep of
    /// the flow table starts), and sweeps a budget of slots.
    pub(super) fn flow_log_some(&mut self, now_ms: u64) {
        let Some(mut fl) = self.flow_log.take() else {
            return;
        };
        self.flow_log_window(&mut fl, now_ms);
        self.flow_log = Some(fl);
    }

    fn flow_log_window(&mut self, fl: &mut FlowLogOut, now_ms: u64) {
        if fl.sweep.is_none() {
            if now_ms < fl.window_start_ms.saturating_add(fl.interval_ms) {
                return;
            }
            let (start, end) = (fl.window_start_ms, now_ms);
            fl.window_start_ms = now_ms;
            fl.sweep = Some((0, start, end));
            let rejects: Vec<_> = fl.rejects.drain().collect();
            for ((endpoint, src, proto, reason), (dport, packets, bytes)) in rejects {
                let r = FlowLogRecord::Reject {
                    endpoint,
                    src,
                    proto,
                    dport,
                    reason,
                    packets,
                    bytes,
                    start_ms: start,
                    end_ms: end,
                };
                if !fl.push(r) {
                    self.counters.flow_log_dropped += 1;
                }
            }
        }
        let Some((cursor, start, end)) = fl.sweep else {
            return;
        };
        let cap = u32::try_from(self.flows.capacity()).unwrap_or(u32::MAX);
        let stop = cursor.saturating_add(SWEEP_SLOTS).min(cap);
        for id in cursor..stop {
            let Some(f) = self.flows.get(id) else {
                continue;
            };
            if f.last_seen_ms < start {
                continue;
            }
            let r = FlowLogRecord::Window {
                flow: *f,
                side: self.consumers6.of(id, f),
                start_ms: start,
                end_ms: end,
            };
            if !fl.push(r) {
                self.counters.flow_log_dropped += 1;
            }
        }
        fl.sweep = (stop < cap).then_some((stop, start, end));
    }
}
