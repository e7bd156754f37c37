//! The flow nodes: forward (consumer → endpoint) and reverse (target → SNAT address).
//! Each finds the packet's flow (forward: creates it for a connection request or a new
//! UDP datagram, through the listener, the access rules, Maglev and a SNAT port), checks
//! what the flow's state says of the packet (TTL, a RST's sequence number, the egress
//! MTU), records it on the flow, and sends it to rewrite with the flow's other side.
//!
//! A node takes all of a burst's packets for it at once: it loads their chain heads
//! (prefetched by the input node) and prefetches their flow records, and for new flows
//! the client's gauges and the chain their SNAT port search will probe first, before it
//! handles the first packet; so the misses of a burst's lookups overlap.

use super::context::{Ctx, L4};
use super::dispatch::{Next, CHUNK};
use super::*;
use crate::ha::record::RecordKind;

impl<F: Frame> Pipeline<F> {
    /// The flow node of one direction (`rev`: replies) over the burst's packets for it.
    pub(super) fn flow_node(
        &mut self,
        snap: &Snapshot,
        frames: &mut [F],
        ctx: &mut [Ctx],
        next: &mut [Next],
        now_ms: u64,
        rev: bool,
    ) {
        let want = if rev { Next::Reverse } else { Next::Forward };
        // This node's packets: their index in the burst and chain head.
        let mut mine = [(0usize, 0u32); CHUNK];
        let mut count = 0;
        let mut new_flows = 0u16;
        let mut probes = [0u64; CHUNK];
        let mut probed = 0;
        self.plans.clear();
        for (i, (c, n)) in ctx.iter().zip(next.iter()).enumerate().take(CHUNK) {
            if std::mem::discriminant(n) != std::mem::discriminant(&want) {
                continue;
            }
            let mut head = 0;
            if let Ok(l4) = c.l4 {
                if !rev || self.snat.owner(l4.dport) == self.id {
                    head = self.flows.head(c.hash, rev);
                    self.flows.prefetch_flow(head);
                    if c.ipv6 {
                        // Its IPv6 side too (the head is the flow, but for a collision).
                        self.consumers6.prefetch(head);
                    }
                    if !rev && l4.tcp.is_some_and(|t| t.flags.is_connection_request()) {
                        new_flows += 1;
                        self.load.prefetch_client(c.key.vpc, c.key.src_ip);
                        if let Some(h) = self.snat_probe(snap, c.key, new_flows) {
                            self.flows.prefetch_head(h, true);
                            probes[probed] = h;
                            probed += 1;
                        }
                    }
                }
            }
            mine[count] = (i, head);
            count += 1;
        }
        // New flows: the first flow of each probed reverse chain too.
        for h in &probes[..probed] {
            self.flows.prefetch_keys(self.flows.head(*h, true));
        }
        // A head loaded above is stale once a flow is added or removed.
        self.chains_moved = false;
        for &(i, head) in &mine[..count] {
            let (Some(frame), Some(c)) = (frames.get_mut(i), ctx.get_mut(i)) else {
                continue;
            };
            let head = (!self.chains_moved).then_some(head);
            let n = if rev {
                self.reverse(snap, frame, c, head, now_ms)
            } else {
                self.forward(snap, frame, c, head, now_ms)
            }
            .into();
            if let Some(slot) = next.get_mut(i) {
                *slot = n;
            }
        }
    }

    /// The flow of `key` in direction `rev` from chain `head` when it is still good, else
    /// by a fresh lookup; an expired one is removed on the spot.
    #[inline(always)]
    pub(super) fn find_flow(
        &mut self,
        key: &FlowKey,
        head: Option<u32>,
        rev: bool,
        now_ms: u64,
    ) -> Option<FlowId> {
        let found = match (head, rev) {
            (Some(h), _) => self.flows.find_from(h, key, rev),
            (None, false) => self.flows.lookup_forward(key),
            (None, true) => self.flows.lookup_reverse(key),
        };
        self.live_flow(found, now_ms)
    }

    /// Consumer → endpoint: find or create the flow, then track the packet on it.
    #[inline]
    fn forward(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        head: Option<u32>,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let seg = ctx.l4?;
        let flags = seg.tcp.map(|t| t.flags);
        let key = ctx.key;
        let (src, dst) = ctx.v4();
        let att_idx = ctx.att;
        // Established flows first: their listener, endpoint state and access rules were
        // checked when they were created, and every snapshot change re-checks live flows
        // (revalidate_some), so the per-packet path skips those lookups.
        let mut id = self.find_flow(&key, head, false, now_ms);
        if let (Some(fid), Some(f)) = (id, flags) {
            let reopen = f.is_connection_request()
                && self.flows.get(fid).is_some_and(|fl| fl.tcp.allows_reopen());
            if reopen {
                if let Some(old) = self.flows.remove(fid) {
                    self.chains_moved = true;
                    self.flow_gone(Some(fid), &old, now_ms);
                }
                id = None;
            }
        }
        let id = match id {
            Some(id) => {
                if ctx.ipv6 {
                    self.side6(snap, ctx, id, (false, false))?;
                }
                if ctx.ttl <= 1 {
                    return self.time_exceeded(snap, att_idx, frame, ctx);
                }
                self.check_rst(id, true, &seg)?;
                id
            }
            // Only a datagram's first fragment, which has the ports of its own, may create
            // a flow (the fragment node gave the others theirs).
            None if ctx.is_later_fragment() => return Err(DropReason::NoFlow),
            None => {
                // An established flow cannot have a martian source (it was checked when
                // the flow was created), so only new flows pay for the check. (An IPv6
                // source's fold is a martian: its own address is checked instead.)
                let src6 = ctx.ipv6.then_some(ctx.addrs6[0]);
                match src6 {
                    Some(s) if super::nat64::martian6(snap, att_idx, s) => {
                        return Err(DropReason::MartianSource);
                    }
                    Some(_) => {}
                    None => refuse_martian(snap, att_idx, src)?,
                }
                let plan = self.plans.take(&key);
                let lref = match plan {
                    Some(p) => p.lref,
                    None => snap
                        .listener(att_idx, dst, ctx.proto, seg.dport)
                        .ok_or(DropReason::NoListener)?,
                };
                let endpoint = snap
                    .endpoint_by_handle(lref.endpoint)
                    .ok_or(DropReason::NoListener)?;
                // Nothing goes back (time exceeded, RST) to a consumer the endpoint would
                // not admit: it must not learn more than silence.
                match src6 {
                    Some(s) => endpoint.admits_ipv6(s, ctx.proto, seg.dport),
                    None => endpoint.admits(src, ctx.proto, seg.dport),
                }
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
                            ctx,
                            f,
                            DropReason::EndpointNotAvailable,
                        );
                    }
                    return Err(DropReason::EndpointNotAvailable);
                }
                if ctx.ttl <= 1 {
                    return self.time_exceeded(snap, att_idx, frame, ctx);
                }
                if let Some(f) = flags {
                    if !f.is_connection_request() {
                        return self.reset_unknown(
                            snap,
                            att_idx,
                            frame,
                            ctx,
                            f,
                            DropReason::NoFlow,
                        );
                    }
                }
                let plan = match plan {
                    Some(p) => p,
                    None => plan_flow(snap, &key, lref, self.settings.flow_hash_seed)?,
                };
                let id = self.new_flow(snap, key, plan, endpoint.handle, now_ms)?;
                if ctx.ipv6 {
                    self.side6(snap, ctx, id, (true, false))?;
                    if let Some(f) = self.flows.get(id) {
                        let side = self.consumers6.get(id).copied();
                        self.sync.record_with(RecordKind::Create, f, now_ms, side);
                    }
                }
                id
            }
        };
        self.track(snap, id, true, frame, ctx, seg.tcp, now_ms)
    }

    /// Target → SNAT address: the reply path back to the consumer. A reply to a port
    /// another worker owns goes to that worker.
    #[inline]
    fn reverse(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        head: Option<u32>,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let seg = ctx.l4?;
        let owner = self.snat.owner(seg.dport);
        if owner != self.id {
            frame.set_handoff_tag(fragment::handoff_tag(ctx));
            return Ok(Next::Handoff(owner));
        }
        let key = ctx.key;
        let Some(id) = self.find_flow(&key, head, true, now_ms) else {
            if let Some(t) = seg.tcp {
                if !t.flags.rst() {
                    return self.reset_unknown(
                        snap,
                        ctx.att,
                        frame,
                        ctx,
                        t.flags,
                        DropReason::NoFlow,
                    );
                }
            }
            return Err(DropReason::NoFlow);
        };
        if ctx.ipv6 {
            self.side6(snap, ctx, id, (false, true))?;
        }
        if ctx.ttl <= 1 {
            return self.time_exceeded(snap, ctx.att, frame, ctx);
        }
        self.check_rst(id, false, &seg)?;
        self.track(snap, id, false, frame, ctx, seg.tcp, now_ms)
    }

    /// Records the packet on flow `id` and names the flow's other side for rewrite: a
    /// packet the egress cannot carry is answered (DF) or dropped instead; a SYN has its
    /// MSS clamped and its window scale noted.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn track(
        &mut self,
        snap: &Snapshot,
        id: FlowId,
        from_consumer: bool,
        frame: &mut F,
        ctx: &mut Ctx,
        tcp: Option<TcpSeen>,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        // The other side's key, seen from its end, has our new source as its destination.
        // (This side's is the packet's own: its attachment is the one it arrived on.)
        let other = {
            let flow = self.flows.get(id).ok_or(DropReason::NoFlow)?;
            if from_consumer {
                flow.rev
            } else {
                flow.fwd
            }
        };
        let egress = snap.attachment(other.vpc).ok_or(DropReason::NoAttachment)?;
        // What leaves: an IPv6 consumer's packet loses its IPv6 header and extensions for
        // 20 bytes of IPv4; a reply to one gains 40 bytes of IPv6 for its IPv4 header.
        // A NAT66 packet stays IPv6, extension headers and all.
        let nat66 = super::nat64::is_snat6(if from_consumer {
            other.dst_ip
        } else {
            ctx.key.dst_ip
        });
        let to_v6 = !from_consumer && super::nat64::is_ipv6_consumer(other.src_ip);
        let seg_len = ctx.total_len - ctx.header_len;
        let out_len = match (ctx.ipv6, to_v6) {
            _ if nat66 => ctx.total_len,
            (true, _) => seg_len + crate::wire::ipv4::HEADER_LEN,
            (false, true) => seg_len + crate::wire::ipv6::HEADER_LEN,
            (false, false) => ctx.total_len,
        };
        // Towards an IPv6 consumer, what may be fragmented is cut into IPv6 fragments
        // that fit (nat64.rs), as RFC 7915 asks.
        let cut = to_v6 && !ctx.df && !nat66;
        if out_len > usize::from(egress.mtu) && !cut {
            if nat66 {
                return self.too_big(snap, ctx.att, frame, ctx, egress.mtu);
            }
            if ctx.ipv6 {
                let mtu = super::icmp6::mtu_for_ipv6(egress.mtu, ctx.header_len)
                    .ok_or(DropReason::TooBig)?;
                return self.too_big(snap, ctx.att, frame, ctx, mtu);
            }
            // What the target may send so that its translation fits.
            let fits = usize::from(egress.mtu) - (out_len - ctx.total_len);
            let mtu = u16::try_from(fits).unwrap_or(egress.mtu);
            return self.too_big(snap, ctx.att, frame, ctx, mtu);
        }
        if tcp.is_some_and(|t| t.flags.syn()) {
            let clamp = snap
                .attachment(ctx.att)
                .and_then(|a| a.mss_clamp)
                .into_iter()
                .chain(egress.mss_clamp)
                .min();
            let seg = frame
                .bytes_mut()
                .get_mut(ctx.l4_at()..ctx.end())
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
        let bytes32 = u32::try_from(ctx.total_len).unwrap_or(u32::MAX);
        let flow = self.flows.get_mut(id).ok_or(DropReason::NoFlow)?;
        let before = flow.tcp;
        if flow.record(now_ms, from_consumer, bytes32, tcp) {
            self.half_open_changed(id);
        }
        if self.sync.on {
            if let Some(f) = self.flows.get(id).filter(|f| f.tcp != before) {
                self.sync.record(RecordKind::Update, f, now_ms);
            }
        }
        ctx.other = other;
        ctx.flow = id;
        Ok(Next::Rewrite)
    }

    /// A flow id if the flow is still alive; an expired one is removed on the spot.
    #[inline]
    fn live_flow(&mut self, id: Option<FlowId>, now_ms: u64) -> Option<FlowId> {
        let id = id?;
        if self.flows.is_expired(id, now_ms) {
            if let Some(old) = self.flows.remove(id) {
                self.chains_moved = true;
                self.flow_gone(Some(id), &old, now_ms);
            }
            self.counters.expired_flows += 1;
            return None;
        }
        Some(id)
    }

    /// The reverse-index hash that the SNAT port search of the `k`-th new flow of this
    /// burst will probe first, if the flow is created as predicted: the flow node
    /// prefetches that chain. A wrong guess (the flow exists, or the first port is taken)
    /// costs a useless prefetch. The flow's plan is kept for its creation.
    #[inline]
    fn snat_probe(&mut self, snap: &Snapshot, key: FlowKey, k: u16) -> Option<u64> {
        let lref = snap.listener(key.vpc, key.dst_ip, key.proto, key.dst_port)?;
        let plan = plan_flow(snap, &key, lref, self.settings.flow_hash_seed).ok()?;
        let mut rev = plan.rev;
        rev.dst_port = self.snat_port_guess(k);
        self.plans.keep(key, plan);
        Some(self.flows.index_hash(&rev))
    }

    /// Drops a RST outside the receiver's window (RFC 5961 §3): a blind RST must not end a
    /// flow, and the endpoint behind us would drop it anyway. Nothing else is checked.
    #[inline]
    fn check_rst(&self, id: FlowId, from_consumer: bool, seg: &L4) -> Result<(), DropReason> {
        if seg.tcp.is_some_and(|t| t.flags.rst()) {
            let flow = self.flows.get(id).ok_or(DropReason::NoFlow)?;
            if !flow.rst_in_window(from_consumer, seg.seq) {
                return Err(DropReason::RstOutOfWindow);
            }
        }
        Ok(())
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
        plan: Plan,
        endpoint_handle: u32,
        now_ms: u64,
    ) -> Result<FlowId, DropReason> {
        let service = plan.service_in(snap)?;
        let mut rev = plan.rev;
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
            chains_moved,
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
            return self.new_flow_under_pressure(snap, key, plan, endpoint_handle, now_ms);
        };
        rev.dst_port = port;
        let flow = new_flow_record(key, rev, service, &plan, endpoint_handle, now_ms);
        let id = flows.insert(flow).map_err(|_| DropReason::FlowTableFull)?;
        self.sync.record(RecordKind::Create, &flow, now_ms);
        *chains_moved = true;
        counters.new_flows += 1;
        u.new_flows += 1;
        load.flow_created(client, &mut u.load, tcp);
        Ok(id)
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
        plan: Plan,
        endpoint_handle: u32,
        now_ms: u64,
    ) -> Result<FlowId, DropReason> {
        let service = plan.service_in(snap)?;
        let mut rev = plan.rev;
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
        let flow = new_flow_record(key, rev, service, &plan, endpoint_handle, now_ms);
        let Ok(id) = self.flows.insert(flow) else {
            return Err(DropReason::FlowTableFull);
        };
        self.sync.record(RecordKind::Create, &flow, now_ms);
        self.chains_moved = true;
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
    pub(super) fn half_open_changed(&mut self, id: FlowId) {
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
        self.chains_moved = true;
        self.sync.record(RecordKind::End, old, self.last_tick_ms);
        // The queue gives no slot: an IPv6 consumer's address is not logged.
        Self::log_flow_end(
            &mut self.flow_log,
            &mut self.counters,
            old,
            None,
            self.last_tick_ms,
        );
        let u = self.usage.fold(old);
        self.load.flow_ended(old, &mut u.load);
        self.counters.evicted_half_open += 1;
    }

    /// The SNAT port [`SnatPorts::pick`] tries first for the `k`-th new flow from now
    /// (k >= 1): what the burst path prefetches for.
    #[inline]
    pub(super) fn snat_port_guess(&self, k: u16) -> u16 {
        self.snat.guess(k)
    }
}

/// A new flow's record: translation (`rev`, the plan's reverse key with its SNAT port),
/// ids of the snapshot it was admitted by.
#[inline]
fn new_flow_record(
    key: FlowKey,
    rev: FlowKey,
    service: &crate::tables::snapshot::ServiceView,
    plan: &Plan,
    endpoint: u32,
    now_ms: u64,
) -> Flow {
    let mut flow = Flow::new(key, rev, now_ms);
    flow.service = service.handle;
    flow.idle_s = service
        .listeners
        .get(usize::from(plan.lref.listener))
        .map_or(0, |l| l.idle_s);
    flow.listener = plan.lref.listener;
    flow.target = plan.target;
    flow.endpoint = endpoint;
    flow
}

/// Where a new flow of `key` through listener `lref` goes: the index of the chosen target
/// (Maglev over the key hash under `seed`, the daemon's per-start secret, so every worker
/// agrees and no client can aim at a target), and its reverse key with the SNAT port still
/// 0.
#[inline]
pub(super) fn plan_flow(
    snap: &Snapshot,
    key: &FlowKey,
    lref: ListenerRef,
    seed: u64,
) -> Result<Plan, DropReason> {
    let position = snap
        .service_position(lref.service)
        .ok_or(DropReason::NoListener)?;
    let service = snap.service_at(position).ok_or(DropReason::NoListener)?;
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
    // IPv6 targets (NAT66) are reached from IPv6 SNAT addresses, by IPv6 consumers only.
    let snat_ip = if listener.ipv6 {
        if !super::nat64::is_ipv6_consumer(key.src_ip) {
            return Err(DropReason::Ipv6TargetsOnly);
        }
        let n = service.snat6.len();
        service
            .snat6
            .get((hash >> 32) as usize % n.max(1))
            .ok_or(DropReason::SnatExhausted)?
            .0
    } else {
        let n = service.snat.len();
        *service
            .snat
            .get((hash >> 32) as usize % n.max(1))
            .ok_or(DropReason::SnatExhausted)?
    };
    let rev = FlowKey {
        src_ip: target.ip,
        dst_ip: snat_ip,
        src_port: target.port,
        dst_port: 0,
        vpc: service.attachment,
        proto: key.proto,
    };
    Ok(Plan {
        lref,
        service: position,
        target: ti,
        rev,
    })
}

/// What [`plan_flow`] decides for a new flow: a function of its key, the snapshot and the
/// flow hash seed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Plan {
    pub lref: ListenerRef,
    /// The service's position in the snapshot the plan was made in.
    pub service: u32,
    /// The chosen target's index in the listener.
    pub target: u16,
    /// The flow's reverse key, SNAT port still 0.
    pub rev: FlowKey,
}

impl Plan {
    /// The plan's service, in the snapshot the plan was made in.
    #[inline]
    fn service_in<'s>(
        &self,
        snap: &'s Snapshot,
    ) -> Result<&'s crate::tables::snapshot::ServiceView, DropReason> {
        snap.service_at(self.service).ok_or(DropReason::NoListener)
    }
}

/// The plans the forward node made for one burst's connection requests while it
/// prefetched for them, by flow key (at most a burst's worth, in the packets' order), so
/// that creating each flow does not look its listener, service and target up again. A
/// plan depends on nothing but its key within one pass (one snapshot, one seed), so any
/// plan kept for a packet's key is that packet's.
#[derive(Debug, Default)]
pub(super) struct Plans {
    kept: Vec<(FlowKey, Plan)>,
    /// Where the next packet's plan most likely is: packets are handled in the order
    /// their plans were made.
    next: usize,
}

impl Plans {
    #[inline]
    fn clear(&mut self) {
        self.kept.clear();
        self.next = 0;
    }

    #[inline]
    fn keep(&mut self, key: FlowKey, plan: Plan) {
        // Never grows past a burst's worth once it has reached it.
        if self.kept.len() < CHUNK {
            self.kept.push((key, plan));
        }
    }

    /// The plan kept for `key`, if any.
    #[inline]
    fn take(&mut self, key: &FlowKey) -> Option<Plan> {
        let later = self.kept.get(self.next..).unwrap_or_default();
        let at = match later.iter().position(|(k, _)| k == key) {
            Some(i) => self.next + i,
            None => self.kept.iter().position(|(k, _)| k == key)?,
        };
        self.next = at + 1;
        self.kept.get(at).map(|(_, p)| *p)
    }
}

/// The drop reason of an access-rule refusal.
#[inline]
pub(super) fn refusal_reason(r: Refusal) -> DropReason {
    match r {
        Refusal::SecurityGroup => DropReason::SecurityGroup,
        Refusal::Policy => DropReason::Policy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src_ip: 0x0a01_000a,
            dst_ip: 0x0a01_0064,
            src_port: sport,
            dst_port: 80,
            vpc: 0,
            proto: PROTO_TCP,
        }
    }

    fn plan(target: u16) -> Plan {
        Plan {
            lref: ListenerRef {
                endpoint: 1,
                service: 2,
                listener: 0,
            },
            service: 0,
            target,
            rev: key(target),
        }
    }

    /// Each packet gets the plan kept for its own key: in order, out of order (a packet
    /// whose probe kept none), twice for one key (a retransmitted SYN), and none for a key
    /// nobody planned; a new pass starts with none.
    #[test]
    fn a_packet_gets_the_plan_kept_for_its_key() {
        let mut plans = Plans::default();
        for p in 1..=4 {
            plans.keep(key(p), plan(p));
        }
        assert_eq!(plans.take(&key(1)), Some(plan(1)));
        assert_eq!(plans.take(&key(3)), Some(plan(3)));
        assert_eq!(plans.take(&key(2)), Some(plan(2)));
        assert_eq!(plans.take(&key(2)), Some(plan(2)));
        assert_eq!(plans.take(&key(9)), None);
        assert_eq!(plans.take(&key(4)), Some(plan(4)));
        plans.clear();
        assert_eq!(plans.take(&key(4)), None);
    }

    /// No more than a burst's plans are kept (the rest are planned again when made).
    #[test]
    fn plans_are_bounded_by_a_burst() {
        let mut plans = Plans::default();
        for p in 0..=u16::try_from(CHUNK).unwrap() {
            plans.keep(key(p), plan(p));
        }
        assert_eq!(plans.kept.len(), CHUNK);
        assert_eq!(plans.take(&key(0)), Some(plan(0)));
        assert_eq!(plans.take(&key(u16::try_from(CHUNK).unwrap())), None);
    }
}
