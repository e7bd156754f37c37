//! Per-consumer flow limits of one worker: how many flows, and how many half-open TCP
//! flows (handshake not complete), each endpoint and each client address holds in this
//! worker's flow table, and whether a new flow may take one more.
//!
//! Nothing here runs per packet: the gauges move when a flow is created, when it ends, and
//! when a TCP flow enters or leaves half-open (its handshake completes), which the packet
//! path learns from the state change it computes anyway.
//!
//! Limits are per worker: each worker owns its flows, so counting across workers would
//! need shared writes on the packet path. The configuration's limits are for the whole
//! appliance and each worker enforces `⌈limit / workers⌉`; RSS spreads one client's
//! connections (and so one endpoint's) over the workers by their ports, so the share of
//! each worker is close to even.
//!
//! Endpoints are counted exactly (in the worker's per-endpoint usage, one entry per
//! endpoint). Client addresses are counted in a count-min sketch: a seeded hash of (VPC,
//! address) picks two of `capacity / 8` counters (at least 1024), both count the client's
//! flows, and the client holds the smaller of the two. Memory stays fixed (1 byte per flow
//! of capacity) whatever a flood of spoofed sources does; the price is that a count can
//! only be too high, when both of a client's counters are shared with heavy clients. With
//! at most `capacity / limit` clients at a limit, an innocent client is refused with a
//! probability below `(8 / limit)²` (0.1 % at a limit of 256 flows per worker, 4e-6 at
//! the default 4096 half-open flows). The seed keeps a consumer from choosing addresses
//! that share counters.

use crate::graph::counters::DropReason;
use crate::tables::flow::Flow;
use crate::tables::maglev::mix64;

/// Per-worker limits on concurrent flows; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowLimits {
    /// Flows of one endpoint.
    pub flows_per_endpoint: u32,
    /// Half-open TCP flows of one endpoint.
    pub half_open_per_endpoint: u32,
    /// Flows of one client address (per consumer VPC).
    pub flows_per_client: u32,
    /// Half-open TCP flows of one client address.
    pub half_open_per_client: u32,
}

/// Flows and half-open flows held by one endpoint or one client bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub flows: u32,
    pub half_open: u32,
}

// Counts never exceed the flow table's capacity (< 2^30), so plain arithmetic cannot
// overflow; a decrement below zero would be a bookkeeping bug (asserted in tests, and
// wrapping rather than panicking in release, where it could only over-count).
impl Load {
    #[inline]
    fn add(&mut self, half_open: bool) {
        self.flows = self.flows.wrapping_add(1);
        self.half_open = self.half_open.wrapping_add(u32::from(half_open));
    }

    #[inline]
    fn remove(&mut self, half_open: bool) {
        debug_assert!(self.flows > 0 && (!half_open || self.half_open > 0));
        self.flows = self.flows.wrapping_sub(1);
        self.half_open = self.half_open.wrapping_sub(u32::from(half_open));
    }

    #[inline]
    fn half_open_changed(&mut self, now_half_open: bool) {
        if now_half_open {
            self.half_open = self.half_open.wrapping_add(1);
        } else {
            debug_assert!(self.half_open > 0);
            self.half_open = self.half_open.wrapping_sub(1);
        }
    }

    /// Which limit one more flow (half-open if `tcp`) would pass, if any. A limit of 0 is
    /// none: `limit - 1` wraps to `u32::MAX`, which no count exceeds.
    #[inline]
    fn exceeds(&self, flows: u32, half_open: u32, tcp: bool) -> Exceeds {
        if tcp && self.half_open > half_open.wrapping_sub(1) {
            Exceeds::HalfOpen
        } else if self.flows > flows.wrapping_sub(1) {
            Exceeds::Flows
        } else {
            Exceeds::No
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeds {
    No,
    Flows,
    HalfOpen,
}

/// The client gauges of one worker and the limits it enforces; the endpoint gauges live
/// in the worker's per-endpoint usage (one map entry per endpoint, which the new-flow path
/// visits anyway). See the module docs.
#[derive(Debug)]
pub struct ConsumerLoad {
    limits: FlowLimits,
    clients: Box<[Load]>,
    mask: u64,
    seed: u64,
}

/// A client address's two counters, as [`ConsumerLoad::client_bucket`] found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientBucket(usize, usize);

impl ConsumerLoad {
    /// Gauges for a flow table of `capacity` flows, enforcing `limits`, with client
    /// buckets hashed under `seed`.
    pub fn new(limits: FlowLimits, capacity: usize, seed: u64) -> ConsumerLoad {
        let buckets = (capacity / 8).max(1024).next_power_of_two();
        ConsumerLoad {
            limits,
            clients: vec![Load::default(); buckets].into_boxed_slice(),
            mask: (buckets - 1) as u64,
            seed,
        }
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &FlowLimits {
        &self.limits
    }

    /// Bytes of memory the client buckets own.
    pub fn memory_bytes(&self) -> usize {
        self.clients.len() * std::mem::size_of::<Load>()
    }

    /// The two counters of client `ip` of VPC attachment `vpc` (always distinct).
    #[inline]
    pub fn client_bucket(&self, vpc: u16, ip: u32) -> ClientBucket {
        let k = (u64::from(vpc) << 32) | u64::from(ip);
        let h = mix64(mix64(k ^ self.seed));
        let at = |x: u64| usize::try_from(x & self.mask).unwrap_or(0);
        let (a, b) = (at(h), at(h >> 32));
        ClientBucket(a, if a == b { a ^ 1 } else { b })
    }

    /// Prefetches the counters of client `(vpc, ip)`: the burst path does it for every
    /// new flow it stages, so the two random reads of a large sketch overlap.
    #[inline]
    pub fn prefetch_client(&self, vpc: u16, ip: u32) {
        let b = self.client_bucket(vpc, ip);
        for i in [b.0, b.1] {
            if let Some(c) = self.clients.get(i) {
                dpdk_bindings::prefetch::prefetch(c);
            }
        }
    }

    /// What the client of `b` holds, as far as its counters tell (never less than it
    /// does).
    #[inline]
    fn held(&self, b: ClientBucket) -> Load {
        let (x, y) = (self.clients[b.0], self.clients[b.1]);
        Load {
            flows: x.flows.min(y.flows),
            half_open: x.half_open.min(y.half_open),
        }
    }

    /// What client `(vpc, ip)` holds, as far as its counters tell.
    pub fn client(&self, vpc: u16, ip: u32) -> Load {
        self.held(self.client_bucket(vpc, ip))
    }

    /// Why a new flow (TCP if `tcp`, so half-open at first) from the client of `bucket`
    /// may not be created, if its client is at a limit. Client limits are never relieved
    /// by eviction: a client's flows only compete with each other.
    #[inline]
    pub fn client_refusal(&self, bucket: ClientBucket, tcp: bool) -> Option<DropReason> {
        let l = &self.limits;
        match self
            .held(bucket)
            .exceeds(l.flows_per_client, l.half_open_per_client, tcp)
        {
            Exceeds::No => None,
            Exceeds::Flows => Some(DropReason::ClientFlowLimit),
            Exceeds::HalfOpen => Some(DropReason::ClientHalfOpenLimit),
        }
    }

    /// Why a new flow to an endpoint holding `endpoint` may not be created, if the
    /// endpoint is at a limit. The worker first tries to evict one of the endpoint's
    /// half-open flows.
    #[inline]
    pub fn endpoint_refusal(&self, endpoint: &Load, tcp: bool) -> Option<DropReason> {
        let l = &self.limits;
        match endpoint.exceeds(l.flows_per_endpoint, l.half_open_per_endpoint, tcp) {
            Exceeds::No => None,
            Exceeds::Flows => Some(DropReason::EndpointFlowLimit),
            Exceeds::HalfOpen => Some(DropReason::EndpointHalfOpenLimit),
        }
    }

    /// A flow was created (half-open if `half_open`) for the client of `bucket` and an
    /// endpoint whose gauges are `endpoint`.
    #[inline]
    pub fn flow_created(&mut self, bucket: ClientBucket, endpoint: &mut Load, half_open: bool) {
        self.clients[bucket.0].add(half_open);
        self.clients[bucket.1].add(half_open);
        endpoint.add(half_open);
    }

    /// Flow `f` ended (in the state it had at its end); `endpoint` are its endpoint's
    /// gauges.
    pub fn flow_ended(&mut self, f: &Flow, endpoint: &mut Load) {
        let half_open = f.is_half_open();
        let b = self.client_bucket(f.fwd.vpc, f.fwd.src_ip);
        self.clients[b.0].remove(half_open);
        self.clients[b.1].remove(half_open);
        endpoint.remove(half_open);
    }

    /// TCP flow `f` entered or left half-open (its state is the new one).
    pub fn half_open_changed(&mut self, f: &Flow, endpoint: &mut Load) {
        let now = f.is_half_open();
        let b = self.client_bucket(f.fwd.vpc, f.fwd.src_ip);
        self.clients[b.0].half_open_changed(now);
        self.clients[b.1].half_open_changed(now);
        endpoint.half_open_changed(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::flow::{FlowKey, TcpState, PROTO_TCP, PROTO_UDP};

    fn flow(client: u32, port: u16, tcp: bool) -> Flow {
        let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
        let fwd = FlowKey {
            src_ip: client,
            dst_ip: 0x0a01_0064,
            src_port: port,
            dst_port: 80,
            vpc: 0,
            proto,
        };
        Flow::new(fwd, FlowKey { proto, ..fwd }, 0)
    }

    const LIMITS: FlowLimits = FlowLimits {
        flows_per_endpoint: 10,
        half_open_per_endpoint: 6,
        flows_per_client: 4,
        half_open_per_client: 2,
    };

    /// Creates `f` as the pipeline does: the refusals first, then the gauges.
    fn create(l: &mut ConsumerLoad, e: &mut Load, f: &Flow) -> Option<DropReason> {
        let b = l.client_bucket(f.fwd.vpc, f.fwd.src_ip);
        let tcp = f.fwd.proto == PROTO_TCP;
        let refusal = l
            .client_refusal(b, tcp)
            .or_else(|| l.endpoint_refusal(e, tcp));
        if refusal.is_none() {
            l.flow_created(b, e, f.is_half_open());
        }
        refusal
    }

    #[test]
    fn client_limits_refuse_and_free_up() {
        let mut l = ConsumerLoad::new(LIMITS, 1024, 1);
        let mut e = Load::default();
        let (a, b) = (0x0a01_0010, 0x0a01_0011);
        assert_ne!(
            l.client_bucket(0, a),
            l.client_bucket(0, b),
            "seed gives them distinct buckets"
        );
        let mut syns: Vec<Flow> = (0..2).map(|p| flow(a, p, true)).collect();
        for f in &syns {
            assert_eq!(create(&mut l, &mut e, f), None);
        }
        assert_eq!(
            create(&mut l, &mut e, &flow(a, 2, true)),
            Some(DropReason::ClientHalfOpenLimit)
        );
        let ba = l.client_bucket(0, a);
        assert_eq!(l.client_refusal(ba, false), None, "UDP is not half-open");
        let bb = l.client_bucket(0, b);
        assert_eq!(l.client_refusal(bb, true), None, "another client");
        let other_vpc = l.client_bucket(1, a);
        assert_eq!(
            l.client_refusal(other_vpc, true),
            None,
            "same address, other VPC"
        );
        // The handshake completes: no longer half-open, a new SYN is admitted.
        syns[0].tcp = TcpState::Established;
        l.half_open_changed(&syns[0], &mut e);
        assert_eq!(
            l.client(0, a),
            Load {
                flows: 2,
                half_open: 1
            }
        );
        assert_eq!(
            e,
            Load {
                flows: 2,
                half_open: 1
            }
        );
        assert_eq!(l.client_refusal(ba, true), None);
        assert_eq!(create(&mut l, &mut e, &flow(a, 10, false)), None);
        assert_eq!(create(&mut l, &mut e, &flow(a, 11, false)), None);
        assert_eq!(
            create(&mut l, &mut e, &flow(a, 12, false)),
            Some(DropReason::ClientFlowLimit)
        );
        l.flow_ended(&syns[0], &mut e);
        assert_eq!(
            l.client(0, a),
            Load {
                flows: 3,
                half_open: 1
            }
        );
        assert_eq!(l.client_refusal(ba, false), None);
    }

    #[test]
    fn endpoint_limits_count_every_client() {
        let mut l = ConsumerLoad::new(LIMITS, 1024, 2);
        let mut e = Load::default();
        for c in 0..6 {
            assert_eq!(
                create(&mut l, &mut e, &flow(0x0a01_0100 + c, 1000, true)),
                None
            );
        }
        assert_eq!(
            l.endpoint_refusal(&e, true),
            Some(DropReason::EndpointHalfOpenLimit)
        );
        assert_eq!(l.endpoint_refusal(&Load::default(), true), None);
        for c in 0..4 {
            assert_eq!(
                create(&mut l, &mut e, &flow(0x0a01_0200 + c, 1000, false)),
                None
            );
        }
        assert_eq!(
            l.endpoint_refusal(&e, false),
            Some(DropReason::EndpointFlowLimit)
        );
        assert_eq!(
            e,
            Load {
                flows: 10,
                half_open: 6
            }
        );
        for c in 0..4 {
            l.flow_ended(&flow(0x0a01_0200 + c, 1000, false), &mut e);
        }
        for c in 0..6 {
            l.flow_ended(&flow(0x0a01_0100 + c, 1000, true), &mut e);
        }
        assert_eq!(e, Load::default());
        assert_eq!(l.client(0, 0x0a01_0100), Load::default());
    }

    /// A heavy client shares a counter with others now and then; only a client whose two
    /// counters are both shared with heavy clients is ever refused wrongly.
    #[test]
    fn a_heavy_client_does_not_block_innocent_ones() {
        let limits = FlowLimits {
            flows_per_client: 256,
            ..FlowLimits::default()
        };
        let mut l = ConsumerLoad::new(limits, 1024, 4);
        let mut e = Load::default();
        // Four clients at their limit: the most a 1024-flow table can hold.
        for heavy in 0..4u32 {
            for port in 0..256 {
                assert_eq!(
                    create(&mut l, &mut e, &flow(0x0b00_0000 + heavy, port, false)),
                    None
                );
            }
            let b = l.client_bucket(0, 0x0b00_0000 + heavy);
            assert_eq!(
                l.client_refusal(b, false),
                Some(DropReason::ClientFlowLimit)
            );
        }
        let refused = (0..65_536u32)
            .filter(|&c| {
                let b = l.client_bucket(0, 0x0a00_0000 + c);
                l.client_refusal(b, false).is_some()
            })
            .count();
        // One shared counter each would refuse about 4 / 1024 of them (256); both shared,
        // about (4 / 1024)^2 (1).
        assert!(refused <= 8, "{refused} of 65536 innocent clients refused");
    }

    #[test]
    fn zero_means_no_limit_and_memory_is_fixed() {
        let mut l = ConsumerLoad::new(FlowLimits::default(), 1 << 16, 3);
        let mut e = Load::default();
        let bytes = l.memory_bytes();
        assert_eq!(bytes, (1 << 13) * 8, "1 byte per flow of capacity");
        assert_eq!(
            ConsumerLoad::new(FlowLimits::default(), 1024, 3).memory_bytes(),
            1024 * 8,
            "at least 1024 counters"
        );
        for i in 0..100_000u32 {
            assert_eq!(create(&mut l, &mut e, &flow(i, 1, true)), None);
        }
        assert_eq!(l.memory_bytes(), bytes);
        assert_eq!(e.half_open, 100_000);
    }
}
