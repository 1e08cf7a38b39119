//! The outputs of many processes watched at once: the live screen of
//! `attach --all` in a real terminal (tmux): the list of Go processes, a
//! process's own screen opened from it and left again, and the terminal given
//! back on `q` with every process's summary after it; and one Perfetto
//! recording with a process track group each, read back with Perfetto's own
//! Trace proto.

mod common;

use std::{collections::HashMap, thread, time::Duration};

use common::{
    Fixture, Mode, Tmux, build, count, observer_binary, perfetto_summary, scratch_dir, toolchains,
    watch_side_by_side,
};
use serde_json::Value;

/// The row of the process list that shows `pid`, and its index among the
/// rows (the list is sorted by pid; other Go processes of the host may be
/// there too).
fn row_of(screen: &str, pid: u32) -> Option<(usize, String)> {
    screen
        .lines()
        .filter(|line| {
            line.starts_with('│')
                && line[3..]
                    .trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
        .enumerate()
        .find(|(_, line)| {
            line.trim_start_matches('│')
                .split_whitespace()
                .next()
                .is_some_and(|first| first == pid.to_string())
        })
        .map(|(index, line)| (index, line.to_owned()))
}

#[test]
fn the_process_list_opens_each_process() {
    let toolchains = toolchains();
    let oldest = toolchains.first().expect("a toolchain");
    let newest = toolchains.last().expect("a toolchain");
    let programs = [
        build(oldest, "cpu", Mode::Stripped),
        build(newest, "cpu", Mode::Default),
    ];
    let mut fixtures: Vec<Fixture> = programs
        .iter()
        .map(|binary| Fixture::spawn(binary, &["ratio", "60000"]))
        .collect();
    let pids: Vec<u32> = fixtures.iter().map(Fixture::pid).collect();
    // Only these two (other tests' Go programs may run meanwhile).
    let names: Vec<String> = programs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let tmux = Tmux::start(&format!(
        "{} attach --all --exe {} --exe {} --interval 300ms; echo observer-exit=$?; sleep 60",
        observer_binary(),
        names[0],
        names[1]
    ));
    // Both listed, then (once they run) with their numbers.
    for pid in &pids {
        tmux.wait_for(&format!("attached to process {pid}"));
    }
    for fixture in &mut fixtures {
        fixture.start();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let list = loop {
        let screen = tmux.wait_for("Go processes");
        let rows: Vec<Option<(usize, String)>> =
            pids.iter().map(|&pid| row_of(&screen, pid)).collect();
        if rows
            .iter()
            .all(|row| row.as_ref().is_some_and(|(_, line)| line.contains("% CPU")))
        {
            break screen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the processes never showed with numbers:\n{screen}"
        );
        thread::sleep(Duration::from_millis(200));
    };
    for (pid, toolchain) in pids.iter().zip([oldest, newest]) {
        let (_, row) = row_of(&list, *pid).expect("listed");
        assert!(row.contains(&toolchain.version), "{row}");
    }
    // What the sessions said is in the message panel, not over the screen.
    assert!(
        list.contains(&format!("attached to process {}", pids[1])),
        "{list}"
    );

    // Open the second one: its own screen, titled with its pid.
    let (index, _) = row_of(&list, pids[1]).expect("listed");
    for _ in 0..index {
        tmux.keys("Down");
    }
    tmux.keys("Enter");
    let opened = tmux.wait_for(&format!("gobpf-sched — pid {}", pids[1]));
    assert!(opened.contains("GOMAXPROCS"), "{opened}");
    assert!(opened.contains("main.workerA"), "{opened}");
    tmux.keys("Escape");
    tmux.wait_for("Go processes");

    // q gives the terminal back, then every process's summary.
    tmux.keys("q");
    let after = tmux.wait_for("observer-exit=0");
    for pid in &pids {
        assert!(after.contains(&format!("pid {pid} ")), "{after}");
    }
    assert!(after.contains("2 processes watched; skipped:"), "{after}");
    drop(fixtures);
}

/// Two scenario programs (the oldest and the newest Go) watched side by side
/// (`--pid A --pid B`) and recorded into one file: each is a process track
/// with its P and thread tracks under it, holding as many run slices and
/// parks as the observer counted for that process.
#[test]
fn every_process_gets_a_track_group_in_the_recording() {
    let toolchains = toolchains();
    let programs = [
        build(
            toolchains.first().expect("a toolchain"),
            "scenario",
            Mode::Default,
        ),
        build(
            toolchains.last().expect("a toolchain"),
            "scenario",
            Mode::Stripped,
        ),
    ];
    let fixtures: Vec<Fixture> = programs
        .iter()
        .map(|binary| Fixture::spawn(binary, &["10", "100", "50", "200"]))
        .collect();
    let pids: Vec<u32> = fixtures.iter().map(Fixture::pid).collect();
    let dir = scratch_dir("node-recording");
    let file = dir.join("both.pftrace");
    let run = watch_side_by_side(
        fixtures,
        &[
            "--json",
            "--interval",
            "100ms",
            "--top",
            "1000",
            "--record",
            file.to_str().unwrap(),
        ],
    );
    let summaries: HashMap<u64, Value> = run
        .json()
        .into_iter()
        .filter(|line| line["type"] == "summary")
        .map(|summary| (summary["process"]["pid"].as_u64().unwrap(), summary))
        .collect();

    let trace = perfetto_summary(&file);
    let tracks = trace["tracks"].as_array().unwrap();
    let processes: Vec<&Value> = tracks.iter().filter(|t| t["kind"] == "process").collect();
    assert_eq!(processes.len(), 2, "{processes:?}");
    for pid in &pids {
        let pid = u64::from(*pid);
        let summary = &summaries[&pid];
        let process = processes
            .iter()
            .find(|t| t["pid"] == pid)
            .unwrap_or_else(|| panic!("no process track of {pid}: {processes:?}"));
        let group = &process["uuid"];
        let p_tracks: Vec<&Value> = tracks
            .iter()
            .filter(|t| t["kind"] == "track" && &t["parent"] == group)
            .collect();
        let threads: Vec<&Value> = tracks
            .iter()
            .filter(|t| t["kind"] == "thread" && t["pid"] == pid)
            .collect();
        let sum =
            |tracks: &[&Value], key: &str| -> u64 { tracks.iter().map(|t| count(t, key)).sum() };
        let run_slices = count(summary, "run_slices");
        assert!(run_slices > 0, "{summary}");
        assert_eq!(sum(&p_tracks, "begins"), run_slices, "pid {pid}");
        assert_eq!(
            sum(&threads, "begins") - sum(&threads, "syscalls"),
            run_slices,
            "pid {pid}"
        );
        let parks: u64 = threads
            .iter()
            .map(|t| t["instants"]["park:"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(parks, count(summary, "gopark_total"), "pid {pid}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
