//! The scenario harness reaches the deep paths of the packet path from a short script,
//! random inputs never break an invariant, and seeds made from a capture work.

use proptest::prelude::*;

use super::seeds::{self, script};
use super::*;
use crate::graph::counters::DropReason;

fn assert_deep(w: &mut World) {
    let c = w.counters();
    let s = w.stats.clone();
    let show = || {
        format!(
            "{:?}\n{:?}\n{:?}",
            c.named(),
            s,
            DropReason::ALL
                .iter()
                .filter(|r| c.dropped(**r) > 0)
                .map(|r| (r.label(), c.dropped(*r)))
                .collect::<Vec<_>>()
        )
    };
    assert!(c.new_flows >= 3, "new flows: {}", show());
    assert!(s.forward_tx >= 3, "forward translations: {}", show());
    assert!(s.reverse_tx >= 2, "reverse translations: {}", show());
    assert!(c.arp_requests >= 3, "ARP requests: {}", show());
    assert!(c.arp_replies >= 1, "ARP replies: {}", show());
    assert!(s.held_released >= 3, "held packets released: {}", show());
    assert!(c.icmp_errors_translated >= 2, "ICMP errors: {}", show());
    assert!(
        s.icmp_to_consumer >= 1 && s.icmp_to_provider >= 1,
        "{}",
        show()
    );
    assert!(c.echo_replies >= 1, "echo: {}", show());
    assert!(c.expired_flows >= 2, "expiry: {}", show());
    assert!(
        c.dropped(DropReason::FlowEnded) >= 1,
        "revalidation: {}",
        show()
    );
    assert!(
        s.snapshots >= 1 && s.listings >= 1 && s.reports >= 1,
        "{}",
        show()
    );
    assert!(
        (c.dropped(DropReason::FlowTableFull) + c.evicted_half_open) >= 1 && s.bursts >= 1,
        "{}",
        show()
    );
    assert!(
        c.tx_packets >= s.frames_out && c.rx_packets >= s.frames_in,
        "{}",
        show()
    );
}

/// A scenario's counters, stats and drops, for a failed assertion's message.
fn summary(workers: u8, w: &World, c: &Counters) -> String {
    format!(
        "{workers} workers: {:?}\n{:?}\n{:?}",
        c.named(),
        w.stats,
        DropReason::ALL
            .iter()
            .filter(|r| c.dropped(**r) > 0)
            .map(|r| (r.label(), c.dropped(*r)))
            .collect::<Vec<_>>()
    )
}

#[test]
fn a_short_script_reaches_the_deep_paths() {
    assert_deep(&mut run(&seeds::scripted(1)));
}

#[test]
fn an_ipv6_script_reaches_nat64_fragments_and_neighbour_discovery() {
    for workers in [1, 2] {
        let mut w = run(&seeds::scripted6(workers));
        let c = w.counters();
        let show = summary(workers, &w, &c);
        assert!(c.new_flows >= 3, "{show}");
        assert!(w.stats.forward_tx >= 5, "{show}");
        assert!(w.stats.reverse_tx >= 3, "{show}");
        assert!(c.fragments >= 2, "{show}");
        assert!(c.echo_replies >= 1, "{show}");
        assert!(c.nd_advertisements >= 1, "{show}");
        assert!(c.nd_solicitations >= 1, "{show}");
        assert!(c.nd_learned >= 2, "{show}");
        assert!(w.stats.held_released >= 1, "{show}");
        assert_eq!(c.dropped(DropReason::NeighbourUnresolved), 0, "{show}");
        assert!(c.rst_sent >= 2, "{show}");
    }
}

#[test]
fn a_nat66_script_reaches_ipv6_targets_and_back() {
    for workers in [1, 2] {
        let mut w = run(&seeds::scripted66(workers));
        let c = w.counters();
        let show = summary(workers, &w, &c);
        assert!(c.new_flows >= 2, "{show}");
        // (What waited for a target's advertisement left in a poll, not counted here.)
        assert!(w.stats.forward_tx >= 3, "{show}");
        assert!(w.stats.reverse_tx >= 4, "{show}");
        assert!(c.fragments >= 2, "{show}");
        assert!(c.icmp_errors_translated >= 2, "{show}");
        // The consumer and both targets.
        assert!(c.nd_learned >= 3, "{show}");
        assert!(c.rst_sent >= 2, "{show}");
        assert_eq!(c.dropped(DropReason::NeighbourUnresolved), 0, "{show}");
        assert_eq!(c.dropped(DropReason::Ipv6TargetsOnly), 0, "{show}");
    }
}

#[test]
fn with_two_workers_replies_are_handed_to_the_flow_owner() {
    let mut w = run(&seeds::scripted(2));
    assert_deep(&mut w);
    assert!(w.stats.handoffs >= 1, "{:?}", w.stats);
    let c = w.counters();
    assert_eq!(c.handoff_in, c.handoff_out);
}

#[test]
fn the_configuration_and_every_setup_build() {
    Config::from_toml_str(CONFIG)
        .and_then(|c| c.validate().map(|()| c))
        .expect("the scenario configuration is valid");
    for s in 0..=255u8 {
        for t in [0u8, 0x3f] {
            let w = World::new(Setup::decode([s, t]));
            assert_eq!(w.pipes().len(), usize::from(1 + (s & 1)));
        }
    }
}

#[test]
fn records_round_trip_and_lengths_encode_exactly() {
    let r = Rec {
        op: 1,
        a: 2,
        b: 3,
        c: 4,
        seq: 0x0506_0708,
        ack: 0x090a_0b0c,
        len: 0x0d0e,
        win: 0x0f10,
        ip: 17,
        l2: 18,
        damage: 19,
        x: 20,
        y: 21,
        z: 22,
        p2: 0x1718,
    };
    assert_eq!(Rec::decode(&r.encode()), r);
    for n in (0..2048).chain(BIG_LENGTHS) {
        assert_eq!(encode_len(n).map(payload_len), Some(n));
    }
    assert_eq!(encode_len(3000), None);
}

/// A raw frame event carries the frame in the records after it.
#[test]
fn a_raw_frame_is_fed_as_it_is() {
    let syn = packets::tcp(
        &Tcp {
            sport: 40000,
            dport: 80,
            seq: 1,
            flags: 0x02,
            window: 100,
            ..Tcp::default()
        },
        CONSUMER_NET | 10,
        CONSUMER_NET | 100,
    );
    let pkt = packets::ipv4(&Ip::new(CONSUMER_NET | 10, CONSUMER_NET | 100, 6), &syn);
    let eth = Eth {
        dst: [2, 9, 9, 9, 9, 9],
        src: [2, 1, 1, 1, 1, 1],
        tags: Vec::new(),
    };
    let frame = packets::frame(&eth, 0x0800, &pkt);
    let mut head = Rec::new(Op::Raw);
    head.a = 2;
    [head.b, head.c] = u16::try_from(frame.len()).unwrap().to_be_bytes();
    let mut input = script([0x40, 0], &[head]);
    input.extend_from_slice(&frame);
    input.resize(2 + RECORD * (1 + frame.len().div_ceil(RECORD)), 0);
    let mut w = run(&input);
    assert_eq!(w.counters().new_flows, 1);
    assert_eq!(w.stats.forward_tx, 1);
}

fn frame_from(mac: [u8; 6], dst_mac: [u8; 6], ip: Ip, l4: &[u8]) -> Vec<u8> {
    let eth = Eth {
        dst: dst_mac,
        src: mac,
        tags: Vec::new(),
    };
    packets::frame(&eth, 0x0800, &packets::ipv4(&ip, l4))
}

/// A capture of one connection by another appliance (other MACs, another target and
/// SNAT port) still makes a seed that opens and answers a flow in the fuzz world.
#[test]
fn seeds_from_a_capture_open_and_answer_flows() {
    let appliance = [2, 0x77, 0, 0, 0, 1];
    let client_mac = [2, 0x55, 0, 0, 0, 10];
    let target_mac = [2, 0x66, 0, 0, 0, 12];
    let (client, ep) = (CONSUMER_NET | 10, CONSUMER_NET | 100);
    let (target, snat) = (PROVIDER_NET | 12, PROVIDER_NET | 100);
    let tcp = |sport, dport, seq, ack, flags, len| Tcp {
        sport,
        dport,
        seq,
        ack,
        flags,
        window: 64000,
        options: Vec::new(),
        payload_len: len,
    };
    let c = |t: Tcp| {
        frame_from(
            client_mac,
            appliance,
            Ip::new(client, ep, 6),
            &packets::tcp(&t, client, ep),
        )
    };
    let p = |t: Tcp| {
        frame_from(
            target_mac,
            appliance,
            Ip::new(target, snat, 6),
            &packets::tcp(&t, target, snat),
        )
    };
    // The appliance's own frames (left out of the seed).
    let from_appliance = frame_from(
        appliance,
        target_mac,
        Ip::new(snat, target, 6),
        &packets::tcp(&tcp(5555, 8080, 100, 0, 0x02, 0), snat, target),
    );
    let consumer: Vec<(u64, Vec<u8>)> = vec![
        (1_000, c(tcp(45000, 80, 100, 0, 0x02, 0))),
        (3_000, c(tcp(45000, 80, 101, 901, 0x10, 0))),
        (4_000, c(tcp(45000, 80, 101, 901, 0x18, 75))),
    ];
    let provider: Vec<(u64, Vec<u8>)> = vec![
        (1_500, from_appliance),
        (2_000, p(tcp(8080, 5555, 900, 101, 0x12, 0))),
        (5_000, p(tcp(8080, 5555, 901, 176, 0x18, 200))),
    ];
    let mut frames = seeds::towards_appliance(&consumer, CONSUMER_PORT);
    frames.extend(seeds::towards_appliance(&provider, PROVIDER_PORT));
    assert_eq!(frames.len(), 5, "the appliance's frame is left out");
    let inputs = seeds::structured_inputs(&frames, 64);
    assert_eq!(inputs.len(), 1);
    let mut w = run(&inputs[0]);
    let c = w.counters();
    assert_eq!(c.new_flows, 1, "{:?} {:?}", c.named(), w.stats);
    assert!(
        w.stats.reverse_tx >= 1 && w.stats.forward_tx >= 2,
        "{:?}",
        w.stats
    );
    assert_eq!(
        c.rst_sent, 0,
        "every segment matched the flow: {:?}",
        c.drops
    );

    let raw = seeds::raw_inputs(&frames);
    assert_eq!(raw.len(), 5);
    assert_eq!(raw[0][0], 0);
    assert_eq!(
        &raw[0][1..7],
        &MACS[0],
        "addressed to the fuzz world's appliance"
    );
}

#[test]
fn pcap_files_are_read() {
    let frame = vec![0xabu8; 42];
    let mut pcap = Vec::new();
    for w in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1] {
        if w == 0x0004_0002 {
            pcap.extend_from_slice(&2u16.to_le_bytes());
            pcap.extend_from_slice(&4u16.to_le_bytes());
        } else {
            pcap.extend_from_slice(&w.to_le_bytes());
        }
    }
    for (sec, us) in [(10u32, 5u32), (11, 7)] {
        for w in [sec, us, 42, 42] {
            pcap.extend_from_slice(&w.to_le_bytes());
        }
        pcap.extend_from_slice(&frame);
    }
    let got = seeds::read_pcap(&pcap).unwrap();
    assert_eq!(got, vec![(10_000_005, frame.clone()), (11_000_007, frame)]);
    assert!(seeds::read_pcap(&pcap[..20]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes are a scenario, and no scenario breaks an invariant.
    #[test]
    fn random_scenarios_keep_the_invariants(
        setup in any::<[u8; 2]>(),
        body in proptest::collection::vec(any::<u8>(), 0..RECORD * 48),
    ) {
        let mut input = setup.to_vec();
        input.extend_from_slice(&body);
        run(&input);
    }

    /// Scripts made of mostly whole, mostly answering records (the fuzzer's seeds' kind).
    #[test]
    fn answering_scenarios_keep_the_invariants(
        setup in any::<[u8; 2]>(),
        recs in proptest::collection::vec(
            (0u8..16, any::<u8>(), any::<u8>(), any::<u8>(), any::<u32>(), any::<u16>(), any::<u8>()),
            1..64,
        ),
    ) {
        let recs: Vec<Rec> = recs
            .into_iter()
            .map(|(op, a, b, c, seq, len, l2)| Rec {
                op, a, b, c, seq, ack: seq.rotate_left(7), len, l2,
                win: 65000,
                ..Rec::default()
            })
            .collect();
        run(&script(setup, &recs));
    }
}
