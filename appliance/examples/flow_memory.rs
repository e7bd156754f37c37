//! Memory per flow, measured: fills a flow table to capacity and prints what the table
//! says it owns ([`FlowTable::bytes_per_flow`], [`FlowTable::memory_bytes`]) beside what
//! the process gained in resident memory (VmRSS) building and filling it.
//!
//! `cargo run --release -p appliance --example flow_memory -- [FLOWS...]`
//! (default 1000000 10000000). One line per size, also as JSON for scripts/bench.sh:
//! `flow_memory {"flows":…,"bytes_per_flow":…,"table_bytes":…,"rss_delta_bytes":…}`

use std::hint::black_box;

use appliance::tables::flow::{Flow, FlowKey, FlowTable, Timeouts, PROTO_UDP};
use appliance::tables::maglev::mix64;

/// Resident memory of this process in bytes (VmRSS), 0 if unreadable.
fn vm_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Distinct consumer and provider keys for flow `i` (as the pipeline would create them:
/// many clients to one endpoint, SNAT ports spread over targets and SNAT addresses).
fn flow(i: u64) -> Flow {
    let lo = |x: u64| u32::try_from(x & 0xffff_ffff).unwrap_or(0);
    let port = |x: u64| u16::try_from(x & 0xffff).unwrap_or(0);
    let fwd = FlowKey {
        vpc: 0,
        proto: PROTO_UDP,
        src_ip: 0x0a01_0100 + lo(i / 64_000),
        dst_ip: 0x0a01_0064,
        src_port: 1024 + port(i % 64_000),
        dst_port: 9000,
    };
    let r = mix64(i);
    let rev = FlowKey {
        vpc: 1,
        proto: PROTO_UDP,
        src_ip: 0x0a02_000b + lo(r % 16),
        dst_ip: 0x0a02_0064 + lo(i >> 16),
        src_port: 9000,
        dst_port: port(i),
    };
    Flow::new(fwd, rev, 0)
}

fn main() {
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if args.is_empty() {
            vec![1_000_000, 10_000_000]
        } else {
            args
        }
    };
    for n in sizes {
        let before = vm_rss();
        let mut table = FlowTable::with_capacity_and_seed(n, Timeouts::default(), 0x5eed);
        let built = vm_rss();
        for i in 0..n as u64 {
            if table.insert(flow(i)).is_err() {
                eprintln!("flow_memory: table full at {i} of {n}");
                break;
            }
        }
        let filled = vm_rss();
        let rss_delta = filled.saturating_sub(before);
        println!(
            "{n:>10} flows: {} B/flow by the table's count ({} MiB), VmRSS +{} MiB \
             (+{} MiB at construction) = {:.1} B/flow resident",
            table.bytes_per_flow(),
            table.memory_bytes() >> 20,
            rss_delta >> 20,
            built.saturating_sub(before) >> 20,
            rss_delta as f64 / n as f64
        );
        println!(
            "flow_memory {{\"flows\":{n},\"bytes_per_flow\":{},\"table_bytes\":{},\"rss_delta_bytes\":{rss_delta},\"len\":{}}}",
            table.bytes_per_flow(),
            table.memory_bytes(),
            table.len()
        );
        black_box(&table);
        drop(table);
    }
}
