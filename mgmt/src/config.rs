//! The TOML configuration file of `privlinkd`.
//!
//! This module owns the file's layout, its defaults and its validation; it reuses the model
//! types for everything the model already describes (VPC attachments, accounts, services,
//! endpoints), so one object has one serde form in the file, on the socket and in the
//! state file. Every section and key is optional unless its doc says *required*; unknown
//! keys are errors. [`Config::from_toml_str`] and [`Config::load`] parse *and* validate, so
//! a `Config` obtained from them is known good; a `Config` built or changed in code should
//! go through [`Config::validate`].
//!
//! With no file, `privlinkd` runs [`Config::embedded_default`], parsed from
//! `src/default.toml`, which doubles as the annotated example users copy.
//!
//! Errors name the file, the key path (`vpcs[1].address`) and the problem. Syntax and type
//! errors come from `toml` with its line, column and source excerpt.
//!
//! The section types (`sections`), the checks (`validate`), the EAL lcore-list parser
//! (`lcores`) and the errors (`errors`) have a file each and are re-exported here, so
//! `config::X` stays the one path to each; this file keeps the whole file's type and the
//! bounds its values must stay within.

mod errors;
mod lcores;
mod sections;
mod validate;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use errors::{ConfigError, ConfigProblem};
pub use lcores::EalLcores;
pub use sections::{
    parse_key, ClusterConfig, EalConfig, EndpointConfig, FileMode, FlowLogsConfig, HaConfig,
    HaNode, LimitsConfig, MetricsConfig, MgmtConfig, PortConfig, QuotasConfig, TablesConfig,
    TimeoutsConfig, WorkersConfig,
};

use crate::model::{Account, Declared, SecurityGroup, Service, State, VpcAttachment, VpcId};
use crate::quota;

/// The embedded default configuration (the demo topology), as TOML.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Largest lcore id accepted anywhere. DPDK's `RTE_MAX_LCORE` is 128 by default; 1024
/// leaves room for builds that raise it and still bounds a typo such as `-l 0-4000000`.
pub const MAX_LCORE_ID: u32 = 1023;

/// Longest Unix socket path in bytes: `sun_path` holds 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Longest timeout accepted: a week. Longer is surely a unit mistake, and the data plane
/// converts timeouts to TSC cycles, where a week at 5 GHz still fits comfortably in a u64.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Largest quota accepted: beyond, a quota is no limit, and the store's counts stay far
/// from overflowing.
pub const MAX_QUOTA: u32 = 1_000_000;

/// Longest deregistration delay accepted: an hour, as in the cloud.
pub const MAX_DEREGISTRATION_DELAY: Duration = Duration::from_secs(3600);

/// The largest flow table (`tables.flows_per_worker`): the flow table's own limit
/// (`appliance::flow::MAX_CAPACITY`, 32-bit slot indexes with room for markers).
pub const MAX_FLOWS_PER_WORKER: u32 = 1 << 30;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[eal]`
    pub eal: EalConfig,
    /// `[workers]`
    pub workers: WorkersConfig,
    /// `[[ports]]`
    pub ports: Vec<PortConfig>,
    /// `[[vpcs]]`: VPC attachments; each port must be a `[[ports]]` entry and each account
    /// an `[[accounts]]` entry.
    pub vpcs: Vec<VpcAttachment>,
    /// `[[accounts]]`: unique ids; a uid belongs to at most one account.
    pub accounts: Vec<Account>,
    /// `[mgmt]`
    pub mgmt: MgmtConfig,
    /// `[tables]`
    pub tables: TablesConfig,
    /// `[timeouts]`
    pub timeouts: TimeoutsConfig,
    /// `[quotas]`
    pub quotas: QuotasConfig,
    /// `[limits]`
    pub limits: LimitsConfig,
    /// `[[services]]`: loaded at start.
    pub services: Vec<Service>,
    /// `[[endpoints]]`: loaded at start.
    pub endpoints: Vec<EndpointConfig>,
    /// `[[security_groups]]`: loaded at start; endpoints name them in
    /// `security_group_ids`.
    pub security_groups: Vec<SecurityGroup>,
    /// `[ha]`: one node of an active/standby pair; absent for a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaConfig>,
    /// `[cluster]`: the object model lives in etcd, shared by every node of a fleet;
    /// absent: this node keeps its own state file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
    /// `[metrics]`: Prometheus metrics over HTTP; absent: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// `[flow_logs]`: flow logs to a file; absent: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_logs: Option<FlowLogsConfig>,
}

impl Config {
    /// Parses and validates a configuration.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Syntax {
            file: None,
            source: Box::new(source),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    /// The demo topology `privlinkd` runs when given no file: two `net_tap` ports, a
    /// consumer VPC (10.1.0.0/24) and a provider VPC (10.2.0.0/24), one service with a TCP
    /// and a UDP listener, one available endpoint at 10.1.0.100. Parsed from
    /// [`DEFAULT_TOML`].
    pub fn embedded_default() -> Self {
        match Self::from_toml_str(DEFAULT_TOML) {
            Ok(config) => config,
            // A unit test parses and validates the same text.
            Err(e) => panic!("the embedded default configuration is invalid: {e}"),
        }
    }

    /// The declared services, endpoints and security groups (an endpoint that names no service, possible
    /// only in a configuration that fails validation, is left out).
    pub fn state(&self) -> State {
        let Declared {
            services,
            endpoints,
            security_groups,
        } = self.declared();
        State {
            services,
            endpoints: endpoints.into(),
            security_groups,
            ..State::default()
        }
    }

    /// The declared objects, as the baseline a start or reload diffs against.
    pub fn declared(&self) -> Declared {
        Declared {
            services: self.services.clone(),
            endpoints: self
                .endpoints
                .iter()
                .filter_map(EndpointConfig::to_endpoint)
                .collect(),
            security_groups: self.security_groups.clone(),
        }
    }

    /// The attachment of `vpc`.
    pub fn attachment(&self, vpc: VpcId) -> Option<&VpcAttachment> {
        self.vpcs.iter().find(|a| a.vpc_id == vpc)
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The account that Unix user `uid` acts as.
    pub fn account_for_uid(&self, uid: u32) -> Option<&Account> {
        self.accounts.iter().find(|a| a.uids.contains(&uid))
    }

    /// The limits of `[quotas]` and `tables.maglev_size`.
    pub fn limits(&self) -> quota::Limits {
        quota::Limits {
            quotas: self.quotas.clone(),
            maglev_size: self.tables.maglev_size,
        }
    }
}

#[cfg(test)]
mod tests;
