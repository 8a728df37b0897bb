//! Debian's nginx on loopback, one worker, no access log: the real server the
//! host tests and the benchmark drive.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{send_signal, wait_timeout};

/// A loopback port nothing listens on (as of the call).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(listener.local_addr().context("reading the bound port")?.port())
}

fn dir_for(parent: &Path, port: u16) -> PathBuf {
    parent.join(format!("kscope-nginx-{}-{port}", std::process::id()))
}

/// Listens on 127.0.0.1 and [::1] at one port, serving `index.html`; stopped
/// with SIGTERM on drop (SIGKILL would orphan the worker, still holding the
/// caller's pipes), and its directory removed.
pub struct Nginx {
    master: Child,
    dir: PathBuf,
    pub port: u16,
    /// A second port speaking HTTP/2 without TLS (h2c, prior knowledge),
    /// when started with [`NginxOptions::h2c`].
    pub h2c_port: Option<u16>,
}

/// What the L7 tests add to the plain server.
#[derive(Debug, Clone, Copy, Default)]
pub struct NginxOptions {
    /// `location = /fail { return 500; }` and friends: statuses to assert.
    pub status_locations: bool,
    /// A second port serving HTTP/2 without TLS.
    pub h2c: bool,
    /// Send file bodies with sendfile(2), as most nginx configurations do.
    pub sendfile: bool,
}

impl Nginx {
    /// Starts nginx in a new directory under `parent`, serving `index` as
    /// `/index.html`, and waits until it accepts connections.
    pub fn start(parent: &Path, index: &str) -> anyhow::Result<Self> {
        Self::start_with(parent, index, NginxOptions::default())
    }

    pub fn start_with(parent: &Path, index: &str, options: NginxOptions) -> anyhow::Result<Self> {
        let port = free_port()?;
        let h2c_port = if options.h2c { Some(free_port()?) } else { None };
        let locations = if options.status_locations {
            "location = /fail { return 500; } location = /created { return 201 \"made\\n\"; } \
             location = /empty { return 204; }"
        } else {
            ""
        };
        let h2c_server = h2c_port
            .map(|p| {
                format!(
                    "server {{ listen 127.0.0.1:{p} http2; root {}/www; {locations} }}\n",
                    dir_for(parent, port).display()
                )
            })
            .unwrap_or_default();
        let sendfile = if options.sendfile { "on" } else { "off" };
        let dir = dir_for(parent, port);
        let www = dir.join("www");
        fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        fs::write(www.join("index.html"), index).context("writing nginx's index.html")?;
        let conf = format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
             uwsgi_temp_path {d}; scgi_temp_path {d}; sendfile {sendfile};\n\
             server {{ listen 127.0.0.1:{port} backlog=4096; listen [::1]:{port}; root {d}/www; {locations} }}\n\
             {h2c_server}}}\n",
            d = dir.display()
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
        let master = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx (Debian's nginx-light; `cargo xtask setup` installs it)")?;
        let mut nginx = Self { master, dir, port, h2c_port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = nginx.master.try_wait().context("waiting for nginx")? {
                let log = fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                bail!("nginx exited ({status}): {}", log.trim());
            }
            ensure!(Instant::now() < deadline, "nginx did not listen on 127.0.0.1:{port} within 10 s");
            thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }

    /// The worker processes, which accept the connections.
    pub fn worker_pids(&self) -> Vec<u64> {
        let pid = self.master.id();
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.master.id();
        send_signal(pid, 15);
        if !matches!(wait_timeout(&mut self.master, Duration::from_secs(10)), Ok(Some(_))) {
            // A master that ignores SIGTERM: kill its workers first, then it.
            for worker in self.worker_pids() {
                send_signal(worker as u32, 9);
            }
            let _ = self.master.kill();
            let _ = self.master.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
