//! Arbitrary segments of one connection into the http1 parser (see src/lib.rs
//! for the input layout and the invariants checked).
#![no_main]

use kscope_protocols::ProtocolId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kscope_protocols_fuzz::run(ProtocolId::Http1, data));
