//! Arbitrary bytes as a management request line: the decoder must answer with a request
//! or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mgmt::protocol::decode_any(data);
});
