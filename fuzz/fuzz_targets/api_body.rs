//! `api_body`: see `hubcast::fuzzing::api_body` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast::fuzzing::api_body(data));
