//! The workers' side of an HA pair through the packet path: a standby stays silent and
//! installs the active's flows; after a takeover those flows carry on in both directions.

use std::sync::atomic::Ordering;

use super::*;
use crate::ha::link::{HaQueues, ACTIVE};
use crate::ha::record::{FlowRecord, RecordKind};

pub(super) fn node(config: &Config) -> (Pipeline<VecFrame>, Snapshot, HaQueues) {
    let (mut p, snap) = pipeline(config, 1, 0);
    let q = HaQueues::new(1, 4096, 100);
    p.set_ha_link(q.link(0).unwrap());
    (p, snap, q)
}

pub(super) fn activate(p: &mut Pipeline<VecFrame>, snap: &Snapshot, q: &HaQueues, now: u64) {
    q.shared.role.store(ACTIVE, Ordering::Release);
    p.poll(snap, now);
    p.drain_emitted().for_each(drop);
}

pub(super) fn exported(q: &HaQueues) -> Vec<FlowRecord> {
    std::iter::from_fn(|| q.export[0].pop()).collect()
}

/// A broadcast ARP request from `mac` claiming `sender` and asking for `target`.
fn arp_request(mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth([0xff; 6], mac, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

#[test]
fn a_standby_answers_nothing_and_forwards_nothing_but_learns() {
    let config = Config::embedded_default();
    let (mut p, snap, q) = node(&config);
    assert!(!p.is_active());
    let syn = tcp(CLIENT, 41000, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::Standby), 1);
    assert_eq!(p.flows().len(), 0);
    // An ARP request for the endpoint: not answered.
    let req = arp_request(CLIENT_MAC, CLIENT, ENDPOINT);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().arp_replies, 0);
    // Another MAC announcing our endpoint address: a claim for the sync thread.
    let claim = arp_request([2, 0, 0, 0, 9, 9], ENDPOINT, ENDPOINT);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&claim), 0);
    assert_eq!(q.shared.claims.load(Ordering::Relaxed), 1);
    // Polls send nothing: no announcements, no probes.
    p.poll(&snap, 1);
    assert_eq!(p.drain_emitted().count(), 0);
}

#[test]
fn the_active_records_creation_state_changes_and_ends() {
    let config = Config::embedded_default();
    let (mut p, snap, q) = node(&config);
    activate(&mut p, &snap, &q, 0);
    exported(&q);
    establish(&mut p, &snap, 41000);
    p.poll(&snap, 3);
    let kinds: Vec<(RecordKind, u8)> = exported(&q).iter().map(|r| (r.kind, r.tcp)).collect();
    use crate::tables::flow::TcpState as S;
    assert_eq!(
        kinds,
        [
            (RecordKind::Create, S::SynSent.index()),
            (RecordKind::Update, S::SynReceived.index()),
            (RecordKind::Update, S::Established.index()),
        ]
    );
    // Expiry ends it: an End record.
    let idle = u64::try_from(config.timeouts.tcp_established.as_millis()).unwrap();
    for _ in 0..64 {
        p.poll(&snap, idle + 10);
    }
    assert_eq!(p.flows().len(), 0);
    let ends: Vec<RecordKind> = exported(&q).iter().map(|r| r.kind).collect();
    assert_eq!(ends, [RecordKind::End]);
}

#[test]
fn a_standby_installs_the_peers_flows_and_carries_them_after_a_takeover() {
    let config = Config::embedded_default();
    let (mut a, snap, qa) = node(&config);
    activate(&mut a, &snap, &qa, 0);
    let (target, snat_port) = establish(&mut a, &snap, 41000);
    a.poll(&snap, 3);
    let records = exported(&qa);

    let (mut b, snap_b, qb) = node(&config);
    for r in &records {
        qb.import[0].push(*r).unwrap();
    }
    b.poll(&snap_b, 1000);
    assert_eq!(b.flows().len(), 1, "installed");
    assert_eq!(b.counters().synced_flows, 3);
    assert_eq!(
        flow_state(&b, 41000),
        crate::tables::flow::TcpState::Established
    );

    // Ten minutes later (longer than the idle timeout) the active dies; b takes over.
    let later = 600_000;
    activate(&mut b, &snap_b, &qb, later);
    b.poll(&snap_b, later + 1);
    assert_eq!(
        b.flows().len(),
        1,
        "its idle time restarted at the takeover"
    );
    assert_eq!(b.counters().takeovers, 1);
    // The consumer's next segment goes to the same target from the same SNAT port...
    let data = tcp(
        CLIENT,
        41000,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        1001,
        5001,
        MAC_C,
        CLIENT_MAC,
    );
    let (port, out) = tx(b.process(&snap_b, CONSUMER_PORT, VecFrame::new(&data), later + 2));
    assert_eq!(port, PROVIDER_PORT);
    let ip = ip_of(&out);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (SNAT, target));
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(seg.src_port(), snat_port);
    // ...and the target's reply finds the flow and goes back to the consumer.
    let reply = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::ACK,
        5001,
        1001,
        MAC_P,
        TARGET_MAC,
    );
    let (port, back) = tx(b.process(&snap_b, PROVIDER_PORT, VecFrame::new(&reply), later + 3));
    assert_eq!(port, CONSUMER_PORT);
    let ip = ip_of(&back);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
    assert_eq!(b.counters().new_flows, 0, "no flow was made anew");
}

#[test]
fn a_bulk_request_copies_every_flow_once() {
    let config = Config::embedded_default();
    let (mut p, snap, q) = node(&config);
    activate(&mut p, &snap, &q, 0);
    for port in 0..10 {
        establish(&mut p, &snap, 41000 + port);
    }
    p.poll(&snap, 3);
    exported(&q);
    q.shared.bulk_epoch.store(1, Ordering::Release);
    for t in 0..8 {
        p.poll(&snap, 4 + t);
    }
    let bulk: Vec<FlowRecord> = exported(&q);
    assert_eq!(bulk.len(), 10);
    assert!(bulk.iter().all(|r| r.kind == RecordKind::Bulk));
    assert_eq!(q.bulk_done[0].load(Ordering::Acquire), 1);
    // Done: later polls copy nothing more.
    p.poll(&snap, 20);
    assert!(exported(&q).is_empty());
}

#[test]
fn stepping_down_hands_every_address_over_to_the_peers_mac() {
    let config = Config::embedded_default();
    let (mut p, snap, q) = node(&config);
    activate(&mut p, &snap, &q, 0);
    // The peer announces the consumer-side own address from its MAC.
    const PEER: [u8; 6] = [2, 0, 0, 0, 9, 9];
    let own = Ipv4Addr::new(10, 1, 0, 1);
    let garp = arp_request(PEER, own, own);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&garp), 1);
    assert_eq!(q.shared.claims.load(Ordering::Relaxed), 1);
    p.drain_emitted().for_each(drop);
    // It steps down: consumer-side addresses are announced with the peer's MAC.
    q.shared
        .role
        .store(crate::ha::link::STANDBY, Ordering::Release);
    p.poll(&snap, 2);
    let named: Vec<Ipv4Addr> = p
        .drain_emitted()
        .filter_map(|(port, f)| {
            let b = f.bytes().to_vec();
            let a = ArpPacket::new_checked(&b[14..]).ok()?;
            (port == CONSUMER_PORT && a.source_hardware_addr() == EthernetAddress(PEER))
                .then(|| Ipv4Addr::from(a.source_protocol_addr_bytes()))
        })
        .collect();
    assert!(
        named.contains(&ENDPOINT) && named.contains(&own),
        "{named:?}"
    );
}

/// The active node keeps the own IPv6 address pointed at itself as it does the IPv4 one:
/// an unsolicited advertisement with each periodic announcement; a standby sends none and
/// answers no solicitation.
#[test]
fn the_active_advertises_its_own_ipv6_address_with_each_announcement() {
    let mut config = Config::embedded_default();
    config.vpcs[0].address6 = Some("fd00:c1::1/64".parse().unwrap());
    let (mut p, snap, q) = node(&config);
    p.poll(&snap, 0);
    assert_eq!(p.drain_emitted().count(), 0, "a standby announces nothing");
    let adverts = |p: &mut Pipeline<VecFrame>| {
        p.drain_emitted()
            .filter(|(_, f)| f.bytes()[12..14] == [0x86, 0xdd] && f.bytes()[54] == 136)
            .count()
    };
    q.shared.role.store(ACTIVE, Ordering::Release);
    p.poll(&snap, 1);
    assert!(adverts(&mut p) >= 1, "advertised on becoming active");
    let before = p.counters().nd_advertisements;
    p.poll(&snap, 150);
    assert_eq!(adverts(&mut p), 1, "again at the next announcement");
    assert_eq!(p.counters().nd_advertisements, before + 1);
}

/// The (target, link-layer address) of each unsolicited advertisement among `sent`.
fn adverts_of(sent: Vec<(u16, VecFrame)>) -> Vec<(std::net::Ipv6Addr, [u8; 6])> {
    use crate::wire::icmpv6::{Icmpv6Packet, NdiscRepr};
    sent.iter()
        .filter(|(port, f)| *port == CONSUMER_PORT && f.bytes()[12..14] == [0x86, 0xdd])
        .filter_map(|(_, f)| {
            let m = Icmpv6Packet::new_checked(&f.bytes()[54..]).ok()?;
            match NdiscRepr::parse(&m).ok()? {
                NdiscRepr::Advert {
                    target,
                    solicited: false,
                    target_lladdr: Some(mac),
                    ..
                } => Some((std::net::Ipv6Addr::from(target), mac.0)),
                _ => None,
            }
        })
        .collect()
}

/// A takeover advertises every local IPv6 address (the own one and dual-stack endpoints')
/// from this node's MAC; stepping down hands them over to the peer's MAC, as the IPv4
/// addresses are.
#[test]
fn ipv6_endpoint_addresses_follow_takeover_and_hand_over() {
    let mut config = Config::embedded_default();
    config.vpcs[0].address6 = Some("fd00:c1::1/64".parse().unwrap());
    config.services[0].supported_ip_address_types =
        vec![mgmt::model::IpFamily::Ipv4, mgmt::model::IpFamily::Ipv6];
    config.endpoints[0].ip_address_type = mgmt::model::IpAddressType::Dualstack;
    config.endpoints[0].ip6 = Some("fd00:c1::64".parse().unwrap());
    let (own6, ep6) = (
        "fd00:c1::1".parse().unwrap(),
        "fd00:c1::64".parse().unwrap(),
    );
    let (mut p, snap, q) = node(&config);
    q.shared.role.store(ACTIVE, Ordering::Release);
    for now in 1..4 {
        p.poll(&snap, now);
    }
    let got = adverts_of(p.drain_emitted().collect());
    assert!(
        got.contains(&(ep6, MAC_C)) && got.contains(&(own6, MAC_C)),
        "{got:?}"
    );

    const PEER: [u8; 6] = [2, 0, 0, 0, 9, 9];
    let own = Ipv4Addr::new(10, 1, 0, 1);
    p.process(
        &snap,
        CONSUMER_PORT,
        VecFrame::new(&arp_request(PEER, own, own)),
        5,
    );
    p.drain_emitted().for_each(drop);
    q.shared
        .role
        .store(crate::ha::link::STANDBY, Ordering::Release);
    for now in 6..9 {
        p.poll(&snap, now);
    }
    let got = adverts_of(p.drain_emitted().collect());
    assert!(
        got.contains(&(ep6, PEER)) && got.contains(&(own6, PEER)),
        "{got:?}"
    );
}

/// A NAT64 flow survives a takeover: its creation carries the consumer's IPv6 side, the
/// standby folds the address under its own seed (another than the active's), and after
/// the takeover the consumer's packets and the target's replies find the flow there.
#[test]
fn a_nat64_flow_is_synced_with_its_ipv6_side_and_carried_after_a_takeover() {
    use super::nat64::{a6, dual_config, establish6, tcp6, ENDPOINT6, HOST6};
    let config = dual_config();
    let (mut a, snap, qa) = node(&config);
    activate(&mut a, &snap, &qa, 0);
    let (target, snat_port) = establish6(&mut a, &snap, 1);
    a.poll(&snap, 4);
    let records = exported(&qa);
    assert!(
        records[0].side6.is_some(),
        "the creation carries the IPv6 side: {records:?}"
    );
    assert!(
        records[1..].iter().all(|r| r.side6.is_none()),
        "updates need none"
    );

    let (mut b, snap_b, qb) = node(&config);
    b.set_flow_hash_seed(a.settings.flow_hash_seed ^ 0x5555);
    for r in &records {
        qb.import[0].push(*r).unwrap();
    }
    b.poll(&snap_b, 1000);
    assert_eq!(b.flows().len(), 1, "installed");
    assert_eq!(b.counters().synced_flows, records.len() as u64);
    assert_eq!(b.counters().sync_unresolved, 0);
    activate(&mut b, &snap_b, &qb, 2000);
    let data = tcp6(40000, 80, WireTcpFlags::ACK, 8, 101);
    let (port, out) = tx(b.process(&snap_b, CONSUMER_PORT, VecFrame::new(&data), 2001));
    assert_eq!(port, PROVIDER_PORT);
    let ip = ip_of(&out);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (SNAT, target));
    assert_eq!(
        TcpPacket::new_checked(ip.payload()).unwrap().src_port(),
        snat_port
    );
    let reply = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::ACK,
        101,
        8,
        MAC_P,
        TARGET_MAC,
    );
    let (port, back) = tx(b.process(&snap_b, PROVIDER_PORT, VecFrame::new(&reply), 2002));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&back[..6], &CLIENT_MAC, "to the MAC the active learnt");
    let ip6 = crate::wire::ipv6::Ipv6Packet::new_checked(&back[14..]).unwrap();
    assert_eq!(
        (ip6.src_addr_u128(), ip6.dst_addr_u128()),
        (a6(ENDPOINT6), a6(HOST6))
    );
    assert_eq!(b.counters().new_flows, 0, "no flow was made anew");

    // Its end reaches the peer too, found by the provider-side key.
    let (mut c, snap_c, qc) = node(&config);
    c.set_flow_hash_seed(7);
    for r in &records {
        qc.import[0].push(*r).unwrap();
    }
    c.poll(&snap_c, 1000);
    let mut end = records[0];
    end.kind = RecordKind::End;
    end.side6 = None;
    qc.import[0].push(end).unwrap();
    c.poll(&snap_c, 1001);
    assert_eq!(c.flows().len(), 0, "ended");
}

/// An IPv6 endpoint's flows are keyed by a stand-in address made from its handle, and
/// the two nodes' handles differ: the standby keys the flow by its own stand-in (found by
/// the endpoint's IPv6 address), so the consumer's next packet finds it after a takeover.
#[test]
fn a_flow_of_an_ipv6_endpoint_is_found_on_a_peer_whose_handles_differ() {
    use super::nat64::{dual_config, establish6, tcp6};
    let mut config = dual_config();
    config.endpoints[0].ip = None;
    config.endpoints[0].ip_address_type = mgmt::model::IpAddressType::Ipv6;
    config.validate().unwrap();
    let (mut a, snap, qa) = node(&config);
    activate(&mut a, &snap, &qa, 0);
    let (target, snat_port) = establish6(&mut a, &snap, 1);
    a.poll(&snap, 4);
    let records = exported(&qa);

    // The peer gave out handles before (other objects came and went there).
    let mut handles = crate::tables::snapshot::Handles::default();
    for n in 0..5u64 {
        handles.endpoint(format!("vpce-{:017x}", 0xabc0 + n).parse().unwrap());
    }
    let snap_b = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut handles,
    )
    .unwrap();
    let (ea, eb) = (
        snap.endpoints().next().unwrap().ip,
        snap_b.endpoints().next().unwrap().ip,
    );
    assert_ne!(ea, eb, "the stand-ins differ");
    let mut settings = crate::daemon::pipeline_settings(&config, 1);
    settings.flow_capacity = 1024;
    settings.seed = Some(0x5eed);
    settings.flow_hash_seed = a.settings.flow_hash_seed ^ 0x5555;
    let b = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap_b);
    let mut b = super::with_neighbours(b, &snap_b);
    let qb = HaQueues::new(1, 4096, 100);
    b.set_ha_link(qb.link(0).unwrap());
    for r in &records {
        qb.import[0].push(*r).unwrap();
    }
    b.poll(&snap_b, 1000);
    assert_eq!(b.counters().sync_unresolved, 0);
    activate(&mut b, &snap_b, &qb, 2000);
    let data = tcp6(40000, 80, WireTcpFlags::ACK, 8, 101);
    let (port, out) = tx(b.process(&snap_b, CONSUMER_PORT, VecFrame::new(&data), 2001));
    assert_eq!(port, PROVIDER_PORT);
    let ip = ip_of(&out);
    assert_eq!(ip.dst_addr(), target);
    assert_eq!(
        TcpPacket::new_checked(ip.payload()).unwrap().src_port(),
        snat_port
    );
    assert_eq!(b.counters().new_flows, 0, "the synced flow, not a new one");
}
