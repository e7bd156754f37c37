//! IPv6 consumers of IPv6 targets (NAT66), on literal frames: the consumer's packets
//! leave the provider port as IPv6 from the IPv6 SNAT address to the target, the
//! target's replies come back from the endpoint's IPv6 address, every checksum right;
//! IPv4 consumers do not reach IPv6 targets.

use std::net::Ipv6Addr;

use super::nat64::{
    a6, frame6_from, icmp6_error_from, icmp6_of, ipv6_out, tcp6, tcp_seg, udp_dgram, ENDPOINT6,
    HOST6,
};
use super::*;

const OWN6_P: &str = "fd00:b1::1";
const SNAT6: &str = "fd00:b1::100";
const TARGETS6: [&str; 2] = ["fd00:b1::11", "fd00:b1::12"];

/// The dual-stack demo with an IPv6 provider VPC: listeners tcp/443 and udp/9443 of IPv6
/// targets (their MACs configured), reached from `SNAT6`.
pub(super) fn nat66_config() -> Config {
    let mut config = super::nat64::dual_config();
    config.vpcs[1].address6 = Some(format!("{OWN6_P}/64").parse().unwrap());
    config.vpcs[1].static_neighbours6 = TARGETS6
        .iter()
        .map(|t| mgmt::model::StaticNeighbour6 {
            ip: t.parse().unwrap(),
            mac: mgmt::net::MacAddr(TARGET_MAC),
        })
        .collect();
    let s = &mut config.services[0];
    s.snat_addresses
        .push(SNAT6.parse::<Ipv6Addr>().unwrap().into());
    for (proto, port) in [
        (mgmt::model::Protocol::Tcp, 443),
        (mgmt::model::Protocol::Udp, 9443),
    ] {
        let targets = TARGETS6
            .iter()
            .map(|t| mgmt::model::Target::new(t.parse::<Ipv6Addr>().unwrap(), 8443))
            .collect();
        let mut l = mgmt::model::Listener::new(proto, port, targets);
        l.health_check_enabled = false;
        s.listeners.push(l);
    }
    config.validate().unwrap();
    config
}

/// The consumer's UDP datagram "hello" from port 5353 to the IPv6 listener udp/9443.
fn hello6() -> Vec<u8> {
    frame6_from(
        (MAC_C, CLIENT_MAC),
        (a6(HOST6), a6(ENDPOINT6)),
        PROTO_UDP,
        64,
        (0, &[]),
        udp_dgram(5353, 9443, b"hello"),
    )
}

/// A frame from IPv6 target `target` to the SNAT address, on the provider port.
fn from_target(target: u128, proto: u8, l4: Vec<u8>) -> Vec<u8> {
    frame6_from(
        (MAC_P, TARGET_MAC),
        (target, a6(SNAT6)),
        proto,
        64,
        (0, &[]),
        l4,
    )
}

#[test]
fn an_ipv6_consumer_reaches_an_ipv6_target_from_the_ipv6_snat_address() {
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let syn = tcp6(40000, 443, syn(), 7, 0);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 0));
    assert_eq!(port, PROVIDER_PORT);
    assert_eq!(
        (&out[..6], &out[6..12]),
        (&TARGET_MAC[..], &MAC_P[..]),
        "to the target's MAC from the provider port's"
    );
    let (ip, hop) = ipv6_out(&out);
    let target = ip.dst_addr_u128();
    assert!(
        TARGETS6.iter().any(|t| a6(t) == target),
        "a target: {target:x}"
    );
    assert_eq!((ip.src_addr_u128(), hop), (a6(SNAT6), 63));
    assert_eq!(ip.traffic_class(), 0xb8, "the traffic class is kept");
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((seg.dst_port(), seg.seq_number()), (8443, 7));
    let snat_port = seg.src_port();
    assert_eq!(p.counters().new_flows, 1);

    // The SYN-ACK comes back from the endpoint's IPv6 address and port.
    let synack = tcp_seg(
        8443,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        100,
        8,
    );
    let reply = from_target(target, PROTO_TCP, synack);
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&reply), 1));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!((&back[..6], &back[6..12]), (&CLIENT_MAC[..], &MAC_C[..]));
    let (ip, hop) = ipv6_out(&back);
    assert_eq!(
        (ip.src_addr_u128(), ip.dst_addr_u128(), hop),
        (ep, host, 63)
    );
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert_eq!((seg.src_port(), seg.dst_port()), (443, 40000));
    assert_eq!((seg.seq_number(), seg.ack_number()), (100, 8));

    // The handshake completes and data flows, the flow's addresses reported as they are.
    let ack = tcp6(40000, 443, WireTcpFlags::ACK, 8, 101);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ack), 2));
    let (ip, _) = ipv6_out(&out);
    assert_eq!(
        (ip.src_addr_u128(), ip.dst_addr_u128()),
        (a6(SNAT6), target)
    );
    assert_eq!(p.flows().len(), 1);
    let (id, f) = p.flows().iter().next().unwrap();
    let side = p.consumers6.get(id).copied();
    let (snat, to) = crate::graph::nat64::provider_addresses(f, side);
    assert_eq!(snat.to_string(), format!("[{SNAT6}]:{snat_port}"));
    assert_eq!(
        to,
        std::net::SocketAddr::new(Ipv6Addr::from(target).into(), 8443)
    );
    assert_eq!(f.tcp, crate::tables::flow::TcpState::Established);
}

#[test]
fn udp_of_an_ipv6_consumer_reaches_an_ipv6_target_and_back() {
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let d = frame6_from(
        (MAC_C, CLIENT_MAC),
        (host, ep),
        PROTO_UDP,
        64,
        (0, &[]),
        udp_dgram(5353, 9443, b"hello"),
    );
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&d), 0));
    assert_eq!(port, PROVIDER_PORT);
    let (ip, _) = ipv6_out(&out);
    let target = ip.dst_addr_u128();
    assert_eq!(ip.src_addr_u128(), a6(SNAT6));
    let u = ip.payload();
    assert_eq!(&u[2..4], &8443u16.to_be_bytes());
    assert_eq!(&u[8..], b"hello");
    let snat_port = u16::from_be_bytes([u[0], u[1]]);
    let reply = from_target(target, PROTO_UDP, udp_dgram(8443, snat_port, b"pong"));
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&reply), 1));
    assert_eq!(port, CONSUMER_PORT);
    let (ip, _) = ipv6_out(&back);
    assert_eq!((ip.src_addr_u128(), ip.dst_addr_u128()), (ep, host));
    let u = ip.payload();
    assert_eq!(&u[0..4], &[0x24, 0xe3, 0x14, 0xe9], "ports 9443 -> 5353");
    assert_eq!(&u[8..], b"pong");

    // From another address, the same ports find no flow.
    let forged = from_target(target ^ 0xff, PROTO_UDP, udp_dgram(8443, snat_port, b"x"));
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&forged), 2);
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 1);
}

#[test]
fn ipv4_consumers_do_not_reach_ipv6_targets() {
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let syn4 = tcp(CLIENT, 40000, ENDPOINT, 443, syn(), 1, 0, MAC_C, CLIENT_MAC);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn4), 0);
    assert_eq!(p.counters().dropped(DropReason::Ipv6TargetsOnly), 1);
    assert_eq!(p.flows().len(), 0);
    // Its IPv4 listeners serve both families as before (NAT64 for IPv6).
    let syn6 = tcp6(40001, 80, syn(), 1, 0);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn6), 1));
    assert_eq!(&out[12..14], &[0x08, 0x00]);
}

#[test]
fn the_ipv6_snat_address_answers_neighbour_solicitations() {
    use crate::wire::icmpv6::{self, Icmpv6Packet, NdiscRepr};
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (snat, target) = (a6(SNAT6), a6(TARGETS6[0]));
    let group = icmpv6::solicited_node(snat);
    let mut msg = vec![0u8; icmpv6::ND_WITH_LLADDR_LEN];
    NdiscRepr::Solicit {
        target: snat,
        source_lladdr: Some(EthernetAddress(TARGET_MAC)),
    }
    .emit(&mut msg, target, group)
    .unwrap();
    let mut f = eth(icmpv6::multicast_mac(group).0, TARGET_MAC, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(msg.len()).unwrap().to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&target.to_be_bytes());
    f.extend_from_slice(&group.to_be_bytes());
    f.extend_from_slice(&msg);
    let (port, out) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&f), 0));
    assert_eq!(port, PROVIDER_PORT);
    let ip = crate::wire::ipv6::Ipv6Packet::new_checked(&out[14..]).unwrap();
    assert_eq!((ip.src_addr_u128(), ip.dst_addr_u128()), (snat, target));
    let advert = NdiscRepr::parse(&Icmpv6Packet::new_checked(ip.payload()).unwrap()).unwrap();
    assert!(
        matches!(advert, NdiscRepr::Advert { target: t, target_lladdr: Some(m), solicited: true, .. } if t == snat && m.0 == MAC_P),
        "{advert:?}"
    );
    // And the snapshot announces it when it appears.
    assert!(snap.announce6.contains(&(1, snat)), "{:?}", snap.announce6);
}

#[test]
fn ipv6_targets_are_probed_over_ipv6_and_their_answers_reach_the_checker() {
    use crate::health::link::{ProbeQueues, ProbeSegment};
    let mut config = nat66_config();
    config.services[0].listeners[2].health_check_enabled = true;
    config.validate().unwrap();
    let snap = snapshot(&config);
    let target = a6(TARGETS6[0]);
    let spec = snap
        .health_checks
        .iter()
        .find(|s| s.key.ip == std::net::IpAddr::V6(Ipv6Addr::from(target)))
        .expect("a check of the IPv6 target");
    let crate::health::Mode::Check(check) = &spec.mode else {
        panic!("{spec:?}");
    };
    assert_eq!(check.source, std::net::IpAddr::V6(OWN6_P.parse().unwrap()));
    let (mut p, _) = pipeline(&config, 1, 0);
    let queues = ProbeQueues::new(1, 4);
    p.set_probe_link(queues.link(0).unwrap());
    assert!(queues.send(ProbeSegment {
        attachment: 1,
        src: check.source,
        dst: spec.key.ip,
        tcp: TcpRepr {
            src_port: 40000,
            dst_port: 8443,
            seq_number: 77,
            ack_number: 0,
            flags: WireTcpFlags::SYN,
            window_len: 1000,
            urgent_at: 0,
        },
        payload: Vec::new(),
    }));
    p.poll(&snap, 0);
    // (Worker 0 also announces the demo's addresses: the probe is the TCP frame.)
    let syn = p
        .drain_emitted()
        .map(|(port, f)| (port, f.bytes().to_vec()))
        .find(|(port, b)| *port == PROVIDER_PORT && b[12..14] == [0x86, 0xdd] && b[20] == PROTO_TCP)
        .map(|(_, b)| b)
        .expect("the probe left");
    let (ip, _) = ipv6_out(&syn);
    assert_eq!(
        (ip.src_addr_u128(), ip.dst_addr_u128()),
        (a6(OWN6_P), target)
    );
    assert_eq!(ip.next_header(), PROTO_TCP);
    let synack = frame6_from(
        (MAC_P, TARGET_MAC),
        (target, a6(OWN6_P)),
        PROTO_TCP,
        64,
        (0, &[]),
        tcp_seg(8443, 40000, WireTcpFlags::SYN | WireTcpFlags::ACK, 9000, 78),
    );
    assert!(matches!(
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&synack), 1),
        Verdict::Done
    ));
    let r = queues.replies.pop().expect("the reply reached the checker");
    assert_eq!(r.src, std::net::IpAddr::V6(Ipv6Addr::from(target)));
    assert_eq!((r.tcp.seq_number, r.tcp.ack_number), (9000, 78));
    // A wrong checksum does not.
    let mut bad = synack.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&bad), 2);
    assert!(queues.replies.pop().is_none());
    assert_eq!(p.counters().dropped(DropReason::BadChecksum), 1);
}

#[test]
fn ending_a_nat66_flow_resets_both_sides_in_ipv6() {
    let mut config = nat66_config();
    let mut handles = crate::tables::snapshot::Handles::default();
    let build = build_versioned;
    let snap = build(&config, 1, &mut handles);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let syn = tcp6(40000, 443, syn(), 7, 0);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 0));
    let (ip, _) = ipv6_out(&out);
    let target = ip.dst_addr_u128();
    let snat_port = u16::from_be_bytes([ip.payload()[0], ip.payload()[1]]);
    let synack = tcp_seg(
        8443,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        100,
        8,
    );
    tx(p.process(
        &snap,
        PROVIDER_PORT,
        VecFrame::new(&from_target(target, PROTO_TCP, synack)),
        1,
    ));
    let ack = tcp6(40000, 443, WireTcpFlags::ACK, 8, 101);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ack), 2));
    p.drain_emitted().for_each(drop);

    config.endpoints[0].state = mgmt::model::EndpointState::Rejected;
    let next = build(&config, 2, &mut handles);
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(p.flows().len(), 0, "the flow ended");
    let rsts: Vec<(u16, Vec<u8>)> = p
        .drain_emitted()
        .map(|(port, f)| (port, f.bytes().to_vec()))
        .filter(|(_, b)| b[12..14] == [0x86, 0xdd] && b[14 + 6] == PROTO_TCP)
        .collect();
    let addrs: Vec<(u16, u128, u128, u32)> = rsts
        .iter()
        .map(|(port, b)| {
            let (ip, _) = ipv6_out(b);
            let seg = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(seg.rst());
            (
                *port,
                ip.src_addr_u128(),
                ip.dst_addr_u128(),
                seg.seq_number(),
            )
        })
        .collect();
    assert_eq!(
        addrs,
        [
            (CONSUMER_PORT, a6(ENDPOINT6), a6(HOST6), 101),
            (PROVIDER_PORT, a6(SNAT6), target, 8)
        ],
        "a RST to each side, in the sequence space it accepts"
    );
}

#[test]
fn a_nat66_flow_is_synced_with_both_ipv6_sides_and_carried_after_a_takeover() {
    use super::ha::{activate, exported, node};
    let config = nat66_config();
    let (mut a, snap, qa) = node(&config);
    activate(&mut a, &snap, &qa, 0);
    let syn = tcp6(40000, 443, syn(), 7, 0);
    let (_, out) = tx(a.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 1));
    let (ip, _) = ipv6_out(&out);
    let target = ip.dst_addr_u128();
    let snat_port = u16::from_be_bytes([ip.payload()[0], ip.payload()[1]]);
    a.poll(&snap, 2);
    let records = exported(&qa);
    let side = records[0]
        .side6
        .expect("the creation carries the IPv6 sides");
    assert_eq!((side.target, side.snat), (target, a6(SNAT6)));

    let (mut b, snap_b, qb) = node(&config);
    b.set_flow_hash_seed(a.settings.flow_hash_seed ^ 0x5555);
    for r in &records {
        qb.import[0].push(*r).unwrap();
    }
    b.poll(&snap_b, 1000);
    assert_eq!(b.flows().len(), 1, "installed");
    assert_eq!(b.counters().sync_unresolved, 0);
    activate(&mut b, &snap_b, &qb, 2000);
    // The target's SYN-ACK reaches the consumer through the peer, and on.
    let synack = tcp_seg(
        8443,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        100,
        8,
    );
    let reply = from_target(target, PROTO_TCP, synack);
    let (port, back) = tx(b.process(&snap_b, PROVIDER_PORT, VecFrame::new(&reply), 2001));
    assert_eq!(port, CONSUMER_PORT);
    let (ip, _) = ipv6_out(&back);
    assert_eq!(
        (ip.src_addr_u128(), ip.dst_addr_u128()),
        (a6(ENDPOINT6), a6(HOST6))
    );
    let ack = tcp6(40000, 443, WireTcpFlags::ACK, 8, 101);
    let (port, out) = tx(b.process(&snap_b, CONSUMER_PORT, VecFrame::new(&ack), 2002));
    assert_eq!(port, PROVIDER_PORT);
    let (ip, _) = ipv6_out(&out);
    assert_eq!(
        (ip.src_addr_u128(), ip.dst_addr_u128()),
        (a6(SNAT6), target)
    );
    assert_eq!(b.counters().new_flows, 0, "no flow was made anew");
}

#[test]
fn a_nat66_flow_outlives_snapshot_changes_and_ends_with_its_snat_address() {
    let mut config = nat66_config();
    let mut handles = crate::tables::snapshot::Handles::default();
    let build = build_versioned;
    let snap = build(&config, 1, &mut handles);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let d = hello6();
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&d), 0));
    assert_eq!(p.flows().len(), 1);
    // Every live flow is checked again against a new snapshot: this one still stands.
    let next = build(&config, 2, &mut handles);
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(p.flows().len(), 1, "the flow outlives a snapshot change");
    // Without its SNAT address (another takes its place) it ends.
    config.services[0].snat_addresses[1] = "fd00:b1::101".parse::<Ipv6Addr>().unwrap().into();
    let last = build(&config, 3, &mut handles);
    p.on_snapshot(&last);
    p.poll(&last, 20);
    assert_eq!(p.flows().len(), 0, "its SNAT address is gone");
}

#[test]
fn icmpv6_errors_about_a_nat66_flow_reach_the_other_side_quoting_its_own_packet() {
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep, snat) = (a6(HOST6), a6(ENDPOINT6), a6(SNAT6));
    let sent = frame6_from(
        (MAC_C, CLIENT_MAC),
        (host, ep),
        PROTO_UDP,
        64,
        (0, &[]),
        udp_dgram(5353, 9443, b"hello"),
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&sent), 0));
    let (ip, _) = ipv6_out(&out);
    let target = ip.dst_addr_u128();
    let snat_port = u16::from_be_bytes([ip.payload()[0], ip.payload()[1]]);
    let reply = from_target(target, PROTO_UDP, udp_dgram(8443, snat_port, b"pong"));
    let (_, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&reply), 1));

    // A router on the provider's side: packet too big, about the packet we sent.
    let router = a6("fd00:b1::fe");
    let e = icmp6_error_from(
        (MAC_P, TARGET_MAC),
        (router, snat),
        (2, 0, 1400),
        &out[14..],
    );
    let (port, got) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&e), 2));
    assert_eq!(port, CONSUMER_PORT);
    let (ip, hop) = ipv6_out(&got);
    assert_eq!(
        (ip.src_addr_u128(), ip.dst_addr_u128(), hop),
        (ep, host, 63)
    );
    let (t, c, mtu, quote) = icmp6_of(&got);
    assert_eq!(
        (t, c, mtu),
        (2, 0, 1400),
        "the same error, its MTU as it was"
    );
    let mut want = sent[14..].to_vec();
    want[7] = 63; // the hop limit it left with
    assert_eq!(quote, want, "the consumer's own packet, checksum and all");

    // A router on the consumer's side: unreachable, about a reply.
    let router = a6("fd00:c1::fe");
    let e = icmp6_error_from((MAC_C, CLIENT_MAC), (router, ep), (1, 0, 0), &back[14..]);
    let (port, got) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 3));
    assert_eq!(port, PROVIDER_PORT);
    assert_eq!(&got[..6], &TARGET_MAC);
    let (ip, _) = ipv6_out(&got);
    assert_eq!((ip.src_addr_u128(), ip.dst_addr_u128()), (snat, target));
    let (t, c, _, quote) = icmp6_of(&got);
    assert_eq!((t, c), (1, 0));
    let mut want = reply[14..].to_vec();
    want[7] = 63;
    assert_eq!(quote, want, "the target's own packet");
    assert_eq!(p.counters().icmp_errors_translated, 2);

    // About no flow of ours: nothing goes anywhere.
    let mut stray = out[14..].to_vec();
    stray[40..42].copy_from_slice(&(snat_port ^ 2).to_be_bytes());
    let e = icmp6_error_from(
        (MAC_P, TARGET_MAC),
        (a6("fd00:b1::fe"), snat),
        (2, 0, 1400),
        &stray,
    );
    let v = p.process(&snap, PROVIDER_PORT, VecFrame::new(&e), 4);
    assert!(!matches!(v, Verdict::Tx(..)));
}

#[test]
fn icmpv6_errors_quoting_extension_headers_of_a_nat66_flow_are_relayed_too() {
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep, snat) = (a6(HOST6), a6(ENDPOINT6), a6(SNAT6));
    // Destination options (one PadN), which NAT66 keeps: the quotes carry them.
    let opts = |next: u8| [next, 0, 1, 4, 0, 0, 0, 0];
    let sent = frame6_from(
        (MAC_C, CLIENT_MAC),
        (host, ep),
        PROTO_UDP,
        64,
        (60, &opts(PROTO_UDP)),
        udp_dgram(5353, 9443, b"hello"),
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&sent), 0));
    let ip = crate::wire::ipv6::Ipv6Packet::new_checked(&out[14..]).unwrap();
    assert_eq!(ip.next_header(), 60, "the options went along");
    let target = ip.dst_addr_u128();
    let sum = crate::wire::icmpv6::l4_checksum_v6(snat, target, PROTO_UDP, &ip.payload()[8..]);
    assert_eq!(sum, 0, "UDP checksum right past the options");
    let snat_port = u16::from_be_bytes([ip.payload()[8], ip.payload()[9]]);
    let reply = frame6_from(
        (MAC_P, TARGET_MAC),
        (target, snat),
        PROTO_UDP,
        64,
        (60, &opts(PROTO_UDP)),
        udp_dgram(8443, snat_port, b"pong"),
    );
    let (_, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&reply), 1));

    let e = icmp6_error_from(
        (MAC_P, TARGET_MAC),
        (a6("fd00:b1::fe"), snat),
        (2, 0, 1400),
        &out[14..],
    );
    let (port, got) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&e), 2));
    assert_eq!(port, CONSUMER_PORT);
    let (t, c, mtu, quote) = icmp6_of(&got);
    assert_eq!((t, c, mtu), (2, 0, 1400));
    let mut want = sent[14..].to_vec();
    want[7] = 63;
    assert_eq!(quote, want, "the consumer's own packet, options and all");

    let e = icmp6_error_from(
        (MAC_C, CLIENT_MAC),
        (a6("fd00:c1::fe"), ep),
        (1, 0, 0),
        &back[14..],
    );
    let (port, got) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 3));
    assert_eq!(port, PROVIDER_PORT);
    let (t, c, _, quote) = icmp6_of(&got);
    assert_eq!((t, c), (1, 0));
    let mut want = reply[14..].to_vec();
    want[7] = 63;
    assert_eq!(quote, want, "the target's own packet, options and all");
    assert_eq!(p.counters().icmp_errors_translated, 2);

    // A quote whose ports lie beyond what a relayed error may carry (1280 bytes) is not
    // relayed half-translated.
    let mut long = out[14..].to_vec();
    // 1,208 bytes of destination options, all Pad1.
    let mut options = vec![PROTO_UDP, 150];
    options.resize(8 + 150 * 8, 0);
    long.splice(40..48, options);
    long[6] = 60;
    let e = icmp6_error_from(
        (MAC_P, TARGET_MAC),
        (a6("fd00:b1::fe"), snat),
        (2, 0, 1400),
        &long,
    );
    let v = p.process(&snap, PROVIDER_PORT, VecFrame::new(&e), 4);
    assert!(!matches!(v, Verdict::Tx(..)), "{v:?}");
    assert_eq!(p.counters().icmp_errors_translated, 2);
}

#[test]
fn fragments_of_a_nat66_flow_keep_their_datagram_whole_both_ways() {
    use super::fragments::{burst, sent};
    use super::nat64::{fragments6_of, reassemble6};
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep, snat) = (a6(HOST6), a6(ENDPOINT6), a6(SNAT6));
    let payload: Vec<u8> = (0..3000u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let whole = frame6_from(
        (MAC_C, CLIENT_MAC),
        (host, ep),
        PROTO_UDP,
        64,
        (0, &[]),
        udp_dgram(5353, 9443, &payload),
    );
    // The last fragment first: the others wait for the one with the ports.
    let frags = fragments6_of(&whole, 1448, 0x1234_5678);
    let input: Vec<Vec<u8>> = frags.iter().rev().cloned().collect();
    let out = sent(burst(&mut p, &snap, CONSUMER_PORT, &input, 10));
    assert_eq!(out.len(), frags.len(), "{:?}", p.counters());
    let (src, target, id, seg) = reassemble6(&out);
    assert_eq!((src, id), (snat, 0x1234_5678), "one datagram, its id kept");
    assert!(TARGETS6.iter().any(|t| a6(t) == target));
    assert_eq!(&seg[2..4], &8443u16.to_be_bytes());
    assert_eq!(&seg[8..], &payload[..]);
    assert_eq!(
        crate::wire::icmpv6::l4_checksum_v6(snat, target, PROTO_UDP, &seg),
        0,
        "the datagram's checksum, updated in its first fragment alone"
    );
    // The target's reply, fragmented too, reaches the consumer whole.
    let snat_port = u16::from_be_bytes([seg[0], seg[1]]);
    let reply = from_target(target, PROTO_UDP, udp_dgram(8443, snat_port, &payload));
    let frags = fragments6_of(&reply, 1448, 77);
    let out = sent(burst(&mut p, &snap, PROVIDER_PORT, &frags, 11));
    assert_eq!(out.len(), frags.len(), "{:?}", p.counters());
    let (src, dst, _, seg) = reassemble6(&out);
    assert_eq!((src, dst), (ep, host));
    assert_eq!(&seg[0..4], &[0x24, 0xe3, 0x14, 0xe9], "ports 9443 -> 5353");
    assert_eq!(&seg[8..], &payload[..]);
    assert_eq!(
        crate::wire::icmpv6::l4_checksum_v6(ep, host, PROTO_UDP, &seg),
        0
    );
    assert_eq!(p.flows().len(), 1);
}

#[test]
fn flow_log_lines_of_a_nat66_flow_name_its_ipv6_addresses() {
    use crate::graph::flowlog::FlowLogRecord;
    let config = nat66_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let q = std::sync::Arc::new(crossbeam::queue::ArrayQueue::new(64));
    p.set_flow_log(std::sync::Arc::clone(&q), 1000);
    let d = hello6();
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&d), 10));
    let (ip, _) = ipv6_out(&out);
    let target = Ipv6Addr::from(ip.dst_addr_u128());
    let snat_port = u16::from_be_bytes([ip.payload()[0], ip.payload()[1]]);
    p.poll(&snap, 1001);
    let got: Vec<FlowLogRecord> = std::iter::from_fn(|| q.pop()).collect();
    let mut f = crate::daemon::flowlog::Formatter::new(0);
    let mut text = String::new();
    for r in &got {
        f.lines(&snap, r, &mut text);
    }
    // The consumer's line and the provider's, each with its own side's addresses.
    assert!(
        text.lines().any(
            |l| l.contains(&format!(" {HOST6} {ENDPOINT6} 5353 9443 17 1 "))
                && l.contains(&format!(" {SNAT6} {target} ingress "))
        ),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.contains(&format!(" {SNAT6} {target} {snat_port} 8443 17 1 "))
                && l.contains(&format!(" {HOST6} {ENDPOINT6} egress "))
        ),
        "{text}"
    );
}

#[test]
fn an_ipv6_only_consumer_vpc_reaches_ipv6_and_ipv4_targets_and_no_ipv4_reaches_it() {
    let mut config = nat66_config();
    config.vpcs[0].address = None;
    let e = &mut config.endpoints[0];
    e.ip = None;
    e.ip_address_type = mgmt::model::IpAddressType::Ipv6;
    config.validate().unwrap();
    let (mut p, snap) = pipeline(&config, 1, 0);
    assert!(!snap.attachments[0].has_ipv4());
    assert!(
        snap.local_addresses().all(|(att, _)| att != 0),
        "no IPv4 address of ours there"
    );
    // NAT66 and NAT64 from it.
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&hello6()), 0));
    let (ip, _) = ipv6_out(&out);
    assert_eq!(ip.src_addr_u128(), a6(SNAT6));
    let (_, out) = tx(p.process(
        &snap,
        CONSUMER_PORT,
        VecFrame::new(&tcp6(40000, 80, syn(), 1, 0)),
        1,
    ));
    assert_eq!(&out[12..14], &[0x08, 0x00], "IPv4 to the IPv4 targets");
    // IPv4 finds nothing of ours on it: not the old endpoint address, nor 0.0.0.0.
    for dst in [ENDPOINT, Ipv4Addr::UNSPECIFIED] {
        let f = udp(CLIENT, 6000, dst, 9000, MAC_C, CLIENT_MAC);
        assert!(!matches!(
            p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 2),
            Verdict::Tx(..)
        ));
    }
    assert_eq!(p.counters().dropped(DropReason::UnknownDestination), 2);
}

#[test]
fn an_active_node_announces_no_ipv4_address_on_an_ipv6_only_vpc() {
    use std::sync::atomic::Ordering;
    let mut config = nat66_config();
    config.vpcs[0].address = None;
    config.endpoints[0].ip = None;
    config.endpoints[0].ip_address_type = mgmt::model::IpAddressType::Ipv6;
    config.validate().unwrap();
    let (mut p, snap, q) = super::ha::node(&config);
    q.shared
        .role
        .store(crate::ha::link::ACTIVE, Ordering::Release);
    let mut sent = Vec::new();
    for now in [1, 150, 300] {
        p.poll(&snap, now);
        sent.extend(
            p.drain_emitted()
                .map(|(port, f)| (port, f.bytes().to_vec())),
        );
    }
    let arp_on = |port: u16| {
        sent.iter()
            .filter(|(p, b)| *p == port && b[12..14] == [0x08, 0x06])
            .count()
    };
    assert_eq!(arp_on(CONSUMER_PORT), 0, "no ARP from 0.0.0.0: {sent:02x?}");
    assert!(
        arp_on(PROVIDER_PORT) >= 1,
        "the provider VPC's IPv4 address still is"
    );
    assert!(
        sent.iter()
            .any(|(p, b)| *p == CONSUMER_PORT && b[12..14] == [0x86, 0xdd] && b[54] == 136),
        "the consumer VPC's IPv6 address is advertised"
    );
}

#[test]
fn a_nat66_packet_larger_than_the_egress_mtu_gets_packet_too_big_with_it() {
    let config = nat66_config();
    let snap = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1400],
        &config.state(),
        &mut crate::tables::snapshot::Handles::default(),
    )
    .unwrap();
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let big = |n: usize| {
        frame6_from(
            (MAC_C, CLIENT_MAC),
            (host, ep),
            PROTO_UDP,
            64,
            (0, &[]),
            udp_dgram(5353, 9443, &vec![7u8; n]),
        )
    };
    // 40 + 8 + 1352 = 1400 bytes fit; one more does not.
    let (port, _) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&big(1352)), 0));
    assert_eq!(port, PROVIDER_PORT);
    let (port, back) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&big(1353)), 1));
    assert_eq!(port, CONSUMER_PORT, "answered, not forwarded");
    let (t, c, mtu, quote) = icmp6_of(&back);
    assert_eq!(
        (t, c, mtu),
        (2, 0, 1400),
        "packet too big with the egress MTU"
    );
    assert_eq!(
        &quote[8..24],
        &host.to_be_bytes(),
        "quoting the consumer's packet"
    );
    assert_eq!(p.counters().dropped(DropReason::FragNeeded), 1);
}
