//! The overhead budget: transition probes attached in windows on a busy
//! program (its cost estimated within the budget, the code back to the
//! original bytes between windows), all the time on a quiet one (exact counts).

mod common;

use std::{
    fs::File,
    os::unix::fs::FileExt,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use serde_json::Value;

use common::{Fixture, Mode, Observer, build, count, full_matrix_toolchains, observer_binary};

/// x86's breakpoint instruction: what a uprobe puts at its site.
const INT3: u8 = 0xcc;

/// The tests here measure CPU shares: one at a time, or each would count the
/// other's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A probe site of `gobpf-sched inspect`: its run-time address (the fixtures
/// are not PIE: link-time addresses), its original byte, whether it is a
/// transition probe (attached in windows).
struct Site {
    function: String,
    address: u64,
    original: u8,
    windowed: bool,
}

fn probe_sites(binary: &std::path::Path) -> Vec<Site> {
    let output = Command::new(observer_binary())
        .args(["inspect", "--json"])
        .arg(binary)
        .output()
        .expect("gobpf-sched inspect");
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("inspect JSON");
    let file = File::open(binary).expect("fixture binary");
    report["probes"]
        .as_array()
        .expect("probes")
        .iter()
        .map(|probe| {
            let mut original = [0u8];
            file.read_exact_at(&mut original, count(probe, "file_offset"))
                .expect("read the site from the file");
            Site {
                function: probe["function"].as_str().unwrap_or("?").to_owned(),
                address: count(probe, "address") + count(probe, "site_offset"),
                original: original[0],
                windowed: probe["windowed"] == true,
            }
        })
        .collect()
}

/// What the target's code held at the sites, sampled every 10 ms until
/// `stop`: per sample, (windowed sites all original, all patched, the
/// always-on sites all patched).
fn watch_sites(pid: u32, sites: Vec<Site>, stop: Arc<AtomicBool>) -> Vec<(bool, bool, bool)> {
    let memory = File::open(format!("/proc/{pid}/mem")).expect("/proc/PID/mem");
    let mut samples = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let byte_at = |site: &Site| {
            let mut byte = [0u8];
            memory
                .read_exact_at(&mut byte, site.address)
                .ok()
                .map(|()| byte[0])
        };
        let bytes: Vec<(bool, Option<u8>, u8)> = sites
            .iter()
            .map(|s| (s.windowed, byte_at(s), s.original))
            .collect();
        if bytes.iter().all(|(_, b, _)| b.is_some()) {
            let windowed = bytes.iter().filter(|(w, _, _)| *w);
            samples.push((
                windowed.clone().all(|(_, b, o)| *b == Some(*o)),
                windowed.clone().all(|(_, b, _)| *b == Some(INT3)),
                bytes
                    .iter()
                    .filter(|(w, _, _)| !*w)
                    .all(|(_, b, _)| *b == Some(INT3)),
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    samples
}

/// A busy HTTP server (4 clients on loopback) with a 5% budget: the probes
/// come and go (the original instructions are back between windows, the
/// preemption probes stay), and the estimated cost over the run (the traps
/// while windows were detached included) stays within 1.5 × the budget.
#[test]
fn windows_keep_a_busy_server_within_its_budget() {
    let _alone = ONE_AT_A_TIME.lock();
    const BUDGET_PERCENT: f64 = 5.0;
    let toolchain = full_matrix_toolchains().pop().expect("a toolchain");
    let binary = build(&toolchain, "runtime", Mode::Default);
    let sites = probe_sites(&binary);
    assert!(sites.iter().any(|s| s.windowed) && sites.iter().any(|s| !s.windowed));
    assert!(
        sites.iter().all(|s| s.original != INT3),
        "a site already holds int3: {:?}",
        sites.iter().map(|s| &s.function).collect::<Vec<_>>()
    );
    let mut fixture = Fixture::spawn(&binary, &["http", "4", "12000"]);
    let observer = Observer::attach(
        fixture.pid(),
        &[
            "--json",
            "--interval",
            "1s",
            "--overhead-budget",
            &BUDGET_PERCENT.to_string(),
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (pid, stop) = (fixture.pid(), stop.clone());
        thread::spawn(move || watch_sites(pid, sites, stop))
    };
    fixture.start();
    thread::sleep(Duration::from_secs(11));
    stop.store(true, Ordering::Relaxed);
    let samples = watcher.join().expect("site watcher");
    let (status, output) = fixture.finish();
    assert!(status.success(), "{output}");
    let run = observer.wait();
    assert!(run.status.success(), "{}", run.stderr);
    let probes = &run.only("summary")["probes"];

    let off = samples.iter().filter(|s| s.0).count();
    let on = samples.iter().filter(|s| s.1).count();
    assert!(
        off > 0 && on > 0,
        "{} samples: {off} with the original code at every transition site, {on} with \
         every probe in place",
        samples.len()
    );
    assert!(
        samples.iter().all(|s| s.2),
        "the preemption probes stay attached"
    );
    let coverage = probes["coverage"].as_f64().expect("coverage");
    let overhead = probes["estimated_overhead"].as_f64().expect("estimate");
    assert!(coverage < 1.0 && coverage > 0.0, "{probes}");
    // The window at attach (the server waits for its clients), and at least
    // one more once the allowance paid for it.
    assert!(count(probes, "windows") >= 2, "{probes}");
    assert!(
        overhead <= 1.5 * BUDGET_PERCENT / 100.0,
        "estimated overhead {:.2}% for a budget of {BUDGET_PERCENT}%: {probes}",
        overhead * 100.0
    );
    assert_eq!(probes["exact_counts"], false);
    eprintln!(
        "busy server: coverage {:.1}%, estimated overhead {:.2}% (budget {BUDGET_PERCENT}%), \
         {} windows; code sampled {} times: {off} off, {on} on",
        coverage * 100.0,
        overhead * 100.0,
        count(probes, "windows"),
        samples.len()
    );
}

/// A quiet program (10 goroutines computing 5 ms then sleeping 20 ms, 30
/// times each: few transitions for the CPU time it uses) under the default
/// budget keeps its probes all the time: coverage 100%, one window, and the
/// exact counts.
#[test]
fn a_quiet_program_keeps_its_probes_and_exact_counts() {
    let _alone = ONE_AT_A_TIME.lock();
    for toolchain in full_matrix_toolchains() {
        let what = toolchain.version.clone();
        let binary = build(&toolchain, "runtime", Mode::Default);
        let mut fixture = Fixture::spawn(&binary, &["tickers", "10", "30"]);
        let observer = Observer::attach(
            fixture.pid(),
            &["--json", "--interval", "200ms", "--overhead-budget", "1"],
        );
        fixture.start();
        let (status, _) = fixture.finish();
        assert!(status.success(), "{what}");
        let run = observer.wait();
        assert!(run.status.success(), "{what}: {}", run.stderr);
        let summary = run.only("summary");
        let probes = &summary["probes"];
        assert_eq!(probes["coverage"], 1.0, "{what}: {probes}");
        assert_eq!(count(probes, "windows"), 1, "{what}: {probes}");
        assert_eq!(probes["exact_counts"], true, "{what}");
        assert_eq!(count(&summary["gopark"], "sleep"), 300, "{what}: {summary}");
        assert_eq!(count(&summary, "goroutines_created"), 10, "{what}");
        assert_eq!(count(&summary, "goroutines_exited"), 10, "{what}");
    }
}
