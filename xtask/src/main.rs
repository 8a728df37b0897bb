//! `cargo xtask <command>`: one entry point for setting up a fresh machine,
//! building, running and testing kscope.

mod bench;
mod fuzz;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, bpf-linker,
    /// grpcio, cargo-fuzz); idempotent.
    Setup,
    /// Build the eBPF object and the release `kscope` binary (which embeds it).
    Build,
    /// Set up, build, then run `kscope run` as root with defaults (extra args go to `kscope run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test layer: unit, fuzz, L7 harnesses, host
    /// kernel, QEMU kernels.
    Test {
        /// Skip the QEMU kernels (for a quick local loop; CI runs them).
        #[arg(long)]
        no_vm: bool,
        /// Skip the fuzz targets (for a quick local loop; CI runs them for
        /// KSCOPE_FUZZ_SECONDS, default 20, each).
        #[arg(long)]
        no_fuzz: bool,
    },
    /// Run only the fuzz layer of `test`: every target of agent/fuzz for
    /// KSCOPE_FUZZ_SECONDS (default 20) each.
    Fuzz,
    /// Measure kscope's cost: throughput with and without it, CPU per event,
    /// zero-loss rate, ns per hit per hook form (host and QEMU kernels).
    Bench(bench::BenchOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::setup(&setup::SetupOptions::default()),
        Cmd::Build => build().map(|_| ()),
        Cmd::Run { args } => run(&args),
        Cmd::Test { no_vm, no_fuzz } => test(no_vm, no_fuzz),
        Cmd::Fuzz => {
            setup::setup(&setup::SetupOptions { quiet_if_ready: true }).and_then(|()| fuzz::fuzz_all(fuzz::seconds()?))
        }
        Cmd::Bench(opts) => bench::bench(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Builds the release binary (agent/build.rs builds and embeds the eBPF
/// object) and returns its path.
fn build() -> anyhow::Result<PathBuf> {
    setup::setup(&setup::SetupOptions { quiet_if_ready: true })?;
    status(cargo().args(["build", "--release", "-p", "kscope"]))?;
    Ok(workspace_root().join("target/release/kscope"))
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let binary = build()?;
    let mut cmd = if is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    cmd.arg("run").args(args);
    status(&mut cmd)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// One test layer: a name for the summary and what it runs.
struct Layer {
    name: &'static str,
    run: Run,
}

enum Run {
    /// `cargo` with these arguments.
    Cargo(&'static [&'static str]),
    /// The cargo-fuzz targets of agent/fuzz (see fuzz.rs).
    Fuzz,
}

const LAYERS: &[Layer] = &[
    Layer { name: "unit", run: Run::Cargo(&["test", "--workspace", "--exclude", "kscope-tests"]) },
    Layer { name: "unit (harness helpers)", run: Run::Cargo(&["test", "-p", "kscope-tests", "--lib"]) },
    // Recorded real streams replayed through decode, connection table and
    // parsers, against the records checked in beside them.
    Layer { name: "golden replays", run: Run::Cargo(&["test", "-p", "kscope-tests", "--test", "golden"]) },
    // The protocol parsers under libFuzzer, KSCOPE_FUZZ_SECONDS each.
    Layer { name: "fuzz", run: Run::Fuzz },
    // The HTTP/2, gRPC and DNS servers and clients the L7 tests drive, on
    // their own (no kscope).
    Layer { name: "L7 harnesses", run: Run::Cargo(&["test", "-p", "kscope-tests", "--test", "l7_harness"]) },
    // The OTLP exporters against a real receiver (gRPC and HTTP), the
    // collector down and back; no kernel involved.
    Layer { name: "OTLP export", run: Run::Cargo(&["test", "-p", "kscope-tests", "--test", "export"]) },
    // Real eBPF on this machine's kernel: lifecycle events against nginx
    // and curl; exchanges of nginx, curl, nghttp, grpcio, dnsmasq and dig;
    // their spans and metrics at an OTLP receiver and on /metrics;
    // retransmits and packet drops between two network namespaces.
    Layer {
        name: "host kernel",
        run: Run::Cargo(&[
            "test",
            "--no-fail-fast",
            "-p",
            "kscope-tests",
            "--test",
            "host",
            "--test",
            "l7",
            "--test",
            "otlp",
            "--test",
            "network",
            "--test",
            "profile",
        ]),
    },
    // Debian's 6.1 and 6.12 kernels under QEMU: kprobe, fentry, tracepoint.
    // --nocapture lets each kernel's one-line verdict through.
    Layer {
        name: "QEMU kernels",
        run: Run::Cargo(&["test", "-p", "kscope-tests", "--test", "vm_harness", "--test", "vm", "--", "--nocapture"]),
    },
];

fn test(no_vm: bool, no_fuzz: bool) -> anyhow::Result<()> {
    setup::setup(&setup::SetupOptions::default())?;
    // Before the long builds, so a bad value fails at once.
    let fuzz_seconds = fuzz::seconds()?;
    let binary = build()?;
    let static_binary = build_static()?;
    let mut results = Vec::new();
    for layer in LAYERS {
        let started = std::time::Instant::now();
        let outcome = match layer.run {
            Run::Fuzz if no_fuzz => {
                println!("xtask: test layer: {}: skipped (--no-fuzz)", layer.name);
                results.push((layer.name, "skipped", started.elapsed()));
                continue;
            }
            Run::Fuzz => {
                println!("xtask: test layer: {} ({fuzz_seconds}s per target, KSCOPE_FUZZ_SECONDS)", layer.name);
                fuzz::fuzz_all(fuzz_seconds)
            }
            Run::Cargo(args) => {
                let mut cmd = cargo();
                cmd.args(args).env("KSCOPE_BIN", &binary).env("KSCOPE_STATIC_BIN", &static_binary);
                if no_vm {
                    cmd.env("KSCOPE_SKIP_VM", "1");
                }
                println!("xtask: test layer: {}", layer.name);
                status(&mut cmd)
            }
        };
        if let Err(err) = &outcome {
            eprintln!("xtask: {}: {err:#}", layer.name);
        }
        results.push((layer.name, if outcome.is_ok() { "ok" } else { "FAILED" }, started.elapsed()));
        if outcome.is_err() {
            break;
        }
    }
    println!("xtask: summary");
    for (name, verdict, took) in &results {
        println!("  {:<24} {} in {:.1}s", name, verdict, took.as_secs_f64());
    }
    if results.len() != LAYERS.len() || results.iter().any(|(_, verdict, _)| *verdict == "FAILED") {
        bail!("tests failed");
    }
    Ok(())
}

/// A statically linked `kscope` for the QEMU guests, whose initramfs has no
/// libc.
fn build_static() -> anyhow::Result<PathBuf> {
    let target_dir = workspace_root().join("target/static");
    status(
        cargo()
            .args(["build", "--release", "-p", "kscope", "--target", "x86_64-unknown-linux-gnu", "--target-dir"])
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/kscope"))
}
