//! IPv6 consumers of an IPv4 service through a dual-stack endpoint, on literal frames:
//! the consumer's packets leave as IPv4 from the SNAT address, the target's replies come
//! back as IPv6 from the endpoint's IPv6 address, every checksum right.

use std::net::Ipv6Addr;

use super::*;
use crate::wire::ipv6::Ipv6Packet;

pub(super) const HOST6: &str = "fd00:c1::10";
pub(super) const ENDPOINT6: &str = "fd00:c1::64";

pub(super) fn a6(s: &str) -> u128 {
    u128::from(s.parse::<Ipv6Addr>().unwrap())
}

pub(super) use super::ipv6::dual_endpoint_config as dual_config;

/// An Ethernet frame with an IPv6 packet from `src` to `dst` carrying `l4` (its checksum
/// filled in here) after the extension headers `ext` (the first's type, then the chain).
fn frame6(src: u128, dst: u128, proto: u8, hop: u8, ext: (u8, &[u8]), l4: Vec<u8>) -> Vec<u8> {
    frame6_from((MAC_C, CLIENT_MAC), (src, dst), proto, hop, ext, l4)
}

/// [`frame6`] between other MACs (`macs`: destination, source).
pub(super) fn frame6_from(
    macs: ([u8; 6], [u8; 6]),
    (src, dst): (u128, u128),
    proto: u8,
    hop: u8,
    ext: (u8, &[u8]),
    mut l4: Vec<u8>,
) -> Vec<u8> {
    let (first, ext) = ext;
    let csum_at = if proto == PROTO_TCP { 16 } else { 6 };
    l4[csum_at..csum_at + 2].fill(0);
    let c = crate::wire::icmpv6::l4_checksum_v6(src, dst, proto, &l4);
    l4[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(macs.0, macs.1, 0x86dd);
    f.extend_from_slice(&[0x6b, 0x80, 0, 0]); // traffic class 0xb8
    let payload = u16::try_from(ext.len() + l4.len()).unwrap();
    f.extend_from_slice(&payload.to_be_bytes());
    f.extend_from_slice(&[if ext.is_empty() { proto } else { first }, hop]);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&dst.to_be_bytes());
    f.extend_from_slice(ext);
    f.extend_from_slice(&l4);
    f
}

/// A TCP segment from the consumer to the endpoint's IPv6 address, hop limit 64.
pub(super) fn tcp6(sport: u16, dport: u16, flags: WireTcpFlags, seq: u32, ack: u32) -> Vec<u8> {
    let seg = tcp_seg(sport, dport, flags, seq, ack);
    frame6(a6(HOST6), a6(ENDPOINT6), PROTO_TCP, 64, (0, &[]), seg)
}

/// A TCP segment (no options, checksum left to [`frame6`]).
pub(super) fn tcp_seg(sport: u16, dport: u16, flags: WireTcpFlags, seq: u32, ack: u32) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    TcpRepr {
        src_port: sport,
        dst_port: dport,
        seq_number: seq,
        ack_number: ack,
        flags,
        window_len: 1000,
        urgent_at: 0,
    }
    .emit(&mut s, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0)
    .unwrap();
    s
}

pub(super) fn udp_dgram(sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; 8];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[4..6].copy_from_slice(&u16::try_from(8 + data.len()).unwrap().to_be_bytes());
    s.extend_from_slice(data);
    s
}

/// The IPv6 packet of a frame that left, its L4 checksum verified.
pub(super) fn ipv6_out(frame: &[u8]) -> (Ipv6Packet<&[u8]>, u8) {
    assert_eq!(&frame[12..14], &[0x86, 0xdd], "IPv6 left");
    let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
    let (src, dst) = (ip.src_addr_u128(), ip.dst_addr_u128());
    let c = crate::wire::icmpv6::l4_checksum_v6(src, dst, ip.next_header(), ip.payload());
    // A whole segment, its checksum field included, sums to 0xFFFF: the computation
    // over it (complemented) gives 0.
    assert_eq!(c, 0, "L4 checksum of {:02x?}", ip.payload());
    let hop = ip.hop_limit();
    (ip, hop)
}

#[test]
fn an_ipv6_consumer_reaches_an_ipv4_target_and_gets_ipv6_replies() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let syn = tcp6(40000, 80, syn(), 7, 0);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn), 0));
    assert_eq!(port, PROVIDER_PORT);
    assert_eq!(&out[12..14], &[0x08, 0x00], "IPv4 to the target");
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    assert_eq!(ip.src_addr(), SNAT);
    assert!(
        [Ipv4Addr::new(10, 2, 0, 11), Ipv4Addr::new(10, 2, 0, 12)].contains(&ip.dst_addr()),
        "a target: {}",
        ip.dst_addr()
    );
    assert_eq!((ip.ttl(), ip.dont_frag(), out[15]), (63, true, 0xb8));
    assert_eq!(usize::from(ip.total_len()), 40);
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
    assert_eq!((seg.dst_port(), seg.seq_number()), (8080, 7));
    let (target, snat_port) = (ip.dst_addr(), seg.src_port());

    // The SYN-ACK comes back as IPv6, from the endpoint's port 80 to the consumer.
    let synack = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        100,
        8,
        MAC_P,
        TARGET_MAC,
    );
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&synack), 1));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(
        (&back[..6], &back[6..12]),
        (&CLIENT_MAC[..], &MAC_C[..]),
        "to the consumer's MAC (its neighbour entry)"
    );
    let (ip6, hop) = ipv6_out(&back);
    assert_eq!(
        (ip6.src_addr_u128(), ip6.dst_addr_u128(), hop),
        (ep, host, 63)
    );
    assert_eq!(ip6.next_header(), PROTO_TCP);
    let seg = TcpPacket::new_checked(ip6.payload()).unwrap();
    assert_eq!((seg.src_port(), seg.dst_port()), (80, 40000));
    assert_eq!((seg.seq_number(), seg.ack_number()), (100, 8));
    assert_eq!(usize::from(ip6.payload_len()), 20);

    // The handshake completes; a data segment with a hop-by-hop header goes through.
    let ack = tcp6(40000, 80, WireTcpFlags::ACK, 8, 101);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ack), 2));
    let mut seg = tcp_seg(40000, 80, WireTcpFlags::ACK | WireTcpFlags::PSH, 8, 101);
    seg.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    let hbh = [PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]; // PadN
    let data = frame6(host, ep, PROTO_TCP, 64, (0, &hbh), seg);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&data), 3));
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    assert_eq!(
        usize::from(ip.total_len()),
        20 + 20 + 18,
        "the extension is gone"
    );
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
    assert_eq!(seg.payload(), b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(p.flows().len(), 1);
    assert_eq!(p.counters().new_flows, 1);
}

#[test]
fn udp_of_an_ipv6_consumer_is_translated_and_a_reply_without_checksum_gets_one() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let d = frame6(
        host,
        ep,
        PROTO_UDP,
        64,
        (0, &[]),
        udp_dgram(5353, 9000, b"hello"),
    );
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&d), 0));
    assert_eq!(port, PROVIDER_PORT);
    let ip = ip_of(&out);
    assert!(ip.verify_checksum());
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum(ip.src_addr(), ip.dst_addr()));
    assert_eq!((u.dst_port(), u.payload()), (9000, &b"hello"[..]));
    let (target, snat_port) = (ip.dst_addr(), u.src_port());
    for zero_checksum in [false, true] {
        let mut reply = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
        if zero_checksum {
            reply[14 + 26..14 + 28].fill(0);
        }
        let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&reply), 1));
        assert_eq!(port, CONSUMER_PORT);
        let (ip6, _) = ipv6_out(&back);
        assert_eq!((ip6.src_addr_u128(), ip6.dst_addr_u128()), (ep, host));
        let u = ip6.payload();
        assert_eq!(&u[0..4], &[0x23, 0x28, 0x14, 0xe9], "ports 9000 -> 5353");
        assert_ne!(&u[6..8], &[0, 0], "IPv6 requires a UDP checksum");
        assert_eq!(&u[8..], b"ping");
    }
}

#[test]
fn what_ipv6_to_ipv4_cannot_or_may_not_translate_is_dropped_and_counted() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let drops = |p: &Pipeline<VecFrame>, r| p.counters().dropped(r);
    // No listener on the port; a source that cannot be a consumer's.
    let f = tcp6(40003, 81, syn(), 1, 0);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0);
    assert_eq!(drops(&p, DropReason::NoListener), 1);
    for src in [
        "::1",
        "ff02::1",
        "::ffff:10.1.0.10",
        "fd00:c1::1",
        ENDPOINT6,
    ] {
        let f = frame6(
            a6(src),
            ep,
            PROTO_TCP,
            64,
            (0, &[]),
            tcp_seg(40004, 80, syn(), 1, 0),
        );
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0);
    }
    assert_eq!(drops(&p, DropReason::MartianSource), 5);
    // TCP to the appliance's own IPv6 address or another of the prefix is not served.
    for dst in ["fd00:c1::1", "fd00:c1::99"] {
        let f = frame6(
            host,
            a6(dst),
            PROTO_TCP,
            64,
            (0, &[]),
            tcp_seg(40005, 80, syn(), 1, 0),
        );
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0);
    }
    assert_eq!(drops(&p, DropReason::Ipv6NotServed), 2);
    assert_eq!(p.flows().len(), 0);
}

#[test]
fn a_packet_whose_address_is_not_its_flows_consumers_is_refused() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let syn_f = tcp6(40000, 80, syn(), 7, 0);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn_f), 0));
    let (id, _) = p.flows().iter().next().unwrap();
    // Another consumer whose address folds to the same key: simulated by changing what
    // the flow remembers.
    let mut side = *p.consumers6.get(id).unwrap();
    side.consumer ^= 1;
    p.consumers6.set(id, side);
    let again = tcp6(40000, 80, WireTcpFlags::ACK, 8, 1);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&again), 1);
    assert_eq!(p.counters().dropped(DropReason::Ipv6FlowCollision), 1);
}

#[test]
fn access_rules_apply_to_ipv6_consumers() {
    use mgmt::model::{IngressRule, RuleProtocol};
    let config = dual_config();
    let tcp80 = IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: 80,
        to_port: 80,
        cidr: "0.0.0.0/0".parse().unwrap(),
    };
    let snap = build(&config, &state_with_group(&config, vec![tcp80]));
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let f = tcp6(40000, 80, syn(), 7, 0);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0);
    assert_eq!(
        p.counters().dropped(DropReason::SecurityGroup),
        1,
        "an IPv4 prefix holds no IPv6 consumer"
    );
    assert_eq!(p.flows().len(), 0);

    // A rule with an IPv6 prefix admits the consumer in it, on its ports only.
    let v6 = |cidr: &str, port| IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: port,
        to_port: port,
        cidr: cidr.parse().unwrap(),
    };
    let state = state_with_group(&config, vec![v6("fd00:c1::/64", 80), v6("::/0", 81)]);
    let snap = build(&config, &state);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let (port, _) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    assert_eq!(port, PROVIDER_PORT, "admitted by fd00:c1::/64");
    let other = frame6(
        a6("fd00:c2::10"),
        a6(ENDPOINT6),
        PROTO_TCP,
        64,
        (0, &[]),
        tcp_seg(40001, 80, syn(), 1, 0),
    );
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&other), 0);
    assert_eq!(
        p.counters().dropped(DropReason::SecurityGroup),
        1,
        "outside it"
    );

    // The endpoint's policy reads IPv6 prefixes too.
    let mut state = config.state();
    state.endpoints[0].policy = Some(serde_json::json!({"Statement": [
        {"Effect": "Allow", "SourceCidr": "fd00:c1::/64"},
        {"Effect": "Deny", "SourceCidr": "fd00:c1::10/128", "Port": 80},
    ]}));
    let snap = build(&config, &state);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0);
    assert_eq!(p.counters().dropped(DropReason::Policy), 1, "the /128 deny");
}

#[test]
fn a_reply_that_would_not_fit_once_translated_asks_the_target_for_less() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let syn_f = tcp6(40000, 80, syn(), 7, 0);
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn_f), 0));
    let ip = ip_of(&out);
    let target = ip.dst_addr();
    let snat_port = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    // 1500 bytes of IPv4 with DF: 1520 as IPv6, over the consumer port's 1500.
    let mut big = tcp(
        target,
        8080,
        SNAT,
        snat_port,
        WireTcpFlags::ACK,
        100,
        8,
        MAC_P,
        TARGET_MAC,
    );
    let pad = 1500 - 40;
    big.extend(std::iter::repeat_n(0u8, pad));
    {
        let l3 = &mut big[14..];
        l3[2..4].copy_from_slice(&1500u16.to_be_bytes());
        l3[6] = 0x40;
        l3[10..12].fill(0);
        let c = !crate::wire::checksum::fixed_header_sum(l3[..20].try_into().unwrap());
        l3[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let (port, icmp) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&big), 1));
    assert_eq!(port, PROVIDER_PORT, "back to the target");
    let ip = ip_of(&icmp);
    assert_eq!(ip.protocol(), IpProtocol::ICMP);
    let m = ip.payload();
    assert_eq!((m[0], m[1]), (3, 4), "fragmentation needed");
    assert_eq!(
        u16::from_be_bytes([m[6], m[7]]),
        1480,
        "what fits once translated"
    );
}

/// An ICMPv6 message of `typ`/`code` and the word `word` from `src` to `dst` quoting
/// `quoted` (an IPv6 packet), in an Ethernet frame from the client's MAC.
fn icmp6_error(src: u128, dst: u128, msg: (u8, u8, u32), quoted: &[u8]) -> Vec<u8> {
    icmp6_error_from((MAC_C, CLIENT_MAC), (src, dst), msg, quoted)
}

/// [`icmp6_error`] between other MACs (`macs`: destination, source).
pub(super) fn icmp6_error_from(
    macs: ([u8; 6], [u8; 6]),
    (src, dst): (u128, u128),
    (typ, code, word): (u8, u8, u32),
    quoted: &[u8],
) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend_from_slice(&word.to_be_bytes());
    m.extend_from_slice(quoted);
    crate::wire::icmpv6::Icmpv6Packet::new_unchecked(&mut m[..]).fill_checksum(src, dst);
    let mut f = eth(macs.0, macs.1, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&dst.to_be_bytes());
    f.extend_from_slice(&m);
    f
}

/// The ICMPv6 message of a frame that left: (type, code, word, what it quotes).
pub(super) fn icmp6_of(frame: &[u8]) -> (u8, u8, u32, Vec<u8>) {
    let (ip, _) = ipv6_out(frame);
    assert_eq!(ip.next_header(), 58, "ICMPv6");
    let m = ip.payload();
    (
        m[0],
        m[1],
        u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
        m[8..].to_vec(),
    )
}

#[test]
fn an_ipv6_consumer_gets_time_exceeded_and_rsts_in_ipv6() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let own = a6("fd00:c1::1");
    let f = frame6(
        host,
        ep,
        PROTO_TCP,
        1,
        (0, &[]),
        tcp_seg(40001, 80, syn(), 1, 0),
    );
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&out[..6], &CLIENT_MAC, "back to the sender");
    let (ip, _) = ipv6_out(&out);
    assert_eq!((ip.src_addr_u128(), ip.dst_addr_u128()), (own, host));
    let (typ, code, _, quote) = icmp6_of(&out);
    assert_eq!((typ, code), (3, 0), "time exceeded in transit");
    assert_eq!(quote, f[14..].to_vec(), "the whole packet, as it came");
    assert_eq!(p.counters().dropped(DropReason::TtlExceeded), 1);
    assert_eq!(p.counters().icmp_errors_sent, 1);

    // A segment of no flow: a RST from the endpoint's IPv6 address.
    let f = tcp6(40002, 80, WireTcpFlags::ACK, 1, 77);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0));
    assert_eq!(port, CONSUMER_PORT);
    let (ip, _) = ipv6_out(&out);
    assert_eq!((ip.src_addr_u128(), ip.dst_addr_u128()), (ep, host));
    assert_eq!(ip.next_header(), PROTO_TCP);
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.rst());
    assert_eq!(
        (seg.src_port(), seg.dst_port(), seg.seq_number()),
        (80, 40002, 77)
    );
    assert_eq!(p.counters().rst_sent, 1);
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 1);
    assert_eq!(p.flows().len(), 0);
}

#[test]
fn a_consumer_packet_too_big_once_translated_gets_packet_too_big() {
    let config = dual_config();
    let snap = snapshot_with_mtus(&config, [1500, 1400]);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let syn_f = tcp6(40000, 80, syn(), 7, 0);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&syn_f), 0));
    // 1420 bytes of IPv6 are 1400 of IPv4: they fit; 1421 do not.
    for (len, fits) in [(1420usize, true), (1421, false)] {
        let mut seg = tcp_seg(40000, 80, WireTcpFlags::ACK, 8, 1);
        seg.resize(len - 40, 0x61);
        let f = frame6(host, ep, PROTO_TCP, 64, (0, &[]), seg);
        let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1));
        if fits {
            assert_eq!(port, PROVIDER_PORT);
            assert_eq!(usize::from(ip_of(&out).total_len()), 1400);
            continue;
        }
        assert_eq!(port, CONSUMER_PORT);
        let (typ, code, mtu, quote) = icmp6_of(&out);
        assert_eq!((typ, code, mtu), (2, 0, 1420), "packet too big, what fits");
        assert_eq!(quote.len(), 1280 - 48, "as much as fits in 1280 bytes");
        assert_eq!(quote[..], f[14..14 + 1232]);
    }
    assert_eq!(p.counters().dropped(DropReason::FragNeeded), 1);
}

/// A UDP flow of the IPv6 consumer: (the consumer's datagram, the target, the SNAT port,
/// the datagram as it left for the target, the target's reply as it left for the
/// consumer).
fn udp6_flow(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
) -> (Vec<u8>, Ipv4Addr, u16, Vec<u8>, Vec<u8>) {
    let d = frame6(
        a6(HOST6),
        a6(ENDPOINT6),
        PROTO_UDP,
        64,
        (0, &[]),
        udp_dgram(5353, 9000, b"hello"),
    );
    let (_, out) = tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&d), 0));
    let ip = ip_of(&out);
    let (target, snat_port) = (
        ip.dst_addr(),
        UdpPacket::new_checked(ip.payload()).unwrap().src_port(),
    );
    let reply = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let (_, back) = tx(p.process(snap, PROVIDER_PORT, VecFrame::new(&reply), 1));
    (d, target, snat_port, out, back)
}

#[test]
fn provider_icmp_errors_about_an_ipv6_consumers_flow_reach_it_as_icmpv6() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let (sent, target, _, out, _) = udp6_flow(&mut p, &snap);
    let router = Ipv4Addr::new(10, 2, 0, 254);
    for ((t4, c4, mtu), want) in [
        ((3u8, 4u8, 1400u16), (2u8, 0u8, 1420u32)),
        ((3, 3, 0), (1, 4, 0)),
        ((11, 0, 0), (3, 0, 0)),
        ((3, 2, 0), (4, 1, 6)),
    ] {
        let e = icmp_error(router, SNAT, t4, c4, mtu, &out, MAC_P, TARGET_MAC);
        let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&e), 2));
        assert_eq!(port, CONSUMER_PORT, "ICMPv4 {t4}/{c4}");
        assert_eq!(&back[..6], &CLIENT_MAC);
        let (ip, hop) = ipv6_out(&back);
        assert_eq!(
            (ip.src_addr_u128(), ip.dst_addr_u128(), hop),
            (ep, host, 63)
        );
        let (typ, code, word, quote) = icmp6_of(&back);
        assert_eq!((typ, code, word), want, "ICMPv4 {t4}/{c4}");
        // The quote is the consumer's own datagram: its header as far as a translation
        // keeps it (no flow label, the hop limit the target-bound packet had) and its
        // UDP header, checksum included, byte for byte.
        let q = Ipv6Packet::new_unchecked(&quote[..]);
        assert_eq!((q.src_addr_u128(), q.dst_addr_u128()), (host, ep));
        assert_eq!(
            (q.next_header(), q.payload_len(), q.hop_limit()),
            (PROTO_UDP, 13, 63)
        );
        assert_eq!(
            quote[40..48],
            sent[14 + 40..14 + 48],
            "the consumer's UDP header"
        );
    }
    assert_eq!(p.counters().icmp_errors_translated, 4);
    // An error about no flow of ours, and one with no counterpart, go no further.
    let e = icmp_error(router, SNAT, 3, 14, 0, &out, MAC_P, TARGET_MAC);
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&e), 3);
    assert_eq!(p.counters().dropped(DropReason::IcmpUnsupported), 1);
    let _ = target;
}

#[test]
fn consumer_icmpv6_errors_about_a_reply_reach_the_target_as_icmpv4() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let ep = a6(ENDPOINT6);
    let (_, target, snat_port, _, back) = udp6_flow(&mut p, &snap);
    let sent = udp(target, 9000, SNAT, snat_port, MAC_P, TARGET_MAC);
    let router = a6("fd00:c1::fe");
    for ((t6, c6, mtu), want) in [
        ((2u8, 0u8, 1300u32), (3u8, 4u8, 1280u16)),
        ((1, 4, 0), (3, 3, 0)),
        ((1, 0, 0), (3, 1, 0)),
        ((3, 0, 0), (11, 0, 0)),
    ] {
        let e = icmp6_error(router, ep, (t6, c6, mtu), &back[14..]);
        let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 2));
        assert_eq!(port, PROVIDER_PORT, "ICMPv6 {t6}/{c6}");
        assert_eq!(&out[..6], &TARGET_MAC);
        let ip = ip_of(&out);
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (SNAT, target, 63));
        let msg = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(msg.verify_checksum());
        assert_eq!((msg.msg_type().0, msg.code(), msg.next_hop_mtu()), want);
        let q = msg.quote().unwrap();
        assert!(q.verify_checksum(), "quoted header consistent");
        assert_eq!(
            (q.src_addr(), q.dst_addr()),
            (target, SNAT),
            "as the target sent it"
        );
        assert_eq!(usize::from(q.total_len()), 20 + 8 + 4);
        assert_eq!(
            q.payload()[..8],
            sent[14 + 20..14 + 28],
            "the target's UDP header"
        );
    }
    assert_eq!(p.counters().icmp_errors_translated, 4);
    // A quote of no reply of ours: nothing goes to any target.
    let mut other = back[14..].to_vec();
    other[40..42].copy_from_slice(&81u16.to_be_bytes());
    let e = icmp6_error(router, ep, (2, 0, 1300), &other);
    let v = p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 3);
    assert!(!matches!(v, Verdict::Tx(..)));
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 1);
}

#[test]
fn ending_an_ipv6_consumers_flow_resets_it_in_ipv6() {
    let mut config = dual_config();
    let mut handles = crate::tables::snapshot::Handles::default();
    let build = build_versioned;
    let snap = build(&config, 1, &mut handles);
    let mut p = pipeline_on(&config, &snap, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    establish6(&mut p, &snap, 0);
    p.drain_emitted().for_each(drop);

    config.endpoints[0].state = mgmt::model::EndpointState::Rejected;
    let next = build(&config, 2, &mut handles);
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(p.flows().len(), 0, "the flow ended");
    let out: Vec<(u16, Vec<u8>)> = p
        .drain_emitted()
        .map(|(port, f)| (port, f.bytes().to_vec()))
        .collect();
    let to_consumer: Vec<&Vec<u8>> = out
        .iter()
        .filter(|(port, _)| *port == CONSUMER_PORT)
        .map(|(_, b)| b)
        .filter(|b| b[12..14] == [0x86, 0xdd] && b[14 + 6] == PROTO_TCP)
        .collect();
    assert_eq!(
        to_consumer.len(),
        1,
        "a RST in IPv6 to the consumer: {out:02x?}"
    );
    let b = to_consumer[0];
    assert_eq!(&b[..6], &CLIENT_MAC);
    let (ip, _) = ipv6_out(b);
    assert_eq!((ip.src_addr_u128(), ip.dst_addr_u128()), (ep, host));
    let seg = TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(seg.rst());
    assert_eq!(
        (seg.src_port(), seg.dst_port(), seg.seq_number()),
        (80, 40000, 101)
    );
    assert_eq!(p.counters().rst_sent, 2, "and one to the target");
}

/// The IPv6 packet of a frame cut into fragments of at most `chunk` bytes (a multiple of
/// 8) of its payload, identification `id`, in order.
pub(super) fn fragments6_of(frame: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let (head, payload) = frame.split_at(14 + 40);
    let next = head[14 + 6];
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut f = head.to_vec();
            f[14 + 6] = 44;
            let len = u16::try_from(8 + piece.len()).unwrap();
            f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
            let off = u16::try_from(i * chunk).unwrap() | u16::from(i != last);
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&off.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(piece);
            f
        })
        .collect()
}

/// Rebuilds the datagram of IPv6 fragments (any order) as the consumer would: (source,
/// destination, identification, the L4 segment).
pub(super) fn reassemble6(frames: &[Vec<u8>]) -> (u128, u128, u32, Vec<u8>) {
    let mut parts: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut seen = None;
    let mut ended = false;
    for f in frames {
        assert!(
            f.len() - 14 <= 1500,
            "each piece fits the port: {}",
            f.len()
        );
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.next_header(), 44, "a fragment");
        let p = ip.payload();
        assert_eq!(p[0], PROTO_UDP);
        let off_m = u16::from_be_bytes([p[2], p[3]]);
        let id = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        let who = (ip.src_addr_u128(), ip.dst_addr_u128(), id);
        assert!(seen.is_none_or(|s| s == who), "fragments of one datagram");
        seen = Some(who);
        ended |= off_m & 1 == 0;
        parts.push((usize::from(off_m & 0xfff8), p[8..].to_vec()));
    }
    assert!(ended, "one piece ends the datagram");
    parts.sort();
    let mut seg = Vec::new();
    for (at, p) in parts {
        assert_eq!(at, seg.len(), "no hole, no overlap");
        seg.extend_from_slice(&p);
    }
    let (src, dst, id) = seen.unwrap();
    (src, dst, id, seg)
}

/// A UDP datagram of `n` payload bytes from the consumer to the endpoint's IPv6 address.
fn big_udp6(sport: u16, n: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..n).map(|i| u8::try_from(i % 251).unwrap()).collect();
    let mut d = udp_dgram(sport, 9000, &data);
    let len = u16::try_from(d.len()).unwrap();
    d[4..6].copy_from_slice(&len.to_be_bytes());
    frame6(a6(HOST6), a6(ENDPOINT6), PROTO_UDP, 64, (0, &[]), d)
}

#[test]
fn fragments_of_an_ipv6_consumer_leave_as_ipv4_fragments_of_one_datagram() {
    use super::fragments::{burst, check_udp, reassemble, sent};
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let whole = big_udp6(5400, 4000);
    let frags = fragments6_of(&whole, 1448, 0x1234_5678);
    assert_eq!(frags.len(), 3);
    // In order, then last first (the later ones wait for the first).
    for (round, order) in [[0usize, 1, 2], [2, 1, 0]].iter().enumerate() {
        let id = 0x1234_5678 + u32::try_from(round).unwrap();
        let frags = fragments6_of(&whole, 1448, id);
        let input: Vec<Vec<u8>> = order.iter().map(|&i| frags[i].clone()).collect();
        let out = sent(burst(&mut p, &snap, CONSUMER_PORT, &input, 10));
        assert_eq!(out.len(), 3, "round {round}: {:?}", p.counters());
        for f in &out {
            let ip = ip_of(f);
            assert_eq!(
                ip.ident(),
                u16::try_from(id & 0xffff).unwrap(),
                "the low 16 bits"
            );
            assert!(!ip.dont_frag());
            assert_eq!(ip.protocol(), IpProtocol::UDP);
        }
        let (src, dst, seg) = reassemble(&out);
        assert_eq!(src, SNAT);
        let udp = check_udp(src, dst, &seg);
        assert_eq!((udp.dst_port(), udp.payload().len()), (9000, 4000));
        assert_eq!(udp.payload(), &whole[14 + 40 + 8..]);
    }
    assert_eq!(p.flows().len(), 1, "one flow for both datagrams");
    assert_eq!(p.counters().fragments, 6);
}

#[test]
fn a_fragmented_reply_reaches_the_ipv6_consumer_as_fragments_that_fit() {
    use super::fragments::{burst, fragments_of, sent};
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let (_, target, snat_port, _, _) = udp6_flow(&mut p, &snap);
    // 4000 bytes back as IPv4 fragments of 1480: each would be 1528 bytes as IPv6.
    let reply = udp_sized(
        target, 9000, SNAT, snat_port, 4000, false, MAC_P, TARGET_MAC,
    );
    let frags = fragments_of(&reply, 1480, 0x4242);
    let out = sent(burst(&mut p, &snap, PROVIDER_PORT, &frags, 10));
    let mut pieces = out;
    pieces.extend(p.drain_emitted().map(|(port, f)| {
        assert_eq!(port, CONSUMER_PORT);
        f.bytes().to_vec()
    }));
    assert!(pieces.len() > frags.len(), "cut to fit: {}", pieces.len());
    for f in &pieces {
        assert_eq!(&f[..6], &CLIENT_MAC);
    }
    let (src, dst, id, seg) = reassemble6(&pieces);
    assert_eq!((src, dst, id), (ep, host, 0x4242));
    assert_eq!(
        crate::wire::icmpv6::l4_checksum_v6(src, dst, PROTO_UDP, &seg),
        0,
        "the datagram's UDP checksum, over IPv6"
    );
    assert_eq!(&seg[0..4], &[0x23, 0x28, 0x14, 0xe9], "ports 9000 -> 5353");
    assert_eq!(seg[8..], reply[14 + 28..]);
    assert!(p.counters().fragments_made >= 1);

    // The consumer's router cannot deliver the first piece: the target hears of the
    // fragment it sent, in ICMPv4 (the fragment header is IPv4's id and MF again).
    let first = pieces
        .iter()
        .find(|f| f[14 + 6] == 44 && f[14 + 42] & 0xf8 == 0 && f[14 + 43] & 0xf8 == 0)
        .expect("the first piece");
    let e = icmp6_error(a6("fd00:c1::fe"), ep, (3, 0, 0), &first[14..]);
    let translated = p.counters().icmp_errors_translated;
    let (port, got) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&e), 15));
    assert_eq!(port, PROVIDER_PORT);
    let ip = ip_of(&got);
    assert_eq!((ip.src_addr(), ip.dst_addr()), (SNAT, target));
    let msg = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(msg.verify_checksum());
    assert_eq!((msg.msg_type().0, msg.code()), (11, 0));
    let q = msg.quote().unwrap();
    assert!(q.verify_checksum(), "quoted header consistent");
    assert_eq!((q.src_addr(), q.dst_addr()), (target, SNAT));
    assert_eq!(
        (q.ident(), q.more_frags(), q.dont_frag()),
        (0x4242, true, false)
    );
    assert_eq!(
        q.payload()[..4],
        reply[14 + 20..14 + 24],
        "the target's ports"
    );
    assert_eq!(p.counters().icmp_errors_translated, translated + 1);

    // A whole reply without DF that would not fit is cut the same way; one with DF
    // asks the target for less instead.
    let reply = udp_sized(
        target, 9000, SNAT, snat_port, 1472, false, MAC_P, TARGET_MAC,
    );
    let mut pieces = sent(burst(
        &mut p,
        &snap,
        PROVIDER_PORT,
        std::slice::from_ref(&reply),
        20,
    ));
    pieces.extend(p.drain_emitted().map(|(_, f)| f.bytes().to_vec()));
    assert_eq!(pieces.len(), 2);
    let (_, _, _, seg) = reassemble6(&pieces);
    assert_eq!(seg[8..], reply[14 + 28..]);
    let with_df = udp_sized(target, 9000, SNAT, snat_port, 1472, true, MAC_P, TARGET_MAC);
    let (port, icmp) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&with_df), 30));
    assert_eq!(
        (port, icmp[14 + 20]),
        (PROVIDER_PORT, 3),
        "fragmentation needed"
    );

    // The first fragment of a reply without UDP checksum cannot get one: dropped.
    let mut frags = fragments_of(&reply_without_checksum(target, snat_port), 1000, 7);
    frags.truncate(1);
    burst(&mut p, &snap, PROVIDER_PORT, &frags, 40);
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotTranslated), 1);
}

fn reply_without_checksum(target: Ipv4Addr, snat_port: u16) -> Vec<u8> {
    let mut r = udp_sized(
        target, 9000, SNAT, snat_port, 2000, false, MAC_P, TARGET_MAC,
    );
    r[14 + 26..14 + 28].fill(0);
    r
}

/// A UDP fragment of the IPv6 consumer to the dual-stack endpoint that cannot be
/// translated: a fragment header, then destination options, then UDP (its offsets would
/// not line up in IPv4).
fn untranslatable_fragment6() -> Vec<u8> {
    let ext = [60, 0, 0, 1, 0, 0, 0, 5, PROTO_UDP, 0, 1, 4, 0, 0, 0, 0];
    frame6(
        a6(HOST6),
        a6(ENDPOINT6),
        PROTO_UDP,
        64,
        (44, &ext),
        udp_dgram(1, 9000, b"x"),
    )
}

#[test]
fn an_ipv6_fragment_whose_l4_header_is_not_first_is_not_translated() {
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let f = untranslatable_fragment6();
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0);
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotTranslated), 1);
    assert_eq!(p.flows().len(), 0);
}

/// A TCP connection of the IPv6 consumer from port 40000, its handshake done at `now`
/// (the target's ISN 100, the consumer's 7): (the target, the SNAT port).
/// The target's SYN-ACK (seq 100, ack 8) to the SYN that left as `out`, from its
/// port 8080 to the SNAT address and port.
pub(super) fn synack_to(out: &[u8]) -> Vec<u8> {
    let ip = ip_of(out);
    let snat_port = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    let flags = WireTcpFlags::SYN | WireTcpFlags::ACK;
    tcp(
        ip.dst_addr(),
        8080,
        SNAT,
        snat_port,
        flags,
        100,
        8,
        MAC_P,
        TARGET_MAC,
    )
}

pub(super) fn establish6(p: &mut Pipeline<VecFrame>, snap: &Snapshot, now: u64) -> (Ipv4Addr, u16) {
    let syn_f = tcp6(40000, 80, syn(), 7, 0);
    let (_, out) = tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&syn_f), now));
    let ip = ip_of(&out);
    let target = ip.dst_addr();
    let snat_port = TcpPacket::new_checked(ip.payload()).unwrap().src_port();
    tx(p.process(
        snap,
        PROVIDER_PORT,
        VecFrame::new(&synack_to(&out)),
        now + 1,
    ));
    let ack = tcp6(40000, 80, WireTcpFlags::ACK, 8, 101);
    tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&ack), now + 2));
    (target, snat_port)
}

/// An IPv6 endpoint (no IPv4 address) serves IPv6 consumers exactly as a dual-stack one;
/// the stand-in address its flows are keyed by reaches nothing from IPv4, and its old
/// IPv4 address is nobody's.
#[test]
fn an_ipv6_endpoint_serves_ipv6_consumers_and_no_ipv4() {
    let mut config = dual_config();
    config.endpoints[0].ip = None;
    config.endpoints[0].ip_address_type = mgmt::model::IpAddressType::Ipv6;
    config.validate().unwrap();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (host, ep) = (a6(HOST6), a6(ENDPOINT6));
    let e = snap.endpoints().next().unwrap();
    let stand_in = e.ip;
    assert!(stand_in >= crate::tables::snapshot::IPV6_ONLY_BASE);
    let first = tcp6(40000, 80, syn(), 7, 0);
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&first), 0));
    assert_eq!(port, PROVIDER_PORT);
    let ip = ip_of(&out);
    assert_eq!(ip.src_addr(), SNAT);
    let (port, back) = tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&synack_to(&out)), 1));
    assert_eq!(port, CONSUMER_PORT);
    let (ip6, _) = ipv6_out(&back);
    assert_eq!((ip6.src_addr_u128(), ip6.dst_addr_u128()), (ep, host));
    // IPv4 to the stand-in or to the address it does not have: nobody's.
    for dst in [Ipv4Addr::from(stand_in), ENDPOINT] {
        let f = tcp(CLIENT, 40001, dst, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
        assert!(
            matches!(
                p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 2),
                Verdict::Done
            ),
            "IPv4 to {dst} went somewhere"
        );
    }
    assert_eq!(p.counters().new_flows, 1);
    assert_eq!(snap.local(0, stand_in), None);
    assert_eq!(snap.local(0, u32::from(ENDPOINT)), None);
}

#[test]
fn the_consumer_fold_follows_the_pipelines_seed() {
    // The keys are kept between packets: a seed changed since (as the HA tests do to a
    // peer) must not leave packets folded under the old one.
    let config = dual_config();
    let (mut p, _snap) = pipeline(&config, 1, 0);
    let host = a6(HOST6);
    assert_eq!(
        p.fold_consumer(host),
        crate::graph::nat64::fold(p.settings.flow_hash_seed, host)
    );
    p.set_flow_hash_seed(p.settings.flow_hash_seed ^ 0x5555);
    assert_eq!(
        p.fold_consumer(host),
        crate::graph::nat64::fold(p.settings.flow_hash_seed, host)
    );
}

#[test]
fn a_refused_ipv6_packet_is_logged_from_its_ipv6_source() {
    // Dropped in the IPv6 node after it found the endpoint, before the flow nodes
    // (an untranslatable fragment): the reject record names the consumer's IPv6 address,
    // not whatever IPv4 source the context held from an earlier packet.
    use crate::graph::flowlog::FlowLogRecord;
    let config = dual_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let q = std::sync::Arc::new(crossbeam::queue::ArrayQueue::new(64));
    p.set_flow_log(std::sync::Arc::clone(&q), 1000);
    let v4 = udp(CLIENT, 6000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&v4), 0));
    let f = untranslatable_fragment6();
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 1);
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotTranslated), 1);
    p.poll(&snap, 1001);
    let got: Vec<FlowLogRecord> = std::iter::from_fn(|| q.pop()).collect();
    assert!(
        got.iter().any(|r| matches!(r, FlowLogRecord::Reject { reason: DropReason::Ipv6NotTranslated, src, .. } if *src == std::net::IpAddr::V6(Ipv6Addr::from(a6(HOST6))))),
        "{got:?}"
    );
}
