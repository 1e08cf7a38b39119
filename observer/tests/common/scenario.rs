//! The deterministic `scenario` fixture (tests/fixtures/scenario/scenario.go):
//! its arguments, and the counts a watched run of it must show. The fixture
//! runs on one P, which makes most counts exact; the checks say which.

use std::collections::HashMap;

use serde_json::Value;

use super::{count, goids, goroutine, histogram_total};

pub const SLEEPERS: u64 = 100;
pub const ROUNDS: u64 = 1000;
pub const WRITES: u64 = 500;
pub const SPIN_MS: u64 = 500;

/// The fixture's arguments: SLEEPERS, ROUNDS, WRITES, SPIN_MS.
pub fn args() -> Vec<String> {
    [SLEEPERS, ROUNDS, WRITES, SPIN_MS]
        .iter()
        .map(u64::to_string)
        .collect()
}

/// The result line of a run with [`args`], traced or not: the ponger answers
/// each `i` with `i + 1`.
pub fn expected_result() -> String {
    format!(
        "result sleepers={SLEEPERS} pingpong={} writes={WRITES}",
        ROUNDS * (ROUNDS + 1) / 2
    )
}

/// One watched run of the fixture with [`args`] (the observer with `--json
/// --top 100000`): what the fixture printed, and what the observer said of it.
pub struct Watched {
    /// `go1.25.5 Stripped`: in every message.
    pub v: String,
    /// The fixture's stdout.
    pub output: String,
    /// The observer's `summary` of the process.
    pub summary: Value,
    /// The observer's JSON lines about the process (intervals, preemptions).
    pub lines: Vec<Value>,
    /// Whether the observer prints a line per preemption (watching one
    /// process; with many it only counts them).
    pub preemption_lines: bool,
    ids: HashMap<String, u64>,
}

impl Watched {
    /// A run watched as the only process (a line per preemption).
    pub fn new(v: String, output: String, summary: Value, lines: Vec<Value>) -> Self {
        Self {
            ids: goids(&output),
            v,
            output,
            summary,
            lines,
            preemption_lines: true,
        }
    }

    /// A run watched as one of many processes (preemptions only counted).
    pub fn one_of_many(v: String, output: String, summary: Value, lines: Vec<Value>) -> Self {
        Self {
            preemption_lines: false,
            ..Self::new(v, output, summary, lines)
        }
    }

    /// Every count the program makes exact, one fact per function (a failure
    /// names it).
    pub fn check_counts(&self) {
        self.self_checks_pass();
        self.sleepers_park_once_each();
        self.pingpong_parks_once_per_round();
        self.writer_makes_exactly_its_syscalls();
        self.spinner_is_preempted_by_signals_in_burn();
        self.goroutines_are_named_by_start_function();
        self.goroutines_created_and_exited();
        self.latencies_and_slices_are_in_the_histograms();
    }

    fn goroutine(&self, name: &str) -> Value {
        goroutine(&self.summary, self.ids[name])
    }

    fn self_checks_pass(&self) {
        let (v, summary) = (&self.v, &self.summary);
        assert_eq!(count(summary, "dropped"), 0, "{v}: events dropped");
        // Checked once per thread that ran a goroutine.
        assert!(count(summary, "offset_checks") >= 1, "{v}: {summary}");
        assert_eq!(count(summary, "offset_mismatches"), 0, "{v}: wrong offsets");
        assert_eq!(count(summary, "read_errors"), 0, "{v}");
        // Every hit is counted, the ones that change no other counter too.
        let counted: u64 = [
            "schedule",
            "restarts",
            "run_slices",
            "gopark_total",
            "goroutines_exited",
        ]
        .iter()
        .map(|key| count(summary, key))
        .sum();
        assert!(count(summary, "probe_hits") > counted, "{v}: {summary}");
    }

    /// Each sleeper parks exactly once, with reason "sleep". The runtime's
    /// scavenger may also park with that reason, hence the small allowance on the
    /// total.
    fn sleepers_park_once_each(&self) {
        let (v, summary) = (&self.v, &self.summary);
        for sleeper in sleeper_goids(&self.output) {
            let parks = count(&goroutine(summary, sleeper), "parks");
            assert_eq!(parks, 1, "{v}: {sleeper}");
        }
        let sleeps = count(&summary["gopark"], "sleep");
        assert!(
            (SLEEPERS..=SLEEPERS + 2).contains(&sleeps),
            "{v}: {summary}"
        );
        // Each sleeper was blocked 5 ms on "sleep".
        let slept = count(&summary["blocked_ns"], "sleep");
        assert!(slept >= SLEEPERS * 5_000_000, "{v}: {slept} ns asleep");
    }

    fn pingpong_parks_once_per_round(&self) {
        let (v, summary) = (&self.v, &self.summary);
        assert_ponger_parks(summary, self.ids["ponger"], ROUNDS, v);
        // The ponger was created after attach: each of its runs has a run-queue
        // latency in its own histogram.
        let ponger = self.goroutine("ponger");
        let ponger_latencies = histogram_total(&ponger["runq_latency_histogram"]);
        assert_eq!(ponger_latencies, count(&ponger, "runs"), "{v}: {ponger}");
        let channel_parks =
            count(&summary["gopark"], "chan receive") + count(&summary["gopark"], "chan send");
        assert!(
            (2 * ROUNDS..2 * ROUNDS + 20).contains(&channel_parks),
            "{v}: {channel_parks} channel parks"
        );
    }

    /// The writer makes exactly WRITES write(2) calls and no other syscall.
    fn writer_makes_exactly_its_syscalls(&self) {
        let (v, summary) = (&self.v, &self.summary);
        let writer = self.goroutine("writer");
        assert_eq!(count(&writer, "syscalls"), WRITES, "{v}: {writer}");
        assert!(count(&writer, "syscall_ns") > 0);
        assert!(count(summary, "syscalls") >= WRITES);
        assert!(count(summary, "syscall_ns") >= count(&writer, "syscall_ns"));
    }

    /// The spinner holds the only P for SPIN_MS: sysmon preempts it every 10-20
    /// ms. Its inner loop makes no call: only SIGURG stops it, and the Go signal
    /// handler reports the signal landed in main.burn.
    fn spinner_is_preempted_by_signals_in_burn(&self) {
        let (v, summary) = (&self.v, &self.summary);
        let spinner_id = self.ids["spinner"];
        let spinner = self.goroutine("spinner");
        let run_ns = count(&spinner, "run_ns");
        assert!(run_ns >= (SPIN_MS - 50) * 1_000_000, "{v}: {spinner}");
        assert!(count(&spinner, "preemptions") >= 5, "{v}: {spinner}");
        let preemptions: Vec<&Value> = self
            .lines
            .iter()
            .filter(|e| e["type"] == "preemption")
            .collect();
        if !self.preemption_lines {
            assert!(preemptions.is_empty(), "{v}: {preemptions:?}");
            assert!(
                count(summary, "preemptions") >= count(&spinner, "preemptions"),
                "{v}: {summary}"
            );
            self.spinner_slices_are_long(&spinner);
            return;
        }
        assert_eq!(
            preemptions.len() as u64,
            count(summary, "preemptions"),
            "{v}"
        );
        let of_spinner: Vec<&Value> = preemptions
            .into_iter()
            .filter(|e| e["goid"] == spinner_id)
            .collect();
        assert_eq!(
            of_spinner.len() as u64,
            count(&spinner, "preemptions"),
            "{v}"
        );
        let in_burn = of_spinner
            .iter()
            .filter(|e| e["landed_in"] == "main.burn")
            .count();
        assert!(
            in_burn >= 3 && 2 * in_burn >= of_spinner.len(),
            "{v}: {in_burn} of {} spinner preemptions landed in main.burn",
            of_spinner.len()
        );
        for event in of_spinner {
            assert!(
                count(event, "tid") > 0 && count(event, "m") < 1000,
                "{event}"
            );
            assert!(count(event, "ts_ns") > 0 && count(event, "unix_ns") > 0);
            assert!(count(event, "ran_ns") > 0);
        }
        self.spinner_slices_are_long(&spinner);
    }

    /// The spinner's 10-20 ms slices between preemptions are in the run-slice
    /// buckets from 8 ms up.
    fn spinner_slices_are_long(&self, spinner: &Value) {
        let (v, summary) = (&self.v, &self.summary);
        let long: u64 = summary["run_slice_histogram"]
            .as_array()
            .expect("histogram")
            .iter()
            .filter(|b| count(b, "from_ns") >= 1 << 23)
            .map(|b| count(b, "count"))
            .sum();
        assert!(
            long >= count(spinner, "preemptions").saturating_sub(1),
            "{v}: {long} slices of 8 ms or more"
        );
    }

    /// Each goroutine is named by the function it was started with (from
    /// g.startpc and .gopclntab, less the load bias of a PIE).
    fn goroutines_are_named_by_start_function(&self) {
        let v = &self.v;
        for (name, function) in [
            ("ponger", "main.pingpong.func1"),
            ("writer", "main.writes.func1"),
            ("spinner", "main.spin.func1"),
        ] {
            let row = self.goroutine(name);
            assert_eq!(row["start_function"], function, "{v}: {row}");
        }
        for sleeper in sleeper_goids(&self.output) {
            let row = goroutine(&self.summary, sleeper);
            let function = row["start_function"].as_str().unwrap_or_default();
            // `main.sleepers.func2`, or `main.sleepers.gowrap1` from Go 1.22 on.
            assert!(function.starts_with("main.sleepers."), "{v}: {row}");
        }
    }

    /// Goroutines the program starts: the sleepers, the ponger, the writer, the
    /// spinner and the waiter; all of them exit. (The runtime may start a GC
    /// worker or two, which never exit.)
    fn goroutines_created_and_exited(&self) {
        let (v, summary) = (&self.v, &self.summary);
        let started = SLEEPERS + 4;
        assert_eq!(count(summary, "goroutines_exited"), started, "{v}");
        let created = count(summary, "goroutines_created");
        assert!(
            (started..=started + 3).contains(&created),
            "{v}: {created} created"
        );
    }

    /// Nearly every run slice started from a runnable state seen after attach,
    /// and every finished one is in the length histogram (a few slices are still
    /// open when the program exits).
    fn latencies_and_slices_are_in_the_histograms(&self) {
        let (v, summary) = (&self.v, &self.summary);
        let runs = count(summary, "run_slices");
        let latencies = histogram_total(&summary["runq_latency_histogram"]);
        assert!(
            latencies <= runs && latencies + 16 >= runs,
            "{v}: {latencies} latencies, {runs} run slices"
        );
        let slices = histogram_total(&summary["run_slice_histogram"]);
        assert!(
            slices <= runs && slices + 16 >= runs,
            "{v}: {slices} slices in the histogram, {runs} started"
        );
    }

    /// There were interval lines, and they add up to no more than the whole run.
    pub fn intervals_add_up(&self) {
        let intervals: Vec<&Value> = self
            .lines
            .iter()
            .filter(|e| e["type"] == "interval")
            .collect();
        assert!(!intervals.is_empty(), "{}: no interval lines", self.v);
        let interval_sleeps: u64 = intervals.iter().map(|i| count(&i["gopark"], "sleep")).sum();
        assert!(interval_sleeps <= SLEEPERS);
    }
}

/// The fixture's `result ...` line.
pub fn result_line(output: &str) -> &str {
    output
        .lines()
        .find(|l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("no result line in {output}"))
}

fn sleeper_goids(output: &str) -> Vec<u64> {
    let line = output
        .lines()
        .find(|l| l.starts_with("sleepers "))
        .expect("sleepers line");
    let ids: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|id| id.parse().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, SLEEPERS);
    ids
}

/// On one P the ponger hands control back once per round: exactly one park per
/// round, plus its final wait on the channel the pinger closes; every send finds
/// the other side waiting. Calls that restart after morestack (preemption
/// requests, stack growth) must not count twice. A preemption of either side
/// between its send and its receive (by a signal: counted per goroutine; at a
/// stack check: counted for the process only) lets the other reach a channel
/// first and park on the send (the only sends that park here) or, in the last
/// round, not park at all: each such shift moves the ponger's count by one.
pub fn assert_ponger_parks(summary: &Value, ponger: u64, rounds: u64, what: &str) {
    let row = goroutine(summary, ponger);
    let parks = count(&row, "parks");
    let send_parks = count(&summary["gopark"], "chan send");
    let preempted = count(&row, "preemptions")
        + count(&goroutine(summary, 1), "preemptions")
        + count(summary, "cooperative_preemptions");
    if send_parks == 0 {
        // No side reached a channel first, but maybe in the last round.
        if preempted == 0 {
            assert_eq!(parks, rounds + 1, "{what}: {row}");
        } else {
            assert!((rounds..=rounds + 1).contains(&parks), "{what}: {row}");
        }
    } else {
        assert!(
            parks.abs_diff(rounds + 1) <= send_parks + 1,
            "{what}: {parks} parks, {send_parks} parks on a send in the process, \
             {preempted} preemptions: {row}"
        );
    }
}
