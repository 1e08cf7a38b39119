//! What watching costs the target, over a span: the share of time the
//! transition probes were attached (coverage), the measured cost of a hit, and
//! the estimated share of the target's CPU time spent in the probes.

use serde::Serialize;

/// The probes' cost over a span.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProbeCost {
    /// "exact" (probes always on) or "budget" (in windows).
    pub mode: &'static str,
    /// The share of the target's CPU time the probes may cost (budget mode).
    pub budget: Option<f64>,
    /// Share of the span the transition probes were attached. Counts of
    /// transitions are exact only at 1; below, they cover the windows only.
    pub coverage: f64,
    pub probes_on_ns: u64,
    pub span_ns: u64,
    /// Uprobe hits in the span (always-on preemption probes included) ...
    pub probe_hits: u64,
    /// ... of which while windows were being detached (their programs only
    /// counted them: each cost the trap alone) ...
    pub closing_hits: u64,
    /// ... and traps estimated while windows were being detached, after the
    /// kernel had removed their programs (which no program counts: the
    /// window's rate of hits over the time each link took to go, weighted by
    /// its share of the hits), each costing the trap alone.
    pub detach_traps: u64,
    /// ... each costing about this much: the trap (measured at start) plus
    /// the programs' own run time (the kernel's BPF statistics).
    pub per_hit_ns: f64,
    pub trap_ns: f64,
    pub program_ns: Option<f64>,
    /// CPU time the target used in the span (/proc/PID/stat) ...
    pub target_cpu_ns: u64,
    /// ... of which the probes took about this share (((hits − closing hits)
    /// × per-hit cost + (closing hits + detach traps) × the trap's cost) ÷
    /// the target's CPU time); None when the target used no measurable CPU.
    pub estimated_overhead: Option<f64>,
    /// Windows opened so far, and how long the last one took to open (the
    /// uprobes attached again).
    pub windows: u64,
    pub window_open_ns: Option<u64>,
}

impl ProbeCost {
    /// Whether counts over the span are exact (the probes were on throughout).
    pub fn exact(&self) -> bool {
        self.coverage >= 1.0
    }

    /// `count` seen while the probes were on, as a rate over the span
    /// (per second): an estimate below full coverage.
    pub fn rate(&self, count: u64) -> Option<f64> {
        (self.probes_on_ns > 0).then(|| count as f64 * 1e9 / self.probes_on_ns as f64)
    }

    /// Whether the estimate passes the budget (what `--exact` warns about).
    pub fn over_budget(&self) -> bool {
        matches!((self.estimated_overhead, self.budget), (Some(o), Some(b)) if o > b)
    }
}
