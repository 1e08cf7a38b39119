//! The transition probes in windows: the attached probes of one executable
//! (for one process, or every watched process that runs it), when they are
//! attached (`duty_cycle` decides, for each process), what a hit costs, and
//! when the preemption probes could see what a SIGURG did.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Result;
use aya::{
    maps::{MapData, PerCpuArray},
    programs::uprobe::UProbeLink,
};
use gobpf_sched_common::{Counters, counter};

use crate::{
    sources::{
        duty_cycle::{Action, DutyCycle, Measures, WindowMeasure},
        probes::Probes,
    },
    stats::clock::read_clock,
    target::Target,
};

/// How soon a session asks again while a window is being detached.
const CLOSING_RECHECK: Duration = Duration::from_millis(50);

/// Spans of windows older than this are forgotten (a signal resolves within a
/// second of its landing).
const SPANS_KEPT_NS: u64 = 10_000_000_000;

pub struct Windows {
    probes: Probes,
    duty_cycle: DutyCycle,
    /// The processes the probes serve, by pid, with their slots.
    members: HashMap<u32, (Target, u32)>,
    /// The per-process counters (their uprobe hits).
    counters: PerCpuArray<MapData, Counters>,
    /// How long the last window took to open.
    pub open_ns: Option<u64>,
    /// A window failed to open whole (said once).
    open_failed: bool,
    /// A window's uprobes are being detached (see [`Closing`]).
    closing: bool,
    /// When the windows were open (CLOCK_MONOTONIC ns; the open one ends at
    /// u64::MAX).
    spans: Vec<(u64, u64)>,
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
    links: Vec<UProbeLink>,
    started: Instant,
    before: Measures,
    hit_ns: f64,
}

impl Closing {
    /// Detaches the window's uprobes: in parallel, each waits for the kernel.
    pub fn detach(&mut self) {
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                scope.spawn(move || drop(link));
            }
        });
    }
}

impl Windows {
    /// The probes attached at attach, the first window; `budget`: None for
    /// `--exact`. No process yet: see [`Windows::join`].
    pub fn new(probes: Probes, budget: Option<f64>) -> Result<Self> {
        let duty_cycle =
            DutyCycle::new(budget.filter(|_| probes.has_windowed()), probes.attached_at);
        Ok(Self {
            counters: probes.kernel.open_map("COUNTERS")?,
            probes,
            duty_cycle,
            members: HashMap::new(),
            open_ns: None,
            open_failed: false,
            closing: false,
            spans: vec![(0, u64::MAX)],
        })
    }

    /// The probes serve `target` (registered in `slot`) from now on: what it
    /// records counts from the current window's start, or the next one's.
    pub fn join(&mut self, target: Target, slot: u32) -> Result<()> {
        let start = if self.probes.window_open() {
            read_clock(libc::CLOCK_MONOTONIC)
        } else {
            u64::MAX
        };
        self.probes.set_window_start(slot, start)?;
        let measure = self.measure_of(&target, slot).unwrap_or_default();
        self.duty_cycle.join(target.pid, measure);
        self.members.insert(target.pid, (target, slot));
        Ok(())
    }

    /// ... no longer (its session ended).
    pub fn leave(&mut self, pid: u32) {
        self.members.remove(&pid);
        self.duty_cycle.leave(pid);
    }

    /// The uprobe hits of `slot` and the CPU time of `target`; None when it
    /// is gone.
    fn measure_of(&self, target: &Target, slot: u32) -> Option<WindowMeasure> {
        let hits = self
            .counters
            .get(&slot, 0)
            .ok()?
            .iter()
            .map(|cpu| cpu[counter::PROBE_HITS as usize])
            .sum();
        Some(WindowMeasure {
            hits,
            target_cpu_ns: target.cpu_time_ns()?,
        })
    }

    /// The counters of every process served, now.
    fn measures(&self) -> Measures {
        self.members
            .iter()
            .filter_map(|(pid, (target, slot))| Some((*pid, self.measure_of(target, *slot)?)))
            .collect()
    }

    /// When [`Windows::step`] is due.
    pub fn due(&self) -> Instant {
        if self.closing {
            // Another process's session is detaching the window: look again
            // later.
            return Instant::now() + CLOSING_RECHECK;
        }
        self.duty_cycle.due()
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

    /// The transition programs' run time and runs so far (kernel statistics).
    pub fn program_run_time(&self) -> Option<(Duration, u64)> {
        self.probes.program_run_time()
    }

    /// Whether the preemption probes were attached at `ts_ns` (CLOCK_MONOTONIC).
    pub fn watched(&self, ts_ns: u64) -> bool {
        self.spans
            .iter()
            .any(|&(from, to)| (from..to).contains(&ts_ns))
    }

    /// Opens or closes the window when the duty cycle says so (and it is due:
    /// any process's session may ask). A window to close comes back with its
    /// links: [`Closing::detach`], then [`Windows::closed`].
    pub fn step(&mut self) -> Result<Option<Closing>> {
        if self.closing || Instant::now() < self.due() {
            return Ok(None);
        }
        let hit_ns =
            self.trap_ns() + mean_run_ns(None, self.probes.program_run_time()).unwrap_or(0.0);
        let now = self.measures();
        // Every target gone (or going): nothing to decide; the sessions end.
        if now.is_empty() {
            return Ok(None);
        }
        let slots: Vec<u32> = self.members.values().map(|(_, slot)| *slot).collect();
        match self.duty_cycle.decide(Instant::now(), &now, hit_ns) {
            Action::Open => {
                let started = Instant::now();
                let start_ns = read_clock(libc::CLOCK_MONOTONIC);
                match self.probes.open_window(&slots, start_ns) {
                    Ok(()) => {
                        self.open_ns = Some(started.elapsed().as_nanos() as u64);
                        let horizon = start_ns.saturating_sub(SPANS_KEPT_NS);
                        self.spans.retain(|&(_, to)| to > horizon);
                        self.spans.push((start_ns, u64::MAX));
                    }
                    // Gone meanwhile: the next check of the target ends the session.
                    Err(_) if !self.members.values().any(|(target, _)| target.is_alive()) => {}
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
                Ok(None)
            }
            Action::Close => {
                let started = Instant::now();
                let before = self.measures();
                // From the first detach on, an outcome may be missed.
                if let Some(open) = self.spans.last_mut() {
                    open.1 = read_clock(libc::CLOCK_MONOTONIC);
                }
                let links = self.probes.take_window(&slots)?;
                self.closing = true;
                Ok(Some(Closing {
                    links,
                    started,
                    before,
                    hit_ns,
                }))
            }
            Action::Keep => Ok(None),
        }
    }

    /// The window's uprobes are detached: its cost is judged up to now (the
    /// probes fired until the kernel was done), and the time off chosen.
    pub fn closed(&mut self, closing: Closing) -> Closed {
        let after = self.measures();
        self.duty_cycle
            .closed(closing.started, Instant::now(), &after, closing.hit_ns);
        self.closing = false;
        let hits = |measures: &Measures| measures.values().map(|m| m.hits).sum::<u64>();
        Closed {
            reasoning: format!("{}; {}", self.duty_cycle.over, self.duty_cycle.reasoning),
            took: closing.started.elapsed(),
            hits_meanwhile: hits(&after).saturating_sub(hits(&closing.before)),
        }
    }
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
