//! `attach --all`: every Go process of the host watched at once. Twenty
//! deterministic fixtures of every Go version and build mode, some in pid and
//! mount namespaces and cgroups of their own (containers, as containerd makes
//! them under a pod's slice), beside a program that is not Go and a Go program
//! of a version no table knows; one more fixture started once the observer
//! runs. Each gets its exact counts and its labels, its summary when it exits,
//! and its series in a real Prometheus.
//!
//! `--all` sees every Go process of the host, other tests' and Prometheus too:
//! everything here is checked by pid, never by counting lines.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{
    ContainerCgroup, Fixture, Mode, Prometheus, Toolchain, build, claiming_version, free_port,
    full_matrix_toolchains, http_get, observer_binary, promtool, scenario, scratch_dir,
    spawn_in_namespaces, toolchains, wait_at_most,
};
use serde_json::Value;

/// Fixtures running when the observer starts.
const FIXTURES: usize = 20;
/// Every CONTAINER_EVERY-th of them runs in a container.
const CONTAINER_EVERY: usize = 4;
/// How soon a process started after the observer must be watched.
const PICK_UP: Duration = Duration::from_secs(1);

/// One scenario fixture and what it should be labelled with.
struct Process {
    /// `go1.25.5 Pie #3`: in every message.
    what: String,
    toolchain: Toolchain,
    binary: PathBuf,
    /// The Go program's pid, on the host.
    pid: u32,
    /// (container id, pod uid), for the ones in a container.
    container: Option<(String, String)>,
}

impl Process {
    /// Starts fixture number `n`, waiting for its go-ahead.
    fn start(
        toolchain: &Toolchain,
        mode: Mode,
        n: usize,
        in_container: bool,
    ) -> (Self, Fixture, Option<ContainerCgroup>) {
        let binary = build(toolchain, "scenario", mode);
        let args = scenario::args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let what = format!(
            "{} {mode:?} #{n}{}",
            toolchain.version,
            if in_container { " (container)" } else { "" }
        );
        if in_container {
            // Distinct, and as containerd and the kubelet spell them.
            let container_id = format!("{:064x}", 0xc0de_0000 + n);
            let pod_uid = format!(
                "7c9e6679-7425-40de-944b-{:012x}",
                0xe07f_c1f9_0000_u64 + n as u64
            );
            let cgroup = ContainerCgroup::create(&container_id, &pod_uid);
            let (fixture, pid) = spawn_in_namespaces(&binary, &args);
            cgroup.add(pid);
            let watched = Self {
                what,
                toolchain: toolchain.clone(),
                binary,
                pid,
                container: Some((container_id, pod_uid)),
            };
            (watched, fixture, Some(cgroup))
        } else {
            let fixture = Fixture::spawn(&binary, &args);
            let watched = Self {
                what,
                toolchain: toolchain.clone(),
                binary,
                pid: fixture.pid(),
                container: None,
            };
            (watched, fixture, None)
        }
    }

    /// What the observer says when it starts watching the process.
    fn attached_line(&self) -> String {
        format!("gobpf-sched: attached to process {} (", self.pid)
    }

    /// The `process` labels of its JSON lines.
    fn check_labels(&self, process: &Value) {
        let what = &self.what;
        assert_eq!(process["pid"], self.pid, "{what}: {process}");
        assert_eq!(
            process["go_version"],
            self.toolchain.version.as_str(),
            "{what}: {process}"
        );
        // The kernel's command name: the file name, cut to 15 bytes.
        let name = self.binary.file_name().expect("a file").to_string_lossy();
        assert_eq!(
            process["comm"],
            &name[..name.len().min(15)],
            "{what}: {process}"
        );
        assert_eq!(
            process["executable"],
            self.binary.to_string_lossy().as_ref(),
            "{what}: {process}"
        );
        match &self.container {
            Some((id, pod)) => {
                // The first process of its pid namespace.
                assert_eq!(process["pid_in_namespace"], 1, "{what}: {process}");
                assert_eq!(
                    process["container_runtime"], "containerd",
                    "{what}: {process}"
                );
                assert_eq!(process["container_id"], id.as_str(), "{what}: {process}");
                assert_eq!(process["pod_uid"], pod.as_str(), "{what}: {process}");
            }
            None => {
                for label in [
                    "pid_in_namespace",
                    "container_runtime",
                    "container_id",
                    "pod_uid",
                ] {
                    assert!(process[label].is_null(), "{what}: {label}: {process}");
                }
            }
        }
    }
}

/// A running `gobpf-sched attach --all`: its stdout lines, and its stderr
/// lines with the instant each one arrived.
struct Node {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stdout_lines: Vec<String>,
    stderr: mpsc::Receiver<(Instant, String)>,
    stderr_lines: Vec<(Instant, String)>,
    /// Where its output is kept when it is dropped (for a failure's reader).
    kept_in: PathBuf,
}

impl Node {
    fn start(args: &[&str], kept_in: PathBuf) -> Self {
        let mut child = Command::new(observer_binary())
            .args(["attach", "--all"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gobpf-sched");
        let (stdout_sender, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if stdout_sender.send(line).is_err() {
                    break;
                }
            }
        });
        let (stderr_sender, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if stderr_sender.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdout,
            stdout_lines: Vec::new(),
            stderr,
            stderr_lines: Vec::new(),
            kept_in,
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_lines
            .iter()
            .map(|(_, line)| line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// When the first stderr line that starts with each of `prefixes` came
    /// (waiting at most `within` for the ones not there yet).
    fn wait_for_stderr(&mut self, prefixes: &[String], within: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let found: Vec<Option<Instant>> = prefixes
                .iter()
                .map(|prefix| {
                    self.stderr_lines
                        .iter()
                        .find(|(_, line)| line.starts_with(prefix.as_str()))
                        .map(|(at, _)| *at)
                })
                .collect();
            if found.iter().all(Option::is_some) {
                return found.into_iter().flatten().collect();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .stderr
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) => self.stderr_lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => {
                    let missing: Vec<&String> = prefixes
                        .iter()
                        .zip(&found)
                        .filter(|(_, at)| at.is_none())
                        .map(|(prefix, _)| prefix)
                        .collect();
                    panic!(
                        "no stderr line starting with {missing:?} in {within:?}:\n{}",
                        self.stderr_text()
                    );
                }
            }
        }
    }

    /// The JSON stdout lines so far.
    fn json(&mut self) -> Vec<Value> {
        self.stdout_lines.extend(self.stdout.try_iter());
        self.stdout_lines
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Waits (at most `within`) for a `summary` line of each of `pids`.
    fn wait_for_summaries(&mut self, pids: &[u32], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let lines = self.json();
            let missing: Vec<u32> = pids
                .iter()
                .copied()
                .filter(|&pid| {
                    !lines
                        .iter()
                        .any(|line| line["type"] == "summary" && line["pid"] == pid)
                })
                .collect();
            if missing.is_empty() {
                return;
            }
            self.stderr_lines.extend(self.stderr.try_iter());
            assert!(
                Instant::now() < deadline,
                "no summary of {missing:?} in {within:?}:\n{}",
                self.stderr_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT; waits (at most 30 s) for the exit.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_at_most(&mut self.child, Duration::from_secs(30), "of SIGINT");
        // The reader threads end at EOF.
        self.stdout_lines.extend(self.stdout.iter());
        self.stderr_lines.extend(self.stderr.iter());
        status
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdout_lines.extend(self.stdout.try_iter());
        self.stderr_lines.extend(self.stderr.try_iter());
        let _ = std::fs::write(
            self.kept_in.join("observer.stdout"),
            self.stdout_lines.join("\n"),
        );
        let _ = std::fs::write(self.kept_in.join("observer.stderr"), self.stderr_text());
    }
}

/// The builds the fixtures cycle through, all built by other tests already:
/// every toolchain's default build, and one recent toolchain's other modes.
fn builds() -> Vec<(Toolchain, Mode)> {
    let recent = full_matrix_toolchains()
        .pop()
        .expect("a full-matrix toolchain");
    let mut builds: Vec<(Toolchain, Mode)> = toolchains()
        .into_iter()
        .map(|t| (t, Mode::Default))
        .collect();
    for mode in [Mode::Stripped, Mode::Pie, Mode::Cgo] {
        builds.push((recent.clone(), mode));
    }
    builds
}

/// The pids of a query answer's series (label `pid`), with their labels.
fn series_by_pid(answer: &str) -> HashMap<u32, Value> {
    let answer: Value = serde_json::from_str(answer).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .map(|series| {
            series
                .iter()
                .filter_map(|s| {
                    let pid = s["metric"]["pid"].as_str()?.parse().ok()?;
                    Some((pid, s["metric"].clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `gobpf-sched: N processes watched; skipped: A not Go, B not selected, C
/// that could not be watched`: (N, A, B, C).
fn final_tally(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .last()
        .unwrap_or_default()
        .strip_prefix("gobpf-sched: ")
        .unwrap_or_else(|| panic!("no final line:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        line.ends_with(" that could not be watched") && numbers.len() == 4,
        "not the final tally: {line}"
    );
    (numbers[0], numbers[1], numbers[2], numbers[3])
}

#[test]
fn every_go_process_of_the_host_is_watched_and_labelled() {
    let started = Instant::now();
    let builds = builds();
    let recent = builds.last().expect("a build").0.clone();
    // Built before the observer starts: `go build` runs Go programs too.
    let late_binary = build(&recent, "scenario", Mode::Cgo);
    let unknown_binary = claiming_version(&build(&recent, "scenario", Mode::Default), "go1.99.0");

    let mut cgroups = Vec::new();
    let mut watched = Vec::new();
    let mut fixtures = Vec::new();
    for n in 0..FIXTURES {
        let (toolchain, mode) = &builds[n % builds.len()];
        let (one, fixture, cgroup) = Process::start(toolchain, *mode, n, n % CONTAINER_EVERY == 0);
        watched.push(one);
        fixtures.push(fixture);
        cgroups.extend(cgroup);
    }
    // Neither stops the others: a program that is not Go, and a Go program of
    // a version no table knows (a real one whose build info says go1.99.0).
    let mut not_go = Command::new("sleep").arg("60").spawn().expect("sleep");
    let unknown = Fixture::spawn(&unknown_binary.0, &[]);

    let dir = scratch_dir("node");
    let observer_started = Instant::now();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut node = Node::start(
        &[
            "--json",
            "--exact",
            "--interval",
            "60s",
            "--top",
            "100000",
            "--prometheus",
            &address,
        ],
        dir.clone(),
    );
    let attached: Vec<String> = watched.iter().map(Process::attached_line).collect();
    let unknown_refused = format!("gobpf-sched: not watching process {} (", unknown.pid());
    let mut expected = attached.clone();
    expected.push(unknown_refused.clone());
    node.wait_for_stderr(&expected, Duration::from_secs(20));
    let attach_took = observer_started.elapsed();
    // Each attached with its version's probes.
    for fixture in &watched {
        let line = &node
            .stderr_lines
            .iter()
            .find(|(_, line)| line.starts_with(&fixture.attached_line()))
            .expect("attached")
            .1;
        let probes = format!(
            "), {}: {} uprobes + SIGURG tracepoint in ",
            fixture.toolchain.version,
            fixture.toolchain.expected_uprobes()
        );
        assert!(line.contains(&probes), "{}: {line}", fixture.what);
    }
    let refusal = node
        .stderr_lines
        .iter()
        .find(|(_, line)| line.starts_with(&unknown_refused))
        .expect("refused")
        .1
        .clone();
    assert!(
        refusal.contains("is built with go1.99.0, outside the supported range"),
        "{refusal}"
    );
    let stderr = node.stderr_text();
    assert!(
        !stderr.contains(&format!("process {} ", not_go.id())),
        "the process that is not Go is not mentioned:\n{stderr}"
    );

    // A process started now is watched within PICK_UP, while the others are
    // watched and none of them ends (a session that ends just before, its
    // uprobes detaching, was seen to hold another's attach up for ~1 s).
    let args = scenario::args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spawned_at = Instant::now();
    let late_fixture = Fixture::spawn(&late_binary, &args);
    let late = Process {
        what: format!("{} Cgo, started after the observer", recent.version),
        toolchain: recent.clone(),
        binary: late_binary.clone(),
        pid: late_fixture.pid(),
        container: None,
    };
    let attached_at = node.wait_for_stderr(&[late.attached_line()], Duration::from_secs(10))[0];
    let pick_up = attached_at.saturating_duration_since(spawned_at);
    eprintln!(
        "node: {FIXTURES} fixtures watched {attach_took:?} after the observer started; one \
         started later watched {pick_up:?} after its start"
    );
    assert!(
        pick_up <= PICK_UP,
        "the late process was watched {pick_up:?} after it started"
    );
    watched.push(late);
    fixtures.push(late_fixture);

    // The one /metrics: valid as a whole, every fixture's series in it.
    let (status, scrape) = http_get(&address, "/metrics", None);
    assert_eq!(status, 200, "{scrape}");
    let (valid, report) = promtool(&["check", "metrics"], Some(&scrape));
    assert!(valid, "promtool check metrics: {report}\n{scrape}");
    for fixture in &watched {
        let pid = format!("pid=\"{}\"", fixture.pid);
        for metric in ["gobpf_sched_process_info{", "gobpf_sched_schedule_total{"] {
            assert!(
                scrape
                    .lines()
                    .any(|line| line.starts_with(metric) && line.contains(&pid)),
                "{}: no {metric}{pid}}} in:\n{scrape}",
                fixture.what
            );
        }
    }

    // A real Prometheus scraping it: every fixture's series, with its labels.
    let prometheus = Prometheus::start(
        &dir,
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: gobpf-sched\n    \
             static_configs:\n      - targets: ['{address}']\n"
        ),
    );
    prometheus.wait_for_a_scrape(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (info, schedule) = loop {
        let info = series_by_pid(&prometheus.query("gobpf_sched_process_info").1);
        let schedule = series_by_pid(&prometheus.query("gobpf_sched_schedule_total").1);
        if watched
            .iter()
            .all(|f| info.contains_key(&f.pid) && schedule.contains_key(&f.pid))
        {
            break (info, schedule);
        }
        assert!(
            Instant::now() < deadline,
            "not every fixture in Prometheus: info of {:?}, schedule of {:?}; targets: {}",
            info.keys(),
            schedule.keys(),
            prometheus.targets()
        );
        thread::sleep(Duration::from_millis(500));
    };
    for fixture in &watched {
        let (info, schedule) = (&info[&fixture.pid], &schedule[&fixture.pid]);
        let what = &fixture.what;
        assert_eq!(
            info["go_version"],
            fixture.toolchain.version.as_str(),
            "{what}: {info}"
        );
        assert_eq!(schedule["comm"], info["comm"], "{what}: {schedule}");
        match &fixture.container {
            Some((id, pod)) => {
                assert_eq!(info["pid_in_namespace"], "1", "{what}: {info}");
                assert_eq!(info["container_runtime"], "containerd", "{what}: {info}");
                assert_eq!(info["container_id"], id.as_str(), "{what}: {info}");
                assert_eq!(info["pod_uid"], pod.as_str(), "{what}: {info}");
                assert_eq!(schedule["container_id"], id.as_str(), "{what}: {schedule}");
            }
            None => {
                // Prometheus drops empty labels.
                assert!(info["container_id"].is_null(), "{what}: {info}");
                assert!(schedule["container_id"].is_null(), "{what}: {schedule}");
            }
        }
    }
    drop(prometheus);

    // All of them run their work and exit: each one's summary comes then,
    // while the observer watches on.
    for fixture in &mut fixtures {
        fixture.start();
    }
    let mut outputs = Vec::new();
    for (one, fixture) in watched.iter().zip(fixtures) {
        let (status, output) = fixture.finish();
        assert!(status.success(), "{}: the fixture failed", one.what);
        assert_eq!(
            scenario::result_line(&output),
            scenario::expected_result(),
            "{}",
            one.what
        );
        outputs.push(output);
    }
    let exited: Vec<String> = watched
        .iter()
        .map(|one| format!("gobpf-sched: process {} exited", one.pid))
        .collect();
    node.wait_for_stderr(&exited, Duration::from_secs(20));
    let pids: Vec<u32> = watched.iter().map(|one| one.pid).collect();
    node.wait_for_summaries(&pids, Duration::from_secs(20));

    // The end of the observer: the others go on until then.
    let status = node.interrupt();
    let stderr = node.stderr_text();
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ended, not_go_skipped, _, refused) = final_tally(&stderr);
    assert!(ended >= watched.len() as u64, "{stderr}");
    assert!(not_go_skipped >= 1, "{stderr}");
    assert!(refused >= 1, "{stderr}");
    assert!(
        running(unknown.pid()) && running(not_go.id()),
        "the processes not watched run on"
    );
    let _ = not_go.kill();
    let _ = not_go.wait();
    drop(unknown);

    // Each process: exactly one summary, its labels, its exact counts (all
    // checked, every failure said).
    let lines = node.json();
    let mut failed = Vec::new();
    for (one, output) in watched.iter().zip(outputs) {
        let of_it: Vec<Value> = lines
            .iter()
            .filter(|line| line["pid"] == one.pid)
            .cloned()
            .collect();
        let checked = std::panic::catch_unwind(|| {
            let summaries: Vec<&Value> = of_it.iter().filter(|l| l["type"] == "summary").collect();
            assert_eq!(summaries.len(), 1, "{}: {summaries:?}", one.what);
            let summary = summaries[0].clone();
            one.check_labels(&summary["process"]);
            for interval in of_it.iter().filter(|l| l["type"] == "interval") {
                one.check_labels(&interval["process"]);
            }
            assert_eq!(summary["go_version"], one.toolchain.version.as_str());
            scenario::Watched::one_of_many(one.what.clone(), output, summary, of_it.clone())
                .check_counts();
        });
        if checked.is_err() {
            failed.push(format!("{} (pid {})", one.what, one.pid));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} processes failed their checks (the output is kept in {}): {failed:#?}",
        failed.len(),
        watched.len(),
        dir.display()
    );
    drop(cgroups);
    eprintln!("node: the whole test took {:?}", started.elapsed());
}

/// Whether process `pid` runs (is neither gone nor a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(") ")?.1.starts_with(|c| c != 'Z')))
        .unwrap_or(false)
}
