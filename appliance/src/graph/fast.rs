//! The established-flow fast path: a packet of a flow that already exists, with nothing
//! unusual about it, translated in one pass over fixed offsets.
//!
//! [`Pipeline::fast_path`] either forwards the packet or hands it back to the full path
//! *untouched* (the full path then decides, drops and counts exactly as before): every
//! check and lookup happens before the first write. What it takes: an IPv4 packet
//! without options or fragmentation, TTL above 1, a valid header checksum, a complete
//! UDP datagram (length field = what the IP header says) or TCP segment without SYN or
//! RST, to one of our endpoints or (replies) to a SNAT port this worker owns, of a live
//! flow whose next hop is known without asking and whose egress MTU it fits. Everything
//! else (ARP, ICMP, new flows, SYNs that may reopen a flow or carry options to clamp and
//! note, RSTs to check against the window, handoffs, unresolved neighbours, oversize and
//! malformed packets) takes the full path, so both paths agree by construction and the
//! pipeline tests exercise the fast one on every established packet.
//!
//! Why it pays: the full path re-derives the same facts through layered views, `Result`s
//! and bounds checks. Here one slice of the 20-byte IPv4 header is taken and checked
//! once, so the compiler drops the rest; measured in BENCHMARKS.md.

use super::*;

/// IPv4 version 4 with a 20-byte header: the only form the fast path takes.
const VERSION_IHL_NO_OPTIONS: u8 = 0x45;
const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const TCP_HEADER: usize = 20;

/// Packets whose flow-table stages [`Pipeline::process_burst`] interleaves: the cache
/// misses of this many lookups overlap.
pub const CHUNK: usize = 32;

/// What the fast path learned about a packet before deciding to take it.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    l3: usize,
    total_len: usize,
    key: FlowKey,
    /// What TCP tracking records.
    tcp: Option<TcpSeen>,
}

/// A packet the fast path may take, after the stages that only read.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    p: Parsed,
    /// A reply (to a SNAT address): the reverse index.
    rev: bool,
    /// The flow table's index hash of `p.key`.
    hash: u64,
    /// The chain head, once loaded.
    head: u32,
    /// A connection request: the full path takes it (it may open or reopen a flow), but
    /// its flow lookup is staged with the others, so the miss that a new flow's lookup
    /// always is overlaps theirs.
    new_flow: bool,
    /// For a new flow: the reverse-index hash its SNAT port search will probe first.
    snat_probe: Option<u64>,
}

/// The last answer of [`Snapshot::local`]: a burst mostly goes to one or two addresses.
type LocalMemo = Option<((u16, u32), Option<LocalKind>)>;

impl<F: Frame> Pipeline<F> {
    /// Forwards `frame` if it is a plain packet of an established flow (module docs) and
    /// returns the TX port index; otherwise returns None and leaves `frame` and every
    /// table as they were.
    #[inline]
    pub(super) fn fast_path(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frame: &mut F,
        now_ms: u64,
    ) -> Option<u16> {
        let c = self.prepare(snap, in_port, frame, &mut None)?;
        if c.new_flow {
            return None;
        }
        let head = self.flows.head(c.hash, c.rev);
        self.commit(snap, &c, head, frame, now_ms)
    }

    /// [`process`](Self::process) for every frame of `frames` (received on port index
    /// `in_port`), in order, each verdict handed to `out`; `frames` is left empty.
    ///
    /// Same results as one `process` per frame, but the flow lookups of up to [`CHUNK`]
    /// packets are staged: parse and hash all and prefetch their chain heads, then load
    /// the heads and prefetch the flows, then translate one by one. The misses of a chunk
    /// overlap instead of stalling each packet in turn. A packet the full path takes may
    /// add or remove flows, so after one, the rest of the chunk reloads its chain heads.
    pub fn process_burst<O: FnMut(Verdict<F>)>(
        &mut self,
        snap: &Snapshot,
        in_port: u16,
        frames: &mut Vec<F>,
        now_ms: u64,
        out: &mut O,
    ) {
        let mut cands: [Option<Candidate>; CHUNK] = [None; CHUNK];
        let mut memo: LocalMemo = None;
        let mut drain = frames.drain(..);
        let mut at = CHUNK;
        let mut dirty = false;
        loop {
            if at == CHUNK {
                let rest = drain.as_slice();
                let n = rest.len().min(CHUNK);
                for (c, f) in cands.iter_mut().zip(&rest[..n]) {
                    *c = self.prepare(snap, in_port, f, &mut memo);
                    if let Some(c) = c {
                        self.flows.prefetch_head(c.hash, c.rev);
                    }
                }
                let mut new_flows = 0u16;
                for c in cands[..n].iter_mut().flatten() {
                    c.head = self.flows.head(c.hash, c.rev);
                    self.flows.prefetch_flow(c.head);
                    if c.new_flow {
                        new_flows += 1;
                        self.load.prefetch_client(c.p.key.vpc, c.p.key.src_ip);
                        c.snat_probe = self.snat_probe(snap, &c.p.key, new_flows);
                        if let Some(h) = c.snat_probe {
                            self.flows.prefetch_head(h, true);
                        }
                    }
                }
                // New flows: the first flow of each probed reverse chain too.
                for h in cands[..n].iter().flatten().filter_map(|c| c.snat_probe) {
                    self.flows.prefetch_keys(self.flows.head(h, true));
                }
                at = 0;
                dirty = false;
            }
            let Some(mut frame) = drain.next() else {
                break;
            };
            let cand = cands.get(at).copied().flatten();
            at += 1;
            self.count_rx(&frame);
            if let Some(c) = cand.filter(|c| !c.new_flow) {
                let head = if dirty {
                    self.flows.head(c.hash, c.rev)
                } else {
                    c.head
                };
                if let Some(port) = self.commit(snap, &c, head, &mut frame, now_ms) {
                    out(Verdict::Tx(port, frame));
                    continue;
                }
            }
            dirty = true;
            out(self.full_path(snap, in_port, frame, now_ms));
        }
    }

    /// The reverse-index hash that the SNAT port search of the `k`-th new flow of this
    /// chunk will probe first, if the flow is created as predicted: the burst path
    /// prefetches that chain. A wrong guess (the flow exists, or the first port is
    /// taken) costs a useless prefetch.
    #[inline]
    fn snat_probe(&self, snap: &Snapshot, key: &FlowKey, k: u16) -> Option<u64> {
        let lref = snap.listener(key.vpc, key.dst_ip, key.proto, key.dst_port)?;
        let (_, _, mut rev) = plan_flow(snap, key, lref, self.settings.flow_hash_seed).ok()?;
        rev.dst_port = self.snat_port_guess(k);
        Some(self.flows.index_hash(&rev))
    }

    /// The reading stages: is this a candidate, which index, which hash.
    #[inline]
    fn prepare(
        &self,
        snap: &Snapshot,
        in_port: u16,
        frame: &F,
        memo: &mut LocalMemo,
    ) -> Option<Candidate> {
        if !frame.is_contiguous() {
            return None;
        }
        let p = parse(snap, in_port, frame.bytes())?;
        let at = (p.key.vpc, p.key.dst_ip);
        let kind = match *memo {
            Some((k, kind)) if k == at => kind,
            _ => {
                let kind = snap.local(at.0, at.1);
                *memo = Some((at, kind));
                kind
            }
        };
        let rev = match kind? {
            LocalKind::Endpoint(_) => false,
            LocalKind::Snat(_) => {
                if self.snat.owner(p.key.dst_port) != self.id {
                    return None; // a handoff
                }
                true
            }
            LocalKind::Own => return None,
        };
        Some(Candidate {
            p,
            rev,
            hash: self.flows.index_hash(&p.key),
            head: 0,
            new_flow: !rev && p.tcp.is_some_and(|t| t.flags.is_connection_request()),
            snat_probe: None,
        })
    }

    /// Finds the flow from chain `head` and, if everything is in place, translates and
    /// returns the TX port; None before any write otherwise.
    #[inline]
    fn commit(
        &mut self,
        snap: &Snapshot,
        c: &Candidate,
        head: u32,
        frame: &mut F,
        now_ms: u64,
    ) -> Option<u16> {
        let p = &c.p;
        let from_consumer = !c.rev;
        let id = self.flows.find_from(head, &p.key, c.rev)?;
        if self.flows.is_expired(id, now_ms) {
            return None;
        }
        let flow = self.flows.get(id)?;
        // The other side's key, seen from its end: its dst is our new source.
        let other = if from_consumer { flow.rev } else { flow.fwd };
        let att = snap.attachment(other.vpc)?;
        if p.total_len > usize::from(att.mtu) {
            return None; // too big for the egress: the full path answers or drops it
        }
        let next_hop = att.next_hop(other.src_ip)?;
        let mac = self.neighbours.known(other.vpc, next_hop, now_ms)?;

        // Committed: from here on the packet is forwarded.
        let end = p.l3 + p.total_len;
        if frame.bytes().len() > end && !frame.set_len(end) {
            return None;
        }
        let l3 = if p.l3 == ethernet::HEADER_LEN && att.vlan.is_none() {
            p.l3 // untagged in and out (the common case): only the addresses change
        } else {
            if set_l2(frame, p.l3, att).is_err() {
                return None; // no headroom for a VLAN tag; unchanged (set_l2 writes last)
            }
            ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 }
        };
        let flow = self.flows.get_mut(id)?;
        let bytes = u32::try_from(p.total_len).unwrap_or(u32::MAX);
        if flow.record(now_ms, from_consumer, bytes, p.tcp) {
            self.half_open_changed(id);
        }
        let bytes = frame.bytes_mut();
        let l2 = bytes.first_chunk_mut::<12>()?;
        l2[..6].copy_from_slice(&mac);
        l2[6..].copy_from_slice(&att.mac);
        let pkt = bytes.get_mut(l3..l3 + p.total_len)?;
        rewrite(pkt, IPV4_HEADER, &p.key, &other);
        Some(att.port)
    }
}

/// The checks of the module docs, reading only.
#[inline]
fn parse(snap: &Snapshot, in_port: u16, bytes: &[u8]) -> Option<Parsed> {
    let eth: &[u8; ethernet::HEADER_LEN] = bytes.first_chunk()?;
    let (l3, vlan_id) = if eth[12..14] == [0x08, 0x00] {
        (ethernet::HEADER_LEN, None)
    } else {
        let l2 = vlan::l2_header(bytes).ok()?;
        if l2.ethertype != EtherType::IPV4 {
            return None;
        }
        (l2.header_len, l2.vlan_id)
    };
    let vpc = snap.attachment_of(in_port, vlan_id)?;
    if eth[..6] != snap.attachment(vpc)?.mac {
        return None;
    }
    let h: &[u8; IPV4_HEADER] = bytes.get(l3..l3 + IPV4_HEADER)?.try_into().ok()?;
    let total_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // Not a fragment (MF clear, offset 0; DF may be set), TTL left to decrement.
    let frag = u16::from_be_bytes([h[6], h[7]]) & 0x3fff;
    if h[0] != VERSION_IHL_NO_OPTIONS || frag != 0 || h[8] <= 1 || !header_ok(h) {
        return None;
    }
    let seg = bytes.get(l3 + IPV4_HEADER..l3 + total_len)?;
    let proto = h[9];
    let tcp = match proto {
        PROTO_UDP => {
            let udp_len = usize::from(u16::from_be_bytes([*seg.get(4)?, *seg.get(5)?]));
            if seg.len() < UDP_HEADER || udp_len != seg.len() {
                return None;
            }
            None
        }
        PROTO_TCP => {
            let data_offset = usize::from(*seg.get(12)? >> 4) * 4;
            if seg.len() < TCP_HEADER || data_offset < TCP_HEADER || data_offset > seg.len() {
                return None;
            }
            // SYN and RST segments of any kind take the full path: a SYN-ACK for its MSS
            // and window scale, a RST for its window check (module docs).
            if seg[13] & (TcpFlags::SYN_BIT | TcpFlags::RST_BIT) != 0
                && !TcpFlags::from_bits(seg[13]).is_connection_request()
            {
                return None;
            }
            Some(TcpSeen {
                flags: TcpFlags::from_bits(seg[13]),
                ack: u32::from_be_bytes([seg[8], seg[9], seg[10], seg[11]]),
                window: u16::from_be_bytes([seg[14], seg[15]]),
            })
        }
        _ => return None,
    };
    Some(Parsed {
        l3,
        total_len,
        key: FlowKey {
            src_ip: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            dst_ip: u32::from_be_bytes([h[16], h[17], h[18], h[19]]),
            src_port: u16::from_be_bytes([seg[0], seg[1]]),
            dst_port: u16::from_be_bytes([seg[2], seg[3]]),
            vpc,
            proto,
        },
        tcp,
    })
}

/// The one's-complement sum of the header's ten words is 0xFFFF when its checksum is
/// right (RFC 1071). Summed as five 32-bit words, then folded: the sum of 16-bit words
/// modulo 0xFFFF is the same, in a third of the instructions.
#[inline]
fn header_ok(h: &[u8; IPV4_HEADER]) -> bool {
    let mut sum = 0u64;
    for w in h.chunks_exact(4) {
        sum += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum == 0xffff
}

/// Source := `other`'s destination, destination := `other`'s source (addresses and
/// ports), TTL - 1, both checksums updated incrementally (RFC 1624 eq. 3). `pkt` is an
/// IPv4 packet with a `header_len`-byte header (checked, >= 20) and a complete UDP or TCP
/// header; both paths translate with this.
///
/// The one's-complement sum over 32-bit words equals the sum over their 16-bit halves
/// (modulo 0xFFFF), so each address and the port pair enter as one term, and the address
/// terms, which both checksums cover, are summed once.
#[inline]
pub(super) fn rewrite(pkt: &mut [u8], header_len: usize, old: &FlowKey, other: &FlowKey) {
    let Some((h, seg)) = pkt.split_at_mut_checked(header_len.max(IPV4_HEADER)) else {
        return;
    };
    let (new_src, new_dst) = (other.dst_ip, other.src_ip);
    let addrs =
        u64::from(!old.src_ip) + u64::from(!old.dst_ip) + u64::from(new_src) + u64::from(new_dst);
    // TTL - 1 lowers the (TTL, protocol) word by 0x100: ~w + (w - 0x100) = 0xFEFF.
    const TTL_DECREMENT: u64 = 0xFEFF;
    let ip_csum = u16::from_be_bytes([h[10], h[11]]);
    let ip_csum = !checksum::fold(u64::from(!ip_csum) + addrs + TTL_DECREMENT);
    h[8] = h[8].wrapping_sub(1);
    h[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    h[12..16].copy_from_slice(&new_src.to_be_bytes());
    h[16..20].copy_from_slice(&new_dst.to_be_bytes());

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
            rewrite(&mut p, IPV4_HEADER, &old, &other);
            prop_assert_eq!(p, want);
        }
    }
}
