//! A fixed amount of work through the graph, for instruction counts per node:
//!
//! ```text
//! cargo build --release -p appliance --example graph_profile
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     target/release/examples/graph_profile udp 1000 2000
//! callgrind_annotate /tmp/cg.out | grep appliance/src/graph
//! ```
//!
//! `udp FLOWS BURSTS` replays established UDP flows in bursts of 32 (as the worker does);
//! `udp6` the same from IPv6 consumers to the endpoint's IPv6 address (NAT64), `udp66` to
//! IPv6 targets (NAT66, the configuration `scripts/bench.sh --proto udp66` makes);
//! `syn FLOWS` opens FLOWS new TCP flows in bursts of 32. `probe FLOWS BURSTS PER_BURST` is
//! `udp` with the worker's upkeep (`Pipeline::poll`) after every burst and PER_BURST health
//! probe SYNs queued for it before each (from the provider attachment's own address to a
//! target, as the checker queues them): the difference between PER_BURST 1 and 0, divided
//! by BURSTS, is what one probe segment costs the worker; a fifth argument `replies` also
//! hands it a target's SYN-ACK for each. The nodes live in files of their
//! own, so callgrind's per-file totals are the per-node breakdown (inlined code is
//! attributed to the file it comes from). It prints the packets it ran, to divide by.

use std::net::{IpAddr, Ipv4Addr};

use appliance::graph::frame::VecFrame;
use appliance::graph::{Pipeline, PipelineSettings, Verdict};
use appliance::health::link::{ProbeQueues, ProbeSegment};
use appliance::tables::snapshot::{Handles, Snapshot};
use appliance::wire::ipv4::{IpProtocol, Ipv4Repr};
use appliance::wire::tcp::{TcpFlags, TcpRepr};
use appliance::wire::udp::UdpRepr;
use mgmt::config::Config;

const BENCH_TOML: &str = include_str!("../../scripts/bench/privlink-bench.toml");
const MAC_C: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
const MAC_P: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb0];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x10];
const ENDPOINT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 100);
const BURST: usize = 32;
const LEN: usize = 60;
const LEN6: usize = 80;

fn frame(i: u64, tcp: bool) -> [u8; LEN] {
    let src = Ipv4Addr::from(0x0a01_0100 + u32::try_from(i / 64_000).expect("< 2^32 flows"));
    let sport = 1024 + u16::try_from(i % 64_000).expect("< 64000");
    let mut f = [0u8; LEN];
    f[0..6].copy_from_slice(&MAC_C);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let l4_len = if tcp {
        TcpRepr {
            src_port: sport,
            dst_port: 80,
            seq_number: 1,
            ack_number: 0,
            flags: TcpFlags::SYN,
            window_len: 64240,
            urgent_at: 0,
        }
        .emit(&mut f[34..54], src, ENDPOINT, 0)
        .expect("tcp");
        20
    } else {
        UdpRepr {
            src_port: sport,
            dst_port: 9000,
        }
        .emit(&mut f[34..], src, ENDPOINT, 18)
        .expect("udp");
        26
    };
    Ipv4Repr {
        src_addr: src,
        dst_addr: ENDPOINT,
        protocol: if tcp {
            IpProtocol::TCP
        } else {
            IpProtocol::UDP
        },
        payload_len: l4_len,
        ttl: 64,
    }
    .emit(&mut f[14..])
    .expect("ipv4");
    f
}

/// Flow `i`'s UDP datagram (18 bytes) from IPv6 consumer `fd00:c1::1:0:0 + i / 64000` to
/// the endpoint's IPv6 address, as `gen_pcap.py --kind udp6` makes it.
fn frame6(i: u64) -> Vec<u8> {
    let base = u128::from("fd00:c1::1:0:0".parse::<std::net::Ipv6Addr>().expect("v6"));
    let src = base + u128::from(i / 64_000);
    let dst = u128::from("fd00:c1::64".parse::<std::net::Ipv6Addr>().expect("v6"));
    let sport = 1024 + u16::try_from(i % 64_000).expect("< 64000");
    let mut f = vec![0u8; LEN6];
    f[0..6].copy_from_slice(&MAC_C);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    f[14] = 0x60;
    f[18..20].copy_from_slice(&26u16.to_be_bytes());
    f[20] = 17;
    f[21] = 64;
    f[22..38].copy_from_slice(&src.to_be_bytes());
    f[38..54].copy_from_slice(&dst.to_be_bytes());
    let u = &mut f[54..];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&9000u16.to_be_bytes());
    u[4..6].copy_from_slice(&26u16.to_be_bytes());
    let c = appliance::wire::icmpv6::l4_checksum_v6(src, dst, 17, u);
    u[6..8].copy_from_slice(&c.to_be_bytes());
    f
}

/// The bench configuration's text for `mode`: IPv6 on the consumer side for `udp6` and
/// `udp66`, IPv6 targets and SNAT addresses for `udp66` (as `scripts/bench.sh` makes it).
fn bench_toml(mode: &str) -> String {
    let v6 = matches!(mode, "udp6" | "udp66");
    let field = |on: bool, s: &str| if on { s.to_owned() } else { String::new() };
    let mut text = BENCH_TOML
        .replace("@ADDRESS6@", &field(v6, "address6 = \"fd00:c1::1/64\""))
        .replace(
            "@SERVICE_TYPES@",
            &field(v6, "supported_ip_address_types = [\"ipv4\", \"ipv6\"]"),
        )
        .replace(
            "@ENDPOINT6@",
            &field(v6, "ip_address_type = \"dualstack\"\nip6 = \"fd00:c1::64\""),
        );
    if mode == "udp66" {
        let neigh: Vec<String> = (11..27)
            .map(|n| format!("{{ ip = \"fd00:b1::{n}\", mac = \"02:00:00:00:02:{n:02x}\" }}"))
            .collect();
        text = text.replacen(
            "address = \"10.2.0.1/24\"\n",
            &format!(
                "address = \"10.2.0.1/24\"\naddress6 = \"fd00:b1::1/64\"\nstatic_neighbours6 = [{}]\n",
                neigh.join(", ")
            ),
            1,
        );
        let snat6: Vec<String> = (0..16).map(|i| format!("\"fd00:b1::1{i:02x}\"")).collect();
        text = text.replacen(
            "\"10.2.0.115\"]",
            &format!("\"10.2.0.115\", {}]", snat6.join(", ")),
            1,
        );
        for n in 11..27 {
            text = text.replace(
                &format!("{{ ip = \"10.2.0.{n}\", port = 9000 }}"),
                &format!("{{ ip = \"fd00:b1::{n}\", port = 9000 }}"),
            );
        }
    }
    text
}

/// Runs `frames` through `p` in bursts; returns how many were forwarded. Sent frames are
/// refilled for the next burst rather than allocated anew (a 2 KiB zeroed buffer per
/// packet cost more instructions than the graph itself), as the worker's mbufs are reused.
fn run(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    frames: &[Vec<u8>],
    pool: &mut Vec<VecFrame>,
) -> usize {
    let mut sent = 0;
    let mut burst = Vec::with_capacity(BURST);
    for chunk in frames.chunks(BURST) {
        for f in chunk {
            match pool.pop() {
                Some(mut frame) => {
                    frame.refill(f);
                    burst.push(frame);
                }
                None => burst.push(VecFrame::new(f)),
            }
        }
        p.process_burst(snap, 0, &mut burst, 1_000, &mut |v| {
            if let Verdict::Tx(_, f) = v {
                sent += 1;
                pool.push(f);
            }
        });
    }
    sent
}

/// A target's SYN-ACK to probe port `port` on the provider attachment's own address, as
/// it arrives on the provider port.
fn probe_reply(port: u16) -> [u8; LEN] {
    let (target, own) = (Ipv4Addr::new(10, 2, 0, 11), Ipv4Addr::new(10, 2, 0, 1));
    let mut f = [0u8; LEN];
    f[0..6].copy_from_slice(&MAC_P);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0x02, 0x0b]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    TcpRepr {
        src_port: 9000,
        dst_port: port,
        seq_number: 7,
        ack_number: 1,
        flags: TcpFlags::SYN | TcpFlags::ACK,
        window_len: 64240,
        urgent_at: 0,
    }
    .emit(&mut f[34..54], target, own, 0)
    .expect("tcp");
    Ipv4Repr {
        src_addr: target,
        dst_addr: own,
        protocol: IpProtocol::TCP,
        payload_len: 20,
        ttl: 64,
    }
    .emit(&mut f[14..])
    .expect("ipv4");
    f
}

/// `bursts` bursts of `frames` in turn, each after `per_burst` probe SYNs were queued,
/// followed by a burst of as many SYN-ACKs for them on the provider port (passed to the
/// checker's queue, which is emptied as the checker would) when `replies`, and by the
/// worker's upkeep; returns the packets forwarded and the probe segments sent.
fn run_probed(
    p: &mut Pipeline<VecFrame>,
    snap: &Snapshot,
    frames: &[Vec<u8>],
    bursts: usize,
    per_burst: u16,
    replies: bool,
) -> (usize, u64) {
    let queues = ProbeQueues::new(1, 4096);
    p.set_probe_link(queues.link(0).expect("one worker"));
    let (mut sent, mut port) = (0, 0u16);
    let mut burst = Vec::with_capacity(BURST);
    for chunk in frames.chunks(BURST).cycle().take(bursts) {
        for _ in 0..per_burst {
            port = port.wrapping_add(1);
            queues.send(ProbeSegment {
                attachment: 1,
                src: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)),
                dst: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 11)),
                tcp: TcpRepr {
                    src_port: 32768 + port % 32768,
                    dst_port: 9000,
                    seq_number: u32::from(port),
                    ack_number: 0,
                    flags: TcpFlags::SYN,
                    window_len: 64240,
                    urgent_at: 0,
                },
                payload: Vec::new(),
            });
        }
        burst.extend(chunk.iter().map(|f| VecFrame::new(f)));
        p.process_burst(snap, 0, &mut burst, 1_000, &mut |v| {
            sent += usize::from(matches!(v, Verdict::Tx(..)))
        });
        if replies && per_burst > 0 {
            let first = port.wrapping_sub(per_burst - 1);
            burst.extend(
                (0..per_burst)
                    .map(|k| VecFrame::new(&probe_reply(32768 + first.wrapping_add(k) % 32768))),
            );
            p.process_burst(snap, 1, &mut burst, 1_000, &mut |_| {});
            while queues.replies.pop().is_some() {}
        }
        p.poll(snap, 1_000);
        p.drain_emitted().for_each(drop);
    }
    (sent, p.counters().probes_sent)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("udp", String::as_str);
    let flows: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let bursts: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let text = bench_toml(mode)
        .replace("@EAL_ARGS@", "\"-l\", \"0,1\"")
        .replace("@RX_DESC@", "1024")
        .replace("@TX_DESC@", "1024")
        .replace("@DIR@", "/tmp/privlink-bench")
        .replace("@FLOWS_PER_WORKER@", "1024")
        .replace("@EXTRA_TABLES@", "");
    let config = Config::from_toml_str(&text).expect("bench configuration");
    let snap = Snapshot::build(
        1,
        &config,
        &[MAC_C, MAC_P],
        &[1500, 1500],
        &config.state(),
        &mut Handles::default(),
    )
    .expect("snapshot");
    let mut settings: PipelineSettings = appliance::daemon::pipeline_settings(&config, 1);
    settings.flow_capacity = (2 * flows).max(1024);
    let mut p = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
    p.drain_emitted().for_each(drop);
    let tcp = mode == "syn";
    let frames: Vec<Vec<u8>> = (0..flows as u64)
        .map(|i| match mode {
            "udp6" | "udp66" => frame6(i),
            _ => frame(i, tcp).to_vec(),
        })
        .collect();
    let mut pool = Vec::with_capacity(BURST);
    let created = run(&mut p, &snap, &frames, &mut pool);
    if mode == "probe" {
        let per_burst: u16 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1);
        let replies = args.get(5).is_some_and(|a| a == "replies");
        let (sent, probes) = run_probed(&mut p, &snap, &frames, bursts, per_burst, replies);
        let c = p.counters();
        println!(
            "{created} flows, {sent} packets forwarded, {probes} probe segments sent, {} \
             replies to the checker, {} dropped",
            c.probe_replies,
            c.total_drops()
        );
        return;
    }
    if tcp {
        println!("{created} new flows");
        return;
    }
    let mut sent = 0;
    for _ in 0..(bursts * BURST).div_ceil(frames.len()) {
        sent += run(&mut p, &snap, &frames, &mut pool);
    }
    println!("{created} flows, {sent} packets forwarded");
}
