//! The block profile's counts: where goroutines parked (user stacks taken by
//! the `go_gopark` probe) and how long they stayed blocked, summed in the
//! kernel by stack and wait reason. Read once, at the end.

use anyhow::{Context, Result};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap, StackTraceMap},
};
use gobpf_sched_common::{BlockCounts, BlockKey};

pub struct BlockStacks {
    counts: PerCpuHashMap<MapData, BlockKey, BlockCounts>,
    stacks: StackTraceMap<MapData>,
}

/// One place goroutines parked at.
pub struct BlockSite {
    /// Run-time addresses: gopark, its caller, then the frames above.
    pub stack: Vec<u64>,
    pub reason: u32,
    pub counts: BlockCounts,
}

impl BlockStacks {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let counts = ebpf
            .take_map("BLOCK_PROFILE")
            .context("the eBPF object has no map BLOCK_PROFILE")?;
        let stacks = ebpf
            .take_map("BLOCK_STACKS")
            .context("the eBPF object has no map BLOCK_STACKS")?;
        Ok(Self {
            counts: PerCpuHashMap::try_from(counts)?,
            stacks: StackTraceMap::try_from(stacks)?,
        })
    }

    /// Every place the process in `slot` parked at so far, with its stack.
    pub fn read(&self, slot: u32) -> Vec<BlockSite> {
        self.counts
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, _)| key.slot == slot)
            .map(|(key, per_cpu)| {
                let mut counts = BlockCounts::default();
                for cpu in per_cpu.iter() {
                    counts.count += cpu.count;
                    counts.blocked_ns += cpu.blocked_ns;
                }
                let mut stack: Vec<u64> = u32::try_from(key.stack_id)
                    .ok()
                    .and_then(|id| self.stacks.get(&id, 0).ok())
                    .map(|trace| trace.frames().iter().map(|f| f.ip).collect())
                    .unwrap_or_default();
                // The probe runs before gopark has a frame: the walk skips
                // its caller, whose return address was at the stack pointer.
                if key.caller != 0 && stack.get(1) != Some(&key.caller) && !stack.is_empty() {
                    stack.insert(1, key.caller);
                }
                BlockSite {
                    stack,
                    reason: key.reason,
                    counts,
                }
            })
            .collect()
    }
}
