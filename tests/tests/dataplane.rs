//! The data plane end to end: real kernel TCP/UDP stacks in two namespaces, privlinkd on
//! the `net_tap` ports between them. Run as root (`make test`); each test builds its own
//! topology with unique names and tears it down even when it fails.

use std::time::Duration;

use privlink_e2e::{
    Options, Topology, CONSUMER_APPLIANCE, CONSUMER_APPLIANCE6, CONSUMER_CLIENT6, CONSUMER_VPC,
    ENDPOINT6, ENDPOINT_IP, SNAT6, SNAT_IP, TARGETS6, UID_CONSUMER, UID_PROVIDER,
};

const T: Duration = Duration::from_secs(60);

/// 200 HTTP requests on separate connections, UDP, ping, and drops of what must not pass.
fn serves_endpoint(workers: u16) {
    let mut t = Topology::start(Options {
        workers,
        ..Options::default()
    });

    let r = t.client(&["http-many", ENDPOINT_IP, "80", "200"], T);
    assert_eq!(r["ok"], 200, "every request succeeds: {r}\n{}", t.log());
    let bodies: Vec<String> = r["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect();
    let t1 = bodies
        .iter()
        .filter(|b| b.starts_with("target=t1 "))
        .count();
    let t2 = bodies
        .iter()
        .filter(|b| b.starts_with("target=t2 "))
        .count();
    assert_eq!(t1 + t2, 200);
    assert!(
        t1 >= 40 && t2 >= 40,
        "both targets get a share: t1={t1} t2={t2}"
    );
    for b in &bodies {
        assert!(
            b.contains(&format!("client={SNAT_IP}:")),
            "targets see only the SNAT address: {b}"
        );
    }
    for i in 0..2 {
        for line in t.target_log(i) {
            assert!(
                line.contains(&format!(" {SNAT_IP}:")),
                "target {i} saw {line}"
            );
        }
    }

    let u = t.client(&["udp", ENDPOINT_IP, "9000", "20"], T);
    assert_eq!(u["ok"], 20, "UDP request/response: {u}");
    for reply in u["replies"].as_array().unwrap() {
        assert!(reply
            .as_str()
            .unwrap()
            .contains(&format!("client={SNAT_IP}:")));
    }
    assert!(t.ping(ENDPOINT_IP, 3), "ping to the endpoint answers");
    assert!(
        t.ping(CONSUMER_APPLIANCE, 2),
        "ping to the appliance answers"
    );

    // A port the service does not listen on, and an IP that is nobody's: dropped, counted.
    let before: Vec<usize> = (0..2).map(|i| t.target_log(i).len()).collect();
    let bad = t.client(&["http-many", ENDPOINT_IP, "81", "3"], T);
    assert_eq!(bad["ok"], 0);
    let mac = t.appliance_mac();
    t.consumer.must(&[
        "ip",
        "neigh",
        "replace",
        "10.1.0.200",
        "lladdr",
        &mac,
        "dev",
        &t.consumer_if,
    ]);
    let unknown = t.client(&["udp", "10.1.0.200", "9000", "3"], T);
    assert_eq!(unknown["ok"], 0);
    let s = t.stats();
    assert!(Topology::drops(&s, "no_listener") >= 3, "{s}");
    assert!(Topology::drops(&s, "unknown_destination") >= 3, "{s}");
    let after: Vec<usize> = (0..2).map(|i| t.target_log(i).len()).collect();
    assert_eq!(before, after, "nothing of it reached a target");
    assert!(
        Topology::counter(&s, "new_flows") >= 201,
        "200 TCP flows and the UDP one: {s}"
    );
    if workers > 1 {
        // With two queues per port, replies land on either worker: some were handed over.
        let per: Vec<u64> = s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["new_flows"].as_u64().unwrap())
            .collect();
        assert_eq!(per.len(), usize::from(workers));
        eprintln!(
            "new flows per worker: {per:?}, handoffs {}",
            Topology::counter(&s, "handoff_out")
        );
    }

    let (clean, totals) = t.stop();
    assert!(clean, "privlinkd stops cleanly on SIGTERM");
    assert!(
        Topology::counter(&totals, "rx_packets") > 0,
        "totals printed at exit: {totals}"
    );
}

#[test]
fn serves_endpoint_with_one_worker() {
    serves_endpoint(1);
}

#[test]
fn serves_endpoint_with_two_workers_and_queues() {
    serves_endpoint(2);
}

#[test]
fn long_lived_connection_survives_target_changes() {
    let mut t = Topology::start(Options {
        workers: 2,
        ..Options::default()
    });
    // Start a keep-alive connection in the background, then change targets under it.
    let script = privlink_e2e::support("client.py");
    let child = t.consumer.spawn(
        &[
            "python3",
            "-u",
            &script,
            "keepalive",
            ENDPOINT_IP,
            "80",
            "6",
        ],
        std::process::Stdio::piped(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    // Add target 3, remove target 1: the connection (wherever it is) keeps working; a
    // removed target's flows drain instead of being cut.
    t.reload(Options {
        workers: 2,
        targets: vec![1, 2],
        ..Options::default()
    });
    std::thread::sleep(Duration::from_millis(1000));
    t.reload(Options {
        workers: 2,
        targets: vec![2],
        ..Options::default()
    });
    let out = child.wait_with_output().expect("keepalive client");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert!(
        r["errors"].as_array().unwrap().is_empty(),
        "{r}\n{}",
        t.log()
    );
    assert_eq!(r["fail"], 0, "{r}");
    assert!(r["ok"].as_u64().unwrap() >= 30, "{r}");
    assert_eq!(
        r["targets"].as_array().unwrap().len(),
        1,
        "one connection, one target: {r}"
    );
    // New connections now go only to target 3.
    let n = t.client(&["http-many", ENDPOINT_IP, "80", "20"], T);
    assert_eq!(n["ok"], 20, "{n}");
    for b in n["bodies"].as_array().unwrap() {
        assert!(b.as_str().unwrap().starts_with("target=t3 "), "{b}");
    }
}

#[test]
fn expired_flow_gets_rst() {
    let t = Topology::start(Options {
        tcp_established: 1.0,
        ..Options::default()
    });
    let r = t.client(&["idle-then-send", ENDPOINT_IP, "80", "3"], T);
    assert!(r["first"].as_str().unwrap().contains("200"), "{r}");
    assert_eq!(
        r["second"], "reset",
        "the idle flow expired and its next segment got a RST: {r}"
    );
    let s = t.stats();
    assert!(Topology::counter(&s, "rst_sent") >= 1, "{s}");
    assert!(Topology::drops(&s, "no_flow") >= 1, "{s}");
}

#[test]
fn malformed_frames_are_counted_and_forwarding_continues() {
    let t = Topology::start(Options::default());
    let mac = t.appliance_mac();
    let own = t.consumer_mac();
    let r = t.client(
        &[
            "raw",
            &t.consumer_if,
            &mac,
            &own,
            privlink_e2e::CONSUMER_CLIENT,
            ENDPOINT_IP,
        ],
        T,
    );
    assert_eq!(r["sent"].as_array().unwrap().len(), 7, "{r}");
    let s = t.stats();
    assert!(
        Topology::drops(&s, "malformed") >= 3,
        "truncated, bad IHL, bad length: {s}"
    );
    assert!(Topology::drops(&s, "bad_checksum") >= 1, "{s}");
    assert!(
        Topology::drops(&s, "fragment_too_small") >= 1,
        "MF on 13 bytes: {s}"
    );
    assert!(Topology::drops(&s, "ttl_exceeded") >= 1, "{s}");
    assert!(
        Topology::counter(&s, "icmp_errors_sent") >= 1,
        "time exceeded went back: {s}"
    );
    assert!(Topology::drops(&s, "unsupported_ethertype") >= 1, "{s}");
    // Still up and forwarding.
    let ok = t.client(&["http-many", ENDPOINT_IP, "80", "10"], T);
    assert_eq!(ok["ok"], 10, "{ok}");
}

/// Path-MTU discovery for the direction that carries most bytes: a "fragmentation needed"
/// that a router on the consumer's side sends to the endpoint about a reply reaches the
/// target translated (from the SNAT address, quoting the target's own packet), and the
/// target's kernel lowers its path MTU towards the SNAT address.
#[test]
fn consumer_side_fragmentation_needed_reaches_the_target() {
    // With two workers the error may land on either queue: it finds the flow's owner.
    for workers in [1, 2] {
        consumer_side_fragmentation_needed(workers);
    }
}

fn consumer_side_fragmentation_needed(workers: u16) {
    let t = Topology::start(Options {
        workers,
        ..Options::default()
    });
    let before = t.provider.must(&["ip", "-4", "route", "get", SNAT_IP]);
    assert!(!before.contains("mtu 1280"), "{before}");
    let r = t.client(&["frag-needed", ENDPOINT_IP, "9000", "1280"], T);
    assert!(
        r["reply"]
            .as_str()
            .unwrap()
            .contains(&format!("client={SNAT_IP}:")),
        "{r}"
    );
    // The target's kernel matched the quote to its socket and cached the new path MTU.
    let mut route = String::new();
    for _ in 0..50 {
        route = t.provider.must(&["ip", "-4", "route", "get", SNAT_IP]);
        if route.contains("mtu 1280") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        route.contains("mtu 1280"),
        "{workers} workers: the target learned the path MTU: {route}\n{}",
        t.log()
    );
    let s = t.stats();
    assert!(Topology::counter(&s, "icmp_errors_translated") >= 1, "{s}");
}

/// Spoofed and martian sources, and IPv4 options that must not pass, on the wire: none of
/// it opens a flow or reaches a target; a harmless option still does.
#[test]
fn martian_sources_and_bad_ip_options_are_dropped_on_the_wire() {
    let t = Topology::start(Options::default());
    let mac = t.appliance_mac();
    let own = t.consumer_mac();
    let before: Vec<usize> = (0..2).map(|i| t.target_log(i).len()).collect();
    let flows_before = Topology::counter(&t.stats(), "new_flows");
    let r = t.client(
        &[
            "spoof",
            &t.consumer_if,
            &mac,
            &own,
            privlink_e2e::CONSUMER_CLIENT,
            ENDPOINT_IP,
            "9000",
        ],
        T,
    );
    assert_eq!(r["martian_udp"], 9, "{r}");
    // The harmless one is answered by a target.
    let mut seen = 0;
    for _ in 0..30 {
        let after: Vec<usize> = (0..2).map(|i| t.target_log(i).len()).collect();
        seen = after.iter().sum::<usize>() - before.iter().sum::<usize>();
        if seen >= 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = t.stats();
    assert_eq!(
        seen, 1,
        "only the datagram with a router-alert option reached a target: {s}"
    );
    assert_eq!(
        Topology::counter(&s, "new_flows"),
        flows_before + 1,
        "no martian opened a flow: {s}"
    );
    assert!(
        Topology::drops(&s, "martian_source") >= 18,
        "9 UDP and 9 SYN: {s}"
    );
    assert!(Topology::drops(&s, "bad_ip_options") >= 2, "{s}");
    assert!(Topology::drops(&s, "source_route") >= 2, "{s}");
    assert_eq!(
        Topology::counter(&s, "rst_sent"),
        0,
        "no RST went to a martian: {s}"
    );
}

/// A SYN flood from spoofed sources and a UDP spray from fresh ports, into a flow table of
/// only 1024 flows: the spray stops at its client's limit, the flood's half-open flows are
/// evicted oldest first, so an established connection keeps working and other clients'
/// new connections succeed while both go on. (Before the limits and the eviction, the
/// table stayed full for `timeouts.udp` / `tcp_syn` and every new connection failed.)
#[test]
fn syn_flood_and_udp_spray_leave_other_clients_working() {
    let t = Topology::start(Options {
        flows_per_worker: 1024,
        // The client limit caps the spray; no endpoint limit, so the flood really fills
        // the table (the endpoint limits' own relief is unit-tested).
        limits: "flows_per_client = 256\nflows_per_endpoint = 0\nhalf_open_per_endpoint = 0"
            .to_owned(),
        ..Options::default()
    });
    const OTHER_CLIENT: &str = "10.1.0.20";
    t.consumer.must(&[
        "ip",
        "addr",
        "add",
        &format!("{OTHER_CLIENT}/24"),
        "dev",
        &t.consumer_if,
    ]);
    let ok = t.client(&["http-many", ENDPOINT_IP, "80", "3", OTHER_CLIENT], T);
    assert_eq!(ok["ok"], 3, "{ok}");
    let mac = t.appliance_mac();
    let own = t.consumer_mac();
    let script = privlink_e2e::support("client.py");
    let spawn = |args: &[&str]| {
        let mut full = vec!["python3", "-u", &script];
        full.extend_from_slice(args);
        t.consumer.spawn(&full, std::process::Stdio::piped())
    };
    let json = |child: std::process::Child| -> serde_json::Value {
        let out = child.wait_with_output().expect("client");
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("client output: {e}: {:?}", out.stdout))
    };
    // An established connection, a request every 100 ms through all of what follows.
    let keepalive = spawn(&["keepalive", ENDPOINT_IP, "80", "9"]);
    std::thread::sleep(Duration::from_millis(500));

    // 1. A UDP spray from one address, a fresh port per datagram: 3000, far more than the
    //    table holds.
    let spray = t.client(
        &[
            "flood",
            &t.consumer_if,
            &mac,
            &own,
            "10.1.0.30",
            ENDPOINT_IP,
            "9000",
            "udp",
            "2000",
            "1.5",
        ],
        T,
    );
    assert!(spray["sent"].as_u64().unwrap() >= 2500, "{spray}");
    let after_spray = t.client(&["http-many", ENDPOINT_IP, "80", "10", OTHER_CLIENT], T);
    assert_eq!(
        after_spray["ok"],
        10,
        "after the spray: {after_spray}\n{}",
        t.log()
    );

    // 2. A SYN flood from 150 spoofed addresses of the consumer subnet, 3000 a second for
    //    5 s (15000 half-open flows for 1024 slots), and new connections meanwhile.
    let flood = spawn(&[
        "flood",
        &t.consumer_if,
        &mac,
        &own,
        "10.1.0.101-250",
        ENDPOINT_IP,
        "80",
        "syn",
        "3000",
        "5",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let during = t.client(&["http-many", ENDPOINT_IP, "80", "20", OTHER_CLIENT], T);
    let during_first = t.client(&["http-many", ENDPOINT_IP, "80", "10"], T);
    let flood = json(flood);
    assert!(flood["sent"].as_u64().unwrap() >= 10_000, "{flood}");
    let s = t.stats();
    assert_eq!(
        during["ok"], 20,
        "new connections of another client during the flood: {during}\n{s}"
    );
    assert_eq!(
        during_first["ok"], 10,
        "and of the first client: {during_first}"
    );
    let k = json(keepalive);
    assert!(k["errors"].as_array().unwrap().is_empty(), "{k}");
    assert_eq!(k["fail"], 0, "{k}");
    assert!(
        k["ok"].as_u64().unwrap() >= 40,
        "the established connection: {k}"
    );

    eprintln!(
        "spray {spray}, flood {flood}: client_flow_limit {}, evicted_half_open {}, \
         flow_table_full {}, active_flows {}",
        Topology::drops(&s, "client_flow_limit"),
        Topology::counter(&s, "evicted_half_open"),
        Topology::drops(&s, "flow_table_full"),
        Topology::counter(&s, "active_flows")
    );
    assert!(
        Topology::drops(&s, "client_flow_limit") >= 2000,
        "spray capped: {s}"
    );
    // All but the ~760 the table holds, less what a loaded machine's tap queue lost.
    assert!(
        Topology::counter(&s, "evicted_half_open") >= flood["sent"].as_u64().unwrap() / 2,
        "flood flows evicted: {s}"
    );
    assert!(
        Topology::counter(&s, "active_flows") <= 1024,
        "table bounded: {s}"
    );
}

/// Fragments (virtual reassembly): 4,000-byte UDP datagrams, which the client's kernel and
/// the target's send as three fragments each, arrive whole and correct both ways; with
/// two workers, fragments RSS spreads meet on one. Fragments written with a raw socket:
/// out of order they still arrive whole; an overlap or a ping of death refuses the
/// datagram, counted.
#[test]
fn fragmented_datagrams_arrive_whole_and_attacks_are_refused() {
    for workers in [1, 2] {
        fragments_through(workers);
    }
}

fn fragments_through(workers: u16) {
    let t = Topology::start(Options {
        workers,
        ..Options::default()
    });
    let r = t.client(&["udp-big", ENDPOINT_IP, "9000", "20", "4000"], T);
    assert_eq!(r["ok"], 20, "every datagram echoed whole: {r}\n{}", t.log());
    let s = t.stats();
    // 20 requests and 20 replies of 3 fragments each.
    assert!(Topology::counter(&s, "fragments") >= 120, "{s}");
    assert_eq!(Topology::counter(&s, "new_flows"), 1, "one UDP flow: {s}");
    for line in t.target_log(0).iter().chain(t.target_log(1).iter()) {
        assert!(line.contains(&format!(" {SNAT_IP}:")), "{line}");
    }

    raw_fragments(&t, privlink_e2e::CONSUMER_CLIENT, ENDPOINT_IP);
    let s = t.stats();
    assert!(
        Topology::drops(&s, "fragment_overlap") >= 3,
        "the overlap, then the rest of its datagram: {s}"
    );
    assert!(Topology::drops(&s, "fragment_too_big") >= 3, "{s}");
    // Still forwarding.
    let ok = t.client(&["udp", ENDPOINT_IP, "9000", "3"], T);
    assert_eq!(ok["ok"], 3, "{ok}");
}

/// The appliance's own IPv6 address in the consumer VPC: the kernel finds it by neighbour
/// discovery and `ping -6` is answered, another address of the prefix is not; IPv4
/// through the endpoint works beside it.
#[test]
fn the_own_ipv6_address_answers_neighbour_discovery_and_ping() {
    let mut t = Topology::start(Options {
        ipv6: true,
        ..Options::default()
    });
    assert!(
        t.ping6(CONSUMER_APPLIANCE6, 3),
        "ping -6 to the appliance answers\n{}",
        t.log()
    );
    let mac = t.appliance_mac();
    let neigh = t
        .consumer
        .must(&["ip", "-6", "neigh", "show", CONSUMER_APPLIANCE6]);
    assert!(
        neigh.contains(&mac),
        "the kernel learned the appliance's MAC by neighbour discovery: {neigh}"
    );
    assert!(
        !t.ping6("fd00:c1::2", 1),
        "no other address of the prefix answers"
    );
    let r = t.client(&["http-many", ENDPOINT_IP, "80", "5"], T);
    assert_eq!(r["ok"], 5, "IPv4 through the endpoint beside it: {r}");
    let s = t.stats();
    assert!(Topology::counter(&s, "nd_advertisements") >= 1, "{s}");
    assert!(Topology::counter(&s, "echo_replies") >= 3, "{s}");
    assert!(
        Topology::drops(&s, "nd_ignored") >= 1,
        "the other address's solicitation: {s}"
    );
    assert_eq!(Topology::drops(&s, "unsupported_ethertype"), 0, "{s}");
    let (clean, _) = t.stop();
    assert!(clean, "privlinkd stops cleanly on SIGTERM");
}

/// The demo service made to accept IPv6 endpoints, and a dual-stack endpoint created to
/// it: (its id, its IPv6 address, its IPv4 address). Before the service accepts them, a
/// dual-stack endpoint is refused.
fn dual_stack_endpoint(t: &Topology) -> (String, String, String) {
    let svc = "vpce-svc-0d0000000000000d1";
    let name = format!("com.privlink.vpce.local.{svc}");
    let create = [
        "create-vpc-endpoint",
        "--vpc-id",
        CONSUMER_VPC,
        "--service-name",
        &name,
        "--ip-address-type",
        "dualstack",
    ];
    let (ok, _, err) = t.ctl(UID_CONSUMER, &create);
    assert!(
        !ok && err.contains("does not accept dualstack endpoints"),
        "the service accepts IPv4 endpoints only: {err}"
    );
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "modify-vpc-endpoint-service-configuration",
            "--service-id",
            svc,
            "--add-supported-ip-address-types",
            "ipv6",
        ],
    );
    let ep = t.ctl_ok(UID_CONSUMER, &create)["VpcEndpoint"].clone();
    assert_eq!(ep["IpAddressType"], "dualstack", "{ep}");
    let s = |k: &str| {
        ep[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k}: {ep}"))
            .to_owned()
    };
    (s("VpcEndpointId"), s("Ipv6Address"), s("IpAddress"))
}

/// A dual-stack endpoint created at run time: its IPv6 address comes from the VPC's
/// prefix, answers neighbour discovery and `ping -6` (the kernel's neighbour entry holds
/// the appliance's MAC), and stops answering once the endpoint is deleted.
#[test]
fn a_dual_stack_endpoint_answers_ping6_at_its_allocated_address() {
    let mut t = Topology::start(Options {
        ipv6: true,
        ..Options::default()
    });
    let (id, ip6, v4) = dual_stack_endpoint(&t);
    assert_eq!(ip6, "fd00:c1::2", "the lowest free host of the prefix");
    assert!(t.ping6(&ip6, 3), "ping -6 to the endpoint\n{}", t.log());
    let neigh = t.consumer.must(&["ip", "-6", "neigh", "show", &ip6]);
    assert!(
        neigh.contains(&t.appliance_mac()),
        "neighbour discovery resolved the endpoint to the appliance: {neigh}"
    );
    // IPv4 still reaches its IPv4 address.
    let r = t.client(&["http-many", &v4, "80", "3"], T);
    assert_eq!(r["ok"], 3, "IPv4 through the dual-stack endpoint: {r}");
    t.ctl_ok(
        UID_CONSUMER,
        &["delete-vpc-endpoints", "--vpc-endpoint-ids", &id],
    );
    let _ = t.consumer.exec(
        &["ip", "-6", "neigh", "flush", "dev", &t.consumer_if],
        Duration::from_secs(5),
    );
    assert!(!t.ping6(&ip6, 2), "a deleted endpoint's address is gone");
    let s = t.stats();
    assert!(Topology::counter(&s, "nd_advertisements") >= 2, "{s}");
    let (clean, _) = t.stop();
    assert!(clean, "privlinkd stops cleanly on SIGTERM");
}

/// An IPv6 endpoint (`--ip-address-type ipv6`): an IPv6 address of the VPC's prefix and
/// no IPv4 one; `curl -6` and UDP through it reach the IPv4-only service, and its
/// description has no `IpAddress`.
#[test]
fn an_ipv6_endpoint_without_an_ipv4_address_serves_ipv6_consumers() {
    let mut t = Topology::start(Options {
        ipv6: true,
        ..Options::default()
    });
    // The service accepts IPv6 endpoints (the helper makes it so, and a dual-stack one).
    let (_, dual6, _) = dual_stack_endpoint(&t);
    let name = "com.privlink.vpce.local.vpce-svc-0d0000000000000d1";
    let create = [
        "create-vpc-endpoint",
        "--vpc-id",
        CONSUMER_VPC,
        "--service-name",
        name,
        "--ip-address-type",
        "ipv6",
    ];
    let ep = t.ctl_ok(UID_CONSUMER, &create)["VpcEndpoint"].clone();
    assert_eq!(ep["IpAddressType"], "ipv6", "{ep}");
    assert!(ep.get("IpAddress").is_none(), "no IPv4 address: {ep}");
    let ip6 = ep["Ipv6Address"]
        .as_str()
        .expect("an IPv6 address")
        .to_owned();
    assert_ne!(ip6, dual6);
    let url = format!("http://[{ip6}]/");
    let curl = t.consumer.exec(
        &["curl", "-6", "-sS", "-m", "10", &url],
        Duration::from_secs(15),
    );
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success() && body.contains(&format!("client={SNAT_IP}:")),
        "curl -6 through the IPv6 endpoint: {body} {}\n{}",
        String::from_utf8_lossy(&curl.stderr),
        t.log()
    );
    let r = t.client(&["udp", &ip6, "9000", "5"], T);
    assert_eq!(r["ok"], 5, "UDP through the IPv6 endpoint: {r}");
    assert!(t.ping6(&ip6, 2), "ping -6 to the IPv6 endpoint");
    let s = t.stats();
    assert_eq!(Topology::drops(&s, "ipv6_flow_collision"), 0, "{s}");
    let (clean, _) = t.stop();
    assert!(clean, "privlinkd stops cleanly on SIGTERM");
}

/// An IPv6 consumer outside the attachment's prefix, beyond a router: its requests come
/// through the router, and the replies go back to the router, the attachment's
/// `gateway6` (a link-local address, as routers have), found by neighbour discovery.
/// Without a `gateway6` there is no next hop for them.
#[test]
fn an_ipv6_consumer_off_the_prefix_is_answered_through_gateway6() {
    for gateway6 in [None, Some("fe80::1")] {
        let t = Topology::start(Options {
            ipv6: true,
            dual_stack: true,
            narrow: [Some(1500), None],
            gateway6,
            ..Options::default()
        });
        t.far_consumer6("fd00:c9::10", "fd00:c9::/64", "fe80::1");
        t.proxy_ndp(privlink_e2e::ENDPOINT6);
        let url = format!("http://[{}]/", privlink_e2e::ENDPOINT6);
        let curl = t.consumer.exec(
            &[
                "curl",
                "-6",
                "-sS",
                "-m",
                "5",
                "--interface",
                "fd00:c9::10",
                &url,
            ],
            Duration::from_secs(10),
        );
        let body = String::from_utf8_lossy(&curl.stdout);
        let answered = curl.status.success() && body.contains(&format!("client={SNAT_IP}:"));
        let s = t.stats();
        if gateway6.is_none() {
            assert!(!answered, "answered without a gateway6: {body}");
            assert!(Topology::drops(&s, "neighbour_unresolved") >= 1, "{s}");
            continue;
        }
        assert!(
            answered,
            "curl -6 from fd00:c9::10: {body} {}\n{}\n{s}",
            String::from_utf8_lossy(&curl.stderr),
            t.log(),
        );
        // The router asked for the endpoint from its link-local address: learned then.
        assert!(Topology::counter(&s, "nd_learned") >= 1, "{s}");
        assert_eq!(Topology::drops(&s, "neighbour_unresolved"), 0, "{s}");
    }
}

/// IPv6 consumers of an IPv4-only service: `curl -6` and HTTP over IPv6 to the
/// dual-stack endpoint reach the IPv4 targets, which see the IPv4 SNAT address; UDP too;
/// IPv4 to the same endpoint beside it; the consumer's flows list its IPv6 address.
#[test]
fn ipv6_consumers_reach_an_ipv4_service_through_a_dual_stack_endpoint() {
    let mut t = Topology::start(Options {
        ipv6: true,
        ..Options::default()
    });
    let (id, ip6, v4) = dual_stack_endpoint(&t);
    let url = format!("http://[{ip6}]/");
    let curl = t.consumer.exec(
        &["curl", "-6", "-sS", "-m", "10", &url],
        Duration::from_secs(15),
    );
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success()
            && body.starts_with("target=t")
            && body.contains(&format!("client={SNAT_IP}:")),
        "curl -6 through the endpoint: {body} {}\n{}\nstats: {}",
        String::from_utf8_lossy(&curl.stderr),
        t.log(),
        t.stats()
    );
    let r = t.client(&["http-many", &ip6, "80", "20"], T);
    assert_eq!(r["ok"], 20, "HTTP over IPv6: {r}");
    let r = t.client(&["udp", &ip6, "9000", "5"], T);
    assert_eq!(r["ok"], 5, "UDP over IPv6: {r}");
    // 4,000-byte datagrams: IPv6 fragments become IPv4 fragments of one datagram, and
    // the target's IPv4 fragments IPv6 ones, cut again where 28 bytes more do not fit.
    let r = t.client(&["udp-big", &ip6, "9000", "10", "4000"], T);
    assert_eq!(
        r["ok"], 10,
        "fragmented UDP over IPv6, whole both ways: {r}"
    );
    let s = t.stats();
    assert!(Topology::counter(&s, "fragments") >= 40, "{s}");
    assert!(Topology::counter(&s, "fragments_made") >= 10, "{s}");
    let r = t.client(&["http-many", &v4, "80", "3"], T);
    assert_eq!(r["ok"], 3, "IPv4 beside it: {r}");
    let flows = t.ctl_ok(
        UID_CONSUMER,
        &["flows", "--vpc-endpoint-id", &id, "--max-results", "50"],
    );
    let listed = flows["Flows"].as_array().expect("flows");
    assert!(
        listed.iter().any(|f| f["Consumer"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("[{}]:", CONSUMER_CLIENT6)))
            && f["Endpoint"] == format!("[{ip6}]:80").as_str()),
        "an IPv6 consumer's flow, as the consumer sees it: {flows}"
    );
    let s = t.stats();
    // (The kernel's own IPv6 — router solicitations, multicast listener reports — is
    // `ipv6_not_served`.)
    assert_eq!(Topology::drops(&s, "ipv6_not_translated"), 0, "{s}");
    assert_eq!(Topology::drops(&s, "ipv6_flow_collision"), 0, "{s}");
    // curl, 20 HTTP connections, one UDP socket, 3 IPv4 connections.
    assert!(Topology::counter(&s, "new_flows") >= 25, "{s}");
    // Replies went to the consumer's next hop found by neighbour discovery (learned from
    // its solicitation of the endpoint, or from its answer to ours), never unresolved.
    assert!(Topology::counter(&s, "nd_learned") >= 1, "{s}");
    assert_eq!(Topology::drops(&s, "neighbour_unresolved"), 0, "{s}");

    // A security group: its IPv4 rule holds no IPv6 consumer, an IPv6 rule does.
    let sg = t.ctl_ok(
        UID_CONSUMER,
        &[
            "create-security-group",
            "--vpc-id",
            CONSUMER_VPC,
            "--group-name",
            "web6",
            "--description",
            "http",
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_owned();
    let allow = |cidr: &str| {
        let args = [
            "authorize-security-group-ingress",
            "--group-id",
            &sg,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            cidr,
        ];
        t.ctl_ok(UID_CONSUMER, &args);
    };
    allow("10.1.0.0/24");
    let add = [
        "modify-vpc-endpoint",
        "--vpc-endpoint-id",
        &id,
        "--add-security-group-ids",
        &sg,
    ];
    t.ctl_ok(UID_CONSUMER, &add);
    let r = t.client(&["http-many", &ip6, "80", "2"], T);
    assert_eq!(r["ok"], 0, "no IPv6 rule yet: {r}");
    let r = t.client(&["http-many", &v4, "80", "2"], T);
    assert_eq!(r["ok"], 2, "the IPv4 rule: {r}");
    allow("fd00:c1::/64");
    let described = t.ctl_ok(
        UID_CONSUMER,
        &["describe-security-groups", "--group-ids", &sg],
    );
    assert!(
        described
            .to_string()
            .contains(r#""CidrIpv6":"fd00:c1::/64""#),
        "{described}"
    );
    let r = t.client(&["http-many", &ip6, "80", "3"], T);
    assert_eq!(r["ok"], 3, "admitted by fd00:c1::/64: {r}");
    assert!(Topology::drops(&t.stats(), "security_group") >= 2);
    let (clean, _) = t.stop();
    assert!(clean, "privlinkd stops cleanly on SIGTERM");
}

/// `client.py frag-raw` from `src` to `dst` in its three modes: the datagram sent last
/// fragment first arrives whole (its reply too, after waiting for its first fragment), an
/// overlapping one and one reaching past 65,535 bytes get no reply.
fn raw_fragments(t: &Topology, src: &str, dst: &str) {
    let mac = t.appliance_mac();
    let own = t.consumer_mac();
    let raw = |mode: &str| {
        let args = [
            "frag-raw",
            &t.consumer_if,
            &mac,
            &own,
            src,
            dst,
            "9000",
            mode,
        ];
        t.client(&args, T)
    };
    let r = raw("reversed");
    assert_eq!(
        r["whole"],
        true,
        "last fragment first, still whole: {r}\n{}",
        t.log()
    );
    let s = t.stats();
    assert!(Topology::counter(&s, "fragments_held") >= 2, "{s}");
    let r = raw("overlap");
    assert_eq!(
        r["reply_len"], 0,
        "no reply to an overlapping datagram: {r}"
    );
    let r = raw("death");
    assert_eq!(r["reply_len"], 0, "{r}");
}

/// Raw IPv6 fragments to a dual-stack endpoint behave as IPv4 ones: the last fragment
/// first still makes a whole datagram at the target (and its reply comes back whole), an
/// overlapping fragment or one reaching past 65,535 bytes refuses the datagram. With two
/// workers too, where RSS spreads the fragments of a datagram (and the kernel's, of
/// 4,000-byte datagrams both ways) over both queues: they meet on one.
#[test]
fn raw_ipv6_fragments_out_of_order_overlapping_and_oversized_behave_as_specified() {
    for workers in [1, 2] {
        let t = Topology::start(Options {
            ipv6: true,
            workers,
            ..Options::default()
        });
        let (_, ip6, _) = dual_stack_endpoint(&t);
        raw_fragments(&t, CONSUMER_CLIENT6, &ip6);
        let r = t.client(&["udp-big", &ip6, "9000", "10", "4000"], T);
        assert_eq!(
            r["ok"], 10,
            "{workers} workers: fragmented UDP over IPv6: {r}"
        );
        let s = t.stats();
        assert!(
            Topology::drops(&s, "fragment_overlap") >= 1,
            "{workers} workers: {s}"
        );
        assert!(
            Topology::drops(&s, "fragment_too_big") >= 1,
            "{workers} workers: {s}"
        );
        assert_eq!(
            Topology::drops(&s, "fragment_timeout"),
            0,
            "{workers} workers: {s}"
        );
    }
}

/// Path MTU across the appliance: a router namespace with a 1300-byte link in front of the
/// consumer's client, then in front of the targets. The hosts advertise the MSS of a
/// 1500-byte link, so full-size segments meet the narrow link in one direction, and only
/// the router's ICMP errors, translated by the appliance for the flow's other side, let
/// the transfer through. Over IPv4, and over IPv6 to the same IPv4-only service through a
/// dual-stack endpoint (ICMPv6 packet too big ↔ ICMPv4 fragmentation needed), both ways.
#[test]
fn bulk_transfers_find_a_narrow_link_on_either_side_over_both_families() {
    for side in [0, 1] {
        narrow_link(side);
    }
}

/// Path MTU through NAT66: the same 1300-byte link in front of the consumer's client, then
/// in front of the IPv6 targets; the router's packet too big about a NAT66 packet reaches
/// the other side's host as its own error (relayed in ICMPv6, quoting that host's
/// packet), so the transfer completes both ways.
#[test]
fn bulk_transfers_through_nat66_find_a_narrow_link_on_either_side() {
    for side in [0, 1] {
        let mut narrow = [None, None];
        narrow[side] = Some(1300);
        let t = Topology::start(Options {
            ipv6: true,
            dual_stack: true,
            provider6: true,
            narrow,
            ..Options::default()
        });
        t.proxy_ndp(ENDPOINT6);
        let where_ = ["the consumer's", "the provider's"][side];
        let r = t.client(
            &["bulk", ENDPOINT6, "443", "300000"],
            Duration::from_secs(75),
        );
        assert_eq!(
            (r["down"].as_bool(), r["up"].as_bool()),
            (Some(true), Some(true)),
            "NAT66, a narrow link on {where_} side: both ways whole: {r}\n{}",
            t.log()
        );
        let s = t.stats();
        assert!(
            Topology::counter(&s, "icmp_errors_translated") > 0,
            "the router's errors crossed the appliance ({where_} side): {s}"
        );
    }
}

fn narrow_link(side: usize) {
    let mut narrow = [None, None];
    narrow[side] = Some(1300);
    let t = Topology::start(Options {
        ipv6: true,
        narrow,
        ..Options::default()
    });
    let (_, ip6, _) = dual_stack_endpoint(&t);
    t.proxy_ndp(&ip6);
    let where_ = ["the consumer's", "the provider's"][side];
    for host in [ENDPOINT_IP, ip6.as_str()] {
        let before = Topology::counter(&t.stats(), "icmp_errors_translated");
        let r = t.client(&["bulk", host, "80", "300000"], Duration::from_secs(75));
        assert_eq!(
            (r["down"].as_bool(), r["up"].as_bool()),
            (Some(true), Some(true)),
            "a narrow link on {where_} side, to {host}: both ways whole: {r}\n{}",
            t.log()
        );
        let s = t.stats();
        assert!(
            Topology::counter(&s, "icmp_errors_translated") > before,
            "the router's errors crossed the appliance ({where_} side, {host}): {s}"
        );
    }
}

/// NAT66: IPv6 consumers reach IPv6 targets through the dual-stack endpoint, `curl -6`
/// and UDP, and the targets see the IPv6 SNAT address; neighbour entries appear on both
/// sides (the client's for the endpoint, the targets' for the SNAT address); the IPv6
/// targets are health-checked over IPv6 and turn healthy; the provider's flow listing
/// names them; an IPv4 consumer does not reach them (counted).
#[test]
fn ipv6_consumers_reach_ipv6_targets_that_see_the_ipv6_snat_address() {
    let t = Topology::start(Options {
        ipv6: true,
        dual_stack: true,
        provider6: true,
        ..Options::default()
    });
    let url = format!("http://[{ENDPOINT6}]:443/");
    let curl = t.consumer.exec(
        &["curl", "-6", "-sS", "-m", "10", &url],
        Duration::from_secs(15),
    );
    let body = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success()
            && body.starts_with("target=t")
            && body.contains(&format!("client={SNAT6}:")),
        "curl -6 to IPv6 targets: {body} {}\n{}\nstats: {}",
        String::from_utf8_lossy(&curl.stderr),
        t.log(),
        t.stats()
    );
    let r = t.client(&["http-many", ENDPOINT6, "443", "20"], T);
    assert_eq!(r["ok"], 20, "HTTP over NAT66: {r}");
    let r = t.client(&["udp", ENDPOINT6, "9443", "5"], T);
    assert_eq!(r["ok"], 5, "UDP over NAT66: {r}");
    assert!(
        r["replies"].as_array().is_some_and(|a| a.iter().all(|x| x
            .as_str()
            .is_some_and(|x| x.contains(&format!("client={SNAT6}:"))))),
        "the targets saw the IPv6 SNAT address: {r}"
    );

    // 4,000-byte datagrams: IPv6 fragments both ways, each datagram whole at its end.
    let r = t.client(&["udp-big", ENDPOINT6, "9443", "10", "4000"], T);
    assert_eq!(
        r["ok"], 10,
        "fragmented UDP over NAT66, whole both ways: {r}"
    );
    assert!(
        Topology::counter(&t.stats(), "fragments") >= 60,
        "{}",
        t.stats()
    );

    // Neighbour cache entries on both sides.
    let neigh = |ns: &privlink_e2e::Netns| {
        let out = ns.exec(&["ip", "-6", "neigh", "show"], Duration::from_secs(5));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let c = neigh(&t.consumer);
    assert!(
        c.lines()
            .any(|l| l.starts_with(&format!("{ENDPOINT6} ")) && l.contains("lladdr")),
        "the client knows the endpoint's MAC: {c}"
    );
    let p = neigh(&t.provider);
    assert!(
        p.lines()
            .any(|l| l.starts_with(&format!("{SNAT6} ")) && l.contains("lladdr")),
        "the targets know the SNAT address's MAC: {p}"
    );

    // Checked over IPv6: both turn healthy (5 s apart, 2 in a row).
    let mut health = serde_json::Value::Null;
    let mut healthy = false;
    for _ in 0..60 {
        health = t.ctl_ok(
            UID_PROVIDER,
            &[
                "describe-target-health",
                "--service-id",
                "vpce-svc-0d0000000000000d1",
            ],
        );
        let of = |ip: &str| {
            health["TargetHealthDescriptions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["Target"]["Id"] == ip && d["Listener"]["Port"] == 443)
                .all(|d| d["TargetHealth"]["State"] == "healthy")
        };
        if TARGETS6.iter().all(|ip| of(ip)) {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(healthy, "IPv6 targets healthy: {health}");
    let s = t.stats();
    assert!(Topology::counter(&s, "probe_replies") >= 4, "{s}");

    let flows = t.ctl_ok(UID_PROVIDER, &["flows", "--max-results", "100"]);
    let listed = flows["Flows"].as_array().expect("flows");
    assert!(
        listed.iter().any(|f| f["Snat"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("[{SNAT6}]:")))
            && TARGETS6.iter().any(|t| f["Target"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("[{t}]:"))))),
        "a NAT66 flow as the provider sees it: {flows}"
    );

    let r = t.client(&["http-many", ENDPOINT_IP, "443", "1"], T);
    assert_eq!(r["ok"], 0, "IPv4 does not reach IPv6 targets: {r}");
    let s = t.stats();
    assert!(Topology::drops(&s, "ipv6_targets_only") >= 1, "{s}");
    assert_eq!(Topology::drops(&s, "ipv6_flow_collision"), 0, "{s}");
    assert_eq!(Topology::drops(&s, "neighbour_unresolved"), 0, "{s}");
}

/// NAT66 through two workers: RSS spreads the flows and the targets' fragments by their
/// own hashes, and every datagram still arrives whole both ways (its fragments kept on
/// one worker, replies handed to the SNAT port's owner).
#[test]
fn nat66_through_two_workers_keeps_fragmented_datagrams_whole() {
    let t = Topology::start(Options {
        workers: 2,
        ipv6: true,
        dual_stack: true,
        provider6: true,
        ..Options::default()
    });
    let r = t.client(&["http-many", ENDPOINT6, "443", "20"], T);
    assert_eq!(r["ok"], 20, "HTTP over NAT66, two workers: {r}");
    let r = t.client(&["udp-big", ENDPOINT6, "9443", "10", "4000"], T);
    assert_eq!(r["ok"], 10, "fragmented UDP over NAT66, two workers: {r}");
    let s = t.stats();
    assert_eq!(Topology::drops(&s, "fragment_timeout"), 0, "{s}");
    assert_eq!(Topology::drops(&s, "ipv6_flow_collision"), 0, "{s}");
}
