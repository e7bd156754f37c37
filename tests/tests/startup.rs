//! Start-up refuses what cannot work, with a message that names the setting and the
//! figures, and exits non-zero before anything forwards: several workers on a device
//! without RSS, a flow table bigger than a table can be, tables bigger than the memory
//! available, a packet pool bigger than the EAL's memory. These run privlinkd directly on
//! a small configuration (net_ring and net_null devices, no namespaces needed).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Run {
    dir: PathBuf,
    prefix: String,
}

impl Run {
    fn new(name: &str) -> Run {
        let prefix = format!("plst{}{name}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("privlink-startup-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Run { dir, prefix }
    }

    /// A configuration with `workers` workers on two ports of `device` (`net_ring`,
    /// `net_null`), `-m mem_mb` without hugepages, and `tables` as the [tables] section.
    fn config(&self, device: &str, workers: u16, mem_mb: u32, tables: &str) -> PathBuf {
        let lcores: Vec<String> = (1..=workers).map(|i| i.to_string()).collect();
        let map: Vec<String> = (0..=workers).map(|i| format!("{i}@0")).collect();
        let text = format!(
            r#"[eal]
args = ["--lcores={map}", "--no-pci", "--no-huge", "-m", "{mem_mb}", "--file-prefix={prefix}",
        "--log-level=lib.eal:warning", "--vdev={device}0", "--vdev={device}1"]

[workers]
lcores = [{lcores}]
idle_sleep_us = 100

[[ports]]
name = "{device}0"
rx_desc = 256
tx_desc = 256

[[ports]]
name = "{device}1"
rx_desc = 256
tx_desc = 256

[[vpcs]]
vpc_id = "vpc-0c0000000000000c1"
account = "111111111111"
port = "{device}0"
address = "10.1.0.1/24"

[[vpcs]]
vpc_id = "vpc-0b0000000000000b1"
account = "222222222222"
port = "{device}1"
address = "10.2.0.1/24"

[[accounts]]
id = "111111111111"
name = "c"

[[accounts]]
id = "222222222222"
name = "p"

[mgmt]
socket = "{dir}/privlink.sock"
state_dir = "{dir}/state"

[tables]
{tables}
"#,
            map = map.join(","),
            lcores = lcores.join(", "),
            prefix = self.prefix,
            dir = self.dir.display(),
        );
        let path = self.dir.join("privlink.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    /// Runs privlinkd on `config` (bounded); (exited non-zero, log). A privlinkd that is
    /// still running after `limit` is stopped and counts as not refusing.
    fn start(&self, config: &PathBuf, limit: Duration) -> (bool, String) {
        let log = self.dir.join("privlinkd.log");
        let mut child = Command::new(privlink_e2e::privlinkd())
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn privlinkd");
        let end = Instant::now() + limit;
        let refused = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break !status.success();
            }
            if Instant::now() > end {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let _ = child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (refused, std::fs::read_to_string(&log).unwrap_or_default())
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_working_configuration_starts() {
    // The control case for the refusals below: the same file with sane values runs.
    let r = Run::new("ok");
    let c = r.config("net_null", 2, 256, "flows_per_worker = 4096");
    let (refused, log) = r.start(&c, Duration::from_secs(8));
    assert!(!refused, "{log}");
    assert!(log.contains("privlinkd ready"), "{log}");
}

#[test]
fn several_workers_on_a_device_without_rss_are_refused() {
    let r = Run::new("rss");
    let c = r.config("net_ring", 2, 256, "flows_per_worker = 4096");
    let (refused, log) = r.start(&c, LIMIT);
    assert!(refused, "{log}");
    assert!(
        log.contains("ports[0] (net_ring0, net_ring): 2 workers need 2 RX queues on every port, and this device has no RSS"),
        "{log}"
    );
    assert!(!log.contains("privlinkd ready"), "{log}");
    // One worker on the same devices is fine.
    let c = r.config("net_ring", 1, 256, "flows_per_worker = 4096");
    let (refused, log) = r.start(&c, Duration::from_secs(8));
    assert!(!refused && log.contains("privlinkd ready"), "{log}");
}

#[test]
fn a_flow_table_larger_than_a_table_can_be_is_a_configuration_error() {
    // 2^30 + 1 used to panic on the worker lcore while the daemon said "ready".
    let r = Run::new("cap");
    let c = r.config("net_null", 1, 256, "flows_per_worker = 1073741825");
    let (refused, log) = r.start(&c, LIMIT);
    assert!(refused, "{log}");
    assert!(
        log.contains("tables.flows_per_worker: 1073741825 is outside 1024..=1073741824"),
        "{log}"
    );
    assert!(!log.contains("privlinkd ready"), "{log}");
}

#[test]
fn tables_larger_than_the_available_memory_are_refused_with_the_figures() {
    // 2^30 flows per worker: about 120 GiB each, more than any test machine has.
    let r = Run::new("mem");
    let c = r.config("net_null", 2, 256, "flows_per_worker = 1073741824");
    let (refused, log) = r.start(&c, LIMIT);
    assert!(refused, "{log}");
    assert!(
        log.contains(
            "tables.flows_per_worker = 1073741824 with 2 workers (240.0 GiB of flow tables)"
        ),
        "{log}"
    );
    assert!(
        log.contains("this machine has available (MemAvailable)"),
        "{log}"
    );
}

#[test]
fn a_packet_pool_larger_than_the_eal_memory_is_refused_with_the_figures() {
    let r = Run::new("pool");
    let c = r.config(
        "net_null",
        1,
        128,
        "flows_per_worker = 4096\nmbufs = 1000000",
    );
    let (refused, log) = r.start(&c, LIMIT);
    assert!(refused, "{log}");
    assert!(
        log.contains("the packet pool (1000000 mbufs of 2176 bytes"),
        "{log}"
    );
    assert!(
        log.contains("more than the 128.0 MiB the EAL was given (-m, with --no-huge)"),
        "{log}"
    );
}

/// Starts `workers` workers on two net_null ports (no rte_flow) and returns the line each
/// port logged about its reply steering, in port order.
fn steering_at_start(r: &Run, workers: u16) -> Vec<String> {
    let c = r.config("net_null", workers, 256, "flows_per_worker = 4096");
    let (refused, log) = r.start(&c, Duration::from_secs(8));
    assert!(!refused && log.contains("privlinkd ready"), "{log}");
    let lines: Vec<String> = log
        .lines()
        .filter(|l| l.contains(": reply steering: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 2, "one line per port:\n{log}");
    lines
}

#[test]
fn each_port_logs_its_reply_steering_at_start() {
    // Two workers could steer, but net_null has no rte_flow: both ports keep the ring.
    let r = Run::new("steer");
    for (line, port) in steering_at_start(&r, 2)
        .iter()
        .zip(["net_null0", "net_null1"])
    {
        assert!(
            line.ends_with(&format!(
                "port {port}: reply steering: ring (the device has no rte_flow)"
            )),
            "{line}"
        );
    }
}

#[test]
fn reply_steering_needs_a_power_of_two_of_workers_and_is_moot_with_one() {
    let r = Run::new("steern");
    for line in steering_at_start(&r, 3) {
        assert!(
            line.contains(
                "reply steering: ring (3 workers: a port mask splits SNAT ports only among a \
                 power of two of workers"
            ),
            "{line}"
        );
    }
    for line in steering_at_start(&r, 1) {
        assert!(
            line.contains("reply steering: none (one worker owns every SNAT port)"),
            "{line}"
        );
    }
}
