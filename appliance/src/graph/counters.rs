//! Per-worker counters: plain integers on the fast path, published to the rest of the
//! process with relaxed stores a few times per second (single writer, so no read-modify-
//! write atomics), summed on read.

use std::sync::atomic::{fence, AtomicU64, Ordering};

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $name:ident => $label:literal,)*) => {
        /// Why a packet was dropped; doubles as the index of its counter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $name,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (counter array length).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name, used in logs and statistics.
            pub fn label(self) -> &'static str {
                match self {
                    $(DropReason::$name => $label,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// The destination MAC is neither ours nor broadcast (promiscuous ports see everything).
    NotForUs => "not_for_us",
    /// The port/VLAN the frame came in on is not attached to a VPC.
    NoAttachment => "no_attachment",
    /// An EtherType we do not handle, or a stacked VLAN tag.
    UnsupportedEtherType => "unsupported_ethertype",
    /// A header is truncated or inconsistent (length fields, IHL, data offset), or the
    /// Ethernet source is a group or zero address.
    Malformed => "malformed",
    /// The IPv4 header checksum is wrong.
    BadChecksum => "bad_checksum",
    /// A fragment privlink does not translate: of ICMP or another protocol than TCP and
    /// UDP, or to an address of the appliance itself (nothing is reassembled).
    Fragment => "fragment",
    /// No endpoint, SNAT or appliance address matches the destination.
    UnknownDestination => "unknown_destination",
    /// The endpoint exists but does not listen on this protocol/port.
    NoListener => "no_listener",
    /// The endpoint is not `available` (pending acceptance, rejected, ...).
    EndpointNotAvailable => "endpoint_not_available",
    /// No ingress rule of the endpoint's security groups admits the new flow.
    SecurityGroup => "security_group",
    /// The endpoint policy denies the new flow.
    Policy => "policy",
    /// The service has no target that takes new flows.
    NoTarget => "no_target",
    /// The flow table is full: new flows are refused, established ones keep going.
    FlowTableFull => "flow_table_full",
    /// No free SNAT port for this target.
    SnatExhausted => "snat_exhausted",
    /// A reply or non-SYN segment that matches no flow (TCP ones are answered with RST).
    NoFlow => "no_flow",
    /// TTL expired here (an ICMP time exceeded went back).
    TtlExceeded => "ttl_exceeded",
    /// ARP for the next hop failed, or too many packets were waiting for it.
    NeighbourUnresolved => "neighbour_unresolved",
    /// The device still refused the packet after the unsent tail of its burst was offered
    /// again a few times (the TX queue stayed full).
    TxFull => "tx_full",
    /// The ring to the owning worker was full.
    HandoffFull => "handoff_full",
    /// Multi-segment packets are not handled.
    MultiSegment => "multi_segment",
    /// ARP that is neither for one of our addresses nor a useful reply.
    ArpIgnored => "arp_ignored",
    /// IPv6 that is not for one of the appliance's IPv6 addresses, or is not ICMPv6 echo,
    /// neighbour discovery, or TCP/UDP to a dual-stack endpoint, or on an attachment
    /// without an IPv6 address.
    Ipv6NotServed => "ipv6_not_served",
    /// A neighbour solicitation privlink does not answer: not for its own address, a
    /// hop limit other than 255 (RFC 4861 §7.1.1), an address-detection probe sent
    /// otherwise than the RFC says; and every advertisement (nothing is learned yet).
    NdIgnored => "nd_ignored",
    /// An IPv6 packet to an endpoint that needs what IPv6-to-IPv4 translation does not do
    /// yet: a fragment, or an answer from the appliance itself in IPv6 (time exceeded,
    /// packet too big, a RST for a segment no flow knows, an ICMP error translated back).
    Ipv6NotTranslated => "ipv6_not_translated",
    /// An IPv6 consumer whose flow key (its address folded to 32 bits, keyed by a secret
    /// seed) is another consumer's live flow's: refused, the other flow untouched.
    Ipv6FlowCollision => "ipv6_flow_collision",
    /// An IPv4 consumer reaching a listener whose targets are IPv6: only IPv6 consumers
    /// reach those (NAT66; IPv4 to IPv6 is not translated).
    Ipv6TargetsOnly => "ipv6_targets_only",
    /// ICMP we do not answer or translate, or traffic to the appliance's own address.
    IcmpUnsupported => "icmp_unsupported",
    /// A flow ended because what admitted it went away (endpoint rejected or deleted,
    /// rule revoked, target gone after its deregistration delay); TCP got RSTs both ways.
    FlowEnded => "flow_ended",
    /// An IPv4 option list that cannot be read: a length of 0 or 1, or one running past
    /// the header (RFC 7126 §3).
    BadIpOptions => "bad_ip_options",
    /// Loose or strict source routing (IPv4 options 131, 137): the sender would pick the
    /// path (RFC 7126 §4.3, §4.4).
    SourceRoute => "source_route",
    /// A new flow, or a packet to an address of ours, from a source no host can have
    /// (RFC 1812 §5.3.7: 0/8, 127/8, 224/4, 240/4, the attachment prefix's network and
    /// broadcast addresses) or from one of the appliance's own addresses (its address,
    /// an endpoint's, a SNAT address).
    MartianSource => "martian_source",
    /// Larger than the egress MTU with DF set: an ICMP fragmentation-needed went back
    /// (RFC 1191).
    FragNeeded => "frag_needed",
    /// Larger than the egress MTU without DF: privlink does not fragment.
    TooBig => "too_big",
    /// A RST whose sequence number is outside the receiver's window (RFC 5961 §3); the
    /// flow is left as it was.
    RstOutOfWindow => "rst_out_of_window",
    /// No packet buffer for something the appliance originates (ARP, RST).
    NoMbuf => "no_mbuf",
    /// A new flow refused: its client address holds `limits.flows_per_client` flows.
    ClientFlowLimit => "client_flow_limit",
    /// A new TCP flow refused: its client address holds `limits.half_open_per_client`
    /// half-open flows.
    ClientHalfOpenLimit => "client_half_open_limit",
    /// A new flow refused: the endpoint holds `limits.flows_per_endpoint` flows and none
    /// of them is half-open to evict.
    EndpointFlowLimit => "endpoint_flow_limit",
    /// A new TCP flow refused: the endpoint holds `limits.half_open_per_endpoint`
    /// half-open flows and none was found to evict.
    EndpointHalfOpenLimit => "endpoint_half_open_limit",
    /// A frame longer than its egress port's MTU allows (plus the Ethernet header and any
    /// VLAN tag): not sent. (Not `tx_full`: the queue had room.)
    TxOversize => "tx_oversize",
    /// A received frame longer than its port's MTU allows (or than one mbuf holds, when the
    /// device chains it): a device that does not enforce its MTU let it in.
    RxOversize => "rx_oversize",
    /// A segment for a health probe that the checker's queue had no room for (the
    /// checker fell behind; the probe times out or is sent again).
    ProbeBacklog => "probe_backlog",
    /// Received while this node of an HA pair is standby: the active node forwards.
    Standby => "standby",
    /// A fragment overlapping (or repeating) bytes of its datagram already seen: the
    /// datagram is refused from then on (RFC 5722; teardrop).
    FragmentOverlap => "fragment_overlap",
    /// A fragment reaching past 65,535 bytes or past its datagram's end (ping of death),
    /// or a second, different end: the datagram is refused from then on.
    FragmentTooBig => "fragment_too_big",
    /// A datagram in more separate pieces at once than are tracked (8 holes).
    FragmentTooMany => "fragment_too_many",
    /// A first fragment without its whole TCP or UDP header (RFC 1858), a TCP fragment at
    /// offset 8 (it could rewrite the flags), or a fragment other than the last whose
    /// length is not a multiple of 8.
    FragmentTooSmall => "fragment_too_small",
    /// No room for a new datagram in the worker's fragment table.
    FragmentTableFull => "fragment_table_full",
    /// A fragment that came before its datagram's first found the worker's queue of such
    /// fragments (`tables.fragments_held`) full.
    FragmentHeldFull => "fragment_held_full",
    /// A fragment waited for its datagram's first fragment longer than
    /// `timeouts.fragment`.
    FragmentTimeout => "fragment_timeout",
}

/// Drop counters by reason (index: `DropReason as usize`). A type of its own because the
/// standard library gives arrays `Default` only up to 32 elements, and there are more
/// reasons than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drops(pub [u64; DropReason::COUNT]);

impl Default for Drops {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl std::ops::Deref for Drops {
    type Target = [u64; DropReason::COUNT];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Drops {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// A worker's counters, owned by the worker thread and written with plain arithmetic.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub new_flows: u64,
    pub expired_flows: u64,
    pub active_flows: u64,
    pub arp_replies: u64,
    pub arp_requests: u64,
    /// Neighbour advertisements of an own IPv6 address: answers to solicitations, and
    /// the unsolicited ones worker 0 sends when it starts.
    pub nd_advertisements: u64,
    /// Neighbour solicitations sent for IPv6 next hops.
    pub nd_solicitations: u64,
    /// IPv6 next hops learned or confirmed from advertisements and solicitations.
    pub nd_learned: u64,
    pub echo_replies: u64,
    pub rst_sent: u64,
    pub icmp_errors_sent: u64,
    pub icmp_errors_translated: u64,
    pub handoff_out: u64,
    pub handoff_in: u64,
    /// Half-open flows evicted to make room for a new flow (full table, endpoint limit,
    /// SNAT port range).
    pub evicted_half_open: u64,
    /// Ended TCP flows whose SNAT port could not be quarantined (its quarantine bucket
    /// was full): that port may be reused towards its target within 120 s.
    pub snat_quarantine_full: u64,
    /// Set by the main thread on the copy of a worker it found dead or stalled (the daemon
    /// then exits with an error); always 0 on a live worker.
    pub worker_failures: u64,
    /// Health-probe segments sent for the checker, and ones received for it.
    pub probes_sent: u64,
    pub probe_replies: u64,
    /// HA: times this worker became active; peer flows installed or updated; records
    /// that named no endpoint or target here (configurations differ) or found no room;
    /// records the sync thread's queue had no room for (those flows are not synced).
    pub takeovers: u64,
    pub synced_flows: u64,
    pub sync_unresolved: u64,
    pub sync_dropped: u64,
    /// Fragments translated (virtual reassembly), and those of them that waited for their
    /// datagram's first fragment.
    pub fragments: u64,
    pub fragments_held: u64,
    /// Translated packets to IPv6 consumers that did not fit the port's MTU and were
    /// cut into IPv6 fragments here (each counted once, however many pieces).
    pub fragments_made: u64,
    /// Poll loops run, and those that found packets to process: their rates' ratio is
    /// how busy the worker is (a poll-mode worker's CPU is always 100 %).
    pub polls: u64,
    pub busy_polls: u64,
    /// Flow-log records the writer's queue had no room for (the packets went on).
    pub flow_log_dropped: u64,
    pub drops: Drops,
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Adds `other` into `self` (for totals over workers).
    pub fn add(&mut self, other: &Counters) {
        for (a, b) in self.scalars_mut().into_iter().zip(other.scalars()) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += b;
        }
    }

    /// Named scalar counters, in a stable order (for logs and JSON).
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        SCALAR_NAMES.iter().copied().zip(self.scalars()).collect()
    }

    fn scalars(&self) -> [u64; SCALARS] {
        [
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.tx_bytes,
            self.new_flows,
            self.expired_flows,
            self.active_flows,
            self.arp_replies,
            self.arp_requests,
            self.nd_advertisements,
            self.nd_solicitations,
            self.nd_learned,
            self.echo_replies,
            self.rst_sent,
            self.icmp_errors_sent,
            self.icmp_errors_translated,
            self.handoff_out,
            self.handoff_in,
            self.evicted_half_open,
            self.snat_quarantine_full,
            self.worker_failures,
            self.probes_sent,
            self.probe_replies,
            self.takeovers,
            self.synced_flows,
            self.sync_unresolved,
            self.sync_dropped,
            self.fragments,
            self.fragments_held,
            self.fragments_made,
            self.polls,
            self.busy_polls,
            self.flow_log_dropped,
        ]
    }

    fn scalars_mut(&mut self) -> [&mut u64; SCALARS] {
        [
            &mut self.rx_packets,
            &mut self.rx_bytes,
            &mut self.tx_packets,
            &mut self.tx_bytes,
            &mut self.new_flows,
            &mut self.expired_flows,
            &mut self.active_flows,
            &mut self.arp_replies,
            &mut self.arp_requests,
            &mut self.nd_advertisements,
            &mut self.nd_solicitations,
            &mut self.nd_learned,
            &mut self.echo_replies,
            &mut self.rst_sent,
            &mut self.icmp_errors_sent,
            &mut self.icmp_errors_translated,
            &mut self.handoff_out,
            &mut self.handoff_in,
            &mut self.evicted_half_open,
            &mut self.snat_quarantine_full,
            &mut self.worker_failures,
            &mut self.probes_sent,
            &mut self.probe_replies,
            &mut self.takeovers,
            &mut self.synced_flows,
            &mut self.sync_unresolved,
            &mut self.sync_dropped,
            &mut self.fragments,
            &mut self.fragments_held,
            &mut self.fragments_made,
            &mut self.polls,
            &mut self.busy_polls,
            &mut self.flow_log_dropped,
        ]
    }
}

const SCALARS: usize = 33;
const SCALAR_NAMES: [&str; SCALARS] = [
    "rx_packets",
    "rx_bytes",
    "tx_packets",
    "tx_bytes",
    "new_flows",
    "expired_flows",
    "active_flows",
    "arp_replies",
    "arp_requests",
    "nd_advertisements",
    "nd_solicitations",
    "nd_learned",
    "echo_replies",
    "rst_sent",
    "icmp_errors_sent",
    "icmp_errors_translated",
    "handoff_out",
    "handoff_in",
    "evicted_half_open",
    "snat_quarantine_full",
    "worker_failures",
    "probes_sent",
    "probe_replies",
    "takeovers",
    "synced_flows",
    "sync_unresolved",
    "sync_dropped",
    "fragments",
    "fragments_held",
    "fragments_made",
    "polls",
    "busy_polls",
    "flow_log_dropped",
];

/// The published copy of one worker's counters, readable from any thread.
/// One worker's counters as the rest of the process sees them: a sequence lock, so a
/// reader gets one publication whole (the stats log computes rates from consecutive ones).
/// The worker, the only writer, never waits; a reader retries while a publication is in
/// progress (a few hundred nanoseconds).
#[derive(Debug)]
pub struct PublishedCounters {
    /// Odd while the worker writes.
    seq: AtomicU64,
    scalars: [AtomicU64; SCALARS],
    drops: [AtomicU64; DropReason::COUNT],
    /// When the worker published (ms since the daemon's epoch) and the snapshot generation
    /// it was forwarding with.
    at_ms: AtomicU64,
    generation: AtomicU64,
    /// The last whole publication a reader saw: what a reader settles for when the writer
    /// stays mid-way too long (readers only; the worker never touches it).
    last_whole: std::sync::Mutex<Stamped>,
}

/// One publication of a worker's counters.
#[derive(Debug, Clone, Default)]
pub struct Stamped {
    pub counters: Counters,
    pub at_ms: u64,
    pub generation: u64,
}

impl Default for PublishedCounters {
    fn default() -> Self {
        PublishedCounters {
            seq: AtomicU64::new(0),
            scalars: std::array::from_fn(|_| AtomicU64::new(0)),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            at_ms: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            last_whole: std::sync::Mutex::new(Stamped::default()),
        }
    }
}

/// How long a reader waits for a publication in progress before settling for the last
/// whole one it saw: only a writer that stopped mid-way (a panic) or was descheduled that
/// long (an overloaded, unpinned worker) can make it wait.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

impl PublishedCounters {
    /// Called by the owning worker only (single writer): plain stores, no RMW.
    pub fn publish(&self, c: &Counters, at_ms: u64, generation: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // The odd sequence must be visible before any field changes.
        fence(Ordering::Release);
        for (slot, v) in self.scalars.iter().zip(c.scalars()) {
            slot.store(v, Ordering::Relaxed);
        }
        for (slot, v) in self.drops.iter().zip(c.drops.iter()) {
            slot.store(*v, Ordering::Relaxed);
        }
        self.at_ms.store(at_ms, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// The last whole publication: never a mix of two. When the writer stays mid-way
    /// longer than [`READ_PATIENCE`], the last whole one any reader saw (stale, but whole:
    /// a torn copy once made a stats reader under load see rx and tx of different
    /// publications).
    pub fn read_stamped(&self) -> Stamped {
        let mut out = Stamped::default();
        let mut since: Option<std::time::Instant> = None;
        for attempt in 0u32.. {
            let before = self.seq.load(Ordering::Acquire);
            if before.is_multiple_of(2) {
                self.copy_into(&mut out);
                fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    if let Ok(mut last) = self.last_whole.lock() {
                        last.clone_from(&out);
                    }
                    return out;
                }
            }
            if attempt < 64 {
                std::hint::spin_loop();
                continue;
            }
            // The writer is taking long (descheduled?): let it run.
            let start = *since.get_or_insert_with(std::time::Instant::now);
            if start.elapsed() > READ_PATIENCE {
                break;
            }
            std::thread::yield_now();
        }
        match self.last_whole.lock() {
            Ok(last) => last.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The last whole publication's counters.
    pub fn read(&self) -> Counters {
        self.read_stamped().counters
    }

    fn copy_into(&self, out: &mut Stamped) {
        let c = &mut out.counters;
        for (dst, slot) in c.scalars_mut().into_iter().zip(self.scalars.iter()) {
            *dst = slot.load(Ordering::Relaxed);
        }
        for (dst, slot) in c.drops.iter_mut().zip(self.drops.iter()) {
            *dst = slot.load(Ordering::Relaxed);
        }
        out.at_ms = self.at_ms.load(Ordering::Relaxed);
        out.generation = self.generation.load(Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_indices_dense() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(seen.insert(r.label()));
        }
    }

    #[test]
    fn publish_and_sum() {
        let mut a = Counters {
            rx_packets: 3,
            ..Counters::default()
        };
        a.drop(DropReason::Fragment);
        let p = PublishedCounters::default();
        p.publish(&a, 7, 2);
        let stamped = p.read_stamped();
        assert_eq!((stamped.at_ms, stamped.generation), (7, 2));
        let mut total = p.read();
        total.add(&a);
        assert_eq!(total.rx_packets, 6);
        assert_eq!(total.dropped(DropReason::Fragment), 2);
        assert_eq!(total.named()[0], ("rx_packets", 6));
    }

    /// A reader racing the writer never sees one publication's rx with another's tx.
    #[test]
    fn reads_are_never_torn() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let p = Arc::new(PublishedCounters::default());
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (p, done) = (Arc::clone(&p), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut c = Counters::default();
                for i in 1..=50_000u64 {
                    c.rx_packets = i;
                    c.tx_packets = i;
                    c.drops[0] = i;
                    p.publish(&c, i, i);
                }
                done.store(true, Ordering::Release);
            })
        };
        let mut reads = 0u64;
        while !done.load(Ordering::Acquire) || reads == 0 {
            let s = p.read_stamped();
            let c = &s.counters;
            assert_eq!(c.rx_packets, c.tx_packets);
            assert_eq!(c.rx_packets, c.drops[0]);
            assert_eq!(c.rx_packets, s.at_ms);
            assert_eq!(s.at_ms, s.generation);
            reads += 1;
        }
        writer.join().expect("writer");
        assert_eq!(p.read().rx_packets, 50_000);
    }

    /// A writer that stays mid-publication (descheduled, or gone) leaves readers the last
    /// whole publication after their patience, not a mix of two.
    #[test]
    fn a_writer_stuck_mid_way_leaves_the_last_whole_publication() {
        let p = PublishedCounters::default();
        let c = Counters {
            rx_packets: 5,
            tx_packets: 5,
            ..Counters::default()
        };
        p.publish(&c, 1, 1);
        assert_eq!(p.read().rx_packets, 5);
        // Half of the next publication: odd sequence, rx written, tx not yet.
        p.seq.fetch_add(1, Ordering::Relaxed);
        p.scalars[0].store(6, Ordering::Relaxed);
        let s = p.read_stamped();
        assert_eq!((s.counters.rx_packets, s.counters.tx_packets), (5, 5));
        assert_eq!(s.at_ms, 1);
    }
}
