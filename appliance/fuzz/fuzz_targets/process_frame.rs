//! Arbitrary bytes as a frame received on either port of the demo topology, through the
//! whole packet path (ARP, ICMP, lookup, NAT, flows, timers): never a panic, and every
//! frame that leaves keeps the invariants of `appliance::scenario::check_leaving`. The
//! first byte picks the port, the clock and the entry point (bit 6: a burst of the frame
//! twice through `process_burst`, so the second copy can meet the flow the first created
//! in the same chunk); state carries over between inputs, so sequences of frames reach
//! established flows too. With `PRIVLINK_FUZZ_COUNTERS=FILE`, the pipeline's counters are
//! written to FILE as JSON now and then. The structure-aware target is
//! `process_structured`.
#![no_main]

use std::cell::RefCell;

use appliance::graph::frame::{Frame, VecFrame};
use appliance::graph::{Pipeline, Verdict};
use appliance::scenario::{self, Stats, Strict, Tally};
use appliance::tables::snapshot::{Handles, Snapshot};
use libfuzzer_sys::fuzz_target;
use mgmt::config::Config;

struct World {
    snap: Snapshot,
    pipe: Pipeline<VecFrame>,
    now: u64,
    owned: scenario::Owned,
    stats: Stats,
    tally: Tally,
}

/// Raw bytes carry any checksum, and any length the port's MTU would have refused.
const STRICT: Strict = Strict {
    l4_checksums: false,
    mtu: false,
};

thread_local! {
    static WORLD: RefCell<World> = RefCell::new({
        let mut config = Config::embedded_default();
        // The consumer attachment speaks IPv6 too, and the endpoint is dual-stack: the
        // IPv6 node is reached for both kinds of local address.
        config.vpcs[0].address6 = Some("fd00:c1::1/64".parse().expect("an IPv6 prefix"));
        config.services[0].supported_ip_address_types =
            vec![mgmt::model::IpFamily::Ipv4, mgmt::model::IpFamily::Ipv6];
        config.endpoints[0].ip_address_type = mgmt::model::IpAddressType::Dualstack;
        config.endpoints[0].ip6 = Some("fd00:c1::64".parse().expect("an IPv6 address"));
        let snap = Snapshot::build(
            1,
            &config,
            &scenario::MACS,
            &[1500, 1500],
            &config.state(),
            &mut Handles::default(),
        )
        .expect("demo snapshot");
        let settings = appliance::daemon::pipeline_settings(&config, 2);
        let pipe = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
        let mut owned = scenario::Owned::default();
        scenario::add_owned(&snap, &mut owned);
        World { snap, pipe, now: 0, owned, stats: Stats::default(), tally: Tally::from_env() }
    });
}

impl World {
    fn leave(&mut self, port: u16, f: &VecFrame) {
        scenario::check_leaving(&self.snap, &self.owned, STRICT, port, f.bytes());
        self.stats.frames_out += 1;
        let c = self.pipe.counters_mut();
        c.tx_packets += 1;
        c.tx_bytes += f.bytes().len() as u64;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    WORLD.with(|w| {
        let w = &mut *w.borrow_mut();
        w.now += u64::from(ctl >> 2) * 50;
        let port = u16::from(ctl & 3);
        let mut verdicts = Vec::new();
        if ctl & 0x40 == 0 {
            verdicts.push(w.pipe.process(&w.snap, port, VecFrame::new(frame), w.now));
        } else {
            let mut burst = vec![VecFrame::new(frame), VecFrame::new(frame)];
            w.pipe
                .process_burst(&w.snap, port, &mut burst, w.now, &mut |v| verdicts.push(v));
        }
        for v in verdicts {
            if let Verdict::Tx(out, f) = v {
                match (port, out) {
                    (0, 1) => w.stats.forward_tx += 1,
                    (1, 0) => w.stats.reverse_tx += 1,
                    _ => w.stats.local_tx += 1,
                }
                w.leave(out, &f);
            }
        }
        w.pipe.poll(&w.snap, w.now);
        let emitted: Vec<(u16, VecFrame)> = w.pipe.drain_emitted().collect();
        for (port, f) in &emitted {
            w.leave(*port, f);
        }
        if w.tally.enabled() {
            w.pipe.sync_gauges();
            let counters = w.pipe.counters().clone();
            w.tally.set(&counters, &w.stats);
        }
    });
});
