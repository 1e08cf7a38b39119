//! The ABI shared by the kernel programs and the userspace observer.
//!
//! Every struct here crosses the kernel/user boundary as raw bytes (a global, a map
//! value or a ring-buffer record), so each is `#[repr(C)]`, has no implicit padding
//! and is defined exactly once: both sides import it from this crate.
#![no_std]

/// Field offsets inside the Go runtime's `g`, `m` and `p` structs, resolved per
/// binary (from DWARF) and handed to the kernel programs before they load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    /// `g.goid` (goroutine id, 8 bytes).
    pub g_goid: u64,
    /// `g.m` (pointer to the M running this g).
    pub g_m: u64,
    /// `m.id` (int64).
    pub m_id: u64,
    /// `m.procid` (the OS thread id, uint64).
    pub m_procid: u64,
    /// `m.p` (puintptr to the P held by this M, 0 when none).
    pub m_p: u64,
    /// `p.id` (int32).
    pub p_id: u64,
    /// `g.waitreason` (uint8).
    pub g_waitreason: u64,
    /// `g.startpc` (entry of the function the goroutine was started with).
    pub g_startpc: u64,
    /// `g.asyncSafePoint` (bool): set by `asyncPreempt2` while a goroutine
    /// stops because a SIGURG made it (async preemption), clear at a stack check.
    pub g_async_safe_point: u64,
    /// `p.runqhead` and `p.runqtail` (uint32): the P's local run queue holds
    /// `runqtail - runqhead` goroutines ...
    pub p_runqhead: u64,
    pub p_runqtail: u64,
    /// ... plus one in `p.runnext` (a guintptr) when it is not 0.
    pub p_runnext: u64,
}

/// The configuration of the kernel programs for one watched process: the
/// value of the `PROCESSES` map, keyed by its thread-group id. One loaded set
/// of programs serves every watched process; a hit in a process without an
/// entry does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Thread-group id (the pid users see) of the traced process.
    pub target_tgid: u32,
    /// Its slot: the index of its entries in the per-process arrays
    /// (`COUNTERS`, the histograms, `WINDOW`) and the high bits of its keys
    /// in the per-goroutine maps (see [`process_key`]). Below [`MAX_PROCESSES`].
    pub slot: u32,
    /// Offsets of `sig` and `pid` in the `signal:signal_generate` record, read from
    /// the tracepoint's format file in tracefs.
    pub signal_sig_offset: u32,
    pub signal_pid_offset: u32,
    /// Which transitions go to the ring buffer: bits of [`stream`].
    pub stream_events: u32,
    /// Non-zero: syscalls are seen as `_Grunning` ↔ `_Gsyscall` changes in
    /// casgstatus (Go ≤ 1.25), and no entersyscall/exitsyscall probe is attached.
    pub syscalls_from_casgstatus: u32,
    /// Non-zero: `runtime.schedule` is probed; it ends an exiting goroutine's
    /// last run slice, then marks it exited (see `GoroutineStats::exited`).
    pub schedule_probed: u32,
    /// Non-zero: `runtime.gopark` is probed for the stacks of parks (the
    /// block profile), and wakeups add their blocked time to them.
    pub block_stacks: u32,
    /// The target's pid namespace (device and inode of `/proc/PID/ns/pid`), to
    /// compare `m.procid` (the thread id as the runtime sees it) with the thread
    /// id in that namespace. 0: the initial namespace, where the kernel's id is it.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    /// Run-time address of the global run queue's length (`sched.runqsize`,
    /// `sched.runq.size` from Go 1.25; an int32); 0 when unknown.
    pub global_runq_size: u64,
    pub offsets: GoOffsets,
}

/// Bits of `Config::stream_events`.
pub mod stream {
    /// Every transition (`--events`, `--record`).
    pub const ALL: u32 = 1;
    /// Run starts and ends, and syscalls (RUN, STOP, SYSCALL_ENTER,
    /// SYSCALL): the exact blame view.
    pub const RUNS: u32 = 2;
}

/// Attach-cookie bit of a uprobe placed on the `jbe` of a function's stack check
/// (clear: at the entry). See observer/src/binary/prologue.rs.
pub const COOKIE_AT_STACK_CHECK_JUMP: u64 = 1;
/// Attach-cookie bit of the probe on `runtime.goschedImpl(gp, preempted bool)`
/// (Go 1.22+): only calls with `preempted` (in RBX) are preemptions; a
/// `runtime.Gosched` goes through the same function. (Before 1.22 the probe is
/// on `gopreempt_m`, every call of which is a preemption.)
pub const COOKIE_PREEMPTED_ARGUMENT: u64 = 2;

/// How many processes the loaded programs can watch at once: the size of
/// `PROCESSES` and of the per-process arrays. A per-CPU array costs
/// `MAX_PROCESSES` × its value × CPUs of kernel memory (the two by-reason
/// arrays, 2 KiB a value: 512 KiB per CPU each).
pub const MAX_PROCESSES: u32 = 256;

/// `Event::slot` of a record about no watched process (a `NEW_PROCESS`).
pub const NO_SLOT: u32 = u32::MAX;

/// Bits of a per-goroutine map key that hold the goroutine's id or its g's
/// address (user addresses on x86-64 are below 2^47; goids do not reach 2^48).
const ID_BITS: u32 = 48;

/// The key of goroutine id or g address `id` of the process in `slot`, in
/// the maps every process shares (`GOROUTINES`, `G_STATE`, `PARK_STACK`).
#[inline(always)]
pub const fn process_key(slot: u32, id: u64) -> u64 {
    ((slot as u64) << ID_BITS) | (id & ((1 << ID_BITS) - 1))
}

/// The slot and the id in a key made by [`process_key`].
#[inline(always)]
pub const fn split_process_key(key: u64) -> (u32, u64) {
    ((key >> ID_BITS) as u32, key & ((1 << ID_BITS) - 1))
}

/// Indices into the per-CPU `COUNTERS` array. Counters are cumulative; userspace
/// sums the CPUs and takes differences between reads, so nothing is ever reset
/// (a reset would race with the probes).
pub mod counter {
    /// `runtime.schedule` calls (one per scheduling round on an M).
    pub const SCHEDULE: u32 = 0;
    /// `runtime.execute` calls (a goroutine starts a run slice).
    pub const EXECUTE: u32 = 1;
    /// `runtime.gopark` calls (a goroutine blocks).
    pub const GOPARK: u32 = 2;
    /// Syscalls entered (`runtime.entersyscall` + `runtime.entersyscallblock`).
    pub const SYSCALL_ENTER: u32 = 3;
    /// Syscalls left (`runtime.exitsyscall`).
    pub const SYSCALL_EXIT: u32 = 4;
    /// exitsyscall calls matched with an earlier entersyscall on the same thread.
    pub const SYSCALL_PAIRS: u32 = 5;
    /// Total nanoseconds between matched enter and exit.
    pub const SYSCALL_NS: u32 = 6;
    /// SIGURG signals sent by the target to one of its own threads (preemption
    /// requests; many find nothing to preempt).
    pub const PREEMPT: u32 = 7;
    /// Ring-buffer records lost because the buffer was full.
    pub const DROPPED: u32 = 8;
    /// Total nanoseconds of finished run slices (execute → next schedule).
    pub const RUN_NS: u32 = 9;
    /// Times `m.procid` read through the resolved offsets was compared with the
    /// kernel's thread id ...
    pub const OFFSET_CHECKS: u32 = 10;
    /// ... and did not match: the offsets are wrong for this binary.
    pub const OFFSET_MISMATCHES: u32 = 11;
    /// `bpf_probe_read_user` failures (a pointer chase into target memory failed).
    pub const READ_ERRORS: u32 = 12;
    /// Hits skipped at a stack-check `jbe` because the jump was taken: the call
    /// grows its stack (or yields to a preemption request) and starts over.
    pub const RESTARTS: u32 = 13;
    /// Goroutines created (`_Gdead` → `_Grunnable` in newproc1).
    pub const CREATED: u32 = 14;
    /// Goroutines that exited (`_Grunning` → `_Gdead`).
    pub const EXITED: u32 = 15;
    /// Total nanoseconds of run-queue latency (the sum of `RUNQ_LATENCY`).
    pub const RUNQ_NS: u32 = 16;
    /// Uprobe hits, every one (what the bench divides the overhead by).
    pub const PROBE_HITS: u32 = 17;
    /// `execve` by the target (`sched:sched_process_exec`): it runs another image.
    pub const EXECS: u32 = 18;
    /// A g that could not get a `G_STATE` entry (the map is full): its next
    /// run-queue latency or blocked time is lost.
    pub const G_STATE_LOST: u32 = 19;
    /// A goroutine that could not get a `GOROUTINES` entry (the map is full):
    /// its per-goroutine totals are lost.
    pub const GOROUTINES_LOST: u32 = 20;
    /// Goroutines preempted by a SIGURG (`asyncPreempt2`: running → runnable,
    /// runtime/trace's "preempted") ...
    pub const ASYNC_PREEMPTED: u32 = 21;
    /// ... and without a signal: at a stack check (cooperative preemption), or
    /// yielding to a semaphore's waiter (`goyield_m`).
    pub const COOPERATIVE_PREEMPTED: u32 = 22;
    /// Goroutines a SIGURG stopped for the GC to scan their stack (`preemptPark`).
    pub const GC_SUSPENDED: u32 = 23;
    /// CPU samples of the target's threads (`cpu_sample`) ...
    pub const SAMPLES: u32 = 24;
    /// ... whose user stack could not be kept (a hash collision in the stack
    /// map, or no user stack) ...
    pub const SAMPLE_STACKS_LOST: u32 = 25;
    /// ... and that could not be counted at all (`CPU_SAMPLES` is full).
    pub const SAMPLES_LOST: u32 = 26;
    /// Hits of a transition probe while its window was being detached (also
    /// in `PROBE_HITS`): the program only counted them, so each cost the trap.
    pub const CLOSING_HITS: u32 = 27;
    /// Number of slots in the array.
    pub const COUNT: u32 = 28;
}

/// Slots of a log2 histogram: slot `i` counts values in `[2^i, 2^(i+1))` ns
/// (slot 0 also counts 0).
pub const HISTOGRAM_SLOTS: u32 = 64;

/// Values of the per-CPU arrays. Each array has ONE entry holding every slot, so
/// userspace reads a whole array with one syscall (a snapshot every 10 ms stays
/// cheap), and the kernel program indexes inside the value.
pub type Counters = [u64; counter::COUNT as usize];
/// Indexed by wait reason.
pub type ByReason = [u64; MAX_WAIT_REASONS as usize];
/// A log2 histogram (see [`HISTOGRAM_SLOTS`]).
pub type Histogram = [u64; HISTOGRAM_SLOTS as usize];

/// Slots of the per-goroutine run-queue latency histogram: log2 of ns, the last
/// slot also counts everything from 2^31 ns (~2 s) up.
pub const GOROUTINE_HISTOGRAM_SLOTS: usize = 32;

/// Wait reasons are a `uint8` in every supported Go version.
pub const MAX_WAIT_REASONS: u32 = 256;

/// Entries of `G_STATE` (one per g the runtime ever allocated: gs are reused,
/// never freed) and `GOROUTINES` (one per live goroutine: userspace deletes the
/// entries of exited ones). Memory is allocated per entry (`BPF_F_NO_PREALLOC`),
/// ~96 + ~256 bytes per goroutine: 1M goroutines take ~350 MB of kernel memory,
/// 100k ~35 MB. Beyond this, failed inserts are counted (`G_STATE_LOST`,
/// `GOROUTINES_LOST`), never silent.
pub const MAX_GOROUTINES: u32 = 1 << 20;

/// Per-goroutine totals, keyed by goid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct GoroutineStats {
    /// Nanoseconds spent running (sum of finished run slices).
    pub run_ns: u64,
    /// Run slices started (`runtime.execute` with this g).
    pub runs: u64,
    /// `runtime.gopark` calls by this g.
    pub parks: u64,
    /// Matched syscalls (entersyscall → exitsyscall) by this g.
    pub syscalls: u64,
    /// Nanoseconds in those syscalls.
    pub syscall_ns: u64,
    /// Times a SIGURG preempted it (async preemption).
    pub preemptions: u64,
    /// Nanoseconds spent runnable, waiting in a run queue for an M and a P.
    pub runq_wait_ns: u64,
    /// `g.startpc` (run-time address), read at the goroutine's first run seen.
    pub start_pc: u64,
    /// Its run-queue latencies, log2 of ns (see [`GOROUTINE_HISTOGRAM_SLOTS`]).
    #[cfg_attr(feature = "user", serde(skip))]
    pub runq_latency: [u32; GOROUTINE_HISTOGRAM_SLOTS],
    /// Non-zero once the goroutine exited (`_Grunning` → `_Gdead`) and its last
    /// run slice is counted: userspace reads the entry a last time and deletes it.
    #[cfg_attr(feature = "user", serde(skip))]
    pub exited: u64,
}

/// Since when a goroutine is runnable or waiting, and why it waits (`G_STATE`
/// map value, updated in place at each transition).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GState {
    pub since_ns: u64,
    /// `g_status::RUNNABLE` or `WAITING` since `since_ns`; anything else: the
    /// timestamp was used.
    pub status: u32,
    /// The wait reason, when waiting.
    pub reason: u32,
}

/// Goroutine states (`runtime2.go`, the same in every supported version).
pub mod g_status {
    pub const RUNNABLE: u32 = 1;
    pub const RUNNING: u32 = 2;
    pub const SYSCALL: u32 = 3;
    pub const WAITING: u32 = 4;
    pub const DEAD: u32 = 6;
}

/// The goroutine an OS thread runs, or ran last, keyed by thread id: set by
/// `runtime.execute`; the next `runtime.schedule` on that thread marks it stopped.
/// It is kept after that because sysmon sets the preempt flag before it sends
/// SIGURG: a goroutine that notices the flag at a function call may already be in
/// `schedule` when the signal is generated, and is still the one preempted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Running {
    pub goid: u64,
    /// `bpf_ktime_get_ns` when the run slice started.
    pub since_ns: u64,
    /// When `schedule` ended the slice; 0 while it runs.
    pub stopped_ns: u64,
    pub m_id: i64,
    pub p_id: i32,
    /// Non-zero: the goroutine exited; `schedule` marks it so after its slice.
    pub exiting: u32,
    /// The thread's M (an M is one thread for life: read once per thread) ...
    pub m: u64,
    /// ... and the P it held last, whose id is `p_id` (read again only when the
    /// M holds another P).
    pub p: u64,
    /// The thread's process: thread ids are reused, and an entry left by a
    /// process gone since is not this thread's.
    pub tgid: u32,
    pub _pad: u32,
}

/// Where a signal handler finds the interrupted registers: the Linux x86-64 signal
/// frame ABI (uapi `asm/ucontext.h`: `uc_flags`, `uc_link`, `uc_stack` (24 bytes),
/// then `uc_mcontext`, a `struct sigcontext` whose registers start r8, r9, ..., r14
/// (7th), ..., ip (17th)). A kernel ABI, the same for every Go version; Go's own
/// DWARF does not describe it.
pub mod signal_frame {
    pub const MCONTEXT: u64 = 40;
    pub const R14: u64 = MCONTEXT + 6 * 8;
    pub const RIP: u64 = MCONTEXT + 16 * 8;
}

/// Kinds of ring-buffer records. The SIGURG ones (PREEMPT, PREEMPT_LANDED,
/// PREEMPTED, GC_SUSPENDED) are always sent; the transitions only when
/// `--events` or `--record` asks (`Config::stream_events`).
pub mod event_kind {
    /// Async preemption: the runtime sent SIGURG to one of its threads.
    /// `value`: how long `goid` had been running.
    pub const PREEMPT: u32 = 1;
    /// runnable → running. `value`: run-queue latency (0: unknown).
    pub const RUN: u32 = 2;
    /// running → waiting. `value`: the wait reason.
    pub const PARK: u32 = 3;
    /// waiting → runnable. `value`: how long it was blocked (0: unknown).
    pub const WAKE: u32 = 4;
    /// dead → runnable: a new goroutine (its id may not be assigned yet).
    pub const CREATE: u32 = 5;
    /// running → dead.
    pub const EXIT: u32 = 6;
    /// A syscall returned. `value`: its duration.
    pub const SYSCALL: u32 = 7;
    /// A run slice ended (`schedule`). `value`: its length.
    pub const STOP: u32 = 8;
    /// SIGURG reached the Go signal handler of `tid`. `value`: the interrupted
    /// instruction pointer (run-time address); `goid`: the goroutine interrupted
    /// (0 when the thread was not running Go code).
    pub const PREEMPT_LANDED: u32 = 9;
    /// A goroutine was preempted (running → runnable) on `tid`; `flags` has
    /// [`event_flags::ASYNC`] when a SIGURG did it. Always sent (they are rare).
    pub const PREEMPTED: u32 = 10;
    /// A SIGURG stopped a goroutine for the GC's stack scan (`preemptPark`).
    pub const GC_SUSPENDED: u32 = 11;
    /// A process exec'd a program (`sched:sched_process_exec`), when userspace
    /// looks for new processes (`DISCOVERY`): `tid` is its pid; `slot` is
    /// [`NO_SLOT`](super::NO_SLOT) unless it was watched.
    pub const NEW_PROCESS: u32 = 13;
    /// The goroutine on `tid` entered a syscall: its run slice pauses (it
    /// holds no P in the syscall, or hands it off). Not printed; sent for the
    /// exact blame view.
    pub const SYSCALL_ENTER: u32 = 12;
}

/// One ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// One of [`event_kind`].
    pub kind: u32,
    /// Thread the event concerns (for PREEMPT: the signalled thread).
    pub tid: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the event.
    pub ts_ns: u64,
    /// Goroutine concerned, 0 when unknown.
    pub goid: u64,
    /// Meaning depends on `kind` (see [`event_kind`]).
    pub value: u64,
    /// M id (-1 when unknown).
    pub m_id: i64,
    /// P id (-1 when unknown).
    pub p_id: i32,
    /// For PREEMPT: the thread that sent the signal (sysmon or a GC worker).
    pub sender_tid: u32,
    /// Bits of [`event_flags`].
    pub flags: u32,
    /// The slot of the watched process the record is about (see
    /// [`Config::slot`]).
    pub slot: u32,
}

impl Event {
    /// A record of `kind` about thread `tid` of the process in `slot` at
    /// `ts_ns`; M and P unknown (-1), no sender, no flags.
    pub const fn new(slot: u32, kind: u32, tid: u32, ts_ns: u64, goid: u64, value: u64) -> Self {
        Self {
            kind,
            tid,
            ts_ns,
            goid,
            value,
            m_id: -1,
            p_id: -1,
            sender_tid: 0,
            flags: 0,
            slot,
        }
    }
}

/// Bits of [`Event::flags`].
pub mod event_flags {
    /// PREEMPT: the goroutine had already left its run slice (it was in
    /// `schedule`) when the signal was generated.
    pub const STOPPED: u32 = 1;
    /// PREEMPTED: by a signal (async), not at a stack check.
    pub const ASYNC: u32 = 2;
    /// SYSCALL: the goroutine went on running on its P (`exitsyscall`'s fast
    /// path, seen as `_Gsyscall` → `_Grunning`; Go ≤ 1.25). Clear: it waits
    /// for a P, or this is not known (Go 1.26+).
    pub const RESUMED: u32 = 4;
}

/// Entries of `CPU_SAMPLES` (userspace reads and deletes them every interval)
/// and of `SAMPLE_STACKS`.
pub const MAX_SAMPLE_KEYS: u32 = 32768;
pub const MAX_SAMPLE_STACKS: u32 = 16384;

/// What a CPU sample found on the interrupted thread (`CPU_SAMPLES` key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SampleKey {
    /// The goroutine running (0 on a system stack: g0 or the signal stack).
    pub goid: u64,
    /// Its `g.startpc` (run-time address); 0 on a system stack.
    pub start_pc: u64,
    /// The word at the user stack pointer: the return address into the
    /// caller when the interrupted function has no frame of its own (a leaf
    /// without locals on the stack, or at its first instruction), whose
    /// caller the frame-pointer walk then skips. Userspace keeps it only where
    /// the word follows a call of that function.
    pub leaf_return: u64,
    /// Its user stack in `SAMPLE_STACKS` (negative: not kept).
    pub stack_id: i32,
    /// One of [`sample_kind`], plus the bits of [`sample_flags`].
    pub flags: u32,
    /// The process's slot (see [`Config::slot`]).
    pub slot: u32,
    pub _pad: u32,
}

/// What the thread ran when the sample was taken (low bits of `SampleKey::flags`).
pub mod sample_kind {
    pub const MASK: u32 = 3;
    /// A goroutine's code (R14 is a g with a goid, whose M is this thread).
    pub const GOROUTINE: u32 = 0;
    /// Go code on a system stack (g0: the scheduler, GC work switched to the
    /// system stack; gsignal): a g whose goid is 0.
    pub const SYSTEM: u32 = 1;
    /// No g in R14 whose M is this thread: C code (cgo), or a thread the
    /// runtime does not run Go on.
    pub const NOT_GO: u32 = 2;
}

/// Bits of `SampleKey::flags` above the kind.
pub mod sample_flags {
    /// The sample interrupted the kernel (a syscall, a page fault): the
    /// registers are the thread's saved user ones.
    pub const IN_KERNEL: u32 = 4;
    /// The thread held a P (`m.p` != 0): P time.
    pub const HOLDS_P: u32 = 8;
}

/// Counts per [`SampleKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleCounts {
    pub samples: u64,
    /// Samples taken while goroutines waited to run: this P's local queue
    /// or runnext, or the global run queue, was not empty ...
    pub while_waiting: u64,
    /// ... and the sum of how many waited at those samples (this P's queue,
    /// its runnext and the global queue): goroutine-time spent waiting while
    /// this held the P, in samples.
    pub waiting_goroutines: u64,
}

/// Where a goroutine parked (`PARK_STACK` value, `BLOCK_PROFILE` key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockKey {
    /// The return address into `gopark`'s caller (the probe is at gopark's
    /// first instructions, before its frame: the stack walk skips it).
    pub caller: u64,
    /// The user stack in `BLOCK_STACKS` (negative: not kept).
    pub stack_id: i32,
    /// The wait reason (`gopark`'s `reason` argument).
    pub reason: u32,
    /// The process's slot (see [`Config::slot`]).
    pub slot: u32,
    pub _pad: u32,
}

/// Parks that ended, and their blocked time, per [`BlockKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockCounts {
    pub count: u64,
    pub blocked_ns: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], Copy, made only of integers, without padding.
    unsafe impl aya::Pod for super::SampleKey {}
    unsafe impl aya::Pod for super::SampleCounts {}
    unsafe impl aya::Pod for super::BlockKey {}
    unsafe impl aya::Pod for super::BlockCounts {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::GoroutineStats {}
    unsafe impl aya::Pod for super::Running {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::GState {}
}
