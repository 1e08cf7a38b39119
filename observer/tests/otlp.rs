//! `--otlp URL`: the metrics pushed over OTLP/HTTP to a receiver that decodes
//! them with the official `opentelemetry-proto` messages (PyPI), checked
//! against the observer's own JSON lines of the same run.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use common::{
    Fixture, Mode, Observer, build, full_matrix_toolchains, watch_side_by_side, watch_to_the_end,
};
use serde_json::Value;

/// The receiver (tests/otlp_receiver.py), its port and where it writes the
/// data points.
struct Receiver {
    child: Child,
    port: u16,
    points: tempfile::NamedTempFile,
}

impl Receiver {
    fn start() -> Self {
        let pythonpath = std::env::var("GOBPF_SCHED_OTLP_PYTHONPATH").expect(
            "GOBPF_SCHED_OTLP_PYTHONPATH is not set: run the tests with `cargo xtask test`, \
             which installs opentelemetry-proto from PyPI",
        );
        let points = tempfile::NamedTempFile::new().expect("temp file");
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/otlp_receiver.py"
            ))
            .arg(points.path())
            .env("PYTHONPATH", pythonpath)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut first)
            .expect("the receiver's port");
        let port = first
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the receiver said {first:?}"));
        Self {
            child,
            port,
            points,
        }
    }

    /// Every data point received so far.
    fn points(&self) -> Vec<Value> {
        std::fs::read_to_string(self.points.path())
            .expect("the receiver's points")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn otlp_metrics_match_the_observer_json() {
    for toolchain in full_matrix_toolchains() {
        let binary = build(&toolchain, "cpu", Mode::Default);
        let receiver = Receiver::start();
        let url = format!("http://127.0.0.1:{}/v1/metrics", receiver.port);
        let fixture = Fixture::spawn(&binary, &["block", "400"]);
        let pid = fixture.pid();
        let observer = Observer::attach(pid, &["--json", "--interval", "200ms", "--otlp", &url]);
        let finished = watch_to_the_end(fixture, observer);
        let intervals: Vec<Value> = finished
            .json()
            .into_iter()
            .filter(|v| v["type"] == "interval")
            .collect();
        let points = receiver.points();
        let what = format!("{}: {} points", toolchain.version, points.len());
        assert!(!points.is_empty(), "{what}");
        // The last value of each series (cumulative counters from attach).
        let mut last: HashMap<(String, String), &Value> = HashMap::new();
        for point in &points {
            assert_eq!(point["path"], "/v1/metrics");
            assert_eq!(point["content_type"], "application/x-protobuf");
            last.insert(
                (
                    point["name"].as_str().expect("name").to_owned(),
                    point["attributes"].to_string(),
                ),
                point,
            );
        }
        let series = |name: &str, attributes: &str| -> &Value {
            last.get(&(name.to_owned(), attributes.to_owned()))
                .unwrap_or_else(|| panic!("{what}: no {name} {attributes}"))
        };
        // The resource, in semantic conventions.
        let resource = &points[0]["resource"];
        assert_eq!(
            resource["process.pid"].to_string().trim_matches('"'),
            pid.to_string()
        );
        assert_eq!(
            resource["process.executable.path"],
            binary.to_string_lossy().as_ref()
        );
        assert_eq!(resource["process.runtime.name"], "go");
        assert_eq!(
            resource["process.runtime.version"],
            toolchain.version.as_str()
        );
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(resource["host.name"], host.trim());
        // Counters: every interval's counts, summed.
        let summed = |f: &dyn Fn(&Value) -> u64| intervals.iter().map(f).sum::<u64>();
        for reason in ["chan receive", "sleep"] {
            let parks = series("gobpf_sched.parks", &format!("{{\"reason\":\"{reason}\"}}"));
            assert_eq!(parks["unit"], "{park}");
            assert_eq!(parks["monotonic"], true);
            assert_eq!(
                parks["value"].as_u64(),
                Some(summed(&|v| v["gopark"][reason].as_u64().unwrap_or(0))),
                "{what}: {reason}"
            );
        }
        assert_eq!(
            series("gobpf_sched.run_slices", "{}")["value"].as_u64(),
            Some(summed(&|v| v["run_slices"].as_u64().unwrap_or(0))),
            "{what}"
        );
        // The Go runtime's, under their semantic-convention names.
        // The last scheduler state read (the target may be gone at the last).
        let last_interval = intervals
            .iter()
            .rev()
            .find(|v| !v["sched"].is_null())
            .expect("a scheduler state");
        let limit = series("go.processor.limit", "{}");
        assert_eq!(limit["unit"], "{thread}");
        assert_eq!(
            limit["value"], last_interval["sched"]["gomaxprocs"],
            "{what}"
        );
        let goroutines = series("go.goroutine.count", "{}");
        assert_eq!(goroutines["unit"], "{goroutine}");
        let last_census = intervals
            .iter()
            .rev()
            .find(|v| !v["census"].is_null())
            .expect("a census");
        assert_eq!(
            goroutines["value"], last_census["census"]["user_goroutines"],
            "{what}"
        );
        let schedule = series("go.schedule.duration", "{}");
        assert_eq!(schedule["unit"], "s");
        assert_eq!(schedule["kind"], "histogram");
        // Counted from the first interval's read on.
        let runtime_count: u64 = intervals[1..]
            .iter()
            .map(|v| {
                v["runtime"]["run_queue_latency"]["count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        let per_interval: Vec<u64> = intervals
            .iter()
            .map(|v| {
                v["runtime"]["run_queue_latency"]["count"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .collect();
        let exported: Vec<u64> = points
            .iter()
            .filter(|p| p["name"] == "go.schedule.duration")
            .filter_map(|p| p["count"].as_u64())
            .collect();
        assert_eq!(
            schedule["count"].as_u64(),
            Some(runtime_count),
            "{what}: intervals {per_interval:?}, exported {exported:?}; {}",
            finished.stderr
        );
        // The runtime's own bounds: 160 from Go 1.20, Go 1.19's 720 merged 4 into 1.
        let bounds = schedule["bounds"].as_array().expect("bounds").len();
        assert_eq!(
            bounds,
            if toolchain.minor() >= (1, 20) {
                160
            } else {
                180
            },
            "{what}"
        );
    }
}

/// Several processes at once (`--pid A --pid B`: the sessions of `--all`):
/// each pushes under a resource of its own, with its own counts.
#[test]
fn each_process_has_its_own_resource() {
    let toolchains = full_matrix_toolchains();
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}/v1/metrics", receiver.port);
    let fixtures: Vec<Fixture> = toolchains
        .iter()
        .map(|toolchain| Fixture::spawn(&build(toolchain, "cpu", Mode::Default), &["block", "300"]))
        .collect();
    let pids: Vec<u32> = fixtures.iter().map(Fixture::pid).collect();
    assert!(pids.len() >= 2, "two toolchains");
    let finished = watch_side_by_side(fixtures, &["--json", "--interval", "200ms", "--otlp", &url]);
    let points = receiver.points();
    for pid in &pids {
        let pid_text = pid.to_string();
        let of_pid = |point: &&Value| {
            point["resource"]["process.pid"]
                .to_string()
                .trim_matches('"')
                == pid_text
        };
        let last_run_slices = points
            .iter()
            .filter(of_pid)
            .rfind(|p| p["name"] == "gobpf_sched.run_slices")
            .unwrap_or_else(|| panic!("no run slices of process {pid}"));
        let counted: u64 = finished
            .json()
            .iter()
            .filter(|v| v["type"] == "interval" && v["process"]["pid"] == *pid)
            .map(|v| v["run_slices"].as_u64().unwrap_or(0))
            .sum();
        assert!(counted > 0, "process {pid}");
        assert_eq!(
            last_run_slices["value"].as_u64(),
            Some(counted),
            "process {pid}"
        );
    }
}
