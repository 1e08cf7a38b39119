//! Who held the Ps while goroutines waited, exactly, from the transitions.
//! Each run-queue wait is known when the goroutine starts running (`execute`
//! reports how long it was runnable); each run slice of a goroutine is
//! blamed for the waiting goroutines during it: the integral, over the
//! slice, of how many goroutines were waiting. Summed by goroutine, that is
//! for each wait the time each other goroutine ran meanwhile — "which
//! goroutines ran on the Ps while this one waited", over all waits.
//!
//! Waits are learned when they end, after the slices they overlap may have
//! ended: slices are settled once they ended `SETTLE_NS` ago, against every
//! wait known by then (a sweep over the waits' starts and ends: linear in
//! waits and slices, whatever their overlap). A wait longer than that sees
//! its earlier part unblamed. Syscalls are not part of slices (a goroutine
//! in a syscall is not on a CPU; seen when syscalls are watched); a P held
//! by a goroutine in a syscall is not blamed on it.
//!
//! Only while the transition probes are attached (windows, or always in
//! exact mode): waits and slices seen there.

use std::collections::HashMap;

use gobpf_sched_common::{Event, GoroutineStats, event_flags, event_kind};
use serde::Serialize;

use crate::stats::{
    cpu_samples::{Share, UNKNOWN_START, shares},
    names::Names,
};

/// How long after its end a slice is settled (waits end later than the
/// slices they overlap: up to this, they are all known then).
const SETTLE_NS: u64 = 1_000_000_000;

#[derive(Default)]
pub struct ExactBlame {
    /// Run slices that ended, not settled yet: (start, end, goid).
    ended: Vec<(u64, u64, u64)>,
    /// Waits that ended: (start, end); kept while a slice may still need them.
    waits: Vec<(u64, u64)>,
    /// The slice running on each thread: (start, goid).
    running: HashMap<u32, (u64, u64)>,
    /// Since the last report: blamed goroutine-ns by goid, and the waits
    /// (named at each report, while the goroutines' totals still hold the
    /// exited ones).
    interval: Tally<u64>,
    /// By start function.
    whole_run: Tally<String>,
}

struct Tally<K> {
    blamed: HashMap<K, u64>,
    waits: u64,
    waited_ns: u64,
}

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Self {
            blamed: HashMap::new(),
            waits: 0,
            waited_ns: 0,
        }
    }
}

/// The exact view of a span.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ExactBlameView {
    /// Run-queue waits seen, and their total length ...
    pub waits: u64,
    pub waited_ns: u64,
    /// ... and the P time of other goroutines that overlapped them, summed
    /// over the waits.
    pub blamed_ns: u64,
    /// Goroutine-ns of waiting by the start function holding a P.
    pub by_start_function: Vec<Share>,
}

impl ExactBlame {
    /// Takes one streamed transition (run starts and ends, syscalls).
    pub fn event(&mut self, event: &Event) {
        let (tid, ts) = (event.tid, event.ts_ns);
        match event.kind {
            event_kind::RUN => {
                if event.value > 0 {
                    let from = ts.saturating_sub(event.value);
                    self.waits.push((from, ts));
                    self.interval.waits += 1;
                    self.interval.waited_ns += ts - from;
                }
                self.running.insert(tid, (ts, event.goid));
            }
            // A goroutine in a syscall is not on a CPU: its slice pauses,
            // and goes on if it comes back to its P.
            event_kind::STOP | event_kind::SYSCALL_ENTER => {
                if let Some((start, goid)) = self.running.remove(&tid) {
                    self.ended.push((start, ts, goid));
                }
            }
            event_kind::SYSCALL if event.flags & event_flags::RESUMED != 0 => {
                self.running.insert(tid, (ts, event.goid));
            }
            _ => {}
        }
    }

    /// Settles the slices that ended before `until` (all of them: u64::MAX).
    fn settle(&mut self, until: u64) {
        let (settled, pending): (Vec<_>, Vec<_>) =
            self.ended.drain(..).partition(|&(_, end, _)| end <= until);
        self.ended = pending;
        if !settled.is_empty() && !self.waits.is_empty() {
            let integral = WaitingIntegral::new(&self.waits);
            for (start, end, goid) in settled {
                let blamed = integral.between(start, end);
                if blamed > 0 {
                    *self.interval.blamed.entry(goid).or_default() += blamed;
                }
            }
        }
        // Waits still needed: those that end after the oldest slice left.
        let oldest = self
            .ended
            .iter()
            .map(|&(start, _, _)| start)
            .chain(self.running.values().map(|&(start, _)| start))
            .min()
            .unwrap_or(until);
        self.waits.retain(|&(_, end)| end > oldest);
    }

    /// The view since the last call (then started again). `goroutines`:
    /// the per-goroutine totals, which hold each one's `g.startpc`.
    /// `now_ns`: the time of the last events taken (slices that ended a
    /// `SETTLE_NS` before it are settled); u64::MAX settles all (the end).
    pub fn take_interval(
        &mut self,
        now_ns: u64,
        goroutines: &HashMap<u64, GoroutineStats>,
        names: &Names,
        top: usize,
    ) -> ExactBlameView {
        self.settle(now_ns.saturating_sub(SETTLE_NS));
        let interval = std::mem::take(&mut self.interval);
        let mut named: Tally<String> = Tally {
            waits: interval.waits,
            waited_ns: interval.waited_ns,
            ..Tally::default()
        };
        for (goid, ns) in interval.blamed {
            let name = goroutines
                .get(&goid)
                .filter(|g| g.start_pc != 0)
                .and_then(|g| names.function(g.start_pc))
                .unwrap_or_else(|| UNKNOWN_START.to_owned());
            *named.blamed.entry(name).or_default() += ns;
        }
        let whole = &mut self.whole_run;
        whole.waits += named.waits;
        whole.waited_ns += named.waited_ns;
        for (name, ns) in &named.blamed {
            *whole.blamed.entry(name.clone()).or_default() += ns;
        }
        view(&named, top)
    }

    /// The whole run's view, up to the last interval taken.
    pub fn whole_run(&self, top: usize) -> ExactBlameView {
        view(&self.whole_run, top)
    }
}

fn view(tally: &Tally<String>, top: usize) -> ExactBlameView {
    let blamed_ns: u64 = tally.blamed.values().sum();
    let counts: HashMap<&str, u64> = tally
        .blamed
        .iter()
        .map(|(name, &ns)| (name.as_str(), ns))
        .collect();
    ExactBlameView {
        waits: tally.waits,
        waited_ns: tally.waited_ns,
        blamed_ns,
        by_start_function: shares(counts, blamed_ns, top),
    }
}

/// How many goroutines waited, integrated over time: ∫ waiting(t) dt from
/// the first wait's start, at each point where the count changes.
struct WaitingIntegral {
    /// (time, integral up to it, waiting from it on), by time.
    steps: Vec<(u64, u128, i64)>,
}

impl WaitingIntegral {
    fn new(waits: &[(u64, u64)]) -> Self {
        let mut changes: Vec<(u64, i64)> = waits
            .iter()
            .flat_map(|&(from, to)| [(from, 1), (to, -1)])
            .collect();
        changes.sort_unstable();
        let mut steps: Vec<(u64, u128, i64)> = Vec::with_capacity(changes.len());
        let (mut integral, mut waiting, mut last) = (0u128, 0i64, 0u64);
        for (at, change) in changes {
            integral += (at - last) as u128 * waiting.max(0) as u128;
            waiting += change;
            last = at;
            match steps.last_mut() {
                Some(step) if step.0 == at => step.2 = waiting,
                _ => steps.push((at, integral, waiting)),
            }
        }
        Self { steps }
    }

    /// The integral up to `at`.
    fn at(&self, at: u64) -> u128 {
        let after = self.steps.partition_point(|&(t, _, _)| t <= at);
        match after.checked_sub(1).and_then(|i| self.steps.get(i)) {
            Some(&(t, integral, waiting)) => integral + (at - t) as u128 * waiting.max(0) as u128,
            None => 0,
        }
    }

    /// Goroutine-ns of waiting between `from` and `to`.
    fn between(&self, from: u64, to: u64) -> u64 {
        self.at(to)
            .saturating_sub(self.at(from))
            .min(u64::MAX as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::WaitingIntegral;

    #[test]
    fn the_integral_counts_each_waiter_over_its_wait() {
        // Two waits overlapping on [15, 20].
        let integral = WaitingIntegral::new(&[(10, 20), (15, 30)]);
        assert_eq!(integral.between(0, 10), 0);
        assert_eq!(integral.between(10, 15), 5);
        assert_eq!(integral.between(15, 20), 10);
        assert_eq!(integral.between(12, 25), 3 + 10 + 5);
        assert_eq!(integral.between(30, 40), 0);
        assert_eq!(integral.between(0, 100), 10 + 15);
    }
}
