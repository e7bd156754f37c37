//! IPv6 events of a scenario: fresh packets from the consumer VPC's IPv6 hosts to the
//! dual-stack endpoint (NAT64 to the IPv4 listeners, NAT66 to the IPv6 ones), the
//! appliance's own IPv6 address and others, and from the provider VPC's IPv6 hosts to the
//! IPv6 SNAT address and others, with extension headers, fragments and neighbour
//! discovery; the answers of the IPv6 hosts the appliance sent to (the next segment of a
//! TCP flow, a UDP reply, an echo, a neighbour advertisement for a solicitation), on
//! either side; and ICMPv6 errors quoting what it sent.

use super::*;
use crate::wire::icmpv6;

/// The consumer VPC's IPv6 prefix (`fd00:c1::/64`) and its hosts.
const NET6: u128 = 0xfd00_00c1_0000_0000_0000_0000_0000_0000;
/// The dual-stack endpoint's IPv6 address and the attachment's own.
const ENDPOINT6: u128 = NET6 | 0x64;
const OWN6: u128 = NET6 | 1;
/// The provider VPC's IPv6 prefix (`fd00:b1::/64`), the appliance's own address and the
/// IPv6 SNAT address there, and the NAT66 listeners' targets.
const NET6_P: u128 = 0xfd00_00b1_0000_0000_0000_0000_0000_0000;
const OWN6_P: u128 = NET6_P | 1;
const SNAT6: u128 = NET6_P | 0x100;
pub(super) const TARGETS6: [u128; 2] = [NET6_P | 0x11, NET6_P | 0x12];
const ALL_NODES: u128 = 0xff02_0000_0000_0000_0000_0000_0000_0001;

/// A host's MAC on `port` from its IPv6 address (its low bytes), like [`host_mac`] for
/// IPv4.
pub(super) fn host_mac6(port: u16, ip: u128) -> [u8; 6] {
    #[allow(clippy::cast_possible_truncation)] // the low 24 bits
    host_mac(port, ip as u32 & 0x00ff_ffff)
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
    /// A fresh IPv6 packet on the consumer port (op 2), or (`provider`) on the provider
    /// port (op 3 with `l2` bits 0-1 set). Consumer side: `a` bits 0-2 the source: hosts
    /// fd00:c1::10 (three of eight) and ::11, the endpoint's own address, a link-local
    /// host, a group (ff02::1), ::`y`; bits 3-5 the destination: the endpoint's IPv6
    /// address (four), the attachment's own, an unknown ::65, the endpoint's
    /// solicited-node group, an address off the prefix. Provider side: sources the targets
    /// fd00:b1::11 (three) and ::12, a non-target ::50, the SNAT address ::100, a
    /// link-local host, ::`y`; destinations the SNAT address (four), the attachment's own,
    /// an unknown ::65, the SNAT address's solicited-node group, the consumer's endpoint.
    /// `b` bits 0-1 the protocol (TCP, UDP, ICMPv6, other = `c`), 2-7 the ports as for
    /// IPv4 ([`World::ports`]; with `ip` bit 5 the consumer's 80 and 9000 are the NAT66
    /// listeners' 443 and 9443, the provider's 8080 their targets' 8443); ICMPv6 by
    /// `c % 4`: an echo request, a neighbour solicitation for the destination (with a
    /// link-layer option when `c` bit 2 is set), an advertisement for the source, a
    /// packet too big quoting a reply (MTU `win`). `ip` bits 0-2 the hop limit (64 five
    /// times, 1, 255, 0), bits 3-4 an extension header (none, hop-by-hop padding,
    /// destination options with an unknown option that asks for a discard, a routing
    /// header with segments left). `damage` bit 1 a wrong L4 checksum, bit 2 cuts the
    /// frame, bit 3 two fragments (cut after `8 * (1 + x % 4)` bytes, identification
    /// `seq`, the second first when `y` bit 3 is set).
    pub(super) fn fresh6(&mut self, r: &Rec, provider: bool) {
        let (net, own, local) = if provider {
            (NET6_P, OWN6_P, SNAT6)
        } else {
            (NET6, OWN6, ENDPOINT6)
        };
        let host = |i: u128| net | i;
        let src = match (provider, r.a & 7) {
            (false, 0..=2) => host(0x10),
            (false, 3) => host(0x11),
            (true, 0..=2) => TARGETS6[0],
            (true, 3) => TARGETS6[1],
            (true, 4) => host(0x50),
            (_, 4) => ENDPOINT6,
            (true, 5) => SNAT6,
            (_, 5) => 0xfe80 << 112 | 0x10,
            (false, 6) => ALL_NODES,
            (true, 6) => 0xfe80 << 112 | 0x11,
            _ => host(u128::from(r.y)),
        };
        let dst = match (r.a >> 3) & 7 {
            0..=3 => local,
            4 => own,
            5 => host(0x65),
            6 => icmpv6::solicited_node(local),
            _ if provider => ENDPOINT6,
            _ => 0xfd00_0099 << 96 | 1,
        };
        let (mut sport, mut dport) = self.ports(r, provider, 0);
        if r.ip & 0x20 != 0 {
            if provider {
                sport = if sport == 8080 { 8443 } else { sport };
            } else {
                dport = match dport {
                    80 => 443,
                    9000 => 9443,
                    p => p,
                };
            }
        }
        if provider && (r.b >> 2) & 7 <= 2 {
            dport = self.snat_port_towards6(src, sport).unwrap_or(1024);
        }
        let len = payload_len(r.len);
        let (proto, mut l4) = match r.b & 3 {
            0 => (6, packets::tcp(&fresh_tcp(r, (sport, dport), len), 0, 0)),
            1 => (17, packets::udp(sport, dport, len, 0, 0, false)),
            2 => (58, self.fresh_icmp6(r, provider, (src, dst), len)),
            _ => (r.c, vec![0x5a; len]),
        };
        fill_checksum6(src, dst, proto, &mut l4);
        let hop = [64, 64, 64, 64, 64, 1, 255, 0][usize::from(r.ip & 7)];
        let port = if provider {
            PROVIDER_PORT
        } else {
            CONSUMER_PORT
        };
        self.send6(r, port, (src, dst), hop, proto, l4);
    }

    /// The source port of the newest IPv6 packet the appliance sent to `ip:port` on the
    /// provider port (a NAT66 flow's SNAT port).
    fn snat_port_towards6(&self, ip: u128, port: u16) -> Option<u16> {
        self.outputs.iter().rev().find_map(|s| {
            if s.port != PROVIDER_PORT {
                return None;
            }
            match read_frame(&s.bytes)?.kind {
                ReadKind::Ip6(p) if matches!(p.proto, 6 | 17) && p.dst == ip && p.dport == port => {
                    Some(p.sport)
                }
                _ => None,
            }
        })
    }

    /// An ICMPv6 error about a remembered IPv6 output `original` (sent on `port`, read as
    /// `p`), back to its source (op 7). `c` bits 0-1 the reporter (the output's
    /// destination twice, a router ::fe on that side's prefix, the output's own source),
    /// bits 2-3 the type (packet too big with MTU `win`, unreachable with code `c >> 4`,
    /// time exceeded, parameter problem pointing at `x`); `x % 4` how much is quoted (all
    /// of it up to 1232 bytes, 48 bytes, 40, 44).
    pub(super) fn icmp_error6(&mut self, r: &Rec, port: u16, p: &Read6, original: &[u8]) {
        self.stats.icmp_errors_built += 1;
        let net = if port == PROVIDER_PORT { NET6_P } else { NET6 };
        let reporter = match r.c & 3 {
            0 | 1 => p.dst,
            2 => net | 0xfe,
            _ => p.src,
        };
        let quoted = match r.x % 4 {
            0 => 1232,
            1 => 48,
            2 => 40,
            _ => 44,
        };
        let quote = &original[..quoted.min(original.len())];
        let (t, code, word) = match (r.c >> 2) & 3 {
            0 => (2, 0, u32::from(r.win)),
            1 => (1, (r.c >> 4) & 7, 0),
            2 => (3, 0, 0),
            _ => (4, 0, u32::from(r.x)),
        };
        let mut m = vec![t, code, 0, 0];
        m.extend_from_slice(&word.to_be_bytes());
        m.extend_from_slice(quote);
        fill_checksum6(reporter, p.src, 58, &mut m);
        let rec = Rec {
            ip: r.ip & !0x18,
            ..*r
        };
        self.send6(&rec, port, (reporter, p.src), 64, 58, m);
    }

    /// An ICMPv6 message of a fresh packet (see [`World::fresh6`]).
    fn fresh_icmp6(
        &self,
        r: &Rec,
        provider: bool,
        (src, dst): (u128, u128),
        len: usize,
    ) -> Vec<u8> {
        let port = if provider {
            PROVIDER_PORT
        } else {
            CONSUMER_PORT
        };
        match r.c % 4 {
            0 => {
                let mut m = vec![128, 0, 0, 0];
                m.extend_from_slice(&r.seq.to_be_bytes());
                m.resize(8 + len, 0x5a);
                m
            }
            1 => {
                let target = match (dst >> 120 == 0xff, provider) {
                    (false, _) => dst,
                    (true, false) => ENDPOINT6,
                    (true, true) => SNAT6,
                };
                nd(true, target, (r.c & 4 != 0).then(|| host_mac6(port, src)))
            }
            2 => nd(false, src, Some(host_mac6(port, src))),
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

    /// Sends `l4` (checksum filled) from `src` to `dst` on `port` with the record's
    /// extension header, fragments and damage.
    fn send6(
        &mut self,
        r: &Rec,
        port: u16,
        (src, dst): (u128, u128),
        hop: u8,
        proto: u8,
        mut l4: Vec<u8>,
    ) {
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
            MACS[usize::from(port)]
        };
        let eth = Eth {
            dst: dst_mac,
            src: host_mac6(port, src),
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
                self.enqueue(port, worker, i > 0 || r.batched(), f, clean);
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
        self.enqueue(port, worker, r.batched(), f, clean);
    }

    /// The answer of the IPv6 host an output on `port` went to (see [`World::answer`]):
    /// the TCP
    /// segments and UDP as for IPv4, the next echo request after an echo reply, an
    /// advertisement for a solicitation (the link-layer option unless `c` bit 3), an echo
    /// request otherwise.
    pub(super) fn answer6(&mut self, r: &Rec, port: u16, p: &Read6) {
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
                    (r.c & 8 == 0).then(|| host_mac6(port, p.nd_target)),
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
        self.send6(&rec, port, (from, peer), hop, proto, l4);
    }
}
