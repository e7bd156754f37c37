//! A journal record: what one accepted change did to the [`State`], as the new value of
//! every object it touched (or its removal), so that replaying the records of a journal
//! over its checkpoint gives back exactly the state the store held, objects in the same
//! order.
//!
//! Why the touched objects and not the request: a request is not a function of the state
//! alone (new ids are random, times come from the clock, quotas and accounts from the
//! configuration of that moment), so replaying it could give another state than the one
//! acknowledged. The new values are what was acknowledged, and replaying them needs no
//! configuration at all.
//!
//! The store only ever appends new objects, removes objects keeping the others in order,
//! and changes objects in place (see `store/`); [`Change::between`] relies on that, checks
//! what it can cheaply, and declines (the caller then writes a whole checkpoint) when the
//! difference is not of that shape.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{
    ClientToken, Declared, Endpoint, EndpointId, ObjectList as List, SecurityGroup,
    SecurityGroupId, Service, ServiceId, State,
};

/// One object's new value, or its removal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Put<K, T> {
    /// The object as it is now: replaces the object of the same id where it is, or is
    /// appended when there is none.
    Set(T),
    /// The object of this id is gone.
    Remove(K),
}

/// The baseline of declared objects, replaced or cleared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DeclaredChange {
    /// The new baseline.
    Set(Arc<Declared>),
    /// No baseline.
    Clear,
}

/// Whether a change may have replaced the declared baseline ([`State::declared`]): only a
/// start or a configuration reload does; requests and ticks keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Left as it was.
    Kept,
    /// Possibly replaced: compared.
    MayChange,
}

/// What one change did to the state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Change {
    /// Services set or removed, new ones in the order they were appended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Put<ServiceId, Service>>,
    /// Endpoints set or removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Put<EndpointId, Endpoint>>,
    /// Security groups set or removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<Put<SecurityGroupId, SecurityGroup>>,
    /// Client tokens forgotten, by (scope, token).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens_removed: Vec<(String, String)>,
    /// Client tokens remembered, appended in this order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tokens_added: Vec<ClientToken>,
    /// The declared baseline, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub declared: Option<DeclaredChange>,
}

/// An object with an id, kept in a `Vec` of the state.
trait Keyed {
    type Id: Copy + PartialEq + Eq + std::hash::Hash + FromStr;
    fn id(&self) -> Self::Id;
}

impl Keyed for Service {
    type Id = ServiceId;
    fn id(&self) -> ServiceId {
        self.id
    }
}

impl Keyed for Endpoint {
    type Id = EndpointId;
    fn id(&self) -> EndpointId {
        self.id
    }
}

impl Keyed for SecurityGroup {
    type Id = SecurityGroupId;
    fn id(&self) -> SecurityGroupId {
        self.id
    }
}

/// The puts that turn `before` into `after`, looking only at the objects whose ids are in
/// `touched` (every id that differs must be there), and for them only where the two lists
/// may differ; `None` when `after` is not `before` with objects changed in place, removed,
/// and new ones appended.
fn puts<T: Keyed + Clone + PartialEq, L: List<T>>(
    before: &L,
    after: &L,
    touched: &[T::Id],
) -> Option<Vec<Put<T::Id, T>>> {
    let mut seen = HashSet::with_capacity(touched.len());
    let mut removed = Vec::new();
    // (index in `after`, object, whether it is new)
    let mut set: Vec<(usize, &T, bool)> = Vec::new();
    // An object outside these ranges lies, at the same place, in both lists (ids are
    // unique in each): it is unchanged.
    let (was, is) = before.differing(after);
    for &id in touched {
        if !seen.insert(id) {
            continue;
        }
        let old = before.position_in(was.clone(), |x| x.id() == id);
        match (old, after.position_in(is.clone(), |x| x.id() == id)) {
            (Some(_), None) => removed.push(Put::Remove(id)),
            (old, Some(i)) => {
                if old.is_some_and(|j| before.at(j) == after.at(i)) {
                    continue;
                }
                set.push((i, after.at(i), old.is_none()));
            }
            (None, None) => {}
        }
    }
    set.sort_by_key(|&(i, _, _)| i);
    let added = set.iter().filter(|s| s.2).count();
    // The new objects must be the last ones, and the lengths must add up; what is
    // between is checked by the tests that replay every change (see `apply`).
    if before.len() - removed.len() + added != after.len()
        || set
            .iter()
            .filter(|s| s.2)
            .enumerate()
            .any(|(k, s)| s.0 != after.len() - added + k)
    {
        return None;
    }
    let mut out = removed;
    out.extend(set.into_iter().map(|(_, x, _)| Put::Set(x.clone())));
    Some(out)
}

fn apply_puts<T: Keyed, L: List<T>>(list: &mut L, puts: Vec<Put<T::Id, T>>) {
    let gone: HashSet<T::Id> = puts
        .iter()
        .filter_map(|p| match p {
            Put::Remove(id) => Some(*id),
            Put::Set(_) => None,
        })
        .collect();
    if !gone.is_empty() {
        list.keep(|x| !gone.contains(&x.id()));
    }
    for p in puts {
        if let Put::Set(x) = p {
            match list.position_in(0..list.len(), |y| y.id() == x.id()) {
                Some(i) => list.replace(i, x),
                None => list.append(x),
            }
        }
    }
}

/// The ids in `touched` that parse as `I` (the store names objects by their ids' text).
fn ids<I: FromStr>(touched: &[String]) -> Vec<I> {
    touched.iter().filter_map(|t| t.parse().ok()).collect()
}

impl Change {
    /// What turned `before` into `after`, where `touched` names (as the store's
    /// [`crate::store::Outcome::touched`] does) every service, endpoint and security group
    /// that differs. `None` when the difference is not one a record can say exactly; the
    /// caller then saves the whole state.
    ///
    /// Costs O(touched × objects) id comparisons (for the endpoints, only of those outside
    /// the chunks the two versions share) plus O(client tokens), not a walk over every
    /// object's contents.
    pub fn between(before: &State, after: &State, touched: &[String]) -> Option<Change> {
        Self::between_with(before, after, touched, Baseline::MayChange)
    }

    /// [`between`](Self::between), told whether the declared baseline may differ: it is
    /// as large as every declared object, so comparing it costs a walk over them (30 ms at
    /// 1M declared endpoints) that requests and ticks, which never change it, need not
    /// pay. (Debug builds check the claim with the replay below.)
    pub fn between_with(
        before: &State,
        after: &State,
        touched: &[String],
        baseline: Baseline,
    ) -> Option<Change> {
        // Every field of the state is accounted for here: a new field that this function
        // does not know fails to compile instead of being lost from the journal.
        let State {
            services,
            endpoints,
            security_groups,
            client_tokens,
            declared,
        } = after;
        let (tokens_removed, tokens_added) = tokens(&before.client_tokens, client_tokens)?;
        let change = Change {
            services: puts(&before.services, services, &ids(touched))?,
            endpoints: puts(&before.endpoints, endpoints, &ids(touched))?,
            security_groups: puts(&before.security_groups, security_groups, &ids(touched))?,
            tokens_removed,
            tokens_added,
            declared: if baseline == Baseline::Kept || before.declared == *declared {
                None
            } else {
                Some(
                    declared
                        .clone()
                        .map_or(DeclaredChange::Clear, DeclaredChange::Set),
                )
            },
        };
        #[cfg(debug_assertions)]
        {
            // Tests and fuzzing run debug builds: every record they write is proven to
            // replay into the state it stands for.
            let mut replayed = before.clone();
            change.clone().apply(&mut replayed);
            debug_assert!(
                replayed == *after,
                "a journal record does not replay into the state it was made from"
            );
        }
        Some(change)
    }

    /// Replays the record over `state`.
    pub fn apply(self, state: &mut State) {
        apply_puts(&mut state.services, self.services);
        apply_puts(&mut state.endpoints, self.endpoints);
        apply_puts(&mut state.security_groups, self.security_groups);
        if !self.tokens_removed.is_empty() {
            let gone: HashSet<(String, String)> = self.tokens_removed.into_iter().collect();
            state
                .client_tokens
                .retain(|t| !gone.contains(&(t.scope.clone(), t.token.clone())));
        }
        state.client_tokens.extend(self.tokens_added);
        match self.declared {
            None => {}
            Some(DeclaredChange::Set(d)) => state.declared = Some(d),
            Some(DeclaredChange::Clear) => state.declared = None,
        }
    }

    /// Whether the record changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == Change::default()
    }
}

/// Tokens forgotten and tokens appended: `after` must be `before` with some removed (the
/// others in order) and new ones at the end.
#[allow(clippy::type_complexity)]
fn tokens(
    before: &[ClientToken],
    after: &[ClientToken],
) -> Option<(Vec<(String, String)>, Vec<ClientToken>)> {
    if before == after {
        return Some((Vec::new(), Vec::new()));
    }
    let key = |t: &ClientToken| (t.scope.clone(), t.token.clone());
    let kept: HashSet<(String, String)> = after.iter().map(key).collect();
    let removed: Vec<(String, String)> = before
        .iter()
        .map(key)
        .filter(|k| !kept.contains(k))
        .collect();
    let old = before.len() - removed.len();
    let survivors = before.iter().filter(|t| kept.contains(&key(t)));
    if after.len() < old || !survivors.eq(after[..old].iter()) {
        return None;
    }
    Some((removed, after[old..].to_vec()))
}
