#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::sealed_plaintexts`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::sealed_plaintexts(data);
});
