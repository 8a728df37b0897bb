//! DNS over UDP and TCP. (To be written: see the parser contract in lib.rs.)

use crate::{
    Confidence, ConnContext, Exchange, ParseError, Parser, ParserCounts, Privacy, ProtocolId, ProtocolSpec, Segment,
    Transport,
};

pub static SPEC: ProtocolSpec = ProtocolSpec {
    id: ProtocolId::Dns,
    name: "dns",
    transports: &[Transport::Udp, Transport::Tcp],
    hint_ports: &[53],
    check,
    new_parser,
};

fn check(_segment: &Segment<'_>, _ctx: &ConnContext) -> Confidence {
    Confidence::No
}

fn new_parser(_ctx: &ConnContext, _privacy: Privacy) -> Box<dyn Parser> {
    Box::new(DnsParser::default())
}

#[derive(Debug, Default)]
pub struct DnsParser {
    counts: ParserCounts,
}

impl Parser for DnsParser {
    fn feed(&mut self, _segment: &Segment<'_>, _out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        Ok(())
    }
    fn close(&mut self, _timestamp_ns: u64, _out: &mut Vec<Exchange>) {}
    fn counts(&self) -> ParserCounts {
        self.counts
    }
}
