#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::lz4`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::lz4(data);
});
