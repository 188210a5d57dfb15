//! libFuzzer's entry to `mm_fuzz::decode_index` (fuzz/src/decode_index.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::decode_index::run(data));
