//! `cargo xtask test`: every test layer in order, one summary line each.

use std::time::Instant;

use anyhow::bail;

use crate::{build, fuzz, process, setup};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip the QEMU kernels (for a quick local loop; CI runs them).
    #[arg(long)]
    pub no_vm: bool,
    /// Skip the fuzz targets (for a quick local loop; CI runs them for
    /// KSCOPE_FUZZ_SECONDS, default 20, each).
    #[arg(long)]
    pub no_fuzz: bool,
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
    // A newcomer's first commands (`cargo xtask --help`, `setup --dry-run`,
    // `cargo check`, `cargo build` failing with the line that says to run
    // setup) with the eBPF toolchain hidden in a private mount namespace.
    Layer {
        name: "fresh machine",
        run: Run::Cargo(&["test", "-p", "kscope-tests", "--test", "fresh_machine", "--", "--nocapture"]),
    },
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

pub fn test(args: &TestArgs) -> anyhow::Result<()> {
    setup::setup(&setup::SetupOptions::default())?;
    // Before the long builds, so a bad value fails at once.
    let fuzz_seconds = fuzz::seconds()?;
    let binary = build::build()?;
    let static_binary = build::build_static()?;
    let mut results = Vec::new();
    for layer in LAYERS {
        let started = Instant::now();
        let outcome = match layer.run {
            Run::Fuzz if args.no_fuzz => {
                println!("xtask: test layer: {}: skipped (--no-fuzz)", layer.name);
                results.push((layer.name, "skipped", started.elapsed()));
                continue;
            }
            Run::Fuzz => {
                println!("xtask: test layer: {} ({fuzz_seconds}s per target, KSCOPE_FUZZ_SECONDS)", layer.name);
                fuzz::fuzz_all(fuzz_seconds)
            }
            Run::Cargo(cargo_args) => {
                let mut cmd = process::cargo();
                cmd.args(cargo_args).env("KSCOPE_BIN", &binary).env("KSCOPE_STATIC_BIN", &static_binary);
                if args.no_vm {
                    cmd.env("KSCOPE_SKIP_VM", "1");
                }
                println!("xtask: test layer: {}", layer.name);
                process::exec(&mut cmd)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_machine_runs_right_after_unit() {
        let names: Vec<&str> = LAYERS.iter().map(|l| l.name).collect();
        assert_eq!(names[..2], ["unit", "fresh machine"]);
        let Run::Cargo(args) = LAYERS[1].run else { panic!("fresh machine is a cargo test") };
        assert_eq!(args, ["test", "-p", "kscope-tests", "--test", "fresh_machine", "--", "--nocapture"]);
    }

    /// Every `--test` a layer names is a test target of the tests crate.
    #[test]
    fn layers_name_existing_test_files() {
        let dir = crate::process::workspace_root().join("tests/tests");
        for layer in LAYERS {
            let Run::Cargo(args) = layer.run else { continue };
            for pair in args.windows(2).filter(|p| p[0] == "--test") {
                let file = dir.join(format!("{}.rs", pair[1]));
                assert!(file.is_file(), "layer {}: no {}", layer.name, file.display());
            }
        }
    }
}
