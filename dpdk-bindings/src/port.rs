//! Ethernet ports: configuration, queues, bursts, link and statistics.

use std::ffi::{CStr, CString};
use std::fmt;
use std::sync::Arc;

use crate::eal::EalToken;
use crate::error::DpdkError;
use crate::ffi;
use crate::lcore::SocketId;
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;

/// An ethdev port id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

impl fmt::Debug for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// A queue index on a port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(pub u16);

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "q{}", self.0)
    }
}

// RSS hash types (rte_ethdev.h defines them with RTE_BIT64, which bindgen cannot evaluate).
const RSS_IPV4: u64 = 1 << 2;
const RSS_FRAG_IPV4: u64 = 1 << 3;
const RSS_NONFRAG_IPV4_TCP: u64 = 1 << 4;
const RSS_NONFRAG_IPV4_UDP: u64 = 1 << 5;
const RSS_NONFRAG_IPV4_OTHER: u64 = 1 << 7;
const RSS_IPV6: u64 = 1 << 8;
const RSS_NONFRAG_IPV6_TCP: u64 = 1 << 10;
const RSS_NONFRAG_IPV6_UDP: u64 = 1 << 11;
/// IPv4/IPv6 addresses and TCP/UDP ports: spreads flows, keeps each flow on one queue.
pub const RSS_DEFAULT: u64 = RSS_IPV4
    | RSS_FRAG_IPV4
    | RSS_NONFRAG_IPV4_TCP
    | RSS_NONFRAG_IPV4_UDP
    | RSS_NONFRAG_IPV4_OTHER
    | RSS_IPV6
    | RSS_NONFRAG_IPV6_TCP
    | RSS_NONFRAG_IPV6_UDP;

// Offload bits (RTE_BIT64 again).
const RX_OFFLOAD_SCATTER: u64 = 1 << 13;
/// Ethernet header and CRC: what ethdev adds to an MTU when a device does not say.
const DEFAULT_OVERHEAD: u32 = 14 + 4;

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_desc: u16,
    pub tx_desc: u16,
    /// `None` keeps the device's MTU. Checked against [`DeviceInfo::mtu_range`].
    pub mtu: Option<u16>,
    /// Spread received flows over the RX queues by RSS (when there is more than one).
    pub rss: bool,
    pub promiscuous: bool,
    /// Receive a frame longer than one mbuf as a chain of them, where the device can:
    /// such a frame then arrives (for the caller to count) instead of being dropped
    /// unseen inside the driver.
    pub rx_scatter: bool,
}

/// What a device can do, from `rte_eth_dev_info_get` (before or after configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The driver's name (`net_tap`, `net_ixgbe`, …).
    pub driver: String,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    /// Hash types it can spread received flows on; 0 = no RSS.
    pub rss_offloads: u64,
    /// Its current MTU.
    pub mtu: u16,
    pub min_mtu: u16,
    /// The largest MTU it takes: its own limit, and its longest frame less its overhead.
    pub max_mtu: u16,
    /// Its longest receivable frame, in bytes.
    pub max_rx_frame: u32,
    /// It can receive one frame into several mbufs.
    pub rx_scatter: bool,
}

impl DeviceInfo {
    /// Whether it can spread flows over several RX queues by RSS.
    pub fn has_rss(&self) -> bool {
        self.rss_offloads & RSS_DEFAULT != 0
    }

    /// The MTUs it accepts.
    pub fn mtu_range(&self) -> std::ops::RangeInclusive<u16> {
        self.min_mtu..=self.max_mtu
    }

    /// `net_tap: MTU 46..=1504 (frames up to 1522 bytes)`.
    pub fn describe_mtu(&self) -> String {
        format!(
            "{}: MTU {}..={} (frames up to {} bytes)",
            self.driver, self.min_mtu, self.max_mtu, self.max_rx_frame
        )
    }
}

/// What the device named `name` can do (the EAL must be up, the port probed).
pub fn device_info(name: &str) -> Result<DeviceInfo, DpdkError> {
    let id = port_by_name(name)?;
    let info = raw_device_info(id, name)?;
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: non-null driver_name points to the driver's static name string.
        unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut mtu = 0u16;
    // SAFETY: valid port id and out-pointer.
    let rc = unsafe { ffi::rte_eth_dev_get_mtu(id.0, &mut mtu) };
    DpdkError::check(|| format!("rte_eth_dev_get_mtu({name})"), rc)?;
    // As ethdev's own check (eth_dev_validate_mtu): the frame an MTU makes is the MTU plus
    // the device's overhead, which is what its max frame and max MTU differ by, when it
    // states both, and Ethernet header plus CRC otherwise.
    let overhead = if info.max_mtu != u16::MAX && info.max_rx_pktlen > u32::from(info.max_mtu) {
        info.max_rx_pktlen - u32::from(info.max_mtu)
    } else {
        DEFAULT_OVERHEAD
    };
    let by_frame = u16::try_from(info.max_rx_pktlen.saturating_sub(overhead)).unwrap_or(u16::MAX);
    Ok(DeviceInfo {
        driver,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_offloads: info.flow_type_rss_offloads,
        mtu,
        min_mtu: info.min_mtu,
        max_mtu: info.max_mtu.min(by_frame),
        max_rx_frame: info.max_rx_pktlen,
        rx_scatter: info.rx_offload_capa & RX_OFFLOAD_SCATTER != 0,
    })
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            mtu: None,
            rss: true,
            promiscuous: true,
            rx_scatter: false,
        }
    }
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    /// Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Basic port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Dropped by the NIC because no RX descriptor was free.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// RX failures for lack of mbufs.
    pub rx_no_mbuf: u64,
}

/// Shared by a port, its queues and its flow rules: the device is stopped and closed when the last one
/// goes, so a worker never bursts on a closed port.
#[derive(Debug)]
pub(crate) struct PortInner {
    pub(crate) id: PortId,
    pub(crate) name: String,
    // RX queues refill from these pools: they must outlive the device.
    _pools: Vec<Arc<Mempool>>,
    _eal: EalToken,
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // SAFETY: the port id is valid (we configured it); no queue handle remains.
        let rc = unsafe { ffi::rte_eth_dev_stop(self.id.0) };
        if rc < 0 {
            log::warn!(
                "{}",
                DpdkError::new(format!("rte_eth_dev_stop({})", self.name), rc)
            );
        }
        // SAFETY: as above; the device is stopped.
        let rc = unsafe { ffi::rte_eth_dev_close(self.id.0) };
        if rc < 0 {
            log::warn!(
                "{}",
                DpdkError::new(format!("rte_eth_dev_close({})", self.name), rc)
            );
        }
    }
}

/// A configured Ethernet port.
#[derive(Debug)]
pub struct Port {
    inner: Arc<PortInner>,
    rx_queues: u16,
    tx_queues: u16,
    rx_taken: Vec<bool>,
    tx_taken: Vec<bool>,
    started: bool,
}

/// Looks up a port by its device name (e.g. `net_tap0`, `0000:3b:00.0`).
pub fn port_by_name(name: &str) -> Result<PortId, DpdkError> {
    let op = || format!("rte_eth_dev_get_port_by_name({name})");
    let cname = CString::new(name).map_err(|_| DpdkError::invalid(op()))?;
    let mut id = 0u16;
    // SAFETY: cname is a valid C string, id a valid out-pointer.
    let rc = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    DpdkError::check(op, rc)?;
    Ok(PortId(id))
}

impl Port {
    /// Configures the port named `name` with `cfg`, RX queues refilling from `pool`; the
    /// port is not started yet.
    pub fn configure(name: &str, cfg: &PortConfig, pool: &Arc<Mempool>) -> Result<Port, DpdkError> {
        let eal = EalToken::acquire(name)?;
        let id = port_by_name(name)?;
        let info = raw_device_info(id, name)?;
        let caps = device_info(name)?;
        let op = |what: &str| format!("{what}({name})");
        if let Some(mtu) = cfg.mtu.filter(|m| !caps.mtu_range().contains(m)) {
            return Err(DpdkError::new(
                format!(
                    "{}: MTU {mtu} is not supported by the device ({})",
                    op("configure"),
                    caps.describe_mtu()
                ),
                libc::EINVAL,
            ));
        }
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(DpdkError::new(
                format!(
                    "{}: {} RX queues requested, the device has {}",
                    op("configure"),
                    cfg.rx_queues,
                    info.max_rx_queues
                ),
                libc::EINVAL,
            ));
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::new(
                format!(
                    "{}: {} TX queues requested, the device has {}",
                    op("configure"),
                    cfg.tx_queues,
                    info.max_tx_queues
                ),
                libc::EINVAL,
            ));
        }
        let mut conf = ffi::rte_eth_conf::default();
        let rss_hf = RSS_DEFAULT & info.flow_type_rss_offloads;
        if cfg.rss && cfg.rx_queues > 1 && rss_hf != 0 {
            conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        // Given at configuration: some devices (net_ring) take the MTU only here.
        if let Some(mtu) = cfg.mtu {
            conf.rxmode.mtu = u32::from(mtu);
        }
        if cfg.rx_scatter && caps.rx_scatter {
            conf.rxmode.offloads |= RX_OFFLOAD_SCATTER;
        }
        // SAFETY: id is a valid port; conf is a fully initialised rte_eth_conf.
        let rc = unsafe { ffi::rte_eth_dev_configure(id.0, cfg.rx_queues, cfg.tx_queues, &conf) };
        DpdkError::check(|| op("rte_eth_dev_configure"), rc)?;

        let (mut rx_desc, mut tx_desc) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid port and in/out pointers to our locals.
        let rc = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut rx_desc, &mut tx_desc) };
        DpdkError::check(|| op("rte_eth_dev_adjust_nb_rx_tx_desc"), rc)?;

        // SAFETY: valid port id.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(id.0) };
        let socket = u32::try_from(socket).unwrap_or(SocketId::ANY.0);
        for q in 0..cfg.rx_queues {
            // SAFETY: configured port, valid queue index, live mempool (kept by PortInner);
            // NULL rx_conf selects the driver defaults.
            let rc = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    id.0,
                    q,
                    rx_desc,
                    socket,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            DpdkError::check(|| format!("rte_eth_rx_queue_setup({name}, q{q})"), rc)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: configured port, valid queue index; NULL tx_conf = driver defaults.
            let rc =
                unsafe { ffi::rte_eth_tx_queue_setup(id.0, q, tx_desc, socket, std::ptr::null()) };
            DpdkError::check(|| format!("rte_eth_tx_queue_setup({name}, q{q})"), rc)?;
        }
        if let Some(mtu) = cfg.mtu {
            // Applies it to what lies behind the port too (a tap's kernel interface); a
            // device without an MTU operation took it at configuration already.
            // SAFETY: valid port id.
            let rc = unsafe { ffi::rte_eth_dev_set_mtu(id.0, mtu) };
            if rc != -libc::ENOTSUP {
                DpdkError::check(|| format!("rte_eth_dev_set_mtu({name}, {mtu})"), rc)?;
            }
        }
        if cfg.promiscuous {
            // SAFETY: valid port id.
            let rc = unsafe { ffi::rte_eth_promiscuous_enable(id.0) };
            // Some virtual devices do not support it; that is not fatal.
            if rc < 0 && rc != -libc::ENOTSUP {
                return Err(DpdkError::new(op("rte_eth_promiscuous_enable"), rc));
            }
        }
        Ok(Port {
            inner: Arc::new(PortInner {
                id,
                name: name.to_owned(),
                _pools: vec![Arc::clone(pool)],
                _eal: eal,
            }),
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            rx_taken: vec![false; usize::from(cfg.rx_queues)],
            tx_taken: vec![false; usize::from(cfg.tx_queues)],
            started: false,
        })
    }

    pub fn id(&self) -> PortId {
        self.inner.id
    }

    /// What the port's queues and flow rules share, keeping the device open.
    pub(crate) fn inner(&self) -> &Arc<PortInner> {
        &self.inner
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn rx_queue_count(&self) -> u16 {
        self.rx_queues
    }

    pub fn tx_queue_count(&self) -> u16 {
        self.tx_queues
    }

    /// Starts the device.
    pub fn start(&mut self) -> Result<(), DpdkError> {
        // SAFETY: configured port id.
        let rc = unsafe { ffi::rte_eth_dev_start(self.id().0) };
        DpdkError::check(|| format!("rte_eth_dev_start({})", self.name()), rc)?;
        self.started = true;
        Ok(())
    }

    /// Stops the device (queues stay configured; bursts return nothing until restarted).
    pub fn stop(&mut self) -> Result<(), DpdkError> {
        // SAFETY: configured port id.
        let rc = unsafe { ffi::rte_eth_dev_stop(self.id().0) };
        DpdkError::check(|| format!("rte_eth_dev_stop({})", self.name()), rc)?;
        self.started = false;
        Ok(())
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// The port's MTU (L3 bytes; what the device was configured with).
    pub fn mtu(&self) -> Result<u16, DpdkError> {
        let mut mtu = 0u16;
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { ffi::rte_eth_dev_get_mtu(self.id().0, &mut mtu) };
        DpdkError::check(|| format!("rte_eth_dev_get_mtu({})", self.name()), rc)?;
        Ok(mtu)
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = ffi::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { ffi::rte_eth_macaddr_get(self.id().0, &mut addr) };
        DpdkError::check(|| format!("rte_eth_macaddr_get({})", self.name()), rc)?;
        Ok(addr.addr_bytes)
    }

    /// Link state without waiting.
    pub fn link(&self) -> Result<LinkStatus, DpdkError> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { ffi::rte_eth_link_get_nowait(self.id().0, &mut link) };
        DpdkError::check(|| format!("rte_eth_link_get_nowait({})", self.name()), rc)?;
        Ok(LinkStatus {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        })
    }

    /// The driver's name (e.g. `net_tap`).
    pub fn driver(&self) -> Result<String, DpdkError> {
        let info = raw_device_info(self.id(), self.name())?;
        if info.driver_name.is_null() {
            return Ok(String::new());
        }
        // SAFETY: non-null driver_name points to the driver's static name string.
        Ok(unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned())
    }

    /// Basic counters.
    pub fn stats(&self) -> Result<PortStats, DpdkError> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { ffi::rte_eth_stats_get(self.id().0, &mut s) };
        DpdkError::check(|| format!("rte_eth_stats_get({})", self.name()), rc)?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        })
    }

    /// Extended counters, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let id = self.id().0;
        let op = || format!("rte_eth_xstats_get({})", self.name());
        // SAFETY: a NULL array with size 0 asks for the count.
        let n = unsafe { ffi::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        let n = u32::try_from(DpdkError::check(op, n)?).unwrap_or(0);
        let mut names = vec![ffi::rte_eth_xstat_name::default(); n as usize];
        let mut values = vec![ffi::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays hold n elements.
        let got = unsafe { ffi::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n) };
        DpdkError::check(op, got)?;
        // SAFETY: as above.
        let got2 = unsafe { ffi::rte_eth_xstats_get(id, values.as_mut_ptr(), n) };
        DpdkError::check(op, got2)?;
        let count = (got.min(got2)).max(0) as usize;
        Ok(values
            .iter()
            .take(count)
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                // SAFETY: DPDK NUL-terminates names within the 64-byte array.
                let s = unsafe { CStr::from_ptr(name.name.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }

    /// Takes the handle of RX queue `q`. Each queue has exactly one owner (one worker), so
    /// a second take is an error.
    pub fn rx_queue(&mut self, q: u16) -> Result<RxQueue, DpdkError> {
        take(&mut self.rx_taken, q, || {
            format!("rx queue {q} of {}", self.inner.name)
        })?;
        Ok(RxQueue {
            port: Arc::clone(&self.inner),
            queue: q,
        })
    }

    /// Takes the handle of TX queue `q` (once).
    pub fn tx_queue(&mut self, q: u16) -> Result<TxQueue, DpdkError> {
        take(&mut self.tx_taken, q, || {
            format!("tx queue {q} of {}", self.inner.name)
        })?;
        Ok(TxQueue {
            port: Arc::clone(&self.inner),
            queue: q,
        })
    }
}

fn take(taken: &mut [bool], q: u16, what: impl Fn() -> String) -> Result<(), DpdkError> {
    match taken.get_mut(usize::from(q)) {
        None => Err(DpdkError::new(
            format!("{}: no such queue", what()),
            libc::EINVAL,
        )),
        Some(true) => Err(DpdkError::new(
            format!("{}: already taken", what()),
            libc::EBUSY,
        )),
        Some(t) => {
            *t = true;
            Ok(())
        }
    }
}

fn raw_device_info(id: PortId, name: &str) -> Result<ffi::rte_eth_dev_info, DpdkError> {
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: valid port id and out-pointer.
    let rc = unsafe { ffi::rte_eth_dev_info_get(id.0, &mut info) };
    DpdkError::check(|| format!("rte_eth_dev_info_get({name})"), rc)?;
    Ok(info)
}

/// The receive side of one queue, owned by one worker.
#[derive(Debug)]
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

/// The transmit side of one queue, owned by one worker.
#[derive(Debug)]
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

impl RxQueue {
    pub fn port(&self) -> PortId {
        self.port.id
    }

    pub fn queue(&self) -> QueueId {
        QueueId(self.queue)
    }

    /// Receives up to `max` packets, appended to `out` (whose capacity is reserved first, so
    /// a vector kept across bursts never reallocates). Returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, out: &mut Vec<Mbuf>, max: u16) -> usize {
        out.reserve(usize::from(max));
        let len = out.len();
        // SAFETY: `out` has room for `max` more elements; Mbuf is repr(transparent) over a
        // mbuf pointer; DPDK writes n ≤ max valid mbufs whose ownership passes to us; this
        // handle is the queue's only user (taken once, not Clone, used through &mut).
        unsafe {
            let dst = out.as_mut_ptr().add(len).cast::<*mut ffi::rte_mbuf>();
            let n = ffi::plk_eth_rx_burst(self.port.id.0, self.queue, dst, max);
            out.set_len(len + usize::from(n));
            usize::from(n)
        }
    }
}

impl TxQueue {
    pub fn port(&self) -> PortId {
        self.port.id
    }

    pub fn queue(&self) -> QueueId {
        QueueId(self.queue)
    }

    /// Transmits from the front of `pkts`. Sent mbufs leave the vector (the device owns
    /// them now); what the device refused stays in it, in order, for the caller to retry
    /// or drop. Returns how many were sent.
    #[inline]
    pub fn tx_burst(&mut self, pkts: &mut Vec<Mbuf>) -> usize {
        let len = pkts.len();
        if len == 0 {
            return 0;
        }
        let n = u16::try_from(len).unwrap_or(u16::MAX);
        // SAFETY: pkts holds `len` owned mbufs laid out as pointers (repr(transparent)).
        // DPDK takes ownership of the first `sent`; we then move the unsent ones to the
        // front without dropping the sent ones (they are no longer ours) and shrink.
        unsafe {
            let base = pkts.as_mut_ptr();
            let sent = usize::from(ffi::plk_eth_tx_burst(
                self.port.id.0,
                self.queue,
                base.cast::<*mut ffi::rte_mbuf>(),
                n,
            ));
            std::ptr::copy(base.add(sent), base, len - sent);
            pkts.set_len(len - sent);
            sent
        }
    }

    /// Transmits all of `pkts` that the device takes: when it takes only part, the
    /// unsent tail is offered again, up to `stalls` more times without progress (a full
    /// queue drains while we retry; a device that stops at one packet it refuses takes the
    /// rest once that one is dropped). Only what is still refused then is freed. `pkts` is
    /// left empty.
    #[inline]
    pub fn tx_burst_retry(&mut self, pkts: &mut Vec<Mbuf>, stalls: u32) -> TxOutcome {
        let mut out = TxOutcome {
            sent: self.tx_burst(pkts),
            ..TxOutcome::default()
        };
        if pkts.is_empty() {
            return out;
        }
        self.retry_tail(pkts, stalls, &mut out);
        out
    }

    /// A queue that stays full costs `stalls + 2` calls that send nothing, never one per
    /// packet.
    #[cold]
    #[inline(never)]
    fn retry_tail(&mut self, pkts: &mut Vec<Mbuf>, stalls: u32, out: &mut TxOutcome) {
        let mut left = stalls;
        let mut head_dropped = false;
        while !pkts.is_empty() {
            let n = self.tx_burst(pkts);
            out.sent += n;
            if n > 0 {
                head_dropped = false;
                continue;
            }
            if left > 0 {
                left -= 1;
                continue;
            }
            if head_dropped || pkts.len() == 1 {
                break;
            }
            // Still nothing: the device may refuse its first packet for itself (some stop a
            // burst at one they cannot send); give the others one more chance without it.
            let head = pkts.remove(0);
            out.refused += 1;
            out.refused_bytes += head.pkt_len() as u64;
            head_dropped = true;
        }
        out.refused += pkts.len();
        out.refused_bytes += pkts.iter().map(|m| m.pkt_len() as u64).sum::<u64>();
        pkts.clear();
    }
}

/// What [`TxQueue::tx_burst_retry`] did with a burst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOutcome {
    /// Taken by the device.
    pub sent: usize,
    /// Still refused after the retries, and freed.
    pub refused: usize,
    /// Their bytes (`pkt_len`).
    pub refused_bytes: u64,
}
