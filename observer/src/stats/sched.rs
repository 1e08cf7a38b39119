//! The scheduler at one moment, as `GODEBUG=schedtrace` shows it: read from
//! the target's memory by `sources::runtime_memory`.

use serde::Serialize;

use crate::stats::runtime_histogram::RuntimeCounts;

/// One P, as schedtrace shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProcState {
    pub id: i32,
    pub status: &'static str,
    /// Goroutines in its local run queue (`runqtail - runqhead`) ...
    pub runq: u32,
    /// ... plus one waiting in `runnext` (runs next, ahead of the queue).
    pub runnext: bool,
    /// Incremented by the runtime at each scheduling that starts a new time
    /// slice (`execute` without `inheritTime`) ...
    pub schedtick: u32,
    /// ... and at each syscall exit (and when sysmon retakes the P from one).
    pub syscalltick: u32,
}

impl ProcState {
    /// Goroutines waiting on this P: its local run queue and `runnext`.
    pub fn queued(&self) -> u32 {
        self.runq + u32::from(self.runnext)
    }
}

/// The runtime times one in this many of a goroutine's leaves from the CPU
/// (`gTrackingPeriod` in `runtime2.go`, 8 in Go 1.19 to 1.27).
const GOROUTINE_TRACKING_PERIOD: u64 = 8;

/// The scheduler at one moment.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct SchedState {
    pub gomaxprocs: u32,
    pub idle_procs: u32,
    /// Ms (OS threads) alive: `mnext - nmfreed`, schedtrace's `threads`.
    pub threads: u64,
    pub spinning_threads: u32,
    pub idle_threads: u32,
    /// Goroutines in the global run queue.
    pub global_runq: u32,
    pub procs: Vec<ProcState>,
    /// Some value kept changing while read: clamped to what is possible.
    pub approximate: bool,
    /// The runtime's own cumulative counters (shown as activity over a span:
    /// `stats::runtime_activity`).
    #[serde(skip)]
    pub counters: RuntimeCounters,
}

/// What the runtime counts itself, since the process started; None where the
/// Go version does not keep it (`SchedLayout::missing` says why).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeCounters {
    /// `sched.timeToRun`: run-queue latencies (`/sched/latencies:seconds`).
    pub time_to_run: Option<RuntimeCounts>,
    /// Stop-the-world pauses for the GC and for anything else (1.22+).
    pub stw_gc: Option<RuntimeCounts>,
    pub stw_other: Option<RuntimeCounts>,
    /// `sched.totalMutexWaitTime`: time goroutines waited on sync.Mutex and
    /// sync.RWMutex (1.20+).
    pub mutex_wait_ns: Option<u64>,
    /// `sched.goroutinesCreated` plus each P's (1.26+).
    pub goroutines_created: Option<u64>,
    /// `memstats.numgc`: GC cycles completed.
    pub gc_cycles: Option<u32>,
}

impl SchedState {
    /// Goroutines that left the CPU so far, as the runtime counts them: parks,
    /// yields and preemptions (from its `casgstatus`, every 8th of a
    /// goroutine's leaves is timed until it runs again, each recorded once in
    /// `sched.timeToRun`: its count × 8), plus syscalls (each P's
    /// `syscalltick`; Go 1.19 also times them). What the transition probes
    /// would see, without them: the duty cycle predicts a window's cost from it.
    /// None where the histogram is not found.
    pub fn goroutine_switches(&self) -> Option<u64> {
        let sampled: u64 = self.counters.time_to_run.as_ref()?.counts.iter().sum();
        let syscalls: u64 = self.procs.iter().map(|p| u64::from(p.syscalltick)).sum();
        Some(sampled * GOROUTINE_TRACKING_PERIOD + syscalls)
    }

    /// Runnable goroutines waiting in queues: global + local + runnext.
    pub fn runnable(&self) -> u64 {
        u64::from(self.global_runq)
            + self
                .procs
                .iter()
                .map(|p| u64::from(p.queued()))
                .sum::<u64>()
    }
}

/// The names of `_Pidle` … `_Pdead`, by value (runtime2.go, unchanged since Go 1.5).
pub const P_STATUSES: [&str; 5] = ["idle", "running", "syscall", "gcstop", "dead"];

pub fn p_status_name(status: u32) -> &'static str {
    P_STATUSES
        .get(status as usize)
        .copied()
        .unwrap_or("unknown")
}
