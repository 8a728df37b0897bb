//! Head sampling of traces, configured as the OpenTelemetry SDKs are
//! (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
//!
//! A trace's decision is made once, where kscope sees it start: a span with
//! a received `traceparent` follows that header's sampled flag (parent-based
//! samplers), a span kscope makes the root of a trace is decided by its
//! trace id, and every span linked under a local parent shares its root's
//! decision. The trace-id ratio test is the one the Go and Java SDKs use
//! (the trace id's last 8 bytes, shifted right by one, below
//! `ratio × 2⁶³`), so kscope and an instrumented service at the same ratio
//! keep the same traces. Metrics are not sampled: every request counts.

use std::fmt;

/// The variable naming the sampler.
pub const SAMPLER_VAR: &str = "OTEL_TRACES_SAMPLER";
/// The variable holding the sampler's argument (the ratio).
pub const SAMPLER_ARG_VAR: &str = "OTEL_TRACES_SAMPLER_ARG";

/// The samplers the SDK environment specification names that kscope
/// implements (`jaeger_remote` and `xray` need a remote service).
const NAMES: &str = "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, \
                     parentbased_traceidratio";

/// How a trace whose start kscope sees is decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces, by trace id.
    TraceIdRatio(Ratio),
}

/// A sampler as the SDKs define it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    root: RootSampler,
    /// Whether a received `traceparent`'s sampled flag decides (the
    /// `parentbased_*` samplers); otherwise the root sampler decides every
    /// trace, the remote ones too.
    parent_based: bool,
}

impl Default for Sampler {
    /// The SDKs' default: `parentbased_always_on`.
    fn default() -> Self {
        Self { root: RootSampler::AlwaysOn, parent_based: true }
    }
}

/// A probability in [0, 1], kept as the SDKs' upper bound on the trace id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratio {
    value: f64,
    upper_bound: u64,
}

impl Ratio {
    /// The SDKs' default argument.
    pub const ALL: Self = Self { value: 1.0, upper_bound: 1 << 63 };

    pub fn new(value: f64) -> Option<Self> {
        if !(0.0..=1.0).contains(&value) {
            return None;
        }
        // As Go's TraceIDRatioBased: 2^63 × ratio, compared with the trace
        // id's low 63 bits. Saturating: 1.0 keeps every trace.
        let upper_bound = (value * (1u64 << 63) as f64) as u64;
        Some(Self { value, upper_bound })
    }

    pub fn value(self) -> f64 {
        self.value
    }

    fn keeps(self, trace_id: &[u8; 16]) -> bool {
        if self.value >= 1.0 {
            return true;
        }
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id[8..]);
        (u64::from_be_bytes(low) >> 1) < self.upper_bound
    }
}

/// Where a trace kscope sees starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceStart {
    /// Under a received `traceparent`, with its sampled flag.
    Remote { sampled: bool },
    /// At a span kscope made the root.
    Root,
}

/// What the user set that kscope cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error("{SAMPLER_VAR}={0:?}: not a sampler kscope knows (expected one of {NAMES})")]
    UnknownSampler(String),
    #[error("{SAMPLER_ARG_VAR}={0:?}: expected a probability from 0 to 1, e.g. 0.25")]
    BadRatio(String),
}

impl Sampler {
    /// The sampler named by `name` with argument `arg` (both as the
    /// variables hold them; empty counts as unset). Unlike the SDKs, which
    /// warn and keep their default, an unknown name or a ratio out of range
    /// is an error: an agent that silently exports every trace when asked
    /// to keep a tenth is the more expensive surprise.
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Self, SamplerError> {
        let name = name.map(str::trim).filter(|n| !n.is_empty());
        let arg = arg.map(str::trim).filter(|a| !a.is_empty());
        let ratio = || -> Result<Ratio, SamplerError> {
            match arg {
                None => Ok(Ratio::ALL),
                Some(a) => {
                    a.parse::<f64>().ok().and_then(Ratio::new).ok_or_else(|| SamplerError::BadRatio(a.to_owned()))
                }
            }
        };
        let (root, parent_based) = match name.map(str::to_ascii_lowercase).as_deref() {
            None | Some("parentbased_always_on") => (RootSampler::AlwaysOn, true),
            Some("always_on") => (RootSampler::AlwaysOn, false),
            Some("always_off") => (RootSampler::AlwaysOff, false),
            Some("traceidratio") => (RootSampler::TraceIdRatio(ratio()?), false),
            Some("parentbased_always_off") => (RootSampler::AlwaysOff, true),
            Some("parentbased_traceidratio") => (RootSampler::TraceIdRatio(ratio()?), true),
            Some(_) => return Err(SamplerError::UnknownSampler(name.unwrap_or_default().to_owned())),
        };
        Ok(Self { root, parent_based })
    }

    /// The sampler the environment configures (`lookup` reads a variable).
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SamplerError> {
        Self::parse(lookup(SAMPLER_VAR).as_deref(), lookup(SAMPLER_ARG_VAR).as_deref())
    }

    /// Whether the trace starting at `start` with id `trace_id` is kept.
    pub fn keeps(&self, start: TraceStart, trace_id: &[u8; 16]) -> bool {
        match (start, self.parent_based) {
            (TraceStart::Remote { sampled }, true) => sampled,
            _ => match self.root {
                RootSampler::AlwaysOn => true,
                RootSampler::AlwaysOff => false,
                RootSampler::TraceIdRatio(ratio) => ratio.keeps(trace_id),
            },
        }
    }

    /// Whether every trace is kept whatever its start (the default, with
    /// no `traceparent` saying otherwise, keeps all but unsampled remotes).
    pub fn keeps_all(&self) -> bool {
        !self.parent_based && self.root == RootSampler::AlwaysOn
    }
}

impl fmt::Display for Sampler {
    /// The SDK name and argument, as the summary and `--help` show them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = if self.parent_based { "parentbased_" } else { "" };
        match self.root {
            RootSampler::AlwaysOn => write!(f, "{prefix}always_on"),
            RootSampler::AlwaysOff => write!(f, "{prefix}always_off"),
            RootSampler::TraceIdRatio(r) => write!(f, "{prefix}traceidratio({})", r.value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u64) -> [u8; 16] {
        let mut id = [0xabu8; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        id
    }

    #[test]
    fn default_is_parent_based_always_on() {
        let s = Sampler::parse(None, None).unwrap();
        assert_eq!(s, Sampler::default());
        assert!(s.keeps(TraceStart::Root, &id(u64::MAX)));
        assert!(s.keeps(TraceStart::Remote { sampled: true }, &id(0)));
        assert!(!s.keeps(TraceStart::Remote { sampled: false }, &id(0)));
        assert_eq!(Sampler::parse(Some(" "), Some("")).unwrap(), Sampler::default());
    }

    #[test]
    fn ratio_compares_the_low_63_bits_as_the_go_sdk() {
        let s = Sampler::parse(Some("traceidratio"), Some("0.25")).unwrap();
        // 2^63 × 0.25 = 2^61; the id's low 8 bytes are shifted right by one.
        let bound = 1u64 << 61;
        assert!(s.keeps(TraceStart::Root, &id((bound - 1) << 1)));
        assert!(!s.keeps(TraceStart::Root, &id(bound << 1)));
        // Not parent-based: a sampled remote parent does not override.
        assert!(!s.keeps(TraceStart::Remote { sampled: true }, &id(u64::MAX)));
        // Over many ids, about the ratio.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let kept = (0..100_000)
            .filter(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.keeps(TraceStart::Root, &id(x))
            })
            .count();
        assert!((23_500..26_500).contains(&kept), "{kept}");
    }

    #[test]
    fn parent_based_ratio_follows_remote_flags_and_decides_roots() {
        let s = Sampler::parse(Some("parentbased_traceidratio"), Some("0")).unwrap();
        assert!(s.keeps(TraceStart::Remote { sampled: true }, &id(u64::MAX)));
        assert!(!s.keeps(TraceStart::Remote { sampled: false }, &id(0)));
        assert!(!s.keeps(TraceStart::Root, &id(0)));
        let all = Sampler::parse(Some("parentbased_traceidratio"), None).unwrap();
        assert!(all.keeps(TraceStart::Root, &id(u64::MAX)));
        assert_eq!(all.to_string(), "parentbased_traceidratio(1)");
    }

    #[test]
    fn always_on_and_off() {
        let on = Sampler::parse(Some("ALWAYS_ON"), None).unwrap();
        assert!(on.keeps_all());
        assert!(on.keeps(TraceStart::Remote { sampled: false }, &id(0)));
        let off = Sampler::parse(Some("always_off"), None).unwrap();
        assert!(!off.keeps(TraceStart::Remote { sampled: true }, &id(0)));
        let pb_off = Sampler::parse(Some("parentbased_always_off"), None).unwrap();
        assert!(pb_off.keeps(TraceStart::Remote { sampled: true }, &id(0)));
        assert!(!pb_off.keeps(TraceStart::Root, &id(0)));
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let err = Sampler::parse(Some("jaeger_remote"), None).unwrap_err();
        assert!(err.to_string().contains("OTEL_TRACES_SAMPLER=\"jaeger_remote\""), "{err}");
        assert!(err.to_string().contains("parentbased_traceidratio"), "{err}");
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            let err = Sampler::parse(Some("traceidratio"), Some(bad)).unwrap_err();
            assert_eq!(err, SamplerError::BadRatio(bad.into()));
        }
        // The argument of a sampler that takes none is not read.
        assert!(Sampler::parse(Some("always_on"), Some("half")).is_ok());
    }

    #[test]
    fn from_env_reads_both_variables() {
        let env = |name: &str| match name {
            SAMPLER_VAR => Some("parentbased_traceidratio".to_owned()),
            SAMPLER_ARG_VAR => Some("0.5".to_owned()),
            _ => None,
        };
        assert_eq!(Sampler::from_env(env).unwrap().to_string(), "parentbased_traceidratio(0.5)");
    }
}
