//! `span`: a finished span (`kscope run --spans`), as exported over OTLP.

use std::{borrow::Cow, collections::BTreeMap};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord<'a> {
    /// When the span ended.
    pub time_unix_nano: u64,
    /// Hex, as in W3C trace context.
    pub trace_id: Cow<'a, str>,
    pub span_id: Cow<'a, str>,
    /// Empty for a root span.
    pub parent_span_id: Cow<'a, str>,
    pub trace_state: Cow<'a, str>,
    pub name: Cow<'a, str>,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub status: SpanStatus,
    pub status_message: Cow<'a, str>,
    /// The resource's `service.name`.
    pub service_name: Option<Cow<'a, str>>,
    /// The resource's `process.pid`.
    pub pid: Option<i64>,
    /// The span's attributes (semantic conventions), by key.
    pub attributes: BTreeMap<Cow<'a, str>, AttributeValue<'a>>,
}

impl SpanRecord<'_> {
    /// A string attribute's value.
    pub fn str_attribute(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(AttributeValue::String(s)) => Some(s),
            _ => None,
        }
    }

    /// An integer attribute's value.
    pub fn int_attribute(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(AttributeValue::Int(i)) => Some(*i),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// As printed (`server`, `client`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanStatus {
    Unset,
    Ok,
    Error,
}

impl SpanStatus {
    /// As printed (`unset`, `ok`, `error`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

/// An OTLP attribute value, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttributeValue<'a> {
    Bool(bool),
    Int(i64),
    Double(f64),
    String(Cow<'a, str>),
    Array(Vec<AttributeValue<'a>>),
    /// A value kscope does not print (bytes, key-value lists) or none.
    Null,
}
