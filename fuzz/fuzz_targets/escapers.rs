//! libFuzzer's entry to `mm_fuzz::escapers` (fuzz/src/escapers.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::escapers::run(data));
