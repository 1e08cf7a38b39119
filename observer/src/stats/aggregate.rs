//! Turns cumulative snapshots into what happened over a span of time (one interval,
//! or the whole run).

use std::collections::BTreeMap;

use gobpf_sched_common::{GOROUTINE_HISTOGRAM_SLOTS, GoroutineStats, counter};
use serde::Serialize;

use crate::{sources::drain::Snapshot, stats::names::Names};

/// Scheduler activity over a span of time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// `runtime.schedule` calls.
    pub schedule: u64,
    /// Run slices started (`runtime.execute`).
    pub run_slices: u64,
    /// Time goroutines spent running in finished run slices.
    pub run_ns: u64,
    /// Lengths of those run slices: log2 buckets with at least one slice.
    pub run_slice_histogram: Vec<Bucket>,
    /// Time from runnable to running (waiting in a run queue for an M and a P).
    pub runq_latency_histogram: Vec<Bucket>,
    /// The sum of those latencies.
    pub runq_latency_ns: u64,
    /// Parks by wait reason (names from the binary).
    pub gopark: BTreeMap<String, u64>,
    /// Time blocked, by wait reason, for the waits that ended in the span.
    pub blocked_ns: BTreeMap<String, u64>,
    /// Goroutines created and exited.
    pub goroutines_created: u64,
    pub goroutines_exited: u64,
    pub gopark_total: u64,
    /// Matched entersyscall → exitsyscall pairs, and the time between.
    pub syscalls: u64,
    pub syscall_ns: u64,
    pub syscalls_entered: u64,
    pub syscalls_exited: u64,
    /// Goroutines a SIGURG preempted (running → runnable): async preemption.
    pub preemptions: u64,
    /// Goroutines preempted at a stack check, without a signal (cooperative).
    /// With `preemptions`, what runtime/trace records as "preempted".
    pub cooperative_preemptions: u64,
    /// SIGURG signals the runtime sent its threads (preemption requests) ...
    pub sigurg_signals: u64,
    /// ... of which stopped a goroutine for the GC to scan its stack ...
    pub gc_suspensions: u64,
    /// ... and found nothing to preempt (the goroutine had moved on, the thread
    /// was in the runtime or a syscall, not at a safe point).
    pub signals_without_effect: u64,
    /// Ring-buffer records lost.
    pub dropped: u64,
    /// Goroutines that found the kernel maps full (more than
    /// `MAX_GOROUTINES` at once): a run-queue latency or blocked time not
    /// measured, per-goroutine totals not kept.
    pub lost_latency_samples: u64,
    pub lost_goroutine_totals: u64,
    /// Offset self-checks (m.procid against the kernel's thread id) and failures.
    pub offset_checks: u64,
    pub offset_mismatches: u64,
    pub read_errors: u64,
    /// Probe hits skipped because the call restarted after growing its stack.
    pub restarts: u64,
    /// Every uprobe hit (restarts included): what the session costs the target
    /// is about this many times the per-hit cost (`cargo xtask bench`).
    pub probe_hits: u64,
    /// The busiest goroutines (by run time, then scheduling events).
    pub top_goroutines: Vec<GoroutineRow>,
}

/// One goroutine's activity over the span.
/// Values in `[from_ns, to_ns)`, as in the histograms of libbpf-tools' runqlat.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub from_ns: u64,
    pub to_ns: u64,
    pub count: u64,
}

/// The upper end of the bucket holding the `q` quantile (0 < q ≤ 1) of a log2
/// histogram: "99% of the values are below this".
pub fn quantile_bound(buckets: &[Bucket], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let rank = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    buckets.iter().find_map(|bucket| {
        seen += bucket.count;
        (total > 0 && seen >= rank).then_some(bucket.to_ns)
    })
}

/// The non-empty buckets of the difference of two cumulative log2 histograms.
fn histogram(before: &[u64], after: &[u64]) -> Vec<Bucket> {
    after
        .iter()
        .enumerate()
        .filter_map(|(slot, &count)| {
            let count = count.saturating_sub(before.get(slot).copied().unwrap_or(0));
            (count > 0).then(|| Bucket {
                from_ns: if slot == 0 { 0 } else { 1 << slot },
                to_ns: 1u64.checked_shl(slot as u32 + 1).unwrap_or(u64::MAX),
                count,
            })
        })
        .collect()
}

/// One goroutine's activity over the span.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GoroutineRow {
    pub goid: u64,
    /// The function it was started with, when known.
    pub start_function: Option<String>,
    #[serde(flatten)]
    pub totals: GoroutineStats,
    /// Its run-queue latencies over the span.
    pub runq_latency_histogram: Vec<Bucket>,
}

impl Stats {
    /// What happened between `before` and `after`; `top` goroutines are listed.
    pub fn between(before: &Snapshot, after: &Snapshot, names: &Names<'_>, top: usize) -> Self {
        let delta = |index| after.counter(index).saturating_sub(before.counter(index));
        Self {
            schedule: delta(counter::SCHEDULE),
            run_slices: delta(counter::EXECUTE),
            run_ns: delta(counter::RUN_NS),
            run_slice_histogram: histogram(&before.run_slices, &after.run_slices),
            gopark_total: delta(counter::GOPARK),
            gopark: by_reason(&before.parks, &after.parks, names),
            blocked_ns: by_reason(&before.blocked_ns, &after.blocked_ns, names),
            runq_latency_histogram: histogram(&before.runq_latency, &after.runq_latency),
            runq_latency_ns: delta(counter::RUNQ_NS),
            goroutines_created: delta(counter::CREATED),
            goroutines_exited: delta(counter::EXITED),
            syscalls: delta(counter::SYSCALL_PAIRS),
            syscall_ns: delta(counter::SYSCALL_NS),
            syscalls_entered: delta(counter::SYSCALL_ENTER),
            syscalls_exited: delta(counter::SYSCALL_EXIT),
            preemptions: delta(counter::ASYNC_PREEMPTED),
            cooperative_preemptions: delta(counter::COOPERATIVE_PREEMPTED),
            sigurg_signals: delta(counter::PREEMPT),
            gc_suspensions: delta(counter::GC_SUSPENDED),
            signals_without_effect: delta(counter::PREEMPT)
                .saturating_sub(delta(counter::ASYNC_PREEMPTED) + delta(counter::GC_SUSPENDED)),
            dropped: delta(counter::DROPPED),
            lost_latency_samples: delta(counter::G_STATE_LOST),
            lost_goroutine_totals: delta(counter::GOROUTINES_LOST),
            offset_checks: delta(counter::OFFSET_CHECKS),
            offset_mismatches: delta(counter::OFFSET_MISMATCHES),
            read_errors: delta(counter::READ_ERRORS),
            restarts: delta(counter::RESTARTS),
            probe_hits: delta(counter::PROBE_HITS),
            top_goroutines: top_goroutines(before, after, top, names),
        }
    }
}

/// Differences of cumulative per-reason arrays, keyed by the reason's name.
fn by_reason(before: &[u64], after: &[u64], names: &Names<'_>) -> BTreeMap<String, u64> {
    let mut named = BTreeMap::new();
    for (reason, &value) in after.iter().enumerate() {
        let value = value.saturating_sub(before.get(reason).copied().unwrap_or(0));
        if value > 0 {
            *named.entry(names.reason(reason as u64)).or_insert(0) += value;
        }
    }
    named
}

fn top_goroutines(
    before: &Snapshot,
    after: &Snapshot,
    top: usize,
    names: &Names<'_>,
) -> Vec<GoroutineRow> {
    let zero = GoroutineStats::default();
    // Rank first, build rows for the top only: a target may have 100k goroutines.
    let mut ranked: Vec<((u64, u64, u64), u64)> = after
        .goroutines
        .iter()
        .filter_map(|(&goid, now)| {
            let was = before.goroutines.get(&goid).unwrap_or(&zero);
            let d = |now: u64, was: u64| now.saturating_sub(was);
            let run_ns = d(now.run_ns, was.run_ns);
            let events =
                d(now.runs, was.runs) + d(now.parks, was.parks) + d(now.syscalls, was.syscalls);
            let active = run_ns
                + events
                + d(now.preemptions, was.preemptions)
                + d(now.runq_wait_ns, was.runq_wait_ns)
                > 0;
            active.then_some(((run_ns, events, goid), goid))
        })
        .collect();
    ranked.sort_unstable_by_key(|(key, _)| std::cmp::Reverse(*key));
    ranked.truncate(top);
    let mut rows: Vec<GoroutineRow> = ranked
        .into_iter()
        .map(|(_, goid)| {
            let now = &after.goroutines[&goid];
            let was = before.goroutines.get(&goid).unwrap_or(&zero);
            let mut runq_latency = [0; GOROUTINE_HISTOGRAM_SLOTS];
            for (slot, count) in runq_latency.iter_mut().enumerate() {
                *count = now.runq_latency[slot].saturating_sub(was.runq_latency[slot]);
            }
            let widen = |counts: &[u32]| counts.iter().map(|&c| u64::from(c)).collect::<Vec<_>>();
            GoroutineRow {
                goid,
                start_function: None,
                runq_latency_histogram: histogram(&[], &widen(&runq_latency)),
                totals: GoroutineStats {
                    run_ns: now.run_ns.saturating_sub(was.run_ns),
                    runs: now.runs.saturating_sub(was.runs),
                    parks: now.parks.saturating_sub(was.parks),
                    syscalls: now.syscalls.saturating_sub(was.syscalls),
                    syscall_ns: now.syscall_ns.saturating_sub(was.syscall_ns),
                    preemptions: now.preemptions.saturating_sub(was.preemptions),
                    runq_wait_ns: now.runq_wait_ns.saturating_sub(was.runq_wait_ns),
                    start_pc: now.start_pc,
                    runq_latency,
                    exited: now.exited,
                },
            }
        })
        .collect();
    for row in &mut rows {
        if row.totals.start_pc != 0 {
            row.start_function = names.function(row.totals.start_pc);
        }
    }
    rows
}
