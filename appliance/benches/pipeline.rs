//! The whole packet path of one worker, without DPDK: `Pipeline<VecFrame>::process` on
//! 60-byte frames (64 on the wire), in the topology of the whole-appliance benchmark
//! (`scripts/bench/privlink-bench.toml`: 16 targets, 16 SNAT addresses, static
//! neighbours), plus the snapshot lookups the path makes.
//!
//! `cargo bench -p appliance --bench pipeline`
//!
//! Each iteration copies one frame of a pre-built capture (in a shuffled flow order) into a
//! reused buffer and processes it, as the worker does with what `net_pcap` copies into an
//! mbuf; the 60-byte copy is part of the figure (~2 ns). No DPDK RX/TX, no mbuf pool, no
//! burst bookkeeping: `scripts/bench.sh` measures those with the real daemon.
//!
//! Measured on the benchmark machine (AMD EPYC, KVM guest, TSC 2.596 GHz, 32 MiB L3;
//! shared with other work, so noisy), 2026-11-27 07:49 UTC: criterion's median estimate,
//! cycles = ns × 2.596. BENCHMARKS.md has the whole-appliance figures and where the
//! cycles go.
//!
//! | bench | ns/packet | ~cycles/packet |
//! |---|---|---|
//! | `pipeline/udp_established/1` | 42.7 | 111 |
//! | `pipeline/udp_established/1000` | 46.5 | 121 |
//! | `pipeline/udp_established/100000` | 65.8 | 171 |
//! | `pipeline/udp_established/1000000` | 217 | 564 |
//! | `pipeline/udp_established_burst32/1000` (per packet) | 41.4 | 108 |
//! | `pipeline/udp_established_burst32/100000` (per packet) | 49.2 | 128 |
//! | `pipeline/udp_established_burst32/1000000` (per packet) | 61.8 | 160 |
//! | `pipeline/tcp_ack_known_flow/1000` | 47.2 | 123 |
//! | `pipeline/tcp_syn_new_flow/table_256k` (new flow) | 168 | 436 |
//! | `pipeline/tcp_syn_new_flow/table_4M` (new flow; see BENCHMARKS.md) | 1,069 | 2,775 |
//! | `snapshot/listener_hit` | 4.9 | 13 |
//! | `snapshot/listener_miss` | 2.9 | 7 |
//! | `snapshot/local_hit` | 2.6 | 7 |
//!
//! The figures above are of the code before the graph of nodes (2026-11-27). Instructions
//! then (callgrind, `udp_established_burst32/1000`): ~800 per packet with the bench's frame
//! copies. The graph's own per-node counts come from `examples/graph_profile.rs`
//! (BENCHMARKS.md, "Data plane v2").

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use appliance::graph::frame::{Frame, VecFrame};
use appliance::graph::{Pipeline, PipelineSettings, Verdict};
use appliance::tables::maglev::mix64;
use appliance::tables::snapshot::{Handles, Snapshot};
use appliance::wire::{IpProtocol, Ipv4Repr, TcpFlags, TcpRepr, UdpRepr};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mgmt::config::Config;

/// The harness's configuration; the `@…@` fields are filled as scripts/bench.sh does.
const BENCH_TOML: &str = include_str!("../../scripts/bench/privlink-bench.toml");

/// MAC of the consumer port (net_pcap's first port) and of the provider port.
const MAC_C: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
const MAC_P: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb0];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x10];
const ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const CONSUMER_PORT: u16 = 0;
const NOW_MS: u64 = 1_000;
const FRAME_LEN: usize = 60;

fn config() -> Config {
    let text = BENCH_TOML
        .replace("@EAL_ARGS@", "\"-l\", \"0,1\"")
        .replace("@RX_DESC@", "1024")
        .replace("@TX_DESC@", "1024")
        .replace("@DIR@", "/tmp/privlink-bench")
        .replace("@FLOWS_PER_WORKER@", "1024")
        .replace("@EXTRA_TABLES@", "");
    Config::from_toml_str(&text).expect("scripts/bench/privlink-bench.toml parses")
}

fn snapshot(config: &Config) -> Snapshot {
    Snapshot::build(
        1,
        config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut Handles::default(),
    )
    .expect("bench snapshot")
}

fn pipeline(config: &Config, snap: &Snapshot, capacity: usize) -> Pipeline<VecFrame> {
    let mut settings: PipelineSettings = appliance::daemon::pipeline_settings(config, 1);
    settings.flow_capacity = capacity.max(1024);
    let mut p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), snap);
    // Worker 0 announces its addresses with gratuitous ARPs at start; not our business.
    p.drain_emitted().for_each(drop);
    p
}

/// Client of flow `i`, as scripts/bench/gen_pcap.py numbers them.
fn client(i: u64) -> (Ipv4Addr, u16) {
    let ip = 0x0a01_0100 + u32::try_from(i / 64_000).expect("fewer than 2^32 flows");
    let port = 1024 + u16::try_from(i % 64_000).expect("< 64000");
    (Ipv4Addr::from(ip), port)
}

fn l2(f: &mut [u8]) {
    f[0..6].copy_from_slice(&MAC_C);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
}

/// A 60-byte UDP frame of flow `i` to the endpoint's UDP 9000 (18 payload bytes).
fn udp_frame(i: u64) -> [u8; FRAME_LEN] {
    let (src, sport) = client(i);
    let mut f = [0u8; FRAME_LEN];
    l2(&mut f);
    f[42..].copy_from_slice(b"privlink-bench-pkt");
    UdpRepr {
        src_port: sport,
        dst_port: 9000,
    }
    .emit(&mut f[34..], src, ENDPOINT, 18)
    .expect("udp");
    Ipv4Repr {
        src_addr: src,
        dst_addr: ENDPOINT,
        protocol: IpProtocol::UDP,
        payload_len: 26,
        ttl: 64,
    }
    .emit(&mut f[14..])
    .expect("ipv4");
    f
}

/// A TCP segment of flow `i` to the endpoint's TCP 80, padded to 60 bytes.
fn tcp_frame(i: u64, flags: TcpFlags) -> [u8; FRAME_LEN] {
    let (src, sport) = client(i);
    let mut f = [0u8; FRAME_LEN];
    l2(&mut f);
    TcpRepr {
        src_port: sport,
        dst_port: 80,
        seq_number: 1,
        ack_number: if flags == TcpFlags::SYN { 0 } else { 1 },
        flags,
        window_len: 64240,
        urgent_at: 0,
    }
    .emit(&mut f[34..54], src, ENDPOINT, 0)
    .expect("tcp");
    Ipv4Repr {
        src_addr: src,
        dst_addr: ENDPOINT,
        protocol: IpProtocol::TCP,
        payload_len: 20,
        ttl: 64,
    }
    .emit(&mut f[14..])
    .expect("ipv4");
    f
}

/// Flow numbers 0..n in a shuffled order (each packet lands on an unrelated table slot).
fn shuffled(n: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    for k in (1..v.len()).rev() {
        let j = usize::try_from(mix64(k as u64 ^ 0x5eed) % (k as u64 + 1)).expect("index");
        v.swap(k, j);
    }
    v
}

/// Copies `bytes` into `frame` (reset to a 60-byte frame) and runs it through `p`;
/// returns the buffer for the next packet. Panics unless the packet was transmitted.
#[inline]
fn run_one(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    mut frame: VecFrame,
    bytes: &[u8; FRAME_LEN],
) -> VecFrame {
    // The pipeline trims Ethernet padding (TCP frames): grow back first.
    let ok = frame.set_len(FRAME_LEN);
    debug_assert!(ok);
    frame.bytes_mut().copy_from_slice(bytes);
    match p.process(snap, CONSUMER_PORT, frame, NOW_MS) {
        Verdict::Tx(_, f) => f,
        other => panic!(
            "packet not forwarded: {other:?}; counters {:?}",
            p.counters()
        ),
    }
}

/// A pipeline that already holds the flows of `frames` (one pass, not timed), the
/// frames, the next frame to send and the reused buffer.
struct Established {
    p: Pipeline<VecFrame>,
    frames: Vec<[u8; FRAME_LEN]>,
    k: usize,
    buf: Option<VecFrame>,
}

impl Established {
    /// `create` builds the flows, `frames` are then replayed in a loop.
    fn new(
        config: &Config,
        snap: &Snapshot,
        create: &[[u8; FRAME_LEN]],
        frames: Vec<[u8; FRAME_LEN]>,
    ) -> Self {
        let mut p = pipeline(config, snap, 2 * create.len());
        let mut buf = VecFrame::new(&[0u8; FRAME_LEN]);
        for f in create {
            buf = run_one(&mut p, snap, buf, f);
        }
        assert_eq!(p.flows().len(), create.len());
        Established {
            p,
            frames,
            k: 0,
            buf: Some(buf),
        }
    }

    #[inline]
    fn step(&mut self, snap: &Snapshot) {
        self.k = if self.k + 1 == self.frames.len() {
            0
        } else {
            self.k + 1
        };
        let f = self.buf.take().expect("buffer");
        self.buf = Some(run_one(
            &mut self.p,
            snap,
            f,
            black_box(&self.frames[self.k]),
        ));
    }
}

const BURST: usize = 32;

impl Established {
    /// The next `BURST` frames of the capture through `process_burst`, in buffers taken
    /// from and returned to `pool`.
    fn step_burst(&mut self, snap: &Snapshot, pool: &mut Vec<VecFrame>, burst: &mut Vec<VecFrame>) {
        for _ in 0..BURST {
            let mut f = pool.pop().expect("pool holds a burst");
            let ok = f.set_len(FRAME_LEN);
            debug_assert!(ok);
            f.bytes_mut()
                .copy_from_slice(black_box(&self.frames[self.k]));
            self.k = if self.k + 1 == self.frames.len() {
                0
            } else {
                self.k + 1
            };
            burst.push(f);
        }
        self.p
            .process_burst(snap, CONSUMER_PORT, burst, NOW_MS, &mut |v| match v {
                Verdict::Tx(_, f) => pool.push(f),
                other => panic!("packet not forwarded: {other:?}"),
            });
    }
}

fn bench_established(c: &mut Criterion) {
    let config = config();
    let snap = snapshot(&config);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    // Set-up happens on the first call of each bench only, so that a filter that skips
    // a bench also skips building its million flows.
    for n in [1u64, 1_000, 100_000, 1_000_000] {
        let mut state: Option<Established> = None;
        g.bench_with_input(BenchmarkId::new("udp_established", n), &n, |b, &n| {
            let st = state.get_or_insert_with(|| {
                let frames: Vec<_> = shuffled(n).into_iter().map(udp_frame).collect();
                Established::new(&config, &snap, &frames.clone(), frames)
            });
            b.iter(|| st.step(&snap))
        });
    }
    // The worker's way: whole bursts through process_burst (staged lookups, prefetch).
    g.throughput(Throughput::Elements(BURST as u64));
    for n in [1_000u64, 100_000, 1_000_000] {
        let mut state: Option<(Established, Vec<VecFrame>, Vec<VecFrame>)> = None;
        g.bench_with_input(
            BenchmarkId::new("udp_established_burst32", n),
            &n,
            |b, &n| {
                let (st, pool, burst) = state.get_or_insert_with(|| {
                    let frames: Vec<_> = shuffled(n).into_iter().map(udp_frame).collect();
                    let st = Established::new(&config, &snap, &frames.clone(), frames);
                    let pool = (0..BURST).map(|_| VecFrame::new(&[0; FRAME_LEN])).collect();
                    (st, pool, Vec::with_capacity(BURST))
                });
                b.iter(|| st.step_burst(&snap, pool, burst))
            },
        );
    }
    g.throughput(Throughput::Elements(1));
    // TCP segments of known flows: the same path plus the TCP state machine.
    let mut state: Option<Established> = None;
    g.bench_with_input(
        BenchmarkId::new("tcp_ack_known_flow", 1000),
        &1000u64,
        |b, &n| {
            let st = state.get_or_insert_with(|| {
                let order = shuffled(n);
                let syns: Vec<_> = order.iter().map(|&i| tcp_frame(i, TcpFlags::SYN)).collect();
                let acks: Vec<_> = order.iter().map(|&i| tcp_frame(i, TcpFlags::ACK)).collect();
                Established::new(&config, &snap, &syns, acks)
            });
            b.iter(|| st.step(&snap))
        },
    );
    g.finish();
}

/// New TCP flows: every SYN is a new 5-tuple. One pipeline whose table holds `capacity`
/// takes `chunk` SYNs (so it never fills past a quarter, and every packet takes the
/// new-flow path: listener lookup, flow-table miss, Maglev pick, SNAT port search, insert,
/// rewrite), then a fresh one is built, untimed. The pipeline lives across criterion's
/// calls: a table rebuilt per call would leave criterion timing a few SYNs into a cold
/// table.
fn bench_new_flow(c: &mut Criterion) {
    let config = config();
    let snap = snapshot(&config);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    for (name, chunk, capacity) in [
        ("table_256k", 65_536u64, 1usize << 18),
        ("table_4M", 1_048_576, 1 << 22),
    ] {
        let mut syns: Vec<[u8; FRAME_LEN]> = Vec::new();
        let mut state: Option<(Pipeline<VecFrame>, usize)> = None;
        let mut buf = Some(VecFrame::new(&[0u8; FRAME_LEN]));
        g.bench_function(BenchmarkId::new("tcp_syn_new_flow", name), |b| {
            if syns.is_empty() {
                syns = shuffled(chunk)
                    .into_iter()
                    .map(|i| tcp_frame(i, TcpFlags::SYN))
                    .collect();
            }
            b.iter_custom(|iters| {
                let mut left = usize::try_from(iters).expect("iterations");
                let mut spent = Duration::ZERO;
                while left > 0 {
                    if state.as_ref().is_none_or(|(_, k)| *k == syns.len()) {
                        state = Some((pipeline(&config, &snap, capacity), 0));
                    }
                    let (p, k) = state.as_mut().expect("pipeline");
                    let n = left.min(syns.len() - *k);
                    let mut f = buf.take().expect("buffer");
                    let t = Instant::now();
                    for s in &syns[*k..*k + n] {
                        f = run_one(p, &snap, f, black_box(s));
                    }
                    spent += t.elapsed();
                    buf = Some(f);
                    *k += n;
                    assert_eq!(p.counters().new_flows, *k as u64);
                    left -= n;
                }
                spent
            })
        });
    }
    g.finish();
}

fn bench_snapshot(c: &mut Criterion) {
    let config = config();
    let snap = snapshot(&config);
    let endpoint = u32::from(ENDPOINT);
    let att = snap
        .attachment_of(CONSUMER_PORT, None)
        .expect("consumer attachment");
    let mut g = c.benchmark_group("snapshot");
    g.bench_function("listener_hit", |b| {
        b.iter(|| snap.listener(black_box(att), black_box(endpoint), 17, black_box(9000)))
    });
    g.bench_function("listener_miss", |b| {
        b.iter(|| snap.listener(black_box(att), black_box(endpoint), 17, black_box(9001)))
    });
    g.bench_function("local_hit", |b| {
        b.iter(|| snap.local(black_box(att), black_box(endpoint)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_established, bench_new_flow, bench_snapshot
}
criterion_main!(benches);
