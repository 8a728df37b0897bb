//! The fuzz layer of `cargo xtask test`: every cargo-fuzz target in
//! `agent/fuzz` for a fixed time, one line per target.
//!
//! The targets build with rustup's nightly toolchain (libFuzzer's
//! instrumentation and AddressSanitizer need nightly flags) in a workspace of
//! their own, so the main workspace stays on stable. Everything generated
//! goes under `target/fuzz/` (build, grown corpus, logs), except crash
//! artifacts, which cargo-fuzz always writes to `agent/fuzz/artifacts/<target>/`
//! (gitignored); the committed seeds in `agent/fuzz/corpus/<target>/` are only
//! read.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    process::{self, workspace_root},
    setup::{self, FUZZ_TOOLCHAIN},
};

/// The fuzz targets, in the order they run (the `[[bin]]`s of agent/fuzz).
pub const TARGETS: &[&str] = &["http1", "http2", "dns", "decoder", "symbols"];

/// Seconds per target unless `KSCOPE_FUZZ_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 20;

/// libFuzzer's limits: memory per process, and seconds for one input (a hang
/// in a parser is a failure too).
const RSS_LIMIT_MB: u32 = 1024;
const INPUT_TIMEOUT_S: u32 = 10;

/// Lines of a failing target's log shown with the failure.
const TAIL_LINES: usize = 40;

fn fuzz_dir() -> PathBuf {
    workspace_root().join("agent/fuzz")
}

fn work_dir() -> PathBuf {
    workspace_root().join("target/fuzz")
}

/// `cargo xtask fuzz`: set up if needed, then the fuzz layer of `test`.
pub fn command() -> anyhow::Result<()> {
    setup::setup(&setup::SetupOptions::when_needed())?;
    fuzz_all(seconds()?)
}

/// Seconds per target, from `KSCOPE_FUZZ_SECONDS` or the default.
pub fn seconds() -> anyhow::Result<u64> {
    match std::env::var("KSCOPE_FUZZ_SECONDS") {
        Ok(s) => s
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("KSCOPE_FUZZ_SECONDS={s:?} is not a positive number of seconds")),
        Err(_) => Ok(DEFAULT_SECONDS),
    }
}

/// `cargo +nightly fuzz <subcommand>` in the workspace root, with nothing of
/// the environment `cargo xtask` runs in: `CARGO` (the stable cargo, which
/// cargo-fuzz's metadata query would otherwise use), `RUSTC` and flags meant
/// for other builds.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{FUZZ_TOOLCHAIN}"))
        .args(["fuzz", subcommand])
        .current_dir(workspace_root())
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Adds what every cargo-fuzz invocation shares: the fuzz crate and the
/// build directory.
fn with_dirs(cmd: &mut Command) -> &mut Command {
    cmd.arg("--fuzz-dir").arg(fuzz_dir()).arg("--target-dir").arg(work_dir().join("build"))
}

/// Builds every target, then runs each for `seconds`; one line per step.
/// Fails on the first build failure, and after all targets ran if any
/// crashed.
pub fn fuzz_all(seconds: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let log_dir = work_dir().join("logs");
    fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;

    let build_log = log_dir.join("build.log");
    let mut build = cargo_fuzz("build");
    with_dirs(&mut build);
    if let Err(err) = run_logged(&mut build, &build_log) {
        println!("xtask: fuzz build: FAILED in {:.1}s", started.elapsed().as_secs_f64());
        print_tail(&build_log);
        return Err(err.context(format!(
            "building the fuzz targets failed (log: {}); `cargo +{FUZZ_TOOLCHAIN} fuzz` needs rustup's \
             {FUZZ_TOOLCHAIN} toolchain and cargo-fuzz (`cargo xtask setup`)",
            build_log.display()
        )));
    }
    println!("xtask: fuzz build: ok in {:.1}s ({})", started.elapsed().as_secs_f64(), TARGETS.join(", "));

    let mut failed = Vec::new();
    for target in TARGETS {
        if let Err(err) = fuzz_one(target, seconds, &log_dir) {
            println!("xtask: fuzz {target}: FAILED: {err:#}");
            failed.push(*target);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Seeds made on this machine rather than committed: for `symbols`, a real
/// ELF file (a small system binary, with the byte that picks the ELF mode
/// in front), since binaries are not kept in the repository.
fn local_seeds(target: &str, corpus: &Path) -> anyhow::Result<()> {
    if target != "symbols" {
        return Ok(());
    }
    for binary in ["/usr/bin/true", "/usr/bin/env"] {
        let Ok(bytes) = fs::read(binary) else { continue };
        let name = Path::new(binary).file_name().and_then(|n| n.to_str()).unwrap_or("elf");
        let seed = corpus.join(format!("elf-{name}"));
        let mut input = vec![1u8];
        input.extend_from_slice(&bytes);
        fs::write(&seed, input).with_context(|| format!("writing {}", seed.display()))?;
    }
    Ok(())
}

fn fuzz_one(target: &str, seconds: u64, log_dir: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let corpus = work_dir().join("corpus").join(target);
    let seeds = fuzz_dir().join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    local_seeds(target, &corpus)?;
    let log = log_dir.join(format!("{target}.log"));
    let mut cmd = cargo_fuzz("run");
    with_dirs(&mut cmd)
        .arg(target)
        // New inputs go to the first directory; the seeds are only read.
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_S}"));
    let outcome = run_logged(&mut cmd, &log);
    let text = fs::read_to_string(&log).unwrap_or_default();
    match outcome {
        Ok(()) => {
            let runs = parse_done_runs(&text).map_or_else(|| "? runs".to_owned(), |n| format!("{n} runs"));
            let files = fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
            println!(
                "xtask: fuzz {target}: ok ({runs}, corpus {files} files) in {:.1}s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(err) => {
            let summary = failure_summary(&text);
            if summary.is_empty() {
                print_tail(&log);
            } else {
                for line in summary {
                    println!("    {line}");
                }
            }
            match parse_artifact(&text) {
                Some(artifact) => {
                    let artifact = workspace_root().join(artifact);
                    bail!(
                        "crash input saved at {} (log: {}); reproduce from the workspace root with \
                         `cargo +{FUZZ_TOOLCHAIN} fuzz run --fuzz-dir agent/fuzz --target-dir target/fuzz/build \
                         {target} {}`",
                        artifact.display(),
                        log.display(),
                        artifact.display()
                    )
                }
                None => Err(err.context(format!("no crash input reported (log: {})", log.display()))),
            }
        }
    }
}

/// Runs `cmd` with stdout and stderr into `log`.
fn run_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone().context("duplicating a log file handle")?;
    process::exec(cmd.stdin(Stdio::null()).stdout(file).stderr(err))
}

fn print_tail(log: &Path) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    println!("xtask: last lines of {}:", log.display());
    for line in &lines[lines.len().saturating_sub(TAIL_LINES)..] {
        println!("    {line}");
    }
}

/// The lines of a failed run that say what failed: a Rust panic's message
/// (up to its backtrace), and libFuzzer's and the sanitizer's verdicts.
fn failure_summary(log: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_panic = false;
    for line in log.lines() {
        if line.contains("panicked at ") {
            in_panic = true;
        } else if in_panic && (line.starts_with("stack backtrace:") || line.starts_with("note: ")) {
            in_panic = false;
        }
        let verdict = ["ERROR: libFuzzer:", "ERROR: AddressSanitizer:", "SUMMARY: ", "==ERROR:"]
            .iter()
            .any(|marker| line.contains(marker));
        if (in_panic || verdict) && lines.len() < TAIL_LINES {
            lines.push(line);
        }
    }
    lines
}

/// libFuzzer's closing line: "Done 242480 runs in 11 second(s)".
fn parse_done_runs(log: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| l.strip_prefix("Done ")?.split_whitespace().next()?.parse().ok())
}

/// Where libFuzzer saved the input that failed: "Test unit written to PATH".
fn parse_artifact(log: &str) -> Option<&str> {
    log.lines().rev().find_map(|l| l.split_once("Test unit written to ").map(|(_, path)| path.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_parsing() {
        let ok = "#242480\tDONE   cov: 310 ft: 900 corp: 120/4Kb\nDone 242480 runs in 11 second(s)\n";
        assert_eq!(parse_done_runs(ok), Some(242_480));
        assert_eq!(parse_done_runs("INFO: Seed: 1\n"), None);
        let crash = "==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='/w/agent/fuzz/artifacts/dns/'; Test unit written to \
                     /w/agent/fuzz/artifacts/dns/crash-da39a3ee\nBase64: AA==\n";
        assert_eq!(parse_artifact(crash), Some("/w/agent/fuzz/artifacts/dns/crash-da39a3ee"));
        assert_eq!(parse_artifact(ok), None);

        let panic = "#1\tINITED\nthread '<unnamed>' (1) panicked at src/lib.rs:68:5:\nexchange ends before it \
                     starts: 1 < 2\nstack backtrace:\n   0: rust_begin_unwind\n\
                     ==1== ERROR: libFuzzer: deadly signal\n    #0 0x55 in abort\n\
                     SUMMARY: libFuzzer: deadly signal\n";
        assert_eq!(
            failure_summary(panic),
            [
                "thread '<unnamed>' (1) panicked at src/lib.rs:68:5:",
                "exchange ends before it starts: 1 < 2",
                "==1== ERROR: libFuzzer: deadly signal",
                "SUMMARY: libFuzzer: deadly signal",
            ]
        );
        assert!(failure_summary(ok).is_empty());
    }

    #[test]
    fn targets_match_the_fuzz_crate() {
        let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap_or_default();
        for target in TARGETS {
            assert!(manifest.contains(&format!("name = \"{target}\"")), "{target} is not a [[bin]] of agent/fuzz");
            assert!(fuzz_dir().join("corpus").join(target).is_dir(), "no seed corpus for {target}");
        }
    }
}
