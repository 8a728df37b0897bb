//! `cargo xtask setup`: installs what building and testing kscope needs on a
//! Debian 12 machine, following the verified recipes in `TOOLCHAIN.md` and
//! `KERNELS.md`.
//!
//! Setup first inspects the machine without changing it (no root needed):
//! dpkg's word and, for a package with a tool, that the tool runs; bpf-linker,
//! cargo-fuzz and grpcio by running them. It then prints its plan, each thing
//! to install with a total (and what apt would download), and works through
//! it step by step (`setup: [3/6] building bpf-linker 0.13.0 …`).
//! `--dry-run` prints the plan and stops. `build`, `run`, `test` and `fuzz`
//! call [`setup`] each time: when nothing is missing it costs a few
//! `dpkg-query`/`--version` runs and prints nothing.
//!
//! - [`packages`]: the Debian packages (dpkg, probes, apt);
//! - [`tools`]: bpf-linker, cargo-fuzz, grpcio, tracefs, and what setup can
//!   only check (rustup's nightly, Debian's dnsmasq service).

mod packages;
mod tools;

use std::path::Path;

use anyhow::{Result, bail};

use crate::process::is_root;
use packages::{AptEstimate, PACKAGES, PackagePlan};
pub use tools::FUZZ_TOOLCHAIN;
use tools::{
    BPF_LINKER_VERSION, CARGO_FUZZ_VERSION, GRPCIO_VERSION, LinkerState, TRACEFS_DIR, ToolState, TracefsState,
};

/// Options of `cargo xtask setup`.
#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// List what setup would install, with a total, and install nothing
    /// (no root needed).
    #[arg(long)]
    pub dry_run: bool,
}

/// `cargo xtask setup`.
pub fn command(args: &SetupArgs) -> Result<()> {
    setup(&SetupOptions { quiet_if_ready: false, dry_run: args.dry_run })
}

/// Options for [`setup`].
#[derive(Debug, Clone, Default)]
pub struct SetupOptions {
    /// Print nothing when the machine is already fully set up (used by `test`
    /// and `run`, which call [`setup`] every time).
    pub quiet_if_ready: bool,
    /// Print the plan and install nothing.
    pub dry_run: bool,
}

impl SetupOptions {
    /// For `build`, `run`, `test` and `fuzz`: silent when nothing is missing.
    pub fn when_needed() -> Self {
        Self { quiet_if_ready: true, dry_run: false }
    }
}

/// What the machine lacks, found by inspection only (no root needed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    packages: PackagePlan,
    linker: LinkerState,
    tracefs: TracefsState,
    grpcio: ToolState,
    cargo_fuzz: ToolState,
    /// rustup's nightly toolchain, which only a person can provide.
    nightly: Result<String, String>,
}

/// One step of the work, in the order setup takes them: packages first (the
/// bpf-linker build needs LLVM 22 from them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    AptUpdate,
    AptInstall,
    BpfLinker,
    Grpcio,
    CargoFuzz,
    MountTracefs,
}

impl Plan {
    fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if !self.packages.is_empty() {
            steps.extend([Step::AptUpdate, Step::AptInstall]);
        }
        if !matches!(self.linker, LinkerState::Ready(_)) {
            steps.push(Step::BpfLinker);
        }
        if self.grpcio.needs_install() {
            steps.push(Step::Grpcio);
        }
        if self.cargo_fuzz.needs_install() {
            steps.push(Step::CargoFuzz);
        }
        if self.tracefs == TracefsState::Empty {
            steps.push(Step::MountTracefs);
        }
        steps
    }

    fn is_ready(&self) -> bool {
        self.steps().is_empty()
    }

    /// Why root is needed, if it is: installing packages and mounting need it;
    /// `cargo install` writes to the user's own ~/.cargo and does not.
    fn root_reason(&self) -> Option<String> {
        let mut reasons = Vec::new();
        if !self.packages.is_empty() {
            reasons.push(format!("install Debian packages ({})", self.packages.names().join(" ")));
        }
        if self.tracefs == TracefsState::Empty {
            reasons.push(format!("mount tracefs at {TRACEFS_DIR}"));
        }
        if reasons.is_empty() { None } else { Some(reasons.join(" and ")) }
    }

    /// Everything to install, each with what does it and why, in step order.
    fn items(&self) -> Vec<(String, String)> {
        let mut items: Vec<(String, String)> = self
            .packages
            .packages()
            .iter()
            .map(|p| (p.name.to_owned(), format!("{}; {}", p.purpose, self.packages.reason(p))))
            .collect();
        match &self.linker {
            LinkerState::Ready(_) => {}
            LinkerState::Wrong { path, found } => items.push((
                format!("bpf-linker {BPF_LINKER_VERSION}"),
                format!("cargo install against LLVM 22; {}: {found}", path.display()),
            )),
            LinkerState::Missing => items.push((
                format!("bpf-linker {BPF_LINKER_VERSION}"),
                "cargo install against LLVM 22; not installed".to_owned(),
            )),
        }
        for (name, how, state) in [
            (format!("python grpcio {GRPCIO_VERSION}"), "pip install", &self.grpcio),
            (format!("cargo-fuzz {CARGO_FUZZ_VERSION}"), "cargo install", &self.cargo_fuzz),
        ] {
            match state {
                ToolState::Wrong(why) => items.push((name, format!("{how}; {why}"))),
                ToolState::Missing => items.push((name, format!("{how}; not installed"))),
                ToolState::Ready | ToolState::Unavailable(_) => {}
            }
        }
        if self.tracefs == TracefsState::Empty {
            items.push(("tracefs".to_owned(), format!("mount at {TRACEFS_DIR}; not mounted")));
        }
        items
    }

    /// What is there already, for the line after the plan.
    fn present(&self) -> Vec<String> {
        let mut present = Vec::new();
        if self.packages.present > 0 {
            present.push(format!("{} of {} Debian packages", self.packages.present, PACKAGES.len()));
        }
        if let LinkerState::Ready(path) = &self.linker {
            present.push(format!("bpf-linker {BPF_LINKER_VERSION} ({})", path.display()));
        }
        if self.grpcio == ToolState::Ready {
            present.push(format!("python grpcio {GRPCIO_VERSION}"));
        }
        if self.cargo_fuzz == ToolState::Ready {
            present.push(format!("cargo-fuzz {CARGO_FUZZ_VERSION}"));
        }
        if self.tracefs == TracefsState::Mounted {
            present.push(format!("tracefs at {TRACEFS_DIR}"));
        }
        present
    }

    /// What setup cannot provide: only the tests that need it cannot run.
    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let ToolState::Unavailable(why) = &self.grpcio {
            warnings.push(format!("cannot install grpcio ({why}); the gRPC tests cannot run"));
        }
        // rustup cannot download toolchains on these machines: say so, and
        // let the fuzz layer fail with the same words if it runs.
        if let Err(why) = &self.nightly {
            warnings.push(format!(
                "rustup toolchain {FUZZ_TOOLCHAIN} unusable ({why}); the fuzz targets cannot run \
                 (`rustup toolchain install {FUZZ_TOOLCHAIN}` where rustup can download)"
            ));
        }
        if self.tracefs == TracefsState::Absent {
            warnings
                .push(format!("{TRACEFS_DIR} does not exist (kernel without tracing?); tracepoint tests cannot run"));
        }
        warnings
    }

    /// The progress line of a step.
    fn step_title(&self, step: Step) -> String {
        match step {
            Step::AptUpdate => "updating apt's package lists (apt-get update)".to_owned(),
            Step::AptInstall => {
                let (new, again) = (self.packages.missing.len(), self.packages.broken.len());
                let mut what = Vec::new();
                if new > 0 {
                    what.push(format!("installing {new} Debian package{}", plural(new)));
                }
                if again > 0 {
                    what.push(format!("reinstalling {again}"));
                }
                format!("{} (apt-get install)", what.join(", "))
            }
            Step::BpfLinker => {
                format!("building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (cargo install, a few minutes)")
            }
            Step::Grpcio => format!("installing python grpcio {GRPCIO_VERSION} (pip)"),
            Step::CargoFuzz => {
                format!("building cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install, a minute or two)")
            }
            Step::MountTracefs => format!("mounting tracefs at {TRACEFS_DIR}"),
        }
    }

    /// The plan as printed before any step (and alone for `--dry-run`):
    /// each thing to install and why, with a total; for the packages what
    /// apt would download (`apt`, when known); then what is there already.
    fn text(&self, apt: Option<&Result<AptEstimate, String>>) -> Vec<String> {
        let items = self.items();
        let mut lines = Vec::new();
        if items.is_empty() {
            lines.push(format!("setup: nothing to install; present: {}", self.present().join(", ")));
            return lines;
        }
        let mut summary = Vec::new();
        if !self.packages.is_empty() {
            summary.push(format!("{} Debian package{}", self.packages.len(), plural(self.packages.len())));
        }
        summary.extend(items[self.packages.len()..].iter().map(|(name, _)| name.clone()));
        lines.push(format!("setup: to install: {} ({})", items.len(), summary.join(", ")));
        let width = items.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        for (i, (name, why)) in items.iter().enumerate() {
            if i == 0 && !self.packages.is_empty() {
                let apt = match apt {
                    Some(Ok(estimate)) => format!("apt: {estimate}"),
                    Some(Err(why)) => format!("download size unknown until `apt-get update`: {why}"),
                    None => "download size not asked".to_owned(),
                };
                lines.push(format!("  Debian packages ({apt}):"));
            }
            let indent = if i < self.packages.len() { "    " } else { "  " };
            lines.push(format!("{indent}{name:<width$}  {why}"));
        }
        let present = self.present();
        if !present.is_empty() {
            lines.push(format!("setup: present: {}", present.join(", ")));
        }
        lines
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What `cargo xtask setup` installs; `build`, `run`, `test` and `fuzz` call
/// it first.
pub fn setup(opts: &SetupOptions) -> Result<()> {
    let plan = inspect()?;
    if plan.is_ready() && opts.quiet_if_ready && !opts.dry_run {
        return Ok(());
    }
    // apt's own dry run, from the lists already here: neither root nor the
    // dpkg lock needed.
    let apt = (!plan.packages.is_empty()).then(|| packages::apt_estimate(&plan.packages));
    for line in plan.text(apt.as_ref()) {
        println!("{line}");
    }
    for warning in plan.warnings() {
        eprintln!("setup: warning: {warning}");
    }
    let root = is_root();
    if opts.dry_run {
        match plan.root_reason() {
            Some(reason) if !root => println!("setup: dry run: nothing installed (a real run needs root to {reason})"),
            _ => println!("setup: dry run: nothing installed"),
        }
        return Ok(());
    }
    // Fail before doing anything, so a non-root run does not stop half-way.
    if let Some(reason) = plan.root_reason()
        && !root
    {
        bail!("setup needs root to {reason}: run it as root (e.g. `sudo cargo xtask setup`)");
    }

    let steps = plan.steps();
    for (i, step) in steps.iter().enumerate() {
        println!("setup: [{}/{}] {} …", i + 1, steps.len(), plan.step_title(*step));
        match step {
            Step::AptUpdate => packages::apt_update()?,
            Step::AptInstall => packages::install(&plan.packages)?,
            Step::BpfLinker => tools::install_bpf_linker()?,
            Step::Grpcio => tools::install_grpcio()?,
            Step::CargoFuzz => tools::install_cargo_fuzz()?,
            Step::MountTracefs => tools::mount_tracefs()?,
        }
    }
    tools::check_dnsmasq_service();
    println!("setup: ready");
    Ok(())
}

/// Looks at the machine without changing it.
fn inspect() -> Result<Plan> {
    Ok(Plan {
        packages: packages::inspect()?,
        linker: tools::probe_bpf_linker(),
        tracefs: tools::tracefs_state(Path::new(TRACEFS_DIR)),
        grpcio: tools::probe_grpcio(),
        cargo_fuzz: tools::probe_cargo_fuzz(),
        nightly: tools::probe_nightly(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::{
        packages::{optional, required},
        *,
    };

    fn ready() -> Plan {
        Plan {
            packages: PackagePlan { present: PACKAGES.len(), ..PackagePlan::default() },
            linker: LinkerState::Ready(PathBuf::from("/root/.cargo/bin/bpf-linker")),
            tracefs: TracefsState::Mounted,
            grpcio: ToolState::Ready,
            cargo_fuzz: ToolState::Ready,
            nightly: Ok("rustc 1.97.0-nightly".to_owned()),
        }
    }

    #[test]
    fn plan_readiness_and_root_reason() {
        let ready = ready();
        assert!(ready.is_ready());
        assert_eq!(ready.root_reason(), None);
        assert!(ready.steps().is_empty());

        // A missing bpf-linker needs work, but not root.
        let linker_only = Plan { linker: LinkerState::Missing, ..ready.clone() };
        assert!(!linker_only.is_ready());
        assert_eq!(linker_only.root_reason(), None);

        // Nothing can be mounted without a mount point: not an action item.
        let no_tracing = Plan { tracefs: TracefsState::Absent, ..ready.clone() };
        assert!(no_tracing.is_ready());
        assert_eq!(no_tracing.warnings().len(), 1);

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
        assert_eq!(unfixable.warnings().len(), 2);

        // A package whose tool does not run needs root too, to reinstall.
        let needs_root = Plan {
            packages: PackagePlan {
                missing: vec![optional("curl", "tests")],
                broken: vec![(required("clang-22"), "exit 127".into())],
                present: 3,
            },
            tracefs: TracefsState::Empty,
            ..ready
        };
        assert!(!needs_root.is_ready());
        assert_eq!(
            needs_root.root_reason().as_deref(),
            Some("install Debian packages (clang-22 curl) and mount tracefs at /sys/kernel/tracing")
        );
    }

    /// A fresh machine: Debian's rustc hidden by a stub that exits 127 while
    /// dpkg still lists rustc-web, nothing of crates.io installed.
    fn fresh() -> Plan {
        let rustc = PACKAGES[0];
        assert_eq!(rustc.name, "rustc-web");
        Plan {
            packages: PackagePlan {
                missing: vec![PACKAGES[2], PACKAGES[PACKAGES.len() - 1]],
                broken: vec![(rustc, "`/usr/bin/rustc --version` failed (exit status: 127)".into())],
                present: PACKAGES.len() - 3,
            },
            linker: LinkerState::Wrong {
                path: PathBuf::from("/root/.cargo/bin/bpf-linker"),
                found: "`--version` failed (exit status: 127)".into(),
            },
            cargo_fuzz: ToolState::Missing,
            tracefs: TracefsState::Empty,
            ..ready()
        }
    }

    #[test]
    fn steps_follow_the_plan_in_order() {
        let plan = fresh();
        assert_eq!(
            plan.steps(),
            [Step::AptUpdate, Step::AptInstall, Step::BpfLinker, Step::CargoFuzz, Step::MountTracefs]
        );
        assert_eq!(plan.step_title(Step::AptInstall), "installing 2 Debian packages, reinstalling 1 (apt-get install)");
        assert_eq!(
            plan.step_title(Step::BpfLinker),
            "building bpf-linker 0.13.0 against LLVM 22 (cargo install, a few minutes)"
        );
        let only_broken = Plan { packages: PackagePlan { missing: Vec::new(), ..fresh().packages }, ..ready() };
        assert_eq!(only_broken.steps(), [Step::AptUpdate, Step::AptInstall]);
        assert_eq!(only_broken.step_title(Step::AptInstall), "reinstalling 1 (apt-get install)");
    }

    #[test]
    fn plan_text_lists_every_item_with_a_total() {
        let plan = fresh();
        let apt = Ok(AptEstimate { packages: 5, download_bytes: 45_200_000 });
        let text = plan.text(Some(&apt)).join("\n");
        let expected = "\
setup: to install: 6 (3 Debian packages, bpf-linker 0.13.0, cargo-fuzz 0.13.2, tracefs)
  Debian packages (apt: 5 packages with dependencies, 45.2 MB to download):
    rustc-web          toolchain; reinstall: `/usr/bin/rustc --version` failed (exit status: 127)
    cargo-web          toolchain; not installed
    wrk                benchmarks; not installed
  bpf-linker 0.13.0  cargo install against LLVM 22; /root/.cargo/bin/bpf-linker: `--version` failed (exit status: 127)
  cargo-fuzz 0.13.2  cargo install; not installed
  tracefs            mount at /sys/kernel/tracing; not mounted
setup: present: 24 of 27 Debian packages, python grpcio 1.85.1";
        assert_eq!(text, expected);
        assert_eq!(PACKAGES.len(), 27, "update the expected text");

        let unknown = plan.text(Some(&Err("apt-get: E: Unable to locate package rustc-web".into())));
        assert_eq!(
            unknown[1],
            "  Debian packages (download size unknown until `apt-get update`: \
             apt-get: E: Unable to locate package rustc-web):"
        );

        assert_eq!(
            ready().text(None),
            ["setup: nothing to install; present: 27 of 27 Debian packages, bpf-linker 0.13.0 \
              (/root/.cargo/bin/bpf-linker), python grpcio 1.85.1, cargo-fuzz 0.13.2, tracefs at /sys/kernel/tracing"]
        );
        let tools_only = Plan { grpcio: ToolState::Wrong("version 1.60.0".into()), ..ready() };
        assert_eq!(
            tools_only.text(None)[..2],
            ["setup: to install: 1 (python grpcio 1.85.1)", "  python grpcio 1.85.1  pip install; version 1.60.0"]
        );
    }
}
