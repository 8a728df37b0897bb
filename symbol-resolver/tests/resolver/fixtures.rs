//! Test inputs built at test time from the sources next to this file, once per test run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The built files.
pub struct Fixtures {
    /// Debug root holding `.build-id/xx/yyyy.debug` for `c_buildid`.
    pub debug_root: PathBuf,
    /// C, PIE, with symbols and DWARF.
    pub c_pie: PathBuf,
    /// C, non-PIE, with symbols and DWARF.
    pub c_nopie: PathBuf,
    /// `c_pie` stripped; its debug file is under `debug_root` by build-id.
    pub c_buildid: PathBuf,
    /// C without build-id, stripped, `.gnu_debuglink` to `.debug/c_link.debug` next to it.
    pub c_link: PathBuf,
    /// Unstripped original of `c_link` (what the tools read).
    pub c_link_full: PathBuf,
    /// Like `c_link` but its debug file was modified after linking: CRC mismatch.
    pub c_badcrc: PathBuf,
    /// Rust, PIE, `-C debuginfo=2`.
    pub rust: PathBuf,
    /// The same with v0 symbol mangling.
    pub rust_v0: PathBuf,
    /// C++.
    pub cpp: PathBuf,
    /// The fake vmlinux (non-PIE C with `_stext`).
    pub vmlinux: PathBuf,
    /// The BPF loader helper.
    pub bpf_loader: PathBuf,
    /// A scratch directory for tests' own files.
    pub scratch: PathBuf,
}

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resolver").join(name)
}

/// Runs a command, failing the test with its output if it fails; returns stdout.
pub fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn gcc(out: &Path, src: &str, args: &[&str]) {
    run(Command::new("gcc").args(["-g", "-O2", "-o"]).arg(out).arg(source(src)).args(args));
}

/// The GNU build-id of a file, as `readelf -n` prints it.
pub fn build_id(file: &Path) -> String {
    let notes = run(Command::new("readelf").arg("-n").arg(file));
    notes
        .lines()
        .find_map(|line| line.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build-id", file.display()))
        .to_owned()
}

/// A directory for this process under Cargo's per-target scratch space; directories left
/// by earlier runs whose process is gone are removed.
fn work_dir() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("symbol-resolver");
    std::fs::create_dir_all(&base).unwrap();
    for entry in std::fs::read_dir(&base).unwrap().flatten() {
        let name = entry.file_name();
        let alive = name
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(std::process::id().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn build() -> Fixtures {
    let dir = work_dir();
    let p = |name: &str| dir.join(name);
    let debug_root = p("debug-root");
    let scratch = p("scratch");
    for d in [&debug_root, &scratch, &p("link/.debug"), &p("badcrc/.debug")] {
        std::fs::create_dir_all(d).unwrap();
    }

    // rustc is the slow one; build it while the C side runs.
    let rust = p("rust_prog");
    let rust_v0 = p("rust_prog_v0");
    // Legacy mangling is rustc's default (and asking for it by name is unstable).
    let rust_builds: Vec<_> = [(rust.clone(), None), (rust_v0.clone(), Some("-Csymbol-mangling-version=v0"))]
        .into_iter()
        .map(|(out, mangling)| {
            std::thread::spawn(move || {
                run(Command::new("rustc")
                    .args(["-C", "debuginfo=2", "-C", "opt-level=1", "--edition", "2021"])
                    .args(mangling)
                    .arg("-o")
                    .arg(&out)
                    .arg(source("prog.rs")));
            })
        })
        .collect();

    gcc(&p("c_pie"), "prog.c", &["-fPIE", "-pie", "-Wl,--build-id"]);
    gcc(&p("c_nopie"), "prog.c", &["-fno-pie", "-no-pie", "-Wl,--build-id"]);

    // Stripped, with the debug file by build-id.
    let c_buildid = p("c_buildid");
    run(Command::new("objcopy").arg("--strip-all").arg(p("c_pie")).arg(&c_buildid));
    let id = build_id(&p("c_pie"));
    let id_dir = debug_root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&id_dir).unwrap();
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(p("c_pie"))
        .arg(id_dir.join(format!("{}.debug", &id[2..]))));

    // Stripped, with a debuglink (and no build-id, so only the link can find the file).
    for (name, tamper) in [("link", false), ("badcrc", true)] {
        let full = p(&format!("{name}/c_link_full"));
        gcc(&full, "prog.c", &["-fPIE", "-pie", "-Wl,--build-id=none"]);
        let debug = p(&format!("{name}/.debug/c_link.debug"));
        run(Command::new("objcopy").arg("--only-keep-debug").arg(&full).arg(&debug));
        let stripped = p(&format!("{name}/c_link"));
        run(Command::new("objcopy")
            .arg("--strip-all")
            .arg(format!("--add-gnu-debuglink={}", debug.display()))
            .arg(&full)
            .arg(&stripped));
        if tamper {
            let mut bytes = std::fs::read(&debug).unwrap();
            bytes.push(0);
            std::fs::write(&debug, bytes).unwrap();
        }
    }

    run(Command::new("g++").args(["-g", "-O2", "-o"]).arg(p("cpp_prog")).arg(source("prog.cpp")));
    gcc(&p("fake_vmlinux"), "kernel.c", &["-fno-pie", "-no-pie"]);
    run(Command::new("gcc").args(["-O2", "-o"]).arg(p("bpf_loader")).arg(source("bpf_loader.c")));
    for build in rust_builds {
        build.join().unwrap();
    }

    Fixtures {
        c_pie: p("c_pie"),
        c_nopie: p("c_nopie"),
        c_buildid,
        c_link: p("link/c_link"),
        c_link_full: p("link/c_link_full"),
        c_badcrc: p("badcrc/c_link"),
        rust,
        rust_v0,
        cpp: p("cpp_prog"),
        vmlinux: p("fake_vmlinux"),
        bpf_loader: p("bpf_loader"),
        debug_root,
        scratch,
    }
}

/// The fixtures, built on first use.
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(build)
}
