//! The workers' side of the HA pair. Active: every flow creation, TCP state change and end
//! is recorded (`SyncOut`) and handed to the sync thread once per poll, a bulk copy is
//! made a budget at a time when the peer asks, and the node's own addresses are announced
//! on the data networks so a peer cut off from the sync link still sees it is alive.
//! Standby: nothing is answered or sent, received traffic is dropped (counted), ARP is
//! learned from, and the peer's flows are installed, so that they are found after a
//! takeover whichever way their packets come. At a takeover every flow is touched (its
//! idle time restarts: the standby never saw its packets) before expiry resumes, and
//! worker 0 announces every address.

use super::*;
use crate::ha::link::{HaLink, BULK_SLOTS_PER_POLL, INSTALLS_PER_POLL};
use crate::ha::record::{FlowRecord, RecordKind};
use crate::tables::flow::TcpState;
use mgmt::model::ChunkedIter;

/// Flow records made on the packet path, kept until the poll hands them over.
#[derive(Debug, Default)]
pub(super) struct SyncOut {
    /// Recording (HA configured and this node active).
    pub(super) on: bool,
    worker: u8,
    pub(super) buf: Vec<FlowRecord>,
}

impl SyncOut {
    /// Records what happened to `f`. The creation of a NAT64 flow is recorded with its
    /// IPv6 side once it has one ([`record_with`](Self::record_with)).
    #[inline]
    pub(super) fn record(&mut self, kind: RecordKind, f: &Flow, now_ms: u64) {
        if kind == RecordKind::Create && super::nat64::is_ipv6_consumer(f.fwd.src_ip) {
            return;
        }
        self.record_with(kind, f, now_ms, None);
    }

    /// Records what happened to `f`, an IPv6 consumer's side `side6` with it.
    #[inline]
    pub(super) fn record_with(
        &mut self,
        kind: RecordKind,
        f: &Flow,
        now_ms: u64,
        side6: Option<super::nat64::Side6>,
    ) {
        if self.on {
            self.buf
                .push(flow_record(kind, self.worker, f, now_ms, side6));
        }
    }
}

/// The record of `f` (and of its IPv6 consumer's side, for a NAT64 flow's creation).
pub fn flow_record(
    kind: RecordKind,
    worker: u8,
    f: &Flow,
    now_ms: u64,
    side6: Option<super::nat64::Side6>,
) -> FlowRecord {
    let ms = |t: u64| u32::try_from(now_ms.saturating_sub(t)).unwrap_or(u32::MAX);
    FlowRecord {
        kind,
        worker,
        tcp: f.tcp.index(),
        wscale: f.wscale,
        fwd: f.fwd,
        rev: f.rev,
        ack_fwd: f.ack_fwd,
        ack_rev: f.ack_rev,
        win_fwd: f.win_fwd,
        win_rev: f.win_rev,
        age_ms: ms(f.created_ms),
        idle_ms: ms(f.last_seen_ms),
        side6,
    }
}

/// Where the worker is in the HA work that spans polls.
#[derive(Debug, Default)]
pub(super) struct HaProgress {
    /// Next slot to touch after a takeover (expiry waits until the sweep is done).
    touch: Option<u32>,
    /// The bulk copy under way: its epoch and next slot.
    bulk: Option<(u64, u32)>,
    /// Next local address worker 0 announces after a takeover.
    announce_all: Option<usize>,
    next_own_announce_ms: u64,
    /// The last [`HaShared::announce_epoch`](crate::ha::link::HaShared) acted on.
    announce_epoch: u64,
    /// Next local address worker 0 hands over to the peer after stepping down.
    handover: Option<usize>,
}

impl<F: Frame> Pipeline<F> {
    /// Makes this worker one of an HA pair's node; it starts standby.
    pub fn set_ha_link(&mut self, link: HaLink) {
        self.sync.worker = u8::try_from(self.id).unwrap_or(u8::MAX);
        self.active = false;
        self.sync.on = false;
        self.ha = Some(link);
    }

    /// Whether this worker forwards: always without HA, else when its node is active.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// A packet of the attachment named a local address from another MAC: count it for
    /// the sync thread (the peer is active on this network).
    #[inline]
    pub(super) fn claim_seen(&self, att: u16, mac: [u8; 6]) {
        if let Some(l) = &self.ha {
            l.shared.note_peer_mac(att, mac);
            l.shared
                .claims
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Upkeep's HA part (before the rest of the poll): follows the role, installs the
    /// peer's flows or hands ours over, copies a budget of flows for a bulk request.
    /// Returns whether flow expiry may run now.
    pub(super) fn ha_poll(&mut self, snap: &Snapshot, now_ms: u64) -> bool {
        // Taken out for the poll rather than cloned: no reference counts touched per poll.
        let Some(link) = self.ha.take() else {
            return true;
        };
        let may_expire = self.ha_poll_with(snap, &link, now_ms);
        self.ha = Some(link);
        may_expire
    }

    fn ha_poll_with(&mut self, snap: &Snapshot, link: &HaLink, now_ms: u64) -> bool {
        let active = link.shared.is_active();
        if active != self.active {
            self.active = active;
            self.sync.on = active;
            if active {
                self.counters.takeovers += 1;
                self.progress.touch = Some(0);
                if self.id == 0 {
                    self.progress.announce_all = Some(0);
                }
            } else {
                self.sync.buf.clear();
                self.progress = HaProgress::default();
                // Hosts may still send to this node: tell them the peer's MAC.
                if self.id == 0 {
                    self.progress.handover = Some(0);
                }
            }
        }
        if !active {
            self.hand_over_some(snap, link);
            for _ in 0..INSTALLS_PER_POLL {
                let Some(r) = link.import.pop() else { break };
                self.install(snap, &r, now_ms);
            }
            // Probes and held packets would leave from an address the active node owns.
            if let Some(p) = &self.probes {
                while p.outgoing.pop().is_some() {}
            }
            self.held.clear();
            return false;
        }
        self.touch_some(now_ms);
        self.bulk_some(link, now_ms);
        for r in self.sync.buf.drain(..) {
            if link.export.push(r).is_err() {
                self.counters.sync_dropped += 1;
            }
        }
        if self.id == 0 {
            let epoch = link
                .shared
                .announce_epoch
                .load(std::sync::atomic::Ordering::Acquire);
            if epoch != self.progress.announce_epoch {
                self.progress.announce_epoch = epoch;
                self.progress.announce_all = Some(0);
            }
            self.announce_after_takeover(snap, now_ms);
            if now_ms >= self.progress.next_own_announce_ms {
                self.progress.next_own_announce_ms = now_ms + link.shared.announce_every_ms;
                for a in &snap.attachments {
                    if a.has_ipv4() {
                        self.send_arp(
                            a,
                            ArpOperation::REQUEST,
                            a.ip,
                            a.ip,
                            EthernetAddress::BROADCAST,
                            now_ms,
                        );
                    }
                    if let Some(ip6) = a.ip6 {
                        self.send_unsolicited_advert(a, ip6, EthernetAddress(a.mac));
                    }
                }
            }
        }
        self.progress.touch.is_none()
    }

    /// After a takeover: every flow's idle time restarts now, a budget per poll.
    fn touch_some(&mut self, now_ms: u64) {
        let Some(start) = self.progress.touch else {
            return;
        };
        let cap = u32::try_from(self.flows.capacity()).unwrap_or(u32::MAX);
        let end = start.saturating_add(4096).min(cap);
        for id in start..end {
            if let Some(f) = self.flows.get_mut(id) {
                f.last_seen_ms = f.last_seen_ms.max(now_ms);
            }
        }
        self.progress.touch = (end < cap).then_some(end);
    }

    /// A bulk copy for the peer: every live flow as a [`RecordKind::Bulk`] record, a
    /// budget of slots per poll; done when the epoch is stored in `bulk_done`.
    fn bulk_some(&mut self, link: &HaLink, now_ms: u64) {
        use std::sync::atomic::Ordering;
        let epoch = link.shared.bulk_epoch.load(Ordering::Acquire);
        let (e, start) = match self.progress.bulk {
            Some((e, s)) if e == epoch => (e, s),
            _ if link.bulk_done.load(Ordering::Acquire) == epoch => return,
            _ => (epoch, 0),
        };
        let cap = u32::try_from(self.flows.capacity()).unwrap_or(u32::MAX);
        // Wait for the sync thread to drain the queue rather than drop copies.
        let room = link
            .export
            .capacity()
            .saturating_sub(link.export.len() + self.sync.buf.len());
        if room < BULK_SLOTS_PER_POLL {
            self.progress.bulk = Some((e, start));
            return;
        }
        let end = start
            .saturating_add(u32::try_from(BULK_SLOTS_PER_POLL).unwrap_or(512))
            .min(cap);
        for slot in start..end {
            let Some(f) = self.flows.get(slot) else {
                continue;
            };
            let side6 = self.consumers6.of(slot, f);
            if side6.is_none() && super::nat64::is_ipv6_consumer(f.fwd.src_ip) {
                continue;
            }
            let r = flow_record(RecordKind::Bulk, self.sync.worker, f, now_ms, side6);
            self.sync.buf.push(r);
        }
        if end >= cap {
            self.progress.bulk = None;
            link.bulk_done.store(e, Ordering::Release);
        } else {
            self.progress.bulk = Some((e, end));
        }
    }

    /// Worker 0 after stepping down: a gratuitous ARP for every local address with the
    /// peer's MAC as the sender (learnt from its claims), a few per poll. A split brain
    /// can end without the winner ever hearing the loser (the loser saw the winner's
    /// announcement first and went quiet), so the loser points hosts to the winner
    /// itself. Nothing for an attachment where the peer was not seen.
    fn hand_over_some(&mut self, snap: &Snapshot, link: &HaLink) {
        let Some(start) = self.progress.handover else {
            return;
        };
        let (batch, batch6, next) = announce_batch(snap, start);
        for &(att, ip) in batch {
            if let (Some(a), Some(mac)) = (snap.attachment(att), link.shared.peer_mac(att)) {
                self.send_arp_as(a, EthernetAddress(mac), ip);
            }
        }
        for &(att, ip6) in batch6 {
            if let (Some(a), Some(mac)) = (snap.attachment(att), link.shared.peer_mac(att)) {
                self.send_unsolicited_advert(a, ip6, EthernetAddress(mac));
            }
        }
        self.progress.handover = next;
    }

    /// Worker 0 after a takeover: a gratuitous ARP for every local address, a few per poll,
    /// so hosts and switches send to this node from now on.
    fn announce_after_takeover(&mut self, snap: &Snapshot, now_ms: u64) {
        let Some(start) = self.progress.announce_all else {
            return;
        };
        let (batch, batch6, next) = announce_batch(snap, start);
        for &(att, ip) in batch {
            if let Some(a) = snap.attachment(att) {
                let bcast = EthernetAddress::BROADCAST;
                self.send_arp(a, ArpOperation::REQUEST, ip, ip, bcast, now_ms);
            }
        }
        for &(att, ip6) in batch6 {
            if let Some(a) = snap.attachment(att) {
                self.send_unsolicited_advert(a, ip6, EthernetAddress(a.mac));
            }
        }
        self.progress.announce_all = next;
    }

    /// Installs (or updates, or removes) one of the peer's flows in this worker's table,
    /// with this node's handles for its endpoint and service.
    fn install(&mut self, snap: &Snapshot, r: &FlowRecord, now_ms: u64) {
        // A NAT64 flow's forward key holds its consumer folded under the sender's seed:
        // folded again under this node's, and found by its provider-side key.
        let v6 = super::nat64::is_ipv6_consumer(r.fwd.src_ip);
        let mut r = *r;
        if let Some(s) = r.side6 {
            r.fwd.src_ip = self.fold_consumer(s.consumer);
            // An IPv6 endpoint's stand-in address comes from its handle, which is each
            // node's own: this node's, found by the endpoint's IPv6 address.
            if r.fwd.dst_ip >= crate::tables::snapshot::IPV6_ONLY_BASE {
                if let Some(LocalKind::Endpoint(h)) = snap.local6(r.fwd.vpc, s.endpoint) {
                    if let Some(e) = snap.endpoint_by_handle(h) {
                        r.fwd.dst_ip = e.ip;
                    }
                }
            }
        }
        let r = &r;
        let existing = if v6 {
            self.flows.lookup_reverse(&r.rev)
        } else {
            self.flows.lookup_forward(&r.fwd)
        };
        if r.kind == RecordKind::End {
            if let Some(id) = existing {
                if let Some(old) = self.flows.remove(id) {
                    self.chains_moved = true;
                    self.flow_gone(Some(id), &old, now_ms);
                }
            }
            return;
        }
        let tcp = TcpState::from_index(r.tcp).unwrap_or(TcpState::Established);
        if let Some(id) = existing {
            let was_half_open = self.flows.get(id).is_some_and(Flow::is_half_open);
            if let Some(f) = self.flows.get_mut(id) {
                f.tcp = tcp;
                f.wscale = r.wscale;
                f.ack_fwd = r.ack_fwd;
                f.ack_rev = r.ack_rev;
                f.win_fwd = r.win_fwd;
                f.win_rev = r.win_rev;
                f.last_seen_ms = now_ms.saturating_sub(u64::from(r.idle_ms));
            }
            if self.flows.get(id).is_some_and(Flow::is_half_open) != was_half_open {
                self.half_open_changed(id);
            }
            self.counters.synced_flows += 1;
            return;
        }
        if v6 && r.side6.is_none() {
            self.counters.sync_unresolved += 1;
            return;
        }
        let Some(flow) = resolve(snap, r, tcp, now_ms) else {
            self.counters.sync_unresolved += 1;
            return;
        };
        if self.flows.contains_reverse(&flow.rev) || self.flows.is_full() {
            self.counters.sync_unresolved += 1;
            return;
        }
        if let Ok(id) = self.flows.insert(flow) {
            if let Some(s) = r.side6 {
                self.consumers6.set(id, s);
            }
            self.chains_moved = true;
            let bucket = self.load.client_bucket(flow.fwd.vpc, flow.fwd.src_ip);
            let u = self.usage.entry(flow.endpoint);
            self.load
                .flow_created(bucket, &mut u.load, flow.is_half_open());
            self.counters.synced_flows += 1;
        }
    }
}

/// The next few local addresses from `start` of a walk over all of them (the IPv4 ones,
/// then the IPv6 ones), and where the walk goes on (none: done).
#[allow(clippy::type_complexity)]
fn announce_batch(
    snap: &Snapshot,
    start: usize,
) -> (
    ChunkedIter<'_, (u16, u32)>,
    ChunkedIter<'_, (u16, u128)>,
    Option<usize>,
) {
    const PER_POLL: usize = 32;
    let (v4, v6) = (snap.sorted_locals(), snap.sorted_locals6());
    let total = v4.len() + v6.len();
    let end = start.saturating_add(PER_POLL).min(total);
    // Both ranges are cut to their lists (an empty one when the walk is past it).
    let batch = v4.iter_range(start..end);
    let from6 = start.saturating_sub(v4.len());
    let batch6 = v6.iter_range(from6..end.saturating_sub(v4.len()));
    (batch, batch6, (end < total).then_some(end))
}

/// The flow a record describes, resolved against this node's snapshot: its endpoint and
/// listener by the consumer-side key, its target by the provider-side one.
fn resolve(snap: &Snapshot, r: &FlowRecord, tcp: TcpState, now_ms: u64) -> Option<Flow> {
    let lref = snap.listener(r.fwd.vpc, r.fwd.dst_ip, r.fwd.proto, r.fwd.dst_port)?;
    let service = snap.service_by_handle(lref.service)?;
    let endpoint = snap.endpoint_by_handle(lref.endpoint)?;
    let listener = service.listeners.get(usize::from(lref.listener))?;
    let target = listener
        .targets
        .iter()
        .position(|t| t.ip == r.rev.src_ip && t.port == r.rev.src_port)?;
    let mut f = Flow::new(r.fwd, r.rev, now_ms.saturating_sub(u64::from(r.age_ms)));
    f.last_seen_ms = now_ms.saturating_sub(u64::from(r.idle_ms));
    f.service = service.handle;
    f.endpoint = endpoint.handle;
    f.listener = lref.listener;
    f.target = u16::try_from(target).ok()?;
    f.idle_s = listener.idle_s;
    f.tcp = tcp;
    f.wscale = r.wscale;
    f.ack_fwd = r.ack_fwd;
    f.ack_rev = r.ack_rev;
    f.win_fwd = r.win_fwd;
    f.win_rev = r.win_rev;
    Some(f)
}
