//! `client_frame`: see `hubcast::fuzzing::client_frame` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast::fuzzing::client_frame(data));
