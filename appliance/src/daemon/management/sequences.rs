//! Random management request sequences against a real [`Management`] (store, state file,
//! snapshot build, no workers), and the acknowledgement invariant they must keep: after
//! every `ok`, what is on disk is what the store holds, it reloads identically, and it
//! builds a snapshot; after every error, nothing changed; the store never accepts what the
//! snapshot build refuses. Used by the property tests and by the `manage` fuzz target.
//!
//! Everything here panics on a violation: it is test support, never used by the daemon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mgmt::config::Config;
use mgmt::model::{AccountId, State};
use mgmt::persist::{Compaction, SaveStep, StateFile};
use mgmt::protocol::Request;
use mgmt::server::{Caller, Handler};
use mgmt::store::Store;
use serde_json::{json, Value};

use super::{DataPlane, Management};
use crate::tables::snapshot::cell::SnapshotCell;
use crate::tables::snapshot::{Handles, Snapshot};

const CONSUMER: &str = "111111111111";
const PROVIDER: &str = "222222222222";
const OTHER: &str = "333333333333";
pub const CVPC: &str = "vpc-0c0000000000000c1";
const PVPC: &str = "vpc-0b0000000000000b1";
const OVPC: &str = "vpc-0a0000000000000a1";
const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]];
const MTUS: [u16; 2] = [1500, 1500];

/// A fresh directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("privlink-ack-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo plus a third account and VPC, small Maglev tables (so the target limit is
/// reached within a short sequence) and small quotas (so they are too).
pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::embedded_default();
    c.accounts.push(mgmt::model::Account {
        id: OTHER.parse().unwrap(),
        name: "other".into(),
        uids: vec![],
    });
    c.vpcs.push(mgmt::model::VpcAttachment {
        vpc_id: OVPC.parse().unwrap(),
        account: OTHER.parse().unwrap(),
        port: "net_tap0".into(),
        vlan: Some(100),
        address: Some("10.3.0.1/24".parse().unwrap()),
        gateway: None,
        gateway6: None,
        static_neighbours6: vec![],
        static_neighbours: vec![],
        mss_clamp: None,
        address6: None,
    });
    c.tables.maglev_size = 7;
    c.quotas.endpoints_per_vpc = 6;
    c.quotas.services_per_account = 4;
    c.quotas.rules_per_security_group = 3;
    c.mgmt.state_dir = dir.to_owned();
    c.validate().unwrap();
    c
}

pub fn control(config: &Config, file: StateFile) -> Management {
    let (store, _) = Store::new(config, None).unwrap();
    let mut handles = Handles::default();
    let first = Snapshot::build(1, config, &MACS, &MTUS, store.state(), &mut handles).unwrap();
    let cell = Arc::new(SnapshotCell::new(first, 0));
    Management::new(
        store,
        file,
        config.clone(),
        MACS.to_vec(),
        MTUS.to_vec(),
        handles,
        cell,
        1,
        DataPlane::none(),
    )
}

pub fn caller(i: u8) -> Caller {
    let account = |s: &str| Some(s.parse::<AccountId>().unwrap());
    match i % 4 {
        0 => Caller {
            uid: 1,
            account: account(CONSUMER),
            admin: false,
        },
        1 => Caller {
            uid: 2,
            account: account(PROVIDER),
            admin: false,
        },
        2 => Caller {
            uid: 3,
            account: account(OTHER),
            admin: false,
        },
        _ => Caller {
            uid: 0,
            account: None,
            admin: true,
        },
    }
}

/// Picks from a seed: `pick(seed, n)` in `0..n`, then the seed moves on.
pub fn pick(seed: &mut u64, n: usize) -> usize {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    usize::try_from((*seed >> 33) % u64::try_from(n.max(1)).unwrap()).unwrap()
}

pub fn one_of<T: Clone>(seed: &mut u64, items: &[T]) -> T {
    items[pick(seed, items.len())].clone()
}

/// A request built from `op` and `seed` against the objects that exist now (so most
/// requests name real ids), sometimes naming another account's objects or nothing.
pub fn request(who: u8, op: u8, mut seed: u64, state: &State) -> (String, Value) {
    let s = &mut seed;
    let services: Vec<String> = state.services.iter().map(|x| x.id.to_string()).collect();
    let endpoints: Vec<String> = state.endpoints.iter().map(|x| x.id.to_string()).collect();
    let groups: Vec<String> = state
        .security_groups
        .iter()
        .map(|x| x.id.to_string())
        .collect();
    let some = |s: &mut u64, v: &[String], fallback: &str| -> String {
        if v.is_empty() || pick(s, 8) == 0 {
            fallback.to_owned()
        } else {
            one_of(s, v)
        }
    };
    let svc = some(s, &services, "vpce-svc-0123456789abcdef0");
    // Listener requests mostly name a listener that exists, so limits are reached.
    let listener = state
        .services
        .iter()
        .find(|x| x.id.to_string() == svc)
        .and_then(|x| {
            let n = x.listeners.len();
            (n > 0 && pick(s, 8) != 0).then(|| &x.listeners[pick(s, n)])
        })
        .map(|l| (l.protocol.as_str(), l.port));
    let ep = some(s, &endpoints, "vpce-0123456789abcdef0");
    let sg = some(s, &groups, "sg-0123456789abcdef0");
    // Mostly the caller's own VPC (admin: any), sometimes another's.
    let own = [CVPC, PVPC, OVPC, CVPC];
    let vpc = if pick(s, 4) == 0 {
        one_of(s, &[CVPC, PVPC, OVPC])
    } else {
        own[usize::from(who % 4)]
    };
    let (proto, port) = listener.unwrap_or_else(|| {
        (
            one_of(s, &["tcp", "udp"]),
            one_of(s, &[80u16, 443, 9000, 53]),
        )
    });
    // Targets live in the provider VPC (10.2.0.0/24); the other VPCs have no gateway, so
    // a service elsewhere gets an off-link error, which is fine now and then.
    let target = |s: &mut u64| format!("10.2.0.{}", 10 + pick(s, 30));
    let targets = |s: &mut u64| -> Vec<Value> {
        (0..=pick(s, 4))
            .map(|_| json!({"Id": target(s), "Port": 8000 + pick(s, 3)}))
            .collect()
    };
    let principal = one_of(
        s,
        &[
            CONSUMER.to_owned(),
            OTHER.to_owned(),
            "*".to_owned(),
            format!("arn:aws:iam::{CONSUMER}:root"),
        ],
    );
    let token = format!("t{}", pick(s, 3));
    match op % 20 {
        0 => {
            let ts = targets(s);
            let mut a = json!({"VpcId": vpc, "Listeners": [{"Protocol": proto, "Port": port, "Targets": ts}],
                               "AcceptanceRequired": pick(s, 2) == 0, "AllowedPrincipals": [principal]});
            if pick(s, 2) == 0 {
                a["ClientToken"] = json!(token);
            }
            ("create-vpc-endpoint-service-configuration".into(), a)
        }
        1 => (
            "modify-vpc-endpoint-service-configuration".into(),
            match pick(s, 4) {
                0 => {
                    json!({"ServiceId": svc, "AddListeners": [{"Protocol": proto, "Port": port, "Targets": targets(s)}]})
                }
                1 => {
                    json!({"ServiceId": svc, "RemoveListeners": [{"Protocol": proto, "Port": port}]})
                }
                2 => json!({"ServiceId": svc, "AcceptanceRequired": pick(s, 2) == 0}),
                _ => {
                    json!({"ServiceId": svc, "AddSnatAddresses": [format!("10.2.0.{}", 200 + pick(s, 20))]})
                }
            },
        ),
        2 => (
            "delete-vpc-endpoint-service-configurations".into(),
            json!({"ServiceIds": [svc]}),
        ),
        3 => (
            "modify-vpc-endpoint-service-permissions".into(),
            if pick(s, 3) == 0 {
                json!({"ServiceId": svc, "RemoveAllowedPrincipals": [principal]})
            } else {
                json!({"ServiceId": svc, "AddAllowedPrincipals": [principal]})
            },
        ),
        4 | 5 => (
            "register-targets".into(),
            json!({"ServiceId": svc, "Protocol": proto, "Port": port, "Targets": targets(s)}),
        ),
        6 => (
            "deregister-targets".into(),
            json!({"ServiceId": svc, "Protocol": proto, "Port": port, "Targets": targets(s)}),
        ),
        7 | 8 => {
            let name = format!("com.privlink.vpce.local.{svc}");
            let mut a = json!({"VpcId": vpc, "ServiceName": name});
            if pick(s, 3) == 0 {
                a["SecurityGroupIds"] = json!([sg]);
            }
            if pick(s, 3) == 0 {
                a["IpAddress"] = json!(format!("10.1.0.{}", 100 + pick(s, 10)));
            }
            if pick(s, 2) == 0 {
                a["ClientToken"] = json!(token);
            }
            ("create-vpc-endpoint".into(), a)
        }
        9 => (
            "modify-vpc-endpoint".into(),
            match pick(s, 4) {
                0 => json!({"VpcEndpointId": ep, "AddSecurityGroupIds": [sg]}),
                1 => json!({"VpcEndpointId": ep, "RemoveSecurityGroupIds": [sg]}),
                2 => json!({"VpcEndpointId": ep, "ResetPolicy": true}),
                _ => json!({"VpcEndpointId": ep, "PolicyDocument": {"Statement": [
                    {"Effect": "Allow", "Principal": principal, "Port": [port]}]}}),
            },
        ),
        10 => (
            "delete-vpc-endpoints".into(),
            json!({"VpcEndpointIds": [ep]}),
        ),
        11 => (
            "accept-vpc-endpoint-connections".into(),
            json!({"ServiceId": svc, "VpcEndpointIds": [ep]}),
        ),
        12 => (
            "reject-vpc-endpoint-connections".into(),
            json!({"ServiceId": svc, "VpcEndpointIds": [ep]}),
        ),
        13 => {
            let mut a = json!({"VpcId": vpc, "GroupName": format!("g{}", pick(s, 4))});
            if pick(s, 2) == 0 {
                a["ClientToken"] = json!(token);
            }
            ("create-security-group".into(), a)
        }
        14 => ("delete-security-group".into(), json!({"GroupId": sg})),
        15 | 16 => (
            if op % 20 == 15 {
                "authorize-security-group-ingress"
            } else {
                "revoke-security-group-ingress"
            }
            .into(),
            json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": proto, "FromPort": port, "ToPort": port,
                   "IpRanges": [{"CidrIp": one_of(s, &["10.1.0.0/24", "0.0.0.0/0"])}]}]}),
        ),
        17 => ("describe-vpc-endpoints".into(), json!({})),
        18 => ("describe-target-health".into(), json!({"ServiceId": svc})),
        _ => ("tick".into(), Value::Null),
    }
}

/// The invariant between requests: the state file holds what the store holds; it loads
/// back identically; it builds a snapshot.
pub fn check_in_force(ctl: &Management, config: &Config, file: &StateFile) {
    let mem = ctl.state();
    let disk = file
        .load()
        .unwrap()
        .expect("a state file once anything changed");
    assert_eq!(disk, mem, "the state file holds what the store holds");
    let (again, _) = Store::new(config, Some(disk.clone())).expect("reloads");
    assert_eq!(again.state(), &disk, "reloads identically");
    Snapshot::build(2, config, &MACS, &MTUS, &disk, &mut Handles::default()).expect("builds");
}

pub fn run(ops: &[(u8, u8, u64)], faults: Option<u64>) {
    run_with(ops, faults, Compaction::default());
}

/// [`run`], with the journal folded into a checkpoint at `compaction`'s thresholds (each
/// tick checks).
pub fn run_with(ops: &[(u8, u8, u64)], faults: Option<u64>, compaction: Compaction) {
    let dir = TempDir::new(if faults.is_some() { "faults" } else { "plain" });
    let cfg = config(&dir.0);
    let plain = StateFile::new(&dir.0).with_compaction(compaction);
    // The first state is saved as the daemon would have it on disk after any change.
    let (seed_store, _) = Store::new(&cfg, None).unwrap();
    plain.save(seed_store.state()).unwrap();
    let rng = Arc::new(AtomicU64::new(faults.unwrap_or(0) | 1));
    let file = match faults {
        None => plain.clone(),
        Some(_) => {
            let rng = Arc::clone(&rng);
            plain.clone().with_faults(Arc::new(move |step: SaveStep| {
                let mut x = rng.load(Ordering::Relaxed);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                rng.store(x, Ordering::Relaxed);
                // About one save in four fails somewhere.
                if x.is_multiple_of(20) || (step == SaveStep::SyncDir && x.is_multiple_of(7)) {
                    Err(std::io::Error::from_raw_os_error(28))
                } else {
                    Ok(())
                }
            }))
        }
    };
    let ctl = control(&cfg, file);
    let mut now = 0u64;
    for &(who, op, seed) in ops {
        let before = ctl.state();
        let (name, args) = request(who, op, seed, &before);
        if name == "tick" {
            now += 400;
            ctl.tick_at(now);
        } else {
            let req = Request::new(1, &name, args.clone());
            let handled = ctl.handle(&caller(who), &req);
            if std::env::var("ACK_DEBUG").is_ok() {
                eprintln!(
                    "{name}: {:?}",
                    handled
                        .result
                        .as_ref()
                        .map(|_| "ok")
                        .map_err(|e| e.code.clone())
                );
            }
            if let Err(e) = &handled.result {
                assert!(
                    !e.message.contains("data plane cannot apply"),
                    "{name} {args}: the store accepted what the snapshot build refuses: {e}"
                );
                if e.message.contains("is in force") {
                    // The one documented exception: what is on disk is in force.
                    assert_ne!(ctl.state(), before, "{name}: {e}");
                } else {
                    assert_eq!(
                        ctl.state(),
                        before,
                        "{name} {args}: an error changes nothing: {e}"
                    );
                }
            }
        }
        check_in_force(&ctl, &cfg, &plain);
    }
}
