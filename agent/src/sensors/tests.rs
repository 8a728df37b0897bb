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
        kprobe_functions: wanted.functions.iter().map(|f| (f.clone(), Ok(()))).collect(),
        functions: Vec::new(),
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

/// The order the benchmark and the stability argument give (see each
/// sensor's doc comment).
#[test]
fn preference_orders_are_the_measured_ones() {
    let order = |s: &SensorSpec| s.forms.iter().map(|f| f.form).collect::<Vec<_>>();
    let expected = vec![HookForm::Tracepoint, HookForm::Fentry, HookForm::Kprobe];
    assert_eq!(order(&process::SENSOR), expected);
    assert_eq!(order(&tcp::SENSOR), expected);
    assert_eq!(order(&socket_data::SENSOR), vec![HookForm::Fentry, HookForm::Kprobe, HookForm::Tracepoint]);
    assert_eq!(order(&retransmit::SENSOR), expected);
    assert_eq!(order(&drops::SENSOR), vec![HookForm::Tracepoint]);
}

/// The sensor with a tracepoint form only.
fn tracepoint_only(name: &str) -> bool {
    name == drops::SENSOR.name
}

/// The sensors whose tracepoint form comes first.
fn tracepoint_first(name: &str) -> bool {
    name != socket_data::SENSOR.name
}

#[test]
fn kernel_without_tracefs_falls_back_to_fentry_then_kprobe() {
    let mut features = full_kernel();
    features.tracefs = Err("tracefs is not mounted".into());
    let result = choose_and_attach(&features, None, Search::FirstThatWorks, |form| match form.form {
        HookForm::Fentry => Err("fexit:bprm_execve: EPERM from BPF_PROG_LOAD".into()),
        _ => Ok(vec!["p".into()]),
    });
    assert_eq!(result.len(), SENSORS.len());
    for choice in result {
        if tracepoint_only(&choice.sensor) {
            assert_eq!(choice.chosen, None);
            assert_eq!(
                choice.rejected,
                vec![Rejection { form: HookForm::Tracepoint, reason: "tracefs is not mounted".into() }]
            );
            continue;
        }
        assert_eq!(choice.chosen, Some(HookForm::Kprobe), "{}", choice.sensor);
        let fentry = Rejection { form: HookForm::Fentry, reason: "fexit:bprm_execve: EPERM from BPF_PROG_LOAD".into() };
        let expected = if tracepoint_first(&choice.sensor) {
            vec![Rejection { form: HookForm::Tracepoint, reason: "tracefs is not mounted".into() }, fentry]
        } else {
            vec![fentry]
        };
        assert_eq!(choice.rejected, expected);
        assert_eq!(choice.programs, vec!["p".to_owned()]);
    }
}

#[test]
fn a_missing_hook_rejects_only_the_sensor_that_needs_it() {
    let mut features = full_kernel();
    features.tracepoints.remove("sock:inet_sock_set_state");
    features.btf_functions.remove("inet_csk_accept");
    let result = choices(&features, None);
    assert_eq!(result[0], (Some(HookForm::Tracepoint), vec![]));
    let tcp = &result[1];
    assert_eq!(tcp.0, Some(HookForm::Kprobe));
    assert_eq!(
        tcp.1.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
        vec![
            "tracepoint sock:inet_sock_set_state does not exist",
            "inet_csk_accept is not a function in the kernel's BTF"
        ]
    );
}

#[test]
fn no_btf_leaves_tracepoints_degraded() {
    let mut features = full_kernel();
    features.btf = Err("no kernel BTF".into());
    features.btf_functions = BTreeSet::new();
    features.offset_errors = vec!["no kernel BTF".into()];
    let result = choose_and_attach(&features, None, Search::EveryForm, |_| Ok(Vec::new()));
    // Socket data reads sockets through struct offsets on every form.
    let data = result.iter().find(|c| c.sensor == socket_data::SENSOR.name).unwrap();
    assert_eq!(data.chosen, None);
    assert_eq!(
        data.rejected.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
        vec![
            "fentry needs kernel BTF: no kernel BTF",
            "needs kernel struct offsets from BTF: no kernel BTF",
            "needs kernel struct offsets from BTF: no kernel BTF"
        ]
    );
    let drops = result.iter().find(|c| tracepoint_only(&c.sensor)).unwrap();
    assert_eq!((drops.chosen, drops.degraded.as_deref()), (Some(HookForm::Tracepoint), None));
    assert!(drops.rejected.is_empty() && drops.fallbacks.is_empty());
    for choice in result.iter().filter(|c| tracepoint_first(&c.sensor) && !tracepoint_only(&c.sensor)) {
        assert_eq!(choice.chosen, Some(HookForm::Tracepoint));
        assert!(choice.rejected.is_empty());
        assert!(choice.degraded.as_deref().is_some_and(|d| d.starts_with("without kernel BTF")));
        assert_eq!(
            choice.fallbacks,
            vec![
                Fallback { form: HookForm::Fentry, unavailable: Some("fentry needs kernel BTF: no kernel BTF".into()) },
                Fallback {
                    form: HookForm::Kprobe,
                    unavailable: Some("needs kernel struct offsets from BTF: no kernel BTF".into())
                },
            ]
        );
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
        HookForm::Tracepoint => Err("tracepoint:sock:inet_sock_set_state: EINVAL from BPF_PROG_LOAD".into()),
        _ => Ok(Vec::new()),
    });
    for choice in &result {
        let want = if tracepoint_only(&choice.sensor) { None } else { Some(HookForm::Fentry) };
        assert_eq!(choice.chosen, want, "{}", choice.sensor);
    }
    assert!(!result.iter().any(|c| c.rejected.iter().any(|r| r.form == HookForm::Fentry)));
}

#[test]
fn wanted_lists_every_hook_once() {
    let wanted = wanted();
    for f in ["bprm_execve", "do_exit", "tcp_connect", "tcp_set_state", "inet_csk_accept", "tcp_retransmit_skb"] {
        assert!(wanted.functions.contains(f), "{f}");
    }
    assert!(wanted.tracepoints.contains(&("sock".to_owned(), "inet_sock_set_state".to_owned())));
    for f in ["tcp_sendmsg", "tcp_recvmsg", "udp_sendmsg", "udp_recvmsg", "udpv6_sendmsg", "udpv6_recvmsg"] {
        assert!(wanted.functions.contains(f), "{f}");
    }
    // process 2, tcp 3, socket data 11 syscalls × enter and exit,
    // retransmit 1, drops 1.
    assert_eq!(wanted.tracepoints.len(), 5 + 22 + 2);
    assert!(wanted.tracepoints.contains(&("skb".to_owned(), "kfree_skb".to_owned())));
}

#[test]
fn probe_reports_every_fallback() {
    // This machine: no kprobes, fentry refused at load.
    let mut features = full_kernel();
    features.kprobes = Err("CONFIG_KPROBES not set".into());
    let result = choose_and_attach(&features, None, Search::EveryForm, |form| match form.form {
        HookForm::Fentry => Err("fentry:tcp_connect: EPERM from BPF_PROG_LOAD".into()),
        _ => Ok(Vec::new()),
    });
    for choice in result {
        assert_eq!(choice.chosen, Some(HookForm::Tracepoint));
        if tracepoint_only(&choice.sensor) {
            assert!(choice.rejected.is_empty() && choice.fallbacks.is_empty());
            continue;
        }
        if !tracepoint_first(&choice.sensor) {
            assert_eq!(choice.rejected.len(), 2, "{choice:?}");
            assert!(choice.fallbacks.is_empty());
            continue;
        }
        assert_eq!(
            choice.fallbacks,
            vec![
                Fallback {
                    form: HookForm::Fentry,
                    unavailable: Some("fentry:tcp_connect: EPERM from BPF_PROG_LOAD".into())
                },
                Fallback { form: HookForm::Kprobe, unavailable: Some("CONFIG_KPROBES not set".into()) },
            ]
        );
    }
}

#[test]
fn run_stops_at_the_first_form_that_works() {
    let mut tried = Vec::new();
    choose_and_attach(&full_kernel(), None, Search::FirstThatWorks, |form| {
        tried.push(form.form);
        Ok(Vec::new())
    });
    assert_eq!(
        tried,
        vec![HookForm::Tracepoint, HookForm::Tracepoint, HookForm::Fentry, HookForm::Tracepoint, HookForm::Tracepoint]
    );
}

/// A record layout kscope cannot read costs only the tracepoint forms that
/// read it; `syscalls:*` share one layout.
#[test]
fn a_layout_error_rejects_only_the_forms_that_read_that_record() {
    let mut features = full_kernel();
    features.layout_errors = vec![("skb:kfree_skb".into(), "tracepoint skb:kfree_skb has no field location".into())];
    let result = choose_and_attach(&features, None, Search::FirstThatWorks, |_| Ok(Vec::new()));
    for choice in &result {
        if tracepoint_only(&choice.sensor) {
            assert_eq!(choice.chosen, None);
            assert_eq!(
                choice.rejected[0].reason,
                "tracepoint record layout: tracepoint skb:kfree_skb has no field location"
            );
        } else {
            assert_eq!(choice.chosen, Some(choice_first_form(&choice.sensor)), "{}", choice.sensor);
        }
    }
    features.layout_errors = vec![("syscalls:sys_enter_read".into(), "no field fd".into())];
    let result = choose_and_attach(&features, None, Search::EveryForm, |_| Ok(Vec::new()));
    let data = result.iter().find(|c| c.sensor == socket_data::SENSOR.name).unwrap();
    assert_eq!(
        data.fallbacks.last(),
        Some(&Fallback {
            form: HookForm::Tracepoint,
            unavailable: Some("tracepoint record layout: no field fd".into())
        })
    );
    // tcp reads sys_exit_accept4's record, a syscall record too.
    let tcp = result.iter().find(|c| c.sensor == tcp::SENSOR.name).unwrap();
    assert_eq!(tcp.chosen, Some(HookForm::Fentry));
    let process = result.iter().find(|c| c.sensor == process::SENSOR.name).unwrap();
    assert_eq!(process.chosen, Some(HookForm::Tracepoint));
}

fn choice_first_form(sensor: &str) -> HookForm {
    SENSORS.iter().find(|s| s.name == sensor).map(|s| s.forms[0].form).unwrap()
}
