//! The originate node's work: what the appliance sends of its own accord or in answer
//! (ARP requests and announcements, RSTs that end flows or answer segments no flow
//! knows, ICMP time exceeded and fragmentation needed), rate-limited where RFC 1812 asks.
//! A frame of its own goes out through the hold queue and the emitted list; an answer
//! turns the packet that caused it around.

use super::context::Ctx;
use super::dispatch::Next;
use super::*;
use crate::wire::icmpv6::{self, NdiscRepr};

/// TTL of packets the appliance originates.
pub(super) const OWN_TTL: u8 = 64;
/// ICMP errors and RSTs the worker may originate per second (RFC 1812 §4.3.2.8 asks
/// routers to rate-limit them).
pub(super) const ORIGINATED_PER_SEC: u32 = 2000;

impl<F: Frame> Pipeline<F> {
    /// Sends an ARP packet from `att` (request: `target_mac` broadcast).
    pub(super) fn send_arp(
        &mut self,
        att: &AttachmentView,
        op: ArpOperation,
        sender_ip: u32,
        target_ip: u32,
        target_mac: EthernetAddress,
        _now_ms: u64,
    ) {
        let mac = EthernetAddress(att.mac);
        self.arp_frame(att, op, (mac, sender_ip), target_ip, target_mac);
    }

    /// A gratuitous ARP request for `ip` naming `mac` (another node's) as its owner, sent
    /// from this port.
    pub(super) fn send_arp_as(&mut self, att: &AttachmentView, mac: EthernetAddress, ip: u32) {
        let op = ArpOperation::REQUEST;
        self.arp_frame(att, op, (mac, ip), ip, EthernetAddress::BROADCAST);
    }

    /// An unsolicited neighbour advertisement of `ip6` (one of the attachment's local IPv6
    /// addresses) at `lladdr` (this port's MAC, or the HA peer's when handing over) to all
    /// nodes, overriding what caches hold (RFC 4861 §7.2.6).
    pub(super) fn send_unsolicited_advert(
        &mut self,
        att: &AttachmentView,
        ip6: u128,
        lladdr: EthernetAddress,
    ) {
        let advert = NdiscRepr::Advert {
            router: false,
            solicited: false,
            override_: true,
            target: ip6,
            target_lladdr: Some(lladdr),
        };
        if self.nd_frame(att, &advert, (ip6, super::ipv6::ALL_NODES)) {
            self.counters.nd_advertisements += 1;
        }
    }

    /// A neighbour solicitation for next hop `target` from the attachment's own IPv6
    /// address, to the target's solicited-node group (RFC 4861 §7.2.2), carrying our MAC.
    pub(super) fn send_solicit(&mut self, att: &AttachmentView, target: u128) {
        let Some(ip6) = att.ip6 else { return };
        let solicit = NdiscRepr::Solicit {
            target,
            source_lladdr: Some(EthernetAddress(att.mac)),
        };
        if self.nd_frame(att, &solicit, (ip6, icmpv6::solicited_node(target))) {
            self.counters.nd_solicitations += 1;
        }
    }

    /// Sends neighbour discovery message `repr` from `src` to group `dst` on `att`; false
    /// when it could not (counted).
    fn nd_frame(
        &mut self,
        att: &AttachmentView,
        repr: &NdiscRepr,
        (src, dst): (u128, u128),
    ) -> bool {
        use super::ipv6::{write_header, ND_HOP_LIMIT};
        use crate::wire::ipv6;
        let Some(mut f) = (self.alloc)() else {
            self.counters.drop(DropReason::NoMbuf);
            return false;
        };
        let l2_len = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let l4 = l2_len + ipv6::HEADER_LEN;
        let end = l4 + icmpv6::ND_WITH_LLADDR_LEN;
        if !f.set_len(end) {
            self.counters.drop(DropReason::NoMbuf);
            return false;
        }
        let bytes = f.bytes_mut();
        write_l2(bytes, att, icmpv6::multicast_mac(dst), EtherType::IPV6);
        let Ok(len) = repr.emit(&mut bytes[l4..end], src, dst) else {
            self.counters.drop(DropReason::NoMbuf);
            return false;
        };
        write_header(&mut bytes[l2_len..], src, dst, len, ND_HOP_LIMIT);
        self.emitted.push((att.port, f));
        true
    }

    fn arp_frame(
        &mut self,
        att: &AttachmentView,
        op: ArpOperation,
        (sender_mac, sender_ip): (EthernetAddress, u32),
        target_ip: u32,
        target_mac: EthernetAddress,
    ) {
        let Some(mut f) = (self.alloc)() else {
            self.counters.drop(DropReason::NoMbuf);
            return;
        };
        let l2_len = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let len = l2_len + crate::wire::arp::PACKET_LEN;
        // A buffer too small for 64 bytes is as good as none.
        if !f.set_len(len) || !pad_frame(&mut f, att.vlan.is_some()) {
            self.counters.drop(DropReason::NoMbuf);
            return;
        }
        let bytes = f.bytes_mut();
        write_l2(bytes, att, EthernetAddress::BROADCAST, EtherType::ARP);
        let mut arp = ArpPacket::new_unchecked(&mut bytes[l2_len..]);
        arp.set_hardware_type(1);
        arp.set_protocol_type(EtherType::IPV4);
        arp.set_hardware_len(6);
        arp.set_protocol_len(4);
        arp.set_operation(op);
        arp.set_source_hardware_addr(sender_mac);
        arp.set_source_protocol_addr(sender_ip.into());
        arp.set_target_hardware_addr(if op == ArpOperation::REQUEST {
            EthernetAddress::UNSPECIFIED
        } else {
            target_mac
        });
        arp.set_target_protocol_addr(target_ip.into());
        self.counters.arp_requests += 1;
        self.emitted.push((att.port, f));
    }

    pub(super) fn send_rst(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        from: (u32, u16),
        to: (u32, u16),
        seq: u32,
        now_ms: u64,
    ) {
        // An IPv6 consumer (its key's fold) gets no RST: none is made in IPv6 yet, and an
        // IPv4 one to the fold would go nowhere.
        if super::nat64::is_ipv6_consumer(to.0) {
            return;
        }
        let rst = crate::wire::tcp::TcpRepr {
            src_port: from.1,
            dst_port: to.1,
            seq_number: seq,
            ack_number: 0,
            flags: crate::wire::tcp::TcpFlags::RST,
            window_len: 0,
            urgent_at: 0,
        };
        // Counted once built, as the RST of a flow that ended; one whose next hop fails
        // is no drop of a packet anyone sent.
        if self
            .send_segment(snap, att_idx, (from.0, to.0), &rst, &[], now_ms)
            .is_some()
        {
            self.counters.rst_sent += 1;
        }
    }

    /// Sends a TCP segment of the appliance's own from `addrs.0` to `addrs.1` on
    /// attachment `att_idx` (held while the next hop resolves). `None` if it could not be
    /// built (no buffer, counted, or one too small); else whether the output node took it.
    pub(super) fn send_segment(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        (src, dst): (u32, u32),
        tcp: &crate::wire::tcp::TcpRepr,
        payload: &[u8],
        now_ms: u64,
    ) -> Option<Result<(), DropReason>> {
        let att = snap.attachment(att_idx)?;
        let (mut f, l3, seg_len) =
            self.segment_frame(att.vlan.is_some(), crate::wire::ipv4::HEADER_LEN, payload)?;
        let bytes = f.bytes_mut();
        let seg_at = l3 + crate::wire::ipv4::HEADER_LEN;
        let emitted = tcp.emit(
            &mut bytes[seg_at..],
            std::net::Ipv4Addr::from(src),
            std::net::Ipv4Addr::from(dst),
            payload.len(),
        );
        emitted.ok()?;
        write_own_ipv4(&mut bytes[l3..], src, dst, PROTO_TCP, seg_len);
        let routed = self.route(snap, att_idx, dst, &mut f, l3, now_ms);
        Some(self.send_routed(f, routed, now_ms))
    }

    /// [`send_segment`](Self::send_segment) over IPv6: from `src` to `dst` on
    /// attachment `att_idx`, to the next hop neighbour discovery gives (held while it
    /// resolves).
    pub(super) fn send_segment6(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        (src, dst): (u128, u128),
        tcp: &crate::wire::tcp::TcpRepr,
        payload: &[u8],
        now_ms: u64,
    ) -> Option<Result<(), DropReason>> {
        use crate::wire::ipv6;
        let att = snap.attachment(att_idx)?;
        if ipv6::HEADER_LEN + crate::wire::tcp::HEADER_LEN + payload.len() > usize::from(att.mtu) {
            return Some(Err(DropReason::TooBig));
        }
        let (mut f, l3, seg_len) =
            self.segment_frame(att.vlan.is_some(), ipv6::HEADER_LEN, payload)?;
        let bytes = f.bytes_mut();
        let seg_at = l3 + ipv6::HEADER_LEN;
        tcp.emit6(&mut bytes[seg_at..], src, dst, payload.len())
            .ok()?;
        super::ipv6::write_header_for(&mut bytes[l3..], src, dst, PROTO_TCP, seg_len, 64);
        let routed = self.route6(att, att_idx, dst, &mut f, l3, now_ms);
        Some(self.send_routed(f, routed, now_ms))
    }

    /// A frame for a TCP segment of ours carrying `payload` behind an IP header of
    /// `ip_header` bytes (and a VLAN tag when `tagged`), the payload in place: the frame,
    /// where its IP header starts and the segment's length. `None`, counted, without a
    /// buffer (one too small for 64 bytes is as good as none).
    fn segment_frame(
        &mut self,
        tagged: bool,
        ip_header: usize,
        payload: &[u8],
    ) -> Option<(F, usize, usize)> {
        let Some(mut f) = (self.alloc)() else {
            self.counters.drop(DropReason::NoMbuf);
            return None;
        };
        let l3 = ethernet::HEADER_LEN + if tagged { vlan::TAG_LEN } else { 0 };
        let seg_len = crate::wire::tcp::HEADER_LEN + payload.len();
        if !f.set_len(l3 + ip_header + seg_len) || !pad_frame(&mut f, tagged) {
            self.counters.drop(DropReason::NoMbuf);
            return None;
        }
        let seg_at = l3 + ip_header;
        f.bytes_mut()[seg_at + crate::wire::tcp::HEADER_LEN..seg_at + seg_len]
            .copy_from_slice(payload);
        Some((f, l3, seg_len))
    }

    /// Sends a frame of our own where routing it said: out of a port, or held until its
    /// next hop answers.
    fn send_routed(
        &mut self,
        f: F,
        routed: Result<Next, DropReason>,
        now_ms: u64,
    ) -> Result<(), DropReason> {
        match routed? {
            Next::Tx(port) => self.emitted.push((port, f)),
            Next::Hold(a, nh) => self.hold(f, a, Hop::V4(nh), now_ms),
            Next::Hold6(a, slot) => self.hold6(f, a, slot, now_ms),
            _ => return Err(DropReason::NoAttachment),
        }
        Ok(())
    }

    fn may_originate(&mut self) -> bool {
        let now = self.last_tick_ms;
        if now >= self.originate_refill_ms + 1000 {
            self.originate_refill_ms = now;
            self.originate_tokens = ORIGINATED_PER_SEC;
        }
        if self.originate_tokens == 0 {
            return false;
        }
        self.originate_tokens -= 1;
        true
    }

    /// Answers a TCP segment that matches no flow with a RST from the address it was sent
    /// to (RFC 793, "reset generation"), and counts the drop.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reset_unknown(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ctx,
        flags: TcpFlags,
        reason: DropReason,
    ) -> Result<Next, DropReason> {
        if flags.rst() || !self.may_originate() {
            return Err(reason);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let l4 = ip.l3 + ip.header_len;
        let rst = {
            let bytes = frame.bytes();
            let seg = bytes
                .get(l4..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let tcp = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
            crate::wire::tcp::TcpRepr::rst_reply(&tcp).map_err(|_| DropReason::NoFlow)?
        };
        if ip.ipv6 {
            let next = self.reset_unknown6(att, frame, ip, &rst)?;
            self.counters.rst_sent += 1;
            self.counters.drop(reason);
            return Ok(next);
        }
        let (src, dst) = ip.v4();
        let new_len = ip.l3 + crate::wire::ipv4::HEADER_LEN + crate::wire::tcp::HEADER_LEN;
        if !frame.set_len(new_len) {
            return Err(DropReason::Malformed);
        }
        let bytes = frame.bytes_mut();
        if !write_rst(&mut bytes[ip.l3..], dst, src, &rst) {
            return Err(DropReason::Malformed);
        }
        reply_l2(bytes, att.mac);
        if !pad_frame(frame, ip.l3 > ethernet::HEADER_LEN) {
            return Err(DropReason::Malformed);
        }
        self.counters.rst_sent += 1;
        self.counters.drop(reason);
        Ok(Next::Tx(att.port))
    }

    /// Answers a packet whose TTL ran out here with ICMP time exceeded from our address on
    /// the attachment it came from, and counts the drop.
    pub(super) fn time_exceeded(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ctx,
    ) -> Result<Next, DropReason> {
        self.icmp_error_back(snap, att_idx, frame, ip, None)
    }

    /// A packet larger than its egress MTU `mtu`: with DF, answered with ICMP
    /// fragmentation needed carrying that MTU (RFC 1191) from our address on the
    /// attachment it came from; without, dropped, since privlink does not fragment.
    pub(super) fn too_big(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ctx,
        mtu: u16,
    ) -> Result<Next, DropReason> {
        if !ip.df {
            return Err(DropReason::TooBig);
        }
        self.icmp_error_back(snap, att_idx, frame, ip, Some(mtu))
    }

    /// Turns `frame` into an ICMP error about it, back to its sender from our address on
    /// `att_idx`: time exceeded, or fragmentation needed with `frag_needed` as the
    /// next-hop MTU (for an IPv6 consumer, ICMPv6 time exceeded or packet too big).
    /// Rate-limited; the packet's drop is counted either way.
    fn icmp_error_back(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        frame: &mut F,
        ip: &Ctx,
        frag_needed: Option<u16>,
    ) -> Result<Next, DropReason> {
        let reason = match frag_needed {
            None => DropReason::TtlExceeded,
            Some(_) => DropReason::FragNeeded,
        };
        // Nothing is said about a fragment other than the first (RFC 1812 §4.3.2.7): it
        // quotes no ports, so its sender could not tell which flow it was about.
        if ip.is_later_fragment() || !self.may_originate() {
            return Err(reason);
        }
        if ip.ipv6 {
            use crate::wire::icmpv6::Icmpv6Type;
            let msg = match frag_needed {
                None => (Icmpv6Type::TIME_EXCEEDED.0, 0, 0),
                Some(mtu) => (Icmpv6Type::PACKET_TOO_BIG.0, 0, u32::from(mtu)),
            };
            return self.icmp6_error_back(snap, att_idx, frame, ip, msg, reason);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let (src, _) = ip.v4();
        let mut quote = [0u8; 60 + icmpv4::QUOTE_PAYLOAD_LEN];
        let qlen = {
            let bytes = frame.bytes();
            let orig = bytes
                .get(ip.l3..ip.l3 + ip.total_len)
                .ok_or(DropReason::Malformed)?;
            let q = icmpv4::quote_of(orig).map_err(|_| reason)?;
            quote[..q.len()].copy_from_slice(q);
            q.len()
        };
        let icmp_len = 8 + qlen;
        let new_len = ip.l3 + crate::wire::ipv4::HEADER_LEN + icmp_len;
        if !frame.set_len(new_len) {
            return Err(reason);
        }
        let bytes = frame.bytes_mut();
        write_own_ipv4(&mut bytes[ip.l3..], att.ip, src, PROTO_ICMP, icmp_len);
        let seg = &mut bytes[ip.l3 + crate::wire::ipv4::HEADER_LEN..];
        let quote = &quote[..qlen];
        match frag_needed {
            None => icmpv4::emit_time_exceeded(seg, icmpv4::time_exceeded::TTL, quote),
            Some(mtu) => {
                icmpv4::emit_dst_unreachable(seg, icmpv4::unreachable::FRAG_NEEDED, mtu, quote)
            }
        }
        .map_err(|_| reason)?;
        reply_l2(bytes, att.mac);
        self.counters.icmp_errors_sent += 1;
        self.counters.drop(reason);
        Ok(Next::Tx(att.port))
    }
}

/// Writes a RST the appliance originates, IPv4 header and TCP segment, at the front of
/// `l3` (sized for both by the caller). False if it does not fit.
pub(super) fn write_rst(
    l3: &mut [u8],
    src: u32,
    dst: u32,
    rst: &crate::wire::tcp::TcpRepr,
) -> bool {
    let tcp_len = crate::wire::tcp::HEADER_LEN;
    let Some(seg) = l3.get_mut(crate::wire::ipv4::HEADER_LEN..) else {
        return false;
    };
    if rst
        .emit(
            seg,
            std::net::Ipv4Addr::from(src),
            std::net::Ipv4Addr::from(dst),
            0,
        )
        .is_err()
    {
        return false;
    }
    write_own_ipv4(l3, src, dst, PROTO_TCP, tcp_len);
    true
}

/// Writes a 20-byte IPv4 header for a packet the appliance originates.
pub(super) fn write_own_ipv4(buf: &mut [u8], src: u32, dst: u32, proto: u8, payload_len: usize) {
    let repr = Ipv4Repr {
        src_addr: src.into(),
        dst_addr: dst.into(),
        protocol: IpProtocol(proto),
        payload_len,
        ttl: OWN_TTL,
    };
    // The callers sized `buf` for the header; a failure cannot leave a half-written one
    // on the wire because the frame is dropped with it.
    let _ = repr.emit(buf);
}
