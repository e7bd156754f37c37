//! The checker against simulated targets, on a fake clock.

use super::link::{ProbeReply, ProbeSegment, REPLY_PAYLOAD};
use super::*;
use crate::wire::tcp::{TcpFlags, TcpRepr};

const OWN: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 2, 0, 1));

/// How a simulated target answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Listens; HTTP answers with this status.
    Up(u16),
    /// The port is closed: RST.
    Refuses,
    /// Nothing answers.
    Silent,
}

fn key(i: u32) -> TargetKey {
    TargetKey {
        service: "vpce-svc-0d0000000000000d1".parse().unwrap(),
        proto: 6,
        port: 80,
        ip: std::net::Ipv4Addr::from(0x0a02_0000 + 10 + i).into(),
        target_port: 8080,
    }
}

fn check(kind: Kind) -> Check {
    Check {
        attachment: 1,
        source: OWN,
        port: 8080,
        interval_ms: 5000,
        timeout_ms: 2000,
        healthy: 3,
        unhealthy: 2,
        kind,
    }
}

fn http() -> Kind {
    Kind::Http {
        request: probe::http_request("/", std::net::Ipv4Addr::new(10, 2, 0, 11).into(), 8080),
        matcher: mgmt::model::Matcher::default(),
    }
}

fn spec(i: u32, kind: Kind) -> Spec {
    Spec {
        key: key(i),
        mode: Mode::Check(check(kind)),
    }
}

fn reply_to(seg: &ProbeSegment, flags: TcpFlags, seq: u32, ack: u32, payload: &[u8]) -> ProbeReply {
    let mut head = [0u8; REPLY_PAYLOAD];
    let n = payload.len().min(REPLY_PAYLOAD);
    head[..n].copy_from_slice(&payload[..n]);
    ProbeReply {
        attachment: seg.attachment,
        src: seg.dst,
        dst: seg.src,
        tcp: TcpRepr {
            src_port: seg.tcp.dst_port,
            dst_port: seg.tcp.src_port,
            seq_number: seq,
            ack_number: ack,
            flags,
            window_len: 1000,
            urgent_at: 0,
        },
        payload_len: u16::try_from(payload.len()).unwrap(),
        head,
    }
}

/// The target's answer to one of the checker's segments.
fn answer(b: Behaviour, seg: &ProbeSegment) -> Option<ProbeReply> {
    let f = seg.tcp.flags;
    match b {
        Behaviour::Silent => None,
        _ if f.contains(TcpFlags::RST) => None,
        Behaviour::Refuses => Some(reply_to(
            seg,
            TcpFlags::RST | TcpFlags::ACK,
            0,
            seg.tcp.seq_number.wrapping_add(1),
            b"",
        )),
        Behaviour::Up(_) if f.contains(TcpFlags::SYN) => Some(reply_to(
            seg,
            TcpFlags::SYN | TcpFlags::ACK,
            9000,
            seg.tcp.seq_number.wrapping_add(1),
            b"",
        )),
        Behaviour::Up(code) if !seg.payload.is_empty() => Some(reply_to(
            seg,
            TcpFlags::ACK | TcpFlags::PSH,
            9001,
            0,
            format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )),
        Behaviour::Up(_) => None,
    }
}

/// Runs the checker for `ms` milliseconds in 10 ms steps against targets behaving as
/// `behaviour(i)`; returns every change and the number of SYNs sent.
fn run(
    c: &mut Checker,
    from_ms: u64,
    ms: u64,
    behaviour: &dyn Fn(u32) -> Behaviour,
) -> (Vec<Change>, usize) {
    let mut changes = Vec::new();
    let mut syns = 0;
    let mut t = from_ms;
    while t < from_ms + ms {
        let mut out = Output::default();
        c.tick(t, t / 1000, &mut out);
        // Answers arrive within the step; what they cause goes out in the same step.
        let mut pending = std::mem::take(&mut out.segments);
        let mut rounds = 0;
        while !pending.is_empty() && rounds < 10 {
            rounds += 1;
            let mut next = Output::default();
            for seg in &pending {
                if seg.tcp.flags == TcpFlags::SYN {
                    syns += 1;
                }
                let ip4 = |a: std::net::IpAddr| match a {
                    std::net::IpAddr::V4(a) => u32::from(a),
                    std::net::IpAddr::V6(_) => u32::MAX,
                };
                let i = ip4(seg.dst) - ip4(key(0).ip);
                if let Some(r) = answer(behaviour(i), seg) {
                    c.on_reply(&r, t / 1000, &mut next);
                }
            }
            out.changes.append(&mut next.changes);
            pending = next.segments;
        }
        changes.append(&mut out.changes);
        t += 10;
    }
    (changes, syns)
}

fn state(c: &Checker, i: u32) -> State {
    c.health(&key(i)).unwrap().state
}

#[test]
fn a_new_target_is_initial_then_healthy_after_the_healthy_threshold() {
    let mut c = Checker::new(7);
    let mut out = Output::default();
    c.reconcile(&[spec(0, Kind::Tcp)], 0, 0, &mut out);
    assert_eq!(state(&c, 0), State::Initial);
    assert_eq!(
        c.health(&key(0)).unwrap().reason,
        Some(Reason::InitialHealthChecking)
    );
    // Two probes in 10 s (the first within the first interval): not yet 3.
    let (_, syns) = run(&mut c, 0, 10_000, &|_| Behaviour::Up(200));
    assert_eq!(syns, 2);
    assert_eq!(state(&c, 0), State::Initial);
    let (changes, _) = run(&mut c, 10_000, 5_000, &|_| Behaviour::Up(200));
    assert_eq!(state(&c, 0), State::Healthy);
    assert_eq!(changes.len(), 1);
    assert!(changes[0].routing, "initial -> healthy moves new flows");
}

#[test]
fn a_silent_target_times_out_into_unhealthy_and_comes_back() {
    let mut c = Checker::new(7);
    let mut out = Output::default();
    c.reconcile(&[spec(0, Kind::Tcp)], 0, 0, &mut out);
    run(&mut c, 0, 15_000, &|_| Behaviour::Up(200));
    assert_eq!(state(&c, 0), State::Healthy);
    // Two failed probes (each ends 2 s after it starts): unhealthy within 2 × 5 + 2 s.
    let (changes, _) = run(&mut c, 15_000, 12_000, &|_| Behaviour::Silent);
    let h = c.health(&key(0)).unwrap();
    assert_eq!(h.state, State::Unhealthy);
    assert_eq!(h.reason, Some(Reason::Timeout));
    assert!(changes.iter().any(|c| c.routing));
    // Back after three passing probes.
    run(&mut c, 27_000, 15_000, &|_| Behaviour::Up(200));
    assert_eq!(state(&c, 0), State::Healthy);
}

#[test]
fn a_refused_connection_and_a_wrong_status_have_their_reasons() {
    let mut c = Checker::new(7);
    let mut out = Output::default();
    c.reconcile(&[spec(0, Kind::Tcp), spec(1, http())], 0, 0, &mut out);
    let (_, _) = run(&mut c, 0, 11_000, &|i| {
        if i == 0 {
            Behaviour::Refuses
        } else {
            Behaviour::Up(500)
        }
    });
    let refused = c.health(&key(0)).unwrap();
    assert_eq!(refused.state, State::Unhealthy);
    assert_eq!(refused.reason, Some(Reason::FailedHealthChecks));
    let mismatch = c.health(&key(1)).unwrap();
    assert_eq!(mismatch.state, State::Unhealthy);
    assert_eq!(mismatch.reason, Some(Reason::ResponseCodeMismatch));
    assert!(
        mismatch.description.contains("[500]"),
        "{}",
        mismatch.description
    );
}

#[test]
fn every_probe_ends_with_a_reset_so_targets_keep_no_connection() {
    let mut c = Checker::new(7);
    let mut out = Output::default();
    c.reconcile(&[spec(0, http())], 0, 0, &mut out);
    let mut t = 0;
    let mut rsts = 0;
    let mut syns = 0;
    while t < 20_000 {
        let mut out = Output::default();
        c.tick(t, 0, &mut out);
        let mut pending = out.segments;
        while let Some(seg) = pending.pop() {
            if seg.tcp.flags.contains(TcpFlags::RST) {
                rsts += 1;
            }
            if seg.tcp.flags == TcpFlags::SYN {
                syns += 1;
            }
            if let Some(r) = answer(Behaviour::Up(200), &seg) {
                let mut next = Output::default();
                c.on_reply(&r, 0, &mut next);
                pending.extend(next.segments);
            }
        }
        t += 10;
    }
    assert_eq!(syns, 4);
    assert_eq!(rsts, syns);
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn modes_from_the_snapshot_give_their_states_and_vanished_targets_are_forgotten() {
    let mut c = Checker::new(7);
    let mut out = Output::default();
    c.reconcile(&[spec(0, Kind::Tcp), spec(1, Kind::Tcp)], 0, 0, &mut out);
    assert_eq!(out.changes.len(), 2);
    let specs = [
        Spec {
            key: key(0),
            mode: Mode::Draining,
        },
        Spec {
            key: key(2),
            mode: Mode::Disabled,
        },
        Spec {
            key: key(3),
            mode: Mode::Unused,
        },
    ];
    let mut out = Output::default();
    c.reconcile(&specs, 100, 7, &mut out);
    assert_eq!(state(&c, 0), State::Draining);
    assert_eq!(c.health(&key(0)).unwrap().since, 7);
    assert_eq!(state(&c, 2), State::Unavailable);
    assert_eq!(state(&c, 3), State::Unused);
    assert_eq!(out.gone, vec![key(1)]);
    assert!(c.health(&key(1)).is_none());
    // No probes for targets that are not checked.
    let (_, syns) = run(&mut c, 100, 20_000, &|_| Behaviour::Up(200));
    assert_eq!(syns, 0);
}

#[test]
fn probes_of_many_targets_spread_over_the_interval() {
    let mut c = Checker::new(7);
    let specs: Vec<Spec> = (0..1000).map(|i| spec(i, Kind::Tcp)).collect();
    let mut out = Output::default();
    c.reconcile(&specs, 0, 0, &mut out);
    // SYNs per 500 ms over one 5 s interval: 100 each if even.
    let mut buckets = [0usize; 10];
    let mut first = std::collections::HashSet::new();
    let mut t = 0;
    // Up to the tick that serves offsets in the last 10 ms.
    while t < 5010 {
        let mut out = Output::default();
        c.tick(t, 0, &mut out);
        // First SYNs only (unanswered ones are sent again after a second).
        buckets[((t / 500) as usize).min(9)] += out
            .segments
            .iter()
            .filter(|s| s.tcp.flags == TcpFlags::SYN && first.insert(s.dst))
            .count();
        t += 10;
    }
    assert_eq!(buckets.iter().sum::<usize>(), 1000);
    assert!(
        buckets.iter().all(|&n| (50..=150).contains(&n)),
        "probes bunch up: {buckets:?}"
    );
}

#[test]
fn a_reply_for_no_probe_is_ignored() {
    let mut c = Checker::new(7);
    let mut out = Output::default();
    c.reconcile(&[spec(0, Kind::Tcp)], 0, 0, &mut out);
    let seg = ProbeSegment {
        attachment: 1,
        src: OWN,
        dst: key(0).ip,
        tcp: TcpRepr {
            src_port: 40000,
            dst_port: 8080,
            seq_number: 1,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window_len: 0,
            urgent_at: 0,
        },
        payload: Vec::new(),
    };
    let r = reply_to(&seg, TcpFlags::SYN | TcpFlags::ACK, 5, 2, b"");
    let mut out = Output::default();
    c.on_reply(&r, 0, &mut out);
    assert!(out.segments.is_empty() && out.changes.is_empty());
}

#[test]
fn the_board_flags_only_changes_that_move_new_flows() {
    let b = Board::default();
    let h = |s| Health::new(s, None, "", 0);
    b.apply(
        &[Change {
            key: key(0),
            health: h(State::Initial),
            routing: false,
        }],
        &[],
    );
    assert!(!b.take_routing_change());
    b.apply(
        &[Change {
            key: key(0),
            health: h(State::Healthy),
            routing: true,
        }],
        &[],
    );
    assert!(b.take_routing_change());
    assert!(!b.take_routing_change());
    assert_eq!(b.states().get(&key(0)), Some(&State::Healthy));
    b.apply(&[], &[key(0)]);
    assert!(b.get(&key(0)).is_none());
}
