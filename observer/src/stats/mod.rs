//! What happened over a span of time, from what the sources collected: counts
//! and histograms per interval and whole run (`aggregate`), each SIGURG paired
//! with what it did (`signals`), the scheduler state read from memory (`sched`),
//! and the names of what the kernel reports by number (`names`, `clock`).

pub mod aggregate;
pub mod clock;
pub mod names;
pub mod sched;
pub mod signals;
