//! End-to-end test support: `privlinkd` on two `net_tap` ports whose kernel sides are
//! moved into a consumer and a provider network namespace, with real kernel TCP/UDP stacks
//! (Python servers and clients) on either side. [`Topology`] is one daemon; [`Pair`] is an
//! HA pair, two daemons whose taps are ports of a bridge in each namespace.
//!
//! Every name (namespaces, interfaces, DPDK file prefix) is unique per test, every wait is
//! bounded, and [`Topology`] and [`Pair`] tear everything down in `Drop`, so a failing test
//! leaves nothing behind. Traffic never leaves the namespaces the test created (a pair's
//! sync link is UDP on 127.0.0.1 of the root namespace, on ports free when it starts).

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
/// The appliance's IPv6 address in the consumer VPC (with [`Options::ipv6`]).
pub const CONSUMER_APPLIANCE6: &str = "fd00:c1::1";
/// The consumer namespace's IPv6 address (with [`Options::ipv6`]).
pub const CONSUMER_CLIENT6: &str = "fd00:c1::10";
pub const ENDPOINT_IP: &str = "10.1.0.100";
/// Provider VPC addresses.
pub const PROVIDER_APPLIANCE: &str = "10.2.0.1";
pub const SNAT_IP: &str = "10.2.0.100";
pub const TARGETS: [&str; 3] = ["10.2.0.11", "10.2.0.12", "10.2.0.13"];
/// With [`Options::provider6`]: the appliance's, the targets' (the first two targets'
/// servers serve on these too) and the IPv6 SNAT address in the provider VPC.
pub const PROVIDER_APPLIANCE6: &str = "fd00:b1::1";
pub const TARGETS6: [&str; 2] = ["fd00:b1::11", "fd00:b1::12"];
pub const SNAT6: &str = "fd00:b1::100";
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
    /// Sections appended to the configuration (e.g. `[cluster]`).
    pub extra_toml: String,
    /// Run the EAL on hugepages (256 MB of them) instead of `--no-huge`: DPDK's secondary
    /// processes (dpdk-dumpcap) can attach only then.
    pub hugepages: bool,
    /// Give the consumer attachment [`CONSUMER_APPLIANCE6`] and the consumer namespace's
    /// interface [`CONSUMER_CLIENT6`] (IPv6 stays off everywhere else: its router
    /// solicitations and reports would be counted drops).
    pub ipv6: bool,
    /// Put the consumer's client (`[0]`) or the targets (`[1]`) behind a router namespace
    /// whose link to them has this MTU, the hosts' routes advertising the MSS of a
    /// 1500-byte link: only path-MTU discovery through the appliance finds the narrow
    /// link (see [`Topology::router`]).
    pub narrow: [Option<u16>; 2],
    /// The declared endpoint is dual stack, at [`ENDPOINT6`] as well, and the service
    /// accepts IPv6 endpoints (with [`Options::ipv6`]).
    pub dual_stack: bool,
    /// The consumer attachment's `gateway6` (with [`Options::ipv6`]).
    pub gateway6: Option<&'static str>,
    /// The provider VPC has IPv6 too ([`PROVIDER_APPLIANCE6`]/64, the targets also on
    /// [`TARGETS6`]), and the service the IPv6 SNAT address [`SNAT6`] with listeners
    /// tcp/443 and udp/9443 of the IPv6 targets (NAT66), health-checked over IPv6.
    pub provider6: bool,
}

/// The declared endpoint's IPv6 address with [`Options::dual_stack`].
pub const ENDPOINT6: &str = "fd00:c1::64";

/// The consumer's and the provider's router of [`Options::narrow`], on the appliance's
/// subnets.
pub const ROUTERS: [&str; 2] = ["10.1.0.254", "10.2.0.254"];
/// The consumer router's IPv6 address.
pub const CONSUMER_ROUTER6: &str = "fd00:c1::fe";
/// The provider router's IPv6 address (with [`Options::provider6`]).
pub const PROVIDER_ROUTER6: &str = "fd00:b1::fe";

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
            hugepages: false,
            ipv6: false,
            workers_extra: String::new(),
            port_mtu: [None, None],
            narrow: [None, None],
            dual_stack: false,
            gateway6: None,
            provider6: false,
            listener_extra: String::new(),
            extra_toml: String::new(),
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
    /// The routers of [`Options::narrow`], where asked for.
    pub routers: [Option<Netns>; 2],
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
fn spawn_target(provider: &Netns, dir: &Path, i: usize, bind6: Option<&str>) -> Child {
    let name = format!("t{}", i + 1);
    let log = dir.join(format!("{name}.log")).display().to_string();
    let health = dir.join(format!("t{}.health", i + 1)).display().to_string();
    let mut args = vec![
        "python3".to_owned(),
        support("target_server.py"),
        "--bind".to_owned(),
        TARGETS[i].to_owned(),
        "--name".to_owned(),
        name.clone(),
        "--log".to_owned(),
        log,
        "--health".to_owned(),
        health,
    ];
    if let Some(a) = bind6 {
        args.extend(["--bind6".to_owned(), a.to_owned()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = provider.spawn(&args, Stdio::piped());
    let stdout = child.stdout.take().expect("server stdout");
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    assert!(
        line.starts_with("target"),
        "target server {name} did not start: {line:?}"
    );
    child
}

/// Runs `privlinkctl --json ARGS` as `uid` (0 = root/admin) against the daemon listening
/// on `socket`. Returns (success, parsed JSON of stdout or Null, stderr).
pub fn ctl_at(socket: &Path, uid: u32, args: &[&str]) -> (bool, Value, String) {
    let sock = socket.display().to_string();
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
snat_addresses = [{snat}]
acceptance_required = false
allowed_principals = ["111111111111"]
{types}

[[services.listeners]]
protocol = "tcp"
port = 80
targets = [{t80}]
{listener_extra}

[[services.listeners]]
protocol = "udp"
port = 9000
targets = [{t9000}]
{listeners6}
[[endpoints]]
id = "vpce-0e0000000000000e1"
owner = "111111111111"
vpc_id = "vpc-0c0000000000000c1"
service_id = "vpce-svc-0d0000000000000d1"
ip = "{ep}"
{ep6}
state = "available"
"#,
        snat = if o.provider6 {
            format!("\"{SNAT_IP}\", \"{SNAT6}\"")
        } else {
            format!("\"{SNAT_IP}\"")
        },
        listeners6 = if o.provider6 {
            let t6 = |port: u16| {
                TARGETS6
                    .iter()
                    .map(|t| format!("{{ ip = \"{t}\", port = {port} }}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "\n[[services.listeners]]\nprotocol = \"tcp\"\nport = 443\ntargets = [{}]\n\
                 health_check_interval_seconds = 5\nhealth_check_timeout_seconds = 2\n\
                 healthy_threshold_count = 2\n\n\
                 [[services.listeners]]\nprotocol = \"udp\"\nport = 9443\ntargets = [{}]\n\
                 health_check_port = 8080\n",
                t6(8080),
                t6(9000)
            )
        } else {
            String::new()
        },
        ep = ENDPOINT_IP,
        types = if o.dual_stack {
            "supported_ip_address_types = [\"ipv4\", \"ipv6\"]"
        } else {
            ""
        },
        ep6 = if o.dual_stack {
            format!("ip_address_type = \"dualstack\"\nip6 = \"{ENDPOINT6}\"")
        } else {
            String::new()
        },
        t80 = targets(8080),
        t9000 = targets(9000),
        listener_extra = o.listener_extra,
    );
    let huge = if o.hugepages { "" } else { "\"--no-huge\", " };
    format!(
        r#"# privlink end-to-end test topology {file_prefix}
[eal]
args = ["--lcores={map}", "--no-pci", {huge}"-m", "256", "--file-prefix={file_prefix}",
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
{address6}

[[vpcs]]
vpc_id = "vpc-0b0000000000000b1"
account = "222222222222"
port = "net_tap_{prefix}p"
address = "{papp}/24"
{paddress6}

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
{extra}
"#,
        extra = o.extra_toml,
        file_prefix = names.file_prefix,
        prefix = names.dev,
        cif = names.consumer_if,
        pif = names.provider_if,
        dir = names.dir.display(),
        capp = CONSUMER_APPLIANCE,
        address6 = match (o.ipv6, o.gateway6) {
            (true, Some(gw)) => {
                format!("address6 = \"{CONSUMER_APPLIANCE6}/64\"\ngateway6 = \"{gw}\"")
            }
            (true, None) => format!("address6 = \"{CONSUMER_APPLIANCE6}/64\""),
            _ => String::new(),
        },
        papp = PROVIDER_APPLIANCE,
        paddress6 = if o.provider6 {
            format!("address6 = \"{PROVIDER_APPLIANCE6}/64\"")
        } else {
            String::new()
        },
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

/// The events a `subscribe-events` child ([`Topology::subscribe`]) printed, once it exits
/// (or is killed after `limit`).
pub fn events_of(mut child: Child, limit: Duration) -> Vec<Value> {
    let end = Instant::now() + limit;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let Ok(out) = child.wait_with_output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect()
}

impl Topology {
    /// `privlinkctl --json subscribe-events --count COUNT` as `uid`, in the background,
    /// once its subscription is in (the daemon logged it); read with [`events_of`].
    pub fn subscribe(&self, uid: u32, count: u32) -> Child {
        let before = self.log().matches("op=subscribe-events").count();
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
            ])
            .arg(privlinkctl())
            .arg("--socket")
            .arg(self.dir.join("privlink.sock"))
            .args(["--json", "subscribe-events", "--count", &count.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("privlinkctl");
        let end = Instant::now() + Duration::from_secs(10);
        while self.log().matches("op=subscribe-events").count() <= before && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// The EAL `--file-prefix` privlinkd runs with: what DPDK's secondary processes
    /// (dpdk-dumpcap) and the telemetry client are given to find it.
    pub fn file_prefix(&self) -> &str {
        &self.prefix
    }

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
            routers: [None, None],
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

    fn wire_namespaces(&mut self) {
        for side in 0..2 {
            if let Some(mtu) = self.opts.narrow[side] {
                self.wire_router(side, mtu);
            }
        }
        for (side, (ifname, ns, addrs)) in [
            (&self.consumer_if, &self.consumer, vec![CONSUMER_CLIENT]),
            (&self.provider_if, &self.provider, TARGETS.to_vec()),
        ]
        .into_iter()
        .enumerate()
        {
            if self.routers[side].is_some() {
                continue;
            }
            must(&["ip", "link", "set", ifname, "netns", &ns.name]);
            let v6 = if *ifname == self.consumer_if {
                self.opts.ipv6
            } else {
                self.opts.provider6
            };
            let _ = ns.exec(
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{ifname}.disable_ipv6={}", u8::from(!v6)),
                ],
                Duration::from_secs(5),
            );
            for a in addrs {
                ns.must(&["ip", "addr", "add", &format!("{a}/24"), "dev", ifname]);
            }
            let addrs6 = match side {
                0 => vec![CONSUMER_CLIENT6],
                _ => TARGETS6.to_vec(),
            };
            for a in addrs6.iter().filter(|_| v6) {
                let a = format!("{a}/64");
                ns.must(&["ip", "-6", "addr", "add", &a, "dev", ifname, "nodad"]);
            }
            ns.must(&["ip", "link", "set", ifname, "up"]);
        }
    }

    /// Side `side`'s tap in a router namespace (made on the first start, kept across
    /// restarts), its hosts behind it on a veth of MTU `mtu`. The router answers ARP for
    /// either side of it (proxy ARP, so the appliance's subnets stay as they are) and,
    /// where the side has IPv6, neighbour solicitations for its hosts and the appliance's
    /// addresses there (the attachment's; on the provider's side the SNAT address too;
    /// endpoints with [`Topology::proxy_ndp`]).
    fn wire_router(&mut self, side: usize, mtu: u16) {
        let (ifname, host_ns, addrs, subnet) = match side {
            0 => (
                &self.consumer_if,
                &self.consumer,
                vec![CONSUMER_CLIENT],
                "10.1.0.0/24",
            ),
            _ => (
                &self.provider_if,
                &self.provider,
                TARGETS.to_vec(),
                "10.2.0.0/24",
            ),
        };
        let v6 = [self.opts.ipv6, self.opts.provider6][side];
        // Per side: the router's IPv6 address, the hosts behind it, their prefix, and
        // the appliance's addresses the hosts must find through it.
        let (router6, hosts6, prefix6, appliance6): (_, Vec<&str>, _, Vec<&str>) = match side {
            0 => (
                CONSUMER_ROUTER6,
                vec![CONSUMER_CLIENT6],
                "fd00:c1::/64",
                vec![CONSUMER_APPLIANCE6],
            ),
            _ => (
                PROVIDER_ROUTER6,
                TARGETS6.to_vec(),
                "fd00:b1::/64",
                vec![PROVIDER_APPLIANCE6, SNAT6],
            ),
        };
        let tag = ["c", "p"][side];
        let (rv, hv) = (
            format!("{}{tag}r", self.prefix),
            format!("{}{tag}h", self.prefix),
        );
        let first = self.routers[side].is_none();
        let r = self.routers[side]
            .get_or_insert_with(|| Netns::new(&format!("{}-{tag}rt", self.prefix)));
        must(&["ip", "link", "set", ifname, "netns", &r.name]);
        let sysctl = |ns: &Netns, kv: String| {
            ns.must(&["sysctl", "-qw", &kv]);
        };
        sysctl(
            r,
            format!("net.ipv6.conf.{ifname}.disable_ipv6={}", u8::from(!v6)),
        );
        sysctl(r, format!("net.ipv4.conf.{ifname}.proxy_arp=1"));
        r.must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ROUTERS[side]),
            "dev",
            ifname,
        ]);
        if v6 {
            let a = format!("{router6}/64");
            r.must(&["ip", "-6", "addr", "add", &a, "dev", ifname, "nodad"]);
        }
        r.must(&["ip", "link", "set", ifname, "up"]);
        for h in hosts6.iter().filter(|_| v6) {
            r.must(&["ip", "-6", "neigh", "add", "proxy", h, "dev", ifname]);
        }
        if !first {
            return;
        }
        must(&[
            "ip", "link", "add", &rv, "type", "veth", "peer", "name", &hv,
        ]);
        must(&["ip", "link", "set", &rv, "netns", &r.name]);
        must(&["ip", "link", "set", &hv, "netns", &host_ns.name]);
        for kv in [
            "net.ipv4.ip_forward=1".to_owned(),
            "net.ipv4.conf.all.rp_filter=0".to_owned(),
            format!("net.ipv4.conf.{rv}.proxy_arp=1"),
            format!("net.ipv6.conf.{rv}.disable_ipv6={}", u8::from(!v6)),
            format!("net.ipv6.conf.all.forwarding={}", u8::from(v6)),
            format!("net.ipv6.conf.all.proxy_ndp={}", u8::from(v6)),
        ] {
            sysctl(r, kv);
        }
        let m = mtu.to_string();
        r.must(&["ip", "link", "set", &rv, "mtu", &m, "up"]);
        for a in &addrs {
            r.must(&["ip", "route", "add", &format!("{a}/32"), "dev", &rv]);
        }
        for h in hosts6.iter().filter(|_| v6) {
            let host = format!("{h}/128");
            r.must(&["ip", "-6", "route", "add", &host, "dev", &rv]);
        }
        sysctl(
            host_ns,
            format!("net.ipv6.conf.{hv}.disable_ipv6={}", u8::from(!v6)),
        );
        host_ns.must(&["ip", "link", "set", &hv, "mtu", &m]);
        for a in &addrs {
            host_ns.must(&["ip", "addr", "add", &format!("{a}/24"), "dev", &hv]);
        }
        for h in hosts6.iter().filter(|_| v6) {
            let a = format!("{h}/64");
            host_ns.must(&["ip", "-6", "addr", "add", &a, "dev", &hv, "nodad"]);
        }
        host_ns.must(&["ip", "link", "set", &hv, "up"]);
        // The MSS of a 1500-byte link, whatever this one's MTU: the peer sends full-size
        // segments, and only the narrow link's errors can make them smaller.
        host_ns.must(&[
            "ip", "route", "replace", subnet, "dev", &hv, "proto", "kernel", "scope", "link",
            "src", addrs[0], "advmss", "1460",
        ]);
        if v6 {
            host_ns.must(&[
                "ip", "-6", "route", "replace", prefix6, "dev", &hv, "proto", "kernel", "metric",
                "256", "advmss", "1440",
            ]);
            for a in appliance6 {
                r.must(&["ip", "-6", "neigh", "replace", "proxy", a, "dev", &rv]);
            }
        }
    }

    /// Has the consumer's router answer neighbour solicitations from the client for `ip6`
    /// (an endpoint's IPv6 address, made at run time).
    pub fn proxy_ndp(&self, ip6: &str) {
        if let Some(r) = &self.routers[0] {
            let rv = format!("{}cr", self.prefix);
            r.must(&["ip", "-6", "neigh", "replace", "proxy", ip6, "dev", &rv]);
        }
    }

    /// Puts the consumer's client on IPv6 prefix `far` too (address `host`, e.g.
    /// `fd00:c9::10`), beyond the consumer's router: the router routes `far` to it and
    /// answers from the link-local `router_ll` on the appliance's side, which reaches
    /// `host` only through its `gateway6`. Needs [`Options::narrow`] on the consumer side.
    pub fn far_consumer6(&self, host: &str, far: &str, router_ll: &str) {
        let r = self.routers[0].as_ref().expect("a consumer-side router");
        let (rv, hv) = (format!("{}cr", self.prefix), format!("{}ch", self.prefix));
        let ll = format!("{router_ll}/64");
        r.must(&[
            "ip",
            "-6",
            "addr",
            "add",
            &ll,
            "dev",
            &self.consumer_if,
            "nodad",
        ]);
        r.must(&["ip", "-6", "route", "replace", far, "dev", &rv]);
        let a = format!("{host}/64");
        self.consumer
            .must(&["ip", "-6", "addr", "add", &a, "dev", &hv, "nodad"]);
    }

    /// The router namespace of side `side` (0: consumer, 1: provider), if
    /// [`Options::narrow`] asked for one.
    pub fn router(&self, side: usize) -> Option<&Netns> {
        self.routers[side].as_ref()
    }

    fn start_servers(&mut self) {
        for i in 0..TARGETS.len() {
            let child = self.spawn_server(i);
            self.servers.push(child);
        }
    }

    fn spawn_server(&self, i: usize) -> Child {
        let bind6 = TARGETS6.get(i).copied().filter(|_| self.opts.provider6);
        spawn_target(&self.provider, &self.dir, i, bind6)
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

    /// Pings IPv6 `ip` from the consumer namespace; true when every echo was answered.
    pub fn ping6(&self, ip: &str, count: u32) -> bool {
        self.consumer
            .exec(
                &[
                    "ping",
                    "-6",
                    "-c",
                    &count.to_string(),
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    ip,
                ],
                Duration::from_secs(10),
            )
            .status
            .success()
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
        ctl_at(&self.dir.join("privlink.sock"), uid, args)
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

// ---------------------------------------------------------------------------------------
// An HA pair: two privlinkd on the same consumer and provider networks.
// ---------------------------------------------------------------------------------------

/// What privlinkd logs (RUST_LOG=info) when its node of an HA pair turns active.
pub const LOG_ACTIVE: &str = "ha: this node is now active";
/// What privlinkd logs when its node of an HA pair turns standby.
pub const LOG_STANDBY: &str = "ha: this node is now standby";
/// What privlinkd logs when its HA thread starts: every node starts standby, and a node
/// that hears an active peer stays so without logging [`LOG_STANDBY`].
pub const LOG_STARTS_STANDBY: &str = "; starting standby";
/// The pair's shared sync key in the tests (hex, 32 bytes).
pub const HA_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// The consumer bridge's MAC (fixed: a bridge whose MAC followed its lowest port's would
/// change MAC when the active node's tap leaves it, and the appliance would then send the
/// client's replies to a MAC nobody has).
const CONSUMER_BRIDGE_MAC: &str = "02:00:0a:01:00:0a";
/// The provider bridge's MAC (fixed, as the consumer's).
const PROVIDER_BRIDGE_MAC: &str = "02:00:0a:02:00:0b";
/// The bridge device in each namespace of a [`Pair`] (names are per namespace).
pub const BRIDGE: &str = "br0";

/// One node of an HA [`Pair`], named as in `[ha] nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    pub const BOTH: [Node; 2] = [Node::A, Node::B];

    /// The node's name in `[ha] nodes` ("a" or "b").
    pub fn name(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }

    /// The peer.
    pub fn other(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Node::A => 0,
            Node::B => 1,
        }
    }
}

/// A node's role, as the last role change in its log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Active,
    Standby,
}

/// The `[ha]` settings of a [`Pair`] beyond the nodes' names and sync addresses.
#[derive(Debug, Clone)]
pub struct HaOptions {
    pub heartbeat_ms: u32,
    pub dead_after: u32,
    pub preempt: bool,
    /// Priorities of a and b (the higher is active when both could be).
    pub priority: [u8; 2],
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            heartbeat_ms: 100,
            dead_after: 3,
            preempt: false,
            priority: [200, 100],
        }
    }
}

/// One privlinkd of a [`Pair`]: its names, files and process.
#[derive(Debug)]
pub struct PairNode {
    pub node: Node,
    /// Kernel names of its two taps (bridge ports in the namespaces while it runs).
    pub consumer_if: String,
    pub provider_if: String,
    /// Its own directory: configuration, socket, state, stats, logs.
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub stats_path: PathBuf,
    /// The current run's log (earlier runs' are `privlinkd.<run>.log` beside it).
    pub log_path: PathBuf,
    pub socket: PathBuf,
    file_prefix: String,
    daemon: Option<Child>,
    /// Starts so far.
    runs: u32,
}

impl PairNode {
    /// Whether `ifname` exists in `ns` or in the root namespace (where DPDK makes taps).
    fn taps_present(&self, consumer: &Netns, provider: &Netns) -> bool {
        let here = |ns: Option<&Netns>, ifname: &str| {
            let args = ["ip", "link", "show", ifname];
            let out = match ns {
                Some(ns) => ns.exec(&args, Duration::from_secs(5)),
                None => run(&args, Duration::from_secs(5)),
            };
            out.status.success()
        };
        here(Some(consumer), &self.consumer_if)
            || here(Some(provider), &self.provider_if)
            || here(None, &self.consumer_if)
            || here(None, &self.provider_if)
    }

    /// The logs of earlier runs, oldest first, then the current one.
    fn all_logs(&self) -> String {
        let mut text = String::new();
        for run in 1..self.runs {
            let p = self.dir.join(format!("privlinkd.{run}.log"));
            let _ = writeln!(
                text,
                "--- node {} run {run} ({}) ---\n{}",
                self.node.name(),
                p.display(),
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
        let _ = writeln!(
            text,
            "--- node {} run {} ({}) ---\n{}",
            self.node.name(),
            self.runs,
            self.log_path.display(),
            std::fs::read_to_string(&self.log_path).unwrap_or_default()
        );
        text
    }
}

/// An HA pair: privlinkd nodes "a" and "b" on the same consumer and provider networks, a
/// client in the consumer namespace, target servers in the provider namespace.
///
/// ```text
///   consumer ns: br0 10.1.0.10/24 ─┬─ <p>ac ══ privlinkd a ══ <p>ap ─┬─ br0 10.2.0.11-13/24 :provider ns
///                                  └─ <p>bc ══ privlinkd b ══ <p>bp ─┘
///               sync link: kernel UDP on 127.0.0.1 between a's and b's sync ports
/// ```
///
/// Both nodes read configurations that differ only in their names (`[eal]` file prefix and
/// tap names, `[mgmt]` paths, `[ha] node`); the objects, ports, VPCs and `[ha] nodes` are
/// the same. The `net_tap` device names are the same on both (they are per process), so
/// the ports and VPCs are too. Both nodes get `PRIVLINK_HA_TEST_CUT` naming one file:
/// [`Pair::cut_sync`] cuts their sync link by creating it.
///
/// Every name is unique per test, every wait is bounded, and `Drop` kills both daemons
/// and deletes the namespaces (and with them the bridges), even when the test panics.
#[derive(Debug)]
pub struct Pair {
    pub consumer: Netns,
    pub provider: Netns,
    pub dir: PathBuf,
    /// The file whose existence cuts the sync link (`PRIVLINK_HA_TEST_CUT`).
    pub cut_path: PathBuf,
    /// UDP ports of a's and b's sync addresses on 127.0.0.1.
    pub sync_ports: [u16; 2],
    pub opts: Options,
    pub ha: HaOptions,
    pub nodes: [PairNode; 2],
    prefix: String,
    servers: Vec<Child>,
}

/// Two UDP ports free on 127.0.0.1 now (both sockets held at once, so they differ).
fn free_udp_ports() -> [u16; 2] {
    let bind = || std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    let (s1, s2) = (bind(), bind());
    let port = |s: &std::net::UdpSocket| s.local_addr().expect("local address").port();
    [port(&s1), port(&s2)]
}

/// What `ping` reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingSummary {
    pub transmitted: u32,
    pub received: u32,
}

impl PingSummary {
    /// From ping's "N packets transmitted, M received" line (None without one).
    pub fn parse(text: &str) -> Option<PingSummary> {
        let line = text.lines().find(|l| l.contains("packets transmitted"))?;
        let mut numbers = line
            .split(',')
            .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok());
        Some(PingSummary {
            transmitted: numbers.next()?,
            received: numbers.next()?,
        })
    }

    /// Lost echoes, per cent of those sent.
    pub fn loss_percent(&self) -> f64 {
        if self.transmitted == 0 {
            return 100.0;
        }
        100.0 * f64::from(self.transmitted - self.received.min(self.transmitted))
            / f64::from(self.transmitted)
    }
}

impl Pair {
    /// [`Pair::start_with`] the default `[ha]` settings (heartbeat 100 ms, dead after 3,
    /// no preemption, a above b).
    pub fn start(opts: Options) -> Pair {
        Pair::start_with(opts, HaOptions::default())
    }

    /// Creates the namespaces and their bridges, starts the target servers, then node a
    /// (until it logs [`LOG_ACTIVE`]) and node b (until it is standby and hears a:
    /// [`Pair::wait_standby_with_peer`]), each with its taps joined to the bridges.
    pub fn start_with(opts: Options, ha: HaOptions) -> Pair {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("pl{}x{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("privlink-e2e-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        let nodes = Node::BOTH.map(|node| {
            let ndir = dir.join(node.name());
            std::fs::create_dir_all(&ndir).expect("node directory");
            PairNode {
                node,
                consumer_if: format!("{prefix}{}c", node.name()),
                provider_if: format!("{prefix}{}p", node.name()),
                config_path: ndir.join("privlink.toml"),
                stats_path: ndir.join("stats.json"),
                log_path: ndir.join("privlinkd.log"),
                socket: ndir.join("privlink.sock"),
                dir: ndir,
                file_prefix: format!("{prefix}{}", node.name()),
                daemon: None,
                runs: 0,
            }
        });
        let mut p = Pair {
            consumer: Netns::new(&format!("{prefix}-cons")),
            provider: Netns::new(&format!("{prefix}-prov")),
            cut_path: dir.join("ha-cut-sync"),
            sync_ports: free_udp_ports(),
            dir,
            opts,
            ha,
            nodes,
            prefix,
            servers: Vec::new(),
        };
        Pair::bridge(&p.consumer, CONSUMER_BRIDGE_MAC, &[CONSUMER_CLIENT]);
        if p.opts.ipv6 {
            // The consumer's bridge speaks IPv6 too (the taps stay without: they are
            // only its ports).
            let v6 = format!("net.ipv6.conf.{BRIDGE}.disable_ipv6=0");
            p.consumer.must(&["sysctl", "-qw", &v6]);
            let a = format!("{CONSUMER_CLIENT6}/64");
            p.consumer
                .must(&["ip", "-6", "addr", "add", &a, "dev", BRIDGE, "nodad"]);
        }
        Pair::bridge(&p.provider, PROVIDER_BRIDGE_MAC, &TARGETS);
        for node in Node::BOTH {
            let text = p.config_toml(node);
            std::fs::write(&p.nodes[node.index()].config_path, text).expect("write config");
        }
        // The targets' addresses are on the bridge, which outlives the daemons: the
        // servers can start first and stay through every failover.
        for i in 0..TARGETS.len() {
            let child = spawn_target(&p.provider, &p.dir, i, None);
            p.servers.push(child);
        }
        p.launch(Node::A);
        p.wait_log(Node::A, LOG_ACTIVE, Duration::from_secs(30));
        p.launch(Node::B);
        p.wait_standby_with_peer(Node::B);
        p
    }

    /// Waits until `node` is standby and hears its peer: its log says standby (a start
    /// or a change), and its stats say the peer is alive; without `HighAvailability` in
    /// its stats, until it stayed standby for twice the time a silent peer takes to be
    /// declared dead. Panics otherwise, with both logs.
    pub fn wait_standby_with_peer(&mut self, node: Node) {
        self.wait_role(node, Role::Standby, Duration::from_secs(30));
        let (heard, status) = self.wait_ha_status(node, Duration::from_secs(10), |v| {
            v.is_null() || (v["PeerAlive"] == true && v["Role"] == "standby")
        });
        if status.is_null() {
            let dead = u64::from(self.ha.heartbeat_ms) * u64::from(self.ha.dead_after);
            std::thread::sleep(Duration::from_millis(2 * dead + 200));
        }
        assert!(
            heard && self.role(node) == Some(Role::Standby),
            "node {} is not a standby hearing its peer: {status}\n{}",
            node.name(),
            self.logs()
        );
    }

    /// The configuration TOML of `node`: the single-node topology's, with this node's
    /// names, and `[ha]`.
    pub fn config_toml(&self, node: Node) -> String {
        let n = &self.nodes[node.index()];
        let mut text = render_config(
            &self.opts,
            &ConfigNames {
                file_prefix: &n.file_prefix,
                dev: &self.prefix,
                consumer_if: &n.consumer_if,
                provider_if: &n.provider_if,
                dir: &n.dir,
            },
        );
        let h = &self.ha;
        let _ = write!(
            text,
            r#"
[ha]
node = "{me}"
key = "{key}"
heartbeat_ms = {hb}
dead_after = {dead}
preempt = {preempt}
nodes = [
  {{ name = "a", sync = "127.0.0.1:{pa}", priority = {prio_a} }},
  {{ name = "b", sync = "127.0.0.1:{pb}", priority = {prio_b} }},
]
"#,
            me = node.name(),
            key = HA_KEY,
            hb = h.heartbeat_ms,
            dead = h.dead_after,
            preempt = h.preempt,
            pa = self.sync_ports[0],
            pb = self.sync_ports[1],
            prio_a = h.priority[0],
            prio_b = h.priority[1],
        );
        text
    }

    /// A bridge in `ns` with a fixed MAC and `addrs` (/24) on it, up, IPv6 off (the
    /// consumer's gets it back with [`Options::ipv6`]).
    fn bridge(ns: &Netns, mac: &str, addrs: &[&str]) {
        ns.must(&[
            "ip", "link", "add", BRIDGE, "address", mac, "type", "bridge",
        ]);
        let _ = ns.exec(
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{BRIDGE}.disable_ipv6=1"),
            ],
            Duration::from_secs(5),
        );
        for a in addrs {
            ns.must(&["ip", "addr", "add", &format!("{a}/24"), "dev", BRIDGE]);
        }
        ns.must(&["ip", "link", "set", BRIDGE, "up"]);
    }

    /// Starts `node`'s daemon (its taps from an earlier run gone first), waits until it is
    /// ready, and joins its new taps to the bridges.
    fn launch(&mut self, node: Node) {
        let i = node.index();
        assert!(
            self.nodes[i].daemon.is_none(),
            "node {} is already running",
            node.name()
        );
        let end = Instant::now() + Duration::from_secs(10);
        while self.nodes[i].taps_present(&self.consumer, &self.provider) {
            assert!(
                Instant::now() < end,
                "node {}'s taps from its last run are still there after 10 s",
                node.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let cut = self.cut_path.display().to_string();
        let n = &mut self.nodes[i];
        if n.runs > 0 {
            let old = n.dir.join(format!("privlinkd.{}.log", n.runs));
            let _ = std::fs::rename(&n.log_path, old);
        }
        n.runs += 1;
        let log = std::fs::File::create(&n.log_path).expect("log file");
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(n.dir.join("privlinkd.out"))
            .expect("out file");
        let child = Command::new(privlinkd())
            .arg("--config")
            .arg(&n.config_path)
            .env("RUST_LOG", "info")
            .env("PRIVLINK_HA_TEST_CUT", &cut)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .expect("spawn privlinkd");
        n.daemon = Some(child);
        self.wait_log(node, "privlinkd ready", Duration::from_secs(30));
        self.wire(node);
    }

    /// Moves `node`'s taps (DPDK makes them in the root namespace) into the namespaces and
    /// makes them ports of the bridges.
    fn wire(&self, node: Node) {
        let n = &self.nodes[node.index()];
        for (ifname, ns) in [
            (&n.consumer_if, &self.consumer),
            (&n.provider_if, &self.provider),
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
            ns.must(&["ip", "link", "set", ifname, "master", BRIDGE]);
            ns.must(&["ip", "link", "set", ifname, "up"]);
        }
    }

    /// One node's names, files and process.
    pub fn node(&self, node: Node) -> &PairNode {
        &self.nodes[node.index()]
    }

    /// Whether `node`'s daemon is running (started and not killed, stopped or exited).
    pub fn is_running(&mut self, node: Node) -> bool {
        let n = &mut self.nodes[node.index()];
        match n.daemon.as_mut() {
            Some(d) => matches!(d.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `node`'s daemon's process id (panics when it is not running).
    pub fn pid(&self, node: Node) -> u32 {
        self.nodes[node.index()]
            .daemon
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is not running", node.name()))
            .id()
    }

    /// Kills `node` with SIGKILL (a crash: no goodbye on the sync link, no clean stop),
    /// reaps it, and waits (bounded) until its taps are gone.
    pub fn kill(&mut self, node: Node) {
        let n = &mut self.nodes[node.index()];
        if let Some(mut d) = n.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end && n.taps_present(&self.consumer, &self.provider) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops `node` with SIGTERM (a clean stop), waiting at most 15 s (then SIGKILL).
    /// True when it exited successfully.
    pub fn stop(&mut self, node: Node) -> bool {
        let n = &mut self.nodes[node.index()];
        let Some(mut d) = n.daemon.take() else {
            return false;
        };
        let _ = run(
            &["kill", "-TERM", &d.id().to_string()],
            Duration::from_secs(5),
        );
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(s)) = d.try_wait() {
                return s.success();
            }
            if Instant::now() > end {
                let _ = d.kill();
                let _ = d.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `node` again after [`Pair::kill`] or [`Pair::stop`], on its configuration and
    /// state, with its new taps in the bridges. Returns once it is ready; its role is for
    /// the caller to wait for ([`Pair::wait_role`]). Its log starts afresh (the last run's
    /// is kept as `privlinkd.<run>.log`).
    pub fn restart(&mut self, node: Node) {
        self.launch(node);
    }

    /// `node`'s log of its current run.
    pub fn log(&self, node: Node) -> String {
        std::fs::read_to_string(&self.nodes[node.index()].log_path).unwrap_or_default()
    }

    /// Both nodes' logs, every run.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(PairNode::all_logs).collect()
    }

    /// How long `node`'s current log is: a mark for [`Pair::wait_log_since`].
    pub fn log_mark(&self, node: Node) -> usize {
        self.log(node).len()
    }

    /// Waits until `node`'s current log contains `needle` (panics with both logs on
    /// timeout, or if the node's daemon exits).
    pub fn wait_log(&mut self, node: Node, needle: &str, limit: Duration) {
        self.wait_log_since(node, 0, needle, limit);
    }

    /// Waits until `node`'s current log contains `needle` after byte `mark`
    /// ([`Pair::log_mark`]); returns how long that took. Panics with both logs on timeout
    /// or if the node's daemon exits.
    pub fn wait_log_since(
        &mut self,
        node: Node,
        mark: usize,
        needle: &str,
        limit: Duration,
    ) -> Duration {
        let start = Instant::now();
        let end = start + limit;
        loop {
            let log = self.log(node);
            if log.get(mark..).is_some_and(|tail| tail.contains(needle)) {
                return start.elapsed();
            }
            let exited = self.nodes[node.index()]
                .daemon
                .as_mut()
                .and_then(|d| d.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "node {} exited ({status}) before {needle:?}:\n{}",
                    node.name(),
                    self.logs()
                );
            }
            assert!(
                Instant::now() < end,
                "timed out after {limit:?} waiting for {needle:?} from node {}:\n{}",
                node.name(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `node`'s role as the last role change in its current log says (None before the
    /// first).
    pub fn role(&self, node: Node) -> Option<Role> {
        let log = self.log(node);
        [
            (LOG_ACTIVE, Role::Active),
            (LOG_STANDBY, Role::Standby),
            (LOG_STARTS_STANDBY, Role::Standby),
        ]
        .into_iter()
        .filter_map(|(line, role)| Some((log.rfind(line)?, role)))
        .max_by_key(|&(at, _)| at)
        .map(|(_, role)| role)
    }

    /// `node`'s view of the pair (`privlinkctl stats` as root: `HighAvailability`, with
    /// `Role`, `PeerAlive`, `InSync`, ...); Null when the node does not answer or shows
    /// none.
    pub fn ha_status(&self, node: Node) -> Value {
        let (ok, v, _) = self.ctl(node, 0, &["stats"]);
        if ok {
            v["HighAvailability"].clone()
        } else {
            Value::Null
        }
    }

    /// Waits (at most `limit`) until `node`'s [`Pair::ha_status`] satisfies `what`; its
    /// last status either way, and whether it did.
    pub fn wait_ha_status(
        &self,
        node: Node,
        limit: Duration,
        what: impl Fn(&Value) -> bool,
    ) -> (bool, Value) {
        let end = Instant::now() + limit;
        loop {
            let v = self.ha_status(node);
            if what(&v) {
                return (true, v);
            }
            if Instant::now() >= end {
                return (false, v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `node`'s log says it is `role` now; returns how long that took (panics
    /// on timeout, with both logs).
    pub fn wait_role(&mut self, node: Node, role: Role, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.role(node) == Some(role) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "node {} is not {role:?} after {limit:?} (it is {:?}):\n{}",
                node.name(),
                self.role(node),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node whose log says it is active, among the running ones, when exactly one
    /// is.
    pub fn active(&mut self) -> Option<Node> {
        let active: Vec<Node> = Node::BOTH
            .into_iter()
            .filter(|&n| self.is_running(n) && self.role(n) == Some(Role::Active))
            .collect();
        match active[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    /// `node`'s counters, at least one publication after now (the file stays after the
    /// node is killed: then its last publication).
    pub fn stats(&self, node: Node) -> Value {
        std::thread::sleep(Duration::from_millis(1300));
        let path = &self.nodes[node.index()].stats_path;
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "stats file {}: {e}\n{}",
                path.display(),
                self.nodes[node.index()].all_logs()
            )
        });
        serde_json::from_str(&text).expect("stats JSON")
    }

    /// Cuts the sync link between the nodes (`true`: creates the `PRIVLINK_HA_TEST_CUT`
    /// file, so both drop every sync datagram they would send or receive) or restores it.
    pub fn cut_sync(&self, cut: bool) {
        if cut {
            std::fs::write(&self.cut_path, b"cut\n").expect("create the cut file");
        } else {
            match std::fs::remove_file(&self.cut_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("remove {}: {e}", self.cut_path.display()),
            }
        }
    }

    /// Cuts `node` off the data networks (`true`: its taps leave the bridges, so nothing
    /// it sends arrives and nothing reaches it; the process runs on) or joins it again.
    /// With [`Pair::cut_sync`] too, a full partition: each node thinks the other dead.
    pub fn isolate(&self, node: Node, cut: bool) {
        let n = &self.nodes[node.index()];
        for (ifname, ns) in [
            (&n.consumer_if, &self.consumer),
            (&n.provider_if, &self.provider),
        ] {
            if cut {
                ns.must(&["ip", "link", "set", ifname, "nomaster"]);
            } else {
                ns.must(&["ip", "link", "set", ifname, "master", BRIDGE]);
                ns.must(&["ip", "link", "set", ifname, "up"]);
            }
        }
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
                self.logs()
            )
        })
    }

    /// Starts `args` in the consumer namespace in the background, killed after `limit`
    /// (with `timeout`, so waiting for it is bounded), stdout piped.
    pub fn spawn_consumer(&self, args: &[&str], limit: Duration) -> Child {
        let secs = format!("{}", limit.as_secs().max(1));
        let mut full = vec!["timeout", "-k", "2", &secs];
        full.extend_from_slice(args);
        self.consumer.spawn(&full, Stdio::piped())
    }

    /// Starts `client.py MODE ARGS...` in the consumer namespace in the background
    /// ([`Pair::spawn_consumer`]); [`Pair::wait_json`] collects its answer.
    pub fn spawn_client(&self, args: &[&str], limit: Duration) -> Child {
        let script = support("client.py");
        let mut full = vec!["python3", "-u", &script];
        full.extend_from_slice(args);
        self.spawn_consumer(&full, limit)
    }

    /// Waits for a client started with [`Pair::spawn_client`] and parses its last stdout
    /// line as JSON (bounded: the client runs under `timeout`).
    pub fn wait_json(&self, child: Child) -> Value {
        let out = child.wait_with_output().expect("wait for the client");
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
        serde_json::from_str(last.trim()).unwrap_or_else(|e| {
            panic!(
                "client ({}): {e}: stdout {text:?}\n{}",
                out.status,
                self.logs()
            )
        })
    }

    /// Starts `ping -i INTERVAL -c COUNT -W 1 IP` in the consumer namespace in the
    /// background; [`Pair::wait_ping`] collects its summary.
    pub fn spawn_ping(&self, ip: &str, count: u32, interval: Duration) -> Child {
        let limit = interval * count + Duration::from_secs(10);
        let interval = format!("{:.3}", interval.as_secs_f64());
        let count = count.to_string();
        self.spawn_consumer(
            &[
                "ping", "-n", "-q", "-i", &interval, "-c", &count, "-W", "1", ip,
            ],
            limit,
        )
    }

    /// Waits for a ping started with [`Pair::spawn_ping`] and parses its summary.
    pub fn wait_ping(&self, child: Child) -> PingSummary {
        let out = child.wait_with_output().expect("wait for ping");
        let text = String::from_utf8_lossy(&out.stdout);
        PingSummary::parse(&text).unwrap_or_else(|| panic!("no ping summary in {text:?}"))
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

    /// What target `i` (0-based) logged: "tcp|udp ip:port" lines.
    pub fn target_log(&self, i: usize) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(format!("t{}.log", i + 1)))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Runs `privlinkctl --json ARGS` as `uid` against `node`'s socket.
    pub fn ctl(&self, node: Node, uid: u32, args: &[&str]) -> (bool, Value, String) {
        ctl_at(&self.nodes[node.index()].socket, uid, args)
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for s in self.servers.iter_mut() {
            let _ = s.kill();
            let _ = s.wait();
        }
        for n in self.nodes.iter_mut() {
            if let Some(mut d) = n.daemon.take() {
                let _ = d.kill();
                let _ = d.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- HA pair {} (kept: {}) ---\n{}",
                self.prefix,
                self.dir.display(),
                self.logs()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        for n in &self.nodes {
            let _ = run(
                &["rm", "-rf", &format!("/var/run/dpdk/{}", n.file_prefix)],
                Duration::from_secs(5),
            );
        }
        // The namespaces (and their bridges) go when the fields drop, after this.
    }
}

/// A private etcd for a test: `n` members on loopback, each with its own data directory
/// under the test's and its own free ports; `Drop` kills every member and removes the
/// directories.
#[derive(Debug)]
pub struct Etcd {
    pub dir: PathBuf,
    /// Client and peer port of each member.
    pub ports: Vec<(u16, u16)>,
    members: Vec<Option<Child>>,
    name: String,
}

/// `n` TCP ports free on 127.0.0.1 now (all held at once, so they differ).
fn free_tcp_ports(n: usize) -> Vec<u16> {
    let socks: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port"))
        .collect();
    socks
        .iter()
        .map(|s| s.local_addr().expect("local address").port())
        .collect()
}

impl Etcd {
    /// Starts `n` members (1 or 3) and waits until the cluster answers (at most 30 s).
    pub fn start(n: usize) -> Etcd {
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("pletcd{}x{seq}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("privlink-e2e-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd directory");
        let p = free_tcp_ports(2 * n);
        let ports: Vec<(u16, u16)> = (0..n).map(|i| (p[2 * i], p[2 * i + 1])).collect();
        let mut e = Etcd {
            dir,
            ports,
            members: (0..n).map(|_| None).collect(),
            name,
        };
        for i in 0..n {
            e.start_member(i);
        }
        e.wait_healthy(Duration::from_secs(30));
        e
    }

    fn member_name(&self, i: usize) -> String {
        format!("{}m{i}", self.name)
    }

    /// Starts member `i` (again), with the data it has.
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "etcd member {i} already runs");
        let cluster = self
            .ports
            .iter()
            .enumerate()
            .map(|(j, (_, peer))| format!("{}=http://127.0.0.1:{peer}", self.member_name(j)))
            .collect::<Vec<_>>()
            .join(",");
        let (client, peer) = self.ports[i];
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("m{i}.log")))
            .expect("etcd log");
        let child = Command::new("etcd")
            .args([
                "--name",
                &self.member_name(i),
                "--data-dir",
                &self.dir.join(format!("m{i}")).display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &cluster,
                "--initial-cluster-token",
                &self.name,
                "--initial-cluster-state",
                "new",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("etcd log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd (package etcd-server; scripts/install-deps.sh installs it)");
        self.members[i] = Some(child);
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect()
    }

    /// A `[cluster]` section naming every member, with this key prefix.
    pub fn cluster_toml(&self, prefix: &str) -> String {
        let urls = self
            .urls()
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!("[cluster]\netcd = [{urls}]\nprefix = \"{prefix}\"\ntimeout_ms = 1000\n")
    }

    /// Waits until a running member answers a range request (the cluster has a leader).
    pub fn wait_healthy(&self, limit: Duration) {
        let end = Instant::now() + limit;
        loop {
            for (i, url) in self.urls().iter().enumerate() {
                if self.members[i].is_none() {
                    continue;
                }
                let out = run(
                    &[
                        "curl",
                        "-sf",
                        "-m",
                        "2",
                        "-X",
                        "POST",
                        "-d",
                        r#"{"key":"AA=="}"#,
                        &format!("{url}/v3/kv/range"),
                    ],
                    Duration::from_secs(5),
                );
                if out.status.success() {
                    return;
                }
            }
            assert!(
                Instant::now() < end,
                "etcd did not become healthy within {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for i in 0..self.ports.len() {
            let p = self.dir.join(format!("m{i}.log"));
            let _ = writeln!(
                text,
                "--- etcd member {i} ---\n{}",
                std::fs::read_to_string(&p).unwrap_or_default()
            );
        }
        text
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
