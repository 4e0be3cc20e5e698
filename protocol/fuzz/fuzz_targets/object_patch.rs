#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::object_patch`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::object_patch(data);
});
