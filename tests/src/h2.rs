//! HTTP/2 without TLS (h2c, prior knowledge): nghttp2's `nghttpd` serving a
//! directory on loopback, and its `nghttp` client fetching several URLs over
//! one connection, concurrently (one stream each).
//!
//! Why nghttp and not curl: Debian 12's curl 7.88.1 does speak
//! `--http2-prior-knowledge`, but fails a second request that reuses the
//! connection ("Error in the HTTP2 framing layer", exit 16, also with
//! `--parallel`); [`curl_h2`] is kept for one URL per connection.

use std::{
    fs,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::{nginx::free_port, wait_timeout};

/// How long a client may take before it is killed and the call fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Tells apart the directories of servers one test process starts.
static SEQ: AtomicU32 = AtomicU32::new(0);

/// `nghttpd --no-tls` on 127.0.0.1 at a free port, serving a new directory
/// (`--echo-upload`: a request with a body gets it back); killed on drop and
/// its directory removed.
pub struct Nghttpd {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Nghttpd {
    /// Starts nghttpd in a new directory under `parent` serving `files`
    /// (path relative to the docroot, content), and waits until it accepts
    /// connections.
    pub fn start(parent: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = parent.join(format!(
            "kscope-nghttpd-{}-{}-{port}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let docroot = dir.join("htdocs");
        fs::create_dir_all(&docroot).with_context(|| format!("creating {}", docroot.display()))?;
        for (path, content) in files {
            let file = docroot.join(path.trim_start_matches('/'));
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            fs::write(&file, content).with_context(|| format!("writing {}", file.display()))?;
        }
        let log = dir.join("nghttpd.log");
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating a log file handle")?;
        let child = Command::new("nghttpd")
            .args(["--no-tls", "--echo-upload", "--address=127.0.0.1", "--htdocs"])
            .arg(&docroot)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting nghttpd (Debian's nghttp2-server; `cargo xtask setup` installs it)")?;
        let mut server = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().context("waiting for nghttpd")? {
                bail!("nghttpd exited ({status}): {}", fs::read_to_string(&log).unwrap_or_default().trim());
            }
            ensure!(Instant::now() < deadline, "nghttpd did not listen on 127.0.0.1:{port} within 10 s");
            thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, path.trim_start_matches('/'))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory files are served from.
    pub fn docroot(&self) -> PathBuf {
        self.dir.join("htdocs")
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        // nghttpd holds no children and nothing to flush: SIGKILL is enough.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// One response, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Response {
    pub url: String,
    pub status: u16,
    /// Body bytes received (after any content decoding; nghttpd sends none).
    pub body_bytes: u64,
}

/// What one `nghttp` run did.
#[derive(Debug)]
pub struct NghttpRun {
    pub status: ExitStatus,
    /// The client's pid (for matching kscope's records).
    pub pid: u32,
    /// One per completed request, in the order the URLs were given.
    pub responses: Vec<H2Response>,
    pub stderr: String,
}

/// Runs `nghttp` for `urls` (all on one connection, as concurrent streams),
/// with `extra` arguments (e.g. `["-d", "/path/body"]` to POST a file,
/// `["-H", "traceparent: ..."]`), discarding bodies; the statuses and body
/// sizes come from its HAR output. Fails only when nghttp cannot run or
/// hangs: the exit status is the caller's to check.
pub fn nghttp(urls: &[String], extra: &[&str]) -> anyhow::Result<NghttpRun> {
    ensure!(!urls.is_empty(), "nghttp needs at least one URL");
    let har = std::env::temp_dir().join(format!(
        "kscope-nghttp-{}-{}.har",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new("nghttp")
        .arg("--null-out")
        .arg(format!("--har={}", har.display()))
        .args(extra)
        .args(urls)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting nghttp (Debian's nghttp2-client; `cargo xtask setup` installs it)")?;
    let pid = child.id();
    // nghttp writes little to stderr; reading it after exit cannot block it.
    let Some(status) = wait_timeout(&mut child, CLIENT_TIMEOUT)? else {
        let _ = fs::remove_file(&har);
        bail!("nghttp {} did not finish within {CLIENT_TIMEOUT:?}", urls.join(" "));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let text = fs::read_to_string(&har).unwrap_or_default();
    let _ = fs::remove_file(&har);
    let responses = if text.is_empty() { Vec::new() } else { parse_har(&text, urls)? };
    Ok(NghttpRun { status, pid, responses, stderr })
}

/// The responses of nghttp's HAR log, in the order of `urls` (nghttp lists
/// them by completion).
fn parse_har(text: &str, urls: &[String]) -> anyhow::Result<Vec<H2Response>> {
    let har: Value = serde_json::from_str(text).context("nghttp's HAR output is not JSON")?;
    let entries = har["log"]["entries"].as_array().context("nghttp's HAR output has no log.entries")?;
    let mut responses = Vec::new();
    for entry in entries {
        let url = entry["request"]["url"].as_str().context("a HAR entry without request.url")?.to_owned();
        let status = entry["response"]["status"].as_u64().context("a HAR entry without response.status")?;
        let body_bytes =
            entry["response"]["content"]["size"].as_u64().context("a HAR entry without response.content.size")?;
        responses.push(H2Response { url, status: u16::try_from(status).context("HTTP status")?, body_bytes });
    }
    responses.sort_by_key(|r| urls.iter().position(|u| *u == r.url).unwrap_or(usize::MAX));
    Ok(responses)
}

/// What one `curl --http2-prior-knowledge` request did.
#[derive(Debug)]
pub struct CurlH2 {
    pub status: ExitStatus,
    pub pid: u32,
    /// 0 when no response came.
    pub http_code: u16,
    /// "2" when HTTP/2 was spoken.
    pub http_version: String,
    pub body_bytes: u64,
    /// Response header bytes as curl counts them (HTTP/1-style text, not HPACK).
    pub header_bytes: u64,
}

/// One h2c request with curl (see the module comment for why only one).
pub fn curl_h2(url: &str, extra: &[&str]) -> anyhow::Result<CurlH2> {
    let mut child = Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "-o", "/dev/null"])
        .args(["-w", "%{http_code} %{http_version} %{size_download} %{size_header}"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting curl")?;
    let pid = child.id();
    let Some(status) = wait_timeout(&mut child, CLIENT_TIMEOUT)? else {
        bail!("curl {url} did not finish within {CLIENT_TIMEOUT:?}");
    };
    let mut out = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut out);
    }
    let fields: Vec<&str> = out.split_whitespace().collect();
    let [code, version, body, header] = fields[..] else {
        bail!("unexpected curl -w output {out:?} ({status})");
    };
    Ok(CurlH2 {
        status,
        pid,
        http_code: code.parse().with_context(|| format!("curl's http_code {code:?}"))?,
        http_version: version.to_owned(),
        body_bytes: body.parse().with_context(|| format!("curl's size_download {body:?}"))?,
        header_bytes: header.parse().with_context(|| format!("curl's size_header {header:?}"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn har_parsing_orders_by_request() {
        let har = r#"{"log":{"entries":[
            {"request":{"url":"http://h/b"},"response":{"status":404,"content":{"size":148}}},
            {"request":{"url":"http://h/a"},"response":{"status":200,"content":{"size":12345}}}]}}"#;
        let urls = ["http://h/a".to_owned(), "http://h/b".to_owned()];
        let parsed = parse_har(har, &urls).unwrap_or_default();
        assert_eq!(
            parsed,
            [
                H2Response { url: urls[0].clone(), status: 200, body_bytes: 12345 },
                H2Response { url: urls[1].clone(), status: 404, body_bytes: 148 },
            ]
        );
        assert!(parse_har("{}", &urls).is_err());
    }
}
