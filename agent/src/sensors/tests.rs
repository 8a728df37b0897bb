use std::collections::BTreeSet;

use kscope_common::{KernelOffsets, TracepointLayout};

use super::*;

/// A kernel with everything, for tests to take things away from.
fn full_kernel() -> KernelFeatures {
    let wanted = wanted();
    KernelFeatures {
        release: "test".into(),
        kprobes: Ok(()),
        tracefs: Ok(()),
        tracepoints: wanted.tracepoints.iter().map(|(c, n)| format!("{c}:{n}")).collect(),
        btf: Ok(()),
        btf_functions: wanted.functions.clone(),
        kallsyms_functions: wanted.functions.clone(),
        offsets: KernelOffsets::missing(),
        offset_errors: Vec::new(),
        tracepoint_layout: TracepointLayout::missing(),
        layout_errors: Vec::new(),
    }
}

fn choices(features: &KernelFeatures, forced: Option<HookForm>) -> Vec<(Option<HookForm>, Vec<Rejection>)> {
    choose_and_attach(features, forced, Search::FirstThatWorks, |_| Ok(Vec::new()))
        .into_iter()
        .map(|c| (c.chosen, c.rejected))
        .collect()
}

#[test]
fn every_sensor_takes_its_first_form_when_all_work() {
    let result = choices(&full_kernel(), None);
    for (sensor, (chosen, rejected)) in SENSORS.iter().zip(result) {
        assert_eq!(chosen, Some(sensor.forms[0].form), "{}", sensor.name);
        assert!(rejected.is_empty());
    }
}

/// The order `cargo xtask bench` measured (see each sensor's doc comment).
#[test]
fn preference_orders_are_the_measured_ones() {
    let order = |s: &SensorSpec| s.forms.iter().map(|f| f.form).collect::<Vec<_>>();
    assert_eq!(order(&process::SENSOR), vec![HookForm::Fentry, HookForm::Tracepoint, HookForm::Kprobe]);
    assert_eq!(order(&tcp::SENSOR), vec![HookForm::Fentry, HookForm::Kprobe, HookForm::Tracepoint]);
}

#[test]
fn kernel_without_kprobes_and_fentry_falls_back_to_tracepoints() {
    // This machine: CONFIG_KPROBES off, fentry refused at load.
    let mut features = full_kernel();
    features.kprobes = Err("CONFIG_KPROBES not set".into());
    let result = choose_and_attach(&features, None, Search::FirstThatWorks, |form| match form.form {
        HookForm::Fentry => Err("fexit:bprm_execve: EPERM from BPF_PROG_LOAD".into()),
        _ => Ok(vec!["p".into()]),
    });
    assert_eq!(result.len(), SENSORS.len());
    let fentry = Rejection { form: HookForm::Fentry, reason: "fexit:bprm_execve: EPERM from BPF_PROG_LOAD".into() };
    let kprobe = Rejection { form: HookForm::Kprobe, reason: "CONFIG_KPROBES not set".into() };
    for choice in &result {
        assert_eq!(choice.chosen, Some(HookForm::Tracepoint), "{}", choice.sensor);
        assert_eq!(choice.programs, vec!["p".to_owned()]);
    }
    // process prefers tracepoint to kprobe, so kprobe is never tried there.
    assert_eq!(result[0].rejected, vec![fentry.clone()]);
    assert_eq!(result[1].rejected, vec![fentry, kprobe]);
}

#[test]
fn a_missing_function_rejects_only_the_sensor_that_needs_it() {
    let mut features = full_kernel();
    features.btf_functions.remove("inet_csk_accept");
    let result = choices(&features, None);
    assert_eq!(result[0], (Some(HookForm::Fentry), vec![]));
    let tcp = &result[1];
    assert_eq!(tcp.0, Some(HookForm::Kprobe));
    assert_eq!(tcp.1[0].reason, "inet_csk_accept is not a function in the kernel's BTF");
}

#[test]
fn no_btf_leaves_tracepoints_degraded() {
    let mut features = full_kernel();
    features.btf = Err("no kernel BTF".into());
    features.btf_functions = BTreeSet::new();
    features.offset_errors = vec!["no kernel BTF".into()];
    let result = choose_and_attach(&features, None, Search::FirstThatWorks, |_| Ok(Vec::new()));
    let reasons = |i: usize| result[i].rejected.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>();
    assert_eq!(reasons(0), vec!["fentry needs kernel BTF: no kernel BTF"]);
    assert_eq!(
        reasons(1),
        vec!["fentry needs kernel BTF: no kernel BTF", "needs kernel struct offsets from BTF: no kernel BTF"]
    );
    for choice in &result {
        assert_eq!(choice.chosen, Some(HookForm::Tracepoint));
        assert!(choice.degraded.as_deref().is_some_and(|d| d.starts_with("without kernel BTF")));
    }
}

#[test]
fn forced_form_is_the_only_one_tried() {
    let mut features = full_kernel();
    features.tracefs = Err("tracefs is not mounted".into());
    let mut tried = Vec::new();
    let result = choose_and_attach(&features, Some(HookForm::Tracepoint), Search::FirstThatWorks, |form| {
        tried.push(form.form);
        Ok(Vec::new())
    });
    assert!(tried.is_empty(), "precheck must stop before touching the kernel");
    for choice in result {
        assert_eq!(choice.chosen, None);
        assert_eq!(
            choice.rejected,
            vec![Rejection { form: HookForm::Tracepoint, reason: "tracefs is not mounted".into() }]
        );
    }
}

#[test]
fn attach_failure_moves_on_to_the_next_form() {
    let features = full_kernel();
    let result = choose_and_attach(&features, None, Search::FirstThatWorks, |form| match form.form {
        HookForm::Fentry => Err("fentry:tcp_connect: EPERM from BPF_PROG_LOAD".into()),
        _ => Ok(Vec::new()),
    });
    // Each sensor moves to its own second choice.
    assert_eq!(result[0].chosen, Some(HookForm::Tracepoint));
    assert_eq!(result[1].chosen, Some(HookForm::Kprobe));
}

#[test]
fn wanted_lists_every_hook_once() {
    let wanted = wanted();
    for f in ["bprm_execve", "do_exit", "tcp_connect", "tcp_set_state", "inet_csk_accept"] {
        assert!(wanted.functions.contains(f), "{f}");
    }
    assert!(wanted.tracepoints.contains(&("sock".to_owned(), "inet_sock_set_state".to_owned())));
    assert_eq!(wanted.tracepoints.len(), 5);
}

#[test]
fn probe_reports_every_fallback() {
    let features = full_kernel();
    let result = choose_and_attach(&features, None, Search::EveryForm, |form| match form.form {
        HookForm::Kprobe => Err("kprobe:tcp_connect: EINVAL from perf_event_open".into()),
        _ => Ok(Vec::new()),
    });
    let kprobe_failed = Fallback {
        form: HookForm::Kprobe,
        unavailable: Some("kprobe:tcp_connect: EINVAL from perf_event_open".into()),
    };
    let tracepoint = Fallback { form: HookForm::Tracepoint, unavailable: None };
    for choice in &result {
        assert_eq!(choice.chosen, Some(HookForm::Fentry));
    }
    assert_eq!(result[0].fallbacks, vec![tracepoint.clone(), kprobe_failed.clone()]);
    assert_eq!(result[1].fallbacks, vec![kprobe_failed, tracepoint]);
}

#[test]
fn run_stops_at_the_first_form_that_works() {
    let mut tried = Vec::new();
    choose_and_attach(&full_kernel(), None, Search::FirstThatWorks, |form| {
        tried.push(form.form);
        Ok(Vec::new())
    });
    assert_eq!(tried, vec![HookForm::Fentry, HookForm::Fentry]);
}
