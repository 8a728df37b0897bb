//! DNS: Debian's dnsmasq (package dnsmasq-base, no system service) answering
//! only local records, `dig` against it over UDP or TCP, and glibc's own
//! resolver (`getaddrinfo`, which sends the A and AAAA queries together with
//! `sendmmsg`) against it.
//!
//! glibc's resolver talks only to port 53 of the `nameserver`s in
//! /etc/resolv.conf, so that path needs a dnsmasq of its own:
//! [`Dnsmasq::start_in_netns`] makes a fresh network namespace (`ip netns
//! add`, loopback up), runs dnsmasq on its 127.0.0.1:53, and writes
//! `/etc/netns/<name>/resolv.conf`, which `ip netns exec` bind-mounts over
//! /etc/resolv.conf in a private mount namespace for every command it runs
//! there. Nothing on the host changes (needs root, as the tests run).
//! kscope traces all namespaces, so its tests see those processes too.
//!
//! The records (zone `kscope.test`, see the constants): `www` has an A and
//! an AAAA (`--address`), `api` too (`--host-record`), every other name in
//! the zone is NXDOMAIN (`--local`), and nothing is forwarded anywhere.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{nginx::free_port, wait_timeout};

pub const ZONE: &str = "kscope.test";
pub const WWW: &str = "www.kscope.test";
pub const WWW_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
pub const WWW_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x123);
pub const API: &str = "api.kscope.test";
pub const API_V4: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 4);
pub const API_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x124);
/// A name in the zone with no records: NXDOMAIN.
pub const MISSING: &str = "nope.kscope.test";

const START_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A dnsmasq in the foreground, on 127.0.0.1 (UDP and TCP), either in this
/// network namespace at a free port or in a fresh one at port 53; killed on
/// drop, with its namespace and directory removed.
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    /// The network namespace (`ip netns` name) it runs in, if its own.
    pub netns: Option<String>,
    dir: PathBuf,
}

impl Dnsmasq {
    /// dnsmasq on 127.0.0.1 at a port free for both UDP and TCP.
    pub fn start(parent: &Path) -> anyhow::Result<Self> {
        let port = free_udp_tcp_port()?;
        Self::spawn(parent, port, None)
    }

    /// dnsmasq on 127.0.0.1:53 in a new network namespace whose
    /// resolv.conf names it (for [`Dnsmasq::getaddrinfo`]).
    pub fn start_in_netns(parent: &Path) -> anyhow::Result<Self> {
        let name = format!("kscope-dns-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        run_ok(Command::new("ip").args(["netns", "add", &name]))
            .context("creating a network namespace (needs root and iproute2)")?;
        let setup = (|| {
            run_ok(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"]))?;
            let etc = netns_etc(&name);
            fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
            // One try, short timeout: a test waits seconds, not minutes, for
            // a resolver that does not answer.
            fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n")
                .context("writing the namespace's resolv.conf")
        })();
        if let Err(err) = setup {
            remove_netns(&name);
            return Err(err);
        }
        // On failure, spawn's own cleanup (Drop) removes the namespace.
        Self::spawn(parent, 53, Some(name))
    }

    fn spawn(parent: &Path, port: u16, netns: Option<String>) -> anyhow::Result<Self> {
        let dir = parent.join(format!(
            "kscope-dnsmasq-{}-{}-{port}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        if let Err(e) = fs::create_dir_all(&dir) {
            if let Some(name) = &netns {
                remove_netns(name);
            }
            bail!("creating {}: {e}", dir.display());
        }
        let log = dir.join("dnsmasq.log");
        let spawned = (|| {
            let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let err = out.try_clone().context("duplicating a log file handle")?;
            in_netns(netns.as_deref(), "dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                    "--listen-address=127.0.0.1",
                    "--bind-interfaces",
                    // Run as root rather than drop to a user that may not exist.
                    "--user=root",
                    "--group=root",
                    "--pid-file=",
                    "--log-facility=-",
                    "--log-queries",
                    "--cache-size=0",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--local=/{ZONE}/"))
                .arg(format!("--address=/{WWW}/{WWW_V4}"))
                .arg(format!("--address=/{WWW}/{WWW_V6}"))
                .arg(format!("--host-record={API},{API_V4},{API_V6}"))
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .context("starting dnsmasq (Debian's dnsmasq-base; `cargo xtask setup` installs it)")
        })();
        let child = match spawned {
            Ok(child) => child,
            Err(err) => {
                if let Some(name) = &netns {
                    remove_netns(name);
                }
                let _ = fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        let mut server = Self { child, port, netns, dir };
        // Ready when it answers a query (proves the UDP socket, not just a
        // listening TCP one).
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait().context("waiting for dnsmasq")? {
                bail!("dnsmasq exited ({status}): {}", fs::read_to_string(&log).unwrap_or_default().trim());
            }
            if matches!(server.dig_with(WWW, "A", false, &["+time=1"]), Ok(ref a) if a.rcode.as_deref() == Some("NOERROR"))
            {
                return Ok(server);
            }
            ensure!(
                Instant::now() < deadline,
                "dnsmasq did not answer on 127.0.0.1:{port} within {START_TIMEOUT:?}: {}",
                fs::read_to_string(&log).unwrap_or_default().trim()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program` run in this dnsmasq's network namespace (if it has one).
    pub fn command(&self, program: &str) -> Command {
        in_netns(self.netns.as_deref(), program)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What dnsmasq logged (every query, with `--log-queries`).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default()
    }

    /// `dig @127.0.0.1 -p PORT name rtype` (+tcp when `tcp`), one try.
    pub fn dig(&self, name: &str, rtype: &str, tcp: bool) -> anyhow::Result<DigAnswer> {
        self.dig_with(name, rtype, tcp, &[])
    }

    /// [`Dnsmasq::dig`] with more dig options (e.g. `+norecurse`).
    pub fn dig_with(&self, name: &str, rtype: &str, tcp: bool, extra: &[&str]) -> anyhow::Result<DigAnswer> {
        let mut cmd = self.command("dig");
        cmd.arg("@127.0.0.1")
            .args(["-p", &self.port.to_string()])
            .args(["+tries=1", "+time=3", "+noall", "+comments", "+answer"])
            .arg(if tcp { "+tcp" } else { "+notcp" })
            .args(extra)
            .args([name, rtype]);
        let (output, pid) = output_timeout(&mut cmd, "dig (Debian's bind9-dnsutils; `cargo xtask setup` installs it)")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut answer = parse_dig(&stdout);
        answer.status = Some(output.status);
        answer.pid = pid;
        Ok(answer)
    }

    /// Resolves `name` with glibc's `getaddrinfo` (`getent ahosts`: any
    /// family, so the A and AAAA queries go out together) in this dnsmasq's
    /// namespace. Only for [`Dnsmasq::start_in_netns`].
    pub fn getaddrinfo(&self, name: &str) -> anyhow::Result<Resolved> {
        ensure!(
            self.netns.is_some() && self.port == 53,
            "getaddrinfo needs Dnsmasq::start_in_netns (glibc asks port 53 of resolv.conf's servers only)"
        );
        let mut cmd = self.command("getent");
        cmd.args(["ahosts", name]);
        let (output, pid) = output_timeout(&mut cmd, "getent (libc-bin)")?;
        let mut addresses: Vec<IpAddr> = Vec::new();
        for addr in
            String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| l.split_whitespace().next()?.parse().ok())
        {
            if !addresses.contains(&addr) {
                addresses.push(addr);
            }
        }
        Ok(Resolved { status: output.status, pid, addresses })
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = &self.netns {
            remove_netns(name);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What `dig` printed, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigAnswer {
    /// dig's exit status (9: no answer).
    pub status: Option<ExitStatus>,
    pub pid: u32,
    /// "NOERROR", "NXDOMAIN", ...; `None` when no answer came.
    pub rcode: Option<String>,
    pub id: Option<u16>,
    pub records: Vec<DigRecord>,
}

impl DigAnswer {
    /// The A and AAAA addresses of the answer section.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.records.iter().filter_map(|r| r.data.parse().ok()).collect()
    }
}

/// One answer-section record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigRecord {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What `getaddrinfo` returned.
#[derive(Debug)]
pub struct Resolved {
    /// getent's exit status: 0 found, 2 not found.
    pub status: ExitStatus,
    pub pid: u32,
    /// Distinct addresses, in glibc's order.
    pub addresses: Vec<IpAddr>,
}

/// Parses `dig +noall +comments +answer` output.
fn parse_dig(text: &str) -> DigAnswer {
    let mut answer = DigAnswer::default();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix(";; ->>HEADER<<- ") {
            for field in header.split(',').map(str::trim) {
                if let Some(rcode) = field.strip_prefix("status: ") {
                    answer.rcode = Some(rcode.to_owned());
                } else if let Some(id) = field.strip_prefix("id: ") {
                    answer.id = id.parse().ok();
                }
            }
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [name, ttl, _class, rtype, data @ ..] = &fields[..]
                && let Ok(ttl) = ttl.parse()
            {
                answer.records.push(DigRecord {
                    name: (*name).to_owned(),
                    ttl,
                    rtype: (*rtype).to_owned(),
                    data: data.join(" "),
                });
            }
        }
    }
    answer
}

/// `program` under `ip netns exec NAME` when `netns` is set.
fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(name) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", name, program]);
            cmd
        }
        None => Command::new(program),
    }
}

fn netns_etc(name: &str) -> PathBuf {
    Path::new("/etc/netns").join(name)
}

fn remove_netns(name: &str) {
    let _ = Command::new("ip").args(["netns", "delete", name]).stderr(Stdio::null()).status();
    let _ = fs::remove_dir_all(netns_etc(name));
}

/// A loopback port free for both TCP and UDP (as of the call).
pub fn free_udp_tcp_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let port = free_port()?;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no loopback port free for both TCP and UDP in 50 tries")
}

fn run_ok(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot start {shown}"))?;
    ensure!(out.status.success(), "{shown} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

/// Runs `cmd` to completion (killed after [`CLIENT_TIMEOUT`]); its output
/// and pid.
fn output_timeout(cmd: &mut Command, what: &str) -> anyhow::Result<(Output, u32)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    // dig and getent print a few hundred bytes: far below a pipe's buffer,
    // so waiting before reading cannot deadlock.
    let Some(status) = wait_timeout(&mut child, CLIENT_TIMEOUT)? else {
        bail!("{cmd:?} did not finish within {CLIENT_TIMEOUT:?}");
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = std::io::Read::read_to_end(&mut pipe, &mut stdout);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_end(&mut pipe, &mut stderr);
    }
    Ok((Output { status, stdout, stderr }, pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dig_output_parsing() {
        let text = ";; Got answer:\n\
                    ;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 7263\n\
                    ;; flags: qr aa rd ra; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1\n\n\
                    ;; OPT PSEUDOSECTION:\n; EDNS: version: 0, flags:; udp: 1232\n\
                    ;; ANSWER SECTION:\n\
                    www.kscope.test.\t0\tIN\tA\t10.1.2.3\n\
                    www.kscope.test.\t0\tIN\tAAAA\tfd00::123\n\n";
        let answer = parse_dig(text);
        assert_eq!(answer.rcode.as_deref(), Some("NOERROR"));
        assert_eq!(answer.id, Some(7263));
        assert_eq!(answer.records.len(), 2);
        assert_eq!(answer.records[1].rtype, "AAAA");
        assert_eq!(answer.addresses(), [IpAddr::V4(WWW_V4), IpAddr::V6(WWW_V6)]);

        let nx = ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 1\n";
        assert_eq!(parse_dig(nx).rcode.as_deref(), Some("NXDOMAIN"));
        assert!(parse_dig(nx).records.is_empty());
        let timeout = ";; communications error to 127.0.0.1#5353: timed out\n";
        assert_eq!(parse_dig(timeout), DigAnswer::default());
    }
}
