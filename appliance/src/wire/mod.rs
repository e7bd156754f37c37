//! Packet views: zero-copy, allocation-free codecs for the protocols on privlink's packet
//! path (Ethernet, 802.1Q, ARP, IPv4, ICMPv4, IPv6 and its extension headers, ICMPv6 and
//! neighbour discovery, TCP, UDP) and the Internet checksum.
//!
//! Each protocol has two layers, after smoltcp's `wire` module:
//! - a *view* (`Ipv4Packet<T: AsRef<[u8]>>`, …) that reads fields straight from the buffer,
//!   with setters where `T: AsMut<[u8]>`, so the fast path rewrites packets in place;
//! - a checked *repr* (`Ipv4Repr`, …) with `parse` and `emit`, for the packets the
//!   appliance originates (ARP replies, ICMP errors, TCP resets).
//!
//! # The no-panic contract
//!
//! Every view has `new_checked`, which validates the lengths the header declares once.
//! After it succeeds, **no accessor, setter or `payload()` of that view can panic**, on any
//! input: a packet from the network is never trusted further than `new_checked` checked it.
//! `new_unchecked` skips validation and is for buffers the caller built itself; its
//! accessors may panic on short buffers. Setters that change a length field (IHL, total
//! length, data offset, UDP length) can invalidate the guarantees; re-check after them.
//! `Repr::emit` functions write into a caller-provided buffer and report a short one as
//! [`Error::Truncated`] instead of panicking. [`exercise_frame`] drives every parser,
//! accessor and checksum function over arbitrary bytes; the proptests below and the
//! `parse_frame` fuzz target (`appliance/fuzz`) run it to back this contract.
//!
//! This module never allocates, never does I/O, and never decides policy (what to drop,
//! answer or count): it reports, and the workers decide.
//!
//! # Cost
//!
//! Measured with `benches/wire.rs` on one 2.6 GHz EPYC core: L2 classification plus IPv4
//! and TCP views down to the 5-tuple of a VLAN-tagged frame, ~6 ns (~15 cycles); IPv4
//! header checksum verification, ~2.4 ns; the whole consumer→target NAT rewrite (both
//! addresses and ports, TTL, incremental IPv4 and TCP checksums, views re-validated) on a
//! 64-byte payload, ~13.5 ns including a frame copy.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;

use core::fmt;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use icmpv4::{Icmpv4Packet, Icmpv4Repr, Icmpv4Type};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use tcp::{TcpFlags, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};
pub use vlan::{L2Header, VlanRepr, VlanTag};

/// Why a packet could not be parsed or emitted. `Copy`, one byte, allocation-free, so the
/// fast path can return and count it; [`Error::index`] is a dense counter index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Error {
    /// "truncated packet": the buffer is shorter than a header, or than a length the
    /// header declares (or, when emitting, than what must be written).
    Truncated,
    /// "malformed packet": a field holds a value the protocol forbids (IPv4 version ≠ 4,
    /// IHL < 5, total length below the header, UDP length < 8, …).
    Malformed,
    /// "bad checksum".
    BadChecksum,
    /// "unsupported packet": well-formed, but outside what privlink handles (QinQ, ARP
    /// for other than Ethernet/IPv4, IP fragments in a repr, answering a RST or an ICMP
    /// error).
    Unsupported,
}

impl Error {
    /// The number of variants, for sizing a counter array.
    pub const COUNT: usize = 4;
    /// Every variant, in [`index`](Self::index) order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Truncated,
        Self::Malformed,
        Self::BadChecksum,
        Self::Unsupported,
    ];

    /// A dense index in `0..COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        match self {
            Self::Truncated => 0,
            Self::Malformed => 1,
            Self::BadChecksum => 2,
            Self::Unsupported => 3,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Truncated => "truncated packet",
            Self::Malformed => "malformed packet",
            Self::BadChecksum => "bad checksum",
            Self::Unsupported => "unsupported packet",
        })
    }
}

impl std::error::Error for Error {}

/// The result of parsing or emitting.
pub type Result<T> = core::result::Result<T, Error>;

/// Parses `bytes` as a received frame through every layer (Ethernet → VLAN → ARP or IPv4
/// → ICMP/TCP/UDP), calls every accessor and checksum function, then rewrites a copy the
/// way the fast path does (NAT, TTL, echo reply, ARP reply, ICMP quote translation, RST
/// and ICMP error generation).
///
/// For fuzzing and property tests: it must never panic on any input. Besides not
/// panicking it asserts the invariants the fast path relies on, e.g. that an incremental
/// checksum update of a valid packet leaves it valid. Each layer is also tried on bytes of
/// the wrong type, since views must survive whatever they are handed.
pub fn exercise_frame(bytes: &[u8]) {
    read_frame(bytes);
    // The mutating pass works on a copy; 2 KiB covers every non-jumbo frame and keeps the
    // function allocation-free like the code it exercises.
    let mut copy = [0u8; 2048];
    let n = bytes.len().min(copy.len());
    copy[..n].copy_from_slice(&bytes[..n]);
    rewrite_frame(&mut copy[..n]);
}

fn read_frame(bytes: &[u8]) {
    let _ = checksum::data(bytes);
    let _ = checksum::combine(&[checksum::data(bytes), 0xffff]);

    if let Ok(eth) = EthernetFrame::new_checked(bytes) {
        let _ = (
            eth.dst_addr(),
            eth.src_addr(),
            eth.ethertype(),
            eth.header_len(),
        );
        let _ = (eth.dst_addr().is_broadcast(), eth.src_addr().is_multicast());
        let _ = EthernetRepr::parse(&eth);
        read_vlan(eth.payload());
        let _ = eth.into_payload();
    }

    match vlan::l2_header(bytes) {
        Ok(l2) => {
            let l3 = &bytes[l2.header_len..];
            match l2.ethertype {
                EtherType::ARP => read_arp(l3),
                EtherType::IPV4 => read_ipv4(l3),
                EtherType::IPV6 => read_ipv6(l3),
                // Unknown EtherTypes still go through all, to widen the fuzzer's reach.
                _ => {
                    read_arp(l3);
                    read_ipv4(l3);
                    read_ipv6(l3);
                }
            }
        }
        Err(_) => {
            read_ipv4(bytes);
            read_ipv6(bytes);
        }
    }
}

fn read_vlan(bytes: &[u8]) {
    if let Ok(tag) = VlanTag::new_checked(bytes) {
        let _ = (tag.tci(), tag.pcp(), tag.dei(), tag.vid(), tag.ethertype());
        let _ = tag.payload();
        if let Ok(repr) = VlanRepr::parse(&tag) {
            let mut out = [0u8; vlan::TAG_LEN];
            assert_eq!(repr.emit(&mut out), Ok(vlan::TAG_LEN));
            assert_eq!(&out[..], &bytes[..vlan::TAG_LEN]);
        }
    }
}

fn read_arp(bytes: &[u8]) {
    let Ok(arp) = ArpPacket::new_checked(bytes) else {
        return;
    };
    let _ = (arp.hardware_type(), arp.protocol_type(), arp.operation());
    let _ = (arp.hardware_len(), arp.protocol_len());
    let _ = (arp.source_hardware_addr(), arp.source_protocol_addr());
    let _ = (arp.target_hardware_addr(), arp.target_protocol_addr());
    let _ = (
        arp.source_protocol_addr_bytes(),
        arp.target_protocol_addr_bytes(),
    );
    if let Ok(repr) = ArpRepr::parse(&arp) {
        let mut out = [0u8; arp::PACKET_LEN];
        assert_eq!(repr.emit(&mut out), Ok(arp::PACKET_LEN));
        assert_eq!(&out[..], &bytes[..arp::PACKET_LEN]);
        let _ = ArpRepr::reply_to(&repr, EthernetAddress::BROADCAST);
    }
}

fn read_ipv4_fields<T: AsRef<[u8]>>(ip: &Ipv4Packet<T>) {
    let _ = (ip.version(), ip.ihl(), ip.header_len(), ip.dscp(), ip.ecn());
    let _ = (ip.total_len(), ip.ident(), ip.dont_frag(), ip.more_frags());
    let _ = (ip.frag_offset(), ip.is_fragment(), ip.ttl(), ip.protocol());
    let _ = (
        ip.checksum(),
        ip.src_addr(),
        ip.dst_addr(),
        ip.verify_checksum(),
    );
    let _ = (ip.src_addr_bytes(), ip.dst_addr_bytes());
    let _ = (ip.src_addr_u32(), ip.dst_addr_u32());
    let _ = (ip.header(), ip.options(), ip.payload());
    let _ = ipv4::judge_options(ip.options());
    for o in ip.options_iter().flatten() {
        assert!(ipv4::HEADER_LEN + o.offset + 2 + o.data.len() <= ip.header_len());
    }
}

fn read_ipv4(bytes: &[u8]) {
    if let Ok(q) = Ipv4Packet::new_checked_quote(bytes) {
        read_ipv4_fields(&q);
    }
    let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
        return;
    };
    read_ipv4_fields(&ip);
    assert!(ip.header_len() >= ipv4::HEADER_LEN && ip.header_len() <= ipv4::MAX_HEADER_LEN);
    assert_eq!(
        ip.header_len() + ip.payload().len(),
        usize::from(ip.total_len())
    );
    if let Ok(repr) = Ipv4Repr::parse(&ip) {
        let mut out = [0u8; ipv4::HEADER_LEN];
        assert_eq!(repr.emit(&mut out), Ok(ipv4::HEADER_LEN));
        let again = Ipv4Packet::new_checked_quote(&out[..])
            .map(|p| p.verify_checksum() && p.src_addr() == repr.src_addr);
        assert_eq!(again, Ok(true));
    }
    let (src, dst) = (ip.src_addr_bytes(), ip.dst_addr_bytes());
    let total = usize::from(ip.total_len());
    let payload = ip.into_payload();
    read_l4(payload, src, dst, &bytes[..total]);
}

/// The IPv6 views over `bytes`: the header, the extension headers, and the ICMPv6 and
/// neighbour-discovery views over what follows them, with their round trips.
fn read_ipv6(bytes: &[u8]) {
    let Ok(ip) = ipv6::Ipv6Packet::new_checked(bytes) else {
        return;
    };
    let _ = (ip.version(), ip.traffic_class(), ip.flow_label());
    let _ = (
        ip.payload_len(),
        ip.hop_limit(),
        ip.src_addr(),
        ip.dst_addr(),
    );
    let _ = ip.to_string();
    let (src, dst) = (ip.src_addr_u128(), ip.dst_addr_u128());
    let repr = ipv6::Ipv6Repr::parse(&ip);
    let mut out = [0u8; ipv6::HEADER_LEN];
    assert_eq!(repr.emit(&mut out), Ok(ipv6::HEADER_LEN));
    assert_eq!(
        ipv6::Ipv6Repr::parse(&ipv6::Ipv6Packet::new_unchecked(&out[..])),
        repr
    );
    let payload = ip.payload();
    assert_eq!(payload.len(), usize::from(ip.payload_len()));
    let Ok(ext) = ipv6::walk_extensions(ip.next_header(), payload) else {
        return;
    };
    assert!(usize::from(ext.count) <= ipv6::MAX_EXTENSIONS);
    let Some(l4) = payload.get(ext.l4_at..) else {
        panic!("the walk ended past the payload: {ext:?}");
    };
    if let Ok(icmp) = icmpv6::Icmpv6Packet::new_checked(l4) {
        let _ = (icmp.msg_type(), icmp.code(), icmp.checksum(), icmp.mtu());
        let _ = (icmp.echo_ident(), icmp.echo_seq_no(), icmp.data());
        let _ = icmp.verify_checksum(src, dst);
        if let Ok(nd) = icmpv6::NdiscRepr::parse(&icmp) {
            let mut buf = [0u8; icmpv6::ND_WITH_LLADDR_LEN];
            let n = nd.emit(&mut buf, src, dst).expect("room for one option");
            let again = icmpv6::Icmpv6Packet::new_checked(&buf[..n]).expect("emitted");
            assert!(again.verify_checksum(src, dst));
            assert_eq!(icmpv6::NdiscRepr::parse(&again), Ok(nd));
        }
    }
    let _ = ipv6::judge_options(l4);
}

/// Every L4 view over `l4`, whatever the IP protocol said. `original` is the whole IPv4
/// packet, for the error and reset generators.
fn read_l4(l4: &[u8], src: [u8; 4], dst: [u8; 4], original: &[u8]) {
    let mut out = [0u8; 128];

    if let Ok(icmp) = Icmpv4Packet::new_checked(l4) {
        let _ = (
            icmp.msg_type(),
            icmp.code(),
            icmp.checksum(),
            icmp.is_error(),
        );
        let _ = (icmp.echo_ident(), icmp.echo_seq_no(), icmp.next_hop_mtu());
        let _ = (
            icmp.rest_of_header(),
            icmp.verify_checksum(),
            icmp.payload(),
        );
        if let Ok(q) = icmp.quote() {
            read_ipv4_fields(&q);
        }
        if let Ok(repr) = Icmpv4Repr::parse(&icmp) {
            let mut big = [0u8; 2048];
            let n = repr.emit(&mut big);
            assert_eq!(n, Ok(repr.buffer_len()));
            let _ = repr.emit(&mut out);
        }
        let _ = icmp.into_payload();
    }

    if let Ok(tcp) = TcpPacket::new_checked(l4) {
        let _ = (
            tcp.src_port(),
            tcp.dst_port(),
            tcp.seq_number(),
            tcp.ack_number(),
        );
        let _ = (
            tcp.header_len(),
            tcp.flags(),
            tcp.window_len(),
            tcp.checksum(),
        );
        let _ = (
            tcp.urgent_at(),
            tcp.options(),
            tcp.payload(),
            tcp.segment_len(),
        );
        let _ = (tcp.fin(), tcp.syn(), tcp.rst(), tcp.ack());
        let _ = tcp.verify_checksum(src, dst);
        let _ = TcpRepr::parse(&tcp, src, dst);
        if let Some((_, at)) = tcp.syn_options().mss {
            assert!(at + 2 <= tcp.header_len());
            let mut copy = [0u8; tcp::MAX_HEADER_LEN];
            let n = tcp.header_len();
            copy[..n].copy_from_slice(&l4[..n]);
            let mut header = TcpPacket::new_unchecked(&mut copy[..n]);
            let before = header.verify_checksum(src, dst);
            let _ = header.clamp_mss(536);
            assert_eq!(header.verify_checksum(src, dst), before);
        }
        if let Ok(n) = tcp::emit_rst_reply(&tcp, src, dst, &mut out) {
            let rst = TcpPacket::new_checked(&out[..n]).map(|r| r.verify_checksum(dst, src));
            assert_eq!(rst, Ok(true));
        }
        let _ = tcp.into_payload();
    }

    if let Ok(udp) = UdpPacket::new_checked(l4) {
        let _ = (udp.src_port(), udp.dst_port(), udp.len(), udp.checksum());
        let _ = (udp.payload(), udp.verify_checksum(src, dst));
        let _ = UdpRepr::parse(&udp, src, dst);
        let _ = udp.into_payload();
    }

    let _ = icmpv4::quote_of(original);
    if let Ok(n) = icmpv4::emit_time_exceeded(&mut out, 0, original) {
        let ok = Icmpv4Packet::new_checked(&out[..n]).map(|p| p.verify_checksum());
        assert_eq!(ok, Ok(true));
    }
    if let Ok(n) = icmpv4::emit_dst_unreachable(&mut out, 4, 1400, original) {
        let ok = Icmpv4Packet::new_checked(&out[..n]).map(|p| p.quote().is_ok());
        assert_eq!(ok, Ok(true));
    }
}

fn rewrite_frame(frame: &mut [u8]) {
    if let Ok(mut eth) = EthernetFrame::new_checked(&mut *frame) {
        eth.swap_addrs();
        eth.swap_addrs();
    }
    let Ok(l2) = vlan::l2_header(frame) else {
        return;
    };
    let l3 = &mut frame[l2.header_len..];
    match l2.ethertype {
        EtherType::ARP => {
            if let Ok(mut arp) = ArpPacket::new_checked(l3) {
                let _ = arp.make_reply(EthernetAddress([2, 0, 0, 0, 0, 1]));
            }
        }
        EtherType::IPV4 => rewrite_ipv4(l3),
        _ => {}
    }
    if l2.header_len > ethernet::HEADER_LEN {
        assert_eq!(vlan::strip_tag(frame), Ok(vlan::TAG_LEN));
    }
}

/// NAT as the fast path does it: ports and addresses with incremental checksums, TTL, and
/// checks that valid checksums stay valid.
fn rewrite_ipv4(bytes: &mut [u8]) {
    const NEW_SRC: [u8; 4] = [172, 16, 0, 10];
    const NEW_DST: [u8; 4] = [10, 99, 0, 7];
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut *bytes) else {
        return;
    };
    let (src, dst) = (ip.src_addr_bytes(), ip.dst_addr_bytes());
    let protocol = ip.protocol();
    let l4 = ip.payload_mut();
    match protocol {
        IpProtocol::TCP => {
            if let Ok(mut tcp) = TcpPacket::new_checked(l4) {
                let valid = tcp.verify_checksum(src, dst);
                tcp.rewrite_src_port(40001);
                tcp.rewrite_dst_port(8443);
                tcp.update_checksum_for_addr(src, NEW_SRC);
                tcp.update_checksum_for_addr(dst, NEW_DST);
                assert_eq!(tcp.verify_checksum(NEW_SRC, NEW_DST), valid);
            }
        }
        IpProtocol::UDP => {
            if let Ok(mut udp) = UdpPacket::new_checked(l4) {
                let absent = udp.checksum() == 0;
                let valid = udp.verify_checksum(src, dst);
                udp.rewrite_src_port(40001);
                udp.rewrite_dst_port(53);
                udp.update_checksum_for_addr(src, NEW_SRC);
                udp.update_checksum_for_addr(dst, NEW_DST);
                assert_eq!(udp.checksum() == 0, absent);
                assert_eq!(udp.verify_checksum(NEW_SRC, NEW_DST), valid);
            }
        }
        IpProtocol::ICMP => {
            if let Ok(mut icmp) = Icmpv4Packet::new_checked(l4) {
                let valid = icmp.verify_checksum();
                if icmp.make_echo_reply().is_ok() {
                    assert_eq!(icmp.verify_checksum(), valid);
                }
                if let Ok(mut q) = icmp.quote_mut() {
                    let qvalid = q.verify_checksum();
                    q.rewrite_dst_addr(NEW_SRC);
                    assert_eq!(q.verify_checksum(), qvalid);
                    q.payload_mut().fill(0);
                    icmp.fill_checksum();
                    assert!(icmp.verify_checksum());
                }
            }
        }
        _ => {}
    }
    let valid = ip.verify_checksum();
    ip.rewrite_src_addr(NEW_SRC);
    ip.rewrite_dst_addr(NEW_DST);
    let _ = ip.decrement_ttl();
    assert_eq!(ip.verify_checksum(), valid);
    ip.fill_checksum();
    assert!(ip.verify_checksum());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn error_index_is_dense() {
        for (i, e) in Error::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(Error::Truncated.to_string(), "truncated packet");
        assert_eq!(core::mem::size_of::<Error>(), 1);
        let e: Box<dyn std::error::Error> = Box::new(Error::BadChecksum);
        assert_eq!(e.to_string(), "bad checksum");
    }

    /// What a generated frame carries above IPv4.
    #[derive(Debug, Clone)]
    enum L4 {
        Tcp(TcpRepr),
        Udp(UdpRepr),
        Echo(u16, u16),
        Arp(ArpRepr),
    }

    /// Builds a valid frame with the reprs: Ethernet, an optional VLAN tag, and ARP or
    /// IPv4 + TCP/UDP/ICMP echo with `payload`. Returns the frame and its length.
    fn build(vid: Option<u16>, l4: &L4, payload: &[u8], ttl: u8) -> ([u8; 1600], usize) {
        let mut f = [0u8; 1600];
        let eth = EthernetRepr {
            src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
            ethertype: if vid.is_some() {
                EtherType::VLAN
            } else if matches!(l4, L4::Arp(_)) {
                EtherType::ARP
            } else {
                EtherType::IPV4
            },
        };
        let mut at = eth.emit(&mut f).unwrap();
        if let Some(vid) = vid {
            let tag = VlanRepr {
                pcp: 0,
                dei: false,
                vid,
                ethertype: if matches!(l4, L4::Arp(_)) {
                    EtherType::ARP
                } else {
                    EtherType::IPV4
                },
            };
            at += tag.emit(&mut f[at..]).unwrap();
        }
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let (protocol, hdr) = match l4 {
            L4::Arp(arp) => {
                at += arp.emit(&mut f[at..]).unwrap();
                return (f, at);
            }
            L4::Tcp(_) => (IpProtocol::TCP, tcp::HEADER_LEN),
            L4::Udp(_) => (IpProtocol::UDP, udp::HEADER_LEN),
            L4::Echo(..) => (IpProtocol::ICMP, icmpv4::HEADER_LEN),
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol,
            payload_len: hdr + payload.len(),
            ttl,
        };
        at += ip.emit(&mut f[at..]).unwrap();
        let seg = &mut f[at..];
        seg[hdr..hdr + payload.len()].copy_from_slice(payload);
        let n = match l4 {
            L4::Tcp(t) => t.emit(seg, src, dst, payload.len()).unwrap(),
            L4::Udp(u) => u.emit(seg, src, dst, payload.len()).unwrap(),
            L4::Echo(ident, seq_no) => Icmpv4Repr::EchoRequest {
                ident: *ident,
                seq_no: *seq_no,
                data: payload,
            }
            .emit(seg)
            .unwrap(),
            L4::Arp(_) => unreachable!(),
        };
        (f, at + n)
    }

    fn l4_strategy() -> impl Strategy<Value = L4> {
        prop_oneof![
            (
                any::<[u16; 2]>(),
                any::<[u32; 2]>(),
                any::<u8>(),
                any::<u16>()
            )
                .prop_map(|(p, s, flags, window_len)| L4::Tcp(TcpRepr {
                    src_port: p[0],
                    dst_port: p[1],
                    seq_number: s[0],
                    ack_number: s[1],
                    flags: TcpFlags::from_bits(flags),
                    window_len,
                    urgent_at: 0,
                })),
            any::<[u16; 2]>().prop_map(|p| L4::Udp(UdpRepr {
                src_port: p[0],
                dst_port: p[1]
            })),
            any::<(u16, u16)>().prop_map(|(i, s)| L4::Echo(i, s)),
            (
                any::<bool>(),
                any::<[u8; 6]>(),
                any::<[u8; 4]>(),
                any::<[u8; 4]>()
            )
                .prop_map(|(req, mac, spa, tpa)| {
                    let r = ArpRepr::request(EthernetAddress(mac), Ipv4Addr::from(spa), tpa.into());
                    L4::Arp(if req {
                        r
                    } else {
                        ArpRepr::reply_to(&r, EthernetAddress([2, 0, 0, 0, 0, 9])).unwrap()
                    })
                }),
        ]
    }

    #[test]
    fn built_frames_parse_all_the_way() {
        let tcp = L4::Tcp(TcpRepr {
            src_port: 1,
            dst_port: 2,
            seq_number: 3,
            ack_number: 4,
            flags: TcpFlags::ACK,
            window_len: 5,
            urgent_at: 0,
        });
        let (f, n) = build(Some(7), &tcp, b"payload", 64);
        let l2 = vlan::l2_header(&f[..n]).unwrap();
        assert_eq!(l2.vlan_id, Some(7));
        let ip = Ipv4Packet::new_checked(&f[l2.header_len..n]).unwrap();
        assert!(ip.verify_checksum());
        let seg = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert_eq!(seg.payload(), b"payload");
        exercise_frame(&f[..n]);
    }

    #[test]
    fn exercise_empty_and_tiny() {
        for n in 0..64 {
            exercise_frame(&vec![0u8; n]);
            exercise_frame(&vec![0xffu8; n]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The no-panic contract on raw bytes.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            exercise_frame(&bytes);
        }

        /// Arbitrary bytes behind a plausible Ethernet/IPv4 prefix, to get past the outer
        /// checks into every inner parser.
        #[test]
        fn arbitrary_l3_never_panics(
            tagged in any::<bool>(),
            ethertype in prop::sample::select(vec![0x0800u16, 0x0806, 0x8100, 0x88a8, 0x86dd]),
            ihl_byte in 0x40u8..0x50,
            proto in prop::sample::select(vec![1u8, 6, 17, 0]),
            len in 0u16..300,
            rest in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut f = vec![0u8; 12];
            if tagged {
                f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
            }
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(&[ihl_byte, 0]);
            f.extend_from_slice(&len.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0, 64, proto]);
            f.extend_from_slice(&rest);
            exercise_frame(&f);
        }

        /// A valid IPv6 header, a chain of extension headers (hop-by-hop, routing,
        /// fragment, destination options in any order, of arbitrary contents) and any
        /// upper layer: the walk and the ICMPv6/ND views never panic, and every walk
        /// that succeeds ends inside the payload.
        #[test]
        fn ipv6_extension_chains_never_panic(
            chain in proptest::collection::vec(
                (prop::sample::select(vec![0u8, 43, 44, 60, 51]), 0u8..3,
                 proptest::collection::vec(any::<u8>(), 6..30)),
                0..10),
            last in prop::sample::select(vec![58u8, 6, 17, 59, 50]),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            nd in any::<bool>(),
        ) {
            let mut payload = Vec::new();
            let first = chain.first().map_or(last, |c| c.0);
            for (i, (_, len, body)) in chain.iter().enumerate() {
                let next = chain.get(i + 1).map_or(last, |c| c.0);
                let mut h = vec![next, *len];
                h.extend_from_slice(body);
                h.resize(8 + 8 * usize::from(*len), 0);
                payload.extend_from_slice(&h);
            }
            if nd {
                payload.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
                payload.extend_from_slice(&[0xfe; 16]);
            }
            payload.extend_from_slice(&tail);
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
            f.extend_from_slice(&[first, 64]);
            f.extend_from_slice(&[0x20; 32]);
            f.extend_from_slice(&payload);
            exercise_frame(&f);
        }

        /// Valid frames of every kind parse all the way, and every truncation and every
        /// single-byte corruption of them is survived.
        #[test]
        fn valid_frames_truncated_and_corrupted(
            vid in prop::option::of(1u16..4095),
            l4 in l4_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            ttl in any::<u8>(),
            flip_at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let (mut f, n) = build(vid, &l4, &payload, ttl);
            let frame = &f[..n];
            let l2 = vlan::l2_header(frame).unwrap();
            prop_assert_eq!(l2.vlan_id, vid);
            if let L4::Arp(arp) = &l4 {
                let p = ArpPacket::new_checked(&frame[l2.header_len..]).unwrap();
                prop_assert_eq!(ArpRepr::parse(&p).unwrap(), *arp);
            } else {
                let ip = Ipv4Packet::new_checked(&frame[l2.header_len..]).unwrap();
                prop_assert!(Ipv4Repr::parse(&ip).is_ok());
                let (s, d) = (ip.src_addr(), ip.dst_addr());
                match &l4 {
                    L4::Tcp(t) => {
                        let p = TcpPacket::new_checked(ip.payload()).unwrap();
                        prop_assert_eq!(TcpRepr::parse(&p, s, d).unwrap(), *t);
                        prop_assert_eq!(p.payload(), &payload[..]);
                    }
                    L4::Udp(u) => {
                        let p = UdpPacket::new_checked(ip.payload()).unwrap();
                        prop_assert_eq!(UdpRepr::parse(&p, s, d).unwrap(), *u);
                        prop_assert_eq!(p.payload(), &payload[..]);
                    }
                    L4::Echo(i, q) => {
                        let p = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                        let want =
                            Icmpv4Repr::EchoRequest { ident: *i, seq_no: *q, data: &payload };
                        prop_assert_eq!(Icmpv4Repr::parse(&p).unwrap(), want);
                    }
                    L4::Arp(_) => unreachable!(),
                }
            }
            exercise_frame(frame);
            exercise_frame(&f[..cut.index(n + 1)]);
            f[flip_at.index(n)] ^= flip;
            exercise_frame(&f[..n]);
        }

        /// NAT through the views' helpers equals recomputing every checksum from scratch.
        #[test]
        fn nat_rewrite_equals_recompute(
            l4 in l4_strategy(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            new_src in any::<[u8; 4]>(),
            new_dst in any::<[u8; 4]>(),
            ports in any::<[u16; 2]>(),
            ttl in 2u8..=255,
            udp_no_checksum in any::<bool>(),
        ) {
            if matches!(l4, L4::Arp(_)) {
                return Ok(());
            }
            let (mut f, n) = build(None, &l4, &payload, ttl);
            let mut ip = Ipv4Packet::new_checked(&mut f[ethernet::HEADER_LEN..n]).unwrap();
            let (src, dst) = (ip.src_addr_bytes(), ip.dst_addr_bytes());
            match l4 {
                L4::Tcp(_) => {
                    let mut t = TcpPacket::new_checked(ip.payload_mut()).unwrap();
                    t.rewrite_src_port(ports[0]);
                    t.rewrite_dst_port(ports[1]);
                    t.update_checksum_for_addr(src, new_src);
                    t.update_checksum_for_addr(dst, new_dst);
                    let incremental = t.checksum();
                    t.fill_checksum(new_src, new_dst);
                    prop_assert_eq!(incremental, t.checksum());
                }
                L4::Udp(_) => {
                    let mut u = UdpPacket::new_checked(ip.payload_mut()).unwrap();
                    if udp_no_checksum {
                        u.set_checksum(0);
                    }
                    u.rewrite_src_port(ports[0]);
                    u.rewrite_dst_port(ports[1]);
                    u.update_checksum_for_addr(src, new_src);
                    u.update_checksum_for_addr(dst, new_dst);
                    let incremental = u.checksum();
                    if udp_no_checksum {
                        prop_assert_eq!(incremental, 0);
                    } else {
                        u.fill_checksum(new_src, new_dst);
                        prop_assert_eq!(incremental, u.checksum());
                    }
                }
                L4::Echo(..) => {
                    let mut i = Icmpv4Packet::new_checked(ip.payload_mut()).unwrap();
                    i.make_echo_reply().unwrap();
                    prop_assert!(i.verify_checksum());
                }
                L4::Arp(_) => unreachable!(),
            }
            ip.rewrite_src_addr(new_src);
            ip.rewrite_dst_addr(new_dst);
            prop_assert_eq!(ip.decrement_ttl(), ttl - 1);
            let incremental = ip.checksum();
            ip.fill_checksum();
            prop_assert_eq!(incremental, ip.checksum());
        }
    }
}
