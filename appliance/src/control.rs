//! The management thread's side of the daemon: the socket handler that runs the object
//! store, makes every accepted change durable before answering, and publishes the next
//! snapshot; plus the operations only the data plane can answer (`stats`, `flows`,
//! active flows per target).
//!
//! Everything here runs off the packet path. The store is behind one mutex, so changes
//! are serialised (one writer), and a change is on disk before it is acknowledged: if the
//! state file cannot be written, the store goes back to what it was and the caller gets an
//! error.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{bounded, Sender};
use mgmt::config::Config;
use mgmt::model::State;
use mgmt::persist::StateFile;
use mgmt::protocol::{ApiErrorBody, Request};
use mgmt::server::{Caller, Handler};
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
    mtus: Vec<u16>,
    handles: Mutex<Handles>,
    cell: Arc<SnapshotCell<Snapshot>>,
    generation: AtomicU64,
    queries: Vec<Sender<Query>>,
    published: Vec<Arc<PublishedCounters>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("state_file", &self.state_file.path())
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Control {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        state_file: StateFile,
        config: Config,
        macs: Vec<[u8; 6]>,
        mtus: Vec<u16>,
        handles: Handles,
        cell: Arc<SnapshotCell<Snapshot>>,
        generation: u64,
        queries: Vec<Sender<Query>>,
        published: Vec<Arc<PublishedCounters>>,
    ) -> Control {
        Control {
            store: Mutex::new(store),
            state_file,
            config,
            macs,
            mtus,
            handles: Mutex::new(handles),
            cell,
            generation: AtomicU64::new(generation),
            queries,
            published,
        }
    }

    /// Builds and publishes the snapshot of `state`.
    fn publish(&self, state: &State) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        let mut snap = Snapshot::build(
            generation,
            &self.config,
            &self.macs,
            &self.mtus,
            state,
            &mut handles,
        )
        .map_err(|e| e.to_string())?;
        snap.announce_since(&self.cell.load());
        self.generation.store(generation, Ordering::SeqCst);
        let (services, endpoints) = (snap.services.len(), snap.endpoints.len());
        self.cell.publish(snap);
        log::info!(
            "snapshot {generation}: {services} services, {endpoints} endpoints, built and published in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// Runs a store change: durable, then published, or undone.
    fn change(
        &self,
        f: impl FnOnce(&mut Store) -> Result<(Value, bool), ApiErrorBody>,
    ) -> Result<Value, ApiErrorBody> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let before = store.state().clone();
        let (response, changed) = f(&mut store)?;
        if changed {
            if let Err(e) = self.state_file.save(store.state()) {
                match Store::new(&self.config, Some(before)) {
                    Ok(old) => *store = old,
                    Err(err) => log::error!("cannot restore the previous state: {err}"),
                }
                log::error!("state not saved, change undone: {e}");
                return Err(ApiErrorBody::new(
                    "InternalError",
                    format!("the change could not be made durable and was undone: {e}"),
                ));
            }
            if let Err(e) = self.publish(store.state()) {
                // The state was validated by the store; a snapshot that does not build is a
                // bug, reported loudly rather than half-applied.
                log::error!("snapshot build failed after an accepted change: {e}");
            }
        }
        Ok(response)
    }

    /// The periodic work of the management thread: deregistration delays.
    pub fn tick(&self) {
        let draining = {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            store.state().services.iter().any(|s| {
                s.listeners.iter().any(|l| {
                    l.targets
                        .iter()
                        .any(|t| t.state == mgmt::model::TargetState::Draining)
                })
            })
        };
        // Nothing can expire: skip the copy of the state a change would take.
        if !draining {
            return;
        }
        let now = now_unix();
        let result = self.change(|store| Ok((Value::Null, store.tick(now))));
        if let Err(e) = result {
            log::error!("deregistration tick: {}", e.message);
        }
    }

    /// Reloads the objects declared in the configuration file (SIGHUP): they replace the
    /// store's objects of the same id; a target that disappears from a declared listener
    /// starts draining instead of being cut.
    pub fn reload_declared(&self, next: &Config) -> Result<(), String> {
        let now = now_unix();
        self.change(|store| {
            let merged = merge_declared(store.state(), next, now);
            let fresh = Store::new(&self.config, Some(merged))
                .map_err(|e| ApiErrorBody::new(e.code(), e.to_string()))?;
            *store = fresh;
            Ok((Value::Null, true))
        })
        .map(|_| ())
        .map_err(|e| format!("{}: {}", e.code, e.message))
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
        let mut body = self.change(|s| {
            let out = s
                .handle(&store_caller(caller), &req.op, &req.args, now_unix())
                .map_err(api_error)?;
            Ok((out.response, out.changed))
        })?;
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
    fn handle(&self, caller: &Caller, req: &Request) -> Result<Value, ApiErrorBody> {
        match req.op.as_str() {
            "stats" => {
                if caller.account.is_none() && !caller.admin {
                    return Err(unknown_caller(caller));
                }
                self.stats(caller)
            }
            "flows" => {
                if caller.account.is_none() && !caller.admin {
                    return Err(unknown_caller(caller));
                }
                self.flows(caller, &req.args)
            }
            "describe-target-health" => self.target_health(caller, req),
            _ => self.change(|s| {
                let out = s
                    .handle(&store_caller(caller), &req.op, &req.args, now_unix())
                    .map_err(api_error)?;
                Ok((out.response, out.changed))
            }),
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

/// `current` with the objects `next` declares put in: same-id objects replaced, new ones
/// added, and targets that vanished from a declared listener kept as draining (their
/// deregistration delay starts now) so their flows drain rather than break.
pub fn merge_declared(current: &State, next: &Config, now_unix: u64) -> State {
    let mut merged = current.clone();
    let declared = next.state();
    for svc in declared.services {
        match merged.services.iter_mut().find(|s| s.id == svc.id) {
            None => merged.services.push(svc),
            Some(old) => {
                let mut svc = svc;
                for l in svc.listeners.iter_mut() {
                    let Some(prev) = old
                        .listeners
                        .iter()
                        .find(|p| p.protocol == l.protocol && p.port == l.port)
                    else {
                        continue;
                    };
                    for t in &prev.targets {
                        if !l.targets.iter().any(|n| n.ip == t.ip && n.port == t.port) {
                            let mut gone = t.clone();
                            if gone.state != mgmt::model::TargetState::Draining {
                                gone.state = mgmt::model::TargetState::Draining;
                                gone.deregistered_at = Some(now_unix);
                            }
                            l.targets.push(gone);
                        }
                    }
                }
                *old = svc;
            }
        }
    }
    for ep in declared.endpoints {
        match merged.endpoints.iter_mut().find(|e| e.id == ep.id) {
            None => merged.endpoints.push(ep),
            Some(old) => *old = ep,
        }
    }
    merged
}
