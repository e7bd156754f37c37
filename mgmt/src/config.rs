//! The TOML configuration file of `privlinkd`.
//!
//! This module owns the file's layout, its defaults and its validation; it reuses the model
//! types for everything the model already describes (VPC attachments, accounts, services,
//! endpoints), so one object has one serde form in the file, on the socket and in the
//! state file. Every section and key is optional unless its doc says *required*; unknown
//! keys are errors. [`Config::from_toml_str`] and [`Config::load`] parse *and* validate, so
//! a `Config` obtained from them is known good; a `Config` built or changed in code should
//! go through [`Config::validate`].
//!
//! With no file, `privlinkd` runs [`Config::embedded_default`], parsed from
//! `src/default.toml`, which doubles as the annotated example users copy.
//!
//! Errors name the file, the key path (`vpcs[1].address`) and the problem. Syntax and type
//! errors come from `toml` with its line, column and source excerpt.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::serde_as_string;
use crate::model::{
    is_valid_region, validate_attachments, Account, AccountId, Declared, Endpoint, EndpointId,
    EndpointState, KeyPath, ModelError, ParseError, SecurityGroup, SecurityGroupId, Service,
    ServiceId, ServiceName, State, ValueKind, VpcAttachment, VpcId,
};
use crate::quota;

/// The embedded default configuration (the demo topology), as TOML.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Largest lcore id accepted anywhere. DPDK's `RTE_MAX_LCORE` is 128 by default; 1024
/// leaves room for builds that raise it and still bounds a typo such as `-l 0-4000000`.
pub const MAX_LCORE_ID: u32 = 1023;

/// Longest Unix socket path in bytes: `sun_path` holds 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Longest timeout accepted: a week. Longer is surely a unit mistake, and the data plane
/// converts timeouts to TSC cycles, where a week at 5 GHz still fits comfortably in a u64.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest quota accepted: beyond, a quota is no limit, and the store's counts stay far
/// from overflowing.
pub const MAX_QUOTA: u32 = 1_000_000;

/// Longest deregistration delay accepted: an hour, as in the cloud.
pub const MAX_DEREGISTRATION_DELAY: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// Sections

/// `[eal]`: how DPDK's EAL is started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EalConfig {
    /// Arguments handed to `rte_eal_init` after the program name; default none (EAL then
    /// uses every core and probes PCI devices).
    pub args: Vec<String>,
    /// When no hugepages are available, retry with `--no-huge -m 512` and warn; default
    /// true.
    pub no_huge_fallback: bool,
}

impl Default for EalConfig {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            no_huge_fallback: true,
        }
    }
}

/// The lcores an EAL argument list enables, and its main lcore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalLcores {
    /// The lcores `-l`, `-c` or `--lcores` enable; `None` when the arguments name none
    /// (EAL then enables every core of the machine).
    pub enabled: Option<BTreeSet<u32>>,
    /// `--main-lcore`, else the lowest enabled lcore (0 when none are named), as EAL picks.
    pub main: u32,
}

impl EalConfig {
    /// Reads the lcore set and main lcore from the arguments (`-l 0,1`, `-l0-3`,
    /// `-c 0x3`, `--lcores=(0-1)@0,2@1`, `--main-lcore N`; the last of each wins).
    pub fn lcores(&self) -> Result<EalLcores, ConfigError> {
        parse_eal_lcores(&self.args).map_err(|(i, problem)| ConfigError::Invalid {
            file: None,
            at: KeyPath::new().key("eal").key("args").index(i),
            problem,
        })
    }
}

/// `[workers]`: the poll-mode worker threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// One pinned worker per EAL lcore listed: EAL worker lcores, not the main one, no
    /// duplicates, at least one. Default `[1]`.
    pub lcores: Vec<u32>,
    /// Packets per RX/TX burst, 1..=512; default 32.
    pub burst: u16,
    /// Microseconds to sleep after a poll that found nothing, 0..=1_000_000; 0 (default) =
    /// pure busy polling.
    pub idle_sleep_us: u32,
    /// A worker that makes no progress (no poll loop completed) this long, 10..=3_600_000
    /// ms and more than `idle_sleep_us`, is reported and privlinkd exits with an error, so
    /// that a supervisor restarts it; default 1000.
    pub stall_timeout_ms: u32,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            lcores: vec![1],
            burst: 32,
            idle_sleep_us: 0,
            stall_timeout_ms: 1000,
        }
    }
}

/// `[[ports]]`: one DPDK port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// The DPDK device name (`net_tap0`, `0000:03:00.0`); required, unique.
    pub name: String,
    /// MTU to set, 68..=9702; none (default) = leave the device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// RX descriptors per queue, a power of two; default 1024.
    #[serde(default = "default_desc")]
    pub rx_desc: u16,
    /// TX descriptors per queue, a power of two; default 1024.
    #[serde(default = "default_desc")]
    pub tx_desc: u16,
    /// Receive every frame, not only those to the port's MAC; default true.
    #[serde(default = "default_true")]
    pub promiscuous: bool,
}

fn default_desc() -> u16 {
    1024
}

fn default_true() -> bool {
    true
}

impl PortConfig {
    /// Port `name` with every default.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            mtu: None,
            rx_desc: default_desc(),
            tx_desc: default_desc(),
            promiscuous: true,
        }
    }
}

/// A Unix permission mode, written as an octal string (`"0660"`), at most `0777`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileMode(u32);

impl FileMode {
    /// The mode with these bits, if at most `0o777`.
    pub const fn new(bits: u32) -> Option<Self> {
        if bits <= 0o777 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// The permission bits, for `chmod`.
    pub const fn bits(self) -> u32 {
        self.0
    }
}

impl FromStr for FileMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::new(ValueKind::FileMode, s);
        if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| matches!(b, b'0'..=b'7')) {
            return Err(err());
        }
        u32::from_str_radix(s, 8)
            .ok()
            .and_then(Self::new)
            .ok_or_else(err)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl fmt::Debug for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileMode({self})")
    }
}

serde_as_string!(FileMode, "an octal mode string like \"0660\"");

/// `[mgmt]`: the management socket and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MgmtConfig {
    /// The Unix socket path (at most 107 bytes); default `/run/privlink/privlink.sock`.
    pub socket: PathBuf,
    /// The socket's mode; default `"0660"`.
    pub socket_mode: FileMode,
    /// The group that owns the socket (a group name from `/etc/group` or a numeric gid),
    /// so tenants' uids need only be in that group; default none (the daemon's group).
    pub socket_group: Option<String>,
    /// Connections served at once for uids other than root, 1..=4096; default 64. Root
    /// always has slots of its own beyond these.
    pub max_connections: u32,
    /// Connections one uid may hold at once, 1..=`max_connections`; default 8. Beyond,
    /// the uid's new connections are refused (`TooManyClients`), other uids are unaffected.
    pub max_connections_per_uid: u32,
    /// Where the state file lives; default `/var/lib/privlink`.
    pub state_dir: PathBuf,
    /// The region in service names; default `local`.
    pub region: String,
    /// Where privlinkd writes its counters as JSON every `stats_interval_ms` (atomically
    /// replaced); none by default.
    pub stats_file: Option<PathBuf>,
    /// Where privlinkd appends one JSON line of counters per worker every
    /// `stats_interval_ms`, stamped with the time the worker published them and the
    /// snapshot generation it was forwarding with: a time series of the forwarding rate
    /// (rotate it like any log). None by default.
    pub stats_log: Option<PathBuf>,
    /// Period of the stats file, the stats log and the workers' counter publication,
    /// 10 to 60000 ms; default 1000. Workers publish at least every 100 ms whatever this is.
    pub stats_interval_ms: u32,
}

impl Default for MgmtConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/privlink/privlink.sock"),
            socket_mode: FileMode(0o660),
            socket_group: None,
            max_connections: 64,
            max_connections_per_uid: 8,
            state_dir: PathBuf::from("/var/lib/privlink"),
            region: "local".to_owned(),
            stats_file: None,
            stats_log: None,
            stats_interval_ms: 1000,
        }
    }
}

/// The largest flow table (`tables.flows_per_worker`): the flow table's own limit
/// (`appliance::flow::MAX_CAPACITY`, 32-bit slot indexes with room for markers).
pub const MAX_FLOWS_PER_WORKER: u32 = 1 << 30;

/// `[tables]`: fixed capacities chosen at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TablesConfig {
    /// Flow table capacity of each worker, 1024..=2^30 (and within the memory available,
    /// checked at start); default 262144.
    pub flows_per_worker: u32,
    /// Neighbour (ARP) table capacity, at least 16; default 4096.
    pub neighbours: u32,
    /// Packets each worker holds while their next hop resolves; default 256 (0 = drop).
    pub arp_pending_packets: u32,
    /// Maglev lookup table size per listener: a prime, at least the number of targets of
    /// any listener; default 65537.
    pub maglev_size: u32,
    /// Mbufs in the packet pool; 0 (default) sizes it from the ports' descriptors, the
    /// workers and the hold queues. Raise it for devices that hold many mbufs themselves
    /// (a `net_pcap` replay keeps the whole capture in mbufs).
    pub mbufs: u32,
    /// Recently closed SNAT ports each worker remembers, so that none is reused towards
    /// its target within 120 s (TIME_WAIT there); 8 bytes each, 1024..=2^26; default
    /// 262144 (2 MiB per worker: about 1500 TCP connections ending per second per worker,
    /// 70 % of it in 120 s, before some are no longer remembered).
    pub snat_quarantine: u32,
}

impl Default for TablesConfig {
    fn default() -> Self {
        Self {
            flows_per_worker: 262_144,
            neighbours: 4096,
            arp_pending_packets: 256,
            maglev_size: 65_537,
            mbufs: 0,
            snat_quarantine: 262_144,
        }
    }
}

/// `[quotas]`: how much one account may create, with the cloud's defaults. A request that
/// would go beyond one is refused with a `…LimitExceeded` error and changes nothing;
/// lowering a quota below what exists leaves the existing objects alone (only growth is
/// refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Interface endpoints per VPC (not counting `deleted` ones); default 50.
    pub endpoints_per_vpc: u32,
    /// Endpoint services per account; default 50.
    pub services_per_account: u32,
    /// Listeners per service; default 50.
    pub listeners_per_service: u32,
    /// Targets per listener (registered and draining); default 1000. It is also bounded
    /// by `tables.maglev_size - 1`.
    pub targets_per_listener: u32,
    /// Security groups per account; default 2500.
    pub security_groups_per_account: u32,
    /// Ingress rules per security group; default 60.
    pub rules_per_security_group: u32,
    /// Security groups per endpoint; default 5.
    pub security_groups_per_endpoint: u32,
    /// Characters of an endpoint policy document (compact JSON); default 20480.
    pub policy_characters: u32,
    /// Outstanding `ClientToken`s per account (kept 24 hours); default 10000.
    pub client_tokens_per_account: u32,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self {
            endpoints_per_vpc: 50,
            services_per_account: 50,
            listeners_per_service: 50,
            targets_per_listener: 1000,
            security_groups_per_account: 2500,
            rules_per_security_group: 60,
            security_groups_per_endpoint: 5,
            policy_characters: 20_480,
            client_tokens_per_account: 10_000,
        }
    }
}

/// `[limits]`: concurrent flows one consumer may hold, so that nobody can exhaust the flow
/// tables or SNAT ports for others. Each value is for the whole appliance: every worker
/// enforces `⌈value / workers⌉` on its own flows (RSS spreads a client's connections over
/// the workers by port, so the shares fill evenly). 0 means no limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Flows (TCP and UDP) of one consumer address in one VPC; default 65536, more than
    /// one address can open to one listener (its 64512 unprivileged source ports).
    pub flows_per_client: u32,
    /// TCP flows of one consumer address whose handshake has not completed; default 4096
    /// (a handshake takes one round trip; only a flood or a dead target piles them up),
    /// or `flows_per_client` if that is lower.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_per_client: Option<u32>,
    /// Flows of one endpoint; default three quarters of the flow tables
    /// (`flows_per_worker` × workers), so other endpoints always keep a quarter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows_per_endpoint: Option<u32>,
    /// Half-open TCP flows of one endpoint; default half of the flow tables. At the limit
    /// a new connection to the endpoint evicts the endpoint's oldest half-open flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_per_endpoint: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            flows_per_client: 65_536,
            half_open_per_client: None,
            flows_per_endpoint: None,
            half_open_per_endpoint: None,
        }
    }
}

impl QuotasConfig {
    /// Every quota with its key, for validation and messages.
    pub fn named(&self) -> [(&'static str, u32); 9] {
        [
            ("endpoints_per_vpc", self.endpoints_per_vpc),
            ("services_per_account", self.services_per_account),
            ("listeners_per_service", self.listeners_per_service),
            ("targets_per_listener", self.targets_per_listener),
            (
                "security_groups_per_account",
                self.security_groups_per_account,
            ),
            ("rules_per_security_group", self.rules_per_security_group),
            (
                "security_groups_per_endpoint",
                self.security_groups_per_endpoint,
            ),
            ("policy_characters", self.policy_characters),
            ("client_tokens_per_account", self.client_tokens_per_account),
        ]
    }
}

impl LimitsConfig {
    /// `half_open_per_client`, its default worked out.
    pub fn half_open_per_client(&self) -> u32 {
        self.half_open_per_client
            .unwrap_or_else(|| match self.flows_per_client {
                0 => 4096,
                flows => flows.min(4096),
            })
    }

    /// `flows_per_endpoint`, its default worked out for flow tables of `capacity` flows in
    /// all (`flows_per_worker` × workers).
    pub fn flows_per_endpoint(&self, capacity: u64) -> u32 {
        self.flows_per_endpoint
            .unwrap_or_else(|| u32::try_from(capacity / 4 * 3).unwrap_or(u32::MAX))
    }

    /// `half_open_per_endpoint`, its default worked out as for
    /// [`flows_per_endpoint`](Self::flows_per_endpoint) (and never above that).
    pub fn half_open_per_endpoint(&self, capacity: u64) -> u32 {
        self.half_open_per_endpoint.unwrap_or_else(|| {
            let half = u32::try_from(capacity / 2).unwrap_or(u32::MAX);
            match self.flows_per_endpoint(capacity) {
                0 => half,
                flows => half.min(flows),
            }
        })
    }
}

/// `[timeouts]`: idle timeouts and ARP timing, in seconds (integer or fractional), each
/// more than 0 and at most a week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Established TCP flow; default 350 s, as in the cloud.
    #[serde(with = "seconds")]
    pub tcp_established: Duration,
    /// Half-open TCP flow (SYN seen, no reply yet); default 20 s.
    #[serde(with = "seconds")]
    pub tcp_syn: Duration,
    /// TCP flow after the first FIN; default 60 s.
    #[serde(with = "seconds")]
    pub tcp_closing: Duration,
    /// TCP flow after both FINs or a RST; default 5 s.
    #[serde(with = "seconds")]
    pub tcp_closed: Duration,
    /// UDP flow; default 120 s.
    #[serde(with = "seconds")]
    pub udp: Duration,
    /// ICMP echo flow; default 30 s.
    #[serde(with = "seconds")]
    pub icmp: Duration,
    /// Time between ARP requests for an unresolved next hop; default 1 s.
    #[serde(with = "seconds")]
    pub arp_retry: Duration,
    /// ARP requests sent before a next hop counts as unreachable, 1..=100; default 3.
    pub arp_tries: u32,
    /// How long a learnt neighbour stays valid without being refreshed; default 600 s.
    #[serde(with = "seconds")]
    pub neighbour_ttl: Duration,
    /// How long a deregistered target drains (takes no new flows, keeps its existing ones)
    /// before it is removed, 0..=3600 s; default 300 s, as in the cloud.
    #[serde(with = "seconds")]
    pub deregistration_delay: Duration,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(350),
            tcp_syn: Duration::from_secs(20),
            tcp_closing: Duration::from_secs(60),
            tcp_closed: Duration::from_secs(5),
            udp: Duration::from_secs(120),
            icmp: Duration::from_secs(30),
            arp_retry: Duration::from_secs(1),
            arp_tries: 3,
            neighbour_ttl: Duration::from_secs(600),
            deregistration_delay: Duration::from_secs(300),
        }
    }
}

/// Serde for a [`Duration`] as seconds: an integer, or a float for fractions.
mod seconds {
    use std::fmt;
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Visitor)
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v)
                .map_err(|_| E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// `[[endpoints]]`: an interface endpoint declared in the file. Like
/// [`Endpoint`], except that the service may be named by
/// `service_id` or by `service_name` (one is required; both must agree) and `state`
/// defaults to `available`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// `vpce-…`; required.
    pub id: EndpointId,
    /// The consumer account; required.
    pub owner: AccountId,
    /// The consumer VPC; required.
    pub vpc_id: VpcId,
    /// The service by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<ServiceId>,
    /// The service by name, `com.privlink.vpce.<region>.<id>`, in this appliance's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<ServiceName>,
    /// The endpoint's address in the consumer VPC; required.
    pub ip: std::net::Ipv4Addr,
    /// Default `available`.
    #[serde(default = "default_endpoint_state")]
    pub state: EndpointState,
    /// Default none.
    #[serde(default)]
    pub security_group_ids: Vec<SecurityGroupId>,
    /// The endpoint policy document; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
}

fn default_endpoint_state() -> EndpointState {
    EndpointState::Available
}

impl EndpointConfig {
    /// The service this endpoint names, by id or by name.
    pub fn service_id(&self) -> Option<ServiceId> {
        self.service_id
            .or_else(|| self.service_name.as_ref().map(ServiceName::id))
    }

    /// The model endpoint; `None` if it names no service.
    pub fn to_endpoint(&self) -> Option<Endpoint> {
        Some(Endpoint {
            id: self.id,
            owner: self.owner,
            vpc_id: self.vpc_id,
            service_id: self.service_id()?,
            ip: self.ip,
            state: self.state,
            security_group_ids: self.security_group_ids.clone(),
            policy: self.policy.clone(),
            created_at: 0,
            deleted_at: None,
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[eal]`
    pub eal: EalConfig,
    /// `[workers]`
    pub workers: WorkersConfig,
    /// `[[ports]]`
    pub ports: Vec<PortConfig>,
    /// `[[vpcs]]`: VPC attachments; each port must be a `[[ports]]` entry and each account
    /// an `[[accounts]]` entry.
    pub vpcs: Vec<VpcAttachment>,
    /// `[[accounts]]`: unique ids; a uid belongs to at most one account.
    pub accounts: Vec<Account>,
    /// `[mgmt]`
    pub mgmt: MgmtConfig,
    /// `[tables]`
    pub tables: TablesConfig,
    /// `[timeouts]`
    pub timeouts: TimeoutsConfig,
    /// `[quotas]`
    pub quotas: QuotasConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[[services]]`: loaded at start.
    pub services: Vec<Service>,
    /// `[[endpoints]]`: loaded at start.
    pub endpoints: Vec<EndpointConfig>,
    /// `[[security_groups]]`: loaded at start; endpoints name them in
    /// `security_group_ids`.
    pub security_groups: Vec<SecurityGroup>,
}

impl Config {
    /// Parses and validates a configuration.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            file: None,
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    /// The demo topology `privlinkd` runs when given no file: two `net_tap` ports, a
    /// consumer VPC (10.1.0.0/24) and a provider VPC (10.2.0.0/24), one service with a TCP
    /// and a UDP listener, one available endpoint at 10.1.0.100. Parsed from
    /// [`DEFAULT_TOML`].
    pub fn embedded_default() -> Self {
        match Self::from_toml_str(DEFAULT_TOML) {
            Ok(config) => config,
            // A unit test parses and validates the same text.
            Err(e) => panic!("the embedded default configuration is invalid: {e}"),
        }
    }

    /// The declared services, endpoints and security groups (an endpoint that names no service, possible
    /// only in a configuration that fails validation, is left out).
    pub fn state(&self) -> State {
        State {
            services: self.services.clone(),
            endpoints: self
                .endpoints
                .iter()
                .filter_map(EndpointConfig::to_endpoint)
                .collect(),
            security_groups: self.security_groups.clone(),
            ..State::default()
        }
    }

    /// The declared objects, as the baseline a start or reload diffs against.
    pub fn declared(&self) -> Declared {
        let s = self.state();
        Declared {
            services: s.services,
            endpoints: s.endpoints,
            security_groups: s.security_groups,
        }
    }

    /// The attachment of `vpc`.
    pub fn attachment(&self, vpc: VpcId) -> Option<&VpcAttachment> {
        self.vpcs.iter().find(|a| a.vpc_id == vpc)
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The account that Unix user `uid` acts as.
    pub fn account_for_uid(&self, uid: u32) -> Option<&Account> {
        self.accounts.iter().find(|a| a.uids.contains(&uid))
    }

    /// Runs every check: the sections' own rules, cross-references between them (ports,
    /// accounts, EAL lcores, region, Maglev size) and [`validate_attachments`] and
    /// [`State::validate`] on what is declared. Returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_inner()
            .map_err(|(at, problem)| ConfigError::Invalid {
                file: None,
                at,
                problem,
            })
    }

    fn validate_inner(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        self.validate_workers()?;
        self.validate_ports()?;
        self.validate_accounts()?;
        self.validate_vpcs()?;
        self.validate_mgmt()?;
        self.validate_tables()?;
        self.validate_limits()?;
        self.validate_timeouts()?;
        self.validate_quotas()?;
        self.validate_declared()
    }

    fn validate_workers(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let eal = parse_eal_lcores(&self.eal.args)
            .map_err(|(i, p)| (KeyPath::new().key("eal").key("args").index(i), p))?;
        let at = KeyPath::new().key("workers");
        let lcores = &self.workers.lcores;
        if lcores.is_empty() {
            return Err((at.key("lcores"), ConfigProblem::NoWorkers));
        }
        for (i, &lcore) in lcores.iter().enumerate() {
            let lcore_at = at.key("lcores").index(i);
            let problem = if lcores[..i].contains(&lcore) {
                ConfigProblem::DuplicateLcore(lcore)
            } else if lcore == eal.main {
                ConfigProblem::MainLcore(lcore)
            } else if let Some(enabled) = eal.enabled.as_ref().filter(|e| !e.contains(&lcore)) {
                ConfigProblem::LcoreNotInEal {
                    lcore,
                    enabled: enabled.iter().copied().collect(),
                }
            } else if lcore > MAX_LCORE_ID {
                range(lcore, 0, MAX_LCORE_ID.into())
            } else {
                continue;
            };
            return Err((lcore_at, problem));
        }
        if !(1..=512).contains(&self.workers.burst) {
            return Err((at.key("burst"), range(self.workers.burst, 1, 512)));
        }
        if self.workers.idle_sleep_us > 1_000_000 {
            return Err((
                at.key("idle_sleep_us"),
                range(self.workers.idle_sleep_us, 0, 1_000_000),
            ));
        }
        let stall = self.workers.stall_timeout_ms;
        if !(10..=3_600_000).contains(&stall) {
            return Err((at.key("stall_timeout_ms"), range(stall, 10, 3_600_000)));
        }
        if u64::from(stall) * 1000 <= u64::from(self.workers.idle_sleep_us) {
            return Err((
                at.key("stall_timeout_ms"),
                ConfigProblem::StallNotAboveIdleSleep {
                    stall_ms: stall,
                    idle_sleep_us: self.workers.idle_sleep_us,
                },
            ));
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        for (i, p) in self.ports.iter().enumerate() {
            let at = KeyPath::item("ports", i);
            if p.name.is_empty() {
                return Err((at.key("name"), ConfigProblem::Empty));
            }
            if let Some(first) = self.ports[..i].iter().position(|q| q.name == p.name) {
                return Err((
                    at.key("name"),
                    ConfigProblem::DuplicatePort {
                        name: p.name.clone(),
                        first,
                    },
                ));
            }
            if let Some(mtu) = p.mtu {
                if !(68..=9702).contains(&mtu) {
                    return Err((at.key("mtu"), range(mtu, 68, 9702)));
                }
            }
            for (key, desc) in [("rx_desc", p.rx_desc), ("tx_desc", p.tx_desc)] {
                if !desc.is_power_of_two() {
                    return Err((at.key(key), ConfigProblem::NotPowerOfTwo(desc.into())));
                }
            }
        }
        Ok(())
    }

    fn validate_accounts(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let mut uid_owner: HashMap<u32, AccountId> = HashMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let at = KeyPath::item("accounts", i);
            if let Some(first) = self.accounts[..i].iter().position(|b| b.id == a.id) {
                return Err((
                    at.key("id"),
                    ConfigProblem::DuplicateAccount { id: a.id, first },
                ));
            }
            for (j, &uid) in a.uids.iter().enumerate() {
                if let Some(&account) = uid_owner.get(&uid) {
                    return Err((
                        at.key("uids").index(j),
                        ConfigProblem::DuplicateUid { uid, account },
                    ));
                }
                uid_owner.insert(uid, a.id);
            }
        }
        Ok(())
    }

    fn validate_vpcs(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        validate_attachments(&self.vpcs).map_err(model_problem)?;
        for (i, v) in self.vpcs.iter().enumerate() {
            let at = KeyPath::item("vpcs", i);
            if self.port(&v.port).is_none() {
                return Err((at.key("port"), ConfigProblem::UnknownPort(v.port.clone())));
            }
            if !self.accounts.iter().any(|a| a.id == v.account) {
                return Err((at.key("account"), ConfigProblem::UnknownAccount(v.account)));
            }
        }
        Ok(())
    }

    fn validate_mgmt(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("mgmt");
        let m = &self.mgmt;
        let socket_len = m.socket.as_os_str().len();
        if socket_len == 0 {
            return Err((at.key("socket"), ConfigProblem::Empty));
        }
        if socket_len > MAX_SOCKET_PATH {
            return Err((
                at.key("socket"),
                ConfigProblem::SocketPathTooLong(socket_len),
            ));
        }
        if m.state_dir.as_os_str().is_empty() {
            return Err((at.key("state_dir"), ConfigProblem::Empty));
        }
        if !is_valid_region(&m.region) {
            return Err((
                at.key("region"),
                ConfigProblem::Parse(ParseError::new(ValueKind::Region, &m.region)),
            ));
        }
        for (key, path) in [("stats_file", &m.stats_file), ("stats_log", &m.stats_log)] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err((at.key(key), ConfigProblem::Empty));
            }
        }
        if let Some(group) = &m.socket_group {
            if group.is_empty() {
                return Err((at.key("socket_group"), ConfigProblem::Empty));
            }
        }
        if !(1..=4096).contains(&m.max_connections) {
            return Err((at.key("max_connections"), range(m.max_connections, 1, 4096)));
        }
        if !(1..=m.max_connections).contains(&m.max_connections_per_uid) {
            return Err((
                at.key("max_connections_per_uid"),
                range(m.max_connections_per_uid, 1, m.max_connections.into()),
            ));
        }
        if !(10..=60_000).contains(&m.stats_interval_ms) {
            return Err((
                at.key("stats_interval_ms"),
                range(m.stats_interval_ms, 10, 60_000),
            ));
        }
        Ok(())
    }

    fn validate_quotas(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("quotas");
        for (key, value) in self.quotas.named() {
            if value == 0 || value > MAX_QUOTA {
                return Err((at.key(key), range(value, 1, MAX_QUOTA.into())));
            }
        }
        Ok(())
    }

    fn validate_tables(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("tables");
        let t = &self.tables;
        if !(1024..=MAX_FLOWS_PER_WORKER).contains(&t.flows_per_worker) {
            return Err((
                at.key("flows_per_worker"),
                range(t.flows_per_worker, 1024, MAX_FLOWS_PER_WORKER.into()),
            ));
        }
        if t.neighbours < 16 {
            return Err((
                at.key("neighbours"),
                range(t.neighbours, 16, u32::MAX.into()),
            ));
        }
        if !is_prime(t.maglev_size) {
            return Err((
                at.key("maglev_size"),
                ConfigProblem::NotPrime(t.maglev_size.into()),
            ));
        }
        if !(1024..=1 << 26).contains(&t.snat_quarantine) {
            return Err((
                at.key("snat_quarantine"),
                range(t.snat_quarantine, 1024, 1 << 26),
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("limits");
        let l = &self.limits;
        let capacity = u64::from(self.tables.flows_per_worker)
            * u64::try_from(self.workers.lcores.len().max(1)).unwrap_or(1);
        let pairs = [
            (
                "half_open_per_client",
                l.half_open_per_client(),
                "limits.flows_per_client",
                l.flows_per_client,
            ),
            (
                "half_open_per_endpoint",
                l.half_open_per_endpoint(capacity),
                "limits.flows_per_endpoint",
                l.flows_per_endpoint(capacity),
            ),
        ];
        for (key, half_open, flows_key, flows) in pairs {
            // A half-open limit above the flow limit could never apply: a typo, likely.
            if flows != 0 && half_open > flows {
                return Err((
                    at.key(key),
                    ConfigProblem::AboveLimit {
                        value: half_open.into(),
                        limit: flows_key,
                        max: flows.into(),
                    },
                ));
            }
        }
        Ok(())
    }

    fn validate_timeouts(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("timeouts");
        let t = &self.timeouts;
        for (key, d) in [
            ("tcp_established", t.tcp_established),
            ("tcp_syn", t.tcp_syn),
            ("tcp_closing", t.tcp_closing),
            ("tcp_closed", t.tcp_closed),
            ("udp", t.udp),
            ("icmp", t.icmp),
            ("arp_retry", t.arp_retry),
            ("neighbour_ttl", t.neighbour_ttl),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err((at.key(key), ConfigProblem::TimeoutOutOfRange(d)));
            }
        }
        if !(1..=100).contains(&t.arp_tries) {
            return Err((at.key("arp_tries"), range(t.arp_tries, 1, 100)));
        }
        if t.deregistration_delay > MAX_DEREGISTRATION_DELAY {
            return Err((
                at.key("deregistration_delay"),
                range(
                    t.deregistration_delay.as_secs(),
                    0,
                    MAX_DEREGISTRATION_DELAY.as_secs(),
                ),
            ));
        }
        Ok(())
    }

    /// The declared services and endpoints: service references, then the model's rules,
    /// then what the Maglev size implies.
    fn validate_declared(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = KeyPath::item("endpoints", i);
            match (e.service_id, &e.service_name) {
                (None, None) => return Err((at, ConfigProblem::NoService)),
                (Some(id), Some(name)) if name.id() != id => {
                    return Err((
                        at.key("service_name"),
                        ConfigProblem::ServiceMismatch {
                            id,
                            name: name.clone(),
                        },
                    ))
                }
                _ => {}
            }
            if let Some(name) = &e.service_name {
                if name.region() != self.mgmt.region {
                    return Err((
                        at.key("service_name"),
                        ConfigProblem::WrongRegion {
                            name: name.clone(),
                            region: self.mgmt.region.clone(),
                        },
                    ));
                }
            }
        }

        self.state().validate(&self.vpcs).map_err(model_problem)?;
        for (i, e) in self.endpoints.iter().enumerate() {
            if let (Some(doc), Some(att)) = (&e.policy, self.attachment(e.vpc_id)) {
                crate::policy::check_principals(doc, att.account).map_err(|err| {
                    (
                        KeyPath::item("endpoints", i).key("policy"),
                        ConfigProblem::Policy(err.to_string()),
                    )
                })?;
            }
        }
        quota::check(&self.state(), &State::default(), &self.limits())
            .map_err(|e| (e.at.clone(), ConfigProblem::Quota(Box::new(e))))
    }

    /// The limits of `[quotas]` and `tables.maglev_size`.
    pub fn limits(&self) -> quota::Limits {
        quota::Limits {
            quotas: self.quotas.clone(),
            maglev_size: self.tables.maglev_size,
        }
    }
}

fn model_problem(e: ModelError) -> (KeyPath, ConfigProblem) {
    (e.path().clone(), ConfigProblem::Model(Box::new(e)))
}

fn range(value: impl Into<u64>, min: u64, max: u64) -> ConfigProblem {
    ConfigProblem::OutOfRange {
        value: value.into(),
        min,
        max,
    }
}

fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

// ---------------------------------------------------------------------------------------
// EAL lcore arguments

#[derive(Clone, Copy)]
enum LcoreOption {
    /// `-l 0,2-3`
    List,
    /// `-c 0x5`
    Mask,
    /// `--lcores '(0-1)@0,2@1'`
    Map,
    /// `--main-lcore 0`
    Main,
}

const LCORE_OPTIONS: [(&str, LcoreOption); 5] = [
    ("-l", LcoreOption::List),
    ("-c", LcoreOption::Mask),
    ("--lcores", LcoreOption::Map),
    ("--main-lcore", LcoreOption::Main),
    ("--master-lcore", LcoreOption::Main),
];

fn parse_eal_lcores(args: &[String]) -> Result<EalLcores, (usize, ConfigProblem)> {
    let mut enabled: Option<BTreeSet<u32>> = None;
    let mut main: Option<(usize, u32)> = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let found = LCORE_OPTIONS.iter().find_map(|&(name, option)| {
            if arg == name {
                Some((option, None))
            } else if name.starts_with("--") {
                arg.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(|v| (option, Some(v)))
            } else if !arg.starts_with("--") {
                arg.strip_prefix(name)
                    .filter(|v| !v.is_empty())
                    .map(|v| (option, Some(v)))
            } else {
                None
            }
        });
        let Some((option, inline)) = found else {
            i += 1;
            continue;
        };
        let (value, at) = match inline {
            Some(v) => (v, i),
            None => match args.get(i + 1) {
                Some(v) => (v.as_str(), i + 1),
                None => return Err((i, eal_problem(arg, "the value is missing"))),
            },
        };
        match option {
            LcoreOption::List => {
                let set = parse_lcore_list(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this lcore list")))?;
                enabled = Some(set);
            }
            LcoreOption::Mask => {
                let set = parse_core_mask(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this core mask")))?;
                enabled = Some(set);
            }
            LcoreOption::Map => {
                let set = parse_lcore_map(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this lcore map")))?;
                enabled = Some(set);
            }
            LcoreOption::Main => {
                let n = parse_lcore_id(value)
                    .ok_or_else(|| (at, eal_problem(value, "cannot read this lcore id")))?;
                main = Some((at, n));
            }
        }
        i = at + 1;
    }
    let main = match (main, &enabled) {
        (Some((at, n)), Some(set)) if !set.contains(&n) => {
            return Err((
                at,
                eal_problem(&n.to_string(), "the main lcore is not an enabled lcore"),
            ))
        }
        (Some((_, n)), _) => n,
        (None, Some(set)) => set.first().copied().unwrap_or(0),
        (None, None) => 0,
    };
    Ok(EalLcores { enabled, main })
}

fn eal_problem(arg: &str, reason: &'static str) -> ConfigProblem {
    ConfigProblem::EalArg {
        arg: arg.to_owned(),
        reason,
    }
}

fn parse_lcore_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_LCORE_ID)
}

/// `N` or `N-M` into `set`.
fn add_lcore_range(set: &mut BTreeSet<u32>, s: &str) -> Option<()> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse_lcore_id(a)?, parse_lcore_id(b)?),
        None => {
            let n = parse_lcore_id(s)?;
            (n, n)
        }
    };
    if a > b {
        return None;
    }
    set.extend(a..=b);
    Some(())
}

/// `-l`: `0,2-3`.
fn parse_lcore_list(s: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    for part in s.split(',') {
        add_lcore_range(&mut set, part)?;
    }
    Some(set)
}

/// `-c`: a hex mask, `0x` optional.
fn parse_core_mask(s: &str) -> Option<BTreeSet<u32>> {
    let hex = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    let max_digits = usize::try_from(MAX_LCORE_ID / 4 + 1).ok()?;
    if hex.is_empty() || hex.len() > max_digits {
        return None;
    }
    let mut set = BTreeSet::new();
    for (position, c) in (0u32..).zip(hex.chars().rev()) {
        let digit = c.to_digit(16)?;
        for bit in 0..4 {
            if digit & (1 << bit) != 0 {
                set.insert(position * 4 + bit);
            }
        }
    }
    let set: BTreeSet<u32> = set.into_iter().filter(|&n| n <= MAX_LCORE_ID).collect();
    (!set.is_empty()).then_some(set)
}

/// `--lcores`: comma-separated `LCORES[@CPUS]`, where `LCORES` is `N`, `N-M` or a
/// parenthesised list of those; only the lcore side matters here.
fn parse_lcore_map(s: &str) -> Option<BTreeSet<u32>> {
    let mut set = BTreeSet::new();
    let mut depth = 0u32;
    let mut start = 0;
    let mut elements = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1)?,
            ',' if depth == 0 => {
                elements.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    elements.push(&s[start..]);
    for element in elements {
        let lcores = element.split_once('@').map_or(element, |(l, _)| l);
        match lcores.strip_prefix('(').and_then(|l| l.strip_suffix(')')) {
            Some(list) => set.extend(parse_lcore_list(list)?),
            None => add_lcore_range(&mut set, lcores)?,
        }
    }
    Some(set)
}

// ---------------------------------------------------------------------------------------
// Errors

/// What is wrong with a value of a valid-looking configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigProblem {
    /// The model's rules; prints the [`ModelError`].
    Model(Box<ModelError>),
    /// A value with a string form that is malformed; prints the [`ParseError`].
    Parse(ParseError),
    /// `"<arg>": <reason>`: an EAL argument that names lcores cannot be read.
    EalArg {
        /// The argument (or its value).
        arg: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `at least one worker lcore is required`
    NoWorkers,
    /// `lcore 1 is listed twice`
    DuplicateLcore(u32),
    /// `lcore 0 is the EAL main lcore; workers run on the other EAL lcores`
    MainLcore(u32),
    /// `lcore 3 is not among the EAL lcores 0,1`
    LcoreNotInEal {
        /// The lcore listed.
        lcore: u32,
        /// The lcores EAL enables.
        enabled: Vec<u32>,
    },
    /// `600 is outside 1..=512`
    OutOfRange {
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// `1000 is not a power of two`
    NotPowerOfTwo(u64),
    /// `65536 is not prime`
    NotPrime(u64),
    /// `must not be empty`
    Empty,
    /// `port net_tap0 is declared twice (first at ports[0])`
    DuplicatePort {
        /// The name.
        name: String,
        /// Index of its first declaration.
        first: usize,
    },
    /// `no [[ports]] entry is named net_tap9`
    UnknownPort(String),
    /// `account 333333333333 is not declared in [[accounts]]`
    UnknownAccount(AccountId),
    /// `account 111111111111 is declared twice (first at accounts[0])`
    DuplicateAccount {
        /// The id.
        id: AccountId,
        /// Index of its first declaration.
        first: usize,
    },
    /// `uid 1001 already acts as account 111111111111`
    DuplicateUid {
        /// The uid.
        uid: u32,
        /// The account it was given to first.
        account: AccountId,
    },
    /// `the path is 130 bytes; a Unix socket path holds at most 107`
    SocketPathTooLong(usize),
    /// `0 s is outside (0, 604800] seconds`
    TimeoutOutOfRange(Duration),
    /// `5000 is above limits.flows_per_client (4096)`
    AboveLimit {
        /// The value given.
        value: u64,
        /// The key of the limit it must stay within.
        limit: &'static str,
        /// That limit's value.
        max: u64,
    },
    /// `an endpoint needs service_id or service_name`
    NoService,
    /// `service_id vpce-svc-… and service_name com.privlink.vpce.… name different services`
    ServiceMismatch {
        /// The id given.
        id: ServiceId,
        /// The name given.
        name: ServiceName,
    },
    /// `service name com.privlink.vpce.us-east-1.… is for region us-east-1; this appliance
    /// serves region local (mgmt.region)`
    WrongRegion {
        /// The name given.
        name: ServiceName,
        /// `mgmt.region`.
        region: String,
    },
    /// The declared objects go beyond a quota; prints the [`quota::QuotaError`].
    Quota(Box<quota::QuotaError>),
    /// `invalid policy document: <reason>` for a declared endpoint's policy.
    Policy(String),
    /// `100 ms is not more than workers.idle_sleep_us (200000 µs): an idle worker would
    /// look stalled`
    StallNotAboveIdleSleep {
        /// `workers.stall_timeout_ms`.
        stall_ms: u32,
        /// `workers.idle_sleep_us`.
        idle_sleep_us: u32,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(e) => e.fmt(f),
            Self::Parse(e) => e.fmt(f),
            Self::EalArg { arg, reason } => write!(f, "{arg:?}: {reason}"),
            Self::NoWorkers => f.write_str("at least one worker lcore is required"),
            Self::DuplicateLcore(n) => write!(f, "lcore {n} is listed twice"),
            Self::MainLcore(n) => write!(
                f,
                "lcore {n} is the EAL main lcore; workers run on the other EAL lcores"
            ),
            Self::LcoreNotInEal { lcore, enabled } => {
                write!(f, "lcore {lcore} is not among the EAL lcores ")?;
                for (i, n) in enabled.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{n}")?;
                }
                Ok(())
            }
            Self::OutOfRange { value, min, max } => {
                write!(f, "{value} is outside {min}..={max}")
            }
            Self::NotPowerOfTwo(n) => write!(f, "{n} is not a power of two"),
            Self::NotPrime(n) => write!(f, "{n} is not prime"),
            Self::Empty => f.write_str("must not be empty"),
            Self::DuplicatePort { name, first } => {
                write!(f, "port {name} is declared twice (first at ports[{first}])")
            }
            Self::UnknownPort(name) => write!(f, "no [[ports]] entry is named {name}"),
            Self::UnknownAccount(id) => {
                write!(f, "account {id} is not declared in [[accounts]]")
            }
            Self::DuplicateAccount { id, first } => write!(
                f,
                "account {id} is declared twice (first at accounts[{first}])"
            ),
            Self::DuplicateUid { uid, account } => {
                write!(f, "uid {uid} already acts as account {account}")
            }
            Self::SocketPathTooLong(n) => write!(
                f,
                "the path is {n} bytes; a Unix socket path holds at most {MAX_SOCKET_PATH}"
            ),
            Self::TimeoutOutOfRange(d) => write!(
                f,
                "{} s is outside (0, {}] seconds",
                d.as_secs_f64(),
                MAX_TIMEOUT.as_secs()
            ),
            Self::AboveLimit { value, limit, max } => {
                write!(f, "{value} is above {limit} ({max})")
            }
            Self::NoService => f.write_str("an endpoint needs service_id or service_name"),
            Self::ServiceMismatch { id, name } => write!(
                f,
                "service_id {id} and service_name {name} name different services"
            ),
            Self::WrongRegion { name, region } => write!(
                f,
                "service name {name} is for region {}; this appliance serves region \
                 {region} (mgmt.region)",
                name.region()
            ),
            Self::Quota(e) => e.fmt(f),
            Self::Policy(reason) => write!(f, "invalid policy document: {reason}"),
            Self::StallNotAboveIdleSleep {
                stall_ms,
                idle_sleep_us,
            } => write!(
                f,
                "{stall_ms} ms is not more than workers.idle_sleep_us ({idle_sleep_us} µs): an idle worker would look stalled"
            ),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// `<file>: cannot read: <io error>`
    Read {
        /// The file.
        file: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `<file>: <toml's message, with line, column and an excerpt>`: not TOML, a wrong
    /// type, an unknown key, a missing required key or a malformed id.
    Syntax {
        /// The file, when read from one.
        file: Option<PathBuf>,
        /// What toml said.
        source: Box<toml::de::Error>,
    },
    /// `<file>: <key path>: <problem>`: well-formed but not valid.
    Invalid {
        /// The file, when read from one.
        file: Option<PathBuf>,
        /// Where, e.g. `vpcs[1].address`.
        at: KeyPath,
        /// What.
        problem: ConfigProblem,
    },
}

impl ConfigError {
    /// The file the error is in, if known.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Read { file, .. } => Some(file),
            Self::Syntax { file, .. } | Self::Invalid { file, .. } => file.as_deref(),
        }
    }

    /// The key path of a validation error.
    pub fn path(&self) -> Option<&KeyPath> {
        match self {
            Self::Invalid { at, .. } => Some(at),
            _ => None,
        }
    }

    /// The problem of a validation error.
    pub fn problem(&self) -> Option<&ConfigProblem> {
        match self {
            Self::Invalid { problem, .. } => Some(problem),
            _ => None,
        }
    }

    fn in_file(mut self, path: &Path) -> Self {
        match &mut self {
            Self::Read { .. } => {}
            Self::Syntax { file, .. } | Self::Invalid { file, .. } => {
                *file = Some(path.to_owned());
            }
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = self.file() {
            write!(f, "{}: ", file.display())?;
        }
        match self {
            Self::Read { source, .. } => write!(f, "cannot read: {source}"),
            Self::Syntax { source, .. } => write!(f, "{}", source.to_string().trim_end()),
            Self::Invalid { at, problem, .. } => write!(f, "{at}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            Self::Syntax { source, .. } => Some(source.as_ref()),
            Self::Invalid {
                problem: ConfigProblem::Model(e),
                ..
            } => Some(e.as_ref()),
            Self::Invalid { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
