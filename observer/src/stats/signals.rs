//! Pairs each SIGURG with where it landed and what it did.
//!
//! Three records come from three probes on the signalled thread, microseconds
//! apart: the signal (`signal:signal_generate`), its landing (the Go handler,
//! `sigtrampgo`: which instruction, which goroutine), then, when the handler
//! could inject a preemption, the goroutine stopping (`go_preempted` with the
//! async flag, or `go_preempt_park` for a GC stack scan). A signal whose landing
//! has not been drained yet waits for the next drain.

use std::collections::{HashMap, VecDeque};

use gobpf_sched_common::{Event, event_flags, event_kind};

use serde::Serialize;

use crate::stats::{clock::Clock, names::Names};

/// How long a signal waits for its handler's report and what it did (records
/// of one thread may straddle two drains; the handler runs within
/// microseconds, but a thread descheduled between its landing and its
/// preemption, on a loaded machine, may report tens of ms later: a CI run saw
/// a preemption whose signal had been resolved without it at 50 ms).
const WAIT_NS: u64 = 500_000_000;

#[derive(Default)]
pub struct SignalPairing {
    /// Records not resolved yet, oldest first.
    pending: Vec<Event>,
}

impl SignalPairing {
    /// Takes this drain's signal records (the other kinds are ignored) and
    /// returns the signals resolved: those older than `WAIT_NS` at `now_ns`, or
    /// all with `now_ns` = `u64::MAX` (the session's end). A preemption by a
    /// signal that was not seen (sent before attach) comes without its signal.
    /// `watched(ts)`: whether the preemption probes were attached at `ts`.
    // Long: one pass in time order over three kinds of records and two queues
    // per thread; split, the consumption order would be harder to follow.
    pub fn resolve(
        &mut self,
        events: &[Event],
        now_ns: u64,
        clock: &Clock,
        names: &Names<'_>,
        watched: &dyn Fn(u64) -> bool,
    ) -> Vec<Preemption> {
        self.pending
            .extend(events.iter().filter(|e| is_signal_record(e)));
        self.pending.sort_by_key(|e| e.ts_ns);
        let cutoff = now_ns.saturating_sub(WAIT_NS);
        // Per thread, in time order: landings and effects, consumed once each.
        let mut landings: HashMap<u32, VecDeque<Event>> = HashMap::new();
        let mut effects: HashMap<u32, VecDeque<Event>> = HashMap::new();
        let mut signals = Vec::new();
        let mut kept = Vec::new();
        for event in self.pending.drain(..) {
            match event.kind {
                event_kind::PREEMPT if event.ts_ns > cutoff => kept.push(event),
                event_kind::PREEMPT => signals.push(event),
                event_kind::PREEMPT_LANDED => {
                    landings.entry(event.tid).or_default().push_back(event)
                }
                _ => effects.entry(event.tid).or_default().push_back(event),
            }
        }
        let mut resolved = Vec::new();
        for signal in &signals {
            let mut preemption = Preemption::from_event(signal, clock);
            let thread_landings = landings.entry(signal.tid).or_default();
            while thread_landings
                .front()
                .is_some_and(|l| l.ts_ns < signal.ts_ns)
            {
                thread_landings.pop_front();
            }
            if let Some(landing) = thread_landings.pop_front() {
                preemption.landed_in = (names.function_at)(landing.value);
                preemption.landed_goid = Some(landing.goid);
                if !watched(landing.ts_ns) {
                    preemption.outcome = Outcome::Unseen;
                    resolved.push(preemption);
                    continue;
                }
                // What the handler started: before the thread's next landing.
                let next_landing = thread_landings.front().map_or(u64::MAX, |l| l.ts_ns);
                let thread_effects = effects.entry(signal.tid).or_default();
                while thread_effects
                    .front()
                    .is_some_and(|e| e.ts_ns < landing.ts_ns)
                {
                    thread_effects.pop_front();
                }
                if let Some(effect) = thread_effects
                    .front()
                    .filter(|e| e.ts_ns < next_landing && e.goid == landing.goid)
                    .copied()
                {
                    thread_effects.pop_front();
                    preemption.outcome = match effect.kind {
                        event_kind::PREEMPTED => Outcome::Preempted,
                        _ => Outcome::GcSuspended,
                    };
                    preemption.goid = effect.goid;
                }
            }
            resolved.push(preemption);
        }
        // Records after the kept signals wait with them; older ones that no signal
        // claimed are preemptions whose signal came before attach.
        let oldest_kept = kept.first().map_or(u64::MAX, |s| s.ts_ns);
        for (_, queue) in landings.into_iter().chain(effects) {
            for event in queue {
                if event.ts_ns >= oldest_kept || event.ts_ns > cutoff {
                    kept.push(event);
                } else if event.kind == event_kind::PREEMPTED {
                    let mut preemption = Preemption::from_event(&event, clock);
                    preemption.outcome = Outcome::Preempted;
                    preemption.sender_tid = 0;
                    resolved.push(preemption);
                }
            }
        }
        resolved.sort_by_key(|p| p.ts_ns);
        self.pending = kept;
        resolved
    }
}

/// The records of signals and their outcomes: SIGURG, its landing, an async
/// preemption or GC suspension (cooperative preemptions have no signal).
fn is_signal_record(event: &Event) -> bool {
    match event.kind {
        event_kind::PREEMPT | event_kind::PREEMPT_LANDED | event_kind::GC_SUSPENDED => true,
        event_kind::PREEMPTED => event.flags & event_flags::ASYNC != 0,
        _ => false,
    }
}

/// What a SIGURG did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The goroutine it landed on was preempted (running → runnable).
    Preempted,
    /// The goroutine stopped for the GC to scan its stack.
    GcSuspended,
    /// Nothing: no goroutine to preempt where it landed, or not at a safe point.
    NothingPreempted,
    /// Not seen: the preemption probes were off (between two windows under
    /// the overhead budget).
    Unseen,
}

/// One SIGURG and what it did, as printed and exported.
#[derive(Debug, Clone, Serialize)]
pub struct Preemption {
    pub outcome: Outcome,
    /// CLOCK_MONOTONIC nanoseconds (the kernel's `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Wall-clock time of the same instant, nanoseconds since the Unix epoch.
    pub unix_ns: u64,
    pub tid: u32,
    /// Goroutine running on `tid` when the signal was sent (0: unknown).
    pub goid: u64,
    /// How long it had been running (0: unknown).
    pub ran_ns: u64,
    pub m: i64,
    pub p: i32,
    pub sender_tid: u32,
    /// The goroutine had already stopped running (it noticed the preempt flag
    /// sysmon sets just before the signal) when the signal was generated.
    pub stopped: bool,
    /// Where the signal landed: the function the thread was running, and the
    /// goroutine it ran (0: no Go code), when the handler's report came in time.
    pub landed_in: Option<String>,
    pub landed_goid: Option<u64>,
}

impl Preemption {
    pub fn from_event(event: &Event, clock: &Clock) -> Self {
        Self {
            outcome: Outcome::NothingPreempted,
            ts_ns: event.ts_ns,
            unix_ns: clock.to_unix_ns(event.ts_ns),
            tid: event.tid,
            goid: event.goid,
            ran_ns: event.value,
            m: event.m_id,
            p: event.p_id,
            sender_tid: event.sender_tid,
            stopped: event.flags & event_flags::STOPPED != 0,
            landed_in: None,
            landed_goid: None,
        }
    }
}
