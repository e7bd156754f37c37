//! The management thread's side of the daemon: the socket handler that runs the object
//! store and acknowledges a change only once it is in force; plus the operations only the
//! data plane can answer (`stats`, `flows`, active flows per target).
//!
//! What an acknowledgement means: the store prepares the next state without changing
//! anything; then the snapshot that enforces it is built, the state is made durable, the
//! snapshot is published, and only then does the store take the new state and the caller
//! hear `ok`. A failure at any step leaves the store, the state file and the data plane as
//! they were, and the caller gets an error naming the cause. (One exception, named in its
//! error: the state directory could not be synced after the new file was renamed into
//! place, and putting the old file back failed too; then the new state is what is on disk,
//! so it is put in force and the caller is told it is.)
//!
//! Everything here runs off the packet path. The store is behind one mutex, so changes
//! are serialised (one writer).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{bounded, Sender};
use mgmt::config::Config;
use mgmt::model::State;
use mgmt::persist::{PersistError, StateFile};
use mgmt::protocol::{ApiErrorBody, Request};
use mgmt::server::{Caller, Handled, Handler};
use mgmt::store::{self, Store};
use serde_json::{json, Value};

use crate::counters::{Counters, DropReason, PublishedCounters};
use crate::pipeline::{EndpointUsage, FlowInfo, UsageReport};
use crate::rcu::SnapshotCell;
use crate::snapshot::{Handles, Snapshot};
use crate::worker::Query;

/// How long the management thread waits for the workers to answer a query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Flows listed at most per request.
const MAX_FLOWS: usize = 10_000;

/// The daemon's management state, shared by the socket threads and the main loop.
pub struct Control {
    store: Mutex<Store>,
    state_file: StateFile,
    config: Config,
    macs: Vec<[u8; 6]>,
    handles: Mutex<Handles>,
    cell: Arc<SnapshotCell<Snapshot>>,
    generation: AtomicU64,
    queries: Vec<Sender<Query>>,
    published: Vec<Arc<PublishedCounters>>,
    /// The generation whose gratuitous ARPs worker 0 last sent in full.
    announced: Arc<AtomicU64>,
    /// The local addresses of each published generation from that one on: the next
    /// announcement list is computed against the one worker 0 finished, not against the
    /// last published (which worker 0 may never have seen).
    recent_locals: Mutex<std::collections::VecDeque<(u64, LocalKeys)>>,
}

/// A snapshot's local addresses (attachment, IPv4), sorted.
type LocalKeys = Vec<(u16, u32)>;

/// Generations whose local addresses are kept while worker 0 has not finished announcing
/// them; beyond, the oldest go, and a list whose base is gone announces everything.
const RECENT_LOCALS: usize = 64;

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("state_file", &self.state_file.path())
            .finish_non_exhaustive()
    }
}

pub use mgmt::store::now_unix;

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        state_file: StateFile,
        config: Config,
        macs: Vec<[u8; 6]>,
        handles: Handles,
        cell: Arc<SnapshotCell<Snapshot>>,
        generation: u64,
        queries: Vec<Sender<Query>>,
        published: Vec<Arc<PublishedCounters>>,
        announced: Arc<AtomicU64>,
    ) -> Control {
        let first = cell.load();
        let recent_locals =
            Mutex::new(std::iter::once((first.generation, first.local_keys())).collect());
        Control {
            store: Mutex::new(store),
            state_file,
            config,
            macs,
            handles: Mutex::new(handles),
            cell,
            generation: AtomicU64::new(generation),
            queries,
            published,
            announced,
            recent_locals,
        }
    }

    /// Builds the snapshot that enforces `state` (not yet published). The store's
    /// validation and quotas guarantee it builds; a failure is reported as what it is.
    fn build(&self, state: &State) -> Result<Snapshot, ApiErrorBody> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        Snapshot::build(generation, &self.config, &self.macs, state, &mut handles).map_err(|e| {
            log::error!("snapshot build refused a validated state: {e}");
            ApiErrorBody::new(
                "InternalError",
                format!("the data plane cannot apply this change ({e}); nothing changed"),
            )
        })
    }

    /// Publishes a built snapshot.
    fn publish(&self, mut snap: Snapshot, started: std::time::Instant) {
        {
            let done = self.announced.load(Ordering::Acquire);
            let mut recent = self.recent_locals.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|(g, _)| *g >= done);
            if let Some((_, keys)) = recent.iter().find(|(g, _)| *g == done) {
                snap.announce_beyond(keys);
            }
            recent.push_back((snap.generation, snap.local_keys()));
            while recent.len() > RECENT_LOCALS {
                recent.pop_front();
            }
        }
        let generation = snap.generation;
        self.generation.store(generation, Ordering::SeqCst);
        let (services, endpoints) = (snap.services.len(), snap.endpoints.len());
        self.cell.publish(snap);
        log::info!(
            "snapshot {generation}: {services} services, {endpoints} endpoints, built and published in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }

    /// Puts `next` in force: build its snapshot, make it durable, publish, and only then
    /// commit it to the store. See the module documentation for what each failure leaves.
    fn apply(&self, store: &mut Store, next: State) -> Result<(), ApiErrorBody> {
        let started = std::time::Instant::now();
        let snap = self.build(&next)?;
        match self.state_file.save(&next) {
            Ok(()) => {}
            Err(PersistError::NotDurable { .. }) => {
                // The new file is in place but may not survive a crash. Put the old one
                // back, so what is on disk matches what the caller is told.
                match self.state_file.save(store.state()) {
                    Ok(()) | Err(PersistError::NotDurable { .. }) => {
                        log::error!("state directory cannot be synced; change refused");
                        return Err(ApiErrorBody::new(
                            "InternalError",
                            format!(
                                "the state directory {} could not be synced, so the change \
                                 could not be made durable; nothing changed",
                                self.config.mgmt.state_dir.display()
                            ),
                        ));
                    }
                    Err(e) => {
                        // The new state is the one on disk: a restart would load it, so it
                        // is the one to enforce, and the caller learns it is in force.
                        log::error!("state directory cannot be synced and the previous state cannot be restored ({e}); the change is in force");
                        self.publish(snap, started);
                        store.commit(next);
                        return Err(ApiErrorBody::new(
                            "InternalError",
                            format!(
                                "the change is in force and in the state file, but the state \
                                 directory {} could not be synced, so it may not survive a \
                                 crash ({e}); check the disk",
                                self.config.mgmt.state_dir.display()
                            ),
                        ));
                    }
                }
            }
            Err(e) => {
                log::error!("state not saved, change refused: {e}");
                return Err(ApiErrorBody::new(
                    "InternalError",
                    format!("the change could not be made durable ({e}); nothing changed"),
                ));
            }
        }
        self.publish(snap, started);
        store.commit(next);
        Ok(())
    }

    /// Runs a store request: a change is acknowledged only once it is in force.
    fn change(
        &self,
        f: impl FnOnce(&mut Store) -> Result<store::Outcome, store::ApiError>,
    ) -> Handled {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let out = match f(&mut store) {
            Ok(out) => out,
            Err(e) => return Handled::from(Err(api_error(e))),
        };
        let Some(next) = out.next else {
            return Handled::from(Ok(out.response));
        };
        match self.apply(&mut store, next) {
            Ok(()) => Handled {
                result: Ok(out.response),
                touched: out.touched,
            },
            Err(e) => Handled::from(Err(e)),
        }
    }

    /// The caller that Unix user `uid` is now (the accounts change on reload).
    pub fn caller_for_uid(&self, uid: u32) -> Caller {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let c = store.caller_for_uid(uid);
        Caller {
            uid,
            account: c.account,
            admin: c.admin,
        }
    }

    /// The current state (a copy).
    pub fn state(&self) -> State {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            .clone()
    }

    /// The periodic work of the management thread: deregistration delays, endpoint
    /// deletions, expired client tokens.
    pub fn tick(&self) {
        self.tick_at(now_unix());
    }

    /// [`tick`](Self::tick) at `now` (unix seconds).
    pub fn tick_at(&self, now: u64) {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let Some(next) = store.prepare_tick(now) else {
            return;
        };
        if let Err(e) = self.apply(&mut store, next) {
            log::error!(
                "timed state change not applied (retried next tick): {}",
                e.message
            );
        }
    }

    /// Applies a reloaded configuration (SIGHUP): its accounts and quotas, and what
    /// changed in its declared objects since they were last applied. A reload that cannot
    /// be applied changes nothing and says why. Returns one line per change.
    pub fn reload(&self, next: &Config) -> Result<Vec<String>, String> {
        let now = now_unix();
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let (state, notes) = store.prepare_reload(next, now).map_err(|e| e.to_string())?;
        if let Some(state) = state {
            self.apply(&mut store, state)
                .map_err(|e| format!("{}: {}", e.code, e.message))?;
        }
        store.apply_reload(next);
        Ok(notes)
    }

    fn ask<T: Send + 'static>(
        &self,
        make: impl Fn(Sender<T>) -> Query,
    ) -> Result<Vec<T>, ApiErrorBody> {
        let mut out = Vec::with_capacity(self.queries.len());
        let mut waits = Vec::with_capacity(self.queries.len());
        for q in &self.queries {
            let (tx, rx) = bounded(1);
            q.send(make(tx))
                .map_err(|_| ApiErrorBody::new("InternalError", "a worker is gone"))?;
            waits.push(rx);
        }
        for rx in waits {
            match rx.recv_timeout(QUERY_TIMEOUT) {
                Ok(v) => out.push(v),
                Err(_) => {
                    return Err(ApiErrorBody::new(
                        "ServiceUnavailable",
                        "a worker did not answer in time",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Endpoint handles the caller may see: its own endpoints, and endpoints of its
    /// services; everything for admin.
    fn visible_endpoints(&self, caller: &Caller) -> Vec<(u32, String, String)> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let state = store.state();
        state
            .endpoints
            .iter()
            .filter(|e| {
                caller.admin
                    || Some(e.owner) == caller.account
                    || state
                        .service(e.service_id)
                        .is_some_and(|s| Some(s.owner) == caller.account)
            })
            .filter_map(|e| {
                Some((
                    handles.endpoint_handle(&e.id)?,
                    e.id.to_string(),
                    e.service_id.to_string(),
                ))
            })
            .collect()
    }

    fn stats(&self, caller: &Caller) -> Result<Value, ApiErrorBody> {
        let reports: Vec<UsageReport> = self.ask(|reply| Query::Usage { reply })?;
        let visible = self.visible_endpoints(caller);
        let mut per_endpoint: Vec<Value> = Vec::new();
        let mut per_service: std::collections::BTreeMap<String, (EndpointUsage, u64)> =
            Default::default();
        for (handle, id, service) in &visible {
            let mut total = EndpointUsage::default();
            let mut active = 0;
            for r in &reports {
                for (h, u, a) in &r.endpoints {
                    if h == handle {
                        total.new_flows += u.new_flows;
                        for (t, d) in total.drops.iter_mut().zip(u.drops.iter()) {
                            *t += d;
                        }
                        total.packets += u.packets;
                        total.bytes += u.bytes;
                        active += a;
                    }
                }
            }
            let s = per_service.entry(service.clone()).or_default();
            s.0.new_flows += total.new_flows;
            for (t, d) in s.0.drops.iter_mut().zip(total.drops.iter()) {
                *t += d;
            }
            s.0.packets += total.packets;
            s.0.bytes += total.bytes;
            s.1 += active;
            per_endpoint.push(json!({
                "VpcEndpointId": id, "ServiceId": service, "ActiveFlows": active,
                "NewFlows": total.new_flows, "Packets": total.packets, "Bytes": total.bytes,
                "Drops": drops_json(&total.drops),
            }));
        }
        let per_service: Vec<Value> = per_service
            .into_iter()
            .map(|(id, (u, a))| {
                json!({"ServiceId": id, "ActiveFlows": a, "NewFlows": u.new_flows,
                       "Packets": u.packets, "Bytes": u.bytes, "Drops": drops_json(&u.drops)})
            })
            .collect();
        let mut per_target: std::collections::BTreeMap<String, u64> = Default::default();
        {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            let snap = self.cell.load();
            for r in &reports {
                for ((svc, ip, port), active) in &r.targets {
                    let Some(s) = snap.service_by_handle(*svc) else {
                        continue;
                    };
                    let owner = store
                        .state()
                        .services
                        .iter()
                        .find(|x| x.id.to_string() == s.id)
                        .map(|x| x.owner);
                    if caller.admin || owner == caller.account {
                        let key = format!("{} {}:{}", s.id, Ipv4Addr::from(*ip), port);
                        *per_target.entry(key).or_default() += active;
                    }
                }
            }
        }
        let per_target: Vec<Value> = per_target
            .into_iter()
            .map(|(k, a)| {
                let (svc, target) = k.split_once(' ').unwrap_or((&k, ""));
                json!({"ServiceId": svc, "Target": target, "ActiveFlows": a})
            })
            .collect();
        let mut body = json!({
            "Endpoints": per_endpoint,
            "Services": per_service,
            "Targets": per_target,
        });
        if caller.admin {
            let workers: Vec<Counters> = self.published.iter().map(|p| p.read()).collect();
            let mut total = Counters::default();
            for w in &workers {
                total.add(w);
            }
            let mut t = serde_json::Map::new();
            for (k, v) in total.named() {
                t.insert(k.to_owned(), json!(v));
            }
            let mut drops = serde_json::Map::new();
            for r in DropReason::ALL {
                drops.insert(r.label().to_owned(), json!(total.dropped(*r)));
            }
            t.insert("drops".into(), Value::Object(drops));
            body["Totals"] = Value::Object(t);
            body["Workers"] = json!(workers.len());
        }
        Ok(body)
    }

    fn flows(&self, caller: &Caller, args: &Value) -> Result<Value, ApiErrorBody> {
        store::check_keys(args, &["MaxResults", "VpcEndpointId"]).map_err(api_error)?;
        let max = match args.get("MaxResults") {
            None => 1000,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| (1..=MAX_FLOWS).contains(n))
                .ok_or_else(|| {
                    ApiErrorBody::new(
                        "InvalidParameterValue",
                        format!("MaxResults must be 1..={MAX_FLOWS}"),
                    )
                })?,
        };
        let visible = self.visible_endpoints(caller);
        let filter = match args.get("VpcEndpointId") {
            None => None,
            Some(v) => {
                let id = v.as_str().ok_or_else(|| {
                    ApiErrorBody::new("InvalidParameterValue", "VpcEndpointId must be a string")
                })?;
                let found = visible.iter().find(|(_, e, _)| e == id).ok_or_else(|| {
                    ApiErrorBody::new(
                        "InvalidVpcEndpointId.NotFound",
                        format!("no endpoint {id} of yours"),
                    )
                })?;
                Some(found.0)
            }
        };
        let lists: Vec<Vec<FlowInfo>> = self.ask(|reply| Query::Flows {
            endpoint: filter,
            max,
            reply,
        })?;
        let ids: std::collections::HashMap<u32, &str> =
            visible.iter().map(|(h, id, _)| (*h, id.as_str())).collect();
        let addr = |(ip, port): (u32, u16)| format!("{}:{port}", Ipv4Addr::from(ip));
        let flows: Vec<Value> = lists
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let id = ids.get(&f.endpoint)?;
                Some(json!({
                    "VpcEndpointId": id,
                    "Protocol": if f.proto == 6 { "tcp" } else if f.proto == 17 { "udp" } else { "other" },
                    "Consumer": addr(f.consumer), "Endpoint": addr(f.endpoint_addr),
                    "Snat": addr(f.snat), "Target": addr(f.target), "State": f.state,
                    "Packets": f.packets, "Bytes": f.bytes,
                    "AgeMs": f.age_ms, "IdleMs": f.idle_ms, "Worker": f.worker,
                }))
            })
            .take(max)
            .collect();
        Ok(json!({ "Flows": flows }))
    }

    /// `describe-target-health` from the store, plus active flows per target.
    fn target_health(&self, caller: &Caller, req: &Request) -> Result<Value, ApiErrorBody> {
        let mut body = self
            .change(|s| s.prepare(&store_caller(caller), &req.op, &req.args, now_unix()))
            .result?;
        let reports: Vec<UsageReport> = self.ask(|reply| Query::Usage { reply })?;
        let service = req
            .args
            .get("ServiceId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let snap = self.cell.load();
        if let Some(list) = body
            .get_mut("TargetHealthDescriptions")
            .and_then(Value::as_array_mut)
        {
            for d in list.iter_mut() {
                let ip: Option<Ipv4Addr> = d["Target"]["Id"].as_str().and_then(|s| s.parse().ok());
                let port = d["Target"]["Port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok());
                let (Some(ip), Some(port)) = (ip, port) else {
                    continue;
                };
                let active: u64 = reports
                    .iter()
                    .flat_map(|r| r.targets.iter())
                    .filter(|((svc, tip, tport), _)| {
                        *tip == u32::from(ip)
                            && *tport == port
                            && snap
                                .service_by_handle(*svc)
                                .is_some_and(|s| s.id == service)
                    })
                    .map(|(_, a)| a)
                    .sum();
                d["ActiveFlows"] = json!(active);
            }
        }
        Ok(body)
    }
}

impl Handler for Control {
    fn handle(&self, caller: &Caller, req: &Request) -> Handled {
        match req.op.as_str() {
            "stats" | "flows" if caller.account.is_none() && !caller.admin => {
                Handled::from(Err(unknown_caller(caller)))
            }
            "stats" => Handled::from(
                store::check_keys(&req.args, &[])
                    .map_err(api_error)
                    .and_then(|()| self.stats(caller)),
            ),
            "flows" => Handled::from(self.flows(caller, &req.args)),
            "describe-target-health" => Handled::from(self.target_health(caller, req)),
            _ => self.change(|s| s.prepare(&store_caller(caller), &req.op, &req.args, now_unix())),
        }
    }
}

/// Drops by reason, only the reasons that happened.
fn drops_json(drops: &[u64; DropReason::COUNT]) -> Value {
    let mut m = serde_json::Map::new();
    for r in DropReason::ALL {
        let n = drops[*r as usize];
        if n > 0 {
            m.insert(r.label().to_owned(), json!(n));
        }
    }
    Value::Object(m)
}

fn unknown_caller(caller: &Caller) -> ApiErrorBody {
    ApiErrorBody::new(
        "AuthFailure",
        format!(
            "uid {} is not mapped to an account in the configuration",
            caller.uid
        ),
    )
}

fn store_caller(c: &Caller) -> store::Caller {
    store::Caller {
        account: c.account,
        admin: c.admin,
    }
}

fn api_error(e: store::ApiError) -> ApiErrorBody {
    ApiErrorBody::new(&e.code, e.message)
}

#[cfg(test)]
mod tests;
