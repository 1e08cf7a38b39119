//! `--prometheus ADDR`: serves `/metrics` in the OpenMetrics text format
//! (prometheus-client), for Prometheus to scrape and Grafana to draw.
//!
//! Counters and histograms of the probes are the session's totals since attach,
//! refreshed every `--interval`, with what the probes cost (last interval) and
//! the last goroutine census. What the target's memory holds is read at each
//! scrape, so a 10 ms scrape sees 10 ms changes, as gse shows them: the
//! scheduler-state gauges (run queues, idle Ps, threads) and the runtime's own
//! counters, cumulative since the process started (`gobpf_sched_go_*`, the Ps'
//! ticks), exported only where the Go version keeps them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use axum::{
    Router,
    http::{HeaderMap, header},
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric, NoLabelSet, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    outputs::Report,
    sources::runtime_memory::{self, SchedLayout},
    stats::{
        aggregate::{Bucket, Stats},
        census::Census,
        cost::ProbeCost,
        runtime_histogram::{HistogramLayout, RuntimeCounts},
        sched::{P_STATUSES, RuntimeCounters, SchedState},
    },
    target::labels::ProcessLabels,
};

/// Histogram bucket bounds: log2 steps of the kernel's histograms, 1 µs to ~17 s.
const BUCKET_SLOTS: std::ops::RangeInclusive<u32> = 9..=33;

/// What the exporter shows; the session updates it.
#[derive(Debug, Default)]
pub struct Exported {
    /// Whole-run totals since attach (restarting at each exec followed).
    pub totals: Stats,
    /// Execs of the target the session followed.
    pub execs_followed: u64,
    /// What the process is (the labels of `gobpf_sched_process_info`).
    pub process: Option<ProcessLabels>,
    /// What the probes cost over the last interval (coverage, estimate) ...
    pub cost: Option<ProbeCost>,
    /// ... and since attach: time the transition probes were attached, hits.
    pub probes_on_ns: u64,
    pub probe_hits: u64,
    /// The last goroutine census (not taken every interval when slow) ...
    pub census: Option<Census>,
    /// ... and every status and wait reason a census saw, shown at 0 when no
    /// goroutine has it now, so that the series stay put. Bounded by the
    /// runtime's statuses and wait reasons.
    pub statuses_seen: BTreeSet<String>,
    pub reasons_seen: BTreeSet<String>,
    /// CPU samples since attach: all, by who held the CPU, of GC work; and
    /// the goroutines waiting at them, by who held the P (counters).
    pub cpu: Option<CpuTotals>,
}

#[derive(Debug, Default, Clone)]
pub struct CpuTotals {
    pub samples: u64,
    pub period_ns: u64,
    pub gc_samples: u64,
    pub by_start_function: BTreeMap<String, u64>,
    pub waiting_by_start_function: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct SchedulerCollector {
    exported: Arc<Mutex<Exported>>,
    /// Where to read the scheduler state live, when the binary allows it.
    live: Option<(u32, SchedLayout)>,
    /// Every series carries the process's labels ([`PROCESS_LABELS`]):
    /// `gobpf_sched_process_info` then leaves them out.
    labelled: bool,
}

/// The labels of every series when the server serves several processes
/// (`--all`): per process, never per goroutine.
const PROCESS_LABELS: [&str; 3] = ["pid", "comm", "container_id"];

/// The `/metrics` server and the processes it serves.
#[derive(Clone)]
pub struct MetricsServer {
    served: Arc<Mutex<Vec<(u32, Registry)>>>,
    pub address: SocketAddr,
    /// Whether each process's series carry its labels (several processes).
    labelled: bool,
}

/// One process's metrics on a server; dropping it takes them off.
pub struct Exporter {
    pub exported: Arc<Mutex<Exported>>,
    pub address: SocketAddr,
    server: MetricsServer,
    pid: u32,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Ok(mut served) = self.server.served.lock() {
            served.retain(|(pid, _)| *pid != self.pid);
        }
    }
}

impl Exporter {
    /// Binds `address` and serves `/metrics` of one process (without
    /// labels) on the current tokio runtime.
    pub async fn start(
        address: SocketAddr,
        labels: &ProcessLabels,
        live: Option<(u32, SchedLayout)>,
    ) -> Result<Self> {
        Ok(MetricsServer::start(address, false)
            .await?
            .serve(labels, live))
    }
}

impl MetricsServer {
    /// Binds `address` and serves `/metrics` on the current tokio runtime;
    /// `labelled`: the series of each process carry its labels.
    pub async fn start(address: SocketAddr, labelled: bool) -> Result<Self> {
        let served: Arc<Mutex<Vec<(u32, Registry)>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for --prometheus"))?;
        let address = listener.local_addr()?;
        let registries = served.clone();
        let app = Router::new().route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let registries = registries.clone();
                async move {
                    let body = {
                        let registries = registries.lock().unwrap_or_else(|e| e.into_inner());
                        let bodies: Vec<String> = registries
                            .iter()
                            .map(|(_, registry)| {
                                let mut body = String::new();
                                let _ = encode(&mut body, registry);
                                body
                            })
                            .collect();
                        merge_families(&bodies)
                    };
                    // Prometheus asks for OpenMetrics; curl, promtool and older
                    // scrapers get the classic text format.
                    let wants_openmetrics = headers
                        .get(header::ACCEPT)
                        .and_then(|accept| accept.to_str().ok())
                        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
                    if wants_openmetrics {
                        ([(header::CONTENT_TYPE, OPENMETRICS)], body)
                    } else {
                        ([(header::CONTENT_TYPE, CLASSIC_TEXT)], classic_text(&body))
                    }
                }
            }),
        );
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("gobpf-sched: the metrics server stopped: {error}");
            }
        });
        Ok(Self {
            served,
            address,
            labelled,
        })
    }

    /// Serves the metrics of the process of `labels` from now on, until the
    /// returned exporter is dropped.
    pub fn serve(&self, labels: &ProcessLabels, live: Option<(u32, SchedLayout)>) -> Exporter {
        let exported = Arc::new(Mutex::new(Exported {
            process: Some(labels.clone()),
            ..Exported::default()
        }));
        let mut registry = if self.labelled {
            let values = [
                labels.pid.to_string(),
                labels.comm.clone(),
                labels.container_id.clone().unwrap_or_default(),
            ];
            Registry::with_labels(
                PROCESS_LABELS
                    .into_iter()
                    .zip(values)
                    .map(|(name, value)| (name.into(), value.into())),
            )
        } else {
            Registry::default()
        };
        registry.register_collector(Box::new(SchedulerCollector {
            exported: exported.clone(),
            live,
            labelled: self.labelled,
        }));
        if let Ok(mut served) = self.served.lock() {
            served.push((labels.pid, registry));
        }
        Exporter {
            exported,
            address: self.address,
            server: self.clone(),
            pid: labels.pid,
        }
    }
}

/// One exposition of several: the samples of each metric family together
/// under one descriptor (OpenMetrics wants a family's samples in one place).
fn merge_families(bodies: &[String]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: HashMap<&str, (Vec<&str>, Vec<&str>)> = HashMap::new();
    for body in bodies {
        let mut family = "";
        for line in body.lines() {
            if line == "# EOF" {
                continue;
            }
            let descriptor = ["# HELP ", "# TYPE ", "# UNIT "]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix));
            if let Some(rest) = descriptor {
                family = rest.split(' ').next().unwrap_or_default();
                let (descriptors, _) = families.entry(family).or_insert_with(|| {
                    order.push(family);
                    Default::default()
                });
                if !descriptors.contains(&line) {
                    descriptors.push(line);
                }
            } else if let Some((_, samples)) = families.get_mut(family) {
                samples.push(line);
            }
        }
    }
    let mut merged = String::new();
    for family in order {
        let (descriptors, samples) = &families[family];
        for line in descriptors.iter().chain(samples) {
            merged.push_str(line);
            merged.push('\n');
        }
    }
    merged.push_str("# EOF\n");
    merged
}

impl Exporter {
    pub fn set_execs_followed(&self, execs: u64) {
        if let Ok(mut exported) = self.exported.lock() {
            exported.execs_followed = execs;
        }
    }

    /// One interval's report: the whole-run totals, the cost, the census.
    pub fn update(&self, report: &Report<'_>) {
        let Ok(mut exported) = self.exported.lock() else {
            return;
        };
        exported.totals = report.totals.clone();
        exported.cost = Some(report.cost.clone());
        exported.probes_on_ns += report.cost.probes_on_ns;
        exported.probe_hits += report.cost.probe_hits;
        if let Some(cpu) = report.cpu {
            let totals = exported.cpu.get_or_insert_with(CpuTotals::default);
            totals.samples += cpu.samples;
            totals.period_ns = cpu.period_ns;
            totals.gc_samples += cpu.gc_samples;
            for share in &cpu.by_start_function {
                *totals
                    .by_start_function
                    .entry(share.name.clone())
                    .or_default() += share.count;
            }
            for share in &cpu.blame.by_start_function {
                *totals
                    .waiting_by_start_function
                    .entry(share.name.clone())
                    .or_default() += share.count;
            }
        }
        if let Some(census) = report.census {
            exported
                .statuses_seen
                .extend(census.by_status.keys().cloned());
            exported
                .reasons_seen
                .extend(census.by_wait_reason.keys().cloned());
            exported.census = Some(census.clone());
        }
    }
}

const PREFIX: &str = "gobpf_sched_";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, which
/// prometheus-client does not write: a counter's family is named after its
/// `_total` samples there, and `# UNIT` / `# EOF` do not exist.
fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    let metric = encoder.encode_descriptor(&name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    measured_gauge(encoder, name, help, None, value)
}

/// A gauge in `unit` (seconds, ratio), e.g. a share of the last interval.
fn measured_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeGaugeValue,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    let metric = encoder.encode_descriptor(&name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
}

/// A gauge per label value, e.g. goroutines by `state`.
fn labelled_gauge<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a String, u64)>,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    let mut metric = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
    for (value_of_label, value) in values {
        let labels = [(label.to_owned(), value_of_label.clone())];
        ConstGauge::new(value.min(i64::MAX as u64) as i64)
            .encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A log2 histogram (non-empty buckets, counts per bucket) as a Prometheus
/// histogram with fixed bounds (1 µs to ~17 s, then +Inf), in seconds.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    buckets: &[Bucket],
    sum_ns: u64,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    // prometheus-client takes the count of each bucket and sums them up itself.
    let mut per_bucket = Vec::new();
    let mut lower_ns = 0;
    for slot in BUCKET_SLOTS {
        let bound_ns = 1u64 << (slot + 1);
        let in_bucket = buckets
            .iter()
            .filter(|b| b.to_ns > lower_ns && b.to_ns <= bound_ns)
            .map(|b| b.count)
            .sum::<u64>();
        per_bucket.push((bound_ns as f64 / 1e9, in_bucket));
        lower_ns = bound_ns;
    }
    let above: u64 = buckets
        .iter()
        .filter(|b| b.to_ns > lower_ns)
        .map(|b| b.count)
        .sum();
    per_bucket.push((f64::INFINITY, above));
    let count: u64 = buckets.iter().map(|b| b.count).sum();
    let mut metric =
        encoder.encode_descriptor(&name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(sum_ns as f64 / 1e9, count, &per_bucket, None)
}

/// One of the runtime's own time histograms (`counts`, cumulative since the
/// process started) as a Prometheus histogram in seconds, with the runtime's
/// bucket bounds as `le`, as `runtime/metrics` reports them (the buckets are
/// `[from, to)` there, `le` is inclusive: a value exactly on a bound is one
/// bucket higher in the runtime's). Go 1.19's 16 sub-buckets per power of two
/// are merged 4 by 4, to the resolution of later versions: 721 series would
/// be 721 series per scrape, and the bounds kept are still the runtime's.
/// Negative durations (the runtime's underflow bucket) are below every bound:
/// counted in the first bucket. The runtime keeps no sum: `_sum` is estimated
/// with each bucket's midpoint (the lower bound of the unbounded last one).
fn runtime_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counts: &RuntimeCounts,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    let bounds = counts.layout.lower_bounds_ns();
    let merged = match counts.layout {
        HistogramLayout::SuperBuckets => 4,
        HistogramLayout::SubBucketBits2 => 1,
    };
    let mut per_bucket = Vec::with_capacity(bounds.len() / merged + 1);
    // The underflow bucket, then bucket i: [bounds[i - 1], bounds[i]).
    let mut pending = counts.counts.first().copied().unwrap_or(0);
    let mut sum_ns = 0.0;
    for (i, (&count, &from_ns)) in counts.counts.iter().skip(1).zip(&bounds).enumerate() {
        let to_ns = bounds.get(i + 1).copied();
        pending += count;
        sum_ns += count as f64 * to_ns.map_or(from_ns as f64, |to| (from_ns + to) as f64 / 2.0);
        match to_ns {
            Some(to) if (i + 1) % merged == 0 => {
                per_bucket.push((to as f64 / 1e9, pending));
                pending = 0;
            }
            Some(_) => {}
            // prometheus-client writes f64::MAX as +Inf.
            None => per_bucket.push((f64::MAX, pending)),
        }
    }
    let count = counts.counts.iter().sum();
    let mut metric =
        encoder.encode_descriptor(&name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    metric.encode_histogram::<NoLabelSet>(sum_ns / 1e9, count, &per_bucket, None)
}

/// A counter per P, labelled `p`.
fn per_p_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (i32, u32)>,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    let mut metric = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
    for (p, value) in values {
        let labels = [("p".to_owned(), p.to_string())];
        ConstCounter::new(f64::from(value)).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter per label value, e.g. parks by `reason`.
fn labelled_counter<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    values: impl Iterator<Item = (&'a String, f64)>,
) -> std::fmt::Result {
    let name = format!("{PREFIX}{name}");
    let mut metric = encoder.encode_descriptor(&name, help, unit, MetricType::Counter)?;
    for (value_of_label, value) in values {
        let labels = [(label.to_owned(), value_of_label.clone())];
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SchedulerCollector {
    // A flat list, one descriptor per metric in the README's order: long, but
    // each metric reads in one place.
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let (totals, execs_followed, cost, census, cpu, process) = match self.exported.lock() {
            Ok(exported) => (
                exported.totals.clone(),
                exported.execs_followed,
                exported.cost.clone().map(|last| {
                    let run = RunCost {
                        probes_on_ns: exported.probes_on_ns,
                        probe_hits: exported.probe_hits,
                    };
                    (last, run)
                }),
                exported.census.clone().map(|census| {
                    let seen = (
                        exported.statuses_seen.clone(),
                        exported.reasons_seen.clone(),
                    );
                    (census, seen)
                }),
                exported.cpu.clone(),
                exported.process.clone(),
            ),
            Err(_) => return Ok(()),
        };
        let e = &mut encoder;
        let s = &totals;
        let secs = |ns: u64| ns as f64 / 1e9;
        counter(
            e,
            "schedule",
            "runtime.schedule calls (scheduling rounds)",
            None,
            s.schedule as f64,
        )?;
        counter(
            e,
            "run_slices",
            "Goroutine run slices started (runnable -> running)",
            None,
            s.run_slices as f64,
        )?;
        counter(
            e,
            "run",
            "Time goroutines ran, in finished run slices",
            Some(&Unit::Seconds),
            secs(s.run_ns),
        )?;
        labelled_counter(
            e,
            "parks",
            "Goroutines parked (running -> waiting), by wait reason",
            None,
            "reason",
            s.gopark.iter().map(|(reason, n)| (reason, *n as f64)),
        )?;
        labelled_counter(
            e,
            "blocked",
            "Time goroutines were blocked, by wait reason (waits that ended)",
            Some(&Unit::Seconds),
            "reason",
            s.blocked_ns.iter().map(|(reason, ns)| (reason, secs(*ns))),
        )?;
        counter(e, "syscalls", "Syscalls returned", None, s.syscalls as f64)?;
        counter(
            e,
            "syscall",
            "Time in those syscalls",
            Some(&Unit::Seconds),
            secs(s.syscall_ns),
        )?;
        counter(
            e,
            "goroutines_created",
            "Goroutines created",
            None,
            s.goroutines_created as f64,
        )?;
        counter(
            e,
            "goroutines_exited",
            "Goroutines exited",
            None,
            s.goroutines_exited as f64,
        )?;
        counter(
            e,
            "preemptions",
            "Goroutines preempted by a SIGURG (async preemption)",
            None,
            s.preemptions as f64,
        )?;
        counter(
            e,
            "cooperative_preemptions",
            "Goroutines preempted at a stack check, without a signal",
            None,
            s.cooperative_preemptions as f64,
        )?;
        counter(
            e,
            "sigurg_signals",
            "SIGURG preemption requests the runtime sent its threads",
            None,
            s.sigurg_signals as f64,
        )?;
        counter(
            e,
            "sigurg_without_effect",
            "SIGURG signals that found nothing to preempt",
            None,
            s.signals_without_effect as f64,
        )?;
        counter(
            e,
            "gc_suspensions",
            "Goroutines a SIGURG stopped for the GC's stack scan",
            None,
            s.gc_suspensions as f64,
        )?;
        counter(
            e,
            "dropped_events",
            "Ring-buffer records lost",
            None,
            s.dropped as f64,
        )?;
        counter(
            e,
            "execs_followed",
            "Execs of the target the session followed (the other counters restart then)",
            None,
            execs_followed as f64,
        )?;
        counter(
            e,
            "lost_latency_samples",
            "Run-queue latency or blocked-time samples lost: the kernel map was full",
            None,
            s.lost_latency_samples as f64,
        )?;
        counter(
            e,
            "lost_goroutines",
            "Goroutines whose totals were not kept: the kernel map was full",
            None,
            s.lost_goroutine_totals as f64,
        )?;
        histogram(
            e,
            "runq_latency",
            "Run-queue latency: runnable -> running",
            &s.runq_latency_histogram,
            s.runq_latency_ns,
        )?;
        histogram(
            e,
            "run_slice",
            "On-CPU run-slice length",
            &s.run_slice_histogram,
            s.run_ns,
        )?;
        if let Some((last, run)) = &cost {
            encode_cost(e, last, run)?;
        }
        if let Some((census, (statuses, reasons))) = &census {
            encode_census(e, census, statuses, reasons)?;
        }
        if let Some(cpu) = &cpu {
            encode_cpu(e, cpu)?;
        }
        if let Some(process) = &process {
            encode_process(e, process, self.labelled)?;
        }

        let Some((pid, layout)) = &self.live else {
            return Ok(());
        };
        let Ok(state) = runtime_memory::read(*pid, layout) else {
            return Ok(()); // the target is gone: no gauges rather than stale ones
        };
        encode_sched_state(e, &state)?;
        encode_runtime_counters(e, &state)
    }
}

/// The probes' cost since attach.
struct RunCost {
    probes_on_ns: u64,
    probe_hits: u64,
}

/// What watching costs the target: the last interval's shares, and totals.
fn encode_cost(e: &mut DescriptorEncoder, last: &ProbeCost, run: &RunCost) -> std::fmt::Result {
    let ratio = Unit::Other("ratio".to_owned());
    measured_gauge(
        e,
        "probe_coverage",
        "Share of the last interval the transition probes were attached \
         (below 1, the transition counters cover the windows only)",
        Some(&ratio),
        last.coverage,
    )?;
    if let Some(overhead) = last.estimated_overhead {
        measured_gauge(
            e,
            "probe_estimated_overhead",
            "Estimated share of the target's CPU time spent in the probes, last interval",
            Some(&ratio),
            overhead,
        )?;
    }
    if let Some(budget) = last.budget {
        measured_gauge(
            e,
            "overhead_budget",
            "Share of the target's CPU time the probes may cost (--overhead-budget)",
            Some(&ratio),
            budget,
        )?;
    }
    measured_gauge(
        e,
        "probe_hit_cost",
        "Cost of one probe hit: the trap measured at start plus the programs' run time",
        Some(&Unit::Seconds),
        last.per_hit_ns / 1e9,
    )?;
    counter(
        e,
        "probe_attached",
        "Time the transition probes were attached",
        Some(&Unit::Seconds),
        run.probes_on_ns as f64 / 1e9,
    )?;
    counter(
        e,
        "probe_hits",
        "Probe hits (the always-on preemption probes included)",
        None,
        run.probe_hits as f64,
    )?;
    counter(
        e,
        "probe_windows",
        "Windows the transition probes were attached in (budget mode)",
        None,
        last.windows as f64,
    )
}

/// The last goroutine census: the program's goroutines by state and the
/// waiting ones by reason (every label seen so far, 0 included), the runtime's
/// own, and the longest wait. Never per goroutine.
fn encode_census(
    e: &mut DescriptorEncoder,
    census: &Census,
    statuses: &BTreeSet<String>,
    reasons: &BTreeSet<String>,
) -> std::fmt::Result {
    let now = |map: &std::collections::BTreeMap<String, u64>, key: &String| {
        map.get(key).copied().unwrap_or(0)
    };
    labelled_gauge(
        e,
        "goroutines",
        "The program's live goroutines by state, at the last census \
         (runtime.NumGoroutine is their sum)",
        "state",
        statuses.iter().map(|s| (s, now(&census.by_status, s))),
    )?;
    labelled_gauge(
        e,
        "goroutines_waiting",
        "The program's waiting goroutines by wait reason, at the last census",
        "reason",
        reasons.iter().map(|r| (r, now(&census.by_wait_reason, r))),
    )?;
    gauge(
        e,
        "runtime_goroutines",
        "The runtime's own live goroutines (GC workers, sweeper, ...), at the last census",
        census.system_goroutines.min(i64::MAX as u64) as i64,
    )?;
    measured_gauge(
        e,
        "goroutine_longest_wait",
        "How long the program's longest-waiting goroutine has waited, at least, at the \
         last census",
        Some(&Unit::Seconds),
        census
            .longest_waiters
            .first()
            .map_or(0.0, |w| w.waiting_ns as f64 / 1e9),
    )
}

/// What the process is, as labels of a constant 1 (join on `pid` for them).
/// `labelled`: the series carry `PROCESS_LABELS` already.
fn encode_process(
    e: &mut DescriptorEncoder,
    process: &ProcessLabels,
    labelled: bool,
) -> std::fmt::Result {
    let name = format!("{PREFIX}process_info");
    let mut metric = e.encode_descriptor(
        &name,
        "The watched process: pids (here and inside its pid namespace), command, executable, \
         Go version, container and Kubernetes pod (from its cgroup path); empty when not known",
        None,
        MetricType::Gauge,
    )?;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    let labels = [
        ("pid".to_owned(), process.pid.to_string()),
        (
            "pid_in_namespace".to_owned(),
            process
                .pid_in_namespace
                .map_or(String::new(), |p| p.to_string()),
        ),
        ("comm".to_owned(), process.comm.clone()),
        ("executable".to_owned(), process.executable.clone()),
        ("go_version".to_owned(), process.go_version.clone()),
        (
            "container_runtime".to_owned(),
            text(&process.container_runtime),
        ),
        ("container_id".to_owned(), text(&process.container_id)),
        ("pod_uid".to_owned(), text(&process.pod_uid)),
    ];
    let labels: Vec<(String, String)> = labels
        .into_iter()
        .filter(|(name, _)| !labelled || !PROCESS_LABELS.contains(&name.as_str()))
        .collect();
    ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)
}

/// The CPU samples since attach: by who held the CPU (a start function, or
/// the runtime without a goroutine), GC work, and who held the Ps while
/// goroutines waited. Labels are start functions: bounded by the program's
/// code, never per goroutine.
fn encode_cpu(e: &mut DescriptorEncoder, cpu: &CpuTotals) -> std::fmt::Result {
    let seconds = |samples: u64| samples as f64 * cpu.period_ns as f64 / 1e9;
    counter(
        e,
        "cpu_sampled",
        "The target's CPU time by the CPU samples (samples x period)",
        Some(&Unit::Seconds),
        seconds(cpu.samples),
    )?;
    counter(
        e,
        "cpu_gc_sampled",
        "Of it, garbage-collector work (a GC function on the sampled stack)",
        Some(&Unit::Seconds),
        seconds(cpu.gc_samples),
    )?;
    labelled_counter(
        e,
        "cpu_by_start_function",
        "The target's CPU time by the CPU samples, by the start function of the goroutine \
         that ran (or what ran without one)",
        Some(&Unit::Seconds),
        "start_function",
        cpu.by_start_function
            .iter()
            .map(|(name, &n)| (name, seconds(n))),
    )?;
    labelled_counter(
        e,
        "run_queue_waiting_by_holder",
        "Goroutines waiting in a run queue, summed over the CPU samples, by the start \
         function of the goroutine holding the P: who held the Ps while others waited \
         (divide by the sum for shares)",
        None,
        "start_function",
        cpu.waiting_by_start_function
            .iter()
            .map(|(name, &n)| (name, n as f64)),
    )
}

/// The runtime's own counters, cumulative since the process started, read at
/// the scrape; those the Go version does not keep are left out.
fn encode_runtime_counters(e: &mut DescriptorEncoder, state: &SchedState) -> std::fmt::Result {
    let RuntimeCounters {
        time_to_run,
        stw_gc,
        stw_other,
        mutex_wait_ns,
        goroutines_created,
        gc_cycles,
    } = &state.counters;
    if let Some(counts) = time_to_run {
        runtime_histogram(
            e,
            "go_sched_latencies",
            "Run-queue latency as the runtime samples it (sched.timeToRun, \
             /sched/latencies:seconds), since the process started",
            counts,
        )?;
    }
    // The Ps' ticks are 32-bit and wrap: Prometheus takes a wrap for a
    // counter reset, as it does for a P made again after GOMAXPROCS changed.
    per_p_counter(
        e,
        "p_schedticks",
        "Time slices each P started (its schedtick), since the process started",
        state.procs.iter().map(|p| (p.id, p.schedtick)),
    )?;
    per_p_counter(
        e,
        "p_syscallticks",
        "Syscalls each P's goroutines returned from (its syscalltick), since the process started",
        state.procs.iter().map(|p| (p.id, p.syscalltick)),
    )?;
    if let Some(ns) = mutex_wait_ns {
        counter(
            e,
            "go_mutex_wait",
            "Time goroutines waited on sync.Mutex and sync.RWMutex \
             (/sync/mutex/wait/total:seconds)",
            Some(&Unit::Seconds),
            *ns as f64 / 1e9,
        )?;
    }
    if let Some(cycles) = gc_cycles {
        counter(
            e,
            "go_gc_cycles",
            "GC cycles completed (/gc/cycles/total:gc-cycles)",
            None,
            f64::from(*cycles),
        )?;
    }
    if let Some(created) = goroutines_created {
        counter(
            e,
            "go_goroutines_created",
            "Goroutines created, as the runtime counts them, since the process started",
            None,
            *created as f64,
        )?;
    }
    let pauses: Vec<(String, f64)> = [("gc", stw_gc), ("other", stw_other)]
        .into_iter()
        .filter_map(|(kind, h)| {
            let h = h.as_ref()?;
            Some((kind.to_owned(), h.counts.iter().sum::<u64>() as f64))
        })
        .collect();
    if !pauses.is_empty() {
        labelled_counter(
            e,
            "go_stw_pauses",
            "Stop-the-world pauses, for the GC and for anything else \
             (/sched/pauses/total/{gc,other}:seconds)",
            None,
            "kind",
            pauses.iter().map(|(kind, n)| (kind, *n)),
        )?;
    }
    Ok(())
}

/// The scheduler state, read at the scrape: gauges.
fn encode_sched_state(e: &mut DescriptorEncoder, state: &SchedState) -> std::fmt::Result {
    gauge(
        e,
        "gomaxprocs",
        "Ps (GOMAXPROCS)",
        i64::from(state.gomaxprocs),
    )?;
    gauge(e, "idle_procs", "Idle Ps", i64::from(state.idle_procs))?;
    gauge(
        e,
        "threads",
        "Ms (OS threads) alive",
        state.threads.min(i64::MAX as u64) as i64,
    )?;
    gauge(
        e,
        "spinning_threads",
        "Ms spinning, looking for work",
        i64::from(state.spinning_threads),
    )?;
    gauge(e, "idle_threads", "Idle Ms", i64::from(state.idle_threads))?;
    gauge(
        e,
        "global_runq_length",
        "Goroutines in the global run queue",
        i64::from(state.global_runq),
    )?;
    gauge(
        e,
        "state_approximate",
        "1 when the last read of the scheduler state was torn (values clamped)",
        i64::from(state.approximate),
    )?;
    let name = format!("{PREFIX}local_runq_length");
    let mut metric = e.encode_descriptor(
        &name,
        "Goroutines in each P's local run queue (runnext included)",
        None,
        MetricType::Gauge,
    )?;
    for p in &state.procs {
        let labels = [("p".to_owned(), p.id.to_string())];
        ConstGauge::new(i64::from(p.queued())).encode(metric.encode_family(&labels)?)?;
    }
    let name = format!("{PREFIX}procs");
    let mut metric = e.encode_descriptor(&name, "Ps by status", None, MetricType::Gauge)?;
    // Every status, 0 included: the series stay put.
    for status in P_STATUSES {
        let count = state.procs.iter().filter(|p| p.status == status).count();
        let labels = [("status".to_owned(), status.to_owned())];
        ConstGauge::new(count as i64).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}
