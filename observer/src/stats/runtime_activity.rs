//! What the runtime's own counters say happened between two reads of its
//! memory: the always-on view, which costs the target nothing (no probe).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{
    census::Census,
    runtime_histogram::{RuntimeCounts, RuntimeHistogram},
    sched::SchedState,
};

/// The runtime's view at the end of a session.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeSummary {
    /// From attach to the end.
    pub whole_run: RuntimeActivity,
    /// Since the process started (the runtime's counters as they are).
    pub since_start: RuntimeActivity,
    pub census: Option<Census>,
}

/// The runtime's counters over a span (an interval, the whole run, or since
/// the process started).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RuntimeActivity {
    pub span_ns: u64,
    /// `sched.timeToRun`: how long goroutines waited to run, as the runtime
    /// measured it for about one transition in eight; with its own buckets.
    pub run_queue_latency: Option<RuntimeHistogram>,
    /// Stop-the-world pauses (from stop request to restart), for the GC and
    /// for anything else.
    pub stw_gc_pauses: Option<RuntimeHistogram>,
    pub stw_other_pauses: Option<RuntimeHistogram>,
    /// Time goroutines waited on sync.Mutex / RWMutex.
    pub mutex_wait_ns: Option<u64>,
    pub goroutines_created: Option<u64>,
    pub gc_cycles: Option<u64>,
    /// New time slices started (the Ps' `schedtick`) and syscalls left (their
    /// `syscalltick`), over all Ps ...
    pub run_slices: u64,
    pub syscalls: u64,
    /// ... and per P.
    pub per_p: Vec<ProcTicks>,
    /// What this Go version does not keep, and why: shown as such, never guessed.
    pub not_kept: BTreeMap<&'static str, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ProcTicks {
    pub id: i32,
    pub run_slices: u64,
    pub syscalls: u64,
}

impl RuntimeActivity {
    /// From `before` (None: since the process started) to `after`, `span_ns`
    /// apart; `missing`: the counters the binary lacks, with why.
    pub fn between(
        before: Option<&SchedState>,
        after: &SchedState,
        span_ns: u64,
        missing: &[(&'static str, String)],
    ) -> Self {
        let old = before.map(|b| &b.counters);
        let new = &after.counters;
        let histogram = |now: &Option<RuntimeCounts>, then: Option<&Option<RuntimeCounts>>| {
            now.as_ref()
                .map(|counts| counts.since(then.and_then(Option::as_ref)))
        };
        let delta = |now: Option<u64>, then: Option<Option<u64>>| {
            now.map(|n| n.saturating_sub(then.flatten().unwrap_or(0)))
        };
        let per_p: Vec<ProcTicks> = after
            .procs
            .iter()
            .map(|p| {
                let previous = before.and_then(|b| b.procs.iter().find(|q| q.id == p.id));
                // The counters wrap around; a P destroyed and made again
                // (GOMAXPROCS changed) starts from 0 (a "negative" difference).
                let ticks = |now: u32, then: Option<u32>| {
                    let since = then.map_or(now, |then| now.wrapping_sub(then));
                    u64::from(if since < 1 << 31 { since } else { now })
                };
                ProcTicks {
                    id: p.id,
                    run_slices: ticks(p.schedtick, previous.map(|q| q.schedtick)),
                    syscalls: ticks(p.syscalltick, previous.map(|q| q.syscalltick)),
                }
            })
            .collect();
        Self {
            span_ns,
            run_queue_latency: histogram(&new.time_to_run, old.map(|o| &o.time_to_run)),
            stw_gc_pauses: histogram(&new.stw_gc, old.map(|o| &o.stw_gc)),
            stw_other_pauses: histogram(&new.stw_other, old.map(|o| &o.stw_other)),
            mutex_wait_ns: delta(new.mutex_wait_ns, old.map(|o| o.mutex_wait_ns)),
            goroutines_created: delta(new.goroutines_created, old.map(|o| o.goroutines_created)),
            gc_cycles: delta(
                new.gc_cycles.map(u64::from),
                old.map(|o| o.gc_cycles.map(u64::from)),
            ),
            run_slices: per_p.iter().map(|p| p.run_slices).sum(),
            syscalls: per_p.iter().map(|p| p.syscalls).sum(),
            per_p,
            not_kept: missing.iter().cloned().collect(),
        }
    }
}
