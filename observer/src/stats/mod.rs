//! What happened over a span of time, from what the sources collected: counts
//! and histograms per interval and whole run (`aggregate`), each SIGURG paired
//! with what it did (`signals`), the scheduler state read from memory (`sched`),
//! what watching costs (`cost`), the runtime's own counters over a span (`runtime_activity`, with its
//! histograms in `runtime_histogram`), the goroutine census (`census`), the CPU samples (`cpu_samples`) and who held the Ps during run-queue waits
//! by the transitions (`blame`), and the
//! names of what the kernel reports by number (`names`, `clock`).

pub mod aggregate;
pub mod blame;
pub mod census;
pub mod clock;
pub mod cost;
pub mod cpu_samples;
pub mod names;
pub mod runtime_activity;
pub mod runtime_histogram;
pub mod sched;
pub mod signals;
