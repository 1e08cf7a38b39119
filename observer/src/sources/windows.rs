//! The transition probes in windows: the attached probes of one executable
//! (for one process, or every watched process that runs it), when they are
//! attached (`duty_cycle` decides, for each process; a thread of their own
//! drives them: [`drive`]), what a hit costs, what detaching them costs (the
//! traps until the kernel has put each site's code back: [`Closing`]), and
//! when the preemption probes could see what a SIGURG did.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::FileExt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{Array, MapData, PerCpuArray};
use gobpf_sched_common::{Counters, counter};

use crate::{
    sources::{
        duty_cycle::{Action, DutyCycle, Measures, WindowMeasure},
        kernel::Kernel,
        probes::{Detachable, Probes, TakenLink},
        runtime_memory::{self, SchedLayout},
    },
    stats::clock::read_clock,
    target::Target,
};

/// How often a site is read while its link is detached, and what the
/// kernel's breakpoint there reads as (x86's `int3`).
const SITE_POLL: Duration = Duration::from_millis(1);
const INT3: u8 = 0xCC;

/// How soon a session asks again while a window is being detached.
const CLOSING_RECHECK: Duration = Duration::from_millis(50);
/// The longest the thread that drives the windows sleeps at once (it ends
/// when no session holds them any more).
const LONGEST_SLEEP: Duration = Duration::from_millis(100);

/// Spans of windows older than this are forgotten (a signal resolves within a
/// second of its landing).
const SPANS_KEPT_NS: u64 = 10_000_000_000;

/// What the programs add to a hit's trap before the kernel measured them run
/// (the most seen here: 190–350 ns), so that the first window is not
/// predicted cheaper than it is ...
const UNMEASURED_PROGRAM_NS: f64 = 400.0;
/// ... and how many runs that guess weighs against what the kernel measured:
/// the first runs are the slowest (cold caches, new entries in the maps), and
/// a first window that closes within a few ms is made of them (1,170 ns a run
/// over the 2,214 of a busy HTTP server's first window, ~200 ns later).
const UNMEASURED_WEIGHT_RUNS: f64 = 10_000.0;

/// A process the probes serve.
struct Member {
    target: Target,
    slot: u32,
    /// Where its executable is loaded (run-time address − link-time address).
    load_bias: u64,
    /// Where its scheduler's counters are (None: not found), for the
    /// goroutine switches the duty cycle predicts from.
    sched: Option<SchedLayout>,
}

pub struct Windows {
    probes: Probes,
    duty_cycle: DutyCycle,
    /// The processes the probes serve, by pid.
    members: HashMap<u32, Member>,
    /// The per-process counters (their uprobe hits).
    counters: PerCpuArray<MapData, Counters>,
    /// The hits each process may still make before the windows' thread is
    /// woken (the kernel programs count them down: see `LOOK_COUNTDOWN`).
    countdowns: Array<MapData, u64>,
    /// How long the last window took to open.
    pub open_ns: Option<u64>,
    /// A window failed to open whole (said once).
    open_failed: bool,
    /// A window's uprobes are being detached (see [`Closing`]).
    closing: bool,
    /// When the windows were open (CLOCK_MONOTONIC ns; the open one ends at
    /// u64::MAX).
    spans: Vec<(u64, u64)>,
    /// A thread drives them (see [`drive`]).
    driven: bool,
    /// Each transition program's runs when the window opened.
    runs_at_open: HashMap<&'static str, u64>,
    /// Traps estimated in each process while windows were being detached,
    /// after their programs were removed (which no program counted).
    uncounted_traps: HashMap<u32, u64>,
}

/// What a window's end did, for `--verbose`.
pub struct Closed {
    pub reasoning: String,
    pub took: Duration,
    pub hits_meanwhile: u64,
}

/// A window being closed: its links, to drop without holding the windows
/// (the kernel takes from a few hundred ms to seconds to unregister uprobes
/// that fire in many processes; the sessions of those processes go on
/// meanwhile), then [`Windows::closed`].
pub struct Closing {
    /// Each link with the share of the window's hits its program took (split
    /// between the links of a program), the busiest first ...
    links: Vec<(f64, TakenLink)>,
    /// ... and, once detached, how long each share kept trapping.
    trapped: Vec<(f64, Duration)>,
    /// A process the probes trap in: its memory, to see when each site holds
    /// its code again, and its load bias.
    process: Option<(File, u64)>,
    /// The window's hits a second, in every process it served.
    hit_rate: f64,
    kernel: Arc<Kernel>,
    started: Instant,
    /// When its links were taken to detach, after `started`.
    taken: Duration,
    before: Measures,
    hit_ns: f64,
}

impl Closing {
    /// Detaches the window's uprobes (`Kernel::detach_in_turn`: the
    /// uprobe_multi links at once; perf-event links each in its turn among
    /// those of every window: the kernel restores their sites one at a time,
    /// ~80 ms each here, seconds for many at once; the busiest go first).
    /// The programs of a closing window only count their hits; once the
    /// kernel has removed a perf-event link's program, until its site holds
    /// its code again, the traps go uncounted: when each link's sites hold
    /// their code again (in one process the probes serve; else when the link
    /// is gone) is kept to estimate them.
    pub fn detach(&mut self) {
        let started = self.started;
        let sites: Vec<(f64, Vec<u64>)> = self
            .links
            .iter()
            .map(|(share, taken)| (*share, taken.sites.clone()))
            .collect();
        // When each site of each link read as code again.
        let mut restored: Vec<Vec<Option<Duration>>> = sites
            .iter()
            .map(|(_, sites)| vec![None; sites.len()])
            .collect();
        let rates: Vec<(u64, Detachable)> = self
            .links
            .drain(..)
            .map(|(share, taken)| ((share * self.hit_rate) as u64, taken.link))
            .collect();
        let kernel = &self.kernel;
        let gone: Vec<Duration> = std::thread::scope(|scope| {
            let detaching = scope.spawn(move || kernel.detach_in_turn(rates, started));
            if let Some((memory, load_bias)) = &self.process {
                while !detaching.is_finished() {
                    let link_sites = sites.iter().zip(&mut restored);
                    for ((_, sites), restored) in link_sites {
                        for (site, restored) in sites.iter().zip(restored) {
                            let mut byte = [0u8];
                            if restored.is_none()
                                && memory.read_exact_at(&mut byte, load_bias + site).is_ok()
                                && byte[0] != INT3
                            {
                                *restored = Some(started.elapsed());
                            }
                        }
                    }
                    std::thread::sleep(SITE_POLL);
                }
            }
            let mut gone = detaching.join().unwrap_or_default();
            gone.resize(sites.len(), started.elapsed());
            gone
        });
        self.trapped = sites
            .iter()
            .zip(restored)
            .zip(gone)
            .map(|(((share, _), restored), gone)| {
                // The last of its sites, if every one was seen restored.
                let all_restored: Option<Duration> = restored
                    .into_iter()
                    .try_fold(Duration::ZERO, |last, at| Some(last.max(at?)));
                (*share, all_restored.map_or(gone, |at| at.min(gone)))
            })
            .collect();
    }

    /// How long the window's probes went on trapping after its close, as
    /// time at the window's rate of hits (each link's time weighted by its
    /// share of the hits).
    fn trapping(&self) -> Duration {
        self.trapped
            .iter()
            .map(|&(share, took)| took.mul_f64(share))
            .sum()
    }
}

impl Windows {
    /// The probes as attached (the transition probes not yet, but with
    /// `--exact`: `budget` None); no process yet: see [`Windows::join`], then
    /// [`Windows::step`] for the first decision.
    pub fn new(mut probes: Probes, budget: Option<f64>) -> Result<Self> {
        let duty_cycle = DutyCycle::new(budget.filter(|_| probes.has_windowed()), Instant::now());
        let mut spans = Vec::new();
        if duty_cycle.is_open() {
            probes.open_window(&[], 0)?;
            spans.push((0, u64::MAX));
        }
        Ok(Self {
            counters: probes.kernel.open_map("COUNTERS")?,
            countdowns: probes.kernel.open_map("LOOK_COUNTDOWN")?,
            probes,
            duty_cycle,
            members: HashMap::new(),
            open_ns: None,
            open_failed: false,
            closing: false,
            spans,
            driven: false,
            runs_at_open: HashMap::new(),
            uncounted_traps: HashMap::new(),
        })
    }

    /// The probes serve `target` (registered in `slot`, loaded at
    /// `load_bias`; its scheduler's counters at `sched`) from now on: what it records counts from the
    /// current window's start, or the next one's.
    pub fn join(
        &mut self,
        target: Target,
        slot: u32,
        load_bias: u64,
        sched: Option<SchedLayout>,
    ) -> Result<()> {
        let start = if self.probes.window_open() {
            read_clock(libc::CLOCK_MONOTONIC)
        } else {
            u64::MAX
        };
        self.probes.set_window_start(slot, start)?;
        let member = Member {
            target,
            slot,
            load_bias,
            sched,
        };
        let measure = self.measure_of(&member).unwrap_or_default();
        self.duty_cycle.join(
            member.target.pid,
            measure,
            Instant::now(),
            member.target.age(),
        );
        self.members.insert(member.target.pid, member);
        // Its countdown, if the window stays open (the others' are re-armed
        // as they are).
        self.arm_countdowns(&self.hits());
        Ok(())
    }

    /// ... no longer (its session ended).
    pub fn leave(&mut self, pid: u32) {
        self.members.remove(&pid);
        self.duty_cycle.leave(pid);
    }

    /// The uprobe hits, the CPU time and the goroutine switches of `member`;
    /// None when it is gone.
    fn measure_of(&self, member: &Member) -> Option<WindowMeasure> {
        let [hits, closing_hits] =
            self.counts_of(member.slot, [counter::PROBE_HITS, counter::CLOSING_HITS])?;
        let switches = member.sched.as_ref().and_then(|layout| {
            runtime_memory::read(member.target.pid, layout)
                .ok()?
                .goroutine_switches()
        });
        Some(WindowMeasure {
            hits,
            closing_hits,
            target_cpu_ns: member.target.cpu_time_ns()?,
            switches,
        })
    }

    /// The uprobe hits of every process served, now.
    fn hits(&self) -> HashMap<u32, u64> {
        self.members
            .iter()
            .filter_map(|(pid, member)| {
                let [hits] = self.counts_of(member.slot, [counter::PROBE_HITS])?;
                Some((*pid, hits))
            })
            .collect()
    }

    /// The counters `which` of the process in `slot` (on every CPU).
    fn counts_of<const N: usize>(&self, slot: u32, which: [u32; N]) -> Option<[u64; N]> {
        let per_cpu = self.counters.get(&slot, 0).ok()?;
        Some(which.map(|counter| per_cpu.iter().map(|cpu| cpu[counter as usize]).sum()))
    }

    /// The counters of every process served, now.
    fn measures(&self) -> Measures {
        self.members
            .iter()
            .filter_map(|(pid, member)| Some((*pid, self.measure_of(member)?)))
            .collect()
    }

    /// When [`Windows::step`] is due (sooner if the kernel wakes it:
    /// [`Windows::slots`]).
    pub fn due(&self) -> Instant {
        if self.closing {
            // A session is detaching the window: look again later.
            return Instant::now() + CLOSING_RECHECK;
        }
        self.duty_cycle.due()
    }

    /// The slots of the processes served, whose countdowns wake the
    /// windows' thread (`Kernel::wait_for_wake`).
    pub fn slots(&self) -> Vec<u32> {
        self.members.values().map(|member| member.slot).collect()
    }

    /// Arms each process's countdown to what the duty cycle allows it in the
    /// current stretch, from its `hits` now (disarmed when no window stays
    /// open).
    fn arm_countdowns(&mut self, hits: &HashMap<u32, u64>) {
        let countdowns = self.duty_cycle.countdowns(hits).unwrap_or_default();
        for (pid, member) in &self.members {
            let left = countdowns
                .iter()
                .find(|(p, _)| p == pid)
                .and_then(|(_, left)| *left)
                .unwrap_or(0);
            // A process gone meanwhile: nothing to arm.
            let _ = self.countdowns.set(member.slot, left, 0);
        }
    }

    /// Time the transition probes were on, from attach to `at`.
    pub fn on_time(&self, at: Instant) -> Duration {
        self.duty_cycle.on_time(at)
    }

    /// Whether the transition probes are attached now.
    pub fn is_open(&self) -> bool {
        self.probes.window_open()
    }

    /// Windows opened so far.
    pub fn count(&self) -> u64 {
        self.duty_cycle.windows
    }

    /// Whether there are transition probes at all (not with `--only preemptions`).
    pub fn has_windowed(&self) -> bool {
        self.probes.has_windowed()
    }

    /// The measured cost of a hit: the trap (with a minimal program).
    pub fn trap_ns(&self) -> f64 {
        self.probes.hit_cost.ns
    }

    /// The transition programs (their run time: `Kernel::program_run_time`,
    /// read without holding the windows).
    pub fn transition_programs(&self) -> Vec<&'static str> {
        self.probes.transition_programs()
    }

    /// Each transition program's runs so far (kernel statistics; empty when
    /// off).
    fn program_runs(&self) -> HashMap<&'static str, u64> {
        let kernel = &self.probes.kernel;
        self.transition_programs()
            .into_iter()
            .filter_map(|name| Some((name, kernel.program_run_time(&[name])?.1)))
            .collect()
    }

    /// Traps estimated in process `pid` while windows were being detached,
    /// after their programs were removed: not in its counters.
    pub fn uncounted_traps(&self, pid: u32) -> u64 {
        self.uncounted_traps.get(&pid).copied().unwrap_or(0)
    }

    /// Whether the preemption probes were attached at `ts_ns` (CLOCK_MONOTONIC).
    pub fn watched(&self, ts_ns: u64) -> bool {
        self.spans
            .iter()
            .any(|&(from, to)| (from..to).contains(&ts_ns))
    }

    /// Opens or closes the window when the duty cycle says so (and it is
    /// due, or `woken`: a process's countdown ran out). A window to close
    /// comes back with its links: [`Closing::detach`], then
    /// [`Windows::closed`]; see [`step`].
    pub fn step(&mut self, woken: bool) -> Result<Option<Closing>> {
        let now = Instant::now();
        if self.closing {
            return Ok(None);
        }
        if now < self.duty_cycle.due() && !(woken && self.duty_cycle.quick_look(now, &self.hits()))
        {
            return Ok(None);
        }
        let (run_time, runs) = self
            .probes
            .kernel
            .program_run_time(&self.transition_programs())
            .unwrap_or_default();
        let hit_ns = self.trap_ns()
            + (run_time.as_nanos() as f64 + UNMEASURED_PROGRAM_NS * UNMEASURED_WEIGHT_RUNS)
                / (runs as f64 + UNMEASURED_WEIGHT_RUNS);
        let now = self.measures();
        // Every target gone (or going): nothing to decide; the sessions end.
        if now.is_empty() {
            return Ok(None);
        }
        let hits: HashMap<u32, u64> = now.iter().map(|(pid, m)| (*pid, m.hits)).collect();
        let slots: Vec<u32> = self.members.values().map(|member| member.slot).collect();
        match self
            .duty_cycle
            .decide(Instant::now(), &now, (hit_ns, self.trap_ns()))
        {
            Action::Open => {
                let started = Instant::now();
                let start_ns = read_clock(libc::CLOCK_MONOTONIC);
                self.runs_at_open = self.program_runs();
                match self.probes.open_window(&slots, start_ns) {
                    Ok(()) => {
                        self.open_ns = Some(started.elapsed().as_nanos() as u64);
                        let horizon = start_ns.saturating_sub(SPANS_KEPT_NS);
                        self.spans.retain(|&(_, to)| to > horizon);
                        self.spans.push((start_ns, u64::MAX));
                    }
                    // Gone meanwhile: the next check of the target ends the session.
                    Err(_) if !self.members.values().any(|m| m.target.is_alive()) => {}
                    // The first window: the probes cannot be attached at all.
                    Err(error) if self.duty_cycle.windows == 1 => return Err(error),
                    // The kernel refused a probe this time: the window stays as
                    // it could open (closed at its end as usual); said once.
                    Err(error) => {
                        if !self.open_failed {
                            eprintln!(
                                "gobpf-sched: WARNING: a window of probes did not open whole: {error:#}"
                            );
                            self.open_failed = true;
                        }
                    }
                }
                self.arm_countdowns(&hits);
                Ok(None)
            }
            Action::Close => {
                let started = Instant::now();
                let before = self.measures();
                // From the first detach on, an outcome may be missed.
                if let Some(open) = self.spans.last_mut() {
                    open.1 = read_clock(libc::CLOCK_MONOTONIC);
                }
                let runs = self.program_runs();
                let links = self.probes.take_window(&slots)?;
                let taken = started.elapsed();
                self.closing = true;
                let process = self.members.values().find_map(|member| {
                    let memory = File::open(format!("/proc/{}/mem", member.target.pid)).ok()?;
                    Some((memory, member.load_bias))
                });
                Ok(Some(Closing {
                    links: busiest_first(links, &runs, &self.runs_at_open),
                    trapped: Vec::new(),
                    process,
                    hit_rate: self.duty_cycle.window_hit_rate() * 1e9,
                    kernel: self.probes.kernel.clone(),
                    started,
                    taken,
                    before,
                    hit_ns,
                }))
            }
            Action::Keep => {
                self.arm_countdowns(&hits);
                Ok(None)
            }
        }
    }

    /// The window's uprobes are detached: its cost is judged up to now (the
    /// probes fired until the kernel was done), and the time off chosen.
    pub fn closed(&mut self, closing: Closing) -> Closed {
        let after = self.measures();
        let uncounted = self.duty_cycle.closed(
            closing.started,
            Instant::now(),
            &after,
            (closing.hit_ns, self.trap_ns()),
            closing.trapping(),
        );
        for (pid, traps) in uncounted {
            *self.uncounted_traps.entry(pid).or_default() += traps;
        }
        self.closing = false;
        let hits = |measures: &Measures| measures.values().map(|m| m.hits).sum::<u64>();
        Closed {
            reasoning: format!(
                "{}; {} (links taken to detach after {:?})",
                self.duty_cycle.over, self.duty_cycle.reasoning, closing.taken
            ),
            took: closing.started.elapsed(),
            hits_meanwhile: hits(&after).saturating_sub(hits(&closing.before)),
        }
    }
}

/// The window's links, the busiest first: each with its program's share of
/// the window's runs (`runs` now, `at_open` when it opened), split between
/// the links of a program; equal shares when the statistics are off.
fn busiest_first(
    links: Vec<TakenLink>,
    runs: &HashMap<&'static str, u64>,
    at_open: &HashMap<&'static str, u64>,
) -> Vec<(f64, TakenLink)> {
    let window_runs = |program: &str| {
        runs.get(program)
            .copied()
            .unwrap_or(0)
            .saturating_sub(at_open.get(program).copied().unwrap_or(0))
    };
    let links_of = |program: &str| links.iter().filter(|l| l.program == program).count();
    let total: u64 = runs.keys().map(|program| window_runs(program)).sum();
    let shares: Vec<f64> = links
        .iter()
        .map(|link| {
            if total == 0 {
                1.0 / links.len() as f64
            } else {
                window_runs(link.program) as f64 / total as f64 / links_of(link.program) as f64
            }
        })
        .collect();
    let mut ranked: Vec<(f64, TakenLink)> = shares.into_iter().zip(links).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
}

/// The windows, even if a thread panicked holding them.
pub fn lock(windows: &Mutex<Windows>) -> MutexGuard<'_, Windows> {
    windows.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens or closes the window when due (or `woken`: see
/// [`Windows::step`]); what a close did. The uprobes are detached without
/// holding the windows: the other processes of the executable go on
/// meanwhile.
pub fn step(windows: &Mutex<Windows>, woken: bool) -> Result<Option<Closed>> {
    let closing = lock(windows).step(woken)?;
    Ok(closing.map(|mut closing| {
        closing.detach();
        lock(windows).closed(closing)
    }))
}

/// Drives `windows` from a thread of their own (once: later calls do
/// nothing) until no session holds them: each decision when due, and the
/// hits of a window that stays open looked at as soon as the kernel says a
/// process's countdown ran out, which no session's own work delays (a late
/// look lets a program that turned busy pay the full cost meanwhile).
/// `say_closes`: each close and why on stderr (`--verbose`).
pub fn drive(windows: &Arc<Mutex<Windows>>, say_closes: bool) -> Result<()> {
    let kernel = {
        let mut held = lock(windows);
        if std::mem::replace(&mut held.driven, true) {
            return Ok(());
        }
        held.probes.kernel.clone()
    };
    kernel.start_waker()?;
    let windows = Arc::downgrade(windows);
    std::thread::Builder::new()
        .name("windows".to_owned())
        .spawn(move || {
            prompt_thread();
            let mut warned = false;
            while let Some((due, slots)) = windows.upgrade().map(|w| {
                let held = lock(&w);
                (held.due(), held.slots())
            }) {
                let wait = due.saturating_duration_since(Instant::now());
                let woken =
                    !wait.is_zero() && kernel.wait_for_wake(&slots, wait.min(LONGEST_SLEEP));
                if !wait.is_zero() && !woken {
                    continue;
                }
                let Some(held) = windows.upgrade() else { break };
                match step(&held, woken) {
                    Ok(Some(closed)) if say_closes => eprintln!(
                        "gobpf-sched: {} (closing took {:?}, {} hits meanwhile)",
                        closed.reasoning, closed.took, closed.hits_meanwhile
                    ),
                    Ok(_) => {}
                    Err(error) if !warned => {
                        eprintln!("gobpf-sched: WARNING: the windows of probes: {error:#}");
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
        })
        .context("cannot start the thread of the windows")?;
    Ok(())
}

/// Makes the calling thread the first to run when it wakes (nice -20; it
/// sleeps nearly all the time): a window's close must not wait behind the
/// busy programs it watches (on a loaded machine a 10 ms look came 100 ms
/// late, at the probes' full cost). Best effort.
pub fn prompt_thread() {
    // SAFETY: no memory preconditions; 0 is the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
}

/// The programs' mean run time per hit between two readings of their kernel
/// statistics (time, runs); `from` None: since they were loaded. None when
/// they did not run (or the statistics are off).
pub fn mean_run_ns(from: Option<(Duration, u64)>, to: Option<(Duration, u64)>) -> Option<f64> {
    let (time_now, runs_now) = to?;
    let (time_then, runs_then) = from.unwrap_or((Duration::ZERO, 0));
    (runs_now > runs_then).then(|| {
        time_now.saturating_sub(time_then).as_nanos() as f64 / (runs_now - runs_then) as f64
    })
}
