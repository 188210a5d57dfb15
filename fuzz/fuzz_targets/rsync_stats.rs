//! libFuzzer's entry to `mm_fuzz::rsync_stats` (fuzz/src/rsync_stats.rs), where the property is.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mm_fuzz::rsync_stats::run(data));
