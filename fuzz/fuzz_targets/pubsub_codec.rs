//! `pubsub_codec`: see `hubcast::fuzzing::pubsub_codec` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hubcast::fuzzing::pubsub_codec(data));
