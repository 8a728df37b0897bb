//! `/proc/PID/maps` parsing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// One mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MapEntry {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) executable: bool,
    /// The file offset mapped at `start`.
    pub(crate) offset: u64,
    pub(crate) inode: u64,
    pub(crate) path: MapPath,
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum MapPath {
    /// Nothing: anonymous memory (heap arenas, JIT code, stacks of other threads).
    Anonymous,
    /// A kernel-provided region: `[heap]`, `[stack]`, `[vdso]`, `[vvar]`, `[anon:name]`...
    Special(String),
    /// A file, by the path the process mapped it under (as the kernel prints it: in the
    /// process's mount namespace, without the ` (deleted)` marker).
    File { path: PathBuf, deleted: bool },
}

impl MapEntry {
    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// The name `/proc/PID/map_files/` gives this mapping (`%lx-%lx`, unpadded, unlike maps).
    pub(crate) fn map_files_name(&self) -> String {
        format!("{:x}-{:x}", self.start, self.end)
    }

    /// The file offset of `addr`, which must be inside the mapping.
    pub(crate) fn file_offset(&self, addr: u64) -> Option<u64> {
        self.offset.checked_add(addr.checked_sub(self.start)?)
    }
}

fn hex(field: &[u8]) -> Option<u64> {
    // `from_str_radix` would accept a sign; maps never has one.
    if field.is_empty() || field.len() > 16 || !field.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(field).ok()?, 16).ok()
}

/// Splits off the next space-separated field.
fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let start = rest.iter().position(|&b| b != b' ' && b != b'\t')?;
    let tail = rest.get(start..)?;
    let len = tail.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(tail.len());
    let (found, remaining) = tail.split_at(len);
    *rest = remaining;
    Some(found)
}

fn parse_line(line: &[u8]) -> Option<MapEntry> {
    let mut rest = line;
    let (start, end) = {
        let range = field(&mut rest)?;
        let dash = range.iter().position(|&b| b == b'-')?;
        (hex(range.get(..dash)?)?, hex(range.get(dash + 1..)?)?)
    };
    if start >= end {
        return None;
    }
    let perms = field(&mut rest)?;
    if perms.len() != 4 || !perms.iter().all(|b| b"rwxsp-".contains(b)) {
        return None;
    }
    let offset = hex(field(&mut rest)?)?;
    let dev = field(&mut rest)?;
    let colon = dev.iter().position(|&b| b == b':')?;
    hex(dev.get(..colon)?)?;
    hex(dev.get(colon + 1..)?)?;
    let inode = std::str::from_utf8(field(&mut rest)?).ok()?.parse().ok()?;
    // The path is the rest of the line, spaces included; the kernel pads before it.
    let start_of_path = rest.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(rest.len());
    let name = rest.get(start_of_path..)?;
    let path = if name.is_empty() {
        MapPath::Anonymous
    } else if name.first() == Some(&b'/') {
        let (name, deleted) = match name.strip_suffix(b" (deleted)") {
            Some(name) => (name, true),
            None => (name, false),
        };
        MapPath::File { path: PathBuf::from(OsStr::from_bytes(name)), deleted }
    } else {
        MapPath::Special(String::from_utf8_lossy(name).into_owned())
    };
    Some(MapEntry { start, end, executable: perms.get(2) == Some(&b'x'), offset, inode, path })
}

/// Parses maps text: the mappings sorted by start, and the number of lines skipped as
/// malformed (or overlapping an earlier one, which the kernel never prints).
pub(crate) fn parse(text: &[u8]) -> (Vec<MapEntry>, usize) {
    let mut entries = Vec::new();
    let mut skipped = 0;
    for line in text.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(entry) => entries.push(entry),
            None => skipped += 1,
        }
    }
    entries.sort_by_key(|e| e.start);
    // Lookup is a binary search on start, which needs disjoint ranges.
    let before = entries.len();
    let mut last_end = 0;
    entries.retain(|e| {
        let keep = e.start >= last_end;
        if keep {
            last_end = e.end;
        }
        keep
    });
    let overlapping = before - entries.len();
    (entries, skipped + overlapping)
}

/// The mapping containing `addr`, in entries sorted and disjoint as [`parse`] returns them.
pub(crate) fn find(entries: &[MapEntry], addr: u64) -> Option<usize> {
    let index = entries.partition_point(|e| e.start <= addr).checked_sub(1)?;
    entries.get(index).filter(|e| e.contains(addr)).map(|_| index)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SAMPLE: &[u8] = b"\
555d61291000-555d61293000 r--p 00000000 fe:00 247282                     /usr/bin/head
555d61293000-555d61299000 r-xp 00002000 fe:00 247282                     /usr/bin/head
555d6129c000-555d612bd000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000001000-7f0000002000 r-xp 00001000 08:01 42                         /tmp/with space/lib (deleted)
7ffd1a5f0000-7ffd1a5f2000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn sample() {
        let (entries, skipped) = parse(SAMPLE);
        assert_eq!(skipped, 0);
        assert_eq!(entries.len(), 7);
        let text = &entries[1];
        assert!(text.executable);
        assert_eq!(text.offset, 0x2000);
        assert_eq!(text.inode, 247282);
        assert_eq!(text.path, MapPath::File { path: "/usr/bin/head".into(), deleted: false });
        assert_eq!(text.map_files_name(), "555d61293000-555d61299000");
        assert_eq!(text.file_offset(0x555d61293010), Some(0x2010));
        assert_eq!(entries[2].path, MapPath::Special("[heap]".into()));
        assert_eq!(entries[3].path, MapPath::Anonymous);
        assert_eq!(entries[4].path, MapPath::File { path: "/tmp/with space/lib".into(), deleted: true });
        assert_eq!(find(&entries, 0x555d61293000), Some(1));
        assert_eq!(find(&entries, 0x555d61298fff), Some(1));
        assert_eq!(find(&entries, 0x555d61299000), None);
        assert_eq!(find(&entries, 0), None);
        assert_eq!(find(&entries, u64::MAX), None);
    }

    #[test]
    fn garbage_lines() {
        let (entries, skipped) = parse(
            b"nonsense\n\
              1000-0800 r-xp 00000000 00:00 0 /reversed\n\
              1000-2000 r-xq 00000000 00:00 0 /bad_perms\n\
              1000-2000 r-xp zz 00:00 0 /bad_offset\n\
              1000-2000 r-xp 00000000 0000 0 /bad_dev\n\
              1000-2000 r-xp 00000000 00:00 -1 /bad_inode\n\
              1000 r-xp 00000000 00:00 0 /no_dash\n\
              10000000000000000-10000000000000001 r-xp 00000000 00:00 0 /too_wide\n\
              1000-2000 r-xp 00000000 00:00 0 /ok\n\
              1800-2800 r-xp 00000000 00:00 0 /overlaps\n",
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(skipped, 9);
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in proptest::collection::vec(any::<u8>(), 0..512), probe in any::<u64>()) {
            let (entries, _) = parse(&text);
            if let Some(index) = find(&entries, probe) {
                prop_assert!(entries[index].contains(probe));
            }
        }

        #[test]
        fn mutated_sample_never_panics(pos in 0..SAMPLE.len(), byte in any::<u8>(), probe in any::<u64>()) {
            let mut text = SAMPLE.to_vec();
            text[pos] = byte;
            let (entries, _) = parse(&text);
            for pair in entries.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start);
            }
            if let Some(index) = find(&entries, probe) {
                prop_assert!(entries[index].contains(probe));
                let _ = entries[index].file_offset(probe);
            }
        }
    }
}
