#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::pairing_first_frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::pairing_first_frame(data);
});
