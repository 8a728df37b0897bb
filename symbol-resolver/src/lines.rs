//! One file's DWARF line table, flattened: every row of every line program in one sorted
//! array, for address-to-line lookups without inlined frames.
//!
//! addr2line answers the same question per compilation unit: a search over unit ranges,
//! then over the unit's sequences, then over the sequence's rows, each a binary search
//! that misses the cache on most steps when addresses come at random. Here it is one
//! search over one array, through [`AddrIndex`]. Rows are the same as addr2line's (same
//! dedup of rows at one address, same file path rendering), so are the answers, except
//! where sequences overlap, which well-formed files do not have (see [`LineTable::build`]).

use std::collections::HashMap;

use crate::CodeInfo;
use crate::addr_index::AddrIndex;

type Reader<'data> = gimli::EndianSlice<'data, gimli::RunTimeEndian>;

/// No file: a gap between sequences, or a row whose file index the unit does not have.
const NO_FILE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Row {
    file: u32,
    /// 0 when unknown.
    line: u32,
    column: u32,
}

/// Rows sorted by address: row `i` covers from its address up to the next row's.
#[derive(Debug, Default)]
pub(crate) struct LineTable {
    index: AddrIndex,
    rows: Vec<Row>,
    /// Rendered paths, each once however many units name it.
    files: Vec<String>,
}

/// A [`CodeInfo`] borrowing its path from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineRef<'a> {
    pub(crate) file: &'a str,
    pub(crate) line: Option<u32>,
    pub(crate) column: Option<u32>,
}

impl LineRef<'_> {
    pub(crate) fn to_owned(self) -> CodeInfo {
        CodeInfo { file: self.file.to_owned(), line: self.line, column: self.column }
    }
}

/// A complete sequence of one unit, its rows in the build buffer.
struct Sequence {
    start: u64,
    end: u64,
    rows: std::ops::Range<usize>,
}

impl LineTable {
    /// Runs every unit's line program. `code` are the address ranges of the executable
    /// sections: sequences starting elsewhere (address 0 or a tombstone for code the linker
    /// dropped) are left out, unless `code` is empty. Where sequences still overlap, the
    /// one starting first keeps the addresses it covers.
    pub(crate) fn build(dwarf: &gimli::Dwarf<Reader<'_>>, code: &[(u64, u64)]) -> Self {
        let mut table = Self::default();
        let mut file_ids = HashMap::new();
        // (address, row) with unit-local file indices until the unit is done.
        let mut buffer: Vec<(u64, Row)> = Vec::new();
        let mut sequences = Vec::new();
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let Ok(unit) = dwarf.unit(header) else { continue };
            let Some(program) = unit.line_program.clone() else { continue };
            let unit_start = buffer.len();
            let first_sequence = sequences.len();
            let mut sequence_start = buffer.len();
            let mut rows = program.rows();
            // A malformed program ends the unit; its complete sequences count.
            while let Ok(Some((_, row))) = rows.next_row() {
                let address = row.address();
                if row.end_sequence() {
                    if let Some(&(start, _)) = buffer.get(sequence_start)
                        && start < address
                        && (code.is_empty() || code.iter().any(|&(begin, end)| begin <= start && start < end))
                    {
                        sequences.push(Sequence { start, end: address, rows: sequence_start..buffer.len() });
                    } else {
                        buffer.truncate(sequence_start);
                    }
                    sequence_start = buffer.len();
                    continue;
                }
                let file = u32::try_from(row.file_index()).unwrap_or(NO_FILE);
                let line = row.line().map_or(0, |line| line.get() as u32);
                let column = match row.column() {
                    gimli::ColumnType::LeftEdge => 0,
                    gimli::ColumnType::Column(column) => column.get() as u32,
                };
                let new = Row { file, line, column };
                // Several rows at one address: the last one holds (as in addr2line).
                if buffer.len() > sequence_start
                    && let Some(last) = buffer.last_mut()
                    && last.0 == address
                {
                    last.1 = new;
                } else {
                    buffer.push((address, new));
                }
            }
            buffer.truncate(sequence_start);
            if sequences.len() == first_sequence {
                buffer.truncate(unit_start);
                continue;
            }
            // Unit-local file indices to table ids, with the header as the program left it
            // (DWARF 4 programs may define files as they go).
            let unit = unit.unit_ref(dwarf);
            let header = rows.header();
            let mut ids = Vec::new();
            // DWARF 4 has no file 0; addr2line renders it empty.
            ids.push(match header.file(0) {
                Some(file) => table.file_id(&mut file_ids, render_file(unit, file, header)),
                None => table.file_id(&mut file_ids, Some(String::new())),
            });
            let mut index = 1;
            while let Some(file) = header.file(index) {
                ids.push(table.file_id(&mut file_ids, render_file(unit, file, header)));
                index += 1;
            }
            for (_, row) in &mut buffer[unit_start..] {
                row.file = ids.get(row.file as usize).copied().unwrap_or(NO_FILE);
            }
        }
        drop(file_ids);

        let (addrs, rows) = flatten(&buffer, &mut sequences);
        drop(buffer);
        table.rows = rows;
        table.index = AddrIndex::new(addrs);
        table.files.shrink_to_fit();
        table
    }

    fn file_id(&mut self, ids: &mut HashMap<String, u32>, path: Option<String>) -> u32 {
        let Some(path) = path else { return NO_FILE };
        if let Some(&id) = ids.get(&path) {
            return id;
        }
        let Ok(id) = u32::try_from(self.files.len()) else { return NO_FILE };
        if id == NO_FILE {
            return NO_FILE;
        }
        self.files.push(path.clone());
        ids.insert(path, id);
        id
    }

    /// The source location of `addr`, as addr2line's `find_location` has it.
    pub(crate) fn find(&self, addr: u64) -> Option<LineRef<'_>> {
        let i = self.index.count_at_or_below(addr).checked_sub(1)?;
        let row = self.rows.get(i)?;
        let file = self.files.get(row.file as usize)?;
        let known = row.line != 0;
        Some(LineRef { file, line: known.then_some(row.line), column: known.then_some(row.column) })
    }
}

/// The sequences' rows in one sorted array, with a gap row at each sequence's end (unless
/// the next one starts there). Where sequences overlap, the one starting first keeps what
/// it covers and the other is clipped to the rest; rows out of order or past their
/// sequence's end (malformed) are dropped, so the addresses come out sorted whatever the
/// input.
fn flatten(buffer: &[(u64, Row)], sequences: &mut [Sequence]) -> (Vec<u64>, Vec<Row>) {
    sequences.sort_by_key(|s| s.start);
    let mut addrs = Vec::with_capacity(buffer.len() + sequences.len());
    let mut rows = Vec::with_capacity(buffer.len() + sequences.len());
    // A row at the address of the one before replaces it (the next sequence starting
    // where the previous one ends replaces its gap).
    let push = |addrs: &mut Vec<u64>, rows: &mut Vec<Row>, address: u64, row: Row| {
        if addrs.last() == Some(&address) {
            if let Some(last) = rows.last_mut() {
                *last = row;
            }
        } else {
            addrs.push(address);
            rows.push(row);
        }
    };
    let gap = Row { file: NO_FILE, line: 0, column: 0 };
    // Everything below `covered` is taken (by an earlier sequence, or a gap); it is also
    // the last address pushed.
    let mut covered = 0;
    for sequence in sequences.iter() {
        if sequence.end <= covered {
            continue;
        }
        // The row covering `covered` when the sequence starts below it.
        let mut pending = None;
        for &(address, row) in buffer.get(sequence.rows.clone()).unwrap_or_default() {
            if address < covered {
                pending = Some(row);
                continue;
            }
            if address >= sequence.end || addrs.last().is_some_and(|&last| last > address) {
                continue;
            }
            if let Some(row) = pending.take()
                && address > covered
            {
                push(&mut addrs, &mut rows, covered, row);
            }
            push(&mut addrs, &mut rows, address, row);
        }
        if let Some(row) = pending {
            push(&mut addrs, &mut rows, covered, row);
        }
        push(&mut addrs, &mut rows, sequence.end, gap);
        covered = sequence.end;
    }
    addrs.shrink_to_fit();
    rows.shrink_to_fit();
    (addrs, rows)
}

/// The file's path as addr2line renders it: the compilation directory, the file's
/// directory, its name, each replacing what came before when absolute. `None` when a
/// string cannot be read.
fn render_file<'data>(
    unit: gimli::UnitRef<'_, Reader<'data>>,
    file: &gimli::FileEntry<Reader<'data>>,
    header: &gimli::LineProgramHeader<Reader<'data>>,
) -> Option<String> {
    let mut path = unit.comp_dir.map(|dir| dir.to_string_lossy().into_owned()).unwrap_or_default();
    // Directory 0 is the compilation directory.
    if file.directory_index() != 0
        && let Some(directory) = file.directory(header)
    {
        path_push(&mut path, &unit.attr_string(directory).ok()?.to_string_lossy());
    }
    path_push(&mut path, &unit.attr_string(file.path_name()).ok()?.to_string_lossy());
    Some(path)
}

fn path_push(path: &mut String, p: &str) {
    let forward_root = |p: &str| p.starts_with('/') || p.get(1..3) == Some(":/");
    let backward_root = |p: &str| p.starts_with('\\') || p.get(1..3) == Some(":\\");
    if forward_root(p) || backward_root(p) {
        p.clone_into(path);
    } else {
        let separator = if backward_root(path) { '\\' } else { '/' };
        if !path.is_empty() && !path.ends_with(separator) {
            path.push(separator);
        }
        path.push_str(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (start, end, [(address, line)]).
    type TestSequence<'a> = (u64, u64, &'a [(u64, u32)]);

    /// Flattens the sequences and returns (address, line) pairs, line 0 for gaps.
    fn flat(input: &[TestSequence<'_>]) -> Vec<(u64, u32)> {
        let mut buffer = Vec::new();
        let mut sequences = Vec::new();
        for &(start, end, rows) in input {
            let first = buffer.len();
            buffer.extend(rows.iter().map(|&(address, line)| (address, Row { file: 0, line, column: 0 })));
            sequences.push(Sequence { start, end, rows: first..buffer.len() });
        }
        let (addrs, rows) = flatten(&buffer, &mut sequences);
        assert!(addrs.is_sorted(), "{addrs:?}");
        addrs.into_iter().zip(rows.iter().map(|r| if r.file == NO_FILE { 0 } else { r.line })).collect()
    }

    #[test]
    fn sequences_sorted_with_gaps_between() {
        assert_eq!(
            flat(&[(0x20, 0x30, &[(0x20, 5), (0x28, 6)]), (0x10, 0x20, &[(0x10, 1), (0x14, 2)])]),
            [(0x10, 1), (0x14, 2), (0x20, 5), (0x28, 6), (0x30, 0)],
            "a sequence starting where another ends replaces its gap"
        );
        assert_eq!(
            flat(&[(0x10, 0x18, &[(0x10, 1)]), (0x20, 0x28, &[(0x20, 2)])]),
            [(0x10, 1), (0x18, 0), (0x20, 2), (0x28, 0)]
        );
    }

    #[test]
    fn overlapping_sequences_are_clipped() {
        // The second starts inside the first: it keeps only what lies beyond, starting
        // with the row that covered the first one's end.
        assert_eq!(
            flat(&[(0x10, 0x20, &[(0x10, 1)]), (0x18, 0x30, &[(0x18, 7), (0x1c, 8), (0x24, 9)])]),
            [(0x10, 1), (0x20, 8), (0x24, 9), (0x30, 0)]
        );
        // Contained entirely: dropped.
        assert_eq!(flat(&[(0x10, 0x40, &[(0x10, 1)]), (0x18, 0x30, &[(0x18, 7)])]), [(0x10, 1), (0x40, 0)]);
        // Every row below the clip point.
        assert_eq!(flat(&[(0x10, 0x20, &[(0x10, 1)]), (0x18, 0x28, &[(0x18, 7)])]), [(0x10, 1), (0x20, 7), (0x28, 0)]);
    }

    #[test]
    fn malformed_rows_keep_the_table_sorted() {
        assert_eq!(
            flat(&[(0x10, 0x20, &[(0x10, 1), (0x18, 2), (0x14, 3), (0x30, 4), (0x1c, 5)])]),
            [(0x10, 1), (0x18, 2), (0x1c, 5), (0x20, 0)]
        );
        // Row ranges out of the buffer: an empty sequence, no panic.
        let mut sequences = [Sequence { start: 1, end: 2, rows: 5..9 }];
        let (addrs, _) = flatten(&[], &mut sequences);
        assert_eq!(addrs, [2]);
    }
}
