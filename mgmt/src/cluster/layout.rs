//! Where the object model lives in etcd: one key per object, under the fleet's prefix.
//!
//! ```text
//! <prefix>commit                              every change's last write: who, when
//! <prefix>services/<vpce-svc-…>               one service (its listeners and targets inside)
//! <prefix>endpoints/<vpce-…>                  one endpoint
//! <prefix>security-groups/<sg-…>              one security group
//! <prefix>tokens/<scope>/<token>              one ClientToken and the answer it got
//! <prefix>declared                            there is a declared baseline ("{}")
//! <prefix>declared/services/<id>              one object of the configuration files'
//! <prefix>declared/endpoints/<id>             declared baseline (what they declared when
//! <prefix>declared/security-groups/<id>       last applied)
//! ```
//!
//! Values are the objects' JSON, as in the state file. One key per object rather than one
//! per account (or one for the baseline): a change writes only what it touched (a
//! transaction of a few puts, far below etcd's request limit, where an account holding
//! 100k endpoints would not fit in one value at all), and a watch delivers only the
//! objects that changed. The order of each kind is the order of creation, which etcd
//! keeps as each key's `create_revision`.
//!
//! Every change is one transaction conditioned on the `commit` key's `mod_revision`: the
//! revision of the state the change was validated against. A commit by anybody else in
//! between moves it, and the transaction fails instead of overwriting what it did not
//! see.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::etcd::{Event, Kv, Op};
use crate::model::{
    ClientToken, Declared, Endpoint, EndpointId, ObjectList, SecurityGroup, SecurityGroupId,
    Service, ServiceId, State,
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

/// The kinds of object, live or declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Endpoint,
    Group,
}

/// What a key under the prefix names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Commit,
    /// The declared baseline exists.
    Declared,
    Object {
        declared: bool,
        kind: Kind,
        id: String,
    },
    Token(String, String),
    /// Not privlink's (or a later version's): left alone.
    Other,
}

/// One object of a key, parsed.
#[derive(Debug)]
enum Value {
    Service(Service),
    Endpoint(Endpoint),
    Group(SecurityGroup),
}

/// One event, parsed and checked: applied only once every event of a batch is.
#[derive(Debug)]
enum Step {
    Commit(i64),
    Declared(bool),
    Set {
        declared: bool,
        value: Value,
    },
    Remove {
        declared: bool,
        kind: Kind,
        id: String,
    },
    Token(ClientToken),
    Untoken(String, String),
}

/// Puts of services, endpoints and security groups.
type Puts<'a> = (
    &'a [Put<ServiceId, Service>],
    &'a [Put<EndpointId, Endpoint>],
    &'a [Put<SecurityGroupId, SecurityGroup>],
);

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

    pub fn prefix_str(&self) -> &str {
        &self.prefix
    }

    pub fn commit_key(&self) -> Vec<u8> {
        self.key("commit")
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    fn object_key(&self, declared: bool, kind: Kind, id: &str) -> Vec<u8> {
        let d = if declared { "declared/" } else { "" };
        let k = match kind {
            Kind::Service => "services",
            Kind::Endpoint => "endpoints",
            Kind::Group => "security-groups",
        };
        self.key(&format!("{d}{k}/{id}"))
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
        let (declared, rest) = match rest.strip_prefix("declared/") {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let object = |kind: Kind, id: &str| Key::Object {
            declared,
            kind,
            id: id.to_owned(),
        };
        Ok(match rest.split_once('/') {
            None if rest == "commit" && !declared => Key::Commit,
            None if rest == "declared" && !declared => Key::Declared,
            Some(("services", id)) => {
                id.parse::<ServiceId>().map_err(|_| bad("service"))?;
                object(Kind::Service, id)
            }
            Some(("endpoints", id)) => {
                id.parse::<EndpointId>().map_err(|_| bad("endpoint"))?;
                object(Kind::Endpoint, id)
            }
            Some(("security-groups", id)) => {
                id.parse::<SecurityGroupId>()
                    .map_err(|_| bad("security group"))?;
                object(Kind::Group, id)
            }
            Some(("tokens", st)) if !declared => match st.split_once('/') {
                Some((scope, token)) if !scope.is_empty() && !token.is_empty() => {
                    Key::Token(scope.to_owned(), token.to_owned())
                }
                _ => return Err(bad("client token")),
            },
            _ => Key::Other,
        })
    }

    fn puts<K: ToString, T: Serialize>(
        &self,
        ops: &mut Vec<Op>,
        declared: bool,
        kind: Kind,
        puts: &[Put<K, T>],
        id: impl Fn(&T) -> String,
    ) {
        for p in puts {
            ops.push(match p {
                Put::Set(x) => Op::Put(self.object_key(declared, kind, &id(x)), json(x)),
                Put::Remove(k) => Op::Delete(self.object_key(declared, kind, &k.to_string())),
            });
        }
    }

    /// The writes of one set of puts of each kind, live or declared.
    fn kinds(&self, ops: &mut Vec<Op>, declared: bool, (services, endpoints, groups): Puts<'_>) {
        self.puts(ops, declared, Kind::Service, services, |s| s.id.to_string());
        self.puts(ops, declared, Kind::Endpoint, endpoints, |e| {
            e.id.to_string()
        });
        self.puts(ops, declared, Kind::Group, groups, |g| g.id.to_string());
    }

    /// The writes of `change` (made from a state whose baseline was `prev_declared`), then
    /// the commit record.
    pub fn ops(&self, change: &Change, prev_declared: Option<&Declared>, commit: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        let live = (
            &change.services[..],
            &change.endpoints[..],
            &change.security_groups[..],
        );
        self.kinds(&mut ops, false, live);
        for (scope, token) in &change.tokens_removed {
            ops.push(Op::Delete(self.token_key(scope, token)));
        }
        for t in &change.tokens_added {
            ops.push(Op::Put(self.token_key(&t.scope, &t.token), json(t)));
        }
        let empty = Declared::default();
        let old = prev_declared.unwrap_or(&empty);
        let new = match &change.declared {
            None => None,
            Some(DeclaredChange::Set(d)) => Some(&**d),
            Some(DeclaredChange::Clear) => Some(&empty),
        };
        if let Some(new) = new {
            let services = diff(&old.services, &new.services, |s| s.id);
            let endpoints = diff(&old.endpoints, &new.endpoints, |e| e.id);
            let groups = diff(&old.security_groups, &new.security_groups, |g| g.id);
            self.kinds(&mut ops, true, (&services, &endpoints, &groups));
            match (&change.declared, prev_declared) {
                (Some(DeclaredChange::Clear), Some(_)) => {
                    ops.push(Op::Delete(self.key("declared")))
                }
                (Some(DeclaredChange::Set(_)), None) => {
                    ops.push(Op::Put(self.key("declared"), b"{}".to_vec()))
                }
                _ => {}
            }
        }
        ops.push(Op::Put(self.commit_key(), commit.to_vec()));
        ops
    }

    fn value(&self, kind: Kind, kv: &Kv) -> Result<Value, LayoutError> {
        Ok(match kind {
            Kind::Service => Value::Service(value(kv)?),
            Kind::Endpoint => Value::Endpoint(value(kv)?),
            Kind::Group => Value::Group(value(kv)?),
        })
    }

    /// The state the keys of a full load hold, each kind in creation order, and the
    /// commit record's revision (0 when there is none: nothing was ever committed).
    pub fn state(&self, kvs: &[Kv]) -> Result<(State, i64), LayoutError> {
        let mut sorted: Vec<&Kv> = kvs.iter().collect();
        sorted.sort_by(|a, b| (a.create_revision, &a.key).cmp(&(b.create_revision, &b.key)));
        let mut state = State::default();
        let mut commit = 0;
        for kv in sorted {
            match self.parse_key(&kv.key)? {
                Key::Commit => commit = kv.mod_revision,
                Key::Declared => {
                    state.declared.get_or_insert_with(Arc::default);
                }
                Key::Object { declared, kind, .. } => {
                    let v = self.value(kind, kv)?;
                    if declared {
                        let d = state.declared.get_or_insert_with(Arc::default);
                        push_value(Arc::make_mut(d), v);
                    } else {
                        match v {
                            Value::Service(x) => state.services.push(x),
                            Value::Endpoint(x) => state.endpoints.push(x),
                            Value::Group(x) => state.security_groups.push(x),
                        }
                    }
                }
                Key::Token(..) => state.client_tokens.push(value(kv)?),
                Key::Other => {}
            }
        }
        Ok((state, commit))
    }

    /// Applies watched events to `state`, in order. Returns the commit record's revision
    /// when the events moved it. Idempotent: events already in `state` (a cache written
    /// after them) change nothing. Nothing is applied when any event cannot be used.
    pub fn apply(&self, state: &mut State, events: &[Event]) -> Result<Option<i64>, LayoutError> {
        Ok(self.apply_batch(state, self.parse(events)?))
    }

    /// Watched events, parsed and checked (what [`apply_batch`](Self::apply_batch) puts
    /// in force without a failure left).
    pub fn parse(&self, events: &[Event]) -> Result<Batch, LayoutError> {
        let mut steps = Vec::with_capacity(events.len());
        for e in events {
            let step = match e {
                Event::Put(kv) => match self.parse_key(&kv.key)? {
                    Key::Commit => Step::Commit(kv.mod_revision),
                    Key::Declared => Step::Declared(true),
                    Key::Object { declared, kind, .. } => Step::Set {
                        declared,
                        value: self.value(kind, kv)?,
                    },
                    Key::Token(..) => Step::Token(value(kv)?),
                    Key::Other => continue,
                },
                Event::Delete { key, .. } => match self.parse_key(key)? {
                    Key::Commit | Key::Other => continue,
                    Key::Declared => Step::Declared(false),
                    Key::Object { declared, kind, id } => Step::Remove { declared, kind, id },
                    Key::Token(scope, token) => Step::Untoken(scope, token),
                },
            };
            steps.push((e.revision(), step));
        }
        let last = events.last().map(Event::revision);
        Ok(Batch { steps, last })
    }

    /// Applies a parsed batch to `state`, in order; the commit record's revision when the
    /// batch moved it.
    pub fn apply_batch(&self, state: &mut State, batch: Batch) -> Option<i64> {
        let mut live = Edits::default();
        let mut decl = Edits::default();
        let mut tokens: Vec<Put<(String, String), ClientToken>> = Vec::new();
        let mut baseline: Option<bool> = None;
        let mut commit = None;
        for (_, step) in batch.steps {
            match step {
                Step::Commit(r) => commit = Some(r),
                Step::Declared(on) => baseline = Some(on),
                Step::Set { declared, value } => {
                    if declared { &mut decl } else { &mut live }.set(value);
                }
                Step::Remove { declared, kind, id } => {
                    if declared { &mut decl } else { &mut live }.remove(kind, &id);
                }
                Step::Token(t) => tokens.push(Put::Set(t)),
                Step::Untoken(scope, token) => tokens.push(Put::Remove((scope, token))),
            }
        }
        live.apply(
            &mut state.services,
            &mut state.endpoints,
            &mut state.security_groups,
        );
        apply_seq(&mut state.client_tokens, tokens, |t| {
            (t.scope.clone(), t.token.clone())
        });
        if baseline == Some(true) || !decl.is_empty() {
            let d = Arc::make_mut(state.declared.get_or_insert_with(Arc::default));
            decl.apply(&mut d.services, &mut d.endpoints, &mut d.security_groups);
        }
        if baseline == Some(false) {
            state.declared = None;
        }
        commit
    }
}

/// Watched events of privlink's keys, parsed, with their revisions.
#[derive(Debug)]
pub struct Batch {
    steps: Vec<(i64, Step)>,
    /// The last event's revision (keys privlink leaves alone included).
    last: Option<i64>,
}

impl Batch {
    /// The revision of the batch's last event.
    pub fn last_revision(&self) -> Option<i64> {
        self.last
    }

    /// The part of the batch after `revision` (what a node that committed up to
    /// `revision` itself still needs).
    #[must_use]
    pub fn after(self, revision: i64) -> Batch {
        let last = self.last.filter(|&r| r > revision);
        Batch {
            steps: self
                .steps
                .into_iter()
                .filter(|(r, _)| *r > revision)
                .collect(),
            last,
        }
    }
}

/// Puts and removals of the three kinds, in the order they came.
#[derive(Default)]
struct Edits {
    services: Vec<Put<ServiceId, Service>>,
    endpoints: Vec<Put<EndpointId, Endpoint>>,
    groups: Vec<Put<SecurityGroupId, SecurityGroup>>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.services.is_empty() && self.endpoints.is_empty() && self.groups.is_empty()
    }

    fn set(&mut self, v: Value) {
        match v {
            Value::Service(x) => self.services.push(Put::Set(x)),
            Value::Endpoint(x) => self.endpoints.push(Put::Set(x)),
            Value::Group(x) => self.groups.push(Put::Set(x)),
        }
    }

    fn remove(&mut self, kind: Kind, id: &str) {
        // The key parsed as an id of its kind.
        match kind {
            Kind::Service => self.services.extend(id.parse().ok().map(Put::Remove)),
            Kind::Endpoint => self.endpoints.extend(id.parse().ok().map(Put::Remove)),
            Kind::Group => self.groups.extend(id.parse().ok().map(Put::Remove)),
        }
    }

    fn apply(
        self,
        s: &mut Vec<Service>,
        e: &mut impl ObjectList<Endpoint>,
        g: &mut Vec<SecurityGroup>,
    ) {
        apply_seq(s, self.services, |x| x.id);
        apply_seq(e, self.endpoints, |x| x.id);
        apply_seq(g, self.groups, |x| x.id);
    }
}

fn push_value(d: &mut Declared, v: Value) {
    match v {
        Value::Service(x) => d.services.push(x),
        Value::Endpoint(x) => d.endpoints.push(x),
        Value::Group(x) => d.security_groups.push(x),
    }
}

/// Applies `puts` to `list` in order: a set replaces the object of its id where it is or
/// appends it, a removal drops it (absent: nothing). A few puts look objects up in turn;
/// many go through an index, so a batch costs O(objects + puts) either way.
fn apply_seq<K: Eq + Hash + Clone, T>(
    list: &mut impl ObjectList<T>,
    puts: Vec<Put<K, T>>,
    id: impl Fn(&T) -> K,
) {
    if puts.is_empty() {
        return;
    }
    if puts.len() <= 16 {
        for p in puts {
            match p {
                Put::Set(x) => {
                    let k = id(&x);
                    match list.position_in(0..list.len(), |y| id(y) == k) {
                        Some(i) => list.replace(i, x),
                        None => list.append(x),
                    }
                }
                Put::Remove(k) => list.keep(|y| id(y) != k),
            }
        }
        return;
    }
    list.rebuild(|objects| {
        let mut slots: Vec<Option<T>> = objects.into_iter().map(Some).collect();
        let mut index: HashMap<K, usize> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, x)| x.as_ref().map(|x| (id(x), i)))
            .collect();
        for p in puts {
            match p {
                Put::Set(x) => {
                    let k = id(&x);
                    match index.get(&k) {
                        Some(&i) => slots[i] = Some(x),
                        None => {
                            index.insert(k, slots.len());
                            slots.push(Some(x));
                        }
                    }
                }
                Put::Remove(k) => {
                    if let Some(i) = index.remove(&k) {
                        slots[i] = None;
                    }
                }
            }
        }
        slots.into_iter().flatten().collect()
    });
}

/// The puts that turn `before` into `after`, object by object: removals, then what is
/// new or changed, in `after`'s order.
fn diff<'a, K: Copy + Eq + Hash, T: Clone + PartialEq + 'a>(
    before: impl IntoIterator<Item = &'a T> + Copy,
    after: impl IntoIterator<Item = &'a T> + Copy,
    id: impl Fn(&T) -> K,
) -> Vec<Put<K, T>> {
    let old: HashMap<K, &T> = before.into_iter().map(|t| (id(t), t)).collect();
    let new: HashSet<K> = after.into_iter().map(&id).collect();
    let mut out: Vec<Put<K, T>> = before
        .into_iter()
        .filter(|t| !new.contains(&id(t)))
        .map(|t| Put::Remove(id(t)))
        .collect();
    out.extend(
        after
            .into_iter()
            .filter(|t| old.get(&id(t)) != Some(t))
            .cloned()
            .map(Put::Set),
    );
    out
}

/// What turned `before` into `after`, object by object (for a difference
/// [`Change::between`] cannot say as appends, removals and changes in place).
pub fn full_change(before: &State, after: &State) -> Change {
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
        let config = Config::embedded_default();
        let mut s = config.state();
        s.declared = Some(config.declared().into());
        assert!(!config.declared().endpoints.is_empty());
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
        let ops = l.ops(&full_change(&State::default(), &s), None, b"{}");
        assert!(ops.iter().all(|op| match op {
            Op::Put(k, _) | Op::Delete(k) => k.starts_with(P.as_bytes()),
        }));
        // The baseline too is one key per object (one value for it all would outgrow
        // etcd's request limit with 100k declared endpoints).
        let d = s.declared.as_ref().unwrap();
        let declared_keys = ops
            .iter()
            .filter(|op| matches!(op, Op::Put(k, _) if k.starts_with(b"/fleet/declared/")))
            .count();
        assert_eq!(
            declared_keys,
            d.services.len() + d.endpoints.len() + d.security_groups.len()
        );
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
        // The baseline loses its endpoint (a reload of a file without it).
        if let Some(d) = after.declared.as_mut() {
            Arc::make_mut(d).endpoints.clear();
        }
        let change = Change::between(
            &before,
            &after,
            &[gone.to_string(), after.services[0].id.to_string()],
        )
        .expect("a change of that shape");
        let ops = l.ops(&change, before.declared.as_deref(), b"{}");
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
        let ids = |v: &crate::model::Chunked<crate::model::Endpoint>| {
            let mut ids: Vec<String> = v.iter().map(|e| e.id.to_string()).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&s.endpoints), ids(&after.endpoints));
    }

    #[test]
    fn a_large_batch_keeps_order_and_applies_in_sequence() {
        let l = Layout::new(P);
        let mut s = state();
        let template = s.endpoints[0].clone();
        let mut events = Vec::new();
        let mut want = s.endpoints.clone();
        for i in 0..40u32 {
            let mut e = template.clone();
            e.id = format!("vpce-1{:016x}", i).parse().unwrap();
            want.push(e.clone());
            events.push(Event::Put(Kv {
                key: format!("{P}endpoints/{}", e.id).into_bytes(),
                value: serde_json::to_vec(&e).unwrap(),
                create_revision: 100 + i64::from(i),
                mod_revision: 100 + i64::from(i),
            }));
        }
        // The fifth new one changed, then the tenth removed, later in the same batch.
        let mut changed = want[template_index(&want, 5)].clone();
        changed.ip = Some("10.1.0.200".parse().unwrap());
        let at = template_index(&want, 5);
        want[at] = changed.clone();
        events.push(Event::Put(Kv {
            key: format!("{P}endpoints/{}", changed.id).into_bytes(),
            value: serde_json::to_vec(&changed).unwrap(),
            create_revision: 105,
            mod_revision: 200,
        }));
        let gone = want.remove(template_index(&want, 10));
        events.push(Event::Delete {
            key: format!("{P}endpoints/{}", gone.id).into_bytes(),
            mod_revision: 201,
        });
        l.apply(&mut s, &events).unwrap();
        assert_eq!(s.endpoints, want);
    }

    /// Where the `n`th endpoint of the test batch is in `list`.
    fn template_index(list: &crate::model::Chunked<crate::model::Endpoint>, n: u32) -> usize {
        let id: crate::model::EndpointId = format!("vpce-1{:016x}", n).parse().unwrap();
        list.iter().position(|e| e.id == id).unwrap()
    }

    #[test]
    fn a_batch_after_a_revision_keeps_only_what_came_later() {
        let l = Layout::new(P);
        let s = state();
        let put = |rev: i64| {
            Event::Put(Kv {
                key: format!("{P}endpoints/{}", s.endpoints[0].id).into_bytes(),
                value: serde_json::to_vec(&s.endpoints[0]).unwrap(),
                create_revision: 1,
                mod_revision: rev,
            })
        };
        let other = Event::Put(Kv {
            key: b"/fleet/not-ours".to_vec(),
            value: Vec::new(),
            create_revision: 9,
            mod_revision: 9,
        });
        let b = l.parse(&[put(5), put(7), other]).unwrap();
        assert_eq!(b.last_revision(), Some(9));
        let later = b.after(6);
        assert_eq!((later.steps.len(), later.last_revision()), (1, Some(9)));
        let none = l.parse(&[put(5), put(7)]).unwrap().after(7);
        assert_eq!((none.steps.len(), none.last_revision()), (0, None));
    }
}
