//! Frames that do not fit: a frame larger than its port's MTU is counted where it is
//! dropped (`rx_oversize` on receipt, `tx_oversize` at transmit), alone, without taking the
//! rest of its burst with it; an MTU the device cannot take is refused at start.

use std::time::Duration;

use privlink_e2e::{Options, Topology, ENDPOINT_IP};

const T: Duration = Duration::from_secs(60);

/// The trigger of issue 9 §4: the consumer interface's MTU raised to 9000, one 1,600-byte
/// UDP datagram to the endpoint followed by 15 small ones, 20 times. Before, the big one
/// was forwarded, stopped the provider port's TX burst it was in, and everything after it
/// was dropped as `tx_full`: 12 (23 in the issue) of the 300 small datagrams arrived. Now
/// the big one is dropped on receipt (the consumer port's MTU is 1500), counted, and all
/// 300 small ones arrive. Then frames longer than an mbuf (5,000 bytes), which used to
/// vanish inside the tap driver without any counter, are counted the same way.
#[test]
fn frames_over_the_port_mtu_are_counted_on_receipt_and_spare_their_burst() {
    let t = Topology::start(Options::default());
    t.consumer
        .must(&["ip", "link", "set", &t.consumer_if, "mtu", "9000"]);
    let plain = t.client(&["udp-bursts", ENDPOINT_IP, "9000", "20", "0", "15"], T);
    assert_eq!(plain["small_ok"], 300, "without the big one: {plain}");
    let mixed = t.client(&["udp-bursts", ENDPOINT_IP, "9000", "20", "1600", "15"], T);
    assert_eq!(
        mixed["small_ok"],
        300,
        "every small datagram arrives: {mixed}\n{}",
        t.log()
    );
    assert_eq!(mixed["big_replies"], 0, "{mixed}");
    let s = t.stats();
    assert_eq!(
        Topology::drops(&s, "tx_full"),
        0,
        "the queue was never full: {s}"
    );
    assert_eq!(
        Topology::drops(&s, "rx_oversize"),
        20,
        "each big one, once: {s}"
    );
    assert_eq!(Topology::drops(&s, "tx_oversize"), 0, "{s}");

    let jumbo = t.client(&["udp-bursts", ENDPOINT_IP, "9000", "20", "5000", "15"], T);
    assert_eq!(jumbo["small_ok"], 300, "{jumbo}");
    let s = t.stats();
    assert_eq!(
        Topology::drops(&s, "rx_oversize"),
        40,
        "frames longer than an mbuf are counted too: {s}"
    );
    assert_eq!(Topology::drops(&s, "multi_segment"), 0, "{s}");
}

/// A datagram that fits the consumer port but not the provider port's smaller MTU (and
/// may not be answered with fragmentation-needed: DF is clear) is dropped alone, as
/// `too_big` by the packet path (which knows the egress MTU): the 15 small datagrams
/// behind it in the same burst go out. Before, the tap refused it and the rest of the
/// burst was dropped with it as `tx_full`.
#[test]
fn a_frame_over_the_egress_mtu_is_dropped_alone() {
    let t = Topology::start(Options {
        port_mtu: [None, Some(1400)],
        ..Options::default()
    });
    let r = t.client(
        &[
            "udp-bursts",
            ENDPOINT_IP,
            "9000",
            "20",
            "1450",
            "15",
            "nodf",
        ],
        T,
    );
    assert_eq!(r["small_ok"], 300, "{r}\n{}", t.log());
    let s = t.stats();
    // The packet path knows the egress MTU and drops a datagram without DF that does not
    // fit (no fragmentation yet) before it reaches the device; the worker's check at
    // transmit (tx_oversize) is the backstop for anything else.
    assert_eq!(Topology::drops(&s, "too_big"), 20, "{s}");
    assert_eq!(Topology::drops(&s, "tx_oversize"), 0, "{s}");
    assert_eq!(Topology::drops(&s, "tx_full"), 0, "{s}");
    assert_eq!(Topology::drops(&s, "rx_oversize"), 0, "{s}");
}

/// `mtu = 2000` on a net_tap port used to fail at start with a bare `EINVAL` from DPDK;
/// now the start is refused with what the device takes. An MTU it takes works (1400
/// above).
#[test]
fn an_mtu_the_device_cannot_take_is_refused_with_its_range() {
    let mut t = Topology::start(Options::default());
    t.opts.port_mtu = [Some(2000), None];
    std::fs::write(&t.config_path, t.config_toml()).expect("config");
    let log = t.start_expecting_failure();
    assert!(
        log.contains("ports[0].mtu = 2000: the device does not take it (net_tap: MTU 46..=1504 (frames up to 1522 bytes))"),
        "{log}"
    );
}
