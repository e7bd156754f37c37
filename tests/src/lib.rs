//! End-to-end test support: `privlinkd` on two `net_tap` ports whose kernel sides are
//! moved into a consumer and a provider network namespace, with real kernel TCP/UDP stacks
//! (Python servers and clients) on either side.
//!
//! Every name (namespaces, interfaces, DPDK file prefix) is unique per test, every wait is
//! bounded, and [`Topology`] tears everything down in `Drop`, so a failing test leaves
//! nothing behind. Traffic never leaves the namespaces the test created.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// Consumer VPC addresses (the demo's, kept identical so the tests exercise the contract).
pub const CONSUMER_CLIENT: &str = "10.1.0.10";
pub const CONSUMER_APPLIANCE: &str = "10.1.0.1";
pub const ENDPOINT_IP: &str = "10.1.0.100";
/// Provider VPC addresses.
pub const PROVIDER_APPLIANCE: &str = "10.2.0.1";
pub const SNAT_IP: &str = "10.2.0.100";
pub const TARGETS: [&str; 3] = ["10.2.0.11", "10.2.0.12", "10.2.0.13"];
/// Account ids and the local uids that act as them on the management socket.
pub const CONSUMER_ACCOUNT: &str = "111111111111";
pub const PROVIDER_ACCOUNT: &str = "222222222222";
pub const OTHER_ACCOUNT: &str = "333333333333";
pub const UID_CONSUMER: u32 = 64101;
pub const UID_PROVIDER: u32 = 64102;
pub const UID_OTHER: u32 = 64103;
pub const CONSUMER_VPC: &str = "vpc-0c0000000000000c1";
pub const PROVIDER_VPC: &str = "vpc-0b0000000000000b1";
pub const OTHER_VPC: &str = "vpc-0a0000000000000a1";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Fails the test with a clear message unless it can create namespaces and tap devices.
pub fn require_root() {
    // SAFETY-free check: `id -u` keeps this crate free of libc.
    let uid = Command::new("id").arg("-u").output().expect("run id -u");
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    assert_eq!(
        uid, "0",
        "end-to-end tests need root (network namespaces, /dev/net/tun); run `make test` as root"
    );
    assert!(
        Path::new("/dev/net/tun").exists(),
        "end-to-end tests need /dev/net/tun"
    );
}

/// Runs a command with a time limit, returning its output.
pub fn run(args: &[&str], limit: Duration) -> Output {
    let secs = format!("{}", limit.as_secs().max(1));
    let out = Command::new("timeout")
        .arg("-k")
        .arg("2")
        .arg(&secs)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    out
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) -> String {
    let out = run(args, Duration::from_secs(20));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = run(&["ip", "netns", "del", name], Duration::from_secs(5));
        must(&["ip", "netns", "add", name]);
        must(&["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]);
        Netns {
            name: name.to_owned(),
        }
    }

    /// Runs `args` inside the namespace with a time limit.
    pub fn exec(&self, args: &[&str], limit: Duration) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full, limit)
    }

    /// Runs `args` inside the namespace; it must succeed.
    pub fn must(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Starts a long-running process inside the namespace.
    pub fn spawn(&self, args: &[&str], stdout: Stdio) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name], Duration::from_secs(5));
    }
}

/// How to start a topology.
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: u16,
    /// Established-TCP idle timeout in seconds.
    pub tcp_established: f64,
    /// Targets (indices into [`TARGETS`]) of both listeners.
    pub targets: Vec<usize>,
    /// Declare the demo service and endpoint in the file (false: start empty and create
    /// them through `privlinkctl`).
    pub declare_objects: bool,
    /// Seconds a deregistered target drains before its flows end.
    pub deregistration_delay: f64,
    /// Leave the consumer account without its uid (a reload then revokes its access).
    pub revoke_consumer_uid: bool,
    /// `tables.flows_per_worker`.
    pub flows_per_worker: u32,
    /// Lines of a `[limits]` section (`key = value`), none when empty.
    pub limits: String,
    /// Extra environment for privlinkd (e.g. its test hooks).
    pub env: Vec<(String, String)>,
    /// Lines appended to the configuration's `[workers]` section.
    pub workers_extra: String,
    /// `mtu` of the consumer and the provider port (None: the device's).
    pub port_mtu: [Option<u16>; 2],
    /// Lines appended to the tcp/80 listener (health-check settings, ...).
    pub listener_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 1,
            tcp_established: 350.0,
            targets: vec![0, 1],
            declare_objects: true,
            deregistration_delay: 300.0,
            revoke_consumer_uid: false,
            flows_per_worker: 65536,
            limits: String::new(),
            env: Vec::new(),
            workers_extra: String::new(),
            port_mtu: [None, None],
            listener_extra: String::new(),
        }
    }
}

/// A running privlinkd between a consumer and a provider namespace, with target servers.
#[derive(Debug)]
pub struct Topology {
    pub consumer: Netns,
    pub provider: Netns,
    pub consumer_if: String,
    pub provider_if: String,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub stats_path: PathBuf,
    pub log_path: PathBuf,
    pub opts: Options,
    prefix: String,
    daemon: Option<Child>,
    servers: Vec<Child>,
    /// tcpdump on both interfaces, with `PRIVLINK_E2E_CAPTURE` (see [`Topology::start`]).
    captures: Vec<Child>,
}

/// Starts target `i`'s server in `provider`, logging to `dir/t<i+1>.log`, its health
/// file `dir/t<i+1>.health`; returns once it listens.
fn spawn_target(provider: &Netns, dir: &Path, i: usize) -> Child {
    let name = format!("t{}", i + 1);
    let log = dir.join(format!("{name}.log"));
    let mut child = provider.spawn(
        &[
            "python3",
            &support("target_server.py"),
            "--bind",
            TARGETS[i],
            "--name",
            &name,
            "--log",
            &log.display().to_string(),
            "--health",
            &dir.join(format!("t{}.health", i + 1)).display().to_string(),
        ],
        Stdio::piped(),
    );
    let stdout = child.stdout.take().expect("server stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    assert!(
        line.starts_with("target"),
        "target server {name} did not start: {line:?}"
    );
    child
}

/// Path of the privlinkd binary under test.
pub fn privlinkd() -> PathBuf {
    if let Ok(p) = std::env::var("PRIVLINKD") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("privlinkd");
        if p.exists() {
            return p;
        }
    }
    panic!("privlinkd not built: run `cargo build --release --bins` (make test does)");
}

/// Path of the privlinkctl binary under test.
pub fn privlinkctl() -> PathBuf {
    if let Ok(p) = std::env::var("PRIVLINKCTL") {
        return PathBuf::from(p);
    }
    let d = privlinkd();
    d.with_file_name("privlinkctl")
}

/// The support scripts' directory.
pub fn support(script: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("support")
        .join(script)
        .display()
        .to_string()
}

/// The names one daemon's configuration is written with: its DPDK file prefix, the base of
/// its `net_tap` device names (`net_tap_<dev>c`, `net_tap_<dev>p`), the kernel names of its
/// two taps, and the directory of its socket, state and stats.
struct ConfigNames<'a> {
    file_prefix: &'a str,
    dev: &'a str,
    consumer_if: &'a str,
    provider_if: &'a str,
    dir: &'a Path,
}

/// The configuration TOML of one daemon of a topology.
fn render_config(o: &Options, names: &ConfigNames<'_>) -> String {
    let lcores = (1..=o.workers)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    // Worker i on CPU i when there are enough CPUs, else share CPU 1 (the tests only
    // need correctness; idle_sleep keeps shared CPUs usable).
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut map = String::from("0@0");
    for i in 1..=o.workers {
        let cpu = if usize::from(i) < cpus {
            usize::from(i)
        } else {
            cpus - 1
        };
        let _ = write!(map, ",{i}@{cpu}");
    }
    let targets = |port: u16| {
        o.targets
            .iter()
            .map(|&t| format!("{{ ip = \"{}\", port = {port} }}", TARGETS[t]))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let objects = format!(
        r#"[[services]]
id = "vpce-svc-0d0000000000000d1"
owner = "222222222222"
vpc_id = "vpc-0b0000000000000b1"
snat_addresses = ["{snat}"]
acceptance_required = false
allowed_principals = ["111111111111"]

[[services.listeners]]
protocol = "tcp"
port = 80
targets = [{t80}]
{listener_extra}

[[services.listeners]]
protocol = "udp"
port = 9000
targets = [{t9000}]

[[endpoints]]
id = "vpce-0e0000000000000e1"
owner = "111111111111"
vpc_id = "vpc-0c0000000000000c1"
service_id = "vpce-svc-0d0000000000000d1"
ip = "{ep}"
state = "available"
"#,
        snat = SNAT_IP,
        ep = ENDPOINT_IP,
        t80 = targets(8080),
        t9000 = targets(9000),
        listener_extra = o.listener_extra,
    );
    format!(
        r#"# privlink end-to-end test topology {file_prefix}
[eal]
args = ["--lcores={map}", "--no-pci", "--no-huge", "-m", "256", "--file-prefix={file_prefix}",
        "--log-level=lib.eal:warning",
        "--vdev=net_tap_{prefix}c,iface={cif}", "--vdev=net_tap_{prefix}p,iface={pif}"]

[workers]
lcores = [{lcores}]
burst = 32
idle_sleep_us = 100
{workers_extra}

[[ports]]
name = "net_tap_{prefix}c"
rx_desc = 512
tx_desc = 512
{mtu_c}

[[ports]]
name = "net_tap_{prefix}p"
rx_desc = 512
tx_desc = 512
{mtu_p}

[[vpcs]]
vpc_id = "vpc-0c0000000000000c1"
account = "111111111111"
port = "net_tap_{prefix}c"
address = "{capp}/24"

[[vpcs]]
vpc_id = "vpc-0b0000000000000b1"
account = "222222222222"
port = "net_tap_{prefix}p"
address = "{papp}/24"

# A third account's VPC on a VLAN of the consumer port (no traffic; it owns objects).
[[vpcs]]
vpc_id = "vpc-0a0000000000000a1"
account = "333333333333"
port = "net_tap_{prefix}c"
vlan = 300
address = "10.3.0.1/24"

[[accounts]]
id = "111111111111"
name = "test-consumer"
uids = [{uid_c}]

[[accounts]]
id = "222222222222"
name = "test-provider"
uids = [{uid_p}]

[[accounts]]
id = "333333333333"
name = "test-other"
uids = [{uid_o}]

[mgmt]
socket = "{dir}/privlink.sock"
socket_mode = "0666"
state_dir = "{dir}/state"
stats_file = "{dir}/stats.json"

[tables]
flows_per_worker = {flows}
{limits}

[timeouts]
tcp_established = {est}
udp = 30
deregistration_delay = {dereg}

{objects}
"#,
        file_prefix = names.file_prefix,
        prefix = names.dev,
        cif = names.consumer_if,
        pif = names.provider_if,
        dir = names.dir.display(),
        capp = CONSUMER_APPLIANCE,
        papp = PROVIDER_APPLIANCE,
        est = o.tcp_established,
        workers_extra = o.workers_extra,
        mtu_c = o.port_mtu[0]
            .map(|m| format!("mtu = {m}"))
            .unwrap_or_default(),
        mtu_p = o.port_mtu[1]
            .map(|m| format!("mtu = {m}"))
            .unwrap_or_default(),
        dereg = o.deregistration_delay,
        flows = o.flows_per_worker,
        limits = if o.limits.is_empty() {
            String::new()
        } else {
            format!("[limits]\n{}\n", o.limits)
        },
        uid_c = if o.revoke_consumer_uid {
            String::new()
        } else {
            UID_CONSUMER.to_string()
        },
        uid_p = UID_PROVIDER,
        uid_o = UID_OTHER,
        objects = if o.declare_objects {
            objects
        } else {
            String::new()
        },
    )
}

impl Topology {
    /// The configuration TOML of this topology.
    pub fn config_toml(&self) -> String {
        render_config(
            &self.opts,
            &ConfigNames {
                file_prefix: &self.prefix,
                dev: &self.prefix,
                consumer_if: &self.consumer_if,
                provider_if: &self.provider_if,
                dir: &self.dir,
            },
        )
    }

    /// Creates the namespaces, starts privlinkd and the target servers, wires it all up.
    ///
    /// With `PRIVLINK_E2E_CAPTURE=DIR`, every frame on the consumer's and the provider's
    /// interface is captured (tcpdump) to `DIR/<topology>-<n>-consumer.pcap` and
    /// `-provider.pcap` until the topology goes: `scripts/fuzz-seeds.sh` makes fuzz seeds
    /// of them.
    pub fn start(opts: Options) -> Topology {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("pl{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("privlink-e2e-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let mut t = Topology {
            consumer: Netns::new(&format!("{prefix}-cons")),
            provider: Netns::new(&format!("{prefix}-prov")),
            consumer_if: format!("{prefix}c"),
            provider_if: format!("{prefix}p"),
            config_path: dir.join("privlink.toml"),
            stats_path: dir.join("stats.json"),
            log_path: dir.join("privlinkd.log"),
            dir,
            opts,
            prefix,
            daemon: None,
            servers: Vec::new(),
            captures: Vec::new(),
        };
        std::fs::write(&t.config_path, t.config_toml()).expect("write config");
        t.start_daemon();
        t.wire_namespaces();
        t.start_captures();
        t.start_servers();
        t
    }

    /// Starts the captures `PRIVLINK_E2E_CAPTURE` asks for (each start of the daemon makes
    /// new interfaces, so new files), and waits until tcpdump has opened both files.
    fn start_captures(&mut self) {
        let Some(dir) = std::env::var_os("PRIVLINK_E2E_CAPTURE").map(PathBuf::from) else {
            return;
        };
        std::fs::create_dir_all(&dir).expect("capture directory");
        let n = self.captures.len() / 2;
        let mut files = Vec::new();
        for (ns, ifname, side) in [
            (&self.consumer, &self.consumer_if, "consumer"),
            (&self.provider, &self.provider_if, "provider"),
        ] {
            let file = dir.join(format!("{}-{n}-{side}.pcap", self.prefix));
            let path = file.display().to_string();
            let args = ["tcpdump", "-i", ifname, "-U", "-n", "-s", "0", "-w", &path];
            self.captures.push(ns.spawn(&args, Stdio::null()));
            files.push(file);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && !files.iter().all(|f| f.exists()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        // tcpdump creates the file before it reads the interface.
        std::thread::sleep(Duration::from_millis(200));
    }

    fn start_daemon(&mut self) {
        let log = std::fs::File::create(&self.log_path).expect("log file");
        let out = std::fs::File::create(self.dir.join("privlinkd.out")).expect("out file");
        let child = Command::new(privlinkd())
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("spawn privlinkd");
        self.daemon = Some(child);
        self.wait_log("privlinkd ready", Duration::from_secs(30));
    }

    /// Waits until the daemon's log contains `needle` (panics with the log on timeout or
    /// if the daemon exits).
    pub fn wait_log(&mut self, needle: &str, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            if let Some(d) = self.daemon.as_mut() {
                if let Ok(Some(status)) = d.try_wait() {
                    panic!("privlinkd exited ({status}) before {needle:?}:\n{log}");
                }
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wire_namespaces(&self) {
        for (ifname, ns, addrs) in [
            (&self.consumer_if, &self.consumer, vec![CONSUMER_CLIENT]),
            (&self.provider_if, &self.provider, TARGETS.to_vec()),
        ] {
            must(&["ip", "link", "set", ifname, "netns", &ns.name]);
            let _ = ns.exec(
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
                ],
                Duration::from_secs(5),
            );
            for a in addrs {
                ns.must(&["ip", "addr", "add", &format!("{a}/24"), "dev", ifname]);
            }
            ns.must(&["ip", "link", "set", ifname, "up"]);
        }
    }

    fn start_servers(&mut self) {
        for i in 0..TARGETS.len() {
            let child = self.spawn_server(i);
            self.servers.push(child);
        }
    }

    fn spawn_server(&self, i: usize) -> Child {
        spawn_target(&self.provider, &self.dir, i)
    }

    /// The file whose content is the status target `i` answers `GET /health` with.
    pub fn health_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("t{}.health", i + 1))
    }

    /// Kills target `i`'s server (its address stays: connections to it are refused).
    pub fn stop_server(&mut self, i: usize) {
        let _ = self.servers[i].kill();
        let _ = self.servers[i].wait();
    }

    /// Starts target `i`'s server again.
    pub fn start_server(&mut self, i: usize) {
        self.servers[i] = self.spawn_server(i);
    }

    /// Runs `client.py MODE ARGS...` in the consumer namespace and parses its JSON.
    pub fn client(&self, args: &[&str], limit: Duration) -> Value {
        let mut full = vec!["python3", "-u"];
        let script = support("client.py");
        full.push(&script);
        full.extend_from_slice(args);
        let out = self.consumer.exec(&full, limit);
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "client {args:?}: {e}: stdout {text:?} stderr {:?}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            )
        })
    }

    /// Pings `ip` from the consumer namespace; true when every echo was answered.
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.consumer
            .exec(
                &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "1", ip],
                Duration::from_secs(10),
            )
            .status
            .success()
    }

    /// The daemon's counters, at least one publication after now.
    pub fn stats(&self) -> Value {
        std::thread::sleep(Duration::from_millis(1300));
        let text = std::fs::read_to_string(&self.stats_path).unwrap_or_else(|e| {
            panic!(
                "stats file {}: {e}\n{}",
                self.stats_path.display(),
                self.log()
            )
        });
        serde_json::from_str(&text).expect("stats JSON")
    }

    /// One total counter.
    pub fn counter(stats: &Value, name: &str) -> u64 {
        stats["total"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {stats}"))
    }

    /// One drop counter.
    pub fn drops(stats: &Value, reason: &str) -> u64 {
        stats["total"]["drops"][reason]
            .as_u64()
            .unwrap_or_else(|| panic!("no drop reason {reason} in {stats}"))
    }

    /// What target `i` (0-based) logged: "tcp|udp ip:port" lines.
    pub fn target_log(&self, i: usize) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("t{}.log", i + 1)))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The MAC of the appliance's consumer-side port, as the consumer resolved it.
    pub fn appliance_mac(&self) -> String {
        assert!(self.ping(CONSUMER_APPLIANCE, 1), "appliance answers ping");
        let out = self
            .consumer
            .must(&["ip", "neigh", "show", CONSUMER_APPLIANCE]);
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .unwrap_or_else(|| panic!("no lladdr in {out:?}"))
            .to_owned()
    }

    /// The consumer interface's own MAC.
    pub fn consumer_mac(&self) -> String {
        self.consumer
            .must(&[
                "cat",
                &format!("/sys/class/net/{}/address", self.consumer_if),
            ])
            .trim()
            .to_owned()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").id()
    }

    /// Rewrites the configuration with `opts` and asks privlinkd to reload it (SIGHUP),
    /// waiting until the new snapshot is live.
    pub fn reload(&mut self, opts: Options) {
        self.opts = opts;
        std::fs::write(&self.config_path, self.config_toml()).expect("write config");
        let before = std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .matches("reloaded:")
            .count();
        let pid = self.daemon.as_ref().expect("daemon").id().to_string();
        must(&["kill", "-HUP", &pid]);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches("reloaded:").count() > before {
                break;
            }
            assert!(Instant::now() < end, "reload not applied:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `privlinkctl --json ARGS` as `uid` (0 = root/admin) against this daemon.
    /// Returns (success, parsed JSON of stdout or Null, stderr).
    pub fn ctl(&self, uid: u32, args: &[&str]) -> (bool, Value, String) {
        let sock = self.dir.join("privlink.sock").display().to_string();
        let ctl = privlinkctl().display().to_string();
        let uid_s = uid.to_string();
        let reuid = format!("--reuid={uid_s}");
        let regid = format!("--regid={uid_s}");
        let mut full: Vec<&str> = if uid == 0 {
            vec![]
        } else {
            vec!["setpriv", &reuid, &regid, "--clear-groups"]
        };
        full.extend_from_slice(&[&ctl, "--socket", &sock, "--json"]);
        full.extend_from_slice(args);
        let out = run(&full, Duration::from_secs(20));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
        (
            out.status.success(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ctl` that must succeed.
    pub fn ctl_ok(&self, uid: u32, args: &[&str]) -> Value {
        let (ok, v, err) = self.ctl(uid, args);
        assert!(
            ok,
            "privlinkctl {args:?} as uid {uid} failed: {err}\n{}",
            self.log()
        );
        v
    }

    /// Stops privlinkd and starts it again on the same configuration and state.
    pub fn restart(&mut self) {
        let (clean, _) = self.stop();
        assert!(clean, "privlinkd stops cleanly:\n{}", self.log());
        self.start_again();
    }

    /// Kills privlinkd with SIGKILL: no clean stop, the state directory is as a crash
    /// leaves it. [`Topology::start_again`] brings it back.
    pub fn crash(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Starts privlinkd again after [`Topology::stop`] or [`Topology::crash`], on the
    /// same configuration and state.
    pub fn start_again(&mut self) {
        // The tap interfaces went with the old process; wait until they are gone.
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end
            && (self
                .consumer
                .exec(
                    &["ip", "link", "show", &self.consumer_if],
                    Duration::from_secs(5),
                )
                .status
                .success()
                || self
                    .provider
                    .exec(
                        &["ip", "link", "show", &self.provider_if],
                        Duration::from_secs(5),
                    )
                    .status
                    .success())
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.start_daemon();
        self.wire_namespaces();
        self.start_captures();
    }

    /// Starts privlinkd expecting it to fail; returns its log.
    pub fn start_expecting_failure(&mut self) -> String {
        let _ = self.stop();
        let log = std::fs::File::create(&self.log_path).expect("log file");
        let status = Command::new(privlinkd())
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .status()
            .expect("run privlinkd");
        assert!(
            !status.success(),
            "privlinkd must refuse to start:\n{}",
            self.log()
        );
        self.log()
    }

    /// Waits (bounded) for privlinkd to exit on its own; its exit status, or None if it is
    /// still running at `limit` (it is then left for [`Topology::stop`]).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(d) = self.daemon.as_mut() {
                if let Ok(Some(status)) = d.try_wait() {
                    self.daemon = None;
                    return Some(status);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Stops privlinkd with SIGTERM and returns its exit success and final totals.
    pub fn stop(&mut self) -> (bool, Value) {
        let Some(mut d) = self.daemon.take() else {
            return (false, Value::Null);
        };
        let _ = run(
            &["kill", "-TERM", &d.id().to_string()],
            Duration::from_secs(5),
        );
        let end = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Ok(Some(s)) = d.try_wait() {
                break Some(s);
            }
            if Instant::now() > end {
                let _ = d.kill();
                let _ = d.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = std::fs::read_to_string(self.dir.join("privlinkd.out")).unwrap_or_default();
        let totals = out
            .lines()
            .find_map(|l| l.strip_prefix("totals "))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or(Value::Null);
        (status.is_some_and(|s| s.success()), totals)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // tcpdump writes each packet as it comes (-U): killing it loses nothing.
        for s in self.captures.iter_mut().chain(self.servers.iter_mut()) {
            let _ = s.kill();
            let _ = s.wait();
        }
        if self.daemon.is_some() {
            let _ = self.stop();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- privlinkd log ({}) ---\n{}",
                self.log_path.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let _ = run(
            &["rm", "-rf", &format!("/var/run/dpdk/{}", self.prefix)],
            Duration::from_secs(5),
        );
    }
}
