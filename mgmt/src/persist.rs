//! The state file: where every accepted change is made durable before it is acknowledged.
//!
//! The state is a *checkpoint* and a *journal*. `<state_dir>/state.json`, the checkpoint,
//! holds a one-line header, `privlink-state v1 len=<bytes> fnv1a64=<16 hex>`, then the
//! [`State`] as pretty JSON of exactly `len` bytes whose FNV-1a 64 hash is the header's.
//! `<state_dir>/state.journal` holds the changes since, one checksummed record each (the
//! touched objects' new values: [`Change`]; the format is in `journal.rs`), bound to the
//! checkpoint by its length and hash. [`StateFile::load`] is the checkpoint with the
//! journal's records replayed over it.
//!
//! A change costs what it changes: [`StateFile::save_change`] appends one record and
//! fsyncs the journal (the first record after a checkpoint creates the journal as a
//! checkpoint is written: temporary file, fsync, rename, fsync of the directory).
//! [`StateFile::save`] writes a whole checkpoint (temporary file, fsync, rename, fsync of
//! the directory) and retires the journal; it is what compaction does
//! ([`StateFile::compaction_due`]), off the request's path. After a crash at any byte the
//! files load as the old state or the new one, never a mix: a record cut short at the end
//! of the journal was never acknowledged and is dropped (and logged); damage anywhere
//! else is corruption.
//!
//! What each failure leaves on disk, which the caller must tell its client truthfully:
//! a failure to create, write or sync the temporary file, or to rename it, or to write or
//! sync a record, leaves the old state in place ([`PersistError::Io`]; a record that was
//! written but not synced is cut off again); a failure to sync the directory after the
//! rename, or to cut off a record that could not be synced, leaves the *new* state in
//! place, not known to be durable ([`PersistError::NotDurable`]). Every step can be made
//! to fail on purpose ([`StateFile::with_faults`]) to test that.
//!
//! This module must never modify or delete a state file it cannot read: a corrupt
//! checkpoint or journal is reported ([`PersistError::Corrupt`],
//! [`PersistError::JournalCorrupt`]) and left for the operator to inspect.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::model::State;

mod change;
mod journal;

pub use change::{Baseline, Change, DeclaredChange, Put};
use journal::CheckpointId;
pub use journal::{JOURNAL_FILE, JOURNAL_TMP_FILE};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// The temporary file a save writes before renaming it.
pub const STATE_TMP_FILE: &str = "state.json.tmp";
/// The temporary file a compaction writes outside the store's lock
/// ([`StateFile::prepare_checkpoint`]); never read by a load.
pub const COMPACT_TMP_FILE: &str = "state.json.compact";
/// The header's first word and version.
const MAGIC: &str = "privlink-state v1";

/// Why the state could not be loaded or saved.
#[derive(Debug)]
pub enum PersistError {
    /// `<path>: <action>: <io error>`: the OS refused a read, write, sync or rename.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("write", "rename", …).
        action: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// `<path>: state file is corrupt (<reason>); it was left untouched. Move it aside
    /// (e.g. to state.json.corrupt) to start with an empty state, or restore a backup.`
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `<dir>: the new state file is in place but the directory could not be synced:
    /// <io error>`: the rename happened (or a journal record was written and could
    /// neither be synced nor cut off again), its durability is unknown.
    NotDurable {
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// `<path>: state journal is corrupt (<reason>); it was left untouched. Move it aside
    /// (e.g. to state.journal.corrupt) to start from the last checkpoint, state.json,
    /// without the changes recorded after it, or restore a backup.`
    JournalCorrupt {
        /// The journal.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io {
                path,
                action,
                source,
            } => write!(f, "{}: cannot {action}: {source}", path.display()),
            Self::Corrupt { path, reason } => write!(
                f,
                "{}: state file is corrupt ({reason}); it was left untouched. Move it aside \
                 (e.g. to {}.corrupt) to start with an empty state, or restore a backup",
                path.display(),
                path.display()
            ),
            Self::NotDurable { dir, source } => write!(
                f,
                "{}: the new state file is in place but the directory could not be synced: \
                 {source}",
                dir.display()
            ),
            Self::JournalCorrupt { path, reason } => write!(
                f,
                "{}: state journal is corrupt ({reason}); it was left untouched. Move it \
                 aside (e.g. to {}.corrupt) to start from the last checkpoint, {STATE_FILE}, \
                 without the changes recorded after it, or restore a backup",
                path.display(),
                path.display()
            ),
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } | Self::NotDurable { source, .. } => Some(source),
            Self::Corrupt { .. } | Self::JournalCorrupt { .. } => None,
        }
    }
}

/// FNV-1a, 64 bits: detects torn or flipped bytes (not an adversary; the directory is
/// 0700).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A step of [`StateFile::save`], where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveStep {
    /// Creating the temporary file.
    Create,
    /// Writing it.
    Write,
    /// Syncing it.
    Sync,
    /// Renaming it over the state file.
    Rename,
    /// Syncing the directory.
    SyncDir,
    /// Cutting a journal back to its last good record (before an append, after a failed
    /// one) and removing a retired journal.
    Truncate,
}

/// Called before each step of a save; an error makes that step fail with it (tests).
pub type FaultHook = Arc<dyn Fn(SaveStep) -> io::Result<()> + Send + Sync>;

/// When a journal is due to be folded into a new checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// After this many records.
    pub records: u64,
    /// Or once the journal is this many bytes and at least as long as the checkpoint (so
    /// a load never reads much more than a checkpoint's worth of records).
    pub bytes: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        // A load replays at most ~4k records; at ~0.5 KiB each that is ~2 MiB.
        Self {
            records: 4096,
            bytes: 1 << 20,
        }
    }
}

/// How many writes the files had seen when a compaction took its state
/// ([`StateFile::journal_mark`]): any write since (an append, or a whole checkpoint)
/// makes the prepared checkpoint stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalMark(u64);

/// A checkpoint written and synced beside the state file, not yet in force
/// ([`StateFile::prepare_checkpoint`], [`StateFile::install_checkpoint`]).
#[derive(Debug)]
pub struct PreparedCheckpoint {
    id: CheckpointId,
    mark: JournalMark,
}

/// Where the journal is, as this process last wrote or read it; checked against the
/// file's identity and length before every append, and read again when they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// The journal's inode and length when last seen.
    file: Identity,
    /// The checkpoint it follows.
    checkpoint: CheckpointId,
    /// Where the last good record ends: the next one is written here.
    good_len: u64,
    /// Records in it.
    records: u64,
}

/// The state file in one directory.
#[derive(Clone)]
pub struct StateFile {
    dir: PathBuf,
    faults: Option<FaultHook>,
    compaction: Compaction,
    /// Shared by clones: they are the same files.
    cursor: Arc<Mutex<Option<Cursor>>>,
    /// Writes begun (appends and checkpoints), shared by clones: a compaction's mark.
    writes: Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for StateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFile")
            .field("dir", &self.dir)
            .field("faults", &self.faults.is_some())
            .field("compaction", &self.compaction)
            .finish_non_exhaustive()
    }
}

/// The inode and length of a file.
fn identity(meta: &fs::Metadata) -> Identity {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let ino = 0;
    (ino, meta.len())
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl StateFile {
    /// The state file of directory `dir` (created on the first save or load).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            faults: None,
            compaction: Compaction::default(),
            cursor: Arc::new(Mutex::new(None)),
            writes: Arc::default(),
        }
    }

    /// The same file, with `hook` asked before every step of a save: for tests that
    /// prove what each failure leaves on disk and tells the client.
    #[must_use]
    pub fn with_faults(mut self, hook: FaultHook) -> Self {
        self.faults = Some(hook);
        self
    }

    /// The same file, compacted at other thresholds (tests make it happen often).
    #[must_use]
    pub fn with_compaction(mut self, compaction: Compaction) -> Self {
        self.compaction = compaction;
        self
    }

    fn step(&self, step: SaveStep) -> io::Result<()> {
        self.faults.as_ref().map_or(Ok(()), |f| f(step))
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// `<dir>/state.journal`.
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join(JOURNAL_FILE)
    }

    fn io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.to_owned();
        move |source| PersistError::Io {
            path,
            action,
            source,
        }
    }

    fn cursor(&self) -> std::sync::MutexGuard<'_, Option<Cursor>> {
        self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the directory (mode 0700) if it is missing.
    fn ensure_dir(&self) -> Result<(), PersistError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.dir)
            .map_err(Self::io(&self.dir, "create directory"))
    }

    fn sync_dir(&self) -> Result<(), PersistError> {
        self.step(SaveStep::SyncDir)
            .and_then(|()| fs::File::open(&self.dir))
            .and_then(|d| d.sync_all())
            .map_err(|source| PersistError::NotDurable {
                dir: self.dir.clone(),
                source,
            })
    }

    /// The saved state; `None` when there is no state file yet. Creates the directory if
    /// missing. A checkpoint that fails its length or checksum check or does not parse is
    /// [`PersistError::Corrupt`], a journal damaged anywhere but in its last record is
    /// [`PersistError::JournalCorrupt`]; both are left as they are. A last record cut
    /// short (a crash during its write, so never acknowledged) is dropped with a warning
    /// and cut off by the next change.
    pub fn load(&self) -> Result<Option<State>, PersistError> {
        self.ensure_dir()?;
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&path, "read")(e)),
        };
        let (mut state, checkpoint) =
            decode_checkpoint(&bytes).map_err(|reason| PersistError::Corrupt { path, reason })?;
        let journal = self.journal_path();
        let (file, bytes) = match read_with_identity(&journal) {
            Ok(Some(x)) => x,
            Ok(None) => {
                *self.cursor() = None;
                return Ok(Some(state));
            }
            Err(e) => return Err(Self::io(&journal, "read")(e)),
        };
        let corrupt = |reason: String| PersistError::JournalCorrupt {
            path: journal.clone(),
            reason,
        };
        let scan = journal::scan(&bytes).map_err(corrupt)?;
        if scan.checkpoint != checkpoint {
            log::warn!(
                "{}: left over from before the last checkpoint was written (it names another \
                 one); ignored, and replaced by the next change",
                journal.display()
            );
            *self.cursor() = None;
            return Ok(Some(state));
        }
        for (seq, body) in &scan.records {
            let change: Change = serde_json::from_slice(&bytes[body.clone()]).map_err(|e| {
                corrupt(format!(
                    "record {seq} (byte {}) does not parse: {e}",
                    body.start
                ))
            })?;
            change.apply(&mut state);
        }
        if scan.torn {
            log::warn!(
                "{}: the last {} bytes are a record cut short by a crash during its write \
                 (never acknowledged); it is dropped and will be cut off",
                journal.display(),
                bytes.len() - scan.good_len
            );
        }
        *self.cursor() = Some(Cursor {
            file,
            checkpoint,
            good_len: to_u64(scan.good_len),
            records: to_u64(scan.records.len()),
        });
        Ok(Some(state))
    }

    /// Writes `state` durably as a new checkpoint: temporary file, fsync, rename, fsync of
    /// the directory; the journal is retired. [`PersistError::Io`]: the previous state is
    /// intact (a partial temporary file is removed). [`PersistError::NotDurable`]: the new
    /// state is in place, its durability unknown.
    pub fn save(&self, state: &State) -> Result<(), PersistError> {
        self.ensure_dir()?;
        let tmp = self.dir.join(STATE_TMP_FILE);
        let id = self.write_checkpoint(&tmp, state)?;
        self.put_in_place(&tmp, id)
    }

    /// Where the journal stands, to be taken with the state a compaction writes and
    /// under the lock that orders the changes ([`prepare_checkpoint`](Self::prepare_checkpoint)).
    pub fn journal_mark(&self) -> JournalMark {
        JournalMark(self.writes.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// Counts a write about to begin (see [`journal_mark`](Self::journal_mark)).
    fn begin_write(&self) {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// The slow half of a compaction, which needs no lock: `state`, the state the files
    /// held at `mark`, written as a checkpoint to a temporary file of its own and synced.
    /// Nothing a load reads changes, and changes may go on being appended meanwhile.
    pub fn prepare_checkpoint(
        &self,
        state: &State,
        mark: JournalMark,
    ) -> Result<PreparedCheckpoint, PersistError> {
        self.ensure_dir()?;
        let id = self.write_checkpoint(&self.dir.join(COMPACT_TMP_FILE), state)?;
        Ok(PreparedCheckpoint { id, mark })
    }

    /// The quick half, under the lock that orders the changes: when no change was made
    /// durable since the mark, the prepared checkpoint is put in place as
    /// [`save`](Self::save) puts one (rename, journal retired, directory synced) and
    /// `true` is returned; otherwise it is thrown away and `false` returned (the journal,
    /// which has the newer records, stays in force). The errors mean what they mean for
    /// a save.
    pub fn install_checkpoint(&self, prepared: PreparedCheckpoint) -> Result<bool, PersistError> {
        let tmp = self.dir.join(COMPACT_TMP_FILE);
        if self.journal_mark() != prepared.mark {
            let _ = fs::remove_file(&tmp);
            return Ok(false);
        }
        self.put_in_place(&tmp, prepared.id).map(|()| true)
    }

    /// Encodes `state` as a checkpoint into `tmp`, synced (removed again on failure).
    fn write_checkpoint(&self, tmp: &Path, state: &State) -> Result<CheckpointId, PersistError> {
        let body = encode_body(state);
        let id = CheckpointId {
            len: to_u64(body.len()),
            hash: fnv1a64(&body),
        };
        let mut bytes = header_line(&body);
        bytes.extend_from_slice(&body);
        self.write_temp(tmp, &bytes)?;
        Ok(id)
    }

    /// Puts the checkpoint `id` written to `tmp` in place of the state file and retires
    /// the journal.
    fn put_in_place(&self, tmp: &Path, id: CheckpointId) -> Result<(), PersistError> {
        self.begin_write();
        let path = self.path();
        let journal = self.journal_path();
        // A journal is only ever applied to the checkpoint it names. So before a
        // checkpoint with this id is put in place, no journal naming this id may remain:
        // if the journal names it and it is the checkpoint in place, the new checkpoint
        // *is* that one, and taking the journal away is the whole save; if it names it but
        // is left over from an older checkpoint, it is garbage either way.
        let bound = read_journal_header(&journal);
        if bound == Some(id) {
            if let Err(e) = self.remove_journal() {
                let _ = fs::remove_file(tmp);
                return Err(e);
            }
            if read_checkpoint_id(&path) == Some(id) {
                let _ = fs::remove_file(tmp);
                *self.cursor() = None;
                return self.sync_dir();
            }
        }
        self.rename_into(tmp, &path, "rename the new state file into")?;
        // The journal names the checkpoint just replaced: from now on it is ignored, and
        // it goes now so that it never meets a checkpoint with its id again.
        if bound.is_some() && bound != Some(id) {
            self.remove_journal()
                .map_err(|e| PersistError::NotDurable {
                    dir: self.dir.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
        }
        *self.cursor() = None;
        self.sync_dir()
    }

    /// Writes `bytes` to `tmp`, syncs it and renames it to `path`; on failure `tmp` is
    /// removed and `path` is as it was.
    fn write_new(
        &self,
        tmp: &Path,
        path: &Path,
        bytes: &[u8],
        rename: &'static str,
    ) -> Result<(), PersistError> {
        self.write_temp(tmp, bytes)?;
        self.rename_into(tmp, path, rename)
    }

    /// Writes `bytes` to a new `tmp` and syncs it; on failure `tmp` is removed.
    fn write_temp(&self, tmp: &Path, bytes: &[u8]) -> Result<(), PersistError> {
        let written = (|| {
            let mut file = fs::OpenOptions::new();
            file.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                file.mode(0o600);
            }
            let mut file = self
                .step(SaveStep::Create)
                .and_then(|()| file.open(tmp))
                .map_err(Self::io(tmp, "create"))?;
            self.step(SaveStep::Write)
                .and_then(|()| file.write_all(bytes))
                .map_err(Self::io(tmp, "write"))?;
            self.step(SaveStep::Sync)
                .and_then(|()| file.sync_all())
                .map_err(Self::io(tmp, "sync"))
        })();
        if written.is_err() {
            // A full disk leaves a partial temporary file: take it away so the space it
            // holds is not lost too (the file it was to replace is untouched).
            let _ = fs::remove_file(tmp);
        }
        written
    }

    /// Renames `tmp` over `path`; on failure `tmp` is removed and `path` is as it was.
    fn rename_into(
        &self,
        tmp: &Path,
        path: &Path,
        rename: &'static str,
    ) -> Result<(), PersistError> {
        let renamed = self
            .step(SaveStep::Rename)
            .and_then(|()| fs::rename(tmp, path))
            .map_err(Self::io(path, rename));
        if renamed.is_err() {
            let _ = fs::remove_file(tmp);
        }
        renamed
    }

    fn remove_journal(&self) -> Result<(), PersistError> {
        let journal = self.journal_path();
        match self
            .step(SaveStep::Truncate)
            .and_then(|()| fs::remove_file(&journal))
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(&journal, "remove the old journal")(e)),
        }
    }

    /// Makes `next` durable as the state that follows `prev`, which must be the state
    /// these files hold now (the store's committed state), `touched` naming the objects
    /// that differ ([`crate::store::Outcome::touched`]): one journal record, synced, when
    /// there is a checkpoint to follow; otherwise (no checkpoint yet, a difference a
    /// record cannot say) a whole checkpoint, as [`save`](Self::save). The errors mean
    /// what they mean for a save.
    pub fn save_change(
        &self,
        prev: &State,
        next: &State,
        touched: &[String],
    ) -> Result<(), PersistError> {
        self.save_change_with(prev, next, touched, Baseline::MayChange)
    }

    /// [`save_change`](Self::save_change) of a change that keeps the declared baseline
    /// or may replace it ([`Baseline`]).
    pub fn save_change_with(
        &self,
        prev: &State,
        next: &State,
        touched: &[String],
        baseline: Baseline,
    ) -> Result<(), PersistError> {
        match Change::between_with(prev, next, touched, baseline) {
            Some(change) => self.append(&change, next),
            None => self.save(next),
        }
    }

    /// Appends `change` (which leads to `next`) to the journal.
    fn append(&self, change: &Change, next: &State) -> Result<(), PersistError> {
        self.ensure_dir()?;
        self.begin_write();
        let journal = self.journal_path();
        // Serialising plain data with string keys cannot fail.
        let body = serde_json::to_vec(change).unwrap_or_default();
        if body.len() > journal::MAX_RECORD {
            return self.save(next);
        }
        let mut cursor = self.cursor();
        let meta = match fs::metadata(&journal) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Self::io(&journal, "read")(e)),
        };
        let current = match (&meta, *cursor) {
            (Some(m), Some(c)) if identity(m) == c.file => Some(c),
            (Some(_), _) => self.read_cursor()?,
            (None, _) => None,
        };
        let Some(mut c) = current else {
            // No journal for the checkpoint in place: this record starts one.
            drop(cursor);
            return self.start_journal(&body, next);
        };
        let mut file = self
            .step(SaveStep::Create)
            .and_then(|()| fs::OpenOptions::new().write(true).open(&journal))
            .map_err(Self::io(&journal, "open"))?;
        if c.file.1 != c.good_len {
            // A record cut short by a crash, or one whose write failed: cut it off first,
            // so that the new record follows the last good one.
            self.step(SaveStep::Truncate)
                .and_then(|()| file.set_len(c.good_len))
                .and_then(|()| file.sync_data())
                .map_err(Self::io(&journal, "cut off a damaged last record of"))?;
            c.file.1 = c.good_len;
            *cursor = Some(c);
        }
        let frame = journal::record(c.records + 1, &body);
        let end = c.good_len + to_u64(frame.len());
        let written = self
            .step(SaveStep::Write)
            .and_then(|()| file.seek(SeekFrom::Start(c.good_len)))
            .and_then(|_| file.write_all(&frame))
            .map_err(Self::io(&journal, "append to"));
        let written = written.and_then(|()| {
            self.step(SaveStep::Sync)
                .and_then(|()| file.sync_data())
                .map_err(Self::io(&journal, "sync"))
        });
        match written {
            Ok(()) => {
                c.file.1 = end;
                c.good_len = end;
                c.records += 1;
                *cursor = Some(c);
                Ok(())
            }
            Err(e) => {
                // Take the record away again, so the journal says what the caller will
                // be told: nothing changed. When that fails too, a record written but not
                // synced stays: the new state is in place, not known to be durable.
                let cut = file.set_len(c.good_len).and_then(|()| file.sync_data());
                let len = fs::metadata(&journal).map_or(end, |m| m.len());
                c.file.1 = len;
                *cursor = Some(c);
                match cut {
                    Ok(()) => Err(e),
                    Err(source) if matches!(e, PersistError::Io { action: "sync", .. }) => {
                        // The record is whole and in the file: it is the new state.
                        c.good_len = end;
                        c.records += 1;
                        c.file.1 = len;
                        *cursor = Some(c);
                        Err(PersistError::NotDurable {
                            dir: self.dir.clone(),
                            source,
                        })
                    }
                    // A failed write leaves at most part of a record, which a load drops
                    // and the next append cuts off: the old state.
                    Err(_) => Err(e),
                }
            }
        }
    }

    /// The cursor for the journal on disk, read from it and the checkpoint (the caller
    /// holds the cursor's lock); `None` when the journal names another checkpoint (left
    /// over) or there is none.
    fn read_cursor(&self) -> Result<Option<Cursor>, PersistError> {
        let journal = self.journal_path();
        let Some((file, bytes)) =
            read_with_identity(&journal).map_err(Self::io(&journal, "read"))?
        else {
            return Ok(None);
        };
        let scan = journal::scan(&bytes).map_err(|reason| PersistError::JournalCorrupt {
            path: journal.clone(),
            reason,
        })?;
        if read_checkpoint_id(&self.path()) != Some(scan.checkpoint) {
            return Ok(None);
        }
        Ok(Some(Cursor {
            file,
            checkpoint: scan.checkpoint,
            good_len: to_u64(scan.good_len),
            records: to_u64(scan.records.len()),
        }))
    }

    /// A new journal holding `body` as its first record, after the checkpoint in place;
    /// a whole checkpoint of `next` when there is none to follow.
    fn start_journal(&self, body: &[u8], next: &State) -> Result<(), PersistError> {
        let Some(checkpoint) = read_checkpoint_id(&self.path()) else {
            return self.save(next);
        };
        let journal = self.journal_path();
        let mut bytes = journal::header(checkpoint);
        bytes.extend(journal::record(1, body));
        self.write_new(
            &self.dir.join(JOURNAL_TMP_FILE),
            &journal,
            &bytes,
            "rename the new journal into",
        )?;
        let file = fs::metadata(&journal).map_or((0, 0), |m| identity(&m));
        *self.cursor() = Some(Cursor {
            file,
            checkpoint,
            good_len: to_u64(bytes.len()),
            records: 1,
        });
        self.sync_dir()
    }

    /// Whether there is a journal (of this checkpoint or left over from an older one).
    pub fn has_journal(&self) -> bool {
        self.journal_path().exists()
    }

    /// Whether the journal has grown enough to be folded into a new checkpoint (by
    /// [`save`](Self::save) of the current state, which the caller does off the request's
    /// path).
    pub fn compaction_due(&self) -> bool {
        let Some(c) = *self.cursor() else {
            return false;
        };
        c.records >= self.compaction.records
            || (c.good_len >= self.compaction.bytes && c.good_len >= c.checkpoint.len)
    }
}

/// A file's inode and length.
type Identity = (u64, u64);

/// A file's identity and bytes; `None` when it does not exist.
fn read_with_identity(path: &Path) -> io::Result<Option<(Identity, Vec<u8>)>> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    let (ino, _) = identity(&meta);
    Ok(Some(((ino, to_u64(bytes.len())), bytes)))
}

/// The first line of a file (at most 256 bytes), if it can be read.
fn first_line(path: &Path) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    let mut file = fs::File::open(path).ok()?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let end = buf[..n].iter().position(|&b| b == b'\n')?;
    Some(buf[..end].to_vec())
}

/// The id a checkpoint's header names, if it has a readable one.
fn read_checkpoint_id(path: &Path) -> Option<CheckpointId> {
    let line = first_line(path)?;
    parse_checkpoint_header(std::str::from_utf8(&line).ok()?).ok()
}

/// The checkpoint a journal's header names, if it has a readable one.
fn read_journal_header(path: &Path) -> Option<CheckpointId> {
    journal::parse_header(&first_line(path)?).ok()
}

/// The checkpoint's header line for `body`.
fn header_line(body: &[u8]) -> Vec<u8> {
    format!(
        "{MAGIC} len={} fnv1a64={:016x}\n",
        body.len(),
        fnv1a64(body)
    )
    .into_bytes()
}

fn encode_body(state: &State) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    serde_json::to_vec_pretty(state).unwrap_or_default()
}

/// The file's bytes for `state`: header line, then pretty JSON.
pub fn encode(state: &State) -> Vec<u8> {
    let body = encode_body(state);
    let mut out = header_line(&body);
    out.extend_from_slice(&body);
    out
}

/// The state in a file's bytes, or why they are not a valid state file.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    decode_checkpoint(bytes).map(|(state, _)| state)
}

/// The length and hash a checkpoint's header line names, or why it is not one.
fn parse_checkpoint_header(header: &str) -> Result<CheckpointId, String> {
    let rest = header
        .strip_prefix(MAGIC)
        .and_then(|r| r.strip_prefix(" len="))
        .ok_or_else(|| {
            format!(
                "header {:?} is not \"{MAGIC} len=… fnv1a64=…\"",
                cut(header)
            )
        })?;
    let (len, hash) = rest
        .split_once(" fnv1a64=")
        .ok_or_else(|| format!("header {:?} has no checksum", cut(header)))?;
    let len: u64 = len
        .parse()
        .map_err(|_| format!("header length {:?} is not a number", cut(len)))?;
    if hash.len() != 16 {
        return Err(format!(
            "header checksum {:?} is not 16 hex digits",
            cut(hash)
        ));
    }
    let hash = u64::from_str_radix(hash, 16)
        .map_err(|_| format!("header checksum {:?} is not 16 hex digits", cut(hash)))?;
    Ok(CheckpointId { len, hash })
}

/// A checkpoint's state and id, or why its bytes are not a valid checkpoint.
fn decode_checkpoint(bytes: &[u8]) -> Result<(State, CheckpointId), String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
    let id = parse_checkpoint_header(header)?;
    if to_u64(body.len()) != id.len {
        return Err(format!(
            "the body is {} bytes, the header says {} (truncated or appended to)",
            body.len(),
            id.len
        ));
    }
    let actual = fnv1a64(body);
    if actual != id.hash {
        return Err(format!(
            "checksum mismatch: the header says {:016x}, the body hashes to {actual:016x}",
            id.hash
        ));
    }
    let state =
        serde_json::from_slice(body).map_err(|e| format!("the body does not parse: {e}"))?;
    Ok((state, id))
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "privlink-persist-{name}-{}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn demo_state() -> State {
        Config::embedded_default().state()
    }

    fn corrupt_reason(file: &StateFile) -> String {
        match file.load() {
            Err(PersistError::Corrupt { path, reason }) => {
                assert_eq!(path, file.path());
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new("roundtrip");
        let file = StateFile::new(&dir.0);
        assert!(file.load().unwrap().is_none(), "no file yet");
        let state = demo_state();
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state.clone()));
        let text = fs::read_to_string(file.path()).unwrap();
        assert!(text.starts_with("privlink-state v1 len="), "{text}");
        assert!(!dir.0.join(STATE_TMP_FILE).exists());
        // Saving again replaces.
        file.save(&State::default()).unwrap();
        assert_eq!(file.load().unwrap(), Some(State::default()));
    }

    #[test]
    fn missing_dir_is_created_0700() {
        let dir = TempDir::new("mkdir");
        let sub = dir.0.join("a").join("b");
        let file = StateFile::new(&sub);
        assert!(file.load().unwrap().is_none());
        assert!(sub.is_dir());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&sub).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        file.save(&demo_state()).unwrap();
    }

    #[test]
    fn truncated_flipped_and_garbage_files_are_corrupt_and_kept() {
        let dir = TempDir::new("corrupt");
        let file = StateFile::new(&dir.0);
        file.save(&demo_state()).unwrap();
        let good = fs::read(file.path()).unwrap();

        let truncated = &good[..good.len() - 10];
        fs::write(file.path(), truncated).unwrap();
        assert!(corrupt_reason(&file).contains("truncated"));
        assert_eq!(fs::read(file.path()).unwrap(), truncated, "left untouched");

        let mut flipped = good.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x20;
        fs::write(file.path(), &flipped).unwrap();
        assert!(corrupt_reason(&file).contains("checksum mismatch"));
        assert_eq!(fs::read(file.path()).unwrap(), flipped);

        for garbage in [
            &b"hello"[..],
            b"",
            b"\x00\xff\n{}",
            b"privlink-state v1 len=2 fnv1a64=zz\n{}",
        ] {
            fs::write(file.path(), garbage).unwrap();
            let reason = corrupt_reason(&file);
            assert!(!reason.is_empty());
        }

        // A valid header over a body that is not a state.
        let body = b"{\"bogus\": 1}";
        let mut bytes = format!(
            "{MAGIC} len={} fnv1a64={:016x}\n",
            body.len(),
            fnv1a64(body)
        )
        .into_bytes();
        bytes.extend_from_slice(body);
        fs::write(file.path(), &bytes).unwrap();
        assert!(corrupt_reason(&file).contains("does not parse"));

        let msg = file.load().unwrap_err().to_string();
        assert!(
            msg.contains("left untouched") && msg.contains("Move it aside"),
            "{msg}"
        );
    }

    /// A hook failing `step` (every time it is reached) with ENOSPC.
    fn failing(step: SaveStep) -> FaultHook {
        Arc::new(move |s| {
            if s == step {
                Err(io::Error::from_raw_os_error(28))
            } else {
                Ok(())
            }
        })
    }

    #[test]
    fn every_failed_step_leaves_what_its_error_says() {
        let dir = TempDir::new("faults");
        let plain = StateFile::new(&dir.0);
        let old = demo_state();
        plain.save(&old).unwrap();
        let new = State::default();
        for step in [
            SaveStep::Create,
            SaveStep::Write,
            SaveStep::Sync,
            SaveStep::Rename,
        ] {
            let file = StateFile::new(&dir.0).with_faults(failing(step));
            let e = file.save(&new).unwrap_err();
            assert!(matches!(e, PersistError::Io { .. }), "{step:?}: {e}");
            assert_eq!(
                plain.load().unwrap(),
                Some(old.clone()),
                "{step:?}: old intact"
            );
            assert!(
                !dir.0.join(STATE_TMP_FILE).exists(),
                "{step:?}: no temporary file left behind"
            );
        }
        let file = StateFile::new(&dir.0).with_faults(failing(SaveStep::SyncDir));
        let e = file.save(&new).unwrap_err();
        assert!(matches!(e, PersistError::NotDurable { .. }), "{e}");
        assert!(e.to_string().contains("in place"), "{e}");
        assert_eq!(plain.load().unwrap(), Some(new), "the new file is in place");
    }

    #[test]
    fn failed_save_leaves_the_old_file_intact() {
        let dir = TempDir::new("atomic");
        let file = StateFile::new(&dir.0);
        let old = demo_state();
        file.save(&old).unwrap();
        // A directory where the temporary file goes makes the write fail.
        fs::create_dir(dir.0.join(STATE_TMP_FILE)).unwrap();
        let err = file.save(&State::default()).unwrap_err();
        assert!(matches!(err, PersistError::Io { .. }), "{err}");
        assert_eq!(file.load().unwrap(), Some(old));
    }

    // --- the journal ------------------------------------------------------------------

    use crate::store::{Caller, Store};
    use serde_json::json;

    /// A store on the demo configuration and the states a run of changes goes through:
    /// each change's (state before, state after, touched ids).
    fn changes(n: usize) -> (State, Vec<(State, State, Vec<String>)>) {
        let config = Config::embedded_default();
        let (mut store, _) = Store::new(&config, None).unwrap();
        let first = store.state().clone();
        let svc = first.services[0].id;
        let mut out = Vec::new();
        for i in 0..n {
            let (op, args) = match i % 4 {
                0 => (
                    "create-security-group",
                    json!({"VpcId": "vpc-0c0000000000000c1", "GroupName": format!("g{i}"),
                           "ClientToken": format!("t{i}")}),
                ),
                1 => (
                    "create-vpc-endpoint",
                    json!({"VpcId": "vpc-0c0000000000000c1",
                           "ServiceName": format!("com.privlink.vpce.local.{svc}")}),
                ),
                2 => (
                    "register-targets",
                    json!({"ServiceId": svc.to_string(), "Protocol": "tcp", "Port": 80,
                           "Targets": [{"Id": format!("10.2.0.{}", 20 + i), "Port": 8080}]}),
                ),
                _ => {
                    let ep = store.state().endpoints.last().unwrap().id;
                    (
                        "delete-vpc-endpoints",
                        json!({"VpcEndpointIds": [ep.to_string()]}),
                    )
                }
            };
            let prev = store.state().clone();
            let o = store
                .prepare(&Caller::admin(), op, &args, 1_000 + i as u64)
                .unwrap();
            let next = o.next.expect("a change");
            store.commit(next.clone());
            out.push((prev, next, o.touched));
        }
        // And the clock's: the deleted endpoint goes, the tokens are forgotten.
        let prev = store.state().clone();
        assert!(store.tick(10_000_000));
        let next = store.state().clone();
        let touched = crate::store::touched(&prev, &next);
        out.push((prev, next, touched));
        (first, out)
    }

    #[test]
    fn changes_are_journaled_replayed_and_compacted() {
        let dir = TempDir::new("journal");
        let file = StateFile::new(&dir.0).with_compaction(Compaction {
            records: 5,
            bytes: u64::MAX,
        });
        let (first, steps) = changes(9);
        file.save(&first).unwrap();
        let checkpoint = fs::read(file.path()).unwrap();
        for (k, (prev, next, touched)) in steps.iter().enumerate() {
            file.save_change(prev, next, touched).unwrap();
            assert_eq!(
                file.load().unwrap().as_ref(),
                Some(next),
                "after change {k}"
            );
            assert_eq!(
                StateFile::new(&dir.0).load().unwrap().as_ref(),
                Some(next),
                "another reader, after change {k}"
            );
            if k < 4 {
                assert_eq!(
                    fs::read(file.path()).unwrap(),
                    checkpoint,
                    "only the journal grows"
                );
                assert!(!file.compaction_due());
            }
            if file.compaction_due() {
                assert!(k == 4 || k == 9, "after 5 records: {k}");
                file.save(next).unwrap();
                assert!(
                    !file.journal_path().exists(),
                    "a checkpoint retires the journal"
                );
                assert!(!file.compaction_due());
                assert_eq!(file.load().unwrap().as_ref(), Some(next));
            }
        }
        assert!(!dir.0.join(JOURNAL_TMP_FILE).exists());
    }

    /// A change of listener settings alone (`ModifyListeners`) is a change of its service
    /// like any other: one journal record with the service's new value, there again when
    /// the files are loaded and a store restarts on them.
    #[test]
    fn a_listener_settings_change_is_journaled_and_reloaded() {
        use crate::model::{HealthCheckProtocol, Protocol};
        let dir = TempDir::new("listener-settings");
        let file = StateFile::new(&dir.0);
        let config = Config::embedded_default();
        let (mut store, _) = Store::new(&config, None).unwrap();
        file.save(store.state()).unwrap();
        let checkpoint = fs::read(file.path()).unwrap();
        let svc = store.state().services[0].id;
        let prev = store.state().clone();
        let o = store
            .prepare(
                &Caller::admin(),
                "modify-vpc-endpoint-service-configuration",
                &json!({"ServiceId": svc.to_string(), "ModifyListeners": [
                    {"Protocol": "tcp", "Port": 80, "HealthCheckProtocol": "http",
                     "HealthCheckPath": "/healthz", "HealthCheckIntervalSeconds": 10,
                     "HealthCheckTimeoutSeconds": 3, "ConnectionTerminationOnUnhealthy": false,
                     "IdleTimeoutSeconds": 900}]}),
                1_000,
            )
            .unwrap();
        assert_eq!(o.touched, vec![svc.to_string()]);
        let next = o.next.expect("a change");
        let change = Change::between(&prev, &next, &o.touched).expect("a record");
        assert_eq!(change.services, vec![Put::Set(next.services[0].clone())]);
        file.save_change(&prev, &next, &o.touched).unwrap();
        store.commit(next.clone());
        assert_eq!(
            fs::read(file.path()).unwrap(),
            checkpoint,
            "only the journal grows"
        );
        assert!(file.has_journal());

        let loaded = StateFile::new(&dir.0).load().unwrap().expect("a state");
        assert_eq!(loaded, next);
        let l = loaded.services[0].listener(Protocol::Tcp, 80).unwrap();
        assert_eq!(l.health_check_protocol, HealthCheckProtocol::Http);
        assert_eq!(l.health_check_path, "/healthz");
        assert_eq!(
            (
                l.health_check_interval_seconds,
                l.health_check_timeout_seconds
            ),
            (10, 3)
        );
        assert!(!l.connection_termination_on_unhealthy);
        assert_eq!(l.idle_timeout_seconds, Some(900));
        let (restarted, _) = Store::new(&config, Some(loaded)).unwrap();
        assert_eq!(restarted.state(), store.state());
    }

    /// A crash at any byte of any write leaves files that load as the state before that
    /// write or the state after it; a record cut short is never an error.
    #[test]
    fn a_crash_at_every_byte_loads_the_old_or_the_new_state() {
        let dir = TempDir::new("cut");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(6);
        file.save(&first).unwrap();
        let checkpoint = fs::read(file.path()).unwrap();
        let mut before = Vec::new();
        for (prev, next, touched) in &steps {
            file.save_change(prev, next, touched).unwrap();
            let after = fs::read(file.journal_path()).unwrap();
            for cut in before.len()..=after.len() {
                for zeros in [false, true] {
                    let probe = TempDir::new("cut-probe");
                    fs::write(probe.0.join(STATE_FILE), &checkpoint).unwrap();
                    let mut torn = after[..cut].to_vec();
                    if zeros {
                        // A crash may leave the file's new size with zeros in it.
                        torn.resize(after.len(), 0);
                    }
                    if before.is_empty() {
                        // The first record is written to a temporary file and renamed:
                        // until the rename there is no journal, only a partial temporary.
                        if cut < after.len() {
                            fs::write(probe.0.join(JOURNAL_TMP_FILE), &torn).unwrap();
                        } else {
                            fs::write(probe.0.join(JOURNAL_FILE), &torn).unwrap();
                        }
                    } else {
                        fs::write(probe.0.join(JOURNAL_FILE), &torn).unwrap();
                    }
                    let got = StateFile::new(&probe.0)
                        .load()
                        .unwrap_or_else(|e| panic!("cut at {cut} of {}: {e}", after.len()))
                        .unwrap();
                    let want = if cut == after.len() { next } else { prev };
                    assert!(
                        got == *want,
                        "cut at {cut} of {} (zeros {zeros})",
                        after.len()
                    );
                }
            }
            before = after;
        }
    }

    #[test]
    fn a_crash_during_compaction_loads_the_same_state() {
        let dir = TempDir::new("compact-crash");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(3);
        file.save(&first).unwrap();
        for (prev, next, touched) in &steps {
            file.save_change(prev, next, touched).unwrap();
        }
        let last = &steps.last().unwrap().1;
        let checkpoint = fs::read(file.path()).unwrap();
        let journal = fs::read(file.journal_path()).unwrap();
        let compacted = encode(last);
        // Every point of a compaction: the temporary checkpoint cut anywhere; renamed
        // with the old journal still there; the journal gone.
        // (The temporary file is never read, so a cut in it at a few points says all.)
        for cut in (0..compacted.len()).step_by(331).chain([compacted.len()]) {
            let probe = TempDir::new("compact-probe");
            fs::write(probe.0.join(STATE_FILE), &checkpoint).unwrap();
            fs::write(probe.0.join(JOURNAL_FILE), &journal).unwrap();
            fs::write(probe.0.join(STATE_TMP_FILE), &compacted[..cut]).unwrap();
            let got = StateFile::new(&probe.0).load().unwrap();
            assert!(got.as_ref() == Some(last), "temporary cut at {cut}");
        }
        let probe = TempDir::new("compact-probe");
        fs::write(probe.0.join(STATE_FILE), &compacted).unwrap();
        fs::write(probe.0.join(JOURNAL_FILE), &journal).unwrap();
        assert_eq!(
            StateFile::new(&probe.0).load().unwrap().as_ref(),
            Some(last)
        );
        fs::remove_file(probe.0.join(JOURNAL_FILE)).unwrap();
        assert_eq!(
            StateFile::new(&probe.0).load().unwrap().as_ref(),
            Some(last)
        );
    }

    #[test]
    fn a_compaction_outside_the_lock_puts_in_place_only_what_no_write_followed() {
        let dir = TempDir::new("compact-halves");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(4);
        file.save(&first).unwrap();
        for (prev, next, touched) in &steps[..2] {
            file.save_change(prev, next, touched).unwrap();
        }
        let load = || StateFile::new(&dir.0).load().unwrap();
        let tmp = dir.0.join(COMPACT_TMP_FILE);
        // A change made durable between the two halves: the prepared checkpoint is
        // thrown away and nothing is lost.
        let prepared = file
            .prepare_checkpoint(&steps[1].1, file.journal_mark())
            .unwrap();
        assert!(tmp.exists());
        assert_eq!(
            load().as_ref(),
            Some(&steps[1].1),
            "nothing a load reads changed"
        );
        file.save_change(&steps[2].0, &steps[2].1, &steps[2].2)
            .unwrap();
        assert!(!file.install_checkpoint(prepared).unwrap());
        assert!(!tmp.exists() && file.journal_path().exists());
        assert_eq!(load().as_ref(), Some(&steps[2].1));
        // So is one when a whole checkpoint was written in between, journal or not.
        let prepared = file
            .prepare_checkpoint(&steps[1].1, file.journal_mark())
            .unwrap();
        file.save(&steps[2].1).unwrap();
        assert!(!file.install_checkpoint(prepared).unwrap());
        assert_eq!(load().as_ref(), Some(&steps[2].1));
        // None in between: it is the new checkpoint, the journal retired, and the next
        // change follows it.
        file.save_change(&steps[2].0, &steps[2].1, &steps[2].2)
            .unwrap();
        let prepared = file
            .prepare_checkpoint(&steps[2].1, file.journal_mark())
            .unwrap();
        assert!(file.install_checkpoint(prepared).unwrap());
        assert!(!tmp.exists() && !file.journal_path().exists());
        assert_eq!(load().as_ref(), Some(&steps[2].1));
        file.save_change(&steps[3].0, &steps[3].1, &steps[3].2)
            .unwrap();
        assert_eq!(load().as_ref(), Some(&steps[3].1));
        // A failed step of either half leaves what the files held, and no temporary file.
        for step in [
            SaveStep::Create,
            SaveStep::Write,
            SaveStep::Sync,
            SaveStep::Rename,
        ] {
            let faulty = StateFile::new(&dir.0).with_faults(failing(step));
            faulty.load().unwrap();
            let done = (faulty.prepare_checkpoint(&steps[3].1, faulty.journal_mark()))
                .and_then(|p| faulty.install_checkpoint(p));
            assert!(
                matches!(done, Err(PersistError::Io { .. })),
                "{step:?}: {done:?}"
            );
            assert!(!tmp.exists(), "{step:?}");
            assert_eq!(load().as_ref(), Some(&steps[3].1), "{step:?}");
        }
    }

    #[test]
    fn a_torn_record_is_dropped_then_cut_off_by_the_next_change() {
        let dir = TempDir::new("torn");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(3);
        file.save(&first).unwrap();
        file.save_change(&steps[0].0, &steps[0].1, &steps[0].2)
            .unwrap();
        let good = fs::read(file.journal_path()).unwrap();
        // A crash in the middle of the second record's write.
        file.save_change(&steps[1].0, &steps[1].1, &steps[1].2)
            .unwrap();
        let whole = fs::read(file.journal_path()).unwrap();
        fs::write(file.journal_path(), &whole[..good.len() + 30]).unwrap();
        let restarted = StateFile::new(&dir.0);
        assert_eq!(restarted.load().unwrap().as_ref(), Some(&steps[0].1));
        // The restarted daemon goes on from the state it loaded: the third change, made
        // without the second.
        let mut next = steps[0].1.clone();
        Change::between(&steps[1].1, &steps[2].1, &steps[2].2)
            .unwrap()
            .apply(&mut next);
        restarted
            .save_change(&steps[0].1, &next, &steps[2].2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(StateFile::new(&dir.0).load().unwrap(), Some(next));
        let scan = journal::scan(&fs::read(file.journal_path()).unwrap()).unwrap();
        assert_eq!(
            (scan.records.len(), scan.torn),
            (2, false),
            "cut off, then appended"
        );
    }

    #[test]
    fn damage_in_the_middle_of_the_journal_is_refused_and_kept() {
        let dir = TempDir::new("jcorrupt");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(3);
        file.save(&first).unwrap();
        for (prev, next, touched) in &steps {
            file.save_change(prev, next, touched).unwrap();
        }
        let good = fs::read(file.journal_path()).unwrap();
        let first_record = journal::scan(&good).unwrap().records[0].1.clone();
        let mut bad = good.clone();
        bad[first_record.start + 3] ^= 0x01;
        fs::write(file.journal_path(), &bad).unwrap();
        let e = StateFile::new(&dir.0).load().unwrap_err();
        assert!(matches!(e, PersistError::JournalCorrupt { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("damaged") && msg.contains("left untouched"),
            "{msg}"
        );
        assert_eq!(
            fs::read(file.journal_path()).unwrap(),
            bad,
            "left untouched"
        );
        // A record that checks but is not a change (written by something else).
        let mut odd = journal::header(
            journal::parse_header(good.split(|&b| b == b'\n').next().unwrap()).unwrap(),
        );
        odd.extend(journal::record(1, b"{\"bogus\": 1}"));
        fs::write(file.journal_path(), &odd).unwrap();
        let e = StateFile::new(&dir.0).load().unwrap_err();
        assert!(e.to_string().contains("does not parse"), "{e}");
        // A header that is not one.
        fs::write(file.journal_path(), b"garbage\n").unwrap();
        assert!(matches!(
            StateFile::new(&dir.0).load(),
            Err(PersistError::JournalCorrupt { .. })
        ));
    }

    #[test]
    fn a_journal_left_from_an_older_checkpoint_is_ignored() {
        let dir = TempDir::new("stale");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(2);
        file.save(&first).unwrap();
        file.save_change(&steps[0].0, &steps[0].1, &steps[0].2)
            .unwrap();
        let stale = fs::read(file.journal_path()).unwrap();
        file.save(&steps[1].1).unwrap();
        fs::write(file.journal_path(), &stale).unwrap();
        assert_eq!(file.load().unwrap().as_ref(), Some(&steps[1].1));
        // The next checkpoint takes it away.
        file.save(&first).unwrap();
        assert!(!file.journal_path().exists());
    }

    #[test]
    fn saving_the_checkpoint_that_is_in_place_drops_the_journal() {
        // Putting the old state back after a change that could not be made durable: the
        // old state is the checkpoint itself, and its journal must not come back.
        let dir = TempDir::new("restore");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(1);
        file.save(&first).unwrap();
        file.save_change(&steps[0].0, &steps[0].1, &steps[0].2)
            .unwrap();
        assert_eq!(file.load().unwrap().as_ref(), Some(&steps[0].1));
        file.save(&first).unwrap();
        assert!(!file.journal_path().exists());
        assert_eq!(StateFile::new(&dir.0).load().unwrap(), Some(first));
    }

    #[test]
    fn every_failed_journal_step_leaves_what_its_error_says() {
        let (first, steps) = changes(2);
        // The first record creates the journal as a checkpoint is written; the second is
        // appended in place.
        for (k, path) in [
            (
                0,
                &[
                    SaveStep::Create,
                    SaveStep::Write,
                    SaveStep::Sync,
                    SaveStep::Rename,
                ][..],
            ),
            (1, &[SaveStep::Create, SaveStep::Write, SaveStep::Sync][..]),
        ] {
            for &step in path {
                let dir = TempDir::new("jfaults");
                let plain = StateFile::new(&dir.0);
                plain.save(&first).unwrap();
                if k == 1 {
                    plain
                        .save_change(&steps[0].0, &steps[0].1, &steps[0].2)
                        .unwrap();
                }
                let (prev, next, touched) = &steps[k];
                let file = plain.clone().with_faults(failing(step));
                let e = file.save_change(prev, next, touched).unwrap_err();
                assert!(
                    matches!(e, PersistError::Io { .. }),
                    "record {k}, {step:?}: {e}"
                );
                assert_eq!(
                    StateFile::new(&dir.0).load().unwrap().as_ref(),
                    Some(prev),
                    "record {k}, {step:?}: the old state"
                );
                assert!(!dir.0.join(JOURNAL_TMP_FILE).exists());
                // And the next change goes through.
                plain.save_change(prev, next, touched).unwrap();
                assert_eq!(StateFile::new(&dir.0).load().unwrap().as_ref(), Some(next));
            }
        }
        let dir = TempDir::new("jfaults");
        let plain = StateFile::new(&dir.0);
        plain.save(&first).unwrap();
        let file = plain.clone().with_faults(failing(SaveStep::SyncDir));
        let e = file
            .save_change(&steps[0].0, &steps[0].1, &steps[0].2)
            .unwrap_err();
        assert!(matches!(e, PersistError::NotDurable { .. }), "{e}");
        assert_eq!(
            plain.load().unwrap().as_ref(),
            Some(&steps[0].1),
            "in place"
        );
    }

    #[test]
    fn a_failed_write_that_leaves_part_of_a_record_is_cut_off() {
        // What a full disk does: part of the record reaches the file, then the write
        // fails. The hook cannot write half a record, so the test does, as the daemon
        // would have left it had the cut-off failed as well.
        let dir = TempDir::new("partial");
        let file = StateFile::new(&dir.0);
        let (first, steps) = changes(3);
        file.save(&first).unwrap();
        file.save_change(&steps[0].0, &steps[0].1, &steps[0].2)
            .unwrap();
        let mut bytes = fs::read(file.journal_path()).unwrap();
        bytes.extend_from_slice(&journal::record(2, b"{\"services\":[")[..20]);
        fs::write(file.journal_path(), &bytes).unwrap();
        // The same process goes on (its cursor no longer matches the file's length).
        file.save_change(&steps[1].0, &steps[1].1, &steps[1].2)
            .unwrap();
        assert_eq!(
            StateFile::new(&dir.0).load().unwrap().as_ref(),
            Some(&steps[1].1)
        );
    }
}
