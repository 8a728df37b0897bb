//! Builds the kernel programs (ebpf-probes/programs) so the `kscope` binary
//! can embed its eBPF object and run alone on another host.
//!
//! The kernel side needs Debian's rustc 1.96, `-Z build-std=core` and
//! bpf-linker (see ../shared/TOOLCHAIN.md); `cargo xtask setup` installs
//! them. Where they are missing (a fresh machine, an editor's `cargo
//! check`), the object is stubbed, as aya's integration tests do: checking,
//! clippy and every library's tests build, and only linking the `kscope`
//! binary fails, with one line saying to run `cargo xtask setup`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir.parent().expect("agent/ sits in the workspace");
    let probes = workspace.join("ebpf-probes/programs");
    let common = workspace.join("ebpf-probes/common");
    for path in [probes.join("src"), probes.join("Cargo.toml"), common.join("src"), common.join("Cargo.toml")] {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=KSCOPE_PROBES_OBJECT");
    println!("cargo:rustc-check-cfg=cfg(kscope_probes_stub)");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let object = out_dir.join("kscope-probes.o");
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = PathBuf::from(&home).join(".cargo/bin");
    if let Some(prebuilt) = env::var_os("KSCOPE_PROBES_OBJECT") {
        copy(Path::new(&prebuilt), &object);
    } else {
        // Installing the toolchain must bring the real build back: cargo
        // reruns this script when these appear (a path that does not exist
        // counts as changed on every build, which is cheap while stubbed).
        for tool in [Path::new(DEBIAN_RUSTC), Path::new(DEBIAN_CARGO), &cargo_bin.join("bpf-linker")] {
            println!("cargo:rerun-if-changed={}", tool.display());
        }
        match missing_toolchain(&cargo_bin) {
            None => {
                let built = build_probes(&probes, &workspace.join("target/ebpf"), &cargo_bin);
                copy(&built, &object);
            }
            Some(missing) => stub(&object, &out_dir, &missing),
        }
    }
    println!("cargo:rustc-env=KSCOPE_PROBES_OBJECT={}", object.display());
}

/// What of the eBPF toolchain is missing, if anything. A tool counts only
/// if it runs (`--version`): a file left by a removed package, or a broken
/// one, must stub the build like a missing one, not fail it.
fn missing_toolchain(cargo_bin: &Path) -> Option<String> {
    let linker = std::iter::once(cargo_bin.join("bpf-linker"))
        .chain(env::var_os("PATH").iter().flat_map(env::split_paths).map(|dir| dir.join("bpf-linker")))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("bpf-linker"));
    let tools = [
        (PathBuf::from(DEBIAN_RUSTC), "Debian's rustc-web"),
        (PathBuf::from(DEBIAN_CARGO), "Debian's cargo-web"),
        (linker, "cargo install bpf-linker"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| !runs(tool))
        .map(|(tool, from)| format!("{} ({from})", tool.display()))
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn runs(tool: &Path) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// An empty object in place of the kernel programs, and a linker script
/// that stops the `kscope` binary from linking with it, saying why: a
/// binary that cannot attach anything must not look like a build that
/// worked. Libraries and their tests are unaffected.
fn stub(object: &Path, out_dir: &Path, missing: &str) {
    let message = format!(
        "kscope's kernel programs are not built ({missing}: missing or not running): run `cargo xtask setup`, then build again"
    );
    if let Err(err) = std::fs::write(object, b"") {
        fail(&format!("cannot write {}: {err}", object.display()));
    }
    // GNU ld and lld read a file that is no object as a linker script that
    // adds to the default one; ASSERT(0, ...) fails the link with its text.
    let script = out_dir.join("kernel-programs-not-built.ld");
    if let Err(err) = std::fs::write(&script, format!("ASSERT(0, \"{message}\");\n")) {
        fail(&format!("cannot write {}: {err}", script.display()));
    }
    println!("cargo:rustc-link-arg-bins={}", script.display());
    println!("cargo:rustc-cfg=kscope_probes_stub");
    println!("cargo:warning={message}");
}

fn build_probes(probes: &Path, target_dir: &Path, cargo_bin: &Path) -> PathBuf {
    let path = format!("{}:{}", cargo_bin.display(), env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(probes)
        .args(["build", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(target_dir)
        .env("RUSTC", DEBIAN_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path);
    // Settings meant for the host build must not leak into the BPF build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let host_only = key.starts_with("CARGO_")
            || key.starts_with("RUSTC")
            || ["RUSTFLAGS", "RUSTDOC", "TARGET", "HOST", "OUT_DIR"].contains(&key.as_str());
        if host_only && key != "CARGO_HOME" {
            cmd.env_remove(&key);
        }
    }
    cmd.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
    let status = cmd.status().unwrap_or_else(|err| fail(&format!("cannot run {DEBIAN_CARGO}: {err}")));
    if !status.success() {
        fail(&format!("building the kernel programs failed ({status}); see the errors above"));
    }
    target_dir.join("bpfel-unknown-none/release/kscope-probes")
}

fn copy(from: &Path, to: &Path) {
    if let Err(err) = std::fs::copy(from, to) {
        fail(&format!("cannot copy {} to {}: {err}", from.display(), to.display()));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
