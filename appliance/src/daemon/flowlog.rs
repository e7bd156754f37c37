//! The flow-log writer: a thread that empties the workers' flow-log queues
//! ([`crate::graph::flowlog`]) and writes one line per flow and direction per window (and
//! at the flow's end), in the cloud's flow-log fields, to `[flow_logs] path`; rotated at
//! `max_bytes`. It never touches a worker: when it falls behind, the workers' queues fill
//! and records are dropped there, counted (`flow_log_dropped`), never packets.
//!
//! Fields (space-separated, `-` when none; a header line starts every file):
//! `version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes
//! start end action log-status pkt-srcaddr pkt-dstaddr flow-direction tcp-flags reason`.
//! A flow makes up to four lines per window, one per side and direction: the consumer's
//! (account: the endpoint's owner; interface: the endpoint's id; addresses as the consumer
//! sees them: client and endpoint) and the provider's (account: the service's owner;
//! interface: the service's id; SNAT address and target), each `ingress` (towards that
//! side's interface) and `egress`; `pkt-srcaddr`/`pkt-dstaddr` are the addresses the
//! packet had on the other side of the translation. Rejected traffic is one `REJECT` line
//! per (endpoint, source address, protocol, reason) and window, on the consumer's side,
//! with privlink's drop reason; its source port is `-` (aggregated).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::queue::ArrayQueue;

use crate::graph::flowlog::FlowLogRecord;
use crate::graph::nat64::{consumer_addresses, provider_addresses, Side6};
use crate::tables::flow::{Flow, FlowKey, TcpState, PROTO_TCP};
use crate::tables::snapshot::cell::SnapshotCell;
use crate::tables::snapshot::Snapshot;

/// The header line of every file.
pub const HEADER: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status pkt-srcaddr pkt-dstaddr flow-direction tcp-flags reason";

/// Records each worker's queue holds.
pub const QUEUE: usize = 1 << 16;

/// How often the writer empties the queues.
const CYCLE: Duration = Duration::from_millis(100);

/// A flow's counters as last written, and when.
#[derive(Debug, Clone, Copy, Default)]
struct Reported {
    packets: [u64; 2],
    bytes: [u64; 2],
    at_ms: u64,
}

/// Turns records into lines (pure: the tests drive it without a thread).
#[derive(Debug)]
pub struct Formatter {
    /// Unix ms at the workers' clock's 0.
    epoch_unix_ms: u64,
    reported: HashMap<(FlowKey, u64), Reported>,
}

impl Formatter {
    pub fn new(epoch_unix_ms: u64) -> Self {
        Formatter {
            epoch_unix_ms,
            reported: HashMap::new(),
        }
    }

    fn unix_s(&self, worker_ms: u64) -> u64 {
        (self.epoch_unix_ms + worker_ms) / 1000
    }

    /// The lines of one record (none when it carried nothing new, or names objects the
    /// snapshot no longer has).
    pub fn lines(&mut self, snap: &Snapshot, r: &FlowLogRecord, out: &mut String) {
        match *r {
            FlowLogRecord::Window {
                flow,
                side,
                start_ms,
                end_ms,
            } => self.flow_lines(snap, &flow, side, start_ms, end_ms, false, out),
            FlowLogRecord::End { flow, side, at_ms } => {
                let from = self
                    .reported
                    .get(&(flow.fwd, flow.created_ms))
                    .map_or(flow.created_ms, |r| r.at_ms);
                self.flow_lines(snap, &flow, side, from, at_ms, true, out);
            }
            FlowLogRecord::Reject {
                endpoint,
                src,
                proto,
                dport,
                reason,
                packets,
                bytes,
                start_ms,
                end_ms,
            } => {
                let Some(e) = snap.endpoint_by_handle(endpoint) else {
                    return;
                };
                let dst = match (src, e.ip6) {
                    (IpAddr::V6(_), Some(ip6)) => Ipv6Addr::from(ip6).to_string(),
                    _ => Ipv4Addr::from(e.ip).to_string(),
                };
                let src = if src.is_unspecified() {
                    "-".to_owned()
                } else {
                    src.to_string()
                };
                out.push_str(&format!(
                    "5 {} {} {src} {dst} - {dport} {proto} {packets} {bytes} {} {} REJECT OK - - ingress - {}\n",
                    e.owner,
                    e.id,
                    self.unix_s(start_ms),
                    self.unix_s(end_ms),
                    reason.label()
                ));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn flow_lines(
        &mut self,
        snap: &Snapshot,
        f: &Flow,
        side: Option<Side6>,
        start_ms: u64,
        end_ms: u64,
        ended: bool,
        out: &mut String,
    ) {
        let key = (f.fwd, f.created_ms);
        let last = self.reported.get(&key).copied().unwrap_or_default();
        let now = Reported {
            packets: [u64::from(f.packets_fwd), u64::from(f.packets_rev)],
            bytes: [f.bytes_fwd, f.bytes_rev],
            at_ms: end_ms,
        };
        if ended {
            self.reported.remove(&key);
        } else {
            self.reported.insert(key, now);
        }
        let (Some(e), Some(s)) = (
            snap.endpoint_by_handle(f.endpoint),
            snap.service_by_handle(f.service),
        ) else {
            return;
        };
        let delta = |i: usize| {
            (
                now.packets[i].saturating_sub(last.packets[i]),
                now.bytes[i].saturating_sub(last.bytes[i]),
            )
        };
        let (start, end) = (self.unix_s(start_ms.max(f.created_ms)), self.unix_s(end_ms));
        let flags = tcp_flags(f, start_ms, ended);
        let (c, r) = (&f.fwd, &f.rev);
        // An IPv6 consumer's addresses (a NAT66 flow's SNAT address and target) are its
        // side's: unspecified when it was not kept, never its key's 32-bit fold.
        let ((csrc, cdst), (snat, target)) =
            (consumer_addresses(f, side), provider_addresses(f, side));
        let (csrc, cdst, snat, target) = (csrc.ip(), cdst.ip(), snat.ip(), target.ip());
        // (account, interface, src, dst, sport, dport, direction index, pkt-src, pkt-dst, direction)
        let sides = [
            (
                e.owner, &e.id, csrc, cdst, c.src_port, c.dst_port, 0, snat, target, "ingress",
            ),
            (
                e.owner, &e.id, cdst, csrc, c.dst_port, c.src_port, 1, target, snat, "egress",
            ),
            (
                s.owner, &s.id, snat, target, r.dst_port, r.src_port, 0, csrc, cdst, "egress",
            ),
            (
                s.owner, &s.id, target, snat, r.src_port, r.dst_port, 1, cdst, csrc, "ingress",
            ),
        ];
        for (account, iface, src, dst, sport, dport, d, psrc, pdst, dir) in sides {
            let (packets, bytes) = delta(d);
            if packets == 0 {
                continue;
            }
            out.push_str(&format!(
                "5 {account} {iface} {src} {dst} {sport} {dport} {} {packets} {bytes} {start} {end} ACCEPT OK {psrc} {pdst} {dir} {flags} -\n",
                c.proto
            ));
        }
    }
}

/// The TCP flags a window's lines carry, from what the flow's state says: SYN when the
/// flow began in the window, FIN once either side closed (RSTs are not told apart);
/// `-` for UDP.
fn tcp_flags(f: &Flow, start_ms: u64, ended: bool) -> String {
    if f.fwd.proto != PROTO_TCP {
        return "-".to_owned();
    }
    let mut flags = 0u8;
    if f.created_ms >= start_ms {
        flags |= 0x02;
    }
    let closing = !matches!(
        f.tcp,
        TcpState::SynSent | TcpState::SynReceived | TcpState::Established
    );
    if closing || ended {
        flags |= 0x01;
    }
    flags.to_string()
}

/// The output file, rotated at a size.
struct Output {
    path: PathBuf,
    max_bytes: u64,
    file: BufWriter<File>,
    size: u64,
}

impl Output {
    fn open(path: &Path, max_bytes: u64) -> std::io::Result<Output> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)?;
        let size = file.metadata()?.len();
        let mut o = Output {
            path: path.to_owned(),
            max_bytes,
            file: BufWriter::new(file),
            size,
        };
        if size == 0 {
            o.write_raw(&format!("{HEADER}\n"))?;
        }
        Ok(o)
    }

    fn write_raw(&mut self, text: &str) -> std::io::Result<()> {
        self.file.write_all(text.as_bytes())?;
        self.size += text.len() as u64;
        Ok(())
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        if self.size + text.len() as u64 > self.max_bytes {
            self.file.flush()?;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, &old)?;
            *self = Output::open(&self.path, self.max_bytes)?;
        }
        self.write_raw(text)
    }
}

/// Starts the writer. Fails when the file cannot be opened (at start, with the reason).
pub fn spawn(
    cfg: &mgmt::config::FlowLogsConfig,
    queues: Vec<Arc<ArrayQueue<FlowLogRecord>>>,
    cell: Arc<SnapshotCell<Snapshot>>,
    epoch_unix_ms: u64,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let mut out = Output::open(&cfg.path, cfg.max_bytes)
        .map_err(|e| format!("flow_logs.path {}: {e}", cfg.path.display()))?;
    log::info!(
        "flow logs: {} (a line per flow and direction every {} s, rotated at {} bytes)",
        cfg.path.display(),
        cfg.interval_s,
        cfg.max_bytes
    );
    std::thread::Builder::new()
        .name("flow-logs".into())
        .spawn(move || {
            let mut fmt = Formatter::new(epoch_unix_ms);
            let mut text = String::new();
            let mut warned = false;
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                let snap = cell.load();
                for q in &queues {
                    // Bounded per cycle, so a flood of records cannot keep the file
                    // unflushed.
                    for _ in 0..QUEUE {
                        let Some(r) = q.pop() else { break };
                        fmt.lines(&snap, &r, &mut text);
                    }
                }
                drop(snap);
                if !text.is_empty() {
                    let written = out.write(&text).and_then(|()| out.file.flush());
                    if let Err(e) = written {
                        if !warned {
                            log::error!("flow logs: cannot write {}: {e}", out.path.display());
                            warned = true;
                        }
                    } else {
                        warned = false;
                    }
                    text.clear();
                }
                if stopping {
                    break;
                }
                std::thread::sleep(CYCLE);
            }
        })
        .map_err(|e| format!("flow-log thread: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_cloud_fields_and_privlinks_reason() {
        let f: Vec<&str> = HEADER.split(' ').collect();
        assert_eq!(f.len(), 19);
        assert_eq!(
            &f[..14],
            [
                "version",
                "account-id",
                "interface-id",
                "srcaddr",
                "dstaddr",
                "srcport",
                "dstport",
                "protocol",
                "packets",
                "bytes",
                "start",
                "end",
                "action",
                "log-status"
            ]
        );
        assert_eq!(f[18], "reason");
    }

    #[test]
    fn rotation_keeps_one_old_file_and_starts_with_the_header() {
        let dir = std::env::temp_dir().join(format!("privlink-flowlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flows.log");
        let mut o = Output::open(&path, 4096).unwrap();
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..100 {
            o.write(&line).unwrap();
        }
        o.file.flush().unwrap();
        let now = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("flows.log.1")).unwrap();
        assert!(now.starts_with(HEADER) && old.starts_with(HEADER));
        assert!(now.len() <= 4096 && old.len() <= 4096);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
