//! Every check a configuration must pass: each section's own rules, the cross-references
//! between sections (ports, accounts, EAL lcores, region), and the model's rules and the
//! quotas on the declared objects.
//!
//! A check answers with the key path of the value at fault and the problem, and the first
//! problem found is the one reported; [`Config::load`] adds the file's name.

use std::collections::HashMap;
use std::time::Duration;

use super::errors::{ConfigError, ConfigProblem};
use super::lcores::parse_eal_lcores;
use super::sections::parse_key;
use super::{
    Config, MAX_DEREGISTRATION_DELAY, MAX_FLOWS_PER_WORKER, MAX_LCORE_ID, MAX_QUOTA,
    MAX_SOCKET_PATH, MAX_TIMEOUT,
};
use crate::model::{
    is_valid_region, validate_attachments, AccountId, KeyPath, ModelError, ParseError, State,
    ValueKind,
};
use crate::quota;

impl Config {
    /// Runs every check: the sections' own rules, cross-references between them (ports,
    /// accounts, EAL lcores, region, Maglev size) and [`validate_attachments`] and
    /// [`State::validate`] on what is declared. Returns the first problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_inner()
            .map_err(|(at, problem)| ConfigError::Invalid {
                file: None,
                at,
                problem,
            })
    }

    fn validate_inner(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        self.validate_workers()?;
        self.validate_ports()?;
        self.validate_accounts()?;
        self.validate_vpcs()?;
        self.validate_mgmt()?;
        self.validate_tables()?;
        self.validate_limits()?;
        self.validate_timeouts()?;
        self.validate_quotas()?;
        self.validate_ha()?;
        self.validate_cluster()?;
        self.validate_flow_logs()?;
        self.validate_declared()
    }

    fn validate_ha(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let Some(ha) = &self.ha else {
            return Ok(());
        };
        let at = KeyPath::new().key("ha");
        if ha.nodes.len() != 2 {
            return Err((at.key("nodes"), ConfigProblem::HaNodeCount(ha.nodes.len())));
        }
        for (i, n) in ha.nodes.iter().enumerate() {
            let valid = !n.name.is_empty()
                && n.name.len() <= 32
                && n.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err((
                    at.key("nodes").index(i).key("name"),
                    ConfigProblem::HaNodeName(n.name.clone()),
                ));
            }
        }
        if ha.nodes[0].name == ha.nodes[1].name {
            return Err((
                at.key("nodes").index(1).key("name"),
                ConfigProblem::HaNodeName(ha.nodes[1].name.clone()),
            ));
        }
        if ha.nodes[0].sync == ha.nodes[1].sync {
            return Err((
                at.key("nodes").index(1).key("sync"),
                ConfigProblem::HaSameSync,
            ));
        }
        if let Some(name) = &ha.node {
            if ha.me().is_none() {
                return Err((at.key("node"), ConfigProblem::HaUnknownNode(name.clone())));
            }
        }
        match (&ha.key, &ha.key_file) {
            (Some(k), None) => {
                parse_key(k).map_err(|e| (at.key("key"), ConfigProblem::HaKey(e)))?;
            }
            (None, Some(f)) if f.as_os_str().is_empty() => {
                return Err((at.key("key_file"), ConfigProblem::Empty));
            }
            (None, Some(_)) => {}
            _ => return Err((at.key("key"), ConfigProblem::HaKeyChoice)),
        }
        if !(10..=10_000).contains(&ha.heartbeat_ms) {
            return Err((at.key("heartbeat_ms"), range(ha.heartbeat_ms, 10, 10_000)));
        }
        if !(2..=100).contains(&ha.dead_after) {
            return Err((at.key("dead_after"), range(ha.dead_after, 2, 100)));
        }
        Ok(())
    }

    fn validate_flow_logs(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let Some(f) = &self.flow_logs else {
            return Ok(());
        };
        let at = KeyPath::new().key("flow_logs");
        if !(1..=600).contains(&f.interval_s) {
            return Err((at.key("interval_s"), range(f.interval_s, 1, 600)));
        }
        if f.max_bytes < 4096 {
            return Err((at.key("max_bytes"), range(f.max_bytes, 4096, u64::MAX)));
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let at = KeyPath::new().key("cluster");
        if c.etcd.is_empty() {
            return Err((at.key("etcd"), ConfigProblem::Empty));
        }
        for (i, url) in c.etcd.iter().enumerate() {
            if let Err(e) = check_etcd_url(url) {
                return Err((at.key("etcd").index(i), ConfigProblem::ClusterUrl(e)));
            }
        }
        let p = &c.prefix;
        if p.len() < 2 || !p.starts_with('/') || !p.ends_with('/') || p.contains("//") {
            return Err((at.key("prefix"), ConfigProblem::ClusterPrefix(p.clone())));
        }
        if !p.bytes().all(|b| b.is_ascii_graphic()) {
            return Err((at.key("prefix"), ConfigProblem::ClusterPrefix(p.clone())));
        }
        if !(100..=60_000).contains(&c.timeout_ms) {
            return Err((at.key("timeout_ms"), range(c.timeout_ms, 100, 60_000)));
        }
        if c.max_txn_ops < 2 {
            return Err((
                at.key("max_txn_ops"),
                range(c.max_txn_ops, 2, u64::from(u32::MAX)),
            ));
        }
        if let Some(n) = &c.node {
            if n.is_empty() || n.len() > 64 || !n.bytes().all(|b| b.is_ascii_graphic()) {
                return Err((at.key("node"), ConfigProblem::ClusterNode(n.clone())));
            }
        }
        Ok(())
    }

    fn validate_workers(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let eal = parse_eal_lcores(&self.eal.args)
            .map_err(|(i, p)| (KeyPath::new().key("eal").key("args").index(i), p))?;
        let at = KeyPath::new().key("workers");
        let lcores = &self.workers.lcores;
        if lcores.is_empty() {
            return Err((at.key("lcores"), ConfigProblem::NoWorkers));
        }
        for (i, &lcore) in lcores.iter().enumerate() {
            let lcore_at = at.key("lcores").index(i);
            let problem = if lcores[..i].contains(&lcore) {
                ConfigProblem::DuplicateLcore(lcore)
            } else if lcore == eal.main {
                ConfigProblem::MainLcore(lcore)
            } else if let Some(enabled) = eal.enabled.as_ref().filter(|e| !e.contains(&lcore)) {
                ConfigProblem::LcoreNotInEal {
                    lcore,
                    enabled: enabled.iter().copied().collect(),
                }
            } else if lcore > MAX_LCORE_ID {
                range(lcore, 0, MAX_LCORE_ID.into())
            } else {
                continue;
            };
            return Err((lcore_at, problem));
        }
        if !(1..=512).contains(&self.workers.burst) {
            return Err((at.key("burst"), range(self.workers.burst, 1, 512)));
        }
        if self.workers.idle_sleep_us > 1_000_000 {
            return Err((
                at.key("idle_sleep_us"),
                range(self.workers.idle_sleep_us, 0, 1_000_000),
            ));
        }
        let stall = self.workers.stall_timeout_ms;
        if !(10..=3_600_000).contains(&stall) {
            return Err((at.key("stall_timeout_ms"), range(stall, 10, 3_600_000)));
        }
        if u64::from(stall) * 1000 <= u64::from(self.workers.idle_sleep_us) {
            return Err((
                at.key("stall_timeout_ms"),
                ConfigProblem::StallNotAboveIdleSleep {
                    stall_ms: stall,
                    idle_sleep_us: self.workers.idle_sleep_us,
                },
            ));
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        for (i, p) in self.ports.iter().enumerate() {
            let at = KeyPath::item("ports", i);
            if p.name.is_empty() {
                return Err((at.key("name"), ConfigProblem::Empty));
            }
            if let Some(first) = self.ports[..i].iter().position(|q| q.name == p.name) {
                return Err((
                    at.key("name"),
                    ConfigProblem::DuplicatePort {
                        name: p.name.clone(),
                        first,
                    },
                ));
            }
            if let Some(mtu) = p.mtu {
                if !(68..=9702).contains(&mtu) {
                    return Err((at.key("mtu"), range(mtu, 68, 9702)));
                }
            }
            for (key, desc) in [("rx_desc", p.rx_desc), ("tx_desc", p.tx_desc)] {
                if !desc.is_power_of_two() {
                    return Err((at.key(key), ConfigProblem::NotPowerOfTwo(desc.into())));
                }
            }
        }
        Ok(())
    }

    fn validate_accounts(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let mut uid_owner: HashMap<u32, AccountId> = HashMap::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let at = KeyPath::item("accounts", i);
            if let Some(first) = self.accounts[..i].iter().position(|b| b.id == a.id) {
                return Err((
                    at.key("id"),
                    ConfigProblem::DuplicateAccount { id: a.id, first },
                ));
            }
            for (j, &uid) in a.uids.iter().enumerate() {
                if let Some(&account) = uid_owner.get(&uid) {
                    return Err((
                        at.key("uids").index(j),
                        ConfigProblem::DuplicateUid { uid, account },
                    ));
                }
                uid_owner.insert(uid, a.id);
            }
        }
        Ok(())
    }

    fn validate_vpcs(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        validate_attachments(&self.vpcs).map_err(model_problem)?;
        for (i, v) in self.vpcs.iter().enumerate() {
            let at = KeyPath::item("vpcs", i);
            if self.port(&v.port).is_none() {
                return Err((at.key("port"), ConfigProblem::UnknownPort(v.port.clone())));
            }
            if !self.accounts.iter().any(|a| a.id == v.account) {
                return Err((at.key("account"), ConfigProblem::UnknownAccount(v.account)));
            }
        }
        Ok(())
    }

    fn validate_mgmt(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("mgmt");
        let m = &self.mgmt;
        let socket_len = m.socket.as_os_str().len();
        if socket_len == 0 {
            return Err((at.key("socket"), ConfigProblem::Empty));
        }
        if socket_len > MAX_SOCKET_PATH {
            return Err((
                at.key("socket"),
                ConfigProblem::SocketPathTooLong(socket_len),
            ));
        }
        if m.state_dir.as_os_str().is_empty() {
            return Err((at.key("state_dir"), ConfigProblem::Empty));
        }
        if !is_valid_region(&m.region) {
            return Err((
                at.key("region"),
                ConfigProblem::Parse(ParseError::new(ValueKind::Region, &m.region)),
            ));
        }
        for (key, path) in [("stats_file", &m.stats_file), ("stats_log", &m.stats_log)] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err((at.key(key), ConfigProblem::Empty));
            }
        }
        if let Some(group) = &m.socket_group {
            if group.is_empty() {
                return Err((at.key("socket_group"), ConfigProblem::Empty));
            }
        }
        if !(1..=4096).contains(&m.max_connections) {
            return Err((at.key("max_connections"), range(m.max_connections, 1, 4096)));
        }
        if !(1..=m.max_connections).contains(&m.max_connections_per_uid) {
            return Err((
                at.key("max_connections_per_uid"),
                range(m.max_connections_per_uid, 1, m.max_connections.into()),
            ));
        }
        if !(10..=60_000).contains(&m.stats_interval_ms) {
            return Err((
                at.key("stats_interval_ms"),
                range(m.stats_interval_ms, 10, 60_000),
            ));
        }
        Ok(())
    }

    fn validate_quotas(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("quotas");
        for (key, value) in self.quotas.named() {
            if value == 0 || value > MAX_QUOTA {
                return Err((at.key(key), range(value, 1, MAX_QUOTA.into())));
            }
        }
        Ok(())
    }

    fn validate_tables(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("tables");
        let t = &self.tables;
        if !(1024..=MAX_FLOWS_PER_WORKER).contains(&t.flows_per_worker) {
            return Err((
                at.key("flows_per_worker"),
                range(t.flows_per_worker, 1024, MAX_FLOWS_PER_WORKER.into()),
            ));
        }
        if t.neighbours < 16 {
            return Err((
                at.key("neighbours"),
                range(t.neighbours, 16, u32::MAX.into()),
            ));
        }
        if !is_prime(t.maglev_size) {
            return Err((
                at.key("maglev_size"),
                ConfigProblem::NotPrime(t.maglev_size.into()),
            ));
        }
        if !(1024..=1 << 26).contains(&t.snat_quarantine) {
            return Err((
                at.key("snat_quarantine"),
                range(t.snat_quarantine, 1024, 1 << 26),
            ));
        }
        if !(16..=1 << 20).contains(&t.fragment_datagrams) {
            return Err((
                at.key("fragment_datagrams"),
                range(t.fragment_datagrams, 16, 1 << 20),
            ));
        }
        if t.fragments_held > 1 << 16 {
            return Err((
                at.key("fragments_held"),
                range(t.fragments_held, 0, 1 << 16),
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("limits");
        let l = &self.limits;
        let capacity = u64::from(self.tables.flows_per_worker)
            * u64::try_from(self.workers.lcores.len().max(1)).unwrap_or(1);
        let pairs = [
            (
                "half_open_per_client",
                l.half_open_per_client(),
                "limits.flows_per_client",
                l.flows_per_client,
            ),
            (
                "half_open_per_endpoint",
                l.half_open_per_endpoint(capacity),
                "limits.flows_per_endpoint",
                l.flows_per_endpoint(capacity),
            ),
        ];
        for (key, half_open, flows_key, flows) in pairs {
            // A half-open limit above the flow limit could never apply: a typo, likely.
            if flows != 0 && half_open > flows {
                return Err((
                    at.key(key),
                    ConfigProblem::AboveLimit {
                        value: half_open.into(),
                        limit: flows_key,
                        max: flows.into(),
                    },
                ));
            }
        }
        Ok(())
    }

    fn validate_timeouts(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        let at = KeyPath::new().key("timeouts");
        let t = &self.timeouts;
        for (key, d) in [
            ("tcp_established", t.tcp_established),
            ("tcp_syn", t.tcp_syn),
            ("tcp_closing", t.tcp_closing),
            ("tcp_closed", t.tcp_closed),
            ("udp", t.udp),
            ("icmp", t.icmp),
            ("arp_retry", t.arp_retry),
            ("neighbour_ttl", t.neighbour_ttl),
        ] {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err((at.key(key), ConfigProblem::TimeoutOutOfRange(d)));
            }
        }
        if !(MIN_FRAGMENT_TIMEOUT..=MAX_FRAGMENT_TIMEOUT).contains(&t.fragment) {
            return Err((
                at.key("fragment"),
                ConfigProblem::DurationOutOfRange {
                    value: t.fragment,
                    min: MIN_FRAGMENT_TIMEOUT,
                    max: MAX_FRAGMENT_TIMEOUT,
                },
            ));
        }
        if !(1..=100).contains(&t.arp_tries) {
            return Err((at.key("arp_tries"), range(t.arp_tries, 1, 100)));
        }
        if t.deregistration_delay > MAX_DEREGISTRATION_DELAY {
            return Err((
                at.key("deregistration_delay"),
                range(
                    t.deregistration_delay.as_secs(),
                    0,
                    MAX_DEREGISTRATION_DELAY.as_secs(),
                ),
            ));
        }
        Ok(())
    }

    /// The declared services and endpoints: service references, then the model's rules,
    /// then what the Maglev size implies.
    fn validate_declared(&self) -> Result<(), (KeyPath, ConfigProblem)> {
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = KeyPath::item("endpoints", i);
            match (e.service_id, &e.service_name) {
                (None, None) => return Err((at, ConfigProblem::NoService)),
                (Some(id), Some(name)) if name.id() != id => {
                    return Err((
                        at.key("service_name"),
                        ConfigProblem::ServiceMismatch {
                            id,
                            name: name.clone(),
                        },
                    ))
                }
                _ => {}
            }
            if let Some(name) = &e.service_name {
                if name.region() != self.mgmt.region {
                    return Err((
                        at.key("service_name"),
                        ConfigProblem::WrongRegion {
                            name: name.clone(),
                            region: self.mgmt.region.clone(),
                        },
                    ));
                }
            }
        }

        self.state().validate(&self.vpcs).map_err(model_problem)?;
        for (i, e) in self.endpoints.iter().enumerate() {
            if let (Some(doc), Some(att)) = (&e.policy, self.attachment(e.vpc_id)) {
                crate::policy::check_principals(doc, att.account).map_err(|err| {
                    (
                        KeyPath::item("endpoints", i).key("policy"),
                        ConfigProblem::Policy(err.to_string()),
                    )
                })?;
            }
        }
        quota::check(&self.state(), &State::default(), &self.limits())
            .map_err(|e| (e.at.clone(), ConfigProblem::Quota(Box::new(e))))
    }
}

fn model_problem(e: ModelError) -> (KeyPath, ConfigProblem) {
    (e.path().clone(), ConfigProblem::Model(Box::new(e)))
}

/// The range of `timeouts.fragment`.
const MIN_FRAGMENT_TIMEOUT: Duration = Duration::from_millis(10);
const MAX_FRAGMENT_TIMEOUT: Duration = Duration::from_secs(60);

fn range(value: impl Into<u64>, min: u64, max: u64) -> ConfigProblem {
    ConfigProblem::OutOfRange {
        value: value.into(),
        min,
        max,
    }
}

pub(super) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// An etcd client URL privlink can use: `http://host:port` with nothing after the port
/// (a trailing `/` aside).
fn check_etcd_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(if url.starts_with("https://") {
            format!("{url:?}: https is not supported (keep etcd on a private network or loopback and use http)")
        } else {
            format!("{url:?} is not an http://host:port URL")
        });
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!("{url:?} has no port (etcd clients use 2379)"));
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{url:?} is not an http://host:port URL"));
    }
    Ok(())
}
