//! Running the real `kscope` binary and collecting its JSON records.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use kscope_schema::{Record, SensorsRecord, StatsRecord, parse_line};

/// The binary under test: `KSCOPE_BIN` (set by `cargo xtask test`), else the
/// release build.
pub fn kscope_binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("KSCOPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/release/kscope"));
    if !path.exists() {
        bail!("{} does not exist: run the tests with `cargo xtask test` (it builds kscope first)", path.display());
    }
    Ok(path)
}

/// A `kscope run --output json` in the background.
pub struct KscopeRun {
    child: Child,
    lines: mpsc::Receiver<String>,
    sensors: SensorsRecord<'static>,
    /// Every record so far, the sensors record first.
    pub records: Vec<Record<'static>>,
    /// Every line so far, as printed.
    stdout: String,
    stderr: mpsc::Receiver<String>,
}

impl KscopeRun {
    /// Starts kscope with `args` after `run --output json`, and waits until
    /// it reports its sensors (so everything is attached).
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(kscope_binary()?)
            .args(["run", "--output", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start kscope")?;
        let lines = pipe_lines(child.stdout.take().context("stdout")?);
        let stderr = pipe_lines(child.stderr.take().context("stderr")?);
        let (line, sensors) = match first_record(&lines, &stderr) {
            Ok(first) => first,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let records = vec![Record::Sensors(sensors.clone())];
        Ok(Self { child, lines, sensors, records, stdout: line + "\n", stderr })
    }

    /// The first record: the kernel and the hook form each sensor got.
    pub fn sensors(&self) -> &SensorsRecord<'static> {
        &self.sensors
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (what Ctrl-C does), waits for exit and collects every
    /// record.
    pub fn stop(mut self) -> anyhow::Result<Finished> {
        send_signal(self.child.id(), 2);
        let timeout = Duration::from_secs(30);
        let status = crate::wait_timeout(&mut self.child, timeout)?
            .with_context(|| format!("kscope did not exit within {timeout:?} of SIGINT"))?
            .code();
        for line in self.lines.iter() {
            self.records.push(parse_line(&line).context("kscope printed a line that is not one of its records")?);
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
        let stderr: Vec<String> = self.stderr.iter().collect();
        Ok(Finished { exit_code: status, records: self.records, stdout: self.stdout, stderr: stderr.join("\n") })
    }

    pub fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

pub struct Finished {
    pub exit_code: Option<i32>,
    /// Every record, the sensors record first.
    pub records: Vec<Record<'static>>,
    /// Every line kscope printed, as printed (for what must never appear in
    /// it, whatever field it would be in).
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The summary kscope printed at exit.
    pub fn summary(&self) -> Option<&StatsRecord> {
        crate::records::summary(&self.records)
    }
}

pub use crate::send_signal;

/// kscope's first line, which must be its sensors record.
fn first_record(
    lines: &mpsc::Receiver<String>,
    stderr: &mpsc::Receiver<String>,
) -> anyhow::Result<(String, SensorsRecord<'static>)> {
    let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) else {
        let err: Vec<String> = stderr.try_iter().collect();
        bail!("kscope did not report its sensors; stderr:\n{}", err.join("\n"));
    };
    match parse_line(&line).context("kscope's first line")? {
        Record::Sensors(sensors) => Ok((line, sensors)),
        _ => bail!("first record is not the sensors record: {line}"),
    }
}

fn pipe_lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `GET /metrics` from kscope's Prometheus endpoint over a plain socket:
/// (status line, body).
pub fn scrape_metrics(port: u16) -> anyhow::Result<(String, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).context("connect to /metrics")?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: kscope\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    Ok((head.lines().next().unwrap_or("").to_owned(), body.to_owned()))
}
