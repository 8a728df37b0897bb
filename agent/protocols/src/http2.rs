//! HTTP/2 and gRPC. (To be written: see the parser contract in lib.rs.)

use crate::{
    Confidence, ConnContext, Exchange, ParseError, Parser, ParserCounts, Privacy, ProtocolId, ProtocolSpec, Segment,
    Transport,
};

pub static SPEC: ProtocolSpec = ProtocolSpec {
    id: ProtocolId::Http2,
    name: "http2",
    transports: &[Transport::Tcp],
    hint_ports: &[],
    check,
    new_parser,
};

fn check(_segment: &Segment<'_>, _ctx: &ConnContext) -> Confidence {
    Confidence::No
}

fn new_parser(_ctx: &ConnContext, _privacy: Privacy) -> Box<dyn Parser> {
    Box::new(Http2Parser::default())
}

#[derive(Debug, Default)]
pub struct Http2Parser {
    counts: ParserCounts,
}

impl Parser for Http2Parser {
    fn feed(&mut self, _segment: &Segment<'_>, _out: &mut Vec<Exchange>) -> Result<(), ParseError> {
        Ok(())
    }
    fn close(&mut self, _timestamp_ns: u64, _out: &mut Vec<Exchange>) {}
    fn counts(&self) -> ParserCounts {
        self.counts
    }
}
