//! Hot functions of `appliance::wire`: the checksum, parsing a frame down to its 5-tuple,
//! and the in-place NAT rewrite with incremental checksums.
//!
//! Run: `cargo bench -p appliance --bench wire`. Measured numbers are written next to the
//! code they describe (module docs of `wire::checksum` and `wire`).
//!
//! Measured on the benchmark machine (AMD EPYC KVM guest, TSC 2.596 GHz; see BENCHMARKS.md),
//! criterion's median, cycles = ns × 2.596:
//!
//! | bench | ns | ~cycles |
//! |---|---|---|
//! | `checksum/data/20` | 1.9 | 5 |
//! | `checksum/data/64` | 2.5 | 7 |
//! | `checksum/data/1500` | 45.4 | 118 |
//! | `checksum/update_u32` | 1.7 | 4 |
//! | `parse/five_tuple` (VLAN + IPv4 + TCP views) | 5.8 | 15 |
//! | `parse/ipv4_verify_checksum` | 2.0 | 5 |
//! | `parse/tcp_verify_checksum_1400` | 34.0 | 88 |
//! | `nat/rewrite_tcp` (addresses, ports, TTL, incremental checksums) | 15.4 | 40 |

use std::hint::black_box;

use appliance::wire::{
    checksum, vlan, EtherType, EthernetAddress, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpFlags, TcpPacket, TcpRepr, VlanRepr,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A VLAN-tagged TCP/IPv4 frame with `payload_len` payload bytes, checksums valid.
fn tcp_frame(payload_len: usize) -> Vec<u8> {
    let mut f = vec![0u8; 18 + 20 + 20 + payload_len];
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 1]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: EtherType::VLAN,
    }
    .emit(&mut f)
    .unwrap();
    VlanRepr {
        pcp: 0,
        dei: false,
        vid: 100,
        ethertype: EtherType::IPV4,
    }
    .emit(&mut f[14..])
    .unwrap();
    let (src, dst) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    Ipv4Repr {
        src_addr: src.into(),
        dst_addr: dst.into(),
        protocol: IpProtocol::TCP,
        payload_len: 20 + payload_len,
        ttl: 64,
    }
    .emit(&mut f[18..])
    .unwrap();
    for (i, b) in f[58..].iter_mut().enumerate() {
        *b = i.to_le_bytes()[0];
    }
    TcpRepr {
        src_port: 40000,
        dst_port: 443,
        seq_number: 1,
        ack_number: 2,
        flags: TcpFlags::ACK,
        window_len: 502,
        urgent_at: 0,
    }
    .emit(&mut f[38..], src, dst, payload_len)
    .unwrap();
    f
}

/// Source and destination address, protocol, source and destination port.
type FiveTuple = ([u8; 4], [u8; 4], u8, u16, u16);

/// The flow key the fast path looks up: parse L2/L3/L4 and read the 5-tuple.
#[inline(never)]
fn five_tuple(frame: &[u8]) -> Option<FiveTuple> {
    let l2 = vlan::l2_header(frame).ok()?;
    if l2.ethertype != EtherType::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(frame.get(l2.header_len..)?).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some((
        ip.src_addr_bytes(),
        ip.dst_addr_bytes(),
        ip.protocol().0,
        tcp.src_port(),
        tcp.dst_port(),
    ))
}

/// Consumer → target translation as the worker does it.
#[inline(never)]
fn nat(frame: &mut [u8]) {
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut frame[18..]) else {
        return;
    };
    let (src, dst) = (ip.src_addr_bytes(), ip.dst_addr_bytes());
    let (new_src, new_dst) = ([172, 16, 0, 10], [192, 168, 7, 7]);
    if let Ok(mut tcp) = TcpPacket::new_checked(ip.payload_mut()) {
        tcp.rewrite_src_port(61000);
        tcp.rewrite_dst_port(8443);
        tcp.update_checksum_for_addr(src, new_src);
        tcp.update_checksum_for_addr(dst, new_dst);
    }
    ip.rewrite_src_addr(new_src);
    ip.rewrite_dst_addr(new_dst);
    ip.decrement_ttl();
}

fn bench_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for len in [20usize, 64, 1500] {
        let data: Vec<u8> = (0..len).map(|i| i.to_le_bytes()[0]).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("data/{len}"), |b| {
            b.iter(|| checksum::data(black_box(&data)))
        });
    }
    g.bench_function("update_u32", |b| {
        b.iter(|| {
            checksum::update_u32(
                black_box(0x1234),
                black_box([10, 0, 0, 1]),
                black_box([172, 16, 0, 9]),
            )
        })
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let frame = tcp_frame(64);
    c.bench_function("parse/five_tuple", |b| {
        b.iter(|| five_tuple(black_box(&frame)))
    });
    c.bench_function("parse/ipv4_verify_checksum", |b| {
        let ip = Ipv4Packet::new_checked(&frame[18..]).unwrap();
        b.iter(|| black_box(&ip).verify_checksum())
    });
    let big = tcp_frame(1400);
    c.bench_function("parse/tcp_verify_checksum_1400", |b| {
        let ip = Ipv4Packet::new_checked(&big[18..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        b.iter(|| black_box(&tcp).verify_checksum(ip.src_addr(), ip.dst_addr()))
    });
}

fn bench_nat(c: &mut Criterion) {
    let frame = tcp_frame(64);
    c.bench_function("nat/rewrite_tcp", |b| {
        let mut f = frame.clone();
        b.iter(|| {
            f.copy_from_slice(&frame);
            nat(black_box(&mut f));
        })
    });
}

criterion_group!(benches, bench_checksum, bench_parse, bench_nat);
criterion_main!(benches);
