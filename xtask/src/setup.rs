//! `cargo xtask setup`: installs what building and testing kscope needs on a
//! Debian 12 machine, following the verified recipes in `TOOLCHAIN.md` and
//! `KERNELS.md`.
//!
//! Every step first inspects the machine and only acts on what is missing, so
//! `test` and `run` can call [`setup`] each time at the cost of a few
//! `dpkg-query`/`--version` invocations.

use std::collections::HashMap;
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::{describe, exec, is_root, last_line};

/// The bpf-linker release that works with LLVM 22 and the aya versions we pin.
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where Debian's `llvm-22-dev` lives; bpf-linker's build must find this LLVM,
/// not the older default one, or it fails with "unable to find library -lLLVM".
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Tests attach to tracepoints, which are only visible once tracefs is mounted here.
const TRACEFS_DIR: &str = "/sys/kernel/tracing";

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

/// dpkg's status string for a package that is fully installed.
const DPKG_INSTALLED: &str = "install ok installed";

/// Options of `cargo xtask setup`.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {}

/// `cargo xtask setup`.
pub fn command(_args: &SetupArgs) -> Result<()> {
    setup(&SetupOptions::default())
}

/// Options for [`setup`].
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Print nothing when the machine is already fully set up (used by `test`
    /// and `run`, which call [`setup`] every time).
    pub quiet_if_ready: bool,
}

impl SetupOptions {
    /// For `build`, `run`, `test` and `fuzz`: silent when nothing is missing.
    pub fn when_needed() -> Self {
        Self { quiet_if_ready: true }
    }
}

/// One Debian package we need, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Package {
    name: &'static str,
    /// Shown to the user so they know what an optional package is for.
    purpose: &'static str,
    /// Required packages abort setup when apt cannot provide them; optional ones
    /// only disable the tests that use them, so we warn and go on.
    required: bool,
}

const fn required(name: &'static str) -> Package {
    Package { name, purpose: "toolchain", required: true }
}

const fn optional(name: &'static str, purpose: &'static str) -> Package {
    Package { name, purpose, required: false }
}

/// Everything `setup` installs from apt, in install order.
const PACKAGES: &[Package] = &[
    required("rustc-web"),
    required("rust-web-src"),
    required("cargo-web"),
    required("llvm-22-dev"),
    required("libpolly-22-dev"),
    required("clang-22"),
    required("zlib1g-dev"),
    required("libzstd-dev"),
    optional("qemu-system-x86", "VM tests"),
    optional("busybox-static", "VM tests"),
    optional("cpio", "VM tests"),
    optional("bpftool", "leak test"),
    optional("nginx-light", "host integration tests"),
    optional("curl", "host integration tests"),
    // nghttp, nghttpd and h2load: an HTTP/2 (h2c) client and server.
    optional("nghttp2-client", "L7 tests (HTTP/2)"),
    optional("nghttp2-server", "L7 tests (HTTP/2)"),
    // The dnsmasq binary without Debian's service (package `dnsmasq`), which
    // would start a system resolver bound to port 53 on install.
    optional("dnsmasq-base", "L7 tests (DNS)"),
    // dig (`dnsutils` is only a transitional name for it).
    optional("bind9-dnsutils", "L7 tests (DNS)"),
    // promtool, which checks the exposition text of the Prometheus exporter.
    optional("prometheus", "Prometheus exporter tests (promtool)"),
    // The symbol-resolver tests build C, C++ and Rust programs and compare
    // answers with nm, objcopy'd debug files, addr2line and llvm-symbolizer.
    optional("gcc", "symbol-resolver tests"),
    optional("g++", "symbol-resolver tests"),
    optional("binutils", "symbol-resolver tests"),
    optional("llvm", "symbol-resolver tests (llvm-symbolizer)"),
    optional("linux-libc-dev", "symbol-resolver tests (BPF program loader)"),
    // nft: a drop rule in a test network namespace makes TCP retransmit.
    optional("nftables", "retransmit and packet drop tests"),
    optional("linux-perf", "benchmarks"),
    optional("wrk", "benchmarks"),
];

/// State of the bpf-linker that the kernel-side build would pick up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LinkerState {
    /// The right version, at this path.
    Ready(PathBuf),
    /// A bpf-linker exists but is another version or does not run.
    Wrong { path: PathBuf, found: String },
    /// No bpf-linker in ~/.cargo/bin nor on PATH.
    Missing,
}

/// State of tracefs at [`TRACEFS_DIR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TracefsState {
    Mounted,
    /// The mount point exists but nothing is mounted on it.
    Empty,
    /// The kernel has no tracing support (no mount point in sysfs).
    Absent,
}

/// State of a tool installed at a pinned version (grpcio, cargo-fuzz).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ToolState {
    Ready,
    /// Present but not the pinned version, or broken: why.
    Wrong(String),
    Missing,
    /// What would install it is itself missing (e.g. no `python3`): why.
    /// Only the tests that use it cannot run.
    Unavailable(String),
}

impl ToolState {
    fn needs_install(&self) -> bool {
        matches!(self, Self::Wrong(_) | Self::Missing)
    }
}

/// What the machine lacks, found by inspection only (no root needed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    missing_packages: Vec<Package>,
    linker: LinkerState,
    tracefs: TracefsState,
    grpcio: ToolState,
    cargo_fuzz: ToolState,
    /// rustup's nightly toolchain, which only a person can provide.
    nightly: Result<String, String>,
}

impl Plan {
    fn is_ready(&self) -> bool {
        self.missing_packages.is_empty()
            && matches!(self.linker, LinkerState::Ready(_))
            && self.tracefs != TracefsState::Empty
            && !self.grpcio.needs_install()
            && !self.cargo_fuzz.needs_install()
    }

    /// Why root is needed, if it is: installing packages and mounting need it;
    /// `cargo install` writes to the user's own ~/.cargo and does not.
    fn root_reason(&self) -> Option<String> {
        let mut reasons = Vec::new();
        if !self.missing_packages.is_empty() {
            reasons.push(format!("install Debian packages ({})", package_names(&self.missing_packages).join(" ")));
        }
        if self.tracefs == TracefsState::Empty {
            reasons.push(format!("mount tracefs at {TRACEFS_DIR}"));
        }
        if reasons.is_empty() { None } else { Some(reasons.join(" and ")) }
    }
}

/// What `cargo xtask setup` installs; `test` and `run` call it first.
pub fn setup(opts: &SetupOptions) -> Result<()> {
    let plan = inspect()?;
    if plan.is_ready() && opts.quiet_if_ready {
        return Ok(());
    }

    // Fail before doing anything, so a non-root run does not stop half-way.
    if let Some(reason) = plan.root_reason()
        && !is_root()?
    {
        bail!("setup needs root to {reason}: run it as root (e.g. `sudo cargo xtask setup`)");
    }

    // Packages come first: the bpf-linker build needs LLVM 22 from them.
    if plan.missing_packages.is_empty() {
        println!("setup: all {} Debian packages already installed", PACKAGES.len());
    } else {
        install_packages(&plan.missing_packages)?;
    }

    match &plan.linker {
        LinkerState::Ready(path) => {
            println!("setup: bpf-linker {BPF_LINKER_VERSION} already installed ({})", path.display())
        }
        other => install_bpf_linker(other)?,
    }

    check_dnsmasq_service();

    match &plan.grpcio {
        ToolState::Ready => println!("setup: python grpcio {GRPCIO_VERSION} already installed"),
        ToolState::Unavailable(why) => {
            eprintln!("setup: warning: cannot install grpcio ({why}); the gRPC tests cannot run")
        }
        other => install_grpcio(other)?,
    }

    match &plan.cargo_fuzz {
        ToolState::Ready => println!("setup: cargo-fuzz {CARGO_FUZZ_VERSION} already installed"),
        other => install_cargo_fuzz(other)?,
    }

    match &plan.nightly {
        Ok(version) => println!("setup: rustup toolchain {FUZZ_TOOLCHAIN} present ({version})"),
        // rustup cannot download toolchains on these machines: say so, and
        // let the fuzz layer fail with the same words if it runs.
        Err(why) => eprintln!(
            "setup: warning: rustup toolchain {FUZZ_TOOLCHAIN} unusable ({why}); the fuzz targets cannot run \
             (`rustup toolchain install {FUZZ_TOOLCHAIN}` where rustup can download)"
        ),
    }

    match plan.tracefs {
        TracefsState::Mounted => println!("setup: tracefs already mounted at {TRACEFS_DIR}"),
        TracefsState::Empty => mount_tracefs()?,
        // Nothing to mount on; the tests that need tracepoints will say so.
        TracefsState::Absent => eprintln!(
            "setup: warning: {TRACEFS_DIR} does not exist (kernel without tracing?); \
             tracepoint tests cannot run"
        ),
    }

    println!("setup: ready");
    Ok(())
}

/// Looks at the machine without changing it.
fn inspect() -> Result<Plan> {
    let names: Vec<&str> = PACKAGES.iter().map(|p| p.name).collect();
    let installed = dpkg_installed(&names)?;
    Ok(Plan {
        missing_packages: missing_packages(PACKAGES, &installed),
        linker: probe_bpf_linker(),
        tracefs: tracefs_state(Path::new(TRACEFS_DIR)),
        grpcio: probe_grpcio(),
        cargo_fuzz: probe_cargo_fuzz(),
        nightly: probe_nightly(),
    })
}

// ---------------------------------------------------------------- packages

/// Asks dpkg, in one call, which of `names` are installed.
fn dpkg_installed(names: &[&str]) -> Result<HashMap<String, bool>> {
    let mut cmd = Command::new("dpkg-query");
    cmd.arg("-W").arg("--showformat=${Package}\t${Status}\n").args(names);
    let out =
        cmd.output().with_context(|| format!("could not run `{}` (setup supports Debian only)", describe(&cmd)))?;
    // Exit status 1 only means dpkg has never heard of some names (it says so
    // on stderr); those are simply not installed.
    if !matches!(out.status.code(), Some(0 | 1)) {
        bail!("`{}` failed ({}): {}", describe(&cmd), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(parse_dpkg_status(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `${Package}\t${Status}` lines into name -> installed. A name can
/// appear once per architecture; it counts as installed if any of them is.
fn parse_dpkg_status(text: &str) -> HashMap<String, bool> {
    let mut installed: HashMap<String, bool> = HashMap::new();
    for (name, status) in text.lines().filter_map(|l| l.split_once('\t')) {
        *installed.entry(name.trim().to_owned()).or_default() |= status.trim() == DPKG_INSTALLED;
    }
    installed
}

/// The packages of `wanted` not installed according to `installed`, in order.
fn missing_packages(wanted: &[Package], installed: &HashMap<String, bool>) -> Vec<Package> {
    wanted.iter().filter(|p| !installed.get(p.name).copied().unwrap_or(false)).copied().collect()
}

fn package_names(packages: &[Package]) -> Vec<&'static str> {
    packages.iter().map(|p| p.name).collect()
}

/// `apt-get` with no prompts, and waiting for another apt run (other
/// engineers share the machine) instead of failing on the dpkg lock.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(["-o", "DPkg::Lock::Timeout=600"]);
    cmd
}

fn install_packages(missing: &[Package]) -> Result<()> {
    println!("setup: missing Debian packages: {}", package_names(missing).join(" "));
    println!("setup: updating apt package lists");
    exec(apt_get().arg("update"))?;

    let mut available = Vec::new();
    for pkg in missing {
        if apt_has_candidate(pkg.name)? {
            available.push(*pkg);
        } else if pkg.required {
            bail!("required package {} is not available from apt (see `apt-cache policy {}`)", pkg.name, pkg.name);
        } else {
            eprintln!(
                "setup: warning: {} is not available from apt; skipping it ({} will not run)",
                pkg.name, pkg.purpose
            );
        }
    }
    if available.is_empty() {
        return Ok(());
    }

    let names = package_names(&available);
    println!("setup: installing Debian packages: {}", names.join(" "));
    exec(apt_get().args(["install", "-y"]).args(&names))?;

    // apt-get can succeed without installing a package (e.g. held packages);
    // catch it here rather than as a confusing build error later.
    let installed = dpkg_installed(&names)?;
    let still_missing = missing_packages(&available, &installed);
    if !still_missing.is_empty() {
        bail!(
            "apt-get reported success but these packages are still not installed: {}",
            package_names(&still_missing).join(" ")
        );
    }
    Ok(())
}

fn apt_has_candidate(name: &str) -> Result<bool> {
    let mut cmd = Command::new("apt-cache");
    // The "Candidate:" label is translated in other locales.
    cmd.env("LC_ALL", "C").args(["policy", name]);
    let out = cmd.output().with_context(|| format!("could not run `{}`", describe(&cmd)))?;
    if !out.status.success() {
        bail!("`{}` failed ({})", describe(&cmd), out.status);
    }
    Ok(has_install_candidate(&String::from_utf8_lossy(&out.stdout)))
}

/// Whether `apt-cache policy` output offers a version to install. An unknown
/// package prints nothing; a known one without a source says "(none)".
fn has_install_candidate(policy: &str) -> bool {
    policy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .any(|v| !v.is_empty() && v != "(none)")
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
fn path_with_first(dir: Option<&Path>, path: &OsStr) -> String {
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

fn probe_bpf_linker() -> LinkerState {
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
        Ok(out) => format!("`--version` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("cannot run it: {e}"),
    };
    LinkerState::Wrong { path, found }
}

/// Extracts the version from `bpf-linker --version` output ("bpf-linker 0.13.0").
fn parse_bpf_linker_version(output: &str) -> Option<&str> {
    let mut words = output.lines().next()?.split_whitespace();
    if words.next()? != "bpf-linker" {
        return None;
    }
    let version = words.next()?;
    Some(version.strip_prefix('v').unwrap_or(version))
}

fn install_bpf_linker(state: &LinkerState) -> Result<()> {
    match state {
        LinkerState::Wrong { path, found } => {
            println!("setup: {} is not bpf-linker {BPF_LINKER_VERSION} ({found}); reinstalling", path.display())
        }
        _ => println!("setup: bpf-linker not found"),
    }
    if !Path::new(LLVM_PREFIX).join("bin/llvm-config").is_file() {
        bail!("LLVM 22 is missing at {LLVM_PREFIX} (package llvm-22-dev); cannot build bpf-linker");
    }

    let path = env::var_os("PATH").unwrap_or_default();
    // rustup's `cargo` from PATH, not Debian's: bpf-linker is an ordinary host tool.
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        // Replaces a wrong or broken copy that cargo would otherwise consider
        // already installed; we only get here when the current one is unusable.
        .arg("--force")
        .env("PATH", path_with_first(Some(&Path::new(LLVM_PREFIX).join("bin")), &path))
        .env("LLVM_PREFIX", LLVM_PREFIX)
        // xtask may run with the kernel-side build environment or flags meant
        // for the workspace; none of them apply to a host tool.
        .env_remove("RUSTC")
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        // Away from the workspace, so its .cargo/config.toml and
        // rust-toolchain file do not apply either.
        .current_dir("/");
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (a few minutes): \
         PATH={LLVM_PREFIX}/bin:$PATH LLVM_PREFIX={LLVM_PREFIX} cargo {}",
        cmd.get_args().map(OsStr::to_string_lossy).collect::<Vec<_>>().join(" ")
    );
    exec(&mut cmd)?;

    match probe_bpf_linker() {
        LinkerState::Ready(path) => {
            println!("setup: installed bpf-linker {BPF_LINKER_VERSION} at {}", path.display());
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
fn check_dnsmasq_service() {
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
fn probe_grpcio() -> ToolState {
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

fn install_grpcio(state: &ToolState) -> Result<()> {
    match state {
        ToolState::Wrong(why) => println!("setup: python grpcio is not {GRPCIO_VERSION} ({why}); reinstalling"),
        _ => println!("setup: python grpcio not found"),
    }
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
    println!("setup: installing grpcio: {}", describe(&cmd));
    exec(&mut cmd)?;
    match probe_grpcio() {
        ToolState::Ready => {
            println!("setup: installed python grpcio {GRPCIO_VERSION}");
            Ok(())
        }
        ToolState::Wrong(why) | ToolState::Unavailable(why) => {
            bail!("after pip install, python3's grpcio is still not {GRPCIO_VERSION} ({why})")
        }
        ToolState::Missing => bail!("pip install succeeded but python3 still cannot `import grpc`"),
    }
}

// ---------------------------------------------------------------- cargo-fuzz

fn probe_cargo_fuzz() -> ToolState {
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
        Ok(out) => ToolState::Wrong(format!("{} --version failed ({})", binary.display(), out.status)),
        Err(e) => ToolState::Wrong(format!("cannot run {}: {e}", binary.display())),
    }
}

fn install_cargo_fuzz(state: &ToolState) -> Result<()> {
    match state {
        ToolState::Wrong(why) => println!("setup: cargo-fuzz is not {CARGO_FUZZ_VERSION} ({why}); reinstalling"),
        _ => println!("setup: cargo-fuzz not found"),
    }
    let mut cmd = Command::new("cargo");
    cmd.args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION, "--locked", "--force"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .current_dir("/");
    println!("setup: building cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two): {}", describe(&cmd));
    exec(&mut cmd)?;
    match probe_cargo_fuzz() {
        ToolState::Ready => {
            println!("setup: installed cargo-fuzz {CARGO_FUZZ_VERSION}");
            Ok(())
        }
        ToolState::Wrong(why) | ToolState::Unavailable(why) => {
            bail!("after `cargo install`, cargo-fuzz is still not {CARGO_FUZZ_VERSION} ({why})")
        }
        ToolState::Missing => bail!("`cargo install` succeeded but cargo-fuzz is in neither ~/.cargo/bin nor PATH"),
    }
}

/// Whether `rustup run nightly rustc --version` works; its version or why not.
fn probe_nightly() -> Result<String, String> {
    match Command::new("rustup").args(["run", FUZZ_TOOLCHAIN, "rustc", "--version"]).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => Err(last_line(&out.stderr)),
        Err(e) => Err(format!("cannot run rustup: {e}")),
    }
}

// ---------------------------------------------------------------- tracefs

fn tracefs_state(dir: &Path) -> TracefsState {
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

fn mount_tracefs() -> Result<()> {
    exec(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS_DIR]))?;
    println!("setup: mounted tracefs at {TRACEFS_DIR}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_map(pairs: &[(&str, bool)]) -> HashMap<String, bool> {
        pairs.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect()
    }

    #[test]
    fn dpkg_status_parsing() {
        let text = "curl\tinstall ok installed\n\
                    bpftool\tdeinstall ok config-files\n\
                    cpio\tunknown ok not-installed\n\
                    zlib1g-dev\tinstall ok installed\n\
                    zlib1g-dev\tunknown ok not-installed\n\
                    garbage line without tab\n";
        let parsed = parse_dpkg_status(text);
        assert_eq!(parsed.get("curl"), Some(&true));
        assert_eq!(parsed.get("bpftool"), Some(&false));
        assert_eq!(parsed.get("cpio"), Some(&false));
        // Installed for one architecture is enough.
        assert_eq!(parsed.get("zlib1g-dev"), Some(&true));
        assert_eq!(parsed.len(), 4);
    }

    #[test]
    fn missing_packages_keeps_order_and_treats_unknown_as_missing() {
        let wanted = [required("a"), optional("b", "tests"), required("c"), optional("d", "tests")];
        let installed = status_map(&[("a", true), ("b", false), ("d", true)]);
        let names = package_names(&missing_packages(&wanted, &installed));
        assert_eq!(names, ["b", "c"]);
        let all = status_map(&[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert!(missing_packages(&wanted, &all).is_empty());
    }

    #[test]
    fn package_list_marks_toolchain_required() {
        for name in ["rustc-web", "rust-web-src", "cargo-web", "llvm-22-dev", "clang-22"] {
            assert!(PACKAGES.iter().any(|p| p.name == name && p.required), "{name}");
        }
        for name in ["qemu-system-x86", "bpftool", "nginx-light", "linux-perf", "nghttp2-client", "dnsmasq-base"] {
            assert!(PACKAGES.iter().any(|p| p.name == name && !p.required), "{name}");
        }
    }

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
    fn apt_candidate_parsing() {
        let available = "curl:\n  Installed: (none)\n  Candidate: 7.88.1-10+deb12u15\n  Version table:\n";
        let no_source = "linux-perf:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n";
        assert!(has_install_candidate(available));
        assert!(!has_install_candidate(no_source));
        // apt-cache prints nothing for a name it does not know.
        assert!(!has_install_candidate(""));
    }

    #[test]
    fn path_gets_cargo_bin_first_once() {
        let bin = Path::new("/root/.cargo/bin");
        assert_eq!(path_with_first(Some(bin), OsStr::new("/usr/bin:/bin")), "/root/.cargo/bin:/usr/bin:/bin");
        assert_eq!(path_with_first(Some(bin), OsStr::new("/root/.cargo/bin:/usr/bin")), "/root/.cargo/bin:/usr/bin");
        assert_eq!(path_with_first(None, OsStr::new("/usr/bin")), "/usr/bin");
    }

    #[test]
    fn plan_readiness_and_root_reason() {
        let ready = Plan {
            missing_packages: Vec::new(),
            linker: LinkerState::Ready(PathBuf::from("/root/.cargo/bin/bpf-linker")),
            tracefs: TracefsState::Mounted,
            grpcio: ToolState::Ready,
            cargo_fuzz: ToolState::Ready,
            nightly: Ok("rustc 1.97.0-nightly".to_owned()),
        };
        assert!(ready.is_ready());
        assert_eq!(ready.root_reason(), None);

        // A missing bpf-linker needs work, but not root.
        let linker_only = Plan { linker: LinkerState::Missing, ..ready.clone() };
        assert!(!linker_only.is_ready());
        assert_eq!(linker_only.root_reason(), None);

        // Nothing can be mounted without a mount point: not an action item.
        let no_tracing = Plan { tracefs: TracefsState::Absent, ..ready.clone() };
        assert!(no_tracing.is_ready());

        // pip and cargo install need work, not root; what setup cannot
        // provide (no python3, no nightly) is only warned about.
        let tools = Plan { grpcio: ToolState::Missing, cargo_fuzz: ToolState::Wrong("0.12.0".into()), ..ready.clone() };
        assert!(!tools.is_ready());
        assert_eq!(tools.root_reason(), None);
        let unfixable = Plan {
            grpcio: ToolState::Unavailable("no python3".into()),
            nightly: Err("toolchain 'nightly' is not installed".into()),
            ..ready.clone()
        };
        assert!(unfixable.is_ready());

        let needs_root = Plan {
            missing_packages: vec![required("clang-22"), optional("curl", "tests")],
            tracefs: TracefsState::Empty,
            ..ready
        };
        assert!(!needs_root.is_ready());
        assert_eq!(
            needs_root.root_reason().as_deref(),
            Some("install Debian packages (clang-22 curl) and mount tracefs at /sys/kernel/tracing")
        );
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
