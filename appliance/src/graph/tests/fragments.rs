//! Fragments through the graph (virtual reassembly): translated one by one, put back
//! together here to check that the target and the consumer could rebuild each datagram.

use super::*;
use crate::tables::fragments::DatagramKey;

const TARGETS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 2, 0, 11), Ipv4Addr::new(10, 2, 0, 12)];

/// The IPv4 packet of an Ethernet frame cut into fragments of at most `chunk` payload
/// bytes (a multiple of 8), identification `id`, in order.
pub(super) fn fragments_of(frame: &[u8], chunk: usize, id: u16) -> Vec<Vec<u8>> {
    let (l2, l3) = frame.split_at(14);
    let (header, payload) = l3.split_at(20);
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut ip = header.to_vec();
            ip.extend_from_slice(piece);
            {
                let mut p = Ipv4Packet::new_unchecked(&mut ip[..]);
                p.set_total_len(u16::try_from(20 + piece.len()).unwrap());
                p.set_ident(id);
                p.set_dont_frag(false);
                p.set_more_frags(i != last);
                p.set_frag_offset(u16::try_from(i * chunk).unwrap());
                p.fill_checksum();
            }
            let mut f = l2.to_vec();
            f.extend_from_slice(&ip);
            f
        })
        .collect()
}

/// Rebuilds the datagram of translated fragments (any order) as its receiver would:
/// (source, destination, the L4 segment). Every fragment's header checksum must be right.
pub(super) fn reassemble(frames: &[Vec<u8>]) -> (Ipv4Addr, Ipv4Addr, Vec<u8>) {
    let mut parts: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut addrs = None;
    for f in frames {
        let ip = ip_of(f);
        assert!(
            ip.verify_checksum(),
            "header checksum of a translated fragment"
        );
        let a = (ip.src_addr(), ip.dst_addr());
        assert!(addrs.is_none_or(|b| b == a), "fragments of one datagram");
        addrs = Some(a);
        parts.push((usize::from(ip.frag_offset()), ip.payload().to_vec()));
    }
    parts.sort();
    let mut seg = Vec::new();
    for (at, p) in parts {
        assert_eq!(at, seg.len(), "no hole, no overlap");
        seg.extend_from_slice(&p);
    }
    let (src, dst) = addrs.unwrap();
    (src, dst, seg)
}

/// The UDP datagram in `seg` is whole and its checksum right between `src` and `dst`.
pub(super) fn check_udp(src: Ipv4Addr, dst: Ipv4Addr, seg: &[u8]) -> UdpPacket<&[u8]> {
    let udp = UdpPacket::new_checked(seg).unwrap();
    assert_eq!(usize::from(udp.len()), seg.len());
    assert_ne!(udp.checksum(), 0);
    assert!(
        udp.verify_checksum(src, dst),
        "UDP checksum over the whole datagram"
    );
    udp
}

fn big_request(sport: u16) -> Vec<u8> {
    udp_sized(
        CLIENT, sport, ENDPOINT, 9000, 4000, false, MAC_C, CLIENT_MAC,
    )
}

pub(super) fn burst(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    port: u16,
    frames: &[Vec<u8>],
    now_ms: u64,
) -> Vec<Verdict<VecFrame>> {
    let mut v = Vec::new();
    let mut b: Vec<VecFrame> = frames.iter().map(|f| VecFrame::new(f)).collect();
    p.process_burst(snap, port, &mut b, now_ms, &mut |x| v.push(x));
    v
}

pub(super) fn sent(verdicts: Vec<Verdict<VecFrame>>) -> Vec<Vec<u8>> {
    verdicts
        .into_iter()
        .filter_map(|v| match v {
            Verdict::Tx(_, f) => Some(f.bytes().to_vec()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_fragmented_datagram_is_translated_both_ways_and_arrives_whole() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let frags = fragments_of(&big_request(5000), 1480, 77);
    assert_eq!(frags.len(), 3);
    let out = sent(burst(&mut p, &snap, CONSUMER_PORT, &frags, 1));
    assert_eq!(out.len(), 3, "every fragment forwarded");
    let (src, target, seg) = reassemble(&out);
    assert_eq!(src, SNAT);
    assert!(TARGETS.contains(&target));
    let udp = check_udp(src, target, &seg);
    assert_eq!(udp.dst_port(), 9000);
    let snat_port = udp.src_port();
    assert_eq!(udp.payload(), &[0x5a; 4000][..]);
    assert_eq!(
        p.counters().new_flows,
        1,
        "one flow, made by the first fragment"
    );
    assert_eq!(p.counters().fragments, 3);

    // The target's fragmented reply, back to the client through the same flow.
    let reply = udp_sized(
        target, 9000, SNAT, snat_port, 3000, false, MAC_P, TARGET_MAC,
    );
    let back = sent(burst(
        &mut p,
        &snap,
        PROVIDER_PORT,
        &fragments_of(&reply, 1480, 9),
        2,
    ));
    assert_eq!(back.len(), 3);
    let (src, dst, seg) = reassemble(&back);
    assert_eq!((src, dst), (ENDPOINT, CLIENT));
    let udp = check_udp(src, dst, &seg);
    assert_eq!((udp.src_port(), udp.dst_port()), (9000, 5000));
    assert_eq!(p.counters().new_flows, 1);
    assert_eq!(p.counters().total_drops(), 0, "{:?}", p.counters());
}

/// A burst that brings a datagram last fragment first: the later ones wait in the same
/// pass of the graph that brings the first, and still leave right behind it (they used
/// to be put aside after the first had looked for them, and timed out).
#[test]
fn fragments_before_their_first_in_the_same_burst_leave_with_it() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let frags = fragments_of(&big_request(5003), 1480, 80);
    let reversed: Vec<Vec<u8>> = frags.iter().rev().cloned().collect();
    let out = sent(burst(&mut p, &snap, CONSUMER_PORT, &reversed, 1));
    assert_eq!(out.len(), 3, "{:?}", p.counters());
    let (src, dst, seg) = reassemble(&out);
    check_udp(src, dst, &seg);
    assert_eq!(p.fragments_waiting(), 0);
    assert_eq!(p.counters().fragments_held, 2);
}

#[test]
fn fragments_before_their_first_wait_for_it_and_time_out_without_it() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let frags = fragments_of(&big_request(5001), 1480, 78);
    // The last two first: held, nothing sent.
    let v = burst(
        &mut p,
        &snap,
        CONSUMER_PORT,
        &[frags[2].clone(), frags[1].clone()],
        1,
    );
    assert!(v.iter().all(|v| matches!(v, Verdict::Done)));
    assert_eq!(p.fragments_waiting(), 2);
    assert_eq!(p.counters().fragments_held, 2);
    // The first brings them out behind it, in the order they came.
    let out = sent(burst(&mut p, &snap, CONSUMER_PORT, &frags[..1], 2));
    assert_eq!(out.len(), 3);
    let offsets: Vec<u16> = out.iter().map(|f| ip_of(f).frag_offset()).collect();
    assert_eq!(offsets, vec![0, 2960, 1480]);
    let (src, dst, seg) = reassemble(&out);
    check_udp(src, dst, &seg);
    assert_eq!(p.fragments_waiting(), 0);

    // A fragment whose first never comes is dropped once the timeout (1 s) passed.
    let lone = fragments_of(&big_request(5002), 1480, 79);
    burst(&mut p, &snap, CONSUMER_PORT, &lone[1..2], 10);
    p.poll(&snap, 500);
    assert_eq!(p.fragments_waiting(), 1);
    p.poll(&snap, 1010);
    assert_eq!(p.fragments_waiting(), 0);
    assert_eq!(p.counters().dropped(DropReason::FragmentTimeout), 1);
}

#[test]
fn a_full_queue_of_early_fragments_drops_more_counted() {
    let config = Config::embedded_default();
    let snap = snapshot(&config);
    let mut settings = crate::daemon::pipeline_settings(&config, 1);
    settings.flow_capacity = 1024;
    settings.fragments_held = 2;
    let p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    let mut p = with_neighbours(p, &snap);
    let early: Vec<Vec<u8>> = (0..3)
        .map(|i| fragments_of(&big_request(5100 + i), 1480, 100 + i)[1].clone())
        .collect();
    burst(&mut p, &snap, CONSUMER_PORT, &early, 1);
    assert_eq!(p.fragments_waiting(), 2);
    assert_eq!(p.counters().dropped(DropReason::FragmentHeldFull), 1);
}

#[test]
fn overlapping_oversized_and_tiny_fragments_are_refused() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let frags = fragments_of(&big_request(5003), 1480, 80);
    assert_eq!(
        sent(burst(&mut p, &snap, CONSUMER_PORT, &frags[..1], 1)).len(),
        1
    );
    // A second fragment moved 8 bytes back: it would rewrite the UDP header's tail
    // (teardrop). Refused, and the datagram with it.
    let mut overlap = frags[1].clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut overlap[14..]);
        ip.set_frag_offset(1472);
        ip.fill_checksum();
    }
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &[overlap], 2)).is_empty());
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &frags[2..], 3)).is_empty());
    assert_eq!(p.counters().dropped(DropReason::FragmentOverlap), 2);

    // Ping of death: a last fragment ending past 65,535 bytes.
    let mut death = fragments_of(&big_request(5004), 1480, 81)[2].clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut death[14..]);
        ip.set_frag_offset(65_000);
        ip.fill_checksum();
    }
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &[death], 4)).is_empty());
    assert_eq!(p.counters().dropped(DropReason::FragmentTooBig), 1);

    // A first fragment too short for the TCP header (RFC 1858).
    let syn = tcp(CLIENT, 5005, ENDPOINT, 80, syn(), 1, 0, MAC_C, CLIENT_MAC);
    let mut tiny = syn[..14 + 20 + 8].to_vec();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut tiny[14..]);
        ip.set_total_len(28);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &[tiny], 5)).is_empty());
    assert_eq!(p.counters().dropped(DropReason::FragmentTooSmall), 1);
    assert_eq!(p.counters().new_flows, 1);
    assert_eq!(p.counters().icmp_errors_sent + p.counters().rst_sent, 0);
}

#[test]
fn later_fragments_create_no_flow_and_icmp_fragments_are_not_translated() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    // The first fragment refused (no listener on 9001): the others find no flow, and
    // nothing is answered about them.
    let other_port = udp_sized(CLIENT, 5006, ENDPOINT, 9001, 4000, false, MAC_C, CLIENT_MAC);
    let frags = fragments_of(&other_port, 1480, 82);
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &frags, 1)).is_empty());
    assert_eq!(p.counters().dropped(DropReason::NoListener), 1);
    assert_eq!(p.counters().dropped(DropReason::NoFlow), 2);
    // TTL 1 on a later fragment: dropped without an ICMP error (it quotes no ports).
    let frags = fragments_of(&big_request(5007), 1480, 83);
    sent(burst(&mut p, &snap, CONSUMER_PORT, &frags[..1], 2));
    let mut ttl1 = frags[1].clone();
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut ttl1[14..]);
        ip.set_ttl(1);
        ip.fill_checksum();
    }
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &[ttl1], 3)).is_empty());
    assert_eq!(p.counters().dropped(DropReason::TtlExceeded), 1);
    assert_eq!(p.counters().icmp_errors_sent, 0);
    // A large ping: ICMP fragments are not translated.
    let mut ping = ping_frame(CLIENT, ENDPOINT);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut ping[14..]);
        ip.set_more_frags(true);
        ip.fill_checksum();
    }
    assert!(sent(burst(&mut p, &snap, CONSUMER_PORT, &[ping], 4)).is_empty());
    assert_eq!(p.counters().dropped(DropReason::Fragment), 1);
    assert_eq!(p.counters().echo_replies, 0);
}

/// Runs `frames` received by worker `at` through a pair of workers the way the daemon
/// does (handoffs delivered, released fragments run): the frames sent, in order.
fn through_workers(
    ws: &mut [Pipeline<VecFrame>],
    snap: &Snapshot,
    at: usize,
    port: u16,
    frames: &[Vec<u8>],
    now_ms: u64,
) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut handoffs = 0;
    let mut queue: Vec<(usize, Verdict<VecFrame>)> = burst(&mut ws[at], snap, port, frames, now_ms)
        .into_iter()
        .map(|v| (at, v))
        .collect();
    let mut i = 0;
    while i < queue.len() {
        let (_, v) = std::mem::replace(&mut queue[i], (0, Verdict::Done));
        i += 1;
        match v {
            Verdict::Tx(_, f) => out.push(f.bytes().to_vec()),
            Verdict::Handoff(w, f) => {
                handoffs += 1;
                let w = usize::from(w);
                let v = ws[w].process_handed_off(snap, port, f, now_ms);
                queue.push((w, v));
                let mut more = Vec::new();
                ws[w].process_released(snap, now_ms, &mut |v| more.push(v));
                queue.extend(more.into_iter().map(|v| (w, v)));
            }
            Verdict::Done => {}
        }
    }
    (out, handoffs)
}

#[test]
fn fragments_spread_over_workers_meet_on_one_and_advertisements_reach_the_ports_owner() {
    let config = Config::embedded_default();
    let (p0, snap) = pipeline(&config, 2, 0);
    let (p1, _) = pipeline(&config, 2, 1);
    let mut ws = [p0, p1];
    let key = DatagramKey {
        src: u32::from(CLIENT),
        dst: u32::from(ENDPOINT),
        id: 0,
        att: 0,
        proto: 17,
    };
    let owner = usize::from(ws[0].datagram_owner(&key));
    assert_eq!(
        owner,
        usize::from(ws[1].datagram_owner(&key)),
        "workers agree"
    );
    let other = 1 - owner;
    let frags = fragments_of(&big_request(5008), 1480, 84);
    // RSS spread them: the first and the last to the worker that does not own the
    // datagram, the middle one to the owner (before the first).
    let (a, h1) = through_workers(&mut ws, &snap, other, CONSUMER_PORT, &frags[2..], 1);
    let (b, _) = through_workers(&mut ws, &snap, owner, CONSUMER_PORT, &frags[1..2], 1);
    let (c, h2) = through_workers(&mut ws, &snap, other, CONSUMER_PORT, &frags[..1], 1);
    assert!(a.is_empty() && b.is_empty(), "held until the first came");
    assert_eq!((h1, h2), (1, 1), "each went to the owner");
    assert_eq!(c.len(), 3);
    let (src, target, seg) = reassemble(&c);
    let snat_port = check_udp(src, target, &seg).src_port();
    assert_eq!(ws[owner].counters().new_flows, 1);
    assert_eq!(ws[other].counters().new_flows, 0);

    // The reply's fragments: their datagram's owner (for the target and SNAT address)
    // sends them on to the SNAT port's owner with the ports; some arrive at either.
    let reply = udp_sized(
        target, 9000, SNAT, snat_port, 3000, false, MAC_P, TARGET_MAC,
    );
    let rfrags = fragments_of(&reply, 1480, 10);
    let (mut back, _) = through_workers(&mut ws, &snap, 0, PROVIDER_PORT, &rfrags[1..], 2);
    let (first, _) = through_workers(&mut ws, &snap, 1, PROVIDER_PORT, &rfrags[..1], 2);
    back.extend(first);
    assert_eq!(
        back.len(),
        3,
        "{:?} {:?}",
        ws[0].counters(),
        ws[1].counters()
    );
    let (src, dst, seg) = reassemble(&back);
    assert_eq!((src, dst), (ENDPOINT, CLIENT));
    let udp = check_udp(src, dst, &seg);
    assert_eq!(udp.dst_port(), 5008);
    let drops = ws[0].counters().total_drops() + ws[1].counters().total_drops();
    assert_eq!(drops, 0);
}
