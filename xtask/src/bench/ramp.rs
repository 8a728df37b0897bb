//! Part 3 of the bench: each load family in rising steps under kscope until
//! it loses events.

use std::time::Duration;

use anyhow::{Context as _, anyhow};

use super::{
    HostContext,
    load::{Load, LoadResult},
    summary::SummaryFigures as _,
    workloads::{KscopeMeasure, events_per_s, phase_line, run_phase},
};

#[derive(Debug, Clone)]
pub(super) struct RampStep {
    pub(super) family: &'static str,
    pub(super) load: Load,
    pub(super) result: LoadResult,
    pub(super) kscope: KscopeMeasure,
}

impl RampStep {
    pub(super) fn events_per_s(&self) -> f64 {
        events_per_s(&self.kscope, self.result.wall)
    }

    /// Every way the ledger can say an event did not make it.
    pub(super) fn lossless(&self) -> bool {
        self.kscope.summary.lossless()
    }
}

/// Each family goes up in steps until kscope loses events (or the steps end);
/// on 2 CPUs the generators compete with kscope, which is part of the answer.
pub(super) fn measure_ramp(ctx: &HostContext<'_>, duration: Duration) -> anyhow::Result<Vec<RampStep>> {
    let families: [(&str, Vec<Load>); 3] = [
        ("spawn", [1, 2, 4, 8, 16].into_iter().map(|workers| Load::Spawn { workers }).collect()),
        (
            "wrk",
            [(1, 8), (2, 32), (2, 128), (2, 256)]
                .into_iter()
                .map(|(threads, connections)| Load::Wrk { threads, connections })
                .collect(),
        ),
        (
            "mixed",
            [(32, 2), (64, 4), (128, 16)]
                .into_iter()
                .map(|(connections, workers)| Load::Mixed { connections, workers })
                .collect(),
        ),
    ];
    let mut steps = Vec::new();
    for (family, loads) in families {
        for load in loads {
            println!("bench: ramp {} ...", load.label());
            let phase =
                run_phase(ctx, load, duration, true, 0).with_context(|| format!("ramp step {}", load.label()))?;
            println!("bench:   {}", phase_line(&phase));
            let kscope = phase.kscope.ok_or_else(|| anyhow!("ramp phase ran without kscope"))?;
            let step = RampStep { family, load, result: phase.load, kscope };
            let lost = !step.lossless();
            steps.push(step);
            if lost {
                break;
            }
        }
    }
    Ok(steps)
}
