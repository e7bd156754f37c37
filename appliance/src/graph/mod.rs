//! The packet path of one worker: a graph of small nodes over [`Frame`]s, in the way VPP
//! builds a data plane. No DPDK here: the worker loop feeds mbufs in, tests feed
//! [`crate::graph::frame::VecFrame`]s.
//!
//! ```text
//!             ┌─> arp ──────────────────────────────────────────────> tx / consumed
//! input ──────┼─> icmp ──> (echo) local ──────────────────────────────> tx
//!  (parse     │      └──> (error) ─────────────────────────┐
//!   once)     ├─> local (own address; closed endpoint) ────┼─────────> tx
//!             ├─> forward (consumer → endpoint) ──┐        │
//!             └─> reverse (target → SNAT) ────────┴> rewrite ─> l2 out ─> tx / hold
//!                                                          └──────┘
//!  originate: ARP, RSTs, ICMP errors, on behalf of any node;  upkeep: between bursts
//! ```
//!
//! - `dispatch.rs`: the input node (one parse per packet into its [`context::Ctx`]:
//!   offsets, VLAN, addresses, ports, flags, flow key and hash) and the pass that runs a
//!   burst through the nodes in order, each over all of the burst's packets for it.
//! - `arp.rs`, `local.rs`, `icmp_error.rs`, `forward.rs` (both flow nodes), `rewrite.rs`,
//!   `l2.rs` (the output node; the only writer of Ethernet headers), `originate.rs`,
//!   `upkeep.rs` and `reports.rs` (expiry, revalidation, neighbours, announcements,
//!   operator reports: between bursts, a budget at a time).
//!
//! Refusals that protect the targets (martian sources, IPv4 options, RSTs outside the
//! window, packets too big for the egress) are the nodes' own checks, the same for every
//! packet: there is no second, faster path that could disagree.
//!
//! No-panic contract: every header is parsed with a `new_checked` view before use and every
//! index into the snapshot is checked; a packet that does not fit is dropped and counted by
//! [`DropReason`], never a panic. The fuzz target and property tests feed arbitrary bytes
//! through [`Pipeline::process`] to hold it to that.
//!
//! The pipeline never allocates on the packet path: the flow table, neighbour table, hold
//! queue, burst and output vectors are sized at construction.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::graph::counters::{Counters, DropReason};
use crate::graph::frame::Frame;
use crate::tables::flow::{
    Flow, FlowId, FlowKey, FlowTable, TcpFlags, TcpSeen, Timeouts, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use crate::tables::fragments::Datagrams;
use crate::tables::limits::{ConsumerLoad, FlowLimits};
use crate::tables::neighbour::{
    NeighbourTable, NeighbourTimers, Neighbours, Neighbours6, Resolution, SharedNeighbours,
};
use crate::tables::snapshot::{AttachmentView, ListenerRef, LocalKind, Refusal, Snapshot};
use crate::tables::snat::SnatPorts;
pub use crate::tables::snat::SNAT_PORT_MIN;
use crate::wire::arp::{ArpOperation, ArpPacket};
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetAddress, EthernetFrame};
use crate::wire::icmpv4::{self, Icmpv4Packet, Icmpv4Type};
use crate::wire::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
use crate::wire::tcp::TcpPacket;
use crate::wire::vlan;

/// Places of the half-open queue one eviction looks at, and stale ones the poll tidies:
/// bounds the work of a new flow under pressure (one slot read each).
const EVICT_BUDGET: usize = 64;

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
    /// Flow slots examined for expiry per poll at most: bounds the timer work per loop.
    /// The sweep is paced to visit the whole table once per `upkeep::EXPIRE_SWEEP_MS`,
    /// however fast the loop turns.
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
    /// Datagrams whose fragments this worker tracks at once, and fragments it holds
    /// while their datagram's first fragment has not come (see `fragment.rs`).
    pub fragment_datagrams: usize,
    pub fragments_held: usize,
    /// How long a datagram is tracked after its first fragment, and a fragment held.
    pub fragment_timeout_ms: u64,
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
            fragment_datagrams: 4096,
            fragments_held: 256,
            fragment_timeout_ms: 1000,
        }
    }
}

/// A next hop of either version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    V4(u32),
    V6(u128),
}

struct Held<F> {
    frame: F,
    attachment: u16,
    next_hop: Hop,
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
    /// IPv6 next hops (neighbour discovery), shared like the IPv4 ones.
    neighbours6: Neighbours6,
    held: VecDeque<Held<F>>,
    held_scratch: VecDeque<Held<F>>,
    /// The IPv6 next hops of this pass's [`Next::Hold6`](dispatch::Next::Hold6) verdicts,
    /// which carry an index here: a 16-byte address in the verdict would make every
    /// node's `Result<Next, _>` too big for registers, and its return a store that the
    /// caller's wider load cannot forward from (measured: a quarter of the rewrite and
    /// route nodes' time). Emptied at the start of every pass and of every upkeep.
    hops6: Vec<u128>,
    emitted: Vec<(u16, F)>,
    counters: Counters,
    alloc: FrameAlloc<F>,
    snat: SnatPorts,
    /// Flows and half-open flows per endpoint and per client address, for the limits.
    load: ConsumerLoad,
    last_tick_ms: u64,
    /// The expiry sweep's pace: slots it may still examine, and when it last earned some
    /// (see `upkeep::expire_quota`).
    expire_credit: usize,
    expire_paced_ms: u64,
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
    /// The burst in flight (kept between bursts so that none allocates).
    burst: Option<Box<dispatch::Burst<F>>>,
    /// A flow was added or removed since the flow node loaded its chain heads.
    chains_moved: bool,
    /// The plans of this burst's new flows, as the forward node's prefetch for them
    /// worked them out (`forward::Plans`).
    plans: forward::Plans,
    /// The health checker's queues (none: probe ports are closed like any other).
    probes: Option<crate::health::link::ProbeLink>,
    /// The HA sync thread's queues (none: a single node).
    ha: Option<crate::ha::link::HaLink>,
    /// This node forwards (always without HA; while active with it).
    active: bool,
    /// Flow records for the peer, made on the packet path.
    sync: ha::SyncOut,
    /// HA work spanning polls (takeover sweep, bulk copy, announcements).
    progress: ha::HaProgress,
    /// Fragmented datagrams in flight through this worker.
    datagrams: Datagrams<u32>,
    /// Fragments waiting for their datagram's first fragment, oldest first.
    frag_held: VecDeque<fragment::HeldFragment<F>>,
    /// Fragments whose first fragment came: run through the graph after the burst that
    /// brought it, with their ports in the handoff tag.
    frag_ready: VecDeque<(u16, F)>,
    /// Datagrams whose first fragment came in this pass of the graph, with their ports:
    /// a fragment of one that the same pass put aside follows it at once (holds are
    /// made after every node ran, when the first had already looked for it).
    frag_released: Vec<(crate::tables::fragments::DatagramKey<u32>, (u16, u16))>,
    /// The packets in hand are fragments out of `frag_ready`.
    releasing: bool,
    /// Flow-log records for the writer thread (none: flow logs are off).
    flow_log: Option<Box<flowlog::FlowLogOut>>,
    /// The IPv6 side of flows whose consumer speaks IPv6, by slot (`nat64.rs`).
    consumers6: nat64::Consumers6,
    /// The consumer fold's keys under `settings.flow_hash_seed` (set with it, at the start
    /// or by `set_flow_hash_seed`).
    consumer_fold: crate::tables::vhash::VectorHash,
}

/// One flow, as listed for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowInfo {
    pub worker: u16,
    pub endpoint: u32,
    pub service: u32,
    pub proto: u8,
    /// The consumer and the endpoint address it reached: IPv6 for an IPv6 consumer.
    pub consumer: std::net::SocketAddr,
    pub endpoint_addr: std::net::SocketAddr,
    /// The SNAT address and the target: IPv6 for a NAT66 flow.
    pub snat: std::net::SocketAddr,
    pub target: std::net::SocketAddr,
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

impl<F: Frame> Pipeline<F> {
    /// A pipeline for worker `id`, starting from snapshot `snap`, with a neighbour table
    /// of its own (one worker, tests, benchmarks).
    pub fn new(id: u16, settings: PipelineSettings, alloc: FrameAlloc<F>, snap: &Snapshot) -> Self {
        let tables = SharedNeighbours::new(settings.neighbour_capacity, settings.neighbour_timers);
        Self::with_neighbour_table(id, settings, alloc, snap, tables)
    }

    /// A pipeline for worker `id` that shares `neighbours` with the other workers: a
    /// next hop any of them learns is known to all.
    pub fn with_neighbour_table(
        id: u16,
        settings: PipelineSettings,
        alloc: FrameAlloc<F>,
        snap: &Snapshot,
        neighbours: SharedNeighbours,
    ) -> Self {
        let flows = FlowTable::with_capacity(settings.flow_capacity, settings.timeouts);
        let flows_capacity = flows.capacity();
        let seed = |salt: u64| {
            use std::hash::BuildHasher;
            let seed = settings
                .seed
                .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(id));
            crate::tables::maglev::mix64(seed ^ salt)
        };
        let neighbours6 = Neighbours6::shared(neighbours.v6);
        let neighbours = Neighbours::shared(neighbours.v4);
        let hold = settings.hold_capacity;
        let datagrams = Datagrams::new(
            settings.fragment_datagrams,
            settings.fragment_timeout_ms,
            seed(3),
        );
        let frag_held = VecDeque::with_capacity(settings.fragments_held);
        let mut p = Pipeline {
            id,
            snat: SnatPorts::new(id, settings.workers, settings.snat_quarantine, seed(1)),
            load: ConsumerLoad::new(settings.limits, settings.flow_capacity, seed(2)),
            flows,
            neighbours,
            neighbours6,
            held: VecDeque::with_capacity(hold),
            held_scratch: VecDeque::with_capacity(hold),
            hops6: Vec::with_capacity(dispatch::CHUNK),
            emitted: Vec::with_capacity(256),
            counters: Counters::default(),
            alloc,
            last_tick_ms: 0,
            expire_credit: 0,
            expire_paced_ms: 0,
            announce_next: 0,
            announced_generation: 0,
            originate_tokens: originate::ORIGINATED_PER_SEC,
            originate_refill_ms: 0,
            usage: reports::Usage::new(),
            reports: reports::Reports::default(),
            revalidate: None,
            handed_off: false,
            burst: Some(Box::new(dispatch::Burst::new())),
            chains_moved: false,
            plans: forward::Plans::default(),
            probes: None,
            ha: None,
            active: true,
            sync: ha::SyncOut::default(),
            progress: ha::HaProgress::default(),
            datagrams,
            frag_ready: VecDeque::with_capacity(frag_held.capacity()),
            frag_held,
            frag_released: Vec::new(),
            releasing: false,
            flow_log: None,
            consumers6: nat64::Consumers6::new(
                flows_capacity,
                snap.attachments.iter().any(|a| a.ip6.is_some()),
            ),
            consumer_fold: crate::tables::vhash::VectorHash::new(settings.flow_hash_seed),
            settings,
        };
        p.on_snapshot(snap);
        p
    }

    /// Changes the flow hash seed of a running pipeline, as tests do to make an HA peer
    /// with a seed of its own: the consumer fold's keys follow it.
    #[cfg(test)]
    fn set_flow_hash_seed(&mut self, seed: u64) {
        self.settings.flow_hash_seed = seed;
        self.consumer_fold = crate::tables::vhash::VectorHash::new(seed);
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

    /// The neighbour table this worker uses (shared with the other workers).
    pub fn neighbour_table(&self) -> &Arc<NeighbourTable> {
        self.neighbours.table()
    }

    /// The IPv6 one.
    pub fn neighbour_table6(&self) -> &Arc<crate::tables::neighbour::NeighbourTable6> {
        self.neighbours6.table()
    }
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

mod arp;
pub mod context;
pub mod counters;
mod dispatch;
pub mod flowlog;
mod forward;
mod fragment;
pub mod frame;
mod ha;
mod icmp6;
mod icmp_error;
mod ipv6;
mod l2;
mod local;
pub mod nat64;
mod originate;
mod probe;
mod reports;
mod rewrite;
#[cfg(test)]
mod tests;
mod upkeep;

use forward::refusal_reason;
use l2::{pad_frame, reply_l2, write_l2};
use local::refuse_martian;
use originate::OWN_TTL;
pub use reports::{
    ActiveUsage, EndpointUsage, FlowFilter, FlowQuery, UsageReport, BUSY_PACKETS, CHANGED_PER_POLL,
    SLOTS_BUSY, SLOTS_IDLE,
};
#[cfg(test)]
use upkeep::TIMER_TICK_MS;
