//! Endpoint services, their permissions and their targets: the provider's operations.

use std::net::IpAddr;

use serde_json::{json, Value};

use super::args::{type_name, Args};
use super::{
    allocate_address_from_top, connected, principal_json, service_json, service_not_found,
    unsuccessful, ApiError, Tx,
};
use crate::model::{
    health_limits, ConnectionLimit, HealthCheckProtocol, IpFamily, Listener, Matcher, Principal,
    Protocol, Service, ServiceId, Target, TargetState,
};

/// A target as a request names it: `{Id, Port?, Weight?}`.
struct TargetArg {
    ip: IpAddr,
    port: u16,
    weight: Option<u32>,
}

fn parse_target(
    path: String,
    v: &Value,
    default_port: u16,
    weight: bool,
) -> Result<TargetArg, ApiError> {
    let keys: &[&str] = if weight {
        &["Id", "Port", "Weight"]
    } else {
        &["Id", "Port"]
    };
    let a = Args::nested(v, path, keys)?;
    let weight = a
        .int("Weight", 0, i64::from(u32::MAX))?
        .and_then(|w| u32::try_from(w).ok());
    Ok(TargetArg {
        ip: a.req_parse("Id")?,
        port: a.port("Port")?.unwrap_or(default_port),
        weight,
    })
}

fn parse_targets(
    a: &Args<'_>,
    key: &str,
    default_port: u16,
    weight: bool,
) -> Result<Vec<TargetArg>, ApiError> {
    a.req_list(key)?
        .into_iter()
        .map(|(path, v)| parse_target(path, v, default_port, weight))
        .collect()
}

/// The settings a listener item may carry besides `Protocol`, `Port` and `Targets`: the
/// cloud's names for [`Listener`]'s health-check settings, connection termination and
/// idle timeout.
const LISTENER_SETTINGS: [&str; 11] = [
    "HealthCheckEnabled",
    "HealthCheckProtocol",
    "HealthCheckPort",
    "HealthCheckPath",
    "Matcher",
    "HealthCheckIntervalSeconds",
    "HealthCheckTimeoutSeconds",
    "HealthyThresholdCount",
    "UnhealthyThresholdCount",
    "ConnectionTerminationOnUnhealthy",
    "IdleTimeoutSeconds",
];

/// The listener settings a request gives; what it leaves out stays as it is. Ranges are
/// checked here (so the error names the argument); how settings relate to each other (a
/// timeout below the interval) and the path are the model's rules, checked on the result.
#[derive(Debug, Default)]
struct SettingsArg {
    enabled: Option<bool>,
    protocol: Option<HealthCheckProtocol>,
    /// `Some(None)`: `"traffic-port"`, the target's own port.
    port: Option<Option<u16>>,
    path: Option<String>,
    matcher: Option<Matcher>,
    interval: Option<u16>,
    timeout: Option<u16>,
    healthy: Option<u8>,
    unhealthy: Option<u8>,
    termination: Option<bool>,
    idle_timeout: Option<u32>,
}

impl SettingsArg {
    fn parse(a: &Args<'_>) -> Result<Self, ApiError> {
        Ok(Self {
            enabled: a.bool("HealthCheckEnabled")?,
            protocol: a.parse("HealthCheckProtocol")?,
            port: health_check_port(a)?,
            path: a.str("HealthCheckPath")?.map(str::to_owned),
            matcher: matcher(a)?,
            interval: a.int_in("HealthCheckIntervalSeconds", health_limits::INTERVAL_S)?,
            timeout: a.int_in("HealthCheckTimeoutSeconds", health_limits::TIMEOUT_S)?,
            healthy: a.int_in("HealthyThresholdCount", health_limits::THRESHOLD)?,
            unhealthy: a.int_in("UnhealthyThresholdCount", health_limits::THRESHOLD)?,
            termination: a.bool("ConnectionTerminationOnUnhealthy")?,
            idle_timeout: a.int_in("IdleTimeoutSeconds", health_limits::IDLE_TIMEOUT_S)?,
        })
    }

    /// Sets on `l` what was given.
    fn apply(self, l: &mut Listener) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(v) = value {
                *slot = v;
            }
        }
        set(&mut l.health_check_enabled, self.enabled);
        set(&mut l.health_check_protocol, self.protocol);
        set(&mut l.health_check_port, self.port);
        set(&mut l.health_check_path, self.path);
        set(&mut l.matcher, self.matcher);
        set(&mut l.health_check_interval_seconds, self.interval);
        set(&mut l.health_check_timeout_seconds, self.timeout);
        set(&mut l.healthy_threshold_count, self.healthy);
        set(&mut l.unhealthy_threshold_count, self.unhealthy);
        set(&mut l.connection_termination_on_unhealthy, self.termination);
        set(&mut l.idle_timeout_seconds, self.idle_timeout.map(Some));
    }
}

/// `HealthCheckPort`: a port, or `"traffic-port"` (the cloud's word for the target's own
/// port, the default).
fn health_check_port(a: &Args<'_>) -> Result<Option<Option<u16>>, ApiError> {
    let key = "HealthCheckPort";
    match a.get(key) {
        None => Ok(None),
        Some(Value::String(s)) if s == "traffic-port" => Ok(Some(None)),
        Some(Value::Number(_)) => Ok(a.port(key)?.map(Some)),
        Some(v) => Err(ApiError::invalid(format!(
            "{} must be a port 1..=65535 or \"traffic-port\", not {}",
            a.name(key),
            type_name(v)
        ))),
    }
}

/// `Matcher`: `"200-399"`, or as the cloud also takes it, `{"HttpCode": "200-399"}`.
fn matcher(a: &Args<'_>) -> Result<Option<Matcher>, ApiError> {
    let key = "Matcher";
    match a.get(key) {
        None => Ok(None),
        Some(v @ Value::Object(_)) => Args::nested(v, a.name(key), &["HttpCode"])?
            .req_parse("HttpCode")
            .map(Some),
        Some(Value::String(_)) => a.parse(key),
        Some(v) => Err(ApiError::invalid(format!(
            "{} must be HTTP status codes such as \"200-399\", as a string or \
             {{\"HttpCode\": \"200-399\"}}, not {}",
            a.name(key),
            type_name(v)
        ))),
    }
}

/// What an item of a listener list carries besides `{Protocol, Port}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerItem {
    /// Nothing (`RemoveListeners`).
    Named,
    /// Settings (`ModifyListeners`).
    Settings,
    /// `Targets` and settings (`Listeners`, `AddListeners`).
    New,
}

/// A listener item of a request.
struct ListenerArg {
    protocol: Protocol,
    port: u16,
    targets: Vec<Target>,
    settings: SettingsArg,
}

impl ListenerArg {
    /// The new listener it describes: its targets, and defaults for what it leaves out.
    fn into_listener(self) -> Listener {
        let mut l = Listener::new(self.protocol, self.port, self.targets);
        self.settings.apply(&mut l);
        l
    }
}

fn parse_listener(path: String, v: &Value, item: ListenerItem) -> Result<ListenerArg, ApiError> {
    let mut keys = vec!["Protocol", "Port"];
    if item == ListenerItem::New {
        keys.push("Targets");
    }
    if item != ListenerItem::Named {
        keys.extend(LISTENER_SETTINGS);
    }
    let a = Args::nested(v, path, &keys)?;
    let protocol: Protocol = a.req_parse("Protocol")?;
    let port = a.req_port("Port")?;
    let mut targets = Vec::new();
    if a.has("Targets") {
        for t in parse_targets(&a, "Targets", port, true)? {
            targets.push(Target {
                weight: t.weight.unwrap_or(1),
                ..Target::new(t.ip, t.port)
            });
        }
    }
    Ok(ListenerArg {
        protocol,
        port,
        targets,
        settings: SettingsArg::parse(&a)?,
    })
}

fn parse_listeners(
    a: &Args<'_>,
    key: &str,
    item: ListenerItem,
) -> Result<Option<Vec<ListenerArg>>, ApiError> {
    a.list(key)?
        .map(|items| {
            items
                .into_iter()
                .map(|(path, v)| parse_listener(path, v, item))
                .collect()
        })
        .transpose()
}

/// The new listeners of `Listeners` or `AddListeners`.
fn parse_new_listeners(a: &Args<'_>, key: &str) -> Result<Option<Vec<Listener>>, ApiError> {
    Ok(parse_listeners(a, key, ListenerItem::New)?
        .map(|items| items.into_iter().map(ListenerArg::into_listener).collect()))
}

/// `[{Principal, Limit}]` (`ConnectionLimits`, `AddConnectionLimits`). A principal given
/// twice is refused: which of its limits was meant is not for the order to decide.
fn parse_connection_limits(
    a: &Args<'_>,
    key: &str,
) -> Result<Option<Vec<ConnectionLimit>>, ApiError> {
    let Some(items) = a.list(key)? else {
        return Ok(None);
    };
    let mut limits: Vec<ConnectionLimit> = Vec::with_capacity(items.len());
    for (path, v) in items {
        let item = Args::nested(v, path, &["Principal", "Limit"])?;
        let principal: Principal = item.req_parse("Principal")?;
        let limit = item.req_int_in("Limit", 0..=u32::MAX)?;
        if limits.iter().any(|l| l.principal == principal) {
            return Err(ApiError::invalid(format!(
                "{}: {principal} is given a limit twice",
                item.name("Principal")
            )));
        }
        limits.push(ConnectionLimit { principal, limit });
    }
    Ok(Some(limits))
}

/// Takes `remove` out of `list` (each must be there: else an error naming `remove_key` and
/// saying the principal is not `role` of service `id`), then adds what of `add` is not
/// there yet.
fn change_principals(
    list: &mut Vec<Principal>,
    add: Vec<Principal>,
    remove: Vec<Principal>,
    (remove_key, role): (&str, &str),
    id: ServiceId,
) -> Result<(), ApiError> {
    for p in remove {
        if !list.contains(&p) {
            return Err(ApiError::invalid(format!(
                "{remove_key}: {p} is not {role} of service {id}"
            )));
        }
        list.retain(|&x| x != p);
    }
    for p in add {
        if !list.contains(&p) {
            list.push(p);
        }
    }
    Ok(())
}

fn listener_not_found(s: ServiceId, protocol: Protocol, port: u16) -> ApiError {
    ApiError::new(
        "ListenerNotFound",
        format!("service {s} has no listener {protocol}/{port}"),
    )
}

impl Tx<'_> {
    /// The index of service `id`, which the caller must own (else it is not found).
    pub(super) fn own_service(&self, id: ServiceId) -> Result<usize, ApiError> {
        self.st
            .services
            .iter()
            .position(|s| s.id == id && self.caller.acts_for(s.owner))
            .ok_or_else(|| service_not_found(id))
    }

    pub(super) fn create_service(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(
            args,
            &[
                "VpcId",
                "Listeners",
                "SnatAddresses",
                "AcceptanceRequired",
                "AllowedPrincipals",
                "AutoAcceptPrincipals",
                "ConnectionLimits",
                "SupportedIpAddressTypes",
            ],
        )?;
        let vpc = a.req_parse("VpcId")?;
        let listeners = parse_new_listeners(&a, "Listeners")?.ok_or_else(|| {
            ApiError::new(
                "MissingParameter",
                "the request must contain the parameter Listeners",
            )
        })?;
        let snat: Option<Vec<IpAddr>> = a.parse_list("SnatAddresses")?;
        let acceptance_required = a.bool("AcceptanceRequired")?.unwrap_or(true);
        let mut principals: Vec<Principal> = a.parse_list("AllowedPrincipals")?.unwrap_or_default();
        dedup(&mut principals);
        let mut auto_accept: Vec<Principal> =
            a.parse_list("AutoAcceptPrincipals")?.unwrap_or_default();
        dedup(&mut auto_accept);
        let connection_limits =
            parse_connection_limits(&a, "ConnectionLimits")?.unwrap_or_default();
        let mut families: Vec<IpFamily> = a
            .parse_list("SupportedIpAddressTypes")?
            .unwrap_or_else(|| vec![IpFamily::Ipv4]);
        families.sort_unstable();
        families.dedup();

        let att = self.own_vpc(vpc)?.clone();
        let snat_addresses = match snat {
            Some(list) => list,
            None => {
                let targets = || {
                    listeners
                        .iter()
                        .flat_map(|l| l.targets.iter().map(|t| t.ip))
                };
                let in_use = self.used_addresses(&att);
                let targets4: std::collections::HashSet<std::net::Ipv4Addr> =
                    targets().filter_map(crate::net::ipv4_of).collect();
                let used = |ip| in_use(ip) || targets4.contains(&ip);
                // IPv4 targets (or none yet) are reached from an IPv4 SNAT address, IPv6
                // ones from an IPv6 one, made the same way; a VPC has the prefixes it has.
                let mut list = Vec::new();
                if att.address.is_some() {
                    list.push(IpAddr::V4(allocate_address_from_top(&att, used)?));
                }
                let ipv6_targets = targets().any(|ip| ip.is_ipv6()) || att.address.is_none();
                if let (Some(net), true) = (att.address6, ipv6_targets) {
                    let mut used6 = self.used_addresses6(&att);
                    used6.extend(targets().filter_map(crate::net::ipv6_of));
                    list.push(IpAddr::V6(super::allocate_address6(&att, net, &used6)?));
                }
                list
            }
        };
        let services = &self.st.services;
        let id = Self::fresh(self.ids, ServiceId::new, |id| {
            services.iter().any(|s| s.id == *id)
        });
        let service = Service {
            id,
            owner: att.account,
            vpc_id: vpc,
            listeners,
            snat_addresses,
            acceptance_required,
            allowed_principals: principals,
            auto_accept_principals: auto_accept,
            connection_limits,
            supported_ip_address_types: families,
        };
        let response = json!({"ServiceConfiguration": service_json(&service, self.region)});
        self.st.services.push(service);
        Ok(response)
    }

    pub(super) fn describe_services(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["ServiceIds"])?;
        let list: Vec<Value> = match a.parse_list::<ServiceId>("ServiceIds")? {
            Some(ids) => ids
                .into_iter()
                .map(|id| {
                    let i = self.own_service(id)?;
                    Ok(service_json(&self.st.services[i], self.region))
                })
                .collect::<Result<_, ApiError>>()?,
            None => self
                .st
                .services
                .iter()
                .filter(|s| self.caller.acts_for(s.owner))
                .map(|s| service_json(s, self.region))
                .collect(),
        };
        Ok(json!({"ServiceConfigurations": list}))
    }

    pub(super) fn modify_service(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(
            args,
            &[
                "ServiceId",
                "AcceptanceRequired",
                "AddSnatAddresses",
                "RemoveSnatAddresses",
                "AddListeners",
                "RemoveListeners",
                "ModifyListeners",
                "AddAutoAcceptPrincipals",
                "RemoveAutoAcceptPrincipals",
                "AddConnectionLimits",
                "RemoveConnectionLimits",
                "AddSupportedIpAddressTypes",
                "RemoveSupportedIpAddressTypes",
            ],
        )?;
        let id = a.req_parse("ServiceId")?;
        let acceptance = a.bool("AcceptanceRequired")?;
        let add_snat: Vec<IpAddr> = a.parse_list("AddSnatAddresses")?.unwrap_or_default();
        let remove_snat: Vec<IpAddr> = a.parse_list("RemoveSnatAddresses")?.unwrap_or_default();
        let add_listeners = parse_new_listeners(&a, "AddListeners")?.unwrap_or_default();
        let remove_listeners =
            parse_listeners(&a, "RemoveListeners", ListenerItem::Named)?.unwrap_or_default();
        let modify_listeners =
            parse_listeners(&a, "ModifyListeners", ListenerItem::Settings)?.unwrap_or_default();
        let add_auto: Vec<Principal> = a.parse_list("AddAutoAcceptPrincipals")?.unwrap_or_default();
        let remove_auto: Vec<Principal> = a
            .parse_list("RemoveAutoAcceptPrincipals")?
            .unwrap_or_default();
        let add_limits = parse_connection_limits(&a, "AddConnectionLimits")?.unwrap_or_default();
        let remove_limits: Vec<Principal> =
            a.parse_list("RemoveConnectionLimits")?.unwrap_or_default();
        let add_families: Vec<IpFamily> = a
            .parse_list("AddSupportedIpAddressTypes")?
            .unwrap_or_default();
        let remove_families: Vec<IpFamily> = a
            .parse_list("RemoveSupportedIpAddressTypes")?
            .unwrap_or_default();

        let i = self.own_service(id)?;
        let s = &mut self.st.services[i];
        if let Some(acceptance) = acceptance {
            s.acceptance_required = acceptance;
        }
        for ip in remove_snat {
            let before = s.snat_addresses.len();
            s.snat_addresses.retain(|&x| x != ip);
            if s.snat_addresses.len() == before {
                return Err(ApiError::invalid(format!(
                    "RemoveSnatAddresses: {ip} is not a snat address of service {id}"
                )));
            }
        }
        s.snat_addresses.extend(add_snat);
        for l in remove_listeners {
            let before = s.listeners.len();
            s.listeners
                .retain(|x| !(x.protocol == l.protocol && x.port == l.port));
            if s.listeners.len() == before {
                return Err(listener_not_found(id, l.protocol, l.port));
            }
        }
        s.listeners.extend(add_listeners);
        for m in modify_listeners {
            let l = s
                .listeners
                .iter_mut()
                .find(|x| x.protocol == m.protocol && x.port == m.port)
                .ok_or_else(|| listener_not_found(id, m.protocol, m.port))?;
            m.settings.apply(l);
        }
        change_principals(
            &mut s.auto_accept_principals,
            add_auto,
            remove_auto,
            ("RemoveAutoAcceptPrincipals", "an auto-accept principal"),
            id,
        )?;
        for p in remove_limits {
            let before = s.connection_limits.len();
            s.connection_limits.retain(|l| l.principal != p);
            if s.connection_limits.len() == before {
                return Err(ApiError::invalid(format!(
                    "RemoveConnectionLimits: {p} has no connection limit on service {id}"
                )));
            }
        }
        // A lower limit leaves the endpoints already connected alone, as a removed
        // permission does: only new endpoints are refused.
        for l in add_limits {
            match s
                .connection_limits
                .iter_mut()
                .find(|x| x.principal == l.principal)
            {
                Some(x) => x.limit = l.limit,
                None => s.connection_limits.push(l),
            }
        }
        // A family still used by an endpoint, or none left, is refused by validation,
        // which names the endpoint.
        for f in remove_families {
            let before = s.supported_ip_address_types.len();
            s.supported_ip_address_types.retain(|&x| x != f);
            if s.supported_ip_address_types.len() == before {
                return Err(ApiError::invalid(format!(
                    "RemoveSupportedIpAddressTypes: service {id} does not support {f}"
                )));
            }
        }
        s.supported_ip_address_types.extend(add_families);
        s.supported_ip_address_types.sort_unstable();
        s.supported_ip_address_types.dedup();
        Ok(json!({"Return": true}))
    }

    pub(super) fn delete_services(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["ServiceIds"])?;
        let ids: Vec<ServiceId> = a.req_parse_list("ServiceIds")?;
        let mut failed = Vec::new();
        for id in ids {
            let result = self.own_service(id).and_then(|_| {
                match self
                    .st
                    .endpoints
                    .iter()
                    .find(|e| e.service_id == id && connected(e.state))
                {
                    Some(e) => Err(ApiError::new(
                        "ServiceInUse",
                        format!(
                            "service {id} has a connected endpoint {} ({}); reject it first",
                            e.id, e.state
                        ),
                    )),
                    None => Ok(()),
                }
            });
            match result {
                Ok(()) => {
                    self.st.services.retain(|s| s.id != id);
                    fail_endpoints_of(&mut self.st, id);
                }
                Err(e) => failed.push(unsuccessful(id, &e)),
            }
        }
        Ok(json!({"Unsuccessful": failed}))
    }

    pub(super) fn modify_permissions(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(
            args,
            &[
                "ServiceId",
                "AddAllowedPrincipals",
                "RemoveAllowedPrincipals",
            ],
        )?;
        let id = a.req_parse("ServiceId")?;
        let add: Vec<Principal> = a.parse_list("AddAllowedPrincipals")?.unwrap_or_default();
        let remove: Vec<Principal> = a.parse_list("RemoveAllowedPrincipals")?.unwrap_or_default();
        let i = self.own_service(id)?;
        change_principals(
            &mut self.st.services[i].allowed_principals,
            add,
            remove,
            ("RemoveAllowedPrincipals", "an allowed principal"),
            id,
        )?;
        Ok(json!({"ReturnValue": true}))
    }

    pub(super) fn describe_permissions(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["ServiceId"])?;
        let i = self.own_service(a.req_parse("ServiceId")?)?;
        let list: Vec<Value> = self.st.services[i]
            .allowed_principals
            .iter()
            .map(|&p| principal_json(p))
            .collect();
        Ok(json!({"AllowedPrincipals": list}))
    }

    /// The service index, listener index and targets of a (de)register request.
    fn target_request(
        &self,
        args: &Value,
        weight: bool,
    ) -> Result<(usize, usize, Vec<TargetArg>), ApiError> {
        let a = Args::top(args, &["ServiceId", "Protocol", "Port", "Targets"])?;
        let id = a.req_parse("ServiceId")?;
        let protocol: Protocol = a.req_parse("Protocol")?;
        let port = a.req_port("Port")?;
        let targets = parse_targets(&a, "Targets", port, weight)?;
        let i = self.own_service(id)?;
        let j = self.st.services[i]
            .listeners
            .iter()
            .position(|l| l.protocol == protocol && l.port == port)
            .ok_or_else(|| listener_not_found(id, protocol, port))?;
        Ok((i, j, targets))
    }

    pub(super) fn register_targets(&mut self, args: &Value) -> Result<Value, ApiError> {
        let (i, j, targets) = self.target_request(args, true)?;
        let listener = &mut self.st.services[i].listeners[j];
        for t in targets {
            match listener
                .targets
                .iter_mut()
                .find(|x| x.ip == t.ip && x.port == t.port)
            {
                Some(x) => {
                    x.state = TargetState::Registered;
                    x.deregistered_at = None;
                    if let Some(w) = t.weight {
                        x.weight = w;
                    }
                }
                None => listener.targets.push(Target {
                    weight: t.weight.unwrap_or(1),
                    ..Target::new(t.ip, t.port)
                }),
            }
        }
        Ok(json!({"Return": true}))
    }

    pub(super) fn deregister_targets(&mut self, args: &Value) -> Result<Value, ApiError> {
        let (i, j, targets) = self.target_request(args, false)?;
        let now = self.now;
        let service = self.st.services[i].id;
        let listener = &mut self.st.services[i].listeners[j];
        for t in targets {
            let x = listener
                .targets
                .iter_mut()
                .find(|x| x.ip == t.ip && x.port == t.port)
                .ok_or_else(|| {
                    ApiError::new(
                        "InvalidTarget",
                        format!(
                            "{}:{} is not a target of service {service} listener {}/{}",
                            t.ip, t.port, listener.protocol, listener.port
                        ),
                    )
                })?;
            if x.state != TargetState::Draining {
                x.state = TargetState::Draining;
                x.deregistered_at = Some(now);
            }
        }
        Ok(json!({"Return": true}))
    }

    /// The targets of a service, their states and the port each is checked on. The daemon
    /// adds `ActiveFlows` to each description before it answers.
    pub(super) fn describe_target_health(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["ServiceId"])?;
        let i = self.own_service(a.req_parse("ServiceId")?)?;
        let mut list = Vec::new();
        for l in &self.st.services[i].listeners {
            for t in &l.targets {
                let mut health = json!({"State": t.state.as_str()});
                if let Some(at) = t.deregistered_at {
                    health["DeregisteredAt"] = Value::String(super::rfc3339(at));
                }
                list.push(json!({
                    "Listener": {"Protocol": l.protocol.as_str(), "Port": l.port},
                    "Target": {"Id": t.ip.to_string(), "Port": t.port, "Weight": t.weight},
                    "HealthCheckPort": l.health_check_port.unwrap_or(t.port),
                    "TargetHealth": health,
                }));
            }
        }
        Ok(json!({"TargetHealthDescriptions": list}))
    }
}

/// The endpoints of deleted service `id` that are still there (rejected, or failed
/// before) become `failed`: the consumer keeps seeing them, as in the cloud, until it
/// deletes them. `deleting` and `deleted` ones go on as they are.
pub(super) fn fail_endpoints_of(st: &mut crate::model::State, id: ServiceId) {
    use crate::model::EndpointState::{Deleted, Deleting, Failed};
    st.endpoints.modify_where(
        |e| e.service_id == id && !matches!(e.state, Deleting | Deleted | Failed),
        |e| e.state = Failed,
    );
}

/// Removes repeated items, keeping the first of each.
pub(super) fn dedup<T: PartialEq + Copy>(items: &mut Vec<T>) {
    let mut seen = Vec::with_capacity(items.len());
    items.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
}
