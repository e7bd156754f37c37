//! The poll-mode worker loop: DPDK I/O around the pure [`Pipeline`].
//!
//! Each worker owns RX/TX queue *i* of every port, one handoff ring to every other worker
//! and one from each, and its own flow table and counters; the neighbour table is shared
//! by all workers (lock-free reads, see [`crate::tables::neighbour`]). Per loop:
//! refresh the snapshot (one atomic load), receive a burst from every port, run each packet
//! through the pipeline, hand replies of flows another worker owns to that worker, transmit
//! per port, then do a bounded slice of timer work. Nothing here blocks, allocates (all
//! vectors are sized at start) or takes a lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::queue::ArrayQueue;
use dpdk_bindings::ring::{Consumer, Producer};
use dpdk_bindings::{time, Mbuf, Mempool, RxQueue, TxQueue};

use crate::daemon::supervisor::{Fault, FaultKind, Heartbeat};
use crate::graph::counters::{Counters, DropReason, PublishedCounters};
use crate::graph::{FlowQuery, Pipeline, PipelineSettings, UsageReport, Verdict};
use crate::tables::neighbour::SharedNeighbours;
use crate::tables::snapshot::cell::SnapshotReader;
use crate::tables::snapshot::Snapshot;
use crate::wire::{ethernet, vlan};

/// A question from the management thread, answered a budget per poll (never by a walk of
/// the flow table inside one poll).
#[derive(Debug)]
pub enum Query {
    /// The flows a filter admits, up to a maximum.
    Flows(FlowQuery),
}

/// Everything one worker owns, handed over at launch.
#[derive(Debug)]
pub struct WorkerSetup {
    pub id: u16,
    /// RX queue `id` of each port, in port-index order.
    pub rx: Vec<RxQueue>,
    /// TX queue `id` of each port, in port-index order.
    pub tx: Vec<TxQueue>,
    /// DPDK port id → port index (u16::MAX when not ours).
    pub port_index: Vec<u16>,
    /// Ring to worker `w` at index `w` (None for ourselves).
    pub handoff_out: Vec<Option<Producer>>,
    /// Rings from the other workers.
    pub handoff_in: Vec<Consumer>,
    /// The neighbour table every worker shares.
    pub neighbours: SharedNeighbours,
    pub pool: Arc<Mempool>,
    pub snapshot: SnapshotReader<Snapshot>,
    pub published: Arc<PublishedCounters>,
    pub stop: Arc<AtomicBool>,
    pub burst: u16,
    pub idle_sleep: Duration,
    pub settings: PipelineSettings,
    pub queries: crossbeam::channel::Receiver<Query>,
    /// The daemon's clock origin (TSC): worker times and the stats log share it.
    pub epoch_tsc: u64,
    /// How often the counters are published (at most 100 ms).
    pub publish_every_ms: u64,
    /// Where worker 0 says which generation it last announced in full (gratuitous ARP).
    pub announced: Arc<std::sync::atomic::AtomicU64>,
    /// Where this worker's usage reports go (the management thread takes them).
    pub reports: Arc<ArrayQueue<UsageReport>>,
    /// The time (worker clock, ms) as of which the management thread wants usage.
    pub usage_wanted: Arc<std::sync::atomic::AtomicU64>,
    /// The MTU of each port, in port-index order: longer frames are not sent (counted).
    pub port_mtu: Vec<u16>,
    /// Where the worker shows the main thread that it makes progress.
    pub heartbeat: Arc<Heartbeat>,
    /// The test hook's fault for this worker, if any.
    pub fault: Option<Fault>,
    /// Its ends of the health checker's queues.
    pub probes: Option<crate::health::link::ProbeLink>,
    /// Its ends of the HA sync thread's queues (an HA pair's node only).
    pub ha: Option<crate::ha::link::HaLink>,
    /// Flow-log records for the writer, and the window in ms (none: flow logs off).
    pub flow_log: Option<(Arc<ArrayQueue<crate::graph::flowlog::FlowLogRecord>>, u64)>,
}

/// Runs the worker until `stop` is set; returns its final counters.
pub fn run(mut w: WorkerSetup) -> Counters {
    let ports = w.rx.len();
    let burst = usize::from(w.burst);
    let pool = Arc::clone(&w.pool);
    let mut pipe: Pipeline<Mbuf> = Pipeline::with_neighbour_table(
        w.id,
        w.settings.clone(),
        Box::new(move || pool.alloc()),
        w.snapshot.get(),
        w.neighbours.clone(),
    );
    if let Some(link) = w.probes.take() {
        pipe.set_probe_link(link);
    }
    if let Some(link) = w.ha.take() {
        pipe.set_ha_link(link);
    }
    if let Some((queue, interval_ms)) = w.flow_log.take() {
        pipe.set_flow_log(queue, interval_ms);
    }
    let mut rx_buf: Vec<Mbuf> = Vec::with_capacity(burst);
    let mut tx_bufs: Vec<Vec<Mbuf>> = (0..ports).map(|_| Vec::with_capacity(burst * 4)).collect();
    let mut handoff_bufs: Vec<Vec<Mbuf>> = (0..w.handoff_out.len())
        .map(|_| Vec::with_capacity(burst * 2))
        .collect();
    let hz_ms = (time::tsc_hz() / 1000).max(1);
    let start_tsc = w.epoch_tsc;
    let publish_every = w.publish_every_ms.clamp(1, 100);
    let mut last_publish = 0u64;
    let mut pending: Option<Query> = None;
    let hz_ms_div = hz_ms;
    let mut loops = 0u64;
    let fault_at_ms = w.fault.map(|f| {
        let now_ms = time::tsc().saturating_sub(start_tsc) / hz_ms;
        now_ms.saturating_add(f.after_ms)
    });

    while !w.stop.load(Ordering::Relaxed) {
        loops += 1;
        w.heartbeat.beat(loops);
        let now_ms = time::tsc().saturating_sub(start_tsc) / hz_ms_div;
        if w.snapshot.refresh() {
            pipe.on_snapshot(w.snapshot.get());
        }
        let snap = w.snapshot.get();
        let mut work = 0usize;

        for p in 0..ports {
            let n = w.rx[p].rx_burst(&mut rx_buf, w.burst);
            if n == 0 {
                continue;
            }
            work += n;
            // Devices that do not enforce their MTU (a tap, whose kernel side may have a
            // larger one) hand over longer frames: counted and dropped here.
            let mtu = w.port_mtu.get(p).copied().unwrap_or(u16::MAX);
            let limit = usize::from(mtu) + ethernet::HEADER_LEN;
            if rx_buf.iter().any(|m| m.pkt_len() > limit) {
                drop_oversize(
                    &mut rx_buf,
                    mtu,
                    DropReason::RxOversize,
                    pipe.counters_mut(),
                );
                if rx_buf.is_empty() {
                    continue;
                }
            }
            let in_port = u16::try_from(p).unwrap_or(u16::MAX);
            // Verdicts for ports or workers that do not exist (never, by construction).
            let mut lost = [0u64; DropReason::COUNT];
            pipe.process_burst(snap, in_port, &mut rx_buf, now_ms, &mut |v| {
                if let Err(reason) = route_verdict(v, &mut tx_bufs, &mut handoff_bufs) {
                    lost[reason as usize] += 1;
                }
            });
            count_lost(&mut pipe, &lost);
        }
        for ring in w.handoff_in.iter_mut() {
            let n = ring.dequeue_burst(&mut rx_buf, u32::from(w.burst));
            if n == 0 {
                continue;
            }
            work += n;
            pipe.counters_mut().handoff_in += n as u64;
            for m in rx_buf.drain(..) {
                let in_port = w
                    .port_index
                    .get(usize::from(m.port()))
                    .copied()
                    .unwrap_or(u16::MAX);
                dispatch(
                    &mut pipe,
                    snap,
                    in_port,
                    m,
                    now_ms,
                    &mut tx_bufs,
                    &mut handoff_bufs,
                );
            }
        }
        // Fragments a handed-over first fragment brought out of the hold queue.
        let mut lost = [0u64; DropReason::COUNT];
        pipe.process_released(snap, now_ms, &mut |v| {
            if let Err(reason) = route_verdict(v, &mut tx_bufs, &mut handoff_bufs) {
                lost[reason as usize] += 1;
            }
        });
        count_lost(&mut pipe, &lost);
        pipe.poll(snap, now_ms);
        if w.id == 0 {
            w.announced
                .store(pipe.announced_generation(), Ordering::Release);
        }
        for (port, m) in pipe.drain_emitted() {
            if let Some(buf) = tx_bufs.get_mut(usize::from(port)) {
                buf.push(m);
            }
        }

        for (p, buf) in tx_bufs.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            let mtu = w.port_mtu.get(p).copied().unwrap_or(u16::MAX);
            let mut bytes = 0u64;
            let mut oversize = false;
            for m in buf.iter() {
                let len = m.pkt_len();
                bytes += len as u64;
                oversize |= len > usize::from(mtu) + ethernet::HEADER_LEN;
            }
            if oversize {
                bytes -= drop_oversize(buf, mtu, DropReason::TxOversize, pipe.counters_mut());
            }
            let out = w.tx[p].tx_burst_retry(buf, TX_STALLS);
            let c = pipe.counters_mut();
            c.tx_packets += out.sent as u64;
            c.tx_bytes += bytes - out.refused_bytes;
            c.drops[DropReason::TxFull as usize] += out.refused as u64;
        }
        for (to, buf) in handoff_bufs.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            let Some(Some(ring)) = w.handoff_out.get_mut(to) else {
                buf.clear();
                continue;
            };
            let sent = ring.enqueue_burst(buf);
            let dropped = buf.len();
            buf.clear();
            let c = pipe.counters_mut();
            c.handoff_out += sent as u64;
            for _ in 0..dropped {
                c.drop(DropReason::HandoffFull);
            }
        }

        pipe.want_report(w.usage_wanted.load(Ordering::Acquire));
        if let Some(r) = pipe.take_report() {
            if let Err(r) = w.reports.push(r) {
                pipe.put_back_report(r);
            }
        }
        // One atomic load when there is nothing to answer; a query waits while another
        // listing is under way.
        if pending.is_none() {
            pending = w.queries.try_recv().ok();
        }
        if let Some(Query::Flows(q)) = pending.take() {
            if let Err(q) = pipe.start_listing(q) {
                pending = Some(Query::Flows(q));
            }
        }
        if now_ms >= last_publish + publish_every {
            last_publish = now_ms;
            pipe.sync_gauges();
            w.published
                .publish(pipe.counters(), now_ms, snap.generation);
            if let (Some(f), Some(at)) = (w.fault, fault_at_ms) {
                if now_ms >= at && strike(f) {
                    break;
                }
            }
        }
        {
            let c = pipe.counters_mut();
            c.polls += 1;
            c.busy_polls += u64::from(work > 0);
        }
        if work == 0 && !w.idle_sleep.is_zero() {
            std::thread::sleep(w.idle_sleep);
        }
    }
    pipe.sync_gauges();
    let now_ms = time::tsc().saturating_sub(start_tsc) / hz_ms;
    w.published
        .publish(pipe.counters(), now_ms, w.snapshot.get().generation);
    pipe.counters().clone()
}

/// Counts the verdicts [`route_verdict`] could not place (never, by construction).
#[inline]
fn count_lost(pipe: &mut Pipeline<Mbuf>, lost: &[u64; DropReason::COUNT]) {
    if lost.iter().any(|&n| n > 0) {
        let c = pipe.counters_mut();
        for (d, n) in c.drops.iter_mut().zip(lost) {
            *d += n;
        }
    }
}

/// Attempts without progress a TX burst's unsent tail gets before it is dropped.
const TX_STALLS: u32 = 4;

/// Drops (and counts as `reason`) the frames of `buf` longer than what `mtu` allows on
/// the wire (the Ethernet header, and a VLAN tag when the frame carries one); returns their
/// bytes. Received ones count as received too. Rare: the caller only comes here when a
/// frame is longer than `mtu` + 14.
#[cold]
#[inline(never)]
fn drop_oversize(buf: &mut Vec<Mbuf>, mtu: u16, reason: DropReason, c: &mut Counters) -> u64 {
    let mut bytes = 0u64;
    buf.retain(|m| {
        let fits = m.pkt_len() <= max_frame(mtu, m.data());
        if !fits {
            let len = m.pkt_len() as u64;
            bytes += len;
            if reason == DropReason::RxOversize {
                c.rx_packets += 1;
                c.rx_bytes += len;
            }
            c.drop(reason);
        }
        fits
    });
    bytes
}

/// The longest frame an `mtu` allows for this frame: its L3 packet at most `mtu` bytes
/// after the Ethernet header and, when the frame is tagged, one 802.1Q tag.
fn max_frame(mtu: u16, frame: &[u8]) -> usize {
    let tagged = frame.get(12..14) == Some(&[0x81, 0x00][..]);
    usize::from(mtu) + ethernet::HEADER_LEN + if tagged { vlan::TAG_LEN } else { 0 }
}

/// Makes the test hook's fault happen; true when the worker is to leave its loop.
#[cold]
fn strike(f: Fault) -> bool {
    match f.kind {
        FaultKind::Panic => panic!("test fault: worker {} panics", f.worker),
        FaultKind::Stall => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        FaultKind::Exit => true,
    }
}

#[inline]
fn dispatch(
    pipe: &mut Pipeline<Mbuf>,
    snap: &Snapshot,
    in_port: u16,
    m: Mbuf,
    now_ms: u64,
    tx_bufs: &mut [Vec<Mbuf>],
    handoff_bufs: &mut [Vec<Mbuf>],
) {
    // Handed over by the worker that received it, which counted it already.
    let v = pipe.process_handed_off(snap, in_port, m, now_ms);
    if let Err(reason) = route_verdict(v, tx_bufs, handoff_bufs) {
        pipe.counters_mut().drop(reason);
    }
}

/// Queues a verdict's packet for its port or worker; the drop reason if that index does
/// not exist (the packet is dropped, for the caller to count).
#[inline]
fn route_verdict(
    v: Verdict<Mbuf>,
    tx_bufs: &mut [Vec<Mbuf>],
    handoff_bufs: &mut [Vec<Mbuf>],
) -> Result<(), DropReason> {
    let (bufs, i, m, reason) = match v {
        Verdict::Tx(port, m) => (tx_bufs, port, m, DropReason::NoAttachment),
        Verdict::Handoff(w, m) => (handoff_bufs, w, m, DropReason::HandoffFull),
        Verdict::Done => return Ok(()),
    };
    bufs.get_mut(usize::from(i)).ok_or(reason)?.push(m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mtu_counts_the_vlan_tag_only_on_tagged_frames() {
        let mut untagged = vec![0u8; 60];
        untagged[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut tagged = untagged.clone();
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        assert_eq!(max_frame(1500, &untagged), 1514);
        assert_eq!(max_frame(1500, &tagged), 1518);
        assert_eq!(max_frame(9000, &[]), 9014);
    }
}
