//! Why a set of objects is invalid: [`ModelError`], where in a document it is
//! ([`KeyPath`]) and what it is about ([`Object`]).
//!
//! Each error prints one line and maps to one EC2-style code; both are what a client sees,
//! so a change to a message here is a change to the management protocol.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::objects::{IpAddressType, IpFamily, Principal, Protocol, MSS_CLAMP_RANGE};
use crate::ids::{AccountId, EndpointId, SecurityGroupId, ServiceId, VpcId};
use crate::net::{Ipv4Net, Ipv6Net, MacAddr};

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

    /// This path with its last index replaced by `index` (`…listeners[3]` →
    /// `…listeners[index]`).
    #[must_use]
    pub(super) fn sibling(&self, index: usize) -> Self {
        let mut p = self.clone();
        if let Some(PathSegment::Index(n)) = p.0.last_mut() {
            *n = index;
        }
        p
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
        /// The target's address and port (not a `SocketAddr`, which would make every
        /// error 16 bytes larger).
        target: (IpAddr, u16),
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
                "service {service} listener {protocol}/{port} target {}",
                SocketAddr::new(target.0, target.1)
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
    /// `ip6` of an endpoint.
    Ip6,
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
            Self::Ip6 => "ip6",
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

/// What is wrong with a listener's `health_check_path`, which goes verbatim into the
/// request line of an HTTP check (`GET <path> HTTP/1.1`); prints as the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadPath {
    /// `must start with '/'`.
    NotAbsolute,
    /// `is <len> bytes, longer than 1024`.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// `has byte 0x20 at offset 4: only visible ASCII (0x21..=0x7e) may go into the HTTP
    /// request line`.
    NotVisible {
        /// Where the byte is.
        offset: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for BadPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAbsolute => f.write_str("must start with '/'"),
            Self::TooLong { len } => write!(
                f,
                "is {len} bytes, longer than {}",
                super::objects::health_limits::PATH_LEN
            ),
            Self::NotVisible { offset, byte } => write!(
                f,
                "has byte {byte:#04x} at offset {offset}: only visible ASCII (0x21..=0x7e) may \
                 go into the HTTP request line"
            ),
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
    /// `<object>: target fd00:b2::5 is outside fd00:b1::/64 of vpc-… and the attachment
    /// has no gateway6`. Code `InvalidParameterValue`.
    Target6OffLink {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The target address.
        ip: Ipv6Addr,
        /// The VPC's IPv6 prefix (network form).
        prefix: Ipv6Net,
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
        ip: IpAddr,
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
    /// `<object>: its ipv6 targets need an ipv6 snat address`: a listener's targets are
    /// reached from a SNAT address of their family. Code `InvalidParameterValue`.
    NoSnatForFamily {
        /// Where.
        at: KeyPath,
        /// About what (the listener).
        object: Object,
        /// The targets' family.
        family: IpFamily,
    },
    /// `<object>: an ipv6 target among ipv4 ones (first at <first>)`: a listener's targets
    /// are of one family, as a target group's are. Code `InvalidParameterValue`.
    MixedTargetFamilies {
        /// Where.
        at: KeyPath,
        /// About what (the target).
        object: Object,
        /// The target's family.
        family: IpFamily,
        /// The listener's first target of the other family.
        first: KeyPath,
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
    /// `<object>: <setting> 3 is outside 5..=300`, for a listener's health-check
    /// settings, its `health_check_port` (1..=65535) and its `idle_timeout_seconds`.
    /// Code `InvalidParameterValue`.
    SettingOutOfRange {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The key, e.g. `health_check_interval_seconds`.
        setting: &'static str,
        /// The value given.
        value: u32,
        /// The lowest value allowed.
        min: u32,
        /// The highest value allowed.
        max: u32,
    },
    /// `<object>: health_check_timeout_seconds 10 must be lower than
    /// health_check_interval_seconds 10 (the cloud's rule: a check times out before the
    /// next one starts)`. Code `InvalidParameterValue`.
    TimeoutNotBelowInterval {
        /// Where (the timeout).
        at: KeyPath,
        /// About what.
        object: Object,
        /// `health_check_timeout_seconds`.
        timeout: u16,
        /// `health_check_interval_seconds`.
        interval: u16,
    },
    /// `<object>: health_check_path <problem>` (see [`BadPath`]).
    /// Code `InvalidParameterValue`.
    InvalidHealthCheckPath {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What is wrong.
        problem: BadPath,
    },
    /// `<object>: principal 111111111111 listed twice (first at <first>)`, in a service's
    /// `auto_accept_principals` or `connection_limits`. Code `InvalidParameterValue`.
    DuplicatePrincipal {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The principal.
        principal: Principal,
        /// Where it appeared first in the same list.
        first: KeyPath,
    },
    /// `<object>: IPv6 address fd00::/64 <problem>` (the prefix length out of 8..=128,
    /// an address that cannot be one interface's, or the prefix's own first address).
    /// Code `InvalidParameterValue`.
    BadIpv6Address {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The address given.
        address: Ipv6Net,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `<object>: IPv6 gateway <ip> <problem>` (or `IPv6 static neighbour`): it must be
    /// a unicast neighbour of the attachment (link-local, or inside `address6`'s
    /// prefix), not the appliance, listed once. Code `InvalidParameterValue`.
    BadNeighbour6 {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// "IPv6 gateway" or "IPv6 static neighbour".
        role: &'static str,
        /// The address given.
        ip: std::net::Ipv6Addr,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `<object>: ip_address_type dualstack needs an ip6` (or: `ipv4 has no ip6`): an
    /// endpoint has an IPv6 address exactly when its type has one.
    /// Code `InvalidParameterValue`.
    AddressTypeMismatch {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The endpoint's type.
        ip_address_type: IpAddressType,
    },
    /// `<object>: ip_address_type ipv4 needs an ip` (or: `ipv6 has no ip`): an endpoint
    /// has an IPv4 address exactly when its type has one. Code `InvalidParameterValue`.
    Ipv4Mismatch {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// Its type.
        ip_address_type: IpAddressType,
    },
    /// `<object>: vpc-… has no IPv4 prefix (its attachment has no address)`.
    /// Code `InvalidParameterValue`.
    NoIpv4Prefix {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The VPC.
        vpc: VpcId,
    },
    /// `<object>: an attachment needs an address, an address6 or both`.
    /// Code `InvalidParameterValue`.
    NoAddress {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
    },
    /// `<object>: vpc-… has no IPv6 prefix (its attachment has no address6)`.
    /// Code `InvalidParameterValue`.
    NoIpv6Prefix {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The VPC.
        vpc: VpcId,
    },
    /// `<object>: ip6 fd00:c2::5 is outside fd00:c1::/64 of vpc-…`, or is that prefix's
    /// subnet-router anycast address (`fd00:c1::`). Code `InvalidParameterValue`.
    Ipv6OutsidePrefix {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What the address is.
        role: AddressRole,
        /// The address.
        ip: Ipv6Addr,
        /// The VPC's IPv6 prefix (network form).
        prefix: Ipv6Net,
        /// The VPC.
        vpc: VpcId,
    },
    /// `<object>: ip6 fd00:c1::1 is already in use in vpc-… by <holder>`.
    /// Code `InvalidIpAddress.InUse`.
    Ipv6InUse {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// What the address is.
        role: AddressRole,
        /// The address.
        ip: Ipv6Addr,
        /// The VPC.
        vpc: VpcId,
        /// Who has it.
        holder: AddressHolder,
    },
    /// `<object>: service vpce-svc-… does not accept dualstack endpoints (its
    /// supported_ip_address_types: ipv4)`. Code `InvalidParameterValue`.
    AddressTypeNotSupported {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
        /// The service.
        service: ServiceId,
        /// The endpoint's type.
        ip_address_type: IpAddressType,
        /// What the service accepts.
        supported: Vec<IpFamily>,
    },
    /// `<object>: supported_ip_address_types must list ipv4, ipv6 or both, each once`.
    /// Code `InvalidParameterValue`.
    BadSupportedTypes {
        /// Where.
        at: KeyPath,
        /// About what.
        object: Object,
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
            | Self::Target6OffLink { at, .. }
            | Self::ReservedAddress { at, .. }
            | Self::NotUnicast { at, .. }
            | Self::AddressInUse { at, .. }
            | Self::NoSnatAddress { at, .. }
            | Self::NoSnatForFamily { at, .. }
            | Self::MixedTargetFamilies { at, .. }
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
            | Self::SettingOutOfRange { at, .. }
            | Self::TimeoutNotBelowInterval { at, .. }
            | Self::InvalidHealthCheckPath { at, .. }
            | Self::DuplicatePrincipal { at, .. }
            | Self::BadIpv6Address { at, .. }
            | Self::BadNeighbour6 { at, .. }
            | Self::AddressTypeMismatch { at, .. }
            | Self::Ipv4Mismatch { at, .. }
            | Self::NoIpv4Prefix { at, .. }
            | Self::NoAddress { at, .. }
            | Self::NoIpv6Prefix { at, .. }
            | Self::Ipv6OutsidePrefix { at, .. }
            | Self::Ipv6InUse { at, .. }
            | Self::AddressTypeNotSupported { at, .. }
            | Self::BadSupportedTypes { at, .. }
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
            | Self::Target6OffLink { object, .. }
            | Self::ReservedAddress { object, .. }
            | Self::NotUnicast { object, .. }
            | Self::AddressInUse { object, .. }
            | Self::NoSnatAddress { object, .. }
            | Self::NoSnatForFamily { object, .. }
            | Self::MixedTargetFamilies { object, .. }
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
            | Self::SettingOutOfRange { object, .. }
            | Self::TimeoutNotBelowInterval { object, .. }
            | Self::InvalidHealthCheckPath { object, .. }
            | Self::DuplicatePrincipal { object, .. }
            | Self::BadIpv6Address { object, .. }
            | Self::BadNeighbour6 { object, .. }
            | Self::AddressTypeMismatch { object, .. }
            | Self::Ipv4Mismatch { object, .. }
            | Self::NoIpv4Prefix { object, .. }
            | Self::NoAddress { object, .. }
            | Self::NoIpv6Prefix { object, .. }
            | Self::Ipv6OutsidePrefix { object, .. }
            | Self::Ipv6InUse { object, .. }
            | Self::AddressTypeNotSupported { object, .. }
            | Self::BadSupportedTypes { object, .. }
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
            Self::AddressInUse { .. } | Self::Ipv6InUse { .. } => "InvalidIpAddress.InUse",
            Self::DuplicateListener { .. } => "DuplicateListener",
            Self::SecurityGroupNotFound { .. } => "InvalidGroup.NotFound",
            Self::DuplicateGroupName { .. } => "InvalidGroup.Duplicate",
            Self::InvalidPolicy { .. } => "InvalidPolicyDocument",
            Self::OutsidePrefix { .. }
            | Self::TargetOffLink { .. }
            | Self::Target6OffLink { .. }
            | Self::ReservedAddress { .. }
            | Self::NotUnicast { .. }
            | Self::NoSnatAddress { .. }
            | Self::NoSnatForFamily { .. }
            | Self::MixedTargetFamilies { .. }
            | Self::ZeroPort { .. }
            | Self::DuplicateTarget { .. }
            | Self::VlanOutOfRange { .. }
            | Self::MssClampOutOfRange { .. }
            | Self::PrefixTooLong { .. }
            | Self::DuplicatePortVlan { .. }
            | Self::NeighbourMacNotUnicast { .. }
            | Self::SecurityGroupOtherVpc { .. }
            | Self::EmptyPortRange { .. }
            | Self::SettingOutOfRange { .. }
            | Self::TimeoutNotBelowInterval { .. }
            | Self::InvalidHealthCheckPath { .. }
            | Self::BadIpv6Address { .. }
            | Self::BadNeighbour6 { .. }
            | Self::AddressTypeMismatch { .. }
            | Self::Ipv4Mismatch { .. }
            | Self::NoIpv4Prefix { .. }
            | Self::NoAddress { .. }
            | Self::NoIpv6Prefix { .. }
            | Self::Ipv6OutsidePrefix { .. }
            | Self::AddressTypeNotSupported { .. }
            | Self::BadSupportedTypes { .. }
            | Self::DuplicatePrincipal { .. } => "InvalidParameterValue",
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
            Self::Target6OffLink {
                ip, prefix, vpc, ..
            } => write!(
                f,
                "target {ip} is outside {prefix} of {vpc} and the attachment has no gateway6"
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
            Self::NoSnatForFamily { family, .. } => {
                write!(f, "its {family} targets need an {family} snat address")
            }
            Self::MixedTargetFamilies { family, first, .. } => {
                let other = match family {
                    IpFamily::Ipv4 => IpFamily::Ipv6,
                    IpFamily::Ipv6 => IpFamily::Ipv4,
                };
                write!(
                    f,
                    "an {family} target among {other} ones (first at {first}): a listener's targets are of one family"
                )
            }
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
            Self::BadIpv6Address {
                address, problem, ..
            } => write!(f, "IPv6 address {address} {problem}"),
            Self::BadNeighbour6 {
                role, ip, problem, ..
            } => write!(f, "{role} {ip} {problem}"),
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
            Self::SettingOutOfRange {
                setting,
                value,
                min,
                max,
                ..
            } => write!(f, "{setting} {value} is outside {min}..={max}"),
            Self::TimeoutNotBelowInterval {
                timeout, interval, ..
            } => write!(
                f,
                "health_check_timeout_seconds {timeout} must be lower than \
                 health_check_interval_seconds {interval} (the cloud's rule: a check times \
                 out before the next one starts)"
            ),
            Self::InvalidHealthCheckPath { problem, .. } => {
                write!(f, "health_check_path {problem}")
            }
            Self::DuplicatePrincipal {
                principal, first, ..
            } => write!(f, "principal {principal} listed twice (first at {first})"),
            Self::InvalidPolicy { reason, .. } => {
                write!(f, "invalid policy document: {reason}")
            }
            Self::AddressTypeMismatch {
                ip_address_type, ..
            } => {
                if ip_address_type.has_ipv6() {
                    write!(f, "ip_address_type {ip_address_type} needs an ip6")
                } else {
                    write!(f, "ip_address_type {ip_address_type} has no ip6")
                }
            }
            Self::Ipv4Mismatch {
                ip_address_type, ..
            } => {
                if ip_address_type.has_ipv4() {
                    write!(f, "ip_address_type {ip_address_type} needs an ip")
                } else {
                    write!(f, "ip_address_type {ip_address_type} has no ip")
                }
            }
            Self::NoIpv4Prefix { vpc, .. } => f.write_str(&no_ipv4_prefix(*vpc)),
            Self::NoAddress { .. } => {
                f.write_str("an attachment needs an address, an address6 or both")
            }
            Self::NoIpv6Prefix { vpc, .. } => write!(
                f,
                "{vpc} has no IPv6 prefix (its attachment has no address6)"
            ),
            Self::Ipv6OutsidePrefix {
                role,
                ip,
                prefix,
                vpc,
                ..
            } => {
                if prefix.contains(*ip) {
                    write!(
                        f,
                        "{role} {ip} is the subnet-router anycast address of {prefix} in {vpc}"
                    )
                } else {
                    write!(f, "{role} {ip} is outside {prefix} of {vpc}")
                }
            }
            Self::Ipv6InUse {
                role,
                ip,
                vpc,
                holder,
                ..
            } => write!(f, "{role} {ip} is already in use in {vpc} by {holder}"),
            Self::AddressTypeNotSupported {
                service,
                ip_address_type,
                supported,
                ..
            } => {
                let names: Vec<&str> = supported.iter().map(|t| t.as_str()).collect();
                write!(
                    f,
                    "service {service} does not accept {ip_address_type} endpoints (its \
                     supported_ip_address_types: {})",
                    names.join(", ")
                )
            }
            Self::BadSupportedTypes { .. } => {
                f.write_str("supported_ip_address_types must list ipv4, ipv6 or both, each once")
            }
        }
    }
}

impl std::error::Error for ModelError {}

/// What [`ModelError::NoIpv4Prefix`] says, for the store's allocation to say it alike.
pub fn no_ipv4_prefix(vpc: VpcId) -> String {
    format!("{vpc} has no IPv4 prefix (its attachment has no address)")
}
