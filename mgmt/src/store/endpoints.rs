//! Interface endpoints (the consumer's operations) and their connections to services (the
//! provider's view: accept, reject).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

use super::args::Args;
use super::services::dedup;
use super::{
    allocate_address6, connected, endpoint_json, endpoint_not_found, group_not_found, rfc3339,
    unsuccessful, ApiError, Tx,
};
use crate::model::{
    Endpoint, EndpointId, EndpointKey, EndpointState, IpAddressType, SecurityGroupId, ServiceId,
    ServiceName,
};
use crate::policy::Policy;

/// A `PolicyDocument` argument (a JSON object, or a string holding one), checked by
/// compiling it and against the endpoint owner `owner` (a statement that could never match
/// its traffic is refused). Its size is a quota (`quotas.policy_characters`).
fn parse_policy(v: &Value, owner: crate::model::AccountId) -> Result<Value, ApiError> {
    let err = |m: String| ApiError::new("InvalidPolicyDocument", format!("PolicyDocument: {m}"));
    let doc = match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| err(format!("not JSON: {e}")))?,
        other => other.clone(),
    };
    Policy::parse(&doc).map_err(|e| err(e.to_string()))?;
    crate::policy::check_principals(&doc, owner).map_err(|e| err(e.to_string()))?;
    Ok(doc)
}

impl Tx<'_> {
    /// The index of endpoint `id`, which the caller must own (else it is not found).
    fn own_endpoint(&self, id: EndpointId) -> Result<usize, ApiError> {
        (self.index.position(&self.st.endpoints, id))
            .filter(|&i| self.caller.acts_for(self.st.endpoints[i].owner))
            .ok_or_else(|| endpoint_not_found(id))
    }

    /// Checks that the caller sees each group (owns it).
    fn check_groups(&self, groups: &[SecurityGroupId]) -> Result<(), ApiError> {
        for &g in groups {
            if !self
                .st
                .security_groups
                .iter()
                .any(|x| x.id == g && self.caller.acts_for(x.owner))
            {
                return Err(group_not_found(g));
            }
        }
        Ok(())
    }

    pub(super) fn create_endpoint(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(
            args,
            &[
                "VpcId",
                "ServiceName",
                "IpAddress",
                "IpAddressType",
                "Ipv6Address",
                "SecurityGroupIds",
                "PolicyDocument",
                "VpcEndpointType",
            ],
        )?;
        let vpc = a.req_parse("VpcId")?;
        let name: ServiceName = a.req_parse("ServiceName")?;
        let ip: Option<Ipv4Addr> = a.parse("IpAddress")?;
        let ip_address_type: IpAddressType = a.parse("IpAddressType")?.unwrap_or_default();
        let ip6: Option<Ipv6Addr> = a.parse("Ipv6Address")?;
        if ip6.is_some() && !ip_address_type.has_ipv6() {
            return Err(ApiError::invalid(format!(
                "Ipv6Address: an endpoint of IpAddressType {ip_address_type} has no IPv6 \
                 address (IpAddressType dualstack has one)"
            )));
        }
        let mut groups: Vec<SecurityGroupId> =
            a.parse_list("SecurityGroupIds")?.unwrap_or_default();
        dedup(&mut groups);
        if let Some(t) = a.str("VpcEndpointType")? {
            if t != "Interface" {
                return Err(ApiError::invalid(format!(
                    "VpcEndpointType: only \"Interface\" endpoints exist here, not {t:?}"
                )));
            }
        }

        let att = self.own_vpc(vpc)?.clone();
        let owner = att.account;
        let policy = a
            .get("PolicyDocument")
            .map(|p| parse_policy(p, owner))
            .transpose()?;
        // A service the owner may not use is answered exactly as one that does not exist,
        // so nobody learns which services exist by probing names.
        let service = self
            .st
            .services
            .iter()
            .find(|s| name.region() == self.region && s.id == name.id())
            .filter(|s| self.caller.admin || s.allows(owner))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidServiceName",
                    format!("the Vpc Endpoint Service '{name}' does not exist"),
                )
            })?;
        let service_id = service.id;
        // Counted now, not kept: a limit lowered below what an account has leaves its
        // endpoints connected and refuses only new ones.
        if let Some(limit) = service.connection_limit(owner) {
            let has = self
                .st
                .endpoints
                .iter()
                .filter(|e| e.service_id == service_id && e.owner == owner && connected(e.state))
                .count();
            if has >= usize::try_from(limit).unwrap_or(usize::MAX) {
                return Err(ApiError::new(
                    "ConnectionLimitExceeded",
                    format!(
                        "account {owner} may connect at most {limit} endpoints to service \
                         {service_id} and has {has} (pendingAcceptance or available)"
                    ),
                ));
            }
        }
        let state = if service.auto_accepts(owner) {
            EndpointState::Available
        } else {
            EndpointState::PendingAcceptance
        };
        self.check_groups(&groups)?;
        // An IPv6 endpoint has no IPv4 address (a given one is refused by validation).
        let ip = match ip {
            Some(ip) => Some(ip),
            None if ip_address_type.has_ipv4() => Some(self.allocate_endpoint_address(&att)?),
            None => None,
        };
        // Without an IPv6 prefix there is nothing to allocate from: validation names the
        // problem (the VPC has no address6), as it does for a given address.
        let ip6 = match (ip6, att.address6) {
            (Some(ip6), _) => Some(ip6),
            (None, Some(net)) if ip_address_type.has_ipv6() => {
                let used = self.used_addresses6(&att);
                Some(allocate_address6(&att, net, &used)?)
            }
            (None, _) => None,
        };
        let (endpoints, index) = (&self.st.endpoints, self.index);
        let id = Self::fresh(self.ids, EndpointId::new, |id| {
            index.count_in(endpoints, EndpointKey::Id(*id)) > 0
        });
        let endpoint = Endpoint {
            id,
            owner,
            vpc_id: vpc,
            service_id,
            ip,
            ip_address_type,
            ip6,
            state,
            security_group_ids: groups,
            policy,
            created_at: self.now,
            deleted_at: None,
        };
        let response = json!({"VpcEndpoint": endpoint_json(&endpoint, self.region)});
        self.st.endpoints.push(endpoint);
        Ok(response)
    }

    pub(super) fn describe_endpoints(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["VpcEndpointIds", "Filters"])?;
        let ids: Option<Vec<EndpointId>> = a.parse_list("VpcEndpointIds")?;
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        for (path, v) in a.list("Filters")?.unwrap_or_default() {
            let f = Args::nested(v, path, &["Name", "Values"])?;
            let name = f.req_str("Name")?;
            if !matches!(
                name,
                "vpc-id" | "service-name" | "vpc-endpoint-state" | "vpc-endpoint-id" | "service-id"
            ) {
                return Err(ApiError::invalid(format!(
                    "{}: unknown filter {name:?} (expected vpc-id, service-name, \
                     vpc-endpoint-state, vpc-endpoint-id or service-id)",
                    f.name("Name")
                )));
            }
            let mut values = Vec::new();
            for (vpath, v) in f.req_list("Values")? {
                values.push(
                    v.as_str()
                        .ok_or_else(|| ApiError::invalid(format!("{vpath} must be a string")))?
                        .to_owned(),
                );
            }
            filters.push((name.to_owned(), values));
        }
        let mut chosen: Vec<usize> = match ids {
            Some(ids) => ids
                .into_iter()
                .map(|id| self.own_endpoint(id))
                .collect::<Result<_, _>>()?,
            None => (0..self.st.endpoints.len())
                .filter(|&i| self.caller.acts_for(self.st.endpoints[i].owner))
                .collect(),
        };
        chosen.retain(|&i| {
            let e = &self.st.endpoints[i];
            filters.iter().all(|(name, values)| {
                let actual = match name.as_str() {
                    "vpc-id" => e.vpc_id.to_string(),
                    "service-name" => crate::model::service_name(self.region, e.service_id),
                    "service-id" => e.service_id.to_string(),
                    "vpc-endpoint-state" => e.state.as_str().to_owned(),
                    _ => e.id.to_string(),
                };
                values.contains(&actual)
            })
        });
        let list: Vec<Value> = chosen
            .into_iter()
            .map(|i| endpoint_json(&self.st.endpoints[i], self.region))
            .collect();
        Ok(json!({"VpcEndpoints": list}))
    }

    pub(super) fn modify_endpoint(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(
            args,
            &[
                "VpcEndpointId",
                "AddSecurityGroupIds",
                "RemoveSecurityGroupIds",
                "PolicyDocument",
                "ResetPolicy",
            ],
        )?;
        let id = a.req_parse("VpcEndpointId")?;
        let add: Vec<SecurityGroupId> = a.parse_list("AddSecurityGroupIds")?.unwrap_or_default();
        let remove: Vec<SecurityGroupId> =
            a.parse_list("RemoveSecurityGroupIds")?.unwrap_or_default();
        let reset = a.bool("ResetPolicy")?.unwrap_or(false);
        if reset && a.has("PolicyDocument") {
            return Err(ApiError::new(
                "InvalidParameterCombination",
                "PolicyDocument and ResetPolicy cannot be given together",
            ));
        }
        let i = self.own_endpoint(id)?;
        let current = &self.st.endpoints[i];
        if matches!(
            current.state,
            EndpointState::Deleting | EndpointState::Deleted | EndpointState::Failed
        ) {
            return Err(ApiError::new(
                "IncorrectState",
                format!("endpoint {id} is {} and cannot be modified", current.state),
            ));
        }
        let policy = a
            .get("PolicyDocument")
            .map(|p| parse_policy(p, current.owner))
            .transpose()?;
        self.check_groups(&add)?;
        let e = &mut self.st.endpoints[i];
        for g in remove {
            if !e.security_group_ids.contains(&g) {
                return Err(ApiError::invalid(format!(
                    "RemoveSecurityGroupIds: {g} is not a group of endpoint {id}"
                )));
            }
            e.security_group_ids.retain(|&x| x != g);
        }
        for g in add {
            if !e.security_group_ids.contains(&g) {
                e.security_group_ids.push(g);
            }
        }
        if reset {
            e.policy = None;
        }
        if policy.is_some() {
            e.policy = policy;
        }
        Ok(json!({"Return": true}))
    }

    pub(super) fn delete_endpoints(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["VpcEndpointIds"])?;
        let ids: Vec<EndpointId> = a.req_parse_list("VpcEndpointIds")?;
        let mut failed = Vec::new();
        let now = self.now;
        for id in ids {
            match self.own_endpoint(id) {
                Ok(i) => {
                    // Through `deleting` (no traffic from the next snapshot on) to
                    // `deleted`, which stays visible for a while, as in the cloud. Asking
                    // again for one on its way out changes nothing.
                    let e = &mut self.st.endpoints[i];
                    if !matches!(e.state, EndpointState::Deleting | EndpointState::Deleted) {
                        e.state = EndpointState::Deleting;
                        e.deleted_at = Some(now);
                    }
                }
                Err(e) => failed.push(unsuccessful(id, &e)),
            }
        }
        Ok(json!({"Unsuccessful": failed}))
    }

    pub(super) fn describe_connections(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["ServiceId"])?;
        let only: Option<ServiceId> = a.parse("ServiceId")?;
        if let Some(id) = only {
            self.own_service(id)?;
        }
        let list: Vec<Value> = self
            .st
            .endpoints
            .iter()
            .filter(|e| {
                (only.is_none() || only == Some(e.service_id))
                    && self
                        .st
                        .service(e.service_id)
                        .is_some_and(|s| self.caller.acts_for(s.owner))
            })
            .map(|e| {
                let mut v = json!({
                    "ServiceId": e.service_id.to_string(),
                    "VpcEndpointId": e.id.to_string(),
                    "VpcEndpointOwner": e.owner.to_string(),
                    "VpcEndpointState": e.state.as_str(),
                });
                if let Some(ip) = e.ip {
                    v["IpAddress"] = Value::String(ip.to_string());
                }
                if let Some(ip6) = e.ip6 {
                    v["Ipv6Address"] = Value::String(ip6.to_string());
                }
                if e.created_at != 0 {
                    v["CreationTimestamp"] = Value::String(rfc3339(e.created_at));
                }
                v
            })
            .collect();
        Ok(json!({"VpcEndpointConnections": list}))
    }

    /// Accept (`pendingAcceptance` → `available`) or reject (`pendingAcceptance` or
    /// `available` → `rejected`) endpoints of one of the caller's services.
    pub(super) fn answer_connections(
        &mut self,
        args: &Value,
        accept: bool,
    ) -> Result<Value, ApiError> {
        let a = Args::top(args, &["ServiceId", "VpcEndpointIds"])?;
        let service: ServiceId = a.req_parse("ServiceId")?;
        let ids: Vec<EndpointId> = a.req_parse_list("VpcEndpointIds")?;
        self.own_service(service)?;
        let mut failed = Vec::new();
        for id in ids {
            let at = (self.index.position(&self.st.endpoints, id))
                .filter(|&i| self.st.endpoints[i].service_id == service);
            let Some(e) = at.map(|i| &mut self.st.endpoints[i]) else {
                failed.push(unsuccessful(id, &endpoint_not_found(id)));
                continue;
            };
            let next = match (accept, e.state) {
                (true, EndpointState::PendingAcceptance) => EndpointState::Available,
                (false, EndpointState::PendingAcceptance | EndpointState::Available) => {
                    EndpointState::Rejected
                }
                (_, state) => {
                    let verb = if accept { "accepted" } else { "rejected" };
                    let e = ApiError::new(
                        "IncorrectState",
                        format!("endpoint {id} is {state} and cannot be {verb}"),
                    );
                    failed.push(unsuccessful(id, &e));
                    continue;
                }
            };
            e.state = next;
        }
        Ok(json!({"Unsuccessful": failed}))
    }
}
