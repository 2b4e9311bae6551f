//! Rule-file text through the rule parser, then the rules over sample events.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| monitor::fuzz::rules(data));
