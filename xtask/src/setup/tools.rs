//! The tools setup installs besides Debian packages (bpf-linker and
//! cargo-fuzz from crates.io, grpcio from PyPI), tracefs, and what setup can
//! only check (rustup's nightly, Debian's dnsmasq service). Each is probed by
//! running it: a tool counts as present only if it runs and says the pinned
//! version.

use std::{
    env,
    ffi::OsStr,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::process::{describe, exec, last_line};

/// The bpf-linker release that works with LLVM 22 and the aya versions we pin.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where Debian's `llvm-22-dev` lives; bpf-linker's build must find this LLVM,
/// not the older default one, or it fails with "unable to find library -lLLVM".
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Tests attach to tracepoints, which are only visible once tracefs is mounted here.
pub(super) const TRACEFS_DIR: &str = "/sys/kernel/tracing";

/// The grpcio the gRPC test server and client (tests/fixtures/grpc) run on,
/// installed with pip into the `python3` on PATH.
pub const GRPCIO_VERSION: &str = "1.85.1";

/// The cargo-fuzz that `cargo xtask test` runs the fuzz targets with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The rustup toolchain the fuzz targets build with (sanitizers and
/// libFuzzer's instrumentation need nightly flags). Preinstalled; rustup
/// cannot download one here, so setup only checks it.
pub const FUZZ_TOOLCHAIN: &str = "nightly";

/// Debian's own dnsmasq service (package `dnsmasq`) keeps its pid here.
const DNSMASQ_SERVICE_PID: &str = "/run/dnsmasq/dnsmasq.pid";

/// State of the bpf-linker that the kernel-side build would pick up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum LinkerState {
    /// The right version, at this path.
    Ready(PathBuf),
    /// A bpf-linker exists but is another version or does not run.
    Wrong { path: PathBuf, found: String },
    /// No bpf-linker in ~/.cargo/bin nor on PATH.
    Missing,
}

/// State of tracefs at [`TRACEFS_DIR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TracefsState {
    Mounted,
    /// The mount point exists but nothing is mounted on it.
    Empty,
    /// The kernel has no tracing support (no mount point in sysfs).
    Absent,
}

/// State of a tool installed at a pinned version (grpcio, cargo-fuzz).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ToolState {
    Ready,
    /// Present but not the pinned version, or broken: why.
    Wrong(String),
    Missing,
    /// What would install it is itself missing (e.g. no `python3`): why.
    /// Only the tests that use it cannot run.
    Unavailable(String),
}

impl ToolState {
    pub(super) fn needs_install(&self) -> bool {
        matches!(self, Self::Wrong(_) | Self::Missing)
    }
}

// ---------------------------------------------------------------- bpf-linker

/// ~/.cargo/bin (or $CARGO_HOME/bin), where `cargo install` puts bpf-linker.
fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cargo").join("bin"))
}

/// `dir` followed by `path`'s entries, as a PATH string; `dir` is not added
/// twice when it already comes first.
pub(super) fn path_with_first(dir: Option<&Path>, path: &OsStr) -> String {
    let rest: Vec<PathBuf> = env::split_paths(path).collect();
    let mut dirs = Vec::with_capacity(rest.len() + 1);
    if let Some(dir) = dir
        && rest.first().map(PathBuf::as_path) != Some(dir)
    {
        dirs.push(dir.to_path_buf());
    }
    dirs.extend(rest);
    // join_paths only fails on an entry containing ':', which the current PATH
    // cannot have had; keep it unchanged rather than fail the build.
    match env::join_paths(&dirs) {
        Ok(joined) => joined.to_string_lossy().into_owned(),
        Err(_) => path.to_string_lossy().into_owned(),
    }
}

/// The bpf-linker the kernel-side build will run: agent/build.rs puts
/// ~/.cargo/bin first on PATH, so that one wins over any other on PATH.
fn bpf_linker_path() -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    cargo_bin_dir()
        .into_iter()
        .chain(env::split_paths(&path))
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}

pub(super) fn probe_bpf_linker() -> LinkerState {
    let Some(path) = bpf_linker_path() else {
        return LinkerState::Missing;
    };
    let found = match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match parse_bpf_linker_version(&text) {
                Some(v) if v == BPF_LINKER_VERSION => return LinkerState::Ready(path),
                Some(v) => format!("version {v}"),
                None => format!("unrecognised --version output {:?}", text.trim()),
            }
        }
        // E.g. built against an LLVM that has since been removed.
        Ok(out) => match last_line(&out.stderr) {
            stderr if stderr.is_empty() => format!("`--version` failed ({})", out.status),
            stderr => format!("`--version` failed ({}): {stderr}", out.status),
        },
        Err(e) => format!("cannot run it: {e}"),
    };
    LinkerState::Wrong { path, found }
}

/// Extracts the version from `bpf-linker --version` output ("bpf-linker 0.13.0").
pub(super) fn parse_bpf_linker_version(output: &str) -> Option<&str> {
    let mut words = output.lines().next()?.split_whitespace();
    if words.next()? != "bpf-linker" {
        return None;
    }
    let version = words.next()?;
    Some(version.strip_prefix('v').unwrap_or(version))
}

/// `cargo install` of a host tool: rustup's `cargo` from PATH, not
/// Debian's, without the kernel-side build environment or flags meant for
/// the workspace that xtask may run with, and away from the workspace so
/// its .cargo/config.toml and rust-toolchain file do not apply either.
fn cargo_install() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("install");
    for var in ["RUSTC", "RUSTC_BOOTSTRAP", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    cmd.current_dir("/");
    cmd
}

/// `cargo install`s bpf-linker against LLVM 22 (replacing a wrong or
/// broken copy), then checks that it runs.
pub(super) fn install_bpf_linker() -> Result<()> {
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").is_file() {
        bail!("LLVM 22 is missing at {LLVM_PREFIX} (package llvm-22-dev); cannot build bpf-linker");
    }

    let path = env::var_os("PATH").unwrap_or_default();
    let mut cmd = cargo_install();
    cmd.args(["bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        // Replaces a wrong or broken copy that cargo would otherwise consider
        // already installed; we only get here when the current one is unusable.
        .arg("--force")
        .env("PATH", path_with_first(Some(&Path::new(LLVM_PREFIX).join("bin")), &path))
        .env("LLVM_PREFIX", LLVM_PREFIX);
    println!(
        "setup:   PATH={LLVM_PREFIX}/bin:$PATH LLVM_PREFIX={LLVM_PREFIX} cargo {}",
        cmd.get_args().map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
    );
    exec(&mut cmd)?;

    match probe_bpf_linker() {
        LinkerState::Ready(path) => {
            println!("setup:   installed bpf-linker {BPF_LINKER_VERSION} at {}", path.display());
            Ok(())
        }
        LinkerState::Wrong { path, found } => {
            bail!("after `cargo install`, {} is still not bpf-linker {BPF_LINKER_VERSION} ({found})", path.display())
        }
        LinkerState::Missing => bail!(
            "`cargo install` succeeded but bpf-linker is in neither {} nor PATH",
            cargo_bin_dir().map_or_else(|| "~/.cargo/bin".to_owned(), |d| d.display().to_string())
        ),
    }
}

// ---------------------------------------------------------------- dnsmasq

/// The tests start their own dnsmasq (package dnsmasq-base, no service). If
/// Debian's `dnsmasq` package was installed too, its service may hold port
/// 53: the tests do not need that port on the host (the glibc resolver test
/// runs in its own network namespace), but a system resolver nobody asked for
/// should not go unnoticed.
pub(super) fn check_dnsmasq_service() {
    let pid = fs::read_to_string(DNSMASQ_SERVICE_PID).ok().and_then(|p| p.trim().parse::<u32>().ok());
    match pid.filter(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        Some(pid) => eprintln!(
            "setup: warning: Debian's dnsmasq service is running (pid {pid}, package `dnsmasq`); \
             stop it with `service dnsmasq stop` and `apt-get remove dnsmasq` (the tests need only dnsmasq-base)"
        ),
        None => println!("setup: dnsmasq: binary only (dnsmasq-base), no system dnsmasq service running"),
    }
}

// ---------------------------------------------------------------- python grpcio

/// `python3` from PATH: the interpreter the gRPC fixtures run with.
pub(super) fn probe_grpcio() -> ToolState {
    let out = Command::new("python3").args(["-c", "import grpc; print(grpc.__version__)"]).output();
    match out {
        Err(e) => ToolState::Unavailable(format!("cannot run python3: {e}")),
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if version == GRPCIO_VERSION { ToolState::Ready } else { ToolState::Wrong(format!("version {version}")) }
        }
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("No module named 'grpc'") => ToolState::Missing,
        Ok(out) => ToolState::Wrong(format!("`import grpc` failed: {}", last_line(&out.stderr))),
    }
}

/// `pip install`s the pinned grpcio into `python3`, then checks it imports.
pub(super) fn install_grpcio() -> Result<()> {
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--root-user-action=ignore",
    ])
    .arg(format!("grpcio=={GRPCIO_VERSION}"));
    println!("setup:   {}", describe(&cmd));
    exec(&mut cmd)?;
    match probe_grpcio() {
        ToolState::Ready => {
            println!("setup:   installed python grpcio {GRPCIO_VERSION}");
            Ok(())
        }
        ToolState::Wrong(why) | ToolState::Unavailable(why) => {
            bail!("after pip install, python3's grpcio is still not {GRPCIO_VERSION} ({why})")
        }
        ToolState::Missing => bail!("pip install succeeded but python3 still cannot `import grpc`"),
    }
}

// ---------------------------------------------------------------- cargo-fuzz

pub(super) fn probe_cargo_fuzz() -> ToolState {
    let path = env::var_os("PATH").unwrap_or_default();
    let Some(binary) =
        cargo_bin_dir().into_iter().chain(env::split_paths(&path)).map(|d| d.join("cargo-fuzz")).find(|p| p.is_file())
    else {
        return ToolState::Missing;
    };
    // `cargo-fuzz --version` prints "cargo-fuzz 0.13.2".
    match Command::new(&binary).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match text.split_whitespace().nth(1) {
                Some(v) if v == CARGO_FUZZ_VERSION => ToolState::Ready,
                _ => ToolState::Wrong(format!("{}: {:?}", binary.display(), text.trim())),
            }
        }
        Ok(out) => ToolState::Wrong(format!("{}: `--version` failed ({})", binary.display(), out.status)),
        Err(e) => ToolState::Wrong(format!("cannot run {}: {e}", binary.display())),
    }
}

/// `cargo install`s the pinned cargo-fuzz, then checks that it runs.
pub(super) fn install_cargo_fuzz() -> Result<()> {
    let mut cmd = cargo_install();
    cmd.args(["cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked", "--force"]);
    println!("setup:   {}", describe(&cmd));
    exec(&mut cmd)?;
    match probe_cargo_fuzz() {
        ToolState::Ready => {
            println!("setup:   installed cargo-fuzz {CARGO_FUZZ_VERSION}");
            Ok(())
        }
        ToolState::Wrong(why) | ToolState::Unavailable(why) => {
            bail!("after `cargo install`, cargo-fuzz is still not {CARGO_FUZZ_VERSION} ({why})")
        }
        ToolState::Missing => bail!("`cargo install` succeeded but cargo-fuzz is in neither ~/.cargo/bin nor PATH"),
    }
}

/// Whether `rustup run nightly rustc --version` works; its version or why not.
pub(super) fn probe_nightly() -> Result<String, String> {
    match Command::new("rustup").args(["run", FUZZ_TOOLCHAIN, "rustc", "--version"]).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => Err(last_line(&out.stderr)),
        Err(e) => Err(format!("cannot run rustup: {e}")),
    }
}

// ---------------------------------------------------------------- tracefs

pub(super) fn tracefs_state(dir: &Path) -> TracefsState {
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_none() {
                TracefsState::Empty
            } else {
                TracefsState::Mounted
            }
        }
        Err(e) if e.kind() == ErrorKind::NotFound => TracefsState::Absent,
        // The bare sysfs mount point is world-readable, while a mounted
        // tracefs root is mode 0700: a non-root user being refused means it
        // is mounted.
        Err(_) => TracefsState::Mounted,
    }
}

pub(super) fn mount_tracefs() -> Result<()> {
    exec(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS_DIR]))?;
    println!("setup:   mounted tracefs at {TRACEFS_DIR}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_linker_version_parsing() {
        assert_eq!(parse_bpf_linker_version("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(parse_bpf_linker_version("bpf-linker v0.9.14"), Some("0.9.14"));
        assert_eq!(parse_bpf_linker_version("  bpf-linker   0.13.0  \nmore"), Some("0.13.0"));
        assert_eq!(parse_bpf_linker_version("something 0.13.0"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }

    #[test]
    fn path_gets_cargo_bin_first_once() {
        let bin = Path::new("/root/.cargo/bin");
        assert_eq!(path_with_first(Some(bin), OsStr::new("/usr/bin:/bin")), "/root/.cargo/bin:/usr/bin:/bin");
        assert_eq!(path_with_first(Some(bin), OsStr::new("/root/.cargo/bin:/usr/bin")), "/root/.cargo/bin:/usr/bin");
        assert_eq!(path_with_first(None, OsStr::new("/usr/bin")), "/usr/bin");
    }

    #[test]
    fn tracefs_state_of_directories() {
        let base = env::temp_dir().join(format!("kscope-setup-test-{}", std::process::id()));
        let empty = base.join("empty");
        let full = base.join("full");
        assert!(fs::create_dir_all(&empty).is_ok());
        assert!(fs::create_dir_all(full.join("events")).is_ok());
        assert_eq!(tracefs_state(&empty), TracefsState::Empty);
        assert_eq!(tracefs_state(&full), TracefsState::Mounted);
        assert_eq!(tracefs_state(&base.join("absent")), TracefsState::Absent);
        let _ = fs::remove_dir_all(&base);
    }
}
