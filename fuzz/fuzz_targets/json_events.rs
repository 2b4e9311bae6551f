//! Lines of JSON through the detect stage with the built-in rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor::fuzz::json_events(data));
