//! What a session can watch (`attach --only`): the sources attach only the
//! probes of the watched facets, and the outputs show only what those see.

use serde::Serialize;

/// What a session can watch; each needs its own probes, and only the probes of
/// the watched facets are attached (`attach --only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Facet {
    /// Scheduling rounds and on-CPU slice lengths (`runtime.schedule`).
    Schedule,
    /// Goroutine lifecycle: run-queue latency, parks and blocked time by reason,
    /// creation and exit, per-goroutine totals (`runtime.casgstatus`).
    Goroutines,
    /// Syscall counts and durations.
    Syscalls,
    /// SIGURG preemptions and where they landed.
    Preemptions,
}

impl Facet {
    pub const ALL: [Facet; 4] = [
        Facet::Schedule,
        Facet::Goroutines,
        Facet::Syscalls,
        Facet::Preemptions,
    ];
}
