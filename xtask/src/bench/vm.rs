//! Part 4 of the bench in QEMU guests: each hook form forced in turn on
//! Debian's kernels, with the BPF run time of every program.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use anyhow::Context as _;
use kscope_harness::vm::{GuestFile, guest_kernels, run_in_guest};
use kscope_schema::{ProgramStats, Record, SensorsRecord, StatsRecord, parse_line};

use super::summary::{SummaryFigures as _, chosen_forms, merge_programs};

/// Requests, and spawns, per pass of a hook form in each guest. TCG makes
/// each one take milliseconds; two passes of 100 keep a boot around a minute
/// while giving averages over hundreds of hits per program.
pub(super) const VM_ITERATIONS: u32 = 100;
/// `--duration` of kscope in the guest: only a bound, the script stops it
/// with SIGINT once its workload is done.
pub(super) const VM_KSCOPE_DURATION_S: u32 = 300;
pub(super) const VM_TIMEOUT: Duration = Duration::from_secs(900);
pub(super) const VM_FORMS: [&str; 3] = ["kprobe", "fentry", "tracepoint"];

/// The forms in the order the guest runs them: forward then backward, so a
/// change in the host's load during the boot (TCG runs on the host's CPUs)
/// weighs on every form alike instead of on whichever ran last.
pub(super) fn vm_pass_order() -> Vec<&'static str> {
    VM_FORMS.iter().chain(VM_FORMS.iter().rev()).copied().collect()
}

/// One pass of one hook form in a guest.
#[derive(Debug, Clone)]
pub(super) struct VmPass {
    pub(super) form: String,
    /// Each sensor's chosen form: a sensor that cannot use the forced form
    /// does not run, and its programs are then missing from the table.
    pub(super) forms: BTreeMap<String, String>,
    pub(super) summary: Option<StatsRecord>,
    pub(super) workload_s: Option<f64>,
    pub(super) problem: Option<String>,
}

#[derive(Debug, Clone)]
pub(super) struct VmKernel {
    pub(super) label: String,
    pub(super) release: Option<String>,
    pub(super) boot_and_run_s: f64,
    pub(super) passes: Vec<VmPass>,
    pub(super) error: Option<String>,
}

impl VmKernel {
    /// The programs of `form`, summed over its passes.
    pub(super) fn programs(&self, form: &str) -> Vec<ProgramStats> {
        merge_programs(
            self.passes.iter().filter(|p| p.form == form).filter_map(|p| p.summary.as_ref()).flat_map(|s| &s.programs),
        )
    }

    /// Total BPF time of `sensor`'s programs per operation of the workload
    /// (a connection for "tcp", a spawn for "process"): the figure that
    /// compares forms, since a kprobe form may need two programs (entry and
    /// return) where a tracepoint needs one.
    pub(super) fn ns_per_operation(&self, form: &str, sensor: &str) -> Option<f64> {
        let passes = self.passes.iter().filter(|p| p.form == form && p.summary.is_some()).count();
        // Each pass runs N wget (a connection and a spawn each) and N /bin/true.
        let per_pass = match sensor {
            "tcp" => VM_ITERATIONS,
            "process" => 2 * VM_ITERATIONS,
            _ => return None,
        };
        let operations = f64::from(per_pass) * passes as f64;
        let time: u64 = self
            .passes
            .iter()
            .filter(|p| p.form == form)
            .filter_map(|p| p.summary.as_ref())
            .map(|s| s.bpf_time_ns(Some(sensor)))
            .sum();
        (operations > 0.0).then(|| time as f64 / operations)
    }
}

/// The guest's part of a boot: `vm_pass.sh` with its variables set in front.
pub(super) fn vm_script() -> String {
    format!(
        "N={VM_ITERATIONS}\nFORMS='{}'\nKSCOPE_DURATION={VM_KSCOPE_DURATION_S}\n{}",
        vm_pass_order().join(" "),
        include_str!("vm_pass.sh")
    )
}

pub(super) fn measure_vms(root: &Path, static_kscope: &Path) -> anyhow::Result<Vec<VmKernel>> {
    let cache = root.join("target/vm/kernels");
    let work = root.join("target/vm/work");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // Not /kscope: the harness keeps its script in the /kscope directory.
    let files = [GuestFile { host: static_kscope.to_path_buf(), guest: "/usr/bin/kscope".into() }];
    let script = vm_script();
    let mut kernels = Vec::new();
    for kernel in guest_kernels() {
        println!("bench: QEMU {} ...", kernel.label);
        let vmlinuz = kernel.fetch(&cache).with_context(|| format!("fetching the {} kernel", kernel.label))?;
        // A guest that fails is reported, not fatal: the other kernel and the
        // host figures are still worth having.
        let result = match run_in_guest(&vmlinuz, &files, &script, &work, VM_TIMEOUT) {
            Ok(run) => {
                let mut result = parse_vm_output(kernel.label, &run.output);
                result.boot_and_run_s = run.boot_and_run.as_secs_f64();
                if run.exit_code != 0 && result.error.is_none() {
                    result.error = Some(format!("guest script exited {}; its output:\n{}", run.exit_code, run.output));
                }
                result
            }
            Err(err) => VmKernel {
                label: kernel.label.to_owned(),
                release: None,
                boot_and_run_s: 0.0,
                passes: Vec::new(),
                error: Some(format!("{err:#}")),
            },
        };
        println!(
            "bench:   {} in {:.1} s{}",
            kernel.label,
            result.boot_and_run_s,
            result.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        );
        kernels.push(result);
    }
    Ok(kernels)
}

pub(super) fn parse_vm_output(label: &str, output: &str) -> VmKernel {
    let mut result =
        VmKernel { label: label.to_owned(), release: None, boot_and_run_s: 0.0, passes: Vec::new(), error: None };
    for section in output.split("@@form ").skip(1) {
        let (body, stderr) = section.split_once("@@stderr").unwrap_or((section, ""));
        let mut lines = body.lines();
        let header = lines.next().unwrap_or_default();
        let field = |key: &str| header.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
        let form = header.split_whitespace().next().unwrap_or("?").to_owned();
        // kscope's first line and its summary; a line that is not a record
        // of kscope's is the pass's problem, naming the line.
        let mut sensors: Option<SensorsRecord<'static>> = None;
        let mut summary: Option<StatsRecord> = None;
        let mut bad_record = None;
        for line in lines.filter(|l| l.starts_with('{')) {
            match parse_line(line) {
                Ok(Record::Sensors(record)) => sensors = Some(record),
                Ok(Record::Summary(record)) => summary = Some(record),
                Ok(other) => {
                    bad_record.get_or_insert_with(|| format!("unexpected {} record: {line}", other.kind()));
                }
                Err(err) => {
                    bad_record.get_or_insert_with(|| err.to_string());
                }
            }
        }
        if let Some(sensors) = &sensors {
            result.release = Some(sensors.kernel.to_string());
        }
        let workload_s =
            match (field("u0").and_then(|v| v.parse::<f64>().ok()), field("u1").and_then(|v| v.parse::<f64>().ok())) {
                (Some(u0), Some(u1)) => Some(u1 - u0),
                _ => None,
            };
        let mut problem = None;
        if field("kscope") != Some("0") {
            problem = Some(format!("kscope exited {}: {}", field("kscope").unwrap_or("?"), stderr.trim()));
        } else if field("wget_failed") != Some("0") {
            problem = Some(format!("{} of {VM_ITERATIONS} wget requests failed", field("wget_failed").unwrap_or("?")));
        }
        if let Some(bad) = bad_record {
            problem.get_or_insert(bad);
        }
        if summary.is_none() {
            problem.get_or_insert_with(|| format!("no summary record: {}", stderr.trim()));
        }
        result.passes.push(VmPass {
            form,
            forms: sensors.as_ref().map(chosen_forms).unwrap_or_default(),
            summary,
            workload_s,
            problem,
        });
    }
    let order = vm_pass_order();
    let reported: Vec<&str> = result.passes.iter().map(|p| p.form.as_str()).collect();
    if reported != order {
        result.error = Some(format!("the guest reported passes {reported:?}, not {order:?}; its output:\n{output}"));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::summary::{avg_ns, fixtures::summary_line};

    const SENSORS: &str = r#"{"type":"sensors","time_unix_nano":1,"kernel":"6.1.0-test","sensors":[{"sensor":"process","description":"d","chosen":"kprobe","rejected":[],"programs":["process_exec_kp"],"hooks":[],"degraded":null,"fallbacks":[]}]}"#;

    fn pass(form: &str, u0: &str, u1: &str, records: &[String]) -> String {
        format!("@@form {form} kscope=0 wget_failed=0 u0={u0} u1={u1}\n{}\n@@stderr\n", records.join("\n"))
    }

    #[test]
    fn vm_passes_are_parsed_and_merged_per_form() {
        let summary = |runs: u64, ns: u64| summary_line(&[("process", "process_exec_kp", runs, ns)], &[1], 0);
        let output = pass("kprobe", "1.50", "3.00", &[SENSORS.to_owned(), summary(10, 5000)])
            + &pass("kprobe", "5.00", "6.00", &[SENSORS.to_owned(), summary(30, 3000)]);
        let k = parse_vm_output("debian-6.1", &output);
        assert_eq!(k.release.as_deref(), Some("6.1.0-test"));
        assert_eq!(k.passes.len(), 2);
        assert_eq!(k.passes[0].workload_s, Some(1.5));
        assert_eq!(k.passes[0].forms.get("process").map(String::as_str), Some("kprobe"));
        assert!(k.passes.iter().all(|p| p.problem.is_none()));
        let merged = k.programs("kprobe");
        assert_eq!((merged[0].run_count, avg_ns(&merged[0])), (40, Some(200.0)));
        let spawns = f64::from(2 * 2 * VM_ITERATIONS);
        assert_eq!(k.ns_per_operation("kprobe", "process"), Some(8000.0 / spawns));
        assert_eq!(k.ns_per_operation("fentry", "process"), None);
        assert!(k.error.is_some(), "fentry and tracepoint passes are missing");
    }

    #[test]
    fn a_guest_record_that_does_not_parse_is_the_pass_problem() {
        let broken = summary_line(&[], &[1], 0).replace("\"ledger\"", "\"book\"");
        let k = parse_vm_output("debian-6.12", &pass("fentry", "1", "2", &[SENSORS.to_owned(), broken.clone()]));
        let problem = k.passes[0].problem.as_deref().unwrap_or_default();
        assert!(problem.contains("not a kscope record") && problem.contains(&broken), "{problem}");
        assert!(k.passes[0].summary.is_none());
    }

    #[test]
    fn guest_script_sets_its_variables_and_parses() {
        let script = vm_script();
        assert!(script.starts_with(&format!(
            "N={VM_ITERATIONS}\nFORMS='kprobe fentry tracepoint tracepoint fentry kprobe'\nKSCOPE_DURATION={VM_KSCOPE_DURATION_S}\n"
        )));
        assert!(script.contains("for FORM in $FORMS; do"));
        let out = std::process::Command::new("sh").args(["-n", "-c", &script]).output().expect("runs sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
