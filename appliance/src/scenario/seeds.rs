//! Seeds from real traffic: frames captured on the end-to-end tests' namespace interfaces
//! (`scripts/fuzz-seeds.sh` runs the capture and `examples/fuzz_seeds.rs` this
//! conversion), turned into inputs for `process_frame` (one frame each) and for
//! `process_structured` (the frames the hosts sent, in order, as events).
//!
//! A structured seed describes what the consumer's client sent as fresh packets (its
//! addresses and ports are the demo's), what the targets sent as answers to the newest
//! packet the appliance sent them (the fuzz world picks its own target and SNAT port, so
//! a capture's target and port would match nothing) with the captured sequence numbers,
//! ARP replies as answers to the appliance's requests, and the time between frames as
//! clock events. What cannot be described (an unusual host, options, lengths) goes in as
//! a raw frame.

use super::{
    encode_len, tcp_options_index, Op, Rec, CONSUMER_NET, CONSUMER_PORT, MACS, PROVIDER_NET,
    PROVIDER_PORT, RECORD,
};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{EtherType, EthernetFrame};
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::vlan;

/// One captured frame, on the port whose namespace it was captured in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    pub ts_us: u64,
    pub port: u16,
    pub bytes: Vec<u8>,
}

/// The appliance's addresses in the demo: frames from these are the appliance's own.
const APPLIANCE_ADDRS: [u32; 4] = [
    CONSUMER_NET | 1,
    CONSUMER_NET | 100,
    PROVIDER_NET | 1,
    PROVIDER_NET | 100,
];

/// Reads a classic pcap file of Ethernet frames (either byte order, micro- or
/// nanosecond timestamps): (timestamp in µs, frame) each.
pub fn read_pcap(data: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let header = data.get(..24).ok_or("shorter than a pcap header")?;
    let magic = [header[0], header[1], header[2], header[3]];
    let (big, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        _ => return Err("not a pcap file (pcapng is not read; capture with tcpdump -w)".into()),
    };
    let word = |b: &[u8]| {
        let w = [b[0], b[1], b[2], b[3]];
        if big {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let linktype = word(&header[20..24]);
    if linktype != 1 {
        return Err(format!("link type {linktype}, not Ethernet (1)"));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while let Some(rec) = data.get(at..at + 16) {
        let (sec, frac) = (u64::from(word(&rec[0..4])), u64::from(word(&rec[4..8])));
        let caplen = usize::try_from(word(&rec[8..12])).map_err(|e| e.to_string())?;
        let frame = data
            .get(at + 16..at + 16 + caplen)
            .ok_or("a truncated packet record")?;
        let us = if nanos { frac / 1000 } else { frac };
        out.push((sec * 1_000_000 + us, frame.to_vec()));
        at += 16 + caplen;
    }
    Ok(out)
}

/// The frames of one interface's capture that hosts sent towards the appliance, tagged
/// with `port`: frames from an appliance address (IPv4 source, ARP sender) are left out.
/// (Addresses, not MACs: a `net_tap` port and its kernel interface share one MAC.)
pub fn towards_appliance(frames: &[(u64, Vec<u8>)], port: u16) -> Vec<Captured> {
    let from_appliance = |f: &[u8]| {
        let Ok(l2) = vlan::l2_header(f) else {
            return false;
        };
        let l3 = &f[l2.header_len..];
        let src = match l2.ethertype {
            EtherType::IPV4 => Ipv4Packet::new_checked(l3).map(|p| p.src_addr_u32()),
            EtherType::ARP => ArpPacket::new_checked(l3)
                .map(|a| u32::from_be_bytes(a.source_protocol_addr_bytes())),
            _ => return false,
        };
        src.is_ok_and(|ip| APPLIANCE_ADDRS.contains(&ip))
    };
    frames
        .iter()
        .filter(|(_, f)| EthernetFrame::new_checked(&f[..]).is_ok() && !from_appliance(f))
        .map(|(ts, f)| Captured {
            ts_us: *ts,
            port,
            bytes: f.clone(),
        })
        .collect()
}

/// Frames addressed to the capture's appliance are addressed to the fuzz world's.
fn readdressed(c: &Captured) -> Vec<u8> {
    let mut b = c.bytes.clone();
    if b.len() >= 6 && b[0] & 1 == 0 {
        b[..6].copy_from_slice(&MACS[usize::from(c.port) % MACS.len()]);
    }
    b
}

/// `process_frame` inputs: a control byte naming the port (clock unchanged, one frame),
/// then the frame; duplicates left out.
pub fn raw_inputs(frames: &[Captured]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in frames {
        let mut input = vec![u8::try_from(c.port & 3).unwrap_or(0)];
        input.extend_from_slice(&readdressed(c));
        if !out.contains(&input) {
            out.push(input);
        }
    }
    out
}

/// `process_structured` inputs: `frames` (merged from both ports, in time order) as
/// events, split into inputs of at most `max_events` events, preferably where the client
/// opens a connection. An input whose frames include ARP replies starts with unknown
/// neighbours (the capture has the ARP exchanges), others with the hosts known.
pub fn structured_inputs(frames: &[Captured], max_events: usize) -> Vec<Vec<u8>> {
    let mut sorted: Vec<&Captured> = frames.iter().collect();
    sorted.sort_by_key(|c| c.ts_us);
    let mut inputs = Vec::new();
    let mut cur: Vec<[u8; RECORD]> = Vec::new();
    let mut resolves = false;
    let mut last_ts: Option<u64> = None;
    let finish = |cur: &mut Vec<[u8; RECORD]>, resolves: &mut bool, inputs: &mut Vec<Vec<u8>>| {
        if cur.is_empty() {
            return;
        }
        let mut input = vec![if *resolves { 0 } else { 0x40 }, 0];
        for r in cur.drain(..) {
            input.extend_from_slice(&r);
        }
        inputs.push(input);
        *resolves = false;
    };
    for c in sorted {
        let mut recs = Vec::new();
        if let Some(prev) = last_ts {
            recs.extend(clock(c.ts_us.saturating_sub(prev) / 1000));
        }
        last_ts = Some(c.ts_us);
        let opens = opens_connection(c);
        recs.extend(encode(c));
        if cur.len() + recs.len() > max_events || (opens && cur.len() >= max_events / 2) {
            finish(&mut cur, &mut resolves, &mut inputs);
        }
        resolves |= is_arp_reply(c);
        cur.extend(recs);
    }
    finish(&mut cur, &mut resolves, &mut inputs);
    inputs
}

fn is_arp_reply(c: &Captured) -> bool {
    vlan::l2_header(&c.bytes).is_ok_and(|l2| {
        l2.ethertype == EtherType::ARP
            && ArpPacket::new_checked(&c.bytes[l2.header_len..]).is_ok_and(|a| a.operation().0 == 2)
    })
}

fn opens_connection(c: &Captured) -> bool {
    let Some((ip, _)) = ipv4_of(&c.bytes) else {
        return false;
    };
    ip.protocol().0 == 6 && TcpPacket::new_checked(ip.payload()).is_ok_and(|t| t.syn() && !t.ack())
}

fn ipv4_of(f: &[u8]) -> Option<(Ipv4Packet<&[u8]>, usize)> {
    let l2 = vlan::l2_header(f).ok()?;
    if l2.ethertype != EtherType::IPV4 || l2.vlan_id.is_some() {
        return None;
    }
    Some((
        Ipv4Packet::new_checked(&f[l2.header_len..]).ok()?,
        l2.header_len,
    ))
}

/// Clock events for a gap of `ms` milliseconds (none under 1 ms).
fn clock(mut ms: u64) -> Vec<[u8; RECORD]> {
    let mut out = Vec::new();
    while ms > 0 && out.len() < 4 {
        let (b, took) = if ms < 64 {
            (ms << 2, ms)
        } else if ms < 6400 {
            (((ms / 100) << 2) | 1, ms / 100 * 100)
        } else {
            let s = (ms / 1000).min(63);
            ((s << 2) | 2, s * 1000)
        };
        let mut r = Rec::new(Op::Clock);
        r.b = u8::try_from(b).unwrap_or(0);
        out.push(r.encode());
        ms -= took;
    }
    out
}

/// The events for one frame: a structured one where the frame fits a description, else
/// a raw frame.
fn encode(c: &Captured) -> Vec<[u8; RECORD]> {
    match describe(c) {
        Some(r) => vec![r.encode()],
        None => raw(c),
    }
}

fn raw(c: &Captured) -> Vec<[u8; RECORD]> {
    let bytes = &c.bytes[..c.bytes.len().min(9216)];
    let mut r = Rec::new(Op::Raw);
    r.a = u8::try_from(c.port & 1).unwrap_or(0) | 2;
    [r.b, r.c] = u16::try_from(bytes.len()).unwrap_or(0).to_be_bytes();
    let mut out = vec![r.encode()];
    for chunk in bytes.chunks(RECORD) {
        let mut rec = [0u8; RECORD];
        rec[..chunk.len()].copy_from_slice(chunk);
        out.push(rec);
    }
    out
}

/// The structured record of a frame, when one describes it exactly enough.
fn describe(c: &Captured) -> Option<Rec> {
    let l2 = vlan::l2_header(&c.bytes).ok()?;
    if l2.vlan_id.is_some() {
        return None;
    }
    let padded = |ip_len: usize| c.bytes.len() > l2.header_len + ip_len;
    let l3 = &c.bytes[l2.header_len..];
    if l2.ethertype == EtherType::ARP {
        return describe_arp(c, l3);
    }
    let (ip, _) = ipv4_of(&c.bytes)?;
    if ip.header_len() != 20 || ip.ttl() != 64 || ip.is_fragment() {
        return None;
    }
    let mut r = Rec {
        ip: if ip.dont_frag() { 0 } else { 0x80 },
        ..Rec::default()
    };
    if padded(usize::from(ip.total_len())) {
        r.l2 |= 4;
    }
    let (src, dst, proto) = (ip.src_addr_u32(), ip.dst_addr_u32(), ip.protocol().0);
    let l4 = ip.payload();
    if c.port == CONSUMER_PORT {
        if src != CONSUMER_NET | 10 {
            return None;
        }
        r.op = Op::Consumer.code();
        let d = match dst & 0xff {
            100 => 0,
            1 => 4,
            101 => 5,
            200 => 6,
            _ => return None,
        };
        if dst & 0xffff_ff00 != CONSUMER_NET {
            return None;
        }
        r.a = d << 3;
        let (sport, dport, payload) = match proto {
            6 => {
                let t = TcpPacket::new_checked(l4).ok()?;
                r.c = t.flags().bits();
                (r.seq, r.ack, r.win) = (t.seq_number(), t.ack_number(), t.window_len());
                r.l2 |= tcp_options_index(t.options()) << 5;
                (t.src_port(), t.dst_port(), t.payload().len())
            }
            17 => {
                let u = UdpPacket::new_checked(l4).ok()?;
                r.b = 1;
                if u.checksum() == 0 {
                    r.l2 |= 8;
                }
                (u.src_port(), u.dst_port(), u.payload().len())
            }
            1 => {
                let i = Icmpv4Packet::new_checked(l4).ok()?;
                if i.msg_type().0 != 8 || i.code() != 0 {
                    return None;
                }
                r.b = 2;
                r.seq = (u32::from(i.echo_ident()) << 16) | u32::from(i.echo_seq_no());
                r.len = encode_len(i.payload().len())?;
                return Some(r);
            }
            _ => return None,
        };
        let s = match sport {
            40000..=40003 => sport - 40000,
            _ => {
                [r.x, r.y] = sport.to_be_bytes();
                7
            }
        };
        let d = match dport {
            80 => 0,
            9000 => 3,
            81 => 5,
            0 => 6,
            _ => {
                r.p2 = dport;
                7
            }
        };
        r.b |= u8::try_from((s << 5) | (d << 2)).ok()?;
        r.len = encode_len(payload)?;
        return Some(r);
    }
    // Provider side: a target answering the newest packet of that protocol the appliance
    // sent on this port.
    if dst != PROVIDER_NET | 100 || !(11..=13).contains(&(src & 0xff)) {
        return None;
    }
    r.op = Op::Answer.code();
    match proto {
        6 => {
            let t = TcpPacket::new_checked(l4).ok()?;
            r.b = 2 << 5;
            r.c = 7;
            r.x = t.flags().bits();
            (r.seq, r.ack, r.win) = (t.seq_number(), t.ack_number(), t.window_len());
            r.z = 0x40;
            r.l2 |= tcp_options_index(t.options()) << 5;
            r.len = encode_len(t.payload().len())?;
        }
        17 => {
            let u = UdpPacket::new_checked(l4).ok()?;
            r.b = (2 << 5) | 0x80;
            if u.checksum() == 0 {
                r.l2 |= 8;
            }
            r.len = encode_len(u.payload().len())?;
        }
        _ => return None,
    }
    Some(r)
}

fn describe_arp(c: &Captured, l3: &[u8]) -> Option<Rec> {
    let a = ArpPacket::new_checked(l3).ok()?;
    let op = a.operation().0;
    if op == 2 {
        // A reply to the appliance's request.
        let mut r = Rec::new(Op::Answer);
        r.b = 3 << 5;
        return Some(r);
    }
    if op != 1 {
        return None;
    }
    let net = if c.port == PROVIDER_PORT {
        PROVIDER_NET
    } else {
        CONSUMER_NET
    };
    let spa = u32::from_be_bytes(a.source_protocol_addr_bytes());
    let tpa = u32::from_be_bytes(a.target_protocol_addr_bytes());
    if spa & 0xffff_ff00 != net || tpa & 0xffff_ff00 != net {
        return None;
    }
    let s = [10u32, 11, 12, 13, 1, 100]
        .iter()
        .position(|&h| spa == net | h)?;
    let t = if tpa == spa {
        3
    } else {
        [1u32, 100, 101].iter().position(|&h| tpa == net | h)?
    };
    let bcast = c.bytes[..6] == [0xff; 6];
    let mut r = Rec::new(Op::Arp);
    r.a = (u8::from(c.port == PROVIDER_PORT) * 2) | (u8::try_from(s).ok()? << 3);
    r.b = u8::try_from(t).ok()? | if bcast { 0 } else { 2 << 3 };
    Some(r)
}

/// A script: setup bytes and records.
pub fn script(setup: [u8; 2], recs: &[Rec]) -> Vec<u8> {
    let mut v = setup.to_vec();
    for r in recs {
        v.extend_from_slice(&r.encode());
    }
    v
}

/// An answer (to output `b`, see `World::pick_output`) of kind `c` on worker bit `a`,
/// starting at sequence number 5000 where it starts one.
fn answer(b: u8, c: u8, a: u8) -> Rec {
    rec(Op::Answer, |r| {
        r.a = a;
        r.b = b;
        r.c = c;
        r.seq = 5000;
        r.win = 65000;
        r.len = 100;
    })
}

/// A record of `op` with the fields `f` sets.
pub fn rec(op: Op, f: impl FnOnce(&mut Rec)) -> Rec {
    let mut r = Rec::new(op);
    f(&mut r);
    r
}

/// Outputs to answer: the newest ARP request, the newest TCP (UDP) packet on a port.
const ARP_REQUEST: u8 = 3 << 5;
const TCP_TO_CONSUMER: u8 = 1 << 5;
const TCP_TO_PROVIDER: u8 = 2 << 5;
const UDP_TO_PROVIDER: u8 = (2 << 5) | 0x80;

/// A hand-written scenario (a seed, and the unit tests' proof of reach): a client's
/// connection through both translations, ARP in both VPCs with packets held meanwhile,
/// ICMP errors both ways, UDP, echo, expiry, a flow ended by a change, reports, a
/// listing, and a flood that fills the flow table; with one or two workers.
pub fn scripted(workers: u8) -> Vec<u8> {
    // Replies arrive on the other worker when there are two: handed to the owner.
    let other = if workers == 2 { 0x40 } else { 0 };
    let syn = |sport_idx: u8| {
        rec(Op::Consumer, |r| {
            r.b = sport_idx << 5;
            r.c = 0x02;
            r.seq = 1000;
            r.win = 64240;
            r.l2 = 5 << 5;
        })
    };
    // 20 ms: a timer tick, when a worker sends what it held for a next hop another
    // worker's ARP reply resolved.
    let tick = || rec(Op::Clock, |r| r.b = 20 << 2);
    let recs = vec![
        syn(0),
        answer(ARP_REQUEST, 0, other),
        tick(),
        // SYN-ACK from the target, then ARP for the client, then the client's ACK.
        answer(TCP_TO_PROVIDER, 0, other),
        answer(ARP_REQUEST, 0, 0),
        tick(),
        answer(TCP_TO_CONSUMER, 0, 0),
        // Data from the target to the client, and the client's ACK.
        answer(TCP_TO_PROVIDER, 1, other),
        answer(TCP_TO_CONSUMER, 0, 0),
        // The target reports the client's last segment unreachable; the client reports
        // the target's data too big (fragmentation needed, MTU 1200).
        rec(Op::IcmpError, |r| {
            r.a = other;
            r.b = TCP_TO_PROVIDER;
        }),
        rec(Op::IcmpError, |r| {
            r.b = TCP_TO_CONSUMER;
            r.c = 2 << 2;
            r.win = 1200;
        }),
        // UDP to port 9000 and its answer; a ping; ARP for the endpoint.
        rec(Op::Consumer, |r| {
            r.b = 1 | (3 << 2);
            r.len = 10;
        }),
        answer(ARP_REQUEST, 0, other),
        tick(),
        answer(UDP_TO_PROVIDER, 0, other),
        rec(Op::Consumer, |r| {
            r.b = 2;
            r.seq = 0x0007_0001;
        }),
        rec(Op::Arp, |r| r.b = 1),
        // 351 s: every flow expires.
        rec(Op::Clock, |r| r.b = (2 << 2) | 3),
        // A second connection, established, then a policy that allows only UDP's port
        // ends it (and is reset).
        syn(1),
        answer(TCP_TO_PROVIDER, 0, other),
        answer(TCP_TO_CONSUMER, 0, 0),
        rec(Op::Control, |r| r.b = 9),
        rec(Op::Poll, |r| r.b = 7),
        rec(Op::Control, |r| r.b = 8),
        // Listings and reports.
        rec(Op::Report, |r| r.b = 0),
        rec(Op::Report, |r| {
            r.b = 2;
            r.c = 10;
        }),
        rec(Op::Poll, |r| r.b = 3),
        // A flood of SYNs from other hosts, in bursts, fills a 16-flow table.
        rec(Op::Flood, |r| {
            r.b = 40;
            r.c = 2 | 4;
        }),
    ];
    // 16 flows per worker.
    script([u8::from(workers == 2) | 2, 0], &recs)
}

/// fd00:c1::10 asks for the dual-stack endpoint's IPv6 address (and is learned from its
/// link-layer option).
fn solicit_endpoint6() -> Rec {
    rec(Op::Consumer6, |r| {
        r.a = 6 << 3;
        r.b = 2;
        r.c = 1 | 4;
        r.ip = 6;
    })
}

/// A hand-written IPv6 scenario: a consumer's solicitation of the dual-stack endpoint,
/// a TCP connection through it (NAT64) answered both ways, a fragmented UDP datagram, a
/// ping, a consumer nobody knows yet, whose reply waits for the appliance's solicitation
/// to be answered, and the endpoint's rejection, which resets the connections.
pub fn scripted6(workers: u8) -> Vec<u8> {
    let other = if workers == 2 { 0x40 } else { 0 };
    let tick = || rec(Op::Clock, |r| r.b = 20 << 2);
    let syn = |a: u8, y: u8| {
        rec(Op::Consumer6, |r| {
            r.a = a;
            r.y = y;
            r.c = 0x02;
            r.seq = 1000;
            r.win = 64240;
        })
    };
    let recs = vec![
        solicit_endpoint6(),
        syn(0, 0),
        answer(ARP_REQUEST, 0, other),
        tick(),
        answer(TCP_TO_PROVIDER, 0, other),
        answer(TCP_TO_CONSUMER, 0, 0),
        answer(TCP_TO_PROVIDER, 1, other),
        answer(TCP_TO_CONSUMER, 1, 0),
        // UDP to port 9000 in two fragments (the second first), then whole, and the
        // answer to that.
        rec(Op::Consumer6, |r| {
            r.b = 1 | (3 << 2);
            r.len = 40;
            r.damage = 0xc8;
            r.y = 8;
            r.seq = 0x0102_0304;
        }),
        answer(ARP_REQUEST, 0, other),
        tick(),
        rec(Op::Consumer6, |r| {
            r.b = 1 | (3 << 2);
            r.len = 20;
        }),
        answer(UDP_TO_PROVIDER, 0, other),
        // A ping of the endpoint's IPv6 address.
        rec(Op::Consumer6, |r| {
            r.b = 2;
            r.seq = 0x0007_0001;
        }),
        // fd00:c1::20 connects without asking first: the SYN-ACK waits for the
        // appliance's solicitation (the newest output) to be answered.
        syn(7, 0x20),
        answer(TCP_TO_PROVIDER, 0, other),
        answer(0, 0, 0),
        tick(),
        answer(TCP_TO_CONSUMER, 0, 0),
        // The provider rejects the endpoint: its open connections are reset, the IPv6
        // consumers' from the address the endpoint no longer answers for.
        rec(Op::Control, |r| r.b = 0),
        rec(Op::Poll, |r| r.b = 7),
    ];
    script([u8::from(workers == 2), 0], &recs)
}

/// Outputs to answer: the newest IPv6 TCP/UDP packet to the provider (a NAT66 flow's, as
/// the scripts here send no other IPv6 there).
const UDP_TO_CONSUMER: u8 = (1 << 5) | 0x80;

/// A hand-written NAT66 scenario: an IPv6 consumer's connection to the IPv6 listener
/// tcp/443, held while the appliance solicits the target, answered both ways; UDP to
/// udp/9443 in fragments, whole and with hop-by-hop options, answered; ICMPv6 errors about the flows from a
/// router on each side; a stray IPv6 packet from a non-target to the SNAT address; and
/// the deregistration of both IPv6 targets, which resets the connection to both sides.
pub fn scripted66(workers: u8) -> Vec<u8> {
    let other = if workers == 2 { 0x40 } else { 0 };
    let tick = || rec(Op::Clock, |r| r.b = 20 << 2);
    let recs = vec![
        solicit_endpoint6(),
        rec(Op::Consumer6, |r| {
            // From port 40003: under seed 0 its flow's target is the other one than the
            // UDP flow's, so that both targets are reached (and solicited).
            r.b = 3 << 5;
            r.c = 0x02;
            r.seq = 1000;
            r.win = 64240;
            r.ip = 0x20;
        }),
        // The appliance solicits the target (the newest output): it answers, and the
        // SYN it held goes.
        answer(0, 0, other),
        tick(),
        answer(TCP_TO_PROVIDER, 0, other),
        answer(TCP_TO_CONSUMER, 0, 0),
        answer(TCP_TO_PROVIDER, 1, other),
        answer(TCP_TO_CONSUMER, 1, 0),
        // UDP to 9443 in two fragments, then whole, and the target's answer.
        rec(Op::Consumer6, |r| {
            r.b = 1 | (3 << 2);
            r.len = 40;
            r.damage = 0xc8;
            r.seq = 0x0506_0708;
            r.ip = 0x20;
        }),
        rec(Op::Consumer6, |r| {
            r.b = 1 | (3 << 2);
            r.len = 20;
            r.ip = 0x20;
        }),
        // Its target is solicited in turn (the datagrams wait), then answers.
        answer(0, 0, other),
        tick(),
        answer(UDP_TO_PROVIDER, 0, other),
        // One with hop-by-hop options, which NAT66 keeps.
        rec(Op::Consumer6, |r| {
            r.b = 1 | (3 << 2);
            r.len = 20;
            r.ip = 0x20 | (1 << 3);
        }),
        // A router on the provider's side: the consumer's datagram is too big (MTU
        // 1280); one on the consumer's: the target's reply cannot be delivered.
        rec(Op::IcmpError, |r| {
            r.a = other;
            r.b = UDP_TO_PROVIDER;
            r.c = 2;
            r.win = 1280;
        }),
        rec(Op::IcmpError, |r| {
            r.b = UDP_TO_CONSUMER;
            r.c = 2 | (1 << 2) | (3 << 4);
        }),
        // fd00:b1::50, no target, to the SNAT address.
        rec(Op::Provider, |r| {
            r.a = 4;
            r.b = 1;
            r.l2 = 3;
        }),
        // Both IPv6 targets deregistered: once they have drained (21 s on), the
        // connection is reset on both sides.
        rec(Op::Control, |r| r.b = 2 | 0x10),
        rec(Op::Control, |r| r.b = 3 | 0x10),
        rec(Op::Clock, |r| r.b = (5 << 2) | 3),
        rec(Op::Poll, |r| r.b = 7),
    ];
    script([u8::from(workers == 2), 0], &recs)
}
