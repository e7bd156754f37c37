//! Reply steering end to end, two workers on net_tap: each port names its mode at start,
//! replies reach their consumers whichever mode it is, and where the provider port says
//! `rte_flow`, no reply crossed a handoff ring.
//!
//! net_tap takes rules through tc flower, which cannot mask a port (and needs the `multiq`
//! qdisc, which some kernels lack): on every machine seen so far it stays on the ring, and
//! this test then checks only the log and the fallback. With a device that takes the rules,
//! the handoff counters must stay at 0: any reply on a wrong queue fails it.

use std::time::Duration;

use privlink_e2e::{Options, Topology, ENDPOINT_IP};

const T: Duration = Duration::from_secs(60);

#[test]
fn replies_are_steered_to_their_owner_or_cross_the_ring_as_each_port_says() {
    let mut t = Topology::start(Options {
        workers: 2,
        ..Options::default()
    });
    let log = t.log();
    let mode_of = |ifname: &str| -> String {
        let needle = format!("port net_tap_{ifname}: reply steering: ");
        let line = log
            .lines()
            .find(|l| l.contains(&needle))
            .unwrap_or_else(|| panic!("no {needle:?} at start:\n{log}"));
        let mode = line[line.find(&needle).unwrap() + needle.len()..].to_string();
        assert!(
            mode.starts_with("rte_flow (2 workers; ") || mode.starts_with("ring ("),
            "{line}"
        );
        mode
    };
    let _consumer = mode_of(&t.consumer_if);
    let provider = mode_of(&t.provider_if);

    // Many flows, so that RSS would put some replies on the other worker's queue.
    let r = t.client(&["http-many", ENDPOINT_IP, "80", "32"], T);
    assert_eq!(r["ok"], 32, "{r}\n{}", t.log());
    for _ in 0..8 {
        let u = t.client(&["udp", ENDPOINT_IP, "9000", "2"], T);
        assert_eq!(u["ok"], 2, "{u}\n{}", t.log());
    }
    let stats = t.stats();
    let (handed_in, handed_out) = (
        Topology::counter(&stats, "handoff_in"),
        Topology::counter(&stats, "handoff_out"),
    );
    if provider.starts_with("rte_flow") {
        assert_eq!(
            (handed_in, handed_out),
            (0, 0),
            "with rte_flow no reply may cross a ring: {stats}\n{}",
            t.log()
        );
    } else {
        // The ring is the path here; what RSS misplaced arrived through it (above).
        assert_eq!(handed_in, handed_out, "{stats}");
        eprintln!(
            "net_tap kept the ring here ({provider}); {handed_in} replies crossed it. \
             Steering itself needs a device that takes the rules."
        );
    }
    let (clean, _) = t.stop();
    assert!(clean, "{}", t.log());
}
