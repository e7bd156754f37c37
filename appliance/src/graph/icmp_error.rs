//! The ICMP node: echo to an endpoint or SNAT address goes on to the local node; an ICMP
//! error about a flow (its quote names one) is translated for the flow's other side, the
//! quoted packet with it, in both directions.

use super::context::Ctx;
use super::dispatch::Next;
use super::*;

/// An ICMP message to one of our addresses, as far as the packet path handles it.
#[derive(Debug, Clone, Copy)]
enum IcmpIn {
    /// An echo request (its checksum is checked when it is answered).
    Echo,
    /// A destination-unreachable or time-exceeded error quoting a TCP or UDP packet.
    Error(IcmpError),
}

/// What translating an ICMP error needs of the packet it quotes: a packet the appliance
/// sent (from our address on this side to a host here).
#[derive(Debug, Clone, Copy)]
struct IcmpError {
    /// Offset of the quoted IPv4 header in the frame.
    quote_at: usize,
    /// The quoted header's length.
    quote_header_len: usize,
    proto: u8,
    src: u32,
    dst: u32,
    sport: u16,
    dport: u16,
}

impl IcmpError {
    /// The key the flow's packets from the host that got the quoted packet arrive with
    /// on attachment `att` (the quote reversed).
    #[inline]
    fn flow_key(&self, att: u16) -> FlowKey {
        FlowKey {
            src_ip: self.dst,
            dst_ip: self.src,
            src_port: self.dport,
            dst_port: self.sport,
            vpc: att,
            proto: self.proto,
        }
    }
}

impl<F: Frame> Pipeline<F> {
    /// The ICMP node, for ICMP to an endpoint or a SNAT address. Echo goes on to the
    /// local node. An error about a translated flow is translated for the flow's other
    /// side: to a SNAT address (sent by a host or router on the provider's side: port
    /// unreachable, fragmentation needed, time exceeded) back to the consumer, so that
    /// path-MTU discovery works through the appliance; to an endpoint (from the
    /// consumer's side) on to the target, for the direction that carries most bytes.
    pub(super) fn icmp(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &Ctx,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let err = match icmp_message(frame.bytes(), ctx)? {
            IcmpIn::Echo => return Ok(Next::Local),
            IcmpIn::Error(err) => err,
        };
        let (src, _) = ctx.v4();
        refuse_martian(snap, ctx.att, src)?;
        let key = err.flow_key(ctx.att);
        let other = if let Some(LocalKind::Snat(_)) = ctx.local {
            // The quoted packet is one we sent: src = SNAT ip:port, dst = target ip:port.
            let owner = self.snat.owner(err.sport);
            if owner != self.id {
                frame.set_handoff_tag(0);
                return Ok(Next::Handoff(owner));
            }
            let id = self
                .find_flow(&key, None, true, now_ms)
                .ok_or(DropReason::NoFlow)?;
            let fwd = self.flows.get(id).ok_or(DropReason::NoFlow)?.fwd;
            if super::nat64::is_ipv6_consumer(fwd.src_ip) {
                let side = *self.consumers6.get(id).ok_or(DropReason::NoFlow)?;
                let quote = (err.quote_at, err.quote_header_len, err.proto);
                return self.icmp_error_to_ipv6(snap, frame, ctx, quote, &fwd, &side, now_ms);
            }
            fwd
        } else {
            // The quoted packet is one we sent: src = endpoint ip:port, dst = consumer
            // ip:port.
            let Some(id) = self.find_flow(&key, None, false, now_ms) else {
                return self.seek_flow_owner(frame);
            };
            self.flows.get(id).ok_or(DropReason::NoFlow)?.rev
        };
        self.translate_icmp_error(frame, ctx, &err, &other)
    }

    /// A consumer-side ICMP error whose flow this worker does not have. RSS spread the
    /// flow's packets by their own addresses and the error by the reporter's, so it may
    /// have reached any worker; nothing in it says which one owns the flow (unlike a
    /// SNAT port). Pass it round the workers: the one that received it marks it with its
    /// id, each asks the next, and the one before the first drops it.
    pub(super) fn seek_flow_owner(&mut self, frame: &mut F) -> Result<Next, DropReason> {
        let n = self.settings.workers.max(1);
        let first = if self.handed_off {
            match frame.handoff_tag().checked_sub(1).map(u16::try_from) {
                Some(Ok(w)) if w < n => w,
                _ => return Err(DropReason::NoFlow),
            }
        } else {
            frame.set_handoff_tag(u32::from(self.id) + 1);
            self.id
        };
        let next = (self.id + 1) % n;
        if next == first {
            return Err(DropReason::NoFlow);
        }
        Ok(Next::Handoff(next))
    }

    /// Translates an ICMP error about flow packets for the flow's other side, whose key
    /// (as that side's packets arrive) is `other`: the outer header goes from our address
    /// there to that side's host, the quoted packet becomes the one that host sent.
    fn translate_icmp_error(
        &mut self,
        frame: &mut F,
        ip: &Ctx,
        err: &IcmpError,
        other: &FlowKey,
    ) -> Result<Next, DropReason> {
        if ip.ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        let end = ip.l3 + ip.total_len;
        let bytes = frame.bytes_mut();
        {
            let mut pkt = Ipv4Packet::new_unchecked(&mut bytes[ip.l3..]);
            pkt.rewrite_src_addr(other.dst_ip.to_be_bytes());
            pkt.rewrite_dst_addr(other.src_ip.to_be_bytes());
            pkt.decrement_ttl();
        }
        let quoted = bytes
            .get_mut(err.quote_at..end)
            .ok_or(DropReason::Malformed)?;
        rewrite_quote(quoted, err, other);
        {
            let seg = bytes
                .get_mut(ip.l3 + ip.header_len..end)
                .ok_or(DropReason::Malformed)?;
            Icmpv4Packet::new_unchecked(seg).fill_checksum();
        }
        self.counters.icmp_errors_translated += 1;
        Ok(Next::Out {
            att: other.vpc,
            dst: other.src_ip,
        })
    }
}

/// Reads the ICMP message of `ip`. Errors are checksum-verified before anything else is
/// believed (a corrupted quote could name another flow); echo is verified by the reply.
fn icmp_message(bytes: &[u8], ip: &Ctx) -> Result<IcmpIn, DropReason> {
    let l4 = ip.l3 + ip.header_len;
    let seg = bytes
        .get(l4..ip.l3 + ip.total_len)
        .ok_or(DropReason::Malformed)?;
    let icmp = Icmpv4Packet::new_checked(seg).map_err(|_| DropReason::Malformed)?;
    let t = icmp.msg_type();
    if t == Icmpv4Type::ECHO_REQUEST {
        return Ok(IcmpIn::Echo);
    }
    if t != Icmpv4Type::DST_UNREACHABLE && t != Icmpv4Type::TIME_EXCEEDED {
        return Err(DropReason::IcmpUnsupported);
    }
    if !icmp.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    let q = icmp.quote().map_err(|_| DropReason::Malformed)?;
    let proto = q.protocol().0;
    let qp = q.payload();
    if qp.len() < 4 || (proto != PROTO_TCP && proto != PROTO_UDP) {
        return Err(DropReason::IcmpUnsupported);
    }
    Ok(IcmpIn::Error(IcmpError {
        quote_at: l4 + icmpv4::HEADER_LEN,
        quote_header_len: q.header_len(),
        proto,
        src: q.src_addr_u32(),
        dst: q.dst_addr_u32(),
        sport: u16::from_be_bytes([qp[0], qp[1]]),
        dport: u16::from_be_bytes([qp[2], qp[3]]),
    }))
}

/// Makes the quoted packet `quoted` (IPv4 header and the first bytes of its TCP/UDP
/// segment) the one `other`'s host sent: from `other`'s source to its destination. The
/// quoted header checksum and, when the quote reaches it, the quoted TCP/UDP checksum
/// are updated incrementally, so they are what that host computed (a UDP checksum of 0,
/// "none", stays 0).
fn rewrite_quote(quoted: &mut [u8], err: &IcmpError, other: &FlowKey) {
    let hl = err.quote_header_len;
    if quoted.len() < hl + 4 {
        return;
    }
    {
        let mut q = Ipv4Packet::new_unchecked(&mut *quoted);
        q.rewrite_src_addr(other.src_ip.to_be_bytes());
        q.rewrite_dst_addr(other.dst_ip.to_be_bytes());
    }
    let old = [
        err.src.to_be_bytes(),
        err.dst.to_be_bytes(),
        ((u32::from(err.sport) << 16) | u32::from(err.dport)).to_be_bytes(),
    ];
    let new = [
        other.src_ip.to_be_bytes(),
        other.dst_ip.to_be_bytes(),
        ((u32::from(other.src_port) << 16) | u32::from(other.dst_port)).to_be_bytes(),
    ];
    let seg = &mut quoted[hl..];
    seg[0..4].copy_from_slice(&new[2]);
    let at = if err.proto == PROTO_UDP { 6 } else { 16 };
    if let Some(c) = seg.get_mut(at..at + 2) {
        let mut csum = u16::from_be_bytes([c[0], c[1]]);
        if err.proto == PROTO_TCP || csum != 0 {
            for (o, n) in old.iter().zip(&new) {
                csum = checksum::update_u32(csum, *o, *n);
            }
            if err.proto == PROTO_UDP {
                csum = checksum::udp_nonzero(csum);
            }
            c.copy_from_slice(&csum.to_be_bytes());
        }
    }
}
