//! The QEMU harness: boots Debian's cloud kernels with a busybox initramfs
//! and runs one shell script inside them.
//!
//! The host kernel has no kprobes and refuses fentry, so every sensor that
//! needs them can only be exercised in a guest. Debian's cloud kernels are the
//! guests because they are real distribution kernels (the configs users run),
//! they are fetched by name from the package registry we can reach, and they
//! boot without modules when all a test needs is loopback networking.
//! Everything runs under TCG: `-enable-kvm` hangs on these machines.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, ensure};

/// The guest's hostname, so tests can tell guest output from host output.
pub const GUEST_HOSTNAME: &str = "kscope-vm";

/// A Debian cloud kernel the VM tests boot.
///
/// Only the series is fixed here: Debian replaces the package of a series with
/// every point release, so pinning a full package name would break the tests
/// as soon as the archive moves on.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// Stable name for test output and cache layout ("debian-6.1", "debian-6.12").
    pub label: &'static str,
    /// Major.minor that a package's version must start with.
    series: &'static str,
}

/// The kernels of the VM matrix.
///
/// 6.1 is bookworm's default kernel and 6.12 the newest one Debian ships for
/// bookworm; between them, function prototypes that sensors hook
/// (`inet_csk_accept`, `bprm_execve`) and struct layouts (`tcp_sock`, `file`,
/// `task_struct`) differ, which is what a single portable object must survive.
pub fn guest_kernels() -> Vec<GuestKernel> {
    vec![GuestKernel { label: "debian-6.1", series: "6.1" }, GuestKernel { label: "debian-6.12", series: "6.12" }]
}

const IMAGE_PREFIX: &str = "linux-image-";

fn refresh_apt_lists() -> Result<()> {
    let status = Command::new("apt-get")
        .args(["-q", "update"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .context("running apt-get update")?;
    ensure!(status.success(), "apt-get update failed ({status})");
    Ok(())
}
const IMAGE_SUFFIX: &str = "-cloud-amd64";

impl GuestKernel {
    /// Resolves the series' newest image package with apt-cache (the point
    /// release in the name changes), downloads and unpacks it under
    /// `cache_dir/<package>/`, and returns the path of its vmlinuz.
    ///
    /// An image already unpacked there is reused without any download, so
    /// only the first run on a machine (or after a point release) pays for
    /// the ~30 MB package. If apt-cache cannot answer (no package lists),
    /// the newest image of the series already in the cache is used instead.
    pub fn fetch(&self, cache_dir: &Path) -> Result<PathBuf> {
        match self.fetch_once(cache_dir) {
            Ok(vmlinuz) => Ok(vmlinuz),
            // Stale package lists name a point release the archive has since
            // replaced: refresh them once and try again.
            Err(first) => {
                refresh_apt_lists().with_context(|| format!("after: {first:#}"))?;
                self.fetch_once(cache_dir).with_context(|| format!("also before `apt-get update`: {first:#}"))
            }
        }
    }

    fn fetch_once(&self, cache_dir: &Path) -> Result<PathBuf> {
        let package = match self.resolve_package() {
            Ok(package) => package,
            Err(err) => {
                return self.newest_cached(cache_dir)?.ok_or(err).with_context(|| {
                    format!("no {} kernel package found and none cached in {}", self.label, cache_dir.display())
                });
            }
        };
        let unpacked = cache_dir.join(&package);
        if let Some(vmlinuz) = find_vmlinuz(&unpacked)? {
            return Ok(vmlinuz);
        }
        download_and_unpack(&package, cache_dir, &unpacked)
            .with_context(|| format!("fetching {} kernel {package}", self.label))?;
        find_vmlinuz(&unpacked)?
            .ok_or_else(|| anyhow!("package {package} unpacked to {} has no boot/vmlinuz-*", unpacked.display()))
    }

    fn resolve_package(&self) -> Result<String> {
        // One `pkgnames` call instead of `depends` on the meta package plus a
        // `search`: each apt-cache run costs about a second here, and the
        // prefix listing already holds every image of the series.
        let prefix = format!("{IMAGE_PREFIX}{}", self.series);
        let names = capture(Command::new("apt-cache").args(["pkgnames", &prefix]))
            .context("listing kernel images with apt-cache (is this Debian, and has `apt-get update` run?)")?;
        names
            .lines()
            .filter_map(|name| self.image_version(name).map(|version| (version, name)))
            .max()
            .map(|(_, name)| name.to_owned())
            .ok_or_else(|| anyhow!("apt-cache knows no {prefix}*{IMAGE_SUFFIX} package"))
    }

    /// The numeric version of an image package of this series, for ordering;
    /// `None` for meta packages, other series, and -dbg/-unsigned variants.
    fn image_version(&self, package: &str) -> Option<Vec<u64>> {
        let version = package.strip_prefix(IMAGE_PREFIX)?.strip_suffix(IMAGE_SUFFIX)?;
        let rest = version.strip_prefix(self.series)?;
        // "6.1" must not match "6.12", and "6.12" alone is the meta package.
        if !rest.starts_with(['.', '-']) {
            return None;
        }
        Some(
            version
                .split(|c: char| !c.is_ascii_digit())
                .filter(|part| !part.is_empty())
                .filter_map(|part| part.parse().ok())
                .collect(),
        )
    }

    fn newest_cached(&self, cache_dir: &Path) -> Result<Option<PathBuf>> {
        let entries = match fs::read_dir(cache_dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", cache_dir.display()));
            }
        };
        let mut best = None;
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", cache_dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = self.image_version(&name) else {
                continue;
            };
            if let Some(vmlinuz) = find_vmlinuz(&entry.path())?
                && best.as_ref().is_none_or(|(v, _)| *v < version)
            {
                best = Some((version, vmlinuz));
            }
        }
        Ok(best.map(|(_, vmlinuz)| vmlinuz))
    }
}

fn find_vmlinuz(unpacked: &Path) -> Result<Option<PathBuf>> {
    let boot = unpacked.join("boot");
    let entries = match fs::read_dir(&boot) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", boot.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", boot.display()))?;
        if entry.file_name().to_string_lossy().starts_with("vmlinuz-") {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Unpacks into a private staging directory and renames it into place, so a
/// concurrent or interrupted fetch never leaves a half-unpacked image that a
/// later run would take for a cached one.
fn download_and_unpack(package: &str, cache_dir: &Path, unpacked: &Path) -> Result<()> {
    let staging = cache_dir.join(format!(".staging-{package}-{}", unique_token()));
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let result = (|| {
        capture(Command::new("apt-get").args(["download", "--quiet", package]).current_dir(&staging))?;
        let deb = fs::read_dir(&staging)
            .with_context(|| format!("reading {}", staging.display()))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .ok_or_else(|| anyhow!("apt-get download left no .deb in {}", staging.display()))?;
        let root = staging.join("root");
        capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        match fs::rename(&root, unpacked) {
            Ok(()) => Ok(()),
            // Another process won the race; its copy is as good as ours.
            Err(_) if find_vmlinuz(unpacked)?.is_some() => Ok(()),
            Err(err) => Err(err).with_context(|| format!("moving {} to {}", root.display(), unpacked.display())),
        }
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Runs a command to completion and returns its stdout, or an error that
/// carries its stderr (apt's messages are the only clue when a fetch fails).
fn capture(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {shown}"))?;
    ensure!(out.status.success(), "{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A file copied into the initramfs: (host path, absolute guest path).
///
/// The guest file keeps the host's mode bits, so an executable built on the
/// host stays executable in the guest without the script having to chmod it.
#[derive(Debug, Clone)]
pub struct GuestFile {
    pub host: PathBuf,
    pub guest: String,
}

/// What a guest script did.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// Everything the script printed to stdout and stderr, exactly (the serial
    /// line's `\r` removed); nothing of /init's, and of the kernel's only
    /// emergency-level messages (a panic or oops, which tests should see).
    pub output: String,
    /// The script's exit code, so tests can fail on a guest-side check
    /// without parsing the output.
    pub exit_code: i32,
    /// Wall time from starting QEMU to its exit, to keep an eye on how much
    /// of the CI budget the VM matrix takes.
    pub boot_and_run: Duration,
}

/// Boots `kernel` under `qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2
/// -nographic -no-reboot -nic none` (a NIC would need a module) with an initramfs built in a temporary directory
/// under `work_dir`, runs `script` with /bin/sh as root, and powers off.
///
/// The initramfs holds static busybox (linked with `--install -s`), `files`,
/// and an /init that mounts proc, sysfs, devtmpfs, devpts, tracefs
/// (/sys/kernel/tracing), debugfs, cgroup2 (/sys/fs/cgroup) and bpffs
/// (/sys/fs/bpf), brings `lo` up with 127.0.0.1, sets the hostname to
/// [`GUEST_HOSTNAME`], and sets the clock from the host's if the guest's RTC
/// left it wrong. These are what eBPF loaders and our sensors expect of a
/// real system; no kernel modules are loaded, so no disk or NIC exists.
///
/// The script's output is framed on the serial console by marker lines that
/// carry a per-run nonce (so nothing the script prints can fake them), with
/// the console log level at 1 from boot on (`quiet loglevel=1`, and
/// `/proc/sys/kernel/printk` = 1 before the script) so ordinary kernel
/// messages cannot interleave. Level 1 rather than 0 because the kernel only
/// switches to verbose output on a panic or oops when the level is non-zero:
/// at 0 a guest crash would leave nothing in the serial log to explain it.
/// Standard input is /dev/null, so a script that reads cannot hang the run.
///
/// QEMU is killed and an error returned once `timeout` passes. Any failure
/// (timeout, missing markers, a kernel panic) returns an error that carries
/// the tail of the serial log, and keeps the run directory for inspection;
/// a successful run removes it.
pub fn run_in_guest(
    kernel: &Path,
    files: &[GuestFile],
    script: &str,
    work_dir: &Path,
    timeout: Duration,
) -> Result<GuestRun> {
    ensure!(kernel.is_file(), "no kernel image at {}", kernel.display());
    match boot_once(kernel, files, script, work_dir, timeout) {
        // Under TCG with two CPUs, Debian's 6.12 kernel now and then dies of
        // an int3 Oops while patching its own text during boot, before /init
        // runs (seen here: sched_clock_idle_wakeup_event). That is the
        // emulator, not the code under test: boot once more, and say so.
        Err(BootError::PanickedBeforeInit(first)) => {
            eprintln!("vm: guest kernel panicked before /init; booting again ({})", first.lines().next().unwrap_or(""));
            boot_once(kernel, files, script, work_dir, timeout).map_err(BootError::into_anyhow)
        }
        other => other.map_err(BootError::into_anyhow),
    }
}

enum BootError {
    PanickedBeforeInit(String),
    Other(anyhow::Error),
}

impl BootError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            Self::PanickedBeforeInit(text) => anyhow!(text),
            Self::Other(err) => err,
        }
    }
}

impl From<anyhow::Error> for BootError {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

fn boot_once(
    kernel: &Path,
    files: &[GuestFile],
    script: &str,
    work_dir: &Path,
    timeout: Duration,
) -> std::result::Result<GuestRun, BootError> {
    let token = unique_token();
    let run_dir = work_dir.join(format!("kscope-vm-{token}"));
    fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let markers = Markers::new(&token);
    let initrd = run_dir.join("initramfs.cpio");
    build_initramfs(&initrd, files, script, &markers)
        .with_context(|| format!("building initramfs {}", initrd.display()))?;

    let host_epoch = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Bare `name=value` words the kernel does not know become /init's
    // environment: that is how the host's clock gets to the guest.
    let cmdline = format!("console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init KSCOPE_HOST_EPOCH={host_epoch}");
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(&cmdline)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (apt-get install qemu-system-x86)")?;
    let serial_reader = drain(child.stdout.take());
    let stderr_reader = drain(child.stderr.take());
    let status = crate::wait_timeout(&mut child, timeout)?;
    let boot_and_run = started.elapsed();
    let serial = String::from_utf8_lossy(&collect(serial_reader)).replace('\r', "");
    let qemu_stderr = String::from_utf8_lossy(&collect(stderr_reader)).into_owned();
    let serial_log = run_dir.join("serial.log");
    // Best effort: the log only helps a person debugging a failed run.
    let _ = fs::write(&serial_log, &serial);

    let failure = |what: String| {
        anyhow!(
            "{what} (kernel {}, run dir {})\nqemu stderr: {}\nserial log tail:\n{}",
            kernel.display(),
            run_dir.display(),
            qemu_stderr.trim(),
            tail(&serial, 60)
        )
    };
    let Some(status) = status else {
        return Err(failure(format!("guest did not power off within {timeout:?}; qemu killed")).into());
    };
    let Some((output, exit_code)) = markers.parse(&serial) else {
        let what = format!("guest output markers missing after {boot_and_run:?} (qemu {status})");
        if !serial.contains(&markers.begin) && serial.contains("Kernel panic") {
            return Err(BootError::PanickedBeforeInit(format!("{:#}", failure(what))));
        }
        return Err(failure(what).into());
    };
    // Best effort: a leftover run dir is only disk space.
    let _ = fs::remove_dir_all(&run_dir);
    Ok(GuestRun { output, exit_code, boot_and_run })
}

struct Markers {
    begin: String,
    end: String,
}

impl Markers {
    fn new(token: &str) -> Self {
        Markers { begin: format!("==kscope-vm-begin-{token}=="), end: format!("==kscope-vm-end-{token}==") }
    }

    /// /init prints `\n<end> exit=N` after the script, so the newline before
    /// the end marker is ours and everything before it is the script's.
    fn parse(&self, serial: &str) -> Option<(String, i32)> {
        let begin_line = format!("{}\n", self.begin);
        let start = serial.find(&begin_line)? + begin_line.len();
        let body = &serial[start..];
        let end_at = body.find(&format!("\n{} exit=", self.end))?;
        let after = &body[end_at + 1 + self.end.len() + " exit=".len()..];
        let code = after.lines().next()?.trim().parse().ok()?;
        Some((body[..end_at].to_owned(), code))
    }

    fn init_script(&self) -> String {
        format!(
            r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
# A failed mount is reported before the begin marker, so it shows in the
# serial log of a failing run without polluting the script's output.
m() {{ mkdir -p "$2" 2>/dev/null; mount -t "$1" "$1" "$2" || echo "kscope-init: mount $1 on $2 failed"; }}
m proc /proc
echo 1 > /proc/sys/kernel/printk
m sysfs /sys
m devtmpfs /dev
exec </dev/console >/dev/console 2>&1
m devpts /dev/pts
m tmpfs /dev/shm
m tmpfs /run
m tracefs /sys/kernel/tracing
m debugfs /sys/kernel/debug
m cgroup2 /sys/fs/cgroup
m bpf /sys/fs/bpf
ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null
hostname {GUEST_HOSTNAME}
now=$(date +%s)
if [ -n "$KSCOPE_HOST_EPOCH" ] && [ "$now" -lt "$KSCOPE_HOST_EPOCH" ]; then
    date -s "@$KSCOPE_HOST_EPOCH" >/dev/null
fi
unset KSCOPE_HOST_EPOCH now
cd /
echo '{begin}'
/bin/sh /kscope/script </dev/null
rc=$?
printf '\n%s exit=%d\n' '{end}' "$rc"
# tcsetattr(TCSADRAIN) waits until the UART has sent what is queued, so
# poweroff -f cannot cut off the end marker.
stty -F /dev/console onlcr 2>/dev/null
poweroff -f
"#,
            begin = self.begin,
            end = self.end,
        )
    }
}

fn build_initramfs(path: &Path, files: &[GuestFile], script: &str, markers: &Markers) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    ensure_static(busybox)?;

    let mut dirs: BTreeSet<String> =
        ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "root", "etc", "kscope"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    let mut guest_files = Vec::with_capacity(files.len());
    for file in files {
        let relative = file
            .guest
            .strip_prefix('/')
            .filter(|rel| !rel.is_empty() && !rel.split('/').any(|c| c.is_empty() || c == "." || c == ".."))
            .ok_or_else(|| anyhow!("guest path {:?} is not a clean absolute path", file.guest))?;
        let mut parent = Path::new(relative).parent();
        while let Some(dir) = parent.filter(|dir| !dir.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        guest_files.push((relative, &file.host));
    }

    let out = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut cpio = CpioWriter::new(BufWriter::new(out));
    // BTreeSet order puts every directory before its children.
    for dir in &dirs {
        let mode = if dir == "tmp" { 0o041777 } else { 0o040755 };
        cpio.entry(dir, mode, (0, 0), 0, io::empty())?;
    }
    // The kernel opens /dev/console for init before anything is mounted;
    // without the node, init runs with no stdout at all.
    cpio.entry("dev/console", 0o020600, (5, 1), 0, io::empty())?;
    cpio.bytes("etc/hosts", 0o100644, b"127.0.0.1 localhost\n::1 localhost\n")?;
    cpio.bytes("etc/passwd", 0o100644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.bytes("etc/group", 0o100644, b"root:x:0:\n")?;
    cpio.host_file("bin/busybox", busybox, Some(0o755))?;
    cpio.bytes("init", 0o100755, markers.init_script().as_bytes())?;
    cpio.bytes("kscope/script", 0o100755, script.as_bytes())?;
    // Last, so a test's own file replaces a default of the same name.
    for (relative, host) in guest_files {
        cpio.host_file(relative, host, None)?;
    }
    cpio.finish()
}

/// A dynamically linked busybox dies in the guest with a bare "Kernel panic -
/// not syncing: No working init found"; better to say why on the host.
fn ensure_static(path: &Path) -> Result<()> {
    let elf = fs::read(path).with_context(|| format!("reading {} (apt-get install busybox-static)", path.display()))?;
    let field = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(bytes.iter().rev().fold(0, |acc, b| (acc << 8) | u64::from(*b)))
    };
    let header = (|| {
        ensure!(elf.get(..5) == Some(b"\x7fELF\x02"), "not a 64-bit ELF file");
        let phoff = usize::try_from(field(0x20, 8).context("truncated")?)?;
        let phentsize = usize::try_from(field(0x36, 2).context("truncated")?)?;
        let phnum = usize::try_from(field(0x38, 2).context("truncated")?)?;
        const PT_INTERP: u64 = 3;
        for i in 0..phnum {
            let p_type = field(phoff + i * phentsize, 4).context("truncated program header")?;
            ensure!(p_type != PT_INTERP, "dynamically linked (has PT_INTERP)");
        }
        Ok(())
    })();
    header.with_context(|| format!("{} cannot be the guest's busybox (apt-get install busybox-static)", path.display()))
}

/// The initramfs is written directly in the kernel's "newc" cpio format:
/// that fixes owners to root and adds the /dev/console node without needing
/// a staging tree, mknod or the cpio tool, and streams large test binaries.
struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    fn new(out: W) -> Self {
        CpioWriter { out, next_ino: 1, written: 0 }
    }

    fn bytes(&mut self, name: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.entry(name, mode, (0, 0), data.len() as u64, data)
    }

    fn host_file(&mut self, name: &str, host: &Path, mode: Option<u32>) -> Result<()> {
        let file = File::open(host).with_context(|| format!("opening {}", host.display()))?;
        let meta = file.metadata().with_context(|| format!("reading metadata of {}", host.display()))?;
        ensure!(meta.is_file(), "{} is not a regular file", host.display());
        let perm = mode.unwrap_or(meta.permissions().mode() & 0o7777);
        self.entry(name, 0o100000 | perm, (0, 0), meta.len(), file)
            .with_context(|| format!("copying {} into the initramfs", host.display()))
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), size: u64, data: impl Read) -> Result<()> {
        let filesize = u32::try_from(size).context("file too large for cpio (4 GiB)")?;
        let namesize = u32::try_from(name.len() + 1).context("name too long")?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        ensure!(copied == size, "{name}: expected {size} bytes, read {copied}");
        self.written += copied;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.write(&[0; 3][..4 - rem])?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), 0, io::empty())?;
        self.out.flush()?;
        Ok(())
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error only truncates the log; the markers then say so.
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
}

fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader.and_then(|r| r.join().ok()).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Unique within this host across processes and threads, for run directories
/// and the markers' nonce.
fn unique_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{}-{nanos:08x}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_versions_keep_series_apart() {
        let k61 = &guest_kernels()[0];
        let k612 = &guest_kernels()[1];
        assert_eq!(k61.image_version("linux-image-6.1.0-56-cloud-amd64"), Some(vec![6, 1, 0, 56]));
        assert_eq!(k61.image_version("linux-image-6.12.117+deb12-cloud-amd64"), None);
        assert_eq!(k612.image_version("linux-image-6.12-cloud-amd64"), None);
        assert_eq!(k612.image_version("linux-image-6.12.117+deb12-cloud-amd64-dbg"), None);
        assert!(
            k612.image_version("linux-image-6.12.117+deb12-cloud-amd64")
                > k612.image_version("linux-image-6.12.99+deb12-cloud-amd64")
        );
    }

    #[test]
    fn markers_frame_output_exactly() {
        let m = Markers::new("t");
        let serial = format!("boot noise\n{}\nline one\nno newline\n{} exit=3\nreboot: Power down\n", m.begin, m.end);
        assert_eq!(m.parse(&serial), Some(("line one\nno newline".to_owned(), 3)));
        let empty = format!("{}\n\n{} exit=0\n", m.begin, m.end);
        assert_eq!(m.parse(&empty), Some((String::new(), 0)));
        assert_eq!(m.parse(&format!("{}\npartial", m.begin)), None);
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("x", 5), "x");
    }
}
