//! When the transition probes are attached: always with `--exact`; otherwise
//! in windows, so that what they cost the target stays within the overhead
//! budget (a share of the target's own CPU time).
//!
//! A window is open at attach. At its end the cost of its hits (count × the
//! measured cost per hit) is compared with the CPU time the target used
//! meanwhile: within the budget (a quiet program), the probes stay attached and
//! the check repeats every 100 ms; over it, they are detached, and attached
//! again for a window of `WINDOW`, and so on. The time off is chosen so that
//! the cost of a window is the budget's share of the target's CPU time over
//! the window and the time off: the probes' cost is charged to the target's
//! CPU time, so the target's CPU rate while off is measured in each off period
//! (before the first, it is taken as the rate while on minus the probes' cost).
//!
//! The probes of an executable may serve several processes (`--all`: a uprobe
//! on a file traps in every process that runs it). Their windows are then
//! opened and closed together, and judged for each process: a window closes
//! when one of them is over its budget, and the time off is the longest that
//! any of them needs, so that the budget holds for each.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How long a window lasts when the probes cannot stay on ...
pub const WINDOW: Duration = Duration::from_millis(200);
/// ... and the first, at attach, before anything is known of the target.
const FIRST_WINDOW: Duration = Duration::from_millis(100);
/// How often a program within its budget is checked again: a program that
/// turns busy pays the full cost of the probes for at most this long.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// The longest the probes stay off (a very busy target gets a window at least
/// this often; its cost may then exceed the budget).
const LONGEST_OFF: Duration = Duration::from_secs(60);
/// Probe costs below this share of a core are always allowed: a quiet program
/// keeps its probes (and its exact counts) however little CPU it uses.
const NEGLIGIBLE_SHARE_OF_A_CORE: f64 = 0.001;

/// The counters the controller reads: uprobe hits, the target's CPU time.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowMeasure {
    pub hits: u64,
    pub target_cpu_ns: u64,
}

impl WindowMeasure {
    /// The probes' cost (ns) and the target's CPU time (ns) from here to `now`.
    fn since(&self, now: &Self, hit_ns: f64) -> (f64, f64) {
        (
            now.hits.saturating_sub(self.hits) as f64 * hit_ns,
            now.target_cpu_ns.saturating_sub(self.target_cpu_ns) as f64,
        )
    }
}

/// What the controller knows of one process the probes serve.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// Counters when the current window (or stretch of it) began ...
    start: WindowMeasure,
    /// ... and when the probes were last detached.
    closed: WindowMeasure,
    /// While the probes were last off: what the ones that stay cost, and the
    /// target's CPU use (cores).
    rates_off: Option<(f64, f64)>,
}

impl Member {
    fn new(now: WindowMeasure) -> Self {
        Self {
            start: now,
            closed: now,
            rates_off: None,
        }
    }
}

/// The counters of each process the probes serve, by pid.
pub type Measures = HashMap<u32, WindowMeasure>;

pub struct DutyCycle {
    /// Share of the target's CPU time the probes may cost; None: `--exact`.
    budget: Option<f64>,
    open: bool,
    /// When the current phase (on or off) started, and when to decide again.
    since: Instant,
    until: Instant,
    /// The processes, by pid.
    members: HashMap<u32, Member>,
    /// Time the probes were on, windows closed so far.
    on_before: Duration,
    /// Windows opened (the first at attach included).
    pub windows: u64,
    /// The share of time on the last decision chose ...
    pub duty: f64,
    /// ... and what it was based on (for `--verbose`) ...
    pub reasoning: String,
    /// ... and why the window closed.
    pub over: String,
}

/// What to do with the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Close,
    Keep,
}

impl DutyCycle {
    /// Starts with the probes attached at `now`, serving no process yet.
    pub fn new(budget: Option<f64>, now: Instant) -> Self {
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
            members: HashMap::new(),
            on_before: Duration::ZERO,
            windows: 1,
            duty: 1.0,
            reasoning: String::new(),
            over: String::new(),
        }
    }

    /// The probes serve process `pid` from now on; its counters are `now`.
    pub fn join(&mut self, pid: u32, now: WindowMeasure) {
        self.members.insert(pid, Member::new(now));
    }

    /// ... no longer.
    pub fn leave(&mut self, pid: u32) {
        self.members.remove(&pid);
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

    /// At or after [`DutyCycle::due`]: `now`, each process's counters now,
    /// and the cost of one hit. Returns what to do with the probes; after
    /// closing them, call [`DutyCycle::closed`].
    pub fn decide(&mut self, now: Instant, counters: &Measures, hit_ns: f64) -> Action {
        let Some(budget) = self.budget else {
            self.until = now + CHECK_EVERY;
            return Action::Keep;
        };
        if !self.open {
            // The probes that stay attached (preemptions) cost this meanwhile,
            // and each target ran at this rate without the others.
            let off = now.saturating_duration_since(self.since).as_nanos() as f64;
            for (pid, member) in &mut self.members {
                let Some(now) = counters.get(pid) else {
                    continue;
                };
                if off > 0.0 {
                    let (cost, cpu) = member.closed.since(now, hit_ns);
                    member.rates_off = Some((cost / off, cpu / off));
                }
                member.start = *now;
            }
            self.open = true;
            self.since = now;
            self.until = now + WINDOW;
            self.windows += 1;
            return Action::Open;
        }
        let length = now.saturating_duration_since(self.since);
        let negligible = length.as_nanos() as f64 * NEGLIGIBLE_SHARE_OF_A_CORE;
        let over_budget = self.members.iter().find(|(pid, member)| {
            counters.get(pid).is_some_and(|now| {
                let (cost_ns, cpu_ns) = member.start.since(now, hit_ns);
                cost_ns > budget * cpu_ns && cost_ns > negligible
            })
        });
        let Some((pid, member)) = over_budget else {
            self.duty = 1.0;
            self.until = now + CHECK_EVERY;
            self.since_check(now, counters);
            return Action::Keep;
        };
        let (cost_ns, cpu_ns) = member.start.since(&counters[pid], hit_ns);
        self.over = format!(
            "process {pid} over its budget: probes {:.2} ms for {:.2} ms of CPU",
            cost_ns / 1e6,
            cpu_ns / 1e6
        );
        Action::Close
    }

    /// The probes were detached from `closing` to `now` (the kernel removes
    /// the breakpoints first, then waits for the probes in flight: a few
    /// hundred ms): judges the whole window's cost, up to `now`, and chooses
    /// how long they stay off. The window's time on ends at `closing`.
    pub fn closed(&mut self, closing: Instant, now: Instant, counters: &Measures, hit_ns: f64) {
        let Some(budget) = self.budget else { return };
        let length = now.saturating_duration_since(self.since);
        // The process that needs the probes off the longest decides.
        self.duty = 1.0;
        for (pid, member) in &mut self.members {
            let Some(now) = counters.get(pid) else {
                continue;
            };
            let (duty, reasoning) = member.duty(budget, length, now, hit_ns);
            if duty <= self.duty {
                self.duty = duty;
                self.reasoning = format!("process {pid}: {reasoning}");
            }
            member.closed = *now;
        }
        let off = length
            .mul_f64((1.0 - self.duty) / self.duty.max(1e-9))
            .min(LONGEST_OFF);
        self.reasoning.push_str(&format!(
            "; on {:.1}% of the time, off for {off:?}",
            self.duty * 100.0
        ));
        self.on_before += closing.saturating_duration_since(self.since);
        self.open = false;
        self.since = now;
        self.until = now + off;
    }

    /// A window that stays open is judged by its last stretch only.
    fn since_check(&mut self, now: Instant, counters: &Measures) {
        self.on_before += now.saturating_duration_since(self.since);
        self.since = now;
        for (pid, member) in &mut self.members {
            if let Some(now) = counters.get(pid) {
                member.start = *now;
            }
        }
    }
}

impl Member {
    /// The share of the time the probes may be on for this process, from a
    /// window of `length` that ended with counters `now`; and why.
    fn duty(
        &self,
        budget: f64,
        length: Duration,
        now: &WindowMeasure,
        hit_ns: f64,
    ) -> (f64, String) {
        let (cost_ns, cpu_ns) = self.start.since(now, hit_ns);
        // Rates per second of wall time while on: the probes' cost, the
        // target's CPU (which includes that cost); and both while off.
        let seconds = length.as_nanos().max(1) as f64;
        let (cost_on, cpu_on) = (cost_ns / seconds, cpu_ns / seconds);
        let (cost_off, cpu_off) = self.rates_off.unwrap_or((0.0, (cpu_on - cost_on).max(0.0)));
        // On for a share d of the time, the cost is the budget's share of the
        // target's CPU time: cost_on·d + cost_off·(1−d) = budget·(cpu_on·d + cpu_off·(1−d)).
        let numerator = budget * cpu_off - cost_off;
        let denominator = cost_on - cost_off - budget * (cpu_on - cpu_off);
        let duty = if denominator <= 0.0 {
            1.0
        } else {
            (numerator / denominator).clamp(0.0, 1.0)
        };
        let reasoning = format!(
            "window of {length:?}: probes {cost_on:.3} cores, target {cpu_on:.3} cores while \
             on; {cost_off:.4} and {cpu_off:.3} while off{}",
            if self.rates_off.is_none() {
                " (estimated)"
            } else {
                ""
            },
        );
        (duty, reasoning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIT_NS: f64 = 1000.0;

    fn measure(hits: u64, cpu_ms: u64) -> Measures {
        [(1, one(hits, cpu_ms))].into()
    }

    fn one(hits: u64, cpu_ms: u64) -> WindowMeasure {
        WindowMeasure {
            hits,
            target_cpu_ns: cpu_ms * 1_000_000,
        }
    }

    /// A cycle serving process 1, attached at `start`.
    fn cycle(budget: Option<f64>, start: Instant) -> DutyCycle {
        let mut cycle = DutyCycle::new(budget, start);
        cycle.join(1, one(0, 0));
        cycle
    }

    /// Hits costing 0.5 cores while on, the target at 1.5 cores (1.0 of its
    /// own): off long enough that one cycle costs the budget's share of the
    /// target's CPU time over it.
    #[test]
    fn the_time_off_keeps_a_cycle_at_the_budget() {
        let start = Instant::now();
        let mut cycle = cycle(Some(0.01), start);
        let end = start + FIRST_WINDOW;
        // 100 ms on: 50,000 hits of 1 µs = 50 ms of probes; 150 ms of CPU.
        let counters = measure(50_000, 150);
        assert_eq!(cycle.decide(end, &counters, HIT_NS), Action::Close);
        cycle.closed(end, end, &counters, HIT_NS);
        let off = cycle.due() - end;
        let cost = 0.050;
        let cpu = 0.150 + 1.0 * off.as_secs_f64();
        assert!(
            (cost / cpu - 0.01).abs() < 0.0005,
            "off {off:?}: {:.4} of the target's CPU",
            cost / cpu
        );
        assert_eq!(cycle.on_time(end + off), FIRST_WINDOW);
        // Then a window of WINDOW opens.
        assert_eq!(cycle.decide(cycle.due(), &counters, HIT_NS), Action::Open);
        assert_eq!(cycle.windows, 2);
    }

    /// Two processes on the same probes: the busier one (per CPU second)
    /// decides how long they stay off, and a quiet one joining changes
    /// nothing.
    #[test]
    fn the_process_the_probes_cost_most_decides() {
        let start = Instant::now();
        let mut cycle = cycle(Some(0.01), start);
        cycle.join(2, one(0, 0));
        let end = start + FIRST_WINDOW;
        // Process 1: 10 ms of probes for 150 ms of CPU; process 2: 50 ms.
        let counters: Measures = [(1, one(10_000, 150)), (2, one(50_000, 150))].into();
        assert_eq!(cycle.decide(end, &counters, HIT_NS), Action::Close);
        cycle.closed(end, end, &counters, HIT_NS);
        assert!(
            cycle.reasoning.starts_with("process 2:"),
            "{}",
            cycle.reasoning
        );
        let off = cycle.due() - end;
        // Process 2 stays within its budget over the cycle (as alone) ...
        let cpu = 0.150 + 1.0 * off.as_secs_f64();
        assert!((0.050 / cpu - 0.01).abs() < 0.0005, "off {off:?}");
        // ... and process 1 below it.
        assert!(0.010 / cpu < 0.01);
    }

    /// Probes costing less than the budget stay on, and so do negligible ones.
    #[test]
    fn a_quiet_program_keeps_the_probes() {
        let start = Instant::now();
        let mut cycle = cycle(Some(0.01), start);
        // 100 hits (0.1 ms) for 100 ms of CPU: 0.1%.
        let now = start + FIRST_WINDOW;
        assert_eq!(cycle.decide(now, &measure(100, 100), HIT_NS), Action::Keep);
        // 50 hits and no CPU measured: under 0.1% of a core.
        let later = now + CHECK_EVERY;
        assert_eq!(
            cycle.decide(later, &measure(150, 100), HIT_NS),
            Action::Keep
        );
        assert_eq!(cycle.on_time(later), later - start);
    }

    /// `--exact`: never closes.
    #[test]
    fn exact_mode_keeps_them_whatever_they_cost() {
        let start = Instant::now();
        let mut cycle = cycle(None, start);
        let now = start + Duration::from_secs(1);
        assert_eq!(
            cycle.decide(now, &measure(10_000_000, 10), HIT_NS),
            Action::Keep
        );
    }
}
