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
        // An advertisement: nothing is learned yet.
        {
            let mut m = vec![0u8; 32];
            let n = NdiscRepr::Advert {
                router: false,
                solicited: false,
                override_: true,
                target: host,
                target_lladdr: Some(EthernetAddress(CLIENT_MAC)),
            }
            .emit(&mut m, 0, 0)
            .unwrap();
            m.truncate(n);
            frame6(group_mac(a("ff02::1")), host, a("ff02::1"), 255, m)
        },
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
    let (mut p, snap) = pipeline(&Config::embedded_default(), 1, 0);
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
    let mut config = Config::embedded_default();
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
    p.on_snapshot(&next);
    p.poll(&next, 10);
    assert_eq!(p.drain_emitted().count(), 0);
    assert_eq!(p.counters().nd_advertisements, 1);
}
