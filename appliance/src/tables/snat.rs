//! SNAT ports of one worker: which worker owns a port, which port a new flow gets, and
//! which ports recently ended flows leave unusable towards their target for a while.
//!
//! # Ownership
//!
//! Ports from [`SNAT_PORT_MIN`] up are dealt round-robin to the workers (`port % workers`
//! is the owner), so a reply names its flow's worker and the receive path can hand it over
//! without a lookup. Each worker draws only among its own ports.
//!
//! # Choice
//!
//! The port of a new flow is drawn at random among the worker's ports: the `n`-th draw is
//! `splitmix64(seed + n)`, reduced to a slot, with a secret `seed` chosen at start. So
//! neither a provider watching its SNAT ports nor a consumer opening connections can
//! predict the next port, and a restarted appliance does not replay the same sequence. The
//! stream is counter-based, so the burst path can name the port a later draw gives
//! ([`SnatPorts::guess`]) without drawing it, and prefetch for it.
//!
//! A drawn port is taken when no live flow uses it towards the same target (the flow
//! table's reverse index) and it is not in quarantine; up to [`TRIES`] draws are made.
//!
//! Cost: one probe (a reverse-index lookup, which the burst path has prefetched from
//! [`SnatPorts::guess`], plus the quarantine's two lines while it holds anything) when
//! the first port drawn is free, which is the common case: a worker's ~64k ports per
//! (target, SNAT address) pair against the flows that pair carries. A taken port leads to
//! another independent draw, so the probes per new flow are 1 / (free share), whatever
//! runs of taken ports there are; the sequential cursor this replaced walked such runs
//! port by port. A bitmap of free ports would need one per (target, SNAT address) pair,
//! and its upkeep on every flow's end, to save probes only where the pair is nearly full.
//!
//! # Quarantine
//!
//! A target that closed a TCP connection keeps it in TIME_WAIT (Linux: 60 s, RFC 793: up
//! to 4 min), and a new SYN from the same SNAT `ip:port` meets that old state: refused,
//! or answered as the old connection. So a TCP flow the target answered leaves its
//! `(target, SNAT ip, SNAT port)` out of use for [`SNAT_REUSE_MS`] (120 s) after the flow
//! ends. [`Quarantine`] remembers those keys in fixed memory chosen at start.
//!
//! Not quarantined: UDP flows (no TIME_WAIT; a UDP flow ends only after `timeouts.udp` of
//! silence, 120 s by default, which is the quiet period already), TCP flows the target
//! never answered (`SynSent`: it holds no state for them), TCP flows ended by a RST
//! (`Closed`: a reset connection skips TIME_WAIT), and half-open flows evicted
//! under pressure ([`crate::tables::flow::FlowTable::evict_half_open`]): their port is what the
//! eviction frees, and a target holds at most a SYN_RECV entry (or, under a flood, a SYN
//! cookie, i.e. nothing) for them.
//!
//! The price: a port closed with FINs is out of use for 120 s towards its target, so one
//! (target, SNAT address) pair sustains about 64512 / 120 ≈ 537 such connections a second
//! for the whole appliance (its ports are shared among the workers). Beyond that, new
//! flows to that target are refused (`snat_exhausted`) rather than sent into a target's
//! TIME_WAIT; a service that needs more lists more `snat_addresses`.

use crate::tables::flow::{Flow, FlowKey, PROTO_TCP};
use crate::tables::maglev::mix64;

/// Lowest SNAT source port handed out; below are the well-known ports.
pub const SNAT_PORT_MIN: u16 = 1024;
/// How long a port stays out of use towards a target after its TCP flow ended: the
/// longest TIME_WAIT a target is expected to keep.
pub const SNAT_REUSE_MS: u64 = 120_000;
/// Draws before a new flow is refused for lack of SNAT ports (or a half-open flow of the
/// same port range is evicted for it).
pub const TRIES: usize = 256;
/// splitmix64's increment: consecutive draws are `seed + n * GOLDEN`.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SNAT ports of one worker. See the module docs.
#[derive(Debug)]
pub struct SnatPorts {
    worker: u16,
    workers: u16,
    /// This worker's lowest port.
    first: u16,
    /// How many ports this worker owns.
    slots: u16,
    seed: u64,
    /// Draws made so far: the next draw is number `draws`.
    draws: u64,
    quarantine: Quarantine,
}

impl SnatPorts {
    /// The ports of worker `worker` of `workers` (at least 1), drawing with `seed`, with
    /// a quarantine of at least `quarantine` entries.
    pub fn new(worker: u16, workers: u16, quarantine: usize, seed: u64) -> SnatPorts {
        let n = workers.max(1);
        let worker = worker % n;
        let first = SNAT_PORT_MIN.div_ceil(n) * n + worker;
        SnatPorts {
            worker,
            workers: n,
            first,
            slots: (u16::MAX - first) / n + 1,
            seed,
            draws: 0,
            quarantine: Quarantine::new(quarantine, mix64(seed ^ 0x71a5)),
        }
    }

    /// The worker that owns SNAT port `port`.
    #[inline]
    pub fn owner(&self, port: u16) -> u16 {
        port % self.workers
    }

    /// How many ports this worker owns.
    pub fn slots(&self) -> u16 {
        self.slots
    }

    /// True when `port` is one of this worker's.
    pub fn owns(&self, port: u16) -> bool {
        port >= self.first && self.owner(port) == self.worker
    }

    /// This worker's port number `slot` (< [`slots`](Self::slots)).
    #[inline]
    fn port_at(&self, slot: u16) -> u16 {
        self.first + slot * self.workers
    }

    /// The port draw number `n` gives.
    #[inline]
    fn drawn(&self, n: u64) -> u16 {
        let r = mix64(self.seed.wrapping_add(n.wrapping_mul(GOLDEN)));
        // The high half, scaled to the slot count (Lemire's reduction, no division).
        let slot = ((r >> 32) * u64::from(self.slots)) >> 32;
        self.port_at(u16::try_from(slot).unwrap_or(0))
    }

    /// The port [`pick`](Self::pick) tries first for the `k`-th new flow from now
    /// (k >= 1), if every earlier one takes its first draw: what the burst path
    /// prefetches for.
    #[inline]
    pub fn guess(&self, k: u16) -> u16 {
        self.drawn(self.draws.wrapping_add(u64::from(k.max(1) - 1)))
    }

    /// A port for a new flow whose reverse key (dst port aside) is `rev`: drawn at random,
    /// not used by a live flow to the same target (`in_use` asks the flow table) and not
    /// in quarantine at `now_ms`. None after [`TRIES`] draws.
    pub fn pick(
        &mut self,
        rev: &FlowKey,
        now_ms: u64,
        in_use: impl Fn(&FlowKey) -> bool,
    ) -> Option<u16> {
        let mut probe = *rev;
        let quarantined = self.quarantine.may_hold(now_ms);
        for _ in 0..TRIES.min(usize::from(self.slots)) {
            probe.dst_port = self.drawn(self.draws);
            self.draws = self.draws.wrapping_add(1);
            let taken = in_use(&probe) || (quarantined && self.quarantine.contains(&probe, now_ms));
            if !taken {
                return Some(probe.dst_port);
            }
        }
        None
    }

    /// `flow` ended at `now_ms` (expired, replaced by a new connection, or ended by a
    /// change): a TCP flow whose connection the target may still hold puts its port in
    /// quarantine (see [`TcpState::target_may_linger`]: not when it was never answered,
    /// was reset, or the consumer closed first and both sides finished closing). False
    /// when the quarantine had no room for it (the caller counts that).
    pub fn flow_ended(&mut self, flow: &Flow, now_ms: u64) -> bool {
        if flow.fwd.proto != PROTO_TCP || !flow.tcp.target_may_linger() {
            return true;
        }
        self.quarantine.record(&flow.rev, now_ms)
    }

    /// True when `rev` (a reverse key with its SNAT port) is in quarantine at `now_ms`.
    pub fn is_quarantined(&self, rev: &FlowKey, now_ms: u64) -> bool {
        self.quarantine.contains(rev, now_ms)
    }

    /// Bytes of memory the quarantine owns.
    pub fn memory_bytes(&self) -> usize {
        self.quarantine.memory_bytes()
    }
}

/// Ways per quarantine bucket: eight 8-byte entries, one cache line.
const WAYS: usize = 8;

/// One bucket: entries `tag << 32 | seconds`, 0 when empty.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket([u64; WAYS]);

/// Recently closed `(target, SNAT ip, SNAT port)` keys, each remembered for
/// [`SNAT_REUSE_MS`].
///
/// A set-associative table: a key's seeded hash picks two buckets of eight entries (one
/// cache line each, loaded in parallel) and gives a 32-bit tag; an entry holds the tag and
/// the second the flow ended, and a new key goes to the emptier of its two buckets (the
/// "power of two choices", which keeps buckets even). An entry older than the quarantine
/// is dead and is simply overwritten by the next key that needs its place: no sweep, no
/// rotation, no per-packet work. Two keys with the same buckets and tag are confused,
/// which can only make a free port look quarantined (one draw more), never the other way
/// round.
///
/// When all sixteen entries of a key's buckets are live, the key is not recorded
/// ([`record`](Self::record) returns false and the worker counts
/// `snat_quarantine_full`): that port may then be reused before 120 s, though a random
/// draw lands on it with a probability of one in the worker's free ports. Measured
/// (`fills_most_of_its_capacity` below, and a simulation): the first key is refused when
/// 72-76 % of the capacity (`tables.snat_quarantine` entries per worker) is in force, i.e.
/// that many TCP flows ended within 120 s; with one bucket per key it would be 14-22 %.
#[derive(Debug)]
pub struct Quarantine {
    buckets: Box<[Bucket]>,
    mask: u64,
    seed: u64,
    /// When the last key was recorded: once that is more than the quarantine ago, every
    /// entry is dead and lookups are skipped (a table that never saw a closed TCP flow
    /// costs nothing).
    last_record_ms: Option<u64>,
}

impl Quarantine {
    /// A quarantine for at least `entries` keys (rounded up to whole buckets, a power of
    /// two of them), hashing with `seed`.
    pub fn new(entries: usize, seed: u64) -> Quarantine {
        let buckets = entries.div_ceil(WAYS).max(1).next_power_of_two();
        Quarantine {
            buckets: vec![Bucket::default(); buckets].into_boxed_slice(),
            mask: (buckets - 1) as u64,
            seed,
            last_record_ms: None,
        }
    }

    /// How many keys it can hold.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Bytes of memory it owns.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Quarantine>() + self.buckets.len() * std::mem::size_of::<Bucket>()
    }

    /// The two buckets and the tag (never 0) of `key`.
    #[inline]
    fn place(&self, key: &FlowKey) -> ([usize; 2], u64) {
        let h = key.hash_with_seed(self.seed);
        let b = |x: u64| usize::try_from(x & self.mask).unwrap_or(0);
        ([b(h), b(mix64(h))], (h >> 32) | 1)
    }

    /// True when an entry recorded at second `at` is still in force at second `now`.
    #[inline]
    fn live(entry: u64, now_s: u32) -> bool {
        // Entries are `tag << 32 | seconds` (the low half, truncated on purpose).
        let at = (entry & 0xffff_ffff) as u32;
        entry != 0 && now_s.wrapping_sub(at) <= SECONDS
    }

    /// True when any key recorded less than the quarantine ago may still be in force.
    #[inline]
    pub fn may_hold(&self, now_ms: u64) -> bool {
        self.last_record_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= SNAT_REUSE_MS + 1000)
    }

    /// True when `key` ended less than [`SNAT_REUSE_MS`] before `now_ms`.
    #[inline]
    pub fn contains(&self, key: &FlowKey, now_ms: u64) -> bool {
        let (bs, tag) = self.place(key);
        let now_s = seconds(now_ms);
        bs.iter().any(|&b| {
            self.buckets[b]
                .0
                .iter()
                .any(|&e| e >> 32 == tag && Self::live(e, now_s))
        })
    }

    /// Remembers that `key` ended at `now_ms`. False when its bucket is full of keys still
    /// in force (the key is then not remembered).
    pub fn record(&mut self, key: &FlowKey, now_ms: u64) -> bool {
        let ([b0, b1], tag) = self.place(key);
        let now_s = seconds(now_ms);
        let entry = (tag << 32) | u64::from(now_s);
        let find = |b: usize, f: &dyn Fn(u64) -> bool| {
            self.buckets[b].0.iter().position(|&e| f(e)).map(|w| (b, w))
        };
        let live = |b: usize| {
            self.buckets[b]
                .0
                .iter()
                .filter(|&&e| Self::live(e, now_s))
                .count()
        };
        let same = |e: u64| e >> 32 == tag;
        let free = |e: u64| !Self::live(e, now_s);
        let (emptier, other) = if live(b1) < live(b0) {
            (b1, b0)
        } else {
            (b0, b1)
        };
        // The same key again (its port reused after the quarantine, or a tag twin): renew
        // it where it is; else the emptier bucket.
        let at = find(b0, &same)
            .or_else(|| find(b1, &same))
            .or_else(|| find(emptier, &free))
            .or_else(|| find(other, &free));
        let Some((b, w)) = at else {
            return false;
        };
        self.buckets[b].0[w] = entry;
        self.last_record_ms = Some(now_ms);
        true
    }
}

/// Seconds of the quarantine in whole seconds, rounded so that an entry is in force for
/// at least [`SNAT_REUSE_MS`]: recorded in second `t`, it is live while `now - t <= 120`,
/// i.e. until at least 120 s after the flow ended.
const SECONDS: u32 = 120;
const _: () = assert!(SECONDS as u64 * 1000 == SNAT_REUSE_MS);

/// The worker clock in whole seconds (wraps after 136 years).
#[inline]
fn seconds(now_ms: u64) -> u32 {
    ((now_ms / 1000) & 0xffff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::flow::{TcpState, PROTO_UDP};
    use std::collections::HashSet;

    fn rev(target: u32, snat_port: u16) -> FlowKey {
        FlowKey {
            src_ip: 0x0a02_000b + target,
            dst_ip: 0x0a02_0064,
            src_port: 8080,
            dst_port: snat_port,
            vpc: 1,
            proto: PROTO_TCP,
        }
    }

    fn ended_flow(target: u32, snat_port: u16, state: TcpState) -> Flow {
        let mut f = Flow::new(FlowKey::default(), rev(target, snat_port), 0);
        f.fwd.proto = PROTO_TCP;
        f.tcp = state;
        f
    }

    #[test]
    fn ports_are_the_workers_own_and_in_range() {
        for (workers, worker) in [(1u16, 0u16), (2, 0), (2, 1), (3, 2), (7, 5)] {
            let mut s = SnatPorts::new(worker, workers, 1024, 42);
            let mut seen = HashSet::new();
            for _ in 0..2000 {
                let p = s.pick(&rev(0, 0), 0, |_| false).unwrap();
                assert!(p >= SNAT_PORT_MIN, "{p}");
                assert_eq!(s.owner(p), worker, "{workers} workers: port {p}");
                assert!(s.owns(p));
                seen.insert(p);
            }
            // Every port of the worker is reachable: the highest and the lowest slot.
            assert_eq!(s.port_at(0) % workers, worker);
            assert!(u32::from(s.port_at(s.slots() - 1)) + u32::from(workers) > 65535);
            // Draws with replacement over ~64k/workers slots: 2000 draws give mostly
            // distinct ports.
            assert!(seen.len() > 1800, "{}", seen.len());
        }
    }

    /// The old sequential cursor handed out 1025, 1026, 1027, ...: a client could tell the
    /// next port and a restart replayed it.
    #[test]
    fn choice_is_random_and_seeded_per_start() {
        let draw = |seed: u64| -> Vec<u16> {
            let mut s = SnatPorts::new(0, 1, 1024, seed);
            (0..64)
                .map(|_| s.pick(&rev(0, 0), 0, |_| false).unwrap())
                .collect()
        };
        let a = draw(1);
        assert_eq!(a, draw(1), "deterministic for one seed");
        let b = draw(2);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(same < 4, "another seed, another sequence: {same} equal");
        let steps_of_one = a
            .windows(2)
            .filter(|w| w[1] == w[0].wrapping_add(1))
            .count();
        assert!(steps_of_one < 4, "not sequential: {a:?}");
        // Spread over the whole range, not clustered at its start.
        let high = a.iter().filter(|&&p| p > 33_000).count();
        assert!((16..=48).contains(&high), "{high} of 64 in the upper half");
    }

    #[test]
    fn guess_is_the_next_draws() {
        let mut s = SnatPorts::new(1, 3, 1024, 7);
        let _ = s.pick(&rev(0, 0), 0, |_| false);
        let guesses: Vec<u16> = (1..=5).map(|k| s.guess(k)).collect();
        let got: Vec<u16> = (0..5)
            .map(|_| s.pick(&rev(0, 0), 0, |_| false).unwrap())
            .collect();
        assert_eq!(got, guesses);
    }

    #[test]
    fn used_ports_are_skipped_and_exhaustion_is_reported() {
        let mut s = SnatPorts::new(0, 1, 1024, 3);
        let taken = s.guess(1);
        let p = s.pick(&rev(0, 0), 0, |k| k.dst_port == taken).unwrap();
        assert_ne!(p, taken);
        assert_eq!(s.pick(&rev(0, 0), 0, |_| true), None);
    }

    /// The common case is one probe: a free drawn port is taken at once. A taken one leads
    /// to another random draw, never to its neighbour, so a run of taken ports (the
    /// sequential cursor's ports of a busy target) is not walked one by one: the probes
    /// per pick follow 1 / (free share), not the length of the run.
    #[test]
    fn a_free_port_costs_one_probe_and_taken_runs_are_not_walked() {
        let mut s = SnatPorts::new(0, 1, 1024, 5);
        let probes = std::cell::Cell::new(0u32);
        let count = |taken: bool| {
            probes.set(probes.get() + 1);
            taken
        };
        for _ in 0..1000 {
            s.pick(&rev(0, 0), 0, |_| count(false)).unwrap();
        }
        assert_eq!(probes.get(), 1000, "one probe a pick when ports are free");
        // The lower half of the ports in use towards the target, as one run.
        let half = SNAT_PORT_MIN + s.slots() / 2;
        probes.set(0);
        for _ in 0..1000 {
            let p = s.pick(&rev(0, 0), 0, |k| count(k.dst_port < half)).unwrap();
            assert!(p >= half);
        }
        let per_pick = f64::from(probes.get()) / 1000.0;
        assert!((1.8..2.2).contains(&per_pick), "{per_pick} probes a pick");
        // With a quarantine in force the same holds: it adds a check, not probes.
        assert!(s.flow_ended(&ended_flow(0, half, TcpState::TimeWaitProvider), 0));
        probes.set(0);
        for _ in 0..1000 {
            let p = s.pick(&rev(0, 0), 1_000, |_| count(false)).unwrap();
            assert_ne!(p, half);
        }
        assert!(probes.get() <= 1001, "{} probes", probes.get());
    }

    /// A port whose TCP flow to a target ended is not handed out again towards that target
    /// for 120 s; towards another target it is.
    #[test]
    fn closed_port_is_quarantined_for_120_s_per_target() {
        let mut s = SnatPorts::new(0, 1, 1024, 9);
        let port = s.guess(1);
        assert!(s.flow_ended(&ended_flow(0, port, TcpState::TimeWaitProvider), 10_000));
        for now in [10_000, 60_000, 129_999] {
            assert!(s.is_quarantined(&rev(0, port), now), "at {now}");
        }
        assert!(!s.is_quarantined(&rev(0, port), 131_000));
        assert!(!s.is_quarantined(&rev(1, port), 10_000), "other target");
        assert!(!s.is_quarantined(&rev(0, port + 1), 10_000), "other port");
        // The draw that would have given it gives another port; after 120 s it is free.
        let mut again = SnatPorts::new(0, 1, 1024, 9);
        assert!(again.flow_ended(&ended_flow(0, port, TcpState::Established), 10_000));
        let p = again.pick(&rev(0, 0), 20_000, |_| false).unwrap();
        assert_ne!(p, port, "quarantined port skipped");
        let mut later = SnatPorts::new(0, 1, 1024, 9);
        assert!(later.flow_ended(&ended_flow(0, port, TcpState::ClosingConsumer), 10_000));
        assert_eq!(later.pick(&rev(0, 0), 131_000, |_| false), Some(port));
    }

    #[test]
    fn only_tcp_flows_the_target_may_remember_are_quarantined() {
        let mut s = SnatPorts::new(0, 1, 1024, 9);
        // The consumer closed first and both finished: the target, which closed second,
        // keeps no TIME_WAIT, so the port is free at once (connection churn to one target
        // is then not capped by the quarantine). Closed first by the target: quarantined.
        assert!(s.flow_ended(&ended_flow(0, 2010, TcpState::TimeWaitConsumer), 0));
        assert!(!s.is_quarantined(&rev(0, 2010), 0), "consumer closed first");
        assert!(s.flow_ended(&ended_flow(0, 2011, TcpState::TimeWaitProvider), 0));
        assert!(s.is_quarantined(&rev(0, 2011), 0), "target closed first");
        assert!(s.flow_ended(&ended_flow(0, 2000, TcpState::SynSent), 0));
        assert!(!s.is_quarantined(&rev(0, 2000), 0), "target never answered");
        let mut udp = ended_flow(0, 2001, TcpState::SynSent);
        udp.fwd.proto = PROTO_UDP;
        udp.rev.proto = PROTO_UDP;
        assert!(s.flow_ended(&udp, 0));
        assert!(!s.is_quarantined(&udp.rev, 0), "UDP");
        assert!(s.flow_ended(&ended_flow(0, 2002, TcpState::SynReceived), 0));
        assert!(s.is_quarantined(&rev(0, 2002), 0));
        assert!(s.flow_ended(&ended_flow(0, 2003, TcpState::Closed), 0));
        assert!(!s.is_quarantined(&rev(0, 2003), 0), "reset: no TIME_WAIT");
    }

    /// Fixed memory: when a key's buckets are full it is refused; once entries are older
    /// than the quarantine they make room again.
    #[test]
    fn full_quarantine_refuses_then_recovers() {
        let mut q = Quarantine::new(64, 5);
        assert_eq!(q.capacity(), 64);
        let before = q.memory_bytes();
        let kept: Vec<bool> = (0..1000u16).map(|p| q.record(&rev(0, p), 1_000)).collect();
        assert_eq!(q.memory_bytes(), before, "no growth");
        assert_eq!(
            kept.iter().filter(|&&k| k).count(),
            64,
            "all of the capacity"
        );
        for (p, &k) in (0..1000u16).zip(&kept) {
            assert_eq!(q.contains(&rev(0, p), 2_000), k, "port {p}");
        }
        // 121 s later every entry is dead: the refused keys fit now.
        let refused: Vec<u16> = (0..1000u16).filter(|&p| !kept[usize::from(p)]).collect();
        let now_kept = refused
            .iter()
            .filter(|&&p| q.record(&rev(0, p), 122_000))
            .count();
        assert_eq!(now_kept, 64);
        assert!(!q.contains(&rev(0, 0), 122_000) || !kept[0]);
        assert!(!q.may_hold(250_000));
        assert!(q.may_hold(122_000));
    }

    /// Two choices per key keep the buckets even: no key is refused before 70 % of the
    /// capacity is in use (with one bucket per key the first refusals come at about 20 %).
    #[test]
    fn fills_most_of_its_capacity() {
        for seed in 0..4 {
            let mut q = Quarantine::new(1 << 16, seed);
            let mut n = 0u32;
            while q.record(&rev(n >> 16, u16::try_from(n & 0xffff).unwrap()), 1_000) {
                n += 1;
            }
            let fill = f64::from(n) / q.capacity() as f64;
            assert!(fill > 0.7, "seed {seed}: first refusal at {fill:.3}");
        }
    }

    /// Lookups are skipped while nothing was recorded recently; recorded keys are found.
    #[test]
    fn many_keys_are_remembered_without_false_negatives() {
        let mut q = Quarantine::new(1 << 14, 11);
        // Half the capacity: every key finds room.
        assert!(!q.may_hold(0));
        let keys: Vec<FlowKey> = (0..8000u32)
            .map(|i| rev(i % 16, 1024 + u16::try_from(i / 16).unwrap()))
            .collect();
        for k in &keys {
            assert!(q.record(k, 5_000));
        }
        assert!(keys.iter().all(|k| q.contains(k, 6_000)));
        let false_pos = (0..8000u32)
            .filter(|&i| {
                q.contains(
                    &rev(100 + i % 16, 1024 + u16::try_from(i / 16).unwrap()),
                    6_000,
                )
            })
            .count();
        assert_eq!(false_pos, 0);
    }
}
