//! The management socket server: accepts connections on a Unix stream socket, decodes one
//! request per line, hands each well-formed request to a [`Handler`] with the caller's
//! identity, and writes one response line per request, in order.
//!
//! What it owns: the socket file (replacing a stale one, never stealing a live one; bound in
//! a private directory and renamed into place with its mode and group already set, so it
//! is never reachable with wider permissions), the connection limits (size of a line, idle
//! and slow clients, clients in all and per uid, with slots kept for root so one account
//! cannot lock everyone out), the caller identity (the peer's uid from the connection,
//! mapped to an account at every request, so removing a uid from the configuration revokes
//! its access at once), and the audit log of mutating requests (naming the objects each
//! change touched). What it must never do: interpret `args` or change
//! state itself. Every request it rejects (malformed, oversized, too many clients) is
//! answered with an error and never reaches the handler, so it changes nothing;
//! authorisation of well-formed requests is the handler's, using [`Caller`].
//!
//! Threads: one accept thread, polling a non-blocking listener every [`POLL`] so a stop
//! request is noticed promptly, and one thread per client. Clients read with a short
//! timeout for the same reason. Management traffic is a few requests per second, so a
//! thread per client (at most `max_clients`) is simpler than an event loop and fast enough.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::Value;

use crate::config::{Config, MgmtConfig};
use crate::model::AccountId;
use crate::protocol::{codes, is_read_only, ApiErrorBody, Request, Response};

#[cfg(test)]
mod tests;

/// How often the accept loop and idle clients check the stop flag and their deadlines.
pub const POLL: Duration = Duration::from_millis(50);

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The peer's uid (`SO_PEERCRED`).
    pub uid: u32,
    /// The account that uid belongs to, from the configuration; `None` for a uid no account
    /// lists.
    pub account: Option<AccountId>,
    /// Acts on every object (root).
    pub admin: bool,
}

impl Caller {
    /// The identity of `uid` under `config`: its account from `[[accounts]]`, and admin
    /// for root (uid 0).
    pub fn from_config(config: &Config, uid: u32) -> Caller {
        Caller {
            uid,
            account: config.account_for_uid(uid).map(|a| a.id),
            admin: uid == 0,
        }
    }
}

/// What a handler answers: the `ok` value or the error to send, and the ids of the objects
/// a change touched (for the audit line; empty for reads and failures).
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The answer.
    pub result: Result<Value, ApiErrorBody>,
    /// Objects created, changed or removed.
    pub touched: Vec<String>,
}

impl From<Result<Value, ApiErrorBody>> for Handled {
    fn from(result: Result<Value, ApiErrorBody>) -> Self {
        Self {
            result,
            touched: Vec::new(),
        }
    }
}

/// Executes well-formed requests. Called from client threads concurrently; the
/// implementation serialises whatever must be serialised.
pub trait Handler: Send + Sync + 'static {
    /// Executes `req` on behalf of `caller`.
    fn handle(&self, caller: &Caller, req: &Request) -> Handled;

    /// `subscribe-events`: the caller's events from now on. Handlers without events
    /// refuse it.
    fn subscribe(&self, caller: &Caller) -> Result<crate::events::Subscription, ApiErrorBody> {
        let _ = caller;
        Err(ApiErrorBody::new(
            codes::INVALID_ACTION,
            "this server publishes no events",
        ))
    }
}

/// Connections root may hold beyond [`ServerConfig::max_clients`]: however many the other
/// uids hold, the administrator can always get in.
pub const ROOT_SLOTS: usize = 4;

/// Reads the peer's uid from a connected stream (`dpdk_bindings::os::peer_uid` in the
/// daemon; a fixed uid in tests). Injected so this crate needs no FFI.
pub type PeerUid = Arc<dyn Fn(&UnixStream) -> io::Result<u32> + Send + Sync>;

/// Maps a peer uid to its identity (usually [`Caller::from_config`]).
type UidToCaller = Arc<dyn Fn(u32) -> Caller + Send + Sync>;

/// Where and how the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The socket path; its parent directory is created if missing.
    pub path: PathBuf,
    /// The socket file's permission bits.
    pub mode: u32,
    /// Longest request line in bytes, without the newline; default 1 MiB.
    pub max_request_bytes: usize,
    /// A client that sends nothing for this long is disconnected; default 300 s.
    pub idle_timeout: Duration,
    /// A started line must be complete within this, and a response must be written within
    /// this; default 10 s.
    pub request_timeout: Duration,
    /// Clients of uids other than root served at once; default 64. Beyond, a new client
    /// gets `TooManyClients`. Root has [`ROOT_SLOTS`] more of its own.
    pub max_clients: usize,
    /// Clients one uid (other than root) may have at once; default 8.
    pub max_clients_per_uid: usize,
    /// The group to give the socket file; none = the daemon's.
    pub group: Option<u32>,
}

impl ServerConfig {
    /// Listen at `path` with mode 0660 and every default limit.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: 0o660,
            max_request_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            max_clients: 64,
            max_clients_per_uid: 8,
            group: None,
        }
    }

    /// The socket path, mode and connection limits of `[mgmt]`, with the group resolved
    /// (`socket_group`: a name from `/etc/group` or a number), and every other default.
    pub fn from_mgmt(mgmt: &MgmtConfig) -> io::Result<Self> {
        let group = mgmt
            .socket_group
            .as_deref()
            .map(resolve_group)
            .transpose()?;
        Ok(Self {
            mode: mgmt.socket_mode.bits(),
            max_clients: usize::try_from(mgmt.max_connections).unwrap_or(usize::MAX),
            max_clients_per_uid: usize::try_from(mgmt.max_connections_per_uid)
                .unwrap_or(usize::MAX),
            group,
            ..Self::new(mgmt.socket.clone())
        })
    }
}

/// The gid of `group`: a number, or a name looked up in `/etc/group` (groups that only a
/// directory service knows need their number).
pub fn resolve_group(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group")
        .map_err(|e| io::Error::new(e.kind(), format!("reading /etc/group: {e}")))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .find(|(name, _)| *name == group)
        .map(|(_, gid)| gid)
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::NotFound,
                format!(
                    "socket_group {group:?} is not in /etc/group (give its number if a \
                     directory service knows it)"
                ),
            )
        })
}

/// A bound management socket, ready to [`run`](Server::run).
pub struct Server {
    cfg: ServerConfig,
    listener: UnixListener,
    /// The socket file's inode, so shutdown removes our file and not a successor's.
    inode: u64,
    uid_to_caller: UidToCaller,
    peer_uid: PeerUid,
    handler: Arc<dyn Handler>,
}

/// Connections held, per uid (root included), shared by the accept thread and the clients.
#[derive(Debug, Default)]
struct Slots {
    per_uid: HashMap<u32, usize>,
    others: usize,
}

impl Slots {
    /// Takes a slot for `uid` if the limits allow.
    fn take(&mut self, uid: u32, cfg: &ServerConfig) -> Result<(), String> {
        let held = self.per_uid.get(&uid).copied().unwrap_or(0);
        if uid == 0 {
            if held >= ROOT_SLOTS {
                return Err(format!("root already holds {ROOT_SLOTS} connections"));
            }
        } else if held >= cfg.max_clients_per_uid {
            return Err(format!(
                "uid {uid} already holds {} connections",
                cfg.max_clients_per_uid
            ));
        } else if self.others >= cfg.max_clients {
            return Err(format!(
                "the server already serves {} clients",
                cfg.max_clients
            ));
        } else {
            self.others += 1;
        }
        *self.per_uid.entry(uid).or_insert(0) += 1;
        Ok(())
    }

    fn give_back(&mut self, uid: u32) {
        if let Some(n) = self.per_uid.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                self.per_uid.remove(&uid);
            }
        }
        if uid != 0 {
            self.others = self.others.saturating_sub(1);
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("cfg", &self.cfg)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the socket: creates the parent directory, removes a stale socket file (one
    /// nothing accepts on), binds in a private (0700) directory beside it, applies
    /// `cfg.mode` and `cfg.group` there, and renames the socket into place, so no client
    /// can reach it before its permissions are final (whatever the umask). Fails with
    /// `AddrInUse` when a live server listens at the path, and with `AlreadyExists` when
    /// the path is not a socket (it is never removed).
    pub fn bind(
        cfg: ServerConfig,
        uid_to_caller: impl Fn(u32) -> Caller + Send + Sync + 'static,
        peer_uid: PeerUid,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let path = &cfg.path;
        let parent = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| annotate(e, "creating", parent))?;
        remove_stale(path)?;
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidInput,
                format!("{} names no file", path.display()),
            )
        })?;
        let private = parent.join(format!(
            ".{}.{}.bind",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&private);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&private)
                .map_err(|e| annotate(e, "creating", &private))?;
        }
        let staged = private.join(name);
        let bound = (|| {
            let listener =
                UnixListener::bind(&staged).map_err(|e| annotate(e, "binding", &staged))?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(cfg.mode))
                .map_err(|e| annotate(e, "setting the mode of", &staged))?;
            if let Some(gid) = cfg.group {
                std::os::unix::fs::chown(&staged, None, Some(gid))
                    .map_err(|e| annotate(e, &format!("giving group {gid} to"), &staged))?;
            }
            std::fs::rename(&staged, path)
                .map_err(|e| annotate(e, "moving the socket to", path))?;
            Ok::<_, io::Error>(listener)
        })();
        let _ = std::fs::remove_dir_all(&private);
        let listener = bound?;
        listener.set_nonblocking(true)?;
        let inode = std::fs::symlink_metadata(path)?.ino();
        Ok(Server {
            cfg,
            listener,
            inode,
            uid_to_caller: Arc::new(uid_to_caller),
            peer_uid,
            handler,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.cfg.path
    }

    /// Serves on a new thread until `stop` is set; the thread then waits for its client
    /// threads to finish (each notices within [`POLL`] once its current request is done)
    /// and removes the socket file.
    pub fn run(self, stop: Arc<AtomicBool>) -> JoinHandle<()> {
        std::thread::Builder::new()
            .name("mgmt-accept".to_owned())
            .spawn(move || self.accept_loop(&stop))
            .unwrap_or_else(|e| panic!("cannot spawn the management accept thread: {e}"))
    }

    fn accept_loop(self, stop: &Arc<AtomicBool>) {
        let slots = Arc::new(Mutex::new(Slots::default()));
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let cfg = Arc::new(self.cfg.clone());
        while !stop.load(Ordering::Relaxed) {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    warn!("mgmt: accept on {}: {e}", self.cfg.path.display());
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            threads.retain(|t| !t.is_finished());
            if let Err(e) = prepare(&stream, &cfg) {
                debug!("mgmt: cannot set up a client socket: {e}");
                continue;
            }
            // The uid decides which limits apply, so it is read before any slot is taken.
            let uid = match (self.peer_uid)(&stream) {
                Ok(uid) => uid,
                Err(e) => {
                    warn!("mgmt: cannot read the peer credentials of a client: {e}");
                    let e = ApiErrorBody::new(codes::AUTH_FAILURE, "cannot read peer credentials");
                    let _ = send(&stream, &Response::error(Value::Null, e));
                    continue;
                }
            };
            let taken = slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(uid, &cfg);
            if let Err(why) = taken {
                debug!("mgmt: refusing a client of uid {uid}: {why}");
                let e = ApiErrorBody::new(codes::TOO_MANY_CLIENTS, why);
                let _ = send(&stream, &Response::error(Value::Null, e));
                continue;
            }
            let client = Client {
                cfg: Arc::clone(&cfg),
                uid_to_caller: Arc::clone(&self.uid_to_caller),
                handler: Arc::clone(&self.handler),
                stop: Arc::clone(stop),
            };
            let held = Arc::clone(&slots);
            let release = move || {
                held.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .give_back(uid);
            };
            let spawned = std::thread::Builder::new()
                .name("mgmt-client".to_owned())
                .spawn(move || {
                    client.serve(stream, uid);
                    release();
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // The closure (and the stream) is dropped: the client sees EOF.
                    slots
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .give_back(uid);
                    warn!("mgmt: cannot spawn a client thread: {e}");
                }
            }
        }
        for t in threads {
            let _ = t.join();
        }
        // Remove the socket file if it is still ours (a successor may have replaced it).
        if std::fs::symlink_metadata(&self.cfg.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.cfg.path);
        }
    }
}

fn annotate(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

/// Removes `path` if it is a socket nobody accepts on; leaves a missing path alone.
fn remove_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(annotate(e, "inspecting", path)),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            ErrorKind::AddrInUse,
            format!("another server is listening on {}", path.display()),
        )),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            info!("mgmt: removing stale socket {}", path.display());
            std::fs::remove_file(path).map_err(|e| annotate(e, "removing stale", path))
        }
        Err(e) => Err(annotate(e, "probing", path)),
    }
}

/// Blocking with a short read timeout (so deadlines and stop are checked) and a write
/// timeout (so a client that does not read cannot hold its thread forever).
fn prepare(stream: &UnixStream, cfg: &ServerConfig) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(cfg.request_timeout.max(POLL)))
}

fn send(mut stream: &UnixStream, response: &Response) -> io::Result<()> {
    let mut line = response.to_line();
    line.push('\n');
    stream.write_all(line.as_bytes())
}

/// One connection's state, owned by its thread.
struct Client {
    cfg: Arc<ServerConfig>,
    uid_to_caller: UidToCaller,
    handler: Arc<dyn Handler>,
    stop: Arc<AtomicBool>,
}

impl Client {
    fn serve(&self, stream: UnixStream, uid: u32) {
        debug!("mgmt: client connected: uid {uid}");
        if let Err(e) = self.serve_lines(&stream, uid) {
            debug!("mgmt: client uid {uid} gone: {e}");
        }
    }

    /// Reads lines until EOF, a fatal protocol error, a timeout or stop; answers each.
    fn serve_lines(&self, mut stream: &UnixStream, uid: u32) -> io::Result<()> {
        let max = self.cfg.max_request_bytes;
        let mut buf: Vec<u8> = Vec::new();
        // Where the newline search resumes, so a line arriving in many pieces costs O(n).
        let mut scanned = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut last_activity = Instant::now();
        // When the first byte of the pending (unfinished) line arrived.
        let mut line_started: Option<Instant> = None;
        loop {
            // Answer every complete line in the buffer, in order.
            let mut answered = false;
            while let Some(pos) = buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                if end > max {
                    return self.too_large(stream, max);
                }
                let line: Vec<u8> = buf.drain(..=end).collect();
                scanned = 0;
                self.answer(stream, uid, &line[..end])?;
                last_activity = Instant::now();
                answered = true;
            }
            scanned = buf.len();
            if buf.len() > max {
                return self.too_large(stream, max);
            }
            if buf.is_empty() {
                line_started = None;
            } else if answered {
                // The rest of the buffer is the start of the next line, which began at the
                // latest when the previous one was read.
                line_started = Some(Instant::now());
            }
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match stream.read(&mut chunk) {
                Ok(0) => {
                    // EOF (perhaps only the write half): a final unterminated line is still
                    // a request.
                    if !buf.is_empty() {
                        self.answer(stream, uid, &buf)?;
                    }
                    return Ok(());
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    line_started.get_or_insert_with(Instant::now);
                    last_activity = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if let Some(started) = line_started {
                if !buf.is_empty() && started.elapsed() >= self.cfg.request_timeout {
                    let e = ApiErrorBody::new(
                        codes::REQUEST_TIMEOUT,
                        format!(
                            "request line not completed within {:?}",
                            self.cfg.request_timeout
                        ),
                    );
                    let _ = send(stream, &Response::error(Value::Null, e));
                    return Ok(());
                }
            } else if last_activity.elapsed() >= self.cfg.idle_timeout {
                debug!("mgmt: closing idle client uid {uid}");
                return Ok(());
            }
        }
    }

    fn too_large(&self, stream: &UnixStream, max: usize) -> io::Result<()> {
        let e = ApiErrorBody::new(
            codes::REQUEST_TOO_LARGE,
            format!("request line longer than {max} bytes; closing the connection"),
        );
        send(stream, &Response::error(Value::Null, e))
    }

    /// Decodes one line, runs it, writes the response. Blank lines are skipped. The
    /// caller is worked out from the uid at every request, so a change of the accounts
    /// (a reload) applies to connections already open.
    fn answer(&self, stream: &UnixStream, uid: u32, line: &[u8]) -> io::Result<()> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let response = match crate::protocol::decode_any(line) {
            Err((id, e)) => {
                debug!("mgmt: uid {uid} sent a bad request: {e}");
                Response::error(id, e)
            }
            Ok(req) if req.op == crate::protocol::SUBSCRIBE_EVENTS => {
                let caller = (self.uid_to_caller)(uid);
                return self.stream_events(stream, &caller, req);
            }
            Ok(req) => {
                let caller = (self.uid_to_caller)(uid);
                let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    self.handler.handle(&caller, &req)
                }))
                .unwrap_or_else(|_| {
                    Handled::from(Err(ApiErrorBody::new(
                        codes::INTERNAL_ERROR,
                        format!("internal error while executing {}", req.op),
                    )))
                });
                if !is_read_only(&req.op) {
                    audit(&caller, &req.op, &handled);
                }
                Response {
                    id: req.id,
                    result: handled.result,
                }
            }
        };
        send(stream, &response)
    }
}

impl Client {
    /// `subscribe-events`: the acknowledgement, then each event as a line, until the
    /// client closes the connection (or the server stops). A client that stops reading
    /// loses events (counted, and said in an `EventsDropped` line) once its queue is full;
    /// one that blocks the socket past the write timeout is disconnected. Nothing here
    /// ever makes the publisher wait.
    fn stream_events(
        &self,
        stream: &UnixStream,
        caller: &Caller,
        req: crate::protocol::Request,
    ) -> io::Result<()> {
        if caller.account.is_none() && !caller.admin {
            let e = ApiErrorBody::new(
                codes::AUTH_FAILURE,
                format!("uid {} is not mapped to an account", caller.uid),
            );
            return send(stream, &Response::error(req.id, e));
        }
        if let Err(e) = crate::store::check_keys(&req.args, &[]) {
            return send(
                stream,
                &Response::error(req.id, ApiErrorBody::new(&e.code, e.message)),
            );
        }
        let mut sub = match self.handler.subscribe(caller) {
            Ok(s) => s,
            Err(e) => return send(stream, &Response::error(req.id, e)),
        };
        info!(
            "mgmt: op=subscribe-events uid={} account={}",
            caller.uid,
            caller
                .account
                .map_or_else(|| "-".to_owned(), |a| a.to_string())
        );
        send(
            stream,
            &Response {
                id: req.id,
                result: Ok(serde_json::json!({"Subscribed": true})),
            },
        )?;
        // Short reads: what the client sends is only looked at for its end.
        stream.set_read_timeout(Some(Duration::from_millis(5)))?;
        let mut scratch = [0u8; 256];
        let mut reader = stream;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            match sub.next(POLL) {
                crate::events::Next::Event(event) => {
                    let mut line = serde_json::json!({ "Event": event }).to_string();
                    line.push('\n');
                    (&*stream).write_all(line.as_bytes())?;
                }
                crate::events::Next::Nothing => {}
                crate::events::Next::Closed => return Ok(()),
            }
            match reader.read(&mut scratch) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The audit line of a mutating request: who, what, the outcome and the objects touched.
fn audit(caller: &Caller, op: &str, handled: &Handled) {
    let account = caller
        .account
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let outcome = match &handled.result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    let objects = if handled.touched.is_empty() {
        "-".to_owned()
    } else {
        handled.touched.join(",")
    };
    info!(
        "mgmt: op={op} uid={} account={account} admin={} result={outcome} objects={objects}",
        caller.uid, caller.admin
    );
}
