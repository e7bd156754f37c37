//! Running a burst through the graph: every packet is parsed once by the input node into
//! its [`Ctx`], then each node in turn takes the packets whose [`Next`] names it, in
//! arrival order, and says where each goes next. The nodes run in the graph's order
//! (it has no cycles), so one pass over them finishes the burst; verdicts then leave in
//! arrival order.
//!
//! Why node by node rather than packet by packet: a node that looks packets up runs its
//! lookups for all of them before it uses the first answer, so their cache misses
//! overlap (the flow table's chain heads are prefetched by the input node, the flow
//! records by the flow nodes), and each node's code stays hot for the whole burst.
//!
//! The order matters in one place only, and is chosen: ARP runs before the flow nodes, so
//! a neighbour answered in a burst is known to that burst's packets (they leave at once
//! instead of waiting in the hold queue).

use super::context::{self, Ctx, Entry, IpPair};
use super::*;

/// Packets whose lookups one pass of the graph overlaps.
pub const CHUNK: usize = 32;

/// Where a packet goes next: a node of the graph, or out of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// ARP for the attachment: learn, answer.
    Arp,
    /// IPv6 on the attachment: neighbour discovery and echo for its IPv6 addresses; TCP
    /// and UDP to an endpoint's on to [`Next::Forward`], as IPv4 (`nat64.rs`).
    Ipv6,
    /// ICMP to an endpoint or SNAT address: echo goes to [`Next::Local`], errors about
    /// flows are translated.
    Icmp,
    /// An address of the appliance itself answers: echo; or, for a closed endpoint (its
    /// index here), a RST to a connection that outlived it.
    Local,
    Closed(u32),
    /// A fragment of a TCP or UDP datagram to an endpoint or SNAT address: its ports.
    Fragment,
    /// Consumer → endpoint, TCP or UDP.
    Forward,
    /// Target → SNAT address, TCP or UDP.
    Reverse,
    /// Translate for the flow's other side ([`Ctx::other`]).
    Rewrite,
    /// Route out of attachment `att` towards `dst`: next hop, Ethernet header.
    Out {
        att: u16,
        dst: u32,
    },
    /// Done: transmit on this port.
    Tx(u16),
    /// Done: to the worker that owns the flow.
    Handoff(u16),
    /// Done: held until its next hop on attachment `.0` (address `.1`) resolves.
    Hold(u16, u32),
    /// The same for an IPv6 next hop, kept in `Pipeline::hops6` at index `.1` so that
    /// `Next` fits in 8 bytes.
    Hold6(u16, u32),
    /// Done: a fragment held until its datagram's first fragment comes.
    HoldFragment,
    /// Done: consumed (an ARP reply learned).
    Consumed,
    /// Done: dropped for this reason.
    Drop(DropReason),
}

impl Next {
    /// The node this names, as a bit of [`Pending`]; 0 once the packet is done.
    #[inline]
    pub(super) fn node(self) -> Pending {
        match self {
            Next::Arp => ARP,
            Next::Ipv6 => IPV6,
            Next::Icmp => ICMP,
            Next::Local | Next::Closed(_) => LOCAL,
            Next::Fragment => FRAGMENT,
            Next::Forward => FORWARD,
            Next::Reverse => REVERSE,
            Next::Rewrite => REWRITE,
            Next::Out { .. } => OUT,
            _ => 0,
        }
    }
}

/// The nodes some packet of the pass may still wait for, one bit each: a node nobody
/// waits for costs nothing. Set by the input node per packet, and for what a node can
/// lead to once it ran.
pub(super) type Pending = u16;
const ARP: Pending = 1;
const ICMP: Pending = 2;
const LOCAL: Pending = 4;
const FORWARD: Pending = 8;
const REVERSE: Pending = 16;
const REWRITE: Pending = 32;
const OUT: Pending = 64;
const FRAGMENT: Pending = 128;
const IPV6: Pending = 256;

impl From<Result<Next, DropReason>> for Next {
    #[inline]
    fn from(r: Result<Next, DropReason>) -> Next {
        r.unwrap_or_else(Next::Drop)
    }
}

/// A burst in flight: the frames, their contexts and where each goes next. Kept in the
/// pipeline between bursts so that no burst allocates.
pub(super) struct Burst<F> {
    pub frames: Vec<F>,
    pub ctx: [Ctx; CHUNK],
    pub next: [Next; CHUNK],
}

impl<F> Burst<F> {
    pub fn new() -> Self {
        Burst {
            frames: Vec::with_capacity(CHUNK),
            ctx: [Ctx::EMPTY; CHUNK],
            next: [Next::Consumed; CHUNK],
        }
    }
}

/// How many packets ahead of the one it parses the input node prefetches headers for.
const PREFETCH_AHEAD: usize = 3;

/// Starts loading the first cache line of a frame: what the input node reads.
#[inline]
fn prefetch_headers<F: Frame>(frame: &F) {
    if let Some(first) = frame.bytes().first() {
        dpdk_bindings::prefetch::prefetch(first);
    }
}

/// The last answer of [`Snapshot::local`]: a burst mostly goes to one or two addresses.
pub(super) type LocalMemo = Option<((u16, u32), Option<LocalKind>)>;

impl<F: Frame> Pipeline<F> {
    /// Runs one received packet through the graph.
    pub fn process(&mut self, snap: &Snapshot, in_port: u16, frame: F, now_ms: u64) -> Verdict<F> {
        let mut verdict = Verdict::Done;
        self.run_one(snap, in_port, frame, now_ms, true, &mut verdict);
        verdict
    }

    /// Runs a packet that another worker received and handed over ([`Verdict::Handoff`]):
    /// as [`process`](Self::process), but not counted again in `rx_packets`/`rx_bytes`
    /// (the receiving worker did; `handoff_in` counts the arrival).
    pub fn process_handed_off(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frame: F,
        now_ms: u64,
    ) -> Verdict<F> {
        let mut verdict = Verdict::Done;
        self.handed_off = true;
        self.run_one(snap, in_port, frame, now_ms, false, &mut verdict);
        self.handed_off = false;
        verdict
    }

    fn run_one(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frame: F,
        now_ms: u64,
        count: bool,
        verdict: &mut Verdict<F>,
    ) {
        let mut b = self.burst.take().unwrap_or_else(|| Box::new(Burst::new()));
        b.frames.push(frame);
        self.run(snap, in_port, &mut b, now_ms, count, &mut |v| *verdict = v);
        self.burst = Some(b);
    }

    /// Runs a received burst (drained from `frames`) through the graph, CHUNK packets at a
    /// time, and gives each packet's verdict to `out` in arrival order: the same verdicts
    /// and counters as [`process`](Self::process) one packet at a time, except that a
    /// neighbour answered within the burst is known to the packets before its answer.
    pub fn process_burst<O: FnMut(Verdict<F>)>(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frames: &mut Vec<F>,
        now_ms: u64,
        out: &mut O,
    ) {
        let mut b = self.burst.take().unwrap_or_else(|| Box::new(Burst::new()));
        let mut drain = frames.drain(..);
        loop {
            b.frames.extend(drain.by_ref().take(CHUNK));
            if b.frames.is_empty() {
                break;
            }
            self.run(snap, in_port, &mut b, now_ms, true, out);
        }
        drop(drain);
        self.burst = Some(b);
        self.process_released(snap, now_ms, out);
    }

    /// Runs the held fragments whose datagram's first fragment came through the graph
    /// (`fragment.rs`), with verdicts to `out`. [`process_burst`](Self::process_burst)
    /// does at its end; after [`process`](Self::process) or
    /// [`process_handed_off`](Self::process_handed_off), which give one verdict, the
    /// caller does.
    pub fn process_released<O: FnMut(Verdict<F>)>(
        &mut self,
        snap: &Snapshot,
        now_ms: u64,
        out: &mut O,
    ) {
        if self.frag_ready.is_empty() {
            return;
        }
        let mut b = self.burst.take().unwrap_or_else(|| Box::new(Burst::new()));
        let handed_off = std::mem::replace(&mut self.handed_off, false);
        self.releasing = true;
        while let Some(&(port, _)) = self.frag_ready.front() {
            while b.frames.len() < CHUNK {
                match self.frag_ready.front() {
                    Some((p, _)) if *p == port => {}
                    _ => break,
                }
                if let Some((_, f)) = self.frag_ready.pop_front() {
                    b.frames.push(f);
                }
            }
            // Counted when they arrived.
            self.run(snap, port, &mut b, now_ms, false, out);
        }
        self.releasing = false;
        self.handed_off = handed_off;
        self.burst = Some(b);
    }

    /// One pass of the graph over the frames in `b` (at most CHUNK), leaving `b` empty.
    fn run<O: FnMut(Verdict<F>)>(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        b: &mut Burst<F>,
        now_ms: u64,
        count: bool,
        out: &mut O,
    ) {
        self.frag_released.clear();
        self.hops6.clear();
        let mut pending = self.input(snap, in_port, b, count);
        let n = b.frames.len().min(CHUNK);
        let Burst { frames, ctx, next } = b;
        let (frames, ctx, next) = (&mut frames[..n], &mut ctx[..n], &mut next[..n]);
        if pending & ARP != 0 {
            for i in 0..frames.len() {
                if matches!(next[i], Next::Arp) {
                    next[i] = self.arp(snap, &mut frames[i], &ctx[i], now_ms).into();
                }
            }
        }
        if pending & IPV6 != 0 {
            let mut memo: super::ipv6::Memo6 = None;
            for i in 0..frames.len() {
                if matches!(next[i], Next::Ipv6) {
                    next[i] = self
                        .ipv6(snap, &mut frames[i], &mut ctx[i], &mut memo, now_ms)
                        .into();
                    pending |= next[i].node();
                }
            }
        }
        if pending & ICMP != 0 {
            for i in 0..frames.len() {
                if matches!(next[i], Next::Icmp) {
                    next[i] = self.icmp(snap, &mut frames[i], &ctx[i], now_ms).into();
                }
            }
            pending |= LOCAL | OUT;
        }
        if pending & LOCAL != 0 {
            for i in 0..frames.len() {
                next[i] = match next[i] {
                    Next::Local => self.answer_local(snap, &mut frames[i], &ctx[i]),
                    Next::Closed(e) => self.closed_endpoint(snap, e, &mut frames[i], &ctx[i]),
                    _ => continue,
                }
                .into();
            }
        }
        if pending & FRAGMENT != 0 {
            for i in 0..frames.len() {
                if matches!(next[i], Next::Fragment) {
                    next[i] = self.fragment(&mut frames[i], &mut ctx[i], now_ms).into();
                }
            }
            pending |= FORWARD | REVERSE;
        }
        if pending & FORWARD != 0 {
            self.flow_node(snap, frames, ctx, next, now_ms, false);
            pending |= REWRITE | OUT;
        }
        if pending & REVERSE != 0 {
            self.flow_node(snap, frames, ctx, next, now_ms, true);
            pending |= REWRITE | OUT;
        }
        if pending & REWRITE != 0 {
            for i in 0..frames.len() {
                if matches!(next[i], Next::Rewrite) {
                    next[i] = self
                        .rewrite(snap, &mut frames[i], &mut ctx[i], now_ms)
                        .into();
                }
            }
        }
        if pending & OUT != 0 {
            for i in 0..frames.len() {
                if let Next::Out { att, dst } = next[i] {
                    next[i] = self
                        .route(snap, att, dst, &mut frames[i], ctx[i].l3, now_ms)
                        .into();
                }
            }
        }
        self.finish(snap, in_port, b, now_ms, out);
    }

    /// The input node: counts, parses (L2, then IPv4 and its TCP/UDP ports), and sends each
    /// packet to the node its destination calls for. Starts the flow lookups: the chain
    /// heads of every TCP/UDP packet are prefetched here, a whole node ahead of their use.
    fn input(&mut self, snap: &Snapshot, in_port: u16, b: &mut Burst<F>, count: bool) -> Pending {
        let mut memo: LocalMemo = None;
        let mut pending = 0;
        // The headers of the packets a few places ahead start on their way to the cache
        // while this one is parsed (a NIC's DMA leaves them in memory, or at best in L3).
        for f in b.frames.iter().take(PREFETCH_AHEAD) {
            prefetch_headers(f);
        }
        let n = b.frames.len().min(CHUNK);
        for i in 0..n {
            if let Some(ahead) = b.frames.get(i + PREFETCH_AHEAD) {
                prefetch_headers(ahead);
            }
            let (Some(frame), Some(ctx), Some(slot)) =
                (b.frames.get_mut(i), b.ctx.get_mut(i), b.next.get_mut(i))
            else {
                break;
            };
            if count {
                self.counters.rx_packets += 1;
                self.counters.rx_bytes += frame.bytes().len() as u64;
            }
            let next = match self.classify(snap, in_port, frame, ctx, &mut memo) {
                Ok(next) => next,
                Err(reason) => {
                    // Not attributed to an endpoint: it never reached one.
                    ctx.local = None;
                    Next::Drop(reason)
                }
            };
            if matches!(next, Next::Forward | Next::Reverse) {
                // parse_ipv4 hashed the key.
                self.flows.prefetch_head(ctx.hash, next == Next::Reverse);
            }
            pending |= next.node();
            *slot = next;
        }
        pending
    }

    /// Where a packet goes first: the input node's decision.
    #[inline]
    fn classify(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frame: &mut F,
        ctx: &mut Ctx,
        memo: &mut LocalMemo,
    ) -> Result<Next, DropReason> {
        // The context is reused from the last burst: what a node may read before this
        // packet sets it starts out empty (the rest is set before it is read).
        ctx.local = None;
        ctx.l4 = Err(DropReason::Malformed);
        ctx.ipv6 = false;
        if !frame.is_contiguous() {
            return Err(DropReason::MultiSegment);
        }
        let entry = context::parse_l2(snap, in_port, frame.bytes(), ctx)?;
        match entry {
            Entry::Arp => return Ok(Next::Arp),
            Entry::Ipv6 => return Ok(Next::Ipv6),
            Entry::Ipv4 => {}
        }
        if !self.active {
            return Err(DropReason::Standby);
        }
        context::parse_ipv4(snap, frame.bytes(), ctx, memo, self.flows.index_keys())?;
        // Drop Ethernet padding so lengths from here on are the IP packet's own.
        if frame.bytes().len() > ctx.end() && !frame.set_len(ctx.end()) {
            return Err(DropReason::Malformed);
        }
        let IpPair::V4 { dst, .. } = ctx.addrs;
        if ctx.frag.is_some() {
            return match (ctx.local, ctx.proto) {
                (Some(LocalKind::Endpoint(_) | LocalKind::Snat(_)), PROTO_TCP | PROTO_UDP) => {
                    Ok(Next::Fragment)
                }
                (None, _) if snap.closed_endpoint(ctx.att, dst).is_none() => {
                    Err(DropReason::UnknownDestination)
                }
                _ => Ok(Next::Drop(DropReason::Fragment)),
            };
        }
        Ok(match ctx.local {
            None => match snap.closed_endpoint(ctx.att, dst) {
                Some(e) => Next::Closed(e),
                None => return Err(DropReason::UnknownDestination),
            },
            Some(LocalKind::Own) => Next::Local,
            Some(LocalKind::Endpoint(_)) => match ctx.proto {
                PROTO_TCP | PROTO_UDP => Next::Forward,
                PROTO_ICMP => Next::Icmp,
                // Counted against the endpoint (finish): ctx.local stays.
                _ => Next::Drop(DropReason::NoListener),
            },
            Some(LocalKind::Snat(_)) => match ctx.proto {
                PROTO_TCP | PROTO_UDP => Next::Reverse,
                PROTO_ICMP => Next::Icmp,
                _ => return Err(DropReason::NoFlow),
            },
        })
    }

    /// The end of a pass: verdicts out in arrival order, holds into the hold queue, drops
    /// counted (and, for packets to an endpoint, against that endpoint).
    fn finish<O: FnMut(Verdict<F>)>(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        b: &mut Burst<F>,
        now_ms: u64,
        out: &mut O,
    ) {
        for ((frame, ctx), next) in b.frames.drain(..).zip(&b.ctx).zip(&b.next) {
            let (local, next) = (ctx.local, *next);
            match next {
                Next::Tx(port) => out(Verdict::Tx(port, frame)),
                Next::Handoff(w) => out(Verdict::Handoff(w, frame)),
                Next::Hold(att, hop) => {
                    self.hold(frame, att, Hop::V4(hop), now_ms);
                    out(Verdict::Done);
                }
                Next::Hold6(att, slot) => {
                    self.hold6(frame, att, slot, now_ms);
                    out(Verdict::Done);
                }
                Next::HoldFragment => {
                    self.hold_fragment(frame, ctx, in_port, now_ms);
                    out(Verdict::Done);
                }
                Next::Consumed => out(Verdict::Done),
                Next::Drop(reason) => {
                    self.counters.drop(reason);
                    // Drops are rare next to forwarded packets: attributing them to the
                    // endpoint costs nothing on the forwarding path.
                    if let Some(LocalKind::Endpoint(e)) = local {
                        if let Some(ep) = snap.endpoint_by_handle(e) {
                            self.usage.entry(ep.handle).drops[reason as usize] += 1;
                            if let Some(fl) = self.flow_log.as_mut() {
                                let dport = ctx.l4.map_or(0, |l| l.dport);
                                let bytes = frame.bytes().len() as u64;
                                let src = super::nat64::source_of(frame.bytes(), ctx);
                                fl.reject(ep.handle, src, ctx.proto, dport, reason, bytes);
                            }
                        }
                    }
                    out(Verdict::Done);
                }
                // Every node ran, in the graph's order: nothing can still be on its way. If
                // a node ever sends a packet backwards, debug builds (tests, fuzzers) say
                // so; release builds drop it, counted.
                other => {
                    debug_assert!(false, "a packet left the graph at {other:?}");
                    self.counters.drop(DropReason::Malformed);
                    out(Verdict::Done);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node returns `Result<Next, DropReason>`: within two registers it comes back in
    /// them; larger, it goes through memory, written in parts and read back whole, which
    /// the CPU cannot forward (a stall of a quarter of the rewrite and route nodes' time
    /// when `Hold6` carried its address).
    #[test]
    fn a_verdict_is_returned_in_registers() {
        assert!(
            std::mem::size_of::<Next>() <= 8,
            "{}",
            std::mem::size_of::<Next>()
        );
        assert!(std::mem::size_of::<Result<Next, DropReason>>() <= 16);
    }
}
