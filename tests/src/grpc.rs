//! gRPC over h2c with Python's grpcio and no generated code: the server and
//! client in `tests/fixtures/grpc/` (service `kscope.test.Echo`: `Say`
//! echoes, `Count` streams N messages, `Fail` aborts NOT_FOUND "no such
//! thing").
//!
//! The interpreter is the `python3` on PATH that can `import grpc` (setup
//! installs grpcio into it); its real path is resolved once, so the pids the
//! harness reports are the Python processes themselves, not pyenv's shims.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use serde::Deserialize;

use crate::{wait_timeout, workspace_root};

/// The service every fixture method belongs to (`/kscope.test.Echo/Say`).
pub const SERVICE: &str = "kscope.test.Echo";

const START_TIMEOUT: Duration = Duration::from_secs(20);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/grpc").join(name)
}

/// The interpreter with grpcio: `sys.executable` of `python3` from PATH.
pub fn python() -> anyhow::Result<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = Command::new("python3")
                .args(["-c", "import sys, grpc; print(sys.executable)"])
                .output()
                .map_err(|e| format!("cannot run python3: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "python3 cannot import grpc ({}); `cargo xtask setup` installs grpcio: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("").trim()
                ));
            }
            Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// `server.py` on 127.0.0.1 at a free port (it binds port 0 and reports the
/// port it got, so no other process can take it in between); killed on drop.
pub struct GrpcServer {
    child: Child,
    pub port: u16,
}

#[derive(Debug, Deserialize)]
struct Ready {
    port: u16,
}

impl GrpcServer {
    pub fn start() -> anyhow::Result<Self> {
        let python = python()?;
        let mut child = Command::new(&python)
            .arg("-u")
            .arg(fixture("server.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), fixture("server.py").display()))?;
        let stdout = child.stdout.take().context("the gRPC server's stdout")?;
        // The first line, read on a thread so that a server that never
        // prints cannot hang the test.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let mut reader = BufReader::new(stdout);
            let read = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(read);
            // Keep the pipe open (and drained) for the server's lifetime.
            drain(reader);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            outcome => {
                let _ = child.kill();
                let _ = child.wait();
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let why = match outcome {
                    Err(_) => format!("did not report its port within {START_TIMEOUT:?}"),
                    Ok(Err(e)) => format!("stdout unreadable: {e}"),
                    Ok(Ok(_)) => "exited before reporting its port".to_owned(),
                };
                bail!("gRPC server {why}: {}", stderr.trim());
            }
        };
        // Nothing reads stderr from here on: send it nowhere rather than let
        // a chatty server block on a full pipe.
        if let Some(stderr) = child.stderr.take() {
            thread::spawn(move || drain(BufReader::new(stderr)));
        }
        let ready: Ready = serde_json::from_str(line.trim())
            .with_context(|| format!("gRPC server's first line {:?} is not its port", line.trim()))?;
        Ok(Self { child, port: ready.port })
    }

    /// `127.0.0.1:PORT`, the client's target.
    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn drain(mut reader: impl std::io::Read) {
    let mut sink = [0u8; 4096];
    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call's outcome, as `client.py` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GrpcCall {
    pub method: String,
    /// grpc.StatusCode name: "OK", "NOT_FOUND", ...
    pub code: String,
    /// The status message of a failed call.
    pub details: Option<String>,
    /// Response messages (UTF-8).
    pub messages: Vec<String>,
}

/// What one `client.py` run did.
#[derive(Debug)]
pub struct GrpcRun {
    pub status: ExitStatus,
    /// The client's pid (for matching kscope's records).
    pub pid: u32,
    pub calls: Vec<GrpcCall>,
    pub stderr: String,
}

#[derive(Debug, Deserialize)]
struct ClientReport {
    calls: Vec<GrpcCall>,
}

/// Runs `client.py` against `target` with `calls` ("Say:hello", "Count:3",
/// "Fail"), all on one channel, sending `metadata` (key, value) with each.
pub fn grpc_client(target: &str, calls: &[&str], metadata: &[(&str, &str)]) -> anyhow::Result<GrpcRun> {
    ensure!(!calls.is_empty(), "the gRPC client needs at least one call");
    let python = python()?;
    let mut cmd = Command::new(&python);
    cmd.arg(fixture("client.py")).arg(target).args(calls);
    for (key, value) in metadata {
        cmd.arg(format!("--metadata={key}={value}"));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", fixture("client.py").display()))?;
    let pid = child.id();
    let stdout = read_on_thread(child.stdout.take());
    let stderr = read_on_thread(child.stderr.take());
    let Some(status) = wait_timeout(&mut child, CLIENT_TIMEOUT)? else {
        bail!("gRPC client {} did not finish within {CLIENT_TIMEOUT:?}", calls.join(" "));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let calls = match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => {
            let report: ClientReport = serde_json::from_str(line)
                .with_context(|| format!("gRPC client printed {line:?} ({status}): {}", stderr.trim()))?;
            report.calls
        }
        None => Vec::new(),
    };
    Ok(GrpcRun { status, pid, calls, stderr })
}

fn read_on_thread(pipe: Option<impl std::io::Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}
