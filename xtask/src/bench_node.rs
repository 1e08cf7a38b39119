//! `cargo xtask bench node` (and the last part of `cargo xtask bench`): a node
//! of Go processes watched by one `gobpf-sched attach --all`.
//!
//! 50 processes of the bench's `node` workload (two goroutines making 50
//! round trips, then a 5 ms sleep, over and over: ~1% of a core each), built
//! with the oldest, the primary and the newest Go toolchain, run bare and
//! then watched by `attach --all --json --interval 1s` in its default mode (1%
//! budget per process), interleaved, `REPETITIONS` times. Measured: the time
//! from the observer's start until every one of the 50 is attached (its
//! stderr lines), the observer's peak RSS and CPU over the run, each process's
//! estimated overhead (its summary's `probes.estimated_overhead`), and the
//! workloads' round trips per second and CPU per round trip, bare against
//! watched.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    bench::{cpu_seconds, expect_line, json_lines, peak_rss_kb},
    toolchains,
};

pub const PROCESSES: usize = 50;
/// How long each process runs its load once told to go.
const RUN: Duration = Duration::from_secs(10);
const REPETITIONS: usize = 3;
/// Targets of the issue.
const ATTACH_TARGET_MS: f64 = 2000.0;
const RSS_TARGET_MB: f64 = 100.0;
/// The default budget (`--overhead-budget 1`).
const BUDGET: f64 = 0.01;
/// How long the observer may take to attach to all of them before the bench
/// gives up.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// The node part's results, medians over the repetitions (and each run).
pub struct NodeResults {
    versions: Vec<(String, usize)>,
    runs: Vec<(LoadRun, LoadRun, Observed)>,
}

/// One run of the 50 loads.
#[derive(Clone, Default)]
struct LoadRun {
    /// Round trips per second, all processes together.
    ops_per_s: f64,
    /// Their CPU time per round trip.
    cpu_ns_per_op: f64,
}

/// What the observer did in one watched run.
#[derive(Clone, Default)]
struct Observed {
    /// From its start until the last of the 50 was attached.
    attach_ms: f64,
    /// "watching N Go processes (loaded in X ms)": X, the kernel load and the
    /// scan of /proc (the sessions attach on their threads afterwards) ...
    loaded_ms: f64,
    /// ... and when that line came (since the observer's start).
    scan_done_ms: f64,
    /// When the first of the 50 was attached.
    first_attached_ms: f64,
    /// Each session's own "in M ms" (from its thread's start).
    session_ms: Vec<f64>,
    /// Go processes watched that are not the bench's (none with `--exe`).
    others: usize,
    rss_kb: u64,
    /// Its CPU time per second over the run (1.0 = a core) ...
    cpu_run: f64,
    /// ... and over the attach (its start until all 50 were attached).
    cpu_attach: f64,
    /// Each of the 50's estimated overhead, coverage and windows (its summary).
    overhead: Vec<f64>,
    coverage: Vec<f64>,
    windows: Vec<u64>,
}

/// Builds the `node` workload with up to three toolchains (oldest, primary,
/// newest): (go version, binary).
fn build(toolchains: &toolchains::Installed) -> Result<Vec<(String, PathBuf)>> {
    let root = toolchains::workspace_root();
    let dir = root.join("target/bench/node");
    std::fs::create_dir_all(&dir)?;
    let mut gos: Vec<&PathBuf> = vec![
        toolchains.go.first().context("no Go toolchain")?,
        toolchains.primary(),
        toolchains.newest(),
    ];
    gos.dedup();
    let mut built = Vec::new();
    for go in gos {
        let version = toolchains::go_version(go);
        let binary = dir.join(format!("nodeload-{version}"));
        toolchains::build_go(go, &root.join("xtask/bench"), &binary)?;
        built.push((version, binary));
    }
    Ok(built)
}

/// One started `node` workload, waiting for its go-ahead.
struct Load {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

/// Starts the 50 (the binaries in turn) and waits until each is ready.
fn start_loads(binaries: &[(String, PathBuf)]) -> Result<Vec<Load>> {
    let ms = RUN.as_millis().to_string();
    let mut loads = Vec::new();
    for i in 0..PROCESSES {
        let (_, binary) = &binaries[i % binaries.len()];
        let mut child = Command::new(binary)
            .args(["node", &ms])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the node workload")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        loads.push(Load { child, stdout });
    }
    for load in &mut loads {
        expect_line(&mut load.stdout, "ready")?;
    }
    Ok(loads)
}

/// Tells every load to go, waits for their results and their exits.
fn run_loads(loads: &mut [Load]) -> Result<LoadRun> {
    for load in loads.iter_mut() {
        load.child
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"go\n")?;
    }
    let (mut ops_per_s, mut ops, mut cpu_ns) = (0.0, 0.0, 0.0);
    for load in loads.iter_mut() {
        // "ops R cpu_ns C elapsed_ns E"
        let line = expect_line(&mut load.stdout, "ops ")?;
        let fields: Vec<f64> = line
            .split(' ')
            .skip(1)
            .step_by(2)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad result line {line:?}"))?;
        let [r, c, e] = fields[..] else {
            bail!("bad result line {line:?}");
        };
        ops_per_s += r * 1e9 / e;
        ops += r;
        cpu_ns += c;
    }
    for load in loads.iter_mut() {
        let _ = load.child.wait();
    }
    Ok(LoadRun {
        ops_per_s,
        cpu_ns_per_op: cpu_ns / ops.max(1.0),
    })
}

const SIGINT: i32 = 2;
unsafe extern "C" {
    fn kill(pid: i32, signal: i32) -> i32;
}

/// The 50 under `gobpf-sched attach --all`: attach, then the run. `--exe`
/// keeps the observer to the bench's executables (it still scans every
/// process of the host): other Go programs running here (tests) are left
/// alone, and do not slow the attach.
fn observe(
    observer: &Path,
    binaries: &[(String, PathBuf)],
    loads: &mut [Load],
    log: &Path,
) -> Result<(LoadRun, Observed)> {
    let ours: HashSet<u32> = loads.iter().map(|l| l.child.id()).collect();
    let started = Instant::now();
    let mut tracer = Command::new(observer)
        .args(["attach", "--all", "--json", "--interval", "1s", "--verbose"])
        .args(binaries.iter().flat_map(|(_, binary)| {
            [
                "--exe".into(),
                binary.file_name().unwrap_or_default().to_owned(),
            ]
        }))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let tracer_pid = tracer.id();
    let stderr = BufReader::new(tracer.stderr.take().context("stderr")?);
    let (lines_tx, lines_rx) = mpsc::channel();
    let stderr = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send((started.elapsed(), line.clone()));
            all.push(line);
        }
        all
    });
    let stdout = json_lines(&mut tracer)?;

    let mut observed = Observed::default();
    let mut attached: HashMap<u32, f64> = HashMap::new();
    let mut others = HashSet::new();
    while attached.len() < PROCESSES {
        let Some(left) = ATTACH_TIMEOUT.checked_sub(started.elapsed()) else {
            break;
        };
        let Ok((at, line)) = lines_rx.recv_timeout(left) else {
            break;
        };
        let ms = at.as_secs_f64() * 1e3;
        if let Some(rest) = line.strip_prefix("gobpf-sched: watching ") {
            observed.scan_done_ms = ms;
            observed.loaded_ms = rest
                .split("loaded in ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("gobpf-sched: attached to process ") {
            let pid: u32 = rest.split(' ').next().unwrap_or("").parse().unwrap_or(0);
            if ours.contains(&pid) {
                attached.insert(pid, ms);
                if let Some(own) = crate::bench::attach_ms(&line) {
                    observed.session_ms.push(own);
                }
            } else {
                others.insert(pid);
            }
        } else if line.starts_with("gobpf-sched: not watching process ")
            && ours
                .iter()
                .any(|pid| line.contains(&format!("process {pid} ")))
        {
            bail!("gobpf-sched could not watch a bench process: {line}");
        }
    }
    if attached.len() < PROCESSES {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { kill(tracer_pid as i32, SIGINT) };
        let _ = tracer.wait();
        bail!(
            "gobpf-sched attached to {} of the {PROCESSES} processes in {:?}: {}",
            attached.len(),
            ATTACH_TIMEOUT,
            stderr.join().unwrap_or_default().join("\n")
        );
    }
    let attach_elapsed = started.elapsed();
    let cpu_at_attach = cpu_seconds(tracer_pid).unwrap_or(0.0);
    observed.attach_ms = attached.values().copied().fold(0.0, f64::max);
    observed.first_attached_ms = attached.values().copied().fold(f64::MAX, f64::min);
    observed.cpu_attach = cpu_at_attach / attach_elapsed.as_secs_f64();

    let (cpu_before, run_started) = (cpu_seconds(tracer_pid), Instant::now());
    let load_run = run_loads(loads)?;
    observed.cpu_run = cpu_seconds(tracer_pid)
        .zip(cpu_before)
        .map_or(0.0, |(after, before)| {
            (after - before) / run_started.elapsed().as_secs_f64()
        });
    // The sessions end with their processes (each prints its summary);
    // give them a moment, then stop the observer.
    std::thread::sleep(Duration::from_secs(2));
    observed.rss_kb = peak_rss_kb(tracer_pid).unwrap_or(0);
    // Others seen since the attach.
    for (_, line) in lines_rx.try_iter() {
        if let Some(pid) = line
            .strip_prefix("gobpf-sched: attached to process ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .filter(|pid| !ours.contains(pid))
        {
            others.insert(pid);
        }
    }
    observed.others = others.len();
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { kill(tracer_pid as i32, SIGINT) };
    let status = tracer.wait()?;
    let summaries: Vec<Value> = stdout
        .join()
        .map_err(|_| anyhow::anyhow!("reading the observer's output failed"))?
        .into_iter()
        .filter(|v| v["type"] == "summary")
        .collect();
    let stderr = stderr.join().unwrap_or_default();
    std::fs::write(log, stderr.join("\n"))
        .with_context(|| format!("cannot write {}", log.display()))?;
    for pid in &ours {
        let summary = summaries
            .iter()
            .find(|v| v["pid"].as_u64() == Some(u64::from(*pid)))
            .with_context(|| {
                format!(
                    "no summary for process {pid} ({status}): {}",
                    stderr.join("\n")
                )
            })?;
        let probes = &summary["probes"];
        observed
            .overhead
            .push(probes["estimated_overhead"].as_f64().unwrap_or(0.0));
        observed
            .coverage
            .push(probes["coverage"].as_f64().unwrap_or(0.0));
        observed
            .windows
            .push(probes["windows"].as_u64().unwrap_or(0));
    }
    Ok((load_run, observed))
}

/// Where the observer's stderr (`--verbose`: each window's reasoning) of run
/// `repetition` is kept.
fn observer_log(repetition: usize) -> PathBuf {
    toolchains::workspace_root().join(format!("target/bench/node-observer-{repetition}.log"))
}

pub fn run(toolchains: &toolchains::Installed) -> Result<NodeResults> {
    let observer = toolchains::workspace_root().join("target/release/gobpf-sched");
    let binaries = build(toolchains)?;
    let versions = binaries
        .iter()
        .enumerate()
        .map(|(i, (version, _))| {
            let count = (0..PROCESSES).filter(|p| p % binaries.len() == i).count();
            (version.clone(), count)
        })
        .collect();
    let mut runs = Vec::new();
    for repetition in 1..=REPETITIONS {
        eprintln!("bench: {PROCESSES} Go processes bare ({repetition}/{REPETITIONS})");
        let bare = run_loads(&mut start_loads(&binaries)?)?;
        std::thread::sleep(Duration::from_millis(500));
        eprintln!(
            "bench: {PROCESSES} Go processes under gobpf-sched attach --all \
             ({repetition}/{REPETITIONS})"
        );
        let mut loads = start_loads(&binaries)?;
        let log = observer_log(repetition);
        let watched = observe(&observer, &binaries, &mut loads, &log);
        if watched.is_err() {
            for load in &mut loads {
                let _ = load.child.kill();
                let _ = load.child.wait();
            }
        }
        let (watched, observed) = watched?;
        eprintln!(
            "bench: attached in {:.0} ms, ratio {:.3}",
            observed.attach_ms,
            watched.ops_per_s / bare.ops_per_s
        );
        runs.push((bare, watched, observed));
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(NodeResults { versions, runs })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

impl NodeResults {
    /// The median over the runs of `f`, and each run's value.
    fn per_run(&self, f: impl Fn(&(LoadRun, LoadRun, Observed)) -> f64) -> (f64, Vec<f64>) {
        let values: Vec<f64> = self.runs.iter().map(f).collect();
        (median(values.clone()), values)
    }

    pub fn render(&self) -> String {
        let versions: Vec<String> = self
            .versions
            .iter()
            .map(|(version, count)| format!("{count} {version}"))
            .collect();
        let list = |values: &[f64], digits: usize| {
            values
                .iter()
                .map(|v| format!("{v:.digits$}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let mut out = format!(
            "\nNode-wide: {PROCESSES} Go processes ({}), each two goroutines making 50 round \
             trips then sleeping 5 ms, for {} s; bare, then under `gobpf-sched attach --all \
             --exe nodeload-… --json --interval 1s` (default mode, 1% budget per process); medians of \
             {REPETITIONS} interleaved runs (each run's value after the median)\n\n\
             | measure | target | median | runs | |\n|---|---|---|---|---|\n",
            versions.join(", "),
            RUN.as_secs()
        );
        let (attach, attach_runs) = self.per_run(|(_, _, o)| o.attach_ms);
        out.push_str(&format!(
            "| attach: observer start → all {PROCESSES} attached | ≤ {ATTACH_TARGET_MS:.0} ms | \
             {attach:.0} ms | {} | {} |\n",
            list(&attach_runs, 0),
            verdict(attach <= ATTACH_TARGET_MS)
        ));
        let (loaded, loaded_runs) = self.per_run(|(_, _, o)| o.loaded_ms);
        out.push_str(&format!(
            "| … of which kernel load + /proc scan (\"loaded in\") | | {loaded:.0} ms | {} | |\n",
            list(&loaded_runs, 0)
        ));
        let (first, first_runs) = self.per_run(|(_, _, o)| o.first_attached_ms);
        out.push_str(&format!(
            "| … first process attached at | | {first:.0} ms | {} | |\n",
            list(&first_runs, 0)
        ));
        let (session, session_runs) = self.per_run(|(_, _, o)| median(o.session_ms.clone()));
        let (session_max, session_max_runs) = self.per_run(|(_, _, o)| max(&o.session_ms));
        out.push_str(&format!(
            "| … each session's own attach (\"in M ms\"), median / max over processes | | \
             {session:.0} / {session_max:.0} ms | {} / {} | |\n",
            list(&session_runs, 0),
            list(&session_max_runs, 0)
        ));
        let (rss, rss_runs) = self.per_run(|(_, _, o)| o.rss_kb as f64 / 1024.0);
        out.push_str(&format!(
            "| observer peak RSS | ≤ {RSS_TARGET_MB:.0} MB | {rss:.1} MB | {} | {} |\n",
            list(&rss_runs, 1),
            verdict(rss <= RSS_TARGET_MB)
        ));
        let (cpu, cpu_runs) = self.per_run(|(_, _, o)| 100.0 * o.cpu_run);
        out.push_str(&format!(
            "| observer CPU over the run | | {cpu:.1}% of a core | {} | |\n",
            list(&cpu_runs, 1)
        ));
        let (cpu_attach, cpu_attach_runs) = self.per_run(|(_, _, o)| 100.0 * o.cpu_attach);
        out.push_str(&format!(
            "| observer CPU during the attach | | {cpu_attach:.0}% of a core | {} | |\n",
            list(&cpu_attach_runs, 0)
        ));
        let (worst, worst_runs) = self.per_run(|(_, _, o)| 100.0 * max(&o.overhead));
        let (typical, typical_runs) = self.per_run(|(_, _, o)| 100.0 * median(o.overhead.clone()));
        out.push_str(&format!(
            "| estimated overhead per process (its summary), max / median over the \
             {PROCESSES} | ≤ {:.0}% | {worst:.2}% / {typical:.2}% | {} / {} | {} |\n",
            100.0 * BUDGET,
            list(&worst_runs, 2),
            list(&typical_runs, 2),
            verdict(worst <= 100.0 * BUDGET)
        ));
        let (coverage, coverage_runs) =
            self.per_run(|(_, _, o)| 100.0 * median(o.coverage.clone()));
        let (windows, windows_runs) =
            self.per_run(|(_, _, o)| median(o.windows.iter().map(|&w| w as f64).collect()));
        out.push_str(&format!(
            "| probes' coverage / windows per process (medians) | | {coverage:.2}% / {windows:.0} \
             | {} / {} | |\n",
            list(&coverage_runs, 2),
            list(&windows_runs, 0)
        ));
        let (bare_ops, bare_ops_runs) = self.per_run(|(b, _, _)| b.ops_per_s);
        let (watched_ops, watched_ops_runs) = self.per_run(|(_, w, _)| w.ops_per_s);
        let (ops_ratio, ops_ratio_runs) = self.per_run(|(b, w, _)| w.ops_per_s / b.ops_per_s);
        out.push_str(&format!(
            "| round trips/s, all {PROCESSES}: bare → watched | | {bare_ops:.0} → \
             {watched_ops:.0} ({ops_ratio:.3}×) | {} → {} ({}) | |\n",
            list(&bare_ops_runs, 0),
            list(&watched_ops_runs, 0),
            list(&ops_ratio_runs, 3)
        ));
        let (bare_cpu, bare_cpu_runs) = self.per_run(|(b, _, _)| b.cpu_ns_per_op);
        let (watched_cpu, watched_cpu_runs) = self.per_run(|(_, w, _)| w.cpu_ns_per_op);
        let (cpu_ratio, cpu_ratio_runs) =
            self.per_run(|(b, w, _)| w.cpu_ns_per_op / b.cpu_ns_per_op);
        out.push_str(&format!(
            "| workloads' CPU per round trip: bare → watched | | {bare_cpu:.0} → \
             {watched_cpu:.0} ns ({cpu_ratio:.3}×) | {} → {} ({}) | |\n",
            list(&bare_cpu_runs, 0),
            list(&watched_cpu_runs, 0),
            list(&cpu_ratio_runs, 3)
        ));
        let others: Vec<String> = self
            .runs
            .iter()
            .map(|(_, _, o)| o.others.to_string())
            .collect();
        out.push_str(&format!(
            "\nother processes watched (none expected: `--exe` keeps the observer to the \
             bench's executables): {}\n",
            others.join(" / ")
        ));
        out
    }

    pub fn to_json(&self) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|(bare, watched, o)| {
                json!({
                    "bare": {"ops_per_s": bare.ops_per_s, "cpu_ns_per_op": bare.cpu_ns_per_op},
                    "watched": {"ops_per_s": watched.ops_per_s,
                                "cpu_ns_per_op": watched.cpu_ns_per_op},
                    "attach_ms": o.attach_ms,
                    "loaded_ms": o.loaded_ms,
                    "scan_done_ms": o.scan_done_ms,
                    "first_attached_ms": o.first_attached_ms,
                    "session_attach_ms": o.session_ms,
                    "observer_rss_kb": o.rss_kb,
                    "observer_cpu_run": o.cpu_run,
                    "observer_cpu_attach": o.cpu_attach,
                    "estimated_overhead": o.overhead,
                    "coverage": o.coverage,
                    "windows": o.windows,
                    "other_processes_watched": o.others,
                })
            })
            .collect();
        json!({
            "processes": PROCESSES,
            "run_s": RUN.as_secs(),
            "versions": self.versions,
            "targets": {"attach_ms": ATTACH_TARGET_MS, "rss_mb": RSS_TARGET_MB,
                        "overhead": BUDGET},
            "runs": runs,
        })
    }
}
