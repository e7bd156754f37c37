//! The object model: endpoint services, interface endpoints, accounts and VPC attachments,
//! and the rules that make a set of them valid.
//!
//! These types are the one description of privlink's objects: the configuration file
//! declares them, the management socket creates and changes them, the state file persists
//! them as JSON, and the data plane builds its immutable snapshot from a validated
//! [`State`]. So they are plain data (no behaviour beyond queries and validation), and
//! their serde form is a stable contract:
//!
//! - keys are `snake_case`, the same in TOML and JSON (`vpc_id`, `snat_addresses`);
//! - enum values are spelt as EC2 spells them: `tcp`, `registered`, `pendingAcceptance`;
//! - ids, addresses and prefixes are strings in their canonical text form;
//! - unknown keys are rejected, so a typo is an error and not a silently ignored field.
//!
//! Validation ([`validate_attachments`], [`State::validate`]) never changes anything; it
//! reports the first problem as a [`ModelError`] naming the object, the key path and an
//! EC2-style error code. This module must never depend on the configuration file's layout
//! beyond the key names it shares with it (`vpcs`, `services`, `endpoints`).

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::serde_as_string;
pub use crate::ids::{
    is_valid_region, service_name, AccountId, EndpointId, ParseError, SecurityGroupId, ServiceId,
    ServiceName, ValueKind, VpcId, SERVICE_NAME_PREFIX,
};
use crate::net::{is_unicast_host, Ipv4Net, MacAddr};

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
    /// The backend's address.
    pub ip: Ipv4Addr,
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
    pub fn new(ip: Ipv4Addr, port: u16) -> Self {
        Self {
            ip,
            port,
            weight: 1,
            state: TargetState::Registered,
            deregistered_at: None,
        }
    }

    /// `ip:port`.
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.port)
    }

    /// Whether the load balancer may send it a new flow (registered and weight > 0).
    pub fn takes_new_flows(&self) -> bool {
        self.state == TargetState::Registered && self.weight > 0
    }
}

/// One listener of a service: traffic to an endpoint on `protocol`/`port` is forwarded to
/// this listener's own target group (as an NLB listener forwards to its target group).
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
    /// traffic; at least one.
    #[serde(default)]
    pub snat_addresses: Vec<Ipv4Addr>,
    /// Whether a new endpoint waits in `pendingAcceptance` until the owner accepts it;
    /// default true, as in the cloud.
    #[serde(default = "default_true")]
    pub acceptance_required: bool,
    /// Who may create endpoints to this service (besides the owner).
    #[serde(default)]
    pub allowed_principals: Vec<Principal>,
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

    /// Whether `account` may create an endpoint to this service: the owner, or an account
    /// an allowed principal covers. Checked when an endpoint is created, not by
    /// [`State::validate`]: removing a permission leaves existing endpoints connected, as
    /// in the cloud.
    pub fn allows(&self, account: AccountId) -> bool {
        account == self.owner || self.allowed_principals.iter().any(|p| p.allows(account))
    }
}

/// An interface endpoint: a consumer's private address for a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The endpoint's address in the consumer VPC.
    pub ip: Ipv4Addr,
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
    /// Allowed source prefix, in network form (`10.1.0.0/24`).
    pub cidr: Ipv4Net,
}

impl IngressRule {
    /// Whether a packet of IP protocol `proto_number` to `dst_port` from `src` is allowed
    /// by this rule. For `icmp` and `-1` the port is ignored.
    pub fn matches(&self, proto_number: u8, dst_port: u16, src: Ipv4Addr) -> bool {
        if !self.cidr.contains(src) {
            return false;
        }
        let in_range = || (self.from_port..=self.to_port).contains(&dst_port);
        match self.protocol {
            RuleProtocol::Tcp => proto_number == 6 && in_range(),
            RuleProtocol::Udp => proto_number == 17 && in_range(),
            RuleProtocol::Icmp => proto_number == 1,
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
    pub fn allows(&self, proto_number: u8, dst_port: u16, src: Ipv4Addr) -> bool {
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
    /// The appliance's own address in the VPC and the prefix it is on.
    pub address: Ipv4Net,
    /// The next hop for targets outside the prefix; inside the prefix. Without one, every
    /// target must be on-link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Neighbours not resolved by ARP.
    #[serde(default)]
    pub static_neighbours: Vec<StaticNeighbour>,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// Endpoint services.
    pub services: Vec<Service>,
    /// Interface endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Security groups, applied to endpoints.
    pub security_groups: Vec<SecurityGroup>,
    /// `ClientToken`s of create requests and what they answered, for 24 hours.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub client_tokens: Vec<ClientToken>,
    /// The objects the configuration file declared when it was last applied: a start or
    /// a reload applies only what changed in the file since (see [`Declared`]). `None` in
    /// a state saved before this was kept: then the state is the truth and the file's
    /// current declarations become the baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declared>,
}

/// The objects a configuration file declares (`[[services]]`, `[[endpoints]]`,
/// `[[security_groups]]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

// ---------------------------------------------------------------------------------------
// Errors

/// Where in a document a problem is: `vpcs[1].address`, `services[0].listeners[1].port`.
///
/// Paths name the keys shared by the configuration file and the JSON state (`vpcs`,
/// `services`, `endpoints`), so a model error points into either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<PathSegment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A table key.
    Key(&'static str),
    /// An array index.
    Index(usize),
}

impl KeyPath {
    /// The empty path (the document itself).
    pub fn new() -> Self {
        Self::default()
    }

    /// This path, then key `key`.
    #[must_use]
    pub fn key(&self, key: &'static str) -> Self {
        let mut p = self.clone();
        p.0.push(PathSegment::Key(key));
        p
    }

    /// This path, then index `index`.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(PathSegment::Index(index));
        p
    }

    /// Shorthand for `new().key(collection).index(index)`.
    pub fn item(collection: &'static str, index: usize) -> Self {
        Self::new().key(collection).index(index)
    }

    /// The steps.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                PathSegment::Key(k) if i == 0 => f.write_str(k)?,
                PathSegment::Key(k) => write!(f, ".{k}")?,
                PathSegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The object a [`ModelError`] is about; prints as the error message's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// `endpoint vpce-…`
    Endpoint(EndpointId),
    /// `service vpce-svc-…`
    Service(ServiceId),
    /// `service vpce-svc-… listener tcp/80`
    Listener {
        /// The service.
        service: ServiceId,
        /// The listener's protocol.
        protocol: Protocol,
        /// The listener's port.
        port: u16,
    },
    /// `service vpce-svc-… listener tcp/80 target 10.2.0.11:8080`
    Target {
        /// The service.
        service: ServiceId,
        /// The listener's protocol.
        protocol: Protocol,
        /// The listener's port.
        port: u16,
        /// The target.
        target: SocketAddrV4,
    },
    /// `vpc attachment vpc-…`
    Attachment(VpcId),
    /// `security group sg-…`
    SecurityGroup(SecurityGroupId),
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Endpoint(id) => write!(f, "endpoint {id}"),
            Self::Service(id) => write!(f, "service {id}"),
            Self::Listener {
                service,
                protocol,
                port,
            } => write!(f, "service {service} listener {protocol}/{port}"),
            Self::Target {
                service,
                protocol,
                port,
                target,
            } => write!(
                f,
                "service {service} listener {protocol}/{port} target {target}"
            ),
            Self::Attachment(vpc) => write!(f, "vpc attachment {vpc}"),
            Self::SecurityGroup(id) => write!(f, "security group {id}"),
        }
    }
}

/// What an address in an error is to its object; prints as the address's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressRole {
    /// `ip` of an endpoint.
    Ip,
    /// `snat address` of a service.
    SnatAddress,
    /// `target` of a listener.
    Target,
    /// `address` (the appliance's own) of an attachment.
    Address,
    /// `gateway` of an attachment.
    Gateway,
    /// `static neighbour` of an attachment.
    Neighbour,
}

impl fmt::Display for AddressRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ip => "ip",
            Self::SnatAddress => "snat address",
            Self::Target => "target",
            Self::Address => "address",
            Self::Gateway => "gateway",
            Self::Neighbour => "static neighbour",
        })
    }
}

/// Which reserved address of a prefix an address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reserved {
    /// `network`: all host bits clear.
    Network,
    /// `broadcast`: all host bits set.
    Broadcast,
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Network => "network",
            Self::Broadcast => "broadcast",
        })
    }
}

/// Who already uses an address in a VPC; prints as the end of an "in use" message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressHolder {
    /// `the appliance itself` (the attachment's own address).
    Appliance,
    /// `the gateway`.
    Gateway,
    /// `a static neighbour`.
    Neighbour,
    /// `endpoint vpce-…`.
    Endpoint(EndpointId),
    /// `service vpce-svc-… as a snat address`.
    Snat(ServiceId),
}

impl AddressHolder {
    /// Whether the appliance answers for this address (ARP, ICMP): its own, SNAT and
    /// endpoint addresses. Such an address can never be a target.
    pub fn is_appliance_owned(self) -> bool {
        matches!(self, Self::Appliance | Self::Endpoint(_) | Self::Snat(_))
    }
}

impl fmt::Display for AddressHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Appliance => f.write_str("the appliance itself"),
            Self::Gateway => f.write_str("the gateway"),
            Self::Neighbour => f.write_str("a static neighbour"),
            Self::Endpoint(id) => write!(f, "endpoint {id}"),
            Self::Snat(id) => write!(f, "service {id} as a snat address"),
        }
    }
}

/// Why a set of objects is invalid. Each variant names where (`path()`), the object it is
/// about (`object()`), prints `<object>: <problem>` as documented on it, and has an
/// EC2-style `code()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// `<object>: id declared twice (first at <first>)`. Code `InvalidEndpointId.Duplicate`,
    /// `InvalidServiceId.Duplicate` or `InvalidVpcId.Duplicate` after the object.
    DuplicateId {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// Where the same id appeared first.
        first: KeyPath,
    },
    /// `<object>: vpc-… has no attachment on this appliance`. Code `InvalidVpcId.NotFound`.
    VpcNotAttached {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The VPC named.
        vpc: VpcId,
    },
    /// `<object>: owner 222222222222 does not own vpc-… (account 111111111111 does)`.
    /// Code `InvalidVpcId.NotFound`, as the cloud answers for another account's VPC.
    VpcNotOwned {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The VPC named.
        vpc: VpcId,
        /// The object's owner.
        owner: AccountId,
        /// The VPC's account.
        vpc_account: AccountId,
    },
    /// `<object>: <role> 10.9.0.5 is outside 10.1.0.0/24 of vpc-…`.
    /// Code `InvalidParameterValue`.
    OutsidePrefix {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What the address is.
        role: AddressRole,
        /// The address.
        ip: Ipv4Addr,
        /// The VPC's prefix (network form).
        prefix: Ipv4Net,
        /// The VPC.
        vpc: VpcId,
    },
    /// `<object>: target 10.9.0.5 is outside 10.2.0.0/24 of vpc-… and the attachment has
    /// no gateway`. Code `InvalidParameterValue`.
    TargetOffLink {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The target address.
        ip: Ipv4Addr,
        /// The VPC's prefix (network form).
        prefix: Ipv4Net,
        /// The VPC.
        vpc: VpcId,
    },
    /// `<object>: <role> 10.1.0.255 is the broadcast address of 10.1.0.0/24 in vpc-…`.
    /// Code `InvalidParameterValue`.
    ReservedAddress {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What the address is.
        role: AddressRole,
        /// The address.
        ip: Ipv4Addr,
        /// Network or broadcast.
        reserved: Reserved,
        /// The VPC's prefix (network form).
        prefix: Ipv4Net,
        /// The VPC.
        vpc: VpcId,
    },
    /// `<object>: <role> 224.0.0.1 is not a unicast host address`.
    /// Code `InvalidParameterValue`.
    NotUnicast {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What the address is.
        role: AddressRole,
        /// The address.
        ip: Ipv4Addr,
    },
    /// `<object>: <role> 10.1.0.1 is already in use in vpc-… by <holder>`.
    /// Code `InvalidIpAddress.InUse`.
    AddressInUse {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What the address is.
        role: AddressRole,
        /// The address.
        ip: Ipv4Addr,
        /// The VPC.
        vpc: VpcId,
        /// Who has it.
        holder: AddressHolder,
    },
    /// `<object>: at least one snat address is required`. Code `InvalidParameterValue`.
    NoSnatAddress {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
    },
    /// `<object>: port must not be 0`. Code `InvalidParameterValue`.
    ZeroPort {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
    },
    /// `<object>: declared twice (first at <first>)` for a listener. Code `DuplicateListener`.
    DuplicateListener {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// Where the same (protocol, port) appeared first.
        first: KeyPath,
    },
    /// `<object>: registered twice (first at <first>)` for a target.
    /// Code `InvalidParameterValue`.
    DuplicateTarget {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// Where the same ip:port appeared first.
        first: KeyPath,
    },
    /// `<object>: service vpce-svc-… does not exist`. Code `InvalidServiceId.NotFound`.
    ServiceNotFound {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The service named.
        service: ServiceId,
    },
    /// `<object>: vlan 4095 is outside 1..=4094`. Code `InvalidParameterValue`.
    VlanOutOfRange {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The VLAN id given.
        vlan: u16,
    },
    /// `<object>: mss_clamp 100 is outside 536..=9000`. Code `InvalidParameterValue`.
    MssClampOutOfRange {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The clamp given.
        mss: u16,
    },
    /// `<object>: address 10.1.0.1/31 leaves no room for endpoints (the prefix length must
    /// be at most 30)`. Code `InvalidParameterValue`.
    PrefixTooLong {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The address given.
        address: Ipv4Net,
    },
    /// `<object>: port net_tap0 vlan 100 already carries vpc-…` (or `untagged`).
    /// Code `InvalidParameterValue`.
    DuplicatePortVlan {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The port name.
        port: String,
        /// The VLAN (none = untagged).
        vlan: Option<u16>,
        /// The VPC attached there first.
        other: VpcId,
    },
    /// `<object>: static neighbour mac 01:00:5e:00:00:01 is not a unicast address`.
    /// Code `InvalidParameterValue`.
    NeighbourMacNotUnicast {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The MAC given.
        mac: MacAddr,
    },
    /// `<object>: security group sg-… does not exist`. Code `InvalidGroup.NotFound`.
    SecurityGroupNotFound {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The group named.
        group: SecurityGroupId,
    },
    /// `<object>: security group sg-… is in vpc-…, not in vpc-…`.
    /// Code `InvalidParameterValue`.
    SecurityGroupOtherVpc {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The group named.
        group: SecurityGroupId,
        /// The group's VPC.
        group_vpc: VpcId,
        /// The object's VPC.
        vpc: VpcId,
    },
    /// `<object>: group name "web" is already used in vpc-… (first at <first>)`.
    /// Code `InvalidGroup.Duplicate`.
    DuplicateGroupName {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// Where the same name appeared first in the VPC.
        first: KeyPath,
    },
    /// `<object>: port range 90-80 is empty`. Code `InvalidParameterValue`.
    EmptyPortRange {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// First port.
        from: u16,
        /// Last port.
        to: u16,
    },
    /// `<object>: invalid policy document: <reason>`. Code `InvalidPolicyDocument`.
    InvalidPolicy {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What [`crate::policy::PolicyError`] said.
        reason: String,
    },
}

impl ModelError {
    /// The key path of the offending value, e.g. `endpoints[2].ip`.
    pub fn path(&self) -> &KeyPath {
        match self {
            Self::DuplicateId { at, .. }
            | Self::VpcNotAttached { at, .. }
            | Self::VpcNotOwned { at, .. }
            | Self::OutsidePrefix { at, .. }
            | Self::TargetOffLink { at, .. }
            | Self::ReservedAddress { at, .. }
            | Self::NotUnicast { at, .. }
            | Self::AddressInUse { at, .. }
            | Self::NoSnatAddress { at, .. }
            | Self::ZeroPort { at, .. }
            | Self::DuplicateListener { at, .. }
            | Self::DuplicateTarget { at, .. }
            | Self::ServiceNotFound { at, .. }
            | Self::VlanOutOfRange { at, .. }
            | Self::MssClampOutOfRange { at, .. }
            | Self::PrefixTooLong { at, .. }
            | Self::DuplicatePortVlan { at, .. }
            | Self::NeighbourMacNotUnicast { at, .. }
            | Self::SecurityGroupNotFound { at, .. }
            | Self::SecurityGroupOtherVpc { at, .. }
            | Self::DuplicateGroupName { at, .. }
            | Self::EmptyPortRange { at, .. }
            | Self::InvalidPolicy { at, .. } => at,
        }
    }

    /// The object the error is about.
    pub fn object(&self) -> Object {
        match self {
            Self::DuplicateId { object, .. }
            | Self::VpcNotAttached { object, .. }
            | Self::VpcNotOwned { object, .. }
            | Self::OutsidePrefix { object, .. }
            | Self::TargetOffLink { object, .. }
            | Self::ReservedAddress { object, .. }
            | Self::NotUnicast { object, .. }
            | Self::AddressInUse { object, .. }
            | Self::NoSnatAddress { object, .. }
            | Self::ZeroPort { object, .. }
            | Self::DuplicateListener { object, .. }
            | Self::DuplicateTarget { object, .. }
            | Self::ServiceNotFound { object, .. }
            | Self::VlanOutOfRange { object, .. }
            | Self::MssClampOutOfRange { object, .. }
            | Self::PrefixTooLong { object, .. }
            | Self::DuplicatePortVlan { object, .. }
            | Self::NeighbourMacNotUnicast { object, .. }
            | Self::SecurityGroupNotFound { object, .. }
            | Self::SecurityGroupOtherVpc { object, .. }
            | Self::DuplicateGroupName { object, .. }
            | Self::EmptyPortRange { object, .. }
            | Self::InvalidPolicy { object, .. } => *object,
        }
    }

    /// The EC2-style error code the management socket answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DuplicateId { object, .. } => match object {
                Object::Endpoint(_) => "InvalidEndpointId.Duplicate",
                Object::Service(_) => "InvalidServiceId.Duplicate",
                Object::Attachment(_) => "InvalidVpcId.Duplicate",
                Object::SecurityGroup(_) => "InvalidGroup.Duplicate",
                _ => "InvalidParameterValue",
            },
            Self::VpcNotAttached { .. } | Self::VpcNotOwned { .. } => "InvalidVpcId.NotFound",
            Self::ServiceNotFound { .. } => "InvalidServiceId.NotFound",
            Self::AddressInUse { .. } => "InvalidIpAddress.InUse",
            Self::DuplicateListener { .. } => "DuplicateListener",
            Self::SecurityGroupNotFound { .. } => "InvalidGroup.NotFound",
            Self::DuplicateGroupName { .. } => "InvalidGroup.Duplicate",
            Self::InvalidPolicy { .. } => "InvalidPolicyDocument",
            Self::OutsidePrefix { .. }
            | Self::TargetOffLink { .. }
            | Self::ReservedAddress { .. }
            | Self::NotUnicast { .. }
            | Self::NoSnatAddress { .. }
            | Self::ZeroPort { .. }
            | Self::DuplicateTarget { .. }
            | Self::VlanOutOfRange { .. }
            | Self::MssClampOutOfRange { .. }
            | Self::PrefixTooLong { .. }
            | Self::DuplicatePortVlan { .. }
            | Self::NeighbourMacNotUnicast { .. }
            | Self::SecurityGroupOtherVpc { .. }
            | Self::EmptyPortRange { .. } => "InvalidParameterValue",
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.object())?;
        match self {
            Self::DuplicateId { first, .. } => write!(f, "id declared twice (first at {first})"),
            Self::VpcNotAttached { vpc, .. } => {
                write!(f, "{vpc} has no attachment on this appliance")
            }
            Self::VpcNotOwned {
                vpc,
                owner,
                vpc_account,
                ..
            } => write!(
                f,
                "owner {owner} does not own {vpc} (account {vpc_account} does)"
            ),
            Self::OutsidePrefix {
                role,
                ip,
                prefix,
                vpc,
                ..
            } => write!(f, "{role} {ip} is outside {prefix} of {vpc}"),
            Self::TargetOffLink {
                ip, prefix, vpc, ..
            } => write!(
                f,
                "target {ip} is outside {prefix} of {vpc} and the attachment has no gateway"
            ),
            Self::ReservedAddress {
                role,
                ip,
                reserved,
                prefix,
                vpc,
                ..
            } => write!(
                f,
                "{role} {ip} is the {reserved} address of {prefix} in {vpc}"
            ),
            Self::NotUnicast { role, ip, .. } => {
                write!(f, "{role} {ip} is not a unicast host address")
            }
            Self::AddressInUse {
                role,
                ip,
                vpc,
                holder,
                ..
            } => write!(f, "{role} {ip} is already in use in {vpc} by {holder}"),
            Self::NoSnatAddress { .. } => f.write_str("at least one snat address is required"),
            Self::ZeroPort { .. } => f.write_str("port must not be 0"),
            Self::DuplicateListener { first, .. } => {
                write!(f, "declared twice (first at {first})")
            }
            Self::DuplicateTarget { first, .. } => {
                write!(f, "registered twice (first at {first})")
            }
            Self::ServiceNotFound { service, .. } => write!(f, "service {service} does not exist"),
            Self::VlanOutOfRange { vlan, .. } => write!(f, "vlan {vlan} is outside 1..=4094"),
            Self::MssClampOutOfRange { mss, .. } => write!(
                f,
                "mss_clamp {mss} is outside {}..={}",
                MSS_CLAMP_RANGE.start(),
                MSS_CLAMP_RANGE.end()
            ),
            Self::PrefixTooLong { address, .. } => write!(
                f,
                "address {address} leaves no room for endpoints \
                 (the prefix length must be at most 30)"
            ),
            Self::DuplicatePortVlan {
                port, vlan, other, ..
            } => match vlan {
                Some(v) => write!(f, "port {port} vlan {v} already carries {other}"),
                None => write!(f, "port {port} untagged already carries {other}"),
            },
            Self::NeighbourMacNotUnicast { mac, .. } => {
                write!(f, "static neighbour mac {mac} is not a unicast address")
            }
            Self::SecurityGroupNotFound { group, .. } => {
                write!(f, "security group {group} does not exist")
            }
            Self::SecurityGroupOtherVpc {
                group,
                group_vpc,
                vpc,
                ..
            } => write!(f, "security group {group} is in {group_vpc}, not in {vpc}"),
            Self::DuplicateGroupName { first, .. } => {
                write!(
                    f,
                    "group name is already used in this vpc (first at {first})"
                )
            }
            Self::EmptyPortRange { from, to, .. } => {
                write!(f, "port range {from}-{to} is empty")
            }
            Self::InvalidPolicy { reason, .. } => {
                write!(f, "invalid policy document: {reason}")
            }
        }
    }
}

impl std::error::Error for ModelError {}

// ---------------------------------------------------------------------------------------
// Validation

/// Checks that `ip`, a `role` address of `object`, is a host address inside `att`'s prefix.
fn check_on_link(
    att: &VpcAttachment,
    at: &KeyPath,
    object: Object,
    role: AddressRole,
    ip: Ipv4Addr,
) -> Result<(), ModelError> {
    let net = att.address;
    if !net.contains(ip) {
        return Err(ModelError::OutsidePrefix {
            at: at.clone(),
            object,
            role,
            ip,
            prefix: net.trunc(),
            vpc: att.vpc_id,
        });
    }
    check_not_reserved(att, at, object, role, ip)
}

/// Checks that `ip` (inside `att`'s prefix) is neither its network nor broadcast address.
fn check_not_reserved(
    att: &VpcAttachment,
    at: &KeyPath,
    object: Object,
    role: AddressRole,
    ip: Ipv4Addr,
) -> Result<(), ModelError> {
    let net = att.address;
    let reserved = if ip == net.network() {
        Reserved::Network
    } else if ip == net.broadcast() {
        Reserved::Broadcast
    } else {
        return Ok(());
    };
    Err(ModelError::ReservedAddress {
        at: at.clone(),
        object,
        role,
        ip,
        reserved,
        prefix: net.trunc(),
        vpc: att.vpc_id,
    })
}

/// Validates VPC attachments on their own: VLAN range, prefix length, own address, gateway,
/// static neighbours, unique VPC ids and unique (port, vlan). Paths are `vpcs[i]…`.
///
/// Whether each port exists is the configuration's business (it owns the port list).
pub fn validate_attachments(attachments: &[VpcAttachment]) -> Result<(), ModelError> {
    for (i, att) in attachments.iter().enumerate() {
        let at = KeyPath::item("vpcs", i);
        let object = Object::Attachment(att.vpc_id);

        if let Some(first) = attachments[..i].iter().position(|a| a.vpc_id == att.vpc_id) {
            return Err(ModelError::DuplicateId {
                at: at.key("vpc_id"),
                object,
                first: KeyPath::item("vpcs", first),
            });
        }
        if let Some(other) = attachments[..i]
            .iter()
            .find(|a| a.port == att.port && a.vlan == att.vlan)
        {
            return Err(ModelError::DuplicatePortVlan {
                at: at.key(if att.vlan.is_some() { "vlan" } else { "port" }),
                object,
                port: att.port.clone(),
                vlan: att.vlan,
                other: other.vpc_id,
            });
        }
        if let Some(vlan) = att.vlan {
            if !(1..=4094).contains(&vlan) {
                return Err(ModelError::VlanOutOfRange {
                    at: at.key("vlan"),
                    object,
                    vlan,
                });
            }
        }
        if let Some(mss) = att.mss_clamp {
            if !MSS_CLAMP_RANGE.contains(&mss) {
                return Err(ModelError::MssClampOutOfRange {
                    at: at.key("mss_clamp"),
                    object,
                    mss,
                });
            }
        }

        let address_at = at.key("address");
        if att.address.prefix_len() > 30 {
            return Err(ModelError::PrefixTooLong {
                at: address_at,
                object,
                address: att.address,
            });
        }
        let own = att.address.addr();
        if !is_unicast_host(own) {
            return Err(ModelError::NotUnicast {
                at: address_at,
                object,
                role: AddressRole::Address,
                ip: own,
            });
        }
        check_not_reserved(att, &address_at, object, AddressRole::Address, own)?;

        if let Some(gw) = att.gateway {
            let gw_at = at.key("gateway");
            check_on_link(att, &gw_at, object, AddressRole::Gateway, gw)?;
            if gw == own {
                return Err(ModelError::AddressInUse {
                    at: gw_at,
                    object,
                    role: AddressRole::Gateway,
                    ip: gw,
                    vpc: att.vpc_id,
                    holder: AddressHolder::Appliance,
                });
            }
        }

        for (k, n) in att.static_neighbours.iter().enumerate() {
            let n_at = at.key("static_neighbours").index(k);
            let ip_at = n_at.key("ip");
            check_on_link(att, &ip_at, object, AddressRole::Neighbour, n.ip)?;
            // A static entry for the gateway is fine (and common); for the appliance's own
            // address, or twice for one address, it is a contradiction.
            let holder = if n.ip == own {
                Some(AddressHolder::Appliance)
            } else if att.static_neighbours[..k].iter().any(|m| m.ip == n.ip) {
                Some(AddressHolder::Neighbour)
            } else {
                None
            };
            if let Some(holder) = holder {
                return Err(ModelError::AddressInUse {
                    at: ip_at,
                    object,
                    role: AddressRole::Neighbour,
                    ip: n.ip,
                    vpc: att.vpc_id,
                    holder,
                });
            }
            if !n.mac.is_unicast() {
                return Err(ModelError::NeighbourMacNotUnicast {
                    at: n_at.key("mac"),
                    object,
                    mac: n.mac,
                });
            }
        }
    }
    Ok(())
}

/// Every address in use per VPC and who uses it: each address the appliance answers for
/// has exactly one owner.
type Claims = HashMap<(VpcId, Ipv4Addr), AddressHolder>;

fn claim(
    claims: &mut Claims,
    att: &VpcAttachment,
    at: &KeyPath,
    object: Object,
    role: AddressRole,
    ip: Ipv4Addr,
    holder: AddressHolder,
) -> Result<(), ModelError> {
    match claims.insert((att.vpc_id, ip), holder) {
        None => Ok(()),
        Some(previous) => Err(ModelError::AddressInUse {
            at: at.clone(),
            object,
            role,
            ip,
            vpc: att.vpc_id,
            holder: previous,
        }),
    }
}

/// The attachment of `vpc`, which `owner` must own.
fn owned_attachment<'a>(
    attachments: &'a [VpcAttachment],
    at: &KeyPath,
    object: Object,
    vpc: VpcId,
    owner: AccountId,
) -> Result<&'a VpcAttachment, ModelError> {
    let att = attachments
        .iter()
        .find(|a| a.vpc_id == vpc)
        .ok_or_else(|| ModelError::VpcNotAttached {
            at: at.key("vpc_id"),
            object,
            vpc,
        })?;
    if att.account != owner {
        return Err(ModelError::VpcNotOwned {
            at: at.key("owner"),
            object,
            vpc,
            owner,
            vpc_account: att.account,
        });
    }
    Ok(att)
}

impl State {
    /// Checks that this set of objects can be forwarded for over `attachments` (which
    /// [`validate_attachments`] has accepted), and returns the first problem.
    ///
    /// - ids are unique; every object's VPC is attached and owned by the object's owner;
    /// - a service has at least one SNAT address, each inside its VPC's prefix; listeners
    ///   are unique by (protocol, port) with non-zero ports; targets have non-zero ports,
    ///   are unicast, not registered twice in a listener, and inside the prefix unless the
    ///   attachment has a gateway;
    /// - an endpoint's ip is inside its VPC's prefix and its service exists; its security
    ///   groups exist and are in its VPC; its policy document compiles;
    /// - security group ids are unique, names unique per VPC, the owner owns the VPC, and
    ///   TCP/UDP rules have non-empty port ranges;
    /// - no network or broadcast address is used; every address the appliance answers for
    ///   in a VPC (own, SNAT, endpoint; a `deleted` endpoint holds none) has one owner and
    ///   is neither the gateway nor a static neighbour, nor any target.
    ///
    /// Who may connect to a service is checked when an endpoint is created, not here.
    pub fn validate(&self, attachments: &[VpcAttachment]) -> Result<(), ModelError> {
        let mut claims = Claims::new();
        for att in attachments {
            claims.insert((att.vpc_id, att.address.addr()), AddressHolder::Appliance);
            if let Some(gw) = att.gateway {
                claims
                    .entry((att.vpc_id, gw))
                    .or_insert(AddressHolder::Gateway);
            }
            for n in &att.static_neighbours {
                claims
                    .entry((att.vpc_id, n.ip))
                    .or_insert(AddressHolder::Neighbour);
            }
        }

        let mut service_at: HashMap<ServiceId, usize> = HashMap::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = KeyPath::item("services", i);
            let object = Object::Service(s.id);
            if let Some(&first) = service_at.get(&s.id) {
                return Err(ModelError::DuplicateId {
                    at: at.key("id"),
                    object,
                    first: KeyPath::item("services", first),
                });
            }
            service_at.insert(s.id, i);
            let att = owned_attachment(attachments, &at, object, s.vpc_id, s.owner)?;

            if s.snat_addresses.is_empty() {
                return Err(ModelError::NoSnatAddress {
                    at: at.key("snat_addresses"),
                    object,
                });
            }
            for (j, &ip) in s.snat_addresses.iter().enumerate() {
                let ip_at = at.key("snat_addresses").index(j);
                let role = AddressRole::SnatAddress;
                check_on_link(att, &ip_at, object, role, ip)?;
                claim(
                    &mut claims,
                    att,
                    &ip_at,
                    object,
                    role,
                    ip,
                    AddressHolder::Snat(s.id),
                )?;
            }

            for (j, l) in s.listeners.iter().enumerate() {
                validate_listener(s, att, l, &at.key("listeners").index(j), j)?;
            }
        }

        let group_at = self.validate_security_groups(attachments)?;

        let mut endpoint_at: HashMap<EndpointId, usize> = HashMap::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = KeyPath::item("endpoints", i);
            let object = Object::Endpoint(e.id);
            if let Some(&first) = endpoint_at.get(&e.id) {
                return Err(ModelError::DuplicateId {
                    at: at.key("id"),
                    object,
                    first: KeyPath::item("endpoints", first),
                });
            }
            endpoint_at.insert(e.id, i);
            let att = owned_attachment(attachments, &at, object, e.vpc_id, e.owner)?;
            let ip_at = at.key("ip");
            check_on_link(att, &ip_at, object, AddressRole::Ip, e.ip)?;
            if e.state.holds_address() {
                let holder = AddressHolder::Endpoint(e.id);
                claim(
                    &mut claims,
                    att,
                    &ip_at,
                    object,
                    AddressRole::Ip,
                    e.ip,
                    holder,
                )?;
            }
            if e.state.needs_service() && !service_at.contains_key(&e.service_id) {
                return Err(ModelError::ServiceNotFound {
                    at: at.key("service_id"),
                    object,
                    service: e.service_id,
                });
            }
            for (j, &group) in e.security_group_ids.iter().enumerate() {
                let g_at = at.key("security_group_ids").index(j);
                let Some(&g) = group_at.get(&group) else {
                    return Err(ModelError::SecurityGroupNotFound {
                        at: g_at,
                        object,
                        group,
                    });
                };
                // Same VPC implies same owner: both owners must own the VPC.
                let group_vpc = self.security_groups[g].vpc_id;
                if group_vpc != e.vpc_id {
                    return Err(ModelError::SecurityGroupOtherVpc {
                        at: g_at,
                        object,
                        group,
                        group_vpc,
                        vpc: e.vpc_id,
                    });
                }
            }
            if let Some(doc) = &e.policy {
                if let Err(err) = crate::policy::Policy::parse(doc) {
                    return Err(ModelError::InvalidPolicy {
                        at: at.key("policy"),
                        object,
                        reason: err.to_string(),
                    });
                }
            }
        }

        // Last, once every address is claimed: a target the appliance itself answers for
        // would loop traffic back into the appliance.
        for (i, s) in self.services.iter().enumerate() {
            for (j, l) in s.listeners.iter().enumerate() {
                for (k, t) in l.targets.iter().enumerate() {
                    let Some(&holder) = claims.get(&(s.vpc_id, t.ip)) else {
                        continue;
                    };
                    if holder.is_appliance_owned() {
                        return Err(ModelError::AddressInUse {
                            at: KeyPath::item("services", i)
                                .key("listeners")
                                .index(j)
                                .key("targets")
                                .index(k)
                                .key("ip"),
                            object: target_object(s, l, t),
                            role: AddressRole::Target,
                            ip: t.ip,
                            vpc: s.vpc_id,
                            holder,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

impl State {
    /// Security groups: unique ids, owned VPCs, names unique per VPC, non-empty port
    /// ranges. Returns each group's index by id.
    fn validate_security_groups(
        &self,
        attachments: &[VpcAttachment],
    ) -> Result<HashMap<SecurityGroupId, usize>, ModelError> {
        let mut group_at: HashMap<SecurityGroupId, usize> = HashMap::new();
        for (i, g) in self.security_groups.iter().enumerate() {
            let at = KeyPath::item("security_groups", i);
            let object = Object::SecurityGroup(g.id);
            if let Some(&first) = group_at.get(&g.id) {
                return Err(ModelError::DuplicateId {
                    at: at.key("id"),
                    object,
                    first: KeyPath::item("security_groups", first),
                });
            }
            group_at.insert(g.id, i);
            owned_attachment(attachments, &at, object, g.vpc_id, g.owner)?;
            if let Some(first) = self.security_groups[..i]
                .iter()
                .position(|o| o.vpc_id == g.vpc_id && o.name == g.name)
            {
                return Err(ModelError::DuplicateGroupName {
                    at: at.key("name"),
                    object,
                    first: KeyPath::item("security_groups", first),
                });
            }
            for (j, r) in g.ingress.iter().enumerate() {
                if r.protocol.has_ports() && r.from_port > r.to_port {
                    return Err(ModelError::EmptyPortRange {
                        at: at.key("ingress").index(j),
                        object,
                        from: r.from_port,
                        to: r.to_port,
                    });
                }
            }
        }
        Ok(group_at)
    }
}

fn target_object(s: &Service, l: &Listener, t: &Target) -> Object {
    Object::Target {
        service: s.id,
        protocol: l.protocol,
        port: l.port,
        target: t.addr(),
    }
}

/// Checks listener `j` of service `s` (at `at`) and its targets.
fn validate_listener(
    s: &Service,
    att: &VpcAttachment,
    l: &Listener,
    at: &KeyPath,
    j: usize,
) -> Result<(), ModelError> {
    let object = Object::Listener {
        service: s.id,
        protocol: l.protocol,
        port: l.port,
    };
    if l.port == 0 {
        return Err(ModelError::ZeroPort {
            at: at.key("port"),
            object,
        });
    }
    if let Some(first) = s.listeners[..j]
        .iter()
        .position(|o| o.protocol == l.protocol && o.port == l.port)
    {
        return Err(ModelError::DuplicateListener {
            at: at.clone(),
            object,
            first: at_sibling(at, first),
        });
    }
    for (k, t) in l.targets.iter().enumerate() {
        let t_at = at.key("targets").index(k);
        let object = target_object(s, l, t);
        if t.port == 0 {
            return Err(ModelError::ZeroPort {
                at: t_at.key("port"),
                object,
            });
        }
        let ip_at = t_at.key("ip");
        if !is_unicast_host(t.ip) {
            return Err(ModelError::NotUnicast {
                at: ip_at,
                object,
                role: AddressRole::Target,
                ip: t.ip,
            });
        }
        if att.address.contains(t.ip) {
            check_not_reserved(att, &ip_at, object, AddressRole::Target, t.ip)?;
        } else if att.gateway.is_none() {
            return Err(ModelError::TargetOffLink {
                at: ip_at,
                object,
                ip: t.ip,
                prefix: att.address.trunc(),
                vpc: att.vpc_id,
            });
        }
        if let Some(first) = l.targets[..k]
            .iter()
            .position(|o| o.ip == t.ip && o.port == t.port)
        {
            return Err(ModelError::DuplicateTarget {
                at: t_at,
                object,
                first: at.key("targets").index(first),
            });
        }
    }
    Ok(())
}

/// `at` with its last index replaced by `index` (`…listeners[3]` → `…listeners[index]`).
fn at_sibling(at: &KeyPath, index: usize) -> KeyPath {
    let mut p = at.clone();
    if let Some(PathSegment::Index(n)) = p.0.last_mut() {
        *n = index;
    }
    p
}

#[cfg(test)]
mod tests;
