//! Health through the packet path: new flows follow the targets' health, an unhealthy
//! target's flows end (or stay, when the listener says so), per-listener idle timeouts,
//! and the probe segments the workers carry for the checker.

use std::collections::HashMap;

use super::*;
use crate::health::link::{ProbeQueues, ProbeSegment};
use crate::health::{State as Health, TargetKey};

const T1: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 11);
const T2: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 12);
const OWN_P: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

fn key(config: &Config, ip: Ipv4Addr) -> TargetKey {
    TargetKey {
        service: config.services[0].id,
        proto: 6,
        port: 80,
        ip: ip.into(),
        target_port: 8080,
    }
}

fn with_health(
    config: &Config,
    generation: u64,
    health: &[(Ipv4Addr, Health)],
    handles: &mut crate::tables::snapshot::Handles,
) -> Snapshot {
    let map: HashMap<TargetKey, Health> =
        health.iter().map(|&(ip, h)| (key(config, ip), h)).collect();
    Snapshot::build_with_health(
        generation,
        config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        handles,
        &map,
    )
    .unwrap()
}

/// The targets 100 new TCP connections (distinct client ports) go to.
fn targets_of_new_flows(p: &mut Pipeline<VecFrame>, snap: &Snapshot) -> HashMap<Ipv4Addr, u32> {
    let mut seen = HashMap::new();
    for i in 0..100u16 {
        let f = tcp(
            CLIENT,
            30000 + i,
            ENDPOINT,
            80,
            syn(),
            1,
            0,
            MAC_C,
            CLIENT_MAC,
        );
        let (_, out) = tx(p.process(snap, CONSUMER_PORT, VecFrame::new(&f), 0));
        *seen.entry(ip_of(&out).dst_addr()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn new_flows_go_to_healthy_targets_and_fail_open_when_none_is() {
    let config = Config::embedded_default();
    let mut handles = crate::tables::snapshot::Handles::default();
    type Case<'a> = (&'a [(Ipv4Addr, Health)], &'a [Ipv4Addr]);
    let cases: [Case; 4] = [
        // Nothing checked yet: both initial, both take flows.
        (&[], &[T1, T2]),
        (&[(T1, Health::Healthy), (T2, Health::Unhealthy)], &[T1]),
        // A target still in its first checks waits for them while another is healthy.
        (&[(T1, Health::Healthy)], &[T1]),
        // Every target unhealthy: all of them (fail open).
        (
            &[(T1, Health::Unhealthy), (T2, Health::Unhealthy)],
            &[T1, T2],
        ),
    ];
    for (i, (health, expect)) in cases.iter().enumerate() {
        let snap = with_health(&config, 1, health, &mut handles);
        let (p, _) = pipeline(&config, 1, 0);
        let mut p = with_neighbours(p, &snap);
        let seen = targets_of_new_flows(&mut p, &snap);
        let mut got: Vec<Ipv4Addr> = seen.keys().copied().collect();
        got.sort();
        assert_eq!(&got, expect, "case {i}: {seen:?}");
    }
    // An unhealthy target next to one still initial: the initial one, not fail open.
    let snap = with_health(&config, 1, &[(T2, Health::Unhealthy)], &mut handles);
    let (p, _) = pipeline(&config, 1, 0);
    let mut p = with_neighbours(p, &snap);
    assert_eq!(
        targets_of_new_flows(&mut p, &snap)
            .keys()
            .collect::<Vec<_>>(),
        [&T1]
    );
}

#[test]
fn disabled_checks_leave_every_target_in_use() {
    let mut config = Config::embedded_default();
    config.services[0].listeners[0].health_check_enabled = false;
    let mut handles = crate::tables::snapshot::Handles::default();
    // A stale unhealthy state from before the checks were disabled changes nothing.
    let snap = with_health(&config, 1, &[(T2, Health::Unhealthy)], &mut handles);
    let (p, _) = pipeline(&config, 1, 0);
    let mut p = with_neighbours(p, &snap);
    assert_eq!(targets_of_new_flows(&mut p, &snap).len(), 2);
}

/// Establishes a flow, then publishes a snapshot where its target is unhealthy (the other
/// healthy); returns the pipeline after revalidation and the RSTs it sent.
fn flow_to_a_target_turning_unhealthy(config: &Config) -> (Pipeline<VecFrame>, usize) {
    let mut handles = crate::tables::snapshot::Handles::default();
    let first = with_health(config, 1, &[], &mut handles);
    let settings = crate::daemon::pipeline_settings(config, 1);
    let p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &first);
    let mut p = with_neighbours(p, &first);
    let (target, _) = establish(&mut p, &first, 41000);
    assert_eq!(p.flows().len(), 1);
    let other = if target == T1 { T2 } else { T1 };
    let next = with_health(
        config,
        2,
        &[(target, Health::Unhealthy), (other, Health::Healthy)],
        &mut handles,
    );
    p.on_snapshot(&next);
    for t in 0..64 {
        p.poll(&next, 10 + t);
    }
    let rsts = p
        .drain_emitted()
        .filter(|(_, f)| {
            let b = f.bytes();
            b.len() >= 54 && b[23] == 6 && TcpPacket::new_checked(&b[34..]).is_ok_and(|t| t.rst())
        })
        .count();
    (p, rsts)
}

#[test]
fn an_unhealthy_targets_flows_end_with_a_reset_to_both_sides() {
    let config = Config::embedded_default();
    let (p, rsts) = flow_to_a_target_turning_unhealthy(&config);
    assert_eq!(p.flows().len(), 0);
    assert_eq!(p.counters().dropped(DropReason::FlowEnded), 1);
    assert_eq!(rsts, 2);
}

#[test]
fn connection_termination_off_keeps_an_unhealthy_targets_flows() {
    let mut config = Config::embedded_default();
    config.services[0].listeners[0].connection_termination_on_unhealthy = false;
    let (p, rsts) = flow_to_a_target_turning_unhealthy(&config);
    assert_eq!(p.flows().len(), 1);
    assert_eq!(rsts, 0);
}

/// Polls until the whole flow table has been swept for expiry at `now`.
fn sweep(p: &mut Pipeline<VecFrame>, snap: &Snapshot, now: u64) {
    for _ in 0..64 {
        p.poll(snap, now);
    }
}

#[test]
fn a_listeners_idle_timeout_replaces_the_global_one() {
    for (idle, alive_at_61s) in [(None, true), (Some(60), false)] {
        let mut config = Config::embedded_default();
        config.services[0].listeners[0].idle_timeout_seconds = idle;
        let (mut p, snap) = pipeline(&config, 1, 0);
        establish(&mut p, &snap, 41000);
        sweep(&mut p, &snap, 59_000);
        assert_eq!(p.flows().len(), 1, "{idle:?}: not idle long enough yet");
        sweep(&mut p, &snap, 61_000);
        assert_eq!(p.flows().len() == 1, alive_at_61s, "{idle:?}");
    }
    // UDP listeners too.
    let mut config = Config::embedded_default();
    config.services[0].listeners[1].idle_timeout_seconds = Some(60);
    config.timeouts.udp = std::time::Duration::from_secs(300);
    let (mut p, snap) = pipeline(&config, 1, 0);
    udp_flow(&mut p, &snap, 40000);
    sweep(&mut p, &snap, 59_000);
    assert_eq!(p.flows().len(), 1);
    sweep(&mut p, &snap, 61_000);
    assert_eq!(p.flows().len(), 0);
}

fn probe_syn(port: u16) -> ProbeSegment {
    ProbeSegment {
        attachment: 1,
        src: OWN_P.into(),
        dst: T1.into(),
        tcp: TcpRepr {
            src_port: port,
            dst_port: 8080,
            seq_number: 77,
            ack_number: 0,
            flags: WireTcpFlags::SYN,
            window_len: 8192,
            urgent_at: 0,
        },
        payload: Vec::new(),
    }
}

#[test]
fn probes_leave_from_the_own_address_and_their_replies_reach_the_checker() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let queues = ProbeQueues::new(1, 16);
    p.set_probe_link(queues.link(0).unwrap());
    let mut http = probe_syn(40001);
    http.tcp.flags = WireTcpFlags::ACK | WireTcpFlags::PSH;
    http.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    assert!(queues.send(probe_syn(40000)));
    assert!(queues.send(http));
    p.poll(&snap, 1);
    // (Worker 0 also announces the demo's addresses: only the IPv4 frames are probes.)
    let out: Vec<(u16, Vec<u8>)> = p
        .drain_emitted()
        .map(|(port, f)| (port, f.bytes().to_vec()))
        .filter(|(_, b)| b[12..14] == [0x08, 0x00])
        .collect();
    assert_eq!(out.len(), 2);
    assert_eq!(p.counters().probes_sent, 2);
    for (i, (port, b)) in out.iter().enumerate() {
        assert_eq!(*port, PROVIDER_PORT);
        assert_eq!(&b[0..6], &TARGET_MAC, "to the target's MAC");
        let ip = ip_of(b);
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (OWN_P, T1));
        let seg = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(seg.verify_checksum(ip.src_addr(), ip.dst_addr()));
        assert_eq!(seg.dst_port(), 8080);
        if i == 1 {
            assert_eq!(seg.payload(), b"GET / HTTP/1.1\r\n\r\n");
        }
    }

    // The target's SYN-ACK to our own address on the probe port goes to the checker.
    let synack = tcp(
        T1,
        8080,
        OWN_P,
        40000,
        WireTcpFlags::SYN | WireTcpFlags::ACK,
        9000,
        78,
        MAC_P,
        TARGET_MAC,
    );
    assert!(matches!(
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&synack), 2),
        Verdict::Done
    ));
    let r = queues.replies.pop().expect("the reply reached the checker");
    assert_eq!((r.src, r.dst), (T1.into(), OWN_P.into()));
    assert_eq!((r.tcp.src_port, r.tcp.dst_port), (8080, 40000));
    assert_eq!((r.tcp.seq_number, r.tcp.ack_number), (9000, 78));
    assert_eq!(p.counters().probe_replies, 1);

    // A corrupted one is dropped and counted, not passed on.
    let mut bad = synack.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&bad), 3);
    assert!(queues.replies.pop().is_none());
    assert_eq!(p.counters().dropped(DropReason::BadChecksum), 1);

    // TCP to our own address outside the probe ports stays refused as before.
    let other = tcp(
        T1,
        8080,
        OWN_P,
        22,
        WireTcpFlags::ACK,
        1,
        1,
        MAC_P,
        TARGET_MAC,
    );
    p.process(&snap, PROVIDER_PORT, VecFrame::new(&other), 4);
    assert!(queues.replies.pop().is_none());
    assert_eq!(p.counters().dropped(DropReason::IcmpUnsupported), 1);
}

#[test]
fn a_full_reply_queue_drops_and_counts_never_blocks() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let queues = ProbeQueues::new(1, 1);
    p.set_probe_link(queues.link(0).unwrap());
    for i in 0..3u16 {
        let synack = tcp(
            T1,
            8080,
            OWN_P,
            40000 + i,
            WireTcpFlags::SYN | WireTcpFlags::ACK,
            9000,
            78,
            MAC_P,
            TARGET_MAC,
        );
        p.process(&snap, PROVIDER_PORT, VecFrame::new(&synack), 2);
    }
    assert_eq!(p.counters().probe_replies, 1);
    assert_eq!(p.counters().dropped(DropReason::ProbeBacklog), 2);
}

#[test]
fn a_probe_to_a_target_behind_the_gateway_goes_to_the_gateway() {
    let mut config = Config::embedded_default();
    config.vpcs[1].gateway = Some(Ipv4Addr::new(10, 2, 0, 254));
    let far = Ipv4Addr::new(192, 168, 7, 11);
    config.services[0].listeners[0].targets[0].ip = far.into();
    let snap = snapshot(&config);
    // The snapshot tells the checker to probe it from the provider-side own address.
    let spec = snap
        .health_checks
        .iter()
        .find(|s| s.key.ip == far)
        .expect("a check for the far target");
    let crate::health::Mode::Check(check) = &spec.mode else {
        panic!("{spec:?}");
    };
    assert_eq!((check.attachment, check.source), (1, OWN_P.into()));
    let (mut p, _) = pipeline(&config, 1, 0);
    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0xfe];
    p.learn_remote(
        &snap,
        NeighbourNews {
            attachment: 1,
            ip: Ipv4Addr::new(10, 2, 0, 254).into(),
            mac: GW_MAC,
        },
        0,
    );
    p.drain_emitted().for_each(drop);
    let queues = ProbeQueues::new(1, 4);
    p.set_probe_link(queues.link(0).unwrap());
    let mut seg = probe_syn(40000);
    seg.dst = far.into();
    assert!(queues.send(seg));
    p.poll(&snap, 1);
    let out: Vec<Vec<u8>> = p
        .drain_emitted()
        .map(|(_, f)| f.bytes().to_vec())
        .filter(|b| b[12..14] == [0x08, 0x00])
        .collect();
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &GW_MAC, "the next hop is the gateway");
    assert_eq!(ip_of(&out[0]).dst_addr(), far);
}
