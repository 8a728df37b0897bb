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
use kscope_schema::{ExchangeDetail, Record, Role, SensorsRecord, StatsRecord, parse_line};

use super::{
    DRAIN_TIMEOUT, HostContext, KSCOPE_START_TIMEOUT, KSCOPE_STOP_TIMEOUT,
    summary::{chosen_forms, sensors_record, summary_record},
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
/// (and its files removed) if dropped without [`Kscope::stop_counting`].
pub(super) struct Kscope {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Each sensor's hook form, from the sensors record.
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
            if let Some(sensors) = kscope.sensors()? {
                kscope.forms = chosen_forms(&sensors);
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

    /// The sensors record, once kscope wrote its first line. Only the head
    /// is read: events may already be streaming after it.
    fn sensors(&self) -> anyhow::Result<Option<SensorsRecord<'static>>> {
        let mut head = Vec::new();
        File::open(&self.stdout)
            .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
            .with_context(|| format!("reading {}", self.stdout.display()))?;
        let Some(end) = head.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(&head[..end]);
        sensors_record(&line).map(Some).context("kscope's first line")
    }

    fn stderr_text(&self) -> String {
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
    pub(super) fn stop_counting(mut self, port: Option<u16>) -> anyhow::Result<(StatsRecord, Option<HttpExchanges>)> {
        send_signal(self.child.id(), 2);
        let status = kscope_harness::wait_timeout(&mut self.child, KSCOPE_STOP_TIMEOUT)?
            .ok_or_else(|| anyhow!("kscope did not exit within {KSCOPE_STOP_TIMEOUT:?} of SIGINT; killed"))?;
        ensure!(status.success(), "kscope exited with {status}: {}", self.stderr_text());
        let summary = last_summary(&self.stdout)?;
        let http = port.map(|port| count_http_exchanges(&self.stdout, port)).transpose()?;
        Ok((summary, http))
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

/// Exchange records in kscope's output: all, and HTTP/1 ones of `port` by
/// side. Every line is parsed: one that is not a record of kscope's fails
/// the count, naming the line.
pub(super) fn count_http_exchanges(path: &Path, port: u16) -> anyhow::Result<HttpExchanges> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut counts = HttpExchanges::default();
    for (number, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.is_empty() {
            continue;
        }
        let record = parse_line(&line).with_context(|| format!("{} line {}", path.display(), number + 1))?;
        let Record::Exchange(exchange) = record else { continue };
        counts.all += 1;
        if !matches!(exchange.detail, ExchangeDetail::Http1(_)) {
            continue;
        }
        let side = match exchange.role {
            Role::Client if exchange.peer_port == port => &mut counts.client,
            Role::Server if exchange.local_port == port => &mut counts.server,
            _ => continue,
        };
        *side += 1;
        if exchange.partial.is_some() {
            counts.partial += 1;
        }
    }
    Ok(counts)
}

/// The summary record ending a JSON-lines file, reading only its tail (the
/// file holds every event of the phase before it).
pub(super) fn last_summary(path: &Path) -> anyhow::Result<StatsRecord> {
    const TAIL: u64 = 256 * 1024;
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().with_context(|| format!("reading metadata of {}", path.display()))?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).with_context(|| format!("seeking in {}", path.display()))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).with_context(|| format!("reading {}", path.display()))?;
    let tail = String::from_utf8_lossy(&tail);
    let line = tail
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .ok_or_else(|| anyhow!("{} is empty: kscope printed no summary", path.display()))?;
    summary_record(line).with_context(|| format!("the last line of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{ScratchDir, summary::fixtures::summary_line};

    #[test]
    fn stat_cpu_ticks_skip_odd_comm() {
        let stat = "42 (a) b c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat).expect("parses"), 12);
    }

    /// An exchange line as kscope prints it.
    fn exchange(protocol: &str, role: &str, local: u16, peer: u16, extra: &str) -> String {
        let detail = match protocol {
            "dns" => r#","dns_id":7,"dns_type":"A","dns_answer_count":0,"dns_addresses":[]"#,
            _ => r#","http_version":"1.1""#,
        };
        format!(
            r#"{{"type":"exchange","time_unix_nano":1,"hook_form":"tracepoint","protocol":"{protocol}","role":"{role}","method":"GET","target":"/","status":200,"duration_ns":1,"request_bytes":1,"response_bytes":1,"pid":1,"tid":1,"comm":"wrk","cgroup_id":1,"sock_id":"0123456789abcdef","transport":"tcp","local_addr":"127.0.0.1","local_port":{local},"peer_addr":"127.0.0.1","peer_port":{peer}{extra}{detail}}}"#
        )
    }

    fn write_lines(dir: &ScratchDir, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.path().join(name);
        fs::write(&path, lines.join("\n") + "\n").expect("writes");
        path
    }

    #[test]
    fn http_exchanges_are_counted_per_side_on_the_port() {
        let dir = ScratchDir::create().expect("scratch dir");
        let lines = [
            r#"{"type":"sensors","time_unix_nano":1,"kernel":"6.18.0","sensors":[]}"#.to_owned(),
            exchange("http1", "client", 40000, 8080, ""),
            exchange("http1", "server", 8080, 40000, r#","partial":"no response""#),
            exchange("http1", "client", 40001, 808, ""),
            exchange("dns", "client", 5353, 53, ""),
            summary_line(&[], &[1], 4),
        ];
        let path = write_lines(&dir, "exchanges.jsonl", &lines);
        let c = count_http_exchanges(&path, 8080).expect("counts");
        assert_eq!((c.all, c.client, c.server, c.partial), (4, 1, 1, 1));
        assert_eq!(last_summary(&path).expect("has a summary").l7.exchanges, 4);
    }

    #[test]
    fn output_that_is_not_kscope_records_is_an_error_naming_the_line() {
        let dir = ScratchDir::create().expect("scratch dir");
        // A field renamed in the agent and not here: an error, not a zero.
        let renamed = exchange("http1", "server", 8080, 40000, "").replace("\"local_port\"", "\"port\"");
        let path = write_lines(&dir, "renamed.jsonl", &[exchange("http1", "client", 1, 8080, ""), renamed.clone()]);
        let err = format!("{:#}", count_http_exchanges(&path, 8080).expect_err("line 2 is not an exchange"));
        assert!(err.contains("renamed.jsonl line 2") && err.contains(&renamed), "{err}");

        // A run that ended without its summary.
        let path = write_lines(
            &dir,
            "no-summary.jsonl",
            &[summary_line(&[], &[1], 0), exchange("http1", "client", 1, 8080, "")],
        );
        let err = format!("{:#}", last_summary(&path).expect_err("the last line is an exchange"));
        assert!(err.contains("expected kscope's summary record, got a record of type \"exchange\""), "{err}");
    }
}
