//! The local node: packets to the appliance's own addresses, answered here (echo) or
//! passed to the health checker (`probe.rs`), and TCP to an endpoint that no longer
//! answers (a RST for a connection that outlived it).
//! Also the martian-source check every node that admits a new source asks.

use super::context::Ctx;
use super::dispatch::Next;
use super::*;

impl<F: Frame> Pipeline<F> {
    /// The local node for an address of the appliance itself (own, endpoint, SNAT):
    /// answers echo requests. To an endpoint, only from a consumer its security groups and
    /// policy would admit a new ICMP flow from.
    pub(super) fn answer_local(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &Ctx,
    ) -> Result<Next, DropReason> {
        if ctx.local == Some(LocalKind::Own) && self.is_probe_reply(ctx) {
            return self.probe_reply(snap, frame, ctx);
        }
        let att_idx = ctx.att;
        let ip = ctx;
        let (src, dst) = ctx.v4();
        let endpoint = match ctx.local {
            Some(LocalKind::Endpoint(e)) => snap.endpoint_by_handle(e),
            _ => None,
        };
        if ip.proto != PROTO_ICMP {
            return Err(DropReason::IcmpUnsupported);
        }
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        refuse_martian(snap, att_idx, src)?;
        let bytes = frame.bytes_mut();
        let l4 = bytes
            .get_mut(ip.l3 + ip.header_len..ip.l3 + ip.total_len)
            .ok_or(DropReason::Malformed)?;
        let mut icmp = Icmpv4Packet::new_checked(l4).map_err(|_| DropReason::Malformed)?;
        if icmp.msg_type() != Icmpv4Type::ECHO_REQUEST || icmp.code() != 0 {
            return Err(DropReason::IcmpUnsupported);
        }
        if !icmp.verify_checksum() {
            return Err(DropReason::BadChecksum);
        }
        if let Some(e) = endpoint {
            e.admits(src, PROTO_ICMP, 0).map_err(refusal_reason)?;
        }
        icmp.make_echo_reply().map_err(|_| DropReason::Malformed)?;
        let mut pkt = Ipv4Packet::new_unchecked(&mut bytes[ip.l3..]);
        pkt.set_src_addr_bytes(dst.to_be_bytes());
        pkt.set_dst_addr_bytes(src.to_be_bytes());
        pkt.set_ttl(OWN_TTL);
        pkt.fill_checksum();
        reply_l2(bytes, att.mac);
        self.counters.echo_replies += 1;
        Ok(Next::Tx(att.port))
    }

    /// Consumer → an endpoint that no longer answers (rejected, deleting): nothing is
    /// forwarded, but a segment of a connection whose flow just ended (a client that has
    /// not noticed) gets a RST at the number it expects, so it stops at once even when
    /// the RST sent as the flow ended carried a stale number (its ACK was still delayed).
    /// A consumer the endpoint would not admit gets silence.
    pub(super) fn closed_endpoint(
        &mut self,
        snap: &Snapshot,
        e: u32,
        frame: &mut F,
        ctx: &Ctx,
    ) -> Result<Next, DropReason> {
        let reason = DropReason::EndpointNotAvailable;
        let att_idx = ctx.att;
        let ip = ctx;
        let (src, _) = ctx.v4();
        if ip.proto != PROTO_TCP {
            return Err(reason);
        }
        let seg = ctx.l4?;
        let endpoint = snap.endpoint_by_handle(e).ok_or(reason)?;
        refuse_martian(snap, att_idx, src)?;
        endpoint
            .admits(src, ip.proto, seg.dport)
            .map_err(refusal_reason)?;
        match seg.tcp.map(|t| t.flags) {
            Some(f) if !f.is_connection_request() => {
                self.reset_unknown(snap, att_idx, frame, ctx, f, reason)
            }
            _ => Err(reason),
        }
    }
}

/// Whether `src` cannot be the address of a host that talks to us on attachment
/// `att_idx`: RFC 1812 §5.3.7's martians (0/8 "this network", 127/8 loopback, 224/4
/// multicast, 240/4 reserved, which holds the limited broadcast), the attachment
/// prefix's network and broadcast addresses, and every address the appliance itself
/// answers for there (its own, endpoints', SNAT addresses): packets "from" those are
/// spoofed or looped. Asked per new flow and per packet to a local address, never for a
/// packet of an established flow.
pub(super) fn martian_source(
    snap: &Snapshot,
    att_idx: u16,
    att: &AttachmentView,
    src: u32,
) -> bool {
    let first = src >> 24;
    first == 0
        || first == 127
        || first >= 224
        || src == att.ip & att.mask
        || src == att.ip | !att.mask
        || snap.local(att_idx, src).is_some()
}

/// [`martian_source`] as a drop.
#[inline]
pub(super) fn refuse_martian(snap: &Snapshot, att_idx: u16, src: u32) -> Result<(), DropReason> {
    let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
    if martian_source(snap, att_idx, att, src) {
        return Err(DropReason::MartianSource);
    }
    Ok(())
}
