//! Applying the configuration file's declared objects: only what changed in the file since
//! it was last applied, so the state file stays the truth for everything else.
//!
//! For each declared service, endpoint and security group, by id, between the baseline
//! (`old`, what the file declared when it was last applied) and the file now (`new`):
//!
//! - added to the file: put into the state (replacing an object of the same id);
//! - changed in the file: replaces the state's object, if the state still has it (a
//!   target that vanished from a listener drains instead of being cut); an object deleted
//!   at run time is not brought back, and the note says so;
//! - removed from the file: deleted from the state as the socket would delete it (an
//!   endpoint goes to `deleting`; a service with connected endpoints is refused);
//! - unchanged in the file: left as the state has it, whatever was done at run time.
//!
//! Nothing here validates the result; the caller does, and refuses the whole load if it is
//! invalid.

use std::collections::{HashMap, HashSet};

use super::ApiError;
use crate::model::{Declared, EndpointState, State, TargetState};

/// Applies the difference between `old` and `new` to `state` at `now`. Returns one line
/// per change, for the log.
pub(super) fn apply(
    state: &mut State,
    old: &Declared,
    new: &Declared,
    now: u64,
) -> Result<Vec<String>, ApiError> {
    let mut notes = Vec::new();

    for g in &new.security_groups {
        match old.security_groups.iter().find(|o| o.id == g.id) {
            Some(o) if o == g => {}
            prev => {
                let slot = state.security_groups.iter_mut().find(|s| s.id == g.id);
                match (prev, slot) {
                    (_, Some(s)) => {
                        *s = g.clone();
                        notes.push(format!("security group {}: declared, applied", g.id));
                    }
                    (None, None) => {
                        state.security_groups.push(g.clone());
                        notes.push(format!("security group {}: added", g.id));
                    }
                    (Some(_), None) => notes.push(format!(
                        "security group {}: changed in the file but deleted at run time; not \
                         re-created",
                        g.id
                    )),
                }
            }
        }
    }

    for svc in &new.services {
        match old.services.iter().find(|o| o.id == svc.id) {
            Some(o) if o == svc => {}
            prev => match (prev, state.services.iter_mut().find(|s| s.id == svc.id)) {
                (_, Some(current)) => {
                    let mut next = svc.clone();
                    keep_vanished_targets_draining(&mut next, current, now);
                    *current = next;
                    notes.push(format!("service {}: declared, applied", svc.id));
                }
                (None, None) => {
                    state.services.push(svc.clone());
                    notes.push(format!("service {}: added", svc.id));
                }
                (Some(_), None) => notes.push(format!(
                    "service {}: changed in the file but deleted at run time; not re-created",
                    svc.id
                )),
            },
        }
    }

    // Endpoints are the many (100k declared ones are a case the benchmarks run): looked
    // up by id, not searched, so a start or reload costs O(endpoints), not its square.
    let old_endpoints: HashMap<_, _> = old.endpoints.iter().map(|o| (o.id, o)).collect();
    let mut at: HashMap<_, usize> = state
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id, i))
        .collect();
    for e in &new.endpoints {
        match old_endpoints.get(&e.id).copied() {
            Some(o) if o == e => {}
            prev => match (
                prev,
                at.get(&e.id).and_then(|&i| state.endpoints.get_mut(i)),
            ) {
                (_, Some(current)) => {
                    let created_at = current.created_at;
                    *current = e.clone();
                    current.created_at = created_at;
                    notes.push(format!("endpoint {}: declared, applied", e.id));
                }
                (None, None) => {
                    let mut e = e.clone();
                    e.created_at = now;
                    notes.push(format!("endpoint {}: added", e.id));
                    at.insert(e.id, state.endpoints.len());
                    state.endpoints.push(e);
                }
                (Some(_), None) => notes.push(format!(
                    "endpoint {}: changed in the file but deleted at run time; not re-created",
                    e.id
                )),
            },
        }
    }

    // Removals last, so an object moved from one declaration to another is not lost.
    let new_endpoints: HashSet<_> = new.endpoints.iter().map(|n| n.id).collect();
    for e in &old.endpoints {
        if new_endpoints.contains(&e.id) {
            continue;
        }
        if let Some(cur) = at.get(&e.id).and_then(|&i| state.endpoints.get_mut(i)) {
            if !matches!(cur.state, EndpointState::Deleting | EndpointState::Deleted) {
                cur.state = EndpointState::Deleting;
                cur.deleted_at = Some(now);
                notes.push(format!(
                    "endpoint {}: removed from the file, deleting",
                    e.id
                ));
            }
        }
    }
    for svc in &old.services {
        if new.services.iter().any(|n| n.id == svc.id) {
            continue;
        }
        if state.services.iter().all(|s| s.id != svc.id) {
            continue;
        }
        if let Some(e) = state.endpoints.iter().find(|e| {
            e.service_id == svc.id
                && matches!(
                    e.state,
                    EndpointState::PendingAcceptance | EndpointState::Available
                )
        }) {
            return Err(ApiError::new(
                "ServiceInUse",
                format!(
                    "service {} was removed from the file but has a connected endpoint {} ({}); \
                     reject it first (or keep the declaration)",
                    svc.id, e.id, e.state
                ),
            ));
        }
        state.services.retain(|s| s.id != svc.id);
        super::services::fail_endpoints_of(state, svc.id);
        notes.push(format!(
            "service {}: removed from the file, deleted",
            svc.id
        ));
    }
    for g in &old.security_groups {
        if new.security_groups.iter().any(|n| n.id == g.id) {
            continue;
        }
        if state.security_groups.iter().any(|s| s.id == g.id) {
            if let Some(e) = state
                .endpoints
                .iter()
                .find(|e| e.security_group_ids.contains(&g.id))
            {
                return Err(ApiError::new(
                    "DependencyViolation",
                    format!(
                        "security group {} was removed from the file but endpoint {} uses it",
                        g.id, e.id
                    ),
                ));
            }
            state.security_groups.retain(|s| s.id != g.id);
            notes.push(format!(
                "security group {}: removed from the file, deleted",
                g.id
            ));
        }
    }
    Ok(notes)
}

/// Targets of `current`'s listeners that `next` no longer lists keep draining (their
/// deregistration delay starts now), so their flows drain rather than break.
fn keep_vanished_targets_draining(
    next: &mut crate::model::Service,
    current: &crate::model::Service,
    now: u64,
) {
    for l in next.listeners.iter_mut() {
        let Some(prev) = current
            .listeners
            .iter()
            .find(|p| p.protocol == l.protocol && p.port == l.port)
        else {
            continue;
        };
        for t in &prev.targets {
            if !l.targets.iter().any(|n| n.ip == t.ip && n.port == t.port) {
                let mut gone = t.clone();
                if gone.state != TargetState::Draining {
                    gone.state = TargetState::Draining;
                    gone.deregistered_at = Some(now);
                }
                l.targets.push(gone);
            }
        }
    }
}
