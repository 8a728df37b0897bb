//! `kscope run` as the bench's child process: started, sampled for CPU,
//! stopped with SIGINT, and its output read back.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use kscope_harness::send_signal;
use serde_json::Value;

use super::{
    DRAIN_TIMEOUT, HostContext, KSCOPE_START_TIMEOUT, KSCOPE_STOP_TIMEOUT,
    summary::{Summary, parse_forms, parse_summary},
};

/// Exchange records in kscope's output: all of them, and the HTTP/1 ones of
/// the bench's nginx port by side (wrk is the client, nginx the server).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HttpExchanges {
    pub(super) all: u64,
    pub(super) client: u64,
    pub(super) server: u64,
    /// Of client + server, those marked partial (a side not seen whole).
    pub(super) partial: u64,
}

/// `kscope run --output json --stats-interval 1` writing to a file; killed
/// (and its files removed) if dropped without [`Kscope::stop`].
pub(super) struct Kscope {
    pub(super) child: Child,
    pub(super) stdout: PathBuf,
    pub(super) stderr: PathBuf,
    pub(super) forms: BTreeMap<String, String>,
}

impl Kscope {
    /// Starts kscope and waits for its sensors record, i.e. until every
    /// sensor is attached.
    pub(super) fn start(ctx: &HostContext<'_>) -> anyhow::Result<Self> {
        let stdout = ctx.dir.join("kscope.jsonl");
        let stderr = ctx.dir.join("kscope.err");
        let out = File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err = File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        let child = Command::new(ctx.kscope)
            .args(["run", "--output", "json", "--stats-interval", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .with_context(|| format!("starting {}", ctx.kscope.display()))?;
        let mut kscope = Self { child, stdout, stderr, forms: BTreeMap::new() };
        let deadline = Instant::now() + KSCOPE_START_TIMEOUT;
        loop {
            if let Some(record) = kscope.first_record()? {
                ensure!(record["type"] == "sensors", "kscope's first record is not the sensors record: {record}");
                kscope.forms = parse_forms(&record);
                return Ok(kscope);
            }
            if let Some(status) = kscope.child.try_wait().context("waiting for kscope")? {
                bail!("kscope exited ({status}) before reporting its sensors: {}", kscope.stderr_text());
            }
            ensure!(
                Instant::now() < deadline,
                "kscope did not report its sensors within {KSCOPE_START_TIMEOUT:?}: {}",
                kscope.stderr_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first complete line of its output, if written yet. Only the head
    /// is read: events may already be streaming after it.
    pub(super) fn first_record(&self) -> anyhow::Result<Option<Value>> {
        let mut head = Vec::new();
        File::open(&self.stdout)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
            .with_context(|| format!("reading {}", self.stdout.display()))?;
        let Some(end) = head.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&head[..end]);
        serde_json::from_str(&line).map(Some).with_context(|| format!("kscope's first line is not JSON: {line}"))
    }

    pub(super) fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default().trim().to_owned()
    }

    /// kscope's utime + stime so far, all threads.
    pub(super) fn cpu_ns(&self, clk_tck: u64) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = fs::read_to_string(&path).with_context(|| format!("reading {path} (did kscope exit?)"))?;
        let ticks = parse_stat_cpu_ticks(&stat).with_context(|| format!("parsing {path}: {stat}"))?;
        Ok(ticks.saturating_mul(1_000_000_000) / clk_tck.max(1))
    }

    /// After a load: waits until kscope's CPU time grows by at most one
    /// tick per half second (it has worked through what it queued), up to
    /// [`DRAIN_TIMEOUT`]. Returns its CPU then and how long that took.
    pub(super) fn wait_idle(&self, clk_tck: u64) -> anyhow::Result<(u64, Duration)> {
        let started = Instant::now();
        let tick_ns = 1_000_000_000 / clk_tck.max(1);
        let mut last = self.cpu_ns(clk_tck)?;
        loop {
            thread::sleep(Duration::from_millis(500));
            let now = self.cpu_ns(clk_tck)?;
            if now.saturating_sub(last) <= tick_ns || started.elapsed() >= DRAIN_TIMEOUT {
                return Ok((now, started.elapsed()));
            }
            last = now;
        }
    }

    /// SIGINT (what Ctrl-C does), wait for the exit, and read the summary;
    /// with `port`, also count the exchange records of its output (after it
    /// exited: not in its measured CPU).
    pub(super) fn stop_counting(mut self, port: Option<u16>) -> anyhow::Result<(Summary, Option<HttpExchanges>)> {
        send_signal(self.child.id(), 2);
        let status = kscope_harness::wait_timeout(&mut self.child, KSCOPE_STOP_TIMEOUT)?
            .ok_or_else(|| anyhow!("kscope did not exit within {KSCOPE_STOP_TIMEOUT:?} of SIGINT; killed"))?;
        ensure!(status.success(), "kscope exited with {status}: {}", self.stderr_text());
        let record = last_summary(&self.stdout)?;
        let http = port.map(|port| count_http_exchanges(&self.stdout, port)).transpose()?;
        Ok((parse_summary(&record)?, http))
    }
}

impl Drop for Kscope {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Its links are fd-based: the kernel detaches everything on exit.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The event log of a phase is tens of MB; only its summary is kept.
        let _ = fs::remove_file(&self.stdout);
        let _ = fs::remove_file(&self.stderr);
    }
}

/// utime + stime (fields 14 and 15) of a /proc/<pid>/stat line. The fields
/// are counted after the last ')' because comm may contain spaces or ')'.
pub(super) fn parse_stat_cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let (_, rest) = stat.rsplit_once(')').ok_or_else(|| anyhow!("no ')' after comm"))?;
    // rest starts at field 3 (state): utime is field 14, stime field 15.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("no field {n}"))?
            .parse()
            .with_context(|| format!("field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// Exchange records in a JSON-lines file: all, and HTTP/1 ones of `port` by
/// side. Substring matches on kscope's own serialization (serde_json, no
/// spaces, field order fixed), so a 100 MB file takes well under a second.
pub(super) fn count_http_exchanges(path: &Path, port: u16) -> anyhow::Result<HttpExchanges> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (local, peer) = (format!("\"local_port\":{port},"), format!("\"peer_port\":{port},"));
    let mut counts = HttpExchanges::default();
    for line in BufReader::with_capacity(1 << 20, file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let Ok(line) = std::str::from_utf8(&line) else { continue };
        if !line.starts_with("{\"type\":\"exchange\"") {
            continue;
        }
        counts.all += 1;
        if !line.contains("\"protocol\":\"http1\"") {
            continue;
        }
        let side = if line.contains("\"role\":\"client\"") && line.contains(&peer) {
            &mut counts.client
        } else if line.contains("\"role\":\"server\"") && line.contains(&local) {
            &mut counts.server
        } else {
            continue;
        };
        *side += 1;
        if line.contains("\"partial\":") {
            counts.partial += 1;
        }
    }
    Ok(counts)
}

/// The last "summary" record of a JSON-lines file, reading only its tail
/// (the file holds every event of the phase before it).
pub(super) fn last_summary(path: &Path) -> anyhow::Result<Value> {
    pub(super) const TAIL: u64 = 256 * 1024;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading metadata of {}", path.display()))?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).with_context(|| format!("seeking in {}", path.display()))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).with_context(|| format!("reading {}", path.display()))?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .filter(|line| line.contains("\"summary\""))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|record| record["type"] == "summary")
        .ok_or_else(|| anyhow!("no summary record at the end of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ScratchDir;

    #[test]
    fn stat_cpu_ticks_skip_odd_comm() {
        let stat = "42 (a) b c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat).expect("parses"), 12);
    }

    #[test]
    fn http_exchanges_are_counted_per_side_on_the_port() {
        let dir = ScratchDir::create().expect("scratch dir");
        let path = dir.path().join("exchanges.jsonl");
        let exchange = |role: &str, local: u16, peer: u16, extra: &str| {
            format!(
                r#"{{"type":"exchange","protocol":"http1","role":"{role}","status":200,"local_port":{local},"peer_addr":"127.0.0.1","peer_port":{peer},"http_version":"1.1"{extra}}}"#
            )
        };
        let lines = [
            r#"{"type":"sensors","sensors":[]}"#.to_owned(),
            exchange("client", 40000, 8080, ""),
            exchange("server", 8080, 40000, r#","partial":"no response""#),
            exchange("client", 40001, 808, ""),
            r#"{"type":"exchange","protocol":"dns","role":"client","local_port":5353,"peer_port":53,"x":1}"#.to_owned(),
            r#"{"type":"summary"}"#.to_owned(),
        ];
        fs::write(&path, lines.join("\n") + "\n").expect("writes");
        let c = count_http_exchanges(&path, 8080).expect("counts");
        assert_eq!((c.all, c.client, c.server, c.partial), (4, 1, 1, 1));
    }
}
