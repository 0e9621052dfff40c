#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| upslot_fuzz::jwt::check(data));
