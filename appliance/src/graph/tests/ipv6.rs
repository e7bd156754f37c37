//! The attachment's own IPv6 address on literal frames: neighbour solicitations and echo
//! requests answered, everything else of IPv6 dropped and counted.

use std::net::Ipv6Addr;

use super::*;
use crate::wire::icmpv6::{self, Icmpv6Packet, Icmpv6Type, NdiscRepr};
use crate::wire::ipv6::Ipv6Packet;

const OWN: &str = "fd00:c1::1";
const HOST: &str = "fd00:c1::10";

fn a(s: &str) -> u128 {
    u128::from(s.parse::<Ipv6Addr>().unwrap())
}

/// The demo with an IPv6 prefix on the consumer attachment only.
fn dual() -> (Pipeline<VecFrame>, Snapshot) {
    let mut config = Config::embedded_default();
    config.vpcs[0].address6 = Some(format!("{OWN}/64").parse().unwrap());
    pipeline(&config, 1, 0)
}

/// An Ethernet frame of an IPv6 packet carrying `icmp` (checksummed here).
fn frame6(dst_mac: [u8; 6], src: u128, dst: u128, hop: u8, mut icmp: Vec<u8>) -> Vec<u8> {
    Icmpv6Packet::new_unchecked(&mut icmp[..]).fill_checksum(src, dst);
    let mut f = eth(dst_mac, CLIENT_MAC, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&u16::try_from(icmp.len()).unwrap().to_be_bytes());
    f.extend_from_slice(&[58, hop]);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&dst.to_be_bytes());
    f.extend_from_slice(&icmp);
    f
}

fn solicit(target: u128, lladdr: Option<[u8; 6]>) -> Vec<u8> {
    let mut m = vec![0u8; 32];
    let n = NdiscRepr::Solicit {
        target,
        source_lladdr: lladdr.map(EthernetAddress),
    }
    .emit(&mut m, 0, 0)
    .unwrap();
    m.truncate(n);
    m
}

fn advert(target: u128, solicited: bool, lladdr: Option<[u8; 6]>) -> Vec<u8> {
    let mut m = vec![0u8; 32];
    let n = NdiscRepr::Advert {
        router: false,
        solicited,
        override_: true,
        target,
        target_lladdr: lladdr.map(EthernetAddress),
    }
    .emit(&mut m, 0, 0)
    .unwrap();
    m.truncate(n);
    m
}

fn echo(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut m = vec![128, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    m
}

fn group_mac(addr: u128) -> [u8; 6] {
    icmpv6::multicast_mac(addr).0
}

/// The IPv6 header's (src, dst, hop limit) and its ICMPv6 message, checksum verified.
fn reply_of(frame: &[u8]) -> (u128, u128, u8, Vec<u8>) {
    assert_eq!(&frame[12..14], &[0x86, 0xdd]);
    let ip = Ipv6Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.next_header(), 58);
    let (src, dst) = (ip.src_addr_u128(), ip.dst_addr_u128());
    let msg = ip.payload().to_vec();
    assert!(Icmpv6Packet::new_checked(&msg[..])
        .unwrap()
        .verify_checksum(src, dst));
    (src, dst, ip.hop_limit(), msg)
}

#[test]
fn a_solicitation_for_the_own_address_is_advertised_back() {
    let (mut p, snap) = dual();
    let (own, host) = (a(OWN), a(HOST));
    let ns = frame6(
        group_mac(icmpv6::solicited_node(own)),
        host,
        icmpv6::solicited_node(own),
        255,
        solicit(own, Some(CLIENT_MAC)),
    );
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ns), 0));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!((&out[..6], &out[6..12]), (&CLIENT_MAC[..], &MAC_C[..]));
    let (src, dst, hop, msg) = reply_of(&out);
    assert_eq!((src, dst, hop), (own, host, 255));
    let na = NdiscRepr::parse(&Icmpv6Packet::new_checked(&msg[..]).unwrap()).unwrap();
    assert_eq!(
        na,
        NdiscRepr::Advert {
            router: false,
            solicited: true,
            override_: true,
            target: own,
            target_lladdr: Some(EthernetAddress(MAC_C)),
        }
    );
    assert_eq!(p.counters().nd_advertisements, 1);

    // Address detection: from ::, no link-layer option; the answer goes to all nodes.
    let dad = frame6(
        group_mac(icmpv6::solicited_node(own)),
        0,
        icmpv6::solicited_node(own),
        255,
        solicit(own, None),
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&dad), 0));
    assert_eq!(&out[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    let (src, dst, _, msg) = reply_of(&out);
    assert_eq!((src, dst), (own, a("ff02::1")));
    let na = NdiscRepr::parse(&Icmpv6Packet::new_checked(&msg[..]).unwrap()).unwrap();
    assert!(matches!(
        na,
        NdiscRepr::Advert {
            solicited: false,
            override_: true,
            ..
        }
    ));
}

#[test]
fn solicitations_that_are_not_ours_or_not_from_the_link_are_ignored() {
    let (mut p, snap) = dual();
    let (own, host) = (a(OWN), a(HOST));
    let group = icmpv6::solicited_node(own);
    let cases = [
        // From beyond the link: a router decremented the hop limit.
        frame6(
            group_mac(group),
            host,
            group,
            64,
            solicit(own, Some(CLIENT_MAC)),
        ),
        // For another address of the prefix.
        frame6(
            group_mac(group),
            host,
            group,
            255,
            solicit(a("fd00:c1::2"), None),
        ),
        // Address detection with a link-layer address (RFC 4861 §7.1.1).
        frame6(
            group_mac(group),
            0,
            group,
            255,
            solicit(own, Some(CLIENT_MAC)),
        ),
        // From a group address: nobody to answer (the fuzzer's find: the answer went to
        // ffff:: with the sender's unicast MAC).
        frame6(
            group_mac(group),
            a("ffff::"),
            group,
            255,
            solicit(own, None),
        ),
        // An unsolicited advertisement of a neighbour nobody asked for: not learned
        // (a sender must not fill the table).
        frame6(
            group_mac(a("ff02::1")),
            a("fd00:c1::99"),
            a("ff02::1"),
            255,
            advert(a("fd00:c1::99"), false, Some(CLIENT_MAC)),
        ),
        // A "solicited" advertisement to a group (RFC 4861 §7.1.2).
        frame6(
            group_mac(a("ff02::1")),
            host,
            a("ff02::1"),
            255,
            advert(host, true, Some(CLIENT_MAC)),
        ),
        // An advertisement from beyond the link.
        frame6(MAC_C, host, own, 64, advert(host, true, Some(CLIENT_MAC))),
        // Someone advertising our own address.
        frame6(MAC_C, host, own, 255, advert(own, true, Some(CLIENT_MAC))),
        // A "solicited" advertisement nobody solicited (RFC 4861 §7.2.5: discarded).
        frame6(
            MAC_C,
            a("fd00:c1::98"),
            own,
            255,
            advert(a("fd00:c1::98"), true, Some(CLIENT_MAC)),
        ),
    ];
    for (i, f) in cases.iter().enumerate() {
        assert!(
            matches!(
                p.process(&snap, CONSUMER_PORT, VecFrame::new(f), 0),
                Verdict::Done
            ),
            "case {i}"
        );
        assert_eq!(
            p.counters().dropped(DropReason::NdIgnored),
            i as u64 + 1,
            "case {i}"
        );
    }
    // A damaged checksum is a bad checksum, not an unanswered question.
    let mut bad = frame6(group_mac(group), host, group, 255, solicit(own, None));
    let last = bad.len() - 1;
    bad[last] ^= 1;
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&bad), 0);
    assert_eq!(p.counters().dropped(DropReason::BadChecksum), 1);
    assert_eq!(p.counters().nd_advertisements, 0);
}

#[test]
fn the_own_address_answers_echo_and_nothing_else_of_ipv6_is_served() {
    let (mut p, snap) = dual();
    let (own, host) = (a(OWN), a(HOST));
    let req = frame6(MAC_C, host, own, 64, echo(0x1234, 7, b"abcdefgh"));
    let (port, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!((&out[..6], &out[6..12]), (&CLIENT_MAC[..], &MAC_C[..]));
    let (src, dst, _, msg) = reply_of(&out);
    assert_eq!((src, dst), (own, host));
    let m = Icmpv6Packet::new_checked(&msg[..]).unwrap();
    assert_eq!(m.msg_type(), Icmpv6Type::ECHO_REPLY);
    assert_eq!((m.echo_ident(), m.echo_seq_no()), (0x1234, 7));
    assert_eq!(&msg[8..], b"abcdefgh");
    assert_eq!(p.counters().echo_replies, 1);

    // Echo to another address of the prefix, from a group, UDP to the own address: not
    // served. IPv6 to another station's MAC: not for us.
    let mut udp6 = frame6(MAC_C, host, own, 64, echo(1, 1, b""));
    udp6[14 + 6] = 17;
    for f in [
        frame6(MAC_C, host, a("fd00:c1::2"), 64, echo(1, 1, b"")),
        frame6(MAC_C, a("ff02::1"), own, 64, echo(1, 1, b"")),
        udp6,
    ] {
        assert!(matches!(
            p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0),
            Verdict::Done
        ));
    }
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotServed), 3);
    let other = frame6(TARGET_MAC, host, own, 64, echo(1, 1, b""));
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&other), 0);
    assert_eq!(p.counters().dropped(DropReason::NotForUs), 1);
    // The provider attachment has no IPv6 address; a header cut short is malformed.
    let (own_p, host_p) = (a("fd00:b1::1"), a("fd00:b1::10"));
    let prov = frame6(MAC_P, host_p, own_p, 64, echo(1, 1, b""));
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&prov), 0);
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotServed), 4);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&req[..40]), 0);
    assert_eq!(p.counters().dropped(DropReason::Malformed), 1);
    assert_eq!(p.counters().echo_replies, 1);
}

#[test]
fn without_an_ipv6_address_ipv6_is_dropped_as_not_served() {
    let (mut p, snap) = pipeline(&ipv4_default(), 1, 0);
    let req = frame6(MAC_C, a(HOST), a(OWN), 64, echo(1, 1, b""));
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotServed), 1);
}

/// Every cut of a valid solicitation and echo request, and every byte of them flipped:
/// dropped and counted or answered, never a panic, never an answer from a broken one
/// that does not check out.
#[test]
fn cut_and_damaged_ipv6_never_panics() {
    let (mut p, snap) = dual();
    let (own, host) = (a(OWN), a(HOST));
    let group = icmpv6::solicited_node(own);
    let frames = [
        frame6(
            group_mac(group),
            host,
            group,
            255,
            solicit(own, Some(CLIENT_MAC)),
        ),
        frame6(MAC_C, host, own, 64, echo(9, 9, b"0123456789")),
    ];
    for f in &frames {
        for n in 0..f.len() {
            let _ = p.process(&snap, CONSUMER_PORT, VecFrame::new(&f[..n]), 0);
        }
        for i in 12..f.len() {
            for bit in [0x01u8, 0x80] {
                let mut g = f.clone();
                g[i] ^= bit;
                if let Verdict::Tx(_, out) = p.process(&snap, CONSUMER_PORT, VecFrame::new(&g), 0) {
                    // Whatever is answered is well formed.
                    let _ = reply_of(out.bytes());
                }
            }
        }
    }
}

/// Worker 0 advertises the own IPv6 address to all nodes once, at its first snapshot,
/// beside the gratuitous ARPs; a later snapshot does not repeat it.
#[test]
fn the_own_address_is_advertised_unsolicited_at_the_start() {
    let mut config = ipv4_default();
    config.vpcs[0].address6 = Some(format!("{OWN}/64").parse().unwrap());
    let snap = snapshot(&config);
    let settings = crate::daemon::pipeline_settings(&config, 1);
    let mut p: Pipeline<VecFrame> =
        Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    p.poll(&snap, 0);
    let sent: Vec<(u16, VecFrame)> = p.drain_emitted().collect();
    let adverts: Vec<&(u16, VecFrame)> = sent
        .iter()
        .filter(|(_, f)| f.bytes()[12..14] == [0x86, 0xdd])
        .collect();
    assert_eq!(
        adverts.len(),
        1,
        "one advertisement among {} frames",
        sent.len()
    );
    let (port, f) = adverts[0];
    assert_eq!(*port, CONSUMER_PORT);
    assert_eq!(
        (&f.bytes()[..6], &f.bytes()[6..12]),
        (&[0x33, 0x33, 0, 0, 0, 1][..], &MAC_C[..])
    );
    let (src, dst, hop, msg) = reply_of(f.bytes());
    assert_eq!((src, dst, hop), (a(OWN), a("ff02::1"), 255));
    assert_eq!(
        NdiscRepr::parse(&Icmpv6Packet::new_checked(&msg[..]).unwrap()).unwrap(),
        NdiscRepr::Advert {
            router: false,
            solicited: false,
            override_: true,
            target: a(OWN),
            target_lladdr: Some(EthernetAddress(MAC_C)),
        }
    );
    assert_eq!(p.counters().nd_advertisements, 1);
    // The next version (nothing new in it) announces nothing again.
    let mut next = snapshot(&config);
    next.generation = 2;
    next.announce.clear();
    next.announce6.clear();
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(p.drain_emitted().count(), 0);
    assert_eq!(p.counters().nd_advertisements, 1);
}

const ENDPOINT6: &str = "fd00:c1::64";

/// The dual stack demo: the consumer VPC's IPv6 prefix, a service that accepts IPv6
/// endpoints and the demo endpoint dual-stack at [`ENDPOINT6`].
pub(super) fn dual_endpoint_config() -> Config {
    let mut config = Config::embedded_default();
    config.vpcs[0].address6 = Some(format!("{OWN}/64").parse().unwrap());
    config.services[0].supported_ip_address_types =
        vec![mgmt::model::IpFamily::Ipv4, mgmt::model::IpFamily::Ipv6];
    config.endpoints[0].ip_address_type = mgmt::model::IpAddressType::Dualstack;
    config.endpoints[0].ip6 = Some(ENDPOINT6.parse().unwrap());
    config.validate().unwrap();
    config
}

#[test]
fn a_dual_stack_endpoint_answers_solicitations_and_echo_from_its_address() {
    let config = dual_endpoint_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (ep, host) = (a(ENDPOINT6), a(HOST));
    let group = icmpv6::solicited_node(ep);
    let ns = frame6(
        group_mac(group),
        host,
        group,
        255,
        solicit(ep, Some(CLIENT_MAC)),
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ns), 0));
    let (src, dst, hop, msg) = reply_of(&out);
    assert_eq!((src, dst, hop), (ep, host, 255));
    assert_eq!(
        NdiscRepr::parse(&Icmpv6Packet::new_checked(&msg[..]).unwrap()).unwrap(),
        NdiscRepr::Advert {
            router: false,
            solicited: true,
            override_: true,
            target: ep,
            target_lladdr: Some(EthernetAddress(MAC_C)),
        }
    );
    // Unicast to the address itself (a cache entry being confirmed) is answered too; a
    // solicitation for it sent to the own address's group is not (not its group).
    let direct = frame6(MAC_C, host, ep, 255, solicit(ep, Some(CLIENT_MAC)));
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&direct), 0));
    let own_group = icmpv6::solicited_node(a(OWN));
    let astray = frame6(
        group_mac(own_group),
        host,
        own_group,
        255,
        solicit(ep, None),
    );
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&astray), 0);
    assert_eq!(p.counters().dropped(DropReason::NdIgnored), 1);
    assert_eq!(p.counters().nd_advertisements, 2);

    let req = frame6(MAC_C, host, ep, 64, echo(0x77, 3, b"dual"));
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0));
    let (src, dst, _, msg) = reply_of(&out);
    assert_eq!((src, dst), (ep, host));
    assert_eq!(
        Icmpv6Packet::new_checked(&msg[..]).unwrap().msg_type(),
        Icmpv6Type::ECHO_REPLY
    );
    assert_eq!(&msg[8..], b"dual");
    // The provider VPC has no such address.
    let prov = frame6(MAC_P, a("fd00:b1::10"), ep, 64, echo(1, 1, b""));
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&prov), 0);
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotServed), 1);
}

#[test]
fn an_endpoint_answers_ipv6_echo_only_as_its_access_rules_and_state_allow() {
    use mgmt::model::{EndpointState, IngressRule, RuleProtocol};
    let config = dual_endpoint_config();
    let (ep, host) = (a(ENDPOINT6), a(HOST));
    let req = frame6(MAC_C, host, ep, 64, echo(1, 1, b""));
    let (mut p, _) = pipeline(&config, 1, 0);

    // Security groups hold IPv4 rules only: with one, no IPv6 source is admitted.
    let all = IngressRule {
        protocol: RuleProtocol::All,
        from_port: 0,
        to_port: 0,
        cidr: "0.0.0.0/0".parse().unwrap(),
    };
    let mut state = state_with_group(&config, vec![all]);
    let snap = build(&config, &state);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0);
    assert_eq!(p.counters().dropped(DropReason::SecurityGroup), 1);

    // A policy: a statement with a source prefix does not hold an IPv6 source.
    state.endpoints[0].security_group_ids.clear();
    state.endpoints[0].policy = Some(serde_json::json!({"Statement": [
        {"Effect": "Allow", "Principal": "*", "SourceCidr": "0.0.0.0/0"}
    ]}));
    let snap = build(&config, &state);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0);
    assert_eq!(p.counters().dropped(DropReason::Policy), 1);
    state.endpoints[0].policy = Some(serde_json::json!({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Protocol": "icmp"}
    ]}));
    let snap = build(&config, &state);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0));

    // Pending acceptance: the interface exists. Rejected: it has no address to answer.
    state.endpoints[0].policy = None;
    state.endpoints[0].state = EndpointState::PendingAcceptance;
    let snap = build(&config, &state);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0));
    state.endpoints[0].state = EndpointState::Rejected;
    let snap = build(&config, &state);
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&req), 0);
    assert_eq!(p.counters().dropped(DropReason::Ipv6NotServed), 1);
    let group = icmpv6::solicited_node(ep);
    let ns = frame6(group_mac(group), host, group, 255, solicit(ep, None));
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&ns), 0);
    assert_eq!(p.counters().dropped(DropReason::NdIgnored), 1);
    assert_eq!(p.counters().echo_replies, 2);
}

/// The IPv6 addresses an advertisement from worker 0 names, among what it sent.
fn advertised(p: &mut Pipeline<VecFrame>) -> Vec<u128> {
    p.drain_emitted()
        .filter(|(_, f)| f.bytes()[12..14] == [0x86, 0xdd])
        .map(|(_, f)| {
            let (src, dst, hop, msg) = reply_of(f.bytes());
            assert_eq!((dst, hop), (a("ff02::1"), 255));
            let m = Icmpv6Packet::new_checked(&msg[..]).unwrap();
            match NdiscRepr::parse(&m).unwrap() {
                NdiscRepr::Advert {
                    target,
                    solicited: false,
                    override_: true,
                    target_lladdr: Some(mac),
                    ..
                } => {
                    assert_eq!((target, mac), (src, EthernetAddress(MAC_C)));
                    target
                }
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn a_new_dual_stack_endpoint_is_advertised_unsolicited() {
    let config = dual_endpoint_config();
    let mut handles = crate::tables::snapshot::Handles::default();
    let mut state = config.state();
    let first = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &state,
        &mut handles,
    )
    .unwrap();
    let settings = crate::daemon::pipeline_settings(&config, 1);
    let mut p: Pipeline<VecFrame> =
        Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &first);
    p.poll(&first, 0);
    let mut got = advertised(&mut p);
    got.sort_unstable();
    assert_eq!(got, [a(OWN), a(ENDPOINT6)], "both, at the start");

    let before = state.clone();
    let mut e = state.endpoints[0].clone();
    e.id = "vpce-0e0000000000000e2".parse().unwrap();
    e.ip = Some("10.1.0.101".parse().unwrap());
    e.ip6 = Some("fd00:c1::65".parse().unwrap());
    state.endpoints.push(e);
    let change =
        crate::tables::snapshot::Change::from_touched(&mgmt::store::touched(&before, &state));
    let next = Snapshot::update(
        &first,
        2,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &state,
        &change,
        &mut handles,
        &std::collections::HashMap::new(),
    )
    .unwrap();
    assert_eq!(next.announce6, [(0, a("fd00:c1::65"))]);
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(advertised(&mut p), [a("fd00:c1::65")], "the new one only");
    assert_eq!(p.announced_generation(), 2);
}

/// A TCP SYN from an IPv6 consumer at `src` (link source MAC `mac`) to the dual-stack
/// endpoint, and the target's SYN-ACK to it, through pipeline `p`: the reply's verdict.
fn reply_to_consumer6(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    src: u128,
    now_ms: u64,
) -> Verdict<VecFrame> {
    let mut syn = super::nat64::tcp6(40000, 80, syn(), 7, 0);
    syn[22..38].copy_from_slice(&src.to_be_bytes());
    // The checksum covers the source: refill it.
    let l4 = 14 + 40;
    syn[l4 + 16..l4 + 18].fill(0);
    let c = icmpv6::l4_checksum_v6(src, a(ENDPOINT6), 6, &syn[l4..]);
    syn[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
    let (_, out) = tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&syn), now_ms));
    let synack = super::nat64::synack_to(&out);
    p.process(snap, PROVIDER_PORT, VecFrame::new(&synack), now_ms)
}

/// The neighbour solicitations among frames that left: (target, IPv6 destination,
/// Ethernet destination), each checked for what RFC 4861 §7.2.2 asks.
fn solicitations(p: &mut Pipeline<VecFrame>) -> Vec<(u128, u128, [u8; 6])> {
    p.drain_emitted()
        .filter(|(_, f)| f.bytes()[12..14] == [0x86, 0xdd])
        .filter_map(|(port, f)| {
            let b = f.bytes();
            let (src, dst, hop, msg) = reply_of(b);
            let icmp = Icmpv6Packet::new_checked(&msg[..]).unwrap();
            match NdiscRepr::parse(&icmp) {
                Ok(NdiscRepr::Solicit {
                    target,
                    source_lladdr,
                }) => {
                    assert_eq!(port, CONSUMER_PORT);
                    assert_eq!((src, hop), (a(OWN), 255));
                    assert_eq!(source_lladdr, Some(EthernetAddress(MAC_C)));
                    assert_eq!(&b[6..12], &MAC_C);
                    Some((target, dst, b[0..6].try_into().unwrap()))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn a_reply_to_an_unknown_ipv6_consumer_waits_for_its_solicited_advertisement() {
    let config = dual_endpoint_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let host = a("fd00:c1::20");
    // Nobody knows fd00:c1::20: the SYN-ACK is held and the consumer solicited.
    assert!(matches!(
        reply_to_consumer6(&mut p, &snap, host, 0),
        Verdict::Done
    ));
    let group = icmpv6::solicited_node(host);
    assert_eq!(solicitations(&mut p), vec![(host, group, group_mac(group))]);
    assert_eq!(p.counters().nd_solicitations, 1);
    // Its answer releases the SYN-ACK, to the MAC it names.
    let na = frame6(
        MAC_C,
        host,
        a(OWN),
        255,
        advert(host, true, Some([2, 0, 0, 0, 0, 0x20])),
    );
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&na), 5),
        Verdict::Done
    ));
    let released: Vec<_> = p.drain_emitted().collect();
    assert_eq!(released.len(), 1, "the held SYN-ACK");
    let (port, f) = &released[0];
    assert_eq!(*port, CONSUMER_PORT);
    let b = f.bytes();
    assert_eq!(&b[0..6], &[2, 0, 0, 0, 0, 0x20]);
    assert_eq!(&b[12..14], &[0x86, 0xdd]);
    assert_eq!(p.counters().nd_learned, 1);
    assert_eq!(
        p.neighbour_table6().get(0, host),
        Some([2, 0, 0, 0, 0, 0x20])
    );
    // Known now: the next reply leaves at once.
    let (port, _) = tx(reply_to_consumer6(&mut p, &snap, host, 6));
    assert_eq!(port, CONSUMER_PORT);
}

#[test]
fn a_solicitation_from_a_consumer_teaches_its_address_so_the_reply_needs_no_question() {
    let config = dual_endpoint_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let host = a("fd00:c1::21");
    let ep = a(ENDPOINT6);
    let group = icmpv6::solicited_node(ep);
    let ns = frame6(
        group_mac(group),
        host,
        group,
        255,
        solicit(ep, Some([2, 0, 0, 0, 0, 0x21])),
    );
    let (_, out) = tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ns), 0));
    assert_eq!(&out[0..6], &[2, 0, 0, 0, 0, 0x21], "the advertisement");
    assert_eq!(p.counters().nd_learned, 1);
    let (port, back) = tx(reply_to_consumer6(&mut p, &snap, host, 1));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&back[0..6], &[2, 0, 0, 0, 0, 0x21]);
    assert!(solicitations(&mut p).is_empty());
}

#[test]
fn an_ipv6_consumer_off_the_prefix_is_reached_through_the_ipv6_gateway() {
    let mut config = dual_endpoint_config();
    let far = a("fd00:99::5");
    // Without a gateway there is no next hop for it.
    let (mut p, snap) = pipeline(&config, 1, 0);
    assert!(matches!(
        reply_to_consumer6(&mut p, &snap, far, 0),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::NeighbourUnresolved), 1);
    // With one (link-local, as routers are), the router is solicited, then used.
    let router = a("fe80::1");
    config.vpcs[0].gateway6 = Some(Ipv6Addr::from(router));
    config.validate().unwrap();
    let (mut p, snap) = pipeline(&config, 1, 0);
    assert!(matches!(
        reply_to_consumer6(&mut p, &snap, far, 0),
        Verdict::Done
    ));
    let group = icmpv6::solicited_node(router);
    assert_eq!(
        solicitations(&mut p),
        vec![(router, group, group_mac(group))]
    );
    let na = frame6(MAC_C, router, a(OWN), 255, advert(router, true, None));
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&na), 5);
    let released: Vec<_> = p.drain_emitted().collect();
    assert_eq!(released.len(), 1);
    // No link-layer option: the advertisement's sender is the router.
    assert_eq!(&released[0].1.bytes()[0..6], &CLIENT_MAC);
}

#[test]
fn an_unanswered_solicitation_is_retried_then_the_held_packets_dropped() {
    let config = dual_endpoint_config();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let host = a("fd00:c1::22");
    reply_to_consumer6(&mut p, &snap, host, 0);
    assert_eq!(solicitations(&mut p).len(), 1);
    let t = p.neighbour_table6().timers();
    let mut sent = 1;
    let mut now = 0;
    while now < t.retry_ms * (u64::from(t.tries) + 2) {
        now += super::upkeep::TIMER_TICK_MS;
        p.poll(&snap, now);
        sent += solicitations(&mut p).len();
    }
    assert_eq!(sent, usize::from(t.tries), "one solicitation per try");
    assert_eq!(p.counters().dropped(DropReason::NeighbourUnresolved), 1);
}

#[test]
fn a_static_ipv6_neighbour_is_used_without_a_solicitation() {
    let mut config = dual_endpoint_config();
    let host = a("fd00:c1::23");
    config.vpcs[0].static_neighbours6 = vec![mgmt::model::StaticNeighbour6 {
        ip: Ipv6Addr::from(host),
        mac: "02:00:00:00:00:23".parse().unwrap(),
    }];
    config.validate().unwrap();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let (port, back) = tx(reply_to_consumer6(&mut p, &snap, host, 0));
    assert_eq!(port, CONSUMER_PORT);
    assert_eq!(&back[0..6], &[2, 0, 0, 0, 0, 0x23]);
    assert!(solicitations(&mut p).is_empty());
    // Configuration wins over what the link says.
    let na = frame6(
        MAC_C,
        host,
        a(OWN),
        255,
        advert(host, true, Some([2, 0, 0, 0, 0, 0x99])),
    );
    p.process(&snap, CONSUMER_PORT, VecFrame::new(&na), 1);
    assert_eq!(
        p.neighbour_table6().get(0, host),
        Some([2, 0, 0, 0, 0, 0x23])
    );
}

/// A consumer whose MAC changes (its advertisement, received by one worker) is reached at
/// the new MAC by every worker at once: each drops its cached answers when the shared
/// table changes, as for IPv4.
#[test]
fn a_changed_ipv6_neighbour_reaches_every_workers_cache() {
    let config = dual_endpoint_config();
    let snap = snapshot(&config);
    let mut settings = crate::daemon::pipeline_settings(&config, 2);
    settings.flow_capacity = 1024;
    let table = SharedNeighbours::new(64, settings.neighbour_timers);
    let new = |id| super::sharing(id, &settings, &snap, &table);
    let (mut p0, mut p1) = (new(0), new(1));
    let host = a("fd00:c1::24");
    let (old, new_mac) = ([2, 0, 0, 0, 0, 0x24], [2, 0, 0, 0, 0, 0x42]);
    table.v6.learn(0, host, old, 0);
    for t in [11, 12] {
        table
            .v4
            .learn(1, u32::from(Ipv4Addr::new(10, 2, 0, t)), TARGET_MAC, 0);
    }
    let (_, back) = tx(reply_to_consumer6(&mut p1, &snap, host, 0));
    assert_eq!(&back[0..6], &old, "worker 1 caches the MAC");
    let na = frame6(
        group_mac(a("ff02::1")),
        host,
        a("ff02::1"),
        255,
        advert(host, false, Some(new_mac)),
    );
    assert!(matches!(
        p0.process(&snap, CONSUMER_PORT, VecFrame::new(&na), 10),
        Verdict::Done
    ));
    p1.poll(&snap, 20);
    let (_, back) = tx(reply_to_consumer6(&mut p1, &snap, host, 30));
    assert_eq!(&back[0..6], &new_mac, "worker 1 follows the change");
}

/// Solicitations from made-up sources (an IPv6 prefix has 2^64 of them) cannot push out
/// the neighbours traffic needs: a source is learned only where the table has room.
#[test]
fn a_flood_of_solicitations_from_made_up_sources_evicts_no_neighbour() {
    let config = dual_endpoint_config();
    let snap = snapshot(&config);
    let mut settings = crate::daemon::pipeline_settings(&config, 1);
    settings.flow_capacity = 1024;
    // One set of eight ways.
    settings.neighbour_capacity = 8;
    let p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    let mut p = super::with_neighbours(p, &snap);
    let host = a(HOST);
    let ep = a(ENDPOINT6);
    let group = icmpv6::solicited_node(ep);
    for i in 0..64u128 {
        let src = a("fd00:c1::1:0") + i;
        let ns = frame6(
            group_mac(group),
            src,
            group,
            255,
            solicit(ep, Some([2, 0, 0, 0, 1, 0])),
        );
        tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&ns), 0));
    }
    assert_eq!(p.neighbour_table6().get(0, host), Some(CLIENT_MAC));
    let (port, back) = tx(reply_to_consumer6(&mut p, &snap, host, 1));
    assert_eq!((port, &back[0..6]), (CONSUMER_PORT, &CLIENT_MAC[..]));
}
