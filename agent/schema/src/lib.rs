//! The JSON records `kscope run --output json` prints, one per line, as types.
//!
//! The agent serialises its records from these types and the integration
//! tests and `cargo xtask bench` deserialise kscope's output into them (the
//! model is tokio-console's `console-api`): a field renamed on one side is a
//! compile error on the other, not a silent `0`.
//!
//! Every line is one [`Record`], told apart by its `"type"` field. Strings
//! are [`Cow`]s so the agent serialises from borrowed data without copying
//! (its hot path writes one exchange per request), while readers get owned
//! records ([`Record<'static>`], see [`parse_line`]).
//!
//! This crate has no kernel build step and no dependency on the agent, so
//! xtask and the tests compile before setup installed the eBPF toolchain.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly"))]

mod drops;
mod events;
mod exchange;
mod sensors;
mod span;
mod stats;
mod symbolize;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use drops::{DropRecord, DropSummary};
pub use events::{CloseDetail, DataRecord, ExecRecord, ExitRecord, Origin, RetransmitRecord, TcpRecord};
pub use exchange::{DnsDetail, ExchangeDetail, ExchangeRecord, GrpcDetail, HttpDetail};
pub use sensors::{Fallback, FunctionReport, ProbeRecord, Rejection, SensorChoice, SensorsRecord};
pub use span::{AttributeValue, SpanKind, SpanRecord, SpanStatus};
pub use stats::{
    ConnCounts, ExportCounts, ExportSummary, LedgerSnapshot, LinkCounts, ProgramStats, SensorCounts, StatsRecord,
};
pub use symbolize::{CodeLocation, HexAddress, InlinedFrame, ResolvedAddress, SymbolizeRecord, UnknownAddress};

/// One line of `kscope run --output json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Record<'a> {
    /// First line: the kernel and the hook form each sensor got.
    #[serde(rename = "sensors")]
    Sensors(SensorsRecord<'a>),
    #[serde(rename = "process.exec")]
    Exec(ExecRecord<'a>),
    #[serde(rename = "process.exit")]
    Exit(ExitRecord<'a>),
    #[serde(rename = "tcp.connect")]
    Connect(TcpRecord<'a>),
    #[serde(rename = "tcp.accept")]
    Accept(TcpRecord<'a>),
    #[serde(rename = "tcp.close")]
    Close(TcpRecord<'a>),
    #[serde(rename = "tcp.retransmit")]
    Retransmit(RetransmitRecord<'a>),
    /// Metadata of one send or receive (`--data-events`), never its payload.
    #[serde(rename = "socket.data")]
    Data(DataRecord<'a>),
    #[serde(rename = "exchange")]
    Exchange(ExchangeRecord<'a>),
    /// A finished span (`--spans`).
    #[serde(rename = "span")]
    Span(SpanRecord<'a>),
    #[serde(rename = "drop")]
    Drop(DropRecord),
    /// Every `--stats-interval`.
    #[serde(rename = "stats")]
    Stats(StatsRecord),
    /// Once, at exit.
    #[serde(rename = "summary")]
    Summary(StatsRecord),
}

impl Record<'_> {
    /// The `"type"` field's value.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sensors(_) => "sensors",
            Self::Exec(_) => "process.exec",
            Self::Exit(_) => "process.exit",
            Self::Connect(_) => "tcp.connect",
            Self::Accept(_) => "tcp.accept",
            Self::Close(_) => "tcp.close",
            Self::Retransmit(_) => "tcp.retransmit",
            Self::Data(_) => "socket.data",
            Self::Exchange(_) => "exchange",
            Self::Span(_) => "span",
            Self::Drop(_) => "drop",
            Self::Stats(_) => "stats",
            Self::Summary(_) => "summary",
        }
    }

    /// The wall-clock time of the record (an event's or exchange's start, a
    /// span's end, when a stats record or a drop was made).
    pub fn time_unix_nano(&self) -> u64 {
        match self {
            Self::Sensors(r) => r.time_unix_nano,
            Self::Exec(r) => r.origin.time_unix_nano,
            Self::Exit(r) => r.origin.time_unix_nano,
            Self::Connect(r) | Self::Accept(r) | Self::Close(r) => r.origin.time_unix_nano,
            Self::Retransmit(r) => r.origin.time_unix_nano,
            Self::Data(r) => r.origin.time_unix_nano,
            Self::Exchange(r) => r.origin.time_unix_nano,
            Self::Span(r) => r.time_unix_nano,
            Self::Drop(r) => r.time_unix_nano,
            Self::Stats(r) | Self::Summary(r) => r.time_unix_nano,
        }
    }
}

/// Why a line is not a record of kscope's.
#[derive(Debug)]
pub struct ParseError {
    pub line: String,
    pub error: serde_json::Error,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a kscope record ({}): {}", self.error, self.line)
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Parses one line of `kscope run --output json`.
pub fn parse_line(line: &str) -> Result<Record<'static>, ParseError> {
    serde_json::from_str(line).map_err(|error| ParseError { line: line.to_owned(), error })
}

/// Parses every non-empty line.
pub fn parse_lines(text: &str) -> Result<Vec<Record<'static>>, ParseError> {
    text.lines().filter(|l| !l.trim().is_empty()).map(parse_line).collect()
}

/// The kind of kernel hook a sensor's programs attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum HookForm {
    /// kprobe/kretprobe on kernel functions.
    Kprobe,
    /// fentry/fexit (BPF trampolines) on the same functions.
    Fentry,
    /// Static tracepoints (and syscall tracepoints).
    Tracepoint,
}

impl HookForm {
    /// The name used on the command line, in the output and in reasons.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kprobe => "kprobe",
            Self::Fentry => "fentry",
            Self::Tracepoint => "tracepoint",
        }
    }
}

impl std::fmt::Display for HookForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which end of a connection or an exchange the process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Server,
}

impl Role {
    /// As printed (`client`, `server`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// As printed (`tcp`, `udp`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Send,
    Recv,
}

impl Direction {
    /// As printed (`send`, `recv`), seen from the process.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Recv => "recv",
        }
    }
}

/// A socket's identity in kscope's output: a keyed hash of the kernel's
/// socket address (16 hex digits), drawn anew each run, so records of one
/// connection join without handing out a kernel pointer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockId([u8; 16]);

impl SockId {
    /// The id of a 64-bit hash.
    pub fn from_hash(hash: u64) -> Self {
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((hash >> (60 - 4 * i)) & 0xf) as usize];
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        // Built only from ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for SockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SockId({})", self.as_str())
    }
}

impl std::fmt::Display for SockId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SockId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SockId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        let bytes = text.as_bytes();
        if bytes.len() != 16 || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(serde::de::Error::custom(format!("sock_id {text:?} is not 16 lowercase hex digits")));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(bytes);
        Ok(Self(id))
    }
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests;
