//! Formatting every output shares (text lines, the live screen): durations,
//! times of day, the session header, the preemption log line, quantiles and
//! rankings — one home each, as libbpf-tools' trace_helpers is for its tools.

use std::{collections::BTreeMap, path::Path};

use crate::{
    facet::Facet,
    stats::{
        aggregate::{Bucket, quantile_bound},
        signals::{Outcome, Preemption},
    },
    target::labels::ProcessLabels,
};

/// Facts about the session printed with every report.
#[derive(Debug, Clone)]
pub struct Header {
    pub pid: u32,
    pub go_version: String,
    /// What the attached probes see; the rest is not shown.
    pub facets: Vec<Facet>,
    /// Execs of the target the session followed before this image.
    pub execs_followed: u64,
    /// What the process is: pids, names, container, pod.
    pub labels: ProcessLabels,
}

/// One preemption as a log line.
pub fn preemption_line(preemption: &Preemption) -> String {
    let goroutine = match preemption.goid {
        0 => "goid ?".to_owned(),
        goid => format!("goid {goid}"),
    };
    let ran = match (preemption.ran_ns, preemption.stopped) {
        (0, _) => "?".to_owned(),
        (ns, false) => duration(ns),
        (ns, true) => format!("{} (had just yielded)", duration(ns)),
    };
    let landed = match (&preemption.landed_in, preemption.landed_goid) {
        (Some(function), Some(goid)) if goid == preemption.goid => format!(", in {function}"),
        (Some(function), Some(0)) => format!(", landed in {function} (no goroutine)"),
        (Some(function), Some(goid)) => format!(", landed in {function} (goid {goid})"),
        _ => String::new(),
    };
    let (label, effect) = match preemption.outcome {
        Outcome::Preempted => ("PREEMPT", ""),
        Outcome::GcSuspended => ("GC-STOP", ", stopped for the GC's stack scan"),
        Outcome::NothingPreempted => ("SIGURG ", ", nothing preempted"),
        Outcome::Unseen => ("SIGURG ", ", outcome not seen (probes off)"),
    };
    let sender = match preemption.sender_tid {
        0 => "SIGURG sent before attach".to_owned(),
        tid => format!("SIGURG from tid {tid}"),
    };
    format!(
        "{} {label} tid {} {goroutine} m {} p {} ran {ran}{landed}{effect} ({sender})",
        time_of_day(preemption.unix_ns),
        preemption.tid,
        preemption.m,
        preemption.p,
    )
}

/// "99% of the values were below this" for a log2 histogram, or `-` when empty.
pub fn p99_or_dash(buckets: &[Bucket]) -> String {
    quantile_bound(buckets, 0.99)
        .map(duration)
        .unwrap_or_else(|| "-".to_owned())
}

/// The runtime's finer buckets (4 or 16 per power of two) merged into powers
/// of two, to be drawn like the probes' log2 histograms next to them; a merged
/// bucket ends where its last sub-bucket does. The same merge as the text
/// lines' (`lines::by_power_of_two`), so that both show the same rows.
pub fn by_power_of_two(buckets: &[Bucket]) -> Vec<Bucket> {
    let mut merged: Vec<Bucket> = Vec::new();
    let power = |ns: u64| if ns == 0 { 0 } else { 64 - ns.leading_zeros() };
    for bucket in buckets {
        match merged.last_mut() {
            Some(last) if power(last.from_ns) == power(bucket.from_ns) => {
                last.to_ns = bucket.to_ns;
                last.count += bucket.count;
            }
            _ => {
                let from_ns: u64 = if bucket.from_ns == 0 {
                    0
                } else {
                    1 << (power(bucket.from_ns) - 1)
                };
                let to_ns = match bucket.to_ns {
                    u64::MAX => u64::MAX,
                    _ if from_ns == 0 => bucket.to_ns,
                    _ => from_ns.saturating_mul(2),
                };
                merged.push(Bucket {
                    from_ns,
                    to_ns,
                    count: bucket.count,
                });
            }
        }
    }
    merged
}

/// The entries of a per-reason map, largest value first (then by name).
pub fn by_value_descending(map: &BTreeMap<String, u64>) -> Vec<(&String, u64)> {
    let mut entries: Vec<(&String, u64)> = map.iter().map(|(name, &value)| (name, value)).collect();
    entries.sort_by_key(|&(name, value)| (std::cmp::Reverse(value), name.clone()));
    entries
}

/// `1234567` → `1.23ms`.
pub fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

/// `HH:MM:SS.micros` (UTC) of a Unix-epoch nanosecond time.
pub fn time_of_day(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let day_secs = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{micros:06}",
        day_secs / 3600,
        (day_secs / 60) % 60,
        day_secs % 60
    )
}

/// A new file beside `path` (same directory: renaming it over `path` is
/// atomic), readable by all, named `.NAME.XXXX.partial` until it is kept.
/// `what` names the file in the error ("the profile", "the recording").
pub fn partial_file_beside(path: &Path, what: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    use anyhow::Context;
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create {what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(999), "999ns");
        assert_eq!(duration(12_400), "12.4µs");
        assert_eq!(duration(1_234_567), "1.23ms");
        assert_eq!(duration(2_500_000_000), "2.500s");
        assert_eq!(time_of_day(3_723_000_004_000), "01:02:03.000004");
    }

    #[test]
    fn runtime_buckets_merge_into_powers_of_two() {
        let bucket = |from_ns, to_ns, count| Bucket {
            from_ns,
            to_ns,
            count,
        };
        let merged = by_power_of_two(&[
            bucket(0, 128, 1),
            bucket(512, 640, 2),
            bucket(768, 896, 3),
            bucket(1024, 1280, 4),
            bucket(1 << 47, u64::MAX, 5),
        ]);
        assert_eq!(
            merged,
            [
                bucket(0, 128, 1),
                // Ends where its last values do.
                bucket(512, 896, 5),
                bucket(1024, 2048, 4),
                bucket(1 << 47, u64::MAX, 5),
            ]
        );
    }
}
