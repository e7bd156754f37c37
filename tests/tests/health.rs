//! Target health checks end to end: probes from the appliance's own provider-side address
//! through the DPDK ports to real target servers, states in `describe-target-health`, new
//! connections following health, fail open, and what happens to established connections.

use std::time::{Duration, Instant};

use privlink_e2e::{Options, Topology, Value, ENDPOINT_IP, TARGETS, UID_PROVIDER};

const SERVICE: &str = "vpce-svc-0d0000000000000d1";
/// The shortest settings the cloud allows but thresholds, so a state changes within
/// 2 × 5 + 2 s.
const FAST_CHECKS: &str = "health_check_interval_seconds = 5\nhealth_check_timeout_seconds = 2\nhealthy_threshold_count = 2\nunhealthy_threshold_count = 2\n";

fn topology(extra: &str) -> Topology {
    Topology::start(Options {
        listener_extra: format!("{FAST_CHECKS}{extra}"),
        ..Options::default()
    })
}

/// Target `ip`'s description on the tcp/80 listener.
fn health(t: &Topology, ip: &str) -> Value {
    let v = t.ctl_ok(
        UID_PROVIDER,
        &["describe-target-health", "--service-id", SERVICE],
    );
    v["TargetHealthDescriptions"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|d| d["Target"]["Id"] == ip && d["Listener"]["Port"] == 80)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no description of {ip}: {v}"))
}

/// Waits until target `ip` is in `state`; returns its description and how long it took.
fn wait_state(t: &Topology, ip: &str, state: &str, limit: Duration) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let d = health(t, ip);
        if d["TargetHealth"]["State"] == state {
            return (d, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "{ip} not {state} within {limit:?}: {d}\n{}",
            t.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `n` new connections: (successes, the targets that answered).
fn requests(t: &Topology, n: u32) -> (u64, Vec<String>) {
    let r = t.client(
        &["http-many", ENDPOINT_IP, "80", &n.to_string()],
        Duration::from_secs(60),
    );
    let mut targets: Vec<String> = r["bodies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str()?.split_whitespace().next().map(str::to_owned))
        .collect();
    targets.sort();
    targets.dedup();
    (r["ok"].as_u64().unwrap_or(0), targets)
}

#[test]
fn a_stopped_target_is_taken_out_of_service_and_comes_back() {
    let mut t = topology("");
    let limit = Duration::from_secs(20);
    for ip in &TARGETS[..2] {
        let (d, _) = wait_state(&t, ip, "healthy", limit);
        assert!(d["TargetHealth"]["LastChange"].is_string(), "{d}");
    }

    // The provider hears of the change; another account does not.
    let events = t.subscribe(UID_PROVIDER, 1);
    let consumer = t.subscribe(privlink_e2e::UID_CONSUMER, 1);
    t.stop_server(0);
    // Unhealthy within UnhealthyThresholdCount × interval + timeout (+1 s for polling).
    let (d, took) = wait_state(&t, TARGETS[0], "unhealthy", Duration::from_secs(13));
    eprintln!(
        "unhealthy {:.1} s after the server stopped",
        took.as_secs_f64()
    );
    assert_eq!(
        d["TargetHealth"]["Reason"], "Target.FailedHealthChecks",
        "{d}"
    );
    assert!(d["TargetHealth"]["Description"].is_string(), "{d}");
    let got = privlink_e2e::events_of(events, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["Type"], "TargetHealth", "{got:?}");
    assert_eq!(got[0]["Target"], format!("{}:8080", TARGETS[0]), "{got:?}");
    assert_eq!(got[0]["State"], "unhealthy", "{got:?}");
    assert_eq!(got[0]["Reason"], "Target.FailedHealthChecks", "{got:?}");
    let theirs = privlink_e2e::events_of(consumer, Duration::from_millis(200));
    assert!(theirs.is_empty(), "the consumer saw {theirs:?}");
    let (ok, answered) = requests(&t, 100);
    assert_eq!(ok, 100, "every request succeeds on the healthy target");
    assert_eq!(answered, ["target=t2"]);

    t.start_server(0);
    let (_, took) = wait_state(&t, TARGETS[0], "healthy", Duration::from_secs(12));
    eprintln!(
        "healthy again {:.1} s after the server started",
        took.as_secs_f64()
    );
    let (ok, answered) = requests(&t, 40);
    assert_eq!(ok, 40);
    assert_eq!(answered, ["target=t1", "target=t2"], "back in service");
    let s = t.stats();
    assert!(Topology::counter(&s, "probes_sent") > 0, "{s}");
    assert!(Topology::counter(&s, "probe_replies") > 0, "{s}");
}

#[test]
fn an_http_check_answered_500_is_a_mismatch_and_every_target_down_fails_open() {
    let t = topology("health_check_protocol = \"http\"\nhealth_check_path = \"/status/500\"\n");
    for ip in &TARGETS[..2] {
        let (d, _) = wait_state(&t, ip, "unhealthy", Duration::from_secs(15));
        assert_eq!(
            d["TargetHealth"]["Reason"], "Target.ResponseCodeMismatch",
            "{d}"
        );
        let desc = d["TargetHealth"]["Description"].as_str().unwrap_or("");
        assert!(desc.contains("500"), "{d}");
    }
    // Every target unhealthy: requests go to all of them, and succeed.
    let (ok, answered) = requests(&t, 40);
    assert_eq!(ok, 40);
    assert_eq!(answered, ["target=t1", "target=t2"], "fail open");
}

/// A keep-alive connection runs while its target turns unhealthy (its /health answers
/// 503); returns the client's report.
fn keepalive_through_unhealthy(t: &Topology) -> Value {
    for ip in &TARGETS[..2] {
        wait_state(t, ip, "healthy", Duration::from_secs(20));
    }
    let script = privlink_e2e::support("client.py");
    let child = t.consumer.spawn(
        &[
            "python3",
            "-u",
            &script,
            "keepalive",
            ENDPOINT_IP,
            "80",
            "22",
        ],
        std::process::Stdio::piped(),
    );
    // Which target the connection went to: the one whose log has its requests.
    let start = Instant::now();
    let used = loop {
        if let Some(i) = (0..2).find(|&i| !t.target_log(i).is_empty()) {
            break i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no request arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    std::fs::write(t.health_file(used), "503").expect("health file");
    wait_state(t, TARGETS[used], "unhealthy", Duration::from_secs(13));
    let out = child.wait_with_output().expect("keepalive client");
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

#[test]
fn an_established_connection_to_a_target_turning_unhealthy_is_reset() {
    let t = topology("health_check_protocol = \"http\"\nhealth_check_path = \"/health\"\n");
    let r = keepalive_through_unhealthy(&t);
    assert!(r["ok"].as_u64().unwrap_or(0) >= 3, "it worked before: {r}");
    assert!(
        !r["errors"].as_array().is_none_or(Vec::is_empty),
        "the connection was reset: {r}"
    );
    assert!(Topology::drops(&t.stats(), "flow_ended") >= 1);
}

#[test]
fn connection_termination_off_keeps_it() {
    let t = topology(
        "health_check_protocol = \"http\"\nhealth_check_path = \"/health\"\nconnection_termination_on_unhealthy = false\n",
    );
    let r = keepalive_through_unhealthy(&t);
    assert_eq!(r["errors"], serde_json::json!([]), "kept: {r}");
    assert!(r["ok"].as_u64().unwrap_or(0) >= 150, "ran to its end: {r}");
    // New connections avoid it all the same.
    let (ok, answered) = requests(&t, 20);
    assert_eq!(ok, 20);
    assert_eq!(answered.len(), 1, "{answered:?}");
}
