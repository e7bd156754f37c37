//! Reply steering: where a port's device takes `rte_flow` rules, a reply from a target to
//! a SNAT address is received on the RX queue of the worker that owns its SNAT port, so
//! it never crosses a handoff ring; on other devices the ring carries it.
//!
//! # The rules
//!
//! SNAT port `p` belongs to worker `p % workers` ([`crate::tables::snat`]), and worker
//! `w` owns RX queue `w` of every port. With a power-of-two worker count, `p % workers` is
//! `p & (workers - 1)`, which a masked match expresses: for every SNAT address of an
//! attachment on the port, every worker `w` and each of TCP and UDP, one rule
//! `eth / [vlan vid] / ipv4|ipv6 dst = address / tcp|udp dst port & (workers - 1) = w → queue w`
//! (IPv6 for a NAT66 service's IPv6 SNAT addresses).
//! Any other count has no such mask, and those ports keep the ring (see the README for why
//! ownership is not changed to fit a mask). ICMP keeps the ring too: an error names its
//! flow's SNAT port only inside the quoted packet, which no pattern reaches, and an echo
//! request is answered by whichever worker receives it.
//!
//! Which rule of ours a packet matches never matters: the queue depends only on the port's
//! low bits. So a device that matches an untagged rule on tagged frames too (some ignore
//! VLANs absent from the pattern) still sends each reply to its owner.
//!
//! # Per port, at start
//!
//! A port gets `rte_flow` when the device takes every rule its attachments can need: one
//! probe rule set per attachment and family (on the attachment's own IPv4 and IPv6
//! addresses, which nothing forwards to), validated and created, then destroyed, before the rules for the SNAT addresses
//! already configured are put in. Validation alone is not trusted: net_tap validates port
//! masks it then refuses to create. A failure of any rule on a port destroys the ones
//! created there and leaves that port on the ring, for good (until restart). Each port's
//! outcome is logged at start: `reply steering: rte_flow`, `reply steering: ring
//! (reason)`, or `reply steering: none (…)` with one worker.
//!
//! # At run time
//!
//! Services, and so SNAT addresses, come and go through the management socket and
//! reloads: the main loop calls [`Steering::follow`] with each new snapshot generation, and
//! the rules of every address that appeared are created, those of every address that went
//! are destroyed. Until they are in, or when a port fell back, replies take the ring: the
//! workers keep the handoff for whatever reaches the wrong queue, so correctness never
//! depends on the NIC. Nothing here runs on a worker; at clean shutdown the rules of each
//! port are flushed ([`Steering::shutdown`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dpdk_bindings::{DpdkError, Flow, FlowAction, FlowItem, FlowRule, Port, QueueId};

use crate::tables::snapshot::Snapshot;

/// What steering needs of a port: a DPDK [`Port`], or a stand-in in the tests. A rule
/// handle destroys its rule when dropped.
pub trait FlowPort {
    type Rule;
    fn name(&self) -> &str;
    fn validate(&self, rule: &FlowRule) -> Result<(), DpdkError>;
    fn create(&self, rule: &FlowRule) -> Result<Self::Rule, DpdkError>;
    /// Removes every rule of the port, `rules` included.
    fn flush(&self, rules: Vec<Self::Rule>) -> Result<(), DpdkError>;
}

impl FlowPort for Port {
    type Rule = Flow;

    fn name(&self) -> &str {
        Port::name(self)
    }

    fn validate(&self, rule: &FlowRule) -> Result<(), DpdkError> {
        self.validate_flow(rule)
    }

    fn create(&self, rule: &FlowRule) -> Result<Flow, DpdkError> {
        self.create_flow(rule)
    }

    fn flush(&self, rules: Vec<Flow>) -> Result<(), DpdkError> {
        self.flush_flows(rules)
    }
}

/// How replies reach their owner on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `rte_flow` rules put them on the owner's queue.
    Flow,
    /// The receiving worker hands them to the owner over a ring; why.
    Ring(String),
    /// One worker owns every SNAT port: nothing to steer.
    Single,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Flow => f.write_str("rte_flow"),
            Mode::Ring(why) => write!(f, "ring ({why})"),
            Mode::Single => f.write_str("none (one worker owns every SNAT port)"),
        }
    }
}

/// The mask that names a SNAT port's owner (`workers - 1`), or the mode of every port when
/// no mask can.
pub fn owner_mask(workers: u16) -> Result<u16, Mode> {
    match workers {
        0 | 1 => Err(Mode::Single),
        n if n.is_power_of_two() => Ok(n - 1),
        n => Err(Mode::Ring(format!(
            "{n} workers: a port mask splits SNAT ports only among a power of two of \
             workers (2, 4, 8, …)"
        ))),
    }
}

/// An address replies are steered for: a SNAT address, or a probe on an attachment's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dest {
    pub vlan: Option<u16>,
    pub addr: IpAddr,
}

/// A SNAT address on port `port` (index in `[[ports]]` order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub port: u16,
    pub dest: Dest,
}

/// The rules that steer replies to `dest` with owner mask `mask`: per worker, TCP then UDP.
pub fn rules(mask: u16, dest: Dest) -> Vec<FlowRule> {
    let mut out = Vec::with_capacity((usize::from(mask) + 1) * 2);
    for w in 0..=mask {
        for l4 in [
            FlowItem::Tcp {
                dst_port: w,
                dst_mask: mask,
            },
            FlowItem::Udp {
                dst_port: w,
                dst_mask: mask,
            },
        ] {
            let mut pattern = vec![FlowItem::Eth];
            if let Some(vid) = dest.vlan {
                pattern.push(FlowItem::Vlan { vid });
            }
            pattern.push(match dest.addr {
                IpAddr::V4(dst) => FlowItem::Ipv4 {
                    dst,
                    dst_mask: u32::MAX,
                },
                IpAddr::V6(dst) => FlowItem::Ipv6 {
                    dst,
                    dst_mask: u128::MAX,
                },
            });
            pattern.push(l4);
            out.push(FlowRule::new(pattern, FlowAction::Queue(QueueId(w))));
        }
    }
    out
}

/// Every SNAT address of the snapshot, IPv4 and IPv6, on its service's attachment's port.
pub fn targets(snap: &Snapshot) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    for s in snap.services() {
        let Some(a) = snap.attachments.get(usize::from(s.attachment)) else {
            continue;
        };
        let v4 = s.snat.iter().map(|&ip| IpAddr::V4(Ipv4Addr::from(ip)));
        let v6 = s
            .snat6
            .iter()
            .map(|&(_, ip)| IpAddr::V6(Ipv6Addr::from(ip)));
        for addr in v4.chain(v6) {
            out.insert(Target {
                port: a.port,
                dest: Dest { vlan: a.vlan, addr },
            });
        }
    }
    out
}

/// Per port (of `ports`), one probe per attachment and family it has: its VLAN and its own
/// address. Any service may be put on any attachment at run time, so each shape must be
/// steerable.
pub fn probes(snap: &Snapshot, ports: usize) -> Vec<Vec<Dest>> {
    let mut out = vec![Vec::new(); ports];
    for a in &snap.attachments {
        if let Some(p) = out.get_mut(usize::from(a.port)) {
            let v4 = a.has_ipv4().then(|| IpAddr::V4(Ipv4Addr::from(a.ip)));
            let v6 = a.ip6.map(|ip| IpAddr::V6(Ipv6Addr::from(ip)));
            p.extend(
                v4.into_iter()
                    .chain(v6)
                    .map(|addr| Dest { vlan: a.vlan, addr }),
            );
        }
    }
    out
}

/// The steering of one port.
#[derive(Debug)]
struct PortSteering<R> {
    mode: Mode,
    /// The rules in place, by the address they steer for.
    installed: BTreeMap<Dest, Vec<R>>,
}

/// The steering state of every port, owned by the main thread.
#[derive(Debug)]
pub struct Steering<R> {
    /// `workers - 1` (meaningless while no port is in [`Mode::Flow`]).
    mask: u16,
    ports: Vec<PortSteering<R>>,
    /// The snapshot generation the rules follow.
    generation: u64,
}

impl<R> Steering<R> {
    /// Decides each port's mode (see the module docs), puts in the rules for `targets`,
    /// and logs each port's outcome. `probes[i]` are the shapes port `i` must steer.
    pub fn start<P: FlowPort<Rule = R>>(
        ports: &[P],
        workers: u16,
        probes: &[Vec<Dest>],
        targets: &BTreeSet<Target>,
        generation: u64,
    ) -> Steering<R> {
        let (mask, all) = match owner_mask(workers) {
            Ok(mask) => (mask, None),
            Err(mode) => (0, Some(mode)),
        };
        let mut s = Steering {
            mask,
            ports: ports
                .iter()
                .enumerate()
                .map(|(i, port)| PortSteering {
                    mode: all.clone().unwrap_or_else(|| {
                        probe(port, mask, probes.get(i).map_or(&[][..], Vec::as_slice))
                    }),
                    installed: BTreeMap::new(),
                })
                .collect(),
            generation,
        };
        s.apply(ports, targets, false);
        for (port, st) in ports.iter().zip(&s.ports) {
            match &st.mode {
                Mode::Flow => log::info!(
                    "port {}: reply steering: rte_flow ({} workers; {} rules for {} SNAT addresses)",
                    port.name(),
                    u32::from(mask) + 1,
                    st.installed.values().map(Vec::len).sum::<usize>(),
                    st.installed.len()
                ),
                mode => log::info!("port {}: reply steering: {mode}", port.name()),
            }
        }
        s
    }

    /// Each port's mode, in port order.
    pub fn modes(&self) -> impl Iterator<Item = &Mode> {
        self.ports.iter().map(|p| &p.mode)
    }

    /// How many rules are in place on port `i`.
    pub fn rule_count(&self, i: usize) -> usize {
        self.ports
            .get(i)
            .map_or(0, |p| p.installed.values().map(Vec::len).sum())
    }

    /// Makes the rules match `targets` of snapshot `generation` (nothing to do when they
    /// already follow it). A port whose device refuses a rule falls back to the ring, with
    /// a warning.
    pub fn follow<P: FlowPort<Rule = R>>(
        &mut self,
        ports: &[P],
        generation: u64,
        targets: impl FnOnce() -> BTreeSet<Target>,
    ) {
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        if self.ports.iter().any(|p| p.mode == Mode::Flow) {
            self.apply(ports, &targets(), true);
        }
    }

    fn apply<P: FlowPort<Rule = R>>(
        &mut self,
        ports: &[P],
        targets: &BTreeSet<Target>,
        running: bool,
    ) {
        for (i, (port, st)) in ports.iter().zip(self.ports.iter_mut()).enumerate() {
            if st.mode != Mode::Flow {
                continue;
            }
            let wanted: BTreeSet<Dest> = targets
                .iter()
                .filter(|t| usize::from(t.port) == i)
                .map(|t| t.dest)
                .collect();
            // Dropping a handle destroys its rule.
            st.installed.retain(|d, _| wanted.contains(d));
            for &d in &wanted {
                if st.installed.contains_key(&d) {
                    continue;
                }
                match install(port, self.mask, d) {
                    Ok(rules) => {
                        log::debug!(
                            "port {}: {} rules steer replies to {}",
                            port.name(),
                            rules.len(),
                            d.addr
                        );
                        st.installed.insert(d, rules);
                    }
                    Err(e) => {
                        st.installed.clear();
                        st.mode =
                            Mode::Ring(format!("the device refused a rule for {}: {e}", d.addr));
                        if running {
                            log::warn!(
                                "port {}: reply steering: {}; its rules are removed and \
                                 replies cross the handoff ring until restart",
                                port.name(),
                                st.mode
                            );
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Removes every rule, one flush per port that has any (clean shutdown).
    pub fn shutdown<P: FlowPort<Rule = R>>(self, ports: &[P]) {
        for (port, st) in ports.iter().zip(self.ports) {
            let rules: Vec<R> = st.installed.into_values().flatten().collect();
            if rules.is_empty() {
                continue;
            }
            let n = rules.len();
            match port.flush(rules) {
                Ok(()) => log::info!("port {}: {n} steering rules flushed", port.name()),
                Err(e) => log::warn!(
                    "port {}: {e}; its rules were destroyed one by one",
                    port.name()
                ),
            }
        }
    }
}

/// Whether `port` takes the rules of every shape in `probes`: each is validated and
/// created, then all are destroyed.
fn probe<P: FlowPort>(port: &P, mask: u16, probes: &[Dest]) -> Mode {
    if probes.is_empty() {
        return Mode::Ring("no VPC attachment on this port".into());
    }
    // Every shape's rules are held until the end, so they are in place together as the
    // real ones will be (a device may take a rule alone but not beside the others: some
    // allow one mask per port). Dropped, so destroyed, on every return.
    let mut made = Vec::new();
    for &d in probes {
        match install(port, mask, d) {
            Ok(rules) => made.push(rules),
            Err(e) if e.not_implemented() => {
                return Mode::Ring("the device has no rte_flow".into())
            }
            Err(e) => return Mode::Ring(format!("the device refused a rule: {e}")),
        }
    }
    Mode::Flow
}

/// Validates and creates the rules for `d`; on the first failure, the ones created are
/// destroyed (dropped) and the error returned.
fn install<P: FlowPort>(port: &P, mask: u16, d: Dest) -> Result<Vec<P::Rule>, DpdkError> {
    let wanted = rules(mask, d);
    let mut made = Vec::with_capacity(wanted.len());
    for r in &wanted {
        port.validate(r)?;
        made.push(port.create(r)?);
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::tables::snat::{SnatPorts, SNAT_PORT_MIN};

    const SNAT: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 100);
    // Linux's numbers (this crate does not link libc).
    const ENOSYS: i32 = 38;
    const ENOTSUP: i32 = 95;
    const OWN: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

    const SNAT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb1, 0, 0, 0, 0, 0, 0x100);

    fn dest(addr: impl Into<IpAddr>) -> Dest {
        Dest {
            vlan: None,
            addr: addr.into(),
        }
    }

    /// Whether a packet to `addr`:`port` (TCP when `tcp`) on VLAN `vlan` matches `rule`.
    fn matches(
        rule: &FlowRule,
        vlan: Option<u16>,
        addr: impl Into<IpAddr>,
        tcp: bool,
        port: u16,
    ) -> bool {
        let addr = addr.into();
        let mut saw_vlan = None;
        rule.pattern().iter().all(|item| match *item {
            FlowItem::Eth => true,
            FlowItem::Vlan { vid } => {
                saw_vlan = Some(vid);
                vlan == Some(vid)
            }
            FlowItem::Ipv4 { dst, dst_mask } => {
                saw_vlan == vlan
                    && matches!(addr, IpAddr::V4(a) if u32::from(a) & dst_mask == u32::from(dst) & dst_mask)
            }
            FlowItem::Ipv6 { dst, dst_mask } => {
                saw_vlan == vlan
                    && matches!(addr, IpAddr::V6(a) if u128::from(a) & dst_mask == u128::from(dst) & dst_mask)
            }
            FlowItem::Tcp { dst_port, dst_mask } => tcp && port & dst_mask == dst_port & dst_mask,
            FlowItem::Udp { dst_port, dst_mask } => !tcp && port & dst_mask == dst_port & dst_mask,
        })
    }

    #[test]
    fn only_a_power_of_two_of_workers_has_an_owner_mask() {
        assert_eq!(owner_mask(1), Err(Mode::Single));
        assert_eq!(owner_mask(2), Ok(1));
        assert_eq!(owner_mask(4), Ok(3));
        assert_eq!(owner_mask(64), Ok(63));
        for n in [3, 5, 6, 7, 12] {
            let Err(Mode::Ring(why)) = owner_mask(n) else {
                panic!("{n} workers")
            };
            assert!(why.starts_with(&format!("{n} workers: ")), "{why}");
        }
    }

    #[test]
    fn each_worker_gets_a_tcp_and_a_udp_rule_on_its_own_queue() {
        let rs = rules(3, dest(SNAT));
        assert_eq!(rs.len(), 8);
        for (i, r) in rs.iter().enumerate() {
            let w = u16::try_from(i / 2).unwrap();
            assert_eq!(r.action(), FlowAction::Queue(QueueId(w)));
            let l4 = if i % 2 == 0 {
                FlowItem::Tcp {
                    dst_port: w,
                    dst_mask: 3,
                }
            } else {
                FlowItem::Udp {
                    dst_port: w,
                    dst_mask: 3,
                }
            };
            assert_eq!(
                r.pattern(),
                &[
                    FlowItem::Eth,
                    FlowItem::Ipv4 {
                        dst: SNAT,
                        dst_mask: u32::MAX
                    },
                    l4
                ]
            );
        }
        let tagged = rules(
            1,
            Dest {
                vlan: Some(300),
                addr: SNAT.into(),
            },
        );
        assert_eq!(tagged.len(), 4);
        assert!(tagged
            .iter()
            .all(|r| r.pattern()[1] == FlowItem::Vlan { vid: 300 } && r.pattern().len() == 4));
        // An IPv6 SNAT address (NAT66): the same rules on its IPv6 destination.
        let v6 = rules(1, dest(SNAT6));
        assert_eq!(v6.len(), 4);
        assert!(v6.iter().all(|r| r.pattern()[1]
            == FlowItem::Ipv6 {
                dst: SNAT6,
                dst_mask: u128::MAX
            }));
    }

    /// The invariant steering rests on: a reply to any SNAT port matches exactly one rule
    /// per protocol, and its queue is the worker that port belongs to.
    #[test]
    fn every_snat_port_matches_one_rule_whose_queue_is_its_owner() {
        for (workers, snat) in [
            (2u16, IpAddr::from(SNAT)),
            (4, SNAT.into()),
            (8, SNAT.into()),
            (4, SNAT6.into()),
        ] {
            let addr: IpAddr = snat;
            let mask = owner_mask(workers).unwrap();
            let rs = rules(mask, dest(addr));
            let snat = SnatPorts::new(0, workers, 16, 1);
            for port in SNAT_PORT_MIN..=u16::MAX {
                for tcp in [true, false] {
                    let hits: Vec<&FlowRule> = rs
                        .iter()
                        .filter(|r| matches(r, None, addr, tcp, port))
                        .collect();
                    assert_eq!(hits.len(), 1, "{workers} workers, port {port}");
                    assert_eq!(
                        hits[0].action(),
                        FlowAction::Queue(QueueId(snat.owner(port))),
                        "{workers} workers, port {port}"
                    );
                }
            }
            // Nothing else is steered: another address, or the SNAT address on a VLAN.
            assert!(!rs.iter().any(|r| matches(r, None, OWN, true, 2000)));
            let other = if addr.is_ipv4() {
                IpAddr::from(SNAT6)
            } else {
                SNAT.into()
            };
            assert!(!rs.iter().any(|r| matches(r, None, other, true, 2000)));
            assert!(!rs.iter().any(|r| matches(r, Some(7), addr, true, 2000)));
        }
    }

    #[test]
    fn targets_and_probes_come_from_the_snapshot() {
        // The demo with IPv6 on both VPCs and an IPv6 SNAT address on its service.
        let mut config = mgmt::config::Config::embedded_default();
        config.vpcs[0].address6 = Some("fd00:c1::1/64".parse().unwrap());
        config.vpcs[1].address6 = Some("fd00:b1::1/64".parse().unwrap());
        config.services[0].snat_addresses.push(SNAT6.into());
        config.validate().expect("valid");
        let snap = Snapshot::build(
            1,
            &config,
            &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            &[1500, 1500],
            &config.state(),
            &mut crate::tables::snapshot::Handles::default(),
        )
        .expect("demo snapshot");
        let t = targets(&snap);
        assert!(t.iter().any(|t| t.dest.addr == IpAddr::from(SNAT6)));
        for target in &t {
            let s = snap
                .services()
                .find(|s| match target.dest.addr {
                    IpAddr::V4(a) => s.snat.contains(&u32::from(a)),
                    IpAddr::V6(a) => s.snat6.iter().any(|&(_, b)| b == u128::from(a)),
                })
                .expect("a service's SNAT address");
            let a = &snap.attachments[usize::from(s.attachment)];
            assert_eq!((target.port, target.dest.vlan), (a.port, a.vlan));
        }
        let p = probes(&snap, 2);
        assert_eq!(p.len(), 2);
        for a in &snap.attachments {
            let mine = &p[usize::from(a.port)];
            assert!(mine.contains(&Dest {
                vlan: a.vlan,
                addr: Ipv4Addr::from(a.ip).into(),
            }));
            assert!(mine.contains(&Dest {
                vlan: a.vlan,
                addr: Ipv6Addr::from(a.ip6.expect("IPv6 too")).into(),
            }));
        }
    }

    /// What the stand-in port saw.
    #[derive(Debug, Default)]
    struct Seen {
        validated: usize,
        created: Vec<FlowRule>,
        destroyed: Vec<FlowRule>,
        flushed: usize,
    }

    /// A device that takes rules until `refuse_after` creations (validation succeeds
    /// always, as net_tap's does), or refuses validation when `no_flow`.
    struct FakePort {
        seen: Rc<RefCell<Seen>>,
        refuse_after: Option<usize>,
        no_flow: bool,
    }

    #[derive(Debug)]
    struct FakeRule {
        rule: FlowRule,
        seen: Rc<RefCell<Seen>>,
        flushed: std::cell::Cell<bool>,
    }

    impl Drop for FakeRule {
        fn drop(&mut self) {
            if !self.flushed.get() {
                self.seen.borrow_mut().destroyed.push(self.rule.clone());
            }
        }
    }

    impl FakePort {
        fn new(refuse_after: Option<usize>) -> FakePort {
            FakePort {
                seen: Rc::default(),
                refuse_after,
                no_flow: false,
            }
        }

        /// Rules in place now.
        fn live(&self) -> usize {
            let s = self.seen.borrow();
            s.created.len() - s.destroyed.len() - s.flushed
        }
    }

    impl FlowPort for FakePort {
        type Rule = FakeRule;

        fn name(&self) -> &str {
            "fake"
        }

        fn validate(&self, _: &FlowRule) -> Result<(), DpdkError> {
            self.seen.borrow_mut().validated += 1;
            if self.no_flow {
                return Err(DpdkError::new("rte_flow_validate(fake)", ENOSYS));
            }
            Ok(())
        }

        fn create(&self, rule: &FlowRule) -> Result<FakeRule, DpdkError> {
            let mut s = self.seen.borrow_mut();
            if self.refuse_after.is_some_and(|n| s.created.len() >= n) {
                return Err(DpdkError::new(
                    "rte_flow_create(fake): item not supported",
                    ENOTSUP,
                ));
            }
            s.created.push(rule.clone());
            Ok(FakeRule {
                rule: rule.clone(),
                seen: Rc::clone(&self.seen),
                flushed: std::cell::Cell::new(false),
            })
        }

        fn flush(&self, rules: Vec<FakeRule>) -> Result<(), DpdkError> {
            for r in &rules {
                r.flushed.set(true);
            }
            self.seen.borrow_mut().flushed += rules.len();
            Ok(())
        }
    }

    fn target(port: u16, addr: impl Into<IpAddr>) -> Target {
        Target {
            port,
            dest: dest(addr),
        }
    }

    #[test]
    fn a_port_that_takes_the_rules_steers_and_follows_its_snat_addresses() {
        let ports = [FakePort::new(None)];
        let second = Ipv4Addr::new(10, 2, 0, 101);
        let mut s = Steering::start(
            &ports,
            2,
            &[vec![dest(OWN)]],
            &BTreeSet::from([target(0, SNAT)]),
            1,
        );
        assert_eq!(s.modes().collect::<Vec<_>>(), [&Mode::Flow]);
        // The probe (4 rules on the attachment's own address) came and went; the SNAT
        // address's 4 are in.
        {
            let seen = ports[0].seen.borrow();
            assert_eq!(seen.created.len(), 8);
            assert_eq!(seen.validated, 8);
            assert_eq!(seen.destroyed, rules(1, dest(OWN)));
            assert_eq!(seen.created[4..], rules(1, dest(SNAT))[..]);
        }
        assert_eq!((s.rule_count(0), ports[0].live()), (4, 4));

        // The same generation again: nothing is asked of the device.
        s.follow(&ports, 1, || panic!("not recomputed"));
        // A service with a second address appears.
        s.follow(&ports, 2, || {
            BTreeSet::from([target(0, SNAT), target(0, second)])
        });
        assert_eq!((s.rule_count(0), ports[0].live()), (8, 8));
        assert_eq!(
            ports[0].seen.borrow().created[8..],
            rules(1, dest(second))[..]
        );
        // The first one goes.
        s.follow(&ports, 3, || BTreeSet::from([target(0, second)]));
        assert_eq!((s.rule_count(0), ports[0].live()), (4, 4));
        assert_eq!(
            ports[0].seen.borrow().destroyed[4..],
            rules(1, dest(SNAT))[..]
        );
        // Clean shutdown: one flush takes the rest, none is destroyed twice.
        s.shutdown(&ports);
        let seen = ports[0].seen.borrow();
        assert_eq!((seen.flushed, seen.destroyed.len()), (4, 8));
        drop(seen);
        assert_eq!(ports[0].live(), 0);
    }

    #[test]
    fn a_refused_rule_leaves_the_port_on_the_ring_with_nothing_installed() {
        // The third rule of the probe is refused; the other port takes everything.
        let ports = [FakePort::new(Some(2)), FakePort::new(None)];
        let s = Steering::start(
            &ports,
            2,
            &[vec![dest(OWN)], vec![dest(Ipv4Addr::new(10, 1, 0, 1))]],
            &BTreeSet::from([target(0, SNAT)]),
            1,
        );
        let modes: Vec<&Mode> = s.modes().collect();
        let Mode::Ring(why) = modes[0] else {
            panic!("{modes:?}")
        };
        assert!(
            why.starts_with("the device refused a rule: rte_flow_create(fake): item not supported"),
            "{why}"
        );
        assert_eq!(modes[1], &Mode::Flow);
        assert_eq!((s.rule_count(0), ports[0].live()), (0, 0));
        assert_eq!(ports[0].seen.borrow().destroyed.len(), 2, "both undone");
        // Port 1 has no SNAT address: its probe came and went.
        assert_eq!((s.rule_count(1), ports[1].live()), (0, 0));
    }

    #[test]
    fn a_device_without_rte_flow_is_never_asked_to_create() {
        let mut port = FakePort::new(None);
        port.no_flow = true;
        let ports = [port];
        let mut s = Steering::start(
            &ports,
            4,
            &[vec![dest(OWN)]],
            &BTreeSet::from([target(0, SNAT)]),
            1,
        );
        assert_eq!(
            s.modes().next(),
            Some(&Mode::Ring("the device has no rte_flow".into()))
        );
        s.follow(&ports, 2, || panic!("no port steers: nothing to compute"));
        let seen = ports[0].seen.borrow();
        assert_eq!((seen.validated, seen.created.len()), (1, 0));
    }

    #[test]
    fn a_refusal_at_run_time_falls_back_to_the_ring_and_removes_the_port_s_rules() {
        // Probe 4 + the first address 4; the second address's third rule is refused.
        let ports = [FakePort::new(Some(10))];
        let mut s = Steering::start(
            &ports,
            2,
            &[vec![dest(OWN)]],
            &BTreeSet::from([target(0, SNAT)]),
            1,
        );
        assert_eq!(s.modes().next(), Some(&Mode::Flow));
        let second = Ipv4Addr::new(10, 2, 0, 101);
        s.follow(&ports, 2, || {
            BTreeSet::from([target(0, SNAT), target(0, second)])
        });
        assert!(
            matches!(s.modes().next(), Some(Mode::Ring(w)) if w.starts_with("the device refused a rule for 10.2.0.101: ")),
            "{:?}",
            s.modes().collect::<Vec<_>>()
        );
        assert_eq!((s.rule_count(0), ports[0].live()), (0, 0));
        // From now on the device is left alone.
        let created = ports[0].seen.borrow().created.len();
        s.follow(&ports, 3, || BTreeSet::from([target(0, SNAT)]));
        assert_eq!(ports[0].seen.borrow().created.len(), created);
        s.shutdown(&ports);
        assert_eq!(ports[0].seen.borrow().flushed, 0);
    }

    #[test]
    fn without_a_mask_no_port_is_probed() {
        for (workers, single) in [(1u16, true), (3, false), (6, false)] {
            let ports = [FakePort::new(None)];
            let s = Steering::start(
                &ports,
                workers,
                &[vec![dest(OWN)]],
                &BTreeSet::from([target(0, SNAT)]),
                1,
            );
            let mode = s.modes().next().cloned();
            assert_eq!(mode == Some(Mode::Single), single, "{mode:?}");
            assert_eq!(ports[0].seen.borrow().validated, 0);
        }
    }

    #[test]
    fn a_port_without_attachment_is_not_probed() {
        let ports = [FakePort::new(None)];
        let s = Steering::start(&ports, 2, &[vec![]], &BTreeSet::new(), 1);
        assert_eq!(
            s.modes().next(),
            Some(&Mode::Ring("no VPC attachment on this port".into()))
        );
        assert_eq!(ports[0].seen.borrow().validated, 0);
    }
}
