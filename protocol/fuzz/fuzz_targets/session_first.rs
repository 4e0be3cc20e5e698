#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::session_first_message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::session_first_message(data);
});
