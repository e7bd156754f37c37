//! What a worker tells operators: usage per endpoint and per target, and lists of its
//! flows. Both are built off the packet path, a small budget per poll, so no management
//! request — however often any tenant sends it — ever makes a worker walk its flow table
//! inside one poll (measured: `scripts/bench.sh`, "queries under load": the 10 ms windows
//! of forwarding stay as they are while a client calls `stats` and `flows` back to back).
//!
//! The budget follows the worker's load: a poll that received a full burst's worth of
//! packets looks at [`SLOTS_BUSY`] flow slots (a fraction of the poll's own work), one
//! with slack at [`SLOTS_IDLE`].
//!
//! - Usage: the cumulative counters of each endpoint (new flows, drops by reason, what
//!   ended flows carried) change at flow creation, flow end and drops, never per packet;
//!   an endpoint whose counters changed is marked once. When the management thread wants
//!   usage (a `stats` or `describe-target-health`), each worker runs a *sweep*: it adds up
//!   the active flows, then copies the marked endpoints ([`CHANGED_PER_POLL`] per poll),
//!   and hands the management thread one [`UsageReport`]: the changed endpoints' counters
//!   (so a report's size follows activity, not the number of endpoints) and the active
//!   flows per endpoint and per target. No request, no sweep.
//! - Flow lists: one [`FlowQuery`] at a time is answered by a scan of the same budget per
//!   poll, keeping only flows the asker may see (filter first, then count), and answers
//!   when the table is walked or the list is full.

use crossbeam::channel::Sender;

use super::nat64::{consumer_addresses, provider_addresses, Side6};
use super::{tcp_state_name, FlowInfo, Frame, Pipeline, PROTO_TCP};
use crate::graph::counters::Drops;
use crate::tables::fasthash::{fast_map, FastMap};
use crate::tables::flow::Flow;

/// Flow slots a sweep or a listing looks at in a busy poll: about 0.1 µs of memory reads
/// next to the ~3 µs a full burst takes at 10 Mpps (16 slots measured a 10-30 % drop of
/// forwarding at that rate while a client called stats and flows back to back; 4 slots
/// none beyond the noise).
pub const SLOTS_BUSY: u32 = 4;
/// Flow slots a sweep or a listing looks at in a poll with slack.
pub const SLOTS_IDLE: u32 = 1024;
/// Packets received since the previous poll from which a poll counts as busy.
pub const BUSY_PACKETS: u64 = 16;
/// Changed endpoints a sweep copies per poll.
pub const CHANGED_PER_POLL: usize = 8;

/// Per-endpoint counters of one worker, cumulative since the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointUsage {
    pub new_flows: u64,
    /// Packets to the endpoint that were dropped, by reason (index: `DropReason as usize`).
    pub drops: Drops,
    /// Packets and bytes of this endpoint's flows that have ended.
    pub packets: u64,
    pub bytes: u64,
    /// This worker's live flows and half-open flows of the endpoint, for its limits.
    pub load: crate::tables::limits::Load,
}

/// What the active flows of one endpoint (or target) carry, as a sweep counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveUsage {
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

/// One completed sweep of one worker.
#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    pub worker: u16,
    /// When the sweep started and ended (worker clock, ms): everything that happened
    /// before `started_ms` is in it.
    pub started_ms: u64,
    pub finished_ms: u64,
    /// The endpoints whose counters changed since the previous report, with their
    /// cumulative values (a later report supersedes an earlier one per endpoint).
    pub changed: Vec<(u32, EndpointUsage)>,
    /// Active flows per endpoint handle (endpoints without any are left out).
    pub active: Vec<(u32, ActiveUsage)>,
    /// Active flows per (service handle, target ip, target port).
    pub targets: Vec<((u32, u32, u16), u64)>,
    /// Active flows per SNAT address: the ports in use there.
    pub snat: Vec<(u32, u64)>,
}

/// Which flows a listing may show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowFilter {
    /// Every flow (the admin).
    All,
    /// Flows of these endpoint handles (sorted).
    Endpoints(Vec<u32>),
}

impl FlowFilter {
    #[inline]
    fn admits(&self, endpoint: u32) -> bool {
        match self {
            Self::All => true,
            Self::Endpoints(v) => v.binary_search(&endpoint).is_ok(),
        }
    }
}

/// A request for a worker's flows.
#[derive(Debug)]
pub struct FlowQuery {
    pub filter: FlowFilter,
    pub max: usize,
    pub reply: Sender<Vec<FlowInfo>>,
}

/// The cumulative counters per endpoint and which changed since the last report.
#[derive(Debug)]
pub(super) struct Usage {
    map: FastMap<u32, (EndpointUsage, bool)>,
    changed: Vec<u32>,
}

impl Usage {
    pub(super) fn new() -> Self {
        Self {
            map: fast_map(64),
            changed: Vec::with_capacity(64),
        }
    }

    /// The counters of endpoint `h`, marked changed (created on first use: per new
    /// endpoint, not per packet).
    pub(super) fn entry(&mut self, h: u32) -> &mut EndpointUsage {
        let (u, marked) = self.map.entry(h).or_default();
        if !*marked {
            *marked = true;
            self.changed.push(h);
        }
        u
    }

    /// Every endpoint's counters (tests).
    #[cfg(test)]
    pub(super) fn all(&self) -> impl Iterator<Item = &EndpointUsage> {
        self.map.values().map(|(u, _)| u)
    }

    /// The counters of endpoint `h`, if it has any (a read: nothing is marked).
    pub(super) fn get(&self, h: u32) -> Option<&EndpointUsage> {
        self.map.get(&h).map(|(u, _)| u)
    }

    /// Adds an ended flow's packets and bytes to its endpoint's counters, which it
    /// returns.
    pub(super) fn fold(&mut self, f: &Flow) -> &mut EndpointUsage {
        let u = self.entry(f.endpoint);
        u.packets += u64::from(f.packets_fwd) + u64::from(f.packets_rev);
        u.bytes += f.bytes_fwd + f.bytes_rev;
        u
    }
}

#[derive(Debug)]
enum Phase {
    Flows(u32),
    Changed,
}

#[derive(Debug)]
struct Sweep {
    phase: Phase,
    report: UsageReport,
    active: FastMap<u32, ActiveUsage>,
    targets: FastMap<(u32, u32, u16), u64>,
    snat: FastMap<u32, u64>,
}

#[derive(Debug)]
struct Listing {
    query: FlowQuery,
    cursor: u32,
    found: Vec<FlowInfo>,
}

/// The report and listing work in progress.
#[derive(Debug, Default)]
pub(super) struct Reports {
    sweep: Option<Sweep>,
    /// The management thread wants a sweep that starts at this time or later (ms); 0:
    /// nothing wanted yet.
    wanted_ms: u64,
    /// When the last sweep started.
    last_start_ms: Option<u64>,
    done: Option<UsageReport>,
    listing: Option<Listing>,
    /// `rx_packets` at the previous poll, to tell a busy poll from one with slack.
    rx_at_last_poll: u64,
}

impl<F: Frame> Pipeline<F> {
    /// Starts answering `q` (a budget per poll from now on); gives it back when a listing
    /// is already under way (ask again after the next poll).
    pub fn start_listing(&mut self, q: FlowQuery) -> Result<(), FlowQuery> {
        if self.reports.listing.is_some() {
            return Err(q);
        }
        let found = Vec::with_capacity(q.max.min(4096));
        self.reports.listing = Some(Listing {
            query: q,
            cursor: 0,
            found,
        });
        Ok(())
    }

    /// The management thread wants usage as of `since_ms` (worker clock; 0 means nothing
    /// is wanted): a sweep starts at the next poll unless one started at or after that
    /// time already.
    pub fn want_report(&mut self, since_ms: u64) {
        self.reports.wanted_ms = self.reports.wanted_ms.max(since_ms);
    }

    /// A finished usage report, once per sweep.
    pub fn take_report(&mut self) -> Option<UsageReport> {
        self.reports.done.take()
    }

    /// Gives back a report that could not be handed on: it is offered again after the
    /// next poll, and no new sweep starts before (so no change is lost).
    pub fn put_back_report(&mut self, r: UsageReport) {
        self.reports.done = Some(r);
    }

    /// The budgeted report and listing work of one poll.
    pub(super) fn reports_some(&mut self, now_ms: u64) {
        let rx = self.counters.rx_packets;
        let busy = rx.saturating_sub(self.reports.rx_at_last_poll) >= BUSY_PACKETS;
        self.reports.rx_at_last_poll = rx;
        let budget = if busy { SLOTS_BUSY } else { SLOTS_IDLE };
        self.sweep_some(now_ms, budget);
        self.list_some(now_ms, budget);
    }

    fn sweep_some(&mut self, now_ms: u64, budget: u32) {
        if self.reports.sweep.is_none() {
            let w = self.reports.wanted_ms;
            let wanted = w > 0 && self.reports.last_start_ms.is_none_or(|t| t < w);
            if !wanted || self.reports.done.is_some() {
                return;
            }
            // The sweep starts after this worker saw the request, so it covers everything
            // the worker did before the request, whatever its clock read at the top of
            // this loop: it is stamped with the request's time at the earliest.
            let started_ms = now_ms.max(self.reports.wanted_ms);
            self.reports.last_start_ms = Some(started_ms);
            self.reports.sweep = Some(Sweep {
                phase: Phase::Flows(0),
                report: UsageReport {
                    worker: self.id,
                    started_ms,
                    ..UsageReport::default()
                },
                active: fast_map(64),
                targets: fast_map(64),
                snat: fast_map(8),
            });
        }
        let Some(sweep) = self.reports.sweep.as_mut() else {
            return;
        };
        match sweep.phase {
            Phase::Flows(start) => {
                let cap = u32::try_from(self.flows.capacity()).unwrap_or(u32::MAX);
                let end = start.saturating_add(budget).min(cap);
                for id in start..end {
                    let Some(f) = self.flows.get(id) else {
                        continue;
                    };
                    let a = sweep.active.entry(f.endpoint).or_default();
                    a.flows += 1;
                    a.packets += u64::from(f.packets_fwd) + u64::from(f.packets_rev);
                    a.bytes += f.bytes_fwd + f.bytes_rev;
                    *sweep
                        .targets
                        .entry((f.service, f.rev.src_ip, f.rev.src_port))
                        .or_default() += 1;
                    *sweep.snat.entry(f.rev.dst_ip).or_default() += 1;
                }
                sweep.phase = if end < cap {
                    Phase::Flows(end)
                } else {
                    Phase::Changed
                };
            }
            Phase::Changed => {
                let usage = &mut self.usage;
                let n = usage.changed.len().min(CHANGED_PER_POLL);
                for h in usage.changed.drain(..n) {
                    if let Some((u, marked)) = usage.map.get_mut(&h) {
                        *marked = false;
                        sweep.report.changed.push((h, *u));
                    }
                }
                if usage.changed.is_empty() {
                    let Some(mut done) = self.reports.sweep.take() else {
                        return;
                    };
                    done.report.finished_ms = now_ms;
                    done.report.active = done.active.into_iter().collect();
                    done.report.targets = done.targets.into_iter().collect();
                    done.report.snat = done.snat.into_iter().collect();
                    self.reports.done = Some(done.report);
                }
            }
        }
    }

    fn list_some(&mut self, now_ms: u64, budget: u32) {
        let Some(l) = self.reports.listing.as_mut() else {
            return;
        };
        let cap = u32::try_from(self.flows.capacity()).unwrap_or(u32::MAX);
        let end = l.cursor.saturating_add(budget).min(cap);
        for id in l.cursor..end {
            if l.found.len() >= l.query.max {
                break;
            }
            let Some(f) = self.flows.get(id) else {
                continue;
            };
            if l.query.filter.admits(f.endpoint) {
                let side = self.consumers6.get(id).copied();
                l.found.push(flow_info(self.id, f, side, now_ms));
            }
        }
        l.cursor = end;
        if end >= cap || l.found.len() >= l.query.max {
            if let Some(l) = self.reports.listing.take() {
                // The asker may have given up waiting; nothing to do then.
                let _ = l.query.reply.send(l.found);
            }
        }
    }
}

/// A flow as operators see it (before the management thread hides the other side);
/// `side` is its slot's IPv6 side, which only a flow of an IPv6 consumer has.
fn flow_info(worker: u16, f: &Flow, side: Option<Side6>, now_ms: u64) -> FlowInfo {
    let (consumer, endpoint_addr) = consumer_addresses(f, side);
    let (snat, target) = provider_addresses(f, side);
    FlowInfo {
        worker,
        endpoint: f.endpoint,
        service: f.service,
        proto: f.fwd.proto,
        consumer,
        endpoint_addr,
        snat,
        target,
        state: if f.fwd.proto == PROTO_TCP {
            tcp_state_name(f.tcp)
        } else {
            "active"
        },
        packets: u64::from(f.packets_fwd) + u64::from(f.packets_rev),
        bytes: f.bytes_fwd + f.bytes_rev,
        age_ms: now_ms.saturating_sub(f.created_ms),
        idle_ms: now_ms.saturating_sub(f.last_seen_ms),
    }
}
