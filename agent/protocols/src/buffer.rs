//! Bounded reassembly of a message that spans several syscalls.

/// Bytes of one direction of a connection not yet consumed by a parser.
/// Never holds more than `limit` bytes: what does not fit is dropped and
/// counted, and the parser is told the stream has a gap.
#[derive(Debug, Clone)]
pub struct StreamBuffer {
    bytes: Vec<u8>,
    limit: usize,
    /// Timestamp of the segment that brought the oldest buffered byte.
    first_ns: u64,
    /// Bytes dropped since the last time the parser looked.
    gap: u64,
}

/// Reassembly bound per direction: large enough for any sane header block
/// (nginx's default large_client_header_buffers is 4 × 8 KiB).
pub const DEFAULT_LIMIT: usize = 64 * 1024;

impl StreamBuffer {
    pub fn new(limit: usize) -> Self {
        Self { bytes: Vec::new(), limit, first_ns: 0, gap: 0 }
    }

    /// Appends captured bytes; bytes that did not fit, and bytes the
    /// syscall moved but the sensor did not capture (`missing`), become a gap.
    /// Returns how many captured bytes were dropped for the bound.
    pub fn push(&mut self, data: &[u8], missing: u64, timestamp_ns: u64) -> u64 {
        if self.bytes.is_empty() {
            self.first_ns = timestamp_ns;
        }
        let room = self.limit.saturating_sub(self.bytes.len());
        let take = data.len().min(room);
        self.bytes.extend_from_slice(&data[..take]);
        let dropped = (data.len() - take) as u64;
        self.gap = self.gap.saturating_add(dropped).saturating_add(missing);
        dropped
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn first_ns(&self) -> u64 {
        self.first_ns
    }

    /// Bytes that went by uncaptured or unbuffered after the buffered ones.
    pub fn gap(&self) -> u64 {
        self.gap
    }

    pub fn take_gap(&mut self) -> u64 {
        std::mem::take(&mut self.gap)
    }

    /// Drops the first `n` buffered bytes (a parsed message).
    pub fn consume(&mut self, n: usize, now_ns: u64) {
        let n = n.min(self.bytes.len());
        self.bytes.drain(..n);
        // What stays is the start of the next message, which arrived no later than now.
        self.first_ns = now_ns;
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_is_bounded_and_counts_the_rest() {
        let mut buffer = StreamBuffer::new(4);
        assert_eq!(buffer.push(b"abc", 0, 1), 0);
        assert_eq!(buffer.push(b"def", 10, 2), 2);
        assert_eq!(buffer.bytes(), b"abcd");
        assert_eq!(buffer.gap(), 12);
        assert_eq!(buffer.first_ns(), 1);
        buffer.consume(3, 5);
        assert_eq!(buffer.bytes(), b"d");
        assert_eq!(buffer.take_gap(), 12);
        assert_eq!(buffer.gap(), 0);
    }
}
