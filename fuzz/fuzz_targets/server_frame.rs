//! `server_frame`: see `hubcast::fuzzing::server_frame` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast::fuzzing::server_frame(data));
