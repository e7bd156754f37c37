//! The rules a set of objects must satisfy before the data plane builds a snapshot from it:
//! [`validate_attachments`] on their own, then [`State::validate`] on services, endpoints
//! and security groups over them.
//!
//! The checks stop at the first problem, so their order decides which error a caller sees;
//! the tests pin it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use super::errors::{AddressHolder, AddressRole, BadPath, KeyPath, ModelError, Object, Reserved};
use super::index::{EndpointIndex, EndpointKey};
use super::objects::{
    health_limits, Endpoint, IpAddressType, Listener, Principal, Service, State, Target,
    VpcAttachment, MSS_CLAMP_RANGE,
};
use crate::fasthash::{fast_map, FastMap};
use crate::ids::{AccountId, EndpointId, SecurityGroupId, ServiceId, VpcId};
use crate::net::{is_unicast_host, is_unicast_host_v6, Ipv4Net};

/// `att`'s IPv4 prefix, which an IPv4 address of `object` needs (an IPv6-only VPC has
/// none).
fn ipv4_prefix(
    att: &VpcAttachment,
    at: &dyn Fn() -> KeyPath,
    object: Object,
) -> Result<Ipv4Net, ModelError> {
    att.address.ok_or_else(|| ModelError::NoIpv4Prefix {
        at: at(),
        object,
        vpc: att.vpc_id,
    })
}

/// Checks that `ip`, a `role` address of `object`, is a host address inside `att`'s prefix.
fn check_on_link(
    att: &VpcAttachment,
    at: &dyn Fn() -> KeyPath,
    object: Object,
    role: AddressRole,
    ip: Ipv4Addr,
) -> Result<(), ModelError> {
    let net = ipv4_prefix(att, at, object)?;
    if !net.contains(ip) {
        return Err(ModelError::OutsidePrefix {
            at: at(),
            object,
            role,
            ip,
            prefix: net.trunc(),
            vpc: att.vpc_id,
        });
    }
    check_not_reserved(att, at, object, role, ip)
}

/// Checks that `ip`, an IPv6 `role` address of `object`, is a host address inside `att`'s
/// IPv6 prefix (not its subnet-router anycast address).
fn check_on_link6(
    att: &VpcAttachment,
    at: &dyn Fn() -> KeyPath,
    object: Object,
    role: AddressRole,
    ip: Ipv6Addr,
) -> Result<(), ModelError> {
    let Some(net) = att.address6 else {
        return Err(ModelError::NoIpv6Prefix {
            at: at(),
            object,
            vpc: att.vpc_id,
        });
    };
    if !net.contains(ip) || ip == net.network() {
        return Err(ModelError::Ipv6OutsidePrefix {
            at: at(),
            object,
            role,
            ip,
            prefix: net.trunc(),
            vpc: att.vpc_id,
        });
    }
    Ok(())
}

/// What is wrong with `ip` as an IPv6 neighbour of `att` (its gateway6, a static
/// neighbour): it must be unicast, link-local or inside `address6`'s prefix, and not the
/// appliance's own or the prefix's subnet-router anycast address.
fn neighbour6_problem(att: &VpcAttachment, ip: Ipv6Addr) -> Option<&'static str> {
    let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
    match att.address6 {
        None => Some("needs the attachment's address6"),
        Some(_) if ip.is_multicast() || ip.is_unspecified() || ip.is_loopback() => {
            Some("is not a unicast address")
        }
        Some(net) if !link_local && !net.contains(ip) => {
            Some("is neither link-local nor inside address6's prefix")
        }
        Some(net) if ip == net.addr() => Some("is the appliance's own address6"),
        Some(net) if !link_local && net.prefix_len() < 128 && ip == net.network() => {
            Some("is its prefix's subnet-router anycast address (all host bits zero)")
        }
        Some(_) => None,
    }
}

/// Checks that `ip` (inside `att`'s prefix) is neither its network nor broadcast address.
fn check_not_reserved(
    att: &VpcAttachment,
    at: &dyn Fn() -> KeyPath,
    object: Object,
    role: AddressRole,
    ip: Ipv4Addr,
) -> Result<(), ModelError> {
    let net = ipv4_prefix(att, at, object)?;
    let reserved = if ip == net.network() {
        Reserved::Network
    } else if ip == net.broadcast() {
        Reserved::Broadcast
    } else {
        return Ok(());
    };
    Err(ModelError::ReservedAddress {
        at: at(),
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

        if let Some(net) = att.address6 {
            let problem = if !(8..=128).contains(&net.prefix_len()) {
                Some("has a prefix length out of 8..=128")
            } else if !crate::net::is_unicast_host_v6(net.addr()) {
                Some("is not a global or unique-local unicast address")
            } else if net.prefix_len() < 128 && net.addr() == net.network() {
                Some("is its prefix's subnet-router anycast address (all host bits zero)")
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(ModelError::BadIpv6Address {
                    at: at.key("address6"),
                    object,
                    address: net,
                    problem,
                });
            }
        }
        if let Some(gw) = att.gateway6 {
            if let Some(problem) = neighbour6_problem(att, gw) {
                return Err(ModelError::BadNeighbour6 {
                    at: at.key("gateway6"),
                    object,
                    role: "IPv6 gateway",
                    ip: gw,
                    problem,
                });
            }
        }
        for (k, n) in att.static_neighbours6.iter().enumerate() {
            let n_at = at.key("static_neighbours6").index(k);
            let problem = neighbour6_problem(att, n.ip).or_else(|| {
                att.static_neighbours6[..k]
                    .iter()
                    .any(|m| m.ip == n.ip)
                    .then_some("is listed twice")
            });
            if let Some(problem) = problem {
                return Err(ModelError::BadNeighbour6 {
                    at: n_at.key("ip"),
                    object,
                    role: "IPv6 static neighbour",
                    ip: n.ip,
                    problem,
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
        let address_at = at.key("address");
        let Some(address) = att.address else {
            // An IPv6-only VPC: nothing of IPv4 may lean on an address it has not.
            if att.address6.is_none() {
                return Err(ModelError::NoAddress {
                    at: address_at,
                    object,
                });
            }
            let ipv4_key = if att.gateway.is_some() {
                Some("gateway")
            } else if !att.static_neighbours.is_empty() {
                Some("static_neighbours")
            } else {
                None
            };
            if let Some(key) = ipv4_key {
                return Err(ModelError::NoIpv4Prefix {
                    at: at.key(key),
                    object,
                    vpc: att.vpc_id,
                });
            }
            continue;
        };
        if address.prefix_len() > 30 {
            return Err(ModelError::PrefixTooLong {
                at: address_at,
                object,
                address,
            });
        }
        let own = address.addr();
        if !is_unicast_host(own) {
            return Err(ModelError::NotUnicast {
                at: address_at,
                object,
                role: AddressRole::Address,
                ip: own.into(),
            });
        }
        check_not_reserved(
            att,
            &|| address_at.clone(),
            object,
            AddressRole::Address,
            own,
        )?;

        if let Some(gw) = att.gateway {
            let gw_at = at.key("gateway");
            check_on_link(att, &|| gw_at.clone(), object, AddressRole::Gateway, gw)?;
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
            check_on_link(att, &|| ip_at.clone(), object, AddressRole::Neighbour, n.ip)?;
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
type Claims = FastMap<(VpcId, IpAddr), AddressHolder>;

fn claim(
    claims: &mut Claims,
    att: &VpcAttachment,
    at: &dyn Fn() -> KeyPath,
    object: Object,
    role: AddressRole,
    ip: IpAddr,
    holder: AddressHolder,
) -> Result<(), ModelError> {
    match claims.insert((att.vpc_id, ip), holder) {
        None => Ok(()),
        Some(previous) => Err(in_use(at(), object, role, ip, att.vpc_id, previous)),
    }
}

/// `ip` (a `role` address of `object`, at `at`) is `holder`'s in `vpc` already.
fn in_use(
    at: KeyPath,
    object: Object,
    role: AddressRole,
    ip: IpAddr,
    vpc: VpcId,
    holder: AddressHolder,
) -> ModelError {
    match ip {
        IpAddr::V4(ip) => ModelError::AddressInUse {
            at,
            object,
            role,
            ip,
            vpc,
            holder,
        },
        IpAddr::V6(ip) => ModelError::Ipv6InUse {
            at,
            object,
            role,
            ip,
            vpc,
            holder,
        },
    }
}

/// Checks an endpoint's addresses against its type: an `ip` exactly when the type has
/// IPv4, an `ip6` exactly when it has IPv6, which is a host of its VPC's IPv6 prefix (not
/// the prefix's subnet-router anycast address).
fn check_ipv6_side(
    e: &Endpoint,
    att: &VpcAttachment,
    at: &dyn Fn() -> KeyPath,
    object: Object,
) -> Result<(), ModelError> {
    if e.ip_address_type.has_ipv4() != e.ip.is_some() {
        return Err(ModelError::Ipv4Mismatch {
            at: at().key(if e.ip.is_some() {
                "ip"
            } else {
                "ip_address_type"
            }),
            object,
            ip_address_type: e.ip_address_type,
        });
    }
    let mismatch = |key| ModelError::AddressTypeMismatch {
        at: at().key(key),
        object,
        ip_address_type: e.ip_address_type,
    };
    let (ip, net) = match (e.ip_address_type.has_ipv6(), e.ip6, att.address6) {
        (false, None, _) => return Ok(()),
        (false, Some(_), _) => return Err(mismatch("ip6")),
        (true, _, None) => {
            return Err(ModelError::NoIpv6Prefix {
                at: at().key("ip_address_type"),
                object,
                vpc: att.vpc_id,
            })
        }
        (true, None, Some(_)) => return Err(mismatch("ip_address_type")),
        (true, Some(ip), Some(net)) => (ip, net),
    };
    if !net.contains(ip) || ip == net.network() {
        return Err(ModelError::Ipv6OutsidePrefix {
            at: at().key("ip6"),
            object,
            role: AddressRole::Ip6,
            ip,
            prefix: net.trunc(),
            vpc: att.vpc_id,
        });
    }
    Ok(())
}

/// The attachment of `vpc`, which `owner` must own.
fn owned_attachment<'a>(
    attachments: &'a [VpcAttachment],
    at: &dyn Fn() -> KeyPath,
    object: Object,
    vpc: VpcId,
    owner: AccountId,
) -> Result<&'a VpcAttachment, ModelError> {
    let att = attachments
        .iter()
        .find(|a| a.vpc_id == vpc)
        .ok_or_else(|| ModelError::VpcNotAttached {
            at: at().key("vpc_id"),
            object,
            vpc,
        })?;
    if att.account != owner {
        return Err(ModelError::VpcNotOwned {
            at: at().key("owner"),
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
    ///   are unique by (protocol, port) with non-zero ports; their health-check settings
    ///   and idle timeout are in the cloud's ranges ([`health_limits`]), the check's timeout
    ///   below its interval, its port non-zero, its path one an HTTP request line can
    ///   carry; targets have non-zero ports, are unicast, not registered twice in a
    ///   listener, and inside the prefix unless the attachment has a gateway; no principal
    ///   is listed twice among a service's auto-accept principals, nor among its
    ///   connection limits; its supported address types name each family at most once,
    ///   and one at least;
    /// - an endpoint's ip is inside its VPC's prefix and its service exists and accepts
    ///   its address type; it has an ip6 exactly when its type is dualstack, inside its
    ///   VPC's IPv6 prefix, held by nobody else; its security groups exist and are in its
    ///   VPC; its policy document compiles;
    /// - security group ids are unique, names unique per VPC, the owner owns the VPC, and
    ///   TCP/UDP rules have non-empty port ranges;
    /// - no network or broadcast address is used; every address the appliance answers for
    ///   in a VPC (own, SNAT, endpoint; a `deleted` endpoint holds none) has one owner and
    ///   is neither the gateway nor a static neighbour, nor any target.
    ///
    /// Who may connect to a service is checked when an endpoint is created, not here.
    pub fn validate(&self, attachments: &[VpcAttachment]) -> Result<(), ModelError> {
        let mut claims: Claims = fast_map(self.endpoints.len() + 16);
        for att in attachments {
            let mut held = |ip: IpAddr, holder| {
                claims.entry((att.vpc_id, ip)).or_insert(holder);
            };
            if let Some(own) = att.address {
                held(own.addr().into(), AddressHolder::Appliance);
            }
            if let Some(own6) = att.address6 {
                held(own6.addr().into(), AddressHolder::Appliance);
            }
            let gateways = [att.gateway.map(IpAddr::V4), att.gateway6.map(IpAddr::V6)];
            for gw in gateways.into_iter().flatten() {
                held(gw, AddressHolder::Gateway);
            }
            for n in &att.static_neighbours {
                held(n.ip.into(), AddressHolder::Neighbour);
            }
            for n in &att.static_neighbours6 {
                held(n.ip.into(), AddressHolder::Neighbour);
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
            let att = owned_attachment(attachments, &|| at.clone(), object, s.vpc_id, s.owner)?;

            if s.snat_addresses.is_empty() {
                return Err(ModelError::NoSnatAddress {
                    at: at.key("snat_addresses"),
                    object,
                });
            }
            for (j, &ip) in s.snat_addresses.iter().enumerate() {
                let ip_at = || at.key("snat_addresses").index(j);
                let role = AddressRole::SnatAddress;
                match ip {
                    IpAddr::V4(ip) => check_on_link(att, &ip_at, object, role, ip)?,
                    IpAddr::V6(ip) => check_on_link6(att, &ip_at, object, role, ip)?,
                }
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
                let l_at = at.key("listeners").index(j);
                validate_listener(s, att, l, &l_at, j)?;
                if let Some(t) = l.targets.first() {
                    if !s
                        .snat_addresses
                        .iter()
                        .any(|a| a.is_ipv4() == t.ip.is_ipv4())
                    {
                        return Err(ModelError::NoSnatForFamily {
                            at: l_at.key("targets"),
                            object: Object::Listener {
                                service: s.id,
                                protocol: l.protocol,
                                port: l.port,
                            },
                            family: t.family(),
                        });
                    }
                }
            }
            validate_principal_lists(s, &at, object)?;
            let types = &s.supported_ip_address_types;
            if types.is_empty() || types.len() > 2 || (types.len() == 2 && types[0] == types[1]) {
                return Err(ModelError::BadSupportedTypes {
                    at: at.key("supported_ip_address_types"),
                    object,
                });
            }
        }

        let group_at = self.validate_security_groups(attachments)?;

        let mut endpoint_at: FastMap<EndpointId, usize> = fast_map(self.endpoints.len());
        for (i, e) in self.endpoints.iter().enumerate() {
            // Paths are made for an error only: there are 100k endpoints to walk.
            let at = || KeyPath::item("endpoints", i);
            let object = Object::Endpoint(e.id);
            if let Some(&first) = endpoint_at.get(&e.id) {
                return Err(ModelError::DuplicateId {
                    at: at().key("id"),
                    object,
                    first: KeyPath::item("endpoints", first),
                });
            }
            endpoint_at.insert(e.id, i);
            let att = owned_attachment(attachments, &at, object, e.vpc_id, e.owner)?;
            let ip_at = || at().key("ip");
            if let Some(ip4) = e.ip {
                check_on_link(att, &ip_at, object, AddressRole::Ip, ip4)?;
                if e.state.holds_address() {
                    let holder = AddressHolder::Endpoint(e.id);
                    claim(
                        &mut claims,
                        att,
                        &ip_at,
                        object,
                        AddressRole::Ip,
                        ip4.into(),
                        holder,
                    )?;
                }
            }
            check_ipv6_side(e, att, &at, object)?;
            if let (Some(ip), true) = (e.ip6, e.state.holds_address()) {
                let holder = AddressHolder::Endpoint(e.id);
                if let Some(&previous) = claims.get(&(att.vpc_id, ip.into())) {
                    return Err(ModelError::Ipv6InUse {
                        at: at().key("ip6"),
                        object,
                        role: AddressRole::Ip6,
                        ip,
                        vpc: att.vpc_id,
                        holder: previous,
                    });
                }
                claims.insert((att.vpc_id, ip.into()), holder);
            }
            if e.state.needs_service() {
                let Some(&si) = service_at.get(&e.service_id) else {
                    return Err(ModelError::ServiceNotFound {
                        at: at().key("service_id"),
                        object,
                        service: e.service_id,
                    });
                };
                let s = &self.services[si];
                if !s.accepts(e.ip_address_type) {
                    return Err(ModelError::AddressTypeNotSupported {
                        at: at().key("ip_address_type"),
                        object,
                        service: s.id,
                        ip_address_type: e.ip_address_type,
                        supported: s.supported_ip_address_types.clone(),
                    });
                }
            }
            for (j, &group) in e.security_group_ids.iter().enumerate() {
                let g_at = || at().key("security_group_ids").index(j);
                let Some(&g) = group_at.get(&group) else {
                    return Err(ModelError::SecurityGroupNotFound {
                        at: g_at(),
                        object,
                        group,
                    });
                };
                // Same VPC implies same owner: both owners must own the VPC.
                let group_vpc = self.security_groups[g].vpc_id;
                if group_vpc != e.vpc_id {
                    return Err(ModelError::SecurityGroupOtherVpc {
                        at: g_at(),
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
                        at: at().key("policy"),
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
                        let at = KeyPath::item("services", i)
                            .key("listeners")
                            .index(j)
                            .key("targets")
                            .index(k)
                            .key("ip");
                        let object = target_object(s, l, t);
                        let role = AddressRole::Target;
                        return Err(in_use(at, object, role, t.ip, s.vpc_id, holder));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Most endpoints [`State::endpoints_known_valid`] checks one by one; beyond, each would
/// cost a walk of every endpoint, and one whole validation is cheaper.
const CHANGED_ENDPOINTS: usize = 8;

impl State {
    /// Whether this state is valid over `attachments` for sure, knowing that it differs
    /// from a valid state only in the endpoints `changed` (their ids: the others are
    /// kept as they were, and no service or security group changed). Each changed
    /// endpoint still here is checked against everything [`State::validate`] holds it
    /// to, its id and address counted with `index` (of any endpoint list: it reads what
    /// the two do not share, so one of the state this one was made from reads little);
    /// nothing else can have broken, since an endpoint is referred to by nothing and a
    /// removal only frees its address.
    ///
    /// `false` is no verdict (too many changes, or a problem found): then
    /// [`State::validate`] decides, and names the first problem as always.
    pub fn endpoints_known_valid(
        &self,
        attachments: &[VpcAttachment],
        changed: &[EndpointId],
        index: &EndpointIndex,
    ) -> bool {
        if changed.len() > CHANGED_ENDPOINTS {
            return false;
        }
        // A changed endpoint is not the same at the same place in the indexed list.
        let here: Vec<&super::objects::Endpoint> = (self.endpoints)
            .iter_range(index.differing(&self.endpoints))
            .rev()
            .filter(|e| changed.contains(&e.id))
            .take(changed.len())
            .collect();
        let no_path = || KeyPath::new();
        for e in &here {
            // The IPv6 side (and a type other than the default) is left to the whole
            // validation: few endpoints have it, and this walk checks IPv4 addresses.
            let Some(ip) = e.ip.filter(|_| e.ip6.is_none()) else {
                return false;
            };
            if e.ip_address_type != IpAddressType::Ipv4 {
                return false;
            }
            let object = Object::Endpoint(e.id);
            let Ok(att) = owned_attachment(attachments, &no_path, object, e.vpc_id, e.owner) else {
                return false;
            };
            if check_on_link(att, &no_path, object, AddressRole::Ip, ip).is_err() {
                return false;
            }
            if e.state.holds_address() {
                let taken = att.address.is_some_and(|a| a.addr() == ip)
                    || att.gateway == Some(ip)
                    || att.static_neighbours.iter().any(|n| n.ip == ip)
                    || self.services.iter().any(|s| {
                        s.vpc_id == e.vpc_id
                            && (s.snat_addresses.contains(&ip.into())
                                || s.listeners
                                    .iter()
                                    .any(|l| l.targets.iter().any(|t| t.ip == IpAddr::V4(ip))))
                    });
                if taken {
                    return false;
                }
            }
            if e.state.needs_service()
                && !self
                    .services
                    .iter()
                    .any(|s| s.id == e.service_id && s.accepts(e.ip_address_type))
            {
                return false;
            }
            for g in &e.security_group_ids {
                if !self
                    .security_groups
                    .iter()
                    .any(|x| x.id == *g && x.vpc_id == e.vpc_id)
                {
                    return false;
                }
            }
            if let Some(doc) = &e.policy {
                if crate::policy::Policy::parse(doc).is_err() {
                    return false;
                }
            }
        }
        // Its id once, its address held by it alone.
        let view = index.view(&self.endpoints);
        here.iter().all(|e| {
            let count = |key| view.count(key);
            count(EndpointKey::Id(e.id)) == 1
                && e.ip
                    .filter(|_| e.state.holds_address())
                    .is_none_or(|ip| count(EndpointKey::Address(e.vpc_id, ip)) == 1)
        })
    }

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
            owned_attachment(attachments, &|| at.clone(), object, g.vpc_id, g.owner)?;
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
        target: (t.ip, t.port),
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
            first: at.sibling(first),
        });
    }
    validate_listener_settings(l, at, object)?;
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
        if let Some(first) = l.targets[..k].iter().position(|o| o.family() != t.family()) {
            return Err(ModelError::MixedTargetFamilies {
                at: ip_at,
                object,
                family: t.family(),
                first: at.key("targets").index(first),
            });
        }
        let unicast = match t.ip {
            IpAddr::V4(ip) => is_unicast_host(ip),
            IpAddr::V6(ip) => is_unicast_host_v6(ip),
        };
        if !unicast {
            return Err(ModelError::NotUnicast {
                at: ip_at,
                object,
                role: AddressRole::Target,
                ip: t.ip,
            });
        }
        match t.ip {
            IpAddr::V4(ip) => {
                let net = ipv4_prefix(att, &|| ip_at.clone(), object)?;
                if net.contains(ip) {
                    check_not_reserved(att, &|| ip_at.clone(), object, AddressRole::Target, ip)?;
                } else if att.gateway.is_none() {
                    return Err(ModelError::TargetOffLink {
                        at: ip_at,
                        object,
                        ip,
                        prefix: net.trunc(),
                        vpc: att.vpc_id,
                    });
                }
            }
            IpAddr::V6(ip) => match att.address6 {
                None => {
                    return Err(ModelError::NoIpv6Prefix {
                        at: ip_at,
                        object,
                        vpc: att.vpc_id,
                    })
                }
                Some(net) if net.contains(ip) => {
                    check_on_link6(att, &|| ip_at.clone(), object, AddressRole::Target, ip)?;
                }
                Some(net) if att.gateway6.is_none() => {
                    return Err(ModelError::Target6OffLink {
                        at: ip_at,
                        object,
                        ip,
                        prefix: net.trunc(),
                        vpc: att.vpc_id,
                    });
                }
                Some(_) => {}
            },
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

/// Checks that `value`, listener setting `setting` at `at`, is in `range`.
fn check_range<T: Copy + PartialOrd + Into<u32>>(
    at: &KeyPath,
    object: Object,
    setting: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ModelError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ModelError::SettingOutOfRange {
        at: at.key(setting),
        object,
        setting,
        value: value.into(),
        min: (*range.start()).into(),
        max: (*range.end()).into(),
    })
}

/// Checks a listener's health-check settings and idle timeout (at `at`, the listener).
fn validate_listener_settings(
    l: &Listener,
    at: &KeyPath,
    object: Object,
) -> Result<(), ModelError> {
    if let Some(port) = l.health_check_port {
        check_range(at, object, "health_check_port", port, 1..=u16::MAX)?;
    }
    let (interval, timeout) = (
        l.health_check_interval_seconds,
        l.health_check_timeout_seconds,
    );
    let interval_key = "health_check_interval_seconds";
    check_range(
        at,
        object,
        interval_key,
        interval,
        health_limits::INTERVAL_S,
    )?;
    let timeout_key = "health_check_timeout_seconds";
    check_range(at, object, timeout_key, timeout, health_limits::TIMEOUT_S)?;
    // A check still waiting when the next one is due would overlap it.
    if timeout >= interval {
        return Err(ModelError::TimeoutNotBelowInterval {
            at: at.key(timeout_key),
            object,
            timeout,
            interval,
        });
    }
    for (key, count) in [
        ("healthy_threshold_count", l.healthy_threshold_count),
        ("unhealthy_threshold_count", l.unhealthy_threshold_count),
    ] {
        check_range(at, object, key, count, health_limits::THRESHOLD)?;
    }
    let path = &l.health_check_path;
    let problem = if !path.starts_with('/') {
        Some(BadPath::NotAbsolute)
    } else if path.len() > health_limits::PATH_LEN {
        Some(BadPath::TooLong { len: path.len() })
    } else {
        // The path goes verbatim into `GET <path> HTTP/1.1`: a space or a control byte
        // would end the request line or smuggle a header into it.
        path.bytes()
            .enumerate()
            .find(|&(_, b)| !(0x21..=0x7e).contains(&b))
            .map(|(offset, byte)| BadPath::NotVisible { offset, byte })
    };
    if let Some(problem) = problem {
        return Err(ModelError::InvalidHealthCheckPath {
            at: at.key("health_check_path"),
            object,
            problem,
        });
    }
    if let Some(idle) = l.idle_timeout_seconds {
        let range = health_limits::IDLE_TIMEOUT_S;
        check_range(at, object, "idle_timeout_seconds", idle, range)?;
    }
    Ok(())
}

/// The first principal of `principals` that an earlier one repeats: its index, the
/// earlier one's, and the principal.
fn repeated(principals: impl Iterator<Item = Principal>) -> Option<(usize, usize, Principal)> {
    let mut seen: Vec<Principal> = Vec::new();
    for (k, p) in principals.enumerate() {
        if let Some(first) = seen.iter().position(|&q| q == p) {
            return Some((k, first, p));
        }
        seen.push(p);
    }
    None
}

/// Checks that service `s` (at `at`) lists no principal twice among its auto-accept
/// principals, nor among its connection limits (where two limits for one account would
/// leave which one holds to their order).
fn validate_principal_lists(s: &Service, at: &KeyPath, object: Object) -> Result<(), ModelError> {
    let list_at = at.key("auto_accept_principals");
    if let Some((k, first, principal)) = repeated(s.auto_accept_principals.iter().copied()) {
        return Err(ModelError::DuplicatePrincipal {
            at: list_at.index(k),
            object,
            principal,
            first: list_at.index(first),
        });
    }
    let list_at = at.key("connection_limits");
    if let Some((k, first, principal)) = repeated(s.connection_limits.iter().map(|l| l.principal)) {
        return Err(ModelError::DuplicatePrincipal {
            at: list_at.index(k).key("principal"),
            object,
            principal,
            first: list_at.index(first),
        });
    }
    Ok(())
}
