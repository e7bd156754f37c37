//! The health-check thread: runs the [`Checker`] against the published snapshot, moves
//! probe segments between it and the workers, and posts health to the [`Board`], whose
//! routing changes the main loop turns into a new snapshot. Off every worker: a probe
//! costs a worker only the segments it carries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ha::link::HaShared;
use crate::health::link::ProbeQueues;
use crate::health::{Board, Checker, Output};
use crate::tables::snapshot::cell::SnapshotCell;
use crate::tables::snapshot::Snapshot;

/// How often replies are taken from the workers (each is acted on at once).
const TICK: Duration = Duration::from_millis(5);
/// How often the checker walks its targets for due probes, resends and timeouts: well
/// below the shortest timeout (2 s) and the first resend (1 s), so neither is late by
/// more than this, and a tenth of the walks a 5 ms tick would make (10,000 targets cost
/// the thread ~2 % of a core, not ~20 %).
const SCHEDULE_EVERY_MS: u64 = 50;

/// Starts the thread; it returns when `stop` is set.
pub fn spawn(
    cell: Arc<SnapshotCell<Snapshot>>,
    queues: ProbeQueues,
    board: Arc<Board>,
    ha: Option<Arc<HaShared>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("privlink-health".into())
        .spawn(move || run(&cell, &queues, &board, ha.as_deref(), &stop))
}

fn run(
    cell: &SnapshotCell<Snapshot>,
    queues: &ProbeQueues,
    board: &Board,
    ha: Option<&HaShared>,
    stop: &AtomicBool,
) {
    let seed = crate::daemon::new_flow_hash_seed();
    let mut checker = Checker::new(seed);
    let epoch = Instant::now();
    let mut seen = 0u64;
    let mut unsent = 0u64;
    let mut out = Output::default();
    let mut standby = false;
    let mut next_schedule_ms = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now_ms = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let now_unix = mgmt::store::now_unix();
        {
            let snap = cell.load();
            if snap.generation != seen {
                seen = snap.generation;
                checker.reconcile(&snap.health_checks, now_ms, now_unix, &mut out);
            }
        }
        // A standby sends nothing (its workers drop what is queued): checks wait, and the
        // probes in flight are forgotten rather than counted as failures.
        if ha.is_some_and(|h| !h.is_active()) {
            while queues.replies.pop().is_some() {}
            if !standby {
                standby = true;
                checker.abandon_probes(now_ms);
            }
            out.segments.clear();
            board.apply(&out.changes, &out.gone);
            out.changes.clear();
            out.gone.clear();
            continue;
        }
        standby = false;
        while let Some(r) = queues.replies.pop() {
            checker.on_reply(&r, now_unix, &mut out);
        }
        if now_ms >= next_schedule_ms {
            next_schedule_ms = now_ms + SCHEDULE_EVERY_MS;
            checker.tick(now_ms, now_unix, &mut out);
        }
        for seg in out.segments.drain(..) {
            if !queues.send(seg) {
                // The worker is behind on its queue: the probe resends or times out.
                unsent += 1;
                if unsent.is_power_of_two() {
                    log::warn!(
                        "health checks: {unsent} probe segments found their worker's queue full"
                    );
                }
            }
        }
        for c in &out.changes {
            if c.routing {
                log::info!(
                    "target {} of {} {}/{} is {}{}",
                    std::net::SocketAddr::new(c.key.ip, c.key.target_port),
                    c.key.service,
                    proto_name(c.key.proto),
                    c.key.port,
                    c.health.state.as_str(),
                    c.health
                        .reason
                        .map(|r| format!(" ({}: {})", r.as_str(), c.health.description))
                        .unwrap_or_default()
                );
            }
        }
        board.apply(&out.changes, &out.gone);
        out.changes.clear();
        out.gone.clear();
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        _ => "?",
    }
}
