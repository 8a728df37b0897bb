//! Sorted addresses searched in two steps, for tables with hundreds of thousands to
//! millions of entries looked up at random.

/// Entries per block: 16 addresses are two cache lines.
const STRIDE: usize = 16;

/// Sorted addresses plus every [`STRIDE`]th of them on top: the first search runs over an
/// array a sixteenth the size (small enough to stay in cache for a symbol table, and far
/// fewer misses for a line table), the second within one block, where a plain binary
/// search over the whole array would miss the cache on most of its last dozen steps.
#[derive(Debug, Default)]
pub(crate) struct AddrIndex {
    addrs: Vec<u64>,
    top: Vec<u64>,
}

impl AddrIndex {
    /// `addrs` must be sorted (ascending, duplicates allowed).
    pub(crate) fn new(addrs: Vec<u64>) -> Self {
        debug_assert!(addrs.is_sorted());
        let top = addrs.iter().step_by(STRIDE).copied().collect();
        Self { addrs, top }
    }

    pub(crate) fn addrs(&self) -> &[u64] {
        &self.addrs
    }

    /// How many addresses are at or below `addr` (the index of the first one above it).
    #[inline]
    pub(crate) fn count_at_or_below(&self, addr: u64) -> usize {
        // `top[block]` is at or below `addr` and `top[block + 1]` (if any) above it, so
        // everything before the block is at or below, everything after it above.
        let Some(block) = self.top.partition_point(|&a| a <= addr).checked_sub(1) else { return 0 };
        let start = block * STRIDE;
        let end = start.saturating_add(STRIDE).min(self.addrs.len());
        start + self.addrs.get(start..end).map_or(0, |block| block.partition_point(|&a| a <= addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_a_linear_scan() {
        for len in [0, 1, 2, 15, 16, 17, 31, 32, 33, 100] {
            // Duplicates across block edges too.
            let addrs: Vec<u64> = (0..len).map(|i| 10 + (i / 3) * 4).collect();
            let index = AddrIndex::new(addrs.clone());
            for probe in 0..(20 + len * 2) {
                let expected = addrs.iter().filter(|&&a| a <= probe).count();
                assert_eq!(index.count_at_or_below(probe), expected, "len {len}, probe {probe}");
            }
            assert_eq!(index.count_at_or_below(u64::MAX), len as usize);
        }
    }
}
