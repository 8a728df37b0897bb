//! `cargo xtask build`, and the builds `run`, `test` and `bench` share.

use std::path::PathBuf;

use crate::{
    process::{self, workspace_root},
    setup,
};

/// Sets up if needed, builds the release binary (agent/build.rs builds and
/// embeds the eBPF object) and returns its path.
pub fn build() -> anyhow::Result<PathBuf> {
    setup::setup(&setup::SetupOptions::when_needed())?;
    process::exec(process::cargo().args(["build", "--release", "-p", "kscope"]))?;
    Ok(workspace_root().join("target/release/kscope"))
}

/// A statically linked `kscope` for the QEMU guests, whose initramfs has no
/// libc.
pub fn build_static() -> anyhow::Result<PathBuf> {
    let target_dir = workspace_root().join("target/static");
    process::exec(
        process::cargo()
            .args(["build", "--release", "-p", "kscope", "--target", "x86_64-unknown-linux-gnu", "--target-dir"])
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/kscope"))
}
