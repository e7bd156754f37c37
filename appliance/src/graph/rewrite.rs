//! The rewrite node: NAT of a tracked packet for its flow's other side (addresses,
//! ports, TTL) with both checksums updated incrementally, then on to the L2 output.

use super::context::Ctx;
use super::dispatch::Next;
use super::*;

/// The fixed IPv4 header: the least a header can be.
const IPV4_HEADER: usize = crate::wire::ipv4::HEADER_LEN;

impl<F: Frame> Pipeline<F> {
    /// Translates a packet the flow nodes tracked (`ctx.other` names the flow's other
    /// side) and sends it out towards that side's host. Always inlined into the graph's
    /// loop (its IPv6 translations are not): a call per packet cost ~16 instructions of
    /// saved registers and a verdict packed for return.
    #[inline(always)]
    pub(super) fn rewrite(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let other = ctx.other;
        if ctx.frag.is_some() {
            self.counters.fragments += 1;
        }
        // A flow of an IPv6 consumer: its packets and its replies change IP version,
        // unless its target is IPv6 too (NAT66).
        if ctx.ipv6 || super::nat64::is_ipv6_consumer(other.src_ip) {
            if super::nat64::is_snat6(other.dst_ip) || super::nat64::is_snat6(ctx.key.dst_ip) {
                return self.rewrite66(snap, frame, ctx, now_ms);
            }
            return self.rewrite64(snap, frame, ctx, now_ms);
        }
        let pkt = frame
            .bytes_mut()
            .get_mut(ctx.l3..ctx.end())
            .ok_or(DropReason::Malformed)?;
        if ctx.is_later_fragment() {
            nat_ip_only(pkt, &ctx.key, &other);
            return Ok(Next::Out {
                att: other.vpc,
                dst: other.src_ip,
            });
        }
        nat(pkt, ctx.header_len, &ctx.key, &other);
        Ok(Next::Out {
            att: other.vpc,
            dst: other.src_ip,
        })
    }
}

/// Source := `other`'s destination, destination := `other`'s source (addresses and
/// ports), TTL - 1, both checksums updated incrementally (RFC 1624 eq. 3). `pkt` is an
/// IPv4 packet with a `header_len`-byte header (checked, >= 20) and a complete UDP or TCP
/// header.
///
/// The one's-complement sum over 32-bit words equals the sum over their 16-bit halves
/// (modulo 0xFFFF), so each address and the port pair enter as one term, and the address
/// terms, which both checksums cover, are summed once.
#[inline]
pub(super) fn nat(pkt: &mut [u8], header_len: usize, old: &FlowKey, other: &FlowKey) {
    let Some((h, seg)) = pkt.split_at_mut_checked(header_len.max(IPV4_HEADER)) else {
        return;
    };
    let addrs = nat_header(h, old, other);

    let udp = old.proto == PROTO_UDP;
    let old_ports = (u32::from(old.src_port) << 16) | u32::from(old.dst_port);
    let new_ports = (u32::from(other.dst_port) << 16) | u32::from(other.src_port);
    let csum_at = if udp { 6 } else { 16 };
    let Some(c) = seg.get_mut(csum_at..csum_at + 2) else {
        return;
    };
    let l4_csum = u16::from_be_bytes([c[0], c[1]]);
    // A UDP checksum of 0 means "none" and stays so; a computed 0 is sent as 0xFFFF.
    let l4_csum = if udp && l4_csum == 0 {
        0
    } else {
        let sum = u64::from(!l4_csum) + addrs + u64::from(!old_ports) + u64::from(new_ports);
        match !checksum::fold(sum) {
            0 if udp => 0xFFFF,
            c => c,
        }
    };
    c.copy_from_slice(&l4_csum.to_be_bytes());
    if let Some(ports) = seg.get_mut(0..4) {
        ports.copy_from_slice(&new_ports.to_be_bytes());
    }
}

/// [`nat`] for a fragment other than its datagram's first: the IP header alone (it has no
/// L4 header; the first fragment's L4 checksum, updated there, covers the whole datagram).
#[inline]
pub(super) fn nat_ip_only(pkt: &mut [u8], old: &FlowKey, other: &FlowKey) {
    if let Some(h) = pkt.get_mut(..IPV4_HEADER) {
        nat_header(h, old, other);
    }
}

/// The IP header's part of [`nat`] on `h` (at least 20 bytes): addresses, TTL, header
/// checksum. Returns the addresses' change as a one's-complement term, which the L4
/// checksum takes too.
#[inline(always)]
fn nat_header(h: &mut [u8], old: &FlowKey, other: &FlowKey) -> u64 {
    let (new_src, new_dst) = (other.dst_ip, other.src_ip);
    let addrs =
        u64::from(!old.src_ip) + u64::from(!old.dst_ip) + u64::from(new_src) + u64::from(new_dst);
    // TTL - 1 lowers the (TTL, protocol) word by 0x100: ~w + (w - 0x100) = 0xFEFF.
    const TTL_DECREMENT: u64 = 0xFEFF;
    if let Some(h) = h.get_mut(..IPV4_HEADER) {
        let ip_csum = u16::from_be_bytes([h[10], h[11]]);
        let ip_csum = !checksum::fold(u64::from(!ip_csum) + addrs + TTL_DECREMENT);
        h[8] = h[8].wrapping_sub(1);
        h[10..12].copy_from_slice(&ip_csum.to_be_bytes());
        h[12..16].copy_from_slice(&new_src.to_be_bytes());
        h[16..20].copy_from_slice(&new_dst.to_be_bytes());
    }
    addrs
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::tcp::TcpRepr;
    use crate::wire::udp::UdpRepr;

    /// An IPv4 packet (20-byte header) with a UDP or TCP segment, all checksums valid.
    fn packet(tcp: bool, key: &FlowKey, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst) = (key.src_ip.into(), key.dst_ip.into());
        let l4_len = if tcp { 20 } else { 8 } + payload.len();
        let mut p = vec![0u8; 20 + l4_len];
        if tcp {
            p[40..].copy_from_slice(payload);
            TcpRepr {
                src_port: key.src_port,
                dst_port: key.dst_port,
                seq_number: 7,
                ack_number: 9,
                flags: crate::wire::tcp::TcpFlags::ACK,
                window_len: 512,
                urgent_at: 0,
            }
            .emit(&mut p[20..], src, dst, payload.len())
            .unwrap();
        } else {
            p[28..].copy_from_slice(payload);
            UdpRepr {
                src_port: key.src_port,
                dst_port: key.dst_port,
            }
            .emit(&mut p[20..], src, dst, payload.len())
            .unwrap();
        }
        Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            protocol: if tcp {
                IpProtocol::TCP
            } else {
                IpProtocol::UDP
            },
            payload_len: l4_len,
            ttl,
        }
        .emit(&mut p)
        .unwrap();
        p
    }

    fn key(ips: [u32; 2], ports: [u16; 2], tcp: bool) -> FlowKey {
        FlowKey {
            src_ip: ips[0],
            dst_ip: ips[1],
            src_port: ports[0],
            dst_port: ports[1],
            vpc: 0,
            proto: if tcp { PROTO_TCP } else { PROTO_UDP },
        }
    }

    proptest! {
        /// The incremental rewrite gives exactly what building the translated packet
        /// from scratch gives, checksums included.
        #[test]
        fn rewrite_equals_rebuilding(
            tcp in any::<bool>(),
            ips in any::<[u32; 4]>(),
            ports in any::<[u16; 4]>(),
            ttl in 2u8..=255,
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            no_udp_checksum in any::<bool>(),
        ) {
            let old = key([ips[0], ips[1]], [ports[0], ports[1]], tcp);
            let other = key([ips[2], ips[3]], [ports[2], ports[3]], tcp);
            let mut p = packet(tcp, &old, ttl, &payload);
            let translated = key([other.dst_ip, other.src_ip], [other.dst_port, other.src_port], tcp);
            let mut want = packet(tcp, &translated, ttl - 1, &payload);
            if !tcp && no_udp_checksum {
                p[26..28].fill(0);
                want[26..28].fill(0);
            }
            nat(&mut p, IPV4_HEADER, &old, &other);
            prop_assert_eq!(p, want);
        }
    }
}
