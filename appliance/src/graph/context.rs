//! The per-packet context: everything the nodes need to know about a packet, read once by
//! [`parse`] with the checked views of [`crate::wire`] and never derived again.
//!
//! Offsets are the packet's own (the L3 header's offset is the L2 header's length, VLAN
//! tag included). Addresses are an [`IpPair`], one variant per IP version: IPv4 only
//! today, so every `let IpPair::V4 { .. }` in the nodes is irrefutable and costs nothing;
//! the day IPv6 is a second variant, the compiler names every place that must learn it.

use crate::graph::counters::DropReason;
use crate::graph::dispatch::LocalMemo;
use crate::tables::flow::{FlowKey, TcpFlags, TcpSeen, PROTO_TCP, PROTO_UDP};
use crate::tables::snapshot::{LocalKind, Snapshot};
use crate::tables::vhash::VectorHash;
use crate::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame};
use crate::wire::ipv4::{self, Ipv4Packet, OptionsVerdict};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::vlan;

/// The key of a packet that has none (yet).
const NO_KEY: FlowKey = FlowKey {
    src_ip: 0,
    dst_ip: 0,
    src_port: 0,
    dst_port: 0,
    vpc: 0,
    proto: 0,
};

/// A packet's source and destination addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPair {
    /// Host byte order.
    V4 { src: u32, dst: u32 },
}

impl Default for IpPair {
    fn default() -> Self {
        IpPair::V4 { src: 0, dst: 0 }
    }
}

/// What the TCP/UDP header says.
#[derive(Debug, Clone, Copy, Default)]
pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    /// TCP: what flow tracking records.
    pub tcp: Option<TcpSeen>,
    /// TCP: the sequence number (a RST's is checked against the window).
    pub seq: u32,
}

/// Where a fragment sits in its datagram (IPv4: MF set or a non-zero offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The datagram's identification.
    pub id: u32,
    /// Offset of this fragment's payload in the datagram, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
}

impl Fragment {
    /// The first fragment carries the L4 header (the ports); the others do not.
    #[inline]
    pub fn is_first(self) -> bool {
        self.offset == 0
    }
}

/// One packet's facts. `Copy` and small, so a burst's contexts sit in one array.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// The VPC attachment the packet arrived on.
    pub att: u16,
    /// Offset of the L3 header: the L2 header's length.
    pub l3: usize,
    pub vlan: Option<u16>,
    /// The IP header's length, options included (0 for ARP).
    pub header_len: usize,
    /// The IP packet's length (its header's total length; Ethernet padding trimmed).
    pub total_len: usize,
    pub addrs: IpPair,
    pub proto: u8,
    pub ttl: u8,
    /// Don't fragment.
    pub df: bool,
    /// Set for a fragment of a datagram.
    pub frag: Option<Fragment>,
    /// What the destination address is to the appliance.
    pub local: Option<LocalKind>,
    /// TCP/UDP: the ports and flags; an error if the header is broken, kept until a node
    /// that needs the ports asks (an unknown destination is that before it is malformed).
    pub l4: Result<L4, DropReason>,
    /// TCP/UDP: the packet's flow key as it arrived, and the flow table's hash of it.
    pub key: FlowKey,
    pub hash: u64,
    /// Set by the flow nodes: the key of the flow's other side, as its packets arrive
    /// there (what rewrite translates to).
    pub other: FlowKey,
    /// Set by the flow nodes: the flow's slot.
    pub flow: u32,
    /// An IPv6 packet of a consumer that the flow nodes see through its IPv4 key
    /// (`nat64.rs`): its IPv6 header is at `l3`, `header_len` covers it and its
    /// extension headers.
    pub ipv6: bool,
    /// An IPv6 TCP or UDP packet's source and destination as it arrived, read once by the
    /// IPv6 node (so always there when `ipv6` is set; `addrs` holds their folds) for the
    /// flow nodes' side check, the translations and reject records. Stale for any other
    /// packet: read only behind `ipv6` or the packet's own IP version.
    pub addrs6: [u128; 2],
}

impl Ctx {
    /// A packet before [`parse_l2`]: nothing known.
    pub const EMPTY: Ctx = Ctx {
        att: 0,
        l3: 0,
        vlan: None,
        header_len: 0,
        total_len: 0,
        addrs: IpPair::V4 { src: 0, dst: 0 },
        proto: 0,
        ttl: 0,
        df: false,
        frag: None,
        local: None,
        l4: Err(DropReason::Malformed),
        key: NO_KEY,
        hash: 0,
        other: NO_KEY,
        flow: 0,
        ipv6: false,
        addrs6: [0, 0],
    };

    /// The IPv4 source and destination (the only version there is yet).
    #[inline]
    pub fn v4(&self) -> (u32, u32) {
        let IpPair::V4 { src, dst } = self.addrs;
        (src, dst)
    }

    /// Sets the packet's flow key and its index hash under `keys`, hashed from the value
    /// in hand: read back from the context just after the key's fields were stored one
    /// by one, the load would span several stores, which the CPU cannot forward, and wait
    /// until they reach the cache (measured: an eighth of the input node's time).
    #[inline(always)]
    pub fn set_key(&mut self, key: FlowKey, keys: &VectorHash) {
        self.key = key;
        self.hash = key.index_hash(keys);
    }

    /// Offset of the L4 header.
    #[inline]
    pub fn l4_at(&self) -> usize {
        self.l3 + self.header_len
    }

    /// A fragment other than its datagram's first: no L4 header, only the IP header is
    /// translated, and nothing is ever answered about it (RFC 1812 §4.3.2.7).
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        self.frag.is_some_and(|f| !f.is_first())
    }

    /// Offset just past the IP packet.
    #[inline]
    pub fn end(&self) -> usize {
        self.l3 + self.total_len
    }
}

/// Where [`parse`] sends a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Arp,
    Ipv4,
    /// Addressed to us or to an IPv6 multicast group (33:33:…): neighbour discovery
    /// goes to solicited-node groups.
    Ipv6,
}

/// The L2 facts of a frame into `ctx`: which attachment, where L3 starts; and what it is. The checks
/// of the module docs of [`crate::graph`]: a known attachment, a unicast sender, addressed
/// to us (or broadcast, for ARP).
#[inline]
pub fn parse_l2(
    snap: &Snapshot,
    in_port: u16,
    bytes: &[u8],
    ctx: &mut Ctx,
) -> Result<Entry, DropReason> {
    let l2 = vlan::l2_header(bytes).map_err(|e| match e {
        crate::wire::Error::Unsupported => DropReason::UnsupportedEtherType,
        _ => DropReason::Malformed,
    })?;
    let att_idx = snap
        .attachment_of(in_port, l2.vlan_id)
        .ok_or(DropReason::NoAttachment)?;
    let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
    // l2_header checked the Ethernet header's length already.
    let eth = EthernetFrame::new_unchecked(bytes);
    let (dst_mac, src_mac) = (eth.dst_addr(), eth.src_addr());
    // No station sends from a group (or zero) address; answering one would reach a whole
    // group, or the whole VPC.
    if !src_mac.is_unicast() || src_mac == EthernetAddress::UNSPECIFIED {
        return Err(DropReason::Malformed);
    }
    let for_us = dst_mac.0 == att.mac;
    ctx.att = att_idx;
    ctx.l3 = l2.header_len;
    ctx.vlan = l2.vlan_id;
    match l2.ethertype {
        EtherType::ARP if for_us || dst_mac.is_broadcast() => Ok(Entry::Arp),
        EtherType::IPV6 if for_us || dst_mac.0[..2] == [0x33, 0x33] => Ok(Entry::Ipv6),
        EtherType::ARP | EtherType::IPV4 | EtherType::IPV6 if !for_us => Err(DropReason::NotForUs),
        EtherType::IPV4 => Ok(Entry::Ipv4),
        _ => Err(DropReason::UnsupportedEtherType),
    }
}

/// The IPv4 facts of a packet [`parse_l2`] found to be IPv4 for us, filled into `ctx`:
/// its header (checksum, harmless options), whether it is a fragment, what its destination
/// is to us, and for TCP/UDP its ports and flow key (a fragment other than the first has
/// none: the fragment node finds them), with the key's index hash under `keys`
/// ([`Ctx::set_key`]).
#[inline]
pub fn parse_ipv4(
    snap: &Snapshot,
    bytes: &[u8],
    ctx: &mut Ctx,
    memo: &mut LocalMemo,
    keys: &VectorHash,
) -> Result<(), DropReason> {
    let l3 = bytes.get(ctx.l3..).ok_or(DropReason::Malformed)?;
    let pkt = Ipv4Packet::new_checked(l3).map_err(|_| DropReason::Malformed)?;
    if !pkt.verify_checksum() {
        return Err(DropReason::BadChecksum);
    }
    // Options only cost a look when there are some.
    if pkt.header_len() > ipv4::HEADER_LEN {
        match ipv4::judge_options(pkt.options()) {
            OptionsVerdict::Harmless => {}
            OptionsVerdict::Malformed => return Err(DropReason::BadIpOptions),
            OptionsVerdict::SourceRoute => return Err(DropReason::SourceRoute),
        }
    }
    let (src, dst) = (pkt.src_addr_u32(), pkt.dst_addr_u32());
    ctx.header_len = pkt.header_len();
    ctx.total_len = usize::from(pkt.total_len());
    ctx.addrs = IpPair::V4 { src, dst };
    ctx.proto = pkt.protocol().0;
    ctx.ttl = pkt.ttl();
    ctx.df = pkt.dont_frag();
    ctx.frag = pkt.is_fragment().then(|| Fragment {
        id: u32::from(pkt.ident()),
        offset: pkt.frag_offset(),
        more: pkt.more_frags(),
    });
    ctx.local = match *memo {
        Some((k, kind)) if k == (ctx.att, dst) => kind,
        _ => {
            let kind = snap.local(ctx.att, dst);
            *memo = Some(((ctx.att, dst), kind));
            kind
        }
    };
    let has_l4 = ctx.frag.is_none_or(Fragment::is_first);
    if has_l4 && (ctx.proto == PROTO_TCP || ctx.proto == PROTO_UDP) {
        let l4 = l4_ports(bytes, ctx);
        ctx.l4 = l4;
        if let Ok(l4) = l4 {
            let key = FlowKey {
                src_ip: src,
                dst_ip: dst,
                src_port: l4.sport,
                dst_port: l4.dport,
                vpc: ctx.att,
                proto: ctx.proto,
            };
            ctx.set_key(key, keys);
        }
    }
    Ok(())
}

/// Ports (and what TCP tracking needs) of a TCP/UDP packet. Always inlined: returned
/// through memory, its result was read back wider than it was written (a stall).
#[inline(always)]
pub(super) fn l4_ports(bytes: &[u8], ctx: &Ctx) -> Result<L4, DropReason> {
    let seg = bytes
        .get(ctx.l4_at()..ctx.end())
        .ok_or(DropReason::Malformed)?;
    if ctx.proto == PROTO_TCP {
        // A first fragment without the whole TCP header (RFC 1858's tiny fragment) would
        // leave flags or options to a later fragment that nobody checks.
        let broken = if ctx.frag.is_some() {
            DropReason::FragmentTooSmall
        } else {
            DropReason::Malformed
        };
        let tcp = TcpPacket::new_checked(seg).map_err(|_| broken)?;
        Ok(L4 {
            sport: tcp.src_port(),
            dport: tcp.dst_port(),
            tcp: Some(TcpSeen {
                flags: TcpFlags::from_bits(tcp.flags().bits()),
                ack: tcp.ack_number(),
                window: tcp.window_len(),
            }),
            seq: tcp.seq_number(),
        })
    } else if ctx.frag.is_some() {
        // A first fragment: its UDP length is the whole datagram's, longer than the
        // fragment, so only the header is checked here.
        let (sport, dport) = crate::wire::udp::first_fragment_ports(seg)
            .map_err(|_| DropReason::FragmentTooSmall)?;
        Ok(L4 {
            sport,
            dport,
            tcp: None,
            seq: 0,
        })
    } else {
        let udp = UdpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        Ok(L4 {
            sport: udp.src_port(),
            dport: udp.dst_port(),
            tcp: None,
            seq: 0,
        })
    }
}
