//! `rte_flow` calls on a device without flow support (net_null): every call fails with an
//! error that names the call, the device and the rule, and nothing panics. (No virtual
//! device here creates rules; the success path is exercised on NICs that can.) One test:
//! the EAL initialises once per process.

use std::net::Ipv4Addr;
use std::sync::Arc;

use dpdk_bindings::{
    Eal, FlowAction, FlowItem, FlowRule, Mempool, Port, PortConfig, QueueId, SocketId,
};

#[test]
fn flow_calls_on_a_device_without_rte_flow_fail_cleanly() {
    let prefix = format!("plk-flow-{}", std::process::id());
    let args = vec![
        "--no-huge".to_string(),
        "-m".into(),
        "128".into(),
        "--no-pci".into(),
        "-l".into(),
        "0".into(),
        format!("--file-prefix={prefix}"),
        "--log-level=lib.eal:error".into(),
        "--vdev=net_null0".into(),
    ];
    let eal = Eal::init(&args).expect("EAL init with --no-huge");
    let pool = Arc::new(Mempool::new("flowtest", 511, 0, 2176, SocketId::ANY).expect("pool"));
    let cfg = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        rx_desc: 64,
        tx_desc: 64,
        ..PortConfig::default()
    };
    let mut port = Port::configure("net_null0", &cfg, &pool).expect("configure");
    port.start().expect("start");

    let rule = FlowRule::new(
        vec![
            FlowItem::Eth,
            FlowItem::Ipv4 {
                dst: Ipv4Addr::new(10, 2, 0, 100),
                dst_mask: u32::MAX,
            },
            FlowItem::Udp {
                dst_port: 1,
                dst_mask: 1,
            },
        ],
        FlowAction::Queue(QueueId(1)),
    );
    let e = port
        .validate_flow(&rule)
        .expect_err("net_null has no rte_flow");
    assert!(
        e.op()
            .starts_with("rte_flow_validate(net_null0, pattern eth / ipv4 dst spec 10.2.0.100"),
        "{e}"
    );
    assert!(e.not_implemented(), "{e}");
    assert!(
        !e.to_string()
            .contains("implemented: Function not implemented"),
        "the driver's words are not repeated: {e}"
    );
    let e = port
        .create_flow(&rule)
        .expect_err("net_null has no rte_flow");
    assert!(e.op().starts_with("rte_flow_create(net_null0, "), "{e}");
    assert_ne!(e.errno(), 0, "{e}");
    let e = port
        .flush_flows(Vec::new())
        .expect_err("net_null has no rte_flow");
    assert!(e.op().starts_with("rte_flow_flush(net_null0)"), "{e}");

    drop(port);
    drop(pool);
    drop(eal);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}
