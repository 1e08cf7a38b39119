//! CPU samples, summed up: where the target's CPU time goes (by the function
//! each goroutine was started with, and by function, flat and cumulative), how
//! much of it is the runtime's (GC, scheduler), and the blame view: while
//! goroutines waited in a run queue, who held the Ps.
//!
//! Blame is weighted by how many goroutines waited: a sample taken while 3
//! goroutines were queued for the P (its local queue, its runnext, the global
//! queue) counts 3. The shares are then of goroutine-time spent waiting,
//! attributed to what held the P meanwhile — the same quantity the exact view
//! (`stats::blame`) measures from transitions.

use std::collections::HashMap;

use gobpf_sched_common::{SampleCounts, SampleKey, sample_flags, sample_kind};
use serde::Serialize;

use crate::{
    sources::sampler::{Drained, SamplerCost},
    stats::{blame::ExactBlameView, names::Names},
};

/// Names of what ran when no goroutine's code did.
pub const SYSTEM_STACK: &str = "runtime (system stack)";
pub const SCHEDULER: &str = "runtime scheduler (system stack)";
pub const GC_SYSTEM: &str = "GC (system stack)";
pub const NOT_GO: &str = "not Go code (cgo, vDSO, a non-Go thread)";
pub const UNKNOWN_START: &str = "goroutine (start unknown)";
/// A frame outside Go's code and outside every mapping known.
pub const UNKNOWN_FUNCTION: &str = "[not Go code]";

/// Functions of the garbage collector (prefixes): a sample with one of them
/// on its stack is GC work, on whatever goroutine it runs (mark assists run on
/// the allocating goroutine).
const GC_FUNCTIONS: &[&str] = &[
    "runtime.gc",
    "runtime.markroot",
    "runtime.scanobject",
    "runtime.scanblock",
    "runtime.scanstack",
    "runtime.scanframeworker",
    "runtime.greyobject",
    "runtime.bgsweep",
    "runtime.sweepone",
    "runtime.bgscavenge",
    "runtime.wbBufFlush",
];

/// Functions of the scheduler's own loop (on g0).
const SCHEDULER_FUNCTIONS: &[&str] = &[
    "runtime.schedule",
    "runtime.findRunnable",
    "runtime.findrunnable",
    "runtime.stealWork",
    "runtime.mstart",
    "runtime.park_m",
    "runtime.goexit0",
    "runtime.gosched_m",
];

fn is_gc(function: &str) -> bool {
    GC_FUNCTIONS
        .iter()
        .any(|prefix| function.starts_with(prefix))
}

/// One sampled place, named: what the whole-run profile keeps (and the pprof
/// file is written from).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SampleSite {
    pub goid: u64,
    /// Who held the CPU: a start function, or one of the names above.
    pub holder: String,
    /// `g.startpc` (run-time), 0 when none.
    pub start_pc: u64,
    /// Run-time addresses, the interrupted pc first; empty when the stack
    /// was not kept.
    pub stack: Vec<u64>,
    pub flags: u32,
}

/// Samples named, with their counts.
#[derive(Debug, Default, Clone)]
pub struct NamedSamples {
    pub sites: HashMap<SampleSite, SampleCounts>,
}

impl NamedSamples {
    /// Names a drain's samples (functions looked up once per address).
    pub fn name(drained: &Drained, names: &Names, functions: &mut FunctionNames) -> Self {
        let mut sites: HashMap<SampleSite, SampleCounts> = HashMap::new();
        for (key, counts) in &drained.counts {
            let mut stack = drained
                .stacks
                .get(&key.stack_id)
                .cloned()
                .unwrap_or_default();
            functions.add_frameless_caller(names, &mut stack, key.leaf_return);
            let site = SampleSite {
                goid: key.goid,
                holder: holder(key, &stack, names, functions),
                start_pc: key.start_pc,
                stack,
                flags: key.flags,
            };
            add_counts(sites.entry(site).or_default(), counts);
        }
        Self { sites }
    }

    /// Adds `other`'s counts (the whole run from its intervals).
    pub fn add(&mut self, other: &NamedSamples) {
        for (site, counts) in &other.sites {
            add_counts(self.sites.entry(site.clone()).or_default(), counts);
        }
    }
}

fn add_counts(into: &mut SampleCounts, counts: &SampleCounts) {
    into.samples += counts.samples;
    into.while_waiting += counts.while_waiting;
    into.waiting_goroutines += counts.waiting_goroutines;
}

/// Function names by run-time address, looked up once.
#[derive(Default)]
pub struct FunctionNames {
    known: HashMap<u64, Option<String>>,
    /// Where code that is not Go's is mapped, named (see
    /// `Target::code_mappings`): what a frame outside Go is called.
    mappings: Vec<(u64, u64, String)>,
    /// `(pc, word)`: whether the word returns from the function at pc.
    returns: HashMap<(u64, u64), bool>,
}

impl FunctionNames {
    /// The process's code mappings as of now (frames outside Go are named
    /// after them from now on).
    pub fn set_mappings(&mut self, mappings: Vec<(u64, u64, String)>) {
        if !mappings.is_empty() {
            self.mappings = mappings;
        }
    }

    /// The frame-pointer walk skips the caller of a function interrupted
    /// before it has a frame (a leaf without one, or at its first
    /// instructions): `leaf_return`, the word at the stack pointer, is then
    /// the return address into that caller. It goes in as the second frame
    /// when it returns from a direct call of the interrupted function.
    fn add_frameless_caller(&mut self, names: &Names, stack: &mut Vec<u64>, leaf_return: u64) {
        let Some(&pc) = stack.first() else {
            return;
        };
        if leaf_return == 0 || stack.get(1) == Some(&leaf_return) {
            return;
        }
        let returns = *self
            .returns
            .entry((pc, leaf_return))
            .or_insert_with(|| (names.returns_from)(pc, leaf_return));
        if returns {
            stack.insert(1, leaf_return);
        }
    }

    /// The function at `pc`; `return_address`: look up the call instruction
    /// before it (a call may be the last instruction of its function).
    pub fn at(&mut self, names: &Names, pc: u64, return_address: bool) -> Option<&str> {
        let pc = if return_address {
            pc.saturating_sub(1)
        } else {
            pc
        };
        let mappings = &self.mappings;
        self.known
            .entry(pc)
            .or_insert_with(|| {
                names.function(pc).or_else(|| {
                    mappings
                        .iter()
                        .find(|(start, end, _)| (*start..*end).contains(&pc))
                        .map(|(_, _, name)| name.clone())
                })
            })
            .as_deref()
    }

    /// Every frame's function, leaf first (`None` outside Go code).
    pub fn stack(&mut self, names: &Names, stack: &[u64]) -> Vec<Option<String>> {
        stack
            .iter()
            .enumerate()
            .map(|(i, &pc)| self.at(names, pc, i > 0).map(str::to_owned))
            .collect()
    }
}

/// Who held the CPU at a sample.
fn holder(key: &SampleKey, stack: &[u64], names: &Names, functions: &mut FunctionNames) -> String {
    match key.flags & sample_kind::MASK {
        sample_kind::GOROUTINE => names
            .function(key.start_pc)
            .unwrap_or_else(|| UNKNOWN_START.to_owned()),
        sample_kind::SYSTEM => {
            let frames = functions.stack(names, stack);
            let any = |wanted: &dyn Fn(&str) -> bool| frames.iter().flatten().any(|f| wanted(f));
            if any(&is_gc) {
                GC_SYSTEM.to_owned()
            } else if any(&|f| SCHEDULER_FUNCTIONS.contains(&f)) {
                SCHEDULER.to_owned()
            } else {
                SYSTEM_STACK.to_owned()
            }
        }
        _ => NOT_GO.to_owned(),
    }
}

/// A name's part of a whole.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Share {
    pub name: String,
    /// Samples (CPU views), goroutines waiting summed over samples (the
    /// sampled blame) or goroutine-nanoseconds of waiting (the exact blame).
    pub count: u64,
    /// Of the whole, 0..=1.
    pub share: f64,
}

/// The sampled view of a span.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CpuView {
    /// CPU time a sample stands for.
    pub period_ns: u64,
    pub samples: u64,
    /// Estimated CPU time of the target (samples × period).
    pub cpu_ns: u64,
    /// Samples in the kernel (syscalls, faults), on a thread holding no P
    /// (a syscall, an idle M), and outside Go code.
    pub in_kernel: u64,
    pub holding_p: u64,
    pub not_go: u64,
    /// Samples of GC work and of the runtime (leaf in `runtime.`), and their
    /// shares.
    pub gc_samples: u64,
    pub runtime_samples: u64,
    pub gc_share: f64,
    pub runtime_share: f64,
    /// By who held the CPU: the goroutine's start function, or what ran
    /// without a goroutine (all of them).
    pub by_start_function: Vec<Share>,
    /// By function: where the sample landed (flat) ...
    pub by_function_flat: Vec<Share>,
    /// ... and every function on its stack (cumulative).
    pub by_function_cumulative: Vec<Share>,
    pub blame: BlameView,
    /// What the sampling program cost (whole run only; None when the
    /// kernel keeps no statistics).
    pub sampler_cost: Option<SamplerCost>,
}

/// While goroutines waited to run, who held the Ps.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct BlameView {
    /// Samples taken while goroutines waited for the sampled P ...
    pub samples: u64,
    /// ... and the goroutines waiting, summed over them.
    pub waiting_goroutines: u64,
    /// Mean goroutines waiting at those samples.
    pub mean_waiting: f64,
    /// Shares of the waiting (weighted by goroutines waiting) by holder (all
    /// of them) ...
    pub by_start_function: Vec<Share>,
    /// ... and by the function it ran.
    pub by_function: Vec<Share>,
    /// The same from the transitions, where the probes saw them (None when
    /// the goroutine and schedule probes are not used).
    pub exact: Option<ExactBlameView>,
}

impl CpuView {
    /// The view of `samples`, the `top` largest of each list.
    pub fn of(
        samples: &NamedSamples,
        period_ns: u64,
        names: &Names,
        functions: &mut FunctionNames,
        top: usize,
    ) -> Self {
        let mut view = CpuView {
            period_ns,
            ..CpuView::default()
        };
        let mut by_holder: HashMap<&str, u64> = HashMap::new();
        let mut flat: HashMap<String, u64> = HashMap::new();
        let mut cumulative: HashMap<String, u64> = HashMap::new();
        let mut blame_holder: HashMap<&str, u64> = HashMap::new();
        let mut blame_function: HashMap<String, u64> = HashMap::new();
        let (mut gc, mut runtime) = (0, 0);
        for (site, counts) in &samples.sites {
            let n = counts.samples;
            view.samples += n;
            if site.flags & sample_flags::IN_KERNEL != 0 {
                view.in_kernel += n;
            }
            if site.flags & sample_flags::HOLDS_P != 0 {
                view.holding_p += n;
            }
            if site.flags & sample_kind::MASK == sample_kind::NOT_GO {
                view.not_go += n;
            }
            *by_holder.entry(&site.holder).or_default() += n;
            let frames = functions.stack(names, &site.stack);
            let leaf = frames
                .first()
                .cloned()
                .flatten()
                .unwrap_or_else(|| UNKNOWN_FUNCTION.to_owned());
            if leaf.starts_with("runtime.") {
                runtime += n;
            }
            if site.holder == GC_SYSTEM
                || site.holder.starts_with("runtime.gcBgMarkWorker")
                || frames.iter().flatten().any(|f| is_gc(f))
            {
                gc += n;
            }
            *flat.entry(leaf.clone()).or_default() += n;
            let mut seen: Vec<&str> = Vec::new();
            for function in frames.iter().flatten() {
                if !seen.contains(&function.as_str()) {
                    seen.push(function);
                    *cumulative.entry(function.clone()).or_default() += n;
                }
            }
            if counts.waiting_goroutines > 0 {
                view.blame.samples += counts.while_waiting;
                view.blame.waiting_goroutines += counts.waiting_goroutines;
                *blame_holder.entry(&site.holder).or_default() += counts.waiting_goroutines;
                *blame_function.entry(leaf).or_default() += counts.waiting_goroutines;
            }
        }
        view.cpu_ns = view.samples * period_ns;
        (view.gc_samples, view.runtime_samples) = (gc, runtime);
        if view.samples > 0 {
            view.gc_share = gc as f64 / view.samples as f64;
            view.runtime_share = runtime as f64 / view.samples as f64;
        }
        // Every holder (bounded by the program's code, not its goroutines):
        // the exporter counts each.
        view.by_start_function = shares(by_holder, view.samples, usize::MAX);
        view.by_function_flat = shares(flat, view.samples, top);
        view.by_function_cumulative = shares(cumulative, view.samples, top);
        let weight = view.blame.waiting_goroutines;
        view.blame.by_start_function = shares(blame_holder, weight, usize::MAX);
        view.blame.by_function = shares(blame_function, weight, top);
        if view.blame.samples > 0 {
            view.blame.mean_waiting = weight as f64 / view.blame.samples as f64;
        }
        view
    }
}

/// The `top` largest, largest first (ties by name), as shares of `total`.
pub fn shares<K: AsRef<str>>(counts: HashMap<K, u64>, total: u64, top: usize) -> Vec<Share> {
    let mut list: Vec<Share> = counts
        .into_iter()
        .map(|(name, count)| Share {
            name: name.as_ref().to_owned(),
            count,
            share: if total == 0 {
                0.0
            } else {
                count as f64 / total as f64
            },
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.name.cmp(&b.name)));
    list.truncate(top);
    list
}
