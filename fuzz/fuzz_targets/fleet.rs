//! libFuzzer's entry to `mm_fuzz::fleet` (fuzz/src/fleet.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::fleet::run(data));
