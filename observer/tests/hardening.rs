//! Faults a user can cause end cleanly, nothing is lost silently, nothing is
//! written where it should not be: each test reproduces one on a real process.

mod common;

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{
    Fixture, Mode, Observer, Toolchain, build, count, histogram_total, observer_binary,
    perfetto_summary, run_observer, toolchains, traced_run,
};

/// The toolchain of the full matrix with `go tool trace -d=parsed` (Go 1.24+).
fn recent() -> Toolchain {
    common::full_matrix_toolchains()
        .into_iter()
        .find(|t| t.minor() >= (1, 24))
        .expect("a Go 1.24+ toolchain in the full matrix")
}

fn oldest() -> Toolchain {
    toolchains().into_iter().next().expect("a toolchain")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gobpf-sched-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` to exit, at most `limit`.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not exit within {limit:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `attach | head -1`: once the reader is gone the observer exits (detaching),
/// quietly with the status of a SIGPIPE death; a full stdout says why.
#[test]
fn a_closed_or_full_stdout_ends_the_session() {
    let binary = build(&recent(), "crowd", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["4", "60000"]);
    fixture.start();
    let pid = fixture.pid().to_string();
    let mut observer = Command::new(observer_binary())
        .args(["attach", "--pid", &pid, "--plain", "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(observer.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.trim().is_empty(), "{line}");
    drop(stdout); // `head -1` exits
    let status = exits_within(&mut observer, Duration::from_secs(10));
    assert_eq!(status.code(), Some(141), "{status:?}");

    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = Command::new(observer_binary())
        .args(["attach", "--pid", &pid, "--json", "--interval", "100ms"])
        .args(["--duration", "20s"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gobpf-sched: error:") && last.contains("No space left on device"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The target execs: the previous image's summary comes with an `exec` notice,
/// then the session follows a Go program, and ends cleanly at anything else.
#[test]
fn an_exec_is_noticed_and_followed() {
    let (old, new) = (oldest(), recent());
    let launcher = build(&old, "hardening", Mode::Default);
    let crowd = build(&new, "crowd", Mode::Stripped);
    let crowd_path = crowd.to_string_lossy().into_owned();
    let mut fixture = Fixture::spawn(&launcher, &["exec", &crowd_path, "4", "3000"]);
    let dir = Scratch::new("exec");
    let recording = dir.0.join("first-image.pftrace");
    let observer = Observer::attach(
        fixture.pid(),
        &[
            "--json",
            "--interval",
            "200ms",
            "--record",
            recording.to_str().unwrap(),
        ],
    );
    fixture.start();
    let (status, output) = fixture.finish();
    assert!(status.success() && output.contains("done"), "{output}");
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let json = run.json();
    let exec = json
        .iter()
        .position(|v| v["type"] == "exec")
        .expect("an exec notice");
    assert_eq!(json[exec]["exe"], crowd_path.as_str(), "{}", json[exec]);
    let summaries: Vec<usize> = (0..json.len())
        .filter(|&i| json[i]["type"] == "summary")
        .collect();
    assert_eq!(summaries.len(), 2, "{}", run.stderr);
    assert_eq!(json[summaries[0]]["go_version"], old.version.as_str());
    assert!(summaries[0] > exec);
    let after = &json[summaries[1]];
    assert_eq!(after["go_version"], new.version.as_str());
    assert!(count(after, "run_slices") > 100, "{after}");
    assert!(count(after, "preemptions") > 0, "{after}");
    // The run-queue state is read at the new image's addresses (the last read
    // may find the process exiting).
    let read_after: Vec<&serde_json::Value> = json[summaries[0]..]
        .iter()
        .filter(|v| v["type"] == "interval" && !v["sched"].is_null())
        .collect();
    assert!(!read_after.is_empty(), "{}", run.stderr);
    for interval in read_after {
        assert_eq!(interval["sched"]["gomaxprocs"], 2, "{interval}");
    }
    assert_eq!(
        run.stderr.matches(": attached to ").count(),
        2,
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("following it"), "{}", run.stderr);
    // The recording (of the first image) ends with the exec, marked on the
    // process track.
    let parsed = perfetto_summary(&recording);
    let tracks = parsed["tracks"].as_array().unwrap();
    let process = tracks.iter().find(|t| t["kind"] == "process").unwrap();
    assert_eq!(process["instants"]["exec"], 1, "{process}");

    // Into something that is not Go: the session ends, exit 0, summary printed.
    let mut fixture = Fixture::spawn(&launcher, &["exec", "/bin/sleep", "3"]);
    let observer = Observer::attach(fixture.pid(), &["--json"]);
    fixture.start();
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.json().iter().filter(|v| v["type"] == "exec").count(), 1);
    run.only("summary");
    assert!(run.stderr.contains("stopped watching"), "{}", run.stderr);
    assert!(run.stderr.contains("is not a Go program"), "{}", run.stderr);
    let _ = fixture.finish();

    // --no-follow-exec ends at the exec.
    let mut fixture = Fixture::spawn(&launcher, &["exec", &crowd_path, "4", "1000"]);
    let observer = Observer::attach(fixture.pid(), &["--json", "--no-follow-exec"]);
    fixture.start();
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains("session ended (--no-follow-exec)"),
        "{}",
        run.stderr
    );
    run.only("summary");
    let _ = fixture.finish();
}

/// 100k goroutines at once (more than the 65,536 the maps once held): every run
/// of a goroutine made runnable after attach has its run-queue latency.
#[test]
fn a_hundred_thousand_goroutines_lose_no_latency() {
    let binary = build(&recent(), "hardening", Mode::Default);
    let (_, _, summary) = traced_run(
        &binary,
        &["goroutines", "100000"],
        &["--json", "--only", "goroutines"],
        "100k goroutines",
    );
    let latencies = histogram_total(&summary["runq_latency_histogram"]);
    let runs = count(&summary, "run_slices");
    assert!(runs >= 200_000, "{runs} runs");
    // Only goroutines already runnable at attach (the runtime's own, main) run
    // without a known start of their wait.
    assert!(
        runs - latencies <= 20,
        "{latencies} latencies for {runs} runs"
    );
    assert_eq!(count(&summary, "lost_latency_samples"), 0);
    assert_eq!(count(&summary, "lost_goroutine_totals"), 0);
    // The fixture's, and a few of the runtime's own.
    assert!((100_000..100_010).contains(&count(&summary, "goroutines_created")));
    assert!((100_000..100_010).contains(&count(&summary, "goroutines_exited")));
}

/// A target in its own pid and mount namespaces (a container): `m.procid` holds
/// namespaced thread ids; the offset self-check and the M of each preemption
/// must use them.
#[test]
fn a_target_in_its_own_pid_namespace() {
    let toolchain = recent();
    let binary = build(&toolchain, "scenario", Mode::Default);
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--mount", "--fork", "--mount-proc"])
        .arg(&binary);
    let mut fixture = Fixture::spawn_command(command);
    // unshare forks the fixture: its child.
    let unshare = fixture.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "{nspid}");
    let observer = Observer::attach(pid, &["--json"]);
    fixture.start();
    let _ = fixture.finish();
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let summary = run.only("summary");
    assert!(count(&summary, "offset_checks") > 0, "{summary}");
    assert_eq!(count(&summary, "offset_mismatches"), 0, "{summary}");
    let preemptions: Vec<_> = run
        .json()
        .into_iter()
        .filter(|v| v["type"] == "preemption")
        .collect();
    assert!(preemptions.len() >= 3, "{}", run.stderr);
    for preemption in &preemptions {
        assert!(preemption["m"].as_i64().unwrap() >= 0, "{preemption}");
    }
}

/// `--record` never follows a link, never overwrites without --force, never
/// opens a FIFO; the file is 0644 at most.
#[test]
fn recordings_are_created_safely() {
    let binary = build(&recent(), "crowd", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["4", "60000"]);
    fixture.start();
    let pid = fixture.pid().to_string();
    let dir = Scratch::new("record");
    let victim = dir.0.join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let link = dir.0.join("link.pftrace");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let fifo = dir.0.join("fifo.pftrace");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let record = |path: &Path, extra: &[&str]| {
        let mut args = vec!["attach", "--pid", &pid, "--json", "--duration", "300ms"];
        args.extend(["--record", path.to_str().unwrap()]);
        args.extend(extra);
        run_observer(&[], &args)
    };
    let refused = |path: &Path, extra: &[&str], expected: &str| {
        let started = Instant::now();
        let (status, stderr) = record(path, extra);
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(started.elapsed() < Duration::from_secs(10));
    };
    refused(&link, &[], "it is a symbolic link");
    refused(&link, &["--force"], "it is a symbolic link");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    refused(&fifo, &[], "not a regular file");
    refused(&victim, &[], "exists: choose another name, or pass --force");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");

    let (status, stderr) = record(&victim, &["--force"]);
    assert!(status.success(), "{stderr}");
    assert_ne!(std::fs::read(&victim).unwrap(), b"keep me");
    let fresh = dir.0.join("fresh.pftrace");
    let (status, stderr) = record(&fresh, &[]);
    assert!(status.success(), "{stderr}");
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
    assert_eq!(mode & 0o133, 0, "mode {mode:o}");
    // Nothing else is left in the directory (no temporary file).
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["fifo.pftrace", "fresh.pftrace", "link.pftrace", "victim"]
    );
}

/// A full disk during `--record`: the file is named, the summary still printed.
#[test]
fn a_full_disk_while_recording_names_the_file_and_keeps_the_summary() {
    let binary = build(&recent(), "crowd", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["8", "60000"]);
    fixture.start();
    let dir = Scratch::new("full");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&dir.0)
        .status()
        .unwrap();
    assert!(mounted.success());
    let path = dir.0.join("t.pftrace");
    let pid = fixture.pid().to_string();
    let output = Command::new(observer_binary())
        .args(["attach", "--pid", &pid, "--json", "--duration", "3s"])
        .args(["--record", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.trim().lines().last().unwrap();
    assert!(
        last.contains(&format!("cannot write the recording {}", path.display())),
        "{stderr}"
    );
    assert!(last.contains("No space left on device"), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.lines().any(|l| l.contains(r#""type":"summary""#)),
        "{stdout}"
    );
    assert!(path.exists(), "what was written is kept");
}

/// A thread id (PREEMPT lines print them) stands for its process.
#[test]
fn a_thread_id_is_taken_as_its_process() {
    let binary = build(&recent(), "scenario", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &[]);
    let pid = fixture.pid();
    let thread: u32 = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .find(|&tid| tid != pid)
        .expect("a second thread");
    let observer = Observer::attach(thread, &["--json"]);
    fixture.start();
    let _ = fixture.finish();
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "{thread} is a thread of process {pid}: watching process {pid}"
        )),
        "{}",
        run.stderr
    );
    let summary = run.only("summary");
    assert_eq!(summary["pid"], pid);
    assert!(count(&summary, "preemptions") >= 3, "{summary}");
}

/// Out-of-range intervals and durations are refused before attaching.
#[test]
fn intervals_and_durations_out_of_range_are_refused() {
    for args in [
        &["--interval", "0"][..],
        &["--interval", "1ns"],
        &["--interval", "2h"],
        &["--duration", "18446744073709551615s"],
        &["--duration", "0s"],
    ] {
        let mut all = vec!["attach", "--pid", "1"];
        all.extend(args);
        let (status, stderr) = run_observer(&[], &all);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is outside 1ms to"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// GOMAXPROCS has no limit in Go: 20,000 Ps are read, not taken for a torn read.
#[test]
fn gomaxprocs_above_16384_is_read() {
    let binary = build(&recent(), "crowd", Mode::Default);
    let mut command = Command::new(&binary);
    command.args(["4", "60000"]).env("GOMAXPROCS", "20000");
    let mut fixture = Fixture::spawn_command(command);
    fixture.start();
    let pid = fixture.pid().to_string();
    let output = Command::new(observer_binary())
        .args([
            "attach",
            "--pid",
            &pid,
            "--json",
            "--duration",
            "2s",
            "--interval",
            "500ms",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let intervals: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["type"] == "interval")
        .collect();
    assert!(!intervals.is_empty());
    for interval in &intervals {
        assert_eq!(
            interval["sched"]["gomaxprocs"], 20000,
            "{}",
            interval["sched"]["gomaxprocs"]
        );
    }
    assert!(intervals.iter().any(|i| i["sched"]["approximate"] == false));
}

/// A zombie has exited: say so, not "no process".
#[test]
fn a_zombie_is_called_what_it_is() {
    let mut child = Command::new("true").spawn().unwrap();
    thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    let (status, stderr) = run_observer(&[], &["attach", "--pid", &pid]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "process {pid} has exited and is waiting to be reaped"
        )),
        "{stderr}"
    );
    child.wait().unwrap();
}

/// Host names resolve; an address open to the network is said to be.
#[test]
fn prometheus_addresses() {
    let binary = build(&recent(), "crowd", Mode::Default);
    let mut fixture = Fixture::spawn(&binary, &["4", "60000"]);
    fixture.start();
    let pid = fixture.pid().to_string();
    let output = |address: &str| {
        let output = Command::new(observer_binary())
            .args(["attach", "--pid", &pid, "--json", "--duration", "300ms"])
            .args(["--prometheus", address])
            .output()
            .unwrap();
        assert!(output.status.success(), "{address}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let local = output("localhost:0");
    assert!(
        local.contains("Prometheus metrics on http://127.0.0.1:"),
        "{local}"
    );
    assert!(!local.contains("open to the network"), "{local}");
    let open = output("0.0.0.0:0");
    assert!(
        open.contains("WARNING: the metrics on 0.0.0.0:0 are open to the network"),
        "{open}"
    );
}

/// Preemptions are goroutines preempted, as runtime/trace records them: on a
/// CPU-bound fixture each goroutine's count equals the trace's "preempted"
/// transitions; on an I/O-heavy one many signals preempt nothing.
#[test]
fn preemptions_agree_with_runtime_trace() {
    let toolchain = recent();
    let binary = build(&toolchain, "hardening", Mode::Default);
    let dir = Scratch::new("trace");
    let trace = dir.0.join("t.trace");
    let (_, run, summary) = traced_run(
        &binary,
        &["preempt", "2000", trace.to_str().unwrap()],
        &["--json", "--top", "1000"],
        "CPU-bound",
    );
    let parsed = Command::new(&toolchain.go)
        .args(["tool", "trace", "-d=parsed"])
        .arg(&trace)
        .env("GOTOOLCHAIN", "local")
        .output()
        .unwrap();
    assert!(parsed.status.success());
    let mut traced = std::collections::HashMap::<u64, u64>::new();
    for line in String::from_utf8_lossy(&parsed.stdout).lines() {
        if line.contains(r#"Reason="preempted""#) && line.contains("Running->Runnable") {
            let goid = line
                .split("GoID=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            *traced.entry(goid.parse().unwrap()).or_default() += 1;
        }
    }
    let total: u64 = traced.values().sum();
    assert!(total >= 20, "{traced:?}");
    // The spinners: their loops call nothing, so every preemption is a signal's.
    for (goid, preempted) in traced.iter().filter(|(_, n)| **n >= 5) {
        let row = common::goroutine(&summary, *goid);
        assert_eq!(count(&row, "preemptions"), *preempted, "goid {goid}: {row}");
    }
    let async_preempted = count(&summary, "preemptions");
    let cooperative = count(&summary, "cooperative_preemptions");
    // The trace also counts yields without a signal (cooperative, goyield_m);
    // the observer sees those from attach to exit, the trace between its start
    // and stop only.
    assert!(
        (async_preempted..=async_preempted + cooperative).contains(&total),
        "trace {total}, observer {async_preempted} + {cooperative} cooperative"
    );
    let objects = run
        .json()
        .into_iter()
        .filter(|v| v["type"] == "preemption")
        .count() as u64;
    assert_eq!(objects, async_preempted);

    let (_, run, summary) = traced_run(&binary, &["io", "2000"], &["--json"], "I/O-heavy");
    let signals = count(&summary, "sigurg_signals");
    assert!(count(&summary, "preemptions") < signals, "{summary}");
    let others = run
        .json()
        .into_iter()
        .filter(|v| v["type"] == "sigurg")
        .count() as u64;
    assert!(others > 0, "{summary}");
    assert_eq!(
        count(&summary, "gc_suspensions") + count(&summary, "signals_without_effect"),
        signals - count(&summary, "preemptions")
    );
    // No text line calls a signal that preempted nothing a preemption.
    for line in run.json().iter().filter(|v| v["type"] == "sigurg") {
        assert_ne!(line["outcome"], "preempted", "{line}");
    }
}

/// A C program running a Go library (`-buildmode=c-shared`): said, not "not a
/// Go program".
#[test]
fn a_c_host_of_a_go_library_is_named() {
    let toolchain = recent();
    let dir = Scratch::new("cshared");
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cshared");
    let library = dir.0.join("libwork.so");
    let built = Command::new(&toolchain.go)
        .args(["build", "-buildmode=c-shared", "-o"])
        .arg(&library)
        .arg(".")
        .current_dir(&sources)
        .env("CGO_ENABLED", "1")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", common::cache_dir().join("gocache"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let host = dir.0.join("host");
    let linked = Command::new("gcc")
        .arg(sources.join("host.c"))
        .arg("-o")
        .arg(&host)
        .arg(format!("-L{}", dir.0.display()))
        .arg(format!("-Wl,-rpath,{}", dir.0.display()))
        .arg("-lwork")
        .output()
        .unwrap();
    assert!(
        linked.status.success(),
        "{}",
        String::from_utf8_lossy(&linked.stderr)
    );
    let fixture = Fixture::spawn(&host, &[]);
    let pid = fixture.pid().to_string();
    let (status, stderr) = run_observer(&[], &["attach", "--pid", &pid]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("has loaded the Go library {}", library.display()))
            && stderr.contains("not supported yet"),
        "{stderr}"
    );
}

/// A target that exits while the probes are being attached: said so, never a
/// raw system-call error. The fixture exits on its own after a delay; the
/// delays cover the attach (before it, during it, after it).
#[test]
fn a_target_exiting_during_attach_is_said_to_have_exited() {
    let binary = build(&recent(), "hardening", Mode::Default);
    for delay_ms in [0, 10, 20, 40, 60, 80, 100, 150] {
        let mut target = Command::new(&binary)
            .args(["exitafter", &delay_ms.to_string()])
            .spawn()
            .unwrap();
        let pid = target.id().to_string();
        let (status, stderr) = run_observer(&[], &["attach", "--pid", &pid, "--json"]);
        let _ = target.wait();
        assert!(!stderr.contains("panicked"), "{delay_ms} ms: {stderr}");
        let last = stderr.trim().lines().last().unwrap_or_default();
        if status.success() {
            assert!(last.ends_with("exited"), "{delay_ms} ms: {stderr}");
        } else {
            assert!(
                last.contains(&format!("no process with pid {pid}"))
                    || last.contains(&format!("process {pid} has exited and is waiting"))
                    || last.contains(&format!(
                        "process {pid} exited while gobpf-sched was attaching"
                    )),
                "{delay_ms} ms: {stderr}"
            );
        }
    }
}
