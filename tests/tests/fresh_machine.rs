//! A new user's first commands, on a machine where setup has not run: proven
//! here without wrecking this one. In a private mount namespace (`unshare
//! -m`), a stub that exits 127 is bind-mounted over Debian's `/usr/bin/rustc`
//! and `/usr/bin/cargo`, `bpf-linker` and `cargo-fuzz` (whichever exist: on a
//! machine that never ran setup there is nothing to hide), and a copy of the
//! repository with a target directory of its own then:
//!
//! - builds xtask and prints `cargo xtask --help` (xtask must not need the
//!   eBPF toolchain: it does not depend on the agent);
//! - lists the toolchain in `cargo xtask setup --dry-run`, installing nothing;
//! - `cargo check`s the agent (the kernel programs are stubbed);
//! - fails `cargo build` at the root with the line that says to run
//!   `cargo xtask setup`, not a panic.
//!
//! Needs root (mount namespaces, bind mounts), as the rest of `cargo xtask
//! test` does. The copy and its target directory stay under
//! target/fresh-machine so later runs rebuild only what changed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::{
    ffi::OsStr,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use kscope_harness::is_root;
use kscope_tests::workspace_root;

/// What setup installs that the first commands must do without.
const HIDDEN_SYSTEM: [&str; 2] = ["/usr/bin/rustc", "/usr/bin/cargo"];
const HIDDEN_CARGO_BIN: [&str; 2] = ["bpf-linker", "cargo-fuzz"];

/// Printed by the stub, so a failure that comes from it is recognisable.
const STUB_SAYS: &str = "hidden by the fresh-machine test";

struct FreshMachine {
    repo: PathBuf,
    stub: PathBuf,
    hidden: Vec<PathBuf>,
}

impl FreshMachine {
    fn new() -> Self {
        assert!(
            is_root(),
            "the fresh-machine test needs root (unshare -m, bind mounts): run it with `cargo xtask test`"
        );
        let base = workspace_root().join("target/fresh-machine");
        let repo = base.join("repo");
        copy_repository(&workspace_root(), &repo);
        let stub = base.join("exit-127");
        fs::write(&stub, format!("#!/bin/sh\necho \"$0: {STUB_SAYS}\" >&2\nexit 127\n")).unwrap();
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).unwrap();
        let cargo_bin = home().join(".cargo/bin");
        let hidden = HIDDEN_SYSTEM
            .iter()
            .map(PathBuf::from)
            .chain(HIDDEN_CARGO_BIN.iter().map(|tool| cargo_bin.join(tool)))
            .filter(|path| path.exists())
            .collect();
        Self { repo, stub, hidden }
    }

    /// Runs `command` (a shell command line) in the copy, in a mount
    /// namespace of its own with the toolchain hidden, and a login-like
    /// environment: nothing of the outer `cargo test` leaks in.
    fn run(&self, command: &str) -> Output {
        let mut script = String::from("set -e\n");
        for path in &self.hidden {
            script.push_str(&format!("mount --bind '{}' '{}'\n", self.stub.display(), path.display()));
        }
        script.push_str("set +e\n");
        script.push_str(command);
        let output = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .current_dir(&self.repo)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home())
            .env("LANG", "C.UTF-8")
            .env("TERM", "dumb")
            .output()
            .unwrap();
        eprintln!(
            "fresh machine: `{command}`: {}\n--- stdout\n{}--- stderr\n{}",
            output.status,
            tail(&output.stdout, 40),
            tail(&output.stderr, 40)
        );
        output
    }
}

#[test]
fn first_commands_work_without_the_ebpf_toolchain() {
    let machine = FreshMachine::new();
    eprintln!("fresh machine: hiding {:?}", machine.hidden);

    // The hiding itself works, so nothing below passes by accident.
    for path in &machine.hidden {
        let out = machine.run(&format!("'{}' --version", path.display()));
        assert_eq!(out.status.code(), Some(127), "{} is not hidden", path.display());
    }

    let help = machine.run("cargo xtask --help");
    assert!(help.status.success(), "cargo xtask --help failed");
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["setup", "build", "run", "test", "bench"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(command)), "--help lacks `{command}`:\n{text}");
    }

    let plan = machine.run("cargo xtask setup --dry-run");
    assert!(plan.status.success(), "setup --dry-run failed");
    let text = String::from_utf8_lossy(&plan.stdout);
    for wanted in ["rustc-web", "cargo-web", "bpf-linker"] {
        assert!(text.contains(wanted), "setup --dry-run does not list {wanted}:\n{text}");
    }
    // Nothing was installed: the hidden tools are still the stub.
    let after = machine.run("/usr/bin/rustc --version");
    if machine.hidden.iter().any(|p| p == Path::new("/usr/bin/rustc")) {
        assert_eq!(after.status.code(), Some(127));
    }

    let check = machine.run("cargo check -p kscope");
    assert!(check.status.success(), "cargo check needs the eBPF toolchain");

    let build = machine.run("cargo build");
    assert!(!build.status.success(), "cargo build passed without the eBPF toolchain: the binary would load nothing");
    let stderr = String::from_utf8_lossy(&build.stderr);
    assert!(!stderr.contains("panicked"), "cargo build panicked:\n{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("kernel programs are not built") && l.contains("run `cargo xtask setup`")),
        "cargo build does not say to run `cargo xtask setup`:\n{stderr}"
    );
    assert!(!stderr.contains(STUB_SAYS), "cargo build ran a hidden tool instead of stubbing:\n{stderr}");
}

/// The tracked and new (not ignored) files of `from`, copied into `to` with
/// their modification times, so cargo in the copy rebuilds only what
/// changed since the last run. Everything else in `to` but its target
/// directory is removed first.
fn copy_repository(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(to).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() { fs::remove_dir_all(&path).unwrap() } else { fs::remove_file(&path).unwrap() }
    }
    let files = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(from)
        .output()
        .unwrap();
    assert!(files.status.success(), "git ls-files failed in {}", from.display());
    let files: Vec<&[u8]> = files.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()).collect();
    assert!(files.len() > 50, "only {} files to copy from {}", files.len(), from.display());
    for chunk in files.chunks(200) {
        let status = Command::new("cp")
            .args(["--preserve=mode,timestamps", "--parents", "--no-dereference"])
            .args(chunk.iter().map(|f| OsStr::from_bytes(f)))
            .arg(to)
            .current_dir(from)
            .status()
            .unwrap();
        assert!(status.success(), "copying the repository to {} failed", to.display());
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}
