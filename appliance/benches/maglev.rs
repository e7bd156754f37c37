//! Maglev: table build (management thread) and pick (worker, once per new flow).
//!
//! `cargo bench -p appliance --bench maglev`
//!
//! Measured on the benchmark machine (AMD EPYC KVM guest, TSC 2.596 GHz; see
//! BENCHMARKS.md): build of a 65537-slot table 1.43 ms (10 backends), 2.31 ms (100),
//! 2.52 ms (1000); pick 2.9 ns including the 0.95 ns of generating the hash, so ~2 ns
//! (~5 cycles) per pick.

use std::hint::black_box;
use std::time::Duration;

use appliance::tables::maglev::{mix64, target_key, Maglev, MaglevBackend, DEFAULT_TABLE_SIZE};
use criterion::{criterion_group, criterion_main, Criterion};

fn backends(n: u32) -> Vec<MaglevBackend> {
    (0..n)
        .map(|i| MaglevBackend {
            key: target_key(0x0a00_0001 + i, 8080),
            weight: 1 + i % 3,
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    for n in [10u32, 100, 1000] {
        let b = backends(n);
        g.bench_function(format!("{n}_backends_65537"), |bench| {
            bench.iter(|| Maglev::build(black_box(&b), DEFAULT_TABLE_SIZE).unwrap())
        });
    }
    g.finish();
}

fn pick(c: &mut Criterion) {
    let m = Maglev::build(&backends(10), DEFAULT_TABLE_SIZE).unwrap();
    let mut i = 0u64;
    c.bench_function("maglev_pick_10_backends_65537", |bench| {
        bench.iter(|| {
            i = i.wrapping_add(1);
            m.pick(black_box(mix64(i)))
        })
    });
    // The same loop without the pick, to subtract the cost of generating hashes.
    let mut j = 0u64;
    c.bench_function("maglev_pick_baseline_mix64", |bench| {
        bench.iter(|| {
            j = j.wrapping_add(1);
            black_box(mix64(j))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = build, pick
}
criterion_main!(benches);
