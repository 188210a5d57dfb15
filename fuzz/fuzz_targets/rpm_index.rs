//! libFuzzer's entry to `mm_fuzz::rpm_index` (fuzz/src/rpm_index.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::rpm_index::run(data));
