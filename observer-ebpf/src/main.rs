//! Kernel programs of gobpf-sched: uprobes on the Go runtime scheduler of one
//! process, the `signal:signal_generate` tracepoint for SIGURG preemption requests
//! and `sched:sched_process_exec` for the target's exec.
//!
//! Everything the summary needs is counted here, in maps (per-CPU counters, park
//! counts by wait reason, per-goroutine totals). Through the ring buffer travel
//! the records printed one by one: SIGURGs, where they landed and what they
//! preempted (rare) — and every transition when `--events` or `--record` asks.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod programs;

// The crate is also a (useless) host binary so that `cargo build --workspace`
// does not fail; the real build targets bpfel-unknown-none (see observer/build.rs).
#[cfg(not(target_arch = "bpf"))]
fn main() {}
