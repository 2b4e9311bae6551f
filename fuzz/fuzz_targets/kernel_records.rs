//! Ring-buffer records through decode, enrich, the JSON form and the built-in rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor::fuzz::kernel_records(data));
