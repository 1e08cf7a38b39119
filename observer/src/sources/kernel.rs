//! The kernel programs, loaded once for every watched process: calibrated,
//! their tracepoints and CPU sampler attached once. Each watched process gets
//! a slot (`Config::slot`): its entry in `PROCESSES`, its entries in the
//! per-process arrays and the high bits of its keys in the per-goroutine maps.
//! The uprobes are attached per executable (`probes`), for one process or,
//! with `--all`, shared by every process of the file (`Kernel::windows_of`),
//! in windows judged for each process (`windows`, `duty_cycle`).
//!
//! The ring buffer and the CPU samples are shared: whoever drains them first
//! sorts them by slot, and each process takes its own. So is the small ring
//! buffer by which the programs wake the windows' threads (a process's hit
//! countdown ran out): one thread waits on it ([`Kernel::start_waker`]) and
//! wakes the windows that serve that slot ([`Kernel::wait_for_wake`]).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, Weak,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::{TracePoint, UProbe},
    util::nr_cpus,
};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};
use gobpf_sched_common::{
    ByReason, Config, Counters, Event, GState, GoroutineStats, Histogram, MAX_PROCESSES, NO_SLOT,
    Running, event_kind, split_process_key, stream,
};

use crate::sources::{
    block_stacks::BlockStacks,
    calibration::{self, HitCost},
    drain::{bpf, delete_keys, visit_entries},
    probes::Detachable,
    sampler::{self, Drained, Sampler, SamplerCost},
    uprobe_multi::{self, MultiPrograms},
    windows::Windows,
};

/// Set (to anything) to attach the transition probes with one perf-event
/// link per site, as on kernels without uprobe_multi links (to compare).
pub const NO_UPROBE_MULTI_ENV: &str = "GOBPF_SCHED_NO_UPROBE_MULTI";

/// Whether uprobe_multi links work here: not tried yet, they do, they were
/// refused (or are not to be used).
const MULTI_UNTRIED: u8 = 0;
const MULTI_WORKS: u8 = 1;
const MULTI_REFUSED: u8 = 2;

/// The kernel object, built from `observer-ebpf/` by build.rs.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gobpf-sched-ebpf"));

/// Ring-buffer size with `--events` (the default, for preemptions alone, is set in
/// the kernel object: 256 KiB).
const EVENTS_RING_BYTES: u32 = 32 << 20;

/// ... and when only run starts and ends are streamed (the exact blame view):
/// 100 ms of 80,000 slices a second.
const RUNS_RING_BYTES: u32 = 8 << 20;

/// What the loaded programs do, the same for every process.
pub struct Settings {
    /// Which transitions go to the ring buffer: bits of `stream`.
    pub stream_events: u32,
    /// Whether the SIGURG tracepoint is attached (the preemptions facet).
    pub signals: bool,
    /// CPU samples a second on each CPU (0: no sampler).
    pub sample_hz: u64,
    /// Whether the block profile's maps are read.
    pub block_stacks: bool,
    /// Whether every exec on the host is reported (`NEW_PROCESS`).
    pub discovery: bool,
    /// Offsets of `sig` and `pid` in the `signal:signal_generate` record.
    pub signal_offsets: (u32, u32),
}

pub struct Kernel {
    loaded: Mutex<Loaded>,
    /// What a uprobe hit costs here, measured at load.
    pub hit_cost: HitCost,
    /// Offsets of `sig` and `pid` in the `signal:signal_generate` record.
    pub signal_offsets: (u32, u32),
    /// Records of the ring buffer, sorted by slot (and the pids of new
    /// processes).
    events: Mutex<Sorted<EventSource, Vec<Event>>>,
    /// The CPU samples, sorted by slot; None without a sampler.
    samples: Option<Mutex<Sorted<Sampler, Drained>>>,
    /// Nanoseconds of CPU time a sample stands for (0: no sampler).
    pub sample_period_ns: u64,
    sampler_program_id: Option<u32>,
    block_stacks: Option<Mutex<BlockStacks>>,
    /// The windows of probes of each executable file (device, inode) that
    /// its processes share (`--all`); gone with its last process.
    shared_windows: Mutex<HashMap<(u64, u64), SharedWindows>>,
    /// Holding it keeps the kernel's run-time statistics of BPF programs on
    /// (what the programs themselves cost per hit); None when refused.
    stats: Option<OwnedFd>,
    /// Descriptors of the programs whose statistics were asked for, by name:
    /// read without taking the loaded programs (which attaching uprobes
    /// holds for up to ~100 ms, and the windows must not wait on).
    program_fds: Mutex<HashMap<&'static str, OwnedFd>>,
    /// Windows' links waiting to be detached, and their turn (see
    /// [`Kernel::detach_in_turn`]).
    detaching: Mutex<DetachQueue>,
    detach_turn: Condvar,
    /// The transition programs for uprobe_multi links (see `uprobe_multi`);
    /// None when the object could not be prepared for them.
    multi_programs: Option<MultiPrograms>,
    /// Those loaded so far, by name.
    multi_loaded: Mutex<HashMap<&'static str, Arc<OwnedFd>>>,
    /// `MULTI_UNTRIED`, `MULTI_WORKS` or `MULTI_REFUSED`.
    multi_state: AtomicU8,
    /// The slots whose countdown ran out (`LOOK_COUNTDOWN`), not yet taken
    /// by their windows' thread, and the signal of a new one ...
    woken: Mutex<HashSet<u32>>,
    wake: Condvar,
    /// ... sent by a thread that waits on the programs' `WAKE` ring buffer
    /// (here until it starts).
    wake_ring: Mutex<Option<RingBuf<MapData>>>,
}

/// Links waiting to be detached: by rate of traps (the highest first), then
/// in the order they came; and whether one is being detached.
#[derive(Default)]
struct DetachQueue {
    waiting: BinaryHeap<(u64, Reverse<u64>)>,
    tickets: u64,
    busy: bool,
}

struct Loaded {
    ebpf: Ebpf,
    processes: BpfHashMap<MapData, u32, Config>,
    /// Slots not in use, the next one last.
    free_slots: Vec<u32>,
}

/// What was drained from a shared source, waiting for its process to take it.
struct Sorted<S, T> {
    source: S,
    by_slot: HashMap<u32, T>,
}

/// The windows of probes of an executable, while a process uses them.
type SharedWindows = Weak<Mutex<Windows>>;

/// The event source: the ring buffer and the pids of new processes.
type EventSource = (RingBuf<MapData>, Vec<u32>);

impl Kernel {
    pub fn load(settings: &Settings) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        if settings.stream_events & stream::ALL != 0 {
            // Every transition is a record: room for a burst between two drains.
            loader.map_max_entries("EVENTS", EVENTS_RING_BYTES);
        } else if settings.stream_events & stream::RUNS != 0 {
            // Two records per run slice, drained every 100 ms.
            loader.map_max_entries("EVENTS", RUNS_RING_BYTES);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).context(
            "the kernel refused the eBPF programs (is BPF enabled, and does this process \
             have CAP_BPF and CAP_PERFMON, e.g. as root outside a user namespace?)",
        )?;
        // Before any map is taken out of the object: the programs for
        // uprobe_multi links use the same maps.
        let multi_programs = if std::env::var_os(NO_UPROBE_MULTI_ENV).is_some() {
            None
        } else {
            MultiPrograms::prepare(EBPF_OBJECT, &ebpf)
                .inspect_err(|error| {
                    eprintln!(
                        "gobpf-sched: note: no uprobe_multi links ({error:#}); the transition \
                         probes use one perf-event link per site, slower to detach"
                    );
                })
                .ok()
        };
        let hit_cost = calibration::measure(&mut ebpf)?;
        // Always: an exec replaces what every probe of a process is attached
        // to (and, with discovery, starts a process to look at).
        attach_tracepoint(&mut ebpf, "process_exec", "sched", "sched_process_exec")?;
        if settings.signals {
            attach_tracepoint(&mut ebpf, "signal_generate", "signal", "signal_generate")?;
        }
        if settings.discovery {
            let mut discovery: Array<_, u32> = Array::try_from(
                ebpf.map_mut("DISCOVERY")
                    .context("the eBPF object has no map DISCOVERY")?,
            )?;
            discovery.set(0, 1, 0)?;
        }
        let (samples, sample_period_ns, sampler_program_id) = if settings.sample_hz > 0 {
            let sampler = Sampler::attach(&mut ebpf, settings.sample_hz)?;
            let (period, id) = (sampler.period_ns, sampler.program_id);
            (Some(Mutex::new(Sorted::new(sampler))), period, Some(id))
        } else {
            (None, 0, None)
        };
        let block_stacks = if settings.block_stacks {
            Some(Mutex::new(BlockStacks::take(&mut ebpf)?))
        } else {
            None
        };
        let ring: RingBuf<MapData> = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .context("the eBPF object has no map EVENTS")?,
        )?;
        let processes = BpfHashMap::try_from(
            ebpf.take_map("PROCESSES")
                .context("the eBPF object has no map PROCESSES")?,
        )?;
        let wake_ring: RingBuf<MapData> = RingBuf::try_from(
            ebpf.take_map("WAKE")
                .context("the eBPF object has no map WAKE")?,
        )?;
        Ok(Self {
            loaded: Mutex::new(Loaded {
                ebpf,
                processes,
                free_slots: (0..MAX_PROCESSES).rev().collect(),
            }),
            hit_cost,
            signal_offsets: settings.signal_offsets,
            events: Mutex::new(Sorted::new((ring, Vec::new()))),
            samples,
            sample_period_ns,
            sampler_program_id,
            block_stacks,
            shared_windows: Mutex::default(),
            stats: aya::sys::enable_stats(aya::sys::Stats::RunTime).ok(),
            program_fds: Mutex::default(),
            detaching: Mutex::default(),
            detach_turn: Condvar::new(),
            multi_state: AtomicU8::new(if multi_programs.is_some() {
                MULTI_UNTRIED
            } else {
                MULTI_REFUSED
            }),
            multi_programs,
            multi_loaded: Mutex::default(),
            woken: Mutex::default(),
            wake: Condvar::new(),
            wake_ring: Mutex::new(Some(wake_ring)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        // A thread that panicked holding it left the programs as they were.
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the loaded programs (to attach or detach uprobes).
    pub fn with_ebpf<R>(&self, f: impl FnOnce(&mut Ebpf) -> R) -> R {
        f(&mut self.lock().ebpf)
    }

    /// A handle of its own to map `name` (a new file descriptor of the same
    /// map): each watched process reads its slot through its own handles.
    pub fn open_map<T: TryFrom<Map, Error = aya::maps::MapError>>(&self, name: &str) -> Result<T> {
        let loaded = self.lock();
        let map = loaded
            .ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no map {name}"))?;
        let data = duplicate(map_data(map))?;
        Ok(T::try_from(same_kind(map, data))?)
    }

    /// Like [`Kernel::open_map`], for the raw batch reads (`drain`).
    pub fn open_map_data(&self, name: &str) -> Result<MapData> {
        let loaded = self.lock();
        let map = loaded
            .ebpf
            .map(name)
            .with_context(|| format!("the eBPF object has no map {name}"))?;
        duplicate(map_data(map))
    }

    /// Starts serving a process: `config` without its slot, which is chosen
    /// here (its per-process state emptied first). Returns the slot.
    pub fn register(&self, mut config: Config) -> Result<u32> {
        let mut loaded = self.lock();
        let Some(slot) = loaded.free_slots.pop() else {
            bail!(
                "{MAX_PROCESSES} processes are watched already: the kernel programs hold no more"
            );
        };
        config.slot = slot;
        let result = clear_slot(&mut loaded.ebpf, slot, None)
            .and_then(|()| Ok(loaded.processes.insert(config.target_tgid, config, 0)?));
        if let Err(error) = result {
            loaded.free_slots.push(slot);
            return Err(error.context("cannot register the process with the kernel programs"));
        }
        Ok(slot)
    }

    /// Stops serving the process of `tgid` in `slot`: the programs ignore it
    /// from now on; its entries are deleted and the slot is free again.
    pub fn unregister(&self, tgid: u32, slot: u32) {
        let _ = self.lock().processes.remove(&tgid);
        // What waits in the shared sources for this slot is sorted out now,
        // then dropped: it is not the next process's.
        let _ = self.drain_events(NO_SLOT);
        let _ = self.drain_samples(NO_SLOT);
        if let Ok(mut events) = self.events.lock() {
            events.by_slot.remove(&slot);
        }
        if let Some(Ok(mut samples)) = self.samples.as_ref().map(Mutex::lock) {
            samples.by_slot.remove(&slot);
        }
        if let Ok(mut woken) = self.woken.lock() {
            woken.remove(&slot);
        }
        let mut loaded = self.lock();
        // A slot that could not be emptied is not reused.
        if clear_slot(&mut loaded.ebpf, slot, Some(tgid)).is_ok() {
            loaded.free_slots.push(slot);
        }
    }

    /// The windows of probes of executable `file` (device, inode), made by
    /// `attach` for its first process; shared by the others.
    pub fn windows_of(
        &self,
        file: (u64, u64),
        attach: impl FnOnce() -> Result<Windows>,
    ) -> Result<Arc<Mutex<Windows>>> {
        // Held while attaching: the next process of the file waits for them.
        let mut shared = self
            .shared_windows
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(windows) = shared.get(&file).and_then(Weak::upgrade) {
            return Ok(windows);
        }
        shared.retain(|_, windows| windows.strong_count() > 0);
        let windows = Arc::new(Mutex::new(attach()?));
        shared.insert(file, Arc::downgrade(&windows));
        Ok(windows)
    }

    /// Every record of the ring buffer for `slot` since the last call.
    pub fn drain_events(&self, slot: u32) -> Vec<Event> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.sort_out(|(ring, new_processes), by_slot| {
            while let Some(item) = ring.next() {
                if item.len() < size_of::<Event>() {
                    continue;
                }
                // SAFETY: the kernel wrote an `Event` (same #[repr(C)] definition);
                // read_unaligned copes with the ring buffer's 8-byte alignment.
                let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) };
                if event.kind == event_kind::NEW_PROCESS {
                    new_processes.push(event.tid);
                    if event.slot == NO_SLOT {
                        continue;
                    }
                }
                by_slot.entry(event.slot).or_default().push(event);
            }
        });
        events.by_slot.remove(&slot).unwrap_or_default()
    }

    /// The pids that exec'd a program since the last call (with discovery).
    pub fn new_processes(&self) -> Vec<u32> {
        // Drains the ring buffer into the queues of the processes.
        let _ = self.drain_events(NO_SLOT);
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut events.source.1)
    }

    /// The CPU samples of `slot` since the last call; None without a sampler.
    pub fn drain_samples(&self, slot: u32) -> Result<Option<Drained>> {
        let Some(samples) = &self.samples else {
            return Ok(None);
        };
        let mut samples = samples.lock().unwrap_or_else(|e| e.into_inner());
        let mut failed = None;
        samples.sort_out(|sampler, by_slot| match sampler.drain() {
            Ok(drained) => drained.sort_into(by_slot),
            Err(error) => failed = Some(error),
        });
        if let Some(error) = failed {
            return Err(error);
        }
        Ok(Some(samples.by_slot.remove(&slot).unwrap_or_default()))
    }

    /// What the sampling program has cost so far (every process's samples).
    pub fn sampler_cost(&self) -> Option<SamplerCost> {
        sampler::cost_of(self.sampler_program_id?)
    }

    /// Runs `f` with the block profile's maps; None when not asked for.
    pub fn with_block_stacks<R>(&self, f: impl FnOnce(&BlockStacks) -> R) -> Option<R> {
        let stacks = self.block_stacks.as_ref()?;
        Some(f(&stacks.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// Detaches the links of a window: the uprobe_multi links at once, side
    /// by side (no global lock; see `uprobe_multi`), the perf-event links
    /// each when its turn comes. The kernel detaches those one at a time
    /// under a global lock, in no particular order, and a site traps until
    /// its turn; here they go one after the other, the one trapping at the
    /// highest rate (its `rates`, hits a second in every process it serves)
    /// first, whatever window it is of: the costliest sites get their code
    /// back first. (The programs of the links that wait only count their
    /// hits: see `CLOSING_HITS`.) Returns when each was gone, after `started`.
    pub fn detach_in_turn(&self, links: Vec<(u64, Detachable)>, started: Instant) -> Vec<Duration> {
        let lock = || self.detaching.lock().unwrap_or_else(|e| e.into_inner());
        // Every perf-event link of the window waits before the first goes.
        let tickets: Vec<Option<(u64, Reverse<u64>)>> = {
            let mut queue = lock();
            links
                .iter()
                .map(|(rate, link)| {
                    let Detachable::PerfEvent(_) = link else {
                        return None;
                    };
                    let ticket = (*rate, Reverse(queue.tickets));
                    queue.tickets += 1;
                    queue.waiting.push(ticket);
                    Some(ticket)
                })
                .collect()
        };
        std::thread::scope(|scope| {
            let detaching: Vec<_> = links
                .into_iter()
                .zip(tickets)
                .map(|((_, link), ticket)| {
                    scope.spawn(move || {
                        crate::sources::windows::prompt_thread();
                        let Some(ticket) = ticket else {
                            drop(link);
                            return started.elapsed();
                        };
                        let mut queue = lock();
                        while queue.busy || queue.waiting.peek() != Some(&ticket) {
                            queue = self
                                .detach_turn
                                .wait(queue)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                        queue.waiting.pop();
                        queue.busy = true;
                        drop(queue);
                        drop(link);
                        lock().busy = false;
                        self.detach_turn.notify_all();
                        started.elapsed()
                    })
                })
                .collect();
            detaching
                .into_iter()
                .map(|thread| thread.join().unwrap_or_else(|_| started.elapsed()))
                .collect()
        })
    }

    /// Starts the thread that wakes the windows' threads when a countdown
    /// runs out (once; later calls do nothing). It ends within a second of
    /// the kernel programs' end.
    pub fn start_waker(self: &Arc<Self>) -> Result<()> {
        let Some(mut ring) = self
            .wake_ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        let kernel = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("wakes".to_owned())
            .spawn(move || {
                crate::sources::windows::prompt_thread();
                let mut poll = libc::pollfd {
                    fd: ring.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                loop {
                    // SAFETY: one valid pollfd, alive during the call.
                    unsafe { libc::poll(&mut poll, 1, 1000) };
                    let Some(kernel) = kernel.upgrade() else {
                        break;
                    };
                    let mut slots = Vec::new();
                    while let Some(record) = ring.next() {
                        if let Ok(bytes) = <[u8; 4]>::try_from(&record[..]) {
                            slots.push(u32::from_ne_bytes(bytes));
                        }
                    }
                    if !slots.is_empty() {
                        let mut woken = kernel.woken.lock().unwrap_or_else(|e| e.into_inner());
                        woken.extend(slots);
                        kernel.wake.notify_all();
                    }
                }
            })
            .context("cannot start the thread of the wakes")?;
        Ok(())
    }

    /// Waits at most `timeout` for the countdown of one of `slots` to run
    /// out; whether one did (taken: it wakes no one else).
    pub fn wait_for_wake(&self, slots: &[u32], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let before = woken.len();
            woken.retain(|slot| !slots.contains(slot));
            if woken.len() < before {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            woken = self
                .wake
                .wait_timeout(woken, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// What `programs` have run in all (time, runs), by the kernel's
    /// statistics, for every process they serve (both their instances: for
    /// perf-event links and for uprobe_multi links); None when off.
    pub fn program_run_time(&self, programs: &[&'static str]) -> Option<(Duration, u64)> {
        self.stats.as_ref()?;
        let mut fds = self.program_fds.lock().unwrap_or_else(|e| e.into_inner());
        let multi = self.multi_loaded.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = (Duration::ZERO, 0);
        for &name in programs {
            if !fds.contains_key(name) {
                let fd = self.with_ebpf(|ebpf| {
                    let program: &UProbe = ebpf.program(name)?.try_into().ok()?;
                    program.fd().ok()?.as_fd().try_clone_to_owned().ok()
                })?;
                fds.insert(name, fd);
            }
            let instances = std::iter::once(&fds[name]).chain(multi.get(name).map(|fd| &**fd));
            for fd in instances {
                let (run_time, runs) = run_statistics(fd)?;
                total.0 += run_time;
                total.1 += runs;
            }
        }
        Some(total)
    }

    /// Links program `name` at `sites` (file offset, cookie) of `exe` with
    /// one uprobe_multi link (in process `pid` only, or every process that
    /// runs it); None when such links do not work here (then the caller
    /// attaches one perf-event uprobe per site). The first refusal is taken
    /// for the kernel's and said once; later ones are errors.
    pub fn multi_link(
        &self,
        name: &'static str,
        exe: &Path,
        sites: &[(u64, u64)],
        pid: Option<u32>,
    ) -> Option<Result<OwnedFd>> {
        let programs = self.multi_programs.as_ref()?;
        if self.multi_state.load(Ordering::Relaxed) == MULTI_REFUSED {
            return None;
        }
        let linked = (|| {
            let program = {
                let mut loaded = self.multi_loaded.lock().unwrap_or_else(|e| e.into_inner());
                match loaded.get(name) {
                    Some(fd) => fd.clone(),
                    None => {
                        let fd = Arc::new(programs.load(name)?);
                        loaded.insert(name, fd.clone());
                        fd
                    }
                }
            };
            let link = uprobe_multi::attach(program.as_fd(), exe, sites, pid)
                .with_context(|| format!("cannot attach {name} with a uprobe_multi link"))?;
            anyhow::Ok(link)
        })();
        match linked {
            Ok(link) => {
                self.multi_state.store(MULTI_WORKS, Ordering::Relaxed);
                Some(Ok(link))
            }
            Err(error) if self.multi_state.load(Ordering::Relaxed) == MULTI_UNTRIED => {
                self.multi_state.store(MULTI_REFUSED, Ordering::Relaxed);
                eprintln!(
                    "gobpf-sched: note: uprobe_multi links are refused here ({error:#}); \
                     the transition probes use one perf-event link per site, slower to detach"
                );
                None
            }
            Err(error) => Some(Err(error)),
        }
    }
}

impl<S, T> Sorted<S, T> {
    fn new(source: S) -> Self {
        Self {
            source,
            by_slot: HashMap::new(),
        }
    }

    /// Lets `drain` move what waits in the source to the queues of the slots.
    fn sort_out(&mut self, drain: impl FnOnce(&mut S, &mut HashMap<u32, T>)) {
        drain(&mut self.source, &mut self.by_slot);
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<()> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("the eBPF object has no program {program}"))?
        .try_into()?;
    tracepoint
        .load()
        .with_context(|| format!("the verifier rejected {program}"))?;
    tracepoint
        .attach(category, name)
        .with_context(|| format!("cannot attach to the {category}:{name} tracepoint"))?;
    Ok(())
}

fn duplicate(data: &MapData) -> Result<MapData> {
    let fd = data.fd().as_fd().try_clone_to_owned()?;
    Ok(MapData::from_fd(fd)?)
}

/// The descriptor of a map the object still holds.
pub fn map_fd(map: &Map) -> BorrowedFd<'_> {
    map_data(map).fd().as_fd()
}

/// The data of a map the object still holds.
fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(data)
        | Map::PerCpuArray(data)
        | Map::HashMap(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data)
        | Map::StackTraceMap(data) => data,
        other => unreachable!("no map of this kind in the object: {other:?}"),
    }
}

/// `data` as a map of the kind of `map`.
fn same_kind(map: &Map, data: MapData) -> Map {
    match map {
        Map::Array(_) => Map::Array(data),
        Map::PerCpuArray(_) => Map::PerCpuArray(data),
        Map::HashMap(_) => Map::HashMap(data),
        Map::PerCpuHashMap(_) => Map::PerCpuHashMap(data),
        Map::RingBuf(_) => Map::RingBuf(data),
        Map::StackTraceMap(_) => Map::StackTraceMap(data),
        other => unreachable!("no map of this kind in the object: {other:?}"),
    }
}

/// Empties what the programs keep for `slot`: its entries of the
/// per-process arrays, of the per-goroutine maps, and (`tgid`: of a process
/// that was watched) the threads of that process.
fn clear_slot(ebpf: &mut Ebpf, slot: u32, tgid: Option<u32>) -> Result<()> {
    zero_entry::<Counters>(ebpf, "COUNTERS", slot, [0; _])?;
    zero_entry::<ByReason>(ebpf, "PARKS", slot, [0; _])?;
    zero_entry::<Histogram>(ebpf, "RUN_SLICES", slot, [0; _])?;
    zero_entry::<Histogram>(ebpf, "RUNQ_LATENCY", slot, [0; _])?;
    zero_entry::<ByReason>(ebpf, "BLOCKED_NS", slot, [0; _])?;
    zero_entry_of::<u64>(ebpf, "LOOK_COUNTDOWN", slot)?;
    // No window is open: nothing recorded gives a duration.
    let mut window: Array<_, u64> = Array::try_from(
        ebpf.map_mut("WINDOW")
            .context("the eBPF object has no map WINDOW")?,
    )?;
    window.set(slot, u64::MAX, 0)?;
    delete_where::<u64, GoroutineStats>(ebpf, "GOROUTINES", |key, _| {
        split_process_key(*key).0 == slot
    })?;
    delete_where::<u64, GState>(ebpf, "G_STATE", |key, _| split_process_key(*key).0 == slot)?;
    delete_where::<u64, gobpf_sched_common::BlockKey>(ebpf, "PARK_STACK", |key, _| {
        split_process_key(*key).0 == slot
    })?;
    if let Some(tgid) = tgid {
        delete_where::<u32, Running>(ebpf, "RUNNING", |_, running| running.tgid == tgid)?;
    }
    Ok(())
}

/// Sets entry `slot` of array `name` to zero.
fn zero_entry_of<V: aya::Pod + Default>(ebpf: &mut Ebpf, name: &str, slot: u32) -> Result<()> {
    let mut array: Array<_, V> = Array::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("the eBPF object has no map {name}"))?,
    )?;
    array.set(slot, V::default(), 0)?;
    Ok(())
}

/// Sets entry `slot` of per-CPU array `name` to `zero` on every CPU.
fn zero_entry<V: aya::Pod>(ebpf: &mut Ebpf, name: &str, slot: u32, zero: V) -> Result<()> {
    let mut array: PerCpuArray<_, V> = PerCpuArray::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("the eBPF object has no map {name}"))?,
    )?;
    let cpus = nr_cpus().map_err(|(path, error)| {
        anyhow::anyhow!("cannot read the number of CPUs from {path}: {error}")
    })?;
    let zeros = PerCpuValues::try_from(vec![zero; cpus])?;
    array.set(slot, zeros, 0)?;
    Ok(())
}

/// Deletes the entries of hash map `name` that `doomed` picks.
fn delete_where<K: Copy + Default, V: Copy + Default>(
    ebpf: &Ebpf,
    name: &str,
    doomed: impl Fn(&K, &V) -> bool,
) -> Result<()> {
    let map = ebpf
        .map(name)
        .with_context(|| format!("the eBPF object has no map {name}"))?;
    let fd = map_data(map).fd().as_fd();
    let mut keys = Vec::new();
    visit_entries::<K, V>(fd, |key, value| {
        if doomed(&key, &value) {
            keys.push(key);
        }
    })?;
    delete_keys(fd, &keys)
}

/// A BPF program's run time and run count (kept while the statistics are
/// on), with one `BPF_OBJ_GET_INFO_BY_FD` (aya's `ProgramInfo` takes a
/// program of its own; reading the fdinfo cost three system calls and a parse,
/// ten times a decision).
fn run_statistics(program: &OwnedFd) -> Option<(Duration, u64)> {
    // SAFETY: both are plain data; zero is their default. `info` outlives
    // the call, which writes at most `info_len` bytes to it.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let result = unsafe {
        let mut attr: bpf_attr = std::mem::zeroed();
        attr.info.bpf_fd = program.as_raw_fd() as u32;
        attr.info.info_len = size_of::<bpf_prog_info>() as u32;
        attr.info.info = (&raw mut info) as u64;
        bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)
    };
    (result >= 0).then(|| (Duration::from_nanos(info.run_time_ns), info.run_cnt))
}
