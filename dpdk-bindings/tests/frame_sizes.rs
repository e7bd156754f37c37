//! Frame sizes on real virtual devices, in their own process (one EAL per process): what
//! a `net_tap` port (needs root and /dev/net/tun, like the end-to-end tests) refuses in
//! the middle of a TX burst, which MTUs it takes, how a frame longer than an mbuf arrives;
//! and jumbo frames on `net_ring` with mbufs sized for them.

use std::sync::Arc;

use dpdk_bindings::port::device_info;
use dpdk_bindings::{Eal, Mbuf, Mempool, Port, PortConfig, SocketId};

fn frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![tag; len];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    f
}

fn fill(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("pool has room");
    m.append(bytes.len())
        .expect("tailroom")
        .copy_from_slice(bytes);
    m
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.0));
    }
}

#[test]
fn refused_frames_cost_only_themselves_and_jumbo_frames_fit_one_mbuf() {
    assert!(
        std::path::Path::new("/dev/net/tun").exists(),
        "this test needs /dev/net/tun (and root): run `make test` as root"
    );
    let prefix = format!("plk-tap-{}", std::process::id());
    let _cleanup = Cleanup(prefix.clone());
    let iface = format!("plkt{}", std::process::id() % 100_000);
    let args = vec![
        "--no-huge".to_string(),
        "-m".into(),
        "256".into(),
        "--no-pci".into(),
        "-l".into(),
        "0".into(),
        format!("--file-prefix={prefix}"),
        "--log-level=lib.eal:error".into(),
        "--log-level=pmd.net.tap:error".into(),
        format!("--vdev=net_tap0,iface={iface}"),
        "--vdev=net_ring0".into(),
        "--vdev=net_ring1".into(),
    ];
    let eal = Eal::init(&args).expect("EAL init (root and /dev/net/tun needed)");
    let pool = Arc::new(
        Mempool::new(
            "tap-test",
            1023,
            32,
            dpdk_bindings::mempool::DEFAULT_DATA_ROOM,
            SocketId::ANY,
        )
        .expect("mempool"),
    );
    let cfg = PortConfig {
        rx_desc: 64,
        tx_desc: 64,
        ..PortConfig::default()
    };
    // What the tap takes: at most 1504 (its frames end at 1522 bytes). 2000 used to fail
    // deep in DPDK with a bare EINVAL; now the message says what the device takes.
    let tap = device_info("net_tap0").expect("info");
    assert_eq!(tap.driver, "net_tap");
    assert_eq!(*tap.mtu_range().end(), 1504);
    assert!(tap.has_rss() && tap.rx_scatter);
    let e = Port::configure(
        "net_tap0",
        &PortConfig {
            mtu: Some(2000),
            ..cfg.clone()
        },
        &pool,
    )
    .expect_err("MTU 2000 refused");
    assert!(
        e.to_string()
            .contains("MTU 2000 is not supported by the device (net_tap: MTU 46..=1504"),
        "{e}"
    );
    let mut port = Port::configure("net_tap0", &cfg, &pool).expect("configure");
    port.start().expect("start");
    assert_eq!(port.mtu().expect("mtu"), 1500);
    let mut tx = port.tx_queue(0).expect("tx queue");

    // net_tap stops a burst at a frame longer than its MTU allows; before, everything
    // after it was dropped with it.
    let mut burst: Vec<Mbuf> = std::iter::once(frame(60, 1))
        .chain(std::iter::once(frame(1600, 2)))
        .chain((0..14).map(|i| frame(60 + i, 3)))
        .map(|f| fill(&pool, &f))
        .collect();
    let before = port.stats().expect("stats").tx_packets;
    let out = tx.tx_burst_retry(&mut burst, 4);
    assert_eq!((out.sent, out.refused), (15, 1), "{out:?}");
    assert_eq!(out.refused_bytes, 1600);
    assert!(burst.is_empty());
    assert_eq!(port.stats().expect("stats").tx_packets - before, 15);

    drop(tx);
    drop(port);
    assert_eq!(pool.in_use(), 0, "sent and refused mbufs all went back");

    assert!(!device_info("net_ring0").expect("info").has_rss());
    drop(pool);

    jumbo_frames_on_net_ring();
    a_full_queue_refuses_only_what_does_not_fit();
    drop(eal);
}

/// A TX queue that nobody drains: what fits is sent, only the rest is refused (and freed),
/// however the bursts fall.
fn a_full_queue_refuses_only_what_does_not_fit() {
    let pool = Arc::new(Mempool::new("full", 4095, 0, 256 + 128, SocketId::ANY).expect("pool"));
    let cfg = PortConfig {
        rx_desc: 64,
        tx_desc: 64,
        ..PortConfig::default()
    };
    let mut port = Port::configure("net_ring1", &cfg, &pool).expect("net_ring1");
    port.start().expect("start");
    let mut tx = port.tx_queue(0).expect("tx");
    let mut rx = port.rx_queue(0).expect("rx");
    let (mut sent, mut refused) = (0, 0);
    for _ in 0..100 {
        let mut burst: Vec<Mbuf> = (0..32).map(|i| fill(&pool, &frame(60 + i, 9))).collect();
        let out = tx.tx_burst_retry(&mut burst, 4);
        assert!(burst.is_empty());
        sent += out.sent;
        refused += out.refused;
    }
    assert_eq!(sent + refused, 3200);
    assert!(refused > 0, "the ring filled up");
    let mut got = Vec::new();
    while rx.rx_burst(&mut got, 32) > 0 {}
    assert_eq!(got.len(), sent, "everything counted as sent is in the ring");
    drop(got);
    drop((rx, tx, port));
    assert_eq!(pool.in_use(), 0, "refused mbufs were freed");
}

/// MTU 9000 on net_ring (which takes an MTU only at configuration) with mbufs sized for
/// it: a 9014-byte frame goes round in one segment, byte-exact.
fn jumbo_frames_on_net_ring() {
    let room = dpdk_bindings::mempool::data_room_for(9000 + 22).expect("room");
    let pool = Arc::new(Mempool::new("jumbo", 255, 0, room, SocketId::ANY).expect("pool"));
    let cfg = PortConfig {
        rx_desc: 64,
        tx_desc: 64,
        mtu: Some(9000),
        rx_scatter: true,
        ..PortConfig::default()
    };
    let mut port = Port::configure("net_ring0", &cfg, &pool).expect("MTU 9000 on net_ring");
    port.start().expect("start");
    assert_eq!(port.mtu().expect("mtu"), 9000);
    let mut rx = port.rx_queue(0).expect("rx");
    let mut tx = port.tx_queue(0).expect("tx");
    let want = frame(9014, 7);
    let mut burst = vec![fill(&pool, &want), fill(&pool, &frame(60, 8))];
    assert_eq!(tx.tx_burst_retry(&mut burst, 4).sent, 2);
    let mut got = Vec::new();
    rx.rx_burst(&mut got, 8);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].segments(), 1, "one mbuf holds the jumbo frame");
    assert_eq!(got[0].data(), &want[..]);
    drop(got);
    drop((rx, tx, port));
    assert_eq!(pool.in_use(), 0);
}
