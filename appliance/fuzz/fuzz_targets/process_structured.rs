//! Structure-aware packet fuzzing: each input is a scenario (`appliance::scenario`):
//! setup bytes, then events — frames generated from a description with their checksums
//! computed (spoiled only on request), answers to what the appliance sent, ICMP errors
//! quoting it, ARP, clock jumps, polls, management changes published as snapshots —
//! through one or two fresh pipelines of the demo topology, with invariants checked on
//! every frame that leaves. Seeds: `scripts/fuzz-seeds.sh`. With
//! `PRIVLINK_FUZZ_COUNTERS=FILE`, the pipelines' counters summed over every input are
//! written to FILE as JSON now and then.
#![no_main]

use std::cell::RefCell;

use appliance::scenario::{self, Tally};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static TALLY: RefCell<Tally> = RefCell::new(Tally::from_env());
}

fuzz_target!(|data: &[u8]| {
    let mut world = scenario::run(data);
    TALLY.with(|t| {
        let mut t = t.borrow_mut();
        if t.enabled() {
            let counters = world.counters();
            t.add(&counters, &world.stats);
        }
    });
});
