//! libFuzzer's entry to `mm_fuzz::node_toml` (fuzz/src/node_toml.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::node_toml::run(data));
