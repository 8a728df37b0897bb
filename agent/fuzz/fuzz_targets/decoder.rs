//! Arbitrary records into the event decoder, then the decoded events, in
//! order, through the connection table and the parsers: kernel records are
//! untrusted input. Input: records as [u16 LE length][bytes], repeated.
#![no_main]

use kscope::{
    conntrack::ConnTable,
    decode::decode,
    output::{Clock, OutputFormat, Sink},
    recording::replay,
};
use kscope_protocols::Privacy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut records = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        records.push(rest[2..2 + len].to_vec());
        rest = &rest[2 + len..];
    }
    for record in &records {
        // Every record decodes or is an error: never a panic.
        let _ = decode(record);
    }
    let sink = Sink { format: OutputFormat::Json, clock: Clock::from_offset(0), data_events: true };
    let mut table = ConnTable::new(64, 1_000_000_000, Privacy::default());
    let mut text = Vec::new();
    let counts = replay(&records, &sink, &mut table, &mut text);
    assert_eq!(counts.records, records.len() as u64);
    assert!(table.len() <= 64, "the connection table outgrew its bound");
});
