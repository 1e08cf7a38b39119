//! Drains the kernel maps for one watched process (its slot): cumulative
//! counters, park counts by reason, per-goroutine totals (read each interval)
//! and its records of the ring buffer.

use std::{
    collections::HashMap,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    sync::Arc,
};

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
use aya_obj::generated::{bpf_attr, bpf_cmd};
use gobpf_sched_common::{
    ByReason, Counters, Event, GoroutineStats, Histogram, counter, process_key, split_process_key,
};

use crate::sources::kernel::Kernel;

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
    /// Live goroutines, those that exited since the last snapshot, and the
    /// busiest of those that exited earlier (see `Collector::retired`).
    pub goroutines: HashMap<u64, GoroutineStats>,
}

impl Snapshot {
    pub fn counter(&self, index: u32) -> u64 {
        self.counters[index as usize]
    }
}

pub struct Collector {
    kernel: Arc<Kernel>,
    /// The process's slot in the kernel programs' maps.
    slot: u32,
    counters: PerCpuArray<MapData, Counters>,
    parks: PerCpuArray<MapData, ByReason>,
    run_slices: PerCpuArray<MapData, Histogram>,
    runq_latency: PerCpuArray<MapData, Histogram>,
    blocked_ns: PerCpuArray<MapData, ByReason>,
    /// `GOROUTINES`, read in batches (aya has no batch API, see `lookup_all`).
    goroutines: MapData,
    /// The busiest deleted goroutines (final totals), as many as a summary lists:
    /// whole-run rankings stay exact while the map holds only live goroutines.
    retired: Vec<(u64, GoroutineStats)>,
    keep_retired: usize,
    /// Buffers of the batch reads, kept: allocated once, not every interval.
    batch: Batch<u64, GoroutineStats>,
}

impl Collector {
    /// `keep_retired`: how many exited goroutines the whole-run ranking keeps.
    pub fn new(kernel: Arc<Kernel>, slot: u32, keep_retired: usize) -> Result<Self> {
        Ok(Self {
            counters: kernel.open_map("COUNTERS")?,
            parks: kernel.open_map("PARKS")?,
            run_slices: kernel.open_map("RUN_SLICES")?,
            runq_latency: kernel.open_map("RUNQ_LATENCY")?,
            blocked_ns: kernel.open_map("BLOCKED_NS")?,
            goroutines: kernel.open_map_data("GOROUTINES")?,
            kernel,
            slot,
            retired: Vec::new(),
            keep_retired,
            batch: Batch::default(),
        })
    }

    /// The cumulative counters alone: one read (what the drain loop checks).
    pub fn counters(&self) -> Result<Counters> {
        let mut counters = [0; counter::COUNT as usize];
        counters.copy_from_slice(&sum_cpus(&self.counters, self.slot)?);
        Ok(counters)
    }

    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.snapshot_carrying(None)
    }

    /// A snapshot whose per-goroutine totals are `goroutines` when given:
    /// the caller knows the map has not changed (no transition probe was
    /// attached since it was read). Reading 100,000 entries costs ~20 ms.
    pub fn snapshot_carrying(
        &mut self,
        goroutines: Option<HashMap<u64, GoroutineStats>>,
    ) -> Result<Snapshot> {
        let counters = self.counters()?;
        let parks = sum_cpus(&self.parks, self.slot)?;
        let run_slices = sum_cpus(&self.run_slices, self.slot)?;
        let runq_latency = sum_cpus(&self.runq_latency, self.slot)?;
        let blocked_ns = sum_cpus(&self.blocked_ns, self.slot)?;
        let goroutines = match goroutines {
            Some(goroutines) => goroutines,
            None => self.goroutines()?,
        };
        Ok(Snapshot {
            counters,
            parks,
            run_slices,
            runq_latency,
            blocked_ns,
            goroutines,
        })
    }

    /// Reads the per-goroutine map and adds the retired goroutines; deletes
    /// the entries of goroutines that exited (final: marked after their last run
    /// slice), which this snapshot is the last to hold.
    pub fn goroutines(&mut self) -> Result<HashMap<u64, GoroutineStats>> {
        let fd = self.goroutines.fd().as_fd().as_raw_fd();
        let mut goroutines: HashMap<u64, GoroutineStats> = self.retired.iter().copied().collect();
        let mut exited = Vec::new();
        // Every process's goroutines are in the map: this one's have its slot.
        let slot = self.slot;
        self.batch.lookup_all(fd, |key, stats| {
            let (of, goid) = split_process_key(key);
            if of != slot {
                return;
            }
            if stats.exited != 0 {
                exited.push((goid, stats));
            }
            goroutines.insert(goid, stats);
        })?;
        let keys: Vec<u64> = exited
            .iter()
            .map(|(goid, _)| process_key(slot, *goid))
            .collect();
        delete_all(fd, &keys)?;
        for (goid, stats) in exited {
            self.retire(goid, stats);
        }
        Ok(goroutines)
    }

    /// Keeps `stats` if it ranks among the `keep_retired` busiest deleted
    /// goroutines (the order the summary ranks goroutines in).
    fn retire(&mut self, goid: u64, stats: GoroutineStats) {
        self.retired.push((goid, stats));
        self.retired.sort_by_key(|(goid, s)| {
            std::cmp::Reverse((s.run_ns, s.runs + s.parks + s.syscalls, *goid))
        });
        self.retired.truncate(self.keep_retired);
    }

    /// Drops from `snapshot` the goroutines deleted from the kernel map (but the
    /// retired ones): once reported, a snapshot is only the "before" of the
    /// next interval, where they cannot appear. An HTTP server ends thousands a
    /// second.
    pub fn forget_deleted(&self, snapshot: &mut Snapshot) {
        snapshot.goroutines.retain(|goid, stats| {
            stats.exited == 0 || self.retired.iter().any(|(retired, _)| retired == goid)
        });
    }

    /// Takes every record of this process waiting in the ring buffer.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.kernel.drain_events(self.slot)
    }
}

/// The values of entry `slot` of a per-process per-CPU array (see
/// `gobpf_sched_common::Counters`), summed over the CPUs: one syscall.
fn sum_cpus<const N: usize>(array: &PerCpuArray<MapData, [u64; N]>, slot: u32) -> Result<Vec<u64>> {
    let mut sums = vec![0; N];
    for cpu in array.get(&slot, 0)?.iter() {
        for (sum, value) in sums.iter_mut().zip(cpu) {
            *sum += value;
        }
    }
    Ok(sums)
}

/// Entries read per `BPF_MAP_LOOKUP_BATCH` call. A hash map's batch stops at a
/// bucket boundary, so this must exceed the longest bucket (a few entries).
const BATCH: usize = 4096;

/// Key and value buffers for `BPF_MAP_LOOKUP_BATCH`, allocated once.
struct Batch<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
}

impl<K: Copy + Default, V: Copy + Default> Default for Batch<K, V> {
    fn default() -> Self {
        Self {
            keys: vec![K::default(); BATCH],
            values: vec![V::default(); BATCH],
        }
    }
}

impl<K: Copy, V: Copy> Batch<K, V> {
    /// Visits every entry of a hash map, read with `BPF_MAP_LOOKUP_BATCH`: one
    /// syscall per `BATCH` entries (iterating key by key costs two per entry:
    /// 100k goroutines were 200k syscalls an interval). In the kernel since 5.6.
    fn lookup_all(&mut self, fd: i32, mut visit: impl FnMut(K, V)) -> Result<()> {
        let Self { keys, values } = self;
        // The position in the map, written by the kernel (a bucket index for hashes).
        let mut token = 0u64;
        let mut first = true;
        loop {
            // SAFETY: bpf_attr is plain data; zero is its default for every command.
            let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
            // SAFETY: `batch` is the union member BPF_MAP_LOOKUP_BATCH reads; the
            // buffers outlive the call and hold `BATCH` keys and values.
            let count = unsafe {
                attr.batch.in_batch = if first { 0 } else { (&raw const token) as u64 };
                attr.batch.out_batch = (&raw mut token) as u64;
                attr.batch.keys = keys.as_mut_ptr() as u64;
                attr.batch.values = values.as_mut_ptr() as u64;
                attr.batch.count = BATCH as u32;
                attr.batch.map_fd = fd as u32;
                let result = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
                let error = std::io::Error::last_os_error();
                let count = attr.batch.count as usize;
                if result < 0 && error.raw_os_error() != Some(libc::ENOENT) {
                    return Err(error).context("BPF_MAP_LOOKUP_BATCH");
                }
                for (key, value) in keys[..count].iter().zip(&values[..count]) {
                    visit(*key, *value);
                }
                if result < 0 {
                    break; // ENOENT: the last entries are in
                }
                count
            };
            if count == 0 {
                break;
            }
            first = false;
        }
        Ok(())
    }
}

/// Visits every entry of the hash map of `fd` (read in batches).
pub fn visit_entries<K: Copy + Default, V: Copy + Default>(
    fd: BorrowedFd<'_>,
    visit: impl FnMut(K, V),
) -> Result<()> {
    Batch::<K, V>::default().lookup_all(fd.as_raw_fd(), visit)
}

/// Deletes `keys` from the hash map of `fd`.
pub fn delete_keys<K>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<()> {
    delete_all(fd.as_raw_fd(), keys)
}

/// Deletes `keys` with `BPF_MAP_DELETE_BATCH`. A key already gone is no error
/// worth stopping for (the map is only ever shrunk here).
fn delete_all<K>(fd: i32, keys: &[K]) -> Result<()> {
    for chunk in keys.chunks(BATCH) {
        // SAFETY: as in `lookup_all`; `chunk` outlives the call.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        let result = unsafe {
            attr.batch.keys = chunk.as_ptr() as u64;
            attr.batch.count = chunk.len() as u32;
            attr.batch.map_fd = fd as u32;
            bpf(bpf_cmd::BPF_MAP_DELETE_BATCH, &mut attr)
        };
        let error = std::io::Error::last_os_error();
        if result < 0 && error.raw_os_error() != Some(libc::ENOENT) {
            return Err(error).context("BPF_MAP_DELETE_BATCH");
        }
    }
    Ok(())
}

/// The `bpf(2)` system call.
///
/// # Safety
/// `attr` must be valid for `command`.
pub unsafe fn bpf(command: bpf_cmd, attr: &mut bpf_attr) -> libc::c_long {
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command as libc::c_int,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>() as libc::c_uint,
        )
    }
}
