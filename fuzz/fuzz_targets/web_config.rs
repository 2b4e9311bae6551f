//! Web configuration text (exporter-toolkit YAML) through its parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor::fuzz::web_config(data));
