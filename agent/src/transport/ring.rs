//! One CPU's perf ring buffer, opened by kscope itself rather than through
//! aya: aya 0.14 opens perf buffers with `wakeup_events = 1`, so every event
//! the kernel programs emit raises an irq_work interrupt to wake the reader.
//! Measured on this project's machines, that interrupt is most of what an
//! emitting program costs the traced code. A watermark wakeup (a quarter of
//! the ring) plus a short periodic drain gives the same data for one wakeup
//! per batch.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (64 bytes), which
/// every kernel accepts.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_watermark: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const ATTR_FLAG_DISABLED: u64 = 1 << 0;
const ATTR_FLAG_WATERMARK: u64 = 1 << 14;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// Where `data_head` and `data_tail` sit in `struct perf_event_mmap_page`.
const DATA_HEAD_OFFSET: usize = 1024;
const DATA_TAIL_OFFSET: usize = 1032;

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;

/// What one drain found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub samples: u64,
    pub lost: u64,
    /// Records whose header did not make sense (the ring is then skipped to
    /// its head: a kernel bug or memory corruption, counted, not trusted).
    pub malformed: u64,
}

pub struct PerfRing {
    fd: OwnedFd,
    mmap: NonNull<u8>,
    mmap_len: usize,
    page_size: usize,
    data_len: usize,
    /// A record that wraps around the ring's end is copied here whole.
    scratch: Vec<u8>,
}

// SAFETY: the mapping is owned by this value alone; the kernel writes the
// data area and `data_head`, and only this value reads them and writes
// `data_tail`.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Opens a BPF output perf event on `cpu` with a `pages`-page ring (a
    /// power of two) and a wakeup when a quarter of it is filled.
    pub fn open(cpu: u32, pages: usize) -> io::Result<Self> {
        if !pages.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "ring pages must be a power of two"));
        }
        // SAFETY: sysconf has no memory effects.
        let page_size = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let data_len = pages * page_size;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_BPF_OUTPUT,
            sample_period: 1,
            sample_type: PERF_SAMPLE_RAW,
            flags: ATTR_FLAG_DISABLED | ATTR_FLAG_WATERMARK,
            wakeup_watermark: (data_len / 4) as u32,
            ..Default::default()
        };
        // SAFETY: perf_event_open reads `attr` (valid, sized by its `size`).
        let fd = unsafe {
            libc::syscall(libc::SYS_perf_event_open, &raw const attr, -1, cpu as libc::c_int, -1, PERF_FLAG_FD_CLOEXEC)
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        let mmap_len = page_size + data_len;
        // SAFETY: a fresh shared mapping of the perf fd; checked below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mmap = NonNull::new(addr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let ring = Self { fd, mmap, mmap_len, page_size, data_len, scratch: Vec::new() };
        // SAFETY: ioctl on our own perf fd with no argument pointer.
        if unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ring)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: both offsets lie in the first (metadata) page of the
        // mapping and are 8-byte aligned; the kernel updates them atomically.
        unsafe { &*self.mmap.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn data(&self) -> &[u8] {
        // SAFETY: the data area follows the metadata page and is `data_len`
        // bytes long; the kernel writes only between head and the reader's tail.
        unsafe { std::slice::from_raw_parts(self.mmap.as_ptr().add(self.page_size), self.data_len) }
    }

    /// Hands every sample's raw bytes to `sample`, counts lost records, and
    /// gives the space back to the kernel.
    pub fn drain(&mut self, mut sample: impl FnMut(&[u8])) -> Drained {
        let head = self.word(DATA_HEAD_OFFSET).load(Ordering::Acquire);
        let tail = self.word(DATA_TAIL_OFFSET).load(Ordering::Relaxed);
        let mut scratch = std::mem::take(&mut self.scratch);
        let drained = parse_records(self.data(), tail, head, &mut scratch, &mut sample);
        self.scratch = scratch;
        self.word(DATA_TAIL_OFFSET).store(head, Ordering::Release);
        drained
    }
}

impl AsFd for PerfRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for PerfRing {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping this value created, once.
        unsafe { libc::munmap(self.mmap.as_ptr().cast(), self.mmap_len) };
    }
}

/// Walks the records between `tail` and `head` (free-running byte counters)
/// of a ring whose size is a power of two. Pure, so it can be tested with a
/// made-up ring, wrap-arounds and garbage included.
pub fn parse_records(
    ring: &[u8],
    tail: u64,
    head: u64,
    scratch: &mut Vec<u8>,
    mut sample: impl FnMut(&[u8]),
) -> Drained {
    let mut drained = Drained::default();
    let len = ring.len() as u64;
    if len == 0 || !len.is_power_of_two() || head < tail || head - tail > len {
        drained.malformed += u64::from(head != tail);
        return drained;
    }
    let mut at = tail;
    while at < head {
        let available = head - at;
        if available < 8 {
            drained.malformed += 1;
            break;
        }
        let mut header = [0u8; 8];
        copy_out(ring, at, &mut header);
        let kind = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]);
        let size = u64::from(u16::from_ne_bytes([header[6], header[7]]));
        if size < 8 || size > available {
            drained.malformed += 1;
            break;
        }
        scratch.clear();
        scratch.resize(size as usize, 0);
        copy_out(ring, at, scratch);
        match kind {
            PERF_RECORD_SAMPLE => {
                // header, then u32 size, then the raw bytes (padded to 8).
                let raw_len = scratch.get(8..12).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize);
                match raw_len.and_then(|n| scratch.get(12..12 + n)) {
                    Some(raw) => {
                        drained.samples += 1;
                        sample(raw);
                    }
                    None => drained.malformed += 1,
                }
            }
            PERF_RECORD_LOST => {
                // header, then u64 id, then u64 lost.
                match scratch.get(16..24) {
                    Some(b) => drained.lost += u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])),
                    None => drained.malformed += 1,
                }
            }
            _ => {}
        }
        at += size;
    }
    drained
}

/// Copies `out.len()` bytes starting at free-running position `at`,
/// wrapping at the ring's end.
fn copy_out(ring: &[u8], at: u64, out: &mut [u8]) {
    let start = (at % ring.len() as u64) as usize;
    let first = out.len().min(ring.len() - start);
    out[..first].copy_from_slice(&ring[start..start + first]);
    let rest = out.len() - first;
    out[first..].copy_from_slice(&ring[..rest]);
}

/// Points the kernel programs' `EVENTS` map slot `cpu` at this ring.
pub fn install(map: BorrowedFd<'_>, cpu: u32, ring: &PerfRing) -> io::Result<()> {
    #[repr(C)]
    struct MapUpdate {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let value: u32 = ring.as_raw_fd() as u32;
    let attr = MapUpdate {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: (&raw const cpu) as u64,
        value: (&raw const value) as u64,
        flags: 0,
    };
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    // SAFETY: bpf(2) reads `attr` and the key and value it points to, all
    // alive for the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_UPDATE_ELEM, &raw const attr, size_of::<MapUpdate>()) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_record(payload: &[u8]) -> Vec<u8> {
        let raw_len = payload.len();
        let size = (8 + 4 + raw_len).next_multiple_of(8);
        let mut r = Vec::new();
        r.extend_from_slice(&PERF_RECORD_SAMPLE.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&(size as u16).to_ne_bytes());
        r.extend_from_slice(&(raw_len as u32).to_ne_bytes());
        r.extend_from_slice(payload);
        r.resize(size, 0);
        r
    }

    fn lost_record(count: u64) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&PERF_RECORD_LOST.to_ne_bytes());
        r.extend_from_slice(&0u16.to_ne_bytes());
        r.extend_from_slice(&24u16.to_ne_bytes());
        r.extend_from_slice(&7u64.to_ne_bytes());
        r.extend_from_slice(&count.to_ne_bytes());
        r
    }

    /// Writes records into a ring starting at free-running position `start`.
    fn ring_with(records: &[Vec<u8>], len: usize, start: u64) -> (Vec<u8>, u64, u64) {
        let mut ring = vec![0xAAu8; len];
        let mut at = start;
        for r in records {
            for (i, b) in r.iter().enumerate() {
                ring[((at + i as u64) % len as u64) as usize] = *b;
            }
            at += r.len() as u64;
        }
        (ring, start, at)
    }

    fn collect(ring: &[u8], tail: u64, head: u64) -> (Vec<Vec<u8>>, Drained) {
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        let d = parse_records(ring, tail, head, &mut scratch, |raw| got.push(raw.to_vec()));
        (got, d)
    }

    #[test]
    fn reads_samples_and_lost_counts_in_order() {
        let records = [sample_record(b"first"), lost_record(3), sample_record(&[9u8; 33])];
        let (ring, tail, head) = ring_with(&records, 256, 0);
        let (got, d) = collect(&ring, tail, head);
        assert_eq!(got, vec![b"first".to_vec(), vec![9u8; 33]]);
        assert_eq!(d, Drained { samples: 2, lost: 3, malformed: 0 });
    }

    #[test]
    fn a_record_that_wraps_the_ring_comes_out_whole() {
        let payload: Vec<u8> = (0..40).collect();
        // Starts 16 bytes before the end of a 128-byte ring, on its second lap.
        let (ring, tail, head) = ring_with(&[sample_record(&payload)], 128, 128 + 112);
        let (got, d) = collect(&ring, tail, head);
        assert_eq!(got, vec![payload]);
        assert_eq!(d.samples, 1);
    }

    #[test]
    fn garbage_sizes_stop_the_walk_and_are_counted() {
        let mut bad = sample_record(b"x");
        bad[6..8].copy_from_slice(&4u16.to_ne_bytes()); // smaller than a header
        let (ring, tail, head) = ring_with(&[bad], 64, 0);
        assert_eq!(collect(&ring, tail, head).1, Drained { samples: 0, lost: 0, malformed: 1 });

        let mut long = sample_record(b"x");
        long[8..12].copy_from_slice(&1000u32.to_ne_bytes()); // raw size past the record
        let (ring, tail, head) = ring_with(&[long], 64, 0);
        assert_eq!(collect(&ring, tail, head).1, Drained { samples: 0, lost: 0, malformed: 1 });

        // head behind tail, or more than a ring apart.
        assert_eq!(collect(&[0; 64], 10, 5).1.malformed, 1);
        assert_eq!(collect(&[0; 64], 0, 65).1.malformed, 1);
        assert_eq!(collect(&[0; 64], 8, 8).1, Drained::default());
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator: no extra dependency for a fuzz loop.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2000 {
            let ring: Vec<u8> = (0..128).map(|_| next() as u8).collect();
            let tail = next() % 512;
            let head = tail + next() % 160;
            let _ = collect(&ring, tail, head);
        }
    }
}
