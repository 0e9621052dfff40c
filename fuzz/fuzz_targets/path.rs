#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upslot_fuzz::path::check(data));
