//! The HA sync thread: one UDP socket on the sync link, the [`Election`] that decides this
//! node's role, and flow-state sync both ways ([`Sender`] for this node's flows while
//! active, [`Receiver`] for the peer's while standby), following the recipe in
//! `ha::reliable`. It writes the role the workers follow and reads and writes their record
//! queues; it never waits on a worker, and a worker never waits on it.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mgmt::config::HaConfig;
use serde_json::{json, Value};

use crate::ha::link::{HaQueues, ACTIVE, STANDBY};
use crate::ha::record::FlowRecord;
use crate::ha::reliable::{BootSeen, PeerBoot, Receiver, Sender, Verdict};
use crate::ha::role::{Election, Node, Role};
use crate::ha::wire::{self, FlowsBuilder, Header, Message, WireError};

/// The test hook: while this file exists, every sync datagram is dropped both ways (a cut
/// sync link).
pub const CUT_ENV: &str = "PRIVLINK_HA_TEST_CUT";
/// Datagrams the sender keeps unacknowledged (~2.4M records): beyond, the peer needs a
/// bulk copy.
const SEND_WINDOW: usize = 100_000;
/// How often a standby that lacks a full copy asks for one.
const BULK_REQUEST_EVERY_MS: u64 = 2000;
/// The loop's pause when it had nothing to do.
const IDLE: Duration = Duration::from_millis(1);

/// What `stats` shows of the pair.
pub type HaStatus = Arc<Mutex<Value>>;

/// Binds the sync socket and starts the thread. A socket that cannot be bound fails the
/// start (the node would otherwise think its peer dead and take over).
pub fn spawn(
    cfg: &HaConfig,
    queues: HaQueues,
    status: HaStatus,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let me = cfg.me().ok_or("ha: this node is not one of ha.nodes")?;
    let peer = 1 - me;
    let key = cfg.key_bytes()?;
    let socket = UdpSocket::bind(cfg.nodes[me].sync)
        .map_err(|e| format!("ha: sync socket {}: {e}", cfg.nodes[me].sync))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("ha: sync socket: {e}"))?;
    let node = |i: usize| Node {
        index: u8::try_from(i).unwrap_or(u8::MAX),
        priority: cfg.nodes[i].priority,
        name: cfg.nodes[i].name.clone(),
    };
    let now = Instant::now();
    let sync = Sync {
        socket,
        peer_addr: cfg.nodes[peer].sync,
        peer_index: u8::try_from(peer).unwrap_or(u8::MAX),
        key,
        hdr: Header {
            node: u8::try_from(me).unwrap_or(u8::MAX),
            boot: crate::daemon::new_flow_hash_seed() | 1,
        },
        election: Election::new(
            node(me),
            node(peer),
            cfg.preempt,
            u64::from(cfg.heartbeat_ms),
            cfg.dead_after,
            0,
        ),
        heartbeat_ms: u64::from(cfg.heartbeat_ms),
        sender: Sender::new(SEND_WINDOW, u64::from(cfg.heartbeat_ms).max(20)),
        receiver: Receiver::new(),
        peer_boot: PeerBoot::new(),
        queues,
        status,
        epoch: now,
        counter: 0,
        bulk: None,
        bulk_done_seq: None,
        next_heartbeat_ms: 0,
        next_bulk_request_ms: 0,
        acked_sent: 0,
        last_claims: 0,
        peer_was_active: false,
        next_announce_again_ms: 0,
        announce_pending: false,
        cut: std::env::var_os(CUT_ENV).map(PathBuf::from),
        counts: Counts::default(),
    };
    log::info!(
        "ha: node {} ({}), peer {} at {}; starting standby",
        cfg.nodes[me].name,
        cfg.nodes[me].sync,
        cfg.nodes[peer].name,
        cfg.nodes[peer].sync
    );
    std::thread::Builder::new()
        .name("privlink-ha".into())
        .spawn(move || sync.run(&stop))
        .map_err(|e| format!("ha: sync thread: {e}"))
}

#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    received: u64,
    refused: [u64; WireError::COUNT],
    send_errors: u64,
    records_out: u64,
    records_in: u64,
    import_full: u64,
}

struct Sync {
    socket: UdpSocket,
    peer_addr: SocketAddr,
    peer_index: u8,
    key: Vec<u8>,
    hdr: Header,
    election: Election,
    heartbeat_ms: u64,
    sender: Sender,
    receiver: Receiver,
    peer_boot: PeerBoot,
    queues: HaQueues,
    status: HaStatus,
    epoch: Instant,
    counter: u64,
    /// The bulk copy under way for the peer (its epoch).
    bulk: Option<u64>,
    /// The last copy's final seq, repeated with heartbeats until the peer is in sync.
    bulk_done_seq: Option<u64>,
    next_heartbeat_ms: u64,
    next_bulk_request_ms: u64,
    acked_sent: u64,
    last_claims: u64,
    peer_was_active: bool,
    next_announce_again_ms: u64,
    announce_pending: bool,
    cut: Option<PathBuf>,
    counts: Counts,
}

impl Sync {
    fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let cut = self.cut.as_ref().is_some_and(|p| p.exists());
            let mut work = false;
            loop {
                match self.socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        work = true;
                        if !cut {
                            self.handle(&buf[..n], now, cut);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        log::debug!("ha: sync receive: {e}");
                        break;
                    }
                }
            }
            let claims = self.queues.shared.claims.load(Ordering::Relaxed);
            if claims != self.last_claims {
                self.last_claims = claims;
                self.election.on_data_path_claim(now);
                if self.role() == Role::Active {
                    self.announce_again();
                }
            }
            self.election.set_in_sync(self.receiver.in_sync());
            if let Some(t) = self.election.tick(now) {
                self.set_role(t.to, t.why);
            }
            self.announce_if_due(now);
            work |= self.export(now, cut);
            self.finish_bulk(now, cut);
            for (seq, records) in self.sender.due(now) {
                self.send(&Message::Flows { seq, records }, cut);
            }
            if self.sender.take_overflow() {
                log::warn!("ha: the peer fell too far behind; it needs a new bulk copy");
                self.bulk = None;
                self.bulk_done_seq = None;
                let seq = self.sender.resume_seq();
                self.send(&Message::Resync { seq }, cut);
            }
            if now >= self.next_heartbeat_ms {
                self.next_heartbeat_ms = now + self.heartbeat_ms;
                self.heartbeat(now, cut);
            }
            let acked = self.receiver.acked();
            if acked != self.acked_sent {
                self.acked_sent = acked;
                self.send(&Message::Ack { acked, nack: None }, cut);
            }
            if !work {
                std::thread::sleep(IDLE);
            }
        }
    }

    fn role(&self) -> Role {
        self.election.role()
    }

    /// Has worker 0 announce every address again (at most once a second; a request
    /// within the second is kept for its end), when this node stays active: the peer
    /// stepped down, or it outranks a peer that is active too (which steps down).
    fn announce_again(&mut self) {
        if self.election.me().outranks(self.election.peer()) {
            self.announce_pending = true;
        }
    }

    fn announce_if_due(&mut self, now: u64) {
        if self.announce_pending
            && now >= self.next_announce_again_ms
            && self.role() == Role::Active
        {
            self.announce_pending = false;
            self.next_announce_again_ms = now + 1000;
            self.queues
                .shared
                .announce_epoch
                .fetch_add(1, Ordering::AcqRel);
        }
    }

    fn set_role(&mut self, role: Role, why: &str) {
        let v = if role == Role::Active {
            ACTIVE
        } else {
            STANDBY
        };
        self.queues.shared.role.store(v, Ordering::Release);
        log::info!("ha: this node is now {} ({why})", role.as_str());
        if role == Role::Standby {
            self.bulk = None;
            self.bulk_done_seq = None;
            self.next_bulk_request_ms = 0;
        }
    }

    fn send(&mut self, msg: &Message, cut: bool) {
        if cut {
            return;
        }
        let d = wire::encode(msg, &self.hdr, &self.key);
        match self.socket.send_to(&d, self.peer_addr) {
            Ok(_) => self.counts.sent += 1,
            // The peer's socket is not there (it is down): heartbeats say when it is back.
            Err(_) => self.counts.send_errors += 1,
        }
    }

    fn handle(&mut self, d: &[u8], now: u64, cut: bool) {
        let (hdr, msg) = match wire::decode_from(d, &self.key, self.peer_index) {
            Ok(x) => x,
            Err(e) => {
                self.counts.refused[e.index()] += 1;
                if self.counts.refused[e.index()].is_power_of_two() {
                    log::warn!("ha: sync datagram refused: {e}");
                }
                return;
            }
        };
        self.counts.received += 1;
        match self.peer_boot.observe(hdr.boot) {
            BootSeen::Retired => return,
            BootSeen::Restarted => {
                log::info!("ha: the peer restarted");
                self.bulk = None;
                self.bulk_done_seq = None;
                let seq = self.sender.reset();
                self.send(&Message::Resync { seq }, cut);
            }
            BootSeen::First | BootSeen::Current => {}
        }
        match msg {
            Message::Heartbeat {
                counter,
                role,
                acked,
                in_sync,
                ..
            } => {
                self.election.on_heartbeat(hdr.boot, counter, role, now);
                // The peer spoke for our addresses (both active), or just stopped: hosts
                // may still send to its MAC, so announce everything again.
                let stepped_down = self.peer_was_active && role == Role::Standby;
                if self.role() == Role::Active {
                    if stepped_down {
                        self.announce_pending = true;
                    } else if role == Role::Active {
                        self.announce_again();
                    }
                }
                self.peer_was_active = role == Role::Active;
                self.sender.on_ack(acked);
                if in_sync {
                    self.bulk_done_seq = None;
                }
            }
            Message::Flows { seq, records } => match self.receiver.on_flows(hdr.boot, seq) {
                Verdict::Apply => self.import(&records),
                Verdict::Gap { expected } => {
                    let acked = self.receiver.acked();
                    self.send(
                        &Message::Ack {
                            acked,
                            nack: Some(expected),
                        },
                        cut,
                    );
                }
                _ => {}
            },
            Message::Ack { acked, nack } => {
                self.sender.on_ack(acked);
                if let Some(from) = nack {
                    let r = self.sender.on_nack(from, now);
                    if let Some(seq) = r.resync {
                        self.send(&Message::Resync { seq }, cut);
                    }
                    for (seq, records) in r.datagrams {
                        self.send(&Message::Flows { seq, records }, cut);
                    }
                }
            }
            Message::Resync { seq } => {
                self.receiver.on_resync(hdr.boot, seq);
            }
            Message::BulkDone { seq } => self.receiver.on_bulk_done(hdr.boot, seq),
            Message::BulkRequest => {
                if self.bulk.is_none() && self.role() == Role::Active {
                    let e = self.queues.shared.bulk_epoch.fetch_add(1, Ordering::AcqRel) + 1;
                    log::info!("ha: the peer asked for a copy of the flows");
                    self.bulk = Some(e);
                }
            }
        }
    }

    /// The peer's records, to the workers that own their flows.
    fn import(&mut self, records: &[FlowRecord]) {
        let n = self.queues.import.len();
        for r in records {
            self.counts.records_in += 1;
            let q = &self.queues.import[usize::from(r.worker) % n];
            if q.push(*r).is_err() {
                self.counts.import_full += 1;
            }
        }
    }

    /// This node's records, from every worker, in datagrams. Returns whether there were
    /// any.
    fn export(&mut self, now: u64, cut: bool) -> bool {
        let mut any = false;
        let mut b = FlowsBuilder::new();
        for i in 0..self.queues.export.len() {
            // Bounded: a worker exporting faster than the link is drained the next turn.
            for _ in 0..4096 {
                let Some(r) = self.queues.export[i].pop() else {
                    break;
                };
                any = true;
                if self.role() != Role::Active {
                    continue;
                }
                self.counts.records_out += 1;
                if let Some(batch) = b.push(r) {
                    self.flows(batch, now, cut);
                }
            }
        }
        if let Some(batch) = b.flush() {
            self.flows(batch, now, cut);
        }
        any
    }

    fn flows(&mut self, records: Vec<FlowRecord>, now: u64, cut: bool) {
        let seq = self.sender.push(records.clone(), now);
        self.send(&Message::Flows { seq, records }, cut);
    }

    /// When every worker finished the copy and its records left: `BulkDone`.
    fn finish_bulk(&mut self, _now: u64, cut: bool) {
        let Some(e) = self.bulk else {
            return;
        };
        let done = self
            .queues
            .bulk_done
            .iter()
            .all(|d| d.load(Ordering::Acquire) >= e);
        if !done || self.queues.export.iter().any(|q| !q.is_empty()) {
            return;
        }
        self.bulk = None;
        let seq = self.sender.last_seq();
        self.bulk_done_seq = Some(seq);
        log::info!("ha: copy of the flows sent (up to seq {seq})");
        self.send(&Message::BulkDone { seq }, cut);
    }

    fn heartbeat(&mut self, now: u64, cut: bool) {
        self.counter += 1;
        let msg = Message::Heartbeat {
            counter: self.counter,
            role: self.role(),
            priority: self.election.me().priority,
            acked: self.receiver.acked(),
            in_sync: self.receiver.in_sync(),
        };
        self.send(&msg, cut);
        if let Some(seq) = self.bulk_done_seq {
            self.send(&Message::BulkDone { seq }, cut);
        }
        if self.role() == Role::Standby
            && !self.receiver.in_sync()
            && self.election.peer_alive(now)
            && now >= self.next_bulk_request_ms
        {
            self.next_bulk_request_ms = now + BULK_REQUEST_EVERY_MS;
            self.send(&Message::BulkRequest, cut);
        }
        self.publish_status(now, cut);
    }

    fn publish_status(&self, now: u64, cut: bool) {
        let s = self.election.status(now);
        let refused: u64 = self.counts.refused.iter().sum();
        let v = json!({
            "Node": self.election.me().name,
            "Role": s.role.as_str(),
            "Peer": self.election.peer().name,
            "PeerRole": s.peer_role.map(Role::as_str),
            "PeerAlive": s.peer_alive,
            "HeartbeatAgeMs": s.heartbeat_age_ms,
            "InSync": self.receiver.in_sync(),
            "LastTransition": s.last_transition.map(|t| format!("{} ({})", t.to.as_str(), t.why)),
            "Transitions": s.transitions,
            "SyncLinkCut": cut,
            "Datagrams": {"Sent": self.counts.sent, "Received": self.counts.received,
                          "Refused": refused, "SendErrors": self.counts.send_errors},
            "Records": {"Sent": self.counts.records_out, "Received": self.counts.records_in,
                        "ImportQueueFull": self.counts.import_full},
            "Unacknowledged": self.sender.in_flight(),
        });
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
}
