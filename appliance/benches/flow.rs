//! Flow table: lookups (hit and miss) at 1k, 100k and 1M flows, insert + remove, expiry.
//!
//! `cargo bench -p appliance --bench flow`
//!
//! Lookups use keys in a shuffled order so each one lands on an unrelated slot, as the
//! flows of a real traffic mix do; beyond the cache that is two DRAM misses per lookup.
//!
//! Measured on the benchmark machine (AMD EPYC KVM guest, TSC 2.596 GHz, 32 MiB L3; the
//! table on transparent huge pages; see BENCHMARKS.md), 2026-11-27 07:49 UTC, criterion's
//! median, cycles = ns × 2.596, per key:
//!
//! | bench | 1k flows | 100k flows | 1M flows |
//! |---|---|---|---|
//! | `flow_lookup/hit` | 5.8 ns (15 cyc) | 37.8 ns (98) | 102 ns (265) |
//! | `flow_lookup/miss` | 4.4 ns (11) | 21.9 ns (57) | 88.8 ns (231) |
//! | `flow_lookup/hit_burst32`, per key | 4.4 ns (11) | 16.0 ns (42) | 63.2 ns (164) |
//! | `flow_lookup/reverse_hit` | 6.5 ns (17) | 50.9 ns (132) | 117 ns (303) |
//! | `flow_insert_remove` (one in, one out) | 31.5 ns (82) | – | 114 ns (297) |
//!
//! `flow_lookup/hit_touch` (a lookup, then the flow's time and counters updated, as a
//! packet does) came with issue 10's slot layout; its figures and cache-miss counts are in
//! BENCHMARKS.md ("Flow table lines and SNAT probes").
//!
//! `flow_key_hash` 2.6 ns (7 cycles); `flow_expire` scan 3.5 ns (9 cycles) per slot of a
//! full 1M table; expire one + insert one in a full 1M table 367 ns (950 cycles).

use std::hint::black_box;
use std::time::Duration;

use appliance::tables::flow::{Flow, FlowKey, FlowTable, Timeouts, PROTO_TCP};
use appliance::tables::maglev::mix64;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SEED: u64 = 0x1234_5678_9abc_def0;
const BURST: usize = 32;

/// A pseudo-random consumer-side key for flow `i` (distinct for distinct `i` < 2^32).
fn fwd_key(i: u64, vpc: u16) -> FlowKey {
    let r = mix64(i);
    FlowKey {
        vpc,
        proto: PROTO_TCP,
        src_ip: u32::try_from(i & 0xffff_ffff).unwrap() ^ 0x0a00_0000,
        dst_ip: 0x0a01_0005,
        src_port: u16::try_from(r & 0xffff).unwrap(),
        dst_port: 443,
    }
}

fn rev_key(i: u64) -> FlowKey {
    FlowKey {
        vpc: 2,
        proto: PROTO_TCP,
        src_ip: 0xc0a8_0010,
        dst_ip: 0xc0a8_0001 ^ u32::try_from(i >> 16 & 0xffff).unwrap(),
        src_port: 8443,
        dst_port: u16::try_from(i & 0xffff).unwrap(),
    }
}

fn flow(i: u64, now_ms: u64) -> Flow {
    Flow::new(fwd_key(i, 1), rev_key(i), now_ms)
}

/// A table of `n` flows (capacity `n`) and the indices 0..n in a shuffled order.
fn filled(n: usize) -> (FlowTable, Vec<u64>) {
    let mut t = FlowTable::with_capacity_and_seed(n, Timeouts::default(), SEED);
    for i in 0..n as u64 {
        t.insert(flow(i, 0)).unwrap();
    }
    let mut order: Vec<u64> = (0..n as u64).collect();
    for k in (1..order.len()).rev() {
        let j = usize::try_from(mix64(k as u64 ^ SEED) % (k as u64 + 1)).unwrap();
        order.swap(k, j);
    }
    (t, order)
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn hash(c: &mut Criterion) {
    let keys: Vec<FlowKey> = (0..1024).map(|i| fwd_key(i, 1)).collect();
    let mut i = 0;
    c.bench_function("flow_key_hash", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(&keys[i]).hash()
        })
    });
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_lookup");
    for n in [1_000usize, 100_000, 1_000_000] {
        let (t, order) = filled(n);
        let hits: Vec<FlowKey> = order.iter().map(|&i| fwd_key(i, 1)).collect();
        // Same addresses in another VPC: never present, same hash cost.
        let misses: Vec<FlowKey> = order.iter().map(|&i| fwd_key(i, 3)).collect();
        let revs: Vec<FlowKey> = order.iter().map(|&i| rev_key(i)).collect();
        g.bench_with_input(BenchmarkId::new("hit", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = if k + 1 == n { 0 } else { k + 1 };
                t.lookup_forward(black_box(&hits[k]))
            })
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = if k + 1 == n { 0 } else { k + 1 };
                t.lookup_forward(black_box(&misses[k]))
            })
        });
        // Bursts of 32, as a worker would look up an RX burst; time per key.
        g.throughput(Throughput::Elements(BURST as u64));
        g.bench_with_input(BenchmarkId::new("hit_burst32", n), &n, |b, _| {
            let mut k = 0;
            let mut out = [None; BURST];
            b.iter(|| {
                k = if k + 2 * BURST > n { 0 } else { k + BURST };
                t.lookup_forward_burst(black_box(&hits[k..k + BURST]), &mut out);
                out[0]
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("reverse_hit", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = if k + 1 == n { 0 } else { k + 1 };
                t.lookup_reverse(black_box(&revs[k]))
            })
        });
    }
    g.finish();
}

/// One packet's table work: find the flow, then update its time and counters. Not
/// inlined, so callgrind can count this alone (`--toggle-collect=flow::lookup_touch`).
#[inline(never)]
fn lookup_touch(t: &mut FlowTable, key: &FlowKey, now_ms: u64) -> bool {
    let Some(id) = t.lookup_forward(key) else {
        return false;
    };
    t.get_mut(id).is_some_and(|f| {
        f.touch(now_ms, true, 60);
        !f.is_half_open()
    })
}

/// Lookups that go on to update the flow, as a packet does, on flows in random slots:
/// the lines of the counters count too, not only those of the key. (The pipeline
/// benches create their flows in replay order, so they visit the slots in order.)
fn lookup_touch_random(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_lookup");
    for n in [100_000usize, 1_000_000] {
        let (mut t, order) = filled(n);
        let hits: Vec<FlowKey> = order.iter().map(|&i| fwd_key(i, 1)).collect();
        g.bench_with_input(BenchmarkId::new("hit_touch", n), &n, |b, _| {
            let mut k = 0;
            b.iter(|| {
                k = if k + 1 == n { 0 } else { k + 1 };
                lookup_touch(&mut t, black_box(&hits[k]), 1)
            })
        });
    }
    g.finish();
}

fn insert_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_insert_remove");
    for n in [1_000usize, 1_000_000] {
        // Half full, then one flow in and out per iteration with ever-new keys.
        let mut t = FlowTable::with_capacity_and_seed(n, Timeouts::default(), SEED);
        for i in 0..(n / 2) as u64 {
            t.insert(flow(i, 0)).unwrap();
        }
        let mut next = n as u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                next += 1;
                let id = t.insert(flow(next, 0)).unwrap();
                t.remove(black_box(id))
            })
        });
    }
    g.finish();
}

fn expire(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_expire");
    let n = 1_000_000;
    const BUDGET: usize = 256;

    // Sweep with nothing to remove: the per-slot cost of scanning.
    let (mut t, _) = filled(n);
    g.throughput(Throughput::Elements(BUDGET as u64));
    g.bench_function("scan_per_slot_1M_full", |b| {
        b.iter(|| t.expire(black_box(1), BUDGET, |_, _| {}))
    });
    let mut half = FlowTable::with_capacity_and_seed(n, Timeouts::default(), SEED);
    for i in 0..(n / 2) as u64 {
        half.insert(flow(i * 2, 0)).unwrap();
        // leave every other slot free
        let id = half.insert(flow(i * 2 + 1, 0)).unwrap();
        half.remove(id);
    }
    g.bench_function("scan_per_slot_1M_half", |b| {
        b.iter(|| half.expire(black_box(1), BUDGET, |_, _| {}))
    });

    // Every slot expired: each iteration removes one flow and inserts a fresh one, which
    // takes the freed slot, so the table stays full and expired.
    g.throughput(Throughput::Elements(1));
    let (mut t, _) = filled(n);
    let mut next = n as u64;
    let later = 1_000_000_000;
    g.bench_function("remove_one_plus_insert_1M", |b| {
        b.iter(|| {
            let removed = t.expire(later, 1, |_, f| {
                black_box(f);
            });
            next += 1;
            t.insert(flow(next, 0)).unwrap();
            removed
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = hash, lookup, lookup_touch_random, insert_remove, expire
}
criterion_main!(benches);
