//! What one management change costs at N endpoints, step by step, without DPDK: the
//! steps a `create-vpc-endpoint` goes through before it is acknowledged (the store's
//! prepare, and inside it the state clone, validation, comparison and audit list; the
//! snapshot build; the journal record made durable), beside what a whole state file
//! would cost (encode). The figures of BENCHMARKS.md "A change costs what it changes".
//!
//! `cargo run --release -p appliance --example change_cost -- [ENDPOINTS] [CHANGES]`
//! (default 100000 3; a third argument `quick` times the requests alone, `targets` the
//! same with register-targets, `allocate` with endpoints that ask for no address while
//! the declared ones hold the lowest). The endpoints are declared as `scripts/bench/update.py` declares
//! them, in a consumer VPC widened to a /8 so that a million fit.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use appliance::tables::snapshot::{Change, Handles, Snapshot};
use mgmt::config::{Config, EndpointConfig};
use mgmt::model::EndpointState;
use mgmt::persist::{Baseline, StateFile};
use mgmt::store::{self, Caller, Store};
use serde_json::json;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    println!("{what}: {}", ms(started.elapsed()));
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let changes: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    // `quick`: requests only, each prepared and committed (what a profile should see);
    // `targets`: the same with register-targets (one new target per request) instead.
    let mode = args.next();
    let targets = mode.as_deref() == Some("targets");
    // `allocate`: the declared endpoints hold the VPC's lowest addresses, from .2 on (as
    // endpoints created without an address come to), and each request asks for none.
    let allocate = mode.as_deref() == Some("allocate");
    let quick = targets || allocate || mode.as_deref() == Some("quick");
    let mut config = Config::embedded_default();
    config.vpcs[0].address = Some("10.0.0.1/8".parse().expect("prefix"));
    config.quotas.endpoints_per_vpc = n + 64 + changes;
    let base = u32::from(if allocate {
        Ipv4Addr::new(10, 0, 0, 2)
    } else {
        Ipv4Addr::new(10, 4, 0, 1)
    });
    let service = config.services[0].id;
    // The demo's own addresses in the VPC are skipped, so that the declared endpoints fill
    // every other one from `base` on.
    let vpc = &config.vpcs[0];
    let taken: std::collections::HashSet<Ipv4Addr> = (config.endpoints.iter())
        .filter_map(|e| e.ip)
        .chain(vpc.address.map(|a| a.addr()))
        .chain(vpc.gateway)
        .chain(vpc.static_neighbours.iter().map(|s| s.ip))
        .collect();
    let mut addresses = (base..).map(Ipv4Addr::from).filter(|a| !taken.contains(a));
    for i in 0..n {
        config.endpoints.push(EndpointConfig {
            id: format!("vpce-1{i:016x}").parse().expect("id"),
            owner: "111111111111".parse().expect("account"),
            vpc_id: config.vpcs[0].vpc_id,
            service_id: Some(service),
            service_name: None,
            ip: addresses.next(),
            ip_address_type: Default::default(),
            ip6: None,
            state: EndpointState::Available,
            security_group_ids: vec![],
            policy: None,
        });
    }
    let (mut store, _) = timed("store from the configuration", || {
        Store::new(&config, None).expect("store")
    });
    let bytes = timed("encode the whole state", || {
        mgmt::persist::encode(store.state())
    });
    println!("  ({} bytes)", bytes.len());
    let dir = std::env::temp_dir().join(format!("privlink-change-cost-{}", std::process::id()));
    let file = StateFile::new(&dir);
    timed("write a checkpoint (whole state, fsync, rename)", || {
        file.save(store.state()).expect("save")
    });
    let macs = [[2u8, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
    let mtus = [1500u16, 1500];
    let mut handles = Handles::default();
    let mut snap = timed("first snapshot build", || {
        Snapshot::build(1, &config, &macs, &mtus, store.state(), &mut handles).expect("build")
    });
    for k in 0..changes {
        println!("change {k}:");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 1)) + k);
        let (op, request) = if targets {
            let t = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 2, 0, 30)) + k);
            (
                "register-targets",
                json!({"ServiceId": service.to_string(), "Protocol": "tcp",
                                        "Port": 80, "Targets": [{"Id": t.to_string()}]}),
            )
        } else {
            let mut args = json!({"VpcId": config.vpcs[0].vpc_id.to_string(),
                "ServiceName": format!("com.privlink.vpce.local.{service}")});
            if !allocate {
                args["IpAddress"] = ip.to_string().into();
            }
            ("create-vpc-endpoint", args)
        };
        let out = timed("  Store::prepare (the steps below and more)", || {
            store
                .prepare(&Caller::admin(), op, &request, 1)
                .expect("prepare")
        });
        let next = out.next.expect("a change");
        if quick {
            store.commit(next);
            continue;
        }
        // Each step of a whole check, as the store made them before it checked a change
        // of endpoints alone endpoint by endpoint.
        let copy = timed("  state clone", || store.state().clone());
        timed("  State::validate", || {
            copy.validate(&config.vpcs).expect("valid")
        });
        timed("  state ==", || copy == *store.state());
        let limits = config.limits();
        timed("  quota::check", || {
            mgmt::quota::check(&copy, store.state(), &limits).expect("quotas")
        });
        timed("  store::touched", || store::touched(store.state(), &next));
        let generation = u64::from(k) + 2;
        timed("  Snapshot::build (whole)", || {
            Snapshot::build(generation, &config, &macs, &mtus, &next, &mut handles).expect("build")
        });
        let health = std::collections::HashMap::new();
        let change = Change::from_touched(&out.touched);
        let made = timed("  Snapshot::update (from the last one)", || {
            Snapshot::update(
                &snap,
                generation,
                &config,
                &macs,
                &mtus,
                &next,
                &change,
                &mut handles,
                &health,
            )
            .expect("update")
        });
        println!(
            "    ({} of {} endpoint shards shared with the last one)",
            made.endpoint_shards_shared_with(&snap),
            appliance::tables::snapshot::shards::SHARDS
        );
        let last = std::mem::replace(&mut snap, made);
        timed("  drop of the last snapshot", || drop(last));
        timed("  journal record, fdatasync", || {
            // As the daemon makes it for a request, which keeps the declared baseline.
            file.save_change_with(store.state(), &next, &out.touched, Baseline::Kept)
                .expect("record")
        });
        drop(copy);
        timed("  Store::commit", || store.commit(next));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
