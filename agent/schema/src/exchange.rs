//! `exchange`: one request and its response (HTTP/1.x, HTTP/2, gRPC, DNS),
//! as one end of the connection saw it.

use std::{borrow::Cow, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::{Origin, Role, SockId, Transport, is_zero_u32};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord<'a> {
    /// `time_unix_nano` is when the request started.
    #[serde(flatten)]
    pub origin: Origin<'a>,
    pub role: Role,
    /// HTTP method; none for DNS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'a, str>>,
    /// HTTP path (query kept only with `--keep-query`), gRPC
    /// `/service/method`, or the DNS question name.
    pub target: Cow<'a, str>,
    /// HTTP status, gRPC status code, DNS rcode; null when no response came.
    pub status: Option<u32>,
    pub duration_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub sock_id: SockId,
    pub transport: Transport,
    pub local_addr: IpAddr,
    pub local_port: u16,
    pub peer_addr: IpAddr,
    pub peer_port: u16,
    /// Why the exchange is incomplete (e.g. the connection closed first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<Cow<'a, str>>,
    /// Retransmits of the connection while the exchange was outstanding.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub tcp_retransmits: u32,
    /// `protocol` and what only that protocol has.
    #[serde(flatten)]
    pub detail: ExchangeDetail<'a>,
}

impl ExchangeRecord<'_> {
    /// `http1`, `http2`, `grpc` or `dns`.
    pub fn protocol(&self) -> &'static str {
        self.detail.protocol()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum ExchangeDetail<'a> {
    Http1(HttpDetail<'a>),
    Http2(HttpDetail<'a>),
    Grpc(GrpcDetail<'a>),
    Dns(DnsDetail<'a>),
}

impl ExchangeDetail<'_> {
    pub fn protocol(&self) -> &'static str {
        match self {
            Self::Http1(_) => "http1",
            Self::Http2(_) => "http2",
            Self::Grpc(_) => "grpc",
            Self::Dns(_) => "dns",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpDetail<'a> {
    /// `1.0`, `1.1` or `2`.
    pub http_version: Cow<'a, str>,
    /// The Host header (HTTP/1) or `:authority` (HTTP/2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Cow<'a, str>>,
    /// The request's W3C `traceparent`, as received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Cow<'a, str>>,
    /// The HTTP/2 stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcDetail<'a> {
    pub grpc_service: Cow<'a, str>,
    pub grpc_method: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<Cow<'a, str>>,
    pub stream_id: u32,
    pub request_messages: u32,
    pub response_messages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsDetail<'a> {
    pub dns_id: u16,
    /// The question's type (`A`, `AAAA`, ...).
    pub dns_type: Cow<'a, str>,
    /// The response code's name (`NOERROR`, `NXDOMAIN`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_rcode: Option<Cow<'a, str>>,
    pub dns_answer_count: u16,
    pub dns_addresses: Cow<'a, [IpAddr]>,
}
