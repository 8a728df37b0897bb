//! The sensor contract and the one place where a sensor's hook form is
//! chosen.
//!
//! A sensor is one observable thing (the TCP connection lifecycle, say). It
//! lists the hook forms it can run on in its own order of preference; at
//! start each sensor gets the first form that both passes the checks against
//! [`KernelFeatures`] and actually loads and attaches. A sensor that cannot
//! run on any form is reported and skipped: one missing hook never stops the
//! whole agent.

pub mod drops;
pub mod process;
pub mod retransmit;
pub mod socket_data;
pub mod tcp;

use std::fmt;

use aya::{
    Btf, Ebpf,
    programs::{FEntry, FExit, KProbe, ProgramError, TracePoint},
};

use kscope_common::HookFormId;

use crate::kernel::{KernelFeatures, Wanted};

/// How a sensor's programs hook into the kernel; the output's type, so the
/// `--hook-form` flag, the sensors record and each event name forms alike.
pub use kscope_schema::HookForm;
/// What [`choose_and_attach`] decided for each sensor: printed as is (the
/// `sensors` record, `kscope probe`).
pub use kscope_schema::{Fallback, Rejection, SensorChoice};

/// The form of the program that stamped an event (a function: both types
/// are other crates', so no `From` between them can be written here).
pub fn hook_form_of(id: HookFormId) -> HookForm {
    match id {
        HookFormId::Kprobe => HookForm::Kprobe,
        HookFormId::Fentry => HookForm::Fentry,
        HookFormId::Tracepoint => HookForm::Tracepoint,
    }
}

/// Where one program attaches.
#[derive(Debug, Clone, Copy)]
pub enum Attach {
    Kprobe(&'static str),
    Kretprobe(&'static str),
    Fentry(&'static str),
    Fexit(&'static str),
    Tracepoint(&'static str, &'static str),
}

impl Attach {
    fn function(&self) -> Option<&'static str> {
        match *self {
            Self::Kprobe(f) | Self::Kretprobe(f) | Self::Fentry(f) | Self::Fexit(f) => Some(f),
            Self::Tracepoint(..) => None,
        }
    }
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kprobe(func) => write!(f, "kprobe:{func}"),
            Self::Kretprobe(func) => write!(f, "kretprobe:{func}"),
            Self::Fentry(func) => write!(f, "fentry:{func}"),
            Self::Fexit(func) => write!(f, "fexit:{func}"),
            Self::Tracepoint(cat, name) => write!(f, "tracepoint:{cat}:{name}"),
        }
    }
}

/// One program of the eBPF object (by its function name) and its hook.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSpec {
    pub program: &'static str,
    pub attach: Attach,
}

/// One way a sensor can run: the programs that together make it.
#[derive(Debug)]
pub struct FormSpec {
    pub form: HookForm,
    pub programs: &'static [ProgramSpec],
    /// Programs attached where the kernel has their hook, skipped quietly
    /// where it does not (a function that exists only in some releases).
    pub optional: &'static [ProgramSpec],
    /// Whether the form reads kernel structs at BTF-resolved offsets and so
    /// cannot run at all without BTF.
    pub needs_struct_offsets: bool,
    /// What this form loses when BTF (and so struct offsets) is missing.
    pub without_btf: &'static str,
}

/// An observable thing and its forms, best first.
#[derive(Debug)]
pub struct SensorSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// Its slot in the kernel's `EVENTS_EMITTED` counters (`slot + 1`
    /// counts what the buffer refused).
    pub counter_slot: u32,
    /// Slot counting entries the sensor's kernel table had no room for.
    pub table_full_slot: Option<u32>,
    /// Slot counting what the sensor saw but could not report (for socket
    /// data: messages of one `sendmmsg`/`recvmmsg` beyond its batch).
    pub unreported_slot: Option<u32>,
    pub forms: &'static [FormSpec],
}

/// The one list of sensors.
pub static SENSORS: &[&SensorSpec] =
    &[&process::SENSOR, &tcp::SENSOR, &socket_data::SENSOR, &retransmit::SENSOR, &drops::SENSOR];

/// Every function and tracepoint any form may use, for feature detection.
pub fn wanted() -> Wanted {
    let mut wanted = Wanted::default();
    for sensor in SENSORS {
        for form in sensor.forms {
            for program in form.programs.iter().chain(form.optional) {
                match program.attach {
                    Attach::Tracepoint(cat, name) => {
                        wanted.tracepoints.insert((cat.to_owned(), name.to_owned()));
                    }
                    other => {
                        if let Some(function) = other.function() {
                            wanted.functions.insert(function.to_owned());
                        }
                    }
                }
            }
        }
    }
    wanted
}

/// Checks a form against the kernel's features without touching the kernel:
/// the first reason it cannot work, if any.
pub fn precheck(form: &FormSpec, features: &KernelFeatures) -> Result<(), String> {
    match form.form {
        HookForm::Kprobe => features.kprobes.clone()?,
        HookForm::Fentry => features.btf.clone().map_err(|e| format!("fentry needs kernel BTF: {e}"))?,
        HookForm::Tracepoint => features.tracefs.clone()?,
    }
    if form.needs_struct_offsets
        && let Some(first) = features.offset_errors.first()
    {
        return Err(format!("needs kernel struct offsets from BTF: {first}"));
    }
    for program in form.programs {
        match program.attach {
            Attach::Kprobe(f) | Attach::Kretprobe(f) => match features.kprobe_functions.get(f) {
                Some(Ok(())) => {}
                Some(Err(why)) => return Err(why.clone()),
                None => return Err(format!("{f} was not looked up in kallsyms")),
            },
            Attach::Fentry(f) | Attach::Fexit(f) if !features.btf_functions.contains(f) => {
                return Err(format!("{f} is not a function in the kernel's BTF"));
            }
            Attach::Tracepoint(cat, name) if !features.tracepoints.contains(&format!("{cat}:{name}")) => {
                return Err(format!("tracepoint {cat}:{name} does not exist"));
            }
            _ => {}
        }
    }
    if form.form == HookForm::Tracepoint
        && let Some((_, why)) = features.layout_errors.iter().find(|(tp, _)| form_reads(form, tp))
    {
        return Err(format!("tracepoint record layout: {why}"));
    }
    Ok(())
}

/// Whether `form` reads the record of `tracepoint` (`category:name`).
/// Every `syscalls:*` record has one shape, read from `sys_enter_read`'s
/// and `sys_exit_read`'s, so those layouts belong to every syscall form.
fn form_reads(form: &FormSpec, tracepoint: &str) -> bool {
    let (category, name) = tracepoint.split_once(':').unwrap_or((tracepoint, ""));
    form.programs.iter().chain(form.optional).any(|p| match p.attach {
        Attach::Tracepoint(c, n) => c == category && (n == name || c == "syscalls"),
        _ => false,
    })
}

/// How far [`choose_and_attach`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Stop at the first form that attaches (what `run` does).
    FirstThatWorks,
    /// Also try every form after the chosen one, to report which would work
    /// as fallbacks (what `probe` does).
    EveryForm,
}

/// Loads and attaches sensors. `forced` limits every sensor to one form
/// (`--hook-form`). `attach` is the side that touches the kernel, separated
/// so the choice can be tested without it.
pub fn choose_and_attach(
    features: &KernelFeatures,
    forced: Option<HookForm>,
    search: Search,
    mut attach: impl FnMut(&FormSpec) -> Result<Vec<String>, String>,
) -> Vec<SensorChoice> {
    SENSORS
        .iter()
        .map(|sensor| {
            let mut choice = SensorChoice {
                sensor: sensor.name.into(),
                description: sensor.description.into(),
                chosen: None,
                rejected: Vec::new(),
                programs: Vec::new(),
                hooks: Vec::new(),
                degraded: None,
                fallbacks: Vec::new(),
            };
            for form in sensor.forms {
                if forced.is_some_and(|f| f != form.form) {
                    continue;
                }
                if choice.chosen.is_some() && search == Search::FirstThatWorks {
                    break;
                }
                let outcome = precheck(form, features).and_then(|()| attach(form));
                match (outcome, choice.chosen) {
                    (Ok(programs), None) => {
                        choice.chosen = Some(form.form);
                        choice.programs = programs;
                        choice.hooks = form
                            .programs
                            .iter()
                            .chain(form.optional)
                            .filter(|p| choice.programs.iter().any(|name| name == p.program))
                            .map(|p| p.attach.to_string())
                            .collect();
                        choice.degraded = (features.btf.is_err() && !form.without_btf.is_empty())
                            .then(|| form.without_btf.to_owned());
                    }
                    (Err(reason), None) => choice.rejected.push(Rejection { form: form.form, reason }),
                    (Ok(_), Some(_)) => choice.fallbacks.push(Fallback { form: form.form, unavailable: None }),
                    (Err(reason), Some(_)) => {
                        choice.fallbacks.push(Fallback { form: form.form, unavailable: Some(reason) });
                    }
                }
            }
            if let Some(forced) = forced
                && !sensor.forms.iter().any(|f| f.form == forced)
            {
                choice
                    .rejected
                    .push(Rejection { form: forced, reason: format!("{} has no {forced} form", sensor.name) });
            }
            choice
        })
        .collect()
}

/// Loads and attaches every program of `form` into the kernel; on any
/// failure, unloads what it had attached so the next form starts clean.
pub fn attach_form(ebpf: &mut Ebpf, btf: Option<&Btf>, form: &FormSpec) -> Result<Vec<String>, String> {
    let mut done: Vec<&'static str> = Vec::new();
    for spec in form.programs {
        if let Err(err) = attach_program(ebpf, btf, spec) {
            for name in done {
                unload(ebpf, name);
            }
            unload(ebpf, spec.program);
            return Err(format!("{}: {}", spec.attach, describe(&err)));
        }
        done.push(spec.program);
    }
    for spec in form.optional {
        match attach_program(ebpf, btf, spec) {
            Ok(()) => done.push(spec.program),
            Err(err) => {
                tracing::debug!(hook = %spec.attach, reason = describe(&err), "optional hook skipped");
                unload(ebpf, spec.program);
            }
        }
    }
    Ok(done.iter().map(|p| (*p).to_owned()).collect())
}

fn attach_program(ebpf: &mut Ebpf, btf: Option<&Btf>, spec: &ProgramSpec) -> Result<(), ProgramError> {
    let program = ebpf.program_mut(spec.program).ok_or(ProgramError::UnexpectedProgramType)?;
    match spec.attach {
        Attach::Kprobe(function) | Attach::Kretprobe(function) => {
            let p: &mut KProbe = program.try_into()?;
            p.load()?;
            p.attach(function, 0)?;
        }
        Attach::Fentry(function) => {
            let btf = btf.ok_or(ProgramError::UnexpectedProgramType)?;
            let p: &mut FEntry = program.try_into()?;
            p.load(function, btf)?;
            p.attach()?;
        }
        Attach::Fexit(function) => {
            let btf = btf.ok_or(ProgramError::UnexpectedProgramType)?;
            let p: &mut FExit = program.try_into()?;
            p.load(function, btf)?;
            p.attach()?;
        }
        Attach::Tracepoint(category, name) => {
            let p: &mut TracePoint = program.try_into()?;
            p.load()?;
            p.attach(category, name)?;
        }
    }
    Ok(())
}

/// Detaches and unloads one program by name (a failed form's, or every
/// attached one when `run` stops).
pub fn unload(ebpf: &mut Ebpf, name: &str) {
    let Some(program) = ebpf.program_mut(name) else { return };
    let result = match program {
        aya::programs::Program::KProbe(p) => p.unload(),
        aya::programs::Program::FEntry(p) => p.unload(),
        aya::programs::Program::FExit(p) => p.unload(),
        aya::programs::Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    };
    if let Err(err) = result {
        tracing::debug!(program = name, %err, "unload after a failed attach");
    }
}

/// One line a person can act on, e.g. "EPERM from BPF_PROG_LOAD".
pub fn describe(err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            let errno = errno_name(io_error);
            let log = verifier_log.to_string();
            tracing::debug!(%log, "verifier log");
            // The verifier's summary lines come last; the reason is just before them.
            let last = log
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("processed ")
                        && !l.starts_with("verification time")
                        && !l.starts_with("stack depth")
                })
                .unwrap_or("")
                .to_owned();
            if last.is_empty() {
                format!("{errno} from BPF_PROG_LOAD")
            } else {
                format!("{errno} from BPF_PROG_LOAD (verifier: {last})")
            }
        }
        ProgramError::SyscallError(e) => format!("{} from {}", errno_name(&e.io_error), e.call),
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn errno_name(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(524) => "ENOTSUPP".into(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
        Some(libc::E2BIG) => "E2BIG".into(),
        Some(libc::ESRCH) => "ESRCH".into(),
        Some(code) => format!("errno {code} ({err})"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests;
