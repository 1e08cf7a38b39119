//! The goroutine census: every live goroutine by status and by wait reason, and
//! the ones waiting longest: a goroutine dump, live, summed up.
//!
//! How long a goroutine has waited: the runtime keeps `g.waitsince` only where
//! the GC saw it blocked (set at the first GC after it blocked, cleared when it
//! runs), so the census also remembers when it first saw each goroutine waiting
//! (for as long as its wait reason and `trackingSeq`, which the runtime bumps
//! each time the goroutine stops running, stay the same); the earlier of the
//! two is shown. Both are lower bounds.

use std::collections::BTreeMap;

use foldhash::{HashMap, HashMapExt};

use serde::Serialize;

use crate::{
    sources::goroutines::{GoroutineList, GoroutineRecord},
    stats::names::Names,
};

/// `_Grunnable` … `_Gdeadextra` (runtime2.go), named as goroutine dumps name
/// them (`gStatusStrings` in traceback.go); 5 and 7 are unused.
const G_STATUSES: [&str; 12] = [
    "idle",
    "runnable",
    "running",
    "syscall",
    "waiting",
    "moribund",
    "dead",
    "enqueue",
    "copystack",
    "preempted",
    "leaked",
    "waiting for cgo callback",
];
const G_IDLE: u32 = 0;
const G_WAITING: u32 = 4;
const G_DEAD: u32 = 6;
/// A dead g kept for a C thread's callbacks (1.27+).
const G_DEAD_EXTRA: u32 = 11;

fn status_name(status: u32) -> &'static str {
    G_STATUSES
        .get(status as usize)
        .copied()
        .unwrap_or("unknown")
}

/// The census of one read.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Census {
    /// Live goroutines (neither dead nor never started) ...
    pub goroutines: u64,
    /// ... of which the runtime's own (started in a `runtime.` function other
    /// than `runtime.main`, as `runtime.NumGoroutine` leaves them out) ...
    pub system_goroutines: u64,
    /// ... and the program's: what `runtime.NumGoroutine()` returns.
    pub user_goroutines: u64,
    /// The program's goroutines by status, and the waiting ones by wait reason
    /// (names from the binary), as a goroutine profile counts them.
    pub by_status: BTreeMap<String, u64>,
    pub by_wait_reason: BTreeMap<String, u64>,
    /// The program's goroutines waiting longest, longest first (the runtime's
    /// own wait all the time, and would fill the list).
    pub longest_waiters: Vec<Waiter>,
    /// Some g could not be read (allgs moved while read).
    pub approximate: bool,
    /// How long the read took (the target is not stopped meanwhile).
    pub read_ns: u64,
}

/// A goroutine that waits.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Waiter {
    pub goid: u64,
    pub start_function: Option<String>,
    pub reason: String,
    /// At least this long.
    pub waiting_ns: u64,
}

/// Keeps what a census needs from one read to the next.
#[derive(Default)]
pub struct CensusTaker {
    /// goid → (when first seen waiting, its wait reason and trackingSeq then).
    first_seen_waiting: HashMap<u64, (u64, u8, u8)>,
    /// startpc → (start function, whether it is a runtime goroutine).
    start_functions: HashMap<u64, (Option<String>, bool)>,
}

impl CensusTaker {
    /// The census of `list`, read at `now_ns` (CLOCK_MONOTONIC, the runtime's
    /// `nanotime`), with the `top` longest waiters.
    pub fn take(
        &mut self,
        list: &GoroutineList,
        now_ns: u64,
        names: &Names<'_>,
        top: usize,
    ) -> Census {
        let mut census = Census {
            approximate: list.approximate,
            ..Census::default()
        };
        let mut still_waiting = HashMap::with_capacity(self.first_seen_waiting.len());
        let mut waiters: Vec<(u64, &GoroutineRecord)> = Vec::new();
        // Counted by number first, named once at the end: 100,000 goroutines
        // must not cost 100,000 names.
        let mut by_status = [0u64; G_STATUSES.len() + 1];
        let mut by_reason = [0u64; 256];
        for g in &list.goroutines {
            if matches!(g.status, G_IDLE | G_DEAD | G_DEAD_EXTRA) {
                continue;
            }
            census.goroutines += 1;
            let system = self
                .start_functions
                .entry(g.startpc)
                .or_insert_with(|| {
                    let name = names.function(g.startpc);
                    let system = name.as_deref().is_some_and(is_runtime_goroutine);
                    (name, system)
                })
                .1;
            if system {
                census.system_goroutines += 1;
                continue;
            }
            by_status[(g.status as usize).min(G_STATUSES.len())] += 1;
            if g.status == G_WAITING {
                by_reason[usize::from(g.wait_reason)] += 1;
                let seen = match self.first_seen_waiting.get(&g.goid) {
                    Some(&(at, reason, seq))
                        if (reason, seq) == (g.wait_reason, g.tracking_seq) =>
                    {
                        at
                    }
                    _ => now_ns,
                };
                still_waiting.insert(g.goid, (seen, g.wait_reason, g.tracking_seq));
                let since = match u64::try_from(g.waitsince) {
                    Ok(at) if at > 0 => seen.min(at),
                    _ => seen,
                };
                waiters.push((now_ns.saturating_sub(since), g));
            }
        }
        census.by_status = by_status
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(status, &count)| (status_name(status as u32).to_owned(), count))
            .collect();
        census.by_wait_reason = by_reason
            .iter()
            .enumerate()
            .filter(|&(_, &count)| count > 0)
            .map(|(reason, &count)| (names.reason(reason as u64), count))
            .collect();
        census.user_goroutines = census.goroutines - census.system_goroutines;
        self.first_seen_waiting = still_waiting;
        // Longest first; among equals, the goroutine created first. Only the
        // first `top` are sorted.
        let key = |&(waiting, g): &(u64, &GoroutineRecord)| (std::cmp::Reverse(waiting), g.goid);
        if top > 0 && waiters.len() > top {
            waiters.select_nth_unstable_by_key(top - 1, key);
            waiters.truncate(top);
        }
        waiters.sort_unstable_by_key(key);
        census.longest_waiters = waiters
            .into_iter()
            .take(top)
            .map(|(waiting_ns, g)| Waiter {
                goid: g.goid,
                start_function: self
                    .start_functions
                    .get(&g.startpc)
                    .and_then(|(name, _)| name.clone()),
                reason: names.reason(u64::from(g.wait_reason)),
                waiting_ns,
            })
            .collect();
        census
    }
}

/// Whether a goroutine started in `function` is the runtime's own
/// (`isSystemGoroutine` in traceback.go: a `runtime.` function other than
/// `runtime.main` and coroutines; the finalizer and cleanup goroutines count as
/// the runtime's, as they do while they wait).
fn is_runtime_goroutine(function: &str) -> bool {
    function.starts_with("runtime.") && !matches!(function, "runtime.main" | "runtime.corostart")
}
