//! A snapshot made from the last one is the whole build of the same state, over long
//! sequences of every kind of change, and it shares what the change did not touch.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use mgmt::config::Config;
use mgmt::model::{
    EndpointState, IngressRule, RuleProtocol, SecurityGroup, SecurityGroupId, ServiceId, State,
};
use mgmt::store::touched;

use super::shards::SHARDS;
use super::{Change, Handles, Snapshot};
use crate::health::{self, TargetKey};

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const MTUS: [u16; 2] = [1500, 1500];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).expect("below n")
    }

    fn port(&mut self, from: u16, span: u16) -> u16 {
        from + u16::try_from(self.next() % u64::from(span)).expect("below span")
    }
}

const STATES: [EndpointState; 6] = [
    EndpointState::PendingAcceptance,
    EndpointState::Available,
    EndpointState::Rejected,
    EndpointState::Failed,
    EndpointState::Deleting,
    EndpointState::Deleted,
];

fn group(n: u32, config: &Config) -> SecurityGroup {
    SecurityGroup {
        id: SecurityGroupId::new(0x5000 + u128::from(n)).unwrap(),
        owner: config.vpcs[0].account,
        vpc_id: config.vpcs[0].vpc_id,
        name: format!("g{n}"),
        description: String::new(),
        ingress: vec![rule(80)],
    }
}

fn rule(port: u16) -> IngressRule {
    IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: port,
        to_port: port,
        cidr: "10.1.0.0/16".parse().unwrap(),
    }
}

/// A dual-stack endpoint's address in the consumer VPC's IPv6 prefix.
fn ip6(n: u32) -> std::net::Ipv6Addr {
    std::net::Ipv6Addr::from(0xfd00_00c1_u128 << 96 | 0x1000 | u128::from(n))
}

/// One random change of `st`, of any kind the store makes (not all valid for the
/// store, all buildable: an endpoint that needs its service has one).
fn mutate(st: &mut State, rng: &mut Rng, next_ip: &mut u32, next_id: &mut u128) {
    let ip = |n: &mut u32| {
        *n += 1;
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 1, 0)) + *n)
    };
    match rng.below(12) {
        0..=2 if !st.services.is_empty() => {
            let mut e = st.endpoints.first().cloned().expect("a model endpoint");
            *next_id += 1;
            e.id = format!("vpce-1{:016x}", *next_id).parse().unwrap();
            e.ip = Some(ip(next_ip));
            e.ip6 = (rng.below(2) == 0).then(|| ip6(*next_ip));
            e.service_id = st.services[rng.below(st.services.len())].id;
            e.state = STATES[rng.below(3)];
            e.security_group_ids = st
                .security_groups
                .iter()
                .filter(|_| rng.below(3) == 0)
                .map(|g| g.id)
                .collect();
            st.endpoints.push(e);
        }
        3 if st.endpoints.len() > 1 => {
            let i = 1 + rng.below(st.endpoints.len() - 1);
            st.endpoints.remove(i);
        }
        4 => {
            let i = rng.below(st.endpoints.len());
            let has_service = st
                .services
                .iter()
                .any(|s| s.id == st.endpoints[i].service_id);
            let s = STATES[rng.below(STATES.len())];
            if has_service || !s.needs_service() {
                st.endpoints[i].state = s;
            }
            // An IPv6 address comes or goes with it, now and then.
            if rng.below(3) == 0 {
                *next_ip += 1;
                let e = &mut st.endpoints[i];
                e.ip6 = match e.ip6 {
                    Some(_) => None,
                    None => Some(ip6(*next_ip)),
                };
            }
        }
        5 => {
            let i = rng.below(st.endpoints.len());
            let g = st.security_groups[rng.below(st.security_groups.len())].id;
            let ids = &mut st.endpoints[i].security_group_ids;
            match ids.iter().position(|x| *x == g) {
                Some(p) => {
                    ids.remove(p);
                }
                None => ids.push(g),
            }
        }
        6 => {
            let g = rng.below(st.security_groups.len());
            let rules = &mut st.security_groups[g].ingress;
            if rules.len() > 1 && rng.below(2) == 0 {
                rules.pop();
            } else {
                rules.push(rule(rng.port(1000, 1000)));
            }
        }
        7 if !st.services.is_empty() => {
            let s = rng.below(st.services.len());
            let ls = &mut st.services[s].listeners;
            if ls.len() > 1 && rng.below(2) == 0 {
                ls.remove(rng.below(ls.len()));
            } else {
                let mut l = ls[0].clone();
                l.port = rng.port(2000, 5000);
                if !ls
                    .iter()
                    .any(|x| x.port == l.port && x.protocol == l.protocol)
                {
                    ls.push(l);
                }
            }
        }
        8 if !st.services.is_empty() => {
            let s = rng.below(st.services.len());
            let snat = &mut st.services[s].snat_addresses;
            if snat.len() > 1 && rng.below(2) == 0 {
                snat.pop();
            } else {
                *next_ip += 1;
                snat.push(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 1, 0)) + *next_ip).into());
            }
        }
        9 if !st.services.is_empty() => {
            let s = rng.below(st.services.len());
            let l = rng.below(st.services[s].listeners.len());
            let targets = &mut st.services[s].listeners[l].targets;
            match rng.below(3) {
                0 if targets.len() > 1 => {
                    targets.pop();
                }
                1 => {
                    let t = rng.below(targets.len());
                    targets[t].weight = u32::from(rng.port(0, 4));
                }
                _ => {
                    let mut t = targets[0].clone();
                    t.port = rng.port(3000, 1000);
                    if !targets.iter().any(|x| x.ip == t.ip && x.port == t.port) {
                        targets.push(t);
                    }
                }
            }
        }
        10 if st.services.len() > 1 => {
            let gone = st.services.remove(rng.below(st.services.len())).id;
            for e in st.endpoints.iter_mut() {
                if e.service_id == gone && e.state.needs_service() {
                    e.state = EndpointState::Failed;
                }
            }
        }
        _ if !st.services.is_empty() => {
            let mut s = st.services[0].clone();
            *next_id += 1;
            s.id = ServiceId::new(0x7000 + *next_id).unwrap();
            *next_ip += 1;
            s.snat_addresses =
                vec![Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 1, 0)) + *next_ip).into()];
            st.services.push(s);
        }
        _ => {}
    }
}

/// `prev` made into the snapshot of `st` (no health known).
fn update(
    prev: &Snapshot,
    generation: u64,
    config: &Config,
    st: &State,
    change: &Change,
    handles: &mut Handles,
) -> Snapshot {
    Snapshot::update(
        prev,
        generation,
        config,
        &MACS,
        &MTUS,
        st,
        change,
        handles,
        &HashMap::new(),
    )
    .unwrap()
}

fn start(config: &Config) -> State {
    let mut st = config.state();
    st.security_groups = (0..3).map(|n| group(n, config)).collect();
    st
}

#[test]
fn an_update_is_the_whole_build_over_every_kind_of_change() {
    let mut config = Config::embedded_default();
    config.vpcs[0].address6 = Some("fd00:c1::1/64".parse().unwrap());
    // Small Maglev tables: a debug build makes hundreds of them here.
    config.tables.maglev_size = 251;
    for seed in 1..=8u64 {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut handles = Handles::default();
        let mut st = start(&config);
        let mut snap = Snapshot::build(1, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
        let (mut next_ip, mut next_id) = (0u32, 0u128);
        for step in 0..150u64 {
            let before = st.clone();
            for _ in 0..=rng.below(3) {
                mutate(&mut st, &mut rng, &mut next_ip, &mut next_id);
            }
            let change = Change::from_touched(&touched(&before, &st));
            let generation = step + 2;
            let made = update(&snap, generation, &config, &st, &change, &mut handles);
            let whole =
                Snapshot::build(generation, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
            let d = made.differences(&whole);
            assert!(d.is_empty(), "seed {seed} step {step} {change:?}: {d:#?}");
            // What it announces is exactly what the last one did not have.
            let mut new: Vec<_> = whole
                .sorted_locals()
                .iter()
                .filter(|k| snap.local(k.0, k.1).is_none())
                .copied()
                .collect();
            new.sort_unstable();
            assert_eq!(made.announce, new, "seed {seed} step {step}");
            let new6: Vec<_> = whole
                .sorted_locals6()
                .iter()
                .filter(|k| snap.local6(k.0, k.1).is_none())
                .copied()
                .collect();
            assert_eq!(made.announce6, new6, "seed {seed} step {step}");
            assert_eq!(made.base, Some(snap.generation));
            snap = made;
        }
    }
}

#[test]
fn a_health_change_makes_the_services_again_and_keeps_the_endpoints() {
    let config = Config::embedded_default();
    let mut handles = Handles::default();
    let st = start(&config);
    let snap = Snapshot::build(1, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
    let mut health_map = HashMap::new();
    for spec in &snap.health_checks {
        health_map.insert(spec.key, health::State::Unhealthy);
    }
    let first: TargetKey = snap.health_checks[0].key;
    health_map.insert(first, health::State::Healthy);
    let made = Snapshot::update(
        &snap,
        2,
        &config,
        &MACS,
        &MTUS,
        &st,
        &Change::health(),
        &mut handles,
        &health_map,
    )
    .unwrap();
    let whole =
        Snapshot::build_with_health(2, &config, &MACS, &MTUS, &st, &mut handles, &health_map)
            .unwrap();
    assert_eq!(made.differences(&whole), Vec::<String>::new());
    assert!(
        made.differences(&snap)
            .iter()
            .any(|d| d.starts_with("services")),
        "the targets' health is in the new version"
    );
    assert_eq!(made.endpoint_shards_shared_with(&snap), SHARDS);
    assert!(made.announce.is_empty());
}

#[test]
fn one_endpoint_changed_among_ten_thousand_shares_everything_else() {
    let config = Config::embedded_default();
    let mut handles = Handles::default();
    let mut st = start(&config);
    let mut model = st.endpoints[0].clone();
    // IPv4 only: the copies would otherwise share the model's IPv6 address.
    (model.ip6, model.ip_address_type) = (None, mgmt::model::IpAddressType::Ipv4);
    for i in 0..10_000u32 {
        let mut e = model.clone();
        e.id = format!("vpce-1{i:016x}").parse().unwrap();
        e.ip = Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 4, 0, 1)) + i));
        st.endpoints.push(e);
    }
    let snap = Snapshot::build(1, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
    let before = st.clone();
    st.endpoints[5000].state = EndpointState::Rejected;
    let change = Change::from_touched(&touched(&before, &st));
    let made = update(&snap, 2, &config, &st, &change, &mut handles);
    assert_eq!(made.endpoint_shards_shared_with(&snap), SHARDS - 1);
    assert_eq!(made.listeners.shared_with(&snap.listeners), SHARDS - 1);
    assert_eq!(made.locals.shared_with(&snap.locals), SHARDS - 1);
    assert!(made
        .services
        .iter()
        .zip(&snap.services)
        .all(|(a, b)| Arc::ptr_eq(a, b)));
    let whole = Snapshot::build(2, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
    assert_eq!(made.differences(&whole), Vec::<String>::new());
    // The rejected endpoint's address left the locals: one list copied, one key fewer.
    assert_eq!(made.sorted_locals().len() + 1, snap.sorted_locals().len());
    // A change that moves no address shares the sorted list itself.
    let again = update(
        &made,
        3,
        &config,
        &st,
        &Change::from_touched(&[st.endpoints[7].id.to_string()]),
        &mut handles,
    );
    let all = made.sorted_locals.len();
    assert_eq!(
        again.sorted_locals.shared_ends(&made.sorted_locals),
        (all, 0)
    );
    // The rejected endpoint's address went out of one chunk of the sorted list.
    let (head, tail) = made.sorted_locals.shared_ends(&snap.sorted_locals);
    assert!(head + tail + mgmt::model::CHUNK >= made.sorted_locals.len());
    // A removal, an append and a change in the first chunk, each made from the last
    // version (which reads only the endpoints that differ from the list it was made
    // from) and each the whole build of its state.
    let mut snap = again;
    for step in 0..3u64 {
        let before = st.clone();
        match step {
            0 => {
                st.endpoints.remove(3000);
            }
            1 => {
                let mut e = model.clone();
                e.id = "vpce-1ffff000000000001".parse().unwrap();
                e.ip = Some(Ipv4Addr::new(10, 4, 200, 1));
                st.endpoints.push(e);
            }
            _ => st.endpoints[3].ip = Some(Ipv4Addr::new(10, 4, 201, 1)),
        }
        let change = Change::from_touched(&touched(&before, &st));
        let made = update(&snap, 4 + step, &config, &st, &change, &mut handles);
        let whole = Snapshot::build(4 + step, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
        assert_eq!(
            made.differences(&whole),
            Vec::<String>::new(),
            "step {step}"
        );
        assert_eq!(made.endpoint_count(), st.endpoints.len(), "step {step}");
        snap = made;
    }
}

#[test]
fn a_new_configuration_or_an_unknown_id_builds_whole() {
    let config = Config::embedded_default();
    let mut handles = Handles::default();
    let st = start(&config);
    let snap = Snapshot::build(1, &config, &MACS, &MTUS, &st, &mut handles).unwrap();
    let mut other = config.clone();
    other.vpcs[0].mss_clamp = Some(1000);
    let made = update(&snap, 2, &other, &st, &Change::default(), &mut handles);
    assert_eq!(made.base, None, "other attachments: built whole");
    assert_eq!(made.attachments[0].mss_clamp, Some(1000));
    assert_eq!(made.announce.len(), made.sorted_locals().len());
    let c = Change::from_touched(&["what-is-this".to_owned()]);
    let made = update(&snap, 2, &config, &st, &c, &mut handles);
    assert_eq!(made.base, None);
}
