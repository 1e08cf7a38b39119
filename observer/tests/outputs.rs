//! What users look at, each checked with the real tool it targets: the
//! scheduler state against the runtime's own `GODEBUG=schedtrace`, the
//! Prometheus exporter with promtool and a real Prometheus running every query
//! of the shipped Grafana dashboard, the live screen inside tmux, and the
//! Perfetto recording parsed with the Trace proto of the `perfetto` package.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use common::{
    Fixture, Mode, Observer, Prometheus, Tmux, Toolchain, build, count, full_matrix_toolchains,
    goids, goroutine, http_get, observer_binary, perfetto_summary, promtool, scratch_dir,
    toolchains, traced_run,
};
use serde_json::Value;

const SPINNERS: usize = 40;

/// The crowd fixture on 2 Ps, waiting for its go-ahead; `stderr` gets the
/// runtime's schedtrace lines when `schedtrace_ms` is given.
fn crowd(binary: &Path, run_ms: u64, schedtrace_ms: Option<u64>, stderr: Option<&Path>) -> Fixture {
    let mut command = Command::new(binary);
    command
        .args([SPINNERS.to_string(), run_ms.to_string()])
        .env("GOMAXPROCS", "2");
    if let Some(ms) = schedtrace_ms {
        command.env("GODEBUG", format!("schedtrace={ms}"));
    }
    if let Some(path) = stderr {
        command.stderr(std::fs::File::create(path).expect("stderr file"));
    }
    Fixture::spawn_command(command)
}

/// One `SCHED` line of schedtrace, or one `sched` object of the observer.
#[derive(Debug, Clone)]
struct Sample {
    gomaxprocs: u64,
    idle_procs: u64,
    threads: u64,
    /// Global run queue + every P's local run queue (runnext not included:
    /// schedtrace leaves it out).
    queued: u64,
}

/// `SCHED 200ms: gomaxprocs=2 idleprocs=0 threads=4 ... runqueue=19 [ 10 12 ] ...`
fn parse_schedtrace(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with("SCHED "))
        .map(|line| {
            let field = |name: &str| -> u64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no {name} in {line}"))
            };
            let local: u64 = line
                .split('[')
                .nth(1)
                .and_then(|rest| rest.split(']').next())
                .expect("local run queues")
                .split_whitespace()
                .map(|n| n.parse::<u64>().unwrap())
                .sum();
            Sample {
                gomaxprocs: field("gomaxprocs"),
                idle_procs: field("idleprocs"),
                threads: field("threads"),
                queued: field("runqueue") + local,
            }
        })
        .collect()
}

fn observer_samples(intervals: &[Value]) -> Vec<Sample> {
    intervals
        .iter()
        .filter_map(|i| i.get("sched").filter(|s| !s.is_null()))
        .map(|s| Sample {
            gomaxprocs: count(s, "gomaxprocs"),
            idle_procs: count(s, "idle_procs"),
            threads: count(s, "threads"),
            queued: count(s, "global_runq")
                + s["procs"]
                    .as_array()
                    .expect("procs")
                    .iter()
                    .map(|p| count(p, "runq"))
                    .sum::<u64>(),
        })
        .collect()
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

/// The observer reads runtime.sched and runtime.allp while the runtime prints
/// its own schedtrace of the same process, over the same seconds. Tolerances:
/// GOMAXPROCS exact; threads within the range schedtrace shows (±1: an M can be
/// started between two reads); idle Ps 0 while the spinners run (median);
/// goroutines queued (global + local) while busy: medians within 30% or 8 of
/// each other (the queues move every few microseconds; the two sample at
/// different instants).
#[test]
fn scheduler_state_matches_schedtrace() {
    let mut cases: Vec<(Toolchain, Mode)> = full_matrix_toolchains()
        .into_iter()
        .map(|t| (t, Mode::Default))
        .collect();
    // Stripped: runtime.sched and runtime.allp found in runtime.schedtrace's code.
    cases.extend(toolchains().into_iter().map(|t| (t, Mode::Stripped)));
    let dir = scratch_dir("schedtrace");
    for (toolchain, mode) in cases {
        let v = format!("{} {mode:?}", toolchain.version);
        let binary = build(&toolchain, "crowd", mode);
        let trace_path = dir.join("schedtrace.txt");
        let mut fixture = crowd(&binary, 1500, Some(100), Some(&trace_path));
        let observer = Observer::attach(fixture.pid(), &["--json", "--interval", "100ms"]);
        fixture.start();
        let (status, output) = fixture.finish();
        assert!(status.success() && output.contains("done"), "{v}");
        let run = observer.wait();
        assert!(run.status.success(), "{v}: {}", run.stderr);
        assert!(
            !run.stderr.contains("no run-queue state"),
            "{v}: {}",
            run.stderr
        );

        let theirs = parse_schedtrace(&std::fs::read_to_string(&trace_path).unwrap());
        let intervals: Vec<Value> = run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "interval")
            .collect();
        let ours = observer_samples(&intervals);
        assert!(
            ours.len() >= 10 && theirs.len() >= 10,
            "{v}: {ours:?} {theirs:?}"
        );
        assert!(ours.iter().all(|s| s.gomaxprocs == 2), "{v}: {ours:?}");
        assert!(theirs.iter().all(|s| s.gomaxprocs == 2), "{v}: {theirs:?}");
        let (low, high) = (
            theirs.iter().map(|s| s.threads).min().unwrap(),
            theirs.iter().map(|s| s.threads).max().unwrap(),
        );
        assert!(
            ours.iter()
                .all(|s| (low.saturating_sub(1)..=high + 1).contains(&s.threads)),
            "{v}: threads {ours:?} vs schedtrace {low}..={high}"
        );
        let busy = |samples: &[Sample]| -> Vec<Sample> {
            samples.iter().filter(|s| s.queued > 5).cloned().collect()
        };
        let (our_busy, their_busy) = (busy(&ours), busy(&theirs));
        assert!(
            our_busy.len() >= 5 && their_busy.len() >= 5,
            "{v}: busy samples {our_busy:?} / {their_busy:?}"
        );
        let ours_queued = median(our_busy.iter().map(|s| s.queued).collect());
        let theirs_queued = median(their_busy.iter().map(|s| s.queued).collect());
        let tolerance = (theirs_queued * 3 / 10).max(8);
        assert!(
            ours_queued.abs_diff(theirs_queued) <= tolerance,
            "{v}: queued goroutines {ours_queued} vs schedtrace {theirs_queued}"
        );
        assert!(ours_queued >= SPINNERS as u64 / 2, "{v}: {ours_queued}");
        assert_eq!(median(our_busy.iter().map(|s| s.idle_procs).collect()), 0);
        assert_eq!(median(their_busy.iter().map(|s| s.idle_procs).collect()), 0);
        let torn = intervals
            .iter()
            .filter(|i| i["sched"]["approximate"] == true)
            .count();
        assert!(torn * 2 <= intervals.len(), "{v}: {torn} torn reads");
    }
}

fn dashboards() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// Every PromQL expression of the dashboard, with Grafana's `$__rate_interval`
/// made concrete.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(dashboards().join("gobpf-sched.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "2s");
            queries.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    queries
}

/// The value of the sample `series` (name and labels, as written) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
}

/// Every sample of the family `name` (labels included), with its value.
fn samples<'a>(scrape: &'a str, name: &str) -> Vec<(&'a str, f64)> {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
        .collect()
}

/// The runtime counters the observer says the Go version does not keep
/// (`runtime.not_kept` of its JSON lines), and the metrics that show them.
fn metrics_not_kept(lines: &[Value]) -> Vec<&'static str> {
    let not_kept: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["runtime"]["not_kept"].as_object())
        .flat_map(|kept| kept.keys().map(String::as_str))
        .collect();
    [
        (
            "run_queue_latency",
            "gobpf_sched_go_sched_latencies_seconds",
        ),
        ("stw_gc_pauses", "gobpf_sched_go_stw_pauses_total"),
        ("stw_other_pauses", "gobpf_sched_go_stw_pauses_total"),
        ("mutex_wait_ns", "gobpf_sched_go_mutex_wait_seconds_total"),
        (
            "goroutines_created",
            "gobpf_sched_go_goroutines_created_total",
        ),
        ("gc_cycles", "gobpf_sched_go_gc_cycles_total"),
    ]
    .into_iter()
    .filter(|(fact, _)| not_kept.contains(fact))
    .map(|(_, metric)| metric)
    .collect()
}

/// The runtime's own run-queue latency histogram in a scrape: a real
/// Prometheus histogram (`le` increasing, counts cumulative up to +Inf, which
/// is the count), on the runtime's bucket bounds: every bound of the buckets
/// the observer's JSON reports since the process started is an `le` (all of
/// them from Go 1.20; Go 1.19's 16 sub-buckets per power of two are exported
/// 4 by 4). Returns the count.
fn check_runtime_histogram(scrape: &str, since_start: &Value, toolchain: &Toolchain) -> f64 {
    let name = "gobpf_sched_go_sched_latencies_seconds";
    let buckets: Vec<(f64, f64)> = samples(scrape, &format!("{name}_bucket"))
        .into_iter()
        .map(|(series, count)| {
            let le = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, count)
        })
        .collect();
    let count = sample(scrape, &format!("{name}_count")).expect("a count");
    assert!(buckets.len() > 20, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, count)));
    assert!(count > 0.0);
    assert!(sample(scrape, &format!("{name}_sum")).is_some_and(|sum| sum > 0.0));
    if toolchain.minor() >= (1, 20) {
        for bucket in since_start["buckets"].as_array().expect("buckets") {
            let to_ns = bucket["to_ns"].as_u64().unwrap();
            if to_ns == u64::MAX {
                continue;
            }
            let bound = to_ns as f64 / 1e9;
            assert!(
                buckets
                    .iter()
                    .any(|(le, _)| (le - bound).abs() <= bound * 1e-9),
                "{bound} s is not an le: {buckets:?}"
            );
        }
    }
    count
}

#[test]
fn prometheus_scrapes_the_observer_and_the_dashboard_queries_return_data() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "crowd", Mode::Default);
    let dir = scratch_dir("prometheus");

    let (valid, report) = promtool(
        &[
            "check",
            "config",
            dashboards().join("prometheus.yml").to_str().unwrap(),
        ],
        None,
    );
    assert!(valid, "shipped prometheus.yml: {report}");

    let mut fixture = crowd(&binary, 30_000, None, None);
    let observer = Observer::attach(
        fixture.pid(),
        &[
            "--json",
            "--interval",
            "100ms",
            "--prometheus",
            "127.0.0.1:0",
        ],
    );
    let address = observer
        .stderr_lines
        .iter()
        .find_map(|l| l.strip_prefix("gobpf-sched: Prometheus metrics on http://"))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .expect("the metrics address")
        .to_owned();
    fixture.start();
    // The classic text format for curl and promtool, OpenMetrics when asked.
    // Scraped once over 100 latencies are in (≥ 0.5 s; longer on a busy machine).
    let scrape_once = || {
        let (status, scrape) = http_get(&address, "/metrics", None);
        assert_eq!(status, 200);
        scrape
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    thread::sleep(Duration::from_millis(500));
    let mut scrape = scrape_once();
    while !scrape.lines().any(|l| {
        l.strip_prefix("gobpf_sched_runq_latency_seconds_count ")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > 100)
    }) && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(200));
        scrape = scrape_once();
    }
    let (valid, report) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(valid, "promtool check metrics: {report}\n{scrape}");
    for series in [
        "gobpf_sched_local_runq_length{p=\"0\"}",
        "gobpf_sched_local_runq_length{p=\"1\"}",
        "gobpf_sched_gomaxprocs 2",
        "gobpf_sched_parks_total{reason=\"sleep\"}",
        "gobpf_sched_runq_latency_seconds_count",
    ] {
        assert!(scrape.contains(series), "no {series} in {scrape}");
    }
    // Histogram buckets are cumulative and end with the count.
    let buckets: Vec<u64> = scrape
        .lines()
        .filter(|l| l.starts_with("gobpf_sched_runq_latency_seconds_bucket"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    let total: u64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("gobpf_sched_runq_latency_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&total), "{buckets:?}");
    assert!(total > 100, "{total}");
    let (_, openmetrics) = http_get(
        &address,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(openmetrics.trim_end().ends_with("# EOF"), "{openmetrics}");
    assert!(
        openmetrics.contains("# UNIT gobpf_sched_probe_coverage_ratio ratio"),
        "{openmetrics}"
    );

    // What the probes cost: exact mode (the tests' default), so attached
    // throughout; the estimate and the budget are shares.
    let value =
        |series: &str| sample(&scrape, series).unwrap_or_else(|| panic!("no {series} in {scrape}"));
    assert_eq!(value("gobpf_sched_probe_coverage_ratio"), 1.0);
    let budget = value("gobpf_sched_overhead_budget_ratio");
    assert!(budget > 0.0 && budget <= 1.0, "{budget}");
    assert!(value("gobpf_sched_probe_estimated_overhead_ratio") >= 0.0);
    assert!(value("gobpf_sched_probe_hit_cost_seconds") > 0.0);
    assert!(value("gobpf_sched_probe_attached_seconds_total") > 0.0);
    assert!(value("gobpf_sched_probe_hits_total") > 0.0);
    // The census: the spinners are the program's goroutines, most of them
    // runnable; the waiting ones by reason add up to those waiting (the main
    // goroutine waits for them all along).
    let by_state = samples(&scrape, "gobpf_sched_goroutines");
    let program: f64 = by_state.iter().map(|(_, n)| n).sum();
    assert!(program >= SPINNERS as f64, "{by_state:?}");
    let waiting = value("gobpf_sched_goroutines{state=\"waiting\"}");
    let by_reason = samples(&scrape, "gobpf_sched_goroutines_waiting");
    assert!(waiting >= 1.0, "{by_state:?}");
    assert_eq!(
        by_reason.iter().map(|(_, n)| n).sum::<f64>(),
        waiting,
        "{by_reason:?}"
    );
    assert!(value("gobpf_sched_runtime_goroutines") >= 1.0);
    assert!(value("gobpf_sched_goroutine_longest_wait_seconds") > 0.0);
    // The Ps' own tick counters, one per P, since the process started.
    for p in 0..2 {
        assert!(value(&format!("gobpf_sched_p_schedticks_total{{p=\"{p}\"}}")) > 0.0);
        assert!(
            sample(
                &scrape,
                &format!("gobpf_sched_p_syscallticks_total{{p=\"{p}\"}}")
            )
            .is_some()
        );
    }

    // What the process is: one info series, its labels.
    let info = scrape
        .lines()
        .find(|l| l.starts_with("gobpf_sched_process_info{"))
        .unwrap_or_else(|| panic!("no process info:\n{scrape}"));
    assert!(
        info.contains(&format!("pid=\"{}\"", fixture.pid())),
        "{info}"
    );
    assert!(
        info.contains(&format!("go_version=\"{}\"", toolchain.version)),
        "{info}"
    );
    assert!(info.ends_with(" 1"), "{info}");

    // The CPU samples: the spinners' start functions hold the CPU, and the Ps
    // while the other spinners wait (more spinners than Ps).
    assert!(
        value("gobpf_sched_cpu_sampled_seconds_total") > 0.0,
        "{scrape}"
    );
    for metric in [
        "gobpf_sched_cpu_by_start_function_seconds_total",
        "gobpf_sched_run_queue_waiting_by_holder_total",
    ] {
        assert!(
            scrape
                .lines()
                .any(|l| l.starts_with(&format!("{metric}{{start_function=\"main.main."))),
            "no {metric} of the spinners:\n{scrape}"
        );
    }

    // A real Prometheus with the shipped configuration (10 ms scrapes),
    // pointed at this observer.
    let config = std::fs::read_to_string(dashboards().join("prometheus.yml"))
        .unwrap()
        .replace("localhost:9464", &address);
    let prometheus = Prometheus::start(&dir, &config);
    prometheus.wait_for_a_scrape(Duration::from_secs(30));
    thread::sleep(Duration::from_secs(3)); // a few hundred scrapes, rate windows filled

    let mut empty: Vec<(String, String)> = Vec::new();
    for (panel, expr) in dashboard_queries() {
        let (status, body) = prometheus.query(&expr);
        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(status, 200, "{panel}: {expr}: {body}");
        assert_eq!(answer["status"], "success", "{panel}: {expr}: {body}");
        if answer["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            empty.push((panel, expr));
        }
    }
    let targets = prometheus.targets();
    drop(prometheus);
    assert!(targets.contains("\"health\":\"up\""), "{targets}");

    drop(fixture); // killed: the observer ends with it
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let lines = run.json();
    // What the Go version does not keep has no series, and no query of it is
    // required to return data; everything else is there.
    let not_kept = metrics_not_kept(&lines);
    let empty: Vec<String> = empty
        .into_iter()
        .filter(|(_, expr)| !not_kept.iter().any(|metric| expr.contains(metric)))
        .map(|(panel, expr)| format!("{panel}: {expr}"))
        .collect();
    assert!(
        empty.is_empty(),
        "queries without data ({} keeps all but {not_kept:?}): {empty:#?}\ntargets: {targets}",
        toolchain.version
    );
    for metric in [
        "gobpf_sched_go_sched_latencies_seconds",
        "gobpf_sched_go_stw_pauses_total",
        "gobpf_sched_go_mutex_wait_seconds_total",
        "gobpf_sched_go_goroutines_created_total",
        "gobpf_sched_go_gc_cycles_total",
    ] {
        assert_eq!(
            scrape.contains(&format!("\n{metric}")),
            !not_kept.contains(&metric),
            "{metric} ({}, not kept: {not_kept:?}):\n{scrape}",
            toolchain.version
        );
    }
    let summary = run.only("summary");
    if !not_kept.contains(&"gobpf_sched_go_sched_latencies_seconds") {
        let since_start = &summary["runtime_since_start"]["run_queue_latency"];
        let scraped = check_runtime_histogram(&scrape, since_start, &toolchain);
        // Scraped before the observer's last read.
        assert!(
            scraped <= count(since_start, "count") as f64,
            "{scraped} {since_start}"
        );
    }
    // Since the process started (the runtime) ≥ since attach (the probes,
    // exact mode), read no earlier.
    if let Some(created) = sample(&scrape, "gobpf_sched_go_goroutines_created_total") {
        assert!(
            created >= value("gobpf_sched_goroutines_created_total"),
            "{scrape}"
        );
    }
}

/// The overhead budget the live screen runs with (percent), shown in its title.
const SCREEN_BUDGET: &str = "0.5";

/// `gobpf-sched attach --pid PID` on the live screen in tmux, once it shows.
fn live_screen(pid: u32) -> Tmux {
    let tmux = Tmux::start(&format!(
        "{} attach --pid {pid} --interval 200ms --overhead-budget {SCREEN_BUDGET}; \
         echo observer-exit=$?; sleep 60",
        observer_binary()
    ));
    tmux.wait_for("GOMAXPROCS");
    tmux
}

/// The text inside the bordered panel whose title holds `title`, a line per
/// row, borders left out.
fn panel(screen: &str, title: &str) -> Vec<String> {
    let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
    let (top, at) = screen
        .lines()
        .enumerate()
        .find_map(|(i, line)| Some((i, line[..line.find(title)?].chars().count())))
        .unwrap_or_else(|| panic!("no panel {title:?}:\n{screen}"));
    let left = lines[top][..at]
        .iter()
        .rposition(|&c| c == '┌')
        .expect("the panel's left corner");
    let right = at
        + lines[top][at..]
            .iter()
            .position(|&c| c == '┐')
            .expect("the panel's right corner");
    lines[top + 1..]
        .iter()
        .take_while(|line| line.get(left) == Some(&'│'))
        .map(|line| line[left + 1..right.min(line.len())].iter().collect())
        .collect()
}

/// The rows of the table under `header` in `rows`, from that header's column
/// on, split into words; up to the next header (a row holding `until`).
fn table_below(rows: &[String], header: &str, until: Option<&str>) -> Vec<Vec<String>> {
    let Some(at) = rows.iter().position(|r| r.contains(header)) else {
        return Vec::new();
    };
    let column = rows[at][..rows[at].find(header).unwrap()].chars().count();
    rows[at + 1..]
        .iter()
        .take_while(|r| until.is_none_or(|until| !r.contains(until)))
        .map(|r| {
            r.chars()
                .skip(column)
                .collect::<String>()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .filter(|words: &Vec<String>| !words.is_empty())
        .collect()
}

/// What the census panel of the live screen shows: the program's goroutines
/// (from its title), the waiting ones by reason, the longest waiters as
/// (goid, start function).
struct CensusPanel {
    program: u64,
    waiting_by_reason: Vec<(String, u64)>,
    longest_waiters: Vec<(u64, String)>,
}

fn census_panel(screen: &str) -> CensusPanel {
    let title = screen
        .lines()
        .find_map(|l| l.split("goroutines: ").nth(1))
        .unwrap_or_else(|| panic!("no census panel:\n{screen}"));
    let program = title
        .split(" of the program")
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{title}"));
    let rows = panel(screen, "goroutines: ");
    let waiting_by_reason = table_below(&rows, "WAIT REASON", Some("WAITING ≥"))
        .into_iter()
        .filter_map(|mut words| {
            let count = words.pop()?.parse().ok()?;
            Some((words.join(" "), count))
        })
        .collect();
    let longest_waiters = table_below(&rows, "GOID", None)
        .into_iter()
        .filter_map(|words| Some((words.first()?.parse().ok()?, words.last()?.clone())))
        .collect();
    CensusPanel {
        program,
        waiting_by_reason,
        longest_waiters,
    }
}

/// The live screen, in a real terminal: numbers, keys, and the terminal given
/// back (with the summary) on `q` and when the target exits.
#[test]
fn live_screen_in_tmux() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "crowd", Mode::Default);
    let mut fixture = crowd(&binary, 6000, None, None);
    let pid = fixture.pid();
    let tmux = live_screen(pid);
    fixture.start();
    thread::sleep(Duration::from_millis(2500));
    let screen = tmux.wait_for("PREEMPT tid");
    let line_of = |label: &str| {
        screen
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no {label:?} on the screen:\n{screen}"))
            .to_owned()
    };
    assert!(line_of("gobpf-sched — pid").contains(&format!("pid {pid} {}", toolchain.version)));
    assert!(line_of("GOMAXPROCS").contains(" 2 "), "{screen}");
    assert!(line_of("idle Ps").contains(" 0 "), "{screen}");
    let bars = line_of(" P0 ");
    assert!(bars.contains(" P1 ") && bars.contains("global"), "{bars}");
    assert!(line_of("sleep ").contains("sleep"), "{screen}");
    // The spinners are the busiest goroutines, named by their start function
    // (`main.main.func1`, or its `main.main.gowrap1` wrapper from Go 1.22 on).
    assert!(line_of("busiest goroutines").contains("busiest"));
    assert!(screen.contains("  main.main."), "{screen}");
    // The title: the probes' coverage and estimated cost against the budget
    // asked for.
    let title = line_of("gobpf-sched — pid");
    let share = |before: &str, after: &str| -> f64 {
        title
            .split(before)
            .nth(1)
            .and_then(|rest| rest.split(after).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {before}…{after} in {title}"))
    };
    let coverage = share(" probes ", "% of the time");
    assert!((0.0..=100.0).contains(&coverage), "{title}");
    assert!(share("≈", "% CPU") >= 0.0, "{title}");
    assert!(
        title.contains(&format!("% CPU (budget {SCREEN_BUDGET}%)")),
        "{title}"
    );
    // The census: the spinners among the program's goroutines, the main
    // goroutine waiting for them all (the longest waiter); the sleeping
    // goroutines by their wait reason, with their count, and the runtime's own
    // run-queue latency histogram, on one screen or the next (a census or an
    // interval may catch no sleeper or no latency sampled by the runtime).
    let census = census_panel(&screen);
    assert!(census.program >= SPINNERS as u64, "{screen}");
    assert!(
        census
            .longest_waiters
            .iter()
            .any(|(_, start)| start == "runtime.main"),
        "{screen}"
    );
    let mut seen = (false, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut later = screen.clone();
    while seen != (true, true) {
        assert!(
            Instant::now() < deadline && !later.contains("observer-exit="),
            "sleepers counted: {}, the runtime's histogram drawn: {}\n{later}",
            seen.0,
            seen.1
        );
        let census = census_panel(&later);
        seen.0 |= census
            .waiting_by_reason
            .iter()
            .any(|(reason, count)| reason == "sleep" && *count >= 1);
        // Who held the Ps: the spinners, while the others wait.
        assert!(
            panel(&later, "who held the Ps")
                .iter()
                .any(|row| row.contains("sampled:")),
            "{later}"
        );
        seen.1 |= panel(&later, "run-queue latency, Go runtime")
            .iter()
            .any(|row| row.contains('█'));
        thread::sleep(Duration::from_millis(100));
        later = tmux.screen();
    }
    std::fs::write(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tui-screen.txt"),
        &screen,
    )
    .unwrap();

    tmux.keys("p");
    tmux.wait_for("PAUSED");
    tmux.keys("p");
    tmux.keys("q");
    let after = tmux.wait_for("observer-exit=0");
    assert!(after.contains("=== SUMMARY"), "{after}");
    assert!(
        !after.contains("q quit · p pause"),
        "screen not restored:\n{after}"
    );
    drop(tmux);
    let (status, _) = fixture.finish();
    assert!(status.success());

    // The target exiting ends the screen too.
    let mut fixture = crowd(&binary, 500, None, None);
    let pid = fixture.pid();
    let tmux = live_screen(pid);
    fixture.start();
    let after = tmux.wait_for("observer-exit=0");
    assert!(after.contains(&format!("process {pid} exited")), "{after}");
    assert!(after.contains("=== SUMMARY"), "{after}");
    let (status, _) = fixture.finish();
    assert!(status.success());
}

/// The recording of the deterministic scenario, read back with Perfetto's own
/// Trace proto: as many run slices, syscalls, parks and preemptions as the
/// observer counted.
#[test]
fn perfetto_recording_matches_the_counters() {
    let dir = scratch_dir("perfetto");
    let mut cases = full_matrix_toolchains();
    // Go 1.26+ sees syscalls through their own probes.
    cases.extend(toolchains().pop());
    for toolchain in cases {
        let v = toolchain.version.clone();
        let binary = build(&toolchain, "scenario", Mode::Default);
        let file = dir.join(format!("{v}.pftrace"));
        let (output, run, summary) = traced_run(
            &binary,
            &["10", "100", "50", "200"],
            &[
                "--json",
                "--interval",
                "100ms",
                "--top",
                "1000",
                "--record",
                file.to_str().unwrap(),
            ],
            &v,
        );

        let trace = perfetto_summary(&file);
        let tracks = trace["tracks"].as_array().unwrap();
        let p_tracks: Vec<&Value> = tracks
            .iter()
            .filter(|t| t["kind"] == "track" && t["name"].as_str().unwrap().starts_with('P'))
            .collect();
        let threads: Vec<&Value> = tracks.iter().filter(|t| t["kind"] == "thread").collect();
        // Threads that ran goroutines are named by their M.
        assert!(
            threads
                .iter()
                .any(|t| t["name"].as_str().unwrap().starts_with('M')
                    && t["name"].as_str().unwrap().contains(" (thread ")),
            "{v}: {threads:?}"
        );
        let sum =
            |tracks: &[&Value], key: &str| -> u64 { tracks.iter().map(|t| count(t, key)).sum() };
        let run_slices = count(&summary, "run_slices");
        // Each run is a slice on its P's track and on its thread's track, where
        // the syscalls are slices too; every slice is closed.
        assert_eq!(sum(&p_tracks, "begins"), run_slices, "{v}");
        assert_eq!(
            sum(&threads, "begins") - sum(&threads, "syscalls"),
            run_slices,
            "{v}"
        );
        assert_eq!(
            sum(&threads, "syscalls"),
            count(&summary, "syscalls"),
            "{v}"
        );
        for track in tracks {
            assert_eq!(track["begins"], track["ends"], "{v}: {track}");
        }
        let instants = |name: &str| -> u64 {
            threads
                .iter()
                .map(|t| t["instants"][name].as_u64().unwrap_or(0))
                .sum()
        };
        assert_eq!(instants("park:"), count(&summary, "gopark_total"), "{v}");
        assert_eq!(instants("preempt"), count(&summary, "preemptions"), "{v}");
        assert!(count(&summary, "preemptions") >= 5, "{v}");
        // Run slices are named by goroutine and start function.
        let ponger = goids(&output)["ponger"];
        let ponger_slice = format!("g{ponger} main.pingpong.func1");
        assert!(
            threads.iter().any(|t| t["begin_names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == &ponger_slice)),
            "{v}: no slice {ponger_slice}"
        );
        assert!(count(&goroutine(&summary, ponger), "runs") > 0, "{v}");
        // Run-queue lengths as counter tracks, sampled every interval.
        let counter = |name: &str| {
            tracks
                .iter()
                .find(|t| t["kind"] == "counter" && t["name"] == name)
                .map(|t| count(t, "counters"))
                .unwrap_or(0)
        };
        // One sample per interval that read the scheduler state (a loaded
        // machine may give a short run few intervals).
        let sched_reads = run
            .json()
            .iter()
            .filter(|l| l["type"] == "interval" && !l["sched"].is_null())
            .count() as u64;
        assert!(sched_reads >= 1, "{v}");
        assert_eq!(counter("global runq"), sched_reads, "{v}: {tracks:?}");
        assert_eq!(counter("P0 runq"), sched_reads, "{v}");
        assert!(
            run.stderr
                .contains(&format!("recorded {run_slices} run slices")),
            "{v}: {}",
            run.stderr
        );
    }
}
