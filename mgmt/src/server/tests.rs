//! The server over real Unix sockets, with a fake handler that echoes and records.

use super::*;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::Shutdown;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

/// A fresh directory under the system temp dir (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("plsrv-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    fn sock(&self) -> PathBuf {
        self.0.join("run/privlink.sock")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(Caller, String, Value)>>,
}

impl Handler for Fake {
    fn handle(&self, caller: &Caller, req: &Request) -> Handled {
        self.calls
            .lock()
            .unwrap()
            .push((caller.clone(), req.op.clone(), req.args.clone()));
        Handled::from(match req.op.as_str() {
            "fail" => Err(ApiErrorBody::new("InvalidVpcId.NotFound", "no such vpc")),
            "panic" => panic!("handler bug"),
            _ => Ok(json!({
                "op": req.op,
                "args": req.args,
                "uid": caller.uid,
                "account": caller.account.map(|a| a.to_string()),
                "admin": caller.admin,
            })),
        })
    }
}

const ACCOUNT: u64 = 111_122_223_333;

fn caller_of(uid: u32) -> Caller {
    Caller {
        uid,
        account: (uid == 1000).then(|| AccountId::new(ACCOUNT).unwrap()),
        admin: uid == 0,
    }
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    fake: Arc<Fake>,
    path: PathBuf,
    _dir: TempDir,
}

impl Running {
    fn connect(&self) -> (UnixStream, BufReader<UnixStream>) {
        let s = UnixStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }
    fn calls(&self) -> usize {
        self.fake.calls.lock().unwrap().len()
    }
    fn shutdown(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_with(uid: u32, tweak: impl FnOnce(&mut ServerConfig)) -> Running {
    start_with_uids(Arc::new(std::sync::atomic::AtomicU32::new(uid)), tweak)
}

fn start() -> Running {
    start_with(1000, |_| {})
}

fn call(s: &mut UnixStream, r: &mut BufReader<UnixStream>, line: &str) -> Response {
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    read_response(r)
}

fn read_response(r: &mut BufReader<UnixStream>) -> Response {
    let mut line = String::new();
    assert!(
        r.read_line(&mut line).unwrap() > 0,
        "server closed the connection"
    );
    Response::parse_line(&line).unwrap()
}

fn assert_eof(r: &mut BufReader<UnixStream>) {
    let mut line = String::new();
    assert_eq!(
        r.read_line(&mut line).unwrap(),
        0,
        "expected EOF, got {line:?}"
    );
}

fn err_code(resp: &Response) -> &str {
    &resp.result.as_ref().unwrap_err().code
}

#[test]
fn request_and_response() {
    let srv = start();
    let (mut s, mut r) = srv.connect();
    let resp = call(
        &mut s,
        &mut r,
        r#"{"id":7,"op":"create-vpc-endpoint","args":{"VpcId":"vpc-1"}}"#,
    );
    assert_eq!(resp.id, json!(7));
    let ok = resp.result.unwrap();
    assert_eq!(ok["op"], "create-vpc-endpoint");
    assert_eq!(ok["args"], json!({"VpcId": "vpc-1"}));
    assert_eq!(ok["account"], "111122223333");
    assert_eq!(ok["admin"], false);

    let resp = call(&mut s, &mut r, r#"{"id":"x","op":"fail"}"#);
    assert_eq!(resp.id, json!("x"));
    assert_eq!(err_code(&resp), "InvalidVpcId.NotFound");
    assert_eq!(srv.calls(), 2);
    srv.shutdown();
}

#[test]
fn many_concurrent_clients() {
    let srv = start_with(1000, |c| c.max_clients_per_uid = 16);
    let workers: Vec<_> = (0..16)
        .map(|c| {
            let (mut s, mut r) = srv.connect();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let id = c * 1000 + i;
                    let resp = call(&mut s, &mut r, &format!(r#"{{"id":{id},"op":"stats"}}"#));
                    assert_eq!(resp.id, json!(id));
                    assert_eq!(resp.result.unwrap()["op"], "stats");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(srv.calls(), 16 * 25);
}

#[test]
fn garbage_gets_an_error_and_the_connection_stays_usable() {
    let srv = start();
    let (mut s, mut r) = srv.connect();
    let resp = call(&mut s, &mut r, "this is not json");
    assert_eq!(resp.id, Value::Null);
    assert_eq!(err_code(&resp), codes::MALFORMED_REQUEST);
    let resp = call(&mut s, &mut r, r#"{"id":3,"op":"stats","args":[]}"#);
    assert_eq!(
        (resp.id.clone(), err_code(&resp)),
        (json!(3), codes::INVALID_PARAMETER_VALUE)
    );
    let resp = call(&mut s, &mut r, r#"{"id":4,"op":"stats","bogus":1}"#);
    assert_eq!(err_code(&resp), codes::INVALID_PARAMETER_VALUE);
    // Invalid UTF-8.
    s.write_all(b"\xff\xfe{}\n").unwrap();
    assert_eq!(err_code(&read_response(&mut r)), codes::MALFORMED_REQUEST);
    // Blank lines are skipped, CRLF is accepted.
    s.write_all(b"\n  \r\n").unwrap();
    let resp = call(&mut s, &mut r, "{\"id\":5,\"op\":\"version\"}\r");
    assert_eq!(resp.id, json!(5));
    assert!(resp.result.is_ok());
    assert_eq!(srv.calls(), 1, "the handler only sees well-formed requests");
}

#[test]
fn oversized_line_is_refused_and_the_connection_closed() {
    let srv = start_with(1000, |c| c.max_request_bytes = 1024);
    // No newline at all: refused as soon as the limit is passed.
    let (mut s, mut r) = srv.connect();
    s.write_all(&[b'x'; 4096]).unwrap();
    assert_eq!(err_code(&read_response(&mut r)), codes::REQUEST_TOO_LARGE);
    assert_eof(&mut r);
    // A whole oversized line arriving at once, followed by a valid one: the valid one is
    // not served, since the stream position after a refused line is not trusted.
    let (mut s, mut r) = srv.connect();
    let big = format!(
        "{{\"op\":\"stats\",\"args\":{{\"a\":\"{}\"}}}}\n{{\"op\":\"stats\"}}\n",
        "y".repeat(2000)
    );
    s.write_all(big.as_bytes()).unwrap();
    assert_eq!(err_code(&read_response(&mut r)), codes::REQUEST_TOO_LARGE);
    assert_eof(&mut r);
    // Exactly at the limit is fine.
    let (mut s, mut r) = srv.connect();
    let prefix = r#"{"op":"stats","args":{"a":""#;
    let suffix = r#""}}"#;
    let line = format!(
        "{prefix}{}{suffix}",
        "z".repeat(1024 - prefix.len() - suffix.len())
    );
    assert_eq!(line.len(), 1024);
    assert!(call(&mut s, &mut r, &line).result.is_ok());
    assert_eq!(srv.calls(), 1);
}

#[test]
fn half_closed_client_gets_its_responses() {
    let srv = start();
    let (mut s, mut r) = srv.connect();
    // The last request has no newline: EOF ends it.
    s.write_all(b"{\"id\":1,\"op\":\"a\"}\n{\"id\":2,\"op\":\"b\"}\n{\"id\":3,\"op\":\"c\"}")
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    for id in 1..=3 {
        assert_eq!(read_response(&mut r).id, json!(id));
    }
    assert_eof(&mut r);
}

#[test]
fn idle_client_is_closed() {
    let srv = start_with(1000, |c| c.idle_timeout = Duration::from_millis(200));
    let (mut s, mut r) = srv.connect();
    assert!(call(&mut s, &mut r, r#"{"op":"stats"}"#).result.is_ok());
    let t = Instant::now();
    assert_eof(&mut r);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[test]
fn slow_client_is_closed() {
    let srv = start_with(1000, |c| c.request_timeout = Duration::from_millis(200));
    let (mut s, mut r) = srv.connect();
    s.write_all(br#"{"op":"st"#).unwrap();
    assert_eq!(err_code(&read_response(&mut r)), codes::REQUEST_TIMEOUT);
    assert_eof(&mut r);
    assert_eq!(srv.calls(), 0);
}

#[test]
fn caller_identity_comes_from_the_peer_uid() {
    let srv = start_with(4242, |_| {});
    let (mut s, mut r) = srv.connect();
    let ok = call(&mut s, &mut r, r#"{"op":"stats"}"#).result.unwrap();
    assert_eq!(ok["uid"], 4242);
    assert_eq!(ok["account"], Value::Null);
    assert_eq!(ok["admin"], false);
    let calls = srv.fake.calls.lock().unwrap();
    assert_eq!(
        calls[0].0,
        Caller {
            uid: 4242,
            account: None,
            admin: false
        }
    );
    drop(calls);

    let root = start_with(0, |_| {});
    let (mut s, mut r) = root.connect();
    assert_eq!(
        call(&mut s, &mut r, r#"{"op":"stats"}"#).result.unwrap()["admin"],
        true
    );
}

#[test]
fn caller_from_config() {
    let mut config = Config::embedded_default();
    config.accounts[0].uids = vec![1000];
    let account = config.accounts[0].id;
    assert_eq!(
        Caller::from_config(&config, 1000),
        Caller {
            uid: 1000,
            account: Some(account),
            admin: false
        }
    );
    assert_eq!(
        Caller::from_config(&config, 7),
        Caller {
            uid: 7,
            account: None,
            admin: false
        }
    );
    assert!(Caller::from_config(&config, 0).admin);
}

#[test]
fn unreadable_credentials_are_refused() {
    let dir = TempDir::new();
    let fake = Arc::new(Fake::default());
    let peer: PeerUid = Arc::new(|_| Err(io::Error::other("no creds")));
    let server =
        Server::bind(ServerConfig::new(dir.sock()), caller_of, peer, fake.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let t = server.run(stop.clone());
    let s = UnixStream::connect(dir.sock()).unwrap();
    let mut r = BufReader::new(s);
    assert_eq!(err_code(&read_response(&mut r)), codes::AUTH_FAILURE);
    assert_eof(&mut r);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert!(fake.calls.lock().unwrap().is_empty());
}

#[test]
fn handler_panic_is_an_internal_error() {
    let srv = start();
    let (mut s, mut r) = srv.connect();
    let resp = call(&mut s, &mut r, r#"{"id":1,"op":"panic"}"#);
    assert_eq!(
        (resp.id.clone(), err_code(&resp)),
        (json!(1), codes::INTERNAL_ERROR)
    );
    assert!(call(&mut s, &mut r, r#"{"id":2,"op":"stats"}"#)
        .result
        .is_ok());
}

#[test]
fn too_many_clients() {
    let srv = start_with(1000, |c| c.max_clients = 2);
    let (mut s1, mut r1) = srv.connect();
    let (mut s2, mut r2) = srv.connect();
    // Both are being served once they have answered.
    assert!(call(&mut s1, &mut r1, r#"{"op":"stats"}"#).result.is_ok());
    assert!(call(&mut s2, &mut r2, r#"{"op":"stats"}"#).result.is_ok());
    let (_s3, mut r3) = srv.connect();
    assert_eq!(err_code(&read_response(&mut r3)), codes::TOO_MANY_CLIENTS);
    assert_eof(&mut r3);
    // A slot frees when a client leaves.
    drop((s1, r1));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (mut s, mut r) = srv.connect();
        s.write_all(b"{\"op\":\"stats\"}\n").unwrap();
        if read_response(&mut r).result.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(POLL);
    }
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.sock().parent().unwrap()).unwrap();
    drop(UnixListener::bind(dir.sock()).unwrap()); // leaves the file, nobody listening
    assert!(dir.sock().exists());
    let peer: PeerUid = Arc::new(|_| Ok(1000));
    let server = Server::bind(
        ServerConfig::new(dir.sock()),
        caller_of,
        peer,
        Arc::new(Fake::default()),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let t = server.run(stop.clone());
    let s = UnixStream::connect(dir.sock()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"{\"op\":\"stats\"}\n").unwrap();
    assert!(read_response(&mut r).result.is_ok());
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    assert!(!dir.sock().exists(), "stopping removes the socket file");
}

#[test]
fn live_socket_is_not_stolen() {
    let srv = start();
    let peer: PeerUid = Arc::new(|_| Ok(1000));
    let err = Server::bind(
        ServerConfig::new(&srv.path),
        caller_of,
        peer,
        Arc::new(Fake::default()),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse);
    let (mut s, mut r) = srv.connect();
    assert!(call(&mut s, &mut r, r#"{"op":"stats"}"#).result.is_ok());
}

#[test]
fn a_regular_file_is_never_removed() {
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.sock().parent().unwrap()).unwrap();
    std::fs::write(dir.sock(), b"precious").unwrap();
    let peer: PeerUid = Arc::new(|_| Ok(1000));
    let err = Server::bind(
        ServerConfig::new(dir.sock()),
        caller_of,
        peer,
        Arc::new(Fake::default()),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(dir.sock()).unwrap(), b"precious");
}

#[test]
fn mode_is_applied() {
    for mode in [0o600, 0o660] {
        let srv = start_with(1000, |c| c.mode = mode);
        let meta = std::fs::metadata(&srv.path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, mode);
    }
}

#[test]
fn server_config_from_mgmt() {
    let mgmt = MgmtConfig {
        socket_mode: "0600".parse().unwrap(),
        ..MgmtConfig::default()
    };
    let cfg = ServerConfig::from_mgmt(&mgmt).unwrap();
    assert_eq!(cfg.path, mgmt.socket);
    assert_eq!(cfg.mode, 0o600);
    assert_eq!(cfg.max_request_bytes, 1 << 20);
    assert_eq!(cfg.max_clients, 64);
    assert_eq!(cfg.max_clients_per_uid, 8);
    assert_eq!(cfg.group, None);
    let root_group = MgmtConfig {
        socket_group: Some("root".into()),
        ..MgmtConfig::default()
    };
    assert_eq!(ServerConfig::from_mgmt(&root_group).unwrap().group, Some(0));
    let numeric = MgmtConfig {
        socket_group: Some("4242".into()),
        ..MgmtConfig::default()
    };
    assert_eq!(ServerConfig::from_mgmt(&numeric).unwrap().group, Some(4242));
    let missing = MgmtConfig {
        socket_group: Some("no-such-group-here".into()),
        ..MgmtConfig::default()
    };
    let e = ServerConfig::from_mgmt(&missing).unwrap_err();
    assert!(e.to_string().contains("no-such-group-here"), "{e}");
}

/// A server whose peers' uids are whatever `uid` holds when they connect.
fn start_with_uids(
    uid: Arc<std::sync::atomic::AtomicU32>,
    tweak: impl FnOnce(&mut ServerConfig),
) -> Running {
    let dir = TempDir::new();
    let mut cfg = ServerConfig::new(dir.sock());
    tweak(&mut cfg);
    let path = cfg.path.clone();
    let fake = Arc::new(Fake::default());
    let peer: PeerUid = Arc::new(move |_| Ok(uid.load(Ordering::SeqCst)));
    let server = Server::bind(cfg, caller_of, peer, fake.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = Some(server.run(stop.clone()));
    Running {
        stop,
        thread,
        fake,
        path,
        _dir: dir,
    }
}

/// Connects as `uid` and makes one request; whether it was served.
fn served_as(
    srv: &Running,
    who: &std::sync::atomic::AtomicU32,
    uid: u32,
) -> Option<(UnixStream, BufReader<UnixStream>)> {
    who.store(uid, Ordering::SeqCst);
    let (mut s, mut r) = srv.connect();
    let resp = call(&mut s, &mut r, r#"{"op":"stats"}"#);
    match resp.result {
        Ok(_) => Some((s, r)),
        Err(e) => {
            assert_eq!(e.code, codes::TOO_MANY_CLIENTS, "{e}");
            None
        }
    }
}

#[test]
fn one_uid_cannot_lock_the_others_out() {
    let who = Arc::new(std::sync::atomic::AtomicU32::new(1000));
    let srv = start_with_uids(who.clone(), |c| {
        c.max_clients = 4;
        c.max_clients_per_uid = 2;
    });
    // uid 1000 gets its two connections and no more.
    let a1 = served_as(&srv, &who, 1000).expect("first");
    let a2 = served_as(&srv, &who, 1000).expect("second");
    assert!(served_as(&srv, &who, 1000).is_none(), "a third is refused");
    // Another uid still gets in, up to the total.
    let b1 = served_as(&srv, &who, 1001).expect("other uid");
    let b2 = served_as(&srv, &who, 1001).expect("other uid");
    assert!(served_as(&srv, &who, 1002).is_none(), "all four slots held");
    // Root always has slots of its own.
    let roots: Vec<_> = (0..ROOT_SLOTS)
        .map(|_| served_as(&srv, &who, 0).expect("root keeps its slots"))
        .collect();
    assert!(
        served_as(&srv, &who, 0).is_none(),
        "root's slots are bounded too"
    );
    drop((a1, a2, b1, b2, roots));
}

#[test]
fn the_socket_is_never_reachable_before_its_mode_is_set() {
    let srv = start_with(1000, |c| c.mode = 0o600);
    // It was bound elsewhere (a private directory) and renamed into place: the bound
    // address is not the final path, and the private directory is gone.
    let parent = srv.path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![srv.path.file_name().unwrap().to_owned()]);
    let meta = std::fs::metadata(&srv.path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (mut s, mut r) = srv.connect();
    assert!(call(&mut s, &mut r, r#"{"op":"stats"}"#).result.is_ok());
}

#[test]
fn the_socket_gets_its_group() {
    // Root may give the socket any group; elsewhere only a group of ours.
    let gid = std::fs::metadata("/proc/self").unwrap().gid();
    let srv = start_with(1000, |c| c.group = Some(gid));
    assert_eq!(std::fs::metadata(&srv.path).unwrap().gid(), gid);
}

#[test]
fn the_caller_is_worked_out_at_every_request() {
    let dir = TempDir::new();
    let accounts = Arc::new(Mutex::new(true));
    let lookup = Arc::clone(&accounts);
    let uid_to_caller = move |uid: u32| Caller {
        uid,
        account: (*lookup.lock().unwrap()).then(|| AccountId::new(ACCOUNT).unwrap()),
        admin: false,
    };
    let peer: PeerUid = Arc::new(|_| Ok(1000));
    let server = Server::bind(
        ServerConfig::new(dir.sock()),
        uid_to_caller,
        peer,
        Arc::new(Fake::default()),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let t = server.run(stop.clone());
    let s = UnixStream::connect(dir.sock()).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut s = s;
    let before = call(&mut s, &mut r, r#"{"op":"x"}"#).result.unwrap();
    assert_eq!(before["account"], json!(ACCOUNT.to_string()));
    // The uid leaves its account (a reload): the open connection loses it at once.
    *accounts.lock().unwrap() = false;
    let after = call(&mut s, &mut r, r#"{"op":"x"}"#).result.unwrap();
    assert_eq!(after["account"], Value::Null);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}
