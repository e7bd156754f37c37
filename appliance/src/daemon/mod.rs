//! `privlinkd`: EAL, ports, workers, snapshot publication, reload and clean shutdown.
//!
//! Start-up failures are fatal with a message that names what is wrong; nothing in here
//! runs on the packet path.

pub mod cluster;
pub mod flowlog;
pub mod ha;
pub mod health;
pub mod management;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod steering;
pub mod supervisor;
pub mod worker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use dpdk_bindings::lcore;
use dpdk_bindings::{port, ring, signal, time, DpdkError, Eal, LcoreId, Mempool, Port, PortConfig};
use mgmt::config::{Config, ConfigError};

use mgmt::persist::StateFile;
use mgmt::server::{Server, ServerConfig};
use mgmt::store::Store;

use crate::graph::counters::{Counters, DropReason, PublishedCounters, Stamped};
use crate::graph::PipelineSettings;
use crate::tables::flow::Timeouts;
use crate::tables::neighbour::{NeighbourTimers, SharedNeighbours};
use management::Management;

use crate::tables::snapshot::cell::SnapshotCell;
use crate::tables::snapshot::{BuildError, Handles, Snapshot};
use supervisor::{Fault, WorkerSet};
use worker::WorkerSetup;

/// Slots of each worker-to-worker handoff ring.
const HANDOFF_RING: u32 = 1024;
/// Usage reports each worker may have waiting for the management thread (one per sweep,
/// a sweep every 20 ms at most; the main loop takes them every 50 ms).
const REPORT_QUEUE: usize = 64;
/// Probe segments each worker may have waiting to be sent (and, times the workers, replies
/// waiting for the checker): a few intervals' worth of probes of 1,000 targets.
const PROBE_QUEUE: usize = 1024;
/// Flow records each worker may have waiting for the sync thread, and the sync thread
/// for each worker to install: a burst of new flows at the setup rate for tens of ms.
const HA_QUEUE: usize = 65536;
/// How long a worker may take to build its tables and complete its first loop.
const START_GRACE: Duration = Duration::from_secs(60);
/// How long stopping workers get to return before a stuck one is left to process exit.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug)]
pub enum DaemonError {
    /// The configuration is invalid (names the key).
    Config(ConfigError),
    /// A DPDK call failed during set-up.
    Dpdk(DpdkError),
    /// The object model could not be turned into a snapshot.
    Snapshot(BuildError),
    /// A worker lcore is unusable (not in the EAL core list, or the main lcore).
    Lcore(String),
    /// A worker died, stalled or never started (names it and its lcore).
    Worker(String),
    /// The saved state cannot be used (corrupt, unreadable, or no longer valid).
    State(String),
    /// The management socket could not be set up.
    Socket(String),
    /// Any other start-up problem.
    Setup(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Config(e) => write!(f, "configuration: {e}"),
            DaemonError::Dpdk(e) => write!(f, "DPDK: {e}"),
            DaemonError::Snapshot(e) => write!(f, "objects: {e}"),
            DaemonError::Lcore(e) => write!(f, "workers.lcores: {e}"),
            DaemonError::Worker(e) => write!(f, "{e}"),
            DaemonError::State(e) => write!(f, "state: {e}"),
            DaemonError::Socket(e) => write!(f, "management socket: {e}"),
            DaemonError::Setup(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<ConfigError> for DaemonError {
    fn from(e: ConfigError) -> Self {
        DaemonError::Config(e)
    }
}

impl From<DpdkError> for DaemonError {
    fn from(e: DpdkError) -> Self {
        DaemonError::Dpdk(e)
    }
}

impl From<BuildError> for DaemonError {
    fn from(e: BuildError) -> Self {
        DaemonError::Snapshot(e)
    }
}

/// Where the configuration came from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    Embedded,
    File(PathBuf),
    /// A file, as the HA node named (`privlinkd --ha-node NAME`: `[ha] node` of the file
    /// replaced, so both nodes of a pair can read one file).
    FileAsNode(PathBuf, String),
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::Embedded => Ok(Config::embedded_default()),
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::FileAsNode(p, node) => {
                let mut c = Config::load(p)?;
                match c.ha.as_mut() {
                    Some(ha) => ha.node = Some(node.clone()),
                    None => {
                        return Err(ConfigError::Invalid {
                            file: Some(p.clone()),
                            at: mgmt::model::KeyPath::new().key("ha"),
                            problem: mgmt::config::ConfigProblem::Empty,
                        })
                    }
                }
                c.validate().map_err(|e| e.in_file(p))?;
                Ok(c)
            }
        }
    }
}

/// The data-plane settings a configuration implies.
pub fn pipeline_settings(config: &Config, workers: u16) -> PipelineSettings {
    let t = &config.timeouts;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    PipelineSettings {
        workers,
        flow_capacity: config.tables.flows_per_worker as usize,
        timeouts: Timeouts {
            tcp_syn_ms: ms(t.tcp_syn),
            tcp_established_ms: ms(t.tcp_established),
            tcp_closing_ms: ms(t.tcp_closing),
            tcp_closed_ms: ms(t.tcp_closed),
            udp_ms: ms(t.udp),
            icmp_ms: ms(t.icmp),
        },
        neighbour_capacity: config.tables.neighbours as usize,
        neighbour_timers: NeighbourTimers {
            retry_ms: ms(t.arp_retry).max(1),
            tries: u8::try_from(t.arp_tries.clamp(1, 255)).unwrap_or(u8::MAX),
            ttl_ms: ms(t.neighbour_ttl),
            failed_hold_ms: ms(t.arp_retry).max(1) * 3,
        },
        hold_capacity: config.tables.arp_pending_packets as usize,
        expire_budget: 64,
        flow_hash_seed: 0,
        limits: flow_limits(config, workers),
        snat_quarantine: config.tables.snat_quarantine as usize,
        seed: None,
        fragment_datagrams: config.tables.fragment_datagrams as usize,
        fragments_held: config.tables.fragments_held as usize,
        fragment_timeout_ms: ms(t.fragment).max(1),
    }
}

/// Each worker's share of the appliance-wide `[limits]`: `⌈limit / workers⌉` (0 stays "no
/// limit").
pub fn flow_limits(config: &Config, workers: u16) -> crate::tables::limits::FlowLimits {
    let l = &config.limits;
    let n = u32::from(workers.max(1));
    let capacity = u64::from(config.tables.flows_per_worker) * u64::from(n);
    let share = |v: u32| v.div_ceil(n);
    crate::tables::limits::FlowLimits {
        flows_per_endpoint: share(l.flows_per_endpoint(capacity)),
        half_open_per_endpoint: share(l.half_open_per_endpoint(capacity)),
        flows_per_client: share(l.flows_per_client),
        half_open_per_client: share(l.half_open_per_client()),
    }
}

/// A secret seed for the target pick, drawn once per start and given to every worker
/// (see [`PipelineSettings::flow_hash_seed`]).
pub fn new_flow_hash_seed() -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0x5eed_u64)
}

/// The `--file-prefix` the EAL runs with (`rte` when none is given): what DPDK's
/// secondary processes (dpdk-dumpcap, dpdk-proc-info) and the telemetry client are given
/// to find this process.
fn file_prefix(args: &[String]) -> &str {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--file-prefix=") {
            return v;
        }
        if a == "--file-prefix" {
            if let Some(v) = it.next() {
                return v;
            }
        }
    }
    "rte"
}

/// The EAL arguments to use: the configured ones, plus `--no-huge -m 512` when the
/// configuration allows that fallback and this machine has no free hugepages.
pub fn eal_args(config: &Config) -> Vec<String> {
    let mut args = config.eal.args.clone();
    let asks_no_huge = args.iter().any(|a| a == "--no-huge");
    if config.eal.no_huge_fallback && !asks_no_huge && !hugepages_available() {
        log::warn!("no free hugepages (or hugetlbfs not mounted): running with --no-huge -m 512; run scripts/hugepages.sh for production speed");
        args.push("--no-huge".into());
        args.push("-m".into());
        args.push("512".into());
    }
    args
}

fn hugepages_available() -> bool {
    let free = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("HugePages_Free:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        })
        .unwrap_or(false);
    free >= 64 && mounted
}

/// Totals at exit, as logged and printed.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub workers: Vec<Counters>,
    pub total: Counters,
}

impl Totals {
    fn from_workers(workers: Vec<Counters>) -> Totals {
        let mut total = Counters::default();
        for w in &workers {
            total.add(w);
        }
        Totals { workers, total }
    }
}

/// Counters as one JSON object: the scalars, drops by reason, and per-worker copies.
pub fn counters_json(workers: &[Counters]) -> String {
    let mut total = Counters::default();
    for w in workers {
        total.add(w);
    }
    let one = |c: &Counters| {
        let mut s = String::from("{");
        for (i, (k, v)) in c.named().iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"{k}\":{v}"));
        }
        s.push_str(",\"drops\":{");
        for (i, r) in DropReason::ALL.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"{}\":{}", r.label(), c.dropped(*r)));
        }
        s.push_str("}}");
        s
    };
    let per: Vec<String> = workers.iter().map(one).collect();
    format!(
        "{{\"total\":{},\"workers\":[{}]}}",
        one(&total),
        per.join(",")
    )
}

/// Runs the daemon until SIGINT/SIGTERM; returns the totals.
pub fn run(source: ConfigSource) -> Result<Totals, DaemonError> {
    let config = source.load()?;
    let fault = Fault::from_env().map_err(DaemonError::Setup)?;
    if let Some(f) = fault {
        log::warn!(
            "test hook {}: worker {} will fail ({:?}) {} ms after it starts",
            supervisor::FAULT_ENV,
            f.worker,
            f.kind,
            f.after_ms
        );
    }
    signal::install_handlers().map_err(|e| DaemonError::Setup(format!("signal handlers: {e}")))?;

    // The saved objects come back before anything forwards; a corrupt file stops the
    // start (before any device is touched) and stays untouched for the operator.
    let (store, state_file, cluster_start) = match &config.cluster {
        None => {
            let (store, state_file) = open_state_file(&config)?;
            (store, state_file, None)
        }
        Some(c) => {
            let (store, start) = open_cluster(&config, c)?;
            (store, StateFile::new(&start.cache.dir()), Some(start))
        }
    };

    let args = eal_args(&config);
    log::info!("EAL arguments: {}", args.join(" "));
    let eal = Eal::init(&args)?;
    log::info!(
        "{} initialised, {} ports",
        dpdk_bindings::version(),
        eal.port_count()
    );

    let lcores = worker_lcores(&eal, &config)?;
    let n_workers =
        u16::try_from(lcores.len()).map_err(|_| DaemonError::Lcore("too many".into()))?;
    let socket = eal.lcore_socket(lcores[0]);
    let burst = config.workers.burst.max(1);

    // What cannot work is refused here, with the figures, before anything is created.
    let mut port_mtus = Vec::with_capacity(config.ports.len());
    for (i, pc) in config.ports.iter().enumerate() {
        let info = port::device_info(&pc.name)?;
        port_mtus.push(preflight::check_port(i, pc, &info, n_workers).map_err(DaemonError::Setup)?);
    }
    let data_room = preflight::data_room(&port_mtus).map_err(DaemonError::Setup)?;
    let pool_size =
        preflight::pool_size(&config, n_workers, HANDOFF_RING).map_err(DaemonError::Setup)?;
    let needs = preflight::Needs::of(&config, n_workers, pool_size, data_room)
        .map_err(DaemonError::Setup)?;
    preflight::check_memory(&needs, &preflight::Available::probe(&args))
        .map_err(DaemonError::Setup)?;
    let pool = Arc::new(Mempool::new("privlink", pool_size, 256, data_room, socket)?);
    log::info!(
        "mempool: {pool_size} mbufs of {data_room} bytes ({}); flow tables {} per worker",
        preflight::Bytes(needs.pool),
        preflight::Bytes(needs.flow_table)
    );

    let mut ports = Vec::with_capacity(config.ports.len());
    let mut macs = Vec::with_capacity(config.ports.len());
    let mut mtus = Vec::with_capacity(config.ports.len());
    for pc in &config.ports {
        let cfg = PortConfig {
            rx_queues: n_workers,
            tx_queues: n_workers,
            rx_desc: pc.rx_desc,
            tx_desc: pc.tx_desc,
            mtu: pc.mtu,
            rss: true,
            promiscuous: pc.promiscuous,
            // Frames longer than an mbuf then arrive, to be counted as too big.
            rx_scatter: true,
        };
        let mut port = Port::configure(&pc.name, &cfg, &pool)?;
        port.start()?;
        let mac = port.mac()?;
        log::info!(
            "port {} ({}): {} queues, mac {}",
            pc.name,
            port.driver().unwrap_or_default(),
            n_workers,
            crate::wire::ethernet::EthernetAddress(mac)
        );
        macs.push(mac);
        mtus.push(port.mtu()?);
        ports.push(port);
    }

    // dpdk-dumpcap attaches to this primary process through it. Not needed to forward:
    // without it (a DPDK built without pdump's multi-process channel) capture is off.
    let pdump = match dpdk_bindings::Pdump::init() {
        // A secondary process maps the primary's hugepage files; --no-huge memory is
        // private to this process, so dumpcap would fail with "Cannot get hugepage
        // information". Said once here rather than left to that message.
        Ok(p) if args.iter().any(|a| a == "--no-huge") => {
            log::warn!(
                "packet capture unavailable: dpdk-dumpcap cannot attach to a process running with --no-huge (run scripts/hugepages.sh and restart)"
            );
            Some(p)
        }
        Ok(p) => {
            log::info!(
                "packet capture: dpdk-dumpcap --file-prefix {} -i PORT attaches",
                file_prefix(&args)
            );
            Some(p)
        }
        Err(e) => {
            log::warn!("packet capture unavailable: {e}");
            None
        }
    };

    let mut handles = Handles::default();
    let first = Snapshot::build(1, &config, &macs, &mtus, store.state(), &mut handles)?;
    log::info!(
        "snapshot 1: {} attachments, {} services, {} endpoints",
        first.attachments.len(),
        first.service_count(),
        first.endpoint_count()
    );
    // Before the workers poll, so replies of declared services never need the ring.
    let mut steering = steering::Steering::start(
        &ports,
        n_workers,
        &steering::probes(&first, ports.len()),
        &steering::targets(&first),
        first.generation,
    );
    let cell = Arc::new(SnapshotCell::new(first, usize::from(n_workers)));

    let stop = Arc::new(AtomicBool::new(false));
    let published: Vec<Arc<PublishedCounters>> = (0..n_workers).map(|_| Arc::default()).collect();

    // Handoff rings: producers[from][to], consumers[to] collects all `from`s.
    let mut producers: Vec<Vec<Option<ring::Producer>>> = (0..n_workers)
        .map(|_| (0..n_workers).map(|_| None).collect())
        .collect();
    let mut consumers: Vec<Vec<ring::Consumer>> = (0..n_workers).map(|_| Vec::new()).collect();
    for (from, outs) in producers.iter_mut().enumerate() {
        for (to, slot) in outs.iter_mut().enumerate() {
            if from != to {
                let (p, c) = ring::spsc(&format!("plk-h{from}-{to}"), HANDOFF_RING, socket)?;
                *slot = Some(p);
                consumers[to].push(c);
            }
        }
    }

    let mut dpdk_to_index = vec![u16::MAX; 1024];
    for (i, p) in ports.iter().enumerate() {
        if let Some(slot) = dpdk_to_index.get_mut(usize::from(p.id().0)) {
            *slot = u16::try_from(i).unwrap_or(u16::MAX);
        }
    }

    let mut settings = pipeline_settings(&config, n_workers);
    settings.flow_hash_seed = new_flow_hash_seed();
    let announced = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut report_queues = Vec::with_capacity(lcores.len());
    let usage_wanted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // One neighbour table for all workers: an ARP reply on any queue is seen by all.
    let neighbours = SharedNeighbours::new(settings.neighbour_capacity, settings.neighbour_timers);
    let epoch_tsc = time::tsc();
    let hz_ms = (time::tsc_hz() / 1000).max(1);
    // Unix time at the workers' clock's 0, for the flow logs' start and end.
    let epoch_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let flow_log_queues: Vec<Arc<ArrayQueue<crate::graph::flowlog::FlowLogRecord>>> =
        match &config.flow_logs {
            Some(_) => (0..lcores.len())
                .map(|_| Arc::new(ArrayQueue::new(flowlog::QUEUE)))
                .collect(),
            None => Vec::new(),
        };
    let flow_log_interval_ms = config
        .flow_logs
        .as_ref()
        .map_or(0, |f| u64::from(f.interval_s) * 1000);
    let mut query_tx = Vec::with_capacity(lcores.len());
    let probe_queues = crate::health::link::ProbeQueues::new(lcores.len(), PROBE_QUEUE);
    let health_board = Arc::new(crate::health::Board::default());
    let ha_status: ha::HaStatus = Arc::default();
    let ha_queues = config
        .ha
        .as_ref()
        .map(|h| crate::ha::link::HaQueues::new(lcores.len(), HA_QUEUE, u64::from(h.heartbeat_ms)));
    let mut workers = WorkerSet::new(
        lcores.clone(),
        published.clone(),
        Arc::clone(&stop),
        Duration::from_millis(u64::from(config.workers.stall_timeout_ms)),
        START_GRACE,
    );
    // Every worker's set-up first: a failure here leaves nothing running.
    let mut setups = Vec::with_capacity(lcores.len());
    for i in 0..lcores.len() {
        let id = u16::try_from(i).unwrap_or(u16::MAX);
        let mut rx = Vec::with_capacity(ports.len());
        let mut tx = Vec::with_capacity(ports.len());
        for p in ports.iter_mut() {
            rx.push(p.rx_queue(id)?);
            tx.push(p.tx_queue(id)?);
        }
        setups.push(WorkerSetup {
            id,
            rx,
            tx,
            port_index: dpdk_to_index.clone(),
            handoff_out: std::mem::take(&mut producers[i]),
            handoff_in: std::mem::take(&mut consumers[i]),
            neighbours: neighbours.clone(),
            pool: Arc::clone(&pool),
            snapshot: cell.reader(i),
            published: Arc::clone(&published[i]),
            stop: Arc::clone(&stop),
            burst,
            idle_sleep: Duration::from_micros(u64::from(config.workers.idle_sleep_us)),
            settings: settings.clone(),
            queries: {
                let (tx, rx) = crossbeam::channel::bounded(4);
                query_tx.push(tx);
                rx
            },
            epoch_tsc,
            publish_every_ms: u64::from(config.mgmt.stats_interval_ms).min(100),
            announced: Arc::clone(&announced),
            reports: {
                let q = Arc::new(ArrayQueue::new(REPORT_QUEUE));
                report_queues.push(Arc::clone(&q));
                q
            },
            usage_wanted: Arc::clone(&usage_wanted),
            heartbeat: workers.heartbeat(i),
            port_mtu: mtus.clone(),
            fault: fault.filter(|f| usize::from(f.worker) == i),
            probes: probe_queues.link(i),
            ha: ha_queues.as_ref().and_then(|q| q.link(i)),
            flow_log: flow_log_queues
                .get(i)
                .map(|q| (Arc::clone(q), flow_log_interval_ms)),
        });
    }
    for (i, (setup, lc)) in setups.into_iter().zip(&lcores).enumerate() {
        match lcore::launch(*lc, move || worker::run(setup)) {
            Ok(h) => workers.push(h),
            Err(e) => {
                let _ = workers.stop(None, STOP_PATIENCE);
                return Err(e.into());
            }
        }
        log::info!("worker {i} running on {lc:?}");
    }
    // "Ready" means every worker polls: one that cannot build its tables stops the start.
    if let Err(f) = workers.wait_started(signal::stop_requested) {
        log::error!("{f}");
        let _ = workers.stop(Some(&f), STOP_PATIENCE);
        return Err(DaemonError::Worker(f.to_string()));
    }

    let mut cluster_watch = None;
    let telemetry = Arc::new(metrics::Telemetry::default());
    let mut control = Management::new(
        store,
        state_file,
        config.clone(),
        macs.clone(),
        mtus.clone(),
        handles,
        Arc::clone(&cell),
        1,
        management::DataPlane {
            queries: query_tx,
            published: published.clone(),
            announced,
            reports: report_queues,
            usage_wanted,
            clock: Arc::new(move || time::tsc().saturating_sub(epoch_tsc) / hz_ms),
            health: Arc::clone(&health_board),
            ha: ha_queues.as_ref().map(|_| ha_status.clone()),
            telemetry: Arc::clone(&telemetry),
            events: Arc::default(),
        },
    );
    let server_stop = Arc::new(AtomicBool::new(false));
    if let Some(start) = cluster_start {
        let (tx, rx) = crossbeam::channel::unbounded();
        control = control.with_cluster(management::ClusterLink {
            cluster: Arc::clone(&start.cluster),
            feed: rx,
            cache: start.cache,
            view: std::sync::Mutex::new(start.view),
        });
        match cluster::spawn(start.cluster, start.from, tx, Arc::clone(&server_stop)) {
            Ok(t) => cluster_watch = Some(t),
            Err(e) => {
                let _ = workers.stop(None, STOP_PATIENCE);
                return Err(DaemonError::Setup(format!("cluster watcher thread: {e}")));
            }
        }
    }
    let control = Arc::new(control);
    let accounts = Arc::clone(&control);
    let server = ServerConfig::from_mgmt(&config.mgmt).and_then(|cfg| {
        Server::bind(
            cfg,
            move |uid| accounts.caller_for_uid(uid),
            Arc::new(dpdk_bindings::os::peer_uid),
            Arc::clone(&control) as Arc<dyn mgmt::server::Handler>,
        )
    });
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            let _ = workers.stop(None, STOP_PATIENCE);
            return Err(DaemonError::Socket(e.to_string()));
        }
    };
    log::info!("management socket {}", config.mgmt.socket.display());
    let server_thread = server.run(Arc::clone(&server_stop));

    // The operator's threads: flow-log writer, metrics. A file or address they cannot
    // open stops the start with its reason (they were asked for).
    let operators = config
        .flow_logs
        .as_ref()
        .map(|f| {
            flowlog::spawn(
                f,
                flow_log_queues.clone(),
                Arc::clone(&cell),
                epoch_unix_ms,
                Arc::clone(&server_stop),
            )
        })
        .transpose()
        .and_then(|flow_log| {
            let metrics = config
                .metrics
                .as_ref()
                .map(|m| {
                    metrics::spawn(
                        m.listen,
                        Arc::clone(&control) as Arc<dyn metrics::Source>,
                        Arc::clone(&telemetry),
                        Arc::clone(&server_stop),
                    )
                })
                .transpose()?;
            Ok((flow_log, metrics))
        });
    let (flow_log_thread, metrics_thread) = match operators {
        Ok(t) => t,
        Err(e) => {
            server_stop.store(true, Ordering::SeqCst);
            let _ = server_thread.join();
            let _ = workers.stop(None, STOP_PATIENCE);
            return Err(DaemonError::Setup(e));
        }
    };
    log::info!("privlinkd ready");
    let stats_file = stats_path(&config);
    // The counters are sampled on a thread of their own: the main loop frees retired
    // snapshots (tens of ms for 100k endpoints), which must not leave holes in a 10 ms
    // stats log.
    let stats_thread = spawn_stats(
        &config,
        published.clone(),
        Arc::clone(&server_stop),
        (epoch_tsc, hz_ms),
    );
    let ha_thread = match (&config.ha, ha_queues) {
        (Some(cfg), Some(q)) => {
            match ha::spawn(
                cfg,
                q.clone(),
                Arc::clone(&ha_status),
                Arc::clone(&server_stop),
            ) {
                Ok(t) => Some((t, q.shared)),
                Err(e) => {
                    server_stop.store(true, Ordering::SeqCst);
                    let _ = server_thread.join();
                    let _ = workers.stop(None, STOP_PATIENCE);
                    return Err(DaemonError::Setup(e));
                }
            }
        }
        _ => None,
    };
    let health_thread = match health::spawn(
        Arc::clone(&cell),
        probe_queues,
        Arc::clone(&health_board),
        ha_thread.as_ref().map(|(_, s)| Arc::clone(s)),
        Arc::clone(&server_stop),
    ) {
        Ok(t) => t,
        Err(e) => {
            server_stop.store(true, Ordering::SeqCst);
            let _ = server_thread.join();
            let _ = workers.stop(None, STOP_PATIENCE);
            return Err(DaemonError::Setup(format!("health-check thread: {e}")));
        }
    };
    // The ports' counters for the metrics, read here once a second (the ports are the
    // main loop's; the metrics thread never calls into DPDK).
    let sample_ports = |telemetry: &metrics::Telemetry| {
        telemetry.set_ports(
            ports
                .iter()
                .filter_map(|p| {
                    p.stats().ok().map(|stats| metrics::PortSample {
                        name: p.name().to_owned(),
                        stats,
                    })
                })
                .collect(),
        );
    };
    if metrics_thread.is_some() {
        sample_ports(&telemetry);
    }
    let mut current = config;
    let mut last_tick = Instant::now();
    // The HA role last seen (an event when it changes).
    let mut ha_role = String::new();
    let mut failure = None;
    // Every worker polls (they started before the socket was bound) and the socket
    // listens: what systemd's Type=notify waits for.
    let mut notifier = notify::Notifier::from_env();
    let forwarding = format!("forwarding with {} worker(s)", current.workers.lcores.len());
    notifier.ready(&forwarding);
    if let Some(every) = notifier.watchdog_every() {
        log::info!(
            "service manager watchdog: fed every {:.1} s while every worker is alive",
            every.as_secs_f64()
        );
    }
    while !signal::stop_requested() {
        std::thread::sleep(Duration::from_millis(50));
        // A dead or stuck worker black-holes its queues and pins every old snapshot:
        // say which and exit non-zero, so a supervisor restarts us (an HA peer takes over).
        if let Err(f) = workers.check() {
            log::error!("{f}");
            failure = Some(f);
            break;
        }
        // Only a loop that found every worker alive feeds the watchdog: a main loop stuck
        // anywhere below starves it, and systemd restarts the service.
        notifier.alive(Instant::now());
        if signal::take_reload_request() {
            notifier.reloading();
            match reload(&source, &current) {
                Ok(next) => match control.reload(&next) {
                    Ok(notes) => {
                        for n in &notes {
                            log::info!("reload: {n}");
                        }
                        log::info!(
                            "reloaded: accounts, quotas and {} declared change(s) applied",
                            notes.len()
                        );
                        current = next;
                    }
                    Err(e) => log::error!("reload refused, nothing changed: {e}"),
                },
                Err(e) => log::error!("reload refused, nothing changed: {e}"),
            }
            notifier.reloaded(&forwarding);
        }
        let snap = cell.load();
        steering.follow(&ports, snap.generation, || steering::targets(&snap));
        drop(snap);
        cell.reclaim();
        control.collect_reports();
        control.follow_health();
        if ha_thread.is_some() {
            let role = ha_status
                .lock()
                .map(|v| v["Role"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            if role != ha_role {
                if !ha_role.is_empty() {
                    control.note_ha_role(&role, &ha_role);
                }
                ha_role = role;
            }
        }
        control.follow_cluster();
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            if metrics_thread.is_some() {
                sample_ports(&telemetry);
            }
            control.tick();
        }
    }
    notifier.stopping(match &failure {
        Some(_) => "a worker failed: stopping",
        None => "stopping",
    });
    server_stop.store(true, Ordering::SeqCst);
    let _ = server_thread.join();
    let _ = health_thread.join();
    if let Some(t) = metrics_thread {
        let _ = t.join();
    }
    if let Some(t) = flow_log_thread {
        let _ = t.join();
    }
    if let Some((t, _)) = ha_thread {
        let _ = t.join();
    }
    control.checkpoint();
    if let Some(t) = cluster_watch {
        // It may be inside a watch's read (up to its idle time): not worth waiting for,
        // it holds nothing that needs an orderly end.
        let end = Instant::now() + Duration::from_millis(200);
        while !t.is_finished() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
    if let Some(t) = stats_thread {
        let _ = t.join();
    }
    if failure.is_none() {
        log::info!(
            "signal {} received: stopping workers",
            signal::last_signal()
        );
    }
    let (results, trouble) = workers.stop(failure.as_ref(), STOP_PATIENCE);
    let totals = Totals::from_workers(results);
    steering.shutdown(&ports);
    if let Some(path) = &stats_file {
        write_stats(path, &counters_json(&totals.workers));
    }
    for p in ports.iter_mut() {
        if let Ok(s) = p.stats() {
            log::info!(
                "port {}: rx {} pkts, tx {} pkts, missed {}, rx errors {}, tx errors {}",
                p.name(),
                s.rx_packets,
                s.tx_packets,
                s.rx_missed,
                s.rx_errors,
                s.tx_errors
            );
        }
    }
    drop(pdump);
    drop(ports);
    drop(pool);
    drop(eal);
    match failure {
        Some(f) => Err(DaemonError::Worker(f.to_string())),
        None if !trouble.is_empty() => Err(DaemonError::Worker(trouble.join("; "))),
        None => Ok(totals),
    }
}

fn worker_lcores(eal: &Eal, config: &Config) -> Result<Vec<LcoreId>, DaemonError> {
    let main = eal.main_lcore();
    let mut out = Vec::with_capacity(config.workers.lcores.len());
    for &l in &config.workers.lcores {
        let id = LcoreId(l);
        if id == main {
            return Err(DaemonError::Lcore(format!(
                "lcore {l} is the EAL main lcore (it runs management); use another"
            )));
        }
        if !eal.lcore_enabled(id) {
            return Err(DaemonError::Lcore(format!(
                "lcore {l} is not enabled in the EAL arguments (-l/--lcores)"
            )));
        }
        if out.contains(&id) {
            return Err(DaemonError::Lcore(format!("lcore {l} listed twice")));
        }
        out.push(id);
    }
    if out.is_empty() {
        return Err(DaemonError::Lcore(
            "at least one worker lcore is needed".into(),
        ));
    }
    Ok(out)
}

/// Re-reads the configuration for a reload. Only the accounts, the quotas and the
/// declared services, endpoints and security groups can change at run time; a change to
/// any other section needs a restart, and is refused (naming the sections) rather than
/// silently ignored.
fn reload(source: &ConfigSource, current: &Config) -> Result<Config, DaemonError> {
    let next = source.load()?;
    let fixed = fixed_sections_changed(current, &next);
    if !fixed.is_empty() {
        return Err(DaemonError::Setup(format!(
            "{} cannot change at run time; restart privlinkd (or undo the edit)",
            fixed.join(", ")
        )));
    }
    Ok(next)
}

/// The sections of `next` that differ from `current` and cannot change at run time.
pub fn fixed_sections_changed(current: &Config, next: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            out.push(name);
        }
    };
    check("[eal]", current.eal == next.eal);
    check("[workers]", current.workers == next.workers);
    check("[[ports]]", current.ports == next.ports);
    check("[[vpcs]]", current.vpcs == next.vpcs);
    check("[mgmt]", current.mgmt == next.mgmt);
    check("[tables]", current.tables == next.tables);
    check("[timeouts]", current.timeouts == next.timeouts);
    check("[ha]", current.ha == next.ha);
    check("[metrics]", current.metrics == next.metrics);
    check("[flow_logs]", current.flow_logs == next.flow_logs);
    out
}

fn stats_path(config: &Config) -> Option<PathBuf> {
    config.mgmt.stats_file.clone()
}

/// A single node's store, from its state file (see the start in [`run`]).
fn open_state_file(config: &Config) -> Result<(Store, StateFile), DaemonError> {
    let state_file = StateFile::new(&config.mgmt.state_dir);
    let persisted = state_file
        .load()
        .map_err(|e| DaemonError::State(e.to_string()))?;
    if persisted.is_some() {
        log::info!("state restored from {}", state_file.path().display());
    }
    let had_state = persisted.is_some();
    // Changes are journaled against what the files hold, so the store must start from
    // exactly that; when it does not (the file's declarations applied, a baseline added),
    // a checkpoint of the store's state is written below.
    let loaded = persisted.clone();
    let (store, notes) = Store::new(config, persisted).map_err(|e| {
        if had_state {
            DaemonError::State(format!(
                "{}: the saved state cannot be used with this configuration ({e}); it was \
                 left untouched. Fix the configuration so that it fits the saved objects, or \
                 move the file aside (e.g. to {}.invalid) to start with an empty state",
                state_file.path().display(),
                state_file.path().display()
            ))
        } else {
            DaemonError::State(e.to_string())
        }
    })?;
    for n in &notes {
        log::info!("configuration: {n}");
    }
    if had_state && (!notes.is_empty() || loaded.as_ref() != Some(store.state())) {
        // What the file changed since it was last applied is in force from this start
        // on: save it with its new baseline, so the next start does not apply it again.
        state_file
            .save(store.state())
            .map_err(|e| DaemonError::State(e.to_string()))?;
    } else if !had_state {
        // Changes are journal records after a checkpoint; without one, the first change
        // would have to write the whole state on its request's path. Write it now. A
        // failure only means that the first change writes it.
        match state_file.save(store.state()) {
            Ok(()) => log::info!(
                "first checkpoint written to {}",
                state_file.path().display()
            ),
            Err(e) => log::warn!("no first checkpoint (the first change writes it): {e}"),
        }
    }

    Ok((store, state_file))
}

/// `privlinkd --import-state DIR`: the state saved in `DIR` (validated against the
/// configuration) written into the etcd of its `[cluster]`.
pub fn import_state(source: &ConfigSource, dir: &Path) -> Result<String, String> {
    let config = source.load().map_err(|e| e.to_string())?;
    let Some(c) = &config.cluster else {
        return Err("--import-state needs a configuration with [cluster]".into());
    };
    let state = StateFile::new(dir)
        .load()
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{}: no saved state there", dir.display()))?;
    Store::with_state(&config, state.clone())
        .map_err(|e| format!("the saved state cannot be used with this configuration: {e}"))?;
    let started = Instant::now();
    let keys = mgmt::cluster::Cluster::new(c).import(&state)?;
    Ok(format!(
        "imported {} services, {} endpoints, {} security groups ({keys} keys) into {} in {:.1} s",
        state.services.len(),
        state.endpoints.len(),
        state.security_groups.len(),
        c.prefix,
        started.elapsed().as_secs_f64()
    ))
}

/// What a cluster node starts with besides its store.
struct ClusterStart {
    cluster: Arc<mgmt::cluster::Cluster>,
    cache: mgmt::cluster::Cache,
    view: management::ClusterView,
    from: Option<cluster::Position>,
}

/// A cluster node's store: the fleet's state from etcd, or, when etcd cannot be reached,
/// from the local cache of the last state this node saw (or none at all). The
/// configuration's declarations are applied once etcd takes changes
/// ([`Management::follow_cluster`]).
fn open_cluster(
    config: &Config,
    cfg: &mgmt::config::ClusterConfig,
) -> Result<(Store, ClusterStart), DaemonError> {
    use mgmt::cluster::{Cache, Cluster, LoadError};
    let cluster = Arc::new(Cluster::new(cfg));
    let cache = Cache::new(&config.mgmt.state_dir);
    let cached = cache.load(&cfg.prefix).map_err(|e| {
        DaemonError::State(format!(
            "cluster cache: {e}; it was left untouched: move {} aside to start from etcd alone",
            cache.dir().display()
        ))
    })?;
    let mut view = management::ClusterView {
        declared_pending: true,
        ..Default::default()
    };
    let started = Instant::now();
    match cluster.load() {
        Ok(s) => {
            log::info!(
                "cluster: loaded {} from etcd in {:.0} ms",
                s.summary(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            view.loaded(s);
            if let Err(e) = cache.save(&view.mirror, &view.mark(&cfg.prefix)) {
                log::warn!("cluster: local cache not written: {e}");
            }
        }
        Err(LoadError::Etcd(e)) => {
            match &cached {
                Some((_, mark)) => log::warn!(
                    "cluster: {e}: starting from the local cache (revision {}); changes are refused until etcd answers",
                    mark.revision
                ),
                None => log::warn!(
                    "cluster: {e}, and there is no local cache: starting with no objects; changes are refused until etcd answers"
                ),
            }
            if let Some((state, mark)) = cached {
                view.cached(state, &mark);
            }
            view.down = Some(e.to_string());
        }
        Err(e @ LoadError::Layout(_)) => {
            let Some((state, mark)) = cached else {
                return Err(DaemonError::State(format!("cluster: {e}")));
            };
            log::error!("cluster: {e}: starting from the local cache");
            view.cached(state, &mark);
            view.unusable = Some(e.to_string());
        }
    }
    let store = Store::with_state(config, view.mirror.clone()).map_err(|e| {
        DaemonError::State(format!(
            "cluster: the fleet's state (revision {}) cannot be used with this configuration ({e}); \
             every node of a fleet needs the same VPC attachments",
            view.revision
        ))
    })?;
    let from = (view.revision > 0).then(|| cluster::Position {
        revision: view.revision,
        cluster_id: view.cluster_id.clone(),
    });
    Ok((
        store,
        ClusterStart {
            cluster,
            cache,
            view,
            from,
        },
    ))
}

/// Starts the thread that writes the stats file and the stats log every
/// `stats_interval_ms` until `stop`; None when neither is configured.
fn spawn_stats(
    config: &Config,
    published: Vec<Arc<PublishedCounters>>,
    stop: Arc<AtomicBool>,
    (epoch_tsc, hz_ms): (u64, u64),
) -> Option<std::thread::JoinHandle<()>> {
    let stats_file = stats_path(config);
    let mut stats_log = config.mgmt.stats_log.as_deref().and_then(StatsLog::open);
    if stats_file.is_none() && stats_log.is_none() {
        return None;
    }
    let every = Duration::from_millis(u64::from(config.mgmt.stats_interval_ms));
    let spawned = std::thread::Builder::new()
        .name("privlink-stats".into())
        .spawn(move || {
            let mut next = Instant::now() + every;
            while !stop.load(Ordering::SeqCst) {
                // Sleep to a fixed schedule, so the samples do not drift.
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                next = (next + every).max(Instant::now());
                let stamped: Vec<Stamped> = published.iter().map(|p| p.read_stamped()).collect();
                if let Some(path) = &stats_file {
                    let counters: Vec<Counters> =
                        stamped.iter().map(|s| s.counters.clone()).collect();
                    write_stats(path, &counters_json(&counters));
                }
                if let Some(log) = stats_log.as_mut() {
                    log.append(time::tsc().saturating_sub(epoch_tsc) / hz_ms, &stamped);
                }
            }
        });
    match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!("stats thread: {e}; no stats file or log");
            None
        }
    }
}

/// `[mgmt] stats_log`: one JSON line per worker and interval, appended.
struct StatsLog {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    /// Whether the last append failed (warn once per run of failures, keep trying).
    failing: bool,
}

impl StatsLog {
    fn open(path: &Path) -> Option<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        match file {
            Ok(f) => Some(Self {
                path: path.to_owned(),
                out: std::io::BufWriter::new(f),
                failing: false,
            }),
            Err(e) => {
                log::warn!("stats log {}: {e}; not written", path.display());
                None
            }
        }
    }

    /// `t_ms` is when these were read, `at_ms` when the worker published them (both ms
    /// since the daemon's epoch): rates come from consecutive `at_ms`.
    fn append(&mut self, t_ms: u64, workers: &[Stamped]) {
        use std::io::Write;
        let mut result = Ok(());
        for (i, w) in workers.iter().enumerate() {
            let c = &w.counters;
            result = result.and_then(|()| {
                writeln!(
                    self.out,
                    "{{\"t_ms\":{t_ms},\"worker\":{i},\"at_ms\":{},\"generation\":{},\"rx_packets\":{},\"tx_packets\":{},\"new_flows\":{},\"active_flows\":{},\"drops\":{}}}",
                    w.at_ms,
                    w.generation,
                    c.rx_packets,
                    c.tx_packets,
                    c.new_flows,
                    c.active_flows,
                    c.total_drops()
                )
            });
        }
        match result.and_then(|()| self.out.flush()) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    log::warn!("stats log {}: {e}", self.path.display());
                }
                self.failing = true;
            }
        }
    }
}

fn write_stats(path: &Path, json: &str) {
    let tmp = path.with_extension("tmp");
    let ok = std::fs::write(&tmp, format!("{json}\n")).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        log::warn!("stats file {}: {e}", path.display());
    }
}
