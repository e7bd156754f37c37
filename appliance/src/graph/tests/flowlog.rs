//! Flow-log records from the worker: a window's flows, a flow's end, and refusals added
//! up per source and reason.

use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use super::*;
use crate::graph::flowlog::FlowLogRecord;

#[test]
fn windows_ends_and_rejects_become_records() {
    let config = Config::embedded_default();
    let (mut p, snap) = pipeline(&config, 1, 0);
    let q = Arc::new(ArrayQueue::new(64));
    p.set_flow_log(Arc::clone(&q), 1000);
    let f = udp(CLIENT, 6000, ENDPOINT, 9000, MAC_C, CLIENT_MAC);
    tx(p.process(&snap, CONSUMER_PORT, VecFrame::new(&f), 10));
    // Three refused datagrams from the client: one record.
    for _ in 0..3 {
        let bad = udp(CLIENT, 6001, ENDPOINT, 9001, MAC_C, CLIENT_MAC);
        assert!(matches!(
            p.process(&snap, CONSUMER_PORT, VecFrame::new(&bad), 20),
            Verdict::Done
        ));
    }
    p.poll(&snap, 500);
    assert!(q.is_empty(), "the window has not ended");
    p.poll(&snap, 1001);
    let got: Vec<FlowLogRecord> = std::iter::from_fn(|| q.pop()).collect();
    assert!(
        got.iter().any(|r| matches!(r, FlowLogRecord::Reject { packets: 3, reason: DropReason::NoListener, src, .. } if *src == std::net::IpAddr::V4(CLIENT))),
        "{got:?}"
    );
    assert!(
        got.iter().any(|r| matches!(r, FlowLogRecord::Window { flow, start_ms: 0, end_ms: 1001, .. } if flow.fwd.src_port == 6000 && flow.packets_fwd == 1)),
        "{got:?}"
    );
    // Idle in the next window: no window record; its expiry gives the end.
    p.poll(&snap, 2002);
    assert!(q.is_empty());
    let udp_idle = u64::try_from(config.timeouts.udp.as_millis()).unwrap();
    for t in (2003..udp_idle + 3000).step_by(500) {
        p.poll(&snap, t);
    }
    let got: Vec<FlowLogRecord> = std::iter::from_fn(|| q.pop()).collect();
    assert!(
        got.iter()
            .any(|r| matches!(r, FlowLogRecord::End { flow, .. } if flow.fwd.src_port == 6000)),
        "{got:?}"
    );
    assert_eq!(p.counters().flow_log_dropped, 0);
}
