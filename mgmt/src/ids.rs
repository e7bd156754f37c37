//! Identifiers and the other values that travel as strings.
//!
//! Every id is a validated newtype: once one exists its text form is canonical (lowercase
//! hex, fixed width), so `parse(x.to_string()) == x` always holds and two spellings of one
//! object cannot exist. The ids are stored as numbers in at most 16 bytes, which makes them
//! `Copy` and cheap to hash; the data plane may key tables by them without allocating.
//!
//! This module owns the string forms and their one error type, [`ParseError`]. It must never
//! accept a spelling that it would not print back unchanged.

use std::fmt;
use std::str::FromStr;

/// What kind of value a string failed to parse as; names the value and its expected form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// [`AccountId`]
    AccountId,
    /// [`VpcId`]
    VpcId,
    /// [`ServiceId`]
    ServiceId,
    /// [`EndpointId`]
    EndpointId,
    /// [`SecurityGroupId`]
    SecurityGroupId,
    /// [`ServiceName`]
    ServiceName,
    /// A region name inside a [`ServiceName`].
    Region,
    /// [`crate::model::Principal`]
    Principal,
    /// [`crate::model::Protocol`]
    Protocol,
    /// [`crate::model::EndpointState`]
    EndpointState,
    /// [`crate::model::TargetState`]
    TargetState,
    /// [`crate::net::Ipv4Net`]
    Ipv4Net,
    IpNet,
    /// [`crate::net::Ipv6Net`]
    Ipv6Net,
    /// [`crate::net::MacAddr`]
    MacAddr,
    /// [`crate::config::FileMode`]
    FileMode,
    /// [`crate::model::HealthCheckProtocol`]
    HealthCheckProtocol,
    /// [`crate::model::Matcher`]
    Matcher,
    /// [`crate::model::IpAddressType`]
    IpAddressType,
    /// [`crate::model::IpFamily`]
    IpFamily,
}

impl ValueKind {
    /// The value's name as the error message says it ("vpc id").
    pub const fn name(self) -> &'static str {
        match self {
            Self::AccountId => "account id",
            Self::VpcId => "vpc id",
            Self::ServiceId => "service id",
            Self::EndpointId => "endpoint id",
            Self::SecurityGroupId => "security group id",
            Self::ServiceName => "service name",
            Self::Region => "region",
            Self::Principal => "principal",
            Self::Protocol => "protocol",
            Self::EndpointState => "endpoint state",
            Self::TargetState => "target state",
            Self::Ipv4Net | Self::IpNet => "address/prefix",
            Self::Ipv6Net => "IPv6 address/prefix",
            Self::MacAddr => "mac address",
            Self::FileMode => "file mode",
            Self::HealthCheckProtocol => "health check protocol",
            Self::Matcher => "matcher",
            Self::IpAddressType => "IP address type",
            Self::IpFamily => "IP address type",
        }
    }

    /// The accepted form, in words.
    pub const fn expected(self) -> &'static str {
        match self {
            Self::AccountId => "exactly 12 digits",
            Self::VpcId => "\"vpc-\" followed by 8 or 17 lowercase hex digits",
            Self::ServiceId => "\"vpce-svc-\" followed by 17 lowercase hex digits",
            Self::EndpointId => "\"vpce-\" followed by 17 lowercase hex digits",
            Self::SecurityGroupId => "\"sg-\" followed by 8 or 17 lowercase hex digits",
            Self::ServiceName => "\"com.privlink.vpce.<region>.vpce-svc-<17 hex digits>\"",
            Self::Region => "1 to 32 of a-z, 0-9 and '-', not starting or ending with '-'",
            Self::Principal => "\"*\" or a 12-digit account id",
            Self::Protocol => "\"tcp\" or \"udp\"",
            Self::EndpointState => {
                "one of pendingAcceptance, available, rejected, deleting, deleted, failed"
            }
            Self::TargetState => "\"registered\" or \"draining\"",
            Self::Ipv4Net => "an IPv4 address and a prefix length 0..=32, like \"10.1.0.1/24\"",
            Self::IpNet => {
                "an IPv4 address/prefix like \"10.1.0.0/24\" or an IPv6 one like \"fd00:c1::/64\""
            }
            Self::Ipv6Net => {
                "an IPv6 address and a prefix length 0..=128, like \"fd00:c1::1/64\""
            }
            Self::MacAddr => "six hex octets separated by ':', like \"02:00:00:00:00:01\"",
            Self::FileMode => "an octal permission string up to 0777, like \"0660\"",
            Self::HealthCheckProtocol => "\"tcp\" or \"http\"",
            Self::Matcher => {
                "HTTP status codes 200-599 and ranges of them separated by commas, like \"200-399\" or \"200,302\""
            }
            Self::IpAddressType => "\"ipv4\", \"ipv6\" or \"dualstack\"",
            Self::IpFamily => "\"ipv4\" or \"ipv6\"",
        }
    }

    /// The EC2-style error code a request carrying such a malformed value is answered with.
    pub const fn code(self) -> &'static str {
        match self {
            Self::AccountId => "InvalidAccountId.Malformed",
            Self::VpcId => "InvalidVpcId.Malformed",
            Self::ServiceId => "InvalidServiceId.Malformed",
            Self::EndpointId => "InvalidEndpointId.Malformed",
            Self::SecurityGroupId => "InvalidGroupId.Malformed",
            Self::ServiceName => "InvalidServiceName",
            _ => "InvalidParameterValue",
        }
    }
}

/// A string that is not a valid value of its kind.
///
/// Prints `invalid vpc id "vpc-12": expected "vpc-" followed by 8 or 17 lowercase hex digits`.
/// The input is quoted with escapes and cut at 64 characters, since it may come from an
/// untrusted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    kind: ValueKind,
    input: String,
}

impl ParseError {
    const MAX_ECHO: usize = 64;

    /// A `kind` parse failure of `input`.
    pub fn new(kind: ValueKind, input: &str) -> Self {
        let input = match input.char_indices().nth(Self::MAX_ECHO) {
            Some((cut, _)) => format!("{}…", &input[..cut]),
            None => input.to_owned(),
        };
        Self { kind, input }
    }

    /// What the string should have been.
    pub fn kind(&self) -> ValueKind {
        self.kind
    }

    /// The offending input (possibly cut short).
    pub fn input(&self) -> &str {
        &self.input
    }

    /// EC2-style error code, e.g. `InvalidVpcId.Malformed`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {:?}: expected {}",
            self.kind.name(),
            self.input,
            self.kind.expected()
        )
    }
}

impl std::error::Error for ParseError {}

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr`, so a value has one
/// text form in TOML, JSON and on the command line alike.
macro_rules! serde_as_string {
    ($ty:ty, $expecting:literal) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visitor;
                impl ::serde::de::Visitor<'_> for Visitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: ::serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(Visitor)
            }
        }
    };
}
pub(crate) use serde_as_string;

/// The digits of a hex id: a number of at most 68 bits and whether it is written with 17
/// digits (else 8). Stored in 16 bytes aligned to 8, not as a `u128` (16-aligned, which
/// with the flag would take 32), so ids, and the objects and errors carrying them, stay
/// small. Declaration order makes the derived ordering numeric first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct HexDigits {
    hi: u8,
    lo: u64,
    long: bool,
}

impl HexDigits {
    /// `value` written with 17 digits, if it fits.
    const fn long(value: u128) -> Option<Self> {
        if value >= LIMIT_17 {
            return None;
        }
        // Truncation intended: split into the low 64 bits and the (at most 4) bits above.
        #[allow(clippy::cast_possible_truncation)]
        let (hi, lo) = ((value >> 64) as u8, value as u64);
        Some(Self { hi, lo, long: true })
    }

    /// `value` written with 8 digits.
    const fn short(value: u32) -> Self {
        // Lossless widening; `From` is not usable in a const fn.
        Self {
            hi: 0,
            lo: value as u64,
            long: false,
        }
    }

    const fn get(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }
}

impl fmt::Display for HexDigits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.long {
            write!(f, "{:017x}", self.get())
        } else {
            write!(f, "{:08x}", self.get())
        }
    }
}

/// `prefix` then exactly 17 (or, when `short_ok`, 8) lowercase hex digits.
fn parse_hex_id(s: &str, prefix: &str, short_ok: bool) -> Option<HexDigits> {
    let hex = s.strip_prefix(prefix)?;
    let long = match hex.len() {
        17 => true,
        8 if short_ok => false,
        _ => return None,
    };
    // Checked byte by byte first: from_str_radix would also take '+' and uppercase.
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let value = u128::from_str_radix(hex, 16).ok()?;
    if long {
        HexDigits::long(value)
    } else {
        u32::try_from(value).ok().map(HexDigits::short)
    }
}

/// Largest value that fits 17 hex digits, plus one.
const LIMIT_17: u128 = 1 << 68;

/// An account (principal) id: exactly 12 decimal digits, leading zeros significant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(u64);

impl AccountId {
    /// The id with this number, if it has at most 12 digits.
    pub const fn new(value: u64) -> Option<Self> {
        if value < 1_000_000_000_000 {
            Some(Self(value))
        } else {
            None
        }
    }

    /// The id as a number.
    pub const fn value(self) -> u64 {
        self.0
    }
}

impl FromStr for AccountId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(v) = s.parse() {
                return Ok(Self(v));
            }
        }
        Err(ParseError::new(ValueKind::AccountId, s))
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012}", self.0)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({self})")
    }
}

serde_as_string!(AccountId, "a 12-digit account id string");

/// Declares a hex id that is always 17 digits long.
macro_rules! long_hex_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:ident, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(HexDigits);

        impl $name {
            /// The text before the hex digits.
            pub const PREFIX: &'static str = $prefix;

            /// The id with this number, if it fits 17 hex digits.
            pub const fn new(value: u128) -> Option<Self> {
                match HexDigits::long(value) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The id as a number.
            pub const fn value(self) -> u128 {
                self.0.get()
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                parse_hex_id(s, $prefix, false)
                    .map(Self)
                    .ok_or_else(|| ParseError::new(ValueKind::$kind, s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        serde_as_string!($name, $expecting);
    };
}

/// Declares a hex id that is 8 (older style) or 17 digits long; both forms are distinct ids.
macro_rules! short_or_long_hex_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:ident, $expecting:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(HexDigits);

        impl $name {
            /// The text before the hex digits.
            pub const PREFIX: &'static str = $prefix;

            /// The 17-digit id with this number, if it fits.
            pub const fn new(value: u128) -> Option<Self> {
                match HexDigits::long(value) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The 8-digit id with this number.
            pub const fn new_short(value: u32) -> Self {
                Self(HexDigits::short(value))
            }

            /// The id as a number.
            pub const fn value(self) -> u128 {
                self.0.get()
            }

            /// Whether this is the 17-digit form.
            pub const fn is_long(self) -> bool {
                self.0.long
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                parse_hex_id(s, $prefix, true)
                    .map(Self)
                    .ok_or_else(|| ParseError::new(ValueKind::$kind, s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        serde_as_string!($name, $expecting);
    };
}

short_or_long_hex_id!(
    /// A VPC id: `vpc-` and 8 or 17 lowercase hex digits.
    VpcId,
    "vpc-",
    VpcId,
    "a vpc id string (vpc-<8 or 17 hex digits>)"
);
short_or_long_hex_id!(
    /// A security group id: `sg-` and 8 or 17 lowercase hex digits.
    SecurityGroupId,
    "sg-",
    SecurityGroupId,
    "a security group id string (sg-<8 or 17 hex digits>)"
);
long_hex_id!(
    /// An endpoint service id: `vpce-svc-` and 17 lowercase hex digits.
    ServiceId,
    "vpce-svc-",
    ServiceId,
    "a service id string (vpce-svc-<17 hex digits>)"
);
long_hex_id!(
    /// An interface endpoint id: `vpce-` and 17 lowercase hex digits.
    EndpointId,
    "vpce-",
    EndpointId,
    "an endpoint id string (vpce-<17 hex digits>)"
);

/// The text every service name starts with.
pub const SERVICE_NAME_PREFIX: &str = "com.privlink.vpce.";

/// A service's name, `com.privlink.vpce.<region>.<service id>`, as consumers quote it.
///
/// `region` is not checked here; [`ServiceName::new`] and parsing do check it.
pub fn service_name(region: &str, id: ServiceId) -> String {
    format!("{SERVICE_NAME_PREFIX}{region}.{id}")
}

/// Whether `region` can appear in a service name: 1..=32 of `a-z0-9-`, no '-' at either
/// end (so "local", "us-east-1", "eu-lab-2").
pub fn is_valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 32
        && !region.starts_with('-')
        && !region.ends_with('-')
        && region
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
}

/// A parsed service name: the region and the service id it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceName {
    region: String,
    id: ServiceId,
}

impl ServiceName {
    /// The name of service `id` in `region`, if the region is valid.
    pub fn new(region: &str, id: ServiceId) -> Result<Self, ParseError> {
        if is_valid_region(region) {
            Ok(Self {
                region: region.to_owned(),
                id,
            })
        } else {
            Err(ParseError::new(ValueKind::Region, region))
        }
    }

    /// The region part.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The service id part.
    pub fn id(&self) -> ServiceId {
        self.id
    }
}

impl FromStr for ServiceName {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::new(ValueKind::ServiceName, s);
        let rest = s.strip_prefix(SERVICE_NAME_PREFIX).ok_or_else(err)?;
        // A region holds no '.', so the id is whatever follows the last one.
        let (region, id) = rest.rsplit_once('.').ok_or_else(err)?;
        if !is_valid_region(region) {
            return Err(err());
        }
        let id = id.parse().map_err(|_| err())?;
        Ok(Self {
            region: region.to_owned(),
            id,
        })
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SERVICE_NAME_PREFIX}{}.{}", self.region, self.id)
    }
}

serde_as_string!(
    ServiceName,
    "a service name string (com.privlink.vpce.<region>.<service id>)"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn good<T: FromStr + fmt::Display>(s: &str) {
        match s.parse::<T>() {
            Ok(v) => assert_eq!(v.to_string(), s, "{s} must print back unchanged"),
            Err(_) => panic!("{s} must parse"),
        }
    }

    fn bad<T: FromStr<Err = ParseError> + fmt::Debug>(s: &str, kind: ValueKind) {
        let e = s.parse::<T>().expect_err(s);
        assert_eq!(e.kind(), kind, "{s}");
    }

    #[test]
    fn account_ids() {
        good::<AccountId>("111111111111");
        good::<AccountId>("000000000001");
        assert_eq!(
            "000000000001".parse::<AccountId>().unwrap(),
            AccountId::new(1).unwrap()
        );
        for s in [
            "",
            "11111111111",
            "1111111111111",
            "11111111111a",
            "+11111111111",
            " 111111111111",
            "-11111111111",
            "１１１１１１１１１１１１",
        ] {
            bad::<AccountId>(s, ValueKind::AccountId);
        }
        assert_eq!(
            AccountId::new(999_999_999_999).unwrap().value(),
            999_999_999_999
        );
        assert!(AccountId::new(1_000_000_000_000).is_none());
    }

    #[test]
    fn vpc_ids() {
        good::<VpcId>("vpc-0c0000000000000c1");
        good::<VpcId>("vpc-1a2b3c4d");
        good::<VpcId>("vpc-00000000");
        let short: VpcId = "vpc-0000000a".parse().unwrap();
        let long: VpcId = "vpc-0000000000000000a".parse().unwrap();
        assert_ne!(short, long, "8- and 17-digit forms are different ids");
        assert!(!short.is_long() && long.is_long());
        assert_eq!(VpcId::new_short(0xa), short);
        assert_eq!(VpcId::new(0xa).unwrap(), long);
        for s in [
            "",
            "vpc-",
            "vpc-1a2b3c4",
            "vpc-1a2b3c4d5",
            "vpc-0C0000000000000c1",
            "vpc-0c0000000000000c",
            "vpc-0c0000000000000c12",
            "vpc-0g0000000000000c1",
            "VPC-1a2b3c4d",
            "vpc_1a2b3c4d",
            "vpc-+a2b3c4d",
            "subnet-1a2b3c4d",
        ] {
            bad::<VpcId>(s, ValueKind::VpcId);
        }
    }

    #[test]
    fn security_group_ids() {
        good::<SecurityGroupId>("sg-1a2b3c4d");
        good::<SecurityGroupId>("sg-0123456789abcdef0");
        for s in [
            "sg-",
            "sg-1a2b3c4",
            "sg-0123456789ABCDEF0",
            "sgr-1a2b3c4d",
            "sg-1a2b3c4d ",
        ] {
            bad::<SecurityGroupId>(s, ValueKind::SecurityGroupId);
        }
    }

    #[test]
    fn service_ids() {
        good::<ServiceId>("vpce-svc-0d0000000000000d1");
        good::<ServiceId>("vpce-svc-fffffffffffffffff");
        assert_eq!(
            ServiceId::new(LIMIT_17 - 1).unwrap().to_string(),
            "vpce-svc-fffffffffffffffff"
        );
        assert!(ServiceId::new(LIMIT_17).is_none());
        for s in [
            "vpce-svc-1a2b3c4d",
            "vpce-svc-0d0000000000000d",
            "vpce-svc-0d0000000000000d12",
            "vpce-svc-0D0000000000000d1",
            "vpce-0d0000000000000d1",
            "svc-0d0000000000000d1",
        ] {
            bad::<ServiceId>(s, ValueKind::ServiceId);
        }
    }

    #[test]
    fn endpoint_ids() {
        good::<EndpointId>("vpce-0e0000000000000e1");
        for s in [
            "vpce-1a2b3c4d",
            "vpce-svc-0d0000000000000d1",
            "vpce-0e0000000000000e",
            "vpce-0e0000000000000E1",
            "vpc-0e0000000000000e1",
        ] {
            bad::<EndpointId>(s, ValueKind::EndpointId);
        }
    }

    #[test]
    fn service_names() {
        let id: ServiceId = "vpce-svc-0d0000000000000d1".parse().unwrap();
        let s = service_name("local", id);
        assert_eq!(s, "com.privlink.vpce.local.vpce-svc-0d0000000000000d1");
        let n: ServiceName = s.parse().unwrap();
        assert_eq!((n.region(), n.id()), ("local", id));
        assert_eq!(n.to_string(), s);
        good::<ServiceName>("com.privlink.vpce.us-east-1.vpce-svc-0123456789abcdef0");
        assert_eq!(ServiceName::new("local", id).unwrap(), n);
        assert_eq!(
            ServiceName::new("Local", id).unwrap_err().kind(),
            ValueKind::Region
        );
        for s in [
            "com.privlink.vpce.vpce-svc-0d0000000000000d1",
            "com.privlink.vpce..vpce-svc-0d0000000000000d1",
            "com.privlink.vpce.a.b.vpce-svc-0d0000000000000d1",
            "com.privlink.vpce.Local.vpce-svc-0d0000000000000d1",
            "com.privlink.vpce.-x.vpce-svc-0d0000000000000d1",
            "com.privlink.vpce.local.vpce-svc-0d0000000000000d",
            "com.amazonaws.vpce.local.vpce-svc-0d0000000000000d1",
            "vpce-svc-0d0000000000000d1",
        ] {
            bad::<ServiceName>(s, ValueKind::ServiceName);
        }
    }

    #[test]
    fn regions() {
        for r in ["local", "us-east-1", "a", "eu-lab-2"] {
            assert!(is_valid_region(r), "{r}");
        }
        for r in ["", "-a", "a-", "a.b", "A", "a b", &"a".repeat(33)] {
            assert!(!is_valid_region(r), "{r}");
        }
    }

    #[test]
    fn error_message_and_code() {
        let e = "vpc-12".parse::<VpcId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid vpc id "vpc-12": expected "vpc-" followed by 8 or 17 lowercase hex digits"#
        );
        assert_eq!(e.code(), "InvalidVpcId.Malformed");
        assert_eq!(
            "x".parse::<ServiceId>().unwrap_err().code(),
            "InvalidServiceId.Malformed"
        );
        assert_eq!(
            "x".parse::<EndpointId>().unwrap_err().code(),
            "InvalidEndpointId.Malformed"
        );
        // Untrusted input is echoed escaped and cut short.
        let long = format!("vpc-\n{}", "x".repeat(500));
        let msg = long.parse::<VpcId>().unwrap_err().to_string();
        assert!(msg.contains(r#""vpc-\nxxx"#), "{msg}");
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn serde_string_form() {
        let id: VpcId = serde_json::from_str("\"vpc-0c0000000000000c1\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"vpc-0c0000000000000c1\""
        );
        let e = serde_json::from_str::<AccountId>("111111111111").unwrap_err();
        assert!(e.to_string().contains("12-digit account id string"), "{e}");
        let e = serde_json::from_str::<AccountId>("\"1\"").unwrap_err();
        assert!(
            e.to_string().contains("invalid account id \\\"1\\\"")
                || e.to_string().contains("invalid account id \"1\""),
            "{e}"
        );
    }

    #[test]
    fn ids_are_small() {
        // Ids are copied into snapshots and errors; keep them two words.
        assert_eq!(std::mem::size_of::<VpcId>(), 16);
        assert_eq!(std::mem::size_of::<ServiceId>(), 16);
        assert_eq!(std::mem::size_of::<AccountId>(), 8);
        assert!(std::mem::size_of::<Option<EndpointId>>() <= 16);
    }

    #[test]
    fn ids_order_numerically() {
        let a: ServiceId = "vpce-svc-0ffffffffffffffff".parse().unwrap();
        let b: ServiceId = "vpce-svc-10000000000000000".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.value(), 1 << 64);
    }

    #[test]
    fn debug_is_short() {
        let id: EndpointId = "vpce-0e0000000000000e1".parse().unwrap();
        assert_eq!(format!("{id:?}"), "vpce-0e0000000000000e1");
        assert_eq!(
            format!("{:?}", AccountId::new(7).unwrap()),
            "AccountId(000000000007)"
        );
    }
}
