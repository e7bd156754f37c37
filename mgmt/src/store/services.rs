//! Endpoint services, their permissions and their targets: the provider's operations.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::args::Args;
use super::{
    allocate_address, connected, principal_json, service_json, service_not_found, unsuccessful,
    ApiError, Tx,
};
use crate::model::{Listener, Principal, Protocol, Service, ServiceId, Target, TargetState};

/// A target as a request names it: `{Id, Port?, Weight?}`.
struct TargetArg {
    ip: Ipv4Addr,
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

/// `{Protocol, Port, Targets?}` (or only `{Protocol, Port}`).
fn parse_listener(path: String, v: &Value, with_targets: bool) -> Result<Listener, ApiError> {
    let keys: &[&str] = if with_targets {
        &["Protocol", "Port", "Targets"]
    } else {
        &["Protocol", "Port"]
    };
    let a = Args::nested(v, path, keys)?;
    let protocol: Protocol = a.req_parse("Protocol")?;
    let port = a.req_port("Port")?;
    let mut targets = Vec::new();
    if with_targets && a.has("Targets") {
        for t in parse_targets(&a, "Targets", port, true)? {
            targets.push(Target {
                weight: t.weight.unwrap_or(1),
                ..Target::new(t.ip, t.port)
            });
        }
    }
    Ok(Listener::new(protocol, port, targets))
}

fn parse_listeners(
    a: &Args<'_>,
    key: &str,
    with_targets: bool,
) -> Result<Option<Vec<Listener>>, ApiError> {
    a.list(key)?
        .map(|items| {
            items
                .into_iter()
                .map(|(path, v)| parse_listener(path, v, with_targets))
                .collect()
        })
        .transpose()
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
            ],
        )?;
        let vpc = a.req_parse("VpcId")?;
        let listeners = parse_listeners(&a, "Listeners", true)?.ok_or_else(|| {
            ApiError::new(
                "MissingParameter",
                "the request must contain the parameter Listeners",
            )
        })?;
        let snat: Option<Vec<Ipv4Addr>> = a.parse_list("SnatAddresses")?;
        let acceptance_required = a.bool("AcceptanceRequired")?.unwrap_or(true);
        let mut principals: Vec<Principal> = a.parse_list("AllowedPrincipals")?.unwrap_or_default();
        dedup(&mut principals);

        let att = self.own_vpc(vpc)?.clone();
        let snat_addresses = match snat {
            Some(list) => list,
            None => {
                let mut used = self.used_addresses(&att);
                used.extend(
                    listeners
                        .iter()
                        .flat_map(|l| l.targets.iter().map(|t| t.ip)),
                );
                vec![allocate_address(&att, &used, true)?]
            }
        };
        let taken: Vec<ServiceId> = self.st.services.iter().map(|s| s.id).collect();
        let id = self.fresh(ServiceId::new, &taken);
        let service = Service {
            id,
            owner: att.account,
            vpc_id: vpc,
            listeners,
            snat_addresses,
            acceptance_required,
            allowed_principals: principals,
            auto_accept_principals: Vec::new(),
            connection_limits: Vec::new(),
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
            ],
        )?;
        let id = a.req_parse("ServiceId")?;
        let acceptance = a.bool("AcceptanceRequired")?;
        let add_snat: Vec<Ipv4Addr> = a.parse_list("AddSnatAddresses")?.unwrap_or_default();
        let remove_snat: Vec<Ipv4Addr> = a.parse_list("RemoveSnatAddresses")?.unwrap_or_default();
        let add_listeners = parse_listeners(&a, "AddListeners", true)?.unwrap_or_default();
        let remove_listeners = parse_listeners(&a, "RemoveListeners", false)?.unwrap_or_default();

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
        let s = &mut self.st.services[i];
        for p in remove {
            if !s.allowed_principals.contains(&p) {
                return Err(ApiError::invalid(format!(
                    "RemoveAllowedPrincipals: {p} is not an allowed principal of service {id}"
                )));
            }
            s.allowed_principals.retain(|&x| x != p);
        }
        for p in add {
            if !s.allowed_principals.contains(&p) {
                s.allowed_principals.push(p);
            }
        }
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

    /// The targets of a service and their states. The daemon adds `ActiveFlows` to each
    /// description before it answers.
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
    for e in st.endpoints.iter_mut().filter(|e| e.service_id == id) {
        if !matches!(
            e.state,
            crate::model::EndpointState::Deleting | crate::model::EndpointState::Deleted
        ) {
            e.state = crate::model::EndpointState::Failed;
        }
    }
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
