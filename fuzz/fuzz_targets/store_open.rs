#![no_main]

#[path = "../harness/store.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::store_open(data));
