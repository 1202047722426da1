//! `token`: see `hubcast::fuzzing::token` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast::fuzzing::token(data));
