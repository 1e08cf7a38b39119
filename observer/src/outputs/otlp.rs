//! `--otlp URL`: the metrics over OTLP (HTTP/protobuf) with the
//! `opentelemetry-otlp` exporter, pushed every `--interval`.
//!
//! The resource says what the process is, in OpenTelemetry's semantic
//! conventions (`process.pid`, `process.executable.name`,
//! `process.executable.path`, `process.runtime.name`/`version`, `host.name`,
//! `container.id`, `k8s.pod.uid`). The Go runtime's own metrics go under their
//! semconv names where one exists: `go.schedule.duration` (the runtime's
//! run-queue latency histogram, with its own bucket bounds),
//! `go.goroutine.count`, `go.processor.limit`; gobpf-sched's under
//! `gobpf_sched.`. Counters are cumulative from attach (the exporter's
//! default temporality); `go.schedule.duration` records what the runtime
//! counted since attach (each bucket's new values at its middle: the runtime
//! keeps no sum).

use std::collections::HashMap;

use anyhow::{Context, Result};
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge, Histogram, Meter, MeterProvider as _, UpDownCounter},
};
use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    metrics::{PeriodicReader, SdkMeterProvider},
};

use crate::{
    outputs::Report,
    stats::runtime_histogram::{HistogramLayout, RuntimeCounts},
    target::labels::ProcessLabels,
};

/// The instruments, made once.
struct Instruments {
    parks: Counter<u64>,
    run_slices: Counter<u64>,
    syscalls: Counter<u64>,
    preemptions: Counter<u64>,
    goroutines_created: Counter<u64>,
    goroutines_exited: Counter<u64>,
    cpu_time: Counter<f64>,
    coverage: Gauge<f64>,
    goroutine_count: UpDownCounter<i64>,
    processor_limit: UpDownCounter<i64>,
}

pub struct OtlpExporter {
    provider: SdkMeterProvider,
    meter: Meter,
    instruments: Instruments,
    /// `go.schedule.duration`, made at the first read of the runtime's
    /// histogram (its bounds are the Go version's) ...
    schedule_duration: Option<Histogram<f64>>,
    /// ... and the counts read last.
    last_time_to_run: Option<RuntimeCounts>,
    /// The last values of what is sent as up-down counters (their changes).
    last_goroutines: i64,
    last_gomaxprocs: i64,
}

impl OtlpExporter {
    /// Starts pushing to `url` (e.g. `http://collector:4318/v1/metrics`)
    /// every `interval`.
    pub fn start(
        url: &str,
        interval: std::time::Duration,
        process: &ProcessLabels,
    ) -> Result<Self> {
        let exporter = MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .build()
            .with_context(|| format!("cannot set up the OTLP exporter to {url}"))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource(process))
            .build();
        let meter = provider.meter("gobpf-sched");
        let counter = |name: &'static str, unit: &'static str, description: &'static str| {
            meter
                .u64_counter(name)
                .with_unit(unit)
                .with_description(description)
                .build()
        };
        let instruments = Instruments {
            parks: counter(
                "gobpf_sched.parks",
                "{park}",
                "Goroutines parked (running -> waiting), by wait reason",
            ),
            run_slices: counter(
                "gobpf_sched.run_slices",
                "{slice}",
                "Goroutine run slices started (runnable -> running)",
            ),
            syscalls: counter("gobpf_sched.syscalls", "{syscall}", "Syscalls returned"),
            preemptions: counter(
                "gobpf_sched.preemptions",
                "{preemption}",
                "Goroutines preempted by a SIGURG (asynchronous preemption)",
            ),
            goroutines_created: counter(
                "gobpf_sched.goroutines.created",
                "{goroutine}",
                "Goroutines created",
            ),
            goroutines_exited: counter(
                "gobpf_sched.goroutines.exited",
                "{goroutine}",
                "Goroutines that exited",
            ),
            cpu_time: meter
                .f64_counter("gobpf_sched.cpu.time")
                .with_unit("s")
                .with_description(
                    "The target's CPU time by the CPU samples, by the start function of the \
                     goroutine that ran (or what ran without one)",
                )
                .build(),
            coverage: meter
                .f64_gauge("gobpf_sched.probe.coverage")
                .with_unit("1")
                .with_description("Share of the last interval the transition probes were attached")
                .build(),
            goroutine_count: meter
                .i64_up_down_counter("go.goroutine.count")
                .with_unit("{goroutine}")
                .with_description("Count of live goroutines (the program's, at the last census)")
                .build(),
            processor_limit: meter
                .i64_up_down_counter("go.processor.limit")
                .with_unit("{thread}")
                .with_description("The number of OS threads that can execute user-level Go code simultaneously (GOMAXPROCS)")
                .build(),
        };
        Ok(Self {
            provider,
            meter,
            instruments,
            schedule_duration: None,
            last_time_to_run: None,
            last_goroutines: 0,
            last_gomaxprocs: 0,
        })
    }

    /// One interval's report.
    pub fn update(&mut self, report: &Report<'_>) {
        let i = &self.instruments;
        let s = report.stats;
        for (reason, &parks) in &s.gopark {
            if parks > 0 {
                i.parks
                    .add(parks, &[KeyValue::new("reason", reason.clone())]);
            }
        }
        i.run_slices.add(s.run_slices, &[]);
        i.syscalls.add(s.syscalls, &[]);
        i.preemptions.add(s.preemptions, &[]);
        i.goroutines_created.add(s.goroutines_created, &[]);
        i.goroutines_exited.add(s.goroutines_exited, &[]);
        i.coverage.record(report.cost.coverage, &[]);
        if let Some(cpu) = report.cpu {
            for share in &cpu.by_start_function {
                let seconds = share.count as f64 * cpu.period_ns as f64 / 1e9;
                i.cpu_time.add(
                    seconds,
                    &[KeyValue::new("start_function", share.name.clone())],
                );
            }
        }
        if let Some(census) = report.census {
            let now = census.user_goroutines as i64;
            i.goroutine_count.add(now - self.last_goroutines, &[]);
            self.last_goroutines = now;
        }
        if let Some(sched) = report.sched {
            let now = i64::from(sched.gomaxprocs);
            i.processor_limit.add(now - self.last_gomaxprocs, &[]);
            self.last_gomaxprocs = now;
            if let Some(counts) = &sched.counters.time_to_run {
                self.record_time_to_run(counts);
            }
        }
    }

    /// The runtime's new run-queue latencies since the last read (the
    /// first read is where counting starts).
    fn record_time_to_run(&mut self, counts: &RuntimeCounts) {
        let Some(last) = self.last_time_to_run.replace(counts.clone()) else {
            return;
        };
        if last.layout != counts.layout {
            return;
        }
        let histogram = self.schedule_duration.get_or_insert_with(|| {
            self.meter
                .f64_histogram("go.schedule.duration")
                .with_unit("s")
                .with_description(
                    "The amount of time goroutines spend in the scheduler in a runnable state \
                     before actually running (the runtime's own histogram)",
                )
                .with_boundaries(upper_bounds_seconds(counts.layout))
                .build()
        });
        let bounds = counts.layout.lower_bounds_ns();
        // counts[0] is the underflow; counts[i] is [bounds[i-1], bounds[i]).
        for (i, (&now, &then)) in counts.counts.iter().zip(&last.counts).enumerate() {
            let new = now.saturating_sub(then);
            if new == 0 {
                continue;
            }
            let value_ns = match i {
                0 => 0.0,
                _ => {
                    let from = bounds[i - 1] as f64;
                    bounds.get(i).map_or(from, |&to| (from + to as f64) / 2.0)
                }
            };
            for _ in 0..new {
                histogram.record(value_ns / 1e9, &[]);
            }
        }
    }

    /// Sends what is left and stops.
    pub fn shutdown(self) -> Result<()> {
        self.provider
            .shutdown()
            .map_err(|e| anyhow::anyhow!("the last OTLP export failed: {e}"))
    }
}

/// The runtime's bucket bounds in seconds (Go 1.19's super-buckets merged 4
/// into 1, as the Prometheus exporter does: 180 bounds instead of 720).
fn upper_bounds_seconds(layout: HistogramLayout) -> Vec<f64> {
    let step = match layout {
        HistogramLayout::SuperBuckets => 4,
        HistogramLayout::SubBucketBits2 => 1,
    };
    layout
        .lower_bounds_ns()
        .iter()
        .skip(1)
        .step_by(step)
        .map(|&ns| ns as f64 / 1e9)
        .collect()
}

/// The process as an OpenTelemetry resource.
fn resource(process: &ProcessLabels) -> Resource {
    let mut attributes = vec![
        KeyValue::new("service.name", "gobpf-sched"),
        KeyValue::new("process.pid", i64::from(process.pid)),
        KeyValue::new("process.executable.name", process.comm.clone()),
        KeyValue::new("process.executable.path", process.executable.clone()),
        KeyValue::new("process.runtime.name", "go"),
        KeyValue::new("process.runtime.version", process.go_version.clone()),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attributes.push(KeyValue::new("host.name", host.trim().to_owned()));
    }
    let optional: HashMap<&str, &Option<String>> = [
        ("container.id", &process.container_id),
        ("container.runtime", &process.container_runtime),
        ("k8s.pod.uid", &process.pod_uid),
    ]
    .into_iter()
    .collect();
    for (key, value) in optional {
        if let Some(value) = value {
            attributes.push(KeyValue::new(key, value.clone()));
        }
    }
    Resource::builder_empty()
        .with_attributes(attributes)
        .build()
}
