//! The packet path on literal frames, without DPDK: the embedded demo topology, frames
//! built with the wire module's reprs, `VecFrame` buffers.

use std::net::Ipv4Addr;

use mgmt::config::Config;

use super::*;
use crate::frame::VecFrame;
use crate::wire::tcp::{TcpFlags as WireTcpFlags, TcpRepr};
use crate::wire::udp::UdpRepr;

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
        &config.state(),
        &mut crate::snapshot::Handles::default(),
    )
    .expect("demo snapshot")
}

fn pipeline(config: &Config, workers: u16, id: u16) -> (Pipeline<VecFrame>, Snapshot) {
    let snap = snapshot(config);
    let mut settings = crate::daemon::pipeline_settings(config, workers);
    settings.flow_capacity = 1024;
    let p = Pipeline::new(id, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    (with_neighbours(p, &snap), snap)
}

/// The client and both targets known, so translated packets leave at once.
fn with_neighbours(mut p: Pipeline<VecFrame>, snap: &Snapshot) -> Pipeline<VecFrame> {
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
    let config = Config::embedded_default();
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
        (frag, DropReason::Fragment),
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
    let mut handles = crate::snapshot::Handles::default();
    let snap = Snapshot::build(1, &config, &[MAC_C, MAC_P], &config.state(), &mut handles).unwrap();
    let settings = crate::daemon::pipeline_settings(&config, 1);
    let p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    let mut p = with_neighbours(p, &snap);
    let (target, snat_port) = establish(&mut p, &snap, 41000);
    assert_eq!(p.flows().len(), 1);

    // A new version where the provider rejected the endpoint.
    config.endpoints[0].state = mgmt::model::EndpointState::Rejected;
    let next = Snapshot::build(2, &config, &[MAC_C, MAC_P], &config.state(), &mut handles).unwrap();
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
    let mut handles = crate::snapshot::Handles::default();
    let snap = Snapshot::build(1, &config, &[MAC_C, MAC_P], &state, &mut handles).unwrap();
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
    let next = Snapshot::build(2, &config, &[MAC_C, MAC_P], &state, &mut handles).unwrap();
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
        src_addr: Ipv4Addr::new(10, 2, 0, 1),
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
            t.ip = Ipv4Addr::new(192, 168, 7, 11 + u8::try_from(i).unwrap());
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
            ip,
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
    let table = Arc::new(NeighbourTable::new(
        settings.neighbour_capacity,
        settings.neighbour_timers,
    ));
    let new = |id| {
        let mut p: Pipeline<VecFrame> = Pipeline::with_neighbour_table(
            id,
            settings.clone(),
            Box::new(|| Some(VecFrame::new(&[]))),
            &snap,
            Arc::clone(&table),
        );
        p.drain_emitted().for_each(drop);
        p
    };
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
    let table = Arc::new(NeighbourTable::new(64, settings.neighbour_timers));
    let new = |id| {
        let mut p: Pipeline<VecFrame> = Pipeline::with_neighbour_table(
            id,
            settings.clone(),
            Box::new(|| Some(VecFrame::new(&[]))),
            &snap,
            Arc::clone(&table),
        );
        p.drain_emitted().for_each(drop);
        p
    };
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
