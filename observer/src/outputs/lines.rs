//! Prints what was aggregated: readable text (bpftrace/BCC style, fine in a
//! terminal and in a log file) or JSON lines for scripts.

use std::io::{self, Write};

use anyhow::Context;
use serde_json::json;

use gobpf_sched_common::{Event, event_kind};

use crate::{
    facet::Facet,
    outputs::{
        Report,
        format::{
            Header, by_power_of_two, by_value_descending, duration, p99_or_dash, preemption_line,
            time_of_day,
        },
    },
    session::AttachArgs,
    stats::{
        aggregate::{Bucket, Stats},
        census::Census,
        clock::Clock,
        cost::ProbeCost,
        cpu_samples::{CpuView, Share},
        names::Names,
        runtime_activity::{RuntimeActivity, RuntimeSummary},
        runtime_histogram::RuntimeHistogram,
        sched::SchedState,
        signals::{Outcome, Preemption},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Goroutines whose own run-queue latency histogram the summary draws.
const HISTOGRAMS_OF_TOP: usize = 3;

pub struct Printer {
    format: Format,
    header: Header,
    sink: Sink,
}

/// Where the reports are written: stdout, or stderr when a program run by
/// `gobpf-sched run` owns stdout, or a file (`--output`).
#[derive(Clone)]
pub enum Sink {
    Stdout,
    Stderr,
    File(std::sync::Arc<std::sync::Mutex<std::fs::File>>),
    /// Kept, to be printed once the screen of `--all` is gone (the summaries
    /// of processes that ended while it was up).
    Deferred(std::sync::Arc<std::sync::Mutex<Vec<String>>>),
}

impl Sink {
    /// Where `args` want the reports: `--output FILE` (created), stderr for
    /// `run`, else stdout.
    pub fn open(args: &AttachArgs) -> anyhow::Result<Self> {
        Ok(match &args.output {
            Some(path) => Sink::File(std::sync::Arc::new(std::sync::Mutex::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create --output {}", path.display()))?,
            ))),
            None if args.running_command => Sink::Stderr,
            None => Sink::Stdout,
        })
    }

    /// Writes one report. A failed write (a closed pipe, a full disk) is
    /// returned: the session must end, not go on watching for nobody.
    pub fn write(&self, text: &str) -> io::Result<()> {
        let text = text.trim_end();
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                writeln!(out, "{text}")?;
                out.flush()
            }
            Sink::Stderr => {
                let mut out = io::stderr().lock();
                writeln!(out, "{text}")?;
                out.flush()
            }
            Sink::File(file) => {
                let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
                writeln!(file, "{text}")?;
                file.flush()
            }
            Sink::Deferred(kept) => {
                kept.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(text.to_owned());
                Ok(())
            }
        }
    }
}

impl Printer {
    pub fn new(format: Format, header: Header, sink: Sink) -> Self {
        Self {
            format,
            header,
            sink,
        }
    }

    fn emit(&self, text: &str) -> io::Result<()> {
        self.sink.write(text)
    }

    pub fn preemption(&self, preemption: &Preemption) -> io::Result<()> {
        match self.format {
            Format::Json => {
                let mut value = serde_json::to_value(preemption).unwrap_or_default();
                // Only a signal that preempted is called a preemption.
                value["type"] = json!(match preemption.outcome {
                    Outcome::Preempted => "preemption",
                    Outcome::GcSuspended | Outcome::NothingPreempted | Outcome::Unseen => {
                        "sigurg"
                    }
                });
                self.emit(&value.to_string())
            }
            Format::Text => self.emit(&preemption_line(preemption)),
        }
    }

    /// One goroutine transition (`--events`).
    pub fn transition(&self, event: &Event, clock: &Clock, names: &Names<'_>) -> io::Result<()> {
        let (name, detail_key, detail) = match event.kind {
            event_kind::RUN => ("run", "runq_latency_ns", Detail::Duration(event.value)),
            event_kind::STOP => ("stop", "ran_ns", Detail::Duration(event.value)),
            event_kind::PARK => ("park", "reason", Detail::Text(names.reason(event.value))),
            event_kind::WAKE => ("wake", "blocked_ns", Detail::Duration(event.value)),
            event_kind::CREATE => ("create", "", Detail::None),
            event_kind::EXIT => ("exit", "", Detail::None),
            event_kind::SYSCALL => ("syscall", "duration_ns", Detail::Duration(event.value)),
            _ => ("unknown", "value", Detail::Duration(event.value)),
        };
        let unix_ns = clock.to_unix_ns(event.ts_ns);
        match self.format {
            Format::Json => {
                let mut value = json!({
                    "type": "event",
                    "event": name,
                    "ts_ns": event.ts_ns,
                    "unix_ns": unix_ns,
                    "tid": event.tid,
                    "goid": event.goid,
                });
                match detail {
                    Detail::Duration(ns) => value[detail_key] = json!(ns),
                    Detail::Text(text) => value[detail_key] = json!(text),
                    Detail::None => {}
                }
                self.emit(&value.to_string())
            }
            Format::Text => {
                let detail = match detail {
                    Detail::Duration(ns) => format!(" {}", duration(ns)),
                    Detail::Text(text) => format!(" {text}"),
                    Detail::None => String::new(),
                };
                self.emit(&format!(
                    "{} {:<7} tid {} goid {}{detail}",
                    time_of_day(unix_ns),
                    name.to_uppercase(),
                    event.tid,
                    event.goid
                ))
            }
        }
    }

    pub fn interval(&self, report: &Report<'_>) -> io::Result<()> {
        let (stats, sched, unix_ns, elapsed_ns) = (
            report.stats,
            report.sched,
            report.unix_ns,
            report.interval_ns,
        );
        match self.format {
            Format::Json => {
                let mut value = serde_json::to_value(stats).unwrap_or_default();
                value["sched"] = json!(sched);
                value["probes"] = cost_json(report.cost, stats);
                value["runtime"] = json!(report.runtime);
                value["census"] = json!(report.census);
                value["census_every_intervals"] = json!(report.census_every);
                value["cpu"] = json!(report.cpu);
                value["type"] = json!("interval");
                value["watching"] = json!(self.header.facets);
                value["unix_ns"] = json!(unix_ns);
                value["interval_ns"] = json!(elapsed_ns);
                value["pid"] = json!(self.header.pid);
                value["process"] = json!(self.header.labels);
                self.emit(&value.to_string())
            }
            Format::Text => {
                let mut text = self.text(
                    &format!(
                        "{} pid {}{} {} — last {}",
                        time_of_day(unix_ns),
                        self.header.pid,
                        self.header.labels.container_text(),
                        self.header.go_version,
                        duration(elapsed_ns)
                    ),
                    stats,
                    false,
                    report.cost.exact(),
                );
                text.push_str(&cost_text(report.cost, stats));
                if let Some(runtime) = report.runtime {
                    text.push_str(&runtime_text(runtime, &self.header.go_version));
                }
                if let Some(state) = sched {
                    text.push_str(&sched_text(state));
                }
                if let Some(census) = report.census {
                    text.push_str(&census_text(census, report.census_every));
                }
                if let Some(cpu) = report.cpu {
                    text.push_str(&cpu_text(cpu));
                }
                self.emit(&text)
            }
        }
    }

    /// The target exec'd another program: what follows is about the image before.
    pub fn exec(&self, new_exe: &str) -> io::Result<()> {
        match self.format {
            Format::Json => self.emit(
                &json!({"type": "exec", "pid": self.header.pid, "exe": new_exe,
                        "previous_go_version": self.header.go_version})
                .to_string(),
            ),
            Format::Text => self.emit(&format!(
                "=== pid {} exec'd {new_exe}: the summary below is of the previous image ({}) ===",
                self.header.pid, self.header.go_version
            )),
        }
    }

    pub fn summary(
        &self,
        stats: &Stats,
        cost: Option<&ProbeCost>,
        runtime: Option<&RuntimeSummary>,
        cpu: Option<&CpuView>,
        duration_ns: u64,
    ) -> io::Result<()> {
        match self.format {
            Format::Json => {
                let mut value = serde_json::to_value(stats).unwrap_or_default();
                if let Some(cost) = cost {
                    value["probes"] = cost_json(cost, stats);
                }
                if let Some(runtime) = runtime {
                    value["runtime"] = json!(runtime.whole_run);
                    value["runtime_since_start"] = json!(runtime.since_start);
                    value["census"] = json!(runtime.census);
                }
                value["cpu"] = json!(cpu);
                value["type"] = json!("summary");
                value["watching"] = json!(self.header.facets);
                value["pid"] = json!(self.header.pid);
                value["process"] = json!(self.header.labels);
                value["go_version"] = json!(self.header.go_version);
                value["duration_ns"] = json!(duration_ns);
                self.emit(&value.to_string())
            }
            Format::Text => {
                let mut text = self.text(
                    &format!(
                        "SUMMARY pid {}{} {} — whole run, {}",
                        self.header.pid,
                        self.header.labels.container_text(),
                        self.header.go_version,
                        duration(duration_ns)
                    ),
                    stats,
                    true,
                    cost.is_none_or(ProbeCost::exact),
                );
                if let Some(cost) = cost {
                    text.push_str(&cost_text(cost, stats));
                }
                if let Some(runtime) = runtime {
                    text.push_str(&runtime_text(&runtime.whole_run, &self.header.go_version));
                    if let Some(census) = &runtime.census {
                        text.push_str(&census_text(census, 1));
                    }
                }
                if let Some(cpu) = cpu {
                    text.push_str(&cpu_text(cpu));
                }
                self.emit(&text)
            }
        }
    }

    /// `exact`: the transition probes were on all the span (else a signal's
    /// outcome is known only in the windows).
    fn text(&self, title: &str, s: &Stats, whole_run: bool, exact: bool) -> String {
        let watching = |facet| self.header.facets.contains(&facet);
        let mut out = format!("=== {title} ===\n");
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<13}{value}\n"));
        };
        if watching(Facet::Schedule) {
            line(
                "schedule",
                format!("{:>9}   run time {}", s.schedule, duration(s.run_ns)),
            );
        }
        if watching(Facet::Goroutines) {
            line("run slices", format!("{:>9}", s.run_slices));
            let reasons: Vec<String> = by_value_descending(&s.gopark)
                .iter()
                .map(|(name, count)| format!("{name} {count}"))
                .collect();
            line(
                "gopark",
                format!("{:>9}   {}", s.gopark_total, reasons.join(", ")),
            );
        }
        if watching(Facet::Syscalls) {
            let average = s
                .syscall_ns
                .checked_div(s.syscalls)
                .map(|avg| format!(", avg {}", duration(avg)))
                .unwrap_or_default();
            line(
                "syscalls",
                format!(
                    "{:>9}   {} in syscalls{average} (entered {}, exited {})",
                    s.syscalls,
                    duration(s.syscall_ns),
                    s.syscalls_entered,
                    s.syscalls_exited
                ),
            );
        }
        if watching(Facet::Goroutines) {
            line(
                "goroutines",
                format!(
                    "{:>9}   created, {} exited",
                    s.goroutines_created, s.goroutines_exited
                ),
            );
            let blocked: Vec<String> = by_value_descending(&s.blocked_ns)
                .iter()
                .take(8)
                .map(|(name, ns)| format!("{name} {}", duration(*ns)))
                .collect();
            line("blocked", format!("{:>9}   {}", "", blocked.join(", ")));
        }
        if watching(Facet::Preemptions) {
            line(
                "preemptions",
                format!(
                    "{:>9}   by SIGURG, {} at stack checks",
                    s.preemptions, s.cooperative_preemptions
                ),
            );
            line(
                "SIGURG",
                if exact {
                    format!(
                        "{:>9}   signals: {} preempted, {} stopped for GC, {} found nothing",
                        s.sigurg_signals, s.preemptions, s.gc_suspensions, s.signals_without_effect
                    )
                } else {
                    format!(
                        "{:>9}   signals: {} preempted, {} stopped for GC (outcomes are seen in \
                         the windows only)",
                        s.sigurg_signals, s.preemptions, s.gc_suspensions
                    )
                },
            );
        }
        out.push_str(&format!("{:<13}{:>9}\n", "dropped", s.dropped));
        out.push_str(&warnings(s));
        out.push_str(&histogram_text(
            "run-queue latency",
            &s.runq_latency_histogram,
        ));
        out.push_str(&histogram_text("run slice length", &s.run_slice_histogram));
        out.push_str(&goroutine_table(s, whole_run));
        out
    }
}

/// What may make the numbers wrong or incomplete, one WARNING line each.
fn warnings(s: &Stats) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<13}{value}\n"));
    };
    if s.lost_latency_samples + s.lost_goroutine_totals > 0 {
        line(
            "WARNING",
            format!(
                "more goroutines than the kernel maps hold ({}): {} run-queue latency or \
                     blocked-time samples and {} goroutines' totals lost",
                gobpf_sched_common::MAX_GOROUTINES,
                s.lost_latency_samples,
                s.lost_goroutine_totals
            ),
        );
    }
    if s.offset_mismatches > 0 || s.read_errors > 0 {
        line(
            "WARNING",
            format!(
                "{} of {} offset checks failed, {} memory reads failed: numbers may be wrong",
                s.offset_mismatches, s.offset_checks, s.read_errors
            ),
        );
    }
    out
}

/// The busiest goroutines; with `whole_run`, the run-queue latency histograms of
/// the first few too.
fn goroutine_table(s: &Stats, whole_run: bool) -> String {
    let mut out = String::new();
    if !s.top_goroutines.is_empty() {
        out.push_str(&format!(
            "{:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>10} {:>8}  {}\n",
            "GOID",
            "RUN",
            "RUNQ WAIT",
            "RUNQ P99<",
            "RUNS",
            "PARKS",
            "SYSCALLS",
            "IN SYSCALL",
            "PREEMPTS",
            "STARTED AS"
        ));
        for row in &s.top_goroutines {
            let g = &row.totals;
            out.push_str(&format!(
                "{:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>10} {:>8}  {}\n",
                row.goid,
                duration(g.run_ns),
                duration(g.runq_wait_ns),
                p99_or_dash(&row.runq_latency_histogram),
                g.runs,
                g.parks,
                g.syscalls,
                duration(g.syscall_ns),
                g.preemptions,
                row.start_function.as_deref().unwrap_or("?")
            ));
        }
    }
    if whole_run {
        for row in s.top_goroutines.iter().take(HISTOGRAMS_OF_TOP) {
            out.push_str(&histogram_text(
                &format!("goid {} run-queue latency", row.goid),
                &row.runq_latency_histogram,
            ));
        }
    }
    out
}

/// The counts of transitions that windows make estimates of, as rates.
fn estimated_rates(cost: &ProbeCost, s: &Stats) -> Vec<(&'static str, f64)> {
    [
        ("schedule", s.schedule),
        ("run_slices", s.run_slices),
        ("gopark", s.gopark_total),
        ("syscalls", s.syscalls),
        ("goroutines_created", s.goroutines_created),
        ("goroutines_exited", s.goroutines_exited),
    ]
    .into_iter()
    .filter_map(|(name, count)| Some((name, cost.rate(count)?)))
    .collect()
}

/// The cost object of the JSON lines: coverage, cost, and (below full
/// coverage) the transition counts as estimated rates.
fn cost_json(cost: &ProbeCost, s: &Stats) -> serde_json::Value {
    let mut value = serde_json::to_value(cost).unwrap_or_default();
    value["exact_counts"] = json!(cost.exact());
    if !cost.exact() {
        let rates: serde_json::Map<String, serde_json::Value> = estimated_rates(cost, s)
            .into_iter()
            .map(|(name, rate)| (name.to_owned(), json!(rate)))
            .collect();
        value["estimated_rates_per_second"] = json!(rates);
    }
    value
}

/// What watching costs: coverage, the estimate against the budget, and the
/// counts as rates when windows cover only part of the span.
fn cost_text(cost: &ProbeCost, s: &Stats) -> String {
    let percent = |share: f64| format!("{:.2}%", share * 100.0);
    let overhead = cost.estimated_overhead.map_or_else(
        || "- (no CPU time measured)".to_owned(),
        |share| format!("≈{} of the target's CPU", percent(share)),
    );
    let budget = cost.budget.map(percent).unwrap_or_default();
    let mut out = format!(
        "{:<13}{:>9}   hits × {} ({} trap{}) {overhead}; {}\n",
        "probe cost",
        cost.probe_hits,
        duration(cost.per_hit_ns as u64),
        duration(cost.trap_ns as u64),
        cost.program_ns
            .map(|ns| format!(" + {} program", duration(ns as u64)))
            .unwrap_or_default(),
        match cost.mode {
            "exact" => format!("exact mode, probes always on (budget would be {budget})"),
            _ => format!(
                "budget {budget}: probes on {} of the time, {} windows{}",
                percent(cost.coverage),
                cost.windows,
                cost.window_open_ns
                    .map(|ns| format!(" (the last opened in {})", duration(ns)))
                    .unwrap_or_default()
            ),
        }
    );
    if cost.mode == "exact" && cost.over_budget() {
        out.push_str(&format!(
            "{:<13}the probes cost more than {budget} of the target's CPU (--exact keeps them on)\n",
            "WARNING"
        ));
    }
    if !cost.exact() {
        let rates: Vec<String> = estimated_rates(cost, s)
            .into_iter()
            .map(|(name, rate)| format!("{name} {rate:.0}/s"))
            .collect();
        out.push_str(&format!(
            "{:<13}{:>9}   counts above are from the windows only{}\n",
            "coverage",
            percent(cost.coverage),
            if rates.is_empty() {
                String::new()
            } else {
                format!("; estimated rates: {}", rates.join(", "))
            }
        ));
    }
    out
}

/// What the runtime counted itself over the span: no probe involved.
fn runtime_text(r: &RuntimeActivity, go_version: &str) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("{label:<13}{value}\n"));
    };
    let per_second = |count: u64| {
        if r.span_ns == 0 {
            String::new()
        } else {
            format!(" ({:.0}/s)", count as f64 * 1e9 / r.span_ns as f64)
        }
    };
    let kept = |name: &str, value: Option<String>| {
        value.unwrap_or_else(|| {
            r.not_kept
                .get(name)
                .cloned()
                .unwrap_or_else(|| format!("not kept by {go_version}"))
        })
    };
    let per_p: Vec<String> = r
        .per_p
        .iter()
        .map(|p| format!("{}/{}", p.run_slices, p.syscalls))
        .collect();
    line(
        "P ticks",
        format!(
            "{:>9}   time slices{}, {} syscalls{}; per P (slices/syscalls) [{}]",
            r.run_slices,
            per_second(r.run_slices),
            r.syscalls,
            per_second(r.syscalls),
            per_p.join(" ")
        ),
    );
    let pauses = |h: &Option<RuntimeHistogram>, name: &str| {
        kept(
            name,
            h.as_ref()
                .map(|h| format!("{} (p99 < {})", h.count, p99_text(h.p99_ns))),
        )
    };
    line(
        "runtime",
        format!(
            "{:>9}   GC cycles; goroutines created {}; mutex wait {}; STW pauses: GC {}, other {}",
            kept("gc_cycles", r.gc_cycles.map(|c| c.to_string())),
            kept(
                "goroutines_created",
                r.goroutines_created.map(|c| c.to_string())
            ),
            kept("mutex_wait_ns", r.mutex_wait_ns.map(duration)),
            pauses(&r.stw_gc_pauses, "stw_gc_pauses"),
            pauses(&r.stw_other_pauses, "stw_other_pauses"),
        ),
    );
    match &r.run_queue_latency {
        Some(h) => {
            line(
                "runq (Go)",
                format!(
                    "{:>9}   run-queue latencies the runtime sampled (~1 in 8): p50 < {}, p99 < {}",
                    h.count,
                    p99_text(h.p50_ns),
                    p99_text(h.p99_ns)
                ),
            );
            out.push_str(&histogram_text(
                "run-queue latency (Go)",
                &by_power_of_two(&h.buckets),
            ));
        }
        None => line("runq (Go)", kept("run_queue_latency", None::<String>)),
    }
    out
}

fn p99_text(bound: Option<u64>) -> String {
    bound.map_or_else(|| "-".to_owned(), duration)
}

/// The goroutine census: by status, by wait reason, the longest waiters.
fn census_text(c: &Census, every: u64) -> String {
    let mut out = String::new();
    let statuses: Vec<String> = by_value_descending(&c.by_status)
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    out.push_str(&format!(
        "{:<13}{:>9}   live: {} of the program ({}), {} of the runtime{}{}\n",
        "goroutines",
        c.goroutines,
        c.user_goroutines,
        statuses.join(", "),
        c.system_goroutines,
        if c.approximate {
            " (approximate: changed while read)"
        } else {
            ""
        },
        if every > 1 {
            format!(
                "; read every {every} intervals (a read takes {})",
                duration(c.read_ns)
            )
        } else {
            String::new()
        }
    ));
    let reasons: Vec<String> = by_value_descending(&c.by_wait_reason)
        .iter()
        .map(|(name, count)| format!("{name} {count}"))
        .collect();
    out.push_str(&format!(
        "{:<13}{:>9}   {}\n",
        "waiting",
        "",
        reasons.join(", ")
    ));
    if !c.longest_waiters.is_empty() {
        out.push_str(&format!(
            "{:>10} {:>12}  {:<24}  {}\n",
            "GOID", "WAITING ≥", "REASON", "STARTED AS"
        ));
        for w in &c.longest_waiters {
            out.push_str(&format!(
                "{:>10} {:>12}  {:<24}  {}\n",
                w.goid,
                duration(w.waiting_ns),
                w.reason,
                w.start_function.as_deref().unwrap_or("?")
            ));
        }
    }
    out
}

/// The most names a line of shares lists.
const TEXT_SHARES: usize = 10;

/// The CPU samples: by who held the CPU, by function, and the blame view.
fn cpu_text(c: &CpuView) -> String {
    let list = |shares: &[Share]| -> String {
        shares
            .iter()
            .take(TEXT_SHARES)
            .map(|s| format!("{} {:.0}%", s.name, s.share * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if c.samples == 0 {
        return format!(
            "{:<13}{:>9}   no sample: the target did not run on a CPU\n",
            "cpu", 0
        );
    }
    let mut out = format!(
        "{:<13}{:>9}   samples ({} of CPU at {} Hz; {:.0}% holding a P, {:.0}% in the kernel); \
         GC {:.1}%, runtime {:.1}%\n",
        "cpu",
        c.samples,
        duration(c.cpu_ns),
        1_000_000_000 / c.period_ns.max(1),
        percent(c.holding_p, c.samples),
        percent(c.in_kernel, c.samples),
        c.gc_share * 100.0,
        c.runtime_share * 100.0,
    );
    out.push_str(&format!(
        "{:<13}{:>9}   {}\n",
        "  by start",
        "",
        list(&c.by_start_function)
    ));
    out.push_str(&format!(
        "{:<13}{:>9}   {}\n",
        "  flat",
        "",
        list(&c.by_function_flat)
    ));
    out.push_str(&format!(
        "{:<13}{:>9}   {}\n",
        "  cumulative",
        "",
        list(&c.by_function_cumulative)
    ));
    if let Some(cost) = &c.sampler_cost {
        out.push_str(&format!(
            "{:<13}{:>9}   runs of the sampling program on all CPUs, {} each (its own run \
             time, by the kernel)\n",
            "  sampler",
            cost.runs,
            duration(cost.ns_per_run as u64)
        ));
    }
    let blame = &c.blame;
    if blame.samples == 0 {
        out.push_str(&format!(
            "{:<13}{:>9}   no goroutine waited to run at any sample\n",
            "blame", 0
        ));
    } else {
        out.push_str(&format!(
            "{:<13}{:>9}   samples while goroutines waited to run ({:.1} on average); the Ps \
             went to: {}\n",
            "blame",
            blame.samples,
            blame.mean_waiting,
            list(&blame.by_start_function)
        ));
        out.push_str(&format!(
            "{:<13}{:>9}   {}\n",
            "  running",
            "",
            list(&blame.by_function)
        ));
    }
    if let Some(exact) = &blame.exact {
        let shares: Vec<String> = exact
            .by_start_function
            .iter()
            .take(TEXT_SHARES)
            .map(|s| format!("{} {:.0}%", s.name, s.share * 100.0))
            .collect();
        out.push_str(&format!(
            "{:<13}{:>9}   run-queue waits seen by the probes ({} in all); the Ps went to: {}\n",
            "  exact",
            exact.waits,
            duration(exact.waited_ns),
            if shares.is_empty() {
                "-".to_owned()
            } else {
                shares.join(", ")
            }
        ));
    }
    out
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The scheduler state in schedtrace's terms.
fn sched_text(state: &SchedState) -> String {
    let local: Vec<String> = state.procs.iter().map(|p| p.queued().to_string()).collect();
    format!(
        "{:<13}gomaxprocs={} idleprocs={} threads={} spinningthreads={} idlethreads={} \
         runqueue={} [{}]{}\n",
        "sched",
        state.gomaxprocs,
        state.idle_procs,
        state.threads,
        state.spinning_threads,
        state.idle_threads,
        state.global_runq,
        local.join(" "),
        if state.approximate {
            " (approximate: changed while read)"
        } else {
            ""
        }
    )
}

/// What follows an event's name.
enum Detail {
    Duration(u64),
    Text(String),
    None,
}

/// A log2 histogram as libbpf-tools' runqlat prints one.
fn histogram_text(title: &str, buckets: &[Bucket]) -> String {
    let Some(max) = buckets.iter().map(|b| b.count).max() else {
        return String::new();
    };
    let mut out = format!("{:>13}{:>24} {:>8}   distribution\n", "", title, "count");
    for bucket in buckets {
        let stars = (bucket.count * 30).div_ceil(max) as usize;
        out.push_str(&format!(
            "{:>13}{:>11} -> {:<10} {:>8}   |{:<30}|\n",
            "",
            duration(bucket.from_ns),
            duration(bucket.to_ns),
            bucket.count,
            "*".repeat(stars)
        ));
    }
    out
}
