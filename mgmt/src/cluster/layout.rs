//! Where the object model lives in etcd: one key per object, under the fleet's prefix.
//!
//! ```text
//! <prefix>commit                     every change's last write: who committed, when
//! <prefix>declared                   the configuration files' declared baseline
//! <prefix>services/<vpce-svc-…>      one service (its listeners and targets inside)
//! <prefix>endpoints/<vpce-…>         one endpoint
//! <prefix>security-groups/<sg-…>     one security group
//! <prefix>tokens/<scope>/<token>     one ClientToken and the answer it got
//! ```
//!
//! Values are the objects' JSON, as in the state file. One key per object rather than one
//! per account: a change writes only what it touched (a transaction of a few puts, far
//! below etcd's request limit, where an account holding 100k endpoints would not fit in
//! one value at all), and a watch delivers only the objects that changed. The order of
//! each kind is the order of creation, which etcd keeps as each key's `create_revision`.
//!
//! Every change is one transaction conditioned on the `commit` key's `mod_revision`: the
//! revision of the state the change was validated against. A commit by anybody else in
//! between moves it, and the transaction fails instead of overwriting what it did not
//! see.

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::etcd::{Event, Kv, Op};
use crate::model::{
    ClientToken, Endpoint, EndpointId, SecurityGroup, SecurityGroupId, Service, ServiceId, State,
};
use crate::persist::{Change, DeclaredChange, Put};

/// A key or value under the prefix that privlink cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd key {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for LayoutError {}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Commit,
    Declared,
    Service(ServiceId),
    Endpoint(EndpointId),
    SecurityGroup(SecurityGroupId),
    Token(String, String),
    /// Not privlink's (or a later version's): left alone.
    Other,
}

/// The key layout of one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &[u8] {
        self.prefix.as_bytes()
    }

    pub fn commit_key(&self) -> Vec<u8> {
        self.key("commit")
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    fn service_key(&self, id: ServiceId) -> Vec<u8> {
        self.key(&format!("services/{id}"))
    }

    fn endpoint_key(&self, id: EndpointId) -> Vec<u8> {
        self.key(&format!("endpoints/{id}"))
    }

    fn group_key(&self, id: SecurityGroupId) -> Vec<u8> {
        self.key(&format!("security-groups/{id}"))
    }

    fn token_key(&self, scope: &str, token: &str) -> Vec<u8> {
        self.key(&format!("tokens/{scope}/{token}"))
    }

    fn parse_key(&self, key: &[u8]) -> Result<Key, LayoutError> {
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return Ok(Key::Other);
        };
        let Ok(rest) = std::str::from_utf8(rest) else {
            return Ok(Key::Other);
        };
        let bad = |what: &str| LayoutError {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("not a {what} id"),
        };
        Ok(match rest.split_once('/') {
            None if rest == "commit" => Key::Commit,
            None if rest == "declared" => Key::Declared,
            Some(("services", id)) => Key::Service(id.parse().map_err(|_| bad("service"))?),
            Some(("endpoints", id)) => Key::Endpoint(id.parse().map_err(|_| bad("endpoint"))?),
            Some(("security-groups", id)) => {
                Key::SecurityGroup(id.parse().map_err(|_| bad("security group"))?)
            }
            Some(("tokens", st)) => match st.split_once('/') {
                Some((scope, token)) if !scope.is_empty() && !token.is_empty() => {
                    Key::Token(scope.to_owned(), token.to_owned())
                }
                _ => return Err(bad("client token")),
            },
            _ => Key::Other,
        })
    }

    /// The writes of `change`, then the commit record.
    pub fn ops(&self, change: &Change, commit: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        for p in &change.services {
            ops.push(match p {
                Put::Set(s) => Op::Put(self.service_key(s.id), json(s)),
                Put::Remove(id) => Op::Delete(self.service_key(*id)),
            });
        }
        for p in &change.endpoints {
            ops.push(match p {
                Put::Set(e) => Op::Put(self.endpoint_key(e.id), json(e)),
                Put::Remove(id) => Op::Delete(self.endpoint_key(*id)),
            });
        }
        for p in &change.security_groups {
            ops.push(match p {
                Put::Set(g) => Op::Put(self.group_key(g.id), json(g)),
                Put::Remove(id) => Op::Delete(self.group_key(*id)),
            });
        }
        for (scope, token) in &change.tokens_removed {
            ops.push(Op::Delete(self.token_key(scope, token)));
        }
        for t in &change.tokens_added {
            ops.push(Op::Put(self.token_key(&t.scope, &t.token), json(t)));
        }
        match &change.declared {
            None => {}
            Some(DeclaredChange::Set(d)) => ops.push(Op::Put(self.key("declared"), json(d))),
            Some(DeclaredChange::Clear) => ops.push(Op::Delete(self.key("declared"))),
        }
        ops.push(Op::Put(self.commit_key(), commit.to_vec()));
        ops
    }

    /// The state the keys of a full load hold, each kind in creation order, and the
    /// commit record's revision (0 when there is none: nothing was ever committed).
    pub fn state(&self, kvs: &[Kv]) -> Result<(State, i64), LayoutError> {
        let mut sorted: Vec<&Kv> = kvs.iter().collect();
        sorted.sort_by_key(|kv| (kv.create_revision, kv.key.clone()));
        let mut state = State::default();
        let mut commit = 0;
        for kv in sorted {
            match self.parse_key(&kv.key)? {
                Key::Commit => commit = kv.mod_revision,
                Key::Declared => state.declared = Some(value(kv)?),
                Key::Service(_) => state.services.push(value(kv)?),
                Key::Endpoint(_) => state.endpoints.push(value(kv)?),
                Key::SecurityGroup(_) => state.security_groups.push(value(kv)?),
                Key::Token(..) => state.client_tokens.push(value(kv)?),
                Key::Other => {}
            }
        }
        Ok((state, commit))
    }

    /// Applies watched events to `state`, revision by revision. Returns the commit
    /// record's revision when the events moved it. Idempotent: events already in `state`
    /// (a cache written after them) change nothing. Nothing is applied when any event
    /// cannot be used.
    pub fn apply(&self, state: &mut State, events: &[Event]) -> Result<Option<i64>, LayoutError> {
        let mut changes: Vec<Change> = Vec::new();
        let mut commit = None;
        let mut last_rev = None;
        let mut tokens: HashSet<(String, String)> = state
            .client_tokens
            .iter()
            .map(|t| (t.scope.clone(), t.token.clone()))
            .collect();
        for e in events {
            if last_rev != Some(e.revision()) {
                last_rev = Some(e.revision());
                changes.push(Change::default());
            }
            let Some(c) = changes.last_mut() else {
                continue;
            };
            match e {
                Event::Put(kv) => match self.parse_key(&kv.key)? {
                    Key::Commit => commit = Some(kv.mod_revision),
                    Key::Declared => c.declared = Some(DeclaredChange::Set(value(kv)?)),
                    Key::Service(_) => c.services.push(Put::Set(value(kv)?)),
                    Key::Endpoint(_) => c.endpoints.push(Put::Set(value(kv)?)),
                    Key::SecurityGroup(_) => c.security_groups.push(Put::Set(value(kv)?)),
                    Key::Token(scope, token) => {
                        let t: ClientToken = value(kv)?;
                        if tokens.insert((scope, token)) {
                            c.tokens_added.push(t);
                        }
                    }
                    Key::Other => {}
                },
                Event::Delete { key, .. } => match self.parse_key(key)? {
                    Key::Commit | Key::Other => {}
                    Key::Declared => c.declared = Some(DeclaredChange::Clear),
                    Key::Service(id) => c.services.push(Put::Remove(id)),
                    Key::Endpoint(id) => c.endpoints.push(Put::Remove(id)),
                    Key::SecurityGroup(id) => c.security_groups.push(Put::Remove(id)),
                    Key::Token(scope, token) => {
                        if tokens.remove(&(scope.clone(), token.clone())) {
                            c.tokens_removed.push((scope, token));
                        }
                    }
                },
            }
        }
        for c in changes {
            c.apply(state);
        }
        Ok(commit)
    }
}

/// What turned `before` into `after`, object by object (for a difference
/// [`Change::between`] cannot say as appends, removals and changes in place).
pub fn full_change(before: &State, after: &State) -> Change {
    fn diff<K: Copy + Eq + std::hash::Hash, T: Clone + PartialEq>(
        before: &[T],
        after: &[T],
        id: impl Fn(&T) -> K,
    ) -> Vec<Put<K, T>> {
        let old: HashMap<K, &T> = before.iter().map(|t| (id(t), t)).collect();
        let new: HashSet<K> = after.iter().map(&id).collect();
        let mut out: Vec<Put<K, T>> = before
            .iter()
            .filter(|t| !new.contains(&id(t)))
            .map(|t| Put::Remove(id(t)))
            .collect();
        out.extend(
            after
                .iter()
                .filter(|t| old.get(&id(t)) != Some(t))
                .cloned()
                .map(Put::Set),
        );
        out
    }
    let key = |t: &ClientToken| (t.scope.clone(), t.token.clone());
    let old_tokens: HashSet<(String, String)> = before.client_tokens.iter().map(key).collect();
    let new_tokens: HashSet<(String, String)> = after.client_tokens.iter().map(key).collect();
    Change {
        services: diff(&before.services, &after.services, |s: &Service| s.id),
        endpoints: diff(&before.endpoints, &after.endpoints, |e: &Endpoint| e.id),
        security_groups: diff(
            &before.security_groups,
            &after.security_groups,
            |g: &SecurityGroup| g.id,
        ),
        tokens_removed: old_tokens.difference(&new_tokens).cloned().collect(),
        tokens_added: after
            .client_tokens
            .iter()
            .filter(|t| !old_tokens.contains(&key(t)))
            .cloned()
            .collect(),
        declared: (before.declared != after.declared).then(|| {
            after
                .declared
                .clone()
                .map_or(DeclaredChange::Clear, DeclaredChange::Set)
        }),
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn value<T: DeserializeOwned>(kv: &Kv) -> Result<T, LayoutError> {
    serde_json::from_slice(&kv.value).map_err(|e| LayoutError {
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        reason: format!("not a privlink object: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const P: &str = "/fleet/";

    /// The demo's objects, a token and a baseline: every kind of key.
    fn state() -> State {
        let mut s = Config::embedded_default().state();
        s.declared = Some(crate::model::Declared::default());
        s.client_tokens.push(ClientToken {
            scope: "111111111111".into(),
            token: "a/token with slashes".into(),
            op: "create-vpc-endpoint".into(),
            fingerprint: "0123456789abcdef".into(),
            response: serde_json::json!({"ok": 1}),
            created_at: 7,
        });
        s
    }

    /// What etcd would hold after `ops` were put at revisions from `rev` on.
    fn put_all(ops: &[Op], rev: i64) -> Vec<Kv> {
        ops.iter()
            .enumerate()
            .filter_map(|(i, op)| match op {
                Op::Put(k, v) => Some(Kv {
                    key: k.clone(),
                    value: v.clone(),
                    create_revision: rev + i as i64,
                    mod_revision: rev + i as i64,
                }),
                Op::Delete(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_state_written_as_keys_reads_back_the_same_in_creation_order() {
        let l = Layout::new(P);
        let s = state();
        let ops = l.ops(&full_change(&State::default(), &s), b"{}");
        assert!(ops.iter().all(|op| match op {
            Op::Put(k, _) | Op::Delete(k) => k.starts_with(P.as_bytes()),
        }));
        let mut kvs = put_all(&ops, 10);
        // etcd answers in key order, not creation order.
        kvs.sort_by(|a, b| b.key.cmp(&a.key));
        let (back, commit) = l.state(&kvs).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            commit,
            10 + ops.len() as i64 - 1,
            "the commit record is written last"
        );
    }

    #[test]
    fn watched_events_replay_a_change_and_again_change_nothing() {
        let l = Layout::new(P);
        let before = state();
        let mut after = before.clone();
        let gone = after.endpoints.remove(0).id;
        after.client_tokens.clear();
        after.services[0].acceptance_required = !after.services[0].acceptance_required;
        let change = Change::between(
            &before,
            &after,
            &[gone.to_string(), after.services[0].id.to_string()],
        )
        .expect("a change of that shape");
        let ops = l.ops(&change, b"{}");
        let events: Vec<Event> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => Event::Put(Kv {
                    key: k.clone(),
                    value: v.clone(),
                    create_revision: 3,
                    mod_revision: 20,
                }),
                Op::Delete(k) => Event::Delete {
                    key: k.clone(),
                    mod_revision: 20,
                },
            })
            .collect();
        let mut s = before.clone();
        assert_eq!(l.apply(&mut s, &events).unwrap(), Some(20));
        assert_eq!(s, after);
        // A cache written after these events, watched again from before them.
        l.apply(&mut s, &events).unwrap();
        assert_eq!(s, after);
    }

    #[test]
    fn keys_that_are_not_privlinks_are_left_alone_and_bad_ones_refused() {
        let l = Layout::new(P);
        let kv = |k: &str, v: &str| Kv {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
        };
        let (s, commit) = l
            .state(&[
                kv("/fleet/someone-else/x", "?"),
                kv("/other/services/x", "?"),
            ])
            .unwrap();
        assert_eq!((s, commit), (State::default(), 0));
        let e = l
            .state(&[kv("/fleet/services/not-an-id", "{}")])
            .unwrap_err();
        assert!(e.to_string().contains("/fleet/services/not-an-id"), "{e}");
        let e = l
            .state(&[kv(
                "/fleet/services/vpce-svc-0d0000000000000d1",
                "{\"id\": 3}",
            )])
            .unwrap_err();
        assert!(e.reason.contains("not a privlink object"), "{e}");
        // A bad event changes nothing, even after good ones of the same batch.
        let mut st = state();
        let before = st.clone();
        let events = [
            Event::Delete {
                key: format!("{P}endpoints/{}", before.endpoints[0].id).into_bytes(),
                mod_revision: 5,
            },
            Event::Put(kv("/fleet/security-groups/sg-x", "{}")),
        ];
        assert!(l.apply(&mut st, &events).is_err());
        assert_eq!(st, before);
    }

    #[test]
    fn full_change_says_every_difference() {
        let before = state();
        let mut after = before.clone();
        after.endpoints.reverse();
        after.services.clear();
        after.declared = None;
        let c = full_change(&before, &after);
        let mut s = before.clone();
        c.clone().apply(&mut s);
        assert_eq!(s.services, after.services);
        assert_eq!(s.declared, None);
        let ids = |v: &[crate::model::Endpoint]| {
            let mut ids: Vec<String> = v.iter().map(|e| e.id.to_string()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&s.endpoints), ids(&after.endpoints));
    }
}
