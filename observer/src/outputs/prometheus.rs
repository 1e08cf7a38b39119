//! `--prometheus ADDR`: serves `/metrics` in the OpenMetrics text format
//! (prometheus-client), for Prometheus to scrape and Grafana to draw.
//!
//! Counters and histograms are the session's totals since attach, refreshed every
//! `--interval`; the scheduler-state gauges (run queues, idle Ps, threads) are read
//! from the target's memory at each scrape, so a 10 ms scrape sees 10 ms changes,
//! as gse shows them.

use std::{
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
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use crate::{
    sources::runtime_memory::{self, SchedLayout},
    stats::{
        aggregate::{Bucket, Stats},
        sched::{P_STATUSES, SchedState},
    },
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
}

#[derive(Debug)]
struct SchedulerCollector {
    exported: Arc<Mutex<Exported>>,
    /// Where to read the scheduler state live, when the binary allows it.
    live: Option<(u32, SchedLayout)>,
}

pub struct Exporter {
    pub exported: Arc<Mutex<Exported>>,
    pub address: SocketAddr,
}

impl Exporter {
    /// Binds `address` and serves `/metrics` on the current tokio runtime.
    pub async fn start(address: SocketAddr, live: Option<(u32, SchedLayout)>) -> Result<Self> {
        let exported = Arc::new(Mutex::new(Exported::default()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SchedulerCollector {
            exported: exported.clone(),
            live,
        }));
        let registry = Arc::new(registry);
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address} for --prometheus"))?;
        let address = listener.local_addr()?;
        let app = Router::new().route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let registry = registry.clone();
                async move {
                    let mut body = String::new();
                    let _ = encode(&mut body, &registry);
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
        Ok(Self { exported, address })
    }

    pub fn set_execs_followed(&self, execs: u64) {
        if let Ok(mut exported) = self.exported.lock() {
            exported.execs_followed = execs;
        }
    }

    pub fn update(&self, totals: &Stats) {
        if let Ok(mut exported) = self.exported.lock() {
            exported.totals = totals.clone();
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
    let name = format!("{PREFIX}{name}");
    let metric = encoder.encode_descriptor(&name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(metric)
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
        let (totals, execs_followed) = match self.exported.lock() {
            Ok(exported) => (exported.totals.clone(), exported.execs_followed),
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

        let Some((pid, layout)) = &self.live else {
            return Ok(());
        };
        let Ok(state) = runtime_memory::read(*pid, layout) else {
            return Ok(()); // the target is gone: no gauges rather than stale ones
        };
        encode_sched_state(e, &state)
    }
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
