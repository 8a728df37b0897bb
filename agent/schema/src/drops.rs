//! `drop`: packets the kernel dropped, counted in the kernel per (location,
//! reason, network namespace, protocol) and printed for what grew.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Drops of one key since the last read (`count`) and in all (`total`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRecord {
    /// When kscope read the count (the `drop` record's time; 0 in the
    /// summary's `top`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub time_unix_nano: u64,
    /// The reason as this kernel's `skb:kfree_skb` format names it.
    pub reason: Arc<str>,
    pub reason_code: u32,
    pub protocol: String,
    /// Inode of the network namespace the packet was in (`net:[inode]` in
    /// `/proc/PID/ns/net`: which pod or container), 0 when unknown.
    pub netns: u32,
    /// `function+0xoffset`, or `[unknown]`.
    pub location: Arc<str>,
    pub function: String,
    pub count: u64,
    pub total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Totals for the summary record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropSummary {
    /// Drops the kernel counted into its map.
    pub counted: u64,
    /// Drops of a new key after the map was full (in no record).
    pub untracked: u64,
    /// Distinct (location, reason, network namespace, protocol) keys seen.
    pub keys: usize,
    /// The keys with the most drops, most first.
    pub top: Vec<DropRecord>,
}
