//! cargo-fuzz entry for `pysfu_engine::fuzz::shards`; the logic (and its CI smoke
//! replay) lives in the engine crate.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pysfu_engine::fuzz::shards(data));
