//! The objects and the values their fields take, with their serde form and the queries
//! callers make of them.
//!
//! Plain data: nothing here checks how objects relate to each other (that is
//! `validate`'s job), so a value of these types may be invalid as a whole.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{
    serde_as_string, service_name, AccountId, EndpointId, ParseError, SecurityGroupId, ServiceId,
    ValueKind, VpcId,
};
use crate::net::{IpNet, Ipv4Net, Ipv6Net, MacAddr};

use super::chunked::Chunked;

// ---------------------------------------------------------------------------------------
// Enumerations

/// Declares `as_str`, `Display` and `FromStr` for a unit-only enum, spelt like its serde form.
macro_rules! text_enum {
    ($ty:ident, $kind:ident, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The value as it is serialised.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(ParseError::new(ValueKind::$kind, s)),
                }
            }
        }
    };
}

/// A listener's transport protocol. Serialised `"tcp"` / `"udp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// TCP, IP protocol 6.
    Tcp,
    /// UDP, IP protocol 17.
    Udp,
}

impl Protocol {
    /// The IP protocol number (the IPv4 header's protocol field).
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    /// The protocol with this IP protocol number, if it is one a listener can have.
    pub const fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }
}

text_enum!(Protocol, Protocol, { Tcp => "tcp", Udp => "udp" });

/// A target's registration state. Serialised `"registered"` / `"draining"`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum TargetState {
    /// Takes new flows (if its weight is non-zero).
    #[default]
    Registered,
    /// Takes no new flows; its existing flows continue until they end or the drain delay
    /// passes.
    Draining,
}

text_enum!(TargetState, TargetState, { Registered => "registered", Draining => "draining" });

/// An interface endpoint's state, spelt as the cloud spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndpointState {
    /// `pendingAcceptance`: created, waiting for the service owner to accept it.
    PendingAcceptance,
    /// `available`: accepted; traffic flows.
    Available,
    /// `rejected`: the service owner rejected it.
    Rejected,
    /// `deleting`: being deleted; no new traffic.
    Deleting,
    /// `deleted`: gone; kept only to be described. Holds no address.
    Deleted,
    /// `failed`: could not be set up.
    Failed,
}

impl EndpointState {
    /// Whether the data plane forwards traffic for an endpoint in this state: only
    /// `available` does.
    pub const fn forwards(self) -> bool {
        matches!(self, Self::Available)
    }

    /// Whether an endpoint in this state still holds its IP address in its VPC (every
    /// state but `deleted`).
    pub const fn holds_address(self) -> bool {
        !matches!(self, Self::Deleted)
    }

    /// Whether an endpoint in this state needs its service to exist: a `failed` endpoint
    /// (its service was deleted), and one `deleting` or `deleted`, may outlive it, to be
    /// described.
    pub const fn needs_service(self) -> bool {
        !matches!(self, Self::Failed | Self::Deleting | Self::Deleted)
    }
}

text_enum!(EndpointState, EndpointState, {
    PendingAcceptance => "pendingAcceptance",
    Available => "available",
    Rejected => "rejected",
    Deleting => "deleting",
    Deleted => "deleted",
    Failed => "failed",
});

/// Which addresses an endpoint has, the cloud's `IpAddressType`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum IpAddressType {
    /// An IPv4 address only.
    #[default]
    Ipv4,
    /// An IPv6 address only.
    Ipv6,
    /// One address of each family.
    Dualstack,
}

text_enum!(IpAddressType, IpAddressType, {
    Ipv4 => "ipv4",
    Ipv6 => "ipv6",
    Dualstack => "dualstack",
});

impl IpAddressType {
    /// Whether an endpoint of this type has an IPv4 address.
    pub const fn has_ipv4(self) -> bool {
        matches!(self, Self::Ipv4 | Self::Dualstack)
    }

    /// Whether an endpoint of this type has an IPv6 address.
    pub const fn has_ipv6(self) -> bool {
        matches!(self, Self::Ipv6 | Self::Dualstack)
    }

    /// Whether `self` is the default (`ipv4`), for serde's `skip_serializing_if`.
    fn is_ipv4(&self) -> bool {
        *self == Self::Ipv4
    }
}

/// An address family a service accepts endpoints of, one of the cloud's
/// `SupportedIpAddressTypes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IpFamily {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

text_enum!(IpFamily, IpFamily, { Ipv4 => "ipv4", Ipv6 => "ipv6" });

fn default_families() -> Vec<IpFamily> {
    vec![IpFamily::Ipv4]
}

fn is_default_families(v: &[IpFamily]) -> bool {
    v == [IpFamily::Ipv4]
}

/// Who may connect an endpoint to a service: one account, or everyone (`"*"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    /// `"*"`: every account.
    Any,
    /// One account.
    Account(AccountId),
}

impl Principal {
    /// Whether this principal covers `account`.
    pub fn allows(self, account: AccountId) -> bool {
        match self {
            Self::Any => true,
            Self::Account(a) => a == account,
        }
    }
}

impl FromStr for Principal {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s == "*" {
            Ok(Self::Any)
        } else {
            s.parse()
                .map(Self::Account)
                .map_err(|_| ParseError::new(ValueKind::Principal, s))
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Account(a) => a.fmt(f),
        }
    }
}

serde_as_string!(Principal, "\"*\" or a 12-digit account id string");

// ---------------------------------------------------------------------------------------
// Objects

/// One backend of a listener, `ip:port` in (or, through the gateway, beyond) the provider
/// VPC.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The backend's address: IPv4, or IPv6 (reached by NAT66 from IPv6 consumers only;
    /// a listener's targets are of one family).
    pub ip: IpAddr,
    /// The backend's port, non-zero.
    pub port: u16,
    /// Relative share of new flows; default 1. 0 = takes no new flows (existing ones go on).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Registration state; default `registered`.
    #[serde(default)]
    pub state: TargetState,
    /// When deregistration started (unix seconds), while `draining`; the target is
    /// removed once the deregistration delay has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregistered_at: Option<u64>,
}

fn default_weight() -> u32 {
    1
}

impl Target {
    /// A registered target of weight 1.
    pub fn new(ip: impl Into<IpAddr>, port: u16) -> Self {
        Self {
            ip: ip.into(),
            port,
            weight: 1,
            state: TargetState::Registered,
            deregistered_at: None,
        }
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Its address's family.
    pub fn family(&self) -> IpFamily {
        if self.ip.is_ipv4() {
            IpFamily::Ipv4
        } else {
            IpFamily::Ipv6
        }
    }

    /// Whether the load balancer may send it a new flow (registered and weight > 0).
    pub fn takes_new_flows(&self) -> bool {
        self.state == TargetState::Registered && self.weight > 0
    }
}

/// How a listener's targets are checked. Serialised `"tcp"` / `"http"`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase")]
pub enum HealthCheckProtocol {
    /// A TCP connection is opened (the handshake completes) and reset.
    #[default]
    Tcp,
    /// A GET of the health-check path; healthy when the status is in the matcher.
    Http,
}

text_enum!(HealthCheckProtocol, HealthCheckProtocol, { Tcp => "tcp", Http => "http" });

/// The HTTP status codes an `http` health check accepts, the cloud's `Matcher`: codes
/// and ranges separated by commas (`"200"`, `"200-399"`, `"200,202,301-302"`), each code
/// in 200..=599. Kept as given, parsed by [`Matcher::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    text: String,
    ranges: Vec<(u16, u16)>,
}

/// The codes a [`Matcher`] may name.
pub const MATCHER_CODES: std::ops::RangeInclusive<u16> = 200..=599;

impl Matcher {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let mut ranges = Vec::new();
        if text.is_empty() || text.len() > 128 {
            return Err("must be 1 to 128 characters".into());
        }
        for part in text.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a, b),
                None => (part, part),
            };
            let code = |s: &str| -> Result<u16, String> {
                match s.parse::<u16>() {
                    Ok(c) if s.len() == 3 && MATCHER_CODES.contains(&c) => Ok(c),
                    _ => Err(format!(
                        "{part:?} is not an HTTP status code or range of codes in 200-599"
                    )),
                }
            };
            let (a, b) = (code(a)?, code(b)?);
            if a > b {
                return Err(format!("{part:?}: the range ends before it starts"));
            }
            ranges.push((a, b));
        }
        Ok(Matcher {
            text: text.to_owned(),
            ranges,
        })
    }

    /// Whether `status` is one of the codes.
    pub fn matches(&self, status: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&status))
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Default for Matcher {
    fn default() -> Matcher {
        Matcher {
            text: "200-399".into(),
            ranges: vec![(200, 399)],
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Matcher {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Matcher::parse(s).map_err(|_| ParseError::new(ValueKind::Matcher, s))
    }
}

serde_as_string!(
    Matcher,
    "HTTP status codes, e.g. \"200-399\" or \"200,302\""
);

/// The ranges of the health-check settings, the cloud load balancer's.
pub mod health_limits {
    use std::ops::RangeInclusive;
    /// `HealthCheckIntervalSeconds`.
    pub const INTERVAL_S: RangeInclusive<u16> = 5..=300;
    /// `HealthCheckTimeoutSeconds`.
    pub const TIMEOUT_S: RangeInclusive<u16> = 2..=120;
    /// `HealthyThresholdCount` and `UnhealthyThresholdCount`.
    pub const THRESHOLD: RangeInclusive<u8> = 2..=10;
    /// A listener's idle timeout (the cloud's `tcp.idle_timeout.seconds`), also for UDP.
    pub const IDLE_TIMEOUT_S: RangeInclusive<u32> = 60..=6000;
    /// Longest `HealthCheckPath`.
    pub const PATH_LEN: usize = 1024;
}

/// One listener of a service: traffic to an endpoint on `protocol`/`port` is forwarded to
/// this listener's own target group (as an NLB listener forwards to its target group),
/// whose targets are health-checked with the settings here (the cloud's names, in
/// snake case; defaults the cloud's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Transport protocol.
    pub protocol: Protocol,
    /// Port on the endpoint address, non-zero; unique per protocol within a service.
    pub port: u16,
    /// The target group.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// `HealthCheckEnabled`; default true. Off: targets are `unavailable` and all take
    /// traffic.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub health_check_enabled: bool,
    /// `HealthCheckProtocol`; default `tcp`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub health_check_protocol: HealthCheckProtocol,
    /// `HealthCheckPort`; default the target's own port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_port: Option<u16>,
    /// `HealthCheckPath` of an `http` check; default `/`.
    #[serde(default = "default_path", skip_serializing_if = "is_default_path")]
    pub health_check_path: String,
    /// `Matcher` of an `http` check; default `200-399`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub matcher: Matcher,
    /// `HealthCheckIntervalSeconds`, 5–300; default 30.
    #[serde(
        default = "default_interval",
        skip_serializing_if = "is_default_interval"
    )]
    pub health_check_interval_seconds: u16,
    /// `HealthCheckTimeoutSeconds`, 2–120 and below the interval; default 10.
    #[serde(
        default = "default_timeout",
        skip_serializing_if = "is_default_timeout"
    )]
    pub health_check_timeout_seconds: u16,
    /// `HealthyThresholdCount`, 2–10; default 5.
    #[serde(
        default = "default_healthy",
        skip_serializing_if = "is_default_healthy"
    )]
    pub healthy_threshold_count: u8,
    /// `UnhealthyThresholdCount`, 2–10; default 2.
    #[serde(
        default = "default_unhealthy",
        skip_serializing_if = "is_default_unhealthy"
    )]
    pub unhealthy_threshold_count: u8,
    /// Whether the flows of a target that becomes unhealthy are ended (a RST to both
    /// sides); default true, the cloud's
    /// `target_health_state.unhealthy.connection_termination.enabled`.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub connection_termination_on_unhealthy: bool,
    /// How long a flow of this listener may idle (established TCP, or UDP), 60–6000 s;
    /// default the global `[timeouts]` value for its protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_seconds: Option<u32>,
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_path() -> String {
    "/".into()
}

fn is_default_path(p: &String) -> bool {
    p == "/"
}

/// `HealthCheckIntervalSeconds`'s default.
pub const DEFAULT_INTERVAL_S: u16 = 30;
/// `HealthCheckTimeoutSeconds`'s default.
pub const DEFAULT_TIMEOUT_S: u16 = 10;
/// `HealthyThresholdCount`'s default.
pub const DEFAULT_HEALTHY: u8 = 5;
/// `UnhealthyThresholdCount`'s default.
pub const DEFAULT_UNHEALTHY: u8 = 2;

fn default_interval() -> u16 {
    DEFAULT_INTERVAL_S
}
fn is_default_interval(v: &u16) -> bool {
    *v == DEFAULT_INTERVAL_S
}
fn default_timeout() -> u16 {
    DEFAULT_TIMEOUT_S
}
fn is_default_timeout(v: &u16) -> bool {
    *v == DEFAULT_TIMEOUT_S
}
fn default_healthy() -> u8 {
    DEFAULT_HEALTHY
}
fn is_default_healthy(v: &u8) -> bool {
    *v == DEFAULT_HEALTHY
}
fn default_unhealthy() -> u8 {
    DEFAULT_UNHEALTHY
}
fn is_default_unhealthy(v: &u8) -> bool {
    *v == DEFAULT_UNHEALTHY
}

impl Listener {
    /// A listener with these targets and every other setting at its default.
    pub fn new(protocol: Protocol, port: u16, targets: Vec<Target>) -> Listener {
        Listener {
            protocol,
            port,
            targets,
            health_check_enabled: true,
            health_check_protocol: HealthCheckProtocol::Tcp,
            health_check_port: None,
            health_check_path: default_path(),
            matcher: Matcher::default(),
            health_check_interval_seconds: DEFAULT_INTERVAL_S,
            health_check_timeout_seconds: DEFAULT_TIMEOUT_S,
            healthy_threshold_count: DEFAULT_HEALTHY,
            unhealthy_threshold_count: DEFAULT_UNHEALTHY,
            connection_termination_on_unhealthy: true,
            idle_timeout_seconds: None,
        }
    }
}

/// How many endpoints the accounts a principal covers may each have connected to a
/// service (GCP's `connectionLimit`): an account's own limit wins over `"*"`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimit {
    /// One account, or `"*"` (every account without a limit of its own).
    pub principal: Principal,
    /// Endpoints in `pendingAcceptance` or `available`, per account.
    pub limit: u32,
}

/// An endpoint service: what a provider offers to consumers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `vpce-svc-…`.
    pub id: ServiceId,
    /// The provider account; must own `vpc_id`.
    pub owner: AccountId,
    /// The provider VPC, where the targets and SNAT addresses are.
    pub vpc_id: VpcId,
    /// Listeners, unique by (protocol, port).
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Addresses the appliance owns in the provider VPC, as the source of forwarded
    /// traffic; at least one, and one of each family its listeners' targets have (IPv6
    /// ones inside the VPC's IPv6 prefix).
    #[serde(default)]
    pub snat_addresses: Vec<IpAddr>,
    /// Whether a new endpoint waits in `pendingAcceptance` until the owner accepts it;
    /// default true, as in the cloud.
    #[serde(default = "default_true")]
    pub acceptance_required: bool,
    /// Who may create endpoints to this service (besides the owner).
    #[serde(default)]
    pub allowed_principals: Vec<Principal>,
    /// Accounts whose endpoints skip `pendingAcceptance` even when acceptance is required
    /// (Azure's auto-approval). Grants no permission: the account must still be allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auto_accept_principals: Vec<Principal>,
    /// Per-account limits on connected endpoints; none = no limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub connection_limits: Vec<ConnectionLimit>,
    /// The address families of the endpoints it accepts (`SupportedIpAddressTypes`), in
    /// order, each once, at least one; default `ipv4`. An `ipv6` or `dualstack` endpoint
    /// needs `ipv6`, an `ipv4` or `dualstack` one `ipv4`. Independent of the targets'
    /// family: IPv6 traffic to IPv4 targets is translated.
    #[serde(
        default = "default_families",
        skip_serializing_if = "is_default_families"
    )]
    pub supported_ip_address_types: Vec<IpFamily>,
}

fn default_true() -> bool {
    true
}

impl Service {
    /// `com.privlink.vpce.<region>.<id>`.
    pub fn name(&self, region: &str) -> String {
        service_name(region, self.id)
    }

    /// The listener for `protocol`/`port`, if any.
    pub fn listener(&self, protocol: Protocol, port: u16) -> Option<&Listener> {
        self.listeners
            .iter()
            .find(|l| l.protocol == protocol && l.port == port)
    }

    /// Whether it accepts endpoints of `family`.
    pub fn supports(&self, family: IpFamily) -> bool {
        self.supported_ip_address_types.contains(&family)
    }

    /// Whether it accepts endpoints of address type `t` (every family `t` has).
    pub fn accepts(&self, t: IpAddressType) -> bool {
        (!t.has_ipv4() || self.supports(IpFamily::Ipv4))
            && (!t.has_ipv6() || self.supports(IpFamily::Ipv6))
    }

    /// Whether `account` may create an endpoint to this service: the owner, or an account
    /// an allowed principal covers. Checked when an endpoint is created, not by
    /// [`State::validate`]: removing a permission leaves existing endpoints connected, as
    /// in the cloud.
    pub fn allows(&self, account: AccountId) -> bool {
        account == self.owner || self.allowed_principals.iter().any(|p| p.allows(account))
    }

    /// Whether an endpoint of `account` is accepted without the owner's answer.
    pub fn auto_accepts(&self, account: AccountId) -> bool {
        !self.acceptance_required
            || account == self.owner
            || self
                .auto_accept_principals
                .iter()
                .any(|p| p.allows(account))
    }

    /// How many connected endpoints `account` may have: its own limit, else `"*"`'s.
    pub fn connection_limit(&self, account: AccountId) -> Option<u32> {
        let of = |p: Principal| {
            self.connection_limits
                .iter()
                .find(|l| l.principal == p)
                .map(|l| l.limit)
        };
        of(Principal::Account(account)).or_else(|| of(Principal::Any))
    }
}

/// An interface endpoint: a consumer's private address for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `vpce-…`.
    pub id: EndpointId,
    /// The consumer account; must own `vpc_id`.
    pub owner: AccountId,
    /// The consumer VPC the address is in.
    pub vpc_id: VpcId,
    /// The service it connects to.
    pub service_id: ServiceId,
    /// The endpoint's IPv4 address in the consumer VPC, exactly when its type has one
    /// (none for an `ipv6` endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// Which addresses it has (`IpAddressType`); default `ipv4`.
    #[serde(default, skip_serializing_if = "IpAddressType::is_ipv4")]
    pub ip_address_type: IpAddressType,
    /// Its IPv6 address in the consumer VPC's IPv6 prefix, exactly when its type has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    /// Lifecycle state; only `available` forwards.
    pub state: EndpointState,
    /// Security groups applied to traffic into the endpoint (may be empty for now).
    #[serde(default)]
    pub security_group_ids: Vec<SecurityGroupId>,
    /// The endpoint policy document, kept raw (as given) and compiled by
    /// [`crate::policy::Policy::parse`]; [`State::validate`] checks that it compiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
    /// When it was created, unix seconds; 0 = unknown (declared in the configuration).
    #[serde(default)]
    pub created_at: u64,
    /// When its deletion was asked for (unix seconds), while `deleting` or `deleted`: it
    /// is `deleted` from the next second on, and forgotten an hour later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<u64>,
}

/// The protocol of a security group ingress rule. Serialised as EC2 spells it: `"tcp"`,
/// `"udp"`, `"icmp"`, or `"-1"` for every protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuleProtocol {
    /// TCP (6), ports `from_port..=to_port`.
    #[serde(rename = "tcp")]
    Tcp,
    /// UDP (17), ports `from_port..=to_port`.
    #[serde(rename = "udp")]
    Udp,
    /// ICMP (1); ports are ignored.
    #[serde(rename = "icmp")]
    Icmp,
    /// `-1`: every protocol; ports are ignored.
    #[serde(rename = "-1")]
    All,
}

impl RuleProtocol {
    /// The value as it is serialised.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::All => "-1",
        }
    }

    /// Whether the rule's port range applies (TCP and UDP only).
    pub const fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }
}

impl fmt::Display for RuleProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ingress rule of a security group: traffic from `cidr` on `protocol` (and, for TCP
/// and UDP, a destination port in `from_port..=to_port`) may reach the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// The protocol.
    pub protocol: RuleProtocol,
    /// First destination port (TCP/UDP); 0 otherwise.
    #[serde(default)]
    pub from_port: u16,
    /// Last destination port (TCP/UDP), at least `from_port`; 0 otherwise.
    #[serde(default)]
    pub to_port: u16,
    /// Allowed source prefix, in network form (`10.1.0.0/24`, or IPv6 `fd00:c1::/64`:
    /// such a rule admits IPv6 consumers of a dual-stack endpoint, its `icmp` ICMPv6).
    pub cidr: IpNet,
}

impl IngressRule {
    /// Whether a packet of IP protocol `proto_number` to `dst_port` from `src` is allowed
    /// by this rule. For `icmp` and `-1` the port is ignored.
    pub fn matches(&self, proto_number: u8, dst_port: u16, src: IpAddr) -> bool {
        if !self.cidr.contains(src) {
            return false;
        }
        let in_range = || (self.from_port..=self.to_port).contains(&dst_port);
        match self.protocol {
            RuleProtocol::Tcp => proto_number == 6 && in_range(),
            RuleProtocol::Udp => proto_number == 17 && in_range(),
            RuleProtocol::Icmp => proto_number == if src.is_ipv6() { 58 } else { 1 },
            RuleProtocol::All => true,
        }
    }
}

/// A security group: a set of ingress rules in one VPC, applied to the endpoints that
/// name it. Traffic into an endpoint with groups must match a rule of one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// `sg-…`.
    pub id: SecurityGroupId,
    /// The owning account; must own `vpc_id`.
    pub owner: AccountId,
    /// The VPC it belongs to.
    pub vpc_id: VpcId,
    /// Its name, unique within the VPC.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Ingress rules; none = nothing is allowed in.
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
}

impl SecurityGroup {
    /// Whether some rule allows the packet (see [`IngressRule::matches`]).
    pub fn allows(&self, proto_number: u8, dst_port: u16, src: IpAddr) -> bool {
        self.ingress
            .iter()
            .any(|r| r.matches(proto_number, dst_port, src))
    }
}

/// An account and the local users that act as it on the management socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The 12-digit id.
    pub id: AccountId,
    /// A human name for tables and logs.
    #[serde(default)]
    pub name: String,
    /// Unix uids (socket peer credentials) that act as this account; a uid maps to at most
    /// one account.
    #[serde(default)]
    pub uids: Vec<u32>,
}

/// A neighbour whose MAC address is configured rather than learnt by ARP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNeighbour {
    /// Its address, inside the attachment's prefix.
    pub ip: Ipv4Addr,
    /// Its Ethernet address, unicast.
    pub mac: MacAddr,
}

/// An IPv6 neighbour whose MAC address is configured rather than found by neighbour
/// discovery.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticNeighbour6 {
    /// Its address: link-local, or inside the attachment's `address6` prefix.
    pub ip: std::net::Ipv6Addr,
    /// Its Ethernet address, unicast.
    pub mac: MacAddr,
}

/// A VPC attachment: one DPDK port, optionally one 802.1Q VLAN on it, bound to one VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcAttachment {
    /// The VPC; unique among attachments.
    pub vpc_id: VpcId,
    /// The account that owns the VPC.
    pub account: AccountId,
    /// The DPDK device name of the port it is on.
    pub port: String,
    /// The VLAN id, 1..=4094; none = untagged. (port, vlan) is unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The appliance's own IPv4 address in the VPC and the prefix it is on, if the VPC
    /// has IPv4 (an attachment has this, `address6` or both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Net>,
    /// The appliance's own IPv6 address in the VPC and its prefix, if the VPC has one:
    /// the appliance answers neighbour solicitations and echo requests for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Net>,
    /// The next hop for targets outside the prefix; inside the prefix. Without one, every
    /// target must be on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 next hop for consumers outside `address6`'s prefix: a link-local address
    /// (as routers are usually reached) or one inside the prefix. Needs `address6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Neighbours not resolved by ARP.
    #[serde(default)]
    pub static_neighbours: Vec<StaticNeighbour>,
    /// IPv6 neighbours not resolved by neighbour discovery (link-local or inside
    /// `address6`'s prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_neighbours6: Vec<StaticNeighbour6>,
    /// Lowers the MSS option of TCP SYN and SYN-ACK segments crossing this attachment to
    /// this value, as the cloud does ([`MSS_CLAMP_RANGE`]); none = leave it alone. A flow
    /// gets the lower of its two attachments' clamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mss_clamp: Option<u16>,
}

/// The MSS clamps an attachment accepts: 536 is the MSS every host must accept (RFC 9293
/// §3.7.1), 9000 a jumbo frame's worth.
pub const MSS_CLAMP_RANGE: std::ops::RangeInclusive<u16> = 536..=9000;

/// The set of services and endpoints that a data-plane snapshot is built from, and what
/// the management plane must remember with them (idempotency tokens, the declared objects
/// last applied from the configuration file).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// Endpoint services.
    pub services: Vec<Service>,
    /// Interface endpoints: up to a million, so shared in chunks between the versions the
    /// store keeps and copies.
    pub endpoints: Chunked<Endpoint>,
    /// Security groups, applied to endpoints.
    pub security_groups: Vec<SecurityGroup>,
    /// `ClientToken`s of create requests and what they answered, for 24 hours.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_tokens: Vec<ClientToken>,
    /// The objects the configuration file declared when it was last applied: a start or
    /// a reload applies only what changed in the file since (see [`Declared`]). `None` in
    /// a state saved before this was kept: then the state is the truth and the file's
    /// current declarations become the baseline. Behind an `Arc`: it is as large as the
    /// file's declarations and changes only with the file, so the copy of the state each
    /// request makes shares it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<Arc<Declared>>,
}

impl Clone for State {
    fn clone(&self) -> Self {
        let mut copy = State::default();
        copy.clone_from(self);
        copy
    }

    /// Into `self`'s allocations: the store copies its state for every request, and a
    /// fresh copy of thousands of services costs as much in page faults as in copying
    /// (the endpoints share their chunks, so their copy is one of pointers).
    fn clone_from(&mut self, source: &Self) {
        let State {
            services,
            endpoints,
            security_groups,
            client_tokens,
            declared,
        } = self;
        services.clone_from(&source.services);
        endpoints.clone_from(&source.endpoints);
        security_groups.clone_from(&source.security_groups);
        client_tokens.clone_from(&source.client_tokens);
        declared.clone_from(&source.declared);
    }
}

/// The objects a configuration file declares (`[[services]]`, `[[endpoints]]`,
/// `[[security_groups]]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Declared {
    /// Declared services.
    pub services: Vec<Service>,
    /// Declared endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Declared security groups.
    pub security_groups: Vec<SecurityGroup>,
}

/// One `ClientToken` of a create request: who sent it, a fingerprint of the arguments, and
/// the answer, so a retry with the same token and arguments gets the same answer (and no
/// second object), and the same token with other arguments is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientToken {
    /// Whose token: the caller's account id, or `admin`.
    pub scope: String,
    /// The token, 1 to 64 printable ASCII characters.
    pub token: String,
    /// The operation it was sent with.
    pub op: String,
    /// FNV-1a 64 of the canonical JSON of the other arguments, 16 hex digits.
    pub fingerprint: String,
    /// The answer of the first request.
    pub response: serde_json::Value,
    /// When it was first used, unix seconds.
    pub created_at: u64,
}

impl State {
    /// The service with this id.
    pub fn service(&self, id: ServiceId) -> Option<&Service> {
        self.services.iter().find(|s| s.id == id)
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: EndpointId) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// The security group with this id.
    pub fn security_group(&self, id: SecurityGroupId) -> Option<&SecurityGroup> {
        self.security_groups.iter().find(|g| g.id == id)
    }
}
