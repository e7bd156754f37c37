//! ICMP for IPv6 consumers of IPv4 services: what the appliance itself tells an IPv6
//! consumer (time exceeded, packet too big, a RST), and ICMP errors about a NAT64 flow
//! translated between the two versions (RFC 7915 §4.2 and §5.2), so that path-MTU
//! discovery, which IPv6 cannot do without, works across the translation both ways:
//!
//! - an ICMPv4 error from the provider's side (fragmentation needed from a router in
//!   front of a target, port unreachable, time exceeded) about a packet the appliance
//!   sent from its SNAT address becomes an ICMPv6 error from the endpoint's IPv6 address
//!   to the consumer, quoting the IPv6 packet the consumer sent;
//! - an ICMPv6 error from the consumer's side (packet too big from a router in front of
//!   the consumer) about a reply from the endpoint's IPv6 address becomes an ICMPv4 error
//!   from the SNAT address to the target, quoting the IPv4 packet the target sent.
//!
//! A "packet too big" carries the MTU as the other version counts it (IPv6 headers are
//! 20 bytes longer), never below IPv6's minimum of 1280. An egress MTU under 1260 bytes
//! cannot carry an IPv6 consumer's full-size packets at all (privlink does not fragment):
//! such packets are dropped as `too_big`.

use super::context::Ctx;
use super::dispatch::Next;
use super::ipv6::write_header_for;
use super::nat64::{delta, fold_snat6, fold_target6, is_snat6, l4_update, martian6, words, Side6};
use super::*;
use crate::wire::icmpv6::{Icmpv6Packet, Icmpv6Type};
use crate::wire::ipv4;
use crate::wire::ipv6::{self as ip6, next_header, Ipv6Packet};

/// IPv6's minimum link MTU: an ICMPv6 error is made to fit in it (RFC 4443 §2.4 (c)).
pub(super) const MIN_MTU6: usize = MIN_MTU6_U16 as usize;
const MIN_MTU6_U16: u16 = 1280;

/// The longest ICMPv4 error the appliance makes of an ICMPv6 one (RFC 1812 §4.3.2.3).
const MAX_ICMP4: usize = 576;

/// ICMPv4 and ICMPv6 headers (type, code, checksum, one 32-bit word).
const ICMP_HEADER: usize = 8;

/// The MTU an IPv6 consumer is told when its packet, translated, does not fit an egress
/// MTU of `egress_mtu` (`header_len` is its IPv6 header with extensions): `None` below
/// IPv6's minimum, which no consumer may go under.
pub(super) fn mtu_for_ipv6(egress_mtu: u16, header_len: usize) -> Option<u16> {
    let fits = usize::from(egress_mtu) + header_len - ipv4::HEADER_LEN;
    (fits >= MIN_MTU6).then(|| u16::try_from(fits).unwrap_or(u16::MAX))
}

/// RFC 1191's plateaus: the path MTU to assume when a router says "fragmentation needed"
/// without one (the largest below the quoted packet's length).
fn plateau(quoted_total: u16) -> u16 {
    const PLATEAUS: [u16; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];
    PLATEAUS
        .into_iter()
        .find(|&p| p < quoted_total)
        .unwrap_or(68)
}

/// An ICMPv4 error as ICMPv6 (RFC 7915 §4.2): (type, code, the word after the checksum),
/// or `None` for what has no counterpart (it is dropped). `mtu` is the error's next-hop
/// MTU field, `quoted_total` the quoted packet's length, `consumer_mtu` the MTU of the
/// consumer's port.
fn icmp4_to_6(
    (typ, code): (u8, u8),
    mtu: u16,
    quoted_total: u16,
    consumer_mtu: u16,
) -> Option<(u8, u8, u32)> {
    const UNREACH: u8 = Icmpv6Type::DST_UNREACHABLE.0;
    match (typ, code) {
        (11, c @ 0..=1) => Some((Icmpv6Type::TIME_EXCEEDED.0, c, 0)),
        (3, 0 | 1 | 5..=8 | 11 | 12) => Some((UNREACH, 0, 0)),
        // Protocol unreachable: a parameter problem pointing at the next-header field.
        (3, 2) => Some((Icmpv6Type::PARAM_PROBLEM.0, 1, 6)),
        (3, 3) => Some((UNREACH, 4, 0)),
        (3, 4) => {
            let m = if mtu == 0 { plateau(quoted_total) } else { mtu };
            let m6 = (u32::from(m) + 20)
                .min(u32::from(consumer_mtu))
                .max(u32::from(MIN_MTU6_U16));
            Some((Icmpv6Type::PACKET_TOO_BIG.0, 0, m6))
        }
        (3, 9 | 10 | 13 | 15) => Some((UNREACH, 1, 0)),
        _ => None,
    }
}

/// An ICMPv6 error as ICMPv4 (RFC 7915 §5.2): (type, code, next-hop MTU), or `None`.
/// `mtu` is a packet-too-big's MTU, `provider_mtu` and `consumer_mtu` the ports' MTUs.
fn icmp6_to_4(
    (typ, code): (u8, u8),
    mtu: u32,
    provider_mtu: u16,
    consumer_mtu: u16,
) -> Option<(u8, u8, u16)> {
    match (Icmpv6Type(typ), code) {
        (Icmpv6Type::DST_UNREACHABLE, 0 | 2 | 3) => Some((3, 1, 0)),
        (Icmpv6Type::DST_UNREACHABLE, 1) => Some((3, 10, 0)),
        (Icmpv6Type::DST_UNREACHABLE, 4) => Some((3, 3, 0)),
        (Icmpv6Type::PACKET_TOO_BIG, 0) => {
            let m = mtu
                .saturating_sub(20)
                .min(u32::from(provider_mtu))
                .min(u32::from(consumer_mtu).saturating_sub(20))
                .max(68);
            Some((3, 4, u16::try_from(m).unwrap_or(u16::MAX)))
        }
        (Icmpv6Type::TIME_EXCEEDED, c @ 0..=1) => Some((11, c, 0)),
        (Icmpv6Type::PARAM_PROBLEM, 1) => Some((3, 2, 0)),
        _ => None,
    }
}

/// Rewrites the ports of a quoted TCP or UDP header `seg` to `ports`, and its checksum by
/// `addrs` (the addresses' change) when the quote reaches it (a UDP checksum of 0, none,
/// stays 0).
fn rewrite_quoted_l4(seg: &mut [u8], proto: u8, addrs: u64, ports: (u16, u16)) {
    let udp = proto == PROTO_UDP;
    let at = if udp { 6 } else { 16 };
    let has_sum = seg.get(at..at + 2).is_some_and(|c| !(udp && c == [0, 0]));
    if has_sum {
        // Long enough by the test above.
        let _ = l4_update(seg, udp, addrs, ports);
    } else if let Some(p) = seg.get_mut(0..4) {
        p[0..2].copy_from_slice(&ports.0.to_be_bytes());
        p[2..4].copy_from_slice(&ports.1.to_be_bytes());
    }
}

/// Writes a RST in IPv6 from `src` to `dst` at the front of `l3` (sized by the caller
/// for the two headers). False if it does not fit.
fn write_rst6(l3: &mut [u8], src: u128, dst: u128, rst: &crate::wire::tcp::TcpRepr) -> bool {
    let tcp_len = crate::wire::tcp::HEADER_LEN;
    let Some(seg) = l3.get_mut(ip6::HEADER_LEN..ip6::HEADER_LEN + tcp_len) else {
        return false;
    };
    let any = std::net::Ipv4Addr::UNSPECIFIED;
    if rst.emit(seg, any, any, 0).is_err() {
        return false;
    }
    seg[16..18].fill(0);
    let c = crate::wire::icmpv6::l4_checksum_v6(src, dst, PROTO_TCP, seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    write_header_for(l3, src, dst, PROTO_TCP, tcp_len, OWN_TTL);
    true
}

/// The source and destination of the IPv6 header at `l3` in `bytes`.
fn addresses6(bytes: &[u8], l3: usize) -> Result<(u128, u128), DropReason> {
    let h = bytes
        .get(l3..l3 + ip6::HEADER_LEN)
        .ok_or(DropReason::Malformed)?;
    let ip = Ipv6Packet::new_unchecked(h);
    Ok((ip.src_addr_u128(), ip.dst_addr_u128()))
}

impl<F: Frame> Pipeline<F> {
    /// Turns the IPv6 packet of `ip` (still as it arrived at `ip.l3`) into an ICMPv6
    /// error about it, back to its sender from our IPv6 address on `att_idx` (or the
    /// address it was sent to, when the attachment has none): `msg` is (type, code, the
    /// word after the checksum). As much of the packet is quoted as fits in 1280 bytes.
    /// The caller rate-limited it; the packet's drop is counted as `reason`.
    pub(super) fn icmp6_error_back(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ctx,
        (typ, code, word): (u8, u8, u32),
        reason: DropReason,
    ) -> Result<Next, DropReason> {
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let l3 = ip.l3;
        let (sender, to) = addresses6(frame.bytes(), l3)?;
        let from = att.ip6.unwrap_or(to);
        let head = ip6::HEADER_LEN + ICMP_HEADER;
        let quoted = ip.total_len.min(MIN_MTU6 - head);
        if !frame.set_len(l3 + head + quoted) {
            return Err(reason);
        }
        let out = frame.bytes_mut();
        out.copy_within(l3..l3 + quoted, l3 + head);
        let msg = &mut out[l3 + ip6::HEADER_LEN..l3 + head + quoted];
        msg[..4].copy_from_slice(&[typ, code, 0, 0]);
        msg[4..ICMP_HEADER].copy_from_slice(&word.to_be_bytes());
        Icmpv6Packet::new_unchecked(&mut *msg).fill_checksum(from, sender);
        let len = msg.len();
        write_header_for(
            &mut out[l3..],
            from,
            sender,
            next_header::ICMPV6,
            len,
            OWN_TTL,
        );
        reply_l2(out, att.mac);
        self.counters.icmp_errors_sent += 1;
        self.counters.drop(reason);
        Ok(Next::Tx(att.port))
    }

    /// Answers the IPv6 TCP segment of `ip` (still as it arrived), which no flow takes,
    /// with a RST in IPv6 from the address it was sent to. The caller rate-limited it.
    pub(super) fn reset_unknown6(
        &mut self,
        att: &AttachmentView,
        frame: &mut F,
        ip: &Ctx,
        rst: &crate::wire::tcp::TcpRepr,
    ) -> Result<Next, DropReason> {
        let (sender, to) = addresses6(frame.bytes(), ip.l3)?;
        let new_len = ip.l3 + ip6::HEADER_LEN + crate::wire::tcp::HEADER_LEN;
        if !frame.set_len(new_len) {
            return Err(DropReason::Malformed);
        }
        let bytes = frame.bytes_mut();
        if !write_rst6(&mut bytes[ip.l3..], to, sender, rst) {
            return Err(DropReason::Malformed);
        }
        reply_l2(bytes, att.mac);
        Ok(Next::Tx(att.port))
    }

    /// Sends a RST of our own (a flow that ended) from `src:ports.0` to `dst:ports.1` (an
    /// IPv6 consumer from its endpoint, or a NAT66 target from its SNAT address), on
    /// attachment `att_idx`, to its next hop (held while that resolves).
    pub(super) fn send_rst6(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        (src, dst): (u128, u128),
        ports: (u16, u16),
        seq: u32,
        now_ms: u64,
    ) {
        let Some(att) = snap.attachment(att_idx) else {
            return;
        };
        let (mac, next) = match self.next_hop6(att, att_idx, dst, now_ms) {
            Ok(hop) => hop,
            Err(reason) => {
                self.counters.drop(reason);
                return;
            }
        };
        let Some(mut f) = (self.alloc)() else {
            self.counters.drop(DropReason::NoMbuf);
            return;
        };
        let l3 = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        if !f.set_len(l3 + ip6::HEADER_LEN + crate::wire::tcp::HEADER_LEN) {
            self.counters.drop(DropReason::NoMbuf);
            return;
        }
        let rst = crate::wire::tcp::TcpRepr {
            src_port: ports.0,
            dst_port: ports.1,
            seq_number: seq,
            ack_number: 0,
            flags: crate::wire::tcp::TcpFlags::RST,
            window_len: 0,
            urgent_at: 0,
        };
        let bytes = f.bytes_mut();
        if !write_rst6(&mut bytes[l3..], src, dst, &rst) {
            self.counters.drop(DropReason::NoMbuf);
            return;
        }
        write_l2(bytes, att, mac, EtherType::IPV6);
        self.counters.rst_sent += 1;
        match next {
            Next::Hold6(a, slot) => self.hold6(f, a, slot, now_ms),
            _ => self.emitted.push((att.port, f)),
        }
    }

    /// An ICMPv4 error from the provider's side about a packet of the NAT64 flow whose
    /// consumer side is `fwd` and `side` (the error's quote at `quote_at`, its header
    /// `quote_header_len` long, a `proto` segment): the same error in ICMPv6 from the
    /// endpoint's IPv6 address to the consumer, quoting the packet the consumer sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn icmp_error_to_ipv6(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ip: &Ctx,
        (quote_at, quote_header_len, proto): (usize, usize, u8),
        fwd: &FlowKey,
        side: &Side6,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let att = snap.attachment(fwd.vpc).ok_or(DropReason::NoAttachment)?;
        let mut msg = [0u8; MIN_MTU6 - ip6::HEADER_LEN];
        let head = ICMP_HEADER + ip6::HEADER_LEN;
        let len = {
            let b = frame.bytes();
            let icmp = b
                .get(ip.l4_at()..ip.l4_at() + ICMP_HEADER)
                .ok_or(DropReason::Malformed)?;
            let q = b.get(quote_at..ip.end()).ok_or(DropReason::Malformed)?;
            let hl = quote_header_len;
            if q.len() < hl + 4 || hl < ipv4::HEADER_LEN {
                return Err(DropReason::Malformed);
            }
            let quoted_total = u16::from_be_bytes([q[2], q[3]]);
            let (typ, code, word) = icmp4_to_6(
                (icmp[0], icmp[1]),
                u16::from_be_bytes([icmp[6], icmp[7]]),
                quoted_total,
                att.mtu,
            )
            .ok_or(DropReason::IcmpUnsupported)?;
            msg[..4].copy_from_slice(&[typ, code, 0, 0]);
            msg[4..ICMP_HEADER].copy_from_slice(&word.to_be_bytes());
            let payload = quoted_total.saturating_sub(u16::try_from(hl).unwrap_or(60));
            let mut qh = Ipv6Packet::new_unchecked(&mut msg[ICMP_HEADER..head]);
            qh.set_version_class_label(q[1], 0);
            qh.set_payload_len(payload);
            qh.set_next_header(proto);
            qh.set_hop_limit(q[8]);
            qh.set_src_addr_u128(side.consumer);
            qh.set_dst_addr_u128(side.endpoint);
            let l4 = &q[hl..];
            let l4_len = l4.len().min(msg.len() - head);
            let seg = &mut msg[head..head + l4_len];
            seg.copy_from_slice(&l4[..l4_len]);
            let old = [
                u32::from_be_bytes([q[12], q[13], q[14], q[15]]),
                u32::from_be_bytes([q[16], q[17], q[18], q[19]]),
            ];
            let mut new = [0u32; 8];
            new[..4].copy_from_slice(&words(side.consumer));
            new[4..].copy_from_slice(&words(side.endpoint));
            rewrite_quoted_l4(seg, proto, delta(&old, &new), (fwd.src_port, fwd.dst_port));
            head + l4_len
        };
        let l3 = ip.l3;
        if !frame.set_len(l3 + ip6::HEADER_LEN + len) {
            return Err(DropReason::Malformed);
        }
        let out = frame.bytes_mut();
        let m = &mut out[l3 + ip6::HEADER_LEN..];
        m.copy_from_slice(&msg[..len]);
        Icmpv6Packet::new_unchecked(m).fill_checksum(side.endpoint, side.consumer);
        write_header_for(
            &mut out[l3..],
            side.endpoint,
            side.consumer,
            next_header::ICMPV6,
            len,
            ip.ttl - 1,
        );
        let next = self.route6(att, fwd.vpc, side.consumer, frame, l3, now_ms)?;
        self.counters.icmp_errors_translated += 1;
        Ok(next)
    }

    /// An ICMPv6 error (verified) from `src` on the consumer's side to the endpoint of
    /// handle `endpoint` at `dst`, its message `at..total` bytes into the packet at
    /// `ip.l3`, that arrived with hop limit `hop`: if it quotes a reply of a NAT64 flow,
    /// the same error in ICMPv4 from the SNAT address to the flow's target, quoting the
    /// packet the target sent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn icmp6_error_to_target(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ip: &Ctx,
        (src, dst, hop): (u128, u128, u8),
        (at, total): (usize, usize),
        endpoint: u32,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        if martian6(snap, ip.att, src) {
            return Err(DropReason::MartianSource);
        }
        let e = snap
            .endpoint_by_handle(endpoint)
            .ok_or(DropReason::NoListener)?;
        let b = frame.bytes();
        let m = b
            .get(ip.l3 + at..ip.l3 + total)
            .ok_or(DropReason::Malformed)?;
        let quoted = quoted6(m)?;
        let (proto, (qsrc, qdst), (qsport, qdport)) = (quoted.proto, quoted.addrs, quoted.ports);
        if qsrc != dst {
            return Err(DropReason::NoFlow);
        }
        let q = &m[ICMP_HEADER..];
        let qh = Ipv6Packet::new_unchecked(&q[..ip6::HEADER_LEN]);
        let l4 = &q[quoted.l4_at..];
        let key = FlowKey {
            src_ip: self.fold_consumer(qdst),
            dst_ip: e.ip,
            src_port: qdport,
            dst_port: qsport,
            vpc: ip.att,
            proto,
        };
        let Some(id) = self.find_flow(&key, None, false, now_ms) else {
            return self.seek_flow_owner(frame);
        };
        let side = match self.consumers6.get(id) {
            Some(s) if s.consumer == qdst && s.endpoint == qsrc => *s,
            _ => return Err(DropReason::Ipv6FlowCollision),
        };
        let other = self.flows.get(id).ok_or(DropReason::NoFlow)?.rev;
        if is_snat6(other.dst_ip) {
            // NAT66: on to the target in ICMPv6, from the SNAT address, quoting the
            // packet the target sent.
            let relay = Relay66 {
                from_to: (side.snat, side.target),
                quote: (side.target, side.snat),
                ports: (other.src_port, other.dst_port),
                att: other.vpc,
            };
            return self.relay66(snap, frame, ip, (at, total, hop), (&relay, &quoted), now_ms);
        }
        let provider = snap.attachment(other.vpc).ok_or(DropReason::NoAttachment)?;
        let consumer = snap.attachment(ip.att).ok_or(DropReason::NoAttachment)?;
        let (t4, c4, mtu4) = icmp6_to_4(
            (m[0], m[1]),
            u32::from_be_bytes([m[4], m[5], m[6], m[7]]),
            provider.mtu,
            consumer.mtu,
        )
        .ok_or(DropReason::IcmpUnsupported)?;
        if hop <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let mut msg = [0u8; MAX_ICMP4 - ipv4::HEADER_LEN];
        let head = ICMP_HEADER + ipv4::HEADER_LEN;
        msg[..2].copy_from_slice(&[t4, c4]);
        msg[6..ICMP_HEADER].copy_from_slice(&mtu4.to_be_bytes());
        // The packet the target sent, as IPv4 has it: the extension headers the
        // translation added (a fragment header) are IPv4's identification and flags.
        let total4 = (usize::from(qh.payload_len()) + ip6::HEADER_LEN).saturating_sub(quoted.l4_at)
            + ipv4::HEADER_LEN;
        let (id4, flags4) = match quoted.fragment {
            #[allow(clippy::cast_possible_truncation)] // IPv4's id is the low 16 bits
            Some(f) => (f.id as u16, if f.more { 0x2000u16 } else { 0 }),
            None => (0, 0x4000),
        };
        {
            let h = &mut msg[ICMP_HEADER..head];
            h[0] = 0x45;
            h[1] = qh.traffic_class();
            h[2..4].copy_from_slice(&u16::try_from(total4).unwrap_or(u16::MAX).to_be_bytes());
            h[4..6].copy_from_slice(&id4.to_be_bytes());
            h[6..8].copy_from_slice(&flags4.to_be_bytes());
            h[8] = qh.hop_limit();
            h[9] = proto;
            h[12..16].copy_from_slice(&other.src_ip.to_be_bytes());
            h[16..20].copy_from_slice(&other.dst_ip.to_be_bytes());
            let fixed: &[u8; 20] = (&*h).try_into().map_err(|_| DropReason::Malformed)?;
            let c = !checksum::fixed_header_sum(fixed);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4_len = l4.len().min(msg.len() - head);
        let seg = &mut msg[head..head + l4_len];
        seg.copy_from_slice(&l4[..l4_len]);
        let mut old = [0u32; 8];
        old[..4].copy_from_slice(&words(qsrc));
        old[4..].copy_from_slice(&words(qdst));
        rewrite_quoted_l4(
            seg,
            proto,
            delta(&old, &[other.src_ip, other.dst_ip]),
            (other.src_port, other.dst_port),
        );
        let len = head + l4_len;
        let l3 = ip.l3;
        if !frame.set_len(l3 + ipv4::HEADER_LEN + len) {
            return Err(DropReason::Malformed);
        }
        let out = frame.bytes_mut();
        let icmp = &mut out[l3 + ipv4::HEADER_LEN..];
        icmp.copy_from_slice(&msg[..len]);
        Icmpv4Packet::new_unchecked(icmp).fill_checksum();
        let repr = Ipv4Repr {
            src_addr: other.dst_ip.into(),
            dst_addr: other.src_ip.into(),
            protocol: IpProtocol(PROTO_ICMP),
            payload_len: len,
            ttl: hop - 1,
        };
        repr.emit(&mut out[l3..])
            .map_err(|_| DropReason::Malformed)?;
        self.counters.icmp_errors_translated += 1;
        Ok(Next::Out {
            att: other.vpc,
            dst: other.src_ip,
        })
    }
}

/// Where [`Pipeline::relay66`] sends an ICMPv6 error about a NAT66 flow: from and to
/// which addresses on which attachment, with the quoted packet's addresses and ports as
/// that side's host sent it.
struct Relay66 {
    from_to: (u128, u128),
    quote: (u128, u128),
    ports: (u16, u16),
    att: u16,
}

/// What an ICMPv6 error quotes of a TCP or UDP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quoted6 {
    proto: u8,
    /// Source and destination.
    addrs: (u128, u128),
    ports: (u16, u16),
    /// Where the quoted L4 header starts, from the start of the quoted IPv6 header
    /// (after any extension headers).
    l4_at: usize,
    /// The quoted packet's fragment header (never an atomic one), if it had one.
    fragment: Option<ip6::FragmentHeader>,
}

/// The quoted packet of ICMPv6 error message `m` (header first): its protocol (TCP or
/// UDP), addresses, ports and where its L4 header is, past the extension headers that
/// NAT66 keeps (hop-by-hop, destination options, a first fragment's header). A quote
/// without ports (a later fragment's), with a source route (never one of ours), or cut
/// before its L4 header is not followed: `icmp_unsupported`.
fn quoted6(m: &[u8]) -> Result<Quoted6, DropReason> {
    if m.len() < ICMP_HEADER + ip6::HEADER_LEN + 4 {
        return Err(DropReason::Malformed);
    }
    let q = &m[ICMP_HEADER..];
    let qh = Ipv6Packet::new_unchecked(&q[..ip6::HEADER_LEN]);
    if qh.version() != 6 {
        return Err(DropReason::IcmpUnsupported);
    }
    let ext = ip6::walk_extensions(qh.next_header(), &q[ip6::HEADER_LEN..])
        .map_err(|_| DropReason::IcmpUnsupported)?;
    let fragment = ext.fragment.filter(|f| !f.is_atomic());
    let l4_at = ip6::HEADER_LEN + ext.l4_at;
    let ports = q.get(l4_at..l4_at + 4);
    let (Some(p), true, false, None | Some(ip6::FragmentHeader { offset: 0, .. })) = (
        ports,
        matches!(ext.protocol, PROTO_TCP | PROTO_UDP),
        ext.source_route,
        fragment,
    ) else {
        return Err(DropReason::IcmpUnsupported);
    };
    Ok(Quoted6 {
        proto: ext.protocol,
        addrs: (qh.src_addr_u128(), qh.dst_addr_u128()),
        ports: (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        l4_at,
        fragment,
    })
}

impl<F: Frame> Pipeline<F> {
    /// An ICMPv6 error (verified) from `src` on the provider's side to our IPv6 SNAT
    /// address `dst`, its message `at..total` bytes into the packet at `ip.l3`, that
    /// arrived with hop limit `hop`: if it quotes a packet of a NAT66 flow (packet too big,
    /// unreachable, time exceeded), the same error from the endpoint's IPv6 address to
    /// the consumer, quoting the packet the consumer sent, so path-MTU discovery works
    /// through the appliance.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn icmp66_error_to_consumer(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ip: &Ctx,
        (src, dst, hop): (u128, u128, u8),
        (at, total): (usize, usize),
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        if martian6(snap, ip.att, src) {
            return Err(DropReason::MartianSource);
        }
        let m = frame
            .bytes()
            .get(ip.l3 + at..ip.l3 + total)
            .ok_or(DropReason::Malformed)?;
        let quoted = quoted6(m)?;
        let (proto, (qsrc, qdst), (qsport, qdport)) = (quoted.proto, quoted.addrs, quoted.ports);
        if qsrc != dst {
            return Err(DropReason::NoFlow);
        }
        // The quoted packet is one we sent from the SNAT port, which names its worker.
        let owner = self.snat.owner(qsport);
        if owner != self.id {
            frame.set_handoff_tag(0);
            return Ok(Next::Handoff(owner));
        }
        let key = FlowKey {
            src_ip: fold_target6(qdst),
            dst_ip: fold_snat6(qsrc),
            src_port: qdport,
            dst_port: qsport,
            vpc: ip.att,
            proto,
        };
        let id = self
            .find_flow(&key, None, true, now_ms)
            .ok_or(DropReason::NoFlow)?;
        let side = match self.consumers6.get(id) {
            Some(s) if s.target == qdst && s.snat == qsrc => *s,
            _ => return Err(DropReason::Ipv6FlowCollision),
        };
        let fwd = self.flows.get(id).ok_or(DropReason::NoFlow)?.fwd;
        let relay = Relay66 {
            from_to: (side.endpoint, side.consumer),
            quote: (side.consumer, side.endpoint),
            ports: (fwd.src_port, fwd.dst_port),
            att: fwd.vpc,
        };
        self.relay66(snap, frame, ip, (at, total, hop), (&relay, &quoted), now_ms)
    }

    /// The ICMPv6 error message at `at..total` of the packet at `ip.l3` (arrived with hop
    /// limit `hop`), about a NAT66 flow, for the flow's other side as `relay` says: its
    /// quoted packet's addresses and ports (and its L4 checksum) made the ones that
    /// side's host sent, behind a fresh IPv6 header (the quote cut to what fits 1280
    /// bytes), out to that host's next hop.
    fn relay66(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ip: &Ctx,
        (at, total, hop): (usize, usize, u8),
        (relay, quoted): (&Relay66, &Quoted6),
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        if hop <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let att = snap.attachment(relay.att).ok_or(DropReason::NoAttachment)?;
        let (l3, head) = (ip.l3, ip.l3 + ip6::HEADER_LEN);
        let len = (total - at).min(MIN_MTU6 - ip6::HEADER_LEN);
        // Extension headers may push the ports past what fits 1280 bytes: a quote
        // relayed without them would show the other side's ports.
        if ICMP_HEADER + quoted.l4_at + 4 > len {
            return Err(DropReason::IcmpUnsupported);
        }
        let (src, dst) = relay.from_to;
        {
            let b = frame.bytes_mut();
            b.copy_within(l3 + at..l3 + at + len, head);
            let q = &mut b[head + ICMP_HEADER..head + len];
            let old_src =
                u128::from_be_bytes(q[8..24].try_into().map_err(|_| DropReason::Malformed)?);
            let old_dst =
                u128::from_be_bytes(q[24..40].try_into().map_err(|_| DropReason::Malformed)?);
            q[8..24].copy_from_slice(&relay.quote.0.to_be_bytes());
            q[24..40].copy_from_slice(&relay.quote.1.to_be_bytes());
            let mut old = [0u32; 8];
            old[..4].copy_from_slice(&words(old_src));
            old[4..].copy_from_slice(&words(old_dst));
            let mut new = [0u32; 8];
            new[..4].copy_from_slice(&words(relay.quote.0));
            new[4..].copy_from_slice(&words(relay.quote.1));
            rewrite_quoted_l4(
                &mut q[quoted.l4_at..],
                quoted.proto,
                delta(&old, &new),
                relay.ports,
            );
        }
        if !frame.set_len(head + len) {
            return Err(DropReason::Malformed);
        }
        let out = frame.bytes_mut();
        Icmpv6Packet::new_unchecked(&mut out[head..head + len]).fill_checksum(src, dst);
        write_header_for(&mut out[l3..], src, dst, next_header::ICMPV6, len, hop - 1);
        let next = self.route6(att, relay.att, dst, frame, l3, now_ms)?;
        self.counters.icmp_errors_translated += 1;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7915_maps_icmpv4_errors_to_icmpv6() {
        assert_eq!(icmp4_to_6((11, 0), 0, 100, 1500), Some((3, 0, 0)));
        assert_eq!(icmp4_to_6((3, 1), 0, 100, 1500), Some((1, 0, 0)));
        assert_eq!(icmp4_to_6((3, 2), 0, 100, 1500), Some((4, 1, 6)));
        assert_eq!(icmp4_to_6((3, 3), 0, 100, 1500), Some((1, 4, 0)));
        assert_eq!(icmp4_to_6((3, 13), 0, 100, 1500), Some((1, 1, 0)));
        // 20 bytes more, no more than the consumer's port, never under 1280.
        assert_eq!(icmp4_to_6((3, 4), 1400, 0, 1500), Some((2, 0, 1420)));
        assert_eq!(icmp4_to_6((3, 4), 1492, 0, 1500), Some((2, 0, 1500)));
        assert_eq!(icmp4_to_6((3, 4), 576, 0, 1500), Some((2, 0, 1280)));
        // No MTU given: the plateau under the quoted packet's length.
        assert_eq!(icmp4_to_6((3, 4), 0, 1500, 9000), Some((2, 0, 1492 + 20)));
        assert_eq!(icmp4_to_6((3, 14), 0, 100, 1500), None);
        assert_eq!(icmp4_to_6((12, 0), 0, 100, 1500), None);
    }

    #[test]
    fn rfc_7915_maps_icmpv6_errors_to_icmpv4() {
        assert_eq!(icmp6_to_4((1, 0), 0, 1500, 1500), Some((3, 1, 0)));
        assert_eq!(icmp6_to_4((1, 1), 0, 1500, 1500), Some((3, 10, 0)));
        assert_eq!(icmp6_to_4((1, 4), 0, 1500, 1500), Some((3, 3, 0)));
        assert_eq!(icmp6_to_4((2, 0), 1300, 1500, 1500), Some((3, 4, 1280)));
        // Never more than the ports carry.
        assert_eq!(icmp6_to_4((2, 0), 9000, 1500, 9000), Some((3, 4, 1500)));
        assert_eq!(icmp6_to_4((2, 0), 9000, 9000, 1500), Some((3, 4, 1480)));
        assert_eq!(icmp6_to_4((3, 1), 0, 1500, 1500), Some((11, 1, 0)));
        assert_eq!(icmp6_to_4((4, 1), 0, 1500, 1500), Some((3, 2, 0)));
        assert_eq!(icmp6_to_4((4, 0), 0, 1500, 1500), None);
        assert_eq!(icmp6_to_4((1, 7), 0, 1500, 1500), None);
    }

    #[test]
    fn an_ipv6_consumer_is_told_an_mtu_it_may_use() {
        assert_eq!(mtu_for_ipv6(1500, 40), Some(1520));
        assert_eq!(mtu_for_ipv6(1400, 48), Some(1428));
        assert_eq!(mtu_for_ipv6(1260, 40), Some(1280));
        assert_eq!(mtu_for_ipv6(1259, 40), None);
    }
}
