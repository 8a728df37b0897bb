//! The Debian packages setup installs: which are missing (dpkg), which are
//! installed but whose tool does not run (reinstalled), what apt would
//! download for them, and installing them.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::process::{describe, exec, last_line};

/// dpkg's status string for a package that is fully installed.
const DPKG_INSTALLED: &str = "install ok installed";

/// How long a package's tool may take to say its version.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// One Debian package we need, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Package {
    pub(super) name: &'static str,
    /// Shown to the user so they know what an optional package is for.
    pub(super) purpose: &'static str,
    /// Required packages abort setup when apt cannot provide them; optional ones
    /// only disable the tests that use them, so we warn and go on.
    pub(super) required: bool,
    /// A command of the package's own that must run (exit 0) for the
    /// package to count as present: dpkg's word alone misses a tool that was
    /// removed, broken, or hidden (something mounted over it).
    pub(super) probe: Option<&'static [&'static str]>,
}

pub(super) const fn required(name: &'static str) -> Package {
    Package { name, purpose: "toolchain", required: true, probe: None }
}

pub(super) const fn optional(name: &'static str, purpose: &'static str) -> Package {
    Package { name, purpose, required: false, probe: None }
}

impl Package {
    /// The package counts as present only if `command` runs.
    const fn runs(self, command: &'static [&'static str]) -> Self {
        Self { probe: Some(command), ..self }
    }
}

/// Everything `setup` installs from apt, in install order. Each probe is a
/// file of that very package (`dpkg -S`), so reinstalling it is the repair.
pub(super) const PACKAGES: &[Package] = &[
    required("rustc-web").runs(&["/usr/bin/rustc", "--version"]),
    required("rust-web-src"),
    required("cargo-web").runs(&["/usr/bin/cargo", "--version"]),
    required("llvm-22-dev"),
    required("libpolly-22-dev"),
    required("clang-22").runs(&["/usr/bin/clang-22", "--version"]),
    required("zlib1g-dev"),
    required("libzstd-dev"),
    optional("qemu-system-x86", "VM tests").runs(&["/usr/bin/qemu-system-x86_64", "--version"]),
    optional("busybox-static", "VM tests").runs(&["/bin/busybox", "true"]),
    optional("cpio", "VM tests").runs(&["/bin/cpio", "--version"]),
    optional("bpftool", "leak test").runs(&["/usr/sbin/bpftool", "version"]),
    optional("nginx-light", "host integration tests"),
    optional("curl", "host integration tests").runs(&["/usr/bin/curl", "--version"]),
    // nghttp, nghttpd and h2load: an HTTP/2 (h2c) client and server.
    optional("nghttp2-client", "L7 tests (HTTP/2)").runs(&["/usr/bin/nghttp", "--version"]),
    optional("nghttp2-server", "L7 tests (HTTP/2)").runs(&["/usr/sbin/nghttpd", "--version"]),
    // The dnsmasq binary without Debian's service (package `dnsmasq`), which
    // would start a system resolver bound to port 53 on install.
    optional("dnsmasq-base", "L7 tests (DNS)").runs(&["/usr/sbin/dnsmasq", "--version"]),
    // dig (`dnsutils` is only a transitional name for it).
    optional("bind9-dnsutils", "L7 tests (DNS)").runs(&["/usr/bin/dig", "-v"]),
    // promtool, which checks the exposition text of the Prometheus exporter.
    optional("prometheus", "Prometheus exporter tests (promtool)").runs(&["/usr/bin/promtool", "--version"]),
    // The symbol-resolver tests build C, C++ and Rust programs and compare
    // answers with nm, objcopy'd debug files, addr2line and llvm-symbolizer.
    optional("gcc", "symbol-resolver tests").runs(&["/usr/bin/gcc", "--version"]),
    optional("g++", "symbol-resolver tests").runs(&["/usr/bin/g++", "--version"]),
    optional("binutils", "symbol-resolver tests").runs(&["/usr/bin/nm", "--version"]),
    optional("llvm", "symbol-resolver tests (llvm-symbolizer)").runs(&["/usr/bin/llvm-symbolizer", "--version"]),
    optional("linux-libc-dev", "symbol-resolver tests (BPF program loader)"),
    // nft: a drop rule in a test network namespace makes TCP retransmit.
    optional("nftables", "retransmit and packet drop tests").runs(&["/usr/sbin/nft", "--version"]),
    optional("linux-perf", "benchmarks"),
    optional("wrk", "benchmarks"),
];

/// What apt has to do for [`PACKAGES`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PackagePlan {
    /// Not installed according to dpkg.
    pub(super) missing: Vec<Package>,
    /// Installed according to dpkg, but its probe fails: why.
    pub(super) broken: Vec<(Package, String)>,
    /// Installed and working.
    pub(super) present: usize,
}

impl PackagePlan {
    pub(super) fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.broken.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.missing.len() + self.broken.len()
    }

    /// Every package apt is to install or reinstall, in [`PACKAGES`] order.
    pub(super) fn packages(&self) -> Vec<Package> {
        let mut all: Vec<Package> = self.missing.iter().copied().chain(self.broken.iter().map(|(p, _)| *p)).collect();
        all.sort_by_key(|p| PACKAGES.iter().position(|q| q.name == p.name));
        all
    }

    pub(super) fn names(&self) -> Vec<&'static str> {
        package_names(&self.packages())
    }

    /// Why `package` is in the plan, for the listing.
    pub(super) fn reason(&self, package: &Package) -> String {
        match self.broken.iter().find(|(p, _)| p.name == package.name) {
            Some((_, why)) => format!("reinstall: {why}"),
            None => "not installed".to_owned(),
        }
    }
}

/// Looks at the machine without changing it: dpkg's status of every
/// package, and each installed package's probe.
pub(super) fn inspect() -> Result<PackagePlan> {
    let installed = dpkg_installed(&package_names(PACKAGES))?;
    Ok(plan_packages(PACKAGES, &installed, run_probe))
}

/// The packages of `wanted` that dpkg does not list as installed (unknown
/// ones included), and those it does whose `probe` fails.
pub(super) fn plan_packages(
    wanted: &[Package],
    installed: &HashMap<String, bool>,
    probe: impl Fn(&[&str]) -> Result<(), String>,
) -> PackagePlan {
    let mut plan = PackagePlan::default();
    for package in wanted {
        if !installed.get(package.name).copied().unwrap_or(false) {
            plan.missing.push(*package);
        } else if let Some(Err(why)) = package.probe.map(&probe) {
            plan.broken.push((*package, why));
        } else {
            plan.present += 1;
        }
    }
    plan
}

/// Runs a probe command, its output discarded; why it failed, if it did.
fn run_probe(command: &[&str]) -> Result<(), String> {
    let shown = command.join(" ");
    let Some((program, args)) = command.split_first() else { return Ok(()) };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    match kscope_harness::wait_timeout(&mut child, PROBE_TIMEOUT) {
        Ok(Some(status)) if status.success() => Ok(()),
        Ok(Some(status)) => Err(format!("`{shown}` failed ({status})")),
        Ok(None) => Err(format!("`{shown}` did not finish within {PROBE_TIMEOUT:?}")),
        Err(e) => Err(format!("`{shown}`: {e:#}")),
    }
}

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

pub(super) fn package_names(packages: &[Package]) -> Vec<&'static str> {
    packages.iter().map(|p| p.name).collect()
}

/// `apt-get` with no prompts, and waiting for another apt run (other
/// engineers share the machine) instead of failing on the dpkg lock.
fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive").args(["-o", "DPkg::Lock::Timeout=600"]);
    cmd
}

pub(super) fn apt_update() -> Result<()> {
    exec(apt_get().arg("update"))
}

/// What apt says installing some packages takes, dependencies included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct AptEstimate {
    /// Packages apt would install, reinstall or upgrade.
    pub(super) packages: u64,
    /// Bytes of .deb files not already in apt's cache.
    pub(super) download_bytes: u64,
}

impl std::fmt::Display for AptEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} packages with dependencies, {} to download", self.packages, human_bytes(self.download_bytes))
    }
}

/// `apt-get install --print-uris`: a dry run that needs neither root nor the
/// dpkg lock, from the package lists already on the machine. Fails (with
/// apt's reason) when they do not know a package, e.g. before the first
/// `apt-get update`.
pub(super) fn apt_estimate(plan: &PackagePlan) -> Result<AptEstimate, String> {
    let mut cmd = Command::new("apt-get");
    // The summary line is translated in other locales.
    cmd.env("LC_ALL", "C").args(["install", "--print-uris", "--reinstall"]).args(plan.names());
    let out = cmd.output().map_err(|e| format!("cannot run `{}`: {e}", describe(&cmd)))?;
    if !out.status.success() {
        return Err(format!("apt-get: {}", last_line(&out.stderr)));
    }
    parse_print_uris(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| format!("unexpected `{}` output: {}", describe(&cmd), last_line(&out.stdout)))
}

/// Reads `apt-get install --print-uris`: one `'URI' FILE SIZE HASH` line per
/// download and the `N upgraded, N newly installed, N reinstalled, ...` line.
fn parse_print_uris(text: &str) -> Option<AptEstimate> {
    let mut estimate = AptEstimate::default();
    let mut summary = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('\'') {
            estimate.download_bytes += line.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        } else if line.contains(" newly installed") {
            summary = true;
            // "0 upgraded, 2 newly installed, 1 reinstalled, 0 to remove and 128 not upgraded."
            for part in line.trim_end_matches('.').split(',').flat_map(|p| p.split(" and ")) {
                let (count, what) = part.trim().split_once(' ')?;
                if matches!(what, "upgraded" | "newly installed" | "reinstalled") {
                    estimate.packages += count.parse::<u64>().ok()?;
                }
            }
        }
    }
    summary.then_some(estimate)
}

/// Bytes as apt shows them (decimal units).
pub(super) fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// Installs the missing packages and reinstalls the broken ones (run after
/// `apt-get update`), then checks dpkg and the probes again.
pub(super) fn install(plan: &PackagePlan) -> Result<()> {
    let mut available = Vec::new();
    for package in plan.packages() {
        if apt_has_candidate(package.name)? {
            available.push(package);
        } else if package.required {
            bail!(
                "required package {} is not available from apt (see `apt-cache policy {}`)",
                package.name,
                package.name
            );
        } else {
            eprintln!(
                "setup: warning: {} is not available from apt; skipping it ({} will not run)",
                package.name, package.purpose
            );
        }
    }
    if available.is_empty() {
        return Ok(());
    }
    let wanted = PackagePlan {
        missing: plan.missing.iter().filter(|p| available.contains(p)).copied().collect(),
        broken: plan.broken.iter().filter(|(p, _)| available.contains(p)).cloned().collect(),
        present: 0,
    };
    match apt_estimate(&wanted) {
        Ok(estimate) => println!("setup:   apt: {estimate}"),
        Err(why) => println!("setup:   apt: download size unknown ({why})"),
    }
    let mut cmd = apt_get();
    cmd.args(["install", "-y"]);
    // Only the named packages are reinstalled; on a package that is not
    // installed the flag does nothing.
    if !wanted.broken.is_empty() {
        cmd.arg("--reinstall");
    }
    cmd.args(wanted.names());
    println!("setup:   {}", describe(&cmd));
    exec(&mut cmd)?;

    // apt-get can succeed without installing a package (e.g. held packages),
    // and a reinstalled tool can still fail (e.g. something mounted over it):
    // catch both here rather than as a confusing build error later.
    let after = plan_packages(&wanted.packages(), &dpkg_installed(&wanted.names())?, run_probe);
    if !after.missing.is_empty() {
        bail!(
            "apt-get reported success but these packages are still not installed: {}",
            package_names(&after.missing).join(" ")
        );
    }
    for (package, why) in &after.broken {
        let hint =
            package.probe.map_or_else(String::new, |p| format!(" (is something mounted over it? `findmnt {}`)", p[0]));
        if package.required {
            bail!("apt-get (re)installed {} but its tool still does not run: {why}{hint}", package.name);
        }
        eprintln!(
            "setup: warning: apt-get (re)installed {} but its tool still does not run: {why}{hint}; {} will not run",
            package.name, package.purpose
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
                    clang-22\tinstall ok unpacked\n\
                    zlib1g-dev\tinstall ok installed\n\
                    zlib1g-dev\tunknown ok not-installed\n\
                    garbage line without tab\n";
        let parsed = parse_dpkg_status(text);
        assert_eq!(parsed.get("curl"), Some(&true));
        assert_eq!(parsed.get("bpftool"), Some(&false));
        assert_eq!(parsed.get("cpio"), Some(&false));
        // Unpacked but not configured is not installed.
        assert_eq!(parsed.get("clang-22"), Some(&false));
        // Installed for one architecture is enough.
        assert_eq!(parsed.get("zlib1g-dev"), Some(&true));
        assert_eq!(parsed.len(), 5);
    }

    #[test]
    fn plan_keeps_order_and_treats_unknown_as_missing() {
        let wanted = [required("a"), optional("b", "tests"), required("c"), optional("d", "tests")];
        let installed = status_map(&[("a", true), ("b", false), ("d", true)]);
        let plan = plan_packages(&wanted, &installed, |_| Ok(()));
        assert_eq!(package_names(&plan.missing), ["b", "c"]);
        assert_eq!((plan.broken.len(), plan.present), (0, 2));
        let all = status_map(&[("a", true), ("b", true), ("c", true), ("d", true)]);
        assert!(plan_packages(&wanted, &all, |_| Ok(())).is_empty());
    }

    /// dpkg says rustc-web is installed, but /usr/bin/rustc is a stub that
    /// exits 127 (or gone): it is to be reinstalled, and listed as such.
    #[test]
    fn installed_package_whose_tool_does_not_run_is_reinstalled() {
        let rustc = required("rustc-web").runs(&["/usr/bin/rustc", "--version"]);
        let cargo = required("cargo-web").runs(&["/usr/bin/cargo", "--version"]);
        let src = required("rust-web-src");
        let wanted = [rustc, src, cargo, optional("wrk", "benchmarks")];
        let installed = status_map(&[("rustc-web", true), ("rust-web-src", true), ("cargo-web", true)]);
        let plan = plan_packages(&wanted, &installed, |cmd| match cmd[0] {
            "/usr/bin/rustc" => Err("`/usr/bin/rustc --version` failed (exit status: 127)".to_owned()),
            _ => Ok(()),
        });
        assert_eq!(package_names(&plan.missing), ["wrk"]);
        assert_eq!(plan.broken, [(rustc, "`/usr/bin/rustc --version` failed (exit status: 127)".to_owned())]);
        assert_eq!(plan.present, 2);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan.reason(&rustc), "reinstall: `/usr/bin/rustc --version` failed (exit status: 127)");
        assert_eq!(plan.reason(&wanted[3]), "not installed");
        // A package dpkg does not have is not probed: it is missing anyway.
        let none = plan_packages(&wanted, &HashMap::new(), |cmd| panic!("probed {cmd:?}"));
        assert_eq!(none.missing.len(), 4);
    }

    #[test]
    fn package_list_marks_toolchain_required_and_probes_its_tools() {
        for name in ["rustc-web", "rust-web-src", "cargo-web", "llvm-22-dev", "clang-22"] {
            assert!(PACKAGES.iter().any(|p| p.name == name && p.required), "{name}");
        }
        for name in ["qemu-system-x86", "bpftool", "nginx-light", "linux-perf", "nghttp2-client", "dnsmasq-base"] {
            assert!(PACKAGES.iter().any(|p| p.name == name && !p.required), "{name}");
        }
        let probe = |name: &str| PACKAGES.iter().find(|p| p.name == name).and_then(|p| p.probe);
        assert_eq!(probe("rustc-web"), Some(&["/usr/bin/rustc", "--version"][..]));
        assert_eq!(probe("cargo-web"), Some(&["/usr/bin/cargo", "--version"][..]));
        for p in PACKAGES.iter().filter_map(|p| p.probe) {
            assert!(p[0].starts_with('/'), "{p:?}: probes name the package's own file");
        }
    }

    #[test]
    fn probes_report_why_a_tool_does_not_run() {
        assert_eq!(run_probe(&["/bin/sh", "-c", "exit 0"]), Ok(()));
        let failed = run_probe(&["/bin/sh", "-c", "exit 127"]).expect_err("exits 127");
        assert!(failed.contains("`/bin/sh -c exit 127` failed") && failed.contains("127"), "{failed}");
        let absent = run_probe(&["/nonexistent/rustc", "--version"]).expect_err("absent");
        assert!(absent.starts_with("cannot run `/nonexistent/rustc --version`"), "{absent}");
    }

    #[test]
    fn apt_print_uris_parsing() {
        let text = "Reading package lists...\n\
            The following NEW packages will be installed:\n  cowsay libtext-charwidth-perl\n\
            0 upgraded, 2 newly installed, 1 reinstalled, 0 to remove and 128 not upgraded.\n\
            36 not fully installed or removed.\n\
            Need to get 30.9 kB of archives.\n\
            'http://deb.debian.org/debian/pool/main/libt/libtext-charwidth-perl/libtext-charwidth-perl_0.04-11_amd64.deb' libtext-charwidth-perl_0.04-11_amd64.deb 9496 MD5Sum:c73f\n\
            'http://deb.debian.org/debian/pool/main/c/cowsay/cowsay_3.03%2bdfsg2-8_all.deb' cowsay_3.03+dfsg2-8_all.deb 21372 MD5Sum:331c\n";
        let estimate = parse_print_uris(text).expect("parses");
        assert_eq!(estimate, AptEstimate { packages: 3, download_bytes: 30_868 });
        assert_eq!(estimate.to_string(), "3 packages with dependencies, 30.9 kB to download");
        // Everything already installed and cached.
        let none = "0 upgraded, 0 newly installed, 0 to remove and 128 not upgraded.\n";
        assert_eq!(parse_print_uris(none), Some(AptEstimate::default()));
        assert_eq!(parse_print_uris("E: Unable to locate package rustc-web"), None);
        assert_eq!(human_bytes(312_400_000), "312.4 MB");
        assert_eq!(human_bytes(999), "999 B");
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
}
