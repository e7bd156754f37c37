//! A `net_tap` port (needs root and /dev/net/tun, like the end-to-end tests): what the
//! device refuses in the middle of a TX burst, in its own process (one EAL per process).

use std::sync::Arc;

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
fn a_refused_frame_costs_only_itself_not_the_rest_of_its_burst() {
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
    drop(pool);
    drop(eal);
}
