#![no_main]

#[path = "../harness/core.rs"]
#[allow(dead_code)]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::datagram(data));
