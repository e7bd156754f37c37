//! Worker supervision end to end: a worker that panics, exits or stalls is found by the
//! main thread, named with its lcore and last counters, counted, and privlinkd exits
//! non-zero instead of black-holing that worker's queues. The failures are made with
//! privlinkd's test hook (`PRIVLINKD_TEST_FAULT`).

use std::time::Duration;

use privlink_e2e::{Options, Topology, ENDPOINT_IP};

fn with_fault(fault: &str) -> Topology {
    Topology::start(Options {
        workers: 2,
        env: vec![("PRIVLINKD_TEST_FAULT".into(), fault.into())],
        ..Options::default()
    })
}

/// Traffic first (so the counters say something), then waits for the exit.
fn fails_loudly(t: &mut Topology, needle: &str, within: Duration) {
    let u = t.client(&["udp", ENDPOINT_IP, "9000", "3"], Duration::from_secs(20));
    assert_eq!(u["ok"], 3, "forwards before the fault: {u}\n{}", t.log());
    let status = t
        .wait_exit(within)
        .unwrap_or_else(|| panic!("privlinkd still running:\n{}", t.log()));
    assert!(!status.success(), "exits non-zero: {status}\n{}", t.log());
    let log = t.log();
    assert!(
        log.contains(needle),
        "log names the worker and lcore ({needle:?}):\n{log}"
    );
    assert!(log.contains("Last counters"), "{log}");
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&t.stats_path).expect("stats file"))
            .expect("stats JSON");
    assert_eq!(
        Topology::counter(&stats, "worker_failures"),
        1,
        "counted in the final stats: {stats}"
    );
}

#[test]
fn a_stalled_worker_is_found_and_privlinkd_exits_with_an_error() {
    // Worker 1 runs on lcore 2; default stall_timeout_ms = 1000.
    let mut t = with_fault("worker=1,kind=stall,after_ms=2500");
    fails_loudly(
        &mut t,
        "worker 1 on lcore 2 stalled: no progress for 1.",
        Duration::from_secs(15),
    );
}

#[test]
fn a_panicking_worker_is_found_and_privlinkd_exits_with_an_error() {
    let mut t = with_fault("worker=0,kind=panic,after_ms=2500");
    fails_loudly(
        &mut t,
        "worker 0 on lcore 1 panicked: test fault: worker 0 panics",
        Duration::from_secs(15),
    );
}

#[test]
fn a_worker_that_exits_is_found_and_privlinkd_exits_with_an_error() {
    let mut t = with_fault("worker=1,kind=exit,after_ms=2500");
    fails_loudly(
        &mut t,
        "worker 1 on lcore 2 exited without being told to stop",
        Duration::from_secs(15),
    );
}

#[test]
fn stall_timeout_is_a_setting() {
    // A longer timeout: the same stall is not reported for 6 s.
    let mut t = Topology::start(Options {
        workers: 1,
        env: vec![(
            "PRIVLINKD_TEST_FAULT".into(),
            "worker=0,kind=stall,after_ms=500".into(),
        )],
        workers_extra: "stall_timeout_ms = 6000".into(),
        ..Options::default()
    });
    assert!(t.wait_exit(Duration::from_secs(2)).is_none(), "{}", t.log());
    let status = t
        .wait_exit(Duration::from_secs(10))
        .expect("exits after 6 s");
    assert!(!status.success());
    assert!(
        t.log()
            .contains("worker 0 on lcore 1 stalled: no progress for 6."),
        "{}",
        t.log()
    );
}
