//! The frames scenarios send, built with the wire module's views and checksum functions:
//! what a host would put on the wire, unless the scenario asks for damage afterwards.

use std::net::Ipv4Addr;

use crate::wire::arp::{ArpOperation, ArpPacket, PACKET_LEN as ARP_LEN};
use crate::wire::ethernet::{EtherType, EthernetAddress};
use crate::wire::icmpv4::{Icmpv4Packet, Icmpv4Type};
use crate::wire::ipv4::{IpProtocol, Ipv4Packet};
use crate::wire::tcp::{TcpFlags, TcpPacket};
use crate::wire::udp::UdpPacket;

/// Largest IPv4 packet.
const IP_MAX: usize = 65535;

/// The Ethernet header of a frame: addresses and any 802.1Q tags (TPID, TCI), outer first.
#[derive(Debug, Clone, Default)]
pub struct Eth {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub tags: Vec<(u16, u16)>,
}

/// An Ethernet frame around `payload`.
pub fn frame(eth: &Eth, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * eth.tags.len() + payload.len());
    f.extend_from_slice(&eth.dst);
    f.extend_from_slice(&eth.src);
    for &(tpid, tci) in &eth.tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The IPv4 header fields a scenario chooses.
#[derive(Debug, Clone)]
pub struct Ip {
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    pub ttl: u8,
    /// DSCP (high six bits) and ECN (low two).
    pub tos: u8,
    pub ident: u16,
    pub df: bool,
    pub mf: bool,
    /// Fragment offset in bytes (a multiple of 8).
    pub frag_offset: u16,
    /// Option bytes (at most 40), padded with end-of-list to a multiple of four.
    pub options: Vec<u8>,
}

impl Ip {
    /// A plain header: TTL 64, no options, not a fragment.
    pub fn new(src: u32, dst: u32, proto: u8) -> Ip {
        Ip {
            src,
            dst,
            proto,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            df: true,
            mf: false,
            frag_offset: 0,
            options: Vec::new(),
        }
    }
}

/// An IPv4 packet carrying `l4` (cut so the total stays within 65535 bytes), with a
/// correct header checksum.
pub fn ipv4(ip: &Ip, l4: &[u8]) -> Vec<u8> {
    let opts = &ip.options[..ip.options.len().min(40)];
    let header_len = 20 + opts.len().div_ceil(4) * 4;
    let body = &l4[..l4.len().min(IP_MAX - header_len)];
    let total = header_len + body.len();
    let mut b = vec![0u8; total];
    b[20..20 + opts.len()].copy_from_slice(opts);
    b[header_len..].copy_from_slice(body);
    let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
    p.set_version(4);
    p.set_header_len(u8::try_from(header_len).unwrap_or(60));
    p.set_dscp(ip.tos >> 2);
    p.set_ecn(ip.tos & 3);
    p.set_total_len(u16::try_from(total).unwrap_or(u16::MAX));
    p.set_ident(ip.ident);
    p.set_dont_frag(ip.df);
    p.set_more_frags(ip.mf);
    p.set_frag_offset(ip.frag_offset);
    p.set_ttl(ip.ttl);
    p.set_protocol(IpProtocol(ip.proto));
    p.set_src_addr_bytes(ip.src.to_be_bytes());
    p.set_dst_addr_bytes(ip.dst.to_be_bytes());
    p.fill_checksum();
    b
}

/// A TCP segment's fields.
#[derive(Debug, Clone, Default)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Option bytes (at most 40), padded with end-of-list to a multiple of four.
    pub options: Vec<u8>,
    pub payload_len: usize,
}

/// A TCP segment from `src` to `dst` with a correct checksum.
pub fn tcp(t: &Tcp, src: u32, dst: u32) -> Vec<u8> {
    let opts = &t.options[..t.options.len().min(40)];
    let header_len = 20 + opts.len().div_ceil(4) * 4;
    let mut b = vec![0u8; header_len + t.payload_len.min(IP_MAX)];
    b[20..20 + opts.len()].copy_from_slice(opts);
    fill_pattern(&mut b[header_len..]);
    let mut p = TcpPacket::new_unchecked(&mut b[..]);
    p.set_src_port(t.sport);
    p.set_dst_port(t.dport);
    p.set_seq_number(t.seq);
    p.set_ack_number(t.ack);
    p.set_header_len(u8::try_from(header_len).unwrap_or(60));
    p.set_flags(TcpFlags::from_bits(t.flags));
    p.set_window_len(t.window);
    p.set_urgent_at(0);
    p.fill_checksum(Ipv4Addr::from(src), Ipv4Addr::from(dst));
    b
}

/// A UDP datagram from `src` to `dst` with a correct checksum (or none, if `no_checksum`).
pub fn udp(
    sport: u16,
    dport: u16,
    payload_len: usize,
    src: u32,
    dst: u32,
    no_checksum: bool,
) -> Vec<u8> {
    let mut b = vec![0u8; 8 + payload_len.min(IP_MAX - 28)];
    fill_pattern(&mut b[8..]);
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    let mut p = UdpPacket::new_unchecked(&mut b[..]);
    p.set_src_port(sport);
    p.set_dst_port(dport);
    p.set_len(len);
    p.fill_checksum(Ipv4Addr::from(src), Ipv4Addr::from(dst));
    if no_checksum {
        p.set_checksum(0);
    }
    b
}

/// An ICMP message: type, code, the 4 bytes after the checksum, then `body`.
pub fn icmp(msg_type: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 8 + body.len().min(IP_MAX - 28)];
    let n = b.len() - 8;
    b[8..].copy_from_slice(&body[..n]);
    let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
    p.set_msg_type(Icmpv4Type(msg_type));
    p.set_code(code);
    p.set_rest_of_header(rest);
    p.fill_checksum();
    b
}

/// An echo request or reply with `data_len` bytes of data.
pub fn echo(request: bool, ident: u16, seq: u16, data_len: usize) -> Vec<u8> {
    let mut data = vec![0u8; data_len];
    fill_pattern(&mut data);
    let [a, b] = ident.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    let t = if request {
        Icmpv4Type::ECHO_REQUEST
    } else {
        Icmpv4Type::ECHO_REPLY
    };
    icmp(t.0, 0, [a, b, c, d], &data)
}

/// An Ethernet/IPv4 ARP packet (28 bytes).
pub fn arp(op: u16, sha: [u8; 6], spa: u32, tha: [u8; 6], tpa: u32) -> Vec<u8> {
    let mut b = vec![0u8; ARP_LEN];
    let mut p = ArpPacket::new_unchecked(&mut b[..]);
    p.set_hardware_type(1);
    p.set_protocol_type(EtherType::IPV4);
    p.set_hardware_len(6);
    p.set_protocol_len(4);
    p.set_operation(ArpOperation(op));
    p.set_source_hardware_addr(EthernetAddress(sha));
    p.set_source_protocol_addr(Ipv4Addr::from(spa));
    p.set_target_hardware_addr(EthernetAddress(tha));
    p.set_target_protocol_addr(Ipv4Addr::from(tpa));
    b
}

/// Flips bits of the checksum of an L4 segment of protocol `proto` (TCP, UDP, ICMP), so
/// it no longer verifies. A UDP checksum of 0 (none) becomes a wrong one.
pub fn spoil_l4_checksum(proto: u8, seg: &mut [u8]) {
    let at = match proto {
        6 => 16,
        17 => 6,
        1 => 2,
        _ => return,
    };
    if let Some(c) = seg.get_mut(at..at + 2) {
        c[1] ^= 0x5a;
        if c == [0, 0] {
            c[0] = 1;
        }
    }
}

/// Flips bits of an IPv4 header's checksum, so it no longer verifies.
pub fn spoil_ip_checksum(packet: &mut [u8]) {
    if let Some(c) = packet.get_mut(11) {
        *c ^= 0x5a;
    }
}

/// Payload bytes that are not all zero (so checksums over them mean something).
fn fill_pattern(b: &mut [u8]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x = b'a' + u8::try_from(i % 26).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_packets_verify() {
        let (src, dst) = (0x0a01_000a, 0x0a01_0064);
        let t = Tcp {
            sport: 40000,
            dport: 80,
            seq: 7,
            flags: 0x02,
            window: 1000,
            options: vec![2, 4, 5, 0xb4, 1, 3, 3],
            payload_len: 5,
            ..Tcp::default()
        };
        let seg = tcp(&t, src, dst);
        let mut ip = Ip::new(src, dst, 6);
        ip.options = vec![7, 7, 4, 0, 0, 0, 0];
        let pkt = ipv4(&ip, &seg);
        let p = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 28);
        let s = TcpPacket::new_checked(p.payload()).unwrap();
        assert!(s.verify_checksum(Ipv4Addr::from(src), Ipv4Addr::from(dst)));
        assert_eq!((s.header_len(), s.payload().len()), (28, 5));

        let mut d = udp(1, 2, 3, src, dst, false);
        assert!(UdpPacket::new_checked(&d[..])
            .unwrap()
            .verify_checksum(Ipv4Addr::from(src), Ipv4Addr::from(dst)));
        spoil_l4_checksum(17, &mut d);
        assert!(!UdpPacket::new_checked(&d[..])
            .unwrap()
            .verify_checksum(Ipv4Addr::from(src), Ipv4Addr::from(dst)));

        let e = echo(true, 9, 1, 4);
        assert!(Icmpv4Packet::new_checked(&e[..]).unwrap().verify_checksum());
        let mut bad = pkt.clone();
        spoil_ip_checksum(&mut bad);
        assert!(!Ipv4Packet::new_checked(&bad[..]).unwrap().verify_checksum());
    }
}
