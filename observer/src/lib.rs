//! gobpf-sched: watch the Go runtime scheduler of a running process with eBPF.
//!
//! Flow: `binary` (what the executable is; `inspect` prints it) → `probes` (which
//! probes the watched facets need; load and attach the kernel programs) →
//! `collect` (drain maps and ring buffer) and `sched_state` (the scheduler's own
//! bookkeeping, read from the target's memory) → `aggregate` (per interval and
//! whole-run numbers) → outputs: `output` (text or JSON lines), `tui` (the live
//! screen), `metrics` (Prometheus), `record` (Perfetto). `session` runs it;
//! `target` and `system` check the process and the machine.

pub mod aggregate;
pub mod binary;
pub mod collect;
pub mod inspect;
pub mod metrics;
pub mod output;
pub mod probes;
pub mod record;
pub mod sched_state;
pub mod session;
pub mod signals;
pub mod system;
pub mod target;
pub mod tui;
pub mod wait_reasons;
