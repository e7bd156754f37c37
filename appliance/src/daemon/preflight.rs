//! Start-up checks: a setting that cannot work is refused before anything runs, with a
//! message that names the key and the figures, instead of failing later inside a worker
//! (a flow table too big to allocate panicked on its lcore while the daemon said "ready")
//! or inside DPDK (`EINVAL` for an MTU the device does not take).
//!
//! What is static is checked by the configuration itself (`mgmt::config`); what needs the
//! device (RSS, MTU range) or the machine (free memory, hugepages) is checked here, once
//! the EAL is up and before the packet pool, the ports and the workers are created.

use std::fmt;

use dpdk_bindings::{mempool, DeviceInfo};
use mgmt::config::{Config, PortConfig};

use crate::tables::flow::{FlowTable, MAX_CAPACITY};
use crate::tables::neighbour::SharedNeighbours;

/// Ethernet header, one 802.1Q tag and the CRC: what a frame adds to its MTU at most.
pub const FRAME_OVERHEAD: usize = 14 + 4 + 4;
/// Packets held while their next hop resolves, as the pipeline stores them (frame handle,
/// next hop, time): for the memory estimate.
const HELD_BYTES: u64 = 32;

/// Bytes, printed in the unit that reads best (`512 MiB`, `11.2 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: f64 = 1024.0;
        let b = self.0 as f64;
        if b >= KIB * KIB * KIB {
            write!(f, "{:.1} GiB", b / (KIB * KIB * KIB))
        } else if b >= KIB * KIB {
            write!(f, "{:.1} MiB", b / (KIB * KIB))
        } else if b >= KIB {
            write!(f, "{:.1} KiB", b / KIB)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

/// Port `i` (`pc`, of a device that can do `info`) with `queues` RX queues: its MTU (the
/// configured one, else the device's), or why it cannot work.
pub fn check_port(
    i: usize,
    pc: &PortConfig,
    info: &DeviceInfo,
    queues: u16,
) -> Result<u16, String> {
    let at = format!("ports[{i}] ({}, {})", pc.name, info.driver);
    if queues > 1 && !info.has_rss() {
        return Err(format!(
            "{at}: {queues} workers need {queues} RX queues on every port, and this device has no RSS to spread flows over them; use one worker (workers.lcores) or a device with RSS"
        ));
    }
    if queues > info.max_rx_queues || queues > info.max_tx_queues {
        return Err(format!(
            "{at}: {queues} workers need {queues} RX and TX queues, the device has {} and {}",
            info.max_rx_queues, info.max_tx_queues
        ));
    }
    match pc.mtu {
        Some(mtu) if !info.mtu_range().contains(&mtu) => Err(format!(
            "ports[{i}].mtu = {mtu}: the device does not take it ({})",
            info.describe_mtu()
        )),
        Some(mtu) => Ok(mtu),
        None => Ok(info.mtu),
    }
}

/// The data room that holds the longest frame any port with these MTUs may receive in one
/// mbuf (jumbo frames get jumbo mbufs; at least DPDK's default).
pub fn data_room(mtus: &[u16]) -> Result<u16, String> {
    let mtu = mtus.iter().copied().max().unwrap_or(1500);
    let frame = usize::from(mtu) + FRAME_OVERHEAD;
    mempool::data_room_for(frame)
        .ok_or_else(|| format!("an MTU of {mtu} needs {frame}-byte mbufs, more than DPDK's"))
}

/// Mbufs the packet pool needs: every port's descriptors for every worker, each worker's
/// bursts, hold queue and handoff rings, and spare; at least `tables.mbufs`.
pub fn pool_size(config: &Config, workers: u16, handoff_ring: u32) -> Result<u32, String> {
    let w = u64::from(workers);
    let ports = config.ports.len() as u64;
    let descriptors: u64 = config
        .ports
        .iter()
        .map(|p| u64::from(p.rx_desc) + u64::from(p.tx_desc))
        .sum();
    let per_worker = u64::from(config.workers.burst) * (ports + 2) * 4
        + u64::from(config.tables.arp_pending_packets)
        + u64::from(config.tables.fragments_held)
        + u64::from(handoff_ring) * w.saturating_sub(1);
    let n = (descriptors * w + per_worker * w + 2048).max(u64::from(config.tables.mbufs));
    u32::try_from(n).map_err(|_| {
        format!(
            "the packet pool would need {n} mbufs (tables.arp_pending_packets = {}, tables.mbufs = {}), more than a DPDK pool holds ({})",
            config.tables.arp_pending_packets,
            config.tables.mbufs,
            u32::MAX
        )
    })
}

/// What the tables and the packet pool will take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub workers: u16,
    pub flows_per_worker: u64,
    /// One flow table.
    pub flow_table: u64,
    pub neighbour_table: u64,
    /// All workers' hold queues.
    pub hold_queues: u64,
    pub pool_mbufs: u32,
    pub data_room: u16,
    pub pool: u64,
}

impl Needs {
    pub fn of(
        config: &Config,
        workers: u16,
        pool_mbufs: u32,
        data_room: u16,
    ) -> Result<Needs, String> {
        let flows = config.tables.flows_per_worker as usize;
        if flows > MAX_CAPACITY {
            return Err(format!(
                "tables.flows_per_worker = {flows}: a flow table holds at most {MAX_CAPACITY}"
            ));
        }
        Ok(Needs {
            workers,
            flows_per_worker: flows as u64,
            flow_table: FlowTable::memory_for(flows) as u64,
            neighbour_table: SharedNeighbours::memory_for(config.tables.neighbours as usize) as u64,
            hold_queues: 2
                * HELD_BYTES
                * u64::from(config.tables.arp_pending_packets)
                * u64::from(workers),
            pool_mbufs,
            data_room,
            pool: mempool::bytes_for(pool_mbufs, data_room),
        })
    }

    /// The ordinary (not hugepage) memory: flow tables, neighbour table, hold queues.
    pub fn heap(&self) -> u64 {
        self.flow_table * u64::from(self.workers) + self.neighbour_table + self.hold_queues
    }
}

/// Where the memory comes from, as this machine and the EAL arguments say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Available {
    /// `MemAvailable` of /proc/meminfo.
    pub mem_available: Option<u64>,
    /// Free hugepages (`HugePages_Free` × `Hugepagesize`).
    pub hugepages_free: Option<u64>,
    pub hugepage_size: Option<u64>,
    /// The EAL runs without hugepages (`--no-huge`): the pool comes out of `-m`.
    pub no_huge: bool,
    /// Memory reserved up front with `-m` or `--socket-mem`, in bytes.
    pub eal_memory: Option<u64>,
}

/// The EAL's own default memory with `--no-huge` and no `-m`.
const NO_HUGE_DEFAULT: u64 = 64 << 20;

impl Available {
    /// From the text of /proc/meminfo and the EAL arguments.
    pub fn from(meminfo: &str, eal_args: &[String]) -> Available {
        let kib = |key: &str| {
            meminfo.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        let page = kib("Hugepagesize").map(|k| k * 1024);
        let no_huge = eal_args.iter().any(|a| a == "--no-huge");
        Available {
            mem_available: kib("MemAvailable").map(|k| k * 1024),
            hugepages_free: kib("HugePages_Free").zip(page).map(|(n, p)| n * p),
            hugepage_size: page,
            no_huge,
            eal_memory: eal_memory(eal_args).or(no_huge.then_some(NO_HUGE_DEFAULT)),
        }
    }

    /// This machine now.
    pub fn probe(eal_args: &[String]) -> Available {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Available::from(&meminfo, eal_args)
    }
}

/// `-m MB`, `-mMB` or `--socket-mem=a,b` (`--socket-mem a,b`), in bytes; the last wins.
fn eal_memory(args: &[String]) -> Option<u64> {
    let mut out = None;
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let mb: Option<u64> = if a == "-m" {
            it.peek().and_then(|v| v.parse().ok())
        } else if let Some(v) = a.strip_prefix("-m").filter(|v| !v.is_empty()) {
            v.parse().ok()
        } else if let Some(v) = a.strip_prefix("--socket-mem=") {
            v.split(',').map(|x| x.trim().parse::<u64>().ok()).sum()
        } else if a == "--socket-mem" {
            it.peek()
                .and_then(|v| v.split(',').map(|x| x.trim().parse::<u64>().ok()).sum())
        } else {
            None
        };
        if let Some(mb) = mb {
            out = Some(mb << 20);
        }
    }
    out
}

/// Whether `needs` fits what is `available`; the message names the setting to change and
/// the figures.
pub fn check_memory(needs: &Needs, available: &Available) -> Result<(), String> {
    let pool_msg = || {
        format!(
            "the packet pool ({} mbufs of {} bytes: tables.mbufs, or sized from the ports' descriptors, the workers and tables.arp_pending_packets) needs {}",
            needs.pool_mbufs,
            needs.data_room,
            Bytes(needs.pool)
        )
    };
    // With --no-huge the pool is ordinary memory too.
    let heap = needs.heap() + if available.no_huge { needs.pool } else { 0 };
    if let Some(avail) = available.mem_available {
        if heap > avail {
            return Err(format!(
                "tables.flows_per_worker = {} with {} workers ({} of flow tables), tables.neighbours ({}) and the hold queues{} need {}, more than the {} this machine has available (MemAvailable); lower them",
                needs.flows_per_worker,
                needs.workers,
                Bytes(needs.flow_table * u64::from(needs.workers)),
                Bytes(needs.neighbour_table),
                if available.no_huge { " and the packet pool (--no-huge)" } else { "" },
                Bytes(heap),
                Bytes(avail)
            ));
        }
    }
    match (available.eal_memory, available.hugepages_free) {
        (Some(eal), _) if needs.pool > eal => Err(format!(
            "{}, more than the {} the EAL was given ({}); lower tables.mbufs or the descriptors, or raise it in eal.args",
            pool_msg(),
            Bytes(eal),
            if available.no_huge { "-m, with --no-huge" } else { "-m / --socket-mem" }
        )),
        (None, Some(free)) if !available.no_huge && needs.pool > free => Err(format!(
            "{}, more than the {} of free hugepages ({} pages of {}); reserve more (scripts/hugepages.sh) or lower tables.mbufs",
            pool_msg(),
            Bytes(free),
            free / available.hugepage_size.unwrap_or(1).max(1),
            Bytes(available.hugepage_size.unwrap_or(0))
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       24000000 kB\nMemFree:        20000000 kB\nMemAvailable:    2097152 kB\nHugePages_Total:     512\nHugePages_Free:      256\nHugepagesize:       2048 kB\n";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn info(driver: &str, rss: u64, max_mtu: u16) -> DeviceInfo {
        DeviceInfo {
            driver: driver.into(),
            max_rx_queues: 16,
            max_tx_queues: 16,
            rss_offloads: rss,
            mtu: 1500,
            min_mtu: 68,
            max_mtu,
            max_rx_frame: u32::from(max_mtu) + 18,
            rx_scatter: true,
        }
    }

    #[test]
    fn meminfo_and_eal_memory_are_read() {
        let a = Available::from(MEMINFO, &args(&["-l", "0,1", "-m", "256"]));
        assert_eq!(a.mem_available, Some(2 << 30));
        assert_eq!(a.hugepages_free, Some(512 << 20));
        assert_eq!(a.eal_memory, Some(256 << 20));
        assert!(!a.no_huge);
        let a = Available::from(MEMINFO, &args(&["--no-huge"]));
        assert_eq!(a.eal_memory, Some(64 << 20), "the EAL's default without -m");
        assert!(a.no_huge);
        let a = Available::from("", &args(&["--socket-mem=512,256", "-m128"]));
        assert_eq!(a.eal_memory, Some(128 << 20), "the last one wins");
        assert_eq!(a.mem_available, None);
        let a = Available::from("", &args(&["--socket-mem", "512,256"]));
        assert_eq!(a.eal_memory, Some(768 << 20));
    }

    #[test]
    fn tables_beyond_available_memory_are_refused_with_the_figures() {
        let mut config = Config::embedded_default();
        config.tables.flows_per_worker = 100_000_000;
        let needs = Needs::of(&config, 2, 10_000, 2176).unwrap();
        let a = Available::from(MEMINFO, &args(&["-m", "512"]));
        let e = check_memory(&needs, &a).unwrap_err();
        assert!(
            e.starts_with("tables.flows_per_worker = 100000000 with 2 workers ("),
            "{e}"
        );
        assert!(
            e.contains("more than the 2.0 GiB this machine has available (MemAvailable)"),
            "{e}"
        );
        config.tables.flows_per_worker = 1 << 20;
        let needs = Needs::of(&config, 2, 10_000, 2176).unwrap();
        assert_eq!(check_memory(&needs, &a), Ok(()));
        config.tables.flows_per_worker = (1 << 30) + 1;
        assert!(Needs::of(&config, 1, 10_000, 2176)
            .unwrap_err()
            .contains("at most 1073741824"));
    }

    #[test]
    fn a_pool_beyond_the_eal_memory_or_free_hugepages_is_refused() {
        let config = Config::embedded_default();
        let needs = Needs::of(&config, 1, 1_000_000, 2176).unwrap();
        // -m 256 with --no-huge: about 2.3 GiB do not fit.
        let e = check_memory(
            &needs,
            &Available::from("", &args(&["--no-huge", "-m", "256"])),
        )
        .unwrap_err();
        assert!(
            e.starts_with("the packet pool (1000000 mbufs of 2176 bytes"),
            "{e}"
        );
        assert!(
            e.contains("more than the 256.0 MiB the EAL was given (-m, with --no-huge)"),
            "{e}"
        );
        // Hugepages, no -m: 256 free 2 MiB pages.
        let e = check_memory(&needs, &Available::from(MEMINFO, &[])).unwrap_err();
        assert!(
            e.contains("more than the 512.0 MiB of free hugepages (256 pages of 2.0 MiB)"),
            "{e}"
        );
        let small = Needs::of(&config, 1, 20_000, 2176).unwrap();
        assert_eq!(check_memory(&small, &Available::from(MEMINFO, &[])), Ok(()));
        // With --no-huge the pool also counts against MemAvailable.
        let tight = "MemAvailable: 10000 kB\n";
        let e = check_memory(
            &small,
            &Available::from(tight, &args(&["--no-huge", "-m", "512"])),
        )
        .unwrap_err();
        assert!(e.contains("and the packet pool (--no-huge)"), "{e}");
    }

    #[test]
    fn ports_without_rss_or_with_an_mtu_the_device_refuses() {
        let mut pc = PortConfig::new("net_memif0");
        assert_eq!(check_port(0, &pc, &info("net_memif", 0, 1500), 1), Ok(1500));
        let e = check_port(0, &pc, &info("net_memif", 0, 1500), 2).unwrap_err();
        assert!(
            e.starts_with("ports[0] (net_memif0, net_memif): 2 workers need 2 RX queues"),
            "{e}"
        );
        assert!(e.contains("no RSS"), "{e}");
        assert_eq!(
            check_port(0, &pc, &info("net_tap", 0x3afbc, 1504), 2),
            Ok(1500)
        );
        pc.mtu = Some(2000);
        let e = check_port(1, &pc, &info("net_tap", 0x3afbc, 1504), 1).unwrap_err();
        assert_eq!(e, "ports[1].mtu = 2000: the device does not take it (net_tap: MTU 68..=1504 (frames up to 1522 bytes))");
        assert_eq!(check_port(1, &pc, &info("net_ring", 0, 9600), 1), Ok(2000));
        assert!(check_port(1, &pc, &info("net_ring", 0, 9600), 32).is_err());
    }

    #[test]
    fn jumbo_mtus_get_jumbo_mbufs_and_pool_sizes_never_overflow() {
        assert_eq!(data_room(&[1500, 1500]), Ok(2048 + 128));
        assert_eq!(data_room(&[1500, 9000]), Ok(9000 + 22 + 128));
        let mut config = Config::embedded_default();
        let n = pool_size(&config, 2, 1024).unwrap();
        assert!(n > 2 * 2048, "{n}");
        config.tables.arp_pending_packets = u32::MAX;
        assert!(pool_size(&config, 2, 1024)
            .unwrap_err()
            .contains("more than a DPDK pool holds"));
    }

    #[test]
    fn the_configuration_bound_is_the_flow_tables_own() {
        assert_eq!(mgmt::config::MAX_FLOWS_PER_WORKER as usize, MAX_CAPACITY);
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(256 << 20).to_string(), "256.0 MiB");
        assert_eq!(Bytes(3 << 29).to_string(), "1.5 GiB");
    }
}
