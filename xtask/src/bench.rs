//! `cargo xtask bench`: what tracing costs a Go program, measured side by side in
//! one run (this VM is noisy: only ratios within one run mean something).
//!
//! Each workload of `xtask/bench` runs bare, under `gobpf-sched attach` in its
//! default mode (transition probes in windows under the 1% overhead budget) and
//! with `--exact` (always on), under bpftrace with entry uprobes on the same
//! runtime functions (counting hits per probe, the cheapest thing bpftrace can
//! do there), and under `runtime/trace`. A workload of 100,000 parked goroutines
//! measures what the goroutine census costs the observer.
//! Repetitions are interleaved and the median is kept. Results are printed and
//! saved under target/bench/ as JSON and Markdown.

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{bench_node, setup, toolchains};

/// (workload, operations per run). Slow tracers run fewer operations (see `ops`).
const WORKLOADS: &[(&str, u64)] = &[
    ("pingpong", 500_000),
    ("syscalls", 200_000),
    ("fanout", 100_000),
    ("http", 20_000),
];
const REPETITIONS: usize = 3;
/// How long a default-mode run lasts: the probes are on for a window at attach
/// (100 ms), then in windows within the budget; a run of seconds is mostly
/// that steady state, as a service watched for minutes would be.
const DEFAULT_MODE_RUN: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tracer {
    Bare,
    /// `gobpf-sched attach` as a user runs it: the 1% budget.
    GobpfSched,
    GobpfSchedExact,
    /// `--exact --block-profile`: a stack walk at every park.
    GobpfSchedBlockStacks,
    Bpftrace,
    RuntimeTrace,
}

/// In this order in the results (`render` indexes them).
const TRACERS: [Tracer; 6] = [
    Tracer::Bare,
    Tracer::GobpfSched,
    Tracer::GobpfSchedExact,
    Tracer::GobpfSchedBlockStacks,
    Tracer::Bpftrace,
    Tracer::RuntimeTrace,
];
const DEFAULT: usize = 1;
const EXACT: usize = 2;
const BLOCK_STACKS: usize = 3;
const BPFTRACE: usize = 4;
const RUNTIME_TRACE: usize = 5;

impl Tracer {
    fn name(self) -> &'static str {
        match self {
            Tracer::Bare => "bare",
            Tracer::GobpfSched => "gobpf-sched",
            Tracer::GobpfSchedExact => "gobpf-sched --exact",
            Tracer::GobpfSchedBlockStacks => "gobpf-sched --exact --block-profile",
            Tracer::Bpftrace => "bpftrace",
            Tracer::RuntimeTrace => "runtime/trace",
        }
    }

    /// bpftrace single-steps every hit (~100× slower): fewer operations keep
    /// its runs to seconds; ns/op stays comparable. (The default mode runs for
    /// `DEFAULT_MODE_RUN`.)
    fn ops(self, ops: u64) -> u64 {
        match self {
            Tracer::Bpftrace => ops / 50,
            _ => ops,
        }
    }
}

/// One run's results.
#[derive(Default, Clone)]
struct Sample {
    ns_per_op: f64,
    /// Probe hits per operation (gobpf-sched: its counters; bpftrace: its counts).
    hits_per_op: Option<f64>,
    attach_ms: Option<f64>,
    observer_rss_kb: Option<u64>,
    /// The observer's own CPU time per second of the run (1.0 = a whole core).
    observer_cpu: Option<f64>,
    /// The session's `probes` object: coverage, estimated overhead, windows.
    probes: Option<Value>,
    /// Parks per operation (the probes' count, exact mode).
    parks_per_op: Option<f64>,
    /// The session's `cpu.sampler_cost`: runs of the sampling program, ns each.
    sampler_cost: Option<Value>,
}

pub fn run(toolchains: &toolchains::Installed) -> Result<()> {
    setup::require_root("the bench attaches eBPF programs")?;
    if Command::new("bpftrace").arg("--version").output().is_err() {
        bail!("bpftrace is missing: `cargo xtask setup` installs it (Debian package bpftrace)");
    }
    let root = toolchains::workspace_root();
    let out_dir = root.join("target/bench");
    let go = toolchains.primary();
    let binary = build_workloads(toolchains)?;
    let observer = root.join("target/release/gobpf-sched");
    let go_version = toolchains::go_version(go);

    // bpftrace gets entry probes on the functions gobpf-sched probes in this binary.
    let inspected: Value = serde_json::from_slice(
        &Command::new(&observer)
            .args(["inspect", "--json"])
            .arg(&binary)
            .output()?
            .stdout,
    )
    .context("gobpf-sched inspect printed no JSON")?;
    let probed: Vec<String> = inspected["probes"]
        .as_array()
        .context("no probes in the inspect report")?
        .iter()
        .filter_map(|p| p["function"].as_str().map(str::to_owned))
        .collect();

    let mut results = Vec::new();
    for &(workload, ops) in WORKLOADS {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); TRACERS.len()];
        for repetition in 0..REPETITIONS {
            for (i, &tracer) in TRACERS.iter().enumerate() {
                eprintln!(
                    "bench: {workload} under {} ({}/{REPETITIONS})",
                    tracer.name(),
                    repetition + 1
                );
                // The default mode runs for DEFAULT_MODE_RUN at the bare speed of
                // this repetition (measured just before).
                let ops = match (tracer, samples[0].last()) {
                    (Tracer::GobpfSched, Some(bare)) if bare.ns_per_op > 0.0 => {
                        (DEFAULT_MODE_RUN.as_nanos() as f64 / bare.ns_per_op) as u64
                    }
                    _ => tracer.ops(ops),
                };
                samples[i].push(run_once(
                    &binary, &observer, &probed, workload, ops, tracer,
                )?);
            }
        }
        let medians: Vec<Sample> = samples.iter().map(|s| median(s)).collect();
        results.push((workload, medians));
    }

    let parked = measure_parked(&binary, &observer)?;
    let floor = measure_floor(&binary)?;
    let events = measure_events(&binary, &observer, &out_dir)?;
    let large = out_dir.join("large");
    toolchains::build_go(go, &root.join("xtask/bench-large"), &large)?;
    let large_attach_ms = measure_attach(&large, &observer)?;
    let large_mb = std::fs::metadata(&large)?.len() as f64 / 1e6;
    let node = bench_node::run(toolchains)?;
    let mut report = render(&results, &go_version);
    report.push_str(&format!(
        "\nprobed functions (both tools): {}\n",
        probed.join(", ")
    ));
    report.push_str(&format!(
        "\nkernel floor, an empty bpftrace uprobe on an emulated `push %rbp` (main.noop): \
         {floor:.0} ns per hit\n\
         --events on ping-pong: {} transitions drained in {:.2} s ({:.0}/s), {} dropped\n\
         attach to a large binary (xtask/bench-large, {large_mb:.1} MB, much of the standard \
         library, with DWARF): {large_attach_ms:.0} ms (median of {REPETITIONS})\n",
        events.count,
        events.seconds,
        events.count as f64 / events.seconds,
        events.dropped
    ));
    report.push_str(&format!(
        "\n{PARKED} parked goroutines, default mode, --interval 1s, 10 s: observer CPU {:.2}% \
         of a core, peak RSS {:.1} MB; a census (every goroutine read) takes {:.1} ms, \
         taken every {} interval(s); {} goroutines counted\n",
        100.0 * parked.observer_cpu,
        parked.rss_kb as f64 / 1024.0,
        parked.census_ms,
        parked.census_every,
        parked.goroutines
    ));
    report.push_str(&node.render());
    println!("{report}");
    std::fs::write(out_dir.join("bench.md"), &report)?;
    std::fs::write(
        out_dir.join("bench.json"),
        serde_json::to_string_pretty(&json!({
            "workloads": to_json(&results, &go_version),
            "floor_ns_per_hit": floor,
            "large_binary": {"mb": large_mb, "attach_ms": large_attach_ms},
            "events": {"count": events.count, "seconds": events.seconds, "dropped": events.dropped},
            "parked": {"goroutines": PARKED, "observer_cpu": parked.observer_cpu,
                       "rss_kb": parked.rss_kb, "census_ms": parked.census_ms,
                       "census_every": parked.census_every},
            "node": node.to_json(),
        }))?,
    )?;
    eprintln!("bench: saved target/bench/bench.md and target/bench/bench.json");
    Ok(())
}

/// `cargo xtask bench node`: only the node-wide part, saved as
/// target/bench/node.md and target/bench/node.json.
pub fn run_node(toolchains: &toolchains::Installed) -> Result<()> {
    setup::require_root("the bench attaches eBPF programs")?;
    let out_dir = toolchains::workspace_root().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let node = bench_node::run(toolchains)?;
    let report = node.render();
    println!("{report}");
    std::fs::write(out_dir.join("node.md"), &report)?;
    std::fs::write(
        out_dir.join("node.json"),
        serde_json::to_string_pretty(&node.to_json())?,
    )?;
    eprintln!("bench: saved target/bench/node.md and target/bench/node.json");
    Ok(())
}

/// ns per hit of the cheapest uprobe the kernel offers here: an empty bpftrace
/// probe on an instruction it emulates; median of the repetitions.
fn measure_floor(binary: &Path) -> Result<f64> {
    const CALLS: u64 = 2_000_000;
    let mut floors = Vec::new();
    for _ in 0..REPETITIONS {
        let mut bare = Workload::start(binary, "noop", CALLS, Tracer::Bare)?;
        let bare_ns = bare.go()?;
        let _ = bare.child.wait();
        let mut traced = Workload::start(binary, "noop", CALLS, Tracer::Bare)?;
        let pid = traced.child.id().to_string();
        let program = format!(
            "BEGIN {{ printf(\"ready\\n\"); }} uprobe:{}:main.noop {{ }}",
            binary.display()
        );
        let mut bpftrace = Command::new("bpftrace")
            .args(["-p", &pid, "-e", &program])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        expect_line(
            &mut BufReader::new(bpftrace.stdout.take().context("stdout")?),
            "ready",
        )?;
        let traced_ns = traced.go()?;
        let _ = traced.child.wait();
        let _ = bpftrace.wait();
        floors.push(traced_ns - bare_ns);
    }
    floors.sort_by(f64::total_cmp);
    Ok(floors[floors.len() / 2])
}

/// Median attach time (as the observer reports it) to an idle process of `binary`.
fn measure_attach(binary: &Path, observer: &Path) -> Result<f64> {
    let mut target = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the large bench program")?;
    let mut stdout = BufReader::new(target.stdout.take().context("stdout")?);
    expect_line(&mut stdout, "ready")?;
    let pid = target.id().to_string();
    let mut times = Vec::new();
    for _ in 0..REPETITIONS {
        let output = Command::new(observer)
            .args(["attach", "--pid", &pid, "--duration", "100ms", "--json"])
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let attached = stderr
            .lines()
            .find(|l| l.starts_with("gobpf-sched: attached"))
            .with_context(|| format!("gobpf-sched did not attach: {stderr}"))?;
        times.push(attach_ms(attached).context("no attach time")?);
    }
    drop(target.stdin.take()); // it exits at the end of its input
    let _ = target.wait();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The time in "gobpf-sched: attached to ... in 42 ms. Ctrl-C to stop."
pub(crate) fn attach_ms(line: &str) -> Option<f64> {
    line.split(" in ")
        .last()
        .and_then(|rest| rest.split(" ms").next())
        .and_then(|ms| ms.parse().ok())
}

/// `gobpf-sched attach --pid PID --json --interval 1s`, once it attached, and
/// the thread that collects its JSON lines until it exits.
pub(crate) fn observe_json(
    observer: &Path,
    pid: &str,
) -> Result<(Child, std::thread::JoinHandle<Vec<Value>>)> {
    let mut tracer = Command::new(observer)
        .args(["attach", "--pid", pid, "--json", "--interval", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(tracer.stderr.take().context("stderr")?);
    expect_line(&mut stderr, "gobpf-sched: attached")?;
    std::thread::spawn(move || stderr.lines().for_each(drop));
    let lines = json_lines(&mut tracer)?;
    Ok((tracer, lines))
}

/// The JSON objects `tracer` prints on stdout, read on a thread of their own
/// until it closes it.
pub(crate) fn json_lines(tracer: &mut Child) -> Result<std::thread::JoinHandle<Vec<Value>>> {
    let stdout = BufReader::new(tracer.stdout.take().context("stdout")?);
    Ok(std::thread::spawn(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
            .collect()
    }))
}

/// Goroutines in the parked workload.
const PARKED: u64 = 100_000;

struct Parked {
    observer_cpu: f64,
    rss_kb: u64,
    census_ms: f64,
    census_every: u64,
    goroutines: u64,
}

/// What watching 100,000 parked goroutines costs the observer at 1 s intervals
/// (the census reads every one of them each interval).
fn measure_parked(binary: &Path, observer: &Path) -> Result<Parked> {
    eprintln!("bench: {PARKED} parked goroutines under gobpf-sched");
    let mut target = Workload::start(binary, "parked", PARKED, Tracer::Bare)?;
    let pid = target.child.id().to_string();
    let (mut tracer, lines) = observe_json(observer, &pid)?;
    let (cpu_before, started) = (cpu_seconds(tracer.id()), std::time::Instant::now());
    let _ = target.go()?;
    let observer_cpu = cpu_seconds(tracer.id())
        .zip(cpu_before)
        .map_or(0.0, |(after, before)| {
            (after - before) / started.elapsed().as_secs_f64()
        });
    let rss_kb = peak_rss_kb(tracer.id()).unwrap_or(0);
    let _ = target.child.wait();
    tracer.wait()?;
    let intervals: Vec<Value> = lines
        .join()
        .map_err(|_| anyhow::anyhow!("reading the observer's output failed"))?
        .into_iter()
        .filter(|v| v["type"] == "interval" && v["census"].is_object())
        .collect();
    // The census of the fullest interval (the goroutines are all parked).
    let fullest = intervals
        .iter()
        .max_by_key(|v| v["census"]["goroutines"].as_u64().unwrap_or(0))
        .context("no census in the observer's output")?;
    Ok(Parked {
        observer_cpu,
        rss_kb,
        census_ms: fullest["census"]["read_ns"].as_f64().unwrap_or(0.0) / 1e6,
        census_every: fullest["census_every_intervals"].as_u64().unwrap_or(1),
        goroutines: fullest["census"]["goroutines"].as_u64().unwrap_or(0),
    })
}

struct EventsRate {
    count: u64,
    seconds: f64,
    dropped: u64,
}

/// How many transitions `--events` drains per second, and whether any is lost.
fn measure_events(binary: &Path, observer: &Path, out_dir: &Path) -> Result<EventsRate> {
    const OPS: u64 = 50_000;
    let mut target = Workload::start(binary, "pingpong", OPS, Tracer::Bare)?;
    let pid = target.child.id().to_string();
    let log = std::fs::File::create(out_dir.join("events.txt"))?;
    let mut tracer = Command::new(observer)
        .args(["attach", "--pid", &pid, "--events", "--interval", "1h"])
        .stdout(log)
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(tracer.stderr.take().context("stderr")?);
    expect_line(&mut stderr, "gobpf-sched: attached")?;
    std::thread::spawn(move || stderr.lines().for_each(drop));
    let started = std::time::Instant::now();
    let _ = target.go()?;
    let _ = target.child.wait();
    tracer.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(out_dir.join("events.txt"))?;
    let count = text
        .lines()
        .filter(|l| {
            [
                " RUN ",
                " STOP ",
                " PARK ",
                " WAKE ",
                " CREATE ",
                " EXIT ",
                " SYSCALL ",
            ]
            .iter()
            .any(|kind| l.contains(kind))
        })
        .count() as u64;
    let dropped = text
        .lines()
        .filter_map(|l| l.strip_prefix("dropped"))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    Ok(EventsRate {
        count,
        seconds,
        dropped,
    })
}

fn median(samples: &[Sample]) -> Sample {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.ns_per_op.total_cmp(&b.ns_per_op));
    sorted[sorted.len() / 2].clone()
}

/// A started workload that printed "ready" and waits for the go-ahead.
pub(crate) struct Workload {
    pub(crate) child: Child,
    pub(crate) stdout: BufReader<ChildStdout>,
}

impl Workload {
    pub(crate) fn start(binary: &Path, workload: &str, ops: u64, tracer: Tracer) -> Result<Self> {
        let mut command = Command::new(binary);
        command
            .args([workload, &ops.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if tracer == Tracer::RuntimeTrace {
            command.env("BENCH_TRACE", "1");
        }
        let mut child = command.spawn().context("cannot start the bench workload")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        expect_line(&mut stdout, "ready")?;
        Ok(Self { child, stdout })
    }

    /// Lets it run; returns its ns/op.
    pub(crate) fn go(&mut self) -> Result<f64> {
        self.child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"go\n")?;
        let line = expect_line(&mut self.stdout, "ns/op ")?;
        Ok(line.trim_start_matches("ns/op ").trim().parse()?)
    }
}

pub(crate) fn expect_line(reader: &mut impl BufRead, prefix: &str) -> Result<String> {
    for line in reader.lines() {
        let line = line?;
        if line.starts_with(prefix) {
            return Ok(line);
        }
    }
    bail!("expected a line starting with {prefix:?}")
}

fn run_once(
    binary: &Path,
    observer: &Path,
    probed: &[String],
    workload: &str,
    ops: u64,
    tracer: Tracer,
) -> Result<Sample> {
    let mut target = Workload::start(binary, workload, ops, tracer)?;
    let pid = target.child.id().to_string();
    let mut sample = Sample::default();
    match tracer {
        Tracer::Bare | Tracer::RuntimeTrace => {
            sample.ns_per_op = target.go()?;
        }
        Tracer::GobpfSched | Tracer::GobpfSchedExact | Tracer::GobpfSchedBlockStacks => {
            let profile = std::env::temp_dir().join(format!("gobpf-sched-bench-{pid}.pb.gz"));
            let profile_arg = profile.to_string_lossy().into_owned();
            let exact: Vec<&str> = match tracer {
                Tracer::GobpfSchedExact => vec!["--exact"],
                Tracer::GobpfSchedBlockStacks => vec!["--exact", "--block-profile", &profile_arg],
                _ => Vec::new(),
            };
            let mut tracer = Command::new(observer)
                .args(["attach", "--pid", &pid, "--json", "--interval", "10s"])
                .args(exact)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut stderr = BufReader::new(tracer.stderr.take().context("stderr")?);
            let attached = expect_line(&mut stderr, "gobpf-sched: attached")?;
            // Keep reading: the observer reports the target's exit there too
            // (and, should it fail, why).
            let stderr = std::thread::spawn(move || {
                stderr.lines().map_while(Result::ok).collect::<Vec<_>>()
            });
            sample.attach_ms = attach_ms(&attached);
            let (cpu_before, started) = (cpu_seconds(tracer.id()), std::time::Instant::now());
            sample.ns_per_op = target.go()?;
            sample.observer_cpu = cpu_seconds(tracer.id())
                .zip(cpu_before)
                .map(|(after, before)| (after - before) / started.elapsed().as_secs_f64());
            sample.observer_rss_kb = peak_rss_kb(tracer.id());
            let output = tracer.wait_with_output()?;
            let summary = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .find(|v| v["type"] == "summary")
                .with_context(|| {
                    format!(
                        "gobpf-sched printed no summary ({}): {}",
                        output.status,
                        stderr.join().unwrap_or_default().join("\n")
                    )
                })?;
            // Every uprobe hit, counted by the programs themselves.
            let hits = summary["probe_hits"].as_u64().unwrap_or(0);
            sample.hits_per_op = Some(hits as f64 / ops as f64);
            sample.probes = Some(summary["probes"].clone());
            sample.parks_per_op = summary["gopark_total"]
                .as_u64()
                .map(|p| p as f64 / ops as f64);
            sample.sampler_cost = Some(summary["cpu"]["sampler_cost"].clone());
            let _ = std::fs::remove_file(&profile);
        }
        Tracer::Bpftrace => {
            let probes: Vec<String> = probed
                .iter()
                .map(|f| format!("uprobe:{}:{f}", binary.display()))
                .collect();
            let program = format!(
                "BEGIN {{ printf(\"ready\\n\"); }} {} {{ @hits[probe] = count(); }}",
                probes.join(",")
            );
            let mut tracer = Command::new("bpftrace")
                .args(["-p", &pid, "-e", &program])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let mut stdout = BufReader::new(tracer.stdout.take().context("stdout")?);
            expect_line(&mut stdout, "ready")?;
            sample.ns_per_op = target.go()?;
            let _ = target.child.wait();
            // bpftrace prints its maps when the traced process exits.
            let mut hits = 0u64;
            for line in stdout.lines() {
                let line = line?;
                if let Some(count) = line
                    .strip_prefix("@hits[")
                    .and_then(|l| l.rsplit(": ").next())
                {
                    hits += count.trim().parse::<u64>().unwrap_or(0);
                }
            }
            let _ = tracer.wait();
            sample.hits_per_op = Some(hits as f64 / ops as f64);
        }
    }
    let _ = target.child.wait();
    std::thread::sleep(Duration::from_millis(100));
    Ok(sample)
}

/// Builds the bench's Go workloads (xtask/bench) with the primary toolchain, into
/// target/bench/workloads.
pub(crate) fn build_workloads(toolchains: &toolchains::Installed) -> Result<std::path::PathBuf> {
    let root = toolchains::workspace_root();
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let binary = out_dir.join("workloads");
    toolchains::build_go(toolchains.primary(), &root.join("xtask/bench"), &binary)?;
    Ok(binary)
}

/// User + system CPU seconds of a process (/proc/PID/stat fields 14 and 15).
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { sysconf(SC_CLK_TCK) };
    Some(ticks as f64 / per_second as f64)
}

const SC_CLK_TCK: i32 = 2;
unsafe extern "C" {
    fn sysconf(name: i32) -> i64;
}

pub(crate) fn peak_rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn ratio(traced: f64, bare: f64) -> f64 {
    traced / bare
}

fn render(results: &[(&str, Vec<Sample>)], go_version: &str) -> String {
    let mut out = format!(
        "gobpf-sched bench, {go_version} workloads, medians of {REPETITIONS} interleaved runs\n\n\
         | workload | bare ns/op | gobpf-sched (1% budget, 99 Hz samples) ns/op | gobpf-sched \
         --exact ns/op | --exact --block-profile ns/op | bpftrace ns/op | runtime/trace ns/op |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for (workload, s) in results {
        let bare = s[0].ns_per_op;
        out.push_str(&format!("| {workload} | {bare:.0} |"));
        for sample in &s[1..] {
            out.push_str(&format!(
                " {:.0} ({:.2}×) |",
                sample.ns_per_op,
                ratio(sample.ns_per_op, bare)
            ));
        }
        out.push('\n');
    }
    out.push_str(
        "\nDefault mode: the share of time the transition probes were attached, and the \
         observer's own estimate of their cost (hits × measured cost per hit ÷ the target's \
         CPU time), against the 1% budget:\n\n\
         | workload | coverage | estimated overhead | windows |\n|---|---|---|---|\n",
    );
    for (workload, s) in results {
        let probes = s[DEFAULT].probes.clone().unwrap_or_default();
        let percent = |key: &str| {
            probes[key]
                .as_f64()
                .map_or("-".to_owned(), |v| format!("{:.2}%", 100.0 * v))
        };
        out.push_str(&format!(
            "| {workload} | {} | {} | {} |\n",
            percent("coverage"),
            percent("estimated_overhead"),
            probes["windows"]
        ));
    }
    out.push_str(
        "\n| workload | --exact hits/op | ns per hit | bpftrace hits/op | ns per hit | bpftrace overhead ÷ --exact overhead |\n\
         |---|---|---|---|---|---|\n",
    );
    for (workload, s) in results {
        let bare = s[0].ns_per_op;
        let ours = s[EXACT].ns_per_op - bare;
        let theirs = s[BPFTRACE].ns_per_op - bare;
        let per_hit = |overhead: f64, hits: Option<f64>| match hits {
            Some(h) if h > 0.0 => format!("{:.0}", overhead / h),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "| {workload} | {:.2} | {} | {:.2} | {} | {:.1}× |\n",
            s[EXACT].hits_per_op.unwrap_or(0.0),
            per_hit(ours, s[EXACT].hits_per_op),
            s[BPFTRACE].hits_per_op.unwrap_or(0.0),
            per_hit(theirs, s[BPFTRACE].hits_per_op),
            theirs / ours.max(1.0)
        ));
    }
    if let Some((_, s)) = results.iter().find(|(w, _)| *w == "http") {
        let req_per_s = |sample: &Sample| 1e9 / sample.ns_per_op;
        out.push_str(&format!(
            "\nHTTP on 127.0.0.1: bare {:.0} req/s; gobpf-sched {:.0} req/s ({:.1}% of bare); \
             --exact {:.0} req/s ({:.0}% of bare); bpftrace {:.0} req/s; runtime/trace {:.0} req/s\n",
            req_per_s(&s[0]),
            req_per_s(&s[DEFAULT]),
            100.0 * s[0].ns_per_op / s[DEFAULT].ns_per_op,
            req_per_s(&s[EXACT]),
            100.0 * s[0].ns_per_op / s[EXACT].ns_per_op,
            req_per_s(&s[BPFTRACE]),
            req_per_s(&s[RUNTIME_TRACE]),
        ));
    }
    out.push_str(
        "\nWhat a park costs with its stack (--block-profile, exact mode), and the CPU \
         sampler's own run time (the kernel's statistics of the program, default mode):\n\n\
         | workload | parks/op | extra ns per park | sampler runs | sampler ns per run |\n\
         |---|---|---|---|---|\n",
    );
    for (workload, s) in results {
        let (exact, stacks) = (&s[EXACT], &s[BLOCK_STACKS]);
        let per_park = match stacks.parks_per_op {
            Some(parks) if parks > 0.01 => {
                format!("{:.0}", (stacks.ns_per_op - exact.ns_per_op) / parks)
            }
            _ => "-".to_owned(),
        };
        let sampler = s[DEFAULT].sampler_cost.clone().unwrap_or_default();
        out.push_str(&format!(
            "| {workload} | {} | {per_park} | {} | {} |\n",
            stacks
                .parks_per_op
                .map_or("-".to_owned(), |p| format!("{p:.2}")),
            sampler["runs"],
            sampler["ns_per_run"]
                .as_f64()
                .map_or("-".to_owned(), |ns| format!("{ns:.0}")),
        ));
    }
    for (index, mode) in [(DEFAULT, "default mode"), (EXACT, "--exact")] {
        let column = |f: &dyn Fn(&Sample) -> Option<String>| {
            results
                .iter()
                .filter_map(|(_, s)| f(&s[index]))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        out.push_str(&format!(
            "\n{mode}: attach (load + calibration + uprobes + tracepoints): {} ms; observer peak \
             RSS: {} MB; observer CPU: {} % of a core\n",
            column(&|s| s.attach_ms.map(|a| format!("{a:.0}"))),
            column(&|s| s
                .observer_rss_kb
                .map(|r| format!("{:.1}", r as f64 / 1024.0))),
            column(&|s| s.observer_cpu.map(|c| format!("{:.1}", 100.0 * c))),
        ));
    }
    out
}

fn to_json(results: &[(&str, Vec<Sample>)], go_version: &str) -> Value {
    let workloads: Vec<Value> = results
        .iter()
        .map(|(workload, samples)| {
            let tracers: serde_json::Map<String, Value> = TRACERS
                .iter()
                .zip(samples)
                .map(|(tracer, s)| {
                    (
                        tracer.name().to_owned(),
                        json!({
                            "ns_per_op": s.ns_per_op,
                            "hits_per_op": s.hits_per_op,
                            "attach_ms": s.attach_ms,
                            "observer_rss_kb": s.observer_rss_kb,
                            "observer_cpu": s.observer_cpu,
                            "probes": s.probes,
                        }),
                    )
                })
                .collect();
            json!({ "workload": workload, "tracers": tracers })
        })
        .collect();
    json!({ "go_version": go_version, "repetitions": REPETITIONS, "workloads": workloads })
}
