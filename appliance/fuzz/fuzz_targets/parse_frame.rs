//! Any byte string, as a received frame, through every layer of `appliance::wire`: the
//! no-panic contract says this never crashes. Run: `cargo +nightly fuzz run parse_frame`
//! from `appliance/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| appliance::wire::exercise_frame(data));
