//! Moves real packets through DPDK virtual devices, in its own process (EAL initialises
//! once per process, so this file holds a single test).

use std::sync::Arc;

use dpdk_bindings::{ring, Eal, LcoreId, Mbuf, Mempool, Port, PortConfig, SocketId};

const POOL_SIZE: u32 = 1023;

fn frame(i: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental EtherType
    for (j, b) in f[14..].iter_mut().enumerate() {
        *b = i.wrapping_mul(31).wrapping_add(j.to_le_bytes()[0]);
    }
    f
}

fn fill(pool: &Mempool, bytes: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("pool has room");
    m.append(bytes.len())
        .expect("tailroom")
        .copy_from_slice(bytes);
    m
}

/// Removes the test's files and the EAL's runtime directory however the test ends.
struct Cleanup(Vec<std::path::PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[test]
fn packets_cross_virtual_ports_byte_exact_and_mbufs_return() {
    let dir = std::env::temp_dir().join(format!("plk-bind-{}", std::process::id()));
    let _cleanup = Cleanup(vec![
        dir.clone(),
        std::path::PathBuf::from(format!("/var/run/dpdk/plk-bind-{}", std::process::id())),
    ]);
    std::fs::create_dir_all(&dir).unwrap();
    let pcap_out = dir.join("out.pcap");
    let args = vec![
        "--no-huge".to_string(),
        "-m".into(),
        "256".into(),
        "--no-pci".into(),
        "-l".into(),
        "0,1".into(),
        format!("--file-prefix=plk-bind-{}", std::process::id()),
        "--log-level=lib.eal:error".into(),
        "--vdev=net_ring0".into(),
        format!("--vdev=net_pcap0,tx_pcap={}", pcap_out.display()),
    ];
    let eal = Eal::init(&args).expect("EAL init with --no-huge");
    assert!(Eal::init(&args).is_err(), "a second init must be refused");
    assert_eq!(eal.port_count(), 2);
    assert_eq!(eal.main_lcore(), LcoreId(0));
    assert!(eal.lcore_enabled(LcoreId(1)));
    let h = dpdk_bindings::lcore::launch(LcoreId(1), || (dpdk_bindings::lcore::current(), 6 * 7))
        .expect("launch on lcore 1");
    assert_eq!(h.join().unwrap(), (Some(LcoreId(1)), 42));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = dpdk_bindings::lcore::launch(LcoreId(1), move || rx.recv().is_ok()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(!h.is_finished(), "still running");
    tx.send(()).unwrap();
    assert!(h.join().unwrap());
    let h =
        dpdk_bindings::lcore::launch(LcoreId(1), || -> u32 { panic!("worker failed") }).unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !h.is_finished() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(
        h.is_finished(),
        "a panicked job shows as finished without a join"
    );
    assert!(
        h.join().is_err(),
        "a panic comes back as an error, not an abort"
    );

    let pool = Arc::new(
        Mempool::new(
            "bind-test",
            POOL_SIZE,
            32,
            dpdk_bindings::mempool::DEFAULT_DATA_ROOM,
            SocketId::ANY,
        )
        .expect("mempool"),
    );
    assert_eq!(pool.available(), POOL_SIZE);

    // net_ring: what is sent on a queue comes back on the same queue.
    let cfg = PortConfig::default();
    let mut ring_port = Port::configure("net_ring0", &cfg, &pool).expect("configure net_ring0");
    ring_port.start().expect("start");
    assert!(ring_port.link().expect("link").up);
    assert_eq!(ring_port.mtu().expect("mtu"), 1500, "the default MTU");
    let mut rx = ring_port.rx_queue(0).unwrap();
    let mut tx = ring_port.tx_queue(0).unwrap();
    assert!(ring_port.rx_queue(0).is_err(), "a queue has one owner");

    let sent_frames: Vec<Vec<u8>> = (0..32u8)
        .map(|i| frame(i, 60 + usize::from(i) * 40))
        .collect();
    let mut burst: Vec<Mbuf> = sent_frames.iter().map(|f| fill(&pool, f)).collect();
    assert_eq!(pool.in_use(), 32);
    let sent = tx.tx_burst(&mut burst);
    assert_eq!(sent, 32);
    assert!(burst.is_empty());

    let mut got: Vec<Mbuf> = Vec::with_capacity(64);
    for _ in 0..100 {
        rx.rx_burst(&mut got, 64);
        if got.len() >= 32 {
            break;
        }
    }
    assert_eq!(got.len(), 32);
    for (m, want) in got.iter().zip(&sent_frames) {
        assert_eq!(m.data(), &want[..], "byte-exact round trip");
        assert_eq!(m.segments(), 1);
    }
    let stats = ring_port.stats().unwrap();
    assert_eq!(stats.tx_packets, 32);
    assert_eq!(stats.rx_packets, 32);
    // (net_ring counts packets only; byte counters are checked on net_pcap below.)

    // Editing in place: push and pop 4 bytes at the front, trim the tail.
    let mut m = got.pop().unwrap();
    let before = m.data().to_vec();
    m.prepend(4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(&m.data()[..4], &[1, 2, 3, 4]);
    m.adj(4).unwrap();
    assert_eq!(m.data(), &before[..]);
    m.trim(10).unwrap();
    assert_eq!(m.data_len(), before.len() - 10);
    assert!(m.adj(100_000).is_err());
    drop(m);

    // Worker handoff ring: SP/SC, ownership moves through it.
    let (mut prod, mut cons) = ring::spsc("bind-handoff", 64, SocketId::ANY).unwrap();
    let n_left = got.len();
    // The user tag travels with the mbuf (the pipeline marks packets it passes on).
    got[0].set_user_tag(0xfeed_0001);
    assert_eq!(got[0].user_tag(), 0xfeed_0001);
    assert_eq!(prod.enqueue_burst(&mut got), n_left);
    assert_eq!(cons.len(), n_left);
    let mut back = Vec::new();
    assert_eq!(cons.dequeue_burst(&mut back, 64), n_left);
    assert_eq!(back[0].user_tag(), 0xfeed_0001);
    drop(back);
    // Leftovers in a dropped ring are freed, not leaked.
    let mut extra = vec![fill(&pool, &frame(9, 64)), fill(&pool, &frame(10, 64))];
    prod.enqueue_burst(&mut extra);
    drop(prod);
    drop(cons);

    // net_pcap: TX lands in a capture file, byte-exact.
    let mut pcap_port = Port::configure("net_pcap0", &cfg, &pool).expect("configure net_pcap0");
    pcap_port.start().unwrap();
    let mut ptx = pcap_port.tx_queue(0).unwrap();
    let mut burst: Vec<Mbuf> = sent_frames[..4].iter().map(|f| fill(&pool, f)).collect();
    let out = ptx.tx_burst_retry(&mut burst, 4);
    assert_eq!((out.sent, out.refused), (4, 0));
    assert!(burst.is_empty());
    let pstats = pcap_port.stats().unwrap();
    assert_eq!(pstats.tx_packets, 4);
    let bytes: u64 = sent_frames[..4].iter().map(|f| f.len() as u64).sum();
    assert_eq!(pstats.tx_bytes, bytes);
    let xstats = pcap_port.xstats().unwrap();
    assert!(!xstats.is_empty());
    drop(ptx);
    drop(pcap_port); // closes the device, flushing the capture
    let cap = std::fs::read(&pcap_out).unwrap();
    let records = parse_pcap(&cap);
    assert_eq!(records.len(), 4);
    for (r, want) in records.iter().zip(&sent_frames) {
        assert_eq!(r, want);
    }

    drop(rx);
    drop(tx);
    drop(ring_port);
    // Every mbuf went back to its pool.
    assert_eq!(pool.in_use(), 0);
    assert_eq!(pool.available(), POOL_SIZE);
    drop(pool);
    drop(eal);
}

/// Minimal reader of a little-endian classic pcap file.
fn parse_pcap(b: &[u8]) -> Vec<Vec<u8>> {
    assert!(b.len() >= 24);
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= b.len() {
        let incl = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16;
        out.push(b[off..off + incl].to_vec());
        off += incl;
    }
    out
}
