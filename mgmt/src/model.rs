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
//!
//! The types (`objects`), the errors (`errors`) and the rules (`validate`) have a file each
//! and are re-exported here, so `model::X` stays the one path to each. The model uses
//! [`crate::policy`] (an endpoint's policy document must compile) and [`crate::net`];
//! neither may import from the model, so no two modules import each other.

mod chunked;
mod errors;
mod index;
mod objects;
mod validate;

pub use crate::ids::{
    is_valid_region, service_name, AccountId, EndpointId, ParseError, SecurityGroupId, ServiceId,
    ServiceName, ValueKind, VpcId, SERVICE_NAME_PREFIX,
};
pub use chunked::{Chunked, Iter as ChunkedIter, ObjectList, Place, CHUNK};
pub use errors::{
    no_ipv4_prefix, AddressHolder, AddressRole, BadPath, KeyPath, ModelError, Object, PathSegment,
    Reserved,
};
pub use index::{EndpointIndex, EndpointKey, IndexView};
pub use objects::{
    health_limits, Account, ClientToken, ConnectionLimit, Declared, Endpoint, EndpointState,
    HealthCheckProtocol, IngressRule, IpAddressType, IpFamily, Listener, Matcher, Principal,
    Protocol, RuleProtocol, SecurityGroup, Service, State, StaticNeighbour, StaticNeighbour6,
    Target, TargetState, VpcAttachment, DEFAULT_HEALTHY, DEFAULT_INTERVAL_S, DEFAULT_TIMEOUT_S,
    DEFAULT_UNHEALTHY, MATCHER_CODES, MSS_CLAMP_RANGE,
};
pub use validate::validate_attachments;

#[cfg(test)]
mod tests;
