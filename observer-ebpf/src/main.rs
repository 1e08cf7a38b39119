//! Kernel programs of gobpf-sched: uprobes on the Go runtime scheduler of one
//! process and the `signal:signal_generate` tracepoint for SIGURG preemption.
//!
//! Everything the summary needs is counted here, in maps (per-CPU counters, park
//! counts by wait reason, per-goroutine totals); only preemptions, which are rare
//! and printed one by one, travel through the ring buffer.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

// The crate is also a (useless) host binary so that `cargo build --workspace`
// does not fail; the real build targets bpfel-unknown-none (see observer/build.rs).
#[cfg(not(target_arch = "bpf"))]
fn main() {}
