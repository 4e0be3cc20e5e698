#![no_main]
//! Fuzz target: see `ferry_protocol::fuzzing::fetch_replies`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry_protocol::fuzzing::fetch_replies(data);
});
