//! HPACK (RFC 7541) header block decoding for an observer.
//!
//! Unlike an endpoint's decoder this one tolerates not having seen the
//! whole connection: references to dynamic-table entries it never saw
//! decode as unknown (and are counted) instead of failing the block, so a
//! connection first seen mid-way still yields what static-table indexes and
//! literals give. Huffman-coded strings go through `httlib-huffman`.
//!
//! Only the values of the few headers kscope reports ([`Field`]) are kept,
//! in the decoded output and in the dynamic table alike: the table keeps
//! every entry's size (eviction depends on it) but not the name or value of
//! any other header (`authorization`, `cookie`, ...).

use std::collections::VecDeque;

/// The most dynamic-table bytes kept per direction, whatever the peers agreed.
pub const TABLE_CAP: usize = 64 * 1024;
/// The initial SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// Longest value kept of a reported header; longer ones are cut.
pub const MAX_VALUE: usize = 2048;

/// The headers whose values kscope reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Method,
    Path,
    Authority,
    Host,
    Status,
    ContentType,
    Traceparent,
    Tracestate,
    GrpcStatus,
    GrpcMessage,
}

const FIELD_COUNT: usize = 10;

impl Field {
    fn of(name: &[u8]) -> Option<Self> {
        Some(match name {
            b":method" => Self::Method,
            b":path" => Self::Path,
            b":authority" => Self::Authority,
            b"host" => Self::Host,
            b":status" => Self::Status,
            b"content-type" => Self::ContentType,
            b"traceparent" => Self::Traceparent,
            b"tracestate" => Self::Tracestate,
            b"grpc-status" => Self::GrpcStatus,
            b"grpc-message" => Self::GrpcMessage,
            _ => return None,
        })
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HpackError {
    /// An integer ran past the block or grew absurdly large.
    Integer,
    /// A string literal ran past the block.
    Truncated,
    /// Index 0, which RFC 7541 forbids.
    ZeroIndex,
    Huffman,
}

impl std::fmt::Display for HpackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Integer => "hpack: bad integer",
            Self::Truncated => "hpack: string literal past the end of the block",
            Self::ZeroIndex => "hpack: index 0",
            Self::Huffman => "hpack: bad Huffman code",
        })
    }
}

/// Why references to the dynamic table may name entries this decoder never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// The connection was first seen after it started.
    MidWay,
    /// Bytes of this direction went by uncaptured or unparsed.
    Gap,
    /// A header block could not be decoded (its insertions are unknown).
    BadBlock,
    /// The peer's table is larger than kscope keeps.
    Capped,
}

impl Incomplete {
    pub fn describe(self) -> &'static str {
        match self {
            Self::MidWay => "connection seen mid-way",
            Self::Gap => "capture gap",
            Self::BadBlock => "undecodable header block",
            Self::Capped => "table larger than kept",
        }
    }
}

/// One dynamic-table entry: its size, and the value only for a reported header.
#[derive(Debug, Clone)]
struct Entry {
    /// `None` when the name itself was an unknown reference.
    field: Option<Field>,
    name_known: bool,
    name_len: usize,
    value: Option<Box<[u8]>>,
    size: usize,
}

/// A header block's reported fields (first occurrence of each) and how
/// many references could not be resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decoded {
    fields: [Option<Vec<u8>>; FIELD_COUNT],
    pub unknown_refs: u32,
}

impl Decoded {
    pub fn get(&self, field: Field) -> Option<&[u8]> {
        self.fields[field.slot()].as_deref()
    }

    pub fn get_str(&self, field: Field) -> Option<String> {
        self.get(field).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn set(&mut self, field: Field, value: &[u8]) {
        let slot = &mut self.fields[field.slot()];
        if slot.is_none() {
            *slot = Some(value[..value.len().min(MAX_VALUE)].to_vec());
        }
    }
}

/// What a table index resolved to, copied out of the table.
struct Resolved {
    field: Option<Field>,
    name_known: bool,
    name_len: usize,
    value: Option<Vec<u8>>,
}

/// One direction's decoder and dynamic table.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Newest first, as HPACK indexes them.
    table: VecDeque<Entry>,
    size: usize,
    /// The table's current maximum size (the last size update, bounded).
    max_size: usize,
    /// SETTINGS_HEADER_TABLE_SIZE of the decoding side, bounded by [`TABLE_CAP`].
    limit: usize,
    /// Set once insertions may have been missed.
    incomplete: Option<Incomplete>,
}

impl Decoder {
    /// A decoder for a connection seen from its start, or not (`incomplete`).
    pub fn new(incomplete: Option<Incomplete>) -> Self {
        // Mid-way, the peers' settings are unknown: keep as much as allowed,
        // since keeping entries the encoder evicted is harmless (indexes
        // count from the newest entry) while evicting early loses them.
        let size = if incomplete.is_some() { TABLE_CAP } else { DEFAULT_TABLE_SIZE };
        Self { table: VecDeque::new(), size: 0, max_size: size, limit: size, incomplete }
    }

    pub fn incomplete(&self) -> Option<Incomplete> {
        self.incomplete
    }

    /// From now on some insertions may have been missed.
    pub fn mark_incomplete(&mut self, why: Incomplete) {
        self.incomplete.get_or_insert(why);
    }

    /// The decoding side announced SETTINGS_HEADER_TABLE_SIZE.
    pub fn set_limit(&mut self, value: u32) {
        self.limit = (value as usize).min(TABLE_CAP);
        if self.max_size > self.limit {
            self.max_size = self.limit;
            self.evict(0);
        }
    }

    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    pub fn table_size(&self) -> usize {
        self.size
    }

    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            match self.table.pop_back() {
                Some(entry) => self.size -= entry.size,
                None => break,
            }
        }
    }

    fn insert(&mut self, entry: Entry) {
        if entry.size > self.max_size {
            // RFC 7541 §4.4: an entry larger than the table empties it.
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(entry.size);
        self.size += entry.size;
        self.table.push_front(entry);
    }

    fn resize(&mut self, value: usize) {
        if value > self.limit {
            // Beyond what the decoding side allowed, or beyond what kscope keeps.
            self.mark_incomplete(Incomplete::Capped);
        }
        self.max_size = value.min(self.limit);
        self.evict(0);
    }

    /// `Ok(None)`: a dynamic index this decoder has no entry for.
    fn resolve(&self, index: usize) -> Result<Option<Resolved>, HpackError> {
        if index == 0 {
            return Err(HpackError::ZeroIndex);
        }
        if let Some((name, value)) = STATIC_TABLE.get(index - 1) {
            let field = Field::of(name.as_bytes());
            return Ok(Some(Resolved {
                field,
                name_known: true,
                name_len: name.len(),
                value: field.map(|_| value.as_bytes().to_vec()),
            }));
        }
        Ok(self.table.get(index - 1 - STATIC_TABLE.len()).map(|entry| Resolved {
            field: entry.field,
            name_known: entry.name_known,
            name_len: entry.name_len,
            value: entry.value.as_deref().map(<[u8]>::to_vec),
        }))
    }

    /// Decodes one complete header block, updating the dynamic table.
    pub fn decode(&mut self, block: &[u8]) -> Result<Decoded, HpackError> {
        let mut out = Decoded::default();
        let mut pos = 0;
        while let Some(&first) = block.get(pos) {
            let rest = &block[pos..];
            if first & 0x80 != 0 {
                // Indexed header field.
                let (index, used) = integer(rest, 7)?;
                pos += used;
                match self.resolve(index)? {
                    Some(Resolved { field: Some(field), value: Some(value), .. }) => out.set(field, &value),
                    Some(Resolved { name_known: false, .. }) | None => {
                        out.unknown_refs = out.unknown_refs.saturating_add(1);
                    }
                    Some(_) => {}
                }
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let (value, used) = integer(rest, 5)?;
                pos += used;
                self.resize(value);
            } else {
                // Literal: with incremental indexing (01), without (0000) or never indexed (0001).
                let indexing = first & 0x40 != 0;
                let (index, used) = integer(rest, if indexing { 6 } else { 4 })?;
                pos += used;
                let (field, name_known, name_len) = if index == 0 {
                    let (name, used) = string(&block[pos..])?;
                    pos += used;
                    (Field::of(&name), true, name.len())
                } else {
                    match self.resolve(index)? {
                        Some(r) => {
                            if !r.name_known {
                                out.unknown_refs = out.unknown_refs.saturating_add(1);
                            }
                            (r.field, r.name_known, r.name_len)
                        }
                        None => {
                            out.unknown_refs = out.unknown_refs.saturating_add(1);
                            (None, false, 0)
                        }
                    }
                };
                let (value, used) = string(&block[pos..])?;
                pos += used;
                if let Some(field) = field {
                    out.set(field, &value);
                }
                if indexing {
                    let kept = field.map(|_| value[..value.len().min(MAX_VALUE)].into());
                    self.insert(Entry { field, name_known, name_len, value: kept, size: name_len + value.len() + 32 });
                }
            }
        }
        Ok(out)
    }
}

/// RFC 7541 §5.1: returns the value and the bytes used.
fn integer(buf: &[u8], prefix_bits: u8) -> Result<(usize, usize), HpackError> {
    let mask = ((1u16 << prefix_bits) - 1) as u8;
    let first = buf.first().ok_or(HpackError::Integer)?;
    let mut value = (first & mask) as usize;
    if value < mask as usize {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &byte) in buf.iter().enumerate().skip(1) {
        // Nothing in HTTP/2 needs more than 2^28; more is an attack or garbage.
        if shift > 21 {
            return Err(HpackError::Integer);
        }
        value += ((byte & 0x7f) as usize) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(HpackError::Integer)
}

/// RFC 7541 §5.2: returns the decoded octets and the bytes used.
fn string(buf: &[u8]) -> Result<(Vec<u8>, usize), HpackError> {
    let huffman = buf.first().is_some_and(|b| b & 0x80 != 0);
    let (len, used) = integer(buf, 7)?;
    let end = used.checked_add(len).filter(|&end| end <= buf.len()).ok_or(HpackError::Truncated)?;
    let raw = &buf[used..end];
    if !huffman {
        return Ok((raw.to_vec(), end));
    }
    let mut decoded = Vec::with_capacity(raw.len() + raw.len() / 2);
    httlib_huffman::decode(raw, &mut decoded, httlib_huffman::DecoderSpeed::FourBits)
        .map_err(|_| HpackError::Huffman)?;
    Ok((decoded, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc_7541_examples() {
        assert_eq!(integer(&[10], 5), Ok((10, 1)));
        assert_eq!(integer(&[31, 154, 10], 5), Ok((1337, 3)));
        assert_eq!(integer(&[42], 8), Ok((42, 1)));
        assert_eq!(integer(&[31, 0xff], 5), Err(HpackError::Integer));
        assert_eq!(integer(&[31, 0xff, 0xff, 0xff, 0xff, 0x7f], 5), Err(HpackError::Integer));
    }

    /// RFC 7541 C.4: requests with Huffman coding, sharing a dynamic table.
    #[test]
    fn rfc_7541_c4_requests_with_huffman() {
        let mut decoder = Decoder::new(None);
        let first = decoder
            .decode(&[
                0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
            ])
            .expect("valid block");
        assert_eq!(first.get_str(Field::Method).as_deref(), Some("GET"));
        assert_eq!(first.get_str(Field::Path).as_deref(), Some("/"));
        assert_eq!(first.get_str(Field::Authority).as_deref(), Some("www.example.com"));
        assert_eq!(decoder.table_size(), 57);
        let second = decoder
            .decode(&[0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf])
            .expect("valid block");
        assert_eq!(second.get_str(Field::Authority).as_deref(), Some("www.example.com"));
        assert_eq!(second.unknown_refs, 0);
        assert_eq!(decoder.table_size(), 110);
        assert_eq!(decoder.table_len(), 2);
    }

    #[test]
    fn unknown_dynamic_references_are_counted_not_fatal() {
        let mut decoder = Decoder::new(Some(Incomplete::MidWay));
        // :method GET (static), index 70 (unknown), literal name-ref 75 (unknown) with value "x".
        let decoded = decoder.decode(&[0x82, 0x80 | 70, 0x0f, 75 - 15, 0x01, b'x']).expect("tolerated");
        assert_eq!(decoded.get_str(Field::Method).as_deref(), Some("GET"));
        assert_eq!(decoded.unknown_refs, 2);
    }

    #[test]
    fn only_reported_values_are_kept() {
        let mut decoder = Decoder::new(None);
        // Literal with indexing: authorization (static 23) = "secret".
        let decoded = decoder.decode(&[0x40 | 23, 6, b's', b'e', b'c', b'r', b'e', b't']).expect("valid");
        assert_eq!(decoded, Decoded::default());
        assert_eq!(decoder.table_size(), 13 + 6 + 32);
        assert!(decoder.table.iter().all(|e| e.value.is_none()));
    }

    #[test]
    fn errors_not_panics() {
        let mut decoder = Decoder::new(None);
        assert_eq!(decoder.decode(&[0x80]), Err(HpackError::ZeroIndex));
        assert_eq!(decoder.decode(&[0x40, 0x05, b'a']), Err(HpackError::Truncated));
        assert_eq!(decoder.decode(&[0x40, 0x81, 0xff]), Err(HpackError::Huffman));
    }
}
