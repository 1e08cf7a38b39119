//! When the transition probes are attached: always with `--exact`; otherwise
//! in windows, so that what they cost the target stays within the overhead
//! budget (a share of the target's own CPU time).
//!
//! A window is open at attach. At its end the cost of its hits (count × the
//! measured cost per hit) is compared with the CPU time the target used
//! meanwhile: within the budget (a quiet program), the probes stay attached and
//! the check repeats every second; over it, they are detached, and attached
//! again for a window of `WINDOW`, and so on. The time off is chosen so that
//! the cost of a window is the budget's share of the target's CPU time over
//! the window and the time off: the probes' cost is charged to the target's
//! CPU time, so the target's CPU rate while off is measured in each off period
//! (before the first, it is taken as the rate while on minus the probes' cost).

use std::time::{Duration, Instant};

/// How long a window lasts when the probes cannot stay on ...
pub const WINDOW: Duration = Duration::from_millis(200);
/// ... and the first, at attach, before anything is known of the target.
const FIRST_WINDOW: Duration = Duration::from_millis(100);
/// How often a program within its budget is checked again.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// The longest the probes stay off (a very busy target gets a window at least
/// this often; its cost may then exceed the budget).
const LONGEST_OFF: Duration = Duration::from_secs(60);
/// Probe costs below this share of a core are always allowed: a quiet program
/// keeps its probes (and its exact counts) however little CPU it uses.
const NEGLIGIBLE_SHARE_OF_A_CORE: f64 = 0.001;

/// What the controller last measured while the probes were on.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowMeasure {
    pub hits: u64,
    pub target_cpu_ns: u64,
}

pub struct DutyCycle {
    /// Share of the target's CPU time the probes may cost; None: `--exact`.
    budget: Option<f64>,
    open: bool,
    /// When the current phase (on or off) started, and when to decide again.
    since: Instant,
    until: Instant,
    /// Counters when the current window (or stretch of it) began ...
    start: WindowMeasure,
    /// ... and when the probes were last detached.
    closed: WindowMeasure,
    /// The target's CPU use while the probes were off (cores), last measured.
    cpu_rate_off: Option<f64>,
    /// Time the probes were on, windows closed so far.
    on_before: Duration,
    /// Windows opened (the first at attach included).
    pub windows: u64,
    /// The share of time on the last decision chose.
    pub duty: f64,
}

/// What to do with the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Close,
    Keep,
}

impl DutyCycle {
    /// Starts with the probes attached at `now`, with counters `start`.
    pub fn new(budget: Option<f64>, now: Instant, start: WindowMeasure) -> Self {
        Self {
            budget,
            open: true,
            since: now,
            until: now
                + if budget.is_some() {
                    FIRST_WINDOW
                } else {
                    CHECK_EVERY
                },
            start,
            closed: start,
            cpu_rate_off: None,
            on_before: Duration::ZERO,
            windows: 1,
            duty: 1.0,
        }
    }

    /// When [`DutyCycle::decide`] is due.
    pub fn due(&self) -> Instant {
        self.until
    }

    /// Time the probes were on, from attach to `now`.
    pub fn on_time(&self, now: Instant) -> Duration {
        self.on_before
            + if self.open {
                now.saturating_duration_since(self.since)
            } else {
                Duration::ZERO
            }
    }

    /// At or after [`DutyCycle::due`]: `now`, the counters now, and the cost
    /// of one hit. Returns what to do with the probes.
    pub fn decide(&mut self, now: Instant, counters: WindowMeasure, hit_ns: f64) -> Action {
        let Some(budget) = self.budget else {
            self.until = now + CHECK_EVERY;
            return Action::Keep;
        };
        if !self.open {
            let off = now.saturating_duration_since(self.since).as_nanos() as f64;
            if off > 0.0 {
                self.cpu_rate_off = Some(
                    counters
                        .target_cpu_ns
                        .saturating_sub(self.closed.target_cpu_ns) as f64
                        / off,
                );
            }
            self.open = true;
            self.since = now;
            self.until = now + WINDOW;
            self.start = counters;
            self.windows += 1;
            return Action::Open;
        }
        let length = now.saturating_duration_since(self.since);
        let cost_ns = counters.hits.saturating_sub(self.start.hits) as f64 * hit_ns;
        let cpu_ns = counters
            .target_cpu_ns
            .saturating_sub(self.start.target_cpu_ns) as f64;
        let negligible = length.as_nanos() as f64 * NEGLIGIBLE_SHARE_OF_A_CORE;
        if cost_ns <= budget * cpu_ns || cost_ns <= negligible {
            self.duty = 1.0;
            self.until = now + CHECK_EVERY;
            self.since_check(now, counters);
            return Action::Keep;
        }
        // Rates per second of wall time while on: the probes' cost, the
        // target's CPU (which includes that cost); and the target's CPU while off.
        let seconds = length.as_nanos().max(1) as f64;
        let (cost_on, cpu_on) = (cost_ns / seconds, cpu_ns / seconds);
        let cpu_off = self.cpu_rate_off.unwrap_or((cpu_on - cost_on).max(0.0));
        // On for a share d of the time: cost_on·d = budget·(cpu_on·d + cpu_off·(1−d)).
        let denominator = cost_on - budget * cpu_on + budget * cpu_off;
        self.duty = if denominator > 0.0 {
            (budget * cpu_off / denominator).clamp(0.0, 1.0)
        } else {
            1.0
        };
        let off = length.mul_f64((1.0 - self.duty) / self.duty.max(1e-9));
        self.on_before += length;
        self.open = false;
        self.since = now;
        self.closed = counters;
        self.until = now + off.min(LONGEST_OFF);
        Action::Close
    }

    /// A window that stays open is judged by its last stretch only.
    fn since_check(&mut self, now: Instant, counters: WindowMeasure) {
        self.on_before += now.saturating_duration_since(self.since);
        self.since = now;
        self.start = counters;
    }
}
