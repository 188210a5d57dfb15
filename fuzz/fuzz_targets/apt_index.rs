//! libFuzzer's entry to `mm_fuzz::apt_index` (fuzz/src/apt_index.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::apt_index::run(data));
