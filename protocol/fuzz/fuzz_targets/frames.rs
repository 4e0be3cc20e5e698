#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::frames_and_messages`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::frames_and_messages(data);
});
