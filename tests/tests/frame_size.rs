//! Frames that do not fit: a frame the egress port cannot carry is dropped and counted as
//! too big, alone, without taking the rest of its TX burst with it; frames larger than
//! the port's MTU are counted where they are dropped.

use std::time::Duration;

use privlink_e2e::{Options, Topology, ENDPOINT_IP};

const T: Duration = Duration::from_secs(60);

/// The trigger of issue 9 §4: the consumer interface's MTU raised to 9000, one 1,600-byte
/// UDP datagram to the endpoint followed by 15 small ones, 20 times. Before, the big one
/// stopped the TX burst it was in and everything after it was dropped as `tx_full`: 23 of
/// the 300 small datagrams arrived.
#[test]
fn one_oversize_datagram_does_not_take_its_burst_with_it() {
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
        Topology::drops(&s, "tx_oversize"),
        20,
        "each big datagram counted as too big for the provider port: {s}"
    );
}
