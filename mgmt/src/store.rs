//! The management object store: the one owner of the [`State`] at run time, and the
//! operations of the management protocol on it.
//!
//! [`Store::handle`] takes a caller, an EC2-style operation name and its JSON arguments and
//! answers with EC2-shaped JSON. Every operation works on a copy of the state, which is
//! validated with [`State::validate`] before it replaces the current one: a request that
//! fails anywhere (malformed, unauthorised, invalid result) changes nothing.
//!
//! Authorization follows the cloud: a consumer acts only on its own VPCs, security groups
//! and endpoints, a provider only on its own services; another account's objects are
//! answered as not found. An admin (root) acts on everything, and what it creates belongs
//! to the account owning the VPC it names.
//!
//! This module never does I/O beyond reading random ids, never persists (the caller saves
//! the state with [`crate::persist`] before it acknowledges a change) and never answers the
//! data plane's own operations (`stats`, `flows`).

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::Config;
use crate::model::{
    Account, AccountId, ClientToken, Endpoint, EndpointId, EndpointIndex, EndpointKey,
    EndpointState, Listener, ModelError, Principal, SecurityGroupId, Service, State, TargetState,
    VpcAttachment,
};
use crate::quota::{self, Limits, QuotaError};

mod args;
mod declared;
mod endpoints;
mod groups;
mod services;

pub use args::check_keys;
#[cfg(test)]
mod tests;

/// Who is calling: from the socket peer's uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The account the uid acts as; `None` for a uid no account lists (which may only call
    /// `version`, unless it is admin).
    pub account: Option<AccountId>,
    /// Root: acts on every object.
    pub admin: bool,
}

impl Caller {
    /// An account's caller.
    pub fn account(account: AccountId) -> Self {
        Self {
            account: Some(account),
            admin: false,
        }
    }

    /// The admin (root).
    pub fn admin() -> Self {
        Self {
            account: None,
            admin: true,
        }
    }

    /// A uid that acts as no account.
    pub fn anonymous() -> Self {
        Self {
            account: None,
            admin: false,
        }
    }

    /// Whether the caller may act on an object of `owner`.
    pub fn acts_for(&self, owner: AccountId) -> bool {
        self.admin || self.account == Some(owner)
    }
}

/// An error answer: an EC2-style code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// E.g. `InvalidVpcEndpointId.NotFound`.
    pub code: String,
    /// What went wrong, naming the parameter or object.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// `InvalidParameterValue`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterValue", message)
    }

    /// The `{"Code", "Message"}` object of an `Unsuccessful` item.
    pub fn to_json(&self) -> Value {
        json!({"Code": self.code, "Message": self.message})
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<QuotaError> for ApiError {
    fn from(e: QuotaError) -> Self {
        Self::new(e.code, e.to_string())
    }
}

/// A successful answer, and the state it leads to: nothing is changed until the caller
/// has made `next` durable and in force and [`Store::commit`]s it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The EC2-shaped response object.
    pub response: Value,
    /// The state after the request, when it differs from the current one: valid, within
    /// the quotas, to be saved, built into a snapshot and committed.
    pub next: Option<State>,
    /// The ids of the objects the change created, changed or removed (for the audit log).
    pub touched: Vec<String>,
}

impl Outcome {
    /// An answer that changes nothing.
    pub fn unchanged(response: Value) -> Self {
        Self {
            response,
            next: None,
            touched: Vec::new(),
        }
    }

    /// Whether the request changes the state.
    pub fn changed(&self) -> bool {
        self.next.is_some()
    }
}

/// How long a `ClientToken` is remembered, as in the cloud: a retry within a day gets the
/// first answer.
pub const CLIENT_TOKEN_SECS: u64 = 24 * 3600;
/// How long a `deleted` endpoint stays visible to `describe-vpc-endpoints`.
pub const DELETED_ENDPOINT_SECS: u64 = 3600;
/// Longest `ClientToken`, as in the cloud.
pub const MAX_CLIENT_TOKEN: usize = 64;

/// The operations that create an object and take a `ClientToken`.
pub fn takes_client_token(op: &str) -> bool {
    matches!(
        op,
        "create-vpc-endpoint-service-configuration"
            | "create-vpc-endpoint"
            | "create-security-group"
    )
}

/// Every operation with a one-line synopsis of its arguments, for `privlinkctl --help`.
pub const OPERATIONS: &[(&str, &str)] = &[
    ("create-vpc-endpoint-service-configuration", "--vpc-id VPC --listeners '[{\"Protocol\":\"tcp\",\"Port\":80,\"Targets\":[{\"Id\":IP,\"Port\":P,\"Weight\":W}], SETTINGS…}]' [--snat-addresses IP…] [--acceptance-required BOOL] [--allowed-principals ACCOUNT|*…] [--auto-accept-principals ACCOUNT|*…] [--connection-limits '[{\"Principal\":ACCOUNT|*,\"Limit\":N}]'] [--client-token TOKEN]; SETTINGS: \"HealthCheckEnabled\":BOOL, \"HealthCheckProtocol\":\"tcp|http\", \"HealthCheckPort\":P|\"traffic-port\", \"HealthCheckPath\":\"/…\", \"Matcher\":\"200-399\", \"HealthCheckIntervalSeconds\":5-300, \"HealthCheckTimeoutSeconds\":2-120, \"HealthyThresholdCount\":2-10, \"UnhealthyThresholdCount\":2-10, \"ConnectionTerminationOnUnhealthy\":BOOL, \"IdleTimeoutSeconds\":60-6000"),
    ("describe-vpc-endpoint-service-configurations", "[--service-ids SVC…]"),
    ("modify-vpc-endpoint-service-configuration", "--service-id SVC [--acceptance-required BOOL] [--add-snat-addresses IP…] [--remove-snat-addresses IP…] [--add-listeners JSON (as create)] [--remove-listeners '[{\"Protocol\":…,\"Port\":…}]'] [--modify-listeners '[{\"Protocol\":…,\"Port\":…, SETTINGS (as create)…}]'] [--add-auto-accept-principals ACCOUNT|*…] [--remove-auto-accept-principals …] [--add-connection-limits '[{\"Principal\":…,\"Limit\":N}]'] [--remove-connection-limits ACCOUNT|*…]"),
    ("delete-vpc-endpoint-service-configurations", "--service-ids SVC…"),
    ("modify-vpc-endpoint-service-permissions", "--service-id SVC [--add-allowed-principals ACCOUNT|ARN|*…] [--remove-allowed-principals …]"),
    ("describe-vpc-endpoint-service-permissions", "--service-id SVC"),
    ("register-targets", "--service-id SVC --protocol tcp|udp --port PORT --targets '[{\"Id\":IP,\"Port\":P,\"Weight\":W}]'"),
    ("deregister-targets", "--service-id SVC --protocol tcp|udp --port PORT --targets '[{\"Id\":IP,\"Port\":P}]'"),
    ("describe-target-health", "--service-id SVC"),
    ("create-vpc-endpoint", "--vpc-id VPC --service-name NAME [--ip-address IP] [--security-group-ids SG…] [--policy-document JSON] [--client-token TOKEN]"),
    ("describe-vpc-endpoints", "[--vpc-endpoint-ids VPCE…] [--filters '[{\"Name\":\"vpc-id|service-name|vpc-endpoint-state|vpc-endpoint-id\",\"Values\":[…]}]']"),
    ("modify-vpc-endpoint", "--vpc-endpoint-id VPCE [--add-security-group-ids SG…] [--remove-security-group-ids SG…] [--policy-document JSON | --reset-policy true]"),
    ("delete-vpc-endpoints", "--vpc-endpoint-ids VPCE…"),
    ("describe-vpc-endpoint-connections", "[--service-id SVC]"),
    ("accept-vpc-endpoint-connections", "--service-id SVC --vpc-endpoint-ids VPCE…"),
    ("reject-vpc-endpoint-connections", "--service-id SVC --vpc-endpoint-ids VPCE…"),
    ("create-security-group", "--vpc-id VPC --group-name NAME [--description TEXT] [--client-token TOKEN]"),
    ("describe-security-groups", "[--group-ids SG…]"),
    ("delete-security-group", "--group-id SG"),
    ("authorize-security-group-ingress", "--group-id SG --ip-permissions '[{\"IpProtocol\":\"tcp|udp|icmp|-1\",\"FromPort\":P,\"ToPort\":P,\"IpRanges\":[{\"CidrIp\":CIDR}]}]'"),
    ("revoke-security-group-ingress", "--group-id SG --ip-permissions JSON (as authorize)"),
    ("stats", "data-plane counters (answered by privlinkd)"),
    ("subscribe-events", "[--count N]: connection, health and HA events as they happen (answered by privlinkd)"),
    ("flows", "active flows (answered by privlinkd)"),
    ("version", "the appliance's version"),
];

/// Whether `op` changes the state (and must be saved before it is acknowledged).
pub fn is_mutating(op: &str) -> bool {
    matches!(
        op,
        "create-vpc-endpoint-service-configuration"
            | "modify-vpc-endpoint-service-configuration"
            | "delete-vpc-endpoint-service-configurations"
            | "modify-vpc-endpoint-service-permissions"
            | "register-targets"
            | "deregister-targets"
            | "create-vpc-endpoint"
            | "modify-vpc-endpoint"
            | "delete-vpc-endpoints"
            | "accept-vpc-endpoint-connections"
            | "reject-vpc-endpoint-connections"
            | "create-security-group"
            | "delete-security-group"
            | "authorize-security-group-ingress"
            | "revoke-security-group-ingress"
    )
}

/// Random 68-bit id values: from `/dev/urandom`, or when that cannot be read, from the
/// clock and a counter.
#[derive(Debug, Default)]
struct IdSource {
    counter: u64,
}

impl IdSource {
    fn next(&mut self) -> u128 {
        self.counter = self.counter.wrapping_add(1);
        let mut bytes = [0u8; 16];
        let random = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok();
        let value = if random {
            u128::from_le_bytes(bytes)
        } else {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let a = splitmix64(lossy_u64(nanos) ^ self.counter.rotate_left(32));
            let b = splitmix64(a ^ self.counter);
            (u128::from(a) << 64) | u128::from(b)
        };
        value & ((1u128 << 68) - 1)
    }
}

/// The low 64 bits (the clock's nanoseconds only seed a mix).
fn lossy_u64(v: u128) -> u64 {
    u64::try_from(v & u128::from(u64::MAX)).unwrap_or(0)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The management object store.
#[derive(Debug)]
pub struct Store {
    state: State,
    /// The state before the last commit, kept for its allocations: the next request's
    /// copy is made into them ([`State::clone_from`]).
    spare: State,
    attachments: Vec<VpcAttachment>,
    accounts: Vec<Account>,
    region: String,
    /// Seconds a deregistered target drains before it is removed.
    deregistration_delay: u64,
    /// `[quotas]` and the Maglev table size.
    limits: Limits,
    /// The endpoints of `state` (made with it, brought up to it at each commit) by id,
    /// address, VPC and place, so that a request reads only the endpoints it changes.
    endpoint_index: EndpointIndex,
    ids: IdSource,
}

/// Why the store could not be set up or reloaded from a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    /// `<key path>: <object>: <problem>`: the objects break a rule of the model (boxed:
    /// a model error is large, and a load error is returned on every path).
    Model(Box<ModelError>),
    /// `<code>: <message>`: applying the file's declarations failed (a service still in
    /// use, a quota).
    Refused(ApiError),
}

impl LoadError {
    /// The EC2-style code.
    pub fn code(&self) -> &str {
        match self {
            Self::Model(e) => e.code(),
            Self::Refused(e) => &e.code,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Model(e) => write!(f, "{}: {e}", e.path()),
            Self::Refused(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<ModelError> for LoadError {
    fn from(e: ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

impl From<ApiError> for LoadError {
    fn from(e: ApiError) -> Self {
        Self::Refused(e)
    }
}

impl From<QuotaError> for LoadError {
    fn from(e: QuotaError) -> Self {
        Self::Refused(e.into())
    }
}

impl Store {
    /// The store for `config`, starting from the persisted state if any.
    ///
    /// The rule for objects the configuration file declares: without a state file, the
    /// declarations seed the state; with one, the state file is the truth, and only what
    /// changed in the file since it was last applied (the baseline the state file keeps)
    /// is applied, exactly as a reload applies it (see [`Store::reload`]). So a run-time
    /// delete, reject or permission change is never undone by a restart. The result must
    /// validate. Returns the store and one line per declared change applied.
    pub fn new(
        config: &Config,
        persisted: Option<State>,
    ) -> Result<(Self, Vec<String>), LoadError> {
        let declared = config.declared();
        let (state, notes) = match persisted {
            None => {
                let mut state = config.state();
                state.declared = Some(Arc::new(declared));
                (state, Vec::new())
            }
            Some(mut state) => {
                let notes = match state.declared.take() {
                    // Saved before the baseline was kept: the state is the truth as it is.
                    None => Vec::new(),
                    Some(old) => declared::apply(&mut state, &old, &declared, now_unix())?,
                };
                state.declared = Some(Arc::new(declared));
                (state, notes)
            }
        };
        Ok((Self::with_state(config, state)?, notes))
    }

    /// A store of `state` exactly as given, the configuration's declarations not applied:
    /// a cluster node's state (from etcd, or its cache), to which a node applies what its
    /// file declares as a change of the fleet's state ([`prepare_reload`](Self::prepare_reload)),
    /// once etcd can take it. The state must validate.
    pub fn with_state(config: &Config, state: State) -> Result<Self, LoadError> {
        state.validate(&config.vpcs)?;
        // Indexed now, with the rest of the load, so that no request waits for it.
        let mut endpoint_index = EndpointIndex::default();
        endpoint_index.update(&state.endpoints);
        Ok(Self {
            state,
            spare: State::default(),
            attachments: config.vpcs.clone(),
            accounts: config.accounts.clone(),
            region: config.mgmt.region.clone(),
            deregistration_delay: config.timeouts.deregistration_delay.as_secs(),
            limits: config.limits(),
            endpoint_index,
            ids: IdSource::default(),
        })
    }

    /// The attachments' rules a state from elsewhere (another node) must satisfy here.
    pub fn validate_foreign(&self, state: &State) -> Result<(), ModelError> {
        state.validate(&self.attachments)
    }

    /// The current, valid state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The VPC attachments (from the configuration).
    pub fn attachments(&self) -> &[VpcAttachment] {
        &self.attachments
    }

    /// The region in service names.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The accounts (from the configuration, replaced by a reload).
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The caller that Unix user `uid` is: root is admin; otherwise the account whose
    /// `uids` list it, if any.
    pub fn caller_for_uid(&self, uid: u32) -> Caller {
        Caller {
            account: self
                .accounts
                .iter()
                .find(|a| a.uids.contains(&uid))
                .map(|a| a.id),
            admin: uid == 0,
        }
    }

    /// Replaces the state with `next`, which [`prepare`](Self::prepare),
    /// [`prepare_tick`](Self::prepare_tick) or [`prepare_reload`](Self::prepare_reload)
    /// returned and the caller has made durable and in force.
    pub fn commit(&mut self, next: State) {
        self.spare = std::mem::replace(&mut self.state, next);
        // Kept at the state in force, for the tick (which cannot bring it up itself).
        self.endpoint_index.update(&self.state.endpoints);
    }

    /// [`prepare`](Self::prepare) and, when it changes the state, [`commit`](Self::commit)
    /// at once: for callers that keep nothing else in step with the store (tests, tools).
    pub fn handle(
        &mut self,
        caller: &Caller,
        op: &str,
        args: &Value,
        now_unix: u64,
    ) -> Result<Outcome, ApiError> {
        let out = self.prepare(caller, op, args, now_unix)?;
        if let Some(next) = &out.next {
            self.commit(next.clone());
        }
        Ok(out)
    }

    /// Answers one request at time `now_unix` (unix seconds) without changing anything:
    /// the answer and, for a change, the valid next state to commit.
    ///
    /// `stats` and `flows` are the daemon's: they answer `InvalidAction` here.
    pub fn prepare(
        &mut self,
        caller: &Caller,
        op: &str,
        args: &Value,
        now_unix: u64,
    ) -> Result<Outcome, ApiError> {
        if op == "version" {
            args::Args::top(args, &[])?;
            return Ok(Outcome::unchanged(
                json!({"Version": env!("CARGO_PKG_VERSION")}),
            ));
        }
        if !OPERATIONS.iter().any(|&(name, _)| name == op)
            || matches!(op, "stats" | "flows" | "subscribe-events")
        {
            return Err(ApiError::new(
                "InvalidAction",
                format!("the action {op:?} is not valid for this web service"),
            ));
        }
        if !caller.admin && caller.account.is_none() {
            return Err(ApiError::new(
                "UnauthorizedOperation",
                "this user acts as no account (add its uid to an [[accounts]] entry)",
            ));
        }
        let token = if takes_client_token(op) {
            client_token(caller, op, args)?
        } else {
            None
        };
        if let Some(t) = &token {
            if let Some(seen) = self
                .state
                .client_tokens
                .iter()
                .find(|r| r.scope == t.scope && r.token == t.token)
            {
                if seen.op == t.op && seen.fingerprint == t.fingerprint {
                    return Ok(Outcome::unchanged(seen.response.clone()));
                }
                return Err(ApiError::new(
                    "IdempotentParameterMismatch",
                    format!(
                        "the ClientToken {:?} was already used with other arguments ({} at {})",
                        t.token,
                        seen.op,
                        rfc3339(seen.created_at)
                    ),
                ));
            }
        }
        let args = match &token {
            Some(t) => &t.args,
            None => args,
        };
        let mut st = std::mem::take(&mut self.spare);
        st.clone_from(&self.state);
        let mut tx = Tx {
            caller,
            st,
            index: &self.endpoint_index,
            atts: &self.attachments,
            region: &self.region,
            ids: &mut self.ids,
            now: now_unix,
        };
        let response = tx.dispatch(op, args);
        let mut next = tx.st;
        let response = match response {
            Ok(r) if is_mutating(op) => r,
            other => {
                self.spare = next;
                return other.map(Outcome::unchanged);
            }
        };
        if let Some(t) = token {
            next.client_tokens.push(ClientToken {
                scope: t.scope,
                token: t.token,
                op: op.to_owned(),
                fingerprint: t.fingerprint,
                response: response.clone(),
                created_at: now_unix,
            });
        }
        self.finish(next, response)
    }

    /// Validates and quota-checks `next` against the current state.
    fn finish(&self, next: State, response: Value) -> Result<Outcome, ApiError> {
        // What changed decides how much is checked: a change of endpoints alone (most
        // requests, among up to a million) is checked endpoint by endpoint.
        let touched = touched(&self.state, &next);
        let endpoints: Option<Vec<EndpointId>> = touched.iter().map(|id| id.parse().ok()).collect();
        let known = endpoints.is_some_and(|ids| {
            !touched.is_empty()
                && next.endpoints_known_valid(&self.attachments, &ids, &self.endpoint_index)
        });
        if !known {
            next.validate(&self.attachments)?;
        }
        quota::check_with(&next, &self.state, &self.limits, &self.endpoint_index)?;
        // The objects compared equal: the rest may still differ (client tokens, the
        // declared baseline, an order).
        if touched.is_empty() && next == self.state {
            return Ok(Outcome::unchanged(response));
        }
        Ok(Outcome {
            response,
            next: Some(next),
            touched,
        })
    }

    /// The time-driven changes due at `now_unix`, as a next state to commit (None when
    /// nothing is due): draining targets whose deregistration delay has passed are removed
    /// (a draining target without a start time starts draining now); `deleting` endpoints
    /// become `deleted`, and `deleted` ones are forgotten after an hour; client tokens are
    /// forgotten after a day.
    pub fn prepare_tick(&self, now_unix: u64) -> Option<State> {
        let st = &self.state;
        let delay = self.deregistration_delay;
        // Only when something is due: the state is copied for a change, and a deleted
        // endpoint stays an hour, so "some endpoint is deleted" is not reason enough. The
        // endpoints looked at are those the index has as deleting or deleted, not all.
        let ending = self.endpoint_index.ending_in(&st.endpoints);
        let due = st.services.iter().any(|s| {
            s.listeners.iter().any(|l| {
                l.targets.iter().any(|t| {
                    t.state == TargetState::Draining
                        && t.deregistered_at
                            .is_none_or(|at| now_unix >= at.saturating_add(delay))
                })
            })
        }) || (ending.iter().map(|&i| &st.endpoints[i])).any(|e| {
            match (e.state, e.deleted_at) {
                (EndpointState::Deleting | EndpointState::Deleted, None) => true,
                (EndpointState::Deleting, Some(at)) => now_unix > at,
                (EndpointState::Deleted, Some(at)) => {
                    now_unix >= at.saturating_add(DELETED_ENDPOINT_SECS)
                }
                _ => false,
            }
        }) || st
            .client_tokens
            .iter()
            .any(|t| now_unix >= t.created_at.saturating_add(CLIENT_TOKEN_SECS));
        if !due {
            return None;
        }
        let mut next = st.clone();
        for s in &mut next.services {
            for l in &mut s.listeners {
                l.targets.retain_mut(|t| {
                    if t.state != TargetState::Draining {
                        return true;
                    }
                    match t.deregistered_at {
                        None => {
                            t.deregistered_at = Some(now_unix);
                            true
                        }
                        Some(at) => now_unix < at.saturating_add(delay),
                    }
                });
            }
        }
        // Written only where something is due, so that the endpoints' other chunks stay
        // shared with the state in force (`next` is a copy: the same positions).
        let mut forgotten = HashSet::new();
        for i in ending {
            let e = &next.endpoints[i];
            let asked = e.deleted_at.unwrap_or(now_unix);
            if e.state == EndpointState::Deleted
                && now_unix >= asked.saturating_add(DELETED_ENDPOINT_SECS)
            {
                forgotten.insert(e.id);
                continue;
            }
            let deleted = e.state == EndpointState::Deleting && now_unix > asked;
            if e.deleted_at.is_none() || deleted {
                let e = &mut next.endpoints[i];
                e.deleted_at = Some(asked);
                if deleted {
                    // A deleted endpoint holds nothing: no address, no security groups
                    // (which may then be deleted).
                    e.state = EndpointState::Deleted;
                    e.security_group_ids.clear();
                }
            }
        }
        if !forgotten.is_empty() {
            next.endpoints.retain(|e| !forgotten.contains(&e.id));
        }
        next.client_tokens
            .retain(|t| now_unix < t.created_at.saturating_add(CLIENT_TOKEN_SECS));
        (next != *st).then_some(next)
    }

    /// [`prepare_tick`](Self::prepare_tick) and [`commit`](Self::commit) at once (for
    /// tests and tools); whether the state changed.
    pub fn tick(&mut self, now_unix: u64) -> bool {
        match self.prepare_tick(now_unix) {
            Some(next) => {
                self.commit(next);
                true
            }
            None => false,
        }
    }

    /// A reload of the configuration file: the accounts (and their uids) and quotas are
    /// replaced, and what changed in the declared objects since they were last applied is
    /// applied to the state. Nothing changes here: the caller makes the returned state
    /// durable and in force, then [`apply_reload`](Self::apply_reload)s it. Returns the
    /// next state (None if the objects are unchanged) and one line per change.
    pub fn prepare_reload(
        &self,
        config: &Config,
        now_unix: u64,
    ) -> Result<(Option<State>, Vec<String>), LoadError> {
        let old = self.state.declared.clone().unwrap_or_default();
        let new = config.declared();
        let mut next = self.state.clone();
        let notes = declared::apply(&mut next, &old, &new, now_unix)?;
        next.declared = Some(Arc::new(new));
        next.validate(&self.attachments)?;
        let limits = config.limits();
        quota::check_with(&next, &self.state, &limits, &self.endpoint_index)?;
        Ok(((next != self.state).then_some(next), notes))
    }

    /// Takes the accounts and quotas of a reloaded `config` (whose objects
    /// [`prepare_reload`](Self::prepare_reload) prepared and the caller committed).
    pub fn apply_reload(&mut self, config: &Config) {
        self.accounts = config.accounts.clone();
        self.limits = config.limits();
        self.deregistration_delay = config.timeouts.deregistration_delay.as_secs();
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A create request's `ClientToken`, checked, with the arguments without it.
struct TokenArgs {
    scope: String,
    token: String,
    op: String,
    fingerprint: String,
    args: Value,
}

fn client_token(caller: &Caller, op: &str, args: &Value) -> Result<Option<TokenArgs>, ApiError> {
    let Value::Object(map) = args else {
        return Ok(None);
    };
    let Some(v) = map.get("ClientToken") else {
        return Ok(None);
    };
    let token = v
        .as_str()
        .filter(|t| {
            !t.is_empty()
                && t.len() <= MAX_CLIENT_TOKEN
                && t.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        })
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "ClientToken must be a string of 1 to {MAX_CLIENT_TOKEN} printable ASCII \
                 characters"
            ))
        })?;
    let mut rest = map.clone();
    rest.remove("ClientToken");
    let rest = Value::Object(rest);
    // serde_json's maps are sorted, so this text is canonical for equal arguments.
    let fingerprint = format!(
        "{:016x}",
        crate::persist::fnv1a64(rest.to_string().as_bytes())
    );
    let scope = match (caller.admin, caller.account) {
        (true, _) => "admin".to_owned(),
        (false, Some(a)) => a.to_string(),
        (false, None) => return Ok(None),
    };
    Ok(Some(TokenArgs {
        scope,
        token: token.to_owned(),
        op: op.to_owned(),
        fingerprint,
        args: rest,
    }))
}

/// The ids of the objects that differ between `before` and `after`: created, changed or
/// removed services, endpoints and security groups.
///
/// O(objects) for services and security groups, O(chunks) for endpoints: the store keeps
/// each list in order (it appends, removes and changes in place), so the lists are
/// matched side by side from both ends (the endpoints' shared chunks skipped unread) and
/// only what lies between (the few objects a change touched) is matched by id.
pub fn touched(before: &State, after: &State) -> Vec<String> {
    fn diff<T: PartialEq, K: Eq + std::hash::Hash + fmt::Display>(
        out: &mut Vec<String>,
        a: &[T],
        b: &[T],
        id: impl Fn(&T) -> K,
    ) {
        let same = |x: &T, y: &T| id(x) == id(y);
        let head = a.iter().zip(b).take_while(|(x, y)| same(x, y)).count();
        let tail = a[head..]
            .iter()
            .rev()
            .zip(b[head..].iter().rev())
            .take_while(|(x, y)| same(x, y))
            .count();
        let (a_mid, b_mid) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
        let old: std::collections::HashMap<K, &T> = a_mid.iter().map(|x| (id(x), x)).collect();
        let new: HashSet<K> = b_mid.iter().map(&id).collect();
        // In `after`'s order, then the removed in `before`'s order.
        for (x, y) in a[..head].iter().zip(&b[..head]) {
            if x != y {
                out.push(id(y).to_string());
            }
        }
        for y in b_mid {
            if old.get(&id(y)).is_none_or(|x| *x != y) {
                out.push(id(y).to_string());
            }
        }
        for (x, y) in a[a.len() - tail..].iter().zip(&b[b.len() - tail..]) {
            if x != y {
                out.push(id(y).to_string());
            }
        }
        for x in a_mid {
            if !new.contains(&id(x)) {
                out.push(id(x).to_string());
            }
        }
    }
    let mut out = Vec::new();
    diff(&mut out, &before.services, &after.services, |s| s.id);
    // Only the endpoints outside the chunks the two versions share can differ.
    let (was, is) = before.endpoints.unshared(&after.endpoints);
    let was: Vec<&Endpoint> = before.endpoints.iter_range(was).collect();
    let is: Vec<&Endpoint> = after.endpoints.iter_range(is).collect();
    diff(&mut out, &was, &is, |e| e.id);
    diff(
        &mut out,
        &before.security_groups,
        &after.security_groups,
        |g| g.id,
    );
    out
}

/// One request in progress: the caller and a copy of the state it changes.
struct Tx<'a> {
    caller: &'a Caller,
    st: State,
    /// Of the endpoints of the state in force, which `st` began as.
    index: &'a EndpointIndex,
    atts: &'a [VpcAttachment],
    region: &'a str,
    ids: &'a mut IdSource,
    now: u64,
}

impl Tx<'_> {
    fn dispatch(&mut self, op: &str, a: &Value) -> Result<Value, ApiError> {
        match op {
            "create-vpc-endpoint-service-configuration" => self.create_service(a),
            "describe-vpc-endpoint-service-configurations" => self.describe_services(a),
            "modify-vpc-endpoint-service-configuration" => self.modify_service(a),
            "delete-vpc-endpoint-service-configurations" => self.delete_services(a),
            "modify-vpc-endpoint-service-permissions" => self.modify_permissions(a),
            "describe-vpc-endpoint-service-permissions" => self.describe_permissions(a),
            "register-targets" => self.register_targets(a),
            "deregister-targets" => self.deregister_targets(a),
            "describe-target-health" => self.describe_target_health(a),
            "create-vpc-endpoint" => self.create_endpoint(a),
            "describe-vpc-endpoints" => self.describe_endpoints(a),
            "modify-vpc-endpoint" => self.modify_endpoint(a),
            "delete-vpc-endpoints" => self.delete_endpoints(a),
            "describe-vpc-endpoint-connections" => self.describe_connections(a),
            "accept-vpc-endpoint-connections" => self.answer_connections(a, true),
            "reject-vpc-endpoint-connections" => self.answer_connections(a, false),
            "create-security-group" => self.create_group(a),
            "describe-security-groups" => self.describe_groups(a),
            "delete-security-group" => self.delete_group(a),
            "authorize-security-group-ingress" => self.change_ingress(a, true),
            "revoke-security-group-ingress" => self.change_ingress(a, false),
            _ => Err(ApiError::new(
                "InvalidAction",
                format!("the action {op:?} is not valid for this web service"),
            )),
        }
    }

    /// The attachment of `vpc`, which the caller must own (else it is not found).
    fn own_vpc(&self, vpc: crate::model::VpcId) -> Result<&VpcAttachment, ApiError> {
        self.atts
            .iter()
            .find(|a| a.vpc_id == vpc && self.caller.acts_for(a.account))
            .ok_or_else(|| {
                ApiError::new(
                    "InvalidVpcId.NotFound",
                    format!("the vpc ID '{vpc}' does not exist"),
                )
            })
    }

    /// A fresh random id (of `make`'s type) that `taken` says no object has (a walk of
    /// the objects, no copy of their ids).
    fn fresh<T>(
        ids: &mut IdSource,
        make: impl Fn(u128) -> Option<T>,
        taken: impl Fn(&T) -> bool,
    ) -> T {
        loop {
            if let Some(id) = make(ids.next()) {
                if !taken(&id) {
                    return id;
                }
            }
        }
    }

    /// The SNAT addresses and targets of the services in `att`'s VPC.
    fn service_addresses<'a>(
        &'a self,
        att: &'a VpcAttachment,
    ) -> impl Iterator<Item = std::net::IpAddr> + 'a {
        let services = self.st.services.iter().filter(|s| s.vpc_id == att.vpc_id);
        services.flat_map(|s| {
            let targets = s
                .listeners
                .iter()
                .flat_map(|l| l.targets.iter().map(|t| t.ip));
            s.snat_addresses.iter().copied().chain(targets)
        })
    }

    /// IPv6 addresses in use in `att`'s VPC: the appliance's own, its neighbours', SNAT
    /// and endpoint addresses, and targets.
    fn used_addresses6(&self, att: &VpcAttachment) -> HashSet<std::net::Ipv6Addr> {
        let mut used = HashSet::new();
        used.extend(att.address6.map(|n| n.addr()));
        used.extend(att.gateway6);
        used.extend(att.static_neighbours6.iter().map(|n| n.ip));
        used.extend(self.service_addresses(att).filter_map(crate::net::ipv6_of));
        for e in &self.st.endpoints {
            if e.vpc_id == att.vpc_id && e.state.holds_address() {
                used.extend(e.ip6);
            }
        }
        used
    }

    /// Whether an IPv4 address of `att`'s VPC is in use: the appliance's own, its
    /// neighbours', SNAT and target addresses, and endpoints' (those asked of the index,
    /// not collected: a VPC may hold a million).
    fn used_addresses(&self, att: &VpcAttachment) -> impl Fn(Ipv4Addr) -> bool + '_ {
        let used = self.other_addresses(att);
        let (endpoints, vpc) = (self.index.view(&self.st.endpoints), att.vpc_id);
        move |ip| used.contains(&ip) || endpoints.count(EndpointKey::Address(vpc, ip)) > 0
    }

    /// The IPv4 addresses of `att`'s VPC in use by anything but an endpoint: the
    /// appliance's own, its neighbours', SNAT and target addresses.
    fn other_addresses(&self, att: &VpcAttachment) -> HashSet<Ipv4Addr> {
        let mut used = HashSet::new();
        used.extend(att.address.map(|a| a.addr()));
        used.extend(att.gateway);
        used.extend(att.static_neighbours.iter().map(|n| n.ip));
        used.extend(self.service_addresses(att).filter_map(crate::net::ipv4_of));
        used
    }

    /// The lowest free IPv4 address of `att`'s prefix from its second host on, for a new
    /// endpoint: the index jumps over the runs of addresses endpoints hold.
    fn allocate_endpoint_address(&self, att: &VpcAttachment) -> Result<Ipv4Addr, ApiError> {
        let Some(net) = att.address else {
            return Err(ApiError::invalid(crate::model::no_ipv4_prefix(att.vpc_id)));
        };
        let others = self.other_addresses(att);
        let first = u32::from(net.network()).saturating_add(2);
        let last = u32::from(net.broadcast()).saturating_sub(1);
        (self.index.view(&self.st.endpoints))
            .lowest_free(att.vpc_id, (first.into(), last.into()), |ip| {
                others.contains(&ip)
            })
            .ok_or_else(|| no_free_address(att, net))
    }
}

/// The lowest free host address of the IPv6 prefix `net`, counting up from its second
/// host (`::2`; the first is the subnet-router anycast address, `::1` customarily the
/// router's, here the appliance's).
fn allocate_address6(
    att: &VpcAttachment,
    net: crate::net::Ipv6Net,
    used: &HashSet<std::net::Ipv6Addr>,
) -> Result<std::net::Ipv6Addr, ApiError> {
    let network = u128::from(net.network());
    let last = network
        | u128::MAX
            .checked_shr(u32::from(net.prefix_len()))
            .unwrap_or(0);
    // Among used.len() + 1 candidates one is free (when the prefix has that many).
    let tries = u128::try_from(used.len())
        .unwrap_or(u128::MAX)
        .saturating_add(1);
    let first = network.saturating_add(2);
    let end = last.min(first.saturating_add(tries - 1));
    (first..=end)
        .map(std::net::Ipv6Addr::from)
        .find(|a| !used.contains(a))
        .ok_or_else(|| {
            ApiError::new(
                "InsufficientFreeAddressesInSubnet",
                format!(
                    "no free IPv6 address is left in {} of {}",
                    net.trunc(),
                    att.vpc_id
                ),
            )
        })
}

/// The highest free host address, counting down from the prefix's last host (`.254`):
/// a SNAT address (endpoints are allocated from the bottom,
/// [`Tx::allocate_endpoint_address`]).
fn allocate_address_from_top(
    att: &VpcAttachment,
    used: impl Fn(Ipv4Addr) -> bool,
) -> Result<Ipv4Addr, ApiError> {
    let Some(net) = att.address else {
        return Err(ApiError::invalid(crate::model::no_ipv4_prefix(att.vpc_id)));
    };
    let network = u32::from(net.network());
    let broadcast = u32::from(net.broadcast());
    (network.saturating_add(1)..broadcast)
        .rev()
        .find(|&n| !used(Ipv4Addr::from(n)))
        .map(Ipv4Addr::from)
        .ok_or_else(|| no_free_address(att, net))
}

fn no_free_address(att: &VpcAttachment, net: crate::net::Ipv4Net) -> ApiError {
    ApiError::new(
        "InsufficientFreeAddressesInSubnet",
        format!(
            "no free address is left in {} of {}",
            net.trunc(),
            att.vpc_id
        ),
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds.
pub fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days, on unsigned values (days since 1970 are >= 0).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A service as `describe-vpc-endpoint-service-configurations` shows it.
fn service_json(s: &Service, region: &str) -> Value {
    json!({
        "ServiceId": s.id.to_string(),
        "ServiceName": s.name(region),
        "ServiceType": [{"ServiceType": "Interface"}],
        "ServiceState": "Available",
        "Owner": s.owner.to_string(),
        "VpcId": s.vpc_id.to_string(),
        "AcceptanceRequired": s.acceptance_required,
        "SupportedIpAddressTypes": s.supported_ip_address_types.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "Listeners": s.listeners.iter().map(listener_json).collect::<Vec<_>>(),
        "SnatAddresses": s.snat_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "AllowedPrincipals": s.allowed_principals.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "AutoAcceptPrincipals": s.auto_accept_principals.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "ConnectionLimits": s.connection_limits.iter().map(|l| json!({
            "Principal": l.principal.to_string(),
            "Limit": l.limit,
        })).collect::<Vec<_>>(),
    })
}

/// A listener as `describe-vpc-endpoint-service-configurations` shows it: every setting
/// under the cloud's name (`HealthCheckPort` `"traffic-port"` for the target's own port;
/// `IdleTimeoutSeconds` only when the listener has its own).
fn listener_json(l: &Listener) -> Value {
    let mut v = json!({
        "Protocol": l.protocol.as_str(),
        "Port": l.port,
        "Targets": l.targets.iter().map(|t| json!({
            "Id": t.ip.to_string(),
            "Port": t.port,
            "Weight": t.weight,
            "State": t.state.as_str(),
        })).collect::<Vec<_>>(),
        "HealthCheckEnabled": l.health_check_enabled,
        "HealthCheckProtocol": l.health_check_protocol.as_str(),
        "HealthCheckPort": l.health_check_port.map_or_else(|| json!("traffic-port"), |p| json!(p)),
        "HealthCheckPath": l.health_check_path,
        "Matcher": l.matcher.as_str(),
        "HealthCheckIntervalSeconds": l.health_check_interval_seconds,
        "HealthCheckTimeoutSeconds": l.health_check_timeout_seconds,
        "HealthyThresholdCount": l.healthy_threshold_count,
        "UnhealthyThresholdCount": l.unhealthy_threshold_count,
        "ConnectionTerminationOnUnhealthy": l.connection_termination_on_unhealthy,
    });
    if let Some(idle) = l.idle_timeout_seconds {
        v["IdleTimeoutSeconds"] = json!(idle);
    }
    v
}

/// An endpoint as `describe-vpc-endpoints` shows it.
fn endpoint_json(e: &Endpoint, region: &str) -> Value {
    let mut v = json!({
        "VpcEndpointId": e.id.to_string(),
        "VpcEndpointType": "Interface",
        "VpcId": e.vpc_id.to_string(),
        "ServiceId": e.service_id.to_string(),
        "ServiceName": crate::model::service_name(region, e.service_id),
        "State": e.state.as_str(),
        "OwnerId": e.owner.to_string(),
        "IpAddressType": e.ip_address_type.as_str(),
        "Groups": e.security_group_ids.iter().map(|g| json!({"GroupId": g.to_string()})).collect::<Vec<_>>(),
    });
    if let Some(ip) = e.ip {
        v["IpAddress"] = Value::String(ip.to_string());
    }
    if let Some(ip6) = e.ip6 {
        v["Ipv6Address"] = Value::String(ip6.to_string());
    }
    if let Some(p) = &e.policy {
        v["PolicyDocument"] = Value::String(p.to_string());
    }
    if e.created_at != 0 {
        v["CreationTimestamp"] = Value::String(rfc3339(e.created_at));
    }
    v
}

/// A principal as `describe-vpc-endpoint-service-permissions` shows it.
fn principal_json(p: Principal) -> Value {
    match p {
        Principal::Any => json!({"Principal": "*", "PrincipalType": "All"}),
        Principal::Account(a) => json!({"Principal": a.to_string(), "PrincipalType": "Account"}),
    }
}

/// An `Unsuccessful` item.
fn unsuccessful(id: impl fmt::Display, e: &ApiError) -> Value {
    json!({"ResourceId": id.to_string(), "Error": e.to_json()})
}

fn endpoint_not_found(id: impl fmt::Display) -> ApiError {
    ApiError::new(
        "InvalidVpcEndpointId.NotFound",
        format!("the VPC endpoint ID '{id}' does not exist"),
    )
}

fn service_not_found(id: impl fmt::Display) -> ApiError {
    ApiError::new(
        "InvalidVpcEndpointServiceId.NotFound",
        format!("the VPC endpoint service ID '{id}' does not exist"),
    )
}

fn group_not_found(id: SecurityGroupId) -> ApiError {
    ApiError::new(
        "InvalidGroup.NotFound",
        format!("the security group '{id}' does not exist"),
    )
}

/// Whether an endpoint in this state keeps its service in use.
fn connected(state: EndpointState) -> bool {
    matches!(
        state,
        EndpointState::PendingAcceptance | EndpointState::Available
    )
}
