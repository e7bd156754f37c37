//! The IPv6 node: the attachment's own IPv6 address and dual-stack endpoints' answer
//! neighbour solicitations and echo requests, as IPv4 addresses answer ARP and ping (an
//! endpoint only to a consumer its access rules admit). TCP and UDP to a dual-stack
//! endpoint go on to the flow nodes as IPv4 (`nat64.rs`), ICMPv6 errors about their
//! replies on to the target as ICMPv4 (`icmp6.rs`). Nothing else of IPv6 is served
//! yet (NAT66 comes next): it is dropped and counted, never mistaken for IPv4.

use super::context::{self, Ctx};
use super::dispatch::Next;
use super::*;
use crate::wire::icmpv6::{self, Icmpv6Packet, Icmpv6Type, NdiscRepr};
use crate::wire::ipv6::{self as ip6, next_header, Ipv6Packet};

/// All nodes on the link (ff02::1): where an answer to an address-detection probe goes.
pub(super) const ALL_NODES: u128 = 0xff02_0000_0000_0000_0000_0000_0000_0001;

/// The hop limit of neighbour discovery, sent and required (RFC 4861 §7.1): a message
/// with any other came from beyond the link.
pub(super) const ND_HOP_LIMIT: u8 = 255;

/// What a neighbour discovery message may do to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Learn6 {
    /// A solicitation's source: made only where there is room.
    Unasked,
    /// An advertisement: only a neighbour already tracked (the one our solicitation
    /// made, or one known) is updated (RFC 4861 §7.2.5: an advertisement of no entry is
    /// discarded).
    Update,
}

/// Whether `ip` can be a neighbour on `att`'s link: inside its IPv6 prefix, or
/// link-local (where routers usually answer from), and unicast.
fn on_link6(att: &AttachmentView, ip: u128) -> bool {
    let link_local = ip >> 118 == 0xfe80 >> 6;
    let inside = att.ip6.is_some_and(|own| ip & att.mask6 == own & att.mask6);
    ip != 0 && !is_multicast(ip) && (link_local || inside)
}

/// The hop limit of echo replies (the kernel's default).
const HOP_LIMIT: u8 = 64;

/// The last TCP/UDP destination the node looked up in this pass of the graph, and what it
/// is: a burst's packets to one endpoint pay for one lookup.
///
/// With an endpoint's IPv4 address (None if the endpoint is not in the snapshot), which
/// its flows are keyed by: a second map lookup per packet otherwise.
pub(super) type Memo6 = Option<(u16, u128, Option<LocalKind>, Option<u32>)>;

/// What the IPv6 node read of the fixed header: source, destination, hop limit, and the
/// packet's length (header and payload).
#[derive(Clone, Copy)]
struct Head6 {
    src: u128,
    dst: u128,
    hop: u8,
    total: usize,
}

impl<F: Frame> Pipeline<F> {
    /// Records IPv6 neighbour `ip` at `lladdr` on attachment `att_idx` (`how`: what the
    /// message may do to the table) and sends what this worker held for it. True when
    /// the table has it now.
    #[allow(clippy::too_many_arguments)]
    fn learn6(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        att: &AttachmentView,
        ip: u128,
        lladdr: EthernetAddress,
        how: Learn6,
        now_ms: u64,
    ) -> bool {
        let station = lladdr.is_unicast() && lladdr != EthernetAddress::UNSPECIFIED;
        // (Not compared with our own MAC: behind `net_tap` the kernel's side of the
        // device, the host here, has the port's MAC too.)
        if !station || !on_link6(att, ip) {
            return false;
        }
        let learned = match how {
            Learn6::Unasked => self
                .neighbours6
                .learn_unasked(att_idx, ip, lladdr.0, now_ms),
            Learn6::Update => self.neighbours6.confirm(att_idx, ip, lladdr.0, now_ms),
        };
        if !learned.is_usable() {
            return false;
        }
        self.counters.nd_learned += 1;
        self.release_held(snap, att_idx, Hop::V6(ip), lladdr.0);
        true
    }

    /// IPv6 received on the attachment of `ctx`. Inlined into the pass: the common case,
    /// TCP or UDP right after the fixed header, is a few checks and the flow key; the
    /// extension walk, neighbour discovery and echo are out of line
    /// ([`ipv6_walked`](Self::ipv6_walked)).
    #[inline(always)]
    pub(super) fn ipv6(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        memo: &mut Memo6,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        ctx.frag = None;
        let bytes = frame.bytes().get(ctx.l3..).ok_or(DropReason::Malformed)?;
        let ip = Ipv6Packet::new_checked(bytes).map_err(|_| DropReason::Malformed)?;
        let head = Head6 {
            src: ip.src_addr_u128(),
            dst: ip.dst_addr_u128(),
            hop: ip.hop_limit(),
            total: ip.total_len(),
        };
        match ip.next_header() {
            first @ (PROTO_TCP | PROTO_UDP) => {
                self.ipv6_l4(snap, frame, ctx, memo, head, &ip6::Extensions::none(first))
            }
            first => self.ipv6_walked(snap, frame, ctx, memo, head, first, now_ms),
        }
    }

    /// [`ipv6`](Self::ipv6) past the fixed header when extension headers or ICMPv6
    /// follow it (`first`): walked, then TCP and UDP as there, the rest here.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn ipv6_walked(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        memo: &mut Memo6,
        head: Head6,
        first: u8,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let att = snap.attachment(ctx.att).ok_or(DropReason::NoAttachment)?;
        let Head6 {
            src,
            dst,
            hop,
            total,
        } = head;
        let l3 = ctx.l3;
        let bytes = frame.bytes().get(l3..).ok_or(DropReason::Malformed)?;
        // ipv6() checked the header; its view gives the payload it declares.
        let view = Ipv6Packet::new_unchecked(bytes);
        let ext = ip6::walk_extensions(first, view.payload()).map_err(|e| match e {
            crate::wire::Error::Unsupported => DropReason::Ipv6NotServed,
            _ => DropReason::Malformed,
        })?;
        if matches!(ext.protocol, PROTO_TCP | PROTO_UDP) {
            return self.ipv6_l4(snap, frame, ctx, memo, head, &ext);
        }
        if ext.protocol != next_header::ICMPV6 || ext.fragment.is_some() {
            return Err(DropReason::Ipv6NotServed);
        }
        let at = ip6::HEADER_LEN + ext.l4_at;
        let msg = bytes.get(at..total).ok_or(DropReason::Malformed)?;
        let icmp = Icmpv6Packet::new_checked(msg).map_err(|_| DropReason::Malformed)?;
        if !icmp.verify_checksum(src, dst) {
            return Err(DropReason::BadChecksum);
        }
        match icmp.msg_type() {
            Icmpv6Type::NEIGHBOR_SOLICIT => {
                let Ok(NdiscRepr::Solicit {
                    target,
                    source_lladdr,
                }) = NdiscRepr::parse(&icmp)
                else {
                    return Err(DropReason::NdIgnored);
                };
                let group = icmpv6::solicited_node(target);
                // Address detection comes from :: to the solicited-node group, with no
                // link-layer address to answer to (RFC 4861 §7.1.1).
                let probe = src == 0;
                // A group is never a source (RFC 4291 §2.7): there is nobody to answer.
                let sane = hop == ND_HOP_LIMIT
                    && !is_multicast(src)
                    && snap.local6(ctx.att, target).is_some()
                    && (dst == target || dst == group)
                    && (!probe || (dst == group && source_lladdr.is_none()));
                if !sane {
                    return Err(DropReason::NdIgnored);
                }
                let sender = EthernetFrame::new_unchecked(frame.bytes()).src_addr();
                // The solicitor talks to us: worth learning, as an ARP request to us is
                // (RFC 4861 §7.2.3), so our answer to it needs no solicitation.
                if let Some(lladdr) = source_lladdr.filter(|_| !probe) {
                    self.learn6(snap, ctx.att, att, src, lladdr, Learn6::Unasked, now_ms);
                }
                if !self.active {
                    return Err(DropReason::NdIgnored);
                }
                let (to, mac) = if probe {
                    (ALL_NODES, icmpv6::multicast_mac(ALL_NODES))
                } else {
                    (src, source_lladdr.unwrap_or(sender))
                };
                let advert = NdiscRepr::Advert {
                    router: false,
                    solicited: !probe,
                    override_: true,
                    target,
                    target_lladdr: Some(EthernetAddress(att.mac)),
                };
                let end = l3 + ip6::HEADER_LEN + icmpv6::ND_WITH_LLADDR_LEN;
                if !frame.set_len(end) {
                    return Err(DropReason::Malformed);
                }
                let out = frame.bytes_mut();
                let len = advert
                    .emit(&mut out[l3 + ip6::HEADER_LEN..end], target, to)
                    .map_err(|_| DropReason::Malformed)?;
                write_header(&mut out[l3..], target, to, len, ND_HOP_LIMIT);
                l2::set_addresses(out, mac, att.mac);
                self.counters.nd_advertisements += 1;
                Ok(Next::Tx(att.port))
            }
            Icmpv6Type::NEIGHBOR_ADVERT => {
                let Ok(NdiscRepr::Advert {
                    solicited,
                    target,
                    target_lladdr,
                    ..
                }) = NdiscRepr::parse(&icmp)
                else {
                    return Err(DropReason::NdIgnored);
                };
                // RFC 4861 §7.1.2: from the link, about a unicast address, never a
                // solicited answer to a group.
                let sane = hop == ND_HOP_LIMIT
                    && !is_multicast(target)
                    && target != 0
                    && !(solicited && is_multicast(dst))
                    && snap.local6(ctx.att, target).is_none();
                if !sane {
                    return Err(DropReason::NdIgnored);
                }
                let sender = EthernetFrame::new_unchecked(frame.bytes()).src_addr();
                let lladdr = target_lladdr.unwrap_or(sender);
                // Whether an answer to our solicitation or not, it only updates a
                // neighbour we track (a sender must not fill the table).
                if self.learn6(snap, ctx.att, att, target, lladdr, Learn6::Update, now_ms) {
                    Ok(Next::Consumed)
                } else {
                    Err(DropReason::NdIgnored)
                }
            }
            // An error about a reply of a NAT64 flow: on to its target as ICMPv4.
            t if t.is_error() => match snap.local6(ctx.att, dst) {
                Some(LocalKind::Endpoint(e)) => self.icmp6_error_to_target(
                    snap,
                    frame,
                    ctx,
                    (src, dst, hop),
                    (at, total),
                    e,
                    now_ms,
                ),
                // An error about a packet of a NAT66 flow, on to its consumer.
                Some(LocalKind::Snat(_)) => self.icmp66_error_to_consumer(
                    snap,
                    frame,
                    ctx,
                    (src, dst, hop),
                    (at, total),
                    now_ms,
                ),
                _ => Err(DropReason::Ipv6NotServed),
            },
            // Never an answer to a group or to nobody.
            Icmpv6Type::ECHO_REQUEST if src == 0 || is_multicast(src) => {
                Err(DropReason::Ipv6NotServed)
            }
            Icmpv6Type::ECHO_REQUEST if icmp.code() == 0 => {
                let local = snap.local6(ctx.att, dst).ok_or(DropReason::Ipv6NotServed)?;
                if !self.active {
                    return Err(DropReason::Standby);
                }
                if let LocalKind::Endpoint(h) = local {
                    let e = snap
                        .endpoint_by_handle(h)
                        .ok_or(DropReason::Ipv6NotServed)?;
                    e.admits_ipv6(src, next_header::ICMPV6, 0)
                        .map_err(refusal_reason)?;
                }
                // The reply carries the request's message, without what came before it
                // (extension headers) or after it (Ethernet padding).
                let len = msg.len();
                let out = frame.bytes_mut();
                out.copy_within(l3 + at..l3 + total, l3 + ip6::HEADER_LEN);
                let end = l3 + ip6::HEADER_LEN + len;
                let reply = &mut out[l3 + ip6::HEADER_LEN..end];
                let mut m = Icmpv6Packet::new_unchecked(reply);
                m.make_echo_reply();
                m.fill_checksum(dst, src);
                write_header(&mut out[l3..], dst, src, len, HOP_LIMIT);
                l2::reply_l2(out, att.mac);
                if !frame.set_len(end) || !pad_frame(frame, l3 > ethernet::HEADER_LEN) {
                    return Err(DropReason::Malformed);
                }
                self.counters.echo_replies += 1;
                Ok(Next::Tx(att.port))
            }
            _ => Err(DropReason::Ipv6NotServed),
        }
    }

    /// TCP or UDP over IPv6 (`ext`: what lies between the fixed header and it): to a
    /// dual-stack endpoint on to the flow nodes as IPv4, to a NAT66 SNAT address on to the
    /// reverse node, to our own address a health probe's answer; the rest dropped.
    #[inline(always)]
    fn ipv6_l4(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        memo: &mut Memo6,
        Head6 {
            src,
            dst,
            hop,
            total,
        }: Head6,
        ext: &ip6::Extensions,
    ) -> Result<Next, DropReason> {
        let l3 = ctx.l3;
        // Read once: the flow nodes check and translate by them, a reject record names
        // the source.
        ctx.addrs6 = [src, dst];
        // To a dual-stack endpoint: on to the flow nodes as IPv4.
        let (local, endpoint_ip) = match *memo {
            Some((a, d, l, ip)) if a == ctx.att && d == dst => (l, ip),
            _ => {
                let l = snap.local6(ctx.att, dst);
                let ip = match l {
                    Some(LocalKind::Endpoint(e)) => snap.endpoint_by_handle(e).map(|e| e.ip),
                    _ => None,
                };
                *memo = Some((ctx.att, dst, l, ip));
                (l, ip)
            }
        };
        let l4_at = ip6::HEADER_LEN + ext.l4_at;
        // To an endpoint (NAT64, NAT66), from an IPv6 target to its SNAT address
        // (NAT66, none), or a health probe's answer.
        let endpoint = match local {
            Some(LocalKind::Endpoint(e)) => Some(e),
            Some(LocalKind::Snat(_)) => None,
            Some(LocalKind::Own) if ext.protocol == PROTO_TCP && ext.fragment.is_none() => {
                let port = frame
                    .bytes()
                    .get(l3 + l4_at + 2..l3 + l4_at + 4)
                    .ok_or(DropReason::Malformed)?;
                let dport = u16::from_be_bytes([port[0], port[1]]);
                if self.probes.is_none() || !crate::health::link::PROBE_PORTS.contains(&dport) {
                    return Err(DropReason::Ipv6NotServed);
                }
                return self.probe_reply6(frame, ctx.att, (src, dst), (l3 + l4_at, l3 + total));
            }
            _ => return Err(DropReason::Ipv6NotServed),
        };
        if let Some(LocalKind::Endpoint(_)) = local {
            ctx.local = local;
        }
        // A fragment translates to an IPv4 fragment only when the datagram's
        // fragmentable part starts with its L4 header (offsets then count the same
        // bytes in both versions).
        let frag = ext.fragment.filter(|f| !f.is_atomic());
        if frag.is_some_and(|f| f.offset == 0 && f.at + ip6::FRAGMENT_HEADER_LEN != ext.l4_at) {
            return Err(DropReason::Ipv6NotTranslated);
        }
        if ext.source_route {
            return Err(DropReason::SourceRoute);
        }
        match ext.hop_by_hop {
            Some(ip6::OptionsVerdict::Malformed) => return Err(DropReason::BadIpOptions),
            Some(ip6::OptionsVerdict::Discard) => return Err(DropReason::Ipv6NotServed),
            _ => {}
        }
        ctx.frag = frag.map(|f| context::Fragment {
            id: f.id,
            offset: f.offset,
            more: f.more,
        });
        let Some(e) = endpoint else {
            let Some(LocalKind::Snat(service)) = local else {
                return Err(DropReason::Ipv6NotServed);
            };
            return self.enter_nat66_reply(
                frame,
                ctx,
                (src, dst),
                service,
                ext.protocol,
                (l4_at, total),
                hop,
            );
        };
        self.enter_nat64(
            frame,
            ctx,
            (src, e, endpoint_ip),
            ext.protocol,
            (l4_at, total),
            hop,
        )
    }
}

#[inline]
fn is_multicast(a: u128) -> bool {
    a >> 120 == 0xff
}

/// A fixed IPv6 header with nothing after it but an ICMPv6 message of `len` bytes.
pub(super) fn write_header(l3: &mut [u8], src: u128, dst: u128, len: usize, hop_limit: u8) {
    write_header_for(l3, src, dst, next_header::ICMPV6, len, hop_limit);
}

/// A fixed IPv6 header with nothing after it but `len` bytes of protocol `next`.
pub(super) fn write_header_for(
    l3: &mut [u8],
    src: u128,
    dst: u128,
    next: u8,
    len: usize,
    hop_limit: u8,
) {
    let mut ip = Ipv6Packet::new_unchecked(&mut l3[..ip6::HEADER_LEN]);
    ip.set_version_class_label(0, 0);
    ip.set_payload_len(u16::try_from(len).unwrap_or(u16::MAX));
    ip.set_next_header(next);
    ip.set_hop_limit(hop_limit);
    ip.set_src_addr_u128(src);
    ip.set_dst_addr_u128(dst);
}
