//! privlink management: the object model and its validation, and the configuration file.
//!
//! - [`model`]: services, endpoints, accounts, VPC attachments, and the rules a set of them
//!   must satisfy before the data plane builds a snapshot from it.
//! - [`ids`]: the validated identifiers (`vpc-…`, `vpce-svc-…`, …) and their one error type.
//! - [`net`]: IPv4 prefixes and Ethernet addresses, beneath both the model and [`policy`].
//! - [`config`]: the TOML file of `privlinkd`, its defaults and the embedded demo topology.
//!
//! This crate never touches packets or DPDK; the data plane depends on it, not the reverse.
#![deny(unsafe_code)]

pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod fasthash;
pub mod ids;
pub mod model;
pub mod net;
pub mod persist;
pub mod policy;
pub mod protocol;
pub mod quota;
pub mod server;
pub mod store;

#[cfg(test)]
mod testing;

pub use config::{Config, ConfigError};
pub use model::{ModelError, State};
