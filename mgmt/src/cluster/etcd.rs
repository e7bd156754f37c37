//! A small synchronous client of etcd's v3 HTTP/JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`): what privlink needs of etcd and nothing else, so privlink
//! stays free of gRPC. Keys and values travel base64-encoded, revisions as decimal
//! strings (the gateway's JSON mapping of int64).
//!
//! Members are tried in turn: a request that cannot reach one (refused, reset, timed out)
//! goes to the next, and the client keeps using the one that answered. An answer with an
//! error body (a request etcd refused) is not retried elsewhere: every member would
//! refuse it alike.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

/// Keys per range page of a full load: the gateway holds a whole answer in memory, so a
/// load of 100k objects goes in pages.
pub const PAGE: u64 = 5000;

/// Why a request to etcd failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// No member could be reached (each one's error, joined).
    Unreachable(String),
    /// A member answered with an error (`code` is the gRPC status code etcd gives).
    Refused {
        /// gRPC code (3 invalid argument, 8 resource exhausted, 11 out of range, …).
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// The revision a watch was to start from is compacted away: the caller must load
    /// everything again.
    Compacted(i64),
    /// An answer that is not what the gateway documents.
    Protocol(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "etcd is unreachable ({e})"),
            Self::Refused { code, message } => {
                write!(f, "etcd refused the request (code {code}): {message}")
            }
            Self::Compacted(r) => write!(f, "etcd compacted its history up to revision {r}"),
            Self::Protocol(e) => write!(f, "unexpected answer from etcd: {e}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// One key-value pair as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The revision that created the key (its place in creation order).
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// What a conditional transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether the condition held (and the writes were made).
    pub succeeded: bool,
    /// The store's revision after the transaction (its own revision when it succeeded).
    pub revision: i64,
    /// When it did not: the guard's revision now (0: the key does not exist).
    pub guard_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    Delete {
        key: Vec<u8>,
        /// The revision of the deletion.
        mod_revision: i64,
    },
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put(kv) => kv.mod_revision,
            Event::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// A whole prefix as of one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub kvs: Vec<Kv>,
    /// The revision every page was read at.
    pub revision: i64,
    /// The etcd cluster's id (a node that finds another one must load everything again).
    pub cluster_id: String,
}

/// A client of one etcd cluster.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<String>,
    /// The member that answered last.
    current: AtomicUsize,
    agent: ureq::Agent,
    timeout: Duration,
}

impl Etcd {
    /// A client of the members at these URLs (`http://host:port`), each request bounded
    /// by `timeout`.
    pub fn new(members: &[String], timeout: Duration) -> Etcd {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout(timeout)
            .build();
        Etcd {
            members: members
                .iter()
                .map(|m| m.trim_end_matches('/').to_owned())
                .collect(),
            current: AtomicUsize::new(0),
            agent,
            timeout,
        }
    }

    /// POSTs `body` to `path` at the members in turn, from the one that answered last.
    fn post(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let (resp, _) = self.post_with(&self.agent, path, body)?;
        let text = resp
            .into_string()
            .map_err(|e| EtcdError::Unreachable(format!("reading the answer: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| EtcdError::Protocol(format!("{path}: {e}: {}", cut(&text))))?;
        refused(&v)?;
        Ok(v)
    }

    fn post_with(
        &self,
        agent: &ureq::Agent,
        path: &str,
        body: &Value,
    ) -> Result<(ureq::Response, usize), EtcdError> {
        let n = self.members.len().max(1);
        let first = self.current.load(Ordering::Relaxed) % n;
        let mut errors = Vec::new();
        for i in 0..n {
            let m = (first + i) % n;
            let Some(base) = self.members.get(m) else {
                break;
            };
            match agent
                .post(&format!("{base}{path}"))
                .set("Content-Type", "application/json")
                .send_string(&body.to_string())
            {
                Ok(resp) => {
                    self.current.store(m, Ordering::Relaxed);
                    return Ok((resp, m));
                }
                Err(ureq::Error::Status(status, resp)) => {
                    // The member answered: an error body says why; the same request
                    // would be refused by every member.
                    let text = resp.into_string().unwrap_or_default();
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        refused(&v)?;
                    }
                    // 503 and the like: this member cannot serve (no leader, shutting
                    // down); another may.
                    errors.push(format!("{base}: HTTP {status}: {}", cut(&text)));
                }
                Err(e) => errors.push(format!("{base}: {e}")),
            }
        }
        Err(EtcdError::Unreachable(errors.join("; ")))
    }

    /// Every key under `prefix`, read in pages at one revision.
    pub fn load_prefix(&self, prefix: &[u8]) -> Result<Loaded, EtcdError> {
        let end = prefix_end(prefix);
        let mut kvs = Vec::new();
        let mut from = prefix.to_vec();
        let mut revision: Option<i64> = None;
        let mut cluster_id = String::new();
        loop {
            let mut req = json!({
                "key": B64.encode(&from),
                "range_end": B64.encode(&end),
                "limit": PAGE.to_string(),
            });
            if let Some(r) = revision {
                req["revision"] = json!(r.to_string());
            }
            let v = self.post("/v3/kv/range", &req)?;
            let rev = header_revision(&v)?;
            if revision.is_none() {
                cluster_id = v["header"]["cluster_id"].as_str().unwrap_or("").to_owned();
            }
            let at = *revision.get_or_insert(rev);
            let page = v["kvs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            for kv in page {
                kvs.push(parse_kv(kv)?);
            }
            let more = v["more"].as_bool().unwrap_or(false);
            match kvs.last() {
                Some(last) if more => {
                    // The next page starts just after the last key read.
                    from = last.key.clone();
                    from.push(0);
                }
                _ => {
                    return Ok(Loaded {
                        kvs,
                        revision: at,
                        cluster_id,
                    })
                }
            }
        }
    }

    /// The writes `ops`, made only if `guard` was last modified at `guard_revision` (0:
    /// the key does not exist), in one transaction.
    pub fn txn_if_unmodified(
        &self,
        guard: &[u8],
        guard_revision: i64,
        ops: &[Op],
    ) -> Result<TxnOutcome, EtcdError> {
        let success: Vec<Value> = ops
            .iter()
            .map(|op| match op {
                Op::Put(k, v) => {
                    json!({"request_put": {"key": B64.encode(k), "value": B64.encode(v)}})
                }
                Op::Delete(k) => json!({"request_delete_range": {"key": B64.encode(k)}}),
            })
            .collect();
        let req = json!({
            "compare": [{
                "target": "MOD",
                "key": B64.encode(guard),
                "result": "EQUAL",
                "mod_revision": guard_revision.to_string(),
            }],
            "success": success,
            // Otherwise: where the guard is now, which the caller must catch up with.
            "failure": [{"request_range": {"key": B64.encode(guard)}}],
        });
        let v = self.post("/v3/kv/txn", &req)?;
        let succeeded = v["succeeded"].as_bool().unwrap_or(false);
        let guard_revision = if succeeded {
            0
        } else {
            let kv = &v["responses"][0]["response_range"]["kvs"][0];
            int(&kv["mod_revision"]).unwrap_or(0)
        };
        Ok(TxnOutcome {
            succeeded,
            revision: header_revision(&v)?,
            guard_revision,
        })
    }

    /// The revision `key` was last modified at (0: it does not exist).
    pub fn mod_revision(&self, key: &[u8]) -> Result<i64, EtcdError> {
        let v = self.post(
            "/v3/kv/range",
            &json!({"key": B64.encode(key), "keys_only": true}),
        )?;
        Ok(int(&v["kvs"][0]["mod_revision"]).unwrap_or(0))
    }

    /// Puts without a condition (tools and tests).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, EtcdError> {
        let v = self.post(
            "/v3/kv/put",
            &json!({"key": B64.encode(key), "value": B64.encode(value)}),
        )?;
        header_revision(&v)
    }

    /// Watches every key under `prefix` from `start_revision` on. The stream's reads
    /// wait at most `idle` for the next message (then [`Watch::next_events`] says
    /// [`WatchError::Idle`], and the caller may watch again from where it was).
    pub fn watch(
        &self,
        prefix: &[u8],
        start_revision: i64,
        idle: Duration,
    ) -> Result<Watch, EtcdError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(self.timeout)
            .timeout_read(idle)
            .build();
        let req = json!({"create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
        }});
        let (resp, member) = self.post_with(&agent, "/v3/watch", &req)?;
        let member = self.members.get(member).cloned().unwrap_or_default();
        let mut w = Watch {
            lines: BufReader::new(Box::new(resp.into_reader())),
            member,
            revision: 0,
            cluster_id: String::new(),
        };
        // The first message confirms the watch, with the store's revision and the
        // cluster's id as of now: what the caller checks its own position against.
        let v = w.message().map_err(|e| match e {
            WatchError::Idle => {
                EtcdError::Unreachable(format!("{}: no answer to the watch request", w.member))
            }
            WatchError::Etcd(e) => e,
        })?;
        if !v["result"]["created"].as_bool().unwrap_or(false) {
            return Err(EtcdError::Protocol(format!(
                "the watch was not confirmed: {}",
                cut(&v.to_string())
            )));
        }
        w.revision = header_revision(&v["result"])?;
        w.cluster_id = v["result"]["header"]["cluster_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        Ok(w)
    }
}

/// Why a watch stopped.
#[derive(Debug)]
pub enum WatchError {
    /// Nothing arrived for the idle time: the stream may be fine, or its member hung.
    Idle,
    /// The stream ended or failed, or etcd cancelled the watch.
    Etcd(EtcdError),
}

/// A watch stream: one JSON message per line.
pub struct Watch {
    lines: BufReader<Box<dyn Read + Send + Sync>>,
    /// The member it reads from.
    pub member: String,
    /// The store's revision when the watch was created.
    pub revision: i64,
    /// The cluster's id.
    pub cluster_id: String,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("member", &self.member)
            .finish()
    }
}

impl Watch {
    /// The next changes, in revision order (one message may carry several revisions,
    /// never part of one), skipping the watch's confirmation and progress messages.
    pub fn next_events(&mut self) -> Result<Vec<Event>, WatchError> {
        loop {
            let v = self.message()?;
            let r = &v["result"];
            let compacted = int(&r["compact_revision"]).unwrap_or(0);
            if compacted > 0 {
                return Err(WatchError::Etcd(EtcdError::Compacted(compacted)));
            }
            if r["canceled"].as_bool().unwrap_or(false) {
                let why = r["cancel_reason"].as_str().unwrap_or("no reason given");
                return Err(WatchError::Etcd(EtcdError::Refused {
                    code: -1,
                    message: format!("watch cancelled: {why}"),
                }));
            }
            let Some(events) = r["events"].as_array() else {
                continue;
            };
            let mut out = Vec::with_capacity(events.len());
            for e in events {
                let kv = parse_kv(&e["kv"]).map_err(WatchError::Etcd)?;
                out.push(if e["type"].as_str() == Some("DELETE") {
                    Event::Delete {
                        key: kv.key,
                        mod_revision: kv.mod_revision,
                    }
                } else {
                    Event::Put(kv)
                });
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The next message of the stream (an error message as an error).
    fn message(&mut self) -> Result<Value, WatchError> {
        loop {
            let mut line = String::new();
            match self.lines.read_line(&mut line) {
                Ok(0) => {
                    return Err(WatchError::Etcd(EtcdError::Unreachable(format!(
                        "{}: the watch stream ended",
                        self.member
                    ))))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(WatchError::Idle)
                }
                Err(e) => {
                    return Err(WatchError::Etcd(EtcdError::Unreachable(format!(
                        "{}: {e}",
                        self.member
                    ))))
                }
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line).map_err(|e| {
                WatchError::Etcd(EtcdError::Protocol(format!("watch: {e}: {}", cut(line))))
            })?;
            if let Some(err) = v.get("error") {
                let code = err["grpc_code"]
                    .as_i64()
                    .or(err["code"].as_i64())
                    .unwrap_or(-1);
                let message = err["message"].as_str().unwrap_or("").to_owned();
                return Err(WatchError::Etcd(EtcdError::Refused { code, message }));
            }
            return Ok(v);
        }
    }
}

/// The end of the range of keys starting with `prefix` (etcd's `range_end`): the prefix
/// with its last byte below 0xff incremented, the rest cut off.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): the range is to the end of the key space.
    vec![0]
}

fn refused(v: &Value) -> Result<(), EtcdError> {
    // The gateway's error body: {"error": "...", "code": N, "message": "..."}.
    match v.get("error") {
        None => Ok(()),
        Some(e) => Err(EtcdError::Refused {
            code: v["code"].as_i64().unwrap_or(-1),
            message: v["message"]
                .as_str()
                .or(e.as_str())
                .unwrap_or("")
                .to_owned(),
        }),
    }
}

/// An int64 of the gateway's JSON: a decimal string (or a number); absent is `None`.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn header_revision(v: &Value) -> Result<i64, EtcdError> {
    int(&v["header"]["revision"]).ok_or_else(|| {
        EtcdError::Protocol(format!("no header revision in {}", cut(&v.to_string())))
    })
}

fn bytes(v: &Value, what: &str) -> Result<Vec<u8>, EtcdError> {
    match v.as_str() {
        // Omitted: empty (the gateway leaves out default values).
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|e| EtcdError::Protocol(format!("{what} is not base64: {e}"))),
    }
}

fn parse_kv(v: &Value) -> Result<Kv, EtcdError> {
    Ok(Kv {
        key: bytes(&v["key"], "a key")?,
        value: bytes(&v["value"], "a value")?,
        create_revision: int(&v["create_revision"]).unwrap_or(0),
        mod_revision: int(&v["mod_revision"]).unwrap_or(0),
    })
}

/// At most 200 characters of `s`, for error messages.
fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/privlink/"), b"/privlink0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn kvs_and_errors_of_the_gateway_parse() {
        let kv = json!({"key": "L3BsL2E=", "create_revision": "2", "mod_revision": "5",
                        "version": "1", "value": "aGVsbG8="});
        assert_eq!(
            parse_kv(&kv).unwrap(),
            Kv {
                key: b"/pl/a".to_vec(),
                value: b"hello".to_vec(),
                create_revision: 2,
                mod_revision: 5
            }
        );
        // An empty value is left out by the gateway.
        assert!(parse_kv(&json!({"key": "YQ=="})).unwrap().value.is_empty());
        assert!(matches!(
            parse_kv(&json!({"key": "not base64!"})),
            Err(EtcdError::Protocol(_))
        ));
        let e = json!({"error": "etcdserver: too many operations in txn request", "code": 3,
                       "message": "etcdserver: too many operations in txn request"});
        assert_eq!(
            refused(&e),
            Err(EtcdError::Refused {
                code: 3,
                message: "etcdserver: too many operations in txn request".into()
            })
        );
        assert!(header_revision(&json!({"header": {}})).is_err());
        assert_eq!(
            header_revision(&json!({"header": {"revision": "42"}})),
            Ok(42)
        );
    }

    #[test]
    fn an_unreachable_cluster_is_said_to_be_so() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let c = Etcd::new(
            &["http://127.0.0.1:1".into(), "http://127.0.0.1:1/".into()],
            Duration::from_millis(500),
        );
        match c.load_prefix(b"/privlink/") {
            Err(EtcdError::Unreachable(e)) => assert!(e.contains("127.0.0.1:1"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
