//! Packet drops: the kernel's counts per (location, reason, network
//! namespace, protocol) →
//! records a person can act on ("12 packets NO_SOCKET at tcp_v4_rcv+0x2a5").
//! The drop sensor's program counts in a per-CPU map; this stage reads it
//! once a second and reports what grew. Keys are never deleted from the map
//! (a delete would lose the drops counted between the read and it), so the
//! map's bound holds for the run and drops of new keys past it are counted
//! as untracked.

use std::{collections::HashMap, sync::Arc};

use aya::maps::{MapData, PerCpuHashMap};
use kscope_common::DropKey;

use crate::stacks::{KernelStacks, function_of};

/// What `skb:kfree_skb` calls each `enum skb_drop_reason` value on this
/// kernel: the numbering changes between releases, so it is read from the
/// tracepoint's own format, never compiled in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropReasons {
    names: HashMap<u32, Arc<str>>,
}

impl DropReasons {
    /// From the running kernel's tracefs; empty (numbers only) without it.
    pub fn from_tracefs() -> Self {
        crate::kernel::tracefs::Tracefs::find()
            .ok()
            .and_then(|fs| fs.format_text("skb", "kfree_skb").ok())
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    /// Reads the `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, …)`
    /// table of a `kfree_skb` format file. Pairs that do not parse are
    /// skipped: their drops are shown by number.
    pub fn parse(format: &str) -> Self {
        let mut names = HashMap::new();
        let Some(start) = format.find("__print_symbolic(REC->reason") else {
            return Self { names };
        };
        let table = &format[start..];
        let table = &table[..table.find("))").unwrap_or(table.len())];
        for pair in table.split('{').skip(1) {
            let Some((number, rest)) = pair.split_once(',') else { continue };
            let Ok(number) = number.trim().parse::<u32>() else { continue };
            let name = rest.trim().trim_start_matches('"');
            let Some(end) = name.find('"') else { continue };
            names.insert(number, Arc::from(&name[..end]));
        }
        Self { names }
    }

    pub fn name(&self, reason: u32) -> Arc<str> {
        match self.names.get(&reason) {
            Some(name) => Arc::clone(name),
            None => Arc::from(format!("reason_{reason}")),
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// `skb->protocol` as people name it.
pub fn protocol_name(ethertype: u16) -> String {
    match ethertype {
        0x0800 => "ipv4".into(),
        0x86dd => "ipv6".into(),
        0x0806 => "arp".into(),
        other => format!("{other:#06x}"),
    }
}

/// Drops of one key since the last read (`count`) and in all (`total`),
/// and the run's totals: printed as is (`drop` records, the summary's
/// `drops`).
pub use kscope_schema::{DropRecord, DropSummary};

/// How many keys the summary's `top` lists at most.
pub const SUMMARY_TOP: usize = 10;

/// Reads the kernel's drop counts and turns what grew into records.
pub struct DropWatch {
    map: PerCpuHashMap<MapData, DropKey, u64>,
    reasons: DropReasons,
    stacks: KernelStacks,
    totals: HashMap<DropKey, u64>,
    possible_cpus: usize,
}

impl DropWatch {
    pub fn new(map: aya::maps::Map, possible_cpus: usize) -> anyhow::Result<Self> {
        Ok(Self {
            map: PerCpuHashMap::try_from(map)?,
            reasons: DropReasons::from_tracefs(),
            stacks: KernelStacks::default(),
            totals: HashMap::new(),
            possible_cpus,
        })
    }

    /// Keys whose count grew since the last call, most drops first, stamped
    /// with when they were read.
    pub fn poll(&mut self, now_unix_ns: u64) -> Vec<DropRecord> {
        let mut grown = Vec::new();
        for entry in self.map.iter() {
            let Ok((key, values)) = entry else { continue };
            let total: u64 = values.iter().take(self.possible_cpus).sum();
            let before = self.totals.insert(key, total).unwrap_or(0);
            if total > before {
                grown.push((key, total - before, total));
            }
        }
        let locations = self.stacks.frames(&grown.iter().map(|(k, ..)| k.location).collect::<Vec<_>>());
        let mut records: Vec<DropRecord> = grown
            .into_iter()
            .zip(locations)
            .map(|((key, count, total), location)| self.record(&key, location, count, total, now_unix_ns))
            .collect();
        records.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.location.cmp(&b.location)));
        records
    }

    fn record(&self, key: &DropKey, location: Arc<str>, count: u64, total: u64, time_unix_nano: u64) -> DropRecord {
        DropRecord {
            time_unix_nano,
            reason: self.reasons.name(key.reason),
            reason_code: key.reason,
            protocol: protocol_name(key.protocol),
            netns: key.netns,
            function: function_of(&location).to_owned(),
            location,
            count,
            total,
        }
    }

    /// The run's totals, from what [`poll`](Self::poll) has read.
    pub fn summary(&mut self, counted: u64, untracked: u64) -> DropSummary {
        let mut keys: Vec<(DropKey, u64)> = self.totals.iter().map(|(k, v)| (*k, *v)).collect();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.truncate(SUMMARY_TOP);
        let top = keys
            .into_iter()
            .map(|(key, total)| {
                let location = self.stacks.frame(key.location);
                // No time: the summary's own is the record's.
                self.record(&key, location, total, total, 0)
            })
            .collect();
        DropSummary { counted, untracked, keys: self.totals.len(), top }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_from_this_kernels_format() {
        let text = std::fs::read_to_string("/sys/kernel/tracing/events/skb/kfree_skb/format").unwrap();
        let reasons = DropReasons::parse(&text);
        // The table on 6.18 runs from NOT_SPECIFIED (2) up to MAX.
        assert_eq!(&*reasons.name(2), "NOT_SPECIFIED");
        assert_eq!(&*reasons.name(3), "NO_SOCKET");
        assert!(reasons.len() > 100, "{}", reasons.len());
        assert_eq!(&*reasons.name(100_000), "reason_100000");
    }

    #[test]
    fn reason_tables_of_other_releases_and_garbage() {
        // 6.1 numbers them differently (and had fewer).
        let v61 = r#"print fmt: "skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, "NOT_SPECIFIED" }, { 2, "NO_SOCKET" }, { 3, "PKT_TOO_SMALL" })"#;
        let reasons = DropReasons::parse(v61);
        assert_eq!(reasons.len(), 3);
        assert_eq!(&*reasons.name(2), "NO_SOCKET");
        assert!(DropReasons::parse("print fmt: \"no reasons\"").is_empty());
        let broken = r#"__print_symbolic(REC->reason, { x, "A" }, { 4 "B" }, { 5, C }, { 6, "D" })"#;
        let reasons = DropReasons::parse(broken);
        assert_eq!(reasons.len(), 1);
        assert_eq!(&*reasons.name(6), "D");
    }

    #[test]
    fn protocols_by_name() {
        assert_eq!(protocol_name(0x0800), "ipv4");
        assert_eq!(protocol_name(0x86dd), "ipv6");
        assert_eq!(protocol_name(0x0806), "arp");
        assert_eq!(protocol_name(0x88cc), "0x88cc");
    }
}
