//! `gobpf-sched run -- COMMAND`: a Go program watched from its first
//! instruction, its output and exit status its own, signals forwarded.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use common::{Mode, build, observer_binary, toolchains};
use serde_json::Value;

/// Runs `gobpf-sched run --exact --json -- BINARY spawn N`; returns its exit
/// code, stdout, and the summary from stderr.
fn run_spawn(binary: &std::path::Path, n: u32) -> (i32, String, Value, String) {
    let output = Command::new(observer_binary())
        .args(["run", "--exact", "--json", "--"])
        .arg(binary)
        .args(["spawn", &n.to_string()])
        .output()
        .expect("run gobpf-sched");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let summary = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|v| v["type"] == "summary")
        .unwrap_or_else(|| panic!("no summary on stderr: {stderr}"));
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        summary,
        stderr,
    )
}

#[test]
fn a_short_program_is_watched_from_its_first_instruction() {
    for toolchain in toolchains() {
        let binary = build(&toolchain, "cpu", Mode::Stripped);
        const N: u32 = 40;
        // What the runtime starts before main.main, counted the same way.
        let (_, _, before_main, _) = run_spawn(&binary, 0);
        let (code, stdout, summary, stderr) = run_spawn(&binary, N);
        let what = format!("{}: {stderr}", toolchain.version);
        // Its output and status untouched.
        assert_eq!(code, 3, "{what}");
        assert_eq!(stdout, format!("spawned {N}\n"), "{what}");
        assert!(stderr.lines().any(|line| line == "bye"), "{what}");
        let count = |v: &Value, key: &str| v[key].as_u64().unwrap_or_else(|| panic!("{key}"));
        assert_eq!(
            count(&summary, "goroutines_created") - count(&before_main, "goroutines_created"),
            u64::from(N),
            "{what}"
        );
        assert_eq!(
            count(&summary, "goroutines_exited") - count(&before_main, "goroutines_exited"),
            u64::from(N),
            "{what}"
        );
    }
}

#[test]
fn signals_reach_the_program_and_its_status_comes_back() {
    let toolchain = toolchains().remove(0);
    let binary = build(&toolchain, "cpu", Mode::Default);
    for (signal, name) in [(libc::SIGTERM, "terminated"), (libc::SIGINT, "interrupt")] {
        let mut observer = Command::new(observer_binary())
            .args(["run", "--plain", "--"])
            .arg(&binary)
            .arg("signal")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run gobpf-sched");
        let mut stdout = BufReader::new(observer.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("program stdout");
        assert_eq!(line, "waiting\n");
        // Sent to the observer alone (not by a terminal to the group).
        unsafe { libc::kill(observer.id() as i32, signal) };
        line.clear();
        stdout.read_line(&mut line).expect("program stdout");
        assert_eq!(line, format!("{name}\n"));
        let output = observer.wait_with_output().expect("wait gobpf-sched");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(7), "{stderr}");
        // The summary went to stderr, after the program exited.
        assert!(stderr.contains("exited"), "{stderr}");
        assert!(stderr.contains("SUMMARY pid"), "{stderr}");
    }
}

#[test]
fn a_program_that_is_not_go_is_refused_and_never_runs() {
    let marker = std::env::temp_dir().join(format!("gobpf-sched-run-{}", std::process::id()));
    let output = Command::new(observer_binary())
        .args(["run", "--", "sh", "-c"])
        .arg(format!("touch {}", marker.display()))
        .output()
        .expect("run gobpf-sched");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a Go program"), "{stderr}");
    assert!(!marker.exists(), "the program ran");
    let output = Command::new(observer_binary())
        .args(["run", "--", "no-such-program-here"])
        .output()
        .expect("run gobpf-sched");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not found in PATH"), "{stderr}");
}
