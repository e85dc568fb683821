#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zsc_fuzz::secrets(data));
