//! Reading a request's arguments: a JSON object with EC2-style PascalCase keys.
//!
//! Every operation names the keys it accepts up front, so an unknown key is refused before
//! anything is read; every error names the key (with its path inside arrays and objects,
//! `Listeners[1].Targets[0].Port`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use super::ApiError;
use crate::model::{
    AccountId, EndpointId, HealthCheckProtocol, IpAddressType, IpFamily, Matcher, ParseError,
    Principal, Protocol, SecurityGroupId, ServiceId, ServiceName, VpcId,
};
use crate::net::{Ipv4Net, Ipv6Net};
use crate::policy::parse_account;

/// A value that can be read from an argument string.
pub(super) trait FromArg: Sized {
    /// The value, or (error code, message) for a malformed string.
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)>;
}

fn parse_error(e: ParseError) -> (&'static str, String) {
    (e.code(), e.to_string())
}

macro_rules! from_arg_via_parse_error {
    ($($ty:ty),*) => {$(
        impl FromArg for $ty {
            fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
                s.parse().map_err(parse_error)
            }
        }
    )*};
}

from_arg_via_parse_error!(VpcId, ServiceId, EndpointId, SecurityGroupId, ServiceName);

/// Enumerations, whose names a request may spell in any case (`TCP`, `DualStack`).
macro_rules! from_arg_any_case {
    ($($ty:ty),*) => {$(
        impl FromArg for $ty {
            fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
                s.to_ascii_lowercase().parse().map_err(parse_error)
            }
        }
    )*};
}

from_arg_any_case!(Protocol, HealthCheckProtocol, IpAddressType, IpFamily);

impl FromArg for Ipv4Addr {
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        s.parse().map_err(|_| {
            (
                "InvalidParameterValue",
                format!("invalid IPv4 address {s:?}"),
            )
        })
    }
}

impl FromArg for Ipv6Addr {
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        s.parse().map_err(|_| {
            (
                "InvalidParameterValue",
                format!("invalid IPv6 address {s:?}"),
            )
        })
    }
}

impl FromArg for IpAddr {
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        s.parse()
            .map_err(|_| ("InvalidParameterValue", format!("invalid IP address {s:?}")))
    }
}

impl FromArg for Ipv4Net {
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        s.parse().map_err(parse_error)
    }
}

impl FromArg for Ipv6Net {
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        s.parse().map_err(parse_error)
    }
}

impl FromArg for Matcher {
    /// Says what is wrong with the codes, not only what they should look like.
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        Matcher::parse(s).map_err(|why| {
            (
                "InvalidParameterValue",
                format!("invalid matcher {s:?}: {why}"),
            )
        })
    }
}

impl FromArg for Principal {
    /// `"*"`, an account id, or an IAM ARN of an account (`arn:aws:iam::…:root`).
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        if s == "*" {
            return Ok(Self::Any);
        }
        parse_account(s).map(Self::Account).ok_or_else(|| {
            (
                "InvalidPrincipal",
                format!(
                    "invalid principal {s:?}: expected \"*\", a 12-digit account id or \
                     arn:aws:iam::<account id>:root"
                ),
            )
        })
    }
}

impl FromArg for AccountId {
    fn from_arg(s: &str) -> Result<Self, (&'static str, String)> {
        s.parse().map_err(parse_error)
    }
}

/// The arguments of one request (or one object nested in them).
#[derive(Debug, Clone)]
pub(super) struct Args<'a> {
    map: Option<&'a Map<String, Value>>,
    path: String,
}

impl<'a> Args<'a> {
    /// The request's arguments: an object (or null, for none) with only `allowed` keys.
    pub(super) fn top(v: &'a Value, allowed: &[&str]) -> Result<Self, ApiError> {
        Self::nested(v, String::new(), allowed)
    }

    /// An object at `path` with only `allowed` keys.
    pub(super) fn nested(v: &'a Value, path: String, allowed: &[&str]) -> Result<Self, ApiError> {
        let map = match v {
            Value::Null if path.is_empty() => None,
            Value::Object(m) => Some(m),
            _ => {
                let what = if path.is_empty() {
                    "the arguments"
                } else {
                    &path
                };
                return Err(ApiError::invalid(format!("{what} must be a JSON object")));
            }
        };
        let args = Self { map, path };
        if let Some(m) = map {
            if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
                let expected = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::invalid(format!(
                    "unknown parameter {} (expected: {expected})",
                    args.name(k)
                )));
            }
        }
        Ok(args)
    }

    /// The full name of `key`, e.g. `Listeners[0].Port`.
    pub(super) fn name(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key`; null counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is given.
    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn missing(&self, key: &str) -> ApiError {
        ApiError::new(
            "MissingParameter",
            format!("the request must contain the parameter {}", self.name(key)),
        )
    }

    /// A string.
    pub(super) fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        self.get(key)
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{} must be a string, not {}",
                        self.name(key),
                        type_name(v)
                    ))
                })
            })
            .transpose()
    }

    /// A required string.
    pub(super) fn req_str(&self, key: &str) -> Result<&'a str, ApiError> {
        self.str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A value read from a string.
    pub(super) fn parse<T: FromArg>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.str(key)?
            .map(|s| parse_at(&self.name(key), s))
            .transpose()
    }

    /// A required value read from a string.
    pub(super) fn req_parse<T: FromArg>(&self, key: &str) -> Result<T, ApiError> {
        self.parse(key)?.ok_or_else(|| self.missing(key))
    }

    /// A JSON boolean. The protocol takes exactly the documented types: a string
    /// `"true"` is refused (privlinkctl turns command-line words into booleans).
    pub(super) fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)
            .map(|v| match v {
                Value::Bool(b) => Ok(*b),
                _ => Err(ApiError::invalid(format!(
                    "{} must be a JSON boolean (true or false), not {}",
                    self.name(key),
                    type_name(v)
                ))),
            })
            .transpose()
    }

    /// A JSON integer in `min..=max` (a string of digits is refused).
    pub(super) fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                let n = match v {
                    Value::Number(n) => n.as_i64(),
                    _ => None,
                };
                n.filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "{} must be an integer {min}..={max}",
                        self.name(key)
                    ))
                })
            })
            .transpose()
    }

    /// A JSON integer in `range`, as a `T`.
    pub(super) fn int_in<T>(
        &self,
        key: &str,
        range: RangeInclusive<T>,
    ) -> Result<Option<T>, ApiError>
    where
        T: Copy + Into<i64> + TryFrom<i64>,
    {
        let (min, max) = ((*range.start()).into(), (*range.end()).into());
        Ok(self.int(key, min, max)?.and_then(|n| T::try_from(n).ok()))
    }

    /// A required JSON integer in `range`.
    pub(super) fn req_int_in<T>(&self, key: &str, range: RangeInclusive<T>) -> Result<T, ApiError>
    where
        T: Copy + Into<i64> + TryFrom<i64>,
    {
        self.int_in(key, range)?.ok_or_else(|| self.missing(key))
    }

    /// A port 1..=65535.
    pub(super) fn port(&self, key: &str) -> Result<Option<u16>, ApiError> {
        self.int_in(key, 1..=u16::MAX)
    }

    /// A required port 1..=65535.
    pub(super) fn req_port(&self, key: &str) -> Result<u16, ApiError> {
        self.port(key)?.ok_or_else(|| self.missing(key))
    }

    /// A JSON array, with each item's path. Anything else (a lone string or object where
    /// a list belongs) is refused.
    pub(super) fn list(&self, key: &str) -> Result<Option<Vec<(String, &'a Value)>>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let name = self.name(key);
        let Value::Array(items) = v else {
            return Err(ApiError::invalid(format!(
                "{name} must be a JSON array, not {}",
                type_name(v)
            )));
        };
        Ok(Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{name}[{i}]"), v))
                .collect(),
        ))
    }

    /// A required array.
    pub(super) fn req_list(&self, key: &str) -> Result<Vec<(String, &'a Value)>, ApiError> {
        self.list(key)?.ok_or_else(|| self.missing(key))
    }

    /// An array of values read from strings.
    pub(super) fn parse_list<T: FromArg>(&self, key: &str) -> Result<Option<Vec<T>>, ApiError> {
        self.list(key)?
            .map(|items| {
                items
                    .into_iter()
                    .map(|(path, v)| {
                        let s = v
                            .as_str()
                            .ok_or_else(|| ApiError::invalid(format!("{path} must be a string")))?;
                        parse_at(&path, s)
                    })
                    .collect()
            })
            .transpose()
    }

    /// A required array of values read from strings.
    pub(super) fn req_parse_list<T: FromArg>(&self, key: &str) -> Result<Vec<T>, ApiError> {
        self.parse_list(key)?.ok_or_else(|| self.missing(key))
    }
}

/// What kind of JSON value `v` is, for messages.
pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that `args` is an object (or null) with only `allowed` keys: for the
/// operations the daemon answers itself (`stats`, `flows`), held to the same rule as every
/// other request.
pub fn check_keys(args: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    Args::top(args, allowed).map(|_| ())
}

/// `s`, the value at `path`, read as a `T`.
pub(super) fn parse_at<T: FromArg>(path: &str, s: &str) -> Result<T, ApiError> {
    T::from_arg(s).map_err(|(code, message)| ApiError::new(code, format!("{path}: {message}")))
}
