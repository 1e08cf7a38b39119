//! How facts are collected from the target: kernel probes (`probes`: which ones
//! the watched facets need; load and attach them), the drain of their maps and
//! ring buffer (`drain`), and the runtime's own bookkeeping read from the
//! target's memory (`runtime_memory`; every goroutine: `goroutines`).

pub mod drain;
pub mod goroutines;
pub mod probes;
pub mod runtime_memory;
