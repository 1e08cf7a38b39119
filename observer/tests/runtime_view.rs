//! The always-on view: what the observer reads from the runtime's memory (its
//! run-queue latency histogram, the Ps' tick counters, every goroutine),
//! checked against what the program itself sees, in every Go version, with the
//! symbol table and DWARF and without (the offsets table).

mod common;

use serde_json::Value;

use common::{Fixture, Mode, Observer, Toolchain, build, count, toolchains};

/// Every toolchain, built with and without symbols.
fn builds() -> Vec<(Toolchain, Mode)> {
    toolchains()
        .into_iter()
        .flat_map(|t| [(t.clone(), Mode::Default), (t, Mode::Stripped)])
        .collect()
}

/// The summary of a short session on a fixture that has finished its work and
/// stays blocked.
fn summary_of_blocked(fixture: &Fixture, what: &str) -> Value {
    let observer = Observer::attach(
        fixture.pid(),
        &[
            "--json",
            "--duration",
            "300ms",
            "--interval",
            "100ms",
            "--top",
            "40",
        ],
    );
    let run = observer.wait();
    assert!(run.status.success(), "{what}: {}", run.stderr);
    run.only("summary")
}

/// The runtime's run-queue latency histogram, read from memory, equals what
/// `runtime/metrics` returns inside the program, bucket for bucket (bounds
/// included); so do the GC cycles (where there is a symbol table).
#[test]
fn the_run_queue_histogram_equals_runtime_metrics() {
    for (toolchain, mode) in builds() {
        let what = format!("{} {mode:?}", toolchain.version);
        let binary = build(&toolchain, "runtime", mode);
        let mut fixture = Fixture::spawn(&binary, &["metrics"]);
        fixture.start();
        let lines = fixture.lines_until("done");
        let summary = summary_of_blocked(&fixture, &what);
        let since_start = &summary["runtime_since_start"];
        let histogram = &since_start["run_queue_latency"];
        let mut expected: Vec<(u64, u64, u64)> = Vec::new();
        let mut underflow = 0;
        let mut gc = None;
        for line in &lines {
            let fields: Vec<i64> = line
                .split_whitespace()
                .skip(1)
                .map(|f| f.parse().expect("a number"))
                .collect();
            match line.split_whitespace().next() {
                Some("bucket") if fields[0] < 0 => underflow = fields[2] as u64,
                Some("bucket") => expected.push((
                    fields[0] as u64,
                    if fields[1] < 0 {
                        u64::MAX
                    } else {
                        fields[1] as u64
                    },
                    fields[2] as u64,
                )),
                Some("gc") => gc = Some(fields[0] as u64),
                _ => panic!("{what}: unexpected line {line}"),
            }
        }
        let read: Vec<(u64, u64, u64)> = histogram["buckets"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no histogram: {since_start}"))
            .iter()
            .map(|b| (count(b, "from_ns"), count(b, "to_ns"), count(b, "count")))
            .collect();
        assert!(
            expected.iter().map(|b| b.2).sum::<u64>() > 100,
            "{what}: too little contention: {expected:?}"
        );
        assert_eq!(read, expected, "{what}: histogram differs");
        assert_eq!(count(histogram, "underflow"), underflow, "{what}");
        match mode {
            Mode::Stripped => assert!(
                since_start["not_kept"]["gc_cycles"]
                    .as_str()
                    .is_some_and(|why| why.contains("no symbol table")),
                "{what}: {since_start}"
            ),
            _ => assert_eq!(since_start["gc_cycles"].as_u64(), gc, "{what}"),
        }
        let version = toolchain.minor();
        let kept = |name: &str| since_start[name].is_u64() || since_start[name].is_object();
        assert_eq!(kept("mutex_wait_ns"), version >= (1, 20), "{what}");
        assert_eq!(kept("stw_gc_pauses"), version >= (1, 22), "{what}");
        assert_eq!(kept("goroutines_created"), version >= (1, 26), "{what}");
        if version < (1, 22) {
            assert_eq!(
                since_start["not_kept"]["stw_gc_pauses"],
                format!("not kept by go{}.{}", version.0, version.1),
                "{what}"
            );
        }
    }
}

/// The census of a program that parks goroutines in known ways: counts by
/// wait reason exact, the first goroutine started waits longest, and the
/// program's goroutines are what `runtime.NumGoroutine()` counts.
#[test]
fn the_census_counts_goroutines_by_wait_reason() {
    for (toolchain, mode) in builds() {
        let what = format!("{} {mode:?}", toolchain.version);
        let binary = build(&toolchain, "runtime", mode);
        let mut fixture = Fixture::spawn(&binary, &["census"]);
        fixture.start();
        let lines = fixture.lines_until("done");
        let value = |key: &str| -> u64 {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what}: no {key} in {lines:?}"))
        };
        let summary = summary_of_blocked(&fixture, &what);
        let census = &summary["census"];
        let reasons = &census["by_wait_reason"];
        let reason = |name: &str| count(reasons, name);
        assert_eq!(reason("chan receive"), 7, "{what}: {census}");
        assert_eq!(reason("sleep"), 5, "{what}: {census}");
        // Named sync.Mutex.Lock from Go 1.20 (semacquire before).
        assert_eq!(
            reason("sync.Mutex.Lock") + reason("semacquire"),
            3,
            "{what}: {census}"
        );
        assert_eq!(reason("select"), 1, "{what}: {census}");
        assert_eq!(reason("select (no cases)"), 1, "{what}: {census}");
        assert_eq!(
            count(census, "user_goroutines"),
            value("goroutines"),
            "{what}: {census}"
        );
        assert_eq!(
            count(census, "goroutines"),
            count(census, "user_goroutines") + count(census, "system_goroutines"),
            "{what}"
        );
        let by_status: u64 = census["by_status"]
            .as_object()
            .expect("by_status")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(by_status, value("goroutines"), "{what}: {census}");
        let longest = &census["longest_waiters"][0];
        assert_eq!(
            longest["goid"].as_u64(),
            Some(value("first")),
            "{what}: {census}"
        );
        assert_eq!(longest["reason"], "chan receive", "{what}");
        assert!(
            count(longest, "waiting_ns") >= 250_000_000,
            "{what}: waited at least the fixture's sleeps: {longest}"
        );
        assert!(
            longest["start_function"]
                .as_str()
                .is_some_and(|f| f.starts_with("main.censusMode")),
            "{what}: {longest}"
        );
    }
}

/// The Ps' syscall ticks count a program's syscalls without a probe: exactly K
/// writes on one P give at least K, and at most a few more (the fixture's own
/// read of stdin and write of "done"; the runtime also ticks when sysmon takes
/// the P from a blocked syscall).
#[test]
fn syscall_ticks_count_every_write() {
    const WRITES: u64 = 2000;
    const SLACK: u64 = 20;
    for toolchain in toolchains() {
        let what = toolchain.version.clone();
        let binary = build(&toolchain, "runtime", Mode::Default);
        let mut command = std::process::Command::new(&binary);
        command
            .args(["writes", &WRITES.to_string()])
            .env("GOMAXPROCS", "1");
        let mut fixture = Fixture::spawn_command(command);
        let observer = Observer::attach(fixture.pid(), &["--json", "--interval", "100ms"]);
        fixture.start();
        let (status, _) = fixture.finish();
        assert!(status.success(), "{what}");
        let run = observer.wait();
        assert!(run.status.success(), "{what}: {}", run.stderr);
        let runtime = &run.only("summary")["runtime"];
        let syscalls = count(runtime, "syscalls");
        assert!(
            (WRITES..=WRITES + SLACK).contains(&syscalls),
            "{what}: {syscalls} syscalls counted for {WRITES} writes: {runtime}"
        );
        assert_eq!(runtime["per_p"].as_array().map(Vec::len), Some(1), "{what}");
    }
}
