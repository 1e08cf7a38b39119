//! The runtime struct members gobpf-sched reads, named once. The DWARF reader
//! and `cargo xtask offsets` record exactly these; every user looks its offset up
//! through them (`GoBinary::offset`), never by a string of its own.

use std::collections::BTreeMap;

/// A member of a runtime struct, e.g. `runtime.g` `goid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub strukt: &'static str,
    pub member: &'static str,
}

impl Field {
    const fn new(strukt: &'static str, member: &'static str) -> Self {
        Self { strukt, member }
    }

    /// `runtime.g.goid`: how the offsets are keyed (in `layouts.json` too).
    pub fn key(self) -> String {
        format!("{}.{}", self.strukt, self.member)
    }

    /// Its offset among `offsets` (a binary's, or the table's).
    pub fn offset_in(self, offsets: &BTreeMap<String, u64>) -> Option<u64> {
        offsets.get(&self.key()).copied()
    }
}

// What the probes read (`GoOffsets`).
pub const G_GOID: Field = Field::new("runtime.g", "goid");
pub const G_M: Field = Field::new("runtime.g", "m");
pub const G_WAITREASON: Field = Field::new("runtime.g", "waitreason");
pub const G_STARTPC: Field = Field::new("runtime.g", "startpc");
pub const G_ASYNC_SAFE_POINT: Field = Field::new("runtime.g", "asyncSafePoint");
pub const M_ID: Field = Field::new("runtime.m", "id");
pub const M_PROCID: Field = Field::new("runtime.m", "procid");
pub const M_P: Field = Field::new("runtime.m", "p");
pub const P_ID: Field = Field::new("runtime.p", "id");
// What the scheduler state read from memory uses.
pub const P_STATUS: Field = Field::new("runtime.p", "status");
pub const P_RUNQHEAD: Field = Field::new("runtime.p", "runqhead");
pub const P_RUNQTAIL: Field = Field::new("runtime.p", "runqtail");
pub const P_RUNNEXT: Field = Field::new("runtime.p", "runnext");
pub const SCHED_NPIDLE: Field = Field::new("runtime.schedt", "npidle");
pub const SCHED_NMSPINNING: Field = Field::new("runtime.schedt", "nmspinning");
pub const SCHED_NMIDLE: Field = Field::new("runtime.schedt", "nmidle");
pub const SCHED_MNEXT: Field = Field::new("runtime.schedt", "mnext");
pub const SCHED_NMFREED: Field = Field::new("runtime.schedt", "nmfreed");
/// The global run-queue length: `schedt.runqsize` up to Go 1.24 ...
pub const SCHED_RUNQSIZE: Field = Field::new("runtime.schedt", "runqsize");
/// ... `schedt.runq.size` from 1.25.
pub const SCHED_RUNQ: Field = Field::new("runtime.schedt", "runq");
pub const GQUEUE_SIZE: Field = Field::new("runtime.gQueue", "size");
// What the always-on tier reads: the runtime's own counters and histograms (not
// every version has each: a missing one is absent from that version's offsets,
// and shown as "not kept by goX.Y").
pub const G_ATOMICSTATUS: Field = Field::new("runtime.g", "atomicstatus");
pub const G_WAITSINCE: Field = Field::new("runtime.g", "waitsince");
/// Incremented at every transition out of running (a uint8, 1.19+): tells the
/// census whether a goroutine ran between two reads.
pub const G_TRACKING_SEQ: Field = Field::new("runtime.g", "trackingSeq");
pub const P_SCHEDTICK: Field = Field::new("runtime.p", "schedtick");
pub const P_SYSCALLTICK: Field = Field::new("runtime.p", "syscalltick");
/// Goroutines created by a P (1.26+); added to `schedt.goroutinesCreated` when
/// the P is destroyed.
pub const P_GOROUTINES_CREATED: Field = Field::new("runtime.p", "goroutinesCreated");
pub const SCHED_GOROUTINES_CREATED: Field = Field::new("runtime.schedt", "goroutinesCreated");
/// `runtime/metrics` `/sched/latencies:seconds` (a `timeHistogram`).
pub const SCHED_TIME_TO_RUN: Field = Field::new("runtime.schedt", "timeToRun");
/// `sync.Mutex`/`RWMutex` wait time in nanoseconds (1.20+).
pub const SCHED_TOTAL_MUTEX_WAIT_TIME: Field = Field::new("runtime.schedt", "totalMutexWaitTime");
/// Stop-the-world pauses, `timeHistogram`s (1.22+).
pub const SCHED_STW_TOTAL_TIME_GC: Field = Field::new("runtime.schedt", "stwTotalTimeGC");
pub const SCHED_STW_TOTAL_TIME_OTHER: Field = Field::new("runtime.schedt", "stwTotalTimeOther");
pub const TIME_HISTOGRAM_COUNTS: Field = Field::new("runtime.timeHistogram", "counts");
pub const TIME_HISTOGRAM_UNDERFLOW: Field = Field::new("runtime.timeHistogram", "underflow");
/// 1.20+ (before, the last bucket had no upper bound).
pub const TIME_HISTOGRAM_OVERFLOW: Field = Field::new("runtime.timeHistogram", "overflow");
/// Completed GC cycles (`runtime.memstats.numgc`).
pub const MSTATS_NUMGC: Field = Field::new("runtime.mstats", "numgc");
/// Where code starts in a stripped binary (see `pclntab`).
pub const MODULEDATA_TEXT: Field = Field::new("runtime.moduledata", "text");
/// What funcdata offsets count from: the inline trees (see `source_lines`).
pub const MODULEDATA_GOFUNC: Field = Field::new("runtime.moduledata", "gofunc");

/// Every member recorded (DWARF and table).
pub const ALL: &[Field] = &[
    G_GOID,
    G_M,
    G_ATOMICSTATUS,
    G_WAITREASON,
    G_STARTPC,
    Field::new("runtime.g", "gopc"),
    G_ASYNC_SAFE_POINT,
    G_WAITSINCE,
    G_TRACKING_SEQ,
    M_ID,
    M_PROCID,
    M_P,
    Field::new("runtime.m", "curg"),
    Field::new("runtime.m", "spinning"),
    P_ID,
    P_STATUS,
    P_RUNQHEAD,
    P_RUNQTAIL,
    P_RUNNEXT,
    P_SCHEDTICK,
    P_SYSCALLTICK,
    P_GOROUTINES_CREATED,
    SCHED_GOROUTINES_CREATED,
    SCHED_TIME_TO_RUN,
    SCHED_TOTAL_MUTEX_WAIT_TIME,
    SCHED_STW_TOTAL_TIME_GC,
    SCHED_STW_TOTAL_TIME_OTHER,
    TIME_HISTOGRAM_COUNTS,
    TIME_HISTOGRAM_UNDERFLOW,
    TIME_HISTOGRAM_OVERFLOW,
    MSTATS_NUMGC,
    SCHED_RUNQ,
    SCHED_RUNQSIZE,
    SCHED_NPIDLE,
    SCHED_NMSPINNING,
    SCHED_NMIDLE,
    SCHED_MNEXT,
    SCHED_NMFREED,
    GQUEUE_SIZE,
    Field::new("runtime.moduledata", "pcHeader"),
    Field::new("runtime.moduledata", "funcnametab"),
    MODULEDATA_TEXT,
    MODULEDATA_GOFUNC,
];

/// Offset in `schedt` of the global run-queue length, in any version.
pub fn runq_size_offset(offsets: &BTreeMap<String, u64>) -> Option<u64> {
    SCHED_RUNQSIZE
        .offset_in(offsets)
        .or_else(|| Some(SCHED_RUNQ.offset_in(offsets)? + GQUEUE_SIZE.offset_in(offsets)?))
}
