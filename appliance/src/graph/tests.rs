//! The packet path on literal frames, without DPDK: the embedded demo topology, frames
//! built with the wire module's reprs, `VecFrame` buffers.

use std::net::Ipv4Addr;

use mgmt::config::Config;

use super::*;
use crate::graph::frame::VecFrame;
use crate::wire::tcp::{TcpFlags as WireTcpFlags, TcpRepr};
use crate::wire::udp::{UdpPacket, UdpRepr};

const CONSUMER_PORT: u16 = 0;
const PROVIDER_PORT: u16 = 1;
const MAC_C: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc0];
const MAC_P: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb0];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x10];
const TARGET_MAC: [u8; 6] = [0x02, 0, 0, 0, 2, 0x11];
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 10);
const ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const SNAT: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 100);

fn snapshot(config: &Config) -> Snapshot {
    Snapshot::build(
        1,
        config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut crate::tables::snapshot::Handles::default(),
    )
    .expect("demo snapshot")
}

/// The embedded default without its IPv6 (the consumer attachment's address, the
/// dual-stack endpoint): for tests of what IPv4 alone sends.
fn ipv4_default() -> Config {
    let mut config = Config::embedded_default();
    for v in &mut config.vpcs {
        v.address6 = None;
    }
    for e in &mut config.endpoints {
        e.ip_address_type = mgmt::model::IpAddressType::Ipv4;
        e.ip6 = None;
    }
    for s in &mut config.services {
        s.supported_ip_address_types = vec![mgmt::model::IpFamily::Ipv4];
    }
    config.validate().expect("the IPv4 default");
    config
}

fn pipeline(config: &Config, workers: u16, id: u16) -> (Pipeline<VecFrame>, Snapshot) {
    let snap = snapshot(config);
    let mut settings = crate::daemon::pipeline_settings(config, workers);
    settings.flow_capacity = 1024;
    // Pipelines compared packet by packet must draw the same SNAT ports.
    settings.seed = Some(0x5eed);
    let p = Pipeline::new(id, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    (with_neighbours(p, &snap), snap)
}

/// Worker `id`'s pipeline on `snap`, its neighbour tables `table` shared with the
/// others, what it sent at the start drained.
fn sharing(
    id: u16,
    settings: &crate::graph::PipelineSettings,
    snap: &Snapshot,
    table: &SharedNeighbours,
) -> Pipeline<VecFrame> {
    let mut p: Pipeline<VecFrame> = Pipeline::with_neighbour_table(
        id,
        settings.clone(),
        Box::new(|| Some(VecFrame::new(&[]))),
        snap,
        table.clone(),
    );
    p.drain_emitted().for_each(drop);
    p
}

/// The client (and its IPv6 address) and both targets known, so translated packets
/// leave at once.
fn with_neighbours(mut p: Pipeline<VecFrame>, snap: &Snapshot) -> Pipeline<VecFrame> {
    let host6 = nat64::a6(nat64::HOST6);
    p.neighbour_table6().learn(0, host6, CLIENT_MAC, 0);
    for (att, ip, mac) in [
        (0u16, CLIENT, CLIENT_MAC),
        (1, Ipv4Addr::new(10, 2, 0, 11), TARGET_MAC),
        (1, Ipv4Addr::new(10, 2, 0, 12), TARGET_MAC),
    ] {
        p.learn_remote(
            snap,
            NeighbourNews {
                attachment: att,
                ip: ip.into(),
                mac,
            },
            0,
        );
    }
    p.drain_emitted().for_each(drop);
    p
}

fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: WireTcpFlags,
    seq: u32,
    ack: u32,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Vec<u8> {
    let mut f = eth(dst_mac, src_mac, 0x0800);
    let mut l3 = vec![0u8; 40];
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        seq_number: seq,
        ack_number: ack,
        flags,
        window_len: 1000,
        urgent_at: 0,
    };
    repr.emit(&mut l3[20..], src, dst, 0).unwrap();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::TCP,
        payload_len: 20,
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    f.extend_from_slice(&l3);
    f
}

fn udp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Vec<u8> {
    let mut f = eth(dst_mac, src_mac, 0x0800);
    let mut l3 = vec![0u8; 20 + 8 + 4];
    l3[28..].copy_from_slice(b"ping");
    UdpRepr {
        src_port: sport,
        dst_port: dport,
    }
    .emit(&mut l3[20..], src, dst, 4)
    .unwrap();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::UDP,
        payload_len: 12,
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    f.extend_from_slice(&l3);
    f
}

fn ip_of(frame: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&frame[14..]).unwrap()
}

fn tx(v: Verdict<VecFrame>) -> (u16, Vec<u8>) {
    match v {
        Verdict::Tx(port, f) => (port, f.bytes().to_vec()),
        other => panic!("expected Tx, got {other:?}"),
    }
}

/// Version `v` of `config`'s snapshot, with `handles` kept across versions (as the
/// management thread keeps them), on the demo's two ports.
fn build_versioned(
    config: &Config,
    v: u64,
    handles: &mut crate::tables::snapshot::Handles,
) -> Snapshot {
    Snapshot::build(
        v,
        config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        handles,
    )
    .unwrap()
}

fn syn() -> WireTcpFlags {
    WireTcpFlags::SYN
}

#[test]
fn tcp_handshake_is_translated_both_ways_with_valid_checksums() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let f = tcp(
        CLIENT,
        40000,
        ENDPOINT,
        80,
        syn(),
        1000,
        0,
        MAC_C,
        CLIENT_MAC,
    );
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 10));
    assert_eq!(port, PROVIDER_PORT);
    assert_eq!(&out[0..6], &TARGET_MAC);
    assert_eq!(&out[6..12], &MAC_P);
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), SNAT);
    assert_eq!(ip.ttl(), 63);
    let target = ip.dst_addr();
    assert!(target == Ipv4Addr::new(10, 2, 0, 11) || target == Ipv4Addr::new(10, 2, 0, 12));
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(seg.dst_port(), 8080);
    assert!(seg.src_port() >= SNAT_PORT_MIN);
    assert!(
        seg.verify_checksum(SNAT, target),
        "incremental TCP checksum matches a full one"
    );
    let snat_port = seg.src_port();

    // The target's SYN-ACK comes back to the client from the endpoint.
    let r = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        5000,
        1001,
        MAC_P,
        TARGET_MAC,
    );
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 11));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&back[0..6], &CLIENT_MAC);
    let ip = ip_of(&back);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((seg.src_port(), seg.dst_port()), (80, 40000));
    assert!(seg.verify_checksum(ENDPOINT, CLIENT));
    assert_eq!(p.counters().new_flows, 1);
    assert_eq!(p.flows().len(), 1);
}

#[test]
fn expired_established_flow_answers_rst() {
    let mut config = Config::embedded_default();
    config.timeouts.tcp_established = std::time::Duration::from_secs(1);
    let (mut p, snap) = pipeline(&config, 1, 0);
    let f = tcp(CLIENT, 40001, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    let ip = ip_of(&out);
    let target = ip.dst_addr();
    let snat_port = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    let r = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        100,
        2,
        MAC_P,
        TARGET_MAC,
    );
    tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 1));
    let a = tcp(
        CLIENT,
        40001,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        2,
        101,
        MAC_C,
        CLIENT_MAC,
    );
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&a), 2));
    let fid = p.flows().lookup_forward(&FlowKey {
        src_ip: CLIENT.into(),
        dst_ip: ENDPOINT.into(),
        src_port: 40001,
        dst_port: 80,
        vpc: 0,
        proto: PROTO_TCP,
    });
    assert!(p.flows().get(fid.unwrap()).unwrap().tcp.is_established());

    // 1.5 s later the flow has idled out: the next data segment gets a RST.
    let d = tcp(
        CLIENT,
        40001,
        ENDPOINT,
        80,
        WireTcpFlags::ACK | WireTcpFlags::PSH,
        2,
        101,
        MAC_C,
        CLIENT_MAC,
    );
    let (port, rst) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&d), 1502));
    assert_eq!(port, CONSUMER_PORT);
    let ip = ip_of(&rst);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.rst());
    assert_eq!(seg.seq_number(), 101);
    assert!(seg.verify_checksum(ENDPOINT, CLIENT));
    assert_eq!(p.counters().rst_sent, 1);
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 1);
}

/// The expiry sweep is paced by the clock, not by the loop: polls within one millisecond
/// examine a few slots (a table out of cache was read 64 slots a burst, over and over),
/// and every idle flow is still gone within a sweep's time.
#[test]
fn the_expiry_sweep_keeps_to_its_pace_and_still_ends_every_idle_flow() {
    let mut config = ipv4_default();
    config.timeouts.udp = std::time::Duration::from_secs(1);
    let (mut p, snap) = pipeline(&config, 1, 0);
    for port in 0..100 {
        let f = udp(CLIENT, 5000 + port, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
        tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    }
    assert_eq!(p.flows().len(), 100);
    for ms in 0..=1000 {
        p.poll(&snap, ms);
    }
    assert_eq!(p.flows().len(), 100, "none idle for a second yet");
    // Idle now; a busy loop polls hundreds of times a millisecond.
    for _ in 0..200 {
        p.poll(&snap, 1001);
    }
    let pace = p
        .flows()
        .capacity()
        .div_ceil(super::upkeep::EXPIRE_SWEEP_MS);
    assert!(
        p.flows().len() >= 100 - pace,
        "{} flows left: one millisecond swept more than {pace} slots",
        p.flows().len()
    );
    for ms in 1002..=1001 + super::upkeep::EXPIRE_SWEEP_MS as u64 {
        p.poll(&snap, ms);
    }
    assert_eq!(p.flows().len(), 0, "a whole sweep leaves no idle flow");
    assert_eq!(p.counters().expired_flows, 100);
}

#[test]
fn udp_round_trip_and_unknown_port_and_ip_are_dropped() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let f = udp(CLIENT, 5353, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    let ip = ip_of(&out);
    let seg = UdpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!(seg.dst_port(), 9000);
    assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
    let (target, snat_port) = (ip.dst_addr(), seg.src_port());
    let r = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 1));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(ip_of(&back).src_addr(), ENDPOINT);

    let wrong_port = udp(CLIENT, 5353, ENDPOINT, 9001, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&wrong_port), 2),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::NoListener), 1);
    let nobody = udp(
        CLIENT,
        5353,
        Ipv4Addr::new(10, 1, 0, 200),
        9000,
        MAC_C,
        CLIENT_MAC,
    );
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&nobody), 2),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::UnknownDestination), 1);
    // A reply for no flow is not forwarded either.
    let stray = udp(
        target,
        9000,
        SNAT,
        snat_port.wrapping_add(1),
        MAC_P,
        TARGET_MAC,
    );
    assert!(matches!(
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&stray), 2),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 1);
}

#[test]
fn replies_for_another_workers_flow_are_handed_over() {
    let config = Config::embedded_default();
    let (mut p0, snap) = pipeline(&config, 2, 0);
    let (mut p1, _) = pipeline(&config, 2, 1);
    let f = udp(CLIENT, 7000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    let (_, out) = tx(p1.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    let ip = ip_of(&out);
    let snat_port = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
    assert_eq!(snat_port % 2, 1, "worker 1 hands out odd ports");
    let r = udp(ip.dst_addr(), 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    match p0.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 1) {
        Verdict::Handoff(1, f) => {
            let (port, back) = tx(p1.process(&snap, PROVIDER_PORT, f, 1));
            assert_eq!(port, CONSUMER_PORT);
            assert_eq!(ip_of(&back).dst_addr(), CLIENT);
        }
        other => panic!("expected a handoff to worker 1, got {other:?}"),
    }
}

#[test]
fn arp_for_endpoint_is_answered_and_unknown_next_hop_is_resolved() {
    let config = ipv4_default();
    let snap = snapshot(&config);
    let mut p: Pipeline<VecFrame> = Pipeline::new(
        0,
        crate::daemon::pipeline_settings(&config, 1),
        Box::new(|| Some(VecFrame::new(&[]))),
        &snap,
    );
    p.poll(&snap, 0);
    let garps = p.drain_emitted().count();
    assert_eq!(
        garps, 4,
        "gratuitous ARP for both own addresses, the endpoint and the SNAT address"
    );
    // Who has 10.1.0.100? tell 10.1.0.10
    let mut f = eth([0xff; 6], CLIENT_MAC, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&CLIENT.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ENDPOINT.octets());
    let (port, reply) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    assert_eq!(port, CONSUMER_PORT);
    let arp = ArpPacket::new_checked(&reply[14..]).unwrap();
    assert_eq!(arp.operation(), ArpOperation::REPLY);
    assert_eq!(arp.source_hardware_addr().0, MAC_C);
    assert_eq!(arp.source_protocol_addr(), ENDPOINT);
    assert_eq!(&reply[0..6], &CLIENT_MAC);

    // A SYN to a target whose MAC is unknown is held while the appliance asks for it.
    let s = tcp(CLIENT, 40002, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&s), 1),
        Verdict::Done
    ));
    let asked: Vec<(u16, VecFrame)> = p.drain_emitted().collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].0, PROVIDER_PORT);
    let req = ArpPacket::new_checked(&asked[0].1.bytes()[14..]).unwrap();
    let target_ip = req.target_protocol_addr();
    // The target answers; the held SYN goes out.
    let mut a = eth(MAC_P, TARGET_MAC, 0x0806);
    a.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    a.extend_from_slice(&TARGET_MAC);
    a.extend_from_slice(&target_ip.octets());
    a.extend_from_slice(&MAC_P);
    a.extend_from_slice(&Ipv4Addr::new(10, 2, 0, 1).octets());
    assert!(matches!(
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&a), 2),
        Verdict::Done
    ));
    let released: Vec<(u16, VecFrame)> = p.drain_emitted().collect();
    assert_eq!(released.len(), 1);
    assert_eq!(&released[0].1.bytes()[0..6], &TARGET_MAC);
    assert_eq!(
        p.neighbour_table().get(0, CLIENT.into()),
        Some(CLIENT_MAC),
        "the client asked for us: learned for every worker"
    );
    assert_eq!(
        p.neighbour_table().get(1, target_ip.into()),
        Some(TARGET_MAC)
    );
}

#[test]
fn ttl_one_gets_time_exceeded_and_bad_headers_are_counted() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let mut f = udp(CLIENT, 5353, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_ttl(1);
        ip.fill_checksum();
    }
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    assert_eq!(port, CONSUMER_PORT);
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 1, 0, 1));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), Icmpv4Type::TIME_EXCEEDED);
    assert!(icmp.verify_checksum());
    assert_eq!(p.counters().dropped(DropReason::TtlExceeded), 1);

    let good = udp(CLIENT, 5353, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0xff;
    let mut frag = good.clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut frag[14..]);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let truncated = good[..20].to_vec();
    let mut vlan_qinq = good.clone();
    vlan_qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
    for (frame, reason) in [
        (bad_csum, DropReason::BadChecksum),
        // MF set on 12 bytes: no fragment but the last has a length that is not a
        // multiple of 8.
        (frag, DropReason::FragmentTooSmall),
        (bad_ihl, DropReason::Malformed),
        (truncated, DropReason::Malformed),
        (vlan_qinq, DropReason::UnsupportedEtherType),
    ] {
        let before = p.counters().dropped(reason);
        assert!(matches!(
            p.process(&snap, CONSUMER_PORT, VecFrame::new(&frame), 1),
            Verdict::Done
        ));
        assert_eq!(p.counters().dropped(reason), before + 1, "{reason:?}");
    }
}

#[test]
fn endpoint_not_available_does_not_forward() {
    let mut config = Config::embedded_default();
    config.endpoints[0].state = mgmt::model::EndpointState::PendingAcceptance;
    let (mut p, snap) = pipeline(&config, 1, 0);
    let f = tcp(CLIENT, 40003, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::EndpointNotAvailable), 1);
    assert_eq!(p.flows().len(), 0);
}

#[test]
fn a_segment_to_an_endpoint_that_no_longer_forwards_gets_a_rst() {
    // A connection whose flow ended with the endpoint's rejection or deletion: the
    // client's next segment (its ACK may have been delayed, so the RST sent when the flow
    // ended could carry a stale sequence number) is answered with a RST at the number it
    // expects. A new connection (SYN) gets nothing.
    use mgmt::model::EndpointState as S;
    for state in [S::Rejected, S::Deleting, S::PendingAcceptance] {
        let mut config = Config::embedded_default();
        config.endpoints[0].state = state;
        let (mut p, snap) = pipeline(&config, 1, 0);
        let f = tcp(
            CLIENT,
            40004,
            ENDPOINT,
            80,
            WireTcpFlags::ACK | WireTcpFlags::PSH,
            5000,
            777,
            MAC_C,
            CLIENT_MAC,
        );
        let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
        assert_eq!(port, CONSUMER_PORT, "{state:?}");
        let ip = ip_of(&out);
        assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
        let seg = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(seg.flags().contains(WireTcpFlags::RST), "{:?}", seg.flags());
        assert_eq!(
            seg.seq_number(),
            777,
            "{state:?}: at the number the client expects"
        );
        assert_eq!(p.counters().dropped(DropReason::EndpointNotAvailable), 1);
        assert_eq!(p.counters().rst_sent, 1);
        let s = tcp(CLIENT, 40005, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
        assert!(matches!(
            p.process(&snap, CONSUMER_PORT, VecFrame::new(&s), 0),
            Verdict::Done
        ));
        assert_eq!(p.counters().rst_sent, 1, "{state:?}: no answer to a SYN");
        assert_eq!(p.flows().len(), 0);
    }
}

#[test]
#[allow(clippy::cast_possible_truncation)] // random bytes are the low bits of a xorshift state
fn arbitrary_bytes_never_panic() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 2, 0);
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = tcp(CLIENT, 40000, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    for i in 0..20_000u64 {
        let len = (next() % 120) as usize;
        let mut f: Vec<u8> = if i % 2 == 0 {
            (0..len).map(|_| next() as u8).collect()
        } else {
            // Mutations of a valid frame reach the deeper layers.
            let mut f = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % f.len();
                f[at] = next() as u8;
            }
            f.truncate(14 + (next() as usize) % (f.len() - 13));
            f
        };
        if i % 3 == 0 && f.len() >= 14 {
            f[0..6].copy_from_slice(&MAC_C);
        }
        let port = (next() % 3) as u16;
        if i % 2 == 0 {
            let _ = p.process(&snap, port, VecFrame::new(&f), i);
        } else {
            // The burst path on the same kind of input: the frame among copies of the
            // valid one (a flow that the fast path takes once it exists).
            let ack = tcp(
                CLIENT,
                40000,
                ENDPOINT,
                80,
                WireTcpFlags::ACK,
                2,
                1,
                MAC_C,
                CLIENT_MAC,
            );
            let mut burst = vec![
                VecFrame::new(&base),
                VecFrame::new(&ack),
                VecFrame::new(&f),
                VecFrame::new(&ack),
            ];
            p.process_burst(&snap, port, &mut burst, i, &mut drop);
        }
        p.poll(&snap, i);
        p.drain_emitted().for_each(drop);
    }
}

/// Establishes a TCP flow through `p` and returns (target ip, snat port).
fn establish(p: &mut Pipeline<VecFrame>, snap: &Snapshot, sport: u16) -> (Ipv4Addr, u16) {
    let f = tcp(
        CLIENT,
        sport,
        ENDPOINT,
        80,
        syn(),
        1000,
        0,
        MAC_C,
        CLIENT_MAC,
    );
    let (_, out) = tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    let ip = ip_of(&out);
    let target = ip.dst_addr();
    let snat_port = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    let r = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        5000,
        1001,
        MAC_P,
        TARGET_MAC,
    );
    tx(p.process(snap, PROVIDER_PORT, VecFrame::new(&r), 1));
    let a = tcp(
        CLIENT,
        sport,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        1001,
        5001,
        MAC_C,
        CLIENT_MAC,
    );
    tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&a), 2));
    (target, snat_port)
}

#[test]
fn rejecting_the_endpoint_ends_its_flows_with_rst_both_ways() {
    let mut config = Config::embedded_default();
    let mut handles = crate::tables::snapshot::Handles::default();
    let snap = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut handles,
    )
    .unwrap();
    let settings = crate::daemon::pipeline_settings(&config, 1);
    let p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    let mut p = with_neighbours(p, &snap);
    let (target, snat_port) = establish(&mut p, &snap, 41000);
    assert_eq!(p.flows().len(), 1);

    // A new version where the provider rejected the endpoint.
    config.endpoints[0].state = mgmt::model::EndpointState::Rejected;
    let next = Snapshot::build(
        2,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut handles,
    )
    .unwrap();
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(p.flows().len(), 0, "the flow ended");
    assert_eq!(p.counters().dropped(DropReason::FlowEnded), 1);
    let out: Vec<(u16, VecFrame)> = p.drain_emitted().collect();
    let rsts: Vec<(u16, Vec<u8>)> = out
        .into_iter()
        .map(|(port, f)| (port, f.bytes().to_vec()))
        .filter(|(_, b)| b.len() >= 54 && b[23] == 6)
        .collect();
    assert_eq!(rsts.len(), 2, "one RST to each side");
    for (port, b) in &rsts {
        let ip = ip_of(b);
        assert!(ip.verify_checksum());
        let seg = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(seg.rst());
        assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
        if *port == CONSUMER_PORT {
            assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
            assert_eq!((seg.src_port(), seg.dst_port()), (80, 41000));
            assert_eq!(seg.seq_number(), 5001, "the consumer's last ACK");
        } else {
            assert_eq!((ip.src_addr(), ip.dst_addr()), (SNAT, target));
            assert_eq!((seg.src_port(), seg.dst_port()), (snat_port, 8080));
            assert_eq!(seg.seq_number(), 1001, "the target's last ACK");
        }
    }
}

#[test]
fn security_groups_and_policy_refuse_new_flows_only() {
    use mgmt::model::{IngressRule, RuleProtocol, SecurityGroup};
    let config = Config::embedded_default();
    let sg_id = "sg-0123456789abcdef0".parse().unwrap();
    let mut state = config.state();
    state.security_groups.push(SecurityGroup {
        id: sg_id,
        owner: state.endpoints[0].owner,
        vpc_id: state.endpoints[0].vpc_id,
        name: "web".into(),
        description: String::new(),
        ingress: vec![IngressRule {
            protocol: RuleProtocol::Tcp,
            from_port: 80,
            to_port: 80,
            cidr: "10.1.0.0/28".parse().unwrap(),
        }],
    });
    state.endpoints[0].security_group_ids = vec![sg_id];
    let mut handles = crate::tables::snapshot::Handles::default();
    let snap = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &state,
        &mut handles,
    )
    .unwrap();
    let mut p: Pipeline<VecFrame> = Pipeline::new(
        0,
        crate::daemon::pipeline_settings(&config, 1),
        Box::new(|| Some(VecFrame::new(&[]))),
        &snap,
    );
    p.learn_remote(
        &snap,
        NeighbourNews {
            attachment: 1,
            ip: Ipv4Addr::new(10, 2, 0, 11).into(),
            mac: TARGET_MAC,
        },
        0,
    );
    p.learn_remote(
        &snap,
        NeighbourNews {
            attachment: 1,
            ip: Ipv4Addr::new(10, 2, 0, 12).into(),
            mac: TARGET_MAC,
        },
        0,
    );
    // TCP 80 from inside the /28 passes; UDP 9000 has no rule.
    let ok = tcp(CLIENT, 42000, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ok), 0));
    let u = udp(CLIENT, 42001, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::SecurityGroup), 1);

    // A policy that denies the client's address wins over the allow.
    state.endpoints[0].policy = Some(serde_json::json!({"Statement": [
        {"Effect": "Allow", "Principal": "*"},
        {"Effect": "Deny", "Principal": "*", "SourceCidr": ["10.1.0.10/32"]}
    ]}));
    let next = Snapshot::build(
        2,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &state,
        &mut handles,
    )
    .unwrap();
    let again = tcp(CLIENT, 42002, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&next, CONSUMER_PORT, VecFrame::new(&again), 1),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::Policy), 1);
    // The policy change also ends the flow it no longer admits.
    p.on_snapshot(&next);
    p.poll(&next, 2);
    assert_eq!(p.flows().len(), 0);
}

#[test]
fn fragmentation_needed_from_the_provider_side_reaches_the_consumer_translated() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (target, snat_port) = establish(&mut p, &snap, 43000);
    // The target's side says our 1500-byte segment (SNAT → target) needs fragmenting.
    let sent = tcp(
        SNAT,
        snat_port,
        target,
        8080,
        WireTcpFlags::ACK,
        1001,
        5001,
        TARGET_MAC,
        MAC_P,
    );
    let quote = &sent[14..14 + 28];
    let mut icmp = vec![0u8; 8 + quote.len()];
    icmpv4::emit_dst_unreachable(&mut icmp, 4, 1400, &sent[14..]).unwrap();
    let mut f = eth(MAC_P, TARGET_MAC, 0x0800);
    let mut l3 = vec![0u8; 20];
    Ipv4Repr {
        // A router on the provider's side (not 10.2.0.1: that is our own address).
        src_addr: Ipv4Addr::new(10, 2, 0, 254),
        dst_addr: SNAT,
        protocol: IpProtocol::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    f.extend_from_slice(&l3);
    f.extend_from_slice(&icmp);
    assert_eq!(quote.len(), 28);
    let (port, out) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&f), 5));
    assert_eq!(port, CONSUMER_PORT);
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
    let msg = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(msg.verify_checksum());
    assert_eq!(msg.msg_type(), Icmpv4Type::DST_UNREACHABLE);
    assert_eq!(
        msg.next_hop_mtu(),
        1400,
        "the MTU survives for path-MTU discovery"
    );
    let q = msg.quote().unwrap();
    assert!(
        q.verify_checksum(),
        "the quoted header is consistent after translation"
    );
    assert_eq!((q.src_addr(), q.dst_addr()), (CLIENT, ENDPOINT));
    let ports = q.payload();
    assert_eq!(u16::from_be_bytes([ports[0], ports[1]]), 43000);
    assert_eq!(u16::from_be_bytes([ports[2], ports[3]]), 80);
    assert_eq!(p.counters().icmp_errors_translated, 1);
}

#[test]
fn vlan_attachments_and_gateways_shape_the_frames() {
    let mut config = Config::embedded_default();
    // Consumer VPC on VLAN 100 of port 0; provider targets behind a gateway.
    config.vpcs[0].vlan = Some(100);
    config.vpcs[1].gateway = Some(Ipv4Addr::new(10, 2, 0, 254));
    for l in config.services[0].listeners.iter_mut() {
        for (i, t) in l.targets.iter_mut().enumerate() {
            t.ip = Ipv4Addr::new(192, 168, 7, 11 + u8::try_from(i).unwrap()).into();
        }
    }
    let snap = snapshot(&config);
    let mut p: Pipeline<VecFrame> = Pipeline::new(
        0,
        crate::daemon::pipeline_settings(&config, 1),
        Box::new(|| Some(VecFrame::new(&[]))),
        &snap,
    );
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0xfe];
    for (att, ip, mac) in [
        (0u16, CLIENT, CLIENT_MAC),
        (1, Ipv4Addr::new(10, 2, 0, 254), GW_MAC),
    ] {
        p.learn_remote(
            &snap,
            NeighbourNews {
                attachment: att,
                ip: ip.into(),
                mac,
            },
            0,
        );
    }
    // An untagged frame on port 0 belongs to no attachment any more.
    let untagged = udp(CLIENT, 5000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&untagged), 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::NoAttachment), 1);
    // Tagged with VLAN 100: forwarded untagged to the gateway's MAC on the provider port.
    let mut tagged = untagged[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 100]);
    tagged.extend_from_slice(&untagged[12..]);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&tagged), 1));
    assert_eq!(port, PROVIDER_PORT);
    assert_eq!(
        &out[0..6],
        &GW_MAC,
        "off-link target: next hop is the gateway"
    );
    assert_eq!(&out[12..14], &[0x08, 0x00], "untagged on the provider side");
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    let target = ip.dst_addr();
    assert_eq!(target.octets()[..3], [192, 168, 7]);
    let snat_port = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
    // The reply goes back tagged with VLAN 100 to the client.
    let r = udp(target, 9000, SNAT, snat_port, MAC_P, GW_MAC);
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 2));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&back[0..6], &CLIENT_MAC);
    assert_eq!(
        &back[12..16],
        &[0x81, 0x00, 0x00, 100],
        "802.1Q tag of the consumer VPC"
    );
    assert_eq!(&back[16..18], &[0x08, 0x00]);
    let ip = Ipv4Packet::new_checked(&back[18..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (ENDPOINT, CLIENT));
}

/// Runs `frames` through `p` in bursts of the sizes `sizes` cycles through, collecting
/// every verdict in order.
fn run_bursts(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    port: u16,
    frames: &[Vec<u8>],
    sizes: &[usize],
    now_ms: u64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = frames;
    let mut k = 0;
    while !rest.is_empty() {
        let n = sizes[k % sizes.len()].min(rest.len());
        k += 1;
        let mut burst: Vec<VecFrame> = rest[..n].iter().map(|f| VecFrame::new(f)).collect();
        rest = &rest[n..];
        p.process_burst(snap, port, &mut burst, now_ms, &mut |v| {
            out.push(describe(&v))
        });
        assert!(burst.is_empty());
    }
    out
}

/// `frames` through `one` one at a time and through `many` in bursts of `sizes`: asserts
/// the verdicts are the same, in the same order, and returns them.
fn same_both_ways(
    one: &mut Pipeline<VecFrame>,
    many: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    port: u16,
    frames: &[Vec<u8>],
    sizes: &[usize],
    now_ms: u64,
) -> Vec<String> {
    let expect: Vec<String> = frames
        .iter()
        .map(|f| describe(&one.process(snap, port, VecFrame::new(f), now_ms)))
        .collect();
    assert_eq!(run_bursts(many, snap, port, frames, sizes, now_ms), expect);
    expect
}

fn describe(v: &Verdict<VecFrame>) -> String {
    match v {
        Verdict::Tx(port, f) => format!("tx {port} {:02x?}", f.bytes()),
        Verdict::Handoff(w, f) => format!("handoff {w} {:02x?}", f.bytes()),
        Verdict::Done => "done".into(),
    }
}

/// The same frames through `process` one at a time and through `process_burst` in bursts
/// of awkward sizes give the same verdicts, in the same order, and the same counters:
/// flows created, reopened and found within one burst included.
#[test]
fn bursts_give_the_same_results_as_one_by_one() {
    let config = Config::embedded_default();
    let mut consumer = Vec::new();
    for i in 0..40u16 {
        let sport = 41000 + i;
        let c = tcp(CLIENT, sport, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
        let a = tcp(
            CLIENT,
            sport,
            ENDPOINT,
            80,
            WireTcpFlags::ACK,
            2,
            7,
            MAC_C,
            CLIENT_MAC,
        );
        let u = udp(CLIENT, sport, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
        consumer.extend([c, a.clone(), u.clone(), a, u]);
        if i % 7 == 0 {
            // A retransmitted SYN, a frame not for us, a truncated one, a bad checksum.
            consumer.push(tcp(
                CLIENT,
                sport,
                ENDPOINT,
                80,
                syn(),
                1,
                0,
                MAC_C,
                CLIENT_MAC,
            ));
            consumer.push(udp(CLIENT, sport, ENDPOINT, 9000, CLIENT_MAC, CLIENT_MAC));
            let mut t = udp(CLIENT, sport, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
            t.truncate(40);
            consumer.push(t);
            let mut b = udp(CLIENT, sport, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
            b[24] ^= 0x40;
            consumer.push(b);
        }
    }
    let (mut one, snap) = pipeline(&config, 2, 0);
    let (mut many, _) = pipeline(&config, 2, 0);
    let expect = same_both_ways(
        &mut one,
        &mut many,
        &snap,
        CONSUMER_PORT,
        &consumer,
        &[1, 32, 7, 64, 33],
        5,
    );
    assert!(expect.iter().filter(|v| v.starts_with("tx 1")).count() > 150);

    // The targets answer every translated packet: replies come back the same way (and
    // half of them belong to the other worker: handoffs).
    let replies: Vec<Vec<u8>> = expect
        .iter()
        .filter_map(|v| v.strip_prefix("tx 1 "))
        .flat_map(|hex| {
            let bytes: Vec<u8> = hex
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
            let ip = ip_of(&bytes);
            let seg = &ip.payload()[..4];
            let (sport, dport) = (
                u16::from_be_bytes([seg[0], seg[1]]),
                u16::from_be_bytes([seg[2], seg[3]]),
            );
            // The reply, and one to the neighbouring SNAT port (the other worker's).
            [sport, sport ^ 1].map(|to| {
                if ip.protocol() == IpProtocol::TCP {
                    tcp(
                        ip.dst_addr(),
                        dport,
                        ip.src_addr(),
                        to,
                        WireTcpFlags::ACK,
                        9,
                        3,
                        MAC_P,
                        TARGET_MAC,
                    )
                } else {
                    udp(ip.dst_addr(), dport, ip.src_addr(), to, MAC_P, TARGET_MAC)
                }
            })
        })
        .collect();
    let expect = same_both_ways(
        &mut one,
        &mut many,
        &snap,
        PROVIDER_PORT,
        &replies,
        &[5, 32, 1, 40],
        6,
    );
    assert!(expect.iter().any(|v| v.starts_with("tx 0")));
    assert!(expect.iter().any(|v| v.starts_with("handoff 1")));
    assert_eq!(
        format!("{:?}", one.counters()),
        format!("{:?}", many.counters())
    );
    assert_eq!(one.flows().len(), many.flows().len());
}

/// The burst path prefetches for the SNAT port the next new flows will try first: the
/// guess must be the port they get while ports are free.
#[test]
fn snat_port_guess_is_the_port_new_flows_get() {
    let config = Config::embedded_default();
    for workers in [1u16, 2, 3] {
        let (mut p, snap) = pipeline(&config, workers, workers - 1);
        let guesses: Vec<u16> = (1..=5).map(|k| p.snat_port_guess(k)).collect();
        let mut got = Vec::new();
        for i in 0..5u16 {
            let f = tcp(
                CLIENT,
                42000 + i,
                ENDPOINT,
                80,
                syn(),
                1,
                0,
                MAC_C,
                CLIENT_MAC,
            );
            let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1));
            got.push(
                TcpPacket::new_checked(ip_of(&out).payload())
                    .unwrap()
                    .src_port(),
            );
        }
        assert_eq!(got, guesses, "{workers} workers");
    }
}

/// A packet with IPv4 options takes the full path and is translated with its options,
/// both checksums right.
#[test]
fn ip_options_are_kept_and_checksums_stay_right() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let f = tcp(CLIENT, 43000, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    // Four bytes of options (three NOPs, end of list) after the 20-byte header.
    let mut g = f[..34].to_vec();
    g.extend_from_slice(&[1, 1, 1, 0]);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x46;
    let total = u16::from_be_bytes([g[16], g[17]]) + 4;
    g[16..18].copy_from_slice(&total.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut g[14..]).fill_checksum();
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&g), 1));
    let ip = ip_of(&out);
    assert_eq!((ip.header_len(), ip.src_addr()), (24, SNAT));
    assert!(ip.verify_checksum());
    assert_eq!(&out[34..38], &[1, 1, 1, 0]);
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_checksum(SNAT, ip.dst_addr()));
    assert_eq!(seg.dst_port(), 8080);
}

#[test]
fn worker_0_reports_the_generation_it_announced_in_full() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    assert_eq!(p.announced_generation(), 0, "nothing sent yet");
    p.poll(&snap, 0);
    let garps = p.drain_emitted().count();
    assert_eq!(
        garps,
        snap.announce.len() + snap.announce6.len(),
        "one gratuitous ARP or unsolicited advertisement per address"
    );
    assert_eq!(p.announced_generation(), snap.generation);
}

/// `n` UDP flows of endpoint handle `endpoint` to target 10.2.0.11:9000, from client ports
/// counting up from `first_port`, each having carried one packet of 100 bytes.
fn add_flows(p: &mut Pipeline<VecFrame>, endpoint: u32, first_port: u16, n: u16) {
    for i in 0..n {
        let port = first_port + i;
        let fwd = FlowKey {
            src_ip: CLIENT.into(),
            dst_ip: ENDPOINT.into(),
            src_port: port,
            dst_port: 9000,
            vpc: 0,
            proto: PROTO_UDP,
        };
        let rev = FlowKey {
            src_ip: u32::from(Ipv4Addr::new(10, 2, 0, 11)),
            dst_ip: SNAT.into(),
            src_port: 9000,
            dst_port: port,
            vpc: 1,
            proto: PROTO_UDP,
        };
        let mut f = Flow::new(fwd, rev, 0);
        f.endpoint = endpoint;
        f.service = 7;
        f.touch(0, true, 100);
        p.flows.insert(f).unwrap();
    }
}

/// A poll after a busy burst (the budget of upkeep work is then the small one).
fn busy_poll(p: &mut Pipeline<VecFrame>, snap: &Snapshot, now: u64) {
    p.counters.rx_packets += BUSY_PACKETS;
    p.poll(snap, now);
}

#[test]
fn flow_listings_filter_first_and_cost_a_budget_per_poll() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    // Another tenant's flows fill the first slots; the asker's come last.
    add_flows(&mut p, 1, 10_000, 600);
    add_flows(&mut p, 2, 20_000, 5);
    let (tx, rx) = crossbeam::channel::bounded(1);
    p.start_listing(FlowQuery {
        filter: FlowFilter::Endpoints(vec![2]),
        max: 3,
        reply: tx,
    })
    .unwrap();
    // A busy poll looks at SLOTS_BUSY slots, no more: the asker's flows are far away.
    busy_poll(&mut p, &snap, 1);
    assert!(
        rx.try_recv().is_err(),
        "not answered within one poll's budget"
    );
    let (tx2, _rx2) = crossbeam::channel::bounded(1);
    assert!(
        p.start_listing(FlowQuery {
            filter: FlowFilter::All,
            max: 1,
            reply: tx2,
        })
        .is_err(),
        "one listing at a time"
    );
    let busy_polls = 600 / SLOTS_BUSY;
    for _ in 1..busy_polls {
        busy_poll(&mut p, &snap, 1);
        assert!(rx.try_recv().is_err(), "still in the other tenant's flows");
    }
    // A poll with slack looks at many more slots: the rest of the table.
    p.poll(&snap, 1);
    let found = rx.try_recv().expect("answered");
    assert_eq!(
        found.len(),
        3,
        "the first MaxResults flows the asker may see"
    );
    assert!(found.iter().all(|f| f.endpoint == 2), "{found:?}");
}

#[test]
fn usage_reports_add_up_active_flows_and_send_only_changed_endpoints() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    add_flows(&mut p, 1, 10_000, 600);
    add_flows(&mut p, 2, 20_000, 5);
    p.usage.entry(2).new_flows += 5;
    // No request, no sweep.
    for now in 1..10 {
        p.poll(&snap, now);
        assert!(p.take_report().is_none());
    }
    p.want_report(10);
    let mut report = None;
    let polls = 1024 / u64::from(SLOTS_BUSY) + 10;
    for now in 10..10 + polls {
        busy_poll(&mut p, &snap, now);
        if let Some(r) = p.take_report() {
            report = Some(r);
            break;
        }
    }
    let r = report.expect("a sweep finishes within capacity / budget polls");
    assert!(r.started_ms >= 10);
    let active: std::collections::HashMap<u32, ActiveUsage> = r.active.into_iter().collect();
    assert_eq!(active[&1].flows, 600);
    assert_eq!(active[&2].flows, 5);
    assert_eq!(active[&2].bytes, 500);
    assert_eq!(
        r.targets,
        vec![((7, u32::from(Ipv4Addr::new(10, 2, 0, 11)), 9000), 605)]
    );
    assert_eq!(
        r.changed.len(),
        1,
        "only the changed endpoint: {:?}",
        r.changed
    );
    assert_eq!(r.changed[0].1.new_flows, 5);
    // A request already covered by the last sweep starts none; a later one does, and
    // has nothing changed to send.
    let later = 10 + polls + 100;
    p.want_report(10);
    p.poll(&snap, later);
    assert!(p.take_report().is_none());
    p.want_report(later + 1);
    p.poll(&snap, later + 1);
    p.poll(&snap, later + 2);
    let next = p.take_report().expect("another sweep");
    assert!(next.changed.is_empty());
    assert!(next.started_ms > later);
}

// --- issue 9: ICMP errors, MTU, MSS, martians, options, RST window, small items -------

/// A pipeline over `snap` (built from `config`) with the client and targets known.
fn pipeline_on(config: &Config, snap: &Snapshot, workers: u16, id: u16) -> Pipeline<VecFrame> {
    let mut settings = crate::daemon::pipeline_settings(config, workers);
    settings.flow_capacity = 1024;
    let p = Pipeline::new(id, settings, Box::new(|| Some(VecFrame::new(&[]))), snap);
    with_neighbours(p, snap)
}

fn snapshot_with_mtus(config: &Config, mtus: [u16; 2]) -> Snapshot {
    Snapshot::build(
        1,
        config,
        &[MAC_C, MAC_P],
        &mtus,
        &config.state(),
        &mut crate::tables::snapshot::Handles::default(),
    )
    .expect("snapshot")
}

/// A UDP datagram with `payload_len` bytes of payload; DF as given.
#[allow(clippy::too_many_arguments)]
fn udp_sized(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload_len: usize,
    df: bool,
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Vec<u8> {
    let mut f = eth(dst_mac, src_mac, 0x0800);
    let mut l3 = vec![0x5au8; 28 + payload_len];
    UdpRepr {
        src_port: sport,
        dst_port: dport,
    }
    .emit(&mut l3[20..], src, dst, payload_len)
    .unwrap();
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::UDP,
        payload_len: 8 + payload_len,
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    if !df {
        let mut ip = Ipv4Packet::new_unchecked(&mut l3[..]);
        ip.set_dont_frag(false);
        ip.fill_checksum();
    }
    f.extend_from_slice(&l3);
    f
}

/// An ICMP error of `icmp_type`/`code` from `from` to `to` quoting the IPv4 packet of
/// `quoted_frame` (an Ethernet frame), with a valid checksum.
#[allow(clippy::too_many_arguments)]
fn icmp_error(
    from: Ipv4Addr,
    to: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    mtu: u16,
    quoted_frame: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Vec<u8> {
    let quote = &quoted_frame[14..14 + 28];
    let mut icmp = vec![0u8; 8 + quote.len()];
    icmp[8..].copy_from_slice(quote);
    {
        let mut m = Icmpv4Packet::new_unchecked(&mut icmp[..]);
        m.set_msg_type(Icmpv4Type(icmp_type));
        m.set_code(code);
        m.set_rest_of_header([0, 0, 0, 0]);
        m.set_next_hop_mtu(mtu);
        m.fill_checksum();
    }
    let mut f = eth(dst_mac, src_mac, 0x0800);
    let mut l3 = vec![0u8; 20];
    Ipv4Repr {
        src_addr: from,
        dst_addr: to,
        protocol: IpProtocol::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    f.extend_from_slice(&l3);
    f.extend_from_slice(&icmp);
    f
}

/// A UDP flow from the client's `sport` through `p`: (target, SNAT port, the target's
/// reply as it left towards the client).
fn udp_flow(p: &mut Pipeline<VecFrame>, snap: &Snapshot, sport: u16) -> (Ipv4Addr, u16, Vec<u8>) {
    let f = udp(CLIENT, sport, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    let (_, out) = tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&f), 1));
    let ip = ip_of(&out);
    let (target, snat_port) = (
        ip.dst_addr(),
        UdpPacket::new_checked(ip.payload()).unwrap().src_port(),
    );
    let r = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let (_, back) = tx(p.process(snap, PROVIDER_PORT, VecFrame::new(&r), 2));
    (target, snat_port, back)
}

const CONSUMER_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 254);

#[test]
fn consumer_side_icmp_errors_reach_the_target_translated() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (target, snat_port, back) = udp_flow(&mut p, &snap, 5400);
    // What the target sent: its UDP checksum is what the quote must carry again.
    let sent = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let sent_udp_csum = [sent[14 + 26], sent[14 + 27]];
    for (icmp_type, code, mtu) in [(3u8, 4u8, 1280u16), (3, 3, 0), (11, 0, 0)] {
        // A router on the consumer's side reports about our packet endpoint → client.
        let e = icmp_error(
            CONSUMER_ROUTER,
            ENDPOINT,
            icmp_type,
            code,
            mtu,
            &back,
            MAC_C,
            CLIENT_MAC,
        );
        let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 3));
        assert_eq!(port, PROVIDER_PORT, "type {icmp_type} code {code}");
        assert_eq!(&out[0..6], &TARGET_MAC);
        let ip = ip_of(&out);
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (SNAT, target));
        assert_eq!(ip.ttl(), 63);
        let msg = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(msg.verify_checksum());
        assert_eq!((msg.msg_type().0, msg.code()), (icmp_type, code));
        if code == 4 {
            assert_eq!(msg.next_hop_mtu(), 1280, "the MTU reaches the target");
        }
        let q = msg.quote().unwrap();
        assert!(q.verify_checksum(), "quoted header consistent");
        assert_eq!(
            (q.src_addr(), q.dst_addr()),
            (target, SNAT),
            "the packet as the target sent it"
        );
        let ports = q.payload();
        assert_eq!(u16::from_be_bytes([ports[0], ports[1]]), 9000);
        assert_eq!(u16::from_be_bytes([ports[2], ports[3]]), snat_port);
        assert_eq!(
            [ports[6], ports[7]],
            sent_udp_csum,
            "the quoted UDP checksum is the target's own"
        );
    }
    assert_eq!(p.counters().icmp_errors_translated, 3);
    assert_eq!(p.counters().dropped(DropReason::IcmpUnsupported), 0);

    // An error about no flow of ours is dropped; so is one with a bad checksum (both
    // directions), before anything in it is believed.
    let stranger = udp(ENDPOINT, 9000, CLIENT, 5401, CLIENT_MAC, MAC_C);
    let e = icmp_error(
        CONSUMER_ROUTER,
        ENDPOINT,
        3,
        4,
        1280,
        &stranger,
        MAC_C,
        CLIENT_MAC,
    );
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 4),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 1);
    let mut bad = icmp_error(
        CONSUMER_ROUTER,
        ENDPOINT,
        3,
        4,
        1280,
        &back,
        MAC_C,
        CLIENT_MAC,
    );
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&bad), 5),
        Verdict::Done
    ));
    let to_target = udp(SNAT, snat_port, target, 9000, TARGET_MAC, MAC_P);
    let mut bad = icmp_error(
        Ipv4Addr::new(10, 2, 0, 254),
        SNAT,
        3,
        4,
        1280,
        &to_target,
        MAC_P,
        TARGET_MAC,
    );
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    assert!(matches!(
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&bad), 5),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::BadChecksum), 2);
    assert_eq!(p.counters().icmp_errors_translated, 3);
}

/// RSS puts a consumer-side error on any worker's queue: it goes round the workers to
/// the flow's owner, and is dropped once all of them have said no.
#[test]
fn consumer_side_icmp_errors_find_the_owning_worker() {
    let config = Config::embedded_default();
    let snap = snapshot(&config);
    let mut workers: Vec<Pipeline<VecFrame>> =
        (0..3).map(|i| pipeline_on(&config, &snap, 3, i)).collect();
    let (target, _, back) = udp_flow(&mut workers[2], &snap, 5500);
    let e = icmp_error(
        CONSUMER_ROUTER,
        ENDPOINT,
        3,
        4,
        1280,
        &back,
        MAC_C,
        CLIENT_MAC,
    );
    // Worker 1 receives it: 1 → 2, which owns the flow.
    let f = match workers[1].process(&snap, CONSUMER_PORT, VecFrame::new(&e), 3) {
        Verdict::Handoff(2, f) => f,
        other => panic!("expected a handoff to worker 2, got {other:?}"),
    };
    let rx = workers[2].counters().rx_packets;
    let (port, out) = tx(workers[2].process_handed_off(&snap, CONSUMER_PORT, f, 3));
    assert_eq!(port, PROVIDER_PORT);
    assert_eq!(ip_of(&out).dst_addr(), target);
    assert_eq!(
        workers[2].counters().rx_packets,
        rx,
        "counted once, by worker 1"
    );

    // About a flow nobody has: 0 → 1 → 2, and 2 (the one before 0) drops it.
    let stranger = udp(ENDPOINT, 9000, CLIENT, 5501, CLIENT_MAC, MAC_C);
    let e = icmp_error(
        CONSUMER_ROUTER,
        ENDPOINT,
        3,
        4,
        1280,
        &stranger,
        MAC_C,
        CLIENT_MAC,
    );
    let mut v = workers[0].process(&snap, CONSUMER_PORT, VecFrame::new(&e), 4);
    let mut hops = vec![0u16];
    while let Verdict::Handoff(w, f) = v {
        hops.push(w);
        v = workers[usize::from(w)].process_handed_off(&snap, CONSUMER_PORT, f, 4);
    }
    assert!(matches!(v, Verdict::Done));
    assert_eq!(hops, [0, 1, 2]);
    let no_flow: u64 = workers
        .iter()
        .map(|w| w.counters().dropped(DropReason::NoFlow))
        .sum();
    assert_eq!(no_flow, 1, "dropped once");
    // One worker: nobody to ask.
    let (mut one, _) = pipeline(&config, 1, 0);
    assert!(matches!(
        one.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 4),
        Verdict::Done
    ));
    assert_eq!(one.counters().dropped(DropReason::NoFlow), 1);
}

/// RFC 1191 both ways: a DF packet larger than the egress MTU gets fragmentation needed
/// with that MTU from our address on its way in; without DF it is dropped as too big.
#[test]
fn oversize_packets_get_fragmentation_needed_or_are_dropped() {
    let config = Config::embedded_default();
    let snap = snapshot_with_mtus(&config, [1450, 1400]);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    // Consumer → provider (MTU 1400): 1400 bytes fit, 1401 do not.
    let fits = udp_sized(CLIENT, 5600, ENDPOINT, 9000, 1372, true, MAC_C, CLIENT_MAC);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&fits), 1));
    assert_eq!((port, out.len()), (PROVIDER_PORT, 14 + 1400));
    let target = ip_of(&out).dst_addr();
    let snat_port = UdpPacket::new_checked(ip_of(&out).payload())
        .unwrap()
        .src_port();
    let big = udp_sized(CLIENT, 5600, ENDPOINT, 9000, 1373, true, MAC_C, CLIENT_MAC);
    let (port, icmp) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&big), 2));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&icmp[0..6], &CLIENT_MAC);
    let ip = ip_of(&icmp);
    assert!(ip.verify_checksum());
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (Ipv4Addr::new(10, 1, 0, 1), CLIENT)
    );
    let msg = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(msg.verify_checksum());
    assert_eq!(
        (msg.msg_type(), msg.code()),
        (Icmpv4Type::DST_UNREACHABLE, 4)
    );
    assert_eq!(msg.next_hop_mtu(), 1400);
    let q = msg.quote().unwrap();
    assert_eq!(
        (q.src_addr(), q.dst_addr(), q.total_len()),
        (CLIENT, ENDPOINT, 1401),
        "the packet as the client sent it"
    );
    assert_eq!(p.counters().dropped(DropReason::FragNeeded), 1);
    assert_eq!(p.counters().icmp_errors_sent, 1);
    // Without DF: dropped, nothing sent.
    let big = udp_sized(CLIENT, 5600, ENDPOINT, 9000, 1373, false, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&big), 3),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::TooBig), 1);
    assert_eq!(p.drain_emitted().count(), 0);

    // Provider → consumer (MTU 1450), through the burst path too: the fast path must not
    // forward what does not fit.
    let reply = |len| udp_sized(target, 9000, SNAT, snat_port, len, true, MAC_P, TARGET_MAC);
    let mut burst = vec![
        VecFrame::new(&reply(1422)),
        VecFrame::new(&reply(1423)),
        VecFrame::new(&reply(10)),
    ];
    let mut verdicts = Vec::new();
    p.process_burst(&snap, PROVIDER_PORT, &mut burst, 4, &mut |v| {
        verdicts.push(tx(v))
    });
    assert_eq!(verdicts[0].0, CONSUMER_PORT, "1450 bytes fit");
    assert_eq!(verdicts[0].1.len(), 14 + 1450);
    let (port, icmp) = &verdicts[1];
    assert_eq!(*port, PROVIDER_PORT, "the answer goes back to the target");
    let ip = ip_of(icmp);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (Ipv4Addr::new(10, 2, 0, 1), target)
    );
    let msg = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(msg.next_hop_mtu(), 1450);
    assert_eq!(verdicts[2].0, CONSUMER_PORT);
    assert_eq!(p.counters().dropped(DropReason::FragNeeded), 2);
}

/// A TCP segment with the given options (a multiple of 4 bytes) after its header.
#[allow(clippy::too_many_arguments)]
fn tcp_with_options(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    flags: WireTcpFlags,
    seq: u32,
    ack: u32,
    options: &[u8],
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
) -> Vec<u8> {
    let mut f = eth(dst_mac, src_mac, 0x0800);
    let tcp_len = 20 + options.len();
    let mut l3 = vec![0u8; 20 + tcp_len];
    {
        let mut t = TcpPacket::new_unchecked(&mut l3[20..]);
        t.set_src_port(sport);
        t.set_dst_port(dport);
        t.set_seq_number(seq);
        t.set_ack_number(ack);
        t.set_header_len(u8::try_from(tcp_len).unwrap());
        t.set_flags(flags);
        t.set_window_len(64240);
    }
    l3[40..].copy_from_slice(options);
    TcpPacket::new_unchecked(&mut l3[20..]).fill_checksum(src, dst);
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::TCP,
        payload_len: tcp_len,
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    f.extend_from_slice(&l3);
    f
}

/// MSS 1460, NOP, window scale 7.
const SYN_OPTIONS: [u8; 8] = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];

fn mss_of(frame: &[u8]) -> Option<u16> {
    let ip = ip_of(frame);
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
    seg.syn_options().mss.map(|(m, _)| m)
}

#[test]
fn mss_is_clamped_on_syn_and_syn_ack_to_the_lower_clamp() {
    let mut config = Config::embedded_default();
    config.vpcs[0].mss_clamp = Some(1300);
    config.vpcs[1].mss_clamp = Some(1200);
    let (mut p, snap) = pipeline(&config, 1, 0);
    let syn = tcp_with_options(
        CLIENT,
        44000,
        ENDPOINT,
        80,
        WireTcpFlags::SYN,
        1,
        0,
        &SYN_OPTIONS,
        MAC_C,
        CLIENT_MAC,
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 1));
    assert_eq!(mss_of(&out), Some(1200), "the lower of the two clamps");
    let ip = ip_of(&out);
    let target = ip.dst_addr();
    let snat_port = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    let syn_ack = tcp_with_options(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        100,
        2,
        &SYN_OPTIONS,
        MAC_P,
        TARGET_MAC,
    );
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&syn_ack), 2));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(mss_of(&back), Some(1200), "SYN-ACKs too");
    // A smaller MSS stays as it is; data segments are not touched.
    let small = [2, 4, 0x02, 0x18, 1, 1, 1, 0];
    let syn = tcp_with_options(
        CLIENT,
        44001,
        ENDPOINT,
        80,
        WireTcpFlags::SYN,
        1,
        0,
        &small,
        MAC_C,
        CLIENT_MAC,
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 3));
    assert_eq!(mss_of(&out), Some(536));

    // Without clamps the option passes unchanged.
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let syn = tcp_with_options(
        CLIENT,
        44002,
        ENDPOINT,
        80,
        WireTcpFlags::SYN,
        1,
        0,
        &SYN_OPTIONS,
        MAC_C,
        CLIENT_MAC,
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 1));
    assert_eq!(mss_of(&out), Some(1460));
}

#[test]
fn martian_sources_create_no_flow_and_get_no_answer() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let martians = [
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(239, 255, 255, 250),
        Ipv4Addr::new(240, 0, 0, 1),
        Ipv4Addr::new(255, 255, 255, 255),
        Ipv4Addr::new(10, 1, 0, 0),   // the prefix's network address
        Ipv4Addr::new(10, 1, 0, 255), // its broadcast address
        Ipv4Addr::new(10, 1, 0, 1),   // the appliance's own address
        ENDPOINT,                     // the endpoint's own address
    ];
    for (i, src) in martians.iter().enumerate() {
        let sport = 45000 + u16::try_from(i).unwrap();
        let syn = tcp(*src, sport, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
        assert!(
            matches!(
                p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 1),
                Verdict::Done
            ),
            "{src}"
        );
        // A stray ACK would otherwise be answered with a RST, UDP would open a flow.
        let ack = tcp(
            *src,
            sport,
            ENDPOINT,
            80,
            WireTcpFlags::ACK,
            1,
            1,
            MAC_C,
            CLIENT_MAC,
        );
        let u = udp(*src, sport, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
        for f in [ack, u] {
            assert!(matches!(
                p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1),
                Verdict::Done
            ));
        }
    }
    let n = u64::try_from(martians.len()).unwrap();
    assert_eq!(p.counters().dropped(DropReason::MartianSource), 3 * n);
    assert_eq!(p.flows().len(), 0);
    assert_eq!(p.counters().rst_sent, 0);
    assert_eq!(p.drain_emitted().count(), 0);

    // Ping from a martian (to the endpoint, to our own address) is not answered either.
    let ping = |src: Ipv4Addr, dst: Ipv4Addr| {
        let mut icmp = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
        Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
        let mut f = eth(MAC_C, CLIENT_MAC, 0x0800);
        let mut l3 = vec![0u8; 20];
        Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: IpProtocol::ICMP,
            payload_len: 8,
            ttl: 64,
        }
        .emit(&mut l3)
        .unwrap();
        f.extend_from_slice(&l3);
        f.extend_from_slice(&icmp);
        f
    };
    for dst in [ENDPOINT, Ipv4Addr::new(10, 1, 0, 1)] {
        assert!(matches!(
            p.process(
                &snap,
                CONSUMER_PORT,
                VecFrame::new(&ping(Ipv4Addr::new(127, 0, 0, 1), dst)),
                2
            ),
            Verdict::Done
        ));
        let (port, _) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ping(CLIENT, dst)), 2));
        assert_eq!(port, CONSUMER_PORT);
    }
    assert_eq!(p.counters().dropped(DropReason::MartianSource), 3 * n + 2);
    assert_eq!(p.counters().echo_replies, 2);
    // A real client still gets through.
    let ok = tcp(CLIENT, 45100, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ok), 3));
    assert_eq!(p.flows().len(), 1);
    // An ICMP error "from" a martian about a real flow is not believed either.
    let (_, _, back) = udp_flow(&mut p, &snap, 45101);
    let e = icmp_error(
        Ipv4Addr::new(127, 0, 0, 1),
        ENDPOINT,
        3,
        4,
        576,
        &back,
        MAC_C,
        CLIENT_MAC,
    );
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 4),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::MartianSource), 3 * n + 3);
    assert_eq!(p.counters().icmp_errors_translated, 0);
}

/// `frame` (an IPv4 frame without options) with `options` added to its IPv4 header.
fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut g = frame[..34].to_vec();
    g.extend_from_slice(options);
    g.extend_from_slice(&frame[34..]);
    g[14] = 0x45 + u8::try_from(options.len() / 4).unwrap();
    let total = u16::from_be_bytes([g[16], g[17]]) + u16::try_from(options.len()).unwrap();
    g[16..18].copy_from_slice(&total.to_be_bytes());
    Ipv4Packet::new_unchecked(&mut g[14..]).fill_checksum();
    g
}

#[test]
fn bad_and_source_route_ip_options_are_dropped_harmless_ones_forwarded() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let base = udp(CLIENT, 5700, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    for (options, reason) in [
        (&[0x07, 0x00, 0x00, 0x00][..], DropReason::BadIpOptions), // length 0
        (&[0x07, 0x01, 0x00, 0x00][..], DropReason::BadIpOptions), // length 1
        (&[0x44, 0xff, 0x00, 0x00][..], DropReason::BadIpOptions), // length 255
        (&[0x01, 0x01, 0x01, 0x94][..], DropReason::BadIpOptions), // no length byte
        (
            &[0x83, 0x07, 0x04, 10, 2, 0, 11, 0][..],
            DropReason::SourceRoute,
        ), // LSRR
        (
            &[0x01, 0x89, 0x07, 0x04, 10, 2, 0, 11][..],
            DropReason::SourceRoute,
        ), // SSRR
    ] {
        let f = with_ip_options(&base, options);
        let before = p.counters().dropped(reason);
        assert!(
            matches!(
                p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1),
                Verdict::Done
            ),
            "{options:02x?}"
        );
        assert_eq!(p.counters().dropped(reason), before + 1, "{options:02x?}");
    }
    assert_eq!(p.flows().len(), 0, "none of them opened a flow");
    // Router alert, record route and a timestamp pass, options and all.
    for options in [
        &[0x94, 0x04, 0x00, 0x00][..],
        &[0x07, 0x07, 0x04, 0, 0, 0, 0, 0][..],
        &[0x44, 0x04, 0x05, 0x00][..],
    ] {
        let f = with_ip_options(&base, options);
        let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 2));
        assert_eq!(port, PROVIDER_PORT);
        assert_eq!(&out[34..34 + options.len()], options);
        assert!(ip_of(&out).verify_checksum());
    }
    // The provider side is checked too.
    let (target, snat_port, _) = udp_flow(&mut p, &snap, 5701);
    let r = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let r = with_ip_options(&r, &[0x83, 0x07, 0x04, 10, 1, 0, 10, 0]);
    assert!(matches!(
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 3),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::SourceRoute), 3);
}

fn flow_state(p: &Pipeline<VecFrame>, sport: u16) -> crate::tables::flow::TcpState {
    let id = p
        .flows()
        .lookup_forward(&FlowKey {
            src_ip: CLIENT.into(),
            dst_ip: ENDPOINT.into(),
            src_port: sport,
            dst_port: 80,
            vpc: 0,
            proto: PROTO_TCP,
        })
        .expect("flow");
    p.flows().get(id).unwrap().tcp
}

#[test]
fn rst_outside_the_window_is_dropped_and_the_flow_stays() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    // establish(): the target expects 1001 next (window 1000), the client 5001 (1000).
    let (target, snat_port) = establish(&mut p, &snap, 46000);
    assert!(flow_state(&p, 46000).is_established());
    let from_client = |seq| {
        tcp(
            CLIENT,
            46000,
            ENDPOINT,
            80,
            WireTcpFlags::RST,
            seq,
            0,
            MAC_C,
            CLIENT_MAC,
        )
    };
    let from_target = |seq| {
        tcp(
            target,
            8080,
            SNAT,
            snat_port,
            WireTcpFlags::RST | WireTcpFlags::ACK,
            seq,
            1001,
            MAC_P,
            TARGET_MAC,
        )
    };
    let mut burst: Vec<VecFrame> = [
        from_client(1001 + 1001),
        from_client(1000),
        from_client(0x8000_0000),
    ]
    .iter()
    .map(|f| VecFrame::new(f))
    .collect();
    p.process_burst(&snap, CONSUMER_PORT, &mut burst, 3, &mut |v| {
        assert!(matches!(v, Verdict::Done), "blind RSTs are not forwarded")
    });
    for seq in [5001 + 1001, 5000, 42] {
        assert!(matches!(
            p.process(&snap, PROVIDER_PORT, VecFrame::new(&from_target(seq)), 3),
            Verdict::Done
        ));
    }
    assert_eq!(p.counters().dropped(DropReason::RstOutOfWindow), 6);
    assert!(
        flow_state(&p, 46000).is_established(),
        "the flow is untouched"
    );
    // Data still flows both ways.
    let data = tcp(
        CLIENT,
        46000,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        1001,
        5001,
        MAC_C,
        CLIENT_MAC,
    );
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&data), 4));
    // In the window (at the right edge): forwarded, and it ends the flow.
    let (port, out) = tx(p.process(
        &snap,
        PROVIDER_PORT,
        VecFrame::new(&from_target(5001 + 1000)),
        5,
    ));
    assert_eq!(port, CONSUMER_PORT);
    assert!(TcpPacket::new_checked(ip_of(&out).payload()).unwrap().rst());
    assert_eq!(flow_state(&p, 46000), crate::tables::flow::TcpState::Closed);
    assert_eq!(p.counters().dropped(DropReason::RstOutOfWindow), 6);

    // A RST answering a SYN (the target's port is closed) has no window to fall in yet.
    let s = tcp(CLIENT, 46001, ENDPOINT, 80, syn(), 77, 0, MAC_C, CLIENT_MAC);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&s), 6));
    let ip = ip_of(&out);
    let port2 = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    let refused = tcp(
        ip.dst_addr(),
        8080,
        SNAT,
        port2,
        WireTcpFlags::RST | WireTcpFlags::ACK,
        0,
        78,
        MAC_P,
        TARGET_MAC,
    );
    let (port, _) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&refused), 7));
    assert_eq!(port, CONSUMER_PORT);
}

/// The window scale both SYNs offered widens the window a RST may fall in.
#[test]
fn rst_window_is_scaled_when_both_syns_offer_scaling() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let syn = tcp_with_options(
        CLIENT,
        46100,
        ENDPOINT,
        80,
        WireTcpFlags::SYN,
        1000,
        0,
        &SYN_OPTIONS,
        MAC_C,
        CLIENT_MAC,
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 1));
    let ip = ip_of(&out);
    let (target, snat_port) = (
        ip.dst_addr(),
        TcpPacket::new_checked(ip.payload()).unwrap().src_port(),
    );
    // The target offers scale 7 too; its window field 64240 (the SYN-ACK's) means
    // 64240 << 7 from then on.
    let syn_ack = tcp_with_options(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        5000,
        1001,
        &SYN_OPTIONS,
        MAC_P,
        TARGET_MAC,
    );
    tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&syn_ack), 2));
    let rst = |seq| {
        tcp(
            CLIENT,
            46100,
            ENDPOINT,
            80,
            WireTcpFlags::RST,
            seq,
            0,
            MAC_C,
            CLIENT_MAC,
        )
    };
    assert!(matches!(
        p.process(
            &snap,
            CONSUMER_PORT,
            VecFrame::new(&rst(1001 + (64240 << 7) + 1)),
            3
        ),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::RstOutOfWindow), 1);
    let (port, _) = tx(p.process(
        &snap,
        CONSUMER_PORT,
        VecFrame::new(&rst(1001 + 64240 * 100)),
        4,
    ));
    assert_eq!(
        port, PROVIDER_PORT,
        "beyond 64240 but inside the scaled window"
    );
}

fn ping_frame(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut icmp = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'p', b'i', b'n', b'g'];
    Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
    let mut f = eth(MAC_C, CLIENT_MAC, 0x0800);
    let mut l3 = vec![0u8; 20];
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: IpProtocol::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
    }
    .emit(&mut l3)
    .unwrap();
    f.extend_from_slice(&l3);
    f.extend_from_slice(&icmp);
    f
}

/// The demo state with one security group on the endpoint admitting `rules`.
fn state_with_group(config: &Config, rules: Vec<mgmt::model::IngressRule>) -> mgmt::model::State {
    use mgmt::model::SecurityGroup;
    let sg_id = "sg-0123456789abcdef0".parse().unwrap();
    let mut state = config.state();
    state.security_groups.push(SecurityGroup {
        id: sg_id,
        owner: state.endpoints[0].owner,
        vpc_id: state.endpoints[0].vpc_id,
        name: "web".into(),
        description: String::new(),
        ingress: rules,
    });
    state.endpoints[0].security_group_ids = vec![sg_id];
    state
}

fn build(config: &Config, state: &mgmt::model::State) -> Snapshot {
    Snapshot::build(
        1,
        config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        state,
        &mut crate::tables::snapshot::Handles::default(),
    )
    .unwrap()
}

#[test]
fn echo_to_an_endpoint_obeys_its_security_groups_and_policy() {
    use mgmt::model::{IngressRule, RuleProtocol};
    let config = Config::embedded_default();
    let tcp80 = IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: 80,
        to_port: 80,
        cidr: "10.1.0.0/24".parse().unwrap(),
    };
    let snap = build(&config, &state_with_group(&config, vec![tcp80]));
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let ping = ping_frame(CLIENT, ENDPOINT);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&ping), 1),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::SecurityGroup), 1);
    // Our own address is not the endpoint's: it answers.
    let (port, _) = tx(p.process(
        &snap,
        CONSUMER_PORT,
        VecFrame::new(&ping_frame(CLIENT, Ipv4Addr::new(10, 1, 0, 1))),
        1,
    ));
    assert_eq!(port, CONSUMER_PORT);

    // With an icmp rule the endpoint answers; a policy denying the client wins.
    let icmp = IngressRule {
        protocol: RuleProtocol::Icmp,
        from_port: 0,
        to_port: 0,
        cidr: "10.1.0.0/24".parse().unwrap(),
    };
    let mut state = state_with_group(&config, vec![tcp80, icmp]);
    let snap = build(&config, &state);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ping), 2));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(ip_of(&out).src_addr(), ENDPOINT);
    state.endpoints[0].policy = Some(serde_json::json!({"Statement": [
        {"Effect": "Allow", "Principal": "*"},
        {"Effect": "Deny", "Principal": "*", "Protocol": "icmp"}
    ]}));
    let snap = build(&config, &state);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&ping), 3),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::Policy), 1);
}

#[test]
fn time_exceeded_is_not_sent_to_a_consumer_the_endpoint_refuses() {
    use mgmt::model::{IngressRule, RuleProtocol};
    let config = Config::embedded_default();
    let tcp80 = IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: 80,
        to_port: 80,
        cidr: "10.1.0.0/24".parse().unwrap(),
    };
    let snap = build(&config, &state_with_group(&config, vec![tcp80]));
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let with_ttl_1 = |mut f: Vec<u8>| {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_ttl(1);
        ip.fill_checksum();
        f
    };
    // UDP 9000 is not admitted: silence, counted as the refusal it is.
    let u = with_ttl_1(udp(CLIENT, 5800, ENDPOINT, 9000, MAC_C, CLIENT_MAC));
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 1),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::SecurityGroup), 1);
    assert_eq!(p.counters().icmp_errors_sent, 0);
    // TCP 80 is: time exceeded goes back.
    let t = with_ttl_1(tcp(
        CLIENT,
        5801,
        ENDPOINT,
        80,
        syn(),
        1,
        0,
        MAC_C,
        CLIENT_MAC,
    ));
    let (port, _) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&t), 2));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(p.counters().icmp_errors_sent, 1);
}

#[test]
fn originated_arp_and_rst_frames_are_padded_to_the_ethernet_minimum() {
    let config = ipv4_default();
    let snap = snapshot(&config);
    let mut p: Pipeline<VecFrame> = Pipeline::new(
        0,
        crate::daemon::pipeline_settings(&config, 1),
        Box::new(|| Some(VecFrame::new(&[]))),
        &snap,
    );
    p.poll(&snap, 0);
    for (_, f) in p.drain_emitted() {
        assert_eq!(f.bytes().len(), 60, "gratuitous ARP");
        assert!(f.bytes()[42..].iter().all(|&b| b == 0));
    }
    // A 42-byte request, as a kernel sends it on a tap, gets a 60-byte reply.
    let mut req = eth([0xff; 6], CLIENT_MAC, 0x0806);
    req.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    req.extend_from_slice(&CLIENT_MAC);
    req.extend_from_slice(&CLIENT.octets());
    req.extend_from_slice(&[0; 6]);
    req.extend_from_slice(&ENDPOINT.octets());
    assert_eq!(req.len(), 42);
    let (_, reply) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 1));
    assert_eq!(reply.len(), 60);
    assert!(reply[42..].iter().all(|&b| b == 0));
    // The ARP request for an unknown target.
    let s = tcp(CLIENT, 47000, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&s), 2),
        Verdict::Done
    ));
    let asked: Vec<(u16, VecFrame)> = p.drain_emitted().collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1.bytes().len(), 60);
    // A RST for a segment of no flow.
    let stray = tcp(
        CLIENT,
        47001,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        5,
        6,
        MAC_C,
        CLIENT_MAC,
    );
    let (_, rst) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&stray), 3));
    assert_eq!(rst.len(), 60);
    assert!(rst[54..].iter().all(|&b| b == 0));
    assert!(TcpPacket::new_checked(ip_of(&rst).payload()).unwrap().rst());
}

#[test]
fn ending_a_flow_sends_padded_rsts() {
    let mut config = Config::embedded_default();
    let mut handles = crate::tables::snapshot::Handles::default();
    let snap = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut handles,
    )
    .unwrap();
    let mut p = pipeline_on(&config, &snap, 1, 0);
    establish(&mut p, &snap, 47100);
    config.endpoints[0].state = mgmt::model::EndpointState::Rejected;
    let next = Snapshot::build(
        2,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut handles,
    )
    .unwrap();
    p.on_snapshot(&next);
    p.poll(&next, 10);
    let rsts: Vec<usize> = p
        .drain_emitted()
        .map(|(_, f)| f.bytes().to_vec())
        .filter(|b| b.len() >= 34 && b[23] == 6)
        .map(|b| b.len())
        .collect();
    assert_eq!(rsts, [60, 60]);
}

#[test]
fn a_failed_buffer_allocation_is_counted_as_no_mbuf() {
    let config = ipv4_default();
    let snap = snapshot(&config);
    let mut p: Pipeline<VecFrame> = Pipeline::new(
        0,
        crate::daemon::pipeline_settings(&config, 1),
        Box::new(|| None),
        &snap,
    );
    p.poll(&snap, 0); // gratuitous ARPs: four buffers that were not there
    assert_eq!(p.counters().dropped(DropReason::NoMbuf), 4);
    let s = tcp(CLIENT, 47200, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&s), 1),
        Verdict::Done
    ));
    assert_eq!(
        p.counters().dropped(DropReason::NoMbuf),
        5,
        "the ARP request"
    );
    assert_eq!(
        p.counters().dropped(DropReason::NeighbourUnresolved),
        0,
        "the SYN waits for its next hop; nothing was unresolved"
    );
}

#[test]
fn handed_off_packets_are_counted_once() {
    let config = Config::embedded_default();
    let (mut p0, snap) = pipeline(&config, 2, 0);
    let (mut p1, _) = pipeline(&config, 2, 1);
    let f = udp(CLIENT, 7001, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    let (_, out) = tx(p1.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    let ip = ip_of(&out);
    let snat_port = UdpPacket::new_checked(ip.payload()).unwrap().src_port();
    let r = udp(ip.dst_addr(), 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let Verdict::Handoff(1, h) = p0.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 1) else {
        panic!("expected a handoff");
    };
    tx(p1.process_handed_off(&snap, PROVIDER_PORT, h, 1));
    let rx = p0.counters().rx_packets + p1.counters().rx_packets;
    let bytes = p0.counters().rx_bytes + p1.counters().rx_bytes;
    assert_eq!(rx, 2, "two packets arrived");
    assert_eq!(bytes, (f.len() + r.len()) as u64);
}

/// Which target each of `n` UDP flows gets from a pipeline whose hash seed is `seed`.
fn picks(config: &Config, seed: u64, id: u16) -> Vec<Ipv4Addr> {
    let snap = snapshot(config);
    let mut settings = crate::daemon::pipeline_settings(config, 2);
    settings.flow_capacity = 1024;
    settings.flow_hash_seed = seed;
    let p = Pipeline::new(id, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    let mut p = with_neighbours(p, &snap);
    (0..64u16)
        .map(|i| {
            let f = udp(CLIENT, 20000 + i, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
            ip_of(&tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1)).1).dst_addr()
        })
        .collect()
}

/// An ARP reply from `ip` at `mac` to the appliance's provider-side address.
fn arp_reply_from(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut a = eth(MAC_P, mac, 0x0806);
    a.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 2]);
    a.extend_from_slice(&mac);
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&MAC_P);
    a.extend_from_slice(&Ipv4Addr::new(10, 2, 0, 1).octets());
    a
}

/// The ARP requests among `out`: (port, asked-for address).
fn arp_requests(out: &[(u16, VecFrame)]) -> Vec<(u16, Ipv4Addr)> {
    out.iter()
        .filter(|(_, f)| f.bytes().get(12..14) == Some(&[0x08, 0x06][..]))
        .filter_map(|(port, f)| {
            let arp = ArpPacket::new_checked(&f.bytes()[14..]).ok()?;
            (arp.operation() == ArpOperation::REQUEST
                && arp.source_protocol_addr() != arp.target_protocol_addr())
            .then(|| (*port, arp.target_protocol_addr()))
        })
        .collect()
}

#[test]
fn the_target_pick_is_seeded_and_every_worker_agrees() {
    let config = Config::embedded_default();
    let a = picks(&config, 0x1234_5678_9abc_def0, 0);
    assert_eq!(
        a,
        picks(&config, 0x1234_5678_9abc_def0, 1),
        "same seed, same picks"
    );
    let b = picks(&config, 0x0fed_cba9_8765_4321, 0);
    assert_ne!(a, b, "another start, other picks");
    // The daemon draws a fresh one at every start.
    assert_ne!(
        crate::daemon::new_flow_hash_seed(),
        crate::daemon::new_flow_hash_seed()
    );
    // And with either seed both targets get a share.
    for p in [&a, &b] {
        let t1 = p
            .iter()
            .filter(|&&t| t == Ipv4Addr::new(10, 2, 0, 11))
            .count();
        assert!((16..=48).contains(&t1), "{t1} of 64");
    }
}

/// Found by the `process_structured` fuzz target: an ARP request whose sender hardware
/// address is zero or a group address was answered to that address (a frame to
/// 00:00:00:00:00:00, or a reply flooded to a multicast group), and a zero sender MAC was
/// learned as the neighbour's, so translated packets left with no destination MAC. Such a
/// request is ignored and counted, and nothing is learned from it.
#[test]
fn arp_from_a_zero_or_group_sender_mac_is_ignored() {
    let config = Config::embedded_default();
    let snap = snapshot(&config);
    let mut p: Pipeline<VecFrame> = Pipeline::new(
        0,
        crate::daemon::pipeline_settings(&config, 1),
        Box::new(|| Some(VecFrame::new(&[]))),
        &snap,
    );
    p.poll(&snap, 0);
    p.drain_emitted().for_each(drop);
    let arp_from = |sha: [u8; 6], op: u8, target: Ipv4Addr| {
        let mut f = eth([0xff; 6], CLIENT_MAC, 0x0806);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, op]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&CLIENT.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        f
    };
    for sha in [[0u8; 6], [0x01, 0, 0x5e, 0, 0, 1], [0xff; 6]] {
        let before = p.counters().dropped(DropReason::ArpIgnored);
        let v = p.process(
            &snap,
            CONSUMER_PORT,
            VecFrame::new(&arp_from(sha, 1, ENDPOINT)),
            1,
        );
        assert!(
            matches!(v, Verdict::Done),
            "a request from {sha:02x?} was answered"
        );
        assert_eq!(p.counters().dropped(DropReason::ArpIgnored), before + 1);
        // A reply from such an address teaches nothing either.
        let v = p.process(
            &snap,
            CONSUMER_PORT,
            VecFrame::new(&arp_from(sha, 2, Ipv4Addr::new(10, 1, 0, 1))),
            1,
        );
        assert!(matches!(v, Verdict::Done));
    }
    assert_eq!(p.counters().arp_replies, 0);
    assert!(p.neighbour_table().is_empty(), "nothing was learned");
    // The client is still unknown: a reply to it waits for ARP.
    let s = tcp(CLIENT, 40000, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    let _ = p.process(&snap, CONSUMER_PORT, VecFrame::new(&s), 2);
    for (_, f) in p.drain_emitted() {
        assert_ne!(
            &f.bytes()[0..6],
            &[0; 6],
            "no frame leaves for the zero MAC"
        );
    }
}

/// ARP cannot be used to fill the neighbour table: a reply nobody asked for makes no
/// entry, and requests to us from senders made up across the prefix take only room
/// nobody uses, so the neighbours traffic needs stay.
#[test]
fn unasked_arp_evicts_no_neighbour_and_unrequested_replies_make_none() {
    let config = Config::embedded_default();
    let snap = snapshot(&config);
    let mut settings = crate::daemon::pipeline_settings(&config, 1);
    settings.flow_capacity = 1024;
    // One set of eight ways.
    settings.neighbour_capacity = 8;
    let p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    let mut p = with_neighbours(p, &snap);
    // A reply from a target nobody asked about.
    let stranger = Ipv4Addr::new(10, 2, 0, 77);
    p.process(
        &snap,
        PROVIDER_PORT,
        VecFrame::new(&arp_reply_from(stranger, [2, 0, 0, 0, 0, 0x77])),
        0,
    );
    assert_eq!(p.neighbour_table().get(1, stranger.into()), None);
    // Requests for the endpoint from 64 made-up consumers.
    for i in 0..64u8 {
        let sender = Ipv4Addr::new(10, 1, 0, 120 + (i % 100));
        let mut f = eth([0xff; 6], [2, 0, 0, 0, 2, i], 0x0806);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 2, i]);
        f.extend_from_slice(&sender.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ENDPOINT.octets());
        tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1));
    }
    // The client and the targets are still known: traffic flows both ways at once.
    assert_eq!(p.neighbour_table().get(0, CLIENT.into()), Some(CLIENT_MAC));
    let f = udp(CLIENT, 20000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 2));
    assert_eq!((port, &out[0..6]), (PROVIDER_PORT, &TARGET_MAC[..]));
}

/// Two workers, one neighbour table: worker 1 forwards to 100 targets whose MACs nobody
/// knows yet, and every ARP reply arrives on worker 0's queue (as RSS or the kernel may
/// well deliver them). Worker 1 releases everything it held at its next tick, each target
/// was asked for once in all, and worker 0 forwards to them without asking again.
#[test]
fn arp_replies_on_another_workers_queue_release_every_held_packet() {
    let mut config = Config::embedded_default();
    let targets: Vec<Ipv4Addr> = (0..100u8)
        .map(|i| Ipv4Addr::new(10, 2, 0, 20 + i))
        .collect();
    config.services[0].listeners[1].targets = targets
        .iter()
        .map(|&ip| mgmt::model::Target {
            ip: ip.into(),
            port: 9000,
            weight: 1,
            state: mgmt::model::TargetState::Registered,
            deregistered_at: None,
        })
        .collect();
    let snap = snapshot(&config);
    let mut settings = crate::daemon::pipeline_settings(&config, 2);
    settings.flow_capacity = 4096;
    settings.hold_capacity = 1024;
    let table = SharedNeighbours::new(settings.neighbour_capacity, settings.neighbour_timers);
    let new = |id| sharing(id, &settings, &snap, &table);
    let (mut p0, mut p1) = (new(0), new(1));
    p0.learn_remote(
        &snap,
        NeighbourNews {
            attachment: 0,
            ip: CLIENT.into(),
            mac: CLIENT_MAC,
        },
        0,
    );

    // 400 new UDP flows on worker 1, spread over the targets by Maglev: all held.
    let flows = 400u16;
    for i in 0..flows {
        let f = udp(CLIENT, 20_000 + i, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
        assert!(matches!(
            p1.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1),
            Verdict::Done
        ));
    }
    let asked: Vec<(u16, VecFrame)> = p1.drain_emitted().collect();
    let asked = arp_requests(&asked);
    let mut asked_ips: Vec<Ipv4Addr> = asked.iter().map(|&(_, ip)| ip).collect();
    asked_ips.sort_unstable();
    asked_ips.dedup();
    assert_eq!(asked.len(), asked_ips.len(), "one request per target");
    assert!(
        asked_ips.len() > 90,
        "Maglev spread 400 flows over the targets"
    );
    // Worker 0 needs the same targets before any reply: it holds, it does not ask again.
    let f = udp(CLIENT, 30_000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p0.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 2),
        Verdict::Done
    ));
    let out: Vec<(u16, VecFrame)> = p0.drain_emitted().collect();
    assert!(arp_requests(&out).is_empty(), "already asked by worker 1");

    // Every reply arrives on worker 0, in one burst.
    let mut burst: Vec<VecFrame> = asked_ips
        .iter()
        .enumerate()
        .map(|(i, &ip)| {
            let mac = [2, 0, 0, 9, 0, u8::try_from(i).unwrap()];
            VecFrame::new(&arp_reply_from(ip, mac))
        })
        .collect();
    p0.process_burst(&snap, PROVIDER_PORT, &mut burst, 3, &mut |v| {
        assert!(matches!(v, Verdict::Done));
    });
    let from_p0: Vec<(u16, VecFrame)> = p0.drain_emitted().collect();
    assert_eq!(from_p0.len(), 1, "worker 0's own held packet left at once");

    // Worker 1 learns nothing itself; at its next tick everything it held goes out.
    p1.poll(&snap, 3 + TIMER_TICK_MS);
    let released: Vec<(u16, VecFrame)> = p1.drain_emitted().collect();
    assert_eq!(
        released.len(),
        usize::from(flows),
        "every held packet released"
    );
    for (port, f) in &released {
        assert_eq!(*port, PROVIDER_PORT);
        let dst = ip_of(f.bytes()).dst_addr();
        let i = asked_ips.iter().position(|&ip| ip == dst).unwrap();
        assert_eq!(&f.bytes()[0..6], &[2, 0, 0, 9, 0, u8::try_from(i).unwrap()]);
    }
    assert_eq!(p1.counters().dropped(DropReason::NeighbourUnresolved), 0);

    // Worker 0 now forwards to those targets straight away (no ARP, no hold).
    for i in 0..50 {
        let f = udp(CLIENT, 31_000 + i, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
        let (port, _) = tx(p0.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 20));
        assert_eq!(port, PROVIDER_PORT);
    }
    let out: Vec<(u16, VecFrame)> = p0.drain_emitted().collect();
    assert!(arp_requests(&out).is_empty());
}

/// A learned next hop past its TTL is refreshed with one ARP request for all workers,
/// while both keep forwarding with the MAC they have.
#[test]
fn expiry_is_refreshed_once_for_all_workers() {
    let mut config = Config::embedded_default();
    config.timeouts.neighbour_ttl = std::time::Duration::from_secs(5);
    let snap = snapshot(&config);
    let mut settings = crate::daemon::pipeline_settings(&config, 2);
    settings.flow_capacity = 1024;
    let table = SharedNeighbours::new(64, settings.neighbour_timers);
    let new = |id| sharing(id, &settings, &snap, &table);
    let (mut p0, mut p1) = (new(0), new(1));
    for (att, ip, mac) in [
        (0u16, CLIENT, CLIENT_MAC),
        (1, Ipv4Addr::new(10, 2, 0, 11), TARGET_MAC),
        (1, Ipv4Addr::new(10, 2, 0, 12), TARGET_MAC),
    ] {
        p0.learn_remote(
            &snap,
            NeighbourNews {
                attachment: att,
                ip: ip.into(),
                mac,
            },
            0,
        );
    }
    let mut requests = Vec::new();
    // Each worker forwards every 100 ms for 8 s: both targets go stale at 5 s.
    for step in 0..80u64 {
        let now = step * 100;
        for (w, p) in [&mut p0, &mut p1].into_iter().enumerate() {
            for port in 0..4u16 {
                let sport = 40_000 + u16::try_from(w).unwrap() * 100 + port;
                let f = udp(CLIENT, sport, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
                let (out_port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), now));
                assert_eq!(out_port, PROVIDER_PORT);
                assert_eq!(&out[0..6], &TARGET_MAC, "the MAC stays in use meanwhile");
            }
            p.poll(&snap, now);
            let out: Vec<(u16, VecFrame)> = p.drain_emitted().collect();
            requests.extend(arp_requests(&out).into_iter().map(|(_, ip)| (w, ip, now)));
        }
    }
    // Stale after 5 s, then asked again once per retry interval (1 s) while unanswered:
    // at 5.1, 6.2 and 7.3 s, by whichever worker got there first, never by both.
    for t in [11u8, 12] {
        let times: Vec<u64> = requests
            .iter()
            .filter(|(_, ip, _)| *ip == Ipv4Addr::new(10, 2, 0, t))
            .map(|r| r.2)
            .collect();
        assert_eq!(times, vec![5100, 6200, 7300], "target {t}: {requests:?}");
    }
    assert_eq!(requests.len(), 6);
}

mod pressure;

/// Found by the `process_frame` fuzz target: a frame whose Ethernet source was a group
/// address (or zero) got its answer (a RST for no flow, an echo reply) sent back to that
/// address, so one frame in reached every host of a multicast group, or of the VPC for
/// ff:ff:ff:ff:ff:ff. No station sends from such an address: the frame is dropped as
/// malformed and nothing answers it.
#[test]
fn frames_from_a_group_or_zero_source_mac_get_no_answer() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    for src in [
        [0xff; 6],
        [0x01, 0, 0x5e, 0, 0, 1],
        [0x33, 0x33, 0, 0, 0, 1],
        [0; 6],
    ] {
        let before = p.counters().dropped(DropReason::Malformed);
        // A segment of no flow from a target, and a ping to the endpoint.
        let target = Ipv4Addr::new(10, 2, 0, 11);
        let rst_bait = tcp(
            target,
            8080,
            SNAT,
            2000,
            WireTcpFlags::ACK,
            1,
            1,
            MAC_P,
            src,
        );
        let v = p.process(&snap, PROVIDER_PORT, VecFrame::new(&rst_bait), 1);
        assert!(matches!(v, Verdict::Done), "{src:02x?}: answered a segment");
        let mut ping = ping_frame(CLIENT, ENDPOINT);
        ping[6..12].copy_from_slice(&src);
        let v = p.process(&snap, CONSUMER_PORT, VecFrame::new(&ping), 1);
        assert!(matches!(v, Verdict::Done), "{src:02x?}: answered a ping");
        assert_eq!(p.counters().dropped(DropReason::Malformed), before + 2);
    }
    assert_eq!(p.counters().rst_sent + p.counters().echo_replies, 0);
    assert_eq!(p.drain_emitted().count(), 0);
}
mod flowlog;
mod fragments;
mod ha;
mod health;
mod ipv6;
mod nat64;
mod nat66;
