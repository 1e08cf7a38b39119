//! The transition probes in windows: the loaded probes, when they are attached
//! (`duty_cycle` decides), what a hit costs, and when the preemption probes
//! could see what a SIGURG did.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    sources::{
        duty_cycle::{Action, DutyCycle, WindowMeasure},
        probes::Probes,
    },
    stats::clock::read_clock,
};

/// Spans of windows older than this are forgotten (a signal resolves within a
/// second of its landing).
const SPANS_KEPT_NS: u64 = 10_000_000_000;

pub struct Windows {
    probes: Probes,
    duty_cycle: DutyCycle,
    /// How long the last window took to open.
    pub open_ns: Option<u64>,
    /// A window failed to open whole (said once).
    open_failed: bool,
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

impl Windows {
    /// The probes attached at attach, the first window; `budget`: None for
    /// `--exact`; `start`: the counters then.
    pub fn new(probes: Probes, budget: Option<f64>, start: WindowMeasure) -> Self {
        let duty_cycle = DutyCycle::new(
            budget.filter(|_| probes.has_windowed()),
            probes.attached_at,
            start,
        );
        Self {
            probes,
            duty_cycle,
            open_ns: None,
            open_failed: false,
            spans: vec![(0, u64::MAX)],
        }
    }

    /// When [`Windows::step`] is due.
    pub fn due(&self) -> Instant {
        self.duty_cycle.due()
    }

    /// Time the transition probes were on, from attach to `at`.
    pub fn on_time(&self, at: Instant) -> Duration {
        self.duty_cycle.on_time(at)
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

    /// Opens or closes the window when the duty cycle says so. `measure`: the
    /// counters now (None: the target is gone); `alive`: whether it still is.
    pub fn step(
        &mut self,
        measure: &dyn Fn() -> Result<Option<WindowMeasure>>,
        alive: &dyn Fn() -> bool,
    ) -> Result<Option<Closed>> {
        let hit_ns =
            self.trap_ns() + mean_run_ns(None, self.probes.program_run_time()).unwrap_or(0.0);
        // The target gone (or going): nothing to decide; the session ends.
        let Some(now) = measure()? else {
            return Ok(None);
        };
        match self.duty_cycle.decide(Instant::now(), now, hit_ns) {
            Action::Open => {
                let started = Instant::now();
                let start_ns = read_clock(libc::CLOCK_MONOTONIC);
                match self.probes.open_window(start_ns) {
                    Ok(()) => {
                        self.open_ns = Some(started.elapsed().as_nanos() as u64);
                        let horizon = start_ns.saturating_sub(SPANS_KEPT_NS);
                        self.spans.retain(|&(_, to)| to > horizon);
                        self.spans.push((start_ns, u64::MAX));
                    }
                    // Gone meanwhile: the next check of the target ends the session.
                    Err(_) if !alive() => {}
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
                let before = measure()?.unwrap_or(now);
                // From the first detach on, an outcome may be missed.
                if let Some(open) = self.spans.last_mut() {
                    open.1 = read_clock(libc::CLOCK_MONOTONIC);
                }
                self.probes.close_window()?;
                let after = measure()?.unwrap_or(before);
                self.duty_cycle
                    .closed(started, Instant::now(), after, hit_ns);
                Ok(Some(Closed {
                    reasoning: self.duty_cycle.reasoning.clone(),
                    took: started.elapsed(),
                    hits_meanwhile: after.hits.saturating_sub(before.hits),
                }))
            }
            Action::Keep => Ok(None),
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
