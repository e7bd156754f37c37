//! The cluster watcher thread: follows the fleet's state in etcd and hands it to the
//! management side ([`super::management::Management::follow_cluster`]) as a [`Feed`]:
//! a full load when it has no position in etcd's history (first start without a cache, a
//! compacted revision, another etcd cluster), then the changes a watch delivers, and
//! whether etcd can be reached. It never touches the store or the data plane itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::Sender;
use mgmt::cluster::etcd::{EtcdError, WatchError};
use mgmt::cluster::layout::Batch;
use mgmt::cluster::{Cluster, Synced};

/// What the watcher tells the management side, in order.
#[derive(Debug)]
pub enum Feed {
    /// The whole state at a revision (replaces what the node holds).
    Loaded(Synced),
    /// Changes after the last revision fed, in revision order, parsed (a batch privlink
    /// cannot read is never fed: the watcher loads everything again instead).
    Changes(Batch),
    /// etcd is reachable again (after [`Feed::Down`]).
    Up,
    /// etcd cannot be reached: why.
    Down(String),
    /// The fleet's state cannot be used (an object privlink cannot read): why. The node
    /// keeps what it has.
    Unusable(String),
}

/// A watch that saw nothing for this long is made again (a member that hung is then
/// left for another).
const WATCH_IDLE: Duration = Duration::from_secs(10);
/// Waits between attempts while etcd is unreachable, growing to the last.
const BACKOFF_MS: [u64; 5] = [100, 200, 500, 1000, 2000];

/// Where the watcher stands in etcd's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub revision: i64,
    pub cluster_id: String,
}

/// Starts the watcher from `from` (none: a full load first).
pub fn spawn(
    cluster: Arc<Cluster>,
    from: Option<Position>,
    feed: Sender<Feed>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("privlink-etcd".into())
        .spawn(move || {
            Watcher {
                cluster,
                at: from,
                feed,
                down: None,
                unusable: None,
                failures: 0,
            }
            .run(&stop)
        })
}

struct Watcher {
    cluster: Arc<Cluster>,
    at: Option<Position>,
    feed: Sender<Feed>,
    /// Why etcd was last found unreachable, while it still is.
    down: Option<String>,
    /// Why the last full load could not be used (said once, not at every retry).
    unusable: Option<String>,
    failures: usize,
}

impl Watcher {
    fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let ok = match self.at.clone() {
                None => self.load(),
                Some(at) => self.watch(&at, stop),
            };
            if !ok {
                let wait = BACKOFF_MS[self.failures.min(BACKOFF_MS.len() - 1)];
                self.failures += 1;
                sleep_unless(stop, Duration::from_millis(wait));
            }
        }
    }

    fn up(&mut self) {
        self.failures = 0;
        if self.down.take().is_some() {
            log::info!("cluster: etcd is reachable again");
            let _ = self.feed.send(Feed::Up);
        }
    }

    fn fail(&mut self, e: &EtcdError) {
        let why = e.to_string();
        if self.down.as_deref() != Some(why.as_str()) {
            log::warn!("cluster: {why}; the data plane keeps its last state, changes are refused");
            let _ = self.feed.send(Feed::Down(why.clone()));
            self.down = Some(why);
        }
    }

    /// The fleet's state cannot be used: said (logged and fed) once per reason, not at
    /// every retry.
    fn unusable(&mut self, why: String) {
        if self.unusable.as_deref() != Some(why.as_str()) {
            log::error!("cluster: {why}");
            let _ = self.feed.send(Feed::Unusable(why.clone()));
            self.unusable = Some(why);
        }
    }

    /// A full load; false when it failed.
    fn load(&mut self) -> bool {
        let started = std::time::Instant::now();
        match self.cluster.load() {
            Ok(s) => {
                self.up();
                self.unusable = None;
                log::info!(
                    "cluster: loaded {} in {:.0} ms",
                    s.summary(),
                    started.elapsed().as_secs_f64() * 1000.0
                );
                self.at = Some(Position {
                    revision: s.revision,
                    cluster_id: s.cluster_id.clone(),
                });
                let _ = self.feed.send(Feed::Loaded(s));
                true
            }
            Err(mgmt::cluster::LoadError::Etcd(e)) => {
                self.fail(&e);
                false
            }
            Err(e @ mgmt::cluster::LoadError::Layout(_)) => {
                self.up();
                self.unusable(e.to_string());
                // Tried again after the backoff: an operator may fix the key.
                false
            }
        }
    }

    /// Watches from `at`; false when it could not (etcd unreachable).
    fn watch(&mut self, at: &Position, stop: &AtomicBool) -> bool {
        let prefix = self.cluster.layout().prefix().to_vec();
        let mut w = match self
            .cluster
            .etcd()
            .watch(&prefix, at.revision + 1, WATCH_IDLE)
        {
            Ok(w) => w,
            Err(EtcdError::Compacted(r)) => {
                log::info!(
                    "cluster: revision {} is compacted (to {r}): loading everything",
                    at.revision
                );
                self.at = None;
                return true;
            }
            Err(e) => {
                self.fail(&e);
                return false;
            }
        };
        self.up();
        if w.cluster_id != at.cluster_id || w.revision < at.revision {
            // Another cluster, or this one's data lost: what the node holds is of no
            // revision etcd has.
            log::warn!(
                "cluster: etcd is cluster {} at revision {}, the state held is of cluster {} at revision {}: loading everything",
                w.cluster_id, w.revision, at.cluster_id, at.revision
            );
            self.at = None;
            return true;
        }
        while !stop.load(Ordering::Relaxed) {
            match w.next_events() {
                Ok(events) => {
                    let batch = match self.cluster.layout().parse(&events) {
                        Ok(b) => b,
                        Err(e) => {
                            // Not applied anywhere: load everything again (and again, after
                            // the backoff, until the key is fixed), never skip it.
                            self.unusable(format!("{e}; the fleet's state is not applied here"));
                            self.at = None;
                            return false;
                        }
                    };
                    if let Some(revision) = batch.last_revision() {
                        self.at = Some(Position {
                            revision,
                            cluster_id: at.cluster_id.clone(),
                        });
                    }
                    let _ = self.feed.send(Feed::Changes(batch));
                }
                // Quiet: watch again (from where it is), to notice a hung member.
                Err(WatchError::Idle) => return true,
                Err(WatchError::Etcd(EtcdError::Compacted(r))) => {
                    log::info!(
                        "cluster: the watch fell behind a compaction (to {r}): loading everything"
                    );
                    self.at = None;
                    return true;
                }
                Err(WatchError::Etcd(e)) => {
                    self.fail(&e);
                    return false;
                }
            }
        }
        true
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
