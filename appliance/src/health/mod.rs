//! Target health: which targets of a listener take new flows.
//!
//! The checker runs on a thread of its own (`daemon::health`), never on a worker. It keeps
//! one record per (service, listener, target), probes each target once per interval from
//! the appliance's own address in the provider VPC (`probe.rs`: a TCP connect, or an HTTP
//! `GET`), and moves it between the cloud load balancer's states with its thresholds.
//! Workers only carry the probe's segments (`link.rs`): they send what the checker queued
//! and hand back what arrives on the probe ports, a bounded number per poll.
//!
//! A change of a target's state that changes where new flows go publishes a snapshot (the
//! [`Board`] says so to the management side), whose Maglev tables hold only the healthy
//! targets of each listener; see [`tier`] for the fail-open rule.

pub mod link;
pub mod probe;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use mgmt::model::ServiceId;

use link::{ProbeReply, ProbeSegment, PROBE_PORTS};
use probe::{Kind, Outcome, Probe};

/// One target of one listener of one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    pub service: ServiceId,
    /// The listener's protocol number and port.
    pub proto: u8,
    pub port: u16,
    /// The target's address and port.
    pub ip: std::net::IpAddr,
    pub target_port: u16,
}

/// A target's health state, spelt as the cloud's `TargetHealth.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initial,
    Healthy,
    Unhealthy,
    /// Registered with weight 0: takes no new flows, so it is not checked.
    Unused,
    /// Deregistered, its flows draining.
    Draining,
    /// The listener's checks are disabled: it takes flows as if healthy.
    Unavailable,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Unused => "unused",
            State::Draining => "draining",
            State::Unavailable => "unavailable",
        }
    }
}

/// Why a target is in its state, the cloud's `TargetHealth.Reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    InitialHealthChecking,
    Timeout,
    ResponseCodeMismatch,
    FailedHealthChecks,
    NotInUse,
    DeregistrationInProgress,
    HealthCheckDisabled,
}

impl Reason {
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::Timeout => "Target.Timeout",
            Reason::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::NotInUse => "Target.NotInUse",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Reason::HealthCheckDisabled => "Target.HealthCheckDisabled",
        }
    }
}

/// What `describe-target-health` says of a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    pub reason: Option<Reason>,
    pub description: String,
    /// When the state last changed, unix seconds.
    pub since: u64,
}

impl Health {
    fn new(
        state: State,
        reason: Option<Reason>,
        description: impl Into<String>,
        since: u64,
    ) -> Self {
        Health {
            state,
            reason,
            description: description.into(),
            since,
        }
    }

    fn initial(since: u64) -> Health {
        Health::new(
            State::Initial,
            Some(Reason::InitialHealthChecking),
            "Initial health checks in progress",
            since,
        )
    }
}

/// Which targets of a listener take new flows: those of the best tier present among the
/// ones that may take new flows at all. Healthy targets (and unchecked ones) first; while
/// none is, targets still in their initial checks; when every target is unhealthy, all of
/// them (fail open, as the cloud does: a check that fails everywhere is more likely wrong
/// than every target dead). `None` for states that take no new flows by configuration.
pub fn tier(state: State) -> Option<u8> {
    match state {
        State::Healthy | State::Unavailable => Some(0),
        State::Initial => Some(1),
        State::Unhealthy => Some(2),
        State::Unused | State::Draining => None,
    }
}

/// How the checker treats a target, from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Check(Check),
    Draining,
    Unused,
    Disabled,
}

/// One target's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The provider VPC's attachment and the appliance's own address there, of the
    /// target's family.
    pub attachment: u16,
    pub source: std::net::IpAddr,
    /// Where the probe connects.
    pub port: u16,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy: u8,
    pub unhealthy: u8,
    pub kind: Kind,
}

/// A target and how to treat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub key: TargetKey,
    pub mode: Mode,
}

/// A target's new health. `routing`: it changes which targets take new flows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: TargetKey,
    pub health: Health,
    pub routing: bool,
}

#[derive(Debug)]
struct Entry {
    mode: Mode,
    health: Health,
    passed: u8,
    failed: u8,
    due_ms: u64,
    probe: Option<Probe>,
}

/// What the checker produces in one step.
#[derive(Debug, Default)]
pub struct Output {
    pub segments: Vec<ProbeSegment>,
    pub changes: Vec<Change>,
    /// Targets no longer in any snapshot.
    pub gone: Vec<TargetKey>,
}

/// The health checker: schedules, probes, thresholds. Pure: time comes in as arguments
/// (`now_ms` a monotonic clock, `now_unix` for the times it reports), segments go out.
#[derive(Debug)]
pub struct Checker {
    entries: HashMap<TargetKey, Entry>,
    by_port: HashMap<u16, TargetKey>,
    next_port: u16,
    rng: u64,
}

impl Checker {
    pub fn new(seed: u64) -> Checker {
        Checker {
            entries: HashMap::new(),
            by_port: HashMap::new(),
            next_port: *PROBE_PORTS.start(),
            rng: seed | 1,
        }
    }

    /// The targets checked or described now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A target's health.
    pub fn health(&self, key: &TargetKey) -> Option<&Health> {
        self.entries.get(key).map(|e| &e.health)
    }

    /// Probes in flight.
    pub fn in_flight(&self) -> usize {
        self.by_port.len()
    }

    /// Takes in the targets of a new snapshot: new ones start `initial` (their first
    /// probe at a point of the interval their key picks, so checks spread evenly), a
    /// changed mode changes the state, vanished ones are forgotten.
    pub fn reconcile(&mut self, specs: &[Spec], now_ms: u64, now_unix: u64, out: &mut Output) {
        let mut seen: HashMap<TargetKey, ()> = HashMap::with_capacity(specs.len());
        for s in specs {
            seen.insert(s.key, ());
            match self.entries.get_mut(&s.key) {
                Some(e) => {
                    let was_checked = matches!(e.mode, Mode::Check(_));
                    let same_kind =
                        std::mem::discriminant(&e.mode) == std::mem::discriminant(&s.mode);
                    if let (Mode::Check(old), Mode::Check(new)) = (&e.mode, &s.mode) {
                        // A shorter interval applies from the next probe on.
                        if new.interval_ms < old.interval_ms {
                            e.due_ms = e.due_ms.min(now_ms + new.interval_ms);
                        }
                    }
                    e.mode = s.mode.clone();
                    if same_kind {
                        continue;
                    }
                    if was_checked {
                        cancel(e, &mut self.by_port, &mut out.segments);
                    }
                    let health = moded_health(&s.mode, now_unix);
                    if let Mode::Check(c) = &s.mode {
                        e.passed = 0;
                        e.failed = 0;
                        e.due_ms = now_ms + spread(&s.key, c.interval_ms);
                    }
                    set(e, s.key, health, out);
                }
                None => {
                    let (health, due_ms) = match &s.mode {
                        Mode::Check(c) => (
                            Health::initial(now_unix),
                            now_ms + spread(&s.key, c.interval_ms),
                        ),
                        m => (moded_health(m, now_unix), 0),
                    };
                    out.changes.push(Change {
                        key: s.key,
                        health: health.clone(),
                        routing: false,
                    });
                    self.entries.insert(
                        s.key,
                        Entry {
                            mode: s.mode.clone(),
                            health,
                            passed: 0,
                            failed: 0,
                            due_ms,
                            probe: None,
                        },
                    );
                }
            }
        }
        let by_port = &mut self.by_port;
        self.entries.retain(|k, e| {
            if seen.contains_key(k) {
                return true;
            }
            cancel(e, by_port, &mut out.segments);
            out.gone.push(*k);
            false
        });
    }

    /// Time passing: timeouts decided, retransmissions sent, due probes started.
    pub fn tick(&mut self, now_ms: u64, now_unix: u64, out: &mut Output) {
        let keys: Vec<TargetKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                matches!(e.mode, Mode::Check(_)) && (e.probe.is_some() || now_ms >= e.due_ms)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            let Mode::Check(check) = &e.mode else {
                continue;
            };
            if let Some(p) = e.probe.as_mut() {
                match p.on_timer(now_ms) {
                    Ok(Some(seg)) => out.segments.push(seg),
                    Ok(None) => {}
                    Err(outcome) => {
                        if p.connected() {
                            out.segments.push(p.abort());
                        }
                        self.by_port.remove(&p.local_port());
                        e.probe = None;
                        record(e, key, outcome, now_unix, out);
                    }
                }
                continue;
            }
            // Due: start a probe, and schedule the next one interval later (from now, if
            // the checker fell behind, so probes never bunch up).
            let interval = check.interval_ms.max(1);
            e.due_ms = if e.due_ms + interval > now_ms {
                e.due_ms + interval
            } else {
                now_ms + interval
            };
            let Some(port) = free_port(&mut self.next_port, &self.by_port) else {
                continue;
            };
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let isn = (self.rng >> 32) as u32;
            let (probe, syn) = Probe::start(
                check.attachment,
                check.source,
                port,
                key.ip,
                check.port,
                isn,
                check.kind.clone(),
                now_ms,
                check.timeout_ms,
            );
            self.by_port.insert(port, key);
            e.probe = Some(probe);
            out.segments.push(syn);
        }
    }

    /// Forgets the probes in flight without an outcome (they could not be answered: this
    /// node was standby), each target's next probe an interval from now at the latest.
    pub fn abandon_probes(&mut self, now_ms: u64) {
        self.by_port.clear();
        for e in self.entries.values_mut() {
            e.probe = None;
            if let Mode::Check(c) = &e.mode {
                e.due_ms = e.due_ms.min(now_ms + c.interval_ms);
            }
        }
    }

    /// A segment that arrived on a probe port.
    pub fn on_reply(&mut self, r: &ProbeReply, now_unix: u64, out: &mut Output) {
        let Some(&key) = self.by_port.get(&r.tcp.dst_port) else {
            return;
        };
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(p) = e.probe.as_mut() else {
            return;
        };
        let (seg, outcome) = p.on_reply(r);
        out.segments.extend(seg);
        if let Some(outcome) = outcome {
            self.by_port.remove(&r.tcp.dst_port);
            e.probe = None;
            record(e, key, outcome, now_unix, out);
        }
    }
}

/// Ends a probe in flight, with a RST if the target may hold a connection for it.
fn cancel(e: &mut Entry, by_port: &mut HashMap<u16, TargetKey>, segments: &mut Vec<ProbeSegment>) {
    if let Some(p) = e.probe.take() {
        by_port.remove(&p.local_port());
        segments.push(p.abort());
    }
}

/// The health a mode implies before any probe (or without probes).
fn moded_health(mode: &Mode, now_unix: u64) -> Health {
    match mode {
        Mode::Check(_) => Health::initial(now_unix),
        Mode::Draining => Health::new(
            State::Draining,
            Some(Reason::DeregistrationInProgress),
            "Target deregistration is in progress",
            now_unix,
        ),
        Mode::Unused => Health::new(
            State::Unused,
            Some(Reason::NotInUse),
            "Target has weight 0 and receives no new connections",
            now_unix,
        ),
        Mode::Disabled => Health::new(
            State::Unavailable,
            Some(Reason::HealthCheckDisabled),
            "Health checks are disabled",
            now_unix,
        ),
    }
}

/// What a target's health is before the checker has seen it (just registered): what its
/// configuration implies.
pub fn unchecked(l: &mgmt::model::Listener, t: &mgmt::model::Target, now_unix: u64) -> Health {
    let mode = if t.state == mgmt::model::TargetState::Draining {
        Mode::Draining
    } else if t.weight == 0 {
        Mode::Unused
    } else if !l.health_check_enabled {
        Mode::Disabled
    } else {
        return Health::initial(now_unix);
    };
    moded_health(&mode, now_unix)
}

/// Replaces `e`'s health, reporting the change.
fn set(e: &mut Entry, key: TargetKey, health: Health, out: &mut Output) {
    let routing = tier(e.health.state) != tier(health.state);
    e.health = health.clone();
    out.changes.push(Change {
        key,
        health,
        routing,
    });
}

/// Counts a probe's outcome against the thresholds.
fn record(e: &mut Entry, key: TargetKey, outcome: Outcome, now_unix: u64, out: &mut Output) {
    let Mode::Check(check) = &e.mode else {
        return;
    };
    let (healthy, unhealthy) = (check.healthy.max(1), check.unhealthy.max(1));
    let (reason, description) = match outcome {
        Outcome::Success => {
            e.failed = 0;
            e.passed = e.passed.saturating_add(1);
            if e.health.state != State::Healthy && e.passed >= healthy {
                set(e, key, Health::new(State::Healthy, None, "", now_unix), out);
            }
            return;
        }
        Outcome::Timeout => (Reason::Timeout, "Request timed out".to_owned()),
        Outcome::Mismatch(code) => (
            Reason::ResponseCodeMismatch,
            format!("Health checks failed with these codes: [{code}]"),
        ),
        Outcome::Failed(why) => (
            Reason::FailedHealthChecks,
            format!("Health checks failed: {why}"),
        ),
    };
    e.passed = 0;
    e.failed = e.failed.saturating_add(1);
    if e.health.state == State::Unhealthy {
        // Still unhealthy: only the reason may have changed (the time stays the change's).
        if e.health.reason != Some(reason) || e.health.description != description {
            let since = e.health.since;
            set(
                e,
                key,
                Health::new(State::Unhealthy, Some(reason), description, since),
                out,
            );
        }
    } else if e.failed >= unhealthy {
        set(
            e,
            key,
            Health::new(State::Unhealthy, Some(reason), description, now_unix),
            out,
        );
    }
}

/// Where in its interval a target's probes fall: a fixed point its key picks, so probes
/// of many targets spread evenly and a restart keeps each at its place.
fn spread(key: &TargetKey, interval_ms: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same place on every start.
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    crate::tables::maglev::mix64(h.finish()) % interval_ms.max(1)
}

/// The next probe port not in use, round robin over [`PROBE_PORTS`] (so a late segment of
/// an old probe is unlikely to meet a new one on its port).
fn free_port(next: &mut u16, used: &HashMap<u16, TargetKey>) -> Option<u16> {
    let span = usize::from(PROBE_PORTS.end() - PROBE_PORTS.start()) + 1;
    for _ in 0..span.min(used.len() + 1) {
        let p = *next;
        *next = if p == *PROBE_PORTS.end() {
            *PROBE_PORTS.start()
        } else {
            p + 1
        };
        if !used.contains_key(&p) {
            return Some(p);
        }
    }
    None
}

/// Health as the management side sees it: the checker thread writes, `describe-target-
/// health` and snapshot builds read, and a flag says a change moved new flows.
#[derive(Debug, Default)]
pub struct Board {
    health: Mutex<HashMap<TargetKey, Health>>,
    routing_changed: AtomicBool,
    /// State changes not yet taken for events, oldest first (at most [`CHANGES_KEPT`]).
    changes: Mutex<std::collections::VecDeque<(TargetKey, Health)>>,
}

/// State changes the board keeps for events between two looks of the management side
/// (every few tens of ms); beyond, the oldest are forgotten.
pub const CHANGES_KEPT: usize = 4096;

impl Board {
    /// Applies the checker's changes.
    pub fn apply(&self, changes: &[Change], gone: &[TargetKey]) {
        if changes.is_empty() && gone.is_empty() {
            return;
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let mut routing = false;
        let mut moved = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            routing |= c.routing;
            let before = h.insert(c.key, c.health.clone()).map(|b| b.state);
            if before != Some(c.health.state) {
                if moved.len() >= CHANGES_KEPT {
                    moved.pop_front();
                }
                moved.push_back((c.key, c.health.clone()));
            }
        }
        drop(moved);
        for k in gone {
            h.remove(k);
        }
        drop(h);
        if routing {
            self.routing_changed.store(true, Ordering::Release);
        }
    }

    /// A target's health, if the checker has seen it.
    pub fn get(&self, key: &TargetKey) -> Option<Health> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Every target's state, for a snapshot build.
    pub fn states(&self) -> HashMap<TargetKey, State> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, h)| (*k, h.state))
            .collect()
    }

    /// The state changes since the last call, oldest first.
    pub fn take_changes(&self) -> Vec<(TargetKey, Health)> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    /// Whether a change moved new flows since the last call (and forgets it).
    pub fn take_routing_change(&self) -> bool {
        self.routing_changed.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests;
