//! Well-formed management request sequences against the real store, state file and
//! snapshot build, checking the acknowledgement invariant after every request: an `ok`
//! leaves on disk exactly what the store holds, which reloads identically and builds a
//! snapshot; an error changes nothing; the store never accepts what the build refuses.
//! Every 10 bytes are one request (caller, operation, parameters); the first byte, when
//! odd, turns on injected save failures seeded by the next eight.
#![no_main]

use appliance::daemon::management::sequences;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let faults = (mode & 1 == 1).then(|| {
        let mut seed = [0u8; 8];
        for (s, b) in seed.iter_mut().zip(rest) {
            *s = *b;
        }
        u64::from_le_bytes(seed)
    });
    let ops: Vec<(u8, u8, u64)> = rest
        .chunks_exact(10)
        .take(64)
        .map(|c| {
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&c[2..10]);
            (c[0], c[1], u64::from_le_bytes(seed))
        })
        .collect();
    if !ops.is_empty() {
        sequences::run(&ops, faults);
    }
});
