//! IPv6 events of a scenario: fresh packets from the consumer VPC's IPv6 hosts to the
//! dual-stack endpoint (NAT64), the appliance's own IPv6 address and others, with
//! extension headers, fragments and neighbour discovery; and the answers of the IPv6
//! hosts the appliance sent to (the next segment of a TCP flow, a UDP reply, an echo, a
//! neighbour advertisement for a solicitation).

use super::*;
use crate::wire::icmpv6;

/// The consumer VPC's IPv6 prefix (`fd00:c1::/64`) and its hosts.
const NET6: u128 = 0xfd00_00c1_0000_0000_0000_0000_0000_0000;
/// The dual-stack endpoint's IPv6 address and the attachment's own.
const ENDPOINT6: u128 = NET6 | 0x64;
const OWN6: u128 = NET6 | 1;
const ALL_NODES: u128 = 0xff02_0000_0000_0000_0000_0000_0000_0001;

/// A host's MAC from its IPv6 address (its low bytes), like [`host_mac`] for IPv4.
fn host_mac6(ip: u128) -> [u8; 6] {
    #[allow(clippy::cast_possible_truncation)] // the low 24 bits
    host_mac(CONSUMER_PORT, ip as u32 & 0x00ff_ffff)
}

/// An IPv6 packet: the fixed header (traffic class 0, hop limit `hop`), the extension
/// headers `ext` (`first` the type of the first; the chain's own next headers inside),
/// then `l4` of protocol `proto`.
fn ipv6(src: u128, dst: u128, hop: u8, (first, ext): (u8, &[u8]), proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    let len = u16::try_from(ext.len() + l4.len()).unwrap_or(u16::MAX);
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[if ext.is_empty() { proto } else { first }, hop]);
    p.extend_from_slice(&src.to_be_bytes());
    p.extend_from_slice(&dst.to_be_bytes());
    p.extend_from_slice(ext);
    p.extend_from_slice(l4);
    p
}

/// Fills the L4 checksum of `l4` (TCP, UDP, ICMPv6) under the IPv6 pseudo-header; a UDP
/// one of zero becomes 0xffff (zero means none, which IPv6 forbids).
fn fill_checksum6(src: u128, dst: u128, proto: u8, l4: &mut [u8]) {
    let at = match proto {
        6 => 16,
        17 => 6,
        58 => 2,
        _ => return,
    };
    if l4.len() < at + 2 {
        return;
    }
    l4[at..at + 2].fill(0);
    let mut c = icmpv6::l4_checksum_v6(src, dst, proto, l4);
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// A neighbour discovery message: a solicitation (type 135) or an advertisement (136,
/// solicited and override) for `target`, with a link-layer option of `mac` if any.
fn nd(solicit: bool, target: u128, mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut m = vec![if solicit { 135 } else { 136 }, 0, 0, 0];
    m.extend_from_slice(&[if solicit { 0 } else { 0x60 }, 0, 0, 0]);
    m.extend_from_slice(&target.to_be_bytes());
    if let Some(mac) = mac {
        m.extend_from_slice(&[if solicit { 1 } else { 2 }, 1]);
        m.extend_from_slice(&mac);
    }
    m
}

/// What an IPv6 frame that left carried, for answers.
#[derive(Debug, Clone)]
pub(super) struct Read6 {
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub seg_len: u32,
    /// ICMPv6 type (0xff otherwise) and, for neighbour discovery, the target.
    pub icmp_type: u8,
    pub nd_target: u128,
}

/// Reads the IPv6 packet `l3` (its L4 header right after the fixed one; fragments and
/// extension headers are not answered).
pub(super) fn read6(l3: &[u8]) -> Option<Read6> {
    let ip = crate::wire::ipv6::Ipv6Packet::new_checked(l3).ok()?;
    let (src, dst, proto) = (ip.src_addr_u128(), ip.dst_addr_u128(), ip.next_header());
    let l4 = ip.payload();
    let mut r = Read6 {
        src,
        dst,
        proto,
        sport: 0,
        dport: 0,
        flags: 0,
        seq: 0,
        ack: 0,
        seg_len: 0,
        icmp_type: 0xff,
        nd_target: 0,
    };
    match proto {
        6 => {
            let t = TcpPacket::new_checked(l4).ok()?;
            (r.sport, r.dport, r.flags) = (t.src_port(), t.dst_port(), t.flags().bits());
            (r.seq, r.ack, r.seg_len) = (t.seq_number(), t.ack_number(), t.segment_len());
        }
        17 => {
            let u = UdpPacket::new_checked(l4).ok()?;
            (r.sport, r.dport) = (u.src_port(), u.dst_port());
        }
        58 => {
            let m = icmpv6::Icmpv6Packet::new_checked(l4).ok()?;
            r.icmp_type = m.msg_type().0;
            (r.sport, r.dport) = (m.echo_ident(), m.echo_ident());
            r.seq = u32::from(m.echo_seq_no());
            if let Some(t) = l4.get(8..24) {
                r.nd_target = u128::from_be_bytes(t.try_into().ok()?);
            }
        }
        _ => {}
    }
    Some(r)
}

impl World {
    /// A fresh IPv6 packet on the consumer port (op 2). `a` bits 0-2 the source: hosts
    /// fd00:c1::10 (three of eight) and ::11, the endpoint's own address, a link-local
    /// host, a group (ff02::1), ::`y`; bits 3-5 the destination: the endpoint's IPv6
    /// address (four), the attachment's own, an unknown ::65, the endpoint's
    /// solicited-node group, an address off the prefix. `b` bits 0-1 the protocol (TCP,
    /// UDP, ICMPv6, other = `c`), 2-7 the ports as for IPv4 ([`World::ports`]); ICMPv6 by
    /// `c % 4`: an echo request, a neighbour solicitation for the destination (with a
    /// link-layer option when `c` bit 2 is set), an advertisement for the source, a
    /// packet too big quoting a reply (MTU `win`). `ip` bits 0-2 the hop limit (64 five
    /// times, 1, 255, 0), bits 3-4 an extension header (none, hop-by-hop padding,
    /// destination options with an unknown option that asks for a discard, a routing
    /// header with segments left). `damage` bit 1 a wrong L4 checksum, bit 2 cuts the
    /// frame, bit 3 two fragments (cut after `8 * (1 + x % 4)` bytes, identification
    /// `seq`, the second first when `y` bit 3 is set).
    pub(super) fn fresh6(&mut self, r: &Rec) {
        let host = |i: u128| NET6 | i;
        let src = match r.a & 7 {
            0..=2 => host(0x10),
            3 => host(0x11),
            4 => ENDPOINT6,
            5 => 0xfe80 << 112 | 0x10,
            6 => ALL_NODES,
            _ => host(u128::from(r.y)),
        };
        let dst = match (r.a >> 3) & 7 {
            0..=3 => ENDPOINT6,
            4 => OWN6,
            5 => host(0x65),
            6 => icmpv6::solicited_node(ENDPOINT6),
            _ => 0xfd00_0099 << 96 | 1,
        };
        let (sport, dport) = self.ports(r, false, 0);
        let len = payload_len(r.len);
        let (proto, mut l4) = match r.b & 3 {
            0 => (6, packets::tcp(&fresh_tcp(r, (sport, dport), len), 0, 0)),
            1 => (17, packets::udp(sport, dport, len, 0, 0, false)),
            2 => (58, self.fresh_icmp6(r, src, dst, len)),
            _ => (r.c, vec![0x5a; len]),
        };
        fill_checksum6(src, dst, proto, &mut l4);
        let hop = [64, 64, 64, 64, 64, 1, 255, 0][usize::from(r.ip & 7)];
        self.send6(r, (src, dst), hop, proto, l4);
    }

    /// An ICMPv6 message of a fresh packet (see [`World::fresh6`]).
    fn fresh_icmp6(&self, r: &Rec, src: u128, dst: u128, len: usize) -> Vec<u8> {
        match r.c % 4 {
            0 => {
                let mut m = vec![128, 0, 0, 0];
                m.extend_from_slice(&r.seq.to_be_bytes());
                m.resize(8 + len, 0x5a);
                m
            }
            1 => {
                let target = if dst >> 120 == 0xff { ENDPOINT6 } else { dst };
                nd(true, target, (r.c & 4 != 0).then(|| host_mac6(src)))
            }
            2 => nd(false, src, Some(host_mac6(src))),
            _ => {
                // Packet too big about a reply the endpoint would have sent the source.
                let mut quoted_l4 = packets::tcp(
                    &Tcp {
                        sport: 80,
                        dport: 40000,
                        seq: r.seq,
                        flags: 0x12,
                        ..Tcp::default()
                    },
                    0,
                    0,
                );
                fill_checksum6(dst, src, 6, &mut quoted_l4);
                let quoted = ipv6(dst, src, 64, (0, &[]), 6, &quoted_l4);
                let mut m = vec![2, 0, 0, 0];
                m.extend_from_slice(&u32::from(r.win).to_be_bytes());
                m.extend_from_slice(&quoted);
                m
            }
        }
    }

    /// Sends `l4` (checksum filled) from `src` to `dst` on the consumer port with the
    /// record's extension header, fragments and damage.
    fn send6(&mut self, r: &Rec, (src, dst): (u128, u128), hop: u8, proto: u8, mut l4: Vec<u8>) {
        let dmg = r.damage();
        let mut clean = true;
        if dmg & 2 != 0 {
            packets::spoil_l4_checksum(proto, &mut l4);
            clean = false;
        }
        // (first type, bytes): each ends with the next header `proto`.
        let ext: (u8, Vec<u8>) = match (r.ip >> 3) & 3 {
            0 => (0, Vec::new()),
            1 => (0, vec![proto, 0, 1, 4, 0, 0, 0, 0]),
            2 => (60, vec![proto, 0, 0x9e, 4, 0, 0, 0, 0]),
            _ => (43, vec![proto, 0, 0, 1, 0, 0, 0, 0]),
        };
        let dst_mac = if dst >> 120 == 0xff {
            let d = dst.to_be_bytes();
            [0x33, 0x33, d[12], d[13], d[14], d[15]]
        } else {
            MACS[usize::from(CONSUMER_PORT)]
        };
        let eth = Eth {
            dst: dst_mac,
            src: host_mac6(src),
            tags: Vec::new(),
        };
        let worker = self.worker_of(r);
        if dmg & 8 != 0 && l4.len() > 8 {
            // Two fragments: a fragment header (after the record's extension header)
            // carrying `proto`, offsets in 8-byte units.
            let cut = (8 * (1 + usize::from(r.x % 4))).min((l4.len() - 1) / 8 * 8);
            let (head, tail) = l4.split_at(cut);
            let (first, mut chain) = if ext.1.is_empty() {
                (44, Vec::new())
            } else {
                let mut c = ext.1.clone();
                c[0] = 44;
                (ext.0, c)
            };
            let at = chain.len();
            chain.extend_from_slice(&[proto, 0, 0, 0]);
            chain.extend_from_slice(&r.seq.to_be_bytes());
            let mut pkts = Vec::with_capacity(2);
            for (offset, more, part) in [(0, true, head), (cut, false, tail)] {
                let off = u16::try_from(offset).unwrap_or(0) | u16::from(more);
                chain[at + 2..at + 4].copy_from_slice(&off.to_be_bytes());
                pkts.push(ipv6(src, dst, hop, (first, &chain), 44, part));
            }
            if r.y & 8 != 0 {
                pkts.reverse();
            }
            for (i, pkt) in pkts.iter().enumerate() {
                let mut f = packets::frame(&eth, 0x86dd, pkt);
                pad(&mut f, r);
                self.enqueue(CONSUMER_PORT, worker, i > 0 || r.batched(), f, clean);
            }
            return;
        }
        let pkt = ipv6(src, dst, hop, (ext.0, &ext.1), proto, &l4);
        let mut f = packets::frame(&eth, 0x86dd, &pkt);
        if dmg & 4 != 0 {
            let cut = (usize::from(r.x) % 64 + 1).min(f.len() - 1);
            f.truncate(f.len() - cut);
            clean = false;
        }
        pad(&mut f, r);
        self.enqueue(CONSUMER_PORT, worker, r.batched(), f, clean);
    }

    /// The answer of the IPv6 host an output went to (see [`World::answer`]): the TCP
    /// segments and UDP as for IPv4, the next echo request after an echo reply, an
    /// advertisement for a solicitation (the link-layer option unless `c` bit 3), an echo
    /// request otherwise.
    pub(super) fn answer6(&mut self, r: &Rec, p: &Read6) {
        let len = payload_len(r.len);
        let (me, peer) = (p.dst, p.src);
        let (proto, mut l4) = match p.proto {
            6 => {
                let flags = match r.c % 4 {
                    0 if p.flags & 0x02 != 0 && p.flags & 0x10 == 0 => 0x12,
                    0 if p.flags & 0x01 != 0 => 0x11,
                    0 => 0x10,
                    1 => 0x18,
                    2 => 0x11,
                    _ => 0x04,
                };
                let data = if r.c % 4 == 1 { len } else { 0 };
                let t = Tcp {
                    sport: p.dport,
                    dport: p.sport,
                    seq: p.ack.wrapping_add(delta(r.z, r.seq)),
                    ack: p.seq.wrapping_add(p.seg_len),
                    flags,
                    window: r.win,
                    options: Vec::new(),
                    payload_len: data,
                };
                (6, packets::tcp(&t, 0, 0))
            }
            17 => (17, packets::udp(p.dport, p.sport, len, 0, 0, false)),
            58 if p.icmp_type == 135 => (
                58,
                nd(
                    false,
                    p.nd_target,
                    (r.c & 8 == 0).then(|| host_mac6(p.nd_target)),
                ),
            ),
            58 if p.icmp_type == 129 => {
                let mut m = vec![128, 0, 0, 0];
                m.extend_from_slice(&p.sport.to_be_bytes());
                m.extend_from_slice(&lo16(p.seq).wrapping_add(1).to_be_bytes());
                m.resize(8 + len, 0x5a);
                (58, m)
            }
            _ => {
                let mut m = vec![128, 0, 0, 0];
                m.extend_from_slice(&r.seq.to_be_bytes());
                (58, m)
            }
        };
        // A solicitation came to a group: its answer comes from the target it asked for.
        let from = if p.icmp_type == 135 { p.nd_target } else { me };
        fill_checksum6(from, peer, proto, &mut l4);
        let hop = if proto == 58 { 255 } else { 64 };
        let rec = Rec {
            ip: r.ip & !0x18,
            ..*r
        };
        self.send6(&rec, (from, peer), hop, proto, l4);
    }
}
