//! `frame_reader`: see `hubcast::fuzzing::frame_reader` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast::fuzzing::frame_reader(data));
