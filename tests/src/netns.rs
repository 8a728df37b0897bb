//! Network namespaces a test creates and removes: two namespaces joined by
//! a veth pair, with an nftables chain on the server side where a test can
//! drop packets (the kernel here has no netem; it has nf_tables).

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Runs `ip`/`nft`/… and fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is it installed? `cargo xtask setup`)"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Client and server namespaces and the veth pair between them:
/// `client_addr` in the client's, `server_addr` in the server's, a /24 of
/// 10.213.0.0/16 picked from the test's pid so parallel runs don't meet.
pub struct VethPair {
    pub client: String,
    pub server: String,
    pub client_addr: String,
    pub server_addr: String,
}

impl VethPair {
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        let id = std::process::id();
        let subnet = format!("10.213.{}", id % 250 + 1);
        let pair = Self {
            client: format!("kscope-{tag}-c-{id}"),
            server: format!("kscope-{tag}-s-{id}"),
            client_addr: format!("{subnet}.1"),
            server_addr: format!("{subnet}.2"),
        };
        // Interface names are at most 15 bytes.
        let (cif, sif) = (format!("kv{}c", id % 1_000_000), format!("kv{}s", id % 1_000_000));
        run("ip", &["netns", "add", &pair.client])?;
        run("ip", &["netns", "add", &pair.server])?;
        run("ip", &["link", "add", "name", &cif, "type", "veth", "peer", "name", &sif])?;
        run("ip", &["link", "set", &cif, "netns", &pair.client])?;
        run("ip", &["link", "set", &sif, "netns", &pair.server])?;
        for (ns, dev, addr) in [(&pair.client, &cif, &pair.client_addr), (&pair.server, &sif, &pair.server_addr)] {
            run("ip", &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        pair.nft(&["add", "table", "inet", "kscope"])?;
        pair.nft(&["add", "chain", "inet", "kscope", "input", "{ type filter hook input priority 0; }"])?;
        Ok(pair)
    }

    /// `nft` in the server's namespace.
    pub fn nft(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["netns", "exec", &self.server, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Drops every TCP segment to `port` arriving at the server, counting them.
    pub fn drop_tcp_to(&self, port: u16) -> anyhow::Result<()> {
        self.nft(&["add", "rule", "inet", "kscope", "input", "tcp", "dport", &port.to_string(), "counter", "drop"])
            .map(|_| ())
    }

    /// Packets the drop rule has dropped so far.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        let rules = self.nft(&["list", "chain", "inet", "kscope", "input"])?;
        let words: Vec<&str> = rules.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "packets")
            .and_then(|w| w[1].parse().ok())
            .with_context(|| format!("no packet counter in {rules}"))
    }

    pub fn stop_dropping(&self) -> anyhow::Result<()> {
        self.nft(&["flush", "chain", "inet", "kscope", "input"]).map(|_| ())
    }

    /// The inode of namespace `ns` (what `/proc/PID/ns/net` calls `net:[inode]`).
    pub fn inode(ns: &str) -> anyhow::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let path = format!("/run/netns/{ns}");
        Ok(std::fs::metadata(&path).with_context(|| format!("stat {path}"))?.ino())
    }

    /// A command run inside namespace `ns`.
    pub fn command(ns: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]);
        cmd
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the pair, and so both.
        for ns in [&self.client, &self.server] {
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}
