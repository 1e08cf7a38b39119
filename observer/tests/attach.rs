//! `gobpf-sched attach` on real Go processes, built with every installed toolchain.
//! The fixture (tests/fixtures/scenario/scenario.go) runs on one P, which makes most counts
//! exact; the assertions say which.

mod common;

use std::{thread, time::Duration};

use common::{
    Finished, Fixture, Mode, Observer, build, count, full_matrix_toolchains, goids, goroutine,
    histogram_total, toolchains, traced_run,
};
use serde_json::Value;

const SLEEPERS: u64 = 100;
const ROUNDS: u64 = 1000;
const WRITES: u64 = 500;
const SPIN_MS: u64 = 500;

fn scenario_args() -> Vec<String> {
    [SLEEPERS, ROUNDS, WRITES, SPIN_MS]
        .iter()
        .map(u64::to_string)
        .collect()
}

// The full attach check in every build mode, for the full-matrix toolchains.

#[test]
fn counts_are_exact_for_default_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Default);
    }
}

#[test]
fn counts_are_exact_for_stripped_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Stripped);
    }
}

#[test]
fn counts_are_exact_for_pie_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Pie);
    }
}

#[test]
fn counts_are_exact_for_cgo_builds() {
    for toolchain in full_matrix_toolchains() {
        check_scenario(&toolchain, Mode::Cgo);
    }
}

/// Every other Go version, stripped (functions from .gopclntab, offsets and wait
/// reasons from the generated table: the path with the most to get wrong).
#[test]
fn counts_are_exact_on_every_go_version() {
    let full = full_matrix_toolchains();
    let others: Vec<_> = toolchains()
        .into_iter()
        .filter(|t| !full.iter().any(|f| f.go == t.go))
        .collect();
    for toolchain in others {
        check_scenario(&toolchain, Mode::Stripped);
    }
}

/// Runs the scenario fixture built in `mode`, traced and untraced, and checks every
/// count the program makes exact, one fact per function (a failure names it).
fn check_scenario(toolchain: &common::Toolchain, mode: Mode) {
    let run = Scenario::run(toolchain, mode);
    run.output_is_unchanged_and_the_exit_seen();
    run.self_checks_pass();
    run.sleepers_park_once_each();
    run.pingpong_parks_once_per_round();
    run.writer_makes_exactly_its_syscalls();
    run.spinner_is_preempted_by_signals_in_burn();
    run.goroutines_are_named_by_start_function();
    run.goroutines_created_and_exited();
    run.latencies_and_slices_are_in_the_histograms();
    run.intervals_add_up();
}

/// One traced run of the scenario fixture, and its untraced twin's output.
struct Scenario {
    /// `go1.25.5 Stripped`: in every message.
    v: String,
    output: String,
    untraced_output: String,
    run: Finished,
    summary: Value,
    ids: std::collections::HashMap<String, u64>,
}

impl Scenario {
    fn run(toolchain: &common::Toolchain, mode: Mode) -> Self {
        let binary = build(toolchain, "scenario", mode);
        let args = scenario_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // The same program untraced, for comparing its output.
        let mut untraced = Fixture::spawn(&binary, &args);
        untraced.start();
        let (untraced_status, untraced_output) = untraced.finish();
        assert!(untraced_status.success());
        let v = format!("{} {mode:?}", toolchain.version);
        let (output, run, summary) = traced_run(
            &binary,
            &args,
            &["--json", "--interval", "200ms", "--top", "100000"],
            &v,
        );
        assert_eq!(summary["go_version"], toolchain.version.as_str());
        Self {
            ids: goids(&output),
            v,
            output,
            untraced_output,
            run,
            summary,
        }
    }

    fn goroutine(&self, name: &str) -> Value {
        goroutine(&self.summary, self.ids[name])
    }

    fn output_is_unchanged_and_the_exit_seen(&self) {
        assert_eq!(
            result_line(&self.output),
            result_line(&self.untraced_output),
            "{}: tracing changed the program's result",
            self.v
        );
        let stderr = &self.run.stderr;
        assert!(stderr.contains(&format!("process {} exited", fixture_pid_of(stderr))));
    }

    fn self_checks_pass(&self) {
        let (v, summary) = (&self.v, &self.summary);
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
        let preemptions: Vec<_> = self
            .run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "preemption")
            .collect();
        assert_eq!(
            preemptions.len() as u64,
            count(summary, "preemptions"),
            "{v}"
        );
        let of_spinner: Vec<&Value> = preemptions
            .iter()
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
        // The spinner's 10-20 ms slices between preemptions are in the run-slice
        // buckets from 8 ms up.
        let long: u64 = summary["run_slice_histogram"]
            .as_array()
            .expect("histogram")
            .iter()
            .filter(|b| count(b, "from_ns") >= 1 << 23)
            .map(|b| count(b, "count"))
            .sum();
        assert!(
            long >= count(&spinner, "preemptions").saturating_sub(1),
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

    /// Intervals came every 200 ms and add up to no more than the whole run.
    fn intervals_add_up(&self) {
        let intervals: Vec<_> = self
            .run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "interval")
            .collect();
        assert!(!intervals.is_empty(), "{}: no interval lines", self.v);
        let interval_sleeps: u64 = intervals.iter().map(|i| count(&i["gopark"], "sleep")).sum();
        assert!(interval_sleeps <= SLEEPERS);
    }
}

fn result_line(output: &str) -> &str {
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
/// round, plus its final wait on the channel the pinger closes. Calls that restart
/// after morestack (preemption requests, stack growth) must not count twice. A
/// preemption of the pair (recorded) shifts which side waits, and the final park
/// then does not happen.
fn assert_ponger_parks(summary: &serde_json::Value, ponger: u64, rounds: u64, what: &str) {
    let row = goroutine(summary, ponger);
    let parks = count(&row, "parks");
    let preempted = count(&row, "preemptions") + count(&goroutine(summary, 1), "preemptions");
    if preempted == 0 {
        assert_eq!(parks, rounds + 1, "{what}: {row}");
    } else {
        assert!((rounds..=rounds + 1).contains(&parks), "{what}: {row}");
    }
}

/// The pid from the "attached to process N" line.
fn fixture_pid_of(stderr: &str) -> u64 {
    let rest = stderr
        .split("attached to process ")
        .nth(1)
        .expect("attach line");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// `--only` attaches the probes of what is watched, nothing else, and still counts
/// exactly: syscalls come from casgstatus before Go 1.26, from their own probes
/// after; preemptions need only the signal handler's probe, the preemption
/// functions' and the tracepoint.
#[test]
fn only_the_watched_facets_are_probed() {
    for toolchain in toolchains() {
        let v = &toolchain.version;
        let binary = build(&toolchain, "scenario", Mode::Default);
        let watch = |only: &str| {
            let mut fixture = Fixture::spawn(&binary, &["10", "100", "50", "200"]);
            let observer = Observer::attach(
                fixture.pid(),
                &["--only", only, "--json", "-v", "--top", "1000"],
            );
            fixture.start();
            let (status, output) = fixture.finish();
            assert!(status.success());
            let sites = probe_sites(&observer.stderr_lines);
            let run = observer.wait();
            assert!(run.status.success(), "{v}: {}", run.stderr);
            (sites, run, goids(&output))
        };

        let (sites, run, ids) = watch("syscalls");
        let functions: Vec<&str> = sites.iter().map(|s| s.0.as_str()).collect();
        if toolchain.minor() >= (1, 26) {
            assert_eq!(
                functions,
                [
                    "runtime.entersyscall",
                    "runtime.entersyscallblock",
                    "runtime.exitsyscall"
                ],
                "{v}"
            );
        } else {
            assert_eq!(functions, ["runtime.casgstatus"], "{v}");
        }
        assert!(!run.stderr.contains("SIGURG tracepoint"), "{v}");
        let summary = run.only("summary");
        assert_eq!(summary["watching"], serde_json::json!(["syscalls"]), "{v}");
        let writer = goroutine(&summary, ids["writer"]);
        assert_eq!(count(&writer, "syscalls"), 50, "{v}: {writer}");
        assert_eq!(count(&summary, "preemptions"), 0, "{v}");
        assert_eq!(count(&summary, "schedule"), 0, "{v}");

        let (sites, run, ids) = watch("preemptions");
        let functions: Vec<&str> = sites.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            functions,
            [
                "runtime.sigtrampgo",
                toolchain.preemption_function(),
                "runtime.goyield_m",
                "runtime.preemptPark"
            ],
            "{v}"
        );
        assert!(run.stderr.contains("SIGURG tracepoint"), "{v}");
        let summary = run.only("summary");
        assert_eq!(count(&summary, "syscalls"), 0, "{v}");
        assert_eq!(count(&summary, "gopark_total"), 0, "{v}");
        let preemptions: Vec<_> = run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "preemption")
            .collect();
        assert_eq!(preemptions.len() as u64, count(&summary, "preemptions"));
        // Without casgstatus the preempted goroutine is not known from a run
        // start, but the handler's report says where the signal landed.
        assert!(
            preemptions
                .iter()
                .filter(|e| e["landed_goid"] == ids["spinner"] && e["landed_in"] == "main.burn")
                .count()
                >= 3,
            "{v}: {preemptions:?}"
        );
    }
}

#[test]
fn text_summary_names_reasons_and_preemptions() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["20", "100", "50", "200"]);
    let observer = Observer::attach(fixture.pid(), &["--top", "3"]);
    fixture.start();
    let (status, output) = fixture.finish();
    assert!(status.success());
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let text = run.stdout.join("\n");
    let spinner = goids(&output)["spinner"];
    // The spinner's P may move to another thread (M) under load: any tid will do.
    assert!(
        text.lines()
            .any(|l| l.contains(" PREEMPT tid ") && l.contains(&format!(" goid {spinner} m "))),
        "{text}"
    );
    let summary = text.split("=== SUMMARY").nth(1).expect("a SUMMARY block");
    let gopark = summary
        .lines()
        .find(|l| l.starts_with("gopark"))
        .expect("gopark line");
    assert!(gopark.contains("sleep 2"), "{gopark}"); // 20 sleepers (+ the scavenger)
    assert!(summary.lines().any(|l| l.starts_with("syscalls")));
    assert!(summary.contains("GOID"), "{summary}");
    assert!(summary.contains("run slice length"), "{summary}");
    assert!(
        summary
            .lines()
            .any(|l| l.starts_with("dropped") && l.trim_end().ends_with(" 0"))
    );
}

#[test]
fn interval_and_duration_end_the_session() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    // Not started: the program waits on stdin the whole time.
    let fixture = Fixture::spawn(&binary, &[]);
    let observer = Observer::attach(
        fixture.pid(),
        &["--json", "--interval", "200ms", "--duration", "1100ms"],
    );
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let intervals = run
        .json()
        .iter()
        .filter(|e| e["type"] == "interval")
        .count();
    assert!(
        (4..=6).contains(&intervals),
        "{intervals} intervals in 1.1 s"
    );
    let summary = run.only("summary");
    let duration = count(&summary, "duration_ns");
    assert!(
        (1_000_000_000..3_000_000_000).contains(&duration),
        "{duration}"
    );
    drop(fixture);
}

#[test]
fn ctrl_c_prints_the_summary_and_exits_zero() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let fixture = Fixture::spawn(&binary, &[]);
    let observer = Observer::attach(fixture.pid(), &["--json"]);
    thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(observer.child.id() as i32, libc::SIGINT) };
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let summary = run.only("summary");
    assert_eq!(summary["go_version"], toolchain.version.as_str());
    assert!(count(&summary, "duration_ns") >= 300_000_000);
}

#[test]
fn kill_9_of_the_observer_leaves_no_uprobe_behind() {
    for toolchain in toolchains() {
        let binary = build(&toolchain, "scenario", Mode::Default);
        let mut fixture = Fixture::spawn(&binary, &["10", "100", "10", "100"]);
        let pid = fixture.pid();
        let mut observer = Observer::attach(pid, &["-v"]);
        let sites = probe_sites(&observer.stderr_lines);
        assert_eq!(
            sites.len(),
            toolchain.expected_uprobes(),
            "{:?}",
            observer.stderr_lines
        );
        // schedule is probed on the jbe after `cmp 0x10(%r14),%rsp`; casgstatus is
        // nosplit (no stack check): at its entry.
        let site = |function: &str| {
            let (_, offset, placement) = sites.iter().find(|s| s.0 == function).unwrap();
            (*offset, placement.clone())
        };
        assert_eq!(site("runtime.schedule"), (4, "StackCheckJump".to_owned()));
        assert_eq!(site("runtime.casgstatus"), (0, "Entry".to_owned()));
        // A uprobe is an int3 (0xcc) in the target's copy of the page.
        let addresses: Vec<u64> = sites
            .iter()
            .zip(function_addresses(&binary, &sites))
            .map(|((_, offset, _), start)| start + offset)
            .collect();
        assert_eq!(code_bytes(pid, &addresses), vec![0xcc; sites.len()]);
        observer.child.kill().unwrap(); // SIGKILL: no cleanup code runs
        observer.child.wait().unwrap();
        let mut bytes = code_bytes(pid, &addresses);
        for _ in 0..50 {
            if !bytes.contains(&0xcc) {
                break;
            }
            thread::sleep(Duration::from_millis(100));
            bytes = code_bytes(pid, &addresses);
        }
        assert!(
            !bytes.contains(&0xcc),
            "{}: uprobes left after kill -9: {bytes:x?}",
            toolchain.version
        );
        // The target runs on unharmed.
        fixture.start();
        let (status, output) = fixture.finish();
        assert!(status.success());
        assert!(output.contains("result "));
    }
}

/// (function, offset of the probe in it, placement) from `attach -v`.
fn probe_sites(stderr: &[String]) -> Vec<(String, u64, String)> {
    stderr
        .iter()
        .filter_map(|line| line.strip_prefix("gobpf-sched: uprobe on "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            // runtime.gopark (0x46dea0) +4 (StackCheckJump) at file offset 0x6dea4
            let offset = words[2].trim_start_matches('+').parse().unwrap();
            let placement = words[3].trim_matches(|c| c == '(' || c == ')').to_owned();
            (words[0].to_owned(), offset, placement)
        })
        .collect()
}

/// Link-time addresses of the functions, from the fixture's own symbol table.
fn function_addresses(binary: &std::path::Path, sites: &[(String, u64, String)]) -> Vec<u64> {
    use object::{Object, ObjectSymbol};
    let data = std::fs::read(binary).unwrap();
    let file = object::File::parse(&*data).unwrap();
    sites
        .iter()
        .map(|(name, _, _)| {
            file.symbols()
                .find(|s| s.name() == Ok(name.as_str()))
                .unwrap_or_else(|| panic!("{name}"))
                .address()
        })
        .collect()
}

/// The first byte at each address in the target's memory (non-PIE fixture).
fn code_bytes(pid: u32, addresses: &[u64]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    addresses
        .iter()
        .map(|&address| {
            let mut byte = [0u8];
            mem.read_exact_at(&mut byte, address).unwrap();
            byte[0]
        })
        .collect()
}

/// Attaches to a started-but-waiting fixture and checks the counts a small run
/// makes exact (10 sleepers, 100 rounds, 10 writes).
fn check_small_run(fixture: Fixture, what: &str) {
    let (output, _, summary) =
        common::traced_fixture(fixture, &["--json", "--top", "100000"], what);
    let ids = goids(&output);
    assert_ponger_parks(&summary, ids["ponger"], 100, what);
    let writer = goroutine(&summary, ids["writer"]);
    assert_eq!(count(&writer, "syscalls"), 10, "{what}");
    assert_eq!(count(&summary, "offset_mismatches"), 0, "{what}");
}

const SMALL_RUN: [&str; 4] = ["10", "100", "10", "100"];

#[test]
fn deleted_replaced_and_other_namespace_binaries_still_attach() {
    let toolchain = full_matrix_toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "scenario", Mode::Default);
    let dir = std::env::temp_dir().join(format!("gobpf-sched-exe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Deleted after it started: /proc/PID/exe still opens it.
    let copy = dir.join("deleted");
    std::fs::copy(&binary, &copy).unwrap();
    let fixture = Fixture::spawn(&copy, &SMALL_RUN);
    std::fs::remove_file(&copy).unwrap();
    check_small_run(fixture, "deleted binary");

    // Replaced by another program (an upgrade in place): the old inode runs on.
    let copy = dir.join("replaced");
    std::fs::copy(&binary, &copy).unwrap();
    let fixture = Fixture::spawn(&copy, &SMALL_RUN);
    let other = dir.join("other");
    std::fs::copy("/bin/true", &other).unwrap();
    std::fs::rename(&other, &copy).unwrap();
    check_small_run(fixture, "replaced binary");

    // Started from a tmpfs only its own mount namespace sees (like a container).
    let mount_point = dir.join("mnt");
    std::fs::create_dir_all(&mount_point).unwrap();
    let mut command = std::process::Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c"]);
    command.arg(format!(
        "mount -t tmpfs none {mnt} && cp {bin} {mnt}/scenario && exec {mnt}/scenario {args}",
        mnt = mount_point.display(),
        bin = binary.display(),
        args = SMALL_RUN.join(" ")
    ));
    let fixture = Fixture::spawn_command(command);
    assert!(
        std::fs::read_dir(&mount_point).unwrap().next().is_none(),
        "the binary must not be visible outside its namespace"
    );
    check_small_run(fixture, "binary in another mount namespace");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The harm fixture's checksum line.
fn checksum(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("checksum "))
        .unwrap_or_else(|| panic!("no checksum in {output}"))
        .to_owned()
}

/// Tracing never changes what a program computes: same checksum untraced,
/// traced to the end, and with the observer killed with SIGKILL mid-run.
#[test]
fn tracing_never_changes_what_the_program_computes() {
    const ROUNDS: &str = "300";
    for toolchain in full_matrix_toolchains() {
        for mode in [Mode::Default, Mode::Stripped, Mode::Pie] {
            let v = format!("{} {mode:?}", toolchain.version);
            let binary = build(&toolchain, "harm", mode);

            let mut untraced = Fixture::spawn(&binary, &[ROUNDS]);
            untraced.start();
            let (status, output) = untraced.finish();
            assert!(status.success(), "{v}: untraced run failed");
            let expected = checksum(&output);

            let mut traced = Fixture::spawn(&binary, &[ROUNDS]);
            let observer = Observer::attach(traced.pid(), &["--json"]);
            traced.start();
            let (status, output) = traced.finish();
            assert!(status.success(), "{v}: traced run failed");
            assert_eq!(
                checksum(&output),
                expected,
                "{v}: tracing changed the result"
            );
            let run = observer.wait();
            assert!(run.status.success(), "{v}: {}", run.stderr);
            let summary = run.only("summary");
            assert!(count(&summary, "schedule") > 10_000, "{v}: {summary}");
            assert_eq!(count(&summary, "dropped"), 0, "{v}");

            let mut killed = Fixture::spawn(&binary, &[ROUNDS]);
            let mut observer = Observer::attach(killed.pid(), &["--json"]);
            killed.start();
            thread::sleep(Duration::from_millis(200));
            observer.child.kill().unwrap(); // SIGKILL mid-run
            observer.child.wait().unwrap();
            let (status, output) = killed.finish();
            assert!(status.success(), "{v}: run with a killed observer failed");
            assert_eq!(
                checksum(&output),
                expected,
                "{v}: killing the observer changed the result"
            );
        }
    }
}

/// `--events` prints every transition, and exactly as many as the counters saw.
#[test]
fn events_mode_prints_every_transition() {
    for toolchain in full_matrix_toolchains() {
        let v = toolchain.version.clone();
        let binary = build(&toolchain, "scenario", Mode::Default);
        let (output, run, summary) = traced_run(
            &binary,
            &["50", "500", "100", "100"],
            &["--events", "--json"],
            &v,
        );
        let events: Vec<_> = run
            .json()
            .into_iter()
            .filter(|e| e["type"] == "event")
            .collect();
        let number = |kind: &str| events.iter().filter(|e| e["event"] == kind).count() as u64;
        assert_eq!(number("run"), count(&summary, "run_slices"), "{v}: run");
        assert_eq!(number("park"), count(&summary, "gopark_total"), "{v}: park");
        assert_eq!(
            number("create"),
            count(&summary, "goroutines_created"),
            "{v}: create"
        );
        assert_eq!(
            number("exit"),
            count(&summary, "goroutines_exited"),
            "{v}: exit"
        );
        assert_eq!(
            number("syscall"),
            count(&summary, "syscalls"),
            "{v}: syscall"
        );
        // Parks carry the binary's reason names: the 50 sleepers' among them.
        let writer = goids(&output)["writer"];
        let sleeps = events
            .iter()
            .filter(|e| e["event"] == "park" && e["reason"] == "sleep")
            .count();
        assert!(sleeps >= 50, "{v}: {sleeps} sleep parks");
        let writer_syscalls = events
            .iter()
            .filter(|e| e["event"] == "syscall" && e["goid"] == writer)
            .count();
        assert_eq!(writer_syscalls, 100, "{v}: the writer's syscalls");
    }
}
