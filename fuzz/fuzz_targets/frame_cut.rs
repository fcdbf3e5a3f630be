#![no_main]

#[path = "../harness/runtime.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::frame_cut(data));
