//! Who held the Ps while goroutines waited, exactly, from the transitions:
//! each run-queue wait (its end and length come with the goroutine's run
//! start) is laid over the run slices of the other goroutines, and each
//! slice's overlap with the wait is blamed on its goroutine. A slice still
//! running when the wait ends counts up to then; syscalls are not part of
//! slices (a goroutine in a syscall holds no P; seen when syscalls are
//! watched).
//!
//! Only while the transition probes are attached (windows, or always in
//! exact mode): waits and slices seen there.

use std::collections::{HashMap, VecDeque};

use gobpf_sched_common::{Event, GoroutineStats, event_flags, event_kind};
use serde::Serialize;

use crate::stats::{cpu_samples::UNKNOWN_START, names::Names};

/// How long ended slices are kept for waits that end later: longer waits
/// see only their last part blamed.
const KEEP_SLICES_NS: u64 = 10_000_000_000;

#[derive(Default)]
pub struct ExactBlame {
    /// Run slices that ended, in the order they ended: (start, end, goid).
    ended: VecDeque<(u64, u64, u64)>,
    /// The slice running on each thread: (start, goid).
    running: HashMap<u32, (u64, u64)>,
    /// Since the last report: blamed ns by goid, and the waits (named at
    /// each report, while the goroutines' totals still hold the exited ones).
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
    pub by_start_function: Vec<TimeShare>,
}

/// A name's part of a time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TimeShare {
    pub name: String,
    pub ns: u64,
    pub share: f64,
}

impl ExactBlame {
    /// Takes one streamed transition (run starts and ends are used).
    pub fn event(&mut self, event: &Event) {
        match event.kind {
            event_kind::RUN => {
                if event.value > 0 {
                    self.wait_ended(
                        event.ts_ns - event.value.min(event.ts_ns),
                        event.ts_ns,
                        event.goid,
                    );
                }
                self.running.insert(event.tid, (event.ts_ns, event.goid));
            }
            // Back from a syscall, on its P (else it waits for one, and
            // its next run starts a slice).
            event_kind::SYSCALL if event.flags & event_flags::RESUMED != 0 => {
                self.running.insert(event.tid, (event.ts_ns, event.goid));
            }
            // A goroutine in a syscall holds no P (or soon hands it off):
            // its slice pauses, and goes on if it comes back to its P.
            event_kind::STOP | event_kind::SYSCALL_ENTER => {
                if let Some((start, goid)) = self.running.remove(&event.tid) {
                    self.ended.push_back((start, event.ts_ns, goid));
                }
                while self
                    .ended
                    .front()
                    .is_some_and(|&(_, end, _)| end + KEEP_SLICES_NS < event.ts_ns)
                {
                    self.ended.pop_front();
                }
            }
            _ => {}
        }
    }

    /// Goroutine `waiter` waited from `from` to `to`: blames what ran meanwhile.
    fn wait_ended(&mut self, from: u64, to: u64, waiter: u64) {
        let mut blamed: Vec<(u64, u64)> = Vec::new();
        // Ended slices, latest first, back to the wait's start (slices end in
        // order, give or take the ring buffer's interleaving of CPUs).
        for &(start, end, goid) in self.ended.iter().rev() {
            if end <= from {
                break;
            }
            let overlap = end.min(to).saturating_sub(start.max(from));
            if overlap > 0 && goid != waiter {
                blamed.push((goid, overlap));
            }
        }
        for &(start, goid) in self.running.values() {
            let overlap = to.saturating_sub(start.max(from));
            if start < to && overlap > 0 && goid != waiter {
                blamed.push((goid, overlap));
            }
        }
        let tally = &mut self.interval;
        tally.waits += 1;
        tally.waited_ns += to - from;
        for (goid, ns) in blamed {
            *tally.blamed.entry(goid).or_default() += ns;
        }
    }

    /// The view since the last call (then started again). `goroutines`:
    /// the per-goroutine totals, which hold each one's `g.startpc`.
    pub fn take_interval(
        &mut self,
        goroutines: &HashMap<u64, GoroutineStats>,
        names: &Names,
        top: usize,
    ) -> ExactBlameView {
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
    let mut list: Vec<TimeShare> = tally
        .blamed
        .iter()
        .map(|(name, &ns)| TimeShare {
            name: name.clone(),
            ns,
            share: if blamed_ns == 0 {
                0.0
            } else {
                ns as f64 / blamed_ns as f64
            },
        })
        .collect();
    list.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.name.cmp(&b.name)));
    list.truncate(top);
    ExactBlameView {
        waits: tally.waits,
        waited_ns: tally.waited_ns,
        blamed_ns,
        by_start_function: list,
    }
}
