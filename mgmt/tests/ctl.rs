//! privlinkctl, the built binary, against a real management socket served by a fake
//! handler: the request it sends, what it prints, and its exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use mgmt::protocol::{ApiErrorBody, Request};
use mgmt::server::{Caller, Handled, Handler, PeerUid, Server, ServerConfig};
use serde_json::{json, Value};

#[derive(Default)]
struct Fake {
    seen: Mutex<Vec<(String, Value)>>,
    stats_calls: std::sync::atomic::AtomicU64,
}

impl Handler for Fake {
    fn handle(&self, _caller: &Caller, req: &Request) -> Handled {
        self.seen
            .lock()
            .unwrap()
            .push((req.op.clone(), req.args.clone()));
        Handled::from(match req.op.as_str() {
            "describe-vpc-endpoints" => Ok(json!({"VpcEndpoints": [
                {"VpcEndpointId": "vpce-0123456789abcdef0", "State": "available", "SecurityGroupIds": ["sg-1", "sg-2"]},
                {"VpcEndpointId": "vpce-1", "State": "pendingAcceptance", "SecurityGroupIds": []},
            ]})),
            "delete-security-group" => Err(ApiErrorBody::new(
                "InvalidGroup.NotFound",
                "The security group 'sg-9' does not exist",
            )),
            "version" => Ok(json!({"Version": "0.1.0", "Dpdk": "DPDK 22.11"})),
            "stats" => {
                let n = 1 + self
                    .stats_calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(json!({"Workers": 1, "Totals": {
                    "rx_packets": 1000 * n, "rx_bytes": 100_000 * n,
                    "tx_packets": 1000 * n, "tx_bytes": 100_000 * n,
                    "active_flows": 1, "new_flows": n, "expired_flows": 0,
                    "drops": {"no_listener": n}},
                    "Endpoints": [], "Services": [], "Targets": []}))
            }
            _ => Ok(json!({"Return": true})),
        })
    }
}

struct Daemon {
    dir: PathBuf,
    sock: PathBuf,
    fake: Arc<Fake>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let dir = std::env::temp_dir().join(format!("plctl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sock = dir.join("privlink.sock");
        let fake = Arc::new(Fake::default());
        let peer: PeerUid = Arc::new(|_| Ok(1000));
        let caller = |uid| Caller {
            uid,
            account: None,
            admin: false,
        };
        let server = Server::bind(ServerConfig::new(&sock), caller, peer, fake.clone()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = Some(server.run(stop.clone()));
        Daemon {
            dir,
            sock,
            fake,
            stop,
            thread,
        }
    }

    fn seen(&self) -> Vec<(String, Value)> {
        self.fake.seen.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ctl(sock: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_privlinkctl"));
    cmd.env_remove("PRIVLINK_SOCKET");
    if let Some(s) = sock {
        cmd.arg("--socket").arg(s);
    }
    cmd.args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn table_output_and_the_request_sent() {
    let d = Daemon::start("table");
    let out = ctl(
        Some(&d.sock),
        &["describe-vpc-endpoints", "--vpc-endpoint-ids", "vpce-1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "VpcEndpointId           SecurityGroupIds  State\n\
         vpce-0123456789abcdef0  sg-1,sg-2         available\n\
         vpce-1                  -                 pendingAcceptance\n"
    );
    assert_eq!(
        d.seen(),
        vec![(
            "describe-vpc-endpoints".to_owned(),
            json!({"VpcEndpointIds": ["vpce-1"]})
        )]
    );
}

#[test]
fn json_output() {
    let d = Daemon::start("json");
    let out = ctl(Some(&d.sock), &["--json", "version"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"Version": "0.1.0", "Dpdk": "DPDK 22.11"}));
    assert!(text(&out.stdout).contains("\n  \""), "pretty-printed");
}

#[test]
fn return_true_prints_ok_and_shorthands_map() {
    let d = Daemon::start("ok");
    let out = ctl(
        Some(&d.sock),
        &[
            "register-targets",
            "--service-id",
            "vpce-svc-1",
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--target",
            "10.2.0.13:8080:2",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
    assert_eq!(
        d.seen()[0].1,
        json!({"ServiceId": "vpce-svc-1", "Protocol": "tcp", "Port": 80,
               "Targets": [{"Id": "10.2.0.13", "Port": 8080, "Weight": 2}]})
    );
}

#[test]
fn error_response_exits_1() {
    let d = Daemon::start("err");
    let out = ctl(
        Some(&d.sock),
        &["delete-security-group", "--group-id", "sg-9"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: InvalidGroup.NotFound: The security group 'sg-9' does not exist\n"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn socket_from_the_environment() {
    let d = Daemon::start("env");
    let out = Command::new(env!("CARGO_BIN_EXE_privlinkctl"))
        .env("PRIVLINK_SOCKET", &d.sock)
        .arg("stats")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(d.seen()[0].0, "stats");
}

#[test]
fn connection_failure_names_the_socket() {
    let missing = std::env::temp_dir().join(format!("plctl-{}-none/x.sock", std::process::id()));
    let out = ctl(Some(&missing), &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn usage_errors_exit_2_without_connecting() {
    let missing = Path::new("/nonexistent/privlink.sock");
    let out = ctl(Some(missing), &["create-vpc-endpoint", "--colour", "blue"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown flag --colour") && err.contains("--vpc-id"),
        "{err}"
    );
    let out = ctl(Some(missing), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(None, &["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("describe-vpc-endpoints"));
    let out = ctl(None, &["flows", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--max-results N"));
}

#[test]
fn stats_watch_refreshes_with_rates_and_sends_no_client_flags() {
    let d = Daemon::start("watch");
    let started = std::time::Instant::now();
    let out = ctl(Some(&d.sock), &["stats", "--watch", "0.2", "--count", "3"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("Totals (1 worker(s))").count(), 3, "{text}");
    // 1000 packets each call, 0.2 s apart: about 5 kpps (a loaded machine sleeps longer).
    assert!(
        text.contains("kpps"),
        "rates from the second refresh on: {text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no screen clearing when not a terminal"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    let seen = d.fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|(op, args)| op == "stats" && *args == json!({})));
}

#[test]
fn text_output_is_tab_separated() {
    let d = Daemon::start("text");
    let out = ctl(
        Some(&d.sock),
        &["--output", "text", "describe-vpc-endpoints"],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "VpcEndpoints\tSecurityGroupIds\tState\tVpcEndpointId"
    );
    assert!(
        text.contains("\tavailable\tvpce-0123456789abcdef0"),
        "{text}"
    );
}
