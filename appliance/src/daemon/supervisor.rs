//! Watching the workers from the main thread: a worker that panics, returns or stops
//! making progress is found within the stall timeout, so the daemon can say which one and
//! exit with an error instead of black-holing that worker's queues (and pinning every
//! snapshot it never moves past) while it still says it is running.
//!
//! Each worker stores its loop count into its [`Heartbeat`] once per loop (one relaxed
//! store into a cache line of its own, nothing else); the main thread compares the counts
//! every few tens of milliseconds. A worker that has not completed its first loop yet is
//! given the start-up grace instead (it is still building its flow table).
//!
//! Also here: the test hook that makes a worker fail on purpose ([`Fault`]), read from the
//! environment once at start so that no worker looks at it on the packet path.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dpdk_bindings::{LaunchHandle, LcoreId};

use crate::graph::counters::{Counters, PublishedCounters, Stamped};

/// One worker's progress: its completed poll loops (0 until the first one).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    /// Called by the worker once per loop with its loop count.
    #[inline]
    pub fn beat(&self, loops: u64) {
        self.0.store(loops, Ordering::Relaxed);
    }

    pub fn loops(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// How a worker failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Its closure returned or panicked before it was told to stop (the caller joins it
    /// to learn which, and the panic message).
    Ended,
    /// No loop completed for this long.
    Stalled(Duration),
    /// It never completed its first loop within the start-up grace.
    NeverStarted(Duration),
}

#[derive(Debug)]
struct Watched {
    last: u64,
    since: Instant,
}

/// The main thread's view of every worker's heartbeat.
#[derive(Debug)]
pub struct Supervisor {
    watched: Vec<Watched>,
    stall: Duration,
    grace: Duration,
}

impl Supervisor {
    /// Watches `workers` workers from `now`: a running worker may go `stall` without a
    /// loop, one that has not started yet `grace`.
    pub fn new(workers: usize, stall: Duration, grace: Duration, now: Instant) -> Supervisor {
        Supervisor {
            watched: (0..workers)
                .map(|_| Watched {
                    last: 0,
                    since: now,
                })
                .collect(),
            stall,
            grace: grace.max(stall),
        }
    }

    /// Whether every worker has completed at least one loop.
    pub fn all_started(&self, beats: &[&Heartbeat]) -> bool {
        beats.iter().all(|b| b.loops() > 0)
    }

    /// The first failed worker, if any: `ended(i)` says whether worker `i`'s closure has
    /// returned (non-blocking).
    pub fn check(
        &mut self,
        now: Instant,
        beats: &[&Heartbeat],
        ended: impl Fn(usize) -> bool,
    ) -> Option<(usize, Failure)> {
        for (i, (w, beat)) in self.watched.iter_mut().zip(beats).enumerate() {
            if ended(i) {
                return Some((i, Failure::Ended));
            }
            let loops = beat.loops();
            if loops != w.last {
                w.last = loops;
                w.since = now;
                continue;
            }
            let quiet = now.saturating_duration_since(w.since);
            if loops == 0 && quiet > self.grace {
                return Some((i, Failure::NeverStarted(quiet)));
            }
            if loops > 0 && quiet > self.stall {
                return Some((i, Failure::Stalled(quiet)));
            }
        }
        None
    }
}

/// A worker found dead or stalled: what the daemon logs and exits with.
#[derive(Debug, Clone)]
pub struct WorkerFailure {
    pub worker: usize,
    pub lcore: LcoreId,
    /// `panicked: …`, `exited`, `stalled: …`, `did not start …`.
    pub what: String,
    /// Its last published counters (boxed: the failure travels in `Result`s).
    pub last: Box<Stamped>,
}

impl fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.last.counters;
        write!(
            f,
            "worker {} on lcore {} {}; its queues are no longer served. Last counters (published at {} ms): rx_packets {}, tx_packets {}, new_flows {}, active_flows {}, drops {}",
            self.worker,
            self.lcore.0,
            self.what,
            self.last.at_ms,
            c.rx_packets,
            c.tx_packets,
            c.new_flows,
            c.active_flows,
            c.total_drops()
        )
    }
}

/// The launched workers, watched by the main thread.
#[derive(Debug)]
pub struct WorkerSet {
    handles: Vec<Option<LaunchHandle<Counters>>>,
    lcores: Vec<LcoreId>,
    beats: Vec<Arc<Heartbeat>>,
    published: Vec<Arc<PublishedCounters>>,
    /// Final counters of workers already joined (one that ended early).
    results: Vec<Option<Counters>>,
    stop: Arc<AtomicBool>,
    supervisor: Supervisor,
}

impl WorkerSet {
    /// For workers on `lcores` publishing into `published`, told to stop by `stop`.
    pub fn new(
        lcores: Vec<LcoreId>,
        published: Vec<Arc<PublishedCounters>>,
        stop: Arc<AtomicBool>,
        stall: Duration,
        grace: Duration,
    ) -> WorkerSet {
        let n = lcores.len();
        WorkerSet {
            handles: Vec::with_capacity(n),
            beats: (0..n).map(|_| Arc::default()).collect(),
            results: vec![None; n],
            supervisor: Supervisor::new(n, stall, grace, Instant::now()),
            lcores,
            published,
            stop,
        }
    }

    /// Worker `i`'s heartbeat, to hand to it.
    pub fn heartbeat(&self, i: usize) -> Arc<Heartbeat> {
        Arc::clone(&self.beats[i])
    }

    /// Adds the next launched worker.
    pub fn push(&mut self, h: LaunchHandle<Counters>) {
        self.handles.push(Some(h));
    }

    /// The first worker that ended, stalled or never started, if any (never blocks).
    pub fn check(&mut self) -> Result<(), WorkerFailure> {
        let beats: Vec<&Heartbeat> = self.beats.iter().map(|b| &**b).collect();
        let handles = &self.handles;
        let ended = |i: usize| {
            handles
                .get(i)
                .and_then(Option::as_ref)
                .is_some_and(LaunchHandle::is_finished)
        };
        let Some((i, failure)) = self.supervisor.check(Instant::now(), &beats, ended) else {
            return Ok(());
        };
        let what = match failure {
            Failure::Ended => match self.handles.get_mut(i).and_then(Option::take) {
                Some(h) => match h.join() {
                    Ok(c) => {
                        self.results[i] = Some(c);
                        "exited without being told to stop".to_owned()
                    }
                    Err(payload) => format!("panicked: {}", panic_message(&*payload)),
                },
                None => "ended".to_owned(),
            },
            Failure::Stalled(d) => format!("stalled: no progress for {:.2} s", d.as_secs_f64()),
            Failure::NeverStarted(d) => {
                format!("did not start within {:.1} s", d.as_secs_f64())
            }
        };
        let mut last = self.published[i].read_stamped();
        if let Some(c) = &self.results[i] {
            last.counters = c.clone();
        }
        Err(WorkerFailure {
            worker: i,
            lcore: self.lcores[i],
            what,
            last: Box::new(last),
        })
    }

    /// Waits (up to the start-up grace) until every worker has completed its first loop,
    /// or until `interrupted()` (a stop signal: the caller then stops as usual).
    pub fn wait_started(&mut self, interrupted: impl Fn() -> bool) -> Result<(), WorkerFailure> {
        loop {
            self.check()?;
            let beats: Vec<&Heartbeat> = self.beats.iter().map(|b| &**b).collect();
            if self.supervisor.all_started(&beats) || interrupted() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops every worker and returns their final counters (the published copy for one
    /// that did not come back), with `worker_failures` counted on `failed`, and what went
    /// wrong while stopping (a panic, a worker that would not stop). A worker that does
    /// not return within `patience` (a stalled one) is left to process exit rather than
    /// waited for.
    pub fn stop(
        mut self,
        failed: Option<&WorkerFailure>,
        patience: Duration,
    ) -> (Vec<Counters>, Vec<String>) {
        let mut trouble = Vec::new();
        self.stop.store(true, Ordering::SeqCst);
        let end = Instant::now() + patience;
        let mut out = Vec::with_capacity(self.handles.len());
        for (i, slot) in self.handles.iter_mut().enumerate() {
            let mut counters = match slot.take() {
                Some(h) => {
                    // The failed worker (stalled, since it was not joined) is not waited for.
                    let failed_here = failed.is_some_and(|f| f.worker == i);
                    while !failed_here && !h.is_finished() && Instant::now() < end {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    if h.is_finished() {
                        match h.join() {
                            Ok(c) => c,
                            Err(payload) => {
                                trouble.push(format!(
                                    "worker {i} on lcore {} panicked while stopping: {}",
                                    self.lcores[i].0,
                                    panic_message(&*payload)
                                ));
                                self.published[i].read()
                            }
                        }
                    } else {
                        trouble.push(format!(
                            "worker {i} on lcore {} does not stop; left to process exit",
                            self.lcores[i].0
                        ));
                        // Joining would wait for ever; the process exit reclaims the lcore.
                        std::mem::forget(h);
                        self.published[i].read()
                    }
                }
                None => self.results[i]
                    .take()
                    .unwrap_or_else(|| self.published[i].read()),
            };
            if failed.is_some_and(|f| f.worker == i) {
                counters.worker_failures += 1;
            }
            out.push(counters);
        }
        for t in &trouble {
            log::error!("{t}");
        }
        (out, trouble)
    }
}

/// What a [`Fault`] makes its worker do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Panic.
    Panic,
    /// Stop polling for good (sleep forever, never looking at the stop flag).
    Stall,
    /// Return from its loop as if told to stop.
    Exit,
}

/// A test hook: worker `worker` fails in the way `kind` once it has run `after_ms`.
/// Set with `PRIVLINKD_TEST_FAULT="worker=1,kind=stall,after_ms=1500"`; read once at
/// start, checked by the worker only when it publishes its counters (at most every
/// 100 ms), never per packet. For the end-to-end tests of supervision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub worker: u16,
    pub kind: FaultKind,
    pub after_ms: u64,
}

/// The environment variable [`Fault::from_env`] reads.
pub const FAULT_ENV: &str = "PRIVLINKD_TEST_FAULT";

impl Fault {
    /// The fault `PRIVLINKD_TEST_FAULT` asks for, if set; an unreadable value is an error
    /// (a test that sets it wants it).
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(FAULT_ENV) {
            Ok(v) => Fault::parse(&v).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(format!("{FAULT_ENV}: {e}")),
        }
    }

    /// Parses `worker=N,kind=panic|stall|exit[,after_ms=M]`.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let bad = |what: &str| {
            format!("{FAULT_ENV}={s:?}: {what} (want worker=N,kind=panic|stall|exit,after_ms=M)")
        };
        let (mut worker, mut kind, mut after_ms) = (None, None, 0);
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| bad(part))?;
            match k.trim() {
                "worker" => worker = Some(v.trim().parse().map_err(|_| bad(part))?),
                "kind" => {
                    kind = Some(match v.trim() {
                        "panic" => FaultKind::Panic,
                        "stall" => FaultKind::Stall,
                        "exit" => FaultKind::Exit,
                        _ => return Err(bad(part)),
                    })
                }
                "after_ms" => after_ms = v.trim().parse().map_err(|_| bad(part))?,
                _ => return Err(bad(part)),
            }
        }
        Ok(Fault {
            worker: worker.ok_or_else(|| bad("no worker"))?,
            kind: kind.ok_or_else(|| bad("no kind"))?,
            after_ms,
        })
    }
}

/// The panic message in a payload from `catch_unwind` (or a placeholder).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_end_and_slow_start_are_told_apart() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let beats = [Heartbeat::default(), Heartbeat::default()];
        let refs: Vec<&Heartbeat> = beats.iter().collect();
        let mut s = Supervisor::new(2, ms(1000), ms(5000), t0);
        assert!(!s.all_started(&refs));
        // Still building their tables: only the grace applies.
        assert_eq!(s.check(t0 + ms(3000), &refs, |_| false), None);
        beats[0].beat(1);
        assert_eq!(s.check(t0 + ms(3000), &refs, |_| false), None);
        beats[0].beat(2);
        assert_eq!(
            s.check(t0 + ms(5001), &refs, |_| false),
            Some((1, Failure::NeverStarted(ms(5001))))
        );
        beats[1].beat(1);
        assert!(s.all_started(&refs));
        // Both running; worker 0 keeps beating, worker 1 stops at 5.1 s.
        let mut now = t0 + ms(5100);
        for i in 2..30u64 {
            now += ms(50);
            beats[0].beat(i);
            if i < 4 {
                beats[1].beat(i);
            }
            if let Some(f) = s.check(now, &refs, |_| false) {
                assert_eq!(f.0, 1);
                assert!(matches!(f.1, Failure::Stalled(d) if d > ms(1000) && d <= ms(1050)));
                break;
            }
            assert!(
                now < t0 + ms(5100 + 200 + 1000),
                "stall found within the timeout"
            );
        }
        // A worker whose closure returned is reported at once.
        assert_eq!(s.check(now, &refs, |i| i == 0), Some((0, Failure::Ended)));
    }

    #[test]
    fn fault_hook_parses_and_refuses_nonsense() {
        assert_eq!(
            Fault::parse("worker=1,kind=stall,after_ms=1500"),
            Ok(Fault {
                worker: 1,
                kind: FaultKind::Stall,
                after_ms: 1500
            })
        );
        assert_eq!(
            Fault::parse("kind=panic,worker=0").map(|f| (f.kind, f.after_ms)),
            Ok((FaultKind::Panic, 0))
        );
        for bad in [
            "",
            "worker=1",
            "kind=exit",
            "worker=x,kind=exit",
            "worker=1,kind=melt",
            "worker=1,kind=exit,color=red",
        ] {
            assert!(Fault::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn panic_messages_are_read() {
        let r = std::panic::catch_unwind(|| panic!("flow table too big: {}", 3));
        assert_eq!(panic_message(&*r.unwrap_err()), "flow table too big: 3");
        let r = std::panic::catch_unwind(|| panic!("plain"));
        assert_eq!(panic_message(&*r.unwrap_err()), "plain");
    }
}
