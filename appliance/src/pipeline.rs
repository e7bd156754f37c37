//! The packet path of one worker, pure Rust over [`Frame`]s: classify, answer ARP and
//! ping, look the destination up in the snapshot, find or create the flow, translate, and
//! pick the next hop. No DPDK here: the worker loop feeds mbufs in, tests feed
//! [`crate::frame::VecFrame`]s.
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

use crate::counters::{Counters, DropReason};
use crate::fasthash::{fast_map, FastMap};
use crate::flow::{
    Flow, FlowId, FlowKey, FlowTable, TcpFlags, Timeouts, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use crate::frame::Frame;
use crate::neighbour::{NeighbourTable, NeighbourTimers, Neighbours, Resolution};
use crate::snapshot::{AttachmentView, ListenerRef, LocalKind, Refusal, Snapshot};
use crate::wire::arp::{ArpOperation, ArpPacket};
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetAddress, EthernetFrame};
use crate::wire::icmpv4::{self, Icmpv4Packet, Icmpv4Type};
use crate::wire::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::vlan;

/// Lowest SNAT source port handed out; below are the well-known ports.
pub const SNAT_PORT_MIN: u16 = 1024;
/// Candidates tried before a new flow is refused for lack of SNAT ports.
const SNAT_TRIES: usize = 256;
/// TTL of packets the appliance originates.
const OWN_TTL: u8 = 64;
/// ICMP errors and RSTs the worker may originate per second (RFC 1812 §4.3.2.8 asks
/// routers to rate-limit them).
const ORIGINATED_PER_SEC: u32 = 2000;
/// How often neighbour retries and the hold queue are looked at.
const TIMER_TICK_MS: u64 = 10;

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
    snat_cursor: u16,
    last_tick_ms: u64,
    /// Next entry of the snapshot's `announce` list to send a gratuitous ARP for (worker
    /// 0 only): a bounded number per poll, so thousands of new endpoints never burst out
    /// of the pool at once.
    announce_next: usize,
    originate_tokens: u32,
    originate_refill_ms: u64,
    /// Per endpoint (by stable handle): what flows that already ended carried, new flows,
    /// refusals. Touched per new flow and per ended flow, never per packet.
    usage: FastMap<u32, EndpointUsage>,
    /// Next flow slot to re-check against the current snapshot (None when done).
    revalidate: Option<u32>,
}

/// Per-endpoint counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointUsage {
    pub new_flows: u64,
    /// Packets to the endpoint that were dropped, by reason (index: `DropReason as usize`).
    pub drops: [u64; DropReason::COUNT],
    /// Packets and bytes of this endpoint's flows that have ended.
    pub packets: u64,
    pub bytes: u64,
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

/// Usage of one worker: per endpoint (ended flows plus active ones), per target.
#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    /// (endpoint handle, usage including active flows, active flows)
    pub endpoints: Vec<(u32, EndpointUsage, u64)>,
    /// ((service handle, target ip, target port), active flows)
    pub targets: Vec<((u32, u32, u16), u64)>,
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
        let neighbours = Neighbours::shared(neighbours);
        let hold = settings.hold_capacity;
        let mut p = Pipeline {
            id,
            // Start each worker's SNAT cursor apart so their first ports differ visibly.
            snat_cursor: 0,
            flows,
            neighbours,
            held: VecDeque::with_capacity(hold),
            held_scratch: VecDeque::with_capacity(hold),
            emitted: Vec::with_capacity(256),
            counters: Counters::default(),
            alloc,
            last_tick_ms: 0,
            announce_next: 0,
            originate_tokens: ORIGINATED_PER_SEC,
            originate_refill_ms: 0,
            usage: fast_map(64),
            revalidate: None,
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
        let counters = &mut self.counters;
        let usage = &mut self.usage;
        self.flows.expire(now_ms, self.settings.expire_budget, |f| {
            counters.expired_flows += 1;
            fold_usage(usage, f);
        });
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
        let mut deferred = [None; crate::neighbour::DEFERRED];
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
        let dst_mac = EthernetFrame::new_unchecked(frame.bytes()).dst_addr();
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
        let sane_sender = sender_ip != 0 && att.on_link(sender_ip) && sender_mac.is_unicast();
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
        if !asks_us || sender_ip == target_ip {
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
            Ip {
                l3: l2_len,
                header_len: pkt.header_len(),
                total_len: usize::from(pkt.total_len()),
                src: pkt.src_addr_u32(),
                dst: pkt.dst_addr_u32(),
                proto: pkt.protocol().0,
                ttl: pkt.ttl(),
            }
        };
        // Drop Ethernet padding so lengths below are the IP packet's own.
        if frame.bytes().len() > ip.l3 + ip.total_len && !frame.set_len(ip.l3 + ip.total_len) {
            return Err(DropReason::Malformed);
        }
        match snap.local(att_idx, ip.dst) {
            None => Err(DropReason::UnknownDestination),
            Some(LocalKind::Own) => self.answer_local(snap, att_idx, frame, &ip, now_ms),
            Some(LocalKind::Endpoint(e)) => match ip.proto {
                PROTO_TCP | PROTO_UDP => {
                    let out = self.forward(snap, att_idx, frame, &ip, now_ms);
                    // Drops are rare next to forwarded packets: attributing them to the
                    // endpoint costs nothing on the forwarding path.
                    if let (Err(reason), Some(ep)) = (&out, snap.endpoints.get(e as usize)) {
                        self.usage_of(ep.handle).drops[*reason as usize] += 1;
                    }
                    out
                }
                PROTO_ICMP => self.answer_local(snap, att_idx, frame, &ip, now_ms),
                _ => Err(DropReason::NoListener),
            },
            Some(LocalKind::Snat(_)) => match ip.proto {
                PROTO_TCP | PROTO_UDP => self.reverse(snap, att_idx, frame, &ip, now_ms),
                PROTO_ICMP => self.icmp_to_snat(snap, att_idx, frame, &ip, now_ms),
                _ => Err(DropReason::NoFlow),
            },
        }
    }

    /// ICMP to an address of the appliance itself (own, endpoint): answer echo requests.
    fn answer_local(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        _now_ms: u64,
    ) -> Result<Out, DropReason> {
        if ip.proto != PROTO_ICMP {
            return Err(DropReason::IcmpUnsupported);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
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
        let (sport, dport, tcp) = l4_ports(frame.bytes(), l4, ip)?;
        let flags = tcp.map(|t| t.0);
        let key = ip.flow_key(att_idx, sport, dport);
        // Established flows first: their listener, endpoint state and access rules were
        // checked when they were created, and every snapshot change re-checks live flows
        // (revalidate_some), so the per-packet path skips those lookups.
        let mut id = self.live_flow(self.flows.lookup_forward(&key), now_ms);
        if let (Some(fid), Some(f)) = (id, flags) {
            let reopen = f.is_connection_request()
                && self.flows.get(fid).is_some_and(|fl| fl.tcp.allows_reopen());
            if reopen {
                if let Some(old) = self.flows.remove(fid) {
                    fold_usage(&mut self.usage, &old);
                }
                id = None;
            }
        }
        let id = match id {
            Some(id) => {
                if ip.ttl <= 1 {
                    return self.time_exceeded(snap, att_idx, frame, ip);
                }
                id
            }
            None => {
                let lref = snap
                    .listener(att_idx, ip.dst, ip.proto, dport)
                    .ok_or(DropReason::NoListener)?;
                let endpoint = snap
                    .endpoints
                    .get(lref.endpoint as usize)
                    .ok_or(DropReason::NoListener)?;
                if !endpoint.forwards {
                    return Err(DropReason::EndpointNotAvailable);
                }
                if ip.ttl <= 1 {
                    return self.time_exceeded(snap, att_idx, frame, ip);
                }
                if let Some(f) = flags {
                    if !f.is_connection_request() {
                        return self.reset_unknown(snap, att_idx, frame, ip, f);
                    }
                }
                if let Err(refusal) = endpoint.admits(ip.src, ip.proto, dport) {
                    let reason = match refusal {
                        Refusal::SecurityGroup => DropReason::SecurityGroup,
                        Refusal::Policy => DropReason::Policy,
                    };
                    return Err(reason);
                }
                self.new_flow(snap, key, lref, now_ms)?
            }
        };
        self.translate(snap, id, true, frame, ip, tcp, now_ms)
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
        let (sport, dport, tcp) = l4_ports(frame.bytes(), l4, ip)?;
        let flags = tcp.map(|t| t.0);
        let owner = self.snat_owner(dport);
        if owner != self.id {
            return Ok(Out::Handoff(owner));
        }
        let key = ip.flow_key(att_idx, sport, dport);
        let Some(id) = self.live_flow(self.flows.lookup_reverse(&key), now_ms) else {
            if let Some(f) = flags {
                if !f.rst {
                    return self.reset_unknown(snap, att_idx, frame, ip, f);
                }
            }
            return Err(DropReason::NoFlow);
        };
        if ip.ttl <= 1 {
            return self.time_exceeded(snap, att_idx, frame, ip);
        }
        self.translate(snap, id, false, frame, ip, tcp, now_ms)
    }

    /// Records the packet on flow `id` and translates it for the other side: towards the
    /// provider src becomes the SNAT ip:port and dst the target; towards the consumer src
    /// becomes the endpoint ip:port and dst the consumer.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn translate(
        &mut self,
        snap: &Snapshot,
        id: FlowId,
        from_consumer: bool,
        frame: &mut F,
        ip: &Ip,
        tcp: Option<(TcpFlags, u32)>,
        now_ms: u64,
    ) -> Result<Out, DropReason> {
        let bytes32 = u32::try_from(ip.total_len).unwrap_or(u32::MAX);
        let flow = self.flows.get_mut(id).ok_or(DropReason::NoFlow)?;
        flow.record(now_ms, from_consumer, bytes32, tcp);
        // The packet's key is this side's; the other side's, seen from its end, has our
        // new source as its destination.
        let (this, other) = if from_consumer {
            (flow.fwd, flow.rev)
        } else {
            (flow.rev, flow.fwd)
        };
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
        let l4 = ip.l3 + ip.header_len;
        let (msg_type, inner) = {
            let bytes = frame.bytes();
            let seg = bytes
                .get(l4..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let icmp = Icmpv4Packet::new_checked(seg).map_err(|_| DropReason::Malformed)?;
            let t = icmp.msg_type();
            if t == Icmpv4Type::ECHO_REQUEST {
                (t, None)
            } else if t == Icmpv4Type::DST_UNREACHABLE || t == Icmpv4Type::TIME_EXCEEDED {
                let q = icmp.quote().map_err(|_| DropReason::Malformed)?;
                let q_hl = q.header_len();
                let q_proto = q.protocol().0;
                let qp = q.payload();
                if qp.len() < 4 || (q_proto != PROTO_TCP && q_proto != PROTO_UDP) {
                    return Err(DropReason::IcmpUnsupported);
                }
                let sport = u16::from_be_bytes([qp[0], qp[1]]);
                let dport = u16::from_be_bytes([qp[2], qp[3]]);
                (
                    t,
                    Some((
                        q_hl,
                        q_proto,
                        q.src_addr_u32(),
                        q.dst_addr_u32(),
                        sport,
                        dport,
                    )),
                )
            } else {
                return Err(DropReason::IcmpUnsupported);
            }
        };
        let Some((q_hl, q_proto, q_src, q_dst, q_sport, q_dport)) = inner else {
            debug_assert_eq!(msg_type, Icmpv4Type::ECHO_REQUEST);
            return self.answer_local(snap, att_idx, frame, ip, now_ms);
        };
        // The quoted packet is one we sent: src = SNAT ip:port, dst = target ip:port.
        let owner = self.snat_owner(q_sport);
        if owner != self.id {
            return Ok(Out::Handoff(owner));
        }
        let key = FlowKey {
            src_ip: q_dst,
            dst_ip: q_src,
            src_port: q_dport,
            dst_port: q_sport,
            vpc: att_idx,
            proto: q_proto,
        };
        let id = self
            .live_flow(self.flows.lookup_reverse(&key), now_ms)
            .ok_or(DropReason::NoFlow)?;
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let fwd = self.flows.get(id).ok_or(DropReason::NoFlow)?.fwd;
        let bytes = frame.bytes_mut();
        // Outer header: from the endpoint to the consumer.
        {
            let mut pkt = Ipv4Packet::new_unchecked(&mut bytes[ip.l3..]);
            pkt.rewrite_src_addr(fwd.dst_ip.to_be_bytes());
            pkt.rewrite_dst_addr(fwd.src_ip.to_be_bytes());
            pkt.decrement_ttl();
        }
        // Quoted header: as the consumer sent it (consumer → endpoint).
        let q_off = l4 + 8;
        {
            let quoted = bytes
                .get_mut(q_off..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let mut q = Ipv4Packet::new_unchecked(&mut *quoted);
            q.rewrite_src_addr(fwd.src_ip.to_be_bytes());
            q.rewrite_dst_addr(fwd.dst_ip.to_be_bytes());
            let ports = quoted
                .get_mut(q_hl..q_hl + 4)
                .ok_or(DropReason::Malformed)?;
            ports[0..2].copy_from_slice(&fwd.src_port.to_be_bytes());
            ports[2..4].copy_from_slice(&fwd.dst_port.to_be_bytes());
            // The quoted UDP checksum (inside the 8 bytes) is left as it was: it covers a
            // payload that is not quoted, so no receiver can verify it anyway.
        }
        {
            let seg = bytes
                .get_mut(l4..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            Icmpv4Packet::new_unchecked(seg).fill_checksum();
        }
        self.counters.icmp_errors_translated += 1;
        self.route(snap, fwd.vpc, fwd.src_ip, frame, ip.l3, now_ms)
    }

    /// A flow id if the flow is still alive; an expired one is removed on the spot.
    #[inline]
    fn live_flow(&mut self, id: Option<FlowId>, now_ms: u64) -> Option<FlowId> {
        let id = id?;
        if self.flows.is_expired(id, now_ms) {
            if let Some(old) = self.flows.remove(id) {
                fold_usage(&mut self.usage, &old);
            }
            self.counters.expired_flows += 1;
            return None;
        }
        Some(id)
    }

    fn new_flow(
        &mut self,
        snap: &Snapshot,
        key: FlowKey,
        lref: ListenerRef,
        now_ms: u64,
    ) -> Result<FlowId, DropReason> {
        let (service, ti, mut rev) = plan_flow(snap, &key, lref)?;
        rev.dst_port = self.pick_snat_port(&rev).ok_or(DropReason::SnatExhausted)?;
        let endpoint_handle = snap
            .endpoints
            .get(lref.endpoint as usize)
            .map_or(0, |e| e.handle);
        let mut flow = Flow::new(key, rev, now_ms);
        flow.service = service.handle;
        flow.listener = lref.listener;
        flow.target = u32::from(ti);
        flow.endpoint = endpoint_handle;
        flow.generation = u32::try_from(snap.generation & u64::from(u32::MAX)).unwrap_or(0);
        let Ok(id) = self.flows.insert(flow) else {
            return Err(DropReason::FlowTableFull);
        };
        self.counters.new_flows += 1;
        self.usage_of(endpoint_handle).new_flows += 1;
        Ok(id)
    }

    /// The worker that owns SNAT port `port`: ports are dealt round-robin to workers.
    #[inline]
    fn snat_owner(&self, port: u16) -> u16 {
        port % self.settings.workers.max(1)
    }

    /// A SNAT port of this worker that no flow uses towards this target.
    fn pick_snat_port(&mut self, rev: &FlowKey) -> Option<u16> {
        let slots = self.snat_slots();
        let mut probe = *rev;
        for _ in 0..SNAT_TRIES.min(usize::from(slots)) {
            self.snat_cursor = (self.snat_cursor + 1) % slots;
            probe.dst_port = self.snat_port_at(self.snat_cursor);
            if !self.flows.contains_reverse(&probe) {
                return Some(probe.dst_port);
            }
        }
        None
    }

    /// How many SNAT ports this worker owns: p with p % workers == id, from
    /// SNAT_PORT_MIN up.
    #[inline]
    fn snat_slots(&self) -> u16 {
        let n = self.settings.workers.max(1);
        let first = SNAT_PORT_MIN.div_ceil(n) * n + self.id;
        (u16::MAX - first) / n + 1
    }

    /// This worker's SNAT port number `slot` (< [`snat_slots`](Self::snat_slots)).
    #[inline]
    fn snat_port_at(&self, slot: u16) -> u16 {
        let n = self.settings.workers.max(1);
        SNAT_PORT_MIN.div_ceil(n) * n + self.id + slot * n
    }

    /// The SNAT port [`pick_snat_port`](Self::pick_snat_port) tries first for the `k`-th
    /// new flow from now (k >= 1): what the burst path prefetches for.
    #[inline]
    fn snat_port_guess(&self, k: u16) -> u16 {
        let slots = u32::from(self.snat_slots());
        let slot = (u32::from(self.snat_cursor) + u32::from(k)) % slots;
        self.snat_port_at(u16::try_from(slot).unwrap_or(0))
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
            self.counters.drop(DropReason::NeighbourUnresolved);
            return;
        };
        let l2_len = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let len = l2_len + crate::wire::arp::PACKET_LEN;
        if !f.set_len(len) {
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
    }

    /// The usage entry of endpoint handle `h` (created on first use: per new endpoint,
    /// not per packet).
    fn usage_of(&mut self, h: u32) -> &mut EndpointUsage {
        self.usage.entry(h).or_default()
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
        fold_usage(&mut self.usage, &flow);
        self.counters.drop(DropReason::FlowEnded);
        let open = !matches!(
            flow.tcp,
            crate::flow::TcpState::Closed | crate::flow::TcpState::TimeWait
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
            return;
        };
        let l3 = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let tcp_len = crate::wire::tcp::HEADER_LEN;
        if !f.set_len(l3 + crate::wire::ipv4::HEADER_LEN + tcp_len) {
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

    /// Flows of this worker, for operators (bounded by `max`; off the packet path).
    pub fn list_flows(&self, endpoint: Option<u32>, max: usize, now_ms: u64) -> Vec<FlowInfo> {
        self.flows
            .iter()
            .filter(|(_, f)| endpoint.is_none_or(|e| f.endpoint == e))
            .take(max)
            .map(|(_, f)| FlowInfo {
                worker: self.id,
                endpoint: f.endpoint,
                service: f.service,
                proto: f.fwd.proto,
                consumer: (f.fwd.src_ip, f.fwd.src_port),
                endpoint_addr: (f.fwd.dst_ip, f.fwd.dst_port),
                snat: (f.rev.dst_ip, f.rev.dst_port),
                target: (f.rev.src_ip, f.rev.src_port),
                state: if f.fwd.proto == PROTO_TCP {
                    tcp_state_name(f.tcp)
                } else {
                    "active"
                },
                packets: u64::from(f.packets_fwd) + u64::from(f.packets_rev),
                bytes: f.bytes_fwd + f.bytes_rev,
                age_ms: now_ms.saturating_sub(f.created_ms),
                idle_ms: now_ms.saturating_sub(f.last_seen_ms),
            })
            .collect()
    }

    /// Per-endpoint and per-target usage of this worker (off the packet path).
    pub fn usage_report(&self) -> UsageReport {
        let mut endpoints: FastMap<u32, (EndpointUsage, u64)> = fast_map(self.usage.len());
        for (h, u) in &self.usage {
            endpoints.insert(*h, (*u, 0));
        }
        let mut targets: FastMap<(u32, u32, u16), u64> = fast_map(16);
        for (_, f) in self.flows.iter() {
            let e = endpoints.entry(f.endpoint).or_default();
            e.0.packets += u64::from(f.packets_fwd) + u64::from(f.packets_rev);
            e.0.bytes += f.bytes_fwd + f.bytes_rev;
            e.1 += 1;
            *targets
                .entry((f.service, f.rev.src_ip, f.rev.src_port))
                .or_default() += 1;
        }
        UsageReport {
            endpoints: endpoints.into_iter().map(|(h, (u, a))| (h, u, a)).collect(),
            targets: targets.into_iter().collect(),
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
    fn reset_unknown(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ip,
        flags: TcpFlags,
    ) -> Result<Out, DropReason> {
        if flags.rst || !self.may_originate() {
            return Err(DropReason::NoFlow);
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
        self.counters.rst_sent += 1;
        self.counters.drop(DropReason::NoFlow);
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
        if !self.may_originate() {
            return Err(DropReason::TtlExceeded);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let mut quote = [0u8; 60 + icmpv4::QUOTE_PAYLOAD_LEN];
        let qlen = {
            let bytes = frame.bytes();
            let orig = bytes
                .get(ip.l3..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let q = icmpv4::quote_of(orig).map_err(|_| DropReason::TtlExceeded)?;
            quote[..q.len()].copy_from_slice(q);
            q.len()
        };
        let icmp_len = 8 + qlen;
        let new_len = ip.l3 + crate::wire::ipv4::HEADER_LEN + icmp_len;
        if !frame.set_len(new_len) {
            return Err(DropReason::TtlExceeded);
        }
        let bytes = frame.bytes_mut();
        write_own_ipv4(&mut bytes[ip.l3..], att.ip, ip.src, PROTO_ICMP, icmp_len);
        let seg = &mut bytes[ip.l3 + crate::wire::ipv4::HEADER_LEN..];
        icmpv4::emit_time_exceeded(seg, 0, &quote[..qlen]).map_err(|_| DropReason::TtlExceeded)?;
        reply_l2(bytes, att.mac);
        self.counters.icmp_errors_sent += 1;
        self.counters.drop(DropReason::TtlExceeded);
        Ok(Out::Tx(att.port))
    }
}

/// Adds an ended flow's packets and bytes to its endpoint's usage.
fn fold_usage(usage: &mut FastMap<u32, EndpointUsage>, f: &Flow) {
    let u = usage.entry(f.endpoint).or_default();
    u.packets += u64::from(f.packets_fwd) + u64::from(f.packets_rev);
    u.bytes += f.bytes_fwd + f.bytes_rev;
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

fn tcp_state_name(s: crate::flow::TcpState) -> &'static str {
    use crate::flow::TcpState as T;
    match s {
        T::SynSent => "syn-sent",
        T::SynReceived => "syn-received",
        T::Established => "established",
        T::FinWait { .. } => "fin-wait",
        T::Closing => "closing",
        T::TimeWait => "time-wait",
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

/// Source port, destination port, and for TCP the flags and acknowledgement number.
type L4Ports = (u16, u16, Option<(TcpFlags, u32)>);

/// Source and destination ports (and TCP flags) of a TCP/UDP packet.
#[inline]
fn l4_ports(bytes: &[u8], l4: usize, ip: &Ip) -> Result<L4Ports, DropReason> {
    let seg = bytes
        .get(l4..ip.l3 + ip.total_len)
        .ok_or(DropReason::Malformed)?;
    if ip.proto == PROTO_TCP {
        let tcp = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        Ok((
            tcp.src_port(),
            tcp.dst_port(),
            Some((TcpFlags::from_bits(tcp.flags().bits()), tcp.ack_number())),
        ))
    } else {
        let udp = UdpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        Ok((udp.src_port(), udp.dst_port(), None))
    }
}

/// Where a new flow of `key` through listener `lref` goes: its service, the index of the
/// chosen target (Maglev over the unseeded key hash, so every worker and appliance
/// agrees), and its reverse key with the SNAT port still 0.
#[inline]
fn plan_flow<'s>(
    snap: &'s Snapshot,
    key: &FlowKey,
    lref: ListenerRef,
) -> Result<(&'s crate::snapshot::ServiceView, u16, FlowKey), DropReason> {
    let service = snap
        .services
        .get(lref.service as usize)
        .ok_or(DropReason::NoListener)?;
    let listener = service
        .listeners
        .get(usize::from(lref.listener))
        .ok_or(DropReason::NoListener)?;
    let hash = key.hash();
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

mod fast;
#[cfg(test)]
mod tests;
