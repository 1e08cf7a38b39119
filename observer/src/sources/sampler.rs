//! CPU sampling: the `cpu_sample` perf-event program on the software cpu-clock
//! of every CPU, kept to the watched processes' threads. It counts in the
//! kernel by process, goroutine and user stack; here the counts are read and
//! emptied (for every process at once: `kernel` sorts them out). The cost is per sample (a few µs a second at 99 Hz), whatever
//! the scheduling rate.

use std::collections::HashMap;

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap, StackTraceMap},
    programs::{
        PerfEvent,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
    util::online_cpus,
};
use gobpf_sched_common::{SampleCounts, SampleKey};

/// The default sampling rate: 99 Hz, not 100, so that the samples do not
/// fall in step with the program's own 10 ms timers (as `perf` and
/// `bpftrace`'s `profile:hz:99` do).
pub const DEFAULT_HZ: u64 = 99;

/// Samples drained at one read: counts by what they found, with their user
/// stacks (run-time addresses, the interrupted pc first, then return
/// addresses).
#[derive(Debug, Default)]
pub struct Drained {
    pub counts: Vec<(SampleKey, SampleCounts)>,
    pub stacks: HashMap<i32, Vec<u64>>,
}

pub struct Sampler {
    counts: PerCpuHashMap<MapData, SampleKey, SampleCounts>,
    stacks: StackTraceMap<MapData>,
    /// Nanoseconds of CPU time between two samples of a thread.
    pub period_ns: u64,
    /// The program's id, to read the kernel's statistics of it.
    pub program_id: u32,
}

/// What the sampling program has cost, by the kernel's statistics (on while
/// the session holds them on, see `probes::Probes`).
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq)]
pub struct SamplerCost {
    /// Every run, on every CPU: a sample of another process ends at the
    /// first check.
    pub runs: u64,
    pub run_ns: u64,
    pub ns_per_run: f64,
}

/// The runs and run time so far of the sampling program `program_id`.
pub fn cost_of(program_id: u32) -> Option<SamplerCost> {
    let info = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == program_id)?;
    let (runs, run_ns) = (info.run_count(), info.run_time().as_nanos() as u64);
    (runs > 0).then(|| SamplerCost {
        runs,
        run_ns,
        ns_per_run: run_ns as f64 / runs as f64,
    })
}

impl Drained {
    /// Adds these samples to the ones of their processes' slots.
    pub fn sort_into(self, by_slot: &mut HashMap<u32, Drained>) {
        for (key, counts) in self.counts {
            let drained = by_slot.entry(key.slot).or_default();
            if let Some(stack) = self.stacks.get(&key.stack_id) {
                drained.stacks.insert(key.stack_id, stack.clone());
            }
            drained.counts.push((key, counts));
        }
    }
}

impl Sampler {
    /// Attaches `cpu_sample` to the cpu-clock of every online CPU at `hz`.
    pub fn attach(ebpf: &mut Ebpf, hz: u64) -> Result<Self> {
        let period_ns = 1_000_000_000 / hz.max(1);
        let program: &mut PerfEvent = ebpf
            .program_mut("cpu_sample")
            .context("the eBPF object has no program cpu_sample")?
            .try_into()?;
        program.load().context("the verifier rejected cpu_sample")?;
        let program_id = program.info()?.id();
        let cpus = online_cpus().map_err(|(path, error)| {
            anyhow::anyhow!("cannot read the online CPUs from {path}: {error}")
        })?;
        for cpu in cpus {
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    // A period, not a frequency: each sample then stands for
                    // exactly `period_ns` of CPU time.
                    SamplePolicy::Period(period_ns),
                    false,
                )
                .with_context(|| {
                    format!("cannot open the cpu-clock perf event on CPU {cpu} (perf_event_open)")
                })?;
        }
        let counts = ebpf
            .take_map("CPU_SAMPLES")
            .context("the eBPF object has no map CPU_SAMPLES")?;
        let stacks = ebpf
            .take_map("SAMPLE_STACKS")
            .context("the eBPF object has no map SAMPLE_STACKS")?;
        Ok(Self {
            counts: PerCpuHashMap::try_from(counts)?,
            stacks: StackTraceMap::try_from(stacks)?,
            period_ns,
            program_id,
        })
    }

    /// What was counted since the last drain; the maps are emptied. (A
    /// sample counted between the read of a key and its removal is lost:
    /// microseconds a second.)
    pub fn drain(&mut self) -> Result<Drained> {
        let counts: Vec<(SampleKey, SampleCounts)> = self
            .counts
            .iter()
            .filter_map(Result::ok)
            .map(|(key, per_cpu)| {
                let mut sum = SampleCounts::default();
                for counts in per_cpu.iter() {
                    sum.samples += counts.samples;
                    sum.while_waiting += counts.while_waiting;
                    sum.waiting_goroutines += counts.waiting_goroutines;
                }
                (key, sum)
            })
            .collect();
        for (key, _) in &counts {
            let _ = self.counts.remove(key);
        }
        let mut stacks = HashMap::new();
        for (key, _) in &counts {
            let Ok(id) = u32::try_from(key.stack_id) else {
                continue;
            };
            if stacks.contains_key(&key.stack_id) {
                continue;
            }
            if let Ok(trace) = self.stacks.get(&id, 0) {
                stacks.insert(
                    key.stack_id,
                    trace.frames().iter().map(|frame| frame.ip).collect(),
                );
            }
        }
        for id in stacks.keys() {
            let _ = self.stacks.remove(&(*id as u32));
        }
        Ok(Drained { counts, stacks })
    }
}
