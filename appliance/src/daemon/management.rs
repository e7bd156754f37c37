//! The management thread's side of the daemon: the socket handler that runs the object
//! store and acknowledges a change only once it is in force; plus the operations only the
//! data plane can answer (`stats`, `flows`, active flows per target).
//!
//! What an acknowledgement means: the store prepares the next state without changing
//! anything; then the snapshot that enforces it is built, the state is made durable (one
//! journal record of the objects the change touched, synced), the snapshot is published,
//! and only then does the store take the new state and the caller hear `ok`. The journal
//! is folded into a new checkpoint by [`Management::tick`], never on a request's path. A failure at any step leaves the store, the state file and the data plane as
//! they were, and the caller gets an error naming the cause. (One exception, named in its
//! error: the state directory could not be synced after the new file was renamed into
//! place, and putting the old file back failed too; then the new state is what is on disk,
//! so it is put in force and the caller is told it is.)
//!
//! Everything here runs off the packet path. The store is behind one mutex, so changes
//! are serialised (one writer).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{bounded, Receiver, Sender};
use crossbeam::queue::ArrayQueue;
use mgmt::cluster::{Cache, CacheMark, Cluster, CommitError, Synced};
use mgmt::config::Config;
use mgmt::model::{ServiceId, State};
use mgmt::persist::{Baseline, PersistError, StateFile};
use mgmt::protocol::{ApiErrorBody, Request};
use mgmt::server::{Caller, Handled, Handler};
use mgmt::store::{self, Store};
use serde_json::{json, Value};

use crate::daemon::cluster::Feed;
use crate::daemon::worker::Query;
use crate::graph::counters::{Counters, DropReason, PublishedCounters};
use crate::graph::{ActiveUsage, EndpointUsage, FlowFilter, FlowInfo, FlowQuery, UsageReport};
use crate::tables::snapshot::cell::SnapshotCell;
use crate::tables::snapshot::{target_ip_key, Change, Handles, Snapshot};

/// How long the management thread waits for the workers to answer a flow listing (a
/// worker at full load scans 4 flow slots per poll: ~1 s per million slots measured at
/// 10 Mpps, so a 4M-slot table takes ~4 s).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `stats` waits for every worker's usage report to cover the time of the request
/// (a sweep takes as long as a listing; a worker that takes longer is answered for as it
/// was at its last report).
const REPORT_WAIT: Duration = Duration::from_secs(5);
/// Flows listed at most per request.
const MAX_FLOWS: usize = 10_000;

/// The management thread's links to the workers.
pub struct DataPlane {
    /// Each worker's query channel (flow listings).
    pub queries: Vec<Sender<Query>>,
    /// Each worker's published counters.
    pub published: Vec<Arc<PublishedCounters>>,
    /// The generation whose gratuitous ARPs worker 0 last sent in full.
    pub announced: Arc<AtomicU64>,
    /// Each worker's usage reports, oldest first.
    pub reports: Vec<Arc<ArrayQueue<UsageReport>>>,
    /// As of when (worker clock, ms) usage is wanted: each worker sweeps once it sees a
    /// later time than its last sweep's.
    pub usage_wanted: Arc<AtomicU64>,
    /// The workers' clock now: ms since the daemon's epoch.
    pub clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// The targets' health, as the checker thread last posted it.
    pub health: Arc<crate::health::Board>,
    /// The HA pair's state, as the sync thread last posted it (an HA node only).
    pub ha: Option<crate::daemon::ha::HaStatus>,
    /// What the metrics show of requests, publications and ports.
    pub telemetry: Arc<crate::daemon::metrics::Telemetry>,
    /// Where connection, health and HA events go (`subscribe-events`).
    pub events: Arc<mgmt::events::EventBus>,
}

impl std::fmt::Debug for DataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlane")
            .field("workers", &self.queries.len())
            .finish_non_exhaustive()
    }
}

impl DataPlane {
    /// No workers at all (tests, tools).
    pub fn none() -> Self {
        Self {
            queries: Vec::new(),
            published: Vec::new(),
            announced: Arc::new(AtomicU64::new(0)),
            reports: Vec::new(),
            usage_wanted: Arc::new(AtomicU64::new(0)),
            clock: Arc::new(|| 0),
            health: Arc::default(),
            ha: None,
            telemetry: Arc::default(),
            events: Arc::default(),
        }
    }
}

/// What the reports of one worker add up to.
#[derive(Debug, Default)]
struct WorkerUsage {
    endpoints: HashMap<u32, EndpointUsage>,
    active: HashMap<u32, ActiveUsage>,
    targets: HashMap<(u32, u32, u16), u64>,
    snat: HashMap<u32, u64>,
    /// When the last report's sweep started (worker clock).
    started_ms: Option<u64>,
}

impl WorkerUsage {
    fn merge(&mut self, r: UsageReport) {
        self.endpoints.extend(r.changed);
        self.active = r.active.into_iter().collect();
        self.targets = r.targets.into_iter().collect();
        self.snat = r.snat.into_iter().collect();
        self.started_ms = Some(r.started_ms);
    }
}

/// What a caller may see of a flow's endpoint: its consumer side (client, endpoint), its
/// provider side (SNAT address, target), both (admin, or an account that is both), and
/// the ids to show.
#[derive(Debug, Clone)]
struct Visible {
    handle: u32,
    endpoint: String,
    service: String,
    consumer_side: bool,
    provider_side: bool,
}

/// A cluster node's link to the fleet's state in etcd.
pub struct ClusterLink {
    pub cluster: Arc<Cluster>,
    /// What the watcher thread saw, in order.
    pub feed: Receiver<Feed>,
    pub cache: Cache,
    pub view: Mutex<ClusterView>,
}

impl std::fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLink")
            .field("prefix", &self.cluster.layout().prefix_str())
            .finish_non_exhaustive()
    }
}

/// Where the node stands with etcd.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// etcd's state as last seen: kept apart from the store, which holds it only once it
    /// validates here.
    pub mirror: State,
    /// The revision `mirror` is at.
    pub revision: i64,
    /// The commit key's revision in `mirror`: the guard of this node's next change.
    pub commit_revision: i64,
    pub cluster_id: String,
    /// Why etcd cannot be reached, while it cannot.
    pub down: Option<String>,
    /// Why the fleet's state cannot be put in force here, while it cannot.
    pub unusable: Option<String>,
    /// Whether `mirror` came from etcd in this run (not only from the cache).
    pub synced: bool,
    /// The configuration file's declarations are still to be applied to the fleet's
    /// state (at the first moment etcd takes changes).
    pub declared_pending: bool,
}

impl ClusterView {
    /// Holds a full load from etcd.
    pub fn loaded(&mut self, s: Synced) {
        self.mirror = s.state;
        self.revision = s.revision;
        self.commit_revision = s.commit_revision;
        self.cluster_id = s.cluster_id;
        self.synced = true;
        self.down = None;
    }

    /// Holds the local cache's state.
    pub fn cached(&mut self, state: State, mark: &CacheMark) {
        self.mirror = state;
        self.revision = mark.revision;
        self.commit_revision = mark.commit_revision;
        self.cluster_id = mark.cluster_id.clone();
    }

    /// Where the mirror stands, for the cache.
    pub fn mark(&self, prefix: &str) -> CacheMark {
        CacheMark {
            revision: self.revision,
            commit_revision: self.commit_revision,
            cluster_id: self.cluster_id.clone(),
            prefix: prefix.to_owned(),
        }
    }

    /// Why answers may not be the fleet's current state (`None`: they are).
    fn stale(&self) -> Option<String> {
        if let Some(d) = &self.down {
            return Some(d.clone());
        }
        if let Some(u) = &self.unusable {
            return Some(u.clone());
        }
        (!self.synced).then(|| "not yet in touch with etcd since the start".to_owned())
    }
}

/// Why a change was not put in force.
enum Failure {
    /// Somebody else committed first, last at this revision of the commit key.
    Conflict(i64),
    Api(ApiErrorBody),
}

impl From<ApiErrorBody> for Failure {
    fn from(e: ApiErrorBody) -> Self {
        Failure::Api(e)
    }
}

/// Times a change is validated again and retried after another node committed first.
const COMMIT_ATTEMPTS: usize = 5;
/// How long a retry waits for the watch to bring the state up to the revision that won.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// The daemon's management state, shared by the socket threads and the main loop.
pub struct Management {
    store: Mutex<Store>,
    state_file: StateFile,
    /// `[cluster]`: the state lives in etcd (the state file is not written).
    cluster: Option<ClusterLink>,
    config: Config,
    macs: Vec<[u8; 6]>,
    mtus: Vec<u16>,
    handles: Mutex<Handles>,
    cell: Arc<SnapshotCell<Snapshot>>,
    generation: AtomicU64,
    dp: DataPlane,
    /// The usage each worker reported, merged.
    usage: Mutex<Vec<WorkerUsage>>,
    /// What each published generation added to the local addresses of the one it was
    /// made from: the next announcement list is computed against the generation worker 0
    /// finished, not against the last published (which worker 0 may never have seen).
    recent_locals: Mutex<std::collections::VecDeque<Added>>,
    /// Compactions in a row that a change overtook ([`Management::compact_aside`]).
    compact_tries: std::sync::atomic::AtomicU32,
}

/// Compactions outside the store's lock that a change may overtake before one is done
/// holding it.
const COMPACT_TRIES: u32 = 3;

/// The local addresses (attachment, IPv4; attachment, IPv6) generation `generation`
/// added to `base`'s, or all of them when it was built whole (`base` = `None`).
#[derive(Debug)]
struct Added {
    generation: u64,
    base: Option<u64>,
    keys: Vec<(u16, u32)>,
    keys6: Vec<(u16, u128)>,
}

/// Local addresses of both families.
type Keys = (Vec<(u16, u32)>, Vec<(u16, u128)>);

/// Generations whose additions are kept while worker 0 has not finished announcing
/// them; beyond, the oldest go, and a list whose chain is broken announces everything.
const RECENT_LOCALS: usize = 64;

/// The addresses added from generation `done` to `base`, following `recent`'s chain
/// back from `base`; `None` when a link is gone.
fn added_since(recent: &std::collections::VecDeque<Added>, done: u64, base: u64) -> Option<Keys> {
    let mut out: Keys = (Vec::new(), Vec::new());
    let mut at = base;
    for _ in 0..=recent.len() {
        if at == done {
            return Some(out);
        }
        let a = recent.iter().find(|a| a.generation == at)?;
        out.0.extend_from_slice(&a.keys);
        out.1.extend_from_slice(&a.keys6);
        match a.base {
            None => return Some(out),
            Some(b) => at = b,
        }
    }
    None
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("state_file", &self.state_file.path())
            .finish_non_exhaustive()
    }
}

pub use mgmt::store::now_unix;

impl Management {
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
        dp: DataPlane,
    ) -> Management {
        let first = cell.load();
        let recent_locals = Mutex::new(
            std::iter::once(Added {
                generation: first.generation,
                base: None,
                keys: first.sorted_locals().to_vec(),
                keys6: first.sorted_locals6().to_vec(),
            })
            .collect(),
        );
        Management {
            store: Mutex::new(store),
            state_file,
            cluster: None,
            config,
            macs,
            mtus,
            handles: Mutex::new(handles),
            cell,
            generation: AtomicU64::new(generation),
            usage: Mutex::new(
                (0..dp.reports.len())
                    .map(|_| WorkerUsage::default())
                    .collect(),
            ),
            dp,
            recent_locals,
            compact_tries: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// Makes this node a member of a fleet whose state lives in etcd.
    #[must_use]
    pub fn with_cluster(mut self, link: ClusterLink) -> Management {
        self.cluster = Some(link);
        self
    }

    /// Builds the snapshot that enforces `state` (not yet published). The store's
    /// validation and quotas guarantee it builds; a failure is reported as what it is.
    ///
    /// It is made from the snapshot in force, which is always the one of the store's
    /// state (a snapshot is published only with the state it enforces, under the store's
    /// lock), by making again what `change` (from that state to `state`) touched.
    fn build(&self, state: &State, change: &Change) -> Result<Snapshot, ApiErrorBody> {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let generation = self.generation.load(Ordering::SeqCst) + 1;
        Snapshot::update(
            &self.cell.load(),
            generation,
            &self.config,
            &self.macs,
            &self.mtus,
            state,
            change,
            &mut handles,
            &self.dp.health.states(),
        )
        .map_err(|e| {
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
            let done = self.dp.announced.load(Ordering::Acquire);
            let mut recent = self.recent_locals.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|a| a.generation > done);
            let added = Added {
                generation: snap.generation,
                base: snap.base,
                keys: snap.announce.clone(),
                keys6: snap.announce6.clone(),
            };
            if let Some(base) = snap.base {
                match added_since(&recent, done, base) {
                    Some((keys, keys6)) => snap.announce_also(&keys, &keys6),
                    None => snap.announce_all(),
                }
            }
            recent.push_back(added);
            while recent.len() > RECENT_LOCALS {
                recent.pop_front();
            }
        }
        let generation = snap.generation;
        self.generation.store(generation, Ordering::SeqCst);
        let (services, endpoints) = (snap.service_count(), snap.endpoint_count());
        self.cell.publish(snap);
        self.dp.telemetry.published(started.elapsed());
        log::info!(
            "snapshot {generation}: {services} services, {endpoints} endpoints, built and published in {:.1} ms",
            started.elapsed().as_secs_f64() * 1000.0
        );
    }

    /// Puts `next` in force: build its snapshot, make it durable, publish, and only then
    /// commit it to the store. See the module documentation for what each failure leaves.
    fn apply(
        &self,
        store: &mut Store,
        next: State,
        touched: &[String],
        baseline: Baseline,
    ) -> Result<(), ApiErrorBody> {
        match self.try_apply(store, next, touched, baseline) {
            Ok(()) => Ok(()),
            Err(Failure::Api(e)) => Err(e),
            Err(Failure::Conflict(r)) => Err(conflict(r)),
        }
    }

    fn try_apply(
        &self,
        store: &mut Store,
        next: State,
        touched: &[String],
        baseline: Baseline,
    ) -> Result<(), Failure> {
        if let Some(c) = &self.cluster {
            return self.apply_cluster(c, store, next, touched, baseline);
        }
        Ok(self.apply_file(store, next, touched, baseline)?)
    }

    /// [`apply`](Self::apply) of a cluster node: the change is committed to etcd,
    /// conditioned on the revision the store's state is at, then put in force.
    fn apply_cluster(
        &self,
        c: &ClusterLink,
        store: &mut Store,
        next: State,
        touched: &[String],
        baseline: Baseline,
    ) -> Result<(), Failure> {
        let guard = {
            let v = lock(&c.view);
            if let Some(u) = &v.unusable {
                return Err(Failure::Api(ApiErrorBody::new(
                    "ServiceUnavailable",
                    format!(
                        "this node cannot put the fleet's state in force ({u}); nothing changed"
                    ),
                )));
            }
            v.commit_revision
        };
        let started = std::time::Instant::now();
        let snap = self.build(&next, &Change::from_touched(touched))?;
        let built = started.elapsed();
        match c
            .cluster
            .commit(store.state(), &next, touched, baseline, guard)
        {
            Ok(revision) => {
                log::info!(
                    "change: snapshot built in {:.1} ms, committed to etcd (revision {revision}) in {:.1} ms",
                    built.as_secs_f64() * 1000.0,
                    (started.elapsed() - built).as_secs_f64() * 1000.0
                );
                self.publish(snap, started);
                let mark = {
                    let mut v = lock(&c.view);
                    v.mirror = next.clone();
                    v.revision = revision;
                    v.commit_revision = revision;
                    v.down = None;
                    v.synced = true;
                    v.mark(c.cluster.layout().prefix_str())
                };
                let saved = c
                    .cache
                    .save_change(store.state(), &next, touched, baseline, &mark);
                if let Err(e) = saved {
                    log::warn!("cluster: local cache not written ({e}); etcd holds the change");
                }
                self.commit(store, next);
                Ok(())
            }
            Err(CommitError::Conflict { revision, guard }) => {
                log::info!(
                    "change: another node committed first (the commit key is at revision {guard}, etcd at {revision}); validating again"
                );
                Err(Failure::Conflict(guard))
            }
            Err(CommitError::Unavailable(reason)) => {
                lock(&c.view).down = Some(reason.clone());
                Err(Failure::Api(ApiErrorBody::new(
                    "ServiceUnavailable",
                    format!(
                        "{reason}: etcd did not confirm the change, so it is not \
                         acknowledged; if it was committed all the same, every node \
                         applies it once etcd answers (a retry with the same ClientToken \
                         is safe)"
                    ),
                )))
            }
            Err(CommitError::Refused(e)) => Err(Failure::Api(ApiErrorBody::new(
                "InvalidRequest",
                format!("{e}; nothing changed"),
            ))),
        }
    }

    /// [`apply`](Self::apply) of a single node: the change is made durable in the state
    /// file, then put in force.
    fn apply_file(
        &self,
        store: &mut Store,
        next: State,
        touched: &[String],
        baseline: Baseline,
    ) -> Result<(), ApiErrorBody> {
        let started = std::time::Instant::now();
        let snap = self.build(&next, &Change::from_touched(touched))?;
        let built = started.elapsed();
        let saved = self
            .state_file
            .save_change_with(store.state(), &next, touched, baseline);
        log::info!(
            "change: snapshot built in {:.1} ms, made durable in {:.1} ms",
            built.as_secs_f64() * 1000.0,
            (started.elapsed() - built).as_secs_f64() * 1000.0
        );
        match saved {
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
                        self.commit(store, next);
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
        self.commit(store, next);
        Ok(())
    }

    /// Runs a store request: a change is acknowledged only once it is in force. On a
    /// cluster node, a change another node beat to etcd is validated again against the
    /// state that won, and retried.
    fn change(
        &self,
        mut f: impl FnMut(&mut Store) -> Result<store::Outcome, store::ApiError>,
    ) -> Handled {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut lost_to = 0;
        let mut checked = false;
        for _ in 0..COMMIT_ATTEMPTS {
            let out = match f(&mut store) {
                Ok(out) => out,
                Err(e) => {
                    // Refused by this node's state, which may not yet hold a change
                    // another node acknowledged (the object it names, say): once, ask
                    // etcd for the last commit and answer from a state that holds it.
                    if !checked && self.behind(&mut store) {
                        checked = true;
                        continue;
                    }
                    return Handled::from(Err(api_error(e)));
                }
            };
            let Some(next) = out.next else {
                let mut response = out.response;
                self.mark_stale(&mut response);
                return Handled::from(Ok(response));
            };
            match self.try_apply(&mut store, next, &out.touched, Baseline::Kept) {
                Ok(()) => {
                    return Handled {
                        result: Ok(out.response),
                        touched: out.touched,
                    }
                }
                Err(Failure::Api(e)) => return Handled::from(Err(e)),
                Err(Failure::Conflict(revision)) => {
                    lost_to = revision;
                    self.catch_up(&mut store, revision);
                }
            }
        }
        Handled::from(Err(conflict(lost_to)))
    }

    /// Whether the store was behind etcd's last commit, now caught up with (a cluster
    /// node whose etcd answers).
    fn behind(&self, store: &mut Store) -> bool {
        let Some(c) = &self.cluster else {
            return false;
        };
        let held = lock(&c.view).commit_revision;
        match c.cluster.last_commit() {
            Ok(last) if last > held => {
                self.catch_up(store, last);
                true
            }
            _ => false,
        }
    }

    /// A cluster node's answer from a state that may not be the fleet's current one says
    /// so: `StateMayBeStale` and why, and the revision it is at.
    fn mark_stale(&self, response: &mut Value) {
        let Some(c) = &self.cluster else {
            return;
        };
        let v = lock(&c.view);
        if let (Some(why), Value::Object(m)) = (v.stale(), response) {
            m.insert("StateMayBeStale".into(), json!(true));
            m.insert("StaleReason".into(), json!(why));
            m.insert("StateRevision".into(), json!(v.revision));
        }
    }

    /// Applies what the watcher fed until the state holds the commit made at `guard`
    /// (the commit key's revision), or the wait ends.
    fn catch_up(&self, store: &mut Store, guard: i64) {
        let Some(c) = &self.cluster else {
            return;
        };
        let end = std::time::Instant::now() + CATCH_UP_WAIT;
        while lock(&c.view).commit_revision < guard {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match c.feed.recv_timeout(left) {
                Ok(feed) => self.take_feed(c, store, feed),
                Err(_) => return,
            }
        }
    }

    /// What the cluster watcher fed since the last call, put in force (the main loop
    /// calls this every few tens of ms); then the configuration's declarations, once.
    pub fn follow_cluster(&self) {
        let Some(c) = &self.cluster else {
            return;
        };
        if c.feed.is_empty() && !lock(&c.view).declared_pending {
            return;
        }
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(feed) = c.feed.try_recv() {
            self.take_feed(c, &mut store, feed);
        }
        let due = {
            let v = lock(&c.view);
            v.declared_pending && v.synced && v.down.is_none() && v.unusable.is_none()
        };
        if due {
            match self.apply_declarations(&mut store, &self.config, now_unix()) {
                Ok(notes) => {
                    lock(&c.view).declared_pending = false;
                    for n in &notes {
                        log::info!("configuration: {n}");
                    }
                }
                Err(e) => log::warn!(
                    "cluster: the configuration's declarations are not applied yet ({e}); trying again"
                ),
            }
        }
    }

    /// What changed in `config`'s declarations since the baseline the state holds, put in
    /// force as a change (on a cluster node: of the fleet's state, validated again and
    /// retried when another node committed first). Returns one line per change.
    fn apply_declarations(
        &self,
        store: &mut Store,
        config: &Config,
        now: u64,
    ) -> Result<Vec<String>, String> {
        let refused = |e: ApiErrorBody| format!("{}: {}", e.code, e.message);
        let mut lost_to = 0;
        for _ in 0..COMMIT_ATTEMPTS {
            let (next, notes) = store
                .prepare_reload(config, now)
                .map_err(|e| e.to_string())?;
            let Some(next) = next else {
                return Ok(notes);
            };
            let touched = store::touched(store.state(), &next);
            match self.try_apply(store, next, &touched, Baseline::MayChange) {
                Ok(()) => return Ok(notes),
                Err(Failure::Api(e)) => return Err(refused(e)),
                Err(Failure::Conflict(r)) => {
                    lost_to = r;
                    self.catch_up(store, r);
                }
            }
        }
        Err(refused(conflict(lost_to)))
    }

    /// One thing the watcher saw.
    fn take_feed(&self, c: &ClusterLink, store: &mut Store, feed: Feed) {
        let mut v = lock(&c.view);
        match feed {
            Feed::Up => {
                // The watch from the revision held is in place: whatever was missed
                // arrives next, in order.
                v.down = None;
                v.synced = true;
            }
            Feed::Down(why) => v.down = Some(why),
            Feed::Unusable(why) => v.unusable = Some(why),
            Feed::Loaded(s) => {
                v.loaded(s);
                drop(v);
                self.put_mirror_in_force(c, store, false);
            }
            Feed::Changes(batch) => {
                // What this node committed itself is in force already.
                let fresh = batch.after(v.revision);
                let Some(last) = fresh.last_revision() else {
                    return;
                };
                let moved = c.cluster.layout().apply_batch(&mut v.mirror, fresh);
                v.revision = last;
                if let Some(r) = moved {
                    v.commit_revision = r;
                }
                v.synced = true;
                drop(v);
                self.put_mirror_in_force(c, store, true);
            }
        }
    }

    /// Makes the store (and the data plane) hold the mirror of etcd's state, when it
    /// differs and validates here; else says why it cannot. `incremental`: the mirror
    /// moved by watched changes from the state the store holds (the cache records only
    /// what they changed; a full load is compared and written whole).
    fn put_mirror_in_force(&self, c: &ClusterLink, store: &mut Store, incremental: bool) {
        let (next, mark) = {
            let mut v = lock(&c.view);
            if !incremental && v.mirror == *store.state() {
                v.unusable = None;
                return;
            }
            (v.mirror.clone(), v.mark(c.cluster.layout().prefix_str()))
        };
        let started = std::time::Instant::now();
        let touched = store::touched(store.state(), &next);
        let checked = store
            .validate_foreign(&next)
            .map_err(|e| {
                format!(
                    "the fleet's state at revision {} is not valid here: {e}",
                    mark.revision
                )
            })
            .and_then(|()| {
                self.build(&next, &Change::from_touched(&touched))
                    .map_err(|e| e.message)
            });
        match checked {
            Ok(snap) => {
                self.publish(snap, started);
                // The cache holds what the store holds (it is written only with it).
                let saved = if incremental {
                    let baseline = Baseline::MayChange;
                    c.cache
                        .save_change(store.state(), &next, &touched, baseline, &mark)
                } else {
                    c.cache.save(&next, &mark)
                };
                if let Err(e) = saved {
                    log::warn!("cluster: local cache not written: {e}");
                }
                self.commit(store, next);
                lock(&c.view).unusable = None;
                log::info!("cluster: revision {} in force", mark.revision);
            }
            Err(why) => {
                log::error!("cluster: {why}; this node keeps its last state and refuses changes");
                lock(&c.view).unusable = Some(why);
            }
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
        if let Some(next) = store.prepare_tick(now) {
            let touched = store::touched(store.state(), &next);
            if let Err(e) = self.apply(&mut store, next, &touched, Baseline::Kept) {
                log::error!(
                    "timed state change not applied (retried next tick): {}",
                    e.message
                );
            }
        }
        if self.cluster.is_none() && self.state_file.compaction_due() {
            self.compact_aside(store);
        }
    }

    /// Publishes a snapshot with the targets' new health when the checker moved new
    /// flows (the main loop asks every few tens of ms, so a burst of changes costs one
    /// build). A failed build is retried at the next change.
    pub fn follow_health(&self) {
        let moved = self.dp.health.take_changes();
        if !moved.is_empty() && self.dp.events.has_subscribers() {
            let snap = self.cell.load();
            for (key, h) in moved {
                let id = key.service.to_string();
                let Some(service) = snap.services().find(|s| s.id == id) else {
                    continue;
                };
                let proto = if key.proto == 17 { "udp" } else { "tcp" };
                self.dp.events.publish(&mgmt::events::Event {
                    body: json!({
                        "Type": "TargetHealth",
                        "Time": now_unix(),
                        "ServiceId": service.id,
                        "Listener": format!("{proto}:{}", key.port),
                        "Target": std::net::SocketAddr::new(key.ip, key.target_port).to_string(),
                        "State": h.state.as_str(),
                        "Reason": h.reason.map(|r| r.as_str()),
                        "Description": h.description,
                    }),
                    audience: vec![service.owner],
                });
            }
        }
        if !self.dp.health.take_routing_change() {
            return;
        }
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        match self.build(store.state(), &Change::health()) {
            Ok(snap) => self.publish(snap, started),
            Err(e) => log::error!("health change not applied: {}", e.message),
        }
    }

    /// Makes `next` the store's state, and tells subscribers what happened to endpoints:
    /// `Connect` (created), `Accept`, `Reject` (their state changed so), `Delete` (gone,
    /// or `deleted`): the cloud's connection notification events, to the endpoint's and
    /// its service's owners. Compared only while someone listens.
    fn commit(&self, store: &mut Store, next: State) {
        if self.dp.events.has_subscribers() {
            for event in endpoint_events(store.state(), &next, now_unix()) {
                self.dp.events.publish(&event);
            }
        }
        store.commit(next);
    }

    /// An HA node's role as the sync thread last posted it: a change is an event (for
    /// the administrator only). The main loop calls this with each new role.
    pub fn note_ha_role(&self, role: &str, previous: &str) {
        self.dp.events.publish(&mgmt::events::Event {
            body: json!({"Type": "HaRole", "Time": now_unix(), "Role": role, "Previous": previous}),
            audience: Vec::new(),
        });
    }

    /// Folds the journal into a new checkpoint of what the store holds (which is what the
    /// checkpoint and journal hold), so that a load reads one file again. A failure
    /// leaves the files as they were (a `NotDurable` one, the same state in the new
    /// checkpoint), so it is only logged and tried again later.
    fn compact(&self, store: &Store) {
        let started = std::time::Instant::now();
        match self.state_file.save(store.state()) {
            Ok(()) => log::info!(
                "state journal folded into a new checkpoint in {:.1} ms",
                started.elapsed().as_secs_f64() * 1000.0
            ),
            Err(e) => log::warn!("state journal not folded into a checkpoint: {e}"),
        }
    }

    /// [`compact`](Self::compact) with its slow half (encoding and writing the whole
    /// state: seconds at a million endpoints) outside the store's lock, so that requests
    /// go on meanwhile: on a copy of the state (pointers to the endpoints' chunks), put
    /// in place only if no change was made durable in between (else the next tick tries
    /// again). After [`COMPACT_TRIES`] such tries it is done holding the lock, so that a
    /// steady stream of changes cannot grow the journal without end.
    fn compact_aside(&self, store: std::sync::MutexGuard<'_, Store>) {
        let tries = self.compact_tries.load(Ordering::Relaxed);
        if tries >= COMPACT_TRIES {
            self.compact(&store);
            self.compact_tries.store(0, Ordering::Relaxed);
            return;
        }
        let started = std::time::Instant::now();
        let (state, mark) = (store.state().clone(), self.state_file.journal_mark());
        drop(store);
        let prepared = self.state_file.prepare_checkpoint(&state, mark);
        let _store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match prepared.and_then(|p| self.state_file.install_checkpoint(p)) {
            Ok(true) => {
                self.compact_tries.store(0, Ordering::Relaxed);
                log::info!(
                    "state journal folded into a new checkpoint in {:.1} ms (the store's lock \
                     held only to put it in place)",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Ok(false) => {
                self.compact_tries.store(tries + 1, Ordering::Relaxed);
                log::info!(
                    "state journal not folded: a change was saved while the checkpoint was \
                     written ({:.1} ms); tried again at the next tick",
                    started.elapsed().as_secs_f64() * 1000.0
                );
            }
            Err(e) => log::warn!("state journal not folded into a checkpoint: {e}"),
        }
    }

    /// At a clean stop: leave the state as one checkpoint, the file an operator reads.
    pub fn checkpoint(&self) {
        if self.cluster.is_none() && self.state_file.has_journal() {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            self.compact(&store);
        }
    }

    /// Applies a reloaded configuration (SIGHUP): its accounts and quotas, and what
    /// changed in its declared objects since they were last applied. A reload that cannot
    /// be applied changes nothing and says why. Returns one line per change.
    pub fn reload(&self, next: &Config) -> Result<Vec<String>, String> {
        let now = now_unix();
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let notes = self.apply_declarations(&mut store, next, now)?;
        store.apply_reload(next);
        Ok(notes)
    }

    /// Takes in the workers' new usage reports (the main loop calls this every few tens
    /// of ms, so the queues never fill).
    pub fn collect_reports(&self) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        for (q, u) in self.dp.reports.iter().zip(usage.iter_mut()) {
            while let Some(r) = q.pop() {
                u.merge(r);
            }
        }
    }

    /// The merged usage, once every worker has reported a sweep that started after now
    /// (or [`REPORT_WAIT`] has passed): whatever happened before the request is in it.
    fn fresh_usage(&self) -> std::sync::MutexGuard<'_, Vec<WorkerUsage>> {
        // 0 tells the workers nothing is wanted yet.
        let since = (self.dp.clock)().max(1);
        self.dp.usage_wanted.fetch_max(since, Ordering::AcqRel);
        let deadline = std::time::Instant::now() + REPORT_WAIT;
        loop {
            self.collect_reports();
            let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
            let fresh = usage
                .iter()
                .all(|u| u.started_ms.is_some_and(|t| t >= since));
            if fresh || std::time::Instant::now() >= deadline {
                return usage;
            }
            drop(usage);
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The endpoints the caller may see: its own endpoints (their consumer side), and
    /// endpoints of its services (their provider side); everything for admin.
    fn visible_endpoints(&self, caller: &Caller) -> Vec<Visible> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let state = store.state();
        state
            .endpoints
            .iter()
            .filter_map(|e| {
                let consumer_side = caller.admin || Some(e.owner) == caller.account;
                let provider_side = caller.admin
                    || state
                        .service(e.service_id)
                        .is_some_and(|s| Some(s.owner) == caller.account);
                if !consumer_side && !provider_side {
                    return None;
                }
                Some(Visible {
                    handle: handles.endpoint_handle(&e.id)?,
                    endpoint: e.id.to_string(),
                    service: e.service_id.to_string(),
                    consumer_side,
                    provider_side,
                })
            })
            .collect()
    }

    fn stats(&self, caller: &Caller) -> Result<Value, ApiErrorBody> {
        let visible = self.visible_endpoints(caller);
        let usage = self.fresh_usage();
        let mut per_endpoint: Vec<Value> = Vec::new();
        let mut per_service: std::collections::BTreeMap<String, (EndpointUsage, u64)> =
            Default::default();
        for v in &visible {
            let (total, active) = endpoint_totals(&usage, v.handle);
            let s = per_service.entry(v.service.clone()).or_default();
            s.0.new_flows += total.new_flows;
            for (t, d) in s.0.drops.iter_mut().zip(total.drops.iter()) {
                *t += d;
            }
            s.0.packets += total.packets;
            s.0.bytes += total.bytes;
            s.1 += active;
            per_endpoint.push(json!({
                "VpcEndpointId": v.endpoint, "ServiceId": v.service, "ActiveFlows": active,
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
        let mut per_target: std::collections::BTreeMap<(String, String), u64> = Default::default();
        {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            let snap = self.cell.load();
            for w in usage.iter() {
                for (&(svc, ip, port), &active) in &w.targets {
                    let Some(s) = snap.service_by_handle(svc) else {
                        continue;
                    };
                    let owner = store
                        .state()
                        .services
                        .iter()
                        .find(|x| x.id.to_string() == s.id)
                        .map(|x| x.owner);
                    if caller.admin || owner.is_some_and(|o| Some(o) == caller.account) {
                        let at = std::net::SocketAddr::new(s.provider_address(ip), port);
                        let key = (s.id.clone(), at.to_string());
                        *per_target.entry(key).or_default() += active;
                    }
                }
            }
        }
        drop(usage);
        let per_target: Vec<Value> = per_target
            .into_iter()
            .map(|((svc, target), a)| json!({"ServiceId": svc, "Target": target, "ActiveFlows": a}))
            .collect();
        let mut body = json!({
            "Endpoints": per_endpoint,
            "Services": per_service,
            "Targets": per_target,
        });
        if caller.admin {
            let workers: Vec<Counters> = self.dp.published.iter().map(|p| p.read()).collect();
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
            if let Some(ha) = &self.dp.ha {
                body["HighAvailability"] = ha.lock().unwrap_or_else(|e| e.into_inner()).clone();
            }
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
                        format!("MaxResults must be an integer 1..={MAX_FLOWS}"),
                    )
                })?,
        };
        let mut visible = self.visible_endpoints(caller);
        if let Some(v) = args.get("VpcEndpointId") {
            let id = v.as_str().ok_or_else(|| {
                ApiErrorBody::new("InvalidParameterValue", "VpcEndpointId must be a string")
            })?;
            visible.retain(|e| e.endpoint == id);
            if visible.is_empty() {
                return Err(ApiErrorBody::new(
                    "InvalidVpcEndpointId.NotFound",
                    format!("the VPC endpoint ID '{id}' does not exist"),
                ));
            }
        }
        if visible.is_empty() && !caller.admin {
            // Nothing to see: no worker needs to look.
            return Ok(json!({ "Flows": [] }));
        }
        // The filter goes to the workers, so the first MaxResults flows are the caller's.
        let filter = if caller.admin && args.get("VpcEndpointId").is_none_or(Value::is_null) {
            FlowFilter::All
        } else {
            let mut handles: Vec<u32> = visible.iter().map(|v| v.handle).collect();
            handles.sort_unstable();
            FlowFilter::Endpoints(handles)
        };
        let mut waits = Vec::with_capacity(self.dp.queries.len());
        for q in &self.dp.queries {
            let (tx, rx) = bounded(1);
            q.send(Query::Flows(FlowQuery {
                filter: filter.clone(),
                max,
                reply: tx,
            }))
            .map_err(|_| ApiErrorBody::new("InternalError", "a worker is gone"))?;
            waits.push(rx);
        }
        let mut lists: Vec<Vec<FlowInfo>> = Vec::with_capacity(waits.len());
        for rx in waits {
            lists.push(rx.recv_timeout(QUERY_TIMEOUT).map_err(|_| {
                ApiErrorBody::new("ServiceUnavailable", "a worker did not answer in time")
            })?);
        }
        let by_handle: HashMap<u32, &Visible> = visible.iter().map(|v| (v.handle, v)).collect();
        let flows: Vec<Value> = lists
            .into_iter()
            .flatten()
            .filter_map(|f| {
                let v = by_handle.get(&f.endpoint)?;
                let mut o = json!({
                    "VpcEndpointId": v.endpoint, "ServiceId": v.service,
                    "Protocol": match f.proto { 6 => "tcp", 17 => "udp", _ => "other" },
                    "State": f.state, "Packets": f.packets, "Bytes": f.bytes,
                    "AgeMs": f.age_ms, "IdleMs": f.idle_ms, "Worker": f.worker,
                });
                // Each side sees only its own addresses: a consumer never learns the
                // target or the SNAT address, a provider never the consumer's.
                if v.consumer_side {
                    o["Consumer"] = json!(f.consumer.to_string());
                    o["Endpoint"] = json!(f.endpoint_addr.to_string());
                }
                if v.provider_side {
                    o["Snat"] = json!(f.snat.to_string());
                    o["Target"] = json!(f.target.to_string());
                }
                Some(o)
            })
            .take(max)
            .collect();
        Ok(json!({ "Flows": flows }))
    }

    /// `describe-target-health` from the store, with each target's health (the checker's
    /// state, reason, description and time of the last change) and active flows.
    fn target_health(&self, caller: &Caller, req: &Request) -> Result<Value, ApiErrorBody> {
        let mut body = self
            .change(|s| s.prepare(&store_caller(caller), &req.op, &req.args, now_unix()))
            .result?;
        let service: Option<ServiceId> = req
            .args
            .get("ServiceId")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let Some(service) = service else {
            return Ok(body);
        };
        let listeners = self
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
            .service(service)
            .map(|s| s.listeners.clone())
            .unwrap_or_default();
        let snap = self.cell.load();
        let handle = snap
            .services()
            .find(|s| s.id == service.to_string())
            .map(|s| s.handle);
        let usage = self.fresh_usage();
        let now = now_unix();
        if let Some(list) = body
            .get_mut("TargetHealthDescriptions")
            .and_then(Value::as_array_mut)
        {
            for d in list.iter_mut() {
                let ip: Option<std::net::IpAddr> =
                    d["Target"]["Id"].as_str().and_then(|s| s.parse().ok());
                let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
                let (Some(ip), Some(tport), Some(lport)) =
                    (ip, port(&d["Target"]["Port"]), port(&d["Listener"]["Port"]))
                else {
                    continue;
                };
                let protocol: Option<mgmt::model::Protocol> = d["Listener"]["Protocol"]
                    .as_str()
                    .and_then(|p| p.parse().ok());
                let found = protocol.and_then(|proto| {
                    let l = listeners
                        .iter()
                        .find(|l| l.protocol == proto && l.port == lport)?;
                    let t = l.targets.iter().find(|t| t.ip == ip && t.port == tport)?;
                    Some((proto, l, t))
                });
                if let Some((proto, l, t)) = found {
                    let key = crate::health::TargetKey {
                        service,
                        proto: proto.number(),
                        port: lport,
                        ip,
                        target_port: tport,
                    };
                    let h = self
                        .dp
                        .health
                        .get(&key)
                        .unwrap_or_else(|| crate::health::unchecked(l, t, now));
                    d["HealthCheckPort"] = json!(l.health_check_port.unwrap_or(tport));
                    let mut th = json!({
                        "State": h.state.as_str(),
                        "LastChange": mgmt::store::rfc3339(h.since),
                    });
                    if let Some(r) = h.reason {
                        th["Reason"] = json!(r.as_str());
                    }
                    if !h.description.is_empty() {
                        th["Description"] = json!(h.description);
                    }
                    if let Some(at) = d["TargetHealth"].get("DeregisteredAt").cloned() {
                        th["DeregisteredAt"] = at;
                    }
                    d["TargetHealth"] = th;
                }
                if let Some(h) = handle {
                    let active: u64 = usage
                        .iter()
                        .filter_map(|w| w.targets.get(&(h, target_ip_key(ip), tport)))
                        .sum();
                    d["ActiveFlows"] = json!(active);
                }
            }
        }
        Ok(body)
    }
}

impl Handler for Management {
    fn handle(&self, caller: &Caller, req: &Request) -> Handled {
        let started = std::time::Instant::now();
        let handled = self.answer(caller, req);
        // Labels from closed sets: a known operation's name (else `unknown`), `ok` or
        // the error's code.
        let op = mgmt::store::OPERATIONS
            .iter()
            .find(|(name, _)| *name == req.op)
            .map_or("unknown", |(name, _)| name);
        let result = match &handled.result {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.dp.telemetry.request(op, result, started.elapsed());
        handled
    }

    fn subscribe(&self, caller: &Caller) -> Result<mgmt::events::Subscription, ApiErrorBody> {
        self.dp
            .telemetry
            .request("subscribe-events", "ok", Duration::ZERO);
        Ok(self.dp.events.subscribe(caller))
    }
}

impl crate::daemon::metrics::Source for Management {
    fn gather(&self) -> crate::daemon::metrics::View {
        use crate::daemon::metrics::{EndpointFigures, TargetFigures, View};
        let snap = self.cell.load();
        // By (service id, target address, port), built once: a scrape looks every
        // registered target up in it.
        let health: HashMap<(String, std::net::IpAddr, u16), &'static str> = self
            .dp
            .health
            .states()
            .into_iter()
            .map(|(k, st)| ((k.service.to_string(), k.ip, k.target_port), st.as_str()))
            .collect();
        let usage = self.fresh_usage();
        let mut endpoints = Vec::with_capacity(snap.endpoint_count());
        // In the order they were made (handles are handed out in sequence).
        let mut views: Vec<_> = snap.endpoints().collect();
        views.sort_unstable_by_key(|e| e.handle);
        for e in views {
            let mut f = EndpointFigures {
                endpoint: e.id.clone(),
                service: snap
                    .service_by_handle(e.service)
                    .map(|s| s.id.clone())
                    .unwrap_or_default(),
                vpc: snap
                    .attachment(e.attachment)
                    .map(|a| a.vpc_id.clone())
                    .unwrap_or_default(),
                account: e.owner.to_string(),
                ..EndpointFigures::default()
            };
            let (total, active) = endpoint_totals(&usage, e.handle);
            (f.packets, f.bytes, f.new_flows) = (total.packets, total.bytes, total.new_flows);
            f.active_flows = active;
            f.drops = DropReason::ALL
                .iter()
                .filter(|r| total.drops[**r as usize] > 0)
                .map(|r| (r.label(), total.drops[*r as usize]))
                .collect();
            endpoints.push(f);
        }
        // Every registered target, with its live flows and health state.
        let mut targets = Vec::new();
        for s in snap.services() {
            let mut seen = std::collections::BTreeSet::new();
            for l in &s.listeners {
                for t in &l.targets {
                    if !seen.insert((t.ip, t.port)) {
                        continue;
                    }
                    let active = usage
                        .iter()
                        .filter_map(|w| w.targets.get(&(s.handle, t.ip, t.port)))
                        .sum();
                    let state = health.get(&(s.id.clone(), t.addr(), t.port)).copied();
                    targets.push(TargetFigures {
                        service: s.id.clone(),
                        target: std::net::SocketAddr::new(t.addr(), t.port).to_string(),
                        active_flows: active,
                        health: state,
                    });
                }
            }
        }
        let mut snat: std::collections::BTreeMap<u32, u64> = snap
            .services()
            .flat_map(|s| s.snat.iter().chain(s.snat6.iter().map(|(f, _)| f)))
            .map(|&a| (a, 0))
            .collect();
        // Flows count an IPv6 SNAT address under its fold.
        let named6: HashMap<u32, String> = snap
            .services()
            .flat_map(|s| s.snat6.iter())
            .map(|&(f, a)| (f, std::net::Ipv6Addr::from(a).to_string()))
            .collect();
        for w in usage.iter() {
            for (a, n) in &w.snat {
                *snat.entry(*a).or_default() += n;
            }
        }
        drop(usage);
        View {
            workers: self.dp.published.iter().map(|p| p.read()).collect(),
            flow_capacity: u64::from(self.config.tables.flows_per_worker),
            endpoints,
            targets,
            snat: snat
                .into_iter()
                .map(|(a, n)| {
                    let name = named6.get(&a).cloned();
                    (name.unwrap_or_else(|| Ipv4Addr::from(a).to_string()), n)
                })
                .collect(),
            generation: self.generation.load(Ordering::SeqCst),
        }
    }
}

impl Management {
    /// A request's answer (what [`Handler::handle`] times and counts).
    fn answer(&self, caller: &Caller, req: &Request) -> Handled {
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

/// The connection events between two states (see [`Management::commit`]).
fn endpoint_events(prev: &State, next: &State, now: u64) -> Vec<mgmt::events::Event> {
    use mgmt::model::EndpointState as S;
    let before: HashMap<_, _> = prev.endpoints.iter().map(|e| (e.id, e)).collect();
    let owner_of = |svc| {
        next.service(svc)
            .or_else(|| prev.service(svc))
            .map(|s| s.owner)
    };
    let event = |kind: &str, e: &mgmt::model::Endpoint| mgmt::events::Event {
        body: json!({
            "Type": kind,
            "Time": now,
            "VpcEndpointId": e.id.to_string(),
            "ServiceId": e.service_id.to_string(),
            "VpcEndpointOwner": e.owner.to_string(),
            "VpcEndpointState": e.state.as_str(),
        }),
        audience: std::iter::once(e.owner)
            .chain(owner_of(e.service_id))
            .collect(),
    };
    let mut out = Vec::new();
    let mut still = std::collections::HashSet::new();
    for e in &next.endpoints {
        still.insert(e.id);
        match before.get(&e.id) {
            None => out.push(event("Connect", e)),
            Some(b) if b.state != e.state => match e.state {
                S::Available => out.push(event("Accept", e)),
                S::Rejected => out.push(event("Reject", e)),
                S::Deleted | S::Deleting => out.push(event("Delete", e)),
                _ => {}
            },
            Some(_) => {}
        }
    }
    for e in &prev.endpoints {
        if !still.contains(&e.id) && !matches!(e.state, S::Deleted) {
            out.push(event("Delete", e));
        }
    }
    out
}

/// What an endpoint's flows carried, ended and live, over every worker's report, and its
/// live flows.
fn endpoint_totals(usage: &[WorkerUsage], handle: u32) -> (EndpointUsage, u64) {
    let mut total = EndpointUsage::default();
    let mut active = 0;
    for w in usage {
        if let Some(u) = w.endpoints.get(&handle) {
            total.new_flows += u.new_flows;
            for (t, d) in total.drops.iter_mut().zip(u.drops.iter()) {
                *t += d;
            }
            total.packets += u.packets;
            total.bytes += u.bytes;
        }
        if let Some(a) = w.active.get(&handle) {
            total.packets += a.packets;
            total.bytes += a.bytes;
            active += a.flows;
        }
    }
    (total, active)
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

/// Other nodes kept committing first, up to `revision`.
fn conflict(revision: i64) -> ApiErrorBody {
    ApiErrorBody::new(
        "ConcurrentModification",
        format!(
            "other nodes changed the fleet's state while this change was being made \
             (last committed at revision {revision}), {COMMIT_ATTEMPTS} times in a row; nothing \
             changed: try again"
        ),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[doc(hidden)]
pub mod sequences;
#[cfg(test)]
mod tests;
