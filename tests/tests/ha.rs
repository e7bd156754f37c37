//! An HA pair end to end: two privlinkd on the same consumer and provider networks (Linux
//! bridges in the namespaces), one active, one standby with a synced copy of the active's
//! flows. Established connections survive a SIGKILL of the active node, a cut sync link
//! (both nodes think the other dead) ends with one active node within seconds, and a flow
//! survives once the standby has heard of it. Run as root, one at a time (`make test`);
//! each test builds its own pair with unique names and tears it down even when it fails.

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::time::{Duration, Instant};

use privlink_e2e::{
    Node, Options, Pair, Role, Topology, Value, ENDPOINT6, ENDPOINT_IP, LOG_ACTIVE, LOG_STANDBY,
};

const T: Duration = Duration::from_secs(60);

/// How long a surviving connection may go unanswered across a failover. The target is 1 s
/// (3 missed heartbeats of 100 ms, the takeover's announcements, a TCP retransmission or
/// two); the assertion allows 2 s so a loaded, shared test machine does not flake.
const MAX_GAP_S: f64 = 2.0;

/// `client.py hold` of `n` connections for `secs` seconds (and the UDP stream), started in
/// the background.
fn spawn_hold(p: &Pair, n: u32, secs: u32) -> Child {
    let (n, s) = (n.to_string(), secs.to_string());
    p.spawn_client(
        &["hold", ENDPOINT_IP, "80", &n, &s, "9000"],
        Duration::from_secs(u64::from(secs) + 15),
    )
}

/// Prints what `hold` saw across a failover and checks that every connection survived it
/// with gaps of at most [`MAX_GAP_S`].
fn check_hold(p: &Pair, r: &Value, n: u64, what: &str) {
    let gap = r["max_gap"].as_f64().unwrap_or(f64::INFINITY);
    let udp_gap = r["udp_max_gap"].as_f64().unwrap_or(f64::INFINITY);
    eprintln!(
        "{what}: {} of {n} connections open, {} failed ({} reset) {}, {} requests answered; \
         longest gap {gap:.3} s (at {} s); UDP {}/{} answered, longest gap {udp_gap:.3} s",
        r["opened"],
        r["failed"],
        r["reset"],
        r["errors"],
        r["requests_ok"],
        r["max_gap_at"],
        r["udp_received"],
        r["udp_sent"],
    );
    assert_eq!(r["opened"], n, "{what}: every connection opened: {r}");
    assert_eq!(
        r["failed"],
        0,
        "{what}: no connection failed or was reset: {r}\n{}",
        p.logs()
    );
    assert!(
        gap <= MAX_GAP_S,
        "{what}: the longest gap between two answers on one connection is {gap} s (at most \
         {MAX_GAP_S} s; the target is 1 s): {r}\n{}",
        p.logs()
    );
    assert!(
        udp_gap <= MAX_GAP_S,
        "{what}: the UDP stream's longest gap is {udp_gap} s (at most {MAX_GAP_S} s): {r}"
    );
}

/// New connections all succeed.
fn check_new_connections(p: &Pair, what: &str) {
    let r = p.client(&["http-many", ENDPOINT_IP, "80", "20"], T);
    assert_eq!(
        r["ok"],
        20,
        "{what}: new connections succeed: {r}\n{}",
        p.logs()
    );
}

/// Kills `victim` (the active node) while `hold` and `ping` run, and checks what they saw.
fn failover_under_load(p: &mut Pair, victim: Node, what: &str) {
    let heir = victim.other();
    let hold = spawn_hold(p, 200, 12);
    let ping = p.spawn_ping(ENDPOINT_IP, 100, Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(4));
    let mark = p.log_mark(heir);
    p.kill(victim);
    let took = p.wait_log_since(heir, mark, LOG_ACTIVE, Duration::from_secs(10));
    eprintln!(
        "{what}: node {} logged its takeover {took:?} after node {}'s SIGKILL",
        heir.name(),
        victim.name()
    );
    let r = p.wait_json(hold);
    let ping = p.wait_ping(ping);
    eprintln!(
        "{what}: ping {}/{} answered, {:.1} % lost",
        ping.received,
        ping.transmitted,
        ping.loss_percent()
    );
    check_hold(p, &r, 200, what);
    assert!(
        ping.loss_percent() <= 20.0,
        "{what}: ping loss {:.1} % (at most 20 %): {ping:?}",
        ping.loss_percent()
    );
    check_new_connections(p, what);
    let s = p.stats(heir);
    eprintln!(
        "{what}: node {}: takeovers {}, synced_flows {}, sync_unresolved {}, sync_dropped {}",
        heir.name(),
        Topology::counter(&s, "takeovers"),
        Topology::counter(&s, "synced_flows"),
        Topology::counter(&s, "sync_unresolved"),
        Topology::counter(&s, "sync_dropped"),
    );
    assert!(Topology::counter(&s, "takeovers") >= 1, "{s}");
    assert!(
        Topology::counter(&s, "synced_flows") > 0,
        "the heir had the flows: {s}"
    );
}

/// Waits (at most `limit`) until the bulk copy to `standby` is done: its stats say it is
/// in sync, or (stats without `HighAvailability`) the active logged "ha: copy of the flows
/// sent" after `mark`. Whether it was, and how.
fn wait_bulk(p: &Pair, standby: Node, mark: usize, limit: Duration) -> (bool, String) {
    let end = Instant::now() + limit;
    loop {
        let status = p.ha_status(standby);
        if status["InSync"] == true {
            return (true, format!("{} in sync: {status}", standby.name()));
        }
        let logged = p
            .log(standby.other())
            .get(mark..)
            .is_some_and(|t| t.contains("copy of the flows sent"));
        if status.is_null() && logged {
            return (true, "the copy logged by the active".into());
        }
        if Instant::now() >= end {
            return (false, format!("not in sync after {limit:?}: {status}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failover_keeps_established_connections() {
    let mut p = Pair::start(Options::default());
    check_new_connections(&p, "before any failover");

    failover_under_load(&mut p, Node::A, "a killed");

    // a comes back: standby (no preemption), and b copies its flows to it.
    let mark = p.log_mark(Node::B);
    p.restart(Node::A);
    p.wait_standby_with_peer(Node::A);
    let (bulk, how) = wait_bulk(&p, Node::A, mark, Duration::from_secs(10));
    eprintln!("a back as standby; bulk copy done: {bulk} ({how})");
    assert!(
        bulk,
        "the returning standby gets a copy of the flows: {how}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        p.role(Node::B),
        Some(Role::Active),
        "b stays active when a returns (preempt = false):\n{}",
        p.logs()
    );

    failover_under_load(&mut p, Node::B, "b killed");
}

/// IPv6 consumers of the IPv4 service (NAT64 through the dual-stack endpoint) keep their
/// connections and UDP stream when the active node dies: their flows reach the standby
/// with the consumers' IPv6 addresses, which it folds under its own secret, and its
/// unsolicited advertisements move the endpoint's IPv6 address to it.
#[test]
fn failover_keeps_ipv6_consumers_connections() {
    let mut p = Pair::start(Options {
        ipv6: true,
        dual_stack: true,
        ..Options::default()
    });
    let r = p.client(&["http-many", ENDPOINT6, "80", "10"], T);
    assert_eq!(r["ok"], 10, "IPv6 through the pair: {r}\n{}", p.logs());
    let hold = p.spawn_client(
        &["hold", ENDPOINT6, "80", "50", "12", "9000"],
        Duration::from_secs(27),
    );
    std::thread::sleep(Duration::from_secs(4));
    let mark = p.log_mark(Node::B);
    p.kill(Node::A);
    p.wait_log_since(Node::B, mark, LOG_ACTIVE, Duration::from_secs(10));
    let r = p.wait_json(hold);
    check_hold(&p, &r, 50, "IPv6 consumers, a killed");
    let r = p.client(&["http-many", ENDPOINT6, "80", "10"], T);
    assert_eq!(r["ok"], 10, "new IPv6 connections after the failover: {r}");
    let s = p.stats(Node::B);
    assert!(
        Topology::counter(&s, "synced_flows") >= 50,
        "the heir had the flows: {s}"
    );
    assert_eq!(Topology::counter(&s, "sync_unresolved"), 0, "{s}");
}

/// Whether `node`'s log after `mark` has `needle`.
fn logged_since(p: &Pair, node: Node, mark: usize, needle: &str) -> bool {
    p.log(node).get(mark..).is_some_and(|t| t.contains(needle))
}

/// Watches b after `since` for at most `limit`: when it turned active (after `mark`) and
/// when it stepped back to standby after that, measured from `since`. Stops early once b
/// stepped back, or when it has not turned active by `give_up`.
fn watch_b(
    p: &Pair,
    mark: usize,
    since: Instant,
    give_up: Duration,
    limit: Duration,
) -> (Option<Duration>, Option<Duration>) {
    let (mut up, mut down) = (None, None);
    while since.elapsed() < limit {
        let log = p.log(Node::B);
        let tail = log.get(mark..).unwrap_or("");
        if let Some(at) = tail.find(LOG_ACTIVE) {
            up.get_or_insert(since.elapsed());
            if tail[at..].contains(LOG_STANDBY) {
                down = Some(since.elapsed());
                break;
            }
        } else if since.elapsed() > give_up {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (up, down)
}

#[test]
fn failover_split_brain_ends_quickly() {
    let mut p = Pair::start(Options::default());

    // 1. The sync link cut, the data networks whole: b hears no heartbeats and may take
    //    over, but a's announcements on the data networks (another MAC claiming b's
    //    addresses) must keep it standby or make it, the lower precedence, step down
    //    within 3 s.
    let mark_a = p.log_mark(Node::A);
    let mark_b = p.log_mark(Node::B);
    let cut = Instant::now();
    p.cut_sync(true);
    let (up, down) = watch_b(
        &p,
        mark_b,
        cut,
        Duration::from_secs(4),
        Duration::from_secs(10),
    );
    match (up, down) {
        (Some(up), Some(down)) => eprintln!(
            "sync cut: b active {up:?} after the cut, standby again {down:?} after it ({:?} \
             with two active nodes)",
            down - up
        ),
        (Some(up), None) => panic!(
            "sync cut: b turned active {up:?} after the cut and was still active at 10 s:\n{}",
            p.logs()
        ),
        (None, _) => eprintln!("sync cut: b stayed standby (4 s watched)"),
    }
    if let (Some(up), Some(down)) = (up, down) {
        assert!(
            down - up <= Duration::from_secs(3),
            "sync cut: two active nodes for {:?} (at most 3 s):\n{}",
            down - up,
            p.logs()
        );
    }
    // One end, not a flap: with the link still cut, b stays standby.
    let mark_b = p.log_mark(Node::B);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !logged_since(&p, Node::B, mark_b, LOG_ACTIVE),
        "sync cut: b turned active again with the link still cut:\n{}",
        p.logs()
    );
    assert!(
        !logged_since(&p, Node::A, mark_a, LOG_STANDBY),
        "sync cut: a, the higher precedence, stays active:\n{}",
        p.logs()
    );
    assert_eq!(p.role(Node::A), Some(Role::Active));
    assert_eq!(p.role(Node::B), Some(Role::Standby));
    check_new_connections(&p, "sync cut");

    // 2. A full partition (the sync link still cut, a off the data networks too): b must
    //    take over and serve. Then the data networks heal with the sync link still cut:
    //    both are active, and b, seeing a claim the addresses, must step down within 3 s.
    let mark_a = p.log_mark(Node::A);
    let mark_b = p.log_mark(Node::B);
    p.isolate(Node::A, true);
    let took = p.wait_log_since(Node::B, mark_b, LOG_ACTIVE, Duration::from_secs(5));
    eprintln!("partition: b took over {took:?} after a left the data networks");
    std::thread::sleep(Duration::from_secs(1));
    check_new_connections(&p, "partition (b serving)");
    let healed = Instant::now();
    p.isolate(Node::A, false);
    // From b's takeover above (after mark_b): its step down, timed from the heal.
    let (_, down) = watch_b(
        &p,
        mark_b,
        healed,
        Duration::from_secs(10),
        Duration::from_secs(10),
    );
    match down {
        Some(d) => eprintln!("partition healed: b standby again {d:?} later"),
        None => panic!(
            "partition healed: b still active 10 s later (two active nodes):\n{}",
            p.logs()
        ),
    }
    assert!(
        down.is_some_and(|d| d <= Duration::from_secs(3)),
        "partition healed: two active nodes for {down:?} (at most 3 s):\n{}",
        p.logs()
    );
    assert!(
        !logged_since(&p, Node::A, mark_a, LOG_STANDBY),
        "partition healed: a, the higher precedence, stays active:\n{}",
        p.logs()
    );
    let s = p.stats(Node::B);
    eprintln!(
        "partition healed: b's standby drops {}, takeovers {}",
        Topology::drops(&s, "standby"),
        Topology::counter(&s, "takeovers")
    );
    // The client and the targets learnt b's MAC for the endpoint and the SNAT address
    // while b was active; a must win them back (announce them) for the service to return.
    // How long that takes is checked at the end, so the rest of the test still runs.
    let service = service_back(&p, healed, Duration::from_secs(10));
    eprintln!("partition healed: new connections succeed again {service:?} after the heal");
    if service.is_none() {
        // Not back (the assertion at the end says so): forget the stale neighbours so the
        // rest of the test can run on a working service.
        for ns in [&p.consumer, &p.provider] {
            ns.must(&["ip", "neigh", "flush", "all"]);
        }
    }
    check_new_connections(&p, "partition healed");

    // 3. The sync link back: nothing changes role, and the pair fails over again as before
    //    (the flows made since are synced).
    let mark_a = p.log_mark(Node::A);
    let mark_b = p.log_mark(Node::B);
    p.cut_sync(false);
    let (back, status) = p.wait_ha_status(Node::B, Duration::from_secs(10), |v| {
        v.is_null() || (v["PeerAlive"] == true && v["InSync"] == true)
    });
    assert!(back, "b hears a again and is in sync: {status}");
    std::thread::sleep(Duration::from_secs(1));
    for (n, m) in [(Node::A, mark_a), (Node::B, mark_b)] {
        assert!(
            !logged_since(&p, n, m, LOG_ACTIVE) && !logged_since(&p, n, m, LOG_STANDBY),
            "node {} changed role when the link came back:\n{}",
            n.name(),
            p.logs()
        );
    }
    check_new_connections(&p, "after the link came back");
    let hold = spawn_hold(&p, 20, 6);
    std::thread::sleep(Duration::from_secs(3));
    let mark_b = p.log_mark(Node::B);
    p.kill(Node::A);
    p.wait_log_since(Node::B, mark_b, LOG_ACTIVE, Duration::from_secs(10));
    let r = p.wait_json(hold);
    check_hold(&p, &r, 20, "failover after the link came back");

    assert!(
        service.is_some_and(|d| d <= Duration::from_secs(3)),
        "partition healed: the service came back {service:?} after the heal (at most 3 s; the \
         consumer and the targets still used b's MAC for the endpoint and SNAT addresses)"
    );
}

/// Polls the endpoint with short HTTP requests (curl, 0.5 s each) until one succeeds; how
/// long after `since` that was (None: not within `limit`).
fn service_back(p: &Pair, since: Instant, limit: Duration) -> Option<Duration> {
    let url = format!("http://{ENDPOINT_IP}/");
    while since.elapsed() < limit {
        let out = p.consumer.exec(
            &["curl", "-s", "-o", "/dev/null", "--max-time", "0.5", &url],
            Duration::from_secs(5),
        );
        if out.status.success() {
            return Some(since.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// One connection of `connect-then-get`: the active node is killed `delay` after the
/// connection's handshake; the GET 3 s later tells whether the flow survived.
fn aged_flow(p: &mut Pair, active: Node, delay: Duration) -> String {
    let heir = active.other();
    let mut child = p.spawn_client(
        &["connect-then-get", ENDPOINT_IP, "80", "3"],
        Duration::from_secs(20),
    );
    let mut out = BufReader::new(child.stdout.take().expect("client stdout"));
    let mut first = String::new();
    let _ = out.read_line(&mut first);
    assert!(
        first.contains("\"connected\": true"),
        "the connection opens: {first:?}\n{}",
        p.logs()
    );
    std::thread::sleep(delay);
    let mark = p.log_mark(heir);
    p.kill(active);
    p.wait_log_since(heir, mark, LOG_ACTIVE, Duration::from_secs(10));
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let _ = child.wait();
    let last = rest.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    let r: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("client answer {rest:?}: {e}\n{}", p.logs()));
    r["answer"].as_str().unwrap_or("?").to_owned()
}

#[test]
fn failover_guarantee_how_old_a_flow_must_be() {
    // The guarantee (README): a flow whose creation the peer acknowledged survives; the
    // sync lag is a few ms. Younger flows may or may not: reported, not asserted.
    let mut p = Pair::start(Options::default());
    let mut active = Node::A;
    let mut results = Vec::new();
    for ms in [0u64, 20, 50, 200] {
        let answer = aged_flow(&mut p, active, Duration::from_millis(ms));
        eprintln!(
            "a flow {ms} ms after its handshake, node {} killed: {answer}",
            active.name()
        );
        results.push((ms, answer));
        // The killed node back as standby for the next round, the pair settled.
        p.restart(active);
        p.wait_standby_with_peer(active);
        std::thread::sleep(Duration::from_secs(2));
        active = active.other();
    }
    eprintln!("flow age at the failover -> outcome: {results:?}");
    for (ms, answer) in &results {
        if *ms >= 200 {
            assert_eq!(
                answer,
                "answered",
                "a flow {ms} ms old survives the failover: {results:?}\n{}",
                p.logs()
            );
        }
    }
}
