//! `cargo xtask <command>`: one entry point for setting up a fresh machine,
//! building, running, testing and measuring kscope.
//!
//! Only the command line lives here; each subcommand is a module of its own
//! and [`process`] runs the programs they start. xtask builds with the stock
//! toolchain alone: it depends on `kscope-harness` and `kscope-schema`, never
//! on the agent (whose build needs what `setup` installs).

mod bench;
mod build;
mod fuzz;
mod process;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, bpf-linker,
    /// grpcio, cargo-fuzz, tracefs); says what first; idempotent.
    Setup(setup::SetupArgs),
    /// Build the eBPF object and the release `kscope` binary (which embeds it).
    Build,
    /// Set up, build, then run `kscope run` as root with defaults (extra args go to `kscope run`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run every test layer: unit, fresh machine, fuzz, L7
    /// harnesses, host kernel, QEMU kernels.
    Test(test::TestArgs),
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
        Cmd::Setup(args) => setup::command(&args),
        Cmd::Build => build::build().map(|_| ()),
        Cmd::Run { args } => run::run(&args),
        Cmd::Test(args) => test::test(&args),
        Cmd::Fuzz => fuzz::command(),
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

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, error::ErrorKind};

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// What a newcomer types first: `cargo xtask`, `--help`, `help`, and
    /// `<command> --help` for every command, all answer with help.
    #[test]
    fn every_help_a_newcomer_may_ask_for_answers() {
        let help = |args: &[&str]| {
            let argv = std::iter::once("cargo xtask").chain(args.iter().copied());
            match Cli::try_parse_from(argv) {
                Ok(cli) => panic!("{args:?} parsed as {cli:?} instead of showing help"),
                Err(err) => {
                    assert!(
                        matches!(
                            err.kind(),
                            ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                        ),
                        "{args:?}: {err}"
                    );
                    err.render().to_string()
                }
            }
        };
        let top = help(&["--help"]);
        let names: Vec<String> = Cli::command().get_subcommands().map(|c| c.get_name().to_owned()).collect();
        for name in &names {
            assert!(top.lines().any(|l| l.trim_start().starts_with(name.as_str())), "--help lacks {name}:\n{top}");
            help(&[name, "--help"]);
            help(&["help", name]);
        }
        help(&[]);
        help(&["-h"]);
        help(&["help"]);
        for name in ["setup", "build", "run", "test", "fuzz", "bench"] {
            assert!(names.iter().any(|n| n == name), "no `{name}` command");
        }
        assert!(help(&["setup", "--help"]).contains("--dry-run"));
    }

    #[test]
    fn setup_dry_run_and_test_flags_parse() {
        let Cmd::Setup(args) = Cli::try_parse_from(["cargo xtask", "setup", "--dry-run"]).expect("parses").command
        else {
            panic!("not setup")
        };
        assert!(args.dry_run);
        let Cmd::Test(args) =
            Cli::try_parse_from(["cargo xtask", "test", "--no-vm", "--no-fuzz"]).expect("parses").command
        else {
            panic!("not test")
        };
        assert!(args.no_vm && args.no_fuzz);
    }
}
