//! The OTel resource of each traced process: who sent a span, read from
//! `/proc` while the process lives and from its exec event and comm after.

use std::{
    collections::{HashMap, VecDeque},
    hash::{Hash, Hasher},
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    resource::v1::Resource,
};

use super::semconv;

/// Bytes of `/proc/PID/environ` read at most.
const MAX_ENVIRON: u64 = 256 << 10;

pub fn string_attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

pub fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(Value::IntValue(value)) }),
        ..Default::default()
    }
}

/// What is known of a process when its resource is needed.
#[derive(Debug, Clone, Copy)]
pub struct ProcessRef<'a> {
    pub pid: u32,
    pub comm: &'a str,
}

/// Resources per process, bounded; an exec or exit forgets the entry.
#[derive(Debug)]
pub struct ResourceCache {
    proc_root: PathBuf,
    host_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` given to kscope, added to every resource
    /// (e.g. `k8s.node.name`); the process's own attributes win.
    extra: Vec<(String, String)>,
    capacity: usize,
    by_pid: HashMap<u32, Arc<Resource>>,
    order: VecDeque<u32>,
    /// The path of each process's last exec, for processes gone before
    /// their first exchange is reported.
    exec_paths: HashMap<u32, String>,
    agent: Arc<Resource>,
}

impl ResourceCache {
    pub fn new(proc_root: impl Into<PathBuf>, extra: Vec<(String, String)>, capacity: usize) -> Self {
        let proc_root = proc_root.into();
        let host_name = host_name(&proc_root);
        let agent = Arc::new(agent_resource(&host_name, &extra));
        Self {
            proc_root,
            host_name,
            extra,
            capacity,
            by_pid: HashMap::new(),
            order: VecDeque::new(),
            exec_paths: HashMap::new(),
            agent,
        }
    }

    /// kscope's own resource, for its health metrics.
    pub fn agent(&self) -> Arc<Resource> {
        Arc::clone(&self.agent)
    }

    pub fn on_exec(&mut self, pid: u32, filename: &str) {
        self.by_pid.remove(&pid);
        if self.exec_paths.len() < self.capacity || self.exec_paths.contains_key(&pid) {
            self.exec_paths.insert(pid, filename.to_owned());
        }
    }

    pub fn on_exit(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
        self.exec_paths.remove(&pid);
    }

    pub fn get(&mut self, process: ProcessRef<'_>) -> Arc<Resource> {
        if let Some(r) = self.by_pid.get(&process.pid) {
            return Arc::clone(r);
        }
        let resource = Arc::new(self.read(process));
        if self.by_pid.len() >= self.capacity {
            while let Some(old) = self.order.pop_front() {
                if self.by_pid.remove(&old).is_some() {
                    break;
                }
            }
        }
        self.by_pid.insert(process.pid, Arc::clone(&resource));
        self.order.push_back(process.pid);
        if self.order.len() > self.capacity * 2 {
            // Forgotten pids leave stale entries in `order`; drop them.
            self.order.retain(|pid| self.by_pid.contains_key(pid));
        }
        resource
    }

    fn read(&self, process: ProcessRef<'_>) -> Resource {
        let dir = self.proc_root.join(process.pid.to_string());
        let exe_path = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_owned())
            .or_else(|| self.exec_paths.get(&process.pid).cloned());
        let exe_name = exe_path
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| process.comm.to_owned());
        let service_name = service_name_from_environ(&dir.join("environ")).unwrap_or_else(|| exe_name.clone());
        let start_time = std::fs::read_to_string(dir.join("stat")).ok().and_then(|s| start_time(&s)).unwrap_or(0);
        let mut attributes = Vec::with_capacity(10 + self.extra.len());
        for (key, value) in &self.extra {
            if key != semconv::SERVICE_NAME {
                attributes.push(string_attr(key, value.clone()));
            }
        }
        let mut set = |kv: KeyValue| {
            attributes.retain(|a: &KeyValue| a.key != kv.key);
            attributes.push(kv);
        };
        set(string_attr(semconv::SERVICE_NAME, service_name));
        set(string_attr(semconv::SERVICE_INSTANCE_ID, instance_id(&self.host_name, process.pid, start_time)));
        set(string_attr(semconv::HOST_NAME, self.host_name.clone()));
        set(int_attr(semconv::PROCESS_PID, i64::from(process.pid)));
        set(string_attr(semconv::PROCESS_EXECUTABLE_NAME, exe_name));
        if let Some(path) = exe_path {
            set(string_attr(semconv::PROCESS_EXECUTABLE_PATH, path));
        }
        if let Some(id) = std::fs::read_to_string(dir.join("cgroup")).ok().as_deref().and_then(container_id) {
            set(string_attr(semconv::CONTAINER_ID, id));
        }
        set(string_attr(semconv::TELEMETRY_DISTRO_NAME, "kscope"));
        set(string_attr(semconv::TELEMETRY_DISTRO_VERSION, env!("CARGO_PKG_VERSION")));
        Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }
    }
}

fn agent_resource(host_name: &str, extra: &[(String, String)]) -> Resource {
    let pid = std::process::id();
    let mut attributes: Vec<KeyValue> =
        extra.iter().filter(|(k, _)| k != semconv::SERVICE_NAME).map(|(k, v)| string_attr(k, v.clone())).collect();
    attributes.extend([
        string_attr(semconv::SERVICE_NAME, "kscope"),
        string_attr(semconv::SERVICE_INSTANCE_ID, instance_id(host_name, pid, 0)),
        string_attr(semconv::HOST_NAME, host_name.to_owned()),
        int_attr(semconv::PROCESS_PID, i64::from(pid)),
        string_attr(semconv::PROCESS_EXECUTABLE_NAME, "kscope"),
        string_attr(semconv::TELEMETRY_DISTRO_NAME, "kscope"),
        string_attr(semconv::TELEMETRY_DISTRO_VERSION, env!("CARGO_PKG_VERSION")),
    ]);
    Resource { attributes, dropped_attributes_count: 0, entity_refs: Vec::new() }
}

fn host_name(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`,
/// as the process's own SDK would pick.
fn service_name_from_environ(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).ok()?.take(MAX_ENVIRON).read_to_end(&mut bytes).ok()?;
    let mut from_attributes = None;
    for entry in bytes.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else { continue };
        if let Some(name) = entry.strip_prefix("OTEL_SERVICE_NAME=") {
            let name = name.trim();
            if !name.is_empty() {
                return Some(name.to_owned());
            }
        } else if let Some(list) = entry.strip_prefix("OTEL_RESOURCE_ATTRIBUTES=") {
            from_attributes = list
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim() == semconv::SERVICE_NAME)
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty());
        }
    }
    from_attributes
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised comm, which may
/// itself hold spaces and parentheses).
fn start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// The last 64-hex-digit run in the process's cgroup paths: how Docker,
/// containerd, CRI-O and Podman name a container's cgroup.
fn container_id(cgroup: &str) -> Option<String> {
    let mut found = None;
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        let bytes = path.as_bytes();
        let mut run = 0;
        for (i, b) in bytes.iter().enumerate() {
            if b.is_ascii_hexdigit() && !b.is_ascii_uppercase() {
                run += 1;
                let ends = bytes.get(i + 1).is_none_or(|n| !n.is_ascii_hexdigit());
                if run == 64 && ends {
                    found = Some(path[i + 1 - 64..=i].to_owned());
                }
            } else {
                run = 0;
            }
        }
    }
    found
}

/// Unique per process incarnation (pid and start time), stable across
/// kscope restarts, formatted as a UUID.
fn instance_id(host: &str, pid: u32, start_time: u64) -> String {
    let half = |seed: u64| {
        let mut h = std::hash::DefaultHasher::new();
        (seed, host, pid, start_time).hash(&mut h);
        h.finish()
    };
    let (a, b) = (half(1), half(2));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a Resource, key: &str) -> Option<&'a Value> {
        r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn s(v: &str) -> Value {
        Value::StringValue(v.to_owned())
    }

    fn fake_proc() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("kscope-proc-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
        std::fs::write(dir.join("sys/kernel/hostname"), "node-7\n").unwrap();
        let p = dir.join("4242");
        std::fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::symlink("/usr/sbin/nginx", p.join("exe")).unwrap();
        std::fs::write(p.join("environ"), b"PATH=/bin\0OTEL_RESOURCE_ATTRIBUTES=a=b,service.name=shop\0HOME=/\0")
            .unwrap();
        std::fs::write(
            p.join("stat"),
            "4242 (ng (x) inx) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 987654 1 1",
        )
        .unwrap();
        let id = "0123456789abcdef".repeat(4);
        std::fs::write(p.join("cgroup"), format!("0::/kubepods.slice/cri-containerd-{id}.scope\n")).unwrap();
        dir
    }

    #[test]
    fn a_live_process_resource() {
        let root = fake_proc();
        let mut cache = ResourceCache::new(&root, vec![("k8s.node.name".into(), "n1".into())], 8);
        let r = cache.get(ProcessRef { pid: 4242, comm: "nginx" });
        assert_eq!(attr(&r, "service.name"), Some(&s("shop")));
        assert_eq!(attr(&r, "host.name"), Some(&s("node-7")));
        assert_eq!(attr(&r, "process.pid"), Some(&Value::IntValue(4242)));
        assert_eq!(attr(&r, "process.executable.name"), Some(&s("nginx")));
        assert_eq!(attr(&r, "process.executable.path"), Some(&s("/usr/sbin/nginx")));
        assert_eq!(attr(&r, "container.id"), Some(&s(&"0123456789abcdef".repeat(4))));
        assert_eq!(attr(&r, "k8s.node.name"), Some(&s("n1")));
        let Some(Value::StringValue(id)) = attr(&r, "service.instance.id") else { panic!("no instance id") };
        assert_eq!(id.len(), 36);
        assert_eq!(*id, instance_id("node-7", 4242, 987654));
        // Cached: the same Arc.
        assert!(Arc::ptr_eq(&r, &cache.get(ProcessRef { pid: 4242, comm: "nginx" })));
        std::fs::write(root.join("4242/environ"), b"OTEL_SERVICE_NAME=checkout\0").unwrap();
        cache.on_exec(4242, "/usr/sbin/nginx");
        let r = cache.get(ProcessRef { pid: 4242, comm: "nginx" });
        assert_eq!(attr(&r, "service.name"), Some(&s("checkout")));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_gone_process_falls_back_to_exec_path_then_comm() {
        let root = fake_proc();
        let mut cache = ResourceCache::new(&root, vec![], 8);
        cache.on_exec(99, "/usr/bin/curl");
        let r = cache.get(ProcessRef { pid: 99, comm: "curl" });
        assert_eq!(attr(&r, "service.name"), Some(&s("curl")));
        assert_eq!(attr(&r, "process.executable.path"), Some(&s("/usr/bin/curl")));
        assert_eq!(attr(&r, "container.id"), None);
        let r = cache.get(ProcessRef { pid: 100, comm: "wget" });
        assert_eq!(attr(&r, "service.name"), Some(&s("wget")));
        assert_eq!(attr(&r, "process.executable.path"), None);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn the_cache_is_bounded() {
        let root = fake_proc();
        let mut cache = ResourceCache::new(&root, vec![], 2);
        for pid in 1..100 {
            cache.get(ProcessRef { pid, comm: "x" });
        }
        assert_eq!(cache.by_pid.len(), 2);
        assert!(cache.order.len() <= 4);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn container_ids_and_start_times() {
        let id = "ab".repeat(32);
        assert_eq!(container_id(&format!("0::/system.slice/docker-{id}.scope")), Some(id.clone()));
        assert_eq!(container_id(&format!("12:memory:/docker/{id}")), Some(id));
        assert_eq!(container_id("0::/user.slice/user-0.slice/session-3.scope"), None);
        assert_eq!(container_id(&format!("0::/x/{}", "a".repeat(65))), None);
        assert_eq!(start_time("1 (a b) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0"), Some(55));
        assert_eq!(start_time("garbage"), None);
    }
}
