//! `[cluster]`: the object model of a fleet, kept in etcd.
//!
//! A node validates a request against the state it holds, which is etcd's state at some
//! revision; it commits the change in one transaction conditioned on that revision
//! ([`layout`]: the `commit` key), and acknowledges only once etcd has committed it.
//! Every node watches the prefix and applies what others committed. When etcd cannot be
//! reached, a node keeps what it has, refuses changes (`ServiceUnavailable`) and starts
//! from the [`Cache`] of the last state it saw.
//!
//! - [`etcd`]: the HTTP/JSON gateway client (no gRPC).
//! - [`layout`]: keys and values.
//! - [`Cluster`]: loads and commits, in terms of [`State`]s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::model::State;
use crate::persist::{Baseline, Change, PersistError, StateFile};

pub mod etcd;
pub mod layout;

use etcd::{Etcd, EtcdError};
use layout::{Layout, LayoutError};

/// A state read from etcd, and where in etcd's history it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub state: State,
    /// The etcd revision the state is at.
    pub revision: i64,
    /// The `commit` key's revision in that state (the guard of the next change).
    pub commit_revision: i64,
    pub cluster_id: String,
}

impl Synced {
    /// How many objects, at which revision: for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} services, {} endpoints, {} security groups at revision {}",
            self.state.services.len(),
            self.state.endpoints.len(),
            self.state.security_groups.len(),
            self.revision
        )
    }
}

/// Why a change was not committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitError {
    /// Somebody else committed since the state the change was made from, last at
    /// `guard` (the commit key's revision); etcd is now at `revision`.
    Conflict { revision: i64, guard: i64 },
    /// etcd could not be reached, or did not answer in time. Whether a transaction that
    /// was sent got committed is unknown (a timeout after it left): the watch will tell.
    Unavailable(String),
    /// etcd refused the transaction (too many operations, too large).
    Refused(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict { revision, .. } => write!(
                f,
                "another change was committed first (etcd is at revision {revision})"
            ),
            Self::Unavailable(reason) => f.write_str(reason),
            Self::Refused(e) => f.write_str(e),
        }
    }
}

/// Why a load failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadError {
    Etcd(EtcdError),
    Layout(LayoutError),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Etcd(e) => e.fmt(f),
            Self::Layout(e) => write!(f, "{e}; the state in etcd was not loaded"),
        }
    }
}

/// One node's link to the fleet's etcd.
#[derive(Debug)]
pub struct Cluster {
    etcd: Etcd,
    layout: Layout,
    node: String,
    /// etcd's `--max-txn-ops` as privlink assumes it (etcd's default): a change of more
    /// writes is refused before it is sent, with the reason.
    max_ops: usize,
}

impl Cluster {
    pub fn new(cfg: &ClusterConfig) -> Cluster {
        let node = cfg.node.clone().unwrap_or_else(host_name);
        Cluster {
            etcd: Etcd::new(&cfg.etcd, Duration::from_millis(u64::from(cfg.timeout_ms))),
            layout: Layout::new(&cfg.prefix),
            node,
            max_ops: usize::try_from(cfg.max_txn_ops).unwrap_or(usize::MAX),
        }
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Everything under the prefix, as a state.
    pub fn load(&self) -> Result<Synced, LoadError> {
        let loaded = self
            .etcd
            .load_prefix(self.layout.prefix())
            .map_err(LoadError::Etcd)?;
        let (state, commit_revision) = self.layout.state(&loaded.kvs).map_err(LoadError::Layout)?;
        Ok(Synced {
            state,
            revision: loaded.revision,
            commit_revision,
            cluster_id: loaded.cluster_id,
        })
    }

    /// Commits what turned `prev` into `next`, if nobody committed since `guard` (the
    /// commit key's revision in `prev`). Returns the new revision.
    pub fn commit(
        &self,
        prev: &State,
        next: &State,
        touched: &[String],
        baseline: Baseline,
        guard: i64,
    ) -> Result<i64, CommitError> {
        let change = Change::between_with(prev, next, touched, baseline)
            .unwrap_or_else(|| layout::full_change(prev, next));
        let record = serde_json::json!({"node": self.node, "at": crate::store::now_unix()});
        let ops = self.layout.ops(
            &change,
            prev.declared.as_deref(),
            record.to_string().as_bytes(),
        );
        if ops.len() > self.max_ops {
            return Err(CommitError::Refused(format!(
                "the change writes {} etcd keys in one transaction, more than etcd's \
                 --max-txn-ops allows ({}); raise --max-txn-ops on every etcd member (and \
                 [cluster] max_txn_ops), or make the change in smaller steps",
                ops.len(),
                self.max_ops
            )));
        }
        match self
            .etcd
            .txn_if_unmodified(&self.layout.commit_key(), guard, &ops)
        {
            Ok(t) if t.succeeded => Ok(t.revision),
            Ok(t) => Err(CommitError::Conflict {
                revision: t.revision,
                guard: t.guard_revision,
            }),
            Err(EtcdError::Refused { message, .. }) => Err(CommitError::Refused(format!(
                "etcd refused the change: {message}"
            ))),
            Err(e) => Err(CommitError::Unavailable(e.to_string())),
        }
    }

    /// Writes `state` (a single node's, from its state file) under the prefix, which no
    /// node may have committed to yet, in transactions of at most `max_txn_ops` writes,
    /// the commit record last: nodes that start afterwards find it as if it had been made
    /// through them. Each transaction is conditioned on there being no commit record, so
    /// a node committing meanwhile stops the import; an import cut short (no commit
    /// record yet) may be run again. Returns the number of keys written.
    pub fn import(&self, state: &State) -> Result<usize, String> {
        let guard = self.layout.commit_key();
        match self.etcd.mod_revision(&guard) {
            Ok(0) => {}
            Ok(r) => {
                return Err(format!(
                    "{} already holds a fleet's state (last commit at revision {r}): an import \
                     goes into a prefix no node has written to",
                    self.layout.prefix_str()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
        let record =
            serde_json::json!({"node": self.node, "at": crate::store::now_unix(), "import": true});
        let ops = self.layout.ops(
            &layout::full_change(&State::default(), state),
            None,
            record.to_string().as_bytes(),
        );
        let per = self.max_ops.max(1);
        for (i, chunk) in ops.chunks(per).enumerate() {
            let t = self
                .etcd
                .txn_if_unmodified(&guard, 0, chunk)
                .map_err(|e| format!("{e} (after {} of {} keys)", i * per, ops.len()))?;
            if !t.succeeded {
                return Err(format!(
                    "a node committed to {} during the import (after {} of {} keys); nothing \
                     more was written",
                    self.layout.prefix_str(),
                    i * per,
                    ops.len()
                ));
            }
        }
        Ok(ops.len())
    }

    /// The commit key's revision in etcd now: the last change anybody committed.
    pub fn last_commit(&self) -> Result<i64, EtcdError> {
        self.etcd.mod_revision(&self.layout.commit_key())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "privlinkd".to_owned())
}

/// Where in etcd's history the cached state stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheMark {
    pub revision: i64,
    pub commit_revision: i64,
    pub cluster_id: String,
    /// The prefix it was read under (another prefix's cache is not used).
    pub prefix: String,
}

/// The local cache of a cluster node: the last state it saw from etcd, in the state-file
/// format (`<state_dir>/cluster/state.json` and its journal), and the revision it stands
/// at (`<state_dir>/cluster/revision.json`). Written after the state, so a crash between
/// the two leaves a mark older than the state: watching again from that older revision
/// re-applies changes the state already holds, which [`Layout::apply`] makes harmless.
#[derive(Debug)]
pub struct Cache {
    file: StateFile,
    mark: PathBuf,
}

impl Cache {
    pub fn new(state_dir: &Path) -> Cache {
        let dir = state_dir.join("cluster");
        Cache {
            file: StateFile::new(&dir),
            mark: dir.join("revision.json"),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.file.dir().to_path_buf()
    }

    /// The cached state and its mark; `None` when there is no cache for `prefix`. A cache
    /// that cannot be read is an error (left in place for the operator).
    pub fn load(&self, prefix: &str) -> Result<Option<(State, CacheMark)>, String> {
        let text = match std::fs::read_to_string(&self.mark) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.mark.display())),
        };
        let mark: CacheMark = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a cache mark ({e})", self.mark.display()))?;
        if mark.prefix != prefix {
            return Ok(None);
        }
        match self.file.load() {
            Ok(Some(state)) => Ok(Some((state, mark))),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Saves `next` whole, then its mark.
    pub fn save(&self, next: &State, mark: &CacheMark) -> Result<(), PersistError> {
        self.file.save(next)?;
        self.save_mark(mark)
    }

    /// Saves what turned `prev` (what the cache holds) into `next`, the objects in
    /// `touched` and the baseline as `baseline` says (as [`StateFile::save_change_with`]),
    /// then the mark.
    pub fn save_change(
        &self,
        prev: &State,
        next: &State,
        touched: &[String],
        baseline: Baseline,
        mark: &CacheMark,
    ) -> Result<(), PersistError> {
        self.file.save_change_with(prev, next, touched, baseline)?;
        if self.file.compaction_due() {
            self.file.save(next)?;
        }
        self.save_mark(mark)
    }

    fn save_mark(&self, mark: &CacheMark) -> Result<(), PersistError> {
        let body = serde_json::to_vec(mark).unwrap_or_default();
        let tmp = self.mark.with_extension("json.tmp");
        std::fs::write(&tmp, body)
            .and_then(|()| std::fs::rename(&tmp, &self.mark))
            .map_err(|source| PersistError::Io {
                path: self.mark.clone(),
                action: "write",
                source,
            })
    }
}
