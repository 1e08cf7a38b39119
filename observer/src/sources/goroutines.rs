//! Every goroutine, read from the target's memory: `runtime.allgs`, the slice of
//! every `g` ever created (dead ones are kept for reuse), and of each g only the
//! few fields a goroutine dump shows (status, wait reason, goid, since when it
//! waits, start function), read in batches of pieces per `process_vm_readv`.
//! What `GODEBUG`'s goroutine dump or `/debug/pprof/goroutine` show, without an
//! endpoint or a signal to the target.

use anyhow::{Context, Result, bail};

use crate::{
    binary::{GoBinary, fields},
    sources::runtime_memory::{read_memory, read_ranges, u32_at, u64_at},
};

/// More goroutines than this in `allgs` is a torn read (each takes at least a
/// 2 KiB stack: 2^26 of them would be 128 GiB).
const MAX_GOROUTINES: u64 = 1 << 26;

/// Where the goroutines are, for one process.
#[derive(Debug, Clone)]
pub struct GoroutinesLayout {
    /// Run-time address of `runtime.allgs`.
    allgs: u64,
    /// The piece of a g read first: from `atomicstatus` to the end of the last
    /// of goid, waitsince, waitreason and trackingSeq (they lie within 64 bytes
    /// in every version).
    head: (u64, usize),
    status: usize,
    goid: usize,
    waitsince: usize,
    waitreason: usize,
    tracking_seq: usize,
    /// `startpc`, read alone further on.
    startpc: u64,
}

/// A range of the target's memory holding one or more gs: its address and
/// length, and where each g's first field read lies in it.
struct GRange {
    address: u64,
    len: usize,
    gs: Vec<usize>,
}

/// gs closer than this are read as one range, the bytes between included:
/// what a read costs the kernel is per piece, far more than per byte (the
/// runtime allocates gs side by side, so most ranges hold many).
const MERGE_GAP: u64 = 1024;
/// ... up to ranges of this size.
const LONGEST_RANGE: u64 = 256 << 10;
/// Ranges are read this many bytes at a time (the memory a census holds).
const BYTES_PER_BATCH: usize = 4 << 20;

impl GoroutinesLayout {
    /// The ranges to read for the gs at `addresses` (from their first field
    /// read to `startpc`), in address order, merged where they are close.
    fn ranges(&self, addresses: &[u64]) -> Vec<GRange> {
        let (first, end) = (
            self.head.0,
            (self.head.0 + self.head.1 as u64).max(self.startpc + 8),
        );
        let mut order: Vec<u64> = addresses.to_vec();
        order.sort_unstable();
        order.dedup();
        let mut ranges: Vec<GRange> = Vec::new();
        for g in order {
            let (from, to) = (g.wrapping_add(first), g.wrapping_add(end));
            match ranges.last_mut() {
                Some(range)
                    if from >= range.address + range.len as u64
                        && from - (range.address + range.len as u64) <= MERGE_GAP
                        && to - range.address <= LONGEST_RANGE =>
                {
                    range.gs.push((from - range.address) as usize);
                    range.len = (to - range.address) as usize;
                }
                _ => ranges.push(GRange {
                    address: from,
                    len: (to - from) as usize,
                    gs: vec![0],
                }),
            }
        }
        ranges
    }

    pub fn new(binary: &GoBinary, load_bias: u64) -> Result<Self> {
        let Some(allgs) = binary.scheduler_globals.and_then(|g| g.allgs) else {
            bail!(
                "runtime.allgs was not found (no symbol table, and not in the code of \
                 runtime.forEachG)"
            );
        };
        let offsets = &binary.struct_offsets;
        let field = |field: fields::Field| {
            field
                .offset_in(offsets)
                .with_context(|| format!("no offset for {}", field.key()))
        };
        let status = field(fields::G_ATOMICSTATUS)?;
        let goid = field(fields::G_GOID)?;
        let waitsince = field(fields::G_WAITSINCE)?;
        let waitreason = field(fields::G_WAITREASON)?;
        let tracking_seq = field(fields::G_TRACKING_SEQ)?;
        let start = status
            .min(goid)
            .min(waitsince)
            .min(waitreason)
            .min(tracking_seq);
        let end = (status + 4)
            .max(goid + 8)
            .max(waitsince + 8)
            .max(waitreason + 1)
            .max(tracking_seq + 1);
        let startpc = field(fields::G_STARTPC)?;
        if startpc < start {
            bail!("runtime.g.startpc lies before runtime.g.atomicstatus: an unknown layout");
        }
        Ok(Self {
            allgs: allgs.wrapping_add(load_bias),
            head: (start, (end - start) as usize),
            status: (status - start) as usize,
            goid: (goid - start) as usize,
            waitsince: (waitsince - start) as usize,
            waitreason: (waitreason - start) as usize,
            tracking_seq: (tracking_seq - start) as usize,
            startpc,
        })
    }
}

/// One goroutine as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoroutineRecord {
    pub goid: u64,
    /// `atomicstatus` without the `_Gscan` bit.
    pub status: u32,
    pub wait_reason: u8,
    /// `nanotime()` when the GC first saw it blocked, 0 when not set (the
    /// runtime sets it only there, and clears it when the goroutine runs).
    pub waitsince: i64,
    /// Changes each time the goroutine stops running (modulo 256).
    pub tracking_seq: u8,
    pub startpc: u64,
}

/// The goroutines of one read.
#[derive(Debug, Default)]
pub struct GoroutineList {
    pub goroutines: Vec<GoroutineRecord>,
    /// Some g could not be read (allgs moved while read): a partial list.
    pub approximate: bool,
}

/// `_Gscan`: set while the GC scans the goroutine's stack, over its status.
const G_SCAN: u32 = 0x1000;

/// Reads every g in `allgs`, dead ones included.
pub fn read(pid: u32, layout: &GoroutinesLayout) -> Result<GoroutineList> {
    let slice = read_memory(pid, layout.allgs, 24).context("cannot read runtime.allgs")?;
    let (array, len, cap) = (u64_at(&slice, 0), u64_at(&slice, 8), u64_at(&slice, 16));
    if len > cap || len > MAX_GOROUTINES {
        return Ok(GoroutineList {
            goroutines: Vec::new(),
            approximate: true,
        });
    }
    if len == 0 {
        return Ok(GoroutineList::default());
    }
    let pointers =
        read_memory(pid, array, len as usize * 8).context("cannot read the array of allgs")?;
    let addresses: Vec<u64> = pointers
        .chunks_exact(8)
        .map(|p| u64_at(p, 0))
        .filter(|&p| p != 0)
        .collect();
    let mut approximate = addresses.len() as u64 != len;
    let head_len = layout.head.1;
    // From the first field read (the head's start) to startpc.
    let startpc_at = (layout.startpc - layout.head.0) as usize;
    let mut goroutines = Vec::with_capacity(addresses.len());
    let ranges = layout.ranges(&addresses);
    let mut batch_start = 0;
    // One buffer for every batch.
    let mut data = Vec::new();
    while batch_start < ranges.len() {
        let mut batch_end = batch_start;
        let mut bytes = 0;
        while batch_end < ranges.len()
            && (bytes == 0 || bytes + ranges[batch_end].len <= BYTES_PER_BATCH)
        {
            bytes += ranges[batch_end].len;
            batch_end += 1;
        }
        let batch = &ranges[batch_start..batch_end];
        let spans: Vec<(u64, usize)> = batch.iter().map(|r| (r.address, r.len)).collect();
        let read = read_ranges(pid, &spans, &mut data)?;
        let mut at = 0;
        for range in &batch[..read] {
            for &g in &range.gs {
                let head = &data[at + g..at + g + head_len];
                goroutines.push(GoroutineRecord {
                    goid: u64_at(head, layout.goid),
                    status: u32_at(head, layout.status) & !G_SCAN,
                    wait_reason: head.get(layout.waitreason).copied().unwrap_or(0),
                    waitsince: u64_at(head, layout.waitsince) as i64,
                    tracking_seq: head.get(layout.tracking_seq).copied().unwrap_or(0),
                    startpc: u64_at(&data[at + g + startpc_at..], 0),
                });
            }
            at += range.len;
        }
        if read < batch.len() {
            approximate = true;
            break;
        }
        batch_start = batch_end;
    }
    Ok(GoroutineList {
        goroutines,
        approximate,
    })
}
