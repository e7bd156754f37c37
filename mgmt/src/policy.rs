//! Endpoint policies: the JSON document a consumer attaches to an interface endpoint, and
//! its compiled form that the data plane evaluates once per new flow.
//!
//! The document is EC2-flavoured, reduced to what an appliance can check on a packet:
//!
//! ```json
//! {"Version": "2012-10-17",
//!  "Statement": [{"Effect": "Allow",
//!                 "Principal": "*" | "111111111111" | ["111111111111", …] | {"AWS": …},
//!                 "SourceCidr": ["10.1.0.0/24"], "Port": [80, "8000-8100"],
//!                 "Protocol": ["tcp", "udp"]}]}
//! ```
//!
//! A missing condition matches anything. Evaluation: a matching `Deny` wins; otherwise a
//! matching `Allow` allows; otherwise the flow is denied. No document at all allows
//! everything ([`Policy::allow_all`]).
//!
//! This module owns parsing and evaluation only; it never stores documents (the model keeps
//! them raw in [`crate::model::Endpoint::policy`]) and [`Policy::allows`] never allocates.

use std::fmt;
use std::net::Ipv4Addr;

use serde_json::{Map, Value};

use crate::ids::AccountId;
use crate::net::IpNet;

/// The error code a malformed document is answered with.
pub const POLICY_ERROR_CODE: &str = "InvalidPolicyDocument";

/// Most statements a document may hold; bounds the per-flow evaluation cost.
pub const MAX_STATEMENTS: usize = 64;

/// Protocol bits of [`CompiledStatement::protos`].
const PROTO_TCP: u8 = 1;
const PROTO_UDP: u8 = 2;
const PROTO_ICMP: u8 = 4;
const PROTO_ANY: u8 = u8::MAX;

/// Why a policy document was refused. Prints `Statement[1].Port[0]: <problem>` (or
/// `<field>: <problem>` for a top-level field); code [`POLICY_ERROR_CODE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// Where in the document, e.g. `Statement[1].Port[0]`.
    pub at: String,
    /// What is wrong there.
    pub problem: String,
}

impl PolicyError {
    fn new(at: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            at: at.into(),
            problem: problem.into(),
        }
    }

    /// The EC2-style error code: `InvalidPolicyDocument`.
    pub fn code(&self) -> &'static str {
        POLICY_ERROR_CODE
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.at, self.problem)
        }
    }
}

impl std::error::Error for PolicyError {}

/// A flow's source, as a statement's `SourceCidr` reads it.
#[derive(Debug, Clone, Copy)]
enum Source {
    V4(u32),
    V6(u128),
}

/// One statement, compiled: every condition is a short array or a bitmask, so matching is
/// a few comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledStatement {
    /// `Effect`: true for Allow, false for Deny.
    pub allow: bool,
    /// `Principal`: the accounts it applies to; `None` = every account (`"*"`).
    pub principals: Option<Vec<AccountId>>,
    /// `SourceCidr`'s IPv4 prefixes as (network, mask), and its IPv6 ones; both empty =
    /// any source.
    pub cidrs: Vec<(u32, u32)>,
    pub cidrs6: Vec<(u128, u128)>,
    /// `Port` as inclusive ranges; empty = any port (and any protocol, ported or not).
    pub ports: Vec<(u16, u16)>,
    /// `Protocol` as a bitmask (tcp 1, udp 2, icmp 4); all bits = any protocol.
    pub protos: u8,
}

impl CompiledStatement {
    fn matches(&self, principal: AccountId, src: Source, proto: u8, dst_port: u16) -> bool {
        let bit = match proto {
            6 => PROTO_TCP,
            17 => PROTO_UDP,
            1 | 58 => PROTO_ICMP,
            _ => 0,
        };
        if self.protos != PROTO_ANY && self.protos & bit == 0 {
            return false;
        }
        if let Some(p) = &self.principals {
            if !p.contains(&principal) {
                return false;
            }
        }
        if !(self.cidrs.is_empty() && self.cidrs6.is_empty()) {
            let inside = match src {
                Source::V4(a) => self.cidrs.iter().any(|&(n, m)| a & m == n),
                Source::V6(a) => self.cidrs6.iter().any(|&(n, m)| a & m == n),
            };
            if !inside {
                return false;
            }
        }
        if !self.ports.is_empty() {
            // Only TCP and UDP have ports: a port condition never matches anything else.
            if bit != PROTO_TCP && bit != PROTO_UDP {
                return false;
            }
            if !self
                .ports
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&dst_port))
            {
                return false;
            }
        }
        true
    }
}

/// A compiled endpoint policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    statements: Vec<CompiledStatement>,
}

impl Default for Policy {
    fn default() -> Self {
        Self::allow_all()
    }
}

impl Policy {
    /// The policy of an endpoint without a document: everything is allowed.
    pub fn allow_all() -> Self {
        Self {
            statements: vec![CompiledStatement {
                allow: true,
                principals: None,
                cidrs: Vec::new(),
                cidrs6: Vec::new(),
                ports: Vec::new(),
                protos: PROTO_ANY,
            }],
        }
    }

    /// The compiled policy of an endpoint's optional document.
    pub fn for_document(doc: Option<&Value>) -> Result<Self, PolicyError> {
        doc.map_or_else(|| Ok(Self::allow_all()), Self::parse)
    }

    /// The compiled statements, in document order.
    pub fn statements(&self) -> &[CompiledStatement] {
        &self.statements
    }

    /// Parses and compiles a document. Unknown fields, wrong types, unknown effects and
    /// malformed principals, prefixes, ports or protocols are errors naming the statement
    /// and field.
    pub fn parse(doc: &Value) -> Result<Self, PolicyError> {
        let top = doc
            .as_object()
            .ok_or_else(|| PolicyError::new("", "the policy document must be a JSON object"))?;
        let mut statements = None;
        for (key, value) in top {
            match key.as_str() {
                "Version" => {
                    if value.as_str().is_none() {
                        return Err(PolicyError::new("Version", "must be a string"));
                    }
                }
                "Id" => {
                    if value.as_str().is_none() {
                        return Err(PolicyError::new("Id", "must be a string"));
                    }
                }
                "Statement" => statements = Some(value),
                other => {
                    return Err(PolicyError::new(
                        other,
                        "unknown field (expected Version, Id, Statement)",
                    ))
                }
            }
        }
        let statements = statements.ok_or_else(|| PolicyError::new("Statement", "is required"))?;
        let list: Vec<&Value> = match statements {
            Value::Array(a) => a.iter().collect(),
            Value::Object(_) => vec![statements],
            _ => {
                return Err(PolicyError::new(
                    "Statement",
                    "must be an array of statements or one statement object",
                ))
            }
        };
        if list.len() > MAX_STATEMENTS {
            return Err(PolicyError::new(
                "Statement",
                format!("at most {MAX_STATEMENTS} statements are allowed"),
            ));
        }
        let statements = list
            .iter()
            .enumerate()
            .map(|(i, s)| compile_statement(i, s))
            .collect::<Result<_, _>>()?;
        Ok(Self { statements })
    }

    /// Whether a new flow from `principal` (the endpoint owner's account) at `src` with IP
    /// protocol `proto` to `dst_port` is allowed: a matching Deny wins, else some matching
    /// Allow is needed. Allocation-free.
    pub fn allows(&self, principal: AccountId, src: Ipv4Addr, proto: u8, dst_port: u16) -> bool {
        self.decide(principal, Source::V4(u32::from(src)), proto, dst_port)
    }

    /// [`Policy::allows`] for a flow from IPv6 source `src` (ICMPv6 is `icmp`): a
    /// `SourceCidr` matches it by its IPv6 prefixes.
    pub fn allows_ipv6(&self, principal: AccountId, src: u128, proto: u8, dst_port: u16) -> bool {
        self.decide(principal, Source::V6(src), proto, dst_port)
    }

    fn decide(&self, principal: AccountId, src: Source, proto: u8, dst_port: u16) -> bool {
        let mut allowed = false;
        for s in &self.statements {
            if s.matches(principal, src, proto, dst_port) {
                if !s.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }
}

fn compile_statement(i: usize, s: &Value) -> Result<CompiledStatement, PolicyError> {
    let at = format!("Statement[{i}]");
    let obj: &Map<String, Value> = s
        .as_object()
        .ok_or_else(|| PolicyError::new(&at, "must be an object"))?;
    let mut effect = None;
    let mut st = CompiledStatement {
        allow: true,
        principals: None,
        cidrs: Vec::new(),
        cidrs6: Vec::new(),
        ports: Vec::new(),
        protos: PROTO_ANY,
    };
    for (key, value) in obj {
        let field = format!("{at}.{key}");
        match key.as_str() {
            "Sid" => {
                if value.as_str().is_none() {
                    return Err(PolicyError::new(field, "must be a string"));
                }
            }
            "Effect" => {
                effect = Some(match value.as_str() {
                    Some("Allow") => true,
                    Some("Deny") => false,
                    _ => return Err(PolicyError::new(field, "must be \"Allow\" or \"Deny\"")),
                });
            }
            "Principal" => st.principals = parse_principals(&field, value)?,
            "SourceCidr" => {
                for (j, v) in list(&field, value)?.iter().enumerate() {
                    let item = format!("{field}[{j}]");
                    let net: IpNet = v.as_str().and_then(|t| t.parse().ok()).ok_or_else(|| {
                        PolicyError::new(
                            item,
                            "must be an IPv4 prefix like \"10.1.0.0/24\" or an IPv6 one \
                                 like \"fd00:c1::/64\"",
                        )
                    })?;
                    match net {
                        IpNet::V4(n) => {
                            st.cidrs
                                .push((u32::from(n.network()), u32::from(n.netmask())));
                        }
                        IpNet::V6(n) => st.cidrs6.push((u128::from(n.network()), n.mask())),
                    }
                }
            }
            "Port" => {
                for (j, v) in list(&field, value)?.iter().enumerate() {
                    st.ports
                        .push(parse_port_range(&format!("{field}[{j}]"), v)?);
                }
            }
            "Protocol" => {
                let mut bits = 0;
                for (j, v) in list(&field, value)?.iter().enumerate() {
                    bits |= match v.as_str() {
                        Some("tcp") => PROTO_TCP,
                        Some("udp") => PROTO_UDP,
                        Some("icmp") => PROTO_ICMP,
                        _ => {
                            return Err(PolicyError::new(
                                format!("{field}[{j}]"),
                                "must be \"tcp\", \"udp\" or \"icmp\"",
                            ))
                        }
                    };
                }
                st.protos = bits;
            }
            _ => {
                return Err(PolicyError::new(
                    field,
                    "unknown field (expected Sid, Effect, Principal, SourceCidr, Port, Protocol)",
                ))
            }
        }
    }
    st.allow = effect.ok_or_else(|| PolicyError::new(format!("{at}.Effect"), "is required"))?;
    Ok(st)
}

/// A non-empty array, or one value standing for an array of one.
fn list<'a>(field: &str, value: &'a Value) -> Result<Vec<&'a Value>, PolicyError> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.is_empty() {
        return Err(PolicyError::new(field, "must not be empty"));
    }
    Ok(items)
}

/// `"*"`, an account id, an IAM ARN of an account, a list of those, or `{"AWS": …}`.
fn parse_principals(field: &str, value: &Value) -> Result<Option<Vec<AccountId>>, PolicyError> {
    let value = match value {
        Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| k.as_str() != "AWS") {
                return Err(PolicyError::new(
                    format!("{field}.{k}"),
                    "unknown field (expected AWS)",
                ));
            }
            m.get("AWS")
                .ok_or_else(|| PolicyError::new(format!("{field}.AWS"), "is required"))?
        }
        other => other,
    };
    let mut accounts = Vec::new();
    for (j, v) in list(field, value)?.iter().enumerate() {
        let item = || format!("{field}[{j}]");
        let text = v
            .as_str()
            .ok_or_else(|| PolicyError::new(item(), "must be a string"))?;
        if text == "*" {
            return Ok(None);
        }
        let account = parse_account(text).ok_or_else(|| {
            PolicyError::new(
                item(),
                format!(
                    "{text:?} is not \"*\", a 12-digit account id or arn:aws:iam::<account>:root"
                ),
            )
        })?;
        if !accounts.contains(&account) {
            accounts.push(account);
        }
    }
    Ok(Some(accounts))
}

/// An account id, or the root ARN of an account (`arn:aws:iam::111111111111:root`). Any
/// other ARN (a user, a role, a suffix) names less than the whole account, which the
/// appliance cannot tell apart on a packet, so it grants nothing and is refused.
pub fn parse_account(text: &str) -> Option<AccountId> {
    if let Some(rest) = text.strip_prefix("arn:aws:iam::") {
        return rest.strip_suffix(":root")?.parse().ok();
    }
    text.parse().ok()
}

/// Checks that every statement of `doc` can apply to traffic of the endpoint owner
/// `owner` (the only principal a packet through the endpoint can have): a statement whose
/// `Principal` names only other accounts could never match and is refused, naming it.
pub fn check_principals(doc: &Value, owner: AccountId) -> Result<(), PolicyError> {
    let policy = Policy::parse(doc)?;
    for (i, s) in policy.statements.iter().enumerate() {
        if let Some(p) = &s.principals {
            if !p.contains(&owner) {
                let named: Vec<String> = p.iter().map(ToString::to_string).collect();
                return Err(PolicyError::new(
                    format!("Statement[{i}].Principal"),
                    format!(
                        "names only {} but traffic through this endpoint always comes from                          its owner {owner}: the statement could never match",
                        named.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `80`, `"80"` or `"8000-8100"`, each port 1..=65535.
fn parse_port_range(field: &str, v: &Value) -> Result<(u16, u16), PolicyError> {
    let err = || {
        PolicyError::new(
            field,
            "must be a port 1..=65535 or a range \"low-high\" of such ports",
        )
    };
    let port = |s: &str| -> Option<u16> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|&p| p != 0)
    };
    let (lo, hi) = match v {
        Value::Number(n) => {
            let p = n
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0)
                .ok_or_else(err)?;
            (p, p)
        }
        Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (port(a).ok_or_else(err)?, port(b).ok_or_else(err)?),
            None => {
                let p = port(s).ok_or_else(err)?;
                (p, p)
            }
        },
        _ => return Err(err()),
    };
    if lo > hi {
        return Err(PolicyError::new(field, format!("range {lo}-{hi} is empty")));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const A: &str = "111111111111";
    const B: &str = "222222222222";

    fn acct(s: &str) -> AccountId {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn policy(doc: Value) -> Policy {
        Policy::parse(&doc).unwrap()
    }

    fn error(doc: Value) -> String {
        let e = Policy::parse(&doc).unwrap_err();
        assert_eq!(e.code(), "InvalidPolicyDocument");
        e.to_string()
    }

    #[test]
    fn allow_all_allows_everything() {
        let p = Policy::allow_all();
        assert!(p.allows(acct(A), ip("10.1.0.5"), 6, 80));
        assert!(p.allows(acct(B), ip("192.0.2.1"), 1, 0));
        assert!(p.allows(acct(B), ip("192.0.2.1"), 47, 0));
        assert_eq!(Policy::for_document(None).unwrap(), p);
    }

    #[test]
    fn no_matching_allow_denies() {
        let p = policy(json!({"Statement": []}));
        assert!(!p.allows(acct(A), ip("10.1.0.5"), 6, 80));
        let p = policy(json!({"Statement": [{"Effect": "Allow", "Port": [443]}]}));
        assert!(!p.allows(acct(A), ip("10.1.0.5"), 6, 80));
        assert!(p.allows(acct(A), ip("10.1.0.5"), 6, 443));
    }

    #[test]
    fn explicit_deny_wins() {
        let p = policy(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*"},
            {"Effect": "Deny", "SourceCidr": ["10.1.0.128/25"]},
        ]}));
        assert!(p.allows(acct(A), ip("10.1.0.5"), 6, 80));
        assert!(!p.allows(acct(A), ip("10.1.0.200"), 6, 80));
        // Order does not matter.
        let p = policy(json!({"Statement": [
            {"Effect": "Deny", "SourceCidr": "10.1.0.128/25"},
            {"Effect": "Allow"},
        ]}));
        assert!(!p.allows(acct(A), ip("10.1.0.200"), 17, 53));
        assert!(p.allows(acct(A), ip("10.1.0.1"), 17, 53));
    }

    #[test]
    fn principals() {
        for principal in [
            json!(A),
            json!([A]),
            json!({"AWS": A}),
            json!({"AWS": [format!("arn:aws:iam::{A}:root")]}),
        ] {
            let p = policy(json!({"Statement": [{"Effect": "Allow", "Principal": principal}]}));
            assert!(p.allows(acct(A), ip("10.0.0.1"), 6, 1), "{principal}");
            assert!(!p.allows(acct(B), ip("10.0.0.1"), 6, 1), "{principal}");
        }
        let p = policy(json!({"Statement": [{"Effect": "Allow", "Principal": [A, "*"]}]}));
        assert!(p.allows(acct(B), ip("10.0.0.1"), 6, 1));
        assert_eq!(p.statements()[0].principals, None);
        let p = policy(json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}}]}));
        assert!(p.allows(acct(B), ip("10.0.0.1"), 6, 1));
    }

    #[test]
    fn ports_and_protocols() {
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Port": [80, "8000-8100"], "Protocol": ["tcp"]},
            {"Effect": "Allow", "Protocol": "icmp"},
        ]}));
        assert!(p.allows(acct(A), ip("10.0.0.1"), 6, 80));
        assert!(p.allows(acct(A), ip("10.0.0.1"), 6, 8000));
        assert!(p.allows(acct(A), ip("10.0.0.1"), 6, 8100));
        assert!(!p.allows(acct(A), ip("10.0.0.1"), 6, 8101));
        assert!(!p.allows(acct(A), ip("10.0.0.1"), 17, 80), "udp not listed");
        assert!(p.allows(acct(A), ip("10.0.0.1"), 1, 0), "icmp");
        assert!(!p.allows(acct(A), ip("10.0.0.1"), 47, 0), "gre");
        // A port condition never matches a protocol without ports.
        let p = policy(json!({"Statement": [{"Effect": "Allow", "Port": "1-65535"}]}));
        assert!(!p.allows(acct(A), ip("10.0.0.1"), 1, 0));
        assert!(p.allows(acct(A), ip("10.0.0.1"), 17, 5));
        let p = policy(json!({"Statement": [
            {"Effect": "Allow"},
            {"Effect": "Deny", "Port": 22},
        ]}));
        assert!(p.allows(acct(A), ip("10.0.0.1"), 1, 22), "icmp unaffected");
        assert!(!p.allows(acct(A), ip("10.0.0.1"), 6, 22));
    }

    #[test]
    fn source_cidrs() {
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "SourceCidr": ["10.1.0.0/24", "192.168.7.7/32", "10.1.0.9/24"]},
        ]}));
        assert!(p.allows(acct(A), ip("10.1.0.255"), 6, 1));
        assert!(p.allows(acct(A), ip("192.168.7.7"), 6, 1));
        assert!(!p.allows(acct(A), ip("192.168.7.8"), 6, 1));
        assert!(!p.allows(acct(A), ip("10.1.1.0"), 6, 1));
        let p = policy(json!({"Statement": [{"Effect": "Allow", "SourceCidr": "0.0.0.0/0"}]}));
        assert!(p.allows(acct(A), ip("203.0.113.9"), 6, 1));
    }

    #[test]
    fn an_ipv6_source_matches_ipv6_prefixes_only_and_icmpv6_is_icmp() {
        let host: u128 = 0xfd00_00c1_0000_0000_0000_0000_0000_0010;
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "Protocol": "icmp"},
            {"Effect": "Deny", "SourceCidr": "0.0.0.0/0", "Protocol": "icmp"},
        ]}));
        assert!(!p.allows(acct(A), ip("10.1.0.5"), 1, 0), "the IPv4 deny");
        assert!(
            p.allows_ipv6(acct(A), host, 58, 0),
            "no IPv4 prefix holds it"
        );
        assert!(!p.allows_ipv6(acct(A), host, 6, 80), "tcp is not allowed");
        let p = policy(json!({"Statement": [{"Effect": "Allow", "SourceCidr": "0.0.0.0/0"}]}));
        assert!(!p.allows_ipv6(acct(A), host, 58, 0));
        // IPv6 prefixes, beside IPv4 ones in the same list.
        let p = policy(json!({"Statement": [
            {"Effect": "Allow", "SourceCidr": ["10.1.0.0/24", "fd00:c1::/64"]},
            {"Effect": "Deny", "SourceCidr": "fd00:c1::10/128", "Port": 22},
        ]}));
        assert!(p.allows(acct(A), ip("10.1.0.5"), 6, 22));
        assert!(p.allows_ipv6(acct(A), host, 6, 80));
        assert!(!p.allows_ipv6(acct(A), host, 6, 22), "the /128 deny");
        assert!(p.allows_ipv6(acct(A), host + 1, 6, 22));
        assert!(
            !p.allows_ipv6(acct(A), host ^ (1 << 80), 6, 80),
            "outside the /64"
        );
        assert!(
            error(json!({"Statement": [{"Effect": "Allow", "SourceCidr": "fd00::/129"}]}))
                .contains("Statement[0].SourceCidr[0]"),
        );
    }

    #[test]
    fn parse_errors_name_the_statement_and_field() {
        assert_eq!(
            error(json!([])),
            "the policy document must be a JSON object"
        );
        assert_eq!(error(json!({})), "Statement: is required");
        assert_eq!(
            error(json!({"Statement": [], "Foo": 1})),
            "Foo: unknown field (expected Version, Id, Statement)"
        );
        assert_eq!(
            error(json!({"Statement": 3})).split(':').next(),
            Some("Statement")
        );
        assert_eq!(
            error(json!({"Statement": [{"Effect": "Allow"}, {}]})),
            "Statement[1].Effect: is required"
        );
        assert_eq!(
            error(json!({"Statement": [{"Effect": "allow"}]})),
            "Statement[0].Effect: must be \"Allow\" or \"Deny\""
        );
        assert!(
            error(json!({"Statement": [{"Effect": "Allow", "Action": "*"}]}))
                .starts_with("Statement[0].Action: unknown field")
        );
        assert!(
            error(json!({"Statement": [{"Effect": "Allow", "Principal": ["1234"]}]}))
                .starts_with("Statement[0].Principal[0]: \"1234\" is not")
        );
        assert!(
            error(json!({"Statement": [{"Effect": "Allow", "Principal": {"IAM": "*"}}]}))
                .starts_with("Statement[0].Principal.IAM: unknown field")
        );
        assert_eq!(
            error(json!({"Statement": [{"Effect": "Allow", "Principal": []}]})),
            "Statement[0].Principal: must not be empty"
        );
        assert!(
            error(json!({"Statement": [{"Effect": "Allow", "SourceCidr": ["10.0.0.0"]}]}))
                .starts_with("Statement[0].SourceCidr[0]: must be an IPv4 prefix")
        );
        for bad in [
            json!(0),
            json!(65536),
            json!("x"),
            json!("80-"),
            json!(-1),
            json!(true),
        ] {
            let msg = error(json!({"Statement": [{"Effect": "Deny", "Port": [80, bad]}]}));
            assert!(
                msg.starts_with("Statement[0].Port[1]: must be a port"),
                "{msg}"
            );
        }
        assert_eq!(
            error(json!({"Statement": [{"Effect": "Deny", "Port": ["90-80"]}]})),
            "Statement[0].Port[0]: range 90-80 is empty"
        );
        assert!(
            error(json!({"Statement": [{"Effect": "Deny", "Protocol": ["sctp"]}]}))
                .starts_with("Statement[0].Protocol[0]: must be")
        );
        let many: Vec<Value> = (0..=MAX_STATEMENTS)
            .map(|_| json!({"Effect": "Allow"}))
            .collect();
        assert!(error(json!({"Statement": many})).contains("at most 64"));
    }

    #[test]
    fn single_statement_object_is_accepted() {
        let p = policy(json!({"Statement": {"Effect": "Allow", "Principal": B}}));
        assert!(p.allows(acct(B), ip("10.0.0.1"), 6, 1));
        assert!(!p.allows(acct(A), ip("10.0.0.1"), 6, 1));
    }

    #[test]
    fn accounts_from_arns() {
        assert_eq!(parse_account(A), Some(acct(A)));
        assert_eq!(
            parse_account(&format!("arn:aws:iam::{A}:root")),
            Some(acct(A))
        );
        assert_eq!(parse_account("arn:aws:iam::12:root"), None);
        assert_eq!(parse_account("arn:aws:iam::111111111111"), None);
        assert_eq!(parse_account("*"), None);
        // Only the account's root ARN grants the account: users, roles and any other
        // suffix name less than the account.
        for arn in [
            format!("arn:aws:iam::{A}:user/alice"),
            format!("arn:aws:iam::{A}:role/x"),
            format!("arn:aws:iam::{A}:rootx"),
            format!("arn:aws:iam::{A}:root:extra"),
            format!("arn:aws:iam::{A}:"),
        ] {
            assert_eq!(parse_account(&arn), None, "{arn}");
        }
    }

    #[test]
    fn statements_that_can_never_match_the_owner_are_refused() {
        let owner = acct(A);
        let ok = json!({"Statement": [
            {"Effect": "Allow", "Principal": "*"},
            {"Effect": "Deny", "Principal": [A, B], "SourceCidr": "10.0.0.0/8"},
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{A}:root")}},
        ]});
        check_principals(&ok, owner).unwrap();
        let never = json!({"Statement": [
            {"Effect": "Allow", "Principal": "*"},
            {"Effect": "Allow", "Principal": B},
        ]});
        let e = check_principals(&never, owner).unwrap_err();
        assert_eq!(e.at, "Statement[1].Principal");
        assert!(
            e.problem.contains(B) && e.problem.contains("never match"),
            "{e}"
        );
        assert_eq!(e.code(), "InvalidPolicyDocument");
    }
}
