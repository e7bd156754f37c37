//! The packet path of one worker, pure Rust over [`Frame`]s: classify, answer ARP and
//! ping, look the destination up in the snapshot, find or create the flow, translate, and
//! pick the next hop. Refusals that protect the targets (martian sources, IPv4 options,
//! RSTs outside the window, packets too big for the egress) and ICMP errors in both
//! directions live here, on the full path; the fast path (`fast.rs`) hands every such
//! packet over untouched. No DPDK here: the worker loop feeds mbufs in, tests feed
//! [`crate::graph::frame::VecFrame`]s.
//!
//! No-panic contract: every header is parsed with a `new_checked` view before use and every
//! index into the snapshot is checked; a packet that does not fit is dropped and counted by
//! [`DropReason`], never a panic. The fuzz target and property tests feed arbitrary bytes
//! through [`Pipeline::process`] to hold it to that.
//!
//! The pipeline never allocates on the packet path: the flow table, neighbour table, hold
//! queue and output vectors are sized at construction.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::graph::counters::{Counters, DropReason};
use crate::graph::frame::Frame;
use crate::tables::flow::{
    Flow, FlowId, FlowKey, FlowTable, TcpFlags, TcpSeen, Timeouts, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use crate::tables::limits::{ConsumerLoad, FlowLimits};
use crate::tables::neighbour::{NeighbourTable, NeighbourTimers, Neighbours, Resolution};
use crate::tables::snapshot::{AttachmentView, ListenerRef, LocalKind, Refusal, Snapshot};
use crate::tables::snat::SnatPorts;
pub use crate::tables::snat::SNAT_PORT_MIN;
use crate::wire::arp::{ArpOperation, ArpPacket};
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetAddress, EthernetFrame};
use crate::wire::icmpv4::{self, Icmpv4Packet, Icmpv4Type};
use crate::wire::ipv4::{self, IpProtocol, Ipv4Packet, Ipv4Repr, OptionsVerdict};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::vlan;

/// Places of the half-open queue one eviction looks at, and stale ones the poll tidies:
/// bounds the work of a new flow under pressure (one slot read each).
const EVICT_BUDGET: usize = 64;
/// TTL of packets the appliance originates.
const OWN_TTL: u8 = 64;
/// ICMP errors and RSTs the worker may originate per second (RFC 1812 §4.3.2.8 asks
/// routers to rate-limit them).
const ORIGINATED_PER_SEC: u32 = 2000;
/// How often neighbour retries and the hold queue are looked at.
const TIMER_TICK_MS: u64 = 10;
/// The shortest Ethernet frame without FCS (IEEE 802.3 §3.2.8): what the appliance pads
/// the frames it originates to (plus the tag on a VLAN, so the frame stays long enough
/// when a switch strips it).
const MIN_FRAME_LEN: usize = 60;

/// What a worker does with a packet after [`Pipeline::process`].
#[derive(Debug)]
pub enum Verdict<F> {
    /// Transmit on the port with this index.
    Tx(u16, F),
    /// Hand to the worker that owns the packet's flow.
    Handoff(u16, F),
    /// Consumed: dropped (and counted), or held until its next hop resolves.
    Done,
}

/// A neighbour learned outside this pipeline's packet path (a test, a tool): see
/// [`Pipeline::learn_remote`]. Workers need no news from each other: they share one
/// [`NeighbourTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourNews {
    pub attachment: u16,
    pub ip: u32,
    pub mac: [u8; 6],
}

/// Sizes and timers of one worker's pipeline.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub workers: u16,
    pub flow_capacity: usize,
    pub timeouts: Timeouts,
    pub neighbour_capacity: usize,
    pub neighbour_timers: NeighbourTimers,
    /// Packets held while their next hop resolves.
    pub hold_capacity: usize,
    /// Flow slots examined for expiry per poll: bounds the timer work per loop.
    pub expire_budget: usize,
    /// Seeds the hash that picks a new flow's target (Maglev) and SNAT address. The daemon
    /// draws it at random once per start and gives it to every worker, so all workers
    /// pick alike but no client can compute which source port lands on which target.
    pub flow_hash_seed: u64,
    /// Per-consumer limits on this worker's flows (already divided among the workers).
    pub limits: FlowLimits,
    /// Recently closed SNAT ports remembered (see [`crate::tables::snat::Quarantine`]).
    pub snat_quarantine: usize,
    /// Seed of the SNAT port draws and the client buckets; None (the daemon): a random one
    /// per start. Fixed only for reproducible tests.
    pub seed: Option<u64>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            workers: 1,
            flow_capacity: 1 << 16,
            timeouts: Timeouts::default(),
            neighbour_capacity: 4096,
            neighbour_timers: NeighbourTimers::default(),
            hold_capacity: 256,
            expire_budget: 64,
            flow_hash_seed: 0,
            limits: FlowLimits::default(),
            snat_quarantine: 1 << 16,
            seed: None,
        }
    }
}

struct Held<F> {
    frame: F,
    attachment: u16,
    next_hop: u32,
    since_ms: u64,
}

/// A fresh-frame source (the worker's mempool) for packets the pipeline originates.
pub type FrameAlloc<F> = Box<dyn FnMut() -> Option<F> + Send>;

/// One worker's packet path and all the state it owns.
pub struct Pipeline<F: Frame> {
    id: u16,
    settings: PipelineSettings,
    flows: FlowTable,
    neighbours: Neighbours,
    held: VecDeque<Held<F>>,
    held_scratch: VecDeque<Held<F>>,
    emitted: Vec<(u16, F)>,
    counters: Counters,
    alloc: FrameAlloc<F>,
    snat: SnatPorts,
    /// Flows and half-open flows per endpoint and per client address, for the limits.
    load: ConsumerLoad,
    last_tick_ms: u64,
    /// Next entry of the snapshot's `announce` list to send a gratuitous ARP for (worker
    /// 0 only): a bounded number per poll, so thousands of new endpoints never burst out
    /// of the pool at once.
    announce_next: usize,
    /// The generation whose announcements worker 0 last sent in full (0: none yet): the
    /// management thread computes the next lists against it, so a snapshot worker 0
    /// skipped (two published between its polls) cannot skip its announcements.
    announced_generation: u64,
    originate_tokens: u32,
    originate_refill_ms: u64,
    /// Per endpoint (by stable handle): what flows that already ended carried, new flows,
    /// refusals. Touched per new flow and per ended flow, never per packet.
    usage: reports::Usage,
    /// Usage reports and flow listings in progress (a budget per poll).
    reports: reports::Reports,
    /// Next flow slot to re-check against the current snapshot (None when done).
    revalidate: Option<u32>,
    /// The packet in hand was handed over by another worker (which counted it).
    handed_off: bool,
}

/// One flow, as listed for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub worker: u16,
    pub endpoint: u32,
    pub service: u32,
    pub proto: u8,
    pub consumer: (u32, u16),
    pub endpoint_addr: (u32, u16),
    pub snat: (u32, u16),
    pub target: (u32, u16),
    pub state: &'static str,
    pub packets: u64,
    pub bytes: u64,
    pub age_ms: u64,
    pub idle_ms: u64,
}

impl<F: Frame> std::fmt::Debug for Pipeline<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("worker", &self.id)
            .field("flows", &self.flows.len())
            .field("neighbours", &self.neighbours.len())
            .field("held", &self.held.len())
            .finish()
    }
}

/// Parsed facts about an IPv4 packet, copied out so the frame can be edited afterwards.
#[derive(Debug, Clone, Copy)]
struct Ip {
    l3: usize,
    header_len: usize,
    total_len: usize,
    src: u32,
    dst: u32,
    proto: u8,
    ttl: u8,
    /// Don't fragment.
    df: bool,
}

impl Ip {
    /// The flow key of this packet as it arrived on attachment `att`.
    #[inline]
    fn flow_key(&self, att: u16, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src_ip: self.src,
            dst_ip: self.dst,
            src_port: sport,
            dst_port: dport,
            vpc: att,
            proto: self.proto,
        }
    }
}

impl<F: Frame> Pipeline<F> {
    /// A pipeline for worker `id`, starting from snapshot `snap`, with a neighbour table
    /// of its own (one worker, tests, benchmarks).
    pub fn new(id: u16, settings: PipelineSettings, alloc: FrameAlloc<F>, snap: &Snapshot) -> Self {
        let table = Arc::new(NeighbourTable::new(
            settings.neighbour_capacity,
            settings.neighbour_timers,
        ));
        Self::with_neighbour_table(id, settings, alloc, snap, table)
    }

    /// A pipeline for worker `id` that shares `neighbours` with the other workers: a
    /// next hop any of them learns is known to all.
    pub fn with_neighbour_table(
        id: u16,
        settings: PipelineSettings,
        alloc: FrameAlloc<F>,
        snap: &Snapshot,
        neighbours: Arc<NeighbourTable>,
    ) -> Self {
        let flows = FlowTable::with_capacity(settings.flow_capacity, settings.timeouts);
        let seed = |salt: u64| {
            use std::hash::BuildHasher;
            let seed = settings
                .seed
                .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(id));
            crate::tables::maglev::mix64(seed ^ salt)
        };
        let neighbours = Neighbours::shared(neighbours);
        let hold = settings.hold_capacity;
        let mut p = Pipeline {
            id,
            snat: SnatPorts::new(id, settings.workers, settings.snat_quarantine, seed(1)),
            load: ConsumerLoad::new(settings.limits, settings.flow_capacity, seed(2)),
            flows,
            neighbours,
            held: VecDeque::with_capacity(hold),
            held_scratch: VecDeque::with_capacity(hold),
            emitted: Vec::with_capacity(256),
            counters: Counters::default(),
            alloc,
            last_tick_ms: 0,
            announce_next: 0,
            announced_generation: 0,
            originate_tokens: ORIGINATED_PER_SEC,
            originate_refill_ms: 0,
            usage: reports::Usage::new(),
            reports: reports::Reports::default(),
            revalidate: None,
            handed_off: false,
            settings,
        };
        p.on_snapshot(snap);
        p
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.counters
    }

    /// Copies gauges (active flows) into the counters before they are published.
    pub fn sync_gauges(&mut self) {
        self.counters.active_flows = self.flows.len() as u64;
    }

    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Frames the pipeline originated or released (ARP, held packets), with their port.
    pub fn drain_emitted(&mut self) -> std::vec::Drain<'_, (u16, F)> {
        self.emitted.drain(..)
    }

    /// A neighbour learned outside the packet path: recorded in the (shared) table as an
    /// ARP reply would be, and this worker's packets held for it go out.
    pub fn learn_remote(&mut self, snap: &Snapshot, n: NeighbourNews, now_ms: u64) {
        if self
            .neighbours
            .learn(n.attachment, n.ip, n.mac, now_ms)
            .is_usable()
        {
            self.release_held(snap, n.attachment, n.ip, n.mac);
        }
    }

    /// The neighbour table this worker uses (shared with the other workers).
    pub fn neighbour_table(&self) -> &Arc<NeighbourTable> {
        self.neighbours.table()
    }

    /// A new snapshot: install static neighbours, announce new addresses (worker 0 sends
    /// the gratuitous ARPs, once per address).
    pub fn on_snapshot(&mut self, snap: &Snapshot) {
        // Every flow is re-checked against the new version, a budget per poll.
        if !self.flows.is_empty() {
            self.revalidate = Some(0);
        }
        for (ai, a) in snap.attachments.iter().enumerate() {
            let Ok(ai) = u16::try_from(ai) else { continue };
            for &(ip, mac) in &a.static_neighbours {
                self.neighbours.add_static(ai, ip, mac);
            }
        }
        self.announce_next = 0;
    }

    /// Timer work, bounded per call: flow expiry, ARP retries, the hold queue.
    pub fn poll(&mut self, snap: &Snapshot, now_ms: u64) {
        // Another worker may have changed a MAC this one has cached.
        self.neighbours.sync();
        let Pipeline {
            counters,
            usage,
            load,
            snat,
            ..
        } = self;
        self.flows.expire(now_ms, self.settings.expire_budget, |f| {
            counters.expired_flows += 1;
            flow_gone(usage, load, snat, counters, f, now_ms);
        });
        self.flows.tidy_half_open(EVICT_BUDGET);
        self.reports_some(now_ms);
        if let Some(start) = self.revalidate {
            self.revalidate_some(snap, start, now_ms);
        }
        if self.id == 0 {
            self.announce_some(snap, now_ms);
        }
        if now_ms < self.last_tick_ms + TIMER_TICK_MS {
            return;
        }
        self.last_tick_ms = now_ms;
        let mut deferred = [None; crate::tables::neighbour::DEFERRED];
        let mut n = 0;
        self.neighbours.retry_deferred(now_ms, |att, ip, mac| {
            if let Some(d) = deferred.get_mut(n) {
                *d = Some((att, ip, mac));
                n += 1;
            }
        });
        for (att, ip, mac) in deferred.into_iter().flatten() {
            self.release_held(snap, att, ip, mac);
        }
        self.tick_held(snap, now_ms);
    }

    /// Looks every held packet's next hop up again: what another worker learned (the ARP
    /// reply may have arrived on its queue) releases them here; a retry that is due is
    /// sent (by whichever worker claims it first); a failed one drops them. Bounded by the
    /// hold queue's capacity.
    fn tick_held(&mut self, snap: &Snapshot, now_ms: u64) {
        if self.held.is_empty() {
            return;
        }
        let t = self.settings.neighbour_timers;
        let max_hold = t.retry_ms.saturating_mul(u64::from(t.tries) + 1);
        std::mem::swap(&mut self.held, &mut self.held_scratch);
        // Held packets mostly wait for one next hop: decide once per run of them.
        let mut last: Option<((u16, u32), Resolution)> = None;
        while let Some(mut h) = self.held_scratch.pop_front() {
            if now_ms.saturating_sub(h.since_ms) > max_hold {
                self.counters.drop(DropReason::NeighbourUnresolved);
                continue;
            }
            let hop = (h.attachment, h.next_hop);
            let r = match last {
                Some((k, r)) if k == hop => r,
                _ => {
                    let r = self.neighbours.resolve(hop.0, hop.1, now_ms);
                    if matches!(r, Resolution::Request | Resolution::Refresh(_)) {
                        if let Some(a) = snap.attachment(hop.0) {
                            let ip = a.ip;
                            self.send_arp(
                                a,
                                ArpOperation::REQUEST,
                                ip,
                                hop.1,
                                EthernetAddress::BROADCAST,
                                now_ms,
                            );
                        }
                    }
                    last = Some((hop, r));
                    r
                }
            };
            match r {
                Resolution::Known(mac) | Resolution::Refresh(mac) => {
                    match snap.attachment(hop.0).map(|a| a.port) {
                        Some(port) => {
                            EthernetFrame::new_unchecked(h.frame.bytes_mut())
                                .set_dst_addr(EthernetAddress(mac));
                            self.emitted.push((port, h.frame));
                        }
                        None => self.counters.drop(DropReason::NoAttachment),
                    }
                }
                Resolution::Request | Resolution::Pending => self.held.push_back(h),
                Resolution::Failed => self.counters.drop(DropReason::NeighbourUnresolved),
            }
        }
    }

    /// Runs one received packet through the path.
    pub fn process(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        mut frame: F,
        now_ms: u64,
    ) -> Verdict<F> {
        self.count_rx(&frame);
        if let Some(port) = self.fast_path(snap, in_port, &mut frame, now_ms) {
            return Verdict::Tx(port, frame);
        }
        self.full_path(snap, in_port, frame, now_ms)
    }

    /// Runs a packet that another worker received and handed over ([`Verdict::Handoff`]):
    /// as [`process`](Self::process), but not counted again in `rx_packets`/`rx_bytes`
    /// (the receiving worker did; `handoff_in` counts the arrival).
    pub fn process_handed_off(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        mut frame: F,
        now_ms: u64,
    ) -> Verdict<F> {
        if let Some(port) = self.fast_path(snap, in_port, &mut frame, now_ms) {
            return Verdict::Tx(port, frame);
        }
        self.handed_off = true;
        let v = self.full_path(snap, in_port, frame, now_ms);
        self.handed_off = false;
        v
    }

    #[inline]
    fn count_rx(&mut self, frame: &F) {
        self.counters.rx_packets += 1;
        self.counters.rx_bytes += frame.bytes().len() as u64;
    }

    /// Everything but the fast path, for a counted packet the fast path did not take.
    fn full_path(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        mut frame: F,
        now_ms: u64,
    ) -> Verdict<F> {
        if !frame.is_contiguous() {
            self.counters.drop(DropReason::MultiSegment);
            return Verdict::Done;
        }
        match self.classify(snap, in_port, &mut frame, now_ms) {
            Ok(Out::Tx(port)) => Verdict::Tx(port, frame),
            Ok(Out::Handoff(w)) => Verdict::Handoff(w, frame),
            Ok(Out::Consumed) => Verdict::Done,
            Ok(Out::Hold(attachment, next_hop)) => {
                self.hold(frame, attachment, next_hop, now_ms);
                Verdict::Done
            }
            Err(reason) => {
                self.counters.drop(reason);
                Verdict::Done
            }
        }
    }

    fn classify(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frame: &mut F,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let l2 = vlan::l2_header(frame.bytes()).map_err(|e| match e {
            crate::wire::Error::Unsupported => DropReason::UnsupportedEtherType,
            _ => DropReason::Malformed,
        })?;
        let att_idx = snap
            .attachment_of(in_port, l2.vlan_id)
            .ok_or(DropReason::NoAttachment)?;
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        // l2_header checked the Ethernet header's length already.
        let eth = EthernetFrame::new_unchecked(frame.bytes());
        let (dst_mac, src_mac) = (eth.dst_addr(), eth.src_addr());
        // No station sends from a group (or zero) address; answering one would reach a
        // whole group, or the whole VPC.
        if !src_mac.is_unicast() || src_mac == EthernetAddress::UNSPECIFIED {
            return Err(DropReason::Malformed);
        }
        let for_us = dst_mac.0 == att.mac;
        match l2.ethertype {
            EtherType::ARP => {
                if !for_us && !dst_mac.is_broadcast() {
                    return Err(DropReason::NotForUs);
                }
                self.arp(snap, att_idx, att, frame, l2.header_len, now_ms)
            }
            EtherType::IPV4 => {
                if !for_us {
                    return Err(DropReason::NotForUs);
                }
                self.ipv4(snap, att_idx, frame, l2.header_len, now_ms)
            }
            _ => Err(DropReason::UnsupportedEtherType),
        }
    }

    fn arp(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        att: &AttachmentView,
        frame: &mut F,
        l2_len: usize,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let bytes = frame.bytes_mut();
        let payload = bytes.get_mut(l2_len..).ok_or(DropReason::Malformed)?;
        let mut arp = ArpPacket::new_checked(payload).map_err(|_| DropReason::ArpIgnored)?;
        let op = arp.operation();
        let sender_ip = u32::from_be_bytes(arp.source_protocol_addr_bytes());
        let sender_mac = arp.source_hardware_addr();
        let target_ip = u32::from_be_bytes(arp.target_protocol_addr_bytes());
        // Zero and group addresses name no station: nothing to learn, nobody to answer.
        let station = sender_mac.is_unicast() && sender_mac != EthernetAddress::UNSPECIFIED;
        let sane_sender = sender_ip != 0 && att.on_link(sender_ip) && station;
        let asks_us = op == ArpOperation::REQUEST && snap.local(att_idx, target_ip).is_some();

        if sane_sender {
            // A reply, or a request addressed to us, is worth learning (the sender talks
            // to us); other requests only refresh what we already track.
            // The table is shared: every worker sees this at its next lookup, and
            // releases what it holds for it at its next tick.
            let learned = if op == ArpOperation::REPLY || asks_us {
                self.neighbours
                    .learn(att_idx, sender_ip, sender_mac.0, now_ms)
            } else {
                self.neighbours
                    .confirm(att_idx, sender_ip, sender_mac.0, now_ms)
            };
            if learned.is_usable() {
                self.release_held(snap, att_idx, sender_ip, sender_mac.0);
            }
        }
        if !asks_us || sender_ip == target_ip || !station {
            return if op == ArpOperation::REPLY && sane_sender {
                Ok(Out::Consumed)
            } else {
                Err(DropReason::ArpIgnored)
            };
        }
        arp.make_reply(EthernetAddress(att.mac))
            .map_err(|_| DropReason::Malformed)?;
        let mut eth = EthernetFrame::new_unchecked(frame.bytes_mut());
        eth.set_dst_addr(sender_mac);
        eth.set_src_addr(EthernetAddress(att.mac));
        // The request may have come unpadded (a kernel's tap); the reply leaves padded,
        // without whatever trailed the request's 28 bytes.
        let end = l2_len + crate::wire::arp::PACKET_LEN;
        if !frame.set_len(end) || !pad_frame(frame, l2_len > ethernet::HEADER_LEN) {
            return Err(DropReason::Malformed);
        }
        self.counters.arp_replies += 1;
        Ok(Out::Tx(att.port))
    }

    fn ipv4(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        l2_len: usize,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let ip = {
            let bytes = frame.bytes();
            let l3 = bytes.get(l2_len..).ok_or(DropReason::Malformed)?;
            let pkt = Ipv4Packet::new_checked(l3).map_err(|_| DropReason::Malformed)?;
            if !pkt.verify_checksum() {
                return Err(DropReason::BadChecksum);
            }
            if pkt.is_fragment() {
                return Err(DropReason::Fragment);
            }
            // Options only cost a look when there are some (the fast path takes none).
            if pkt.header_len() > ipv4::HEADER_LEN {
                match ipv4::judge_options(pkt.options()) {
                    OptionsVerdict::Harmless => {}
                    OptionsVerdict::Malformed => return Err(DropReason::BadIpOptions),
                    OptionsVerdict::SourceRoute => return Err(DropReason::SourceRoute),
                }
            }
            Ip {
                l3: l2_len,
                header_len: pkt.header_len(),
                total_len: usize::from(pkt.total_len()),
                src: pkt.src_addr_u32(),
                dst: pkt.dst_addr_u32(),
                proto: pkt.protocol().0,
                ttl: pkt.ttl(),
                df: pkt.dont_frag(),
            }
        };
        // Drop Ethernet padding so lengths below are the IP packet's own.
        if frame.bytes().len() > ip.l3 + ip.total_len && !frame.set_len(ip.l3 + ip.total_len) {
            return Err(DropReason::Malformed);
        }
        match snap.local(att_idx, ip.dst) {
            None => match snap.closed_endpoint(att_idx, ip.dst) {
                Some(e) => self.closed_endpoint(snap, att_idx, e, frame, &ip),
                None => Err(DropReason::UnknownDestination),
            },
            Some(LocalKind::Own) => self.answer_local(snap, att_idx, frame, &ip, None),
            Some(LocalKind::Endpoint(e)) => {
                let out = match ip.proto {
                    PROTO_TCP | PROTO_UDP => self.forward(snap, att_idx, frame, &ip, now_ms),
                    PROTO_ICMP => self.icmp_to_endpoint(snap, att_idx, e, frame, &ip, now_ms),
                    _ => Err(DropReason::NoListener),
                };
                // Drops are rare next to forwarded packets: attributing them to the
                // endpoint costs nothing on the forwarding path.
                if let (Err(reason), Some(ep)) = (&out, snap.endpoints.get(e as usize)) {
                    self.usage.entry(ep.handle).drops[*reason as usize] += 1;
                }
                out
            }
            Some(LocalKind::Snat(_)) => match ip.proto {
                PROTO_TCP | PROTO_UDP => self.reverse(snap, att_idx, frame, &ip, now_ms),
                PROTO_ICMP => self.icmp_to_snat(snap, att_idx, frame, &ip, now_ms),
                _ => Err(DropReason::NoFlow),
            },
        }
    }

    /// ICMP to an address of the appliance itself (own, endpoint, SNAT): answer echo
    /// requests. To an endpoint (`endpoint`), only from a consumer its security groups and
    /// policy would admit a new ICMP flow from.
    fn answer_local(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        endpoint: Option<&crate::tables::snapshot::EndpointView>,
    ) -> Result<Out, DropReason> {
        if ip.proto != PROTO_ICMP {
            return Err(DropReason::IcmpUnsupported);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        refuse_martian(snap, att_idx, ip.src)?;
        let bytes = frame.bytes_mut();
        let l4 = bytes
            .get_mut(ip.l3 + ip.header_len..ip.l3 + ip.total_len)
            .ok_or(DropReason::Malformed)?;
        let mut icmp = Icmpv4Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
        if icmp.msg_type() != Icmpv4Type::ECHO_REQUEST || icmp.code() != 0 {
            return Err(DropReason::IcmpUnsupported);
        }
        if !icmp.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
        if let Some(e) = endpoint {
            e.admits(ip.src, PROTO_ICMP, 0).map_err(refusal_reason)?;
        }
        icmp.make_echo_reply().map_err(|_| DropReason::Malformed)?;
        let mut pkt = Ipv4Packet::new_unchecked(&mut bytes[ip.l3..]);
        pkt.set_src_addr_bytes(ip.dst.to_be_bytes());
        pkt.set_dst_addr_bytes(ip.src.to_be_bytes());
        pkt.set_ttl(OWN_TTL);
        pkt.fill_checksum();
        reply_l2(bytes, att.mac);
        self.counters.echo_replies += 1;
        Ok(Out::Tx(att.port))
    }

    /// Consumer → endpoint: find or create the flow, translate, send to the target.
    fn forward(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let l4 = ip.l3 + ip.header_len;
        let seg = l4_ports(frame.bytes(), l4, ip)?;
        let flags = seg.tcp.map(|t| t.flags);
        let key = ip.flow_key(att_idx, seg.sport, seg.dport);
        // Established flows first: their listener, endpoint state and access rules were
        // checked when they were created, and every snapshot change re-checks live flows
        // (revalidate_some), so the per-packet path skips those lookups.
        let mut id = self.live_flow(self.flows.lookup_forward(&key), now_ms);
        if let (Some(fid), Some(f)) = (id, flags) {
            let reopen = f.is_connection_request()
                && self.flows.get(fid).is_some_and(|fl| fl.tcp.allows_reopen());
            if reopen {
                if let Some(old) = self.flows.remove(fid) {
                    self.flow_gone(&old, now_ms);
                }
                id = None;
            }
        }
        let id = match id {
            Some(id) => {
                if ip.ttl <= 1 {
                    return self.time_exceeded(snap, att_idx, frame, ip);
                }
                self.check_rst(id, true, &seg)?;
                id
            }
            None => {
                // An established flow cannot have a martian source (it was checked when
                // the flow was created), so only new flows pay for the check.
                refuse_martian(snap, att_idx, ip.src)?;
                let lref = snap
                    .listener(att_idx, ip.dst, ip.proto, seg.dport)
                    .ok_or(DropReason::NoListener)?;
                let endpoint = snap
                    .endpoints
                    .get(lref.endpoint as usize)
                    .ok_or(DropReason::NoListener)?;
                // Nothing goes back (time exceeded, RST) to a consumer the endpoint would
                // not admit: it must not learn more than silence.
                endpoint
                    .admits(ip.src, ip.proto, seg.dport)
                    .map_err(refusal_reason)?;
                if !endpoint.forwards {
                    // A segment of a connection the endpoint no longer carries (rejected,
                    // deleted: its flows were just ended) gets a RST, so the client stops at
                    // once even when the RST sent as the flow ended carried a stale
                    // sequence number (the client's ACK was still delayed).
                    if let Some(f) = flags.filter(|f| !f.is_connection_request()) {
                        return self.reset_unknown(
                            snap,
                            att_idx,
                            frame,
                            ip,
                            f,
                            DropReason::EndpointNotAvailable,
                        );
                    }
                    return Err(DropReason::EndpointNotAvailable);
                }
                if ip.ttl <= 1 {
                    return self.time_exceeded(snap, att_idx, frame, ip);
                }
                if let Some(f) = flags {
                    if !f.is_connection_request() {
                        return self.reset_unknown(snap, att_idx, frame, ip, f, DropReason::NoFlow);
                    }
                }
                self.new_flow(snap, key, lref, now_ms)?
            }
        };
        self.translate(snap, id, true, frame, ip, seg.tcp, now_ms)
    }

    /// Consumer → an endpoint that no longer answers (rejected, deleting): nothing is
    /// forwarded, but a segment of a connection whose flow just ended (a client that has
    /// not noticed) gets a RST at the number it expects, so it stops at once even when
    /// the RST sent as the flow ended carried a stale number (its ACK was still delayed).
    /// A consumer the endpoint would not admit gets silence.
    fn closed_endpoint(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        e: u32,
        frame: &mut F,
        ip: &Ip,
    ) -> Result<Out, DropReason> {
        let reason = DropReason::EndpointNotAvailable;
        if ip.proto != PROTO_TCP {
            return Err(reason);
        }
        let seg = l4_ports(frame.bytes(), ip.l3 + ip.header_len, ip)?;
        let endpoint = snap.endpoints.get(e as usize).ok_or(reason)?;
        refuse_martian(snap, att_idx, ip.src)?;
        endpoint
            .admits(ip.src, ip.proto, seg.dport)
            .map_err(refusal_reason)?;
        match seg.tcp.map(|t| t.flags) {
            Some(f) if !f.is_connection_request() => {
                self.reset_unknown(snap, att_idx, frame, ip, f, reason)
            }
            _ => Err(reason),
        }
    }

    /// Target → SNAT address: the reply path back to the consumer.
    fn reverse(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let l4 = ip.l3 + ip.header_len;
        let seg = l4_ports(frame.bytes(), l4, ip)?;
        let owner = self.snat.owner(seg.dport);
        if owner != self.id {
            frame.set_handoff_tag(0);
            return Ok(Out::Handoff(owner));
        }
        let key = ip.flow_key(att_idx, seg.sport, seg.dport);
        let Some(id) = self.live_flow(self.flows.lookup_reverse(&key), now_ms) else {
            if let Some(t) = seg.tcp {
                if !t.flags.rst {
                    return self.reset_unknown(
                        snap,
                        att_idx,
                        frame,
                        ip,
                        t.flags,
                        DropReason::NoFlow,
                    );
                }
            }
            return Err(DropReason::NoFlow);
        };
        if ip.ttl <= 1 {
            return self.time_exceeded(snap, att_idx, frame, ip);
        }
        self.check_rst(id, false, &seg)?;
        self.translate(snap, id, false, frame, ip, seg.tcp, now_ms)
    }

    /// Drops a RST outside the receiver's window (RFC 5961 §3): a blind RST must not end a
    /// flow, and the endpoint behind us would drop it anyway. Nothing else is checked.
    #[inline]
    fn check_rst(&self, id: FlowId, from_consumer: bool, seg: &L4) -> Result<(), DropReason> {
        if seg.tcp.is_some_and(|t| t.flags.rst) {
            let flow = self.flows.get(id).ok_or(DropReason::NoFlow)?;
            if !flow.rst_in_window(from_consumer, seg.seq) {
                return Err(DropReason::RstOutOfWindow);
            }
        }
        Ok(())
    }

    /// Records the packet on flow `id` and translates it for the other side: towards the
    /// provider src becomes the SNAT ip:port and dst the target; towards the consumer src
    /// becomes the endpoint ip:port and dst the consumer. A packet the egress cannot carry
    /// is answered (DF) or dropped instead; a SYN has its MSS clamped and its window scale
    /// noted.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn translate(
        &mut self,
        snap: &Snapshot,
        id: FlowId,
        from_consumer: bool,
        frame: &mut F,
        ip: &Ip,
        tcp: Option<TcpSeen>,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        // The packet's key is this side's; the other side's, seen from its end, has our
        // new source as its destination.
        let (this, other) = {
            let flow = self.flows.get(id).ok_or(DropReason::NoFlow)?;
            if from_consumer {
                (flow.fwd, flow.rev)
            } else {
                (flow.rev, flow.fwd)
            }
        };
        let egress = snap.attachment(other.vpc).ok_or(DropReason::NoAttachment)?;
        if ip.total_len > usize::from(egress.mtu) {
            return self.too_big(snap, this.vpc, frame, ip, egress.mtu);
        }
        if tcp.is_some_and(|t| t.flags.syn) {
            let clamp = snap
                .attachment(this.vpc)
                .and_then(|a| a.mss_clamp)
                .into_iter()
                .chain(egress.mss_clamp)
                .min();
            let seg = frame
                .bytes_mut()
                .get_mut(ip.l3 + ip.header_len..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let mut seg = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
            let offered = seg.syn_options().window_scale;
            if let Some(mss) = clamp {
                seg.clamp_mss(mss);
            }
            if let Some(flow) = self.flows.get_mut(id) {
                flow.note_window_scale(from_consumer, offered);
            }
        }
        let bytes32 = u32::try_from(ip.total_len).unwrap_or(u32::MAX);
        let flow = self.flows.get_mut(id).ok_or(DropReason::NoFlow)?;
        let changed = flow.record(now_ms, from_consumer, bytes32, tcp);
        if changed {
            self.half_open_changed(id);
        }
        let pkt = frame
            .bytes_mut()
            .get_mut(ip.l3..ip.l3 + ip.total_len)
            .ok_or(DropReason::Malformed)?;
        fast::rewrite(pkt, ip.header_len, &this, &other);
        self.route(snap, other.vpc, other.src_ip, frame, ip.l3, now_ms)
    }

    /// ICMP to a SNAT address: echo gets answered; an error about a translated flow (port
    /// unreachable, fragmentation needed, time exceeded) is translated back to the
    /// consumer so that path-MTU discovery works through the appliance.
    fn icmp_to_snat(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let err = match icmp_message(frame.bytes(), ip)? {
            IcmpIn::Echo => return self.answer_local(snap, att_idx, frame, ip, None),
            IcmpIn::Error(err) => err,
        };
        refuse_martian(snap, att_idx, ip.src)?;
        // The quoted packet is one we sent: src = SNAT ip:port, dst = target ip:port.
        let owner = self.snat.owner(err.sport);
        if owner != self.id {
            frame.set_handoff_tag(0);
            return Ok(Out::Handoff(owner));
        }
        let id = self
            .live_flow(self.flows.lookup_reverse(&err.flow_key(att_idx)), now_ms)
            .ok_or(DropReason::NoFlow)?;
        let fwd = self.flows.get(id).ok_or(DropReason::NoFlow)?.fwd;
        self.translate_icmp_error(snap, frame, ip, &err, &fwd, now_ms)
    }

    /// ICMP to an endpoint: echo gets answered (if the endpoint admits the consumer); an
    /// error about a translated flow (sent by a router or host on the consumer's side:
    /// fragmentation needed, port unreachable, time exceeded) is translated to the target,
    /// so path-MTU discovery works for the direction that carries most bytes.
    fn icmp_to_endpoint(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        endpoint: u32,
        frame: &mut F,
        ip: &Ip,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let err = match icmp_message(frame.bytes(), ip)? {
            IcmpIn::Echo => {
                let e = snap.endpoints.get(endpoint as usize);
                return self.answer_local(snap, att_idx, frame, ip, e);
            }
            IcmpIn::Error(err) => err,
        };
        refuse_martian(snap, att_idx, ip.src)?;
        // The quoted packet is one we sent: src = endpoint ip:port, dst = consumer ip:port.
        let Some(id) = self.live_flow(self.flows.lookup_forward(&err.flow_key(att_idx)), now_ms)
        else {
            return self.seek_flow_owner(frame);
        };
        let rev = self.flows.get(id).ok_or(DropReason::NoFlow)?.rev;
        self.translate_icmp_error(snap, frame, ip, &err, &rev, now_ms)
    }

    /// A consumer-side ICMP error whose flow this worker does not have. RSS spread the
    /// flow's packets by their own addresses and the error by the reporter's, so it may
    /// have reached any worker; nothing in it says which one owns the flow (unlike a
    /// SNAT port). Pass it round the workers: the one that received it marks it with its
    /// id, each asks the next, and the one before the first drops it.
    fn seek_flow_owner(&mut self, frame: &mut F) -> Result<Out, DropReason> {
        let n = self.settings.workers.max(1);
        let first = if self.handed_off {
            match frame.handoff_tag().checked_sub(1).map(u16::try_from) {
                Some(Ok(w)) if w < n => w,
                _ => return Err(DropReason::NoFlow),
            }
        } else {
            frame.set_handoff_tag(u32::from(self.id) + 1);
            self.id
        };
        let next = (self.id + 1) % n;
        if next == first {
            return Err(DropReason::NoFlow);
        }
        Ok(Out::Handoff(next))
    }

    /// Translates an ICMP error about flow packets for the flow's other side, whose key
    /// (as that side's packets arrive) is `other`: the outer header goes from our address
    /// there to that side's host, the quoted packet becomes the one that host sent.
    fn translate_icmp_error(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ip: &Ip,
        err: &IcmpError,
        other: &FlowKey,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let end = ip.l3 + ip.total_len;
        let bytes = frame.bytes_mut();
        {
            let mut pkt = Ipv4Packet::new_unchecked(&mut bytes[ip.l3..]);
            pkt.rewrite_src_addr(other.dst_ip.to_be_bytes());
            pkt.rewrite_dst_addr(other.src_ip.to_be_bytes());
            pkt.decrement_ttl();
        }
        let quoted = bytes
            .get_mut(err.quote_at..end)
            .ok_or(DropReason::Malformed)?;
        rewrite_quote(quoted, err, other);
        {
            let seg = bytes
                .get_mut(ip.l3 + ip.header_len..end)
                .ok_or(DropReason::Malformed)?;
            Icmpv4Packet::new_unchecked(seg).fill_checksum();
        }
        self.counters.icmp_errors_translated += 1;
        self.route(snap, other.vpc, other.src_ip, frame, ip.l3, now_ms)
    }

    /// A flow id if the flow is still alive; an expired one is removed on the spot.
    #[inline]
    fn live_flow(&mut self, id: Option<FlowId>, now_ms: u64) -> Option<FlowId> {
        let id = id?;
        if self.flows.is_expired(id, now_ms) {
            if let Some(old) = self.flows.remove(id) {
                self.flow_gone(&old, now_ms);
            }
            self.counters.expired_flows += 1;
            return None;
        }
        Some(id)
    }

    /// Creates the flow of `key` through listener `lref`: the per-consumer limits, a
    /// target, a SNAT port, a slot. Under pressure (a full table, an endpoint at its limit,
    /// a port range with no free port) the oldest half-open flow holding that resource is
    /// evicted first ([`new_flow_under_pressure`](Self::new_flow_under_pressure)); only
    /// when there is none (within [`EVICT_BUDGET`]) is the new flow refused, counted with
    /// the reason.
    ///
    /// The common case visits its endpoint's usage once and the client's two counters
    /// once. Measured (callgrind, 131072 SYNs into a 256k table, the benchmark's
    /// topology): ~1220 instructions per new flow from `forward` down, against ~1040
    /// before the limits, the half-open queue and the random SNAT draw (~70 of them the
    /// limits' bookkeeping, ~25 the queue, ~20 the draw); ~15 % more time per new flow.
    fn new_flow(
        &mut self,
        snap: &Snapshot,
        key: FlowKey,
        lref: ListenerRef,
        now_ms: u64,
    ) -> Result<FlowId, DropReason> {
        let (service, ti, mut rev, endpoint_handle) = self.plan_new_flow(snap, &key, lref)?;
        let tcp = key.proto == PROTO_TCP;
        let client = self.load.client_bucket(key.vpc, key.src_ip);
        if let Some(reason) = self.load.client_refusal(client, tcp) {
            return Err(reason);
        }
        let Pipeline {
            usage,
            load,
            snat,
            flows,
            counters,
            ..
        } = self;
        let u = usage.entry(endpoint_handle);
        let pressed = flows.is_full() || load.endpoint_refusal(&u.load, tcp).is_some();
        let port = if pressed {
            None
        } else {
            snat.pick(&rev, now_ms, |k| flows.contains_reverse(k))
        };
        let Some(port) = port else {
            return self.new_flow_under_pressure(snap, key, lref, now_ms);
        };
        rev.dst_port = port;
        let flow = new_flow_record(key, rev, service.handle, lref, ti, endpoint_handle, now_ms);
        let id = flows.insert(flow).map_err(|_| DropReason::FlowTableFull)?;
        counters.new_flows += 1;
        u.new_flows += 1;
        load.flow_created(client, &mut u.load, tcp);
        Ok(id)
    }

    /// What a new flow of `key` through `lref` would be: its service, target index,
    /// reverse key (SNAT port still 0) and endpoint handle.
    #[inline]
    fn plan_new_flow<'s>(
        &self,
        snap: &'s Snapshot,
        key: &FlowKey,
        lref: ListenerRef,
    ) -> Result<(&'s crate::tables::snapshot::ServiceView, u16, FlowKey, u32), DropReason> {
        let (service, ti, rev) = plan_flow(snap, key, lref, self.settings.flow_hash_seed)?;
        let endpoint_handle = snap
            .endpoints
            .get(lref.endpoint as usize)
            .map_or(0, |e| e.handle);
        Ok((service, ti, rev, endpoint_handle))
    }

    /// [`new_flow`](Self::new_flow) when a resource is short: evictions first, then the
    /// refusal. Rare (a flood, a port range full, an endpoint at its limit), so kept out
    /// of the common path's code.
    #[cold]
    #[inline(never)]
    fn new_flow_under_pressure(
        &mut self,
        snap: &Snapshot,
        key: FlowKey,
        lref: ListenerRef,
        now_ms: u64,
    ) -> Result<FlowId, DropReason> {
        let (service, ti, mut rev, endpoint_handle) = self.plan_new_flow(snap, &key, lref)?;
        let tcp = key.proto == PROTO_TCP;
        let endpoint_load = self.usage.get(endpoint_handle).map(|u| u.load);
        let refusal = self
            .load
            .endpoint_refusal(&endpoint_load.unwrap_or_default(), tcp);
        if let Some(reason) = refusal {
            // One of the endpoint's own half-open flows makes room, or it is refused.
            if !self.evict(|f| f.endpoint == endpoint_handle) {
                return Err(reason);
            }
        }
        let flows = &self.flows;
        rev.dst_port = match self.snat.pick(&rev, now_ms, |k| flows.contains_reverse(k)) {
            Some(port) => port,
            None => {
                // Every port drawn towards this target is taken: free the port of the
                // range's oldest half-open flow, which needs no quarantine.
                let range = rev;
                let same_range = |f: &Flow| {
                    let r = &f.rev;
                    (r.src_ip, r.src_port, r.dst_ip, r.vpc, r.proto)
                        == (
                            range.src_ip,
                            range.src_port,
                            range.dst_ip,
                            range.vpc,
                            range.proto,
                        )
                };
                let freed = self.flows.evict_half_open(EVICT_BUDGET, same_range);
                let Some(old) = freed else {
                    return Err(DropReason::SnatExhausted);
                };
                self.evicted(&old);
                old.rev.dst_port
            }
        };
        if self.flows.is_full() && !self.evict(|_| true) {
            return Err(DropReason::FlowTableFull);
        }
        let flow = new_flow_record(key, rev, service.handle, lref, ti, endpoint_handle, now_ms);
        let Ok(id) = self.flows.insert(flow) else {
            return Err(DropReason::FlowTableFull);
        };
        self.counters.new_flows += 1;
        let client = self.load.client_bucket(key.vpc, key.src_ip);
        let u = self.usage.entry(endpoint_handle);
        u.new_flows += 1;
        self.load.flow_created(client, &mut u.load, tcp);
        Ok(id)
    }

    /// Flow `id` entered or left half-open (its handshake completed, or it was reset):
    /// its client's and endpoint's gauges follow. Once per TCP flow, never per packet.
    #[cold]
    #[inline(never)]
    fn half_open_changed(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get(id) {
            let u = self.usage.entry(f.endpoint);
            self.load.half_open_changed(f, &mut u.load);
        }
    }

    /// Evicts the oldest half-open flow for which `wanted` holds; false when there is none
    /// within [`EVICT_BUDGET`] places of the half-open queue.
    fn evict(&mut self, wanted: impl FnMut(&Flow) -> bool) -> bool {
        match self.flows.evict_half_open(EVICT_BUDGET, wanted) {
            Some(old) => {
                self.evicted(&old);
                true
            }
            None => false,
        }
    }

    /// Bookkeeping of an evicted flow. No quarantine for its port: it never got past the
    /// handshake, and its port is what the eviction is for. No RST either: under a flood
    /// its consumer address is spoofed, and a real client retransmits its SYN.
    fn evicted(&mut self, old: &Flow) {
        let u = self.usage.fold(old);
        self.load.flow_ended(old, &mut u.load);
        self.counters.evicted_half_open += 1;
    }

    /// Bookkeeping of a flow that ended (expired, replaced, ended by a change).
    fn flow_gone(&mut self, old: &Flow, now_ms: u64) {
        flow_gone(
            &mut self.usage,
            &mut self.load,
            &mut self.snat,
            &mut self.counters,
            old,
            now_ms,
        );
    }

    /// The SNAT port [`SnatPorts::pick`] tries first for the `k`-th new flow from now
    /// (k >= 1): what the burst path prefetches for.
    #[inline]
    fn snat_port_guess(&self, k: u16) -> u16 {
        self.snat.guess(k)
    }

    /// Sets the L2 header for `att` and finds the next hop's MAC (or holds the packet).
    fn route(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        dst: u32,
        frame: &mut F,
        l3: usize,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        // Translations check the MTU before they rewrite (so a DF packet can be answered);
        // this catches what they cannot answer for, such as a long translated ICMP error.
        if frame.bytes().len().saturating_sub(l3) > usize::from(att.mtu) {
            return Err(DropReason::TooBig);
        }
        let next_hop = att.next_hop(dst).ok_or(DropReason::NeighbourUnresolved)?;
        set_l2(frame, l3, att)?;
        match self.neighbours.resolve(att_idx, next_hop, now_ms) {
            Resolution::Refresh(mac) => {
                self.send_arp(
                    att,
                    ArpOperation::REQUEST,
                    att.ip,
                    next_hop,
                    EthernetAddress::BROADCAST,
                    now_ms,
                );
                EthernetFrame::new_unchecked(frame.bytes_mut()).set_dst_addr(EthernetAddress(mac));
                Ok(Out::Tx(att.port))
            }
            Resolution::Known(mac) => {
                EthernetFrame::new_unchecked(frame.bytes_mut()).set_dst_addr(EthernetAddress(mac));
                Ok(Out::Tx(att.port))
            }
            Resolution::Request => {
                self.send_arp(
                    att,
                    ArpOperation::REQUEST,
                    att.ip,
                    next_hop,
                    EthernetAddress::BROADCAST,
                    now_ms,
                );
                Ok(Out::Hold(att_idx, next_hop))
            }
            Resolution::Pending => Ok(Out::Hold(att_idx, next_hop)),
            Resolution::Failed => Err(DropReason::NeighbourUnresolved),
        }
    }

    fn hold(&mut self, frame: F, attachment: u16, next_hop: u32, now_ms: u64) {
        if self.held.len() >= self.settings.hold_capacity {
            self.counters.drop(DropReason::NeighbourUnresolved);
            return;
        }
        self.held.push_back(Held {
            frame,
            attachment,
            next_hop,
            since_ms: now_ms,
        });
    }

    fn release_held(&mut self, snap: &Snapshot, att_idx: u16, ip: u32, mac: [u8; 6]) {
        if self.held.is_empty() {
            return;
        }
        let port = snap.attachment(att_idx).map(|a| a.port);
        std::mem::swap(&mut self.held, &mut self.held_scratch);
        while let Some(mut h) = self.held_scratch.pop_front() {
            if h.attachment == att_idx && h.next_hop == ip {
                if let Some(port) = port {
                    EthernetFrame::new_unchecked(h.frame.bytes_mut())
                        .set_dst_addr(EthernetAddress(mac));
                    self.emitted.push((port, h.frame));
                }
            } else {
                self.held.push_back(h);
            }
        }
    }

    /// Sends an ARP packet from `att` (request: `target_mac` broadcast).
    fn send_arp(
        &mut self,
        att: &AttachmentView,
        op: ArpOperation,
        sender_ip: u32,
        target_ip: u32,
        target_mac: EthernetAddress,
        _now_ms: u64,
    ) {
        let Some(mut f) = (self.alloc)() else {
            self.counters.drop(DropReason::NoMbuf);
            return;
        };
        let l2_len = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let len = l2_len + crate::wire::arp::PACKET_LEN;
        // A buffer too small for 64 bytes is as good as none.
        if !f.set_len(len) || !pad_frame(&mut f, att.vlan.is_some()) {
            self.counters.drop(DropReason::NoMbuf);
            return;
        }
        let bytes = f.bytes_mut();
        write_l2(bytes, att, EthernetAddress::BROADCAST, EtherType::ARP);
        let mut arp = ArpPacket::new_unchecked(&mut bytes[l2_len..]);
        arp.set_hardware_type(1);
        arp.set_protocol_type(EtherType::IPV4);
        arp.set_hardware_len(6);
        arp.set_protocol_len(4);
        arp.set_operation(op);
        arp.set_source_hardware_addr(EthernetAddress(att.mac));
        arp.set_source_protocol_addr(sender_ip.into());
        arp.set_target_hardware_addr(if op == ArpOperation::REQUEST {
            EthernetAddress::UNSPECIFIED
        } else {
            target_mac
        });
        arp.set_target_protocol_addr(target_ip.into());
        self.counters.arp_requests += 1;
        self.emitted.push((att.port, f));
    }

    /// Gratuitous ARPs for addresses new in this snapshot, a few per poll.
    fn announce_some(&mut self, snap: &Snapshot, now_ms: u64) {
        const PER_POLL: usize = 16;
        let list = &snap.announce;
        let end = (self.announce_next + PER_POLL).min(list.len());
        for &(att, ip) in &list[self.announce_next..end] {
            if let Some(a) = snap.attachment(att) {
                self.send_arp(
                    a,
                    ArpOperation::REQUEST,
                    ip,
                    ip,
                    EthernetAddress::BROADCAST,
                    now_ms,
                );
            }
        }
        self.announce_next = end;
        if end == list.len() {
            self.announced_generation = snap.generation;
        }
    }

    /// The generation whose gratuitous ARPs this worker (worker 0) last sent in full.
    pub fn announced_generation(&self) -> u64 {
        self.announced_generation
    }

    /// Re-checks a budget of flow slots from `start` against `snap`; flows whose endpoint,
    /// target or access rules no longer admit them are ended.
    fn revalidate_some(&mut self, snap: &Snapshot, start: u32, now_ms: u64) {
        let cap = u32::try_from(self.flows.capacity()).unwrap_or(u32::MAX);
        let budget = u32::try_from(self.settings.expire_budget.max(1) * 4).unwrap_or(256);
        let end = start.saturating_add(budget).min(cap);
        for id in start..end {
            let Some(flow) = self.flows.get(id).copied() else {
                continue;
            };
            if !flow_still_admitted(snap, &flow) {
                self.end_flow(snap, id, now_ms);
            }
        }
        self.revalidate = (end < cap).then_some(end);
    }

    /// Ends flow `id` now: removes it and, for TCP, resets both sides with sequence
    /// numbers they accept (the last acknowledgement each side sent).
    fn end_flow(&mut self, snap: &Snapshot, id: FlowId, now_ms: u64) {
        let Some(flow) = self.flows.remove(id) else {
            return;
        };
        self.flow_gone(&flow, now_ms);
        self.counters.drop(DropReason::FlowEnded);
        let open = !matches!(
            flow.tcp,
            crate::tables::flow::TcpState::Closed
                | crate::tables::flow::TcpState::TimeWaitConsumer
                | crate::tables::flow::TcpState::TimeWaitProvider
        );
        if flow.fwd.proto != PROTO_TCP || !open {
            return;
        }
        let (f, r) = (flow.fwd, flow.rev);
        // To the consumer, from the endpoint.
        self.send_rst(
            snap,
            f.vpc,
            (f.dst_ip, f.dst_port),
            (f.src_ip, f.src_port),
            flow.ack_fwd,
            now_ms,
        );
        // To the target, from the SNAT address.
        self.send_rst(
            snap,
            r.vpc,
            (r.dst_ip, r.dst_port),
            (r.src_ip, r.src_port),
            flow.ack_rev,
            now_ms,
        );
    }

    fn send_rst(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        from: (u32, u16),
        to: (u32, u16),
        seq: u32,
        now_ms: u64,
    ) {
        let Some(att) = snap.attachment(att_idx) else {
            return;
        };
        let Some(mut f) = (self.alloc)() else {
            self.counters.drop(DropReason::NoMbuf);
            return;
        };
        let l3 = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let tcp_len = crate::wire::tcp::HEADER_LEN;
        // A buffer too small for 64 bytes is as good as none.
        if !f.set_len(l3 + crate::wire::ipv4::HEADER_LEN + tcp_len)
            || !pad_frame(&mut f, att.vlan.is_some())
        {
            self.counters.drop(DropReason::NoMbuf);
            return;
        }
        let rst = crate::wire::tcp::TcpRepr {
            src_port: from.1,
            dst_port: to.1,
            seq_number: seq,
            ack_number: 0,
            flags: crate::wire::tcp::TcpFlags::RST,
            window_len: 0,
            urgent_at: 0,
        };
        if !write_rst(&mut f.bytes_mut()[l3..], from.0, to.0, &rst) {
            return;
        }
        self.counters.rst_sent += 1;
        match self.route(snap, att_idx, to.0, &mut f, l3, now_ms) {
            Ok(Out::Tx(port)) => self.emitted.push((port, f)),
            Ok(Out::Hold(a, nh)) => self.hold(f, a, nh, now_ms),
            _ => {}
        }
    }

    fn may_originate(&mut self) -> bool {
        let now = self.last_tick_ms;
        if now >= self.originate_refill_ms + 1000 {
            self.originate_refill_ms = now;
            self.originate_tokens = ORIGINATED_PER_SEC;
        }
        if self.originate_tokens == 0 {
            return false;
        }
        self.originate_tokens -= 1;
        true
    }

    /// Answers a TCP segment that matches no flow with a RST from the address it was sent
    /// to (RFC 793, "reset generation"), and counts the drop.
    #[allow(clippy::too_many_arguments)]
    fn reset_unknown(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        flags: TcpFlags,
        reason: DropReason,
    ) -> Result<Out, DropReason> {
        if flags.rst || !self.may_originate() {
            return Err(reason);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let l4 = ip.l3 + ip.header_len;
        let rst = {
            let bytes = frame.bytes();
            let seg = bytes
                .get(l4..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let tcp = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
            crate::wire::tcp::TcpRepr::rst_reply(&tcp).map_err(|_| DropReason::NoFlow)?
        };
        let new_len = ip.l3 + crate::wire::ipv4::HEADER_LEN + crate::wire::tcp::HEADER_LEN;
        if !frame.set_len(new_len) {
            return Err(DropReason::Malformed);
        }
        let bytes = frame.bytes_mut();
        if !write_rst(&mut bytes[ip.l3..], ip.dst, ip.src, &rst) {
            return Err(DropReason::Malformed);
        }
        reply_l2(bytes, att.mac);
        if !pad_frame(frame, ip.l3 > ethernet::HEADER_LEN) {
            return Err(DropReason::Malformed);
        }
        self.counters.rst_sent += 1;
        self.counters.drop(reason);
        Ok(Out::Tx(att.port))
    }

    /// Answers a packet whose TTL ran out here with ICMP time exceeded from our address on
    /// the attachment it came from, and counts the drop.
    fn time_exceeded(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
    ) -> Result<Out, DropReason> {
        self.icmp_error_back(snap, att_idx, frame, ip, None)
    }

    /// A packet larger than its egress MTU `mtu`: with DF, answered with ICMP
    /// fragmentation needed carrying that MTU (RFC 1191) from our address on the
    /// attachment it came from; without, dropped, since privlink does not fragment.
    fn too_big(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        mtu: u16,
    ) -> Result<Out, DropReason> {
        if !ip.df {
            return Err(DropReason::TooBig);
        }
        self.icmp_error_back(snap, att_idx, frame, ip, Some(mtu))
    }

    /// Turns `frame` into an ICMP error about it, back to its sender from our address on
    /// `att_idx`: time exceeded, or fragmentation needed with `frag_needed` as the
    /// next-hop MTU. Rate-limited; the packet's drop is counted either way.
    fn icmp_error_back(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        frag_needed: Option<u16>,
    ) -> Result<Out, DropReason> {
        let reason = match frag_needed {
            None => DropReason::TtlExceeded,
            Some(_) => DropReason::FragNeeded,
        };
        if !self.may_originate() {
            return Err(reason);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let mut quote = [0u8; 60 + icmpv4::QUOTE_PAYLOAD_LEN];
        let qlen = {
            let bytes = frame.bytes();
            let orig = bytes
                .get(ip.l3..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let q = icmpv4::quote_of(orig).map_err(|_| reason)?;
            quote[..q.len()].copy_from_slice(q);
            q.len()
        };
        let icmp_len = 8 + qlen;
        let new_len = ip.l3 + crate::wire::ipv4::HEADER_LEN + icmp_len;
        if !frame.set_len(new_len) {
            return Err(reason);
        }
        let bytes = frame.bytes_mut();
        write_own_ipv4(&mut bytes[ip.l3..], att.ip, ip.src, PROTO_ICMP, icmp_len);
        let seg = &mut bytes[ip.l3 + crate::wire::ipv4::HEADER_LEN..];
        let quote = &quote[..qlen];
        match frag_needed {
            None => icmpv4::emit_time_exceeded(seg, icmpv4::time_exceeded::TTL, quote),
            Some(mtu) => {
                icmpv4::emit_dst_unreachable(seg, icmpv4::unreachable::FRAG_NEEDED, mtu, quote)
            }
        }
        .map_err(|_| reason)?;
        reply_l2(bytes, att.mac);
        self.counters.icmp_errors_sent += 1;
        self.counters.drop(reason);
        Ok(Out::Tx(att.port))
    }
}

/// A new flow's record: translation, ids of the snapshot it was admitted by.
#[allow(clippy::too_many_arguments)]
#[inline]
fn new_flow_record(
    key: FlowKey,
    rev: FlowKey,
    service: u32,
    lref: ListenerRef,
    target: u16,
    endpoint: u32,
    now_ms: u64,
) -> Flow {
    let mut flow = Flow::new(key, rev, now_ms);
    flow.service = service;
    flow.listener = lref.listener;
    flow.target = u32::from(target);
    flow.endpoint = endpoint;
    flow
}

/// Everything a flow's end changes besides the table: its endpoint's usage, the
/// per-consumer gauges, the quarantine of its SNAT port.
fn flow_gone(
    usage: &mut reports::Usage,
    load: &mut ConsumerLoad,
    snat: &mut SnatPorts,
    counters: &mut Counters,
    f: &Flow,
    now_ms: u64,
) {
    let u = usage.fold(f);
    load.flow_ended(f, &mut u.load);
    if !snat.flow_ended(f, now_ms) {
        counters.snat_quarantine_full += 1;
    }
}

/// Whether what admitted `flow` still stands in `snap`: its endpoint exists and forwards,
/// its target is still in the listener (registered or draining), and the endpoint's
/// security groups and policy still admit it.
fn flow_still_admitted(snap: &Snapshot, flow: &Flow) -> bool {
    let (f, r) = (&flow.fwd, &flow.rev);
    let Some(e) = snap.endpoint_by_handle(flow.endpoint) else {
        return false;
    };
    if !e.forwards || e.ip != f.dst_ip {
        return false;
    }
    let Some(s) = snap.service_by_handle(flow.service) else {
        return false;
    };
    s.has_target(f.proto, f.dst_port, r.src_ip, r.src_port)
        && s.snat.contains(&r.dst_ip)
        && e.admits(f.src_ip, f.proto, f.dst_port).is_ok()
}

fn tcp_state_name(s: crate::tables::flow::TcpState) -> &'static str {
    use crate::tables::flow::TcpState as T;
    match s {
        T::SynSent => "syn-sent",
        T::SynReceived => "syn-received",
        T::Established => "established",
        T::FinWaitConsumer | T::FinWaitProvider => "fin-wait",
        T::ClosingConsumer | T::ClosingProvider => "closing",
        T::TimeWaitConsumer | T::TimeWaitProvider => "time-wait",
        T::Closed => "closed",
    }
}

/// Internal outcome of classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Tx(u16),
    Handoff(u16),
    Hold(u16, u32),
    Consumed,
}

/// What the full path reads from a TCP/UDP header.
#[derive(Debug, Clone, Copy)]
struct L4 {
    sport: u16,
    dport: u16,
    /// TCP: what flow tracking records.
    tcp: Option<TcpSeen>,
    /// TCP: the sequence number (a RST's is checked against the window).
    seq: u32,
}

/// Ports (and what TCP tracking needs) of a TCP/UDP packet.
#[inline]
fn l4_ports(bytes: &[u8], l4: usize, ip: &Ip) -> Result<L4, DropReason> {
    let seg = bytes
        .get(l4..ip.l3 + ip.total_len)
        .ok_or(DropReason::Malformed)?;
    if ip.proto == PROTO_TCP {
        let tcp = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        Ok(L4 {
            sport: tcp.src_port(),
            dport: tcp.dst_port(),
            tcp: Some(TcpSeen {
                flags: TcpFlags::from_bits(tcp.flags().bits()),
                ack: tcp.ack_number(),
                window: tcp.window_len(),
            }),
            seq: tcp.seq_number(),
        })
    } else {
        let udp = UdpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        Ok(L4 {
            sport: udp.src_port(),
            dport: udp.dst_port(),
            tcp: None,
            seq: 0,
        })
    }
}

/// The drop reason of an access-rule refusal.
#[inline]
fn refusal_reason(r: Refusal) -> DropReason {
    match r {
        Refusal::SecurityGroup => DropReason::SecurityGroup,
        Refusal::Policy => DropReason::Policy,
    }
}

/// Whether `src` cannot be the address of a host that talks to us on attachment
/// `att_idx`: RFC 1812 §5.3.7's martians (0/8 "this network", 127/8 loopback, 224/4
/// multicast, 240/4 reserved, which holds the limited broadcast), the attachment
/// prefix's network and broadcast addresses, and every address the appliance itself
/// answers for there (its own, endpoints', SNAT addresses): packets "from" those are
/// spoofed or looped. Asked per new flow and per packet to a local address, never on the
/// fast path.
fn martian_source(snap: &Snapshot, att_idx: u16, att: &AttachmentView, src: u32) -> bool {
    let first = src >> 24;
    first == 0
        || first == 127
        || first >= 224
        || src == att.ip & att.mask
        || src == att.ip | !att.mask
        || snap.local(att_idx, src).is_some()
}

/// [`martian_source`] as a drop.
#[inline]
fn refuse_martian(snap: &Snapshot, att_idx: u16, src: u32) -> Result<(), DropReason> {
    let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
    if martian_source(snap, att_idx, att, src) {
        return Err(DropReason::MartianSource);
    }
    Ok(())
}

/// An ICMP message to one of our addresses, as far as the packet path handles it.
#[derive(Debug, Clone, Copy)]
enum IcmpIn {
    /// An echo request (its checksum is checked when it is answered).
    Echo,
    /// A destination-unreachable or time-exceeded error quoting a TCP or UDP packet.
    Error(IcmpError),
}

/// What translating an ICMP error needs of the packet it quotes: a packet the appliance
/// sent (from our address on this side to a host here).
#[derive(Debug, Clone, Copy)]
struct IcmpError {
    /// Offset of the quoted IPv4 header in the frame.
    quote_at: usize,
    /// The quoted header's length.
    quote_header_len: usize,
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
}

impl IcmpError {
    /// The key the flow's packets from the host that got the quoted packet arrive with
    /// on attachment `att` (the quote reversed).
    #[inline]
    fn flow_key(&self, att: u16) -> FlowKey {
        FlowKey {
            src_ip: self.dst,
            dst_ip: self.src,
            src_port: self.dport,
            dst_port: self.sport,
            vpc: att,
            proto: self.proto,
        }
    }
}

/// Reads the ICMP message of `ip`. Errors are checksum-verified before anything else is
/// believed (a corrupted quote could name another flow); echo is verified by the reply.
fn icmp_message(bytes: &[u8], ip: &Ip) -> Result<IcmpIn, DropReason> {
    let l4 = ip.l3 + ip.header_len;
    let seg = bytes
        .get(l4..ip.l3 + ip.total_len)
        .ok_or(DropReason::Malformed)?;
    let icmp = Icmpv4Packet::new_checked(seg).map_err(|_| DropReason::Malformed)?;
    let t = icmp.msg_type();
    if t == Icmpv4Type::ECHO_REQUEST {
        return Ok(IcmpIn::Echo);
    }
    if t != Icmpv4Type::DST_UNREACHABLE && t != Icmpv4Type::TIME_EXCEEDED {
        return Err(DropReason::IcmpUnsupported);
    }
    if !icmp.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    let q = icmp.quote().map_err(|_| DropReason::Malformed)?;
    let proto = q.protocol().0;
    let qp = q.payload();
    if qp.len() < 4 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return Err(DropReason::IcmpUnsupported);
    }
    Ok(IcmpIn::Error(IcmpError {
        quote_at: l4 + icmpv4::HEADER_LEN,
        quote_header_len: q.header_len(),
        proto,
        src: q.src_addr_u32(),
        dst: q.dst_addr_u32(),
        sport: u16::from_be_bytes([qp[0], qp[1]]),
        dport: u16::from_be_bytes([qp[2], qp[3]]),
    }))
}

/// Makes the quoted packet `quoted` (IPv4 header and the first bytes of its TCP/UDP
/// segment) the one `other`'s host sent: from `other`'s source to its destination. The
/// quoted header checksum and, when the quote reaches it, the quoted TCP/UDP checksum
/// are updated incrementally, so they are what that host computed (a UDP checksum of 0,
/// "none", stays 0).
fn rewrite_quote(quoted: &mut [u8], err: &IcmpError, other: &FlowKey) {
    let hl = err.quote_header_len;
    if quoted.len() < hl + 4 {
        return;
    }
    {
        let mut q = Ipv4Packet::new_unchecked(&mut *quoted);
        q.rewrite_src_addr(other.src_ip.to_be_bytes());
        q.rewrite_dst_addr(other.dst_ip.to_be_bytes());
    }
    let old = [
        err.src.to_be_bytes(),
        err.dst.to_be_bytes(),
        ((u32::from(err.sport) << 16) | u32::from(err.dport)).to_be_bytes(),
    ];
    let new = [
        other.src_ip.to_be_bytes(),
        other.dst_ip.to_be_bytes(),
        ((u32::from(other.src_port) << 16) | u32::from(other.dst_port)).to_be_bytes(),
    ];
    let seg = &mut quoted[hl..];
    seg[0..4].copy_from_slice(&new[2]);
    let at = if err.proto == PROTO_UDP { 6 } else { 16 };
    if let Some(c) = seg.get_mut(at..at + 2) {
        let mut csum = u16::from_be_bytes([c[0], c[1]]);
        if err.proto == PROTO_TCP || csum != 0 {
            for (o, n) in old.iter().zip(&new) {
                csum = checksum::update_u32(csum, *o, *n);
            }
            if err.proto == PROTO_UDP {
                csum = checksum::udp_nonzero(csum);
            }
            c.copy_from_slice(&csum.to_be_bytes());
        }
    }
}

/// Where a new flow of `key` through listener `lref` goes: its service, the index of the
/// chosen target (Maglev over the key hash under `seed`, the daemon's per-start secret, so
/// every worker agrees and no client can aim at a target), and its reverse key with the
/// SNAT port still 0.
#[inline]
fn plan_flow<'s>(
    snap: &'s Snapshot,
    key: &FlowKey,
    lref: ListenerRef,
    seed: u64,
) -> Result<(&'s crate::tables::snapshot::ServiceView, u16, FlowKey), DropReason> {
    let service = snap
        .services
        .get(lref.service as usize)
        .ok_or(DropReason::NoListener)?;
    let listener = service
        .listeners
        .get(usize::from(lref.listener))
        .ok_or(DropReason::NoListener)?;
    let hash = key.hash_with_seed(seed);
    let ti = listener.maglev.pick(hash).ok_or(DropReason::NoTarget)?;
    let target = listener
        .targets
        .get(usize::from(ti))
        .ok_or(DropReason::NoTarget)?;
    if service.snat.is_empty() {
        return Err(DropReason::SnatExhausted);
    }
    let snat_ip = service.snat[(hash >> 32) as usize % service.snat.len()];
    let rev = FlowKey {
        src_ip: target.ip,
        dst_ip: snat_ip,
        src_port: target.port,
        dst_port: 0,
        vpc: service.attachment,
        proto: key.proto,
    };
    Ok((service, ti, rev))
}

/// Makes the L2 header in front of the L3 packet at `l3` the one of attachment `att`
/// (source our MAC, VLAN tag as the attachment wants, destination filled in later).
#[inline]
fn set_l2<F: Frame>(frame: &mut F, l3: usize, att: &AttachmentView) -> Result<(), DropReason> {
    let want = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
    if want > l3 {
        if !frame.push_front(want - l3) {
            return Err(DropReason::Malformed);
        }
    } else if want < l3 && !frame.pull_front(l3 - want) {
        return Err(DropReason::Malformed);
    }
    write_l2(
        frame.bytes_mut(),
        att,
        EthernetAddress::UNSPECIFIED,
        EtherType::IPV4,
    );
    Ok(())
}

/// Writes an Ethernet (and 802.1Q when the attachment has a VLAN) header at the front.
#[inline]
fn write_l2(bytes: &mut [u8], att: &AttachmentView, dst: EthernetAddress, ethertype: EtherType) {
    let mut eth = EthernetFrame::new_unchecked(&mut *bytes);
    eth.set_dst_addr(dst);
    eth.set_src_addr(EthernetAddress(att.mac));
    match att.vlan {
        None => eth.set_ethertype(ethertype),
        Some(vid) => {
            eth.set_ethertype(EtherType::VLAN);
            let mut tag = vlan::VlanTag::new_unchecked(&mut bytes[ethernet::HEADER_LEN..]);
            tag.set_tci(vid);
            tag.set_ethertype(ethertype);
        }
    }
}

/// Turns the L2 header around for a reply on the same attachment.
#[inline]
fn reply_l2(bytes: &mut [u8], our_mac: [u8; 6]) {
    let mut eth = EthernetFrame::new_unchecked(bytes);
    let peer = eth.src_addr();
    eth.set_dst_addr(peer);
    eth.set_src_addr(EthernetAddress(our_mac));
}

/// Pads a frame the appliance originates with zeros to the shortest Ethernet frame
/// ([`MIN_FRAME_LEN`], plus the tag when `tagged`); false if it cannot grow.
fn pad_frame<F: Frame>(frame: &mut F, tagged: bool) -> bool {
    let min = MIN_FRAME_LEN + if tagged { vlan::TAG_LEN } else { 0 };
    let len = frame.bytes().len();
    if len >= min {
        return true;
    }
    if !frame.set_len(min) {
        return false;
    }
    frame.bytes_mut()[len..].fill(0);
    true
}

/// Writes a RST the appliance originates, IPv4 header and TCP segment, at the front of
/// `l3` (sized for both by the caller). False if it does not fit.
fn write_rst(l3: &mut [u8], src: u32, dst: u32, rst: &crate::wire::tcp::TcpRepr) -> bool {
    let tcp_len = crate::wire::tcp::HEADER_LEN;
    let Some(seg) = l3.get_mut(crate::wire::ipv4::HEADER_LEN..) else {
        return false;
    };
    if rst
        .emit(
            seg,
            std::net::Ipv4Addr::from(src),
            std::net::Ipv4Addr::from(dst),
            0,
        )
        .is_err()
    {
        return false;
    }
    write_own_ipv4(l3, src, dst, PROTO_TCP, tcp_len);
    true
}

/// Writes a 20-byte IPv4 header for a packet the appliance originates.
fn write_own_ipv4(buf: &mut [u8], src: u32, dst: u32, proto: u8, payload_len: usize) {
    let repr = Ipv4Repr {
        src_addr: src.into(),
        dst_addr: dst.into(),
        protocol: IpProtocol(proto),
        payload_len,
        ttl: OWN_TTL,
    };
    // The callers sized `buf` for the header; a failure cannot leave a half-written one
    // on the wire because the frame is dropped with it.
    let _ = repr.emit(buf);
}

pub mod counters;
mod fast;
pub mod frame;
mod reports;
#[cfg(test)]
mod tests;

pub use reports::{
    ActiveUsage, EndpointUsage, FlowFilter, FlowQuery, UsageReport, BUSY_PACKETS, CHANGED_PER_POLL,
    SLOTS_BUSY, SLOTS_IDLE,
};
