//! What an acknowledgement means, as a stateful property: random sequences of management
//! requests from several accounts (and the clock's own changes), against the real store,
//! state file and snapshot build (see [`super::sequences`]), with and without faults
//! injected at every step of a save; and the single cases the property found or guards.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use mgmt::persist::{Compaction, SaveStep, StateFile};
use mgmt::protocol::Request;
use mgmt::server::Handler;
use mgmt::store::Store;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::sequences::{caller, check_in_force, config, control, run, run_with, TempDir, CVPC};

fn ops() -> impl Strategy<Value = Vec<(u8, u8, u64)>> {
    proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u64>()), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_acknowledged_state_saves_reloads_and_builds(ops in ops()) {
        run(&ops, None);
    }

    #[test]
    fn with_failing_saves_the_disk_matches_what_the_caller_was_told(
        ops in ops(),
        seed in any::<u64>(),
    ) {
        run(&ops, Some(seed));
    }

    /// The journal folded into a checkpoint every few records, with and without failing
    /// steps: what is on disk still is what the store holds after every request and tick.
    #[test]
    fn with_frequent_compaction_the_disk_matches_the_store(
        ops in ops(),
        seed in any::<u64>(),
        faults in any::<bool>(),
    ) {
        run_with(&ops, faults.then_some(seed), Compaction { records: 3, bytes: 1 });
    }
}

/// The trigger of the bug this property found: a listener registered up to
/// `tables.maglev_size` targets was acknowledged, never enforced, and broke the next start.
#[test]
fn a_listener_with_as_many_targets_as_maglev_slots_is_refused() {
    let dir = TempDir::new("maglev");
    let cfg = config(&dir.0);
    let file = StateFile::new(&dir.0);
    let ctl = control(&cfg, file.clone());
    let provider = caller(1);
    let svc = "vpce-svc-0d0000000000000d1";
    let register = |ips: &[&str]| {
        let targets: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"Id": ip, "Port": 8080}))
            .collect();
        ctl.handle(
            &provider,
            &Request::new(
                1,
                "register-targets",
                json!({"ServiceId": svc, "Protocol": "tcp", "Port": 80, "Targets": targets}),
            ),
        )
        .result
    };
    // Two targets in the demo; four more make six, the most seven slots hold.
    register(&["10.2.0.13", "10.2.0.14", "10.2.0.15", "10.2.0.16"]).unwrap();
    let e = register(&["10.2.0.17"]).unwrap_err();
    assert_eq!(e.code, "TargetLimitExceeded", "{e}");
    check_in_force(&ctl, &cfg, &file);
    // Every tenant's later changes are still enforced.
    let consumer = caller(0);
    ctl.handle(
        &consumer,
        &Request::new(
            2,
            "create-security-group",
            json!({"VpcId": CVPC, "GroupName": "after"}),
        ),
    )
    .result
    .unwrap();
    check_in_force(&ctl, &cfg, &file);
}

#[test]
fn a_save_that_fails_changes_nothing_and_says_so() {
    for step in [
        SaveStep::Create,
        SaveStep::Write,
        SaveStep::Sync,
        SaveStep::Rename,
        SaveStep::SyncDir,
    ] {
        let dir = TempDir::new("save");
        let cfg = config(&dir.0);
        let plain = StateFile::new(&dir.0);
        let (s, _) = Store::new(&cfg, None).unwrap();
        plain.save(s.state()).unwrap();
        let failing = plain.clone().with_faults(Arc::new(move |s| {
            if s == step {
                Err(std::io::Error::from_raw_os_error(28))
            } else {
                Ok(())
            }
        }));
        let ctl = control(&cfg, failing);
        let before = ctl.state();
        let generation = ctl.cell.load().generation;
        let e = ctl
            .handle(
                &caller(0),
                &Request::new(
                    1,
                    "create-security-group",
                    json!({"VpcId": CVPC, "GroupName": "x"}),
                ),
            )
            .result
            .unwrap_err();
        assert_eq!(e.code, "InternalError", "{step:?}");
        assert!(e.message.contains("nothing changed"), "{step:?}: {e}");
        assert_eq!(ctl.state(), before, "{step:?}: the store is as it was");
        assert_eq!(
            plain.load().unwrap(),
            Some(before),
            "{step:?}: so is the disk"
        );
        assert_eq!(
            ctl.cell.load().generation,
            generation,
            "{step:?}: and the data plane"
        );
    }
}

#[test]
fn stats_and_flows_refuse_unknown_arguments_like_every_request() {
    let dir = TempDir::new("args");
    let cfg = config(&dir.0);
    let ctl = control(&cfg, StateFile::new(&dir.0));
    for (op, args) in [
        ("stats", json!({"Verbose": true})),
        ("flows", json!({"MaxResults": 5, "Everything": true})),
        ("flows", json!({"MaxResults": "5"})),
        ("stats", json!([1])),
    ] {
        let e = ctl
            .handle(&caller(3), &Request::new(1, op, args.clone()))
            .result
            .unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue", "{op} {args}: {e}");
    }
    assert!(ctl
        .handle(&caller(3), &Request::new(1, "stats", json!({})))
        .result
        .is_ok());
}

#[test]
fn announcements_are_computed_against_what_worker_0_finished() {
    let dir = TempDir::new("garp");
    let cfg = config(&dir.0);
    let ctl = control(&cfg, StateFile::new(&dir.0));
    // Worker 0 announced the first snapshot in full.
    ctl.dp.announced.store(1, Ordering::Release);
    let endpoint = |ip: &str| {
        ctl.handle(
            &caller(0),
            &Request::new(
                1,
                "create-vpc-endpoint",
                json!({"VpcId": CVPC, "ServiceName": "com.privlink.vpce.local.vpce-svc-0d0000000000000d1",
                       "IpAddress": ip}),
            ),
        )
        .result
        .unwrap();
    };
    let ip = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().unwrap());
    endpoint("10.1.0.150");
    assert_eq!(ctl.cell.load().announce, vec![(0, ip("10.1.0.150"))]);
    // Worker 0 never picked up that snapshot: the next one must announce both.
    endpoint("10.1.0.151");
    assert_eq!(
        ctl.cell.load().announce,
        vec![(0, ip("10.1.0.150")), (0, ip("10.1.0.151"))]
    );
    // Once worker 0 finishes generation 3, only what is new since is announced.
    ctl.dp.announced.store(3, Ordering::Release);
    endpoint("10.1.0.152");
    assert_eq!(ctl.cell.load().announce, vec![(0, ip("10.1.0.152"))]);
}

#[test]
fn what_versions_added_is_followed_back_to_the_one_announced() {
    use super::{added_since, Added};
    let k = |n: u32| (0u16, n);
    let k6 = |n: u32| (1u16, 0xfd00_u128 << 112 | u128::from(n));
    let recent: std::collections::VecDeque<Added> = [
        (5, Some(4), vec![k(5)]),
        (6, Some(5), vec![k(6)]),
        (7, None, vec![k(1), k(7)]),
        (8, Some(7), vec![k(8)]),
    ]
    .into_iter()
    .map(|(generation, base, keys)| Added {
        generation,
        base,
        keys6: keys.iter().map(|&(_, n)| k6(n)).collect(),
        keys,
    })
    .collect();
    let both = |v: Vec<(u16, u32)>| {
        let v6 = v.iter().map(|&(_, n)| k6(n)).collect();
        Some((v, v6))
    };
    assert_eq!(added_since(&recent, 4, 6), both(vec![k(6), k(5)]));
    assert_eq!(added_since(&recent, 6, 6), both(vec![]));
    // A version built whole holds every address: the walk stops there.
    assert_eq!(added_since(&recent, 2, 8), both(vec![k(8), k(1), k(7)]));
    // Generation 4's additions are gone: nothing says what 3 to 4 added.
    assert_eq!(added_since(&recent, 3, 6), None);
}

/// Connection events from the changes a node puts in force: a rejection and a deletion
/// reach the endpoint's owner and the service's owner, and no one else.
#[test]
fn rejecting_and_deleting_an_endpoint_are_events_for_both_owners_only() {
    use mgmt::events::Next;
    let dir = TempDir::new("events");
    let cfg = config(&dir.0);
    let ctl = control(&cfg, StateFile::new(&dir.0));
    let (ep, svc) = ("vpce-0e0000000000000e1", "vpce-svc-0d0000000000000d1");
    let mut consumer = ctl.subscribe(&caller(0)).unwrap();
    let mut provider = ctl.subscribe(&caller(1)).unwrap();
    let mut other = ctl.subscribe(&caller(2)).unwrap();
    let answer = |c: u8, op: &str, args: Value| {
        ctl.handle(&caller(c), &Request::new(1, op, args))
            .result
            .unwrap_or_else(|e| panic!("{op}: {e}"))
    };
    answer(
        1,
        "reject-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [ep]}),
    );
    answer(0, "delete-vpc-endpoints", json!({"VpcEndpointIds": [ep]}));
    let w = std::time::Duration::from_millis(10);
    for sub in [&mut consumer, &mut provider] {
        let mut types = Vec::new();
        while let Next::Event(e) = sub.next(w) {
            assert_eq!(e["VpcEndpointId"], ep, "{e}");
            types.push(e["Type"].as_str().unwrap_or("?").to_owned());
        }
        assert_eq!(types, ["Reject", "Delete"]);
    }
    assert_eq!(other.next(w), Next::Nothing);
}
