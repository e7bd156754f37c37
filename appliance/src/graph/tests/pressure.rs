//! The flow table and the SNAT ports under pressure: per-consumer limits, eviction of
//! half-open flows, and the quarantine of closed SNAT ports, through the whole packet path.

use super::*;
use crate::tables::limits::FlowLimits;

/// A pipeline on the demo topology with a table of `capacity` flows, `limits`, and `workers`
/// workers (this one is worker 0).
fn limited(
    config: &Config,
    capacity: usize,
    limits: FlowLimits,
    workers: u16,
) -> (Pipeline<VecFrame>, Snapshot) {
    let snap = snapshot(config);
    let mut settings = crate::daemon::pipeline_settings(config, workers);
    settings.flow_capacity = capacity;
    settings.limits = limits;
    settings.seed = Some(7);
    let mut p = with_neighbours(
        Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap),
        &snap,
    );
    // Every client of 10.1.0.0/24 known, so replies to them leave at once.
    for i in 1..255 {
        let news = NeighbourNews {
            attachment: 0,
            ip: client(i).into(),
            mac: CLIENT_MAC,
        };
        p.learn_remote(&snap, news, 0);
    }
    (p, snap)
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i)
}

/// A SYN from `src:sport`; Some(SNAT port) when it was forwarded.
fn open(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    src: Ipv4Addr,
    sport: u16,
    now: u64,
) -> Option<u16> {
    let f = tcp(src, sport, ENDPOINT, 80, syn(), 1000, 0, MAC_C, CLIENT_MAC);
    match p.process(snap, CONSUMER_PORT, VecFrame::new(&f), now) {
        Verdict::Tx(_, out) => Some(
            TcpPacket::new_checked(ip_of(out.bytes()).payload())
                .unwrap()
                .src_port(),
        ),
        _ => None,
    }
}

/// The rest of the handshake of the flow `open` made (SYN+ACK from its target, ACK).
fn complete(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    src: Ipv4Addr,
    sport: u16,
    snat: u16,
    now: u64,
) {
    let target = target_of(p, src, sport);
    let r = tcp(
        target,
        8080,
        SNAT,
        snat,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        5000,
        1001,
        MAC_P,
        TARGET_MAC,
    );
    tx(p.process(snap, PROVIDER_PORT, VecFrame::new(&r), now));
    let a = tcp(
        src,
        sport,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        1001,
        5001,
        MAC_C,
        CLIENT_MAC,
    );
    tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&a), now));
}

fn fwd(src: Ipv4Addr, sport: u16, proto: u8, dport: u16) -> FlowKey {
    FlowKey {
        src_ip: src.into(),
        dst_ip: ENDPOINT.into(),
        src_port: sport,
        dst_port: dport,
        vpc: 0,
        proto,
    }
}

fn target_of(p: &Pipeline<VecFrame>, src: Ipv4Addr, sport: u16) -> Ipv4Addr {
    let id = p
        .flows()
        .lookup_forward(&fwd(src, sport, PROTO_TCP, 80))
        .expect("flow");
    p.flows().get(id).unwrap().rev.src_ip.into()
}

fn endpoint_drops(p: &Pipeline<VecFrame>, reason: DropReason) -> u64 {
    p.usage.all().map(|u| u.drops[reason as usize]).sum()
}

/// A UDP spray from one address, a fresh port per datagram: it stops at the client's
/// limit, counted and attributed to the endpoint; another client is unaffected.
#[test]
fn a_spray_from_one_client_stops_at_its_flow_limit() {
    let config = Config::embedded_default();
    let limits = FlowLimits {
        flows_per_client: 4,
        ..FlowLimits::default()
    };
    let (mut p, snap) = limited(&config, 64, limits, 1);
    let sprayer = client(30);
    let forwarded = (0..10u16)
        .filter(|&i| {
            let f = udp(sprayer, 2000 + i, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
            matches!(
                p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 0),
                Verdict::Tx(..)
            )
        })
        .count();
    assert_eq!(forwarded, 4);
    assert_eq!(p.counters().dropped(DropReason::ClientFlowLimit), 6);
    assert_eq!(endpoint_drops(&p, DropReason::ClientFlowLimit), 6);
    // Its existing flows keep working, another client opens flows.
    let again = udp(sprayer, 2000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&again), 1));
    assert!(open(&mut p, &snap, client(20), 40000, 1).is_some());
    let other = udp(client(20), 2000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&other), 1));
    // When its flows end, the sprayer may open new ones.
    for _ in 0..10 {
        p.poll(&snap, 10_000_000);
    }
    assert_eq!(p.flows().len(), 0);
    let later = udp(sprayer, 3000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&later), 10_000_001));
}

/// Half-open flows count against a client's half-open limit until their handshake
/// completes (on the fast path, as here), then no longer.
#[test]
fn half_open_limit_frees_up_when_the_handshake_completes() {
    let config = Config::embedded_default();
    let limits = FlowLimits {
        half_open_per_client: 2,
        ..FlowLimits::default()
    };
    let (mut p, snap) = limited(&config, 64, limits, 1);
    let c = client(10);
    let a = open(&mut p, &snap, c, 40000, 0).expect("first");
    assert!(open(&mut p, &snap, c, 40001, 0).is_some());
    assert_eq!(open(&mut p, &snap, c, 40002, 0), None);
    assert_eq!(p.counters().dropped(DropReason::ClientHalfOpenLimit), 1);
    assert_eq!(endpoint_drops(&p, DropReason::ClientHalfOpenLimit), 1);
    // UDP is not half-open: still admitted.
    let u = udp(c, 5000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 0));
    complete(&mut p, &snap, c, 40000, a, 1);
    assert_eq!(p.load.client(0, c.into()).half_open, 1);
    assert!(
        open(&mut p, &snap, c, 40002, 2).is_some(),
        "one slot free again"
    );
    assert_eq!(open(&mut p, &snap, c, 40003, 2), None);
    // The same through the staged burst path.
    let (mut q, snap) = limited(&config, 64, limits, 1);
    let syn_of = |port| tcp(c, port, ENDPOINT, 80, syn(), 1000, 0, MAC_C, CLIENT_MAC);
    let frames: Vec<Vec<u8>> = (0..3).map(syn_of).collect();
    let verdicts = run_bursts(&mut q, &snap, CONSUMER_PORT, &frames, &[3], 0);
    assert_eq!(verdicts.iter().filter(|v| v.starts_with("tx")).count(), 2);
    assert_eq!(q.counters().dropped(DropReason::ClientHalfOpenLimit), 1);
}

/// A table full of half-open flows (a SYN flood from spoofed sources): a new connection
/// from another client evicts the oldest of them and goes through; established flows are
/// never evicted. Before, it was refused (`flow_table_full`) until the flood's flows timed
/// out.
#[test]
fn a_full_table_of_half_open_flows_still_takes_new_connections() {
    let config = Config::embedded_default();
    let (mut p, snap) = limited(&config, 8, FlowLimits::default(), 1);
    let c = client(10);
    let a = open(&mut p, &snap, c, 40000, 0).unwrap();
    complete(&mut p, &snap, c, 40000, a, 0);
    for i in 0..7u32 {
        assert!(open(&mut p, &snap, client(101 + i), 1024, 1 + u64::from(i)).is_some());
    }
    assert_eq!(p.flows().len(), 8);
    assert!(p.flows().is_full());
    for i in 0..20u16 {
        assert!(
            open(&mut p, &snap, client(20), 41000 + i, 10).is_some(),
            "new connection {i}"
        );
    }
    assert_eq!(p.counters().dropped(DropReason::FlowTableFull), 0);
    assert_eq!(p.counters().evicted_half_open, 20);
    assert!(
        p.flows()
            .lookup_forward(&fwd(client(101), 1024, PROTO_TCP, 80))
            .is_none(),
        "the oldest flood flow went first"
    );
    // The established connection still works both ways.
    let d = tcp(
        c,
        40000,
        ENDPOINT,
        80,
        WireTcpFlags::ACK,
        1001,
        5001,
        MAC_C,
        CLIENT_MAC,
    );
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&d), 11));
    let target = target_of(&p, c, 40000);
    let r = tcp(
        target,
        8080,
        SNAT,
        a,
        WireTcpFlags::ACK,
        5001,
        1001,
        MAC_P,
        TARGET_MAC,
    );
    tx(p.process(&snap, PROVIDER_PORT, VecFrame::new(&r), 11));
    // Gauges follow the evictions: the flood's clients hold nothing any more.
    assert_eq!(
        p.load.client(0, client(101).into()),
        crate::tables::limits::Load::default()
    );
    // A table of established flows only has nothing to evict: refused, counted.
    let (mut q, snap) = limited(&config, 2, FlowLimits::default(), 1);
    for port in [40000, 40001] {
        let s = open(&mut q, &snap, c, port, 0).unwrap();
        complete(&mut q, &snap, c, port, s, 0);
    }
    assert_eq!(open(&mut q, &snap, client(20), 40000, 1), None);
    assert_eq!(q.counters().dropped(DropReason::FlowTableFull), 1);
}

/// An endpoint at its half-open limit: a new connection evicts the endpoint's oldest
/// half-open flow; at its flow limit with nothing half-open, new flows are refused.
#[test]
fn endpoint_limits_evict_its_own_half_open_flows_or_refuse() {
    let config = Config::embedded_default();
    let limits = FlowLimits {
        half_open_per_endpoint: 3,
        flows_per_endpoint: 5,
        ..FlowLimits::default()
    };
    let (mut p, snap) = limited(&config, 64, limits, 1);
    for i in 0..3u32 {
        assert!(open(&mut p, &snap, client(101 + i), 1024, 0).is_some());
    }
    assert!(open(&mut p, &snap, client(20), 40000, 1).is_some());
    assert_eq!(p.counters().evicted_half_open, 1);
    assert!(p
        .flows()
        .lookup_forward(&fwd(client(101), 1024, PROTO_TCP, 80))
        .is_none());
    // The state's first endpoint: handles are handed out in its order.
    let h = snap.endpoints().map(|e| e.handle).min().unwrap();
    assert_eq!(
        p.usage.get(h).map(|u| u.load).unwrap_or_default(),
        crate::tables::limits::Load {
            flows: 3,
            half_open: 3
        }
    );
    // Two UDP flows fill the endpoint's five; a sixth flow finds a half-open one to evict.
    for port in [1, 2] {
        let u = udp(client(20), port, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
        tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 2));
    }
    let u = udp(client(20), 3, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 2));
    assert_eq!(p.counters().evicted_half_open, 2);
    assert_eq!(
        p.usage.get(h).map(|u| u.load).unwrap_or_default(),
        crate::tables::limits::Load {
            flows: 5,
            half_open: 2
        }
    );
    // Nothing half-open left to evict once those two complete: refused.
    for (src, port) in [(client(103), 1024), (client(20), 40000)] {
        let id = p
            .flows()
            .lookup_forward(&fwd(src, port, PROTO_TCP, 80))
            .unwrap();
        let snat = p.flows().get(id).unwrap().rev.dst_port;
        complete(&mut p, &snap, src, port, snat, 3);
    }
    assert_eq!(
        p.usage.get(h).map(|u| u.load).unwrap_or_default().half_open,
        0
    );
    let u = udp(client(20), 4, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    assert!(matches!(
        p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 4),
        Verdict::Done
    ));
    assert_eq!(p.counters().dropped(DropReason::EndpointFlowLimit), 1);
    assert_eq!(endpoint_drops(&p, DropReason::EndpointFlowLimit), 1);
}

/// One target, one SNAT address and (with 32768 workers) one port for this worker: a
/// half-open flow holding it is evicted for a new flow; an established one is not.
#[test]
fn exhausted_port_range_evicts_a_half_open_flow_of_that_range() {
    let mut config = Config::embedded_default();
    for l in config.services[0].listeners.iter_mut() {
        l.targets.truncate(1);
    }
    let (mut p, snap) = limited(&config, 64, FlowLimits::default(), 32768);
    assert_eq!(p.snat.slots(), 1);
    let first = open(&mut p, &snap, client(101), 1024, 0).unwrap();
    let second = open(&mut p, &snap, client(20), 40000, 1);
    assert_eq!(second, Some(first), "the only port, freed by the eviction");
    assert_eq!(p.counters().evicted_half_open, 1);
    complete(&mut p, &snap, client(20), 40000, first, 2);
    assert_eq!(open(&mut p, &snap, client(21), 40000, 3), None);
    assert_eq!(p.counters().dropped(DropReason::SnatExhausted), 1);
}

/// Connections opened and closed by the target first (so the target keeps TIME_WAIT) one
/// after another, 20 a second, from one client port to one target, with 1008 SNAT ports:
/// no port is handed out again within 120 s of the end of its previous flow. The
/// sequential cursor came back to the first port after 1008 connections, 50 s. Once every
/// port is in quarantine, new connections are refused until ports come out of it.
#[test]
fn a_closed_port_is_not_reused_towards_its_target_within_120_s() {
    churn(true);
}

/// The same churn closed by the client first: the target, which closes second, keeps
/// nothing, so its ports may be reused at once and the churn is not capped at 1008
/// connections per 120 s.
#[test]
fn ports_of_connections_the_client_closed_first_are_reused_at_once() {
    churn(false);
}

fn churn(target_closes_first: bool) {
    let config = Config::embedded_default();
    let (mut p, snap) = limited(&config, 64, FlowLimits::default(), 64);
    assert_eq!(p.snat.slots(), 1008);
    let c = client(10);
    let mut ended_at: std::collections::HashMap<u16, u64> = Default::default();
    let mut current: Option<u16> = None;
    let mut opened = 0;
    for i in 0..3200u64 {
        let now = i * 50;
        let got = open(&mut p, &snap, c, 40000, now);
        // The SYN replaced the closed flow of the previous round (if any): it ended now.
        if let Some(old) = current.take() {
            ended_at.insert(old, now);
        }
        let Some(port) = got else {
            continue;
        };
        if let Some(&end) = ended_at.get(&port) {
            if target_closes_first {
                assert!(
                    now - end >= 120_000,
                    "port {port} reused {} ms after",
                    now - end
                );
            }
        }
        opened += 1;
        complete(&mut p, &snap, c, 40000, port, now);
        let target = target_of(&p, c, 40000);
        let t = target_closes_first;
        for (from_client, flags) in [
            (!t, WireTcpFlags::FIN | WireTcpFlags::ACK),
            (t, WireTcpFlags::FIN | WireTcpFlags::ACK),
            (!t, WireTcpFlags::ACK),
        ] {
            let f = if from_client {
                tcp(c, 40000, ENDPOINT, 80, flags, 1001, 5002, MAC_C, CLIENT_MAC)
            } else {
                tcp(
                    target, 8080, SNAT, port, flags, 5001, 1002, MAC_P, TARGET_MAC,
                )
            };
            tx(p.process(
                &snap,
                if from_client {
                    CONSUMER_PORT
                } else {
                    PROVIDER_PORT
                },
                VecFrame::new(&f),
                now,
            ));
        }
        current = Some(port);
    }
    if target_closes_first {
        // 1008 in the first 50 s, then refusals until the first ports come out of
        // quarantine at 120 s, then most of the 20 a second again.
        assert!(
            opened > 1008 + 400,
            "ports come back after 120 s: {opened} opened"
        );
        assert!(
            p.counters().dropped(DropReason::SnatExhausted) > 1000,
            "all quarantined"
        );
    } else {
        assert_eq!(opened, 3200, "every connection got a port");
        assert_eq!(p.counters().dropped(DropReason::SnatExhausted), 0);
    }
    assert_eq!(p.counters().snat_quarantine_full, 0);
}

/// Every flow's end takes it off the gauges, whatever ends it.
#[test]
fn gauges_return_to_zero_when_flows_end() {
    let config = Config::embedded_default();
    let (mut p, snap) = limited(&config, 64, FlowLimits::default(), 1);
    let c = client(10);
    let a = open(&mut p, &snap, c, 40000, 0).unwrap();
    complete(&mut p, &snap, c, 40000, a, 0);
    assert!(open(&mut p, &snap, c, 40001, 0).is_some());
    let u = udp(c, 5000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&u), 0));
    // The state's first endpoint: handles are handed out in its order.
    let h = snap.endpoints().map(|e| e.handle).min().unwrap();
    assert_eq!(
        p.usage.get(h).map(|u| u.load).unwrap_or_default(),
        crate::tables::limits::Load {
            flows: 3,
            half_open: 1
        }
    );
    assert_eq!(
        p.load.client(0, c.into()),
        crate::tables::limits::Load {
            flows: 3,
            half_open: 1
        }
    );
    let mut now = 1_000_000;
    while !p.flows().is_empty() && now < 1_100_000 {
        p.poll(&snap, now);
        now += 1;
    }
    assert_eq!(p.flows().len(), 0);
    assert_eq!(
        p.usage.get(h).map(|u| u.load).unwrap_or_default(),
        crate::tables::limits::Load::default()
    );
    assert_eq!(
        p.load.client(0, c.into()),
        crate::tables::limits::Load::default()
    );
}

/// The configuration's limits are for the appliance; each worker takes its share.
#[test]
fn limits_divide_among_workers() {
    let mut config = Config::embedded_default();
    config.limits.flows_per_client = 1000;
    config.limits.half_open_per_client = Some(0);
    let l = crate::daemon::flow_limits(&config, 3);
    assert_eq!((l.flows_per_client, l.half_open_per_client), (334, 0));
    // Endpoint defaults: 3/4 and 1/2 of the tables, i.e. of each worker's.
    assert_eq!(l.flows_per_endpoint, 262_144 / 4 * 3);
    assert_eq!(l.half_open_per_endpoint, 262_144 / 2);
}
