//! Configuration text through `Config::parse` and the settings the daemon derives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor::fuzz::config(data));
