//! IPv6 consumers of IPv4 services (NAT64 at the endpoint, RFC 7915's header rules): a
//! TCP or UDP packet to a dual-stack endpoint's IPv6 address becomes an IPv4 packet from
//! the endpoint's IPv4 side, so the flow nodes, Maglev, SNAT and the provider side are the
//! IPv4 ones; its replies become IPv6 again on the way back.
//!
//! Such a flow lives in the same table as the others. Its forward key's source is the
//! consumer's address folded to 29 bits under a secret seed, in 224.0.0.0/3: no IPv4
//! consumer can have such a source (a martian, refused before any flow is made), so the
//! two kinds of key never meet, and [`is_ipv6_consumer`] tells them apart. What the fold
//! loses is kept beside the table, by flow slot ([`Consumers6`]): the consumer's address
//! (every packet of the flow is checked against it, so a fold shared with another
//! consumer cannot join its flow) and the endpoint's IPv6 address. Replies go to the
//! consumer's next hop by neighbour discovery (the consumer when it is inside the
//! attachment's IPv6 prefix, else the attachment's `gateway6`), as IPv4 replies go by
//! ARP.
//!
//! ICMP errors, both those the appliance sends an IPv6 consumer and those translated
//! between the versions, are `icmp6.rs`'s. Fragments go through the fragment node like
//! IPv4 ones and change version one by one (RFC 7915 §4.1, §5.1.1); an IPv6 one that
//! would not fit the consumer's port is cut here. An HA peer gets these flows with their
//! IPv6 side and folds the consumer under its own seed (`ha.rs`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::context::{self, Ctx, L4};
use super::dispatch::Next;
use super::*;
use crate::tables::maglev::mix64;
use crate::tables::vhash::VectorHash;
use crate::wire::ipv6 as ip6;

/// The IPv4 prefix of folded IPv6 consumers: 224.0.0.0/3, martian as a source.
const FOLD_BASE: u32 = 0xE000_0000;
const FOLD_MASK: u32 = 0x1FFF_FFFF;

/// The fixed IPv4 header.
const IPV4_HEADER: usize = crate::wire::ipv4::HEADER_LEN;

/// Whether a flow key's source is a folded IPv6 consumer.
#[inline]
pub fn is_ipv6_consumer(src_ip: u32) -> bool {
    src_ip >= FOLD_BASE
}

/// IPv6 consumer `src` as a flow key's source, under `seed` (secret, per start): a
/// consumer who knows the function cannot choose an address whose fold is another's.
/// The packet path keeps the keys ([`Pipeline::fold_consumer`]) instead of making them
/// each time.
pub fn fold(seed: u64, src: u128) -> u32 {
    fold_with(&VectorHash::new(seed), src)
}

/// [`fold`] by the keys of its seed: the top 29 bits of the vector hash of the
/// address's four 32-bit words (strongly universal: any two consumers share a fold with
/// probability 2^-29, whatever addresses they pick).
#[inline(always)]
fn fold_with(keys: &VectorHash, src: u128) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // the 32-bit words; 29 bits
    let top = (keys.hash(words(src)) >> (64 - FOLD_BITS)) as u32;
    FOLD_BASE | top
}

/// Bits of a consumer's fold below [`FOLD_BASE`].
const FOLD_BITS: u32 = FOLD_MASK.count_ones();

/// A provider-side address (target, SNAT) as a flow key's address under a fixed `seed`.
/// Not the consumer fold: every node, and every version of privlink, must fold these the
/// same (HA peers find each other's flows by them, and Maglev places IPv6 targets by
/// them), so this function does not change.
#[inline(always)]
fn fold_provider(seed: u64, ip: u128) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // the two halves, and 29 bits of a hash
    let (hi, lo) = ((ip >> 64) as u64, ip as u64);
    #[allow(clippy::cast_possible_truncation)]
    let h = mix64(mix64(hi ^ seed) ^ lo) as u32;
    FOLD_BASE | (h & FOLD_MASK)
}

/// The IPv4 prefix of IPv6 SNAT addresses in flow keys: 224.0.0.0/4, which no IPv4 SNAT
/// address (unicast) and no endpoint address or stand-in (below 224, or 240.0.0.0/4)
/// can be, so a NAT66 flow's reverse key meets no other key.
const SNAT6_FOLD_MASK: u32 = 0x0FFF_FFFF;

/// Fixed seeds of the provider side's folds: its addresses are the operator's, not a
/// consumer's to choose, so the folds need no secret, and every node makes the same.
const TARGET6_SEED: u64 = 0x7461_7267_6574_3666;
const SNAT6_SEED: u64 = 0x736e_6174_3666_6f6c;

/// IPv6 target `ip` as a flow key's (and a Maglev entry's) address: in 224.0.0.0/3.
/// Two targets sharing a fold share SNAT ports (the port search treats them as one
/// target), so their flows' keys stay apart; each packet is checked against the
/// flow's own addresses ([`Side6`]).
#[inline]
pub fn fold_target6(ip: u128) -> u32 {
    fold_provider(TARGET6_SEED, ip)
}

/// IPv6 SNAT address `ip` as a flow key's address: in 224.0.0.0/4.
#[inline]
pub fn fold_snat6(ip: u128) -> u32 {
    FOLD_BASE | (fold_provider(SNAT6_SEED, ip) & SNAT6_FOLD_MASK)
}

/// Whether a reverse key's destination is an IPv6 SNAT address: the flow is NAT66.
#[inline]
pub fn is_snat6(dst_ip: u32) -> bool {
    dst_ip >> 28 == FOLD_BASE >> 28
}

/// What a flow of an IPv6 consumer remembers beside its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Side6 {
    /// The consumer's address.
    pub consumer: u128,
    /// The endpoint's IPv6 address.
    pub endpoint: u128,
    /// A NAT66 flow's target and SNAT address (0 for an IPv4 target: NAT64).
    pub target: u128,
    pub snat: u128,
}

/// [`Side6`] by flow slot; empty (and never used) when no attachment has IPv6.
#[derive(Debug, Default)]
pub struct Consumers6 {
    slots: Vec<Slot6>,
}

/// One slot's [`Side6`] on a cache line of its own: a NAT64 or NAT66 packet's check of
/// it is one miss, which the flow node prefetches.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Slot6(Side6);

impl Consumers6 {
    /// Room for a table of `capacity` flows: 64 bytes per slot, only when `ipv6`.
    pub fn new(capacity: usize, ipv6: bool) -> Consumers6 {
        Consumers6 {
            slots: if ipv6 {
                vec![Slot6::default(); capacity]
            } else {
                Vec::new()
            },
        }
    }

    #[inline]
    pub fn get(&self, id: FlowId) -> Option<&Side6> {
        self.slots.get(id as usize).map(|s| &s.0)
    }

    /// The IPv6 side of flow `f` in slot `id`, if its consumer is IPv6.
    #[inline]
    pub fn of(&self, id: FlowId, f: &Flow) -> Option<Side6> {
        is_ipv6_consumer(f.fwd.src_ip)
            .then(|| self.get(id).copied())
            .flatten()
    }

    /// Starts loading slot `id` (a NAT64 flow's packet checks it right after its lookup).
    #[inline]
    pub fn prefetch(&self, id: FlowId) {
        if let Some(s) = self.slots.get(id as usize) {
            dpdk_bindings::prefetch::prefetch(s);
        }
    }

    #[inline]
    pub fn set(&mut self, id: FlowId, side: Side6) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.0 = side;
        }
    }
}

/// The consumer's and the endpoint's addresses of flow `f` as the consumer sees them:
/// from its IPv6 side `side` for an IPv6 consumer, else from its key. An IPv6 consumer's
/// flow whose side was not kept has them unspecified, never its key's 32-bit fold
/// (which is no address of anyone's).
pub fn consumer_addresses(f: &Flow, side: Option<Side6>) -> (SocketAddr, SocketAddr) {
    let k = &f.fwd;
    if is_ipv6_consumer(k.src_ip) {
        let (c, e) = side.map_or((0, 0), |s| (s.consumer, s.endpoint));
        return sockets6((c, k.src_port), (e, k.dst_port));
    }
    sockets4((k.src_ip, k.src_port), (k.dst_ip, k.dst_port))
}

/// The SNAT address and the target of flow `f` as the provider sees them: from its IPv6
/// side `side` for a NAT66 flow, else from its key (unspecified, as for
/// [`consumer_addresses`], for a NAT66 flow whose side was not kept).
pub fn provider_addresses(f: &Flow, side: Option<Side6>) -> (SocketAddr, SocketAddr) {
    let k = &f.rev;
    if is_snat6(k.dst_ip) {
        let (snat, target) = side.map_or((0, 0), |s| (s.snat, s.target));
        return sockets6((snat, k.dst_port), (target, k.src_port));
    }
    sockets4((k.dst_ip, k.dst_port), (k.src_ip, k.src_port))
}

fn sockets6(a: (u128, u16), b: (u128, u16)) -> (SocketAddr, SocketAddr) {
    let s = |(ip, port): (u128, u16)| SocketAddr::new(Ipv6Addr::from(ip).into(), port);
    (s(a), s(b))
}

fn sockets4(a: (u32, u16), b: (u32, u16)) -> (SocketAddr, SocketAddr) {
    let s = |(ip, port): (u32, u16)| SocketAddr::new(Ipv4Addr::from(ip).into(), port);
    (s(a), s(b))
}

/// The source of a packet as its sender sent it, for a reject record: an IPv6
/// packet's from the context (the IPv6 node keeps the addresses of every TCP/UDP packet
/// it reads, whether it goes on to the flow nodes, and perhaps is translated to IPv4
/// there, or is dropped on the spot), else the context's IPv4 one.
pub fn source_of(bytes: &[u8], ctx: &Ctx) -> IpAddr {
    if ctx.ipv6 || bytes.get(ctx.l3).is_some_and(|b| b >> 4 == 6) {
        IpAddr::V6(Ipv6Addr::from(ctx.addrs6[0]))
    } else {
        IpAddr::V4(Ipv4Addr::from(ctx.v4().0))
    }
}

/// Whether an IPv6 source cannot be a consumer's: unspecified, loopback, a group,
/// IPv4-mapped (RFC 4291 §2.5.5.2: never on the wire), or an address of ours.
pub(super) fn martian6(snap: &Snapshot, att: u16, src: u128) -> bool {
    never_a_source6(src) || snap.local6(att, src).is_some()
}

/// The part of [`martian6`] that needs no lookup.
#[inline]
fn never_a_source6(src: u128) -> bool {
    src == 0 || src == 1 || src >> 120 == 0xff || src >> 32 == 0xffff
}

impl<F: Frame> Pipeline<F> {
    /// A TCP or UDP packet whose IPv6 header the IPv6 node read at `ctx.l3` (its L4 header
    /// `header_len` bytes in, `total_len` bytes in all), from `src` to the endpoint of
    /// handle `endpoint` (IPv4 address `endpoint_ip`, None if it is not in the snapshot):
    /// its context as the flow nodes take it (the folded source, the endpoint's IPv4
    /// address as destination), or why not.
    #[allow(clippy::too_many_arguments)]
    // One call site, on every IPv6 TCP/UDP packet: inlined, its arguments stay in
    // registers (callgrind: ~35 instructions a packet less, with `enter_folded`).
    #[inline(always)]
    pub(super) fn enter_nat64(
        &mut self,
        frame: &mut F,
        ctx: &mut Ctx,
        (src, endpoint, endpoint_ip): (u128, u32, Option<u32>),
        proto: u8,
        (header_len, total_len): (usize, usize),
        hop: u8,
    ) -> Result<Next, DropReason> {
        if !self.active {
            return Err(DropReason::Standby);
        }
        let endpoint_ip = endpoint_ip.ok_or(DropReason::NoListener)?;
        ctx.local = Some(LocalKind::Endpoint(endpoint));
        // No martian check here: a new flow's source is checked where it is made
        // (`martian6`), and an established flow's packets must come from its consumer
        // (`side6`), whose address passed that check.
        let folded = self.fold_consumer(src);
        self.enter_folded(
            frame,
            ctx,
            (folded, endpoint_ip),
            proto,
            (header_len, total_len),
            hop,
            false,
        )
    }

    /// A TCP or UDP packet from IPv6 target `src` to our IPv6 SNAT address `dst` (the
    /// IPv6 node read its header at `ctx.l3`, its L4 header `header_len` bytes in,
    /// `total_len` bytes in all): its context as the reverse node takes it, the two
    /// addresses folded as a NAT66 flow's reverse key has them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enter_nat66_reply(
        &mut self,
        frame: &mut F,
        ctx: &mut Ctx,
        (src, dst): (u128, u128),
        service: u32,
        proto: u8,
        (header_len, total_len): (usize, usize),
        hop: u8,
    ) -> Result<Next, DropReason> {
        if !self.active {
            return Err(DropReason::Standby);
        }
        ctx.local = Some(LocalKind::Snat(service));
        let folded = (fold_target6(src), fold_snat6(dst));
        self.enter_folded(
            frame,
            ctx,
            folded,
            proto,
            (header_len, total_len),
            hop,
            true,
        )
    }

    /// The context of an IPv6 TCP or UDP packet as a flow node takes it, with `addrs` (its
    /// addresses folded as its flow's key has them) as its IPv4 ones: on to the fragment
    /// node, or the reverse (`rev`) or forward node with its key hashed and its chain
    /// prefetched.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn enter_folded(
        &mut self,
        frame: &mut F,
        ctx: &mut Ctx,
        (src, dst): (u32, u32),
        proto: u8,
        (header_len, total_len): (usize, usize),
        hop: u8,
        rev: bool,
    ) -> Result<Next, DropReason> {
        ctx.header_len = header_len;
        ctx.total_len = total_len;
        ctx.addrs = context::IpPair::V4 { src, dst };
        ctx.proto = proto;
        ctx.ttl = hop;
        // Translated, a fragment leaves as an IPv4 fragment that routers may cut again
        // (RFC 7915 §5.1.1); a whole packet with DF, which IPv6 means.
        ctx.df = ctx.frag.is_none();
        ctx.ipv6 = true;
        if frame.bytes().len() > ctx.end() && !frame.set_len(ctx.end()) {
            return Err(DropReason::Malformed);
        }
        if ctx.is_later_fragment() {
            // Its ports are its datagram's, which the fragment node knows.
            return Ok(Next::Fragment);
        }
        let l4: L4 = context::l4_ports(frame.bytes(), ctx)?;
        ctx.l4 = Ok(l4);
        if ctx.frag.is_some() {
            return Ok(Next::Fragment);
        }
        let key = FlowKey {
            src_ip: src,
            dst_ip: dst,
            src_port: l4.sport,
            dst_port: l4.dport,
            vpc: ctx.att,
            proto,
        };
        ctx.set_key(key, self.flows.index_keys());
        self.flows.prefetch_head(ctx.hash, rev);
        Ok(if rev { Next::Reverse } else { Next::Forward })
    }

    /// [`fold`] of consumer `src` under this pipeline's seed, by the keys kept for it.
    #[inline(always)]
    pub(super) fn fold_consumer(&self, src: u128) -> u32 {
        fold_with(&self.consumer_fold, src)
    }

    /// The IPv6 side of flow `id` for the IPv6 packet of `ctx`: what a new flow remembers
    /// (with a NAT66 flow's target and SNAT address, from `snap`), or for an existing one
    /// a check that the packet is its consumer's, or (`reply`) its target's to its SNAT
    /// address.
    pub(super) fn side6(
        &mut self,
        snap: &Snapshot,
        ctx: &Ctx,
        id: FlowId,
        (new, reply): (bool, bool),
    ) -> Result<(), DropReason> {
        if !ctx.ipv6 {
            return Err(DropReason::Malformed);
        }
        let [src, dst] = ctx.addrs6;
        if new {
            let (target, snat) = match self.flows.get(id) {
                Some(f) if is_snat6(f.rev.dst_ip) => {
                    provider6(snap, f).ok_or(DropReason::NoTarget)?
                }
                _ => (0, 0),
            };
            self.consumers6.set(
                id,
                Side6 {
                    consumer: src,
                    endpoint: dst,
                    target,
                    snat,
                },
            );
            return Ok(());
        }
        let side = self
            .consumers6
            .get(id)
            .ok_or(DropReason::Ipv6FlowCollision)?;
        let ours = if reply {
            side.target == src && side.snat == dst
        } else {
            side.consumer == src
        };
        if ours {
            Ok(())
        } else {
            Err(DropReason::Ipv6FlowCollision)
        }
    }

    /// Rewrite for a NAT66 flow: the IPv6 packet keeps its header (and extension
    /// headers), with its addresses, ports and hop limit changed and the L4 checksum
    /// updated; out to the next hop on the other side by neighbour discovery.
    #[inline(never)]
    pub(super) fn rewrite66(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let other = ctx.other;
        let side = *self.consumers6.get(ctx.flow).ok_or(DropReason::NoFlow)?;
        // Towards the target from the SNAT address, or back from the endpoint.
        let to_target = is_snat6(other.dst_ip);
        let (new_src, new_dst) = if to_target {
            (side.snat, side.target)
        } else {
            (side.endpoint, side.consumer)
        };
        let att = snap.attachment(other.vpc).ok_or(DropReason::NoAttachment)?;
        let l3 = ctx.l3;
        {
            let (head, seg) = split6(frame.bytes_mut(), ctx)?;
            let [old_src, old_dst] = ctx.addrs6;
            if !ctx.is_later_fragment() {
                let addrs = delta6([old_src, old_dst], [new_src, new_dst]);
                l4_update(
                    seg,
                    ctx.proto == PROTO_UDP,
                    addrs,
                    (other.dst_port, other.src_port),
                )?;
            }
            let mut ip = ip6::Ipv6Packet::new_unchecked(head);
            ip.set_hop_limit(ctx.ttl.saturating_sub(1));
            ip.set_src_addr_u128(new_src);
            ip.set_dst_addr_u128(new_dst);
        }
        self.route6(att, other.vpc, new_dst, frame, l3, now_ms)
    }

    /// Rewrite for a flow of an IPv6 consumer: its packet to IPv4 for the target, or the
    /// target's reply to IPv6 for the consumer, sent from here to the consumer's next hop
    /// (neighbour discovery).
    #[inline(never)]
    pub(super) fn rewrite64(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &mut Ctx,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let other = ctx.other;
        if ctx.ipv6 {
            let new_l3 = to_ipv4(frame.bytes_mut(), ctx, &other)?;
            ctx.total_len = ctx.total_len - ctx.header_len + IPV4_HEADER;
            ctx.l3 = new_l3;
            ctx.header_len = IPV4_HEADER;
            return Ok(Next::Out {
                att: other.vpc,
                dst: other.src_ip,
            });
        }
        let side = *self.consumers6.get(ctx.flow).ok_or(DropReason::NoFlow)?;
        let att = snap.attachment(other.vpc).ok_or(DropReason::NoAttachment)?;
        // A packet that may be fragmented and would not fit once translated leaves as
        // IPv6 fragments (RFC 7915 §4.1): a fragment header, then cut where needed.
        let seg_len = ctx.total_len - ctx.header_len;
        let whole = ip6::HEADER_LEN + seg_len;
        let frag = ctx.frag.or_else(|| {
            (whole > usize::from(att.mtu) && !ctx.df).then(|| context::Fragment {
                id: u32::from(ipv4_id(frame.bytes(), ctx.l3)),
                offset: 0,
                more: false,
            })
        });
        let fh = if frag.is_some() {
            ip6::FRAGMENT_HEADER_LEN
        } else {
            0
        };
        let grow = (ip6::HEADER_LEN + fh).saturating_sub(ctx.header_len);
        if grow > 0 {
            if !frame.push_front(grow) {
                return Err(DropReason::Malformed);
            }
            ctx.l3 += grow;
        }
        let l3 = to_ipv6(frame.bytes_mut(), ctx, &other, &side, frag)?;
        let (mac, next) = self.next_hop6(att, other.vpc, side.consumer, now_ms)?;
        if frag.is_some() && whole + fh > usize::from(att.mtu) {
            self.cut_fragment(frame, l3, att, (mac, next), now_ms)?;
        }
        l2::fit_l2(frame, l3, att)?;
        l2::write_l2(frame.bytes_mut(), att, mac, EtherType::IPV6);
        Ok(next)
    }

    /// Cuts the IPv6 fragment at `l3` in `frame` so that each piece fits `att`'s MTU:
    /// the frame keeps the first piece, the others leave from here (to `mac`, or held
    /// with the frame when `next` holds it), each with its offset, all but the last with
    /// "more".
    fn cut_fragment(
        &mut self,
        frame: &mut F,
        l3: usize,
        att: &AttachmentView,
        (mac, next): (EthernetAddress, Next),
        now_ms: u64,
    ) -> Result<(), DropReason> {
        let head = ip6::HEADER_LEN + ip6::FRAGMENT_HEADER_LEN;
        let room = (usize::from(att.mtu).saturating_sub(head)) & !7;
        let (total, offset, more) = {
            let b = frame.bytes();
            let h = b.get(l3..l3 + head).ok_or(DropReason::Malformed)?;
            let off_m = u16::from_be_bytes([h[42], h[43]]);
            (b.len() - l3 - head, off_m & 0xfff8, off_m & 1 != 0)
        };
        if room < 8 {
            return Err(DropReason::TooBig);
        }
        let l2_len = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
        let mut at = room;
        while at < total {
            let n = (total - at).min(room);
            let Some(mut piece) = (self.alloc)() else {
                return Err(DropReason::NoMbuf);
            };
            if !piece.set_len(l2_len + head + n) {
                return Err(DropReason::NoMbuf);
            }
            let last = at + n == total;
            let off = u16::try_from(usize::from(offset) + at).map_err(|_| DropReason::TooBig)?;
            {
                let src = frame.bytes();
                let dst = piece.bytes_mut();
                dst[l2_len..l2_len + head].copy_from_slice(&src[l3..l3 + head]);
                dst[l2_len + head..].copy_from_slice(&src[l3 + head + at..l3 + head + at + n]);
                let h = &mut dst[l2_len..];
                h[4..6].copy_from_slice(&u16::try_from(8 + n).unwrap_or(0).to_be_bytes());
                let m = if last { more } else { true };
                h[42..44].copy_from_slice(&(off | u16::from(m)).to_be_bytes());
                l2::write_l2(dst, att, mac, EtherType::IPV6);
            }
            match next {
                Next::Hold6(a, slot) => self.hold6(piece, a, slot, now_ms),
                _ => self.emitted.push((att.port, piece)),
            }
            at += n;
        }
        let b = frame.bytes_mut();
        b[l3 + 4..l3 + 6].copy_from_slice(&u16::try_from(8 + room).unwrap_or(0).to_be_bytes());
        b[l3 + 42..l3 + 44].copy_from_slice(&(offset | 1).to_be_bytes());
        if !frame.set_len(l3 + head + room) {
            return Err(DropReason::Malformed);
        }
        self.counters.fragments_made += 1;
        Ok(())
    }
}

/// A NAT66 flow's target and SNAT address, as its snapshot has them.
fn provider6(snap: &Snapshot, f: &Flow) -> Option<(u128, u128)> {
    let service = snap.service_by_handle(f.service)?;
    let target = service
        .listeners
        .get(usize::from(f.listener))?
        .targets
        .get(usize::from(f.target))?
        .ip6?;
    let snat = service
        .snat6
        .iter()
        .find(|(fold, _)| *fold == f.rev.dst_ip)?
        .1;
    Some((target, snat))
}

/// The identification of the IPv4 header at `l3`.
fn ipv4_id(bytes: &[u8], l3: usize) -> u16 {
    bytes
        .get(l3 + 4..l3 + 6)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// The 32-bit words of an IPv6 address, as the one's-complement sum takes them.
#[inline]
pub(super) fn words(a: u128) -> [u32; 4] {
    #[allow(clippy::cast_possible_truncation)]
    [
        (a >> 96) as u32,
        (a >> 64) as u32,
        (a >> 32) as u32,
        a as u32,
    ]
}

/// [`delta`] from IPv6 addresses `old` to `new`, over their 64-bit halves with the
/// carries added back in: the same sum modulo 0xFFFF (2^32 and 2^64 are 1 there) in half
/// the terms of 32-bit words, and no word array built in memory. Below 2^33, like
/// [`delta`]'s, so that callers can add further terms in a u64.
#[inline]
pub(super) fn delta6(old: [u128; 2], new: [u128; 2]) -> u64 {
    end_around(halves6(old).map(|h| !h), halves6(new))
}

/// [`delta`] from IPv6 addresses `old` to IPv4 addresses `new` (NAT64's change of both
/// checksums' address terms), as [`delta6`] does it.
#[inline]
pub(super) fn delta64(old: [u128; 2], new: [u32; 2]) -> u64 {
    let new = [u64::from(new[0]), u64::from(new[1]), 0, 0];
    end_around(halves6(old).map(|h| !h), new)
}

/// [`delta`] from IPv4 addresses `old` to IPv6 addresses `new` (the reply's way of
/// [`delta64`]).
#[inline]
pub(super) fn delta46(old: [u32; 2], new: [u128; 2]) -> u64 {
    let old = [!u64::from(old[0]), !u64::from(old[1]), 0, 0];
    end_around(old, halves6(new))
}

/// The 64-bit halves of two IPv6 addresses, high half first.
#[inline(always)]
fn halves6([a, b]: [u128; 2]) -> [u64; 4] {
    #[allow(clippy::cast_possible_truncation)] // the halves
    [(a >> 64) as u64, a as u64, (b >> 64) as u64, b as u64]
}

/// The one's-complement sum of `x` and `y`'s 64-bit terms, carries added back in, folded
/// below 2^33.
#[inline(always)]
fn end_around(x: [u64; 4], y: [u64; 4]) -> u64 {
    let add = |sum: u64, t: u64| {
        let (s, carry) = sum.overflowing_add(t);
        s + u64::from(carry)
    };
    // Pairwise, not as an iterator: a chained iterator was not unrolled.
    let x = add(add(x[0], x[1]), add(x[2], x[3]));
    let y = add(add(y[0], y[1]), add(y[2], y[3]));
    let sum = add(x, y);
    (sum >> 32) + (sum & 0xffff_ffff)
}

/// The one's-complement change of a checksum from the terms `old` to `new` (RFC 1624
/// eq. 3 over 32-bit words).
#[inline]
pub(super) fn delta(old: &[u32], new: &[u32]) -> u64 {
    old.iter().map(|w| u64::from(!w)).sum::<u64>() + new.iter().map(|&w| u64::from(w)).sum::<u64>()
}

/// Updates the TCP or UDP checksum of `seg` by `addrs` (the addresses' change) and the
/// ports' change to `ports` (source, destination), and writes the ports. A computed UDP
/// checksum of 0 is sent as 0xFFFF. Always inlined: every NAT66 and NAT64 packet takes
/// it, and as a call its six arguments were shuffled through the callers' registers.
#[inline(always)]
pub(super) fn l4_update(
    seg: &mut [u8],
    udp: bool,
    addrs: u64,
    ports: (u16, u16),
) -> Result<(), DropReason> {
    let csum_at = if udp { 6 } else { 16 };
    if seg.len() < csum_at + 2 {
        return Err(DropReason::Malformed);
    }
    let old_ports = u32::from_be_bytes([seg[0], seg[1], seg[2], seg[3]]);
    let new_ports = (u32::from(ports.0) << 16) | u32::from(ports.1);
    let c = u16::from_be_bytes([seg[csum_at], seg[csum_at + 1]]);
    let sum = u64::from(!c) + addrs + u64::from(!old_ports) + u64::from(new_ports);
    let c = match !checksum::fold(sum) {
        0 if udp => 0xFFFF,
        c => c,
    };
    seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    seg[0..4].copy_from_slice(&new_ports.to_be_bytes());
    Ok(())
}

/// The IPv6 packet of `ctx` in `bytes`, which the IPv6 node checked (`ctx.ipv6`), as its
/// headers (the fixed one and any extensions: `header_len` bytes, at least the fixed
/// header) and its L4 segment: one bounds check for both, not a check per field; any
/// other packet is malformed here.
#[inline(always)]
fn split6<'a>(bytes: &'a mut [u8], ctx: &Ctx) -> Result<(&'a mut [u8], &'a mut [u8]), DropReason> {
    if !ctx.ipv6 {
        return Err(DropReason::Malformed);
    }
    bytes
        .get_mut(ctx.l3..ctx.end())
        .and_then(|p| p.split_at_mut_checked(ctx.header_len))
        .filter(|(head, _)| head.len() >= ip6::HEADER_LEN)
        .ok_or(DropReason::Malformed)
}

/// The IPv6 packet of `ctx` in `bytes` as IPv4 for `other` (the flow's provider side, as
/// its packets arrive: the new source is its destination): an IPv4 header written just
/// before the L4 header (RFC 7915 §5.1: traffic class as TOS, DF set, identification 0,
/// hop limit - 1 as TTL; extension headers dropped), checksums updated. Returns where
/// the IPv4 header starts. Always inlined into its one caller: called, its arguments and
/// result went through memory, and its prologue saved six registers, on every packet.
#[inline(always)]
pub(super) fn to_ipv4(bytes: &mut [u8], ctx: &Ctx, other: &FlowKey) -> Result<usize, DropReason> {
    let (head, seg) = split6(bytes, ctx)?;
    let tc = ip6::Ipv6Packet::new_unchecked(&*head).traffic_class();
    let [src6, dst6] = ctx.addrs6;
    let total = u16::try_from(IPV4_HEADER + seg.len()).map_err(|_| DropReason::TooBig)?;
    let (new_src, new_dst) = (other.dst_ip, other.src_ip);
    let addrs = delta64([src6, dst6], [new_src, new_dst]);
    if !ctx.is_later_fragment() {
        l4_update(
            seg,
            ctx.proto == PROTO_UDP,
            addrs,
            (other.dst_port, other.src_port),
        )?;
    }
    // A fragment keeps its place in the datagram, and the low 16 bits of its
    // identification (RFC 7915 §5.1.1).
    #[allow(clippy::cast_possible_truncation)]
    let (id, flags) = match ctx.frag {
        Some(f) => (
            f.id as u16,
            (f.offset >> 3) | if f.more { 0x2000 } else { 0 },
        ),
        None => (0, 0x4000),
    };
    let ttl = ctx.ttl.saturating_sub(1);
    // The header's checksum from the values it is written from: summed back from the
    // bytes just stored in pieces, each load waited for its stores.
    let csum = !checksum::fold(
        u64::from(u16::from_be_bytes([0x45, tc]))
            + u64::from(total)
            + u64::from(id)
            + u64::from(flags)
            + u64::from(u16::from_be_bytes([ttl, ctx.proto]))
            + u64::from(new_src)
            + u64::from(new_dst),
    );
    // The last 20 bytes of the IPv6 headers (at least 40).
    let at = head.len() - IPV4_HEADER;
    let h4: &mut [u8; IPV4_HEADER] = head
        .get_mut(at..)
        .and_then(|h| h.try_into().ok())
        .ok_or(DropReason::Malformed)?;
    // Written whole: field by field, each store was bounds-checked.
    let ([t0, t1], [i0, i1], [f0, f1], [c0, c1]) = (
        total.to_be_bytes(),
        id.to_be_bytes(),
        flags.to_be_bytes(),
        csum.to_be_bytes(),
    );
    let ([s0, s1, s2, s3], [d0, d1, d2, d3]) = (new_src.to_be_bytes(), new_dst.to_be_bytes());
    *h4 = [
        0x45, tc, t0, t1, i0, i1, f0, f1, ttl, ctx.proto, c0, c1, s0, s1, s2, s3, d0, d1, d2, d3,
    ];
    Ok(ctx.l3 + at)
}

/// The IPv4 reply of `ctx` in `bytes` (room for the IPv6 header before its L4 header
/// made by the caller) as IPv6 for the consumer of `side`, whose flow's consumer side
/// is `other`: traffic class from TOS, flow label 0, TTL - 1 as hop limit (RFC 7915 §4.1;
/// IPv4 options dropped), the L4 checksum updated, or computed whole when a UDP reply
/// has none (IPv6 requires one). Returns where the IPv6 header starts.
pub(super) fn to_ipv6(
    bytes: &mut [u8],
    ctx: &Ctx,
    other: &FlowKey,
    side: &Side6,
    frag: Option<context::Fragment>,
) -> Result<usize, DropReason> {
    let l4 = ctx.l4_at();
    let fh = if frag.is_some() {
        ip6::FRAGMENT_HEADER_LEN
    } else {
        0
    };
    let start = l4
        .checked_sub(ip6::HEADER_LEN + fh)
        .ok_or(DropReason::Malformed)?;
    let h4 = bytes.get(ctx.l3..l4).ok_or(DropReason::Malformed)?;
    if h4.len() < IPV4_HEADER {
        return Err(DropReason::Malformed);
    }
    let tos = h4[1];
    let (old_src, old_dst) = ctx.v4();
    let seg_len = ctx.total_len - ctx.header_len;
    let payload = u16::try_from(seg_len + fh).map_err(|_| DropReason::TooBig)?;
    let (src, dst) = (side.endpoint, side.consumer);
    let udp = ctx.proto == PROTO_UDP;
    let seg = bytes.get_mut(l4..ctx.end()).ok_or(DropReason::Malformed)?;
    let ports = (other.dst_port, other.src_port);
    if frag.is_some_and(|f| !f.is_first()) {
        // No L4 header here: the first fragment's carries the datagram's checksum.
    } else if udp && seg.get(6..8) == Some(&[0, 0]) {
        // IPv6 requires a checksum, which only the whole datagram could give.
        if frag.is_some() {
            return Err(DropReason::Ipv6NotTranslated);
        }
        seg[0..2].copy_from_slice(&ports.0.to_be_bytes());
        seg[2..4].copy_from_slice(&ports.1.to_be_bytes());
        let c = crate::wire::icmpv6::l4_checksum_v6(src, dst, PROTO_UDP, seg);
        seg[6..8].copy_from_slice(&(if c == 0 { 0xFFFF } else { c }).to_be_bytes());
    } else {
        l4_update(seg, udp, delta46([old_src, old_dst], [src, dst]), ports)?;
    }
    let mut ip = ip6::Ipv6Packet::new_unchecked(&mut bytes[start..start + ip6::HEADER_LEN]);
    ip.set_version_class_label(tos, 0);
    ip.set_payload_len(payload);
    ip.set_next_header(if frag.is_some() {
        ip6::next_header::FRAGMENT
    } else {
        ctx.proto
    });
    ip.set_hop_limit(ctx.ttl.saturating_sub(1));
    ip.set_src_addr_u128(src);
    ip.set_dst_addr_u128(dst);
    if let Some(f) = frag {
        write_fragment_header(
            &mut bytes[start + ip6::HEADER_LEN..l4],
            ctx.proto,
            f.offset,
            f.more,
            f.id,
        );
    }
    Ok(start)
}

/// An IPv6 fragment header (RFC 8200 §4.5) in `h` (8 bytes).
fn write_fragment_header(h: &mut [u8], next: u8, offset: u16, more: bool, id: u32) {
    h[0] = next;
    h[1] = 0;
    h[2..4].copy_from_slice(&((offset & 0xfff8) | u16::from(more)).to_be_bytes());
    h[4..8].copy_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Pairs of `addrs` that share a fold under `seed`.
    fn shared_folds(seed: u64, addrs: impl Iterator<Item = u128>) -> usize {
        let mut folds: Vec<u32> = addrs.map(|a| fold(seed, a)).collect();
        folds.sort_unstable();
        folds.windows(2).filter(|w| w[0] == w[1]).count()
    }

    #[test]
    fn consumer_folds_spread_over_29_bits_however_the_addresses_differ() {
        // 2^16 addresses into 2^29 folds: ~4 pairs share one by chance. Addresses
        // that differ only in one word's high bits (which a multiply-shift over whole
        // 64-bit halves would keep apart badly), or only in the low ones, or in the
        // prefix, spread the same.
        let net = 0xfd00_00c1_0000_0000_u128 << 64;
        let n = 1u128 << 16;
        for seed in [0, 1, 0x5eed_5eed_5eed_5eed] {
            for (what, shared) in [
                ("low bits", shared_folds(seed, (0..n).map(|i| net | i))),
                (
                    "high bits of a word",
                    shared_folds(seed, (0..n).map(|i| net | i << 48)),
                ),
                (
                    "every word",
                    shared_folds(seed, (0..n).map(|i| net | i << 16 | i << 80)),
                ),
                ("prefix", shared_folds(seed, (0..n).map(|i| i << 96 | 0x10))),
            ] {
                assert!(
                    shared < 40,
                    "seed {seed:#x}, {what}: {shared} pairs share a fold"
                );
            }
        }
    }

    #[test]
    fn consumer_fold_keys_are_made_from_the_seed() {
        let consumer = 0xfd00_00c1_0000_0000_0000_0000_0000_0010_u128;
        assert_eq!(fold_with(&VectorHash::new(7), consumer), fold(7, consumer));
        assert_eq!(fold_with(&VectorHash::new(8), consumer), fold(8, consumer));
        // Different seeds, different folds (for 2^-29 of seeds, the same one).
        assert_ne!(fold(7, consumer), fold(8, consumer));
    }

    /// [`delta`] over the 32-bit words of the four addresses, as a one's-complement value.
    fn by_words(a: u128, b: u128, c: u128, d: u128) -> u16 {
        let mut old = [0u32; 8];
        old[..4].copy_from_slice(&words(a));
        old[4..].copy_from_slice(&words(b));
        let mut new = [0u32; 8];
        new[..4].copy_from_slice(&words(c));
        new[4..].copy_from_slice(&words(d));
        checksum::fold(delta(&old, &new)) % 0xffff
    }

    proptest! {
        #[test]
        fn a_consumer_fold_is_a_folded_source(seed in any::<u64>(), src in any::<u128>()) {
            let f = fold(seed, src);
            prop_assert!(is_ipv6_consumer(f));
            prop_assert_eq!(f & !FOLD_MASK, FOLD_BASE);
        }

        /// delta6 over 64-bit halves is delta over 32-bit words, modulo 0xFFFF (the
        /// one's-complement value; 0 and 0xFFFF are the same), and small enough for
        /// callers to add further terms.
        #[test]
        fn delta6_is_delta_over_words(a: u128, b: u128, c: u128, d: u128) {
            let by_halves = delta6([a, b], [c, d]);
            prop_assert!(by_halves < 1 << 33);
            prop_assert_eq!(checksum::fold(by_halves) % 0xffff, by_words(a, b, c, d));
        }

        /// The same for the changes between versions: IPv6 to IPv4 (NAT64's packets)
        /// and IPv4 to IPv6 (their replies).
        #[test]
        fn delta64_and_delta46_are_delta_over_words(a: u128, b: u128, v: u32, w: u32) {
            let mut six = [0u32; 8];
            six[..4].copy_from_slice(&words(a));
            six[4..].copy_from_slice(&words(b));
            let to_v4 = delta64([a, b], [v, w]);
            prop_assert!(to_v4 < 1 << 33);
            prop_assert_eq!(
                checksum::fold(to_v4) % 0xffff,
                checksum::fold(delta(&six, &[v, w])) % 0xffff
            );
            let to_v6 = delta46([v, w], [a, b]);
            prop_assert!(to_v6 < 1 << 33);
            prop_assert_eq!(
                checksum::fold(to_v6) % 0xffff,
                checksum::fold(delta(&[v, w], &six)) % 0xffff
            );
        }
    }

    #[test]
    fn delta6_at_the_edges() {
        for (a, b, c, d) in [
            (0, 0, 0, 0),
            (u128::MAX, u128::MAX, u128::MAX, u128::MAX),
            (0, 0, u128::MAX, u128::MAX),
            (u128::MAX, u128::MAX, 0, 0),
            (1, 0, 0, 1),
        ] {
            assert_eq!(
                checksum::fold(delta6([a, b], [c, d])) % 0xffff,
                by_words(a, b, c, d)
            );
        }
    }

    /// A slot's IPv6 side is one cache line, on a line of its own (192 bytes an IPv6
    /// flow with its 128-byte record).
    #[test]
    fn an_ipv6_side_fills_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot6>(), 64);
        assert_eq!(std::mem::align_of::<Slot6>(), 64);
        let c = Consumers6::new(3, true);
        assert_eq!(c.slots.as_ptr() as usize % 64, 0);
    }

    /// A flow of an IPv6 consumer (or a NAT66 flow) whose side was not kept shows its
    /// addresses unspecified, not the folds in its key; one with its side shows those.
    #[test]
    fn addresses_come_from_the_side_or_are_unspecified_never_the_fold() {
        use crate::tables::flow::FlowKey;
        let key = |src_ip, dst_ip, src_port, dst_port| FlowKey {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            vpc: 0,
            proto: 17,
        };
        let consumer6 = (0xfd00_00c1_u128 << 96) | 7;
        let (target6, snat6) = (
            (0xfd00_00b1_u128 << 96) | 11,
            (0xfd00_00b1_u128 << 96) | 100,
        );
        let f = Flow::new(
            key(fold(1, consumer6), 0x0a01_0064, 4000, 80),
            key(fold_target6(target6), fold_snat6(snat6), 8080, 5000),
            0,
        );
        let unspecified = |port| SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
        assert_eq!(
            consumer_addresses(&f, None),
            (unspecified(4000), unspecified(80))
        );
        assert_eq!(
            provider_addresses(&f, None),
            (unspecified(5000), unspecified(8080))
        );
        let side = Side6 {
            consumer: consumer6,
            endpoint: 0x64,
            target: target6,
            snat: snat6,
        };
        let (c, _) = consumer_addresses(&f, Some(side));
        assert_eq!(c, SocketAddr::new(Ipv6Addr::from(consumer6).into(), 4000));
        let (s, t) = provider_addresses(&f, Some(side));
        assert_eq!(
            (s.ip(), t.ip()),
            (Ipv6Addr::from(snat6).into(), Ipv6Addr::from(target6).into())
        );
        // An IPv4 flow's come from its keys.
        let g = Flow::new(
            key(0x0a01_0101, 0x0a01_0064, 4000, 80),
            key(0x0a02_000b, 0x0a02_0064, 8080, 5000),
            0,
        );
        assert_eq!(
            provider_addresses(&g, None).0,
            "10.2.0.100:5000".parse().unwrap()
        );
    }

    /// The provider side's folds stay in their ranges: a NAT66 reverse key meets no
    /// other key.
    #[test]
    fn provider_folds_keep_to_their_prefixes() {
        for i in 0..1000u128 {
            let a = (0xfd00_00b1_u128 << 96) | (i * 0x1_0001);
            assert!(is_snat6(fold_snat6(a)));
            assert!(is_ipv6_consumer(fold_target6(a)));
            // Never an IPv4 unicast SNAT address, never an endpoint's address.
            assert!(fold_snat6(a) >> 28 == 0xE);
        }
        assert!(!is_snat6(u32::from(std::net::Ipv4Addr::new(10, 2, 0, 100))));
        assert!(!is_snat6(crate::tables::snapshot::IPV6_ONLY_BASE | 5));
    }
}
