//! The sections of the file (`[eal]`, `[workers]`, `[[ports]]`, `[mgmt]`, `[tables]`,
//! `[quotas]`, `[limits]`, `[timeouts]`, `[[endpoints]]`): their keys, serde forms and
//! defaults.
//!
//! The defaults here are also written in the README's configuration table and in
//! `src/default.toml`; a change to one needs the others. The ranges the field docs give are
//! enforced by `validate`, not by serde, so that an out-of-range value is reported with its
//! key path and the rule it broke rather than as a type error.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::serde_as_string;
use crate::model::{
    AccountId, Endpoint, EndpointId, EndpointState, IpAddressType, ParseError, SecurityGroupId,
    ServiceId, ServiceName, ValueKind, VpcId,
};

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
    /// Fragmented datagrams each worker tracks at once (virtual reassembly: the first
    /// fragment's ports given to the others), 16..=2^20; default 4096 (about 150 bytes
    /// each). A datagram beyond them is dropped (`fragment_table_full`).
    pub fragment_datagrams: u32,
    /// Fragments each worker holds while their datagram's first fragment has not come
    /// (they arrived out of order), 0..=65536; default 256 (0 = drop them,
    /// `fragment_held_full`).
    pub fragments_held: u32,
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
            fragment_datagrams: 4096,
            fragments_held: 256,
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
    /// How long a fragmented datagram is tracked after its first fragment, and how long a
    /// fragment waits for its datagram's first one, 0.01..=60 s; default 1 s (fragments of
    /// one datagram travel together; a long wait only keeps an attacker's state).
    #[serde(with = "seconds")]
    pub fragment: Duration,
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
            fragment: Duration::from_secs(1),
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
    /// The endpoint's IPv4 address in the consumer VPC; required unless the type is
    /// `ipv6`, which has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::Ipv4Addr>,
    /// `ipv4` (default), `dualstack` or `ipv6` (then `ip6` is required).
    #[serde(default)]
    pub ip_address_type: IpAddressType,
    /// The endpoint's address in the consumer VPC's IPv6 prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
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
            ip_address_type: self.ip_address_type,
            ip6: self.ip6,
            state: self.state,
            security_group_ids: self.security_group_ids.clone(),
            policy: self.policy.clone(),
            created_at: 0,
            deleted_at: None,
        })
    }
}

/// `[ha]`: this node is one of an active/standby pair (absent: a single node). Both
/// nodes read a configuration with the same `[ha]` (and the same objects); `node` (or
/// `privlinkd --ha-node NAME`) says which of `nodes` this one is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// This node's name in `nodes`; required here or on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The two nodes; required.
    pub nodes: Vec<HaNode>,
    /// The pair's shared key for the sync link's HMAC, as hex (at least 32 digits);
    /// exactly one of `key` and `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A file holding the key as hex (whitespace ignored); readable by privlinkd only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// How often each node sends a heartbeat, ms; default 100.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u32,
    /// Missed heartbeats after which the standby takes over; default 3.
    #[serde(default = "default_dead_after")]
    pub dead_after: u32,
    /// Whether a node of higher precedence takes over from an active peer of lower
    /// precedence (default false: a returning node stays standby).
    #[serde(default)]
    pub preempt: bool,
}

/// One node of the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaNode {
    /// Its name (1 to 32 of a-z, 0-9, '-').
    pub name: String,
    /// Where its sync link listens (UDP `ip:port`); the peer sends there.
    pub sync: std::net::SocketAddr,
    /// Precedence: the higher is active when both could be (ties: the first listed).
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_heartbeat_ms() -> u32 {
    100
}

fn default_dead_after() -> u32 {
    3
}

fn default_priority() -> u8 {
    100
}

impl HaConfig {
    /// Index of this node in `nodes` (validated configurations have one).
    pub fn me(&self) -> Option<usize> {
        let name = self.node.as_deref()?;
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The shared key's bytes: `key`, or the content of `key_file`.
    pub fn key_bytes(&self) -> Result<Vec<u8>, String> {
        let text = match (&self.key, &self.key_file) {
            (Some(k), None) => k.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| format!("ha.key_file {}: {e}", f.display()))?,
            _ => return Err("ha: exactly one of key and key_file is required".into()),
        };
        parse_key(&text)
    }
}

/// A key written as hex digits (whitespace ignored), at least 16 bytes.
pub fn parse_key(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() < 32 || !digits.len().is_multiple_of(2) {
        return Err(format!(
            "the key must be an even number of hex digits, at least 32 (16 bytes); it has {}",
            digits.len()
        ));
    }
    let hex = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    digits
        .chunks(2)
        .map(|p| match (hex(p[0]), hex(p[1])) {
            (Some(a), Some(b)) => Ok(a << 4 | b),
            _ => Err("the key must be hex digits only".to_owned()),
        })
        .collect()
}

/// `[cluster]`: the object model lives in etcd (through its HTTP/JSON gateway) under
/// `prefix`, shared by every node that names the same etcd and prefix; this node's state
/// directory keeps only a cache of the last state it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The etcd members' client URLs, `http://host:port` (plain HTTP: keep etcd on a
    /// private network or loopback), tried in turn; at least one.
    pub etcd: Vec<String>,
    /// Every key privlink writes starts with this; it must start and end with `/`
    /// (default `/privlink/`). Fleets sharing one etcd use different prefixes.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
    /// How long one request to etcd may take before the member counts as unreachable,
    /// ms (default 2000).
    #[serde(default = "default_cluster_timeout_ms")]
    pub timeout_ms: u32,
    /// This node's name in the commit record (default: the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The writes etcd takes in one transaction (its `--max-txn-ops`, default 128): a
    /// change that writes more keys is refused with the reason instead of being sent.
    #[serde(default = "default_max_txn_ops")]
    pub max_txn_ops: u32,
}

fn default_max_txn_ops() -> u32 {
    128
}

fn default_cluster_prefix() -> String {
    "/privlink/".to_owned()
}

fn default_cluster_timeout_ms() -> u32 {
    2000
}

/// `[metrics]`: `/metrics` in the Prometheus text format, served over HTTP from a thread
/// of its own that reads what the workers and the management side publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The address and port to listen on (`"127.0.0.1:9469"`); the metrics name every
    /// endpoint, service and account, so keep it off networks tenants reach.
    pub listen: std::net::SocketAddr,
}

/// `[flow_logs]`: one line per flow per window and at its end, in the cloud's flow-log
/// fields, written by a thread of its own from the workers' records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowLogsConfig {
    /// The file (appended; its directory is created if missing).
    pub path: std::path::PathBuf,
    /// The aggregation window, 1..=600 s; default 60.
    pub interval_s: u32,
    /// When the file grows past this many bytes it is renamed to `PATH.1` (the previous
    /// `PATH.1` goes) and a new one started; at least 4096; default 100 MiB.
    pub max_bytes: u64,
}

impl Default for FlowLogsConfig {
    fn default() -> Self {
        Self {
            path: std::path::PathBuf::from("/var/log/privlink/flows.log"),
            interval_s: 60,
            max_bytes: 100 << 20,
        }
    }
}
