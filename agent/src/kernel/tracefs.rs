//! Tracepoints: where tracefs is, which tracepoints exist, and where each
//! field the programs read sits in a tracepoint's record (its `format` file).

use std::path::{Path, PathBuf};

use kscope_common::TracepointLayout;

/// Where tracefs is commonly mounted, in the order tried.
const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` (tracepoint forms need it)")]
    NotMounted,
    #[error("tracepoint {0} does not exist on this kernel")]
    NoTracepoint(String),
    #[error("cannot read {path}: {source}")]
    Read { tracepoint: String, path: String, source: std::io::Error },
    #[error("tracepoint {tracepoint} has no field {field}")]
    NoField { tracepoint: String, field: String },
}

impl TracefsError {
    /// The tracepoint (`category:name`) the error is about; `None` when
    /// tracefs itself is missing.
    pub fn tracepoint(&self) -> Option<&str> {
        match self {
            Self::NotMounted => None,
            Self::NoTracepoint(tp) | Self::Read { tracepoint: tp, .. } | Self::NoField { tracepoint: tp, .. } => {
                Some(tp)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    pub fn find() -> Result<Self, TracefsError> {
        TRACEFS_CANDIDATES
            .iter()
            .map(Path::new)
            .find(|root| root.join("events").is_dir())
            .map(|root| Self { root: root.to_path_buf() })
            .ok_or(TracefsError::NotMounted)
    }

    #[cfg(test)]
    pub fn at(root: &Path) -> Self {
        Self { root: root.to_path_buf() }
    }

    pub fn has(&self, category: &str, name: &str) -> bool {
        self.root.join("events").join(category).join(name).join("format").is_file()
    }

    pub fn format(&self, category: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
        let text = self.format_text(category, name)?;
        Ok(TracepointFormat::parse(&format!("{category}:{name}"), &text))
    }

    /// A tracepoint's `format` file as the kernel wrote it.
    pub fn format_text(&self, category: &str, name: &str) -> Result<String, TracefsError> {
        let path = self.root.join("events").join(category).join(name).join("format");
        if !path.exists() {
            return Err(TracefsError::NoTracepoint(format!("{category}:{name}")));
        }
        std::fs::read_to_string(&path).map_err(|source| TracefsError::Read {
            tracepoint: format!("{category}:{name}"),
            path: path.display().to_string(),
            source,
        })
    }

    /// The record layouts of every tracepoint the tracepoint forms read. A
    /// tracepoint that is absent leaves its fields `OFFSET_MISSING`; the
    /// sensor that needs it rejects its tracepoint form with the reason.
    pub fn layout(&self) -> (TracepointLayout, Vec<TracefsError>) {
        let mut layout = TracepointLayout::missing();
        let mut errors = Vec::new();
        let mut fill =
            |category: &str, name: &str, fields: &mut [(&mut u32, &str, bool)]| match self.format(category, name) {
                Ok(format) => {
                    for (slot, field, required) in fields.iter_mut() {
                        match format.offset(field) {
                            Some(offset) => **slot = offset,
                            None if *required => errors.push(TracefsError::NoField {
                                tracepoint: format.name.clone(),
                                field: (*field).to_owned(),
                            }),
                            None => {}
                        }
                    }
                }
                Err(err) => errors.push(err),
            };
        fill("sched", "sched_process_exec", &mut [(&mut layout.exec_filename, "filename", true)]);
        // `group_dead` arrived in 6.x; older kernels fall back to "is leader".
        fill("sched", "sched_process_exit", &mut [(&mut layout.exit_group_dead, "group_dead", false)]);
        fill(
            "sock",
            "inet_sock_set_state",
            &mut [
                (&mut layout.sk_skaddr, "skaddr", true),
                (&mut layout.sk_oldstate, "oldstate", true),
                (&mut layout.sk_newstate, "newstate", true),
                (&mut layout.sk_sport, "sport", true),
                (&mut layout.sk_dport, "dport", true),
                (&mut layout.sk_family, "family", true),
                (&mut layout.sk_protocol, "protocol", true),
                (&mut layout.sk_saddr, "saddr", true),
                (&mut layout.sk_daddr, "daddr", true),
                (&mut layout.sk_saddr_v6, "saddr_v6", true),
                (&mut layout.sk_daddr_v6, "daddr_v6", true),
            ],
        );
        fill("syscalls", "sys_exit_accept4", &mut [(&mut layout.accept_ret, "ret", true)]);
        // Every syscall tracepoint shares one record shape (`struct
        // syscall_trace_enter`/`_exit`): read's place it for all.
        fill("syscalls", "sys_enter_read", &mut [(&mut layout.syscall_args, "fd", true)]);
        fill("syscalls", "sys_exit_read", &mut [(&mut layout.syscall_ret, "ret", true)]);
        fill(
            "tcp",
            "tcp_retransmit_skb",
            &mut [
                (&mut layout.rtx_skaddr, "skaddr", true),
                (&mut layout.rtx_state, "state", true),
                (&mut layout.rtx_sport, "sport", true),
                (&mut layout.rtx_dport, "dport", true),
                (&mut layout.rtx_family, "family", true),
                (&mut layout.rtx_saddr, "saddr", true),
                (&mut layout.rtx_daddr, "daddr", true),
                (&mut layout.rtx_saddr_v6, "saddr_v6", true),
                (&mut layout.rtx_daddr_v6, "daddr_v6", true),
            ],
        );
        // `reason` arrived in 5.17; before it, drops are counted without one.
        fill(
            "skb",
            "kfree_skb",
            &mut [
                (&mut layout.drop_skbaddr, "skbaddr", true),
                (&mut layout.drop_location, "location", true),
                (&mut layout.drop_protocol, "protocol", true),
                (&mut layout.drop_reason, "reason", false),
            ],
        );
        (layout, errors)
    }
}

/// A parsed `format` file: field names and byte offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub fields: Vec<(String, u32)>,
}

impl TracepointFormat {
    /// Lines look like `\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;`.
    /// Lines that do not parse are skipped: the file is the kernel's, but a
    /// field kscope does not need must not stop it.
    pub fn parse(name: &str, text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let decl = line.strip_prefix("field:")?.split(';').next()?;
                let offset =
                    line.split(';').find_map(|part| part.trim().strip_prefix("offset:"))?.trim().parse().ok()?;
                let field = decl.split_whitespace().last()?;
                let field = field.split('[').next()?.to_owned();
                Some((field, offset))
            })
            .collect();
        Self { name: name.to_owned(), fields }
    }

    pub fn offset(&self, field: &str) -> Option<u32> {
        self.fields.iter().find(|(name, _)| name == field).map(|(_, offset)| *offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from kernel 6.18's /sys/kernel/tracing/events/sock/inet_sock_set_state/format.
    const INET_SOCK_SET_STATE: &str = "name: inet_sock_set_state
ID: 2287
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s ...\"
";

    #[test]
    fn parses_field_offsets() {
        let format = TracepointFormat::parse("sock:inet_sock_set_state", INET_SOCK_SET_STATE);
        assert_eq!(format.offset("skaddr"), Some(8));
        assert_eq!(format.offset("oldstate"), Some(16));
        assert_eq!(format.offset("saddr"), Some(32));
        assert_eq!(format.offset("daddr_v6"), Some(56));
        assert_eq!(format.offset("common_pid"), Some(4));
        assert_eq!(format.offset("nope"), None);
        assert_eq!(format.fields.len(), 15);
    }

    #[test]
    fn data_loc_fields_keep_their_name() {
        let text = "\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n";
        assert_eq!(TracepointFormat::parse("x", text).offset("filename"), Some(8));
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let text = "field:\nfield:int x;\toffset:abc;\nfield:int y;\toffset:12;\n\u{0}\u{ff}";
        assert_eq!(TracepointFormat::parse("x", text).fields, vec![("y".to_owned(), 12)]);
    }

    #[test]
    fn missing_tracefs_names_the_fix() {
        let dir = std::env::temp_dir().join("kscope-no-tracefs");
        let tracefs = Tracefs::at(&dir);
        let (layout, errors) = tracefs.layout();
        assert_eq!(layout, TracepointLayout::missing());
        assert_eq!(errors.len(), 8);
        assert!(errors[0].to_string().contains("sched:sched_process_exec"));
    }
}
