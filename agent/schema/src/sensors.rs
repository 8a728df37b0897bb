//! Which hook form each sensor got and why not a better one: the first line
//! of `kscope run --output json` (`sensors`), and `kscope probe --output
//! json` (`probe`, with the kernel functions the kprobe and fentry forms
//! hook).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::HookForm;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorsRecord<'a> {
    pub time_unix_nano: u64,
    /// The kernel's release (`uname -r`).
    pub kernel: Cow<'a, str>,
    pub sensors: Vec<SensorChoice>,
}

impl SensorsRecord<'_> {
    /// The choice made for one sensor, by name.
    pub fn sensor(&self, name: &str) -> Option<&SensorChoice> {
        self.sensors.iter().find(|s| s.sensor == name)
    }
}

/// `kscope probe --output json`: one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "probe")]
pub struct ProbeRecord {
    pub kernel: String,
    /// Every form of every sensor tried (`fallbacks` filled).
    pub sensors: Vec<SensorChoice>,
    pub functions: Vec<FunctionReport>,
}

/// The outcome for one sensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorChoice {
    pub sensor: Cow<'static, str>,
    pub description: Cow<'static, str>,
    /// None when no form works here.
    pub chosen: Option<HookForm>,
    /// Better forms than the chosen one (or all, if none was chosen), each
    /// with the reason it was not used.
    pub rejected: Vec<Rejection>,
    /// Programs attached for the chosen form, by name.
    pub programs: Vec<String>,
    /// Where they attached, e.g. `kprobe:tcp_connect`.
    pub hooks: Vec<String>,
    /// What the chosen form lacks on this kernel, if anything.
    pub degraded: Option<String>,
    /// Forms after the chosen one and whether they would work (`probe` only).
    pub fallbacks: Vec<Fallback>,
}

/// Why a form was not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub form: HookForm,
    pub reason: String,
}

/// A form the sensor could fall back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fallback {
    pub form: HookForm,
    /// `None` when it loaded and attached; else why not.
    pub unavailable: Option<String>,
}

/// One kernel function a kprobe or fentry form hooks, as this kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionReport {
    pub function: String,
    /// Its names in kallsyms: itself and compiler clones (`.isra.0`,
    /// `.constprop.0`, `.cold`); empty when inlined or absent.
    pub kallsyms_names: Vec<String>,
    /// Whether ftrace's `available_filter_functions` lists the plain name;
    /// `None` when the list cannot be read.
    pub traceable: Option<bool>,
    /// Whether the kernel's BTF has it (an fentry/fexit target).
    pub btf: bool,
    /// `None` when a kprobe can go on the plain name, else why not.
    pub kprobe_unusable: Option<String>,
}
