//! When the transition probes are attached: always with `--exact`; otherwise
//! in windows, so that what they cost each process stays within the overhead
//! budget (a share of its own CPU time) from the moment it is watched.
//!
//! Each process has an allowance: the budget's share of the CPU time it used
//! while watched, less what the probes cost it (hits × the measured cost of a
//! hit, the probes that stay attached included). A window is paid for before
//! it opens. Its cost is predicted from the runtime's own count of goroutine
//! switches, read from the process's memory at no cost to it (see
//! [`SchedState::goroutine_switches`]), times the hits a switch makes (learned
//! from each window; before the first, [`HITS_PER_SWITCH_UNSEEN`]), over the
//! window and the kernel's detach that ends it (measured at each close). So:
//!
//! - a program whose probes would cost less than its budget (or a negligible
//!   share of a core) gets them at once and keeps them, judged every 100 ms
//!   and woken by the kernel programs as soon as its hits pass what the
//!   budget allows: a program that turns busy pays their full cost only until
//!   the window closes;
//! - a busy one gets a window once its allowance pays for one of
//!   [`SHORTEST_WINDOW`], as long as it pays for, up to [`WINDOW`], and none
//!   before: attaching costs it nothing (a window at attach used to cost a
//!   busy program several times its budget over a run of seconds);
//! - a window that closes forfeits what the allowance had saved, so that a long
//!   quiet stretch never pays for a burst of windows.
//!
//! The probes of an executable may serve several processes (`--all`: a uprobe
//! on a file traps in every process that runs it). Their windows are then
//! opened and closed together, and judged for each process: a window opens when
//! every one of them can pay for it, and closes when one is over its budget.
//!
//! [`SchedState::goroutine_switches`]: crate::stats::sched::SchedState::goroutine_switches

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// How long a window lasts at most when the probes cannot stay on ...
pub const WINDOW: Duration = Duration::from_millis(200);
/// ... and at least: a busy program gets a window as soon as its allowance
/// pays for one this long (with its detach), rather than waiting to pay for
/// the longest (its windows come twice as often, the first one sooner). The
/// detach (~16 ms of traps with uprobe_multi links) stays a small part of it.
pub const SHORTEST_WINDOW: Duration = Duration::from_millis(100);
/// How often an open window is judged. Between, a window that stays open
/// has each process's hits looked at as soon as they pass what the budget
/// allows in the stretch ([`DutyCycle::countdowns`]: the kernel programs count
/// them down and wake the windows' thread): a program that turns busy closes
/// its window at once. (Judged every second instead, the windows' thread cost
/// a little less with 100k parked goroutines, ~0.1% of a core, but the node
/// bench's worst process paid up to 2% instead of 0.8%.)
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How often the allowance is looked at while the probes are off (the rates
/// it is predicted from may change meanwhile).
const OFF_CHECK_EVERY: Duration = Duration::from_secs(1);
/// What the kernel's detach of a window is taken to cost before one was
/// measured, as time at the window's rate of hits: with uprobe_multi links
/// the sites trap for ~16 ms here (one RCU grace period); with perf-event
/// links (older kernels) up to seconds for a file that runs in many busy
/// processes, the busiest sites first.
const DETACH_UNSEEN: Duration = Duration::from_millis(100);
/// Hits per goroutine switch before a window measured them: a park makes
/// three `casgstatus` hits (running → waiting → runnable → running) and one
/// `schedule`; a syscall makes two.
pub const HITS_PER_SWITCH_UNSEEN: f64 = 4.0;
/// Switches a window must see to learn the hits per switch from (the runtime
/// counts one in eight: see `SchedState::goroutine_switches`).
const SWITCHES_TO_LEARN: u64 = 800;
/// Probe costs below this share of a core are always allowed: a quiet program
/// keeps its probes (and its exact counts) however little CPU it uses.
const NEGLIGIBLE_SHARE_OF_A_CORE: f64 = 0.001;
/// Rates are measured over at least this long.
const SHORTEST_RATE_SPAN: Duration = Duration::from_millis(20);

/// The counters the controller reads: uprobe hits, the target's CPU time and
/// the runtime's count of goroutine switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowMeasure {
    pub hits: u64,
    /// Of which hits while a window was being detached (the trap alone).
    pub closing_hits: u64,
    pub target_cpu_ns: u64,
    /// None where the target's scheduler state cannot be read.
    pub switches: Option<u64>,
}

impl WindowMeasure {
    /// The probes' cost (ns) and the target's CPU time (ns) from here to
    /// `now`: a hit costs `hit_ns`, one of a closing window the trap alone.
    fn since(&self, now: &Self, hit_ns: f64, trap_ns: f64) -> (f64, f64) {
        let closing = now.closing_hits.saturating_sub(self.closing_hits);
        let hits = now.hits.saturating_sub(self.hits).saturating_sub(closing);
        (
            hits as f64 * hit_ns + closing as f64 * trap_ns,
            now.target_cpu_ns.saturating_sub(self.target_cpu_ns) as f64,
        )
    }

    fn switches_since(&self, now: &Self) -> Option<u64> {
        Some(now.switches?.saturating_sub(self.switches?))
    }
}

/// A process's rates per ns of wall time: goroutine switches, and CPU (cores)
/// without the probes' cost.
#[derive(Debug, Clone, Copy)]
struct Rates {
    switches: Option<f64>,
    cpu: f64,
}

/// What a process says of a window.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Verdict {
    /// Its probes would cost it less than its budget: they may stay on.
    WithinBudget,
    /// Over its budget, but its allowance pays for a window this long.
    Paid(Duration),
    /// Not yet: its allowance lacks this much (ns of probe cost).
    Short(f64),
}

/// What the controller knows of one process the probes serve.
#[derive(Debug, Clone, Copy)]
struct Member {
    /// Counters when the current window opened ...
    window_start: WindowMeasure,
    /// ... when the stretch of it being judged began ...
    start: WindowMeasure,
    /// ... and at the last look, and when.
    last: WindowMeasure,
    last_at: Instant,
    rates: Rates,
    /// Probe cost (ns) the budget still allows: its share of the CPU time used
    /// since the process was watched, less what the probes cost.
    allowance_ns: f64,
    hits_per_switch: f64,
    /// The last window's cost per ns: the prediction where the switches
    /// cannot be read ...
    window_cost_rate: Option<f64>,
    /// ... its hits per ns when it was closed, and its counters then.
    window_hit_rate: f64,
    closing: WindowMeasure,
    /// While a window stays open: the hits past which the stretch being
    /// judged is over the budget, whatever CPU the process used.
    hit_limit: Option<u64>,
}

impl Member {
    /// Joining at `at` with counters `now`, the process `age` old: its rates
    /// until measured are its averages since it started.
    fn new(now: WindowMeasure, at: Instant, age: Option<Duration>) -> Self {
        let lifetime = age.filter(|age| *age >= SHORTEST_RATE_SPAN);
        let rates = match lifetime {
            Some(age) => {
                let ns = age.as_nanos() as f64;
                Rates {
                    switches: now.switches.map(|s| s as f64 / ns),
                    cpu: now.target_cpu_ns as f64 / ns,
                }
            }
            None => Rates {
                switches: now.switches.map(|_| 0.0),
                cpu: 0.0,
            },
        };
        Self {
            window_start: now,
            start: now,
            last: now,
            last_at: at,
            rates,
            allowance_ns: 0.0,
            hits_per_switch: HITS_PER_SWITCH_UNSEEN,
            window_cost_rate: None,
            window_hit_rate: 0.0,
            closing: now,
            hit_limit: None,
        }
    }

    /// Takes the counters `now` at `at` into the allowance and the rates.
    fn look(
        &mut self,
        now: WindowMeasure,
        at: Instant,
        budget: f64,
        (hit_ns, trap_ns): (f64, f64),
    ) {
        let (cost_ns, cpu_ns) = self.last.since(&now, hit_ns, trap_ns);
        self.allowance_ns += budget * cpu_ns - cost_ns;
        let span = at.saturating_duration_since(self.last_at);
        if span >= SHORTEST_RATE_SPAN {
            let ns = span.as_nanos() as f64;
            self.rates = Rates {
                switches: self.last.switches_since(&now).map(|s| s as f64 / ns),
                cpu: (cpu_ns - cost_ns).max(0.0) / ns,
            };
        }
        self.last = now;
        self.last_at = at;
    }

    /// What the probes would cost it per ns while on; None: nothing known.
    fn predicted_cost_rate(&self, hit_ns: f64) -> Option<f64> {
        match self.rates.switches {
            Some(switches) => Some(switches * self.hits_per_switch * hit_ns),
            None => self.window_cost_rate,
        }
    }

    /// Whether a window may open for it, and how long, its `detach` (what a
    /// detach is taken to cost, as time at full cost) paid for too.
    fn verdict(&self, budget: f64, detach: Duration, hit_ns: f64) -> Verdict {
        let Some(cost) = self.predicted_cost_rate(hit_ns) else {
            // Nothing known yet (no scheduler state): a window measures it.
            return Verdict::Paid(WINDOW);
        };
        // The target's CPU while on includes the probes' cost.
        if cost <= NEGLIGIBLE_SHARE_OF_A_CORE || cost <= budget * (self.rates.cpu + cost) {
            return Verdict::WithinBudget;
        }
        let paid_ns = self.allowance_ns / cost - detach.as_nanos() as f64;
        if paid_ns >= SHORTEST_WINDOW.as_nanos() as f64 {
            Verdict::Paid(Duration::from_nanos(paid_ns as u64).min(WINDOW))
        } else {
            let need = cost * (SHORTEST_WINDOW + detach).as_nanos() as f64;
            Verdict::Short(need - self.allowance_ns)
        }
    }

    /// The window, open for `length`, closes (its detach begins): learns
    /// what it cost per switch and per ns, up to now (the detach puts the
    /// code back before it ends, while the switches go on).
    fn window_closing(&mut self, length: Duration, stretch: Duration, hit_ns: f64) {
        let hits = self.last.hits.saturating_sub(self.window_start.hits);
        if let Some(switches) = self.window_start.switches_since(&self.last)
            && switches >= SWITCHES_TO_LEARN
        {
            self.hits_per_switch = hits as f64 / switches as f64;
        }
        let ns = length.as_nanos().max(1) as f64;
        self.window_cost_rate = Some(hits as f64 * hit_ns / ns);
        // The rate at the close: over the stretch that closed it (a window
        // that stayed open may have been quiet until then).
        let stretch_hits = self.last.hits.saturating_sub(self.start.hits);
        self.window_hit_rate = stretch_hits as f64 / stretch.as_nanos().max(1) as f64;
        self.closing = self.last;
        self.hit_limit = None;
    }

    /// The hits past which a stretch of `length` from now is over the budget
    /// even if the process's CPU went on at its last rate (the probes' own
    /// cost added): its earliest sign of turning busy.
    fn stretch_hit_limit(&self, budget: f64, length: Duration, hit_ns: f64) -> u64 {
        let ns = length.as_nanos() as f64;
        let allowed_ns = (NEGLIGIBLE_SHARE_OF_A_CORE * ns)
            .max(budget * self.rates.cpu * ns / (1.0 - budget).max(f64::EPSILON));
        self.last.hits + (allowed_ns / hit_ns.max(1.0)) as u64
    }
}

/// The counters of each process the probes serve, by pid.
pub type Measures = HashMap<u32, WindowMeasure>;

pub struct DutyCycle {
    /// Share of the target's CPU time the probes may cost; None: `--exact`.
    budget: Option<f64>,
    open: bool,
    /// When the current phase (on, or off) started, or the stretch of a
    /// window being judged; and when to decide again.
    since: Instant,
    until: Instant,
    /// When the open window opened; whether it stays open while within the
    /// budget (else it closes at its first check), and when its hits are
    /// looked at next.
    opened: Instant,
    stays: bool,
    /// The processes, by pid.
    members: HashMap<u32, Member>,
    /// Time the probes were on, windows closed so far.
    on_before: Duration,
    /// What the last window's detach cost, as time at its rate of hits.
    detach: Duration,
    /// The cost of a hit and of a trap alone at the last decision (ns).
    hit_ns: f64,
    trap_ns: f64,
    /// Windows opened so far.
    pub windows: u64,
    /// Why the last window closed, and what that window taught (for
    /// `--verbose`).
    pub over: String,
    pub reasoning: String,
}

/// What to do with the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Close,
    Keep,
}

impl DutyCycle {
    /// From `now`, serving no process yet: with `--exact` (no budget) the
    /// probes are on from the start; otherwise off until a decision opens
    /// them (due at once).
    pub fn new(budget: Option<f64>, now: Instant) -> Self {
        Self {
            budget,
            open: budget.is_none(),
            since: now,
            until: now,
            opened: now,
            stays: budget.is_none(),
            members: HashMap::new(),
            on_before: Duration::ZERO,
            detach: DETACH_UNSEEN,
            hit_ns: 1000.0,
            trap_ns: 1000.0,
            windows: u64::from(budget.is_none()),
            over: String::new(),
            reasoning: String::new(),
        }
    }

    /// Whether the probes are to be on now.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The probes serve process `pid` from `at` on: its counters then, and
    /// how long it had been running (its rates until measured are its
    /// averages since it started).
    pub fn join(&mut self, pid: u32, now: WindowMeasure, at: Instant, age: Option<Duration>) {
        let mut member = Member::new(now, at, age);
        // Joining a window that stays open: its hits are looked at from now
        // (past what the budget allows it in `CHECK_EVERY`, as the others').
        if let (Some(budget), true) = (self.budget, self.open && self.stays) {
            member.hit_limit = Some(member.stretch_hit_limit(budget, CHECK_EVERY, self.hit_ns));
        }
        self.members.insert(pid, member);
    }

    /// ... no longer.
    pub fn leave(&mut self, pid: u32) {
        self.members.remove(&pid);
    }

    /// The last window's hits per ns, in every process it served.
    pub fn window_hit_rate(&self) -> f64 {
        self.members.values().map(|m| m.window_hit_rate).sum()
    }

    /// When [`DutyCycle::decide`] is due.
    pub fn due(&self) -> Instant {
        self.until
    }

    /// While a window stays open under a budget: the hits each process may
    /// still make in the current stretch (past them, [`DutyCycle::quick_look`]
    /// is due); None for a process that has no limit, or when none is.
    pub fn countdowns(&self, hits: &HashMap<u32, u64>) -> Option<Vec<(u32, Option<u64>)>> {
        (self.open && self.stays && self.budget.is_some()).then(|| {
            self.members
                .iter()
                .map(|(pid, member)| {
                    let left = member
                        .hit_limit
                        .zip(hits.get(pid))
                        .map(|(limit, hits)| limit.saturating_sub(*hits).max(1));
                    (*pid, left)
                })
                .collect()
        })
    }

    /// Between checks of a window that stays open: each process's hits now.
    /// Returns whether one is past its limit: the decision is then due at once.
    pub fn quick_look(&mut self, now: Instant, hits: &HashMap<u32, u64>) -> bool {
        let past = self.members.iter().any(|(pid, member)| {
            member
                .hit_limit
                .zip(hits.get(pid))
                .is_some_and(|(limit, hits)| *hits > limit)
        });
        if past {
            self.until = now;
        }
        past
    }

    /// Time the probes were on, from the start to `now`.
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
    pub fn decide(
        &mut self,
        now: Instant,
        counters: &Measures,
        (hit_ns, trap_ns): (f64, f64),
    ) -> Action {
        let Some(budget) = self.budget else {
            self.until = now + CHECK_EVERY;
            return Action::Keep;
        };
        (self.hit_ns, self.trap_ns) = (hit_ns, trap_ns);
        for (pid, member) in &mut self.members {
            if let Some(measure) = counters.get(pid) {
                member.look(*measure, now, budget, (hit_ns, trap_ns));
            }
        }
        if self.open {
            return self.judge_window(now, budget, hit_ns);
        }
        let verdicts: Vec<(u32, Verdict)> = self
            .members
            .iter()
            .filter(|(pid, _)| counters.contains_key(pid))
            .map(|(pid, member)| (*pid, member.verdict(budget, self.detach, hit_ns)))
            .collect();
        let short = verdicts.iter().find_map(|(pid, verdict)| match verdict {
            Verdict::Short(need) => Some((*pid, *need)),
            _ => None,
        });
        if verdicts.is_empty() {
            self.until = now + OFF_CHECK_EVERY;
            return Action::Keep;
        }
        if let Some((pid, need)) = short {
            // Looked at again when its allowance should pay for a window at
            // its CPU rate (and at least every OFF_CHECK_EVERY).
            let earning = budget * self.members[&pid].rates.cpu;
            let wait = if earning > 0.0 {
                Duration::from_nanos((need / earning) as u64)
            } else {
                OFF_CHECK_EVERY
            };
            self.until = now + wait.clamp(CHECK_EVERY, OFF_CHECK_EVERY);
            return Action::Keep;
        }
        self.stays = verdicts.iter().all(|(_, v)| *v == Verdict::WithinBudget);
        // What every member pays for.
        let length = verdicts
            .iter()
            .filter_map(|(_, verdict)| match verdict {
                Verdict::Paid(length) => Some(*length),
                _ => None,
            })
            .min()
            .unwrap_or(WINDOW);
        for member in self.members.values_mut() {
            member.window_start = member.last;
        }
        self.open = true;
        self.since = now;
        self.opened = now;
        self.windows += 1;
        if self.stays {
            self.next_stretch(now, budget, hit_ns);
        } else {
            self.until = now + length;
            for member in self.members.values_mut() {
                member.start = member.last;
            }
        }
        Action::Open
    }

    /// An open window, at a check: closes when one process paid more than
    /// its budget over the stretch since the last check.
    fn judge_window(&mut self, now: Instant, budget: f64, hit_ns: f64) -> Action {
        let stretch = now.saturating_duration_since(self.since);
        let negligible = stretch.as_nanos() as f64 * NEGLIGIBLE_SHARE_OF_A_CORE;
        let over_budget = self.members.iter().find_map(|(pid, member)| {
            let (cost_ns, cpu_ns) = member.start.since(&member.last, hit_ns, self.trap_ns);
            (cost_ns > budget * cpu_ns && cost_ns > negligible).then_some((*pid, cost_ns, cpu_ns))
        });
        if let Some((pid, cost_ns, cpu_ns)) = over_budget {
            self.over = format!(
                "process {pid} over its budget: probes {:.2} ms for {:.2} ms of CPU in {stretch:?}",
                cost_ns / 1e6,
                cpu_ns / 1e6
            );
            let length = now.saturating_duration_since(self.opened);
            for member in self.members.values_mut() {
                member.window_closing(length, stretch, hit_ns);
            }
            return Action::Close;
        }
        // Within: the next check judges the next stretch.
        self.on_before += stretch;
        self.since = now;
        self.stays = true;
        self.next_stretch(now, budget, hit_ns);
        Action::Keep
    }

    /// A stretch of a window that stays open begins `now`: judged at its
    /// end, its hits looked at once past their limit.
    fn next_stretch(&mut self, now: Instant, budget: f64, hit_ns: f64) {
        self.until = now + CHECK_EVERY;
        for member in self.members.values_mut() {
            member.start = member.last;
            member.hit_limit = Some(member.stretch_hit_limit(budget, CHECK_EVERY, hit_ns));
        }
    }

    /// The probes were detached from `closing` to `now` (the kernel removes
    /// the programs, then puts the code back, link by link: from a few
    /// hundred ms to seconds), and went on trapping for `trapping`, as time
    /// at the window's rate of hits: the hits up to `now` are charged, and
    /// the traps after the programs were removed, which they did not count,
    /// estimated at the window's rate and charged at the trap's cost (`costs`:
    /// a hit's and a trap's, ns). Returns those traps, by pid. The window's
    /// time on ends at `closing`.
    pub fn closed(
        &mut self,
        closing: Instant,
        now: Instant,
        counters: &Measures,
        (hit_ns, trap_ns): (f64, f64),
        trapping: Duration,
    ) -> Vec<(u32, u64)> {
        let Some(budget) = self.budget else {
            return Vec::new();
        };
        let length = closing.saturating_duration_since(self.opened);
        let mut costliest: Option<(u32, Member)> = None;
        let mut uncounted = Vec::new();
        for (pid, member) in &mut self.members {
            if let Some(measure) = counters.get(pid) {
                member.look(*measure, now, budget, (hit_ns, trap_ns));
                let trapped = (member.window_hit_rate * trapping.as_nanos() as f64) as u64;
                let counted = member.last.hits.saturating_sub(member.closing.hits);
                let traps = trapped.saturating_sub(counted);
                member.allowance_ns -= traps as f64 * trap_ns;
                uncounted.push((*pid, traps));
                // Savings of a quiet stretch never pay for a burst of windows.
                member.allowance_ns = member.allowance_ns.min(0.0);
            }
            if costliest.is_none_or(|(_, c)| member.window_cost_rate > c.window_cost_rate) {
                costliest = Some((*pid, *member));
            }
        }
        self.detach = trapping;
        self.reasoning = costliest.map_or_else(String::new, |(pid, member)| {
            format!(
                "process {pid}: the window cost {:.2} ms in {length:?} ({:.1} hits a \
                 goroutine switch), its detach trapped as long as {trapping:?} of it, its \
                 CPU {:.3} cores; allowance {:.2} ms",
                member.window_cost_rate.unwrap_or(0.0) * length.as_nanos() as f64 / 1e6,
                member.hits_per_switch,
                member.rates.cpu,
                member.allowance_ns / 1e6,
            )
        });
        self.on_before += closing.saturating_duration_since(self.since);
        self.open = false;
        self.since = now;
        self.until = now;
        uncounted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIT_NS: f64 = 1000.0;
    const COSTS: (f64, f64) = (HIT_NS, 500.0);
    const SECOND: Duration = Duration::from_secs(1);

    /// A process after `seconds`: CPU at `cores`, `switches` a second, and
    /// `hits` so far.
    fn at(seconds: f64, cores: f64, switches: f64, hits: u64) -> WindowMeasure {
        WindowMeasure {
            hits,
            closing_hits: 0,
            target_cpu_ns: (seconds * cores * 1e9) as u64,
            switches: Some((seconds * switches) as u64),
        }
    }

    fn one(measure: WindowMeasure) -> Measures {
        [(1, measure)].into()
    }

    /// A cycle under a 1% budget serving process 1, which has run for a second
    /// at 1 core and `switches` a second.
    fn cycle(start: Instant, switches: f64) -> DutyCycle {
        let mut cycle = DutyCycle::new(Some(0.01), start);
        cycle.join(1, at(1.0, 1.0, switches, 0), start, Some(SECOND));
        cycle
    }

    /// 100,000 switches a second at 4 hits of 1 µs would cost 0.4 cores:
    /// no window until the allowance (1% of a core's CPU time) pays for the
    /// shortest, 100 ms, and what its detach is taken to cost (0.08 s of
    /// probes: 8 s of CPU). Then the window's cost stays within the budget
    /// over the run.
    #[test]
    fn a_busy_program_gets_no_window_before_it_paid_for_one() {
        let start = Instant::now();
        let mut cycle = cycle(start, 100_000.0);
        let rate = |s: f64| at(1.0 + s, 1.0, 100_000.0, 0);
        assert_eq!(cycle.decide(start, &one(rate(0.0)), COSTS), Action::Keep);
        let mut now = start;
        while cycle.decide(now, &one(rate((now - start).as_secs_f64())), COSTS) == Action::Keep {
            assert!(cycle.due() > now);
            now = cycle.due();
            assert!(
                now - start < 15 * SECOND,
                "no window after {:?}",
                now - start
            );
        }
        let waited = (now - start).as_secs_f64();
        assert!((7.9..9.1).contains(&waited), "opened after {waited} s");
        assert_eq!(cycle.windows, 1);
        // Open for 100 ms at 0.4 cores of probes (more CPU) ...
        assert_eq!(cycle.due() - now, SHORTEST_WINDOW);
        let closing = now + SHORTEST_WINDOW;
        let cpu_ns = |s: f64, probes_ns: u64| ((1.0 + s) * 1e9) as u64 + probes_ns;
        let mut at_close = at(1.0 + waited + 0.1, 1.0, 100_000.0, 40_000);
        at_close.target_cpu_ns = cpu_ns(waited + 0.1, 40_000_000);
        assert_eq!(cycle.decide(closing, &one(at_close), COSTS), Action::Close);
        // ... then detached in 300 ms, with the hits of 20 ms at the window's
        // rate meanwhile (all counted) ...
        let detached = closing + 3 * CHECK_EVERY;
        let mut after = at(1.0 + waited + 0.4, 1.0, 100_000.0, 48_000);
        after.target_cpu_ns = cpu_ns(waited + 0.4, 48_000_000);
        // ... which is how long the sites trapped.
        let trapping = Duration::from_millis(20);
        let uncounted = cycle.closed(closing, detached, &one(after), COSTS, trapping);
        assert_eq!(uncounted, [(1, 0)]);
        let share = after.hits as f64 * HIT_NS / (after.target_cpu_ns as f64 - 1e9);
        assert!(share <= 0.01, "{share}");
        assert!(!cycle.is_open());
        assert_eq!(cycle.on_time(detached), SHORTEST_WINDOW);
        assert_eq!(cycle.detach, trapping);
    }

    /// What a window measured is what the next one is predicted from: 2 hits
    /// a switch instead of 4, and a detach that trapped 30 ms at the window's
    /// rate instead of 100, make the next wait 2.6 s instead of 8. The traps
    /// its programs did not count (removed before the code was put back) are
    /// estimated.
    #[test]
    fn the_hits_a_switch_makes_are_learned_from_a_window() {
        let start = Instant::now();
        let mut cycle = cycle(start, 100_000.0);
        cycle.members.get_mut(&1).unwrap().allowance_ns = 1e9;
        let open = at(1.0, 1.0, 100_000.0, 0);
        assert_eq!(cycle.decide(start, &one(open), COSTS), Action::Open);
        // 20,000 switches, 40,000 hits in 200 ms.
        let closing = start + WINDOW;
        let at_close = at(1.2, 1.0, 100_000.0, 40_000);
        assert_eq!(cycle.decide(closing, &one(at_close), COSTS), Action::Close);
        let detached = closing + 3 * CHECK_EVERY;
        let after = at(1.5, 1.0, 100_000.0, 42_000);
        let trapping = Duration::from_millis(30);
        let uncounted = cycle.closed(closing, detached, &one(after), COSTS, trapping);
        // 200 hits a ms for 30 ms, 2,000 of them counted.
        assert_eq!(uncounted, [(1, 4_000)]);
        assert!((cycle.members[&1].hits_per_switch - 2.0).abs() < 0.01);
        // 0.2 cores × 130 ms = 26 ms of probes: 2.6 s of CPU.
        let mut now = detached;
        loop {
            let s = 1.5 + (now - detached).as_secs_f64();
            let measure = at(s, 1.0, 100_000.0, after.hits);
            if cycle.decide(now, &one(measure), COSTS) == Action::Open {
                break;
            }
            now = cycle.due();
            assert!(now - detached < 10 * SECOND);
        }
        let waited = (now - detached).as_secs_f64();
        assert!((2.5..3.7).contains(&waited), "opened after {waited} s");
    }

    /// Probes costing less than the budget stay on from the start, and so do
    /// negligible ones: one window, on all the time.
    #[test]
    fn a_quiet_program_keeps_the_probes() {
        let start = Instant::now();
        // 100 switches a second at 4 hits: 0.04% of a core.
        let mut cycle = cycle(start, 100.0);
        assert_eq!(
            cycle.decide(start, &one(at(1.0, 1.0, 100.0, 0)), COSTS),
            Action::Open
        );
        let mut now = start;
        for step in 1..=20 {
            now = cycle.due();
            let s = 1.0 + (now - start).as_secs_f64();
            let measure = at(s, 1.0, 100.0, 400 * step);
            assert_eq!(cycle.decide(now, &one(measure), COSTS), Action::Keep);
        }
        assert_eq!(cycle.windows, 1);
        assert_eq!(cycle.on_time(now), now - start);
    }

    /// Between checks, a look at the hits alone catches a quiet program
    /// turning busy: past the stretch's allowed hits the decision is due at
    /// once, and the window closes.
    #[test]
    fn a_quick_look_at_the_hits_closes_the_window_early() {
        let start = Instant::now();
        let mut cycle = cycle(start, 100.0);
        assert_eq!(
            cycle.decide(start, &one(at(1.0, 1.0, 100.0, 0)), COSTS),
            Action::Open
        );
        // A look is due past 1% of 100 ms of a core (the probes' cost
        // included: ÷ 0.99): 1,010 hits of 1 µs.
        let countdowns = cycle.countdowns(&[(1, 0)].into());
        assert_eq!(countdowns, Some(vec![(1, Some(1_010))]));
        let look = start + Duration::from_millis(10);
        // 100 hits in 10 ms: within it.
        assert!(!cycle.quick_look(look, &[(1, 100)].into()));
        assert_eq!(cycle.due() - start, CHECK_EVERY);
        // 2,000 hits 10 ms later: past it.
        let later = look + Duration::from_millis(10);
        assert!(cycle.quick_look(later, &[(1, 2_000)].into()));
        assert_eq!(cycle.due(), later);
        let mut measure = at(1.02, 1.0, 100.0, 2_000);
        measure.switches = Some(600);
        assert_eq!(cycle.decide(later, &one(measure), COSTS), Action::Close);
    }

    /// A quiet program that turns busy: the window closes at the next check,
    /// and what it saved while quiet does not reopen it.
    #[test]
    fn savings_of_a_quiet_stretch_do_not_pay_for_a_burst() {
        let start = Instant::now();
        let mut cycle = cycle(start, 100.0);
        assert_eq!(
            cycle.decide(start, &one(at(1.0, 1.0, 100.0, 0)), COSTS),
            Action::Open
        );
        // 100 s quiet: ~1 s of allowance saved.
        let quiet = start + 100 * SECOND;
        assert_eq!(
            cycle.decide(quiet, &one(at(101.0, 1.0, 100.0, 40_000)), COSTS),
            Action::Keep
        );
        // Then 100 ms at 200,000 switches a second, 80,000 hits.
        let busy = quiet + CHECK_EVERY;
        let measure = WindowMeasure {
            hits: 120_000,
            closing_hits: 0,
            target_cpu_ns: 101_180_000_000,
            switches: Some(10_100 + 20_000),
        };
        assert_eq!(cycle.decide(busy, &one(measure), COSTS), Action::Close);
        cycle.closed(
            busy,
            busy + DETACH_UNSEEN,
            &one(measure),
            COSTS,
            DETACH_UNSEEN,
        );
        assert!(cycle.members[&1].allowance_ns <= 0.0);
        let later = busy + DETACH_UNSEEN + CHECK_EVERY;
        let measure = WindowMeasure {
            hits: 120_000,
            closing_hits: 0,
            target_cpu_ns: 101_580_000_000,
            switches: Some(10_100 + 100_000),
        };
        assert_eq!(cycle.decide(later, &one(measure), COSTS), Action::Keep);
    }

    /// Two processes on the same probes: the window waits for the one that
    /// cannot pay, and a quiet one joining changes nothing.
    #[test]
    fn a_window_opens_when_every_process_can_pay() {
        let start = Instant::now();
        let mut cycle = cycle(start, 100.0);
        cycle.join(2, at(1.0, 1.0, 100_000.0, 0), start, Some(SECOND));
        let counters: Measures =
            [(1, at(1.0, 1.0, 100.0, 0)), (2, at(1.0, 1.0, 100_000.0, 0))].into();
        assert_eq!(cycle.decide(start, &counters, COSTS), Action::Keep);
        cycle.leave(2);
        assert_eq!(
            cycle.decide(start, &one(at(1.0, 1.0, 100.0, 0)), COSTS),
            Action::Open
        );
        // A quiet process that joins the open window is looked at past what
        // the budget allows it in a stretch, as the first one.
        let later = start + Duration::from_millis(30);
        cycle.join(3, at(1.0, 1.0, 100.0, 500), later, Some(SECOND));
        let mut countdowns = cycle
            .countdowns(&[(1, 0), (3, 500)].into())
            .expect("the window stays open");
        countdowns.sort_unstable();
        assert_eq!(countdowns, [(1, Some(1_010)), (3, Some(1_010))]);
    }

    /// A hit of a closing window (its program only counted it) costs the
    /// trap alone.
    #[test]
    fn closing_hits_cost_the_trap_alone() {
        let before = WindowMeasure::default();
        let after = WindowMeasure {
            hits: 1_000,
            closing_hits: 400,
            target_cpu_ns: 10_000_000,
            switches: None,
        };
        let (cost_ns, cpu_ns) = before.since(&after, HIT_NS, 500.0);
        assert_eq!(cost_ns, 600.0 * HIT_NS + 400.0 * 500.0);
        assert_eq!(cpu_ns, 10_000_000.0);
    }

    /// `--exact`: on from the start, never closes.
    #[test]
    fn exact_mode_keeps_them_whatever_they_cost() {
        let start = Instant::now();
        let mut cycle = DutyCycle::new(None, start);
        cycle.join(1, at(1.0, 1.0, 1e6, 0), start, Some(SECOND));
        assert!(cycle.is_open());
        let now = start + SECOND;
        assert_eq!(
            cycle.decide(now, &one(at(2.0, 1.0, 1e6, 10_000_000)), COSTS),
            Action::Keep
        );
        assert_eq!(cycle.on_time(now), SECOND);
    }
}
