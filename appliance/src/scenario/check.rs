//! The invariants every frame that leaves a pipeline keeps (see the module docs of
//! [`crate::scenario`]).

use std::net::IpAddr;

use super::MACS;
use crate::tables::snapshot::{LocalKind, Snapshot};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{EtherType, EthernetFrame};
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::icmpv6::{Icmpv6Packet, Icmpv6Type};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::ipv6::Ipv6Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::vlan;

/// Whether a frame's TCP/UDP checksum (if it is TCP or UDP over IPv4) is correct.
pub fn l4_checksum_ok(bytes: &[u8]) -> bool {
    let Ok(l2) = vlan::l2_header(bytes) else {
        return true;
    };
    if l2.ethertype != EtherType::IPV4 {
        return true;
    }
    let Ok(ip) = Ipv4Packet::new_checked(&bytes[l2.header_len..]) else {
        return true;
    };
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    match ip.protocol().0 {
        6 => TcpPacket::new_checked(ip.payload()).map_or(true, |t| t.verify_checksum(s, d)),
        17 => UdpPacket::new_checked(ip.payload()).map_or(true, |u| u.verify_checksum(s, d)),
        _ => true,
    }
}

/// What a leaving frame is held to besides what always holds.
#[derive(Debug, Clone, Copy)]
pub struct Strict {
    /// No spoiled TCP/UDP checksum was sent, so every TCP/UDP checksum must be correct.
    pub l4_checksums: bool,
    /// No packet larger than its ingress port's MTU reached the pipeline (the worker loop
    /// drops those), so none may leave larger than its egress attachment's MTU.
    pub mtu: bool,
}

/// The invariants of a frame leaving on `port` (module docs). `owned`: every address the
/// appliance had, by attachment.
pub fn check_leaving(snap: &Snapshot, owned: &Owned, strict: Strict, port: u16, f: &[u8]) {
    let hex = || f.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mac = MACS
        .get(usize::from(port))
        .unwrap_or_else(|| panic!("a frame left on port {port}, which does not exist"));
    let l2 = vlan::l2_header(f).unwrap_or_else(|e| {
        panic!(
            "a frame left on port {port} with a bad L2 header ({e}): {}",
            hex()
        )
    });
    let eth = EthernetFrame::new_unchecked(f);
    assert_eq!(
        &eth.src_addr().0,
        mac,
        "source MAC of a frame on port {port}: {}",
        hex()
    );
    assert_ne!(
        eth.dst_addr().0,
        [0; 6],
        "a frame left with no destination MAC: {}",
        hex()
    );
    let att = snap.attachment_of(port, l2.vlan_id).unwrap_or_else(|| {
        panic!(
            "a frame left on port {port} VLAN {:?}, no attachment's: {}",
            l2.vlan_id,
            hex()
        )
    });
    let ours = |ip: u32| owned.has(att, ip);
    let l3 = &f[l2.header_len..];
    match l2.ethertype {
        EtherType::ARP => {
            let a = ArpPacket::new_checked(l3)
                .unwrap_or_else(|e| panic!("unreadable ARP left ({e}): {}", hex()));
            let spa = u32::from_be_bytes(a.source_protocol_addr_bytes());
            assert!(
                ours(spa),
                "ARP from {spa:#x}, not ours on attachment {att}: {}",
                hex()
            );
            assert_eq!(
                &a.source_hardware_addr().0,
                mac,
                "ARP sender MAC: {}",
                hex()
            );
        }
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3)
                .unwrap_or_else(|e| panic!("unreadable IPv4 left ({e}): {}", hex()));
            assert!(ip.verify_checksum(), "IPv4 header checksum: {}", hex());
            let src = ip.src_addr_u32();
            assert!(
                ours(src),
                "a packet left attachment {att} from {}, not an address of the appliance there: {}",
                ip.src_addr(),
                hex()
            );
            assert!(
                eth.dst_addr().is_unicast(),
                "an IPv4 packet left for a group MAC: {}",
                hex()
            );
            if let (Some(a), true) = (snap.attachment(att), strict.mtu) {
                assert!(
                    ip.total_len() <= a.mtu,
                    "a {}-byte packet left attachment {att} (MTU {}): {}",
                    ip.total_len(),
                    a.mtu,
                    hex()
                );
            }
            let (s, d) = (ip.src_addr(), ip.dst_addr());
            // A fragment's L4 checksum covers its whole datagram, which no single frame
            // holds (a later fragment has no L4 header at all).
            let whole = !ip.is_fragment();
            let ok = match ip.protocol().0 {
                _ if !whole => true,
                1 => Icmpv4Packet::new_checked(ip.payload()).is_ok_and(|i| i.verify_checksum()),
                6 if strict.l4_checksums => {
                    TcpPacket::new_checked(ip.payload()).is_ok_and(|t| t.verify_checksum(s, d))
                }
                17 if strict.l4_checksums => {
                    UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.verify_checksum(s, d))
                }
                _ => true,
            };
            assert!(ok, "a packet left with a wrong L4 checksum: {}", hex());
        }
        EtherType::IPV6 => {
            // Only the appliance's own IPv6 addresses speak IPv6 (the attachment's,
            // dual-stack endpoints' and IPv6 SNAT addresses): neighbour advertisements
            // and solicitations, echo replies and ICMPv6 errors, checksummed, from one of
            // them, and translated packets (whole, or as fragments) and RSTs from an
            // endpoint's (to consumers) or a SNAT address (to targets: NAT66).
            let ip = Ipv6Packet::new_checked(l3)
                .unwrap_or_else(|e| panic!("unreadable IPv6 left ({e}): {}", hex()));
            let (s, d) = (ip.src_addr_u128(), ip.dst_addr_u128());
            let ours6 = owned.has6(att, s);
            assert!(ours6.is_some(), "IPv6 from an address not ours: {}", hex());
            let translating = ours6 == Some(true);
            let nh = ip.next_header();
            // NAT66 keeps the extension headers a host sent (hop-by-hop, destination
            // options, a fragment header), so a translated packet may carry them.
            let ext = crate::wire::ipv6::walk_extensions(nh, ip.payload()).unwrap_or_else(|e| {
                panic!("IPv6 with unwalkable extensions left ({e}): {}", hex())
            });
            let fragment = ext.fragment.filter(|f| !f.is_atomic());
            if fragment.is_some() {
                // A fragment of a translated packet: from an endpoint or a SNAT address,
                // of TCP or UDP (its L4 checksum covers the whole datagram).
                assert!(
                    translating,
                    "an IPv6 fragment from an address that is no endpoint's or SNAT: {}",
                    hex()
                );
                assert!(
                    matches!(ext.protocol, 6 | 17),
                    "an IPv6 fragment of other than TCP or UDP left: {}",
                    hex()
                );
            } else if matches!(ext.protocol, 6 | 17) {
                // A reply to an IPv6 consumer from a dual-stack endpoint, or a NAT66
                // packet to a target from a SNAT address: its L4 checksum right.
                assert!(
                    translating,
                    "IPv6 TCP/UDP from an address that is no endpoint's or SNAT: {}",
                    hex()
                );
                let seg = &ip.payload()[ext.l4_at..];
                let c = crate::wire::icmpv6::l4_checksum_v6(s, d, ext.protocol, seg);
                assert!(
                    c == 0 || !strict.l4_checksums,
                    "IPv6 L4 checksum: {}",
                    hex()
                );
            } else {
                assert_eq!(nh, 58, "IPv6 other than ICMPv6, TCP, UDP left: {}", hex());
                let m = Icmpv6Packet::new_checked(ip.payload())
                    .unwrap_or_else(|e| panic!("unreadable ICMPv6 left ({e}): {}", hex()));
                assert!(m.verify_checksum(s, d), "ICMPv6 checksum: {}", hex());
                let t = m.msg_type();
                assert!(
                    t == Icmpv6Type::ECHO_REPLY
                        || (t == Icmpv6Type::NEIGHBOR_ADVERT && ip.hop_limit() == 255)
                        // Asking for a next hop: from the attachment's own address, to
                        // the target's solicited-node group (ff02::1:ffXX:XXXX).
                        || (t == Icmpv6Type::NEIGHBOR_SOLICIT
                            && ip.hop_limit() == 255
                            && matches!(snap.local6(att, s), Some(LocalKind::Own))
                            && d >> 24 == 0x00ff_0200_0000_0000_0000_0000_01ff)
                        || (t.is_error() && d >> 120 != 0xff && l3.len() <= 1280),
                    "ICMPv6 {t:?} left: {}",
                    hex()
                );
            }
            let group = d >> 120 == 0xff;
            assert_eq!(
                eth.dst_addr().0[..2] == [0x33, 0x33],
                group,
                "IPv6 to {d:#x} left for MAC {}: {}",
                eth.dst_addr(),
                hex()
            );
        }
        other => panic!("a frame of EtherType {:#06x} left: {}", other.0, hex()),
    }
}

/// Every address the appliance had in some snapshot of a run, by attachment: what may be
/// the source of a frame that leaves (a flow of an endpoint that is gone is still reset
/// from its address).
#[derive(Debug, Clone, Default)]
pub struct Owned {
    pub v4: Vec<Vec<u32>>,
    /// IPv6 ones, and whether each was one that carries translated traffic (an
    /// endpoint's, a SNAT address).
    pub v6: Vec<Vec<(u128, bool)>>,
}

impl Owned {
    fn has(&self, att: u16, ip: u32) -> bool {
        self.v4
            .get(usize::from(att))
            .is_some_and(|v| v.contains(&ip))
    }

    /// Whether `ip` was ours on `att`, and whether an endpoint's or a SNAT address.
    fn has6(&self, att: u16, ip: u128) -> Option<bool> {
        let v = self.v6.get(usize::from(att))?;
        let mut found = None;
        for &(a, endpoint) in v {
            if a == ip {
                found = Some(found.unwrap_or(false) || endpoint);
            }
        }
        found
    }
}

/// Every address the appliance has in `snap`, by attachment, added to `owned`.
pub fn add_owned(snap: &Snapshot, owned: &mut Owned) {
    let n = snap.attachments.len();
    owned.v4.resize(n.max(owned.v4.len()), Vec::new());
    owned.v6.resize(n.max(owned.v6.len()), Vec::new());
    for (att, ip) in snap.local_addresses() {
        let v = &mut owned.v4[usize::from(att)];
        if !v.contains(&ip) {
            v.push(ip);
        }
    }
    for (att, ip, kind) in snap.local_addresses6() {
        let entry = (
            ip,
            matches!(kind, LocalKind::Endpoint(_) | LocalKind::Snat(_)),
        );
        if let Some(v) = owned.v6.get_mut(usize::from(att)) {
            if !v.contains(&entry) {
                v.push(entry);
            }
        }
    }
}

/// Every target (`ip`, port) of `snap`'s services, IPv4 and IPv6, added to `targets`.
pub fn add_targets(snap: &Snapshot, targets: &mut Vec<(IpAddr, u16)>) {
    for t in snap
        .services()
        .flat_map(|s| &s.listeners)
        .flat_map(|l| &l.targets)
    {
        if !targets.contains(&(t.addr(), t.port)) {
            targets.push((t.addr(), t.port));
        }
    }
}

/// A packet that crossed from the consumer's side to the provider's goes to a target the
/// run registered at some point (to its port, for TCP and UDP): the appliance reaches no
/// other host in the provider's VPC on a consumer's behalf, in either family.
pub fn check_crossing_to_provider(targets: &[(IpAddr, u16)], f: &[u8]) {
    let Ok(l2) = vlan::l2_header(f) else { return };
    let l3 = &f[l2.header_len..];
    let (dst, port) = if l2.ethertype == EtherType::IPV6 {
        let Ok(ip) = Ipv6Packet::new_checked(l3) else {
            return;
        };
        let ports = crate::wire::ipv6::walk_extensions(ip.next_header(), ip.payload())
            .ok()
            .filter(|e| matches!(e.protocol, 6 | 17) && e.fragment.is_none_or(|f| f.offset == 0))
            .and_then(|e| ip.payload().get(e.l4_at + 2..e.l4_at + 4))
            .map(|p| u16::from_be_bytes([p[0], p[1]]));
        (IpAddr::V6(ip.dst_addr()), ports)
    } else {
        let Ok(ip) = Ipv4Packet::new_checked(l3) else {
            return;
        };
        let port = match ip.protocol().0 {
            // A later fragment has no ports; its address is still checked.
            6 | 17 if ip.frag_offset() == 0 => ip
                .payload()
                .get(2..4)
                .map(|p| u16::from_be_bytes([p[0], p[1]])),
            _ => None,
        };
        (IpAddr::V4(ip.dst_addr()), port)
    };
    // Neighbour discovery for a target is no crossing.
    if dst.is_multicast() {
        return;
    }
    let ok = targets
        .iter()
        .any(|&(t, p)| t == dst && port.is_none_or(|port| port == p));
    assert!(
        ok,
        "a packet from the consumer's side reached {dst}:{port:?}, which was never a target: {}",
        f.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
}
