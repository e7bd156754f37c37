//! Quotas: how much one account may create (`[quotas]`), and the one table size the data
//! plane imposes (a listener's targets must be fewer than `tables.maglev_size`).
//!
//! [`check`] compares a proposed state with the current one. Only growth past a limit is
//! refused: lowering a quota below what already exists leaves those objects alone, and a
//! request that shrinks an over-quota count is still accepted. The store runs it on every
//! change and the configuration on its declared objects (against an empty state), so
//! both refuse exactly what the snapshot build would refuse.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::QuotasConfig;
use crate::model::{EndpointIndex, EndpointKey, EndpointState, KeyPath, State, VpcId};

/// A quota a state goes beyond. Prints `<what> <scope>: <count> exceed the limit of
/// <limit> (<key>)`; code e.g. `VpcEndpointLimitExceeded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaError {
    /// The EC2-style code, `…LimitExceeded`.
    pub code: &'static str,
    /// What is counted, e.g. `interface endpoints in vpc-…`.
    pub what: String,
    /// How many there would be.
    pub count: usize,
    /// The limit.
    pub limit: usize,
    /// The configuration key that sets the limit, e.g. `quotas.endpoints_per_vpc`.
    pub key: &'static str,
    /// Where in the state (or the configuration's declarations) the excess is, e.g.
    /// `services[0].listeners[1].targets`.
    pub at: KeyPath,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} would exceed the limit of {} ({})",
            self.what, self.count, self.limit, self.key
        )
    }
}

impl std::error::Error for QuotaError {}

/// The limits a state is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `[quotas]`.
    pub quotas: QuotasConfig,
    /// `tables.maglev_size`: a listener holds fewer targets than this.
    pub maglev_size: u32,
}

impl Limits {
    /// Most targets a listener may hold: the quota, and always fewer than the Maglev
    /// table's slots (Maglev gives every target at least one slot).
    pub fn targets_per_listener(&self) -> (usize, &'static str) {
        let quota = to_usize(self.quotas.targets_per_listener);
        let maglev = to_usize(self.maglev_size).saturating_sub(1);
        if maglev < quota {
            (maglev, "tables.maglev_size - 1")
        } else {
            (quota, "quotas.targets_per_listener")
        }
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Counts of one kind of object per scope, in scope order (so the error reported is the
/// same every time).
struct Counts<K>(BTreeMap<K, usize>);

impl<K: Ord> Counts<K> {
    /// Runs of one key (100k endpoints in a handful of VPCs come in long runs) are
    /// added up before the map is looked at.
    fn of(keys: impl Iterator<Item = (K, usize)>) -> Self {
        let mut m = BTreeMap::new();
        let mut run: Option<(K, usize)> = None;
        for (k, n) in keys {
            match &mut run {
                Some((rk, rn)) if *rk == k => *rn += n,
                _ => {
                    if let Some((rk, rn)) = run.replace((k, n)) {
                        *m.entry(rk).or_insert(0) += rn;
                    }
                }
            }
        }
        if let Some((rk, rn)) = run {
            *m.entry(rk).or_insert(0) += rn;
        }
        Self(m)
    }
}

/// One quota: its code, its configuration key and its limit.
struct Quota {
    code: &'static str,
    key: &'static str,
    limit: usize,
}

impl Quota {
    fn new(code: &'static str, key: &'static str, limit: u32) -> Self {
        Self {
            code,
            key,
            limit: to_usize(limit),
        }
    }

    /// Refuses the first scope whose count in `next` grows past the limit; `describe`
    /// says what is counted there and where it is.
    fn check<K: Ord>(
        &self,
        next: &State,
        before: &State,
        count: impl Fn(&State) -> Counts<K>,
        describe: impl FnOnce(&K) -> (String, KeyPath),
    ) -> Result<(), QuotaError> {
        let now = count(next);
        // Nothing over the limit (every request but a refused one): `before` need not be
        // counted at all.
        if now.0.values().all(|&n| n <= self.limit) {
            return Ok(());
        }
        let was = count(before);
        let grown = now
            .0
            .iter()
            .find(|(k, &n)| n > self.limit && n > was.0.get(*k).copied().unwrap_or(0));
        match grown {
            None => Ok(()),
            Some((k, &n)) => Err(self.exceeded(k, n, describe)),
        }
    }
}

impl Quota {
    fn exceeded<K>(
        &self,
        k: &K,
        count: usize,
        describe: impl FnOnce(&K) -> (String, KeyPath),
    ) -> QuotaError {
        let (what, at) = describe(k);
        QuotaError {
            code: self.code,
            what,
            count,
            limit: self.limit,
            key: self.key,
            at,
        }
    }

    /// [`Quota::check`] of a count each object has of its own, keyed by its id (unique
    /// in a valid state): only the objects of `next` over the limit are looked for in
    /// `before`, so a change among 100k endpoints builds no map of all of them. `next`
    /// may leave out objects known to be the same in `before` (they cannot have grown).
    fn check_each<'a, T: 'a, K: Ord + Copy>(
        &self,
        next: impl Iterator<Item = &'a T>,
        before: impl Iterator<Item = &'a T>,
        key: impl Fn(&T) -> K,
        count: impl Fn(&T) -> usize,
        describe: impl FnOnce(&K) -> (String, KeyPath),
    ) -> Result<(), QuotaError> {
        let over: BTreeMap<K, usize> = next
            .map(|x| (key(x), count(x)))
            .filter(|(_, n)| *n > self.limit)
            .collect();
        if over.is_empty() {
            return Ok(());
        }
        let mut was: BTreeMap<K, usize> = BTreeMap::new();
        for x in before {
            let k = key(x);
            if over.contains_key(&k) {
                *was.entry(k).or_insert(0) += count(x);
            }
        }
        let grown = over
            .iter()
            .find(|(k, &n)| n > was.get(*k).copied().unwrap_or(0));
        match grown {
            None => Ok(()),
            Some((k, &n)) => Err(self.exceeded(k, n, describe)),
        }
    }
}

/// Checks `next` against `limits`, counting only growth relative to `before`.
pub fn check(next: &State, before: &State, limits: &Limits) -> Result<(), QuotaError> {
    check_with(next, before, limits, &EndpointIndex::default())
}

/// [`check`], with an index of endpoints: the store's, of the state in force, so that a
/// change reads only the endpoints it did not share with that state.
pub fn check_with(
    next: &State,
    before: &State,
    limits: &Limits,
    index: &EndpointIndex,
) -> Result<(), QuotaError> {
    let q = &limits.quotas;
    let endpoint_at =
        |id| KeyPath::item("endpoints", last(next.endpoints.iter().map(|e| e.id == id)));
    let group_at = |id| {
        KeyPath::item(
            "security_groups",
            last(next.security_groups.iter().map(|g| g.id == id)),
        )
    };

    // Per VPC, only growth is refused: a VPC whose count the change does not raise is
    // never over because of it, so only the VPCs it raises are looked up.
    let endpoints = Quota::new(
        "VpcEndpointLimitExceeded",
        "quotas.endpoints_per_vpc",
        q.endpoints_per_vpc,
    );
    // Only a VPC with a live endpoint where `next` differs from `before` can have grown.
    let (_, is) = before.endpoints.unshared(&next.endpoints);
    let mut vpcs: Vec<VpcId> = (next.endpoints.iter_range(is.clone()))
        .filter(|e| e.state != EndpointState::Deleted)
        .map(|e| e.vpc_id)
        .collect();
    vpcs.sort_unstable();
    vpcs.dedup();
    for vpc in vpcs {
        let total = index.count_in(&next.endpoints, EndpointKey::Live(vpc));
        if total > endpoints.limit
            && total > index.count_in(&before.endpoints, EndpointKey::Live(vpc))
        {
            return Err(endpoints.exceeded(&vpc, total, |vpc| {
                let i = last(next.endpoints.iter().map(|e| e.vpc_id == *vpc));
                (
                    format!("interface endpoints in {vpc}"),
                    KeyPath::item("endpoints", i),
                )
            }));
        }
    }
    Quota::new(
        "VpcEndpointServiceLimitExceeded",
        "quotas.services_per_account",
        q.services_per_account,
    )
    .check(
        next,
        before,
        |s| Counts::of(s.services.iter().map(|x| (x.owner, 1))),
        |owner| {
            let i = last(next.services.iter().map(|x| x.owner == *owner));
            (
                format!("endpoint services of account {owner}"),
                KeyPath::item("services", i),
            )
        },
    )?;
    Quota::new(
        "ListenerLimitExceeded",
        "quotas.listeners_per_service",
        q.listeners_per_service,
    )
    .check(
        next,
        before,
        |s| Counts::of(s.services.iter().map(|x| (x.id, x.listeners.len()))),
        |id| {
            let i = last(next.services.iter().map(|x| x.id == *id));
            (
                format!("listeners of service {id}"),
                KeyPath::item("services", i).key("listeners"),
            )
        },
    )?;
    let (limit, key) = limits.targets_per_listener();
    Quota {
        code: "TargetLimitExceeded",
        key,
        limit,
    }
    .check(
        next,
        before,
        |s| {
            Counts::of(s.services.iter().flat_map(|x| {
                x.listeners
                    .iter()
                    .map(move |l| ((x.id, l.protocol, l.port), l.targets.len()))
            }))
        },
        |&(id, protocol, port)| {
            (
                format!("targets of service {id} listener {protocol}/{port}"),
                target_path(next, id, protocol, port),
            )
        },
    )?;
    Quota::new(
        "SecurityGroupLimitExceeded",
        "quotas.security_groups_per_account",
        q.security_groups_per_account,
    )
    .check(
        next,
        before,
        |s| Counts::of(s.security_groups.iter().map(|g| (g.owner, 1))),
        |owner| {
            let i = last(next.security_groups.iter().map(|g| g.owner == *owner));
            (
                format!("security groups of account {owner}"),
                KeyPath::item("security_groups", i),
            )
        },
    )?;
    Quota::new(
        "RulesPerSecurityGroupLimitExceeded",
        "quotas.rules_per_security_group",
        q.rules_per_security_group,
    )
    .check(
        next,
        before,
        |s| Counts::of(s.security_groups.iter().map(|g| (g.id, g.ingress.len()))),
        |id| {
            (
                format!("ingress rules of security group {id}"),
                group_at(*id).key("ingress"),
            )
        },
    )?;
    Quota::new(
        "SecurityGroupsPerInterfaceLimitExceeded",
        "quotas.security_groups_per_endpoint",
        q.security_groups_per_endpoint,
    )
    .check_each(
        next.endpoints.iter_range(is.clone()),
        before.endpoints.iter(),
        |e| e.id,
        |e| e.security_group_ids.len(),
        |id| {
            (
                format!("security groups of endpoint {id}"),
                endpoint_at(*id).key("security_group_ids"),
            )
        },
    )?;
    Quota::new(
        "PolicySizeLimitExceeded",
        "quotas.policy_characters",
        q.policy_characters,
    )
    .check_each(
        next.endpoints.iter_range(is.clone()),
        before.endpoints.iter(),
        |e| e.id,
        |e| e.policy.as_ref().map_or(0, policy_characters),
        |id| {
            (
                format!("characters of the policy of endpoint {id}"),
                endpoint_at(*id).key("policy"),
            )
        },
    )?;
    Quota::new(
        "ClientTokenLimitExceeded",
        "quotas.client_tokens_per_account",
        q.client_tokens_per_account,
    )
    .check(
        next,
        before,
        |s| Counts::of(s.client_tokens.iter().map(|t| (t.scope.clone(), 1))),
        |scope| {
            (
                format!("outstanding client tokens of {scope}"),
                KeyPath::new().key("client_tokens"),
            )
        },
    )
}

/// The index of the last item for which `hits` says true (0 if none).
fn last(hits: impl Iterator<Item = bool>) -> usize {
    hits.enumerate()
        .filter(|(_, h)| *h)
        .map(|(i, _)| i)
        .last()
        .unwrap_or(0)
}

fn target_path(
    s: &State,
    id: crate::model::ServiceId,
    protocol: crate::model::Protocol,
    port: u16,
) -> KeyPath {
    let i = last(s.services.iter().map(|x| x.id == id));
    let j = s.services.get(i).map_or(0, |x| {
        last(
            x.listeners
                .iter()
                .map(|l| l.protocol == protocol && l.port == port),
        )
    });
    KeyPath::item("services", i)
        .key("listeners")
        .index(j)
        .key("targets")
}

/// A policy document's size as the cloud counts it: characters of its compact JSON.
pub fn policy_characters(doc: &serde_json::Value) -> usize {
    doc.to_string().chars().count()
}
