//! Builds the kernel programs (ebpf-probes/programs) so the `kscope` binary
//! can embed its eBPF object and run alone on another host.
//!
//! The kernel side needs Debian's rustc 1.96 and `-Z build-std=core` (see
//! ../shared/TOOLCHAIN.md); `cargo xtask setup` installs both.

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

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let object = out_dir.join("kscope-probes.o");
    if let Some(prebuilt) = env::var_os("KSCOPE_PROBES_OBJECT") {
        copy(Path::new(&prebuilt), &object);
    } else {
        let built = build_probes(&probes, &workspace.join("target/ebpf"));
        copy(&built, &object);
    }
    println!("cargo:rustc-env=KSCOPE_PROBES_OBJECT={}", object.display());
}

fn build_probes(probes: &Path, target_dir: &Path) -> PathBuf {
    for tool in [DEBIAN_RUSTC, DEBIAN_CARGO] {
        if !Path::new(tool).exists() {
            fail(&format!(
                "{tool} is missing: the kernel programs need Debian's rustc-web toolchain; run `cargo xtask setup`"
            ));
        }
    }
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = format!("{home}/.cargo/bin:{}", env::var("PATH").unwrap_or_default());
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
