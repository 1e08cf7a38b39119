use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_NO_PREALLOC, BPF_F_USER_STACK, BPF_NOEXIST, bpf_pidns_info, pt_regs},
    helpers::{
        bpf_get_attach_cookie, bpf_get_current_pid_tgid, bpf_get_current_task_btf,
        bpf_get_ns_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_task_pt_regs,
    },
    macros::{map, perf_event, tracepoint, uprobe},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{PerfEventContext, ProbeContext, TracePointContext, tracing::StackIdContext},
};
use gobpf_sched_common::{
    BlockCounts, BlockKey, ByReason, COOKIE_AT_STACK_CHECK_JUMP, COOKIE_PREEMPTED_ARGUMENT, Config,
    Counters, Event, GOROUTINE_HISTOGRAM_SLOTS, GState, GoroutineStats, Histogram, MAX_GOROUTINES,
    MAX_PROCESSES, MAX_SAMPLE_KEYS, MAX_SAMPLE_STACKS, NO_SLOT, Running, SampleCounts, SampleKey,
    counter, event_flags, event_kind, g_status, process_key, sample_flags, sample_kind,
    signal_frame, stream,
};

// Maps, then helpers, then the programs.

/// The watched processes: thread-group id → their configuration (written by
/// userspace when it starts watching one, deleted when it stops). Every
/// program looks the current process up first: one loaded set of programs
/// serves them all, and does nothing in a process without an entry.
#[map]
static PROCESSES: HashMap<u32, Config> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// Entry 0 non-zero: every exec on the host is sent as a `NEW_PROCESS`
/// record (userspace watches every Go process, `--all`).
#[map]
static DISCOVERY: Array<u32> = Array::with_max_entries(1, 0);

/// The per-process arrays below have an entry per slot (`Config::slot`).
#[map]
static COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_PROCESSES, 0);

/// gopark calls by wait reason (the reason byte is the index).
#[map]
static PARKS: PerCpuArray<ByReason> = PerCpuArray::with_max_entries(MAX_PROCESSES, 0);

/// Run-slice lengths (execute → next schedule on the thread), log2 of ns.
#[map]
static RUN_SLICES: PerCpuArray<Histogram> = PerCpuArray::with_max_entries(MAX_PROCESSES, 0);

/// Run-queue latency (runnable → running), log2 of ns.
#[map]
static RUNQ_LATENCY: PerCpuArray<Histogram> = PerCpuArray::with_max_entries(MAX_PROCESSES, 0);

/// Nanoseconds goroutines spent blocked, by wait reason.
#[map]
static BLOCKED_NS: PerCpuArray<ByReason> = PerCpuArray::with_max_entries(MAX_PROCESSES, 0);

/// g address → since when it is runnable or waiting (see `GState`). Keyed by
/// the g, not its id: newproc1 in Go 1.19 assigns the goid after making the new
/// g runnable. One entry per g, updated in place: one lookup per transition.
/// The runtime reuses dead gs and never frees one, so there are at most as many
/// entries as the target ever had goroutines at once: no eviction (an LRU map
/// silently lost samples above its size), memory per entry in use.
#[map]
static G_STATE: HashMap<u64, GState> = HashMap::with_max_entries(MAX_GOROUTINES, BPF_F_NO_PREALLOC);

/// Totals per goroutine id, created at its first run, park or syscall seen;
/// marked `exited` at its exit, then deleted by userspace once read.
#[map]
static GOROUTINES: HashMap<u64, GoroutineStats> =
    HashMap::with_max_entries(MAX_GOROUTINES, BPF_F_NO_PREALLOC);

/// Thread id → goroutine running on it (see `Running`). A plain hash, cheaper
/// than an LRU one: a process has far fewer threads than this.
#[map]
static RUNNING: HashMap<u32, Running> = HashMap::with_max_entries(16384, 0);

/// Thread id → time of its pending entersyscall. A goroutine in a syscall keeps its
/// M (thread) until exitsyscall, so the thread id pairs enter and exit.
#[map]
static SYSCALL_START: HashMap<u32, u64> = HashMap::with_max_entries(16384, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per slot: when the current window of transition probes opened
/// (CLOCK_MONOTONIC ns, written by userspace before it attaches them; u64::MAX
/// from the moment it starts detaching them). State recorded before it
/// belongs to an earlier window: the probes were detached
/// in between and missed what happened meanwhile, so no duration is taken from
/// it (a goroutine made runnable before a window closed and seen running in the
/// next would report the whole gap as run-queue latency).
#[map]
static WINDOW: Array<u64> = Array::with_max_entries(MAX_PROCESSES, 0);

/// Per slot: hits left before the window's thread is woken (0: not armed).
/// Userspace arms it at each stretch of a window that stays open with what
/// the budget allows in the stretch; the hit that brings it to zero sends the
/// slot to `WAKE`, and the window closes at once instead of at the next look
/// (a quiet program that turns busy). Shared by the CPUs, decremented without
/// an atomic: a decrement lost to a race only wakes a few hits late.
#[map]
static LOOK_COUNTDOWN: Array<u64> = Array::with_max_entries(MAX_PROCESSES, 0);

/// The slots whose countdown ran out (u32 records), each with a wakeup.
#[map]
static WAKE: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Hits of the calibration probe, which userspace puts on a function of its own
/// to measure what a uprobe hit costs on this machine.
#[map]
static CALIBRATION_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// CPU samples of the target, counted by what they found (see `cpu_sample`).
/// Per CPU: plain adds are exact (userspace sums the CPUs).
#[map]
static CPU_SAMPLES: PerCpuHashMap<SampleKey, SampleCounts> =
    PerCpuHashMap::with_max_entries(MAX_SAMPLE_KEYS, 0);

/// The user stacks of the samples (frame-pointer walks by the kernel: Go on
/// amd64 keeps frame pointers).
#[map]
static SAMPLE_STACKS: StackTrace = StackTrace::with_max_entries(MAX_SAMPLE_STACKS, 0);

/// The user stacks of parks (the block profile, when asked).
#[map]
static BLOCK_STACKS: StackTrace = StackTrace::with_max_entries(MAX_SAMPLE_STACKS, 0);

/// g address → where it parked last (set by `go_gopark`, taken at its wakeup).
#[map]
static PARK_STACK: HashMap<u64, BlockKey> =
    HashMap::with_max_entries(MAX_GOROUTINES, BPF_F_NO_PREALLOC);

/// Parks that ended, by where they parked: the block profile. Per CPU, so
/// plain adds are exact.
#[map]
static BLOCK_PROFILE: PerCpuHashMap<BlockKey, BlockCounts> =
    PerCpuHashMap::with_max_entries(MAX_SAMPLE_KEYS, 0);

/// Submit without waking the reader: userspace drains on a timer, which costs the
/// probe nothing (a wakeup per record cost ~1.4 µs inside the probe, measured on
/// a 2-core VM with kernel 6.18).
const BPF_RB_NO_WAKEUP: u64 = 1;
/// ... and with: a countdown that ran out (at most one per stretch).
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const SIGURG: i32 = 23;

// Helpers.

/// The watched process the current thread belongs to: its configuration;
/// None when it is not watched (the probes of an executable fire in every
/// process that runs it).
#[inline(always)]
fn this_process() -> Option<&'static Config> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    unsafe { PROCESSES.get(&tgid) }
}

/// A record about the current thread.
#[inline(always)]
fn thread_event(cfg: &Config, kind: u32, goid: u64, value: u64, now: u64) -> Event {
    Event::new(cfg.slot, kind, current_tid(), now, goid, value)
}

/// Submits a record; a full ring buffer counts as a drop (of `slot`'s).
#[inline(always)]
fn send(slot: u32, event: &Event) {
    if EVENTS.output::<Event>(event, BPF_RB_NO_WAKEUP).is_err() && slot != NO_SLOT {
        add(slot, counter::DROPPED, 1);
    }
}

/// Sends a transition to the ring buffer when `--events` (or a recording) asked
/// for them.
#[inline(always)]
fn emit(cfg: &Config, kind: u32, goid: u64, value: u64, now: u64) {
    if streaming(cfg) {
        send(cfg.slot, &thread_event(cfg, kind, goid, value, now));
    }
}

/// Like [`emit`], for a run slice's start or end: with its M and P. Also
/// sent for the exact blame view alone.
#[inline(always)]
fn emit_run(cfg: &Config, kind: u32, value: u64, now: u64, running: &Running) {
    if cfg.stream_events & (stream::ALL | stream::RUNS) != 0 {
        let mut event = thread_event(cfg, kind, running.goid, value, now);
        event.m_id = running.m_id;
        event.p_id = running.p_id;
        send(cfg.slot, &event);
    }
}

#[inline(always)]
fn streaming(cfg: &Config) -> bool {
    cfg.stream_events & stream::ALL != 0
}

/// Whether state recorded at `since_ns` belongs to the current window of
/// the process in `slot` (see `WINDOW`): only then does it give a duration.
#[inline(always)]
fn in_window(slot: u32, since_ns: u64) -> bool {
    since_ns >= WINDOW.get(slot).copied().unwrap_or(u64::MAX)
}

/// Counts a hit of a transition probe of the process in `slot`; false when
/// its window is closing (the probes fire until the kernel has put the code
/// back, up to seconds): the program then does nothing more, at the cost of
/// the trap alone.
#[inline(always)]
fn transition_hit(slot: u32) -> bool {
    add(slot, counter::PROBE_HITS, 1);
    let open = WINDOW.get(slot).is_some_and(|start| *start != u64::MAX);
    if !open {
        add(slot, counter::CLOSING_HITS, 1);
    } else if let Some(left) = LOOK_COUNTDOWN.get_ptr_mut(slot) {
        // SAFETY: a valid entry of the array (racy by design: see the map).
        let left = unsafe { &mut *left };
        if *left > 0 {
            *left -= 1;
            if *left == 0 {
                let _ = WAKE.output::<u32>(&slot, BPF_RB_FORCE_WAKEUP);
            }
        }
    }
    open
}

#[inline(always)]
fn add(slot: u32, index: u32, value: u64) {
    bump(&COUNTERS, slot, index as usize, value);
}

/// Adds `value` to `index` of `slot`'s entry in a per-CPU array of
/// per-process entries. Per-CPU value and BPF programs do not migrate
/// mid-run: a plain add is exact.
#[inline(always)]
fn bump<const N: usize>(array: &PerCpuArray<[u64; N]>, slot: u32, index: usize, value: u64) {
    if let Some(slots) = array.get_ptr_mut(slot)
        && let Some(slot) = unsafe { &mut *slots }.get_mut(index)
    {
        *slot += value;
    }
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Reads a `T` at `addr` in the target's memory, counting failures (in
/// `slot`'s counters).
#[inline(always)]
fn read_user<T>(slot: u32, addr: u64) -> Option<T> {
    match unsafe { bpf_probe_read_user(addr as *const T) } {
        Ok(value) => Some(value),
        Err(_) => {
            add(slot, counter::READ_ERRORS, 1);
            None
        }
    }
}

const CARRY_FLAG: u64 = 1 << 0;
const ZERO_FLAG: u64 = 1 << 6;

/// floor(log2(value)), 0 for 0 and 1. BPF has no count-leading-zeros
/// instruction: halve the search range with shifts, as libbpf-tools' log2l does.
#[inline(always)]
fn log2(mut value: u64) -> u32 {
    let mut log = 0;
    for shift in [32u32, 16, 8, 4, 2, 1] {
        if value >> shift != 0 {
            value >>= shift;
            log += shift;
        }
    }
    log
}

#[inline(always)]
fn add_to_histogram(histogram: &PerCpuArray<Histogram>, slot: u32, value: u64) {
    bump(histogram, slot, log2(value) as usize, 1);
}

/// True when this hit must not count: the probe sits on the `jbe` of the stack
/// check and the jump will be taken (CF or ZF set), so the function goes through
/// `morestack` and starts over, and the probe fires again for the same call.
#[inline(always)]
fn call_restarts(ctx: &ProbeContext, slot: u32) -> bool {
    let at_jump = cookie(ctx) & COOKIE_AT_STACK_CHECK_JUMP != 0;
    if at_jump && unsafe { (*ctx.regs).eflags } & (CARRY_FLAG | ZERO_FLAG) != 0 {
        add(slot, counter::RESTARTS, 1);
        return true;
    }
    false
}

#[inline(always)]
fn cookie(ctx: &ProbeContext) -> u64 {
    unsafe { bpf_get_attach_cookie(ctx.as_ptr()) }
}

/// The current goroutine: R14 holds `g` in Go's register ABI (amd64, Go ≥ 1.17).
#[inline(always)]
fn current_g(ctx: &ProbeContext) -> u64 {
    unsafe { (*ctx.regs).r14 }
}

#[inline(always)]
fn goid_of(cfg: &Config, g: u64) -> Option<u64> {
    read_user::<u64>(cfg.slot, g + cfg.offsets.g_goid)
}

/// A goroutine's totals, created if needed. Plain adds to its fields are exact:
/// each field has one writer at a time. A goroutine runs on one thread at a time
/// and the runtime orders its transitions, so the probes that fire for it never
/// overlap; the one probe on another thread (the SIGURG tracepoint, on sysmon)
/// writes only `preemptions`. One lookup per probe hit: each lookup is work for
/// the probe and paths for the verifier (attach time).
#[inline(always)]
fn goroutine(slot: u32, goid: u64) -> Option<&'static mut GoroutineStats> {
    if let Some(stats) = existing_goroutine(slot, goid) {
        return Some(stats);
    }
    if GOROUTINES
        .insert(
            &process_key(slot, goid),
            &GoroutineStats::default(),
            BPF_NOEXIST as u64,
        )
        .is_err()
    {
        add(slot, counter::GOROUTINES_LOST, 1);
    }
    existing_goroutine(slot, goid)
}

/// A goroutine's totals if it has an entry. The probes that fire after a
/// goroutine may have exited (the end of its last run slice, a late SIGURG) never
/// create one: userspace may already have deleted it, and nobody would again.
#[inline(always)]
fn existing_goroutine(slot: u32, goid: u64) -> Option<&'static mut GoroutineStats> {
    GOROUTINES
        .get_ptr_mut(&process_key(slot, goid))
        .map(|stats| unsafe { &mut *stats })
}

// Programs.

/// `runtime.schedule()`: runs on the M's g0 whenever the current goroutine stops
/// running (park, yield, preemption, exit). Closes the run slice open on this thread.
#[uprobe]
pub fn go_schedule(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    if !transition_hit(slot) {
        return 0;
    }
    if call_restarts(&ctx, slot) {
        return 0;
    }
    add(slot, counter::SCHEDULE, 1);
    let tid = current_tid();
    if let Some(running) = RUNNING.get_ptr_mut(&tid) {
        let running = unsafe { &mut *running };
        if running.tgid == cfg.target_tgid
            && running.stopped_ns == 0
            && in_window(slot, running.since_ns)
        {
            let now = unsafe { bpf_ktime_get_ns() };
            let ran = now.saturating_sub(running.since_ns);
            running.stopped_ns = now;
            add(slot, counter::RUN_NS, ran);
            add_to_histogram(&RUN_SLICES, slot, ran);
            if let Some(stats) = existing_goroutine(slot, running.goid) {
                stats.run_ns += ran;
                if running.exiting != 0 {
                    stats.exited = 1;
                }
            }
            running.exiting = 0;
            emit_run(cfg, event_kind::STOP, ran, now, running);
        }
    }
    0
}

/// `runtime.casgstatus(gp *g, oldval, newval uint32)`: every change of a goroutine's
/// state goes through it (`//go:nosplit`: probed at its entry), with gp in RAX, the
/// old state in RBX and the new one in RCX. One probe gives what gopark, execute,
/// entersyscall and exitsyscall probes would, plus the time spent runnable and
/// blocked, and goroutine creation and exit.
#[uprobe]
pub fn go_casgstatus(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    if !transition_hit(slot) {
        return 0;
    }
    let regs = unsafe { &*ctx.regs };
    let (gp, old, new) = (regs.rax, regs.rbx as u32, regs.rcx as u32);
    let syscalls_here = cfg.syscalls_from_casgstatus != 0;
    let now = unsafe { bpf_ktime_get_ns() };
    // The goid is read only where it is used: every read costs the probe.
    let goid = || goid_of(cfg, gp);
    match (old, new) {
        (g_status::RUNNABLE, g_status::RUNNING) => {
            if let Some(goid) = goid() {
                started_running(&ctx, cfg, gp, goid, now);
            }
        }
        (g_status::RUNNING, g_status::WAITING) => {
            if let Some(goid) = goid() {
                parked(cfg, gp, goid, now);
            }
        }
        (g_status::RUNNING, g_status::DEAD) => {
            add(slot, counter::EXITED, 1);
            let goid = goid().unwrap_or(0);
            // With the schedule probe, the entry is marked once the last run
            // slice is in it (userspace deletes marked entries when it reads them).
            let on_thread = running_here(cfg);
            match on_thread {
                Some(running) if cfg.schedule_probed != 0 => running.exiting = 1,
                _ => {
                    if let Some(stats) = existing_goroutine(slot, goid) {
                        stats.exited = 1;
                    }
                }
            }
            emit(cfg, event_kind::EXIT, goid, 0, now);
        }
        (g_status::RUNNING, g_status::SYSCALL) if syscalls_here => syscall_entered(cfg, now),
        (g_status::SYSCALL, g_status::RUNNING | g_status::RUNNABLE) if syscalls_here => {
            syscall_exited(cfg, goid().unwrap_or(0), now, new == g_status::RUNNING)
        }
        _ => {}
    }
    if new == g_status::RUNNABLE {
        became_runnable(cfg, old, gp, now, goid);
    }
    0
}

/// This thread's entry in `RUNNING` if it is of this process (thread ids
/// are reused: an entry may be left by a thread of a process gone since).
#[inline(always)]
fn running_here(cfg: &Config) -> Option<&'static mut Running> {
    let running = unsafe { &mut *RUNNING.get_ptr_mut(&current_tid())? };
    (running.tgid == cfg.target_tgid).then_some(running)
}

/// runnable → running, in `execute` on the M that will run it (R14 is its g0).
#[inline(always)]
fn started_running(ctx: &ProbeContext, cfg: &Config, gp: u64, goid: u64, now: u64) {
    let slot = cfg.slot;
    add(slot, counter::EXECUTE, 1);
    let stats = goroutine(slot, goid);
    // None: it became runnable before we attached.
    let waited = G_STATE
        .get_ptr_mut(&process_key(slot, gp))
        .and_then(|state| {
            let state = unsafe { &mut *state };
            if state.status != g_status::RUNNABLE {
                return None;
            }
            state.status = g_status::RUNNING;
            in_window(slot, state.since_ns).then(|| now.saturating_sub(state.since_ns))
        });
    if let Some(waited) = waited {
        add_to_histogram(&RUNQ_LATENCY, slot, waited);
        add(slot, counter::RUNQ_NS, waited);
    }
    if let Some(stats) = stats {
        stats.runs += 1;
        if let Some(waited) = waited {
            stats.runq_wait_ns += waited;
            let bucket = (log2(waited) as usize).min(GOROUTINE_HISTOGRAM_SLOTS - 1);
            if let Some(count) = stats.runq_latency.get_mut(bucket) {
                *count += 1;
            }
        }
        // Its start function, once: the goid is valid here in every version.
        if stats.start_pc == 0 {
            stats.start_pc = read_user::<u64>(slot, gp + cfg.offsets.g_startpc).unwrap_or(0);
        }
    }
    let Some(running) = running_on_this_thread(ctx, cfg) else {
        return;
    };
    running.goid = goid;
    running.since_ns = now;
    running.stopped_ns = 0;
    // m.p is the P just acquired; its id is read again only when it changed.
    if let Some(p) = read_user::<u64>(slot, running.m + cfg.offsets.m_p)
        && p != running.p
    {
        running.p = p;
        running.p_id = if p == 0 {
            -1
        } else {
            read_user::<i32>(slot, p + cfg.offsets.p_id).unwrap_or(-1)
        };
    }
    emit_run(cfg, event_kind::RUN, waited.unwrap_or(0), now, running);
}

/// This thread's entry in `RUNNING`, created at the first run seen on it: its M
/// (g0's `g.m`; R14 is g0 in `execute`) is read once, and checked against the
/// kernel's thread id through `m.procid` (a self-check of the offsets).
#[inline(always)]
fn running_on_this_thread(ctx: &ProbeContext, cfg: &Config) -> Option<&'static mut Running> {
    if let Some(running) = running_here(cfg) {
        return Some(running);
    }
    let slot = cfg.slot;
    let offsets = &cfg.offsets;
    let tid = current_tid();
    let m = read_user::<u64>(slot, current_g(ctx) + offsets.g_m)?;
    let mut running = Running {
        m,
        m_id: read_user::<i64>(slot, m + offsets.m_id).unwrap_or(-1),
        p_id: -1,
        tgid: cfg.target_tgid,
        ..Running::default()
    };
    if let Some(procid) = read_user::<u64>(slot, m + offsets.m_procid) {
        add(slot, counter::OFFSET_CHECKS, 1);
        if procid != u64::from(tid_in_target_namespace(cfg, tid)) {
            add(slot, counter::OFFSET_MISMATCHES, 1);
            running.m_id = -1;
        }
    }
    let _ = RUNNING.insert(&tid, &running, 0);
    running_here(cfg)
}

/// This thread's id as the target sees it: in a container (its own pid
/// namespace) the runtime's `m.procid` holds the namespaced id.
#[inline(always)]
fn tid_in_target_namespace(cfg: &Config, tid: u32) -> u32 {
    if cfg.pidns_ino == 0 {
        return tid;
    }
    let mut ids = bpf_pidns_info { pid: 0, tgid: 0 };
    let found = unsafe {
        bpf_get_ns_current_pid_tgid(
            cfg.pidns_dev,
            cfg.pidns_ino,
            &mut ids,
            size_of::<bpf_pidns_info>() as u32,
        )
    };
    if found == 0 { ids.pid } else { tid }
}

/// running → waiting (`park_m` after `gopark` set `g.waitreason`).
#[inline(always)]
fn parked(cfg: &Config, gp: u64, goid: u64, now: u64) {
    let slot = cfg.slot;
    add(slot, counter::GOPARK, 1);
    let reason = u64::from(read_user::<u8>(slot, gp + cfg.offsets.g_waitreason).unwrap_or(0));
    bump(&PARKS, slot, reason as usize, 1);
    if let Some(stats) = goroutine(slot, goid) {
        stats.parks += 1;
    }
    emit(cfg, event_kind::PARK, goid, reason, now);
    set_state(slot, gp, g_status::WAITING, reason as u32, now);
}

/// Records that `gp` is in `status` since `now`.
#[inline(always)]
fn set_state(slot: u32, gp: u64, status: u32, reason: u32, now: u64) {
    let state = GState {
        since_ns: now,
        status,
        reason,
    };
    let key = process_key(slot, gp);
    match G_STATE.get_ptr_mut(&key) {
        Some(entry) => unsafe { *entry = state },
        None => insert_state(slot, key, &state),
    }
}

#[inline(always)]
fn insert_state(slot: u32, key: u64, state: &GState) {
    if G_STATE.insert(&key, state, 0).is_err() {
        add(slot, counter::G_STATE_LOST, 1);
    }
}

/// → runnable: woken (blocked time ends), created, preempted or yielding.
#[inline(always)]
fn became_runnable(cfg: &Config, old: u32, gp: u64, now: u64, goid: impl Fn() -> Option<u64>) {
    let slot = cfg.slot;
    let runnable = GState {
        since_ns: now,
        status: g_status::RUNNABLE,
        reason: 0,
    };
    let key = process_key(slot, gp);
    let entry = G_STATE.get_ptr_mut(&key);
    if old == g_status::WAITING {
        let mut blocked = 0;
        if let Some(state) = entry
            && unsafe { (*state).status } == g_status::WAITING
            && in_window(slot, unsafe { (*state).since_ns })
        {
            let state = unsafe { &*state };
            blocked = now.saturating_sub(state.since_ns);
            bump(&BLOCKED_NS, slot, state.reason as usize, blocked);
            if cfg.block_stacks != 0 {
                count_block(key, blocked);
            }
        }
        if streaming(cfg) {
            emit(cfg, event_kind::WAKE, goid().unwrap_or(0), blocked, now);
        }
    }
    if old == g_status::DEAD {
        add(slot, counter::CREATED, 1);
        emit(cfg, event_kind::CREATE, 0, 0, now);
    }
    match entry {
        Some(state) => unsafe { *state = runnable },
        None => insert_state(slot, key, &runnable),
    }
}

/// Adds a park of the g of `key` (see `process_key`) that ended, blocked
/// `blocked` ns, to where it parked.
#[inline(always)]
fn count_block(key: u64, blocked: u64) {
    let Some(site) = (unsafe { PARK_STACK.get(&key) }).copied() else {
        return;
    };
    let _ = PARK_STACK.remove(&key);
    let Some(counts) = this_cpu_entry(&BLOCK_PROFILE, &site) else {
        return;
    };
    counts.count += 1;
    counts.blocked_ns += blocked;
}

/// `runtime.gopark(unlockf, lock, reason, ...)`, on the goroutine about to
/// park (R14 is its g; the reason byte in RCX): its user stack, for the block
/// profile. Attached only when a block profile is asked for.
#[uprobe]
pub fn go_gopark(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    if !transition_hit(slot) {
        return 0;
    }
    if call_restarts(&ctx, slot) {
        return 0;
    }
    let regs = unsafe { &*ctx.regs };
    let site = BlockKey {
        caller: read_user::<u64>(slot, regs.rsp).unwrap_or(0),
        stack_id: match ctx.get_stackid(&BLOCK_STACKS, u64::from(BPF_F_USER_STACK)) {
            Ok(id) => id as i32,
            Err(error) => error,
        },
        reason: u32::from(regs.rcx as u8),
        slot,
        _pad: 0,
    };
    // A copy: a map key cannot point into the context.
    let key = process_key(slot, regs.r14);
    let _ = PARK_STACK.insert(&key, &site, 0);
    0
}

/// `runtime.entersyscall` and `runtime.entersyscallblock` (`//go:nosplit`: at
/// entry). Attached for Go 1.26+ only, which enters syscalls without casgstatus.
#[uprobe]
pub fn go_entersyscall(_ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    if !transition_hit(cfg.slot) {
        return 0;
    }
    syscall_entered(cfg, unsafe { bpf_ktime_get_ns() });
    0
}

/// `runtime.exitsyscall`, on the goroutine back from its syscall (Go 1.26+).
#[uprobe]
pub fn go_exitsyscall(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    if !transition_hit(cfg.slot) {
        return 0;
    }
    if let Some(goid) = goid_of(cfg, current_g(&ctx)) {
        syscall_exited(cfg, goid, unsafe { bpf_ktime_get_ns() }, false);
    }
    0
}

#[inline(always)]
fn syscall_entered(cfg: &Config, now: u64) {
    add(cfg.slot, counter::SYSCALL_ENTER, 1);
    let _ = SYSCALL_START.insert(&current_tid(), &now, 0);
    if cfg.stream_events & (stream::ALL | stream::RUNS) != 0 {
        send(
            cfg.slot,
            &thread_event(cfg, event_kind::SYSCALL_ENTER, 0, 0, now),
        );
    }
}

/// Pairs with the syscall entered on this thread (a goroutine keeps its M, so
/// its thread, during a syscall). `resumed`: it goes on running on its P.
#[inline(always)]
fn syscall_exited(cfg: &Config, goid: u64, now: u64, resumed: bool) {
    let slot = cfg.slot;
    add(slot, counter::SYSCALL_EXIT, 1);
    let tid = current_tid();
    let Some(&entered) = (unsafe { SYSCALL_START.get(&tid) }) else {
        return; // entered before we attached
    };
    let _ = SYSCALL_START.remove(&tid);
    // Entered before this window (or by a thread of a process gone since,
    // whose id this thread reuses: before this process was watched).
    if !in_window(slot, entered) {
        return;
    }
    let took = now.saturating_sub(entered);
    add(slot, counter::SYSCALL_PAIRS, 1);
    add(slot, counter::SYSCALL_NS, took);
    if let Some(stats) = goroutine(slot, goid) {
        stats.syscalls += 1;
        stats.syscall_ns += took;
    }
    if cfg.stream_events & (stream::ALL | stream::RUNS) != 0 {
        let mut event = thread_event(cfg, event_kind::SYSCALL, goid, took, now);
        if resumed {
            event.flags = event_flags::RESUMED;
        }
        send(slot, &event);
    }
}

/// A function of the observer itself: what a uprobe hit costs (the trap and
/// a minimal program), measured at start.
#[uprobe]
pub fn calibration(_ctx: ProbeContext) -> u32 {
    if let Some(hits) = CALIBRATION_HITS.get_ptr_mut(0) {
        unsafe { *hits += 1 };
    }
    0
}

/// `runtime.sigtrampgo(sig uint32, info *siginfo, ctx unsafe.Pointer)`: the Go
/// signal handler, on the thread the signal interrupted; sig in RAX, the kernel's
/// signal frame context in RCX. For SIGURG, reports where the preemption landed.
#[uprobe]
pub fn go_sigtrampgo(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    add(slot, counter::PROBE_HITS, 1);
    let regs = unsafe { &*ctx.regs };
    if regs.rax as u32 != SIGURG as u32 {
        return 0;
    }
    let frame = regs.rcx;
    let Some(rip) = read_user::<u64>(slot, frame + signal_frame::RIP) else {
        return 0;
    };
    // R14 held the goroutine if the thread ran Go code; otherwise the read fails
    // or gives no plausible goid, and 0 stands for "not a goroutine".
    let goid = read_user::<u64>(slot, frame + signal_frame::R14)
        .filter(|&g| g != 0)
        .and_then(|g| goid_of(cfg, g))
        .unwrap_or(0);
    let now = unsafe { bpf_ktime_get_ns() };
    send(
        slot,
        &thread_event(cfg, event_kind::PREEMPT_LANDED, goid, rip, now),
    );
    0
}

/// A goroutine is preempted: `runtime.goschedImpl(gp, preempted)` (Go 1.22+,
/// only with `preempted`) or `runtime.gopreempt_m(gp)` (before), or yields its P
/// to a semaphore's waiter (`runtime.goyield_m(gp)`, "preempted" in runtime/trace
/// too); on g0 with gp in RAX. `gp.asyncSafePoint` tells a SIGURG's doing (`asyncPreempt2` sets it)
/// from a preemption at a stack check. Rare: counted and always sent.
#[uprobe]
pub fn go_preempted(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    if !transition_hit(slot) {
        return 0;
    }
    if call_restarts(&ctx, slot) {
        return 0;
    }
    let regs = unsafe { &*ctx.regs };
    if cookie(&ctx) & COOKIE_PREEMPTED_ARGUMENT != 0 && regs.rbx as u8 == 0 {
        return 0; // runtime.Gosched: a yield, not a preemption
    }
    let gp = regs.rax;
    let by_signal = read_user::<u8>(slot, gp + cfg.offsets.g_async_safe_point).unwrap_or(0) != 0;
    add(
        slot,
        if by_signal {
            counter::ASYNC_PREEMPTED
        } else {
            counter::COOPERATIVE_PREEMPTED
        },
        1,
    );
    let goid = goid_of(cfg, gp).unwrap_or(0);
    // Per goroutine, as in the log: the preemptions a signal made.
    if by_signal && let Some(stats) = existing_goroutine(slot, goid) {
        stats.preemptions += 1;
    }
    let mut event = thread_event(cfg, event_kind::PREEMPTED, goid, 0, unsafe {
        bpf_ktime_get_ns()
    });
    if by_signal {
        event.flags = event_flags::ASYNC;
    }
    send(slot, &event);
    0
}

/// `runtime.preemptPark(gp)`: a goroutine stops for the GC to scan its stack.
/// Counted when a SIGURG did it (`gp.asyncSafePoint`), the other outcome of a
/// signal besides a preemption.
#[uprobe]
pub fn go_preempt_park(ctx: ProbeContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    add(slot, counter::PROBE_HITS, 1);
    if call_restarts(&ctx, slot) {
        return 0;
    }
    let gp = unsafe { (*ctx.regs).rax };
    if read_user::<u8>(slot, gp + cfg.offsets.g_async_safe_point).unwrap_or(0) == 0 {
        return 0;
    }
    add(slot, counter::GC_SUSPENDED, 1);
    let goid = goid_of(cfg, gp).unwrap_or(0);
    send(
        slot,
        &thread_event(cfg, event_kind::GC_SUSPENDED, goid, 0, unsafe {
            bpf_ktime_get_ns()
        }),
    );
    0
}

/// `signal:signal_generate`, kept to SIGURG sent by a thread of a watched
/// process (sysmon's `preemptone`, or the GC suspending a goroutine) to one of
/// its threads.
#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    let Ok(sig) = (unsafe { ctx.read_at::<i32>(cfg.signal_sig_offset as usize) }) else {
        return 0;
    };
    if sig != SIGURG {
        return 0;
    }
    let Ok(tid) = (unsafe { ctx.read_at::<i32>(cfg.signal_pid_offset as usize) }) else {
        return 0;
    };
    let tid = tid as u32;
    add(slot, counter::PREEMPT, 1);
    let now = unsafe { bpf_ktime_get_ns() };
    let mut event = Event::new(slot, event_kind::PREEMPT, tid, now, 0, 0);
    event.sender_tid = current_tid();
    // What ran on the thread, when the probes saw it start in this window (a
    // run seen in an earlier window may have ended long ago).
    if let Some(running) = unsafe { RUNNING.get(&tid) }
        && running.tgid == cfg.target_tgid
        && in_window(slot, running.since_ns)
    {
        event.goid = running.goid;
        let until = if running.stopped_ns == 0 {
            now
        } else {
            event.flags |= event_flags::STOPPED;
            running.stopped_ns
        };
        event.value = until.saturating_sub(running.since_ns);
        event.m_id = running.m_id;
        event.p_id = running.p_id;
    }
    send(slot, &event);
    0
}

/// `sched:sched_process_exec`: a watched process runs another image from now
/// on (the same pid): userspace notices the count change and re-attaches or
/// ends. When it looks for new processes, every exec is sent.
#[tracepoint]
pub fn process_exec(_ctx: TracePointContext) -> u32 {
    let watched = this_process();
    if let Some(cfg) = watched {
        add(cfg.slot, counter::EXECS, 1);
    }
    if DISCOVERY.get(0).copied().unwrap_or(0) != 0 {
        let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        let slot = watched.map_or(NO_SLOT, |cfg| cfg.slot);
        let now = unsafe { bpf_ktime_get_ns() };
        send(
            slot,
            &Event::new(slot, event_kind::NEW_PROCESS, pid, now, 0, 0),
        );
    }
    0
}

/// A CPU sample (the software cpu-clock, on every CPU): what a watched
/// process's thread ran when the timer fired. The interrupted user registers
/// give the goroutine (R14 is `g` in Go's register ABI) and the code; the
/// thread's M gives the P it holds and that P's run queue. Counted in the
/// kernel by goroutine and stack: no per-sample record, no wakeup.
#[perf_event]
pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
    let Some(cfg) = this_process() else {
        return 0;
    };
    let slot = cfg.slot;
    add(slot, counter::SAMPLES, 1);
    let regs = unsafe { &(*ctx.ctx).regs };
    // Interrupted in the kernel (a syscall, a fault): the user registers are
    // the ones saved at its entry.
    let in_kernel = regs.cs & 3 == 0;
    let (r14, sp) = if in_kernel {
        saved_user_registers().unwrap_or((0, 0))
    } else {
        (regs.r14, regs.rsp)
    };
    let mut flags = if in_kernel {
        sample_flags::IN_KERNEL
    } else {
        0
    };
    let stack_id = match ctx.get_stackid(&SAMPLE_STACKS, u64::from(BPF_F_USER_STACK)) {
        Ok(id) => id as i32,
        Err(error) => {
            add(slot, counter::SAMPLE_STACKS_LOST, 1);
            error
        }
    };
    let mut key = SampleKey {
        goid: 0,
        start_pc: 0,
        leaf_return: unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0),
        stack_id,
        flags: sample_kind::NOT_GO,
        slot,
        _pad: 0,
    };
    let mut waiting = 0;
    if let Some(m) = m_of_this_thread(cfg, r14) {
        let goid = if r14 == 0 { None } else { goid_of(cfg, r14) };
        match goid {
            Some(0) => key.flags = sample_kind::SYSTEM,
            Some(goid) => {
                key.flags = sample_kind::GOROUTINE;
                key.goid = goid;
                key.start_pc = read_user::<u64>(slot, r14 + cfg.offsets.g_startpc).unwrap_or(0);
            }
            None => {}
        }
        if let Some(p) = read_user::<u64>(slot, m + cfg.offsets.m_p)
            && p != 0
        {
            flags |= sample_flags::HOLDS_P;
            waiting = goroutines_waiting(cfg, p);
        }
    }
    key.flags |= flags;
    count_sample(slot, &key, waiting);
    0
}

/// R14 and the stack pointer as the thread left user mode
/// (`bpf_task_pt_regs`: the registers saved at kernel entry).
#[inline(always)]
fn saved_user_registers() -> Option<(u64, u64)> {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let r14 = unsafe { bpf_probe_read_kernel(&raw const (*regs).r14) }.ok()?;
    let sp = unsafe { bpf_probe_read_kernel(&raw const (*regs).rsp) }.ok()?;
    Some((r14, sp))
}

/// The M of `g` (R14) when it is the M of this thread (`m.procid` is the
/// thread id): otherwise R14 did not hold a g (C code, a thread of another
/// runtime).
#[inline(always)]
fn m_of_this_thread(cfg: &Config, g: u64) -> Option<u64> {
    let offsets = &cfg.offsets;
    if g == 0 {
        return None;
    }
    // Plain reads, not `read_user`: a failure is expected (R14 is anything in
    // C code) and is not a read error of the offsets.
    let m = unsafe { bpf_probe_read_user((g + offsets.g_m) as *const u64) }.ok()?;
    if m == 0 {
        return None;
    }
    let procid = unsafe { bpf_probe_read_user((m + offsets.m_procid) as *const u64) }.ok()?;
    (procid == u64::from(tid_in_target_namespace(cfg, current_tid()))).then_some(m)
}

/// Goroutines waiting to run that P `p` would run next: its local queue, its
/// runnext and the global queue.
#[inline(always)]
fn goroutines_waiting(cfg: &Config, p: u64) -> u64 {
    let (slot, offsets) = (cfg.slot, &cfg.offsets);
    let head = read_user::<u32>(slot, p + offsets.p_runqhead).unwrap_or(0);
    let tail = read_user::<u32>(slot, p + offsets.p_runqtail).unwrap_or(0);
    // The queue is a ring of 256: a torn read (head moved past tail) is not
    // a length.
    let local = match tail.wrapping_sub(head) {
        length @ 0..=256 => u64::from(length),
        _ => 0,
    };
    let next = u64::from(read_user::<u64>(slot, p + offsets.p_runnext).unwrap_or(0) != 0);
    let global = if cfg.global_runq_size == 0 {
        0
    } else {
        read_user::<i32>(slot, cfg.global_runq_size)
            .unwrap_or(0)
            .max(0) as u64
    };
    local + next + global
}

#[inline(always)]
fn count_sample(slot: u32, key: &SampleKey, waiting: u64) {
    let Some(counts) = this_cpu_entry(&CPU_SAMPLES, key) else {
        add(slot, counter::SAMPLES_LOST, 1);
        return;
    };
    counts.samples += 1;
    if waiting > 0 {
        counts.while_waiting += 1;
        counts.waiting_goroutines += waiting;
    }
}

/// This CPU's value of `key` in a per-CPU hash, created zeroed if needed;
/// None when the map is full. (Another CPU may insert the same key
/// meanwhile: then the insert fails and the lookup finds its entry.)
#[inline(always)]
fn this_cpu_entry<K, V: Default>(map: &PerCpuHashMap<K, V>, key: &K) -> Option<&'static mut V> {
    if let Some(value) = map.get_ptr_mut(key) {
        return Some(unsafe { &mut *value });
    }
    let _ = map.insert(key, &V::default(), BPF_NOEXIST as u64);
    map.get_ptr_mut(key).map(|value| unsafe { &mut *value })
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: bpf_probe_read_user is a GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
