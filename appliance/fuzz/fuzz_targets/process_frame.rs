//! Arbitrary bytes as a frame received on either port of the demo topology, through the
//! whole packet path (ARP, ICMP, lookup, NAT, flows, timers): never a panic. The first
//! byte picks the port, the clock and the entry point (bit 6: a burst of the frame twice
//! through `process_burst`, so the second copy can meet the flow the first created in the
//! same chunk); state carries over between inputs, so sequences of frames reach
//! established flows too.
#![no_main]

use std::cell::RefCell;

use appliance::frame::VecFrame;
use appliance::pipeline::Pipeline;
use appliance::snapshot::{Handles, Snapshot};
use libfuzzer_sys::fuzz_target;
use mgmt::config::Config;

struct World {
    snap: Snapshot,
    pipe: Pipeline<VecFrame>,
    now: u64,
}

thread_local! {
    static WORLD: RefCell<World> = RefCell::new({
        let config = Config::embedded_default();
        let macs = [[2, 0, 0, 0, 0, 0xc0], [2, 0, 0, 0, 0, 0xb0]];
        let snap = Snapshot::build(
            1,
            &config,
            &macs,
            &[1500, 1500],
            &config.state(),
            &mut Handles::default(),
        )
        .expect("demo snapshot");
        let settings = appliance::daemon::pipeline_settings(&config, 2);
        let pipe = Pipeline::new(0, settings, Box::new(|| Some(VecFrame::new(&[]))), &snap);
        World { snap, pipe, now: 0 }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, frame)) = data.split_first() else {
        return;
    };
    WORLD.with(|w| {
        let w = &mut *w.borrow_mut();
        w.now += u64::from(ctl >> 2) * 50;
        let port = u16::from(ctl & 3);
        if ctl & 0x40 == 0 {
            let _ = w.pipe.process(&w.snap, port, VecFrame::new(frame), w.now);
        } else {
            let mut burst = vec![VecFrame::new(frame), VecFrame::new(frame)];
            w.pipe
                .process_burst(&w.snap, port, &mut burst, w.now, &mut drop);
        }
        w.pipe.poll(&w.snap, w.now);
        w.pipe.drain_emitted().for_each(drop);
    });
});
