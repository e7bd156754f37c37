//! Security groups: the consumer's ingress rules for its endpoints.

use serde_json::{json, Value};

use super::args::{parse_at, Args};
use super::{group_not_found, ApiError, Tx};
use crate::model::{IngressRule, RuleProtocol, SecurityGroup, SecurityGroupId};
use crate::net::{IpNet, Ipv4Net, Ipv6Net};

/// Longest group name and description, as in the cloud.
const MAX_NAME: usize = 255;

fn group_json(g: &SecurityGroup) -> Value {
    json!({
        "GroupId": g.id.to_string(),
        "GroupName": g.name,
        "Description": g.description,
        "VpcId": g.vpc_id.to_string(),
        "OwnerId": g.owner.to_string(),
        "IpPermissions": g.ingress.iter().map(rule_json).collect::<Vec<_>>(),
    })
}

fn rule_json(r: &IngressRule) -> Value {
    let mut v = match r.cidr {
        IpNet::V4(c) => json!({
            "IpProtocol": r.protocol.as_str(),
            "IpRanges": [{"CidrIp": c.to_string()}],
        }),
        IpNet::V6(c) => json!({
            "IpProtocol": r.protocol.as_str(),
            "Ipv6Ranges": [{"CidrIpv6": c.to_string()}],
        }),
    };
    if r.protocol.has_ports() {
        v["FromPort"] = json!(r.from_port);
        v["ToPort"] = json!(r.to_port);
    }
    v
}

/// `IpPermissions`: each `{IpProtocol, FromPort?, ToPort?, IpRanges: [{CidrIp}],
/// Ipv6Ranges: [{CidrIpv6}]}` becomes one rule per range (of either list; at least one).
/// Ports are required for tcp and udp and ignored otherwise; `icmpv6` (58) is `icmp`.
fn parse_permissions(a: &Args<'_>) -> Result<Vec<IngressRule>, ApiError> {
    let mut rules = Vec::new();
    for (path, v) in a.req_list("IpPermissions")? {
        let p = Args::nested(
            v,
            path,
            &["IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges"],
        )?;
        let protocol = match p.req_str("IpProtocol")?.to_ascii_lowercase().as_str() {
            "tcp" | "6" => RuleProtocol::Tcp,
            "udp" | "17" => RuleProtocol::Udp,
            "icmp" | "1" | "icmpv6" | "58" => RuleProtocol::Icmp,
            "-1" | "all" => RuleProtocol::All,
            other => {
                return Err(ApiError::new(
                    "InvalidParameterValue",
                    format!(
                        "{}: invalid protocol {other:?} (expected tcp, udp, icmp or -1)",
                        p.name("IpProtocol")
                    ),
                ))
            }
        };
        let (from_port, to_port) = if protocol.has_ports() {
            let port = |key: &str| -> Result<u16, ApiError> {
                let n = p.int(key, 0, 65535)?.ok_or_else(|| {
                    ApiError::new(
                        "MissingParameter",
                        format!("the request must contain the parameter {}", p.name(key)),
                    )
                })?;
                u16::try_from(n)
                    .map_err(|_| ApiError::invalid(format!("{} is out of range", p.name(key))))
            };
            let (from, to) = (port("FromPort")?, port("ToPort")?);
            if from > to {
                return Err(ApiError::invalid(format!(
                    "{}: port range {from}-{to} is empty",
                    p.name("FromPort")
                )));
            }
            (from, to)
        } else {
            // Ignored (ICMP type/code, or -1), but must be numbers if given.
            p.int("FromPort", -1, 65535)?;
            p.int("ToPort", -1, 65535)?;
            (0, 0)
        };
        let v4 = p.list("IpRanges")?.unwrap_or_default();
        let v6 = p.list("Ipv6Ranges")?.unwrap_or_default();
        if v4.is_empty() && v6.is_empty() {
            return Err(ApiError::new(
                "MissingParameter",
                format!(
                    "{} or {} must name at least one range",
                    p.name("IpRanges"),
                    p.name("Ipv6Ranges")
                ),
            ));
        }
        for (rpath, rv) in v4 {
            let r = Args::nested(rv, rpath, &["CidrIp", "Description"])?;
            r.str("Description")?;
            let cidr: Ipv4Net = parse_at(&r.name("CidrIp"), r.req_str("CidrIp")?)?;
            rules.push(IngressRule {
                protocol,
                from_port,
                to_port,
                cidr: IpNet::V4(cidr.trunc()),
            });
        }
        for (rpath, rv) in v6 {
            let r = Args::nested(rv, rpath, &["CidrIpv6", "Description"])?;
            r.str("Description")?;
            let cidr: Ipv6Net = parse_at(&r.name("CidrIpv6"), r.req_str("CidrIpv6")?)?;
            rules.push(IngressRule {
                protocol,
                from_port,
                to_port,
                cidr: IpNet::V6(cidr.trunc()),
            });
        }
    }
    Ok(rules)
}

impl Tx<'_> {
    /// The index of group `id`, which the caller must own (else it is not found).
    fn own_group(&self, id: SecurityGroupId) -> Result<usize, ApiError> {
        self.st
            .security_groups
            .iter()
            .position(|g| g.id == id && self.caller.acts_for(g.owner))
            .ok_or_else(|| group_not_found(id))
    }

    pub(super) fn create_group(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["VpcId", "GroupName", "Description"])?;
        let vpc = a.req_parse("VpcId")?;
        let name = a.req_str("GroupName")?;
        let description = a.str("Description")?.unwrap_or_default();
        if name.is_empty() || name.len() > MAX_NAME || name.starts_with("sg-") {
            return Err(ApiError::invalid(format!(
                "GroupName: {name:?} must be 1 to {MAX_NAME} bytes and not start with \"sg-\""
            )));
        }
        if description.len() > MAX_NAME {
            return Err(ApiError::invalid(format!(
                "Description: at most {MAX_NAME} bytes are allowed"
            )));
        }
        let owner = self.own_vpc(vpc)?.account;
        if self
            .st
            .security_groups
            .iter()
            .any(|g| g.vpc_id == vpc && g.name == name)
        {
            return Err(ApiError::new(
                "InvalidGroup.Duplicate",
                format!("the security group '{name}' already exists in {vpc}"),
            ));
        }
        let groups = &self.st.security_groups;
        let id = Self::fresh(self.ids, SecurityGroupId::new, |id| {
            groups.iter().any(|g| g.id == *id)
        });
        self.st.security_groups.push(SecurityGroup {
            id,
            owner,
            vpc_id: vpc,
            name: name.to_owned(),
            description: description.to_owned(),
            ingress: Vec::new(),
        });
        Ok(json!({"GroupId": id.to_string()}))
    }

    pub(super) fn describe_groups(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["GroupIds"])?;
        let list: Vec<Value> = match a.parse_list::<SecurityGroupId>("GroupIds")? {
            Some(ids) => ids
                .into_iter()
                .map(|id| Ok(group_json(&self.st.security_groups[self.own_group(id)?])))
                .collect::<Result<_, ApiError>>()?,
            None => self
                .st
                .security_groups
                .iter()
                .filter(|g| self.caller.acts_for(g.owner))
                .map(group_json)
                .collect(),
        };
        Ok(json!({"SecurityGroups": list}))
    }

    pub(super) fn delete_group(&mut self, args: &Value) -> Result<Value, ApiError> {
        let a = Args::top(args, &["GroupId"])?;
        let id = a.req_parse("GroupId")?;
        let i = self.own_group(id)?;
        if let Some(e) = self
            .st
            .endpoints
            .iter()
            .find(|e| e.security_group_ids.contains(&id))
        {
            return Err(ApiError::new(
                "DependencyViolation",
                format!("security group {id} is used by endpoint {}", e.id),
            ));
        }
        self.st.security_groups.remove(i);
        Ok(json!({"Return": true}))
    }

    /// `authorize-security-group-ingress` (`add`) or `revoke-security-group-ingress`.
    pub(super) fn change_ingress(&mut self, args: &Value, add: bool) -> Result<Value, ApiError> {
        let a = Args::top(args, &["GroupId", "IpPermissions"])?;
        let id = a.req_parse("GroupId")?;
        let rules = parse_permissions(&a)?;
        let i = self.own_group(id)?;
        let g = &mut self.st.security_groups[i];
        for r in rules {
            let exists = g.ingress.contains(&r);
            let describe = || {
                let ports = if r.protocol.has_ports() {
                    format!(" ports {}-{}", r.from_port, r.to_port)
                } else {
                    String::new()
                };
                format!("{}{ports} from {}", r.protocol, r.cidr)
            };
            if add {
                if exists {
                    return Err(ApiError::new(
                        "InvalidPermission.Duplicate",
                        format!("the rule {} already exists in {id}", describe()),
                    ));
                }
                g.ingress.push(r);
            } else {
                if !exists {
                    return Err(ApiError::new(
                        "InvalidPermission.NotFound",
                        format!("the rule {} does not exist in {id}", describe()),
                    ));
                }
                g.ingress.retain(|x| *x != r);
            }
        }
        Ok(json!({"Return": true}))
    }
}
