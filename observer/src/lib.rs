//! gobpf-sched: watch the Go runtime scheduler of a running process with eBPF.
//!
//! The folders are the flow:
//! `target` (the process and the machine) and `binary` (what its executable says)
//! → `sources` (kernel probes and their maps; the runtime's memory)
//! → `stats` (what happened over a span, named)
//! → `outputs` (text or JSON lines, the live screen, Prometheus, Perfetto).
//! `session` runs the loop of `attach`, `node` many sessions side by side
//! (`--all`); `inspect` prints what `binary` found;
//! `facet` names what a session watches.

pub mod binary;
pub mod facet;
pub mod inspect;
pub mod node;
pub mod outputs;
pub mod session;
pub mod sources;
pub mod stats;
pub mod target;
