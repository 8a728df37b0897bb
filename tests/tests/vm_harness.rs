//! Boots each kernel of the VM matrix once and checks that the guest offers
//! what kscope's VM tests rely on: the kprobe PMU, kernel BTF, an uninlined
//! `tcp_connect`, BPF stats, a sane clock, working loopback TCP, files copied
//! in with their modes, and the script's exit code coming back out.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kscope_tests::vm::{GUEST_HOSTNAME, GuestFile, GuestKernel, guest_kernels, run_in_guest};

const SERVED: &str = "kscope vm harness: served over loopback\n";

const SCRIPT: &str = r#"
echo "release: $(uname -r)"
echo "hostname: $(hostname)"
for f in /sys/bus/event_source/devices/kprobe/type /sys/kernel/btf/vmlinux /proc/sys/kernel/bpf_stats_enabled; do
    if [ -e "$f" ]; then echo "present: $f"; else echo "MISSING: $f"; fi
done
echo "kallsyms tcp_connect: $(grep -cw tcp_connect /proc/kallsyms)"
echo "modes: $(stat -c %a /srv/www/x) $(stat -c %a /kscope/served-check)"
busybox httpd -p 127.0.0.1:8080 -h /srv/www
i=0
until body=$(wget -q -O- http://127.0.0.1:8080/x 2>&1); do
    i=$((i+1)); [ $i -ge 50 ] && break; sleep 0.1
done
printf 'http: %s\n' "$body"
/kscope/served-check
echo "epoch: $(date +%s)"
printf 'stderr is captured\n' >&2
printf 'no trailing newline'
exit 3
"#;

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

fn kernel(label: &str) -> GuestKernel {
    guest_kernels().into_iter().find(|k| k.label == label).unwrap_or_else(|| panic!("no guest kernel labelled {label}"))
}

fn boot_and_check(label: &str) {
    let vm_dir = workspace_root().join("target").join("vm");
    let kernel = kernel(label);
    let vmlinuz = kernel.fetch(&vm_dir.join("kernels")).unwrap_or_else(|e| panic!("fetching {label}: {e:#}"));
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_else(|| panic!("unexpected kernel file name {}", vmlinuz.display()))
        .to_owned();

    let work = vm_dir.join("work");
    let host_dir = work.join(format!("harness-{label}-{}", std::process::id()));
    fs::create_dir_all(&host_dir).expect("create host dir");
    let served = host_dir.join("x");
    fs::write(&served, SERVED).expect("write served file");
    fs::set_permissions(&served, fs::Permissions::from_mode(0o640)).expect("chmod");
    let check = host_dir.join("served-check");
    fs::write(&check, "#!/bin/sh\necho executable: yes\n").expect("write check script");
    fs::set_permissions(&check, fs::Permissions::from_mode(0o750)).expect("chmod");
    let files = [
        GuestFile { host: served, guest: "/srv/www/x".into() },
        GuestFile { host: check, guest: "/kscope/served-check".into() },
    ];

    let before = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let run = run_in_guest(&vmlinuz, &files, SCRIPT, &work, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("booting {label}: {e:#}"));
    let after = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
    let _ = fs::remove_dir_all(&host_dir);

    // The guest clock is checked against the host's; the rest is exact.
    let (rest, epoch_line) =
        run.output.split_once("\nepoch: ").unwrap_or_else(|| panic!("no epoch line in guest output:\n{}", run.output));
    let (epoch, tail) = epoch_line.split_once('\n').expect("line after epoch");
    let epoch: u64 = epoch.parse().expect("epoch is a number");
    assert!(
        (before.saturating_sub(2)..=after + 2).contains(&epoch),
        "guest clock {epoch} outside host window {before}..={after}"
    );
    let expected = format!(
        "release: {release}\n\
         hostname: {GUEST_HOSTNAME}\n\
         present: /sys/bus/event_source/devices/kprobe/type\n\
         present: /sys/kernel/btf/vmlinux\n\
         present: /proc/sys/kernel/bpf_stats_enabled\n\
         kallsyms tcp_connect: 1\n\
         modes: 640 750\n\
         http: {served}\n\
         executable: yes",
        served = SERVED.trim_end()
    );
    assert_eq!(rest, expected, "guest output:\n{}", run.output);
    assert_eq!(tail, "stderr is captured\nno trailing newline");
    assert_eq!(run.exit_code, 3, "script exit code");
    println!("vm {label} ({release}): ok in {:.1}s", run.boot_and_run.as_secs_f64());
}

#[test]
fn vm_boots_debian_6_1() {
    boot_and_check("debian-6.1");
}

#[test]
fn vm_boots_debian_6_12() {
    boot_and_check("debian-6.12");
}
