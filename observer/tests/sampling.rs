//! CPU sampling on real Go processes: shares by start function and by
//! function, the blame view of run-queue waits, and nothing from another
//! process.

mod common;

use common::{Fixture, Mode, Observer, Toolchain, build, full_matrix_toolchains, toolchains};
use std::path::Path;

use serde_json::Value;

fn builds() -> Vec<(Toolchain, Mode)> {
    full_matrix_toolchains()
        .into_iter()
        .flat_map(|t| [(t.clone(), Mode::Default), (t, Mode::Stripped)])
        .collect()
}

/// The share of `name` in a list of shares (0 when absent).
fn share(list: &Value, name: &str) -> f64 {
    list.as_array()
        .expect("a list of shares")
        .iter()
        .find(|s| s["name"] == name)
        .map_or(0.0, |s| s["share"].as_f64().expect("share"))
}

/// The target's CPU time (user + system) from /proc/PID/stat, in ns.
fn cpu_time_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // USER_HZ is 100 on Linux x86-64.
    ticks * 10_000_000
}

/// Runs `cpu MODE MS` under the observer (sampling in the default mode);
/// returns the summary's `cpu` view and the target's CPU time.
fn sampled(binary: &Path, mode: &str, ms: &str, extra: &[&str]) -> (Value, u64) {
    let mut fixture = Fixture::spawn(binary, &[mode, ms]);
    // 499 Hz: enough samples for the shares to be within a few points.
    let mut args = vec!["--json", "--interval", "10s", "--sample-hz", "499"];
    // Observer::attach adds --exact unless a budget is given.
    args.extend(extra.iter().filter(|&&a| a != "--exact"));
    if !extra.contains(&"--exact") {
        args.extend(["--overhead-budget", "1"]);
    }
    let observer = Observer::attach(fixture.pid(), &args);
    fixture.start();
    assert!(fixture.lines_until("done").is_empty());
    // The CPU time just before it exits (the stat file goes with it).
    let cpu_ns = cpu_time_ns(fixture.pid());
    let (status, _) = fixture.finish();
    assert!(status.success());
    let finished = observer.wait();
    assert!(finished.status.success(), "{}", finished.stderr);
    (finished.only("summary")["cpu"].clone(), cpu_ns)
}

#[test]
fn cpu_shares_follow_the_work_of_each_goroutine() {
    for (toolchain, mode) in builds() {
        let binary = build(&toolchain, "cpu", mode);
        // Another busy process beside it: none of its samples may count.
        let mut bystander = Fixture::spawn(&binary, &["ratio", "4000"]);
        bystander.start();
        let profile = tempfile::Builder::new()
            .suffix(".pb.gz")
            .tempfile()
            .expect("temp file");
        let profile_path = profile.path().to_str().expect("utf-8 path").to_owned();
        let (cpu, target_cpu_ns) = sampled(&binary, "ratio", "3000", &["--pprof", &profile_path]);
        let what = format!("{} {mode:?}: {cpu:#}", toolchain.version);
        let samples = cpu["samples"].as_u64().expect("samples");
        // Up to 3 s of one CPU at 499 Hz (less when the tests share the CPUs).
        assert!(samples >= 500, "{what}");
        // Samples × period is the target's CPU time (not twice it).
        let sampled_ns = cpu["cpu_ns"].as_u64().expect("cpu_ns") as f64;
        let ratio = sampled_ns / target_cpu_ns as f64;
        assert!(
            (0.8..=1.2).contains(&ratio),
            "{what}: sampled {sampled_ns} ns of CPU, the target used {target_cpu_ns} ns"
        );
        let by_start = &cpu["by_start_function"];
        let (a, b) = (
            share(by_start, "main.workerA"),
            share(by_start, "main.workerB"),
        );
        let a_of_both = a / (a + b);
        assert!(
            (0.67..=0.83).contains(&a_of_both),
            "{what}: main.workerA has {a_of_both:.2} of the workers' samples, not 0.75±0.08"
        );
        assert!(
            a + b > 0.8,
            "{what}: the workers have {:.2} of the samples",
            a + b
        );
        // The work is in main.burn, called by each worker, started by goexit.
        assert!(share(&cpu["by_function_flat"], "main.burn") > 0.8, "{what}");
        let cumulative = &cpu["by_function_cumulative"];
        for function in [
            "main.burn",
            "main.workerA",
            "main.workerB",
            "runtime.goexit",
        ] {
            assert!(share(cumulative, function) > 0.15, "{what}: {function}");
        }
        let (status, _) = bystander.finish();
        assert!(status.success());
        the_profile_says_the_same(&toolchain, &binary, &profile_path, &what);
    }
}

/// `go tool pprof` (of the fixture's toolchain) on the --pprof file: the same
/// shares, and -tagfocus on the start_function label.
fn the_profile_says_the_same(toolchain: &Toolchain, binary: &Path, profile: &str, what: &str) {
    let top = pprof(toolchain, binary, profile, &["-top", "-nodecount=40"]);
    let what = format!("{what}\n{top}");
    // `flat flat% sum% cum cum% name` rows.
    let row = |function: &str| -> (f64, f64) {
        top.lines()
            .find(|line| line.split_whitespace().last() == Some(function))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let percent = |i: usize| fields[i].trim_end_matches('%').parse::<f64>().expect("%");
                (percent(1), percent(4))
            })
            .unwrap_or_else(|| panic!("{function} not in the profile: {what}"))
    };
    assert!(row("main.burn").0 > 80.0, "{what}");
    let (a, b) = (row("main.workerA").1, row("main.workerB").1);
    assert!((0.67..=0.83).contains(&(a / (a + b))), "{what}");
    let focused = pprof(
        toolchain,
        binary,
        profile,
        &["-top", "-tagfocus=start_function=main.workerB"],
    );
    assert!(focused.contains("main.workerB"), "{focused}");
    assert!(!focused.contains("main.workerA"), "{focused}");
    let tags = pprof(toolchain, binary, profile, &["-tags"]);
    assert!(
        tags.contains("goid:") && tags.contains("start_function:"),
        "{tags}"
    );
}

fn pprof(toolchain: &Toolchain, binary: &Path, profile: &str, args: &[&str]) -> String {
    common::go_tool_pprof(toolchain, args, binary, Path::new(profile))
}

#[test]
fn the_hog_holds_the_p_while_others_wait() {
    // Go 1.26 moved syscalls off casgstatus (the exact view sees their ends
    // differently): the newest toolchain too.
    let mut builds = builds();
    if let Some(newest) = toolchains().pop() {
        builds.push((newest, Mode::Stripped));
    }
    for (toolchain, mode) in builds {
        let binary = build(&toolchain, "cpu", mode);
        let (cpu, _) = sampled(&binary, "hog", "3000", &[]);
        let what = format!("{} {mode:?}: {cpu:#}", toolchain.version);
        let blame = &cpu["blame"];
        assert!(blame["samples"].as_u64().expect("samples") >= 250, "{what}");
        let hog = share(&blame["by_start_function"], "main.hog");
        assert!(
            hog >= 0.8,
            "{what}: main.hog holds {hog:.2} of the blamed time"
        );
        assert!(share(&blame["by_function"], "main.hog") >= 0.8, "{what}");
    }
}

/// One `go tool pprof -traces` entry: its labels, value and functions.
struct Trace {
    labels: String,
    value: String,
    functions: Vec<String>,
}

fn traces(text: &str) -> Vec<Trace> {
    text.split("-----------+-------------------------------------------------------")
        .skip(1)
        .filter_map(|block| {
            let mut lines = block.lines().filter(|l| !l.trim().is_empty());
            let labels = lines.next()?.trim().to_owned();
            let first = lines.next()?;
            let mut fields = first.split_whitespace();
            let value = fields.next()?.to_owned();
            let mut functions = vec![fields.next()?.to_owned()];
            functions.extend(lines.map(|l| l.split_whitespace().next().unwrap_or("").to_owned()));
            Some(Trace {
                labels,
                value,
                functions,
            })
        })
        .collect()
}

#[test]
fn the_block_profile_names_where_goroutines_park() {
    for (toolchain, mode) in builds() {
        let binary = build(&toolchain, "cpu", mode);
        let profile = tempfile::Builder::new()
            .suffix(".pb.gz")
            .tempfile()
            .expect("temp file");
        let path = profile.path().to_str().expect("utf-8 path").to_owned();
        // Exact mode: every park seen.
        sampled(
            &binary,
            "block",
            "100",
            &["--exact", "--block-profile", &path],
        );
        let text = pprof(
            &toolchain,
            &binary,
            &path,
            &["-traces", "-sample_index=contentions"],
        );
        let what = format!("{} {mode:?}:\n{text}", toolchain.version);
        let all = traces(&text);
        let parks_in = |function: &str, reason: &str| -> u64 {
            all.iter()
                .filter(|t| t.labels == format!("reason:  {reason}"))
                .filter(|t| t.functions.iter().any(|f| f == function))
                .map(|t| t.value.parse::<u64>().expect("a count"))
                .sum()
        };
        // Each of the 100 values makes exactly one of its two goroutines park
        // (who comes to the unbuffered channel first waits): nearly always the
        // receiver, as the sender sleeps first. The sleeper parks once per
        // sleep. Exact counts.
        let received = parks_in("main.receiver", "chan receive");
        assert_eq!(
            received + parks_in("main.sender", "chan send"),
            100,
            "{what}"
        );
        assert!(received >= 90, "{what}");
        assert_eq!(parks_in("main.sleeper2", "sleep"), 100, "{what}");
        // Each stack goes from gopark through the blocking call to the start.
        let receive = all
            .iter()
            .find(|t| t.functions.iter().any(|f| f == "main.receiver"))
            .expect("the receiver's trace");
        assert_eq!(
            receive.functions.first().map(String::as_str),
            Some("runtime.gopark"),
            "{what}"
        );
        assert!(
            receive.functions.iter().any(|f| f == "runtime.chanrecv1"),
            "{what}"
        );
        assert_eq!(
            receive.functions.last().map(String::as_str),
            Some("runtime.goexit"),
            "{what}"
        );
        // A contended mutex: parked in the runtime's semaphore under main.locker.
        assert!(
            all.iter()
                .any(|t| t.functions.iter().any(|f| f == "main.locker")
                    && t.functions
                        .iter()
                        .any(|f| f.starts_with("sync.(*Mutex).Lock"))),
            "{what}"
        );
    }
}

/// Code outside Go is named after its mapping: a goroutine that reads the
/// clock in a loop spends its time in the vDSO.
#[test]
fn frames_outside_go_are_named_after_their_mapping() {
    let toolchain = toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "cpu", Mode::Default);
    let (cpu, _) = sampled(&binary, "clock", "1500", &[]);
    let flat = &cpu["by_function_flat"];
    assert!(share(flat, "[vdso]") > 0.2, "{cpu:#}");
    // The vDSO is called from Go's clock functions, started by main.clock.
    assert!(
        share(&cpu["by_start_function"], "main.clock") > 0.8,
        "{cpu:#}"
    );
    assert!(
        share(&cpu["by_function_cumulative"], "main.clock") > 0.8,
        "{cpu:#}"
    );
}
