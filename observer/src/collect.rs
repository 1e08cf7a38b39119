//! Drains the kernel maps: cumulative counters, park counts by reason, per-goroutine
//! totals (read each interval) and the ring buffer of preemption events.

use std::collections::HashMap;

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
};
use gobpf_sched_common::{ByReason, Counters, Event, GoroutineStats, Histogram, counter};

/// Everything the maps held at one moment. All values are cumulative since attach.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: [u64; counter::COUNT as usize],
    pub parks: Vec<u64>,
    /// Run-slice lengths, log2 histogram (see `HISTOGRAM_SLOTS`).
    pub run_slices: Vec<u64>,
    /// Run-queue latency, log2 histogram.
    pub runq_latency: Vec<u64>,
    /// Nanoseconds blocked, by wait reason.
    pub blocked_ns: Vec<u64>,
    pub goroutines: HashMap<u64, GoroutineStats>,
}

impl Snapshot {
    pub fn counter(&self, index: u32) -> u64 {
        self.counters[index as usize]
    }
}

pub struct Collector {
    counters: PerCpuArray<MapData, Counters>,
    parks: PerCpuArray<MapData, ByReason>,
    run_slices: PerCpuArray<MapData, Histogram>,
    runq_latency: PerCpuArray<MapData, Histogram>,
    blocked_ns: PerCpuArray<MapData, ByReason>,
    goroutines: BpfHashMap<MapData, u64, GoroutineStats>,
    events: RingBuf<MapData>,
}

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    Ok(T::try_from(map)?)
}

impl Collector {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Self {
            counters: take(ebpf, "COUNTERS")?,
            parks: take(ebpf, "PARKS")?,
            run_slices: take(ebpf, "RUN_SLICES")?,
            runq_latency: take(ebpf, "RUNQ_LATENCY")?,
            blocked_ns: take(ebpf, "BLOCKED_NS")?,
            goroutines: take(ebpf, "GOROUTINES")?,
            events: take(ebpf, "EVENTS")?,
        })
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut counters = [0; counter::COUNT as usize];
        counters.copy_from_slice(&sum_cpus(&self.counters)?);
        let parks = sum_cpus(&self.parks)?;
        let run_slices = sum_cpus(&self.run_slices)?;
        let runq_latency = sum_cpus(&self.runq_latency)?;
        let blocked_ns = sum_cpus(&self.blocked_ns)?;
        // An entry may be evicted between listing keys and reading it: skip those.
        let goroutines = self.goroutines.iter().filter_map(Result::ok).collect();
        Ok(Snapshot {
            counters,
            parks,
            run_slices,
            runq_latency,
            blocked_ns,
            goroutines,
        })
    }

    /// Takes every record waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            if item.len() >= size_of::<Event>() {
                // SAFETY: the kernel wrote an `Event` (same #[repr(C)] definition);
                // read_unaligned copes with the ring buffer's 8-byte alignment.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) });
            }
        }
        events
    }
}

/// The slots of a one-entry per-CPU array (see `gobpf_sched_common::Counters`),
/// summed over the CPUs: one syscall.
fn sum_cpus<const N: usize>(array: &PerCpuArray<MapData, [u64; N]>) -> Result<Vec<u64>> {
    let mut sums = vec![0; N];
    for cpu in array.get(&0, 0)?.iter() {
        for (sum, value) in sums.iter_mut().zip(cpu) {
            *sum += value;
        }
    }
    Ok(sums)
}
