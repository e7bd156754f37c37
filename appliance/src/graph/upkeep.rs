//! Upkeep: the work that is not per packet, done between bursts a budget at a time, so
//! that no burst waits behind it: flow expiry, re-checking flows against a new snapshot
//! (and ending those it no longer admits), neighbour retries and the hold queue,
//! gratuitous ARP for new addresses, and the operator's reports (`reports.rs`).

use super::*;
use crate::ha::record::RecordKind;

/// How often neighbour retries and the hold queue are looked at.
pub(super) const TIMER_TICK_MS: u64 = 10;

/// Writes the learned MACs of `table` whose set was busy; those now usable, as hops.
fn retry_deferred<A: crate::tables::neighbour::NeighbourAddr>(
    table: &mut crate::tables::neighbour::NeighboursOf<A>,
    now_ms: u64,
    hop: fn(A) -> Hop,
) -> [Option<(u16, Hop, [u8; 6])>; crate::tables::neighbour::DEFERRED] {
    let mut usable = [None; crate::tables::neighbour::DEFERRED];
    let mut n = 0;
    table.retry_deferred(now_ms, |att, ip, mac| {
        if let Some(d) = usable.get_mut(n) {
            *d = Some((att, hop(ip), mac));
            n += 1;
        }
    });
    usable
}

/// The longest the expiry sweep takes to visit every flow slot once: how late after its
/// idle timeout a flow that sees no packet may still hold its slot and SNAT port.
pub(super) const EXPIRE_SWEEP_MS: usize = 1_000;

impl<F: Frame> Pipeline<F> {
    /// A neighbour learned outside the packet path: recorded in the (shared) table as an
    /// ARP reply would be, and this worker's packets held for it go out.
    pub fn learn_remote(&mut self, snap: &Snapshot, n: NeighbourNews, now_ms: u64) {
        if self
            .neighbours
            .learn(n.attachment, n.ip, n.mac, now_ms)
            .is_usable()
        {
            self.release_held(snap, n.attachment, Hop::V4(n.ip), n.mac);
        }
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
            for &(ip, mac) in &a.static_neighbours6 {
                self.neighbours6.add_static(ai, ip, mac);
            }
        }
        self.announce_next = 0;
    }

    /// Timer work, bounded per call: flow expiry, ARP retries, the hold queue.
    pub fn poll(&mut self, snap: &Snapshot, now_ms: u64) {
        self.hops6.clear();
        // Another worker may have changed a MAC this one has cached.
        self.neighbours6.sync();
        self.neighbours.sync();
        // A standby expires nothing (the active node ends its flows), nor does a node
        // that just took over until every flow's idle time has restarted.
        let may_expire = self.ha_poll(snap, now_ms);
        if may_expire {
            let quota = self.expire_quota(now_ms);
            let Pipeline {
                counters,
                usage,
                load,
                snat,
                sync,
                flow_log,
                consumers6,
                ..
            } = self;
            self.flows.expire(now_ms, quota, |id, f| {
                counters.expired_flows += 1;
                sync.record(RecordKind::End, f, now_ms);
                let side = consumers6.of(id, f);
                Self::log_flow_end(flow_log, counters, f, side, now_ms);
                flow_gone(usage, load, snat, counters, f, now_ms);
            });
        }
        self.flows.tidy_half_open(EVICT_BUDGET);
        self.expire_held_fragments(now_ms);
        self.reports_some(now_ms);
        if !self.active {
            return;
        }
        self.flow_log_some(now_ms);
        if self.probes.is_some() {
            self.send_probes(snap, now_ms);
        }
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
        let usable = retry_deferred(&mut self.neighbours, now_ms, Hop::V4);
        let usable6 = retry_deferred(&mut self.neighbours6, now_ms, Hop::V6);
        for (att, ip, mac) in usable.into_iter().chain(usable6).flatten() {
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
        let mut last: Option<((u16, Hop), Resolution)> = None;
        while let Some(mut h) = self.held_scratch.pop_front() {
            if now_ms.saturating_sub(h.since_ms) > max_hold {
                self.counters.drop(DropReason::NeighbourUnresolved);
                continue;
            }
            let hop = (h.attachment, h.next_hop);
            let r = match last {
                Some((k, r)) if k == hop => r,
                _ => {
                    let r = match hop.1 {
                        Hop::V4(ip) => self.neighbours.resolve(hop.0, ip, now_ms),
                        Hop::V6(ip) => self.neighbours6.resolve(hop.0, ip, now_ms),
                    };
                    if matches!(r, Resolution::Request | Resolution::Refresh(_)) {
                        if let Some(a) = snap.attachment(hop.0) {
                            self.request(a, hop.1, now_ms);
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
                            l2::set_destination(h.frame.bytes_mut(), mac);
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

    pub(super) fn hold(&mut self, frame: F, attachment: u16, next_hop: Hop, now_ms: u64) {
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

    /// The flow slots this poll's expiry sweep may examine: enough, earned by the
    /// milliseconds since the last poll, to visit the whole table once per
    /// [`EXPIRE_SWEEP_MS`], at most `expire_budget` at once (the rest is kept for the next
    /// polls). A sweep as fast as the loop turns read the table over and over for nothing:
    /// 64 slots (8 KiB) a burst, 7 % of the worker's time at 100k flows, where the table
    /// is out of cache; flows are found expired at their next packet anyway.
    fn expire_quota(&mut self, now_ms: u64) -> usize {
        let capacity = self.flows.capacity();
        let elapsed = now_ms.saturating_sub(self.expire_paced_ms);
        if elapsed > 0 {
            self.expire_paced_ms = now_ms;
            let per_ms = capacity.div_ceil(EXPIRE_SWEEP_MS);
            let earned = usize::try_from(elapsed)
                .unwrap_or(usize::MAX)
                .saturating_mul(per_ms);
            // A backlog beyond one whole sweep would only visit slots twice.
            self.expire_credit = self.expire_credit.saturating_add(earned).min(capacity);
        }
        let quota = self.expire_credit.min(self.settings.expire_budget);
        self.expire_credit -= quota;
        quota
    }

    /// [`hold`](Self::hold) for a [`Next::Hold6`](super::dispatch::Next::Hold6) verdict:
    /// its next hop is at `slot` of this pass's `hops6`.
    pub(super) fn hold6(&mut self, frame: F, attachment: u16, slot: u32, now_ms: u64) {
        match self.hops6.get(slot as usize) {
            Some(&hop) => self.hold(frame, attachment, Hop::V6(hop), now_ms),
            // Every verdict is acted on in the pass that gave it; a slot from another
            // pass would be a bug: the packet is dropped, counted, never misrouted.
            None => {
                debug_assert!(false, "Hold6 slot {slot} outside this pass");
                self.counters.drop(DropReason::NeighbourUnresolved);
            }
        }
    }

    pub(super) fn release_held(&mut self, snap: &Snapshot, att_idx: u16, ip: Hop, mac: [u8; 6]) {
        if self.held.is_empty() {
            return;
        }
        let port = snap.attachment(att_idx).map(|a| a.port);
        std::mem::swap(&mut self.held, &mut self.held_scratch);
        while let Some(mut h) = self.held_scratch.pop_front() {
            if h.attachment == att_idx && h.next_hop == ip {
                if let Some(port) = port {
                    l2::set_destination(h.frame.bytes_mut(), mac);
                    self.emitted.push((port, h.frame));
                }
            } else {
                self.held.push_back(h);
            }
        }
    }

    /// Gratuitous ARPs and unsolicited neighbour advertisements for addresses new in this
    /// snapshot, a few per poll: the IPv4 ones first, then the IPv6 ones (`announce_next`
    /// counts through both lists).
    fn announce_some(&mut self, snap: &Snapshot, now_ms: u64) {
        const PER_POLL: usize = 16;
        let (v4, v6) = (&snap.announce, &snap.announce6);
        let total = v4.len() + v6.len();
        let end = (self.announce_next + PER_POLL).min(total);
        for i in self.announce_next..end {
            match v4.get(i) {
                Some(&(att, ip)) => {
                    if let Some(a) = snap.attachment(att) {
                        let bcast = EthernetAddress::BROADCAST;
                        self.send_arp(a, ArpOperation::REQUEST, ip, ip, bcast, now_ms);
                    }
                }
                None => {
                    let Some(&(att, ip6)) = v6.get(i - v4.len()) else {
                        break;
                    };
                    if let Some(a) = snap.attachment(att) {
                        self.send_unsolicited_advert(a, ip6, EthernetAddress(a.mac));
                    }
                }
            }
        }
        self.announce_next = end;
        if end == total {
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
            let consumer6 = self.consumers6.of(id, &flow).map(|s| s.consumer);
            if !flow_still_admitted(snap, &flow, consumer6) {
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
        self.flow_gone(Some(id), &flow, now_ms);
        self.counters.drop(DropReason::FlowEnded);
        if !self.active {
            // The active node resets the connection; a standby only forgets the flow.
            return;
        }
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
        let side = self.consumers6.of(id, &flow);
        match side {
            Some(side) => {
                let ports = (f.dst_port, f.src_port);
                let addrs = (side.endpoint, side.consumer);
                self.send_rst6(snap, f.vpc, addrs, ports, flow.ack_fwd, now_ms);
            }
            None => self.send_rst(
                snap,
                f.vpc,
                (f.dst_ip, f.dst_port),
                (f.src_ip, f.src_port),
                flow.ack_fwd,
                now_ms,
            ),
        }
        // To the target, from the SNAT address.
        if let Some(side) = side.filter(|_| super::nat64::is_snat6(r.dst_ip)) {
            let ports = (r.dst_port, r.src_port);
            let addrs = (side.snat, side.target);
            self.send_rst6(snap, r.vpc, addrs, ports, flow.ack_rev, now_ms);
            return;
        }
        self.send_rst(
            snap,
            r.vpc,
            (r.dst_ip, r.dst_port),
            (r.src_ip, r.src_port),
            flow.ack_rev,
            now_ms,
        );
    }

    /// Bookkeeping of a flow that ended (expired, replaced, ended by a change), and its
    /// end for the HA peer.
    pub(super) fn flow_gone(&mut self, id: Option<FlowId>, old: &Flow, now_ms: u64) {
        self.sync.record(RecordKind::End, old, now_ms);
        let side = id.and_then(|id| self.consumers6.of(id, old));
        Self::log_flow_end(&mut self.flow_log, &mut self.counters, old, side, now_ms);
        flow_gone(
            &mut self.usage,
            &mut self.load,
            &mut self.snat,
            &mut self.counters,
            old,
            now_ms,
        );
    }
}

/// Everything a flow's end changes besides the table: its endpoint's usage, the
/// per-consumer gauges, the quarantine of its SNAT port.
pub(super) fn flow_gone(
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
/// `consumer6`: an IPv6 consumer's address (NAT64 flows).
pub(super) fn flow_still_admitted(snap: &Snapshot, flow: &Flow, consumer6: Option<u128>) -> bool {
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
    let admitted = if super::nat64::is_ipv6_consumer(f.src_ip) {
        e.ip6.is_some() && consumer6.is_some_and(|c| e.admits_ipv6(c, f.proto, f.dst_port).is_ok())
    } else {
        e.admits(f.src_ip, f.proto, f.dst_port).is_ok()
    };
    let snat = if super::nat64::is_snat6(r.dst_ip) {
        s.snat6.iter().any(|&(fold, _)| fold == r.dst_ip)
    } else {
        s.snat.contains(&r.dst_ip)
    };
    s.has_target(f.proto, f.dst_port, r.src_ip, r.src_port) && snat && admitted
}
