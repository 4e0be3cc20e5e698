#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::signature_diff`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::signature_diff(data);
});
