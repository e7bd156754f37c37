//! The state file: where every accepted change is made durable before it is acknowledged.
//!
//! `<state_dir>/state.json` holds a one-line header, `privlink-state v1 len=<bytes>
//! fnv1a64=<16 hex>`, then the [`State`] as pretty JSON of exactly `len` bytes whose FNV-1a
//! 64 hash is the header's. [`StateFile::save`] writes `state.json.tmp`, fsyncs it, renames
//! it over `state.json` and fsyncs the directory, so after a crash the file is either the
//! old state or the new one, never a mix.
//!
//! What each failure leaves on disk, which the caller must tell its client truthfully:
//! a failure to create, write or sync the temporary file, or to rename it, leaves the old
//! file in place ([`PersistError::Io`]); a failure to sync the directory after the rename
//! leaves the *new* file in place, not known to be durable ([`PersistError::NotDurable`]).
//! Every step can be made to fail on purpose ([`StateFile::with_faults`]) to test that.
//!
//! This module must never modify or delete a state file it cannot read: a corrupt file is
//! reported ([`PersistError::Corrupt`]) and left for the operator to inspect.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::model::State;

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// The temporary file a save writes before renaming it.
pub const STATE_TMP_FILE: &str = "state.json.tmp";
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
    /// <io error>`: the rename happened, its durability is unknown.
    NotDurable {
        /// The state directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
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
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } | Self::NotDurable { source, .. } => Some(source),
            Self::Corrupt { .. } => None,
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
}

/// Called before each step of a save; an error makes that step fail with it (tests).
pub type FaultHook = Arc<dyn Fn(SaveStep) -> io::Result<()> + Send + Sync>;

/// The state file in one directory.
#[derive(Clone)]
pub struct StateFile {
    dir: PathBuf,
    faults: Option<FaultHook>,
}

impl fmt::Debug for StateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFile")
            .field("dir", &self.dir)
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

impl StateFile {
    /// The state file of directory `dir` (created on the first save or load).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            faults: None,
        }
    }

    /// The same file, with `hook` asked before every step of a save: for tests that
    /// prove what each failure leaves on disk and tells the client.
    #[must_use]
    pub fn with_faults(mut self, hook: FaultHook) -> Self {
        self.faults = Some(hook);
        self
    }

    fn step(&self, step: SaveStep) -> io::Result<()> {
        self.faults.as_ref().map_or(Ok(()), |f| f(step))
    }

    /// `<dir>/state.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn io(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.to_owned();
        move |source| PersistError::Io {
            path,
            action,
            source,
        }
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

    /// The saved state; `None` when there is no state file yet. Creates the directory if
    /// missing. A file that fails its length or checksum check or does not parse is
    /// [`PersistError::Corrupt`] and is left as it is.
    pub fn load(&self) -> Result<Option<State>, PersistError> {
        self.ensure_dir()?;
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(&path, "read")(e)),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|reason| PersistError::Corrupt { path, reason })
    }

    /// Writes `state` durably: temporary file, fsync, rename, fsync of the directory.
    /// [`PersistError::Io`]: the previous state file is intact (a partial temporary file
    /// is removed). [`PersistError::NotDurable`]: the new file is in place, its
    /// durability unknown.
    pub fn save(&self, state: &State) -> Result<(), PersistError> {
        self.ensure_dir()?;
        let tmp = self.dir.join(STATE_TMP_FILE);
        let path = self.path();
        let bytes = encode(state);
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
                .and_then(|()| file.open(&tmp))
                .map_err(Self::io(&tmp, "create"))?;
            self.step(SaveStep::Write)
                .and_then(|()| file.write_all(&bytes))
                .map_err(Self::io(&tmp, "write"))?;
            self.step(SaveStep::Sync)
                .and_then(|()| file.sync_all())
                .map_err(Self::io(&tmp, "sync"))?;
            self.step(SaveStep::Rename)
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(Self::io(&path, "rename the new state file into"))
        })();
        if let Err(e) = written {
            // A full disk leaves a partial temporary file: take it away so the space it
            // holds is not lost too (the state file itself is untouched).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.step(SaveStep::SyncDir)
            .and_then(|()| fs::File::open(&self.dir))
            .and_then(|d| d.sync_all())
            .map_err(|source| PersistError::NotDurable {
                dir: self.dir.clone(),
                source,
            })
    }
}

/// The file's bytes for `state`: header line, then pretty JSON.
pub fn encode(state: &State) -> Vec<u8> {
    // Serialising plain data with string keys cannot fail.
    let body = serde_json::to_vec_pretty(state).unwrap_or_default();
    let mut out = format!(
        "{MAGIC} len={} fnv1a64={:016x}\n",
        body.len(),
        fnv1a64(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The state in a file's bytes, or why they are not a valid state file.
pub fn decode(bytes: &[u8]) -> Result<State, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let body = &bytes[newline + 1..];
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
    let len: usize = len
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
    if body.len() != len {
        return Err(format!(
            "the body is {} bytes, the header says {len} (truncated or appended to)",
            body.len()
        ));
    }
    let actual = fnv1a64(body);
    if actual != hash {
        return Err(format!(
            "checksum mismatch: the header says {hash:016x}, the body hashes to {actual:016x}"
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("the body does not parse: {e}"))
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
}
